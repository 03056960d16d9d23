//! `pvediag serve --listen ADDR`: a multi-target exporter in the style of blackbox_exporter.
//!
//! - `GET /probe?target=202` (a VMID, or an instance name when the PVE API is configured): one
//!   diagnosis, answered as Prometheus metrics; its deadline is the scrape timeout Prometheus sends
//!   (`X-Prometheus-Scrape-Timeout-Seconds`) minus [`SCRAPE_MARGIN`], and never more than the
//!   configured deadline;
//! - `GET /metrics`: the exporter's own metrics; `GET /healthz`: `ok`.
//!
//! The PVE API's answers (node list, container list, configs and tokens) are cached for a short
//! while ([`crate::pve_cache`]) and its requests fit in the scrape's deadline.
//!
//! A small HTTP/1.1 server on the lab's helpers: one request per connection.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::BufReader;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::cli::{ColorChoice, OutputArgs, OutputFormat, ServeArgs, UsageError};
use crate::lab::http::{read_request, response_bytes, send};
use crate::report::prometheus::{family, labels, Prometheus, CONTENT_TYPE};
use crate::report::{exit, Format};
use crate::settings::{Environment, Parts, Settings};
use crate::target::{is_instance_name, TargetRequest};

/// Taken off Prometheus' scrape timeout so the answer arrives in time.
pub const SCRAPE_MARGIN: Duration = Duration::from_millis(500);
/// The shortest deadline a probe gets.
pub const MIN_DEADLINE: Duration = Duration::from_secs(1);
/// How long a client may take to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

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
}

/// The exporter's settings: its options, the environment and the files they name.
pub fn settings_reading_env_and_files(args: &ServeArgs) -> Result<Settings, UsageError> {
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
    Settings::from_parts_reading_files(parts, &Environment::read())
}

/// Validates the options, binds, and serves until Ctrl-C.
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
        crate::output::print_warnings(cfg.quiet, &cfg.warnings);
        // The one line a supervisor (or a test) reads to learn the address.
        eprintln!("pvediag serve: listening on http://{local}");
        tokio::select! {
            _ = serve(listener, cfg) => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        Ok(exit::OK)
    })
}

/// Serves forever on `listener`.
pub async fn serve(listener: TcpListener, mut base: Settings) {
    // PVE API answers (nodes, containers, configs and their tokens) are kept for a short while:
    // every scrape of every target asks for them (crate::pve_cache).
    if let Some(p) = &mut base.pve {
        p.cache.get_or_insert_with(Default::default);
    }
    let state = Arc::new(State {
        sem: Semaphore::new(base.concurrency.max(1)),
        base,
        stats: Mutex::new(Stats::default()),
    });
    let mut set = tokio::task::JoinSet::new();
    loop {
        while set.try_join_next().is_some() {}
        match listener.accept().await {
            Ok((stream, _)) => {
                set.spawn(connection(stream, state.clone()));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn connection(stream: TcpStream, state: Arc<State>) {
    let mut s = BufReader::new(stream);
    let req = match tokio::time::timeout(READ_TIMEOUT, read_request(&mut s, 0)).await {
        Ok(Ok(Some(r))) => r,
        Ok(Ok(None)) | Err(_) => return,
        Ok(Err(_)) => {
            let _ = send(&mut s, &plain(400, "bad request\n")).await;
            return;
        }
    };
    let path = req.path().to_string();
    let (status, ctype, body) = if req.method != "GET" && req.method != "HEAD" {
        (405, "text/plain; charset=utf-8", "only GET\n".to_string())
    } else {
        match path.as_str() {
            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n".to_string()),
            "/metrics" => (200, CONTENT_TYPE, own_metrics(&state)),
            "/probe" => probe(&state, &req).await,
            _ => (
                404,
                "text/plain; charset=utf-8",
                "not found: try /probe?target=VMID, /metrics or /healthz\n".to_string(),
            ),
        }
    };
    let known = matches!(path.as_str(), "/healthz" | "/metrics" | "/probe");
    if let Ok(mut st) = state.stats.lock() {
        let p = if known { path } else { "other".into() };
        *st.requests.entry((p, status)).or_default() += 1;
    }
    let body_bytes = if req.method == "HEAD" {
        Vec::new()
    } else {
        body.into_bytes()
    };
    let bytes = response_bytes(
        status,
        &[("Content-Type", ctype), ("Connection", "close")],
        &body_bytes,
    );
    let _ = send(&mut s, &bytes).await;
}

fn plain(status: u16, body: &str) -> Vec<u8> {
    response_bytes(
        status,
        &[
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Connection", "close"),
        ],
        body.as_bytes(),
    )
}

/// The deadline of one probe: the scrape timeout minus the margin, within [1 s, configured].
pub fn probe_deadline(configured: Duration, scrape_timeout: Option<&str>) -> Duration {
    let from_header = scrape_timeout
        .and_then(|h| h.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0 && *s < 86400.0)
        .map(|s| Duration::from_secs_f64(s).saturating_sub(SCRAPE_MARGIN));
    match from_header {
        Some(d) => d.min(configured).max(MIN_DEADLINE),
        None => configured,
    }
}

async fn probe(state: &State, req: &crate::lab::http::Request) -> (u16, &'static str, String) {
    const TEXT: &str = "text/plain; charset=utf-8";
    let Some(target) = req.query_param("target") else {
        return (400, TEXT, "missing ?target=VMID\n".into());
    };
    let target = target.trim().to_string();
    let request = if is_instance_name(&target) {
        if state.base.pve.is_none()
            && state.base.probe.host.is_none()
            && crate::instance::vmid_of_cmux_name(&target).is_none()
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
    let report = match crate::run::diagnose_within(&state.base, &targets, deadline).await {
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
}
