//! The Graph call for a prepared message, and recording it as sent: once Meta has the message,
//! recording it must never fail into a resend.

use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};

use crm_shared::graph::MessageSender;
use crm_shared::message::MessageRecord;

use crate::outcome::{Outcome, on_send_error};
use crate::prepare::Ready;
use crate::{Deps, SenderStore};

/// The Graph send API payload for a stored outbound message. `biz_opaque_callback_data`
/// carries our message id: Meta echoes it in every status webhook of the message, which is how
/// a send whose answer never reached us is reconciled (see `InboundStore::adopt_wamid`).
pub fn graph_payload(message: &MessageRecord, to: &Value) -> Value {
    let mut payload = json!({
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "type": message.message_type,
        "biz_opaque_callback_data": message.message_id,
    });
    if let (Some(obj), Some(to)) = (payload.as_object_mut(), to.as_object()) {
        obj.extend(to.clone());
    }
    payload[message.message_type.as_str()] = message.content.clone();
    if let Some(wamid) = &message.context_wamid {
        payload["context"] = json!({ "message_id": wamid });
    }
    payload
}

pub(crate) async fn send_one<S: SenderStore, G: MessageSender, R>(deps: &Deps<S, G, R>, ready: &Ready) -> Outcome {
    let m = &ready.message;
    let payload = graph_payload(m, &ready.to);
    match deps
        .graph
        .send_message(ready.sending_number(), &ready.token, &payload)
        .await
    {
        Ok(wamid) => {
            // Meta has the message: recording it must not fail into a resend. Retry the write
            // in place; the lease keeps other senders off meanwhile.
            for delay_ms in [0u64, 100, 400, 1600] {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                match deps
                    .store
                    .mark_sent(&m.tenant_id, &m.message_id, &m.contact_id, &wamid, Utc::now())
                    .await
                {
                    Ok(()) => return Outcome::Done,
                    Err(e) => {
                        tracing::warn!(error = %e, message_id = %m.message_id, "could not record a sent message; retrying")
                    }
                }
            }
            tracing::error!(message_id = %m.message_id, "message sent but not recorded; its lease is found abandoned when it expires (never resent), and its status webhook records it");
            Outcome::Done
        }
        Err(err) => on_send_error(deps, ready, err).await,
    }
}
