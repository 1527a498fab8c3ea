//! The SSRF guard: which URLs and addresses the page fetcher may reach.
//!
//! Search results name arbitrary URLs, so a page fetch must never become a request into the
//! server's own network: only http(s), and only globally routable addresses. IPv4 is checked
//! against the special-purpose ranges; IPv6 must be global unicast (2000::/3) outside its
//! special ranges, and the IPv6 forms that embed an IPv4 address (mapped, NAT64, 6to4) are
//! judged by that address.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::{Host, Url};

/// Why the guard refused a URL or an address (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
}

impl Refusal {
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "refused: {}", self.reason)
    }
}

impl std::error::Error for Refusal {}

/// Checks what can be checked before any lookup: the scheme, and the host when it is an
/// address literal (which no resolver sees). Names are checked when they resolve.
pub fn check_url(url: &Url, allow_private: bool) -> Result<(), Refusal> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Refusal::new(format!(
            "scheme `{}` is not http or https",
            url.scheme()
        )));
    }
    match url.host() {
        None => Err(Refusal::new("the URL has no host")),
        Some(_) if allow_private => Ok(()),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip)),
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip)),
        Some(Host::Domain(_)) => Ok(()),
    }
}

/// Refuses an address that is not publicly routable, saying which range it is in.
pub fn check_ip(ip: IpAddr) -> Result<(), Refusal> {
    match ip {
        IpAddr::V4(v4) => check_v4(v4, &ip),
        IpAddr::V6(v6) => check_v6(v6),
    }
}

fn refuse(ip: &IpAddr, what: &str) -> Result<(), Refusal> {
    Err(Refusal::new(format!("{ip} is {what}")))
}

/// Cloud instance-metadata services, named apart from the ranges they sit in.
fn is_metadata(ip: IpAddr) -> bool {
    const AWS_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254);
    match ip {
        IpAddr::V4(v4) => {
            v4 == Ipv4Addr::new(169, 254, 169, 254)
                || v4 == Ipv4Addr::new(169, 254, 170, 2)
                || v4 == Ipv4Addr::new(100, 100, 100, 200)
        }
        IpAddr::V6(v6) => v6 == AWS_V6,
    }
}

/// `shown` is the address as the URL or the resolver gave it (an IPv6 form that embeds this
/// IPv4 address is reported as itself).
fn check_v4(ip: Ipv4Addr, shown: &IpAddr) -> Result<(), Refusal> {
    if is_metadata(IpAddr::V4(ip)) {
        return refuse(shown, "a cloud metadata address");
    }
    let [a, b, c, _] = ip.octets();
    match (a, b, c) {
        (0, _, _) => refuse(shown, "in 0.0.0.0/8 (this network)"),
        (10, _, _) => refuse(shown, "a private address (10.0.0.0/8)"),
        (100, 64..=127, _) => refuse(shown, "a shared CGNAT address (100.64.0.0/10)"),
        (127, _, _) => refuse(shown, "a loopback address"),
        (169, 254, _) => refuse(shown, "a link-local address"),
        (172, 16..=31, _) => refuse(shown, "a private address (172.16.0.0/12)"),
        (192, 0, 0) => refuse(shown, "an IETF protocol address (192.0.0.0/24)"),
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => refuse(shown, "a documentation address"),
        (192, 88, 99) => refuse(shown, "a 6to4 relay address"),
        (192, 168, _) => refuse(shown, "a private address (192.168.0.0/16)"),
        (198, 18..=19, _) => refuse(shown, "a benchmarking address (198.18.0.0/15)"),
        (224..=239, _, _) => refuse(shown, "a multicast address"),
        (240..=255, _, _) => refuse(shown, "a reserved or broadcast address"),
        _ => Ok(()),
    }
}

fn check_v6(ip: Ipv6Addr) -> Result<(), Refusal> {
    let shown = IpAddr::V6(ip);
    if is_metadata(shown) {
        return refuse(&shown, "a cloud metadata address");
    }
    if ip.is_unspecified() {
        return refuse(&shown, "the unspecified address");
    }
    if ip.is_loopback() {
        return refuse(&shown, "a loopback address");
    }
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket.
    if s[..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return check_v4(embedded(s[6], s[7]), &shown);
    }
    // NAT64's well-known prefix forwards to the embedded IPv4 address.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return check_v4(embedded(s[6], s[7]), &shown);
    }
    // 6to4 embeds the IPv4 address of its gateway.
    if s[0] == 0x2002 {
        return check_v4(embedded(s[1], s[2]), &shown);
    }
    match s[0] {
        0xfc00..=0xfdff => return refuse(&shown, "a unique-local address (fc00::/7)"),
        0xfe80..=0xfebf => return refuse(&shown, "a link-local address (fe80::/10)"),
        0xfec0..=0xfeff => return refuse(&shown, "a site-local address (fec0::/10)"),
        0xff00..=0xffff => return refuse(&shown, "a multicast address"),
        _ => {}
    }
    if s[0] == 0x2001 && s[1] == 0x0db8 {
        return refuse(&shown, "a documentation address (2001:db8::/32)");
    }
    // 2001::/23 holds protocol assignments, among them Teredo (2001::/32), which tunnels to
    // an obfuscated IPv4 address.
    if s[0] == 0x2001 && s[1] < 0x0200 {
        return refuse(&shown, "an IETF protocol address (2001::/23)");
    }
    if s[0] & 0xe000 != 0x2000 {
        return refuse(&shown, "not a global unicast address (outside 2000::/3)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(s: &str) -> String {
        let ip: IpAddr = s.parse().unwrap();
        check_ip(ip).unwrap_err().reason
    }

    #[test]
    fn private_and_special_ipv4_ranges_are_refused() {
        for (ip, what) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "this network"),
            ("10.0.0.1", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "metadata"),
            ("100.100.100.200", "metadata"),
            ("100.64.0.1", "CGNAT"),
            ("100.127.255.254", "CGNAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.7", "documentation"),
            ("198.18.0.1", "benchmarking"),
        ] {
            let reason = refused(ip);
            assert!(reason.contains(what), "{ip}: {reason}");
            assert!(reason.starts_with(ip), "{ip}: {reason}");
        }
    }

    #[test]
    fn private_and_special_ipv6_ranges_are_refused() {
        for (ip, what) in [
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fe80::1", "link-local"),
            ("fd00::1", "unique-local"),
            ("fc12::1", "unique-local"),
            ("fd00:ec2::254", "metadata"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "metadata"),
            ("64:ff9b::a00:1", "private"),
            ("2002:c0a8:0101::1", "private"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "IETF"),
            ("::127.0.0.1", "global unicast"),
            ("100::1", "global unicast"),
        ] {
            let reason = refused(ip);
            assert!(reason.contains(what), "{ip}: {reason}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for ip in [
            "93.184.215.14",
            "1.1.1.1",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.0.1",
            "172.32.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            let parsed: IpAddr = ip.parse().unwrap();
            assert_eq!(check_ip(parsed), Ok(()), "{ip}");
        }
    }

    #[test]
    fn only_http_and_https_urls_pass() {
        for url in [
            "ftp://example.com/x",
            "file:///etc/passwd",
            "gopher://example.com",
            "data:text/html,hi",
        ] {
            let parsed = Url::parse(url).unwrap();
            let e = check_url(&parsed, true).unwrap_err();
            assert!(
                e.reason.contains("not http or https") || e.reason.contains("no host"),
                "{url}: {e}"
            );
        }
        let ok = Url::parse("https://example.com/a").unwrap();
        assert_eq!(check_url(&ok, false), Ok(()));
    }

    #[test]
    fn address_literals_are_checked_unless_private_is_allowed() {
        let url = Url::parse("http://[::ffff:7f00:1]:8080/").unwrap();
        assert!(check_url(&url, false).is_err());
        assert_eq!(check_url(&url, true), Ok(()));
        let url = Url::parse("http://2130706433/").unwrap();
        // The URL parser reads the decimal form as 127.0.0.1.
        assert!(
            check_url(&url, false)
                .unwrap_err()
                .reason
                .contains("loopback")
        );
    }
}
