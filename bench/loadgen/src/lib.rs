//! The benchmark suite's load client (`stratus-loadgen`): the one program
//! that drives both Stratus and the direct baselines, so a ratio between
//! them compares servers, not clients.
//!
//! It opens C keep-alive HTTP/1.1 connections (TCP_NODELAY on each), keeps
//! exactly one request in flight per connection, and times each request from
//! the moment it is handed to the connection until its whole body has been
//! read. Requests may be SigV4-signed; signing happens *before* the timer
//! starts (its cost is measured and reported on its own), so a latency is
//! the round trip only, while throughput (requests / wall time) includes it.
//!
//! This crate owns the client side of the benchmark only: it knows nothing
//! of Lambda beyond signing for a service name, and touches no server state.
//!
//! - [`stats`]: percentiles and the JSON summary of a run;
//! - [`sign`]: SigV4 signing with AWS's `aws-sigv4` crate (as the CLI does);
//! - [`run`]: the connections, warm-up, timed phase and response checks.

pub mod run;
pub mod sign;
pub mod stats;
