//! `/v1/conversations`: the inbox (filters, two orders, the caller's unread counts), one
//! conversation and its messages, and the team's actions on it: assignment (conditional:
//! `409` when someone else changed it first), status, read marks and internal notes. Under the
//! tenant's need-to-know setting, agents and viewers see only conversations assigned to them
//! or to nobody; any other is `404`, like another tenant's.

use chrono::{DateTime, Utc};
use lambda_http::http::StatusCode;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crm_shared::blob::MediaLinks;
use crm_shared::conversation::{
    AssigneeFilter, Conversation, ConversationError, ConversationStatus, InboxFilter, InboxSort, Note, Preview,
    Priority, check_read, check_status_change, note_body,
};
use crm_shared::store::{AssignOutcome, InboxEntry, InboxQuery, StoreError};

use crate::auth::Caller;
use crate::error::ApiError;
use crate::pagination::{envelope, page_request};
use crate::routes::{json_input, messages};
use crate::{ApiStore, Deps, audit, json_body, ok_json, request_id};

/// A conversation as the API shows it, with the caller's unread count (serialized straight
/// from the stored conversation: an inbox page is fifty of these).
#[derive(Serialize)]
pub struct ConversationView<'a> {
    id: &'a str,
    contact_id: &'a str,
    number: &'a str,
    status: ConversationStatus,
    assignee: Option<&'a str>,
    priority: Priority,
    snooze_until: Option<DateTime<Utc>>,
    last_activity_at: DateTime<Utc>,
    last_inbound_at: Option<DateTime<Utc>>,
    last_outbound_at: Option<DateTime<Utc>>,
    waiting_since: Option<DateTime<Utc>>,
    window_expires_at: Option<DateTime<Utc>>,
    window_open: bool,
    preview: Option<&'a Preview>,
    last_seq: u64,
    message_count: u64,
    unread: u64,
    read_up_to: u64,
    opened_at: DateTime<Utc>,
    resolved_at: Option<DateTime<Utc>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    /// In inbox rows only.
    #[serde(skip_serializing_if = "Option::is_none")]
    contact: Option<ContactView<'a>>,
}

/// What an inbox row shows of its contact.
#[derive(Serialize)]
struct ContactView<'a> {
    id: &'a str,
    name: Option<&'a str>,
    phone: Option<&'a str>,
}

pub fn view<'a>(c: &'a Conversation, reader: &str, now: DateTime<Utc>) -> ConversationView<'a> {
    ConversationView {
        id: &c.conversation_id,
        contact_id: &c.contact_id,
        number: &c.phone_number_id,
        status: c.effective_status(now),
        assignee: c.assignee.as_deref(),
        priority: c.priority,
        snooze_until: c.snooze_until,
        last_activity_at: c.last_activity_at,
        last_inbound_at: c.last_inbound_at,
        last_outbound_at: c.last_outbound_at,
        waiting_since: c.waiting_since,
        window_expires_at: c.window_expires_at,
        window_open: c.window_open(now),
        preview: c.preview.as_ref(),
        last_seq: c.last_seq,
        message_count: c.message_count,
        unread: c.unread(reader),
        read_up_to: c.read_mark(reader),
        opened_at: c.opened_at,
        resolved_at: c.resolved_at,
        created_at: c.created_at,
        updated_at: c.updated_at,
        contact: None,
    }
}

fn entry_view<'a>(e: &'a InboxEntry, reader: &str, now: DateTime<Utc>) -> ConversationView<'a> {
    let mut v = view(&e.conversation, reader, now);
    let contact = e.contact.as_ref();
    v.contact = Some(ContactView {
        id: &e.conversation.contact_id,
        name: contact.and_then(|c| c.display_name()),
        phone: contact.and_then(|c| c.phone.as_deref()),
    });
    v
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, code, message)
}

/// The inbox filters of a request's query string.
fn filter_of(req: &Request, caller: &Caller) -> Result<InboxFilter, ApiError> {
    let q = req.query_string_parameters();
    let known = [
        "limit", "cursor", "sort", "number", "status", "assignee", "tag", "window", "waiting",
    ];
    if let Some((name, _)) = q.iter().find(|(k, _)| !known.contains(k)) {
        return Err(invalid("invalid_query", format!("unknown query parameter {name:?}")));
    }
    let sort = match q.first("sort") {
        None | Some("last_activity") => InboxSort::LastActivity,
        Some("waiting") => InboxSort::Waiting,
        Some(_) => return Err(invalid("invalid_query", "sort must be last_activity or waiting")),
    };
    let status = q
        .first("status")
        .map(str::parse)
        .transpose()
        .map_err(|e: String| invalid("invalid_query", e))?;
    let assignee = match q.first("assignee") {
        None => AssigneeFilter::Any,
        Some("none") => AssigneeFilter::Nobody,
        Some("me") => AssigneeFilter::User(caller.actor().to_owned()),
        Some(id) if crm_shared::ids::is_valid_id(id) => AssigneeFilter::User(id.to_owned()),
        Some(_) => return Err(invalid("invalid_query", "assignee must be me, none or a user id")),
    };
    let window_open = match q.first("window") {
        None => None,
        Some("open") => Some(true),
        Some("closed") => Some(false),
        Some(_) => return Err(invalid("invalid_query", "window must be open or closed")),
    };
    let waiting = match q.first("waiting") {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(invalid("invalid_query", "waiting must be true or false")),
    };
    let number = q.first("number").map(str::to_owned);
    if number
        .as_deref()
        .is_some_and(|n| n.is_empty() || n.len() > 32 || !n.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(invalid("invalid_query", "number must be a phone number id"));
    }
    let tag = q.first("tag").map(str::to_owned);
    Ok(InboxFilter {
        sort,
        number,
        status,
        assignee,
        tag,
        window_open,
        waiting,
    })
}

pub async fn list<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
) -> Result<Response<Body>, ApiError> {
    let filter = filter_of(req, caller)?;
    let visibility = caller.visibility();
    let listing = filter.listing_name(&visibility);
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let now = Utc::now();
    let query = InboxQuery {
        filter,
        visibility,
        reader: caller.actor().to_owned(),
        now,
    };
    let result = deps
        .store
        .inbox(&caller.tenant_id, &query, page.limit, page.start)
        .await?;
    let items = result
        .items
        .iter()
        .map(|e| entry_view(e, caller.actor(), now))
        .collect();
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}

/// The conversation if the caller may see it; `404` otherwise.
pub(crate) async fn load<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Conversation, ApiError> {
    deps.store
        .get_conversation(&caller.tenant_id, id)
        .await?
        .filter(|c| caller.visibility().allows(c))
        .ok_or_else(|| ApiError::not_found("no such conversation"))
}

pub async fn get<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let c = load(deps, caller, id).await?;
    ok_json(&view(&c, caller.actor(), Utc::now()))
}

pub async fn messages<S: ApiStore, L: MediaLinks, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let c = load(deps, caller, id).await?;
    let tenant = deps
        .store
        .get_tenant(&caller.tenant_id)
        .await?
        .ok_or_else(|| ApiError::not_found("tenant not found"))?;
    // Messages stored before tenants had several numbers belong to the first one.
    let with_unnumbered = tenant.phone_number_id == c.phone_number_id;
    let listing = format!("conversation-messages:{id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let result = deps
        .store
        .number_messages(
            &caller.tenant_id,
            &c.contact_id,
            &c.phone_number_id,
            with_unnumbered,
            page.limit,
            page.start,
        )
        .await?;
    let items = futures::future::join_all(result.items.iter().map(|m| messages::view(&deps.media, m))).await;
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AssignInput {
    assignee: Option<String>,
    #[serde(default)]
    expected: Option<String>,
}

pub async fn assign<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: AssignInput = json_input(req)?;
    let before = load(deps, caller, id).await?;
    // Under need-to-know an agent may take an unassigned conversation or give up their own,
    // but not hand it to someone else's view.
    let hidden_to_caller = input.assignee.as_deref().is_some_and(|a| a != caller.actor());
    if hidden_to_caller && !matches!(caller.visibility(), crm_shared::conversation::Visibility::All) {
        return Err(ApiError::forbidden(
            "under need-to-know, only admins assign conversations to others",
        ));
    }
    let outcome = deps
        .store
        .assign(
            &caller.tenant_id,
            id,
            input.assignee.as_deref(),
            input.expected.as_deref(),
            Utc::now(),
        )
        .await?;
    let after = match outcome {
        AssignOutcome::Assigned(c) => *c,
        AssignOutcome::Lost { current } => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "assignee_changed",
                match current {
                    Some(_) => "the conversation is assigned to someone else now: reload it and try again",
                    None => "the conversation is unassigned now: reload it and try again",
                },
            ));
        }
        AssignOutcome::UnknownAssignee => {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_assignee",
                "assignee must be an active user of the tenant",
            ));
        }
    };
    let entry = caller
        .audit_entry("conversation.assign")
        .target("conversation", id)
        .detail("previous", before.assignee.clone())
        .detail("assignee", after.assignee.clone())
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    ok_json(&view(&after, caller.actor(), Utc::now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusInput {
    status: String,
    #[serde(default)]
    snooze_until: Option<DateTime<Utc>>,
}

fn conversation_error(e: ConversationError) -> ApiError {
    let code = match e {
        ConversationError::SnoozeUntil | ConversationError::SnoozeWithoutSnoozing => "invalid_snooze",
        ConversationError::ReadBeyondLast { .. } => "invalid_read_mark",
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

pub async fn set_status<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: StatusInput = json_input(req)?;
    let status = input
        .status
        .parse()
        .map_err(|e: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_status", e))?;
    let mut change = check_status_change(status, input.snooze_until, Utc::now()).map_err(conversation_error)?;
    change.by = caller.user_id.clone();
    let before = load(deps, caller, id).await?;
    let after = deps
        .store
        .set_status(&caller.tenant_id, id, &change, None)
        .await?
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let entry = caller
        .audit_entry("conversation.status")
        .target("conversation", id)
        .detail("previous", before.status.as_str())
        .detail("status", after.status.as_str())
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    ok_json(&view(&after, caller.actor(), Utc::now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReadInput {
    up_to: u64,
}

pub async fn read<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: ReadInput = json_input(req)?;
    let before = load(deps, caller, id).await?;
    // Sequence numbers only grow: what the read shows stays true for the write.
    check_read(input.up_to, before.last_seq).map_err(conversation_error)?;
    let after = deps
        .store
        .mark_read(&caller.tenant_id, id, caller.actor(), input.up_to)
        .await?;
    ok_json(&view(&after, caller.actor(), Utc::now()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoteInput {
    body: String,
}

fn note_view(n: &Note) -> Value {
    json!({
        "id": n.note_id,
        "conversation_id": n.conversation_id,
        "body": n.body,
        "author": n.author,
        "created_at": n.created_at,
    })
}

pub async fn add_note<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    let input: NoteInput = json_input(req)?;
    let body = note_body(&input.body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_note", e.to_string()))?;
    let c = load(deps, caller, id).await?;
    let note = Note {
        tenant_id: caller.tenant_id.clone(),
        note_id: crm_shared::ids::new_id(),
        conversation_id: c.conversation_id.clone(),
        contact_id: c.contact_id.clone(),
        body,
        author: caller.actor().to_owned(),
        created_at: Utc::now(),
    };
    match deps.store.add_note(&note).await {
        Ok(()) => {}
        Err(StoreError::NotFound) => return Err(ApiError::not_found("no such conversation")),
        Err(e) => return Err(e.into()),
    }
    let entry = caller
        .audit_entry("conversation.note")
        .target("conversation", id)
        .detail("note_id", note.note_id.clone())
        .request(request_id(req).as_deref());
    audit(&deps.store, entry).await;
    json_body(StatusCode::CREATED, &note_view(&note))
}

pub async fn notes<S: ApiStore, L, Q>(
    deps: &Deps<S, L, Q>,
    caller: &Caller,
    req: &Request,
    id: &str,
) -> Result<Response<Body>, ApiError> {
    load(deps, caller, id).await?;
    let listing = format!("notes:{id}");
    let page = page_request(req, &deps.cursors, &caller.tenant_id, &listing)?;
    let result = deps.store.notes(&caller.tenant_id, id, page.limit, page.start).await?;
    let items = result.items.iter().map(note_view).collect();
    ok_json(&envelope(
        items,
        result.next,
        &deps.cursors,
        &caller.tenant_id,
        &listing,
    ))
}
