//! Where tenant webhooks may be sent: `https` URLs whose every resolved address is public.
//! Private, loopback, link-local (the instance metadata service at 169.254.169.254 included),
//! unique-local (AWS's IPv6 metadata at fd00:ec2::254 included), multicast, reserved and
//! documentation ranges are refused, in IPv4, IPv6 and IPv4 embedded in IPv6 (mapped,
//! compatible, NAT64, 6to4). The check runs when an endpoint is saved (a clear `400`) and again
//! inside the delivery client's resolver ([`GuardedResolver`]), so the address a delivery
//! connects to is the one that was checked: a name re-pointed to an internal address after the
//! endpoint was saved (DNS rebinding) is refused at connection time.
//!
//! `make dev` and the tests admit loopback (and plain `http` to it) only when told to
//! ([`UrlPolicy::allow_loopback`], `WEBHOOK_ALLOW_LOOPBACK`): never the production default.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::Url;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("the URL is not a valid absolute URL")]
    Invalid,
    #[error("webhook URLs must use https")]
    NotHttps,
    #[error("webhook URLs may not carry credentials")]
    Credentials,
    #[error("the host does not resolve")]
    Unresolvable,
    #[error("the host resolves to a private, loopback, link-local or reserved address")]
    Forbidden,
}

/// What the guard admits beyond public `https` endpoints.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UrlPolicy {
    /// Loopback addresses (and `http` to them): local stacks and tests only.
    pub allow_loopback: bool,
}

impl UrlPolicy {
    /// Whether a delivery may connect to `ip`.
    pub fn admits(&self, ip: IpAddr) -> bool {
        if self.allow_loopback && canonical(ip).is_loopback() {
            return true;
        }
        is_public(ip)
    }
}

/// The address an IPv6 address stands for when it embeds an IPv4 one.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => embedded_v4(v6).map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated but routable by some stacks)
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _]
            if v6 != Ipv6Addr::UNSPECIFIED && v6 != Ipv6Addr::LOCALHOST =>
        {
            Some(tail)
        }
        // 64:ff9b::a.b.c.d (NAT64)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new((hi >> 8) as u8, hi as u8, (lo >> 8) as u8, lo as u8)),
        _ => None,
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT (100.64/10)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || a >= 240) // reserved
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7 (fd00:ec2::254 is EC2's metadata)
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local, deprecated
        || (s[0] == 0x2001 && s[1] == 0xdb8) // documentation
        || (s[0] == 0x100 && s[1..4] == [0, 0, 0])) // discard-only 100::/64
}

/// A syntactically acceptable webhook URL: absolute, `https` (or `http` to a loopback
/// literal or `localhost` when the policy admits loopback), no credentials, and — when the
/// host is an IP literal — an admitted address.
pub fn check_url(raw: &str, policy: UrlPolicy) -> Result<Url, UrlRefused> {
    let url = Url::parse(raw).map_err(|_| UrlRefused::Invalid)?;
    let host = url.host_str().ok_or(UrlRefused::Invalid)?.to_owned();
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::Credentials);
    }
    let literal = literal_ip(&host);
    match url.scheme() {
        "https" => {}
        "http"
            if policy.allow_loopback
                && (host == "localhost" || literal.is_some_and(|ip| canonical(ip).is_loopback())) => {}
        _ => return Err(UrlRefused::NotHttps),
    }
    if let Some(ip) = literal
        && !policy.admits(ip)
    {
        return Err(UrlRefused::Forbidden);
    }
    Ok(url)
}

/// The IP address a URL host names literally (`[::1]` included).
fn literal_ip(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[').trim_end_matches(']').parse().ok()
}

/// Longest wait for a name to resolve.
const LOOKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Name resolution, injectable so tests can make a name resolve to an internal address.
pub trait Lookup: Send + Sync {
    fn lookup(&self, host: &str, port: u16) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>>;
}

/// The system resolver.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemLookup;

impl Lookup for SystemLookup {
    fn lookup(&self, host: &str, port: u16) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
        let target = format!("{host}:{port}");
        Box::pin(async move { Ok(tokio::net::lookup_host(target).await?.collect()) })
    }
}

/// The addresses of `host`, all of them admitted, or why not. A name with one forbidden address
/// among public ones is refused: which one a connection would use is not ours to choose.
pub async fn resolve_admitted(
    lookup: &dyn Lookup,
    host: &str,
    port: u16,
    policy: UrlPolicy,
) -> Result<Vec<SocketAddr>, UrlRefused> {
    if let Some(ip) = literal_ip(host) {
        return if policy.admits(ip) {
            Ok(vec![SocketAddr::new(ip, port)])
        } else {
            Err(UrlRefused::Forbidden)
        };
    }
    let addrs = tokio::time::timeout(LOOKUP_TIMEOUT, lookup.lookup(host, port))
        .await
        .map_err(|_| UrlRefused::Unresolvable)?
        .map_err(|_| UrlRefused::Unresolvable)?;
    if addrs.is_empty() {
        return Err(UrlRefused::Unresolvable);
    }
    if addrs.iter().any(|a| !policy.admits(a.ip())) {
        return Err(UrlRefused::Forbidden);
    }
    Ok(addrs)
}

/// The full check of an endpoint URL when it is saved: syntax, scheme, and resolution.
pub async fn check_endpoint(raw: &str, lookup: &dyn Lookup, policy: UrlPolicy) -> Result<Url, UrlRefused> {
    let url = check_url(raw, policy)?;
    let host = url.host_str().ok_or(UrlRefused::Invalid)?;
    let port = url.port_or_known_default().ok_or(UrlRefused::Invalid)?;
    resolve_admitted(lookup, host, port, policy).await?;
    Ok(url)
}

/// The delivery client's resolver: resolves, refuses forbidden addresses, and hands the client
/// exactly the addresses it checked (the connection is pinned to them).
#[derive(Clone)]
pub struct GuardedResolver {
    lookup: Arc<dyn Lookup>,
    policy: UrlPolicy,
}

impl GuardedResolver {
    pub fn new(lookup: Arc<dyn Lookup>, policy: UrlPolicy) -> Self {
        GuardedResolver { lookup, policy }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let (lookup, policy, host) = (self.lookup.clone(), self.policy, name.as_str().to_owned());
        Box::pin(async move {
            // Port 0: the client substitutes the URL's port.
            let addrs = resolve_admitted(lookup.as_ref(), &host, 0, policy).await?;
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct FakeDns;
    impl Lookup for FakeDns {
        fn lookup(
            &self,
            host: &str,
            port: u16,
        ) -> futures::future::BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
            let ips: Vec<IpAddr> = match host {
                "internal.example" => vec!["10.0.0.1".parse().unwrap()],
                "mixed.example" => vec!["93.184.216.34".parse().unwrap(), "192.168.1.1".parse().unwrap()],
                "public.example" => vec!["93.184.216.34".parse().unwrap(), "2606:2800:220:1::".parse().unwrap()],
                _ => vec![],
            };
            Box::pin(async move { Ok(ips.into_iter().map(|ip| SocketAddr::new(ip, port)).collect()) })
        }
    }

    const STRICT: UrlPolicy = UrlPolicy { allow_loopback: false };
    const LOCAL: UrlPolicy = UrlPolicy { allow_loopback: true };

    #[test]
    fn classifies_addresses() {
        for bad in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.1",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::10.0.0.1",
            "2002:0a00:0001::1",
            "2001:db8::1",
        ] {
            assert!(!is_public(bad.parse().unwrap()), "{bad} must be refused");
        }
        for good in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:2800:220:1::",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert!(is_public(good.parse().unwrap()), "{good} is public");
        }
    }

    #[test]
    fn urls_must_be_https_without_credentials_and_literals_must_be_public() {
        assert!(check_url("https://hooks.example.com/x", STRICT).is_ok());
        assert_eq!(
            check_url("http://hooks.example.com/x", STRICT),
            Err(UrlRefused::NotHttps)
        );
        assert_eq!(
            check_url("ftp://hooks.example.com/x", STRICT),
            Err(UrlRefused::NotHttps)
        );
        assert_eq!(check_url("not a url", STRICT), Err(UrlRefused::Invalid));
        assert_eq!(
            check_url("https://u:p@hooks.example.com/", STRICT),
            Err(UrlRefused::Credentials)
        );
        for forbidden in [
            "https://127.0.0.1/",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/",
            "https://[::ffff:127.0.0.1]/",
            "https://10.0.0.1:8443/",
            "https://[fd00:ec2::254]/",
        ] {
            assert_eq!(check_url(forbidden, STRICT), Err(UrlRefused::Forbidden), "{forbidden}");
        }
    }

    #[test]
    fn loopback_only_when_told_and_never_other_private_ranges() {
        assert!(check_url("http://127.0.0.1:8080/hook", LOCAL).is_ok());
        assert!(check_url("https://[::1]:8443/hook", LOCAL).is_ok());
        assert!(check_url("http://localhost:8080/hook", LOCAL).is_ok());
        assert_eq!(check_url("http://10.0.0.1/", LOCAL), Err(UrlRefused::NotHttps));
        assert_eq!(check_url("https://169.254.169.254/", LOCAL), Err(UrlRefused::Forbidden));
        assert_eq!(
            check_url("http://127.0.0.1:8080/hook", STRICT),
            Err(UrlRefused::NotHttps)
        );
    }

    #[tokio::test]
    async fn names_are_resolved_and_every_address_must_be_admitted() {
        let dns = FakeDns;
        assert_eq!(
            check_endpoint("https://internal.example/hook", &dns, STRICT).await,
            Err(UrlRefused::Forbidden)
        );
        assert_eq!(
            check_endpoint("https://mixed.example/hook", &dns, STRICT).await,
            Err(UrlRefused::Forbidden)
        );
        assert_eq!(
            check_endpoint("https://nowhere.example/hook", &dns, STRICT).await,
            Err(UrlRefused::Unresolvable)
        );
        assert!(
            check_endpoint("https://public.example/hook", &dns, STRICT)
                .await
                .is_ok()
        );
        // The resolver hands over exactly the checked addresses.
        let addrs = resolve_admitted(&dns, "public.example", 443, STRICT).await.unwrap();
        assert_eq!(addrs.len(), 2);
        assert_eq!(
            resolve_admitted(&dns, "internal.example", 443, LOCAL).await,
            Err(UrlRefused::Forbidden)
        );
    }
}
