//! `--retries N` through the binary: a transient edge 504 is retried and the second answer counts; a
//! refused connection is never retried. A plain-HTTP loopback server stands in for the edge.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use assert_cmd::Command;
use serde_json::Value;

/// Answers Cloudflare's 504 to the first `GET /version`, openvscode-server's commit after; 401 to
/// `/exec` (execd's, so the exec call is the exec service's own answer: only vscode's public probe
/// goes out, one request per fact).
fn flaky_edge() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let version = Arc::new(AtomicUsize::new(0));
    let h = version.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().take(64) {
            let Ok(mut c) = conn else { continue };
            let mut buf = [0u8; 4096];
            let n = c.read(&mut buf).unwrap_or(0);
            let req = String::from_utf8_lossy(&buf[..n]).to_string();
            let resp = if req.starts_with("GET /version") {
                if h.fetch_add(1, Ordering::SeqCst) == 0 {
                    "HTTP/1.1 504 Gateway Timeout\r\nserver: cloudflare\r\ncf-ray: 8f00000000000001-LAB\r\ncontent-type: text/plain\r\ncontent-length: 15\r\nconnection: close\r\n\r\nerror code: 504"
                } else {
                    "HTTP/1.1 200 OK\r\nserver: cloudflare\r\ncf-ray: 8f00000000000002-LAB\r\ncontent-type: text/plain\r\ncontent-length: 40\r\nconnection: close\r\n\r\nf1e16e1e6214d7c44d078b1f0607b2388f29d729"
                }
            } else {
                "HTTP/1.1 401 Unauthorized\r\ncontent-type: application/json\r\ncontent-length: 24\r\nconnection: close\r\n\r\n{\"error\":\"Unauthorized\"}"
            };
            let _ = c.write_all(resp.as_bytes());
        }
    });
    (port, version)
}

fn run(port: u16, retries: &str) -> Value {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .env("PVEDIAG_NO_STATE", "1")
        .args([
            "202",
            "--domain",
            "example.test",
            "--services",
            "vscode",
            "--no-origin-check",
        ])
        .args(["--url-template", "http://{service}-{vmid}.{domain}"])
        .args(["--connect-to", &format!("127.0.0.1:{port}")])
        .args(["--retries", retries, "--timeout", "5s", "--format", "json"])
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap()
}

fn vscode_external(v: &Value) -> (&Value, &Value) {
    let s = v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "vscode")
        .unwrap();
    (&s["external"], &s["verdict"])
}

#[test]
fn a_transient_edge_error_is_retried() {
    let (port, count) = flaky_edge();
    let v = run(port, "2");
    let (ext, verdict) = vscode_external(&v);
    assert_eq!(ext["status"], 200, "{ext}");
    assert_eq!(verdict["status"], "healthy");
    assert_eq!(count.load(Ordering::SeqCst), 2, "one retry, then success");
}

#[test]
fn without_retries_the_first_answer_counts() {
    let (port, count) = flaky_edge();
    let v = run(port, "0");
    let (ext, verdict) = vscode_external(&v);
    assert_eq!(ext["status"], 504);
    assert_ne!(verdict["status"], "healthy");
    assert_eq!(count.load(Ordering::SeqCst), 1);
}

#[test]
fn a_refused_connection_is_not_retried() {
    // A port with nothing listening: the answer is final; 10 retries would add ~16 s of backoff.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let start = std::time::Instant::now();
    let v = run(port, "10");
    let (ext, _) = vscode_external(&v);
    assert_eq!(ext["kind"], "refused");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}
