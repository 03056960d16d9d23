//! The HTTP client edge: one reqwest client per run, `--connect-to`, TLS options, capped reads,
//! and the classification of transport errors by walking the error's source chain.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::observation::{FailureKind, HttpResponse, Probe};

/// The User-Agent every request carries (Cloudflare's bot filter blocks some default ones).
pub(crate) const USER_AGENT: &str = concat!("pvediag/", env!("CARGO_PKG_VERSION"));

/// Response headers kept as evidence (names in lower case). Required catalog headers are added.
pub(crate) const EVIDENCE_HEADERS: &[&str] = &[
    "server",
    "cf-ray",
    "cf-error-type",
    "cf-mitigated",
    "cf-cache-status",
    "via",
    "content-type",
    "location",
    "retry-after",
    "access-control-allow-origin",
    "access-control-max-age",
];

/// How the client reaches the public URLs.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientOptions {
    /// Dial this address for every URL, keeping Host and SNI (curl's --connect-to).
    pub(crate) connect_to: Option<SocketAddr>,
    /// Extra trusted CA certificates (PEM).
    pub(crate) cacert_pem: Option<Vec<u8>>,
    /// Accept any certificate.
    pub(crate) insecure: bool,
    /// Connection timeout (each probe also has an overall timeout).
    pub(crate) connect_timeout: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    #[error("--cacert: {0}")]
    CaCert(String),
    #[error("cannot build the HTTP client: {0}")]
    Build(String),
}

/// Resolves every name to one address: `--connect-to`.
struct FixedResolver(SocketAddr);

impl reqwest::dns::Resolve for FixedResolver {
    fn resolve(&self, _name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let addr = self.0;
        Box::pin(async move {
            let it: reqwest::dns::Addrs = Box::new(std::iter::once(addr));
            Ok(it)
        })
    }
}

/// One name's lookup: its addresses, or the resolver's error.
pub(crate) type Lookup = Result<Vec<SocketAddr>, String>;

/// What the system's resolver gave for each name the client looked up (the last lookup wins):
/// the evidence of where a public hostname was dialled.
#[derive(Debug, Clone, Default)]
pub(crate) struct DnsLog(Arc<std::sync::Mutex<std::collections::HashMap<String, Lookup>>>);

impl DnsLog {
    /// What `host` resolved to (addresses, or the resolver's error); `None` when never looked up.
    pub(crate) fn get(&self, host: &str) -> Option<Result<Vec<SocketAddr>, String>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.0.lock().ok()?.get(&host).cloned()
    }

    fn record(&self, host: &str, r: Result<Vec<SocketAddr>, String>) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(host.trim_end_matches('.').to_ascii_lowercase(), r);
        }
    }
}

/// The system resolver (getaddrinfo, as reqwest's default), recording each answer in a [`DnsLog`].
struct RecordingResolver(DnsLog);

impl reqwest::dns::Resolve for RecordingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let log = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let looked_up = tokio::net::lookup_host(format!("{host}:0")).await;
            match looked_up {
                Ok(addrs) => {
                    let addrs: Vec<SocketAddr> = addrs.collect();
                    log.record(&host, Ok(addrs.clone()));
                    let it: reqwest::dns::Addrs = Box::new(addrs.into_iter());
                    Ok(it)
                }
                Err(e) => {
                    log.record(&host, Err(clean_message(&e.to_string())));
                    Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

/// [`build_client`] whose name lookups are recorded ([`DnsLog`]); with `--connect-to` no name is
/// looked up and the log stays empty.
pub(crate) fn build_client_logged(
    opts: &ClientOptions,
) -> Result<(reqwest::Client, DnsLog), ClientError> {
    let log = DnsLog::default();
    let client = build_client_with(opts, Some(&log))?;
    Ok((client, log))
}

/// Builds the one client of a run. Redirects are never followed: a redirect is evidence.
pub(crate) fn build_client(opts: &ClientOptions) -> Result<reqwest::Client, ClientError> {
    build_client_with(opts, None)
}

fn build_client_with(
    opts: &ClientOptions,
    log: Option<&DnsLog>,
) -> Result<reqwest::Client, ClientError> {
    let mut b = reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(opts.connect_timeout.unwrap_or(Duration::from_secs(10)))
        // Every public URL has its own host name, so a connection is almost never reused; idle ones
        // would only hold memory and descriptors (about 40 KiB each) until the run ends.
        .pool_max_idle_per_host(0)
        .tcp_nodelay(true);
    if let Some(addr) = opts.connect_to {
        b = b.dns_resolver(Arc::new(FixedResolver(addr))).no_proxy();
    } else if let Some(log) = log {
        b = b.dns_resolver(Arc::new(RecordingResolver(log.clone())));
    }
    if let Some(pem) = &opts.cacert_pem {
        let certs = reqwest::Certificate::from_pem_bundle(pem)
            .map_err(|e| ClientError::CaCert(format!("not a PEM certificate bundle: {e}")))?;
        if certs.is_empty() {
            return Err(ClientError::CaCert(
                "the file holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    if opts.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    b.build().map_err(|e| ClientError::Build(e.to_string()))
}

/// Classifies a transport error by walking its source chain (lychee's approach).
pub(crate) fn classify_error(err: &reqwest::Error) -> (FailureKind, String) {
    let mut kind = None;
    let mut deepest = err.to_string();
    let mut src: Option<&(dyn std::error::Error + 'static)> = err.source();
    while let Some(e) = src {
        deepest = e.to_string();
        if kind.is_none() {
            if let Some(io) = e.downcast_ref::<std::io::Error>() {
                kind = match io.kind() {
                    std::io::ErrorKind::ConnectionRefused => Some(FailureKind::Refused),
                    std::io::ErrorKind::TimedOut => Some(FailureKind::Timeout),
                    std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe => Some(FailureKind::Receive),
                    std::io::ErrorKind::UnexpectedEof => Some(FailureKind::EmptyReply),
                    _ => None,
                };
            }
            if let Some(tls) = e.downcast_ref::<rustls::Error>() {
                kind = Some(match tls {
                    rustls::Error::InvalidCertificate(_) => FailureKind::Certificate,
                    _ => FailureKind::Tls,
                });
            }
            if kind.is_none() {
                let text = e.to_string().to_ascii_lowercase();
                if text.contains("dns error") || text.contains("failed to lookup address") {
                    kind = Some(FailureKind::Dns);
                } else if text.contains("invalid peer certificate") || text.contains("certificate")
                {
                    kind = Some(FailureKind::Certificate);
                } else if text.contains("connection closed before message completed") {
                    kind = Some(FailureKind::EmptyReply);
                }
            }
        }
        src = e.source();
    }
    let kind = kind.unwrap_or(if err.is_timeout() {
        FailureKind::Timeout
    } else if err.is_connect() {
        FailureKind::Other
    } else if err.is_body() || err.is_decode() {
        FailureKind::Receive
    } else if err.is_request() {
        FailureKind::Protocol
    } else {
        FailureKind::Other
    });
    (kind, clean_message(&deepest))
}

fn clean_message(s: &str) -> String {
    let one: String = s.chars().filter(|c| !c.is_control()).take(200).collect();
    one
}

/// One request as a probe: sends it, reads at most `cap` body bytes, all within `timeout`.
pub struct Request<'a> {
    pub method: &'a str,
    pub(crate) url: &'a str,
    pub(crate) headers: &'a [(String, String)],
    /// Extra response headers to keep (lower-case names).
    pub(crate) keep_headers: &'a [String],
    pub(crate) body_cap: usize,
    pub(crate) timeout: Duration,
}

pub(crate) async fn fetch(client: &reqwest::Client, req: Request<'_>) -> Probe {
    fetch_with(client, req, None).await
}

/// [`fetch`], with the Access service token's headers when given (public URLs only).
pub(crate) async fn fetch_with(
    client: &reqwest::Client,
    req: Request<'_>,
    access: Option<&crate::secret::AccessToken>,
) -> Probe {
    let start = Instant::now();
    let fut = fetch_inner(client, &req, access);
    match tokio::time::timeout(req.timeout, fut).await {
        Ok(Ok(mut response)) => {
            // An origin that reflects the request must not put the secret into the report.
            if let Some(a) = access.map(|a| a.expose_secret()).filter(|s| !s.is_empty()) {
                if response.body.contains(a) {
                    response.body = response.body.replace(a, "[redacted]");
                }
                for (_, v) in &mut response.headers {
                    if v.contains(a) {
                        *v = v.replace(a, "[redacted]");
                    }
                }
            }
            Probe::Response {
                response,
                elapsed_ms: start.elapsed().as_millis() as u64,
            }
        }
        Ok(Err(e)) => {
            let (kind, message) = classify_error(&e);
            Probe::Failed {
                kind,
                message,
                elapsed_ms: start.elapsed().as_millis() as u64,
            }
        }
        Err(_) => Probe::Failed {
            kind: FailureKind::Timeout,
            message: format!("no complete answer within {} ms", req.timeout.as_millis()),
            elapsed_ms: start.elapsed().as_millis() as u64,
        },
    }
}

async fn fetch_inner(
    client: &reqwest::Client,
    req: &Request<'_>,
    access: Option<&crate::secret::AccessToken>,
) -> Result<HttpResponse, reqwest::Error> {
    let method = reqwest::Method::from_bytes(req.method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut rb = client.request(method, req.url);
    for (k, v) in req.headers {
        rb = rb.header(k.as_str(), v.as_str());
    }
    if let Some(a) = access {
        for (k, v) in a.headers() {
            rb = rb.header(k, v);
        }
    }
    let mut resp = rb.send().await?;
    let status = resp.status().as_u16();
    let headers = keep_headers(resp.headers(), req.keep_headers);
    let mut body = Vec::new();
    let mut truncated = false;
    while let Some(chunk) = resp.chunk().await? {
        let room = req.body_cap.saturating_sub(body.len());
        if chunk.len() > room {
            body.extend_from_slice(&chunk[..room]);
            truncated = true;
            break;
        }
        body.extend_from_slice(&chunk);
    }
    Ok(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        body_truncated: truncated,
    })
}

/// Whether `url`'s host is `domain` or under it: where the Access service token may be sent.
pub(crate) fn under_domain(url: &str, domain: &str) -> bool {
    let Some(host) = url::Url::parse(url).ok().and_then(|u| {
        u.host_str()
            .map(|h| h.trim_end_matches('.').to_ascii_lowercase())
    }) else {
        return false;
    };
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    host == domain || host.strip_suffix(&domain).is_some_and(|p| p.ends_with('.'))
}

/// Keeps the evidence headers (and the extra ones), each value capped.
pub(crate) fn keep_headers(
    h: &reqwest::header::HeaderMap,
    extra: &[String],
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, value) in h {
        let n = name.as_str();
        if EVIDENCE_HEADERS.contains(&n) || extra.iter().any(|e| e == n) {
            let v = String::from_utf8_lossy(value.as_bytes());
            out.push((n.to_string(), v.chars().take(256).collect()));
        }
        if out.len() >= 32 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_access_token_goes_only_under_the_domain() {
        assert!(under_domain(
            "https://xterm-202.example.test/sessions",
            "example.test"
        ));
        assert!(under_domain("https://example.test/", "example.test."));
        assert!(under_domain(
            "https://EXEC-202.Example.Test:8443",
            "example.test"
        ));
        assert!(!under_domain("http://127.0.0.1:39375", "example.test"));
        assert!(!under_domain("http://cmux-202.lan:39375", "example.test"));
        assert!(!under_domain("https://badexample.test/", "example.test"));
        assert!(!under_domain("https://example.test.evil/", "example.test"));
        assert!(!under_domain("not a url", "example.test"));
    }

    use reqwest::dns::Resolve;
    use std::str::FromStr;

    /// The recording resolver keeps what a name resolved to, and the resolver's error for a name
    /// that cannot resolve (a label over 63 bytes: refused by the resolver library itself, no
    /// query leaves the machine).
    #[tokio::test]
    async fn the_dns_log_records_addresses_and_failures() {
        let log = DnsLog::default();
        let r = RecordingResolver(log.clone());
        let addrs: Vec<SocketAddr> = r
            .resolve(reqwest::dns::Name::from_str("localhost").unwrap())
            .await
            .unwrap()
            .collect();
        assert!(addrs.iter().any(|a| a.ip().is_loopback()), "{addrs:?}");
        let got = log.get("LOCALHOST.").unwrap().unwrap();
        assert_eq!(got, addrs);
        let bad = format!("{}.test", "a".repeat(64));
        assert!(r
            .resolve(reqwest::dns::Name::from_str(&bad).unwrap())
            .await
            .is_err());
        assert!(log.get(&bad).unwrap().is_err());
        assert!(log.get("never-looked-up.test").is_none());
    }

    /// Through a real request: the client built with a log records the name it dialled; with
    /// `--connect-to` nothing is looked up.
    #[tokio::test]
    async fn a_logged_client_records_the_name_it_dialled() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (client, log) = build_client_logged(&ClientOptions::default()).unwrap();
        let _ = client
            .get(format!("http://localhost:{port}/"))
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        let got = log.get("localhost").expect("looked up").unwrap();
        assert!(got.iter().any(|a| a.ip().is_loopback()), "{got:?}");
        let (client, log) = build_client_logged(&ClientOptions {
            connect_to: Some(format!("127.0.0.1:{port}").parse().unwrap()),
            ..ClientOptions::default()
        })
        .unwrap();
        let _ = client
            .get("http://xterm-202.example.test/")
            .timeout(Duration::from_secs(5))
            .send()
            .await;
        assert!(log.get("xterm-202.example.test").is_none());
    }
}

#[cfg(test)]
mod dns_failure_tests {
    use super::*;

    /// A name that does not resolve is a `dns` failure through the recording resolver too.
    #[tokio::test]
    async fn a_name_that_does_not_resolve_is_a_dns_failure() {
        let (client, log) = build_client_logged(&ClientOptions::default()).unwrap();
        let host = format!("{}.test", "a".repeat(64));
        let url = format!("http://{host}/");
        let p = fetch(
            &client,
            Request {
                method: "GET",
                url: &url,
                headers: &[],
                keep_headers: &[],
                body_cap: 16,
                timeout: Duration::from_secs(5),
            },
        )
        .await;
        assert_eq!(p.failure(), Some(FailureKind::Dns), "{p:?}");
        assert!(log.get(&host).unwrap().is_err());
    }
}
