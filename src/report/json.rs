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
                    json!({
                        "name": so.name,
                        "port": so.port,
                        "url": so.url,
                        "external": so.external,
                        "internal": so.internal,
                        "verdict": sv,
                    })
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
                "routing": t.routing,
                "services": services,
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
