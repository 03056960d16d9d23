//! The human format: a table per target, then a diagnosis block for every service that is not healthy.

use colored::Colorize;
use comfy_table::{presets, Cell, Color, ContentArrangement, Table};

use super::{Format, Report, TargetReport};
use crate::observation::Probe;
use crate::verdict::{Status, Verdict};

pub struct TableFormat {
    pub color: bool,
}

fn status_color(s: Status) -> Color {
    match s {
        Status::Healthy => Color::Green,
        Status::Skipped => Color::DarkGrey,
        Status::Inconclusive => Color::Yellow,
        Status::Degraded => Color::Yellow,
        Status::Broken => Color::Red,
    }
}

fn paint(text: &str, s: Status, on: bool) -> String {
    if !on {
        return text.to_string();
    }
    match s {
        Status::Healthy => text.green().to_string(),
        Status::Skipped => text.dimmed().to_string(),
        Status::Inconclusive | Status::Degraded => text.yellow().bold().to_string(),
        Status::Broken => text.red().bold().to_string(),
    }
}

/// A short cell for one probe: `200 · 35 ms`, `502 cloudflare`, `refused`.
pub fn probe_cell(p: &Probe) -> String {
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
            let who = match response.header("server") {
                Some(s) if s.eq_ignore_ascii_case("cloudflare") && response.status >= 500 => {
                    let code = crate::verdict::cloudflare_error_code(&response.body);
                    match code {
                        Some(c) if c != response.status.to_string() => format!(" cloudflare {c}"),
                        _ => " cloudflare".into(),
                    }
                }
                Some(s) if s.eq_ignore_ascii_case("caddy") && response.body.trim().is_empty() => {
                    " caddy".into()
                }
                _ => String::new(),
            };
            format!("{}{who} · {elapsed_ms} ms", response.status)
        }
    }
}

/// `broken (caddy)` when the layer is pinned, `broken (caddy|service)` between candidates.
pub fn verdict_cell(v: &Verdict) -> String {
    let layers = v.layer_label();
    if layers.is_empty() {
        v.status.as_str().to_string()
    } else {
        format!("{} ({layers})", v.status.as_str())
    }
}

impl TableFormat {
    fn target(&self, out: &mut String, t: &TargetReport, report: &Report) {
        let o = &t.observation;
        let v = &t.verdict;
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
        out.push_str(&paint(&head, v.worst(), self.color));
        out.push('\n');
        if let Some(r) = &t.routing {
            out.push_str(&format!(
                "routing: {} generation — {}\n",
                r.generation, r.why
            ));
            if r.generation == crate::generation::Generation::Y2026 {
                out.push_str(&format!(
                    "instance: {} (from {})\n",
                    r.instance, r.instance_source
                ));
            }
        }
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_FULL_CONDENSED)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header(if o.host.is_some() {
                vec![
                    "SERVICE",
                    "PORT",
                    "EXTERNAL",
                    "CADDY (HOST)",
                    "UPSTREAM (HOST)",
                    "INTERNAL",
                    "VERDICT",
                ]
            } else {
                vec!["SERVICE", "PORT", "EXTERNAL", "INTERNAL", "VERDICT"]
            });
        if self.color {
            table.enforce_styling();
        } else {
            table.force_no_tty();
        }
        for (so, sv) in o.services.iter().zip(&v.services) {
            let mut vc = Cell::new(verdict_cell(sv));
            if self.color {
                vc = vc.fg(status_color(sv.status));
            }
            let mut cells = vec![
                Cell::new(&so.name),
                Cell::new(so.port),
                Cell::new(probe_cell(&so.external)),
            ];
            if let Some(h) = &o.host {
                let hs = h.services.iter().find(|x| x.name == so.name);
                cells.push(Cell::new(hs.map_or("—".into(), |x| probe_cell(&x.caddy))));
                cells.push(Cell::new(
                    hs.map_or("—".into(), |x| probe_cell(&x.upstream)),
                ));
            }
            cells.push(Cell::new(probe_cell(&so.internal)));
            cells.push(vc);
            table.add_row(cells);
        }
        out.push_str(&table.to_string());
        out.push('\n');
        if let Some(h) = &o.host {
            out.push_str(&format!(
                "host vantage ({}): Caddy at {}; cloudflared /ready: {}\n",
                h.vantage,
                h.caddy_url,
                probe_cell(&h.cloudflared)
            ));
            if let crate::observation::ExecRun::Failed { message, .. } = &h.run {
                out.push_str(&paint(
                    &format!("  the host script failed: {message}"),
                    Status::Inconclusive,
                    self.color,
                ));
                out.push('\n');
            }
        }
        let exec_line = format!("exec channel: {}", v.exec.summary);
        out.push_str(&paint(&exec_line, v.exec.status, self.color));
        out.push('\n');
        if let Some(n) = &v.exec.next_step {
            out.push_str(&format!("  next: {n}\n"));
        }
        for (so, sv) in o.services.iter().zip(&v.services) {
            if matches!(sv.status, Status::Healthy | Status::Skipped) {
                continue;
            }
            out.push('\n');
            let title = format!("{} {} — {}", mark(sv.status), so.name, verdict_cell(sv));
            out.push_str(&paint(&title, sv.status, self.color));
            out.push('\n');
            out.push_str(&format!("  {}\n", sv.summary));
            if !sv.candidates.is_empty() {
                out.push_str("  the hop is not pinned; candidates, most likely first:\n");
                for c in &sv.candidates {
                    out.push_str(&format!("    {} — {}\n", c.layer.as_str(), c.check));
                }
            }
            for e in &sv.evidence {
                out.push_str(&format!("  · {e}\n"));
            }
            if let Some(n) = &sv.next_step {
                let line = format!("  next: {n}");
                out.push_str(&if self.color {
                    line.bold().to_string()
                } else {
                    line
                });
                out.push('\n');
            }
        }
        for (so, sv) in o.services.iter().zip(&v.services) {
            if sv.status == Status::Skipped {
                out.push_str(&format!("\n– {}: {}\n", so.name, sv.summary));
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
            out.push_str(&format!("\nCaddy configuration: {}\n", c.source));
            if let Some(e) = &c.error {
                out.push_str(&paint(
                    &format!("  could not be read: {e}"),
                    Status::Inconclusive,
                    self.color,
                ));
                out.push('\n');
            }
            for f in &c.findings {
                if f.line == 0 {
                    // Not a line of a file (the admin API's JSON, a live probe).
                    out.push_str(&format!("  {}: {}\n", f.file, f.message));
                } else {
                    out.push_str(&format!("  {}:{}: {}\n", f.file, f.line, f.message));
                }
            }
            if c.error.is_none() && c.findings.is_empty() {
                out.push_str("  no findings\n");
            }
        }
        if !report.skipped_targets.is_empty() {
            out.push_str("\nnot diagnosed:\n");
            for s in &report.skipped_targets {
                out.push_str(&format!("  – {} {}: {}\n", s.vmid, s.name, s.reason));
            }
        }
        let unfinished = super::unfinished_checks(report);
        if !unfinished.is_empty() {
            out.push_str(&format!(
                "\nunfinished checks ({}): {}\n",
                unfinished.len(),
                unfinished.join(", ")
            ));
        }
        let counts: Vec<String> = report
            .counts()
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(s, n)| format!("{n} {}", s.as_str()))
            .collect();
        out.push_str(&format!(
            "\n{} target(s): {} — {:.2} s, exit {}\n",
            report.targets.len(),
            counts.join(", "),
            report.duration_ms as f64 / 1000.0,
            report.exit_code()
        ));
        out
    }
}
