//! The built-in lab: the whole routing chain of a cmux sandbox, simulated on 127.0.0.1, in-process on
//! the current tokio runtime. Used by `pvediag demo` and as the fixture of integration tests.
//!
//! ```text
//! client --TLS--> edge (Cloudflare + cloudflared) --> host proxy (Caddy, seed layout)
//!        --> cmux-{vmid}.lan:{port} (the lab's container registry) --> service on a random port
//! ```
//!
//! Every server is hand-rolled on tokio streams ([`http`]), so every byte of every answer is the
//! lab's choice. The answers copy the real components (see `shared/reference/cmux-stack.md`).

pub(crate) mod accounting;
pub mod caddy;
pub(crate) mod container;
pub mod edge;
pub(crate) mod host;
pub mod http;
pub(crate) mod identity;
pub mod pve;
pub(crate) mod systemd;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpSocket;
use tokio::task::JoinHandle;

use container::ContainerRuntime;

/// The whole chain's configuration.
#[derive(Debug, Clone)]
pub struct LabConfig {
    /// e.g. `example.test`.
    pub domain: String,
    pub containers: Vec<ContainerSpec>,
    /// The zone's security settings in front of everything: a challenge, Cloudflare Access.
    pub edge_gate: edge::Gate,
    /// false: the edge answers 530 / `error code: 1033` for every host.
    pub tunnel_up: bool,
    /// false: the host proxy does not listen -> the edge answers Cloudflare 502.
    pub origin_up: bool,
    /// The host proxy's Caddyfile routes (seed layout).
    pub routes: Vec<RouteSpec>,
    /// Injected latency per hop.
    pub delays: Delays,
    /// The 2026 generic rule, where `routes` holds it ([`caddy::GENERIC`]).
    pub generic: GenericRule,
    /// Serve a small Proxmox VE API (nodes, containers, their configs with hostnames and tokens).
    pub pve_api: bool,
    /// VMIDs whose hostname the LAN's DNS does not publish: `{hostname}.lan` does not resolve.
    pub unpublished: Vec<u32>,
    /// The tunnel's connectors flap: the edge answers every other request with 530 / `error code:
    /// 1033` and lets the others through.
    pub tunnel_flapping: bool,
}

/// The 2026 layout's one generic Caddy rule, and the ways it goes wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenericRule {
    /// The Host regexp: `^port-(\d+)-([a-z0-9-]+)\.`.
    pub regex: String,
    /// What Caddy appends to the instance to dial it: `.lan`.
    pub upstream_suffix: String,
    /// `header_down -Access-Control-Allow-*`: the upstream's own CORS headers are dropped, so
    /// Caddy's are the only ones.
    pub strip_upstream_cors: bool,
    /// `@options method OPTIONS` answered by Caddy itself (204).
    pub answer_options: bool,
}

impl Default for GenericRule {
    fn default() -> Self {
        GenericRule {
            regex: caddy::GENERIC_REGEX.into(),
            upstream_suffix: ".lan".into(),
            strip_upstream_cors: true,
            answer_options: true,
        }
    }
}

impl Default for LabConfig {
    /// One healthy container (VMID 202, no token), seed routes fixed, domain `example.test`.
    fn default() -> Self {
        LabConfig {
            domain: DOMAIN.to_string(),
            containers: vec![healthy_container(VMID, None)],
            edge_gate: edge::Gate::Open,
            tunnel_up: true,
            origin_up: true,
            routes: seed_routes(),
            delays: Delays::default(),
            generic: GenericRule::default(),
            pve_api: false,
            unpublished: Vec::new(),
            tunnel_flapping: false,
        }
    }
}

/// One container.
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    pub(crate) vmid: u32,
    /// The container's hostname (`cmux-{vmid}`, or `pvelxc-<8 hex>` for 2026 containers): what
    /// `{hostname}.lan` resolves for Caddy and the PVE API's config `hostname`.
    pub hostname: String,
    /// false: `cmux-{vmid}.lan` does not resolve for the host proxy -> Caddy 502.
    pub(crate) running: bool,
    /// Some: execd requires this token; None: auth off.
    pub exec_token: Option<String>,
    pub services: Vec<ServiceSpec>,
    /// Some(other): the LAN's DHCP/DNS sends `cmux-{vmid}.lan` to container `other` (a stale
    /// lease, a reused hostname); None: to this container.
    pub(crate) lan_name_to: Option<u32>,
}

/// A service listening on a container port.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceSpec {
    pub kind: ServiceKind,
    pub(crate) port: u16,
    pub behaviour: Behaviour,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ServiceKind {
    Exec,
    Worker,
    Vscode,
    Proxy,
    Vnc,
    Cdp,
    Xterm,
    Preview,
    /// TigerVNC behind noVNC (`cmux-tigervnc`, 127.0.0.1:5901): greets with `RFB 003.008\n`.
    VncServer,
    /// Chrome DevTools behind cmux-cdp-proxy (`cmux-devtools`, 127.0.0.1:39382).
    Chrome,
    /// The Go worker daemon of the 2026 generation (39377; `/health`).
    WorkerDaemon,
}

impl ServiceKind {
    pub(crate) const ALL: [ServiceKind; 8] = [
        ServiceKind::Exec,
        ServiceKind::Worker,
        ServiceKind::Vscode,
        ServiceKind::Proxy,
        ServiceKind::Vnc,
        ServiceKind::Cdp,
        ServiceKind::Xterm,
        ServiceKind::Preview,
    ];

    /// The back ends the fronts of the catalog need (reference §5a); not catalog entries.
    pub(crate) const BACK_ENDS: [ServiceKind; 2] = [ServiceKind::VncServer, ServiceKind::Chrome];

    /// The systemd unit that runs it in a cmux container (None: no unit, the user's dev server).
    pub(crate) fn unit(self) -> Option<&'static str> {
        Some(match self {
            ServiceKind::Exec => "cmux-execd",
            ServiceKind::Worker => "cmux-worker",
            ServiceKind::Vscode => "openvscode-server",
            ServiceKind::Proxy => "cmux-proxy",
            ServiceKind::Vnc => "cmux-vnc-proxy",
            ServiceKind::Cdp => "cmux-cdp-proxy",
            ServiceKind::Xterm => "cmux-pty",
            ServiceKind::Preview => return None,
            ServiceKind::VncServer => "cmux-tigervnc",
            ServiceKind::Chrome => "cmux-devtools",
            ServiceKind::WorkerDaemon => "cmux-worker-daemon",
        })
    }

    /// The port in the 2026 table: the Node worker on 39376, the Go daemon on 39377.
    pub(crate) fn port_2026(self) -> u16 {
        match self {
            ServiceKind::Worker => 39376,
            ServiceKind::WorkerDaemon => 39377,
            k => k.seed_port(),
        }
    }

    /// The port in the seed's table.
    pub fn seed_port(self) -> u16 {
        match self {
            ServiceKind::Exec => 39375,
            ServiceKind::Worker => 39377,
            ServiceKind::Vscode => 39378,
            ServiceKind::Proxy => 39379,
            ServiceKind::Vnc => 39380,
            ServiceKind::Cdp => 39381,
            ServiceKind::Xterm => 39383,
            ServiceKind::Preview => 5173,
            ServiceKind::VncServer => 5901,
            ServiceKind::Chrome => 39382,
            // Not a seed service; where the 2026 table has it.
            ServiceKind::WorkerDaemon => 39377,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Healthy,
    /// xterm without `access-control-allow-origin` (other kinds: same as Healthy).
    NoCors,
    /// 500 `Internal Server Error` for every request.
    Error500,
    /// Accepts and reads the request, never answers.
    Hang,
    /// Refuses (not listening) until this long after the lab started; healthy after.
    RecoversAfter(Duration),
    /// Listens on the container's 127.0.0.1 only: healthy inside, refused from the host (Caddy).
    LoopbackOnly,
    /// Healthy now, but its unit has been restarted again and again (systemd's `NRestarts`).
    CrashLooping,
}

/// A Caddyfile route: requests for `{service}-{vmid}.*` go to `cmux-{vmid}.lan:{port}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteSpec {
    pub(crate) service: String,
    pub(crate) port: u16,
    /// A literal upstream host instead of `cmux-{re.vmid.1}.lan` (a hand-edited route).
    pub(crate) upstream: Option<String>,
}

/// Injected latency per hop, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delays {
    pub edge_ms: u64,
    pub caddy_ms: u64,
    pub exec_ms: u64,
    pub service_ms: u64,
}

/// The scenarios' domain and VMID.
pub(crate) const DOMAIN: &str = "example.test";
pub const VMID: u32 = 202;
/// The execd token of every scenario's container.
pub const SCENARIO_TOKEN: &str = "3f9a1c7e5b2d4086a1e3c5b7d9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4";
/// The Cloudflare Access service token the lab's Access lets through (`behind-access*`).
pub(crate) const LAB_ACCESS_TEAM: &str = "pvediag-lab";
pub const LAB_ACCESS_CLIENT_ID: &str = "8c1d2e3f4a5b6c7d8e9f0a1b2c3d4e5f.access";
pub const LAB_ACCESS_CLIENT_SECRET: &str =
    "a7c3e9f1b5d7092846e1c3a5f7b9d1e3c5a7f9b1d3e5c7a9f1b3d5e7c9a1f3b5";

/// The lab's Access in front of every hostname, letting the lab's service token through.
pub fn lab_access() -> edge::Gate {
    edge::Gate::Access {
        team: LAB_ACCESS_TEAM.into(),
        client_id: LAB_ACCESS_CLIENT_ID.into(),
        client_secret: LAB_ACCESS_CLIENT_SECRET.into(),
    }
}

/// The wrong token the client gets in `exec-unauthorized`.
pub const WRONG_TOKEN: &str = "0000000000000000000000000000000000000000000000000000000000000bad";

/// All eight services at their seed ports and the back ends they front, healthy.
pub fn healthy_container(vmid: u32, token: Option<String>) -> ContainerSpec {
    ContainerSpec {
        vmid,
        hostname: crate::target::default_instance(vmid),
        running: true,
        exec_token: token,
        services: ServiceKind::ALL
            .into_iter()
            .chain(ServiceKind::BACK_ENDS)
            .map(|kind| ServiceSpec {
                kind,
                port: kind.seed_port(),
                behaviour: Behaviour::Healthy,
            })
            .collect(),
        lan_name_to: None,
    }
}

/// The hostname cmux gives a new container: `pvelxc-` and 8 hex digits (here derived from the VMID,
/// so a lab is the same every run).
pub fn pvelxc_hostname(vmid: u32) -> String {
    format!(
        "pvelxc-{:08x}",
        vmid.wrapping_mul(2_654_435_761) ^ 0x5a5a_0000
    )
}

/// A healthy 2026 container: hostname `pvelxc-…`, the Node worker on 39376, the Go worker daemon
/// on 39377, everything else at the seed ports.
pub(crate) fn container_2026(vmid: u32, token: Option<String>) -> ContainerSpec {
    let mut services: Vec<ServiceSpec> = ServiceKind::ALL
        .into_iter()
        .chain([ServiceKind::WorkerDaemon])
        .chain(ServiceKind::BACK_ENDS)
        .map(|kind| ServiceSpec {
            kind,
            port: kind.port_2026(),
            behaviour: Behaviour::Healthy,
        })
        .collect();
    services.sort_by_key(|s| s.port);
    ContainerSpec {
        vmid,
        hostname: pvelxc_hostname(vmid),
        running: true,
        exec_token: token,
        services,
        lan_name_to: None,
    }
}

/// The 2026 route table: the one generic rule.
pub(crate) fn generic_routes() -> Vec<RouteSpec> {
    vec![RouteSpec {
        service: caddy::GENERIC.into(),
        port: 0,
        upstream: None,
    }]
}

/// A 2026 fleet: `n` healthy 2026 containers (hostnames `pvelxc-…`) behind the generic rule,
/// with the lab's PVE API (so VMIDs resolve to hostnames).
pub fn fleet_2026(n: usize, first_vmid: u32, token: Option<String>, delays: Delays) -> LabConfig {
    LabConfig {
        containers: (0..n as u32)
            .map(|i| container_2026(first_vmid + i, token.clone()))
            .collect(),
        routes: generic_routes(),
        pve_api: true,
        delays,
        ..LabConfig::default()
    }
}

/// A fleet for benchmarks and `pvediag demo --containers N`: `n` healthy containers with VMIDs
/// `first_vmid..first_vmid + n`, all with the same execd token, the seed routes fixed, and the
/// same injected latency at every hop.
pub fn fleet(n: usize, first_vmid: u32, token: Option<String>, delays: Delays) -> LabConfig {
    LabConfig {
        domain: DOMAIN.to_string(),
        containers: (0..n as u32)
            .map(|i| healthy_container(first_vmid + i, token.clone()))
            .collect(),
        edge_gate: edge::Gate::Open,
        tunnel_up: true,
        origin_up: true,
        routes: seed_routes(),
        delays,
        ..LabConfig::default()
    }
}

impl Delays {
    /// The same delay at every hop.
    pub fn uniform(ms: u64) -> Delays {
        Delays {
            edge_ms: ms,
            caddy_ms: ms,
            exec_ms: ms,
            service_ms: ms,
        }
    }
}

/// The seed's route table with the xterm port fixed (39383), in the seed's order.
pub(crate) fn seed_routes() -> Vec<RouteSpec> {
    [
        ("vscode", 39378),
        ("worker", 39377),
        ("xterm", 39383),
        ("exec", 39375),
        ("vnc", 39380),
        ("preview", 5173),
    ]
    .into_iter()
    .map(|(s, p)| RouteSpec {
        service: s.to_string(),
        port: p,
        upstream: None,
    })
    .collect()
}

/// A named scenario for `pvediag demo --scenario NAME`.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub(crate) name: &'static str,
    pub(crate) description: &'static str,
    pub config: LabConfig,
    /// The exec token the client should use (may differ from the container's).
    pub client_token: Option<String>,
    /// The public URL template of the scenario's routing layout.
    pub url_template: &'static str,
    /// The Access service token (id, secret) the client should send, if any.
    pub(crate) client_access: Option<(String, String)>,
}

pub const SCENARIOS: &[&str] = &[
    "seed",
    "healthy",
    "caddy-port",
    "service-down",
    "tunnel-down",
    "exec-unauthorized",
    "cors-missing",
    "wrong-service",
    "container-down",
    "caddy-down",
    "preview-off",
    "loopback-only",
    "later-layout",
    "later-service-down",
    "vnc-server-down",
    "chrome-down",
    "crash-loop",
    "bot-challenge",
    "behind-access",
    "behind-access-token",
    // Mixed faults (issue 10): more than one thing wrong at once.
    "route-wrong-and-down",
    "worker-hung",
    "two-vmids",
    "port-and-loopback",
    "error-and-cors",
    "unauthorized-and-down",
    "cdp-down-and-route",
    "preview-off-and-port",
    "container-down-caddy-ok",
    "tunnel-flapping",
    "origin-check-elsewhere",
    "lan-name-to-other-sandbox",
    "route-to-other-sandbox",
];

fn route_port(routes: &mut [RouteSpec], service: &str, port: u16) {
    for r in routes.iter_mut().filter(|r| r.service == service) {
        r.port = port;
    }
}

fn with_behaviour(mut c: ContainerSpec, kind: ServiceKind, b: Behaviour) -> ContainerSpec {
    for s in c.services.iter_mut().filter(|s| s.kind == kind) {
        s.behaviour = b;
    }
    c
}

fn without(mut c: ContainerSpec, kind: ServiceKind) -> ContainerSpec {
    c.services.retain(|s| s.kind != kind);
    c
}

/// The public URL template of the later layout.
pub const LATER_TEMPLATE: &str = "https://port-{port}-cmux-{vmid}.{domain}";

/// The named scenario: one container (VMID 202), domain `example.test`.
pub fn scenario(name: &str) -> Option<Scenario> {
    let token = Some(SCENARIO_TOKEN.to_string());
    let ct = healthy_container(VMID, token.clone());
    let base = LabConfig {
        domain: DOMAIN.to_string(),
        containers: vec![ct.clone()],
        edge_gate: edge::Gate::Open,
        tunnel_up: true,
        origin_up: true,
        routes: seed_routes(),
        delays: Delays::default(),
        ..LabConfig::default()
    };
    let mut client_token = token.clone();
    let url_template = crate::target::DEFAULT_TEMPLATE;
    let mut client_access = None;
    let (name, description, config): (&'static str, &'static str, LabConfig) = match name {
        "seed" => {
            let mut c = base;
            route_port(&mut c.routes, "xterm", 39376);
            (
                "seed",
                "the seed incident: Caddy routes xterm to 39376 where nothing listens; cmux-pty is healthy on 39383",
                c,
            )
        }
        "healthy" => ("healthy", "everything works", base),
        "caddy-port" => {
            let mut c = base;
            route_port(&mut c.routes, "vnc", 39388);
            (
                "caddy-port",
                "Caddy routes vnc to 39388, a closed port; noVNC is healthy on 39380",
                c,
            )
        }
        "service-down" => {
            let mut c = base;
            c.containers = vec![without(ct, ServiceKind::Vscode)];
            (
                "service-down",
                "openvscode-server is not running (39378 closed); the route is correct",
                c,
            )
        }
        "tunnel-down" => {
            let mut c = base;
            c.tunnel_up = false;
            (
                "tunnel-down",
                "cloudflared has no edge connection: Cloudflare answers 530 / error 1033 for every host",
                c,
            )
        }
        "exec-unauthorized" => {
            client_token = Some(WRONG_TOKEN.to_string());
            (
                "exec-unauthorized",
                "execd requires a token and the client holds a different one: 401 on /exec",
                base,
            )
        }
        "cors-missing" => {
            let mut c = base;
            c.containers = vec![with_behaviour(ct, ServiceKind::Xterm, Behaviour::NoCors)];
            (
                "cors-missing",
                "cmux-pty answers /sessions without access-control-allow-origin: browsers block the terminal",
                c,
            )
        }
        "wrong-service" => {
            let mut c = base;
            route_port(&mut c.routes, "xterm", 5173);
            (
                "wrong-service",
                "Caddy routes xterm to 5173: the Vite dev server answers 200 text/html for every path",
                c,
            )
        }
        "container-down" => {
            let mut c = base;
            c.containers[0].running = false;
            (
                "container-down",
                "the container is stopped: cmux-202.lan does not resolve, Caddy answers 502",
                c,
            )
        }
        "caddy-down" => {
            let mut c = base;
            c.origin_up = false;
            (
                "caddy-down",
                "caddy-cmux is not listening on :8080: Cloudflare answers 502 for every host",
                c,
            )
        }
        "preview-off" => {
            let mut c = base;
            c.containers = vec![without(ct, ServiceKind::Preview)];
            (
                "preview-off",
                "no dev server on 5173 (optional); everything else is healthy",
                c,
            )
        }
        "loopback-only" => {
            let mut c = base;
            c.containers = vec![with_behaviour(
                ct,
                ServiceKind::Xterm,
                Behaviour::LoopbackOnly,
            )];
            (
                "loopback-only",
                "cmux-pty listens on 127.0.0.1:39383 only: healthy inside, Caddy's correct route gets refused",
                c,
            )
        }
        "bot-challenge" => {
            let mut c = base;
            c.edge_gate = edge::Gate::Challenge;
            (
                "bot-challenge",
                "Bot Fight Mode challenges every request (403 \"Just a moment...\", cf-mitigated: challenge); behind it everything works",
                c,
            )
        }
        "behind-access" => {
            let mut c = base;
            c.edge_gate = lab_access();
            (
                "behind-access",
                "Cloudflare Access in front of every hostname (302 to the Access login), no service token given; behind it everything works",
                c,
            )
        }
        "behind-access-token" => {
            let mut c = base;
            c.edge_gate = lab_access();
            client_access = Some((
                LAB_ACCESS_CLIENT_ID.to_string(),
                LAB_ACCESS_CLIENT_SECRET.to_string(),
            ));
            (
                "behind-access-token",
                "Cloudflare Access in front of every hostname, and pvediag holds the lab's service token (as --access-token-file): everything works",
                c,
            )
        }
        "route-wrong-and-down" => {
            let mut c = base;
            route_port(&mut c.routes, "xterm", 5173);
            c.containers = vec![without(ct, ServiceKind::Vscode)];
            (
                "route-wrong-and-down",
                "Caddy routes xterm to 5173 where the dev server answers, and openvscode-server is not running",
                c,
            )
        }
        "worker-hung" => {
            let mut c = base;
            c.containers = vec![with_behaviour(ct, ServiceKind::Worker, Behaviour::Hang)];
            (
                "worker-hung",
                "the exec channel works, but the worker accepts connections and never answers",
                c,
            )
        }
        "two-vmids" => {
            let mut c = base;
            let mut other = healthy_container(VMID + 1, token.clone());
            other.running = false;
            c.containers = vec![
                with_behaviour(ct, ServiceKind::Xterm, Behaviour::NoCors),
                other,
            ];
            (
                "two-vmids",
                "two containers, two faults: 202's cmux-pty drops CORS, 203 is stopped",
                c,
            )
        }
        "port-and-loopback" => {
            let mut c = base;
            route_port(&mut c.routes, "vnc", 39388);
            c.containers = vec![with_behaviour(
                ct,
                ServiceKind::Xterm,
                Behaviour::LoopbackOnly,
            )];
            (
                "port-and-loopback",
                "Caddy routes vnc to a closed port, and cmux-pty listens on 127.0.0.1 only behind a correct route",
                c,
            )
        }
        "error-and-cors" => {
            let mut c = base;
            let ct = with_behaviour(ct, ServiceKind::Vscode, Behaviour::Error500);
            c.containers = vec![with_behaviour(ct, ServiceKind::Xterm, Behaviour::NoCors)];
            (
                "error-and-cors",
                "openvscode-server answers 500, and cmux-pty answers without access-control-allow-origin",
                c,
            )
        }
        "unauthorized-and-down" => {
            let mut c = base;
            c.containers = vec![without(ct, ServiceKind::Vscode)];
            client_token = Some(WRONG_TOKEN.to_string());
            (
                "unauthorized-and-down",
                "the client's exec token is wrong (no internal view), and openvscode-server is not running",
                c,
            )
        }
        "cdp-down-and-route" => {
            let mut c = base;
            route_port(&mut c.routes, "worker", 39399);
            c.containers = vec![without(ct, ServiceKind::Cdp)];
            (
                "cdp-down-and-route",
                "the CDP proxy (not routed) is down, and Caddy routes worker to a closed port",
                c,
            )
        }
        "preview-off-and-port" => {
            let mut c = base;
            route_port(&mut c.routes, "vnc", 39388);
            c.containers = vec![without(ct, ServiceKind::Preview)];
            (
                "preview-off-and-port",
                "no dev server on 5173 (optional, normal), and Caddy routes vnc to a closed port",
                c,
            )
        }
        "container-down-caddy-ok" => {
            let mut c = base;
            c.containers[0].running = false;
            c.containers
                .push(healthy_container(VMID + 1, token.clone()));
            (
                "container-down-caddy-ok",
                "202 is stopped while 203 behind the same Caddy and tunnel is healthy",
                c,
            )
        }
        "tunnel-flapping" => {
            let mut c = base;
            c.tunnel_flapping = true;
            (
                "tunnel-flapping",
                "the tunnel's connectors flap: Cloudflare answers every other request with 530 / error 1033",
                c,
            )
        }
        "origin-check-elsewhere" => {
            let mut c = base;
            c.routes.push(RouteSpec {
                service: caddy::FALLBACK.into(),
                port: 3000,
                upstream: None,
            });
            c.containers = vec![without(ct, ServiceKind::Vscode)];
            (
                "origin-check-elsewhere",
                "Caddy sends every unmatched hostname (the origin check's too) to a dashboard on another host that is down; openvscode-server is not running",
                c,
            )
        }
        "later-layout" | "later-service-down" => {
            // An older container (hostname cmux-202) on the 2026 images, behind the generic rule.
            let mut c = base;
            c.routes = generic_routes();
            let mut c26 = container_2026(VMID, token.clone());
            c26.hostname = crate::target::default_instance(VMID);
            if name == "later-service-down" {
                c.containers = vec![without(c26, ServiceKind::Vscode)];
                (
                    "later-service-down",
                    "the 2026 layout (https://port-{port}-cmux-{vmid}.DOMAIN, one generic Caddy rule); openvscode-server is not running",
                    c,
                )
            } else {
                c.containers = vec![c26];
                (
                    "later-layout",
                    "the 2026 layout: https://port-{port}-cmux-{vmid}.DOMAIN, one generic Caddy rule, CORS from Caddy; everything works",
                    c,
                )
            }
        }
        "vnc-server-down" => {
            let mut c = base;
            c.containers = vec![without(ct, ServiceKind::VncServer)];
            (
                "vnc-server-down",
                "TigerVNC (cmux-tigervnc, 127.0.0.1:5901) keeps crashing; noVNC still serves /vnc.html: users see a black, disconnected desktop",
                c,
            )
        }
        "chrome-down" => {
            let mut c = base;
            c.containers = vec![without(ct, ServiceKind::Chrome)];
            (
                "chrome-down",
                "Chrome (cmux-devtools, 127.0.0.1:39382) exits 21 on every start (a cloned profile lock); cmux-cdp-proxy answers 502 itself",
                c,
            )
        }
        "crash-loop" => {
            let mut c = base;
            c.containers = vec![with_behaviour(
                ct,
                ServiceKind::Xterm,
                Behaviour::CrashLooping,
            )];
            (
                "crash-loop",
                "cmux-pty answers now, but systemd has restarted it 17 times: it crashes and comes back",
                c,
            )
        }
        "lan-name-to-other-sandbox" => {
            // 202 runs, but the LAN's DHCP/DNS sends cmux-202.lan to 203 (a stale lease).
            let mut c = base;
            let mut c202 = ct;
            c202.lan_name_to = Some(VMID + 1);
            c.containers = vec![c202, healthy_container(VMID + 1, token.clone())];
            (
                "lan-name-to-other-sandbox",
                "cmux-202.lan resolves to sandbox 203 (a stale DHCP lease): every URL of 202 answers 200 from 203",
                c,
            )
        }
        "route-to-other-sandbox" => {
            // A hand-edited route: xterm dials a literal cmux-203.lan, whatever the VMID.
            let mut c = base;
            c.containers = vec![ct, healthy_container(VMID + 1, token.clone())];
            for r in c.routes.iter_mut().filter(|r| r.service == "xterm") {
                r.upstream = Some(format!("cmux-{}.lan", VMID + 1));
            }
            (
                "route-to-other-sandbox",
                "Caddy's xterm route dials a literal cmux-203.lan: the terminal of 202 is sandbox 203's",
                c,
            )
        }
        _ => return None,
    };
    Some(Scenario {
        name,
        description,
        config,
        client_token,
        url_template,
        client_access,
    })
}

/// The scenarios that exist in the 2026 layout (`pvediag demo --layout 2026 --scenario NAME`): the
/// seed's that make sense where one generic rule routes every port, and the 2026 layout's own.
/// Not here: `seed`, `caddy-port` and `wrong-service` (Caddy has no per-service port to get wrong)
/// and `cors-missing` (Caddy sets the CORS headers itself).
pub(crate) const SCENARIOS_2026: &[&str] = &[
    "healthy",
    "service-down",
    "tunnel-down",
    "exec-unauthorized",
    "container-down",
    "caddy-down",
    "preview-off",
    "loopback-only",
    "generic-regex",
    "upstream-suffix",
    "cors-doubled",
    "options-unanswered",
    "worker-daemon",
    "hostname-unresolved",
    "mixed-host",
    "vnc-server-down",
    "chrome-down",
    "crash-loop",
    "lan-name-to-other-sandbox",
];

/// The same faults on 2026 containers behind the generic rule, with the lab's PVE API.
fn to_2026(mut c: LabConfig) -> LabConfig {
    c.containers = c
        .containers
        .into_iter()
        .map(|old| {
            let mut n = container_2026(old.vmid, old.exec_token.clone());
            n.running = old.running;
            n.lan_name_to = old.lan_name_to;
            n.services = n
                .services
                .into_iter()
                .filter_map(|mut s| {
                    if s.kind == ServiceKind::WorkerDaemon {
                        return Some(s);
                    }
                    let o = old.services.iter().find(|o| o.kind == s.kind)?;
                    s.behaviour = o.behaviour;
                    Some(s)
                })
                .collect();
            n
        })
        .collect();
    c.routes = generic_routes();
    c.pve_api = true;
    c
}

/// A named scenario in a routing layout. The 2026 scenarios name no URL template: pvediag finds
/// the generation itself (the Caddyfile's generic rule) and the hostname (the lab's PVE API).
pub fn scenario_in(name: &str, layout: crate::generation::Generation) -> Option<Scenario> {
    use crate::generation::Generation;
    if layout == Generation::Seed {
        return scenario(name);
    }
    let name = SCENARIOS_2026.iter().copied().find(|n| *n == name)?;
    let token = Some(SCENARIO_TOKEN.to_string());
    let host = pvelxc_hostname(VMID);
    let (description, config): (String, LabConfig) = match name {
        "generic-regex" => {
            let mut c = to_2026(LabConfig::default());
            c.generic.regex = r"^port-(3\d{4})-([a-z0-9-]+)\.".into();
            (
                r"the generic rule's regexp ^port-(3\d{4})-... does not match port 5173: the dev server preview gets Caddy's catch-all 404".into(),
                c,
            )
        }
        "upstream-suffix" => {
            let mut c = to_2026(LabConfig::default());
            c.generic.upstream_suffix = ".local".into();
            (
                "the generic rule dials {instance}.local instead of {instance}.lan: no such host, Caddy answers 502 for every port".into(),
                c,
            )
        }
        "cors-doubled" => {
            let mut c = to_2026(LabConfig::default());
            c.generic.strip_upstream_cors = false;
            (
                "the generic rule lacks header_down -Access-Control-Allow-*: cmux-pty's own access-control-allow-origin and Caddy's both reach the browser, which rejects two values".into(),
                c,
            )
        }
        "options-unanswered" => {
            let mut c = to_2026(LabConfig::default());
            c.generic.answer_options = false;
            (
                "Caddy's @options block is missing: CORS preflights go to the services instead of Caddy's 204".into(),
                c,
            )
        }
        "worker-daemon" => {
            // A per-service Caddyfile (seed rules) in front of a 2026 container: the worker rule
            // still dials 39377, where the Go worker daemon answers now.
            let mut c = to_2026(LabConfig::default());
            c.routes = seed_routes();
            (
                "seed Caddy rules in front of a 2026 container: the worker rule dials 39377, where the Go worker daemon answers; the Node worker is on 39376".into(),
                c,
            )
        }
        "hostname-unresolved" => {
            let mut c = to_2026(LabConfig::default());
            c.unpublished = vec![VMID];
            (
                format!("the container's hostname {host} is not in the LAN's DNS: {host}.lan does not resolve for Caddy, which answers 502"),
                c,
            )
        }
        "mixed-host" => {
            // A host in transition: per-service rules and the generic rule in one Caddyfile, an
            // old container (203, seed images) and a new one (202, 2026 images).
            let mut c = to_2026(LabConfig::default());
            let mut routes = seed_routes();
            routes.extend(generic_routes());
            c.routes = routes;
            c.containers.push(healthy_container(203, token.clone()));
            (
                "a host in transition: 202 is a 2026 container behind the generic rule, 203 a seed container behind the per-service rules; both healthy".into(),
                c,
            )
        }
        other => {
            let sc = scenario(other)?;
            let mut d = sc.description.to_string();
            d = d.replace("cmux-202.lan", &format!("{host}.lan"));
            return Some(Scenario {
                name,
                description: leak(format!("2026 layout: {d}")),
                config: to_2026(sc.config),
                client_token: sc.client_token,
                url_template: crate::target::DEFAULT_TEMPLATE,
                client_access: sc.client_access,
            });
        }
    };
    Some(Scenario {
        name,
        description: leak(description),
        config,
        client_token: token,
        url_template: crate::target::DEFAULT_TEMPLATE,
        client_access: None,
    })
}

/// Scenario descriptions are built once per run; a `&'static str` keeps [`Scenario`] as it is.
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// How the lab is put together, beyond the scenario.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    /// The edge forwards to this origin instead of the lab's own host proxy (a real Caddy).
    pub origin: Option<SocketAddr>,
    /// Containers' services listen on their real ports at this address (for a real Caddy to dial
    /// `cmux-{vmid}.lan:PORT`); default: random ports on 127.0.0.1.
    pub container_ip: Option<std::net::Ipv4Addr>,
}

/// A running lab. Dropping it stops every task and removes the temp dir.
pub struct Lab {
    /// TLS listener: the "Cloudflare edge" (dial this with --connect-to).
    pub edge_addr: SocketAddr,
    /// The host proxy (plain HTTP), like Caddy on :8080.
    pub caddy_addr: SocketAddr,
    pub domain: String,
    /// A temp dir the lab owns, removed on drop.
    pub dir: PathBuf,
    /// PEM of the lab CA that signed the edge certificate.
    pub ca_cert_path: PathBuf,
    /// The lab's Caddyfile, seed layout.
    pub caddyfile_path: PathBuf,
    /// The PVE host's view for `--on-host` (its `.curlrc`: give it as CURL_HOME and HOME).
    pub host_dir: PathBuf,
    /// The lab's Proxmox VE API (`LabConfig::pve_api`): base URL; the token is [`pve::TOKEN`].
    pub pve_url: Option<String>,
    containers: Arc<BTreeMap<u32, Arc<ContainerRuntime>>>,
    edge_requests: edge::RequestCounts,
    tasks: Vec<JoinHandle<()>>,
    _sockets: Vec<TcpSocket>,
    _tmp: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for Lab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lab")
            .field("edge_addr", &self.edge_addr)
            .field("caddy_addr", &self.caddy_addr)
            .field("domain", &self.domain)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Lab {
    /// Starts every component on 127.0.0.1 (random ports) on the current tokio runtime.
    pub async fn start(config: LabConfig) -> anyhow::Result<Lab> {
        Lab::start_with(config, LabOptions::default()).await
    }

    /// Starts the lab with options (a real Caddy as the origin, containers on their own address).
    pub async fn start_with(config: LabConfig, opts: LabOptions) -> anyhow::Result<Lab> {
        let domain = config.domain.trim_end_matches('.').to_ascii_lowercase();
        anyhow::ensure!(!domain.is_empty(), "lab: empty domain");
        for r in &config.routes {
            anyhow::ensure!(
                crate::catalog::valid_service_name(&r.service)
                    || r.service == caddy::GENERIC
                    || r.service == caddy::FALLBACK,
                "lab: route service {:?} is not a service name",
                r.service
            );
        }
        let tmp = tempfile::Builder::new()
            .prefix("pvediag-lab-")
            .tempdir()
            .context("lab: creating the temp dir")?;
        let dir = tmp.path().to_path_buf();
        let mut tasks = Vec::new();
        let mut sockets = Vec::new();

        // Abort whatever was started if a later step fails.
        struct Guard(Vec<JoinHandle<()>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                for t in &self.0 {
                    t.abort();
                }
            }
        }

        let tls = edge::make_tls(&domain).context("lab: making certificates")?;
        let ca_cert_path = dir.join("lab-ca.pem");
        std::fs::write(&ca_cert_path, &tls.ca_pem)?;

        let mut containers = BTreeMap::new();
        let mut guard = Guard(Vec::new());
        for spec in &config.containers {
            anyhow::ensure!(
                !containers.contains_key(&spec.vmid),
                "lab: two containers with VMID {}",
                spec.vmid
            );
            let (ct, t, s) = container::start(spec, &dir, config.delays, opts.container_ip).await?;
            guard.0.extend(t);
            sockets.extend(s);
            containers.insert(spec.vmid, ct);
        }
        let containers = Arc::new(containers);

        let caddy_addr = if let Some(origin) = opts.origin {
            origin
        } else if config.origin_up {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            // Per-service rules first, the generic rule after them (as in the Caddyfile).
            let mut routes: Vec<(regex::Regex, RouteSpec)> = config
                .routes
                .iter()
                .filter(|r| r.service != caddy::GENERIC)
                .map(|r| (caddy::route_regex(&r.service), r.clone()))
                .collect();
            routes.extend(
                config
                    .routes
                    .iter()
                    .filter(|r| r.service == caddy::GENERIC)
                    .map(|r| (caddy::generic_regex(&config.generic), r.clone())),
            );
            let lan = config
                .containers
                .iter()
                .filter(|c| c.running && !config.unpublished.contains(&c.vmid))
                .map(|c| (c.hostname.clone(), c.vmid))
                .collect();
            guard.0.push(caddy::start(
                listener,
                caddy::CaddyCtx {
                    routes,
                    containers: containers.clone(),
                    delay_ms: config.delays.caddy_ms,
                    generic: config.generic.clone(),
                    lan,
                },
            ));
            addr
        } else {
            let (sock, addr) = container::refusing_socket()?;
            sockets.push(sock);
            addr
        };
        let caddyfile_path = dir.join("Caddyfile.cmux");
        std::fs::write(
            &caddyfile_path,
            caddy::caddyfile_with(&config.routes, &config.generic),
        )?;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let edge_addr = listener.local_addr()?;
        let edge_requests = edge::RequestCounts::default();
        guard.0.push(edge::start(
            listener,
            tls.config,
            edge::EdgeCtx {
                domain: domain.clone(),
                gate: config.edge_gate.clone(),
                tunnel_up: config.tunnel_up,
                caddy_addr,
                delay_ms: config.delays.edge_ms,
                flapping: config.tunnel_flapping.then(Default::default),
                requests: edge_requests.clone(),
            },
        ));
        let (ready_task, ready_addr) = host::start_ready(config.tunnel_up).await?;
        guard.0.push(ready_task);
        let host_dir = dir.join("host");
        let (closed_sock, closed_addr) = container::refusing_socket()?;
        sockets.push(closed_sock);
        host::write_host_curlrc(
            &host_dir,
            containers.values().map(|c| c.as_ref()),
            ready_addr,
            closed_addr,
        )?;
        // The host also knows the containers by hostname (`{hostname}.lan`, the 2026 upstream):
        // published names map like `cmux-{vmid}.lan`; an unpublished one refuses (the lab never
        // asks a real resolver).
        host::append_hostnames(
            &host_dir,
            config.containers.iter().map(|c| {
                let published = !config.unpublished.contains(&c.vmid);
                (
                    c.hostname.as_str(),
                    // Where the LAN's DNS sends the name (lab/identity.rs: a stale lease).
                    containers
                        .get(&c.lan_name_to.unwrap_or(c.vmid))
                        .map(|r| r.as_ref()),
                    published,
                )
            }),
            closed_addr,
        )?;
        let pve_url = if config.pve_api {
            let (t, url) = pve::start_local(config.containers.clone()).await?;
            guard.0.push(t);
            Some(url)
        } else {
            None
        };
        identity::write_host_view(
            &host_dir,
            containers.values().map(|c| c.as_ref()),
            &config.unpublished,
        )?;
        tasks.append(&mut guard.0);

        Ok(Lab {
            pve_url,
            host_dir,
            edge_addr,
            caddy_addr,
            domain,
            dir,
            ca_cert_path,
            caddyfile_path,
            containers,
            edge_requests,
            tasks,
            _sockets: sockets,
            _tmp: Some(tmp),
        })
    }

    /// Starts a named scenario.
    #[cfg(test)]
    pub(crate) async fn start_scenario(name: &str) -> anyhow::Result<(Lab, Scenario)> {
        let sc = scenario(name).with_context(|| {
            format!("unknown scenario {name:?}; known: {}", SCENARIOS.join(", "))
        })?;
        let lab = Lab::start(sc.config.clone()).await?;
        Ok((lab, sc))
    }

    /// Where that container port really listens (or the refusing socket that stands for a closed
    /// port). None: no such container, container not running, or a port outside the container's
    /// map (the cmux ports 5173, 39375..39383 and every port of the spec are mapped).
    pub fn container_addr(&self, vmid: u32, port: u16) -> Option<SocketAddr> {
        self.containers
            .get(&vmid)
            .filter(|c| c.running)
            .and_then(|c| c.ports.get(&port).copied())
    }

    /// The environment of the PVE host's scripts in the lab (`--on-host`): its `.curlrc` (the
    /// `.lan` names, cloudflared's `/ready`) and its `getent`/`pct` stand-ins first on PATH.
    pub fn host_env(&self) -> Vec<(String, String)> {
        let home = self.host_dir.display().to_string();
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        vec![
            ("CURL_HOME".into(), home.clone()),
            ("HOME".into(), home),
            (
                "PATH".into(),
                format!("{}:{path}", self.host_dir.join("bin").display()),
            ),
        ]
    }

    /// The directory execd's commands run in (HOME, CURL_HOME, `.curlrc`) for a running container.
    pub fn container_dir(&self, vmid: u32) -> Option<PathBuf> {
        self.containers
            .get(&vmid)
            .filter(|c| c.running)
            .map(|c| c.dir.clone())
    }

    /// `POST /exec` requests that reached the execd of `vmid` since the lab started (0 for an
    /// unknown or stopped container).
    pub fn exec_posts(&self, vmid: u32) -> u64 {
        self.containers
            .get(&vmid)
            .map(|c| c.exec_posts.load(std::sync::atomic::Ordering::Relaxed))
            .unwrap_or(0)
    }

    /// `POST /exec` requests that reached any execd of the lab.
    pub fn exec_posts_total(&self) -> u64 {
        self.containers
            .values()
            .map(|c| c.exec_posts.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    }

    /// Requests that entered the edge since the lab started, per `Host` (lower case, no port).
    pub fn edge_requests(&self) -> BTreeMap<String, u64> {
        self.edge_requests
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Requests that entered the edge since the lab started, for every host.
    pub fn edge_requests_total(&self) -> u64 {
        self.edge_requests().values().sum()
    }

    /// Turns process accounting on or off in every container (see [`accounting`]). Returns false
    /// when it cannot run here (no strace): nothing is counted then.
    pub fn set_process_accounting(&self, on: bool) -> bool {
        let ok = accounting::available();
        for c in self.containers.values() {
            c.accounting
                .on
                .store(on && ok, std::sync::atomic::Ordering::Relaxed);
        }
        ok
    }

    /// What the exec calls of `vmid` started while accounting was on.
    pub fn exec_processes(&self, vmid: u32) -> accounting::ProcessCount {
        self.containers
            .get(&vmid)
            .map(|c| c.accounting.count())
            .unwrap_or_default()
    }

    /// [`Lab::exec_processes`] summed over every container.
    pub fn exec_processes_total(&self) -> accounting::ProcessCount {
        self.containers
            .values()
            .map(|c| c.accounting.count())
            .fold(Default::default(), |a, b| a + b)
    }

    /// `{service}-{vmid}.{domain}`.
    #[cfg(test)]
    pub(crate) fn host(&self, service: &str, vmid: u32) -> String {
        format!("{service}-{vmid}.{}", self.domain)
    }

    /// `https://{service}-{vmid}.{domain}:{edge port}{path}`: the public URL, with the edge's port
    /// (name resolution must send the host to 127.0.0.1; see [`Lab::client_builder`]).
    #[cfg(test)]
    pub(crate) fn url(&self, service: &str, vmid: u32, path: &str) -> String {
        format!(
            "https://{}:{}{}",
            self.host(service, vmid),
            self.edge_addr.port(),
            path
        )
    }

    /// The CA certificate (PEM).
    #[cfg(test)]
    pub(crate) fn ca_pem(&self) -> anyhow::Result<String> {
        Ok(std::fs::read_to_string(&self.ca_cert_path)?)
    }

    /// A reqwest builder that trusts the lab CA and resolves every name under the lab's domain to
    /// 127.0.0.1 (other names fail like NXDOMAIN). URLs must carry the edge port ([`Lab::url`]).
    #[cfg(test)]
    pub(crate) fn client_builder(&self) -> anyhow::Result<reqwest::ClientBuilder> {
        let ca = reqwest::Certificate::from_pem(self.ca_pem()?.as_bytes())?;
        Ok(reqwest::Client::builder()
            .add_root_certificate(ca)
            .dns_resolver(Arc::new(LabResolver {
                domain: self.domain.clone(),
                addr: self.edge_addr,
            }))
            .no_proxy()
            .user_agent(concat!("pvediag-lab/", env!("CARGO_PKG_VERSION"))))
    }

    /// Stops every task and removes the temp dir.
    pub async fn shutdown(mut self) {
        let tasks = std::mem::take(&mut self.tasks);
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
        drop(self);
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Resolves `{domain}` and `*.{domain}` to the edge, the way the wildcard CNAME would.
#[cfg(test)]
struct LabResolver {
    domain: String,
    addr: SocketAddr,
}

#[cfg(test)]
impl reqwest::dns::Resolve for LabResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let ok = host == self.domain || host.ends_with(&format!(".{}", self.domain));
        let addr = self.addr;
        Box::pin(async move {
            if ok {
                let addrs: reqwest::dns::Addrs = Box::new(std::iter::once(addr));
                Ok(addrs)
            } else {
                Err(format!("lab: no such host {host}").into())
            }
        })
    }
}

#[cfg(test)]
mod tests;
