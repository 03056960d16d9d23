use super::store::{parse, Loaded, StateFile, Store, MAX_TRANSITIONS};
use super::*;
use crate::catalog::Catalog;
use crate::observation::*;
use crate::verdict::tests::resp;
use crate::verdict::{diagnose, Context, Layout, TargetVerdict};

const T0: i64 = 1_796_047_320; // 2026-11-30 14:02 UTC
const TOKEN: &str = "3f9a1c7e5b2d4086a1e3c5b7d9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4";

fn route(service: &str, port: u16, line: u32) -> RouteObservation {
    RouteObservation {
        service: service.into(),
        host: format!("{service}-202.example.test"),
        upstream_host: Some("cmux-202.lan".into()),
        upstream_port: Some(port),
        source: Some(format!("Caddyfile.cmux:{line}")),
        from: Some(RouteFrom::Caddyfile),
    }
}

/// The verdict table tests' healthy target, as a run without an origin check and with the
/// Caddyfile's routes read sees it.
fn healthy_target(c: &Catalog) -> TargetObservation {
    let mut t = crate::verdict::tests::healthy_target(c);
    t.exec.auth_mode = AuthMode::Off;
    t.exec.token_sent = false;
    t.origin = None;
    t.routes = c
        .services
        .iter()
        .filter(|s| s.routed)
        .enumerate()
        .map(|(i, s)| route(&s.name, s.port, 3 + 5 * i as u32))
        .collect();
    t
}

fn verdicts(c: &Catalog, t: &TargetObservation) -> TargetVerdict {
    let ctx = Context {
        access_token_sent: false,
        catalog: c,
        layout: Layout::PerService,
        caddyfile: Some("/etc/caddy/Caddyfile.cmux"),
        connect_to: None,
        instance: None,
        deadline: None,
        target_cut: false,
    };
    diagnose(&ctx, t)
}

/// One target of a run as the state sees it (what `run::record_state` hands it from a report).
struct Target {
    observation: TargetObservation,
    verdict: TargetVerdict,
    state: Option<TargetState>,
}

fn target_of(c: &Catalog, o: TargetObservation) -> Target {
    Target {
        verdict: verdicts(c, &o),
        observation: o,
        state: None,
    }
}

fn rec(c: &Catalog, at: i64, t: &Target) -> Record {
    record::record(
        at,
        c,
        "https://{service}-{vmid}.{domain}",
        &t.observation,
        &t.verdict,
    )
}

/// The seed incident as a change: xterm's route goes to 39376, where nothing listens.
fn seed_target(c: &Catalog) -> TargetObservation {
    let mut t = healthy_target(c);
    let r = t.routes.iter_mut().find(|r| r.service == "xterm").unwrap();
    r.upstream_port = Some(39376);
    let s = t.services.iter_mut().find(|s| s.name == "xterm").unwrap();
    s.external = resp(
        502,
        &[("server", "cloudflare"), ("cf-ray", "8f00000000000001-LAB")],
        "error code: 502",
    );
    t
}

/// Runs the pure steps the edge runs: record, assess, next state, attach.
fn step(
    c: &Catalog,
    prev: Option<StateFile>,
    at: i64,
    o: TargetObservation,
) -> (StateFile, Target) {
    let mut t = target_of(c, o);
    let r = rec(c, at, &t);
    let v = views(&t.observation, &t.verdict);
    let st = assess(prev.as_ref(), &r, &v);
    let next = next_state(prev, "example.test", 202, r, st.since_last_healthy.as_ref());
    attach(&t.observation, &mut t.verdict, &st);
    t.state = Some(st);
    (next, t)
}

#[test]
fn times() {
    assert_eq!(fmt_time(T0), "2026-11-30 14:02 UTC");
    assert_eq!(rfc3339(T0), "2026-11-30T14:02:00Z");
}

#[test]
fn default_dirs() {
    assert_eq!(
        default_dir(true, Some("/x"), Some("/root")),
        Some(PathBuf::from("/var/lib/pvediag"))
    );
    assert_eq!(
        default_dir(false, Some("/x/state"), Some("/home/a")),
        Some(PathBuf::from("/x/state/pvediag"))
    );
    assert_eq!(
        default_dir(false, Some("relative"), Some("/home/a")),
        Some(PathBuf::from("/home/a/.local/state/pvediag"))
    );
    assert_eq!(default_dir(false, None, None), None);
    assert_eq!(default_dir(false, None, Some("not/absolute")), None);
}

#[test]
fn after_a_healthy_run_the_seed_route_change_is_named_in_xterms_evidence() {
    let c = Catalog::embedded();
    let (s1, t1) = step(&c, None, T0, healthy_target(&c));
    assert_eq!(s1.last.status, "healthy");
    assert_eq!(s1.last_healthy.as_ref().unwrap().at, T0);
    assert_eq!(t1.state.as_ref().unwrap().since_last_healthy, None);
    assert_eq!(t1.state.as_ref().unwrap().last_healthy_at, Some(T0));

    let (s2, t2) = step(&c, Some(s1), T0 + 600, seed_target(&c));
    assert_eq!(s2.last.status, "broken");
    assert_eq!(
        s2.last_healthy.as_ref().unwrap().at,
        T0,
        "last-known-good kept"
    );
    assert_eq!(s2.previous.as_ref().unwrap().at, T0);
    let i = t2
        .observation
        .services
        .iter()
        .position(|s| s.name == "xterm")
        .unwrap();
    let line = t2.verdict.services[i].evidence.last().unwrap();
    assert_eq!(
        line,
        "since the last healthy run (2026-11-30 14:02 UTC): Caddy's route for xterm changed cmux-202.lan:39383 → :39376 (Caddyfile.cmux:28)"
    );
    // Healthy verdicts get no line.
    for (s, v) in t2.observation.services.iter().zip(&t2.verdict.services) {
        if s.name != "xterm" {
            assert!(
                !v.evidence.iter().any(|e| e.starts_with("since the last")),
                "{}",
                s.name
            );
        }
    }
    let st = t2.state.as_ref().unwrap();
    assert_eq!(st.last_healthy_at, Some(T0));
    let since = st.since_last_healthy.as_ref().unwrap();
    assert_eq!(since.changes.len(), 1);
    assert_eq!(since.for_service("xterm").len(), 1);
    // The transition names the cause.
    let tr = s2.transitions.last().unwrap();
    assert_eq!(tr.from.as_deref(), Some("healthy"));
    assert_eq!(tr.to, "broken");
    assert!(tr.cause.starts_with("xterm: broken"), "{}", tr.cause);
    assert!(tr.cause.contains("39383 → :39376"), "{}", tr.cause);
}

#[test]
fn the_service_stopping_is_named_and_the_route_is_not() {
    let c = Catalog::embedded();
    let (s1, _) = step(&c, None, T0, healthy_target(&c));
    let mut o = healthy_target(&c);
    let s = o.services.iter_mut().find(|s| s.name == "xterm").unwrap();
    s.internal = Probe::Failed {
        kind: FailureKind::Refused,
        message: "connection refused".into(),
        elapsed_ms: 1,
    };
    s.external = resp(
        502,
        &[("server", "cloudflare"), ("cf-ray", "8f00000000000001-LAB")],
        "error code: 502",
    );
    let (_, t) = step(&c, Some(s1), T0 + 60, o);
    let i = t
        .observation
        .services
        .iter()
        .position(|s| s.name == "xterm")
        .unwrap();
    assert!(
        t.verdict.services[i]
            .evidence
            .last()
            .unwrap()
            .ends_with(": cmux-pty stopped answering on 39383 (now: connection refused)"),
        "{:?}",
        t.verdict.services[i].evidence
    );
}

#[test]
fn exec_auth_turned_on() {
    let c = Catalog::embedded();
    let (s1, _) = step(&c, None, T0, healthy_target(&c));
    let mut o = healthy_target(&c);
    o.exec.auth_mode = AuthMode::Required;
    o.exec.run = ExecRun::Rejected {
        status: 401,
        body: r#"{"error":"Unauthorized"}"#.into(),
        from_edge: false,
    };
    for s in &mut o.services {
        s.internal = Probe::not_run("the exec channel is unavailable");
    }
    let s = o.services.iter_mut().find(|s| s.name == "exec").unwrap();
    s.external = resp(401, &[], r#"{"error":"Unauthorized"}"#);
    let (s2, t) = step(&c, Some(s1), T0 + 60, o);
    let since = t.state.unwrap().since_last_healthy.unwrap();
    assert_eq!(
        since
            .changes
            .iter()
            .map(|c| c.describe())
            .collect::<Vec<_>>(),
        ["the exec endpoint now requires a token"],
        "the internal answers were not seen, so they are not reported as changed"
    );
    assert_ne!(s2.last.status, "healthy");
}

#[test]
fn retention_transitions_and_no_last_known_good() {
    let c = Catalog::embedded();
    // Broken from the first run: no last-known-good, no diff.
    let (s1, t1) = step(&c, None, T0, seed_target(&c));
    assert!(s1.last_healthy.is_none());
    assert_eq!(t1.state.as_ref().unwrap().last_healthy_at, None);
    assert!(!t1
        .verdict
        .services
        .iter()
        .any(|v| v.evidence.iter().any(|e| e.starts_with("since the last"))));
    assert_eq!(s1.transitions.len(), 1);
    assert_eq!(s1.transitions[0].from, None);
    // Same status again: no new transition; previous is the run before.
    let (s2, _) = step(&c, Some(s1), T0 + 1, seed_target(&c));
    assert_eq!(s2.transitions.len(), 1);
    assert_eq!(s2.previous.as_ref().unwrap().at, T0);
    // Many flips: the transitions are capped.
    let mut s = s2;
    for i in 0..(MAX_TRANSITIONS as i64 + 10) {
        let o = if i % 2 == 0 {
            healthy_target(&c)
        } else {
            seed_target(&c)
        };
        s = step(&c, Some(s), T0 + 10 + i, o).0;
    }
    assert_eq!(s.transitions.len(), MAX_TRANSITIONS);
    assert!(s.transitions.windows(2).all(|w| w[0].at < w[1].at));
}

#[test]
fn a_record_holds_no_secret() {
    let c = Catalog::embedded();
    let mut o = healthy_target(&c);
    o.exec.url = format!("https://exec-202.example.test/?token={TOKEN}");
    o.exec.token_sent = true;
    // Answers that carry the token in a header and a body (a hostile or leaky service).
    for s in &mut o.services {
        s.internal = resp(
            500,
            &[("authorization", &format!("Bearer {TOKEN}"))],
            &format!("Authorization: Bearer {TOKEN}"),
        );
        s.external = resp(
            200,
            &[("set-cookie", &format!("_cmux_auth={TOKEN}"))],
            TOKEN,
        );
    }
    let (s, t) = step(&c, None, T0, o);
    let text = serde_json::to_string(&s).unwrap();
    assert!(!text.contains(TOKEN), "{text}");
    assert!(!text.to_ascii_lowercase().contains("bearer"), "{text}");
    let text = serde_json::to_string(&t.state).unwrap();
    assert!(!text.contains(TOKEN));
}

fn state_with(c: &Catalog) -> StateFile {
    step(c, None, T0, healthy_target(c)).0
}

#[test]
fn parse_rejects_corrupt_foreign_other_versions_and_other_targets() {
    let c = Catalog::embedded();
    let good = serde_json::to_vec(&state_with(&c)).unwrap();
    assert!(matches!(parse(&good, "example.test", 202), Loaded::Ok(_)));
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"".to_vec(), "not valid JSON"),
        (good[..good.len() / 2].to_vec(), "not valid JSON"),
        (b"\xff\xfe garbage".to_vec(), "not valid JSON"),
        (b"[1,2,3]".to_vec(), "not a pvediag state file"),
        (br#"{"hello":"world"}"#.to_vec(), "not a pvediag state file"),
        (
            br#"{"format":"pvediag-state","version":0,"last":{}}"#.to_vec(),
            "record version 0",
        ),
        (
            br#"{"format":"pvediag-state","version":99}"#.to_vec(),
            "record version 99",
        ),
        (
            br#"{"format":"pvediag-state","version":1,"last":"x"}"#.to_vec(),
            "broken field",
        ),
        (
            String::from_utf8(good.clone())
                .unwrap()
                .replace("\"vmid\":202", "\"vmid\":203")
                .into_bytes(),
            "not 202 on example.test",
        ),
    ];
    for (bytes, want) in bad {
        match parse(&bytes, "example.test", 202) {
            Loaded::Unreadable(why) => assert!(why.contains(want), "{why} / {want}"),
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(&bytes)),
        }
    }
}

#[test]
fn store_missing_corrupt_and_old_files() {
    let c = Catalog::embedded();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path().join("state"));
    store.ensure().unwrap();
    assert_eq!(store.load("example.test", 202), Loaded::Absent);
    let p = store.path("example.test", 202);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    for junk in [
        &b"{\"format\":\"pvediag-state\",\"version\":0}"[..],
        b"{not json",
        b"",
    ] {
        std::fs::write(&p, junk).unwrap();
        assert!(matches!(
            store.load("example.test", 202),
            Loaded::Unreadable(_)
        ));
        let mut seen = None;
        let notes = store.update("example.test", 202, |l| {
            seen = Some(l.clone());
            state_with(&c)
        });
        assert!(matches!(seen, Some(Loaded::Unreadable(_))));
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].contains("ignored"), "{notes:?}");
        assert!(p.with_extension("json.unreadable").exists());
        // Reported once: the next run finds a good file.
        assert!(matches!(store.load("example.test", 202), Loaded::Ok(_)));
        let notes = store.update("example.test", 202, |_| state_with(&c));
        assert!(notes.is_empty(), "{notes:?}");
    }
    // A directory where the file should be: reported, no panic.
    std::fs::remove_file(&p).unwrap();
    std::fs::create_dir(&p).unwrap();
    assert!(matches!(
        store.load("example.test", 202),
        Loaded::Unreadable(_)
    ));
}

#[test]
fn a_state_dir_that_is_a_file_is_reported() {
    let tmp = tempfile::tempdir().unwrap();
    let f = tmp.path().join("file");
    std::fs::write(&f, "x").unwrap();
    assert!(Store::new(&f).ensure().is_err());
}

#[test]
fn concurrent_threads_never_corrupt_nor_lose_a_run() {
    let c = Catalog::embedded();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path());
    store.ensure().unwrap();
    let threads = 6;
    let per = 15;
    std::thread::scope(|s| {
        for th in 0..threads {
            let (store, c) = (&store, &c);
            s.spawn(move || {
                for i in 0..per {
                    let o = if (th + i) % 2 == 0 {
                        healthy_target(c)
                    } else {
                        seed_target(c)
                    };
                    let notes = store.update("example.test", 202, |l| {
                        let prev = match l {
                            Loaded::Ok(s) => Some((**s).clone()),
                            Loaded::Absent => None,
                            Loaded::Unreadable(why) => panic!("{why}"),
                        };
                        step(c, prev, T0 + (th * per + i) as i64, o).0
                    });
                    assert!(notes.is_empty(), "{notes:?}");
                }
            });
        }
    });
    let Loaded::Ok(s) = store.load("example.test", 202) else {
        panic!("unreadable after concurrent writes")
    };
    // Under the lock every update saw the one before: the chain of `previous` is unbroken and
    // the number of runs equals the writes (each run either adds a transition or not, but the
    // last record is one of the writes).
    assert!(s.previous.is_some());
    let leftovers: Vec<_> = std::fs::read_dir(store.target_dir("example.test"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn the_lock_waits_then_gives_up_without_writing() {
    let c = Catalog::embedded();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path());
    store.ensure().unwrap();
    let dir = store.target_dir("example.test");
    std::fs::create_dir_all(&dir).unwrap();
    let held = store::lock(&dir.join("202.lock"), std::time::Duration::from_secs(1)).unwrap();
    let start = std::time::Instant::now();
    let notes = store.update("example.test", 202, |_| state_with(&c));
    assert!(start.elapsed() >= store::LOCK_WAIT);
    assert!(start.elapsed() < store::LOCK_WAIT * 3);
    assert!(notes[0].contains("not written"), "{notes:?}");
    assert_eq!(store.load("example.test", 202), Loaded::Absent);
    drop(held);
    assert!(store
        .update("example.test", 202, |_| state_with(&c))
        .is_empty());
    assert!(matches!(store.load("example.test", 202), Loaded::Ok(_)));
}

#[test]
fn odd_domains_get_a_safe_directory() {
    let store = Store::new("/s");
    assert_eq!(
        store.path("example.test", 202),
        PathBuf::from("/s/targets/example.test/202.json")
    );
    let p = store.path("../../etc", 1);
    assert!(
        p.to_string_lossy().starts_with("/s/targets/x-"),
        "{}",
        p.display()
    );
    assert_eq!(p.components().count(), 5);
}

#[test]
fn history_shows_transitions_newest_first_with_their_cause() {
    let c = Catalog::embedded();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::new(tmp.path());
    store.ensure().unwrap();
    for (i, o) in [healthy_target(&c), seed_target(&c), seed_target(&c)]
        .into_iter()
        .enumerate()
    {
        let notes = store.update("example.test", 202, |l| {
            let prev = match l {
                Loaded::Ok(s) => Some((**s).clone()),
                _ => None,
            };
            step(&c, prev, T0 + 180 * i as i64, o).0
        });
        assert!(notes.is_empty());
    }
    let (text, notes, code) = history::run(tmp.path(), 202, None, false, 20);
    assert_eq!(code, 0);
    assert!(notes.is_empty());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        "202 on example.test: broken at the last run (2026-11-30 14:08 UTC); last healthy: 2026-11-30 14:02 UTC"
    );
    assert!(
        lines[1].starts_with("  2026-11-30 14:05 UTC  healthy → broken  xterm: broken"),
        "{text}"
    );
    assert!(lines[1].contains("Caddy's route for xterm changed cmux-202.lan:39383 → :39376"));
    assert!(lines[2]
        .starts_with("  2026-11-30 14:02 UTC  (first run) → healthy  every service healthy"));
    let (json, _, code) = history::run(tmp.path(), 202, Some("example.test"), true, 1);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["targets"][0]["status"], "broken");
    assert_eq!(v["targets"][0]["last_healthy"], "2026-11-30T14:02:00Z");
    assert_eq!(v["targets"][0]["transitions"].as_array().unwrap().len(), 1);
    assert_eq!(v["targets"][0]["transitions"][0]["from"], "healthy");
    // Nothing recorded: exit 2 and a reason.
    let (_, notes, code) = history::run(tmp.path(), 999, None, false, 20);
    assert_eq!(code, 2);
    assert!(notes[0].contains("nothing recorded for 999"), "{notes:?}");
    // A corrupt file is reported, not a crash.
    std::fs::write(store.path("example.test", 202), "{").unwrap();
    let (_, notes, code) = history::run(tmp.path(), 202, None, false, 20);
    assert_eq!(code, 2);
    assert!(notes[0].contains("not valid JSON"), "{notes:?}");
}

#[test]
fn choose_dir_rules() {
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(choose_dir(Some(tmp.path()), true).unwrap(), None);
    let d = tmp.path().join("a/b");
    assert_eq!(choose_dir(Some(&d), false).unwrap(), Some(d.clone()));
    assert!(d.join("targets").is_dir());
    let f = tmp.path().join("f");
    std::fs::write(&f, "").unwrap();
    let e = choose_dir(Some(&f), false).unwrap_err();
    assert!(e.starts_with("--state-dir "), "{e}");
}

#[test]
fn facts_this_run_could_not_see_are_named_not_compared() {
    let c = Catalog::embedded();
    let (s1, _) = step(&c, None, T0, healthy_target(&c));
    let mut o = seed_target(&c);
    o.routes.clear();
    for s in &mut o.services {
        s.internal = Probe::not_run("the exec channel is unavailable");
    }
    o.exec.run = ExecRun::Rejected {
        status: 401,
        body: String::new(),
        from_edge: false,
    };
    let (_, t) = step(&c, Some(s1), T0 + 60, o);
    let since = t
        .state
        .as_ref()
        .unwrap()
        .since_last_healthy
        .clone()
        .unwrap();
    assert!(since.changes.is_empty(), "{:?}", since.changes);
    assert_eq!(
        since.not_compared,
        ["Caddy's routes", "what answers inside the container"]
    );
    let i = t
        .observation
        .services
        .iter()
        .position(|s| s.name == "xterm")
        .unwrap();
    assert_eq!(
        t.verdict.services[i].evidence.last().unwrap(),
        "since the last healthy run (2026-11-30 14:02 UTC): none of the recorded facts that bear on this verdict changed (not seen in this run, so not compared: Caddy's routes, what answers inside the container)"
    );
}

#[test]
fn a_run_narrowed_to_some_services_never_replaces_the_last_known_good() {
    let c = Catalog::embedded();
    let (s1, _) = step(&c, None, T0, healthy_target(&c));
    let (s2, _) = step(&c, Some(s1), T0 + 60, seed_target(&c));
    // `--services vnc`: healthy for what it checked.
    let narrow = c.select(&["vnc".to_string()]).unwrap();
    let mut o = healthy_target(&narrow);
    o.routes.retain(|r| r.service == "vnc");
    let (s3, t3) = step(&narrow, Some(s2), T0 + 120, o);
    assert_eq!(s3.last.status, "healthy");
    assert_eq!(
        s3.last_healthy.as_ref().unwrap().at,
        T0,
        "the full healthy run stays"
    );
    assert_eq!(t3.state.unwrap().last_healthy_at, Some(T0));
    assert!(
        s3.transitions
            .last()
            .unwrap()
            .cause
            .starts_with("healthy, only ")
            && s3
                .transitions
                .last()
                .unwrap()
                .cause
                .ends_with("vnc checked"),
        "{:?}",
        s3.transitions.last()
    );
    // The next full broken run still diffs against the full healthy run.
    let (_, t4) = step(&c, Some(s3), T0 + 180, seed_target(&c));
    let since = t4.state.unwrap().since_last_healthy.unwrap();
    assert_eq!(since.at_unix, T0);
    assert_eq!(since.changes.len(), 1);
    // A full healthy run does replace it.
    let (s5, _) = step(&c, None, T0, healthy_target(&c));
    let (s6, _) = step(&c, Some(s5), T0 + 240, healthy_target(&c));
    assert_eq!(s6.last_healthy.unwrap().at, T0 + 240);
}
