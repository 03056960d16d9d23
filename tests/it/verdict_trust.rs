//! Issue 10, through the real binary: verdicts an operator can act on blind. Every "Why" example of
//! the issue and the mixed-fault lab scenarios, pinned. The lab listens on loopback only.

use std::io::BufRead;

use assert_cmd::Command;
use serde_json::Value;

use crate::common::curl_present;

fn pvediag() -> Command {
    let mut c = Command::cargo_bin("pvediag").unwrap();
    // Tests never write a state directory (as root the default is /var/lib/pvediag).
    c.env_clear()
        .env("PVEDIAG_NO_STATE", "1")
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    c
}

/// `pvediag demo ARGS --format json`: (exit code, document).
fn demo_json(args: &[&str]) -> (i32, Value) {
    let out = pvediag()
        .arg("demo")
        .args(args)
        .args(["--format", "json", "--color", "never"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{args:?}: not JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

/// The verdict of `service` in target `vmid`.
fn verdict<'a>(v: &'a Value, vmid: u32, service: &str) -> &'a Value {
    let t = v["targets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["vmid"] == vmid)
        .unwrap_or_else(|| panic!("no target {vmid}"));
    &t["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == service)
        .unwrap_or_else(|| panic!("no service {service}"))["verdict"]
}

/// `status (layer)` or `status (a|b|c)` of a JSON verdict, like the table's cell.
fn cell(x: &Value) -> String {
    let layers: Vec<String> = match x["layer"].as_str() {
        Some(l) => vec![l.to_string()],
        None => x["candidates"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["layer"].as_str().unwrap().to_string())
            .collect(),
    };
    if layers.is_empty() {
        x["status"].as_str().unwrap().to_string()
    } else {
        format!("{} ({})", x["status"].as_str().unwrap(), layers.join("|"))
    }
}

/// A lab kept up by `pvediag demo --scenario NAME --serve`, and the command it prints.
struct Served {
    child: std::process::Child,
    args: Vec<String>,
}

impl Served {
    fn start(scenario: &str) -> Served {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_pvediag"))
            .args(["demo", "--serve", "--scenario", scenario])
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let command = lines
            .by_ref()
            .map(|l| l.unwrap())
            .find_map(|l| l.trim().strip_prefix("pvediag ").map(str::to_string))
            .expect("demo --serve prints the command");
        // Keep reading its stdout so it never blocks.
        std::thread::spawn(move || for _ in lines {});
        Served {
            child,
            args: command.split_whitespace().map(str::to_string).collect(),
        }
    }

    /// The printed command without `--caddyfile FILE`.
    fn without_caddyfile(&self) -> Vec<String> {
        let mut a = self.args.clone();
        if let Some(i) = a.iter().position(|x| x == "--caddyfile") {
            a.drain(i..i + 2);
        }
        a
    }

    fn value_of(&self, option: &str) -> String {
        let i = self.args.iter().position(|a| a == option).unwrap();
        self.args[i + 1].clone()
    }

    fn run(&self, args: &[String], extra: &[&str]) -> (i32, String) {
        let out = pvediag().args(args).args(extra).output().unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
        )
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// loopback-only without `--caddyfile`: less evidence, never a more confident answer. Broken (users
/// are affected), the hop not pinned, Caddy and the service both candidates — in every format.
#[test]
fn loopback_only_without_the_caddyfile_pins_nothing_in_any_format() {
    if !curl_present() {
        return;
    }
    let lab = Served::start("loopback-only");
    let args = lab.without_caddyfile();
    let (code, json) = lab.run(&args, &["--format", "json"]);
    assert_eq!(code, 1, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    let x = verdict(&v, 202, "xterm");
    assert_eq!(cell(x), "broken (caddy|service|container)", "{x}");
    assert_eq!(x["rule"], "gateway-error-service-ok");
    assert!(x["candidates"][0]["check"]
        .as_str()
        .unwrap()
        .contains("--caddyfile"));
    // Without a Caddyfile: how to find the line, never a line-number edit.
    let next = x["next_step"].as_str().unwrap();
    assert!(!next.contains("sed -i"), "{next}");
    assert!(
        next.contains("grep -n") && next.contains("/etc/caddy/Caddyfile.cmux"),
        "{next}"
    );

    let (code, table) = lab.run(&args, &["--color", "never"]);
    assert_eq!(code, 1);
    assert!(
        table.contains("broken (caddy|service|container)"),
        "{table}"
    );
    assert!(!table.contains("broken (caddy) "), "{table}");

    let (code, prom) = lab.run(&args, &["--format", "prometheus"]);
    assert_eq!(code, 1);
    assert!(
        prom.contains(r#"pvediag_verdict{vmid="202",service="xterm",status="broken",layer=""} 1"#),
        "{prom}"
    );
    for (rank, layer) in ["caddy", "service", "container"].iter().enumerate() {
        let line = format!(
            r#"pvediag_verdict_candidate{{vmid="202",service="xterm",layer="{layer}",rank="{}"}} 1"#,
            rank + 1
        );
        assert!(prom.contains(&line), "{line}\n{prom}");
    }
    assert!(prom.contains(r#"pvediag_exec_channel{vmid="202",status="healthy"} 1"#));

    let (code, junit) = lab.run(&args, &["--format", "junit"]);
    assert_eq!(code, 1);
    let doc = roxmltree::Document::parse(&junit).unwrap();
    let case = doc
        .descendants()
        .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("xterm"))
        .unwrap();
    let failure = case
        .children()
        .find(|n| n.has_tag_name("failure"))
        .expect("a failure, not an error");
    assert!(failure
        .attribute("message")
        .unwrap()
        .starts_with("broken (caddy|service|container)"));
}

/// With the lab's Caddyfile given as a relative path, the next step edits that file, by its real
/// path and line, not the host's default.
#[test]
fn next_step_names_the_caddyfile_really_read() {
    if !curl_present() {
        return;
    }
    let lab = Served::start("seed");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(lab.value_of("--caddyfile"), dir.path().join("Caddyfile")).unwrap();
    let mut args = lab.without_caddyfile();
    args.extend(["--caddyfile".into(), "./Caddyfile".into()]);
    let out = pvediag()
        .current_dir(dir.path())
        .args(&args)
        .args(["--format", "json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let x = verdict(&v, 202, "xterm");
    assert_eq!(cell(x), "broken (caddy)");
    let next = x["next_step"].as_str().unwrap();
    assert!(
        next.contains("sed -i '17s/:39376/:39383/' ./Caddyfile"),
        "{next}"
    );
    assert!(!next.contains("/etc/caddy/Caddyfile.cmux"), "{next}");
    let route = v["targets"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "xterm")
        .unwrap();
    assert_eq!(route["from"], "caddyfile");
}

/// caddy-down: the summary says cloudflared cannot reach Caddy; every public URL fails; the run
/// pages (exit 1) with status broken and both candidates, in the table too.
#[test]
fn caddy_down_pages_with_candidates() {
    if !curl_present() {
        return;
    }
    let out = pvediag()
        .args(["demo", "--scenario", "caddy-down", "--color", "never"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let s = String::from_utf8(out.stdout).unwrap();
    assert!(s.contains("broken (caddy|tunnel)"), "{s}");
    assert!(s.contains("candidates, most likely first"), "{s}");
    assert!(s.contains("exit 1"), "{s}");
}

/// The mixed-fault scenarios: each service's verdict (status and hop), and the exit code.
#[test]
fn mixed_fault_scenarios_are_pinned() {
    if !curl_present() {
        return;
    }
    type Want = &'static [(u32, &'static str, &'static str)];
    let cases: &[(&str, i32, Want)] = &[
        (
            "route-wrong-and-down",
            1,
            &[
                (202, "xterm", "broken (caddy)"),
                (202, "vscode", "broken (service)"),
            ],
        ),
        ("worker-hung", 1, &[(202, "worker", "broken (service)")]),
        (
            "two-vmids",
            1,
            &[
                (202, "xterm", "degraded (service)"),
                (203, "xterm", "broken (container|caddy|service)"),
                (203, "exec", "broken (container|caddy|service)"),
                (203, "preview", "skipped"),
                (203, "cdp", "inconclusive"),
                (203, "proxy", "inconclusive"),
                (203, "*", "broken (container|caddy|service)"),
            ],
        ),
        (
            "port-and-loopback",
            1,
            &[
                (202, "vnc", "broken (caddy)"),
                (202, "xterm", "broken (service|container|caddy)"),
            ],
        ),
        (
            "error-and-cors",
            1,
            &[
                (202, "vscode", "broken (service)"),
                (202, "xterm", "degraded (service)"),
            ],
        ),
        (
            "unauthorized-and-down",
            1,
            &[
                (202, "vscode", "broken (service|container|caddy)"),
                (202, "xterm", "healthy"),
                (202, "cdp", "inconclusive"),
                (202, "proxy", "inconclusive"),
            ],
        ),
        (
            "cdp-down-and-route",
            1,
            &[
                (202, "worker", "broken (caddy)"),
                (202, "cdp", "broken (service)"),
            ],
        ),
        (
            "preview-off-and-port",
            1,
            &[(202, "vnc", "broken (caddy)"), (202, "preview", "skipped")],
        ),
        (
            "container-down-caddy-ok",
            1,
            &[
                (202, "vscode", "broken (container|caddy|service)"),
                (202, "preview", "skipped"),
                (202, "cdp", "inconclusive"),
                (202, "proxy", "inconclusive"),
                (202, "*", "broken (container|caddy|service)"),
                (203, "vscode", "healthy"),
                (203, "cdp", "healthy"),
            ],
        ),
    ];
    for (scenario, code, want) in cases {
        let (got_code, v) = demo_json(&["--scenario", scenario, "--timeout", "3s"]);
        assert_eq!(got_code, *code, "{scenario}");
        for (vmid, service, cell_want) in want.iter().filter(|w| w.1 != "*") {
            let x = verdict(&v, *vmid, service);
            assert_eq!(cell(x), *cell_want, "{scenario} {vmid}/{service}: {x}");
        }
        // Every target's other services are healthy unless listed (`*`: every other one of the VMID).
        for t in v["targets"].as_array().unwrap() {
            for s in t["services"].as_array().unwrap() {
                let listed = want
                    .iter()
                    .any(|(vm, sv, _)| t["vmid"] == *vm && s["name"] == *sv);
                let others = want
                    .iter()
                    .find(|(vm, sv, _)| t["vmid"] == *vm && *sv == "*")
                    .map_or("healthy", |w| w.2);
                if !listed {
                    assert_eq!(
                        cell(&s["verdict"]),
                        others,
                        "{scenario} {}/{}: {}",
                        t["vmid"],
                        s["name"],
                        s["verdict"]
                    );
                }
            }
        }
    }
}

/// With the host vantage the mixed faults land on one hop each.
#[test]
fn mixed_faults_from_the_host_pin_each_hop() {
    if !curl_present() {
        return;
    }
    let cases: &[(&str, u32, &str, &str)] = &[
        ("two-vmids", 203, "xterm", "broken (container)"),
        ("two-vmids", 203, "preview", "broken (container)"),
        ("two-vmids", 202, "xterm", "degraded (service)"),
        ("container-down-caddy-ok", 202, "cdp", "broken (container)"),
        ("port-and-loopback", 202, "xterm", "broken (service)"),
    ];
    for (scenario, vmid, service, want) in cases {
        let (code, v) = demo_json(&["--scenario", scenario, "--on-host", "--no-pct"]);
        assert_eq!(code, 1, "{scenario}");
        let x = verdict(&v, *vmid, service);
        assert_eq!(cell(x), *want, "{scenario} {vmid}/{service}: {x}");
    }
}

/// A wrong `--domain` or `--connect-to` does not read as a tunnel outage alone: the candidates name
/// pvediag's own input with the value used, and no next step says the literal word DOMAIN.
#[test]
fn wrong_domain_or_connect_to_is_a_candidate_with_its_value() {
    if !curl_present() {
        return;
    }
    let lab = Served::start("healthy");
    let swap = |option: &str, value: &str| -> Vec<String> {
        let mut a = lab.args.clone();
        let i = a.iter().position(|x| x == option).unwrap();
        a[i + 1] = value.to_string();
        a
    };
    for (args, rule, value) in [
        (
            swap("--connect-to", "127.0.0.1:1"),
            "all-public-refused",
            "127.0.0.1:1",
        ),
        (
            swap("--domain", "wrong.test"),
            "all-public-tls",
            "wrong.test",
        ),
    ] {
        let (code, json) = lab.run(&args, &["--format", "json"]);
        assert_eq!(code, 1, "{json}");
        let v: Value = serde_json::from_str(&json).unwrap();
        let x = verdict(&v, 202, "xterm");
        assert_eq!(x["rule"], rule, "{x}");
        assert_eq!(cell(x), "broken (tunnel|input)", "{x}");
        let text = x.to_string();
        assert!(text.contains(value), "{value}: {text}");
        assert!(!text.contains("DOMAIN"), "{text}");
        assert!(
            x["evidence"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e.as_str().unwrap().contains("dialled at")),
            "{text}"
        );
    }
}

/// `demo --services xterm`: the same verdict as the full run (Caddy, not the container), the exec
/// channel still used, and no bogus lint findings from a narrowed catalog.
#[test]
fn services_selects_what_is_shown_not_what_is_known() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo_json(&["--services", "xterm"]);
    assert_eq!(code, 1);
    let services = v["targets"][0]["services"].as_array().unwrap();
    assert_eq!(services.len(), 1);
    let x = verdict(&v, 202, "xterm");
    assert_eq!(cell(x), "broken (caddy)", "{x}");
    assert!(
        !x["next_step"].as_str().unwrap().contains("pct start"),
        "{x}"
    );
    assert_eq!(v["targets"][0]["exec"]["verdict"]["status"], "healthy");
    let findings = v["caddy"]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert!(!findings[0]["message"]
        .as_str()
        .unwrap()
        .contains("no catalog service uses port"));
}

/// The operator's own limits are named as such: a deadline too short to run anything is a usage
/// error; a deadline shorter than the probes' timeout is a warning up front, and the checks it cuts
/// blame no hop ("not routed" or "no answer within 1 ms" are gone).
#[test]
fn a_deadline_names_itself() {
    for d in ["1ms", "20ms"] {
        let out = pvediag().args(["demo", "--deadline", d]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{d}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(&format!("--deadline {d}: too short")), "{err}");
    }
    if !curl_present() {
        return;
    }
    let out = pvediag()
        .args([
            "demo",
            "--scenario",
            "healthy",
            "--delay-ms",
            "400",
            "--deadline",
            "600ms",
            "--format",
            "json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: --deadline 600 ms is shorter than --timeout"),
        "{err}"
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    for s in v["targets"][0]["services"].as_array().unwrap() {
        let x = &s["verdict"];
        assert_eq!(x["rule"], "cut-by-deadline", "{}: {x}", s["name"]);
        assert_eq!(cell(x), "inconclusive", "{}: {x}", s["name"]);
        assert!(
            !x["summary"].as_str().unwrap().contains("not routed"),
            "{x}"
        );
    }
    assert!(v["targets"][0]["exec"]["verdict"]["summary"]
        .as_str()
        .unwrap()
        .contains("deadline"));
}

/// `--connect-to` redirects the public URLs only: an `--exec-url` is dialled as given (here a name
/// that resolves nowhere, so the exec call fails at DNS while the public probes reach the lab).
#[test]
fn connect_to_does_not_redirect_the_exec_url() {
    if !curl_present() {
        return;
    }
    let lab = Served::start("healthy");
    let mut args = lab.args.clone();
    args.extend(["--exec-url".into(), "https://exec-202.example.test".into()]);
    let (_, json) = lab.run(&args, &["--format", "json"]);
    let v: Value = serde_json::from_str(&json).unwrap();
    let run = &v["targets"][0]["exec"]["run"];
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["kind"], "dns", "{run}");
    assert_eq!(cell(verdict(&v, 202, "xterm")), "healthy");
}

/// A diagnosis given a Caddyfile with no cmux route says so (as `pvediag lint` does) and does not
/// take "no route" from it as evidence.
#[test]
fn a_caddyfile_without_cmux_routes_is_a_finding_in_the_diagnosis() {
    if !curl_present() {
        return;
    }
    let lab = Served::start("seed");
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("Caddyfile");
    std::fs::write(&empty, "").unwrap();
    let mut args = lab.without_caddyfile();
    args.extend(["--caddyfile".into(), empty.display().to_string()]);
    let (code, json) = lab.run(&args, &["--format", "json"]);
    assert_eq!(code, 1, "{json}");
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["caddy"]["findings"][0]["kind"], "no_cmux_route",
        "{}",
        v["caddy"]
    );
    // Not evidence: the wrong file does not pin Caddy ("no route") on the seed's xterm.
    let x = verdict(&v, 202, "xterm");
    assert_eq!(cell(x), "broken (caddy|service|container)", "{x}");
}
