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
    /// A multipart upload of one large object.
    type Multipart: crate::objects::Upload;

    /// Stores `data` at `key` (encrypted at rest by the bucket's KMS default).
    fn put(
        &self,
        key: &str,
        data: Bytes,
        content_type: Option<&str>,
    ) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Starts a multipart upload to `key` (same encryption as [`BlobStore::put`]): parts of at
    /// least [`crate::objects::MIN_PART_BYTES`] except the last, then completed (the object
    /// appears) or aborted (its parts are deleted).
    fn start_multipart(
        &self,
        key: &str,
        content_type: Option<&str>,
    ) -> impl Future<Output = Result<Self::Multipart, BlobError>> + Send;

    /// Deletes the object at `key` (no error when there is none).
    fn delete(&self, key: &str) -> impl Future<Output = Result<(), BlobError>> + Send;
}

/// Short-lived download links for stored objects. Every link is served as a download
/// (`Content-Disposition: attachment`) with a content type from [`served_content_type`]: what a
/// customer declared never decides what a browser renders from our bucket.
pub trait MediaLinks: Send + Sync {
    /// A link to `key`; `content_type` is the declared type (anything not allowed is served as
    /// `application/octet-stream`).
    fn presigned_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_in: std::time::Duration,
    ) -> impl Future<Output = Result<String, BlobError>> + Send;
}

/// Content types a presigned link may carry: what WhatsApp accepts as media (images, video,
/// audio, documents) and our exports (JSON). Nothing a browser executes (HTML, SVG, XML, …).
pub const SERVED_CONTENT_TYPES: &[&str] = &[
    "image/jpeg",
    "image/png",
    "image/webp",
    "video/mp4",
    "video/3gpp",
    "audio/aac",
    "audio/amr",
    "audio/mp4",
    "audio/mpeg",
    "audio/ogg",
    "application/pdf",
    "text/plain",
    "application/msword",
    "application/vnd.ms-excel",
    "application/vnd.ms-powerpoint",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "application/json",
];

/// What every other declared type is served as.
pub const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// The content type a link serves for a `declared` type: its essence (lowercase, parameters
/// such as `; codecs=opus` dropped) if it is in [`SERVED_CONTENT_TYPES`], else
/// [`FALLBACK_CONTENT_TYPE`].
pub fn served_content_type(declared: Option<&str>) -> &'static str {
    let Some(declared) = declared else {
        return FALLBACK_CONTENT_TYPE;
    };
    let essence = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    SERVED_CONTENT_TYPES
        .iter()
        .find(|allowed| **allowed == essence)
        .copied()
        .unwrap_or(FALLBACK_CONTENT_TYPE)
}

/// Longest life of a presigned media or export link.
pub const LINK_TTL: std::time::Duration = std::time::Duration::from_secs(15 * 60);

#[derive(Debug, Clone)]
pub struct S3Blobs {
    client: crate::aws::LazyClient<aws_sdk_s3::Client>,
    bucket: String,
}

impl S3Blobs {
    pub fn new(client: impl Into<crate::aws::LazyClient<aws_sdk_s3::Client>>, bucket: impl Into<String>) -> Self {
        S3Blobs {
            client: client.into(),
            bucket: bucket.into(),
        }
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        self.client.get()
    }

    pub fn bucket(&self) -> &str {
        &self.bucket
    }
}

impl BlobStore for S3Blobs {
    type Multipart = crate::objects::MultipartUpload;

    async fn start_multipart(
        &self,
        key: &str,
        content_type: Option<&str>,
    ) -> Result<crate::objects::MultipartUpload, BlobError> {
        crate::objects::Bucket::new(self.client.clone(), self.bucket.clone())
            .start_multipart(key, content_type)
            .await
    }

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
    async fn presigned_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_in: std::time::Duration,
    ) -> Result<String, BlobError> {
        let config = aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in.min(LINK_TTL))
            .map_err(|e| BlobError(e.to_string()))?;
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            // Signed into the link: S3 answers with these headers whatever the object declares.
            .response_content_disposition("attachment")
            .response_content_type(served_content_type(content_type))
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
    fn served_content_types_come_from_the_allow_list() {
        assert_eq!(served_content_type(Some("image/jpeg")), "image/jpeg");
        assert_eq!(served_content_type(Some("Image/PNG")), "image/png");
        assert_eq!(served_content_type(Some("audio/ogg; codecs=opus")), "audio/ogg");
        assert_eq!(served_content_type(Some(" application/pdf ")), "application/pdf");
        assert_eq!(served_content_type(Some("text/plain; charset=utf-8")), "text/plain");
        assert_eq!(served_content_type(Some("application/json")), "application/json");
        assert_eq!(
            served_content_type(Some(
                "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
            )),
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
        );
        for rendered in [
            "text/html",
            "TEXT/HTML; charset=utf-8",
            "image/svg+xml",
            "application/xhtml+xml",
            "text/xml",
            "application/javascript",
            "text/plain-but-not-really",
            "image/jpeg, text/html",
            "",
        ] {
            assert_eq!(served_content_type(Some(rendered)), FALLBACK_CONTENT_TYPE, "{rendered}");
        }
        assert_eq!(served_content_type(None), FALLBACK_CONTENT_TYPE);
    }

    #[test]
    fn media_keys_are_under_tenant_and_contact() {
        let key = media_key("t1", "c1", "m1");
        assert!(key.starts_with(&contact_media_prefix("t1", "c1")));
        assert!(key.starts_with("tenants/t1/"));
    }
}
