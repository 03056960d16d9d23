//! Targets: which container, under which domain, at which public URLs.

/// The routing layout, which decides what a "Caddy" fix looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Layout {
    /// One hostname and one Caddy route per service (`https://{service}-{vmid}.DOMAIN`).
    PerService,
    /// The port is in the hostname and one generic Caddy rule dials it (`port-{port}-...`).
    PortInHost,
}

/// The placeholders a URL template may use.
pub const PLACEHOLDERS: &[&str] = &["service", "vmid", "port", "domain", "instance"];

/// The default: the seed layout, one hostname per service.
pub const DEFAULT_TEMPLATE: &str = "https://{service}-{vmid}.{domain}";

/// The 2026 layout: one generic Caddy rule, the port and the container's hostname in the name.
pub const TEMPLATE_2026: &str = "https://port-{port}-{instance}.{domain}";

/// The instance name (container hostname) of a VMID when nothing better is known: the name cmux
/// gave containers before the `pvelxc-` names.
pub fn default_instance(vmid: u32) -> String {
    format!("cmux-{vmid}")
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("--url-template {template:?}: unknown placeholder {{{name}}}; known: {{service}}, {{vmid}}, {{instance}}, {{port}}, {{domain}}")]
    UnknownPlaceholder { template: String, name: String },
    #[error("--url-template {template:?}: unbalanced brace; write placeholders as {{name}}")]
    Unbalanced { template: String },
    #[error(
        "--url-template {template:?}: must start with https:// or http://, e.g. {DEFAULT_TEMPLATE}"
    )]
    Scheme { template: String },
    #[error("--url-template {template:?}: must contain {{vmid}} or {{instance}} so each target gets its own URL")]
    NoVmid { template: String },
    #[error("--url-template {template:?}: gives the invalid URL {url:?}: {reason}")]
    BadUrl {
        template: String,
        url: String,
        reason: String,
    },
    #[error("--domain {domain:?} is not a hostname: expected something like sandbox.example.com")]
    BadDomain { domain: String },
    #[error("VMID {value:?} is not a container ID: expected a positive integer such as 202")]
    BadVmid { value: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Lit(String),
    Var(&'static str),
}

/// A parsed, validated URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    raw: String,
    pieces: Vec<Piece>,
}

impl UrlTemplate {
    pub fn parse(raw: &str) -> Result<UrlTemplate, TargetError> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            match c {
                '{' => {
                    let mut name = String::new();
                    let mut closed = false;
                    for c in chars.by_ref() {
                        if c == '}' {
                            closed = true;
                            break;
                        }
                        if c == '{' {
                            break;
                        }
                        name.push(c);
                    }
                    if !closed {
                        return Err(TargetError::Unbalanced {
                            template: raw.into(),
                        });
                    }
                    let known = PLACEHOLDERS.iter().find(|p| **p == name).ok_or_else(|| {
                        TargetError::UnknownPlaceholder {
                            template: raw.into(),
                            name: name.clone(),
                        }
                    })?;
                    if !lit.is_empty() {
                        pieces.push(Piece::Lit(std::mem::take(&mut lit)));
                    }
                    pieces.push(Piece::Var(known));
                }
                '}' => {
                    return Err(TargetError::Unbalanced {
                        template: raw.into(),
                    })
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Lit(lit));
        }
        if !(raw.starts_with("https://") || raw.starts_with("http://")) {
            return Err(TargetError::Scheme {
                template: raw.into(),
            });
        }
        let t = UrlTemplate {
            raw: raw.into(),
            pieces,
        };
        if !t.uses("vmid") && !t.uses("instance") {
            return Err(TargetError::NoVmid {
                template: raw.into(),
            });
        }
        // Render a sample to prove the result is a URL whose path we can append to.
        let sample = t.render("xterm", 202, 39383, "example.com");
        match url::Url::parse(&sample) {
            Ok(u) if u.host_str().is_some() && u.query().is_none() && u.fragment().is_none() => {}
            Ok(_) => {
                return Err(TargetError::BadUrl {
                    template: raw.into(),
                    url: sample,
                    reason: "it must be a base URL without query or fragment".into(),
                })
            }
            Err(e) => {
                return Err(TargetError::BadUrl {
                    template: raw.into(),
                    url: sample,
                    reason: e.to_string(),
                })
            }
        }
        Ok(t)
    }

    pub fn as_str(&self) -> &str {
        &self.raw
    }

    pub fn uses(&self, name: &str) -> bool {
        self.pieces
            .iter()
            .any(|p| matches!(p, Piece::Var(v) if *v == name))
    }

    /// The port is part of the hostname: Caddy's generic rule (later layout).
    pub fn layout(&self) -> Layout {
        if self.uses("port") {
            Layout::PortInHost
        } else {
            Layout::PerService
        }
    }

    pub fn render(&self, service: &str, vmid: u32, port: u16, domain: &str) -> String {
        self.render_for(service, vmid, &default_instance(vmid), port, domain)
    }

    /// [`UrlTemplate::render`] with the container's hostname for `{instance}`.
    pub fn render_for(
        &self,
        service: &str,
        vmid: u32,
        instance: &str,
        port: u16,
        domain: &str,
    ) -> String {
        let mut out = String::new();
        for p in &self.pieces {
            match p {
                Piece::Lit(s) => out.push_str(s),
                Piece::Var("service") => out.push_str(service),
                Piece::Var("vmid") => out.push_str(&vmid.to_string()),
                Piece::Var("port") => out.push_str(&port.to_string()),
                Piece::Var("instance") => out.push_str(instance),
                Piece::Var(_) => out.push_str(domain),
            }
        }
        out
    }

    /// The base URL of a service, without a trailing slash.
    pub fn base_url(&self, service: &str, vmid: u32, port: u16, domain: &str) -> String {
        self.base_url_for(service, vmid, &default_instance(vmid), port, domain)
    }

    /// [`UrlTemplate::base_url`] with the container's hostname for `{instance}`.
    pub fn base_url_for(
        &self,
        service: &str,
        vmid: u32,
        instance: &str,
        port: u16,
        domain: &str,
    ) -> String {
        self.render_for(service, vmid, instance, port, domain)
            .trim_end_matches('/')
            .to_string()
    }

    /// The scheme of the rendered URLs.
    pub fn scheme(&self) -> &str {
        if self.raw.starts_with("https://") {
            "https"
        } else {
            "http"
        }
    }
}

/// A hostname: labels of letters, digits and '-', dot-separated, at least two labels.
pub fn validate_domain(domain: &str) -> Result<String, TargetError> {
    let d = domain.trim_end_matches('.').to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
        });
    if ok {
        Ok(d)
    } else {
        Err(TargetError::BadDomain {
            domain: domain.into(),
        })
    }
}

/// A VMID: a positive integer (Proxmox uses 100..=999999999).
pub fn parse_vmid(s: &str) -> Result<u32, TargetError> {
    match s.parse::<u32>() {
        Ok(v) if v > 0 && s.bytes().all(|c| c.is_ascii_digit()) => Ok(v),
        _ => Err(TargetError::BadVmid { value: s.into() }),
    }
}

/// The targets the command line asks for, before the PVE API is asked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetRequest {
    pub vmids: Vec<u32>,
    /// Instance names given where a VMID is expected, resolved through the PVE API.
    pub names: Vec<String>,
    /// `--all`: the targets come from the PVE API.
    pub all: bool,
}

/// The targets of a run, resolved: what to diagnose, with what the PVE API told about them.
#[derive(Debug, Clone, Default)]
pub struct Targets {
    pub vmids: Vec<u32>,
    /// Per-target exec tokens from the PVE API (used where no token was given).
    pub exec_tokens: std::collections::BTreeMap<u32, crate::secret::Secret>,
    /// What each container's PVE config says it is (hostname, net0), for the identity check.
    pub expected_identity: std::collections::BTreeMap<u32, Vec<crate::identity::IdentityClaim>>,
    /// Containers `--all` found and does not diagnose (stopped, templates).
    pub skipped: Vec<SkippedTarget>,
    /// Warnings of the resolution (never containing secrets).
    pub warnings: Vec<String>,
    /// Container hostnames (the 2026 layout's `{instance}`) by VMID, as [`crate::instance`]
    /// resolved them; a VMID not in here is `cmux-{vmid}`.
    pub instances: std::collections::BTreeMap<u32, crate::instance::Instance>,
}

impl Targets {
    /// VMIDs as given, nothing to resolve.
    pub fn given(vmids: Vec<u32>) -> Targets {
        Targets {
            vmids,
            ..Targets::default()
        }
    }
}

/// A container `--all` found and did not diagnose, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SkippedTarget {
    pub vmid: u32,
    pub name: String,
    pub reason: String,
}

/// `cmux-202`, `pvelxc-1a2b3c4d`: an instance name (the container's hostname). The one rule for
/// a name given where a VMID is expected and for the containers `--all` picks from the PVE API.
pub fn is_instance_name(s: &str) -> bool {
    let rest = s
        .strip_prefix("cmux-")
        .or_else(|| s.strip_prefix("pvelxc-"));
    matches!(rest, Some(r) if !r.is_empty()
        && r.len() <= 56
        && r.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
}

/// An http(s) URL with a host and without query or credentials (`--exec-url`, `--caddy-admin`,
/// `PVE_API_URL`); `None` for anything else.
pub fn http_base_url(s: &str) -> Option<url::Url> {
    url::Url::parse(s).ok().filter(|u| {
        matches!(u.scheme(), "http" | "https")
            && u.host_str().is_some()
            && u.query().is_none()
            && u.username().is_empty()
            && u.password().is_none()
    })
}

/// The hostname pvediag uses for the origin check: under the domain, matching no service route,
/// so Caddy answers it itself (seed layout: an empty 200; later layout: its 404 catch-all).
pub fn origin_check_url(template: &UrlTemplate, domain: &str) -> String {
    format!("{}://pvediag-origin-check.{domain}/", template.scheme())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_template_renders_the_seed_urls() {
        let t = UrlTemplate::parse(DEFAULT_TEMPLATE).unwrap();
        assert_eq!(
            t.base_url("xterm", 202, 39383, "alphasolves.com"),
            "https://xterm-202.alphasolves.com"
        );
        assert_eq!(t.layout(), Layout::PerService);
    }

    #[test]
    fn later_layout_template() {
        let t = UrlTemplate::parse("https://port-{port}-cmux-{vmid}.{domain}").unwrap();
        assert_eq!(
            t.base_url("xterm", 202, 39383, "x.io"),
            "https://port-39383-cmux-202.x.io"
        );
        assert_eq!(t.layout(), Layout::PortInHost);
    }

    #[test]
    fn the_2026_template_uses_the_instance_hostname() {
        let t = UrlTemplate::parse(TEMPLATE_2026).unwrap();
        assert_eq!(t.layout(), Layout::PortInHost);
        assert_eq!(
            t.base_url_for("xterm", 202, "pvelxc-1a2b3c4d", 39383, "x.io"),
            "https://port-39383-pvelxc-1a2b3c4d.x.io"
        );
        // Without a known hostname: the older containers' name.
        assert_eq!(
            t.base_url("xterm", 202, 39383, "x.io"),
            "https://port-39383-cmux-202.x.io"
        );
    }

    #[test]
    fn bad_templates() {
        for (raw, want) in [
            ("https://{svc}-{vmid}.{domain}", "unknown placeholder {svc}"),
            ("https://{service-{vmid}.{domain}", "unbalanced"),
            ("https://service}-{vmid}.{domain}", "unbalanced"),
            (
                "ftp://{service}-{vmid}.{domain}",
                "must start with https://",
            ),
            ("{service}-{vmid}.{domain}", "must start with https://"),
            (
                "https://{service}.{domain}",
                "must contain {vmid} or {instance}",
            ),
            ("https://{service}-{vmid}.{domain}/?a=1", "without query"),
            ("https:// {vmid}", "invalid URL"),
        ] {
            let e = UrlTemplate::parse(raw).unwrap_err().to_string();
            assert!(e.contains(want), "{raw}: {e}");
        }
    }

    #[test]
    fn domains_and_vmids() {
        assert_eq!(validate_domain("Example.COM.").unwrap(), "example.com");
        for bad in [
            "",
            "localhost",
            "a..b",
            "-a.b",
            "a b.c",
            "a/b.c",
            "ex_ample.com",
            "é.com",
        ] {
            assert!(validate_domain(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_vmid("202").unwrap(), 202);
        for bad in ["0", "-1", "+5", "abc", "", "99999999999", "2 02", "1e3"] {
            assert!(parse_vmid(bad).is_err(), "{bad}");
        }
    }
}
