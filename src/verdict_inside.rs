//! Behind the fronts (issue 14): back ends and systemd units refine a service's verdict.
//!
//! Pure, like the rest of the engine. The base decision table has decided from the front's answers;
//! this step looks at what the same exec round trip saw behind the front (the back end's check, the
//! units' state and journal) and, where that is decisive, names it (docs/diagnosis.md, "Behind the
//! fronts"):
//!
//! - `backend-down`: the front answers (or answers its own 502 for the back end) while the process it
//!   fronts is dead: broken (service), naming the back end, its port and unit.
//! - `unit-active-port-refused`: nothing listens on the port while the unit is active (running).
//! - `unit-crash-looping`: the port answered, but a unit of the service is failed, waiting to
//!   restart, or restarted again and again.
//!
//! Where systemd is missing, the units simply add nothing: never a different verdict.

use super::*;
use crate::catalog::BackendCheck;
use crate::observation::{BackendCheckObservation, InsideView, UnitState};

/// Restarts from which a running unit counts as crash-looping.
pub(crate) const CRASH_LOOP_RESTARTS: u32 = 3;

/// What the check behind the front found.
enum Back<'a> {
    Alive,
    /// Dead or not itself: the words say what was seen.
    Dead(String),
    /// The back end is another catalog entry (cmux-proxy's port header), dead.
    DeadEntry(&'a Service, String),
}

fn back_state<'a>(
    ctx: &Context<'a>,
    t: &TargetObservation,
    s: &Service,
    inside: &InsideView,
) -> Option<Back<'a>> {
    let b = s.backend.as_ref()?;
    match &b.check {
        BackendCheck::PortHeader { .. } => {
            let entry = ctx.catalog.by_port(b.port)?;
            let so = t.service(&entry.name)?;
            match classify_direct(entry, &so.internal) {
                Answer::Healthy | Answer::MissingHeaders(_) => Some(Back::Alive),
                Answer::NotRun => None,
                a @ (Answer::Unreachable(_)
                | Answer::BadStatus(_)
                | Answer::WrongService { .. }) => {
                    Some(Back::DeadEntry(entry, describe_answer(&a, entry)))
                }
                _ => None,
            }
        }
        BackendCheck::Http { healthy, .. } => {
            let obs = inside.backend(&s.name)?;
            let BackendCheckObservation::Http { probe } = &obs.check else {
                return None;
            };
            match probe {
                Probe::NotRun { .. } => None,
                Probe::Failed { kind, .. } => Some(Back::Dead(failure_words(*kind))),
                Probe::Response { response, .. } => {
                    if !healthy.status_ok(response.status) {
                        return Some(Back::Dead(format!(
                            "answers {}, expected {}",
                            response.status,
                            healthy.describe_statuses()
                        )));
                    }
                    match healthy
                        .fingerprint
                        .check(response.header("content-type"), &response.body)
                    {
                        Ok(()) => Some(Back::Alive),
                        Err(reason) => {
                            Some(Back::Dead(format!("answers, but not as itself: {reason}")))
                        }
                    }
                }
            }
        }
        BackendCheck::Banner { prefix } => {
            let obs = inside.backend(&s.name)?;
            match &obs.check {
                BackendCheckObservation::Banner {
                    line: Some(line), ..
                } if line.starts_with(prefix.as_str()) => Some(Back::Alive),
                BackendCheckObservation::Banner {
                    line: Some(line), ..
                } => Some(Back::Dead(format!(
                    "greets with {:?}, not {prefix:?}…: another program holds the port",
                    short_body(line)
                ))),
                BackendCheckObservation::Banner {
                    failure: Some(k), ..
                } => Some(Back::Dead(failure_words(*k))),
                _ => None,
            }
        }
    }
}

fn failure_words(k: FailureKind) -> String {
    match k {
        FailureKind::Refused => "refuses connections (nothing listens)".into(),
        FailureKind::Timeout => "accepts but says nothing in time".into(),
        FailureKind::EmptyReply => "closes the connection without a word".into(),
        other => format!("gives no answer ({})", other.as_str()),
    }
}

fn crash_looping(u: &UnitState) -> bool {
    !u.not_found()
        && (u.active_state == "failed"
            || u.sub_state == "auto-restart"
            || u.restarts.is_some_and(|n| n >= CRASH_LOOP_RESTARTS))
}

/// The units of `s` systemd reported (own unit first, then the back end's and what it needs).
fn units_of<'t>(s: &Service, inside: &'t InsideView) -> Vec<&'t UnitState> {
    let Some(view) = &inside.systemd else {
        return Vec::new();
    };
    s.units().iter().filter_map(|u| view.unit(u)).collect()
}

/// A next step for a back end's unit, with what is known to go wrong with it.
fn backend_next(vmid: u32, unit: &str, state: Option<&UnitState>) -> String {
    if unit.is_empty() {
        return format!("pct exec {vmid} -- ss -ltnp (what listens, and where)");
    }
    let mut s = format!(
        "pct exec {vmid} -- systemctl status {unit}; pct exec {vmid} -- journalctl -u {unit} -n 20; then pct exec {vmid} -- systemctl restart {unit}"
    );
    if unit == "cmux-devtools" || unit == "cmux-devtools.service" {
        let exit21 = state.and_then(|u| u.exit_status) == Some(21);
        s.push_str(&format!(
            "{}: a container cloned from a snapshot keeps Chrome's profile lock — pct exec {vmid} -- ls -l /root/.config/chrome/SingletonLock (a link naming the old hostname); remove it with pct exec {vmid} -- rm -f /root/.config/chrome/SingletonLock /root/.config/chrome/SingletonSocket /root/.config/chrome/SingletonCookie, then restart cmux-devtools; Chrome's own log: /var/log/cmux/chrome.log",
            if exit21 {
                ". Chrome exited with status 21"
            } else {
                ". If Chrome exits with status 21"
            }
        ));
    }
    s
}

/// The front's own answer is the back end's absence: a proxy's 502/503/504 made by the front.
fn front_reports_gateway(i: &Answer) -> bool {
    matches!(i, Answer::BadStatus(502..=504))
}

/// Refines one service's verdict with what was seen behind its front.
pub(super) fn refine(
    ctx: &Context,
    t: &TargetObservation,
    s: &Service,
    i: &Answer,
    mut v: Verdict,
) -> Verdict {
    let Some(inside) = &t.inside else {
        return v;
    };
    let vmid = t.vmid;
    let units = units_of(s, inside);
    let front = service_label(s);

    // The back end.
    if let (Some(back), Some(b)) = (back_state(ctx, t, s, inside), s.backend.as_ref()) {
        let (unit, what, desc) = match &back {
            Back::Alive => (String::new(), String::new(), String::new()),
            Back::Dead(w) => (b.unit.clone(), w.clone(), b.description.clone()),
            Back::DeadEntry(e, w) => (
                e.unit.clone(),
                w.clone(),
                format!("{} ({})", e.name, b.description),
            ),
        };
        if !matches!(back, Back::Alive) {
            let state = inside.systemd.as_ref().and_then(|view| view.unit(&unit));
            let at = if unit.is_empty() {
                format!("127.0.0.1:{}", b.port)
            } else {
                format!("127.0.0.1:{} ({unit})", b.port)
            };
            // The unit's own line follows with the other units' (below).
            let line = format!("back end {desc} on {at}: {what}");
            let front_answers = matches!(i, Answer::Healthy | Answer::MissingHeaders(_))
                || front_reports_gateway(i);
            let base_allows = v.status == Status::Healthy
                || (v.layer == Some(Layer::Service) && front_reports_gateway(i));
            if front_answers && base_allows {
                let mut summary =
                    format!("{front} answers, but what it fronts is down: {desc} on {at} {what}");
                if let Some(u) = state {
                    if !u.is_running() || u.restarts.unwrap_or(0) > 0 {
                        summary.push_str(&format!(" — {}", u.describe()));
                    } else {
                        summary.push_str(&format!(
                            " — {} is active (running): it listens elsewhere (another port, or not on 127.0.0.1)",
                            u.id
                        ));
                    }
                }
                v.status = Status::Broken;
                v.layer = Some(Layer::Service);
                v.candidates = Vec::new();
                v.rule = "backend-down";
                v.summary = summary;
                v.next_step = Some(backend_next(vmid, &unit, state));
            }
            v.evidence.push(line);
        } else {
            v.evidence.push(format!(
                "back end {} on 127.0.0.1:{}: answers as itself",
                b.description, b.port
            ));
        }
    }

    // The service's own unit is running, yet nothing listens where the catalog says.
    if v.layer == Some(Layer::Service)
        && v.status == Status::Broken
        && matches!(i, Answer::Unreachable(FailureKind::Refused))
    {
        if let Some(own) = inside
            .systemd
            .as_ref()
            .and_then(|view| view.unit(&s.unit))
            .filter(|u| u.is_running())
        {
            v.rule = "unit-active-port-refused";
            v.summary = format!(
                "{} is active (running), yet nothing listens on 127.0.0.1:{}: it listens on another port or address, or is still starting",
                own.id, s.port
            );
            v.next_step = Some(format!(
                "pct exec {vmid} -- ss -ltnp (find where {} listens); pct exec {vmid} -- systemctl cat {} (its port and bind address)",
                s.unit, s.unit
            ));
        }
    }

    // A unit that crash-loops, while the port answered.
    if matches!(v.status, Status::Healthy) {
        if let Some(u) = units.iter().find(|u| crash_looping(u)) {
            v.status = Status::Degraded;
            v.layer = Some(Layer::Service);
            v.candidates = Vec::new();
            v.rule = "unit-crash-looping";
            let what = if u.active_state == "failed" {
                "it has failed"
            } else {
                "it is crash-looping"
            };
            v.summary = format!("{} answers now, but {}: {what}", s.name, u.describe());
            let unit = u.id.trim_end_matches(".service");
            v.next_step = Some(backend_next(vmid, unit, Some(u)));
        }
    }

    // Every service-layer verdict that is not healthy carries the units' state and journal.
    if matches!(v.status, Status::Broken | Status::Degraded) && v.layer == Some(Layer::Service) {
        if let Some(u) = units.first() {
            if v.rule != "backend-down"
                && v.rule != "unit-crash-looping"
                && v.rule != "unit-active-port-refused"
            {
                v.summary.push_str(&format!(" ({})", u.describe()));
            }
        }
        for u in &units {
            v.evidence.push(format!("unit {}", u.describe()));
            for l in &u.journal {
                v.evidence.push(format!("journal {}: {l}", u.id));
            }
        }
        if units.is_empty() {
            if let Some(why) = inside
                .systemd
                .as_ref()
                .and_then(|view| view.unavailable.as_ref())
            {
                v.evidence.push(format!("unit state unknown: {why}"));
            }
        }
    } else if v.status != Status::Healthy {
        for u in units.iter().filter(|u| crash_looping(u)) {
            v.evidence.push(format!("unit {}", u.describe()));
        }
    }
    v
}

/// The exec channel's verdict says once when systemd could not be asked.
pub(super) fn channel_note(t: &TargetObservation, mut c: ChannelVerdict) -> ChannelVerdict {
    if let Some(why) = t
        .inside
        .as_ref()
        .and_then(|i| i.systemd.as_ref())
        .and_then(|s| s.unavailable.as_ref())
    {
        c.summary.push_str(&format!(
            "; no unit state ({why}): verdicts stand on the probes alone"
        ));
    }
    c
}
