//! Per-principal IAM gates in front of the local endpoint.
//!
//! Contract: [`start`] opens one loopback listener per principal (every function of
//! `template.yaml` and the operator policy) and returns their endpoints. A request arriving on a
//! principal's endpoint is turned into the IAM checks AWS would make ([`Policies::checks`]) and
//! evaluated against that principal's statements. Allowed requests are forwarded to moto
//! unchanged; a denied or unattributable request is answered the way AWS answers it
//! (`AccessDenied`, so the code under test fails exactly as it would on AWS), printed at once,
//! and recorded: a test binary that saw any denial exits non-zero even if the code under test
//! swallowed the error (best-effort writes), see [`install_exit_check`].
//!
//! Principals whose name starts with [`PROBE_PREFIX`] exist to test the gate itself: their
//! denials are expected and not recorded.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};

use crate::iam::Policies;

pub const PROBE_PREFIX: &str = "IamProbe";

static DENIALS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Every denial so far (principal, action, resource), for reports and tests.
pub fn denials() -> Vec<String> {
    DENIALS.lock().unwrap().clone()
}

extern "C" fn exit_check() {
    let denials = denials();
    if !denials.is_empty() {
        eprintln!(
            "\nIAM: {} request(s) made by the code under test are not allowed by template.yaml:",
            denials.len()
        );
        for d in &denials {
            eprintln!("  {d}");
        }
        // SAFETY: `_exit` ends the process at once; the test harness has finished its output.
        unsafe { libc::_exit(3) };
    }
}

/// Makes the test binary fail at exit when any request was denied.
pub fn install_exit_check() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    // SAFETY: registers a plain function with no captured state.
    ONCE.call_once(|| unsafe {
        libc::atexit(exit_check);
    });
}

/// Starts the gates on their own runtime thread (they outlive every test's runtime).
pub fn start(principals: &[String], upstream: &str, policies: Arc<Policies>) -> BTreeMap<String, String> {
    install_exit_check();
    let (tx, rx) = std::sync::mpsc::channel();
    let principals = principals.to_vec();
    let upstream = upstream.trim_end_matches('/').to_owned();
    std::thread::Builder::new()
        .name("iam-gates".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("gate runtime");
            rt.block_on(async move {
                let client = client();
                let mut endpoints = BTreeMap::new();
                for principal in principals {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    endpoints.insert(principal.clone(), format!("http://{}", listener.local_addr().unwrap()));
                    let gate = Arc::new(Gate {
                        principal,
                        upstream: upstream.clone(),
                        policies: policies.clone(),
                        client: client.clone(),
                    });
                    tokio::spawn(serve(listener, move |req| {
                        let gate = gate.clone();
                        async move { Some(gate.handle(req).await) }
                    }));
                }
                tx.send(endpoints).unwrap();
                std::future::pending::<()>().await;
            });
        })
        .expect("gate thread");
    rx.recv().expect("gates started")
}

struct Gate {
    principal: String,
    upstream: String,
    policies: Arc<Policies>,
    client: reqwest::Client,
}

impl Gate {
    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = match read(req).await {
            Ok(read) => read,
            Err(answer) => return answer,
        };
        let path = parts.uri.path();
        let query = parts.uri.query().unwrap_or_default();
        let verdict = match self
            .policies
            .checks(parts.method.as_str(), path, query, &parts.headers, &body)
        {
            Ok(checks) => checks
                .into_iter()
                .find(|c| !self.policies.allowed(&self.principal, c))
                .map(|c| c.to_string()),
            Err(why) => Some(format!("unattributed request ({why})")),
        };
        // What DynamoDB validates and moto does not: expression names and values.
        let verdict = verdict.or_else(|| {
            let target = parts.headers.get("x-amz-target")?.to_str().ok()?;
            let operation = target.strip_prefix("DynamoDB_20120810.")?;
            crate::expressions::problem(operation, &body).map(|p| format!("a DynamoDB {operation}: {p}"))
        });
        if let Some(what) = verdict {
            let line = format!("{} is not allowed {what}", self.principal);
            if !self.principal.starts_with(PROBE_PREFIX) {
                // Straight to stderr: libtest's capture would hide it inside an unrelated test.
                let _ = std::io::Write::write_all(&mut std::io::stderr(), format!("IAM DENY: {line}\n").as_bytes());
                DENIALS.lock().unwrap().push(line.clone());
            }
            return access_denied(&parts.headers, &line);
        }
        forward(&self.client, &self.upstream, &parts, body).await
    }
}

/// A proxy's answer to one request: `None` drops the connection without an answer (a reset).
pub type Answer = Option<Response<Full<Bytes>>>;

/// Serves `listener` forever, one task per connection, each request answered by `handle`.
/// Shared by the IAM gates and the fault injector ([`crate::faults`]).
pub async fn serve<F, Fut>(listener: tokio::net::TcpListener, handle: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let io = hyper_util::rt::TokioIo::new(stream);
            let service = hyper::service::service_fn(move |req| {
                let answer = handle(req);
                async move { answer.await.ok_or(Dropped) }
            });
            // A service error makes hyper close the connection without writing an answer.
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(io, service)
                .await;
        });
    }
}

/// The error that makes [`serve`] drop a connection.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped without an answer")
    }
}

impl std::error::Error for Dropped {}

/// The request's head and whole body (or the answer to a body that could not be read).
pub async fn read(req: Request<Incoming>) -> Result<(http::request::Parts, Bytes), Response<Full<Bytes>>> {
    let (parts, body) = req.into_parts();
    match body.collect().await {
        Ok(b) => Ok((parts, b.to_bytes())),
        Err(e) => Err(plain(400, format!("body: {e}"))),
    }
}

/// Forwards one request to `upstream` unchanged and returns its answer (`502` when `upstream`
/// cannot be reached).
pub async fn forward(
    client: &reqwest::Client,
    upstream: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let url = format!(
        "{}{}",
        upstream.trim_end_matches('/'),
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut forward = client.request(parts.method.clone(), url).body(body);
    for (name, value) in &parts.headers {
        if !matches!(
            name.as_str(),
            "host" | "connection" | "expect" | "transfer-encoding" | "content-length"
        ) {
            forward = forward.header(name, value);
        }
    }
    match forward.send().await {
        Ok(resp) => {
            let mut out = Response::builder().status(resp.status());
            for (name, value) in resp.headers() {
                if !matches!(name.as_str(), "connection" | "transfer-encoding" | "content-length") {
                    out = out.header(name, value);
                }
            }
            let bytes = resp.bytes().await.unwrap_or_default();
            let len = bytes.len();
            let mut response = out.body(Full::new(bytes)).unwrap();
            // HEAD answers keep the object's length; others the body's.
            if parts.method != http::Method::HEAD {
                response
                    .headers_mut()
                    .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
            }
            response
        }
        Err(e) => plain(502, format!("local endpoint: {e}")),
    }
}

/// A new forwarding client (no redirects followed: answers pass through as they are).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(32)
        .build()
        .expect("client")
}

pub fn plain(status: u16, text: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(text)))
        .unwrap()
}

/// AWS's answer to a denied request: JSON protocols (`X-Amz-Target`) get an
/// `AccessDeniedException`, S3 its XML `AccessDenied`.
fn access_denied(headers: &http::HeaderMap, message: &str) -> Response<Full<Bytes>> {
    if headers.contains_key("x-amz-target") {
        let body = serde_json::json!({"__type": "AccessDeniedException", "message": message}).to_string();
        Response::builder()
            .status(400)
            .header("content-type", "application/x-amz-json-1.0")
            .header("x-amzn-query-error", "AccessDenied;Sender")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    } else {
        let body = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code><Message>{}</Message></Error>",
            message.replace('&', "&amp;").replace('<', "&lt;")
        );
        Response::builder()
            .status(403)
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    }
}
