//! `--format junit`: JUnit XML for CI test reports (GitLab, GitHub). One `<testsuite>` per target, one
//! `<testcase>` per service plus one for the exec channel, the diagnosis in the failure message.

use std::fmt::Write as _;

use super::{Format, Report};
use crate::observation::Probe;
use crate::verdict::{ChannelVerdict, Status, Verdict};

pub struct Junit;

/// A char XML 1.0 allows (`Char` production); others are replaced by U+FFFD.
fn xml_char_ok(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text for element content: `& < >`, forbidden characters replaced by U+FFFD.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if xml_char_ok(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

/// Escapes text for a double-quoted attribute: also `"` `'`, and tab/newlines as character
/// references (attribute normalisation would turn them into spaces).
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\t' => out.push_str("&#9;"),
            '\n' => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            c if xml_char_ok(c) => out.push(c),
            _ => out.push('\u{FFFD}'),
        }
    }
    out
}

fn seconds(p: &Probe) -> f64 {
    match p {
        Probe::Response { elapsed_ms, .. } | Probe::Failed { elapsed_ms, .. } => {
            *elapsed_ms as f64 / 1000.0
        }
        Probe::NotRun { .. } => 0.0,
    }
}

/// `broken (caddy): summary`
fn message(v: &Verdict) -> String {
    format!("{}: {}", super::table::verdict_cell(v), v.summary)
}

/// The failure message with what changed since the last healthy run (docs/state.md).
fn with_changes(msg: String, state: Option<&crate::state::TargetState>, service: &str) -> String {
    let Some(since) = state.and_then(|s| s.since_last_healthy.as_ref()) else {
        return msg;
    };
    let changes = since.for_service(service);
    if changes.is_empty() {
        return msg;
    }
    format!("{msg}; {}", since.evidence_line(changes))
}

fn body(v: &Verdict) -> String {
    let mut b = String::new();
    for c in &v.candidates {
        let _ = writeln!(b, "candidate {}: {}", c.layer.as_str(), c.check);
    }
    for e in &v.evidence {
        let _ = writeln!(b, "- {e}");
    }
    if let Some(n) = &v.next_step {
        let _ = writeln!(b, "next: {n}");
    }
    let _ = write!(b, "rule: {}", v.rule);
    b
}

#[derive(Default)]
struct Counts {
    tests: usize,
    failures: usize,
    errors: usize,
    skipped: usize,
}

impl Counts {
    fn add(&mut self, s: Status) {
        self.tests += 1;
        match s {
            Status::Broken | Status::Degraded => self.failures += 1,
            Status::Inconclusive => self.errors += 1,
            Status::Skipped => self.skipped += 1,
            Status::Healthy => {}
        }
    }
    fn attrs(&self) -> String {
        format!(
            "tests=\"{}\" failures=\"{}\" errors=\"{}\" skipped=\"{}\"",
            self.tests, self.failures, self.errors, self.skipped
        )
    }
}

#[allow(clippy::too_many_arguments)]
fn testcase(
    out: &mut String,
    class: &str,
    name: &str,
    time: f64,
    status: Status,
    msg: &str,
    kind: &str,
    text: &str,
) {
    let _ = write!(
        out,
        "    <testcase classname=\"{}\" name=\"{}\" time=\"{time:.3}\"",
        escape_attr(class),
        escape_attr(name)
    );
    let tag = match status {
        Status::Healthy => {
            out.push_str("/>\n");
            return;
        }
        Status::Broken | Status::Degraded => "failure",
        Status::Inconclusive => "error",
        Status::Skipped => "skipped",
    };
    out.push_str(">\n");
    if tag == "skipped" {
        let _ = writeln!(out, "      <skipped message=\"{}\"/>", escape_attr(msg));
    } else {
        let _ = writeln!(
            out,
            "      <{tag} message=\"{}\" type=\"{}\">{}</{tag}>",
            escape_attr(msg),
            escape_attr(kind),
            escape_text(text)
        );
    }
    out.push_str("    </testcase>\n");
}

fn channel_case(out: &mut String, class: &str, v: &ChannelVerdict) {
    let msg = format!("{}: {}", v.status.as_str(), v.summary);
    let text = v
        .next_step
        .as_deref()
        .map(|n| format!("next: {n}"))
        .unwrap_or_default();
    testcase(
        out,
        class,
        "exec-channel",
        0.0,
        v.status,
        &msg,
        "exec-channel",
        &text,
    );
}

impl Format for Junit {
    fn render(&self, report: &Report) -> String {
        let mut suites = String::new();
        let mut total = Counts::default();
        for t in &report.targets {
            let o = &t.observation;
            let class = format!("pvediag.vmid{}", o.vmid);
            let mut counts = Counts::default();
            let mut cases = String::new();
            let mut time = 0.0f64;
            for (so, sv) in o.services.iter().zip(&t.verdict.services) {
                let secs = seconds(&so.external).max(seconds(&so.internal));
                time = time.max(secs);
                counts.add(sv.status);
                let layers = sv.layer_label();
                let kind = if layers.is_empty() {
                    sv.status.as_str()
                } else {
                    &layers
                };
                testcase(
                    &mut cases,
                    &class,
                    &so.name,
                    secs,
                    sv.status,
                    &with_changes(message(sv), t.state.as_ref(), &so.name),
                    kind,
                    &body(sv),
                );
            }
            counts.add(t.verdict.exec.status);
            channel_case(&mut cases, &class, &t.verdict.exec);
            let _ = write!(
                suites,
                "  <testsuite name=\"vmid{}\" {} time=\"{time:.3}\">\n{cases}  </testsuite>\n",
                o.vmid,
                counts.attrs()
            );
            total.tests += counts.tests;
            total.failures += counts.failures;
            total.errors += counts.errors;
            total.skipped += counts.skipped;
        }
        for s in &report.skipped_targets {
            let mut counts = Counts::default();
            counts.add(Status::Skipped);
            let mut cases = String::new();
            let class = format!("pvediag.vmid{}", s.vmid);
            let msg = format!("{} not diagnosed: {}", s.name, s.reason);
            testcase(
                &mut cases,
                &class,
                "target",
                0.0,
                Status::Skipped,
                &msg,
                "",
                "",
            );
            let _ = write!(
                suites,
                "  <testsuite name=\"vmid{}\" {} time=\"0.000\">\n{cases}  </testsuite>\n",
                s.vmid,
                counts.attrs()
            );
            total.tests += 1;
            total.skipped += 1;
        }
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"pvediag\" {} time=\"{:.3}\">\n{suites}</testsuites>\n",
            total.attrs(),
            report.duration_ms as f64 / 1000.0
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_hostile_strings() {
        let hostile = "a<b>&\"c'\u{0}\u{1b}[31m\u{7}\u{FFFE}\tx\ny\r]]>";
        let t = escape_text(hostile);
        assert_eq!(
            t,
            "a&lt;b&gt;&amp;\"c'\u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD}\tx\ny\r]]&gt;"
        );
        let a = escape_attr(hostile);
        assert_eq!(
            a,
            "a&lt;b&gt;&amp;&quot;c&apos;\u{FFFD}\u{FFFD}[31m\u{FFFD}\u{FFFD}&#9;x&#10;y&#13;]]&gt;"
        );
        assert_eq!(escape_attr("ünïcødé 😀"), "ünïcødé 😀");
    }
}
