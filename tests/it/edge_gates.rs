//! The edge's gates (issue 16): a lab edge that challenges or redirects every request to Cloudflare
//! Access. No verdict blames tunnel, Caddy, container or a service without evidence from inside, no
//! service is healthy through a gate, and the report names the gate. With the lab's Access service
//! token the same lab is healthy, and the token's secret appears in no output.

use serde_json::Value;

use crate::common::curl_present;
use crate::common::fleet_lab::{lab_args, pvediag, runtime, start_lab};
use pvediag::lab::{self, edge, LabConfig, ServiceKind};

/// Planted secrets: recognisable anywhere they might leak.
const PLANTED_ID: &str = "PLANTEDid0123456789abcdef.access";
const PLANTED_SECRET: &str = "PLANTEDaccessSECRETfeedface0123456789abcdef";
const WRONG_SECRET: &str = "PLANTEDwrongSECRETdeadbeef9876543210fedcba";

fn demo(scenario: &str, env: &[(&str, &str)], format: &str) -> (i32, String, String) {
    let mut c = pvediag();
    c.env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--scenario", scenario, "--format", format]);
    for (k, v) in env {
        c.env(k, v);
    }
    let out = c.output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The invariants of a gated target: nothing routed is healthy, nothing is pinned on a layer
/// behind the edge, the gate is named once.
fn assert_gated(name: &str, v: &Value, word: &str) {
    let t = &v["targets"][0];
    for s in t["services"].as_array().unwrap() {
        let verdict = &s["verdict"];
        assert!(
            verdict["layer"].is_null(),
            "{name}: {} pinned on {}: {}",
            s["name"],
            verdict["layer"],
            verdict["summary"]
        );
        if !s["url"].is_null() {
            assert_ne!(
                verdict["status"], "healthy",
                "{name}: {} healthy",
                s["name"]
            );
            // A candidate is a layer name (schema 1) or {layer, check} (schema 2).
            let layers: Vec<&str> = verdict["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_str().or(c["layer"].as_str()).unwrap())
                .collect();
            assert_eq!(layers, ["edge"], "{name}: {}", s["name"]);
            assert!(
                verdict["rule"].as_str().unwrap().starts_with("edge-"),
                "{name}: {}",
                verdict["rule"]
            );
        }
    }
    assert!(
        t["edge_gate"]["summary"].as_str().unwrap().contains(word),
        "{name}: {}",
        t["edge_gate"]
    );
    assert_eq!(t["exec"]["run"]["state"], "gated", "{name}");
}

#[test]
fn a_challenge_everywhere_is_named_and_blames_nothing_behind_the_edge() {
    if !curl_present() {
        return;
    }
    let (code, out, err) = demo("bot-challenge", &[], "json");
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    assert_eq!(code, 3, "{out}");
    assert_gated("bot-challenge", &v, "challenge");
    assert_eq!(
        v["targets"][0]["edge_gate"]["gate"]["kind"], "challenge",
        "{out}"
    );
    let (code, table, _) = demo("bot-challenge", &[], "table");
    assert_eq!(code, 3);
    assert!(
        table.contains("edge gate: ") && table.contains("challenge"),
        "{table}"
    );
    assert!(table.contains("WAF"), "{table}");
    assert_eq!(table.matches("edge gate: ").count(), 1, "{table}");
}

#[test]
fn behind_access_is_named_and_the_labs_token_makes_it_healthy() {
    if !curl_present() {
        return;
    }
    let (code, out, _) = demo("behind-access", &[], "json");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(code, 3, "{out}");
    assert_gated("behind-access", &v, "Access");
    let (_, table, _) = demo("behind-access", &[], "table");
    assert!(
        table.contains("Access") && table.contains("CF_ACCESS_CLIENT_ID"),
        "{table}"
    );

    // The lab's service token from the environment: healthy, and the secret is nowhere. (`demo`
    // leaves the environment's tokens to real sandboxes, so this runs against a lab of its own.)
    let rt = runtime();
    let lab = start_lab(
        &rt,
        LabConfig {
            edge_gate: lab::lab_access(),
            ..LabConfig::default()
        },
    );
    for format in ["json", "table", "junit", "prometheus"] {
        let out = pvediag()
            .env("CF_ACCESS_CLIENT_ID", lab::LAB_ACCESS_CLIENT_ID)
            .env("CF_ACCESS_CLIENT_SECRET", lab::LAB_ACCESS_CLIENT_SECRET)
            .args(lab_args(&lab))
            .args(["202", "--format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !all.contains(lab::LAB_ACCESS_CLIENT_SECRET),
            "{format}: the secret leaked"
        );
    }
    // `demo` does not take the environment's token for the lab.
    let env = [
        ("CF_ACCESS_CLIENT_ID", lab::LAB_ACCESS_CLIENT_ID),
        ("CF_ACCESS_CLIENT_SECRET", lab::LAB_ACCESS_CLIENT_SECRET),
    ];
    assert_eq!(demo("behind-access", &env, "json").0, 3);
    // The scenario that hands pvediag the token as --access-token-file.
    let (code, out, err) = demo("behind-access-token", &[], "json");
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains(lab::LAB_ACCESS_CLIENT_SECRET));
}

fn access_lab() -> LabConfig {
    LabConfig {
        edge_gate: edge::Gate::Access {
            team: "acme".into(),
            client_id: PLANTED_ID.into(),
            client_secret: PLANTED_SECRET.into(),
        },
        ..LabConfig::default()
    }
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    for s in [PLANTED_SECRET, WRONG_SECRET] {
        assert!(!all.contains(s), "{what}: a planted secret leaked:\n{all}");
    }
}

#[test]
fn a_planted_access_secret_never_appears_and_a_wrong_one_is_a_configuration_error() {
    if !curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, access_lab());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("access");
    std::fs::write(&file, format!("{PLANTED_ID}\n{PLANTED_SECRET}\n")).unwrap();
    for format in ["json", "table", "junit", "prometheus"] {
        // From the environment.
        let out = pvediag()
            .env("CF_ACCESS_CLIENT_ID", PLANTED_ID)
            .env("CF_ACCESS_CLIENT_SECRET", PLANTED_SECRET)
            .args(lab_args(&lab))
            .args(["202", "--format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        assert_clean(format, &out);
        // From the file.
        let out = pvediag()
            .args(lab_args(&lab))
            .args(["202", "--format", format, "--access-token-file"])
            .arg(&file)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{format}: {out:?}");
        assert_clean(format, &out);
        // A wrong secret: Access refuses with 403, a one-line configuration error.
        let out = pvediag()
            .env("CF_ACCESS_CLIENT_ID", PLANTED_ID)
            .env("CF_ACCESS_CLIENT_SECRET", WRONG_SECRET)
            .args(lab_args(&lab))
            .args(["202", "--format", format])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(3), "{format}: {out:?}");
        assert_clean(format, &out);
        if format == "table" {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.lines().any(|l| l.starts_with(
                    "edge gate: configuration error: Cloudflare Access rejected the service token"
                )),
                "{text}"
            );
        }
    }
    // Half a token is a usage error that names the missing half, not the value.
    let out = pvediag()
        .env("CF_ACCESS_CLIENT_SECRET", PLANTED_SECRET)
        .args(lab_args(&lab))
        .arg("202")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_clean("half a token", &out);
    assert!(String::from_utf8_lossy(&out.stderr).contains("CF_ACCESS_CLIENT_ID"));
    // A token file that is missing, or holds the secret alone: one line, exit 2, no value.
    std::fs::write(&file, format!("{PLANTED_SECRET}\n")).unwrap();
    for f in [dir.path().join("missing"), file.clone()] {
        let out = pvediag()
            .args(lab_args(&lab))
            .args(["202", "--access-token-file"])
            .arg(&f)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{out:?}");
        assert_clean("bad token file", &out);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(&f.display().to_string()), "{err}");
    }
}

/// Where the internal view still works (`--exec-url` straight to execd, as from the host), the
/// services are checked from inside: a dead one is broken, the others are the edge's question.
#[test]
fn the_internal_view_still_checks_the_services_behind_a_challenge() {
    if !curl_present() {
        return;
    }
    let rt = runtime();
    let mut ct = lab::healthy_container(202, None);
    ct.services.retain(|s| s.kind != ServiceKind::Vscode);
    let lab = start_lab(
        &rt,
        LabConfig {
            edge_gate: edge::Gate::Challenge,
            containers: vec![ct],
            ..LabConfig::default()
        },
    );
    let execd = lab.container_addr(202, 39375).unwrap();
    let out = pvediag()
        .env("CF_ACCESS_CLIENT_ID", PLANTED_ID)
        .env("CF_ACCESS_CLIENT_SECRET", PLANTED_SECRET)
        .args(lab_args(&lab))
        .args(["202", "--format", "json", "--exec-url"])
        .arg(format!("http://{execd}"))
        .output()
        .unwrap();
    assert_clean("exec-url", &out);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1), "{v}");
    let services = v["targets"][0]["services"].as_array().unwrap();
    let get = |n: &str| &services.iter().find(|s| s["name"] == n).unwrap()["verdict"];
    assert_eq!(get("vscode")["status"], "broken");
    assert_eq!(get("vscode")["layer"], "service");
    assert_eq!(get("xterm")["rule"], "edge-challenge");
    assert!(
        get("xterm")["summary"]
            .as_str()
            .unwrap()
            .contains("answers correctly inside"),
        "{}",
        get("xterm")
    );
    // Not routed: checked from inside alone.
    assert_eq!(get("cdp")["status"], "healthy");
    assert_eq!(v["targets"][0]["exec"]["verdict"]["status"], "healthy");
}
