//! Reports: how a diagnosis is said. One module per format behind one small trait.

pub(crate) mod group;
pub mod json;
pub(crate) mod junit;
pub(crate) mod prometheus;
pub mod table;

use crate::catalog::Catalog;
use crate::exit;
use crate::observation::TargetObservation;
use crate::verdict::{Status, TargetVerdict};

/// Everything a format needs: observations and verdicts per target, and run facts.
#[derive(Debug, Clone)]
pub struct Report {
    pub targets: Vec<TargetReport>,
    /// The URL template used, for headings.
    pub(crate) template: String,
    pub(crate) domain: String,
    pub duration_ms: u64,
    /// Caddy's configuration, when it was read.
    pub caddy: Option<CaddyReport>,
    /// Containers the PVE API listed that were not diagnosed (stopped, templates).
    pub(crate) skipped_targets: Vec<SkippedTarget>,
    /// The service the operator asked about (a public URL as the target): highlighted, while the
    /// whole sandbox is diagnosed.
    pub focus: Option<Focus>,
    /// `--wait`: how many diagnoses ran and how long the waiting took in all.
    pub(crate) waited: Option<Waited>,
}

/// The service a public URL named.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Focus {
    pub(crate) vmid: u32,
    pub(crate) service: String,
}

/// What `--wait` spent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Waited {
    pub(crate) attempts: u32,
    pub(crate) total_ms: u64,
}

/// What Caddy's configuration said, independent of any target.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CaddyReport {
    /// The Caddyfile or admin API URL read.
    pub(crate) source: String,
    /// Why it could not be read (the diagnosis goes on without routes).
    pub(crate) error: Option<String>,
    /// Findings of the same checks as `pvediag lint`.
    pub findings: Vec<crate::lint::Finding>,
}

impl CaddyReport {
    /// The report of one reading of Caddy's routes: the lint findings of the table, or why it
    /// could not be read.
    pub(crate) fn new(
        source: String,
        table: &Result<crate::caddy::RouteTable, String>,
        catalog: &Catalog,
    ) -> CaddyReport {
        match table {
            Ok(t) => {
                // Fails closed, as `pvediag lint` does: a source with no cmux route is a finding.
                let mut findings: Vec<crate::lint::Finding> =
                    crate::lint::no_cmux_route(catalog, &source, t)
                        .into_iter()
                        .collect();
                findings.extend(crate::lint::lint(catalog, std::slice::from_ref(t), &[]));
                CaddyReport {
                    source,
                    error: None,
                    findings,
                }
            }
            Err(e) => CaddyReport {
                source,
                error: Some(e.clone()),
                findings: Vec::new(),
            },
        }
    }
}

pub(crate) use crate::target::SkippedTarget;

#[derive(Debug, Clone)]
pub struct TargetReport {
    pub observation: TargetObservation,
    pub verdict: TargetVerdict,
    /// What the state directory says (last healthy run, what changed since); None without state.
    pub(crate) state: Option<crate::state::TargetState>,
    /// The facts and verdicts the state directory records (docs/state.md), made with this
    /// target's own catalog and URL template.
    pub(crate) record: crate::state::record::Record,
    /// Whether the run's deadline cut this target's probes off.
    pub(crate) completion: Completion,
    /// The routing generation the target was diagnosed with, and why (crate::generation).
    pub(crate) routing: Option<crate::generation::Routing>,
    /// The catalog this target was probed and diagnosed with (its generation's: on a mixed host
    /// targets differ, so formats classify a target's answers with this, never `Report::catalog`).
    pub(crate) catalog: Catalog,
}

impl TargetReport {
    /// Keeps only the services named (`--services`): observations and verdicts alike.
    pub(crate) fn retain_services(&mut self, names: &[String]) {
        let keep: Vec<bool> = self
            .observation
            .services
            .iter()
            .map(|s| names.contains(&s.name))
            .collect();
        let mut k = keep.iter();
        self.observation
            .services
            .retain(|_| *k.next().unwrap_or(&false));
        let mut k = keep.iter();
        self.verdict
            .services
            .retain(|_| *k.next().unwrap_or(&false));
    }
}

/// How a target's probes ended: a typed fact, not a phrase in a reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Completion {
    /// Every probe ended on its own (answered, failed or timed out).
    InTime,
    /// The run's deadline came first: the checks not run are marked so.
    CutByDeadline,
}

impl Report {
    /// The worst status over every target and service.
    pub(crate) fn worst(&self) -> Status {
        self.targets
            .iter()
            .map(|t| t.verdict.worst())
            .max()
            .unwrap_or(Status::Healthy)
    }

    pub(crate) fn exit_code(&self) -> u8 {
        exit_code_for(self.worst())
    }

    /// `0.42 s`, or with `--wait` `3 attempts in 6.01 s (the last 0.42 s)`.
    pub(crate) fn timing_phrase(&self) -> String {
        let last = format!("{:.2} s", self.duration_ms as f64 / 1000.0);
        match self.waited {
            Some(w) => format!(
                "{} attempt{} in {:.2} s (the last {last})",
                w.attempts,
                if w.attempts == 1 { "" } else { "s" },
                w.total_ms as f64 / 1000.0
            ),
            None => last,
        }
    }

    /// Counts of service verdicts by status.
    pub(crate) fn counts(&self) -> Vec<(Status, usize)> {
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

/// Checks that got no answer in time or were cut by the deadline, as `202/xterm external (timeout)`.
pub(crate) fn unfinished_checks(report: &Report) -> Vec<String> {
    use crate::observation::{ExecRun, FailureKind, Probe};
    let mut out = Vec::new();
    for t in &report.targets {
        let o = &t.observation;
        let by_deadline = t.completion == Completion::CutByDeadline;
        let cut = |p: &Probe| match p {
            Probe::Failed {
                kind: FailureKind::Timeout,
                ..
            } => Some("timeout"),
            Probe::NotRun { .. } if by_deadline => Some("deadline"),
            _ => None,
        };
        match &o.exec.run {
            ExecRun::Failed {
                kind: FailureKind::Timeout,
                ..
            } => out.push(format!("{}/exec-channel (timeout)", o.vmid)),
            ExecRun::Incomplete { .. } => out.push(format!("{}/exec-channel (cut)", o.vmid)),
            ExecRun::NotRun { .. } if by_deadline => {
                out.push(format!("{}/exec-channel (deadline)", o.vmid))
            }
            _ => {}
        }
        for s in &o.services {
            for (vantage, p) in [("external", &s.external), ("internal", &s.internal)] {
                if let Some(why) = cut(p) {
                    out.push(format!("{}/{} {vantage} ({why})", o.vmid, s.name));
                }
            }
        }
    }
    out
}

/// The exit code for a worst status.
pub(crate) fn exit_code_for(worst: Status) -> u8 {
    match worst {
        Status::Broken | Status::Degraded => exit::BROKEN,
        Status::Inconclusive => exit::INCONCLUSIVE,
        Status::Healthy | Status::Skipped => exit::OK,
    }
}

/// One output format.
pub trait Format {
    fn render(&self, report: &Report) -> String;

    /// Writes what [`Format::render`] returns (a format may write it without holding it whole).
    fn write(&self, report: &Report, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        w.write_all(self.render(report).as_bytes())
    }
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
