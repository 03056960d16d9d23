//! The Caddy route model: which hostnames Caddy sends to which upstream.
//!
//! Two readers fill a [`RouteTable`]: [`caddyfile::parse`] (the Caddyfile on disk) and
//! [`admin::parse`] (the JSON config of the running Caddy, `GET /config/` on the admin API).
//! Both are pure and never panic; whatever they do not understand becomes a [`Warning`] with a
//! source position, never a silent guess.

pub mod admin;
pub mod caddyfile;

use regex::Regex;
use serde::Serialize;

/// The file name used in [`Source`] for routes read from the admin API.
pub const ADMIN_API_SOURCE: &str = "caddy admin API";

/// Where a route or a warning comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Source {
    pub file: String,
    /// 1-based line; 0 when there is no line (the admin API).
    pub line: usize,
    /// For the admin API: the JSON path of the handler, e.g.
    /// `apps.http.servers.srv0.routes[2].handle[0].routes[0].handle[0]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub json_path: Option<String>,
}

impl Source {
    pub fn at(file: &str, line: usize) -> Source {
        Source {
            file: file.to_string(),
            line,
            json_path: None,
        }
    }

    pub fn json(path: &str) -> Source {
        Source {
            file: ADMIN_API_SOURCE.to_string(),
            line: 0,
            json_path: Some(path.to_string()),
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.json_path {
            Some(p) => write!(f, "{} {}", self.file, p),
            None => write!(f, "{}:{}", self.file, self.line),
        }
    }
}

/// Something a reader did not understand or chose not to follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub source: Source,
    pub message: String,
}

/// Where Caddy dials.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Upstream {
    /// e.g. host_template `cmux-{re.vmid.1}.lan`, port 39383.
    Fixed { host_template: String, port: u16 },
    /// The later layout: `{re.service.2}.lan:{re.service.1}`: the port comes from the hostname.
    FromHost {
        host_template: String,
        port_placeholder: String,
    },
    /// Anything else, kept verbatim.
    Other { raw: String },
}

impl Upstream {
    /// Reads one upstream address as written in a Caddyfile or in a `dial` field.
    ///
    /// `http://` and `h2c://` default to port 80, `https://` to 443, as Caddy does; a bare
    /// host without port also dials 80. A port that is a placeholder gives [`Upstream::FromHost`].
    pub fn parse(raw: &str) -> Upstream {
        let other = || Upstream::Other {
            raw: raw.to_string(),
        };
        let (rest, default_port) = if let Some(r) = raw.strip_prefix("https://") {
            (r, 443)
        } else if let Some(r) = raw.strip_prefix("http://") {
            (r, 80)
        } else if let Some(r) = raw.strip_prefix("h2c://") {
            (r, 80)
        } else {
            (raw, 80)
        };
        if rest.is_empty()
            || rest.contains("://")
            || rest.contains('/')
            || rest.starts_with("unix")
            || rest.chars().any(char::is_whitespace)
        {
            return other();
        }
        // The port separator is the last ':' outside braces and outside an IPv6 literal.
        let mut depth = 0i32;
        let mut bracket = false;
        let mut sep = None;
        for (i, c) in rest.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                '[' => bracket = true,
                ']' => bracket = false,
                ':' if depth == 0 && !bracket => sep = Some(i),
                _ => {}
            }
        }
        let (host, port) = match sep {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        if host.is_empty() {
            return other();
        }
        match port {
            None => Upstream::Fixed {
                host_template: host.to_string(),
                port: default_port,
            },
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                match p.parse::<u16>() {
                    Ok(n) if n > 0 => Upstream::Fixed {
                        host_template: host.to_string(),
                        port: n,
                    },
                    _ => other(),
                }
            }
            Some(p) if is_single_placeholder(p) => Upstream::FromHost {
                host_template: host.to_string(),
                port_placeholder: p.to_string(),
            },
            Some(_) => other(),
        }
    }

    /// The upstream as Caddy would print it (`host:port`).
    pub fn display(&self) -> String {
        match self {
            Upstream::Fixed {
                host_template,
                port,
            } => format!("{host_template}:{port}"),
            Upstream::FromHost {
                host_template,
                port_placeholder,
            } => format!("{host_template}:{port_placeholder}"),
            Upstream::Other { raw } => raw.clone(),
        }
    }

    pub fn fixed_port(&self) -> Option<u16> {
        match self {
            Upstream::Fixed { port, .. } => Some(*port),
            _ => None,
        }
    }
}

fn is_single_placeholder(s: &str) -> bool {
    s.len() > 2 && s.starts_with('{') && s.ends_with('}') && !s[1..s.len() - 1].contains(['{', '}'])
}

/// One route to an upstream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The Host regexp as written, e.g. `^xterm-(\d+)\.`; empty when the route does not match
    /// the Host header with a regexp (then only [`Route::hosts`] restricts it, if anything).
    pub host_pattern: String,
    /// The capture name of the Host regexp (`vmid` in `header_regexp vmid Host ...`): the NAME of
    /// `{re.NAME.N}`. `None` for an unnamed regexp (placeholders `{http.regexp.N}`).
    pub capture_name: Option<String>,
    /// The catalog service this route serves when known from the pattern or the matcher name;
    /// `None` for the generic `port-{port}-{instance}` rule.
    pub service: Option<String>,
    pub upstream: Upstream,
    /// Where the `reverse_proxy` is (Caddyfile line, or admin API JSON path).
    pub source: Source,
    /// The named matcher that selects the route (`xterm` for `@xterm`), if any.
    pub matcher: Option<String>,
    /// Host names the route is restricted to (site addresses, `host` matchers); empty = any host.
    /// `*` matches one label, as in Caddy.
    pub hosts: Vec<String>,
    /// The site block (Caddyfile addresses) or server (admin API: name and listen addresses).
    pub site: String,
    /// Conditions other than the host (`method OPTIONS`, `path /api/*`, ...), as text.
    /// [`RouteTable::resolve`] skips routes that have any: it answers for a plain request.
    pub conditions: Vec<String>,
}

impl Route {
    /// Whether this route serves a request for `host` (conditions other than the host aside).
    /// `None` when the pattern is not a valid regexp.
    pub fn matches_host(&self, host: &str) -> Option<bool> {
        Some(self.captures(host)?.is_some())
    }

    /// The capture groups of the host regexp for `host` (`Some(None)`: no match).
    fn captures(&self, host: &str) -> Option<Option<Vec<String>>> {
        let bare = strip_port(host);
        if !self.hosts.is_empty() && !self.hosts.iter().any(|h| host_matches(h, bare)) {
            return Some(None);
        }
        if self.host_pattern.is_empty() {
            return Some(Some(vec![host.to_string()]));
        }
        let re = compiled(&self.host_pattern)?;
        Some(re.captures(host).map(|c| {
            c.iter()
                .map(|m| m.map(|m| m.as_str().to_string()).unwrap_or_default())
                .collect()
        }))
    }
}

/// Host regexps compiled once per process (a fleet run resolves every service of every target
/// against every route). Bounded: a flood of distinct patterns just starts the cache over.
fn compiled(pattern: &str) -> Option<Regex> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static CACHE: OnceLock<Mutex<HashMap<String, Option<Regex>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut map = cache.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = map.get(pattern) {
        return re.clone();
    }
    if map.len() >= 256 {
        map.clear();
    }
    let re = Regex::new(pattern).ok();
    map.insert(pattern.to_string(), re.clone());
    re
}

/// A route applied to one hostname.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedRoute<'a> {
    pub route: &'a Route,
    /// Index of the route in [`RouteTable::routes`].
    pub index: usize,
    /// The upstream host with the captures applied, e.g. `cmux-202.lan`.
    pub upstream_host: String,
    /// The port Caddy dials; `None` when it is not a number after substitution (or unknown).
    pub port: Option<u16>,
}

impl ResolvedRoute<'_> {
    /// `host:port`, or the host alone when the port is unknown.
    pub fn dial(&self) -> String {
        match self.port {
            Some(p) => format!("{}:{p}", self.upstream_host),
            None => self.upstream_host.clone(),
        }
    }
}

/// Every route to an upstream, in the order Caddy evaluates them, plus what was not understood.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RouteTable {
    pub routes: Vec<Route>,
    pub warnings: Vec<Warning>,
    /// The Caddyfile's name and text, for the lint checks of directives the route model does not
    /// keep (`header_up`, `header_down`, the `OPTIONS` handler, the catch-all). None for the
    /// admin API.
    #[serde(skip)]
    pub caddyfile_text: Option<(String, String)>,
}

impl RouteTable {
    /// The route Caddy would use for this hostname: the first route (in evaluation order) whose
    /// host conditions match and that has no other condition, with the regexp captures applied.
    /// Routes whose pattern does not compile never match (the reader has warned about them).
    pub fn resolve(&self, host: &str) -> Option<ResolvedRoute<'_>> {
        for (index, route) in self.routes.iter().enumerate() {
            if !route.conditions.is_empty() {
                continue;
            }
            let Some(Some(caps)) = route.captures(host) else {
                continue;
            };
            let name = route.capture_name.as_deref();
            let (upstream_host, port) = match &route.upstream {
                Upstream::Fixed {
                    host_template,
                    port,
                } => (substitute(host_template, name, &caps), Some(*port)),
                Upstream::FromHost {
                    host_template,
                    port_placeholder,
                } => {
                    let p = substitute(port_placeholder, name, &caps);
                    (
                        substitute(host_template, name, &caps),
                        p.parse::<u16>().ok().filter(|p| *p > 0),
                    )
                }
                Upstream::Other { raw } => (substitute(raw, name, &caps), None),
            };
            return Some(ResolvedRoute {
                route,
                index,
                upstream_host,
                port,
            });
        }
        None
    }

    pub fn routes_for_service(&self, service: &str) -> Vec<&Route> {
        self.routes
            .iter()
            .filter(|r| r.service.as_deref() == Some(service))
            .collect()
    }

    /// Whether a generic rule (port taken from the hostname, no extra condition) exists.
    pub fn has_generic_route(&self) -> bool {
        self.routes
            .iter()
            .any(|r| matches!(r.upstream, Upstream::FromHost { .. }) && r.conditions.is_empty())
    }
}

/// Replaces `{re.NAME.N}`, `{http.regexp.NAME.N}` (and the unnamed `{re.N}`, `{http.regexp.N}`)
/// with capture N when NAME is the route's capture name. Other placeholders stay as they are.
pub fn substitute(template: &str, name: Option<&str>, caps: &[String]) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let after = &rest[start..];
        let Some(end) = after.find('}') else {
            out.push_str(after);
            return out;
        };
        let inner = &after[1..end];
        match placeholder_value(inner, name, caps) {
            Some(v) => out.push_str(v),
            None => out.push_str(&after[..=end]),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

fn placeholder_value<'c>(inner: &str, name: Option<&str>, caps: &'c [String]) -> Option<&'c str> {
    let body = inner
        .strip_prefix("re.")
        .or_else(|| inner.strip_prefix("http.regexp."))?;
    let (n, idx) = match body.rsplit_once('.') {
        Some((n, idx)) => (Some(n), idx),
        None => (None, body),
    };
    if n != name {
        return None;
    }
    let i: usize = idx.parse().ok()?;
    caps.get(i).map(String::as_str)
}

/// Infers the catalog service name of a route: from the literal prefix of the host regexp
/// (`^xterm-` -> `xterm`), else from the matcher name. `None` when the port comes from the host.
pub fn infer_service(pattern: &str, matcher: Option<&str>, upstream: &Upstream) -> Option<String> {
    if matches!(upstream, Upstream::FromHost { .. }) {
        return None;
    }
    if let Some(p) = literal_prefix(pattern) {
        return Some(p);
    }
    matcher
        .filter(|m| crate::catalog::valid_service_name(m))
        .map(str::to_string)
}

fn literal_prefix(pattern: &str) -> Option<String> {
    let p = pattern.strip_prefix('^')?;
    let end = p
        .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit()))
        .unwrap_or(p.len());
    let word = &p[..end];
    let next = &p[end..];
    let ends_label = next.starts_with('-') || next.starts_with("\\.");
    (!word.is_empty() && word.as_bytes()[0].is_ascii_lowercase() && ends_label)
        .then(|| word.to_string())
}

/// Drops a `:port` suffix from a Host header value (keeps IPv6 literals intact).
pub fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') && p.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

/// Caddy's host matching: case-insensitive, `*` matches exactly one label.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    let p: Vec<&str> = pattern.split('.').collect();
    let h: Vec<&str> = host.split('.').collect();
    p.len() == h.len()
        && p.iter()
            .zip(&h)
            .all(|(a, b)| *a == "*" || a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_forms() {
        assert_eq!(
            Upstream::parse("cmux-{re.vmid.1}.lan:39383"),
            Upstream::Fixed {
                host_template: "cmux-{re.vmid.1}.lan".into(),
                port: 39383
            }
        );
        assert_eq!(
            Upstream::parse("{re.service.2}.lan:{re.service.1}"),
            Upstream::FromHost {
                host_template: "{re.service.2}.lan".into(),
                port_placeholder: "{re.service.1}".into()
            }
        );
        assert_eq!(
            Upstream::parse("http://localhost"),
            Upstream::Fixed {
                host_template: "localhost".into(),
                port: 80
            }
        );
        assert_eq!(
            Upstream::parse("https://a.b"),
            Upstream::Fixed {
                host_template: "a.b".into(),
                port: 443
            }
        );
        assert_eq!(
            Upstream::parse("[::1]:8080"),
            Upstream::Fixed {
                host_template: "[::1]".into(),
                port: 8080
            }
        );
        for raw in [
            "unix//run/x.sock",
            "a:99999",
            "a:0",
            "a:{x}{y}",
            ":80",
            "a:8001-8006",
        ] {
            assert_eq!(Upstream::parse(raw), Upstream::Other { raw: raw.into() });
        }
    }

    #[test]
    fn substitution() {
        let caps = vec!["x".to_string(), "202".to_string()];
        assert_eq!(
            substitute("cmux-{re.vmid.1}.lan", Some("vmid"), &caps),
            "cmux-202.lan"
        );
        assert_eq!(
            substitute("cmux-{http.regexp.vmid.1}.lan", Some("vmid"), &caps),
            "cmux-202.lan"
        );
        assert_eq!(
            substitute("{re.other.1}", Some("vmid"), &caps),
            "{re.other.1}"
        );
        assert_eq!(
            substitute("{re.vmid.7}", Some("vmid"), &caps),
            "{re.vmid.7}"
        );
        assert_eq!(substitute("{http.regexp.1}", None, &caps), "202");
        assert_eq!(substitute("a{b", None, &caps), "a{b");
    }

    #[test]
    fn service_inference() {
        let fixed = Upstream::parse("a:1");
        assert_eq!(
            infer_service(r"^xterm-(\d+)\.", Some("pty"), &fixed).as_deref(),
            Some("xterm")
        );
        assert_eq!(
            infer_service(r"^(?:xterm|pty)-(\d+)\.", Some("xterm"), &fixed).as_deref(),
            Some("xterm")
        );
        assert_eq!(infer_service("", None, &fixed), None);
        let gen = Upstream::parse("{re.s.2}.lan:{re.s.1}");
        assert_eq!(infer_service(r"^port-(\d+)-", Some("service"), &gen), None);
    }

    #[test]
    fn hosts() {
        assert!(host_matches("*.example.com", "xterm-1.Example.com"));
        assert!(!host_matches("*.example.com", "a.b.example.com"));
        assert_eq!(strip_port("a.b:8080"), "a.b");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
    }
}
