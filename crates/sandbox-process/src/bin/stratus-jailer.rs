//! Stand-alone jailer for `stratus-sandbox-process`: the same code the
//! `stratus __sandbox-init` subcommand runs, as its own small binary (used by
//! this crate's tests and usable as `ProcessBackendConfig::jailer`).

fn main() {
    stratus_sandbox_process::jailer_main()
}
