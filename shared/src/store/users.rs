//! Users of a tenant and the keys they own. A user item lists its keys, and every change to
//! a user (role, disable) rewrites those keys in the same transaction, conditional on the user
//! being as read: a key minted concurrently changes the user, so the rewrite cannot miss it.

use aws_sdk_dynamodb::types::{ConditionCheck, Delete, Put, TransactWriteItem, Update};

use super::dynamo::{DynamoStore, av, key, s, to_item, tx_check, tx_delete, tx_put, tx_update};
use super::items::{KeyItem, UserEmailItem, UserItem, key_time};
use super::keys::*;
use super::ports::UserStore;
use super::{Page, StoreError};
use crate::cursor::Position;
use crate::tenant::ApiKeyRecord;
use crate::user::{User, UserStatus};

const EMAIL_TAKEN: &str = "another user of the tenant has this email";

impl DynamoStore {
    fn put_user(&self, user: &User, before: Option<&User>) -> TransactWriteItem {
        let put = Put::builder()
            .table_name(self.table())
            .set_item(Some(to_item(&UserItem::new(user))));
        let put = match before {
            None => put.condition_expression("attribute_not_exists(PK)"),
            Some(b) => put
                .condition_expression("updated_at = :seen")
                .expression_attribute_values(":seen", av(&b.updated_at)),
        };
        tx_put(put.build().expect("put is complete"))
    }

    fn put_email(&self, user: &User) -> TransactWriteItem {
        tx_put(
            Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&UserEmailItem::new(user))))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete"),
        )
    }

    /// A transaction's check that the tenant exists and is active.
    pub(super) fn tenant_active_check(&self, tenant_id: &str) -> TransactWriteItem {
        tx_check(
            ConditionCheck::builder()
                .table_name(self.table())
                .set_key(Some(key(tenant_pk(tenant_id), TENANT_SK)))
                .condition_expression("#st = :active")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":active", s("active"))
                .build()
                .expect("check is complete"),
        )
    }

    /// One of the user's keys made to follow the user: its role, and revoked if the user is
    /// disabled (the first revocation time is kept).
    fn key_follows(&self, user: &User, key_id: &str) -> TransactWriteItem {
        let update = Update::builder()
            .table_name(self.table())
            .set_key(Some(key(tenant_pk(&user.tenant_id), api_key_sk(key_id))))
            .condition_expression("attribute_exists(PK)")
            .expression_attribute_names("#role", "role")
            .expression_attribute_values(":role", av(&user.role));
        let update = if user.status == UserStatus::Disabled {
            update
                .update_expression("SET #role = :role, revoked_at = if_not_exists(revoked_at, :at)")
                .expression_attribute_values(":at", key_time(user.updated_at))
        } else {
            update.update_expression("SET #role = :role")
        };
        tx_update(update.build().expect("update is complete"))
    }
}

impl UserStore for DynamoStore {
    async fn create_user(&self, user: &User) -> Result<(), StoreError> {
        let items = vec![
            self.tenant_active_check(&user.tenant_id),
            self.put_user(user, None),
            self.put_email(user),
        ];
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) if c.failed(2) => Err(StoreError::Conflict(EMAIL_TAKEN.into())),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("user id exists".into())),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn get_user(&self, tenant_id: &str, user_id: &str) -> Result<Option<User>, StoreError> {
        let item: Option<UserItem> = self.get(tenant_pk(tenant_id), &user_sk(user_id)).await?;
        Ok(item.map(|i| i.user))
    }

    async fn list_users(&self, tenant_id: &str, limit: i32, start: Option<Position>) -> Result<Page<User>, StoreError> {
        let query = self
            .client()
            .query()
            .key_condition_expression("PK = :pk AND begins_with(SK, :prefix)")
            .expression_attribute_values(":pk", s(tenant_pk(tenant_id)))
            .expression_attribute_values(":prefix", s(USER_PREFIX))
            .consistent_read(true);
        self.list_page(query, tenant_id, limit, start, &[PK, SK], |i: UserItem| i.user)
            .await
    }

    async fn update_user(&self, before: &User, after: &User) -> Result<(), StoreError> {
        let mut items = vec![self.put_user(after, Some(before))];
        let email_moves = before.email != after.email;
        if email_moves {
            items.push(self.put_email(after));
            items.push(tx_delete(
                Delete::builder()
                    .table_name(self.table())
                    .set_key(Some(key(tenant_pk(&before.tenant_id), user_email_sk(&before.email))))
                    .condition_expression("user_id = :u")
                    .expression_attribute_values(":u", s(before.user_id.clone()))
                    .build()
                    .expect("delete is complete"),
            ));
        }
        items.extend(after.key_ids.iter().map(|k| self.key_follows(after, k)));
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::VersionMismatch),
            Err(c) if email_moves && c.failed(1) => Err(StoreError::Conflict(EMAIL_TAKEN.into())),
            Err(c) if c.any_failed() => Err(StoreError::VersionMismatch),
            Err(c) => Err(c.unexplained()),
        }
    }

    async fn add_user_key(&self, user: &User, record: &ApiKeyRecord, dropped: &[String]) -> Result<(), StoreError> {
        let key_put = tx_put(
            Put::builder()
                .table_name(self.table())
                .set_item(Some(to_item(&KeyItem::from(record))))
                .condition_expression("attribute_not_exists(PK)")
                .build()
                .expect("put is complete"),
        );
        // The whole list, as read (the condition on `updated_at` guards it), less the dropped.
        let listed_keys: Vec<&String> = user
            .key_ids
            .iter()
            .filter(|k| !dropped.contains(k))
            .chain([&record.key_id])
            .collect();
        let drops = dropped.iter().map(|k| {
            tx_delete(
                Delete::builder()
                    .table_name(self.table())
                    .set_key(Some(key(tenant_pk(&user.tenant_id), api_key_sk(k))))
                    .build()
                    .expect("delete is complete"),
            )
        });
        let listed = tx_update(
            Update::builder()
                .table_name(self.table())
                .set_key(Some(key(tenant_pk(&user.tenant_id), user_sk(&user.user_id))))
                .update_expression("SET key_ids = :k, updated_at = :now")
                .condition_expression("updated_at = :seen AND #st = :active")
                .expression_attribute_names("#st", "status")
                .expression_attribute_values(":k", av(&listed_keys))
                .expression_attribute_values(":now", av(&record.created_at))
                .expression_attribute_values(":seen", av(&user.updated_at))
                .expression_attribute_values(":active", av(&UserStatus::Active))
                .build()
                .expect("update is complete"),
        );
        let mut items = vec![self.tenant_active_check(&user.tenant_id), key_put, listed];
        items.extend(drops);
        match self.transact(items).await? {
            Ok(()) => Ok(()),
            Err(c) if c.failed(0) => Err(StoreError::NotFound),
            Err(c) if c.failed(2) => Err(StoreError::VersionMismatch),
            Err(c) if c.any_failed() => Err(StoreError::Conflict("key id exists".into())),
            Err(c) => Err(c.unexplained()),
        }
    }
}
