//! The host proxy: Caddy on :8080 in the seed layout (one `header_regexp` matcher per service).
//!
//! Answers like Caddy: unknown/stopped `cmux-{vmid}.lan` or a closed upstream port -> 502 with an
//! empty body and `Server: Caddy`; upstream silent for 10 s -> 504; no matching route -> Caddy's
//! default empty 200. Proxied answers are streamed through piece by piece with `Server: Caddy` added.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use regex::Regex;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use super::container::{serve, ContainerRuntime};
use super::http::{self, ForwardError, ReadError};
use super::{GenericRule, RouteSpec};

/// Caddy's upstream dial timeout in the later layout (`dial_timeout 10s`), also used as the lab's
/// response-header timeout (then 504).
pub(crate) const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct CaddyCtx {
    pub(crate) routes: Vec<(Regex, RouteSpec)>,
    pub(crate) containers: Arc<BTreeMap<u32, Arc<ContainerRuntime>>>,
    pub(crate) delay_ms: u64,
    /// The generic rule's upstream and CORS handling (2026 layout).
    pub(crate) generic: GenericRule,
    /// What `{hostname}.lan` resolves to: container hostname -> VMID.
    pub(crate) lan: BTreeMap<String, u32>,
}

/// The service name of the later layout's one generic rule (`port-{port}-{instance}.DOMAIN`).
pub(crate) const GENERIC: &str = "*";

/// The "service" of a last `handle` block without a matcher: every hostname no other route matches
/// is sent to `dashboard.lan:PORT`, a host outside the lab (its name does not resolve: Caddy's 502).
pub(crate) const FALLBACK: &str = "*fallback";

/// The generic rule's Host regexp as cmux writes it.
pub(crate) const GENERIC_REGEX: &str = r"^port-(\d+)-([a-z0-9-]+)\.";

/// The generic rule's matcher regex (as configured; an invalid one matches nothing, as Caddy
/// would refuse to load it).
pub(crate) fn generic_regex(rule: &GenericRule) -> Regex {
    Regex::new(&rule.regex).unwrap_or_else(|_| Regex::new("$^").expect("valid"))
}

/// The matcher regex of a route, as written in the Caddyfile: `^{service}-(\d+)\.`, or the
/// later layout's `^port-(\d+)-([a-z0-9-]+)\.`.
pub(crate) fn route_regex(service: &str) -> Regex {
    if service == GENERIC {
        return Regex::new(GENERIC_REGEX).expect("valid route regex");
    }
    if service == FALLBACK {
        return Regex::new("^").expect("valid route regex");
    }
    Regex::new(&format!(r"^{}-(\d+)\.", regex::escape(service))).expect("valid route regex")
}

/// The later layout's Caddyfile (reference §2): OPTIONS answered by Caddy, one generic rule with
/// CORS headers replaced, and the catch-all 404.
const LATER_CADDYFILE: &str = include_str!("../../tests/fixtures/Caddyfile.later");

const CORS: &[(&str, &str)] = &[
    ("Access-Control-Allow-Origin", "*"),
    (
        "Access-Control-Allow-Methods",
        "GET, POST, PUT, DELETE, PATCH, OPTIONS",
    ),
    ("Access-Control-Allow-Headers", "*"),
];

fn route_comment(service: &str, port: u16) -> String {
    match service {
        "vscode" => "VSCode service".into(),
        "worker" => "Worker service (Socket.IO)".into(),
        "xterm" => "Xterm service (cmux-pty)".into(),
        "exec" => "Exec service (cmux-execd)".into(),
        "vnc" => "VNC service (noVNC websockify)".into(),
        "preview" => format!("Preview service (port {port})"),
        "proxy" => "Proxy service (cmux-proxy)".into(),
        "cdp" => "CDP service (Chrome DevTools)".into(),
        other => format!("{other} service"),
    }
}

/// The 2026 Caddyfile with the rule's faults written into it (the regexp, the upstream suffix,
/// the `header_down` lines, the `@options` block).
pub fn caddyfile_2026(rule: &GenericRule) -> String {
    let mut text = LATER_CADDYFILE.to_string();
    if !rule.answer_options {
        let start = text.find("    @options").expect("fixture has @options");
        let end = text[start..]
            .find("    }\n\n")
            .expect("fixture's block ends")
            + start
            + 7;
        text.replace_range(start..end, "");
    }
    if !rule.strip_upstream_cors {
        text = text
            .lines()
            .filter(|l| !l.trim_start().starts_with("header_down"))
            .map(|l| format!("{l}\n"))
            .collect();
    }
    text = text.replace(GENERIC_REGEX, &rule.regex);
    text.replace("}.lan:{", &format!("}}{}:{{", rule.upstream_suffix))
}

/// `/etc/caddy/Caddyfile.cmux` for these routes, in the seed's exact layout (or the later one).
pub fn caddyfile(routes: &[RouteSpec]) -> String {
    caddyfile_with(routes, &GenericRule::default())
}

/// [`caddyfile`] with the generic rule as configured. With both kinds of routes (a host in
/// transition), the per-service rules come first and the generic rule and catch-all after them.
pub(crate) fn caddyfile_with(routes: &[RouteSpec], rule: &GenericRule) -> String {
    let generic = routes.iter().any(|r| r.service == GENERIC);
    let per_service: Vec<&RouteSpec> = routes
        .iter()
        .filter(|r| r.service != GENERIC && r.service != FALLBACK)
        .collect();
    let fallback = routes.iter().find(|r| r.service == FALLBACK);
    if generic && per_service.is_empty() {
        return caddyfile_2026(rule);
    }
    let mut out = String::from(":8080 {\n");
    for (i, r) in per_service.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!(
            "    # {}\n    @{svc} header_regexp vmid Host ^{svc}-(\\d+)\\.\n    handle @{svc} {{\n        reverse_proxy {up}:{port}\n    }}\n",
            route_comment(&r.service, r.port),
            svc = r.service,
            port = r.port,
            up = r.upstream.as_deref().unwrap_or("cmux-{re.vmid.1}.lan"),
        ));
    }
    if generic {
        // The 2026 rules after the per-service ones: everything inside the site block.
        let later = caddyfile_2026(rule);
        let inner = later
            .trim_end()
            .strip_prefix(":8080 {\n")
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or("");
        out.push('\n');
        out.push_str(inner);
    }
    if let Some(f) = fallback {
        out.push_str(&format!(
            "\n    # Everything else: the dashboard\n    handle {{\n        reverse_proxy dashboard.lan:{}\n    }}\n",
            f.port
        ));
    }
    out.push_str("}\n");
    out
}

pub(crate) fn start(listener: TcpListener, ctx: CaddyCtx) -> JoinHandle<()> {
    let ctx = Arc::new(ctx);
    serve(listener, move |stream| {
        let ctx = ctx.clone();
        async move {
            let peer = stream.peer_addr().ok();
            let _ = conn(stream, peer, &ctx).await;
        }
    })
}

fn caddy_empty(status: u16) -> Vec<u8> {
    let d = http::now_date();
    http::response_bytes(
        status,
        &[("Server", "Caddy"), ("Date", &d), ("Content-Length", "0")],
        b"",
    )
}

async fn conn(stream: TcpStream, peer: Option<SocketAddr>, ctx: &CaddyCtx) -> io::Result<()> {
    let mut s = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut s, http::MAX_BODY).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::TooLarge(_)) => {
                let b = http::response_bytes(413, &[("Connection", "close")], b"");
                return http::send(&mut s, &b).await;
            }
            Err(ReadError::Malformed(_)) => {
                // Go's net/http answer to garbage.
                let b = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request";
                return http::send(&mut s, b).await;
            }
        };
        if ctx.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ctx.delay_ms)).await;
        }
        let Some(host_hdr) = req.header("host").map(str::to_string) else {
            let b = b"HTTP/1.1 400 Bad Request: missing required Host header\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\n\r\n400 Bad Request: missing required Host header";
            return http::send(&mut s, b).await;
        };
        let keep = handle(&mut s, &req, &host_hdr, peer, ctx).await?;
        if !keep || req.wants_close() {
            return Ok(());
        }
    }
}

/// Answers one request; `Ok(false)` when the client connection must close.
async fn handle<S>(
    s: &mut BufReader<S>,
    req: &http::Request,
    host_hdr: &str,
    peer: Option<SocketAddr>,
    ctx: &CaddyCtx,
) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let later = ctx.routes.iter().any(|(_, r)| r.service == GENERIC);
    if later && ctx.generic.answer_options && req.method == "OPTIONS" {
        // The later layout answers every preflight itself, without touching the container.
        let mut h: Vec<(&str, &str)> = CORS.to_vec();
        h.extend([("Access-Control-Max-Age", "86400"), ("Server", "Caddy")]);
        http::send(s, &http::response_bytes(204, &h, b"")).await?;
        return Ok(true);
    }
    // (container hostname's VMID, port Caddy dials, through the generic rule)
    let matched = ctx.routes.iter().find_map(|(re, route)| {
        let c = re.captures(host_hdr)?;
        if route.service == FALLBACK {
            // dashboard.lan: not a container of the lab, so it never resolves.
            Some((None, route.port, false))
        } else if route.service == GENERIC {
            let port: u16 = c.get(1)?.as_str().parse().ok()?;
            let instance = c.get(2)?.as_str();
            // `{instance}{suffix}` resolves only with the LAN's `.lan` names.
            let vmid = (ctx.generic.upstream_suffix == ".lan")
                .then(|| ctx.lan.get(instance))
                .flatten()
                .map(|v| v.to_string());
            Some((vmid, port, true))
        } else if let Some(up) = &route.upstream {
            // A literal upstream host: whatever the request's VMID.
            let vmid = up
                .strip_suffix(".lan")
                .and_then(|h| h.strip_prefix("cmux-"))
                .map(str::to_string);
            Some((vmid, route.port, false))
        } else {
            // `cmux-{vmid}.lan`: the VMID's container, if its hostname is still cmux-{vmid}
            // or it is any container with that VMID (the lab's DHCP names both).
            Some((c.get(1).map(|m| m.as_str().to_string()), route.port, false))
        }
    });
    let Some((vmid, port, via_generic)) = matched else {
        if later {
            let body = b"cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN";
            let h = [
                ("Server", "Caddy"),
                ("Content-Type", "text/plain; charset=utf-8"),
            ];
            http::send(s, &http::response_bytes(404, &h, body)).await?;
        } else {
            // No `handle` matched: Caddy's default is an empty 200.
            http::send(s, &caddy_empty(200)).await?;
        }
        return Ok(true);
    };
    // `cmux-{vmid}.lan` resolves only for running containers.
    let ct = vmid
        .and_then(|v| v.parse::<u32>().ok())
        .and_then(|v| super::identity::lan_resolve(&ctx.containers, v));
    let Some(ct) = ct else {
        http::send(s, &caddy_empty(502)).await?;
        return Ok(true);
    };
    let addr = ct.dial_addr(port);

    let mut headers = req.headers.clone();
    http::strip_hop_by_hop(&mut headers);
    let client_ip = peer
        .map(|p| p.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".into());
    let xff = match http::header(&headers, "x-forwarded-for") {
        Some(prev) => format!("{prev}, {client_ip}"),
        None => client_ip,
    };
    http::remove_header(&mut headers, "x-forwarded-for");
    http::remove_header(&mut headers, "x-forwarded-proto");
    http::remove_header(&mut headers, "x-forwarded-host");
    headers.push(("X-Forwarded-For".into(), xff));
    headers.push(("X-Forwarded-Proto".into(), "http".into()));
    headers.push(("X-Forwarded-Host".into(), host_hdr.to_string()));

    let (mut up, head) = match http::forward(
        addr,
        &req.method,
        &req.target,
        &headers,
        &req.body,
        UPSTREAM_TIMEOUT,
        UPSTREAM_TIMEOUT,
    )
    .await
    {
        Ok(x) => x,
        Err(ForwardError::HeadTimeout) | Err(ForwardError::ConnectTimeout) => {
            http::send(s, &caddy_empty(504)).await?;
            return Ok(true);
        }
        Err(_) => {
            http::send(s, &caddy_empty(502)).await?;
            return Ok(true);
        }
    };
    let framing = http::response_framing(&req.method, &head);
    let mut out = http::downstream_headers(&head, framing);
    if later && via_generic {
        // header_down -Access-Control-*, then Caddy's own.
        if ctx.generic.strip_upstream_cors {
            out.retain(|(k, _)| !k.to_ascii_lowercase().starts_with("access-control-allow-"));
        }
        out.extend(CORS.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        out.push(("Access-Control-Expose-Headers".into(), "*".into()));
    }
    out.push(("Server".into(), "Caddy".into()));
    http::send(s, &http::head_bytes(head.status, &out)).await?;
    match http::pipe_body(&mut up, framing, s).await {
        Ok(()) => Ok(true),
        // The upstream broke mid-body: all Caddy can do is drop the client connection.
        Err(_) => Ok(false),
    }
}
