//! Meta's Graph API: the calls this backend makes, over one shared HTTP client (rustls,
//! connection reuse across invocations, bounded timeouts).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use serde::Deserialize;

use crate::config::GraphConfig;
use crate::secret::Secret;

/// Largest media WhatsApp accepts (documents: 100 MB).
pub const MAX_MEDIA_BYTES: u64 = 100 * 1024 * 1024;

#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum GraphCallError {
    /// Meta answered with an error status; `code` is Meta's error code when it sent one.
    #[error("Graph API answered HTTP {status} (code {code:?}): {message}")]
    Api {
        status: u16,
        code: Option<i64>,
        message: String,
        /// `error.error_data.details`, Meta's longer explanation.
        details: Option<String>,
    },
    /// No usable answer: connection, timeout or an unreadable body.
    #[error("Graph API unreachable: {0}")]
    Transport(String),
    /// The request may have reached Meta but no answer came back (a timeout or a reset after it
    /// was sent, an unreadable success): a send may have been accepted, so it must not be
    /// repeated blindly.
    #[error("no answer from the Graph API after the request was sent: {0}")]
    OutcomeUnknown(String),
    #[error("media is larger than {MAX_MEDIA_BYTES} bytes")]
    TooLarge,
}

/// What kind of failure a Graph call's error is: the one classification of Meta's errors. The
/// sender decides by it what becomes of a send, the media worker whether to try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphErrorClass {
    /// Throttling, Meta-side trouble or the network: may succeed later, with backoff.
    Transient,
    /// The (business, consumer) pair rate limit: this recipient, not before the pair interval.
    PairRateLimit,
    /// The access token was rejected: nothing works for the tenant until an operator replaces it.
    TokenInvalid,
    /// Will fail the same way again (bad request, recipient unable to receive, …).
    Permanent,
    /// Meta may or may not have acted on the request ([`GraphCallError::OutcomeUnknown`]).
    OutcomeUnknown,
}

/// Meta error codes with a class of their own (Meta's "WhatsApp error codes" and Graph API
/// error handling pages); any other code is classed by its HTTP status. `131049` (marketing
/// held back for this user) stays permanent: it asks for a retry much later, not a backoff.
const META_ERROR_CLASSES: [(i64, GraphErrorClass); 9] = [
    // Access token expired or invalid.
    (190, GraphErrorClass::TokenInvalid),
    // Pair rate limit hit.
    (131056, GraphErrorClass::PairRateLimit),
    // Cloud API throughput reached.
    (130429, GraphErrorClass::Transient),
    // Spam rate limit hit.
    (131048, GraphErrorClass::Transient),
    // Something went wrong (generic, temporary).
    (131000, GraphErrorClass::Transient),
    // Application request limit reached.
    (4, GraphErrorClass::Transient),
    // WhatsApp Business Account rate limit reached.
    (80007, GraphErrorClass::Transient),
    // Registration/deregistration rate limit.
    (133016, GraphErrorClass::Transient),
    // Temporary API downtime.
    (2, GraphErrorClass::Transient),
];

/// Classifies a failed Graph call by Meta's error code, else by its HTTP status (`None`: no
/// answer at all, a network failure).
pub fn classify_graph_error(http_status: Option<u16>, code: Option<i64>) -> GraphErrorClass {
    if let Some((_, class)) = META_ERROR_CLASSES.iter().find(|(c, _)| Some(*c) == code) {
        return *class;
    }
    match http_status {
        None => GraphErrorClass::Transient,
        Some(401) => GraphErrorClass::TokenInvalid,
        Some(s) if s >= 500 || s == 429 => GraphErrorClass::Transient,
        Some(_) => GraphErrorClass::Permanent,
    }
}

impl GraphCallError {
    /// This error's class (see [`classify_graph_error`]).
    pub fn class(&self) -> GraphErrorClass {
        match self {
            GraphCallError::Api { status, code, .. } => classify_graph_error(Some(*status), *code),
            GraphCallError::Transport(_) => classify_graph_error(None, None),
            GraphCallError::OutcomeUnknown(_) => GraphErrorClass::OutcomeUnknown,
            GraphCallError::TooLarge => GraphErrorClass::Permanent,
        }
    }
}

/// What `GET /{version}/{media-id}` returns.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct MediaInfo {
    pub url: String,
    #[serde(default)]
    pub mime_type: Option<String>,
    #[serde(default)]
    pub sha256: Option<String>,
    #[serde(default, deserialize_with = "number_or_string")]
    pub file_size: Option<u64>,
}

fn number_or_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumOrStr {
        N(u64),
        S(String),
    }
    Ok(match Option::<NumOrStr>::deserialize(d)? {
        Some(NumOrStr::N(n)) => Some(n),
        Some(NumOrStr::S(s)) => s.parse().ok(),
        None => None,
    })
}

/// The media calls, as a port for the media worker.
pub trait MediaSource: Send + Sync {
    fn media_info(
        &self,
        media_id: &str,
        token: &Secret,
    ) -> impl Future<Output = Result<MediaInfo, GraphCallError>> + Send;
    /// Starts downloading `url` with the tenant's token: the body arrives as a stream of
    /// chunks, read as fast as the caller takes them (nothing is buffered whole). A declared
    /// length above [`MAX_MEDIA_BYTES`] is [`GraphCallError::TooLarge`] before any byte is read;
    /// the caller counts the bytes it takes.
    fn download(&self, url: &str, token: &Secret) -> impl Future<Output = Result<MediaStream, GraphCallError>> + Send;
}

/// A media file's body, chunk by chunk.
pub type MediaStream = futures::stream::BoxStream<'static, Result<Bytes, GraphCallError>>;

/// How long one media download may take end to end (the client's default is for API calls).
/// The media worker stops a transfer earlier when its invocation runs out of time.
pub const DOWNLOAD_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct GraphClient {
    /// Built on first use and kept for the life of the process (clones share it): building it
    /// reads and parses the system's CA roots, which need not delay a cold start.
    http: Arc<OnceLock<Result<reqwest::Client, String>>>,
    base: String,
    version: String,
    send_timeout: Duration,
}

impl GraphClient {
    /// No I/O happens here; the HTTP client is built on the first call.
    pub fn new(config: &GraphConfig) -> Result<Self, GraphCallError> {
        Ok(GraphClient {
            http: Arc::default(),
            base: config.base_url.clone(),
            version: config.version.clone(),
            send_timeout: SEND_TIMEOUT,
        })
    }

    /// Another limit on how long a send waits for Meta's answer (tests; the default is
    /// [`SEND_TIMEOUT`]).
    pub fn with_send_timeout(mut self, timeout: Duration) -> Self {
        self.send_timeout = timeout;
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/{}/{}", self.base, self.version, path.trim_start_matches('/'))
    }

    /// The shared HTTP client (rustls, connection reuse across invocations, bounded timeouts).
    pub fn http(&self) -> Result<&reqwest::Client, GraphCallError> {
        self.http
            .get_or_init(|| {
                reqwest::Client::builder()
                    .connect_timeout(Duration::from_secs(3))
                    .timeout(Duration::from_secs(30))
                    .pool_idle_timeout(Duration::from_secs(50))
                    .user_agent(concat!("wcrm/", env!("CARGO_PKG_VERSION")))
                    .build()
                    .map_err(|e| e.to_string())
            })
            .as_ref()
            .map_err(|e| GraphCallError::Transport(format!("HTTP client unavailable: {e}")))
    }
}

/// Meta's error envelope: `{"error": {"message", "type", "code", "error_subcode", ...}}`.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    code: Option<i64>,
    #[serde(default)]
    error_data: Option<ErrorData>,
}

#[derive(Debug, Deserialize)]
struct ErrorData {
    #[serde(default)]
    details: Option<String>,
}

/// Turns a non-success response into [`GraphCallError::Api`].
pub async fn api_error(resp: reqwest::Response) -> GraphCallError {
    let status = resp.status().as_u16();
    let body = resp.bytes().await.unwrap_or_default();
    let parsed: Option<ErrorEnvelope> = serde_json::from_slice(&body).ok();
    let details = parsed
        .as_ref()
        .and_then(|e| e.error.error_data.as_ref())
        .and_then(|d| d.details.clone());
    GraphCallError::Api {
        status,
        code: parsed.as_ref().and_then(|e| e.error.code),
        message: parsed
            .and_then(|e| e.error.message)
            .unwrap_or_else(|| "no error message".into()),
        details,
    }
}

fn transport(e: reqwest::Error) -> GraphCallError {
    // reqwest errors carry the URL; media URLs are signed and short-lived, so drop it.
    GraphCallError::Transport(e.without_url().to_string())
}

/// A failed send request: only a connection that never opened proves Meta did not get it.
fn send_failure(e: reqwest::Error) -> GraphCallError {
    if e.is_connect() {
        transport(e)
    } else {
        GraphCallError::OutcomeUnknown(e.without_url().to_string())
    }
}

/// How long a send waits for Meta's answer. Part of the sender's time budget (see
/// `SenderConfig` in the sender): a send that outlives it is `unknown`, never resent.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(10);

impl MediaSource for GraphClient {
    async fn media_info(&self, media_id: &str, token: &Secret) -> Result<MediaInfo, GraphCallError> {
        let resp = self
            .http()?
            .get(self.url(media_id))
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        resp.json::<MediaInfo>().await.map_err(transport)
    }

    async fn download(&self, url: &str, token: &Secret) -> Result<MediaStream, GraphCallError> {
        let resp = self
            .http()?
            .get(url)
            .bearer_auth(token.expose())
            .timeout(DOWNLOAD_TIMEOUT)
            .send()
            .await
            .map_err(transport)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        if resp.content_length().is_some_and(|n| n > MAX_MEDIA_BYTES) {
            return Err(GraphCallError::TooLarge);
        }
        // One chunk per poll, as hyper reads it off the connection: the caller's pace is the
        // download's pace.
        Ok(Box::pin(futures::stream::try_unfold(resp, |mut resp| async move {
            Ok(resp.chunk().await.map_err(transport)?.map(|chunk| (chunk, resp)))
        })))
    }
}

/// Sending messages, as a port for the sender.
pub trait MessageSender: Send + Sync {
    /// `POST /{version}/{phone-number-id}/messages`; returns the wamid Meta assigned.
    fn send_message(
        &self,
        phone_number_id: &str,
        token: &Secret,
        payload: &serde_json::Value,
    ) -> impl Future<Output = Result<String, GraphCallError>> + Send;
}

#[derive(Deserialize)]
struct SendResponse {
    messages: Vec<SentMessage>,
}

#[derive(Deserialize)]
struct SentMessage {
    id: String,
}

impl MessageSender for GraphClient {
    async fn send_message(
        &self,
        phone_number_id: &str,
        token: &Secret,
        payload: &serde_json::Value,
    ) -> Result<String, GraphCallError> {
        let resp = self
            .http()?
            .post(self.url(&format!("{phone_number_id}/messages")))
            .bearer_auth(token.expose())
            .timeout(self.send_timeout)
            .json(payload)
            .send()
            .await
            .map_err(send_failure)?;
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        // Meta accepted the message: an answer we cannot read still means it may be on its way.
        let body: SendResponse = resp.json().await.map_err(send_failure)?;
        body.messages
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or_else(|| GraphCallError::OutcomeUnknown("send response carried no message id".into()))
    }
}

/// The template endpoints of a WhatsApp Business Account, as a port for the registry.
pub trait TemplateApi: Send + Sync {
    /// `GET /{version}/{waba-id}/message_templates`, every page (Meta's cursor paging).
    fn list_templates(
        &self,
        waba_id: &str,
        token: &Secret,
    ) -> impl Future<Output = Result<Vec<serde_json::Value>, GraphCallError>> + Send;

    /// `POST /{version}/{waba-id}/message_templates`; Meta's answer (`id`, `status`, `category`).
    fn create_template(
        &self,
        waba_id: &str,
        token: &Secret,
        body: &serde_json::Value,
    ) -> impl Future<Output = Result<serde_json::Value, GraphCallError>> + Send;

    /// `DELETE /{version}/{waba-id}/message_templates?name=…` (every language), or with
    /// `hsm_id` one language's template.
    fn delete_template(
        &self,
        waba_id: &str,
        token: &Secret,
        name: &str,
        hsm_id: Option<&str>,
    ) -> impl Future<Output = Result<(), GraphCallError>> + Send;
}

/// Fields asked of Meta's template list.
const TEMPLATE_FIELDS: &str =
    "id,name,language,status,category,parameter_format,components,quality_score,rejected_reason";

/// Templates per page (Meta's maximum page size for this edge is larger; 100 keeps pages small).
const TEMPLATE_PAGE: &str = "100";

/// A runaway paging loop stops here (200 pages of 100: far beyond any WABA's templates).
const MAX_TEMPLATE_PAGES: usize = 200;

#[derive(Deserialize)]
struct TemplatePage {
    #[serde(default)]
    data: Vec<serde_json::Value>,
    #[serde(default)]
    paging: Option<Paging>,
}

#[derive(Deserialize)]
struct Paging {
    #[serde(default)]
    cursors: Option<PagingCursors>,
    #[serde(default)]
    next: Option<String>,
}

#[derive(Deserialize)]
struct PagingCursors {
    #[serde(default)]
    after: Option<String>,
}

/// `url` with a percent-encoded query.
fn with_query(url: &str, query: &[(&str, &str)]) -> Result<reqwest::Url, GraphCallError> {
    reqwest::Url::parse_with_params(url, query).map_err(|e| GraphCallError::Transport(format!("bad Graph URL: {e}")))
}

impl GraphClient {
    async fn json_or_error(resp: reqwest::Response) -> Result<serde_json::Value, GraphCallError> {
        if !resp.status().is_success() {
            return Err(api_error(resp).await);
        }
        resp.json().await.map_err(transport)
    }
}

impl TemplateApi for GraphClient {
    async fn list_templates(&self, waba_id: &str, token: &Secret) -> Result<Vec<serde_json::Value>, GraphCallError> {
        let url = self.url(&format!("{waba_id}/message_templates"));
        let mut all = Vec::new();
        let mut after: Option<String> = None;
        for _ in 0..MAX_TEMPLATE_PAGES {
            let mut query = vec![("fields", TEMPLATE_FIELDS), ("limit", TEMPLATE_PAGE)];
            if let Some(cursor) = &after {
                query.push(("after", cursor));
            }
            let resp = self
                .http()?
                .get(with_query(&url, &query)?)
                .bearer_auth(token.expose())
                .send()
                .await
                .map_err(transport)?;
            let page: TemplatePage = serde_json::from_value(Self::json_or_error(resp).await?)
                .map_err(|e| GraphCallError::Transport(format!("unreadable template page: {e}")))?;
            all.extend(page.data);
            // Meta leaves `next` out on the last page.
            let next = page
                .paging
                .filter(|p| p.next.is_some())
                .and_then(|p| p.cursors)
                .and_then(|c| c.after);
            match next {
                Some(cursor) => after = Some(cursor),
                None => return Ok(all),
            }
        }
        Err(GraphCallError::Transport("template list did not end".into()))
    }

    async fn create_template(
        &self,
        waba_id: &str,
        token: &Secret,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, GraphCallError> {
        let resp = self
            .http()?
            .post(self.url(&format!("{waba_id}/message_templates")))
            .bearer_auth(token.expose())
            .json(body)
            .send()
            .await
            .map_err(transport)?;
        Self::json_or_error(resp).await
    }

    async fn delete_template(
        &self,
        waba_id: &str,
        token: &Secret,
        name: &str,
        hsm_id: Option<&str>,
    ) -> Result<(), GraphCallError> {
        let mut query = vec![("name", name)];
        if let Some(id) = hsm_id {
            query.push(("hsm_id", id));
        }
        let resp = self
            .http()?
            .delete(with_query(&self.url(&format!("{waba_id}/message_templates")), &query)?)
            .bearer_auth(token.expose())
            .send()
            .await
            .map_err(transport)?;
        Self::json_or_error(resp).await.map(|_| ())
    }
}

/// Whether `data` matches a checksum Meta announced, which arrives as hex or as base64.
pub fn sha256_matches(data: &[u8], announced: &str) -> bool {
    use sha2::{Digest, Sha256};
    digest_matches(&Sha256::digest(data), announced)
}

/// Whether a SHA-256 `digest` (computed as the bytes went by) matches a checksum Meta
/// announced, in hex or base64.
pub fn digest_matches(digest: &[u8], announced: &str) -> bool {
    use base64::Engine;
    let announced = announced.trim();
    hex::encode(digest).eq_ignore_ascii_case(announced)
        || base64::engine::general_purpose::STANDARD.encode(digest) == announced
}

#[cfg(test)]
mod tests {
    use super::*;
    use wiremock::matchers::{header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn client(base: &str) -> GraphClient {
        GraphClient::new(&GraphConfig {
            base_url: base.to_owned(),
            version: "v25.0".into(),
        })
        .unwrap()
    }

    #[test]
    fn checksums_in_either_encoding() {
        let data = b"hello";
        assert!(sha256_matches(
            data,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        ));
        assert!(sha256_matches(
            data,
            "2CF24DBA5FB0A30E26E83B2AC5B9E29E1B161E5C1FA7425E73043362938B9824"
        ));
        assert!(sha256_matches(data, "LPJNul+wow4m6DsqxbninhsWHlwfp0JecwQzYpOLmCQ="));
        assert!(!sha256_matches(data, "00"));
    }

    #[test]
    fn error_classes() {
        use GraphErrorClass::*;
        assert_eq!(classify_graph_error(Some(400), Some(130429)), Transient);
        assert_eq!(classify_graph_error(Some(400), Some(131048)), Transient);
        assert_eq!(classify_graph_error(Some(500), Some(131000)), Transient);
        assert_eq!(classify_graph_error(Some(400), Some(4)), Transient);
        assert_eq!(classify_graph_error(Some(400), Some(80007)), Transient);
        assert_eq!(classify_graph_error(Some(503), None), Transient);
        assert_eq!(classify_graph_error(Some(429), None), Transient);
        assert_eq!(classify_graph_error(None, None), Transient);
        assert_eq!(classify_graph_error(Some(400), Some(131056)), PairRateLimit);
        for code in [131047, 131026, 131049, 131051, 132000, 132001, 132012, 100] {
            assert_eq!(classify_graph_error(Some(400), Some(code)), Permanent, "{code}");
        }
        // 190 is a rejected token whatever the HTTP status says.
        assert_eq!(classify_graph_error(Some(401), Some(190)), TokenInvalid);
        assert_eq!(classify_graph_error(Some(400), Some(190)), TokenInvalid);
        assert_eq!(classify_graph_error(Some(401), None), TokenInvalid);
        assert_eq!(classify_graph_error(Some(404), None), Permanent);
        let api = |status, code| GraphCallError::Api {
            status,
            code,
            message: String::new(),
            details: None,
        };
        assert_eq!(api(400, Some(131056)).class(), PairRateLimit);
        assert_eq!(GraphCallError::Transport("x".into()).class(), Transient);
        assert_eq!(GraphCallError::TooLarge.class(), Permanent);
    }

    #[tokio::test]
    async fn media_info_and_download_send_the_bearer_token() {
        let server = MockServer::start().await;
        let media_url = format!("{}/download/abc", server.uri());
        Mock::given(method("GET"))
            .and(path("/v25.0/m1"))
            .and(header("authorization", "Bearer tok"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "messaging_product": "whatsapp", "url": media_url, "mime_type": "image/jpeg",
                "sha256": "x", "file_size": "5", "id": "m1"
            })))
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/download/abc"))
            .and(header("authorization", "Bearer tok"))
            .respond_with(ResponseTemplate::new(200).set_body_bytes(b"hello".to_vec()))
            .mount(&server)
            .await;
        let c = client(&server.uri());
        let token = Secret::new("tok");
        let info = c.media_info("m1", &token).await.unwrap();
        assert_eq!(info.file_size, Some(5));
        let chunks: Vec<Bytes> = futures::TryStreamExt::try_collect(c.download(&info.url, &token).await.unwrap())
            .await
            .unwrap();
        assert_eq!(chunks.concat(), b"hello");
    }

    #[tokio::test]
    async fn a_send_without_an_answer_is_unknown_and_one_never_connected_is_not() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(serde_json::json!({"messages": [{"id": "wamid.late"}]}))
                    .set_delay(Duration::from_millis(800)),
            )
            .mount(&server)
            .await;
        let slow = client(&server.uri()).with_send_timeout(Duration::from_millis(100));
        let err = slow
            .send_message("1", &Secret::new("t"), &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.class(), GraphErrorClass::OutcomeUnknown, "{err}");
        // Nothing listens on this port: the request never left, so a retry is safe.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let err = client(&format!("http://127.0.0.1:{port}"))
            .send_message("1", &Secret::new("t"), &serde_json::json!({}))
            .await
            .unwrap_err();
        assert_eq!(err.class(), GraphErrorClass::Transient, "{err}");
    }

    #[tokio::test]
    async fn meta_errors_are_typed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({
                "error": {"message": "Unsupported get request", "type": "GraphMethodException", "code": 100}
            })))
            .mount(&server)
            .await;
        let err = client(&server.uri())
            .media_info("gone", &Secret::new("t"))
            .await
            .unwrap_err();
        assert_eq!(
            err,
            GraphCallError::Api {
                status: 400,
                code: Some(100),
                message: "Unsupported get request".into(),
                details: None,
            }
        );
        assert_eq!(err.class(), GraphErrorClass::Permanent);
    }
}
