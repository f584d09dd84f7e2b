//! A fault-injecting proxy for the fault scenarios (`tests/e2e/faults.rs`).
//!
//! Contract: [`FaultProxy::start`] opens a loopback listener that forwards every request to its
//! upstream (a function's IAM gate, so every forwarded request is still checked against the
//! function's policy, or the fake Graph API) through the same plumbing as the gates
//! ([`crate::proxy::serve`], [`crate::proxy::forward`]), and answers some requests with a fault
//! instead. Which request gets which fault is a function of the seed and the request's number
//! (the k-th request through this proxy gets draw k of the seeded schedule), so a sequential
//! run is repeatable; concurrent requests may trade numbers, which moves a fault between them
//! but keeps the rates. Scripted faults ([`FaultProxy::script`]) go first, to the first
//! requests whose path contains a given text.
//!
//! The faults are the ones AWS and Meta answer in practice, in their wire shape:
//! - throttling: DynamoDB (`X-Amz-Target: DynamoDB_…`) a JSON 400
//!   `ProvisionedThroughputExceededException` or `ThrottlingException`; SQS (`AmazonSQS.…`) a
//!   JSON 400 `RequestThrottled`; other JSON services `ThrottlingException`; S3 (no target) an
//!   XML 503 `SlowDown`; anything else (the Graph API) a 429;
//! - a plain 500 (`InternalServerError` for the JSON services, `InternalError` for S3);
//! - a reset: the connection is dropped without an answer, before the request reaches upstream;
//! - a lost answer: the request is applied upstream, then the connection is dropped (the caller
//!   cannot know it took effect);
//! - a delay (bounded by the schedule's `max_delay`) before the answer.
//!
//! Every fault is counted by kind ([`FaultProxy::counts`], [`FaultProxy::report`]).
//!
//! Crashes: [`FaultProxy::crash_at`] runs a handler's future until the proxy sees the N-th
//! request of it, then drops the future (the task is aborted like a process killed by
//! `kill -9`): with [`CrashPoint::Before`] the N-th request never reaches upstream, with
//! [`CrashPoint::After`] it is applied and its answer never read. Nothing of the handler runs
//! after that request; requests it had in flight at the time never get an answer.
//!
//! Everything is bounded in time: delays by `max_delay`, a request hung by a crash for at most
//! [`HANG`] (its caller is gone by then).

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::proxy::{self, Answer};

/// How long a request caught by a crash is held before its connection is dropped.
pub const HANG: Duration = Duration::from_secs(20);

/// One kind of injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    Throttle,
    ServerError,
    Reset,
    LostAnswer,
    Delay,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Throttle => "throttle",
            Fault::ServerError => "500",
            Fault::Reset => "reset",
            Fault::LostAnswer => "lost_answer",
            Fault::Delay => "delay",
        }
    }
}

/// The seeded schedule: each rate is per thousand requests; the rest pass untouched.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub seed: u64,
    pub throttle: u32,
    pub server_error: u32,
    pub reset: u32,
    pub lost_answer: u32,
    pub delay: u32,
    pub max_delay: Duration,
}

impl Schedule {
    /// No random faults (scripted faults and crashes only).
    pub const fn none(seed: u64) -> Self {
        Schedule {
            seed,
            throttle: 0,
            server_error: 0,
            reset: 0,
            lost_answer: 0,
            delay: 0,
            max_delay: Duration::ZERO,
        }
    }

    /// The fault of the `n`-th request, if any.
    fn fault(&self, n: u64) -> Option<Fault> {
        let mut roll = (draw(self.seed, n) % 1000) as u32;
        for (rate, fault) in [
            (self.throttle, Fault::Throttle),
            (self.server_error, Fault::ServerError),
            (self.reset, Fault::Reset),
            (self.lost_answer, Fault::LostAnswer),
            (self.delay, Fault::Delay),
        ] {
            if roll < rate {
                return Some(fault);
            }
            roll -= rate;
        }
        None
    }
}

/// splitmix64: draw `n` of the schedule seeded with `seed`.
pub fn draw(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Where a crash stops the handler: at its N-th request through the proxy (from 1), before it
/// reaches upstream or after upstream applied it.
#[derive(Debug, Clone, Copy)]
pub enum CrashPoint {
    Before(u64),
    After(u64),
}

struct Crash {
    remaining: u64,
    before: bool,
    fire: Option<tokio::sync::oneshot::Sender<()>>,
}

struct State {
    upstream: String,
    schedule: Schedule,
    client: reqwest::Client,
    requests: AtomicU64,
    counts: Mutex<BTreeMap<Fault, u64>>,
    scripted: Mutex<Vec<(String, VecDeque<Fault>)>>,
    /// Armed by [`FaultProxy::crash_at`]; once fired, every request hangs until it returns.
    crash: Mutex<Option<Crash>>,
    dead: std::sync::atomic::AtomicBool,
    /// Random faults are injected only while enabled (setup and assertions pass untouched).
    enabled: std::sync::atomic::AtomicBool,
}

/// A running fault proxy; dropping it stops its listener.
pub struct FaultProxy {
    pub endpoint: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy in front of `upstream` on this test's runtime, injecting `schedule`'s faults.
    pub async fn start(upstream: &str, schedule: Schedule) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_owned(),
            schedule,
            client: proxy::client(),
            requests: AtomicU64::new(0),
            counts: Mutex::new(BTreeMap::new()),
            scripted: Mutex::new(Vec::new()),
            crash: Mutex::new(None),
            dead: Default::default(),
            enabled: std::sync::atomic::AtomicBool::new(true),
        });
        let task = tokio::spawn(proxy::serve(listener, {
            let state = state.clone();
            move |req| {
                let state = state.clone();
                async move { state.handle(req).await }
            }
        }));
        FaultProxy { endpoint, state, task }
    }

    /// The next requests whose path contains `path_part` get `faults`, one each, in order
    /// (before any random fault).
    pub fn script(&self, path_part: &str, faults: &[Fault]) {
        self.state
            .scripted
            .lock()
            .unwrap()
            .push((path_part.to_owned(), faults.iter().copied().collect()));
    }

    /// Turns the random faults on or off (scripted faults and crashes stay armed).
    pub fn set_enabled(&self, on: bool) {
        self.state.enabled.store(on, Ordering::SeqCst);
    }

    /// Injected faults by kind.
    pub fn counts(&self) -> BTreeMap<Fault, u64> {
        self.state.counts.lock().unwrap().clone()
    }

    /// Faults of one kind so far.
    pub fn count(&self, fault: Fault) -> u64 {
        self.counts().get(&fault).copied().unwrap_or(0)
    }

    /// Requests seen so far.
    pub fn requests(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// One line: every kind's count and the requests seen.
    pub fn report(&self) -> String {
        let counts = self.counts();
        let kinds = [
            Fault::Throttle,
            Fault::ServerError,
            Fault::Reset,
            Fault::LostAnswer,
            Fault::Delay,
        ];
        let parts: Vec<String> = kinds
            .iter()
            .map(|k| format!("{}={}", k.name(), counts.get(k).copied().unwrap_or(0)))
            .collect();
        format!("{} of {} requests", parts.join(" "), self.requests())
    }

    /// Runs `work` until it finishes (`Some`) or until it reaches `point` (`None`: the future
    /// was dropped there, like a process killed at that request).
    pub async fn crash_at<T>(&self, point: CrashPoint, work: impl Future<Output = T>) -> Option<T> {
        let (fire, fired) = tokio::sync::oneshot::channel();
        let (remaining, before) = match point {
            CrashPoint::Before(n) => (n, true),
            CrashPoint::After(n) => (n, false),
        };
        assert!(remaining > 0, "requests count from 1");
        *self.state.crash.lock().unwrap() = Some(Crash {
            remaining,
            before,
            fire: Some(fire),
        });
        let out = tokio::select! {
            biased;
            _ = fired => None,
            out = work => Some(out),
        };
        self.state.crash.lock().unwrap().take();
        self.state.dead.store(false, Ordering::SeqCst);
        out
    }
}

impl State {
    async fn handle(&self, req: Request<Incoming>) -> Answer {
        if self.dead.load(Ordering::SeqCst) {
            return hang().await;
        }
        let n = self.requests.fetch_add(1, Ordering::SeqCst);
        let (parts, body) = match proxy::read(req).await {
            Ok(read) => read,
            Err(answer) => return Some(answer),
        };
        // A crash armed for this request?
        let crash_here = {
            let mut crash = self.crash.lock().unwrap();
            match crash.as_mut() {
                Some(c) if c.fire.is_some() => {
                    c.remaining -= 1;
                    (c.remaining == 0).then(|| (c.before, c.fire.take().unwrap()))
                }
                _ => None,
            }
        };
        if let Some((before, fire)) = crash_here {
            self.dead.store(true, Ordering::SeqCst);
            if !before {
                let _ = proxy::forward(&self.client, &self.upstream, &parts, body).await;
            }
            let _ = fire.send(());
            return hang().await;
        }
        let scripted = {
            let mut scripted = self.scripted.lock().unwrap();
            scripted
                .iter_mut()
                .find(|(part, faults)| !faults.is_empty() && parts.uri.path().contains(part.as_str()))
                .and_then(|(_, faults)| faults.pop_front())
        };
        let fault = scripted.or_else(|| {
            self.enabled
                .load(Ordering::SeqCst)
                .then(|| self.schedule.fault(n))
                .flatten()
        });
        let Some(fault) = fault else {
            return Some(proxy::forward(&self.client, &self.upstream, &parts, body).await);
        };
        *self.counts.lock().unwrap().entry(fault).or_insert(0) += 1;
        match fault {
            Fault::Throttle => Some(throttled(&parts.headers, draw(self.schedule.seed, n ^ 0xD1CE))),
            Fault::ServerError => Some(server_error(&parts.headers)),
            Fault::Reset => None,
            Fault::LostAnswer => {
                let _ = proxy::forward(&self.client, &self.upstream, &parts, body).await;
                None
            }
            Fault::Delay => {
                let max = self.schedule.max_delay.as_millis().max(1) as u64;
                let wait = Duration::from_millis(draw(self.schedule.seed, n ^ 0xDE1A) % max);
                tokio::time::sleep(wait).await;
                Some(proxy::forward(&self.client, &self.upstream, &parts, body).await)
            }
        }
    }
}

/// A request caught by a crash: held, then dropped without an answer.
async fn hang() -> Answer {
    tokio::time::sleep(HANG).await;
    None
}

/// The service a request is for, from its `X-Amz-Target` (JSON protocols) or its absence.
enum Service {
    DynamoDb,
    Sqs,
    OtherJson,
    S3OrHttp,
}

fn service(headers: &http::HeaderMap) -> Service {
    match headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        Some(t) if t.starts_with("DynamoDB_") => Service::DynamoDb,
        Some(t) if t.starts_with("AmazonSQS.") => Service::Sqs,
        Some(_) => Service::OtherJson,
        None => Service::S3OrHttp,
    }
}

fn json_error(status: u16, kind: &str, query_error: Option<&str>, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"__type": kind, "message": message}).to_string();
    let mut out = Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.0");
    if let Some(q) = query_error {
        out = out.header("x-amzn-query-error", q);
    }
    out.body(Full::new(Bytes::from(body))).unwrap()
}

fn xml_error(status: u16, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    );
    Response::builder()
        .status(status)
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn throttled(headers: &http::HeaderMap, pick: u64) -> Response<Full<Bytes>> {
    match service(headers) {
        Service::DynamoDb if pick.is_multiple_of(2) => json_error(
            400,
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            None,
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        Service::DynamoDb => json_error(
            400,
            "com.amazonaws.dynamodb.v20120810#ThrottlingException",
            None,
            "Rate of requests exceeds the allowed throughput.",
        ),
        Service::Sqs => json_error(
            400,
            "com.amazonaws.sqs#RequestThrottled",
            Some("RequestThrottled;Sender"),
            "Request is throttled.",
        ),
        Service::OtherJson => json_error(400, "ThrottlingException", None, "Rate exceeded"),
        Service::S3OrHttp if headers.contains_key("x-amz-content-sha256") => {
            xml_error(503, "SlowDown", "Please reduce your request rate.")
        }
        Service::S3OrHttp => Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"message":"(#4) Application request limit reached","type":"OAuthException","code":4}}"#,
            )))
            .unwrap(),
    }
}

fn server_error(headers: &http::HeaderMap) -> Response<Full<Bytes>> {
    match service(headers) {
        Service::DynamoDb => json_error(
            500,
            "com.amazonaws.dynamodb.v20120810#InternalServerError",
            None,
            "Internal server error",
        ),
        Service::Sqs => json_error(
            500,
            "com.amazonaws.sqs#InternalError",
            Some("InternalError;Receiver"),
            "We encountered an internal error.",
        ),
        Service::OtherJson => json_error(500, "InternalFailure", None, "Internal failure"),
        Service::S3OrHttp if headers.contains_key("x-amz-content-sha256") => xml_error(
            500,
            "InternalError",
            "We encountered an internal error. Please try again.",
        ),
        Service::S3OrHttp => proxy::plain(500, "internal error".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_a_function_of_its_seed_and_keeps_its_rates() {
        let s = Schedule {
            seed: 7,
            throttle: 100,
            server_error: 50,
            reset: 50,
            lost_answer: 0,
            delay: 100,
            max_delay: Duration::from_millis(10),
        };
        let a: Vec<_> = (0..10_000).map(|n| s.fault(n)).collect();
        let b: Vec<_> = (0..10_000).map(|n| s.fault(n)).collect();
        assert_eq!(a, b);
        let count = |f| a.iter().filter(|x| **x == Some(f)).count();
        assert!(
            (800..1200).contains(&count(Fault::Throttle)),
            "{}",
            count(Fault::Throttle)
        );
        assert!((350..650).contains(&count(Fault::Reset)));
        assert_eq!(count(Fault::LostAnswer), 0);
        assert!((6500..7500).contains(&a.iter().filter(|x| x.is_none()).count()));
    }
}
