//! The Proxmox VE API: `--all` discovery, instance names, exec tokens from container configs, and
//! every way the API can fail, against a fake API on 127.0.0.1 and the lab.

use std::time::{Duration, Instant};

use crate::common::fleet_lab::*;
use serde_json::Value;

fn output_text(o: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[test]
fn all_discovers_running_cmux_containers_and_their_tokens() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Normal);
    let o = pvediag_pve(&lab, &pve)
        .args(["--all", "--format", "json"])
        .output()
        .unwrap();
    let (out, err) = output_text(&o);
    assert_no_secret(&out);
    assert_no_secret(&err);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let vmids: Vec<u64> = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["vmid"].as_u64().unwrap())
        .collect();
    assert_eq!(vmids, [202, 203], "running cmux containers only: {out}");
    let skipped: Vec<(u64, &str)> = v["skipped_targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["vmid"].as_u64().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(
        skipped,
        [(204, "not running (stopped)"), (9000, "template")]
    );
    // Both execd require a token: the ones from `env` (202) and `description` (203) were used.
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["exec"]["token_sent"], true, "{t}");
        assert_eq!(t["exec"]["verdict"]["status"], "healthy", "{t}");
    }
    assert_eq!(v["targets"][0]["status"], "healthy");
}

#[test]
fn instance_names_resolve_through_the_api() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Normal);
    let o = pvediag_pve(&lab, &pve)
        .args(["cmux-202", NAME_203, "--format", "json"])
        .output()
        .unwrap();
    let (out, err) = output_text(&o);
    assert_no_secret(&out);
    assert_no_secret(&err);
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["targets"][0]["vmid"], 202);
    assert_eq!(v["targets"][1]["vmid"], 203);
    assert_eq!(v["targets"][0]["status"], "healthy");
    let xterm = v["targets"][1]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap();
    assert_eq!(xterm["verdict"]["status"], "broken");
    assert_eq!(xterm["verdict"]["layer"], "service");

    // An unknown name is a configuration error.
    let o = pvediag_pve(&lab, &pve)
        .arg("pvelxc-deadbeef")
        .output()
        .unwrap();
    let (out, err) = output_text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}\n{err}");
    assert!(
        err.contains("no container named \"pvelxc-deadbeef\""),
        "{err}"
    );
}

#[test]
fn discovered_token_is_what_makes_execd_answer() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Normal);
    // With the token from the PVE config: healthy.
    let o = pvediag_pve(&lab, &pve).arg("202").output().unwrap();
    let (out, err) = output_text(&o);
    assert_no_secret(&out);
    assert_no_secret(&err);
    assert_eq!(o.status.code(), Some(0), "{out}\n{err}");
    // A token given explicitly wins over discovery: the wrong one gets execd's 401.
    let o = pvediag_pve(&lab, &pve)
        .arg("202")
        .env("CMUX_EXECD_AUTH_TOKEN", pvediag::lab::WRONG_TOKEN)
        .output()
        .unwrap();
    let (out, err) = output_text(&o);
    assert_ne!(o.status.code(), Some(0), "{out}\n{err}");
    assert!(out.contains("401") || out.contains("nauthorized"), "{out}");
    // Without the API, nothing is discovered: execd refuses.
    let o = pvediag().args(lab_args(&lab)).arg("202").output().unwrap();
    assert_ne!(o.status.code(), Some(0));
}

#[test]
fn names_and_all_without_an_api_are_usage_errors() {
    // `cmux-202` is VMID 202 by cmux's naming; other names need the API (or the host's pct).
    for args in [vec!["--all"], vec!["pvelxc-1a2b3c4d"]] {
        let o = pvediag()
            .args(["--domain", DOMAIN])
            .args(&args)
            .output()
            .unwrap();
        let (_, err) = output_text(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("PVE_API_URL") && err.lines().count() == 1,
            "{err}"
        );
    }
}

fn api_error(mode: PveMode, token: &str, url: Option<String>) -> (Option<i32>, String, Duration) {
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = url.unwrap_or_else(|| start_pve(&rt, mode));
    let start = Instant::now();
    let o = pvediag_pve(&lab, &pve)
        .env("PVE_API_TOKEN", token)
        .args(["--all", "--timeout", "2s"])
        .output()
        .unwrap();
    let took = start.elapsed();
    let (out, err) = output_text(&o);
    assert_no_secret(&out);
    assert_no_secret(&err);
    assert!(!err.contains("6f1e2d3c"), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    (o.status.code(), err, took)
}

#[test]
fn api_errors_are_one_clear_line() {
    let wrong = "root@pam!pvediag=00000000-0000-0000-0000-6f1e2d3c0000";
    let (code, err, _) = api_error(PveMode::Normal, wrong, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("401") && err.contains("PVE_API_TOKEN"),
        "{err}"
    );
    assert!(!err.contains("6f1e2d3c0000"), "{err}");

    let (code, err, _) = api_error(PveMode::Status500, PVE_TOKEN, None);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("answered 500"), "{err}");

    let (code, err, _) = api_error(PveMode::Malformed, PVE_TOKEN, None);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not PVE JSON"), "{err}");

    let (code, err, took) = api_error(PveMode::Hang, PVE_TOKEN, None);
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("did not answer"), "{err}");
    assert!(
        took < Duration::from_secs(8),
        "bounded by the timeout: {took:?}"
    );

    // Nothing listens: bind a port, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (code, err, _) = api_error(
        PveMode::Normal,
        PVE_TOKEN,
        Some(format!("http://127.0.0.1:{port}")),
    );
    assert_eq!(code, Some(3), "{err}");
    assert!(err.contains("cannot reach the PVE API"), "{err}");
}
