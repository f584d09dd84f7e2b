//! [`MemBlobs`]: the object-storage ports ([`BlobStore`], [`MediaLinks`]) over a map of keys
//! to objects. Links are fake URLs naming the key and lifetime. Clones share the objects.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;

use crate::blob::{BlobError, BlobStore, LINK_TTL, MediaLinks};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredObject {
    pub data: Bytes,
    pub content_type: Option<String>,
}

#[derive(Default)]
struct Objects {
    objects: BTreeMap<String, StoredObject>,
    put_faults: VecDeque<BlobError>,
    deletes: Vec<String>,
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
}

impl BlobStore for MemBlobs {
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
    async fn presigned_get(&self, key: &str, expires_in: Duration) -> Result<String, BlobError> {
        Ok(format!(
            "https://blobs.test/{key}?expires_in={}",
            expires_in.min(LINK_TTL).as_secs()
        ))
    }
}
