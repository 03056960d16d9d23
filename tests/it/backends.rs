//! Behind the fronts (issue 14): back ends and systemd units, in the one exec round trip.
//! Through the binary against the lab (`demo --scenario`), and the generated command under real
//! bash (banner read without curl, systemctl's argv, a systemctl that hangs).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pvediag::catalog::{Catalog, Service};
use pvediag::probe::backend::{self, BackendRecord};
use pvediag::probe::internal::build_command;

use crate::bash_fallback::path_without_curl;
use crate::common::curl_present;
use crate::demo_scenarios::{demo, demo_args, not_healthy, t, verdict};

fn text(v: &serde_json::Value) -> String {
    v.to_string()
}

#[test]
fn vnc_server_down_names_the_vnc_server_port_and_unit() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("vnc-server-down");
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(not_healthy(&v), vec![t("vnc", "broken", "service")]);
    let x = verdict(&v, "vnc");
    assert_eq!(x["rule"], "backend-down");
    let summary = x["summary"].as_str().unwrap();
    for want in ["5901", "cmux-tigervnc", "restarted 5 times"] {
        assert!(summary.contains(want), "{want}: {summary}");
    }
    assert!(x["next_step"]
        .as_str()
        .unwrap()
        .contains("systemctl status cmux-tigervnc"));
    // The journal was read for the failing service's units (the front's and its back end's), and
    // only for them (every lab unit has journal lines: a running one its start).
    let units = v["targets"][0]["inside"]["systemd"]["units"]
        .as_array()
        .unwrap();
    for u in units {
        let id = u["id"].as_str().unwrap();
        let has_journal = u.get("journal").is_some();
        let vnc_unit = id == "cmux-tigervnc.service" || id == "cmux-vnc-proxy.service";
        assert_eq!(has_journal, vnc_unit, "{id}: {u}");
    }
    let back = &v["targets"][0]["inside"]["backends"];
    assert!(text(back).contains(r#""failure":"refused""#), "{back}");
}

#[test]
fn chrome_down_names_devtools_and_the_lock_file() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("chrome-down");
    assert_eq!(code, 1);
    assert_eq!(not_healthy(&v), vec![t("cdp", "broken", "service")]);
    let x = verdict(&v, "cdp");
    assert_eq!(x["rule"], "backend-down");
    let summary = x["summary"].as_str().unwrap();
    assert!(
        summary.contains("39382") && summary.contains("cmux-devtools"),
        "{summary}"
    );
    assert!(summary.contains("exit status 21"), "{summary}");
    let next = x["next_step"].as_str().unwrap();
    assert!(
        next.contains("systemctl status cmux-devtools") && next.contains("SingletonLock"),
        "{next}"
    );
}

#[test]
fn crash_loop_names_the_restart_count() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("crash-loop");
    assert_eq!(code, 1);
    assert_eq!(not_healthy(&v), vec![t("xterm", "degraded", "service")]);
    let x = verdict(&v, "xterm");
    assert_eq!(x["rule"], "unit-crash-looping");
    assert!(
        x["summary"]
            .as_str()
            .unwrap()
            .contains("restarted 17 times"),
        "{x}"
    );
}

#[test]
fn healthy_lab_checks_the_back_ends_and_reads_no_journal() {
    if !curl_present() {
        return;
    }
    let (code, v) = demo("healthy");
    assert_eq!(code, 0, "{v:#}");
    let inside = &v["targets"][0]["inside"];
    let backs = inside["backends"].as_array().unwrap();
    assert_eq!(backs.len(), 2, "{inside:#}");
    assert!(
        text(inside).contains(r#""line":"RFB 003.008""#),
        "{inside:#}"
    );
    let units = inside["systemd"]["units"].as_array().unwrap();
    assert!(units.len() >= 10, "{inside:#}");
    for u in units {
        assert_eq!(u["active_state"], "active", "{u}");
        assert!(u.get("journal").is_none(), "{u}");
    }
    for s in ["vnc", "cdp"] {
        let ev = text(&verdict(&v, s)["evidence"]);
        assert!(ev.contains("answers as itself"), "{s}: {ev}");
    }
}

/// The same faults in the 2026 generation (pvelxc hostnames, the generic Caddy rule, the 2026
/// catalog with its back ends).
#[test]
fn the_2026_layout_names_the_same_back_ends() {
    if !curl_present() {
        return;
    }
    for (scenario, service, rule, want) in [
        ("vnc-server-down", "vnc", "backend-down", "cmux-tigervnc"),
        ("chrome-down", "cdp", "backend-down", "cmux-devtools"),
        (
            "crash-loop",
            "xterm",
            "unit-crash-looping",
            "restarted 17 times",
        ),
    ] {
        let (code, v) = demo_args(&["--layout", "2026", "--scenario", scenario]);
        assert_eq!(code, 1, "{scenario}: {v:#}");
        let x = verdict(&v, service);
        assert_eq!(x["rule"], rule, "{scenario}: {x}");
        assert!(
            x["summary"].as_str().unwrap().contains(want),
            "{scenario}: {x}"
        );
        assert_eq!(
            not_healthy(&v).len(),
            1,
            "{scenario}: {:?}",
            not_healthy(&v)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The command under real bash

fn catalog(front_port: u16, back_port: u16, units: (&str, &str, &str)) -> Catalog {
    let json = serde_json::json!({
        "name": "vnc",
        "unit": units.0,
        "port": front_port,
        "probe": { "path": "/vnc.html" },
        "healthy": { "status": [200] },
        "backend": {
            "description": "a VNC server",
            "port": back_port,
            "unit": units.1,
            "needs": [units.2],
            "check": { "banner": "RFB 003." }
        }
    });
    Catalog::from_sources("t", &[("vnc.json".into(), json.to_string())]).unwrap()
}

fn run(cmd: &str, path: &str, cwd: &Path) -> (Vec<BackendRecord>, Duration, String) {
    let start = Instant::now();
    let out = Command::new("/bin/bash")
        .arg("-c")
        .arg(cmd)
        .env_clear()
        .env("PATH", path)
        .current_dir(cwd)
        .output()
        .unwrap();
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let recs = stdout
        .lines()
        .filter_map(|l| backend::parse_line(l, "feed"))
        .collect();
    (recs, took, stdout)
}

fn executable(dir: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = dir.join(name);
    std::fs::write(&p, script).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Without curl (the `/dev/tcp` fallback) the banner is read all the same; without systemctl one
/// record says so.
#[test]
fn banner_is_read_without_curl_and_missing_systemd_is_said_once() {
    let Some(bin) = path_without_curl() else {
        return;
    };
    let vnc = TcpListener::bind("127.0.0.1:0").unwrap();
    let back_port = vnc.local_addr().unwrap().port();
    let greeter = std::thread::spawn(move || {
        let (mut c, _) = vnc.accept().unwrap();
        c.write_all(b"RFB 003.008\n").unwrap();
        let mut b = [0u8; 12];
        let _ = c.read(&mut b);
    });
    // The front: bound, not listening (refused).
    let front = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let front_port = front.local_addr().unwrap().port();
    drop(front);
    let c = catalog(
        front_port,
        back_port,
        ("vnc-front", "vnc-back", "x-display"),
    );
    let svcs: Vec<&Service> = c.services.iter().collect();
    let cmd = build_command(&svcs, "feed", Duration::from_secs(3));
    let cwd = tempfile::tempdir().unwrap();
    let (recs, _, out) = run(&cmd, &bin.path().display().to_string(), cwd.path());
    greeter.join().unwrap();
    assert!(
        recs.contains(&BackendRecord::Banner {
            service: "vnc".into(),
            rc: 0,
            text: "RFB 003.008".into()
        }),
        "{out}"
    );
    let absent = recs
        .iter()
        .filter(|r| **r == BackendRecord::SystemdAbsent)
        .count();
    assert_eq!(absent, 1, "{out}");

    // Nothing listens on the back end's port: refused.
    let (recs, _, out) = run(&cmd, &bin.path().display().to_string(), cwd.path());
    assert!(
        recs.iter()
            .any(|r| matches!(r, BackendRecord::Banner { rc: 7, .. })),
        "{out}"
    );
}

/// systemctl gets exactly the catalog's units, once, as separate arguments; a systemctl that
/// hangs costs at most the probe timeout and is said so.
#[test]
fn one_systemctl_with_the_catalog_units_and_a_hang_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let rec = dir.path().join("rec");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&rec).unwrap();
    executable(
        &bin,
        "systemctl",
        "#!/bin/bash\nprintf '%s\\0' \"$@\" > \"$PWD/argv.$$\"\nprintf 'Id=vnc-front.service\\nActiveState=active\\nSubState=running\\nNRestarts=0\\n'\n",
    );
    let c = catalog(1, 2, ("vnc-front", "vnc-back@x.service", "x-display"));
    let svcs: Vec<&Service> = c.services.iter().collect();
    let cmd = build_command(&svcs, "feed", Duration::from_secs(2));
    let path = format!("{}:/usr/bin:/bin", bin.display());
    let (recs, _, out) = run(&cmd, &path, &rec);
    let calls: Vec<_> = std::fs::read_dir(&rec)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("argv.")
        })
        .collect();
    assert_eq!(calls.len(), 1, "one systemctl call: {out}");
    let argv = std::fs::read(&calls[0]).unwrap();
    let argv: Vec<String> = argv
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8(a.to_vec()).unwrap())
        .collect();
    assert_eq!(
        argv,
        vec![
            "show",
            "--no-pager",
            "-p",
            backend::PROPERTIES,
            "--",
            "vnc-front",
            "vnc-back@x.service",
            "x-display"
        ]
    );
    assert!(
        recs.iter().any(
            |r| matches!(r, BackendRecord::Unit(u) if u.id == "vnc-front.service" && u.is_running())
        ),
        "{out}"
    );

    // A unit that failed (so its journal is read) and a journalctl that never answers.
    executable(
        &bin,
        "systemctl",
        "#!/bin/bash\nprintf 'Id=vnc-front.service\\nActiveState=failed\\nSubState=failed\\nNRestarts=0\\n'\n",
    );
    executable(&bin, "journalctl", "#!/bin/bash\nexec sleep 60\n");
    let (recs, took, out) = run(&cmd, &path, &rec);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        recs.iter()
            .any(|r| matches!(r, BackendRecord::Unit(u) if u.active_state == "failed")),
        "{out}"
    );

    // A systemctl that never answers.
    executable(&bin, "systemctl", "#!/bin/bash\nexec sleep 60\n");
    let (recs, took, out) = run(&cmd, &path, &rec);
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        recs.iter()
            .any(|r| matches!(r, BackendRecord::SystemdError(m) if m.contains("no answer"))),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile back-end values: rejected naming their field, or passed on literally

mod hostile_backends {
    use super::*;
    use proptest::prelude::*;
    use pvediag::catalog::CatalogError;

    /// Records its argv NUL-separated as `argv.<program>.<pid>`, prints nothing.
    const RECORDER: &str = "#!/bin/bash\nprintf '%s\\0' \"$@\" > \"$PWD/argv.${0##*/}.$$\"\n";

    #[derive(Debug, Clone)]
    struct Values {
        unit: String,
        need: String,
        path: String,
        header: String,
    }

    /// `Ok(false)`: rejected (naming a back-end field); `Ok(true)`: run, and literal.
    fn check(v: &Values) -> Result<bool, TestCaseError> {
        let json = serde_json::json!({
            "name": "svc", "unit": "svc-front", "port": 1,
            "probe": { "path": "/" }, "healthy": { "status": [200] },
            "backend": {
                "port": 2, "unit": v.unit, "needs": [v.need],
                "check": {
                    "http": { "path": v.path, "headers": { "X-B": v.header } },
                    "healthy": { "status": [200] }
                }
            }
        });
        let c = match Catalog::from_sources("p", &[("x.json".into(), json.to_string())]) {
            Err(CatalogError::Field {
                field,
                file,
                message,
            }) => {
                prop_assert!(!message.is_empty());
                prop_assert_eq!(file, "x.json");
                prop_assert!(field.starts_with("backend."), "{field} for {v:?}");
                return Ok(false);
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e} for {v:?}"))),
            Ok(c) => c,
        };
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        let rec = dir.path().join("rec");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::create_dir_all(&rec).unwrap();
        executable(&bin, "curl", RECORDER);
        executable(&bin, "systemctl", RECORDER);
        let cmd = build_command(&[&c.services[0]], "feed", Duration::from_secs(1));
        let _ = run(&cmd, &format!("{}:/usr/bin:/bin", bin.display()), &rec);
        let mut systemctl = Vec::new();
        let mut transfers = Vec::new();
        for e in std::fs::read_dir(&rec).unwrap() {
            let p = e.unwrap().path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            prop_assert!(name.starts_with("argv."), "a value ran a command: {name}");
            let args: Vec<String> = std::fs::read(&p)
                .unwrap()
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            let args = args[..args.len() - 1].to_vec();
            if name.starts_with("argv.systemctl.") {
                systemctl.push(args);
            } else {
                for t in args.split(|a| a == "--next") {
                    transfers.push(t.to_vec());
                }
            }
        }
        prop_assert_eq!(systemctl.len(), 1);
        let units = &systemctl[0][5..];
        let mut want: Vec<String> = Vec::new();
        for u in ["svc-front", v.unit.as_str(), v.need.as_str()] {
            if !u.is_empty() && !want.iter().any(|w| w == u) {
                want.push(u.to_string());
            }
        }
        prop_assert_eq!(units, &want[..]);
        let url = format!("http://127.0.0.1:2{}", v.path);
        let back: Vec<_> = transfers.iter().filter(|t| t.contains(&url)).collect();
        prop_assert!(!back.is_empty(), "no transfer to {url}: {transfers:?}");
        for t in back {
            let want = format!("X-B: {}", v.header);
            prop_assert!(t.windows(2).any(|w| w[0] == "-H" && w[1] == want), "{t:?}");
        }
        Ok(true)
    }

    fn values() -> impl Strategy<Value = Values> {
        let h = crate::injection::hostile;
        (0..4usize, h(), any::<bool>()).prop_map(|(field, s, slash)| {
            let mut v = Values {
                unit: "svc-back".into(),
                need: "x-display@1.service".into(),
                path: "/json/version".into(),
                header: "1".into(),
            };
            match field {
                0 => v.unit = s,
                1 => v.need = s,
                2 => v.path = if slash { format!("/{s}") } else { s },
                _ => v.header = s,
            }
            v
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn hostile_back_end_values_are_rejected_or_reach_curl_and_systemctl_literally(v in values()) {
            check(&v)?;
        }
    }

    #[test]
    fn accepted_back_end_values_with_shell_syntax_stay_literal() {
        let v = Values {
            unit: "a@$b.service".replace('$', ""),
            need: "x-display@1.service".into(),
            path: "/a'b$(id)&c=;d*(f)!~@:,+%27'\\''".replace("\\", ""),
            header: "v'\"$(touch pwned) `id` \\ ${HOME} ;|&".into(),
        };
        assert!(check(&v).unwrap(), "accepted and run");
    }
}
