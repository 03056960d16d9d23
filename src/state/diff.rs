//! What changed between two records, and which of it bears on a verdict. Pure: facts in, changes
//! out. Only facts observed in both runs are compared: what a run could not see never counts as
//! changed.

use serde::Serialize;

use super::record::{answer_words, Facts, PortFact, RouteFact};
use crate::verdict::{Layer, Status};

/// One fact that changed since the last healthy run. Stable names: they appear in JSON output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fact", rename_all = "snake_case")]
pub enum Change {
    /// Caddy's route for a service's hostname dials somewhere else (or no longer exists).
    Route {
        service: String,
        before: Option<String>,
        after: Option<String>,
        source_before: Option<String>,
        source_after: Option<String>,
    },
    /// What answers inside the container on a catalog port.
    PortAnswer {
        service: String,
        unit: String,
        port: u16,
        before: String,
        after: String,
        before_as: Option<String>,
        after_as: Option<String>,
    },
    /// cmux-execd's auth mode.
    ExecAuth { before: String, after: String },
    /// cloudflared's readiness on the host.
    Cloudflared { before: String, after: String },
    /// The origin check's answer (a hostname Caddy answers itself).
    Origin { before: String, after: String },
    /// The service catalog (its origin or the ports of services in both).
    Catalog {
        before: String,
        after: String,
        /// `(service, port before, port after)` for services in both catalogs.
        moved: Vec<(String, u16, u16)>,
    },
    /// The public URL template (the routing layout).
    UrlTemplate { before: String, after: String },
}

fn upstream(r: &RouteFact) -> Option<String> {
    match (&r.upstream_host, r.upstream_port) {
        (Some(h), Some(p)) => Some(format!("{h}:{p}")),
        (Some(h), None) => Some(h.clone()),
        _ => None,
    }
}

/// Every recorded fact that differs between `before` and `after`, observed in both.
pub fn diff(before: &Facts, after: &Facts) -> Vec<Change> {
    let mut out = Vec::new();
    if before.catalog != after.catalog {
        let moved: Vec<(String, u16, u16)> = after
            .catalog
            .ports
            .iter()
            .filter_map(|(name, &p)| {
                let &b = before.catalog.ports.get(name)?;
                (b != p).then(|| (name.clone(), b, p))
            })
            .collect();
        // A narrower selection (--services) of the same catalog is not a change.
        if before.catalog.generation != after.catalog.generation || !moved.is_empty() {
            out.push(Change::Catalog {
                before: before.catalog.generation.clone(),
                after: after.catalog.generation.clone(),
                moved,
            });
        }
    }
    if before.url_template != after.url_template {
        out.push(Change::UrlTemplate {
            before: before.url_template.clone(),
            after: after.url_template.clone(),
        });
    }
    if let (Some(b), Some(a)) = (&before.exec_auth, &after.exec_auth) {
        if b != a {
            out.push(Change::ExecAuth {
                before: b.clone(),
                after: a.clone(),
            });
        }
    }
    if let (Some(b), Some(a)) = (&before.cloudflared, &after.cloudflared) {
        if b.state != a.state {
            out.push(Change::Cloudflared {
                before: b.state.clone(),
                after: a.state.clone(),
            });
        }
    }
    if let (Some(b), Some(a)) = (&before.origin, &after.origin) {
        if b != a {
            out.push(Change::Origin {
                before: b.clone(),
                after: a.clone(),
            });
        }
    }
    if let (Some(rb), Some(ra)) = (&before.routes, &after.routes) {
        for a in ra {
            // The same hostname in both runs: a changed URL template is its own change.
            let Some(b) = rb
                .iter()
                .find(|b| b.service == a.service && b.host == a.host)
            else {
                continue;
            };
            let (ub, ua) = (upstream(b), upstream(a));
            if ub != ua {
                out.push(Change::Route {
                    service: a.service.clone(),
                    before: ub,
                    after: ua,
                    source_before: b.source.clone(),
                    source_after: a.source.clone(),
                });
            }
        }
    }
    for a in &after.ports {
        let Some(b) = before
            .ports
            .iter()
            .find(|b: &&PortFact| b.service == a.service && b.port == a.port)
        else {
            continue;
        };
        if b.answer != a.answer || b.answers_as != a.answers_as {
            out.push(Change::PortAnswer {
                service: a.service.clone(),
                unit: a.unit.clone(),
                port: a.port,
                before: b.answer.clone(),
                after: a.answer.clone(),
                before_as: b.answers_as.clone(),
                after_as: a.answers_as.clone(),
            });
        }
    }
    out
}

/// `cmux-202.lan:39383 -> :39376`: the host is not repeated when it did not change.
fn route_words(before: &str, after: &str) -> String {
    match (before.rsplit_once(':'), after.rsplit_once(':')) {
        (Some((hb, _)), Some((ha, pa))) if hb == ha => format!("{before} → :{pa}"),
        _ => format!("{before} → {after}"),
    }
}

impl Change {
    /// One line for an evidence list.
    pub fn describe(&self) -> String {
        match self {
            Change::Route {
                service,
                before,
                after,
                source_before,
                source_after,
            } => {
                let src =
                    |s: &Option<String>| s.as_ref().map(|s| format!(" ({s})")).unwrap_or_default();
                match (before, after) {
                    (Some(b), Some(a)) => format!(
                        "Caddy's route for {service} changed {}{}",
                        route_words(b, a),
                        src(source_after)
                    ),
                    (Some(b), None) => format!(
                        "Caddy no longer routes {service} (it went to {b}{})",
                        src(source_before)
                    ),
                    (None, Some(a)) => format!(
                        "Caddy now routes {service} to {a}{} (it had no route)",
                        src(source_after)
                    ),
                    (None, None) => format!("Caddy's route for {service} changed"),
                }
            }
            Change::PortAnswer {
                service,
                unit,
                port,
                before,
                after,
                before_as,
                after_as,
            } => {
                let who = if unit.is_empty() { service } else { unit };
                if after_as != before_as {
                    if let Some(other) = after_as {
                        return format!(
                            "port {port} ({who}'s) now answers with {other}'s fingerprint (it gave {})",
                            before_as
                                .as_ref()
                                .map(|b| format!("{b}'s"))
                                .unwrap_or_else(|| answer_words(before))
                        );
                    }
                }
                if before == "healthy" {
                    if after == "healthy" {
                        format!("{who} answers on {port} again")
                    } else if matches!(
                        after.as_str(),
                        "refused" | "timeout" | "empty_reply" | "receive"
                    ) {
                        format!(
                            "{who} stopped answering on {port} (now: {})",
                            answer_words(after)
                        )
                    } else {
                        format!(
                            "{who} on {port} no longer gives its healthy answer (now: {})",
                            answer_words(after)
                        )
                    }
                } else if after == "healthy" {
                    format!(
                        "{who} now answers on {port} (it gave {})",
                        answer_words(before)
                    )
                } else {
                    format!(
                        "{who} on {port}: {} → {}",
                        answer_words(before),
                        answer_words(after)
                    )
                }
            }
            Change::ExecAuth { before, after } => match (before.as_str(), after.as_str()) {
                ("off", "required") => "the exec endpoint now requires a token".into(),
                ("required", "off") => "the exec endpoint no longer requires a token".into(),
                (b, a) => format!("the exec endpoint's auth mode changed {b} → {a}"),
            },
            Change::Cloudflared { before, after } => {
                let w = |s: &str| match s {
                    "ready" => "ready",
                    "not_ready" => "up without an edge connection (503)",
                    "down" => "not answering on 127.0.0.1:20241-20245",
                    _ => "unknown",
                };
                format!("cloudflared was {}, now {}", w(before), w(after))
            }
            Change::Origin { before, after } => format!(
                "the origin check (a hostname Caddy answers itself) got {}, now {}",
                answer_words(before),
                answer_words(after)
            ),
            Change::Catalog {
                before,
                after,
                moved,
            } => {
                let mut s = if before == after {
                    "the catalog generation changed".to_string()
                } else {
                    format!("the catalog generation changed ({before} → {after})")
                };
                if !moved.is_empty() {
                    let m: Vec<String> = moved
                        .iter()
                        .map(|(n, b, a)| format!("{n} {b} → {a}"))
                        .collect();
                    s.push_str(&format!(": {}", m.join(", ")));
                }
                s
            }
            Change::UrlTemplate { before, after } => {
                format!("the public URL template changed {before} → {after}")
            }
        }
    }
}

/// What the relevance test needs to know about one verdict.
#[derive(Debug, Clone)]
pub struct VerdictView<'a> {
    pub service: &'a str,
    /// The service's catalog port.
    pub port: u16,
    pub status: Status,
    /// The layer it blames, or its candidates; empty: not narrowed at all.
    pub layers: Vec<Layer>,
    /// The internal view could not be had in this run (exec channel down).
    pub internal_missing: bool,
}

fn route_port(routes: &Option<Vec<RouteFact>>, service: &str) -> Option<u16> {
    routes
        .as_ref()?
        .iter()
        .find(|r| r.service == service)?
        .upstream_port
}

/// The changes that bear on one verdict. Healthy and skipped verdicts get none.
pub fn relevant<'c>(
    changes: &'c [Change],
    v: &VerdictView,
    before: &Facts,
    after: &Facts,
) -> Vec<&'c Change> {
    if matches!(v.status, Status::Healthy | Status::Skipped) {
        return Vec::new();
    }
    let may = |l: Layer| v.layers.is_empty() || v.layers.contains(&l);
    // The ports that matter to this service: its own and wherever Caddy dialled for it.
    let ports: Vec<u16> = [
        Some(v.port),
        route_port(&before.routes, v.service),
        route_port(&after.routes, v.service),
    ]
    .into_iter()
    .flatten()
    .collect();
    changes
        .iter()
        .filter(|c| match c {
            Change::Route { service, .. } => service == v.service,
            Change::PortAnswer { service, port, .. } => {
                service == v.service || ports.contains(port)
            }
            Change::ExecAuth { .. } => {
                v.service == crate::catalog::EXEC_SERVICE || v.internal_missing
            }
            Change::Cloudflared { .. } => may(Layer::Tunnel),
            Change::Origin { .. } => may(Layer::Tunnel) || may(Layer::Caddy),
            Change::Catalog { .. } | Change::UrlTemplate { .. } => true,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::record::{CatalogFact, CloudflaredFact};

    fn facts() -> Facts {
        Facts {
            catalog: CatalogFact {
                generation: "(built in)".into(),
                ports: [("xterm".to_string(), 39383), ("exec".to_string(), 39375)]
                    .into_iter()
                    .collect(),
            },
            url_template: "https://{service}-{vmid}.{domain}".into(),
            exec_auth: Some("off".into()),
            cloudflared: Some(CloudflaredFact {
                state: "ready".into(),
                connections: Some(4),
            }),
            origin: Some("origin_answered".into()),
            routes: Some(vec![RouteFact {
                service: "xterm".into(),
                host: "xterm-202.example.test".into(),
                upstream_host: Some("cmux-202.lan".into()),
                upstream_port: Some(39383),
                source: Some("Caddyfile.cmux:17".into()),
            }]),
            ports: vec![PortFact {
                service: "xterm".into(),
                unit: "cmux-pty".into(),
                port: 39383,
                answer: "healthy".into(),
                answers_as: None,
            }],
            external: vec![],
        }
    }

    fn view(service: &str, port: u16, layers: Vec<Layer>) -> VerdictView<'_> {
        VerdictView {
            service,
            port,
            status: Status::Broken,
            layers,
            internal_missing: false,
        }
    }

    #[test]
    fn same_facts_no_change() {
        assert!(diff(&facts(), &facts()).is_empty());
    }

    #[test]
    fn seed_route_change_names_both_ports_and_the_line() {
        let b = facts();
        let mut a = facts();
        a.routes.as_mut().unwrap()[0].upstream_port = Some(39376);
        let d = diff(&b, &a);
        assert_eq!(d.len(), 1);
        assert_eq!(
            d[0].describe(),
            "Caddy's route for xterm changed cmux-202.lan:39383 → :39376 (Caddyfile.cmux:17)"
        );
        let v = view("xterm", 39383, vec![Layer::Caddy]);
        assert_eq!(relevant(&d, &v, &b, &a).len(), 1);
        // Another service's verdict does not get xterm's route.
        let other = view("vnc", 39380, vec![Layer::Caddy]);
        assert!(relevant(&d, &other, &b, &a).is_empty());
    }

    #[test]
    fn a_source_line_that_moved_alone_is_no_change() {
        let b = facts();
        let mut a = facts();
        a.routes.as_mut().unwrap()[0].source = Some("Caddyfile.cmux:21".into());
        assert!(diff(&b, &a).is_empty());
    }

    #[test]
    fn unobserved_facts_never_count_as_changed() {
        let b = facts();
        let mut a = facts();
        a.routes = None;
        a.exec_auth = None;
        a.cloudflared = None;
        a.origin = None;
        a.ports.clear();
        assert!(diff(&b, &a).is_empty());
        assert!(diff(&a, &b).is_empty());
    }

    #[test]
    fn service_stopped_answering() {
        let b = facts();
        let mut a = facts();
        a.ports[0].answer = "refused".into();
        let d = diff(&b, &a);
        assert_eq!(
            d[0].describe(),
            "cmux-pty stopped answering on 39383 (now: connection refused)"
        );
        assert_eq!(
            relevant(&d, &view("xterm", 39383, vec![Layer::Service]), &b, &a).len(),
            1
        );
    }

    #[test]
    fn another_fingerprint_on_the_routed_port_bears_on_the_routed_service() {
        // xterm's route now points at 39377, where the worker answered and now something else does.
        let mut b = facts();
        b.ports.push(PortFact {
            service: "worker".into(),
            unit: "cmux-worker".into(),
            port: 39377,
            answer: "healthy".into(),
            answers_as: None,
        });
        let mut a = b.clone();
        a.routes.as_mut().unwrap()[0].upstream_port = Some(39377);
        a.ports[1].answer = "wrong_service".into();
        a.ports[1].answers_as = Some("xterm".into());
        let d = diff(&b, &a);
        assert_eq!(d.len(), 2, "{d:?}");
        let v = view("xterm", 39383, vec![Layer::Caddy]);
        assert_eq!(relevant(&d, &v, &b, &a).len(), 2);
        assert!(d[1]
            .describe()
            .contains("port 39377 (cmux-worker's) now answers with xterm's fingerprint"));
    }

    #[test]
    fn exec_auth_cloudflared_catalog() {
        let b = facts();
        let mut a = facts();
        a.exec_auth = Some("required".into());
        a.cloudflared = Some(CloudflaredFact {
            state: "not_ready".into(),
            connections: Some(0),
        });
        a.catalog.generation = "checks/2026".into();
        a.catalog.ports.insert("xterm".into(), 39384);
        let d = diff(&b, &a);
        let lines: Vec<String> = d.iter().map(|c| c.describe()).collect();
        assert!(lines.contains(&"the exec endpoint now requires a token".to_string()));
        assert!(lines.iter().any(|l| l.starts_with(
            "the catalog generation changed ((built in) → checks/2026): xterm 39383 → 39384"
        )));
        assert!(lines
            .iter()
            .any(|l| l.starts_with("cloudflared was ready, now up without")));
        // A Caddy verdict: no cloudflared, no exec auth; the catalog always.
        let caddy = view("xterm", 39383, vec![Layer::Caddy]);
        let r: Vec<&Change> = relevant(&d, &caddy, &b, &a);
        assert_eq!(r.len(), 1);
        assert!(matches!(r[0], Change::Catalog { .. }));
        // An unpinned verdict without the internal view: all of it.
        let mut open = view("xterm", 39383, vec![]);
        open.internal_missing = true;
        assert_eq!(relevant(&d, &open, &b, &a).len(), 3);
        // Healthy verdicts get nothing.
        let mut h = view("xterm", 39383, vec![]);
        h.status = Status::Healthy;
        assert!(relevant(&d, &h, &b, &a).is_empty());
    }

    #[test]
    fn a_narrower_selection_is_not_a_catalog_change() {
        let b = facts();
        let mut a = facts();
        a.catalog.ports.remove("exec");
        assert!(diff(&b, &a).is_empty());
    }

    #[test]
    fn route_removed_and_added() {
        let b = facts();
        let mut a = facts();
        a.routes.as_mut().unwrap()[0].upstream_host = None;
        a.routes.as_mut().unwrap()[0].upstream_port = None;
        a.routes.as_mut().unwrap()[0].source = None;
        let d = diff(&b, &a);
        assert_eq!(
            d[0].describe(),
            "Caddy no longer routes xterm (it went to cmux-202.lan:39383 (Caddyfile.cmux:17))"
        );
        let d = diff(&a, &b);
        assert!(d[0]
            .describe()
            .starts_with("Caddy now routes xterm to cmux-202.lan:39383"));
    }
}
