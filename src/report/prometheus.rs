//! `--format prometheus`: the text exposition format (version 0.0.4), names in the style of
//! blackbox_exporter, for node_exporter's textfile collector or `pvediag serve`. No timestamps.

use std::fmt::Write as _;

use super::{Format, Report};
use crate::observation::Probe;
use crate::verdict::{classify, Answer};

pub struct Prometheus;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value: backslash, double quote and line feed.
pub fn escape_label(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// `{a="x",b="y"}`
pub fn labels(pairs: &[(&str, &str)]) -> String {
    let inner: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
        .collect();
    format!("{{{}}}", inner.join(","))
}

/// One metric family: `# HELP`, `# TYPE` and its samples (label set, value).
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (l, v) in samples {
        let _ = writeln!(out, "{name}{l} {}", fmt_value(*v));
    }
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

fn elapsed(p: &Probe) -> Option<f64> {
    match p {
        Probe::Response { elapsed_ms, .. } | Probe::Failed { elapsed_ms, .. } => {
            Some(*elapsed_ms as f64 / 1000.0)
        }
        Probe::NotRun { .. } => None,
    }
}

impl Format for Prometheus {
    fn render(&self, report: &Report) -> String {
        let mut success = Vec::new();
        let mut duration = Vec::new();
        let mut status = Vec::new();
        let mut verdict = Vec::new();
        let mut candidates = Vec::new();
        let mut channel = Vec::new();
        for t in &report.targets {
            let vmid = t.observation.vmid.to_string();
            channel.push((
                labels(&[("vmid", &vmid), ("status", t.verdict.exec.status.as_str())]),
                1.0,
            ));
            for (so, sv) in t.observation.services.iter().zip(&t.verdict.services) {
                let service = report.catalog.get(&so.name);
                for (vantage, p) in [("external", &so.external), ("internal", &so.internal)] {
                    // A probe that was not run (service not routed, exec channel down) has no series.
                    let Some(secs) = elapsed(p) else { continue };
                    let l = labels(&[("vmid", &vmid), ("service", &so.name), ("vantage", vantage)]);
                    let ok = service.is_some_and(|s| classify(s, p) == Answer::Healthy);
                    success.push((l.clone(), if ok { 1.0 } else { 0.0 }));
                    duration.push((l.clone(), secs));
                    let code = p.response().map(|r| r.status).unwrap_or(0);
                    status.push((l, f64::from(code)));
                }
                let layer = sv.layer.map(|l| l.as_str()).unwrap_or("");
                verdict.push((
                    labels(&[
                        ("vmid", &vmid),
                        ("service", &so.name),
                        ("status", sv.status.as_str()),
                        ("layer", layer),
                    ]),
                    1.0,
                ));
                for (rank, c) in sv.candidates.iter().enumerate() {
                    candidates.push((
                        labels(&[
                            ("vmid", &vmid),
                            ("service", &so.name),
                            ("layer", c.layer.as_str()),
                            ("rank", &(rank + 1).to_string()),
                        ]),
                        1.0,
                    ));
                }
            }
        }
        let mut out = String::new();
        family(
            &mut out,
            "pvediag_probe_success",
            "gauge",
            "Whether the probe got the service's healthy answer (1) or not (0).",
            &success,
        );
        family(
            &mut out,
            "pvediag_probe_duration_seconds",
            "gauge",
            "How long the probe took, in seconds.",
            &duration,
        );
        family(
            &mut out,
            "pvediag_probe_http_status_code",
            "gauge",
            "The HTTP status the probe got (0: no answer).",
            &status,
        );
        family(
            &mut out,
            "pvediag_verdict",
            "gauge",
            "The diagnosis of each service: always 1; status = are users affected, layer = the pinned hop (empty when not pinned: see pvediag_verdict_candidate).",
            &verdict,
        );
        family(
            &mut out,
            "pvediag_verdict_candidate",
            "gauge",
            "A hop a verdict cannot rule out when its layer is not pinned: always 1, rank 1 is the most likely.",
            &candidates,
        );
        family(
            &mut out,
            "pvediag_exec_channel",
            "gauge",
            "The exec channel (internal view) of each target: always 1, healthy or inconclusive in the status label.",
            &channel,
        );
        // Who answered: 1 when a target's exec call reached another sandbox (or one that another
        // target reached too), 0 when its identity was confirmed; no sample when unknown.
        let identity: Vec<(String, f64)> = report
            .targets
            .iter()
            .filter_map(|t| {
                let o = &t.observation;
                let mismatch = match crate::identity::assess(&o.identity, o.vmid) {
                    crate::identity::Assessment::Contradicted { .. } => true,
                    crate::identity::Assessment::Confirmed { .. } => {
                        !o.identity.shared_with.is_empty()
                    }
                    crate::identity::Assessment::Unknown { .. } => return None,
                };
                let l = labels(&[("vmid", &o.vmid.to_string())]);
                Some((l, if mismatch { 1.0 } else { 0.0 }))
            })
            .collect();
        if !identity.is_empty() {
            family(
                &mut out,
                "pvediag_identity_mismatch",
                "gauge",
                "Whether the target's exec call ran in another sandbox than the target, or in one another target reached too (1), or in its own (0).",
                &identity,
            );
        }
        // From the state directory (docs/state.md): absent without state or a healthy run.
        let last_healthy: Vec<(String, f64)> = report
            .targets
            .iter()
            .filter_map(|t| {
                let at = t.state.as_ref()?.last_healthy_at?;
                Some((
                    labels(&[("vmid", &t.observation.vmid.to_string())]),
                    at as f64,
                ))
            })
            .collect();
        if !last_healthy.is_empty() {
            family(
                &mut out,
                "pvediag_last_healthy_timestamp_seconds",
                "gauge",
                "When the target was last diagnosed healthy (Unix seconds), from the state directory.",
                &last_healthy,
            );
        }
        let skipped: Vec<(String, f64)> = report
            .skipped_targets
            .iter()
            .map(|s| {
                (
                    labels(&[
                        ("vmid", &s.vmid.to_string()),
                        ("name", &s.name),
                        ("reason", &s.reason),
                    ]),
                    1.0,
                )
            })
            .collect();
        if !skipped.is_empty() {
            family(
                &mut out,
                "pvediag_target_skipped",
                "gauge",
                "Containers the PVE API listed that were not diagnosed (stopped, templates).",
                &skipped,
            );
        }
        let unfinished = super::unfinished_checks(report).len();
        for (name, help, v) in [
            (
                "pvediag_run_duration_seconds",
                "How long the whole run took, in seconds.",
                report.duration_ms as f64 / 1000.0,
            ),
            (
                "pvediag_targets",
                "Targets diagnosed.",
                report.targets.len() as f64,
            ),
            (
                "pvediag_unfinished_checks",
                "Checks that timed out or were cut by the run's deadline.",
                unfinished as f64,
            ),
            (
                "pvediag_exit_code",
                "The run's exit code: 0 healthy, 1 broken or degraded, 3 inconclusive.",
                f64::from(report.exit_code()),
            ),
        ] {
            family(&mut out, name, "gauge", help, &[(String::new(), v)]);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
        assert_eq!(
            labels(&[("vmid", "202"), ("x", "\"")]),
            "{vmid=\"202\",x=\"\\\"\"}"
        );
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.25), "0.25");
    }
}
