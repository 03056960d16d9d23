//! `pvediag serve --listen ADDR`: a multi-target exporter in the style of blackbox_exporter.
//!
//! - `GET /probe?target=202` (a VMID, or an instance name when the PVE API is configured): one
//!   diagnosis, answered as Prometheus metrics; its deadline is the scrape timeout Prometheus sends
//!   (`X-Prometheus-Scrape-Timeout-Seconds`) minus [`SCRAPE_MARGIN`], and never more than the
//!   configured deadline;
//! - `GET /metrics`: the exporter's own metrics; `GET /healthz`: `ok`.
//!
//! HTTP/1.1 on hyper, one request per connection, with limits a network-facing exporter needs: the
//! request head within [`Limits::header_timeout`] and [`Limits::max_head`] bytes (else 431), no
//! request body over [`Limits::max_body`] (413), and a graceful stop on SIGTERM or Ctrl-C: no new
//! connections, the requests in flight answered (for at most [`Limits::drain`]), then exit 0.
//!
//! The PVE API's answers (node list, container list, configs and tokens) are cached for a short
//! while ([`crate::pve_cache`]) and its requests fit in the scrape's deadline.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Body, Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE as CONTENT_TYPE_HEADER};
use hyper::{Method, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cli::{ColorChoice, OutputArgs, OutputFormat, ServeArgs, UsageError};
use crate::exit;
use crate::report::prometheus::{family, labels, Prometheus, CONTENT_TYPE};
use crate::report::Format;
use crate::settings::{Environment, Parts, Settings};
use crate::target::{is_instance_name, TargetRequest};

/// Taken off Prometheus' scrape timeout so the answer arrives in time.
pub(crate) const SCRAPE_MARGIN: Duration = Duration::from_millis(500);
/// The shortest deadline a probe gets.
pub(crate) const MIN_DEADLINE: Duration = Duration::from_secs(1);

/// What the exporter accepts from a client.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// How long a client may take to send its request line and headers (a mute or slow client
    /// is dropped after this).
    pub(crate) header_timeout: Duration,
    /// How long a client may take to send a request body.
    pub(crate) body_timeout: Duration,
    /// Largest request head in bytes (hyper's read buffer; at least 8 KiB): 431 above it.
    pub(crate) max_head: usize,
    /// Most request headers: 431 above it.
    pub(crate) max_headers: usize,
    /// Largest request body in bytes (the exporter takes none of use): 413 above it.
    pub(crate) max_body: u64,
    /// After SIGTERM or Ctrl-C: how long the requests in flight may still take.
    pub(crate) drain: Duration,
}

impl Limits {
    /// The exporter's limits; the requests in flight get the probes' deadline and a second to stop.
    pub(crate) fn for_deadline(deadline: Duration) -> Limits {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_head: 16 * 1024,
            max_headers: 64,
            max_body: 4 * 1024,
            drain: deadline + Duration::from_secs(1),
        }
    }
}

/// The exporter's own counters.
#[derive(Default)]
struct Stats {
    /// (path, status) -> requests.
    requests: BTreeMap<(String, u16), u64>,
    probes: u64,
    probe_seconds: f64,
    /// exit code -> probes.
    probe_results: BTreeMap<u8, u64>,
}

struct State {
    base: Settings,
    sem: Semaphore,
    stats: Mutex<Stats>,
    limits: Limits,
    /// Each target's routing generation as the last scrape found it: the next scrape's guess.
    memory: crate::run::Memory,
}

/// The exporter's settings: its options, the environment and the files they name.
pub(crate) fn settings_reading_env_and_files(args: &ServeArgs) -> Result<Settings, UsageError> {
    settings_reading_files(args, &Environment::read())
}

fn settings_reading_files(args: &ServeArgs, env: &Environment) -> Result<Settings, UsageError> {
    let output = OutputArgs {
        format: OutputFormat::Prometheus,
        output: None,
        color: ColorChoice::Never,
        quiet: args.quiet,
    };
    let parts = Parts {
        reach: &args.reach,
        check: &args.check,
        pve: Some(&args.pve),
        wait: None,
        output: &output,
        host_env: Vec::new(),
        // The exporter keeps no state: Prometheus keeps the history of its answers.
        state_dir: None,
    };
    Settings::from_parts_reading_files(parts, env)
}

/// Validates the options, binds, and serves until SIGTERM or Ctrl-C.
pub fn run(args: ServeArgs, rt: &tokio::runtime::Runtime) -> Result<u8, UsageError> {
    let cfg = settings_reading_env_and_files(&args)?;
    let addr = args.listen;
    rt.block_on(async {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| UsageError::new(format!("--listen {addr}: cannot bind: {e}")))?;
        let local = listener
            .local_addr()
            .map_err(|e| UsageError::new(e.to_string()))?;
        let stop = crate::signal::Stop::listen();
        crate::output::print_warnings(cfg.quiet, &cfg.warnings);
        // The one line a supervisor (or a test) reads to learn the address.
        eprintln!("pvediag serve: listening on http://{local}");
        let limits = Limits::for_deadline(cfg.deadline);
        let stop = async {
            stop.wait().await;
            eprintln!("pvediag serve: stopping: answering the requests in flight");
        };
        serve(listener, cfg, limits, stop).await;
        Ok(exit::OK)
    })
}

/// Serves on `listener` until `stop` completes, then answers the requests in flight (for at most
/// `limits.drain`) and returns.
pub(crate) async fn serve(
    listener: TcpListener,
    mut base: Settings,
    limits: Limits,
    stop: impl Future<Output = ()>,
) {
    // PVE API answers (nodes, containers, configs and their tokens) are kept for a short while:
    // every scrape of every target asks for them (crate::pve_cache).
    if let Some(p) = &mut base.pve {
        p.cache.get_or_insert_with(Default::default);
    }
    let state = Arc::new(State {
        sem: Semaphore::new(base.concurrency.max(1)),
        base,
        stats: Mutex::new(Stats::default()),
        limits,
        memory: Default::default(),
    });
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_head.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(false);
    let graceful = GracefulShutdown::new();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // Out of file descriptors, or the like: try again shortly.
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let state = state.clone();
        let service = hyper::service::service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(answer(&state, req).await) }
        });
        let conn = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that breaks off, sends garbage or is too slow: hyper has answered what
            // can be answered (400, 431) and closed; nothing to do here.
            let _ = conn.await;
        });
    }
    // No new connections; those in flight finish their answer, for at most `drain`.
    drop(listener);
    let _ = tokio::time::timeout(limits.drain, graceful.shutdown()).await;
}

const TEXT: &str = "text/plain; charset=utf-8";

async fn answer(state: &State, req: hyper::Request<Incoming>) -> Response<Full<Bytes>> {
    let (req, body) = req.into_parts();
    let path = req.uri.path().to_string();
    let head = req.method == Method::HEAD;
    let (status, ctype, body) = if req.method != Method::GET && !head {
        (405, TEXT, "only GET\n".to_string())
    } else if let Err(status) = read_body(state.limits, body).await {
        (
            status,
            TEXT,
            "request body too large or too slow\n".to_string(),
        )
    } else {
        match path.as_str() {
            "/healthz" => (200, TEXT, "ok\n".to_string()),
            "/metrics" => (200, CONTENT_TYPE, own_metrics(state)),
            "/probe" => probe(state, &Asked(&req)).await,
            _ => (
                404,
                TEXT,
                "not found: try /probe?target=VMID, /metrics or /healthz\n".to_string(),
            ),
        }
    };
    let known = matches!(path.as_str(), "/healthz" | "/metrics" | "/probe");
    if let Ok(mut st) = state.stats.lock() {
        let p = if known { path } else { "other".into() };
        *st.requests.entry((p, status)).or_default() += 1;
    }
    let body = if head { String::new() } else { body };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut()
        .insert(CONTENT_TYPE_HEADER, HeaderValue::from_static(ctype));
    resp
}

/// Reads and drops a request body (GET takes none of use): 413 over [`Limits::max_body`], without
/// reading it when its length says so; 408 when it is slower than [`Limits::body_timeout`].
async fn read_body(limits: Limits, body: Incoming) -> Result<(), u16> {
    if body.is_end_stream() {
        return Ok(());
    }
    if body.size_hint().lower() > limits.max_body {
        return Err(413);
    }
    let max = usize::try_from(limits.max_body).unwrap_or(usize::MAX);
    match tokio::time::timeout(limits.body_timeout, Limited::new(body, max).collect()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(413),
        Err(_) => Err(408),
    }
}

/// What a `/probe` request asks: its query and headers.
struct Asked<'a>(&'a hyper::http::request::Parts);

impl Asked<'_> {
    /// A query parameter, percent-decoded.
    fn query_param(&self, name: &str) -> Option<String> {
        let q = self.0.uri.query()?;
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.0.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// The deadline of one probe: the scrape timeout minus the margin, within [1 s, configured].
pub(crate) fn probe_deadline(configured: Duration, scrape_timeout: Option<&str>) -> Duration {
    let from_header = scrape_timeout
        .and_then(|h| h.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86400.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(SCRAPE_MARGIN));
    match from_header {
        Some(d) => d.min(configured).max(MIN_DEADLINE),
        None => configured,
    }
}

async fn probe(state: &State, req: &Asked<'_>) -> (u16, &'static str, String) {
    let Some(target) = req.query_param("target") else {
        return (400, TEXT, "missing ?target=VMID\n".into());
    };
    let target = target.trim().to_string();
    let request = if is_instance_name(&target) {
        if state.base.pve.is_none()
            && state.base.probe.host.is_none()
            && crate::target::vmid_of_cmux_name(&target).is_none()
        {
            return (
                400,
                TEXT,
                "an instance name needs the PVE API (PVE_API_URL, PVE_API_TOKEN); give a VMID\n"
                    .into(),
            );
        }
        TargetRequest {
            names: vec![target],
            ..TargetRequest::default()
        }
    } else {
        match crate::target::parse_vmid(&target) {
            Ok(v) => TargetRequest {
                vmids: vec![v],
                ..TargetRequest::default()
            },
            Err(_) => return (
                400,
                TEXT,
                "bad target: expected a VMID such as 202 or an instance name such as cmux-202\n"
                    .into(),
            ),
        }
    };
    let deadline = probe_deadline(
        state.base.deadline,
        req.header("x-prometheus-scrape-timeout-seconds"),
    );
    let start = Instant::now();
    let Ok(Ok(_permit)) = tokio::time::timeout(deadline, state.sem.acquire()).await else {
        return (503, TEXT, "too many probes in flight\n".into());
    };
    // The PVE API's answers count against the scrape timeout too: each request gets at most half
    // of what is left (a hanging API leaves the diagnosis time to run without its tokens), and
    // the whole resolution no more than what is left.
    let left = deadline.saturating_sub(start.elapsed()).max(MIN_DEADLINE);
    let pve = state.base.pve.clone().map(|mut p| {
        p.timeout = p.timeout.min(left / 2);
        p
    });
    let resolved = tokio::time::timeout(
        left,
        crate::pve::resolve(
            pve.as_ref(),
            &request,
            state.base.probe.exec_token.is_none(),
            state.base.concurrency,
        ),
    )
    .await;
    let mut targets = match resolved {
        Err(_) => {
            return (
                503,
                TEXT,
                format!(
                    "the PVE API did not answer within the scrape deadline ({} ms)\n",
                    left.as_millis()
                ),
            )
        }
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let status = if e.exit_code() == exit::USAGE {
                400
            } else {
                503
            };
            return (status, TEXT, format!("{e}\n"));
        }
    };
    let bound = deadline.saturating_sub(start.elapsed()) / 2;
    if let Err(e) =
        crate::instance::resolve_within(&state.base, &request, &mut targets, bound).await
    {
        return (400, TEXT, format!("{e}\n"));
    }
    let deadline = deadline.saturating_sub(start.elapsed()).max(MIN_DEADLINE);
    let report =
        match crate::run::diagnose_within(&state.base, &targets, deadline, &state.memory).await {
            Ok(r) => r,
            Err(e) => return (500, TEXT, format!("{e}\n")),
        };
    if let Ok(mut st) = state.stats.lock() {
        st.probes += 1;
        st.probe_seconds += start.elapsed().as_secs_f64();
        *st.probe_results.entry(report.exit_code()).or_default() += 1;
    }
    (200, CONTENT_TYPE, Prometheus.render(&report))
}

fn own_metrics(state: &State) -> String {
    let mut out = String::new();
    let Ok(st) = state.stats.lock() else {
        return out;
    };
    let requests: Vec<(String, f64)> = st
        .requests
        .iter()
        .map(|((p, c), n)| (labels(&[("path", p), ("code", &c.to_string())]), *n as f64))
        .collect();
    family(
        &mut out,
        "pvediag_exporter_requests_total",
        "counter",
        "HTTP requests served, by path and status.",
        &requests,
    );
    family(
        &mut out,
        "pvediag_exporter_probe_duration_seconds",
        "summary",
        "How long the diagnoses of /probe took.",
        &[],
    );
    let _ = std::fmt::Write::write_fmt(
        &mut out,
        format_args!(
            "pvediag_exporter_probe_duration_seconds_sum {}\npvediag_exporter_probe_duration_seconds_count {}\n",
            st.probe_seconds, st.probes
        ),
    );
    let results: Vec<(String, f64)> = st
        .probe_results
        .iter()
        .map(|(c, n)| (labels(&[("exit_code", &c.to_string())]), *n as f64))
        .collect();
    family(
        &mut out,
        "pvediag_exporter_probes_total",
        "counter",
        "Diagnoses run, by their exit code.",
        &results,
    );
    family(
        &mut out,
        "pvediag_exporter_probes_in_flight",
        "gauge",
        "Diagnoses running now.",
        &[(
            String::new(),
            (state.base.concurrency - state.sem.available_permits()) as f64,
        )],
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deadline_from_scrape_timeout() {
        let c = Duration::from_secs(25);
        assert_eq!(probe_deadline(c, None), c);
        assert_eq!(probe_deadline(c, Some("10")), Duration::from_millis(9500));
        assert_eq!(probe_deadline(c, Some("60")), c);
        assert_eq!(probe_deadline(c, Some("0.2")), MIN_DEADLINE);
        assert_eq!(probe_deadline(c, Some("abc")), c);
        assert_eq!(probe_deadline(c, Some("-5")), c);
    }

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// Settings of a serve command line whose public URLs all dial `upstream`.
    fn settings(upstream: std::net::SocketAddr) -> Settings {
        use clap::Parser;
        let upstream = upstream.to_string();
        let cli = crate::cli::Cli::try_parse_from([
            "pvediag",
            "serve",
            "--domain",
            "lab.test",
            "--connect-to",
            &upstream,
            "--timeout",
            "1s",
            "--no-origin-check",
        ])
        .unwrap();
        let Some(crate::cli::Command::Serve(args)) = cli.command else {
            panic!("not serve");
        };
        settings_reading_files(&args, &Environment::default()).unwrap()
    }

    fn limits() -> Limits {
        Limits {
            header_timeout: Duration::from_millis(500),
            body_timeout: Duration::from_millis(500),
            ..Limits::for_deadline(Duration::from_secs(20))
        }
    }

    struct Server {
        addr: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        task: tokio::task::JoinHandle<()>,
        /// Accepts connections into its backlog and never answers.
        _mute: TcpListener,
    }

    async fn start(limits: Limits) -> Server {
        let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cfg = settings(mute.local_addr().unwrap());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, cfg, limits, async {
            let _ = rx.await;
        }));
        Server {
            addr,
            stop: Some(tx),
            task,
            _mute: mute,
        }
    }

    /// Everything the server sends until it closes (bounded by `within`).
    async fn read_all(s: &mut TcpStream, within: Duration) -> String {
        let mut out = Vec::new();
        tokio::time::timeout(within, s.read_to_end(&mut out))
            .await
            .expect("the server closes the connection in time")
            .ok();
        String::from_utf8_lossy(&out).into_owned()
    }

    async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        // The server may answer and close before it has read everything.
        let _ = s.write_all(request).await;
        read_all(&mut s, Duration::from_secs(10)).await
    }

    #[tokio::test]
    async fn health_and_unknown_paths() {
        let srv = start(limits()).await;
        let r = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.ends_with("\r\n\r\nok\n"), "{r}");
        let r = exchange(srv.addr, b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(
            r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
            "{r}"
        );
        let r = exchange(srv.addr, b"POST /probe HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 405 "), "{r}");
        let r = exchange(srv.addr, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
        let r = exchange(srv.addr, b"NOT HTTP\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
    }

    #[tokio::test]
    async fn an_oversized_request_is_refused() {
        let srv = start(limits()).await;
        // A head over the limit: 431, whatever it holds.
        let long = format!(
            "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(limits().max_head + 1)
        );
        let r = exchange(srv.addr, long.as_bytes()).await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        let many: String = (0..=limits().max_headers)
            .map(|i| format!("X-H{i}: v\r\n"))
            .collect();
        let r = exchange(
            srv.addr,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 431 "), "{r}");
        // A body announced over the limit: 413 without reading it.
        let r = exchange(
            srv.addr,
            format!(
                "GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
                limits().max_body + 1
            )
            .as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        // A chunked body that grows over the limit: 413.
        let chunk = "b".repeat(limits().max_body as usize);
        let body = format!(
            "{:x}\r\n{chunk}\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
            chunk.len(),
            chunk.len()
        );
        let r = exchange(
            srv.addr,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}")
                .as_bytes(),
        )
        .await;
        assert!(r.starts_with("HTTP/1.1 413 "), "{r}");
        // The server still answers.
        let r = exchange(srv.addr, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    }

    #[tokio::test]
    async fn a_mute_or_slow_client_is_dropped_after_the_header_timeout() {
        let srv = start(limits()).await;
        let t = Instant::now();
        // Mute: connects and sends nothing.
        let mut mute = TcpStream::connect(srv.addr).await.unwrap();
        // Slow: half a request line, then nothing more.
        let mut slow = TcpStream::connect(srv.addr).await.unwrap();
        slow.write_all(b"GET /healthz HT").await.unwrap();
        for s in [&mut mute, &mut slow] {
            let r = read_all(s, Duration::from_secs(10)).await;
            assert!(!r.contains("200"), "{r}");
        }
        let took = t.elapsed();
        assert!(
            took >= limits().header_timeout && took < Duration::from_secs(5),
            "{took:?}"
        );
        // A slow body: the head in time, the body never.
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
            .await
            .unwrap();
        let r = read_all(&mut s, limits().body_timeout + Duration::from_secs(10)).await;
        assert!(r.starts_with("HTTP/1.1 408 "), "{r}");
    }

    #[tokio::test]
    async fn a_stop_answers_the_requests_in_flight_and_takes_no_new_ones() {
        let mut srv = start(Limits {
            header_timeout: Duration::from_secs(30),
            ..limits()
        })
        .await;
        // An idle connection is closed at once on stop, not held until its header timeout.
        let mut idle = TcpStream::connect(srv.addr).await.unwrap();
        // A probe in flight: every URL dials the mute server, so it lasts about the 1 s timeout.
        let mut probe = TcpStream::connect(srv.addr).await.unwrap();
        probe
            .write_all(b"GET /probe?target=202 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stopped = Instant::now();
        srv.stop.take().unwrap().send(()).unwrap();
        let r = read_all(&mut idle, Duration::from_secs(5)).await;
        assert_eq!(r, "");
        assert!(stopped.elapsed() < Duration::from_secs(5));
        // New connections are refused once the listener is closed.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(TcpStream::connect(srv.addr).await.is_err());
        assert!(
            !srv.task.is_finished(),
            "serve waits for the probe in flight"
        );
        let r = read_all(&mut probe, Duration::from_secs(30)).await;
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("\npvediag_exit_code "), "{r}");
        tokio::time::timeout(Duration::from_secs(10), srv.task)
            .await
            .expect("serve returns once the requests in flight are answered")
            .unwrap();
    }
}
