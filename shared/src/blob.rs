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

    /// Deletes the object at `key` (no error when there is none).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), BlobError>> + Send;
}

/// Short-lived download links for stored objects.
pub trait MediaLinks: Send + Sync {
    fn presigned_get(
        &self,
        key: &str,
        expires_in: std::time::Duration,
    ) -> impl Future<Output = Result<String, BlobError>> + Send;
}

/// Longest life of a presigned media or export link.
pub const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

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

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| BlobError(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
        Ok(())
    }
}

impl MediaLinks for S3Blobs {
    async fn presigned_get(&self, key: &str, expires_in: std::time::Duration) -> Result<String, BlobError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in.min(LINK_TTL))
            .map_err(|e| BlobError(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|e| BlobError(aws_sdk_s3::error::DisplayErrorContext(&e).to_string()))?;
        Ok(request.uri().to_owned())
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
