//! Object storage for media and exports (S3), behind a narrow port.

use std::future::Future;

use bytes::Bytes;

/// Where a contact's inbound media lives: under the tenant, then the contact, so erasure and
/// offboarding can delete by prefix.
pub fn media_key(tenant_id: &str, contact_id: &str, message_id: &str) -> String {
    format!("tenants/{tenant_id}/contacts/{contact_id}/media/{message_id}")
}

pub fn contact_media_prefix(tenant_id: &str, contact_id: &str) -> String {
    format!("tenants/{tenant_id}/contacts/{contact_id}/")
}

#[derive(Debug, thiserror::Error)]
#[error("object storage request failed: {0}")]
pub struct BlobError(pub String);

pub trait BlobStore: Send + Sync {
    /// Stores `data` at `key` (encrypted at rest by the bucket's KMS default).
    fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: Option<&str>,
    ) -> impl Future<Output = Result<(), BlobError>> + Send;
}

#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: aws_sdk_s3::Client,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>) -> Self {
        S3Blobs {
            client,
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        &self.client
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl BlobStore for S3Blobs {
    async fn put(&self, key: &str, data: Bytes, content_type: Option<&str>) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .body(data.into())
            .send()
            .await
            .map_err(|e| BlobError(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_keys_are_under_tenant_and_contact() {
        let key = media_key("t1", "c1", "m1");
        assert!(key.starts_with(&contact_media_prefix("t1", "c1")));
        assert!(key.starts_with("tenants/t1/"));
    }
}
