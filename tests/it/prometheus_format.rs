//! `--format prometheus` read back by a third-party exposition-format parser (prometheus-parse), on
//! the seed incident in the lab: the verdict series names xterm, caddy; the probes carry vantages.

use assert_cmd::Command;
use prometheus_parse::{Scrape, Value};

use crate::common::curl_present;

fn value(v: &Value) -> f64 {
    match v {
        Value::Gauge(x) | Value::Counter(x) | Value::Untyped(x) => *x,
        other => panic!("unexpected sample kind {other:?}"),
    }
}

#[test]
fn seed_incident_metrics_parse_with_a_real_parser() {
    if !curl_present() {
        return;
    }
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PVEDIAG_NO_STATE", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--format", "prometheus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8(out.stdout).unwrap();
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition format");
    assert!(scrape.samples.len() > 20, "{text}");
    // HELP for every metric family pvediag writes.
    for m in [
        "pvediag_verdict",
        "pvediag_probe_success",
        "pvediag_probe_duration_seconds",
    ] {
        assert!(scrape.docs.contains_key(m), "no HELP for {m}");
    }
    let verdict: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "pvediag_verdict" && s.labels.get("service") == Some("xterm"))
        .collect();
    assert_eq!(verdict.len(), 1, "one verdict series per service");
    assert_eq!(verdict[0].labels.get("vmid"), Some("202"));
    assert_eq!(verdict[0].labels.get("status"), Some("broken"));
    assert_eq!(verdict[0].labels.get("layer"), Some("caddy"));
    assert_eq!(value(&verdict[0].value), 1.0);
    let success = |vantage: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == "pvediag_probe_success"
                    && s.labels.get("service") == Some("xterm")
                    && s.labels.get("vantage") == Some(vantage)
            })
            .map(|s| value(&s.value))
    };
    assert_eq!(success("external"), Some(0.0));
    assert_eq!(success("internal"), Some(1.0));
    // No timestamps (node_exporter's textfile collector refuses them): one value after the series.
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let after = line.rsplit_once('}').map_or(line, |(_, rest)| rest);
        let tokens: Vec<&str> = after.split_whitespace().collect();
        let want = if line.contains('}') { 1 } else { 2 };
        assert_eq!(tokens.len(), want, "a timestamp or junk in {line:?}");
    }
}

/// A mixed host (202 on the 2026 catalog, 203 on the seed one), diagnosed with the seed target
/// first (the command `demo --serve` prints, targets swapped): each target's answers are
/// classified with its own catalog, so every probe of these two healthy targets succeeds, the
/// 2026 worker daemon (which the seed catalog has not) included.
#[test]
fn mixed_host_probes_are_classified_with_each_targets_catalog() {
    use std::io::BufRead;
    if !curl_present() {
        return;
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pvediag"))
        .args([
            "demo",
            "--serve",
            "--layout",
            "2026",
            "--scenario",
            "mixed-host",
        ])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut command = None;
    while let Some(Ok(line)) = lines.next() {
        if line.starts_with("diagnose it with:") {
            command = lines.next().and_then(Result::ok);
            break;
        }
    }
    let command = command.expect("demo --serve prints the command");
    assert!(command.contains(" 202 203 "), "{command}");
    let command = command.replacen(" 202 203 ", " 203 202 ", 1).replacen(
        "pvediag ",
        &format!("{} ", env!("CARGO_BIN_EXE_pvediag")),
        1,
    );
    let out = std::process::Command::new("bash")
        .args(["-c", &format!("{} --format prometheus", command.trim())])
        .env_clear()
        .env("PVEDIAG_NO_STATE", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .output()
        .unwrap();
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("exposition format");
    let success: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == "pvediag_probe_success")
        .collect();
    // The seed target comes first: its catalog is the report's heading catalog.
    assert_eq!(
        success.first().and_then(|s| s.labels.get("vmid")),
        Some("203"),
        "{text}"
    );
    let has = |vmid: &str, service: &str| {
        success
            .iter()
            .any(|s| s.labels.get("vmid") == Some(vmid) && s.labels.get("service") == Some(service))
    };
    assert!(has("202", "worker-daemon"), "{text}");
    assert!(has("203", "worker"), "{text}");
    assert!(!has("203", "worker-daemon"), "{text}");
    let failed: Vec<String> = success
        .iter()
        .filter(|s| value(&s.value) != 1.0)
        .map(|s| format!("{:?}", s.labels))
        .collect();
    assert!(
        failed.is_empty(),
        "probes classified as failing: {failed:?}\n{text}"
    );
}
