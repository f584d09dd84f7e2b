//! Outcome policy: what becomes of a record whose send did not happen — done with, handed back
//! to the queue after a delay, or dead-lettered after its last allowed receive — and what a
//! failed Graph call does to the message and the tenant (by Meta's error class).

use chrono::Utc;

use crm_shared::graph::{GraphCallError, GraphErrorClass};
use crm_shared::jobs::send_retry_delay_secs;
use crm_shared::message::{MessageError, MessageStatus};
use crm_shared::sending;

use crate::prepare::Ready;
use crate::{Deps, SenderStore};

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done with (sent, refused, failed for good, or nothing to do).
    Done,
    /// Hand back to the queue; deliver again after this many seconds.
    RetryAfter(i32),
    /// Final failure after the last allowed receive: the record goes to the DLQ.
    DeadLetter,
}

/// A retryable failure on receive `attempt`: back to the queue, or the DLQ after the last one.
pub(crate) fn retry_or_dead(max_receives: u32, attempt: u32) -> Outcome {
    if attempt >= max_receives {
        Outcome::DeadLetter
    } else {
        Outcome::RetryAfter(send_retry_delay_secs(attempt))
    }
}

pub(crate) async fn on_send_error<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    ready: &Ready,
    attempt: u32,
    err: GraphCallError,
) -> Outcome {
    let m = &ready.message;
    let (status, code, title, details) = match &err {
        GraphCallError::Api {
            status,
            code,
            message,
            details,
        } => (Some(*status), *code, message.clone(), details.clone()),
        GraphCallError::Transport(reason) => (None, None, reason.clone(), None),
        GraphCallError::TooLarge => (Some(413), None, err.to_string(), None),
    };
    let error = MessageError {
        code: code.unwrap_or(status.map(i64::from).unwrap_or(0)),
        title: Some(title),
        detail: details,
    };
    let class = err.class();
    tracing::warn!(message_id = %m.message_id, ?code, ?status, ?class, attempt, "Graph send failed");
    let release = || async {
        if let Err(e) = deps.store.release_claim(&m.tenant_id, &m.message_id).await {
            tracing::warn!(error = %e, "could not release a send lease; it expires on its own");
        }
    };
    let finish = |error: MessageError| async move {
        match deps
            .store
            .finish_unsent(&m.tenant_id, &m.message_id, MessageStatus::Failed, &error, Utc::now())
            .await
        {
            Ok(()) => Outcome::Done,
            Err(e) => {
                tracing::error!(error = %e, "could not record a failed send");
                Outcome::RetryAfter(send_retry_delay_secs(attempt))
            }
        }
    };
    match class {
        GraphErrorClass::Permanent => finish(error).await,
        GraphErrorClass::TokenInvalid => {
            if let Err(e) = deps.store.set_token_invalid(&m.tenant_id, true).await {
                tracing::error!(error = %e, "could not flag the tenant's token");
            }
            deps.forget_tenant(&m.tenant_id);
            finish(error).await
        }
        GraphErrorClass::Transient | GraphErrorClass::PairRateLimit if attempt >= deps.config.max_receives => {
            finish(error).await;
            Outcome::DeadLetter
        }
        GraphErrorClass::Transient => {
            release().await;
            Outcome::RetryAfter(send_retry_delay_secs(attempt))
        }
        GraphErrorClass::PairRateLimit => {
            release().await;
            Outcome::RetryAfter((sending::PAIR_INTERVAL_MS / 1000) as i32 + 1)
        }
    }
}
