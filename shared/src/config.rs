//! Runtime configuration read from the environment.
//!
//! Resource names: on AWS every function receives them from `template.yaml` (`!Ref` in the
//! `Globals` environment). Locally they default to [`local_name`] of the template's logical id,
//! the same rule the local provisioner uses when it creates the resources from the template,
//! so `make dev`, `crmctl` and the tests agree without a second list of names.

use std::collections::HashMap;
use std::fmt::Display;
use std::ops::RangeInclusive;
use std::str::FromStr;

use crate::secret::Secret;

/// Newest Graph API version the code is tested against.
pub const DEFAULT_GRAPH_API_VERSION: &str = "v25.0";
pub const DEFAULT_GRAPH_API_BASE: &str = "https://graph.facebook.com";

/// Prefix of every locally created resource name.
pub const LOCAL_NAME_PREFIX: &str = "wcrm";

/// Environment variable → logical id in `template.yaml` of the resource it names.
/// A unit test checks this table against the template's `Globals`.
pub const RESOURCE_ENV: &[(&str, &str)] = &[
    ("TABLE_NAME", "DataTable"),
    ("MEDIA_BUCKET", "MediaBucket"),
    ("EXPORTS_BUCKET", "ExportsBucket"),
    ("MEDIA_QUEUE_URL", "MediaQueue"),
    ("OUTBOUND_QUEUE_URL", "OutboundQueue"),
    ("EXPORT_QUEUE_URL", "ExportQueue"),
    ("ERASURE_QUEUE_URL", "ErasureQueue"),
    ("WEBHOOK_OVERFLOW_QUEUE_URL", "WebhookOverflowQueue"),
    ("WEBHOOK_DELIVERY_QUEUE_URL", "WebhookDeliveryQueue"),
];

pub const DEFAULT_MEDIA_MAX_RECEIVES: u32 = 5;

/// Account id the local endpoint (moto) uses in queue URLs and ARNs.
pub const LOCAL_ACCOUNT_ID: &str = "123456789012";

/// Local name of a template resource: `wcrm-` + the logical id in kebab case
/// (`DataTable` → `wcrm-data-table`).
pub fn local_name(logical_id: &str) -> String {
    let mut out = String::from(LOCAL_NAME_PREFIX);
    for (i, ch) in logical_id.chars().enumerate() {
        if ch.is_ascii_uppercase() || i == 0 {
            out.push('-');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("environment variable {name} is required")]
    Missing { name: &'static str },
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Names of the AWS resources a process talks to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub table: String,
    pub media_bucket: String,
    pub exports_bucket: String,
    pub media_queue_url: String,
    pub outbound_queue_url: String,
    /// Contact exports to build (privacy function `exporter`).
    pub export_queue_url: String,
    /// Erasures to continue (privacy function `eraser`).
    pub erasure_queue_url: String,
    /// Webhook items handed off past the webhook's time budget (`webhook-overflow`).
    pub webhook_overflow_queue_url: String,
    /// Deliveries to tenant webhook endpoints (`webhook-delivery`).
    pub webhook_delivery_queue_url: String,
}

/// Where and how the Graph API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphConfig {
    pub base_url: String,
    pub version: String,
}

/// Secrets of the Meta app that owns the webhook subscription.
#[derive(Debug, Clone)]
pub struct WebhookSecrets {
    pub app_secret: Secret,
    pub verify_token: Secret,
}

/// A view of the environment; `from_env` for processes, `from_map` for tests.
#[derive(Debug, Clone, Default)]
pub struct Env(HashMap<String, String>);

impl Env {
    pub fn from_env() -> Self {
        Env(std::env::vars().collect())
    }

    pub fn from_map<I, K, V>(vars: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect())
    }

    /// This environment with `name` set to `value` (secrets resolved at init, crate::secrets).
    pub fn with_var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.0.insert(name.into(), value.into());
        self
    }

    /// A set, non-empty value.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &'static str) -> Result<&str, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing { name })
    }

    fn resource(&self, env_name: &'static str) -> String {
        self.get(env_name).map(str::to_owned).unwrap_or_else(|| {
            let logical = RESOURCE_ENV
                .iter()
                .find(|(name, _)| *name == env_name)
                .map(|(_, logical)| *logical)
                .expect("every resource variable is listed in RESOURCE_ENV");
            local_name(logical)
        })
    }

    pub fn resources(&self) -> Resources {
        Resources {
            table: self.resource("TABLE_NAME"),
            media_bucket: self.resource("MEDIA_BUCKET"),
            exports_bucket: self.resource("EXPORTS_BUCKET"),
            media_queue_url: self.queue_url("MEDIA_QUEUE_URL"),
            outbound_queue_url: self.queue_url("OUTBOUND_QUEUE_URL"),
            export_queue_url: self.queue_url("EXPORT_QUEUE_URL"),
            erasure_queue_url: self.queue_url("ERASURE_QUEUE_URL"),
            webhook_overflow_queue_url: self.queue_url("WEBHOOK_OVERFLOW_QUEUE_URL"),
            webhook_delivery_queue_url: self.queue_url("WEBHOOK_DELIVERY_QUEUE_URL"),
        }
    }

    /// A queue URL: as configured, else the local endpoint's URL for the default queue name.
    fn queue_url(&self, env_name: &'static str) -> String {
        match self.get(env_name) {
            Some(url) => url.to_owned(),
            None => {
                let endpoint = self.get("AWS_ENDPOINT_URL").unwrap_or("http://127.0.0.1:4566");
                format!(
                    "{}/{LOCAL_ACCOUNT_ID}/{}",
                    endpoint.trim_end_matches('/'),
                    self.resource(env_name)
                )
            }
        }
    }

    /// Where tenant webhooks may go: loopback only with `WEBHOOK_ALLOW_LOOPBACK=true` (local
    /// stacks and tests), never by default.
    pub fn webhook_url_policy(&self) -> crate::events::ssrf::UrlPolicy {
        crate::events::ssrf::UrlPolicy {
            allow_loopback: self.get("WEBHOOK_ALLOW_LOOPBACK") == Some("true"),
        }
    }

    pub fn graph(&self) -> Result<GraphConfig, ConfigError> {
        let base_url = self
            .get("GRAPH_API_BASE")
            .unwrap_or(DEFAULT_GRAPH_API_BASE)
            .trim_end_matches('/')
            .to_owned();
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(ConfigError::Invalid {
                name: "GRAPH_API_BASE",
                reason: "must be an http(s) URL".into(),
            });
        }
        let version = self
            .get("GRAPH_API_VERSION")
            .unwrap_or(DEFAULT_GRAPH_API_VERSION)
            .to_owned();
        let valid_version = version
            .strip_prefix('v')
            .and_then(|rest| rest.split_once('.'))
            .is_some_and(|(major, minor)| {
                !major.is_empty() && !minor.is_empty() && major.chars().chain(minor.chars()).all(|c| c.is_ascii_digit())
            });
        if !valid_version {
            return Err(ConfigError::Invalid {
                name: "GRAPH_API_VERSION",
                reason: "expected a version such as v25.0".into(),
            });
        }
        Ok(GraphConfig { base_url, version })
    }

    /// The media queue's `maxReceiveCount` (must match `template.yaml`).
    pub fn media_max_receives(&self) -> Result<u32, ConfigError> {
        self.bounded("MEDIA_MAX_RECEIVE_COUNT", DEFAULT_MEDIA_MAX_RECEIVES, 1..=1000)
    }

    /// The outbound queue's `maxReceiveCount` (must match `template.yaml`).
    pub fn send_max_receives(&self) -> Result<u32, ConfigError> {
        self.bounded("SEND_MAX_RECEIVE_COUNT", 8, 1..=1000)
    }

    /// Messages per second per phone number (Meta's default 80; up to 1,000 on higher tiers).
    pub fn send_rate_per_second(&self) -> Result<u32, ConfigError> {
        self.bounded("SEND_RATE_PER_SECOND", 80, 1..=10_000)
    }

    /// Where the media worker may download media from: `GRAPH_MEDIA_HOSTS` (comma-separated host
    /// suffixes or IP addresses; default Meta's media CDNs) and `GRAPH_MEDIA_ALLOW_HTTP`
    /// (`true` only for a local fake Graph API; default `false`).
    pub fn media_hosts(&self) -> Result<crate::media_url::MediaHosts, ConfigError> {
        let allow_http = match self.get("GRAPH_MEDIA_ALLOW_HTTP") {
            None => false,
            Some(v) if v.eq_ignore_ascii_case("true") || v == "1" => true,
            Some(v) if v.eq_ignore_ascii_case("false") || v == "0" => false,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    name: "GRAPH_MEDIA_ALLOW_HTTP",
                    reason: "must be true or false".into(),
                });
            }
        };
        let list = self
            .get("GRAPH_MEDIA_HOSTS")
            .unwrap_or(crate::media_url::DEFAULT_MEDIA_HOSTS);
        crate::media_url::MediaHosts::parse(list, allow_http).map_err(|e| ConfigError::Invalid {
            name: "GRAPH_MEDIA_HOSTS",
            reason: e.to_string(),
        })
    }

    /// The API's per-tenant quota (`TENANT_REQUESTS_PER_SECOND`, `TENANT_REQUEST_BURST`; the
    /// template's `TenantRequestsPerSecond` / `TenantRequestBurst`).
    pub fn tenant_quota(&self) -> Result<crate::quota::QuotaConfig, ConfigError> {
        let d = crate::quota::QuotaConfig::default();
        Ok(crate::quota::QuotaConfig {
            rate_per_second: self.bounded("TENANT_REQUESTS_PER_SECOND", d.rate_per_second, 1..=1_000_000)?,
            burst: self.bounded("TENANT_REQUEST_BURST", d.burst, 1..=1_000_000)?,
        })
    }

    /// A whole number from the environment within `range`, or `default` when unset: the one
    /// parser for every numeric setting (counts, budgets, ports).
    pub fn bounded<T>(&self, name: &'static str, default: T, range: RangeInclusive<T>) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| range.contains(n))
                .ok_or_else(|| ConfigError::Invalid {
                    name,
                    reason: format!("must be a whole number from {} to {}", range.start(), range.end()),
                }),
        }
    }

    /// Key material for pagination cursors (at least 32 characters).
    pub fn cursor_secret(&self) -> Result<Secret, ConfigError> {
        let value = self.required("CURSOR_SECRET")?;
        if value.len() < 32 {
            return Err(ConfigError::Invalid {
                name: "CURSOR_SECRET",
                reason: "must be at least 32 characters".into(),
            });
        }
        Ok(Secret::new(value))
    }

    pub fn webhook_secrets(&self) -> Result<WebhookSecrets, ConfigError> {
        Ok(WebhookSecrets {
            app_secret: Secret::new(self.required("WHATSAPP_APP_SECRET")?),
            verify_token: Secret::new(self.required("WHATSAPP_VERIFY_TOKEN")?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_names_are_kebab_case_with_prefix() {
        assert_eq!(local_name("DataTable"), "wcrm-data-table");
        assert_eq!(local_name("MediaQueueDLQ"), "wcrm-media-queue-d-l-q");
        assert_eq!(local_name("Bucket"), "wcrm-bucket");
    }

    #[test]
    fn resources_default_to_local_names_and_honour_overrides() {
        let env = Env::from_map([("TABLE_NAME", "prod-table"), ("MEDIA_BUCKET", "  ")]);
        let res = env.resources();
        assert_eq!(res.table, "prod-table");
        assert_eq!(res.media_bucket, "wcrm-media-bucket");
        assert_eq!(res.exports_bucket, "wcrm-exports-bucket");
        assert_eq!(
            res.media_queue_url,
            "http://127.0.0.1:4566/123456789012/wcrm-media-queue"
        );
        let res = Env::from_map([("AWS_ENDPOINT_URL", "http://127.0.0.1:9/")]).resources();
        assert_eq!(res.media_queue_url, "http://127.0.0.1:9/123456789012/wcrm-media-queue");
    }

    #[test]
    fn graph_defaults_and_validation() {
        let g = Env::default().graph().unwrap();
        assert_eq!(g.base_url, "https://graph.facebook.com");
        assert_eq!(g.version, "v25.0");

        let g = Env::from_map([
            ("GRAPH_API_BASE", "http://127.0.0.1:9/"),
            ("GRAPH_API_VERSION", "v23.0"),
        ])
        .graph()
        .unwrap();
        assert_eq!(g.base_url, "http://127.0.0.1:9");
        assert_eq!(g.version, "v23.0");

        for bad in ["25.0", "v25", "vX.0", "v25."] {
            let err = Env::from_map([("GRAPH_API_VERSION", bad)]).graph().unwrap_err();
            assert!(
                matches!(
                    err,
                    ConfigError::Invalid {
                        name: "GRAPH_API_VERSION",
                        ..
                    }
                ),
                "{bad}"
            );
        }
        assert!(Env::from_map([("GRAPH_API_BASE", "ftp://x")]).graph().is_err());
    }

    #[test]
    fn bounded_numbers_default_parse_and_reject_out_of_range() {
        let env = Env::from_map([("N", " 7 "), ("BIG", "1001"), ("ZERO", "0"), ("WORD", "seven")]);
        assert_eq!(env.bounded("UNSET", 5u32, 1..=1000), Ok(5));
        assert_eq!(env.bounded("N", 5u32, 1..=1000), Ok(7));
        assert_eq!(env.bounded("N", 5u64, 7..=7), Ok(7));
        for name in ["BIG", "ZERO", "WORD"] {
            assert_eq!(
                env.bounded(name, 5u32, 1..=1000),
                Err(ConfigError::Invalid {
                    name,
                    reason: "must be a whole number from 1 to 1000".into()
                })
            );
        }
    }

    #[test]
    fn tenant_quota_defaults_to_the_template_and_reads_both_variables() {
        let d = Env::default().tenant_quota().unwrap();
        assert_eq!((d.rate_per_second, d.burst), (20, 40));
        let q = Env::from_map([("TENANT_REQUESTS_PER_SECOND", "5"), ("TENANT_REQUEST_BURST", "9")])
            .tenant_quota()
            .unwrap();
        assert_eq!((q.rate_per_second, q.burst), (5, 9));
        assert!(Env::from_map([("TENANT_REQUEST_BURST", "0")]).tenant_quota().is_err());
    }

    #[test]
    fn media_hosts_default_to_meta_over_https() {
        use crate::media_url::MediaHosts;
        assert_eq!(Env::default().media_hosts().unwrap(), MediaHosts::meta());
        let local = Env::from_map([("GRAPH_MEDIA_HOSTS", "127.0.0.1"), ("GRAPH_MEDIA_ALLOW_HTTP", "true")])
            .media_hosts()
            .unwrap();
        assert_eq!(local, MediaHosts::loopback());
        // http alone never widens the hosts.
        let http_only = Env::from_map([("GRAPH_MEDIA_ALLOW_HTTP", "true")])
            .media_hosts()
            .unwrap();
        assert!(http_only.check("http://127.0.0.1:9/x").is_err());
        assert!(
            Env::from_map([("GRAPH_MEDIA_ALLOW_HTTP", "yes")])
                .media_hosts()
                .is_err()
        );
        assert!(Env::from_map([("GRAPH_MEDIA_HOSTS", "com")]).media_hosts().is_err());
    }

    #[test]
    fn cursor_secret_is_required_and_long() {
        assert!(Env::default().cursor_secret().is_err());
        assert!(Env::from_map([("CURSOR_SECRET", "short")]).cursor_secret().is_err());
        assert!(
            Env::from_map([("CURSOR_SECRET", "x".repeat(32))])
                .cursor_secret()
                .is_ok()
        );
    }

    #[test]
    fn webhook_secrets_are_required() {
        let err = Env::from_map([("WHATSAPP_APP_SECRET", "s")])
            .webhook_secrets()
            .unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                name: "WHATSAPP_VERIFY_TOKEN"
            }
        );
        let ok = Env::from_map([("WHATSAPP_APP_SECRET", "s"), ("WHATSAPP_VERIFY_TOKEN", "v")])
            .webhook_secrets()
            .unwrap();
        assert_eq!(ok.app_secret.expose(), "s");
        let shown = format!("{ok:?}");
        assert!(shown.contains("Secret(***)") && !shown.contains("\"v\""), "{shown}");
    }

    /// The quota's code defaults are the template's parameter defaults.
    #[test]
    fn quota_defaults_match_the_template() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml at the workspace root");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let default = |name: &str| doc["Parameters"][name]["Default"].as_u64().unwrap();
        let q = crate::quota::QuotaConfig::default();
        assert_eq!(u64::from(q.rate_per_second), default("TenantRequestsPerSecond"));
        assert_eq!(u64::from(q.burst), default("TenantRequestBurst"));
    }

    /// The template's `Globals` environment and [`RESOURCE_ENV`] must name the same resources.
    #[test]
    fn resource_env_matches_template_globals() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml"))
            .expect("template.yaml at the workspace root");
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        let vars = &doc["Globals"]["Function"]["Environment"]["Variables"];
        let resources = doc["Resources"].as_mapping().expect("Resources");
        let mut from_template = Vec::new();
        for (name, value) in vars.as_mapping().expect("Globals env is a mapping") {
            if let serde_yaml::Value::Tagged(tagged) = value {
                let target = tagged.value.as_str().unwrap_or_default();
                if tagged.tag == "!Ref" && resources.contains_key(target) {
                    from_template.push((
                        name.as_str().unwrap().to_owned(),
                        tagged.value.as_str().unwrap().to_owned(),
                    ));
                }
            }
        }
        from_template.sort();
        let mut listed: Vec<(String, String)> = RESOURCE_ENV
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        listed.sort();
        assert_eq!(from_template, listed);
    }
}
