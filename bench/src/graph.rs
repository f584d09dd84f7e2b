//! A fake Graph API send endpoint (`POST /{version}/{phone-number-id}/messages`): answers
//! after a configurable delay with a fresh wamid, logs every arrival, and — when given a
//! per-second limit — answers Meta's throughput error `130429` to whatever exceeds it within
//! one aligned second, as the bench's stand-in for Meta's own enforcement. It also takes tenant
//! webhook deliveries at `/hooks/…` (answered `200`, counted).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

#[derive(Default)]
struct Log {
    /// Arrival times of accepted sends, µs since the Unix epoch.
    accepted_us: Vec<i64>,
    /// Wamids handed out, in order.
    wamids: Vec<String>,
    throttled: u64,
    /// The aligned second being counted and its arrivals (for the limit).
    second: i64,
    in_second: u32,
}

struct Inner {
    delay_ms: AtomicU64,
    limit: AtomicU32,
    next: AtomicU64,
    log: Mutex<Log>,
    /// Tenant webhook deliveries received at `/hooks/…` (the bench's webhook receiver).
    hooks: AtomicU64,
}

pub struct FakeGraph {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeGraph {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// What the fake Graph saw since the last [`FakeGraph::take`].
#[derive(Debug, Default, Clone)]
pub struct GraphLog {
    pub accepted_us: Vec<i64>,
    pub wamids: Vec<String>,
    pub throttled: u64,
}

pub fn unix_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or_default()
}

impl FakeGraph {
    pub async fn start() -> std::io::Result<FakeGraph> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            delay_ms: AtomicU64::new(0),
            limit: AtomicU32::new(0),
            next: AtomicU64::new(0),
            log: Mutex::new(Log::default()),
            hooks: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, inner.clone()));
        Ok(FakeGraph { addr, inner, server })
    }

    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Answer every send after `delay`; enforce `limit` sends per aligned second (0: none).
    pub fn configure(&self, delay: Duration, limit: u32) {
        self.inner.delay_ms.store(delay.as_millis() as u64, Ordering::Relaxed);
        self.inner.limit.store(limit, Ordering::Relaxed);
    }

    /// Webhook deliveries received at `{base_url}/hooks/…` so far.
    pub fn hooks_received(&self) -> u64 {
        self.inner.hooks.load(Ordering::Relaxed)
    }

    pub fn take(&self) -> GraphLog {
        let mut log = self.inner.log.lock().expect("graph log");
        let out = GraphLog {
            accepted_us: std::mem::take(&mut log.accepted_us),
            wamids: std::mem::take(&mut log.wamids),
            throttled: log.throttled,
        };
        log.throttled = 0;
        out
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
                async move { Ok::<_, Infallible>(handle(&inner, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("valid response")
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let now_us = unix_micros();
    let is_send = req.method() == hyper::Method::POST && req.uri().path().ends_with("/messages");
    if req.method() == hyper::Method::POST && req.uri().path().starts_with("/hooks/") {
        // A tenant's webhook endpoint: take the delivery and acknowledge it.
        let _ = req.into_body().collect().await;
        inner.hooks.fetch_add(1, Ordering::Relaxed);
        return json_response(StatusCode::OK, json!({}));
    }
    if !is_send {
        return json_response(
            StatusCode::NOT_FOUND,
            json!({"error": {"message": "not served by the bench", "code": 100}}),
        );
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let to = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("to").and_then(|t| t.as_str()).map(str::to_owned))
        .unwrap_or_default();
    let limit = inner.limit.load(Ordering::Relaxed);
    let wamid = {
        let mut log = inner.log.lock().expect("graph log");
        let second = now_us.div_euclid(1_000_000);
        if log.second != second {
            log.second = second;
            log.in_second = 0;
        }
        if limit > 0 && log.in_second >= limit {
            log.throttled += 1;
            None
        } else {
            log.in_second += 1;
            log.accepted_us.push(now_us);
            let wamid = format!("wamid.BENCH{:012}", inner.next.fetch_add(1, Ordering::Relaxed));
            log.wamids.push(wamid.clone());
            Some(wamid)
        }
    };
    let Some(wamid) = wamid else {
        return json_response(
            StatusCode::BAD_REQUEST,
            json!({"error": {"message": "(#130429) Rate limit hit", "type": "OAuthException", "code": 130429}}),
        );
    };
    let delay = inner.delay_ms.load(Ordering::Relaxed);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    json_response(
        StatusCode::OK,
        json!({
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to}],
            "messages": [{"id": wamid}]
        }),
    )
}
