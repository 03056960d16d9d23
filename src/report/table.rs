//! The human format: a table per target, then one diagnosis block per root cause (services that
//! share a cause are said once, see [`super::group`]). Everything fits the given width: the table
//! drops timings and long words first, then its borders; text wraps at spaces with a hanging
//! indent, so hostnames and URLs are never broken.

use super::group::{self, Group};
use super::{Format, Report, TargetReport};
use crate::observation::Probe;
use crate::verdict::{Status, Verdict};

/// The width when the terminal's is not known.
pub(crate) const DEFAULT_WIDTH: usize = 100;

pub struct TableFormat {
    pub(crate) color: bool,
    /// Columns the text must fit in.
    pub(crate) width: usize,
}

impl TableFormat {
    pub fn new(color: bool, width: usize) -> TableFormat {
        TableFormat {
            color,
            // Below 40 columns nothing reads well; keep the layout sane.
            width: width.max(40),
        }
    }
}

/// ANSI styles, written directly: what is coloured must not depend on a library's own idea of the
/// terminal or of `NO_COLOR` (the settings decided that already).
#[derive(Clone, Copy)]
enum Style {
    Green,
    Dim,
    YellowBold,
    RedBold,
    Bold,
}

fn style(text: &str, st: Style, on: bool) -> String {
    if !on || text.is_empty() {
        return text.to_string();
    }
    let code = match st {
        Style::Green => "32",
        Style::Dim => "2",
        Style::YellowBold => "1;33",
        Style::RedBold => "1;31",
        Style::Bold => "1",
    };
    format!("\x1b[{code}m{text}\x1b[0m")
}

fn status_style(s: Status) -> Style {
    match s {
        Status::Healthy => Style::Green,
        Status::Skipped => Style::Dim,
        Status::Inconclusive | Status::Degraded => Style::YellowBold,
        Status::Broken => Style::RedBold,
    }
}

fn paint(text: &str, s: Status, on: bool) -> String {
    style(text, status_style(s), on)
}

/// The display width of a text (ANSI escapes and wide characters counted right).
fn width_of(s: &str) -> usize {
    textwrap::core::display_width(s)
}

/// Wraps `text` to `width` at spaces only: the first line starts with `first`, the others with
/// `rest` (a hanging indent). Hostnames and URLs stay whole; only a word longer than a whole line
/// is cut.
pub(crate) fn fill(text: &str, width: usize, first: &str, rest: &str) -> Vec<String> {
    let opts = textwrap::Options::new(width)
        .initial_indent(first)
        .subsequent_indent(rest)
        .word_separator(textwrap::WordSeparator::AsciiSpace)
        .word_splitter(textwrap::WordSplitter::NoHyphenation)
        .wrap_algorithm(textwrap::WrapAlgorithm::FirstFit)
        // Only a word longer than a whole line is cut (a quoted body, a URL of 80 characters).
        .break_words(true);
    textwrap::wrap(text, opts)
        .into_iter()
        .map(|l| l.into_owned())
        .collect()
}

/// A short cell for one probe: `200 · 35 ms`, `502 cloudflare`, `refused`.
pub(crate) fn probe_cell(p: &Probe) -> String {
    probe_cell_in(p, false)
}

/// A probe's cell; `compact` drops the timing and shortens `cloudflare` to `cf`.
fn probe_cell_in(p: &Probe, compact: bool) -> String {
    match p {
        // The exec call through the same public URL answered it (one request per fact).
        Probe::NotRun { reason } if reason == crate::probe::exec::ANSWERED_BY_EXEC_CALL => {
            "via exec call".into()
        }
        Probe::NotRun { .. } => "—".into(),
        Probe::Failed { kind, .. } => kind.as_str().replace('_', " "),
        Probe::Response {
            response,
            elapsed_ms,
        } => {
            if let Some(g) = crate::made_by::edge_gate(response) {
                return if compact {
                    format!("{} {}", response.status, g.cell())
                } else {
                    format!("{} {} · {elapsed_ms} ms", response.status, g.cell())
                };
            }
            let cf = if compact { "cf" } else { "cloudflare" };
            let who = match response.header("server") {
                Some(s) if s.eq_ignore_ascii_case("cloudflare") && response.status >= 500 => {
                    let code = crate::made_by::cloudflare_error_code(&response.body);
                    match code {
                        Some(c) if c != response.status.to_string() => format!(" {cf} {c}"),
                        _ => format!(" {cf}"),
                    }
                }
                Some(s) if s.eq_ignore_ascii_case("caddy") && response.body.trim().is_empty() => {
                    " caddy".into()
                }
                _ => String::new(),
            };
            if compact {
                format!("{}{who}", response.status)
            } else {
                format!("{}{who} · {elapsed_ms} ms", response.status)
            }
        }
    }
}

/// `broken (caddy)` when the layer is pinned, `broken (caddy|service)` between candidates.
pub(crate) fn verdict_cell(v: &Verdict) -> String {
    let layers = v.layer_label();
    if layers.is_empty() {
        v.status.as_str().to_string()
    } else {
        format!("{} ({layers})", v.status.as_str())
    }
}

/// The verdict cell in few columns: `✗ caddy`, `? caddy|service`, `✓ healthy`.
fn verdict_cell_compact(v: &Verdict) -> String {
    let layers = v.layer_label();
    if layers.is_empty() {
        format!("{} {}", mark(v.status), v.status.as_str())
    } else {
        format!("{} {layers}", mark(v.status))
    }
}

/// A next step cut after `; `, ` && `, ` — ` and `on the PVE host: `, outside quotes.
pub(crate) fn next_step_parts(text: &str) -> Vec<String> {
    const CUTS: [&str; 4] = ["; ", " && ", " — ", "on the PVE host: "];
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote: Option<char> = None;
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().unwrap_or(' ');
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None => {
                if let Some(cut) = CUTS.iter().find(|cut| text[i..].starts_with(**cut)) {
                    let end = i + cut.trim_end().len();
                    parts.push(text[start..end].trim().to_string());
                    i += cut.len();
                    start = i;
                    continue;
                }
            }
        }
        i += c.len_utf8();
    }
    parts.push(text[start..].trim().to_string());
    parts.retain(|p| !p.is_empty());
    parts
}

/// One table: header and rows of plain cells; the last column may be painted per row.
struct Grid {
    header: Vec<String>,
    rows: Vec<(Vec<String>, Status)>,
}

impl Grid {
    fn widths(&self) -> Vec<usize> {
        let mut w: Vec<usize> = self.header.iter().map(|h| width_of(h)).collect();
        for (r, _) in &self.rows {
            for (i, c) in r.iter().enumerate() {
                for line in c.lines() {
                    w[i] = w[i].max(width_of(line));
                }
            }
        }
        w
    }

    fn bordered_width(&self) -> usize {
        let w = self.widths();
        w.iter().sum::<usize>() + 3 * w.len() + 1
    }

    fn plain_width(&self) -> usize {
        let w = self.widths();
        w.iter().sum::<usize>() + 2 * w.len().saturating_sub(1)
    }

    /// Splits the last column's cells so the plain table fits `width` (at `|` and spaces).
    fn narrow_last(&mut self, width: usize) {
        let w = self.widths();
        let others = w[..w.len() - 1].iter().sum::<usize>() + 2 * (w.len() - 1);
        let room = width.saturating_sub(others).max(8);
        for (r, _) in &mut self.rows {
            let last = r.last_mut().expect("a column");
            let spaced = last.replace('|', "| ");
            let lines = fill(&spaced, room, "", "  ");
            *last = lines
                .iter()
                .map(|l| l.replace("| ", "|"))
                .collect::<Vec<_>>()
                .join("\n");
        }
    }

    fn render(&self, bordered: bool, color: bool) -> String {
        let w = self.widths();
        let mut out = String::new();
        let pad = |s: &str, n: usize| format!("{s}{}", " ".repeat(n.saturating_sub(width_of(s))));
        let rule = |l: &str, m: &str, r: &str, h: &str| {
            let parts: Vec<String> = w.iter().map(|n| h.repeat(n + 2)).collect();
            format!("{l}{}{r}\n", parts.join(m))
        };
        let line = |cells: &[String], status: Option<Status>| {
            let height = cells
                .iter()
                .map(|c| c.lines().count().max(1))
                .max()
                .unwrap_or(1);
            let mut s = String::new();
            for k in 0..height {
                let parts: Vec<String> = cells
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let text = c.lines().nth(k).unwrap_or("");
                        let last = i + 1 == cells.len();
                        let padded = if last && !bordered {
                            text.to_string()
                        } else {
                            pad(text, w[i])
                        };
                        match status {
                            Some(st) if last => {
                                let painted = paint(text, st, color);
                                padded.replacen(text, &painted, 1)
                            }
                            _ => padded,
                        }
                    })
                    .collect();
                if bordered {
                    s.push_str(&format!("│ {} │\n", parts.join(" ┆ ")));
                } else {
                    s.push_str(parts.join("  ").trim_end());
                    s.push('\n');
                }
            }
            s
        };
        if bordered {
            out.push_str(&rule("┌", "┬", "┐", "─"));
        }
        out.push_str(&line(&self.header, None));
        if bordered {
            out.push_str(&rule("╞", "╪", "╡", "═"));
        }
        for (r, st) in &self.rows {
            out.push_str(&line(r, Some(*st)));
        }
        if bordered {
            out.push_str(&rule("└", "┴", "┘", "─"));
        }
        out
    }
}

impl TableFormat {
    /// Pushes `text` wrapped to the width with a hanging indent, each line painted with `st`.
    fn push_wrapped(
        &self,
        out: &mut String,
        text: &str,
        first: &str,
        rest: &str,
        st: Option<Style>,
    ) {
        for l in fill(text, self.width, first, rest) {
            match st {
                Some(st) => {
                    // Keep the indent plain; paint the words.
                    let body = l.trim_start();
                    let indent = &l[..l.len() - body.len()];
                    out.push_str(indent);
                    out.push_str(&style(body, st, self.color));
                }
                None => out.push_str(&l),
            }
            out.push('\n');
        }
    }

    /// A next step: its first part after the label, then every command on a line of its own —
    /// a new line after `;`, `&&`, ` — ` and `on the PVE host:` — so what is copied from one line
    /// still runs in a shell; only a part longer than a line is wrapped.
    fn push_next(&self, out: &mut String, label: &str, text: &str, st: Option<Style>) {
        let parts = next_step_parts(text);
        let first = format!("  {label}: ");
        let rest = " ".repeat(first.len());
        let mut it = parts.iter();
        if let Some(p) = it.next() {
            self.push_wrapped(out, p, &first, &rest, st);
        }
        for p in it {
            self.push_wrapped(out, p, "      ", "        ", st);
        }
    }

    fn grid(&self, t: &TargetReport, compact: bool, focus: Option<&str>) -> Grid {
        let o = &t.observation;
        let v = &t.verdict;
        let header: Vec<&str> = match (o.host.is_some(), compact) {
            (true, false) => vec![
                "SERVICE",
                "PORT",
                "EXTERNAL",
                "CADDY (HOST)",
                "UPSTREAM (HOST)",
                "INTERNAL",
                "VERDICT",
            ],
            (true, true) => vec![
                "SERVICE", "PORT", "EXTERNAL", "CADDY", "UPSTREAM", "INTERNAL", "VERDICT",
            ],
            (false, _) => vec!["SERVICE", "PORT", "EXTERNAL", "INTERNAL", "VERDICT"],
        };
        let mut rows = Vec::new();
        for (so, sv) in o.services.iter().zip(&v.services) {
            let name = if focus == Some(so.name.as_str()) {
                format!("▸ {}", so.name)
            } else {
                so.name.clone()
            };
            let mut cells = vec![
                name,
                so.port.to_string(),
                probe_cell_in(&so.external, compact),
            ];
            if let Some(h) = &o.host {
                let hs = h.services.iter().find(|x| x.name == so.name);
                cells.push(hs.map_or("—".into(), |x| probe_cell_in(&x.caddy, compact)));
                cells.push(hs.map_or("—".into(), |x| probe_cell_in(&x.upstream, compact)));
            }
            cells.push(probe_cell_in(&so.internal, compact));
            cells.push(if compact {
                verdict_cell_compact(sv)
            } else {
                verdict_cell(sv)
            });
            rows.push((cells, sv.status));
        }
        Grid {
            header: header.into_iter().map(String::from).collect(),
            rows,
        }
    }

    /// The table in the first layout that fits: full, compact cells, then without borders.
    fn table(&self, t: &TargetReport, focus: Option<&str>) -> String {
        let full = self.grid(t, false, focus);
        if full.bordered_width() <= self.width {
            return full.render(true, self.color);
        }
        let compact = self.grid(t, true, focus);
        let mut s = if compact.bordered_width() <= self.width {
            compact.render(true, self.color)
        } else if compact.plain_width() <= self.width {
            compact.render(false, self.color)
        } else {
            let mut g = compact;
            g.narrow_last(self.width);
            g.render(false, self.color)
        };
        if t.observation.host.is_some() {
            s.push_str("(CADDY, UPSTREAM: asked from the PVE host; times left out to fit)\n");
        } else {
            s.push_str("(times left out to fit)\n");
        }
        s
    }

    fn target(&self, out: &mut String, t: &TargetReport, report: &Report) {
        let o = &t.observation;
        let v = &t.verdict;
        let focus = report
            .focus
            .as_ref()
            .filter(|f| f.vmid == o.vmid)
            .map(|f| f.service.as_str());
        let template = t
            .routing
            .as_ref()
            .map_or(report.template.as_str(), |r| r.url_template.as_str());
        let instance = t
            .routing
            .as_ref()
            .map_or_else(|| format!("cmux-{}", o.vmid), |r| r.instance.clone());
        let head = format!(
            "VMID {} — {} — {}",
            o.vmid,
            template
                .replace("{vmid}", &o.vmid.to_string())
                .replace("{instance}", &instance)
                .replace("{domain}", &report.domain),
            v.worst().as_str()
        );
        self.push_wrapped(out, &head, "", "  ", Some(status_style(v.worst())));
        if let Some(r) = &t.routing {
            self.push_wrapped(
                out,
                &format!("routing: {} generation — {}", r.generation, r.why),
                "",
                "  ",
                None,
            );
            if r.generation == crate::generation::Generation::Y2026 {
                self.push_wrapped(
                    out,
                    &format!("instance: {} (from {})", r.instance, r.instance_source),
                    "",
                    "  ",
                    None,
                );
            }
        }
        if let Some(f) = focus {
            self.push_wrapped(
                out,
                &format!("asked about: {f} (▸); the whole sandbox is diagnosed"),
                "",
                "  ",
                None,
            );
        }
        out.push_str(&self.table(t, focus));
        if let Some(h) = &o.host {
            self.push_wrapped(
                out,
                &format!(
                    "host vantage ({}): Caddy at {}; cloudflared /ready: {}",
                    h.vantage,
                    h.caddy_url,
                    probe_cell(&h.cloudflared)
                ),
                "",
                "  ",
                None,
            );
            if let crate::observation::ExecRun::Failed { message, .. } = &h.run {
                self.push_wrapped(
                    out,
                    &format!("the host script failed: {message}"),
                    "  ",
                    "    ",
                    Some(status_style(Status::Inconclusive)),
                );
            }
        }
        if let Some(g) = &v.edge_gate {
            self.push_wrapped(
                out,
                &format!("edge gate: {}", g.summary),
                "",
                "  ",
                Some(status_style(Status::Inconclusive)),
            );
            for e in &g.evidence {
                self.push_wrapped(out, e, "  · ", "    ", None);
            }
            if !g.services.is_empty() {
                self.push_wrapped(
                    out,
                    &format!(
                        "stopped there: {} (nothing behind the edge observed from outside)",
                        g.services.join(", ")
                    ),
                    "  · ",
                    "    ",
                    None,
                );
            }
            self.push_next(out, "next", &g.next_step, None);
        }
        self.push_wrapped(
            out,
            &format!("exec channel: {}", v.exec.summary),
            "",
            "  ",
            Some(status_style(v.exec.status)),
        );
        if let Some(n) = &v.exec.next_step {
            self.push_next(out, "next", n, None);
        }
        let names: Vec<&str> = o.services.iter().map(|s| s.name.as_str()).collect();
        // Said once above, in the edge gate, when the internal view adds nothing.
        let behind_gate = |k: usize| {
            v.services[k].rule.starts_with("edge-")
                && matches!(o.services[k].internal, Probe::NotRun { .. })
                && o.host.is_none()
        };
        let gate_next = v.edge_gate.as_ref().map(|g| g.next_step.as_str());
        for g in group::group(&names, &v.services) {
            if g.members.iter().all(|&k| behind_gate(k)) {
                continue;
            }
            out.push('\n');
            self.block(out, &g, &names, &v.services, focus, gate_next);
        }
        for (so, sv) in o.services.iter().zip(&v.services) {
            if sv.status == Status::Skipped {
                out.push('\n');
                self.push_wrapped(
                    out,
                    &format!("– {}: {}", so.name, sv.summary),
                    "",
                    "  ",
                    None,
                );
            }
        }
    }

    /// One diagnosis block: one root cause, the services that have it, the evidence once, one next
    /// step; per-service lines only for what differs.
    fn block(
        &self,
        out: &mut String,
        g: &Group,
        names: &[&str],
        vs: &[Verdict],
        focus: Option<&str>,
        gate_next: Option<&str>,
    ) {
        let first = &vs[g.members[0]];
        let status = g.key.status;
        let member_names: Vec<String> = g
            .members
            .iter()
            .map(|&m| {
                if focus == Some(names[m]) {
                    format!("▸ {}", names[m])
                } else {
                    names[m].to_string()
                }
            })
            .collect();
        let title = if g.members.len() == 1 {
            format!(
                "{} {} — {}",
                mark(status),
                member_names[0],
                verdict_cell(first)
            )
        } else {
            format!(
                "{} {} — {} services: {}",
                mark(status),
                verdict_cell(first),
                g.members.len(),
                member_names.join(", ")
            )
        };
        self.push_wrapped(out, &title, "", "  ", Some(status_style(status)));
        let one = g.members.len() == 1;
        if g.same_summary {
            self.push_wrapped(out, &first.summary, "  ", "  ", None);
        } else {
            for &m in &g.members {
                self.push_wrapped(
                    out,
                    &format!("{}: {}", names[m], vs[m].summary),
                    "  ",
                    "    ",
                    None,
                );
            }
        }
        if !first.candidates.is_empty() {
            self.push_wrapped(
                out,
                "the hop is not pinned; candidates, most likely first:",
                "  ",
                "    ",
                None,
            );
            for c in &first.candidates {
                self.push_wrapped(
                    out,
                    &format!("{} — {}", c.layer.as_str(), c.check),
                    "    ",
                    "      ",
                    None,
                );
            }
        }
        // Shared evidence: identical lines first, then lines alike in shape, shown once as seen
        // for the first service.
        let said = |l: &group::SharedLine| &vs[g.members[l.holders[0]]].evidence[l.index];
        for l in g.shared_evidence.iter().filter(|l| l.identical || one) {
            self.push_wrapped(out, said(l), "  · ", "    ", None);
        }
        // Lines alike in shape (URLs, numbers differ): once per set of services that have them,
        // as the first of them says it.
        let mut sets: Vec<&Vec<usize>> = Vec::new();
        for l in g.shared_evidence.iter().filter(|l| !l.identical && !one) {
            if !sets.contains(&&l.holders) {
                sets.push(&l.holders);
            }
        }
        for holders in sets {
            let first_name = names[g.members[holders[0]]];
            let others = if holders.len() == g.members.len() {
                "the others alike".to_string()
            } else {
                let rest: Vec<&str> = holders[1..].iter().map(|&k| names[g.members[k]]).collect();
                format!("alike for {}", rest.join(", "))
            };
            self.push_wrapped(
                out,
                &format!("as seen for {first_name} ({others}):"),
                "  ",
                "    ",
                None,
            );
            for l in g
                .shared_evidence
                .iter()
                .filter(|l| !l.identical && &l.holders == holders)
            {
                self.push_wrapped(out, said(l), "  · ", "    ", None);
            }
        }
        for (k, &m) in g.members.iter().enumerate() {
            for &i in &g.own_evidence[k] {
                let text = if one {
                    vs[m].evidence[i].clone()
                } else {
                    format!("{}: {}", names[m], vs[m].evidence[i])
                };
                self.push_wrapped(out, &text, "  · ", "    ", None);
            }
        }
        // The gate's fix is said once, with the edge gate.
        let said_above = |n: &String| gate_next == Some(n.as_str());
        if g.same_next_step {
            if let Some(n) = first.next_step.as_ref().filter(|n| !said_above(n)) {
                self.push_next(out, "next", n, Some(Style::Bold));
            }
        } else {
            for &m in &g.members {
                if let Some(n) = vs[m].next_step.as_ref().filter(|n| !said_above(n)) {
                    self.push_next(out, &format!("next ({})", names[m]), n, Some(Style::Bold));
                }
            }
        }
    }
}

fn mark(s: Status) -> &'static str {
    match s {
        Status::Broken => "✗",
        Status::Degraded => "!",
        Status::Inconclusive => "?",
        Status::Skipped => "–",
        Status::Healthy => "✓",
    }
}

impl Format for TableFormat {
    fn render(&self, report: &Report) -> String {
        let mut out = String::new();
        for (i, t) in report.targets.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            self.target(&mut out, t, report);
        }
        if let Some(c) = &report.caddy {
            out.push('\n');
            self.push_wrapped(
                &mut out,
                &format!("Caddy configuration: {}", c.source),
                "",
                "  ",
                None,
            );
            if let Some(e) = &c.error {
                self.push_wrapped(
                    &mut out,
                    &format!("could not be read: {e}"),
                    "  ",
                    "    ",
                    Some(status_style(Status::Inconclusive)),
                );
            }
            for f in &c.findings {
                let text = if f.line == 0 {
                    // Not a line of a file (the admin API's JSON, a live probe).
                    format!("{}: {}", f.file, f.message)
                } else {
                    format!("{}:{}: {}", f.file, f.line, f.message)
                };
                self.push_wrapped(&mut out, &text, "  ", "    ", None);
            }
            if c.error.is_none() && c.findings.is_empty() {
                out.push_str("  no findings\n");
            }
        }
        if !report.skipped_targets.is_empty() {
            out.push_str("\nnot diagnosed:\n");
            for s in &report.skipped_targets {
                self.push_wrapped(
                    &mut out,
                    &format!("– {} {}: {}", s.vmid, s.name, s.reason),
                    "  ",
                    "    ",
                    None,
                );
            }
        }
        let unfinished = super::unfinished_checks(report);
        if !unfinished.is_empty() {
            out.push('\n');
            self.push_wrapped(
                &mut out,
                &format!(
                    "unfinished checks ({}): {}",
                    unfinished.len(),
                    unfinished.join(", ")
                ),
                "",
                "  ",
                None,
            );
        }
        // Across targets: identical causes once, with the sandboxes that have them.
        if report.targets.len() > 1 {
            let per: Vec<(u32, Vec<&str>, &[Verdict])> = report
                .targets
                .iter()
                .map(|t| {
                    (
                        t.observation.vmid,
                        t.observation
                            .services
                            .iter()
                            .map(|s| s.name.as_str())
                            .collect(),
                        t.verdict.services.as_slice(),
                    )
                })
                .collect();
            let causes = group::across_targets(&per);
            if !causes.is_empty() {
                out.push_str("\ncauses:\n");
                for (key, vmids) in causes {
                    let example = report
                        .targets
                        .iter()
                        .find(|t| t.observation.vmid == vmids[0])
                        .and_then(|t| {
                            t.observation
                                .services
                                .iter()
                                .zip(&t.verdict.services)
                                .find(|(so, sv)| group::CauseKey::of(&so.name, sv).same_cause(&key))
                                .map(|(_, sv)| sv.summary.clone())
                        })
                        .unwrap_or_default();
                    let list: Vec<String> = vmids.iter().map(|v| v.to_string()).collect();
                    let n = vmids.len();
                    let line = format!(
                        "{}: {n} sandbox{} ({}) — {example}",
                        key.label(),
                        if n == 1 { "" } else { "es" },
                        list.join(", ")
                    );
                    self.push_wrapped(
                        &mut out,
                        &line,
                        "  ",
                        "    ",
                        Some(status_style(key.status)),
                    );
                }
            }
        }
        let counts: Vec<String> = report
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        out.push('\n');
        let summary = format!(
            "{} target(s): {} — {}, exit {}",
            report.targets.len(),
            counts.join(", "),
            report.timing_phrase(),
            report.exit_code()
        );
        self.push_wrapped(
            &mut out,
            &summary,
            "",
            "  ",
            Some(status_style(report.worst())),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_steps_are_cut_between_commands_never_inside_quotes() {
        assert_eq!(
            next_step_parts(
                "edit F line 17: the route — sed -i '17s/a; b/c/' F; then systemctl reload caddy-cmux"
            ),
            [
                "edit F line 17: the route —",
                "sed -i '17s/a; b/c/' F;",
                "then systemctl reload caddy-cmux"
            ]
        );
        assert_eq!(
            next_step_parts(
                "on the PVE host: systemctl status cloudflared; curl -s http://x/ready"
            ),
            [
                "on the PVE host:",
                "systemctl status cloudflared;",
                "curl -s http://x/ready"
            ]
        );
        assert_eq!(next_step_parts("pct start 202"), ["pct start 202"]);
    }

    #[test]
    fn text_wraps_at_spaces_with_a_hanging_indent() {
        let text = "external https://xterm-202.example.test/sessions: 502 from the edge";
        assert_eq!(
            fill(text, 50, "  · ", "    "),
            [
                "  · external",
                "    https://xterm-202.example.test/sessions: 502",
                "    from the edge"
            ]
        );
        // Only a word longer than a whole line is cut.
        let narrow = fill(text, 40, "  · ", "    ");
        assert!(narrow.iter().all(|l| l.chars().count() <= 40), "{narrow:?}");
    }
}
