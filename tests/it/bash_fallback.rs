//! The internal probe's bash-only fallback (`/dev/tcp`), used where a container has no curl: the
//! generated script runs under real bash with a PATH that holds coreutils but no curl, against
//! loopback servers, and its records parse into the same observations curl's would.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::time::Duration;

use pvediag::observation::{FailureKind, Probe};
use pvediag::probe::internal::{build_script, new_nonce, parse_record, ScriptProbe};

/// A PATH with the tools the script uses, and no curl.
pub(crate) fn path_without_curl() -> Option<tempfile::TempDir> {
    let dir = tempfile::tempdir().unwrap();
    for tool in [
        "head", "base64", "mktemp", "rm", "chmod", "mkdir", "sleep", "grep", "cat", "tr", "kill",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(tool))
            .find(|p| p.exists());
        match found {
            Some(p) => symlink(p, dir.path().join(tool)).unwrap(),
            None if tool == "kill" => {} // a bash builtin
            None => {
                eprintln!("SKIPPED: {tool} not found");
                return None;
            }
        }
    }
    Some(dir)
}

fn probe(name: &str, port: u16, path: &str, headers: &[(&str, &str)]) -> ScriptProbe {
    ScriptProbe {
        name: name.into(),
        host: "127.0.0.1".into(),
        port,
        method: "GET".into(),
        path: path.into(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn bash_fallback_answers_refusals_and_timeouts() {
    let Some(bin) = path_without_curl() else {
        return;
    };
    // A server that answers once, like cmux-pty.
    let ok = TcpListener::bind("127.0.0.1:0").unwrap();
    let ok_port = ok.local_addr().unwrap().port();
    let seen = std::thread::spawn(move || {
        let (mut c, _) = ok.accept().unwrap();
        // Read the whole request head, however it was split into writes.
        let mut req = Vec::new();
        let mut buf = [0u8; 2048];
        while !req.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = c.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            req.extend_from_slice(&buf[..n]);
        }
        let req = String::from_utf8_lossy(&req).to_string();
        c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\nConnection: close\r\n\r\n{\"sessions\":[]}").unwrap();
        req
    });
    // Nothing listens here.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Accepts and never answers.
    let mute = TcpListener::bind("127.0.0.1:0").unwrap();
    let mute_port = mute.local_addr().unwrap().port();
    let _keep = std::thread::spawn(move || {
        let conns: Vec<_> = mute.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });

    let nonce = new_nonce();
    let script = build_script(
        &[
            probe(
                "xterm",
                ok_port,
                "/sessions",
                &[("X-Test", "it's \"quoted\" $(id)")],
            ),
            probe("vscode", closed_port, "/version", &[]),
            probe("cdp", mute_port, "/json/version", &[]),
        ],
        &nonce,
        Duration::from_secs(1),
    );
    let out = std::process::Command::new("/bin/bash")
        .arg("-c")
        .arg(&script)
        .env_clear()
        .env("PATH", bin.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let records: Vec<_> = stdout
        .lines()
        .filter_map(|l| parse_record(l, &nonce))
        .collect();
    assert_eq!(
        records.len(),
        3,
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(records.iter().all(|r| r.via_bash), "curl was not on PATH");
    let get = |n: &str| &records.iter().find(|r| r.name == n).unwrap().probe;

    let x = get("xterm").response().expect("an answer");
    assert_eq!(x.status, 200);
    assert_eq!(x.body, r#"{"sessions":[]}"#);
    assert_eq!(x.header("access-control-allow-origin"), Some("*"));
    let req = seen.join().unwrap();
    assert!(req.starts_with("GET /sessions HTTP/1.0\r\n"), "{req}");
    assert!(
        req.contains("X-Test: it's \"quoted\" $(id)\r\n"),
        "header sent literally: {req}"
    );
    assert!(
        req.contains(&format!("Host: 127.0.0.1:{ok_port}\r\n")),
        "{req}"
    );

    assert_eq!(get("vscode").failure(), Some(FailureKind::Refused));
    assert_eq!(get("cdp").failure(), Some(FailureKind::Timeout));
    assert!(matches!(get("cdp"), Probe::Failed { .. }));
}
