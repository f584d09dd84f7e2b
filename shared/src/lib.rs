//! Everything the Lambda functions and operator tools share: configuration, domain types and
//! rules (pure functions, no I/O), and the storage ports with their one AWS implementation.

pub mod admin;
pub mod audit;
pub mod auth;
pub mod automation;
pub mod aws;
pub mod blob;
pub mod cache;
pub mod config;
pub mod contact;
pub mod conversation;
pub mod cursor;
pub mod events;
pub mod first_contact;
pub mod graph;
pub mod ids;
pub mod jobs;
pub mod kms;
pub mod media_url;
pub mod message;
pub mod objects;
pub mod privacy;
pub mod quota;
pub mod registry;
pub mod reports;
pub mod secret;
pub mod secrets;
pub mod sending;
pub mod store;
pub mod template;
pub mod tenant;
#[cfg(feature = "testing")]
pub mod testing;
pub mod user;
pub mod whatsapp;
