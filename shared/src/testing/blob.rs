//! [`MemBlobs`]: the object-storage ports ([`BlobStore`], [`MediaLinks`], and the bulk
//! [`ObjectStore`] with its streamed [`MemUpload`]) over a map of keys to objects, as one
//! bucket. Links are fake URLs naming the key and lifetime. Clones share the objects.
//!
//! The bulk operations keep S3's semantics as `objects::Bucket` uses them: `delete_keys`
//! counts the distinct keys named (missing ones included), `delete_prefix_page` deletes one
//! listing page of at most 1,000 keys and says whether more may remain, an upload's object
//! appears only when it completes.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::blob::{BlobError, BlobStore, LINK_TTL, MediaLinks};
use crate::objects::{DELETE_BATCH, ObjectStore, PartSink, Upload, delete_batches};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Bytes,
    pub content_type: Option<String>,
}

#[derive(Default)]
struct Objects {
    objects: BTreeMap<String, StoredObject>,
    put_faults: VecDeque<BlobError>,
    /// Faults for the bulk operations (deletes and uploads).
    bulk_faults: VecDeque<BlobError>,
    /// Bulk operations to let through before the next fault.
    bulk_fault_delay: usize,
    deletes: Vec<String>,
    /// Keys of uploads abandoned.
    aborted: Vec<String>,
    /// Part sizes of the uploads completed.
    completed_parts: Vec<(String, Vec<usize>)>,
}

#[derive(Clone, Default)]
pub struct MemBlobs {
    objects: Arc<Mutex<Objects>>,
}

impl MemBlobs {
    pub fn new() -> Self {
        MemBlobs::default()
    }

    fn objects(&self) -> MutexGuard<'_, Objects> {
        self.objects.lock().expect("blobs")
    }

    pub fn get(&self, key: &str) -> Option<StoredObject> {
        self.objects().objects.get(key).cloned()
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects().objects.keys().cloned().collect()
    }

    /// Every key `delete` was called with.
    pub fn deleted(&self) -> Vec<String> {
        self.objects().deletes.clone()
    }

    pub fn fail_next_put(&self) {
        self.objects().put_faults.push_back(BlobError("injected fault".into()));
    }

    /// Makes the next bulk operation (`delete_keys`, `delete_prefix_page`, `start_upload`, an
    /// upload's part or completion) fail.
    pub fn fail_next_bulk(&self) {
        self.objects().bulk_faults.push_back(BlobError("injected fault".into()));
    }

    /// Like [`MemBlobs::fail_next_bulk`], after `n` bulk operations succeed (e.g. a
    /// multipart upload's start and first part, then its second part fails).
    pub fn fail_next_bulk_after(&self, n: usize) {
        let mut o = self.objects();
        o.bulk_fault_delay = n;
        o.bulk_faults.push_back(BlobError("injected fault".into()));
    }

    /// Keys of the uploads that were abandoned.
    pub fn aborted_uploads(&self) -> Vec<String> {
        self.objects().aborted.clone()
    }

    /// Keys under `prefix`.
    pub fn keys_under(&self, prefix: &str) -> Vec<String> {
        self.objects()
            .objects
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect()
    }

    fn bulk_fault(&self) -> Result<(), BlobError> {
        let mut o = self.objects();
        if o.bulk_fault_delay > 0 && !o.bulk_faults.is_empty() {
            o.bulk_fault_delay -= 1;
            return Ok(());
        }
        o.bulk_faults.pop_front().map_or(Ok(()), Err)
    }

    fn remove_keys(&self, keys: &[String]) -> u64 {
        let mut o = self.objects();
        let mut named = 0;
        for batch in delete_batches(keys) {
            for k in batch {
                o.objects.remove(&k);
                o.deletes.push(k);
                named += 1;
            }
        }
        named
    }
}

/// A streamed upload collecting its parts; the object appears on [`Upload::complete`].
#[derive(Debug)]
pub struct MemUpload {
    blobs: MemBlobs,
    key: String,
    content_type: Option<String>,
    parts: Vec<Bytes>,
}

impl MemUpload {
    pub fn key(&self) -> &str {
        &self.key
    }
}

impl std::fmt::Debug for MemBlobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemBlobs").field("keys", &self.keys()).finish()
    }
}

impl PartSink for MemUpload {
    async fn upload_part(&mut self, data: Bytes) -> Result<(), BlobError> {
        self.blobs.bulk_fault()?;
        self.parts.push(data);
        Ok(())
    }
}

impl Upload for MemUpload {
    /// A completion that fails aborts the upload, as S3's does.
    async fn complete(self) -> Result<(), BlobError> {
        if let Err(e) = self.blobs.bulk_fault() {
            self.blobs.objects().aborted.push(self.key);
            return Err(e);
        }
        let data: Vec<u8> = self.parts.iter().flat_map(|p| p.iter().copied()).collect();
        let sizes = self.parts.iter().map(Bytes::len).collect();
        self.blobs.objects().completed_parts.push((self.key.clone(), sizes));
        self.blobs.objects().objects.insert(
            self.key,
            StoredObject {
                data: Bytes::from(data),
                content_type: self.content_type,
            },
        );
        Ok(())
    }

    async fn abort(self) {
        self.blobs.objects().aborted.push(self.key);
    }
}

impl ObjectStore for MemBlobs {
    type Upload = MemUpload;

    async fn delete_keys(&self, keys: &[String]) -> Result<u64, BlobError> {
        self.bulk_fault()?;
        Ok(self.remove_keys(keys))
    }

    async fn delete_prefix_page(&self, prefix: &str) -> Result<(u64, bool), BlobError> {
        self.bulk_fault()?;
        let listed = self.keys_under(prefix);
        let more = listed.len() > DELETE_BATCH;
        let page: Vec<String> = listed.into_iter().take(DELETE_BATCH).collect();
        let deleted = self.remove_keys(&page);
        Ok((deleted, more && deleted > 0))
    }

    async fn read_range(&self, key: &str, offset: u64, len: u64) -> Result<Option<Bytes>, BlobError> {
        self.bulk_fault()?;
        let o = self.objects();
        Ok(o.objects.get(key).map(|obj| {
            let start = (offset as usize).min(obj.data.len());
            let end = (offset.saturating_add(len) as usize).min(obj.data.len());
            obj.data.slice(start..end)
        }))
    }

    async fn put_object(&self, key: &str, data: Bytes, content_type: &str) -> Result<(), BlobError> {
        BlobStore::put(self, key, data, Some(content_type)).await
    }

    async fn start_upload(&self, key: &str, content_type: &str) -> Result<MemUpload, BlobError> {
        self.bulk_fault()?;
        Ok(MemUpload {
            blobs: self.clone(),
            key: key.to_owned(),
            content_type: Some(content_type.to_owned()),
            parts: Vec::new(),
        })
    }
}

impl MemBlobs {
    /// The sizes of the parts of every multipart upload completed, by key.
    pub fn completed_parts(&self) -> Vec<(String, Vec<usize>)> {
        self.objects().completed_parts.clone()
    }
}

impl BlobStore for MemBlobs {
    type Multipart = MemUpload;

    /// Fails with the next [`MemBlobs::fail_next_bulk`] fault, as its parts and completion do.
    async fn start_multipart(&self, key: &str, content_type: Option<&str>) -> Result<MemUpload, BlobError> {
        self.bulk_fault()?;
        Ok(MemUpload {
            blobs: self.clone(),
            key: key.to_owned(),
            content_type: content_type.map(str::to_owned),
            parts: Vec::new(),
        })
    }

    async fn put(&self, key: &str, data: Bytes, content_type: Option<&str>) -> Result<(), BlobError> {
        let mut o = self.objects();
        if let Some(e) = o.put_faults.pop_front() {
            return Err(e);
        }
        o.objects.insert(
            key.to_owned(),
            StoredObject {
                data,
                content_type: content_type.map(str::to_owned),
            },
        );
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), BlobError> {
        let mut o = self.objects();
        o.deletes.push(key.to_owned());
        o.objects.remove(key);
        Ok(())
    }
}

impl MediaLinks for MemBlobs {
    /// A fake link that shows what S3's would carry: the expiry and the served content type.
    async fn presigned_get(
        &self,
        key: &str,
        content_type: Option<&str>,
        expires_in: Duration,
    ) -> Result<String, BlobError> {
        Ok(format!(
            "https://blobs.test/{key}?expires_in={}&response-content-disposition=attachment&response-content-type={}",
            expires_in.min(LINK_TTL).as_secs(),
            crate::blob::served_content_type(content_type)
        ))
    }
}
