//! pvediag: where is the routing chain of a cmux sandbox broken — tunnel, Caddy port, or the service?
//!
//! Data flows one way: catalog and targets -> probes -> observations -> verdicts -> reports.
//! The verdict engine ([`verdict`]) is pure: no I/O.

pub mod catalog;
pub mod lab;
pub mod observation;
