//! What the media worker agrees to fetch: Meta media ids (digits only) and download URLs on
//! Meta's media hosts over `https`.
//!
//! The worker sends the tenant's Graph token with every download, so a URL anywhere else
//! (another host, plain `http`, an address inside our network) would hand the token, or our
//! network position, to whoever chose it. Meta's media URLs are
//! `https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=…`; the allow-list is a list
//! of host suffixes (`GRAPH_MEDIA_HOSTS`, default [`DEFAULT_MEDIA_HOSTS`]). Local stacks whose
//! fake Graph API serves media on `http://127.0.0.1:port` list `127.0.0.1` and set
//! `GRAPH_MEDIA_ALLOW_HTTP=true`; production never does.

use std::net::IpAddr;

use reqwest::Url;

/// Meta's media CDN domains (WhatsApp Cloud API media URLs are on `lookaside.fbsbx.com`).
pub const DEFAULT_MEDIA_HOSTS: &str = "fbsbx.com,fbcdn.net,whatsapp.net";

/// Longest media id accepted (Meta's ids are 15–20 digits today).
const MAX_MEDIA_ID_LEN: usize = 64;

/// Whether `id` is a Meta media id: 1 to 64 ASCII digits. Anything else (a path, a URL, a
/// query) would change the Graph request the id is put into.
pub fn is_media_id(id: &str) -> bool {
    (1..=MAX_MEDIA_ID_LEN).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_digit())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaUrlError {
    #[error("media URL is not a valid absolute URL")]
    Invalid,
    #[error("media URL must use https")]
    Scheme,
    #[error("media URL must not carry credentials")]
    Credentials,
    #[error("media URL host is not an allowed Meta media host")]
    Host,
    #[error("media URL must use the default https port")]
    Port,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MediaHostsError(String);

/// The hosts the media worker downloads from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaHosts {
    /// Lowercase host suffixes (`fbsbx.com`) or IP literals (`127.0.0.1`, exact match only).
    suffixes: Vec<String>,
    /// Local stacks only: also `http`, on any port.
    allow_http: bool,
}

impl MediaHosts {
    /// `list`: comma-separated host suffixes or IP literals.
    pub fn parse(list: &str, allow_http: bool) -> Result<Self, MediaHostsError> {
        let mut suffixes = Vec::new();
        for entry in list.split(',') {
            let entry = entry.trim().trim_start_matches('.').to_ascii_lowercase();
            if entry.is_empty() {
                continue;
            }
            let valid = entry.parse::<IpAddr>().is_ok()
                || (entry.contains('.')
                    && entry.split('.').all(|label| {
                        !label.is_empty() && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    }));
            if !valid {
                return Err(MediaHostsError(format!(
                    "{entry:?} is not a host name with a dot or an IP address"
                )));
            }
            suffixes.push(entry);
        }
        if suffixes.is_empty() {
            return Err(MediaHostsError("the list of media hosts is empty".into()));
        }
        Ok(MediaHosts { suffixes, allow_http })
    }

    /// Meta's media hosts, `https` only (the production rule).
    pub fn meta() -> Self {
        MediaHosts::parse(DEFAULT_MEDIA_HOSTS, false).expect("the default list is valid")
    }

    /// A local fake Graph API on loopback (`http://127.0.0.1:port`): tests and `make dev` only.
    pub fn loopback() -> Self {
        MediaHosts::parse("127.0.0.1", true).expect("loopback is valid")
    }

    /// Whether the worker may download `url`.
    pub fn check(&self, url: &str) -> Result<(), MediaUrlError> {
        let url = Url::parse(url).map_err(|_| MediaUrlError::Invalid)?;
        match url.scheme() {
            "https" => {}
            "http" if self.allow_http => {}
            _ => return Err(MediaUrlError::Scheme),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(MediaUrlError::Credentials);
        }
        let host = url.host_str().ok_or(MediaUrlError::Host)?;
        // The parser has normalized addresses (`2130706433` → `127.0.0.1`, IPv6 in brackets).
        let allowed = match host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            // An address is allowed only when listed exactly (never by suffix).
            Ok(ip) => self.suffixes.iter().any(|s| s.parse() == Ok(ip)),
            Err(_) => self.suffixes.iter().any(|suffix| {
                host == suffix
                    || host
                        .strip_suffix(suffix.as_str())
                        .is_some_and(|rest| rest.ends_with('.'))
            }),
        };
        if !allowed {
            return Err(MediaUrlError::Host);
        }
        if !self.allow_http && url.port().is_some() {
            return Err(MediaUrlError::Port);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_ids_are_digits_only() {
        assert!(is_media_id("1234567890123456"));
        assert!(is_media_id("7"));
        for bad in [
            "",
            "12a",
            "../me",
            "123/photos",
            "123?fields=x",
            " 123",
            "１２３",
            "-1",
            &"9".repeat(65),
        ] {
            assert!(!is_media_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn meta_media_urls_are_allowed() {
        let hosts = MediaHosts::meta();
        for ok in [
            "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1&ext=2&hash=abc",
            "https://LOOKASIDE.FBSBX.COM/x",
            "https://scontent.xx.fbcdn.net/v/t1/abc.jpg",
            "https://mmg.whatsapp.net/d/f/abc.enc",
            "https://fbsbx.com/x",
            "https://lookaside.fbsbx.com:443/x",
        ] {
            assert_eq!(hosts.check(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn only_https_on_the_default_port() {
        let hosts = MediaHosts::meta();
        assert_eq!(hosts.check("http://lookaside.fbsbx.com/x"), Err(MediaUrlError::Scheme));
        assert_eq!(hosts.check("ftp://lookaside.fbsbx.com/x"), Err(MediaUrlError::Scheme));
        assert_eq!(hosts.check("file:///etc/passwd"), Err(MediaUrlError::Scheme));
        assert_eq!(
            hosts.check("https://lookaside.fbsbx.com:8443/x"),
            Err(MediaUrlError::Port)
        );
        assert_eq!(hosts.check("/relative/path"), Err(MediaUrlError::Invalid));
        assert_eq!(hosts.check("not a url"), Err(MediaUrlError::Invalid));
    }

    #[test]
    fn host_suffixes_match_on_a_label_boundary() {
        let hosts = MediaHosts::meta();
        for bad in [
            "https://evilfbcdn.net/x",
            "https://fbcdn.net.evil.com/x",
            "https://lookaside.fbsbx.com.evil.com/x",
            "https://lookaside.fbsbx.com./x",
            "https://example.com/lookaside.fbsbx.com",
            "https://example.com/?u=https://lookaside.fbsbx.com",
            "https://graph.facebook.com/x",
        ] {
            assert_eq!(hosts.check(bad), Err(MediaUrlError::Host), "{bad}");
        }
    }

    #[test]
    fn credentials_and_userinfo_tricks_are_refused() {
        let hosts = MediaHosts::meta();
        // The host here is evil.com; the allowed name is only userinfo.
        assert_eq!(
            hosts.check("https://lookaside.fbsbx.com@evil.com/x"),
            Err(MediaUrlError::Credentials)
        );
        assert_eq!(
            hosts.check("https://user:pass@lookaside.fbsbx.com/x"),
            Err(MediaUrlError::Credentials)
        );
        // A backslash ends the authority (as for the HTTP client that fetches it): host evil.com.
        assert_eq!(
            hosts.check("https://evil.com\\@lookaside.fbsbx.com/x"),
            Err(MediaUrlError::Host)
        );
    }

    #[test]
    fn ip_literals_need_an_exact_entry() {
        let hosts = MediaHosts::meta();
        for bad in [
            "https://127.0.0.1/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://[::1]/x",
            "https://2130706433/x",
            "https://0x7f.0.0.1/x",
        ] {
            assert_eq!(hosts.check(bad), Err(MediaUrlError::Host), "{bad}");
        }
        let local = MediaHosts::loopback();
        assert_eq!(local.check("http://127.0.0.1:4010/media/1"), Ok(()));
        // 2130706433 is 127.0.0.1 in another spelling; the parser normalizes it.
        assert_eq!(local.check("http://2130706433:4010/media/1"), Ok(()));
        assert_eq!(local.check("http://127.0.0.2:4010/media/1"), Err(MediaUrlError::Host));
        assert_eq!(local.check("http://localhost:4010/media/1"), Err(MediaUrlError::Host));
        assert_eq!(local.check("http://127.0.0.1.nip.io/x"), Err(MediaUrlError::Host));
        let v6 = MediaHosts::parse("::1", true).unwrap();
        assert_eq!(v6.check("http://[::1]:9/x"), Ok(()));
    }

    #[test]
    fn the_list_is_parsed_and_checked() {
        let hosts = MediaHosts::parse(" .FBSBX.com , example.org,", false).unwrap();
        assert_eq!(hosts.check("https://a.example.org/x"), Ok(()));
        assert_eq!(hosts.check("https://lookaside.fbsbx.com/x"), Ok(()));
        assert!(MediaHosts::parse("", false).is_err());
        assert!(MediaHosts::parse(" , ", false).is_err());
        assert!(MediaHosts::parse("com", false).is_err(), "a bare top-level domain");
        assert!(MediaHosts::parse("*.fbsbx.com", false).is_err());
        assert!(MediaHosts::parse("fbsbx.com/x", false).is_err());
    }
}
