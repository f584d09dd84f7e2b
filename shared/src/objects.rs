//! Bulk object operations for erasure, retention and exports, behind the [`ObjectStore`] port:
//! deletes in batches of at most 1,000 keys (S3 `DeleteObjects`' limit), deletion by prefix one
//! listing page at a time, and streamed multipart uploads (documents built page by page, never
//! whole in memory). [`Bucket`] is the S3 implementation.

use std::collections::BTreeSet;
use std::future::Future;

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;

use crate::blob::BlobError;

/// Most keys one `DeleteObjects` request may name.
pub const DELETE_BATCH: usize = 1000;

/// Smallest part S3 accepts in a multipart upload (every part but the last).
pub const MIN_PART_BYTES: usize = 5 * 1024 * 1024;

fn s3_err<E: std::error::Error + 'static, R: std::fmt::Debug>(e: aws_sdk_s3::error::SdkError<E, R>) -> BlobError {
    BlobError(DisplayErrorContext(&e).to_string())
}

/// The keys to delete, without duplicates, in request-sized batches.
pub fn delete_batches(keys: &[String]) -> Vec<Vec<String>> {
    let unique: BTreeSet<&String> = keys.iter().collect();
    let unique: Vec<String> = unique.into_iter().cloned().collect();
    unique.chunks(DELETE_BATCH).map(<[String]>::to_vec).collect()
}

/// Bulk work on one bucket.
pub trait ObjectStore: Send + Sync {
    /// A streamed upload in progress.
    type Upload: Upload;

    /// Deletes `keys` (missing ones are fine); returns how many keys were named. Any per-key
    /// failure fails the call (the caller retries; deletes are idempotent).
    fn delete_keys(&self, keys: &[String]) -> impl Future<Output = Result<u64, BlobError>> + Send;

    /// Deletes one listing page (at most 1,000 objects) under `prefix`; returns how many it
    /// deleted and whether more objects may remain. Listing restarts at the prefix each time,
    /// so a caller that stops between pages loses nothing.
    fn delete_prefix_page(&self, prefix: &str) -> impl Future<Output = Result<(u64, bool), BlobError>> + Send;

    /// Deletes everything under `prefix`.
    fn delete_prefix(&self, prefix: &str) -> impl Future<Output = Result<u64, BlobError>> + Send {
        async move {
            let mut total = 0;
            loop {
                let (deleted, more) = self.delete_prefix_page(prefix).await?;
                total += deleted;
                if !more {
                    return Ok(total);
                }
            }
        }
    }

    /// Up to `len` bytes of the object at `key` from byte `offset` (empty past its end);
    /// `None` when there is no such object.
    fn read_range(
        &self,
        key: &str,
        offset: u64,
        len: u64,
    ) -> impl Future<Output = Result<Option<Bytes>, BlobError>> + Send;

    /// Stores a small object whole (encrypted by the bucket's KMS default).
    fn put_object(
        &self,
        key: &str,
        data: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Starts a streamed upload to `key` (encrypted by the bucket's KMS default).
    fn start_upload(
        &self,
        key: &str,
        content_type: &str,
    ) -> impl Future<Output = Result<Self::Upload, BlobError>> + Send;
}

/// A streamed upload: parts go in through [`PartSink`], then it is completed or abandoned.
pub trait Upload: PartSink + Sized {
    fn complete(self) -> impl Future<Output = Result<(), BlobError>> + Send;

    /// Abandons the upload (best effort: a failure is logged, never raised).
    fn abort(self) -> impl Future<Output = ()> + Send;
}

/// One bucket, for bulk work.
#[derive(Debug, Clone)]
pub struct Bucket {
    client: crate::aws::LazyClient<aws_sdk_s3::Client>,
    name: String,
}

impl Bucket {
    pub fn new(client: impl Into<crate::aws::LazyClient<aws_sdk_s3::Client>>, name: impl Into<String>) -> Self {
        Bucket {
            client: client.into(),
            name: name.into(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> &aws_sdk_s3::Client {
        self.client.get()
    }

    async fn delete_keys_in_batches(&self, keys: &[String]) -> Result<u64, BlobError> {
        let mut deleted = 0;
        for batch in delete_batches(keys) {
            deleted += self.delete_batch(batch).await?;
        }
        Ok(deleted)
    }

    async fn delete_batch(&self, batch: Vec<String>) -> Result<u64, BlobError> {
        if batch.is_empty() {
            return Ok(0);
        }
        let count = batch.len() as u64;
        let objects = batch
            .into_iter()
            .map(|k| ObjectIdentifier::builder().key(k).build().expect("key is set"))
            .collect();
        let out = self
            .client
            .delete_objects()
            .bucket(&self.name)
            .delete(
                Delete::builder()
                    .set_objects(Some(objects))
                    .quiet(true)
                    .build()
                    .expect("objects are set"),
            )
            .send()
            .await
            .map_err(s3_err)?;
        if let Some(err) = out.errors().first() {
            return Err(BlobError(format!(
                "{} of {count} objects could not be deleted (first: {})",
                out.errors().len(),
                err.code().unwrap_or("unknown error")
            )));
        }
        Ok(count)
    }

    async fn delete_listing_page(&self, prefix: &str) -> Result<(u64, bool), BlobError> {
        let out = self
            .client
            .list_objects_v2()
            .bucket(&self.name)
            .prefix(prefix)
            .max_keys(DELETE_BATCH as i32)
            .send()
            .await
            .map_err(s3_err)?;
        let keys: Vec<String> = out
            .contents()
            .iter()
            .filter_map(|o| o.key().map(str::to_owned))
            .collect();
        let more = out.is_truncated().unwrap_or(false);
        let deleted = self.delete_keys_in_batches(&keys).await?;
        Ok((deleted, more && deleted > 0))
    }

    /// Keys under `prefix` (tests and tools; listing pages of 1,000).
    pub async fn list_keys(&self, prefix: &str) -> Result<Vec<String>, BlobError> {
        let mut keys = Vec::new();
        let mut token = None;
        loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.name)
                .prefix(prefix)
                .set_continuation_token(token)
                .send()
                .await
                .map_err(s3_err)?;
            keys.extend(out.contents().iter().filter_map(|o| o.key().map(str::to_owned)));
            token = out.next_continuation_token().map(str::to_owned);
            if token.is_none() {
                return Ok(keys);
            }
        }
    }

    /// Starts a multipart upload to `key`, encrypted by the bucket's default (as `PutObject`).
    pub async fn start_multipart(&self, key: &str, content_type: Option<&str>) -> Result<MultipartUpload, BlobError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.name)
            .key(key)
            .set_content_type(content_type.map(str::to_owned))
            .send()
            .await
            .map_err(s3_err)?;
        let upload_id = out
            .upload_id()
            .ok_or_else(|| BlobError("no upload id returned".into()))?
            .to_owned();
        Ok(MultipartUpload {
            bucket: self.clone(),
            key: key.to_owned(),
            upload_id,
            parts: Vec::new(),
        })
    }
}

impl ObjectStore for Bucket {
    type Upload = MultipartUpload;

    async fn delete_keys(&self, keys: &[String]) -> Result<u64, BlobError> {
        self.delete_keys_in_batches(keys).await
    }

    async fn delete_prefix_page(&self, prefix: &str) -> Result<(u64, bool), BlobError> {
        self.delete_listing_page(prefix).await
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Bytes>, BlobError> {
        if len == 0 {
            return Ok(Some(Bytes::new()));
        }
        let out = self
            .client
            .get_object()
            .bucket(&self.name)
            .key(key)
            .range(format!("bytes={offset}-{}", offset + len - 1))
            .send()
            .await;
        let out = match out {
            Ok(out) => out,
            Err(e) if e.as_service_error().is_some_and(|s| s.is_no_such_key()) => return Ok(None),
            // Past the end of the object (S3's 416 InvalidRange).
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 416) => return Ok(Some(Bytes::new())),
            Err(e) => return Err(s3_err(e)),
        };
        let data = out
            .body
            .collect()
            .await
            .map_err(|e| BlobError(format!("reading an object failed: {e}")))?;
        Ok(Some(data.into_bytes()))
    }

    async fn put_object(&self, key: &str, data: Bytes, content_type: &str) -> Result<(), BlobError> {
        self.client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type(content_type)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(s3_err)?;
        Ok(())
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<MultipartUpload, BlobError> {
        self.start_multipart(key, Some(content_type)).await
    }
}

impl Bucket {
    /// A link through which the holder uploads one object to `key` with a `PUT` (the body is
    /// encrypted by the bucket's default like any other object).
    pub async fn presigned_put(
        &self,
        key: &str,
        content_type: &str,
        expires_in: std::time::Duration,
    ) -> Result<String, BlobError> {
        let config =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(expires_in).map_err(|e| BlobError(e.to_string()))?;
        let request = self
            .client
            .put_object()
            .bucket(&self.name)
            .key(key)
            .content_type(content_type)
            .presigned(config)
            .await
            .map_err(s3_err)?;
        Ok(request.uri().to_owned())
    }
}

impl crate::blob::MediaLinks for Bucket {
    /// The one presigning implementation (the media bucket's), on this bucket.
    async fn presigned_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_in: std::time::Duration,
    ) -> Result<String, BlobError> {
        crate::blob::S3Blobs::new(self.client.clone(), self.name.clone())
            .presigned_get(key, content_type, expires_in)
            .await
    }
}

/// Where a streamed document's parts go: S3 in production, memory in unit tests.
pub trait PartSink: Send {
    fn upload_part(&mut self, data: Bytes) -> impl Future<Output = Result<(), BlobError>> + Send;
}

/// A multipart upload in progress.
#[derive(Debug)]
pub struct MultipartUpload {
    bucket: Bucket,
    key: String,
    upload_id: String,
    parts: Vec<CompletedPart>,
}

impl MultipartUpload {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl Upload for MultipartUpload {
    /// A completion that fails aborts the upload (best effort), so no parts linger until the
    /// bucket's lifecycle rule removes them.
    async fn complete(mut self) -> Result<(), BlobError> {
        let parts = std::mem::take(&mut self.parts);
        let completed = self
            .bucket
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket.name)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(parts)).build())
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            Err(e) => {
                let error = s3_err(e);
                self.abort().await;
                Err(error)
            }
        }
    }

    /// Its parts are deleted; the bucket's lifecycle rule is the backstop.
    async fn abort(self) {
        if let Err(e) = self
            .bucket
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket.name)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .send()
            .await
        {
            tracing::warn!(error = %DisplayErrorContext(&e), "could not abort a multipart upload");
        }
    }
}

impl PartSink for MultipartUpload {
    async fn upload_part(&mut self, data: Bytes) -> Result<(), BlobError> {
        let number = self.parts.len() as i32 + 1;
        let out = self
            .bucket
            .client
            .upload_part()
            .bucket(&self.bucket.name)
            .key(&self.key)
            .upload_id(&self.upload_id)
            .part_number(number)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(s3_err)?;
        self.parts.push(
            CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .build(),
        );
        Ok(())
    }
}

/// Buffers a document written piece by piece and hands it to a [`PartSink`] in parts of at
/// least `part_bytes` (the last part may be smaller): memory stays around one part.
pub struct PartWriter<P> {
    sink: P,
    part_bytes: usize,
    buffer: Vec<u8>,
    written: u64,
    parts: usize,
}

impl<P: PartSink> PartWriter<P> {
    pub fn new(sink: P, part_bytes: usize) -> Self {
        PartWriter {
            sink,
            part_bytes: part_bytes.max(1),
            buffer: Vec::with_capacity(part_bytes.min(MIN_PART_BYTES) + 64 * 1024),
            written: 0,
            parts: 0,
        }
    }

    pub async fn write(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.buffer.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buffer.len() >= self.part_bytes {
            let part = std::mem::take(&mut self.buffer);
            self.parts += 1;
            self.sink.upload_part(Bytes::from(part)).await?;
        }
        Ok(())
    }

    /// Uploads what is buffered as the last part (an empty document still gets one part) and
    /// returns the sink and the document's size.
    pub async fn finish(mut self) -> Result<(P, u64), BlobError> {
        if !self.buffer.is_empty() || self.parts == 0 {
            let part = std::mem::take(&mut self.buffer);
            self.sink.upload_part(Bytes::from(part)).await?;
        }
        Ok((self.sink, self.written))
    }

    /// The sink, for abandoning the upload after a failure.
    pub fn into_sink(self) -> P {
        self.sink
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deletes_are_deduplicated_and_batched_by_1000() {
        let keys: Vec<String> = (0..2500).map(|i| format!("k{i:05}")).collect();
        let mut with_dupes = keys.clone();
        with_dupes.extend(keys[..10].iter().cloned());
        let batches = delete_batches(&with_dupes);
        assert_eq!(batches.iter().map(Vec::len).collect::<Vec<_>>(), vec![1000, 1000, 500]);
        let flat: BTreeSet<&String> = batches.iter().flatten().collect();
        assert_eq!(flat.len(), 2500);
        assert!(delete_batches(&[]).is_empty());
        assert_eq!(delete_batches(&["a".into()]).len(), 1);
    }

    #[derive(Default)]
    struct Memory(Vec<Bytes>);

    impl PartSink for Memory {
        async fn upload_part(&mut self, data: Bytes) -> Result<(), BlobError> {
            self.0.push(data);
            Ok(())
        }
    }

    #[tokio::test]
    async fn parts_are_at_least_the_part_size_except_the_last() {
        let mut w = PartWriter::new(Memory::default(), 10);
        let mut expected = Vec::new();
        for i in 0..23u8 {
            let piece = vec![b'a' + (i % 26); (i % 4) as usize + 1];
            expected.extend_from_slice(&piece);
            w.write(&piece).await.unwrap();
        }
        let (sink, size) = w.finish().await.unwrap();
        assert_eq!(size as usize, expected.len());
        let (last, full) = sink.0.split_last().unwrap();
        assert!(full.iter().all(|p| p.len() >= 10), "{full:?}");
        assert!(!last.is_empty());
        assert_eq!(sink.0.concat(), expected);
    }

    #[tokio::test]
    async fn an_empty_document_is_one_empty_part() {
        let (sink, size) = PartWriter::new(Memory::default(), 10).finish().await.unwrap();
        assert_eq!((sink.0.len(), size), (1, 0));
    }
}
