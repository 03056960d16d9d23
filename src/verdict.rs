//! The verdict engine: observations in, verdicts out. Pure: no I/O, no clock, no randomness.
//!
//! Every decision is one row of the decision table in `docs/diagnosis.md`; each row has a stable
//! `rule` id that appears in the JSON output and in the table tests (`verdict_tests.rs`).
//!
//! Every verdict answers two questions apart:
//! - **status**: are users affected? An outage proven from outside (a gateway error, 530/1033, a
//!   refused or timed-out public URL) is `broken` even when the hop is not known;
//! - **layer**: which hop? Pinned only when the evidence separates the hops; otherwise `layer` is
//!   `None` and `candidates` names the hops it can be, most likely first, each with the check that
//!   would tell it apart. More evidence only narrows the candidates (`verdict_props.rs` checks it).
//!
//! Three steps:
//! 1. [`classify`] turns one HTTP outcome into an [`Answer`] relative to the service it was
//!    meant for (healthy, Cloudflare's own error page, Caddy's own 502, the wrong service, ...);
//! 2. `facts` computes once what the whole target proves (the exec round trip, the other
//!    services, the origin check, the host vantage);
//! 3. [`diagnose`] combines, per service, the external and internal answers with those facts into a
//!    [`Verdict`] (the `decide*` functions, one [`Subject`] each).

use serde::Serialize;

use crate::catalog::{Catalog, Service};
use crate::made_by::{
    cloudflare_error_code, cloudflared_catch_all, edge_gate, made_by_cloudflare, Gate,
};
use crate::observation::{
    ExecRun, FailureKind, Probe, RouteFrom, RouteObservation, ServiceObservation, TargetObservation,
};

/// Verdict status: are users affected? Stable names: they appear in JSON, JUnit and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The service gives its healthy answer where users reach it.
    Healthy,
    /// An optional service that is not running (normal), or an optional service that could not be
    /// checked.
    Skipped,
    /// It could not be told whether users are affected (e.g. an internal-only service while the
    /// exec channel is down, or a probe cut by the run's deadline).
    Inconclusive,
    /// Users get an answer, but a wrong one in part (a missing CORS header).
    Degraded,
    /// Users are affected: the service fails where they reach it (or inside, for internal ones).
    Broken,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Skipped => "skipped",
            Status::Inconclusive => "inconclusive",
            Status::Degraded => "degraded",
            Status::Broken => "broken",
        }
    }
}

/// A hop of the chain: what a verdict blames, or one of its candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layer {
    /// Cloudflare edge, DNS, and the tunnel (cloudflared and its origin setting).
    Tunnel,
    /// Caddy on the host and its routes.
    Caddy,
    /// The container itself: stopped, or not reachable from the host under `cmux-{vmid}.lan`.
    Container,
    /// The service process inside the container.
    Service,
    /// pvediag's own input: `--domain` or `--connect-to` point somewhere else than the sandbox's
    /// edge. Only ever a candidate, never pinned.
    Input,
    /// The zone's security settings at Cloudflare's edge (WAF and bot rules, Access): a gate that
    /// stops a plain HTTP client before the tunnel. Only ever a candidate, never pinned.
    Edge,
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Tunnel => "tunnel",
            Layer::Caddy => "caddy",
            Layer::Container => "container",
            Layer::Service => "service",
            Layer::Input => "input",
            Layer::Edge => "edge",
        }
    }
}

/// One hop a verdict cannot rule out, and what would tell it apart from the others.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Candidate {
    pub(crate) layer: Layer,
    /// The option to add or the command to run (on the PVE host, in the container) that confirms or
    /// rules out this hop.
    pub(crate) check: String,
}

/// One service's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    /// Are users affected?
    pub status: Status,
    /// Which hop: set when the evidence pins one; `None` otherwise (then see `candidates`).
    pub layer: Option<Layer>,
    /// When `layer` is `None` and the status is not healthy/skipped: the hops the evidence cannot
    /// tell apart, most likely first. Empty when a layer is pinned.
    pub(crate) candidates: Vec<Candidate>,
    pub summary: String,
    pub evidence: Vec<String>,
    pub next_step: Option<String>,
    /// The decision-table row (see docs/diagnosis.md).
    pub rule: &'static str,
}

impl Verdict {
    /// The hops this verdict allows: the pinned layer, or the candidates.
    pub fn layers(&self) -> Vec<Layer> {
        match self.layer {
            Some(l) => vec![l],
            None => self.candidates.iter().map(|c| c.layer).collect(),
        }
    }

    /// `caddy`, `caddy|service|container` (candidates), or "" when no hop is named.
    pub(crate) fn layer_label(&self) -> String {
        self.layers()
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join("|")
    }
}

/// The exec channel's own verdict: whether the internal view could be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelVerdict {
    /// `healthy`: internal probes ran; `inconclusive`: they could not run (reason in summary).
    pub status: Status,
    pub summary: String,
    pub(crate) next_step: Option<String>,
}

/// Verdicts for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetVerdict {
    pub vmid: u32,
    pub exec: ChannelVerdict,
    pub services: Vec<Verdict>,
    /// A gate of the edge stopped public requests (said once for the target).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) edge_gate: Option<GateVerdict>,
}

/// A gate of Cloudflare's edge (challenge, Access, block page) stopped pvediag's public requests:
/// whether users are affected is not proven (a browser may pass), and the candidates are the zone's
/// security settings, not the tunnel, Caddy, the container or a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct GateVerdict {
    pub(crate) gate: Gate,
    pub(crate) summary: String,
    /// One of the gated answers, as observed.
    pub(crate) evidence: Vec<String>,
    /// The services whose public URL the gate answered.
    pub(crate) services: Vec<String>,
    pub(crate) next_step: String,
}

impl TargetVerdict {
    /// The worst status of the target (channel included).
    pub(crate) fn worst(&self) -> Status {
        self.services
            .iter()
            .map(|v| v.status)
            .chain(std::iter::once(self.exec.status))
            .max()
            .unwrap_or(Status::Healthy)
    }
}

/// The routing layout lives with the URL template that decides it.
pub(crate) use crate::target::Layout;

/// The Caddyfile on a PVE host, named in next steps when no Caddyfile was read (to find the line).
pub(crate) const HOST_CADDYFILE: &str = "/etc/caddy/Caddyfile.cmux";

/// What the engine knows besides the observations.
#[derive(Debug, Clone)]
pub(crate) struct Context<'a> {
    pub(crate) catalog: &'a Catalog,
    pub(crate) layout: Layout,
    /// The Caddyfile that was read, as its real path (local, or on the host when read there);
    /// `None` when none was read: next steps then say how to find the line, never edit by number.
    pub(crate) caddyfile: Option<&'a str>,
    /// The address every public hostname was dialled at (`--connect-to`), if one was forced.
    pub(crate) connect_to: Option<&'a str>,
    /// The container's name on the LAN (`{instance}` of the 2026 layout, e.g. `pvelxc-1a2b3c4d`);
    /// None: `cmux-{vmid}`.
    pub(crate) instance: Option<&'a str>,
    /// The run's deadline, when it limited the probes (their timeouts shortened below
    /// `--timeout`, or the target cut): a probe that timed out then was cut by the operator's
    /// limit, not failed by the chain.
    pub(crate) deadline: Option<std::time::Duration>,
    /// The deadline cut this target before its probes ended: the probes not run were cut.
    pub(crate) target_cut: bool,
    /// An Access service token was sent with the public requests.
    pub(crate) access_token_sent: bool,
}

impl Context<'_> {
    /// The container's name on the LAN, as Caddy dials it (`NAME.lan`).
    pub(crate) fn instance_name(&self, vmid: u32) -> String {
        self.instance
            .map(str::to_string)
            .unwrap_or_else(|| format!("cmux-{vmid}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: classify one answer

/// What one probe outcome means for the service it was aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// Accepted status, required headers present, fingerprint matches.
    Healthy,
    /// The right service answered (fingerprint matches) but required headers are missing.
    MissingHeaders(Vec<String>),
    /// The right service answered, but a required header came more than once (2026 layout: Caddy
    /// sets `access-control-allow-origin` and the upstream's own was not dropped): browsers reject
    /// a response with two `access-control-allow-origin` values.
    DoubledHeaders(Vec<String>),
    /// An accepted status whose body is not this service's: another service answered.
    WrongService { reason: String, empty: bool },
    /// A status the service does not give when healthy, not made by Cloudflare, cloudflared or
    /// Caddy.
    BadStatus(u16),
    /// Cloudflare's 530 (error 1033): no healthy cloudflared connector for the tunnel.
    TunnelDown,
    /// An error page Cloudflare made itself (502, 504, 52x ...): something behind the edge failed.
    EdgeError { status: u16, code: Option<String> },
    /// cloudflared's catch-all: 404 with an empty body (no ingress rule for the hostname).
    NoIngress,
    /// Caddy's own 502/504 with an empty body: the upstream could not be dialled.
    CaddyBadGateway(u16),
    /// Caddy's catch-all for a hostname that matches no route.
    CaddyNoRoute,
    /// No HTTP answer.
    Unreachable(FailureKind),
    /// A gate of Cloudflare's edge answered (challenge, Access, block page): nothing behind the
    /// edge was reached, and no service is healthy through it.
    EdgeGate(Gate),
    /// Not probed.
    NotRun,
}

impl Answer {
    /// Cloudflare or Caddy failed to reach the upstream: the origin chain is broken somewhere.
    fn is_gateway_error(&self) -> bool {
        matches!(self, Answer::EdgeError { .. } | Answer::CaddyBadGateway(_))
    }
}

/// Classifies one probe outcome against the service it was meant for.
/// [`classify`] for an answer no Caddy stands in front of (the internal probe at `127.0.0.1`, the
/// host's probe of the upstream): an empty 502/504 there is the service's own (a front such as
/// cmux-cdp-proxy, Go's reverse proxy, answers its back end's death so), never Caddy's.
pub(crate) fn classify_direct(service: &Service, probe: &Probe) -> Answer {
    match classify(service, probe) {
        Answer::CaddyBadGateway(st) => Answer::BadStatus(st),
        a => a,
    }
}

pub(crate) fn classify(service: &Service, probe: &Probe) -> Answer {
    let r = match probe {
        Probe::NotRun { .. } => return Answer::NotRun,
        Probe::Failed { kind, .. } => return Answer::Unreachable(*kind),
        Probe::Response { response, .. } => response,
    };
    let body_empty = r.body.trim().is_empty();
    if let Some(g) = edge_gate(r) {
        return Answer::EdgeGate(g);
    }
    if made_by_cloudflare(r) {
        let code = cloudflare_error_code(&r.body);
        if r.status == 530 || code.as_deref() == Some("1033") {
            return Answer::TunnelDown;
        }
        return Answer::EdgeError {
            status: r.status,
            code,
        };
    }
    if cloudflared_catch_all(r) {
        return Answer::NoIngress;
    }
    if (r.status == 502 || r.status == 504) && body_empty {
        return Answer::CaddyBadGateway(r.status);
    }
    if r.status == 404 && r.body.starts_with("cmux sandbox not found") {
        return Answer::CaddyNoRoute;
    }
    if !service.healthy.status_ok(r.status) {
        return Answer::BadStatus(r.status);
    }
    if let Err(reason) = service
        .healthy
        .fingerprint
        .check(r.header("content-type"), &r.body)
    {
        if body_empty && r.status == 200 {
            return Answer::CaddyNoRoute;
        }
        return Answer::WrongService {
            reason,
            empty: body_empty,
        };
    }
    let missing: Vec<String> = service
        .healthy
        .headers
        .iter()
        .filter(|h| !r.has_header(h))
        .cloned()
        .collect();
    if !missing.is_empty() {
        return Answer::MissingHeaders(missing);
    }
    let doubled: Vec<String> = service
        .healthy
        .headers
        .iter()
        .filter_map(|h| {
            let values: Vec<&str> = r
                .headers
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(h))
                .map(|(_, v)| v.as_str())
                .collect();
            (values.len() > 1)
                .then(|| format!("{h} ({} values: {})", values.len(), values.join(" and ")))
        })
        .collect();
    if !doubled.is_empty() {
        return Answer::DoubledHeaders(doubled);
    }
    Answer::Healthy
}

// ---------------------------------------------------------------------------------------------
// Evidence wording

fn short_body(body: &str) -> String {
    let one_line: String = body
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let t = one_line.trim();
    if t.chars().count() > 80 {
        format!("{}…", t.chars().take(80).collect::<String>())
    } else {
        t.to_string()
    }
}

/// One line describing a probe outcome: `502 (server: cloudflare, cf-ray …) "error code: 502"`.
pub(crate) fn describe_probe(p: &Probe) -> String {
    match p {
        Probe::NotRun { reason } => format!("not run ({reason})"),
        Probe::Failed {
            kind,
            message,
            elapsed_ms,
        } => format!(
            "no answer: {} — {message} (after {elapsed_ms} ms)",
            kind.as_str()
        ),
        Probe::Response {
            response,
            elapsed_ms,
        } => {
            let mut s = format!("{}", response.status);
            let mut who = Vec::new();
            for h in [
                "server",
                "cf-ray",
                "cf-mitigated",
                "location",
                "content-type",
                "access-control-allow-origin",
            ] {
                if let Some(v) = response.header(h) {
                    who.push(format!("{h}: {v}"));
                }
            }
            if !who.is_empty() {
                s.push_str(&format!(" ({})", who.join(", ")));
            }
            let b = short_body(&response.body);
            if b.is_empty() {
                s.push_str(", empty body");
            } else {
                s.push_str(&format!(", body {b:?}"));
            }
            s.push_str(&format!(" in {elapsed_ms} ms"));
            s
        }
    }
}

fn describe_answer(a: &Answer, s: &Service) -> String {
    match a {
        Answer::Healthy => format!("healthy answer from {}", service_label(s)),
        Answer::MissingHeaders(h) => {
            format!("right service, but header(s) missing: {}", h.join(", "))
        }
        Answer::DoubledHeaders(h) => {
            format!(
                "right service, but header(s) sent more than once: {}",
                h.join(", ")
            )
        }
        Answer::WrongService { reason, .. } => {
            format!("not {}'s answer: {reason}", service_label(s))
        }
        Answer::BadStatus(st) => format!("status {st}, expected {}", s.healthy.describe_statuses()),
        Answer::TunnelDown => {
            "Cloudflare 530 / error 1033: the tunnel has no healthy connector".into()
        }
        Answer::EdgeError { status, code } => format!(
            "Cloudflare's own {status} page (error code {}): the origin behind the tunnel failed",
            code.as_deref().unwrap_or("?")
        ),
        Answer::NoIngress => "empty 404: cloudflared's catch-all, no ingress rule matched".into(),
        Answer::CaddyBadGateway(st) => {
            format!("Caddy's own empty {st}: Caddy could not reach the upstream")
        }
        Answer::CaddyNoRoute => "Caddy's catch-all answer: no route matches this hostname".into(),
        Answer::Unreachable(k) => format!("no HTTP answer ({})", k.as_str()),
        Answer::EdgeGate(g) => format!("{}: made by the edge, not by the sandbox", g.name()),
        Answer::NotRun => "not probed".into(),
    }
}

fn service_label(s: &Service) -> String {
    if s.unit.is_empty() {
        s.name.clone()
    } else {
        s.unit.clone()
    }
}

/// The external answer of a service. The exec service's own public probe is not sent when the exec
/// call went through the same public URL and reached cmux-execd (one request per fact,
/// [`crate::probe`]): that call is execd answering through tunnel and Caddy, which is what its
/// `/healthz` through the tunnel would have shown.
pub(crate) fn external_answer(
    t: &TargetObservation,
    s: &Service,
    so: &ServiceObservation,
) -> Answer {
    let a = classify(s, &so.external);
    if a == Answer::NotRun
        && s.name == crate::catalog::EXEC_SERVICE
        && t.exec.via_public_url
        && t.exec.run.reached_execd()
    {
        return Answer::Healthy;
    }
    a
}

// ---------------------------------------------------------------------------------------------
// Step 2: target-level facts

/// What the whole target proves, computed once.
struct Facts {
    vmid: u32,
    /// A request through the public chain reached something inside this container.
    chain_reaches_container: Option<String>,
    /// Every external probe that ran got the tunnel-down answer.
    tunnel_down: bool,
    /// Caddy itself answered the origin check (edge, tunnel and Caddy work).
    origin_ok: Option<bool>,
    /// Why internal probes are unavailable, when they are.
    internal_unavailable: Option<String>,
    /// The host vantage ran and reached no port of the container at all (why, when so).
    host_lost_container: Option<String>,
    /// Every public hostname failed the same way before any HTTP answer (DNS or connect).
    public_all_failed: Option<FailureKind>,
    /// In the same run some public requests got Cloudflare's 530 / error 1033 and others got
    /// through the tunnel: its connectors flap (or some names lead to another tunnel).
    tunnel_flapping: bool,
    /// The origin check failed while other requests got through the same tunnel and Caddy: its
    /// hostname is routed elsewhere (a catch-all route), so its failure proves nothing.
    origin_contradicted: Option<String>,
}

/// What the whole target proves (step 2).
fn facts(ctx: &Context, t: &TargetObservation) -> Facts {
    let mut chain = None;
    if t.exec.via_public_url && t.exec.run.reached_execd() {
        chain = Some(format!(
            "the exec call through the same tunnel and Caddy reached cmux-execd in {}",
            ctx.instance_name(t.vmid)
        ));
    }
    let mut externals = 0usize;
    let mut tunnel_down = 0usize;
    // Services whose public request got through the tunnel (an answer from behind the edge).
    let mut through_tunnel = false;
    let mut failures = Vec::new();
    for so in &t.services {
        let Some(svc) = ctx.catalog.get(&so.name) else {
            continue;
        };
        let a = classify(svc, &so.external);
        if a != Answer::NotRun {
            externals += 1;
            failures.push(so.external.failure());
        }
        if a == Answer::TunnelDown {
            tunnel_down += 1;
        }
        through_tunnel |= so
            .external
            .response()
            .is_some_and(|r| !made_by_cloudflare(r));
        if chain.is_none()
            && matches!(
                a,
                Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_)
            )
        {
            chain = Some(format!(
                "{} answered correctly through the same tunnel and Caddy",
                so.name
            ));
        }
    }
    let public_all_failed = match failures.first() {
        Some(Some(
            k @ (FailureKind::Dns
            | FailureKind::Refused
            | FailureKind::Certificate
            | FailureKind::Tls),
        )) if failures.len() > 1 && failures.iter().all(|f| *f == Some(*k)) => Some(*k),
        _ => None,
    };
    let mut origin_ok = t.origin.as_ref().and_then(|o| match &o.probe {
        Probe::Response { response, .. } if edge_gate(response).is_some() => None,
        Probe::Response { response, .. } => {
            Some(!made_by_cloudflare(response) && !cloudflared_catch_all(response))
        }
        // A timeout under a shortened time limit is the deadline's, not the chain's.
        Probe::Failed {
            kind: FailureKind::Timeout,
            ..
        } if ctx.deadline.is_some() => None,
        Probe::Failed { .. } => Some(false),
        Probe::NotRun { .. } => None,
    });
    // The services' own answers are the witnesses (at least one 530 and one through the tunnel);
    // the origin check and the exec call do not count alone.
    let tunnel_flapping = through_tunnel && tunnel_down > 0;
    // A failed origin check next to requests that reached the container through the same tunnel
    // and Caddy: the check's hostname is answered by something else than Caddy's catch-all.
    let mut origin_contradicted = None;
    if origin_ok == Some(false) && !tunnel_flapping {
        if let (Some(c), Some(o)) = (&chain, &t.origin) {
            origin_contradicted = Some(format!(
                "the origin check {} failed ({}), but {c}: Caddy does not answer that hostname \
                 itself (a catch-all route sends it elsewhere), so it proves nothing",
                o.url,
                describe_probe(&o.probe)
            ));
            origin_ok = None;
        }
    }
    if tunnel_flapping {
        // Its 530 (or its answer) is the flapping tunnel's, not Caddy's state.
        origin_ok = None;
    }
    let internal_unavailable = if t.exec.internal_ran() {
        None
    } else {
        let mut why = channel_problem(&t.exec.run, t.exec.token_sent);
        if let Some(p) = &t.exec.pct {
            why.push_str(&format!(
                "; pct exec ({}) failed too: {}",
                p.vantage,
                channel_problem(&p.run, false)
            ));
        }
        Some(why)
    };
    let host_lost_container = t.host.as_ref().and_then(|h| {
        if !matches!(h.run, ExecRun::Completed { .. }) || h.services.is_empty() {
            return None;
        }
        let kinds: Vec<Option<FailureKind>> =
            h.services.iter().map(|s| s.upstream.failure()).collect();
        let unreachable = |k: &Option<FailureKind>| {
            matches!(k, Some(FailureKind::Dns | FailureKind::Timeout))
                || (internal_unavailable.is_some()
                    && matches!(k, Some(FailureKind::Refused | FailureKind::Other)))
        };
        kinds.iter().all(unreachable).then(|| {
            format!(
                "from the host ({}), no port of {}.lan answers ({}): the container is \
                    stopped or cut off",
                h.vantage,
                ctx.instance_name(t.vmid),
                kinds
                    .iter()
                    .flatten()
                    .map(|k| k.as_str())
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
    });
    Facts {
        vmid: t.vmid,
        chain_reaches_container: chain,
        tunnel_down: externals > 0 && tunnel_down == externals,
        origin_ok,
        internal_unavailable,
        host_lost_container,
        public_all_failed,
        tunnel_flapping,
        origin_contradicted,
    }
}

fn channel_problem(run: &ExecRun, token_sent: bool) -> String {
    match run {
        ExecRun::Completed { .. } => "ran".into(),
        ExecRun::Incomplete { .. } => "the exec stream was cut by the deadline".into(),
        ExecRun::Rejected { status: 401, .. } if token_sent => {
            "cmux-execd rejected the exec token (401 Unauthorized)".into()
        }
        ExecRun::Rejected { status: 401, .. } => {
            "cmux-execd requires a token and none was given (401 Unauthorized)".into()
        }
        ExecRun::Rejected {
            status,
            from_edge: true,
            ..
        } => format!("the exec call got {status} from the edge, not from cmux-execd"),
        ExecRun::Rejected { status, body, .. } => format!(
            "cmux-execd answered {status} {:?} to the exec call",
            short_body(body)
        ),
        ExecRun::Gated { gate, status } => format!(
            "the exec call got {} ({status}) at Cloudflare's edge: it never reached cmux-execd",
            gate.name()
        ),
        ExecRun::Failed { kind, message } => {
            format!("the exec call got no answer ({}: {message})", kind.as_str())
        }
        ExecRun::NotRun { reason } => format!("the exec call was not made ({reason})"),
    }
}

/// The exec channel verdict.
pub(crate) fn channel_verdict(t: &TargetObservation) -> ChannelVerdict {
    if let Some(p) = &t.exec.pct {
        if let ExecRun::Completed { exit_code, .. } = &p.run {
            return ChannelVerdict {
                status: Status::Healthy,
                summary: format!(
                    "the exec endpoint could not be used ({}); internal probes ran through pct \
                        exec ({}, exit {})",
                    channel_problem(&t.exec.run, t.exec.token_sent),
                    p.vantage,
                    exit_code.map_or("missing".to_string(), |c| c.to_string())
                ),
                next_step: None,
            };
        }
    }
    match &t.exec.run {
        ExecRun::Completed {
            exit_code,
            used_fallback,
            notes,
            ..
        } if exit_code.is_none()
            && t.services
                .iter()
                .all(|s| matches!(s.internal, Probe::NotRun { .. })) =>
        {
            // Status 200 but not one record and no exit: not execd's stream (an HTML page, ...).
            let mut summary = "internal probes unavailable: the exec answer held no record and \
                no exit event (not cmux-execd's JSON-lines stream?)"
                .to_string();
            if !notes.is_empty() {
                summary.push_str(&format!("; {}", notes.join("; ")));
            }
            ChannelVerdict {
                status: Status::Inconclusive,
                summary,
                next_step: None,
            }
        }
        ExecRun::Completed {
            exit_code,
            used_fallback,
            notes,
            ..
        } => {
            let mut summary = format!(
                "internal probes ran in one exec round trip (exit {})",
                exit_code.map_or("missing".to_string(), |c| c.to_string())
            );
            if *used_fallback {
                summary.push_str("; curl is missing in the container, bash /dev/tcp fallback used");
            }
            if !notes.is_empty() {
                summary.push_str(&format!("; {}", notes.join("; ")));
            }
            ChannelVerdict {
                status: Status::Healthy,
                summary,
                next_step: None,
            }
        }
        other => {
            let next = match other {
                ExecRun::Rejected { status: 401, .. } => Some(format!(
                    "give the container's token: export CMUX_EXECD_AUTH_TOKEN=... or \
                     --exec-token-file FILE (it is CMUX_EXECD_AUTH_TOKEN in `pct config {}` env, \
                     or /root/.worker-auth-token inside)",
                    t.vmid
                )),
                ExecRun::Gated { .. } => Some(format!(
                    "check the services from inside without the edge: --exec-url \
                        http://cmux-{}.lan:39375 from the PVE host{}",
                    t.vmid,
                    if t.exec.pct.is_some() {
                        ""
                    } else {
                        ", or --on-host (pct exec)"
                    }
                )),
                ExecRun::Rejected {
                    status: 415 | 400, ..
                } => Some(
                    "this cmux-execd speaks another protocol version: report it with the output \
                        of --format json"
                        .into(),
                ),
                _ => None,
            };
            ChannelVerdict {
                status: Status::Inconclusive,
                summary: format!(
                    "internal probes unavailable: {}",
                    channel_problem(other, t.exec.token_sent)
                ),
                next_step: next,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Step 3: per-service decision

/// One decision's outcome, before the evidence lines are added.
struct Row {
    status: Status,
    layer: Option<Layer>,
    /// Candidates, most likely first; their checks are filled in by [`diagnose`].
    candidates: Vec<Layer>,
    summary: String,
    next_step: Option<String>,
    rule: &'static str,
}

/// A row that pins `layer` (or names none, for healthy and skipped).
fn row(status: Status, layer: Option<Layer>, rule: &'static str, summary: String) -> Row {
    Row {
        status,
        layer,
        candidates: Vec::new(),
        summary,
        next_step: None,
        rule,
    }
}

/// Users are affected, and the evidence cannot tell these hops apart (most likely first).
fn broken_between(rule: &'static str, candidates: Vec<Layer>, summary: String) -> Row {
    Row {
        status: Status::Broken,
        layer: None,
        candidates,
        summary,
        next_step: None,
        rule,
    }
}

/// Whether users are affected cannot be told; `candidates` are the hops that may be at fault.
fn inconclusive(rule: &'static str, candidates: Vec<Layer>, summary: String) -> Row {
    Row {
        status: Status::Inconclusive,
        layer: None,
        candidates,
        summary,
        next_step: None,
        rule,
    }
}

impl Row {
    fn next(mut self, step: impl Into<String>) -> Row {
        self.next_step = Some(step.into());
        self
    }

    fn with_status(mut self, status: Status) -> Row {
        self.status = status;
        self
    }
}

/// Everything one decision looks at: the context, the target's facts, one service and its two
/// classified answers (`e` external, `i` internal).
struct Subject<'a> {
    ctx: &'a Context<'a>,
    f: &'a Facts,
    t: &'a TargetObservation,
    s: &'a Service,
    so: &'a ServiceObservation,
    e: Answer,
    i: Answer,
    /// The run's deadline cut what decides this service (its public probe, or the internal one
    /// of a service without a public URL).
    cut: bool,
}

/// Whether the run's deadline, not the chain, ended this probe.
fn cut_by_deadline(ctx: &Context, t: &TargetObservation, p: &Probe, internal: bool) -> bool {
    match p {
        Probe::Failed {
            kind: FailureKind::Timeout,
            ..
        } => ctx.deadline.is_some(),
        Probe::NotRun { .. } => {
            let exec_cut = match &t.exec.run {
                ExecRun::Incomplete { .. } => true,
                ExecRun::Failed {
                    kind: FailureKind::Timeout,
                    ..
                } => ctx.deadline.is_some() && !t.exec.internal_ran(),
                _ => false,
            };
            ctx.target_cut || (internal && exec_cut)
        }
        _ => false,
    }
}

impl Subject<'_> {
    fn vmid(&self) -> u32 {
        self.f.vmid
    }
    fn port(&self) -> u16 {
        self.s.port
    }
    fn label(&self) -> String {
        service_label(self.s)
    }
    fn host(&self) -> String {
        host_of(&self.so.url)
    }
    fn route(&self) -> Option<&RouteObservation> {
        route_for(self.t, &self.s.name)
    }
    fn internal_known(&self) -> bool {
        !matches!(self.i, Answer::NotRun)
    }
    /// Edge, tunnel or Caddy is proven down for every hostname (origin check failed, or 530
    /// everywhere).
    fn outer_down(&self) -> bool {
        self.f.origin_ok == Some(false) || self.f.tunnel_down
    }

    /// What would tell `layer` apart from the other candidates.
    fn check_for(&self, layer: Layer) -> String {
        let (vmid, p, path, host) = (self.vmid(), self.port(), &self.s.probe.path, self.host());
        let ct = self.ctx.instance_name(vmid);
        match layer {
            Layer::Tunnel => "on the PVE host: curl -s http://127.0.0.1:20241/ready \
                (cloudflared's edge connection); or add --on-host / --ssh USER@HOST to probe \
                each hop from the host"
                .into(),
            Layer::Caddy if self.outer_down() => "on the PVE host: systemctl status caddy-cmux; \
                curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/ (or add \
                --on-host)"
                .into(),
            Layer::Caddy => match self.route() {
                Some(RouteObservation {
                    from: Some(RouteFrom::Caddyfile),
                    source,
                    ..
                }) => format!(
                    "Caddy may run another configuration than the file read ({}): add \
                        --caddy-admin http://127.0.0.1:2019 or --on-host to read what Caddy has \
                        loaded",
                    source.as_deref().unwrap_or("the Caddyfile")
                ),
                Some(_) => format!(
                    "on the PVE host: curl -sS -i -H 'Host: {host}' \
                    http://127.0.0.1:8080{path}"
                ),
                None => format!(
                    "add --caddyfile {HOST_CADDYFILE} (or --caddy-admin, --on-host) to read \
                        Caddy's route for {host}; on the PVE host: curl -sS -i -H 'Host: \
                        {host}' http://127.0.0.1:8080{path}"
                ),
            },
            Layer::Container => format!(
                "on the PVE host: pct status {vmid}; curl -sS -i \
                    http://{ct}.lan:{p}{path} (or add --on-host)"
            ),
            Layer::Service => {
                if self.internal_known() {
                    format!(
                        "pct exec {vmid} -- ss -ltnp 'sport = :{p}' (it must listen on \
                        0.0.0.0:{p}, not 127.0.0.1 only)"
                    )
                } else {
                    format!(
                        "the internal view: give the exec token (--exec-token-file) or run on \
                            the host (--on-host / --ssh); by hand: pct exec {vmid} -- curl -sS \
                            -i http://127.0.0.1:{p}{path}"
                    )
                }
            }
            Layer::Edge => match &self.e {
                Answer::EdgeGate(g) => gate_fix(self.ctx, g),
                _ => "the zone's security settings (WAF, bot rules, Access): see the edge gate"
                    .into(),
            },
            Layer::Input if self.f.public_all_failed == Some(FailureKind::Dns) => format!(
                "no public hostname resolves: check --domain (these names end in {}; dig +short \
                 {host})",
                host.split_once('.').map_or(host.as_str(), |(_, d)| d)
            ),
            Layer::Input => format!(
                "every public hostname failed the same way ({}) when dialled at {}: check \
                 --domain (these names end in {}) and --connect-to (dig +short {host})",
                self.f.public_all_failed.map_or("?", |k| k.as_str()),
                match dials(self.t).1 {
                    a if a.is_empty() => self
                        .ctx
                        .connect_to
                        .unwrap_or("the address DNS gives")
                        .to_string(),
                    a => first_three(&a),
                },
                host.split_once('.').map_or(host.as_str(), |(_, d)| d)
            ),
        }
    }
}

fn host_of(url: &Option<String>) -> String {
    url.as_deref()
        .and_then(|u| url::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "its hostname".into())
}

fn svc_next(s: &Service, vmid: u32) -> String {
    if s.unit.is_empty() {
        format!(
            "start it inside the container; check with: pct exec {vmid} -- curl -sS -i \
                http://127.0.0.1:{}{}",
            s.port, s.probe.path
        )
    } else {
        format!(
            "pct exec {vmid} -- systemctl status {u}; then pct exec {vmid} -- systemctl restart \
                {u}",
            u = s.unit
        )
    }
}

fn tunnel_next() -> String {
    "on the PVE host: systemctl status cloudflared; journalctl -u cloudflared -n 50; curl -s \
        http://127.0.0.1:20241/ready"
        .into()
}

/// `file` and `line` of a route read from a Caddyfile.
fn file_line(route: &RouteObservation) -> Option<(&str, usize)> {
    if route.from != Some(RouteFrom::Caddyfile) {
        return None;
    }
    let (file, line) = route.source.as_deref()?.rsplit_once(':')?;
    Some((file, line.parse().ok()?))
}

/// How to fix Caddy's route for `s`: an edit of the file that was read (its real path and line),
/// or, without one, how to find the line in the host's Caddyfile.
fn caddy_route_next(x: &Subject) -> String {
    let (s, vmid, port) = (x.s, x.vmid(), x.port());
    let route = x.route();
    if let Some(
        r @ RouteObservation {
            upstream_host: Some(h),
            upstream_port: Some(rp),
            ..
        },
    ) = route
    {
        if *rp != port {
            if let Some((name, line)) = file_line(r) {
                // The path really read (the route's source names the file only).
                let file = x.ctx.caddyfile.unwrap_or(name);
                return format!(
                    "edit {file} line {line}: the route dials {h}:{rp} but must dial port \
                        {port} — sed -i '{line}s/:{rp}/:{port}/' {file}; then systemctl reload \
                        caddy-cmux on the PVE host"
                );
            }
            return format!(
                "Caddy's loaded route ({}) dials {h}:{rp}: on the PVE host, find it with grep \
                    -n ':{rp}' {cf}, make it dial port {port}, then systemctl reload caddy-cmux",
                r.source.as_deref().unwrap_or("admin API"),
                cf = x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE),
            );
        }
    }
    let cf = x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE);
    match x.ctx.layout {
        Layout::PerService => format!(
            "on the PVE host: grep -n -A3 '@{name}' {cf} — the route for {name} must be \
                `reverse_proxy cmux-{{re.vmid.1}}.lan:{port}`; then systemctl reload caddy-cmux",
            name = s.name,
        ),
        Layout::PortInHost => {
            let ct = x.ctx.instance_name(vmid);
            let want = format!("{ct}.lan");
            match route {
                // Caddy's configuration was read and no rule matches the public name.
                Some(RouteObservation {
                    upstream_host: None,
                    host,
                    ..
                }) => format!(
                    "the generic rule's regexp does not match {host}: on the PVE host: grep -n \
                     'header_regexp' {cf} — it must be ^port-(\\d+)-([a-z0-9-]+)\\.; then \
                     systemctl reload caddy-cmux"
                ),
                // The generic rule dials another name than the container's.
                Some(RouteObservation {
                    upstream_host: Some(h),
                    source,
                    ..
                }) if *h != want => format!(
                    "the generic rule ({}) dials {h}: it must dial {want}:{port} (reverse_proxy \
                     {{re.service.2}}.lan:{{re.service.1}}) in {cf}; then systemctl reload \
                     caddy-cmux",
                    source.as_deref().unwrap_or("its line"),
                ),
                _ => format!(
                    "the generic rule{} dials {ct}.lan:{port}: check the service listens on all \
                     addresses, not only 127.0.0.1: pct exec {vmid} -- ss -ltnp 'sport = \
                     :{port}'; and grep -n 'reverse_proxy' {cf}",
                    route
                        .and_then(|r| r.source.as_deref())
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default(),
                ),
            }
        }
    }
}

fn route_for<'t>(t: &'t TargetObservation, service: &str) -> Option<&'t RouteObservation> {
    t.routes.iter().find(|r| r.service == service)
}

/// ` (source)` of a route, for summaries.
fn route_src(r: &RouteObservation) -> String {
    r.source
        .as_ref()
        .map(|s| format!(" ({s})"))
        .unwrap_or_default()
}

/// The decision for one service.
fn decide(x: &Subject) -> Row {
    let (s, vmid, p) = (x.s, x.vmid(), x.port());
    let (label, host) = (x.label(), x.host());

    // A flapping tunnel: this answer (healthy or 530) was luck of the draw; users get either.
    if x.f.tunnel_flapping && matches!(x.e, Answer::Healthy | Answer::TunnelDown) {
        // The host's view of cloudflared, when there is one, names the tunnel's state itself.
        if let Some(r) = decide_host_tunnel(x) {
            return r;
        }
        let (status, summary) = if x.e == Answer::TunnelDown {
            (
                Status::Broken,
                format!(
                    "Cloudflare answered 530 / error 1033 for {host} while other requests of \
                     this run got through the same tunnel: its connectors flap, or {host} \
                     leads to another tunnel"
                ),
            )
        } else {
            (
                Status::Degraded,
                format!(
                    "{} answered through the tunnel, but Cloudflare answered 530 / error 1033 \
                     to other requests of this run: the tunnel's connectors flap (or those \
                     names lead to another tunnel), so users get errors intermittently",
                    s.name
                ),
            )
        };
        return row(status, Some(Layer::Tunnel), "tunnel-flapping", summary).next(
            "on the PVE host: journalctl -u cloudflared --since -15min (connections registered \
             and lost); cloudflared tunnel info <tunnel>; check that every connector serves the \
             same tunnel and every name's DNS record points to it",
        );
    }

    // A healthy public answer wins over anything else: the public URL working is the goal.
    if x.e == Answer::Healthy {
        return row(
            Status::Healthy,
            None,
            "healthy",
            format!("{} answers correctly through the tunnel", s.name),
        );
    }

    // The operator's own limit: a check the deadline cut blames no hop (unless the internal view,
    // which did finish, proves the service itself broken).
    if x.cut {
        return service_fault(x).unwrap_or_else(|| cut_row(x));
    }

    // A gate of the edge answered: nothing behind it was observed from outside.
    if let Answer::EdgeGate(g) = &x.e {
        return decide_gate(x, g);
    }

    // The outermost hop first: cloudflared as the host sees it, then a failure at the edge itself.
    if !matches!(x.e, Answer::NotRun) {
        if let Some(r) = decide_host_tunnel(x) {
            return r;
        }
    }
    match &x.e {
        Answer::TunnelDown => {
            return row(
                Status::Broken,
                Some(Layer::Tunnel),
                "tunnel-down",
                if x.f.tunnel_down {
                    "Cloudflare answers 530 / error 1033 for every hostname: the tunnel has no \
                        healthy cloudflared connector"
                        .into()
                } else {
                    format!(
                        "Cloudflare answers 530 / error 1033 for {host}: no healthy \
                        cloudflared connector serves it"
                    )
                },
            )
            .next(tunnel_next())
        }
        Answer::NoIngress => {
            return row(
                Status::Broken,
                Some(Layer::Tunnel),
                "tunnel-no-ingress",
                format!(
                    "cloudflared has no ingress rule for {host} (its catch-all answered an \
                    empty 404)"
                ),
            )
            .next(format!(
                "on the PVE host: check the ingress list of /etc/cloudflared/config.yml has a \
                    rule for {host} (or its wildcard) to http://localhost:8080, then systemctl \
                    restart cloudflared"
            ))
        }
        Answer::Unreachable(
            k @ (FailureKind::Dns
            | FailureKind::Refused
            | FailureKind::Certificate
            | FailureKind::Tls),
        ) if x.f.public_all_failed == Some(*k) => return decide_all_public_failed(x, *k),
        Answer::Unreachable(FailureKind::Dns) => {
            return row(
                Status::Broken,
                Some(Layer::Tunnel),
                "dns-missing",
                format!(
                    "{host} does not resolve: the DNS record (wildcard CNAME to the tunnel) \
                    is missing"
                ),
            )
            .next(format!(
                "check the proxied DNS record for {host} (a wildcard CNAME to \
                    <tunnel-id>.cfargotunnel.com); dig +short {host}"
            ))
        }
        Answer::Unreachable(k @ (FailureKind::Certificate | FailureKind::Tls)) => {
            return row(
                Status::Broken,
                Some(Layer::Tunnel),
                "edge-tls",
                format!(
                    "TLS to the edge for {host} failed ({}): this is not Cloudflare's \
                    certificate, or it is invalid",
                    k.as_str()
                ),
            )
            .next(
                "check where the name resolves; for a private CA pass --cacert FILE (or \
                -k/--insecure to look past it)",
            )
        }
        Answer::CaddyNoRoute => {
            // Caddy itself answered with its catch-all: the first hop that fails is Caddy's routes.
            return row(
                Status::Broken,
                Some(Layer::Caddy),
                "caddy-no-route",
                format!(
                    "Caddy answers for {host} with its catch-all: no route matches this \
                    hostname"
                ),
            )
            .next(caddy_route_next(x));
        }
        Answer::Unreachable(FailureKind::Refused) => {
            return row(
                Status::Broken,
                Some(Layer::Tunnel),
                "edge-refused",
                format!(
                    "the edge address for {host} refused the connection{}",
                    x.ctx
                        .connect_to
                        .map(|a| format!(" (dialled at {a}, from --connect-to)"))
                        .unwrap_or_default()
                ),
            )
            .next(format!(
                "check where {host} resolves (dig +short {host}) and --connect-to, if \
                given"
            ))
        }
        _ => {}
    }

    // The host reaches no port of the container: every service of it is down, optional and
    // internal-only ones too (unless an outer hop already fails first).
    let inner_failure =
        x.e.is_gateway_error() || matches!(x.e, Answer::Unreachable(_) | Answer::NotRun);
    if let (Some(why), true, false) = (&x.f.host_lost_container, inner_failure, x.outer_down()) {
        return host_lost_row(x, why);
    }

    // Optional services that simply are not running.
    if s.optional
        && (matches!(x.i, Answer::Unreachable(FailureKind::Refused))
            || (!x.internal_known()
                && (x.e.is_gateway_error() || matches!(x.e, Answer::Unreachable(_)))))
    {
        let summary = if x.internal_known() {
            format!(
                "{} is not running (nothing listens on {p}); it is optional",
                s.name
            )
        } else {
            format!(
                "{} does not answer publicly and could not be checked inside; it is optional",
                s.name
            )
        };
        return row(Status::Skipped, None, "optional-not-running", summary);
    }

    if !s.routed {
        return decide_internal_only(x);
    }

    // An internal answer that proves the service itself broken, while the outer hops are not
    // proven down: the service is the first broken hop users hit.
    if !x.outer_down()
        && !matches!(
            x.e,
            Answer::MissingHeaders(_)
                | Answer::DoubledHeaders(_)
                | Answer::CaddyNoRoute
                | Answer::NotRun
        )
    {
        if let Some(r) = service_fault(x) {
            return r;
        }
    }

    if !matches!(x.e, Answer::NotRun) {
        if let Some(r) = decide_host(x) {
            return r;
        }
    }

    match &x.e {
        Answer::DoubledHeaders(h) => match x.i {
            Answer::DoubledHeaders(_) => row(
                Status::Broken,
                Some(Layer::Service),
                "header-doubled-at-service",
                format!(
                    "{label} itself sends {}: browsers reject the answer",
                    h.join(", ")
                ),
            )
            .next(format!(
                "{}; check the service's CORS settings",
                svc_next(s, vmid)
            )),
            Answer::Healthy | Answer::MissingHeaders(_) => row(
                Status::Broken,
                Some(Layer::Caddy),
                "header-doubled-by-proxy",
                format!(
                    "{label} sends the header once inside, but the public answer carries {}: \
                     browsers reject it. Caddy adds its own CORS headers and must drop the \
                     upstream's",
                    h.join(", ")
                ),
            )
            .next(format!(
                "in {}: the generic rule's reverse_proxy needs `header_down \
                 -Access-Control-Allow-Origin` (and -Methods, -Headers); then systemctl reload \
                 caddy-cmux",
                x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE)
            )),
            _ => broken_between(
                "header-doubled-unknown-origin",
                vec![Layer::Caddy, Layer::Service],
                format!(
                    "the public answer carries {}, which browsers reject; without the internal \
                     view it is unknown whether the service or the proxy adds the second",
                    h.join(", ")
                ),
            ),
        },
        Answer::MissingHeaders(h) => match x.i {
            Answer::Healthy => row(
                Status::Degraded,
                Some(Layer::Caddy),
                "header-dropped-by-proxy",
                format!(
                    "{label} sends {} inside, but the public answer lacks it: the proxy chain \
                        drops it",
                    h.join(", ")
                ),
            )
            .next(format!(
                "check the header directives of the {} route in {} (header_down / header), then \
                    systemctl reload caddy-cmux",
                s.name,
                x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE)
            )),
            Answer::MissingHeaders(_) => row(
                Status::Degraded,
                Some(Layer::Service),
                "header-missing-at-service",
                format!(
                    "{label} answers without {}: the service itself does not send it",
                    h.join(", ")
                ),
            )
            .next(format!(
                "{}; check the service's CORS settings",
                svc_next(s, vmid)
            )),
            _ => broken_between(
                "header-missing-unknown-origin",
                vec![Layer::Caddy, Layer::Service],
                format!(
                    "the public answer lacks {}; without the internal view it is unknown \
                        whether the service or the proxy drops it",
                    h.join(", ")
                ),
            )
            .with_status(Status::Degraded),
        },
        Answer::EdgeError { .. } | Answer::CaddyBadGateway(_) => decide_gateway_error(x),
        Answer::WrongService { .. } | Answer::BadStatus(_) => decide_wrong_answer(x),
        Answer::Unreachable(FailureKind::Timeout) if x.outer_down() => outer_down_row(x),
        Answer::Unreachable(FailureKind::Timeout) => match x.i {
            Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => {
                broken_between(
                    "public-timeout-service-ok",
                    vec![Layer::Tunnel, Layer::Caddy, Layer::Container],
                    format!("the public URL timed out while {label} answers inside on {p}"),
                )
            }
            _ => broken_between(
                "public-timeout",
                vec![
                    Layer::Tunnel,
                    Layer::Caddy,
                    Layer::Container,
                    Layer::Service,
                ],
                format!(
                    "the public URL of {} timed out and the internal view does not tell why",
                    s.name
                ),
            ),
        },
        Answer::Unreachable(k) => broken_between(
            "public-transport-error",
            vec![
                Layer::Tunnel,
                Layer::Caddy,
                Layer::Container,
                Layer::Service,
            ],
            format!(
                "the public URL of {} broke off without an HTTP answer ({})",
                s.name,
                k.as_str()
            ),
        ),
        Answer::NotRun => match x.i {
            Answer::Healthy => row(
                Status::Healthy,
                None,
                "healthy-inside-only",
                format!(
                    "{} answers correctly inside; the public URL was not probed",
                    s.name
                ),
            ),
            _ => decide_internal_only(x),
        },
        // Handled above.
        Answer::Healthy
        | Answer::TunnelDown
        | Answer::NoIngress
        | Answer::CaddyNoRoute
        | Answer::EdgeGate(_) => unreachable_row(x),
    }
}

/// A check the run's deadline cut: whether users are affected is not known, and no hop is blamed.
fn cut_row(x: &Subject) -> Row {
    let ms = x.ctx.deadline.map_or(0, |d| d.as_millis());
    inconclusive(
        "cut-by-deadline",
        Vec::new(),
        format!(
            "the run's deadline ({ms} ms, --deadline) cut the check of {} before it finished: \
             this says nothing about the chain",
            x.s.name
        ),
    )
    .next("run again with a longer --deadline (at least --timeout plus 5 s), or without it")
}

/// Never reached (the answers are decided before); kept total without a panic.
fn unreachable_row(x: &Subject) -> Row {
    inconclusive(
        "public-transport-error",
        vec![
            Layer::Tunnel,
            Layer::Caddy,
            Layer::Container,
            Layer::Service,
        ],
        format!("the public URL of {} gave an unexpected answer", x.s.name),
    )
}

/// At most three items, then how many more.
fn first_three(items: &[String]) -> String {
    match items.len() {
        0..=3 => items.join(", "),
        n => format!("{}, and {} more", items[..3].join(", "), n - 3),
    }
}

/// Where the public hostnames were dialled (the dial evidence): the names that did not resolve,
/// and the addresses dialled (the `--connect-to` address, or what DNS gave), each once.
fn dials(t: &TargetObservation) -> (Vec<String>, Vec<String>) {
    use crate::observation::Dial;
    let (mut failed, mut addresses) = (Vec::new(), Vec::new());
    for d in t.services.iter().filter_map(|s| s.dial.as_ref()) {
        match d {
            Dial::DnsFailed { host, .. } => failed.push(host.clone()),
            Dial::ConnectTo { address, .. } => addresses.push(address.clone()),
            Dial::Dns { addresses: a, .. } => addresses.extend(a.iter().cloned()),
        }
    }
    addresses.sort();
    addresses.dedup();
    (failed, addresses)
}

/// Every public hostname failed the same way at DNS, connect or TLS: the tunnel's DNS/edge, or
/// pvediag was pointed at the wrong place (`--domain`, `--connect-to`).
fn decide_all_public_failed(x: &Subject, k: FailureKind) -> Row {
    let host = x.host();
    let (failed_names, addresses) = dials(x.t);
    let dialled = if addresses.is_empty() {
        x.ctx
            .connect_to
            .unwrap_or("the address DNS gives")
            .to_string()
    } else {
        first_three(&addresses)
    };
    let (rule, first, summary) = match k {
        FailureKind::Dns => (
            "all-public-dns",
            Layer::Tunnel,
            format!(
                "no public hostname of cmux-{} resolves ({}): the DNS record is missing, or \
                 --domain names another zone",
                x.vmid(),
                if failed_names.is_empty() {
                    format!("{host} neither")
                } else {
                    first_three(&failed_names)
                }
            ),
        ),
        FailureKind::Certificate | FailureKind::Tls => (
            "all-public-tls",
            Layer::Tunnel,
            format!(
                "TLS failed ({}) for every public hostname of cmux-{} ({host} included): the \
                 names do not lead to Cloudflare's edge, or --domain / --connect-to point \
                 elsewhere{}",
                k.as_str(),
                x.vmid(),
                if addresses.is_empty() && x.ctx.connect_to.is_none() {
                    String::new()
                } else {
                    format!(" (dialled at {dialled})")
                }
            ),
        ),
        _ => (
            "all-public-refused",
            Layer::Tunnel,
            format!(
                "every public hostname of cmux-{} was refused at {}: nothing listens at the \
                    edge address, or --connect-to points elsewhere",
                x.vmid(),
                dialled
            ),
        ),
    };
    broken_between(rule, vec![first, Layer::Input], summary).next(format!(
        "dig +short {host}; check --domain (and --connect-to, if given)"
    ))
}

/// Edge, tunnel or Caddy is proven down for every hostname: they come first, whatever else is seen.
fn outer_down_row(x: &Subject) -> Row {
    broken_between(
        "origin-unreachable",
        vec![Layer::Caddy, Layer::Tunnel],
        format!(
            "cloudflared cannot reach Caddy: even {} (a hostname Caddy answers itself) fails",
            x.t.origin
                .as_ref()
                .map_or("the origin check", |o| o.url.as_str())
        ),
    )
    .next(
        "on the PVE host: systemctl status caddy-cmux cloudflared; curl -sS -o /dev/null -w \
        '%{http_code}' http://127.0.0.1:8080/",
    )
}

/// `host-container-unreachable`: the host reaches no port of the container (`why` says how).
fn host_lost_row(x: &Subject, why: &str) -> Row {
    let (vmid, ct) = (x.vmid(), x.ctx.instance_name(x.vmid()));
    row(
        Status::Broken,
        Some(Layer::Container),
        "host-container-unreachable",
        why.to_string(),
    )
    .next(format!(
        "on the PVE host: pct status {vmid}; pct start {vmid}; getent hosts {ct}.lan"
    ))
}

/// The public answer was made by a gate of the edge: nothing behind it was observed from outside.
/// What was observed from inside (the internal view, the host vantage) still decides what it can.
fn decide_gate(x: &Subject, g: &Gate) -> Row {
    let s = x.s;
    let stopped = format!("its public URL gets {} at the edge", g.name());
    if let Some(mut r) = service_fault(x) {
        r.summary.push_str(&format!(" ({stopped})"));
        return r;
    }
    if let Some(why) = &x.f.host_lost_container {
        return host_lost_row(x, why);
    }
    // The host vantage sees Caddy's answer for the public hostname, behind the edge.
    let behind_caddy_ok =
        x.t.host
            .as_ref()
            .filter(|h| matches!(h.run, ExecRun::Completed { .. }))
            .and_then(|h| h.services.iter().find(|hs| hs.name == s.name))
            .is_some_and(|hs| {
                matches!(
                    classify(s, &hs.caddy),
                    Answer::Healthy | Answer::MissingHeaders(_)
                )
            });
    let summary = match &x.i {
        Answer::Healthy | Answer::MissingHeaders(_) => format!(
            "{} answers correctly inside the container; {stopped}, so whether users reach it \
                is not proven",
            s.name
        ),
        _ if behind_caddy_ok => format!(
            "{} answers correctly through Caddy on the host; {stopped}, so whether users reach \
                it is not proven",
            s.name
        ),
        _ => format!(
            "{stopped}: nothing behind the edge (tunnel, Caddy, container, service) was observed, \
                and the internal view is unavailable"
        ),
    };
    inconclusive(gate_rule(x.ctx, g), vec![Layer::Edge], summary).next(gate_fix(x.ctx, g))
}

/// The decision-table row of a gate.
fn gate_rule(ctx: &Context, g: &Gate) -> &'static str {
    match g {
        Gate::Challenge { .. } => "edge-challenge",
        Gate::Blocked { .. } => "edge-blocked",
        Gate::AccessLogin { .. } if ctx.access_token_sent => "edge-access-token-not-accepted",
        Gate::AccessDenied { .. } if ctx.access_token_sent => "edge-access-token-rejected",
        Gate::AccessLogin { .. } | Gate::AccessDenied { .. } => "edge-access",
    }
}

/// What lets pvediag through a gate.
fn gate_fix(ctx: &Context, g: &Gate) -> String {
    match (g, ctx.access_token_sent) {
        (Gate::AccessDenied { .. }, true) => "check CF_ACCESS_CLIENT_ID / \
            CF_ACCESS_CLIENT_SECRET (or --access-token-file): the token must exist, not be expired \
            or revoked, and be included in a Service Auth policy of the Access application"
            .into(),
        (Gate::AccessLogin { .. }, true) => "add a policy with action Service Auth that includes \
            this service token to the Access application (an Allow policy sends service tokens to \
            the login)"
            .into(),
        _ if g.is_access() => "give pvediag an Access service token: export \
            CF_ACCESS_CLIENT_ID=... CF_ACCESS_CLIENT_SECRET=... (or --access-token-file FILE: two \
            lines, id then secret); the Access application needs a Service Auth policy that \
            includes it"
            .into(),
        _ => format!(
            "let pvediag through: a WAF custom rule with action Skip (bot fight, managed \
                challenge) for requests whose User-Agent starts with \"pvediag/\" (it sends {}); \
                or check from inside with --exec-url / --on-host",
            crate::http::USER_AGENT
        ),
    }
}

/// The gate that stopped this target's public requests, said once: what it is, that users may
/// still pass it in a browser, and the fix.
fn gate_verdict(ctx: &Context, t: &TargetObservation) -> Option<GateVerdict> {
    let mut gated = Vec::new();
    let mut public = 0usize;
    let mut evidence = Vec::new();
    for so in &t.services {
        match &so.external {
            Probe::Response { response, .. } => {
                public += 1;
                if let Some(g) = edge_gate(response) {
                    if evidence.is_empty() {
                        evidence.push(format!(
                            "external {}: {}",
                            so.url.as_deref().unwrap_or(&so.name),
                            describe_probe(&so.external)
                        ));
                    }
                    gated.push((so.name.clone(), g));
                }
            }
            Probe::Failed { .. } => public += 1,
            Probe::NotRun { .. } => {}
        }
    }
    let exec_gate = match &t.exec.run {
        ExecRun::Gated { gate, .. } => Some(gate.clone()),
        _ => None,
    };
    let gate = gated
        .first()
        .map(|(_, g)| g.clone())
        .or_else(|| exec_gate.clone())?;
    let mut what = Vec::new();
    if !gated.is_empty() {
        what.push(if gated.len() == public {
            format!("every public URL ({public})")
        } else {
            format!(
                "{} of {public} public URLs ({})",
                gated.len(),
                gated
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        });
    }
    if exec_gate.is_some() {
        what.push("the exec call".into());
    }
    let what = what.join(" and ");
    let summary = match (&gate, ctx.access_token_sent) {
        (Gate::AccessDenied { status }, true) => format!(
            "configuration error: Cloudflare Access rejected the service token pvediag sent \
                ({status} for {what})"
        ),
        (Gate::AccessLogin { .. }, true) => format!(
            "Cloudflare Access sends pvediag to its login although a service token was sent, for \
                {what}: the application has no policy that lets this token in"
        ),
        _ => format!(
            "Cloudflare's edge answers {what} with {}: a person with a browser may pass it, so \
                whether users are affected is not proven; what stops pvediag is the zone's \
                security settings, not the tunnel, Caddy, the container or a service",
            gate.describe()
        ),
    };
    if let ExecRun::Gated { status, .. } = &t.exec.run {
        evidence.push(format!(
            "exec call {}/exec: {status} from the edge",
            t.exec.url
        ));
    }
    Some(GateVerdict {
        next_step: gate_fix(ctx, &gate),
        gate,
        summary,
        evidence,
        services: gated.into_iter().map(|(n, _)| n).collect(),
    })
}

/// An internal answer that by itself proves the service broken (whatever the public side saw):
/// nothing listening, hanging, an error status, or another program on its port.
fn service_fault(x: &Subject) -> Option<Row> {
    let (s, vmid, p, label) = (x.s, x.vmid(), x.port(), x.label());
    let public_wrong = matches!(x.e, Answer::WrongService { .. } | Answer::BadStatus(_));
    Some(match &x.i {
        Answer::Unreachable(FailureKind::Refused) => service_down(
            x,
            if public_wrong {
                "service-down-other-answers"
            } else if matches!(x.e, Answer::Unreachable(FailureKind::Timeout)) {
                "service-down-timeout"
            } else {
                "service-down"
            },
        ),
        Answer::Unreachable(FailureKind::Timeout) => row(
            Status::Broken,
            Some(Layer::Service),
            "service-hangs",
            format!("{label} accepts connections on {p} but does not answer in time"),
        )
        .next(svc_next(s, vmid)),
        Answer::BadStatus(st) => row(
            Status::Broken,
            Some(Layer::Service),
            "service-error-status",
            format!("{label} itself answers {st} inside the container"),
        )
        .next(svc_next(s, vmid)),
        Answer::WrongService { reason, .. } => row(
            Status::Broken,
            Some(Layer::Service),
            "other-process-on-port",
            format!("inside the container something other than {label} answers on {p}: {reason}"),
        )
        .next(format!("pct exec {vmid} -- ss -ltnp 'sport = :{p}'")),
        _ => return None,
    })
}

fn service_down(x: &Subject, rule: &'static str) -> Row {
    row(
        Status::Broken,
        Some(Layer::Service),
        rule,
        format!(
            "{} is not listening on {} inside the container",
            x.label(),
            x.port()
        ),
    )
    .next(svc_next(x.s, x.vmid()))
}

/// Cloudflare's or Caddy's own 502/504: the request did not reach a live upstream.
fn decide_gateway_error(x: &Subject) -> Row {
    let (s, vmid, p, label, host) = (x.s, x.vmid(), x.port(), x.label(), x.host());
    let ct = x.ctx.instance_name(vmid);
    if x.outer_down() {
        return outer_down_row(x);
    }
    match &x.i {
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_)
            if x.f.chain_reaches_container.is_some() =>
        {
            match x.route() {
                Some(
                    r @ RouteObservation {
                        upstream_host: Some(h),
                        upstream_port: Some(rp),
                        ..
                    },
                ) if *rp == p => {
                    // Caddy's configuration is right: then the service is not reachable
                    // from the host where Caddy dials it (bound to loopback, or a firewall),
                    // or the file read is not what Caddy has loaded.
                    let from_file = r.from != Some(RouteFrom::AdminApi);
                    let mut candidates = vec![Layer::Service, Layer::Container];
                    if from_file {
                        candidates.push(Layer::Caddy);
                    }
                    broken_between(
                        "route-correct-upstream-unreachable",
                        candidates,
                        format!(
                            "{label} answers inside on 127.0.0.1:{p} and Caddy's route for \
                                {host} dials {h}:{p} as it should{}, yet the request fails: \
                                {label} may listen on loopback only, a firewall may drop it{}",
                            route_src(r),
                            if from_file {
                                ", or Caddy runs another configuration than this file"
                            } else {
                                ""
                            }
                        ),
                    )
                    .next(format!(
                        "pct exec {vmid} -- ss -ltnp 'sport = :{p}' (it must listen on \
                            0.0.0.0:{p}); on the PVE host: curl -sS http://{h}:{p}{}{}",
                        s.probe.path,
                        if from_file {
                            "; systemctl reload caddy-cmux"
                        } else {
                            ""
                        }
                    ))
                }
                Some(
                    r @ RouteObservation {
                        upstream_host: Some(h),
                        upstream_port: Some(rp),
                        ..
                    },
                ) => row(
                    Status::Broken,
                    Some(Layer::Caddy),
                    "caddy-route-misses-live-service",
                    format!(
                        "Caddy sends {host} to {h}:{rp}; {label} listens on {p}{}",
                        route_src(r)
                    ),
                )
                .next(caddy_route_next(x)),
                Some(RouteObservation {
                    upstream_host: None,
                    ..
                }) => row(
                    Status::Broken,
                    Some(Layer::Caddy),
                    "caddy-route-misses-live-service",
                    format!("Caddy has no route for {host}; {label} listens on {p}"),
                )
                .next(caddy_route_next(x)),
                _ => broken_between(
                    "gateway-error-service-ok",
                    vec![Layer::Caddy, Layer::Service, Layer::Container],
                    format!(
                        "{label} answers inside on {p}, but the request through Caddy for \
                            {host} does not reach it: Caddy's route dials another port, or \
                            {label} listens on loopback only, or the host cannot reach the \
                            container on {p}"
                    ),
                )
                .next(caddy_route_next(x)),
            }
        }
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => {
            let mut candidates = vec![Layer::Caddy, Layer::Container, Layer::Service];
            if x.f.origin_ok != Some(true) {
                candidates.insert(0, Layer::Tunnel);
            }
            broken_between(
                "gateway-error-service-ok-unproven-chain",
                candidates,
                format!(
                    "{label} answers inside on {p}, but nothing proves the public chain reaches \
                        {ct} at all"
                ),
            )
            .next(format!(
                "on the PVE host: getent hosts {ct}.lan; curl -sS -H 'Host: {host}' \
                    http://127.0.0.1:8080{}",
                s.probe.path
            ))
        }
        Answer::Unreachable(k) => broken_between(
            "gateway-error-internal-transport",
            vec![Layer::Caddy, Layer::Service, Layer::Container],
            format!(
                "the public URL fails and the internal probe broke off ({})",
                k.as_str()
            ),
        ),
        _ => {
            // No internal view.
            if x.f.chain_reaches_container.is_some() {
                // Caddy's route, when read, orders the candidates: a right port makes the service
                // the likely one (and rules Caddy out when it is what Caddy has loaded).
                let candidates = match x.route() {
                    Some(RouteObservation {
                        upstream_port: Some(rp),
                        from,
                        ..
                    }) if *rp == p => {
                        let mut c = vec![Layer::Service, Layer::Container];
                        if *from != Some(RouteFrom::AdminApi) {
                            c.push(Layer::Caddy);
                        }
                        c
                    }
                    _ => vec![Layer::Caddy, Layer::Service, Layer::Container],
                };
                broken_between(
                    "gateway-error-no-internal",
                    candidates,
                    format!(
                        "the public URL of {} fails behind the tunnel while other requests \
                         reach {ct}; without the internal view Caddy's route and the \
                         service cannot be told apart",
                        s.name
                    ),
                )
                .next(svc_next(s, vmid))
            } else if let (
                Some(true),
                Some(RouteObservation {
                    upstream_host: Some(h),
                    source,
                    ..
                }),
            ) = (
                x.f.origin_ok,
                x.route().filter(|r| {
                    r.upstream_host
                        .as_deref()
                        .is_some_and(|h| !h.eq_ignore_ascii_case(&format!("{ct}.lan")))
                }),
            ) {
                // Caddy's configuration (read with --caddyfile/--caddy-admin) dials another name.
                row(
                    Status::Broken,
                    Some(Layer::Caddy),
                    "caddy-dials-other-host",
                    format!(
                        "Caddy answers, but its route for {host} dials {h}, not the container's \
                         name {ct}.lan ({}): nothing of {ct} answers through it",
                        source.as_deref().unwrap_or("Caddy's configuration")
                    ),
                )
                .next(format!(
                    "fix the route's upstream to {ct}.lan in {} (2026: reverse_proxy \
                     {{re.service.2}}.lan:{{re.service.1}}), then systemctl reload caddy-cmux",
                    x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE)
                ))
            } else if x.f.origin_ok == Some(true) {
                broken_between(
                    "container-unreachable",
                    vec![Layer::Container, Layer::Caddy, Layer::Service],
                    format!(
                        "Caddy answers, but nothing of {ct} does (exec included): most \
                            likely the container is stopped or {ct}.lan does not resolve \
                            from the host"
                    ),
                )
                .next(format!(
                    "on the PVE host: pct status {vmid}; getent hosts {ct}.lan; pct \
                        start {vmid}"
                ))
            } else {
                broken_between(
                    "gateway-error-unknown",
                    vec![
                        Layer::Tunnel,
                        Layer::Caddy,
                        Layer::Container,
                        Layer::Service,
                    ],
                    format!(
                        "the public URL of {} fails behind the edge and nothing else \
                        narrows it down",
                        s.name
                    ),
                )
            }
        }
    }
}

/// A public answer that came from behind Caddy but is not this service's healthy answer.
fn decide_wrong_answer(x: &Subject) -> Row {
    let (s, p, label) = (x.s, x.port(), x.label());
    let what = describe_answer(&x.e, s);
    match &x.i {
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => {
            let summary = match x.route() {
                Some(
                    r @ RouteObservation {
                        upstream_host: Some(h),
                        upstream_port: Some(rp),
                        ..
                    },
                ) if *rp != p => format!(
                    "Caddy sends {} to {h}:{rp}, where another service answers; {label} listens \
                        on {p}{}",
                    s.name,
                    route_src(r)
                ),
                _ => format!(
                    "the public URL reaches a different service ({what}) while {label} answers \
                        correctly inside on {p}: Caddy routes to the wrong port"
                ),
            };
            row(
                Status::Broken,
                Some(Layer::Caddy),
                "caddy-route-to-wrong-service",
                summary,
            )
            .next(caddy_route_next(x))
        }
        _ => broken_between(
            "wrong-answer-no-internal",
            vec![Layer::Caddy, Layer::Service],
            format!(
                "the public URL answers wrongly ({what}); without the internal view a wrong \
                    Caddy port and a broken service cannot be told apart"
            ),
        ),
    }
}

/// Services with no public URL: the internal view alone decides.
fn decide_internal_only(x: &Subject) -> Row {
    let (s, vmid) = (x.s, x.vmid());
    match &x.i {
        Answer::Healthy => row(
            Status::Healthy,
            None,
            "healthy-inside-only",
            format!(
                "{} answers correctly inside (not routed through the tunnel)",
                s.name
            ),
        ),
        Answer::MissingHeaders(h) => row(
            Status::Degraded,
            Some(Layer::Service),
            "header-missing-at-service",
            format!("{} answers without {}", x.label(), h.join(", ")),
        )
        .next(svc_next(s, vmid)),
        Answer::Unreachable(
            k @ (FailureKind::EmptyReply
            | FailureKind::Receive
            | FailureKind::Protocol
            | FailureKind::Other
            | FailureKind::Dns
            | FailureKind::Tls
            | FailureKind::Certificate
            | FailureKind::Redirect),
        ) => inconclusive(
            "internal-transport-error",
            vec![Layer::Service],
            format!(
                "the internal probe of {} broke off ({})",
                s.name,
                k.as_str()
            ),
        ),
        Answer::NotRun => inconclusive(
            "not-checkable",
            Vec::new(),
            format!(
                "{} is not routed, so only the internal view can check it: {}",
                s.name,
                x.f.internal_unavailable
                    .clone()
                    .unwrap_or_else(|| "no internal record".into())
            ),
        ),
        _ => service_fault(x).unwrap_or_else(|| unreachable_row(x)),
    }
}

/// The host's view of cloudflared: its readiness pins a tunnel failure seen from outside.
fn decide_host_tunnel(x: &Subject) -> Option<Row> {
    let h = x.t.host.as_ref()?;
    if !matches!(h.run, ExecRun::Completed { .. }) {
        return None;
    }
    let ready = h.cloudflared.response().map(|r| r.status);
    let edge_side = matches!(
        x.e,
        Answer::TunnelDown | Answer::EdgeError { .. } | Answer::NoIngress
    );
    if edge_side || matches!(x.e, Answer::Unreachable(_)) {
        match (ready, &h.cloudflared) {
            (Some(503), _) => {
                return Some(
                    row(
                        Status::Broken,
                        Some(Layer::Tunnel),
                        "host-cloudflared-not-ready",
                        "cloudflared on the host reports no edge connection (/ready: 503)".into(),
                    )
                    .next(tunnel_next()),
                )
            }
            (
                None,
                Probe::Failed {
                    kind: FailureKind::Refused,
                    ..
                },
            ) if matches!(x.e, Answer::TunnelDown) => {
                return Some(
                    row(
                        Status::Broken,
                        Some(Layer::Tunnel),
                        "host-cloudflared-not-running",
                        "cloudflared is not running on the host (nothing answers /ready on \
                            127.0.0.1:20241-20245)"
                            .into(),
                    )
                    .next(
                        "on the PVE host: systemctl restart cloudflared; journalctl -u \
                        cloudflared -n 50",
                    ),
                )
            }
            _ => {}
        }
    }
    None
}

/// With the host vantage every hop is probed directly, so the break is pinned to one hop.
/// `None` when the host's view adds nothing (the base rules then decide).
fn decide_host(x: &Subject) -> Option<Row> {
    let h = x.t.host.as_ref()?;
    if !matches!(h.run, ExecRun::Completed { .. }) {
        return None;
    }
    let (s, vmid, p, label) = (x.s, x.vmid(), x.port(), x.label());
    let ct = x.ctx.instance_name(vmid);
    let hs = h.services.iter().find(|hs| hs.name == s.name)?;
    let c = classify(s, &hs.caddy);
    let u = classify_direct(s, &hs.upstream);
    let edge_side = matches!(
        x.e,
        Answer::TunnelDown | Answer::EdgeError { .. } | Answer::NoIngress
    );

    // Caddy's listener.
    if let Answer::Unreachable(FailureKind::Refused) = c {
        return Some(
            row(
                Status::Broken,
                Some(Layer::Caddy),
                "host-caddy-down",
                format!(
                    "nothing listens on Caddy's address {} on the host: caddy-cmux is down",
                    h.caddy_url
                ),
            )
            .next(
                "on the PVE host: systemctl status caddy-cmux; journalctl -u caddy-cmux -n \
                50; systemctl restart caddy-cmux",
            ),
        );
    }
    if matches!(
        c,
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_)
    ) && edge_side
    {
        return Some(
            row(
                Status::Broken,
                Some(Layer::Tunnel),
                "host-caddy-ok-edge-fails",
                format!(
                    "Caddy answers {} correctly on the host, but the public URL does not: the \
                        break is between the edge and Caddy (cloudflared's origin setting)",
                    s.name
                ),
            )
            .next(
                "on the PVE host: grep -n -A2 ingress /etc/cloudflared/config.yml (the rule \
                must send the sandbox hostnames to http://localhost:8080); journalctl -u \
                cloudflared -n 50",
            ),
        );
    }
    if x.outer_down() {
        // The origin check failed: edge/tunnel/Caddy are down for every hostname; the host's view
        // of the inner hops does not change that.
        return None;
    }
    let caddy_fails = matches!(
        c,
        Answer::CaddyBadGateway(_)
            | Answer::CaddyNoRoute
            | Answer::BadStatus(_)
            | Answer::WrongService { .. }
    );
    match u {
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) if caddy_fails => {
            let summary = match x.route() {
                Some(
                    r @ RouteObservation {
                        upstream_host: Some(rh),
                        upstream_port: Some(rp),
                        ..
                    },
                ) => format!(
                    "the host reaches {label} at {}, but Caddy sends it to {rh}:{rp}{}",
                    hs.upstream_url,
                    route_src(r)
                ),
                _ => format!(
                    "the host reaches {label} at {}, but Caddy's own answer for it fails ({}): \
                        Caddy's route is wrong",
                    hs.upstream_url,
                    describe_answer(&c, s)
                ),
            };
            Some(
                row(
                    Status::Broken,
                    Some(Layer::Caddy),
                    "host-caddy-route-wrong",
                    summary,
                )
                .next(caddy_route_next(x)),
            )
        }
        Answer::Unreachable(FailureKind::Dns) => Some(
            row(
                Status::Broken,
                Some(Layer::Container),
                "host-upstream-name",
                format!(
                    "{ct}'s name in {} does not resolve on the host",
                    hs.upstream_url
                ),
            )
            .next(format!(
                "on the PVE host: pct status {vmid}; getent hosts {ct}.lan \
                (the router's DHCP/DNS must publish the container's hostname)"
            )),
        ),
        Answer::Unreachable(FailureKind::Refused)
            if matches!(x.i, Answer::Healthy | Answer::MissingHeaders(_)) =>
        {
            Some(
                row(
                    Status::Broken,
                    Some(Layer::Service),
                    "host-upstream-loopback-only",
                    format!(
                        "{label} answers inside on 127.0.0.1:{p} but refuses {}: \
                         it listens only on loopback",
                        hs.upstream_url
                    ),
                )
                .next(format!(
                    "pct exec {vmid} -- ss -ltnp 'sport = :{p}' — \
                     make {label} listen on 0.0.0.0:{p}"
                )),
            )
        }
        Answer::Unreachable(FailureKind::Timeout)
            if matches!(x.i, Answer::Healthy | Answer::MissingHeaders(_)) =>
        {
            Some(
                row(
                    Status::Broken,
                    Some(Layer::Container),
                    "host-upstream-unreachable",
                    format!(
                        "the host cannot reach {} in time while {label} answers inside: \
                         the container's network or a firewall drops it",
                        hs.upstream_url
                    ),
                )
                .next(format!(
                    "on the PVE host: pct status {vmid}; ping -c1 {ct}.lan; \
                     pct exec {vmid} -- ip addr"
                )),
            )
        }
        Answer::Unreachable(FailureKind::Timeout | FailureKind::Refused) if !x.internal_known() => {
            Some(
                broken_between(
                    "host-upstream-fails-no-internal",
                    vec![Layer::Service, Layer::Container],
                    format!(
                        "the host gets no answer from {} ({}) and the internal view is \
                         unavailable: {label} is down or hangs, or the container's network \
                         drops it",
                        hs.upstream_url,
                        describe_answer(&u, s)
                    ),
                )
                .next(svc_next(s, vmid)),
            )
        }
        _ => None,
    }
}

/// Runs the decision table over one target.
pub(crate) fn diagnose(ctx: &Context, t: &TargetObservation) -> TargetVerdict {
    let identity = identity_row(t);
    // Under a contradicted identity the internal answers are another sandbox's: a service that
    // keeps its own verdict (its route, read, dials its own sandbox) is decided without them.
    let stripped;
    let t = match &identity {
        Some(_) => {
            let mut s = t.clone();
            for so in &mut s.services {
                so.internal = Probe::not_run("the exec call ran in another sandbox");
            }
            stripped = s;
            &stripped
        }
        None => t,
    };
    let f = facts(ctx, t);
    let mut services = Vec::with_capacity(t.services.len());
    for so in &t.services {
        let Some(s) = ctx.catalog.get(&so.name) else {
            continue;
        };
        let ext_cut = so.url.is_some() && cut_by_deadline(ctx, t, &so.external, false);
        let int_cut = cut_by_deadline(ctx, t, &so.internal, true);
        let e = if ext_cut {
            Answer::NotRun
        } else {
            external_answer(t, s, so)
        };
        let i = if int_cut {
            Answer::NotRun
        } else {
            classify_direct(s, &so.internal)
        };
        let cut = ext_cut || (int_cut && e == Answer::NotRun);
        let x = Subject {
            ctx,
            f: &f,
            t,
            s,
            so,
            e,
            i,
            cut,
        };
        let r = with_preflight(decide(&x), &x);
        // Healthy means the right sandbox answered: identity rows come before any other.
        let (r, id_evidence) = with_identity(r, &identity, t, &s.name, ctx);
        let mut evidence = id_evidence;
        evidence.extend(evidence_of(&x, &r));
        if identity.is_some() {
            // Under a contradicted identity the chain reached a container, not this one.
            if let Some(c) = &f.chain_reaches_container {
                evidence.retain(|e| e != c);
            }
        }
        let candidates = r
            .candidates
            .iter()
            .map(|&layer| Candidate {
                layer,
                check: x.check_for(layer),
            })
            .collect();
        let v = Verdict {
            status: r.status,
            layer: r.layer,
            candidates,
            summary: r.summary,
            evidence,
            next_step: r.next_step,
            rule: r.rule,
        };
        // Behind the front: back ends and units (verdict_inside.rs).
        services.push(inside::refine(ctx, t, s, &x.i, v));
    }
    let mut exec = channel_verdict(t);
    if let (
        Some(d),
        ExecRun::Failed {
            kind: FailureKind::Timeout,
            ..
        }
        | ExecRun::NotRun { .. },
    ) = (ctx.deadline, &t.exec.run)
    {
        if exec.status != Status::Healthy {
            exec.summary = format!(
                "internal probes unavailable: the run's deadline ({} ms, --deadline) cut the exec \
                 call",
                d.as_millis()
            );
        }
    }
    identity_channel(&mut exec, t, identity);
    TargetVerdict {
        vmid: t.vmid,
        exec: inside::channel_note(t, exec),
        services,
        edge_gate: gate_verdict(ctx, t),
    }
}

/// The evidence lines of one verdict: both answers, Caddy's route, and the target-wide facts.
fn evidence_of(x: &Subject, r: &Row) -> Vec<String> {
    let (s, so, f) = (x.s, x.so, x.f);
    let mut evidence = Vec::new();
    // An answer set aside because the run's deadline, not the chain, ended the probe.
    let described = |p: &Probe, a: &Answer| match (p, a) {
        (Probe::NotRun { .. }, _) | (_, Answer::NotRun) if x.cut => {
            "cut by the run's deadline (--deadline), not by the chain".to_string()
        }
        _ => describe_answer(a, s),
    };
    if let Some(url) = &so.url {
        evidence.push(format!(
            "external {url}: {} — {}",
            describe_probe(&so.external),
            described(&so.external, &x.e)
        ));
    }
    evidence.push(format!(
        "internal 127.0.0.1:{}{}: {}{}",
        s.port,
        s.probe.path,
        describe_probe(&so.internal),
        if x.i == Answer::NotRun {
            String::new()
        } else {
            format!(" — {}", describe_answer(&x.i, s))
        }
    ));
    if let Some(route) = x.route() {
        evidence.push(match (&route.upstream_host, route.upstream_port) {
            (Some(h), Some(p)) => format!(
                "Caddy route for {}: {h}:{p}{}",
                route.host,
                route_src(route)
            ),
            (Some(h), None) => format!("Caddy route for {}: {h}", route.host),
            _ => format!("Caddy has no route for {}", route.host),
        });
    }
    if let (Some(pf), "caddy-preflight-unanswered") = (&x.t.preflight, r.rule) {
        evidence.push(format!(
            "CORS preflight OPTIONS {}: {}",
            pf.url,
            describe_probe(&pf.probe)
        ));
    }
    if r.status != Status::Healthy {
        if let Some(d) = &so.dial {
            evidence.push(d.describe());
        } else if so.url.is_some() && !matches!(so.external, Probe::NotRun { .. }) {
            evidence.push(match x.ctx.connect_to {
                Some(a) => format!(
                    "{} was dialled at {a} (--connect-to), with its own name for TLS and Host",
                    x.host()
                ),
                None => format!(
                    "{} was dialled at the address DNS gave this machine",
                    x.host()
                ),
            });
        }
        if let Some(c) = &f.chain_reaches_container {
            evidence.push(c.clone());
        }
        if let Some(why) = &f.origin_contradicted {
            evidence.push(why.clone());
        }
        if let Some(ok) = f.origin_ok {
            evidence.push(if ok {
                "the origin check (a hostname Caddy answers itself) got Caddy's answer: edge, \
                    tunnel and Caddy are up"
                    .into()
            } else {
                "the origin check (a hostname Caddy answers itself) failed too".into()
            });
        }
        if let (Some(u), Answer::NotRun) = (&f.internal_unavailable, &x.i) {
            evidence.push(format!("internal view unavailable: {u}"));
        }
    }
    evidence
}

// Behind the fronts (verdict_inside.rs) and who answered (verdict_identity.rs: the identity rows).
#[path = "verdict_identity.rs"]
mod identity_rows;
#[path = "verdict_inside.rs"]
mod inside;
use identity_rows::{identity_channel, identity_row, with_identity};

// ---------------------------------------------------------------------------------------------
// The 2026 layout's CORS preflight (docs/diagnosis.md, `caddy-preflight-unanswered`)

/// Who failed a CORS preflight, when one was failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PreflightFault {
    /// The answer is Caddy's own (its catch-all 404, or `Server: Caddy`): the `@options` handler
    /// is missing. Otherwise another hop of the edge chain answered (the origin-check name reaches
    /// no container).
    pub(crate) by_caddy: bool,
    /// What came back, for the summary and evidence.
    pub(crate) what: String,
}

/// The preflight's answer: `None` when it was answered as the 2026 layout does (204 with
/// `access-control-allow-origin`), or when nothing usable answered (no HTTP answer, Cloudflare's
/// own 5xx: the edge or tunnel being down is the other rows' business).
pub(crate) fn preflight_fault(p: &Probe) -> Option<PreflightFault> {
    let r = p.response()?;
    // Cloudflare's own answer, or a gate of the edge (challenge, Access) answering before Caddy.
    if crate::made_by::made_by_edge(r) {
        return None;
    }
    if r.status == 204 && r.header("access-control-allow-origin").is_some() {
        return None;
    }
    let catch_all = r.status == 404 && r.body.contains("cmux sandbox not found");
    let by_caddy = catch_all
        || r.header("server")
            .is_some_and(|s| s.eq_ignore_ascii_case("caddy"));
    let what = if catch_all {
        "Caddy's catch-all 404".to_string()
    } else {
        format!("{} {:?}", r.status, short_body(&r.body))
    };
    Some(PreflightFault { by_caddy, what })
}

/// A routed service that answers healthy is still degraded for the cmux web app when the 2026
/// layout's preflight was not answered by Caddy: every cross-origin request to the sandbox fails
/// in the browser. Any other verdict stands (it already says more).
fn with_preflight(r: Row, x: &Subject) -> Row {
    if r.status != Status::Healthy || x.so.url.is_none() {
        return r;
    }
    let Some(pf) = &x.t.preflight else {
        return r;
    };
    let Some(fault) = preflight_fault(&pf.probe) else {
        return r;
    };
    let file = x.ctx.caddyfile.unwrap_or(HOST_CADDYFILE);
    let summary = format!(
        "{} answers, but Caddy does not answer CORS preflights: OPTIONS {} got {}, not 204 with \
         access-control-allow-origin; every cross-origin request of the cmux web app fails in the \
         browser",
        x.label(),
        pf.url,
        fault.what
    );
    let next = format!(
        "add the @options handler to the generic site block of {file} (before `handle @service`): \
         `@options method OPTIONS` and `handle @options {{ header Access-Control-Allow-Origin \"*\" \
         ...; header Access-Control-Max-Age \"86400\"; respond 204 }}`; then systemctl reload \
         caddy-cmux and check: curl -sS -o /dev/null -w '%{{http_code}}' -X OPTIONS -H 'Origin: \
         https://example.com' {}",
        pf.url
    );
    let rule = "caddy-preflight-unanswered";
    let r = if fault.by_caddy {
        row(Status::Degraded, Some(Layer::Caddy), rule, summary)
    } else {
        broken_between(rule, vec![Layer::Caddy, Layer::Tunnel], summary)
            .with_status(Status::Degraded)
    };
    r.next(next)
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
pub(crate) mod tests;

#[cfg(test)]
#[path = "verdict_props.rs"]
mod props;
