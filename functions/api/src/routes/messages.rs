//! `GET /v1/contacts/{id}/messages`: the conversation, newest first, with short-lived links to
//! stored media.

use lambda_http::{Body, Request, Response};
use serde_json::{Value, json};

use crm_shared::blob::{LINK_TTL, MediaLinks};
use crm_shared::message::{MediaStatus, MessageRecord};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::contacts;
use crate::{ApiStore, Deps, ok_json};

pub async fn view<L: MediaLinks>(links: &L, m: &MessageRecord) -> Value {
    let (media, url) = match &m.media {
        None => (Value::Null, None),
        Some(media) => {
            let url = match (&media.status, &media.s3_key) {
                (MediaStatus::Available, Some(key)) => {
                    match links.presigned_get(key, media.mime_type.as_deref(), LINK_TTL).await {
                        Ok(url) => Some(url),
                        Err(err) => {
                            tracing::warn!(error = %err, "could not presign a media link");
                            None
                        }
                    }
                }
                _ => None,
            };
            let view = json!({
                "status": media.status,
                "mime_type": media.mime_type,
                "size": media.size,
                "url": url,
            });
            (view, url)
        }
    };
    json!({
        "id": m.message_id,
        "message_id": m.message_id,
        "contact_id": m.contact_id,
        "direction": m.direction,
        "type": m.message_type,
        "content": m.content,
        "status": m.status,
        "status_at": m.status_at,
        "wamid": m.wamid,
        "error": m.error.as_ref().map(|e| json!({"code": e.code, "title": e.title, "detail": e.detail})),
        "media": media,
        // The media link on the item itself as well (the contract's "media items carry a url").
        "url": url,
        "reply_to": m.reply_to,
        "context_wamid": m.context_wamid,
        "category": m.category,
        "language": m.language,
        "automation_rule": m.automation_rule,
        "broadcast_id": m.broadcast_id,
        "timestamp": m.timestamp,
        "created_at": m.created_at,
    })
}

pub async fn conversation<S: ApiStore, L: MediaLinks, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    contact_id: &str,
) -> Result<Response<Body>, ApiError> {
    contacts::load(deps, caller, contact_id).await?;
    let listing = format!("messages:{contact_id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let result = deps
        .store
        .contact_messages(&caller.tenant_id, contact_id, page.limit, page.start)
        .await?;
    // Presigning is local computation, but each link is its own future: await them together.
    let items = futures::future::join_all(result.items.iter().map(|m| view(&deps.media, m))).await;
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}
