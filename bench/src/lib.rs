//! The performance bench behind `make bench`: local stand-ins for the Lambda Runtime API, the
//! Graph API and AWS request accounting, plus the measurements and the report. Nothing here is
//! linked into a function.

pub mod campaign;
pub mod endpoint;
pub mod functions;
pub mod graph;
pub mod latency;
pub mod procfs;
pub mod proxy;
pub mod report;
pub mod runtime_api;
pub mod samples;
pub mod stats;
pub mod throughput;
