//! Managed runtimes: how each runtime family starts inside a sandbox.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use stratus_api::service::{FunctionVersionSpec, InitializationType};
use stratus_sandbox::{PreInit, SandboxLimits};
use stratus_types::RuntimeFamily;
use stratus_types::limits::{RUNTIME_API_PORT, SANDBOX_MAX_FDS, SANDBOX_MAX_PIDS};
use stratus_types::runtime::RESERVED_ENV;

const PYTHON_BOOTSTRAP: &str = include_str!("../runtimes/python/bootstrap.py");
const NODE_BOOTSTRAP: &str = include_str!("../runtimes/node/bootstrap.js");

/// Host interpreters serving the managed runtime ids: every `python3.x` id
/// runs on `python`, every `nodejs*.x` id on `node`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpreters {
    pub python: PathBuf,
    pub node: PathBuf,
}

impl Default for Interpreters {
    fn default() -> Self {
        Interpreters {
            python: PathBuf::from("/usr/bin/python3"),
            node: PathBuf::from("/usr/bin/node"),
        }
    }
}

impl Interpreters {
    /// The interpreter for a family, or `None` for `provided`.
    pub fn for_family(&self, family: RuntimeFamily) -> Option<&Path> {
        match family {
            RuntimeFamily::Python => Some(&self.python),
            RuntimeFamily::Node => Some(&self.node),
            RuntimeFamily::Provided => None,
        }
    }
}

/// Writes the bootstraps into `dir` (mounted at `/var/runtime`).
pub fn install(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for (sub, file, text) in [
        ("python", "bootstrap.py", PYTHON_BOOTSTRAP),
        ("node", "bootstrap.js", NODE_BOOTSTRAP),
    ] {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d)?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755))?;
        let p = d.join(file);
        std::fs::write(&p, text)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
}

/// The command line of the runtime process inside the sandbox.
pub fn argv(spec: &FunctionVersionSpec, interpreters: &Interpreters) -> Vec<String> {
    family_argv(spec.runtime.family(), interpreters)
}

fn family_argv(family: RuntimeFamily, interpreters: &Interpreters) -> Vec<String> {
    match family {
        RuntimeFamily::Python => vec![
            interpreters.python.display().to_string(),
            "/var/runtime/python/bootstrap.py".into(),
        ],
        RuntimeFamily::Node => vec![
            interpreters.node.display().to_string(),
            "/var/runtime/node/bootstrap.js".into(),
        ],
        RuntimeFamily::Provided => vec!["/var/task/bootstrap".into()],
    }
}

/// Defaults a user may override (as on Lambda).
const DEFAULT_ENV: [(&str, &str); 4] = [
    ("PATH", "/usr/local/bin:/usr/bin:/bin:/opt/bin"),
    (
        "LD_LIBRARY_PATH",
        "/lib64:/usr/lib64:/var/runtime:/var/runtime/lib:/var/task:/var/task/lib:/opt/lib",
    ),
    ("LANG", "en_US.UTF-8"),
    ("TZ", ":UTC"),
];

const NODE_PATH_DEFAULT: &str =
    "/opt/nodejs/node_modules:/var/runtime/node_modules:/var/runtime:/var/task";

/// Memory of a pre-initialised sandbox before it is handed to a function:
/// Lambda's smallest MemorySize, so handing it over only raises the limit.
const PREINIT_MEMORY_MB: u64 = 128;

/// EphemeralStorage the pooled sandboxes have (Lambda's default).
pub const PREINIT_TMP_MB: u64 = 512;

/// The pool name of a family's pre-initialised runtimes.
fn pool_name(family: RuntimeFamily) -> Option<&'static str> {
    match family {
        RuntimeFamily::Python => Some("python"),
        RuntimeFamily::Node => Some("node"),
        RuntimeFamily::Provided => Some("provided"),
    }
}

/// The pre-initialised runtime of `family`: the same program as
/// [`argv`] starts, with only the variables every function of the family
/// shares (no function data), the limits every function has by default.
/// A custom runtime's program is the function's own `bootstrap`: its
/// profile has no program (nor environment), the sandbox waits right
/// before `execve` and execs the function's program with the function's
/// environment once specialised.
pub fn preinit_profile(
    family: RuntimeFamily,
    interpreters: &Interpreters,
    runtime_dir: &Path,
) -> Option<PreInit> {
    let pool = pool_name(family)?;
    let limits = SandboxLimits {
        memory_mb: PREINIT_MEMORY_MB,
        tmp_mb: PREINIT_TMP_MB,
        max_pids: SANDBOX_MAX_PIDS,
        max_fds: SANDBOX_MAX_FDS,
    };
    if family == RuntimeFamily::Provided {
        return Some(PreInit {
            pool: pool.to_owned(),
            argv: Vec::new(),
            env: BTreeMap::new(),
            runtime_dir: runtime_dir.to_owned(),
            runtime_api_port: RUNTIME_API_PORT,
            limits,
        });
    }
    let mut env: BTreeMap<String, String> = DEFAULT_ENV
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    if family == RuntimeFamily::Node {
        env.insert("NODE_PATH".into(), NODE_PATH_DEFAULT.into());
    }
    for (k, v) in [
        (
            "AWS_LAMBDA_RUNTIME_API",
            format!("127.0.0.1:{RUNTIME_API_PORT}"),
        ),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
    ] {
        env.insert(k.to_owned(), v);
    }
    Some(PreInit {
        pool: pool.to_owned(),
        argv: family_argv(family, interpreters),
        env,
        runtime_dir: runtime_dir.to_owned(),
        runtime_api_port: RUNTIME_API_PORT,
        limits,
    })
}

/// Whether the interpreter reads `key` only when it starts (so a
/// pre-initialised runtime, started before the function was known, could
/// not honour the function's value): Python's `PYTHON*`, Node's `NODE_*`
/// (but `NODE_PATH`, which the bootstrap applies), `NODE_OPTIONS`, the
/// dynamic loader's `LD_*`, glibc's `MALLOC_*`/`GLIBC_TUNABLES`, locale
/// variables, libuv's and OpenSSL's settings.
pub fn read_at_start(key: &str) -> bool {
    const PREFIXES: [&str; 9] = [
        "PYTHON", "NODE_", "LD_", "LC_", "MALLOC_", "GLIBC_", "UV_", "OPENSSL_", "SSL_",
    ];
    (PREFIXES.iter().any(|p| key.starts_with(p)) && key != "NODE_PATH")
        || matches!(key, "LANG" | "LANGUAGE")
}

/// The pre-initialised runtime a sandbox of `spec` may be made from, if
/// any: the default `/tmp` size and, for a managed runtime, no user
/// variable the interpreter reads only at start ([`read_at_start`]). A
/// custom runtime takes any environment: its program is exec'd with it
/// after specialisation, as at a normal start.
pub fn preinit(
    spec: &FunctionVersionSpec,
    interpreters: &Interpreters,
    runtime_dir: &Path,
) -> Option<PreInit> {
    let family = spec.runtime.family();
    if u64::from(spec.ephemeral_mb) != PREINIT_TMP_MB
        || (family != RuntimeFamily::Provided
            && spec
                .env
                .keys()
                .any(|k| read_at_start(k) && !RESERVED_ENV.contains(&k.as_str())))
    {
        return None;
    }
    preinit_profile(family, interpreters, runtime_dir)
}

/// The runtime process's whole environment: the user's variables, then the
/// reserved ones on top (so a user value can never replace them).
pub fn environment(
    spec: &FunctionVersionSpec,
    runtime_api: &str,
    log_stream: &str,
    init: InitializationType,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = spec
        .env
        .iter()
        .filter(|(k, _)| !RESERVED_ENV.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (k, v) in DEFAULT_ENV {
        env.entry(k.to_owned()).or_insert_with(|| v.to_owned());
    }
    if spec.runtime.family() == RuntimeFamily::Node {
        env.entry("NODE_PATH".into())
            .or_insert_with(|| NODE_PATH_DEFAULT.into());
    }
    let reserved = [
        ("_HANDLER", spec.handler.clone()),
        ("AWS_LAMBDA_RUNTIME_API", runtime_api.to_owned()),
        ("LAMBDA_TASK_ROOT", "/var/task".into()),
        ("LAMBDA_RUNTIME_DIR", "/var/runtime".into()),
        ("AWS_REGION", spec.region.clone()),
        ("AWS_DEFAULT_REGION", spec.region.clone()),
        ("AWS_LAMBDA_FUNCTION_NAME", spec.name.clone()),
        (
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            spec.memory_mb.to_string(),
        ),
        ("AWS_LAMBDA_FUNCTION_VERSION", spec.version.clone()),
        ("AWS_LAMBDA_INITIALIZATION_TYPE", init.as_str().into()),
        (
            "AWS_LAMBDA_LOG_GROUP_NAME",
            format!("/aws/lambda/{}", spec.name),
        ),
        ("AWS_LAMBDA_LOG_STREAM_NAME", log_stream.to_owned()),
    ];
    for (k, v) in reserved {
        env.insert(k.to_owned(), v);
    }
    if let Some(exec_env) = spec.runtime.execution_env() {
        env.insert("AWS_EXECUTION_ENV".into(), exec_env);
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;
    use stratus_types::{AccountId, Runtime};

    fn spec(runtime: &str, env: &[(&str, &str)]) -> FunctionVersionSpec {
        FunctionVersionSpec {
            account: AccountId::default_local(),
            region: "eu-west-1".into(),
            name: "f".into(),
            version: "$LATEST".into(),
            revision_id: "r".into(),
            runtime: Runtime::parse(runtime).expect("valid runtime"),
            handler: "app.handler".into(),
            memory_mb: 256,
            timeout_s: 3,
            ephemeral_mb: 512,
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            code_digest: "0".repeat(64),
            layers: Vec::new(),
        }
    }

    #[test]
    fn reserved_variables_win_over_user_values() {
        let s = spec(
            "python3.12",
            &[
                ("AWS_REGION", "xx-evil-1"),
                ("_HANDLER", "evil.x"),
                ("GREETING", "hi"),
                ("TZ", "Europe/Paris"),
            ],
        );
        let env = environment(
            &s,
            "127.0.0.1:9001",
            "2026/01/01/[$LATEST]abc",
            InitializationType::OnDemand,
        );
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["_HANDLER"], "app.handler");
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["TZ"], "Europe/Paris");
        assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/f");
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert_eq!(env["AWS_LAMBDA_INITIALIZATION_TYPE"], "on-demand");
    }

    #[test]
    fn provided_has_no_execution_env_and_runs_bootstrap() {
        let s = spec("provided.al2023", &[]);
        let env = environment(
            &s,
            "127.0.0.1:9001",
            "x",
            InitializationType::ProvisionedConcurrency,
        );
        assert!(!env.contains_key("AWS_EXECUTION_ENV"));
        assert_eq!(
            env["AWS_LAMBDA_INITIALIZATION_TYPE"],
            "provisioned-concurrency"
        );
        assert_eq!(
            argv(&s, &Interpreters::default()),
            vec!["/var/task/bootstrap".to_string()]
        );
    }

    #[test]
    fn managed_runtimes_may_start_pre_initialised_unless_told_otherwise() {
        let i = Interpreters::default();
        let dir = Path::new("/srv/runtime");
        let py = preinit(&spec("python3.12", &[("GREETING", "hi")]), &i, dir).expect("pool");
        assert_eq!(py.pool, "python");
        assert_eq!(py.argv, argv(&spec("python3.12", &[]), &i));
        // Every python id shares one pool; the profile holds no function data.
        assert_eq!(
            preinit(&spec("python3.9", &[]), &i, dir).as_ref(),
            Some(&py)
        );
        assert!(!py.env.contains_key("_HANDLER"));
        assert!(!py.env.contains_key("AWS_LAMBDA_FUNCTION_NAME"));
        assert_eq!(py.env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        // What the function's own start would get, the profile has too.
        let full = environment(
            &spec("python3.12", &[]),
            "127.0.0.1:9001",
            "s",
            InitializationType::OnDemand,
        );
        for (k, v) in &py.env {
            assert_eq!(full.get(k), Some(v), "{k}");
        }
        let node = preinit(&spec("nodejs20.x", &[("NODE_PATH", "/x")]), &i, dir).expect("pool");
        assert_eq!(node.pool, "node");
        assert_eq!(node.env["NODE_PATH"], NODE_PATH_DEFAULT);
        assert_eq!(node.limits.tmp_mb, 512);
        // Another /tmp size, start-time variables: from scratch.
        let mut big_tmp = spec("python3.12", &[]);
        big_tmp.ephemeral_mb = 1024;
        assert!(preinit(&big_tmp, &i, dir).is_none());
        for key in [
            "PYTHONPATH",
            "PYTHONDONTWRITEBYTECODE",
            "NODE_OPTIONS",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
            "LANG",
            "LC_ALL",
            "MALLOC_ARENA_MAX",
            "GLIBC_TUNABLES",
            "UV_THREADPOOL_SIZE",
            "OPENSSL_CONF",
        ] {
            assert!(read_at_start(key), "{key}");
            assert!(
                preinit(&spec("nodejs20.x", &[(key, "x")]), &i, dir).is_none(),
                "{key}"
            );
        }
        for key in ["NODE_PATH", "TZ", "PATH", "HOME", "GREETING"] {
            assert!(!read_at_start(key), "{key}");
        }
    }

    #[test]
    fn custom_runtimes_wait_before_exec_and_take_any_environment() {
        let i = Interpreters::default();
        let dir = Path::new("/srv/runtime");
        let p = preinit(&spec("provided.al2023", &[]), &i, dir).expect("pool");
        assert_eq!(p.pool, "provided");
        // No program and no environment before the function's exec.
        assert!(p.argv.is_empty());
        assert!(p.env.is_empty());
        assert_eq!(p.limits.tmp_mb, PREINIT_TMP_MB);
        assert_eq!(p.runtime_dir, dir);
        // Every custom runtime id shares the pool.
        for id in ["provided", "provided.al2"] {
            assert_eq!(preinit(&spec(id, &[]), &i, dir).as_ref(), Some(&p), "{id}");
        }
        // Its program reads its environment at exec, after specialisation:
        // variables a managed runtime reads at start are fine.
        for key in ["LD_PRELOAD", "LD_LIBRARY_PATH", "LANG", "MALLOC_ARENA_MAX"] {
            assert_eq!(
                preinit(&spec("provided.al2023", &[(key, "x")]), &i, dir).as_ref(),
                Some(&p),
                "{key}"
            );
        }
        let mut big_tmp = spec("provided.al2023", &[]);
        big_tmp.ephemeral_mb = 1024;
        assert!(preinit(&big_tmp, &i, dir).is_none());
    }

    #[test]
    fn python_ids_share_the_host_interpreter() {
        let i = Interpreters::default();
        assert_eq!(argv(&spec("python3.9", &[]), &i)[0], "/usr/bin/python3");
        assert_eq!(argv(&spec("python3.14", &[]), &i)[0], "/usr/bin/python3");
        assert_eq!(argv(&spec("nodejs22.x", &[]), &i)[0], "/usr/bin/node");
    }
}
