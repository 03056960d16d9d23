//! Hostile and broken servers (issue 5): each is a loopback server made for the test that writes
//! exact bytes. Every case must end in a verdict within its deadline, without a panic, with the
//! memory it holds bounded by pvediag's caps, and with the evidence of what went wrong.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::servers::*;
use base64::Engine as _;
use pvediag::observation::{ExecRun, FailureKind, Probe};
use pvediag::report::Report;
use pvediag::verdict::Status;
use tokio::io::AsyncWriteExt;

fn xterm(r: &Report) -> &pvediag::observation::ServiceObservation {
    r.targets[0]
        .observation
        .services
        .iter()
        .find(|s| s.name == "xterm")
        .expect("xterm observed")
}

fn status_of(r: &Report, name: &str) -> Status {
    r.targets[0]
        .verdict
        .services
        .iter()
        .zip(&r.targets[0].observation.services)
        .find(|(_, o)| o.name == name)
        .map(|(v, _)| v.status)
        .expect("service verdict")
}

/// Every rendering of the report works (JSON parses, the table is not empty).
fn renders(r: &Report) {
    use pvediag::report::Format as _;
    let j = report_json(r);
    assert!(j["targets"].is_array());
    let t = pvediag::report::table::TableFormat::new(false, 100).render(r);
    assert!(!t.is_empty());
}

fn args(addr: std::net::SocketAddr, services: &str, extra: &[&str]) -> Vec<String> {
    let mut a = plain_args(addr, services);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

// ------------------------------------------------------------------------------------------------
// The external path: the public URL of xterm answers badly.

#[test]
fn endless_body_is_capped_and_the_probe_ends() {
    let s = Hostile::start(|_req, mut c| async move {
        send(&mut c, b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
        let block = chunk(&[b'x'; 16 * 1024]);
        // ~1 GiB if nobody stops reading; the client stops at its cap.
        for _ in 0..65536 {
            if c.get_mut().write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let resp = xterm(&r).external.response().expect("a response");
    assert!(resp.body_truncated);
    assert!(resp.body.len() <= pvediag::probe::external::BODY_CAP);
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
    renders(&r);
}

#[test]
fn close_delimited_endless_body_is_capped() {
    let s = Hostile::start(|_req, mut c| async move {
        send(
            &mut c,
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n",
        )
        .await;
        let block = vec![b'y'; 64 * 1024];
        for _ in 0..16384 {
            if c.get_mut().write_all(&block).await.is_err() {
                return;
            }
        }
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let resp = xterm(&r).external.response().expect("a response");
    assert!(resp.body_truncated && resp.body.len() <= pvediag::probe::external::BODY_CAP);
}

#[test]
fn huge_headers_fail_as_a_protocol_error() {
    let s = Hostile::start(|_req, mut c| async move {
        send(&mut c, b"HTTP/1.1 200 OK\r\n").await;
        let line = format!("X-Filler: {}\r\n", "h".repeat(1000));
        for _ in 0..20_000 {
            if c.get_mut().write_all(line.as_bytes()).await.is_err() {
                return;
            }
        }
        send(&mut c, b"Content-Length: 0\r\n\r\n").await;
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(
        xterm(&r).external.failure().is_some(),
        "{:?}",
        xterm(&r).external
    );
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
    renders(&r);
}

#[test]
fn a_server_dripping_one_byte_per_second_times_out() {
    let s = Hostile::start(|_req, mut c| async move {
        for b in b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            .iter()
            .cycle()
        {
            if c.get_mut().write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "1s"]));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(xterm(&r).external.failure(), Some(FailureKind::Timeout));
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
}

#[test]
fn a_slow_body_is_cut_by_the_probe_timeout() {
    let s = Hostile::start(|_req, mut c| async move {
        send(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{",
        )
        .await;
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "1s"]));
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert_eq!(xterm(&r).external.failure(), Some(FailureKind::Timeout));
}

#[test]
fn connection_reset_mid_body_is_a_receive_failure() {
    let s = Hostile::start(|_req, mut c| async move {
        send(
            &mut c,
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"sessions\":[",
        )
        .await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        reset(c);
    });
    let (r, took) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let kind = xterm(&r).external.failure();
    assert!(
        matches!(
            kind,
            Some(FailureKind::Receive | FailureKind::EmptyReply | FailureKind::Protocol)
        ),
        "{:?}",
        xterm(&r).external
    );
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
}

#[test]
fn a_redirect_is_evidence_and_is_not_followed() {
    for location in ["/sessions/next", "https://evil.example.com/steal"] {
        let hits = Arc::new(AtomicUsize::new(0));
        let h = hits.clone();
        let s = Hostile::start(move |_req, mut c| {
            h.fetch_add(1, Ordering::SeqCst);
            async move {
                send(&mut c, &response(302, &[("location", location)], b"")).await;
            }
        });
        let (r, _) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
        let resp = xterm(&r).external.response().expect("the 3xx itself");
        assert_eq!(resp.status, 302);
        assert_eq!(resp.header("location"), Some(location));
        assert_eq!(hits.load(Ordering::SeqCst), 1, "a redirect was followed");
        assert_ne!(status_of(&r, "xterm"), Status::Healthy);
        renders(&r);
    }
}

#[test]
fn invalid_utf8_in_headers_and_body_is_kept_lossily() {
    let s = Hostile::start(|_req, mut c| async move {
        let mut bytes = b"HTTP/1.1 200 OK\r\nServer: caddy\xff\xfe\r\nContent-Type: application/json\r\nContent-Length: 6\r\nConnection: close\r\n\r\n".to_vec();
        bytes.extend_from_slice(b"{\xc3\x28\xff}\n");
        send(&mut c, &bytes).await;
    });
    let (r, _) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    let resp = xterm(&r).external.response().expect("a response");
    assert!(resp.body.contains('\u{fffd}'));
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
    renders(&r);
}

#[test]
fn a_server_that_is_not_http_is_a_protocol_failure() {
    let s = Hostile::start(|_req, mut c| async move {
        send(
            &mut c,
            b"SSH-2.0-OpenSSH_9.2\r\n\x00\x01\x02garbage\r\n\r\n",
        )
        .await;
    });
    let (r, _) = diagnose(&args(s.addr, "xterm", &["--timeout", "5s"]));
    assert!(xterm(&r).external.failure().is_some());
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
}

// ------------------------------------------------------------------------------------------------
// The internal path: a fake execd that speaks JSON lines badly.

/// The nonce and the service names of pvediag's probe command.
fn parse_command(body: &[u8]) -> (String, Vec<String>) {
    let v: serde_json::Value = serde_json::from_slice(body).expect("a JSON body");
    let cmd = v["command"].as_str().expect("command").to_string();
    let nonce = cmd
        .lines()
        .find_map(|l| l.strip_prefix("n='"))
        .and_then(|l| l.strip_suffix('\''))
        .expect("nonce line")
        .to_string();
    let names = cmd
        .lines()
        .filter_map(|l| l.strip_prefix("p '"))
        .map(|l| l.split('\'').next().unwrap().to_string())
        .collect();
    (nonce, names)
}

/// A healthy curl record for a service.
fn record(nonce: &str, name: &str) -> String {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (h, b): (&[u8], &[u8]) = match name {
        "exec" => (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"ok"),
        _ => (
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\n\r\n",
            br#"{"sessions":[]}"#,
        ),
    };
    format!(
        "@pvediag1 {nonce} {name} via=curl rc=0 code=200 t=0.002 h={} b={} e= end",
        b64(h),
        b64(b)
    )
}

fn line(kind: &str, data: &str) -> Vec<u8> {
    let mut v = serde_json::to_vec(&serde_json::json!({"type": kind, "data": data})).unwrap();
    v.push(b'\n');
    v
}

/// How the fake execd answers `POST /exec`.
#[derive(Clone, Copy, Debug)]
enum Exec {
    /// Every record, then `exit 0`.
    Good,
    /// The first record, then silence with the stream open (children holding stdout).
    SilentAfterFirst,
    /// A 10 MB line, then every record and `exit`.
    HugeLine,
    /// Garbage between the records.
    Garbage,
    /// The first record, then a clean end of the stream without `exit`.
    EndsHalfWay,
    /// The first record, then the connection is cut inside a chunk.
    CutHalfWay,
    /// A Cloudflare HTML error page with status 200 where JSON lines were expected.
    Html200,
    /// Cloudflare's 502 page.
    Cloudflare502,
    /// execd rejects: this status and body.
    Status(u16),
    /// Accepts the connection, reads the request, never answers.
    Mute,
}

/// A fake container: `GET /exec` tells the auth mode (405: off), `GET /healthz` and
/// `GET /sessions` are healthy, `POST /exec` behaves as `mode`.
fn fake_execd(mode: Exec) -> Hostile {
    Hostile::start(move |req, mut c| async move {
        match (req.method.as_str(), req.path()) {
            ("GET", "/exec") => {
                let st = if let Exec::Status(401) = mode {
                    401
                } else {
                    405
                };
                send(&mut c, &response(st, &[], b"")).await
            }
            ("GET", "/healthz") => {
                send(
                    &mut c,
                    &response(200, &[("content-type", "text/plain")], b"ok"),
                )
                .await
            }
            ("GET", "/sessions") => {
                send(
                    &mut c,
                    &response(
                        200,
                        &[
                            ("content-type", "application/json"),
                            ("access-control-allow-origin", "*"),
                        ],
                        br#"{"sessions":[]}"#,
                    ),
                )
                .await
            }
            ("POST", "/exec") => exec_answer(mode, &req.body, &mut c).await,
            _ => send(&mut c, &response(404, &[], b"")).await,
        }
    })
}

async fn exec_answer(mode: Exec, body: &[u8], c: &mut Conn) {
    let (nonce, names) = parse_command(body);
    let recs: Vec<Vec<u8>> = names
        .iter()
        .map(|n| line("stdout", &record(&nonce, n)))
        .collect();
    let exit = b"{\"type\":\"exit\",\"code\":0}\n";
    match mode {
        Exec::Good => {
            send(c, JSONLINES_HEAD).await;
            for r in &recs {
                send(c, &chunk(r)).await;
            }
            send(c, &chunk(exit)).await;
            send(c, b"0\r\n\r\n").await;
        }
        Exec::SilentAfterFirst => {
            send(c, JSONLINES_HEAD).await;
            send(c, &chunk(&recs[0])).await;
            send(c, &chunk(&line("stderr", "child still running"))).await;
            tokio::time::sleep(Duration::from_secs(120)).await;
        }
        Exec::HugeLine => {
            send(c, JSONLINES_HEAD).await;
            let mut big = b"{\"type\":\"stdout\",\"data\":\"".to_vec();
            big.resize(10 * 1024 * 1024, b'A');
            big.extend_from_slice(b"\"}\n");
            for part in big.chunks(256 * 1024) {
                send(c, &chunk(part)).await;
            }
            for r in &recs {
                send(c, &chunk(r)).await;
            }
            send(c, &chunk(exit)).await;
            send(c, b"0\r\n\r\n").await;
        }
        Exec::Garbage => {
            send(c, JSONLINES_HEAD).await;
            for r in &recs {
                send(
                    c,
                    &chunk(b"<html>not json</html>\n\xff\xfe\x00\n{\"type\":\n"),
                )
                .await;
                send(c, &chunk(r)).await;
            }
            send(
                c,
                &chunk(b"{\"type\":\"stdout\",\"data\":\"@pvediag1 forged\"}\n"),
            )
            .await;
            send(c, &chunk(exit)).await;
            send(c, b"0\r\n\r\n").await;
        }
        Exec::EndsHalfWay => {
            send(c, JSONLINES_HEAD).await;
            send(c, &chunk(&recs[0])).await;
            send(c, b"0\r\n\r\n").await;
        }
        Exec::CutHalfWay => {
            send(c, JSONLINES_HEAD).await;
            send(c, &chunk(&recs[0])).await;
            send(c, b"100\r\n{\"type\":\"std").await;
        }
        Exec::Html200 => {
            let page = b"<!DOCTYPE html><html><head><title>Attention Required! | Cloudflare</title></head><body>Sorry, you have been blocked</body></html>\n";
            send(
                c,
                &response(
                    200,
                    &[
                        ("content-type", "text/html"),
                        ("server", "cloudflare"),
                        ("cf-ray", "8f00aa00bb00cc00-LAB"),
                    ],
                    page,
                ),
            )
            .await;
        }
        Exec::Cloudflare502 => {
            send(
                c,
                &response(
                    502,
                    &[
                        ("content-type", "text/html"),
                        ("server", "cloudflare"),
                        ("cf-ray", "8f00aa00bb00cc00-LAB"),
                    ],
                    b"<html><title>502 Bad gateway</title>error code: 502</html>",
                ),
            )
            .await;
        }
        Exec::Status(st) => {
            let (ct, body): (&str, &[u8]) = match st {
                401 => ("application/json", b"{\"error\":\"Unauthorized\"}"),
                415 => ("text/plain", b"Content-Type must be application/json"),
                400 => ("text/plain", b"Invalid JSON body: unexpected EOF"),
                405 => ("text/plain", b"Method Not Allowed"),
                _ => ("text/plain", b"internal error"),
            };
            send(c, &response(st, &[("content-type", ct)], body)).await;
        }
        Exec::Mute => tokio::time::sleep(Duration::from_secs(120)).await,
    }
}

fn exec_args(s: &Hostile, extra: &[&str]) -> Vec<String> {
    let mut a = args(s.addr, "exec,xterm", extra);
    a.push("--exec-url".into());
    a.push(format!("http://{}", s.addr));
    a
}

fn exec_run(r: &Report) -> &ExecRun {
    &r.targets[0].observation.exec.run
}

#[test]
fn fake_execd_good_stream_is_healthy() {
    let s = fake_execd(Exec::Good);
    let (r, _) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    assert!(
        matches!(
            exec_run(&r),
            ExecRun::Completed {
                exit_code: Some(0),
                ..
            }
        ),
        "{:?}",
        exec_run(&r)
    );
    assert!(xterm(&r).internal.response().is_some());
    assert_eq!(
        status_of(&r, "xterm"),
        Status::Healthy,
        "{:#?}",
        r.targets[0].verdict
    );
}

#[test]
fn a_stream_without_exit_is_cut_by_the_deadline_and_keeps_what_arrived() {
    let s = fake_execd(Exec::SilentAfterFirst);
    let (r, took) = diagnose(&exec_args(&s, &["--timeout", "1s", "--deadline", "3s"]));
    assert!(took < Duration::from_secs(6), "took {took:?}");
    assert!(
        matches!(exec_run(&r), ExecRun::Incomplete { .. }),
        "{:?}",
        exec_run(&r)
    );
    let obs = &r.targets[0].observation.services;
    let exec = obs.iter().find(|s| s.name == "exec").unwrap();
    assert!(
        exec.internal.response().is_some(),
        "the record that arrived is used"
    );
    assert!(
        matches!(&xterm(&r).internal, Probe::NotRun { reason } if reason.contains("cut")),
        "{:?}",
        xterm(&r).internal
    );
    assert_ne!(r.targets[0].verdict.exec.status, Status::Healthy);
    renders(&r);
}

#[test]
fn a_10_mb_line_is_skipped_and_the_records_after_it_are_used() {
    let s = fake_execd(Exec::HugeLine);
    let (r, took) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    assert!(took < Duration::from_secs(8), "took {took:?}");
    match exec_run(&r) {
        ExecRun::Completed {
            exit_code: Some(0),
            notes,
            ..
        } => assert!(notes.iter().any(|n| n.contains("over-long")), "{notes:?}"),
        other => panic!("{other:?}"),
    }
    assert!(xterm(&r).internal.response().is_some());
}

#[test]
fn garbage_between_lines_is_skipped_and_counted() {
    let s = fake_execd(Exec::Garbage);
    let (r, _) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    match exec_run(&r) {
        ExecRun::Completed {
            exit_code: Some(0),
            notes,
            ..
        } => assert!(notes.iter().any(|n| n.contains("malformed")), "{notes:?}"),
        other => panic!("{other:?}"),
    }
    assert!(xterm(&r).internal.response().is_some());
    assert_eq!(status_of(&r, "xterm"), Status::Healthy);
}

#[test]
fn a_stream_that_stops_half_way_marks_the_rest_not_run() {
    for mode in [Exec::EndsHalfWay, Exec::CutHalfWay] {
        let s = fake_execd(mode);
        let (r, took) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
        assert!(took < Duration::from_secs(5), "{mode:?} took {took:?}");
        match exec_run(&r) {
            ExecRun::Completed {
                exit_code: None,
                notes,
                ..
            } => assert!(!notes.is_empty(), "{mode:?}"),
            other => panic!("{mode:?}: {other:?}"),
        }
        let exec = r.targets[0]
            .observation
            .services
            .iter()
            .find(|s| s.name == "exec")
            .unwrap();
        assert!(exec.internal.response().is_some(), "{mode:?}");
        assert!(
            matches!(xterm(&r).internal, Probe::NotRun { .. }),
            "{mode:?}: {:?}",
            xterm(&r).internal
        );
        // The public URL answered well: a healthy external answer wins (docs/diagnosis.md).
        let ch = &r.targets[0].verdict.exec;
        assert!(
            ch.summary.contains("exit missing"),
            "{mode:?}: {}",
            ch.summary
        );
    }
}

#[test]
fn an_html_page_where_json_lines_were_expected() {
    let s = fake_execd(Exec::Html200);
    let (r, _) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    match exec_run(&r) {
        ExecRun::Completed {
            exit_code: None,
            notes,
            ..
        } => assert!(notes.iter().any(|n| n.contains("malformed")), "{notes:?}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(xterm(&r).internal, Probe::NotRun { .. }));
    let ch = &r.targets[0].verdict.exec;
    assert_eq!(ch.status, Status::Inconclusive, "{}", ch.summary);
    assert!(ch.summary.contains("no record"), "{}", ch.summary);

    let s = fake_execd(Exec::Cloudflare502);
    let (r, _) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    assert!(
        matches!(
            exec_run(&r),
            ExecRun::Rejected {
                status: 502,
                from_edge: true,
                ..
            }
        ),
        "{:?}",
        exec_run(&r)
    );
    assert_ne!(r.targets[0].verdict.exec.status, Status::Healthy);
}

#[test]
fn execd_rejections_are_reported_with_their_status() {
    for st in [401u16, 405, 415, 400, 500] {
        let s = fake_execd(Exec::Status(st));
        let (r, took) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
        assert!(took < Duration::from_secs(5));
        match exec_run(&r) {
            ExecRun::Rejected {
                status, from_edge, ..
            } => {
                assert_eq!(*status, st);
                assert!(!from_edge);
            }
            other => panic!("{st}: {other:?}"),
        }
        let v = &r.targets[0].verdict.exec;
        assert_ne!(v.status, Status::Healthy, "{st}");
        assert!(v.summary.contains(&st.to_string()), "{st}: {}", v.summary);
        assert!(matches!(xterm(&r).internal, Probe::NotRun { .. }));
        renders(&r);
    }
}

// ------------------------------------------------------------------------------------------------
// Deadlines.

#[test]
fn per_probe_timeout_holds_against_a_mute_server() {
    let s = Hostile::start(|_req, c| async move {
        let _hold = c;
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    let (r, took) = diagnose(&exec_args(&s, &["--timeout", "1s", "--deadline", "30s"]));
    // Probes: 1 s; the exec round trip: timeout + its grace (5 s).
    assert!(took < Duration::from_secs(6 + 3), "took {took:?}");
    assert_eq!(xterm(&r).external.failure(), Some(FailureKind::Timeout));
    assert!(matches!(
        exec_run(&r),
        ExecRun::Failed {
            kind: FailureKind::Timeout,
            ..
        }
    ));
}

#[test]
fn the_deadline_holds_against_a_mute_server_and_a_long_timeout() {
    let s = fake_execd(Exec::Mute);
    let (r, took) = diagnose(&exec_args(&s, &["--timeout", "60s", "--deadline", "2s"]));
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}");
    assert_ne!(r.targets[0].verdict.exec.status, Status::Healthy);
}

#[test]
fn the_deadline_holds_against_an_exec_stream_kept_open_by_children() {
    let s = fake_execd(Exec::SilentAfterFirst);
    let (r, took) = diagnose(&exec_args(&s, &["--timeout", "60s", "--deadline", "2s"]));
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}");
    assert!(matches!(exec_run(&r), ExecRun::Incomplete { .. }));
}

#[test]
fn a_deadline_larger_than_the_timeout_never_lengthens_the_probes() {
    // --timeout 1s --deadline 3s: the probes keep their 1 s even though the exec grace shrinks.
    let s = Hostile::start(|_req, c| async move {
        let _hold = c;
        tokio::time::sleep(Duration::from_secs(120)).await;
    });
    let (r, _) = diagnose(&args(
        s.addr,
        "xterm",
        &["--timeout", "1s", "--deadline", "3s"],
    ));
    match &xterm(&r).external {
        Probe::Failed {
            kind: FailureKind::Timeout,
            elapsed_ms,
            ..
        } => assert!(*elapsed_ms < 1900, "the 1 s timeout took {elapsed_ms} ms"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_binary_ends_within_its_deadline_against_a_black_hole() {
    let s = fake_execd(Exec::Mute);
    let mut a = exec_args(
        &s,
        &["--timeout", "30s", "--deadline", "2s", "--format", "json"],
    );
    a.retain(|x| x != "--color" && x != "never");
    let start = std::time::Instant::now();
    let out = pvediag().args(&a).output().unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_secs(2 + 3), "took {took:?}");
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["status"], "inconclusive");
}

// ------------------------------------------------------------------------------------------------
// TLS: untrusted, expired, wrong name.

fn tls_args(addr: std::net::SocketAddr, extra: &[&str]) -> Vec<String> {
    let mut a = plain_args(addr, "xterm");
    a[4] = "https://{service}-{vmid}.{domain}".into();
    a.extend(["--timeout".into(), "5s".into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn tls_case(kind: CertKind, accepted_with: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(kind);
    let ca = write_private(dir.path(), "ca.pem", tls.ca_pem.as_bytes());
    let s = TlsServer::start(&tls);

    let (r, _) = diagnose(&tls_args(s.addr, &[]));
    assert_eq!(
        xterm(&r).external.failure(),
        Some(FailureKind::Certificate),
        "{:?}",
        xterm(&r).external
    );
    assert_ne!(status_of(&r, "xterm"), Status::Healthy);
    let table = {
        use pvediag::report::Format as _;
        pvediag::report::table::TableFormat::new(false, 100).render(&r)
    };
    assert!(table.contains("certificate"), "{table}");

    let with: Vec<&str> = accepted_with
        .iter()
        .map(|a| if *a == "CA" { ca.as_str() } else { a })
        .collect();
    let (r, _) = diagnose(&tls_args(s.addr, &with));
    let resp = xterm(&r).external.response();
    assert_eq!(
        resp.map(|r| r.status),
        Some(200),
        "{:?}",
        xterm(&r).external
    );
}

#[test]
fn tls_self_made_ca_is_a_certificate_failure_unless_trusted() {
    tls_case(CertKind::Untrusted, &["--cacert", "CA"]);
}

#[test]
fn tls_untrusted_is_accepted_with_insecure() {
    tls_case(CertKind::Untrusted, &["--insecure"]);
}

#[test]
fn tls_expired_is_a_certificate_failure_even_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(CertKind::Expired);
    let ca = write_private(dir.path(), "ca.pem", tls.ca_pem.as_bytes());
    let s = TlsServer::start(&tls);
    let (r, _) = diagnose(&tls_args(s.addr, &["--cacert", &ca]));
    assert_eq!(xterm(&r).external.failure(), Some(FailureKind::Certificate));
    drop(s);
    tls_case(CertKind::Expired, &["-k"]);
}

#[test]
fn tls_wrong_name_is_a_certificate_failure_even_with_its_ca() {
    let dir = tempfile::tempdir().unwrap();
    let tls = make_tls(CertKind::WrongName);
    let ca = write_private(dir.path(), "ca.pem", tls.ca_pem.as_bytes());
    let s = TlsServer::start(&tls);
    let (r, _) = diagnose(&tls_args(s.addr, &["--cacert", &ca]));
    assert_eq!(xterm(&r).external.failure(), Some(FailureKind::Certificate));
    drop(s);
    tls_case(CertKind::WrongName, &["--insecure"]);
}

// ------------------------------------------------------------------------------------------------
// Terminal escapes: text from servers must not reach the terminal as control sequences.

#[test]
fn escape_sequences_from_servers_do_not_reach_the_table() {
    const ESC: &str = "\u{1b}]0;pwned\u{7}\u{1b}[2J";
    let s = Hostile::start(|req, mut c| async move {
        match (req.method.as_str(), req.path()) {
            ("POST", "/exec") => {
                let (nonce, _) = parse_command(&req.body);
                send(&mut c, JSONLINES_HEAD).await;
                for kind in ["stderr", "error"] {
                    let key = if kind == "error" { "message" } else { "data" };
                    let l =
                        serde_json::to_vec(&serde_json::json!({"type": kind, key: ESC})).unwrap();
                    send(&mut c, &chunk(&[l, b"\n".to_vec()].concat())).await;
                }
                let rec = format!(
                    "@pvediag1 {nonce} xterm via=curl rc=7 code=000 t=0 h= b= e={} end",
                    base64::engine::general_purpose::STANDARD.encode(format!("curl: {ESC}"))
                );
                send(&mut c, &chunk(&line("stdout", &rec))).await;
                send(&mut c, &chunk(b"{\"type\":\"exit\",\"code\":0}\n")).await;
                send(&mut c, b"0\r\n\r\n").await;
            }
            _ => {
                let body = format!("bad {ESC} gateway");
                send(
                    &mut c,
                    &response(502, &[("content-type", "text/plain")], body.as_bytes()),
                )
                .await
            }
        }
    });
    let (r, _) = diagnose(&exec_args(&s, &["--timeout", "5s"]));
    use pvediag::report::Format as _;
    let table = pvediag::report::table::TableFormat::new(false, 100).render(&r);
    assert!(
        !table.contains('\u{1b}') && !table.contains('\u{7}'),
        "{table:?}"
    );
    // JSON escapes them, so it is safe as it is.
    let json = pvediag::report::json::Json.render(&r);
    assert!(!json.contains('\u{1b}'));
}
