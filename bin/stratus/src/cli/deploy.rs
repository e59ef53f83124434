//! `stratus deploy DIR [--watch]`: create or update a function from a
//! directory, idempotently.
//!
//! Settings come from flags, else from `DIR/stratus.json`
//! (`{"name", "runtime", "handler", "memory", "timeout", "description",
//! "environment": {...}}`), else from defaults (the directory's name).
//! Dependencies are bundled the way each runtime does it: `requirements.txt`
//! is installed with `pip install -t` into the package, `package.json` with
//! `npm install --omit=dev --install-links` (local `file:` packages copied,
//! not linked); both run in a staging copy, never in `DIR`.
//! A deploy whose code and configuration equal the function's changes
//! nothing. `--watch` deploys again whenever a file under `DIR` changes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use base64::Engine;
use serde_json::{Value, json};
use sha2::Digest;

use super::{Client, ConfigArgs, Endpoint, config_body, seg};

/// The manifest file read from the deployed directory.
pub const MANIFEST: &str = "stratus.json";

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// The function's directory.
    dir: PathBuf,
    /// Function name [default: the manifest's `name`, else the directory's name].
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Deploy again whenever a file under DIR changes (Ctrl-C to stop).
    #[arg(long)]
    watch: bool,
    #[command(flatten)]
    endpoint: Endpoint,
}

/// `stratus.json`.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: Option<String>,
    runtime: Option<String>,
    handler: Option<String>,
    memory: Option<u32>,
    timeout: Option<u32>,
    description: Option<String>,
    environment: Option<BTreeMap<String, String>>,
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    match std::fs::read(&path) {
        Ok(bytes) => {
            serde_json::from_slice(&bytes).with_context(|| format!("reading {}", path.display()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Manifest::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// Flags win over the manifest.
fn settings(a: &DeployArgs, m: Manifest) -> anyhow::Result<(String, ConfigArgs)> {
    let name = match a.name.clone().or(m.name) {
        Some(n) => n,
        None => a
            .dir
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .context("cannot name the function: give --name or a name in stratus.json")?,
    };
    let c = &a.config;
    let env = if c.env.is_empty() {
        m.environment
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    } else {
        c.env.clone()
    };
    let config = ConfigArgs {
        runtime: c.runtime.clone().or(m.runtime),
        handler: c.handler.clone().or(m.handler),
        memory: c.memory.or(m.memory),
        timeout: c.timeout.or(m.timeout),
        env,
        isolation: c.isolation.clone(),
        description: c.description.clone().or(m.description),
        layers: c.layers.clone(),
        role: c.role.clone(),
    };
    if config.runtime.is_none() || config.handler.is_none() {
        bail!(
            "a deploy needs a runtime and a handler: give --runtime/--handler or put them in {MANIFEST}"
        );
    }
    Ok((name, config))
}

/// Copies `dir` (without `.git` and the manifest) into a staging directory,
/// installs dependencies there, and zips it.
fn package(dir: &Path, runtime: &str) -> anyhow::Result<Vec<u8>> {
    let stage = tempfile::tempdir().context("creating a staging directory")?;
    copy_tree(dir, stage.path())?;
    if runtime.starts_with("python") && dir.join("requirements.txt").is_file() {
        eprintln!("  installing requirements.txt with pip...");
        run(
            std::process::Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(["--no-compile", "-r", "requirements.txt", "-t", "."])
                .current_dir(stage.path()),
            "pip install -r requirements.txt",
        )?;
    }
    if runtime.starts_with("nodejs") && dir.join("package.json").is_file() {
        eprintln!("  installing package.json dependencies with npm...");
        run(
            std::process::Command::new("npm")
                .args([
                    "install",
                    "--omit=dev",
                    "--install-links",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                ])
                .current_dir(stage.path()),
            "npm install",
        )?;
    }
    stratus_code::zip_directory(stage.path()).with_context(|| format!("zipping {}", dir.display()))
}

fn run(cmd: &mut std::process::Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

fn skipped(name: &std::ffi::OsStr) -> bool {
    name == ".git" || name == MANIFEST
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        if skipped(&entry.file_name()) {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        let kind = entry.file_type()?;
        if kind.is_dir() {
            std::fs::create_dir_all(&dst)?;
            copy_tree(&src, &dst)?;
        } else if kind.is_file() {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&src)?;
            std::os::unix::fs::symlink(target, &dst)?;
        }
    }
    Ok(())
}

/// What a deploy did.
#[derive(Debug, PartialEq, Eq)]
enum Outcome {
    Created,
    Updated { code: bool, config: bool },
    Unchanged,
}

/// The configuration fields a deploy sets, as the server reports them.
fn differs(current: &Value, wanted: &serde_json::Map<String, Value>) -> bool {
    wanted.iter().any(|(k, v)| match k.as_str() {
        "Environment" => {
            current
                .pointer("/Environment/Variables")
                .unwrap_or(&json!({}))
                != v.get("Variables").unwrap_or(&json!({}))
        }
        _ => current.get(k) != Some(v),
    })
}

async fn deploy_once(
    c: &Client,
    name: &str,
    cfg: &ConfigArgs,
    dir: &Path,
) -> anyhow::Result<Outcome> {
    use reqwest::Method;
    let runtime = cfg.runtime.as_deref().unwrap_or_default();
    let zip = package(dir, runtime)?;
    let sha = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(&zip));
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
    let mut wanted = config_body(cfg, None)?;
    if !wanted.contains_key("Environment") {
        wanted.insert("Environment".into(), json!({"Variables": {}}));
    }
    let path = format!("/2015-03-31/functions/{}", seg(name));
    let current = match c
        .json(Method::GET, &format!("{path}/configuration"), None)
        .await
    {
        Ok(v) => Some(v),
        Err(e) if e.to_string().contains("ResourceNotFoundException") => None,
        Err(e) => return Err(e),
    };
    let outcome = match current {
        None => {
            eprintln!("  creating {name} ({} KiB)...", zip.len().div_ceil(1024));
            let mut body = wanted.clone();
            body.insert("FunctionName".into(), json!(name));
            body.insert("Role".into(), json!(cfg.role));
            body.insert("Code".into(), json!({"ZipFile": zip_b64}));
            c.json(
                Method::POST,
                "/2015-03-31/functions",
                Some(Value::Object(body)),
            )
            .await?;
            Outcome::Created
        }
        Some(cur) => {
            let code = cur.get("CodeSha256").and_then(Value::as_str) != Some(sha.as_str());
            let config = differs(&cur, &wanted);
            if code {
                wait_ready(c, &path).await?;
                eprintln!("  uploading new code ({} KiB)...", zip.len().div_ceil(1024));
                c.json(
                    Method::PUT,
                    &format!("{path}/code"),
                    Some(json!({"ZipFile": zip_b64})),
                )
                .await?;
            }
            if config {
                wait_ready(c, &path).await?;
                eprintln!("  updating the configuration...");
                c.json(
                    Method::PUT,
                    &format!("{path}/configuration"),
                    Some(Value::Object(wanted)),
                )
                .await?;
            }
            if code || config {
                Outcome::Updated { code, config }
            } else {
                Outcome::Unchanged
            }
        }
    };
    wait_ready(c, &path).await?;
    Ok(outcome)
}

/// Waits until the function is Active and its last update Successful.
async fn wait_ready(c: &Client, path: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let v = c
            .json(reqwest::Method::GET, &format!("{path}/configuration"), None)
            .await?;
        let state = v.get("State").and_then(Value::as_str).unwrap_or_default();
        let update = v
            .get("LastUpdateStatus")
            .and_then(Value::as_str)
            .unwrap_or("Successful");
        match (state, update) {
            ("Active", "Successful") => return Ok(()),
            ("Failed", _) | (_, "Failed") => bail!(
                "the function failed: {}",
                v.get("StateReason")
                    .or_else(|| v.get("LastUpdateStatusReason"))
                    .and_then(Value::as_str)
                    .unwrap_or("no reason given")
            ),
            _ if Instant::now() > deadline => {
                bail!("the function did not become Active within 120 s")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// A cheap fingerprint of a directory tree: every path with its size and
/// modification time.
fn fingerprint(dir: &Path) -> Vec<(PathBuf, u64, Option<SystemTime>)> {
    fn walk(p: &Path, out: &mut Vec<(PathBuf, u64, Option<SystemTime>)>) {
        let Ok(entries) = std::fs::read_dir(p) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name() == ".git" {
                continue;
            }
            let Ok(meta) = e.metadata() else { continue };
            if meta.is_dir() {
                walk(&e.path(), out);
            } else {
                out.push((e.path(), meta.len(), meta.modified().ok()));
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, &mut out);
    out.sort();
    out
}

fn report(name: &str, outcome: &Outcome) {
    match outcome {
        Outcome::Created => println!("{name}: created"),
        Outcome::Updated { code, config } => println!(
            "{name}: updated {}",
            match (code, config) {
                (true, true) => "code and configuration",
                (true, false) => "code",
                _ => "configuration",
            }
        ),
        Outcome::Unchanged => println!("{name}: unchanged"),
    }
}

pub async fn deploy(a: DeployArgs) -> anyhow::Result<u8> {
    if !a.dir.is_dir() {
        bail!("{} is not a directory", a.dir.display());
    }
    let c = Client::new(&a.endpoint)?;
    let (name, cfg) = settings(&a, read_manifest(&a.dir)?)?;
    let outcome = deploy_once(&c, &name, &cfg, &a.dir).await?;
    report(&name, &outcome);
    if !a.watch {
        return Ok(0);
    }
    eprintln!("watching {} for changes (Ctrl-C to stop)", a.dir.display());
    let mut seen = fingerprint(&a.dir);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = fingerprint(&a.dir);
        if now == seen {
            continue;
        }
        // Let an editor finish writing before packaging.
        tokio::time::sleep(Duration::from_millis(200)).await;
        seen = fingerprint(&a.dir);
        let redeploy = match read_manifest(&a.dir).and_then(|m| settings(&a, m)) {
            Ok((name, cfg)) => deploy_once(&c, &name, &cfg, &a.dir)
                .await
                .map(|o| report(&name, &o)),
            Err(e) => Err(e),
        };
        if let Err(e) = redeploy {
            eprintln!("deploy failed (still watching): {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path, extra: &[&str]) -> DeployArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            a: DeployArgs,
        }
        let mut argv = vec!["stratus".to_owned(), dir.display().to_string()];
        argv.extend(extra.iter().map(|s| (*s).to_owned()));
        <Cli as clap::Parser>::parse_from(argv).a
    }

    #[test]
    fn flags_win_over_the_manifest_and_the_dir_names_the_function() {
        let d = tempfile::tempdir().expect("dir");
        let fdir = d.path().join("my-fn");
        std::fs::create_dir(&fdir).expect("mkdir");
        std::fs::write(
            fdir.join(MANIFEST),
            r#"{"runtime": "python3.12", "handler": "app.handler", "memory": 256, "environment": {"A": "1"}}"#,
        )
        .expect("manifest");
        let a = args(&fdir, &["--memory", "512"]);
        let (name, c) = settings(&a, read_manifest(&fdir).expect("read")).expect("settings");
        assert_eq!(name, "my-fn");
        assert_eq!(c.runtime.as_deref(), Some("python3.12"));
        assert_eq!(c.memory, Some(512));
        assert_eq!(c.env, ["A=1"]);
        let a = args(&fdir, &["--name", "other", "--env", "B=2"]);
        let (name, c) = settings(&a, read_manifest(&fdir).expect("read")).expect("settings");
        assert_eq!(
            (name.as_str(), c.env.as_slice()),
            ("other", &["B=2".to_owned()][..])
        );
    }

    #[test]
    fn a_manifest_with_an_unknown_key_or_no_runtime_is_refused() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join(MANIFEST), r#"{"runtme": "python3.12"}"#).expect("write");
        let e = format!("{:#}", read_manifest(d.path()).expect_err("unknown key"));
        assert!(e.contains("runtme"), "{e}");
        std::fs::write(d.path().join(MANIFEST), r#"{"handler": "a.b"}"#).expect("write");
        let a = args(d.path(), &[]);
        let e = settings(&a, read_manifest(d.path()).expect("read")).expect_err("no runtime");
        assert!(e.to_string().contains("runtime and a handler"), "{e}");
    }

    #[test]
    fn packages_skip_the_manifest_and_git_and_are_deterministic() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join("app.py"), "x = 1\n").expect("write");
        std::fs::write(d.path().join(MANIFEST), "{}").expect("write");
        std::fs::create_dir(d.path().join(".git")).expect("mkdir");
        std::fs::write(d.path().join(".git/HEAD"), "ref").expect("write");
        let a = package(d.path(), "python3.12").expect("zip");
        let b = package(d.path(), "python3.12").expect("zip again");
        assert_eq!(
            a, b,
            "the same tree gives the same bytes (so redeploys are no-ops)"
        );
        let names: Vec<String> = zip::ZipArchive::new(std::io::Cursor::new(a))
            .expect("zip")
            .file_names()
            .map(str::to_owned)
            .collect();
        assert_eq!(names, ["app.py"]);
    }

    #[test]
    fn a_changed_file_changes_the_fingerprint() {
        let d = tempfile::tempdir().expect("dir");
        std::fs::write(d.path().join("a"), "1").expect("write");
        let before = fingerprint(d.path());
        std::fs::write(d.path().join("a"), "22").expect("write");
        assert_ne!(before, fingerprint(d.path()));
    }

    #[test]
    fn environment_and_fields_are_compared_as_the_server_reports_them() {
        let cur = json!({"Runtime": "python3.12", "MemorySize": 128, "Environment": {"Variables": {"A": "1"}}});
        let mut want = serde_json::Map::new();
        want.insert("Runtime".into(), json!("python3.12"));
        want.insert("Environment".into(), json!({"Variables": {"A": "1"}}));
        assert!(!differs(&cur, &want));
        want.insert("MemorySize".into(), json!(256));
        assert!(differs(&cur, &want));
        let mut want = serde_json::Map::new();
        want.insert("Environment".into(), json!({"Variables": {}}));
        assert!(differs(&cur, &want));
    }
}
