//! A fleet: `--all` over a lab with several containers in every format (JUnit checked by an XML
//! parser, Prometheus by a strict exposition parser), `--wait`, `--deadline`, and `pvediag serve`.

use std::io::BufRead;
use std::time::{Duration, Instant};

use crate::common::fleet_lab::*;

fn run_all(lab: &pvediag::lab::Lab, pve: &str, format: &str) -> (i32, String) {
    let o = pvediag_pve(lab, pve)
        .args(["--all", "--format", format, "--concurrency", "2"])
        .output()
        .unwrap();
    let out = String::from_utf8(o.stdout).unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_no_secret(&out);
    assert_no_secret(&err);
    assert!(!err.contains("no exec token"), "{err}");
    (o.status.code().unwrap(), out)
}

#[test]
fn all_in_every_format() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Normal);

    // table
    let (code, out) = run_all(&lab, &pve, "table");
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("VMID 202") && out.contains("VMID 203"),
        "{out}"
    );
    assert!(out.contains("✗ xterm — broken (service)"), "{out}");
    assert!(out.contains("204 cmux-204: not running (stopped)"), "{out}");
    assert!(out.contains("9000 cmux-template: template"), "{out}");
    assert!(!out.contains("postgres"), "{out}");

    // json
    let (code, out) = run_all(&lab, &pve, "json");
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["targets"][0]["status"], "healthy", "{out}");
    assert_eq!(v["targets"][1]["status"], "broken");
    assert_eq!(v["skipped_targets"].as_array().unwrap().len(), 2);

    // junit, through a real XML parser
    let (code, out) = run_all(&lab, &pve, "junit");
    assert_eq!(code, 1);
    let doc = roxmltree::Document::parse(&out).expect("well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "testsuites");
    let suites: Vec<_> = root
        .children()
        .filter(|n| n.has_tag_name("testsuite"))
        .collect();
    let names: Vec<_> = suites
        .iter()
        .map(|s| s.attribute("name").unwrap())
        .collect();
    assert_eq!(names, ["vmid202", "vmid203", "vmid204", "vmid9000"]);
    assert_eq!(suites[0].attribute("failures"), Some("0"));
    assert_eq!(suites[1].attribute("failures"), Some("1"));
    let xterm = suites[1]
        .children()
        .find(|c| c.has_tag_name("testcase") && c.attribute("name") == Some("xterm"))
        .unwrap();
    assert_eq!(xterm.attribute("classname"), Some("pvediag.vmid203"));
    let failure = xterm
        .children()
        .find(|c| c.has_tag_name("failure"))
        .unwrap();
    assert_eq!(failure.attribute("type"), Some("service"));
    assert!(failure
        .attribute("message")
        .unwrap()
        .starts_with("broken (service): "));
    assert!(failure.text().unwrap().contains("next: "), "{out}");
    assert!(suites[2].descendants().any(|n| n.has_tag_name("skipped")));
    assert_eq!(root.attribute("failures"), Some("1"));

    // prometheus, through a strict parser
    let (code, out) = run_all(&lab, &pve, "prometheus");
    assert_eq!(code, 1);
    let s = parse_prometheus(&out).unwrap_or_else(|e| panic!("{e}\n{out}"));
    let v = find(
        &s,
        "pvediag_verdict",
        &[("vmid", "203"), ("service", "xterm")],
    );
    assert_eq!(v.len(), 1, "one series per service");
    assert_eq!(v[0].labels["status"], "broken");
    assert_eq!(v[0].labels["layer"], "service");
    let v = find(
        &s,
        "pvediag_verdict",
        &[("vmid", "202"), ("service", "xterm")],
    );
    assert_eq!(v[0].labels["status"], "healthy");
    let ok = find(
        &s,
        "pvediag_probe_success",
        &[
            ("vmid", "203"),
            ("service", "xterm"),
            ("vantage", "internal"),
        ],
    );
    assert_eq!(ok[0].value, 0.0);
    let ok = find(
        &s,
        "pvediag_probe_success",
        &[
            ("vmid", "202"),
            ("service", "xterm"),
            ("vantage", "external"),
        ],
    );
    assert_eq!(ok[0].value, 1.0);
    let code = find(
        &s,
        "pvediag_probe_http_status_code",
        &[
            ("vmid", "202"),
            ("service", "xterm"),
            ("vantage", "external"),
        ],
    );
    assert_eq!(code[0].value, 200.0);
    assert_eq!(find(&s, "pvediag_targets", &[])[0].value, 2.0);
    assert_eq!(find(&s, "pvediag_exit_code", &[])[0].value, 1.0);
    assert_eq!(find(&s, "pvediag_run_duration_seconds", &[]).len(), 1);
}

#[test]
fn prometheus_to_a_file_is_written_atomically() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, pvediag::lab::LabConfig::default());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pvediag.prom");
    let o = pvediag()
        .args(lab_args(&lab))
        .args(["202", "--format", "prometheus", "-o"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
    let text = std::fs::read_to_string(&file).unwrap();
    parse_prometheus(&text).unwrap();
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 1, "no temporary file left behind");
}

#[test]
fn wait_until_a_recovering_service_is_healthy() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, recovering_lab_config(Duration::from_secs(4)));
    // Right after the start, xterm refuses: broken.
    let o = pvediag().args(lab_args(&lab)).arg("202").output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
    let start = Instant::now();
    let o = pvediag()
        .args(lab_args(&lab))
        .args(["202", "--wait", "30s"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert!(start.elapsed() < Duration::from_secs(25));
    // Not a terminal: no progress lines.
    assert!(
        o.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
}

#[test]
fn deadline_bounds_a_run_against_a_silent_edge() {
    // Accepts and never answers.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let start = Instant::now();
    let o = pvediag()
        .args([
            "202",
            "--domain",
            DOMAIN,
            "--color",
            "never",
            "--deadline",
            "2s",
        ])
        .arg("--connect-to")
        .arg(addr.to_string())
        .output()
        .unwrap();
    let took = start.elapsed();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(3), "{out}");
    assert!(took < Duration::from_secs(6), "{took:?}");
    assert!(out.contains("unfinished checks"), "{out}");
    for check in [
        "202/xterm external",
        "202/exec external",
        "202/exec-channel",
    ] {
        assert!(out.contains(check), "{check} not named:\n{out}");
    }
}

/// Caddy's admin API is read before the probes: one that accepts and never answers takes its
/// share of the deadline, not the probes' (the run ends within its deadline, the lab's healthy
/// services are diagnosed, not cut).
#[test]
fn a_silent_caddy_admin_api_leaves_the_probes_their_time() {
    if !crate::common::curl_present() {
        return;
    }
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().flatten() {
            held.push(s);
        }
    });
    let rt = runtime();
    let lab = start_lab(&rt, pvediag::lab::LabConfig::default());
    let start = Instant::now();
    let o = pvediag()
        .args(lab_args(&lab))
        .args([
            "202",
            "--format",
            "json",
            "--timeout",
            "30s",
            "--deadline",
            "6s",
        ])
        .arg("--caddy-admin")
        .arg(format!("http://{addr}"))
        .output()
        .unwrap();
    let took = start.elapsed();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&o.stderr)));
    assert!(took < Duration::from_secs(10), "{took:?}");
    let xterm = v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap()
        .clone();
    assert_eq!(xterm["verdict"]["status"], "healthy", "{xterm:#}");
    assert!(v["caddy"]["error"].is_string(), "{:#}", v["caddy"]);
}

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `pvediag serve` on a free port of 127.0.0.1, pointed at the lab, with `env`: the process (killed
/// when dropped) and its base URL, read from the line it prints once listening.
fn serve(lab: &pvediag::lab::Lab, env: &[(&str, &str)]) -> (Child, String) {
    let mut child = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pvediag"))
            .env_clear()
            .envs(env.iter().copied())
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(lab_reach_args(lab))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stderr.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let base = line
        .trim()
        .strip_prefix("pvediag serve: listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    (child, base)
}

#[test]
fn serve_answers_probes_health_and_its_own_metrics() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, pvediag::lab::LabConfig::default());
    let (child, base) = serve(&lab, &[]);
    assert!(base.starts_with("http://127.0.0.1:"), "{base}");

    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let get = |path: &str| {
            c.get(format!("{base}{path}"))
                .header("X-Prometheus-Scrape-Timeout-Seconds", "10")
                .send()
        };
        let r = get("/healthz").await.unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.text().await.unwrap(), "ok\n");

        let r = get("/probe?target=202").await.unwrap();
        assert_eq!(r.status(), 200);
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.contains("version=0.0.4"), "{ct}");
        let body = r.text().await.unwrap();
        let s = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let v = find(
            &s,
            "pvediag_verdict",
            &[("vmid", "202"), ("service", "xterm")],
        );
        assert_eq!(v[0].labels["status"], "healthy", "{body}");
        assert_eq!(find(&s, "pvediag_exit_code", &[])[0].value, 0.0);

        assert_eq!(get("/probe?target=abc").await.unwrap().status(), 400);
        assert_eq!(get("/probe").await.unwrap().status(), 400);
        assert_eq!(get("/nope").await.unwrap().status(), 404);

        let body = get("/metrics").await.unwrap().text().await.unwrap();
        let s = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        let ok = find(
            &s,
            "pvediag_exporter_requests_total",
            &[("path", "/probe"), ("code", "200")],
        );
        assert_eq!(ok[0].value, 1.0, "{body}");
        let bad = find(
            &s,
            "pvediag_exporter_requests_total",
            &[("path", "/probe"), ("code", "400")],
        );
        assert_eq!(bad[0].value, 2.0, "{body}");
        assert_eq!(
            find(&s, "pvediag_exporter_probe_duration_seconds_count", &[])[0].value,
            1.0
        );
    });
    drop(child);
}

/// SIGTERM (what systemd and container runtimes send) stops `pvediag serve` gracefully: it says so,
/// stops listening and exits 0, promptly when nothing is in flight.
#[test]
#[cfg(unix)]
fn serve_stops_on_sigterm() {
    let mut child = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pvediag"))
            .env_clear()
            .args(["serve", "--listen", "127.0.0.1:0", "--domain", "lab.test"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = std::io::BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .strip_prefix("pvediag serve: listening on http://")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    assert!(std::net::TcpStream::connect(&addr).is_ok());
    let t = Instant::now();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "serve still running after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    assert!(rest.contains("pvediag serve: stopping"), "{rest}");
    assert!(std::net::TcpStream::connect(&addr).is_err());
}

/// The exporter remembers each target's routing generation from one scrape to the next: on a
/// 2026 host without Caddy's configuration, the first scrape's seed guess is refuted (and costs
/// the seed form's requests), every later scrape's guess is right and sends only its own probes.
#[test]
fn serve_remembers_each_targets_generation_between_scrapes() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(
        &rt,
        pvediag::lab::fleet_2026(1, 202, None, pvediag::lab::Delays::default()),
    );
    let pve = lab.pve_url.clone().unwrap();
    let (child, base) = serve(
        &lab,
        &[
            ("PVE_API_URL", pve.as_str()),
            ("PVE_API_TOKEN", pvediag::lab::pve::TOKEN),
        ],
    );
    let scrape = || {
        let before = lab.edge_requests_total();
        let body = rt.block_on(async {
            reqwest::Client::builder()
                .no_proxy()
                .build()
                .unwrap()
                .get(format!("{base}/probe?target=202"))
                .header("X-Prometheus-Scrape-Timeout-Seconds", "20")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        });
        let s = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
        assert_eq!(find(&s, "pvediag_exit_code", &[])[0].value, 0.0, "{body}");
        lab.edge_requests_total() - before
    };
    let (first, second, third) = (scrape(), scrape(), scrape());
    assert_eq!(second, third, "{first} {second} {third}");
    assert!(
        first >= second + 5,
        "the seed form's probes are sent once: {first} {second} {third}"
    );
    drop(child);
}
