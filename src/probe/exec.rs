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
pub struct ExecResult {
    pub run: ExecRun,
    pub records: Vec<Record>,
    /// Back-end, unit and journal records ([`crate::probe::backend`]).
    pub backend: Vec<BackendRecord>,
    /// Who the command ran in (its identity line), when it said.
    pub identity: Option<crate::identity::ReportedIdentity>,
}

/// `GET /exec`: 401 means auth is on, 405 means it is off. Side-effect free.
pub async fn auth_mode(
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
pub struct Credentials<'a> {
    pub token: Option<&'a Secret>,
    pub access: Option<&'a AccessToken>,
}

/// Runs `command` through `POST {exec_url}/exec` and collects the records of `nonce`.
///
/// The stream is read until the `exit` event (children of the command may keep the stream open
/// after bash exits), the end of the stream, or `deadline`, whichever comes first.
pub async fn run(
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
