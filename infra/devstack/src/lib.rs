//! The local stack shared by `make dev` and the tests: a moto endpoint on loopback, every
//! table, queue and bucket of `template.yaml` created from the template itself, and a local
//! API gateway that feeds real API Gateway events to the real handlers.

pub mod console;
pub mod gateway;
pub mod moto;
pub mod poller;
pub mod provision;
pub mod sandbox;
pub mod schedule;
pub mod stream;
pub mod template;

use std::path::PathBuf;

/// The workspace root (where `template.yaml` and `.venv` live).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root exists")
}
