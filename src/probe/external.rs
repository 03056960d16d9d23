//! The external probe: one service through its public URL (edge, tunnel, Caddy).

use std::time::Duration;

use crate::catalog::Service;
use crate::http::{fetch, Request};
use crate::observation::Probe;

/// Body bytes kept per external probe.
pub const BODY_CAP: usize = 64 * 1024;

pub async fn probe(client: &reqwest::Client, s: &Service, url: &str, timeout: Duration) -> Probe {
    fetch(
        client,
        Request {
            method: &s.probe.method,
            url,
            headers: &s.probe.headers,
            keep_headers: &s.healthy.headers,
            body_cap: BODY_CAP,
            timeout,
        },
    )
    .await
}
