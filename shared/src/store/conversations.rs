//! Conversations and notes: the inbox listing (one query of an index that projects the whole
//! conversation, then one batch read of the page's contacts), conditional assignment, status
//! changes, read marks and notes. Messages move their conversations inside their own
//! transactions (see `items::ConversationTouch`); nothing here runs on the message hot path.

use std::collections::HashMap;

use aws_sdk_dynamodb::types::{AttributeValue, ConditionCheck, ReturnValue};
use chrono::{DateTime, Utc};

use super::dynamo::{
    DynamoStore, ItemKey, PageQuery, av, backend, condition_failed, decode_cursor, encode_cursor, from_attribute,
    from_item, key, projection, s, to_item, tx_check, tx_put,
};
use super::items::{ConversationItem, NoteItem};
use super::keys::*;
use super::ports::{AssignOutcome, ConversationStore, InboxEntry, InboxQuery, WalkPage};
use super::{Page, StoreError};
use crate::contact::{ContactCard, ContactSummary};
use crate::conversation::{
    AssigneeFilter, Conversation, ConversationStatus, InboxSort, Note, StatusChange, Visibility, parse_conversation_id,
};
use crate::cursor::Position;
use crate::user::UserStatus;

/// The attributes of a conversation an inbox row reads (all but `reads`, of which it reads
/// only the caller's mark).
const INBOX_ROW_ATTRIBUTES: &[&str] = &[
    "tenant_id",
    "conversation_id",
    "contact_id",
    "phone_number_id",
    "status",
    "assignee",
    "priority",
    "snooze_until",
    "last_activity_at",
    "last_inbound_at",
    "last_outbound_at",
    "waiting_since",
    "window_expires_at",
    "preview",
    "last_seq",
    "message_count",
    "opened_at",
    "resolved_at",
    "created_at",
    "updated_at",
];

/// The attributes of a conversation an inbox row leaves out: the read marks (it reads only the
/// caller's) and the reports' bookkeeping, which no row shows.
#[cfg(test)]
const INBOX_ROW_OMITS: &[&str] = &[
    "reads",
    "unanswered_since",
    "measured_from",
    "responded_from",
    "last_outbound_by",
    "resolved_by",
];

/// The key of a conversation (`None` for an id that is not one).
fn conversation_key(tenant_id: &str, conversation_id: &str) -> Option<HashMap<String, AttributeValue>> {
    let (contact_id, number) = parse_conversation_id(conversation_id)?;
    Some(key(contact_pk(tenant_id, contact_id), conversation_sk(number)))
}

/// The filter expression of an inbox query (everything but the contact's tag), with its
/// names and values.
fn inbox_filter(query: &InboxQuery) -> (Vec<String>, HashMap<String, String>, HashMap<String, AttributeValue>) {
    let f = &query.filter;
    let mut clauses = Vec::new();
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let now = av(&query.now);
    if let Some(number) = &f.number {
        clauses.push("phone_number_id = :number".to_owned());
        values.insert(":number".to_owned(), s(number.clone()));
    }
    if let Some(status) = f.status {
        names.insert("#st".to_owned(), "status".to_owned());
        // Only the values a clause uses: DynamoDB refuses an unused one (moto does not).
        let snooze_values = |values: &mut HashMap<String, AttributeValue>| {
            values.insert(":now".to_owned(), now.clone());
            values.insert(":snoozed".to_owned(), av(&ConversationStatus::Snoozed));
        };
        // A snooze that ran out reads as open before the sweep writes it.
        clauses.push(match status {
            ConversationStatus::Open => {
                snooze_values(&mut values);
                values.insert(":open".to_owned(), av(&ConversationStatus::Open));
                "(#st = :open OR (#st = :snoozed AND snooze_until <= :now))".to_owned()
            }
            ConversationStatus::Snoozed => {
                snooze_values(&mut values);
                "(#st = :snoozed AND snooze_until > :now)".to_owned()
            }
            other => {
                values.insert(":status".to_owned(), av(&other));
                "#st = :status".to_owned()
            }
        });
    }
    match &f.assignee {
        AssigneeFilter::Any => {}
        AssigneeFilter::Nobody => clauses.push("attribute_not_exists(assignee)".to_owned()),
        AssigneeFilter::User(user) => {
            clauses.push("assignee = :assignee".to_owned());
            values.insert(":assignee".to_owned(), s(user.clone()));
        }
    }
    if let Visibility::AssignedOrUnassigned(me) = &query.visibility {
        clauses.push("(attribute_not_exists(assignee) OR assignee = :me)".to_owned());
        values.insert(":me".to_owned(), s(me.clone()));
    }
    match f.window_open {
        Some(true) => {
            clauses.push("window_expires_at > :now".to_owned());
            values.insert(":now".to_owned(), now);
        }
        Some(false) => {
            clauses.push("(attribute_not_exists(window_expires_at) OR window_expires_at <= :now)".to_owned());
            values.insert(":now".to_owned(), now);
        }
        None => {}
    }
    if f.waiting {
        clauses.push("attribute_exists(waiting_since)".to_owned());
    }
    (clauses, names, values)
}

/// The position after an inbox row (the index's `LastEvaluatedKey`): the table's keys made from
/// the row's contact and number, as every conversation's are, the index's partition the one
/// queried, its sort key as read.
fn inbox_position(row: &super::dynamo::Item, tenant_id: &str, index_pk: (&str, &str), sk_attr: &str) -> Position {
    let text = |name: &str| super::dynamo::attr(row, name).unwrap_or_default();
    Position::from([
        (PK.to_owned(), contact_pk(tenant_id, text("contact_id"))),
        (SK.to_owned(), conversation_sk(text("phone_number_id"))),
        (index_pk.0.to_owned(), index_pk.1.to_owned()),
        (sk_attr.to_owned(), text(sk_attr).to_owned()),
    ])
}

impl DynamoStore {
    /// The sort keys of a contact's conversations, each with the version of the contact card
    /// it carries (`None`: none yet).
    pub(crate) async fn conversation_cards(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<Vec<(String, Option<u64>)>, StoreError> {
        let query = PageQuery::partition(contact_pk(tenant_id, contact_id))
            .prefixed(CONVERSATION_PREFIX)
            .project(&[SK, CONTACT_CARD]);
        self.query_all(&query)
            .await?
            .into_iter()
            .map(|mut item| {
                let sk = item.remove(SK).and_then(|v| v.as_s().ok().cloned());
                let card = item
                    .remove(CONTACT_CARD)
                    .map(from_attribute::<ContactCard>)
                    .transpose()?;
                let sk = sk.ok_or_else(|| StoreError::Corrupt("conversation without a sort key".into()))?;
                Ok((sk, card.map(|c| c.version)))
            })
            .collect()
    }

    /// Writes `card` onto one of the contact's conversations (never creating one). `guarded`:
    /// only over an older copy or none, for writers that may have read the contact before a
    /// newer copy was written.
    pub(crate) fn card_update(
        &self,
        tenant_id: &str,
        contact_id: &str,
        conversation_sk: &str,
        card: &ContactCard,
        guarded: bool,
    ) -> aws_sdk_dynamodb::types::Update {
        let mut values = HashMap::from([(":card".to_owned(), av(card))]);
        let condition = if guarded {
            values.insert(":v".to_owned(), av(&card.version));
            "attribute_exists(PK) AND (attribute_not_exists(#card) OR #card.version < :v)"
        } else {
            "attribute_exists(PK)"
        };
        aws_sdk_dynamodb::types::Update::builder()
            .table_name(self.table())
            .set_key(Some(key(contact_pk(tenant_id, contact_id), conversation_sk)))
            .update_expression("SET #card = :card")
            .condition_expression(condition)
            .expression_attribute_names("#card", CONTACT_CARD)
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("update is complete")
    }

    /// The conversation as it is now (after a refused conditional write).
    async fn current(&self, tenant_id: &str, conversation_id: &str) -> Result<Conversation, StoreError> {
        self.get_conversation(tenant_id, conversation_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Runs a conditional update of a conversation returning the item after; `None` when the
    /// condition failed.
    async fn update_conversation(
        &self,
        update: aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder,
    ) -> Result<Option<Conversation>, StoreError> {
        match update.return_values(ReturnValue::AllNew).send().await {
            Ok(out) => {
                let item = out
                    .attributes
                    .ok_or(StoreError::Backend("update returned no item".into()))?;
                Ok(Some(from_item::<ConversationItem>(item)?.conversation))
            }
            Err(err) if condition_failed(&err) => Ok(None),
            Err(err) => Err(backend(err)),
        }
    }
}

impl ConversationStore for DynamoStore {
    async fn get_conversation(
        &self,
        tenant_id: &str,
        conversation_id: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let Some((contact_id, number)) = parse_conversation_id(conversation_id) else {
            return Ok(None);
        };
        let item: Option<ConversationItem> = self
            .get(contact_pk(tenant_id, contact_id), &conversation_sk(number))
            .await?;
        Ok(item.map(|i| i.conversation))
    }

    async fn inbox(
        &self,
        tenant_id: &str,
        query: &InboxQuery,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<InboxEntry>, StoreError> {
        let (index, pk_attr, sk_attr, pk, forward) = match query.filter.sort {
            InboxSort::LastActivity => (GSI1, GSI1_PK, GSI1_SK, inbox_gsi1pk(tenant_id), false),
            InboxSort::Waiting => (GSI7, GSI7_PK, GSI7_SK, waiting_gsi7pk(tenant_id), true),
        };
        let (clauses, mut names, mut values) = inbox_filter(query);
        names.insert("#pk".into(), pk_attr.into());
        values.insert(":pk".into(), s(pk.clone()));
        let mut request = self
            .client()
            .query()
            .index_name(index)
            .key_condition_expression("#pk = :pk")
            .scan_index_forward(forward)
            .set_expression_attribute_values(Some(values));
        if !clauses.is_empty() {
            request = request.filter_expression(clauses.join(" AND "));
        }
        // Only what a row shows: every field but the other readers' marks (a busy
        // conversation holds one per user), and of the keys the cursor needs only the index's
        // sort key: the table's keys follow from the row, the index's partition is the query's.
        let reader_key = "#reader";
        names.insert(reader_key.into(), query.reader.clone());
        let mut row = projection(
            [sk_attr]
                .iter()
                .chain(INBOX_ROW_ATTRIBUTES)
                .chain(&[CONTACT_CARD])
                .copied(),
            &mut names,
        );
        names.insert("#reads".into(), "reads".into());
        row.push_str(&format!(", #reads.{reader_key}"));
        request = request
            .projection_expression(row)
            .set_expression_attribute_names(Some(names));
        // The row is the conversation itself (the index keys are simply ignored) and the copy
        // of its contact's summary it carries.
        let page = self
            .list_page_with(
                request,
                tenant_id,
                limit,
                start,
                |last| inbox_position(last, tenant_id, (pk_attr, &pk), sk_attr),
                |mut item| {
                    item.remove(sk_attr);
                    let card = item
                        .remove(CONTACT_CARD)
                        .map(from_attribute::<ContactCard>)
                        .transpose()?;
                    Ok((from_item::<Conversation>(item)?, card))
                },
            )
            .await?;
        // Rows without a copy yet (a conversation the events function has not reached) read
        // their contacts in one batch.
        let uncarded: Vec<String> = page
            .items
            .iter()
            .filter(|(_, card)| card.is_none())
            .map(|(c, _)| c.contact_id.clone())
            .collect();
        let contacts: HashMap<String, ContactSummary> = if uncarded.is_empty() {
            HashMap::new()
        } else {
            self.contact_summaries(tenant_id, &uncarded)
                .await?
                .into_iter()
                .map(|c| (c.contact_id.clone(), c))
                .collect()
        };
        let tag = query.filter.tag.as_deref();
        let items = page
            .items
            .into_iter()
            .map(|(conversation, card)| {
                let contact = match card {
                    Some(card) => Some(card.into_summary(conversation.contact_id.clone())),
                    // One contact may hold several rows of a page (one per number).
                    None => contacts.get(&conversation.contact_id).cloned(),
                };
                InboxEntry { conversation, contact }
            })
            .filter(|e| tag.is_none_or(|t| e.contact.as_ref().is_some_and(|c| c.has_tag(t))))
            .collect();
        Ok(Page { items, next: page.next })
    }

    async fn assign(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        assignee: Option<&str>,
        expected: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<AssignOutcome, StoreError> {
        let conversation_key = conversation_key(tenant_id, conversation_id).ok_or(StoreError::NotFound)?;
        let mut values = HashMap::from([(":now".to_owned(), av(&at))]);
        let condition = match expected {
            Some(e) => {
                values.insert(":expected".into(), s(e));
                "attribute_exists(PK) AND assignee = :expected"
            }
            None => "attribute_exists(PK) AND attribute_not_exists(assignee)",
        };
        let expression = match assignee {
            Some(a) => {
                values.insert(":assignee".into(), s(a));
                "SET assignee = :assignee, updated_at = :now"
            }
            None => "SET updated_at = :now REMOVE assignee",
        };
        let mut items = vec![super::dynamo::tx_update(
            aws_sdk_dynamodb::types::Update::builder()
                .table_name(self.table())
                .set_key(Some(conversation_key))
                .update_expression(expression)
                .condition_expression(condition)
                .set_expression_attribute_values(Some(values))
                .build()
                .expect("update is complete"),
        )];
        if let Some(user) = assignee {
            items.push(tx_check(
                ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(key(tenant_pk(tenant_id), user_sk(user))))
                    .condition_expression("#st = :active")
                    .expression_attribute_names("#st", "status")
                    .expression_attribute_values(":active", av(&UserStatus::Active))
                    .build()
                    .expect("check is complete"),
            ));
        }
        match self.transact(items).await? {
            Ok(()) => Ok(AssignOutcome::Assigned(Box::new(
                self.current(tenant_id, conversation_id).await?,
            ))),
            Err(c) if c.failed(1) => Ok(AssignOutcome::UnknownAssignee),
            Err(c) if c.failed(0) => {
                let current = self.current(tenant_id, conversation_id).await?;
                Ok(AssignOutcome::Lost {
                    current: current.assignee,
                })
            }
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn set_status(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        change: &StatusChange,
        only_from: Option<(ConversationStatus, DateTime<Utc>)>,
    ) -> Result<Option<Conversation>, StoreError> {
        let conversation_key = conversation_key(tenant_id, conversation_id).ok_or(StoreError::NotFound)?;
        let mut sets = vec!["#st = :status", "updated_at = :now"];
        let mut removes = Vec::new();
        let mut values = HashMap::from([
            (":status".to_owned(), av(&change.status)),
            (":now".to_owned(), av(&change.at)),
        ]);
        match change.snooze_until {
            Some(until) => {
                // In the snooze index until it ends (the sweep wakes it then).
                sets.extend(["snooze_until = :until", "GSI6PK = :snoozed", "GSI6SK = :wake"]);
                values.insert(":until".into(), av(&until));
                values.insert(":snoozed".into(), s(snoozed_gsi6pk(tenant_id)));
                values.insert(":wake".into(), s(inbox_sk(until.timestamp_millis(), conversation_id)));
            }
            None => removes.extend(["snooze_until", "GSI6PK", "GSI6SK"]),
        }
        if change.status == ConversationStatus::Resolved {
            sets.push("resolved_at = :now");
            // The response-time measurement ends (the next message or reopen starts one).
            removes.push("measured_from");
            match &change.by {
                Some(user) => {
                    sets.push("resolved_by = :by");
                    values.insert(":by".into(), s(user.clone()));
                }
                None => removes.push("resolved_by"),
            }
        } else {
            removes.extend(["resolved_at", "resolved_by"]);
            sets.push("measured_from = if_not_exists(measured_from, :now)");
        }
        if change.clears_waiting() {
            removes.extend(["waiting_since", "unanswered_since", "GSI7PK", "GSI7SK"]);
        }
        let mut condition = "attribute_exists(PK)".to_owned();
        if let Some((status, updated_at)) = only_from {
            condition.push_str(" AND #st = :from AND updated_at = :seen");
            values.insert(":from".into(), av(&status));
            values.insert(":seen".into(), av(&updated_at));
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if !removes.is_empty() {
            expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
        }
        let update = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(conversation_key))
            .update_expression(expression)
            .condition_expression(condition)
            .expression_attribute_names("#st", "status")
            .set_expression_attribute_values(Some(values));
        match self.update_conversation(update).await? {
            Some(c) => Ok(Some(c)),
            None if only_from.is_some() => Ok(None),
            None => Err(StoreError::NotFound),
        }
    }

    async fn due_snoozes(&self, tenant_id: &str, now: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        // Sort keys up to `now`'s instant (any conversation id after it).
        let query = PageQuery::index(GSI6, GSI6_PK, GSI6_SK, snoozed_gsi6pk(tenant_id))
            .below(format!("{:013}$", now.timestamp_millis().max(0)))
            .project(&[GSI6_SK]);
        Ok(self
            .query_all(&query)
            .await?
            .iter()
            .filter_map(|item| item.get(GSI6_SK)?.as_s().ok())
            .filter_map(|sk| sk.split_once('#').map(|(_, id)| id.to_owned()))
            .collect())
    }

    async fn mark_read(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        reader: &str,
        up_to: u64,
    ) -> Result<Conversation, StoreError> {
        let conversation_key = conversation_key(tenant_id, conversation_id).ok_or(StoreError::NotFound)?;
        let update = self
            .client()
            .update_item()
            .table_name(self.table())
            .set_key(Some(conversation_key))
            .update_expression("SET #reads.#r = :up")
            // Marks only move forward; a mark already further along is kept as it is.
            .condition_expression("attribute_exists(PK) AND (attribute_not_exists(#reads.#r) OR #reads.#r < :up)")
            .expression_attribute_names("#reads", "reads")
            .expression_attribute_names("#r", reader)
            .expression_attribute_values(":up", super::dynamo::n(up_to));
        match self.update_conversation(update).await? {
            Some(c) => Ok(c),
            None => self.current(tenant_id, conversation_id).await,
        }
    }

    async fn add_note(&self, note: &Note) -> Result<(), StoreError> {
        let (_, number) = parse_conversation_id(&note.conversation_id).ok_or(StoreError::NotFound)?;
        let items = vec![
            tx_check(
                ConditionCheck::builder()
                    .table_name(self.table())
                    .set_key(Some(key(
                        contact_pk(&note.tenant_id, &note.contact_id),
                        conversation_sk(number),
                    )))
                    .condition_expression("attribute_exists(PK)")
                    .build()
                    .expect("check is complete"),
            ),
            tx_put(
                aws_sdk_dynamodb::types::Put::builder()
                    .table_name(self.table())
                    .set_item(Some(to_item(&NoteItem::new(note, number))))
                    .condition_expression("attribute_not_exists(PK)")
                    .build()
                    .expect("put is complete"),
            ),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("note id exists".into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn notes(
        &self,
        tenant_id: &str,
        conversation_id: &str,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Note>, StoreError> {
        let Some((contact_id, number)) = parse_conversation_id(conversation_id) else {
            return Ok(Page {
                items: Vec::new(),
                next: None,
            });
        };
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", s(contact_pk(tenant_id, contact_id)))
            .expression_attribute_values(":prefix", s(notes_prefix(number)))
            .consistent_read(true)
            .scan_index_forward(false);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |i: NoteItem| i.note)
            .await
    }

    async fn contact_conversations(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<(Vec<Conversation>, Vec<Note>), StoreError> {
        let pk = contact_pk(tenant_id, contact_id);
        let conversations = self
            .query_all(&PageQuery::partition(pk.clone()).prefixed(CONVERSATION_PREFIX))
            .await?
            .into_iter()
            .map(|i| from_item::<ConversationItem>(i).map(|c| c.conversation))
            .collect::<Result<_, _>>()?;
        let notes = self
            .query_all(&PageQuery::partition(pk).prefixed(NOTE_PREFIX))
            .await?
            .into_iter()
            .map(|i| from_item::<NoteItem>(i).map(|n| n.note))
            .collect::<Result<_, _>>()?;
        Ok((conversations, notes))
    }

    async fn refresh_contact_cards(&self, tenant_id: &str, contact_id: &str) -> Result<usize, StoreError> {
        use super::ports::ContactStore;
        let Some(contact) = self.get_contact(tenant_id, contact_id).await? else {
            return Ok(0);
        };
        let card = ContactCard::of(&contact);
        let mut written = 0;
        for (sk, version) in self.conversation_cards(tenant_id, contact_id).await? {
            if version.is_some_and(|v| v >= card.version) {
                continue;
            }
            let update = self.card_update(tenant_id, contact_id, &sk, &card, true);
            let result = self
                .client()
                .update_item()
                .table_name(update.table_name)
                .set_key(Some(update.key))
                .update_expression(update.update_expression)
                .set_condition_expression(update.condition_expression)
                .set_expression_attribute_names(update.expression_attribute_names)
                .set_expression_attribute_values(update.expression_attribute_values)
                .send()
                .await;
            match result {
                Ok(_) => written += 1,
                // A newer copy is there already, or the conversation is gone.
                Err(err) if condition_failed(&err) => {}
                Err(err) => return Err(backend(err)),
            }
        }
        Ok(written)
    }

    async fn idle_conversations(
        &self,
        tenant_id: &str,
        since: Option<DateTime<Utc>>,
        before: DateTime<Utc>,
        next: Option<String>,
        limit: i32,
    ) -> Result<WalkPage<Conversation>, StoreError> {
        let below = inbox_sk(before.timestamp_millis(), "");
        let query = self
            .client()
            .query()
            .table_name(self.table())
            .index_name(GSI1)
            .expression_attribute_values(":pk", s(inbox_gsi1pk(tenant_id)))
            .expression_attribute_values(":below", s(below))
            .limit(limit)
            .set_exclusive_start_key(next.as_deref().map(decode_cursor).transpose()?);
        let query = match since {
            // Ids sort after the bare instant, so `[since, before)` is a BETWEEN on the prefix.
            Some(since) => query
                .key_condition_expression("GSI1PK = :pk AND GSI1SK BETWEEN :since AND :below")
                .expression_attribute_values(":since", s(inbox_sk(since.timestamp_millis(), ""))),
            None => query.key_condition_expression("GSI1PK = :pk AND GSI1SK < :below"),
        };
        let out = query.send().await.map_err(backend)?;
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|i| from_item::<ConversationItem>(i).map(|c| c.conversation))
            .collect::<Result<_, _>>()?;
        let next = out.last_evaluated_key.filter(|k| !k.is_empty()).map(encode_cursor);
        Ok(WalkPage { items, next })
    }

    async fn delete_conversation(&self, conversation: &Conversation) -> Result<u64, StoreError> {
        let pk = contact_pk(&conversation.tenant_id, &conversation.contact_id);
        let deleted = self
            .client()
            .delete_item()
            .table_name(self.table())
            .set_key(Some(key(pk.clone(), conversation_sk(&conversation.phone_number_id))))
            // A customer who wrote since it was read keeps the conversation.
            .condition_expression("updated_at = :seen")
            .expression_attribute_values(":seen", av(&conversation.updated_at))
            .send()
            .await;
        match deleted {
            Ok(_) => {}
            Err(err) if condition_failed(&err) => return Ok(0),
            Err(err) => return Err(backend(err)),
        }
        let notes = self
            .query_all(
                &PageQuery::partition(pk)
                    .prefixed(notes_prefix(&conversation.phone_number_id))
                    .project(&[PK, SK]),
            )
            .await?;
        let keys: Vec<ItemKey> = notes.iter().filter_map(ItemKey::of).collect();
        Ok(1 + self.delete_items(&keys).await?)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use chrono::TimeZone;

    use super::*;
    use crate::conversation::{Preview, Priority};
    use crate::message::Direction;

    #[test]
    fn every_inbox_filter_defines_only_the_names_and_values_its_expression_uses() {
        use crate::conversation::InboxFilter;
        let statuses = [
            None,
            Some(ConversationStatus::Open),
            Some(ConversationStatus::Pending),
            Some(ConversationStatus::Snoozed),
            Some(ConversationStatus::Resolved),
        ];
        let assignees = [
            AssigneeFilter::Any,
            AssigneeFilter::Nobody,
            AssigneeFilter::User("u1".into()),
        ];
        let visibilities = [Visibility::All, Visibility::AssignedOrUnassigned("u2".into())];
        let mut combinations = 0;
        for status in statuses {
            for assignee in &assignees {
                for visibility in &visibilities {
                    for window_open in [None, Some(true), Some(false)] {
                        for (waiting, number) in [(false, None), (true, Some("1001".to_owned()))] {
                            let query = InboxQuery {
                                filter: InboxFilter {
                                    status,
                                    assignee: assignee.clone(),
                                    window_open,
                                    waiting,
                                    number,
                                    ..InboxFilter::default()
                                },
                                visibility: visibility.clone(),
                                reader: "u2".into(),
                                now: Utc::now(),
                            };
                            let (clauses, names, values) = inbox_filter(&query);
                            let expression = clauses.join(" AND ");
                            // DynamoDB refuses a request defining a name or value its expressions
                            // never use (moto does not): each must appear, as a whole token.
                            let used = |token: &str| {
                                expression.match_indices(token).any(|(i, _)| {
                                    !expression[i + token.len()..]
                                        .starts_with(|c: char| c.is_alphanumeric() || c == '_')
                                })
                            };
                            for token in names.keys().chain(values.keys()) {
                                assert!(used(token), "{token} unused in {expression:?}");
                            }
                            combinations += 1;
                        }
                    }
                }
            }
        }
        assert_eq!(combinations, 5 * 3 * 2 * 3 * 2);
    }

    #[test]
    fn an_inbox_row_reads_every_field_of_a_conversation_it_does_not_leave_out_on_purpose() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap();
        // Every optional field set, so every attribute a conversation can hold is present.
        let mut c = Conversation::new("t1", "c1", "111", at);
        c.assignee = Some("u1".into());
        c.priority = Priority::High;
        c.snooze_until = Some(at);
        c.last_inbound_at = Some(at);
        c.last_outbound_at = Some(at);
        c.waiting_since = Some(at);
        c.unanswered_since = Some(at);
        c.window_expires_at = Some(at);
        c.resolved_at = Some(at);
        c.preview = Some(Preview {
            message_id: "m1".into(),
            direction: Direction::Inbound,
            message_type: "text".into(),
            text: Some("hi".into()),
        });
        c.reads.insert("u1".into(), 3);
        c.measured_from = Some(at);
        c.responded_from = Some(at);
        c.last_outbound_by = Some("u1".into());
        c.resolved_by = Some("u1".into());
        let stored: BTreeSet<String> = to_item(&c).into_keys().collect();
        let known: BTreeSet<String> = INBOX_ROW_ATTRIBUTES
            .iter()
            .chain(INBOX_ROW_OMITS)
            .map(|a| (*a).to_owned())
            .collect();
        assert_eq!(
            stored, known,
            "a field added to Conversation must be read by the inbox row or left out on purpose"
        );
    }
}
