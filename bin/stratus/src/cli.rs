//! The command-line client: talks to a running server over the Lambda API.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

mod admin;
mod deploy;
mod profile;
mod surface;
pub use admin::{AccountCommand, KeyCommand, account, key};
use base64::Engine;
pub use deploy::{DeployArgs, deploy};
use serde_json::{Value, json};

/// Where the server is and which credentials sign for the caller.
#[derive(Debug, clap::Args)]
pub struct Endpoint {
    /// URL of the Stratus server [default: $STRATUS_ENDPOINT, else the AWS
    /// CLI's $AWS_ENDPOINT_URL_LAMBDA / $AWS_ENDPOINT_URL, else `endpoint_url`
    /// of the profile in ~/.aws/config, else http://127.0.0.1:9000].
    #[arg(long, global = true)]
    endpoint: Option<String>,
    /// AWS CLI profile whose credentials, region and endpoint_url to use
    /// [default: $AWS_PROFILE, else `default`].
    #[arg(long, global = true)]
    profile: Option<String>,
}

#[derive(Debug, clap::Subcommand)]
pub enum FunctionCommand {
    /// Create a function from a directory or a zip file.
    Create {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        /// A directory (zipped for you) or a .zip file.
        #[arg(long)]
        code: PathBuf,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Replace a function's code.
    UpdateCode {
        name: String,
        #[arg(long)]
        code: PathBuf,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Change a function's configuration.
    UpdateConfig {
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Show a function's configuration and code location.
    Get {
        name: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List functions.
    List {
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List a function's live sandboxes and their state.
    Sandboxes {
        name: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Delete a function.
    Delete {
        name: String,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Publish $LATEST as a new immutable version (or get the newest
    /// version back if nothing changed since it was published).
    Publish {
        name: String,
        #[arg(long)]
        description: Option<String>,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// List a function's versions ($LATEST first).
    Versions {
        name: String,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
    /// Provisioned concurrency of a version or alias: set it (`--count N`),
    /// remove it (`--delete`), or show it (neither).
    Provision {
        name: String,
        /// A published version number or an alias name.
        #[arg(long)]
        qualifier: String,
        /// Sandboxes to keep initialised.
        #[arg(long, conflicts_with = "delete")]
        count: Option<u32>,
        /// Remove the config (its sandboxes stop).
        #[arg(long)]
        delete: bool,
        #[command(flatten)]
        output: Output,
        #[command(flatten)]
        endpoint: Endpoint,
    },
}

/// How an answer is printed.
#[derive(Debug, clap::Args)]
pub struct Output {
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

impl Output {
    fn json(&self) -> bool {
        self.output == "json"
    }
}

/// Prints rows under a header, each column as wide as its widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(c);
            } else {
                out.push_str(&format!("{c:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// The rows people read about one function: from a FunctionConfiguration
/// (create, update) or a GetFunction answer (which adds its concurrency).
fn function_rows(v: &Value) -> Vec<Vec<String>> {
    let conf = v.get("Configuration").unwrap_or(v);
    let mut rows: Vec<Vec<String>> = [
        ("Name", "FunctionName"),
        ("ARN", "FunctionArn"),
        ("Runtime", "Runtime"),
        ("Handler", "Handler"),
        ("Memory (MB)", "MemorySize"),
        ("Timeout (s)", "Timeout"),
        ("State", "State"),
        ("State reason", "StateReason"),
        ("Last update", "LastUpdateStatus"),
        ("Last modified", "LastModified"),
        ("Code SHA-256", "CodeSha256"),
        ("Code size (bytes)", "CodeSize"),
        ("Revision", "RevisionId"),
        ("Description", "Description"),
    ]
    .iter()
    .filter(|(_, key)| !matches!(conf.get(key), None | Some(Value::Null)))
    .map(|(label, key)| vec![(*label).to_owned(), cell(conf, key)])
    .collect();
    if let Some(mb) = conf.pointer("/EphemeralStorage/Size") {
        rows.push(vec!["/tmp (MB)".into(), mb.to_string()]);
    }
    if let Some(vars) = conf
        .pointer("/Environment/Variables")
        .and_then(Value::as_object)
        .filter(|m| !m.is_empty())
    {
        let names: Vec<&str> = vars.keys().map(String::as_str).collect();
        rows.push(vec!["Environment".into(), names.join(", ")]);
    }
    if let Some(n) = v.pointer("/Concurrency/ReservedConcurrentExecutions") {
        rows.push(vec!["Reserved concurrency".into(), n.to_string()]);
    }
    rows
}

/// One function, as a two-column table or as the API's JSON.
fn print_function(v: &Value, output: &Output) -> anyhow::Result<()> {
    if output.json() {
        return print_json(v);
    }
    print_table(&["FIELD", "VALUE"], &function_rows(v));
    Ok(())
}

fn cell(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "-".into(),
        Some(other) => other.to_string(),
    }
}

#[derive(Debug, clap::Args)]
pub struct ConfigArgs {
    /// Runtime id, e.g. python3.12, nodejs20.x, provided.al2023.
    #[arg(long)]
    runtime: Option<String>,
    /// Handler, e.g. app.handler.
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MB (128-10240).
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds (1-900).
    #[arg(long)]
    timeout: Option<u32>,
    /// Environment variable KEY=VALUE (repeatable; replaces all variables).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Isolation tier the function asks for, process or gvisor: sets its
    /// STRATUS_ISOLATION environment variable (kept with the other
    /// variables). The server may run it in a stronger tier, never a weaker one.
    #[arg(long, value_parser = ["process", "gvisor"])]
    isolation: Option<String>,
    #[arg(long)]
    description: Option<String>,
    /// A layer version ARN (repeatable, in order, up to 5; replaces the
    /// function's layers).
    #[arg(long = "layer", value_name = "LAYER_VERSION_ARN")]
    layers: Vec<String>,
    /// Execution role ARN (Stratus does not use it; Lambda requires one).
    #[arg(long, default_value = "arn:aws:iam::000000000000:role/stratus")]
    role: String,
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    name: String,
    /// A version or alias to invoke (default $LATEST).
    #[arg(long)]
    qualifier: Option<String>,
    /// JSON payload.
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the payload from a file.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Print the invocation's log tail (START..REPORT) on stderr.
    #[arg(long)]
    log: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    name: String,
    /// Keep waiting for and printing new lines.
    #[arg(long, short)]
    follow: bool,
    /// Prefix each line with its time and log stream.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

struct Client {
    http: reqwest::Client,
    base: String,
    region: String,
    credentials: Option<profile::Credentials>,
}

/// The path segment for a function name (ARNs contain ':').
fn seg(name: &str) -> String {
    name.replace('%', "%25")
        .replace(':', "%3A")
        .replace('/', "%2F")
}

impl Client {
    fn new(e: &Endpoint) -> anyhow::Result<Self> {
        let found = profile::resolve(
            &|k| std::env::var(k).ok(),
            e.endpoint.as_deref(),
            e.profile.as_deref(),
        );
        Ok(Client {
            http: reqwest::Client::builder().tcp_nodelay(true).build()?,
            base: found.endpoint,
            region: found.region,
            credentials: found.credentials,
        })
    }

    /// Signs a request with SigV4 for the `lambda` service, as the AWS SDKs
    /// do; without credentials it goes unsigned (and the server says so).
    fn sign(&self, req: &mut reqwest::Request) -> anyhow::Result<()> {
        use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
        let Some(c) = &self.credentials else {
            return Ok(());
        };
        let identity: aws_smithy_runtime_api::client::identity::Identity =
            aws_credential_types::Credentials::new(
                &c.access_key_id,
                &c.secret_access_key,
                c.session_token.clone(),
                None,
                "stratus-cli",
            )
            .into();
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("lambda")
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .context("signing parameters")?
            .into();
        let body = req.body().and_then(reqwest::Body::as_bytes).unwrap_or(&[]);
        let headers: Vec<(&str, &str)> = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let signable = SignableRequest::new(
            req.method().as_str(),
            req.url().as_str(),
            headers.into_iter(),
            SignableBody::Bytes(body),
        )
        .context("signing the request")?;
        let (instructions, _) = sign(signable, &params)
            .context("signing the request")?
            .into_parts();
        let (new_headers, _) = instructions.into_parts();
        for h in new_headers {
            req.headers_mut().insert(
                reqwest::header::HeaderName::from_bytes(h.name().as_bytes())?,
                reqwest::header::HeaderValue::from_str(h.value())?,
            );
        }
        Ok(())
    }

    /// Sends a request; a non-2xx answer becomes an error naming Lambda's
    /// error type and message.
    async fn send(
        &self,
        req: reqwest::RequestBuilder,
    ) -> anyhow::Result<(reqwest::header::HeaderMap, bytes::Bytes)> {
        let mut req = req.build()?;
        self.sign(&mut req)?;
        let resp = self.http.execute(req).await.with_context(|| {
            format!(
                "cannot reach the Stratus server at {} (is `stratus server` running?)",
                self.base
            )
        })?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await?;
        if !status.is_success() {
            let kind = headers
                .get("x-amzn-errortype")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("Error")
                .to_owned();
            let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let msg = v
                .get("Message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{kind} ({}): {msg}", status.as_u16());
        }
        Ok((headers, bytes))
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<bytes::Bytes> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            req = req.json(&b);
        }
        Ok(self.send(req).await?.1)
    }

    async fn json(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let bytes = self.call(method, path, body).await?;
        if bytes.is_empty() {
            return Ok(Value::Null);
        }
        Ok(serde_json::from_slice(&bytes)?)
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Reads a zip file, or zips a directory.
fn code_zip(path: &Path) -> anyhow::Result<String> {
    let bytes = if path.is_dir() {
        stratus_code::zip_directory(path).with_context(|| format!("zipping {}", path.display()))?
    } else {
        std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
    };
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

/// The request body of `c`. `current` is the function's environment today:
/// `--isolation` without `--env` keeps it and adds the variable.
fn config_body(
    c: &ConfigArgs,
    current: Option<&serde_json::Map<String, Value>>,
) -> anyhow::Result<serde_json::Map<String, Value>> {
    let mut m = serde_json::Map::new();
    if let Some(r) = &c.runtime {
        m.insert("Runtime".into(), json!(r));
    }
    if let Some(h) = &c.handler {
        m.insert("Handler".into(), json!(h));
    }
    if let Some(x) = c.memory {
        m.insert("MemorySize".into(), json!(x));
    }
    if let Some(x) = c.timeout {
        m.insert("Timeout".into(), json!(x));
    }
    if let Some(d) = &c.description {
        m.insert("Description".into(), json!(d));
    }
    if !c.layers.is_empty() {
        m.insert("Layers".into(), json!(c.layers));
    }
    if !c.env.is_empty() || c.isolation.is_some() {
        let mut vars = BTreeMap::new();
        if c.env.is_empty() {
            for (k, v) in current.into_iter().flatten() {
                if let Some(v) = v.as_str() {
                    vars.insert(k.clone(), v.to_owned());
                }
            }
        }
        for kv in &c.env {
            let Some((k, v)) = kv.split_once('=') else {
                bail!("--env takes KEY=VALUE, got {kv:?}");
            };
            vars.insert(k.to_owned(), v.to_owned());
        }
        if let Some(tier) = &c.isolation {
            vars.insert(stratus_types::ISOLATION_ENV.to_owned(), tier.clone());
        }
        m.insert("Environment".into(), json!({"Variables": vars}));
    }
    Ok(m)
}

pub use surface::{AliasCommand, LayerCommand, UrlCommand, alias, layer, url};

pub async fn function(cmd: FunctionCommand) -> anyhow::Result<u8> {
    use reqwest::Method;
    match cmd {
        FunctionCommand::Publish {
            name,
            description,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            surface::publish(&c, &name, description, &output).await?;
        }
        FunctionCommand::Versions {
            name,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            surface::versions(&c, &name, &output).await?;
        }
        FunctionCommand::Provision {
            name,
            qualifier,
            count,
            delete,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            surface::provision(&c, &name, &qualifier, count, delete, &output).await?;
        }
        FunctionCommand::Create {
            name,
            config,
            code,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let mut body = config_body(&config, None)?;
            body.insert("FunctionName".into(), json!(name));
            body.insert("Role".into(), json!(config.role));
            body.insert("Code".into(), json!({"ZipFile": code_zip(&code)?}));
            let v = c
                .json(
                    Method::POST,
                    "/2015-03-31/functions",
                    Some(Value::Object(body)),
                )
                .await?;
            print_function(&v, &output)?;
        }
        FunctionCommand::UpdateCode {
            name,
            code,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let v = c
                .json(
                    Method::PUT,
                    &format!("/2015-03-31/functions/{}/code", seg(&name)),
                    Some(json!({"ZipFile": code_zip(&code)?})),
                )
                .await?;
            print_function(&v, &output)?;
        }
        FunctionCommand::UpdateConfig {
            name,
            config,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let path = format!("/2015-03-31/functions/{}/configuration", seg(&name));
            let current = if config.isolation.is_some() && config.env.is_empty() {
                let now = c.json(Method::GET, &path, None).await?;
                now.pointer("/Environment/Variables")
                    .and_then(Value::as_object)
                    .cloned()
            } else {
                None
            };
            let body = config_body(&config, current.as_ref())?;
            let v = c
                .json(Method::PUT, &path, Some(Value::Object(body)))
                .await?;
            print_function(&v, &output)?;
        }
        FunctionCommand::Get {
            name,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let v = c
                .json(
                    Method::GET,
                    &format!("/2015-03-31/functions/{}", seg(&name)),
                    None,
                )
                .await?;
            print_function(&v, &output)?;
        }
        FunctionCommand::List { output, endpoint } => {
            let c = Client::new(&endpoint)?;
            let mut all = Vec::new();
            let mut marker: Option<String> = None;
            loop {
                let path = match &marker {
                    Some(m) => format!("/2015-03-31/functions?Marker={m}"),
                    None => "/2015-03-31/functions".to_owned(),
                };
                let v = c.json(Method::GET, &path, None).await?;
                if let Some(fs) = v.get("Functions").and_then(Value::as_array) {
                    all.extend(fs.iter().cloned());
                }
                match v.get("NextMarker").and_then(Value::as_str) {
                    Some(m) => marker = Some(m.to_owned()),
                    None => break,
                }
            }
            if output.json() {
                print_json(&json!({"Functions": all}))?;
            } else {
                let rows: Vec<Vec<String>> = all
                    .iter()
                    .map(|f| {
                        [
                            "FunctionName",
                            "Runtime",
                            "MemorySize",
                            "Timeout",
                            "State",
                            "LastModified",
                        ]
                        .iter()
                        .map(|k| cell(f, k))
                        .collect()
                    })
                    .collect();
                print_table(
                    &[
                        "NAME",
                        "RUNTIME",
                        "MEMORY",
                        "TIMEOUT",
                        "STATE",
                        "LAST MODIFIED",
                    ],
                    &rows,
                );
            }
        }
        FunctionCommand::Sandboxes {
            name,
            output,
            endpoint,
        } => {
            let c = Client::new(&endpoint)?;
            let v = c
                .json(
                    Method::GET,
                    &format!("/_stratus/functions/{}/sandboxes", seg(&name)),
                    None,
                )
                .await?;
            if output.json() {
                print_json(&v)?;
            } else {
                let empty = Vec::new();
                let list = v
                    .get("Sandboxes")
                    .and_then(Value::as_array)
                    .unwrap_or(&empty);
                let secs = |s: &Value, k: &str| {
                    s.get(k)
                        .and_then(Value::as_u64)
                        .map_or("-".to_owned(), |ms| format!("{:.1}s", ms as f64 / 1000.0))
                };
                let rows: Vec<Vec<String>> = list
                    .iter()
                    .map(|s| {
                        vec![
                            cell(s, "Id"),
                            cell(s, "State"),
                            cell(s, "Version"),
                            cell(s, "MemoryMb"),
                            secs(s, "IdleMs"),
                            secs(s, "LeaseLeftMs"),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "SANDBOX",
                        "STATE",
                        "VERSION",
                        "MEMORY",
                        "IDLE",
                        "LEASE LEFT",
                    ],
                    &rows,
                );
            }
        }
        FunctionCommand::Delete { name, endpoint } => {
            let c = Client::new(&endpoint)?;
            c.call(
                Method::DELETE,
                &format!("/2015-03-31/functions/{}", seg(&name)),
                None,
            )
            .await?;
            eprintln!("deleted {name}");
        }
    }
    Ok(0)
}

/// Seconds one `--follow` request waits for new lines.
const FOLLOW_WAIT_S: u64 = 20;

pub async fn logs(a: LogsArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.endpoint)?;
    let mut after: Option<u64> = None;
    loop {
        let mut path = format!("/_stratus/logs/{}?limit=10000", seg(&a.name));
        if let Some(n) = after {
            path.push_str(&format!("&after={n}"));
        }
        if a.follow {
            path.push_str(&format!("&wait={FOLLOW_WAIT_S}"));
        }
        let v = c.json(reqwest::Method::GET, &path, None).await?;
        for e in v
            .get("events")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let msg = e.get("message").and_then(Value::as_str).unwrap_or_default();
            if a.verbose {
                let ts = e.get("timestamp").and_then(Value::as_u64).unwrap_or(0);
                let stream = e
                    .get("logStreamName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                println!("{} {stream} {msg}", utc_millis(ts));
            } else {
                println!("{msg}");
            }
        }
        let next = v.get("nextToken").and_then(Value::as_u64);
        let got_all = next == after;
        after = next;
        if !a.follow && got_all {
            return Ok(0);
        }
    }
}

/// `2026-05-02T10:11:12.345Z` for milliseconds since the epoch.
fn utc_millis(ms: u64) -> String {
    let t = time::OffsetDateTime::UNIX_EPOCH
        + time::Duration::milliseconds(ms.min(i64::MAX as u64) as i64);
    let d = t.date();
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        d.year(),
        u8::from(d.month()),
        d.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Exit code when the function itself failed (the API call succeeded).
const FUNCTION_ERROR_EXIT: u8 = 2;

pub async fn invoke(a: InvokeArgs) -> anyhow::Result<u8> {
    let c = Client::new(&a.endpoint)?;
    let payload = match (&a.payload, &a.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => b"{}".to_vec(),
    };
    let mut req = c
        .http
        .post(format!(
            "{}/2015-03-31/functions/{}/invocations{}",
            c.base,
            seg(&a.name),
            a.qualifier
                .as_deref()
                .map(|q| format!("?Qualifier={}", seg(q)))
                .unwrap_or_default()
        ))
        .body(payload);
    if a.log {
        req = req.header("X-Amz-Log-Type", "Tail");
    }
    let (headers, body) = c.send(req).await?;
    if a.log
        && let Some(l) = headers
            .get("x-amz-log-result")
            .and_then(|v| v.to_str().ok())
        && let Ok(text) = base64::engine::general_purpose::STANDARD.decode(l)
    {
        eprint!("{}", String::from_utf8_lossy(&text));
    }
    println!("{}", String::from_utf8_lossy(&body));
    if let Some(err) = headers
        .get("x-amz-function-error")
        .and_then(|v| v.to_str().ok())
    {
        eprintln!("function error: {err}");
        return Ok(FUNCTION_ERROR_EXIT);
    }
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_table_shows_its_configuration_and_concurrency() {
        let got = json!({
            "Configuration": {
                "FunctionName": "f", "Runtime": "python3.12", "MemorySize": 256,
                "StateReason": null, "EphemeralStorage": {"Size": 512},
                "Environment": {"Variables": {"B": "2", "A": "secret"}},
            },
            "Concurrency": {"ReservedConcurrentExecutions": 5},
        });
        let rows = function_rows(&got);
        let row = |label: &str| rows.iter().find(|r| r[0] == label).map(|r| r[1].clone());
        assert_eq!(row("Name").as_deref(), Some("f"));
        assert_eq!(row("Memory (MB)").as_deref(), Some("256"));
        assert_eq!(row("/tmp (MB)").as_deref(), Some("512"));
        assert_eq!(row("Environment").as_deref(), Some("A, B"));
        assert_eq!(row("Reserved concurrency").as_deref(), Some("5"));
        assert_eq!(row("State reason"), None, "null fields are left out");
        // A bare FunctionConfiguration (create, update) works the same.
        let rows = function_rows(&got["Configuration"]);
        assert!(
            rows.iter()
                .any(|r| r[0] == "Runtime" && r[1] == "python3.12")
        );
        assert!(!rows.iter().any(|r| r.join(" ").contains("secret")));
    }

    #[test]
    fn verbose_times_are_utc() {
        assert_eq!(utc_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(utc_millis(1_777_716_672_345), "2026-05-02T10:11:12.345Z");
    }

    #[test]
    fn arn_names_are_escaped_in_paths() {
        assert_eq!(
            seg("arn:aws:lambda:us-east-1:000000000000:function:f"),
            "arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Af"
        );
        assert_eq!(seg("plain"), "plain");
    }

    #[test]
    fn env_flags_become_an_environment() {
        let c = ConfigArgs {
            runtime: None,
            handler: None,
            memory: Some(256),
            timeout: None,
            env: vec!["A=1".into(), "B=x=y".into()],
            isolation: None,
            description: None,
            layers: Vec::new(),
            role: String::new(),
        };
        let m = config_body(&c, None).expect("valid");
        assert_eq!(m["Environment"]["Variables"]["B"], "x=y");
        assert_eq!(m["MemorySize"], 256);
        assert!(
            !m.contains_key("Layers"),
            "no --layer leaves the layers alone"
        );
        let bad = ConfigArgs {
            env: vec!["novalue".into()],
            runtime: None,
            handler: None,
            memory: None,
            timeout: None,
            isolation: None,
            description: None,
            layers: vec!["arn:aws:lambda:us-east-1:000000000000:layer:l:1".into()],
            role: String::new(),
        };
        assert!(config_body(&bad, None).is_err());
        let with_layer = ConfigArgs {
            env: Vec::new(),
            ..bad
        };
        assert_eq!(
            config_body(&with_layer, None).expect("valid")["Layers"],
            json!(["arn:aws:lambda:us-east-1:000000000000:layer:l:1"])
        );
        // --isolation alone keeps the current variables and adds its own.
        let current = json!({"KEEP": "me"});
        let tier = ConfigArgs {
            env: Vec::new(),
            isolation: Some("gvisor".into()),
            ..c
        };
        let m = config_body(&tier, current.as_object()).expect("valid");
        assert_eq!(
            m["Environment"]["Variables"],
            json!({"KEEP": "me", "STRATUS_ISOLATION": "gvisor"})
        );
    }
}
