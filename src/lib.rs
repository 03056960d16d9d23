//! pvediag: where is the routing chain of a cmux sandbox broken — tunnel, Caddy port, or the service?
//!
//! Data flows one way: catalog and targets -> probes -> observations -> verdicts -> reports.
//! The verdict engine ([`verdict`]) is pure: no I/O.

pub mod catalog;
pub mod http;
pub mod observation;
pub mod probe;
pub mod secret;
pub mod target;
pub mod verdict;
pub mod report;
pub mod cli;
pub mod run;
pub mod output;
pub mod demo;
