//! `stratus`: the server and its command-line client in one binary.
//!
//! This is the only place where concrete backends are chosen (the embedded
//! store, the process sandbox) and the components are wired together. The
//! CLI subcommands talk to a running server over its public Lambda API.

mod cli;
mod config;
mod datadir;
mod doctor;
mod lock;
mod server;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "stratus",
    version,
    about = "Stratus: a self-hosted, Lambda-compatible serverless platform"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start the server: every component in one process, embedded state.
    Server(Box<server::ServerArgs>),
    /// Manage functions on a running server.
    #[command(subcommand)]
    Function(cli::FunctionCommand),
    /// Create or update a function from a directory (idempotent; `--watch`
    /// redeploys on every change).
    Deploy(cli::DeployArgs),
    /// Manage a function's aliases (names for versions, with weighted routing).
    #[command(subcommand)]
    Alias(cli::AliasCommand),
    /// Manage function URLs (an HTTP endpoint per function).
    #[command(subcommand)]
    Url(cli::UrlCommand),
    /// Manage layers (shared code under /opt).
    #[command(subcommand)]
    Layer(cli::LayerCommand),
    /// Invoke a function and print its result.
    Invoke(cli::InvokeArgs),
    /// Print a function's log (`--follow` to keep printing new lines).
    Logs(cli::LogsArgs),
    /// Manage accounts (the server's admin key only).
    #[command(subcommand)]
    Account(cli::AccountCommand),
    /// Manage access keys (the server's admin key only).
    #[command(subcommand)]
    Key(cli::KeyCommand),
    /// Check what this host lets Stratus do (namespaces, cgroups, seccomp,
    /// /tmp disks, interpreters, disk space); exit 1 if sandboxes cannot run.
    Doctor(doctor::DoctorArgs),
    /// Print this program's version (a server names its own in the `Server`
    /// header of every response).
    Version,
}

/// `stratus <version>`, with the commit when the build knew it (`build.rs`:
/// the git checkout's HEAD, else `STRATUS_GIT_COMMIT` from the build's
/// environment), e.g. `stratus 0.1.0 (c923c57)`.
fn version_line() -> String {
    let v = env!("CARGO_PKG_VERSION");
    match option_env!("STRATUS_GIT_COMMIT") {
        Some(c) if !c.is_empty() => format!("stratus {v} ({c})"),
        _ => format!("stratus {v}"),
    }
}

fn main() -> std::process::ExitCode {
    // The sandbox jailer must run before any thread exists.
    if std::env::args().nth(1).as_deref() == Some("__sandbox-init") {
        stratus_sandbox_process::jailer_main();
    }
    let args = Args::parse();
    if let Command::Version = args.command {
        println!("{}", version_line());
        return std::process::ExitCode::SUCCESS;
    }
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    // The server's configuration sizes the runtime, so it is read first.
    let serve = match args.command {
        Command::Server(a) => match server::configure(*a) {
            Ok(server::Start::Printed) => return std::process::ExitCode::SUCCESS,
            Ok(server::Start::Serve(config, warnings)) => {
                builder.worker_threads(config.worker_threads as usize);
                Ok((config, warnings))
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                return std::process::ExitCode::FAILURE;
            }
        },
        other => Err(other),
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match serve {
            Ok((config, warnings)) => server::run(*config, warnings).await.map(|()| 0),
            Err(Command::Server(_)) => unreachable!("the server's command was taken above"),
            Err(Command::Function(c)) => cli::function(c).await,
            Err(Command::Deploy(a)) => cli::deploy(a).await,
            Err(Command::Alias(c)) => cli::alias(c).await,
            Err(Command::Url(c)) => cli::url(c).await,
            Err(Command::Layer(c)) => cli::layer(c).await,
            Err(Command::Invoke(a)) => cli::invoke(a).await,
            Err(Command::Logs(a)) => cli::logs(a).await,
            Err(Command::Account(c)) => cli::account(c).await,
            Err(Command::Key(c)) => cli::key(c).await,
            Err(Command::Doctor(a)) => doctor::run(a),
            Err(Command::Version) => Ok(0),
        }
    });
    match result {
        Ok(code) => std::process::ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
