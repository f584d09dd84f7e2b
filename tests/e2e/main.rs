//! End-to-end tests: real handlers, real local AWS endpoint, real HTTP.

mod access;
mod contacts;
mod foundation;
mod iam;
mod media;
mod outbound;
mod privacy;
mod templates;
mod webhook;
mod webhook_load;
