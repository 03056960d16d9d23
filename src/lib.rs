//! pvediag: where is the routing chain of a cmux sandbox broken — tunnel, Caddy port, or the service?
//!
//! Data flows one way: catalog and targets -> probes -> observations -> verdicts -> reports.
//! The verdict engine ([`verdict`]) is pure: no I/O.

pub mod adaptive;
pub mod caddy;
pub mod catalog;
pub mod cli;
pub mod demo;
pub mod generation;
pub mod http;
pub mod identity;
pub mod instance;
pub mod lab;
pub mod lint;
pub mod lint_command;
pub mod observation;
pub mod output;
pub mod probe;
pub mod pve;
pub mod pve_cache;
pub mod report;
pub mod run;
pub mod secret;
pub mod serve;
pub mod settings;
pub mod state;
pub mod target;
pub mod verdict;
pub mod wait;
