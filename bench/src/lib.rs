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

/// The number after `name` among `args` (`--messages 3200`), if it is there and parses.
pub fn numeric_flag(args: &[String], name: &str) -> Option<u64> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}
