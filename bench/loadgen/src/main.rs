//! `stratus-loadgen`: drives one URL with C keep-alive connections and prints
//! the run's figures as JSON on stdout (see the library docs for what is
//! timed). The benchmark suite (`bench/suite.py`) runs it against Stratus and
//! against the direct baselines alike.
//!
//! ```sh
//! stratus-loadgen --url http://127.0.0.1:9000/2015-03-31/functions/f/invocations \
//!     --payload '{}' --expect-body '{}' --sigv4 -c 8 -n 20000 --warmup 500
//! ```

use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http::{HeaderName, HeaderValue, Method, Uri};
use stratus_bench_loadgen::run::{Options, Stop, run};
use stratus_bench_loadgen::sign::Signer;

#[derive(Debug, Parser)]
#[command(name = "stratus-loadgen", version, about)]
struct Args {
    /// The URL to send to (http:// only).
    #[arg(long)]
    url: Uri,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: Method,
    /// Request body.
    #[arg(long, default_value = "{}", conflicts_with = "payload_file")]
    payload: String,
    /// Read the request body from this file instead.
    #[arg(long)]
    payload_file: Option<std::path::PathBuf>,
    /// Extra header, `Name: value` (repeatable).
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// Concurrent connections, one request in flight on each.
    #[arg(long, short = 'c', default_value_t = 1)]
    concurrency: usize,
    /// Timed requests in all (default 1000 unless --duration is given).
    #[arg(long, short = 'n', conflicts_with = "duration")]
    requests: Option<u64>,
    /// Run the timed phase for this many seconds instead of a request count.
    #[arg(long)]
    duration: Option<f64>,
    /// Untimed warm-up requests in all, spread over the connections.
    #[arg(long, default_value_t = 100)]
    warmup: u64,
    /// Sign every request with SigV4 (before its timer starts).
    #[arg(long)]
    sigv4: bool,
    #[arg(long, env = "AWS_ACCESS_KEY_ID", default_value = "test")]
    access_key_id: String,
    #[arg(
        long,
        env = "AWS_SECRET_ACCESS_KEY",
        default_value = "test",
        hide_env_values = true
    )]
    secret_access_key: String,
    #[arg(long, default_value = "us-east-1")]
    region: String,
    #[arg(long, default_value = "lambda")]
    service: String,
    /// Status every response must have.
    #[arg(long, default_value_t = 200)]
    expect_status: u16,
    /// Body every response must have, byte for byte.
    #[arg(long)]
    expect_body: Option<String>,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 60.0)]
    timeout: f64,
    /// Client threads (Tokio workers); 1 = a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the JSON here.
    #[arg(long)]
    out: Option<std::path::PathBuf>,
}

fn header(s: &str) -> anyhow::Result<(HeaderName, HeaderValue)> {
    let Some((k, v)) = s.split_once(':') else {
        bail!("header {s:?} is not `Name: value`");
    };
    Ok((
        HeaderName::from_bytes(k.trim().as_bytes())
            .with_context(|| format!("header name {k:?}"))?,
        HeaderValue::from_str(v.trim()).with_context(|| format!("header value {v:?}"))?,
    ))
}

fn secs(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v).with_context(|| format!("--{name} {v} is not a duration"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let payload = match &args.payload_file {
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
        None => args.payload.clone().into_bytes(),
    };
    let stop = match (args.requests, args.duration) {
        (_, Some(d)) => Stop::Duration(secs("duration", d)?),
        (Some(n), None) => Stop::Requests(n),
        (None, None) => Stop::Requests(1000),
    };
    let opts = Options {
        url: args.url.clone(),
        method: args.method.clone(),
        payload: Bytes::from(payload),
        headers: args
            .headers
            .iter()
            .map(|h| header(h))
            .collect::<anyhow::Result<_>>()?,
        concurrency: args.concurrency,
        stop,
        warmup: args.warmup,
        signer: args.sigv4.then(|| {
            Signer::new(
                &args.access_key_id,
                &args.secret_access_key,
                &args.region,
                &args.service,
            )
        }),
        expect_status: args.expect_status,
        expect_body: args.expect_body.clone().map(Bytes::from),
        timeout: secs("timeout", args.timeout)?,
        threads: args.threads.max(1),
    };
    let rt = if opts.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(opts.threads)
            .enable_all()
            .build()
    }
    .context("starting the Tokio runtime")?;
    let report = rt.block_on(run(opts))?;
    let json = serde_json::to_string_pretty(&report).context("encoding the report")?;
    if let Some(out) = &args.out {
        std::fs::write(out, format!("{json}\n"))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}
