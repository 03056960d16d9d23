//! Read at 3 a.m. (issue 12): one block per root cause, every scenario within 80 columns, colour
//! where a terminal has it (also piped with `--color always`), first contact, a public URL as the
//! target, `--wait` that waits, the lab's true ports, completions and the man page.

use std::io::BufRead;
use std::sync::{Arc, Mutex};

use assert_cmd::Command;
use clap::Parser as _;
use pvediag::observation::{ExecRun, Probe};
use pvediag::report::table::TableFormat;
use pvediag::report::{Format as _, Report};
use serde_json::Value;

use crate::common::curl_present;

fn bin() -> Command {
    let mut c = Command::cargo_bin("pvediag").unwrap();
    // Tests never write a state directory (as root the default is /var/lib/pvediag).
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("PVEDIAG_NO_STATE", "1");
    c
}

/// The scenarios `demo --list` names: (layout, name).
fn listed_scenarios() -> Vec<(&'static str, String)> {
    let out = bin().args(["demo", "--list"]).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let mut layout = "seed";
    let mut all = Vec::new();
    for line in text.lines() {
        if line.starts_with("with --layout 2026") {
            layout = "2026";
        } else if !line.is_empty() && !line.starts_with(' ') {
            all.push((layout, line.split_whitespace().next().unwrap().to_string()));
        }
    }
    all
}

/// Every scenario of `demo --list`, both layouts, with and without `--on-host`, in 80 columns:
/// no line of what the operator reads (stdout and stderr) is wider. Scenarios run in parallel.
#[test]
fn every_demo_scenario_fits_80_columns() {
    if !curl_present() {
        return;
    }
    let scenarios = listed_scenarios();
    assert!(scenarios.len() >= 20, "{scenarios:?}");
    assert!(scenarios.iter().any(|(l, _)| *l == "2026"));
    let mut runs = Vec::new();
    for (layout, name) in &scenarios {
        for on_host in [false, true] {
            runs.push((layout.to_string(), name.clone(), on_host));
        }
    }
    let runs = Arc::new(Mutex::new(runs));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let runs = runs.clone();
            let failures = failures.clone();
            std::thread::spawn(move || loop {
                let Some((layout, name, on_host)) = runs.lock().unwrap().pop() else {
                    return;
                };
                let mut c = bin();
                c.env("COLUMNS", "80")
                    .args(["demo", "--scenario", &name, "--layout", &layout]);
                if on_host {
                    c.arg("--on-host");
                }
                let out = c.output().unwrap();
                let what = format!("demo --scenario {name} --layout {layout} on_host={on_host}");
                if out.status.code() == Some(2) {
                    failures.lock().unwrap().push(format!(
                        "{what}: usage error: {}",
                        String::from_utf8_lossy(&out.stderr)
                    ));
                    continue;
                }
                for stream in [&out.stdout, &out.stderr] {
                    let text = String::from_utf8_lossy(stream);
                    for l in text.lines() {
                        if l.chars().count() > 80 {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("{what}: {} columns: {l}", l.chars().count()));
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let failures = failures.lock().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn demo_args(args: &[&str]) -> pvediag::cli::DemoArgs {
    let mut all = vec!["pvediag", "demo"];
    all.extend(args);
    match pvediag::cli::Cli::try_parse_from(all).unwrap().command {
        Some(pvediag::cli::Command::Demo(a)) => *a,
        _ => unreachable!(),
    }
}

/// Times set to zero (probes, the run, and every "N ms" of the texts) so the layout, which
/// depends on their digits, is the same every run.
fn without_times(mut r: Report) -> Report {
    let ms = regex::Regex::new(r"\b\d+(\.\d+)? ?(ms|s)\b").unwrap();
    let fix = |s: &mut String| *s = ms.replace_all(s, "0 ms").into_owned();
    let zero = |p: &mut Probe| match p {
        Probe::Response { elapsed_ms, .. } | Probe::Failed { elapsed_ms, .. } => *elapsed_ms = 0,
        Probe::NotRun { .. } => {}
    };
    r.duration_ms = 0;
    for t in &mut r.targets {
        for s in &mut t.observation.services {
            zero(&mut s.external);
            zero(&mut s.internal);
        }
        if let Some(h) = &mut t.observation.host {
            zero(&mut h.cloudflared);
            for s in &mut h.services {
                zero(&mut s.caddy);
                zero(&mut s.upstream);
            }
        }
        if let ExecRun::Completed { elapsed_ms, .. } = &mut t.observation.exec.run {
            *elapsed_ms = 0;
        }
        fix(&mut t.verdict.exec.summary);
        for v in &mut t.verdict.services {
            fix(&mut v.summary);
            v.evidence.iter_mut().for_each(fix);
            if let Some(n) = &mut v.next_step {
                fix(n);
            }
        }
    }
    r
}

/// What changes from run to run and keeps its length: ray ids, the lab's directory and ports.
fn redact(text: &str) -> String {
    let ray = regex::Regex::new(r"[0-9a-f]{16}-LAB").unwrap();
    let dir = regex::Regex::new(r"pvediag-lab-[A-Za-z0-9]{6}").unwrap();
    let port = regex::Regex::new(r"127\.0\.0\.1:(\d{5})").unwrap();
    let t = ray.replace_all(text, "RRRRRRRRRRRRRRRR-LAB");
    let t = dir.replace_all(&t, "pvediag-lab-XXXXXX");
    port.replace_all(&t, |c: &regex::Captures| {
        let p: u16 = c[1].parse().unwrap();
        // The lab's ports are ephemeral (32768 and up); the cmux ports are the container's own.
        if p < 32768 || (39375..=39383).contains(&p) {
            c[0].to_string()
        } else {
            "127.0.0.1:PPPPP".to_string()
        }
    })
    .into_owned()
}

fn report_of(args: &[&str]) -> Report {
    let rt = tokio::runtime::Runtime::new().unwrap();
    without_times(pvediag::demo::scenario_report(demo_args(args), &rt).unwrap())
}

/// The rendered text at 80 and 120 columns, for a representative set of scenarios.
#[test]
fn snapshots_at_80_and_120_columns() {
    if !curl_present() {
        return;
    }
    let cases: &[(&str, &[&str])] = &[
        ("tunnel_down", &["--scenario", "tunnel-down"]),
        ("container_down", &["--scenario", "container-down"]),
        (
            "caddy_down_2026",
            &["--scenario", "caddy-down", "--layout", "2026"],
        ),
        ("seed_on_host", &["--scenario", "seed", "--on-host"]),
        ("loopback_only", &["--scenario", "loopback-only"]),
    ];
    for (name, args) in cases {
        let r = report_of(args);
        for width in [80, 120] {
            let text = redact(&TableFormat::new(false, width).render(&r));
            for l in text.lines() {
                assert!(l.chars().count() <= width, "{name} at {width}: {l}");
            }
            insta::assert_snapshot!(format!("{name}_{width}"), text);
        }
    }
}

/// `--color always` colours the headline, the exec-channel line, the block headings, the next
/// step and the verdict cells: byte for byte.
#[test]
fn colour_always_byte_for_byte() {
    if !curl_present() {
        return;
    }
    let r = report_of(&["--scenario", "seed"]);
    let text = redact(&TableFormat::new(true, 80).render(&r));
    insta::assert_snapshot!("seed_colour_80", text.replace('\x1b', "\\e"));
}

/// Piped: `--color always` colours the same places as a terminal, whatever `NO_COLOR` says;
/// `NO_COLOR` wins over `auto` only, and `auto` is plain in a pipe.
#[test]
fn colour_piped_follows_the_conventions() {
    if !curl_present() {
        return;
    }
    let run = |args: &[&str], no_color: bool| {
        let mut c = bin();
        c.env("COLUMNS", "80")
            .args(["demo", "--scenario", "seed"])
            .args(args);
        if no_color {
            c.env("NO_COLOR", "1");
        }
        String::from_utf8(c.output().unwrap().stdout).unwrap()
    };
    let always = run(&["--color", "always"], false);
    let lines: Vec<&str> = always.lines().collect();
    let painted = |prefix: &str| {
        lines
            .iter()
            .find(|l| l.contains(prefix))
            .unwrap_or_else(|| panic!("{prefix} in {always}"))
            .contains('\x1b')
    };
    for p in [
        "VMID 202",
        "exec channel:",
        "xterm — broken",
        "next:",
        "target(s):",
    ] {
        assert!(painted(p), "{p} is not coloured:\n{always}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.contains("\x1b[1;31mbroken (caddy)\x1b[0m")),
        "{always}"
    );
    let with_no_color = run(&["--color", "always"], true);
    let strip_times = |s: &str| {
        let ms = regex::Regex::new(r"\d+(\.\d+)? ?(ms|s)\b").unwrap();
        ms.replace_all(&redact(s), "T").into_owned()
    };
    assert_eq!(
        strip_times(&with_no_color).matches('\x1b').count(),
        strip_times(&always).matches('\x1b').count(),
        "NO_COLOR must not win over --color always"
    );
    for (args, no_color) in [
        (&["--color", "never"][..], false),
        (&[][..], false),
        (&[][..], true),
    ] {
        assert!(!run(args, no_color).contains('\x1b'), "{args:?} {no_color}");
    }
}

/// `tunnel-down`, `container-down` and `caddy-down` print one block for every routed service.
#[test]
fn whole_site_failures_are_one_block() {
    if !curl_present() {
        return;
    }
    for (scenario, heading) in [
        (
            "tunnel-down",
            "✗ broken (tunnel) — 6 services: preview, exec, worker, vscode, vnc, xterm",
        ),
        (
            "container-down",
            "✗ broken (container|caddy|service) — 5 services: exec, worker, vscode, vnc, xterm",
        ),
        (
            "caddy-down",
            "✗ broken (caddy|tunnel) — 5 services: exec, worker, vscode, vnc, xterm",
        ),
    ] {
        let out = bin()
            .env("COLUMNS", "100")
            .args(["demo", "--scenario", scenario])
            .output()
            .unwrap();
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(heading), "{scenario}:\n{text}");
        assert_eq!(
            text.matches("  next: ").count(),
            1,
            "{scenario}: one next step\n{text}"
        );
        // JSON keeps every per-service verdict and adds the grouping.
        let out = bin()
            .args(["demo", "--scenario", scenario, "--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["targets"][0]["services"].as_array().unwrap().len(), 8);
        let groups = v["targets"][0]["groups"].as_array().unwrap();
        assert!(
            groups[0]["services"].as_array().unwrap().len() >= 5,
            "{groups:?}"
        );
        assert_eq!(v["causes"][0]["targets"], serde_json::json!([202]));
    }
}

/// The service-down lab says what a real container would: vscode's own port, not the lab's map.
#[test]
fn the_lab_shows_the_containers_real_ports() {
    if !curl_present() {
        return;
    }
    let port = regex::Regex::new(r"port (\d+)").unwrap();
    for layout in ["seed", "2026"] {
        let out = bin()
            .args(["demo", "--scenario", "service-down", "--layout", layout])
            .args(["--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        let vscode = v["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == "vscode")
            .unwrap()
            .clone();
        let msg = vscode["internal"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("port 39378"), "{layout}: {msg}");
        for c in port.captures_iter(&v.to_string()) {
            let p: u16 = c[1].parse().unwrap();
            assert!(
                p == 5173 || p == 8080 || (39375..=39383).contains(&p),
                "port {p} leaked"
            );
        }
    }
}

#[test]
fn bare_pvediag_prints_a_short_help_that_knows_the_environment() {
    let out = bin().output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(
        text.contains("pvediag demo") && text.contains("--domain"),
        "{text}"
    );
    let out = bin()
        .env("PVE_PUBLIC_DOMAIN", "alpha.example")
        .output()
        .unwrap();
    let text = String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("pvediag demo"), "{text}");
    assert!(!text.contains("--domain"), "the domain is set: {text}");
    assert!(text.contains("alpha.example"), "{text}");
}

#[test]
fn completions_and_man_page_come_from_the_flags() {
    for (shell, marker) in [
        ("bash", "_pvediag()"),
        ("zsh", "#compdef pvediag"),
        ("fish", "complete -c pvediag"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains(marker), "{shell}");
        assert!(
            text.contains("--on-host") && text.contains("demo"),
            "{shell}"
        );
    }
    let out = bin().arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let man = String::from_utf8(out.stdout).unwrap();
    assert!(
        man.starts_with(".ie") || man.contains(".TH pvediag"),
        "{man}"
    );
    for s in [
        "PVEDIAG DEMO",
        "\\-\\-scenario",
        "EXIT STATUS",
        "\\-\\-domain",
    ] {
        assert!(man.contains(s), "{s} missing from the man page");
    }
    let bad = bin().args(["completions", "tcsh"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// `-o -` is standard output (no file named `-`).
#[test]
fn dash_o_dash_is_stdout() {
    if !curl_present() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .current_dir(dir.path())
        .args([
            "demo",
            "--scenario",
            "healthy",
            "--format",
            "json",
            "-o",
            "-",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["status"], "healthy");
    assert!(!dir.path().join("-").exists());
}

/// `--wait 6s` waits six seconds (attempts until the window ends), and says how long and how many.
#[test]
fn wait_spends_its_duration_and_says_so() {
    if !curl_present() {
        return;
    }
    let start = std::time::Instant::now();
    let out = bin()
        .args([
            "demo",
            "--scenario",
            "service-down",
            "--wait",
            "6s",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(out.status.code(), Some(1));
    assert!(took >= std::time::Duration::from_secs(6), "{took:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["wait"]["total_ms"].as_u64().unwrap() >= 6000,
        "{}",
        v["wait"]
    );
    // 0.5, 1, 2, 4 s pauses: at least two attempts however slow the machine, the last one at
    // the end of the window.
    assert!(
        v["wait"]["attempts"].as_u64().unwrap() >= 2,
        "{}",
        v["wait"]
    );
    let out = bin()
        .args(["demo", "--scenario", "service-down", "--wait", "1s"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let said =
        regex::Regex::new(r"— \d+ attempts? in \d+\.\d\d s \(the last \d+\.\d\d s\), exit 1")
            .unwrap();
    assert!(said.is_match(&text), "{text}");
}

/// The URL from the browser is a target: `pvediag https://xterm-202.example.test/` against
/// `demo --serve` diagnoses VMID 202, the whole sandbox, with xterm highlighted.
#[test]
fn a_public_url_is_a_target() {
    if !curl_present() {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pvediag"))
        .args(["demo", "--serve"])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let command = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| l.trim().strip_prefix("pvediag ").map(str::to_string))
        .expect("demo --serve prints the command");
    // The printed command without its VMID and --domain: the URL says both.
    let words: Vec<&str> = command.split_whitespace().collect();
    let mut args: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "--domain" => i += 2,
            w if w.parse::<u32>().is_ok() => i += 1,
            w => {
                args.push(w.to_string());
                i += 1;
            }
        }
    }
    let run = |extra: &[&str]| {
        bin()
            .env("COLUMNS", "80")
            .arg("https://xterm-202.example.test/")
            .args(&args)
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&["--format", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(out.status.code(), Some(1), "the seed lab is broken");
    assert_eq!(v["targets"][0]["vmid"], 202);
    assert_eq!(v["targets"][0]["services"].as_array().unwrap().len(), 8);
    assert_eq!(
        v["focus"],
        serde_json::json!({"vmid": 202, "service": "xterm"})
    );
    let text = String::from_utf8(run(&[]).stdout).unwrap();
    assert!(text.contains("▸ xterm"), "{text}");
    // Another domain than the URL's is refused in one line.
    let out = run(&["--domain", "other.test"]);
    assert_eq!(out.status.code(), Some(2));
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
}
