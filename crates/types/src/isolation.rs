//! Isolation tiers: how strongly a sandbox is separated from the host.
//!
//! `process` (Linux namespaces, cgroups, seccomp, a uid per sandbox) is the
//! default; `gvisor` puts gVisor's user-space kernel between the function
//! and the host's kernel. The effective tier of a sandbox is the strongest
//! of the server's default, its account's setting and its function's
//! request ([`ISOLATION_ENV`]): a function may ask for more isolation than
//! its operator set, never for less.

use std::collections::BTreeMap;
use std::fmt;

/// The environment variable a function sets to ask for a tier
/// (`process` or `gvisor`). An environment variable rather than a new
/// request field: every Lambda client (boto3 validates request bodies
/// against its model and refuses unknown fields) can send it, and AWS
/// accepts and ignores it, so one deployment works on both.
pub const ISOLATION_ENV: &str = "STRATUS_ISOLATION";

/// An isolation tier, weakest first (the order is the strength).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Isolation {
    /// The hardened process sandbox.
    Process,
    /// gVisor (`runsc`): a kernel boundary.
    Gvisor,
}

impl Isolation {
    /// Every tier, weakest first.
    pub const ALL: [Isolation; 2] = [Isolation::Process, Isolation::Gvisor];

    /// The name used in configuration and in [`ISOLATION_ENV`].
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::Process => "process",
            Isolation::Gvisor => "gvisor",
        }
    }

    /// Parses `process` or `gvisor`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(Isolation::Process),
            "gvisor" => Ok(Isolation::Gvisor),
            other => Err(format!(
                "{other:?} is not an isolation tier (expected \"process\" or \"gvisor\")"
            )),
        }
    }

    /// The tier a function's environment asks for, if any (an unknown value
    /// asks for nothing; the front end refuses it before it is stored).
    pub fn requested_by(env: &BTreeMap<String, String>) -> Option<Self> {
        env.get(ISOLATION_ENV).and_then(|v| Self::parse(v).ok())
    }
}

impl fmt::Display for Isolation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Isolation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_parse_print_and_order_by_strength() {
        for t in Isolation::ALL {
            assert_eq!(Isolation::parse(t.as_str()), Ok(t));
            assert_eq!(t.to_string(), t.as_str());
        }
        assert!(Isolation::parse("GVISOR").is_err());
        assert!(Isolation::Process < Isolation::Gvisor);
        let env = BTreeMap::from([(ISOLATION_ENV.to_owned(), "gvisor".to_owned())]);
        assert_eq!(Isolation::requested_by(&env), Some(Isolation::Gvisor));
        assert_eq!(Isolation::requested_by(&BTreeMap::new()), None);
    }
}
