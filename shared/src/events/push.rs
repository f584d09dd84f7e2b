//! One signed HTTP delivery to a tenant endpoint (Standard Webhooks headers), shared by the
//! delivery worker and the API's `…/test` route, and the jobs of the delivery queue.

use std::sync::{Arc, OnceLock};
use std::time::Instant;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::schedule::{REQUEST_TIMEOUT, Verdict, verdict};
use super::signing::signature_header;
use super::ssrf::{GuardedResolver, Lookup, SystemLookup, UrlPolicy, check_url};
use crate::secret::Secret;

/// A job of the delivery queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum DeliveryJob {
    /// Deliver the event at `seq` to one endpoint; `attempt` counts from 1. A retry due later
    /// than SQS's longest delay (15 min) waits in hops until `not_before`.
    Event {
        tenant_id: String,
        endpoint_id: String,
        seq: u64,
        attempt: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        not_before: Option<DateTime<Utc>>,
        /// The event itself (thin: ids, never a body), when the job was made from it — the
        /// events function's fan-out and every retry — so a delivery reads nothing of the
        /// tenant's log: a campaign's ~3,000 deliveries a second per endpoint would otherwise
        /// be as many reads of that one key. Without it (a redelivery by id) the log is read.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        event: Option<Box<super::Event>>,
    },
    /// Re-send every event from `from_seq` through `until_seq` to one endpoint, in order, a page
    /// per job (`…/recover`).
    Recover {
        tenant_id: String,
        endpoint_id: String,
        from_seq: u64,
        until_seq: u64,
    },
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushResult {
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    pub verdict: Verdict,
    /// Why it failed, without personal data.
    pub error: Option<String>,
}

/// The HTTP client of deliveries: no redirects (the spec: a `3xx` is a failure), a 15 s
/// timeout, and the SSRF guard as its resolver (so the connection goes to the checked address).
/// Built on the first delivery and shared by clones: building it reads and parses the system's
/// CA roots (~150 files), which the API's cold start need not wait for (it pushes only when a
/// tenant tests an endpoint).
#[derive(Clone)]
pub struct Pusher {
    client: Arc<OnceLock<Result<reqwest::Client, String>>>,
    lookup: Arc<dyn Lookup>,
    policy: UrlPolicy,
}

impl Pusher {
    pub fn new(policy: UrlPolicy) -> Self {
        Self::with_lookup(policy, Arc::new(SystemLookup))
    }

    pub fn with_lookup(policy: UrlPolicy, lookup: Arc<dyn Lookup>) -> Self {
        Pusher {
            client: Arc::default(),
            lookup,
            policy,
        }
    }

    fn client(&self) -> Result<&reqwest::Client, String> {
        self.client
            .get_or_init(|| {
                reqwest::Client::builder()
                    .redirect(reqwest::redirect::Policy::none())
                    .timeout(REQUEST_TIMEOUT)
                    .dns_resolver(Arc::new(GuardedResolver::new(self.lookup.clone(), self.policy)))
                    .user_agent("wcrm-webhooks/1")
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| format!("HTTP client unavailable: {e}"))
    }

    pub fn policy(&self) -> UrlPolicy {
        self.policy
    }

    /// POSTs `body` to `url`, signed with `secrets` (current first) as message `id` at `now`.
    pub async fn push(&self, url: &str, id: &str, body: &[u8], secrets: &[&Secret], now: DateTime<Utc>) -> PushResult {
        let started = Instant::now();
        let failed = |error: String, status: Option<u16>| PushResult {
            status_code: status,
            latency_ms: started.elapsed().as_millis() as u64,
            verdict: Verdict::Failed { retry_after_secs: None },
            error: Some(error),
        };
        // IP literals never reach the resolver: the URL is checked again here.
        if let Err(refused) = check_url(url, self.policy) {
            return failed(format!("refused: {refused}"), None);
        }
        let timestamp = now.timestamp();
        let signature = match signature_header(secrets, id, timestamp, body) {
            Ok(s) => s,
            Err(e) => return failed(format!("signing: {e}"), None),
        };
        let client = match self.client() {
            Ok(c) => c,
            Err(e) => return failed(e, None),
        };
        let response = client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        match response {
            Ok(r) => {
                let status = r.status().as_u16();
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                let verdict = verdict(status, retry_after.as_deref());
                PushResult {
                    status_code: Some(status),
                    latency_ms: started.elapsed().as_millis() as u64,
                    verdict,
                    error: (verdict != Verdict::Delivered).then(|| format!("status {status}")),
                }
            }
            Err(e) => failed(describe(&e), None),
        }
    }
}

/// A transport error in words that carry no URL, header or body.
fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timeout".into()
    } else if e.is_connect() {
        // A refusal of the guard surfaces as a connect error of the resolver.
        let mut source: Option<&dyn std::error::Error> = std::error::Error::source(e);
        while let Some(s) = source {
            if s.downcast_ref::<super::ssrf::UrlRefused>().is_some() {
                return format!("refused: {s}");
            }
            source = s.source();
        }
        "connect".into()
    } else {
        "request".into()
    }
}
