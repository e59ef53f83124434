//! The OCI bundle `runsc` runs: a skeleton root directory and `config.json`.
//!
//! The root is read-only and holds only mount points, the usrmerge links and
//! a minimal `/etc`; everything else comes in as read-only binds (`/usr`, the
//! code at `/var/task`, the runtime at `/var/runtime`, layers at `/opt`) and
//! the writable `/tmp`, as the process backend builds its root. No network
//! namespace is listed: with `--network=host` the sandbox uses the network
//! namespace `runsc` was started in, the one holding the Runtime API listener.

use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::Path;

use serde_json::{Value, json};
use stratus_sandbox::SandboxSpec;
use stratus_sandbox_process::{SANDBOX_GID, SANDBOX_UID};

/// Host files of `/etc` bound read-only into the sandbox when present.
const ETC_BINDS: &[&str] = &[
    "ssl",
    "alternatives",
    "ca-certificates",
    "ld.so.cache",
    "localtime",
    "mime.types",
];

/// The host name as it may appear in `/etc/hosts`.
fn clean_hostname(name: &str) -> String {
    name.chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '.')
        .collect()
}

fn mkdir(path: &Path) -> io::Result<()> {
    fs::create_dir_all(path)
}

fn ro_bind(source: &Path, destination: &str) -> Value {
    json!({
        "destination": destination,
        "type": "bind",
        "source": source,
        "options": ["rbind", "ro", "nosuid", "nodev"],
    })
}

/// Writes `<bundle>/rootfs` and `<bundle>/config.json` for `spec`; `tmp` is
/// the host directory mounted at `/tmp`.
pub fn write(bundle: &Path, spec: &SandboxSpec, tmp: &Path) -> io::Result<()> {
    let root = bundle.join("rootfs");
    for dir in ["usr", "var/task", "tmp", "proc", "dev", "etc"] {
        mkdir(&root.join(dir))?;
    }
    let mut mounts = vec![
        ro_bind(Path::new("/usr"), "/usr"),
        ro_bind(&spec.code_dir, "/var/task"),
    ];
    // Mirror the host's top-level links (usrmerge) or bind its real dirs.
    for name in ["bin", "sbin", "lib", "lib64", "lib32", "libx32"] {
        let host = Path::new("/").join(name);
        match fs::read_link(&host) {
            Ok(target) => symlink(&target, root.join(name))?,
            Err(_) if host.is_dir() => {
                mkdir(&root.join(name))?;
                mounts.push(ro_bind(&host, &format!("/{name}")));
            }
            Err(_) => {}
        }
    }
    if let Some(dir) = &spec.runtime_dir {
        mkdir(&root.join("var/runtime"))?;
        mounts.push(ro_bind(dir, "/var/runtime"));
    }
    if let Some(dir) = &spec.opt_dir {
        mkdir(&root.join("opt"))?;
        mounts.push(ro_bind(dir, "/opt"));
    }
    mounts.push(json!({
        "destination": "/tmp",
        "type": "bind",
        "source": tmp,
        "options": ["rbind", "rw", "nosuid", "nodev"],
    }));
    mounts.push(json!({"destination": "/proc", "type": "proc", "source": "proc"}));
    mounts.push(json!({
        "destination": "/dev",
        "type": "tmpfs",
        "source": "tmpfs",
        "options": ["nosuid", "mode=755"],
    }));

    let hostname = clean_hostname(&spec.hostname);
    let etc = root.join("etc");
    let files = [
        (
            "passwd",
            format!(
                "root:x:0:0:root:/root:/sbin/nologin\n\
                 sbx_user1051:x:{SANDBOX_UID}:{SANDBOX_GID}::/tmp:/sbin/nologin\n\
                 nobody:x:65534:65534:nobody:/:/sbin/nologin\n"
            ),
        ),
        (
            "group",
            format!("root:x:0:\nsbx_user1051:x:{SANDBOX_GID}:\nnobody:x:65534:\n"),
        ),
        (
            "hosts",
            format!("127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost\n"),
        ),
        ("hostname", format!("{hostname}\n")),
        (
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n".to_owned(),
        ),
        (
            "nsswitch.conf",
            "passwd: files\ngroup: files\nhosts: files dns\n".to_owned(),
        ),
    ];
    for (name, content) in files {
        fs::write(etc.join(name), content)?;
    }
    for name in ETC_BINDS {
        let host = Path::new("/etc").join(name);
        let Ok(meta) = fs::metadata(&host) else {
            continue;
        };
        let target = etc.join(name);
        if meta.is_dir() {
            mkdir(&target)?;
        } else {
            fs::write(&target, b"")?;
        }
        mounts.push(ro_bind(&host, &format!("/etc/{name}")));
    }

    let env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let limits = spec.limits;
    let config = json!({
        "ociVersion": "1.0.2",
        "process": {
            "user": {"uid": SANDBOX_UID, "gid": SANDBOX_GID},
            "args": spec.argv,
            "env": env,
            "cwd": spec.cwd,
            "capabilities": {
                "bounding": [], "effective": [], "inheritable": [], "permitted": [], "ambient": [],
            },
            "rlimits": [
                {"type": "RLIMIT_NOFILE", "hard": limits.max_fds, "soft": limits.max_fds},
                // gVisor counts the sandbox's own tasks against this; the
                // host pids cgroup (which also holds the Sentry's threads)
                // is only a backstop.
                {"type": "RLIMIT_NPROC", "hard": limits.max_pids, "soft": limits.max_pids},
            ],
            "noNewPrivileges": true,
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": hostname,
        "mounts": mounts,
        "linux": {
            "namespaces": [
                {"type": "pid"}, {"type": "ipc"}, {"type": "uts"}, {"type": "mount"},
            ],
        },
    });
    let text = serde_json::to_vec_pretty(&config).map_err(io::Error::other)?;
    fs::write(bundle.join("config.json"), text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use stratus_sandbox::SandboxLimits;

    #[test]
    fn config_lists_the_spec_and_no_network_namespace() {
        let dir = tempfile::tempdir().expect("dir");
        let spec = SandboxSpec {
            id: "x".into(),
            code_dir: PathBuf::from("/code"),
            runtime_dir: Some(PathBuf::from("/rt")),
            opt_dir: None,
            argv: vec!["/usr/bin/python3".into(), "b.py".into()],
            env: BTreeMap::from([("A".to_owned(), "1=2".to_owned())]),
            cwd: PathBuf::from("/var/task"),
            limits: SandboxLimits {
                memory_mb: 128,
                tmp_mb: 512,
                max_pids: 64,
                max_fds: 1024,
            },
            runtime_api_port: 9001,
            hostname: "h<o>st".into(),
            preinit: None,
        };
        write(dir.path(), &spec, Path::new("/scratch/tmp")).expect("bundle");
        let text = fs::read_to_string(dir.path().join("config.json")).expect("config");
        let c: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(c["process"]["env"], json!(["A=1=2"]));
        assert_eq!(c["process"]["args"], json!(["/usr/bin/python3", "b.py"]));
        assert_eq!(c["hostname"], "host");
        assert_eq!(c["root"]["readonly"], true);
        let namespaces = c["linux"]["namespaces"].to_string();
        assert!(!namespaces.contains("network"), "{namespaces}");
        let mounts = c["mounts"].as_array().expect("mounts");
        let find = |dst: &str| {
            mounts
                .iter()
                .find(|m| m["destination"] == dst)
                .unwrap_or_else(|| panic!("a mount at {dst}"))
        };
        assert_eq!(find("/var/task")["source"], "/code");
        assert_eq!(find("/var/runtime")["source"], "/rt");
        assert_eq!(find("/tmp")["source"], "/scratch/tmp");
        assert!(find("/usr")["options"].to_string().contains("\"ro\""));
        assert!(dir.path().join("rootfs/var/runtime").is_dir());
    }
}
