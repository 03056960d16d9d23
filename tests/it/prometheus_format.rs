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
