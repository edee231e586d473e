//! The network settings as the appliance sees them, for the setup page. Read-only: the image
//! (or the hypervisor's guest customization) configures the network; the appliance reports it
//! so the person at the setup page can check what agents will connect to.
//!
//! Everything comes from `/proc`, `/sys` and `/etc/resolv.conf`; a file that cannot be read
//! leaves its line out rather than failing the page.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// One line per fact: host name, each interface (state, MAC, addresses), the default gateway,
/// the DNS servers and the appliance's own listeners.
pub fn describe(listen_management: &str, listen_data: &str) -> Vec<String> {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let mut lines = Vec::new();
    let hostname = read("/proc/sys/kernel/hostname");
    if !hostname.trim().is_empty() {
        lines.push(format!("host name: {}", hostname.trim()));
    }
    let routes = parse_routes(&read("/proc/net/route"));
    let v4 = parse_fib_trie_local(&read("/proc/net/fib_trie"));
    let v6 = parse_if_inet6(&read("/proc/net/if_inet6"));
    for name in interface_names(Path::new("/sys/class/net")) {
        if name == "lo" {
            continue;
        }
        let sys = |leaf: &str| read(&format!("/sys/class/net/{name}/{leaf}"));
        let mut parts = vec![sys("operstate").trim().to_string()];
        let mac = sys("address");
        if !mac.trim().is_empty() {
            parts.push(format!("MAC {}", mac.trim()));
        }
        parts.extend(
            ipv4_of(&name, &v4, &routes)
                .into_iter()
                .map(|a| format!("IPv4 {a}")),
        );
        parts.extend(
            v6.iter()
                .filter(|(iface, _, _)| *iface == name)
                .map(|(_, addr, prefix)| format!("IPv6 {addr}/{prefix}")),
        );
        parts.retain(|p| !p.is_empty());
        lines.push(format!("interface {name}: {}", parts.join(", ")));
    }
    for route in routes.iter().filter(|r| r.dest == 0 && r.mask == 0) {
        lines.push(format!(
            "default gateway: {} ({})",
            Ipv4Addr::from(route.gateway),
            route.iface
        ));
    }
    let dns = parse_nameservers(&read("/etc/resolv.conf"));
    if !dns.is_empty() {
        lines.push(format!("DNS servers: {}", dns.join(", ")));
    }
    lines.push(format!(
        "management listener (web, API): https://{listen_management}"
    ));
    lines.push(format!("agent data listener: {listen_data}"));
    lines
}

fn interface_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// One row of `/proc/net/route`, addresses as host-order numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route {
    iface: String,
    dest: u32,
    gateway: u32,
    mask: u32,
}

/// `/proc/net/route` prints each address as the hex of its in-memory (network order) bytes
/// read as a native integer.
fn route_addr(hex: &str) -> Option<u32> {
    let raw = u32::from_str_radix(hex, 16).ok()?;
    Some(u32::from(Ipv4Addr::from(raw.to_ne_bytes())))
}

fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(Route {
                iface: f.first()?.to_string(),
                dest: route_addr(f.get(1)?)?,
                gateway: route_addr(f.get(2)?)?,
                mask: route_addr(f.get(7)?)?,
            })
        })
        .collect()
}

/// The appliance's own IPv4 addresses: the `/32 host LOCAL` leaves of `/proc/net/fib_trie`.
fn parse_fib_trie_local(text: &str) -> Vec<Ipv4Addr> {
    let mut found = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let line = line.trim_start_matches([' ', '|', '+', '-']).trim();
        if let Ok(addr) = line.parse::<Ipv4Addr>() {
            last = Some(addr);
        } else if line.starts_with("/32 host LOCAL") {
            if let Some(addr) = last.filter(|a| !a.is_loopback() && !found.contains(a)) {
                found.push(addr);
            }
        }
    }
    found
}

/// `addr/prefix` for each local IPv4 address inside a directly connected route of `iface`.
fn ipv4_of(iface: &str, local: &[Ipv4Addr], routes: &[Route]) -> Vec<String> {
    let mut out = Vec::new();
    for addr in local {
        let n = u32::from(*addr);
        let on_link = routes
            .iter()
            .find(|r| r.iface == iface && r.gateway == 0 && r.mask != 0 && n & r.mask == r.dest);
        if let Some(route) = on_link {
            out.push(format!("{addr}/{}", route.mask.count_ones()));
        }
    }
    out
}

/// `(interface, address, prefix length)` from `/proc/net/if_inet6`.
fn parse_if_inet6(text: &str) -> Vec<(String, Ipv6Addr, u32)> {
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let raw = u128::from_str_radix(f.first()?, 16).ok()?;
            let prefix = u32::from_str_radix(f.get(2)?, 16).ok()?;
            let iface = f.get(5)?.to_string();
            Some((iface, Ipv6Addr::from(raw), prefix))
        })
        .collect()
}

fn parse_nameservers(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("nameserver"))
        .map(|rest| rest.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
eth0\t00000000\t0102000A\t0003\t0\t0\t100\t00000000\t0\t0\t0
eth0\t0002000A\t00000000\t0001\t0\t0\t100\t00FFFFFF\t0\t0\t0
garbage line
";

    const FIB: &str = "Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 10.0.2.0/24 2 0 2
        |-- 10.0.2.0
           /24 link UNICAST
        |-- 10.0.2.15
           /32 host LOCAL
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
        |-- 10.0.2.15
           /32 host LOCAL
";

    #[test]
    fn routes_and_local_addresses_combine_per_interface() {
        let routes = parse_routes(ROUTE);
        assert_eq!(routes.len(), 2, "{routes:?}");
        assert_eq!(
            Ipv4Addr::from(routes[0].gateway),
            Ipv4Addr::new(10, 0, 2, 1)
        );
        assert_eq!(Ipv4Addr::from(routes[1].dest), Ipv4Addr::new(10, 0, 2, 0));
        assert_eq!(routes[1].mask.count_ones(), 24);
        let local = parse_fib_trie_local(FIB);
        assert_eq!(local, vec![Ipv4Addr::new(10, 0, 2, 15)]);
        assert_eq!(ipv4_of("eth0", &local, &routes), vec!["10.0.2.15/24"]);
        assert!(ipv4_of("eth1", &local, &routes).is_empty());
    }

    #[test]
    fn ipv6_and_dns_lines_parse_and_garbage_is_skipped() {
        let v6 =
            parse_if_inet6("fe800000000000000000000000000001 02 40 20 80 eth0\nnot hex at all\n");
        assert_eq!(
            v6,
            vec![("eth0".to_string(), "fe80::1".parse().unwrap(), 64)]
        );
        let dns = parse_nameservers("# comment\nnameserver 1.1.1.1\nsearch x\nnameserver  ::1 \n");
        assert_eq!(dns, ["1.1.1.1", "::1"]);
        assert!(parse_routes("").is_empty());
        assert!(parse_fib_trie_local("|-- 300.1.1.1\n /32 host LOCAL").is_empty());
    }

    #[test]
    fn description_names_the_listeners() {
        let lines = describe("127.0.0.1:8443", "0.0.0.0:9443");
        assert!(lines.contains(&"management listener (web, API): https://127.0.0.1:8443".into()));
        assert!(lines.contains(&"agent data listener: 0.0.0.0:9443".into()));
    }
}
