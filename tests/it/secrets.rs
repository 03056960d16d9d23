//! The exec token is never printed (issue 5). A recognisable token is planted through
//! `CMUX_EXECD_AUTH_TOKEN` and `--exec-token-file`, every failure path we can reach is run through
//! the binary in both formats, and all of stdout and stderr is searched for it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::servers::*;

const TOKEN: &str = "PLANTEDfeedface0123456789abcdefPLANTEDsecret42";

/// What a fake execd saw in `Authorization` on `POST /exec`.
type Seen = Arc<Mutex<Vec<String>>>;

/// A fake execd that answers `POST /exec` with `status` and a body that echoes the request's
/// `Authorization` header back (a reflecting endpoint is the worst case for a leak).
fn reflecting_execd(status: u16, seen: Seen) -> Hostile {
    Hostile::start(move |req, mut c| {
        let seen = seen.clone();
        async move {
            let auth = req.header("authorization").unwrap_or("").to_string();
            match (req.method.as_str(), req.path()) {
                ("GET", "/exec") => send(&mut c, &response(401, &[], b"")).await,
                ("POST", "/exec") => {
                    seen.lock().unwrap().push(auth.clone());
                    if status == 200 {
                        // A stream whose lines and error events carry the header back.
                        let mut body = Vec::new();
                        for kind in ["stdout", "stderr", "error"] {
                            let key = if kind == "error" { "message" } else { "data" };
                            body.extend(
                                serde_json::to_vec(
                                    &serde_json::json!({"type": kind, key: format!("got {auth}")}),
                                )
                                .unwrap(),
                            );
                            body.push(b'\n');
                        }
                        body.extend_from_slice(b"not json ");
                        body.extend_from_slice(auth.as_bytes());
                        body.push(b'\n');
                        send(
                            &mut c,
                            &response(200, &[("content-type", "application/jsonlines")], &body),
                        )
                        .await
                    } else {
                        let body =
                            format!("{{\"error\":\"Unauthorized\",\"you_sent\":\"{auth}\"}}");
                        send(
                            &mut c,
                            &response(
                                status,
                                &[("content-type", "application/json")],
                                body.as_bytes(),
                            ),
                        )
                        .await
                    }
                }
                _ => {
                    let body = format!("echo: {auth}");
                    send(
                        &mut c,
                        &response(200, &[("x-echo", &auth)], body.as_bytes()),
                    )
                    .await
                }
            }
        }
    })
}

fn assert_clean(what: &str, out: &std::process::Output) {
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !all.contains(TOKEN) && !all.contains(&TOKEN[..20]),
        "{what}: the token leaked:\n{all}"
    );
    assert!(!all.contains("panicked"), "{what}: panic:\n{all}");
}

struct Run {
    name: String,
    args: Vec<String>,
}

/// Every way of giving the token, in both formats.
fn variants(name: &str, args: &[String], token_file: &str) -> Vec<(String, Vec<String>, bool)> {
    let mut v = Vec::new();
    for fmt in ["json", "table"] {
        let mut a = args.to_vec();
        a.extend(["--format".into(), fmt.into()]);
        v.push((format!("{name} env {fmt}"), a.clone(), true));
        let mut f = a.clone();
        f.extend(["--exec-token-file".into(), token_file.into()]);
        v.push((format!("{name} file {fmt}"), f, false));
    }
    v
}

fn run_all(runs: &[Run], token_file: &str) -> usize {
    let mut n = 0;
    for r in runs {
        for (name, args, via_env) in variants(&r.name, &r.args, token_file) {
            let mut cmd = pvediag();
            cmd.args(&args);
            if via_env {
                cmd.env("CMUX_EXECD_AUTH_TOKEN", TOKEN);
            }
            let out = cmd.output().unwrap();
            assert_clean(&name, &out);
            n += 1;
        }
    }
    n
}

fn base(addr: std::net::SocketAddr, exec_url: &str, extra: &[&str]) -> Vec<String> {
    let mut a = plain_args(addr, "exec,xterm");
    a.extend(["--exec-url".into(), exec_url.into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a.retain(|x| x != "--no-origin-check");
    a
}

#[test]
fn the_token_never_appears_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write_private(dir.path(), "token", format!("{TOKEN}\n\n").as_bytes());
    let seen: Seen = Arc::default();

    let reject = reflecting_execd(401, seen.clone());
    let stream = reflecting_execd(200, seen.clone());
    let broken = reflecting_execd(500, seen.clone());
    let mute = Hostile::start(|_req, c| async move {
        let _hold = c;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let tls = make_tls(CertKind::Untrusted);
    let tls_server = TlsServer::start(&tls);
    let url = |h: &Hostile| format!("http://{}", h.addr);

    let runs = vec![
        Run {
            name: "401 from execd".into(),
            args: base(reject.addr, &url(&reject), &["--timeout", "3s"]),
        },
        Run {
            name: "reflecting stream".into(),
            args: base(stream.addr, &url(&stream), &["--timeout", "3s"]),
        },
        Run {
            name: "500 from execd".into(),
            args: base(broken.addr, &url(&broken), &["--timeout", "3s"]),
        },
        Run {
            name: "exec unreachable".into(),
            args: base(reject.addr, "http://127.0.0.1:1", &["--timeout", "2s"]),
        },
        Run {
            name: "TLS failure".into(),
            args: {
                let mut a = base(tls_server.addr, "", &["--timeout", "2s"]);
                let i = a.iter().position(|x| x == "--exec-url").unwrap();
                a.drain(i..i + 2);
                a[4] = "https://{service}-{vmid}.{domain}".into();
                a
            },
        },
        Run {
            name: "deadline".into(),
            args: base(
                mute.addr,
                &url(&mute),
                &["--timeout", "5s", "--deadline", "1s"],
            ),
        },
        Run {
            name: "bad flag".into(),
            args: base(reject.addr, &url(&reject), &["--timeout", "nope"]),
        },
        Run {
            name: "bad exec url".into(),
            args: base(reject.addr, "ftp://x", &[]),
        },
    ];
    let n = run_all(&runs, &token_file);
    assert_eq!(n, runs.len() * 4);

    // The token was really sent (so the absence above means something): as a bearer, trimmed.
    let seen = seen.lock().unwrap();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|a| a == &format!("Bearer {TOKEN}")),
        "{seen:?}"
    );
}

#[test]
fn a_token_in_an_invalid_form_is_never_echoed() {
    // A token with a space or a newline is rejected without printing it.
    let bad = format!("{TOKEN} {TOKEN}");
    let out = pvediag()
        .args(["202", "--domain", "example.test"])
        .env("CMUX_EXECD_AUTH_TOKEN", &bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_clean("env token with a space", &out);
    let dir = tempfile::tempdir().unwrap();
    let f = write_private(dir.path(), "tok", format!("{TOKEN}\n{TOKEN}\n").as_bytes());
    let out = pvediag()
        .args(["202", "--domain", "example.test", "--exec-token-file", &f])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_clean("two-line token file", &out);
}

#[test]
fn demo_scenarios_print_no_token() {
    if !crate::common::curl_present() {
        return;
    }
    let lab_token = pvediag::lab::scenario("healthy")
        .and_then(|s| s.client_token)
        .expect("the lab has a token");
    for name in pvediag::lab::SCENARIOS {
        for fmt in ["json", "table"] {
            let out = pvediag()
                .args([
                    "demo",
                    "--scenario",
                    name,
                    "--format",
                    fmt,
                    "--timeout",
                    "5s",
                ])
                .env("CMUX_EXECD_AUTH_TOKEN", TOKEN)
                .output()
                .unwrap();
            assert_clean(name, &out);
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!all.contains(&lab_token), "{name}: the lab token leaked");
            assert!(matches!(out.status.code(), Some(0 | 1 | 3)), "{name}");
        }
    }
}

#[test]
fn token_file_with_trailing_newlines_works_and_world_readable_warns() {
    use std::os::unix::fs::PermissionsExt;
    let seen: Seen = Arc::default();
    let s = reflecting_execd(401, seen.clone());
    let dir = tempfile::tempdir().unwrap();
    let f = write_private(dir.path(), "token", format!("{TOKEN}\r\n\n").as_bytes());
    let args = base(
        s.addr,
        &format!("http://{}", s.addr),
        &["--timeout", "3s", "--exec-token-file", &f],
    );

    let out = pvediag().args(&args).output().unwrap();
    assert_clean("private token file", &out);
    assert!(!String::from_utf8_lossy(&out.stderr).contains("readable by other users"));
    assert_eq!(
        seen.lock().unwrap().last().unwrap(),
        &format!("Bearer {TOKEN}")
    );

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = pvediag().args(&args).output().unwrap();
    assert_clean("world-readable token file", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("readable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert_ne!(out.status.code(), Some(2), "a warning, not an error");
    // -q silences the warning along with everything else.
    let out = pvediag().args(&args).arg("-q").output().unwrap();
    assert!(out.stderr.is_empty() && out.stdout.is_empty());
}
