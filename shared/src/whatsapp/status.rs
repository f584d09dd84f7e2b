//! Which delivery receipts move an outbound message: a receipt names a step of the delivery
//! ladder ([`receipt_status`]), and the ladder itself ([`MessageStatus::moves`], in
//! `message.rs`) decides whether that step moves the message. The store's conditional writes
//! follow the same ladder; [`next_status`] is the whole rule as one pure function.
//!
//! Meta delivers receipts late, twice and out of order (`read` may come without `delivered`),
//! so a receipt only ever moves a message forward, and a redelivered one changes nothing.

use super::payload::DeliveryStatus;
use crate::message::MessageStatus;

/// The ladder step a receipt names, or `None` when it is not about delivery progress
/// (`deleted`, `warning`, or a status Meta adds later): those are kept as events.
pub fn receipt_status(incoming: &DeliveryStatus) -> Option<MessageStatus> {
    match incoming {
        DeliveryStatus::Sent => Some(MessageStatus::Sent),
        DeliveryStatus::Delivered => Some(MessageStatus::Delivered),
        DeliveryStatus::Read => Some(MessageStatus::Read),
        DeliveryStatus::Played => Some(MessageStatus::Played),
        DeliveryStatus::Failed => Some(MessageStatus::Failed),
        DeliveryStatus::Deleted | DeliveryStatus::Warning | DeliveryStatus::Unknown(_) => None,
    }
}

/// The status a message in `current` moves to on receipt of `incoming`, or `None` when the
/// receipt changes nothing (duplicate, late, or not about delivery).
pub fn next_status(current: MessageStatus, incoming: &DeliveryStatus) -> Option<MessageStatus> {
    receipt_status(incoming).filter(|target| target.moves(current))
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageStatus::{Delivered, Failed, Played, Queued, Read, Rejected, Sent};

    fn incoming_all() -> [DeliveryStatus; 8] {
        [
            DeliveryStatus::Sent,
            DeliveryStatus::Delivered,
            DeliveryStatus::Read,
            DeliveryStatus::Played,
            DeliveryStatus::Failed,
            DeliveryStatus::Deleted,
            DeliveryStatus::Warning,
            DeliveryStatus::Unknown("pending".into()),
        ]
    }

    #[test]
    fn full_transition_table() {
        // Columns: sent, delivered, read, played, failed, deleted, warning, unknown.
        let table: [(MessageStatus, [Option<MessageStatus>; 8]); 7] = [
            (
                Queued,
                [
                    Some(Sent),
                    Some(Delivered),
                    Some(Read),
                    Some(Played),
                    Some(Failed),
                    None,
                    None,
                    None,
                ],
            ),
            (
                Sent,
                [
                    None,
                    Some(Delivered),
                    Some(Read),
                    Some(Played),
                    Some(Failed),
                    None,
                    None,
                    None,
                ],
            ),
            (
                Delivered,
                [None, None, Some(Read), Some(Played), None, None, None, None],
            ),
            (Read, [None, None, None, Some(Played), None, None, None, None]),
            (Played, [None; 8]),
            (Failed, [None; 8]),
            (Rejected, [None; 8]),
        ];
        for (current, expected_row) in table {
            for (incoming, expected) in incoming_all().into_iter().zip(expected_row) {
                assert_eq!(next_status(current, &incoming), expected, "{current} + {incoming}");
            }
        }
    }

    #[test]
    fn moves_only_forward_and_duplicates_change_nothing() {
        for current in MessageStatus::ALL {
            for incoming in incoming_all() {
                if let Some(next) = next_status(current, &incoming) {
                    assert!(next.rank() > current.rank(), "{current} -> {next}");
                    assert_eq!(next_status(next, &incoming), None, "{current} + {incoming} twice");
                }
            }
        }
    }

    /// Applies receipts in order from `queued`, as the webhook handler would.
    fn replay(receipts: &[DeliveryStatus]) -> MessageStatus {
        receipts
            .iter()
            .fold(Queued, |status, r| next_status(status, r).unwrap_or(status))
    }

    /// All orderings of `items` (small inputs only).
    fn permutations(items: &[DeliveryStatus]) -> Vec<Vec<DeliveryStatus>> {
        if items.len() <= 1 {
            return vec![items.to_vec()];
        }
        let mut out = Vec::new();
        for i in 0..items.len() {
            let mut rest = items.to_vec();
            let first = rest.remove(i);
            for mut tail in permutations(&rest) {
                tail.insert(0, first.clone());
                out.push(tail);
            }
        }
        out
    }

    #[test]
    fn any_order_of_receipts_ends_at_the_furthest() {
        use DeliveryStatus as D;
        let cases = [
            (vec![D::Sent, D::Delivered, D::Read], Read),
            (vec![D::Sent, D::Sent, D::Delivered, D::Read, D::Delivered], Read),
            (vec![D::Sent, D::Read], Read),
            (vec![D::Sent, D::Delivered, D::Read, D::Played], Played),
            (vec![D::Sent, D::Delivered, D::Played], Played),
            (vec![D::Sent, D::Delivered, D::Warning, D::Deleted], Delivered),
        ];
        for (receipts, expected) in cases {
            for order in permutations(&receipts) {
                assert_eq!(replay(&order), expected, "{order:?}");
            }
        }
    }

    #[test]
    fn failures() {
        use DeliveryStatus as D;
        assert_eq!(replay(&[D::Sent, D::Failed]), Failed);
        assert_eq!(replay(&[D::Failed, D::Sent]), Failed);
        assert_eq!(replay(&[D::Failed, D::Delivered, D::Read]), Failed);
        assert_eq!(replay(&[D::Failed]), Failed);
        assert_eq!(replay(&[D::Sent, D::Delivered, D::Failed]), Delivered);
        assert_eq!(replay(&[D::Read, D::Failed]), Read);
    }

    #[test]
    fn names_round_trip_in_snake_case() {
        for status in MessageStatus::ALL {
            assert_eq!(status.as_str().parse::<MessageStatus>(), Ok(status));
            assert_eq!(serde_json::to_string(&status).unwrap(), format!("\"{status}\""));
            assert_eq!(
                serde_json::from_str::<MessageStatus>(&format!("\"{status}\"")).unwrap(),
                status
            );
        }
        assert!("Sent".parse::<MessageStatus>().is_err());
        assert!(serde_json::from_str::<MessageStatus>("\"pending\"").is_err());
    }

    #[test]
    fn ranks_order_the_ladder() {
        let ladder = [Queued, Sent, Delivered, Read, Played];
        assert!(ladder.windows(2).all(|w| w[0].rank() < w[1].rank()));
        assert!(Failed.is_terminal() && Rejected.is_terminal());
        assert!(ladder.iter().all(|s| !s.is_terminal() && s.rank() < Failed.rank()));
    }
}
