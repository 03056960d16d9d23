//! The verdict engine: observations in, verdicts out. Pure: no I/O, no clock, no randomness.
//!
//! Every decision is one row of the decision table in `docs/diagnosis.md`; each row has a stable
//! `rule` id that appears in the JSON output and in the table tests at the bottom of this file.
//!
//! Two steps:
//! 1. [`classify`] turns one HTTP outcome into an [`Answer`] relative to the service it was meant for
//!    (healthy, Cloudflare's own error page, Caddy's own 502, the wrong service, ...);
//! 2. [`diagnose`] combines the external and internal answers of a service with what the rest of the
//!    target proves (the exec round trip, the other services, the origin check) into a [`Verdict`].

use serde::Serialize;

use crate::catalog::{Catalog, Service};
use crate::observation::{
    ExecRun, FailureKind, HttpResponse, Probe, RouteObservation, ServiceObservation,
    TargetObservation,
};

/// Verdict status. Stable names: they appear in JSON, JUnit and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Healthy,
    Skipped,
    Inconclusive,
    Degraded,
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

/// The link of the chain a verdict blames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
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
}

impl Layer {
    pub fn as_str(self) -> &'static str {
        match self {
            Layer::Tunnel => "tunnel",
            Layer::Caddy => "caddy",
            Layer::Container => "container",
            Layer::Service => "service",
        }
    }
}

/// One service's verdict.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub status: Status,
    /// The broken layer (broken, degraded); `None` otherwise.
    pub layer: Option<Layer>,
    /// For inconclusive verdicts: the layers the evidence cannot tell apart.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<Layer>,
    pub summary: String,
    pub evidence: Vec<String>,
    pub next_step: Option<String>,
    /// The decision-table row (see docs/diagnosis.md).
    pub rule: &'static str,
}

/// The exec channel's own verdict: whether the internal view could be had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChannelVerdict {
    /// `healthy`: internal probes ran; `inconclusive`: they could not run (reason in summary).
    pub status: Status,
    pub summary: String,
    pub next_step: Option<String>,
}

/// Verdicts for one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetVerdict {
    pub vmid: u32,
    pub exec: ChannelVerdict,
    pub services: Vec<Verdict>,
}

impl TargetVerdict {
    /// The worst status of the target (channel included).
    pub fn worst(&self) -> Status {
        self.services
            .iter()
            .map(|v| v.status)
            .chain(std::iter::once(self.exec.status))
            .max()
            .unwrap_or(Status::Healthy)
    }
}

/// The routing layout lives with the URL template that decides it.
pub use crate::target::Layout;

/// What the engine knows besides the observations.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub catalog: &'a Catalog,
    pub layout: Layout,
    /// The Caddyfile path on the host, for next steps.
    pub caddyfile: &'a str,
    /// The container's name on the LAN (`{instance}` of the 2026 layout, e.g. `pvelxc-1a2b3c4d`);
    /// None: `cmux-{vmid}`.
    pub instance: Option<&'a str>,
}

impl Context<'_> {
    /// The container's name on the LAN, as Caddy dials it (`NAME.lan`).
    pub fn instance_name(&self, vmid: u32) -> String {
        self.instance
            .map(str::to_string)
            .unwrap_or_else(|| format!("cmux-{vmid}"))
    }
}

// ---------------------------------------------------------------------------------------------
// Step 1: classify one answer

/// What one probe outcome means for the service it was aimed at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
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
    /// A status the service does not give when healthy, not made by Cloudflare, cloudflared or Caddy.
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
    /// Not probed.
    NotRun,
}

impl Answer {
    /// Cloudflare or Caddy failed to reach the upstream: the origin chain is broken somewhere.
    fn is_gateway_error(&self) -> bool {
        matches!(self, Answer::EdgeError { .. } | Answer::CaddyBadGateway(_))
    }
}

fn header_is(r: &HttpResponse, name: &str, value: &str) -> bool {
    r.header(name)
        .map(|v| v.trim().eq_ignore_ascii_case(value))
        .unwrap_or(false)
}

/// The `error code: NNN` of a Cloudflare-made body (plain text or HTML), if any.
pub fn cloudflare_error_code(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let i = lower.find("error code")?;
    let rest = &body[i + "error code".len()..];
    let digits: String = rest
        .trim_start_matches([':', ' ', '\u{a0}'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// Whether Cloudflare itself generated this answer (not the origin).
pub fn made_by_cloudflare(r: &HttpResponse) -> bool {
    let cf_headers = header_is(r, "server", "cloudflare") && r.has_header("cf-ray");
    if !cf_headers {
        return false;
    }
    r.status == 530
        || r.has_header("cf-error-type")
        || (r.status >= 500 && cloudflare_error_code(&r.body).is_some())
        || (r.status >= 500 && r.body.to_ascii_lowercase().contains("cloudflare"))
}

/// Classifies one probe outcome against the service it was meant for.
pub fn classify(service: &Service, probe: &Probe) -> Answer {
    let r = match probe {
        Probe::NotRun { .. } => return Answer::NotRun,
        Probe::Failed { kind, .. } => return Answer::Unreachable(*kind),
        Probe::Response { response, .. } => response,
    };
    let body_empty = r.body.trim().is_empty();
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
    if r.status == 404 && body_empty && !header_is(r, "server", "caddy") {
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
pub fn describe_probe(p: &Probe) -> String {
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
pub fn external_answer(t: &TargetObservation, s: &Service, so: &ServiceObservation) -> Answer {
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
}

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
    for so in &t.services {
        let Some(svc) = ctx.catalog.get(&so.name) else {
            continue;
        };
        let a = classify(svc, &so.external);
        if a != Answer::NotRun {
            externals += 1;
        }
        if a == Answer::TunnelDown {
            tunnel_down += 1;
        }
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
    let origin_ok = t.origin.as_ref().and_then(|o| match &o.probe {
        Probe::Response { response, .. } => {
            let catch_all_404 = response.status == 404
                && response.body.trim().is_empty()
                && !header_is(response, "server", "caddy");
            Some(!made_by_cloudflare(response) && !catch_all_404)
        }
        Probe::Failed { .. } => Some(false),
        Probe::NotRun { .. } => None,
    });
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
    Facts {
        vmid: t.vmid,
        chain_reaches_container: chain,
        tunnel_down: externals > 0 && tunnel_down == externals,
        origin_ok,
        internal_unavailable,
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
        ExecRun::Failed { kind, message } => {
            format!("the exec call got no answer ({}: {message})", kind.as_str())
        }
        ExecRun::NotRun { reason } => format!("the exec call was not made ({reason})"),
    }
}

/// The exec channel verdict.
pub fn channel_verdict(t: &TargetObservation) -> ChannelVerdict {
    if let Some(p) = &t.exec.pct {
        if let ExecRun::Completed { exit_code, .. } = &p.run {
            return ChannelVerdict {
                status: Status::Healthy,
                summary: format!(
                    "the exec endpoint could not be used ({}); internal probes ran through pct exec ({}, exit {})",
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
            let mut summary = "internal probes unavailable: the exec answer held no record and no exit event (not cmux-execd's JSON-lines stream?)".to_string();
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
                    "give the container's token: export CMUX_EXECD_AUTH_TOKEN=... or --exec-token-file FILE \
                     (it is CMUX_EXECD_AUTH_TOKEN in `pct config {}` env, or /root/.worker-auth-token inside)",
                    t.vmid
                )),
                ExecRun::Rejected { status: 415 | 400, .. } => Some(
                    "this cmux-execd speaks another protocol version: report it with the output of --format json"
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

struct Row {
    status: Status,
    layer: Option<Layer>,
    candidates: Vec<Layer>,
    summary: String,
    next_step: Option<String>,
    rule: &'static str,
}

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
            "start it inside the container; check with: pct exec {vmid} -- curl -sS -i http://127.0.0.1:{}{}",
            s.port, s.probe.path
        )
    } else {
        format!(
            "pct exec {vmid} -- systemctl status {u}; then pct exec {vmid} -- systemctl restart {u}",
            u = s.unit
        )
    }
}

fn tunnel_next() -> String {
    "on the PVE host: systemctl status cloudflared; journalctl -u cloudflared -n 50; curl -s http://127.0.0.1:20241/ready"
        .into()
}

fn caddy_route_next(
    ctx: &Context,
    s: &Service,
    vmid: u32,
    route: Option<&RouteObservation>,
) -> String {
    if let Some(RouteObservation {
        upstream_host: Some(h),
        upstream_port: Some(rp),
        source: Some(src),
        ..
    }) = route
    {
        if *rp != s.port {
            if let Some((file, line)) = src
                .rsplit_once(':')
                .filter(|(_, l)| l.parse::<usize>().is_ok())
            {
                return format!(
                    "edit {file} line {line}: the route dials {h}:{rp} but must dial port {port} — on the PVE host: sed -i '{line}s/:{rp}/:{port}/' {cf} && systemctl reload caddy-cmux",
                    port = s.port,
                    cf = ctx.caddyfile,
                );
            }
            return format!(
                "Caddy's loaded route ({src}) dials {h}:{rp}: fix the route for {} to dial port {} in {} and systemctl reload caddy-cmux",
                s.name, s.port, ctx.caddyfile
            );
        }
    }
    match ctx.layout {
        Layout::PerService => {
            let loc = route
                .and_then(|r| r.source.clone())
                .unwrap_or_else(|| ctx.caddyfile.to_string());
            format!(
                "on the PVE host: grep -n -A3 '@{name}' {cf} — the route for {name} must be `reverse_proxy cmux-{{re.vmid.1}}.lan:{port}` (see {loc}); then systemctl reload caddy-cmux",
                name = s.name,
                cf = ctx.caddyfile,
                port = s.port,
            )
        }
        Layout::PortInHost => {
            let ct = ctx.instance_name(vmid);
            let want = format!("{ct}.lan");
            match route {
                // Caddy's configuration was read and no rule matches the public name.
                Some(RouteObservation {
                    upstream_host: None,
                    host,
                    ..
                }) => format!(
                    "the generic rule's regexp does not match {host}: on the PVE host: grep -n 'header_regexp' {cf} — it must be ^port-(\\d+)-([a-z0-9-]+)\\.; then systemctl reload caddy-cmux",
                    cf = ctx.caddyfile,
                ),
                // The generic rule dials another name than the container's.
                Some(RouteObservation {
                    upstream_host: Some(h),
                    source,
                    ..
                }) if *h != want => format!(
                    "the generic rule ({}) dials {h}: it must dial {want}:{port} (reverse_proxy {{re.service.2}}.lan:{{re.service.1}}) in {cf}; then systemctl reload caddy-cmux",
                    source.as_deref().unwrap_or("its line"),
                    port = s.port,
                    cf = ctx.caddyfile,
                ),
                _ => format!(
                    "the generic rule{} dials {ct}.lan:{port}: check the service listens on all addresses, not only 127.0.0.1: pct exec {vmid} -- ss -ltnp 'sport = :{port}'; and grep -n 'reverse_proxy' {cf}",
                    route
                        .and_then(|r| r.source.as_deref())
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default(),
                    port = s.port,
                    cf = ctx.caddyfile,
                ),
            }
        }
    }
}

fn route_for<'t>(t: &'t TargetObservation, service: &str) -> Option<&'t RouteObservation> {
    t.routes.iter().find(|r| r.service == service)
}

/// The decision for one service: external answer `e`, internal answer `i`.
fn decide(
    ctx: &Context,
    f: &Facts,
    t: &TargetObservation,
    s: &Service,
    so: &ServiceObservation,
    e: &Answer,
    i: &Answer,
) -> Row {
    let vmid = f.vmid;
    let host = host_of(&so.url);
    let internal_ok = matches!(i, Answer::Healthy);
    let internal_known = !matches!(i, Answer::NotRun);
    let label = service_label(s);
    let p = s.port;

    // Optional services that simply are not running.
    if s.optional
        && (matches!(i, Answer::Unreachable(FailureKind::Refused))
            || (!internal_known && (e.is_gateway_error() || matches!(e, Answer::Unreachable(_)))))
    {
        let summary = if internal_known {
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
        return decide_internal_only(s, vmid, i, f);
    }

    if !matches!(e, Answer::Healthy | Answer::NotRun) {
        if let Some(r) = decide_host(ctx, t, s, e, i) {
            return r;
        }
    }

    match e {
        Answer::Healthy => row(
            Status::Healthy,
            None,
            "healthy",
            format!("{} answers correctly through the tunnel", s.name),
        ),
        Answer::DoubledHeaders(h) => match i {
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
                    "{label} sends the header once inside, but the public answer carries {}: browsers reject it. Caddy adds its own CORS headers and must drop the upstream's",
                    h.join(", ")
                ),
            )
            .next(format!(
                "in {}: the generic rule's reverse_proxy needs `header_down -Access-Control-Allow-Origin` (and -Methods, -Headers); then systemctl reload caddy-cmux",
                ctx.caddyfile
            )),
            _ => inconclusive(
                "header-doubled-unknown-origin",
                vec![Layer::Caddy, Layer::Service],
                format!(
                    "the public answer carries {}, which browsers reject; without the internal view it is unknown whether the service or the proxy adds the second",
                    h.join(", ")
                ),
            ),
        },
        Answer::MissingHeaders(h) => match i {
            Answer::Healthy => row(
                Status::Degraded,
                Some(Layer::Caddy),
                "header-dropped-by-proxy",
                format!(
                    "{label} sends {} inside, but the public answer lacks it: the proxy chain drops it",
                    h.join(", ")
                ),
            )
            .next(format!(
                "check the header directives of the {} route in {} (header_down / header), then systemctl reload caddy-cmux",
                s.name, ctx.caddyfile
            )),
            Answer::MissingHeaders(_) => row(
                Status::Degraded,
                Some(Layer::Service),
                "header-missing-at-service",
                format!("{label} answers without {}: the service itself does not send it", h.join(", ")),
            )
            .next(format!(
                "{}; check the service's CORS settings",
                svc_next(s, vmid)
            )),
            _ => inconclusive(
                "header-missing-unknown-origin",
                vec![Layer::Caddy, Layer::Service],
                format!(
                    "the public answer lacks {}; without the internal view it is unknown whether the service or the proxy drops it",
                    h.join(", ")
                ),
            ),
        },
        Answer::TunnelDown => row(
            Status::Broken,
            Some(Layer::Tunnel),
            "tunnel-down",
            if f.tunnel_down {
                "Cloudflare answers 530 / error 1033 for every hostname: the tunnel has no healthy cloudflared connector".into()
            } else {
                format!("Cloudflare answers 530 / error 1033 for {host}: no healthy cloudflared connector serves it")
            },
        )
        .next(tunnel_next()),
        Answer::NoIngress => row(
            Status::Broken,
            Some(Layer::Tunnel),
            "tunnel-no-ingress",
            format!("cloudflared has no ingress rule for {host} (its catch-all answered an empty 404)"),
        )
        .next("on the PVE host: check the ingress list of /etc/cloudflared/config.yml has a \"*.DOMAIN\" rule to http://localhost:8080, then systemctl restart cloudflared"),
        Answer::Unreachable(FailureKind::Dns) => row(
            Status::Broken,
            Some(Layer::Tunnel),
            "dns-missing",
            format!("{host} does not resolve: the DNS record (wildcard CNAME to the tunnel) is missing"),
        )
        .next(format!("check the proxied DNS record *.DOMAIN -> <tunnel-id>.cfargotunnel.com; dig +short {host}")),
        Answer::Unreachable(k @ (FailureKind::Certificate | FailureKind::Tls)) => row(
            Status::Broken,
            Some(Layer::Tunnel),
            "edge-tls",
            format!("TLS to the edge for {host} failed ({}): this is not Cloudflare's certificate, or it is invalid", k.as_str()),
        )
        .next("check where the name resolves; for a private CA pass --cacert FILE (or -k/--insecure to look past it)"),
        Answer::Unreachable(FailureKind::Refused) => row(
            Status::Broken,
            Some(Layer::Tunnel),
            "edge-refused",
            format!("the edge address for {host} refused the connection"),
        )
        .next(format!("check where {host} resolves (and --connect-to, if given)")),
        Answer::CaddyNoRoute => row(
            Status::Broken,
            Some(Layer::Caddy),
            "caddy-no-route",
            format!("Caddy answers for {host} with its catch-all: no route matches this hostname"),
        )
        .next(caddy_route_next(ctx, s, vmid, route_for(t, &s.name))),
        Answer::EdgeError { .. } | Answer::CaddyBadGateway(_) => decide_gateway_error(ctx, f, t, s, so, i),
        Answer::WrongService { .. } | Answer::BadStatus(_) => decide_wrong_answer(ctx, f, t, s, e, i),
        Answer::Unreachable(FailureKind::Timeout) => match i {
            Answer::Unreachable(FailureKind::Timeout) => row(
                Status::Broken,
                Some(Layer::Service),
                "service-hangs",
                format!("{label} accepts connections on {p} but does not answer in time, inside and out"),
            )
            .next(svc_next(s, vmid)),
            Answer::Unreachable(FailureKind::Refused) => service_down(s, vmid, "service-down-timeout"),
            _ if internal_ok => inconclusive(
                "public-timeout-service-ok",
                vec![Layer::Tunnel, Layer::Caddy],
                format!("the public URL timed out while {label} answers inside on {p}"),
            ),
            _ => inconclusive(
                "public-timeout",
                vec![Layer::Tunnel, Layer::Caddy, Layer::Service],
                format!("the public URL of {} timed out and the internal view does not tell why", s.name),
            ),
        },
        Answer::Unreachable(k) => inconclusive(
            "public-transport-error",
            vec![Layer::Tunnel, Layer::Caddy, Layer::Service],
            format!("the public URL of {} broke off without an HTTP answer ({})", s.name, k.as_str()),
        ),
        Answer::NotRun => match i {
            Answer::Healthy => row(
                Status::Healthy,
                None,
                "healthy-inside-only",
                format!("{} answers correctly inside; the public URL was not probed", s.name),
            ),
            _ => decide_internal_only(s, vmid, i, f),
        },
    }
}

/// With the host vantage every hop is probed directly, so the break is pinned to one hop.
/// `None` when the host's view adds nothing (the base rules then decide).
fn decide_host(
    ctx: &Context,
    t: &TargetObservation,
    s: &Service,
    e: &Answer,
    i: &Answer,
) -> Option<Row> {
    let h = t.host.as_ref()?;
    if !matches!(h.run, ExecRun::Completed { .. }) {
        return None;
    }
    let hs = h.services.iter().find(|x| x.name == s.name)?;
    let c = classify(s, &hs.caddy);
    let u = classify(s, &hs.upstream);
    let vmid = t.vmid;
    let ct = ctx.instance_name(vmid);
    let label = service_label(s);
    let p = s.port;
    let ready = h.cloudflared.response().map(|r| r.status);
    let edge_side = matches!(
        e,
        Answer::TunnelDown | Answer::EdgeError { .. } | Answer::NoIngress
    );

    // cloudflared itself.
    if edge_side || matches!(e, Answer::Unreachable(_)) {
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
            (None, Probe::Failed { kind: FailureKind::Refused, .. })
                if matches!(e, Answer::TunnelDown) =>
            {
                return Some(
                    row(
                        Status::Broken,
                        Some(Layer::Tunnel),
                        "host-cloudflared-not-running",
                        "cloudflared is not running on the host (nothing answers /ready on 127.0.0.1:20241-20245)".into(),
                    )
                    .next("on the PVE host: systemctl restart cloudflared; journalctl -u cloudflared -n 50"),
                )
            }
            _ => {}
        }
    }
    // Caddy's listener.
    if let Answer::Unreachable(FailureKind::Refused) = c {
        return Some(
            row(
                Status::Broken,
                Some(Layer::Caddy),
                "host-caddy-down",
                format!("nothing listens on Caddy's address {} on the host: caddy-cmux is down", h.caddy_url),
            )
            .next("on the PVE host: systemctl status caddy-cmux; journalctl -u caddy-cmux -n 50; systemctl restart caddy-cmux"),
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
                    "Caddy answers {} correctly on the host, but the public URL does not: the break is between the edge and Caddy (cloudflared's origin setting)",
                    s.name
                ),
            )
            .next("on the PVE host: grep -n -A2 ingress /etc/cloudflared/config.yml (the rule must send *.DOMAIN to http://localhost:8080); journalctl -u cloudflared -n 50"),
        );
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
            let route = route_for(t, &s.name);
            let summary = match route {
                Some(RouteObservation {
                    upstream_host: Some(rh),
                    upstream_port: Some(rp),
                    source,
                    ..
                }) => format!(
                    "the host reaches {} at {}, but Caddy sends it to {rh}:{rp}{}",
                    label,
                    hs.upstream_url,
                    source.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
                ),
                _ => format!(
                    "the host reaches {label} at {}, but Caddy's own answer for it fails ({}): Caddy's route is wrong",
                    hs.upstream_url,
                    describe_answer(&c, s)
                ),
            };
            Some(
                row(Status::Broken, Some(Layer::Caddy), "host-caddy-route-wrong", summary)
                    .next(caddy_route_next(ctx, s, vmid, route)),
            )
        }
        Answer::Unreachable(FailureKind::Dns) => Some(
            row(
                Status::Broken,
                Some(Layer::Container),
                "host-upstream-name",
                format!("{ct}'s name in {} does not resolve on the host", hs.upstream_url),
            )
            .next(format!("on the PVE host: pct status {vmid}; getent hosts {ct}.lan (the router's DHCP/DNS must publish the container's hostname)")),
        ),
        Answer::Unreachable(FailureKind::Refused) if matches!(i, Answer::Healthy) => Some(
            row(
                Status::Broken,
                Some(Layer::Service),
                "host-upstream-loopback-only",
                format!(
                    "{label} answers inside on 127.0.0.1:{p} but refuses {}: it listens only on loopback",
                    hs.upstream_url
                ),
            )
            .next(format!("pct exec {vmid} -- ss -ltnp 'sport = :{p}' — make {label} listen on 0.0.0.0:{p}")),
        ),
        Answer::Unreachable(FailureKind::Timeout) => Some(
            row(
                Status::Broken,
                Some(Layer::Container),
                "host-upstream-unreachable",
                format!("the host cannot reach {} in time: the container's network or a firewall drops it", hs.upstream_url),
            )
            .next(format!("on the PVE host: pct status {vmid}; ping -c1 {ct}.lan; pct exec {vmid} -- ip addr")),
        ),
        _ => None,
    }
}

/// An internal answer that by itself proves the service broken (whatever the public side saw):
/// nothing listening, hanging, an error status, or another program on its port.
fn service_fault(s: &Service, vmid: u32, i: &Answer) -> Option<Row> {
    let label = service_label(s);
    let p = s.port;
    Some(match i {
        Answer::Unreachable(FailureKind::Refused) => service_down(s, vmid, "service-down"),
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

fn service_down(s: &Service, vmid: u32, rule: &'static str) -> Row {
    row(
        Status::Broken,
        Some(Layer::Service),
        rule,
        format!(
            "{} is not listening on {} inside the container",
            service_label(s),
            s.port
        ),
    )
    .next(svc_next(s, vmid))
}

/// Cloudflare's or Caddy's own 502/504: the request did not reach a live upstream.
fn decide_gateway_error(
    ctx: &Context,
    f: &Facts,
    t: &TargetObservation,
    s: &Service,
    so: &ServiceObservation,
    i: &Answer,
) -> Row {
    let vmid = f.vmid;
    let ct = ctx.instance_name(vmid);
    let label = service_label(s);
    let host = host_of(&so.url);
    let p = s.port;
    match i {
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => {
            if f.chain_reaches_container.is_some() {
                let route = route_for(t, &s.name);
                if let Some(RouteObservation {
                    upstream_host: Some(h),
                    upstream_port: Some(rp),
                    source,
                    ..
                }) = route
                {
                    if *rp == p {
                        // Caddy's configuration is right: then the service is not reachable from the
                        // host where Caddy dials it (bound to loopback, or a firewall), or the file read
                        // is not what Caddy has loaded.
                        let loaded = source.as_deref().is_some_and(|s| s.contains("admin API"));
                        let mut candidates = vec![Layer::Service, Layer::Container];
                        if !loaded {
                            candidates.insert(0, Layer::Caddy);
                        }
                        return inconclusive(
                            "route-correct-upstream-unreachable",
                            candidates,
                            format!(
                                "{label} answers inside on 127.0.0.1:{p} and Caddy's route for {host} dials {h}:{p} as it should{}, yet the request fails: {label} may listen on loopback only, a firewall may drop it{}",
                                source.as_ref().map(|s| format!(" ({s})")).unwrap_or_default(),
                                if loaded { "" } else { ", or Caddy runs another configuration than this file" }
                            ),
                        )
                        .next(format!(
                            "pct exec {vmid} -- ss -ltnp 'sport = :{p}' (it must listen on 0.0.0.0:{p}); on the PVE host: curl -sS http://{h}:{p}{}{}",
                            s.probe.path,
                            if loaded { "" } else { "; systemctl reload caddy-cmux" }
                        ));
                    }
                }
                let summary = match route {
                    Some(RouteObservation {
                        upstream_host: Some(h),
                        upstream_port: Some(rp),
                        source,
                        ..
                    }) if *rp != p => format!(
                        "Caddy sends {host} to {h}:{rp}; {label} listens on {p}{}",
                        source.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
                    ),
                    Some(RouteObservation {
                        upstream_host: None,
                        ..
                    }) => format!("Caddy has no route for {host}; {label} listens on {p}"),
                    _ => format!(
                        "{label} answers inside on {p}, but Caddy's route for {host} does not reach it: the route must dial {ct}.lan:{p} (if it already does, {label} listens on loopback only: read the Caddyfile with --caddyfile, or probe from the host with --on-host)"
                    ),
                };
                row(
                    Status::Broken,
                    Some(Layer::Caddy),
                    "caddy-route-misses-live-service",
                    summary,
                )
                .next(caddy_route_next(ctx, s, vmid, route))
            } else {
                let candidates = match f.origin_ok {
                    Some(true) => vec![Layer::Caddy, Layer::Container],
                    _ => vec![Layer::Tunnel, Layer::Caddy, Layer::Container],
                };
                inconclusive(
                    "gateway-error-service-ok-unproven-chain",
                    candidates,
                    format!(
                        "{label} answers inside on {p}, but nothing proves the public chain reaches {ct} at all"
                    ),
                )
                .next(format!("on the PVE host: getent hosts {ct}.lan; curl -sS -H 'Host: {host}' http://127.0.0.1:8080{}", s.probe.path))
            }
        }
        Answer::Unreachable(FailureKind::Refused | FailureKind::Timeout)
        | Answer::BadStatus(_)
        | Answer::WrongService { .. } => service_fault(s, vmid, i).expect("a service fault"),
        Answer::Unreachable(k) => inconclusive(
            "gateway-error-internal-transport",
            vec![Layer::Caddy, Layer::Service],
            format!(
                "the public URL fails and the internal probe broke off ({})",
                k.as_str()
            ),
        ),
        _ => {
            // No internal view.
            if f.chain_reaches_container.is_some() {
                inconclusive(
                    "gateway-error-no-internal",
                    vec![Layer::Caddy, Layer::Service],
                    format!(
                        "the public URL of {} fails behind the tunnel while other requests reach {ct}; without the internal view Caddy's route and the service cannot be told apart",
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
                f.origin_ok,
                route_for(t, &s.name).filter(|r| {
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
                        "Caddy answers, but its route for {host} dials {h}, not the container's name {ct}.lan ({}): nothing of {ct} answers through it",
                        source.as_deref().unwrap_or("Caddy's configuration")
                    ),
                )
                .next(format!(
                    "fix the route's upstream to {ct}.lan in {} (2026: reverse_proxy {{re.service.2}}.lan:{{re.service.1}}), then systemctl reload caddy-cmux",
                    ctx.caddyfile
                ))
            } else if f.origin_ok == Some(true) {
                row(
                    Status::Broken,
                    Some(Layer::Container),
                    "container-unreachable",
                    format!(
                        "Caddy answers, but nothing of {ct} does (exec included): the container is stopped or {ct}.lan does not resolve from the host"
                    ),
                )
                .next(format!(
                    "on the PVE host: pct status {vmid}; getent hosts {ct}.lan; pct start {vmid}"
                ))
            } else if f.origin_ok == Some(false) {
                inconclusive(
                    "origin-unreachable",
                    vec![Layer::Tunnel, Layer::Caddy],
                    "cloudflared cannot reach Caddy: even a hostname Caddy answers itself gets a gateway error".into(),
                )
                .next("on the PVE host: systemctl status caddy-cmux cloudflared; curl -sS -o /dev/null -w '%{http_code}' http://127.0.0.1:8080/")
            } else {
                inconclusive(
                    "gateway-error-unknown",
                    vec![Layer::Tunnel, Layer::Caddy, Layer::Container, Layer::Service],
                    format!("the public URL of {} fails behind the edge and nothing else narrows it down", s.name),
                )
            }
        }
    }
}

/// A public answer that came from behind Caddy but is not this service's healthy answer.
fn decide_wrong_answer(
    ctx: &Context,
    f: &Facts,
    t: &TargetObservation,
    s: &Service,
    e: &Answer,
    i: &Answer,
) -> Row {
    let vmid = f.vmid;
    let label = service_label(s);
    let p = s.port;
    let what = describe_answer(e, s);
    match i {
        Answer::Healthy | Answer::MissingHeaders(_) | Answer::DoubledHeaders(_) => {
            let route = route_for(t, &s.name);
            let summary = match route {
                Some(RouteObservation {
                    upstream_host: Some(h),
                    upstream_port: Some(rp),
                    source,
                    ..
                }) if *rp != p => format!(
                    "Caddy sends {} to {h}:{rp}, where another service answers; {label} listens on {p}{}",
                    s.name,
                    source.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
                ),
                _ => format!(
                    "the public URL reaches a different service ({what}) while {label} answers correctly inside on {p}: Caddy routes to the wrong port"
                ),
            };
            row(Status::Broken, Some(Layer::Caddy), "caddy-route-to-wrong-service", summary)
                .next(caddy_route_next(ctx, s, vmid, route))
        }
        Answer::Unreachable(FailureKind::Refused) => service_down(s, vmid, "service-down-other-answers"),
        Answer::BadStatus(_) | Answer::WrongService { .. } => {
            let rule = if matches!(i, Answer::BadStatus(_)) {
                "service-error-status"
            } else {
                "other-process-on-port"
            };
            row(
                Status::Broken,
                Some(Layer::Service),
                rule,
                format!("{label} answers wrongly inside the container too: {}", describe_answer(i, s)),
            )
            .next(svc_next(s, vmid))
        }
        Answer::Unreachable(FailureKind::Timeout) => row(
            Status::Broken,
            Some(Layer::Service),
            "service-hangs",
            format!("{label} accepts connections on {p} but does not answer in time"),
        )
        .next(svc_next(s, vmid)),
        _ => inconclusive(
            "wrong-answer-no-internal",
            vec![Layer::Caddy, Layer::Service],
            format!(
                "the public URL answers wrongly ({what}); without the internal view a wrong Caddy port and a broken service cannot be told apart"
            ),
        ),
    }
}

/// Services with no public URL: the internal view alone decides.
fn decide_internal_only(s: &Service, vmid: u32, i: &Answer, f: &Facts) -> Row {
    let label = service_label(s);
    match i {
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
            format!("{label} answers without {}", h.join(", ")),
        )
        .next(svc_next(s, vmid)),
        Answer::Unreachable(FailureKind::Refused | FailureKind::Timeout)
        | Answer::BadStatus(_)
        | Answer::WrongService { .. } => service_fault(s, vmid, i).expect("a service fault"),
        Answer::Unreachable(k) => inconclusive(
            "internal-transport-error",
            vec![Layer::Service],
            format!(
                "the internal probe of {} broke off ({})",
                s.name,
                k.as_str()
            ),
        ),
        _ => inconclusive(
            "not-checkable",
            Vec::new(),
            format!(
                "{} is not routed, so only the internal view can check it: {}",
                s.name,
                f.internal_unavailable
                    .clone()
                    .unwrap_or_else(|| "no internal record".into())
            ),
        ),
    }
}

/// Runs the decision table over one target.
pub fn diagnose(ctx: &Context, t: &TargetObservation) -> TargetVerdict {
    let f = facts(ctx, t);
    let mut services = Vec::with_capacity(t.services.len());
    for so in &t.services {
        let Some(s) = ctx.catalog.get(&so.name) else {
            continue;
        };
        let e = external_answer(t, s, so);
        let i = classify(s, &so.internal);
        let r = decide(ctx, &f, t, s, so, &e, &i);
        let mut evidence = Vec::new();
        if let Some(url) = &so.url {
            evidence.push(format!(
                "external {url}: {} — {}",
                describe_probe(&so.external),
                describe_answer(&e, s)
            ));
        }
        evidence.push(format!(
            "internal 127.0.0.1:{}{}: {}{}",
            s.port,
            s.probe.path,
            describe_probe(&so.internal),
            if i == Answer::NotRun {
                String::new()
            } else {
                format!(" — {}", describe_answer(&i, s))
            }
        ));
        if let Some(route) = route_for(t, &s.name) {
            evidence.push(match (&route.upstream_host, route.upstream_port) {
                (Some(h), Some(p)) => format!(
                    "Caddy route for {}: {h}:{p}{}",
                    route.host,
                    route
                        .source
                        .as_ref()
                        .map(|s| format!(" ({s})"))
                        .unwrap_or_default()
                ),
                (Some(h), None) => format!("Caddy route for {}: {h}", route.host),
                _ => format!("Caddy has no route for {}", route.host),
            });
        }
        if r.status != Status::Healthy {
            if let Some(c) = &f.chain_reaches_container {
                evidence.push(c.clone());
            }
            if let Some(ok) = f.origin_ok {
                evidence.push(if ok {
                    "the origin check (a hostname Caddy answers itself) got Caddy's answer: edge, tunnel and Caddy are up".into()
                } else {
                    "the origin check (a hostname Caddy answers itself) failed too".into()
                });
            }
            if let (Some(u), Answer::NotRun) = (&f.internal_unavailable, &i) {
                evidence.push(format!("internal view unavailable: {u}"));
            }
        }
        services.push(Verdict {
            status: r.status,
            layer: r.layer,
            candidates: r.candidates,
            summary: r.summary,
            evidence,
            next_step: r.next_step,
            rule: r.rule,
        });
    }
    TargetVerdict {
        vmid: t.vmid,
        exec: channel_verdict(t),
        services,
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
