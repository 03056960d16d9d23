//! Who made an HTTP answer: Cloudflare's edge, cloudflared, or Caddy — before any question of
//! which service it was meant for. Probes (to mark an answer as the edge's), the exec channel and
//! the verdict engine all ask here, so the probes never depend on the verdict engine.
//!
//! Pure functions of one [`HttpResponse`]; no I/O.

use crate::observation::HttpResponse;

/// Whether header `name` has exactly `value` (case-insensitive, trimmed).
pub(crate) fn header_is(r: &HttpResponse, name: &str, value: &str) -> bool {
    r.header(name)
        .map(|v| v.trim().eq_ignore_ascii_case(value))
        .unwrap_or(false)
}

/// The `error code: NNN` of a Cloudflare-made body (plain text or HTML), if any.
pub(crate) fn cloudflare_error_code(body: &str) -> Option<String> {
    let lower = body.to_ascii_lowercase();
    let i = lower.find("error code")?;
    let rest = &body[i + "error code".len()..];
    let digits: String = rest
        .trim_start_matches([':', ' ', '\u{a0}'])
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    (!digits.is_empty()).then_some(digits)
}

/// `server: cloudflare` and a `cf-ray`: the answer passed through (or came from) Cloudflare.
pub(crate) fn through_cloudflare(r: &HttpResponse) -> bool {
    header_is(r, "server", "cloudflare") && r.has_header("cf-ray")
}

/// Whether Cloudflare itself generated this error answer (not the origin): 530, `cf-error-type`,
/// or a 5xx with Cloudflare's `error code: NNN` or its HTML page.
pub(crate) fn made_by_cloudflare(r: &HttpResponse) -> bool {
    if !through_cloudflare(r) {
        return false;
    }
    r.status == 530
        || r.has_header("cf-error-type")
        || (r.status >= 500 && cloudflare_error_code(&r.body).is_some())
        || (r.status >= 500 && r.body.to_ascii_lowercase().contains("cloudflare"))
}

/// cloudflared's catch-all ingress rule (`http_status:404`): a 404 with an empty body that Caddy
/// did not make.
pub(crate) fn cloudflared_catch_all(r: &HttpResponse) -> bool {
    r.status == 404 && r.body.trim().is_empty() && !header_is(r, "server", "caddy")
}

pub(crate) use crate::observation::Gate;

/// The gate of the edge that made this answer, if one did. Checked before anything else: no
/// service is healthy through a gate, whatever its fingerprint accepts.
pub(crate) fn edge_gate(r: &HttpResponse) -> Option<Gate> {
    let status = r.status;
    if header_is(r, "cf-mitigated", "challenge") {
        return Some(Gate::Challenge { status });
    }
    if (300..400).contains(&status) {
        if let Some(loc) = r.header("location") {
            if let Some(team) = access_login(loc) {
                return Some(Gate::AccessLogin { status, team });
            }
        }
        return None;
    }
    if !through_cloudflare(r) {
        return None;
    }
    let lower = r.body.to_ascii_lowercase();
    if matches!(status, 403 | 429 | 503)
        && (lower.contains("<title>just a moment...</title>")
            || lower.contains("/cdn-cgi/challenge-platform/"))
    {
        return Some(Gate::Challenge { status });
    }
    if (400..500).contains(&status) {
        if let Some(code) = cloudflare_error_code(&r.body) {
            if code.len() == 4 && code.starts_with("10") && code != "1033" {
                return Some(Gate::Blocked { status, code });
            }
        }
    }
    if matches!(status, 401 | 403)
        && (lower.contains("cloudflareaccess.com")
            || lower.contains("cloudflare access")
            || lower.contains("/cdn-cgi/access/"))
    {
        return Some(Gate::AccessDenied { status });
    }
    None
}

/// `Some(team)` when `location` is an Access login (`<team>.cloudflareaccess.com` or a
/// `/cdn-cgi/access/login` path on the application's own host).
fn access_login(location: &str) -> Option<Option<String>> {
    let u = url::Url::parse(location).ok();
    let (host, path) = match &u {
        Some(u) => (u.host_str().unwrap_or("").to_ascii_lowercase(), u.path()),
        None => (String::new(), location),
    };
    let team = host
        .strip_suffix(".cloudflareaccess.com")
        .filter(|t| !t.is_empty() && !t.contains('.'))
        .map(str::to_string);
    if team.is_some() || path.starts_with("/cdn-cgi/access/login") {
        Some(team)
    } else {
        None
    }
}

/// Made by the edge: one of Cloudflare's own error pages or one of its gates. Never the sandbox.
pub(crate) fn made_by_edge(r: &HttpResponse) -> bool {
    made_by_cloudflare(r) || edge_gate(r).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> HttpResponse {
        HttpResponse {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.into(),
            body_truncated: false,
        }
    }

    const CF: &[(&str, &str)] = &[("server", "cloudflare"), ("cf-ray", "8f0c2a1b3c4d5e6f-FRA")];

    #[test]
    fn error_code_is_read_from_text_and_html() {
        assert_eq!(
            cloudflare_error_code("error code: 1033").as_deref(),
            Some("1033")
        );
        assert_eq!(
            cloudflare_error_code("<span>Error code 1033</span>").as_deref(),
            Some("1033")
        );
        assert_eq!(cloudflare_error_code("hello"), None);
    }

    #[test]
    fn cloudflare_made_errors() {
        assert!(made_by_cloudflare(&resp(530, CF, "error code: 1033")));
        assert!(made_by_cloudflare(&resp(502, CF, "error code: 502")));
        // The origin's own 500 passed through Cloudflare is not Cloudflare's.
        assert!(!made_by_cloudflare(&resp(500, CF, "Internal Server Error")));
        // Without cf-ray nobody can say Cloudflare made it.
        assert!(!made_by_cloudflare(&resp(
            530,
            &[("server", "cloudflare")],
            "error code: 1033"
        )));
        assert!(cloudflared_catch_all(&resp(404, CF, "")));
        assert!(!cloudflared_catch_all(&resp(
            404,
            &[("server", "Caddy")],
            ""
        )));
    }

    #[test]
    fn gates_of_the_edge() {
        let challenge = resp(
            403,
            &[
                ("server", "cloudflare"),
                ("cf-ray", "8f0c2a1b3c4d5e6f-FRA"),
                ("cf-mitigated", "challenge"),
            ],
            "<!DOCTYPE html><html><head><title>Just a moment...</title></head></html>",
        );
        assert_eq!(edge_gate(&challenge), Some(Gate::Challenge { status: 403 }));
        // Without the header: the page itself (503, Under Attack mode).
        let uam = resp(
            503,
            CF,
            "<html><head><title>Just a moment...</title></head><script src=\"/cdn-cgi/challenge-platform/h/b/orchestrate/chl_page/v1\"></script></html>",
        );
        assert_eq!(edge_gate(&uam), Some(Gate::Challenge { status: 503 }));
        let login = resp(
            302,
            &[
                ("server", "cloudflare"),
                ("cf-ray", "8f0c2a1b3c4d5e6f-FRA"),
                (
                    "location",
                    "https://acme.cloudflareaccess.com/cdn-cgi/access/login/xterm-202.example.com?kid=abc&redirect_url=%2Fsessions",
                ),
            ],
            "",
        );
        assert_eq!(
            edge_gate(&login),
            Some(Gate::AccessLogin {
                status: 302,
                team: Some("acme".into())
            })
        );
        assert!(edge_gate(&login).unwrap().describe().contains("Access"));
        let denied = resp(
            403,
            CF,
            "<html><title>Forbidden</title><a href=\"https://acme.cloudflareaccess.com/cdn-cgi/access/logout\">",
        );
        assert_eq!(edge_gate(&denied), Some(Gate::AccessDenied { status: 403 }));
        assert_eq!(
            edge_gate(&resp(403, CF, "error code: 1020")),
            Some(Gate::Blocked {
                status: 403,
                code: "1020".into()
            })
        );
        assert!(made_by_edge(&resp(403, CF, "error code: 1010")));
        // What the origin made is no gate: its own 403, an ordinary redirect, a 530.
        assert_eq!(edge_gate(&resp(403, CF, "Forbidden")), None);
        assert_eq!(edge_gate(&resp(302, &[("location", "/login")], "")), None);
        assert_eq!(edge_gate(&resp(530, CF, "error code: 1033")), None);
        // A redirect to someone's page that mentions Access in its query is not Access.
        assert_eq!(
            edge_gate(&resp(
                302,
                &[("location", "https://example.com/?next=cloudflareaccess.com")],
                ""
            )),
            None
        );
    }
}
