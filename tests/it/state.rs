//! The state directory under abuse: writers killed with SIGKILL at random moments, and several
//! processes writing the same target at once. The writers are this test binary re-run as a child
//! (`state::writer_child`, ignored unless asked for), calling the library's store directly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pvediag::state::record::Record;
use pvediag::state::store::{Loaded, StateFile, Store};

const DIR_ENV: &str = "PVEDIAG_TEST_STATE_CHILD_DIR";
const MODE_ENV: &str = "PVEDIAG_TEST_STATE_CHILD_MODE";

/// A record with `n` verdicts and a long summary: large enough that a write takes a while.
fn big_record(at: i64, status: &str, n: usize) -> Record {
    let verdicts: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({
                "service": format!("svc{i}"),
                "status": status,
                "layers": ["caddy"],
                "rule": "R1",
                "summary": "x".repeat(2000),
            })
        })
        .collect();
    serde_json::from_value(serde_json::json!({
        "at": at,
        "status": status,
        "facts": {
            "catalog": {"generation": "(built in)", "ports": {"xterm": 39383}},
            "url_template": "https://{service}-{vmid}.{domain}",
            "exec_auth": "off",
            "cloudflared": null,
            "origin": null,
            "routes": null,
            "ports": [],
            "external": [],
        },
        "verdicts": verdicts,
        "channel": {"status": "healthy", "summary": "ok"},
    }))
    .unwrap()
}

fn next(prev: &Loaded, at: i64, status: &str, size: usize) -> StateFile {
    let prev = match prev {
        Loaded::Ok(s) => Some((**s).clone()),
        _ => None,
    };
    pvediag::state::next_state(
        prev,
        "example.test",
        202,
        big_record(at, status, size),
        None,
    )
}

/// The child: writes the state of VMID 202 in a loop (mode `loop`, until killed) or a fixed
/// number of times with a unique status each (mode `count:N:ID`).
#[test]
#[ignore = "run as a child process by the tests below"]
fn writer_child() {
    let Ok(dir) = std::env::var(DIR_ENV) else {
        return;
    };
    let store = Store::new(&dir);
    store.ensure().unwrap();
    let mode = std::env::var(MODE_ENV).unwrap_or_default();
    if let Some(rest) = mode.strip_prefix("count:") {
        let (n, id) = rest.split_once(':').unwrap();
        let n: usize = n.parse().unwrap();
        for i in 0..n {
            let notes = store.update("example.test", 202, |l| {
                next(l, i as i64, &format!("broken-{id}-{i}"), 4)
            });
            assert!(notes.is_empty(), "{notes:?}");
        }
        return;
    }
    let mut i = 0i64;
    loop {
        // Sizes vary so a kill lands in writes of every length. A file holds up to three records
        // (last, previous, last healthy): at most 120 verdicts of ~2 KiB keep it under ~740 KiB,
        // below the store's 1 MiB cap (with 200 it reached 1.2 MiB, refused as unreadable, and
        // the test failed for a reason it does not test).
        let size = 1 + (i as usize * 37) % 120;
        let status = if i % 2 == 0 { "healthy" } else { "broken" };
        store.update("example.test", 202, |l| next(l, i, status, size));
        i += 1;
    }
}

fn child(dir: &Path, mode: &str) -> Command {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args([
        "--exact",
        "state::writer_child",
        "--ignored",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(DIR_ENV, dir)
    .env(MODE_ENV, mode)
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    c
}

/// A small pseudo-random sequence (no crate needed): the kill delays.
fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn state_files(dir: &Path) -> Vec<PathBuf> {
    let d = Store::new(dir).target_dir("example.test");
    let Ok(rd) = std::fs::read_dir(d) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect()
}

#[test]
fn a_writer_killed_at_any_moment_never_leaves_an_unreadable_state_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut seed = 0x9e37_79b9_7f4a_7c15u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let rounds = 25;
    let mut written = 0;
    for round in 0..rounds {
        let mut c = child(&dir, "loop").spawn().unwrap();
        // Let the child start (process start-up varies) and then kill it at a random point.
        let delay = Duration::from_millis(20 + xorshift(&mut seed) % 250);
        std::thread::sleep(delay);
        c.kill().unwrap(); // SIGKILL
        let status = c.wait().unwrap();
        assert!(
            !status.success(),
            "round {round}: the child ended by itself"
        );
        let store = Store::new(&dir);
        match store.load("example.test", 202) {
            Loaded::Ok(_) => written += 1,
            Loaded::Absent => {}
            Loaded::Unreadable(why) => panic!("round {round} (after {delay:?}): {why}"),
        }
        for f in state_files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            assert!(
                matches!(
                    pvediag::state::store::parse(&bytes, "example.test", 202),
                    Loaded::Ok(_)
                ),
                "round {round}: {} does not parse",
                f.display()
            );
        }
    }
    assert!(
        written > 0,
        "no round got as far as a first write: the test proved nothing"
    );
    // The temp files a killed writer left are removed by the next writer, under the lock.
    let store = Store::new(&dir);
    assert!(store
        .update("example.test", 202, |l| next(l, 1, "healthy", 1))
        .is_empty());
    let litter: Vec<_> = std::fs::read_dir(store.target_dir("example.test"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".tmp"))
        .collect();
    assert!(litter.is_empty(), "{litter:?}");
}

#[test]
fn processes_writing_the_same_target_at_once_lose_no_run() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let (procs, per) = (4, 10);
    let start = Instant::now();
    let children: Vec<_> = (0..procs)
        .map(|id| child(&dir, &format!("count:{per}:{id}")).spawn().unwrap())
        .collect();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(start.elapsed() < Duration::from_secs(120));
    let Loaded::Ok(s) = Store::new(&dir).load("example.test", 202) else {
        panic!("unreadable after concurrent processes")
    };
    // Every write had a status of its own, so every write is one transition: none was lost.
    assert_eq!(s.transitions.len(), procs * per);
    let mut seen: Vec<&str> = s.transitions.iter().map(|t| t.to.as_str()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), procs * per);
}

// ---------------------------------------------------------------------------------------------
// Through the binary: a healthy run, then the seed's route change.

mod through_the_binary {
    use std::path::Path;

    use crate::common::fleet_lab::{lab_args, pvediag, runtime, start_lab};
    use pvediag::lab;
    use serde_json::Value;

    /// `pvediag 202` against the lab of `scenario`, with the state in `state` and HOME in `home`.
    fn diagnose(
        rt: &tokio::runtime::Runtime,
        scenario: &str,
        state: &Path,
        home: &Path,
        extra: &[&str],
    ) -> (i32, String, String) {
        let sc = lab::scenario(scenario).unwrap();
        let lab = start_lab(rt, sc.config.clone());
        let token = home.join("token");
        std::fs::write(&token, lab::SCENARIO_TOKEN).unwrap();
        std::fs::set_permissions(&token, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        let out = pvediag()
            .env_remove("PVEDIAG_NO_STATE")
            .env("HOME", home)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .arg("202")
            .args(lab_args(&lab))
            .arg("--caddyfile")
            .arg(&lab.caddyfile_path)
            .arg("--exec-token-file")
            .arg(&token)
            .args(if extra.contains(&"--no-state") {
                vec![]
            } else {
                vec!["--state-dir".as_ref(), state.as_os_str()]
            })
            .args(extra)
            .timeout(std::time::Duration::from_secs(60))
            .output()
            .unwrap();
        std::fs::remove_file(&token).unwrap();
        drop(lab);
        (
            out.status.code().unwrap(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    fn service<'a>(v: &'a Value, name: &str) -> &'a Value {
        v["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap()
    }

    fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(all_files(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn after_a_healthy_run_the_seed_route_change_is_in_table_json_junit_prometheus_and_history() {
        if !crate::common::curl_present() {
            return;
        }
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        let (state, home) = (tmp.path().join("state"), tmp.path().join("home"));
        std::fs::create_dir_all(&home).unwrap();

        let (code, _, err) = diagnose(&rt, "healthy", &state, &home, &["--format", "json"]);
        assert_eq!(code, 0, "{err}");
        assert!(err.is_empty(), "{err}");

        let (code, out, err) = diagnose(&rt, "seed", &state, &home, &["--format", "json"]);
        assert_eq!(code, 1, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        let xterm = service(&v, "xterm");
        let last = xterm["verdict"]["evidence"]
            .as_array()
            .unwrap()
            .last()
            .unwrap()
            .as_str()
            .unwrap();
        assert!(last.starts_with("since the last healthy run (20"), "{last}");
        assert!(
            last.contains(
                "UTC): Caddy's route for xterm changed cmux-202.lan:39383 → :39376 (Caddyfile.cmux:"
            ),
            "{last}"
        );
        let ch = &xterm["changes_since_last_healthy"];
        assert_eq!(ch.as_array().unwrap().len(), 1, "{ch}");
        assert_eq!(ch[0]["fact"], "route");
        assert_eq!(ch[0]["before"], "cmux-202.lan:39383");
        assert_eq!(ch[0]["after"], "cmux-202.lan:39376");
        let st = &v["targets"][0]["state"];
        assert!(st["last_healthy_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(
            st["since_last_healthy"]["at_unix"],
            st["last_healthy_at_unix"]
        );
        // Healthy services carry no diff line.
        let vnc = service(&v, "vnc");
        assert!(!vnc["verdict"]["evidence"]
            .to_string()
            .contains("since the last healthy run"));

        // The table: the same line, for a person.
        let (code, out, _) = diagnose(&rt, "seed", &state, &home, &["--format", "table"]);
        assert_eq!(code, 1);
        // The table wraps to the width: compare the words.
        let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            out.contains("Caddy's route for xterm changed cmux-202.lan:39383 → :39376"),
            "{out}"
        );
        assert!(out.contains("since the last healthy run ("), "{out}");

        // JUnit: in the failure message.
        let (_, out, _) = diagnose(&rt, "seed", &state, &home, &["--format", "junit"]);
        let doc = roxmltree::Document::parse(&out).unwrap();
        let failure = doc
            .descendants()
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("xterm"))
            .and_then(|n| n.children().find(|c| c.has_tag_name("failure")))
            .unwrap();
        assert!(failure
            .attribute("message")
            .unwrap()
            .contains("since the last healthy run ("));
        assert!(failure.attribute("message").unwrap().contains(":39376"));

        // Prometheus: the last healthy time.
        let (_, out, _) = diagnose(&rt, "seed", &state, &home, &["--format", "prometheus"]);
        let line = out
            .lines()
            .find(|l| l.starts_with("pvediag_last_healthy_timestamp_seconds{vmid=\"202\"} "))
            .unwrap_or_else(|| panic!("{out}"));
        let t: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        assert_eq!(t, st["last_healthy_at_unix"].as_i64().unwrap());

        // History: healthy -> broken with the cause.
        let out = pvediag()
            .env_remove("PVEDIAG_NO_STATE")
            .args(["history", "202", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(text.contains("healthy → broken  xterm: broken"), "{text}");
        assert!(text.contains(":39376"), "{text}");
        assert!(text.contains("(first run) → healthy"), "{text}");
        let out = pvediag()
            .env_remove("PVEDIAG_NO_STATE")
            .args(["history", "202", "--format", "json", "--state-dir"])
            .arg(&state)
            .output()
            .unwrap();
        let h: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(h["targets"][0]["transitions"][0]["to"], "broken");
        assert_eq!(h["targets"][0]["transitions"][1]["to"], "healthy");

        // Privacy: the execd token the runs used is in no state file; nothing went to HOME.
        for f in all_files(&state) {
            let text = std::fs::read_to_string(&f).unwrap_or_default();
            assert!(!text.contains(lab::SCENARIO_TOKEN), "{}", f.display());
            assert!(!text.to_ascii_lowercase().contains("authorization"));
        }
        assert!(std::fs::read_dir(&home).unwrap().next().is_none());
    }

    #[test]
    fn a_corrupt_state_file_is_reported_once_and_changes_no_verdict() {
        if !crate::common::curl_present() {
            return;
        }
        let rt = runtime();
        let tmp = tempfile::tempdir().unwrap();
        let (state, home) = (tmp.path().join("state"), tmp.path().join("home"));
        std::fs::create_dir_all(&home).unwrap();
        let file = state.join("targets/example.test/202.json");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "{\"format\":\"pvediag-state\",\"version\":1,\"last\":",
        )
        .unwrap();
        let (code, out, err) = diagnose(&rt, "seed", &state, &home, &["--format", "json"]);
        assert_eq!(code, 1, "{err}");
        assert_eq!(err.matches("not valid JSON").count(), 1, "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        let v: Value = serde_json::from_str(&out).unwrap();
        assert!(!out.contains("since the last healthy run"));
        let with_state: Vec<Value> = v["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["verdict"]["status"].clone())
            .collect();
        // Reported once: the next run reads the fresh record.
        let (_, _, err) = diagnose(&rt, "seed", &state, &home, &["--format", "json"]);
        assert!(!err.contains("not valid JSON"), "{err}");
        // The same verdicts without any state.
        let (code, out, _) = diagnose(
            &rt,
            "seed",
            &state,
            &home,
            &["--format", "json", "--no-state"],
        );
        assert_eq!(code, 1);
        let v: Value = serde_json::from_str(&out).unwrap();
        let without: Vec<Value> = v["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["verdict"]["status"].clone())
            .collect();
        assert_eq!(with_state, without);
        assert!(v["targets"][0]["state"].is_null());
    }

    #[test]
    fn demo_seed_after_healthy_shows_the_diff_and_keeps_no_state_of_the_user() {
        if !crate::common::curl_present() {
            return;
        }
        let home = tempfile::tempdir().unwrap();
        for format in ["table", "json"] {
            let out = pvediag()
                .env_remove("PVEDIAG_NO_STATE")
                .env("HOME", home.path())
                .env("XDG_STATE_HOME", home.path().join("xdg"))
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .args([
                    "demo",
                    "--scenario",
                    "seed-after-healthy",
                    "--format",
                    format,
                ])
                .timeout(std::time::Duration::from_secs(90))
                .output()
                .unwrap();
            assert_eq!(out.status.code(), Some(1));
            let stdout = String::from_utf8(out.stdout).unwrap();
            // The table wraps to the width: compare the words.
            let words = stdout.split_whitespace().collect::<Vec<_>>().join(" ");
            assert!(
                words.contains("Caddy's route for xterm changed cmux-202.lan:39383 → :39376"),
                "{stdout}"
            );
            let stderr = String::from_utf8(out.stderr).unwrap();
            assert!(stderr.contains("healthy"), "{stderr}");
            if format == "json" {
                let v: Value = serde_json::from_str(&stdout).unwrap();
                assert_eq!(
                    service(&v, "xterm")["changes_since_last_healthy"][0]["fact"],
                    "route"
                );
            }
        }
        assert!(std::fs::read_dir(home.path()).unwrap().next().is_none());
    }
}

mod fleet {
    use crate::common::fleet_lab::*;
    use pvediag::lab::{self, LabConfig, ServiceKind};

    fn run_all(lab: &lab::Lab, pve: &str, state: &std::path::Path, format: &str) -> String {
        let o = pvediag_pve(lab, pve)
            .env_remove("PVEDIAG_NO_STATE")
            .args(["--all", "--format", format, "--state-dir"])
            .arg(state)
            .output()
            .unwrap();
        let out = String::from_utf8(o.stdout).unwrap();
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_no_secret(&out);
        assert_no_secret(&err);
        assert_eq!(o.status.code(), Some(1), "{out}{err}");
        out
    }

    #[test]
    fn all_with_prometheus_has_the_last_healthy_time_and_junit_the_diff() {
        if !crate::common::curl_present() {
            return;
        }
        let rt = runtime();
        let pve = start_pve(&rt, PveMode::Normal);
        let tmp = tempfile::tempdir().unwrap();
        let state = tmp.path();

        // 202 healthy, 203 with cmux-pty down.
        let lab1 = start_lab(&rt, fleet_lab_config());
        let before = pvediag::state::now();
        let out = run_all(&lab1, &pve, state, "prometheus");
        drop(lab1);
        let samples = parse_prometheus(&out).unwrap();
        let s202 = find(
            &samples,
            "pvediag_last_healthy_timestamp_seconds",
            &[("vmid", "202")],
        );
        assert_eq!(s202.len(), 1, "{out}");
        let t202 = s202[0].value as i64;
        assert!(t202 >= before && t202 <= pvediag::state::now(), "{out}");
        assert!(
            find(
                &samples,
                "pvediag_last_healthy_timestamp_seconds",
                &[("vmid", "203")]
            )
            .is_empty(),
            "203 was never healthy: {out}"
        );

        // Now cmux-pty stops in 202 too.
        let mut cfg: LabConfig = fleet_lab_config();
        cfg.containers[0]
            .services
            .retain(|s| s.kind != ServiceKind::Xterm);
        let lab2 = start_lab(&rt, cfg);
        let out = run_all(&lab2, &pve, state, "prometheus");
        let samples = parse_prometheus(&out).unwrap();
        let s202 = find(
            &samples,
            "pvediag_last_healthy_timestamp_seconds",
            &[("vmid", "202")],
        );
        assert_eq!(s202[0].value as i64, t202, "still the first run's time");
        let out = run_all(&lab2, &pve, state, "junit");
        let doc = roxmltree::Document::parse(&out).unwrap();
        let msg = doc
            .descendants()
            .filter(|n| n.has_tag_name("testsuite") && n.attribute("name") == Some("vmid202"))
            .flat_map(|s| s.descendants())
            .find(|n| n.has_tag_name("testcase") && n.attribute("name") == Some("xterm"))
            .and_then(|n| n.children().find(|c| c.has_tag_name("failure")))
            .and_then(|f| f.attribute("message"))
            .unwrap_or_else(|| panic!("{out}"))
            .to_string();
        assert!(
            msg.contains("since the last healthy run (")
                && msg.contains("cmux-pty stopped answering on 39383"),
            "{msg}"
        );
        // 203 was never healthy: its failure message has no diff.
        assert!(!out
            .split("vmid203")
            .nth(1)
            .unwrap_or("")
            .contains("since the last healthy run"));
    }
}

#[test]
fn bad_state_input_is_one_line_and_exit_2() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let empty = tmp.path().join("empty");
    let f = file.to_str().unwrap();
    let e = empty.to_str().unwrap();
    for args in [
        vec!["history", "abc"],
        vec!["history", "202", "--state-dir", e],
        vec!["202", "--domain", "example.test", "--state-dir", f],
        vec!["demo", "--scenario", "seed", "--state-dir", f],
    ] {
        let out = crate::common::fleet_lab::pvediag()
            .env_remove("PVEDIAG_NO_STATE")
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(err.starts_with("pvediag: error: "), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    assert!(!empty.exists(), "history never creates a directory");
}

#[test]
fn the_binary_killed_at_random_moments_leaves_every_state_file_readable() {
    if !crate::common::curl_present() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut seed = 0x2545_f491_4f6c_dd1du64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64;
    let mut recorded = 0;
    for round in 0..10 {
        let scenario = if round % 2 == 0 { "healthy" } else { "seed" };
        let mut c = Command::new(env!("CARGO_BIN_EXE_pvediag"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .args([
                "demo",
                "--scenario",
                scenario,
                "--format",
                "json",
                "--state-dir",
            ])
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Sometimes it finishes (a record), mostly it dies somewhere on the way.
        let delay = Duration::from_millis(xorshift(&mut seed) % 900);
        let start = Instant::now();
        while start.elapsed() < delay {
            if c.try_wait().unwrap().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let _ = c.kill();
        let _ = c.wait();
        for f in state_files(&dir) {
            let bytes = std::fs::read(&f).unwrap();
            match pvediag::state::store::parse(&bytes, "example.test", 202) {
                Loaded::Ok(_) => recorded += 1,
                other => panic!("round {round} ({delay:?}): {}: {other:?}", f.display()),
            }
        }
    }
    eprintln!("state files found readable after the kills: {recorded}");
}
