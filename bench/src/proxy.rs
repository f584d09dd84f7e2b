//! A counting HTTP proxy between the functions and the local AWS endpoint: every request is
//! forwarded unchanged and counted by service and operation, so the binaries under test are
//! the real ones (no interceptor, no feature flag) and the count is what AWS would bill.
//! It can also hold every answer for a set time ([`CountingProxy::set_delay`]), standing in for
//! an endpoint that is slower than loopback moto (the latency scenario).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Requests by `service:Operation`, e.g. `dynamodb:GetItem`.
pub type Counts = BTreeMap<String, u64>;

struct Inner {
    upstream: String,
    client: reqwest::Client,
    counts: Mutex<Counts>,
    /// How long each answer is held before it goes back, in µs.
    delay_us: AtomicU64,
}

pub struct CountingProxy {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl CountingProxy {
    pub async fn start(upstream: &str) -> std::io::Result<CountingProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(64)
                .build()
                .map_err(std::io::Error::other)?,
            counts: Mutex::new(Counts::new()),
            delay_us: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, inner.clone()));
        Ok(CountingProxy { addr, inner, server })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Holds every answer `delay` before returning it (zero: none), from the next request on.
    pub fn set_delay(&self, delay: Duration) {
        self.inner.delay_us.store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// The counts since the last call, and a fresh start.
    pub fn take(&self) -> Counts {
        std::mem::take(&mut *self.inner.counts.lock().expect("counts"))
    }
}

async fn serve(listener: TcpListener, inner: Arc<Inner>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let inner = inner.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let inner = inner.clone();
                async move { Ok::<_, Infallible>(forward(&inner, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// `service:Operation` of an AWS request: the service from the SigV4 credential scope, the
/// operation from `X-Amz-Target` (JSON protocols: DynamoDB, SQS) or the REST shape (S3).
pub fn classify(method: &str, path: &str, query: &str, headers: &http::HeaderMap) -> String {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let service = header("authorization")
        .split("Credential=")
        .nth(1)
        .and_then(|c| c.split('/').nth(3))
        .unwrap_or("unknown")
        .to_owned();
    if let Some((_, op)) = header("x-amz-target").rsplit_once('.') {
        return format!("{service}:{op}");
    }
    if service == "s3" {
        let has_key = path.trim_start_matches('/').contains('/');
        let op = match (method, has_key) {
            ("GET", true) => "GetObject",
            ("PUT", true) if headers.contains_key("x-amz-copy-source") => "CopyObject",
            ("PUT", true) => "PutObject",
            ("HEAD", true) => "HeadObject",
            ("DELETE", true) => "DeleteObject",
            ("POST", false) if query.contains("delete") => "DeleteObjects",
            ("GET", false) if query.contains("list-type=2") => "ListObjectsV2",
            ("GET", false) => "ListObjects",
            _ => "other",
        };
        return format!("s3:{op}");
    }
    // Query protocol (form body) would carry `Action=`; the SDKs used here do not send it.
    format!("{service}:{method}")
}

async fn forward(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let op = classify(parts.method.as_str(), parts.uri.path(), &query, &parts.headers);
    *inner.counts.lock().expect("counts").entry(op).or_default() += 1;
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(StatusCode::BAD_REQUEST, "unreadable request body"),
    };
    let url = format!(
        "{}{}",
        inner.upstream,
        parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/")
    );
    let mut upstream = inner.client.request(parts.method.clone(), &url).body(body);
    for (name, value) in &parts.headers {
        if name == http::header::HOST || name == http::header::CONNECTION || name == http::header::CONTENT_LENGTH {
            continue;
        }
        upstream = upstream.header(name, value);
    }
    let resp = match upstream.send().await {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_GATEWAY, &e.to_string()),
    };
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.unwrap_or_default();
    let delay = inner.delay_us.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_micros(delay)).await;
    }
    let mut out = Response::builder().status(status);
    for (name, value) in &headers {
        if name == http::header::TRANSFER_ENCODING
            || name == http::header::CONNECTION
            || name == http::header::CONTENT_LENGTH
        {
            continue;
        }
        out = out.header(name, value);
    }
    out.body(Full::new(bytes)).expect("valid response")
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .body(Full::new(Bytes::from(message.to_owned())))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const AUTH_DDB: &str =
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/dynamodb/aws4_request, SignedHeaders=host, Signature=00";
    const AUTH_S3: &str =
        "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00";

    #[test]
    fn json_protocol_operations() {
        let h = headers(&[
            ("authorization", AUTH_DDB),
            ("x-amz-target", "DynamoDB_20120810.TransactWriteItems"),
        ]);
        assert_eq!(classify("POST", "/", "", &h), "dynamodb:TransactWriteItems");
        let h = headers(&[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=test/20260101/us-east-1/sqs/aws4_request, SignedHeaders=host, Signature=00",
            ),
            ("x-amz-target", "AmazonSQS.SendMessage"),
        ]);
        assert_eq!(classify("POST", "/", "", &h), "sqs:SendMessage");
    }

    #[test]
    fn s3_rest_operations() {
        let h = headers(&[("authorization", AUTH_S3)]);
        assert_eq!(classify("PUT", "/bucket/a/b.jpg", "x-id=PutObject", &h), "s3:PutObject");
        assert_eq!(
            classify("GET", "/bucket", "list-type=2&prefix=a", &h),
            "s3:ListObjectsV2"
        );
        assert_eq!(classify("POST", "/bucket", "delete", &h), "s3:DeleteObjects");
        assert_eq!(classify("HEAD", "/bucket/k", "", &h), "s3:HeadObject");
    }
}
