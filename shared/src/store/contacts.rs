//! Contacts: creation with database-enforced uniqueness of phone and user id, matching a
//! customer by either identity, optimistic concurrency on every update, consent and
//! restriction history, and index-served listings.

use std::collections::{BTreeSet, HashMap};

use aws_sdk_dynamodb::types::{Delete, DeleteRequest, TransactWriteItem, Update, WriteRequest};
use serde::de::DeserializeOwned;

use super::dynamo::{
    DynamoStore, Item, PageQuery, TRANSACTION_ITEMS, attr, backend, from_item, key, n, put_always, put_new, s,
    start_key, to_item, trim_page, tx_delete, tx_update,
};
use super::items::{ConsentItem, ContactItem, IdentityItem, RestrictionItem, TagItem, name_key, phone_key};
use super::keys::*;
use super::ports::{ContactFilter, ContactStore, ContactUpdate, CustomerIdentity, IdentityKey};
use super::{Page, StoreError};
use crate::contact::{ConsentChange, Contact, ContactCard, RestrictionChange};
use crate::cursor::Position;

/// The write that claims an identity (phone or user id) for a contact; fails when taken.
fn identity_claim(table: &str, pk: String, contact_id: &str) -> TransactWriteItem {
    put_new(table, to_item(&IdentityItem::new(pk, contact_id)))
}

/// The writes that create a contact: its `profile` item (only if new), the claims of its
/// identity records (only if unclaimed) and its tag entries, the profile first.
pub(crate) fn contact_creation(table: &str, contact: &Contact, profile: Item) -> Vec<TransactWriteItem> {
    let (t, c) = (&contact.tenant_id, &contact.contact_id);
    let mut items = vec![put_new(table, profile)];
    if let Some(phone) = &contact.phone {
        items.push(identity_claim(table, phone_identity_pk(t, phone), c));
    }
    if let Some(user_id) = &contact.user_id {
        items.push(identity_claim(table, user_identity_pk(t, user_id), c));
    }
    for tag in &contact.tags {
        items.push(put_always(table, to_item(&TagItem::new(contact, tag))));
    }
    items
}

/// The profile write of an edit: only if the contact is still at the version read. An update,
/// not a put: it sets the attributes the profile owns (and removes those the edit cleared, index
/// keys included) and leaves the rest alone — the clocks other writers keep on the item
/// (`last_inbound_ms`, `last_outbound_ms`) must survive an edit, or a late older message would
/// pass the ordering check and roll newer state back.
fn versioned_update(table: &str, before: &Contact, after: &Contact) -> TransactWriteItem {
    let mut set = to_item(&ContactItem::new(after));
    let key_of = |item: &mut Item| {
        item.remove(PK);
        item.remove(SK);
    };
    key_of(&mut set);
    let mut old = to_item(&ContactItem::new(before));
    key_of(&mut old);
    let mut names = HashMap::new();
    let mut values = HashMap::from([(":v".to_owned(), n(before.version))]);
    let mut sets = Vec::new();
    for (i, (name, value)) in set.into_iter().enumerate() {
        names.insert(format!("#s{i}"), name.clone());
        values.insert(format!(":s{i}"), value);
        sets.push(format!("#s{i} = :s{i}"));
        old.remove(&name);
    }
    let mut expression = format!("SET {}", sets.join(", "));
    if !old.is_empty() {
        let removes: Vec<String> = old
            .into_keys()
            .enumerate()
            .map(|(i, name)| {
                names.insert(format!("#r{i}"), name);
                format!("#r{i}")
            })
            .collect();
        expression.push_str(&format!(" REMOVE {}", removes.join(", ")));
    }
    tx_update(
        Update::builder()
            .table_name(table)
            .set_key(Some(key(contact_pk(&after.tenant_id, &after.contact_id), PROFILE_SK)))
            .update_expression(expression)
            .condition_expression("attribute_exists(PK) AND version = :v")
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .build()
            .expect("update is complete"),
    )
}

fn identity_release(table: &str, pk: String, contact_id: &str) -> TransactWriteItem {
    tx_delete(
        Delete::builder()
            .table_name(table)
            .set_key(Some(key(pk, IDENTITY_SK)))
            .condition_expression("contact_id = :c")
            .expression_attribute_values(":c", s(contact_id))
            .build()
            .expect("delete is complete"),
    )
}

const CONFLICT: &str = "a contact with this phone or user_id already exists";

impl DynamoStore {
    /// Runs a contact transaction whose first item is the version-checked profile write.
    /// A contact's transaction whose items from `cards_from` on are card writes: when only a
    /// card is refused (its conversation went, by retention or erasure, since it was listed),
    /// the edit is written without the cards and the events function copies them from the
    /// stream.
    async fn transact_with_cards(&self, items: Vec<TransactWriteItem>, cards_from: usize) -> Result<(), StoreError> {
        let total = items.len();
        match self.transact(items.clone()).await? {
            Ok(()) => Ok(()),
            Err(cancelled)
                if (cards_from..total).any(|i| cancelled.failed(i))
                    && !(0..cards_from).any(|i| cancelled.failed(i)) =>
            {
                let mut items = items;
                items.truncate(cards_from);
                self.contact_transaction(items).await
            }
            Err(cancelled) => Err(contact_cancellation(cancelled)),
        }
    }

    async fn contact_transaction(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) => Err(contact_cancellation(c)),
        }
    }

    /// The contact an identity record names.
    async fn identity_owner(&self, pk: String) -> Result<Option<String>, StoreError> {
        let item: Option<IdentityItem> = self.get(pk, IDENTITY_SK).await?;
        Ok(item.map(|i| i.contact_id))
    }

    /// Every history entry of a contact under a sort-key prefix, oldest first.
    async fn history<T: DeserializeOwned>(
        &self,
        tenant_id: &str,
        contact_id: &str,
        prefix: &str,
    ) -> Result<Vec<T>, StoreError> {
        let query = PageQuery::partition(contact_pk(tenant_id, contact_id)).prefixed(prefix);
        self.query_all(&query).await?.into_iter().map(from_item).collect()
    }
}

/// What a refused contact transaction means: its first item (the profile's version) or an
/// identity claim.
fn contact_cancellation(c: super::dynamo::Cancelled) -> StoreError {
    if c.failed(0) {
        StoreError::VersionMismatch
    } else if c.any_failed() {
        StoreError::Conflict(CONFLICT.into())
    } else {
        c.unexplained()
    }
}

impl ContactStore for DynamoStore {
    async fn get_contacts(&self, tenant_id: &str, contact_ids: &[String]) -> Result<Vec<Contact>, StoreError> {
        self.profiles(tenant_id, contact_ids).await
    }

    async fn contact_summaries(
        &self,
        tenant_id: &str,
        contact_ids: &[String],
    ) -> Result<Vec<crate::contact::ContactSummary>, StoreError> {
        DynamoStore::contact_summaries(self, tenant_id, contact_ids).await
    }

    async fn create_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        let items = contact_creation(self.table(), contact, to_item(&ContactItem::new(contact)));
        match self.contact_transaction(items).await {
            // A fresh id never collides; a failed first item can only mean a retried create.
            Err(StoreError::VersionMismatch) => Err(StoreError::Conflict("contact id already exists".into())),
            other => other,
        }
    }

    async fn get_contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Contact>, StoreError> {
        let item: Option<ContactItem> = self.get(contact_pk(tenant_id, contact_id), PROFILE_SK).await?;
        Ok(item.map(|i| i.contact))
    }

    async fn match_contact(
        &self,
        tenant_id: &str,
        identity: &CustomerIdentity,
    ) -> Result<Option<(String, IdentityKey)>, StoreError> {
        for key in identity.keys() {
            let pk = match &key {
                IdentityKey::Phone(phone) => phone_identity_pk(tenant_id, phone),
                IdentityKey::UserId(user_id) => user_identity_pk(tenant_id, user_id),
            };
            if let Some(contact_id) = self.identity_owner(pk).await? {
                return Ok(Some((contact_id, key)));
            }
        }
        Ok(None)
    }

    async fn update_contact(&self, update: &ContactUpdate<'_>) -> Result<(), StoreError> {
        let (before, after) = (update.before, update.after);
        let (t, c) = (&after.tenant_id, &after.contact_id);
        let mut items = vec![versioned_update(self.table(), before, after)];
        for (change, key) in [
            (update.phone_change, phone_identity_pk as fn(&str, &str) -> String),
            (update.user_id_change, user_identity_pk),
        ] {
            let Some(change) = change else { continue };
            if let Some(old) = &change.old {
                items.push(identity_release(self.table(), key(t, old), c));
            }
            if let Some(new) = &change.new {
                items.push(identity_claim(self.table(), key(t, new), c));
            }
        }
        // Tag entries carry the search keys, so a name or phone change rewrites all of them.
        let keys_changed = name_key(before) != name_key(after) || phone_key(before) != phone_key(after);
        let before_tags: BTreeSet<&String> = before.tags.iter().collect();
        for tag in &after.tags {
            if keys_changed || !before_tags.contains(tag) {
                items.push(put_always(self.table(), to_item(&TagItem::new(after, tag))));
            }
        }
        // The cards on the contact's conversations change with it (the inbox reads them, not the
        // profile). Past the transaction's limit the events function rewrites them instead.
        let card = ContactCard::of(after);
        let cards_from = items.len();
        if card.shows_other_than(&ContactCard::of(before)) {
            let conversations = self.conversation_cards(t, c).await?;
            if items.len() + conversations.len() <= TRANSACTION_ITEMS {
                items.extend(
                    conversations
                        .iter()
                        .map(|(sk, _)| tx_update(self.card_update(t, c, sk, &card, false))),
                );
            }
        }
        let with_cards = items.len();
        if with_cards == cards_from {
            self.contact_transaction(items).await?;
        } else {
            self.transact_with_cards(items, cards_from).await?;
        }
        // Entries of removed tags go after the transaction (it has a 100-item limit); a stale
        // one is harmless because tag listings check membership on the profile they return.
        let removed: Vec<WriteRequest> = before
            .tags
            .iter()
            .filter(|tag| !after.tags.contains(tag))
            .map(|tag| {
                WriteRequest::builder()
                    .delete_request(
                        DeleteRequest::builder()
                            .set_key(Some(key(contact_pk(t, c), tag_sk(tag))))
                            .build()
                            .expect("key is set"),
                    )
                    .build()
            })
            .collect();
        self.batch_write(removed).await
    }

    async fn record_consent(
        &self,
        before: &Contact,
        after: &Contact,
        change: &ConsentChange,
    ) -> Result<(), StoreError> {
        let history = ConsentItem::new(&after.tenant_id, &after.contact_id, change, &crate::ids::new_id());
        self.contact_transaction(vec![
            versioned_update(self.table(), before, after),
            put_always(self.table(), to_item(&history)),
        ])
        .await
    }

    async fn record_restriction(
        &self,
        before: &Contact,
        after: &Contact,
        change: &RestrictionChange,
    ) -> Result<(), StoreError> {
        let history = RestrictionItem::new(&after.tenant_id, &after.contact_id, change, &crate::ids::new_id());
        self.contact_transaction(vec![
            versioned_update(self.table(), before, after),
            put_always(self.table(), to_item(&history)),
        ])
        .await
    }

    async fn consent_history(&self, tenant_id: &str, contact_id: &str) -> Result<Vec<ConsentChange>, StoreError> {
        self.history(tenant_id, contact_id, CONSENT_PREFIX).await
    }

    async fn restriction_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> Result<Vec<RestrictionChange>, StoreError> {
        self.history(tenant_id, contact_id, RESTRICTION_PREFIX).await
    }

    async fn list_contacts(
        &self,
        tenant_id: &str,
        filter: &ContactFilter,
        limit: i32,
        start: Option<Position>,
    ) -> Result<Page<Contact>, StoreError> {
        let mut query = self
            .client()
            .query()
            .table_name(self.table())
            .limit(limit + 1)
            .set_exclusive_start_key(start_key(tenant_id, start)?);
        let mut tag_filter = None;
        let index_keys: [&str; 4] = match filter {
            ContactFilter::All | ContactFilter::Tag { .. } => [PK, SK, GSI2_PK, GSI2_SK],
            ContactFilter::NamePrefix(_) => [PK, SK, GSI3_PK, GSI3_SK],
            ContactFilter::PhonePrefix(_) => [PK, SK, GSI4_PK, GSI4_SK],
        };
        query = match filter {
            ContactFilter::All => query
                .index_name(GSI2)
                .key_condition_expression("GSI2PK = :pk")
                .expression_attribute_values(":pk", s(contacts_index_pk(tenant_id)))
                .scan_index_forward(false),
            ContactFilter::NamePrefix(prefix) => query
                .index_name(GSI3)
                .key_condition_expression("GSI3PK = :pk AND begins_with(GSI3SK, :p)")
                .expression_attribute_values(":pk", s(names_index_pk(tenant_id)))
                .expression_attribute_values(":p", s(prefix.clone())),
            ContactFilter::PhonePrefix(prefix) => query
                .index_name(GSI4)
                .key_condition_expression("GSI4PK = :pk AND begins_with(GSI4SK, :p)")
                .expression_attribute_values(":pk", s(phones_index_pk(tenant_id)))
                .expression_attribute_values(":p", s(prefix.clone())),
            ContactFilter::Tag {
                tag,
                name_prefix,
                phone_prefix,
            } => {
                tag_filter = Some(tag.clone());
                let q = query
                    .index_name(GSI2)
                    .key_condition_expression("GSI2PK = :pk")
                    .expression_attribute_values(":pk", s(tag_index_pk(tenant_id, tag)))
                    .scan_index_forward(false);
                match (name_prefix, phone_prefix) {
                    (Some(p), _) => q
                        .filter_expression("begins_with(name_key, :p)")
                        .expression_attribute_values(":p", s(p.clone())),
                    (None, Some(p)) => q
                        .filter_expression("begins_with(phone_key, :p)")
                        .expression_attribute_values(":p", s(p.clone())),
                    (None, None) => q,
                }
            }
        };
        let out = query.send().await.map_err(backend)?;
        let (raw, next) = trim_page(
            out.items.unwrap_or_default(),
            limit,
            out.last_evaluated_key,
            &index_keys,
        );
        let ids: Vec<String> = raw
            .iter()
            .filter_map(|i| attr(i, PK).and_then(contact_id_of_pk).map(str::to_owned))
            .collect();
        let mut items = self.profiles(tenant_id, &ids).await?;
        if let Some(tag) = tag_filter {
            items.retain(|c| c.tags.contains(&tag));
        }
        Ok(Page { items, next })
    }
}
