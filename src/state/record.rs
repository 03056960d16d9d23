//! The record of one run for one target: the facts pvediag observed that can explain a later
//! outage, and the verdicts. Pure: built from observations and verdicts, no I/O, no clock.
//!
//! Privacy rule: a record holds no URL, no header, no body and nothing a secret could hide in —
//! only names, ports, Caddyfile sources, answer classes and verdict summaries.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Catalog;
use crate::observation::{AuthMode, Probe, TargetObservation};
use crate::verdict::{classify, classify_direct, Answer, Layer, Status, TargetVerdict, Verdict};

/// The `format` field of every state file: a file without it is not pvediag's.
pub(crate) const FORMAT: &str = "pvediag-state";
/// The record version this pvediag reads and writes; files of another version are ignored.
pub(crate) const VERSION: u32 = 1;

/// Everything recorded about one run of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// When the run ended, Unix seconds (UTC).
    pub(crate) at: i64,
    /// The target's worst status (`healthy`, `broken`, ...).
    pub(crate) status: String,
    pub(crate) facts: Facts,
    pub(crate) verdicts: Vec<VerdictFact>,
    /// The exec channel's verdict.
    pub(crate) channel: ChannelFact,
}

/// What was observed. `None` (or an absent entry) means "not observed in this run": it is never
/// compared, so a run that could not see something never reports it as changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Facts {
    pub(crate) catalog: CatalogFact,
    /// The public URL template (the routing layout).
    pub(crate) url_template: String,
    /// Whether cmux-execd requires a token (`required`, `off`); None: not known.
    pub(crate) exec_auth: Option<String>,
    /// cloudflared's readiness on the host (host vantage only).
    pub(crate) cloudflared: Option<CloudflaredFact>,
    /// The answer class of the origin check (a hostname Caddy answers itself).
    pub(crate) origin: Option<String>,
    /// Caddy's route for each routed service; None: Caddy's configuration was not read.
    pub(crate) routes: Option<Vec<RouteFact>>,
    /// What answered inside the container on each catalog port (only ports probed inside).
    pub(crate) ports: Vec<PortFact>,
    /// The answer class of each public URL probed.
    pub(crate) external: Vec<ExternalFact>,
}

/// The catalog in use: its origin and each service's port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogFact {
    pub(crate) generation: String,
    pub(crate) ports: BTreeMap<String, u16>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CloudflaredFact {
    /// `ready`, `not_ready` (503: no edge connection) or `down` (no answer on 20241-20245).
    pub(crate) state: String,
    pub(crate) connections: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteFact {
    pub(crate) service: String,
    /// The public hostname matched against Caddy's routes.
    pub(crate) host: String,
    pub(crate) upstream_host: Option<String>,
    pub(crate) upstream_port: Option<u16>,
    /// `Caddyfile.cmux:17` or the admin API path.
    pub(crate) source: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PortFact {
    /// The catalog service that belongs on this port.
    pub(crate) service: String,
    /// Its systemd unit (`cmux-pty`), empty when none.
    pub(crate) unit: String,
    pub(crate) port: u16,
    /// The answer class ([`answer_label`]): `healthy`, `refused`, `status_500`, `wrong_service`...
    pub(crate) answer: String,
    /// Whose fingerprint the answer carries, when it is not the service's own (another catalog
    /// service with a fingerprint): e.g. `worker` answering on xterm's port.
    pub(crate) answers_as: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExternalFact {
    pub(crate) service: String,
    pub(crate) answer: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VerdictFact {
    pub(crate) service: String,
    pub(crate) status: String,
    /// The blamed layer, or the candidates when it is not pinned.
    pub(crate) layers: Vec<String>,
    pub(crate) rule: String,
    pub(crate) summary: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ChannelFact {
    pub(crate) status: String,
    pub(crate) summary: String,
}

/// A stable name for an answer class (stored, compared, shown in JSON).
pub(crate) fn answer_label(a: &Answer) -> String {
    match a {
        Answer::Healthy => "healthy".into(),
        Answer::MissingHeaders(_) => "missing_headers".into(),
        Answer::DoubledHeaders(_) => "doubled_headers".into(),
        Answer::WrongService { empty: true, .. } => "wrong_service_empty".into(),
        Answer::WrongService { .. } => "wrong_service".into(),
        Answer::BadStatus(s) => format!("status_{s}"),
        Answer::TunnelDown => "tunnel_down".into(),
        Answer::EdgeError { status, .. } => format!("edge_error_{status}"),
        Answer::NoIngress => "no_ingress".into(),
        Answer::CaddyBadGateway(s) => format!("caddy_{s}"),
        Answer::CaddyNoRoute => "caddy_no_route".into(),
        Answer::Unreachable(k) => k.as_str().into(),
        Answer::EdgeGate(g) => format!("edge_gate_{}", g.cell().replace(' ', "_")),
        Answer::NotRun => "not_run".into(),
    }
}

/// An answer class in words, for evidence lines.
pub(crate) fn answer_words(label: &str) -> String {
    match label {
        "healthy" => "its healthy answer".into(),
        "missing_headers" => "its answer without a required header".into(),
        "doubled_headers" => "its answer with a required header twice".into(),
        "wrong_service" => "another service's answer".into(),
        "wrong_service_empty" => "an empty answer".into(),
        "refused" => "connection refused".into(),
        "timeout" => "no answer in time".into(),
        "dns" => "a name that does not resolve".into(),
        "empty_reply" => "an empty reply".into(),
        "tunnel_down" => "Cloudflare 530 (tunnel down)".into(),
        "no_ingress" => "cloudflared's 404 (no ingress rule)".into(),
        "caddy_no_route" => "Caddy's answer for no route".into(),
        "origin_answered" => "Caddy's answer".into(),
        l if l.starts_with("status_") => format!("status {}", &l[7..]),
        l if l.starts_with("edge_gate_") => {
            format!(
                "a gate of Cloudflare's edge ({})",
                l[10..].replace('_', " ")
            )
        }
        l if l.starts_with("edge_error_") => format!("Cloudflare {}", &l[11..]),
        l if l.starts_with("caddy_") => format!("Caddy's {}", &l[6..]),
        l => l.replace('_', " "),
    }
}

/// The layers a verdict blames (one when pinned, the candidates otherwise).
pub(crate) fn verdict_layers(v: &Verdict) -> Vec<Layer> {
    match v.layer {
        Some(l) => vec![l],
        None => v.candidates.iter().map(|c| c.layer).collect(),
    }
}

/// Whether a target's worst status counts as healthy (what last-known-good means).
pub(crate) fn is_healthy(status: &str) -> bool {
    matches!(status, "healthy" | "skipped")
}

/// The record of one run of one target, made with the target's own catalog (`at` is set when it
/// is stored).
pub(crate) fn record(
    at: i64,
    catalog: &Catalog,
    url_template: &str,
    o: &TargetObservation,
    v: &TargetVerdict,
) -> Record {
    let catalog_fact = CatalogFact {
        generation: catalog.origin.clone(),
        ports: catalog
            .services
            .iter()
            .map(|s| (s.name.clone(), s.port))
            .collect(),
    };
    let exec_auth = match o.exec.auth_mode {
        AuthMode::Required => Some("required".to_string()),
        AuthMode::Off => Some("off".to_string()),
        AuthMode::Unknown => None,
    };
    let cloudflared = o
        .host
        .as_ref()
        .and_then(|h| cloudflared_fact(&h.cloudflared));
    let origin = o.origin.as_ref().and_then(|c| {
        // The origin check is judged against no service: its class is the kind of answer only.
        let label = origin_label(&c.probe);
        (label != "not_run").then_some(label)
    });
    let routes = (!o.routes.is_empty()).then(|| {
        o.routes
            .iter()
            .map(|r| RouteFact {
                service: r.service.clone(),
                host: r.host.clone(),
                upstream_host: r.upstream_host.clone(),
                upstream_port: r.upstream_port,
                source: r.source.clone(),
            })
            .collect()
    });
    let mut ports = Vec::new();
    let mut external = Vec::new();
    for s in &o.services {
        let Some(svc) = catalog.get(&s.name) else {
            continue;
        };
        if !matches!(s.internal, Probe::NotRun { .. }) {
            let a = classify_direct(svc, &s.internal);
            let answers_as = match a {
                Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => None,
                _ => catalog
                    .services
                    .iter()
                    .filter(|other| other.name != svc.name)
                    .filter(|other| !other.healthy.fingerprint.is_empty())
                    .find(|other| {
                        matches!(
                            classify_direct(other, &s.internal),
                            Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_)
                        )
                    })
                    .map(|other| other.name.clone()),
            };
            ports.push(PortFact {
                service: svc.name.clone(),
                unit: svc.unit.clone(),
                port: s.port,
                answer: answer_label(&a),
                answers_as,
            });
        }
        if !matches!(s.external, Probe::NotRun { .. }) {
            external.push(ExternalFact {
                service: s.name.clone(),
                answer: answer_label(&classify(svc, &s.external)),
            });
        }
    }
    let verdicts = o
        .services
        .iter()
        .zip(&v.services)
        .map(|(s, sv)| VerdictFact {
            service: s.name.clone(),
            status: sv.status.as_str().to_string(),
            layers: verdict_layers(sv)
                .iter()
                .map(|l| l.as_str().to_string())
                .collect(),
            rule: sv.rule.to_string(),
            summary: sv.summary.clone(),
        })
        .collect();
    Record {
        at,
        status: v.worst().as_str().to_string(),
        facts: Facts {
            catalog: catalog_fact,
            url_template: url_template.to_string(),
            exec_auth,
            cloudflared,
            origin,
            routes,
            ports,
            external,
        },
        verdicts,
        channel: ChannelFact {
            status: v.exec.status.as_str().to_string(),
            summary: v.exec.summary.clone(),
        },
    }
}

/// The origin check's answer as a class: who answered, not whether a service is healthy.
fn origin_label(p: &Probe) -> String {
    match p {
        Probe::NotRun { .. } => "not_run".into(),
        Probe::Failed { kind, .. } => kind.as_str().into(),
        Probe::Response { response, .. } => {
            if let Some(g) = crate::made_by::edge_gate(response) {
                format!("edge_gate_{}", g.cell().replace(' ', "_"))
            } else if crate::made_by::made_by_cloudflare(response) {
                if response.status == 530 {
                    "tunnel_down".into()
                } else {
                    format!("edge_error_{}", response.status)
                }
            } else {
                // Whatever answers from behind the tunnel for a hostname no route matches is Caddy.
                "origin_answered".into()
            }
        }
    }
}

fn cloudflared_fact(p: &Probe) -> Option<CloudflaredFact> {
    match p {
        Probe::NotRun { .. } => None,
        Probe::Failed { .. } => Some(CloudflaredFact {
            state: "down".into(),
            connections: None,
        }),
        Probe::Response { response, .. } => {
            let connections = serde_json::from_str::<serde_json::Value>(&response.body)
                .ok()
                .and_then(|v| v.get("readyConnections").and_then(|n| n.as_u64()));
            let state = if response.status == 200 && connections.is_none_or(|n| n > 0) {
                "ready"
            } else {
                "not_ready"
            };
            Some(CloudflaredFact {
                state: state.into(),
                connections,
            })
        }
    }
}

/// The status of a stored record as the engine's type (unknown names: inconclusive).
pub(crate) fn status_of(s: &str) -> Status {
    match s {
        "healthy" => Status::Healthy,
        "skipped" => Status::Skipped,
        "degraded" => Status::Degraded,
        "broken" => Status::Broken,
        _ => Status::Inconclusive,
    }
}
