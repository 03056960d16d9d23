//! `cargo bench --bench fleet`: pvediag against a fleet of lab containers with latency injected at
//! every hop, side by side with the same work done by hand (one `curl --parallel` with every public
//! GET and one exec POST per sandbox, each POST running one `curl --parallel` over the container's
//! ports and HTTP back ends, one `systemctl show` for the catalog's units and a read of each banner
//! back end: the facts pvediag gathers), with the seed's manual procedure (sequential curl + exec calls), with `curl --parallel`
//! doing only the external half, and with the floor computed from the delays.
//! See docs/performance.md.
//!
//! Environment (all optional):
//! - `PVEDIAG_BENCH_DELAY_MS` (50): latency per hop (edge, host proxy, execd, each service).
//! - `PVEDIAG_BENCH_RUNS` (5): runs per measurement; the median is reported.
//! - `PVEDIAG_BENCH_SIZES` (1,10,100): numbers of VMIDs.
//! - `PVEDIAG_BENCH_SEQ_FULL` (unset): also run the sequential script for 10 VMIDs (slow) instead of
//!   extrapolating it from 1 VMID.
//! - `PVEDIAG_BENCH_BIN` (this build's pvediag): measure another pvediag binary (an older build, for
//!   before/after figures on the same lab; it gets no `--catalog`).
//!
//! Also measured at each size (issue 14): the back ends' and units' section of the internal command
//! on the healthy path, as the same binary on the same lab with two `--checks` copies of the seed
//! catalog, one as it is and one without any `backend` or `unit` (no back-end probe, no
//! `systemctl show`, no banner reader), run alternately; row "back ends and units".
//!
//! Everything is on 127.0.0.1; the lab runs in this process, pvediag, bash and curl are children.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use pvediag::catalog::{Catalog, Service};
use pvediag::lab::{self, Delays, Lab};

const FIRST_VMID: u32 = 1000;

/// The pvediag binary measured: this build's, or `PVEDIAG_BENCH_BIN`.
fn pvediag_bin() -> String {
    std::env::var("PVEDIAG_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_pvediag").into())
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Delay of a request to a container port: execd's or a plain service's.
fn port_delay(port: u16, d: &Delays) -> u64 {
    if port == lab::ServiceKind::Exec.seed_port() {
        d.exec_ms
    } else {
        d.service_ms
    }
}

/// Delay of the internal probe of `s`: its port, plus the port cmux-proxy forwards to.
fn internal_delay(s: &Service, d: &Delays) -> u64 {
    let forwarded = s
        .probe
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-cmux-port-internal"))
        .and_then(|(_, v)| v.trim().parse::<u16>().ok())
        .map(|p| port_delay(p, d))
        .unwrap_or(0);
    port_delay(s.port, d) + forwarded
}

/// The floor: the slowest single probe chain of one VMID, with zero CPU and unbounded concurrency.
/// Every request pays one delay per hop it crosses:
/// - external probe: edge + caddy + service (the routed services but the exec service, whose
///   public probe is the exec call itself);
/// - origin check: edge + caddy (Caddy answers it itself);
/// - exec round trip: edge + caddy + exec, then the slowest internal probe (cmux-proxy: service +
///   the execd behind it); internal probes run concurrently.
fn floor_ms(catalog: &Catalog, d: &Delays) -> (u64, String) {
    let ext = catalog
        .services
        .iter()
        .filter(|s| s.routed && s.name != "exec")
        .map(|s| d.edge_ms + d.caddy_ms + port_delay(s.port, d))
        .max()
        .unwrap_or(0);
    let origin = d.edge_ms + d.caddy_ms;
    let slowest_internal = catalog
        .services
        .iter()
        .map(|s| internal_delay(s, d))
        .max()
        .unwrap_or(0);
    let exec = d.edge_ms + d.caddy_ms + d.exec_ms + slowest_internal;
    let floor = ext.max(origin).max(exec);
    (
        floor,
        format!(
            "max(external {ext}, origin {origin}, exec round trip {exec} = edge {} + caddy {} + exec {} + slowest internal {slowest_internal})",
            d.edge_ms, d.caddy_ms, d.exec_ms
        ),
    )
}

struct Machine {
    nproc: usize,
    cpu: String,
    mem_mb: u64,
    load: String,
}

fn machine() -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let mem_mb = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kb| kb / 1024)
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Machine {
        nproc: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu,
        mem_mb,
        load,
    }
}

/// One measured child: wall time, and (under /usr/bin/time) peak RSS and CPU time.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    wall_ms: f64,
    rss_kb: Option<u64>,
    cpu_ms: Option<f64>,
}

/// CPU time (ms) of this process (the lab) and of its waited-for children (the lab's bash and
/// curl, and every measured command), from /proc/self/stat.
fn self_cpu_ms() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // Fields 14..17 of stat(5); `after` starts at field 3.
    let tick = 1000.0 / 100.0;
    if f.len() < 15 {
        return (0.0, 0.0);
    }
    ((f[11] + f[12]) * tick, (f[13] + f[14]) * tick)
}

fn time_available() -> bool {
    Path::new("/usr/bin/time").exists()
        && Command::new("/usr/bin/time")
            .args(["-f", "%M", "true"])
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
}

/// Runs `argv` (under /usr/bin/time when `timed`), checks the exit code, measures the wall time.
fn measure(argv: &[String], timed: bool, dir: &Path, ok_codes: &[i32]) -> Sample {
    let tfile = dir.join("time.out");
    let mut cmd = if timed {
        let mut c = Command::new("/usr/bin/time");
        c.arg("-f").arg("%M %U %S").arg("-o").arg(&tfile);
        c.args(argv);
        c
    } else {
        let mut c = Command::new(&argv[0]);
        c.args(&argv[1..]);
        c
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let start = Instant::now();
    let out = cmd.output().expect("spawn");
    let wall_ms = start.elapsed().as_secs_f64() * 1000.0;
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{} exited {code}: {}",
        argv[0],
        String::from_utf8_lossy(&out.stderr)
    );
    let mut s = Sample {
        wall_ms,
        ..Sample::default()
    };
    if timed {
        let t = std::fs::read_to_string(&tfile).unwrap_or_default();
        let last = t.lines().last().unwrap_or("");
        let f: Vec<&str> = last.split_whitespace().collect();
        if f.len() == 3 {
            s.rss_kb = f[0].parse().ok();
            let u: f64 = f[1].parse().unwrap_or(0.0);
            let sy: f64 = f[2].parse().unwrap_or(0.0);
            s.cpu_ms = Some((u + sy) * 1000.0);
        }
    }
    s
}

fn median_sample(v: &[Sample]) -> Sample {
    Sample {
        wall_ms: median(v.iter().map(|s| s.wall_ms).collect()),
        rss_kb: v
            .iter()
            .map(|s| s.rss_kb)
            .collect::<Option<Vec<u64>>>()
            .map(|r| r.into_iter().max().unwrap_or(0)),
        cpu_ms: v
            .iter()
            .map(|s| s.cpu_ms)
            .collect::<Option<Vec<f64>>>()
            .map(median),
    }
}

/// The seed's manual procedure, one step after another: per service, curl the public URL (routed
/// services), then one exec call that curls the service inside.
fn sequential_script(lab: &Lab, catalog: &Catalog, vmids: &[u32], token: &str) -> String {
    let edge = lab.edge_addr.port();
    let ca = shell_quote(&lab.ca_cert_path.display().to_string());
    let common = format!("-sS -o /dev/null --connect-to ::127.0.0.1:{edge} --cacert {ca}");
    let mut s = String::from("set -e\n");
    for &vmid in vmids {
        for svc in &catalog.services {
            let hdrs: String = svc
                .probe
                .headers
                .iter()
                .map(|(k, v)| format!(" -H {}", shell_quote(&format!("{k}: {v}"))))
                .collect();
            if svc.routed {
                s.push_str(&format!(
                    "curl {common} -X {} {hdrs} {}\n",
                    svc.probe.method,
                    shell_quote(&format!(
                        "https://{}-{vmid}.{}{}",
                        svc.name, lab.domain, svc.probe.path
                    ))
                ));
            }
            let inner = format!(
                "curl -sS -o /dev/null -X {} {hdrs} {}",
                svc.probe.method,
                shell_quote(&format!("http://127.0.0.1:{}{}", svc.port, svc.probe.path))
            );
            let body = serde_json::json!({ "command": inner, "timeout_ms": 10000 }).to_string();
            s.push_str(&format!(
                "curl {common} -H {} -H 'content-type: application/json' --data-binary {} {}\n",
                shell_quote(&format!("authorization: Bearer {token}")),
                shell_quote(&body),
                shell_quote(&format!("https://exec-{vmid}.{}/exec", lab.domain))
            ));
        }
    }
    s
}

/// `curl --parallel` config: the public URL of every routed service of every VMID.
fn curl_config(lab: &Lab, catalog: &Catalog, vmids: &[u32]) -> (String, usize) {
    curl_config_for(lab, catalog, vmids, &|_| true)
}

fn curl_config_for(
    lab: &Lab,
    catalog: &Catalog,
    vmids: &[u32],
    keep: &dyn Fn(&Service) -> bool,
) -> (String, usize) {
    let mut s = String::new();
    let mut n = 0;
    for &vmid in vmids {
        for svc in catalog.services.iter().filter(|s| s.routed && keep(s)) {
            s.push_str(&format!(
                "url = \"https://{}-{vmid}.{}{}\"\noutput = \"/dev/null\"\n",
                svc.name, lab.domain, svc.probe.path
            ));
            for (k, v) in &svc.probe.headers {
                s.push_str(&format!("header = \"{k}: {v}\"\n"));
            }
            n += 1;
        }
    }
    (s, n)
}

/// What the catalog (`checks/*.json`) asks inside the container beyond its services' own probes
/// (issue 14): the HTTP back ends (port, method, path, headers), the banner back ends' ports, and
/// every unit the services, their back ends and what those need name.
struct BackWork {
    http: Vec<HttpBackEnd>,
    banners: Vec<u16>,
    units: Vec<String>,
}

/// An HTTP back end's port, method, path and headers.
type HttpBackEnd = (u16, String, String, Vec<(String, String)>);

fn back_work() -> BackWork {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checks");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut w = BackWork {
        http: Vec::new(),
        banners: Vec::new(),
        units: Vec::new(),
    };
    let unit = |u: &serde_json::Value, w: &mut BackWork| {
        if let Some(u) = u.as_str().filter(|u| !u.is_empty()) {
            if !w.units.iter().any(|x| x == u) {
                w.units.push(u.to_string());
            }
        }
    };
    for f in files {
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        unit(&v["unit"], &mut w);
        let b = &v["backend"];
        if b.is_null() {
            continue;
        }
        unit(&b["unit"], &mut w);
        for n in b["needs"].as_array().into_iter().flatten() {
            unit(n, &mut w);
        }
        let port = b["port"].as_u64().unwrap_or(0) as u16;
        if b["check"]["banner"].is_string() {
            w.banners.push(port);
        } else if let Some(h) = b["check"]["http"].as_object() {
            let headers = h
                .get("headers")
                .and_then(|x| x.as_object())
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect()
                })
                .unwrap_or_default();
            w.http.push((
                port,
                h["method"].as_str().unwrap_or("GET").to_string(),
                h["path"].as_str().unwrap_or("/").to_string(),
                headers,
            ));
        }
    }
    w
}

/// The reference really does the work: its exec call's answer (execd's JSON lines) carries
/// every unit's state, every banner and one status line per request, all as pvediag would see them.
fn check_same_work(lab: &Lab, vmid: u32, token: &str, inner: &str, back: &BackWork) {
    let body = serde_json::json!({ "command": inner, "timeout_ms": 10000 }).to_string();
    let out = Command::new("curl")
        .args(["-sS", "--connect-to"])
        .arg(format!("::127.0.0.1:{}", lab.edge_addr.port()))
        .arg("--cacert")
        .arg(&lab.ca_cert_path)
        .arg("-H")
        .arg(format!("authorization: Bearer {token}"))
        .args(["-H", "content-type: application/json", "--data-binary"])
        .arg(&body)
        .arg(format!("https://exec-{vmid}.{}/exec", lab.domain))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let lines = |needle: &str| text.matches(needle).count();
    assert_eq!(lines("ActiveState="), back.units.len(), "units: {text}");
    assert!(lines("RFB 003.") >= back.banners.len(), "banners: {text}");
    assert!(
        !text.contains("\"000"),
        "a request of the reference failed: {text}"
    );
}

/// The same work as pvediag, by hand: ONE `curl --parallel` config with every public GET of every
/// sandbox and one exec POST per sandbox, whose command runs ONE `curl --parallel` over the
/// container's ports (every catalog service, its probe's method, path and headers), bodies to
/// /dev/null. Returns the config and the number of requests through the edge per sandbox.
fn same_work_config(lab: &Lab, catalog: &Catalog, vmids: &[u32], token: &str) -> (String, usize) {
    let back = back_work();
    // The units' state and the banners, in the background while curl runs (as pvediag does).
    let mut inner = String::new();
    if !back.units.is_empty() {
        inner.push_str(&format!(
            "systemctl show --no-pager -p Id,LoadState,ActiveState,SubState,NRestarts,ExecMainStatus,ExecMainExitTimestamp -- {} 2>&1 & ",
            back.units.iter().map(|u| shell_quote(u)).collect::<Vec<_>>().join(" ")
        ));
    }
    for port in &back.banners {
        inner.push_str(&format!(
            "(exec 3<>/dev/tcp/127.0.0.1/{port} && IFS= read -r -t 10 -n 64 l <&3; echo \"$l\") 2>/dev/null & "
        ));
    }
    inner.push_str("curl --parallel --parallel-immediate");
    let requests = catalog
        .services
        .iter()
        .map(|svc| {
            (
                svc.port,
                &svc.probe.method,
                &svc.probe.path,
                &svc.probe.headers,
            )
        })
        .chain(back.http.iter().map(|(port, m, p, h)| (*port, m, p, h)));
    for (i, (port, method, path, headers)) in requests.enumerate() {
        if i > 0 {
            inner.push_str(" --next");
        }
        inner.push_str(&format!(
            " -sS -o /dev/null -w '%{{http_code}}\\n' -X {}",
            shell_quote(method)
        ));
        for (k, v) in headers {
            inner.push_str(&format!(" -H {}", shell_quote(&format!("{k}: {v}"))));
        }
        inner.push_str(&format!(
            " {}",
            shell_quote(&format!("http://127.0.0.1:{port}{path}"))
        ));
    }
    inner.push_str("; wait");
    check_same_work(lab, vmids[0], token, &inner, &back);
    let body = serde_json::json!({ "command": inner, "timeout_ms": 10000 }).to_string();
    // A curl config string: backslash and double quote escaped.
    let quoted = |s: &str| format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""));
    // Every transfer is its own group (`next`): per-transfer options do not carry over.
    let group = |url: &str, extra: &str| {
        format!(
            "url = {}\noutput = \"/dev/null\"\nsilent\nshow-error\nfail\nconnect-to = \"::127.0.0.1:{}\"\ncacert = {}\n{extra}next\n",
            quoted(url),
            lab.edge_addr.port(),
            quoted(&lab.ca_cert_path.display().to_string()),
        )
    };
    let mut s = String::new();
    let mut per_sandbox = 0;
    for &vmid in vmids {
        let mut n = 0;
        for svc in catalog.services.iter().filter(|s| s.routed) {
            let headers: String = svc
                .probe
                .headers
                .iter()
                .map(|(k, v)| format!("header = {}\n", quoted(&format!("{k}: {v}"))))
                .collect();
            s.push_str(&group(
                &format!(
                    "https://{}-{vmid}.{}{}",
                    svc.name, lab.domain, svc.probe.path
                ),
                &headers,
            ));
            n += 1;
        }
        s.push_str(&group(
            &format!("https://exec-{vmid}.{}/exec", lab.domain),
            &format!(
                "header = {}\nheader = \"content-type: application/json\"\ndata-binary = {}\n",
                quoted(&format!("authorization: Bearer {token}")),
                quoted(&body)
            ),
        ));
        per_sandbox = n + 1;
    }
    // No empty group after the last transfer.
    if let Some(t) = s.strip_suffix("next\n") {
        s.truncate(t.len());
    }
    (s, per_sandbox)
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken from the command line.
    let delay: u64 = env_or("PVEDIAG_BENCH_DELAY_MS", 50);
    let runs: usize = env_or::<usize>("PVEDIAG_BENCH_RUNS", 5).clamp(1, 50);
    let sizes: Vec<usize> = std::env::var("PVEDIAG_BENCH_SIZES")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n: &usize| (1..=1000).contains(&n))
        .collect();
    let seq_full = std::env::var_os("PVEDIAG_BENCH_SEQ_FULL").is_some();
    let max_n = sizes.iter().copied().max().unwrap_or(1);
    let delays = Delays::uniform(delay);
    let catalog = Catalog::embedded();
    let (floor, floor_how) = floor_ms(&catalog, &delays);
    let m = machine();
    let timed = time_available();

    println!("pvediag fleet benchmark");
    println!(
        "machine: {} CPU(s), {}, {} MiB RAM, load average at start {}",
        m.nproc, m.cpu, m.mem_mb, m.load
    );
    println!(
        "lab: {max_n} containers x {} services ({} routed), {delay} ms injected per hop (edge, host proxy, execd, each service), in this process on 127.0.0.1",
        catalog.services.len(),
        catalog.services.iter().filter(|s| s.routed).count()
    );
    println!(
        "pvediag: {} (default --concurrency {})",
        pvediag_bin(),
        pvediag::cli::CONCURRENCY
    );
    println!("floor: {floor} ms = {floor_how}");
    println!("each figure: median of {runs} run(s), wall time measured around the child process");
    if !timed {
        println!("(no /usr/bin/time: no RSS / CPU figures; `apt-get install -y time`)");
    }

    // The lab holds ~9 sockets per container, plus ~5 descriptors per request in flight.
    let nofile = std::fs::read_to_string("/proc/self/limits")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = nofile {
        if n < (max_n as u64) * 9 + 2048 {
            println!(
                "warning: ulimit -n is {n}; a lab of {max_n} containers wants {} or more (ulimit -n 20000)",
                max_n * 9 + 2048
            );
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let token = lab::SCENARIO_TOKEN.to_string();
    let t0 = Instant::now();
    let lab = rt
        .block_on(Lab::start(lab::fleet(
            max_n,
            FIRST_VMID,
            Some(token.clone()),
            delays,
        )))
        .expect("lab starts");
    println!(
        "lab started in {:.0} ms",
        t0.elapsed().as_secs_f64() * 1000.0
    );
    let dir: PathBuf = lab.dir.join("bench");
    std::fs::create_dir_all(&dir).unwrap();
    let token_file = dir.join("token");
    std::fs::write(&token_file, &token).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    // Warm-up: page cache, the lab's first bash.
    {
        let vmids = [FIRST_VMID];
        let argv = pvediag_argv(&lab, &vmids, &token_file, &dir);
        measure(&argv, false, &dir, &[0]);
    }

    struct Row {
        n: usize,
        pvediag: Sample,
        posts_per_vmid: f64,
        curl: Sample,
        curl_urls: usize,
        curl_par: usize,
        seq: f64,
        seq_extrapolated: bool,
        lab_cpu: f64,
        container_cpu: f64,
        /// The same work by hand: one curl --parallel (wall), its --parallel-max.
        by_hand: Sample,
        by_hand_par: usize,
        /// Requests through the edge per sandbox, and per run (names without a VMID: the
        /// origin check): pvediag, by hand.
        req: (f64, f64),
        req_hand: (f64, f64),
        /// Processes (and programs) started in the container per sandbox: pvediag, by hand.
        procs: Option<(f64, f64)>,
        procs_hand: Option<(f64, f64)>,
        /// CPU ms per run of the same work by hand: curl's own, the lab's servers, containers.
        hand_cpu: (f64, f64, f64),
    }
    // The catalogs of the "back ends and units" row: the seed catalog with and without them.
    let catalogs = SectionCatalogs::write(&dir);
    let mut sections: Vec<Option<SectionRow>> = Vec::new();
    let mut rows = Vec::new();
    let mut seq_one: Option<f64> = None;
    for &n in &sizes {
        let vmids: Vec<u32> = (0..n as u32).map(|i| FIRST_VMID + i).collect();

        // pvediag
        let argv = pvediag_argv(&lab, &vmids, &token_file, &dir);
        let before = lab.exec_posts_total();
        let edge0 = lab.edge_requests();
        let (lab0, kids0) = self_cpu_ms();
        let samples: Vec<Sample> = (0..runs)
            .map(|_| {
                let s = measure(&argv, timed, &dir, &[0]);
                check_report(&dir.join("report.json"), n);
                s
            })
            .collect();
        let posts = lab.exec_posts_total() - before;
        let req = edge_split(&edge0, &lab.edge_requests(), &vmids, runs);
        let (lab1, kids1) = self_cpu_ms();
        let own: f64 = samples.iter().filter_map(|s| s.cpu_ms).sum();
        let lab_cpu = (lab1 - lab0) / runs as f64;
        let container_cpu = ((kids1 - kids0) - own).max(0.0) / runs as f64;
        let pvediag = median_sample(&samples);

        // The same work by hand: one curl --parallel, every public GET and one exec POST per
        // sandbox, as many requests in flight as pvediag's default concurrency allows.
        let (cfg, per_sandbox) = same_work_config(&lab, &catalog, &vmids, &token);
        let hand_path = dir.join(format!("hand-{n}.cfg"));
        std::fs::write(&hand_path, cfg).unwrap();
        let by_hand_par = (per_sandbox * pvediag::cli::CONCURRENCY)
            .min(per_sandbox * n)
            .min(300);
        let hand_argv: Vec<String> = vec![
            "curl".into(),
            "--parallel".into(),
            "--parallel-immediate".into(),
            "--parallel-max".into(),
            by_hand_par.to_string(),
            "-K".into(),
            hand_path.display().to_string(),
        ];
        let edge0 = lab.edge_requests();
        let (hlab0, hkids0) = self_cpu_ms();
        let hand_samples: Vec<Sample> = (0..runs)
            .map(|_| measure(&hand_argv, timed, &dir, &[0]))
            .collect();
        let (hlab1, hkids1) = self_cpu_ms();
        let hand_own: f64 = hand_samples.iter().filter_map(|s| s.cpu_ms).sum();
        let hand_cpu = (
            hand_own / runs as f64,
            (hlab1 - hlab0) / runs as f64,
            ((hkids1 - hkids0) - hand_own).max(0.0) / runs as f64,
        );
        let by_hand = median_sample(&hand_samples);
        let req_hand = edge_split(&edge0, &lab.edge_requests(), &vmids, runs);

        // Processes in the containers: one more run of each with the lab's process accounting
        // on (strace: slower, so not timed).
        let (procs, procs_hand) = if lab.set_process_accounting(true) {
            let per = |argv: &[String], ok: &[i32]| {
                let c0 = lab.exec_processes_total();
                measure(argv, false, &dir, ok);
                let c = lab.exec_processes_total() - c0;
                (c.processes as f64 / n as f64, c.programs as f64 / n as f64)
            };
            let p = per(&argv, &[0]);
            let h = per(&hand_argv, &[0]);
            lab.set_process_accounting(false);
            (Some(p), Some(h))
        } else {
            (None, None)
        };

        // curl --parallel, external half only, same number of transfers in flight as pvediag's
        // external probes (capped at curl's maximum, 300).
        let (cfg, urls) = curl_config(&lab, &catalog, &vmids);
        let cfg_path = dir.join(format!("curl-{n}.cfg"));
        std::fs::write(&cfg_path, cfg).unwrap();
        let par = urls.min(300);
        let curl_argv: Vec<String> = [
            "curl",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &par.to_string(),
            "-sS",
            "--fail",
            "--connect-to",
            &format!("::127.0.0.1:{}", lab.edge_addr.port()),
            "--cacert",
            &lab.ca_cert_path.display().to_string(),
            "-K",
            &cfg_path.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let curl = median_sample(
            &(0..runs)
                .map(|_| measure(&curl_argv, false, &dir, &[0]))
                .collect::<Vec<_>>(),
        );

        // The manual procedure: measured for 1 VMID (and 10 with PVEDIAG_BENCH_SEQ_FULL),
        // extrapolated linearly otherwise (it is strictly sequential).
        let (seq, seq_extrapolated) = match seq_one {
            Some(per) if n != 1 && !(seq_full && n <= 10) => (per * n as f64, true),
            _ => {
                let script = sequential_script(&lab, &catalog, &vmids, &token);
                let path = dir.join(format!("seq-{n}.sh"));
                std::fs::write(&path, script).unwrap();
                let argv = vec!["bash".to_string(), path.display().to_string()];
                let r = if n == 1 { runs.min(3) } else { 1 };
                let t = median(
                    (0..r)
                        .map(|_| measure(&argv, false, &dir, &[0]).wall_ms)
                        .collect(),
                );
                if seq_one.is_none() {
                    seq_one = Some(t / n as f64);
                }
                (t, false)
            }
        };
        sections.push(backend_section_row(
            &lab,
            &vmids,
            &token_file,
            &dir,
            runs,
            timed,
            &catalogs,
        ));
        rows.push(Row {
            n,
            pvediag,
            posts_per_vmid: posts as f64 / (runs * n) as f64,
            curl,
            curl_urls: urls,
            curl_par: par,
            seq,
            seq_extrapolated,
            lab_cpu,
            container_cpu,
            by_hand,
            by_hand_par,
            req,
            req_hand,
            procs,
            procs_hand,
            hand_cpu,
        });
    }

    // pvediag's own HTTP engine against curl's: the external half only, at the largest size, with
    // the exec service left out (no exec round trip: nothing runs in the containers).
    let ext_only = {
        let n = max_n;
        let vmids: Vec<u32> = (0..n as u32).map(|i| FIRST_VMID + i).collect();
        let names: Vec<&str> = catalog
            .services
            .iter()
            .filter(|s| s.routed && s.name != "exec")
            .map(|s| s.name.as_str())
            .collect();
        let list = names.join(",");
        // `--services` only selects what is shown (every service is still probed): a catalog of
        // just these services is what leaves the exec round trip out.
        let checks = dir.join("checks-ext");
        std::fs::create_dir_all(&checks).unwrap();
        for n in &names {
            let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("checks/{n}.json"));
            std::fs::copy(from, checks.join(format!("{n}.json"))).unwrap();
        }
        let checks_arg = checks.display().to_string();
        let argv = pvediag_argv_with(&lab, &vmids, &token_file, &dir, &["--checks", &checks_arg]);
        // Exit 3: nothing inside could be checked (inconclusive), by design of this row.
        let p = median_sample(
            &(0..runs)
                .map(|_| measure(&argv, timed, &dir, &[0, 3]))
                .collect::<Vec<_>>(),
        );
        let (cfg, urls) = curl_config_for(&lab, &catalog, &vmids, &|s| s.name != "exec");
        let cfg_path = dir.join("curl-ext.cfg");
        std::fs::write(&cfg_path, cfg).unwrap();
        let argv: Vec<String> = [
            "curl",
            "--parallel",
            "--parallel-immediate",
            "--parallel-max",
            &urls.min(300).to_string(),
            "-sS",
            "--fail",
            "--connect-to",
            &format!("::127.0.0.1:{}", lab.edge_addr.port()),
            "--cacert",
            &lab.ca_cert_path.display().to_string(),
            "-K",
            &cfg_path.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let c = median_sample(
            &(0..runs)
                .map(|_| measure(&argv, false, &dir, &[0]))
                .collect::<Vec<_>>(),
        );
        (n, list, urls, p, c)
    };

    // Without --catalog (and without a Caddyfile or the admin API), each target's own probes settle
    // its generation (generation.rs; the URL forms are asked only when they leave it open):
    // measured at the largest size.
    let detection = {
        let n = max_n;
        let vmids: Vec<u32> = (0..n as u32).map(|i| FIRST_VMID + i).collect();
        let argv = pvediag_argv_with(&lab, &vmids, &token_file, &dir, &[]);
        let edge0 = lab.edge_requests();
        let p = median_sample(
            &(0..runs)
                .map(|_| {
                    let s = measure(&argv, timed, &dir, &[0]);
                    check_report(&dir.join("report.json"), n);
                    s
                })
                .collect::<Vec<_>>(),
        );
        let req = edge_split(&edge0, &lab.edge_requests(), &vmids, runs);
        (n, p, req)
    };

    println!();
    println!(
        "| VMIDs | pvediag ms | floor ms | curl --parallel ms (URLs, max) | sequential ms | pvediag/floor | pvediag/curl | sequential/pvediag | pvediag peak RSS MiB | pvediag CPU ms | lab CPU ms: servers + container processes | exec POSTs/VMID |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in &rows {
        let p = r.pvediag.wall_ms;
        println!(
            "| {} | {:.0} | {} | {:.0} ({}, {}) | {:.0}{} | {:.2} | {:.2} | {:.1} | {} | {} | {:.0} + {:.0} | {:.2} |",
            r.n,
            p,
            floor,
            r.curl.wall_ms,
            r.curl_urls,
            r.curl_par,
            r.seq,
            if r.seq_extrapolated { " (extrapolated)" } else { "" },
            p / floor as f64,
            p / r.curl.wall_ms,
            r.seq / p,
            r.pvediag
                .rss_kb
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
            r.pvediag
                .cpu_ms
                .map(|c| if c < 10.0 { "<10".to_string() } else { format!("{c:.0}") })
                .unwrap_or_else(|| "-".into()),
            r.lab_cpu,
            r.container_cpu,
            r.posts_per_vmid,
        );
    }
    println!();
    println!("the same work by hand: one curl --parallel with every public GET and one exec POST per sandbox, each POST running one systemctl show for the catalog's units and a read of each banner back end while one curl --parallel goes over the container's ports and HTTP back ends");
    println!();
    println!(
        "| VMIDs | pvediag ms | by hand ms (max in flight) | pvediag/by hand | requests per sandbox (+ per run): pvediag, by hand | container processes (programs) per sandbox: pvediag, by hand | CPU ms per run, client + lab servers + containers: pvediag, by hand | pvediag peak RSS MiB |"
    );
    println!("|---:|---:|---:|---:|---|---|---|---:|");
    for r in &rows {
        let procs = |p: Option<(f64, f64)>| {
            p.map(|(a, b)| format!("{a:.1} ({b:.1})"))
                .unwrap_or_else(|| "- (no strace)".into())
        };
        println!(
            "| {} | {:.0} | {:.0} ({}) | {:.2} | {:.2} (+{:.2}), {:.2} (+{:.2}) | {}, {} | {} + {:.0} + {:.0}, {:.0} + {:.0} + {:.0} | {} |",
            r.n,
            r.pvediag.wall_ms,
            r.by_hand.wall_ms,
            r.by_hand_par,
            r.pvediag.wall_ms / r.by_hand.wall_ms,
            r.req.0,
            r.req.1,
            r.req_hand.0,
            r.req_hand.1,
            procs(r.procs),
            procs(r.procs_hand),
            r.pvediag
                .cpu_ms
                .map(|c| format!("{c:.0}"))
                .unwrap_or_else(|| "-".into()),
            r.lab_cpu,
            r.container_cpu,
            r.hand_cpu.0,
            r.hand_cpu.1,
            r.hand_cpu.2,
            r.pvediag
                .rss_kb
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
        );
    }
    println!(
        "targets: pvediag <= 1.15 x by hand at every size; peak RSS < 30 MiB at 100; requests per sandbox = routed services ({}) [+ 1 origin check per run]",
        catalog.services.iter().filter(|s| s.routed).count()
    );
    println!();
    println!(
        "targets: 1 VMID <= 1.15 x floor; {max_n} VMIDs <= 1.3 x curl --parallel; peak RSS < 30 MiB; 1 exec POST per VMID"
    );
    {
        let (n, list, urls, p, c) = &ext_only;
        println!(
            "external half only, {n} VMIDs, --checks with {list} ({urls} URLs + 1 origin check): pvediag {:.0} ms (RSS {}, CPU {}), curl --parallel {:.0} ms, pvediag/curl {:.2}",
            p.wall_ms,
            p.rss_kb
                .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "-".into()),
            p.cpu_ms
                .map(|c| format!("{c:.0} ms"))
                .unwrap_or_else(|| "-".into()),
            c.wall_ms,
            p.wall_ms / c.wall_ms
        );
    }
    {
        let (n, p, req) = &detection;
        println!(
            "without --catalog (the generation settled by the probes), {n} VMIDs: pvediag {:.0} ms, requests per sandbox {:.2} (+{:.2} per run)",
            p.wall_ms, req.0, req.1
        );
    }
    print_sections(&catalogs, &sections);
    println!("load average at end: {}", machine().load);
    rt.block_on(lab.shutdown());
}

/// Requests that entered the edge between two snapshots, per sandbox (hosts naming one of `vmids`)
/// and per run (every other host: the origin check), averaged over `runs`.
fn edge_split(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
    vmids: &[u32],
    runs: usize,
) -> (f64, f64) {
    let mut sandbox = 0u64;
    let mut other = 0u64;
    for (host, &c) in after {
        let d = c - before.get(host).copied().unwrap_or(0);
        let names_vmid = vmids.iter().any(|v| {
            let v = v.to_string();
            host.split(['.', '-']).any(|part| part == v)
        });
        if names_vmid {
            sandbox += d;
        } else {
            other += d;
        }
    }
    (
        sandbox as f64 / (runs * vmids.len()) as f64,
        other as f64 / runs as f64,
    )
}

/// pvediag with the lab's layout named (`--catalog seed`): the same work as by hand, without the
/// generation detection (measured on its own: `detection` below).
/// (`PVEDIAG_BENCH_BIN`, an older build, gets no `--catalog`: builds before the 2026 generation had
/// neither the option nor the detection.)
fn pvediag_argv(lab: &Lab, vmids: &[u32], token_file: &Path, dir: &Path) -> Vec<String> {
    let named: &[&str] = if std::env::var_os("PVEDIAG_BENCH_BIN").is_some() {
        &[]
    } else {
        &["--catalog", "seed"]
    };
    pvediag_argv_with(lab, vmids, token_file, dir, named)
}

fn pvediag_argv_with(
    lab: &Lab,
    vmids: &[u32],
    token_file: &Path,
    dir: &Path,
    extra: &[&str],
) -> Vec<String> {
    let mut v = vec![pvediag_bin()];
    v.extend(extra.iter().map(|s| s.to_string()));
    v.extend(vmids.iter().map(|n| n.to_string()));
    v.extend(
        [
            "--domain",
            &lab.domain,
            "--connect-to",
            &lab.edge_addr.to_string(),
            "--cacert",
            &lab.ca_cert_path.display().to_string(),
            "--exec-token-file",
            &token_file.display().to_string(),
            "--format",
            "json",
            "-q",
            "-o",
            &dir.join("report.json").display().to_string(),
            // The state is written as in a real run, into the benchmark's own directory.
            "--state-dir",
            &dir.join("state").display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    v
}

/// The report must say every target is healthy (a fast wrong answer is not a result).
fn check_report(path: &Path, n: usize) {
    let text = std::fs::read_to_string(path).expect("report written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("report is JSON");
    let targets = v["targets"].as_array().expect("targets");
    assert_eq!(targets.len(), n, "one report entry per VMID");
    for t in targets {
        assert_eq!(
            t["status"], "healthy",
            "VMID {} is not healthy: {t}",
            t["vmid"]
        );
    }
}

/// The two `--checks` directories of the "back ends and units" row (issue 14): the seed catalog
/// (`checks/*.json`) as it is, and the same files without any `backend` or `unit`.
struct SectionCatalogs {
    with: PathBuf,
    without: PathBuf,
    /// Back ends and units (the services' own and their back ends' with what those need) removed.
    backends: usize,
    units: usize,
    /// Bytes of the internal command each catalog makes (`build_command`, every service).
    bytes_with: usize,
    bytes_without: usize,
}

impl SectionCatalogs {
    fn write(dir: &Path) -> SectionCatalogs {
        let with = dir.join("checks-with-backends");
        let without = dir.join("checks-without-backends");
        std::fs::create_dir_all(&with).unwrap();
        std::fs::create_dir_all(&without).unwrap();
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("checks");
        let mut files_with = Vec::new();
        let mut files_without = Vec::new();
        let mut unit_names = std::collections::BTreeSet::new();
        let mut names: Vec<PathBuf> = std::fs::read_dir(&src)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
            .collect();
        names.sort();
        for p in names {
            let file = p.file_name().unwrap().to_string_lossy().to_string();
            let text = std::fs::read_to_string(&p).unwrap();
            let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let o = v.as_object_mut().expect("a catalog entry is an object");
            let b = o.get("backend");
            let named = [o.get("unit"), b.and_then(|b| b.get("unit"))]
                .into_iter()
                .flatten()
                .chain(
                    b.and_then(|b| b.get("needs")?.as_array())
                        .into_iter()
                        .flatten(),
                );
            for u in named.filter_map(|u| u.as_str()).filter(|u| !u.is_empty()) {
                unit_names.insert(u.to_string());
            }
            o.remove("backend");
            o.remove("unit");
            let stripped = serde_json::to_string_pretty(&v).unwrap();
            std::fs::write(with.join(&file), &text).unwrap();
            std::fs::write(without.join(&file), &stripped).unwrap();
            files_with.push((file.clone(), text));
            files_without.push((file, stripped));
        }
        let cat_with = Catalog::from_sources("with", &files_with).expect("catalog");
        let cat_without = Catalog::from_sources("without", &files_without).expect("catalog");
        // Same services, same probes: only the back ends and units differ.
        assert_eq!(
            Catalog::embedded()
                .services
                .iter()
                .map(|s| (&s.name, s.port))
                .collect::<Vec<_>>(),
            cat_with
                .services
                .iter()
                .map(|s| (&s.name, s.port))
                .collect::<Vec<_>>(),
            "checks/*.json is the built-in seed catalog"
        );
        let backends = files_with
            .iter()
            .filter(|(_, t)| t.contains("\"backend\""))
            .count();
        let units = unit_names.len();
        let command = |c: &Catalog| {
            let refs: Vec<&Service> = c.services.iter().collect();
            pvediag::probe::internal::build_command(
                &refs,
                "0123456789abcdef",
                std::time::Duration::from_secs(10),
            )
        };
        let cmd_with = command(&cat_with);
        let cmd_without = command(&cat_without);
        // Without back ends and units the section starts nothing: no systemctl, no banner reader.
        assert!(cmd_with.contains("systemctl show") && cmd_with.contains("bfd_"));
        assert!(
            !cmd_without.contains("systemctl") && !cmd_without.contains("bfd_"),
            "a catalog without back ends and units still starts the section's processes"
        );
        SectionCatalogs {
            with,
            without,
            backends,
            units,
            bytes_with: cmd_with.len(),
            bytes_without: cmd_without.len(),
        }
    }
}

/// One size of the "back ends and units" row: wall times of each run (runs alternate, so run `i`
/// of each was measured next to the other's), container CPU per run, exec POSTs per VMID, and
/// processes (programs) per exec call under the lab's accounting.
struct SectionRow {
    n: usize,
    with: Vec<f64>,
    without: Vec<f64>,
    cpu_with: Vec<f64>,
    cpu_without: Vec<f64>,
    posts: (f64, f64),
    procs: Option<((f64, f64), (f64, f64))>,
}

fn backend_section_row(
    lab: &Lab,
    vmids: &[u32],
    token_file: &Path,
    dir: &Path,
    runs: usize,
    timed: bool,
    catalogs: &SectionCatalogs,
) -> Option<SectionRow> {
    // An older binary (PVEDIAG_BENCH_BIN) may not read the `backend` field at all.
    if std::env::var_os("PVEDIAG_BENCH_BIN").is_some() {
        return None;
    }
    let n = vmids.len();
    let w = catalogs.with.display().to_string();
    let wo = catalogs.without.display().to_string();
    let argv_with = pvediag_argv_with(lab, vmids, token_file, dir, &["--checks", &w]);
    let argv_without = pvediag_argv_with(lab, vmids, token_file, dir, &["--checks", &wo]);
    // One run: wall time, the containers' CPU (children of this process, but pvediag's own), and
    // exec POSTs.
    let one = |argv: &[String]| {
        let posts0 = lab.exec_posts_total();
        let (_, kids0) = self_cpu_ms();
        let s = measure(argv, timed, dir, &[0]);
        let (_, kids1) = self_cpu_ms();
        check_report(&dir.join("report.json"), n);
        let container = ((kids1 - kids0) - s.cpu_ms.unwrap_or(0.0)).max(0.0);
        (s.wall_ms, container, lab.exec_posts_total() - posts0)
    };
    let mut r = SectionRow {
        n,
        with: Vec::new(),
        without: Vec::new(),
        cpu_with: Vec::new(),
        cpu_without: Vec::new(),
        posts: (0.0, 0.0),
        procs: None,
    };
    let (mut posts_with, mut posts_without) = (0u64, 0u64);
    for i in 0..runs {
        // Alternate which goes first, so a drift in the machine's load hits both alike.
        let order: [bool; 2] = if i % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        for with in order {
            if with {
                let (t, c, p) = one(&argv_with);
                r.with.push(t);
                r.cpu_with.push(c);
                posts_with += p;
            } else {
                let (t, c, p) = one(&argv_without);
                r.without.push(t);
                r.cpu_without.push(c);
                posts_without += p;
            }
        }
    }
    r.posts = (
        posts_with as f64 / (runs * n) as f64,
        posts_without as f64 / (runs * n) as f64,
    );
    if lab.set_process_accounting(true) {
        let per_call = |argv: &[String]| {
            let c0 = lab.exec_processes_total();
            measure(argv, false, dir, &[0]);
            let c = lab.exec_processes_total() - c0;
            let calls = c.calls.max(1) as f64;
            (c.processes as f64 / calls, c.programs as f64 / calls)
        };
        let a = per_call(&argv_with);
        let b = per_call(&argv_without);
        lab.set_process_accounting(false);
        r.procs = Some((a, b));
    }
    Some(r)
}

fn print_sections(catalogs: &SectionCatalogs, rows: &[Option<SectionRow>]) {
    println!();
    println!(
        "back ends and units on the healthy path (issue 14): the same pvediag on the same lab, --checks with the seed catalog as it is and without its {} back ends and {} units (internal command {} vs {} bytes); the runs alternate",
        catalogs.backends, catalogs.units, catalogs.bytes_with, catalogs.bytes_without
    );
    if rows.iter().all(Option::is_none) {
        println!("(not measured with PVEDIAG_BENCH_BIN: an older build may not read `backend`)");
        return;
    }
    let spread = |v: &[f64]| {
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        format!("{lo:.0}-{hi:.0}")
    };
    for r in rows.iter().flatten() {
        let w = median(r.with.clone());
        let wo = median(r.without.clone());
        let d = w - wo;
        let paired = median(r.with.iter().zip(&r.without).map(|(a, b)| a - b).collect());
        let procs = r
            .procs
            .map(|((pa, ga), (pb, gb))| format!("{pa:.1} vs {pb:.1} (programs {ga:.1} vs {gb:.1})"))
            .unwrap_or_else(|| "- (no strace)".into());
        println!(
            "back ends and units, {} VMIDs: with {w:.0} ms, without {wo:.0} ms, {d:+.0} ms ({:+.1} %), processes per exec call {procs}; spread (min-max) with {} ms, without {} ms; median of paired differences {paired:+.0} ms; container CPU per run {:.0} vs {:.0} ms; exec POSTs per VMID {:.2} vs {:.2}",
            r.n,
            d / wo * 100.0,
            spread(&r.with),
            spread(&r.without),
            median(r.cpu_with.clone()),
            median(r.cpu_without.clone()),
            r.posts.0,
            r.posts.1,
        );
    }
}
