//! One media file from the Graph API into object storage, streamed: the body is read chunk
//! by chunk into parts of [`PartBudget::part_bytes`], hashed as it goes, and each part is
//! uploaded before the next is read. A file that fits in one part is one `PutObject`; a larger
//! one is a multipart upload, completed only once its size and SHA-256 match what Meta
//! announced and aborted on any failure (so no object, and no parts, are left behind).
//!
//! Memory: every part buffer is reserved from the invocation's [`PartBudget`] before a byte is
//! read into it and returned once the part is stored, so however many files one invocation
//! carries, and however large, the buffered bytes never exceed the budget (a job that finds
//! the budget spent waits, and its connection with it: TCP flow control holds Meta back).

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crm_shared::blob::{BlobError, BlobStore};
use crm_shared::graph::{GraphCallError, MAX_MEDIA_BYTES, MediaStream, digest_matches};
use crm_shared::objects::{MIN_PART_BYTES, PartSink, Upload};

/// The part size of a media upload: S3's minimum is 5 MiB (all parts but the last).
pub const PART_BYTES: usize = 8 * 1024 * 1024;

/// Bytes of media one invocation may hold in part buffers at once: six parts, whatever the
/// batch carries (10 × 100 MB documents included).
pub const BUFFER_BUDGET_BYTES: usize = 6 * PART_BYTES;

/// The bytes of media buffered at once, shared by the jobs of an invocation (and the
/// invocations of an execution environment, which run one at a time). Clones share it.
#[derive(Debug, Clone)]
pub struct PartBudget {
    part_bytes: usize,
    total_bytes: usize,
    permits: Arc<Semaphore>,
}

impl Default for PartBudget {
    fn default() -> Self {
        PartBudget::new(PART_BYTES, BUFFER_BUDGET_BYTES)
    }
}

impl PartBudget {
    /// Parts of `part_bytes` (at least [`MIN_PART_BYTES`] against S3; unit tests use less),
    /// at most `total_bytes` buffered (at least one part, so every job can make progress).
    pub fn new(part_bytes: usize, total_bytes: usize) -> Self {
        let part_bytes = part_bytes.clamp(1, u32::MAX as usize);
        let total_bytes = total_bytes.max(part_bytes);
        PartBudget {
            part_bytes,
            total_bytes,
            permits: Arc::new(Semaphore::new(total_bytes)),
        }
    }

    /// The S3 part size; a budget fit for S3 has parts of at least [`MIN_PART_BYTES`].
    pub fn part_bytes(&self) -> usize {
        self.part_bytes
    }

    pub fn total_bytes(&self) -> usize {
        self.total_bytes
    }

    /// Bytes not reserved right now (all of them once no job is running).
    pub fn available(&self) -> usize {
        self.permits.available_permits()
    }

    /// Whether S3 accepts this budget's parts.
    pub fn fits_s3(&self) -> bool {
        self.part_bytes >= MIN_PART_BYTES
    }

    async fn reserve(&self, bytes: usize) -> SemaphorePermit<'_> {
        // At most one part per reservation, and the semaphore is never closed.
        let bytes = bytes.min(self.part_bytes) as u32;
        self.permits
            .acquire_many(bytes)
            .await
            .expect("the budget's semaphore is never closed")
    }
}

/// What Meta announced about the file (its media info and the webhook).
#[derive(Debug, Default)]
pub struct Announced<'a> {
    pub size: Option<u64>,
    /// SHA-256 checksums, hex or base64; each must match.
    pub checksums: Vec<&'a str>,
}

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Download(#[from] GraphCallError),
    #[error(transparent)]
    Store(#[from] BlobError),
    #[error("downloaded size differs from the announced size")]
    SizeMismatch,
    #[error("checksum mismatch")]
    ChecksumMismatch,
    #[error("the invocation ran out of time during the transfer")]
    OutOfTime,
}

/// Streams `body` to `key`; returns the size stored. With a `deadline`, a transfer still
/// running then is stopped (and its upload aborted) so the invocation can still answer.
pub async fn transfer<B: BlobStore>(
    blobs: &B,
    budget: &PartBudget,
    mut body: MediaStream,
    key: &str,
    content_type: Option<&str>,
    announced: &Announced<'_>,
    deadline: Option<Instant>,
) -> Result<u64, TransferError> {
    let mut upload = None;
    let copy = copy(blobs, budget, &mut body, key, content_type, announced, &mut upload);
    let copied = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, copy)
            .await
            .unwrap_or(Err(TransferError::OutOfTime)),
        None => copy.await,
    };
    if copied.is_err()
        && let Some(upload) = upload.take()
    {
        upload.abort().await;
    }
    copied
}

/// The copy proper. A multipart upload it starts is left in `upload` until it completes, so
/// [`transfer`] can abort it after a failure or when the deadline drops this future.
async fn copy<B: BlobStore>(
    blobs: &B,
    budget: &PartBudget,
    body: &mut MediaStream,
    key: &str,
    content_type: Option<&str>,
    announced: &Announced<'_>,
    upload: &mut Option<B::Multipart>,
) -> Result<u64, TransferError> {
    let part_bytes = budget.part_bytes();
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    // The rest of a chunk that overflowed the last part (counted and hashed already).
    let mut carry: Option<Bytes> = None;
    loop {
        // An honest announcement bounds what is left; without one, a whole part.
        let want = announced
            .size
            .map_or(part_bytes, |n| n.saturating_sub(size).min(part_bytes as u64) as usize);
        let _reserved = budget.reserve(want).await;
        // Exactly the reservation: the buffer never grows (and never doubles) past it.
        let mut part = Vec::with_capacity(want);
        let mut ended = false;
        while part.len() < part_bytes {
            let chunk = match carry.take() {
                Some(rest) => rest,
                None => match body.next().await {
                    None => {
                        ended = true;
                        break;
                    }
                    Some(chunk) => {
                        let chunk = chunk?;
                        size += chunk.len() as u64;
                        if size > MAX_MEDIA_BYTES {
                            return Err(GraphCallError::TooLarge.into());
                        }
                        if announced.size.is_some_and(|n| size > n) {
                            return Err(TransferError::SizeMismatch);
                        }
                        hasher.update(&chunk);
                        chunk
                    }
                },
            };
            let room = part_bytes - part.len();
            if chunk.len() > room {
                part.extend_from_slice(&chunk[..room]);
                carry = Some(chunk.slice(room..));
            } else {
                part.extend_from_slice(&chunk);
            }
        }
        let part = Bytes::from(part);
        if ended {
            verify(size, &hasher.finalize(), announced)?;
            return match upload.take() {
                // The whole file fit in one part: one request.
                None => {
                    blobs.put(key, part, content_type).await?;
                    Ok(size)
                }
                Some(mut multipart) => {
                    if !part.is_empty()
                        && let Err(e) = multipart.upload_part(part).await
                    {
                        *upload = Some(multipart);
                        return Err(e.into());
                    }
                    multipart.complete().await?;
                    Ok(size)
                }
            };
        }
        let multipart = match upload {
            Some(multipart) => multipart,
            None => upload.insert(blobs.start_multipart(key, content_type).await?),
        };
        multipart.upload_part(part).await?;
    }
}

fn verify(size: u64, digest: &[u8], announced: &Announced<'_>) -> Result<(), TransferError> {
    if announced.size.is_some_and(|n| n != size) {
        return Err(TransferError::SizeMismatch);
    }
    if announced.checksums.iter().any(|c| !digest_matches(digest, c)) {
        return Err(TransferError::ChecksumMismatch);
    }
    Ok(())
}
