//! The simulated container's systemd, as far as pvediag asks it: `systemctl show` and `journalctl`
//! stand-ins first on the PATH of execd's commands, reporting unit states consistent with what the
//! lab runs (reference §5a: the units restart themselves, `Restart=always`).
//!
//! - a service the spec runs: `active (running)`, no restart;
//! - `Behaviour::CrashLooping`: `active (running)` now, restarted 17 times, last exit status 1;
//! - a service the spec leaves out: `activating (auto-restart)` with a restart count and its last exit
//!   status (Chrome's 21: the profile lock of a cloned container), and systemd's own journal lines;
//! - `cmux-openbox` and `cmux-xvfb` (what Chrome needs; the lab draws no screen): `active (running)`.
//!
//! The stand-ins print what the real programs print: `systemctl show` one `Key=Value` block per unit
//! (properties in systemd's order, not the `-p` order; a blank line between units; unknown units
//! `LoadState=not-found`), `journalctl -o short-iso` lines.

use std::io;
use std::path::Path;

use super::{Behaviour, ContainerSpec, ServiceKind};

/// Restarts the lab reports for `Behaviour::CrashLooping`.
pub(crate) const CRASH_LOOP_RESTARTS: u32 = 17;
/// When the lab's failing units last exited, as `systemctl show` writes it.
pub(crate) const LAST_EXIT: &str = "Mon 2026-11-30 20:01:13 UTC";
const JOURNAL_TIME: &str = "2026-11-30T20:01:13+00:00";

/// One unit's state: (id, active, sub, restarts, exit status, last exit).
struct Unit {
    id: String,
    active: &'static str,
    sub: &'static str,
    restarts: u32,
    status: i32,
    journal: Vec<String>,
}

fn units(spec: &ContainerSpec) -> Vec<Unit> {
    let host = format!("cmux-{}", spec.vmid);
    let mut out = Vec::new();
    for kind in ServiceKind::ALL
        .into_iter()
        .chain([ServiceKind::WorkerDaemon])
        .chain(ServiceKind::BACK_ENDS)
    {
        let Some(unit) = kind.unit() else { continue };
        let id = format!("{unit}.service");
        let running = spec.services.iter().find(|s| s.kind == kind);
        let (restarts, status) = match kind {
            ServiceKind::Chrome => (12, 21),
            _ => (5, 1),
        };
        let failing = |restarts: u32, status: i32| {
            let result = if status == 21 {
                "status=21/n/a".to_string()
            } else {
                format!("status={status}/FAILURE")
            };
            vec![
                format!("{JOURNAL_TIME} {host} systemd[1]: Started {id}."),
                format!("{JOURNAL_TIME} {host} systemd[1]: {id}: Main process exited, code=exited, {result}"),
                format!("{JOURNAL_TIME} {host} systemd[1]: {id}: Failed with result 'exit-code'."),
                format!("{JOURNAL_TIME} {host} systemd[1]: {id}: Scheduled restart job, restart counter is at {restarts}."),
            ]
        };
        out.push(match running.map(|s| s.behaviour) {
            Some(Behaviour::CrashLooping) => Unit {
                journal: failing(CRASH_LOOP_RESTARTS, 1),
                id,
                active: "active",
                sub: "running",
                restarts: CRASH_LOOP_RESTARTS,
                status: 1,
            },
            Some(_) => Unit {
                // A running unit's journal has its start: a journal read where nothing failed
                // shows in the report (tests count on it).
                journal: vec![format!("{JOURNAL_TIME} {host} systemd[1]: Started {id}.")],
                id,
                active: "active",
                sub: "running",
                restarts: 0,
                status: 0,
            },
            None => Unit {
                journal: failing(restarts, status),
                id,
                active: "activating",
                sub: "auto-restart",
                restarts,
                status,
            },
        });
    }
    for unit in ["cmux-openbox", "cmux-xvfb"] {
        let id = format!("{unit}.service");
        out.push(Unit {
            journal: vec![format!("{JOURNAL_TIME} {host} systemd[1]: Started {id}.")],
            id,
            active: "active",
            sub: "running",
            restarts: 0,
            status: 0,
        });
    }
    out
}

/// The stand-in's head; the unit table is written into it as a `case` (no file to read: dash reads
/// files a byte at a time, and this runs on every diagnosis of the lab).
const SYSTEMCTL_HEAD: &str = r#"#!/bin/sh
# written by the pvediag lab: systemctl show for the simulated container's units
[ "$1" = show ] || { echo "systemctl (lab): only 'show' is simulated" >&2; exit 1; }
shift
props=
first=1
want() { [ -z "$props" ] || case ",$props," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
"#;

const SYSTEMCTL_TAIL: &str = r#"while [ $# -gt 0 ]; do
  case $1 in
    -p|--property) props="$props,$2"; shift ;;
    -p*) props="$props,${1#-p}" ;;
    --property=*) props="$props,${1#*=}" ;;
    -*) ;;
    *)
      id=$1
      case $id in *.*) ;; *) id=$id.service ;; esac
      unit "$id"
      [ $first = 1 ] || echo
      first=0
      want NRestarts && echo "NRestarts=$nr"
      want ExecMainExitTimestamp && echo "ExecMainExitTimestamp=$ts"
      want ExecMainStatus && echo "ExecMainStatus=$st"
      want Id && echo "Id=$id"
      want LoadState && echo "LoadState=$load"
      want ActiveState && echo "ActiveState=$active"
      want SubState && echo "SubState=$sub"
      ;;
  esac
  shift
done
exit 0
"#;

const JOURNALCTL: &str = r#"#!/bin/bash
# written by the pvediag lab: journalctl -u UNIT -n N for the simulated container's units
d=${0%/*}/../systemd/journal
n=10
units=()
while [ $# -gt 0 ]; do
  case $1 in
    -u|--unit) units+=("$2"); shift ;;
    -n|--lines) n=$2; shift ;;
    -o|--output) shift ;;
  esac
  shift
done
for u in "${units[@]}"; do
  case $u in *.*) ;; *) u=$u.service ;; esac
  [ -f "$d/$u" ] && tail -n "$n" "$d/$u"
done
exit 0
"#;

/// Writes `<dir>/bin/systemctl` (the unit table inside), `<dir>/bin/journalctl` and its lines
/// (`<dir>/systemd/journal/<unit>`).
pub(crate) fn write(dir: &Path, spec: &ContainerSpec) -> io::Result<()> {
    let bin = dir.join("bin");
    let journal = dir.join("systemd").join("journal");
    std::fs::create_dir_all(&bin)?;
    std::fs::create_dir_all(&journal)?;
    let mut systemctl = String::from(SYSTEMCTL_HEAD);
    systemctl.push_str("unit() {\n  case $1 in\n");
    for u in units(spec) {
        let ts = if u.status != 0 { LAST_EXIT } else { "" };
        systemctl.push_str(&format!(
            "    '{}') load=loaded active={} sub={} nr={} st={} ts='{ts}' ;;\n",
            u.id, u.active, u.sub, u.restarts, u.status
        ));
        if !u.journal.is_empty() {
            std::fs::write(journal.join(&u.id), u.journal.join("\n") + "\n")?;
        }
    }
    systemctl
        .push_str("    *) load=not-found active=inactive sub=dead nr=0 st=0 ts= ;;\n  esac\n}\n");
    systemctl.push_str(SYSTEMCTL_TAIL);
    for (name, script) in [
        ("systemctl", systemctl.as_str()),
        ("journalctl", JOURNALCTL),
    ] {
        let path = bin.join(name);
        std::fs::write(&path, script)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    Ok(())
}
