//! In-memory stand-ins for every port, for unit tests and the bench; compiled only with the
//! `testing` feature, which only dev-dependencies (and the bench, which never ships) enable.
//!
//! [`MemStore`] implements every storage port with the guarantees of the DynamoDB store (each
//! conditional write mirrored as a check under one lock, the privacy cascades counting what
//! the DynamoDB store would delete); the fakes in [`graph`], [`jobs`] and [`blob`] record what
//! handlers asked of Meta, SQS (send, media and generic jobs with their delays) and S3
//! (single objects, bulk deletes, streamed uploads) and answer as scripted. With them,
//! `Privacy<MemStore, MemBlobs, MemQueue>` runs the privacy machinery without AWS. Each can be
//! told to fail its next call, so tests reach the error paths without a network.

pub mod blob;
pub mod fixtures;
pub mod graph;
pub mod jobs;
mod store;

pub use blob::{MemBlobs, MemUpload};
pub use graph::FakeGraph;
pub use jobs::MemQueue;
pub use store::{MemStore, Op, RecordedEvent};
