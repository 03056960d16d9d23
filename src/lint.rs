//! Static check before deploy: do the Caddy routes and the setup script's port constants agree
//! with the service catalog?
//!
//! Pure: the caller reads the files and parses them ([`crate::caddy::caddyfile::parse`],
//! [`crate::caddy::admin::parse`], [`parse_setup_script`]); [`lint`] compares.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Serialize;

use crate::caddy::{Route, RouteTable, Upstream};
use crate::catalog::{Catalog, Service};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    /// A route for a known service dials another port than the catalog's.
    RoutePortMismatch,
    /// A routed catalog service has no route (per-service layouts only).
    MissingRoute,
    /// A `NAME_PORT=` constant of a setup script disagrees with the catalog.
    ScriptPortMismatch,
    /// Two constants of one script hold the same port.
    DuplicatePort,
    /// A route dials a port no catalog service uses.
    UnknownPort,
    /// Two routes for one service or one hostname pattern: Caddy only ever uses the first.
    DuplicateRoute,
    /// Something the reader did not understand (a warning of the route table).
    Unparsed,
    /// A Caddy source with no cmux route at all: probably not the file Caddy loads (fails closed).
    NoCmuxRoute,
    /// A setup script with no port constant of a catalog service (fails closed).
    NoPortConstants,
    /// The 2026 generic rule's Host regexp does not match a catalog port's public name.
    GenericRegex,
    /// The 2026 generic rule dials something else than `{instance}.lan:{port}`.
    GenericUpstream,
    /// The generic rule's `reverse_proxy` lacks `header_up Host {upstream_hostport}`.
    GenericHeaderUp,
    /// Caddy sets CORS headers but does not drop the upstream's: two `access-control-allow-origin`.
    GenericCors,
    /// No handler answers `OPTIONS` (the 2026 layout answers every preflight in Caddy: 204).
    GenericOptions,
    /// No catch-all `handle` answering the 404 text for unknown hostnames.
    GenericCatchAll,
    /// Observed, not read: Caddy did not answer an `OPTIONS` preflight itself (2026 layout).
    PreflightUnanswered,
    /// A route dials a literal sandbox host (`cmux-203.lan`) for requests of other sandboxes.
    RouteNamesOtherSandbox,
}

impl FindingKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FindingKind::RoutePortMismatch => "route_port_mismatch",
            FindingKind::MissingRoute => "missing_route",
            FindingKind::ScriptPortMismatch => "script_port_mismatch",
            FindingKind::DuplicatePort => "duplicate_port",
            FindingKind::UnknownPort => "unknown_port",
            FindingKind::DuplicateRoute => "duplicate_route",
            FindingKind::Unparsed => "unparsed",
            FindingKind::NoCmuxRoute => "no_cmux_route",
            FindingKind::NoPortConstants => "no_port_constants",
            FindingKind::GenericRegex => "generic_regex",
            FindingKind::GenericUpstream => "generic_upstream",
            FindingKind::GenericHeaderUp => "generic_header_up",
            FindingKind::GenericCors => "generic_cors",
            FindingKind::GenericOptions => "generic_options",
            FindingKind::GenericCatchAll => "generic_catch_all",
            FindingKind::PreflightUnanswered => "preflight_unanswered",
            FindingKind::RouteNamesOtherSandbox => "route_names_other_sandbox",
        }
    }
}

impl std::fmt::Display for FindingKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub file: String,
    /// 1-based; 0 when the source has no lines (the admin API: the JSON path is in the message).
    pub line: usize,
    pub message: String,
    pub kind: FindingKind,
}

// ---------------------------------------------------------------------------------------------
// Setup scripts

/// One `NAME_PORT=NUMBER` assignment: (NAME, port, 1-based line).
pub type ScriptConstant = (String, u16, usize);
/// A script's file name and its constants, as [`lint`] takes them.
pub type ScriptFile = (String, Vec<ScriptConstant>);

/// Shell assignments `NAME_PORT=NUMBER` of a setup script: `(NAME, port, line)`.
///
/// Understands `export`/`readonly`/`local`/`declare` prefixes, quoted values (`"39383"`,
/// `'39383'`), the default forms `${X_PORT:-39383}` / `${X_PORT:=39383}` (the default is taken),
/// several assignments on one line; skips comments and here-document bodies. Values that are not
/// a TCP port (0, > 65535, anything computed) are skipped.
pub fn parse_setup_script(file: &str, text: &str) -> Vec<(String, u16, usize)> {
    let _ = file;
    let assign = Regex::new(
        r#"([A-Za-z_][A-Za-z0-9_]*)_PORT=(["']?)(?:([0-9]+)|\$\{[A-Za-z_][A-Za-z0-9_]*:?[-=]([0-9]+)\})(["']?)"#,
    )
    .expect("static regex");
    let heredoc =
        Regex::new(r#"<<-?[ \t]*['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?"#).expect("static regex");
    let mut out = Vec::new();
    let mut heredoc_end: Option<String> = None;
    for (i, raw_line) in text.lines().enumerate() {
        let line_no = i + 1;
        if let Some(marker) = &heredoc_end {
            if raw_line.trim() == marker {
                heredoc_end = None;
            }
            continue;
        }
        let code = strip_comment(raw_line);
        for c in assign.captures_iter(code) {
            let whole = c.get(0).expect("group 0");
            let before = code[..whole.start()].chars().next_back();
            let after = code[whole.end()..].chars().next();
            let sep_before = before.is_none_or(|ch| ch.is_whitespace() || ";&|(".contains(ch));
            let sep_after = after.is_none_or(|ch| ch.is_whitespace() || ";&|)".contains(ch));
            let open = c.get(2).map_or("", |m| m.as_str());
            let close = c.get(5).map_or("", |m| m.as_str());
            if !sep_before || !sep_after || open != close {
                continue;
            }
            let digits = c.get(3).or_else(|| c.get(4)).map_or("", |m| m.as_str());
            if let Ok(port) = digits.parse::<u16>() {
                if port > 0 {
                    out.push((c[1].to_string(), port, line_no));
                }
            }
        }
        let here_doc_marker = heredoc
            .captures_iter(code)
            .find(|c| {
                let start = c.get(0).expect("group 0").start();
                !code[..start].ends_with('<')
                    && !code[c.get(0).expect("group 0").end()..].starts_with('<')
            })
            .map(|c| c[1].to_string());
        if here_doc_marker.is_some() {
            heredoc_end = here_doc_marker;
        }
    }
    out
}

/// The code part of a shell line: up to a `#` that starts a word outside quotes.
fn strip_comment(line: &str) -> &str {
    let mut single = false;
    let mut double = false;
    let mut prev: Option<char> = None;
    for (i, ch) in line.char_indices() {
        match ch {
            '\'' if !double => single = !single,
            '"' if !single && prev != Some('\\') => double = !double,
            '#' if !single
                && !double
                && prev.is_none_or(|p| p.is_whitespace() || ";&|(".contains(p)) =>
            {
                return &line[..i];
            }
            _ => {}
        }
        prev = Some(ch);
    }
    line
}

/// The catalog service a script constant names: `XTERM` -> xterm (lower-cased), plus a few
/// aliases (`PTY` -> xterm, `EXECD` -> exec, `NOVNC` -> vnc, `OPENVSCODE` -> vscode).
pub fn service_for_constant<'c>(catalog: &'c Catalog, name: &str) -> Option<&'c Service> {
    let lower = name.to_ascii_lowercase();
    let mapped = match lower.as_str() {
        "pty" | "cmux_pty" => "xterm",
        "execd" | "cmux_execd" => "exec",
        "novnc" => "vnc",
        "openvscode" => "vscode",
        other => other,
    };
    catalog.get(mapped)
}

// ---------------------------------------------------------------------------------------------
// The check

fn who(s: &Service) -> String {
    if s.unit.is_empty() {
        s.name.clone()
    } else {
        s.unit.clone()
    }
}

fn finding(route: &Route, kind: FindingKind, message: String) -> Finding {
    let message = match &route.source.json_path {
        Some(p) => format!("{p}: {message}"),
        None => message,
    };
    Finding {
        file: route.source.file.clone(),
        line: route.source.line,
        message,
        kind,
    }
}

fn describe_route(r: &Route) -> String {
    match (&r.service, r.host_pattern.is_empty()) {
        (Some(s), _) => format!("route for {s}"),
        (None, false) => format!("route for Host {}", r.host_pattern),
        (None, true) => "route".to_string(),
    }
}

fn lint_table(catalog: &Catalog, table: &RouteTable, out: &mut Vec<Finding>) {
    for w in &table.warnings {
        let message = match &w.source.json_path {
            Some(p) if !p.is_empty() => format!("{p}: {}", w.message),
            _ => w.message.clone(),
        };
        out.push(Finding {
            file: w.source.file.clone(),
            line: w.source.line,
            message,
            kind: FindingKind::Unparsed,
        });
    }
    // Ports.
    for r in &table.routes {
        let known = r.service.as_deref().and_then(|s| catalog.get(s));
        let Upstream::Fixed { port, .. } = &r.upstream else {
            continue;
        };
        let dial = r.upstream.display();
        match known {
            Some(svc) if svc.port != *port => {
                let mut msg = format!(
                    "{} dials {dial}; the catalog says {} listens on {}",
                    describe_route(r),
                    who(svc),
                    svc.port
                );
                if let Some(other) = catalog.by_port(*port) {
                    msg.push_str(&format!(" ({port} is {}'s port)", other.name));
                }
                out.push(finding(r, FindingKind::RoutePortMismatch, msg));
            }
            Some(_) => {}
            None => {
                if catalog.by_port(*port).is_none() {
                    out.push(finding(
                        r,
                        FindingKind::UnknownPort,
                        format!(
                            "{} dials {dial}; no catalog service uses port {port}",
                            describe_route(r)
                        ),
                    ));
                }
            }
        }
    }
    lint_sandbox_hosts(table, out);
    // Duplicates: Caddy only ever uses the first of two routes for the same thing.
    let mut seen_service: BTreeMap<&str, &Route> = BTreeMap::new();
    let mut seen_pattern: BTreeMap<(String, Vec<String>, Vec<String>), &Route> = BTreeMap::new();
    for r in &table.routes {
        let first = match r.service.as_deref() {
            Some(s) if seen_service.contains_key(s) => seen_service.get(s).copied(),
            Some(s) => {
                seen_service.insert(s, r);
                None
            }
            None => None,
        };
        let key = (
            r.host_pattern.clone(),
            r.hosts.clone(),
            r.conditions.clone(),
        );
        let first = first.or_else(|| seen_pattern.get(&key).copied());
        seen_pattern.entry(key).or_insert(r);
        if let Some(f) = first {
            out.push(finding(
                r,
                FindingKind::DuplicateRoute,
                format!(
                    "second {} (dials {}); the first, at {}, dials {} and is the one Caddy uses",
                    describe_route(r),
                    r.upstream.display(),
                    f.source,
                    f.upstream.display()
                ),
            ));
        }
    }
    // Missing routes: only for per-service layouts (a generic rule covers every service).
    let per_service: Vec<&Route> = table
        .routes
        .iter()
        .filter(|r| {
            matches!(r.upstream, Upstream::Fixed { .. })
                && r.service
                    .as_deref()
                    .is_some_and(|s| catalog.get(s).is_some())
        })
        .collect();
    if let Some(first) = per_service.first() {
        if !table.has_generic_route() {
            for svc in catalog.services.iter().filter(|s| s.routed) {
                if table.routes_for_service(&svc.name).is_empty() {
                    out.push(finding(
                        first,
                        FindingKind::MissingRoute,
                        format!(
                            "no route for {} (port {}), a routed service; the other services have one route each (first here)",
                            svc.name, svc.port
                        ),
                    ));
                }
            }
        }
    }
}

/// Sample instance names of both kinds cmux uses, to try the generic rule against.
const SAMPLE_INSTANCES: [&str; 2] = ["pvelxc-1a2b3c4d", "cmux-202"];
const SAMPLE_DOMAIN: &str = "sandbox.example.com";

/// The 2026 generic rule (`port-{port}-{instance}.DOMAIN` -> `{instance}.lan:{port}`): its regexp
/// must match every routed catalog port for both kinds of instance names, and it must dial
/// `{instance}.lan:{port}`. With the Caddyfile's text, also its directives: `header_up Host`,
/// the upstream's CORS headers dropped where Caddy sets its own, an `OPTIONS` handler, a catch-all.
fn lint_generic(catalog: &Catalog, table: &RouteTable, out: &mut Vec<Finding>) {
    let Some(generic) = table
        .routes
        .iter()
        .find(|r| matches!(r.upstream, Upstream::FromHost { .. }) && r.conditions.is_empty())
    else {
        return;
    };
    let mut unmatched = Vec::new();
    for s in catalog.services.iter().filter(|s| s.routed) {
        for inst in SAMPLE_INSTANCES {
            let host = format!("port-{}-{inst}.{SAMPLE_DOMAIN}", s.port);
            if generic.matches_host(&host) == Some(false) {
                unmatched.push(format!("{} ({host})", s.name));
                break;
            }
        }
    }
    if !unmatched.is_empty() {
        out.push(finding(
            generic,
            FindingKind::GenericRegex,
            format!(
                "the generic rule's Host regexp {} does not match {}: those hostnames get the catch-all 404; write ^port-(\\d+)-([a-z0-9-]+)\\.",
                generic.host_pattern,
                unmatched.join(", ")
            ),
        ));
    }
    // What it dials for a name it matches.
    let sample_port = catalog.exec().map_or(39375, |e| e.port);
    for inst in SAMPLE_INSTANCES {
        let host = format!("port-{sample_port}-{inst}.{SAMPLE_DOMAIN}");
        if generic.matches_host(&host) != Some(true) {
            continue;
        }
        if let Some(r) = table.resolve(&host) {
            if r.route.source != generic.source {
                continue;
            }
            let want = format!("{inst}.lan");
            if r.upstream_host != want || r.port != Some(sample_port) {
                out.push(finding(
                    generic,
                    FindingKind::GenericUpstream,
                    format!(
                        "the generic rule dials {} for {host}; the container is {want}:{sample_port}: write reverse_proxy {{re.NAME.2}}.lan:{{re.NAME.1}}",
                        r.dial()
                    ),
                ));
            }
        }
        break;
    }
    let Some((file, text)) = &table.caddyfile_text else {
        return;
    };
    let lines: Vec<&str> = text.lines().collect();
    // The generic route's reverse_proxy block: from its line to the matching closing brace.
    let start = generic.source.line.saturating_sub(1).min(lines.len());
    let mut depth = 0i32;
    let mut block = Vec::new();
    for (i, l) in lines.iter().enumerate().skip(start) {
        let code = l.split('#').next().unwrap_or("");
        block.push((i + 1, code.trim()));
        depth += code.matches('{').count() as i32 - code.matches('}').count() as i32;
        // Placeholders open and close on one line; the block ends when depth returns to 0.
        if depth <= 0 && i > start {
            break;
        }
        if depth <= 0 && !code.contains('{') {
            break;
        }
    }
    let at = |kind: FindingKind, message: String| Finding {
        file: file.clone(),
        line: generic.source.line,
        message,
        kind,
    };
    if !block.iter().any(|(_, l)| {
        l.starts_with("header_up") && l.contains("Host") && l.contains("{upstream_hostport}")
    }) {
        out.push(at(
            FindingKind::GenericHeaderUp,
            "the generic rule's reverse_proxy has no `header_up Host {upstream_hostport}`: the service sees the public hostname, which dev servers (Vite's allowedHosts) and IDEs refuse".into(),
        ));
    }
    let sets_cors = lines.iter().any(|l| {
        let t = l.trim_start();
        t.starts_with("header ")
            && t.to_ascii_lowercase()
                .contains("access-control-allow-origin")
    });
    let drops_cors = block.iter().any(|(_, l)| {
        l.starts_with("header_down")
            && l.to_ascii_lowercase()
                .contains("-access-control-allow-origin")
    });
    if sets_cors && !drops_cors {
        out.push(at(
            FindingKind::GenericCors,
            "Caddy sets Access-Control-Allow-Origin but the generic rule's reverse_proxy does not drop the upstream's (`header_down -Access-Control-Allow-Origin`): a service that sends its own (cmux-pty) answers with two values, which browsers reject".into(),
        ));
    }
    let options = lines.iter().any(|l| {
        let t = l.split('#').next().unwrap_or("").trim();
        t.starts_with('@') && t.contains(" method ") && t.to_ascii_uppercase().contains("OPTIONS")
    });
    if !options {
        out.push(at(
            FindingKind::GenericOptions,
            "no `@options method OPTIONS` handler answering 204: CORS preflights go to the services, most of which do not answer them".into(),
        ));
    }
    let catch_all = lines.windows(2).any(|w| {
        w[0].split('#').next().unwrap_or("").trim() == "handle {"
            && w[1].trim_start().starts_with("respond")
    });
    if !catch_all {
        out.push(at(
            FindingKind::GenericCatchAll,
            "no catch-all `handle { respond \"cmux sandbox not found...\" 404 }`: hostnames no rule matches get Caddy's empty 200, which looks like a healthy answer".into(),
        ));
    }
}

/// Routes whose upstream is one literal sandbox (`cmux-203.lan`) while their Host matcher takes
/// requests of other sandboxes (a VMID pattern, or another literal VMID): those users reach
/// sandbox 203 (see `crate::identity`).
fn lint_sandbox_hosts(table: &RouteTable, out: &mut Vec<Finding>) {
    for r in &table.routes {
        let host = match &r.upstream {
            Upstream::Fixed { host_template, .. } | Upstream::FromHost { host_template, .. } => {
                host_template
            }
            Upstream::Other { .. } => continue,
        };
        if host.contains('{') {
            continue;
        }
        let Some(sandbox) = crate::identity::sandbox_of_upstream(host) else {
            continue;
        };
        let id = sandbox
            .strip_prefix("cmux-")
            .unwrap_or(sandbox.as_str())
            .to_string();
        let p = &r.host_pattern;
        let variable = p.is_empty()
            || ["\\d", "[", ".+", ".*", "\\w", "\\S"]
                .iter()
                .any(|v| p.contains(v));
        let names_own = p.contains(id.as_str()) || r.hosts.iter().any(|h| h.contains(id.as_str()));
        if variable || !names_own {
            let which = if p.is_empty() {
                "every host it matches".to_string()
            } else {
                format!("every Host matching {p}")
            };
            out.push(finding(
                r,
                FindingKind::RouteNamesOtherSandbox,
                format!(
                    "{} dials the literal {host}: {which} goes to sandbox {sandbox}, whatever its own VMID or instance; dial cmux-{{re.vmid.1}}.lan (or {{re.service.2}}.lan)",
                    describe_route(r)
                ),
            ));
        }
    }
}

fn lint_script(
    catalog: &Catalog,
    file: &str,
    consts: &[(String, u16, usize)],
    out: &mut Vec<Finding>,
) {
    let mut by_port: BTreeMap<u16, (&str, usize)> = BTreeMap::new();
    for (name, port, line) in consts {
        if let Some(svc) = service_for_constant(catalog, name) {
            if svc.port != *port {
                let mut message = format!(
                    "{name}_PORT={port}, but the catalog says {} ({}) listens on {}",
                    svc.name,
                    who(svc),
                    svc.port
                );
                if let Some(other) = catalog.by_port(*port) {
                    message.push_str(&format!("; {port} is {}'s port", other.name));
                }
                out.push(Finding {
                    file: file.to_string(),
                    line: *line,
                    message,
                    kind: FindingKind::ScriptPortMismatch,
                });
            }
        }
        match by_port.get(port) {
            Some((first, first_line)) if *first != name.as_str() => out.push(Finding {
                file: file.to_string(),
                line: *line,
                message: format!(
                    "{name}_PORT={port} is the same port as {first}_PORT (line {first_line})"
                ),
                kind: FindingKind::DuplicatePort,
            }),
            Some(_) => {}
            None => {
                by_port.insert(*port, (name.as_str(), *line));
            }
        }
    }
}

/// The routes of `table` that serve cmux: a route for a catalog service, or a generic rule that takes
/// the port from the hostname.
pub fn cmux_routes(catalog: &Catalog, table: &RouteTable) -> usize {
    table
        .routes
        .iter()
        .filter(|r| {
            matches!(r.upstream, Upstream::FromHost { .. })
                || r.service
                    .as_deref()
                    .is_some_and(|s| catalog.get(s).is_some())
        })
        .count()
}

/// The port constants of a setup script that name a catalog service.
pub fn catalog_constants(catalog: &Catalog, consts: &[(String, u16, usize)]) -> usize {
    consts
        .iter()
        .filter(|(name, _, _)| service_for_constant(catalog, name).is_some())
        .count()
}

/// Fails closed: a Caddy source (`file`) without a single cmux route is a finding, with a hint at
/// the file that was probably meant.
pub fn no_cmux_route(catalog: &Catalog, file: &str, table: &RouteTable) -> Option<Finding> {
    (cmux_routes(catalog, table) == 0).then(|| Finding {
        file: file.to_string(),
        line: 0,
        message: format!(
            "no cmux route found ({} route(s) read, none to cmux-{{vmid}}.lan for a catalog service, \
             no port-in-hostname rule): is this the file Caddy loads? On a PVE host the cmux routes \
             are in /etc/caddy/Caddyfile.cmux",
            table.routes.len()
        ),
        kind: FindingKind::NoCmuxRoute,
    })
}

/// Fails closed: a setup script without a single catalog port constant (`NAME_PORT=`) is a finding.
pub fn no_port_constants(
    catalog: &Catalog,
    file: &str,
    consts: &[(String, u16, usize)],
) -> Option<Finding> {
    (catalog_constants(catalog, consts) == 0).then(|| Finding {
        file: file.to_string(),
        line: 0,
        message: "no port constant of a catalog service found (EXEC_PORT=, XTERM_PORT=, ...): \
                  is this the cmux setup script?"
            .to_string(),
        kind: FindingKind::NoPortConstants,
    })
}

/// What a clean lint run checked: `6 routes, 2 setup constants: all match the catalog`.
pub fn checked_line(routes: usize, constants: usize) -> String {
    let mut parts = Vec::new();
    if routes > 0 {
        parts.push(format!(
            "{routes} route{}",
            if routes == 1 { "" } else { "s" }
        ));
    }
    if constants > 0 {
        parts.push(format!(
            "{constants} setup constant{}",
            if constants == 1 { "" } else { "s" }
        ));
    }
    format!("{}: all match the catalog", parts.join(", "))
}

/// Compares route tables and setup-script constants with the catalog. Sorted by file and line.
pub fn lint(catalog: &Catalog, caddyfiles: &[RouteTable], scripts: &[ScriptFile]) -> Vec<Finding> {
    let mut out = Vec::new();
    for t in caddyfiles {
        lint_table(catalog, t, &mut out);
        lint_generic(catalog, t, &mut out);
    }
    for (file, consts) in scripts {
        lint_script(catalog, file, consts, &mut out);
    }
    out.sort_by(|a, b| {
        (&a.file, a.line, a.kind, &a.message).cmp(&(&b.file, b.line, b.kind, &b.message))
    });
    out
}

/// `file:line: message`, one finding per line.
pub fn render_text(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(|f| format!("{}:{}: {}\n", f.file, f.line, f.message))
        .collect()
}

/// `{"findings":[{"file","line","kind","message"}],"count":N}`.
pub fn render_json(findings: &[Finding]) -> String {
    let list: Vec<serde_json::Value> = findings
        .iter()
        .map(|f| {
            serde_json::json!({
                "file": f.file,
                "line": f.line,
                "kind": f.kind.as_str(),
                "message": f.message,
            })
        })
        .collect();
    serde_json::json!({ "findings": list, "count": findings.len() }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::caddy::{admin, caddyfile};
    use proptest::prelude::*;

    const SEED: &str = crate::caddy::caddyfile::tests::SEED;
    const LATER: &str = crate::caddy::caddyfile::tests::LATER;

    /// An excerpt in the style of `scripts/pve/pve-tunnel-setup.sh` before the fix (line 49 in
    /// the real file; here line 8).
    const SCRIPT: &str = r#"#!/usr/bin/env bash
set -euo pipefail
# Service ports (must match the container services)
# XTERM_PORT=1 in a comment is ignored
EXEC_PORT=39375
WORKER_PORT=39377
VSCODE_PORT="39378"
XTERM_PORT=39376
export VNC_PORT=39380  # noVNC
readonly PREVIEW_PORT='5173'
CADDY_PORT=${CADDY_PORT:-8080}
configure_caddy() {
    local CDP_PORT=39381
    cat > /etc/caddy/Caddyfile.cmux <<EOF
FAKE_PORT=1
    reverse_proxy cmux-{re.vmid.1}.lan:${XTERM_PORT}
EOF
    echo "$XTERM_PORT=9"; X=1 PROXY_PORT=39379 true
}
"#;

    fn cat() -> Catalog {
        Catalog::embedded()
    }

    fn kinds(f: &[Finding]) -> Vec<(FindingKind, usize)> {
        f.iter().map(|f| (f.kind, f.line)).collect()
    }

    #[test]
    fn script_constants() {
        let got = parse_setup_script("s.sh", SCRIPT);
        let want: Vec<(String, u16, usize)> = [
            ("EXEC", 39375, 5),
            ("WORKER", 39377, 6),
            ("VSCODE", 39378, 7),
            ("XTERM", 39376, 8),
            ("VNC", 39380, 9),
            ("PREVIEW", 5173, 10),
            ("CADDY", 8080, 11),
            ("CDP", 39381, 13),
            ("PROXY", 39379, 18),
        ]
        .iter()
        .map(|(n, p, l)| (n.to_string(), *p, *l))
        .collect();
        assert_eq!(got, want);
        let odd = "A_PORT=\"1' B_PORT=0 C_PORT=70000 D_PORT=${X:=42} E_PORT=12abc\n\
                   declare -r F_PORT=\"${F_PORT-43}\";G_PORT=44&&H_PORT=$((1+1))\ncat <<<I_PORT=5\n";
        assert_eq!(
            parse_setup_script("s", odd),
            vec![
                ("D".to_string(), 42, 1),
                ("F".to_string(), 43, 2),
                ("G".to_string(), 44, 2),
            ]
        );
    }

    #[test]
    fn seed_incident_is_found_and_the_fix_is_clean() {
        let c = cat();
        let bad = caddyfile::parse("Caddyfile.cmux", &SEED.replace("39383", "39376"));
        let f = lint(&c, &[bad], &[]);
        assert_eq!(kinds(&f), vec![(FindingKind::RoutePortMismatch, 17)]);
        assert_eq!(
            render_text(&f),
            "Caddyfile.cmux:17: route for xterm dials cmux-{re.vmid.1}.lan:39376; the catalog says cmux-pty listens on 39383\n"
        );
        let good = caddyfile::parse("Caddyfile.cmux", SEED);
        assert_eq!(lint(&c, &[good], &[]), vec![]);
        let later = caddyfile::parse("Caddyfile.cmux", LATER);
        assert_eq!(
            kinds(&lint(&c, &[later], &[])),
            vec![(FindingKind::Unparsed, 1)]
        );
    }

    #[test]
    fn script_mismatch_and_duplicate_port() {
        let c = cat();
        let mut consts = parse_setup_script("pve-tunnel-setup.sh", SCRIPT);
        consts.push(("PTY".into(), 39377, 30));
        consts.push(("XTERM".into(), 39376, 31));
        let f = lint(&c, &[], &[("pve-tunnel-setup.sh".into(), consts)]);
        assert_eq!(
            kinds(&f),
            vec![
                (FindingKind::ScriptPortMismatch, 8),
                (FindingKind::ScriptPortMismatch, 30),
                (FindingKind::DuplicatePort, 30),
                (FindingKind::ScriptPortMismatch, 31),
            ]
        );
        assert_eq!(
            f[0].message,
            "XTERM_PORT=39376, but the catalog says xterm (cmux-pty) listens on 39383"
        );
        assert!(
            f[2].message.contains("same port as WORKER_PORT (line 6)"),
            "{}",
            f[2].message
        );
        // The fixed script is clean.
        let fixed = SCRIPT.replace("XTERM_PORT=39376", "XTERM_PORT=39383");
        let consts = parse_setup_script("s", &fixed);
        assert_eq!(lint(&c, &[], &[("s".into(), consts)]), vec![]);
    }

    #[test]
    fn missing_unknown_and_duplicate_routes() {
        let c = cat();
        let text = r#":8080 {
	@xterm header_regexp vmid Host ^xterm-(\d+)\.
	handle @xterm {
		reverse_proxy cmux-{re.vmid.1}.lan:39383
	}
	@xterm2 header_regexp vmid Host ^xterm-(\d+)\.
	handle @xterm2 {
		reverse_proxy cmux-{re.vmid.1}.lan:39376
	}
	@odd header_regexp vmid Host ^odd-(\d+)\.
	handle @odd {
		reverse_proxy cmux-{re.vmid.1}.lan:4444
	}
	handle @nope {
		reverse_proxy cmux-1.lan:39383
	}
}
"#;
        let f = lint(&c, &[caddyfile::parse("c", text)], &[]);
        let k = kinds(&f);
        // Five routed services have no route (vscode, worker, exec, vnc, preview).
        let missing = k
            .iter()
            .filter(|(k, l)| *k == FindingKind::MissingRoute && *l == 4)
            .count();
        assert_eq!(missing, 5, "{k:?}");
        assert!(k.contains(&(FindingKind::RoutePortMismatch, 8)), "{k:?}");
        assert!(k.contains(&(FindingKind::DuplicateRoute, 8)), "{k:?}");
        assert!(k.contains(&(FindingKind::UnknownPort, 12)), "{k:?}");
        assert!(k.contains(&(FindingKind::Unparsed, 14)), "{k:?}");
        let dup = f
            .iter()
            .find(|f| f.kind == FindingKind::DuplicateRoute)
            .unwrap();
        assert!(dup.message.contains("the first, at c:4"), "{}", dup.message);
        // Sorted by file and line.
        let lines: Vec<usize> = f.iter().map(|f| f.line).collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(lines, sorted);
        // A generic rule covers every service: nothing missing.
        let generic = format!(
            "{text}\n:9090 {{\n@s header_regexp s Host ^port-(\\d+)-(.+)\\.\nreverse_proxy @s {{re.s.2}}:{{re.s.1}}\n}}\n"
        );
        let t = caddyfile::parse("c", &generic);
        assert!(t.has_generic_route(), "{t:#?}");
        let f = lint(&c, &[t], &[]);
        assert!(
            f.iter().all(|f| f.kind != FindingKind::MissingRoute),
            "{f:#?}"
        );
    }

    #[test]
    fn admin_routes_carry_their_json_path() {
        let seed = crate::caddy::admin::tests::SEED_JSON;
        assert_eq!(lint(&cat(), &[admin::parse(seed).unwrap()], &[]), vec![]);
        let t = admin::parse(&seed.replace("39383", "39376")).unwrap();
        let f = lint(&cat(), &[t], &[]);
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].kind, FindingKind::RoutePortMismatch);
        assert_eq!(f[0].file, "caddy admin API");
        assert_eq!(f[0].line, 0);
        assert_eq!(
            f[0].message,
            "apps.http.servers.srv0.routes[2].handle[0].routes[0].handle[0]: route for xterm dials \
             cmux-{http.regexp.vmid.1}.lan:39376; the catalog says cmux-pty listens on 39383"
        );
    }

    #[test]
    fn json_rendering() {
        let f = vec![Finding {
            file: "a \"b\"".into(),
            line: 3,
            message: "m".into(),
            kind: FindingKind::DuplicatePort,
        }];
        let v: serde_json::Value = serde_json::from_str(&render_json(&f)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"findings":[{"file":"a \"b\"","line":3,"kind":"duplicate_port","message":"m"}],"count":1})
        );
        let v: serde_json::Value = serde_json::from_str(&render_json(&[])).unwrap();
        assert_eq!(v, serde_json::json!({"findings":[],"count":0}));
        assert_eq!(render_text(&[]), "");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2500))]
        #[test]
        fn script_parser_never_panics(s in any::<String>()) {
            let _ = parse_setup_script("s", &s);
        }

        #[test]
        fn script_parser_never_panics_on_shell_noise(s in "[A-Z_=0-9\"'${}:#<< \\n-]{0,200}") {
            for (_, port, line) in parse_setup_script("s", &s) {
                prop_assert!(port > 0);
                prop_assert!(line >= 1 && line <= s.lines().count());
            }
        }

        #[test]
        fn lint_never_panics(s in "[{}\"\\\\`#@ \\na-z0-9:.()^$*/-]{0,200}") {
            let t = caddyfile::parse("f", &s);
            let f = lint(&Catalog::embedded(), &[t], &[("s".into(), parse_setup_script("s", &s))]);
            let _ = render_text(&f);
            let _ = render_json(&f);
        }
    }
}

#[cfg(test)]
mod generic_tests {
    use super::*;
    use crate::lab::caddy::caddyfile_2026;
    use crate::lab::GenericRule;

    fn kinds_of(rule: &GenericRule) -> Vec<FindingKind> {
        let text = caddyfile_2026(rule);
        let t = crate::caddy::caddyfile::parse("Caddyfile.cmux", &text);
        lint(&Catalog::embedded_2026(), &[t], &[])
            .into_iter()
            .map(|f| f.kind)
            .collect()
    }

    #[test]
    fn the_2026_caddyfile_is_clean_and_each_fault_is_named() {
        assert_eq!(kinds_of(&GenericRule::default()), vec![]);
        let regex = GenericRule {
            regex: r"^port-(3\d{4})-([a-z0-9-]+)\.".into(),
            ..Default::default()
        };
        assert_eq!(kinds_of(&regex), vec![FindingKind::GenericRegex]);
        let suffix = GenericRule {
            upstream_suffix: ".local".into(),
            ..Default::default()
        };
        assert_eq!(kinds_of(&suffix), vec![FindingKind::GenericUpstream]);
        let cors = GenericRule {
            strip_upstream_cors: false,
            ..Default::default()
        };
        assert_eq!(kinds_of(&cors), vec![FindingKind::GenericCors]);
        let options = GenericRule {
            answer_options: false,
            ..Default::default()
        };
        assert_eq!(kinds_of(&options), vec![FindingKind::GenericOptions]);
    }

    #[test]
    fn header_up_and_catch_all() {
        let text = caddyfile_2026(&GenericRule::default())
            .replace("            header_up Host {upstream_hostport}\n", "")
            .replace(
                "    handle {\n        respond",
                "    handle /x {\n        respond",
            );
        let t = crate::caddy::caddyfile::parse("Caddyfile.cmux", &text);
        let f = lint(&Catalog::embedded_2026(), &[t], &[]);
        let k: Vec<FindingKind> = f.iter().map(|f| f.kind).collect();
        assert!(k.contains(&FindingKind::GenericHeaderUp), "{f:#?}");
        assert!(k.contains(&FindingKind::GenericCatchAll), "{f:#?}");
        // Every finding names the generic rule's line.
        assert!(f.iter().all(|f| f.line > 0), "{f:#?}");
    }

    #[test]
    fn a_2026_setup_script_checks_against_the_2026_catalog() {
        let script = "EXEC_PORT=39375\nWORKER_PORT=39376\nXTERM_PORT=39383\n";
        let consts = parse_setup_script("s", script);
        assert!(lint(
            &Catalog::embedded_2026(),
            &[],
            &[("s".into(), consts.clone())]
        )
        .is_empty());
        // The seed catalog would call the 2026 worker port wrong.
        let f = lint(&Catalog::embedded(), &[], &[("s".into(), consts)]);
        assert_eq!(f.len(), 1, "{f:#?}");
    }
}

#[cfg(test)]
mod sandbox_host_tests {
    use super::*;

    fn table(text: &str) -> RouteTable {
        crate::caddy::caddyfile::parse("Caddyfile.cmux", text)
    }

    #[test]
    fn a_literal_sandbox_in_a_vmid_rule_is_flagged() {
        let c = Catalog::embedded();
        let t = table(
            ":8080 {\n    @xterm header_regexp vmid Host ^xterm-(\\d+)\\.\n    handle @xterm {\n        reverse_proxy cmux-203.lan:39383\n    }\n    @vscode header_regexp vmid Host ^vscode-(\\d+)\\.\n    handle @vscode {\n        reverse_proxy cmux-{re.vmid.1}.lan:39378\n    }\n    @x203 header_regexp vmid Host ^worker-203\\.\n    handle @x203 {\n        reverse_proxy cmux-203.lan:39377\n    }\n    @x202 header_regexp vmid Host ^exec-202\\.\n    handle @x202 {\n        reverse_proxy cmux-203.lan:39375\n    }\n}\n",
        );
        let f: Vec<(usize, &str)> = lint(&c, &[t], &[])
            .iter()
            .filter(|f| f.kind == FindingKind::RouteNamesOtherSandbox)
            .map(|f| (f.line, f.kind.as_str()))
            .collect();
        // The generic xterm rule and the rule for 202 that dials 203; not the rule for 203 itself.
        assert_eq!(
            f,
            vec![
                (4, "route_names_other_sandbox"),
                (16, "route_names_other_sandbox")
            ]
        );
    }

    #[test]
    fn the_lab_and_fixture_caddyfiles_have_no_such_finding() {
        let c = Catalog::embedded();
        for text in [
            crate::lab::caddy::caddyfile(&crate::lab::seed_routes()),
            include_str!("../tests/fixtures/Caddyfile.later").to_string(),
        ] {
            let f = lint(&c, &[table(&text)], &[]);
            assert!(
                f.iter()
                    .all(|f| f.kind != FindingKind::RouteNamesOtherSandbox),
                "{f:?}"
            );
        }
    }
}
