//! End-to-end tests: real handlers, real local AWS endpoint, real HTTP.

mod access;
mod automations;
mod broadcasts;
mod contacts;
mod events;
mod faults;
mod foundation;
mod iam;
mod inbox;
mod media;
mod outbound;
mod privacy;
mod reports;
mod templates;
mod webhook;
mod webhook_load;
