//! Monotonic evidence, as a property over the verdict engine.
//!
//! A world (faults at each hop: tunnel, Caddy, the container, each service's route and process) is
//! generated; the observations pvediag would make in it are derived for every subset of the optional
//! evidence (Caddyfile routes, Caddy's admin API, the host vantage, the exec channel). For every
//! pair `less ⊂ more` of evidence sets, each service's verdict with less evidence must contain the
//! verdict with more: the same status (or "no claim" when less is inconclusive/skipped), a pinned
//! layer only if more pins the same one, and candidates only ever narrowed.
//!
//! Identity evidence (what the exec call reported from inside, and what PVE, the host and the
//! naming convention expect) is one more optional piece. A world may send the target's requests to
//! another sandbox; without an identity confirmed through the public exec call a healthy answer only
//! says the right *kind* of service answered, so the one transition allowed besides narrowing is a
//! healthy verdict of unconfirmed identity becoming an identity row. A contradicted identity never
//! yields healthy, and a confirmed one changes no verdict.

use proptest::prelude::*;

use super::*;
use crate::catalog::Catalog;
use crate::observation::*;
// The table tests' fixtures: one way to write an answer.
use super::tests::{failed, resp};

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

/// Which sandbox the target's public exec hostname reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reached {
    /// Its own (cmux-202, 10.10.0.202).
    Own,
    /// Another sandbox (cmux-203) because Caddy's exec route dials `cmux-203.lan`.
    OtherByRoute,
    /// Another sandbox (cmux-203) because `cmux-202.lan` resolves to its address (a stale lease).
    OtherByLan,
    /// A clone named cmux-202 at another address, which `cmux-202.lan` resolves to.
    Clone,
}

#[derive(Debug, Clone)]
struct World {
    outer: Outer,
    faults: Vec<Fault>,
    token_ok: bool,
    /// `pct exec` works from the vantage (when the host vantage is part of the evidence).
    pct: bool,
    reached: Reached,
}

/// The optional evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Evidence {
    caddyfile: bool,
    admin: bool,
    host: bool,
    exec: bool,
    /// The identity the internal command reports, and what PVE (and the host) expect.
    identity: bool,
}

impl Evidence {
    fn all() -> Vec<Evidence> {
        (0..32u8)
            .map(|b| Evidence {
                caddyfile: b & 1 != 0,
                admin: b & 2 != 0,
                host: b & 4 != 0,
                exec: b & 8 != 0,
                identity: b & 16 != 0,
            })
            .collect()
    }
    fn subset_of(&self, o: &Evidence) -> bool {
        (!self.caddyfile || o.caddyfile)
            && (!self.admin || o.admin)
            && (!self.host || o.host)
            && (!self.exec || o.exec)
            && (!self.identity || o.identity)
    }
}

/// The identity evidence of `w` (empty without the identity piece): what the internal command
/// reported (through the exec call: the sandbox reached; through `pct exec`: the container itself),
/// what the PVE API and the convention expect, and the host's view of `cmux-202.lan`.
fn identity_of(
    w: &World,
    ev: Evidence,
    via_exec: bool,
    via_pct: bool,
) -> crate::identity::IdentityObservation {
    use crate::identity::*;
    if !ev.identity {
        return IdentityObservation::default();
    }
    let own = ("cmux-202", "10.10.0.202");
    let reached = match w.reached {
        Reached::Own => own,
        Reached::OtherByRoute | Reached::OtherByLan => ("cmux-203", "10.10.0.203"),
        Reached::Clone => ("cmux-202", "10.10.0.99"),
    };
    let report = |(h, a): (&str, &str)| ReportedIdentity {
        hostname: Some(h.into()),
        machine_id: Some(format!("id-{a}")),
        ipv4: vec![a.into()],
    };
    let (reported, reported_via) = if via_exec {
        (Some(report(reached)), Some("exec".to_string()))
    } else if via_pct {
        (Some(report(own)), Some("pct".to_string()))
    } else {
        (None, None)
    };
    // What `cmux-202.lan` resolves to on the host: the sandbox Caddy reaches under that name.
    let lan = match w.reached {
        Reached::OtherByLan => "10.10.0.203",
        Reached::Clone => "10.10.0.99",
        _ => own.1,
    };
    IdentityObservation {
        reported,
        reported_via,
        expected: vec![
            IdentityClaim {
                source: IdentitySource::PveApi,
                hostname: Some(own.0.into()),
                ipv4: vec![own.1.into()],
                mac: None,
            },
            convention_claim("exec-202.example.test", 202),
        ],
        host: ev.host.then(|| HostIdentity {
            lan_name: "cmux-202.lan".into(),
            lan_ipv4: Some(vec![lan.into()]),
            own_ipv4: (w.pct && w.outer != Outer::ContainerStopped)
                .then(|| vec![own.1.to_string()]),
        }),
        shared_with: Vec::new(),
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
            // The exec call ran in the sandbox it reached: another one answers inside (healthy).
            internal: if via_exec && w.reached != Reached::Own {
                let (h, b) = answer_of(&s.name, true);
                resp(200, &h, b)
            } else if internal_ok {
                at_port(w, c, s.port, true)
            } else {
                Probe::not_run("the exec channel is unavailable")
            },
            dial: None,
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
                // The exec route of a world that reaches cmux-203 through Caddy names it.
                let up = if s.name == "exec" && w.reached == Reached::OtherByRoute {
                    "cmux-203.lan"
                } else {
                    "cmux-202.lan"
                };
                RouteObservation {
                    service: s.name.clone(),
                    host: format!("{}-202.example.test", s.name),
                    upstream_host: p.map(|_| up.into()),
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
        identity: identity_of(w, ev, via_exec, via_pct),
        preflight: None,
    }
}

/// The identity rows (docs/diagnosis.md, "Who answered").
fn identity_rule(rule: &str) -> bool {
    rule.starts_with("identity-") || rule == "route-names-other-sandbox"
}

/// The identity was confirmed by the exec call through the public URL (the chain users take).
fn confirmed_through_public_exec(t: &TargetObservation) -> bool {
    t.exec.via_public_url
        && t.identity.reported_via.as_deref() == Some("exec")
        && matches!(
            crate::identity::assess(&t.identity, t.vmid),
            crate::identity::Assessment::Confirmed { .. }
        )
}

/// Whether `less` (made with less evidence) contains `more`. `less_confirmed`: the less-evidence
/// run confirmed the sandbox through the public exec call.
fn contains(less: &Verdict, more: &Verdict, less_confirmed: bool) -> Result<(), String> {
    let (ll, ml) = (less.layers(), more.layers());
    match less.status {
        // Healthy without a confirmed identity: the right kind of service answered, perhaps
        // another sandbox's. More evidence may show whose (an identity row, broken), nothing else.
        Status::Healthy if !less_confirmed && identity_rule(more.rule) => {
            if more.status != Status::Broken {
                return Err("an identity row that is not broken".into());
            }
            Ok(())
        }
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
        prop_oneof![
            5 => Just(Reached::Own),
            1 => Just(Reached::OtherByRoute),
            1 => Just(Reached::OtherByLan),
            1 => Just(Reached::Clone),
        ],
    )
        .prop_map(|(outer, faults, token_ok, pct, reached)| World {
            outer,
            faults,
            token_ok,
            pct,
            reached,
        })
}

/// Checks every pair of evidence sets of one world; the first violation, described. `strict`: the
/// pairs are checked in worlds that reach another sandbox too (see `identity_rows_only_narrow`).
fn check_world(c: &Catalog, w: &World, strict: bool) -> Result<(), String> {
    let ctx = Context {
        access_token_sent: false,
        instance: None,
        catalog: c,
        layout: Layout::PerService,
        caddyfile: None,
        connect_to: None,
        deadline: None,
        target_cut: false,
    };
    let sets = Evidence::all();
    let observed: Vec<TargetObservation> = sets.iter().map(|ev| observe(w, c, *ev)).collect();
    let verdicts: Vec<TargetVerdict> = observed.iter().map(|t| diagnose(&ctx, t)).collect();
    // A contradicted identity never yields healthy; a confirmed one changes no verdict.
    for ((ev, t), tv) in sets.iter().zip(&observed).zip(&verdicts) {
        match crate::identity::assess(&t.identity, t.vmid) {
            crate::identity::Assessment::Contradicted { .. } => {
                if let Some(v) = tv.services.iter().find(|v| v.status == Status::Healthy) {
                    return Err(format!(
                        "contradicted identity, yet healthy ({}) with {ev:?}: {}",
                        v.rule, v.summary
                    ));
                }
                if tv.exec.status != Status::Broken {
                    return Err(format!(
                        "contradicted identity, exec channel {} with {ev:?}",
                        tv.exec.status.as_str()
                    ));
                }
            }
            crate::identity::Assessment::Confirmed { .. } => {
                let without = Evidence {
                    identity: false,
                    ..*ev
                };
                let k = sets.iter().position(|e| *e == without).unwrap();
                for (a, b) in verdicts[k].services.iter().zip(&tv.services) {
                    if (a.status, a.layer, a.rule) != (b.status, b.layer, b.rule) {
                        return Err(format!(
                            "a confirmed identity changed {} from {} {} to {} {} with {ev:?}",
                            c.services
                                .iter()
                                .find(|s| a.summary.contains(&s.name))
                                .map_or("?", |s| s.name.as_str()),
                            a.status.as_str(),
                            a.rule,
                            b.status.as_str(),
                            b.rule
                        ));
                    }
                }
            }
            crate::identity::Assessment::Unknown { .. } => {}
        }
    }
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
    if w.reached != Reached::Own && !strict {
        return Ok(());
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
                if let Err(why) = contains(vl, vm, confirmed_through_public_exec(&observed[a])) {
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
        if let Err(e) = check_world(&c, &w, false) {
            prop_assert!(false, "{:?}\n{}", w, e);
        }
    }

    /// The same pairs in worlds that reach another sandbox. Still fails (fix1's report) when the
    /// exec service has a second fault of its own: the exec route names cmux-203 *and* execd
    /// listens on loopback only; the host vantage blames the service, the Caddyfile's route row
    /// Caddy — two true faults, one verdict each, neither containing the other.
    #[test]
    #[ignore = "two faults on one service: route row vs the host vantage's own row (open)"]
    fn identity_rows_only_narrow(w in world(Catalog::embedded().services.len())) {
        let c = Catalog::embedded();
        if let Err(e) = check_world(&c, &w, true) {
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
        reached: Reached::Own,
    };
    check_world(&c, &w, true).unwrap();
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
    for ev in Evidence::all() {
        let v = &diagnose(&ctx, &observe(&w, &c, ev)).services[xterm];
        assert_eq!(v.status, Status::Broken, "{ev:?}: {}", v.summary);
        assert_ne!(v.layer, Some(Layer::Caddy), "{ev:?}: {}", v.summary);
        if ev.host && ev.exec {
            assert_eq!(v.layer, Some(Layer::Service), "{ev:?}: {}", v.summary);
        }
    }
}
