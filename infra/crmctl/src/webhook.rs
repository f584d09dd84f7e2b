//! `crmctl webhook listen --port N`: a local receiver that prints every delivery it can verify
//! (Standard Webhooks signature and timestamp), one JSON line each, so a newcomer can watch the
//! event stream of `make dev`. With `--api` and `--api-key` it registers itself as an endpoint
//! of that tenant (`http://127.0.0.1:N/`, loopback: the stack must run with
//! `WEBHOOK_ALLOW_LOOPBACK=true`) and uses the secret it is given; with `--secret` it only
//! verifies. Unverifiable deliveries are answered `401` and reported on stderr.

use std::convert::Infallible;
use std::sync::Arc;

use clap::Args;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};

use crm_shared::events::signing::verify;
use crm_shared::secret::Secret;

use crate::CliError;

#[derive(Args)]
pub struct Listen {
    /// Loopback port to listen on.
    #[arg(long)]
    port: u16,
    /// The endpoint's secret (`whsec_…`), when the endpoint exists already.
    #[arg(long)]
    secret: Option<String>,
    /// The API's base URL (e.g. http://127.0.0.1:3000), to register this receiver.
    #[arg(long)]
    api: Option<String>,
    /// An admin API key of the tenant, to register this receiver.
    #[arg(long)]
    api_key: Option<String>,
}

pub async fn listen(args: Listen) -> Result<Value, CliError> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .map_err(|e| CliError(format!("cannot listen on 127.0.0.1:{}: {e}", args.port)))?;
    let secret = match (&args.secret, &args.api, &args.api_key) {
        (Some(s), _, _) => Secret::new(s.clone()),
        (None, Some(api), Some(key)) => register(api, key, args.port).await?,
        _ => {
            return Err(CliError(
                "give --secret, or --api and --api-key to register this receiver".into(),
            ));
        }
    };
    eprintln!("crmctl: listening on http://127.0.0.1:{} (Ctrl-C stops)", args.port);
    let secret = Arc::new(secret);
    loop {
        let (stream, _) = listener.accept().await.map_err(|e| CliError(e.to_string()))?;
        let secret = secret.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| receive(secret.clone(), req));
            let io = hyper_util::rt::TokioIo::new(stream);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await;
        });
    }
}

/// Creates an endpoint for this receiver; its secret (shown once).
async fn register(api: &str, key: &str, port: u16) -> Result<Secret, CliError> {
    let url = format!("{}/v1/webhook-endpoints", api.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .bearer_auth(key)
        .json(&json!({"url": format!("http://127.0.0.1:{port}/"), "description": "crmctl webhook listen"}))
        .send()
        .await
        .map_err(|e| CliError(format!("registering the receiver: {e}")))?;
    let status = response.status();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    if !status.is_success() {
        return Err(CliError(format!("registering the receiver: {status} {body}")));
    }
    eprintln!("crmctl: registered as webhook endpoint {}", body["id"]);
    body["secret"]
        .as_str()
        .map(Secret::new)
        .ok_or_else(|| CliError("the API returned no secret".into()))
}

async fn receive(secret: Arc<Secret>, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (id, timestamp, signature) = (
        header("webhook-id"),
        header("webhook-timestamp"),
        header("webhook-signature"),
    );
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    let status = match verify(&secret, &id, &timestamp, &signature, &body, now) {
        Ok(()) => {
            let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            println!("{}", json!({"webhook_id": id, "verified": true, "event": event}));
            204
        }
        Err(e) => {
            eprintln!("crmctl: delivery {id:?} refused: {e}");
            401
        }
    };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("status is valid"))
}
