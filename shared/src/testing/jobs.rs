//! [`MemQueue`]: the SQS ports ([`MediaJobQueue`], [`SendJobQueue`], [`JobQueue`],
//! [`RetryScheduler`]) as a record of what was enqueued (generic jobs as JSON with their
//! delay) and which receipts were delayed by how long. Clones share it.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::jobs::{
    EnqueueError, JobQueue, MediaJob, MediaJobQueue, OverflowQueue, RetryScheduler, SendJob, SendJobQueue,
};

#[derive(Default)]
struct Queued {
    media_jobs: Vec<MediaJob>,
    /// Send jobs with their delays.
    send_jobs: Vec<(SendJob, Duration)>,
    /// `send_job` calls: (the job as JSON, its delay).
    jobs: Vec<(Value, Duration)>,
    /// (receipt handle, seconds).
    retries: Vec<(String, i32)>,
    /// Bodies handed to the webhook's overflow queue.
    overflow: Vec<String>,
    enqueue_faults: VecDeque<EnqueueError>,
    retry_faults: VecDeque<EnqueueError>,
}

#[derive(Clone, Default)]
pub struct MemQueue {
    queued: Arc<Mutex<Queued>>,
}

impl MemQueue {
    pub fn new() -> Self {
        MemQueue::default()
    }

    fn queued(&self) -> MutexGuard<'_, Queued> {
        self.queued.lock().expect("queue")
    }

    pub fn media_jobs(&self) -> Vec<MediaJob> {
        self.queued().media_jobs.clone()
    }

    pub fn send_jobs(&self) -> Vec<SendJob> {
        self.queued().send_jobs.iter().map(|(job, _)| job.clone()).collect()
    }

    /// Every send job with the delay it was enqueued with.
    pub fn delayed_send_jobs(&self) -> Vec<(SendJob, Duration)> {
        self.queued().send_jobs.clone()
    }

    /// Every job sent with `send_job`, as JSON, with its delay.
    pub fn jobs(&self) -> Vec<(Value, Duration)> {
        self.queued().jobs.clone()
    }

    /// The jobs of one type sent with `send_job`, with their delays (others are skipped).
    pub fn jobs_of<T: DeserializeOwned>(&self) -> Vec<(T, Duration)> {
        self.jobs()
            .into_iter()
            .filter_map(|(v, d)| serde_json::from_value(v).ok().map(|j| (j, d)))
            .collect()
    }

    /// Every `retry_after` call: (receipt handle, seconds).
    /// Bodies handed off to the overflow queue, in order.
    pub fn overflow_bodies(&self) -> Vec<String> {
        self.queued().overflow.clone()
    }

    pub fn retries(&self) -> Vec<(String, i32)> {
        self.queued().retries.clone()
    }

    /// Makes the next enqueue (media, send or `send_job`) fail.
    pub fn fail_next_enqueue(&self) {
        self.queued()
            .enqueue_faults
            .push_back(EnqueueError("injected fault".into()));
    }

    /// Makes the next `retry_after` fail.
    pub fn fail_next_retry(&self) {
        self.queued()
            .retry_faults
            .push_back(EnqueueError("injected fault".into()));
    }
}

impl MediaJobQueue for MemQueue {
    async fn enqueue_media(&self, job: &MediaJob) -> Result<(), EnqueueError> {
        let mut q = self.queued();
        if let Some(e) = q.enqueue_faults.pop_front() {
            return Err(e);
        }
        q.media_jobs.push(job.clone());
        Ok(())
    }
}

impl SendJobQueue for MemQueue {
    async fn enqueue_send_after(&self, job: &SendJob, delay: Duration) -> Result<(), EnqueueError> {
        let mut q = self.queued();
        if let Some(e) = q.enqueue_faults.pop_front() {
            return Err(e);
        }
        q.send_jobs.push((job.clone(), delay));
        Ok(())
    }
}

impl JobQueue for MemQueue {
    async fn send_job<T: Serialize + Sync>(&self, job: &T, delay: Duration) -> Result<(), EnqueueError> {
        let mut q = self.queued();
        if let Some(e) = q.enqueue_faults.pop_front() {
            return Err(e);
        }
        let body = serde_json::to_value(job).expect("jobs serialize");
        q.jobs.push((body, delay));
        Ok(())
    }
}

impl OverflowQueue for MemQueue {
    async fn hand_off(&self, bodies: &[String]) -> Result<(), EnqueueError> {
        let mut q = self.queued();
        if let Some(e) = q.enqueue_faults.pop_front() {
            return Err(e);
        }
        q.overflow.extend(bodies.iter().cloned());
        Ok(())
    }
}

impl RetryScheduler for MemQueue {
    async fn retry_after(&self, receipt_handle: &str, seconds: i32) -> Result<(), EnqueueError> {
        let mut q = self.queued();
        // Recorded even when it fails: the handler asked for it.
        q.retries.push((receipt_handle.to_owned(), seconds));
        match q.retry_faults.pop_front() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
