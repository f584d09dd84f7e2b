//! The event stream's two functions, generic over their ports:
//!
//! - [`record`] (binary `events`): DynamoDB Streams batches → events ([`crm_shared::events::derive`])
//!   → each tenant's log, each event once → one delivery job per interested endpoint;
//! - [`deliver`] (binary `webhook-delivery`): delivery jobs → one signed POST each, the attempt
//!   logged, retries on the published schedule, endpoints disabled on `410` or five days of
//!   failures.

pub mod automate;
pub mod deliver;
pub mod record;

#[cfg(test)]
mod automate_tests;
#[cfg(test)]
mod report_tests;
#[cfg(test)]
mod tests;
