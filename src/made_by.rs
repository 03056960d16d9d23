//! Who made an HTTP answer: Cloudflare's edge, cloudflared, or Caddy — before any question of
//! which service it was meant for. Probes (to mark an answer as the edge's), the exec channel and
//! the verdict engine all ask here, so the probes never depend on the verdict engine.
//!
//! Pure functions of one [`HttpResponse`]; no I/O.

use crate::observation::HttpResponse;

/// Whether header `name` has exactly `value` (case-insensitive, trimmed).
pub fn header_is(r: &HttpResponse, name: &str, value: &str) -> bool {
    r.header(name)
        .map(|v| v.trim().eq_ignore_ascii_case(value))
        .unwrap_or(false)
}

/// The `error code: NNN` of a Cloudflare-made body (plain text or HTML), if any.
pub fn cloudflare_error_code(body: &str) -> Option<String> {
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
pub fn through_cloudflare(r: &HttpResponse) -> bool {
    header_is(r, "server", "cloudflare") && r.has_header("cf-ray")
}

/// Whether Cloudflare itself generated this error answer (not the origin): 530, `cf-error-type`,
/// or a 5xx with Cloudflare's `error code: NNN` or its HTML page.
pub fn made_by_cloudflare(r: &HttpResponse) -> bool {
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
pub fn cloudflared_catch_all(r: &HttpResponse) -> bool {
    r.status == 404 && r.body.trim().is_empty() && !header_is(r, "server", "caddy")
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
}
