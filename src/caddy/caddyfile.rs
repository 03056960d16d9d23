//! Caddyfile reader: a real tokenizer (comments, quotes, backticks, line continuations, line
//! numbers) and an interpreter for the parts that route by Host: site blocks, named matchers
//! (`header_regexp`, `host`), `handle`/`route` blocks and `reverse_proxy`.
//!
//! [`parse`] never fails: what it does not understand becomes a [`Warning`].

use std::collections::BTreeMap;

use regex::Regex;

use super::{infer_service, Route, RouteTable, Source, Upstream, Warning};

// ---------------------------------------------------------------------------------------------
// Tokens

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    /// 1-based line where the token starts.
    pub line: usize,
    /// Written in `"..."` or `` `...` ``: never a brace, never a comment.
    pub quoted: bool,
    /// A line break (not an escaped one) separates this token from the previous one.
    pub newline_before: bool,
}

impl Token {
    fn is(&self, s: &str) -> bool {
        !self.quoted && self.text == s
    }
}

/// Splits a Caddyfile into tokens as Caddy's lexer does.
pub fn tokenize(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut line = 1usize;
    let mut newline = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            newline = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        // Line continuation between tokens: `\` then optional spaces then a newline.
        if c == '\\' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '\n' && chars[j].is_whitespace() {
                j += 1;
            }
            if j >= chars.len() || chars[j] == '\n' {
                if j < chars.len() {
                    line += 1;
                }
                i = j + 1;
                continue;
            }
        }
        if c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        let start_line = line;
        let mut val = String::new();
        let quoted;
        if c == '"' {
            quoted = true;
            i += 1;
            while i < chars.len() {
                let ch = chars[i];
                if ch == '\\' && i + 1 < chars.len() {
                    let next = chars[i + 1];
                    if next == '"' {
                        val.push('"');
                        i += 2;
                        continue;
                    }
                    if next == '\n' {
                        val.push('\n');
                        line += 1;
                        i += 2;
                        continue;
                    }
                    val.push('\\');
                    i += 1;
                    continue;
                }
                if ch == '"' {
                    i += 1;
                    break;
                }
                if ch == '\n' {
                    line += 1;
                }
                val.push(ch);
                i += 1;
            }
        } else if c == '`' {
            quoted = true;
            i += 1;
            while i < chars.len() && chars[i] != '`' {
                if chars[i] == '\n' {
                    line += 1;
                }
                val.push(chars[i]);
                i += 1;
            }
            i += 1;
        } else {
            quoted = false;
            while i < chars.len() && !chars[i].is_whitespace() {
                val.push(chars[i]);
                i += 1;
            }
        }
        tokens.push(Token {
            text: val,
            line: start_line,
            quoted,
            newline_before: newline,
        });
        newline = false;
    }
    tokens
}

// ---------------------------------------------------------------------------------------------
// Syntax tree: one "line" of tokens, optionally followed by a block.

#[derive(Debug, Clone)]
struct Node {
    /// The tokens of the line (directive name first); may be empty (`{` alone).
    args: Vec<Token>,
    /// Line of the first token (or of the `{`).
    line: usize,
    block: Option<Vec<Node>>,
}

impl Node {
    fn name(&self) -> &str {
        self.args.first().map(|t| t.text.as_str()).unwrap_or("")
    }
}

struct TreeParser<'a> {
    toks: &'a [Token],
    pos: usize,
    file: &'a str,
    warnings: Vec<Warning>,
}

impl TreeParser<'_> {
    /// Parses nodes until a closing `}` (consumed) or the end of input.
    fn nodes(&mut self, depth: usize) -> Vec<Node> {
        let mut out = Vec::new();
        while self.pos < self.toks.len() {
            let t = &self.toks[self.pos];
            if t.is("}") {
                if depth == 0 {
                    self.warn(t.line, "unexpected '}' without an open block; ignored");
                    self.pos += 1;
                    continue;
                }
                self.pos += 1;
                return out;
            }
            let mut args: Vec<Token> = Vec::new();
            let line = t.line;
            let mut block = None;
            while self.pos < self.toks.len() {
                let t = &self.toks[self.pos];
                let joins_prev = depth == 0
                    && args
                        .last()
                        .is_some_and(|p: &Token| !p.quoted && p.text.ends_with(','));
                if !args.is_empty() && t.newline_before && !joins_prev {
                    break;
                }
                if t.is("}") {
                    break;
                }
                if t.is("{") {
                    self.pos += 1;
                    if depth >= 64 {
                        self.warn(t.line, "blocks nested too deeply; rest ignored");
                        self.pos = self.toks.len();
                        block = Some(Vec::new());
                        break;
                    }
                    block = Some(self.nodes(depth + 1));
                    break;
                }
                args.push(t.clone());
                self.pos += 1;
            }
            out.push(Node { args, line, block });
        }
        out
    }

    fn warn(&mut self, line: usize, msg: impl Into<String>) {
        self.warnings.push(Warning {
            source: Source::at(self.file, line),
            message: msg.into(),
        });
    }
}

/// Checks brace balance separately (simpler than threading it through the tree parser).
fn unclosed_blocks(toks: &[Token]) -> Vec<usize> {
    let mut stack = Vec::new();
    for t in toks {
        if t.is("{") {
            stack.push(t.line);
        } else if t.is("}") {
            stack.pop();
        }
    }
    stack
}

// ---------------------------------------------------------------------------------------------
// Interpretation

/// Caddy's default directive order (httpcaddyfile): routes are evaluated in this order of
/// directives, whatever the order in the file.
const DIRECTIVE_ORDER: &[&str] = &[
    "tracing",
    "map",
    "vars",
    "fs",
    "root",
    "log_append",
    "skip_log",
    "log_skip",
    "log_name",
    "header",
    "copy_response_headers",
    "request_body",
    "redir",
    "method",
    "rewrite",
    "uri",
    "try_files",
    "basicauth",
    "basic_auth",
    "forward_auth",
    "request_header",
    "encode",
    "push",
    "intercept",
    "templates",
    "invoke",
    "handle",
    "handle_path",
    "route",
    "abort",
    "error",
    "copy_response",
    "respond",
    "metrics",
    "reverse_proxy",
    "php_fastcgi",
    "file_server",
    "acme_server",
];

/// Directives that never route to an upstream and need no attention.
const HARMLESS: &[&str] = &[
    "tracing",
    "map",
    "vars",
    "fs",
    "root",
    "log",
    "log_append",
    "skip_log",
    "log_skip",
    "log_name",
    "header",
    "request_body",
    "redir",
    "method",
    "rewrite",
    "uri",
    "try_files",
    "basicauth",
    "basic_auth",
    "request_header",
    "encode",
    "push",
    "templates",
    "abort",
    "error",
    "respond",
    "metrics",
    "file_server",
    "tls",
    "bind",
    "handle_errors",
    "acme_server",
];

/// Subdirectives of `reverse_proxy` that do not change where it dials.
const PROXY_SUBDIRECTIVES: &[&str] = &[
    "lb_policy",
    "lb_retries",
    "lb_try_duration",
    "lb_try_interval",
    "lb_retry_match",
    "health_uri",
    "health_path",
    "health_upstream",
    "health_port",
    "health_interval",
    "health_passes",
    "health_fails",
    "health_timeout",
    "health_method",
    "health_request_body",
    "health_status",
    "health_body",
    "health_follow_redirects",
    "health_headers",
    "fail_duration",
    "max_fails",
    "unhealthy_status",
    "unhealthy_latency",
    "unhealthy_request_count",
    "flush_interval",
    "request_buffers",
    "response_buffers",
    "stream_timeout",
    "stream_close_delay",
    "trusted_proxies",
    "header_up",
    "header_down",
    "method",
    "rewrite",
    "transport",
    "handle_response",
    "replace_status",
    "verbose_logs",
];

#[derive(Debug, Clone, Default)]
struct Matcher {
    /// (capture name, pattern) of a `header_regexp` on Host.
    host_re: Option<(Option<String>, String)>,
    hosts: Vec<String>,
    other: Vec<String>,
}

#[derive(Debug, Clone, Default)]
struct Ctx {
    site: String,
    hosts: Vec<String>,
    host_re: Option<(Option<String>, String)>,
    matcher: Option<String>,
    conditions: Vec<String>,
    matchers: BTreeMap<String, Matcher>,
}

struct Interp<'a> {
    file: &'a str,
    routes: Vec<Route>,
    warnings: Vec<Warning>,
}

impl Interp<'_> {
    fn warn(&mut self, line: usize, msg: impl Into<String>) {
        self.warnings.push(Warning {
            source: Source::at(self.file, line),
            message: msg.into(),
        });
    }

    fn top(&mut self, nodes: &[Node]) {
        // A file whose first line has no block is a single site: that line holds the addresses.
        if let Some(first) = nodes.first() {
            if first.block.is_none()
                && !first.args.is_empty()
                && first.name() != "import"
                && nodes.len() > 1
                && nodes[1..].iter().all(|n| !is_site_like(n))
            {
                let ctx = self.site_ctx(first);
                self.block(&nodes[1..], &ctx);
                return;
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            let name = n.name();
            match &n.block {
                _ if name == "import" => self.warn(
                    n.line,
                    format!(
                        "import {} not followed: routes it brings in are not checked",
                        rest_text(&n.args[1..])
                    ),
                ),
                Some(_) if n.args.is_empty() => {
                    let msg = if i == 0 {
                        "global options block ignored"
                    } else {
                        "a block without a site address (global options must come first); ignored"
                    };
                    self.warn(n.line, msg);
                }
                Some(_) if name.starts_with('(') && name.ends_with(')') => self.warn(
                    n.line,
                    format!(
                        "snippet {name} ignored: routes imported from snippets are not checked"
                    ),
                ),
                Some(body) => {
                    let ctx = self.site_ctx(n);
                    self.block(body, &ctx);
                }
                None => self.warn(
                    n.line,
                    format!(
                        "top-level line `{}` is not a site block; ignored",
                        rest_text(&n.args)
                    ),
                ),
            }
        }
    }

    fn site_ctx(&mut self, n: &Node) -> Ctx {
        let mut addrs = Vec::new();
        for t in &n.args {
            for a in t.text.split(',') {
                let a = a.trim();
                if !a.is_empty() {
                    addrs.push(a.to_string());
                }
            }
        }
        let mut hosts = Vec::new();
        let mut any_host = false;
        for a in &addrs {
            match address_host(a) {
                Some(h) => hosts.push(h),
                None => any_host = true,
            }
        }
        if any_host {
            hosts.clear();
        }
        Ctx {
            site: addrs.join(", "),
            hosts,
            ..Ctx::default()
        }
    }

    fn block(&mut self, nodes: &[Node], parent: &Ctx) {
        let mut ctx = parent.clone();
        // Named matchers first: they may be defined after use.
        for n in nodes {
            if let Some(name) = n.name().strip_prefix('@') {
                if n.args[0].quoted {
                    continue;
                }
                let m = self.matcher_def(n);
                if ctx.matchers.insert(name.to_string(), m).is_some()
                    && !parent.matchers.contains_key(name)
                {
                    self.warn(
                        n.line,
                        format!("matcher @{name} defined twice; the last one wins"),
                    );
                }
            }
        }
        // Caddy sorts directives: by directive order, then (same directive) routes with a matcher
        // before routes without; otherwise file order.
        let mut order: Vec<(usize, bool, usize)> = Vec::new();
        for (i, n) in nodes.iter().enumerate() {
            let name = n.name();
            if name.starts_with('@') && !n.args[0].quoted {
                continue;
            }
            let rank = DIRECTIVE_ORDER
                .iter()
                .position(|d| *d == name)
                .unwrap_or(DIRECTIVE_ORDER.len());
            let has_matcher = n.args.get(1).is_some_and(is_matcher_token);
            order.push((rank, !has_matcher, i));
        }
        order.sort();
        for (_, _, i) in order {
            self.directive(&nodes[i], &ctx);
        }
    }

    fn matcher_def(&mut self, n: &Node) -> Matcher {
        let name = n.name()[1..].to_string();
        let mut m = Matcher::default();
        if n.args.len() > 1 {
            self.matcher_line(&name, &n.args[1..], n.line, &mut m);
        }
        if let Some(body) = &n.block {
            for inner in body {
                if inner.block.is_some() {
                    self.warn(
                        inner.line,
                        format!(
                            "matcher @{name}: block in `{}` not understood; kept as a condition",
                            inner.name()
                        ),
                    );
                    m.other.push(rest_text(&inner.args));
                    continue;
                }
                if !inner.args.is_empty() {
                    self.matcher_line(&name, &inner.args, inner.line, &mut m);
                }
            }
        }
        if n.args.len() == 1 && n.block.is_none() {
            self.warn(n.line, format!("matcher @{name} has no condition"));
        }
        m
    }

    fn matcher_line(&mut self, name: &str, args: &[Token], line: usize, m: &mut Matcher) {
        let kind = args[0].text.as_str();
        match kind {
            "header_regexp" => {
                let (cap, field, pattern) = match args.len() {
                    3 => (Some(name.to_string()), &args[1].text, &args[2].text),
                    4 => (Some(args[1].text.clone()), &args[2].text, &args[3].text),
                    _ => {
                        self.warn(
                            line,
                            format!("matcher @{name}: header_regexp needs [name] <field> <regexp>"),
                        );
                        m.other.push(rest_text(args));
                        return;
                    }
                };
                if !field.eq_ignore_ascii_case("host") {
                    m.other.push(rest_text(args));
                    return;
                }
                if let Err(e) = Regex::new(pattern) {
                    self.warn(
                        line,
                        format!(
                            "matcher @{name}: Host regexp {pattern:?} does not compile: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    );
                }
                if m.host_re.is_some() {
                    self.warn(
                        line,
                        format!("matcher @{name}: several Host regexps; only the first is used"),
                    );
                    m.other.push(rest_text(args));
                    return;
                }
                m.host_re = Some((cap, pattern.clone()));
            }
            "host" => {
                if args.len() < 2 {
                    self.warn(line, format!("matcher @{name}: host without a name"));
                }
                m.hosts.extend(args[1..].iter().map(|t| t.text.clone()));
            }
            _ => m.other.push(rest_text(args)),
        }
    }

    /// Applies the matcher token of a directive (if any) to a copy of the context.
    /// Returns the context and the index of the first argument after the matcher.
    fn with_matcher(&mut self, n: &Node, ctx: &Ctx) -> (Ctx, usize) {
        let mut c = ctx.clone();
        let Some(t) = n.args.get(1).filter(|t| is_matcher_token(t)) else {
            return (c, 1);
        };
        if t.text == "*" {
            return (c, 2);
        }
        if let Some(name) = t.text.strip_prefix('@') {
            match ctx.matchers.get(name) {
                None => {
                    self.warn(
                        t.line,
                        format!("matcher @{name} is not defined; the route is kept as conditional"),
                    );
                    c.conditions.push(format!("@{name} (undefined)"));
                }
                Some(m) => {
                    c.matcher = Some(name.to_string());
                    if let Some(re) = &m.host_re {
                        if let Some((_, old)) = &c.host_re {
                            self.warn(
                                t.line,
                                format!(
                                    "nested Host regexps ({old:?} then {:?}); only the outer one is modelled",
                                    re.1
                                ),
                            );
                            c.conditions.push(format!("header_regexp Host {}", re.1));
                        } else {
                            c.host_re = Some(re.clone());
                        }
                    }
                    if !m.hosts.is_empty() {
                        c.hosts = m.hosts.clone();
                    }
                    c.conditions.extend(m.other.iter().cloned());
                }
            }
        } else {
            c.conditions.push(format!("path {}", t.text));
        }
        (c, 2)
    }

    fn directive(&mut self, n: &Node, ctx: &Ctx) {
        let name = n.name();
        match name {
            "handle" | "route" | "handle_path" => {
                let (c, next) = self.with_matcher(n, ctx);
                if n.args.len() > next {
                    self.warn(
                        n.line,
                        format!(
                            "{name}: unexpected arguments `{}`",
                            rest_text(&n.args[next..])
                        ),
                    );
                }
                match &n.block {
                    Some(body) => self.block(body, &c),
                    None => self.warn(n.line, format!("{name} without a block")),
                }
            }
            "reverse_proxy" => self.reverse_proxy(n, ctx),
            "import" => self.warn(
                n.line,
                format!(
                    "import {} not followed: routes it brings in are not checked",
                    rest_text(&n.args[1..])
                ),
            ),
            "" => self.warn(n.line, "a block without a directive; ignored"),
            _ if HARMLESS.contains(&name) => {}
            _ => self.warn(
                n.line,
                format!("directive `{name}` not understood; ignored (it may route requests)"),
            ),
        }
    }

    fn reverse_proxy(&mut self, n: &Node, ctx: &Ctx) {
        let (c, next) = self.with_matcher(n, ctx);
        let mut ups: Vec<String> = n.args[next..].iter().map(|t| t.text.clone()).collect();
        if let Some(body) = &n.block {
            for sub in body {
                match sub.name() {
                    "to" => ups.extend(sub.args[1..].iter().map(|t| t.text.clone())),
                    s if PROXY_SUBDIRECTIVES.contains(&s) => {}
                    "dynamic" => self.warn(
                        sub.line,
                        "reverse_proxy: dynamic upstreams are not modelled",
                    ),
                    s => self.warn(
                        sub.line,
                        format!("reverse_proxy: subdirective `{s}` not understood; ignored"),
                    ),
                }
            }
        }
        if ups.is_empty() {
            self.warn(
                n.line,
                "reverse_proxy without an upstream; no route recorded",
            );
            return;
        }
        if ups.len() > 1 {
            self.warn(
                n.line,
                format!(
                    "reverse_proxy has {} upstreams ({}); only the first is modelled",
                    ups.len(),
                    ups.join(" ")
                ),
            );
        }
        let upstream = Upstream::parse(&ups[0]);
        if let Upstream::Other { raw } = &upstream {
            self.warn(
                n.line,
                format!("reverse_proxy upstream {raw:?} not understood (expected host:port)"),
            );
        }
        let (capture_name, host_pattern) = match &c.host_re {
            Some((cap, p)) => (cap.clone(), p.clone()),
            None => (None, String::new()),
        };
        let service = infer_service(&host_pattern, c.matcher.as_deref(), &upstream);
        self.routes.push(Route {
            host_pattern,
            capture_name,
            service,
            upstream,
            source: Source::at(self.file, n.line),
            matcher: c.matcher.clone(),
            hosts: c.hosts.clone(),
            site: c.site.clone(),
            conditions: c.conditions.clone(),
        });
    }
}

fn is_matcher_token(t: &Token) -> bool {
    !t.quoted && (t.text.starts_with('@') || t.text.starts_with('/') || t.text == "*")
}

fn is_site_like(n: &Node) -> bool {
    n.block.is_some() && n.args.first().is_some_and(|t| looks_like_address(&t.text))
}

fn looks_like_address(s: &str) -> bool {
    s.starts_with(':') || s.contains("://") || s.contains('.') || s == "localhost"
}

/// The host part of a site address (`http://a.example.com:8080/x` -> `a.example.com`);
/// `None` when the address matches any host (`:8080`, `http://`).
fn address_host(addr: &str) -> Option<String> {
    let a = addr.split_once("://").map(|(_, r)| r).unwrap_or(addr);
    let a = a.split('/').next().unwrap_or("");
    let host = super::strip_port(a);
    (!host.is_empty() && !host.contains('{')).then(|| host.to_ascii_lowercase())
}

fn rest_text(args: &[Token]) -> String {
    args.iter()
        .map(|t| {
            if t.quoted {
                format!("{:?}", t.text)
            } else {
                t.text.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads a Caddyfile. Never panics, never errors: unknown things become warnings.
pub fn parse(file_name: &str, text: &str) -> RouteTable {
    let toks = tokenize(text);
    let mut tp = TreeParser {
        toks: &toks,
        pos: 0,
        file: file_name,
        warnings: Vec::new(),
    };
    let tree = tp.nodes(0);
    let mut warnings = tp.warnings;
    for line in unclosed_blocks(&toks) {
        warnings.push(Warning {
            source: Source::at(file_name, line),
            message: "block opened here is never closed".into(),
        });
    }
    let mut interp = Interp {
        file: file_name,
        routes: Vec::new(),
        warnings,
    };
    interp.top(&tree);
    let mut warnings = interp.warnings;
    warnings.sort_by_key(|w| w.source.line);
    RouteTable {
        routes: interp.routes,
        warnings,
        caddyfile_text: Some((file_name.to_string(), text.to_string())),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The seed document's Caddyfile, exactly (Caddyfile.cmux, December 2025; xterm on 39383).
    pub(crate) const SEED: &str = include_str!("../../tests/fixtures/Caddyfile.seed");

    /// The later generic layout (2026), as a real Caddyfile.
    pub(crate) const LATER: &str = concat!(
        "{\n\tadmin localhost:2019\n}\n\n",
        include_str!("../../tests/fixtures/Caddyfile.later")
    );

    fn fixed(host: &str, port: u16) -> Upstream {
        Upstream::Fixed {
            host_template: host.into(),
            port,
        }
    }

    fn summary(t: &RouteTable) -> Vec<(String, Option<String>, Upstream, usize)> {
        t.routes
            .iter()
            .map(|r| {
                (
                    r.host_pattern.clone(),
                    r.service.clone(),
                    r.upstream.clone(),
                    r.source.line,
                )
            })
            .collect()
    }

    #[test]
    fn seed_layout_table() {
        let t = parse("Caddyfile.cmux", SEED);
        assert_eq!(t.warnings, vec![]);
        let want: Vec<(String, Option<String>, Upstream, usize)> = [
            ("vscode", 39378, 5),
            ("worker", 39377, 11),
            ("xterm", 39383, 17),
            ("exec", 39375, 23),
            ("vnc", 39380, 29),
            ("preview", 5173, 35),
        ]
        .iter()
        .map(|(s, p, l)| {
            (
                format!(r"^{s}-(\d+)\."),
                Some(s.to_string()),
                fixed("cmux-{re.vmid.1}.lan", *p),
                *l,
            )
        })
        .collect();
        assert_eq!(summary(&t), want);
        let x = &t.routes[2];
        assert_eq!(x.capture_name.as_deref(), Some("vmid"));
        assert_eq!(x.matcher.as_deref(), Some("xterm"));
        assert_eq!(x.site, ":8080");
        assert!(x.hosts.is_empty() && x.conditions.is_empty());
        assert_eq!(x.source, Source::at("Caddyfile.cmux", 17));
    }

    #[test]
    fn seed_layout_resolves() {
        let t = parse("Caddyfile.cmux", SEED);
        let r = t.resolve("xterm-202.example.com").unwrap();
        assert_eq!(r.upstream_host, "cmux-202.lan");
        assert_eq!(r.port, Some(39383));
        assert_eq!(r.index, 2);
        assert_eq!(r.dial(), "cmux-202.lan:39383");
        assert_eq!(r.route.service.as_deref(), Some("xterm"));
        assert_eq!(t.resolve("vscode-7.example.com").unwrap().port, Some(39378));
        assert!(t.resolve("port-39383-cmux-202.example.com").is_none());
        assert!(t.resolve("xterm-abc.example.com").is_none());
        assert_eq!(t.routes_for_service("xterm").len(), 1);
        assert!(t.routes_for_service("cdp").is_empty());
        assert!(!t.has_generic_route());
    }

    #[test]
    fn later_layout_table() {
        let t = parse("Caddyfile.cmux", LATER);
        assert_eq!(t.routes.len(), 1, "{:#?}", t.routes);
        let r = &t.routes[0];
        assert_eq!(r.host_pattern, r"^port-(\d+)-([a-z0-9-]+)\.");
        assert_eq!(r.service, None);
        assert_eq!(
            r.upstream,
            Upstream::FromHost {
                host_template: "{re.service.2}.lan".into(),
                port_placeholder: "{re.service.1}".into()
            }
        );
        assert_eq!(r.source.line, 17);
        assert_eq!(r.capture_name.as_deref(), Some("service"));
        // Only the global options block is reported.
        let msgs: Vec<(usize, &str)> = t
            .warnings
            .iter()
            .map(|w| (w.source.line, w.message.as_str()))
            .collect();
        assert_eq!(msgs, vec![(1, "global options block ignored")]);
        assert!(t.has_generic_route());
    }

    #[test]
    fn later_layout_resolves() {
        let t = parse("Caddyfile.cmux", LATER);
        let r = t.resolve("port-39383-pvelxc-1a2b3c4d.example.com").unwrap();
        assert_eq!(r.upstream_host, "pvelxc-1a2b3c4d.lan");
        assert_eq!(r.port, Some(39383));
        let r = t.resolve("port-5173-cmux-202.example.com:443").unwrap();
        assert_eq!(r.dial(), "cmux-202.lan:5173");
        let r = t.resolve("port-99999-x.example.com").unwrap();
        assert_eq!(r.port, None);
        assert!(t.resolve("xterm-202.example.com").is_none());
    }

    #[test]
    fn tokenizer_quotes_comments_continuations() {
        let text =
            "a \"b c\" `d \"e\"` f#g # comment\n\"x \\\"y\\\" \\z\" \\\n  cont\n#whole\nlast";
        let toks = tokenize(text);
        let got: Vec<(&str, usize, bool, bool)> = toks
            .iter()
            .map(|t| (t.text.as_str(), t.line, t.quoted, t.newline_before))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a", 1, false, true),
                ("b c", 1, true, false),
                ("d \"e\"", 1, true, false),
                ("f#g", 1, false, false),
                ("x \"y\" \\z", 2, true, true),
                ("cont", 3, false, false),
                ("last", 5, false, true),
            ]
        );
        // A multi-line quoted token keeps counting lines.
        let toks = tokenize("\"a\nb\" c\nd");
        assert_eq!(toks[0].line, 1);
        assert_eq!(toks[1].line, 2);
        assert!(!toks[1].newline_before);
        assert_eq!((toks[2].line, toks[2].newline_before), (3, true));
    }

    #[test]
    fn several_sites_one_line_blocks_and_quoted_upstream() {
        let text = r#"
# two listeners
:8080 {
	@xterm header_regexp vmid Host ^xterm-(\d+)\.
	handle @xterm { reverse_proxy cmux-{re.vmid.1}.lan:39376 }
}

xterm.example.com:9090, http://other.example.com {
	reverse_proxy "http://10.0.0.5:39383" # comment after
}
"#;
        let t = parse("c", text);
        assert_eq!(t.warnings, vec![]);
        assert_eq!(
            summary(&t),
            vec![
                (
                    r"^xterm-(\d+)\.".into(),
                    Some("xterm".into()),
                    fixed("cmux-{re.vmid.1}.lan", 39376),
                    5
                ),
                (String::new(), None, fixed("10.0.0.5", 39383), 9),
            ]
        );
        assert_eq!(
            t.routes[1].hosts,
            vec!["xterm.example.com".to_string(), "other.example.com".into()]
        );
        assert_eq!(
            t.routes[1].site,
            "xterm.example.com:9090, http://other.example.com"
        );
        let r = t.resolve("other.example.com").unwrap();
        assert_eq!(r.dial(), "10.0.0.5:39383");
        assert!(t.resolve("nope.example.com").is_none());
    }

    #[test]
    fn block_matchers_nested_handles_and_caddy_order() {
        let text = r#":8080 {
	handle {
		respond "catch-all" 404
	}
	@pty {
		header_regexp vm Host "^(?:xterm|pty)-(\d+)\."
	}
	route @pty {
		header X-A b
		reverse_proxy cmux-{re.vm.1}.lan:39383 {
			lb_policy first
		}
	}
	@h host vnc.example.com
	handle @h {
		handle /ws/* {
			reverse_proxy 127.0.0.1:39380
		}
		handle {
			reverse_proxy 127.0.0.1:6080
		}
	}
}
"#;
        let t = parse("c", text);
        assert_eq!(t.warnings, vec![]);
        // handle blocks come before route blocks in Caddy's directive order.
        let lines: Vec<usize> = t.routes.iter().map(|r| r.source.line).collect();
        assert_eq!(lines, vec![17, 20, 10]);
        assert_eq!(t.routes[0].conditions, vec!["path /ws/*".to_string()]);
        assert_eq!(t.routes[1].hosts, vec!["vnc.example.com".to_string()]);
        assert_eq!(t.routes[1].service.as_deref(), Some("h"));
        assert_eq!(t.routes[2].service.as_deref(), Some("pty"));
        assert_eq!(
            t.resolve("vnc.example.com").unwrap().dial(),
            "127.0.0.1:6080"
        );
        assert_eq!(t.resolve("pty-3.x").unwrap().dial(), "cmux-3.lan:39383");
    }

    #[test]
    fn unnamed_header_regexp_uses_the_matcher_name() {
        let text = ":8080 {\n@xterm header_regexp Host ^xterm-(\\d+)\\.\nreverse_proxy @xterm cmux-{re.xterm.1}.lan:39383\n}\n";
        let t = parse("c", text);
        assert_eq!(t.warnings, vec![]);
        assert_eq!(t.routes[0].capture_name.as_deref(), Some("xterm"));
        assert_eq!(t.resolve("xterm-9.a").unwrap().dial(), "cmux-9.lan:39383");
    }

    #[test]
    fn single_site_without_braces() {
        let t = parse("c", ":8080\nreverse_proxy localhost:3000\n");
        assert_eq!(t.warnings, vec![]);
        assert_eq!(
            summary(&t),
            vec![(String::new(), None, fixed("localhost", 3000), 2)]
        );
    }

    #[test]
    fn things_not_understood_are_warnings() {
        let text = r#"{
	debug
}
(cors) {
	header Access-Control-Allow-Origin "*"
}
:8080 {
	import cors
	@bad header_regexp v Host ^xterm-(\d+
	handle @bad {
		reverse_proxy a.lan:1 b.lan:2 {
			frobnicate yes
		}
	}
	handle @undefined {
		reverse_proxy c.lan:3
	}
	php_fastcgi localhost:9000
	reverse_proxy unix//run/x.sock
}
}
:9090 {
"#;
        let t = parse("c", text);
        let got: Vec<(usize, String)> = t
            .warnings
            .iter()
            .map(|w| (w.source.line, w.message.clone()))
            .collect();
        let has = |line: usize, needle: &str| {
            assert!(
                got.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "no warning at {line} containing {needle:?}: {got:#?}"
            )
        };
        has(1, "global options");
        has(4, "snippet (cors)");
        has(8, "import cors not followed");
        has(9, "does not compile");
        has(11, "2 upstreams");
        has(12, "frobnicate");
        has(15, "@undefined is not defined");
        has(18, "php_fastcgi");
        has(19, "not understood");
        has(21, "unexpected '}'");
        has(22, "never closed");
        // Routes are still recorded (first upstream), the broken regexp never matches.
        assert_eq!(t.routes.len(), 3);
        assert_eq!(t.routes[0].upstream, fixed("a.lan", 1));
        assert_eq!(
            t.routes[1].conditions,
            vec!["@undefined (undefined)".to_string()]
        );
        // The broken regexp never matches: the site-level proxy (evaluated last) answers.
        let r = t.resolve("xterm-1.a").unwrap();
        assert_eq!(r.index, 2);
        assert_eq!(r.port, None);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]
        #[test]
        fn never_panics_on_noise(s in "[{}\"\\\\`#@ \\na-z0-9:.()^$*/-]{0,200}") {
            let t = parse("f", &s);
            let _ = t.resolve("xterm-1.example.com");
        }

        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            let _ = parse("f", &s);
        }

        #[test]
        fn never_panics_on_mutated_seed(cut in 0usize..1200, ins in "[{}\"\\\\`#@\\n]{0,4}") {
            let mut s: Vec<char> = SEED.chars().collect();
            let at = cut.min(s.len());
            s.splice(at..at, ins.chars());
            let text: String = s.into_iter().collect();
            let t = parse("f", &text);
            let _ = t.resolve("xterm-1.example.com");
        }
    }
}
