//! Reports: how a diagnosis is said. One module per format behind one small trait.

pub mod json;
pub mod table;

use crate::catalog::Catalog;
use crate::observation::TargetObservation;
use crate::verdict::{Status, TargetVerdict};

/// Everything a format needs: observations and verdicts per target, and run facts.
#[derive(Debug, Clone)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    pub catalog: Catalog,
    /// The URL template used, for headings.
    pub template: String,
    pub domain: String,
    pub duration_ms: u64,
    /// Caddy's configuration, when it was read.
    pub caddy: Option<CaddyReport>,
}

/// What Caddy's configuration said, independent of any target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaddyReport {
    /// The Caddyfile or admin API URL read.
    pub source: String,
    /// Why it could not be read (the diagnosis goes on without routes).
    pub error: Option<String>,
    /// Findings of the same checks as `pvediag lint`.
    pub findings: Vec<crate::lint::Finding>,
}

#[derive(Debug, Clone)]
pub struct TargetReport {
    pub observation: TargetObservation,
    pub verdict: TargetVerdict,
}

/// Exit codes: stable contract (docs/diagnosis.md, README).
pub mod exit {
    pub const OK: u8 = 0;
    pub const BROKEN: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const INCONCLUSIVE: u8 = 3;
}

impl Report {
    /// The worst status over every target and service.
    pub fn worst(&self) -> Status {
        self.targets
            .iter()
            .map(|t| t.verdict.worst())
            .max()
            .unwrap_or(Status::Healthy)
    }

    pub fn exit_code(&self) -> u8 {
        exit_code_for(self.worst())
    }

    /// Counts of service verdicts by status.
    pub fn counts(&self) -> Vec<(Status, usize)> {
        let all = [
            Status::Broken,
            Status::Degraded,
            Status::Inconclusive,
            Status::Skipped,
            Status::Healthy,
        ];
        all.iter()
            .map(|s| {
                (
                    *s,
                    self.targets
                        .iter()
                        .flat_map(|t| &t.verdict.services)
                        .filter(|v| v.status == *s)
                        .count(),
                )
            })
            .collect()
    }
}

/// The exit code for a worst status.
pub fn exit_code_for(worst: Status) -> u8 {
    match worst {
        Status::Broken | Status::Degraded => exit::BROKEN,
        Status::Inconclusive => exit::INCONCLUSIVE,
        Status::Healthy | Status::Skipped => exit::OK,
    }
}

/// One output format.
pub trait Format {
    fn render(&self, report: &Report) -> String;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes() {
        assert_eq!(exit_code_for(Status::Healthy), 0);
        assert_eq!(exit_code_for(Status::Skipped), 0);
        assert_eq!(exit_code_for(Status::Broken), 1);
        assert_eq!(exit_code_for(Status::Degraded), 1);
        assert_eq!(exit_code_for(Status::Inconclusive), 3);
    }
}
