//! The external probe: one service through its public URL (edge, tunnel, Caddy).

use std::time::Duration;

use crate::catalog::Service;
use crate::http::{fetch_with, Request};
use crate::observation::Probe;
use crate::secret::AccessToken;

/// Body bytes kept per external probe.
pub const BODY_CAP: usize = 64 * 1024;

pub(crate) async fn probe(
    client: &reqwest::Client,
    s: &Service,
    url: &str,
    timeout: Duration,
    access: Option<&AccessToken>,
) -> Probe {
    fetch_with(
        client,
        Request {
            method: &s.probe.method,
            url,
            headers: &s.probe.headers,
            keep_headers: &s.healthy.headers,
            body_cap: BODY_CAP,
            timeout,
        },
        access,
    )
    .await
}

/// A failure worth retrying: a timeout, a receive error, or a 502/503/504 that Cloudflare made.
/// Never a refused connection, a DNS failure, or an answer from behind the edge.
pub(crate) fn is_transient(p: &Probe) -> bool {
    use crate::observation::FailureKind;
    match p {
        Probe::Failed { kind, .. } => matches!(kind, FailureKind::Timeout | FailureKind::Receive),
        Probe::Response { response, .. } => {
            matches!(response.status, 502..=504)
                && crate::made_by::made_by_cloudflare(response)
                && crate::made_by::edge_gate(response).is_none()
        }
        Probe::NotRun { .. } => false,
    }
}

/// The pause before retry `attempt` (0-based): 250 ms, 500 ms, 1 s, ... at most 2 s.
pub(crate) fn retry_backoff(attempt: u32) -> Duration {
    Duration::from_millis(250u64 << attempt.min(3))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{FailureKind, HttpResponse};

    fn failed(kind: FailureKind) -> Probe {
        Probe::Failed {
            kind,
            message: String::new(),
            elapsed_ms: 1,
        }
    }

    fn answer(status: u16, server: &str, body: &str) -> Probe {
        Probe::Response {
            response: HttpResponse {
                status,
                headers: vec![
                    ("server".into(), server.into()),
                    ("cf-ray".into(), "8f0c2a1b3c4d5e6f-FRA".into()),
                ],
                body: body.into(),
                body_truncated: false,
            },
            elapsed_ms: 1,
        }
    }

    #[test]
    fn transient_failures() {
        assert!(is_transient(&failed(FailureKind::Timeout)));
        assert!(is_transient(&failed(FailureKind::Receive)));
        assert!(!is_transient(&failed(FailureKind::Refused)));
        assert!(!is_transient(&failed(FailureKind::Dns)));
        assert!(!is_transient(&failed(FailureKind::Certificate)));
        assert!(is_transient(&answer(502, "cloudflare", "error code: 502")));
        assert!(is_transient(&answer(504, "cloudflare", "error code: 504")));
        assert!(!is_transient(&answer(
            530,
            "cloudflare",
            "error code: 1033"
        )));
        assert!(!is_transient(&answer(502, "Caddy", "")));
        assert!(!is_transient(&answer(200, "cloudflare", "ok")));
        // Under Attack mode's 503 challenge page never goes away by retrying.
        assert!(!is_transient(&answer(
            503,
            "cloudflare",
            "<title>Just a moment...</title> Performance & security by Cloudflare"
        )));
        assert!(!is_transient(&Probe::not_run("x")));
        assert_eq!(retry_backoff(0), Duration::from_millis(250));
        assert_eq!(retry_backoff(9), Duration::from_secs(2));
    }
}
