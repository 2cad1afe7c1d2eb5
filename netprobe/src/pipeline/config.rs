//! `--config FILE` (TOML), reloaded on SIGHUP: the incident window and the
//! filters (ports, addresses, network namespaces, modes). A file that does
//! not parse, has a key netprobe does not know, or names an unknown mode is
//! refused with the reason; on reload the previous configuration stays.
//!
//! ```toml
//! incident_window = 60            # seconds
//! rule_limit = 10000              # netfilter rules per namespace
//! [filter]
//! ports = [443, 8080]             # either port of a flow, or a listener's
//! addresses = ["10.0.0.0/8", "fd00::1"]
//! netns = [4026531840]
//! modes = ["no_listener", "accept_queue_full"]
//! exclude_modes = ["reset_other"]
//! ```
//!
//! Filters apply to records about failures (those with a mode); probe,
//! ready, lost, error and summary records are always written.

use std::{net::IpAddr, path::Path, str::FromStr};

use serde::Deserialize;

use crate::{families::catalogue, pipeline::record::Record};

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub incident_window: Option<u64>,
    /// Netfilter rules a network namespace may hold before netprobe calls
    /// it bloated (default `counters::DEFAULT_RULE_LIMIT`).
    pub rule_limit: Option<u64>,
    #[serde(default)]
    pub filter: Filter,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Filter {
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub addresses: Vec<Cidr>,
    #[serde(default)]
    pub netns: Vec<u64>,
    #[serde(default)]
    pub modes: Vec<String>,
    #[serde(default)]
    pub exclude_modes: Vec<String>,
}

/// An address, or a network in CIDR notation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub net: IpAddr,
    pub bits: u8,
}

impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or a CIDR network"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .parse::<u8>()
                .ok()
                .filter(|&b| b <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { net, bits })
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Cidr, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Cidr {
    pub fn contains(&self, a: IpAddr) -> bool {
        let (net, a, width) = match (self.net, a) {
            (IpAddr::V4(n), IpAddr::V4(a)) => (u32::from(n) as u128, u32::from(a) as u128, 32),
            (IpAddr::V6(n), IpAddr::V6(a)) => (u128::from(n), u128::from(a), 128),
            // An IPv4-mapped IPv6 address matches its IPv4 network.
            (IpAddr::V4(n), IpAddr::V6(a)) => match a.to_ipv4_mapped() {
                Some(a) => (u32::from(n) as u128, u32::from(a) as u128, 32),
                None => return false,
            },
            (IpAddr::V6(_), IpAddr::V4(_)) => return false,
        };
        let shift = width - u32::from(self.bits);
        shift >= width || (net >> shift) == (a >> shift)
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let c: Config = toml::from_str(text).map_err(|e| e.to_string().trim().to_string())?;
        if let Some(w) = c.incident_window {
            if !(1..=86400).contains(&w) {
                return Err(format!("incident_window = {w}: must be 1 to 86400 seconds"));
            }
        }
        for m in c.filter.modes.iter().chain(&c.filter.exclude_modes) {
            if catalogue::by_mode(m).is_none() {
                let known: Vec<&str> = catalogue::entries().map(|e| e.mode.mode).collect();
                return Err(format!(
                    "filter: unknown mode `{}` (modes: {})",
                    m.escape_debug(),
                    known.join(", ")
                ));
            }
        }
        if c.filter.ports.contains(&0) {
            return Err("filter.ports: 0 is not a port".into());
        }
        Ok(c)
    }

    /// Reads and parses `path`; the error names the file.
    pub fn load(path: &Path) -> Result<Config, String> {
        let text =
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let text =
            String::from_utf8(text).map_err(|_| format!("{}: not UTF-8 text", path.display()))?;
        Config::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// One line saying what is in force.
    pub fn describe(&self) -> String {
        let f = &self.filter;
        let mut parts = Vec::new();
        if let Some(w) = self.incident_window {
            parts.push(format!("incident window {w} s"));
        }
        if let Some(l) = self.rule_limit {
            parts.push(format!("rule limit {l}"));
        }
        if !f.ports.is_empty() {
            parts.push(format!("ports {:?}", f.ports));
        }
        if !f.addresses.is_empty() {
            let a: Vec<String> = f
                .addresses
                .iter()
                .map(|c| format!("{}/{}", c.net, c.bits))
                .collect();
            parts.push(format!("addresses [{}]", a.join(", ")));
        }
        if !f.netns.is_empty() {
            parts.push(format!("netns {:?}", f.netns));
        }
        if !f.modes.is_empty() {
            parts.push(format!("modes [{}]", f.modes.join(", ")));
        }
        if !f.exclude_modes.is_empty() {
            parts.push(format!("excluding modes [{}]", f.exclude_modes.join(", ")));
        }
        if parts.is_empty() {
            "no filters".into()
        } else {
            parts.join("; ")
        }
    }
}

impl Filter {
    /// Whether a record is written. Records without a mode always are.
    pub fn admits(&self, r: &Record) -> bool {
        let Some(mode) = r.mode else { return true };
        if self.exclude_modes.iter().any(|m| m == mode) {
            return false;
        }
        if !self.modes.is_empty() && !self.modes.iter().any(|m| m == mode) {
            return false;
        }
        if !self.ports.is_empty() {
            let ports = [r.sport, r.dport, r.port];
            if !ports.iter().flatten().any(|p| self.ports.contains(p)) {
                return false;
            }
        }
        if !self.addresses.is_empty() {
            let addrs = [&r.saddr, &r.daddr, &r.addr];
            let hit = addrs
                .iter()
                .filter_map(|a| a.as_deref()?.parse::<IpAddr>().ok())
                .any(|a| self.addresses.iter().any(|c| c.contains(a)));
            if !hit {
                return false;
            }
        }
        if !self.netns.is_empty() && !r.netns.is_some_and(|n| self.netns.contains(&n)) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let c = Config::parse(
            r#"
incident_window = 30
[filter]
ports = [443, 8080]
addresses = ["10.0.0.0/8", "fd00::1"]
netns = [4026531840]
modes = ["no_listener", "accept_queue_full"]
exclude_modes = ["reset_other"]
"#,
        )
        .unwrap();
        assert_eq!(c.incident_window, Some(30));
        assert_eq!(c.filter.ports, [443, 8080]);
        assert_eq!(c.filter.addresses[1].bits, 128);
        assert!(c.describe().contains("ports [443, 8080]"));
        assert_eq!(Config::parse("").unwrap(), Config::default());
        assert_eq!(Config::default().describe(), "no filters");
    }

    #[test]
    fn bad_files_say_why() {
        for (text, says) in [
            ("incident_window = 0", "1 to 86400"),
            ("incident_window = \"60\"", "invalid type"),
            ("incident_windw = 60", "unknown field"),
            ("[filter]\nmodes = [\"no_such\"]", "unknown mode `no_such`"),
            ("[filter]\nports = [0]", "0 is not a port"),
            ("[filter]\nports = [70000]", "ports"),
            ("[filter]\naddresses = [\"10.0.0.0/33\"]", "0 to 32"),
            ("[filter]\naddresses = [\"x\"]", "not an address"),
            ("[filter", "filter"),
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(e.contains(says), "{text:?}: {e}");
        }
        let e = Config::load(Path::new("/nonexistent/netprobe.toml")).unwrap_err();
        assert!(e.contains("cannot read /nonexistent/netprobe.toml"), "{e}");
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(c.contains("::ffff:10.1.0.9".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6: Cidr = "fd00::/8".parse().unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
    }

    #[test]
    fn filters_failures_and_keeps_housekeeping() {
        let f = Config::parse(
            "[filter]\nports = [443]\naddresses = [\"10.0.0.0/8\"]\nexclude_modes = [\"reset_other\"]",
        )
        .unwrap()
        .filter;
        let mut r = Record::new("drop", "x".into());
        r.mode = Some("no_listener");
        r.saddr = Some("10.0.0.1".into());
        r.daddr = Some("192.0.2.1".into());
        r.sport = Some(40000);
        r.dport = Some(443);
        assert!(f.admits(&r));
        r.dport = Some(80);
        assert!(!f.admits(&r));
        r.dport = Some(443);
        r.saddr = Some("192.0.2.9".into());
        assert!(!f.admits(&r));
        r.saddr = Some("10.0.0.1".into());
        r.mode = Some("reset_other");
        assert!(!f.admits(&r));
        assert!(f.admits(&Record::lost(1, "x")));
        assert!(f.admits(&Record::probe("p", "h", Ok(None))));
        let mut l = Record::new("listen_overflow", "x".into());
        l.mode = Some("accept_queue_full");
        l.addr = Some("10.9.9.9".into());
        l.port = Some(443);
        assert!(f.admits(&l));
    }
}
