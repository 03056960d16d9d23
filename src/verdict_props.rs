//! Monotonic evidence, as a property over the verdict engine.
//!
//! A world (faults at each hop: tunnel, Caddy, the container, each service's route and process) is
//! generated; the observations pvediag would make in it are derived for every subset of the optional
//! evidence (Caddyfile routes, Caddy's admin API, the host vantage, the exec channel). For every
//! pair `less ⊂ more` of evidence sets, each service's verdict with less evidence must contain the
//! verdict with more: the same status (or "no claim" when less is inconclusive/skipped), a pinned
//! layer only if more pins the same one, and candidates only ever narrowed.

use proptest::prelude::*;

use super::*;
use crate::catalog::Catalog;
use crate::observation::*;

/// A fault outside the services: one at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outer {
    None,
    /// cloudflared not running: 530 / 1033 everywhere, nothing answers /ready.
    TunnelDown,
    /// cloudflared running without an edge connection: 530 everywhere, /ready 503.
    NotReady,
    /// caddy-cmux not listening: Cloudflare 502 everywhere, the host's Caddy probe refused.
    CaddyDown,
    /// The container is stopped: `cmux-{vmid}.lan` does not resolve.
    ContainerStopped,
    /// The container runs but the host cannot reach it (firewall): timeouts from the host.
    Firewalled,
}

/// One service's own fault (its route or its process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    Healthy,
    Down,
    Hang,
    Error500,
    LoopbackOnly,
    NoCors,
    /// The route dials a closed port.
    RouteClosedPort,
    /// The route dials the port of the service with this index.
    RouteTo(usize),
    NoRoute,
}

#[derive(Debug, Clone)]
struct World {
    outer: Outer,
    faults: Vec<Fault>,
    token_ok: bool,
    /// `pct exec` works from the vantage (when the host vantage is part of the evidence).
    pct: bool,
}

/// The optional evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Evidence {
    caddyfile: bool,
    admin: bool,
    host: bool,
    exec: bool,
}

impl Evidence {
    fn all() -> Vec<Evidence> {
        (0..16u8)
            .map(|b| Evidence {
                caddyfile: b & 1 != 0,
                admin: b & 2 != 0,
                host: b & 4 != 0,
                exec: b & 8 != 0,
            })
            .collect()
    }
    fn subset_of(&self, o: &Evidence) -> bool {
        (!self.caddyfile || o.caddyfile)
            && (!self.admin || o.admin)
            && (!self.host || o.host)
            && (!self.exec || o.exec)
    }
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Probe {
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

fn failed(kind: FailureKind) -> Probe {
    Probe::Failed {
        kind,
        message: "x".into(),
        elapsed_ms: 1,
    }
}

/// The healthy answer of the service called `name` (what its process sends).
fn answer_of(name: &str, cors: bool) -> (Vec<(&'static str, &'static str)>, &'static str) {
    match name {
        "exec" | "proxy" => (vec![], "ok"),
        "worker" => (vec![], r#"0{"sid":"abc","upgrades":["websocket"]}"#),
        "vscode" => (vec![], "0123456789abcdef0123456789abcdef01234567"),
        "vnc" => (
            vec![("content-type", "text/html")],
            "<html><title>noVNC</title></html>",
        ),
        "cdp" => (
            vec![],
            r#"{"Browser":"Chrome/120","webSocketDebuggerUrl":"ws://x"}"#,
        ),
        "xterm" => {
            let mut h = vec![("content-type", "application/json")];
            if cors {
                h.push(("access-control-allow-origin", "*"));
            }
            (h, r#"{"sessions":[]}"#)
        }
        _ => (vec![], "<html>vite</html>"),
    }
}

const CF: [(&str, &str); 2] = [("server", "cloudflare"), ("cf-ray", "8f00000000000000-LAB")];

/// What a request to `port` on the container gets from the host (`None`: nothing listens).
fn at_port(w: &World, c: &Catalog, port: u16, inside: bool) -> Probe {
    if !inside {
        match w.outer {
            Outer::ContainerStopped => return failed(FailureKind::Dns),
            Outer::Firewalled => return failed(FailureKind::Timeout),
            _ => {}
        }
    }
    let Some(i) = c.services.iter().position(|s| s.port == port) else {
        return failed(FailureKind::Refused);
    };
    let s = &c.services[i];
    match w.faults[i] {
        Fault::Down => failed(FailureKind::Refused),
        Fault::Hang => failed(FailureKind::Timeout),
        Fault::LoopbackOnly if !inside => failed(FailureKind::Refused),
        Fault::Error500 => resp(500, &[], "Internal Server Error"),
        f => {
            let (h, b) = answer_of(&s.name, f != Fault::NoCors);
            resp(200, &h, b)
        }
    }
}

/// Where Caddy's route for service `i` dials (`None`: no route).
fn route_port(w: &World, c: &Catalog, i: usize) -> Option<u16> {
    match w.faults[i] {
        Fault::NoRoute => None,
        Fault::RouteClosedPort => Some(c.services[i].port.wrapping_add(1)),
        Fault::RouteTo(j) => Some(c.services[j].port),
        _ => Some(c.services[i].port),
    }
}

/// Caddy's answer on the host for service `i` (the `Host` header of its public name).
fn caddy_answer(w: &World, c: &Catalog, i: usize) -> Probe {
    if w.outer == Outer::CaddyDown {
        return failed(FailureKind::Refused);
    }
    match route_port(w, c, i) {
        None => resp(200, &[("server", "Caddy")], ""),
        Some(p) => match at_port(w, c, p, false) {
            Probe::Failed {
                kind: FailureKind::Timeout,
                ..
            } if w.outer == Outer::Firewalled => resp(502, &[("server", "Caddy")], ""),
            Probe::Failed {
                kind: FailureKind::Timeout,
                ..
            } => failed(FailureKind::Timeout),
            Probe::Failed { .. } => resp(502, &[("server", "Caddy")], ""),
            ok => ok,
        },
    }
}

/// The public answer for service `i`.
fn external(w: &World, c: &Catalog, i: usize) -> Probe {
    match w.outer {
        Outer::TunnelDown | Outer::NotReady => return resp(530, &CF, "error code: 1033"),
        Outer::CaddyDown => return resp(502, &CF, "error code: 502"),
        _ => {}
    }
    match caddy_answer(w, c, i) {
        Probe::Response { response, .. } if response.status == 502 => {
            resp(502, &CF, "error code: 502")
        }
        Probe::Response { mut response, .. } => {
            response
                .headers
                .extend(CF.iter().map(|(k, v)| (k.to_string(), v.to_string())));
            Probe::Response {
                response,
                elapsed_ms: 5,
            }
        }
        other => other,
    }
}

/// The observations pvediag makes in `w` with evidence `ev`.
fn observe(w: &World, c: &Catalog, ev: Evidence) -> TargetObservation {
    let exec_i = c.services.iter().position(|s| s.name == "exec").unwrap();
    let exec_ext = external(w, c, exec_i);
    let exec_reaches = classify(&c.services[exec_i], &exec_ext) == Answer::Healthy;
    let container_up = w.outer != Outer::ContainerStopped;
    let via_exec = ev.exec && exec_reaches && w.token_ok;
    let via_pct = ev.exec && ev.host && w.pct && container_up;
    let run = if !ev.exec {
        ExecRun::NotRun {
            reason: "--no-exec".into(),
        }
    } else if exec_reaches {
        if w.token_ok {
            ExecRun::Completed {
                exit_code: Some(0),
                notes: vec![],
                used_fallback: false,
                elapsed_ms: 10,
            }
        } else {
            ExecRun::Rejected {
                status: 401,
                body: String::new(),
                from_edge: false,
            }
        }
    } else {
        match exec_ext {
            Probe::Response { response, .. } => ExecRun::Rejected {
                from_edge: made_by_cloudflare(&response),
                status: response.status,
                body: response.body,
            },
            Probe::Failed { kind, .. } => ExecRun::Failed {
                kind,
                message: "x".into(),
            },
            Probe::NotRun { reason } => ExecRun::NotRun { reason },
        }
    };
    let internal_ok = via_exec || via_pct;
    let services = c
        .services
        .iter()
        .enumerate()
        .map(|(i, s)| ServiceObservation {
            name: s.name.clone(),
            port: s.port,
            url: s
                .routed
                .then(|| format!("https://{}-202.example.test{}", s.name, s.probe.path)),
            external: if s.routed {
                external(w, c, i)
            } else {
                Probe::not_run("not routed")
            },
            internal: if internal_ok {
                at_port(w, c, s.port, true)
            } else {
                Probe::not_run("the exec channel is unavailable")
            },
        })
        .collect();
    let origin = match w.outer {
        Outer::TunnelDown | Outer::NotReady => resp(530, &CF, "error code: 1033"),
        Outer::CaddyDown => resp(502, &CF, "error code: 502"),
        _ => resp(200, &CF, ""),
    };
    let from = if ev.admin {
        Some(RouteFrom::AdminApi)
    } else if ev.caddyfile {
        Some(RouteFrom::Caddyfile)
    } else {
        None
    };
    let routes = match from {
        None => Vec::new(),
        Some(from) => c
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.routed)
            .map(|(i, s)| {
                let p = route_port(w, c, i);
                RouteObservation {
                    service: s.name.clone(),
                    host: format!("{}-202.example.test", s.name),
                    upstream_host: p.map(|_| "cmux-202.lan".into()),
                    upstream_port: p,
                    source: p.map(|_| "/etc/caddy/Caddyfile.cmux:17".into()),
                    from: p.map(|_| from),
                }
            })
            .collect(),
    };
    let host = ev.host.then(|| HostObservation {
        vantage: "local".into(),
        run: ExecRun::Completed {
            exit_code: Some(0),
            notes: vec![],
            used_fallback: false,
            elapsed_ms: 1,
        },
        caddy_url: "http://127.0.0.1:8080".into(),
        cloudflared: match w.outer {
            Outer::TunnelDown => failed(FailureKind::Refused),
            Outer::NotReady => resp(503, &[], r#"{"status":503,"readyConnections":0}"#),
            _ => resp(200, &[], r#"{"status":200,"readyConnections":4}"#),
        },
        caddy_config: Probe::not_run("test"),
        services: c
            .services
            .iter()
            .enumerate()
            .filter(|(_, s)| s.routed)
            .map(|(i, s)| HostServiceObservation {
                name: s.name.clone(),
                caddy: caddy_answer(w, c, i),
                upstream_url: format!("http://cmux-202.lan:{}{}", s.port, s.probe.path),
                upstream: at_port(w, c, s.port, false),
            })
            .collect(),
        identity: Default::default(),
    });
    TargetObservation {
        vmid: 202,
        exec: ExecChannel {
            url: "https://exec-202.example.test".into(),
            via_public_url: ev.exec,
            auth_mode: AuthMode::Required,
            token_sent: true,
            run,
            pct: None,
        },
        origin: Some(OriginCheck {
            url: "https://pvediag-origin-check.example.test/".into(),
            probe: origin,
        }),
        services,
        routes,
        host,
        inside: None,
        identity: Default::default(),
    }
}

/// Whether `less` (made with less evidence) contains `more`.
fn contains(less: &Verdict, more: &Verdict) -> Result<(), String> {
    let (ll, ml) = (less.layers(), more.layers());
    match less.status {
        Status::Skipped => Ok(()),
        Status::Inconclusive => {
            if !ll.is_empty() && !ml.iter().all(|l| ll.contains(l)) {
                return Err("more evidence names a hop the inconclusive verdict ruled out".into());
            }
            Ok(())
        }
        Status::Healthy if more.status != Status::Healthy => {
            Err("healthy with less evidence, not with more".into())
        }
        Status::Healthy => Ok(()),
        Status::Broken | Status::Degraded => {
            if more.status != less.status {
                return Err("the status changed".into());
            }
            if less.layer.is_some() && more.layer != less.layer {
                return Err("less evidence pinned another layer".into());
            }
            if !ml.iter().all(|l| ll.contains(l)) {
                return Err("more evidence widened the candidates".into());
            }
            Ok(())
        }
    }
}

fn outer() -> impl Strategy<Value = Outer> {
    prop_oneof![
        6 => Just(Outer::None),
        1 => Just(Outer::TunnelDown),
        1 => Just(Outer::NotReady),
        1 => Just(Outer::CaddyDown),
        1 => Just(Outer::ContainerStopped),
        1 => Just(Outer::Firewalled),
    ]
}

fn fault(n: usize) -> impl Strategy<Value = Fault> {
    prop_oneof![
        8 => Just(Fault::Healthy),
        1 => Just(Fault::Down),
        1 => Just(Fault::Hang),
        1 => Just(Fault::Error500),
        1 => Just(Fault::LoopbackOnly),
        1 => Just(Fault::NoCors),
        1 => Just(Fault::RouteClosedPort),
        1 => (0..n).prop_map(Fault::RouteTo),
        1 => Just(Fault::NoRoute),
    ]
}

fn world(n: usize) -> impl Strategy<Value = World> {
    (
        outer(),
        proptest::collection::vec(fault(n), n),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(outer, faults, token_ok, pct)| World {
            outer,
            faults,
            token_ok,
            pct,
        })
}

/// Checks every pair of evidence sets of one world; the first violation, described.
fn check_world(c: &Catalog, w: &World) -> Result<(), String> {
    let ctx = Context {
        instance: None,
        catalog: c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    let sets = Evidence::all();
    let verdicts: Vec<TargetVerdict> = sets
        .iter()
        .map(|ev| diagnose(&ctx, &observe(w, c, *ev)))
        .collect();
    // Every outage seen from outside is broken (or degraded), whatever evidence there is.
    for (ev, tv) in sets.iter().zip(&verdicts) {
        let t = observe(w, c, *ev);
        for ((s, so), v) in c.services.iter().zip(&t.services).zip(&tv.services) {
            let e = classify(s, &so.external);
            if s.routed
                && e != Answer::Healthy
                && !s.optional
                && !matches!(v.status, Status::Broken | Status::Degraded)
            {
                return Err(format!(
                    "{}: the public URL fails ({e:?}) but the verdict is {} ({}) with {ev:?}",
                    s.name,
                    v.status.as_str(),
                    v.rule
                ));
            }
        }
    }
    for (a, less) in sets.iter().enumerate() {
        for (b, more) in sets.iter().enumerate() {
            if a == b || !less.subset_of(more) {
                continue;
            }
            for (k, (vl, vm)) in verdicts[a]
                .services
                .iter()
                .zip(&verdicts[b].services)
                .enumerate()
            {
                let name = &c.services[k].name;
                if let Err(why) = contains(vl, vm) {
                    return Err(format!(
                        "{name}: {why}\n  less {less:?}: {} {} [{}] — {}\n  more {more:?}: {} {} [{}] — {}",
                        vl.status.as_str(),
                        vl.rule,
                        vl.layer_label(),
                        vl.summary,
                        vm.status.as_str(),
                        vm.rule,
                        vm.layer_label(),
                        vm.summary
                    ));
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

    /// More evidence only narrows: every pair of evidence subsets, every service.
    #[test]
    fn more_evidence_only_narrows(w in world(Catalog::embedded().services.len())) {
        let c = Catalog::embedded();
        if let Err(e) = check_world(&c, &w) {
            prop_assert!(false, "{:?}\n{}", w, e);
        }
    }
}

/// The issue's example: a service on loopback only behind a correct route is never pinned on Caddy,
/// with or without the Caddyfile; with the host vantage it is pinned on the service.
#[test]
fn loopback_only_is_never_blamed_on_caddy() {
    let c = Catalog::embedded();
    let xterm = c.services.iter().position(|s| s.name == "xterm").unwrap();
    let mut faults = vec![Fault::Healthy; c.services.len()];
    faults[xterm] = Fault::LoopbackOnly;
    let w = World {
        outer: Outer::None,
        faults,
        token_ok: true,
        pct: false,
    };
    check_world(&c, &w).unwrap();
    let ctx = Context {
        instance: None,
        catalog: &c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    for ev in Evidence::all() {
        let v = &diagnose(&ctx, &observe(&w, &c, ev)).services[xterm];
        assert_eq!(v.status, Status::Broken, "{ev:?}: {}", v.summary);
        assert_ne!(v.layer, Some(Layer::Caddy), "{ev:?}: {}", v.summary);
        if ev.host && ev.exec {
            assert_eq!(v.layer, Some(Layer::Service), "{ev:?}: {}", v.summary);
        }
    }
}
