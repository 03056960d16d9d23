//! `--format json`: one stable document (docs/json-output.md).

use serde_json::{json, Value};

use super::{Format, Report};

/// 2: verdicts answer `status` (users affected?) and `layer` (pinned hop, or null) apart, with
/// `candidates` as objects `{layer, check}` (docs/json-output.md).
pub const SCHEMA_VERSION: u32 = 2;

pub struct Json;

impl Format for Json {
    fn render(&self, report: &Report) -> String {
        let mut s = serde_json::to_string_pretty(&to_value(report)).unwrap_or_default();
        s.push('\n');
        s
    }
}

pub fn to_value(report: &Report) -> Value {
    let targets: Vec<Value> = report
        .targets
        .iter()
        .map(|t| {
            let o = &t.observation;
            let v = &t.verdict;
            let services: Vec<Value> = o
                .services
                .iter()
                .zip(&v.services)
                .map(|(so, sv)| {
                    let mut s = json!({
                        "name": so.name,
                        "port": so.port,
                        "url": so.url,
                        "external": so.external,
                        "internal": so.internal,
                        "verdict": sv,
                    });
                    // What changed since the last healthy run that bears on this verdict
                    // (docs/state.md); only when the state directory had a healthy run.
                    if let Some(since) = t
                        .state
                        .as_ref()
                        .and_then(|st| st.since_last_healthy.as_ref())
                    {
                        s["changes_since_last_healthy"] = json!(since.for_service(&so.name));
                    }
                    s
                })
                .collect();
            json!({
                "vmid": o.vmid,
                "status": v.worst().as_str(),
                "exec": {
                    "url": o.exec.url,
                    "via_public_url": o.exec.via_public_url,
                    "auth_mode": o.exec.auth_mode,
                    "token_sent": o.exec.token_sent,
                    "run": o.exec.run,
                    "pct": o.exec.pct,
                    "verdict": v.exec,
                },
                "host": o.host,
                "origin": o.origin,
                "routes": o.routes,
                "inside": o.inside,
                "identity": o.identity,
                "routing": t.routing,
                "services": services,
                "state": t.state.as_ref().map(state_value),
            })
        })
        .collect();
    let counts: serde_json::Map<String, Value> = report
        .counts()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    json!({
        "schema_version": SCHEMA_VERSION,
        "pvediag_version": env!("CARGO_PKG_VERSION"),
        "status": report.worst().as_str(),
        "exit_code": report.exit_code(),
        "url_template": report.template,
        "domain": report.domain,
        "duration_ms": report.duration_ms,
        "counts": counts,
        "caddy": report.caddy,
        "targets": targets,
        "skipped_targets": report.skipped_targets,
        "unfinished_checks": super::unfinished_checks(report),
    })
}

/// A target's `state` object: the last healthy run and what changed since (docs/state.md).
fn state_value(st: &crate::state::TargetState) -> Value {
    json!({
        "last_healthy_at": st.last_healthy_at.map(crate::state::rfc3339),
        "last_healthy_at_unix": st.last_healthy_at,
        "since_last_healthy": st.since_last_healthy.as_ref().map(|s| json!({
            "at": s.at,
            "at_unix": s.at_unix,
            "changes": s.changes,
            "not_compared": s.not_compared,
        })),
    })
}
