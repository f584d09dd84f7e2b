//! Key layout of the single DynamoDB table (see docs/data-model.md).

pub const PK: &str = "PK";
pub const SK: &str = "SK";
pub const GSI1: &str = "GSI1";
pub const GSI1_PK: &str = "GSI1PK";
pub const GSI1_SK: &str = "GSI1SK";

/// Partition of everything a tenant owns at tenant level (profile, keys, secrets, settings).
pub fn tenant_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}")
}

pub const TENANT_SK: &str = "TENANT";
pub const GRAPH_TOKEN_SK: &str = "SECRET#GRAPH_TOKEN";

pub fn api_key_sk(key_id: &str) -> String {
    format!("KEY#{key_id}")
}

/// A one-time sign-in code (under the tenant partition, beside the keys).
pub fn signin_code_sk(code_id: &str) -> String {
    format!("SIGNIN#{code_id}")
}

/// Lookup from a WhatsApp phone number id to its tenant (outside any tenant by necessity: it is
/// how the webhook finds the tenant).
pub fn phone_route_pk(phone_number_id: &str) -> String {
    format!("PNID#{phone_number_id}")
}

pub const ROUTE_SK: &str = "ROUTE";

/// Lookup from a WhatsApp Business Account id to its tenant, for webhook changes that carry no
/// phone number id (account updates, template status updates).
pub fn waba_route_pk(waba_id: &str) -> String {
    format!("WABA#{waba_id}")
}

/// Partition of one contact: profile, consent and restriction history.
pub fn contact_pk(tenant_id: &str, contact_id: &str) -> String {
    format!("T#{tenant_id}#C#{contact_id}")
}

pub const PROFILE_SK: &str = "PROFILE";

/// The contact id of a key made by [`contact_pk`] (`None` for any other key).
pub fn contact_id_of_pk(pk: &str) -> Option<&str> {
    pk.rsplit_once("#C#")
        .map(|(_, c)| c)
        .filter(|c| !c.is_empty() && !c.contains('#'))
}

/// Sort-key prefixes of a contact's history entries ([`consent_history_sk`],
/// [`restriction_history_sk`]) and tag memberships ([`tag_sk`]).
pub const CONSENT_PREFIX: &str = "CONSENT#";
pub const RESTRICTION_PREFIX: &str = "RESTRICTION#";
pub const TAG_PREFIX: &str = "TAG#";

pub const GSI2: &str = "GSI2";
pub const GSI2_PK: &str = "GSI2PK";
pub const GSI2_SK: &str = "GSI2SK";
pub const GSI3: &str = "GSI3";
pub const GSI3_PK: &str = "GSI3PK";
pub const GSI3_SK: &str = "GSI3SK";
pub const GSI4: &str = "GSI4";
pub const GSI4_PK: &str = "GSI4PK";
pub const GSI4_SK: &str = "GSI4SK";

/// GSI2 partition listing a tenant's contacts (sort key: contact id, i.e. creation order).
pub fn contacts_index_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#CONTACTS")
}

/// GSI2 partition of the contacts carrying one tag.
pub fn tag_index_pk(tenant_id: &str, tag: &str) -> String {
    format!("T#{tenant_id}#TAG#{tag}")
}

pub fn tag_sk(tag: &str) -> String {
    format!("{TAG_PREFIX}{tag}")
}

/// GSI3 partition: contacts by name search key.
pub fn names_index_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#NAMES")
}

/// GSI4 partition: contacts by phone digits.
pub fn phones_index_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#PHONES")
}

/// Audit entries of a tenant (sort key: entry id, time-ordered).
pub fn audit_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#AUDIT")
}

/// Uniqueness record of a phone number within a tenant (→ contact id).
pub fn phone_identity_pk(tenant_id: &str, e164: &str) -> String {
    format!("T#{tenant_id}#PHONE#{e164}")
}

/// Uniqueness record of a WhatsApp business-scoped user id within a tenant (→ contact id).
pub fn user_identity_pk(tenant_id: &str, user_id: &str) -> String {
    format!("T#{tenant_id}#WAUSER#{user_id}")
}

pub const IDENTITY_SK: &str = "IDENTITY";

pub fn consent_history_sk(at_millis: i64, id: &str) -> String {
    format!("{CONSENT_PREFIX}{at_millis:013}#{id}")
}

pub fn restriction_history_sk(at_millis: i64, id: &str) -> String {
    format!("{RESTRICTION_PREFIX}{at_millis:013}#{id}")
}

/// A message item (inbound or outbound).
pub fn message_pk(tenant_id: &str, message_id: &str) -> String {
    format!("T#{tenant_id}#MSG#{message_id}")
}

pub const MESSAGE_SK: &str = "MSG";

/// The message id of a key made by [`message_pk`] (`None` for any other key).
pub fn message_id_of_pk(pk: &str) -> Option<&str> {
    pk.rsplit_once("#MSG#")
        .map(|(_, m)| m)
        .filter(|m| !m.is_empty() && !m.contains('#'))
}

/// GSI1 partition of one contact's conversation (sort key: message id, time-ordered).
pub fn conversation_gsi1pk(tenant_id: &str, contact_id: &str) -> String {
    format!("T#{tenant_id}#C#{contact_id}#MSGS")
}

/// Pointer from Meta's wamid of an outbound message to our message id; status webhooks that
/// arrive before the pointer exists are parked under the same partition.
pub fn wamid_pk(tenant_id: &str, wamid: &str) -> String {
    format!("T#{tenant_id}#WAMID#{wamid}")
}

pub const WAMID_SK: &str = "WAMID";

/// Tombstone of an erased message's wamid (inbound or outbound), kept for Meta's redelivery
/// window so a late copy of an old webhook cannot bring the message, its contact or its
/// keyword consent back: `(pk, sk)`, keyed by the wamid's SHA-256 (the wamid itself is not
/// kept). A tenant's tombstones share 16 partitions, by the hash's first digit: every inbound
/// message checks one, so they are spread, and offboarding finds them all.
pub fn tombstone_key(tenant_id: &str, wamid: &str) -> (String, String) {
    use sha2::{Digest, Sha256};
    let hash = hex::encode(Sha256::digest(wamid.as_bytes()));
    (tombstone_pk(tenant_id, &hash[..1]), hash)
}

/// One of a tenant's 16 tombstone partitions (`shard`: a hex digit).
pub fn tombstone_pk(tenant_id: &str, shard: &str) -> String {
    format!("T#{tenant_id}#ERASED#{shard}")
}

pub const TOMBSTONE_SHARDS: &str = "0123456789abcdef";

pub fn pending_status_sk(status: &str) -> String {
    format!("{PENDING_STATUS_PREFIX}{status}")
}

/// A reference, in a contact's partition, to an item of that contact stored under `pk`.
pub fn reference_sk(pk: &str) -> String {
    format!("{REF_PREFIX}{pk}")
}

/// An `Idempotency-Key` record (the key's SHA-256).
pub fn idempotency_pk(tenant_id: &str, key_hash: &str) -> String {
    format!("T#{tenant_id}#IDEM#{key_hash}")
}

pub const IDEMPOTENCY_SK: &str = "IDEM";

/// Send-rate windows of one phone number.
/// A phone number's send schedule (next free send slot), one item per number.
pub fn send_schedule_pk(tenant_id: &str, phone_number_id: &str) -> String {
    format!("T#{tenant_id}#RATE#{phone_number_id}")
}

pub const SEND_SCHEDULE_SK: &str = "SCHEDULE";

/// The template registry of a tenant: one item per template and language, sorted by name then
/// language (sort key [`template_sk`]), so a template's languages are one `Query` of the
/// prefix [`template_name_prefix`].
pub fn templates_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#TPL")
}

/// Sort-key prefix of every registry entry (the events function's filter reads them).
pub const TEMPLATE_SK_PREFIX: &str = "TPL#";

pub fn template_sk(name: &str, language: &str) -> String {
    format!("TPL#{name}#{language}")
}

/// Sort-key prefix of every language of template `name` (names have no `#`).
pub fn template_name_prefix(name: &str) -> String {
    format!("TPL#{name}#")
}

/// Sort-key prefix of the templates whose name starts with `prefix`.
pub fn template_search_prefix(prefix: &str) -> String {
    format!("TPL#{prefix}")
}

/// The tenant's template creations of the last hour (Meta allows 100 per WABA per hour).
pub const TEMPLATE_CREATIONS_SK: &str = "TEMPLATES#CREATIONS";
/// The tenant's template settings (default language).
pub const TEMPLATE_SETTINGS_SK: &str = "SETTINGS#TEMPLATES";

/// Partition of a tenant's broadcasts, one item per broadcast ([`broadcast_sk`]).
pub fn broadcasts_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#BCAST")
}

pub const BROADCAST_PREFIX: &str = "B#";

pub fn broadcast_sk(broadcast_id: &str) -> String {
    format!("{BROADCAST_PREFIX}{broadcast_id}")
}

/// Partition of one broadcast's recipients, one item per contact ([`recipient_sk`]).
/// Partitions a broadcast's recipients spread over: at 1,000 sends/s with three statuses each,
/// ~4,000 recipient writes/s become ~250 per partition key, well under what one key sustains.
pub const RECIPIENT_SHARDS: u32 = 16;

/// The shard of a broadcast's recipient partition a contact's entry lives in (FNV-1a of the
/// contact id: stable across processes and releases).
pub fn recipient_shard(contact_id: &str) -> u32 {
    fnv1a(contact_id) % RECIPIENT_SHARDS
}

/// 32-bit FNV-1a: the shard hash of every sharded key (stable across processes and releases,
/// unlike std's hasher, so writers and readers of any version agree).
fn fnv1a(s: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in s.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// One shard of a broadcast's recipients.
pub fn broadcast_recipients_pk(tenant_id: &str, broadcast_id: &str, shard: u32) -> String {
    format!("T#{tenant_id}#BCAST#{broadcast_id}#{shard:02}")
}

pub const RECIPIENT_PREFIX: &str = "R#";

pub fn recipient_sk(contact_id: &str) -> String {
    format!("{RECIPIENT_PREFIX}{contact_id}")
}

/// In the tenant partition: broadcast settings and the messaging-limit usage.
pub const BROADCAST_SETTINGS_SK: &str = "SETTINGS#BROADCASTS";
pub const MESSAGING_USAGE_SK: &str = "BROADCASTS#USAGE";
/// A number's quality in the tenant partition: `NUMQ#<waba>#<display digits>`.
pub const NUMBER_QUALITY_PREFIX: &str = "NUMQ#";

pub fn number_quality_sk(waba_id: &str, display: &str) -> String {
    format!("{NUMBER_QUALITY_PREFIX}{waba_id}#{display}")
}

/// Non-message webhook events of a tenant (account, quality, template updates).
pub fn events_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#EVENTS")
}

/// The tenant id of any key of tenant data (`T#<t>` or `T#<t>#…`).
pub fn tenant_of_pk(pk: &str) -> Option<&str> {
    let rest = pk.strip_prefix("T#")?;
    let tenant = rest.split('#').next()?;
    (!tenant.is_empty()).then_some(tenant)
}

// --- Event stream and tenant webhooks (docs/events.md) --------------------------------------

/// The tenant's event log: `HEAD` (the last position given) and one item per event, sort key
/// [`event_seq_sk`] (positions sort as numbers).
pub fn event_log_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#EVLOG")
}

pub const EVENT_LOG_HEAD_SK: &str = "HEAD";

/// Partition of a tenant's report counters of one granularity (`H`: UTC hours, `D`: the
/// tenant's days); sort key [`report_sk`], so one Query reads a range of buckets for every
/// number.
pub fn report_pk(tenant_id: &str, granularity_letter: &str) -> String {
    format!("T#{tenant_id}#RPT#{granularity_letter}")
}

/// `<bucket>#<phone number id>` (buckets are fixed-width, so the order is the buckets').
pub fn report_sk(bucket: &str, phone: &str) -> String {
    format!("{bucket}#{phone}")
}

/// The highest sort key of a bucket (above every number id: digits and `-`).
pub fn report_sk_last(bucket: &str) -> String {
    format!("{bucket}#~")
}
pub const EVENT_SEQ_PREFIX: &str = "SEQ#";

pub fn event_seq_sk(seq: u64) -> String {
    format!("{EVENT_SEQ_PREFIX}{seq:020}")
}

/// The position of a sort key made by [`event_seq_sk`].
pub fn seq_of_sk(sk: &str) -> Option<u64> {
    sk.strip_prefix(EVENT_SEQ_PREFIX)?.parse().ok()
}

/// One event by id (→ its position): written with the event in one transaction under
/// `attribute_not_exists`, which is what makes a redelivered stream record a no-op.
pub fn event_id_pk(tenant_id: &str, event_id: &str) -> String {
    format!("T#{tenant_id}#EVID#{event_id}")
}

pub const EVENT_ID_SK: &str = "EVID";

/// The tenant's webhook endpoints (sort key [`webhook_endpoint_sk`]).
pub fn webhook_endpoints_pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#WEBHOOKS")
}

pub const WEBHOOK_ENDPOINT_PREFIX: &str = "WEBHOOK#";

pub fn webhook_endpoint_sk(endpoint_id: &str) -> String {
    format!("{WEBHOOK_ENDPOINT_PREFIX}{endpoint_id}")
}

/// An endpoint's signing secrets (same partition, a sort key the events function ignores).
pub fn webhook_secret_sk(endpoint_id: &str) -> String {
    format!("WHSECRET#{endpoint_id}")
}

/// Shards of one endpoint's delivery log: an endpoint subscribed to a campaign's statuses gets
/// ~3,000 attempts a second (1,000 msg/s, three statuses each), three times what one
/// partition key takes; over 16 it is ~190 a second per key.
pub const DELIVERY_LOG_SHARDS: u32 = 16;

/// The shard of a delivery attempt (FNV-1a of its id): a writer needs nothing but the attempt.
pub fn delivery_shard(attempt_id: &str) -> u32 {
    fnv1a(attempt_id) % DELIVERY_LOG_SHARDS
}

/// Delivery attempts to one endpoint, one of [`DELIVERY_LOG_SHARDS`] (sort key: attempt id,
/// time-ordered); TTL 30 days.
pub fn webhook_deliveries_pk(tenant_id: &str, endpoint_id: &str, shard: u32) -> String {
    format!("T#{tenant_id}#WEBHOOK#{endpoint_id}#DELIVERIES#{shard:02}")
}

/// Every partition of one endpoint's delivery log: its shards, and the unsharded key earlier
/// releases wrote (read and deleted until its attempts expire).
pub fn webhook_deliveries_pks(tenant_id: &str, endpoint_id: &str) -> Vec<String> {
    (0..DELIVERY_LOG_SHARDS)
        .map(|shard| webhook_deliveries_pk(tenant_id, endpoint_id, shard))
        .chain([format!("T#{tenant_id}#WEBHOOK#{endpoint_id}#DELIVERIES")])
        .collect()
}

/// GSI1 partition listing all tenants (used by the scheduled retention sweep).
pub const ALL_TENANTS_GSI1PK: &str = "TENANTS";

// --- Privacy rights and retention (docs/data-model.md, "Privacy and retention") -------------

pub const GSI5: &str = "GSI5";
pub const GSI5_PK: &str = "GSI5PK";
pub const GSI5_SK: &str = "GSI5SK";
pub const GSI6: &str = "GSI6";
pub const GSI6_PK: &str = "GSI6PK";
pub const GSI6_SK: &str = "GSI6SK";

/// Shards of a tenant's message index (GSI5) and of its outbox (GSI6). An outbound message
/// writes GSI5 twice (created, then its `wamid`, a projected attribute) and the outbox twice
/// (entered, left when sent): at 1,000 msg/s ~2,000 index writes/s each, ≈ 125/s per key over
/// 16 shards, against DynamoDB's ~1,000 per key (room for several numbers of one tenant).
pub const MESSAGE_INDEX_SHARDS: u32 = 16;

/// The shard of the message index and outbox a message is kept in (FNV-1a of its id: the
/// writer needs nothing but the message, and ULIDs' random part spreads them evenly).
pub fn message_shard(message_id: &str) -> u32 {
    fnv1a(message_id) % MESSAGE_INDEX_SHARDS
}

/// GSI5 partition: every message of a tenant by id (ids sort by message time), one of
/// [`MESSAGE_INDEX_SHARDS`] ([`message_shard`]); retention finds the oldest messages with one
/// range query per shard and tenant offboarding finds them all ([`tenant_messages_gsi5pks`]).
pub fn tenant_messages_gsi5pk(tenant_id: &str, shard: u32) -> String {
    format!("T#{tenant_id}#MSGS#{shard:02}")
}

/// Every GSI5 partition of a tenant, in shard order, then the unsharded one that releases
/// before the shards wrote (read only: messages written by a previous release during a deploy
/// still reach retention and offboarding; one more `Query` per walk, usually empty).
pub fn tenant_messages_gsi5pks(tenant_id: &str) -> Vec<String> {
    (0..MESSAGE_INDEX_SHARDS)
        .map(|shard| tenant_messages_gsi5pk(tenant_id, shard))
        .chain([format!("T#{tenant_id}#MSGS")])
        .collect()
}

/// GSI6 partition (sparse): messages whose media object is stored in S3, by message id; an
/// item leaves it when its media expires.
pub fn tenant_media_gsi6pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#MEDIA")
}

/// GSI6 partition (sparse): outbound messages still `queued`, by message id (the outbox the
/// send sweeper reads), one of [`MESSAGE_INDEX_SHARDS`] ([`message_shard`]); a message leaves
/// it with its first status past `queued`. No message is in both a media and an outbox
/// partition: stored media is inbound only.
pub fn tenant_outbox_gsi6pk(tenant_id: &str, shard: u32) -> String {
    format!("T#{tenant_id}#OUTBOX#{shard:02}")
}

/// Every outbox partition of a tenant, in shard order, then the unsharded one of earlier
/// releases (read only, as for [`tenant_messages_gsi5pks`]: a message queued by the previous
/// release during a deploy is still swept).
pub fn tenant_outbox_gsi6pks(tenant_id: &str) -> Vec<String> {
    (0..MESSAGE_INDEX_SHARDS)
        .map(|shard| tenant_outbox_gsi6pk(tenant_id, shard))
        .chain([format!("T#{tenant_id}#OUTBOX")])
        .collect()
}

/// GSI6 partition (sparse): snoozed conversations by the end of their snooze
/// ([`inbox_sk`] of `snooze_until`), for the sweep that wakes them.
pub fn snoozed_gsi6pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#SNOOZED")
}

/// Retention settings of a tenant (under the tenant partition).
pub const RETENTION_SETTINGS_SK: &str = "SETTINGS#RETENTION";

/// An export of one contact's data.
pub fn export_pk(tenant_id: &str, export_id: &str) -> String {
    format!("T#{tenant_id}#EXPORT#{export_id}")
}

pub const EXPORT_SK: &str = "EXPORT";

/// GSI1 partition listing a tenant's exports (retention, offboarding).
pub fn exports_gsi1pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#EXPORTS")
}

/// The record (job state and receipt) of one contact erasure.
pub fn erasure_pk(tenant_id: &str, erasure_id: &str) -> String {
    format!("T#{tenant_id}#ERASURE#{erasure_id}")
}

pub const ERASURE_SK: &str = "ERASURE";

/// GSI1 partition listing a tenant's erasure records (offboarding).
pub fn erasures_gsi1pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#ERASURES")
}

/// Sort-key prefix of the reference items in a contact's partition ([`reference_sk`]): each
/// points at an item of the contact stored elsewhere (attribute `ref_sk`), so erasure finds it.
pub const REF_PREFIX: &str = "REF#";

/// Sort-key prefix of statuses parked under a wamid ([`pending_status_sk`]).
pub const PENDING_STATUS_PREFIX: &str = "PENDING#";

/// What kind of item a reference ([`reference_sk`]) points at, from the referenced key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referenced {
    /// A wamid partition (pointer and parked statuses).
    Wamid,
    Idempotency,
    Export,
    Other,
}

pub fn referenced_kind(pk: &str) -> Referenced {
    if pk.contains("#WAMID#") {
        Referenced::Wamid
    } else if pk.contains("#IDEM#") {
        Referenced::Idempotency
    } else if pk.contains("#EXPORT#") {
        Referenced::Export
    } else {
        Referenced::Other
    }
}

// --- Users, numbers, conversations (docs/data-model.md, "Inbox") ----------------------------

/// A user of the tenant (under the tenant partition).
pub fn user_sk(user_id: &str) -> String {
    format!("{USER_PREFIX}{user_id}")
}

pub const USER_PREFIX: &str = "USER#";

/// The record that makes a user's email unique within the tenant (→ user id).
pub fn user_email_sk(email: &str) -> String {
    format!("USEREMAIL#{email}")
}

/// One of the tenant's WhatsApp numbers (under the tenant partition).
pub fn number_sk(phone_number_id: &str) -> String {
    format!("{NUMBER_PREFIX}{phone_number_id}")
}

pub const NUMBER_PREFIX: &str = "NUMBER#";

/// The conversation of a contact on one number, in the contact's partition (so erasure takes
/// it with the contact).
pub fn conversation_sk(phone_number_id: &str) -> String {
    format!("{CONVERSATION_PREFIX}{phone_number_id}")
}

pub const CONVERSATION_PREFIX: &str = "CONV#";

/// The attribute of a conversation holding its contact's card (`contact::ContactCard`).
pub const CONTACT_CARD: &str = "contact_card";

/// An internal note on a conversation, in the contact's partition (sort key: note id, so
/// notes of one conversation sort by time).
pub fn note_sk(phone_number_id: &str, note_id: &str) -> String {
    format!("{}{note_id}", notes_prefix(phone_number_id))
}

/// The sort-key prefix of one conversation's notes.
pub fn notes_prefix(phone_number_id: &str) -> String {
    format!("{NOTE_PREFIX}{phone_number_id}#")
}

pub const NOTE_PREFIX: &str = "NOTE#";

/// GSI1 partition of the tenant's inbox: every conversation by last activity.
pub fn inbox_gsi1pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#CONVS")
}

pub const GSI7: &str = "GSI7";
pub const GSI7_PK: &str = "GSI7PK";
pub const GSI7_SK: &str = "GSI7SK";

/// GSI7 partition (sparse): conversations with an unanswered customer message, by wait.
pub fn waiting_gsi7pk(tenant_id: &str) -> String {
    format!("T#{tenant_id}#WAITING")
}

/// Sort key of a conversation in an inbox index: the instant (epoch ms, zero-padded) then the
/// conversation id, so equal instants stay distinct.
pub fn inbox_sk(at_millis: i64, conversation_id: &str) -> String {
    format!("{:013}#{conversation_id}", at_millis.max(0))
}

// --- Automations (docs/automations.md) -------------------------------------------------------

/// A tenant's automation rules, settings, daily firing counters and round-robin counters live
/// in the tenant partition ([`tenant_pk`]): offboarding deletes them with it.
pub const AUTOMATION_RULE_PREFIX: &str = "AUTORULE#";

pub fn automation_rule_sk(rule_id: &str) -> String {
    format!("{AUTOMATION_RULE_PREFIX}{rule_id}")
}

pub const AUTOMATION_SETTINGS_SK: &str = "AUTOSETTINGS";

/// The tenant's firings of one UTC day (`YYYY-MM-DD`), counted against its daily cap.
/// GSI1 partition (sparse, across tenants) of the enabled no-reply rules, `<tenant>#<rule>`:
/// the no-reply sweep finds every tenant that has one with one query, and no other tenant.
pub const NO_REPLY_RULES_GSI1PK: &str = "AUTONOREPLY";

pub fn no_reply_rule_gsi1sk(tenant_id: &str, rule_id: &str) -> String {
    format!("{tenant_id}#{rule_id}")
}

pub fn automation_day_sk(day: &str) -> String {
    format!("AUTODAY#{day}")
}

/// The next position of a round-robin assignment rule.
pub fn automation_round_robin_sk(rule_id: &str) -> String {
    format!("AUTORR#{rule_id}")
}

/// A contact's automation state (in the contact's partition: erased with it).
pub const AUTOMATION_STATE_SK: &str = "AUTOSTATE";

/// Firings and suppressions of rules for a contact's messages (contact partition, erased with
/// it), newest message first.
pub const AUTOMATION_FIRING_PREFIX: &str = "AUTOFIRE#";

pub fn automation_firing_sk(message_id: &str, rule_id: &str) -> String {
    format!("{AUTOMATION_FIRING_PREFIX}{message_id}#{rule_id}")
}

/// GSI1 partition of one rule's firings (sort key: time, then message id).
pub fn automation_rule_firings_gsi1pk(tenant_id: &str, rule_id: &str) -> String {
    format!("T#{tenant_id}#AUTORULE#{rule_id}#FIRINGS")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_items_are_under_the_tenant_partition() {
        assert_eq!(tenant_pk("abc"), "T#abc");
        assert_eq!(api_key_sk("k1"), "KEY#k1");
        assert_ne!(phone_route_pk("123"), tenant_pk("123"));
        let t = tenant_pk("abc");
        for key in [
            contact_pk("abc", "c"),
            contacts_index_pk("abc"),
            tag_index_pk("abc", "vip"),
            names_index_pk("abc"),
            phones_index_pk("abc"),
            audit_pk("abc"),
            phone_identity_pk("abc", "+1"),
            user_identity_pk("abc", "u"),
            message_pk("abc", "m"),
            conversation_gsi1pk("abc", "c"),
            wamid_pk("abc", "w"),
            events_pk("abc"),
            tenant_messages_gsi5pk("abc", 0),
            tenant_outbox_gsi6pk("abc", 15),
            tenant_media_gsi6pk("abc"),
            export_pk("abc", "e"),
            exports_gsi1pk("abc"),
            erasure_pk("abc", "x"),
            erasures_gsi1pk("abc"),
            event_log_pk("abc"),
            event_id_pk("abc", "evt_1"),
            webhook_endpoints_pk("abc"),
            webhook_deliveries_pk("abc", "w", 3),
            inbox_gsi1pk("abc"),
            waiting_gsi7pk("abc"),
        ] {
            assert!(key.starts_with(&format!("{t}#")), "{key}");
        }
    }

    #[test]
    fn contact_ids_and_references_are_read_back_from_keys() {
        assert_eq!(contact_id_of_pk(&contact_pk("t", "c1")), Some("c1"));
        assert_eq!(contact_id_of_pk(&conversation_gsi1pk("t", "c1")), None);
        assert_eq!(contact_id_of_pk(&tenant_pk("t")), None);
        assert_eq!(message_id_of_pk(&message_pk("t", "m1")), Some("m1"));
        assert_eq!(message_id_of_pk(&contact_pk("t", "c1")), None);
        assert_eq!(referenced_kind(&wamid_pk("t", "w")), Referenced::Wamid);
        assert_eq!(referenced_kind(&idempotency_pk("t", "h")), Referenced::Idempotency);
        assert_eq!(referenced_kind(&export_pk("t", "e")), Referenced::Export);
        assert_eq!(referenced_kind(&audit_pk("t")), Referenced::Other);
        assert!(reference_sk("x").starts_with(REF_PREFIX));
        assert!(pending_status_sk("read").starts_with(PENDING_STATUS_PREFIX));
        assert_eq!(tenant_of_pk(&contact_pk("t1", "c")), Some("t1"));
        assert_eq!(tenant_of_pk(&tenant_pk("t1")), Some("t1"));
        assert_eq!(tenant_of_pk(&phone_route_pk("1")), None);
        assert_eq!(seq_of_sk(&event_seq_sk(42)), Some(42));
        assert!(event_seq_sk(9) < event_seq_sk(10));
    }

    #[test]
    fn message_shards_are_stable_spread_and_tenant_scoped() {
        // Pinned: a changed hash would strand every indexed message in a shard nobody writes.
        assert_eq!(message_shard("01J9Z3V6W8X0Y2Z4A6B8C0D2E4"), 15);
        assert_eq!(message_shard(""), 0x811c_9dc5 % MESSAGE_INDEX_SHARDS);
        let mut per_shard = [0u32; MESSAGE_INDEX_SHARDS as usize];
        for _ in 0..16_000 {
            per_shard[message_shard(&crate::ids::new_id()) as usize] += 1;
        }
        // ~1,000 each; far from either bound unless the hash ignores the ids' random part.
        assert!(per_shard.iter().all(|&n| (800..1200).contains(&n)), "{per_shard:?}");

        assert_eq!(tenant_messages_gsi5pk("t1", 3), "T#t1#MSGS#03");
        assert_eq!(tenant_outbox_gsi6pk("t1", 15), "T#t1#OUTBOX#15");
        for keys in [tenant_messages_gsi5pks("t1"), tenant_outbox_gsi6pks("t1")] {
            assert_eq!(keys.len(), MESSAGE_INDEX_SHARDS as usize + 1);
            let unique: std::collections::HashSet<_> = keys.iter().collect();
            assert_eq!(unique.len(), keys.len());
            assert!(keys.iter().all(|k| tenant_of_pk(k) == Some("t1")), "{keys:?}");
        }
        assert_eq!(tenant_messages_gsi5pks("t1").last().unwrap(), "T#t1#MSGS");
        assert_eq!(tenant_outbox_gsi6pks("t1").last().unwrap(), "T#t1#OUTBOX");
        assert!(tenant_messages_gsi5pks("t1").contains(&tenant_messages_gsi5pk("t1", message_shard("m"))));
    }
}
