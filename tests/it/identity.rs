//! Healthy means the right sandbox answered: the lab's identity scenarios through the real binary,
//! with and without the host vantage, and no false alarm in healthy labs of both generations.
//! Loopback only.

use std::os::unix::fs::PermissionsExt;

use assert_cmd::Command;
use pvediag::lab::{self, Lab};
use serde_json::Value;

use crate::common::curl_present;

fn demo(args: &[&str]) -> (i32, Value) {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("demo")
        .args(args)
        .args(["--format", "json", "--color", "never"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

fn target(v: &Value, vmid: u32) -> &Value {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["vmid"] == vmid)
        .unwrap_or_else(|| panic!("no target {vmid}"))
}

fn services(t: &Value) -> &Vec<Value> {
    t["services"].as_array().unwrap()
}

fn verdict<'a>(t: &'a Value, service: &str) -> &'a Value {
    &services(t).iter().find(|s| s["name"] == service).unwrap()["verdict"]
}

/// `pvediag 202` (the binary, not the demo) against a running lab scenario, `extra` args; the host
/// vantage sees the lab through its environment (curlrc, getent and pct stand-ins).
fn run_202(scenario: &str, extra: &[&str]) -> (i32, Value) {
    run_202_in(lab::scenario(scenario).unwrap(), extra)
}

fn run_202_in(sc: lab::Scenario, extra: &[&str]) -> (i32, Value) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab = rt.block_on(Lab::start(sc.config.clone())).unwrap();
    let token = lab.dir.join("client-token");
    std::fs::write(&token, sc.client_token.unwrap()).unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cmd = Command::cargo_bin("pvediag").unwrap();
    // Tests never write a state directory (as root the default is /var/lib/pvediag).
    cmd.env_clear().env("PVEDIAG_NO_STATE", "1");
    for (k, v) in lab.host_env() {
        cmd.env(k, v);
    }
    let out = cmd
        .args(["202", "--domain", &lab.domain, "--format", "json"])
        .args(["--connect-to", &lab.edge_addr.to_string()])
        .args(["--cacert", lab.ca_cert_path.to_str().unwrap()])
        .args(["--caddy-url", &format!("http://{}", lab.caddy_addr)])
        .args(["--exec-token-file", token.to_str().unwrap()])
        .args(["--url-template", sc.url_template])
        .args(["--timeout", "5s"])
        .args(extra)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap(), v)
}

#[test]
fn lan_name_to_other_sandbox_breaks_every_service_of_202() {
    if !curl_present() {
        return;
    }
    let (code, v) = run_202("lan-name-to-other-sandbox", &[]);
    assert_eq!(code, 1);
    let t = target(&v, 202);
    assert_eq!(t["identity"]["reported"]["hostname"], "cmux-203");
    for s in services(t) {
        let x = &s["verdict"];
        assert_eq!(x["status"], "broken", "{}: {x}", s["name"]);
        assert_eq!(x["rule"], "identity-wrong-sandbox", "{x}");
        assert!(x["summary"].as_str().unwrap().contains("cmux-203"), "{x}");
        assert!(
            x["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.as_str().unwrap().contains("hostname cmux-203")),
            "{x}"
        );
        assert!(x["next_step"].as_str().unwrap().contains("cmux-202.lan"));
    }
    assert_eq!(t["exec"]["verdict"]["status"], "broken");
    assert!(t["exec"]["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("WRONG SANDBOX"));
}

#[test]
fn lan_name_to_other_sandbox_on_host_pins_name_resolution() {
    if !curl_present() {
        return;
    }
    let (code, v) = run_202("lan-name-to-other-sandbox", &["--on-host"]);
    assert_eq!(code, 1);
    let t = target(&v, 202);
    assert_eq!(t["identity"]["host"]["lan_ipv4"][0], "10.10.0.203");
    assert_eq!(t["identity"]["host"]["own_ipv4"][0], "10.10.0.202");
    for s in services(t) {
        let x = &s["verdict"];
        assert_eq!(
            (x["status"].as_str(), x["layer"].as_str()),
            (Some("broken"), Some("container")),
            "{x}"
        );
        assert_eq!(x["rule"], "identity-lan-name-elsewhere");
        let summary = x["summary"].as_str().unwrap();
        assert!(
            summary.contains("10.10.0.203") && summary.contains("10.10.0.202"),
            "{summary}"
        );
    }
}

/// The 2026 layout: one generic rule dials `{instance}.lan`; the stale lease is found the same way.
#[test]
fn lan_name_to_other_sandbox_in_the_later_layout() {
    if !curl_present() {
        return;
    }
    let mut sc = lab::scenario("lan-name-to-other-sandbox").unwrap();
    sc.config.routes = lab::scenario("later-layout").unwrap().config.routes;
    sc.url_template = lab::LATER_TEMPLATE;
    let (code, v) = run_202_in(sc.clone(), &[]);
    assert_eq!(code, 1);
    let t = target(&v, 202);
    let rules: Vec<String> = services(t)
        .iter()
        .map(|s| {
            format!(
                "{} {} {}",
                s["name"], s["verdict"]["status"], s["verdict"]["rule"]
            )
        })
        .collect();
    assert!(
        services(t)
            .iter()
            .all(|s| s["verdict"]["rule"] == "identity-wrong-sandbox"),
        "{rules:?}"
    );
    let (code, v) = run_202_in(sc, &["--on-host"]);
    assert_eq!(code, 1);
    let t = target(&v, 202);
    assert!(services(t)
        .iter()
        .all(|s| s["verdict"]["layer"] == "container"
            && s["verdict"]["rule"] == "identity-lan-name-elsewhere"));
}

#[test]
fn both_targets_of_one_sandbox_are_flagged_with_a_metric() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo(&["--scenario", "lan-name-to-other-sandbox"]);
    assert_eq!(code, 1);
    // 203 itself answers correctly, but 202's users reach it too.
    let t203 = target(&v, 203);
    assert!(services(t203)
        .iter()
        .all(|s| s["verdict"]["status"] == "healthy"));
    assert_eq!(t203["identity"]["shared_with"][0], 202);
    assert_eq!(t203["exec"]["verdict"]["status"], "broken");
    assert!(t203["exec"]["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("cmux-203"));
    assert_eq!(target(&v, 202)["identity"]["shared_with"][0], 203);

    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--scenario", "lan-name-to-other-sandbox"])
        .args(["--format", "prometheus"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("pvediag_identity_mismatch{vmid=\"202\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("pvediag_identity_mismatch{vmid=\"203\"} 1"),
        "{text}"
    );
}

#[test]
fn route_to_other_sandbox_is_a_caddy_fault_and_a_lint_finding() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo(&["--scenario", "route-to-other-sandbox"]);
    assert_eq!(code, 1);
    let t = target(&v, 202);
    let x = verdict(t, "xterm");
    assert_eq!(
        (
            x["status"].as_str(),
            x["layer"].as_str(),
            x["rule"].as_str()
        ),
        (
            Some("broken"),
            Some("caddy"),
            Some("route-names-other-sandbox")
        ),
        "{x}"
    );
    assert!(x["summary"].as_str().unwrap().contains("cmux-203.lan"));
    // Only xterm: the exec call reached 202 itself.
    assert!(services(t)
        .iter()
        .filter(|s| s["name"] != "xterm")
        .all(|s| s["verdict"]["status"] == "healthy"));
    assert_eq!(t["identity"]["reported"]["hostname"], "cmux-202");
    // 203's own route dials 203: healthy.
    assert!(services(target(&v, 203))
        .iter()
        .all(|s| s["verdict"]["status"] == "healthy"));
    let findings = v["caddy"]["findings"].as_array().unwrap();
    assert!(
        findings
            .iter()
            .any(|f| f["kind"] == "route_names_other_sandbox"
                && f["message"].as_str().unwrap().contains("cmux-203.lan")),
        "{findings:?}"
    );
}

#[test]
fn healthy_scenarios_confirm_identity_in_both_generations() {
    if !curl_present() {
        return;
    }
    for scenario in ["healthy", "later-layout"] {
        for extra in [&[][..], &["--on-host"][..]] {
            let (code, v) = run_202(scenario, extra);
            assert_eq!(code, 0, "{scenario} {extra:?}: {v:#}");
            let t = target(&v, 202);
            assert_eq!(t["identity"]["reported"]["hostname"], "cmux-202");
            assert_eq!(t["identity"]["reported"]["ipv4"][0], "10.10.0.202");
            let summary = t["exec"]["verdict"]["summary"].as_str().unwrap();
            assert!(summary.contains("ran in cmux-202"), "{summary}");
            if !extra.is_empty() {
                // Every source agrees: pct config, the naming convention, the name on the host.
                let sources: Vec<&str> = t["identity"]["expected"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["source"].as_str().unwrap())
                    .collect();
                assert_eq!(sources, vec!["pct_config", "convention"]);
                assert_eq!(t["identity"]["host"]["lan_ipv4"][0], "10.10.0.202");
            }
        }
    }
    // The 2026 generation: pvelxc-style hostnames, expected from the lab's PVE API (and pct).
    for extra in [&[][..], &["--on-host"][..]] {
        let mut args = vec!["--layout", "2026", "--scenario", "healthy"];
        args.extend_from_slice(extra);
        let (code, v) = demo(&args);
        assert_eq!(code, 0, "{extra:?}: {v:#}");
        let t = target(&v, 202);
        let got = t["identity"]["reported"]["hostname"].as_str().unwrap();
        assert!(got.starts_with("pvelxc-"), "{got}");
        // The first (ranking) claim comes from the PVE API or, on the host, pct config.
        let first = &t["identity"]["expected"][0];
        assert!(
            first["source"] == "pve_api" || first["source"] == "pct_config",
            "{first}"
        );
        assert_eq!(first["hostname"], got);
    }
    // Fleets of healthy containers in both generations: one identity each, none shared.
    for args in [
        &["--containers", "3"][..],
        &["--containers", "3", "--layout", "2026"][..],
    ] {
        let (code, v) = demo(args);
        assert_eq!(code, 0, "{v:#}");
        for t in v["targets"].as_array().unwrap() {
            assert!(t["identity"].get("shared_with").is_none(), "{t}");
            assert!(t["identity"]["reported"]["hostname"].is_string(), "{t}");
        }
    }
}

/// The PVE API's container config is a source of the expected identity (its `hostname`), and it
/// outranks the naming convention: 203 is named `pvelxc-1a2b3c4d` (a later-generation instance
/// name) and is confirmed, with the disagreement named, never a false alarm.
#[test]
fn the_pve_api_names_the_expected_sandbox() {
    use crate::common::fleet_lab::*;
    if !curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Normal);
    let o = pvediag_pve(&lab, &pve)
        .args(["202", "203", "--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    for (vmid, name) in [(202, "cmux-202"), (203, NAME_203)] {
        let t = target(&v, vmid);
        let expected = t["identity"]["expected"].as_array().unwrap();
        assert_eq!(expected[0]["source"], "pve_api", "{t}");
        assert_eq!(expected[0]["hostname"], name);
        assert_eq!(t["identity"]["reported"]["hostname"], name);
        let summary = t["exec"]["verdict"]["summary"].as_str().unwrap();
        assert!(summary.contains(&format!("ran in {name}")), "{summary}");
        assert!(
            services(t).iter().all(|s| !s["verdict"]["rule"]
                .as_str()
                .unwrap()
                .starts_with("identity")),
            "{t}"
        );
    }
    let summary = target(&v, 203)["exec"]["verdict"]["summary"]
        .as_str()
        .unwrap();
    assert!(summary.contains("identity sources disagree"), "{summary}");
}

/// The 2026 generation end to end: pvelxc-style hostnames from the lab's PVE API; the stale lease
/// of `pvelxc-….lan` is found and, from the host, pinned with both addresses.
#[test]
fn lan_name_to_other_sandbox_in_the_2026_generation() {
    if !curl_present() {
        return;
    }
    for extra in [&[][..], &["--on-host"][..]] {
        let mut args = vec![
            "--layout",
            "2026",
            "--scenario",
            "lan-name-to-other-sandbox",
        ];
        args.extend_from_slice(extra);
        let (code, v) = demo(&args);
        assert_eq!(code, 1, "{extra:?}: {v:#}");
        let t = target(&v, 202);
        let want = t["identity"]["expected"][0]["hostname"].as_str().unwrap();
        assert!(want.starts_with("pvelxc-"), "{want}");
        let got = t["identity"]["reported"]["hostname"].as_str().unwrap();
        assert!(got.starts_with("pvelxc-") && got != want, "{got}");
        let rule = if extra.is_empty() {
            "identity-wrong-sandbox"
        } else {
            "identity-lan-name-elsewhere"
        };
        for s in services(t) {
            assert_eq!(s["verdict"]["status"], "broken", "{}", s["verdict"]);
            assert_eq!(s["verdict"]["rule"], rule, "{}", s["verdict"]);
            assert!(s["verdict"]["summary"].as_str().unwrap().contains(got));
        }
        // 203 itself is healthy and confirmed, flagged as shared.
        let t203 = target(&v, 203);
        assert!(services(t203)
            .iter()
            .all(|s| s["verdict"]["status"] == "healthy"));
        assert_eq!(t203["identity"]["shared_with"][0], 202);
    }
}
