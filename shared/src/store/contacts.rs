//! Contacts: creation with database-enforced uniqueness of phone and user id, optimistic
//! concurrency on every update, consent and restriction history, and index-served listings.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;

use aws_sdk_dynamodb::types::{
    AttributeValue, Delete, DeleteRequest, KeysAndAttributes, Put, TransactWriteItem, WriteRequest,
};
use serde::{Deserialize, Serialize};

use super::dynamo::{backend, from_item, start_key, to_item, trim_page};
use super::inbound::{ConsentItem, cancellation_codes, identity_put};
use super::keys::*;
use super::{DynamoStore, Page, StoreError};
use crate::contact::{ConsentChange, Contact, IdentityChange, RestrictionChange, name_search_key, phone_search_key};
use crate::cursor::Position;

/// How a contact listing is narrowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContactFilter {
    All,
    /// Name search key prefix (see [`name_search_key`]).
    NamePrefix(String),
    /// Phone digits prefix.
    PhonePrefix(String),
    /// Contacts with a tag, optionally also matching a name or phone prefix.
    Tag {
        tag: String,
        name_prefix: Option<String>,
        phone_prefix: Option<String>,
    },
}

/// A contact edit to store: the contact as read, as it should become, and identity moves.
#[derive(Debug, Clone)]
pub struct ContactUpdate<'a> {
    pub before: &'a Contact,
    pub after: &'a Contact,
    pub phone_change: Option<&'a IdentityChange>,
    pub user_id_change: Option<&'a IdentityChange>,
}

pub trait ContactStore: Send + Sync {
    /// Creates a contact with its identity records and tag entries in one transaction;
    /// `Conflict` when the phone or user id belongs to another contact of the tenant.
    fn insert_contact(&self, contact: &Contact) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn load_contact(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Option<Contact>, StoreError>> + Send;

    /// Replaces the contact if it is still at `before.version` (`VersionMismatch` otherwise),
    /// moving identity records and tag entries with it.
    fn update_contact(&self, update: &ContactUpdate<'_>) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores the consent statement and its history entry together (version-checked).
    fn record_consent(
        &self,
        before: &Contact,
        after: &Contact,
        change: &ConsentChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores a restriction change and its history entry together (version-checked).
    fn record_restriction(
        &self,
        before: &Contact,
        after: &Contact,
        change: &RestrictionChange,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    fn consent_history(
        &self,
        tenant_id: &str,
        contact_id: &str,
    ) -> impl Future<Output = Result<Vec<ConsentChange>, StoreError>> + Send;

    fn list_contacts(
        &self,
        tenant_id: &str,
        filter: &ContactFilter,
        limit: i32,
        start: Option<Position>,
    ) -> impl Future<Output = Result<Page<Contact>, StoreError>> + Send;
}

/// The stored form of a contact: the profile plus its index keys.
#[derive(Serialize, Deserialize)]
pub(crate) struct ContactItem {
    #[serde(rename = "PK")]
    pub pk: String,
    #[serde(rename = "SK")]
    pub sk: String,
    #[serde(rename = "GSI2PK")]
    pub gsi2pk: String,
    #[serde(rename = "GSI2SK")]
    pub gsi2sk: String,
    #[serde(rename = "GSI3PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi3pk: Option<String>,
    #[serde(rename = "GSI3SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi3sk: Option<String>,
    #[serde(rename = "GSI4PK", default, skip_serializing_if = "Option::is_none")]
    pub gsi4pk: Option<String>,
    #[serde(rename = "GSI4SK", default, skip_serializing_if = "Option::is_none")]
    pub gsi4sk: Option<String>,
    #[serde(flatten)]
    pub contact: Contact,
}

fn name_key(contact: &Contact) -> Option<String> {
    contact.name.as_deref().map(name_search_key).filter(|k| !k.is_empty())
}

fn phone_key(contact: &Contact) -> Option<String> {
    contact.phone.as_deref().map(phone_search_key)
}

impl ContactItem {
    pub fn new(contact: &Contact) -> Self {
        let (t, c) = (&contact.tenant_id, &contact.contact_id);
        let name = name_key(contact);
        let phone = phone_key(contact);
        ContactItem {
            pk: contact_pk(t, c),
            sk: PROFILE_SK.into(),
            gsi2pk: contacts_index_pk(t),
            gsi2sk: c.clone(),
            gsi3pk: name.as_ref().map(|_| names_index_pk(t)),
            gsi3sk: name.map(|n| format!("{n}#{c}")),
            gsi4pk: phone.as_ref().map(|_| phones_index_pk(t)),
            gsi4sk: phone.map(|p| format!("{p}#{c}")),
            contact: contact.clone(),
        }
    }
}

/// Membership of a contact in a tag, indexed on GSI2 with the search keys for combined filters.
#[derive(Serialize, Deserialize)]
struct TagItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(rename = "GSI2PK")]
    gsi2pk: String,
    #[serde(rename = "GSI2SK")]
    gsi2sk: String,
    tag: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    name_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phone_key: Option<String>,
}

impl TagItem {
    fn new(contact: &Contact, tag: &str) -> Self {
        TagItem {
            pk: contact_pk(&contact.tenant_id, &contact.contact_id),
            sk: tag_sk(tag),
            gsi2pk: tag_index_pk(&contact.tenant_id, tag),
            gsi2sk: contact.contact_id.clone(),
            tag: tag.to_owned(),
            name_key: name_key(contact),
            phone_key: phone_key(contact),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct RestrictionItem {
    #[serde(rename = "PK")]
    pk: String,
    #[serde(rename = "SK")]
    sk: String,
    #[serde(flatten)]
    change: RestrictionChange,
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn put(table: &str, item: HashMap<String, AttributeValue>) -> TransactWriteItem {
    TransactWriteItem::builder()
        .put(
            Put::builder()
                .table_name(table)
                .set_item(Some(item))
                .build()
                .expect("put is complete"),
        )
        .build()
}

fn versioned_put(table: &str, contact: &Contact, expected_version: u64) -> TransactWriteItem {
    let put = Put::builder()
        .table_name(table)
        .set_item(Some(to_item(&ContactItem::new(contact))))
        .condition_expression("attribute_exists(PK) AND version = :v")
        .expression_attribute_values(":v", AttributeValue::N(expected_version.to_string()))
        .build()
        .expect("put is complete");
    TransactWriteItem::builder().put(put).build()
}

fn identity_release(table: &str, pk: String, contact_id: &str) -> TransactWriteItem {
    let delete = Delete::builder()
        .table_name(table)
        .key(PK, s(pk))
        .key(SK, s(IDENTITY_SK))
        .condition_expression("contact_id = :c")
        .expression_attribute_values(":c", s(contact_id))
        .build()
        .expect("delete is complete");
    TransactWriteItem::builder().delete(delete).build()
}

const CONFLICT: &str = "a contact with this phone or user_id already exists";

impl DynamoStore {
    /// Runs a contact transaction whose first item is the version-checked profile write.
    async fn contact_transaction(&self, items: Vec<TransactWriteItem>) -> Result<(), StoreError> {
        match self
            .client()
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(err) => match cancellation_codes(&err) {
                Some(codes) => {
                    let failed = |i: usize| codes.get(i).and_then(|c| c.as_deref()) == Some("ConditionalCheckFailed");
                    if failed(0) {
                        Err(StoreError::VersionMismatch)
                    } else if (1..codes.len()).any(failed) {
                        Err(StoreError::Conflict(CONFLICT.into()))
                    } else {
                        Err(StoreError::Backend(format!("transaction cancelled: {codes:?}")))
                    }
                }
                None => Err(backend(err)),
            },
        }
    }

    /// Profiles for index keys, in the index's order, read consistently; missing ones
    /// (erased since the index was read) are skipped.
    async fn profiles(&self, tenant_id: &str, contact_ids: &[String]) -> Result<Vec<Contact>, StoreError> {
        let mut found: HashMap<String, Contact> = HashMap::new();
        let unique: BTreeSet<&String> = contact_ids.iter().collect();
        let mut pending: Vec<HashMap<String, AttributeValue>> = unique
            .into_iter()
            .map(|c| {
                HashMap::from([
                    (PK.to_owned(), s(contact_pk(tenant_id, c))),
                    (SK.to_owned(), s(PROFILE_SK)),
                ])
            })
            .collect();
        let mut rounds = 0;
        while !pending.is_empty() {
            rounds += 1;
            if rounds > 10 {
                return Err(StoreError::Backend(
                    "BatchGetItem kept returning unprocessed keys".into(),
                ));
            }
            let batch: Vec<_> = pending.drain(..pending.len().min(100)).collect();
            let out = self
                .client()
                .batch_get_item()
                .request_items(
                    self.table(),
                    KeysAndAttributes::builder()
                        .set_keys(Some(batch))
                        .consistent_read(true)
                        .build()
                        .expect("keys are set"),
                )
                .send()
                .await
                .map_err(backend)?;
            for item in out
                .responses
                .unwrap_or_default()
                .remove(self.table())
                .unwrap_or_default()
            {
                let contact = from_item::<ContactItem>(item)?.contact;
                found.insert(contact.contact_id.clone(), contact);
            }
            if let Some(mut unprocessed) = out.unprocessed_keys
                && let Some(retry) = unprocessed.remove(self.table())
            {
                pending.extend(retry.keys);
            }
        }
        Ok(contact_ids.iter().filter_map(|id| found.remove(id)).collect())
    }
}

impl ContactStore for DynamoStore {
    async fn insert_contact(&self, contact: &Contact) -> Result<(), StoreError> {
        let profile = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&ContactItem::new(contact))))
            .condition_expression("attribute_not_exists(PK)")
            .build()
            .expect("put is complete");
        let mut items = vec![TransactWriteItem::builder().put(profile).build()];
        if let Some(phone) = &contact.phone {
            items.push(identity_put(
                self.table(),
                phone_identity_pk(&contact.tenant_id, phone),
                &contact.contact_id,
            ));
        }
        if let Some(user_id) = &contact.user_id {
            items.push(identity_put(
                self.table(),
                user_identity_pk(&contact.tenant_id, user_id),
                &contact.contact_id,
            ));
        }
        for tag in &contact.tags {
            items.push(put(self.table(), to_item(&TagItem::new(contact, tag))));
        }
        match self.contact_transaction(items).await {
            // A fresh id never collides; a failed first item can only mean a retried create.
            Err(StoreError::VersionMismatch) => Err(StoreError::Conflict("contact id already exists".into())),
            other => other,
        }
    }

    async fn load_contact(&self, tenant_id: &str, contact_id: &str) -> Result<Option<Contact>, StoreError> {
        let out = self
            .client()
            .get_item()
            .table_name(self.table())
            .key(PK, s(contact_pk(tenant_id, contact_id)))
            .key(SK, s(PROFILE_SK))
            .consistent_read(true)
            .send()
            .await
            .map_err(backend)?;
        Ok(out.item.map(from_item::<ContactItem>).transpose()?.map(|i| i.contact))
    }

    async fn update_contact(&self, update: &ContactUpdate<'_>) -> Result<(), StoreError> {
        let (before, after) = (update.before, update.after);
        let (t, c) = (&after.tenant_id, &after.contact_id);
        let mut items = vec![versioned_put(self.table(), after, before.version)];
        for (change, key) in [
            (update.phone_change, phone_identity_pk as fn(&str, &str) -> String),
            (update.user_id_change, user_identity_pk),
        ] {
            let Some(change) = change else { continue };
            if let Some(old) = &change.old {
                items.push(identity_release(self.table(), key(t, old), c));
            }
            if let Some(new) = &change.new {
                items.push(identity_put(self.table(), key(t, new), c));
            }
        }
        // Tag entries carry the search keys, so a name or phone change rewrites all of them.
        let keys_changed = name_key(before) != name_key(after) || phone_key(before) != phone_key(after);
        let before_tags: BTreeSet<&String> = before.tags.iter().collect();
        for tag in &after.tags {
            if keys_changed || !before_tags.contains(tag) {
                items.push(put(self.table(), to_item(&TagItem::new(after, tag))));
            }
        }
        self.contact_transaction(items).await?;
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
                            .key(PK, s(contact_pk(t, c)))
                            .key(SK, s(tag_sk(tag)))
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
        let history = ConsentItem {
            pk: contact_pk(&after.tenant_id, &after.contact_id),
            sk: consent_history_sk(change.at.timestamp_millis(), &crate::ids::new_id()),
            change: change.clone(),
        };
        self.contact_transaction(vec![
            versioned_put(self.table(), after, before.version),
            put(self.table(), to_item(&history)),
        ])
        .await
    }

    async fn record_restriction(
        &self,
        before: &Contact,
        after: &Contact,
        change: &RestrictionChange,
    ) -> Result<(), StoreError> {
        let history = RestrictionItem {
            pk: contact_pk(&after.tenant_id, &after.contact_id),
            sk: restriction_history_sk(change.at.timestamp_millis(), &crate::ids::new_id()),
            change: change.clone(),
        };
        self.contact_transaction(vec![
            versioned_put(self.table(), after, before.version),
            put(self.table(), to_item(&history)),
        ])
        .await
    }

    async fn consent_history(&self, tenant_id: &str, contact_id: &str) -> Result<Vec<ConsentChange>, StoreError> {
        let mut out = Vec::new();
        let mut start = None;
        loop {
            let page = self
                .client()
                .query()
                .table_name(self.table())
                .key_condition_expression("PK = :pk AND begins_with(SK, :p)")
                .expression_attribute_values(":pk", s(contact_pk(tenant_id, contact_id)))
                .expression_attribute_values(":p", s("CONSENT#"))
                .set_exclusive_start_key(start)
                .consistent_read(true)
                .send()
                .await
                .map_err(backend)?;
            for item in page.items.unwrap_or_default() {
                out.push(from_item::<ConsentItem>(item)?.change);
            }
            start = page.last_evaluated_key;
            if start.is_none() {
                return Ok(out);
            }
        }
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
            ContactFilter::All | ContactFilter::Tag { .. } => [PK, SK, "GSI2PK", "GSI2SK"],
            ContactFilter::NamePrefix(_) => [PK, SK, "GSI3PK", "GSI3SK"],
            ContactFilter::PhonePrefix(_) => [PK, SK, "GSI4PK", "GSI4SK"],
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
            .filter_map(|i| i.get(PK).and_then(|v| v.as_s().ok()))
            .filter_map(|pk| pk.rsplit_once("#C#").map(|(_, c)| c.to_owned()))
            .collect();
        let mut items = self.profiles(tenant_id, &ids).await?;
        if let Some(tag) = tag_filter {
            items.retain(|c| c.tags.contains(&tag));
        }
        Ok(Page { items, next })
    }
}

impl DynamoStore {
    /// `BatchWriteItem` in chunks of 25, retrying unprocessed items with backoff.
    pub(crate) async fn batch_write(&self, requests: Vec<WriteRequest>) -> Result<(), StoreError> {
        for chunk in requests.chunks(25) {
            let mut pending = chunk.to_vec();
            let mut attempt = 0u32;
            while !pending.is_empty() {
                attempt += 1;
                if attempt > 8 {
                    return Err(StoreError::Backend(
                        "BatchWriteItem kept returning unprocessed items".into(),
                    ));
                }
                let out = self
                    .client()
                    .batch_write_item()
                    .request_items(self.table(), pending)
                    .send()
                    .await
                    .map_err(backend)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut m| m.remove(self.table()))
                    .unwrap_or_default();
                if !pending.is_empty() {
                    tokio::time::sleep(std::time::Duration::from_millis(25 << attempt.min(6))).await;
                }
            }
        }
        Ok(())
    }
}
