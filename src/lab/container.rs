//! One simulated container: cmux-execd and the services, each on its own random loopback port.
//!
//! Answers follow the reference (§4 execd, §5 probes). Ports that do not listen map to a socket that
//! is bound but not listening: connections to it are refused, and the port cannot be taken by anyone
//! else while the lab lives (a dropped listener's port could be reused by a parallel test).

use anyhow::Context as _;
use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::http::{self, ReadError, Request};
use super::{Behaviour, ContainerSpec, Delays, ServiceKind};

/// The ports a cmux container may listen on (the seed's table, plus 39376 and 39382), all mapped
/// in the container's `.curlrc`.
pub(crate) const CONTAINER_PORTS: &[u16] = &[
    5173, 5901, 39375, 39376, 39377, 39378, 39379, 39380, 39381, 39382, 39383,
];

/// Largest `POST /exec` body execd accepts.
pub(crate) const EXEC_MAX_BODY: usize = 1024 * 1024;
/// Longest output line execd passes on.
pub(crate) const EXEC_MAX_LINE: usize = 1024 * 1024;

/// The openvscode-server build the lab pretends to be.
pub(crate) const VSCODE_COMMIT: &str = "f1e16e1e6214d7c44d078b1f0607b2388f29d729";

/// What the rest of the lab knows about a started container.
#[derive(Debug)]
pub(crate) struct ContainerRuntime {
    pub(crate) vmid: u32,
    pub(crate) running: bool,
    /// Container port -> where it really listens (or a refusing socket), seen from the LAN.
    pub(crate) ports: BTreeMap<u16, SocketAddr>,
    /// The same, seen from inside the container (loopback-only services included).
    pub(crate) loopback: BTreeMap<u16, SocketAddr>,
    /// A refusing address, for any port the container does not have.
    pub(crate) closed_addr: SocketAddr,
    /// `<lab dir>/ct-<vmid>`: HOME and CURL_HOME of commands run by execd.
    pub(crate) dir: PathBuf,
    /// `POST /exec` requests that reached this container's execd (whatever their outcome).
    pub(crate) exec_posts: AtomicU64,
    /// The container `cmux-{vmid}.lan` really leads to, when not this one (see `ContainerSpec`).
    pub(crate) lan_name_to: Option<u32>,
    /// `gethostname()` inside.
    pub(crate) hostname: String,
    /// Processes started by exec calls, when accounting is on ([`super::accounting`]).
    pub(crate) accounting: super::accounting::ExecAccounting,
}

impl ContainerRuntime {
    /// Where a connection to `cmux-{vmid}.lan:{port}` ends up.
    pub(crate) fn dial_addr(&self, port: u16) -> SocketAddr {
        self.ports.get(&port).copied().unwrap_or(self.closed_addr)
    }
}

/// Bound, not listening: connections are refused, the port stays reserved.
pub(crate) fn refusing_socket() -> io::Result<(TcpSocket, SocketAddr)> {
    let s = TcpSocket::new_v4()?;
    s.bind("127.0.0.1:0".parse().expect("valid addr"))?;
    let addr = s.local_addr()?;
    Ok((s, addr))
}

/// Runs an accept loop; connection tasks live in a JoinSet owned by the loop, so aborting the
/// returned handle ends every connection too.
pub(crate) fn serve<H, F>(listener: TcpListener, handler: H) -> JoinHandle<()>
where
    H: Fn(TcpStream) -> F + Send + Sync + 'static,
    F: std::future::Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut set = tokio::task::JoinSet::new();
        loop {
            while set.try_join_next().is_some() {}
            match listener.accept().await {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    set.spawn(handler(stream));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
}

/// Everything a service connection needs.
#[derive(Clone)]
struct ServiceCtx {
    kind: ServiceKind,
    behaviour: Behaviour,
    delays: Delays,
    token: Option<String>,
    ct: Arc<ContainerRuntime>,
}

/// Starts a container. Returns its runtime, the tasks, and sockets to keep alive (refusing ports).
pub(crate) async fn start(
    spec: &ContainerSpec,
    lab_dir: &Path,
    delays: Delays,
    bind_ip: Option<std::net::Ipv4Addr>,
) -> anyhow::Result<(Arc<ContainerRuntime>, Vec<JoinHandle<()>>, Vec<TcpSocket>)> {
    let dir = lab_dir.join(format!("ct-{}", spec.vmid));
    let (closed, closed_addr) = refusing_socket()?;
    let mut keep = vec![closed];
    let mut ports = BTreeMap::new();
    let mut tasks = Vec::new();
    if !spec.running {
        let ct = Arc::new(ContainerRuntime {
            vmid: spec.vmid,
            running: false,
            loopback: ports.clone(),
            ports,
            closed_addr,
            dir,
            exec_posts: AtomicU64::new(0),
            lan_name_to: spec.lan_name_to,
            hostname: super::identity::hostname_of(spec),
            accounting: Default::default(),
        });
        return Ok((ct, tasks, keep));
    }
    std::fs::create_dir_all(&dir)?;
    super::identity::write_container_view(&dir, spec.vmid)?;

    // Bind every socket first, so the port map is complete before any service runs.
    enum Pending {
        Now(TcpListener),
        Later(TcpSocket, Duration),
    }
    let mut pending = Vec::new();
    for svc in &spec.services {
        if ports.contains_key(&svc.port) {
            anyhow::bail!("container {}: two services on port {}", spec.vmid, svc.port);
        }
        let sock = TcpSocket::new_v4()?;
        match bind_ip {
            // The container's own address: services on their real ports (for real Caddy).
            Some(ip) => {
                sock.set_reuseaddr(true)?;
                sock.bind(SocketAddr::new(ip.into(), svc.port))
                    .with_context(|| {
                        format!("container {}: binding {ip}:{}", spec.vmid, svc.port)
                    })?;
            }
            None => sock.bind("127.0.0.1:0".parse()?)?,
        }
        ports.insert(svc.port, sock.local_addr()?);
        let p = match svc.behaviour {
            Behaviour::RecoversAfter(d) => Pending::Later(sock, d),
            _ => Pending::Now(sock.listen(1024)?),
        };
        pending.push((svc.clone(), p));
    }
    // A closed port of its own for each (not one shared): what curl says inside the container
    // about port 39378 must be translatable back to 39378 (write_curl_wrapper).
    for p in CONTAINER_PORTS {
        if !ports.contains_key(p) {
            let (sock, addr) = refusing_socket()?;
            keep.push(sock);
            ports.insert(*p, addr);
        }
    }
    // Inside the container every listening service is reachable on 127.0.0.1; from the LAN (Caddy,
    // the host) a service bound to loopback only is not.
    write_curlrc(&dir, &ports)?;
    write_curl_wrapper(&dir, &ports)?;
    let loopback = ports.clone();
    write_dev_tcp_map(&dir, &loopback)?;
    super::systemd::write(&dir, spec)?;
    // TigerVNC (`-localhost`) and Chrome's DevTools listen on loopback only, as in cmux.
    for svc in spec.services.iter().filter(|s| {
        s.behaviour == Behaviour::LoopbackOnly || ServiceKind::BACK_ENDS.contains(&s.kind)
    }) {
        ports.insert(svc.port, closed_addr);
    }
    let ct = Arc::new(ContainerRuntime {
        vmid: spec.vmid,
        running: true,
        loopback,
        ports,
        closed_addr,
        dir,
        exec_posts: AtomicU64::new(0),
        lan_name_to: spec.lan_name_to,
        hostname: super::identity::hostname_of(spec),
        accounting: Default::default(),
    });

    for (svc, p) in pending {
        let ctx = ServiceCtx {
            kind: svc.kind,
            behaviour: svc.behaviour,
            delays,
            token: spec.exec_token.clone(),
            ct: ct.clone(),
        };
        match p {
            Pending::Now(listener) => tasks.push(serve_service(listener, ctx)),
            Pending::Later(sock, after) => {
                tasks.push(tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    match sock.listen(1024) {
                        // The inner accept loop is aborted when this task is (its JoinHandle is
                        // awaited here, and dropping a JoinHandle does not abort, so abort explicitly).
                        Ok(listener) => {
                            let h = serve_service(listener, ctx);
                            let _guard = AbortOnDrop(h.abort_handle());
                            let _ = h.await;
                        }
                        Err(e) => eprintln!("lab: cannot start delayed service: {e}"),
                    }
                }));
            }
        }
    }
    Ok((ct, tasks, keep))
}

struct AbortOnDrop(tokio::task::AbortHandle);
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// `.curlrc` so that `curl http://127.0.0.1:PORT/` inside the "container" reaches the lab's port.
fn write_curlrc(dir: &Path, ports: &BTreeMap<u16, SocketAddr>) -> io::Result<()> {
    let mut rc = String::from("# written by the pvediag lab: the container's loopback ports\n");
    for (port, addr) in ports {
        for host in ["127.0.0.1", "localhost"] {
            rc.push_str(&format!(
                "connect-to = \"{host}:{port}:{}:{}\"\n",
                addr.ip(),
                addr.port()
            ));
        }
    }
    std::fs::write(dir.join(".curlrc"), rc)
}

/// `<dir>/bin/curl`, first on the PATH of execd's commands: the real curl with the container's
/// loopback map on EVERY transfer. `.curlrc` alone maps only the first transfer of a command line
/// (`--next` starts a transfer from scratch), while a real container's loopback serves them all.
/// Without a curl on the lab's PATH, nothing is written (commands see no curl, as in a container
/// without one).
fn write_curl_wrapper(dir: &Path, ports: &BTreeMap<u16, SocketAddr>) -> io::Result<()> {
    let Some(real) = real_curl() else {
        return Ok(());
    };
    let mut map = String::new();
    for (port, addr) in ports {
        for host in ["127.0.0.1", "localhost"] {
            map.push_str(&format!(
                " --connect-to {host}:{port}:{}:{}",
                addr.ip(),
                addr.port()
            ));
        }
    }
    // What curl says about the lab's ports is said about the container's: `Failed to connect to
    // 127.0.0.1 port 39378`, never the lab's mapping (the lab tells the truth). The lab's execd
    // translates its output lines back (`unmap_ports`, from this file), so the wrapper stays one
    // process that execs the real curl and adds nothing to what an exec call costs.
    let mut unmap = String::new();
    for (port, addr) in ports {
        unmap.push_str(&format!("{} {} {port}\n", addr.ip(), addr.port()));
    }
    std::fs::write(dir.join("port-unmap"), unmap)?;
    // POSIX sh (dash where there is one: the wrapper should cost little next to curl itself).
    // The first transfer gets the map from `.curlrc`; every `--next` gets it again.
    let script = format!(
        "#!/bin/sh\n# written by the pvediag lab: the container's loopback ports, for every transfer\nn=$#\nfor x in \"$@\"; do\n  set -- \"$@\" \"$x\"\n  case $x in --next|-:) set -- \"$@\"{map} ;; esac\ndone\nshift \"$n\"\nexec {real} \"$@\"\n",
        real = real.display()
    );
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let path = bin.join("curl");
    std::fs::write(&path, script)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// The search path of a process started without PATH (as bash and execvp use).
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// The first `curl` on the lab's PATH (looked up once).
pub(crate) fn real_curl() -> Option<PathBuf> {
    static FOUND: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    FOUND
        .get_or_init(|| {
            // With no PATH at all, bash (which runs the commands) searches its default one.
            let paths = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
            std::env::split_paths(&paths)
                .map(|d| d.join("curl"))
                .find(|p| p.is_file())
        })
        .clone()
}

fn serve_service(listener: TcpListener, ctx: ServiceCtx) -> JoinHandle<()> {
    let ctx = Arc::new(ctx);
    serve(listener, move |stream| {
        let ctx = ctx.clone();
        async move {
            let _ = service_conn(stream, &ctx).await;
        }
    })
}

async fn service_conn(stream: TcpStream, ctx: &ServiceCtx) -> io::Result<()> {
    if ctx.kind == ServiceKind::VncServer {
        return rfb_greeter(stream).await;
    }
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
                let b = http::response_bytes(
                    400,
                    &[
                        ("Content-Type", "text/plain; charset=utf-8"),
                        ("Connection", "close"),
                    ],
                    b"400 Bad Request",
                );
                return http::send(&mut s, &b).await;
            }
        };
        if ctx.behaviour == Behaviour::Hang {
            // Accepts and reads, never answers; holds the connection until the lab stops.
            std::future::pending::<()>().await;
        }
        let delay = if ctx.kind == ServiceKind::Exec {
            ctx.delays.exec_ms
        } else {
            ctx.delays.service_ms
        };
        if delay > 0 {
            tokio::time::sleep(Duration::from_millis(delay)).await;
        }
        if ctx.behaviour == Behaviour::Error500 {
            let b = plain(500, "Internal Server Error\n", &[]);
            http::send(&mut s, &b).await?;
        } else {
            match ctx.kind {
                ServiceKind::Exec => execd(&mut s, &req, ctx).await?,
                ServiceKind::Proxy => proxy(&mut s, &req, ctx).await?,
                // cmux-cdp-proxy: a reverse proxy to Chrome's DevTools on 127.0.0.1:39382.
                ServiceKind::Cdp => {
                    forward(&mut s, &req, ctx, ServiceKind::Chrome.seed_port()).await?
                }
                kind => {
                    let b = answer(kind, ctx.behaviour, &req);
                    http::send(&mut s, &b).await?;
                }
            }
        }
        if req.wants_close() {
            return Ok(());
        }
    }
}

fn date() -> String {
    http::now_date()
}

/// TigerVNC's side of the RFB handshake's first step: the server speaks first with its version;
/// a client that answers with something that is not an RFB version is dropped (as Xtigervnc does).
async fn rfb_greeter(mut stream: TcpStream) -> io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream.write_all(b"RFB 003.008\n").await?;
    let mut v = [0u8; 12];
    match tokio::time::timeout(Duration::from_secs(30), stream.read_exact(&mut v)).await {
        Ok(Ok(_)) if v.starts_with(b"RFB 003.") => {
            // Security types: one, "None"; then the lab has nothing more to say.
            stream.write_all(&[1, 1]).await?;
            let mut rest = [0u8; 64];
            let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut rest)).await;
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A text/plain answer in Go's `http.Error` style.
fn plain(status: u16, body: &str, extra: &[(&str, &str)]) -> Vec<u8> {
    let d = date();
    let mut h: Vec<(&str, &str)> = vec![("Content-Type", "text/plain; charset=utf-8")];
    h.extend_from_slice(extra);
    h.push(("Date", &d));
    http::response_bytes(status, &h, body.as_bytes())
}

/// Go's `http.Error`: text/plain, nosniff, trailing newline.
fn go_error(status: u16, msg: &str) -> Vec<u8> {
    plain(
        status,
        &format!("{msg}\n"),
        &[("X-Content-Type-Options", "nosniff")],
    )
}

const VITE_INDEX: &str = "<!doctype html>\n<html lang=\"en\">\n  <head>\n    <script type=\"module\">import { injectIntoGlobalHook } from \"/@react-refresh\";\ninjectIntoGlobalHook(window);\nwindow.$RefreshReg$ = () => {};\nwindow.$RefreshSig$ = () => (type) => type;</script>\n\n    <script type=\"module\" src=\"/@vite/client\"></script>\n\n    <meta charset=\"UTF-8\" />\n    <link rel=\"icon\" type=\"image/svg+xml\" href=\"/vite.svg\" />\n    <meta name=\"viewport\" content=\"width=device-width, initial-scale=1.0\" />\n    <title>Vite + React + TS</title>\n  </head>\n  <body>\n    <div id=\"root\"></div>\n    <script type=\"module\" src=\"/src/main.tsx\"></script>\n  </body>\n</html>\n";

const NOVNC_PAGE: &str = "<!DOCTYPE html>\n<html lang=\"en\" class=\"noVNC_loading\">\n<head>\n    <!--\n    noVNC example: simple example using default UI\n    Copyright (C) 2019 The noVNC Authors\n    noVNC is licensed under the MPL 2.0 (see LICENSE.txt)\n    -->\n    <title>noVNC</title>\n    <meta charset=\"utf-8\">\n    <link rel=\"stylesheet\" href=\"app/styles/base.css\">\n    <script type=\"module\" crossorigin=\"anonymous\" src=\"app/ui.js\"></script>\n</head>\n<body>\n    <div id=\"noVNC_fallback_error\" class=\"noVNC_center\"></div>\n    <div id=\"noVNC_container\"><h1 class=\"noVNC_logo\" translate=\"no\"><span>no</span><br>VNC</h1></div>\n</body>\n</html>\n";

const VSCODE_WORKBENCH: &str = "<!-- Copyright (C) Microsoft Corporation. All rights reserved. -->\n<!DOCTYPE html>\n<html>\n\t<head>\n\t\t<script>performance.mark('code/didStartRenderer');</script>\n\t\t<meta charset=\"utf-8\" />\n\t\t<meta name=\"mobile-web-app-capable\" content=\"yes\" />\n\t\t<link rel=\"stylesheet\" href=\"/stable/out/vs/workbench/workbench.web.main.css\">\n\t</head>\n\t<body aria-label=\"\">\n\t</body>\n\t<script src=\"/stable/out/vs/loader.js\"></script>\n\t<script src=\"/stable/out/vs/code/browser/workbench/workbench.js\"></script>\n</html>\n";

const WEBSOCKIFY_SERVER: &str = "WebSockify Python/3.12.3";

/// Python `http.server`'s error page (websockify serves noVNC with it).
fn python_error(status: u16, message: &str) -> Vec<u8> {
    let explain = match status {
        404 => "Nothing matches the given URI",
        _ => "",
    };
    let body = format!(
        "<!DOCTYPE HTML>\n<html lang=\"en\">\n    <head>\n        <meta charset=\"utf-8\">\n        <title>Error response</title>\n    </head>\n    <body>\n        <h1>Error response</h1>\n        <p>Error code: {status}</p>\n        <p>Message: {message}.</p>\n        <p>Error code explanation: {status} - {explain}.</p>\n    </body>\n</html>\n"
    );
    let d = date();
    http::response_bytes(
        status,
        &[
            ("Server", WEBSOCKIFY_SERVER),
            ("Date", &d),
            ("Connection", "close"),
            ("Content-Type", "text/html;charset=utf-8"),
        ],
        body.as_bytes(),
    )
}

/// The answer of a plain service (everything but execd and cmux-proxy).
fn answer(kind: ServiceKind, behaviour: Behaviour, req: &Request) -> Vec<u8> {
    let d = date();
    let path = req.path();
    match kind {
        ServiceKind::Worker => {
            if path == "/socket.io/" || path == "/socket.io" {
                let json_err = |code: u8, msg: &str| {
                    let body = format!("{{\"code\":{code},\"message\":\"{msg}\"}}");
                    http::response_bytes(
                        400,
                        &[
                            ("Content-Type", "application/json"),
                            ("Date", &d),
                            ("Connection", "keep-alive"),
                        ],
                        body.as_bytes(),
                    )
                };
                let transport = req.query_param("transport");
                if req.query_param("EIO").as_deref() != Some("4") {
                    return json_err(5, "Unsupported protocol version");
                }
                if !matches!(transport.as_deref(), Some("polling") | Some("websocket")) {
                    return json_err(0, "Transport unknown");
                }
                if req.query_param("sid").is_some() {
                    return json_err(1, "Session ID unknown");
                }
                if transport.as_deref() == Some("websocket") {
                    return json_err(3, "Bad request");
                }
                let sid = sid();
                let body = format!(
                    "0{{\"sid\":\"{sid}\",\"upgrades\":[\"websocket\"],\"pingInterval\":25000,\"pingTimeout\":20000,\"maxPayload\":1000000}}"
                );
                http::response_bytes(
                    200,
                    &[
                        ("Content-Type", "text/plain; charset=UTF-8"),
                        ("Date", &d),
                        ("Connection", "keep-alive"),
                        ("Keep-Alive", "timeout=5"),
                    ],
                    body.as_bytes(),
                )
            } else {
                let body = format!(
                    "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>Error</title>\n</head>\n<body>\n<pre>Cannot {} {}</pre>\n</body>\n</html>\n",
                    req.method, path
                );
                http::response_bytes(
                    404,
                    &[
                        ("X-Powered-By", "Express"),
                        ("Content-Security-Policy", "default-src 'none'"),
                        ("X-Content-Type-Options", "nosniff"),
                        ("Content-Type", "text/html; charset=utf-8"),
                        ("Date", &d),
                        ("Connection", "keep-alive"),
                    ],
                    body.as_bytes(),
                )
            }
        }
        ServiceKind::Vscode => match path {
            "/version" => http::response_bytes(
                200,
                &[
                    ("Content-Type", "text/plain"),
                    ("Date", &d),
                    ("Connection", "keep-alive"),
                ],
                VSCODE_COMMIT.as_bytes(),
            ),
            "/" => http::response_bytes(
                200,
                &[
                    ("Content-Type", "text/html"),
                    ("Cache-Control", "no-store"),
                    ("Date", &d),
                    ("Connection", "keep-alive"),
                ],
                VSCODE_WORKBENCH.as_bytes(),
            ),
            _ => http::response_bytes(
                404,
                &[
                    ("Content-Type", "text/plain"),
                    ("Date", &d),
                    ("Connection", "keep-alive"),
                ],
                b"Not found",
            ),
        },
        ServiceKind::Vnc => match path {
            "/vnc.html" | "/vnc_lite.html" => http::response_bytes(
                200,
                &[
                    ("Server", WEBSOCKIFY_SERVER),
                    ("Date", &d),
                    ("Content-type", "text/html"),
                    ("Last-Modified", "Tue, 02 Dec 2025 10:00:00 GMT"),
                ],
                NOVNC_PAGE.as_bytes(),
            ),
            "/websockify" => {
                let up = req.header("upgrade").unwrap_or("");
                if up.eq_ignore_ascii_case("websocket") {
                    // The lab does not speak WebSocket; a real one would switch protocols.
                    python_error(400, "WebSocket upgrade not supported by the lab")
                } else {
                    let b = "Upgrade Required: this endpoint speaks WebSocket only\n";
                    http::response_bytes(
                        426,
                        &[
                            ("Server", WEBSOCKIFY_SERVER),
                            ("Date", &d),
                            ("Content-Type", "text/plain"),
                            ("Upgrade", "websocket"),
                        ],
                        b.as_bytes(),
                    )
                }
            }
            _ => python_error(404, "File not found"),
        },
        ServiceKind::Chrome => match path {
            "/json/version" => {
                let body = format!(
                    "{{\n   \"Browser\": \"Chrome/131.0.6778.85\",\n   \"Protocol-Version\": \"1.3\",\n   \"User-Agent\": \"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.6778.85 Safari/537.36\",\n   \"V8-Version\": \"13.1.201.9\",\n   \"WebKit-Version\": \"537.36 (@3d81e41b6f3ac8bcae63b32e8145c9eb0cd60a2d)\",\n   \"webSocketDebuggerUrl\": \"ws://127.0.0.1:39381/devtools/browser/{}\"\n}}\n",
                    uuid()
                );
                http::response_bytes(
                    200,
                    &[("Content-Type", "application/json; charset=UTF-8")],
                    body.as_bytes(),
                )
            }
            "/json" | "/json/list" => http::response_bytes(
                200,
                &[("Content-Type", "application/json; charset=UTF-8")],
                b"[ ]\n",
            ),
            _ => http::response_bytes(
                404,
                &[("Content-Type", "text/html")],
                format!("Unknown command: {}", path.trim_start_matches("/json/")).as_bytes(),
            ),
        },
        ServiceKind::Xterm => {
            let cors = behaviour != Behaviour::NoCors;
            let mut h: Vec<(&str, &str)> = Vec::new();
            if cors {
                h.push(("access-control-allow-origin", "*"));
                h.push((
                    "vary",
                    "origin, access-control-request-method, access-control-request-headers",
                ));
            }
            h.push(("date", &d));
            if req.method == "OPTIONS" {
                if cors {
                    h.push(("access-control-allow-methods", "*"));
                    h.push(("access-control-allow-headers", "*"));
                }
                return http::response_bytes(200, &h, b"");
            }
            match (req.method.as_str(), path) {
                ("GET", "/sessions") => {
                    h.push(("content-type", "application/json"));
                    http::response_bytes(200, &h, b"{\"sessions\":[]}")
                }
                ("GET", "/health") => {
                    h.push(("content-type", "text/plain; charset=utf-8"));
                    http::response_bytes(200, &h, b"OK")
                }
                (_, "/sessions") => http::response_bytes(405, &h, b""),
                _ => http::response_bytes(404, &h, b""),
            }
        }
        ServiceKind::Preview => http::response_bytes(
            200,
            &[
                ("Vary", "Origin"),
                ("Content-Type", "text/html"),
                ("Cache-Control", "no-cache"),
                ("Etag", "W/\"1c7-lab\""),
                ("Date", &d),
                ("Connection", "keep-alive"),
                ("Keep-Alive", "timeout=5"),
            ],
            VITE_INDEX.as_bytes(),
        ),
        // The Go worker daemon (2026): JSON health, Go's 404 otherwise.
        ServiceKind::WorkerDaemon => match path {
            "/health" => http::response_bytes(
                200,
                &[("Content-Type", "application/json"), ("Date", &d)],
                br#"{"authenticated":false,"provider":"e2b","status":"ok"}"#,
            ),
            _ => go_error(404, "404 page not found"),
        },
        // Handled elsewhere; a plain 404 if ever reached.
        ServiceKind::Exec | ServiceKind::Proxy | ServiceKind::Cdp | ServiceKind::VncServer => {
            go_error(404, "404 page not found")
        }
    }
}

fn sid() -> String {
    use base64::Engine;
    let mut b = [0u8; 15];
    b[..8].copy_from_slice(&http::rand_u64().to_le_bytes());
    b[8..].copy_from_slice(&http::rand_u64().to_le_bytes()[..7]);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn uuid() -> String {
    let a = http::rand_u64();
    let b = http::rand_u64();
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xffff,
        b >> 48,
        b & 0xffff_ffff_ffff
    )
}

// ---------------------------------------------------------------------------------------------
// cmux-proxy: forwards to the container port named by X-Cmux-Port-Internal.

async fn proxy<S>(s: &mut BufReader<S>, req: &Request, ctx: &ServiceCtx) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Some(v) = req.header("x-cmux-port-internal") else {
        return http::send(
            s,
            &go_error(400, "missing required header: X-Cmux-Port-Internal"),
        )
        .await;
    };
    let Ok(port) = v.trim().parse::<u16>() else {
        return http::send(s, &go_error(400, "invalid X-Cmux-Port-Internal header")).await;
    };
    forward(s, req, ctx, port).await
}

/// Forwards one request to the container's `127.0.0.1:{port}`; Go's `502 Bad Gateway` when it
/// cannot be dialled or does not answer (cmux-proxy, cmux-cdp-proxy).
async fn forward<S>(
    s: &mut BufReader<S>,
    req: &Request,
    ctx: &ServiceCtx,
    port: u16,
) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    // Inside the container every listening service is on its loopback (loopback-only ones too).
    let addr = ctx
        .ct
        .loopback
        .get(&port)
        .copied()
        .unwrap_or_else(|| ctx.ct.dial_addr(port));
    let up = match TcpStream::connect(addr).await {
        Ok(u) => u,
        Err(_) => return http::send(s, &go_error(502, "Bad Gateway")).await,
    };
    let mut headers = req.headers.clone();
    http::strip_hop_by_hop(&mut headers);
    http::remove_header(&mut headers, "content-length");
    http::remove_header(&mut headers, "x-cmux-port-internal");
    headers.push(("Connection".into(), "close".into()));
    let mut up = BufReader::new(up);
    http::send(
        &mut up,
        &http::request_bytes(&req.method, &req.target, &headers, &req.body),
    )
    .await?;
    let head = match http::read_response_head(&mut up).await {
        Ok(Some(h)) => h,
        _ => return http::send(s, &go_error(502, "Bad Gateway")).await,
    };
    let framing = http::response_framing(&req.method, &head);
    let out = http::downstream_headers(&head, framing);
    http::send(s, &http::head_bytes(head.status, &out)).await?;
    http::pipe_body(&mut up, framing, s)
        .await
        .map_err(|e| io::Error::other(e.to_string()))
}

// ---------------------------------------------------------------------------------------------
// cmux-execd

fn authorised(req: &Request, token: &str) -> bool {
    let eq = |got: &str| {
        // Constant-time-ish comparison, like execd's subtle.ConstantTimeCompare.
        got.len() == token.len()
            && got
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    };
    if let Some(a) = req.header("authorization") {
        let a = a.trim();
        let t = a
            .strip_prefix("Bearer ")
            .or_else(|| a.strip_prefix("bearer "))
            .unwrap_or(a)
            .trim();
        if eq(t) {
            return true;
        }
    }
    if req.query_param("token").is_some_and(|t| eq(&t)) {
        return true;
    }
    req.cookie("_cmux_auth").is_some_and(|t| eq(&t))
}

fn unauthorized() -> Vec<u8> {
    let d = date();
    http::response_bytes(
        401,
        &[("Content-Type", "application/json"), ("Date", &d)],
        b"{\"error\":\"Unauthorized\"}\n",
    )
}

async fn execd<S>(s: &mut BufReader<S>, req: &Request, ctx: &ServiceCtx) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match req.path() {
        "/healthz" => {
            let d = date();
            let b = http::response_bytes(
                200,
                &[("Content-Type", "text/plain; charset=utf-8"), ("Date", &d)],
                b"ok",
            );
            http::send(s, &b).await
        }
        "/exec" => {
            if req.method == "POST" {
                ctx.ct.exec_posts.fetch_add(1, Ordering::Relaxed);
            }
            if let Some(tok) = &ctx.token {
                if !authorised(req, tok) {
                    return http::send(s, &unauthorized()).await;
                }
            }
            if req.method != "POST" {
                return http::send(s, &go_error(405, "Method not allowed")).await;
            }
            let ct = req.header("content-type").unwrap_or("");
            let media = ct.split(';').next().unwrap_or("").trim();
            if !media.eq_ignore_ascii_case("application/json") {
                return http::send(s, &go_error(415, "Content-Type must be application/json"))
                    .await;
            }
            if req.body.len() > EXEC_MAX_BODY {
                return http::send(
                    s,
                    &go_error(400, "Invalid JSON body: http: request body too large"),
                )
                .await;
            }
            let parsed: serde_json::Value = match serde_json::from_slice(&req.body) {
                Ok(v) => v,
                Err(e) => {
                    return http::send(s, &go_error(400, &format!("Invalid JSON body: {e}"))).await
                }
            };
            let Some(obj) = parsed.as_object() else {
                return http::send(
                    s,
                    &go_error(
                        400,
                        "Invalid JSON body: json: cannot unmarshal non-object into Go value of type main.execRequest",
                    ),
                )
                .await;
            };
            let command = match obj.get("command") {
                None | Some(serde_json::Value::Null) => String::new(),
                Some(serde_json::Value::String(c)) => c.clone(),
                Some(_) => {
                    return http::send(
                        s,
                        &go_error(400, "Invalid JSON body: json: cannot unmarshal value into Go struct field execRequest.command of type string"),
                    )
                    .await
                }
            };
            let timeout_ms = match obj.get("timeout_ms") {
                None | Some(serde_json::Value::Null) => 0i64,
                Some(v) => match v.as_i64() {
                    Some(n) => n,
                    None => {
                        return http::send(
                            s,
                            &go_error(400, "Invalid JSON body: json: cannot unmarshal value into Go struct field execRequest.timeout_ms of type int"),
                        )
                        .await
                    }
                },
            };
            if command.trim().is_empty() {
                return http::send(s, &go_error(400, "Command is required")).await;
            }
            if timeout_ms < 0 {
                return http::send(s, &go_error(400, "timeout_ms must be non-negative")).await;
            }
            // The container's own view of who it is (its namespaces): see lab/identity.rs.
            let command = map_dev_tcp(&command, &ctx.ct.loopback);
            let command = super::identity::command_in_container(&command, &ctx.ct.dir);
            run_exec(
                s,
                &command,
                timeout_ms as u64,
                &ctx.ct.dir,
                &ctx.ct.hostname,
                &ctx.ct.accounting,
            )
            .await
        }
        _ => http::send(s, &go_error(404, "404 page not found")).await,
    }
}

/// JSON as Go's encoding/json writes it: `<`, `>`, `&`, U+2028, U+2029 escaped.
pub(crate) fn go_json_string(s: &str) -> String {
    serde_json::to_string(s)
        .expect("a string serialises")
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
        .replace('\u{2028}', "\\u2028")
        .replace('\u{2029}', "\\u2029")
}

fn output_event(stream: &str, line: &str) -> String {
    format!(
        "{{\"type\":\"{stream}\",\"data\":{}}}\n",
        go_json_string(line)
    )
}

fn error_event(msg: &str) -> String {
    format!(
        "{{\"type\":\"error\",\"message\":{}}}\n",
        go_json_string(msg)
    )
}

fn exit_event(code: i32) -> String {
    format!("{{\"type\":\"exit\",\"code\":{code}}}\n")
}

/// bash's `/dev/tcp/127.0.0.1/PORT` inside the simulated container: the lab's container shares this
/// machine's loopback, so, as `.curlrc` and the curl wrapper do for curl, the container's port map
/// is applied to the literal `/dev/tcp/127.0.0.1/PORT` words of a command (bash's own redirection,
/// which no program on the PATH can stand in for). Nothing else of the command changes.
pub(crate) fn map_dev_tcp(command: &str, ports: &BTreeMap<u16, SocketAddr>) -> String {
    static RE: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let re = RE.get_or_init(|| {
        regex::Regex::new(r"/dev/tcp/127\.0\.0\.1/([0-9]{1,5})\b").expect("a valid regex")
    });
    re.replace_all(command, |c: &regex::Captures| {
        match c[1].parse::<u16>().ok().and_then(|p| ports.get(&p)) {
            Some(a) => format!("/dev/tcp/{}/{}", a.ip(), a.port()),
            None => c[0].to_string(),
        }
    })
    .into_owned()
}

/// `<dir>/dev-tcp.sed`: [`map_dev_tcp`] for what runs a command in the container other than the
/// lab's execd (a test's `pct exec` stand-in: `sed -f "$CT_HOME/dev-tcp.sed" | bash -s`).
fn write_dev_tcp_map(dir: &Path, ports: &BTreeMap<u16, SocketAddr>) -> io::Result<()> {
    let mut sed = String::from(
        "# written by the pvediag lab: the container's loopback ports for bash's /dev/tcp\n",
    );
    for (port, addr) in ports {
        sed.push_str(&format!(
            "s|/dev/tcp/127\\.0\\.0\\.1/{port}\\b|/dev/tcp/{}/{}|g\n",
            addr.ip(),
            addr.port()
        ));
    }
    std::fs::write(dir.join("dev-tcp.sed"), sed)
}

/// The PATH of execd's commands: the container's `bin` (the curl wrapper) first.
fn exec_path(dir: &Path) -> std::ffi::OsString {
    let mut v = vec![dir.join("bin")];
    let p = std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into());
    v.extend(std::env::split_paths(&p));
    std::env::join_paths(v).unwrap_or_default()
}

/// The lab's addresses of the container's ports (`<dir>/port-unmap`, written with the curl
/// wrapper), to say in what a command prints `127.0.0.1 port 39378` where curl dialled the lab's
/// own socket: plain (`port 41397`) and as the internal command escapes spaces (`\\sport\\s41397`).
struct PortUnmap {
    ports: BTreeMap<(String, u16), u16>,
    re: regex::Regex,
}

impl PortUnmap {
    fn read(dir: &Path) -> PortUnmap {
        let mut ports = BTreeMap::new();
        for l in std::fs::read_to_string(dir.join("port-unmap"))
            .unwrap_or_default()
            .lines()
        {
            let f: Vec<&str> = l.split(' ').collect();
            if let [ip, lab, real] = f[..] {
                if let (Ok(lab), Ok(real)) = (lab.parse(), real.parse()) {
                    ports.insert((ip.to_string(), lab), real);
                }
            }
        }
        let re = regex::Regex::new(r"(\d+\.\d+\.\d+\.\d+)( |\\s)port( |\\s)(\d+)").expect("valid");
        PortUnmap { ports, re }
    }

    fn apply<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if self.ports.is_empty() {
            return text.into();
        }
        self.re.replace_all(text, |c: &regex::Captures| {
            let lab: u16 = c[4].parse().unwrap_or(0);
            match self.ports.get(&(c[1].to_string(), lab)) {
                Some(real) => format!("127.0.0.1{}port{}{real}", &c[2], &c[3]),
                None => c[0].to_string(),
            }
        })
    }
}

/// Runs `/bin/bash -c command` and streams its output as JSON lines, chunked, one flush per line.
async fn run_exec<W>(
    w: &mut W,
    command: &str,
    timeout_ms: u64,
    dir: &Path,
    hostname: &str,
    accounting: &super::accounting::ExecAccounting,
) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
{
    let head = vec![
        (
            "Content-Type".to_string(),
            "application/jsonlines".to_string(),
        ),
        ("Date".to_string(), date()),
        ("Transfer-Encoding".to_string(), "chunked".to_string()),
    ];
    http::send(w, &http::head_bytes(200, &head)).await?;

    // With accounting on, the command runs under strace (see `accounting`).
    let traced = accounting.prepare(dir);
    let mut cmd = match &traced {
        Some((_, argv)) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]).arg("/bin/bash");
            c
        }
        None => tokio::process::Command::new("/bin/bash"),
    };
    cmd.arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env("HOME", dir)
        .env("CURL_HOME", dir)
        .env("PATH", exec_path(dir))
        .env("HOSTNAME", hostname)
        .current_dir(dir)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            http::write_chunk(
                w,
                error_event(&format!("failed to start command: {e}")).as_bytes(),
            )
            .await?;
            http::write_chunk(w, exit_event(127).as_bytes()).await?;
            return http::write_last_chunk(w).await;
        }
    };
    let (tx, mut rx) = mpsc::channel::<String>(64);
    let unmap = PortUnmap::read(dir);
    let out = pump(child.stdout.take(), "stdout", tx.clone(), &unmap);
    let err = pump(child.stderr.take(), "stderr", tx.clone(), &unmap);
    let waiter = async move {
        let tx = tx;
        let status = if timeout_ms > 0 {
            match tokio::time::timeout(Duration::from_millis(timeout_ms), child.wait()).await {
                Ok(st) => st.ok(),
                Err(_) => {
                    // Kills bash only: children keep the pipes (and the stream) open.
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                    let _ = tx
                        .send(error_event(&format!("timeout after {timeout_ms}ms")))
                        .await;
                    return 124;
                }
            }
        } else {
            child.wait().await.ok()
        };
        match status {
            Some(st) => st.code().unwrap_or(-1),
            None => -1,
        }
    };
    let writer = async {
        let mut res = Ok(());
        while let Some(line) = rx.recv().await {
            if res.is_ok() {
                res = http::write_chunk(w, line.as_bytes()).await;
            }
        }
        res
    };
    let (_, _, code, res) = tokio::join!(out, err, waiter, writer);
    if let Some((trace_dir, _)) = &traced {
        accounting.record(trace_dir);
    }
    res?;
    http::write_chunk(w, exit_event(code).as_bytes()).await?;
    http::write_last_chunk(w).await
}

/// Reads a pipe line by line and sends output events; empty lines are dropped.
async fn pump<R: AsyncRead + Unpin>(
    r: Option<R>,
    stream: &'static str,
    tx: mpsc::Sender<String>,
    unmap: &PortUnmap,
) {
    let Some(r) = r else { return };
    let mut r = BufReader::new(r);
    let mut line: Vec<u8> = Vec::new();
    let mut skipping = false;
    let emit = |line: &[u8]| -> Option<String> {
        let text = String::from_utf8_lossy(line);
        let text = text.strip_suffix('\r').unwrap_or(&text);
        if text.is_empty() {
            None
        } else {
            Some(output_event(stream, &unmap.apply(text)))
        }
    };
    while let Ok(buf) = r.fill_buf().await {
        if buf.is_empty() {
            if !skipping {
                if let Some(ev) = emit(&line) {
                    let _ = tx.send(ev).await;
                }
            }
            break;
        }
        match buf.iter().position(|&b| b == b'\n') {
            Some(i) => {
                if !skipping {
                    line.extend_from_slice(&buf[..i]);
                }
                r.consume(i + 1);
                if !skipping {
                    if let Some(ev) = emit(&line) {
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                    }
                }
                skipping = false;
                line.clear();
            }
            None => {
                let n = buf.len();
                if !skipping {
                    line.extend_from_slice(buf);
                }
                r.consume(n);
                if !skipping && line.len() > EXEC_MAX_LINE {
                    skipping = true;
                    line.clear();
                    let msg = format!("error reading {stream}: bufio.Scanner: token too long");
                    if tx.send(error_event(&msg)).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod dev_tcp_tests {
    use super::*;

    #[test]
    fn only_the_mapped_loopback_ports_are_rewritten() {
        let mut ports = BTreeMap::new();
        ports.insert(5901u16, "127.0.0.1:41000".parse().unwrap());
        let cmd = "exec 3<>/dev/tcp/127.0.0.1/5901; x </dev/tcp/127.0.0.1/59010; y </dev/tcp/10.0.0.1/5901; z </dev/tcp/$h/$p";
        assert_eq!(
            map_dev_tcp(cmd, &ports),
            "exec 3<>/dev/tcp/127.0.0.1/41000; x </dev/tcp/127.0.0.1/59010; y </dev/tcp/10.0.0.1/5901; z </dev/tcp/$h/$p"
        );
    }
}
