//! `pvediag history VMID`: the recent transitions of a target, from the state directory.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::{json, Value};

use super::store::{Loaded, StateFile, Store};
use super::{fmt_time, rfc3339};

/// What the state directory holds about one VMID: one entry per domain it was diagnosed under,
/// and the files that could not be read.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    pub(crate) targets: Vec<StateFile>,
    pub(crate) unreadable: Vec<(PathBuf, String)>,
}

/// Reads every record of `vmid` (under `domain` only, when given).
pub(crate) fn load(store: &Store, vmid: u32, domain: Option<&str>) -> History {
    let mut h = History::default();
    let found = match domain {
        Some(d) => vec![(store.path(d, vmid), store.load(d, vmid))],
        None => store.find(vmid),
    };
    for (p, l) in found {
        match l {
            Loaded::Ok(s) => h.targets.push(*s),
            Loaded::Unreadable(why) => h.unreadable.push((p, why)),
            Loaded::Absent => {}
        }
    }
    h
}

/// The text view: per domain, the current status, the last healthy run and the transitions,
/// newest first, at most `limit`.
pub(crate) fn render_text(h: &History, limit: usize) -> String {
    let mut out = String::new();
    for s in &h.targets {
        let _ = writeln!(
            out,
            "{} on {}: {} at the last run ({}); last healthy: {}",
            s.vmid,
            s.domain,
            s.last.status,
            fmt_time(s.last.at),
            s.last_healthy
                .as_ref()
                .map(|r| fmt_time(r.at))
                .unwrap_or_else(|| "never recorded".into())
        );
        for t in s.transitions.iter().rev().take(limit) {
            let from = t.from.as_deref().unwrap_or("(first run)");
            let _ = writeln!(out, "  {}  {from} → {}  {}", fmt_time(t.at), t.to, t.cause);
        }
        if s.transitions.len() > limit {
            let _ = writeln!(
                out,
                "  … {} earlier transitions (--limit N shows more)",
                s.transitions.len() - limit
            );
        }
    }
    out
}

/// The JSON view (docs/state.md).
pub(crate) fn render_json(h: &History, limit: usize) -> Value {
    let targets: Vec<Value> = h
        .targets
        .iter()
        .map(|s| {
            let transitions: Vec<Value> = s
                .transitions
                .iter()
                .rev()
                .take(limit)
                .map(|t| {
                    json!({
                        "at": rfc3339(t.at),
                        "at_unix": t.at,
                        "from": t.from,
                        "to": t.to,
                        "cause": t.cause,
                    })
                })
                .collect();
            json!({
                "vmid": s.vmid,
                "domain": s.domain,
                "status": s.last.status,
                "last_run": rfc3339(s.last.at),
                "last_run_unix": s.last.at,
                "last_healthy": s.last_healthy.as_ref().map(|r| rfc3339(r.at)),
                "last_healthy_unix": s.last_healthy.as_ref().map(|r| r.at),
                "transitions": transitions,
            })
        })
        .collect();
    let unreadable: Vec<Value> = h
        .unreadable
        .iter()
        .map(|(p, why)| json!({"file": p.display().to_string(), "reason": why}))
        .collect();
    json!({
        "schema_version": 1,
        "targets": targets,
        "unreadable": unreadable,
    })
}

/// `pvediag history VMID`: the text or JSON view and the exit code (0; 2 when nothing is recorded
/// for the VMID, with a one-line reason on stderr).
pub(crate) fn run(
    dir: &std::path::Path,
    vmid: u32,
    domain: Option<&str>,
    json: bool,
    limit: usize,
) -> (String, Vec<String>, u8) {
    let h = load(&Store::new(dir), vmid, domain);
    let mut notes: Vec<String> = h
        .unreadable
        .iter()
        .map(|(p, why)| format!("state: {}: {why}; ignored", p.display()))
        .collect();
    let out = if json {
        let mut s = serde_json::to_string_pretty(&render_json(&h, limit)).unwrap_or_default();
        s.push('\n');
        s
    } else {
        render_text(&h, limit)
    };
    if h.targets.is_empty() {
        notes.push(format!(
            "error: nothing recorded for {vmid}{} in {}: diagnose it first (the state directory is written after every run unless --no-state)",
            domain.map(|d| format!(" on {d}")).unwrap_or_default(),
            dir.display()
        ));
        return (
            if json { out } else { String::new() },
            notes,
            crate::exit::USAGE,
        );
    }
    (out, notes, crate::exit::OK)
}

/// `pvediag history` from its arguments: prints and returns the exit code.
pub fn command(args: &crate::cli::HistoryArgs) -> Result<u8, crate::cli::UsageError> {
    let dir = match &args.state_dir {
        Some(d) => d.clone(),
        None => super::default_dir_here().ok_or_else(|| {
            crate::cli::UsageError::new(
                "history: no state directory: give --state-dir DIR (there is no HOME to find the default in)",
            )
        })?,
    };
    let json = matches!(args.format, crate::cli::LintFormat::Json);
    let (out, notes, code) = run(
        &dir,
        args.vmid,
        args.domain.as_deref(),
        json,
        args.limit as usize,
    );
    for n in notes {
        eprintln!("pvediag: {n}");
    }
    print!("{out}");
    Ok(code)
}
