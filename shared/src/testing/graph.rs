//! [`FakeGraph`]: Meta's Graph API as the sender and the media worker see it
//! ([`MessageSender`], [`MediaSource`]), answering from a script and recording every call.
//!
//! Sends succeed with a fresh wamid unless an answer was queued; media is served from what
//! [`FakeGraph::add_media`] registered, an unknown media id or URL answers as Meta does
//! (`400`, code `100`). Clones share one script.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::Value;

use crate::graph::{GraphCallError, MediaInfo, MediaSource, MediaStream, MessageSender, TemplateApi};
use crate::secret::Secret;

/// One `send_message` call as the fake received it.
#[derive(Debug, Clone)]
pub struct SentRequest {
    pub phone_number_id: String,
    pub token: Secret,
    pub payload: Value,
}

type Hook = Arc<dyn Fn() + Send + Sync>;

#[derive(Default)]
struct Script {
    send_answers: VecDeque<Result<String, GraphCallError>>,
    sent: Vec<SentRequest>,
    media: HashMap<String, MediaInfo>,
    files: HashMap<String, Bytes>,
    media_info_faults: VecDeque<GraphCallError>,
    download_faults: VecDeque<GraphCallError>,
    /// Faults raised in the middle of a download's body (after half its chunks).
    body_faults: VecDeque<GraphCallError>,
    /// Downloads to stall after half their chunks (a connection that goes quiet).
    stalls: usize,
    media_info_calls: usize,
    download_calls: usize,
    on_download: Option<Hook>,
    wamids_issued: u64,
    /// The WABA's templates as Meta lists them (one object per language).
    templates: Vec<Value>,
    template_faults: VecDeque<GraphCallError>,
    template_calls: usize,
}

/// The size of the chunks a fake download arrives in.
pub const FAKE_CHUNK_BYTES: usize = 7;

#[derive(Clone, Default)]
pub struct FakeGraph {
    script: Arc<Mutex<Script>>,
}

/// An error answer from the Graph API, as `api_error` builds it from Meta's envelope.
pub fn meta_error(status: u16, code: Option<i64>) -> GraphCallError {
    GraphCallError::Api {
        status,
        code,
        message: format!("test error {code:?}"),
        details: None,
    }
}

impl FakeGraph {
    pub fn new() -> Self {
        FakeGraph::default()
    }

    fn script(&self) -> MutexGuard<'_, Script> {
        self.script.lock().expect("graph script")
    }

    /// The answer to the next `send_message` (later ones queue behind it).
    pub fn answer_next_send(&self, answer: Result<String, GraphCallError>) {
        self.script().send_answers.push_back(answer);
    }

    /// Every `send_message` call so far.
    pub fn sent(&self) -> Vec<SentRequest> {
        self.script().sent.clone()
    }

    /// Registers media `media_id` with its content: `media_info` announces its URL, size, type
    /// and SHA-256 (hex), `download` serves it.
    pub fn add_media(&self, media_id: &str, data: &[u8], mime_type: &str) -> MediaInfo {
        use sha2::{Digest, Sha256};
        let info = MediaInfo {
            url: format!("https://media.graph.test/{media_id}"),
            mime_type: Some(mime_type.to_owned()),
            sha256: Some(hex::encode(Sha256::digest(data))),
            file_size: Some(data.len() as u64),
        };
        self.set_media(media_id, info.clone(), Bytes::copy_from_slice(data));
        info
    }

    /// Registers media with an announcement that need not match its content.
    pub fn set_media(&self, media_id: &str, info: MediaInfo, data: Bytes) {
        let mut s = self.script();
        s.files.insert(info.url.clone(), data);
        s.media.insert(media_id.to_owned(), info);
    }

    pub fn fail_next_media_info(&self, error: GraphCallError) {
        self.script().media_info_faults.push_back(error);
    }

    pub fn fail_next_download(&self, error: GraphCallError) {
        self.script().download_faults.push_back(error);
    }

    /// Makes the next download fail after half its chunks (a connection lost mid-body).
    pub fn fail_next_download_midway(&self, error: GraphCallError) {
        self.script().body_faults.push_back(error);
    }

    /// Makes the next download go quiet after half its chunks, for ever.
    pub fn stall_next_download_midway(&self) {
        self.script().stalls += 1;
    }

    /// Runs `hook` during every download (e.g. to erase the contact meanwhile).
    pub fn on_download(&self, hook: impl Fn() + Send + Sync + 'static) {
        self.script().on_download = Some(Arc::new(hook));
    }

    pub fn media_info_calls(&self) -> usize {
        self.script().media_info_calls
    }

    pub fn download_calls(&self) -> usize {
        self.script().download_calls
    }

    /// Adds a template (Meta's list shape: `name`, `language`, `status`, `category`, `id`,
    /// `components` …) to the WABA.
    pub fn add_template(&self, template: Value) {
        self.script().templates.push(template);
    }

    /// The WABA's templates now.
    pub fn templates(&self) -> Vec<Value> {
        self.script().templates.clone()
    }

    /// Makes the next template call (list, create or delete) fail with `error`.
    pub fn fail_next_template_call(&self, error: GraphCallError) {
        self.script().template_faults.push_back(error);
    }

    /// Template calls so far.
    pub fn template_calls(&self) -> usize {
        self.script().template_calls
    }
}

impl FakeGraph {
    fn template_call(&self) -> Result<MutexGuard<'_, Script>, GraphCallError> {
        let mut s = self.script();
        s.template_calls += 1;
        match s.template_faults.pop_front() {
            Some(error) => Err(error),
            None => Ok(s),
        }
    }
}

fn same_template(t: &Value, name: &str, hsm_id: Option<&str>) -> bool {
    t["name"] == name && hsm_id.is_none_or(|id| t["id"] == id)
}

impl TemplateApi for FakeGraph {
    async fn list_templates(&self, _waba_id: &str, _token: &Secret) -> Result<Vec<Value>, GraphCallError> {
        Ok(self.template_call()?.templates.clone())
    }

    async fn create_template(&self, _waba_id: &str, _token: &Secret, body: &Value) -> Result<Value, GraphCallError> {
        let mut s = self.template_call()?;
        let id = format!("{}", 9_000_000 + s.templates.len());
        let mut stored = body.clone();
        stored["id"] = Value::String(id.clone());
        stored["status"] = Value::String("PENDING".into());
        s.templates.push(stored);
        Ok(serde_json::json!({"id": id, "status": "PENDING", "category": body["category"]}))
    }

    async fn delete_template(
        &self,
        _waba_id: &str,
        _token: &Secret,
        name: &str,
        hsm_id: Option<&str>,
    ) -> Result<(), GraphCallError> {
        let mut s = self.template_call()?;
        let before = s.templates.len();
        s.templates.retain(|t| !same_template(t, name, hsm_id));
        if s.templates.len() == before {
            return Err(meta_error(404, Some(100)));
        }
        Ok(())
    }
}

impl MessageSender for FakeGraph {
    async fn send_message(
        &self,
        phone_number_id: &str,
        token: &Secret,
        payload: &Value,
    ) -> Result<String, GraphCallError> {
        let mut s = self.script();
        s.sent.push(SentRequest {
            phone_number_id: phone_number_id.to_owned(),
            token: token.clone(),
            payload: payload.clone(),
        });
        match s.send_answers.pop_front() {
            Some(answer) => answer,
            None => {
                s.wamids_issued += 1;
                Ok(format!("wamid.test.{}", s.wamids_issued))
            }
        }
    }
}

impl MediaSource for FakeGraph {
    async fn media_info(&self, media_id: &str, _token: &Secret) -> Result<MediaInfo, GraphCallError> {
        let mut s = self.script();
        s.media_info_calls += 1;
        if let Some(error) = s.media_info_faults.pop_front() {
            return Err(error);
        }
        s.media.get(media_id).cloned().ok_or_else(|| meta_error(400, Some(100)))
    }

    /// Serves the file in chunks of [`FAKE_CHUNK_BYTES`], as a connection would.
    async fn download(&self, url: &str, _token: &Secret) -> Result<MediaStream, GraphCallError> {
        let hook = {
            let mut s = self.script();
            s.download_calls += 1;
            s.on_download.clone()
        };
        // Outside the lock: the hook may touch other fakes, or this one.
        if let Some(hook) = hook {
            hook();
        }
        let mut s = self.script();
        if let Some(error) = s.download_faults.pop_front() {
            return Err(error);
        }
        let data = s.files.get(url).cloned().ok_or_else(|| meta_error(404, None))?;
        let mut chunks: Vec<Result<Bytes, GraphCallError>> = (0..data.len())
            .step_by(FAKE_CHUNK_BYTES)
            .map(|at| Ok(data.slice(at..(at + FAKE_CHUNK_BYTES).min(data.len()))))
            .collect();
        let half = chunks.len().div_ceil(2);
        if let Some(error) = s.body_faults.pop_front() {
            chunks.truncate(half);
            chunks.push(Err(error));
        }
        if s.stalls > 0 {
            s.stalls -= 1;
            chunks.truncate(half);
            return Ok(Box::pin(
                futures::stream::iter(chunks).chain(futures::stream::pending()),
            ));
        }
        Ok(Box::pin(futures::stream::iter(chunks)))
    }
}
