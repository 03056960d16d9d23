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
        // Sizes vary so a kill lands in writes of every length.
        let size = 1 + (i as usize * 37) % 200;
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
