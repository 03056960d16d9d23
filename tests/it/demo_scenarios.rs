//! Every lab scenario through the real binary: `pvediag demo --scenario NAME --format json`.
//! The lab listens on loopback only.

use assert_cmd::Command;
use serde_json::Value;

pub(crate) fn demo(scenario: &str) -> (i32, Value) {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "demo",
            "--scenario",
            scenario,
            "--format",
            "json",
            "--color",
            "never",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let v: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{scenario}: not JSON ({e}):\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

pub(crate) fn verdict<'a>(v: &'a Value, service: &str) -> &'a Value {
    &v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no service {service}"))["verdict"]
}

/// (service, status, layer).
pub(crate) type Row = (String, String, String);

/// (service, status, layer) of every service that is not healthy.
pub(crate) fn not_healthy(v: &Value) -> Vec<Row> {
    v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"]["status"] != "healthy")
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["verdict"]["status"].as_str().unwrap().to_string(),
                s["verdict"]["layer"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

use crate::common::curl_present;

pub(crate) fn t(s: &str, st: &str, l: &str) -> Row {
    (s.into(), st.into(), l.into())
}

#[test]
fn seed_incident_is_caddy_with_the_live_port() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("seed");
    assert_eq!(code, 1);
    assert_eq!(not_healthy(&v), vec![t("xterm", "broken", "caddy")]);
    let x = verdict(&v, "xterm");
    let text = x.to_string();
    assert!(text.contains("39383"), "{text}");
    assert_eq!(x["rule"], "caddy-route-misses-live-service");
    assert_eq!(v["schema_version"], 2);
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["targets"][0]["vmid"], 202);
    assert_eq!(v["targets"][0]["exec"]["verdict"]["status"], "healthy");
}

#[test]
fn healthy_lab_exits_zero() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("healthy");
    assert_eq!(code, 0);
    assert!(not_healthy(&v).is_empty(), "{:?}", not_healthy(&v));
    for s in v["targets"][0]["services"].as_array().unwrap() {
        assert!(s["verdict"]["layer"].is_null());
        assert_eq!(s["internal"]["outcome"], "response", "{}", s["name"]);
    }
}

#[test]
fn each_fault_gives_its_layer() {
    if !curl_present() {
        return;
    }
    let cases: &[(&str, i32, Vec<Row>)] = &[
        ("caddy-port", 1, vec![t("vnc", "broken", "caddy")]),
        ("service-down", 1, vec![t("vscode", "broken", "service")]),
        ("cors-missing", 1, vec![t("xterm", "degraded", "service")]),
        ("wrong-service", 1, vec![t("xterm", "broken", "caddy")]),
        ("preview-off", 0, vec![t("preview", "skipped", "-")]),
    ];
    for (scenario, want_code, want) in cases {
        let (code, v) = demo(scenario);
        assert_eq!(code, *want_code, "{scenario}");
        assert_eq!(&not_healthy(&v), want, "{scenario}");
    }
}

#[test]
fn tunnel_down_blames_the_tunnel_everywhere() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("tunnel-down");
    assert_eq!(code, 1);
    for s in v["targets"][0]["services"].as_array().unwrap() {
        if s["url"].is_string() {
            assert_eq!(s["verdict"]["layer"], "tunnel", "{}", s["name"]);
            assert_eq!(s["verdict"]["rule"], "tunnel-down");
        } else {
            assert_eq!(s["verdict"]["status"], "inconclusive", "{}", s["name"]);
        }
    }
}

#[test]
fn exec_unauthorized_is_inconclusive_not_broken() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("exec-unauthorized");
    assert_eq!(code, 3);
    let exec = &v["targets"][0]["exec"];
    assert_eq!(exec["auth_mode"], "required");
    assert_eq!(exec["token_sent"], true);
    assert_eq!(exec["run"]["state"], "rejected");
    assert_eq!(exec["run"]["status"], 401);
    assert_eq!(exec["verdict"]["status"], "inconclusive");
    let bad = not_healthy(&v);
    assert!(bad.iter().all(|(_, st, _)| st == "inconclusive"), "{bad:?}");
    assert!(bad.iter().any(|(s, _, _)| s == "proxy"));
}

#[test]
fn container_down_is_the_container() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("container-down");
    assert_eq!(code, 1);
    // From outside, a stopped container and routes that all miss it look alike: broken, the
    // container the most likely candidate; the host vantage pins it.
    for s in ["xterm", "exec"] {
        let x = verdict(&v, s);
        assert_eq!(x["status"], "broken", "{s}");
        assert!(x["layer"].is_null(), "{s}");
        assert_eq!(x["candidates"][0]["layer"], "container", "{s}");
    }
    assert_eq!(verdict(&v, "preview")["status"], "skipped");
    // With the host vantage: every service of the container, the optional one included.
    let (code, v) = demo_args(&["--scenario", "container-down", "--on-host", "--no-pct"]);
    assert_eq!(code, 1);
    for s in v["targets"][0]["services"].as_array().unwrap() {
        assert_eq!(
            (
                s["verdict"]["status"].as_str(),
                s["verdict"]["layer"].as_str()
            ),
            (Some("broken"), Some("container")),
            "{}: {}",
            s["name"],
            s["verdict"]
        );
    }
}

#[test]
fn caddy_down_names_both_candidates() {
    if !curl_present() {
        return;
    }
    // A total outage proven from outside pages: broken, exit 1, the hop between two candidates.
    let (code, v) = demo("caddy-down");
    assert_eq!(code, 1);
    assert_eq!(v["exit_code"], 1);
    assert_eq!(v["status"], "broken");
    let x = verdict(&v, "xterm");
    assert_eq!(x["status"], "broken");
    assert!(x["layer"].is_null());
    let layers: Vec<&str> = x["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["layer"].as_str().unwrap())
        .collect();
    assert_eq!(layers, ["caddy", "tunnel"]);
    for c in x["candidates"].as_array().unwrap() {
        assert!(c["check"].as_str().unwrap().contains("127.0.0.1"), "{c}");
    }
}

#[test]
fn table_output_names_the_break() {
    if !curl_present() {
        return;
    }
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("SERVICE") && s.contains("VERDICT"), "{s}");
    assert!(s.contains("broken (caddy)"), "{s}");
    assert!(s.contains("✗ xterm"), "{s}");
    assert!(s.contains("systemctl reload caddy-cmux"), "{s}");
    assert!(!s.contains('\u{1b}'), "colour codes with --color never");
}

#[test]
fn unknown_scenario_is_a_usage_error() {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .args(["demo", "--scenario", "nope"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("\"nope\"") && e.contains("healthy"), "{e}");
}

#[test]
fn seed_demo_reads_the_labs_caddyfile_and_names_the_line() {
    if !curl_present() {
        return;
    }
    let (_, v) = demo("seed");
    let x = verdict(&v, "xterm");
    let summary = x["summary"].as_str().unwrap();
    assert!(
        summary.contains("cmux-202.lan:39376")
            && summary.contains("39383")
            && summary.contains("Caddyfile.cmux:17"),
        "{summary}"
    );
    assert!(x["next_step"]
        .as_str()
        .unwrap()
        .contains("sed -i '17s/:39376/:39383/'"));
    let routes = v["targets"][0]["routes"].as_array().unwrap();
    let xr = routes.iter().find(|r| r["service"] == "xterm").unwrap();
    assert_eq!(xr["upstream_port"], 39376);
    assert_eq!(xr["upstream_host"], "cmux-202.lan");
    let findings = v["caddy"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["line"], 17);
}

/// `pvediag demo --serve` keeps the lab up and prints the real command; that command, typed by hand,
/// reaches the lab exactly like `demo` does.
#[test]
fn demo_serve_prints_a_command_that_reaches_the_lab() {
    use std::io::BufRead;
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
    let mut command = None;
    for line in lines.by_ref() {
        let line = line.unwrap();
        if let Some(c) = line.trim().strip_prefix("pvediag ") {
            command = Some(c.to_string());
            break;
        }
    }
    let command = command.expect("demo --serve prints the command");
    let args: Vec<&str> = command.split_whitespace().collect();
    let ca = args[args.iter().position(|a| *a == "--cacert").unwrap() + 1].to_string();
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        // Tests never write a state directory (as root the default is /var/lib/pvediag).
        .env("PVEDIAG_NO_STATE", "1")
        .args(&args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(1));
    let (_, via_demo) = demo("seed");
    assert_eq!(not_healthy(&v), not_healthy(&via_demo));
    assert_eq!(
        verdict(&v, "xterm")["summary"],
        verdict(&via_demo, "xterm")["summary"]
    );
    // SIGTERM stops the lab and removes its files.
    let _ = std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status();
    let _ = child.wait();
    assert!(
        !std::path::Path::new(&ca).exists(),
        "the lab's directory outlived it"
    );
}

pub(crate) fn demo_args(args: &[&str]) -> (i32, Value) {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .arg("demo")
        .args(args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    (out.status.code().unwrap(), v)
}

/// A fault the decision table has no scenario name for: the service listens on loopback only. With
/// the Caddyfile showing a correct route, pvediag does not blame Caddy; from the host it pins it.
#[test]
fn loopback_only_service_is_not_blamed_on_a_correct_route() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("loopback-only");
    assert_eq!(code, 1);
    let x = verdict(&v, "xterm");
    assert_eq!(x["status"], "broken");
    assert!(x["layer"].is_null());
    assert_eq!(x["rule"], "route-correct-upstream-unreachable");
    assert_eq!(x["candidates"][0]["layer"], "service");
    let (code, v) = demo_args(&["--scenario", "loopback-only", "--on-host", "--no-pct"]);
    assert_eq!(code, 1);
    let x = verdict(&v, "xterm");
    assert_eq!(
        (x["status"].as_str(), x["layer"].as_str()),
        (Some("broken"), Some("service"))
    );
    assert_eq!(x["rule"], "host-upstream-loopback-only");
}

/// Every scenario with the host vantage: never a worse verdict than without it, and each break on one hop.
#[test]
fn host_vantage_pins_every_scenario_to_one_layer() {
    if !curl_present() {
        return;
    }
    let want: &[(&str, &str, &str)] = &[
        ("seed", "xterm", "caddy"),
        ("caddy-port", "vnc", "caddy"),
        ("service-down", "vscode", "service"),
        ("tunnel-down", "xterm", "tunnel"),
        ("wrong-service", "xterm", "caddy"),
        ("container-down", "xterm", "container"),
        ("caddy-down", "xterm", "caddy"),
        ("loopback-only", "xterm", "service"),
        ("port-and-loopback", "xterm", "service"),
        ("port-and-loopback", "vnc", "caddy"),
        ("route-wrong-and-down", "xterm", "caddy"),
        ("route-wrong-and-down", "vscode", "service"),
        ("container-down", "preview", "container"),
    ];
    for (scenario, service, layer) in want {
        let (code, v) = demo_args(&["--scenario", scenario, "--on-host", "--no-pct"]);
        assert_eq!(code, 1, "{scenario}");
        assert_eq!(
            verdict(&v, service)["layer"],
            *layer,
            "{scenario}: {}",
            verdict(&v, service)
        );
    }
}

/// The 2026 routing layout: `https://port-{port}-cmux-{vmid}.DOMAIN`, one generic Caddy rule that
/// takes the port from the hostname and sets the CORS headers itself.
#[test]
fn later_layout_is_diagnosed_like_the_seed_layout() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("later-layout");
    assert_eq!(code, 0, "{v:#}");
    // Detected from the Caddyfile's generic rule; the instance is the container's hostname.
    assert_eq!(v["url_template"], "https://port-{port}-{instance}.{domain}");
    assert_eq!(v["targets"][0]["routing"]["generation"], "2026");
    assert_eq!(v["targets"][0]["routing"]["instance"], "cmux-202");
    let x = &v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap()["url"];
    assert_eq!(x, "https://port-39383-cmux-202.example.test/sessions");
    // The generic rule is read from the Caddyfile: the port comes from the hostname.
    let routes = v["targets"][0]["routes"].as_array().unwrap();
    let xr = routes.iter().find(|r| r["service"] == "xterm").unwrap();
    assert_eq!(xr["upstream_host"], "cmux-202.lan");
    assert_eq!(xr["upstream_port"], 39383);

    let (code, v) = demo("later-service-down");
    assert_eq!(code, 1);
    assert_eq!(not_healthy(&v), vec![t("vscode", "broken", "service")]);
}

#[test]
fn color_always_paints_and_list_names_every_scenario() {
    if !curl_present() {
        return;
    }
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args(["demo", "--color", "always"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains('\u{1b}'));
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .args(["demo", "--list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let list = String::from_utf8(out.stdout).unwrap();
    for name in pvediag::lab::SCENARIOS {
        assert!(
            list.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{list}"
        );
    }
}

/// `demo --wait` goes through the same diagnosis path as the plain command: a healthy lab is
/// healthy on the first attempt.
#[test]
fn demo_wait_uses_the_shared_path() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo_args(&["--scenario", "healthy", "--wait", "5s"]);
    assert_eq!(code, 0, "{v:#}");
    assert_eq!(v["status"], "healthy");
    let (code, v) = demo_args(&["--scenario", "service-down", "--wait", "1s"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(v["status"], "broken");
}
