//! pvediag: where is the routing chain of a cmux sandbox broken — tunnel, Caddy port, or the service?
//!
//! Data flows one way: catalog and targets -> probes -> observations -> verdicts -> reports.
//! The verdict engine ([`verdict`]) is pure: no I/O.

pub mod adaptive;
pub mod caddy;
pub mod catalog;
pub mod cli;
#[cfg(feature = "lab")]
pub mod demo;
pub mod docs_command;
pub mod exit;
pub mod generation;
pub mod http;
mod identity;
mod instance;
#[cfg(feature = "lab")]
pub mod lab;
pub mod lint;
pub mod lint_command;
mod made_by;
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
mod shell;
mod signal;
pub mod state;
pub mod target;
pub mod verdict;
mod wait;
