//! The report counters' storage: one update per counter item a transaction touches (built
//! here, run inside the event log's transaction in `store/events.rs`), and the range Query a
//! report reads them with.
//!
//! An update `ADD`s each attribute's delta (DynamoDB creates a missing item or attribute at
//! zero) and sets the item's bucket, number and expiry; it has no condition, so it never
//! cancels the event transaction it rides in, and it is applied exactly when the events whose
//! facts it sums are first recorded.

use std::collections::{BTreeMap, HashMap};

use aws_sdk_dynamodb::types::{AttributeValue, TransactWriteItem, Update};
use chrono::{DateTime, Utc};

use super::StoreError;
use super::dynamo::{DynamoStore, PageQuery, key, n, s, tx_update};
use super::keys::{report_pk, report_sk, report_sk_last};
use super::ports::ReportStore;
use crate::reports::counters::{CounterKey, CounterRow, Granularity, is_counter_attribute};

impl DynamoStore {
    /// The update adding `adds` to one counter item, expiring at `expires_at`.
    pub(crate) fn counter_update(
        &self,
        tenant_id: &str,
        counter: &CounterKey,
        adds: &BTreeMap<String, u64>,
        expires_at: DateTime<Utc>,
    ) -> TransactWriteItem {
        let mut names = HashMap::new();
        let mut values = HashMap::from([
            (":bucket".to_owned(), s(counter.bucket.clone())),
            (":phone".to_owned(), s(counter.phone.clone())),
            (":exp".to_owned(), n(expires_at.timestamp())),
        ]);
        let mut parts = Vec::with_capacity(adds.len());
        for (i, (name, amount)) in adds.iter().enumerate() {
            names.insert(format!("#a{i}"), name.clone());
            values.insert(format!(":a{i}"), n(amount));
            parts.push(format!("#a{i} :a{i}"));
        }
        let expression = format!(
            "ADD {} SET #bucket = :bucket, phone_number_id = :phone, expires_at = :exp",
            parts.join(", ")
        );
        names.insert("#bucket".to_owned(), "bucket".to_owned());
        tx_update(
            Update::builder()
                .table_name(self.table())
                .set_key(Some(key(
                    report_pk(tenant_id, counter.granularity.letter()),
                    report_sk(&counter.bucket, &counter.phone),
                )))
                .update_expression(expression)
                .set_expression_attribute_names(Some(names))
                .set_expression_attribute_values(Some(values))
                .build()
                .expect("table, key and expression are set"),
        )
    }
}

/// A counter item as read (keys, bucket, number, expiry and counters).
fn counter_row(item: &HashMap<String, AttributeValue>) -> CounterRow {
    let text = |name: &str| item.get(name).and_then(|v| v.as_s().ok()).cloned().unwrap_or_default();
    CounterRow {
        bucket: text("bucket"),
        phone: text("phone_number_id"),
        values: item
            .iter()
            .filter(|(name, _)| is_counter_attribute(name))
            .filter_map(|(name, v)| Some((name.clone(), v.as_n().ok()?.parse().ok()?)))
            .collect(),
    }
}

fn expired(item: &HashMap<String, AttributeValue>, now: DateTime<Utc>) -> bool {
    item.get("expires_at")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse::<i64>().ok())
        .is_some_and(|at| at <= now.timestamp())
}

impl ReportStore for DynamoStore {
    async fn counter_rows(
        &self,
        tenant_id: &str,
        granularity: Granularity,
        first: &str,
        last: &str,
        now: DateTime<Utc>,
    ) -> Result<Vec<CounterRow>, StoreError> {
        let query = PageQuery {
            sk_between: Some((first.to_owned(), report_sk_last(last))),
            // A report may lag a write by a moment; half the read cost.
            consistent: false,
            ..PageQuery::partition(report_pk(tenant_id, granularity.letter()))
        };
        // TTL deletes lag: an expired item still comes back until then.
        let items = self.query_all(&query).await?;
        Ok(items.iter().filter(|i| !expired(i, now)).map(counter_row).collect())
    }
}
