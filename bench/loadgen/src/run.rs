//! The load itself: C connections, one request in flight on each, a warm-up
//! and then a timed phase of a fixed number of requests or a fixed duration.
//!
//! Every connection is its own keep-alive HTTP/1.1 connection
//! (`hyper::client::conn::http1`, no pool) with TCP_NODELAY set, so each
//! request is exactly one write and the response one read on an
//! established connection. A connection that fails is reopened (counted in
//! `connections_opened`); the request that failed is an error.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::{HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Barrier;

use crate::sign::Signer;
use crate::stats::{Report, SigningCost, percentiles};

/// How many error messages a run keeps as examples.
const ERROR_SAMPLES: usize = 5;

/// When the timed phase ends.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    /// After this many requests in all (shared by the connections).
    Requests(u64),
    /// When this much time has passed; requests in flight then complete.
    Duration(Duration),
}

/// One benchmark run's settings.
#[derive(Debug)]
pub struct Options {
    /// Absolute `http://host:port/path` URL.
    pub url: Uri,
    pub method: Method,
    pub payload: Bytes,
    /// Extra request headers (signed along with the rest).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub concurrency: usize,
    pub stop: Stop,
    /// Warm-up requests in all, spread over the connections, not timed.
    pub warmup: u64,
    pub signer: Option<Signer>,
    pub expect_status: u16,
    pub expect_body: Option<Bytes>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// Tokio worker threads of the client (recorded in the report).
    pub threads: usize,
}

/// Why a run could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("URL {0} has no host")]
    NoHost(Uri),
    #[error("URL {0} is not http:// (only plain HTTP/1.1 is supported)")]
    NotHttp(Uri),
    #[error("concurrency must be at least 1")]
    NoConnections,
    #[error("no connection could be opened to {addr}: {first_error}")]
    Unreachable { addr: String, first_error: String },
}

/// What one connection measured.
#[derive(Debug, Default)]
struct ConnResult {
    latencies_ns: Vec<u64>,
    signing_ns: Vec<u64>,
    errors: u64,
    error_samples: Vec<String>,
    connections_opened: u64,
    connect_failed: Option<String>,
}

impl ConnResult {
    fn error(&mut self, msg: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(msg);
        }
    }
}

struct Target {
    addr: String,
    host_header: HeaderValue,
    path: Uri,
}

fn target(url: &Uri) -> Result<Target, RunError> {
    if url.scheme_str() != Some("http") {
        return Err(RunError::NotHttp(url.clone()));
    }
    let auth = url
        .authority()
        .ok_or_else(|| RunError::NoHost(url.clone()))?;
    let port = auth.port_u16().unwrap_or(80);
    let addr = format!("{}:{port}", auth.host());
    let host_header =
        HeaderValue::from_str(auth.as_str()).map_err(|_| RunError::NoHost(url.clone()))?;
    let path = url
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/")
        .parse::<Uri>()
        .map_err(|_| RunError::NoHost(url.clone()))?;
    Ok(Target {
        addr,
        host_header,
        path,
    })
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("TCP_NODELAY on {addr}: {e}"))?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1.1 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        // The connection ends when the sender is dropped or the peer closes;
        // a failure shows up as the next request's error.
        let _ = conn.await;
    });
    Ok(sender)
}

/// Builds (and signs, timing the signing) one request.
fn build(opts: &Options, t: &Target) -> Result<(Request<Full<Bytes>>, u64), String> {
    let mut builder = Request::builder()
        .method(opts.method.clone())
        .uri(opts.url.clone())
        .header(HOST, t.host_header.clone());
    if !opts.headers.iter().any(|(k, _)| k == CONTENT_TYPE) {
        builder = builder.header(CONTENT_TYPE, "application/json");
    }
    for (k, v) in &opts.headers {
        builder = builder.header(k, v);
    }
    let mut req = builder
        .body(Full::new(opts.payload.clone()))
        .map_err(|e| format!("building the request: {e}"))?;
    let mut sign_ns = 0;
    if let Some(signer) = &opts.signer {
        let t0 = Instant::now();
        signer
            .sign(&mut req, &opts.payload)
            .map_err(|e| format!("{e}: {:?}", std::error::Error::source(&e)))?;
        sign_ns = elapsed_ns(t0);
    }
    // HTTP/1.1 origin form on the wire; the full URL was only for signing.
    *req.uri_mut() = t.path.clone();
    Ok((req, sign_ns))
}

fn elapsed_ns(t0: Instant) -> u64 {
    u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// Sends one request on `sender` and checks the answer; returns the
/// round-trip time, or an error and whether the connection is unusable.
async fn one(
    opts: &Options,
    sender: &mut SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Result<u64, (String, bool)> {
    if let Err(e) = sender.ready().await {
        return Err((format!("connection closed: {e}"), true));
    }
    let t0 = Instant::now();
    let fut = async {
        let resp = sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, body))
    };
    let (status, body) = match tokio::time::timeout(opts.timeout, fut).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return Err((format!("request failed: {e}"), true)),
        Err(_) => return Err((format!("no answer within {:?}", opts.timeout), true)),
    };
    let ns = elapsed_ns(t0);
    if status.as_u16() != opts.expect_status {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err((format!("status {status}: {text}"), false));
    }
    if let Some(expected) = &opts.expect_body
        && body != *expected
    {
        let text = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        return Err((format!("unexpected body: {text}"), false));
    }
    Ok(ns)
}

async fn connection(
    opts: Arc<Options>,
    t: Arc<Target>,
    warmup: u64,
    barrier: Arc<Barrier>,
    tickets: Arc<AtomicU64>,
    deadline: Arc<std::sync::OnceLock<Instant>>,
) -> ConnResult {
    let mut r = ConnResult::default();
    let mut sender = match connect(&t.addr).await {
        Ok(s) => Some(s),
        Err(e) => {
            r.connect_failed = Some(e);
            None
        }
    };
    r.connections_opened += u64::from(sender.is_some());
    // Warm-up: untimed, errors ignored except for reconnecting.
    for _ in 0..warmup {
        let Some(s) = sender.as_mut() else { break };
        let Ok((req, _)) = build(&opts, &t) else {
            break;
        };
        if let Err((_, broken)) = one(&opts, s, req).await
            && broken
        {
            sender = connect(&t.addr).await.ok();
            r.connections_opened += u64::from(sender.is_some());
        }
    }
    barrier.wait().await;
    let Some(mut s) = sender else {
        return r;
    };
    loop {
        match opts.stop {
            Stop::Requests(_) => {
                if tickets
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_err()
                {
                    break;
                }
            }
            Stop::Duration(_) => {
                if deadline.get().is_some_and(|d| Instant::now() >= *d) {
                    break;
                }
            }
        }
        let (req, sign_ns) = match build(&opts, &t) {
            Ok(x) => x,
            Err(e) => {
                r.error(e);
                break;
            }
        };
        if opts.signer.is_some() {
            r.signing_ns.push(sign_ns);
        }
        match one(&opts, &mut s, req).await {
            Ok(ns) => r.latencies_ns.push(ns),
            Err((msg, broken)) => {
                r.error(msg);
                if broken {
                    match connect(&t.addr).await {
                        Ok(new) => {
                            s = new;
                            r.connections_opened += 1;
                        }
                        Err(e) => {
                            r.error(e);
                            break;
                        }
                    }
                }
            }
        }
    }
    r
}

/// Runs the benchmark described by `opts` on the current Tokio runtime.
pub async fn run(opts: Options) -> Result<Report, RunError> {
    if opts.concurrency == 0 {
        return Err(RunError::NoConnections);
    }
    let t = Arc::new(target(&opts.url)?);
    let opts = Arc::new(opts);
    let c = opts.concurrency;
    let barrier = Arc::new(Barrier::new(c + 1));
    let tickets = Arc::new(AtomicU64::new(match opts.stop {
        Stop::Requests(n) => n,
        Stop::Duration(_) => 0,
    }));
    let deadline = Arc::new(std::sync::OnceLock::new());
    let per_conn_warmup = opts.warmup.div_ceil(c as u64);
    let mut tasks = Vec::with_capacity(c);
    for _ in 0..c {
        tasks.push(tokio::spawn(connection(
            opts.clone(),
            t.clone(),
            per_conn_warmup,
            barrier.clone(),
            tickets.clone(),
            deadline.clone(),
        )));
    }
    barrier.wait().await;
    let start = Instant::now();
    if let Stop::Duration(d) = opts.stop {
        let _ = deadline.set(start + d);
    }
    let mut results = Vec::with_capacity(c);
    for task in tasks {
        match task.await {
            Ok(r) => results.push(r),
            Err(e) => results.push(ConnResult {
                errors: 1,
                error_samples: vec![format!("connection task failed: {e}")],
                ..ConnResult::default()
            }),
        }
    }
    let wall = start.elapsed().as_secs_f64();
    let failed_connects: Vec<&String> = results
        .iter()
        .filter_map(|r| r.connect_failed.as_ref())
        .collect();
    if failed_connects.len() == c {
        return Err(RunError::Unreachable {
            addr: t.addr.clone(),
            first_error: failed_connects[0].clone(),
        });
    }
    let mut latencies = Vec::new();
    let mut signing = Vec::new();
    let mut errors = 0;
    let mut samples = Vec::new();
    let mut opened = 0;
    for r in results {
        latencies.extend(r.latencies_ns);
        signing.extend(r.signing_ns);
        if let Some(e) = r.connect_failed {
            errors += 1;
            if samples.len() < ERROR_SAMPLES {
                samples.push(e);
            }
        }
        errors += r.errors;
        opened += r.connections_opened;
        for s in r.error_samples {
            if samples.len() < ERROR_SAMPLES {
                samples.push(s);
            }
        }
    }
    let ok = latencies.len() as u64;
    let throughput = if wall > 0.0 { ok as f64 / wall } else { 0.0 };
    let mut notes = vec![
        "latency: from handing the request to the connection until its whole body is read"
            .to_owned(),
        "throughput: successful timed requests / wall time of the timed phase".to_owned(),
        format!(
            "{c} keep-alive HTTP/1.1 connection(s), TCP_NODELAY, one request in flight on each"
        ),
    ];
    if opts.signer.is_some() {
        notes.push(
            "SigV4: every request signed before its timer starts; signing is outside the \
             latency figures but inside the throughput wall time"
                .to_owned(),
        );
    }
    Ok(Report {
        url: opts.url.to_string(),
        method: opts.method.to_string(),
        payload_bytes: opts.payload.len(),
        concurrency: c,
        threads: opts.threads,
        tcp_nodelay: true,
        keep_alive: true,
        warmup_requests: per_conn_warmup * c as u64,
        n: ok + errors,
        errors,
        error_samples: samples,
        connections_opened: opened,
        latency_us: percentiles(&mut latencies),
        throughput_rps: (throughput * 10.0).round() / 10.0,
        wall_s: (wall * 1e6).round() / 1e6,
        signing: SigningCost {
            enabled: opts.signer.is_some(),
            in_timed_window: false,
            latency_us: percentiles(&mut signing),
        },
        method_notes: notes,
    })
}
