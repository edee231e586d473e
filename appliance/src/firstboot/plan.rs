//! Turning OVF properties into what first boot applies, value by value.
//!
//! A bad network value must never leave the appliance unreachable: the whole network part then
//! falls back to DHCP (the image's 90-dhcp.network) with the reason recorded, while the values that
//! do not decide reachability (NTP, the admin password) still apply.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

pub const KEY_HOSTNAME: &str = "ferry.hostname";
pub const KEY_IP: &str = "ferry.ip";
pub const KEY_GATEWAY: &str = "ferry.gateway";
pub const KEY_DNS: &str = "ferry.dns";
pub const KEY_NTP: &str = "ferry.ntp";
pub const KEY_ADMIN_PASSWORD: &str = "ferry.admin_password";

/// The port agents reach the data listener on (the image's `listen_data`).
pub const AGENT_DATA_PORT: u16 = 9443;

/// How the appliance's interfaces get their address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "lowercase")]
pub enum Network {
    /// The image's DHCP profile. `reason` says why no static address applies.
    Dhcp { reason: String },
    Static {
        address: IpAddr,
        prefix: u8,
        gateway: Option<IpAddr>,
        dns: Vec<IpAddr>,
    },
}

/// Everything first boot applies. Holds the admin password, so it is never logged or serialised
/// whole; [`Plan::admin_password`] is skipped by serde.
#[derive(Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Where the OVF environment came from ("none" without one).
    pub source: String,
    pub hostname: Option<String>,
    pub network: Network,
    pub ntp: Vec<String>,
    #[serde(skip)]
    pub admin_password: Option<String>,
    /// Values that were given but not applied, each with why.
    pub ignored: Vec<String>,
}

impl std::fmt::Debug for Plan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plan")
            .field("source", &self.source)
            .field("hostname", &self.hostname)
            .field("network", &self.network)
            .field("ntp", &self.ntp)
            .field(
                "admin_password",
                &self.admin_password.as_ref().map(|_| "<set>"),
            )
            .field("ignored", &self.ignored)
            .finish()
    }
}

impl Plan {
    /// No OVF environment: DHCP and the web setup.
    pub fn without_environment() -> Plan {
        Plan {
            source: "none".into(),
            hostname: None,
            network: Network::Dhcp {
                reason: "no OVF environment".into(),
            },
            ntp: Vec::new(),
            admin_password: None,
            ignored: Vec::new(),
        }
    }

    /// Validates each property; never fails, because every bad value has a safe fallback.
    pub fn from_properties(source: &str, props: &BTreeMap<String, String>) -> Plan {
        let get = |key: &str| props.get(key).map(|v| v.trim()).filter(|v| !v.is_empty());
        let mut ignored = Vec::new();

        let hostname = get(KEY_HOSTNAME).map(|h| h.trim_end_matches('.').to_ascii_lowercase());
        let network = match static_network(&get) {
            Ok(network) => network,
            Err(reason) => Network::Dhcp { reason },
        };
        // A bad host name does not cost a good address: it is skipped and the image's own stays.
        let hostname = match hostname {
            Some(h) if !valid_hostname(&h) => {
                ignored.push(format!(
                    "{KEY_HOSTNAME}: {h:?} is not an RFC 1123 host name"
                ));
                None
            }
            other => other,
        };

        let mut ntp = Vec::new();
        if let Some(list) = get(KEY_NTP) {
            for server in split_list(list) {
                if server.parse::<IpAddr>().is_ok() || valid_hostname(server) {
                    ntp.push(server.to_string());
                } else {
                    ignored.push(format!(
                        "{KEY_NTP}: {server:?} is not an address or host name"
                    ));
                }
            }
        }

        let admin_password = match props.get(KEY_ADMIN_PASSWORD).map(|p| p.trim()) {
            Some("") | None => None,
            Some(p) if p.contains(['\n', '\r', '\0']) => {
                ignored.push(format!(
                    "{KEY_ADMIN_PASSWORD}: contains a line break or NUL"
                ));
                None
            }
            Some(p) => Some(p.to_string()),
        };

        Plan {
            source: source.to_string(),
            hostname,
            network,
            ntp,
            admin_password,
            ignored,
        }
    }

    /// `agent_data_address` agents are told: the static address, else none (the daemon's default).
    pub fn agent_data_address(&self) -> Option<String> {
        match &self.network {
            Network::Static { address, .. } => {
                Some(std::net::SocketAddr::new(*address, AGENT_DATA_PORT).to_string())
            }
            Network::Dhcp { .. } => None,
        }
    }
}

fn static_network<'a>(get: &impl Fn(&str) -> Option<&'a str>) -> Result<Network, String> {
    let Some(cidr) = get(KEY_IP) else {
        return Err(format!("{KEY_IP} is empty"));
    };
    let (address, prefix) = parse_cidr(cidr).map_err(|e| format!("{KEY_IP}: {e}"))?;
    let gateway = match get(KEY_GATEWAY) {
        None => None,
        Some(text) => {
            let gateway: IpAddr = text
                .parse()
                .map_err(|_| format!("{KEY_GATEWAY}: {text:?} is not an IP address"))?;
            if !same_subnet(address, gateway, prefix) || gateway == address {
                return Err(format!(
                    "{KEY_GATEWAY}: {gateway} is not another address in {address}/{prefix}"
                ));
            }
            Some(gateway)
        }
    };
    let mut dns = Vec::new();
    if let Some(list) = get(KEY_DNS) {
        for server in split_list(list) {
            dns.push(
                server
                    .parse()
                    .map_err(|_| format!("{KEY_DNS}: {server:?} is not an IP address"))?,
            );
        }
    }
    Ok(Network::Static {
        address,
        prefix,
        gateway,
        dns,
    })
}

fn split_list(list: &str) -> impl Iterator<Item = &str> {
    list.split([',', ' '])
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// `10.0.0.5/24`; the prefix is required, since guessing a mask is how appliances become unreachable.
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (ip, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} has no /prefix"))?;
    let address: IpAddr = ip
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    let prefix: u8 = prefix
        .parse()
        .ok()
        .filter(|p| (1..=max).contains(p))
        .ok_or_else(|| format!("prefix {prefix:?} is not in 1..={max}"))?;
    if address.is_unspecified() || address.is_multicast() || address.is_loopback() {
        return Err(format!("{address} cannot be a host address"));
    }
    if let IpAddr::V4(v4) = address {
        if prefix <= 30 {
            let host_bits = u32::from(v4) & !mask_v4(prefix);
            if host_bits == 0 || host_bits == !mask_v4(prefix) {
                return Err(format!(
                    "{address} is the network or broadcast address of /{prefix}"
                ));
            }
        }
    }
    Ok((address, prefix))
}

fn mask_v4(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn mask_v6(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

fn same_subnet(a: IpAddr, b: IpAddr, prefix: u8) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u32::from(a) ^ u32::from(b)) & mask_v4(prefix) == 0,
        (IpAddr::V6(a), IpAddr::V6(b)) => (u128::from(a) ^ u128::from(b)) & mask_v6(prefix) == 0,
        _ => false,
    }
}

/// RFC 1123: dot-separated labels of 1-63 letters, digits and inner hyphens, 253 bytes at most.
pub fn valid_hostname(name: &str) -> bool {
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        // An all-numeric name would read as an IPv4 address.
        && !name.split('.').all(|l| l.bytes().all(|b| b.is_ascii_digit()))
}
