//! Observations: plain data about what the probes saw. No behaviour beyond small accessors.
//!
//! Probes (external, exec, host) produce these; the verdict engine reads them; the JSON report
//! serialises them as they are.

use serde::Serialize;

/// Why a request got no HTTP answer. Stable names: they appear in JSON output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The name did not resolve (NXDOMAIN, no such host).
    Dns,
    /// The connection was refused: nothing listens there.
    Refused,
    /// The TLS handshake failed (protocol level).
    Tls,
    /// The peer's certificate was rejected (self-signed, expired, wrong name, unknown CA).
    Certificate,
    /// No answer within the time allowed.
    Timeout,
    /// The connection closed before any answer.
    EmptyReply,
    /// The connection broke while the answer was being read.
    Receive,
    /// The peer spoke something that is not HTTP, or broke the protocol.
    Protocol,
    /// A redirect pointed off the probed host; it was not followed.
    Redirect,
    /// Anything else.
    Other,
}

impl FailureKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FailureKind::Dns => "dns",
            FailureKind::Refused => "refused",
            FailureKind::Tls => "tls",
            FailureKind::Certificate => "certificate",
            FailureKind::Timeout => "timeout",
            FailureKind::EmptyReply => "empty_reply",
            FailureKind::Receive => "receive",
            FailureKind::Protocol => "protocol",
            FailureKind::Redirect => "redirect",
            FailureKind::Other => "other",
        }
    }

    /// curl's exit codes (a stable contract) mapped onto failure kinds.
    pub(crate) fn from_curl_exit(code: i32) -> FailureKind {
        match code {
            5 | 6 => FailureKind::Dns,
            7 => FailureKind::Refused,
            28 => FailureKind::Timeout,
            35 => FailureKind::Tls,
            51 | 58 | 60 | 77 | 83 | 90 | 91 => FailureKind::Certificate,
            52 => FailureKind::EmptyReply,
            18 | 55 | 56 => FailureKind::Receive,
            1 | 3 | 8 | 16 | 92 => FailureKind::Protocol,
            _ => FailureKind::Other,
        }
    }
}

/// An HTTP answer, as far as the verdict engine needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HttpResponse {
    pub status: u16,
    /// Response headers that identify who answered and whether it is healthy, names in lower case.
    /// Serialised as an object; repeated headers are joined with ", ".
    #[serde(serialize_with = "headers_as_object")]
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body, decoded lossily as UTF-8.
    pub body: String,
    /// The body was longer than what was kept.
    pub body_truncated: bool,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
    pub(crate) fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }
}

fn headers_as_object<S: serde::Serializer>(
    headers: &[(String, String)],
    ser: S,
) -> Result<S::Ok, S::Error> {
    let mut map: std::collections::BTreeMap<&str, String> = std::collections::BTreeMap::new();
    for (k, v) in headers {
        map.entry(k.as_str())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    serde::Serialize::serialize(&map, ser)
}

impl HttpResponse {
    /// Keeps only the evidence headers and `extra` (lower-case names).
    pub(crate) fn retain_headers(&mut self, keep: &[&str], extra: &[String]) {
        self.headers
            .retain(|(k, _)| keep.contains(&k.as_str()) || extra.iter().any(|e| e == k));
    }
}

/// The outcome of one probe: an answer, a failure, or not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Probe {
    Response {
        #[serde(flatten)]
        response: HttpResponse,
        elapsed_ms: u64,
    },
    Failed {
        kind: FailureKind,
        message: String,
        elapsed_ms: u64,
    },
    /// The probe could not be run at all (reason says why); no evidence either way.
    NotRun { reason: String },
}

impl Probe {
    pub fn response(&self) -> Option<&HttpResponse> {
        match self {
            Probe::Response { response, .. } => Some(response),
            _ => None,
        }
    }
    pub fn failure(&self) -> Option<FailureKind> {
        match self {
            Probe::Failed { kind, .. } => Some(*kind),
            _ => None,
        }
    }
    pub(crate) fn not_run(reason: impl Into<String>) -> Probe {
        Probe::NotRun {
            reason: reason.into(),
        }
    }
}

/// Whether cmux-execd wants a token, judged from `GET /exec` (401: yes, 405: no).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum AuthMode {
    Required,
    Off,
    Unknown,
}

/// How the one exec round trip went (the internal channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ExecRun {
    /// The stream was read; records per service are in the service observations.
    Completed {
        /// The `exit` event's code; `None` when the stream ended without one.
        exit_code: Option<i32>,
        /// `error` events and parser remarks (malformed lines skipped, ...).
        notes: Vec<String>,
        /// curl was missing in the container; the bash-only fallback was used.
        used_fallback: bool,
        elapsed_ms: u64,
    },
    /// The stream was cut by pvediag's own deadline; what had arrived is kept.
    Incomplete { notes: Vec<String>, elapsed_ms: u64 },
    /// execd answered with a status other than 200 (401 unauthorized, 415, 400, ...).
    Rejected {
        status: u16,
        body: String,
        /// Cloudflare or cloudflared made this answer, not execd.
        from_edge: bool,
    },
    /// A gate of Cloudflare's edge answered (a challenge, an Access login or refusal, a block
    /// page): the call never reached cmux-execd.
    Gated { status: u16, gate: Gate },
    /// No HTTP answer at all.
    Failed { kind: FailureKind, message: String },
    /// Not attempted (no exec URL, exec not in catalog, --no-exec, ...).
    NotRun { reason: String },
}

impl ExecRun {
    /// The round trip went through tunnel and Caddy to execd and back.
    pub(crate) fn reached_execd(&self) -> bool {
        match self {
            ExecRun::Completed { .. } | ExecRun::Incomplete { .. } => true,
            ExecRun::Rejected {
                status, from_edge, ..
            } => !from_edge && matches!(status, 400 | 401 | 405 | 415),
            _ => false,
        }
    }
}

/// The internal channel: exec health, auth mode and the one round trip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExecChannel {
    /// The URL of execd used (secrets never appear in it).
    pub(crate) url: String,
    /// The URL is the public one (through edge, tunnel and Caddy), so a round trip proves that chain.
    pub(crate) via_public_url: bool,
    pub(crate) auth_mode: AuthMode,
    /// A token was sent.
    pub(crate) token_sent: bool,
    pub run: ExecRun,
    /// When the exec endpoint could not be used: the internal probes through `pct exec` on the host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) pct: Option<PctRun>,
}

/// The internal probes run through `pct exec VMID -- bash -s` on the PVE host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct PctRun {
    /// `local` or `ssh USER@HOST`.
    pub(crate) vantage: String,
    pub(crate) run: ExecRun,
}

impl ExecChannel {
    /// The internal probes ran (through execd or through pct).
    pub(crate) fn internal_ran(&self) -> bool {
        let done =
            |r: &ExecRun| matches!(r, ExecRun::Completed { .. } | ExecRun::Incomplete { .. });
        done(&self.run) || self.pct.as_ref().is_some_and(|p| done(&p.run))
    }
}

/// What the PVE host itself sees (`--on-host`, `--ssh`): each hop probed directly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostObservation {
    /// `local` or `ssh USER@HOST`.
    pub(crate) vantage: String,
    /// How the host script went: `completed` with its records, or `failed` (ssh refused, ...).
    pub(crate) run: ExecRun,
    /// Caddy's listener probed directly (e.g. `http://127.0.0.1:8080`).
    pub(crate) caddy_url: String,
    /// cloudflared's readiness (`GET /ready` on 127.0.0.1:20241-20245): the first port that answered.
    pub cloudflared: Probe,
    /// Caddy's admin API on the host (`GET http://127.0.0.1:2019/config/`): what Caddy has loaded.
    pub(crate) caddy_config: Probe,
    pub services: Vec<HostServiceObservation>,
    /// The identity section's lines (moved into [`TargetObservation::identity`]).
    #[serde(skip)]
    pub(crate) identity: crate::identity::HostLines,
}

/// One service from the host: through Caddy directly, and at the upstream Caddy dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostServiceObservation {
    pub(crate) name: String,
    /// `Host: <public hostname>` sent to Caddy's listener.
    pub caddy: Probe,
    /// `cmux-{vmid}.lan:PORT`, name resolution included.
    pub(crate) upstream_url: String,
    pub upstream: Probe,
}

/// One service's observations from every vantage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceObservation {
    pub name: String,
    pub(crate) port: u16,
    /// The public URL probed (None when the service is not routed).
    pub(crate) url: Option<String>,
    /// Through the tunnel, from where pvediag runs.
    pub external: Probe,
    /// Inside the container, `127.0.0.1:PORT`, through the exec channel.
    pub internal: Probe,
    /// How the public hostname was reached: what it resolved to, or the `--connect-to` address.
    /// `None` when no public request was made (or it ended before the name was looked up).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) dial: Option<Dial>,
}

/// How a public hostname was reached by the external probe.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "via", rename_all = "snake_case")]
pub(crate) enum Dial {
    /// `--connect-to`: dialled at this address; the name was not looked up (it is still the TLS
    /// name and the Host header).
    ConnectTo { host: String, address: String },
    /// The system's resolver gave these addresses (tried in this order).
    Dns {
        host: String,
        addresses: Vec<String>,
    },
    /// The name did not resolve: the resolver's error.
    DnsFailed { host: String, error: String },
}

impl Dial {
    /// One line of evidence: `NAME resolved to A, B` / `NAME did not resolve (...)` / `NAME was
    /// dialled at A (--connect-to)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Dial::ConnectTo { host, address } => format!(
                "{host} was dialled at {address} (--connect-to; not looked up), with its own name \
                 for TLS and Host"
            ),
            Dial::Dns { host, addresses } => {
                format!(
                    "{host} resolved to {} and was dialled there",
                    addresses.join(", ")
                )
            }
            Dial::DnsFailed { host, error } => format!("{host} did not resolve ({error})"),
        }
    }
}

/// The edge/tunnel/Caddy check that never touches the container: a request to a hostname under the
/// domain that no service route matches, which Caddy itself answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct OriginCheck {
    pub(crate) url: String,
    pub(crate) probe: Probe,
}

/// What Caddy's configuration says about one service's hostname (from a Caddyfile or the admin API).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RouteObservation {
    pub(crate) service: String,
    /// The public hostname that was matched against the route table.
    pub(crate) host: String,
    /// Where Caddy dials for it, e.g. `cmux-202.lan`; `None` when no route matches.
    pub(crate) upstream_host: Option<String>,
    pub(crate) upstream_port: Option<u16>,
    /// `file:line` (or admin API path) of the route.
    pub(crate) source: Option<String>,
    /// Where the route was read: a Caddyfile (what Caddy will load) or Caddy's admin API (what it
    /// has loaded). `None` when no route matched.
    pub(crate) from: Option<RouteFrom>,
}

/// Where a route was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RouteFrom {
    /// A Caddyfile (`--caddyfile`): what Caddy loads on its next reload, maybe not what it runs.
    Caddyfile,
    /// Caddy's admin API (`--caddy-admin`, or the host vantage): what Caddy runs now.
    AdminApi,
}

/// Everything observed about one target (VMID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetObservation {
    pub(crate) vmid: u32,
    pub exec: ExecChannel,
    pub(crate) origin: Option<OriginCheck>,
    pub services: Vec<ServiceObservation>,
    /// Caddy's routes for this target's hostnames, when its configuration was read.
    pub(crate) routes: Vec<RouteObservation>,
    /// The host vantage, when pvediag ran on (or reached) the PVE host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<HostObservation>,
    /// Behind the fronts: back ends and systemd units, from the same exec round trip (None when
    /// the internal probes did not run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) inside: Option<InsideView>,
    /// Who answered: the sandbox the exec call ran in, what it should be and why
    /// (see [`crate::identity`]).
    pub(crate) identity: crate::identity::IdentityObservation,
    /// The 2026 layout's CORS preflight: one `OPTIONS` to the origin-check name (which Caddy must
    /// answer itself, 204 with `access-control-allow-origin`), for a target behind the generic
    /// rule; `None` when it was not sent (seed layout, no origin check).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) preflight: Option<OriginCheck>,
}

// ---------------------------------------------------------------------------------------------
// Behind the fronts (issue 14)

/// One unit as `systemctl show` reported it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnitState {
    /// `cmux-devtools.service`.
    pub id: String,
    /// `loaded`, `not-found`, ...
    pub(crate) load_state: String,
    /// `active`, `activating`, `failed`, `inactive`, ...
    pub active_state: String,
    /// `running`, `auto-restart`, `dead`, `exited`, ...
    pub(crate) sub_state: String,
    /// Automatic restarts since the unit was last started by hand (or at boot).
    pub(crate) restarts: Option<u32>,
    /// Exit status of the main process's last run (Chrome's 21: its profile lock).
    pub(crate) exit_status: Option<i32>,
    /// When the main process last exited, as systemd writes it (`Mon 2026-11-30 20:01:13 UTC`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_exit: Option<String>,
    /// The last journal lines, fetched only when the service looked unhealthy.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) journal: Vec<String>,
}

impl UnitState {
    /// `failed (exit-code)`, `activating (auto-restart)`, ...
    pub(crate) fn describe(&self) -> String {
        let mut s = format!("{} is {} ({})", self.id, self.active_state, self.sub_state);
        if self.load_state != "loaded" {
            s.push_str(&format!(", load state {}", self.load_state));
        }
        if let Some(n) = self.restarts.filter(|n| *n > 0) {
            s.push_str(&format!(
                ", restarted {n} time{} by systemd",
                if n == 1 { "" } else { "s" }
            ));
        }
        if let Some(st) = self.exit_status.filter(|s| *s != 0) {
            s.push_str(&format!(", last exit status {st}"));
        }
        if let Some(t) = &self.last_exit {
            s.push_str(&format!(" at {t}"));
        }
        s
    }

    /// Running as it should.
    pub fn is_running(&self) -> bool {
        self.active_state == "active" && (self.sub_state == "running" || self.sub_state == "-")
    }

    /// The unit is not there at all (an older image).
    pub(crate) fn not_found(&self) -> bool {
        self.load_state == "not-found"
    }
}

/// The systemd view of one exec round trip, assembled from its records.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct SystemdView {
    /// Every unit systemd reported, in the order asked.
    pub(crate) units: Vec<UnitState>,
    /// Why there is no unit state (no systemctl, not booted with systemd, ...); said once.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) unavailable: Option<String>,
}

impl SystemdView {
    pub(crate) fn unit(&self, unit: &str) -> Option<&UnitState> {
        let id = unit_id(unit);
        self.units.iter().find(|u| u.id == id)
    }
}

/// The key systemd reports a unit under (`Id=`): a bare name is a `.service`.
pub(crate) fn unit_id(unit: &str) -> String {
    if unit.contains('.') && !unit.ends_with('.') {
        unit.to_string()
    } else {
        format!("{unit}.service")
    }
}

/// What the exec round trip saw behind the fronts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct InsideView {
    /// One per catalog service with a back end of its own (port-header back ends are the catalog's
    /// entry on that port and are not repeated here).
    pub(crate) backends: Vec<BackendObservation>,
    /// The units' state; None when the command brought no unit record at all.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) systemd: Option<SystemdView>,
}

impl InsideView {
    pub fn backend(&self, service: &str) -> Option<&BackendObservation> {
        self.backends.iter().find(|b| b.service == service)
    }
}

/// One back end, checked at `127.0.0.1:{port}` inside the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BackendObservation {
    /// The front's catalog name.
    pub(crate) service: String,
    pub(crate) port: u16,
    #[serde(flatten)]
    pub(crate) check: BackendCheckObservation,
}

/// What the back end's check saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "check", rename_all = "snake_case")]
pub(crate) enum BackendCheckObservation {
    /// An HTTP request (Chrome's `/json/version`).
    Http { probe: Probe },
    /// The first line the server sent (VNC's `RFB 003.008`), or why there was none.
    Banner {
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        failure: Option<FailureKind>,
    },
    /// No record (the stream was cut, or the channel failed).
    NotRun { reason: String },
}

impl TargetObservation {
    pub(crate) fn service(&self, name: &str) -> Option<&ServiceObservation> {
        self.services.iter().find(|s| s.name == name)
    }
}

/// A gate of the edge: Cloudflare answered for the zone's security settings before the request
/// reached the tunnel. A browser may pass it (a challenge, an Access login); a plain HTTP client
/// never does, so nothing behind it — tunnel, Caddy, container, service — was observed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// A bot challenge (Bot Fight Mode, a WAF managed challenge, Under Attack mode):
    /// `cf-mitigated: challenge`, or Cloudflare's 403/503 "Just a moment..." page.
    Challenge { status: u16 },
    /// Cloudflare Access sends the client to its login: a redirect to
    /// `https://<team>.cloudflareaccess.com/cdn-cgi/access/login/<host>?...`.
    AccessLogin {
        status: u16,
        /// `<team>` of `<team>.cloudflareaccess.com`, when the redirect names it.
        #[serde(skip_serializing_if = "Option::is_none")]
        team: Option<String>,
    },
    /// Cloudflare Access refused the request (401/403): a wrong service token, or none sent to an
    /// application that only accepts service tokens.
    AccessDenied { status: u16 },
    /// A Cloudflare block page: `error code: 1010` (the client's signature is banned), 1020 (a
    /// firewall rule), or another 10xx.
    Blocked { status: u16, code: String },
}

impl Gate {
    #[cfg(test)]
    /// The status Cloudflare answered with.
    pub(crate) fn status(&self) -> u16 {
        match self {
            Gate::Challenge { status }
            | Gate::AccessLogin { status, .. }
            | Gate::AccessDenied { status }
            | Gate::Blocked { status, .. } => *status,
        }
    }

    /// Is this Cloudflare Access (and not the WAF or bot settings)?
    pub(crate) fn is_access(&self) -> bool {
        matches!(self, Gate::AccessLogin { .. } | Gate::AccessDenied { .. })
    }

    /// Its name: `Cloudflare's bot challenge`, `the Cloudflare Access login`, ...
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Gate::Challenge { .. } => "Cloudflare's bot challenge",
            Gate::AccessLogin { .. } => "the Cloudflare Access login",
            Gate::AccessDenied { .. } => "Cloudflare Access's refusal",
            Gate::Blocked { .. } => "a Cloudflare block page",
        }
    }

    /// A table cell: `challenge`, `access`, `access denied`, `blocked 1020`.
    pub(crate) fn cell(&self) -> String {
        match self {
            Gate::Challenge { .. } => "challenge".into(),
            Gate::AccessLogin { .. } => "access login".into(),
            Gate::AccessDenied { .. } => "access denied".into(),
            Gate::Blocked { code, .. } => format!("blocked {code}"),
        }
    }

    /// What it is, in a few words: `Cloudflare's bot challenge (403, cf-mitigated: challenge)`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Gate::Challenge { status } => {
                format!("Cloudflare's bot challenge ({status} \"Just a moment...\", cf-mitigated: challenge)")
            }
            Gate::AccessLogin { status, team } => format!(
                "a Cloudflare Access login ({status} to {}.cloudflareaccess.com/cdn-cgi/access/login)",
                team.as_deref().unwrap_or("<team>")
            ),
            Gate::AccessDenied { status } => {
                format!("Cloudflare Access refusing the request ({status})")
            }
            Gate::Blocked { status, code } => format!(
                "a Cloudflare block page ({status}, error code {code}: {})",
                match code.as_str() {
                    "1010" => "the client's signature is banned",
                    "1020" => "a firewall rule blocks it",
                    "1015" => "rate limited",
                    _ => "access denied by the zone's security settings",
                }
            ),
        }
    }
}
