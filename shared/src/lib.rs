//! Everything the Lambda functions and operator tools share: configuration, domain types and
//! rules (pure functions, no I/O), and the storage ports with their one AWS implementation.

pub mod admin;
pub mod auth;
pub mod aws;
pub mod config;
pub mod cursor;
pub mod ids;
pub mod secret;
pub mod store;
pub mod tenant;
