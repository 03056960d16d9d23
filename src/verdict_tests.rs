//! Table tests: one case per row of the decision table (docs/diagnosis.md).

use super::*;
use crate::catalog::Catalog;
use crate::observation::*;

pub(crate) fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Probe {
    Probe::Response {
        response: HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            body_truncated: false,
        },
        elapsed_ms: 5,
    }
}

pub(crate) fn cf(status: u16, body: &str) -> Probe {
    resp(
        status,
        &[("server", "cloudflare"), ("cf-ray", "8f00000000000000-LAB")],
        body,
    )
}

pub(crate) fn caddy(status: u16) -> Probe {
    resp(status, &[("server", "Caddy")], "")
}

pub(crate) fn failed(kind: FailureKind) -> Probe {
    Probe::Failed {
        kind,
        message: "x".into(),
        elapsed_ms: 1,
    }
}

pub(crate) fn healthy_answer(name: &str, through_edge: bool) -> Probe {
    let mut h: Vec<(&str, &str)> = Vec::new();
    if through_edge {
        h.push(("server", "cloudflare"));
        h.push(("cf-ray", "8f00000000000000-LAB"));
    }
    let body = match name {
        "exec" | "proxy" => "ok",
        "worker" => r#"0{"sid":"abc","upgrades":["websocket"]}"#,
        "vscode" => "0123456789abcdef0123456789abcdef01234567",
        "vnc" => {
            h.push(("content-type", "text/html"));
            "<html><title>noVNC</title></html>"
        }
        "cdp" => r#"{"Browser":"Chrome/120","webSocketDebuggerUrl":"ws://x"}"#,
        "xterm" => {
            h.push(("content-type", "application/json"));
            h.push(("access-control-allow-origin", "*"));
            r#"{"sessions":[]}"#
        }
        _ => "<html>vite</html>",
    };
    resp(200, &h, body)
}

pub(crate) fn healthy_target(c: &Catalog) -> TargetObservation {
    TargetObservation {
        vmid: 202,
        exec: ExecChannel {
            url: "https://exec-202.example.test".into(),
            via_public_url: true,
            auth_mode: AuthMode::Required,
            token_sent: true,
            run: ExecRun::Completed {
                exit_code: Some(0),
                notes: vec![],
                used_fallback: false,
                elapsed_ms: 10,
            },
            pct: None,
        },
        origin: Some(OriginCheck {
            url: "https://pvediag-origin-check.example.test/".into(),
            probe: resp(200, &[("server", "cloudflare"), ("cf-ray", "1-LAB")], ""),
        }),
        services: c
            .services
            .iter()
            .map(|s| ServiceObservation {
                name: s.name.clone(),
                port: s.port,
                url: s
                    .routed
                    .then(|| format!("https://{}-202.example.test{}", s.name, s.probe.path)),
                external: if s.routed {
                    healthy_answer(&s.name, true)
                } else {
                    Probe::not_run("not routed through the tunnel")
                },
                internal: healthy_answer(&s.name, false),
                dial: None,
            })
            .collect(),
        routes: vec![],
        host: None,
        inside: None,
        identity: Default::default(),
        preflight: None,
    }
}

fn set_ext(t: &mut TargetObservation, name: &str, p: Probe) {
    t.services
        .iter_mut()
        .find(|s| s.name == name)
        .unwrap()
        .external = p;
}
fn set_int(t: &mut TargetObservation, name: &str, p: Probe) {
    t.services
        .iter_mut()
        .find(|s| s.name == name)
        .unwrap()
        .internal = p;
}
fn no_internal(t: &mut TargetObservation, run: ExecRun) {
    t.exec.run = run;
    for s in &mut t.services {
        s.internal = Probe::not_run("the exec channel is unavailable");
    }
}
fn all_ext(t: &mut TargetObservation, p: Probe) {
    for s in &mut t.services {
        if s.url.is_some() {
            s.external = p.clone();
        }
    }
}

/// Adds a host vantage where every hop answers correctly; `name`'s Caddy and upstream probes are set.
fn host_view(t: &mut TargetObservation, name: &str, caddy_probe: Probe, upstream: Probe) {
    let services = t
        .services
        .iter()
        .filter(|s| s.url.is_some())
        .map(|s| HostServiceObservation {
            name: s.name.clone(),
            caddy: if s.name == name {
                caddy_probe.clone()
            } else {
                healthy_answer(&s.name, false)
            },
            upstream_url: format!("http://cmux-202.lan:{}/", s.port),
            upstream: if s.name == name {
                upstream.clone()
            } else {
                healthy_answer(&s.name, false)
            },
        })
        .collect();
    t.host = Some(HostObservation {
        vantage: "local".into(),
        run: ExecRun::Completed {
            exit_code: Some(0),
            notes: vec![],
            used_fallback: false,
            elapsed_ms: 1,
        },
        caddy_url: "http://127.0.0.1:8080".into(),
        cloudflared: resp(200, &[], r#"{"status":200,"readyConnections":4}"#),
        caddy_config: Probe::not_run("test"),
        services,
        identity: Default::default(),
    });
}

fn verdict_of(c: &Catalog, t: &TargetObservation, name: &str) -> Verdict {
    verdict_with(c, t, name, Layout::PerService)
}

fn verdict_with(c: &Catalog, t: &TargetObservation, name: &str, layout: Layout) -> Verdict {
    let ctx = Context {
        access_token_sent: false,
        instance: None,
        catalog: c,
        layout,
        caddyfile: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    let tv = diagnose(&ctx, t);
    let i = t.services.iter().position(|s| s.name == name).unwrap();
    tv.services[i].clone()
}

type Setup = fn(&mut TargetObservation);

struct Case {
    row: &'static str,
    service: &'static str,
    setup: Setup,
    status: Status,
    layer: Option<Layer>,
    /// When no layer is pinned: the candidates, in order.
    candidates: &'static [Layer],
}

/// A row that pins `layer` (or none, for healthy/skipped/inconclusive without candidates).
const fn case(
    row: &'static str,
    service: &'static str,
    setup: Setup,
    status: Status,
    layer: Option<Layer>,
) -> Case {
    Case {
        row,
        service,
        setup,
        status,
        layer,
        candidates: &[],
    }
}

/// A row whose layer is not pinned: `candidates`, most likely first.
const fn between(
    row: &'static str,
    service: &'static str,
    setup: Setup,
    status: Status,
    candidates: &'static [Layer],
) -> Case {
    Case {
        row,
        service,
        setup,
        status,
        layer: None,
        candidates,
    }
}

use Layer::*;
use Status::*;

const UNAUTHORIZED: ExecRun = ExecRun::Rejected {
    status: 401,
    body: String::new(),
    from_edge: false,
};

fn edge502(t: &mut TargetObservation, name: &str) {
    set_ext(t, name, cf(502, "error code: 502"));
}

/// Caddy's route for `name` as read from a Caddyfile line 17 (or the admin API).
fn route(t: &mut TargetObservation, name: &str, port: u16, from: RouteFrom) {
    t.routes.push(RouteObservation {
        service: name.into(),
        host: format!("{name}-202.example.test"),
        upstream_host: Some("cmux-202.lan".into()),
        upstream_port: Some(port),
        source: Some(match from {
            RouteFrom::Caddyfile => "/srv/Caddyfile.cmux:17".into(),
            RouteFrom::AdminApi => "caddy admin API apps.http.servers.srv0.routes[2]".into(),
        }),
        from: Some(from),
    });
}

/// A host vantage that reaches no port of the container (every upstream: `kind`).
fn host_lost(t: &mut TargetObservation, kind: FailureKind) {
    host_view(t, "xterm", caddy(502), failed(kind));
    for s in &mut t.host.as_mut().unwrap().services {
        s.caddy = caddy(502);
        s.upstream = failed(kind);
    }
    all_ext(t, cf(502, "error code: 502"));
}

const CASES: &[Case] = &[
    between(
        "gateway-error-no-internal",
        "xterm",
        |t| {
            edge502(t, "xterm");
            no_internal(t, UNAUTHORIZED);
            route(t, "xterm", 39383, RouteFrom::AdminApi);
        },
        Broken,
        &[Service, Container],
    ),
    case(
        "cut-by-deadline",
        "cdp",
        |t| {
            // The deadline cut the exec stream before cdp's record arrived.
            t.exec.run = ExecRun::Incomplete {
                notes: vec![],
                elapsed_ms: 100,
            };
            set_int(
                t,
                "cdp",
                Probe::not_run("no record before the stream was cut"),
            );
        },
        Inconclusive,
        None,
    ),
    case(
        "host-container-unreachable",
        "xterm",
        |t| {
            host_lost(t, FailureKind::Dns);
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
        },
        Broken,
        Some(Container),
    ),
    case(
        "host-container-unreachable",
        "preview",
        |t| {
            // "no route to host" on every port: optional services are down with the container
            host_lost(t, FailureKind::Refused);
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
        },
        Broken,
        Some(Container),
    ),
    case(
        "host-container-unreachable",
        "cdp",
        |t| {
            host_lost(t, FailureKind::Timeout);
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
        },
        Broken,
        Some(Container),
    ),
    between(
        "host-upstream-fails-no-internal",
        "xterm",
        |t| {
            edge502(t, "xterm");
            no_internal(t, UNAUTHORIZED);
            host_view(t, "xterm", caddy(502), failed(FailureKind::Refused));
        },
        Broken,
        &[Service, Container],
    ),
    between(
        "all-public-dns",
        "xterm",
        |t| all_ext(t, failed(FailureKind::Dns)),
        Broken,
        &[Tunnel, Input],
    ),
    between(
        "all-public-tls",
        "xterm",
        |t| all_ext(t, failed(FailureKind::Certificate)),
        Broken,
        &[Tunnel, Input],
    ),
    between(
        "all-public-refused",
        "vnc",
        |t| all_ext(t, failed(FailureKind::Refused)),
        Broken,
        &[Tunnel, Input],
    ),
    case(
        "caddy-route-misses-live-service",
        "xterm",
        |t| {
            edge502(t, "xterm");
            route(t, "xterm", 39376, RouteFrom::Caddyfile);
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "caddy-route-misses-live-service",
        "vnc",
        |t| {
            set_ext(t, "vnc", caddy(502));
            route(t, "vnc", 39388, RouteFrom::AdminApi);
        },
        Broken,
        Some(Caddy),
    ),
    between(
        "route-correct-upstream-unreachable",
        "xterm",
        |t| {
            edge502(t, "xterm");
            route(t, "xterm", 39383, RouteFrom::AdminApi);
        },
        Broken,
        &[Service, Container],
    ),
    case("healthy", "xterm", |_| {}, Healthy, None),
    case("healthy-inside-only", "cdp", |_| {}, Healthy, None),
    case(
        "healthy-inside-only",
        "xterm",
        |t| set_ext(t, "xterm", Probe::not_run("--no-external")),
        Healthy,
        None,
    ),
    case(
        "optional-not-running",
        "preview",
        |t| {
            edge502(t, "preview");
            set_int(t, "preview", failed(FailureKind::Refused));
        },
        Skipped,
        None,
    ),
    case(
        "optional-not-running",
        "preview",
        |t| {
            edge502(t, "preview");
            no_internal(t, UNAUTHORIZED);
        },
        Skipped,
        None,
    ),
    case(
        "header-dropped-by-proxy",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(
                    200,
                    &[("content-type", "application/json")],
                    r#"{"sessions":[]}"#,
                ),
            );
        },
        Degraded,
        Some(Caddy),
    ),
    case(
        "header-missing-at-service",
        "xterm",
        |t| {
            let p = resp(
                200,
                &[("content-type", "application/json")],
                r#"{"sessions":[]}"#,
            );
            set_ext(t, "xterm", p.clone());
            set_int(t, "xterm", p);
        },
        Degraded,
        Some(Service),
    ),
    case(
        "header-missing-at-service",
        "xterm",
        |t| {
            set_ext(t, "xterm", Probe::not_run("--no-external"));
            set_int(t, "xterm", resp(200, &[], r#"{"sessions":[]}"#));
        },
        Degraded,
        Some(Service),
    ),
    between(
        "header-missing-unknown-origin",
        "xterm",
        |t| {
            set_ext(t, "xterm", resp(200, &[], r#"{"sessions":[]}"#));
            no_internal(t, UNAUTHORIZED);
        },
        Degraded,
        &[Caddy, Service],
    ),
    case(
        "header-doubled-by-proxy",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(
                    200,
                    &[
                        ("content-type", "application/json"),
                        ("access-control-allow-origin", "*"),
                        ("access-control-allow-origin", "*"),
                    ],
                    r#"{"sessions":[]}"#,
                ),
            );
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "header-doubled-at-service",
        "xterm",
        |t| {
            let p = resp(
                200,
                &[
                    ("content-type", "application/json"),
                    ("access-control-allow-origin", "*"),
                    ("access-control-allow-origin", "https://a.example"),
                ],
                r#"{"sessions":[]}"#,
            );
            set_ext(t, "xterm", p.clone());
            set_int(t, "xterm", p);
        },
        Broken,
        Some(Service),
    ),
    between(
        "header-doubled-unknown-origin",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(
                    200,
                    &[
                        ("access-control-allow-origin", "*"),
                        ("access-control-allow-origin", "*"),
                    ],
                    r#"{"sessions":[]}"#,
                ),
            );
            no_internal(t, UNAUTHORIZED);
        },
        Broken,
        &[Caddy, Service],
    ),
    case(
        "tunnel-down",
        "xterm",
        |t| all_ext(t, cf(530, "error code: 1033")),
        Broken,
        Some(Tunnel),
    ),
    // One hostname's 530 next to answers through the same tunnel: flapping connectors (or a name
    // leading to another tunnel). The 530 is broken, the others degraded; never healthy.
    case(
        "tunnel-flapping",
        "vscode",
        |t| set_ext(t, "vscode", cf(530, "<html>Cloudflare Tunnel error</html>")),
        Broken,
        Some(Tunnel),
    ),
    case(
        "tunnel-flapping",
        "xterm",
        |t| set_ext(t, "vscode", cf(530, "error code: 1033")),
        Degraded,
        Some(Tunnel),
    ),
    // The origin check failed (its hostname routed elsewhere) while the chain reaches the
    // container: it proves nothing, the service's own fault is named.
    case(
        "service-down",
        "vscode",
        |t| {
            edge502(t, "vscode");
            set_int(t, "vscode", failed(FailureKind::Refused));
            t.origin.as_mut().unwrap().probe = cf(502, "error code: 502");
        },
        Broken,
        Some(Service),
    ),
    case(
        "tunnel-no-ingress",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(404, &[("server", "cloudflare"), ("cf-ray", "1-LAB")], ""),
            )
        },
        Broken,
        Some(Tunnel),
    ),
    case(
        "dns-missing",
        "xterm",
        |t| set_ext(t, "xterm", failed(FailureKind::Dns)),
        Broken,
        Some(Tunnel),
    ),
    case(
        "edge-tls",
        "xterm",
        |t| set_ext(t, "xterm", failed(FailureKind::Certificate)),
        Broken,
        Some(Tunnel),
    ),
    case(
        "edge-tls",
        "vnc",
        |t| set_ext(t, "vnc", failed(FailureKind::Tls)),
        Broken,
        Some(Tunnel),
    ),
    case(
        "edge-refused",
        "xterm",
        |t| set_ext(t, "xterm", failed(FailureKind::Refused)),
        Broken,
        Some(Tunnel),
    ),
    case(
        "caddy-no-route",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(200, &[("server", "cloudflare"), ("cf-ray", "1-LAB")], ""),
            )
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "caddy-no-route",
        "vscode",
        |t| {
            set_ext(
                t,
                "vscode",
                resp(
                    404,
                    &[("server", "Caddy")],
                    "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN",
                ),
            )
        },
        Broken,
        Some(Caddy),
    ),
    between(
        "gateway-error-service-ok",
        "xterm",
        |t| edge502(t, "xterm"),
        Broken,
        &[Caddy, Service, Container],
    ),
    between(
        "gateway-error-service-ok",
        "vnc",
        |t| set_ext(t, "vnc", caddy(502)),
        Broken,
        &[Caddy, Service, Container],
    ),
    between(
        "gateway-error-service-ok",
        "xterm",
        |t| {
            // exec's round trip failed, but another service answered through the chain
            edge502(t, "xterm");
            t.exec.via_public_url = false;
        },
        Broken,
        &[Caddy, Service, Container],
    ),
    between(
        "gateway-error-service-ok-unproven-chain",
        "xterm",
        |t| {
            all_ext(t, cf(502, "error code: 502"));
            t.exec.via_public_url = false;
        },
        Broken,
        &[Caddy, Container, Service],
    ),
    case(
        "service-down",
        "vscode",
        |t| {
            edge502(t, "vscode");
            set_int(t, "vscode", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-down",
        "proxy",
        |t| set_int(t, "proxy", failed(FailureKind::Refused)),
        Broken,
        Some(Service),
    ),
    case(
        "service-hangs",
        "worker",
        |t| {
            set_ext(t, "worker", cf(504, "error code: 504"));
            set_int(t, "worker", failed(FailureKind::Timeout));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-hangs",
        "worker",
        |t| {
            set_ext(t, "worker", failed(FailureKind::Timeout));
            set_int(t, "worker", failed(FailureKind::Timeout));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-hangs",
        "cdp",
        |t| set_int(t, "cdp", failed(FailureKind::Timeout)),
        Broken,
        Some(Service),
    ),
    case(
        "service-hangs",
        "vnc",
        |t| {
            set_ext(t, "vnc", resp(200, &[], "hello"));
            set_int(t, "vnc", failed(FailureKind::Timeout));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-error-status",
        "vscode",
        |t| {
            edge502(t, "vscode");
            set_int(t, "vscode", resp(503, &[], "starting"));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-error-status",
        "vscode",
        |t| {
            set_ext(
                t,
                "vscode",
                resp(
                    500,
                    &[("server", "cloudflare"), ("cf-ray", "1-LAB")],
                    "Internal error",
                ),
            );
            set_int(t, "vscode", resp(500, &[], "Internal error"));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-error-status",
        "cdp",
        |t| set_int(t, "cdp", resp(500, &[], "")),
        Broken,
        Some(Service),
    ),
    case(
        "other-process-on-port",
        "xterm",
        |t| {
            edge502(t, "xterm");
            set_int(t, "xterm", resp(200, &[], "<html>something else</html>"));
        },
        Broken,
        Some(Service),
    ),
    case(
        "other-process-on-port",
        "xterm",
        |t| {
            set_ext(t, "xterm", resp(200, &[], "<html>something else</html>"));
            set_int(t, "xterm", resp(200, &[], "<html>something else</html>"));
        },
        Broken,
        Some(Service),
    ),
    case(
        "other-process-on-port",
        "cdp",
        |t| set_int(t, "cdp", resp(200, &[], "hello")),
        Broken,
        Some(Service),
    ),
    between(
        "gateway-error-internal-transport",
        "xterm",
        |t| {
            edge502(t, "xterm");
            set_int(t, "xterm", failed(FailureKind::EmptyReply));
        },
        Broken,
        &[Caddy, Service, Container],
    ),
    between(
        "gateway-error-no-internal",
        "xterm",
        |t| {
            edge502(t, "xterm");
            no_internal(t, UNAUTHORIZED);
        },
        Broken,
        &[Caddy, Service, Container],
    ),
    between(
        "container-unreachable",
        "xterm",
        |t| {
            all_ext(t, cf(502, "error code: 502"));
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
        },
        Broken,
        &[Container, Caddy, Service],
    ),
    case(
        "caddy-dials-other-host",
        "xterm",
        |t| {
            all_ext(t, cf(502, "error code: 502"));
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
            t.routes.push(RouteObservation {
                service: "xterm".into(),
                host: "xterm-202.example.test".into(),
                upstream_host: Some("cmux-202.local".into()),
                upstream_port: Some(39383),
                source: Some("Caddyfile.cmux:17".into()),
                from: Some(RouteFrom::Caddyfile),
            });
        },
        Broken,
        Some(Caddy),
    ),
    between(
        "origin-unreachable",
        "xterm",
        |t| {
            all_ext(t, cf(502, "error code: 502"));
            no_internal(
                t,
                ExecRun::Rejected {
                    status: 502,
                    body: "error code: 502".into(),
                    from_edge: true,
                },
            );
            t.origin.as_mut().unwrap().probe = cf(502, "error code: 502");
        },
        Broken,
        &[Caddy, Tunnel],
    ),
    between(
        "gateway-error-unknown",
        "xterm",
        |t| {
            all_ext(t, cf(502, "error code: 502"));
            no_internal(
                t,
                ExecRun::Failed {
                    kind: FailureKind::Timeout,
                    message: "x".into(),
                },
            );
            t.origin = None;
        },
        Broken,
        &[Tunnel, Caddy, Container, Service],
    ),
    case(
        "caddy-route-to-wrong-service",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(
                    200,
                    &[
                        ("server", "cloudflare"),
                        ("cf-ray", "1-LAB"),
                        ("content-type", "text/html"),
                    ],
                    "<!doctype html><script type=module src=/@vite/client>",
                ),
            );
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "caddy-route-to-wrong-service",
        "xterm",
        |t| {
            set_ext(
                t,
                "xterm",
                resp(
                    404,
                    &[("server", "cloudflare"), ("cf-ray", "1-LAB")],
                    "Cannot GET /sessions",
                ),
            );
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "service-down-other-answers",
        "xterm",
        |t| {
            set_ext(t, "xterm", resp(200, &[], "<html>vite</html>"));
            set_int(t, "xterm", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    between(
        "wrong-answer-no-internal",
        "xterm",
        |t| {
            set_ext(t, "xterm", resp(200, &[], "<html>vite</html>"));
            no_internal(t, UNAUTHORIZED);
        },
        Broken,
        &[Caddy, Service],
    ),
    between(
        "public-timeout-service-ok",
        "xterm",
        |t| set_ext(t, "xterm", failed(FailureKind::Timeout)),
        Broken,
        &[Tunnel, Caddy, Container],
    ),
    between(
        "public-timeout",
        "xterm",
        |t| {
            set_ext(t, "xterm", failed(FailureKind::Timeout));
            no_internal(t, UNAUTHORIZED);
        },
        Broken,
        &[Tunnel, Caddy, Container, Service],
    ),
    case(
        "service-down-timeout",
        "xterm",
        |t| {
            set_ext(t, "xterm", failed(FailureKind::Timeout));
            set_int(t, "xterm", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    between(
        "public-transport-error",
        "xterm",
        |t| set_ext(t, "xterm", failed(FailureKind::Receive)),
        Broken,
        &[Tunnel, Caddy, Container, Service],
    ),
    between(
        "internal-transport-error",
        "cdp",
        |t| set_int(t, "cdp", failed(FailureKind::EmptyReply)),
        Inconclusive,
        &[Service],
    ),
    case(
        "not-checkable",
        "proxy",
        |t| no_internal(t, UNAUTHORIZED),
        Inconclusive,
        None,
    ),
    case(
        "host-cloudflared-not-ready",
        "xterm",
        |t| {
            all_ext(t, cf(530, "error code: 1033"));
            host_view(
                t,
                "xterm",
                healthy_answer("xterm", false),
                healthy_answer("xterm", false),
            );
            t.host.as_mut().unwrap().cloudflared =
                resp(503, &[], r#"{"status":503,"readyConnections":0}"#);
        },
        Broken,
        Some(Tunnel),
    ),
    case(
        "host-cloudflared-not-running",
        "xterm",
        |t| {
            all_ext(t, cf(530, "error code: 1033"));
            host_view(
                t,
                "xterm",
                healthy_answer("xterm", false),
                healthy_answer("xterm", false),
            );
            t.host.as_mut().unwrap().cloudflared = failed(FailureKind::Refused);
        },
        Broken,
        Some(Tunnel),
    ),
    case(
        "host-caddy-down",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(
                t,
                "xterm",
                failed(FailureKind::Refused),
                healthy_answer("xterm", false),
            );
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "host-caddy-ok-edge-fails",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(
                t,
                "xterm",
                healthy_answer("xterm", false),
                healthy_answer("xterm", false),
            );
        },
        Broken,
        Some(Tunnel),
    ),
    case(
        "host-caddy-route-wrong",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(t, "xterm", caddy(502), healthy_answer("xterm", false));
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "host-caddy-route-wrong",
        "xterm",
        |t| {
            set_ext(t, "xterm", resp(200, &[], "<html>vite</html>"));
            host_view(
                t,
                "xterm",
                resp(200, &[], "<html>vite</html>"),
                healthy_answer("xterm", false),
            );
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "host-upstream-name",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(t, "xterm", caddy(502), failed(FailureKind::Dns));
        },
        Broken,
        Some(Container),
    ),
    case(
        "host-upstream-loopback-only",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(t, "xterm", caddy(502), failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    case(
        "host-upstream-unreachable",
        "xterm",
        |t| {
            edge502(t, "xterm");
            host_view(t, "xterm", caddy(504), failed(FailureKind::Timeout));
        },
        Broken,
        Some(Container),
    ),
    case(
        "service-down",
        "xterm",
        |t| {
            // the host's view adds nothing when the service is simply down: base rules decide
            edge502(t, "xterm");
            set_int(t, "xterm", failed(FailureKind::Refused));
            host_view(t, "xterm", caddy(502), failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    between(
        "route-correct-upstream-unreachable",
        "xterm",
        |t| {
            edge502(t, "xterm");
            t.routes.push(RouteObservation {
                service: "xterm".into(),
                host: "xterm-202.example.test".into(),
                upstream_host: Some("cmux-202.lan".into()),
                upstream_port: Some(39383),
                source: Some("Caddyfile.cmux:17".into()),
                from: Some(RouteFrom::Caddyfile),
            });
        },
        Broken,
        &[Service, Container, Caddy],
    ),
    // Who answered (crate::identity): rows that come before every other.
    between(
        "identity-wrong-sandbox",
        "xterm",
        reached_203,
        Broken,
        &[Caddy, Container],
    ),
    between(
        "identity-wrong-sandbox",
        "cdp",
        reached_203,
        Broken,
        &[Caddy, Container],
    ),
    case(
        "identity-lan-name-elsewhere",
        "xterm",
        |t| {
            reached_203(t);
            t.identity.host = Some(crate::identity::HostIdentity {
                lan_name: "cmux-202.lan".into(),
                lan_ipv4: Some(vec!["10.10.0.203".into()]),
                own_ipv4: Some(vec!["10.10.0.202".into()]),
            });
        },
        Broken,
        Some(Container),
    ),
    case(
        "identity-route-names-other-sandbox",
        "vscode",
        |t| {
            reached_203(t);
            t.routes.push(route_to("exec", "cmux-203.lan", 39375));
        },
        Broken,
        Some(Caddy),
    ),
    case(
        "route-names-other-sandbox",
        "xterm",
        |t| {
            reported(t, "cmux-202", "10.10.0.202");
            t.routes.push(route_to("xterm", "cmux-203.lan", 39383));
        },
        Broken,
        Some(Caddy),
    ),
    // The 2026 layout's preflight: Caddy's catch-all answered OPTIONS (the @options handler is
    // missing); every routed service that answers is degraded, Caddy pinned.
    case(
        "caddy-preflight-unanswered",
        "xterm",
        |t| {
            preflight(
                t,
                resp(
                    404,
                    &[("server", "cloudflare"), ("cf-ray", "8f00000000000000-LAB")],
                    "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN",
                ),
            )
        },
        Degraded,
        Some(Caddy),
    ),
    // Something else of the edge chain answered it (the origin-check name reaches no container).
    between(
        "caddy-preflight-unanswered",
        "vscode",
        |t| preflight(t, cf(403, "")),
        Degraded,
        &[Caddy, Tunnel],
    ),
];

/// The run's one CORS preflight got `p`.
fn preflight(t: &mut TargetObservation, p: Probe) {
    t.preflight = Some(OriginCheck {
        url: "https://port-0-pvediag-origin-check.example.test/".into(),
        probe: p,
    });
}

fn challenge() -> Probe {
    resp(
        403,
        &[
            ("server", "cloudflare"),
            ("cf-ray", "8f00000000000000-LAB"),
            ("cf-mitigated", "challenge"),
            ("content-type", "text/html; charset=UTF-8"),
        ],
        "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title></head></html>",
    )
}

fn access_login() -> Probe {
    resp(
        302,
        &[
            ("server", "cloudflare"),
            ("cf-ray", "8f00000000000000-LAB"),
            (
                "location",
                "https://acme.cloudflareaccess.com/cdn-cgi/access/login/xterm-202.example.test?kid=1&redirect_url=%2Fsessions",
            ),
        ],
        "",
    )
}

fn access_denied() -> Probe {
    cf(
        403,
        "<html><title>Forbidden · Cloudflare Access</title><a href=\"https://acme.cloudflareaccess.com/cdn-cgi/access/logout\">Sign out</a></html>",
    )
}

/// Every public request and the exec call stopped by `p`; no internal view.
fn gated(t: &mut TargetObservation, p: Probe) {
    all_ext(t, p.clone());
    let gate = crate::made_by::edge_gate(p.response().unwrap()).unwrap();
    no_internal(
        t,
        ExecRun::Gated {
            status: gate.status(),
            gate,
        },
    );
}

/// The gates of the edge: no service is healthy through one, none is blamed on the sandbox
/// without evidence from inside.
const GATE_CASES: &[Case] = &[
    case(
        "edge-challenge",
        "xterm",
        |t| gated(t, challenge()),
        Inconclusive,
        None,
    ),
    // preview's fingerprint accepts anything, but not a page the edge made.
    case(
        "edge-challenge",
        "preview",
        |t| gated(t, challenge()),
        Inconclusive,
        None,
    ),
    // The internal view (--exec-url from the host) still checks the services.
    case(
        "edge-challenge",
        "xterm",
        |t| all_ext(t, challenge()),
        Inconclusive,
        None,
    ),
    case(
        "service-down",
        "vscode",
        |t| {
            all_ext(t, challenge());
            set_int(t, "vscode", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    case(
        "service-hangs",
        "xterm",
        |t| {
            all_ext(t, access_login());
            set_int(t, "xterm", failed(FailureKind::Timeout));
        },
        Broken,
        Some(Service),
    ),
    case(
        "edge-access",
        "xterm",
        |t| gated(t, access_login()),
        Inconclusive,
        None,
    ),
    case(
        "edge-access",
        "preview",
        |t| all_ext(t, access_login()),
        Inconclusive,
        None,
    ),
    case(
        "edge-access",
        "worker",
        |t| gated(t, access_denied()),
        Inconclusive,
        None,
    ),
    case(
        "edge-blocked",
        "xterm",
        |t| gated(t, cf(403, "error code: 1020")),
        Inconclusive,
        None,
    ),
    // The host vantage sees Caddy answer correctly behind the edge: still the edge's gate.
    case(
        "edge-challenge",
        "xterm",
        |t| {
            gated(t, challenge());
            host_view(
                t,
                "xterm",
                healthy_answer("xterm", false),
                healthy_answer("xterm", false),
            );
        },
        Inconclusive,
        None,
    ),
];

/// Rows that need an Access service token to have been sent.
const TOKEN_CASES: &[Case] = &[
    case(
        "edge-access-token-rejected",
        "xterm",
        |t| gated(t, access_denied()),
        Inconclusive,
        None,
    ),
    case(
        "edge-access-token-not-accepted",
        "xterm",
        |t| gated(t, access_login()),
        Inconclusive,
        None,
    ),
];

fn check_case(n: usize, k: &Case, v: &Verdict, failures: &mut Vec<String>) {
    if v.status != k.status || v.layer != k.layer || v.rule != k.row {
        failures.push(format!(
            "case {n} ({} / {}): want {:?} {:?}, got {:?} {:?} {} — {}",
            k.row, k.service, k.status, k.layer, v.status, v.layer, v.rule, v.summary
        ));
    }
    if k.row.starts_with("edge-") && v.next_step.is_none() {
        failures.push(format!("case {n} ({}): no next step", k.row));
    }
    if k.row.starts_with("edge-") && v.layers() != vec![Edge] {
        failures.push(format!(
            "case {n} ({}): candidates {:?}, want only the edge",
            k.row, v.candidates
        ));
    }
}

#[test]
fn the_gates_of_the_edge() {
    let c = Catalog::embedded();
    let mut failures = Vec::new();
    for (token, cases) in [(false, GATE_CASES), (true, TOKEN_CASES)] {
        let ctx = Context {
            access_token_sent: token,
            catalog: &c,
            layout: Layout::PerService,
            caddyfile: None,
            connect_to: None,
            instance: None,
            deadline: None,
            target_cut: false,
        };
        for (n, k) in cases.iter().enumerate() {
            let mut t = healthy_target(&c);
            (k.setup)(&mut t);
            let tv = diagnose(&ctx, &t);
            let i = t.services.iter().position(|s| s.name == k.service).unwrap();
            check_case(n, k, &tv.services[i], &mut failures);
            // No service is healthy through a gate, and none is blamed on tunnel, Caddy or
            // container; the gate is said once, for the target.
            for (so, v) in t.services.iter().zip(&tv.services) {
                assert!(
                    !matches!(v.layer, Some(Tunnel | Caddy | Container)),
                    "case {n}: {} blamed on {:?}: {}",
                    so.name,
                    v.layer,
                    v.summary
                );
                if so.url.is_some() {
                    assert_ne!(
                        v.status, Healthy,
                        "case {n}: {} healthy through a gate",
                        so.name
                    );
                }
            }
            let g = tv.edge_gate.as_ref().expect("the gate is said once");
            let want = if g.gate.is_access() {
                "Access"
            } else {
                "Cloudflare"
            };
            assert!(g.summary.contains(want), "case {n}: {}", g.summary);
            assert!(!g.evidence.is_empty() && !g.next_step.is_empty());
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));

    // What each gate's summary and next step say.
    let mut t = healthy_target(&c);
    gated(&mut t, challenge());
    let ctx = |token| Context {
        access_token_sent: token,
        catalog: &c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        instance: None,
        deadline: None,
        target_cut: false,
    };
    let g = diagnose(&ctx(false), &t).edge_gate.unwrap();
    assert!(
        g.summary.contains("challenge") && g.summary.contains("not proven"),
        "{}",
        g.summary
    );
    assert!(
        g.next_step.contains("WAF") && g.next_step.contains("pvediag/"),
        "{}",
        g.next_step
    );
    let tv = diagnose(&ctx(false), &t);
    assert!(tv.exec.summary.contains("challenge"), "{}", tv.exec.summary);
    let mut t = healthy_target(&c);
    gated(&mut t, access_login());
    let g = diagnose(&ctx(false), &t).edge_gate.unwrap();
    assert!(
        g.next_step.contains("CF_ACCESS_CLIENT_ID"),
        "{}",
        g.next_step
    );
    let mut t = healthy_target(&c);
    gated(&mut t, access_denied());
    let g = diagnose(&ctx(true), &t).edge_gate.unwrap();
    assert!(
        g.summary
            .starts_with("configuration error: Cloudflare Access rejected the service token"),
        "{}",
        g.summary
    );
    assert!(!g.summary.contains('\n'));
    // Without a gate there is no gate verdict.
    assert!(diagnose(&ctx(false), &healthy_target(&c))
        .edge_gate
        .is_none());
}

// ---------------------------------------------------------------------------------------------
// Behind the fronts: back ends and units (issue 14, verdict_inside.rs)

fn unit_state(id: &str, active: &str, sub: &str, restarts: u32, status: i32) -> UnitState {
    UnitState {
        id: id.into(),
        load_state: "loaded".into(),
        active_state: active.into(),
        sub_state: sub.into(),
        restarts: Some(restarts),
        exit_status: Some(status),
        last_exit: (status != 0).then(|| "Mon 2026-11-30 20:01:13 UTC".to_string()),
        journal: vec![],
    }
}

/// Every back end alive, every unit of the catalog active (running).
fn inside_healthy(t: &mut TargetObservation) {
    let c = Catalog::embedded();
    let units = crate::probe::backend::units(&c.services.iter().collect::<Vec<_>>());
    t.inside = Some(InsideView {
        backends: vec![
            BackendObservation {
                service: "vnc".into(),
                port: 5901,
                check: BackendCheckObservation::Banner {
                    line: Some("RFB 003.008".into()),
                    failure: None,
                },
            },
            BackendObservation {
                service: "cdp".into(),
                port: 39382,
                check: BackendCheckObservation::Http {
                    probe: resp(
                        200,
                        &[("content-type", "application/json; charset=UTF-8")],
                        r#"{"Browser":"Chrome/131.0.6778.85","webSocketDebuggerUrl":"ws://127.0.0.1:39382/devtools/browser/x"}"#,
                    ),
                },
            },
        ],
        systemd: Some(SystemdView {
            units: units
                .iter()
                .map(|u| unit_state(&crate::observation::unit_id(u), "active", "running", 0, 0))
                .collect(),
            unavailable: None,
        }),
    });
}

fn set_unit(t: &mut TargetObservation, u: UnitState) {
    let view = t.inside.as_mut().unwrap().systemd.as_mut().unwrap();
    for x in view.units.iter_mut().filter(|x| x.id == u.id) {
        *x = u.clone();
    }
}

fn set_back(t: &mut TargetObservation, service: &str, check: BackendCheckObservation) {
    for b in t
        .inside
        .as_mut()
        .unwrap()
        .backends
        .iter_mut()
        .filter(|b| b.service == service)
    {
        b.check = check.clone();
    }
}

fn vnc_server_down(t: &mut TargetObservation) {
    inside_healthy(t);
    set_back(
        t,
        "vnc",
        BackendCheckObservation::Banner {
            line: None,
            failure: Some(FailureKind::Refused),
        },
    );
    set_unit(
        t,
        unit_state("cmux-tigervnc.service", "activating", "auto-restart", 5, 1),
    );
}

fn chrome_down(t: &mut TargetObservation) {
    inside_healthy(t);
    set_int(
        t,
        "cdp",
        resp(
            502,
            &[("content-type", "text/plain; charset=utf-8")],
            "Bad Gateway\n",
        ),
    );
    set_back(
        t,
        "cdp",
        BackendCheckObservation::Http {
            probe: failed(FailureKind::Refused),
        },
    );
    set_unit(
        t,
        unit_state(
            "cmux-devtools.service",
            "activating",
            "auto-restart",
            12,
            21,
        ),
    );
}

const INSIDE_CASES: &[Case] = &[
    // noVNC's page is served while TigerVNC is dead: broken, not healthy.
    case(
        "backend-down",
        "vnc",
        vnc_server_down,
        Broken,
        Some(Service),
    ),
    // cmux-cdp-proxy's own 502: the proxy is fine, Chrome is not.
    case("backend-down", "cdp", chrome_down, Broken, Some(Service)),
    // ... also when it is empty (Go's reverse proxy's default): inside, no Caddy made it.
    case(
        "backend-down",
        "cdp",
        |t| {
            chrome_down(t);
            set_int(t, "cdp", resp(502, &[], ""));
        },
        Broken,
        Some(Service),
    ),
    // cmux-proxy's back end is the port it is asked for (execd here).
    case(
        "backend-down",
        "proxy",
        |t| {
            inside_healthy(t);
            set_int(
                t,
                "proxy",
                resp(502, &[("content-type", "text/plain")], "Bad Gateway\n"),
            );
            set_int(t, "exec", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    case(
        "unit-active-port-refused",
        "xterm",
        |t| {
            inside_healthy(t);
            edge502(t, "xterm");
            set_int(t, "xterm", failed(FailureKind::Refused));
        },
        Broken,
        Some(Service),
    ),
    case(
        "unit-crash-looping",
        "xterm",
        |t| {
            inside_healthy(t);
            set_unit(
                t,
                unit_state("cmux-pty.service", "active", "running", 17, 1),
            );
        },
        Degraded,
        Some(Service),
    ),
    // A unit the back end needs has failed while Chrome still answers.
    case(
        "unit-crash-looping",
        "cdp",
        |t| {
            inside_healthy(t);
            set_unit(t, unit_state("cmux-xvfb.service", "failed", "failed", 0, 1));
        },
        Degraded,
        Some(Service),
    ),
    // Alive back ends and running units change nothing.
    case("healthy", "vnc", inside_healthy, Healthy, None),
    case("healthy-inside-only", "cdp", inside_healthy, Healthy, None),
];

#[test]
fn back_end_verdicts_name_port_unit_and_state() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    vnc_server_down(&mut t);
    let v = verdict_of(&c, &t, "vnc");
    for want in [
        "5901",
        "cmux-tigervnc",
        "restarted 5 times",
        "cmux-vnc-proxy answers",
    ] {
        assert!(v.summary.contains(want), "{want}: {}", v.summary);
    }
    assert!(v
        .next_step
        .as_deref()
        .unwrap()
        .contains("systemctl status cmux-tigervnc"));

    let mut t = healthy_target(&c);
    chrome_down(&mut t);
    let v = verdict_of(&c, &t, "cdp");
    assert!(
        v.summary.contains("39382") && v.summary.contains("cmux-devtools"),
        "{}",
        v.summary
    );
    let next = v.next_step.unwrap();
    assert!(next.contains("systemctl status cmux-devtools"), "{next}");
    assert!(
        next.contains("status 21") && next.contains("SingletonLock"),
        "{next}"
    );

    let mut t = healthy_target(&c);
    inside_healthy(&mut t);
    set_unit(
        &mut t,
        unit_state("cmux-pty.service", "active", "running", 17, 1),
    );
    let v = verdict_of(&c, &t, "xterm");
    assert!(v.summary.contains("restarted 17 times"), "{}", v.summary);
}

#[test]
fn every_broken_service_verdict_carries_the_unit_state() {
    let c = Catalog::embedded();
    for k in CASES.iter().filter(|k| k.layer == Some(Service)) {
        let mut t = healthy_target(&c);
        (k.setup)(&mut t);
        inside_healthy(&mut t);
        let s = c.get(k.service).unwrap();
        if !s.unit.is_empty() {
            set_unit(
                &mut t,
                unit_state(
                    &crate::observation::unit_id(&s.unit),
                    "failed",
                    "failed",
                    4,
                    1,
                ),
            );
        }
        let v = verdict_of(&c, &t, k.service);
        if v.layer == Some(Service) && !s.unit.is_empty() {
            assert!(
                v.summary.contains(&s.unit) && v.summary.contains("failed"),
                "{}: {}",
                k.row,
                v.summary
            );
            assert!(
                v.evidence.iter().any(|e| e.starts_with("unit ")),
                "{}",
                k.row
            );
        }
    }
}

#[test]
fn without_systemd_no_verdict_changes() {
    let c = Catalog::embedded();
    for k in CASES {
        let mut t = healthy_target(&c);
        (k.setup)(&mut t);
        let before = verdict_of(&c, &t, k.service);
        t.inside = Some(InsideView {
            backends: vec![],
            systemd: Some(SystemdView {
                units: vec![],
                unavailable: Some("systemctl is not installed in the container".into()),
            }),
        });
        let after = verdict_of(&c, &t, k.service);
        assert_eq!(
            (before.status, before.layer, before.rule),
            (after.status, after.layer, after.rule),
            "{}",
            k.row
        );
        let ctx = Context {
            instance: None,
            access_token_sent: false,
            catalog: &c,
            layout: Layout::PerService,
            caddyfile: None,
            connect_to: None,
            deadline: None,
            target_cut: false,
        };
        let tv = diagnose(&ctx, &t);
        assert!(
            tv.exec.summary.contains("no unit state"),
            "{}",
            tv.exec.summary
        );
    }
}

fn route_to(service: &str, upstream: &str, port: u16) -> RouteObservation {
    RouteObservation {
        service: service.into(),
        host: format!("{service}-202.example.test"),
        upstream_host: Some(upstream.into()),
        upstream_port: Some(port),
        source: Some("Caddyfile.cmux:17".into()),
        from: Some(RouteFrom::Caddyfile),
    }
}

/// The exec call reported this identity; the naming convention expects cmux-202.
fn reported(t: &mut TargetObservation, hostname: &str, ip: &str) {
    t.identity.reported = Some(crate::identity::ReportedIdentity {
        hostname: Some(hostname.into()),
        machine_id: Some("5eed".into()),
        ipv4: vec![ip.into()],
    });
    t.identity.reported_via = Some("exec".into());
    t.identity.expected = vec![crate::identity::convention_claim(
        "exec-202.example.test",
        202,
    )];
}

fn reached_203(t: &mut TargetObservation) {
    reported(t, "cmux-203", "10.10.0.203");
}

#[test]
fn every_row_of_the_decision_table() {
    let c = Catalog::embedded();
    let mut failures = Vec::new();
    for (n, k) in CASES.iter().chain(INSIDE_CASES).enumerate() {
        let mut t = healthy_target(&c);
        (k.setup)(&mut t);
        let v = verdict_of(&c, &t, k.service);
        let want_rule = k.row;
        let got: Vec<Layer> = v.candidates.iter().map(|c| c.layer).collect();
        if v.status != k.status || v.layer != k.layer || v.rule != want_rule || got != k.candidates
        {
            failures.push(format!(
                "case {n} ({} / {}): want {:?} {:?} {:?} {}, got {:?} {:?} {:?} {} — {}",
                k.row,
                k.service,
                k.status,
                k.layer,
                k.candidates,
                want_rule,
                v.status,
                v.layer,
                got,
                v.rule,
                v.summary
            ));
        }
        // Invariants of every verdict.
        assert!(!v.summary.is_empty(), "case {n}: empty summary");
        assert!(!v.evidence.is_empty(), "case {n}: no evidence");
        match v.status {
            Broken | Degraded => {
                assert!(
                    v.layer.is_some() == v.candidates.is_empty(),
                    "case {n}: broken needs a layer or candidates, not both"
                );
                assert!(
                    v.next_step.is_some() || !v.candidates.is_empty(),
                    "case {n}: broken without next step"
                );
                assert!(v.candidates.iter().all(|c| !c.check.is_empty()));
            }
            Inconclusive => {
                assert!(v.layer.is_none(), "case {n}: inconclusive with a layer");
            }
            _ => assert!(v.layer.is_none(), "case {n}: {:?} with a layer", v.status),
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// Every rule id named in docs/diagnosis.md has a case here, and every case's rule is documented.
#[test]
fn decision_table_doc_matches_the_cases() {
    let doc = include_str!("../docs/diagnosis.md");
    let documented: std::collections::BTreeSet<&str> = doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|id| !id.is_empty() && id.bytes().all(|c| c.is_ascii_lowercase() || c == b'-'))
        .collect();
    let tested: std::collections::BTreeSet<&str> = CASES
        .iter()
        .chain(INSIDE_CASES)
        .chain(GATE_CASES)
        .chain(TOKEN_CASES)
        .map(|c| c.row)
        .collect();
    let missing_doc: Vec<_> = tested.difference(&documented).collect();
    let missing_test: Vec<_> = documented.difference(&tested).collect();
    assert!(
        missing_doc.is_empty(),
        "rows tested but not documented: {missing_doc:?}"
    );
    assert!(
        missing_test.is_empty(),
        "rows documented but not tested: {missing_test:?}"
    );
}

/// A preflight answered as the 2026 layout does changes nothing; an unanswered one leaves a
/// broken verdict as it was and names the @options handler in the next step.
#[test]
fn preflight_only_degrades_what_answers() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    preflight(
        &mut t,
        resp(204, &[("access-control-allow-origin", "*")], ""),
    );
    assert_eq!(verdict_of(&c, &t, "xterm").status, Healthy);
    // Cloudflare's own 5xx, or no answer: the edge/tunnel rows decide, not this one.
    preflight(&mut t, cf(530, "error code: 1033"));
    assert_eq!(verdict_of(&c, &t, "xterm").status, Healthy);
    preflight(&mut t, failed(FailureKind::Timeout));
    assert_eq!(verdict_of(&c, &t, "xterm").status, Healthy);
    preflight(&mut t, resp(404, &[], "cmux sandbox not found."));
    let v = verdict_of(&c, &t, "xterm");
    assert_eq!((v.status, v.rule), (Degraded, "caddy-preflight-unanswered"));
    let next = v.next_step.unwrap();
    assert!(next.contains("@options method OPTIONS"), "{next}");
    assert!(next.contains(HOST_CADDYFILE), "{next}");
    assert!(
        v.evidence.iter().any(|e| e.contains("OPTIONS")),
        "{:?}",
        v.evidence
    );
    // A service without a public URL is not called cross-origin; a broken one stays broken.
    let internal_only = t
        .services
        .iter()
        .find(|s| s.url.is_none())
        .map(|s| s.name.clone());
    if let Some(n) = internal_only {
        assert_eq!(verdict_of(&c, &t, &n).rule, "healthy-inside-only");
    }
    edge502(&mut t, "vscode");
    assert_eq!(verdict_of(&c, &t, "vscode").status, Broken);
}

/// The dial evidence: each public hostname's resolution is in its evidence, and the all-public rules
/// quote the names that failed or the addresses dialled.
#[test]
fn the_dialled_address_and_resolved_names_are_evidence() {
    use crate::observation::Dial;
    let c = Catalog::embedded();
    let routed = |t: &mut TargetObservation, f: &dyn Fn(&str) -> Dial| {
        for s in t.services.iter_mut().filter(|s| s.url.is_some()) {
            let host = url::Url::parse(s.url.as_deref().unwrap())
                .unwrap()
                .host_str()
                .unwrap()
                .to_string();
            s.dial = Some(f(&host));
        }
    };
    // DNS failed for every name: the rule names them.
    let mut t = healthy_target(&c);
    all_ext(&mut t, failed(FailureKind::Dns));
    routed(&mut t, &|h| Dial::DnsFailed {
        host: h.into(),
        error: "failed to lookup address information: Name or service not known".into(),
    });
    let v = verdict_of(&c, &t, "xterm");
    assert_eq!(v.rule, "all-public-dns");
    assert!(v.summary.contains("-202.example.test, "), "{}", v.summary);
    assert!(v.summary.contains("more"), "{}", v.summary);
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("xterm-202.example.test did not resolve (failed to lookup")),
        "{:?}",
        v.evidence
    );
    // Refused at what DNS gave: the rule and the input candidate quote the address.
    let mut t = healthy_target(&c);
    all_ext(&mut t, failed(FailureKind::Refused));
    routed(&mut t, &|h| Dial::Dns {
        host: h.into(),
        addresses: vec!["192.0.2.7".into()],
    });
    let v = verdict_of(&c, &t, "vnc");
    assert_eq!(v.rule, "all-public-refused");
    assert!(v.summary.contains("refused at 192.0.2.7"), "{}", v.summary);
    let input = v.candidates.iter().find(|c| c.layer == Input).unwrap();
    assert!(input.check.contains("192.0.2.7"), "{}", input.check);
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("vnc-202.example.test resolved to 192.0.2.7")),
        "{:?}",
        v.evidence
    );
    // --connect-to: the address used, and that the name was not looked up.
    let mut t = healthy_target(&c);
    all_ext(&mut t, failed(FailureKind::Refused));
    routed(&mut t, &|h| Dial::ConnectTo {
        host: h.into(),
        address: "127.0.0.1:1".into(),
    });
    let v = verdict_of(&c, &t, "xterm");
    assert!(
        v.summary.contains("refused at 127.0.0.1:1"),
        "{}",
        v.summary
    );
    assert!(
        v.evidence
            .iter()
            .any(|e| e.contains("dialled at 127.0.0.1:1 (--connect-to; not looked up)")),
        "{:?}",
        v.evidence
    );
}

#[test]
fn the_seed_incident_names_caddy_and_the_live_port() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    edge502(&mut t, "xterm");
    let v = verdict_of(&c, &t, "xterm");
    // Without Caddy's configuration a wrong route and a loopback-only service look the same:
    // broken, Caddy the most likely candidate, no layer pinned.
    assert_eq!((v.status, v.layer), (Broken, None));
    assert_eq!(v.layers(), vec![Caddy, Service, Container]);
    assert!(v.candidates[0].check.contains("--caddyfile"));
    assert!(v.summary.contains("39383"), "{}", v.summary);
    let next = v.next_step.as_deref().unwrap();
    assert!(next.contains("cmux-{re.vmid.1}.lan:39383"), "{next}");
    // No line-number edit of a file that was not read: how to find the line instead.
    assert!(!next.contains("sed -i"), "{next}");
    assert!(next.contains("grep -n"), "{next}");
    assert!(next.contains(HOST_CADDYFILE), "{next}");
    assert!(v
        .next_step
        .as_deref()
        .unwrap()
        .contains("systemctl reload caddy-cmux"));
    assert!(v
        .evidence
        .iter()
        .any(|e| e.contains("exec call through the same tunnel")));
    // With Caddy's route known, the summary names both ports and the line.
    t.routes.push(RouteObservation {
        service: "xterm".into(),
        host: "xterm-202.example.test".into(),
        upstream_host: Some("cmux-202.lan".into()),
        upstream_port: Some(39376),
        source: Some("Caddyfile.cmux:17".into()),
        from: Some(RouteFrom::Caddyfile),
    });
    let v = verdict_of(&c, &t, "xterm");
    assert_eq!((v.status, v.layer), (Broken, Some(Caddy)));
    // The edit names the file really read, with its line.
    assert!(
        v.next_step
            .as_deref()
            .unwrap()
            .contains("sed -i '17s/:39376/:39383/' Caddyfile.cmux"),
        "{:?}",
        v.next_step
    );
    assert!(
        v.summary.contains("cmux-202.lan:39376")
            && v.summary.contains("39383")
            && v.summary.contains("Caddyfile.cmux:17"),
        "{}",
        v.summary
    );
    // Every other service stays healthy.
    let ctx = Context {
        access_token_sent: false,
        instance: None,
        catalog: &c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    let tv = diagnose(&ctx, &t);
    for (s, v) in t.services.iter().zip(&tv.services) {
        if s.name != "xterm" {
            assert_eq!(v.status, Healthy, "{}: {}", s.name, v.summary);
        }
    }
}

#[test]
fn later_layout_next_step_checks_the_bind_address() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    edge502(&mut t, "xterm");
    let v = verdict_with(&c, &t, "xterm", Layout::PortInHost);
    assert_eq!(v.layer, None);
    assert!(v.layers().contains(&Caddy) && v.layers().contains(&Service));
    assert!(v.next_step.unwrap().contains("ss -ltnp"));
}

#[test]
fn channel_verdicts() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    assert_eq!(channel_verdict(&t).status, Healthy);
    t.exec.run = UNAUTHORIZED;
    let v = channel_verdict(&t);
    assert_eq!(v.status, Inconclusive);
    assert!(v.summary.contains("rejected the exec token"));
    assert!(v.next_step.unwrap().contains("CMUX_EXECD_AUTH_TOKEN"));
    t.exec.token_sent = false;
    assert!(channel_verdict(&t).summary.contains("none was given"));
    t.exec.run = ExecRun::Completed {
        exit_code: None,
        notes: vec!["the stream ended without an exit event".into()],
        used_fallback: true,
        elapsed_ms: 1,
    };
    let v = channel_verdict(&t);
    assert!(v.summary.contains("fallback") && v.summary.contains("without an exit event"));
}

#[test]
fn classify_recognises_who_answered() {
    let c = Catalog::embedded();
    let x = c.get("xterm").unwrap();
    assert_eq!(
        classify(x, &cf(530, "error code: 1033")),
        Answer::TunnelDown
    );
    assert_eq!(
        classify(x, &cf(502, "error code: 502")),
        Answer::EdgeError {
            status: 502,
            code: Some("502".into())
        }
    );
    assert_eq!(classify(x, &caddy(502)), Answer::CaddyBadGateway(502));
    assert_eq!(classify(x, &caddy(504)), Answer::CaddyBadGateway(504));
    // A 502 with a body from the service itself, through Cloudflare without CF's error marks, is the service's.
    assert_eq!(
        classify(x, &resp(502, &[("server", "nginx")], "bad upstream")),
        Answer::BadStatus(502)
    );
}

#[test]
fn worst_status_orders_broken_last() {
    assert!(
        Broken > Degraded && Degraded > Inconclusive && Inconclusive > Skipped && Skipped > Healthy
    );
}

// ---------------------------------------------------------------------------------------------
// Identity: no false alarm when the sources agree, in both generations; the channel line

#[test]
fn identity_confirmed_keeps_healthy_targets_healthy_in_both_generations() {
    let c = Catalog::embedded();
    for (layout, exec_host) in [
        (Layout::PerService, "exec-202.example.test"),
        (Layout::PortInHost, "port-39375-cmux-202.example.test"),
        (
            Layout::PortInHost,
            "port-39375-pvelxc-1a2b3c4d.example.test",
        ),
    ] {
        let mut t = healthy_target(&c);
        let name = crate::identity::instance_of_host(exec_host, 202);
        reported(&mut t, &name, "10.10.0.202");
        t.identity.expected = vec![crate::identity::convention_claim(exec_host, 202)];
        // A route per generation that dials the request's own sandbox.
        t.routes.push(RouteObservation {
            service: "xterm".into(),
            host: exec_host.replace("exec", "xterm").replace("39375", "39383"),
            upstream_host: Some(format!("{name}.lan")),
            upstream_port: Some(39383),
            source: None,
            from: Some(RouteFrom::AdminApi),
        });
        let ctx = Context {
            access_token_sent: false,
            catalog: &c,
            layout,
            caddyfile: Some("/etc/caddy/Caddyfile.cmux"),
            instance: None,
            connect_to: None,
            deadline: None,
            target_cut: false,
        };
        let tv = diagnose(&ctx, &t);
        assert!(
            tv.services.iter().all(|v| v.status == Healthy),
            "{exec_host}: {:?}",
            tv.services
        );
        assert_eq!(tv.exec.status, Healthy);
        assert!(
            tv.exec.summary.contains(&format!("ran in {name}")),
            "{}",
            tv.exec.summary
        );
    }
}

/// The exec call proves who answers at exec's URL; without Caddy's routes or the host view the
/// exec line says the other public URLs are not traced to the sandbox (a route to another sandbox
/// would answer the same), and says nothing of it once a route was read.
#[test]
fn identity_without_routes_says_what_it_does_not_prove() {
    let c = Catalog::embedded();
    let ctx = Context {
        access_token_sent: false,
        catalog: &c,
        layout: Layout::PerService,
        caddyfile: None,
        instance: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    let mut t = healthy_target(&c);
    reported(&mut t, "cmux-202", "10.10.0.202");
    let tv = diagnose(&ctx, &t);
    assert!(tv.services.iter().all(|v| v.status == Healthy));
    assert!(
        tv.exec.summary.contains("ran in cmux-202")
            && tv.exec.summary.contains("not traced to this sandbox"),
        "{}",
        tv.exec.summary
    );
    t.routes.push(RouteObservation {
        service: "xterm".into(),
        host: "xterm-202.example.test".into(),
        upstream_host: Some("cmux-202.lan".into()),
        upstream_port: Some(39383),
        source: None,
        from: Some(RouteFrom::AdminApi),
    });
    let tv = diagnose(&ctx, &t);
    assert!(
        !tv.exec.summary.contains("not traced"),
        "{}",
        tv.exec.summary
    );
}

#[test]
fn identity_sources_that_agree_with_pct_and_the_pve_api_confirm() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    reported(&mut t, "cmux-202", "10.10.0.202");
    t.identity.expected.push(crate::identity::IdentityClaim {
        source: crate::identity::IdentitySource::PctConfig,
        hostname: Some("cmux-202".into()),
        ipv4: vec![],
        mac: Some("bc:24:11:00:00:ca".into()),
    });
    t.identity.host = Some(crate::identity::HostIdentity {
        lan_name: "cmux-202.lan".into(),
        lan_ipv4: Some(vec!["10.10.0.202".into()]),
        own_ipv4: Some(vec!["10.10.0.202".into()]),
    });
    let v = verdict_of(&c, &t, "xterm");
    assert_eq!(v.status, Healthy);
}

#[test]
fn unknown_identity_is_said_once_on_the_channel_line_and_changes_no_verdict() {
    let c = Catalog::embedded();
    let t = healthy_target(&c);
    let tv = diagnose(
        &Context {
            access_token_sent: false,
            catalog: &c,
            layout: Layout::PerService,
            caddyfile: Some("/etc/caddy/Caddyfile.cmux"),
            instance: None,
            connect_to: None,
            deadline: None,
            target_cut: false,
        },
        &t,
    );
    assert!(tv.services.iter().all(|v| v.status == Healthy));
    assert_eq!(tv.exec.status, Healthy);
    assert_eq!(
        tv.exec
            .summary
            .matches("identity could not be established")
            .count(),
        1,
        "{}",
        tv.exec.summary
    );
    assert!(tv
        .services
        .iter()
        .all(|v| v.evidence.iter().all(|e| !e.contains("identity"))));
}

#[test]
fn wrong_sandbox_evidence_names_the_sandbox_reached_and_how() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    reached_203(&mut t);
    let tv = diagnose(
        &Context {
            access_token_sent: false,
            catalog: &c,
            layout: Layout::PerService,
            caddyfile: Some("/etc/caddy/Caddyfile.cmux"),
            instance: None,
            connect_to: None,
            deadline: None,
            target_cut: false,
        },
        &t,
    );
    for v in &tv.services {
        assert_eq!(v.status, Broken, "{}", v.rule);
        assert!(v.summary.contains("cmux-203"), "{}", v.summary);
        assert!(
            v.evidence.iter().any(|e| e.contains("hostname cmux-203")),
            "{:?}",
            v.evidence
        );
        // The chain reached a container, but not this one: no "reached cmux-execd in cmux-202".
        assert!(
            v.evidence.iter().all(|e| !e.contains("in cmux-202")),
            "{:?}",
            v.evidence
        );
        assert!(v.next_step.as_deref().unwrap().contains("cmux-202.lan"));
    }
    assert_eq!(tv.exec.status, Broken);
    assert!(
        tv.exec.summary.contains("WRONG SANDBOX"),
        "{}",
        tv.exec.summary
    );
}

#[test]
fn two_targets_sharing_one_sandbox_are_both_flagged() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    reported(&mut t, "cmux-202", "10.10.0.202");
    t.identity.shared_with = vec![203];
    let tv = diagnose(
        &Context {
            access_token_sent: false,
            catalog: &c,
            layout: Layout::PerService,
            caddyfile: Some("/etc/caddy/Caddyfile.cmux"),
            instance: None,
            connect_to: None,
            deadline: None,
            target_cut: false,
        },
        &t,
    );
    assert_eq!(tv.exec.status, Broken);
    assert!(tv.exec.summary.contains("203"), "{}", tv.exec.summary);
    assert!(tv.exec.summary.contains("cmux-202"), "{}", tv.exec.summary);
}

/// A probe whose time limit was the run's deadline (shorter than --timeout) and that timed out was
/// cut by the operator's limit: no hop is blamed, and a whole target cut says so for every service.
#[test]
fn a_deadline_cut_blames_no_layer() {
    let c = Catalog::embedded();
    let mut t = healthy_target(&c);
    all_ext(&mut t, failed(FailureKind::Timeout));
    for s in &mut t.services {
        s.internal = failed(FailureKind::Timeout);
    }
    let mut ctx = Context {
        access_token_sent: false,
        instance: None,
        catalog: &c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        deadline: Some(std::time::Duration::from_millis(300)),
        target_cut: false,
    };
    for v in diagnose(&ctx, &t).services {
        assert_eq!(
            (v.status, v.rule),
            (Inconclusive, "cut-by-deadline"),
            "{}",
            v.summary
        );
        assert!(v.layers().is_empty());
        assert!(v.summary.contains("300 ms"), "{}", v.summary);
    }
    // Without the deadline in the way the same timeouts are the chain's: broken.
    ctx.deadline = None;
    assert_eq!(diagnose(&ctx, &t).services[1].status, Broken);
    // A target the deadline cut: every probe not run.
    for s in &mut t.services {
        s.external = Probe::not_run("cut");
        s.internal = Probe::not_run("cut");
    }
    ctx.target_cut = true;
    ctx.deadline = Some(std::time::Duration::from_millis(300));
    for v in diagnose(&ctx, &t).services {
        assert_eq!(v.rule, "cut-by-deadline", "{}", v.summary);
        assert!(!v.summary.contains("not routed"), "{}", v.summary);
    }
}
