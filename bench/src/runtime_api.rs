//! A minimal Lambda Runtime API (the part a function's runtime client speaks): hands out
//! invocations on `GET /2018-06-01/runtime/invocation/next` and takes their results on
//! `POST .../{id}/response` and `.../{id}/error`. Several processes may share one endpoint
//! (they take invocations from one queue), as concurrent execution environments would.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinSet;

/// What the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Response(Bytes),
    Error(Bytes),
}

struct Invocation {
    id: String,
    body: Bytes,
}

struct Inner {
    queue_tx: mpsc::UnboundedSender<Invocation>,
    queue_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Reply>>>,
    first_next: Mutex<Option<Instant>>,
    next_seen: Notify,
    init_error: Mutex<Option<String>>,
    next_id: AtomicU64,
}

pub struct RuntimeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        // The accept loop owns every connection task: aborting it ends them all.
        self.server.abort();
    }
}

impl RuntimeApi {
    pub async fn start() -> std::io::Result<RuntimeApi> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (queue_tx, queue_rx) = mpsc::unbounded_channel();
        let inner = Arc::new(Inner {
            queue_tx,
            queue_rx: tokio::sync::Mutex::new(queue_rx),
            pending: Mutex::new(HashMap::new()),
            first_next: Mutex::new(None),
            next_seen: Notify::new(),
            init_error: Mutex::new(None),
            next_id: AtomicU64::new(0),
        });
        let server = tokio::spawn(serve(listener, inner.clone()));
        Ok(RuntimeApi { addr, inner, server })
    }

    /// `AWS_LAMBDA_RUNTIME_API` for a function using this endpoint.
    pub fn host_port(&self) -> String {
        self.addr.to_string()
    }

    /// When a function first asked for an event (`None` if none has yet).
    pub fn first_next(&self) -> Option<Instant> {
        *self.inner.first_next.lock().expect("first_next")
    }

    /// Waits until a function asks for its first event; `None` on timeout.
    pub async fn wait_first_next(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.next_seen.notified();
            if let Some(at) = self.first_next() {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.first_next();
            }
        }
    }

    pub fn init_error(&self) -> Option<String> {
        self.inner.init_error.lock().expect("init_error").clone()
    }

    /// Queues an invocation and waits for its result.
    pub async fn invoke(&self, body: Bytes, timeout: Duration) -> Result<Reply, String> {
        let id = format!(
            "bench-{:08}-{}",
            self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            self.addr.port()
        );
        let (tx, rx) = oneshot::channel();
        self.inner.pending.lock().expect("pending").insert(id.clone(), tx);
        self.inner
            .queue_tx
            .send(Invocation { id: id.clone(), body })
            .map_err(|_| "runtime API stopped".to_owned())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(format!("invocation {id} dropped")),
            Err(_) => {
                self.inner.pending.lock().expect("pending").remove(&id);
                match self.init_error() {
                    Some(e) => Err(format!("function failed to initialise: {e}")),
                    None => Err(format!("invocation {id} timed out after {timeout:?}")),
                }
            }
        }
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
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
    }
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(body))
        .expect("valid response")
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}"));
    };
    if method == hyper::Method::GET && rest == "invocation/next" {
        {
            let mut first = inner.first_next.lock().expect("first_next");
            if first.is_none() {
                *first = Some(Instant::now());
            }
        }
        inner.next_seen.notify_waiters();
        let invocation = {
            let mut rx = inner.queue_rx.lock().await;
            rx.recv().await
        };
        let Some(invocation) = invocation else {
            return reply(StatusCode::INTERNAL_SERVER_ERROR, Bytes::from_static(b"{}"));
        };
        let deadline_ms = chrono::Utc::now().timestamp_millis() + 60_000;
        return Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", &invocation.id)
            .header("lambda-runtime-deadline-ms", deadline_ms.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                "arn:aws:lambda:us-east-1:123456789012:function:bench",
            )
            .header(
                "lambda-runtime-trace-id",
                "Root=1-00000000-000000000000000000000000;Sampled=0",
            )
            .body(Full::new(invocation.body))
            .expect("valid response");
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    if method == hyper::Method::POST && rest == "init/error" {
        *inner.init_error.lock().expect("init_error") = Some(String::from_utf8_lossy(&body).into_owned());
        return reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"));
    }
    if method == hyper::Method::POST
        && let Some(tail) = rest.strip_prefix("invocation/")
        && let Some((id, kind)) = tail.split_once('/')
    {
        let result = match kind {
            "response" => Reply::Response(body),
            "error" => Reply::Error(body),
            _ => return reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}")),
        };
        if let Some(tx) = inner.pending.lock().expect("pending").remove(id) {
            let _ = tx.send(result);
        }
        return reply(StatusCode::ACCEPTED, Bytes::from_static(b"{}"));
    }
    reply(StatusCode::NOT_FOUND, Bytes::from_static(b"{}"))
}
