//! The service catalog: what runs in a cmux container, where, and what a healthy answer looks like.
//!
//! The catalog is data (`checks/*.json`, one file per service). The default catalog is embedded into
//! the binary at build time; `--checks DIR` replaces it. Every value is validated here, once, so
//! nothing deeper (the internal probe's bash command in particular) ever sees an unchecked string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::Regex;
use serde::{Deserialize, Serialize};

/// The embedded default catalog: (file name, contents).
const EMBEDDED: &[(&str, &str)] = &[
    ("exec.json", include_str!("../checks/exec.json")),
    ("worker.json", include_str!("../checks/worker.json")),
    ("vscode.json", include_str!("../checks/vscode.json")),
    ("proxy.json", include_str!("../checks/proxy.json")),
    ("vnc.json", include_str!("../checks/vnc.json")),
    ("cdp.json", include_str!("../checks/cdp.json")),
    ("xterm.json", include_str!("../checks/xterm.json")),
    ("preview.json", include_str!("../checks/preview.json")),
];

/// The embedded 2026 catalog (`checks/2026`): the Node worker on 39376, the Go worker daemon on
/// 39377 (since 2026-02-16), everything else as in the seed.
const EMBEDDED_2026: &[(&str, &str)] = &[
    ("exec.json", include_str!("../checks/2026/exec.json")),
    ("worker.json", include_str!("../checks/2026/worker.json")),
    (
        "worker-daemon.json",
        include_str!("../checks/2026/worker-daemon.json"),
    ),
    ("vscode.json", include_str!("../checks/2026/vscode.json")),
    ("proxy.json", include_str!("../checks/2026/proxy.json")),
    ("vnc.json", include_str!("../checks/2026/vnc.json")),
    ("cdp.json", include_str!("../checks/2026/cdp.json")),
    ("xterm.json", include_str!("../checks/2026/xterm.json")),
    ("preview.json", include_str!("../checks/2026/preview.json")),
];

/// The name of the catalog entry that is the internal channel (cmux-execd).
pub const EXEC_SERVICE: &str = "exec";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("cannot read catalog directory {dir}: {source}")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read catalog file {file}: {source}")]
    ReadFile {
        file: String,
        source: std::io::Error,
    },
    #[error("{file}: invalid JSON: {message}")]
    Json { file: String, message: String },
    #[error("{file}: field `{field}`: {message}")]
    Field {
        file: String,
        field: String,
        message: String,
    },
    #[error("catalog {origin}: {message}")]
    Catalog { origin: String, message: String },
}

/// A status range as written in the catalog: a code (`200`) or a class (`"2xx"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum StatusSpec {
    Code(u16),
    Class(u8),
}

impl StatusSpec {
    pub fn matches(&self, status: u16) -> bool {
        match self {
            StatusSpec::Code(c) => *c == status,
            StatusSpec::Class(c) => status / 100 == u16::from(*c),
        }
    }
}

impl std::fmt::Display for StatusSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatusSpec::Code(c) => write!(f, "{c}"),
            StatusSpec::Class(c) => write!(f, "{c}xx"),
        }
    }
}

/// What proves that the *right* service answered. Every condition that is set must hold.
#[derive(Debug, Clone, Default)]
pub struct Fingerprint {
    /// `Content-Type` starts with this (case-insensitive).
    pub content_type: Option<String>,
    pub body_prefix: Option<String>,
    pub body_contains: Option<String>,
    pub body_matches: Option<Regex>,
    /// The body is a JSON object with all these top-level keys.
    pub json_keys: Vec<String>,
}

impl Fingerprint {
    pub fn is_empty(&self) -> bool {
        self.content_type.is_none()
            && self.body_prefix.is_none()
            && self.body_contains.is_none()
            && self.body_matches.is_none()
            && self.json_keys.is_empty()
    }

    /// Checks a response against the fingerprint; `Err` says the first condition that failed.
    pub fn check(&self, content_type: Option<&str>, body: &str) -> Result<(), String> {
        if let Some(want) = &self.content_type {
            let got = content_type.unwrap_or("");
            if !got
                .to_ascii_lowercase()
                .starts_with(&want.to_ascii_lowercase())
            {
                return Err(format!("content-type is {got:?}, expected {want}"));
            }
        }
        if let Some(p) = &self.body_prefix {
            if !body.starts_with(p.as_str()) {
                return Err(format!("body does not start with {p:?}"));
            }
        }
        if let Some(c) = &self.body_contains {
            if !body.contains(c.as_str()) {
                return Err(format!("body does not contain {c:?}"));
            }
        }
        if let Some(re) = &self.body_matches {
            if !re.is_match(body) {
                return Err(format!("body does not match /{}/", re.as_str()));
            }
        }
        if !self.json_keys.is_empty() {
            match serde_json::from_str::<serde_json::Value>(body) {
                Ok(serde_json::Value::Object(map)) => {
                    for k in &self.json_keys {
                        if !map.contains_key(k) {
                            return Err(format!("JSON body has no key {k:?}"));
                        }
                    }
                }
                _ => return Err("body is not a JSON object".to_string()),
            }
        }
        Ok(())
    }

    /// A short human description, for evidence lines and docs.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if let Some(c) = &self.content_type {
            parts.push(format!("content-type {c}"));
        }
        if let Some(p) = &self.body_prefix {
            parts.push(format!("body starts with {p:?}"));
        }
        if let Some(c) = &self.body_contains {
            parts.push(format!("body contains {c:?}"));
        }
        if let Some(re) = &self.body_matches {
            parts.push(format!("body matches /{}/", re.as_str()));
        }
        if !self.json_keys.is_empty() {
            parts.push(format!("JSON keys {}", self.json_keys.join(", ")));
        }
        if parts.is_empty() {
            "any body".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// How to probe the service: one HTTP request.
#[derive(Debug, Clone)]
pub struct ProbeSpec {
    pub method: String,
    /// Path and query, starting with `/`.
    pub path: String,
    /// Request headers, validated (token names, no control characters in values).
    pub headers: Vec<(String, String)>,
}

/// What a healthy answer is.
#[derive(Debug, Clone)]
pub struct Healthy {
    pub statuses: Vec<StatusSpec>,
    /// Response headers (lower-case names) that must be present.
    pub headers: Vec<String>,
    pub fingerprint: Fingerprint,
}

impl Healthy {
    pub fn status_ok(&self, status: u16) -> bool {
        self.statuses.iter().any(|s| s.matches(status))
    }
    pub fn describe_statuses(&self) -> String {
        self.statuses
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join("/")
    }
}

/// One service of the catalog.
#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub description: String,
    /// systemd unit inside the container (empty when none).
    pub unit: String,
    pub port: u16,
    /// Routed through Cloudflare Tunnel and Caddy (has a public URL).
    pub routed: bool,
    /// Optional by nature (the user's dev server): not running is not an outage.
    pub optional: bool,
    pub probe: ProbeSpec,
    pub healthy: Healthy,
    /// What this service fronts inside the container, when it is a thin front for another process.
    pub backend: Option<Backend>,
    /// Where the entry came from (file name), for messages.
    pub origin: String,
}

impl Service {
    /// Every systemd unit this entry names: its own, its back end's, and the units those need.
    pub fn units(&self) -> Vec<&str> {
        let mut v: Vec<&str> = Vec::new();
        let own = std::iter::once(self.unit.as_str());
        let back = self.backend.iter().flat_map(|b| {
            std::iter::once(b.unit.as_str()).chain(b.needs.iter().map(String::as_str))
        });
        for u in own.chain(back) {
            if !u.is_empty() && !v.contains(&u) {
                v.push(u);
            }
        }
        v
    }
}

/// A process the service fronts (reference §5a): the front can answer while it is dead.
#[derive(Debug, Clone)]
pub struct Backend {
    /// What it is, for messages (e.g. "Chrome DevTools").
    pub description: String,
    /// Its port on the container's loopback.
    pub port: u16,
    /// Its systemd unit (empty when none or when it is another catalog entry's).
    pub unit: String,
    /// Units it needs to run (Chrome needs openbox and Xvfb).
    pub needs: Vec<String>,
    pub check: BackendCheck,
}

/// How to tell the back end is alive, cheaply, from inside the container.
#[derive(Debug, Clone)]
pub enum BackendCheck {
    /// One HTTP request to `127.0.0.1:{port}`.
    Http {
        probe: ProbeSpec,
        healthy: Box<Healthy>,
    },
    /// Connect and read the first line the server sends; it must start with `prefix`
    /// (VNC greets with `RFB 003.008\n`).
    Banner { prefix: String },
    /// The back end is the port named by this request header of the front's own probe
    /// (cmux-proxy's `X-Cmux-Port-Internal`): the catalog's entry on that port checks it.
    PortHeader { header: String },
}

/// The whole catalog, in a stable order (by port, then name).
#[derive(Debug, Clone)]
pub struct Catalog {
    pub services: Vec<Service>,
    pub origin: String,
}

impl Catalog {
    /// The embedded default catalog (the seed's service table).
    pub fn embedded() -> Catalog {
        let files: Vec<(String, String)> = EMBEDDED
            .iter()
            .map(|(n, c)| (format!("checks/{n}"), (*c).to_string()))
            .collect();
        Catalog::from_sources("(built in)", &files).expect("the embedded catalog is valid")
    }

    /// The embedded 2026 catalog (`checks/2026`, `--catalog 2026`).
    pub fn embedded_2026() -> Catalog {
        let files: Vec<(String, String)> = EMBEDDED_2026
            .iter()
            .map(|(n, c)| (format!("checks/2026/{n}"), (*c).to_string()))
            .collect();
        Catalog::from_sources("(built in, 2026)", &files).expect("the embedded catalog is valid")
    }

    /// Loads every `*.json` file of a directory.
    pub fn load_dir(dir: &Path) -> Result<Catalog, CatalogError> {
        let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        })?;
        let mut paths: Vec<PathBuf> = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|source| CatalogError::ReadDir {
                dir: dir.to_path_buf(),
                source,
            })?;
            let p = entry.path();
            if p.extension().and_then(|e| e.to_str()) == Some("json") {
                paths.push(p);
            }
        }
        paths.sort();
        let mut files = Vec::new();
        for p in paths {
            let name = p.display().to_string();
            let meta = std::fs::metadata(&p).map_err(|source| CatalogError::ReadFile {
                file: name.clone(),
                source,
            })?;
            if meta.len() > 1024 * 1024 {
                return Err(CatalogError::Field {
                    file: name,
                    field: "(file)".into(),
                    message: "larger than 1 MiB; a catalog entry is a small JSON object".into(),
                });
            }
            let text = std::fs::read_to_string(&p).map_err(|source| CatalogError::ReadFile {
                file: name.clone(),
                source,
            })?;
            files.push((name, text));
        }
        Catalog::from_sources(&dir.display().to_string(), &files)
    }

    /// Parses and validates a set of (file name, JSON text) pairs.
    pub fn from_sources(origin: &str, files: &[(String, String)]) -> Result<Catalog, CatalogError> {
        if files.is_empty() {
            return Err(CatalogError::Catalog {
                origin: origin.into(),
                message: "contains no *.json service file".into(),
            });
        }
        let mut services = Vec::with_capacity(files.len());
        for (file, text) in files {
            services.push(parse_service(file, text)?);
        }
        let mut seen_names: BTreeMap<&str, &str> = BTreeMap::new();
        let mut seen_ports: BTreeMap<u16, &str> = BTreeMap::new();
        for s in &services {
            if let Some(other) = seen_names.insert(&s.name, &s.origin) {
                return Err(CatalogError::Field {
                    file: s.origin.clone(),
                    field: "name".into(),
                    message: format!("service {:?} is also defined in {other}", s.name),
                });
            }
            if let Some(other) = seen_ports.insert(s.port, &s.name) {
                return Err(CatalogError::Field {
                    file: s.origin.clone(),
                    field: "port".into(),
                    message: format!("port {} is also used by service {other:?}", s.port),
                });
            }
        }
        services.sort_by(|a, b| (a.port, &a.name).cmp(&(b.port, &b.name)));
        Ok(Catalog {
            services,
            origin: origin.into(),
        })
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.name == name)
    }

    pub fn by_port(&self, port: u16) -> Option<&Service> {
        self.services.iter().find(|s| s.port == port)
    }

    /// The exec channel's entry, if the catalog has one.
    pub fn exec(&self) -> Option<&Service> {
        self.get(EXEC_SERVICE)
    }

    /// Keeps only the named services (the exec entry is always kept: it is the internal channel).
    pub fn select(&self, names: &[String]) -> Result<Catalog, CatalogError> {
        for n in names {
            if self.get(n).is_none() {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                return Err(CatalogError::Catalog {
                    origin: self.origin.clone(),
                    message: format!("no service named {n:?}; known: {}", known.join(", ")),
                });
            }
        }
        Ok(Catalog {
            services: self
                .services
                .iter()
                .filter(|s| names.iter().any(|n| n == &s.name))
                .cloned()
                .collect(),
            origin: self.origin.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Parsing and validation

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    unit: String,
    port: serde_json::Value,
    #[serde(default)]
    routed: bool,
    #[serde(default)]
    optional: bool,
    probe: RawProbe,
    healthy: RawHealthy,
    #[serde(default)]
    backend: Option<RawBackend>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackend {
    #[serde(default)]
    description: String,
    #[serde(default)]
    port: Option<serde_json::Value>,
    #[serde(default)]
    port_header: Option<String>,
    #[serde(default)]
    unit: String,
    #[serde(default)]
    needs: Vec<String>,
    #[serde(default)]
    check: Option<RawBackendCheck>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackendCheck {
    #[serde(default)]
    banner: Option<String>,
    #[serde(default)]
    http: Option<RawProbe>,
    #[serde(default)]
    healthy: Option<RawHealthy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProbe {
    #[serde(default = "default_method")]
    method: String,
    path: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn default_method() -> String {
    "GET".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealthy {
    status: Vec<serde_json::Value>,
    #[serde(default)]
    headers: Vec<String>,
    #[serde(default)]
    fingerprint: RawFingerprint,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFingerprint {
    content_type: Option<String>,
    body_prefix: Option<String>,
    body_contains: Option<String>,
    body_matches: Option<String>,
    #[serde(default)]
    json_keys: Vec<String>,
}

fn field_err(file: &str, field: &str, message: impl Into<String>) -> CatalogError {
    CatalogError::Field {
        file: file.into(),
        field: field.into(),
        message: message.into(),
    }
}

/// A service name: lower-case letters, digits and `-`, starting with a letter, at most 32 long.
pub fn valid_service_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 32
        && b[0].is_ascii_lowercase()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// An HTTP token (RFC 9110), as header names and methods are.
pub fn valid_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c))
}

/// A header value: visible ASCII and spaces only (no CR, LF, NUL or other control characters).
pub fn valid_header_value(s: &str) -> bool {
    s.len() <= 1024 && s.bytes().all(|c| (0x20..0x7f).contains(&c))
}

/// A request target: starts with `/`, only characters a URL path and query may hold unescaped.
pub fn valid_path(s: &str) -> bool {
    s.starts_with('/')
        && s.len() <= 1024
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&c))
}

fn parse_service(file: &str, text: &str) -> Result<Service, CatalogError> {
    let raw: RawService = serde_json::from_str(text).map_err(|e| CatalogError::Json {
        file: file.into(),
        message: e.to_string(),
    })?;
    if !valid_service_name(&raw.name) {
        return Err(field_err(
            file,
            "name",
            format!(
                "{:?} is not a service name: use lower-case letters, digits and '-', starting with a letter",
                raw.name
            ),
        ));
    }
    if raw.description.chars().any(|c| c.is_control()) {
        return Err(field_err(
            file,
            "description",
            "contains control characters",
        ));
    }
    if !raw.unit.is_empty() && !valid_unit(&raw.unit) {
        return Err(field_err(
            file,
            "unit",
            format!(
                "{:?} is not a systemd unit name (letters, digits, '-', '_', '.', '@')",
                raw.unit
            ),
        ));
    }
    let port = match raw.port.as_u64() {
        Some(p) if (1..=65535).contains(&p) => p as u16,
        _ => {
            return Err(field_err(
                file,
                "port",
                format!(
                    "{} is not a TCP port: expected an integer from 1 to 65535",
                    raw.port
                ),
            ))
        }
    };
    let probe = parse_probe(file, "probe", &raw.probe)?;
    let healthy = parse_healthy(file, "healthy", raw.healthy)?;
    let backend = match raw.backend {
        Some(b) => Some(parse_backend(file, b, &probe)?),
        None => None,
    };
    Ok(Service {
        name: raw.name,
        description: raw.description,
        unit: raw.unit,
        port,
        routed: raw.routed,
        optional: raw.optional,
        probe,
        healthy,
        backend,
        origin: file.into(),
    })
}

fn parse_probe(file: &str, at: &str, raw: &RawProbe) -> Result<ProbeSpec, CatalogError> {
    let fld = |f: &str| format!("{at}.{f}");
    let method = raw.method.to_ascii_uppercase();
    if !valid_token(&method) || !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return Err(field_err(
            file,
            &fld("method"),
            format!("{:?} is not an HTTP method such as GET or HEAD", raw.method),
        ));
    }
    if !valid_path(&raw.path) {
        return Err(field_err(
            file,
            &fld("path"),
            format!(
                "{:?} is not a request path: it must start with '/' and hold only URL characters (percent-encode the rest)",
                raw.path
            ),
        ));
    }
    let mut headers = Vec::new();
    for (k, v) in &raw.headers {
        if !valid_token(k) {
            return Err(field_err(
                file,
                &fld("headers"),
                format!("{k:?} is not a header name"),
            ));
        }
        if !valid_header_value(v) {
            return Err(field_err(
                file,
                &fld("headers"),
                format!("value of {k:?} must be printable ASCII without line breaks"),
            ));
        }
        headers.push((k.clone(), v.clone()));
    }
    Ok(ProbeSpec {
        method,
        path: raw.path.clone(),
        headers,
    })
}

fn parse_healthy(file: &str, at: &str, raw: RawHealthy) -> Result<Healthy, CatalogError> {
    let fld = |f: &str| format!("{at}.{f}");
    if raw.status.is_empty() {
        return Err(field_err(
            file,
            &fld("status"),
            "is empty: list the statuses of a healthy answer, e.g. [200] or [\"2xx\"]",
        ));
    }
    let mut statuses = Vec::new();
    for v in &raw.status {
        statuses.push(parse_status(v).ok_or_else(|| {
            field_err(
                file,
                &fld("status"),
                format!("{v} is not a status: expected 100-599 or a class such as \"2xx\""),
            )
        })?);
    }
    let mut want_headers = Vec::new();
    for h in &raw.headers {
        if !valid_token(h) {
            return Err(field_err(
                file,
                &fld("headers"),
                format!("{h:?} is not a header name"),
            ));
        }
        want_headers.push(h.to_ascii_lowercase());
    }
    let f = raw.fingerprint;
    let body_matches = match f.body_matches {
        Some(re) => Some(Regex::new(&re).map_err(|e| {
            field_err(
                file,
                &fld("fingerprint.body_matches"),
                format!(
                    "not a regular expression: {}",
                    e.to_string().lines().last().unwrap_or("")
                ),
            )
        })?),
        None => None,
    };
    Ok(Healthy {
        statuses,
        headers: want_headers,
        fingerprint: Fingerprint {
            content_type: f.content_type,
            body_prefix: f.body_prefix,
            body_contains: f.body_contains,
            body_matches,
            json_keys: f.json_keys,
        },
    })
}

fn parse_port(file: &str, field: &str, v: &serde_json::Value) -> Result<u16, CatalogError> {
    match v.as_u64() {
        Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
        _ => Err(field_err(
            file,
            field,
            format!("{v} is not a TCP port: expected an integer from 1 to 65535"),
        )),
    }
}

fn parse_unit(file: &str, field: &str, u: &str) -> Result<(), CatalogError> {
    if !u.is_empty() && !valid_unit(u) {
        return Err(field_err(
            file,
            field,
            format!("{u:?} is not a systemd unit name (letters, digits, '-', '_', '.', '@')"),
        ));
    }
    Ok(())
}

/// Longest banner prefix a back-end check may expect (the check reads one line of at most 64).
pub const BANNER_MAX: usize = 32;

fn parse_backend(file: &str, raw: RawBackend, probe: &ProbeSpec) -> Result<Backend, CatalogError> {
    if raw.description.chars().any(|c| c.is_control()) || raw.description.len() > 200 {
        return Err(field_err(
            file,
            "backend.description",
            "must be one short line without control characters",
        ));
    }
    parse_unit(file, "backend.unit", &raw.unit)?;
    if raw.needs.len() > 8 {
        return Err(field_err(file, "backend.needs", "lists more than 8 units"));
    }
    for n in &raw.needs {
        if n.is_empty() {
            return Err(field_err(file, "backend.needs", "holds an empty unit name"));
        }
        parse_unit(file, "backend.needs", n)?;
    }
    let (port, header) = match (&raw.port, &raw.port_header) {
        (Some(p), None) => (parse_port(file, "backend.port", p)?, None),
        (None, Some(h)) => {
            let value = probe
                .headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(h))
                .map(|(_, v)| v.as_str());
            let Some(value) = value else {
                return Err(field_err(
                    file,
                    "backend.port_header",
                    format!("{h:?} is not a header of this entry's probe"),
                ));
            };
            let port = value
                .trim()
                .parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| {
                    field_err(
                        file,
                        "backend.port_header",
                        format!("the probe's {h} header is {value:?}, not a TCP port"),
                    )
                })?;
            (port, Some(h.clone()))
        }
        _ => {
            return Err(field_err(
                file,
                "backend.port",
                "give exactly one of `port` (the back end's port on the container's loopback) and `port_header` (a probe header naming it)",
            ))
        }
    };
    let check = match (header, raw.check) {
        (Some(header), None) => BackendCheck::PortHeader { header },
        (Some(_), Some(_)) => {
            return Err(field_err(
                file,
                "backend.check",
                "a back end named by `port_header` is checked by the catalog's entry on that port; give no check",
            ))
        }
        (None, None) => {
            return Err(field_err(
                file,
                "backend.check",
                "missing: give {\"banner\": \"PREFIX\"} or {\"http\": {...}, \"healthy\": {...}}",
            ))
        }
        (None, Some(c)) => match (c.banner, c.http, c.healthy) {
            (Some(b), None, None) => {
                if b.is_empty() || b.len() > BANNER_MAX || !b.bytes().all(|c| (0x20..0x7f).contains(&c)) {
                    return Err(field_err(
                        file,
                        "backend.check.banner",
                        format!("must be 1 to {BANNER_MAX} printable ASCII characters"),
                    ));
                }
                BackendCheck::Banner { prefix: b }
            }
            (None, Some(h), Some(healthy)) => BackendCheck::Http {
                probe: parse_probe(file, "backend.check.http", &h)?,
                healthy: Box::new(parse_healthy(file, "backend.check.healthy", healthy)?),
            },
            _ => {
                return Err(field_err(
                    file,
                    "backend.check",
                    "give either `banner` alone, or `http` with `healthy`",
                ))
            }
        },
    };
    Ok(Backend {
        description: raw.description,
        port,
        unit: raw.unit,
        needs: raw.needs,
        check,
    })
}

fn valid_unit(s: &str) -> bool {
    s.len() <= 128
        && s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.@".contains(&c))
        && !s.starts_with('-')
}

fn parse_status(v: &serde_json::Value) -> Option<StatusSpec> {
    if let Some(n) = v.as_u64() {
        return (100..=599)
            .contains(&n)
            .then_some(StatusSpec::Code(n as u16));
    }
    let s = v.as_str()?;
    let b = s.as_bytes();
    if b.len() == 3 && (b'1'..=b'5').contains(&b[0]) && b[1..].eq_ignore_ascii_case(b"xx") {
        return Some(StatusSpec::Class(b[0] - b'0'));
    }
    s.parse::<u16>()
        .ok()
        .filter(|n| (100..=599).contains(n))
        .map(StatusSpec::Code)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Result<Service, CatalogError> {
        parse_service("t.json", text)
    }

    const GOOD: &str = r#"{"name":"xterm","unit":"cmux-pty","port":39383,"routed":true,
        "probe":{"path":"/sessions"},"healthy":{"status":[200],"headers":["Access-Control-Allow-Origin"],
        "fingerprint":{"json_keys":["sessions"]}}}"#;

    #[test]
    fn embedded_catalog_is_the_seed_table() {
        let c = Catalog::embedded();
        let got: Vec<(&str, u16, bool)> = c
            .services
            .iter()
            .map(|s| (s.name.as_str(), s.port, s.routed))
            .collect();
        assert_eq!(
            got,
            vec![
                ("preview", 5173, true),
                ("exec", 39375, true),
                ("worker", 39377, true),
                ("vscode", 39378, true),
                ("proxy", 39379, false),
                ("vnc", 39380, true),
                ("cdp", 39381, false),
                ("xterm", 39383, true),
            ]
        );
        assert!(c.get("preview").unwrap().optional);
        assert_eq!(c.get("xterm").unwrap().unit, "cmux-pty");
        assert_eq!(
            c.get("xterm").unwrap().healthy.headers,
            vec!["access-control-allow-origin".to_string()]
        );
    }

    #[test]
    fn good_entry_parses_and_normalises() {
        let s = one(GOOD).unwrap();
        assert_eq!(s.probe.method, "GET");
        assert_eq!(s.healthy.headers, vec!["access-control-allow-origin"]);
        assert!(s
            .healthy
            .fingerprint
            .check(None, r#"{"sessions":[]}"#)
            .is_ok());
        assert!(s.healthy.fingerprint.check(None, r#"{"other":1}"#).is_err());
    }

    #[test]
    fn bad_entries_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (
                r#"{"name":"x","port":0,"probe":{"path":"/"},"healthy":{"status":[200]}}"#,
                "port",
            ),
            (
                r#"{"name":"x","port":"80","probe":{"path":"/"},"healthy":{"status":[200]}}"#,
                "port",
            ),
            (
                r#"{"name":"x","port":70000,"probe":{"path":"/"},"healthy":{"status":[200]}}"#,
                "port",
            ),
            (
                r#"{"name":"X Y","port":80,"probe":{"path":"/"},"healthy":{"status":[200]}}"#,
                "name",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"nope"},"healthy":{"status":[200]}}"#,
                "probe.path",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/a b"},"healthy":{"status":[200]}}"#,
                "probe.path",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/$(id)\"`"},"healthy":{"status":[200]}}"#,
                "probe.path",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/","method":"G T"},"healthy":{"status":[200]}}"#,
                "probe.method",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/","headers":{"a b":"1"}},"healthy":{"status":[200]}}"#,
                "probe.headers",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/","headers":{"a":"1\r\nX: y"}},"healthy":{"status":[200]}}"#,
                "probe.headers",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/"},"healthy":{"status":[]}}"#,
                "healthy.status",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/"},"healthy":{"status":[999]}}"#,
                "healthy.status",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/"},"healthy":{"status":["6xx"]}}"#,
                "healthy.status",
            ),
            (
                r#"{"name":"x","port":80,"probe":{"path":"/"},"healthy":{"status":[200],"fingerprint":{"body_matches":"("}}}"#,
                "healthy.fingerprint.body_matches",
            ),
            (
                r#"{"name":"x","unit":"a;b","port":80,"probe":{"path":"/"},"healthy":{"status":[200]}}"#,
                "unit",
            ),
        ];
        for (text, field) in cases {
            match one(text) {
                Err(CatalogError::Field { field: f, file, .. }) => {
                    assert_eq!(&f, field, "for {text}");
                    assert_eq!(file, "t.json");
                }
                other => panic!("{text}: expected a field error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_fields_and_bad_json_are_errors() {
        let e = one(
            r#"{"name":"x","port":80,"prob":{},"probe":{"path":"/"},"healthy":{"status":[200]}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("t.json") && e.contains("prob"), "{e}");
        let e = one("{not json").unwrap_err().to_string();
        assert!(e.starts_with("t.json: invalid JSON"), "{e}");
    }

    #[test]
    fn duplicate_names_and_ports_are_rejected() {
        let a = ("a.json".to_string(), GOOD.to_string());
        let b = ("b.json".to_string(), GOOD.to_string());
        let e = Catalog::from_sources("dir", &[a.clone(), b])
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.json") && e.contains("a.json"), "{e}");
        let c = ("c.json".to_string(), GOOD.replace("xterm", "other"));
        let e = Catalog::from_sources("dir", &[a, c])
            .unwrap_err()
            .to_string();
        assert!(e.contains("port 39383"), "{e}");
        assert!(Catalog::from_sources("dir", &[]).is_err());
    }

    #[test]
    fn status_classes() {
        assert_eq!(
            parse_status(&serde_json::json!("2xx")),
            Some(StatusSpec::Class(2))
        );
        assert_eq!(
            parse_status(&serde_json::json!("404")),
            Some(StatusSpec::Code(404))
        );
        assert!(StatusSpec::Class(4).matches(404));
        assert!(!StatusSpec::Class(4).matches(500));
    }
}

#[cfg(test)]
mod later_catalog_tests {
    use super::*;

    /// `checks/2026`: the catalog after 2026-02-16 (reference §3), for `--checks checks/2026`.
    #[test]
    fn the_2026_catalog_moves_the_worker_and_adds_the_daemon() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("checks/2026");
        let c = Catalog::load_dir(&dir).unwrap();
        assert_eq!(c.get("worker").unwrap().port, 39376);
        let d = c.get("worker-daemon").unwrap();
        assert_eq!((d.port, d.probe.path.as_str()), (39377, "/health"));
        let healthy = r#"{"authenticated":false,"provider":"e2b","status":"ok"}"#;
        assert!(d
            .healthy
            .fingerprint
            .check(Some("application/json"), healthy)
            .is_ok());
        assert!(d
            .healthy
            .fingerprint
            .check(None, r#"0{"sid":"x"}"#)
            .is_err());
        // Everything else is the seed's.
        let seed = Catalog::embedded();
        for s in &seed.services {
            if s.name != "worker" {
                assert_eq!(c.get(&s.name).map(|x| x.port), Some(s.port), "{}", s.name);
            }
        }
        assert_eq!(c.services.len(), seed.services.len() + 1);
        // The binary carries the same catalog: no checkout needed.
        let built_in = Catalog::embedded_2026();
        let names = |c: &Catalog| {
            c.services
                .iter()
                .map(|s| (s.name.clone(), s.port))
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&built_in), names(&c));
        let on_disk = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(
            on_disk,
            EMBEDDED_2026.len(),
            "every file of checks/2026 is embedded"
        );
    }
}

#[cfg(test)]
mod backend_tests {
    use super::*;

    fn with_backend(backend: &str) -> Result<Service, CatalogError> {
        let text = format!(
            r#"{{"name":"x","unit":"x-front","port":80,"probe":{{"path":"/","headers":{{"X-Port":"5901","X-Bad":"abc"}}}},"healthy":{{"status":[200]}},"backend":{backend}}}"#
        );
        parse_service("t.json", &text)
    }

    #[test]
    fn both_generations_name_the_back_ends() {
        let later =
            Catalog::load_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("checks/2026")).unwrap();
        for c in [Catalog::embedded(), later] {
            let cdp = c.get("cdp").unwrap().backend.as_ref().unwrap();
            assert_eq!((cdp.port, cdp.unit.as_str()), (39382, "cmux-devtools"));
            assert_eq!(cdp.needs, vec!["cmux-openbox", "cmux-xvfb"]);
            let BackendCheck::Http { probe, healthy } = &cdp.check else {
                panic!("cdp: an HTTP check")
            };
            assert_eq!(probe.path, "/json/version");
            assert!(healthy
                .fingerprint
                .check(
                    None,
                    r#"{"Browser":"Chrome/131","webSocketDebuggerUrl":"ws://x"}"#
                )
                .is_ok());
            let vnc = c.get("vnc").unwrap().backend.as_ref().unwrap();
            assert_eq!((vnc.port, vnc.unit.as_str()), (5901, "cmux-tigervnc"));
            assert!(matches!(&vnc.check, BackendCheck::Banner { prefix } if prefix == "RFB 003."));
            let proxy = c.get("proxy").unwrap().backend.as_ref().unwrap();
            assert_eq!(proxy.port, 39375);
            assert!(
                matches!(&proxy.check, BackendCheck::PortHeader { header } if header == "X-Cmux-Port-Internal")
            );
            assert_eq!(
                c.get("cdp").unwrap().units(),
                vec![
                    "cmux-cdp-proxy",
                    "cmux-devtools",
                    "cmux-openbox",
                    "cmux-xvfb"
                ]
            );
            assert!(c.get("xterm").unwrap().backend.is_none());
        }
    }

    #[test]
    fn good_back_ends_parse() {
        let b = with_backend(r#"{"port":5901,"unit":"v.service","check":{"banner":"RFB 003."}}"#)
            .unwrap();
        assert_eq!(b.units(), vec!["x-front", "v.service"]);
        let b = with_backend(r#"{"port_header":"x-port"}"#).unwrap();
        assert_eq!(b.backend.unwrap().port, 5901);
    }

    #[test]
    fn bad_back_ends_name_the_field() {
        let cases: &[(&str, &str)] = &[
            (r#"{"port":0,"check":{"banner":"R"}}"#, "backend.port"),
            (r#"{"port":"1","check":{"banner":"R"}}"#, "backend.port"),
            (r#"{"check":{"banner":"R"}}"#, "backend.port"),
            (
                r#"{"port":1,"port_header":"X-Port","check":{"banner":"R"}}"#,
                "backend.port",
            ),
            (r#"{"port_header":"X-None"}"#, "backend.port_header"),
            (r#"{"port_header":"X-Bad"}"#, "backend.port_header"),
            (
                r#"{"port_header":"X-Port","check":{"banner":"R"}}"#,
                "backend.check",
            ),
            (r#"{"port":1}"#, "backend.check"),
            (r#"{"port":1,"check":{}}"#, "backend.check"),
            (
                r#"{"port":1,"check":{"banner":"R","http":{"path":"/"}}}"#,
                "backend.check",
            ),
            (
                r#"{"port":1,"check":{"http":{"path":"/"}}}"#,
                "backend.check",
            ),
            (
                r#"{"port":1,"check":{"banner":""}}"#,
                "backend.check.banner",
            ),
            (
                r#"{"port":1,"check":{"banner":"RFB\n"}}"#,
                "backend.check.banner",
            ),
            (
                r#"{"port":1,"check":{"http":{"path":"$(id)"},"healthy":{"status":[200]}}}"#,
                "backend.check.http.path",
            ),
            (
                r#"{"port":1,"check":{"http":{"path":"/","headers":{"a":"1\r\nb: 2"}},"healthy":{"status":[200]}}}"#,
                "backend.check.http.headers",
            ),
            (
                r#"{"port":1,"check":{"http":{"path":"/"},"healthy":{"status":[]}}}"#,
                "backend.check.healthy.status",
            ),
            (
                r#"{"port":1,"unit":"a;b","check":{"banner":"R"}}"#,
                "backend.unit",
            ),
            (
                r#"{"port":1,"needs":["ok","$(id)"],"check":{"banner":"R"}}"#,
                "backend.needs",
            ),
            (
                r#"{"port":1,"needs":[""],"check":{"banner":"R"}}"#,
                "backend.needs",
            ),
            (
                r#"{"port":1,"description":"a\u001b[31m","check":{"banner":"R"}}"#,
                "backend.description",
            ),
        ];
        for (b, field) in cases {
            match with_backend(b) {
                Err(CatalogError::Field { field: f, file, .. }) => {
                    assert_eq!(&f, field, "for {b}");
                    assert_eq!(file, "t.json");
                }
                other => panic!("{b}: expected a field error on {field}, got {other:?}"),
            }
        }
        let e = with_backend(r#"{"port":1,"prot":2}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("t.json") && e.contains("prot"), "{e}");
    }
}
