//! `stratus doctor`: what this host lets Stratus do, checked without
//! changing anything. The sandbox checks come from the process backend
//! (`stratus_sandbox_process::host`); the runtimes, gVisor's `runsc` and
//! the data directory are checked here, with the server's defaults.

use std::path::{Path, PathBuf};

use stratus_sandbox_process::host::{self, Check, Status};

/// `stratus doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Interpreter the server would use for python3.x functions.
    #[arg(long, default_value = "/usr/bin/python3")]
    python: PathBuf,
    /// Interpreter the server would use for nodejs*.x functions.
    #[arg(long, default_value = "/usr/bin/node")]
    node: PathBuf,
    /// gVisor's runsc the server would use for the gvisor isolation tier.
    #[arg(long, default_value = "/usr/bin/runsc")]
    runsc: PathBuf,
    /// Data directory the server would use [default: as `stratus server`].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// `table` for people, `json` for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
}

/// Least free space under the data directory before it is a warning.
const MIN_FREE_BYTES: u64 = 1 << 30;

/// Runs the checks and prints them; exit code 1 if sandboxes cannot run.
pub fn run(a: DoctorArgs) -> anyhow::Result<u8> {
    let mut checks = host::checks();
    checks.push(interpreter("python", &a.python, "python3.x"));
    checks.push(interpreter("node", &a.node, "nodejs*.x"));
    checks.push(gvisor(&a.runsc));
    checks.push(runtime_pool(
        stratus_sandbox_process::plan::select_checked(
            &stratus_sandbox_process::plan::Facts::gather(),
        )
        .rootless(),
    ));
    let data = a.data_dir.unwrap_or_else(crate::config::default_data_dir);
    checks.push(data_dir(&data));
    checks.push(cpu_idle(
        CPUIDLE_GOVERNOR
            .into_iter()
            .find_map(read_trimmed)
            .as_deref(),
        read_trimmed(HALT_POLL_NS).as_deref(),
    ));
    if a.output == "json" {
        println!("{}", serde_json::to_string_pretty(&checks)?);
    } else {
        let width = checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &checks {
            let status = match c.status {
                Status::Ok => "ok",
                Status::Warn => "WARN",
                Status::Fail => "FAIL",
            };
            println!("{:<width$}  {status:<4}  {}", c.name, c.detail);
        }
    }
    Ok(u8::from(checks.iter().any(|c| c.status == Status::Fail)))
}

fn interpreter(name: &'static str, path: &Path, ids: &str) -> Check {
    let runs = std::process::Command::new(path)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    match runs {
        Ok(out) if out.status.success() => {
            let version = String::from_utf8_lossy(if out.stdout.is_empty() {
                &out.stderr
            } else {
                &out.stdout
            })
            .trim()
            .to_owned();
            Check {
                name,
                status: Status::Ok,
                detail: format!(
                    "{} ({version}) serves every {ids} runtime id",
                    path.display()
                ),
            }
        }
        _ => Check {
            name,
            status: Status::Warn,
            detail: format!(
                "{} does not run: {ids} functions are refused at create",
                path.display()
            ),
        },
    }
}

/// Whether the gvisor tier can be offered, and with which platforms (from
/// `runsc --version` and `runsc flags`; no sandbox is started).
fn gvisor(runsc: &Path) -> Check {
    let run = |arg: &str| {
        std::process::Command::new(runsc)
            .arg(arg)
            .stdin(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            // `runsc flags` prints to stderr.
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            })
    };
    let Some(version) = run("--version") else {
        return Check {
            name: "gvisor",
            status: Status::Warn,
            detail: format!(
                "{} does not run: the gvisor isolation tier is unavailable (apt-get install runsc; bookworm-backports has the systrap platform)",
                runsc.display()
            ),
        };
    };
    let version = version.lines().next().unwrap_or("runsc").trim().to_owned();
    let systrap = run("flags").is_some_and(|f| f.contains("systrap"));
    Check {
        name: "gvisor",
        status: Status::Ok,
        detail: format!(
            "{} ({version}): the gvisor isolation tier is available, platforms: {}",
            runsc.display(),
            if systrap {
                "systrap, ptrace"
            } else {
                "ptrace only (--gvisor-platform ptrace)"
            }
        ),
    }
}

/// Whether cold starts can take a pre-initialised sandbox.
fn runtime_pool(rootless: bool) -> Check {
    if rootless {
        Check {
            name: "runtime pool",
            status: Status::Warn,
            detail: "rootless mode: no pre-initialised runtime sandboxes, every cold start builds its sandbox from scratch".into(),
        }
    } else {
        Check {
            name: "runtime pool",
            status: Status::Ok,
            detail: "python, node and custom-runtime cold starts take a pre-initialised sandbox (--runtime-pool, default 2 per runtime family; not with --isolation gvisor)".into(),
        }
    }
}

/// The cpuidle governor in use: the read-only file, else the writable one
/// (kernels have one or both).
const CPUIDLE_GOVERNOR: [&str; 2] = [
    "/sys/devices/system/cpu/cpuidle/current_governor_ro",
    "/sys/devices/system/cpu/cpuidle/current_governor",
];
/// How long an idle vCPU polls before it halts, under the haltpoll governor.
const HALT_POLL_NS: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
}

/// How an idle CPU waits for work. A VM guest whose idle vCPUs halt at
/// once (the haltpoll governor with `guest_halt_poll_ns` 0) pays a trip
/// through the hypervisor for every wake-up of an idle vCPU, and a warm
/// invoke wakes four threads in turn (server, runtime, server, caller).
fn cpu_idle(governor: Option<&str>, halt_poll_ns: Option<&str>) -> Check {
    let name = "cpu idle";
    match (governor, halt_poll_ns) {
        (Some("haltpoll"), Some("0")) => Check {
            name,
            status: Status::Warn,
            detail: format!(
                "this VM halts an idle vCPU at once (cpuidle governor haltpoll, guest_halt_poll_ns 0): each wake-up of one goes through the hypervisor, which made a sequential warm invoke 2-3 times slower on the project's 2-vCPU VM (README, Benchmarks); where the host has CPU to spare, `echo 200000 > {HALT_POLL_NS}` (or boot with haltpoll.guest_halt_poll_ns=200000) lets idle vCPUs poll for up to 200 us first, at the cost of host CPU"
            ),
        },
        (Some("haltpoll"), Some(ns)) => Check {
            name,
            status: Status::Ok,
            detail: format!(
                "idle vCPUs poll for up to {ns} ns before halting (cpuidle governor haltpoll)"
            ),
        },
        (Some(g), _) => Check {
            name,
            status: Status::Ok,
            detail: format!("cpuidle governor {g}"),
        },
        (None, _) => Check {
            name,
            status: Status::Ok,
            detail: "no cpuidle governor reported".into(),
        },
    }
}

fn data_dir(dir: &Path) -> Check {
    // The directory may not exist yet: look at the nearest existing parent.
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match nix::sys::statvfs::statvfs(existing) {
        Ok(st) => {
            let free = st.blocks_available().saturating_mul(st.fragment_size());
            let detail = format!(
                "{}: {:.1} GiB free (code, logs, and each sandbox's /tmp while it runs)",
                dir.display(),
                free as f64 / f64::from(1u32 << 30)
            );
            Check {
                name: "data dir",
                status: if free < MIN_FREE_BYTES {
                    Status::Warn
                } else {
                    Status::Ok
                },
                detail,
            }
        }
        Err(e) => Check {
            name: "data dir",
            status: Status::Warn,
            detail: format!("{}: cannot read free space: {e}", existing.display()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_interpreter_is_a_warning_that_names_the_runtimes() {
        let c = interpreter("python", Path::new("/nonexistent/python3"), "python3.x");
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("python3.x functions are refused"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn a_missing_runsc_is_a_warning() {
        let c = gvisor(Path::new("/nonexistent/runsc"));
        assert_eq!(c.status, Status::Warn);
        assert!(
            c.detail.contains("gvisor isolation tier is unavailable"),
            "{}",
            c.detail
        );
    }

    #[test]
    fn a_vm_that_halts_idle_vcpus_at_once_is_a_warning_with_the_fix() {
        let c = cpu_idle(Some("haltpoll"), Some("0"));
        assert_eq!(c.status, Status::Warn);
        assert!(c.detail.contains("guest_halt_poll_ns"), "{}", c.detail);
        assert!(c.detail.contains(HALT_POLL_NS), "{}", c.detail);
        let c = cpu_idle(Some("haltpoll"), Some("200000"));
        assert_eq!(c.status, Status::Ok);
        assert!(c.detail.contains("200000 ns"), "{}", c.detail);
        for (g, ns) in [(Some("menu"), None), (Some("teo"), Some("0")), (None, None)] {
            assert_eq!(cpu_idle(g, ns).status, Status::Ok, "{g:?} {ns:?}");
        }
    }

    #[test]
    fn free_space_is_read_from_the_nearest_existing_parent() {
        let d = tempfile::tempdir().expect("dir");
        let c = data_dir(&d.path().join("not/yet/created"));
        assert_ne!(c.status, Status::Fail);
        assert!(c.detail.contains("GiB free"), "{}", c.detail);
    }
}
