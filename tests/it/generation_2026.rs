//! The 2026 routing generation end to end: every `demo --layout 2026` scenario with no `--catalog`
//! and no `--url-template` (the generation is detected and named), the printed `demo --serve`
//! command, instance hostnames (`pvediag <hostname>` = `pvediag <vmid>`), `--all` on a 2026 fleet,
//! and `--catalog`.

use assert_cmd::Command;
use serde_json::Value;

use crate::common::curl_present;
use crate::common::fleet_lab::*;
use pvediag::lab;

fn demo_2026(extra: &[&str]) -> (i32, Value, String) {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .args([
            "demo", "--layout", "2026", "--format", "json", "--color", "never",
        ])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let v: Value = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("{extra:?}: not JSON ({e}):\n{stdout}\n{stderr}"));
    (out.status.code().unwrap(), v, stderr)
}

/// (service, status, layer or "-", rule) of every service of target `i` that is not healthy.
fn not_healthy(v: &Value, i: usize) -> Vec<(String, String, String, String)> {
    v["targets"][i]["services"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["verdict"]["status"] != "healthy")
        .map(|s| {
            let v = &s["verdict"];
            (
                s["name"].as_str().unwrap().to_string(),
                v["status"].as_str().unwrap().to_string(),
                v["layer"].as_str().unwrap_or("-").to_string(),
                v["rule"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn findings(v: &Value) -> Vec<String> {
    v["caddy"]["findings"]
        .as_array()
        .map(|f| {
            f.iter()
                .map(|x| x["kind"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// What every 2026 scenario must give: exit code, the rules of the services that are not healthy
/// (service -> (status, layer, rule)), and the lint findings on Caddy's configuration.
#[test]
fn every_2026_scenario_is_detected_and_diagnosed() {
    if !curl_present() {
        return;
    }
    type Want = (
        &'static str,
        i32,
        &'static [(&'static str, &'static str, &'static str, &'static str)],
        &'static [&'static str],
    );
    // From outside a stopped container and routes that all miss it look alike: broken, the hop
    // not pinned (container the first candidate; the host vantage pins it).
    let container_down: &[(&str, &str, &str, &str)] = &[
        ("preview", "skipped", "-", "optional-not-running"),
        ("exec", "broken", "-", "container-unreachable"),
        ("worker", "broken", "-", "container-unreachable"),
        ("worker-daemon", "broken", "-", "container-unreachable"),
        ("vscode", "broken", "-", "container-unreachable"),
        ("proxy", "inconclusive", "-", "not-checkable"),
        ("vnc", "broken", "-", "container-unreachable"),
        ("cdp", "inconclusive", "-", "not-checkable"),
        ("xterm", "broken", "-", "container-unreachable"),
    ];
    let other_host: &[(&str, &str, &str, &str)] = &[
        ("preview", "skipped", "-", "optional-not-running"),
        ("exec", "broken", "caddy", "caddy-dials-other-host"),
        ("worker", "broken", "caddy", "caddy-dials-other-host"),
        ("worker-daemon", "broken", "caddy", "caddy-dials-other-host"),
        ("vscode", "broken", "caddy", "caddy-dials-other-host"),
        ("proxy", "inconclusive", "-", "not-checkable"),
        ("vnc", "broken", "caddy", "caddy-dials-other-host"),
        ("cdp", "inconclusive", "-", "not-checkable"),
        ("xterm", "broken", "caddy", "caddy-dials-other-host"),
    ];
    const PF: &str = "caddy-preflight-unanswered";
    const OPTIONS_UNANSWERED: &[(&str, &str, &str, &str)] = &[
        ("preview", "degraded", "caddy", PF),
        ("exec", "degraded", "caddy", PF),
        ("worker", "degraded", "caddy", PF),
        ("worker-daemon", "degraded", "caddy", PF),
        ("vscode", "degraded", "caddy", PF),
        ("vnc", "degraded", "caddy", PF),
        ("xterm", "degraded", "caddy", PF),
    ];
    let cases: Vec<Want> = vec![
        ("healthy", 0, &[], &[]),
        (
            "service-down",
            1,
            &[("vscode", "broken", "service", "service-down")],
            &[],
        ),
        (
            "exec-unauthorized",
            3,
            &[
                ("proxy", "inconclusive", "-", "not-checkable"),
                ("cdp", "inconclusive", "-", "not-checkable"),
            ],
            &[],
        ),
        ("container-down", 1, container_down, &[]),
        (
            "preview-off",
            0,
            &[("preview", "skipped", "-", "optional-not-running")],
            &[],
        ),
        (
            "loopback-only",
            1,
            &[("xterm", "broken", "-", "route-correct-upstream-unreachable")],
            &[],
        ),
        (
            "generic-regex",
            1,
            &[("preview", "broken", "caddy", "caddy-no-route")],
            &["generic_regex"],
        ),
        // Caddy's route, read from the Caddyfile, dials another name than the container's.
        ("upstream-suffix", 1, other_host, &["generic_upstream"]),
        (
            "cors-doubled",
            1,
            &[("xterm", "broken", "caddy", "header-doubled-by-proxy")],
            &["generic_cors"],
        ),
        // Every probe answers, but the run's one OPTIONS preflight got Caddy's catch-all: every
        // cross-origin request of the web app fails, so every routed service is degraded, Caddy
        // pinned (exit 1); the missing handler is also named from the Caddyfile.
        (
            "options-unanswered",
            1,
            OPTIONS_UNANSWERED,
            &["generic_options", "preflight_unanswered"],
        ),
        (
            "worker-daemon",
            1,
            &[("worker", "broken", "caddy", "caddy-route-to-wrong-service")],
            &[],
        ),
        ("hostname-unresolved", 1, container_down, &[]),
    ];
    for (name, code, bad, lint) in cases {
        let (got, v, err) = demo_2026(&["--scenario", name]);
        let want_bad: Vec<(String, String, String, String)> = bad
            .iter()
            .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
            .collect();
        assert_eq!(not_healthy(&v, 0), want_bad, "{name}\n{err}");
        assert_eq!(got, code, "{name}");
        assert_eq!(findings(&v), *lint, "{name}");
        let r = &v["targets"][0]["routing"];
        // The report names the generation and why; the instance is the container's hostname.
        let want_routing = if name == "worker-daemon" {
            "seed"
        } else {
            "2026"
        };
        assert_eq!(r["generation"], want_routing, "{name}: {r}");
        assert_eq!(r["container"], "2026", "{name}: {r}");
        assert!(r["why"].as_str().unwrap().contains("Caddy"), "{name}: {r}");
        assert_eq!(r["instance"], lab::pvelxc_hostname(202).as_str(), "{name}");
    }
    // The tunnel and Caddy being down: every routed service points there.
    let (code, v, _) = demo_2026(&["--scenario", "tunnel-down"]);
    assert_eq!(code, 1);
    for (svc, status, layer, _) in not_healthy(&v, 0) {
        assert!(
            (status == "broken" && layer == "tunnel") || status == "inconclusive",
            "{svc}: {status} {layer}"
        );
    }
    // Caddy down is an outage proven from outside: broken (exit 1), the hop not pinned.
    let (code, v, _) = demo_2026(&["--scenario", "caddy-down"]);
    assert_eq!(code, 1);
    for (svc, status, layer, rule) in not_healthy(&v, 0) {
        assert!(
            (status == "broken" && layer == "-" && rule == "origin-unreachable")
                || status == "inconclusive"
                || status == "skipped",
            "{svc}: {status} {layer} {rule}"
        );
    }
}

#[test]
fn the_2026_urls_use_the_hostname_and_the_host_vantage_dials_it() {
    if !curl_present() {
        return;
    }
    let host = lab::pvelxc_hostname(202);
    let (code, v, _) = demo_2026(&["--scenario", "upstream-suffix", "--on-host", "--no-pct"]);
    assert_eq!(code, 1);
    let t = &v["targets"][0];
    let x = t["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap();
    assert_eq!(
        x["url"],
        format!("https://port-39383-{host}.example.test/sessions")
    );
    // From the host: Caddy 502 while {instance}.lan answers -> Caddy's rule, not the container.
    assert_eq!(x["verdict"]["layer"], "caddy", "{x}");
    let hs = t["host"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap();
    assert_eq!(
        hs["upstream_url"],
        format!("http://{host}.lan:39383/sessions")
    );
    // The generic rule's line is named: the route read from the Caddyfile.
    let xr = t["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "xterm")
        .unwrap();
    assert_eq!(xr["upstream_host"], format!("{host}.local"));
    assert!(xr["source"].as_str().unwrap().ends_with(":13"), "{xr}");
}

/// A host in transition: one Caddyfile with both kinds of rules, one container of each generation.
#[test]
fn a_mixed_host_is_diagnosed_per_target() {
    if !curl_present() {
        return;
    }
    let (code, v, _) = demo_2026(&["--scenario", "mixed-host"]);
    assert_eq!(code, 0, "{v:#}");
    let t = v["targets"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    let by_vmid = |id: u64| t.iter().find(|t| t["vmid"] == id).unwrap();
    assert_eq!(by_vmid(202)["routing"]["generation"], "2026");
    assert_eq!(by_vmid(203)["routing"]["generation"], "seed");
    let names = |t: &Value| -> Vec<String> {
        t["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(names(by_vmid(202)).contains(&"worker-daemon".to_string()));
    assert!(!names(by_vmid(203)).contains(&"worker-daemon".to_string()));
}

/// `demo --serve` prints a command (with the lab's PVE API in the environment and no template or
/// catalog) that diagnoses the 2026 lab exactly as `demo` does.
#[test]
fn the_printed_serve_command_diagnoses_2026_scenarios() {
    if !curl_present() {
        return;
    }
    for scenario in ["cors-doubled", "worker-daemon", "service-down"] {
        // The lab is killed when `_lab` is dropped: also when an assertion below fails.
        let (_lab, command) = serve_lab("2026", scenario);
        assert!(!command.contains("--url-template"), "{command}");
        assert!(!command.contains("--catalog"), "{command}");
        assert!(
            !command.contains(lab::pve::TOKEN),
            "the token is read from a file: {command}"
        );
        // Typed by hand: a shell reads the token file; `pvediag` is this build.
        let command = command.replacen(
            "pvediag ",
            &format!("{} ", env!("CARGO_BIN_EXE_pvediag")),
            1,
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("{command} --format json")])
            .env_clear()
            // Tests never write a state directory (as root the default is /var/lib/pvediag).
            .env("PVEDIAG_NO_STATE", "1")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{scenario}: {e}: {}", String::from_utf8_lossy(&out.stderr))
        });
        let (code, via_demo, _) = demo_2026(&["--scenario", scenario]);
        assert_eq!(out.status.code(), Some(code), "{scenario}");
        assert_eq!(not_healthy(&v, 0), not_healthy(&via_demo, 0), "{scenario}");
        assert_eq!(
            v["targets"][0]["routing"]["generation"],
            via_demo["targets"][0]["routing"]["generation"]
        );
        assert_eq!(
            v["targets"][0]["routing"]["instance"],
            lab::pvelxc_hostname(202).as_str()
        );
    }
}

/// A 2026 fleet behind the lab's PVE API: `pvediag <hostname>` and `pvediag <vmid>` give the same
/// result, `--all` finds the hostnames, and without any Caddy configuration the generation is
/// detected from what answers.
#[test]
fn hostname_and_vmid_targets_give_the_same_result() {
    if !curl_present() {
        return;
    }
    let rt = runtime();
    let mut cfg = lab::fleet_2026(2, 202, None, lab::Delays::default());
    cfg.containers[1]
        .services
        .retain(|s| s.kind != lab::ServiceKind::Xterm);
    let lab = start_lab(&rt, cfg);
    let pve = lab.pve_url.clone().unwrap();
    let run = |targets: &[&str]| -> (i32, Value) {
        let out = pvediag()
            .env("PVE_API_URL", &pve)
            .env("PVE_API_TOKEN", lab::pve::TOKEN)
            .args(lab_args(&lab))
            .args(targets)
            .args(["--format", "json"])
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{targets:?}: {e}: {}", String::from_utf8_lossy(&out.stderr))
        });
        (out.status.code().unwrap(), v)
    };
    let h203 = lab::pvelxc_hostname(203);
    let (c1, by_vmid) = run(&["203"]);
    let (c2, by_name) = run(&[&h203]);
    assert_eq!((c1, c2), (1, 1));
    let strip = |v: &Value| {
        let t = &v["targets"][0];
        (
            t["vmid"].clone(),
            t["routing"].clone(),
            not_healthy(v, 0),
            t["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s["url"].clone())
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(strip(&by_vmid), strip(&by_name));
    assert_eq!(by_vmid["targets"][0]["routing"]["generation"], "2026");
    // Told by what answered: the seed URL (the default guess) got Caddy's 2026 catch-all.
    let why = by_vmid["targets"][0]["routing"]["why"].as_str().unwrap();
    assert!(why.contains("with its 2026 catch-all"), "{why}");
    assert_eq!(
        not_healthy(&by_vmid, 0),
        vec![(
            "xterm".to_string(),
            "broken".to_string(),
            "service".to_string(),
            "service-down".to_string()
        )]
    );
    // --all: both containers, by their hostnames.
    let (code, all) = run(&["--all"]);
    assert_eq!(code, 1);
    let got: Vec<(u64, String)> = all["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["vmid"].as_u64().unwrap(),
                t["routing"]["instance"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(got, vec![(202, lab::pvelxc_hostname(202)), (203, h203)]);
    // --catalog seed forces the seed generation (and its URLs, which this host does not route).
    let (code, seed) = run(&["202", "--catalog", "seed"]);
    assert_eq!(code, 1);
    assert_eq!(seed["targets"][0]["routing"]["generation"], "seed");
    assert_eq!(seed["targets"][0]["routing"]["why"], "--catalog seed");
}

#[test]
fn catalog_flag_and_lint_on_2026_files() {
    let out = pvediag()
        .args(["202", "--domain", "x.test", "--catalog", "2027"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("seed or 2026"));
    // lint: the 2026 Caddyfile is clean against the 2026 catalog it implies.
    let later = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/Caddyfile.later"
    );
    let out = pvediag()
        .args(["lint", "--caddyfile", later])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("Caddyfile.cmux");
    std::fs::write(
        &broken,
        lab::caddy::caddyfile_2026(&lab::GenericRule {
            strip_upstream_cors: false,
            answer_options: false,
            ..Default::default()
        }),
    )
    .unwrap();
    let script = dir.path().join("setup.sh");
    std::fs::write(&script, "WORKER_PORT=39377\nXTERM_PORT=39383\n").unwrap();
    let out = pvediag()
        .args(["lint", "--format", "json", "--caddyfile"])
        .arg(&broken)
        .arg("--setup-script")
        .arg(&script)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        ["generic_cors", "generic_options", "script_port_mismatch"],
        "{v:#}"
    );
}

/// Issue 11: Caddy not answering OPTIONS is a verdict, not only a finding: exit 1, every routed
/// service degraded with Caddy pinned, the next step naming the Caddyfile's `@options` handler.
#[test]
fn options_unanswered_is_a_verdict_naming_the_options_handler() {
    if !curl_present() {
        return;
    }
    let (code, v, err) = demo_2026(&["--scenario", "options-unanswered"]);
    assert_eq!(code, 1, "{err}");
    let xterm = v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap();
    let verdict = &xterm["verdict"];
    assert_eq!(verdict["rule"], "caddy-preflight-unanswered");
    assert_eq!(verdict["status"], "degraded");
    assert_eq!(verdict["layer"], "caddy");
    let next = verdict["next_step"].as_str().unwrap();
    assert!(next.contains("@options method OPTIONS"), "{next}");
    assert!(next.contains("Caddyfile.cmux"), "{next}");
    assert!(
        verdict["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("CORS preflight OPTIONS")),
        "{verdict}"
    );
    // The fixed layout answers it: nothing degraded.
    let (code, _, err) = demo_2026(&["--scenario", "healthy"]);
    assert_eq!(code, 0, "{err}");
}

/// (generation, container, [(service, status, layer, candidates, rule)]) of every target.
type Known = Vec<(
    String,
    String,
    Vec<(String, String, String, String, String)>,
)>;

fn what_is_known(v: &Value) -> Known {
    v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let services = t["services"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let v = &s["verdict"];
                    (
                        s["name"].as_str().unwrap().to_string(),
                        v["status"].to_string(),
                        v["layer"].to_string(),
                        v["candidates"].to_string(),
                        v["rule"].to_string(),
                    )
                })
                .collect();
            (
                t["routing"]["generation"].to_string(),
                t["routing"]["container"].to_string(),
                services,
            )
        })
        .collect()
}

/// Without `--catalog` or Caddy's configuration, each target's probes are made with a guess (the
/// default, or its last run's generation) and settle it. The guess changes what it costs, never
/// what is known: with a guess of seed and a guess of 2026, every scenario of both layouts gives
/// the same exit code, generations and verdicts.
#[test]
fn the_guess_changes_the_cost_not_the_verdicts() {
    if !curl_present() {
        return;
    }
    let cases: &[(&str, &[&str])] = &[
        (
            "seed",
            &[
                "healthy",
                "seed",
                "service-down",
                "container-down",
                "tunnel-down",
                "caddy-down",
                "exec-unauthorized",
            ],
        ),
        (
            "2026",
            &[
                "healthy",
                "service-down",
                "container-down",
                "tunnel-down",
                "worker-daemon",
                "mixed-host",
                "exec-unauthorized",
            ],
        ),
    ];
    for (layout, scenarios) in cases {
        for scenario in *scenarios {
            let (_lab, command) = serve_lab(layout, scenario);
            let command = command.replacen(
                "pvediag ",
                &format!("{} ", env!("CARGO_BIN_EXE_pvediag")),
                1,
            );
            assert!(!command.contains("--catalog"), "{command}");
            // Without Caddy's configuration: nothing but the probes tells the generation.
            let command = match command.split_once(" --caddyfile ") {
                Some((a, b)) => format!("{a} {}", b.split_once(' ').map_or("", |x| x.1)),
                None => command,
            };
            let state = tempfile::tempdir().unwrap();
            let run = |extra: &str, no_state: bool| {
                let mut c = std::process::Command::new("bash");
                c.args([
                    "-c",
                    &format!("{command} --format json --timeout 3s {extra}"),
                ])
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default());
                if no_state {
                    c.env("PVEDIAG_NO_STATE", "1");
                }
                let out = c.output().unwrap();
                let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
                    panic!(
                        "{layout} {scenario}: {e}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )
                });
                (out.status.code(), v)
            };
            // The default guess (seed), then the last run's (2026): a run that named 2026
            // leaves it in the state directory. One of the two guesses is wrong in each layout.
            let (code_a, a) = run("", true);
            let dir = state.path().display().to_string();
            run(&format!("--catalog 2026 --state-dir {dir}"), false);
            let (code_b, b) = run(&format!("--state-dir {dir}"), false);
            if *scenario == "healthy" {
                // The two runs took different paths: the right guess is confirmed by the probes,
                // the wrong one refuted (and the 2026 form reached in its own probes).
                let why = |v: &Value| {
                    v["targets"][0]["routing"]["why"]
                        .as_str()
                        .unwrap()
                        .to_string()
                };
                let (wa, wb) = (why(&a), why(&b));
                assert_ne!(wa, wb, "{layout}: the state's guess was not used");
                let (right, wrong) = if *layout == "seed" {
                    (&wa, &wb)
                } else {
                    (&wb, &wa)
                };
                assert!(right.starts_with("execd answered at the"), "{right}");
                assert!(right.contains(", and the "), "{right}");
                assert!(!wrong.contains(", and the "), "{wrong}");
            }
            assert_eq!(code_a, code_b, "{layout} {scenario}");
            assert_eq!(
                what_is_known(&a),
                what_is_known(&b),
                "{layout} {scenario}:\n{a:#}\n{b:#}"
            );
        }
    }
}

/// A child process killed when dropped (also when an assertion fails).
struct Killed(std::process::Child);

/// `pvediag demo --serve --layout LAYOUT --scenario SCENARIO`: the running lab and the command it
/// prints to diagnose it by hand.
fn serve_lab(layout: &str, scenario: &str) -> (Killed, String) {
    use std::io::BufRead;
    let mut child = Killed(
        std::process::Command::new(env!("CARGO_BIN_EXE_pvediag"))
            .args([
                "demo",
                "--serve",
                "--layout",
                layout,
                "--scenario",
                scenario,
            ])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut lines = std::io::BufReader::new(child.0.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok);
    let command = lines
        .by_ref()
        .skip_while(|l| !l.starts_with("diagnose it with:"))
        .nth(1)
        .expect("demo --serve prints the command");
    // The rest of what the lab prints is read (and dropped) until it is killed.
    std::thread::spawn(move || lines.for_each(drop));
    (child, command.trim().to_string())
}

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
