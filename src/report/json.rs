//! `--format json`: one stable document (docs/json-output.md).

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{json, Map, Value};

use super::{Format, Report};

/// 2: verdicts answer `status` (users affected?) and `layer` (pinned hop, or null) apart, with
/// `candidates` as objects `{layer, check}` (docs/json-output.md).
pub(crate) const SCHEMA_VERSION: u32 = 2;

pub struct Json;

impl Format for Json {
    fn render(&self, report: &Report) -> String {
        let mut out = Vec::new();
        // Writing to memory fails only on a value serde_json cannot write (never built here).
        let _ = self.write(report, &mut out);
        String::from_utf8(out).unwrap_or_default()
    }

    fn write(&self, report: &Report, w: &mut dyn std::io::Write) -> std::io::Result<()> {
        let doc = Streamed {
            rest: document_without_targets(report),
            report,
        };
        serde_json::to_writer_pretty(&mut *w, &doc)?;
        w.write_all(b"\n")
    }
}

/// The whole document as one value (the tests' view; `render` writes the same bytes one target at
/// a time).
pub fn to_value(report: &Report) -> Value {
    let mut doc = document_without_targets(report);
    doc.insert(
        "targets".into(),
        Value::Array(report.targets.iter().map(target_value).collect()),
    );
    Value::Object(doc)
}

/// The document written as it is serialised: the targets' values are built one at a time and
/// dropped once written, so a fleet's report never exists twice in memory (as values and as text).
struct Streamed<'a> {
    rest: Map<String, Value>,
    report: &'a Report,
}

impl Serialize for Streamed<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // The keys in the order a `Map` keeps them (sorted), "targets" among them.
        let mut keys: Vec<&str> = self.rest.keys().map(String::as_str).collect();
        keys.push("targets");
        keys.sort_unstable();
        let mut m = s.serialize_map(Some(keys.len()))?;
        for k in keys {
            match self.rest.get(k) {
                Some(v) => m.serialize_entry(k, v)?,
                None => m.serialize_entry(k, &EachTarget(self.report))?,
            }
        }
        m.end()
    }
}

struct EachTarget<'a>(&'a Report);

impl Serialize for EachTarget<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.targets.iter().map(target_value))
    }
}

/// One target's object.
fn target_value(t: &super::TargetReport) -> Value {
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
            // Where the public hostname was dialled (absent when no request was made).
            if let Some(d) = &so.dial {
                s["dial"] = json!(d);
            }
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
    let names: Vec<&str> = o.services.iter().map(|s| s.name.as_str()).collect();
    let groups: Vec<Value> = super::group::group(&names, &v.services)
        .iter()
        .map(|g| {
            let first = &v.services[g.members[0]];
            json!({
                "cause": g.key.label(),
                "status": g.key.status,
                "layer": g.key.layer,
                "candidates": g.key.candidates,
                "services": g.members.iter().map(|&m| names[m]).collect::<Vec<_>>(),
                "summary": first.summary,
                "next_step": first.next_step,
            })
        })
        .collect();
    let mut target = json!({
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
        "groups": groups,
        "state": t.state.as_ref().map(state_value),
    });
    if let Some(g) = &v.edge_gate {
        target["edge_gate"] = json!(g);
    }
    target
}

/// Everything of the document but its targets.
fn document_without_targets(report: &Report) -> Map<String, Value> {
    let counts: serde_json::Map<String, Value> = report
        .counts()
        .into_iter()
        .map(|(s, n)| (s.as_str().to_string(), json!(n)))
        .collect();
    let per: Vec<(u32, Vec<&str>, &[crate::verdict::Verdict])> = report
        .targets
        .iter()
        .map(|t| {
            (
                t.observation.vmid,
                t.observation
                    .services
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect(),
                t.verdict.services.as_slice(),
            )
        })
        .collect();
    let causes: Vec<Value> = super::group::across_targets(&per)
        .into_iter()
        .map(|(k, vmids)| {
            json!({
                "cause": k.label(),
                "status": k.status,
                "layer": k.layer,
                "candidates": k.candidates,
                "targets": vmids,
            })
        })
        .collect();
    let Value::Object(doc) = json!({
        "schema_version": SCHEMA_VERSION,
        "pvediag_version": env!("CARGO_PKG_VERSION"),
        "status": report.worst().as_str(),
        "exit_code": report.exit_code(),
        "url_template": report.template,
        "domain": report.domain,
        "duration_ms": report.duration_ms,
        "counts": counts,
        "caddy": report.caddy,
        "skipped_targets": report.skipped_targets,
        "unfinished_checks": super::unfinished_checks(report),
        "causes": causes,
        "focus": report.focus,
        "wait": report.waited,
    }) else {
        unreachable!("json! of an object literal is an object")
    };
    doc
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
