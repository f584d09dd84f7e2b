//! Local API gateway: turns each HTTP request into the API Gateway HTTP API (v2) event that
//! AWS would deliver, hands it to the same handler function the Lambda runs, and writes the
//! handler's response back. No second implementation of routing or auth.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use base64::Engine;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use lambda_http::{Body, Response};
use serde_json::json;
use tokio::net::TcpListener;

use crm_shared::blob::S3Blobs;
use crm_shared::jobs::SqsQueue;
use crm_shared::store::DynamoStore;

/// Everything the local gateway can route to (the HTTP API's routes in `template.yaml`).
pub struct Handlers {
    pub api: api_fn::Deps<DynamoStore, S3Blobs, SqsQueue>,
    pub webhook: webhook_fn::Deps<DynamoStore, SqsQueue, SqsQueue>,
    /// The web console on the same origin (`None`: API only).
    pub console: Option<crate::console::StaticSite>,
}

/// Serves until the listener fails or the task is dropped.
pub async fn serve(listener: TcpListener, handlers: Arc<Handlers>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handlers = handlers.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handlers = handlers.clone();
                async move { Ok::<_, Infallible>(handle(&handlers, req).await) }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn handle(handlers: &Handlers, req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
    let path = req.uri().path();
    let is_api = path == "/v1" || path.starts_with("/v1/") || path.trim_end_matches('/') == webhook_fn::WEBHOOK_PATH;
    if !is_api {
        let head = req.method() == http::Method::HEAD;
        let site = handlers
            .console
            .as_ref()
            .filter(|_| head || req.method() == http::Method::GET);
        return match site.and_then(|site| site.serve(head, path)) {
            Some(file) => file,
            None => plain(404, "{\"message\":\"Not Found\"}"),
        };
    }
    let (parts, body) = req.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return plain(400, "could not read request body"),
    };
    let event = api_gateway_event(&parts, &bytes);
    let request = match lambda_http::request::from_str(&event.to_string()) {
        Ok(r) => r,
        Err(e) => {
            return plain(
                400,
                &format!("request cannot be expressed as an API Gateway event: {e}"),
            );
        }
    };
    let path = parts.uri.path();
    let result = if path == "/v1" || path.starts_with("/v1/") {
        api_fn::handle(&handlers.api, request).await
    } else {
        webhook_fn::handle(&handlers.webhook, request).await
    };
    match result {
        Ok(resp) => to_hyper(resp),
        Err(e) => {
            tracing::error!(error = %e, "handler failed");
            plain(500, "{\"message\":\"Internal Server Error\"}")
        }
    }
}

/// The API Gateway HTTP API payload format 2.0 for this request.
pub fn api_gateway_event(parts: &http::request::Parts, body: &[u8]) -> serde_json::Value {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    let mut cookies = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == http::header::COOKIE {
            cookies.extend(value.split(';').map(|c| c.trim().to_owned()));
            continue;
        }
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push(',');
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut query: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in form_pairs(raw_query) {
        query
            .entry(k)
            .and_modify(|existing| {
                existing.push(',');
                existing.push_str(&v);
            })
            .or_insert(v);
    }
    // API Gateway passes text as is and base64-encodes everything else.
    let (body, is_base64) = match std::str::from_utf8(body) {
        _ if body.is_empty() => (serde_json::Value::Null, false),
        Ok(text) => (json!(text), false),
        Err(_) => (json!(base64::engine::general_purpose::STANDARD.encode(body)), true),
    };
    let now = chrono::Utc::now();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": parts.uri.path(),
        "rawQueryString": raw_query,
        "cookies": if cookies.is_empty() { serde_json::Value::Null } else { json!(cookies) },
        "headers": headers,
        "queryStringParameters": if query.is_empty() { serde_json::Value::Null } else { json!(query) },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": parts.method.as_str(),
                "path": parts.uri.path(),
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").cloned().unwrap_or_default(),
            },
            "requestId": crm_shared::ids::new_id(),
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": body,
        "isBase64Encoded": is_base64,
    })
}

/// `application/x-www-form-urlencoded` pairs, percent-decoded as API Gateway does.
fn form_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push((hi * 16 + lo) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn to_hyper(resp: Response<Body>) -> hyper::Response<Full<Bytes>> {
    let (parts, body) = resp.into_parts();
    let bytes = match body {
        Body::Empty => Bytes::new(),
        Body::Text(t) => Bytes::from(t),
        Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    hyper::Response::from_parts(parts, Full::new(bytes))
}

fn plain(status: u16, body: &str) -> hyper::Response<Full<Bytes>> {
    hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .expect("valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: &str, uri: &str) -> http::request::Parts {
        let (parts, _) = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("authorization", "Bearer x")
            .header("x-multi", "a")
            .header("x-multi", "b")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    #[test]
    fn events_deserialize_into_lambda_requests() {
        use lambda_http::RequestExt;
        let event = api_gateway_event(&parts("POST", "/v1/contacts?tag=vip&q=J%C3%BC+x"), b"{\"a\":1}");
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert_eq!(req.method(), "POST");
        assert_eq!(req.uri().path(), "/v1/contacts");
        assert_eq!(req.headers()["authorization"], "Bearer x");
        let q = req.query_string_parameters();
        assert_eq!(q.first("tag"), Some("vip"));
        assert_eq!(q.first("q"), Some("Jü x"));
        assert!(matches!(req.body(), Body::Text(t) if t == "{\"a\":1}"));
    }

    #[test]
    fn binary_bodies_are_base64_encoded() {
        let event = api_gateway_event(&parts("POST", "/x"), &[0xff, 0x00, 0x10]);
        assert_eq!(event["isBase64Encoded"], true);
        let req = lambda_http::request::from_str(&event.to_string()).unwrap();
        assert!(matches!(req.body(), Body::Binary(b) if b == &[0xff, 0x00, 0x10]));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
