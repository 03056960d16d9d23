//! What changed since it last worked: per target, a small record of each run's facts and
//! verdicts in a state directory, the last-known-good record, and the diff that explains a broken
//! verdict (docs/state.md).
//!
//! - [`record`] — facts and verdicts of one run (pure);
//! - [`diff`] — what changed between two records and what bears on a verdict (pure);
//! - [`store`] — the directory on disk (atomic writes, lock, unreadable files);
//! - [`history`] — `pvediag history VMID`.
//!
//! [`next_state`] and [`assess`] are pure; [`apply`] is the thin edge that reads and writes files.
//! State knows observations, verdicts and its own records, not the report: `run::record_state`
//! hands it each target of a report.

pub(crate) mod diff;
pub mod history;
pub mod record;
pub mod store;

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::observation::TargetObservation;
use crate::verdict::{Status, TargetVerdict};
use diff::{Change, VerdictView};
use record::{is_healthy, Record};
use store::{Loaded, StateFile, Store, Transition, MAX_TRANSITIONS};

/// `2026-11-30 14:02 UTC`.
pub(crate) fn fmt_time(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute()
        ),
        Err(_) => format!("@{unix}"),
    }
}

/// `2026-11-30T14:02:05Z` (RFC 3339), for JSON.
pub(crate) fn rfc3339(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

/// The current time in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The default state directory: `/var/lib/pvediag` for root, else `$XDG_STATE_HOME/pvediag` or
/// `~/.local/state/pvediag`. None when there is no home to put it in.
pub(crate) fn default_dir(
    is_root: bool,
    xdg_state_home: Option<&str>,
    home: Option<&str>,
) -> Option<PathBuf> {
    if is_root {
        return Some(PathBuf::from("/var/lib/pvediag"));
    }
    // The XDG spec: a relative path is invalid and must be ignored.
    if let Some(x) = xdg_state_home.filter(|x| Path::new(x).is_absolute()) {
        return Some(Path::new(x).join("pvediag"));
    }
    home.filter(|h| Path::new(h).is_absolute())
        .map(|h| Path::new(h).join(".local/state/pvediag"))
}

/// Whether this process runs as root (effective UID 0).
pub(crate) fn running_as_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The default state directory for this process and environment.
pub(crate) fn default_dir_here() -> Option<PathBuf> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    default_dir(
        running_as_root(),
        env("XDG_STATE_HOME").as_deref(),
        env("HOME").as_deref(),
    )
}

/// Where this run keeps its state: `--no-state` gives None; `--state-dir DIR` is created now (a
/// one-line error when it cannot be: the user asked for it); otherwise the default directory, made
/// when the first record is written (a failure there is only a note: the diagnosis stands).
pub(crate) fn choose_dir(
    state_dir: Option<&Path>,
    no_state: bool,
) -> Result<Option<PathBuf>, String> {
    if no_state {
        return Ok(None);
    }
    match state_dir {
        Some(d) => {
            if d.as_os_str().is_empty() {
                return Err("--state-dir \"\": not a directory path".into());
            }
            Store::new(d)
                .ensure()
                .map_err(|e| format!("--state-dir {}: {e}", d.display()))?;
            Ok(Some(d.to_path_buf()))
        }
        None => Ok(default_dir_here()),
    }
}

/// What the state directory says about one target in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct TargetState {
    /// The last time the target was healthy (this run included), Unix seconds.
    pub(crate) last_healthy_at: Option<i64>,
    /// When this run is not healthy and a healthy run was recorded: what changed since.
    pub(crate) since_last_healthy: Option<SinceHealthy>,
}

/// What changed since the last healthy run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SinceHealthy {
    /// The last healthy run, Unix seconds and RFC 3339.
    pub(crate) at_unix: i64,
    pub(crate) at: String,
    /// Every recorded fact that changed (observed in both runs).
    pub(crate) changes: Vec<Change>,
    /// Per service verdict (in the report's order): the changes that bear on it.
    pub(crate) services: Vec<ServiceChanges>,
    /// Facts the healthy run saw that this run could not, so they were not compared.
    pub(crate) not_compared: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ServiceChanges {
    pub(crate) service: String,
    pub(crate) changes: Vec<Change>,
}

impl SinceHealthy {
    /// The changes that bear on one service's verdict.
    pub(crate) fn for_service(&self, name: &str) -> &[Change] {
        self.services
            .iter()
            .find(|s| s.service == name)
            .map(|s| s.changes.as_slice())
            .unwrap_or(&[])
    }

    /// `since the last healthy run (2026-11-30 14:02 UTC): A; B`.
    pub(crate) fn evidence_line(&self, changes: &[Change]) -> String {
        let head = format!("since the last healthy run ({})", fmt_time(self.at_unix));
        let mut line = if changes.is_empty() {
            format!("{head}: none of the recorded facts that bear on this verdict changed")
        } else {
            let parts: Vec<String> = changes.iter().map(|c| c.describe()).collect();
            format!("{head}: {}", parts.join("; "))
        };
        if !self.not_compared.is_empty() {
            line.push_str(&format!(
                " (not seen in this run, so not compared: {})",
                self.not_compared.join(", ")
            ));
        }
        line
    }
}

/// One target of this run as the state directory sees it: what was observed, its verdicts (what
/// changed since the last healthy run is added to their evidence) and the record to keep.
pub(crate) struct TargetRun<'a> {
    pub(crate) observation: &'a TargetObservation,
    pub(crate) verdict: &'a mut TargetVerdict,
    pub(crate) record: &'a Record,
    /// Set when the run is recorded: what the state directory says about the target.
    pub(crate) state: &'a mut Option<TargetState>,
}

/// The verdict views of a target, for the relevance test.
fn views<'t>(observation: &'t TargetObservation, verdict: &TargetVerdict) -> Vec<VerdictView<'t>> {
    let internal_missing = !observation.exec.internal_ran();
    observation
        .services
        .iter()
        .zip(&verdict.services)
        .map(|(s, v)| VerdictView {
            service: &s.name,
            port: s.port,
            status: v.status,
            layers: record::verdict_layers(v),
            internal_missing,
        })
        .collect()
}

/// What the previous state and this run's record say about the target. Pure.
pub(crate) fn assess(prev: Option<&StateFile>, rec: &Record, views: &[VerdictView]) -> TargetState {
    let healthy_now = is_healthy(&rec.status);
    let lkg = prev.and_then(|p| p.last_healthy.as_ref());
    let last_healthy_at = if counts_as_healthy(lkg, rec) {
        Some(rec.at)
    } else {
        lkg.map(|r| r.at)
    };
    let since_last_healthy = match lkg {
        Some(good) if !healthy_now => {
            let changes = diff::diff(&good.facts, &rec.facts);
            let services = views
                .iter()
                .map(|v| ServiceChanges {
                    service: v.service.to_string(),
                    changes: diff::relevant(&changes, v, &good.facts, &rec.facts)
                        .into_iter()
                        .cloned()
                        .collect(),
                })
                .collect();
            Some(SinceHealthy {
                at_unix: good.at,
                at: rfc3339(good.at),
                changes,
                services,
                not_compared: not_compared(&good.facts, &rec.facts),
            })
        }
        _ => None,
    };
    TargetState {
        last_healthy_at,
        since_last_healthy,
    }
}

/// Whether this run becomes the last-known-good: it is healthy and it checked at least every
/// service the last-known-good checked (a run narrowed to a few services never stands for the
/// whole target), unless the catalog itself changed.
pub(crate) fn counts_as_healthy(lkg: Option<&Record>, rec: &Record) -> bool {
    if !is_healthy(&rec.status) {
        return false;
    }
    let Some(good) = lkg else { return true };
    good.facts.catalog.generation != rec.facts.catalog.generation
        || good
            .verdicts
            .iter()
            .all(|g| rec.verdicts.iter().any(|v| v.service == g.service))
}

/// The facts the healthy run saw and this one did not (never reported as changed).
fn not_compared(good: &record::Facts, now: &record::Facts) -> Vec<String> {
    let mut out = Vec::new();
    if good.routes.is_some() && now.routes.is_none() {
        out.push("Caddy's routes".to_string());
    }
    if !good.ports.is_empty() && now.ports.is_empty() {
        out.push("what answers inside the container".to_string());
    }
    if good.exec_auth.is_some() && now.exec_auth.is_none() {
        out.push("the exec endpoint's auth mode".to_string());
    }
    if good.cloudflared.is_some() && now.cloudflared.is_none() {
        out.push("cloudflared's readiness".to_string());
    }
    if good.origin.is_some() && now.origin.is_none() {
        out.push("the origin check".to_string());
    }
    out
}

/// One line: why the target is in its status (`xterm: broken (caddy): summary`, plus the first
/// change since the last healthy run).
pub(crate) fn cause(rec: &Record, since: Option<&SinceHealthy>, narrowed: bool) -> String {
    if is_healthy(&rec.status) {
        return if narrowed {
            let names: Vec<&str> = rec.verdicts.iter().map(|v| v.service.as_str()).collect();
            format!("healthy, only {} checked", names.join(", "))
        } else {
            "every service healthy".into()
        };
    }
    // The first of the worst verdicts (max_by_key keeps the last of equals: walk backwards).
    let worst = rec
        .verdicts
        .iter()
        .rev()
        .max_by_key(|v| record::status_of(&v.status));
    let mut s = match worst {
        Some(v) if record::status_of(&v.status) > Status::Skipped => {
            let layers = if v.layers.is_empty() {
                String::new()
            } else {
                format!(" ({})", v.layers.join("|"))
            };
            format!("{}: {}{layers}: {}", v.service, v.status, v.summary)
        }
        _ => format!(
            "exec channel: {}: {}",
            rec.channel.status, rec.channel.summary
        ),
    };
    if let Some(w) = worst {
        if let Some(c) = since.and_then(|s| s.for_service(&w.service).first()) {
            s.push_str(&format!("; since the last healthy run: {}", c.describe()));
        }
    }
    s
}

/// The new state file after this run. Pure.
pub fn next_state(
    prev: Option<StateFile>,
    domain: &str,
    vmid: u32,
    rec: Record,
    since: Option<&SinceHealthy>,
) -> StateFile {
    let (previous_last, last_healthy, mut transitions) = match prev {
        Some(p) => (Some(p.last), p.last_healthy, p.transitions),
        None => (None, None, Vec::new()),
    };
    let from = previous_last.as_ref().map(|r| r.status.clone());
    if from.as_deref() != Some(rec.status.as_str()) {
        // Fewer services than the run before: say so, the status is only about those.
        let narrowed = previous_last.as_ref().is_some_and(|p| {
            p.verdicts
                .iter()
                .any(|g| !rec.verdicts.iter().any(|v| v.service == g.service))
        });
        transitions.push(Transition {
            at: rec.at,
            from,
            to: rec.status.clone(),
            cause: cause(&rec, since, narrowed),
        });
    }
    if transitions.len() > MAX_TRANSITIONS {
        let cut = transitions.len() - MAX_TRANSITIONS;
        transitions.drain(..cut);
    }
    let last_healthy = if counts_as_healthy(last_healthy.as_ref(), &rec) {
        Some(rec.clone())
    } else {
        last_healthy
    };
    StateFile {
        format: record::FORMAT.to_string(),
        version: record::VERSION,
        domain: domain.to_string(),
        vmid,
        last: rec,
        previous: previous_last,
        last_healthy,
        transitions,
    }
}

/// Adds the diff to the evidence of each verdict it bears on.
pub(crate) fn attach(
    observation: &TargetObservation,
    verdict: &mut TargetVerdict,
    state: &TargetState,
) {
    let Some(since) = &state.since_last_healthy else {
        return;
    };
    for (s, v) in observation.services.iter().zip(verdict.services.iter_mut()) {
        if matches!(v.status, Status::Healthy | Status::Skipped) {
            continue;
        }
        v.evidence
            .push(since.evidence_line(since.for_service(&s.name)));
    }
}

/// Records this run's targets (diagnosed under `domain`) in the state directory and adds what
/// changed since the last healthy run to each target's verdicts. Returns notes for stderr
/// (unreadable files, lock or write failures). Never fails the run: the diagnosis stands without
/// its history.
pub(crate) fn apply(
    dir: &Path,
    domain: &str,
    targets: &mut [TargetRun<'_>],
    at: i64,
) -> Vec<String> {
    let store = Store::new(dir);
    let mut notes = Vec::new();
    if let Err(e) = store.ensure() {
        notes.push(format!("state directory {e}; nothing recorded"));
        return notes;
    }
    // Each record is fsynced before its rename: a few threads keep a fleet's run short.
    let workers = targets.len().clamp(1, 8);
    let chunk = targets.len().div_ceil(workers).max(1);
    let store = &store;
    std::thread::scope(|scope| {
        let handles: Vec<_> = targets
            .chunks_mut(chunk)
            .map(|targets| {
                scope.spawn(move || {
                    let mut notes = Vec::new();
                    for t in targets {
                        notes.extend(record_target(store, domain, t, at));
                    }
                    notes
                })
            })
            .collect();
        for h in handles {
            match h.join() {
                Ok(n) => notes.extend(n),
                Err(_) => notes.push("a state writer failed; some records were not written".into()),
            }
        }
    });
    store.sync(domain);
    notes
}

/// Records one target and attaches what changed since its last healthy run.
fn record_target(store: &Store, domain: &str, t: &mut TargetRun<'_>, at: i64) -> Vec<String> {
    let rec = Record {
        at,
        ..t.record.clone()
    };
    let views = views(t.observation, t.verdict);
    let vmid = t.observation.vmid;
    let mut state = None;
    let notes = store.update(domain, vmid, |loaded| {
        let prev = match loaded {
            Loaded::Ok(s) => Some((**s).clone()),
            _ => None,
        };
        let st = assess(prev.as_ref(), &rec, &views);
        let next = next_state(
            prev,
            domain,
            vmid,
            rec.clone(),
            st.since_last_healthy.as_ref(),
        );
        state = Some(st);
        next
    });
    if let Some(st) = state {
        attach(t.observation, t.verdict, &st);
        *t.state = Some(st);
    }
    notes
}

#[cfg(test)]
mod tests;
