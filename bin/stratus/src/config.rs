//! The server's configuration: one typed struct, three layers.
//!
//! Every option of `stratus server` can be set in a TOML file
//! (`--config FILE`, keys named like the flags without the dashes in front:
//! `keep-alive-secs = 60`) and on the command line. The layers, lowest first:
//! the built-in defaults, the file, then the flags (and the environment
//! variables some flags read, e.g. `STRATUS_LISTEN`). A flag the user did not
//! give never overrides the file: every flag is an `Option`, `None` unless it
//! was given.
//!
//! A key this version does not know is a warning naming the key and the file
//! (an older server can read a newer file); a known key with a bad value (the
//! wrong type, out of range) is an error naming both.
//!
//! ```toml
//! listen = "0.0.0.0:9000"
//! keep-alive-secs = 60
//! account-concurrency = 100
//! log-max-bytes-total = "4GiB"
//! ```

use std::fmt;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use stratus_counting::CountingConfig;
use stratus_sandbox_process::Ipv4Cidr;
use stratus_types::{AccountId, Isolation};

/// Options of `stratus server`, as given in one layer (file or flags): a
/// field is `None` where that layer says nothing. The same struct is the
/// clap flag set and the file format, so the two cannot drift apart.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct Options {
    /// Address of the Lambda API [default: 127.0.0.1:9000].
    #[arg(long, env = "STRATUS_LISTEN")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// Where functions, code and sandbox scratch space live
    /// [default: $XDG_DATA_HOME/stratus or ~/.local/share/stratus].
    #[arg(long, env = "STRATUS_DATA_DIR")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
    /// Seconds an idle sandbox is kept warm before it is shut down [default: 300].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_secs: Option<u64>,
    /// `fixed`: every idle sandbox is kept --keep-alive-secs. `adaptive`:
    /// each function version's keep-alive is learnt from its idle times (a
    /// histogram, see docs/design/keepalive.md), --keep-alive-secs until
    /// they are representative [default: fixed].
    #[arg(long, value_parser = ["fixed", "adaptive"])]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_policy: Option<String>,
    /// For tests and experiments: the width (milliseconds, at least 1) of
    /// the adaptive keep-alive's idle-time histogram bins; the policy's
    /// pre-warm and tail are multiples of it. The policy is the paper's with
    /// one-minute bins [default: 60000].
    #[arg(long, hide = true, value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_alive_bin_ms: Option<u64>,
    /// Seconds a sandbox lives at most (its lease, less a jitter of up to
    /// 10%); then it takes no new invoke and is replaced on demand. An invoke
    /// running when the lease ends finishes normally. At least 1. Lambda: 6
    /// hours [default: 21600].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_lease_secs: Option<u64>,
    /// On SIGTERM/SIGINT, seconds requests in flight (invokes) may take to
    /// finish before their sandboxes are stopped anyway [default: 60].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shutdown_grace_secs: Option<u64>,
    /// Memory (MB) the worker offers to sandboxes [default: half of the host's RAM].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_memory_mb: Option<u64>,
    /// Concurrent executions allowed per account, at least 1 [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_concurrency: Option<u32>,
    /// New sandboxes (cold starts) one function may start at once: the size
    /// of its scaling token bucket, at least 1. Lambda: 1,000 per 10 s
    /// [default: 1000].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_burst: Option<u32>,
    /// Scaling tokens added back to each function's bucket per second,
    /// continuously (fractions allowed, e.g. 0.5). Lambda: 100 [default: 100].
    #[arg(long, value_parser = parse_refill_rate)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scale_refill_per_sec: Option<f64>,
    /// Interpreter for every python3.x runtime id [default: /usr/bin/python3].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub python: Option<PathBuf>,
    /// Interpreter for every nodejs*.x runtime id [default: /usr/bin/node].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<PathBuf>,
    /// Cgroup under which sandbox cgroups are created, one per server
    /// [default: stratus].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_parent: Option<String>,
    /// First host uid given to sandboxes; each live sandbox gets its own
    /// [default: 1500000].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid_base: Option<u32>,
    /// Pre-initialised sandboxes kept ready per runtime family (python,
    /// node, provided): started all the way (namespaces, cgroup, uid,
    /// seccomp, the interpreter with the bootstrap's imports done; a custom
    /// runtime's up to the exec of its bootstrap) without a function,
    /// each handed to one function at its cold start and refilled in the
    /// background; 0 disables. Each holds 128 MB of --worker-memory-mb;
    /// fewer are kept if they would hold more than a quarter of it. Not in
    /// rootless mode [default: 2].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_pool: Option<usize>,
    /// Threads of the server's async runtime, which serves the Lambda API and
    /// every sandbox's Runtime API. The rest of the host's CPUs are left to
    /// the sandboxes; on a 2-CPU host one thread made a warm invoke cheaper
    /// than two (README, "Benchmarks"). At least 1 [default: half the host's
    /// CPUs, at least 1].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_threads: Option<u32>,
    /// How CPU in proportion to MemorySize (1,769 MB = one vCPU) is enforced
    /// [default: weight].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_limit: Option<CpuMode>,
    /// Disk space for one function's logs (its oldest lines are deleted
    /// first). A number of bytes, or with K, M, G (KiB, MiB, GiB), at least
    /// 64KiB [default: 16MiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_bytes_per_function: Option<ByteSize>,
    /// Disk space for all functions' logs (the function written least
    /// recently loses its oldest lines first). Same units [default: 1GiB].
    #[arg(long, value_parser = parse_size)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_bytes_total: Option<ByteSize>,
    /// Function log lines older than this are deleted, oldest first: a
    /// number with s, m, h or d, or `never` [default: 30d].
    #[arg(long, value_parser = parse_age)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log_max_age: Option<Age>,
    /// A sandbox's network: `none` (only loopback: no route anywhere) or
    /// `outbound` (a veth on a NAT'd bridge: the outside world, but not the
    /// host's ports nor other sandboxes) [default: none].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkMode>,
    /// With `--network outbound`: the bridge's IPv4 network. The gateway
    /// (the bridge) is its first address, sandboxes get the others, so it
    /// caps the number of live sandboxes. Two servers on one host need
    /// networks apart [default: 172.31.250.0/24].
    #[arg(long, value_parser = parse_cidr, value_name = "A.B.C.D/N")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_bridge_cidr: Option<Ipv4Cidr>,
    /// With `--network outbound`: a host TCP address:port sandboxes may
    /// reach, at the gateway address and the same port (repeat the flag for
    /// more; e.g. a database on 127.0.0.1:5432) [default: none].
    #[arg(long, value_name = "ADDR:PORT")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_allow_host: Option<Vec<SocketAddrV4>>,
    /// Access key id of the server's admin key: it acts for account
    /// 000000000000 and alone may manage accounts and keys. Set with
    /// `secret-access-key`; without both, a server on a loopback address uses
    /// the documented local pair and any other address is refused
    /// [default: STRATUSLOCALADMINKEY on loopback].
    #[arg(long, env = "STRATUS_ACCESS_KEY_ID", value_parser = parse_access_key_id)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// Secret of the admin key. Only from the environment or the command
    /// line (better the environment: other users can read a process's
    /// arguments); never read from nor printed into a configuration file.
    #[arg(long, env = "STRATUS_SECRET_ACCESS_KEY", hide_env_values = true)]
    #[serde(skip)]
    pub secret_access_key: Option<Secret>,
    /// Isolation tier of every sandbox unless its account or function asks
    /// for a stronger one: `process` (namespaces, cgroups, seccomp) or
    /// `gvisor` (runsc, a kernel boundary) [default: process].
    #[arg(long, value_parser = parse_isolation)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation: Option<Isolation>,
    /// An account's own tier, `ACCOUNT=TIER` (e.g. 123456789012=gvisor);
    /// repeat the flag for more accounts [default: none].
    #[arg(long, value_parser = parse_account_tier)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation_account: Option<Vec<AccountTier>>,
    /// The tier every sandbox gets while sandboxes of more than one account
    /// run on this host; weaker sandboxes of the first account are stopped
    /// when a second account arrives [default: process].
    #[arg(long, value_parser = parse_isolation)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub isolation_shared_host: Option<Isolation>,
    /// Seconds before the first retry of an asynchronous invocation whose
    /// function failed; the second retry waits twice as long. Lambda: about
    /// one then two minutes. At least 1 [default: 60].
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub async_retry_delay_secs: Option<u64>,
    /// The gVisor `runsc` binary [default: /usr/bin/runsc].
    #[arg(long)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runsc: Option<PathBuf>,
    /// gVisor platform: `systrap` (runsc 2023 and later) or `ptrace`
    /// [default: systrap].
    #[arg(long, value_enum)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gvisor_platform: Option<GvisorPlatform>,
}

/// `network`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// Only loopback: a sandbox reaches nothing (Lambda's VPC-less
    /// functions reach the Internet: see `outbound`).
    None,
    /// A veth on a NAT'd bridge per sandbox.
    Outbound,
}

/// A secret that never shows in `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl std::str::FromStr for Secret {
    type Err = String;
    fn from_str(s: &str) -> Result<Secret, String> {
        if s.is_empty() {
            Err("the secret access key is empty".into())
        } else {
            Ok(Secret(s.to_owned()))
        }
    }
}

/// An access key id: 1 to 128 letters, digits, `_` or `-` (it is written
/// into the SigV4 credential scope, so no `/`, `,` or spaces).
pub fn parse_access_key_id(s: &str) -> Result<String, String> {
    if (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not an access key id (1 to 128 letters, digits, '_' or '-')"
        ))
    }
}

/// `gvisor-platform`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GvisorPlatform {
    /// seccomp traps and shared-memory stubs (faster; runsc 2023 and later).
    Systrap,
    /// ptrace(2) (every runsc build).
    Ptrace,
}

/// One account's isolation tier, written `ACCOUNT=TIER`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountTier {
    pub account: AccountId,
    pub tier: Isolation,
}

fn parse_isolation(s: &str) -> Result<Isolation, String> {
    Isolation::parse(s.trim())
}

/// Parses `123456789012=gvisor`.
pub fn parse_account_tier(s: &str) -> Result<AccountTier, String> {
    let (account, tier) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ACCOUNT=TIER (e.g. 123456789012=gvisor)"))?;
    Ok(AccountTier {
        account: AccountId::parse(account.trim()).map_err(|e| e.to_string())?,
        tier: parse_isolation(tier)?,
    })
}

impl fmt::Display for AccountTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.account, self.tier)
    }
}

impl Serialize for AccountTier {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountTier {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_account_tier(&text).map_err(serde::de::Error::custom)
    }
}

/// `cpu-limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CpuMode {
    /// A scheduling weight only: shares under contention, and a small
    /// function still runs at full speed on an idle machine.
    Weight,
    /// The weight plus a hard CFS quota in the same proportion (a 128 MB
    /// function gets at most 128/1,769 of one CPU, even when the machine is idle).
    Quota,
}

/// An age limit; written `90s`, `15m`, `12h`, `30d` or `never` (`None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Age(pub Option<std::time::Duration>);

/// A number of bytes; written `16MiB`, `64K`, `1G` or a plain integer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

/// The effective configuration: every option resolved.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub keep_alive_secs: u64,
    pub keep_alive_policy: String,
    pub keep_alive_bin_ms: u64,
    pub sandbox_lease_secs: u64,
    pub shutdown_grace_secs: u64,
    pub worker_memory_mb: u64,
    pub account_concurrency: u32,
    pub scale_burst: u32,
    pub scale_refill_per_sec: f64,
    pub python: PathBuf,
    pub node: PathBuf,
    pub cgroup_parent: String,
    pub uid_base: u32,
    pub runtime_pool: usize,
    pub worker_threads: u32,
    pub cpu_limit: CpuMode,
    pub log_max_bytes_per_function: ByteSize,
    pub log_max_bytes_total: ByteSize,
    pub log_max_age: Age,
    pub network: NetworkMode,
    pub network_bridge_cidr: Ipv4Cidr,
    pub network_allow_host: Vec<SocketAddrV4>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    #[serde(skip)]
    pub secret_access_key: Option<Secret>,
    pub isolation: Isolation,
    pub isolation_account: Vec<AccountTier>,
    pub isolation_shared_host: Isolation,
    pub async_retry_delay_secs: u64,
    pub runsc: PathBuf,
    pub gvisor_platform: GvisorPlatform,
}

/// The admin key a server runs with, and whether it is the documented
/// local pair.
#[derive(Debug, Clone, PartialEq)]
pub struct AdminCredentials {
    pub access_key_id: String,
    pub secret: Secret,
    pub documented_default: bool,
}

/// A parsed configuration file and what was wrong but harmless in it.
#[derive(Debug)]
pub struct FileOptions {
    pub options: Options,
    /// Keys this version does not know (ignored).
    pub unknown_keys: Vec<String>,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(std::net::SocketAddrV4::new(
    std::net::Ipv4Addr::LOCALHOST,
    9000,
));

impl Options {
    /// This layer over `lower`: a field set here wins.
    pub fn over(self, lower: Options) -> Options {
        Options {
            listen: self.listen.or(lower.listen),
            data_dir: self.data_dir.or(lower.data_dir),
            keep_alive_secs: self.keep_alive_secs.or(lower.keep_alive_secs),
            keep_alive_policy: self.keep_alive_policy.or(lower.keep_alive_policy),
            keep_alive_bin_ms: self.keep_alive_bin_ms.or(lower.keep_alive_bin_ms),
            sandbox_lease_secs: self.sandbox_lease_secs.or(lower.sandbox_lease_secs),
            shutdown_grace_secs: self.shutdown_grace_secs.or(lower.shutdown_grace_secs),
            worker_memory_mb: self.worker_memory_mb.or(lower.worker_memory_mb),
            account_concurrency: self.account_concurrency.or(lower.account_concurrency),
            scale_burst: self.scale_burst.or(lower.scale_burst),
            scale_refill_per_sec: self.scale_refill_per_sec.or(lower.scale_refill_per_sec),
            python: self.python.or(lower.python),
            node: self.node.or(lower.node),
            cgroup_parent: self.cgroup_parent.or(lower.cgroup_parent),
            uid_base: self.uid_base.or(lower.uid_base),
            runtime_pool: self.runtime_pool.or(lower.runtime_pool),
            worker_threads: self.worker_threads.or(lower.worker_threads),
            cpu_limit: self.cpu_limit.or(lower.cpu_limit),
            log_max_bytes_per_function: self
                .log_max_bytes_per_function
                .or(lower.log_max_bytes_per_function),
            log_max_bytes_total: self.log_max_bytes_total.or(lower.log_max_bytes_total),
            log_max_age: self.log_max_age.or(lower.log_max_age),
            network: self.network.or(lower.network),
            network_bridge_cidr: self.network_bridge_cidr.or(lower.network_bridge_cidr),
            network_allow_host: self.network_allow_host.or(lower.network_allow_host),
            access_key_id: self.access_key_id.or(lower.access_key_id),
            secret_access_key: self.secret_access_key.or(lower.secret_access_key),
            isolation: self.isolation.or(lower.isolation),
            isolation_account: self.isolation_account.or(lower.isolation_account),
            isolation_shared_host: self.isolation_shared_host.or(lower.isolation_shared_host),
            async_retry_delay_secs: self.async_retry_delay_secs.or(lower.async_retry_delay_secs),
            runsc: self.runsc.or(lower.runsc),
            gvisor_platform: self.gvisor_platform.or(lower.gvisor_platform),
        }
    }

    /// The range checks clap does for flags, for values from a file.
    fn validate(&self) -> Result<(), String> {
        if self.account_concurrency == Some(0) {
            return Err("key `account-concurrency`: must be at least 1".into());
        }
        if self.worker_threads == Some(0) {
            return Err("key `worker-threads`: must be at least 1".into());
        }
        if self.sandbox_lease_secs == Some(0) {
            return Err("key `sandbox-lease-secs`: must be at least 1".into());
        }
        if let Some(p) = &self.keep_alive_policy
            && p != "fixed"
            && p != "adaptive"
        {
            return Err(format!(
                "key `keep-alive-policy`: {p:?} is not `fixed` or `adaptive`"
            ));
        }
        if self.keep_alive_bin_ms == Some(0) {
            return Err("key `keep-alive-bin-ms`: must be at least 1".into());
        }
        if self.async_retry_delay_secs == Some(0) {
            return Err("key `async-retry-delay-secs`: must be at least 1".into());
        }
        if self.scale_burst == Some(0) {
            return Err("key `scale-burst`: must be at least 1".into());
        }
        if let Some(r) = self.scale_refill_per_sec {
            parse_refill_rate(&r.to_string())
                .map_err(|e| format!("key `scale-refill-per-sec`: {e}"))?;
        }
        Ok(())
    }

    /// Parses a configuration file's text; `origin` (the file name) is
    /// named in every error and warning.
    pub fn from_toml(text: &str, origin: &Path) -> anyhow::Result<FileOptions> {
        let o = origin.display();
        let table: toml::Table = text
            .parse()
            .map_err(|e| anyhow!("{o}: not a valid TOML file: {e}"))?;
        let mut known = toml::Table::new();
        let mut unknown_keys = Vec::new();
        // One key at a time, so that an error names its key and a key that
        // sets nothing is recognised as unknown.
        for (key, value) in table {
            let mut one = toml::Table::new();
            one.insert(key.clone(), value.clone());
            let parsed: Options = toml::Value::Table(one)
                .try_into()
                .map_err(|e| anyhow!("{o}: key `{key}`: {}", error_message(&e)))?;
            if parsed == Options::default() {
                unknown_keys.push(key);
            } else {
                known.insert(key, value);
            }
        }
        let options: Options = toml::Value::Table(known)
            .try_into()
            .map_err(|e| anyhow!("{o}: {}", error_message(&e)))?;
        options.validate().map_err(|e| anyhow!("{o}: {e}"))?;
        Ok(FileOptions {
            options,
            unknown_keys,
        })
    }

    /// Reads and parses a configuration file.
    pub fn from_file(path: &Path) -> anyhow::Result<FileOptions> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the configuration file {}", path.display()))?;
        Self::from_toml(&text, path)
    }
}

/// A `toml` error without its trailing newline.
fn error_message(e: &toml::de::Error) -> String {
    e.message().trim_end().to_string()
}

impl ServerConfig {
    /// Fills what `options` leaves unset with the defaults. The data dir and
    /// worker memory defaults depend on the host (`$HOME`, RAM size).
    pub fn resolve(options: Options) -> ServerConfig {
        let counting = CountingConfig::default();
        ServerConfig {
            listen: options.listen.unwrap_or(DEFAULT_LISTEN),
            data_dir: options.data_dir.unwrap_or_else(default_data_dir),
            keep_alive_secs: options.keep_alive_secs.unwrap_or(300),
            keep_alive_policy: options
                .keep_alive_policy
                .unwrap_or_else(|| "fixed".to_owned()),
            keep_alive_bin_ms: options.keep_alive_bin_ms.unwrap_or(60_000),
            sandbox_lease_secs: options
                .sandbox_lease_secs
                .unwrap_or(stratus_assignment::DEFAULT_LEASE.as_secs()),
            shutdown_grace_secs: options.shutdown_grace_secs.unwrap_or(60),
            worker_memory_mb: options
                .worker_memory_mb
                .unwrap_or_else(|| host_memory_mb() / 2),
            account_concurrency: options.account_concurrency.unwrap_or(1000),
            scale_burst: options.scale_burst.unwrap_or(counting.burst_capacity),
            scale_refill_per_sec: options
                .scale_refill_per_sec
                .unwrap_or(counting.burst_refill_per_s),
            python: options
                .python
                .unwrap_or_else(|| PathBuf::from("/usr/bin/python3")),
            node: options
                .node
                .unwrap_or_else(|| PathBuf::from("/usr/bin/node")),
            cgroup_parent: options
                .cgroup_parent
                .unwrap_or_else(|| "stratus".to_string()),
            uid_base: options.uid_base.unwrap_or(1_500_000),
            runtime_pool: options.runtime_pool.unwrap_or(2),
            worker_threads: options
                .worker_threads
                .unwrap_or_else(default_worker_threads),
            cpu_limit: options.cpu_limit.unwrap_or(CpuMode::Weight),
            log_max_bytes_per_function: options
                .log_max_bytes_per_function
                .unwrap_or(ByteSize(16 * MIB)),
            log_max_bytes_total: options.log_max_bytes_total.unwrap_or(ByteSize(GIB)),
            log_max_age: options
                .log_max_age
                .unwrap_or(Age(Some(std::time::Duration::from_secs(30 * 86_400)))),
            network: options.network.unwrap_or(NetworkMode::None),
            network_bridge_cidr: options
                .network_bridge_cidr
                .unwrap_or(stratus_sandbox_process::net::DEFAULT_BRIDGE_CIDR),
            network_allow_host: options.network_allow_host.unwrap_or_default(),
            access_key_id: options.access_key_id,
            secret_access_key: options.secret_access_key,
            isolation: options.isolation.unwrap_or(Isolation::Process),
            isolation_account: options.isolation_account.unwrap_or_default(),
            isolation_shared_host: options.isolation_shared_host.unwrap_or(Isolation::Process),
            async_retry_delay_secs: options.async_retry_delay_secs.unwrap_or(60),
            runsc: options
                .runsc
                .unwrap_or_else(|| PathBuf::from("/usr/bin/runsc")),
            gvisor_platform: options.gvisor_platform.unwrap_or(GvisorPlatform::Systrap),
        }
    }

    /// The admin key: the configured pair, or on a loopback address the
    /// documented local one. Refuses to serve a non-loopback address
    /// without a configured pair, or with the documented (public) secret.
    pub fn admin_credentials(&self) -> anyhow::Result<AdminCredentials> {
        let loopback = self.listen.ip().is_loopback();
        match (&self.access_key_id, &self.secret_access_key) {
            (Some(id), Some(secret)) => {
                if !loopback && secret.0 == stratus_types::LOCAL_SECRET_ACCESS_KEY {
                    anyhow::bail!(
                        "refusing to listen on {} with the documented local secret: anyone could sign requests. Set STRATUS_SECRET_ACCESS_KEY to a secret of your own.",
                        self.listen
                    );
                }
                Ok(AdminCredentials {
                    access_key_id: id.clone(),
                    secret: secret.clone(),
                    documented_default: false,
                })
            }
            (None, None) if loopback => Ok(AdminCredentials {
                access_key_id: stratus_types::LOCAL_ACCESS_KEY_ID.to_owned(),
                secret: Secret(stratus_types::LOCAL_SECRET_ACCESS_KEY.to_owned()),
                documented_default: true,
            }),
            (None, None) => anyhow::bail!(
                "refusing to listen on {} (not a loopback address) without credentials: the documented local key pair would let anyone in. Set the admin key with STRATUS_ACCESS_KEY_ID and STRATUS_SECRET_ACCESS_KEY (or --access-key-id / --secret-access-key), or listen on 127.0.0.1.",
                self.listen
            ),
            (Some(_), None) | (None, Some(_)) => anyhow::bail!(
                "set both the admin key's id and its secret (STRATUS_ACCESS_KEY_ID and STRATUS_SECRET_ACCESS_KEY, or --access-key-id and --secret-access-key), or neither"
            ),
        }
    }

    /// The configuration as a TOML file (`--print-config`); reading it back
    /// gives the same configuration.
    pub fn to_toml(&self) -> anyhow::Result<String> {
        toml::to_string(self).context("writing the configuration as TOML")
    }
}

fn parse_cidr(s: &str) -> Result<Ipv4Cidr, String> {
    s.parse()
}

/// A refill rate: a finite number of tokens per second above zero.
pub fn parse_refill_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        Ok(_) => Err(format!(
            "{s:?} is not a positive, finite number of tokens per second"
        )),
        Err(e) => Err(format!("{s:?} is not a number ({e})")),
    }
}

/// Parses an age: `90s`, `15m`, `12h`, `30d`, or `never` (no limit).
pub fn parse_age(s: &str) -> Result<Age, String> {
    let t = s.trim();
    if t == "never" {
        return Ok(Age(None));
    }
    let bad =
        || format!("{s:?} is not an age: write a number with s, m, h or d (e.g. 30d), or never");
    let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(secs) {
        Some(0) => Err(format!("{s:?}: the age must be more than zero (or never)")),
        Some(v) => Ok(Age(Some(std::time::Duration::from_secs(v)))),
        None => Err(bad()),
    }
}

impl fmt::Display for Age {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(d) = self.0 else {
            return f.write_str("never");
        };
        let s = d.as_secs();
        for (unit, n) in [("d", 86_400), ("h", 3600), ("m", 60)] {
            if s % n == 0 {
                return write!(f, "{}{unit}", s / n);
            }
        }
        write!(f, "{s}s")
    }
}

impl Serialize for Age {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Age {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_age(&text).map_err(serde::de::Error::custom)
    }
}

/// Parses a size: `65536`, `64K`, `16MiB`, `1G`... (powers of 1024), at
/// least 64 KiB.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let bad =
        || format!("{s:?} is not a size: write bytes, or a number with K, M or G (KiB, MiB, GiB)");
    let n: u64 = num.parse().map_err(|_| bad())?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => KIB,
        "M" | "MiB" => MIB,
        "G" | "GiB" => GIB,
        _ => return Err(bad()),
    };
    let v = n.checked_mul(mult).ok_or_else(bad)?;
    if v < 64 * KIB {
        return Err(format!("{s:?} is less than the smallest log cap, 64KiB"));
    }
    Ok(v)
}

fn parse_size(s: &str) -> Result<ByteSize, String> {
    parse_bytes(s).map(ByteSize)
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0;
        match n {
            0 => write!(f, "0"),
            _ if n.checked_rem(GIB) == Some(0) => write!(f, "{}GiB", n / GIB),
            _ if n.checked_rem(MIB) == Some(0) => write!(f, "{}MiB", n / MIB),
            _ if n.checked_rem(KIB) == Some(0) => write!(f, "{}KiB", n / KIB),
            _ => write!(f, "{n}"),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = ByteSize;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size: a number of bytes, or a string such as \"16MiB\"")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<ByteSize, E> {
                parse_size(s).map_err(E::custom)
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<ByteSize, E> {
                parse_size(&n.to_string()).map_err(E::custom)
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<ByteSize, E> {
                let n = u64::try_from(n)
                    .map_err(|_| E::custom(format!("{n} is not a size: it is negative")))?;
                self.visit_u64(n)
            }
        }
        d.deserialize_any(V)
    }
}

pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(x).join("stratus");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".local/share/stratus"),
        None => PathBuf::from("/var/lib/stratus"),
    }
}

/// Half the CPUs this process may run on, at least one: the server's share,
/// the other half being the sandboxes'.
fn default_worker_threads() -> u32 {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    u32::try_from(cpus / 2).unwrap_or(u32::MAX).max(1)
}

fn host_memory_mb() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        options: Options,
    }

    fn flags(args: &[&str]) -> Result<Options, clap::Error> {
        Cli::try_parse_from(std::iter::once("stratus").chain(args.iter().copied()))
            .map(|c| c.options)
    }

    fn file(text: &str) -> anyhow::Result<FileOptions> {
        Options::from_toml(text, Path::new("/etc/stratus.toml"))
    }

    /// Flags over the file over the defaults, with the host-dependent
    /// defaults pinned so that results compare equal.
    fn effective(args: &[&str], text: &str) -> ServerConfig {
        let pinned = Options {
            data_dir: Some("/d".into()),
            worker_memory_mb: Some(1024),
            ..Options::default()
        };
        let f = file(text).expect("file parses");
        ServerConfig::resolve(
            flags(args)
                .expect("flags parse")
                .over(f.options)
                .over(pinned),
        )
    }

    #[test]
    fn isolation_tiers_come_from_flags_and_the_file() {
        let c = effective(&[], "");
        assert_eq!(c.isolation, Isolation::Process);
        assert!(c.isolation_account.is_empty());
        assert_eq!(c.isolation_shared_host, Isolation::Process);
        assert_eq!(c.gvisor_platform, GvisorPlatform::Systrap);
        let c = effective(
            &[
                "--isolation-account",
                "123456789012=gvisor",
                "--isolation-account",
                "210987654321=process",
                "--gvisor-platform",
                "ptrace",
            ],
            "isolation-shared-host = \"gvisor\"\nisolation-account = [\"111111111111=gvisor\"]\n",
        );
        assert_eq!(c.isolation_shared_host, Isolation::Gvisor);
        assert_eq!(c.gvisor_platform, GvisorPlatform::Ptrace);
        let accounts: Vec<String> = c
            .isolation_account
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            accounts,
            ["123456789012=gvisor", "210987654321=process"],
            "flags replace the file's list"
        );
        assert!(flags(&["--isolation", "vm"]).is_err());
        assert!(flags(&["--isolation-account", "12=gvisor"]).is_err());
        let e = file("isolation-account = [\"123456789012\"]").expect_err("no tier");
        assert!(e.to_string().contains("isolation-account"), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_sets_every_key() {
        let text = include_str!("../../../docs/stratus.example.toml");
        let f = file(text).expect("docs/stratus.example.toml parses");
        assert_eq!(f.unknown_keys, Vec::<String>::new());
        // Every field is set, so every option is documented there.
        let resolved = ServerConfig::resolve(f.options.clone());
        let back = file(&resolved.to_toml().expect("toml")).expect("reparses");
        assert_eq!(back.options, f.options);
    }

    #[test]
    fn the_admin_key_is_configured_or_local_on_loopback_only() {
        let local = effective(&[], "").admin_credentials().expect("loopback");
        assert!(local.documented_default);
        assert_eq!(local.access_key_id, "STRATUSLOCALADMINKEY");
        let wide = ["--listen", "0.0.0.0:9000"];
        let e = format!(
            "{:#}",
            effective(&wide, "")
                .admin_credentials()
                .expect_err("refused")
        );
        assert!(e.contains("STRATUS_SECRET_ACCESS_KEY"), "{e}");
        let mut set = wide.to_vec();
        set.extend(["--access-key-id", "AK", "--secret-access-key", "s"]);
        let c = effective(&set, "").admin_credentials().expect("configured");
        assert_eq!(
            (c.access_key_id.as_str(), c.documented_default),
            ("AK", false)
        );
        let mut public = wide.to_vec();
        public.extend([
            "--access-key-id",
            "AK",
            "--secret-access-key",
            "stratus-local-secret",
        ]);
        assert!(effective(&public, "").admin_credentials().is_err());
        let half = effective(&["--access-key-id", "AK"], "").admin_credentials();
        assert!(half.is_err());
        assert!(flags(&["--access-key-id", "A/K"]).is_err());
        // The secret is never printed.
        let c = effective(
            &["--access-key-id", "AK", "--secret-access-key", "hush"],
            "",
        );
        assert!(!c.to_toml().expect("toml").contains("hush"));
        assert!(!format!("{c:?}").contains("hush"));
        // Nor read from a file: it is an unknown key there.
        let f = file("secret-access-key = \"hush\"\n").expect("parses");
        assert_eq!(f.unknown_keys, vec!["secret-access-key"]);
    }

    #[test]
    fn defaults_are_the_documented_ones() {
        let c = effective(&[], "");
        assert_eq!(c.listen, "127.0.0.1:9000".parse().expect("addr"));
        assert_eq!(c.keep_alive_secs, 300);
        assert_eq!(c.keep_alive_policy, "fixed");
        assert_eq!(c.keep_alive_bin_ms, 60_000);
        assert_eq!(c.account_concurrency, 1000);
        assert_eq!(c.scale_burst, 1000);
        assert!((c.scale_refill_per_sec - 100.0).abs() < f64::EPSILON);
        assert_eq!(c.python, PathBuf::from("/usr/bin/python3"));
        assert_eq!(c.node, PathBuf::from("/usr/bin/node"));
        assert_eq!(c.cgroup_parent, "stratus");
        assert_eq!(c.uid_base, 1_500_000);
        assert_eq!(c.runtime_pool, 2);
        assert_eq!(c.worker_threads, default_worker_threads());
        assert_eq!(c.cpu_limit, CpuMode::Weight);
        assert_eq!(c.log_max_bytes_per_function, ByteSize(16 << 20));
        assert_eq!(c.log_max_bytes_total, ByteSize(1 << 30));
        assert_eq!(c.network, NetworkMode::None);
        assert_eq!(c.network_bridge_cidr.to_string(), "172.31.250.0/24");
        assert_eq!(c.network_allow_host, Vec::<SocketAddrV4>::new());
    }

    #[test]
    fn network_options_parse_from_flags_and_file() {
        let c = effective(
            &[
                "--network",
                "outbound",
                "--network-allow-host",
                "127.0.0.1:5432",
                "--network-allow-host",
                "10.0.0.5:80",
            ],
            "network-bridge-cidr = \"10.77.0.0/16\"\n",
        );
        assert_eq!(c.network, NetworkMode::Outbound);
        assert_eq!(c.network_bridge_cidr.to_string(), "10.77.0.0/16");
        assert_eq!(
            c.network_allow_host,
            vec![
                "127.0.0.1:5432".parse::<SocketAddrV4>().expect("addr"),
                "10.0.0.5:80".parse().expect("addr")
            ]
        );
        assert!(file("network-bridge-cidr = \"10.77.0.1/16\"\n").is_err());
        assert!(file("network = \"bridge\"\n").is_err());
        assert!(flags(&["--network-allow-host", "localhost:80"]).is_err());
        assert!(flags(&["--network-bridge-cidr", "10.0.0.0/31"]).is_err());
    }

    #[test]
    fn a_flag_given_wins_over_the_file_and_the_file_over_the_default() {
        let text = "keep-alive-secs = 60\naccount-concurrency = 7\ncpu-limit = \"quota\"\n";
        let c = effective(&[], text);
        assert_eq!(c.keep_alive_secs, 60);
        assert_eq!(c.account_concurrency, 7);
        assert_eq!(c.cpu_limit, CpuMode::Quota);
        // A flag left out does not reset the file's value to the default.
        let c = effective(&["--account-concurrency", "9"], text);
        assert_eq!(c.account_concurrency, 9);
        assert_eq!(c.keep_alive_secs, 60);
        assert_eq!(c.cpu_limit, CpuMode::Quota);
        // Even a flag given with the default value wins.
        let c = effective(&["--keep-alive-secs", "300"], text);
        assert_eq!(c.keep_alive_secs, 300);
    }

    #[test]
    fn the_keep_alive_bin_is_a_hidden_flag_and_a_key() {
        let c = effective(&["--keep-alive-bin-ms", "1000"], "");
        assert_eq!(c.keep_alive_bin_ms, 1000);
        let c = effective(&[], "keep-alive-bin-ms = 250\n");
        assert_eq!(c.keep_alive_bin_ms, 250);
        assert!(flags(&["--keep-alive-bin-ms", "0"]).is_err());
        assert!(file("keep-alive-bin-ms = 0\n").is_err());
    }

    #[test]
    fn unknown_keys_are_reported_not_refused() {
        let f = file("keep-alive-secs = 5\nkeep-alive = 5\n[tls]\ncert = \"x\"\n")
            .expect("unknown keys are not an error");
        assert_eq!(f.unknown_keys, vec!["keep-alive", "tls"]);
        assert_eq!(f.options.keep_alive_secs, Some(5));
    }

    #[test]
    fn bad_values_are_errors_naming_the_key_and_the_file() {
        for (text, key) in [
            ("keep-alive-secs = \"long\"", "keep-alive-secs"),
            ("keep-alive-secs = -1", "keep-alive-secs"),
            ("account-concurrency = 0", "account-concurrency"),
            ("worker-threads = 0", "worker-threads"),
            ("worker-threads = -2", "worker-threads"),
            ("account-concurrency = 5000000000", "account-concurrency"),
            ("scale-burst = 0", "scale-burst"),
            ("scale-refill-per-sec = 0.0", "scale-refill-per-sec"),
            ("scale-refill-per-sec = nan", "scale-refill-per-sec"),
            ("listen = \"localhost\"", "listen"),
            ("cpu-limit = \"hard\"", "cpu-limit"),
            ("log-max-bytes-total = \"16MB\"", "log-max-bytes-total"),
            ("log-max-bytes-total = 4096", "log-max-bytes-total"),
            (
                "log-max-bytes-per-function = -5",
                "log-max-bytes-per-function",
            ),
        ] {
            let e = format!("{:#}", file(text).expect_err(text));
            assert!(e.contains("/etc/stratus.toml"), "{text}: {e}");
            assert!(e.contains(&format!("`{key}`")), "{text}: {e}");
        }
        let e = format!("{:#}", file("keep-alive-secs = ").expect_err("syntax"));
        assert!(e.contains("/etc/stratus.toml"), "{e}");
    }

    #[test]
    fn print_config_round_trips_through_the_parser() {
        let c = effective(
            &[
                "--log-max-bytes-total",
                "1536K",
                "--scale-refill-per-sec",
                "0.5",
            ],
            "uid-base = 40000\npython = \"/opt/py\"\nlog-max-bytes-per-function = 70000\n",
        );
        let text = c.to_toml().expect("toml");
        assert!(text.contains("uid-base = 40000"), "{text}");
        assert!(text.contains("log-max-bytes-total = \"1536KiB\""), "{text}");
        let back = file(&text).expect("printed config parses");
        assert!(back.unknown_keys.is_empty());
        assert_eq!(ServerConfig::resolve(back.options), c);
    }

    #[test]
    fn scaling_flags_refuse_zero_and_nonsense() {
        for bad in [
            &["--scale-burst", "0"][..],
            &["--scale-burst=-1"],
            &["--scale-burst", "many"],
            &["--scale-refill-per-sec", "0"],
            &["--scale-refill-per-sec=-5"],
            &["--scale-refill-per-sec", "NaN"],
            &["--scale-refill-per-sec", "inf"],
            &["--scale-refill-per-sec", "fast"],
            &["--account-concurrency", "0"],
            &["--worker-threads", "0"],
            &["--worker-threads", "two"],
            &["--cpu-limit", "hard"],
        ] {
            let err = flags(bad).expect_err("refused");
            assert!(
                matches!(
                    err.kind(),
                    clap::error::ErrorKind::ValueValidation | clap::error::ErrorKind::InvalidValue
                ),
                "{bad:?}: {err}"
            );
        }
        let a = flags(&["--scale-burst", "2", "--scale-refill-per-sec", "0.001"]).expect("small");
        assert_eq!(a.scale_burst, Some(2));
        assert_eq!(a.scale_refill_per_sec, Some(0.001));
    }

    #[test]
    fn ages_are_written_like_30d_or_never_and_round_trip() {
        let age = |s| parse_age(s).map(|a| a.0);
        assert_eq!(age("90s"), Ok(Some(std::time::Duration::from_secs(90))));
        assert_eq!(age("15m"), Ok(Some(std::time::Duration::from_secs(900))));
        assert_eq!(age("12h"), Ok(Some(std::time::Duration::from_secs(43_200))));
        assert_eq!(
            age("30d"),
            Ok(Some(std::time::Duration::from_secs(2_592_000)))
        );
        assert_eq!(age("never"), Ok(None));
        for bad in [
            "",
            "30",
            "d",
            "0s",
            "1w",
            "-1d",
            "1.5h",
            "99999999999999999999d",
        ] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
        for text in ["90s", "15m", "12h", "30d", "never"] {
            let a = parse_age(text).expect("parses");
            assert_eq!(a.to_string(), text);
        }
        let c = effective(
            &[],
            "log-max-age = \"2h\"\nsandbox-lease-secs = 5\nshutdown-grace-secs = 7\n",
        );
        assert_eq!(
            c.log_max_age,
            Age(Some(std::time::Duration::from_secs(7200)))
        );
        assert_eq!((c.sandbox_lease_secs, c.shutdown_grace_secs), (5, 7));
        let d = effective(&[], "");
        assert_eq!(d.sandbox_lease_secs, 21_600);
        assert_eq!(d.shutdown_grace_secs, 60);
        assert_eq!(d.log_max_age.to_string(), "30d");
        assert!(file("sandbox-lease-secs = 0\n").is_err());
        assert!(flags(&["--sandbox-lease-secs", "0"]).is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("65536"), Ok(65536));
        assert_eq!(parse_bytes("64K"), Ok(65536));
        assert_eq!(parse_bytes("16MiB"), Ok(16 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes(" 2 GiB "), Ok(2 << 30));
        for bad in [
            "",
            "MiB",
            "16MB",
            "16 mib",
            "-1",
            "1.5G",
            "99999999999999999999G",
            "4K",
        ] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
        for n in [65536, 70000, 16 << 20, 3 << 30, (1 << 20) + 1024] {
            assert_eq!(parse_bytes(&ByteSize(n).to_string()), Ok(n));
        }
    }
}
