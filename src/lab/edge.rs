//! The Cloudflare edge and cloudflared, folded into one TLS listener.
//!
//! Tunnel down -> 530 `error code: 1033`; host outside the tunnel's ingress -> cloudflared's empty
//! 404; origin (Caddy) refused -> Cloudflare 502; origin 502/504 -> replaced by Cloudflare's own
//! 502/504 (non-Enterprise zones hide the origin's error page); anything else is streamed through
//! with `server: cloudflare`, `cf-ray` and `cf-cache-status: DYNAMIC`.
//!
//! The zone's security settings act first, before the tunnel ([`Gate`]): a bot challenge for every
//! request (403 "Just a moment...", `cf-mitigated: challenge`), or Cloudflare Access in front of
//! every hostname (302 to `<team>.cloudflareaccess.com/cdn-cgi/access/login/<host>`, 403 for a
//! wrong service token, through with the right one).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use super::container::serve;
use super::http::{self, ForwardError, ReadError};

/// cloudflared's origin connect timeout (then 502).
pub(crate) const ORIGIN_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Cloudflare's proxy read timeout (then 524).
pub(crate) const ORIGIN_READ_TIMEOUT: Duration = Duration::from_secs(100);

/// The lab CA (PEM) and the edge's TLS configuration.
pub(crate) struct EdgeTls {
    pub(crate) ca_pem: String,
    pub(crate) config: Arc<rustls::ServerConfig>,
}

/// Makes a CA and a leaf for `*.{domain}` and `{domain}`; HTTP/1.1 only (ALPN `http/1.1`).
pub(crate) fn make_tls(domain: &str) -> anyhow::Result<EdgeTls> {
    let ca_key = KeyPair::generate()?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "pvediag lab CA");
    ca_params
        .distinguished_name
        .push(DnType::OrganizationName, "pvediag lab");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key)?;

    let leaf_key = KeyPair::generate()?;
    let mut leaf_params = CertificateParams::new(vec![format!("*.{domain}"), domain.to_string()])?;
    leaf_params
        .distinguished_name
        .push(DnType::CommonName, domain.to_string());
    leaf_params.is_ca = IsCa::ExplicitNoCa;
    leaf_params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let leaf = leaf_params.signed_by(&leaf_key, &ca_cert, &ca_key)?;

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let chain: Vec<CertificateDer<'static>> = vec![leaf.der().clone(), ca_cert.der().clone()];
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(EdgeTls {
        ca_pem: ca_cert.pem(),
        config: Arc::new(config),
    })
}

/// What the zone's security settings do to every request, before the tunnel.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Gate {
    /// Nothing: every request goes on to the tunnel.
    #[default]
    Open,
    /// Bot Fight Mode / a managed challenge for everything: a plain HTTP client never passes.
    Challenge,
    /// Cloudflare Access in front of every hostname; this service token is let through.
    Access {
        team: String,
        client_id: String,
        client_secret: String,
    },
}

pub(crate) struct EdgeCtx {
    pub(crate) domain: String,
    pub(crate) gate: Gate,
    pub(crate) tunnel_up: bool,
    pub(crate) caddy_addr: SocketAddr,
    pub(crate) delay_ms: u64,
    /// The connectors flap: every other request (counted here) gets 530 / `error code: 1033`.
    pub(crate) flapping: Option<std::sync::atomic::AtomicU64>,
    /// Requests the edge has read, per `Host` (lower case, no port).
    pub(crate) requests: RequestCounts,
}

/// Requests per host name, counted where they enter the edge.
pub(crate) type RequestCounts = Arc<std::sync::Mutex<std::collections::BTreeMap<String, u64>>>;

pub(crate) fn start(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    ctx: EdgeCtx,
) -> JoinHandle<()> {
    let ctx = Arc::new(ctx);
    let acceptor = TlsAcceptor::from(tls);
    serve(listener, move |stream| {
        let ctx = ctx.clone();
        let acceptor = acceptor.clone();
        async move {
            let Ok(Ok(tls)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
            else {
                return;
            };
            let _ = conn(tls, &ctx).await;
        }
    })
}

/// `<16 hex>-LAB`, like `8f1e2d3c4b5a6978-FRA`.
pub(crate) fn cf_ray() -> String {
    format!("{:016x}-LAB", http::rand_u64())
}

/// What a Cloudflare-made error is called, per code (1033, 502, 504, 524, ...).
fn cf_error_title(code: u32) -> (&'static str, &'static str) {
    match code {
        1033 => (
            "Cloudflare Tunnel error",
            "The host is configured as a Cloudflare Tunnel, and Cloudflare is currently unable to resolve it.",
        ),
        502 => (
            "Bad gateway",
            "The web server reported a bad gateway error.",
        ),
        504 => (
            "Gateway time-out",
            "The web server reported a gateway time-out error.",
        ),
        524 => (
            "A timeout occurred",
            "The origin web server timed out responding to this request.",
        ),
        _ => ("Error", "Cloudflare could not serve this request."),
    }
}

/// A response Cloudflare itself makes: `error code: N` as plain text to non-browser clients, an
/// HTML page when `Accept` has `text/html`, an RFC 9457-style JSON object (with `error_code`) when
/// `Accept` has `application/json`.
fn cf_error(
    status: u16,
    code: u32,
    ray: &str,
    origin_error: bool,
    accept: Option<&str>,
) -> Vec<u8> {
    let d = http::now_date();
    let accept = accept.unwrap_or("").to_ascii_lowercase();
    let (title, detail) = cf_error_title(code);
    let (content_type, body) = if accept.contains("text/html") {
        (
            "text/html; charset=UTF-8",
            format!(
                "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head><title>{title} | error code: {code}</title></head>\n<body>\n<h1>Error {code}</h1>\n<h2>{title}</h2>\n<p>{detail}</p>\n<p>Cloudflare Ray ID: <strong>{ray_id}</strong></p>\n</body>\n</html>\n",
                ray_id = ray.split('-').next().unwrap_or(ray)
            ),
        )
    } else if accept.contains("application/json") {
        let v = serde_json::json!({
            "type": format!("https://developers.cloudflare.com/support/troubleshooting/http-status-codes/cloudflare-{}/error-{code}/",
                if code >= 1000 { "1xxx-errors" } else { "5xx-errors" }),
            "title": format!("Error {code}: {title}"),
            "status": status,
            "detail": detail,
            "error_code": code,
            "ray_id": ray.split('-').next().unwrap_or(ray),
            "cloudflare_error": true,
            "retryable": matches!(status, 502 | 504 | 524 | 530),
        });
        ("application/json; charset=UTF-8", v.to_string())
    } else {
        ("text/plain; charset=UTF-8", format!("error code: {code}"))
    };
    let mut h: Vec<(&str, &str)> = vec![
        ("Date", &d),
        ("Content-Type", content_type),
        ("Connection", "keep-alive"),
        (
            "Cache-Control",
            "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0",
        ),
        ("Expires", "Thu, 01 Jan 1970 00:00:01 GMT"),
        ("Referrer-Policy", "same-origin"),
        ("X-Frame-Options", "SAMEORIGIN"),
    ];
    if status == 530 {
        h.push(("Retry-After", "120"));
    }
    if origin_error {
        h.push(("cf-error-type", "origin"));
    }
    h.push(("Server", "cloudflare"));
    h.push(("CF-RAY", ray));
    http::response_bytes(status, &h, body.as_bytes())
}

/// The zone's gate for this request: its answer, or `None` to go on to the tunnel.
fn gate(req: &http::Request, ctx: &EdgeCtx, ray: &str) -> Option<Vec<u8>> {
    let d = http::now_date();
    let ray_id = ray.split('-').next().unwrap_or(ray).to_string();
    match &ctx.gate {
        Gate::Open => None,
        Gate::Challenge => {
            let body = format!(
                "<!DOCTYPE html><html lang=\"en-US\"><head><title>Just a moment...</title><meta http-equiv=\"Content-Type\" content=\"text/html; charset=UTF-8\"><meta name=\"robots\" content=\"noindex,nofollow\"></head><body><div class=\"main-wrapper\" role=\"main\"><div class=\"main-content\"><noscript><div class=\"h2\"><span id=\"challenge-error-text\">Enable JavaScript and cookies to continue</span></div></noscript></div></div><script>(function(){{window._cf_chl_opt={{cvId: '3',cRay: '{ray_id}',cType: 'managed'}};var a=document.createElement('script');a.src='/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1?ray={ray_id}';document.getElementsByTagName('head')[0].appendChild(a);}}());</script></body></html>"
            );
            Some(http::response_bytes(
                403,
                &[
                    ("Date", &d),
                    ("Content-Type", "text/html; charset=UTF-8"),
                    ("Connection", "keep-alive"),
                    ("Accept-CH", "Sec-CH-UA-Bitness, Sec-CH-UA-Arch, Sec-CH-UA-Full-Version, Sec-CH-UA-Mobile, Sec-CH-UA-Model, Sec-CH-UA-Platform-Version, Sec-CH-UA-Full-Version-List, Sec-CH-UA-Platform, Sec-CH-UA, UA-Bitness, UA-Arch, UA-Full-Version, UA-Mobile, UA-Model, UA-Platform-Version, UA-Platform, UA"),
                    ("Cross-Origin-Embedder-Policy", "require-corp"),
                    ("Cross-Origin-Opener-Policy", "same-origin"),
                    ("Cross-Origin-Resource-Policy", "same-origin"),
                    ("Origin-Agent-Cluster", "?1"),
                    ("Cache-Control", "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0"),
                    ("Expires", "Thu, 01 Jan 1970 00:00:01 GMT"),
                    ("Referrer-Policy", "same-origin"),
                    ("X-Frame-Options", "SAMEORIGIN"),
                    ("X-Content-Type-Options", "nosniff"),
                    ("cf-mitigated", "challenge"),
                    ("Server", "cloudflare"),
                    ("CF-RAY", ray),
                ],
                body.as_bytes(),
            ))
        }
        Gate::Access {
            team,
            client_id,
            client_secret,
        } => {
            let id = req.header("cf-access-client-id");
            let secret = req.header("cf-access-client-secret");
            if id.is_none() && secret.is_none() {
                let host = req.host().unwrap_or_default();
                let redirect =
                    url::form_urlencoded::byte_serialize(req.target.as_bytes()).collect::<String>();
                let location = format!(
                    "https://{team}.cloudflareaccess.com/cdn-cgi/access/login/{host}?kid={:016x}{:016x}&redirect_url={redirect}",
                    http::rand_u64(),
                    http::rand_u64()
                );
                let cookie = format!(
                    "CF_AppSession={:016x}; Expires=Tue, 01 Dec 2026 12:00:00 GMT; Path=/; Secure; HttpOnly",
                    http::rand_u64()
                );
                return Some(http::response_bytes(
                    302,
                    &[
                        ("Date", &d),
                        ("Content-Length", "0"),
                        ("Connection", "keep-alive"),
                        ("Location", &location),
                        ("Set-Cookie", &cookie),
                        ("Cache-Control", "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0"),
                        ("Expires", "Thu, 01 Jan 1970 00:00:01 GMT"),
                        ("Server", "cloudflare"),
                        ("CF-RAY", ray),
                    ],
                    b"",
                ));
            }
            if id == Some(client_id.as_str()) && secret == Some(client_secret.as_str()) {
                return None;
            }
            let body = format!(
                "<!DOCTYPE html><html><head><title>Forbidden · Cloudflare Access</title></head><body><h1>Forbidden</h1><p>You don't have permission to view this application. Please contact your system administrator.</p><p><a href=\"https://{team}.cloudflareaccess.com/cdn-cgi/access/logout\">Sign out</a></p><p>Ray ID: {ray_id}</p></body></html>"
            );
            Some(http::response_bytes(
                403,
                &[
                    ("Date", &d),
                    ("Content-Type", "text/html; charset=UTF-8"),
                    ("Connection", "keep-alive"),
                    ("Cache-Control", "private, max-age=0, no-store, no-cache, must-revalidate, post-check=0, pre-check=0"),
                    ("Server", "cloudflare"),
                    ("CF-RAY", ray),
                ],
                body.as_bytes(),
            ))
        }
    }
}

/// Is `host` (no port, lower case) covered by the tunnel's ingress `*.{domain}` / `{domain}`?
fn in_zone(host: &str, domain: &str) -> bool {
    host == domain
        || host
            .strip_suffix(domain)
            .is_some_and(|p| p.len() > 1 && p.ends_with('.'))
}

async fn conn<S>(stream: S, ctx: &EdgeCtx) -> io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut s = BufReader::new(stream);
    loop {
        let req = match http::read_request(&mut s, http::MAX_BODY).await {
            Ok(Some(r)) => r,
            Ok(None) => return Ok(()),
            Err(ReadError::Io(e)) => return Err(e),
            Err(ReadError::TooLarge(_)) => {
                let b = cf_error(413, 413, &cf_ray(), false, None);
                return http::send(&mut s, &b).await;
            }
            Err(ReadError::Malformed(_)) => {
                let b = cf_error(400, 400, &cf_ray(), false, None);
                return http::send(&mut s, &b).await;
            }
        };
        if let Ok(mut m) = ctx.requests.lock() {
            *m.entry(req.host().unwrap_or_default()).or_insert(0) += 1;
        }
        if ctx.delay_ms > 0 {
            tokio::time::sleep(Duration::from_millis(ctx.delay_ms)).await;
        }
        let keep = handle(&mut s, &req, ctx).await?;
        if !keep || req.wants_close() {
            return Ok(());
        }
    }
}

async fn handle<S>(s: &mut BufReader<S>, req: &http::Request, ctx: &EdgeCtx) -> io::Result<bool>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ray = cf_ray();
    let accept = req.header("accept");
    if let Some(b) = gate(req, ctx, &ray) {
        http::send(s, &b).await?;
        return Ok(true);
    }
    let flapped = ctx
        .flapping
        .as_ref()
        .is_some_and(|n| n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 2 == 0);
    if !ctx.tunnel_up || flapped {
        http::send(s, &cf_error(530, 1033, &ray, false, accept)).await?;
        return Ok(true);
    }
    let host = req.host().unwrap_or_default();
    if !in_zone(&host, &ctx.domain) {
        // cloudflared's catch-all ingress rule `service: http_status:404`.
        let d = http::now_date();
        let b = http::response_bytes(
            404,
            &[
                ("Date", &d),
                ("Content-Length", "0"),
                ("Connection", "keep-alive"),
                ("cf-cache-status", "DYNAMIC"),
                ("Server", "cloudflare"),
                ("CF-RAY", &ray),
            ],
            b"",
        );
        http::send(s, &b).await?;
        return Ok(true);
    }

    // What Cloudflare and cloudflared add on the way to the origin.
    let mut headers = req.headers.clone();
    http::strip_hop_by_hop(&mut headers);
    for h in [
        // Access checks the service token at the edge; the origin never sees it.
        "cf-access-client-id",
        "cf-access-client-secret",
        "cf-ray",
        "cf-connecting-ip",
        "cf-visitor",
        "x-forwarded-for",
        "x-forwarded-proto",
        "cdn-loop",
    ] {
        http::remove_header(&mut headers, h);
    }
    headers.extend([
        ("Cf-Ray".to_string(), ray.clone()),
        ("Cf-Connecting-Ip".to_string(), "127.0.0.1".to_string()),
        ("Cf-Ipcountry".to_string(), "XX".to_string()),
        (
            "Cf-Visitor".to_string(),
            "{\"scheme\":\"https\"}".to_string(),
        ),
        ("X-Forwarded-For".to_string(), "127.0.0.1".to_string()),
        ("X-Forwarded-Proto".to_string(), "https".to_string()),
        ("Cdn-Loop".to_string(), "cloudflare".to_string()),
    ]);
    let (mut up, head) = match http::forward(
        ctx.caddy_addr,
        &req.method,
        &req.target,
        &headers,
        &req.body,
        ORIGIN_CONNECT_TIMEOUT,
        ORIGIN_READ_TIMEOUT,
    )
    .await
    {
        Ok(x) => x,
        Err(ForwardError::HeadTimeout) => {
            http::send(s, &cf_error(524, 524, &ray, true, accept)).await?;
            return Ok(true);
        }
        Err(_) => {
            // cloudflared: "Unable to reach the origin service".
            http::send(s, &cf_error(502, 502, &ray, true, accept)).await?;
            return Ok(true);
        }
    };
    if head.status == 502 || head.status == 504 {
        // The origin's own error is hidden behind Cloudflare's page.
        http::send(
            s,
            &cf_error(head.status, u32::from(head.status), &ray, true, accept),
        )
        .await?;
        return Ok(true);
    }
    let framing = http::response_framing(&req.method, &head);
    let mut out = http::downstream_headers(&head, framing);
    http::remove_header(&mut out, "server");
    http::remove_header(&mut out, "cf-ray");
    http::remove_header(&mut out, "cf-cache-status");
    out.push(("cf-cache-status".into(), "DYNAMIC".into()));
    out.push(("Server".into(), "cloudflare".into()));
    out.push(("CF-RAY".into(), ray));
    http::send(s, &http::head_bytes(head.status, &out)).await?;
    match http::pipe_body(&mut up, framing, s).await {
        Ok(()) => Ok(true),
        Err(_) => Ok(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_in_zone() {
        assert!(in_zone("example.test", "example.test"));
        assert!(in_zone("xterm-202.example.test", "example.test"));
        assert!(!in_zone("badexample.test", "example.test"));
        assert!(!in_zone("example.test.evil", "example.test"));
        assert!(!in_zone(".example.test", "example.test"));
    }
}
