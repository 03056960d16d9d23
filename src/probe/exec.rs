//! The internal channel: cmux-execd's `POST /exec` JSON-lines stream, and its auth-mode probe.

use std::time::{Duration, Instant};

use crate::http::classify_error;
use crate::made_by::{edge_gate, made_by_cloudflare, made_by_edge};
use crate::observation::{AuthMode, ExecRun, FailureKind, HttpResponse, Probe};
use crate::probe::backend::{parse_line as parse_backend_line, BackendRecord};
use crate::probe::internal::{parse_batch, parse_record, printable, Record};
use crate::probe::jsonlines::{Event, Parser};
use crate::secret::{AccessToken, Secret};

/// What one exec round trip gave: the channel outcome and the records that arrived.
#[derive(Debug)]
pub(crate) struct ExecResult {
    pub(crate) run: ExecRun,
    pub(crate) records: Vec<Record>,
    /// Back-end, unit and journal records ([`crate::probe::backend`]).
    pub(crate) backend: Vec<BackendRecord>,
    /// Who the command ran in (its identity line), when it said.
    pub(crate) identity: Option<crate::identity::ReportedIdentity>,
}

/// `GET /exec`: 401 means auth is on, 405 means it is off. Side-effect free.
pub(crate) async fn auth_mode(
    client: &reqwest::Client,
    exec_url: &str,
    timeout: Duration,
    access: Option<&AccessToken>,
) -> (AuthMode, Probe) {
    let probe = crate::http::fetch_with(
        client,
        crate::http::Request {
            method: "GET",
            url: &format!("{exec_url}/exec"),
            headers: &[],
            keep_headers: &[],
            body_cap: 1024,
            timeout,
        },
        access,
    )
    .await;
    let mode = match probe.response() {
        Some(r) if r.status == 401 && !made_by_edge(r) => AuthMode::Required,
        Some(r) if r.status == 405 && !made_by_edge(r) => AuthMode::Off,
        _ => AuthMode::Unknown,
    };
    (mode, probe)
}

/// What the exec call sends besides the command: execd's token and the Access service token.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Credentials<'a> {
    pub(crate) token: Option<&'a Secret>,
    pub(crate) access: Option<&'a AccessToken>,
}

/// The auth mode as far as the exec call's own answer tells it, so that `GET /exec` is sent only
/// when it does not (`None`):
/// - execd's 401: auth is on (and the token, if one was sent, was refused);
/// - execd took the request (200, or 400/405/415 after the auth check) and no token was sent: off;
/// - a token was sent and accepted: execd's answer to `GET /exec` from inside the container
///   (`inside`, the same 401/405 semantics) tells whether auth is on;
/// - no HTTP answer at all: the route gave none, `GET /exec` through it would not either (unknown).
pub(crate) fn auth_mode_from_exec(
    run: &ExecRun,
    token_sent: bool,
    inside: Option<&Probe>,
) -> Option<AuthMode> {
    match run {
        ExecRun::Rejected {
            status: 401,
            from_edge: false,
            ..
        } => Some(AuthMode::Required),
        ExecRun::Failed { .. } => Some(AuthMode::Unknown),
        r if r.reached_execd() && !token_sent => Some(AuthMode::Off),
        r if r.reached_execd() => match inside.and_then(Probe::response) {
            Some(resp) if resp.status == 401 => Some(AuthMode::Required),
            Some(resp) if resp.status == 405 => Some(AuthMode::Off),
            _ => None,
        },
        _ => None,
    }
}

/// Why the exec service's own public probe (`GET /healthz`) was not sent: the exec call through the
/// same public URL reached cmux-execd. The verdict engine reads this as execd answering through
/// the tunnel ([`crate::verdict`]).
pub(crate) const ANSWERED_BY_EXEC_CALL: &str =
    "answered by the exec call: POST /exec through this URL reached cmux-execd";

/// The exec service's external observation as far as the exec call through its public URL gives
/// it; `None` when the answer leaves it open (an answer not made by execd: then `GET /healthz` is
/// sent). A transport failure is the route's, whatever the path: it is kept as the observation.
pub(crate) fn external_from_exec(run: &ExecRun, elapsed_ms: u64) -> Option<Probe> {
    match run {
        r if r.reached_execd() => Some(Probe::not_run(ANSWERED_BY_EXEC_CALL)),
        ExecRun::Failed { kind, message } => Some(Probe::Failed {
            kind: *kind,
            message: format!("the exec call (POST /exec) through this URL: {message}"),
            elapsed_ms,
        }),
        _ => None,
    }
}

/// Runs `command` through `POST {exec_url}/exec` and collects the records of `nonce`.
///
/// The stream is read until the `exit` event (children of the command may keep the stream open
/// after bash exits), the end of the stream, or `deadline`, whichever comes first.
pub(crate) async fn run(
    client: &reqwest::Client,
    exec_url: &str,
    creds: Credentials<'_>,
    command: &str,
    nonce: &str,
    exec_timeout: Duration,
    deadline: Duration,
) -> ExecResult {
    let Credentials { token, access } = creds;
    let start = Instant::now();
    let body = serde_json::json!({
        "command": command,
        "timeout_ms": exec_timeout.as_millis() as u64,
    });
    let mut rb = client
        .post(format!("{exec_url}/exec"))
        .header("content-type", "application/json")
        .header("accept", "application/jsonlines")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.header("authorization", t.bearer_header());
    }
    if let Some(a) = access {
        for (k, v) in a.headers() {
            rb = rb.header(k, v);
        }
    }
    let sent = tokio::time::timeout(deadline, rb.send()).await;
    let mut resp = match sent {
        Err(_) => {
            return ExecResult {
                run: ExecRun::Failed {
                    kind: FailureKind::Timeout,
                    message: format!("no answer within {} ms", deadline.as_millis()),
                },
                records: Vec::new(),
                backend: Vec::new(),
                identity: None,
            }
        }
        Ok(Err(e)) => {
            let (kind, message) = classify_error(&e);
            return ExecResult {
                run: ExecRun::Failed { kind, message },
                records: Vec::new(),
                backend: Vec::new(),
                identity: None,
            };
        }
        Ok(Ok(r)) => r,
    };
    let status = resp.status().as_u16();
    if status != 200 {
        let headers = crate::http::keep_headers(resp.headers(), &[]);
        let remaining = deadline.saturating_sub(start.elapsed());
        let mut body = Vec::new();
        let _ = tokio::time::timeout(remaining, async {
            while let Ok(Some(c)) = resp.chunk().await {
                body.extend_from_slice(&c[..c.len().min(4096 - body.len().min(4096))]);
                if body.len() >= 4096 {
                    break;
                }
            }
        })
        .await;
        let mut body = redact(String::from_utf8_lossy(&body).into_owned(), token);
        if let Some(a) = access {
            body = redact(body, Some(&Secret::new(a.expose_secret())));
        }
        let answer = HttpResponse {
            status,
            headers,
            body: body.clone(),
            body_truncated: false,
        };
        if let Some(gate) = edge_gate(&answer) {
            return ExecResult {
                run: ExecRun::Gated { status, gate },
                records: Vec::new(),
                backend: Vec::new(),
                identity: None,
            };
        }
        let from_edge = made_by_cloudflare(&answer);
        return ExecResult {
            run: ExecRun::Rejected {
                status,
                body: body.chars().take(300).collect(),
                from_edge,
            },
            records: Vec::new(),
            backend: Vec::new(),
            identity: None,
        };
    }
    let mut parser = Parser::new();
    let mut records = Vec::new();
    let mut backend = Vec::new();
    let mut notes = Vec::new();
    let mut exit_code = None;
    let mut stderr_lines = 0usize;
    let mut cut = false;
    let mut identity = None;
    let mut handle = |ev: Event,
                      records: &mut Vec<Record>,
                      backend: &mut Vec<BackendRecord>,
                      notes: &mut Vec<String>|
     -> bool {
        match ev {
            Event::Stdout(line) => {
                if let Some(r) = parse_record(&line, nonce) {
                    records.push(r);
                } else if let Some(rs) = parse_batch(&line, nonce) {
                    records.extend(rs);
                } else if let Some(b) = parse_backend_line(&line, nonce) {
                    if backend.len() < 512 {
                        backend.push(b);
                    }
                } else if let Some(id) = crate::identity::parse_line(&line, nonce) {
                    identity = Some(id);
                }
            }
            Event::Stderr(line) => {
                stderr_lines += 1;
                if stderr_lines <= 3 {
                    notes.push(format!(
                        "stderr: {}",
                        printable(&line.chars().take(160).collect::<String>())
                    ));
                }
            }
            Event::Error(m) => notes.push(format!(
                "execd error: {}",
                printable(&m.chars().take(160).collect::<String>())
            )),
            Event::Exit(c) => {
                exit_code = Some(c);
                return true;
            }
        }
        false
    };
    'read: loop {
        let remaining = deadline.saturating_sub(start.elapsed());
        match tokio::time::timeout(remaining, resp.chunk()).await {
            Err(_) => {
                cut = true;
                break;
            }
            Ok(Ok(Some(chunk))) => {
                for ev in parser.feed(&chunk) {
                    if handle(ev, &mut records, &mut backend, &mut notes) {
                        break 'read;
                    }
                }
            }
            Ok(Ok(None)) => {
                if let Some(ev) = parser.finish() {
                    handle(ev, &mut records, &mut backend, &mut notes);
                }
                break;
            }
            Ok(Err(e)) => {
                let (kind, message) = classify_error(&e);
                notes.push(format!(
                    "the stream broke off ({}: {message})",
                    kind.as_str()
                ));
                break;
            }
        }
    }
    if parser.malformed > 0 {
        notes.push(format!("{} malformed line(s) skipped", parser.malformed));
    }
    if parser.oversized > 0 {
        notes.push(format!("{} over-long line(s) skipped", parser.oversized));
    }
    let elapsed_ms = start.elapsed().as_millis() as u64;
    let used_fallback = records.iter().any(|r| r.via_bash);
    let run = if cut {
        notes.push(format!(
            "pvediag's deadline ({} ms) cut the stream",
            deadline.as_millis()
        ));
        ExecRun::Incomplete { notes, elapsed_ms }
    } else {
        if exit_code.is_none() {
            notes.push("the stream ended without an exit event".into());
        }
        ExecRun::Completed {
            exit_code,
            notes,
            used_fallback,
            elapsed_ms,
        }
    };
    let run = match run {
        ExecRun::Incomplete { notes, elapsed_ms } => ExecRun::Incomplete {
            notes: redact_all(notes, token),
            elapsed_ms,
        },
        ExecRun::Completed {
            exit_code,
            notes,
            used_fallback,
            elapsed_ms,
        } => ExecRun::Completed {
            exit_code,
            notes: redact_all(notes, token),
            used_fallback,
            elapsed_ms,
        },
        other => other,
    };
    let records = records
        .into_iter()
        .map(|mut r| {
            if let Probe::Response { response, .. } = &mut r.probe {
                response.body = redact(std::mem::take(&mut response.body), token);
                for (_, v) in &mut response.headers {
                    *v = redact(std::mem::take(v), token);
                }
            }
            if let Probe::Failed { message, .. } = &mut r.probe {
                *message = redact(std::mem::take(message), token);
            }
            r
        })
        .collect();
    let backend = backend
        .into_iter()
        .map(|b| redact_backend(b, token))
        .collect();
    ExecResult {
        run,
        records,
        backend,
        identity,
    }
}

/// Unit and journal text comes from the container: the token, and anything shaped like a
/// credential, never reaches the report.
fn redact_backend(b: BackendRecord, token: Option<&Secret>) -> BackendRecord {
    match b {
        BackendRecord::Journal { unit, line } => BackendRecord::Journal {
            unit,
            line: crate::probe::backend::redact_secrets(&redact(line, token)),
        },
        BackendRecord::SystemdError(m) => {
            BackendRecord::SystemdError(crate::probe::backend::redact_secrets(&redact(m, token)))
        }
        BackendRecord::Banner { service, rc, text } => BackendRecord::Banner {
            service,
            rc,
            text: crate::probe::backend::redact_secrets(&redact(text, token)),
        },
        other => other,
    }
}

/// Removes the token from text a server sent back: an endpoint that reflects the request (a debug
/// echo, a proxy's error page) must not make the report carry the secret.
fn redact(text: String, token: Option<&Secret>) -> String {
    match token {
        Some(t) if !t.expose().is_empty() && text.contains(t.expose()) => {
            text.replace(t.expose(), "[redacted]")
        }
        _ => text,
    }
}

fn redact_all(notes: Vec<String>, token: Option<&Secret>) -> Vec<String> {
    notes.into_iter().map(|n| redact(n, token)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16, from_edge: bool) -> ExecRun {
        ExecRun::Rejected {
            status,
            body: String::new(),
            from_edge,
        }
    }

    fn completed() -> ExecRun {
        ExecRun::Completed {
            exit_code: Some(0),
            notes: Vec::new(),
            used_fallback: false,
            elapsed_ms: 1,
        }
    }

    fn inside(status: u16) -> Probe {
        Probe::Response {
            response: HttpResponse {
                status,
                headers: Vec::new(),
                body: String::new(),
                body_truncated: false,
            },
            elapsed_ms: 1,
        }
    }

    /// The exec call's answer carries what `GET /exec` (401: auth on, 405: off) used to tell, and
    /// leaves the question open (None: `GET /exec` is sent) only where it does not.
    #[test]
    fn the_exec_answer_is_the_auth_probe() {
        use AuthMode::*;
        let failed = ExecRun::Failed {
            kind: FailureKind::Timeout,
            message: "x".into(),
        };
        let cases: Vec<(ExecRun, bool, Option<Probe>, Option<AuthMode>)> = vec![
            // execd's 401, with or without a token: auth is on.
            (rejected(401, false), true, None, Some(Required)),
            (rejected(401, false), false, None, Some(Required)),
            // execd took the call without a token: auth is off.
            (completed(), false, None, Some(Off)),
            (rejected(415, false), false, None, Some(Off)),
            // A token was sent and accepted: execd's own GET /exec from inside tells.
            (completed(), true, Some(inside(401)), Some(Required)),
            (completed(), true, Some(inside(405)), Some(Off)),
            (completed(), true, None, None),
            (completed(), true, Some(inside(200)), None),
            // Not execd's answer (the edge's 401/502, another status): open.
            (rejected(401, true), true, None, None),
            (rejected(502, true), true, None, None),
            (rejected(404, false), true, None, None),
            // No answer at all on the route: GET /exec through it would get none either.
            (failed, true, None, Some(Unknown)),
        ];
        for (run, token, inside, want) in cases {
            assert_eq!(
                auth_mode_from_exec(&run, token, inside.as_ref()),
                want,
                "{run:?} token={token} inside={inside:?}"
            );
        }
    }

    /// The exec service's own public probe is needed only when the exec call did not reach execd.
    #[test]
    fn the_exec_answer_is_the_exec_services_public_probe() {
        assert_eq!(
            external_from_exec(&completed(), 5),
            Some(Probe::not_run(ANSWERED_BY_EXEC_CALL))
        );
        assert_eq!(
            external_from_exec(&rejected(401, false), 5),
            Some(Probe::not_run(ANSWERED_BY_EXEC_CALL))
        );
        let failed = ExecRun::Failed {
            kind: FailureKind::Refused,
            message: "connection refused".into(),
        };
        assert!(matches!(
            external_from_exec(&failed, 5),
            Some(Probe::Failed {
                kind: FailureKind::Refused,
                elapsed_ms: 5,
                ..
            })
        ));
        // The edge's or Caddy's answer, another status: GET /healthz is sent.
        assert_eq!(external_from_exec(&rejected(530, true), 5), None);
        assert_eq!(external_from_exec(&rejected(404, false), 5), None);
        assert_eq!(
            external_from_exec(&ExecRun::NotRun { reason: "x".into() }, 0),
            None
        );
    }
}
