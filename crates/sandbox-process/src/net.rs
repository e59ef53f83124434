//! Outbound networking for sandboxes, an opt-in server option (see
//! `docs/design/network.md`).
//!
//! By default a sandbox's network namespace holds only `lo`: it reaches
//! nothing, and nothing reaches it but the server, through the Runtime API
//! socket the jailer passes out. With [`OutboundConfig`] the backend owns,
//! for its lifetime:
//! - a bridge (`stratus-<id>`, `<id>` derived from the cgroup parent so two
//!   servers on one host never share one) holding the gateway address, the
//!   first address of the configured CIDR;
//! - one veth pair per sandbox: the host end (`stv<id><n>`) on the bridge,
//!   the other end `eth0` inside the sandbox with the next free address of
//!   the CIDR and a default route via the gateway. It is created by one
//!   netlink request straight into the jailer's network namespace (ahead of
//!   time for pre-warmed jailers) and dies with that namespace;
//! - nftables tables `inet stratus_<id>` and `bridge stratus_<id>`:
//!   masquerade for traffic leaving the host, a drop of everything from the
//!   bridge to the host itself except the operator's allowlist of host
//!   `address:port` pairs (reached at the gateway address, DNAT'd when the
//!   host address is another one), no new connections into sandboxes, and a
//!   drop of every frame between two sandboxes' bridge ports.
//!
//! [`Network::sweep`] removes the bridge and tables a crashed server left;
//! dropping a [`Network`] removes its own. This module touches no other
//! interface or table, except `net.ipv4.ip_forward`, which outbound
//! networking needs and which is left on.

use std::collections::HashSet;
use std::fmt;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use netlink_packet_core::{
    NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::address::{AddressAttribute, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_ROUTE};
use serde::{Deserialize, Serialize};

/// Name of the sandbox's end of its veth pair.
pub const SANDBOX_IFACE: &str = "eth0";

/// An IPv4 network, `a.b.c.d/n`, with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix: u8,
}

/// The outbound bridge's default network: inside 172.16.0.0/12 but at its
/// far end, away from the ranges Docker (172.17.0.0/16 and up) and most LANs use.
pub const DEFAULT_BRIDGE_CIDR: Ipv4Cidr = Ipv4Cidr {
    network: Ipv4Addr::new(172, 31, 250, 0),
    prefix: 24,
};

impl Ipv4Cidr {
    /// The network; `prefix` must leave room for a gateway and one sandbox
    /// (at most 30) and `network` must have no host bits set.
    pub fn new(network: Ipv4Addr, prefix: u8) -> Result<Self, String> {
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "prefix /{prefix} is out of range (8 to 30: room for a gateway and a sandbox)"
            ));
        }
        let host_bits = u32::MAX >> prefix;
        if u32::from(network) & host_bits != 0 {
            return Err(format!(
                "{network}/{prefix} has host bits set (the network is {}/{prefix})",
                Ipv4Addr::from(u32::from(network) & !host_bits)
            ));
        }
        Ok(Self { network, prefix })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The first host address: the bridge's (the sandboxes' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 1)
    }

    /// How many sandbox addresses the network holds (all but the network,
    /// gateway and broadcast addresses).
    pub fn sandbox_addresses(&self) -> u32 {
        (1u32 << (32 - self.prefix)) - 3
    }

    /// Whether the two networks share an address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        let prefix = self.prefix.min(other.prefix);
        let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
        u32::from(self.network) & mask == u32::from(other.network) & mask
    }

    /// The `i`th sandbox address (`i < sandbox_addresses()`).
    fn sandbox_address(&self, i: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) + 2 + i)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (addr, prefix) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv4 network (a.b.c.d/n)"))?;
        let network: Ipv4Addr = addr
            .parse()
            .map_err(|e| format!("{addr:?} is not an IPv4 address ({e})"))?;
        let prefix: u8 = prefix
            .parse()
            .map_err(|e| format!("{prefix:?} is not a prefix length ({e})"))?;
        Self::new(network, prefix)
    }
}

impl Serialize for Ipv4Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// What outbound networking needs from the operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundConfig {
    /// The bridge's network: the gateway is its first address, sandboxes
    /// get the others (so it caps the number of live sandboxes).
    pub cidr: Ipv4Cidr,
    /// Host `address:port` pairs (TCP) sandboxes may reach, at the gateway
    /// address and the same port.
    pub allow_host: Vec<SocketAddrV4>,
}

/// A sandbox's network as its jailer configures it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SandboxNet {
    /// Address of `eth0`.
    pub address: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The default route's gateway (the bridge).
    pub gateway: Ipv4Addr,
    /// Name servers for `/etc/resolv.conf` (the host's, less loopback ones).
    pub nameservers: Vec<Ipv4Addr>,
}

/// A failed network operation.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// The configuration cannot work.
    #[error("{0}")]
    Config(String),
    /// A netlink request failed.
    #[error("{what}")]
    Netlink {
        /// What was attempted.
        what: String,
        /// The kernel's answer.
        #[source]
        source: io::Error,
    },
    /// Applying the nftables ruleset failed.
    #[error("nft: {0}")]
    Nft(String),
    /// Writing a sysctl failed.
    #[error("writing {path}")]
    Sysctl {
        /// The /proc/sys file.
        path: String,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// Every address of the network is taken.
    #[error("all {count} sandbox addresses of {cidr} are in use")]
    Exhausted {
        /// How many there are.
        count: u32,
        /// The network.
        cidr: Ipv4Cidr,
    },
}

/// Names of one server's network objects, derived from its cgroup parent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The bridge (at most 15 characters).
    pub bridge: String,
    /// Prefix of the host ends of veth pairs.
    pub veth_prefix: String,
    /// The nftables tables (one `inet`, one `bridge`).
    pub table: String,
}

impl Names {
    /// The names for the server whose cgroup parent is `cgroup_parent`.
    pub fn for_parent(cgroup_parent: &str) -> Self {
        // FNV-1a: stable across builds and platforms (unlike DefaultHasher).
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for b in cgroup_parent.bytes() {
            hash ^= u64::from(b);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        let id = format!("{:06x}", hash & 0xff_ffff);
        Self {
            bridge: format!("stratus-{id}"),
            veth_prefix: format!("stv{id}"),
            table: format!("stratus_{id}"),
        }
    }
}

/// The outbound network of one backend: bridge, address pool, firewall.
#[derive(Debug)]
pub struct Network {
    names: Names,
    cidr: Ipv4Cidr,
    bridge_index: u32,
    nameservers: Vec<Ipv4Addr>,
    pool: Arc<Mutex<AddressPool>>,
    /// Numbers the host ends of veth pairs.
    seq: AtomicU32,
    /// Set once the ruleset is loaded (so drop removes it).
    has_tables: bool,
}

/// What [`Network::sweep`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Swept {
    /// Links (the bridge, veths) removed.
    pub links: usize,
    /// nftables tables removed.
    pub tables: usize,
}

impl Network {
    /// Removes the bridge, the veths and the nftables tables a previous
    /// server with this cgroup parent left (after a crash). Touches nothing
    /// else; without `nft` on the host there can be no tables to remove.
    pub fn sweep(cgroup_parent: &str) -> Swept {
        let names = Names::for_parent(cgroup_parent);
        let mut swept = Swept::default();
        let links = std::fs::read_dir("/sys/class/net")
            .map(|d| {
                d.filter_map(|e| e.ok())
                    .filter_map(|e| e.file_name().into_string().ok())
                    .filter(|n| *n == names.bridge || n.starts_with(&names.veth_prefix))
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for link in links {
            match delete_link(&link) {
                Ok(()) => swept.links += 1,
                // A veth that went with its namespace meanwhile.
                Err(NetError::Netlink { source, .. })
                    if source.raw_os_error() == Some(libc::ENODEV) => {}
                Err(e) => {
                    tracing::warn!(link, error = %error_chain(&e), "could not remove a leftover network link")
                }
            }
        }
        for family in ["inet", "bridge"] {
            let listed = Command::new("nft")
                .args(["list", "table", family, &names.table])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            if matches!(listed, Ok(s) if s.success()) {
                match nft(&format!("delete table {family} {}\n", names.table)) {
                    Ok(()) => swept.tables += 1,
                    Err(e) => {
                        tracing::warn!(table = %names.table, family, error = %e, "could not remove a leftover nftables table")
                    }
                }
            }
        }
        swept
    }

    /// Creates the bridge, loads the firewall and turns on IPv4 forwarding.
    /// Call [`Network::sweep`] first.
    pub fn setup(cgroup_parent: &str, config: &OutboundConfig) -> Result<Self, NetError> {
        let names = Names::for_parent(cgroup_parent);
        let cidr = config.cidr;
        let mut ports = HashSet::new();
        for a in &config.allow_host {
            if !ports.insert(a.port()) {
                return Err(NetError::Config(format!(
                    "two allowed host addresses share port {}: sandboxes reach each at the gateway's port of the same number",
                    a.port()
                )));
            }
            if a.port() == 0 {
                return Err(NetError::Config(format!(
                    "allowed host address {a} has port 0"
                )));
            }
        }
        // Fail early and clearly when nft is missing, before touching links.
        match Command::new("nft")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
        {
            Ok(s) if s.success() => {}
            Ok(s) => return Err(NetError::Nft(format!("`nft --version` failed ({s})"))),
            Err(e) => {
                return Err(NetError::Nft(format!(
                    "outbound networking needs the nft command (Debian package nftables): {e}"
                )));
            }
        }
        // A network some interface already routes (a LAN, a VPC, Docker,
        // another server's bridge) would be shadowed or shadow it.
        if let Ok(table) = std::fs::read_to_string("/proc/net/route") {
            for (iface, route) in parse_routes(&table) {
                if route.overlaps(&cidr) {
                    return Err(NetError::Config(format!(
                        "the bridge network {cidr} overlaps the route to {route} on {iface}: choose another network-bridge-cidr"
                    )));
                }
            }
        }
        create_bridge(&names.bridge)?;
        let mut network = Self {
            bridge_index: 0,
            nameservers: host_nameservers(),
            pool: Arc::new(Mutex::new(AddressPool::new(cidr.sandbox_addresses()))),
            seq: AtomicU32::new(0),
            has_tables: false,
            names,
            cidr,
        };
        // From here on, dropping `network` removes the bridge again.
        let bridge = network.names.bridge.clone();
        network.bridge_index = link_index(&bridge)?;
        // The bridge is an IPv4 router only: no link-local IPv6 address for
        // sandboxes to reach the host by.
        sysctl(
            &format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6"),
            "1",
        )
        .or_else(|e| match e {
            // A host without IPv6.
            NetError::Sysctl { ref source, .. } if source.kind() == io::ErrorKind::NotFound => {
                Ok(())
            }
            e => Err(e),
        })?;
        if config.allow_host.iter().any(|a| a.ip().is_loopback()) {
            // DNAT to a host loopback address is routed only with this.
            sysctl(
                &format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"),
                "1",
            )?;
        }
        add_address(network.bridge_index, cidr.gateway(), cidr.prefix())
            .map_err(|e| with_what(e, format!("adding {} to {bridge}", cidr.gateway())))?;
        set_up(network.bridge_index).map_err(|e| with_what(e, format!("bringing {bridge} up")))?;
        nft(&ruleset(&network.names, cidr, &config.allow_host))?;
        network.has_tables = true;
        let forward = "/proc/sys/net/ipv4/ip_forward";
        if !matches!(std::fs::read_to_string(forward), Ok(v) if v.trim() == "1") {
            sysctl(forward, "1")?;
            tracing::warn!(
                "outbound networking: turned on IPv4 forwarding (net.ipv4.ip_forward = 1) for the whole host; it stays on after the server exits"
            );
        } else {
            tracing::info!(
                "outbound networking: IPv4 forwarding (net.ipv4.ip_forward) was already on"
            );
        }
        if network.nameservers.is_empty() {
            tracing::warn!(
                "outbound networking: the host's /etc/resolv.conf names no non-loopback IPv4 name server, so sandboxes resolve no names (a loopback resolver is not reachable from a sandbox)"
            );
        }
        Ok(network)
    }

    /// The bridge's name.
    pub fn bridge(&self) -> &str {
        &self.names.bridge
    }

    /// The network.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The host ends' name prefix.
    pub fn veth_prefix(&self) -> &str {
        &self.names.veth_prefix
    }

    /// Gives the network namespace of process `pid` an `eth0` on the bridge
    /// with a free address (one netlink request). The jailer configures the
    /// address and route inside from the returned [`Attachment::net`].
    pub fn attach(&self, pid: u32) -> Result<Attachment, NetError> {
        let lease = AddressPool::allocate(&self.pool).ok_or(NetError::Exhausted {
            count: self.cidr.sandbox_addresses(),
            cidr: self.cidr,
        })?;
        let n = self.seq.fetch_add(1, Ordering::Relaxed) & 0xff_ffff;
        let host = format!("{}{n:x}", self.names.veth_prefix);
        create_veth(&host, self.bridge_index, pid).map_err(|e| {
            with_what(
                e,
                format!("creating veth {host} into the network namespace of pid {pid}"),
            )
        })?;
        Ok(Attachment {
            net: SandboxNet {
                address: self.cidr.sandbox_address(lease.index),
                prefix: self.cidr.prefix(),
                gateway: self.cidr.gateway(),
                nameservers: self.nameservers.clone(),
            },
            host_veth: host,
            _lease: lease,
        })
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        if self.has_tables
            && let Err(e) = nft(&format!(
                "delete table inet {t}\ndelete table bridge {t}\n",
                t = self.names.table
            ))
        {
            tracing::warn!(table = %self.names.table, error = %e, "could not remove the nftables tables");
        }
        // Its ports (veths of sandboxes still alive) go with it.
        if let Err(e) = delete_link(&self.names.bridge) {
            tracing::warn!(bridge = %self.names.bridge, error = %error_chain(&e), "could not remove the bridge");
        }
    }
}

/// One sandbox's place on the bridge; its address is free again once this
/// is dropped (the veth itself dies with the sandbox's network namespace).
#[derive(Debug)]
pub struct Attachment {
    /// What the jailer configures.
    pub net: SandboxNet,
    /// The host end of the veth pair.
    pub host_veth: String,
    _lease: AddressLease,
}

/// Free sandbox addresses, handed out round-robin so an address is not
/// reused at once (stale neighbour entries).
#[derive(Debug)]
struct AddressPool {
    size: u32,
    next: u32,
    used: HashSet<u32>,
}

#[derive(Debug)]
struct AddressLease {
    index: u32,
    pool: Arc<Mutex<AddressPool>>,
}

impl AddressPool {
    fn new(size: u32) -> Self {
        Self {
            size,
            next: 0,
            used: HashSet::new(),
        }
    }

    fn allocate(pool: &Arc<Mutex<AddressPool>>) -> Option<AddressLease> {
        let mut p = pool.lock().unwrap_or_else(|e| e.into_inner());
        for k in 0..p.size {
            let i = (p.next + k) % p.size;
            if p.used.insert(i) {
                p.next = (i + 1) % p.size;
                return Some(AddressLease {
                    index: i,
                    pool: Arc::clone(pool),
                });
            }
        }
        None
    }
}

impl Drop for AddressLease {
    fn drop(&mut self) {
        let mut p = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        p.used.remove(&self.index);
    }
}

/// The firewall of one server: loaded atomically by `nft -f`, replacing an
/// older version of the same tables.
pub fn ruleset(names: &Names, cidr: Ipv4Cidr, allow: &[SocketAddrV4]) -> String {
    let Names {
        bridge: br,
        veth_prefix,
        table,
    } = names;
    let gw = cidr.gateway();
    let mut dnat = String::new();
    let mut accept = String::new();
    for a in allow {
        let (host, port) = (a.ip(), a.port());
        if *host == gw {
            accept.push_str(&format!(
                "\t\tiifname \"{br}\" ip daddr {gw} tcp dport {port} accept\n"
            ));
        } else {
            dnat.push_str(&format!(
                "\t\tiifname \"{br}\" ip daddr {gw} tcp dport {port} dnat ip to {host}:{port}\n"
            ));
            accept.push_str(&format!(
                "\t\tiifname \"{br}\" ip daddr {host} tcp dport {port} ct status dnat accept\n"
            ));
        }
    }
    format!(
        "# Stratus: outbound networking of the sandboxes on {br} ({cidr}).
table inet {table}
delete table inet {table}
table inet {table} {{
\tchain prerouting {{
\t\ttype nat hook prerouting priority dstnat; policy accept;
{dnat}\t}}
\tchain input {{
\t\ttype filter hook input priority filter; policy accept;
{accept}\t\tiifname \"{br}\" drop
\t}}
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname \"{br}\" oifname \"{br}\" drop
\t\toifname \"{br}\" ct state established,related accept
\t\toifname \"{br}\" drop
\t}}
\tchain postrouting {{
\t\ttype nat hook postrouting priority srcnat; policy accept;
\t\tip saddr {cidr} oifname != \"{br}\" masquerade
\t}}
}}
table bridge {table}
delete table bridge {table}
table bridge {table} {{
\tchain forward {{
\t\ttype filter hook forward priority filter; policy accept;
\t\tiifname \"{veth_prefix}*\" oifname \"{veth_prefix}*\" drop
\t}}
}}
"
    )
}

/// Runs `nft -f -` with `rules` on stdin.
fn nft(rules: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Nft(format!(
                "starting nft (Debian package nftables) failed: {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(rules.as_bytes())
            .map_err(|e| NetError::Nft(format!("writing the ruleset to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(format!("waiting for nft: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(NetError::Nft(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn sysctl(path: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(path, value).map_err(|source| NetError::Sysctl {
        path: path.to_owned(),
        source,
    })
}

/// The host's IPv4 name servers a sandbox can reach (not loopback ones).
fn host_nameservers() -> Vec<Ipv4Addr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .map(|text| parse_nameservers(&text))
        .unwrap_or_default()
}

fn parse_nameservers(text: &str) -> Vec<Ipv4Addr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|rest| rest.split_whitespace().next()?.parse::<IpAddr>().ok())
        .filter_map(|ip| match ip {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
            _ => None,
        })
        .take(3)
        .collect()
}

/// The IPv4 routes of `/proc/net/route` but default routes, as (interface, network).
fn parse_routes(table: &str) -> Vec<(String, Ipv4Cidr)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (iface, dest, mask) = (f.first()?, f.get(1)?, f.get(7)?);
            // Little-endian hex, as the kernel keeps them.
            let dest = u32::from_be(u32::from_str_radix(dest, 16).ok()?);
            let mask = u32::from_be(u32::from_str_radix(mask, 16).ok()?);
            let prefix = u8::try_from(mask.count_ones()).ok()?;
            if prefix == 0 {
                return None;
            }
            Some((
                (*iface).to_owned(),
                Ipv4Cidr {
                    network: Ipv4Addr::from(dest & mask),
                    prefix,
                },
            ))
        })
        .collect()
}

fn with_what(e: NetError, what: String) -> NetError {
    match e {
        NetError::Netlink { source, .. } => NetError::Netlink { what, source },
        e => e,
    }
}

/// `e` and its sources, for a log line.
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

fn link_index(name: &str) -> Result<u32, NetError> {
    let path = format!("/sys/class/net/{name}/ifindex");
    std::fs::read_to_string(&path)
        .and_then(|s| {
            s.trim()
                .parse()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
        })
        .map_err(|source| NetError::Netlink {
            what: format!("reading {path}"),
            source,
        })
}

// ---- netlink requests (one socket each, in the caller's network namespace) ----

/// Sends one rtnetlink request and waits for its acknowledgement.
fn request(message: RouteNetlinkMessage, flags: u16, what: &str) -> Result<(), NetError> {
    let err = |source: io::Error| NetError::Netlink {
        what: what.to_owned(),
        source,
    };
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(err)?;
    socket.bind_auto().map_err(err)?;
    socket.connect(&SocketAddr::new(0, 0)).map_err(err)?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
    packet.finalize();
    let mut buf = vec![0u8; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(err)?;
    loop {
        let (data, _) = socket.recv_from_full().map_err(err)?;
        if data.is_empty() {
            return Err(err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "no answer from the kernel",
            )));
        }
        let mut offset = 0;
        while offset < data.len() {
            let reply = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&data[offset..])
                .map_err(|e| err(io::Error::new(io::ErrorKind::InvalidData, e.to_string())))?;
            let len = reply.header.length as usize;
            match reply.payload {
                NetlinkPayload::Error(e) => {
                    return match e.code {
                        None => Ok(()),
                        Some(_) => Err(err(e.to_io())),
                    };
                }
                NetlinkPayload::Done(_) => return Ok(()),
                _ => {}
            }
            if len == 0 {
                break;
            }
            offset += len;
        }
    }
}

fn create_bridge(name: &str) -> Result<(), NetError> {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![
        LinkAttribute::IfName(name.to_owned()),
        LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Bridge)]),
    ];
    request(
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("creating bridge {name}"),
    )
}

/// A veth pair: `host` on the bridge `bridge_index` and up, its peer
/// [`SANDBOX_IFACE`] in the network namespace of `pid` (down; the jailer
/// brings it up with its address).
fn create_veth(host: &str, bridge_index: u32, pid: u32) -> Result<(), NetError> {
    let mut peer = LinkMessage::default();
    peer.attributes = vec![
        LinkAttribute::IfName(SANDBOX_IFACE.to_owned()),
        LinkAttribute::NetNsPid(pid),
    ];
    let mut msg = LinkMessage::default();
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    msg.attributes = vec![
        LinkAttribute::IfName(host.to_owned()),
        LinkAttribute::Controller(bridge_index),
        LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Veth),
            LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer))),
        ]),
    ];
    request(
        RouteNetlinkMessage::NewLink(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        "creating a veth pair",
    )
}

fn delete_link(name: &str) -> Result<(), NetError> {
    let mut msg = LinkMessage::default();
    msg.attributes = vec![LinkAttribute::IfName(name.to_owned())];
    request(
        RouteNetlinkMessage::DelLink(msg),
        0,
        &format!("removing {name}"),
    )
}

/// Sets `IFF_UP` on link `index`.
pub(crate) fn set_up(index: u32) -> Result<(), NetError> {
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = LinkFlags::Up;
    msg.header.change_mask = LinkFlags::Up;
    request(RouteNetlinkMessage::SetLink(msg), 0, "bringing a link up")
}

/// Adds `address/prefix` to link `index`.
pub(crate) fn add_address(index: u32, address: Ipv4Addr, prefix: u8) -> Result<(), NetError> {
    let mut msg = AddressMessage::default();
    msg.header.family = AddressFamily::Inet;
    msg.header.prefix_len = prefix;
    msg.header.scope = AddressScope::Universe;
    msg.header.index = index;
    let broadcast = Ipv4Addr::from(u32::from(address) | (u32::MAX >> prefix));
    msg.attributes = vec![
        AddressAttribute::Local(IpAddr::V4(address)),
        AddressAttribute::Address(IpAddr::V4(address)),
        AddressAttribute::Broadcast(broadcast),
    ];
    request(
        RouteNetlinkMessage::NewAddress(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("adding address {address}/{prefix}"),
    )
}

/// Adds a default route via `gateway` on link `index`.
pub(crate) fn add_default_route(index: u32, gateway: Ipv4Addr) -> Result<(), NetError> {
    let mut msg = RouteMessage::default();
    msg.header.address_family = AddressFamily::Inet;
    msg.header.destination_prefix_length = 0;
    msg.header.table = RouteHeader::RT_TABLE_MAIN;
    msg.header.protocol = RouteProtocol::Boot;
    msg.header.scope = RouteScope::Universe;
    msg.header.kind = RouteType::Unicast;
    msg.attributes = vec![
        RouteAttribute::Gateway(RouteAddress::Inet(gateway)),
        RouteAttribute::Oif(index),
    ];
    request(
        RouteNetlinkMessage::NewRoute(msg),
        NLM_F_CREATE | NLM_F_EXCL,
        &format!("adding a default route via {gateway}"),
    )
}

/// Configures [`SANDBOX_IFACE`] in the caller's network namespace (the
/// jailer's): address, up, default route.
pub(crate) fn configure_sandbox_iface(net: &SandboxNet) -> Result<(), NetError> {
    let index = nix::net::if_::if_nametoindex(SANDBOX_IFACE).map_err(|e| NetError::Netlink {
        what: format!("finding {SANDBOX_IFACE}"),
        source: io::Error::from(e),
    })?;
    add_address(index, net.address, net.prefix)?;
    set_up(index).map_err(|e| with_what(e, format!("bringing {SANDBOX_IFACE} up")))?;
    add_default_route(index, net.gateway)
}

/// `/etc/resolv.conf` for a sandbox with `net` (none: no name server).
pub fn resolv_conf(net: Option<&SandboxNet>) -> String {
    let mut s = String::new();
    match net {
        Some(n) if !n.nameservers.is_empty() => {
            for ns in &n.nameservers {
                s.push_str(&format!("nameserver {ns}\n"));
            }
            s.push_str("options timeout:2 attempts:2\n");
        }
        _ => s.push_str("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n"),
    }
    s
}

/// Whether a link of this name exists (for tests and diagnostics).
pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_parse_and_reject_host_bits_and_tiny_prefixes() {
        let c: Ipv4Cidr = "172.31.250.0/24".parse().expect("valid");
        assert_eq!(c.gateway(), Ipv4Addr::new(172, 31, 250, 1));
        assert_eq!(c.sandbox_addresses(), 253);
        assert_eq!(c.sandbox_address(0), Ipv4Addr::new(172, 31, 250, 2));
        assert_eq!(c.sandbox_address(252), Ipv4Addr::new(172, 31, 250, 254));
        assert_eq!(c.to_string(), "172.31.250.0/24");
        assert!("172.31.250.1/24".parse::<Ipv4Cidr>().is_err());
        assert!("172.31.250.0/31".parse::<Ipv4Cidr>().is_err());
        assert!("172.31.250.0".parse::<Ipv4Cidr>().is_err());
        assert!("fe80::/64".parse::<Ipv4Cidr>().is_err());
        let small: Ipv4Cidr = "10.0.0.0/30".parse().expect("valid");
        assert_eq!(small.sandbox_addresses(), 1);
    }

    #[test]
    fn routes_parse_and_overlaps_are_found() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
            docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n";
        let routes = parse_routes(table);
        assert_eq!(
            routes
                .iter()
                .map(|(i, c)| format!("{i} {c}"))
                .collect::<Vec<_>>(),
            vec!["eth0 192.0.2.0/24", "docker0 172.17.0.0/16"]
        );
        let cidr = |s: &str| s.parse::<Ipv4Cidr>().expect("valid");
        assert!(cidr("172.17.5.0/24").overlaps(&routes[1].1));
        assert!(routes[1].1.overlaps(&cidr("172.17.5.0/24")));
        assert!(!cidr("172.31.250.0/24").overlaps(&routes[1].1));
        assert!(!cidr("192.0.3.0/24").overlaps(&routes[0].1));
        assert!(cidr("10.0.0.0/8").overlaps(&cidr("10.200.0.0/30")));
    }

    #[test]
    fn names_fit_the_kernels_limits_and_differ_per_parent() {
        let a = Names::for_parent("stratus");
        let b = Names::for_parent("stratus-e2e-123-0");
        assert_ne!(a, b);
        assert_eq!(a, Names::for_parent("stratus"));
        for n in [&a, &b] {
            assert!(n.bridge.len() <= 15, "{}", n.bridge);
            // Room for up to 6 hex digits of the sequence number.
            assert!(n.veth_prefix.len() + 6 <= 15, "{}", n.veth_prefix);
        }
    }

    #[test]
    fn addresses_are_handed_out_round_robin_and_come_back() {
        let pool = Arc::new(Mutex::new(AddressPool::new(3)));
        let a = AddressPool::allocate(&pool).expect("free");
        let b = AddressPool::allocate(&pool).expect("free");
        assert_eq!((a.index, b.index), (0, 1));
        drop(a);
        let c = AddressPool::allocate(&pool).expect("free");
        assert_eq!(c.index, 2, "not the one just freed");
        let d = AddressPool::allocate(&pool).expect("free");
        assert_eq!(d.index, 0);
        assert!(AddressPool::allocate(&pool).is_none(), "all three in use");
        drop(b);
        assert_eq!(AddressPool::allocate(&pool).map(|l| l.index), Some(1));
    }

    #[test]
    fn the_ruleset_allows_only_the_listed_host_ports() {
        let names = Names::for_parent("p");
        let cidr: Ipv4Cidr = "172.31.250.0/24".parse().expect("valid");
        let rules = ruleset(
            &names,
            cidr,
            &[
                "127.0.0.1:5432".parse().expect("valid"),
                "172.31.250.1:8080".parse().expect("valid"),
            ],
        );
        let br = &names.bridge;
        assert!(rules.contains(&format!(
            "iifname \"{br}\" ip daddr 172.31.250.1 tcp dport 5432 dnat ip to 127.0.0.1:5432"
        )));
        assert!(rules.contains(&format!(
            "iifname \"{br}\" ip daddr 127.0.0.1 tcp dport 5432 ct status dnat accept"
        )));
        assert!(rules.contains(&format!(
            "iifname \"{br}\" ip daddr 172.31.250.1 tcp dport 8080 accept"
        )));
        assert!(!rules.contains("dnat ip to 172.31.250.1"));
        // The catch-all drop comes after the accepts.
        let drop_at = rules
            .find(&format!("iifname \"{br}\" drop"))
            .expect("input drop");
        assert!(rules.find("dport 8080 accept").expect("accept") < drop_at);
        assert!(rules.contains("ip saddr 172.31.250.0/24 oifname != "));
        assert!(rules.contains(&format!(
            "iifname \"{p}*\" oifname \"{p}*\" drop",
            p = names.veth_prefix
        )));
    }

    #[test]
    fn resolv_conf_keeps_only_reachable_ipv4_servers() {
        let ns = parse_nameservers(
            "# c\nnameserver 127.0.0.53\nnameserver 10.1.2.3\nnameserver ::1\nnameserver 192.0.2.9 # x\nsearch a\n",
        );
        assert_eq!(
            ns,
            vec![Ipv4Addr::new(10, 1, 2, 3), Ipv4Addr::new(192, 0, 2, 9)]
        );
        let net = SandboxNet {
            address: Ipv4Addr::new(172, 31, 250, 2),
            prefix: 24,
            gateway: Ipv4Addr::new(172, 31, 250, 1),
            nameservers: ns,
        };
        assert_eq!(
            resolv_conf(Some(&net)),
            "nameserver 10.1.2.3\nnameserver 192.0.2.9\noptions timeout:2 attempts:2\n"
        );
        assert!(resolv_conf(None).starts_with("nameserver 127.0.0.1\n"));
    }
}
