//! Outcome policy: what becomes of a record whose send did not happen — done with, handed back
//! to the queue as a new delayed job (a wait keeps the job's failure count, a failure adds one),
//! or dead-lettered (a body that is no job) — and what a failed Graph call does to the message
//! and the tenant (by Meta's error class).

use chrono::Utc;

use crm_shared::graph::{GraphCallError, GraphErrorClass};
use crm_shared::jobs::send_retry_delay_secs;
use crm_shared::message::{MessageError, MessageStatus};
use crm_shared::sending;

use crate::prepare::{Ready, unsent_error};
use crate::{Deps, SenderStore};

/// What became of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Done with (sent, refused, failed for good, unknown, or nothing to do).
    Done,
    /// Send again as a new queue message delivered after `delay_secs`, carrying `failures`
    /// (the job's failed attempts so far).
    Requeue { delay_secs: u32, failures: u32 },
    /// Not a send job: the record goes to the DLQ after the queue's receives.
    DeadLetter,
}

/// A wait (pacing, a lease held elsewhere, a paused tenant): no failure counted.
pub(crate) fn wait(secs: i64, failures: u32) -> Outcome {
    Outcome::Requeue {
        delay_secs: secs.clamp(0, 900) as u32,
        failures,
    }
}

/// A retryable failure after `failures` earlier ones: again after the backoff.
pub(crate) fn retry_later(failures: u32) -> Outcome {
    let failures = failures + 1;
    Outcome::Requeue {
        delay_secs: send_retry_delay_secs(failures).max(0) as u32,
        failures,
    }
}

pub(crate) async fn on_send_error<S: SenderStore, G, R>(
    deps: &Deps<S, G, R>,
    ready: &Ready,
    err: GraphCallError,
) -> Outcome {
    let m = &ready.message;
    let failures = ready.job.failures;
    let (status, code, title, details) = match &err {
        GraphCallError::Api {
            status,
            code,
            message,
            details,
        } => (Some(*status), *code, message.clone(), details.clone()),
        GraphCallError::Transport(reason) | GraphCallError::OutcomeUnknown(reason) => {
            (None, None, reason.clone(), None)
        }
        GraphCallError::TooLarge => (Some(413), None, err.to_string(), None),
    };
    let error = MessageError {
        code: code.unwrap_or(status.map(i64::from).unwrap_or(0)),
        title: Some(title),
        detail: details,
    };
    let class = err.class();
    tracing::warn!(message_id = %m.message_id, ?code, ?status, ?class, failures, "Graph send failed");
    // The send did not happen and will be tried again: give the lease back and keep the
    // message's place in its recipient's queue.
    let back_in_line = || async {
        if let Err(e) = deps.store.release_claim(&m.tenant_id, &m.message_id).await {
            tracing::warn!(error = %e, "could not release a send lease; it is treated as abandoned when it expires");
        }
        if let Err(e) = deps
            .store
            .return_to_recipient(&m.tenant_id, &m.contact_id, &m.message_id)
            .await
        {
            tracing::warn!(error = %e, "could not put a message back in its recipient's queue");
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
                back_in_line().await;
                retry_later(failures)
            }
        }
    };
    match class {
        GraphErrorClass::OutcomeUnknown => {
            let unknown = unsent_error(
                0,
                "send_outcome_unknown",
                "no answer from WhatsApp after the message was sent; it may have been delivered, and its status will show if so",
            );
            match deps
                .store
                .mark_unknown(&m.tenant_id, &m.message_id, ready.lease_until_ms, &unknown, Utc::now())
                .await
            {
                Ok(_) => {}
                // The lease stays: when it expires the message is found abandoned, still not resent.
                Err(e) => tracing::error!(error = %e, "could not record a send's unknown outcome"),
            }
            Outcome::Done
        }
        GraphErrorClass::Permanent => finish(error).await,
        GraphErrorClass::TokenInvalid => {
            if let Err(e) = deps.store.set_token_invalid(&m.tenant_id, true).await {
                tracing::error!(error = %e, "could not flag the tenant's token");
            }
            deps.forget_tenant(&m.tenant_id);
            finish(error).await
        }
        // The last attempt: the message fails with Meta's reason.
        GraphErrorClass::Transient if failures + 1 >= deps.config.max_receives => finish(error).await,
        GraphErrorClass::Transient => {
            back_in_line().await;
            retry_later(failures)
        }
        GraphErrorClass::PairRateLimit => {
            back_in_line().await;
            wait(sending::PAIR_INTERVAL_MS / 1000 + 1, failures)
        }
    }
}
