//! Back ends and units: the part of the internal command that looks behind the fronts (issue 14,
//! reference §5a), in the same exec round trip as the service probes.
//!
//! - An HTTP back end (Chrome DevTools behind cmux-cdp-proxy) is one more transfer of the same
//!   `curl --parallel` batch (or one more per-service probe in the fallback), recorded as
//!   `{service}.backend` ([`http_probes`]).
//! - A banner back end (TigerVNC behind cmux-vnc-proxy) is a connect plus `read -t` of the first line
//!   with bash's `/dev/tcp`: no curl needed, no extra process but the one process substitution
//!   that bounds it by the probe timeout.
//! - The units: ONE `systemctl show` for every unit the catalog names, started right after curl
//!   (the probes' batch) and read after the probes; then, only for services that look unhealthy from inside (front or back
//!   end failed, a unit not active or restarted), `journalctl -n 5` per unit. Where systemctl is
//!   missing or fails, one record says so.
//!
//! Every value that reaches bash is a validated catalog value (unit names: `[A-Za-z0-9-_.@]`,
//! service names `[a-z0-9-]`, ports) and is single-quoted; nothing read from the container is
//! evaluated. Records are lines `@pvediag3 NONCE KIND ...`; text from the container (banners,
//! systemctl's error, journal lines) is cut and its control characters replaced in bash already,
//! and again when parsed.

use crate::catalog::{BackendCheck, Service};
use crate::observation::{unit_id, SystemdView, UnitState};
use crate::probe::internal::{printable, ScriptProbe};
use crate::shell::shell_quote;

/// The record name of a service's HTTP back-end probe: `{service}.backend` (a `.` no service name
/// holds, so it never collides with a service's own record).
pub(crate) fn record_name(service: &str) -> String {
    format!("{service}.backend")
}

/// Journal lines kept per unit.
pub(crate) const JOURNAL_LINES: usize = 5;
/// Units whose journal one run may fetch.
pub(crate) const JOURNAL_UNITS: usize = 6;
/// Characters kept per journal line, banner or error text.
pub(crate) const TEXT_CAP: usize = 240;
/// How long the journal reads may take together, at most (they start after the probes).
pub(crate) const JOURNAL_BUDGET_US: u64 = 1_500_000;
/// The properties asked of systemd, in the order of the `unit` record's fields.
pub const PROPERTIES: &str =
    "Id,LoadState,ActiveState,SubState,NRestarts,ExecMainStatus,ExecMainExitTimestamp";

/// The HTTP back-end probes of `services` (`127.0.0.1:{backend port}`).
pub(crate) fn http_probes(services: &[&Service]) -> Vec<ScriptProbe> {
    services
        .iter()
        .filter_map(|s| {
            let b = s.backend.as_ref()?;
            match &b.check {
                BackendCheck::Http { probe, .. } => Some(ScriptProbe {
                    name: record_name(&s.name),
                    host: "127.0.0.1".into(),
                    port: b.port,
                    method: probe.method.clone(),
                    path: probe.path.clone(),
                    headers: probe.headers.clone(),
                }),
                _ => None,
            }
        })
        .collect()
}

/// Every unit of `services`, once each, in catalog order.
pub(crate) fn units(services: &[&Service]) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    for s in services {
        for u in s.units() {
            if !v.iter().any(|x| x == u) {
                v.push(u.to_string());
            }
        }
    }
    v
}

/// The start of the section (the body of `b_start`, run once curl's batch is started, or before the
/// per-service probes): `systemctl show` and the banner reads run in the background (process
/// substitutions) while the HTTP probes run.
pub(crate) fn start(services: &[&Service]) -> String {
    let units = units(services);
    // `t0`, `tus`: the section's clock (microseconds) and the probe timeout; everything the section
    // waits for is bounded by one deadline, not one timeout per read.
    let mut c = String::from(
        "# --- back ends and units (issue 14) ---\nufd=\nt0=${EPOCHREALTIME/[.,]/}\ntus=$(( 10#${T/./} * 1000 ))\n",
    );
    if !units.is_empty() {
        c.push_str("if command -v systemctl >/dev/null 2>&1; then\n  exec {ufd}< <(exec systemctl show --no-pager -p ");
        c.push_str(PROPERTIES);
        c.push_str(" --");
        for u in &units {
            c.push(' ');
            c.push_str(&shell_quote(u));
        }
        c.push_str(" 2>&1 </dev/null)\n  up=$!\nfi\n");
    }
    for s in services {
        let Some(b) = &s.backend else { continue };
        if !matches!(b.check, BackendCheck::Banner { .. }) {
            continue;
        }
        let var = banner_var(&s.name);
        // The connect stays literal (`/dev/tcp/127.0.0.1/PORT`): the lab maps its container's
        // loopback ports on exactly these words.
        c.push_str(&format!(
            "exec {{{var}}}< <(exec 2>/dev/null; if exec 3<>/dev/tcp/127.0.0.1/{port}; then IFS= read -r -t \"$T\" -n 64 l <&3; r=$?; if [ -n \"$l\" ]; then printf '0 %s\\n' \"${{l//[[:cntrl:]]/ }}\"; elif [ $r -gt 128 ]; then echo 28; else echo 52; fi; else echo 7; fi)\n{var}p=$!\n",
            port = b.port
        ));
    }
    c
}

fn banner_var(service: &str) -> String {
    format!("bfd_{}", service.replace('-', "_"))
}

/// The healthy answers of a `fr` result as a bash `case` pattern over `"$frc:$fcode"`:
/// `0:200|0:2??|0:ok` (`ok`: the bash fallback's record, whose status bash does not read).
fn status_pattern(s: &crate::catalog::Healthy) -> String {
    let mut v: Vec<String> = s
        .statuses
        .iter()
        .map(|st| match st {
            crate::catalog::StatusSpec::Code(c) => format!("0:{c}"),
            crate::catalog::StatusSpec::Class(c) => format!("0:{c}??"),
        })
        .collect();
    v.push("0:ok".into());
    v.join("|")
}

/// The functions `b_mid`, called while the probes run (curl's batch, or the per-service probes in the
/// background): reads the units and the banners and prints their records, once; and `b_end`, called
/// once the probes' records are out: `b_mid` if it did not run, then the journal of the units of
/// services that look unhealthy (the only part that needs the probes' results).
/// `fr NAME` sets `frc`/`fcode` from the batch's `-w` lines (`W`) or the per-service record file.
pub(crate) fn finish(services: &[&Service]) -> String {
    let mut c = String::from(
        r#"rt() {
  local now=${EPOCHREALTIME/[.,]/} r
  [ -n "$now" ] && [ -n "$t0" ] || { tt=$T; return; }
  r=$(( $1 - now ))
  [ $r -gt 10000 ] || r=10000
  printf -v tt '%d.%06d' $((r / 1000000)) $((r % 1000000))
}
fr() {
  frc=; fcode=
  local l
  for l in "${W[@]}"; do
    case $l in "$1 "*) l=${l#* }; frc=${l%% *}; l=${l#* }; fcode=${l%% *}; return ;; esac
  done
  [ -n "$d" ] && [ -f "$d/$1.rec" ] && IFS= read -r l < "$d/$1.rec" || return
  l=${l#* rc=}; frc=${l%% *}
  case $l in *" code="*) l=${l#* code=}; fcode=${l%% *} ;; *) [ "$frc" = 0 ] && fcode=ok ;; esac
}
bm=
b_mid() {
  [ -z "$bm" ] || return 0
  bm=1
  local l id ld ac sb nr st ts t ub er=
  declare -gA UA=() UN=()
  if [ -n "$ufd" ]; then
    # One read of the whole answer (a line loop reads a pipe a byte at a time).
    rt $((t0 + tus)); ub=; IFS= read -r -d '' -N 65536 -t "$tt" ub <&$ufd; t=$?
    [ $t -gt 128 ] && { er=" (no answer within the probe timeout)"; kill $up 2>/dev/null; }
    # One split of the whole answer into lines (not a loop that cuts a line off the buffer at a
    # time: that costs ~1.5 ms of bash after the probes); a blank line, between two units,
    # becomes a '=' line, and one more ends the last unit.
    local UL oifs=$IFS
    IFS=$'\n'; set -f; UL=(${ub//$'\n\n'/$'\n=\n'} =); set +f; IFS=$oifs
    id=
    for l in "${UL[@]}"; do
      case $l in
        =)
          if [ -n "$id" ]; then
            printf '@pvediag3 %s unit %s %s %s %s %s %s %s\n' "$n" "$id" "${ld:--}" "${ac:--}" "${sb:--}" "${nr:--}" "${st:--}" "${ts:--}"
            UA[$id]=$ac; UN[$id]=$nr
          fi
          id=; ld=; ac=; sb=; nr=; st=; ts= ;;
        Id=*) id=${l#Id=}; id=${id//[!A-Za-z0-9@._-]/} ;;
        LoadState=*) ld=${l#*=}; ld=${ld//[!a-z-]/} ;;
        ActiveState=*) ac=${l#*=}; ac=${ac//[!a-z-]/} ;;
        SubState=*) sb=${l#*=}; sb=${sb//[!a-z-]/} ;;
        NRestarts=*) nr=${l#*=}; nr=${nr//[!0-9]/} ;;
        ExecMainStatus=*) st=${l#*=}; st=${st//[!0-9-]/} ;;
        ExecMainExitTimestamp=*) ts=${l#*=}; ts=${ts//[[:cntrl:]]/ } ;;
        *=*) ;;
        *) [ ${#er} -lt 240 ] && er="${l//[[:cntrl:]]/ } $er" ;;
      esac
    done
    [ ${#UA[@]} -eq 0 ] && printf '@pvediag3 %s systemd error %s\n' "$n" "${er:0:240}"
  else
    printf '@pvediag3 %s systemd absent\n' "$n"
  fi
"#,
    );
    // Banners.
    for s in services {
        let Some(b) = &s.backend else { continue };
        if !matches!(b.check, BackendCheck::Banner { .. }) {
            continue;
        }
        let var = banner_var(&s.name);
        c.push_str(&format!(
            "  rt $((t0 + tus)); l=; IFS= read -r -t \"$tt\" l <&${var} || {{ [ -n \"$l\" ] || l=28; kill ${var}p 2>/dev/null; }}\n  printf '@pvediag3 %s banner %s %s\\n' \"$n\" {} \"${{l:0:{TEXT_CAP}}}\"\n  bk_{}=${{l%% *}}\n",
            shell_quote(&s.name),
            s.name.replace('-', "_"),
        ));
    }
    // Which services look unhealthy: their units' journals.
    c.push_str("}\nb_end() {\n  local l t u ok jn=0\n  b_mid\n  local J=()\n");
    for s in services {
        let us = s.units();
        if us.is_empty() {
            continue;
        }
        c.push_str(&format!(
            "  ok=1; fr {}; case \"$frc:$fcode\" in {}) ;; *) ok=0 ;; esac\n",
            shell_quote(&s.name),
            status_pattern(&s.healthy)
        ));
        if let Some(b) = &s.backend {
            match &b.check {
                BackendCheck::Http { healthy, .. } => c.push_str(&format!(
                    "  fr {}; case \"$frc:$fcode\" in {}) ;; *) ok=0 ;; esac\n",
                    shell_quote(&record_name(&s.name)),
                    status_pattern(healthy)
                )),
                BackendCheck::Banner { .. } => c.push_str(&format!(
                    "  [ \"$bk_{}\" = 0 ] || ok=0\n",
                    s.name.replace('-', "_")
                )),
                BackendCheck::PortHeader { .. } => {}
            }
        }
        let ids: Vec<String> = us.iter().map(|u| shell_quote(&unit_id(u))).collect();
        c.push_str(&format!(
            "  for u in {}; do\n    if [ -n \"${{UA[$u]+x}}\" ] && {{ [ \"${{UA[$u]}}\" != active ] || [ \"${{UN[$u]:-0}}\" != 0 ]; }}; then ok=0; fi\n  done\n  if [ $ok = 0 ]; then for u in {}; do case \" ${{J[*]}} \" in *\" $u \"*) ;; *) J+=(\"$u\") ;; esac; done; fi\n",
            ids.join(" "),
            ids.join(" ")
        ));
    }
    c.push_str(&format!(
        r#"  if [ ${{#J[@]}} -gt 0 ] && [ -n "$ufd" ] && command -v journalctl >/dev/null 2>&1; then
    local -A JF
    local JP=()
    local je=$(( ${{EPOCHREALTIME/[.,]/}} + (tus < {JOURNAL_BUDGET_US} ? tus : {JOURNAL_BUDGET_US}) ))
    for u in "${{J[@]:0:{JOURNAL_UNITS}}}"; do
      exec {{t}}< <(exec journalctl -u "$u" -n {JOURNAL_LINES} --no-pager -q -o short-iso 2>/dev/null </dev/null)
      JF[$u]=$t; JP+=($!)
    done
    for u in "${{J[@]:0:{JOURNAL_UNITS}}}"; do
      jn=0
      while [ $jn -lt {JOURNAL_LINES} ] && rt $je && IFS= read -r -t "$tt" l <&${{JF[$u]}}; do
        l=${{l//[[:cntrl:]]/ }}
        [ -n "$l" ] && printf '@pvediag3 %s journal %s %s\n' "$n" "$u" "${{l:0:{TEXT_CAP}}}"
        jn=$((jn+1))
      done
    done
    kill "${{JP[@]}}" 2>/dev/null
  fi
}}
"#
    ));
    c
}

// ---------------------------------------------------------------------------------------------
// Records

/// One parsed `@pvediag3` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackendRecord {
    Unit(UnitState),
    /// No `systemctl` in the container.
    SystemdAbsent,
    /// `systemctl show` gave no unit (not booted with systemd, no bus, not permitted...).
    SystemdError(String),
    /// A banner read: `rc` 0 (a line was read), 7 (refused), 28 (nothing within the timeout),
    /// 52 (closed without a line).
    Banner {
        service: String,
        rc: i32,
        text: String,
    },
    Journal {
        unit: String,
        line: String,
    },
}

fn clean(s: &str) -> String {
    printable(&s.chars().take(TEXT_CAP).collect::<String>())
        .trim()
        .to_string()
}

/// Parses one stdout line; `None` when it is not a record of this nonce.
pub fn parse_line(line: &str, nonce: &str) -> Option<BackendRecord> {
    let rest = line.strip_prefix("@pvediag3 ")?;
    let rest = rest.strip_prefix(nonce)?.strip_prefix(' ')?;
    let (kind, rest) = rest.split_once(' ').unwrap_or((rest, ""));
    match kind {
        "unit" => {
            let mut f = rest.splitn(7, ' ');
            let id = f.next()?.to_string();
            if id.is_empty() || id == "-" {
                return None;
            }
            let word = |w: Option<&str>| w.map(clean).unwrap_or_else(|| "-".into());
            let load_state = word(f.next());
            let active_state = word(f.next());
            let sub_state = word(f.next());
            let restarts = f.next().and_then(|n| n.parse().ok());
            let exit_status = f.next().and_then(|n| n.parse().ok());
            let last_exit = f
                .next()
                .map(clean)
                .filter(|t| !t.is_empty() && t != "-" && t != "n/a");
            Some(BackendRecord::Unit(UnitState {
                id: clean(&id),
                load_state,
                active_state,
                sub_state,
                restarts,
                exit_status,
                last_exit,
                journal: Vec::new(),
            }))
        }
        "systemd" => match rest.split_once(' ').unwrap_or((rest, "")) {
            ("absent", _) => Some(BackendRecord::SystemdAbsent),
            ("error", msg) => Some(BackendRecord::SystemdError(redact_secrets(&clean(msg)))),
            _ => None,
        },
        "banner" => {
            let (service, rest) = rest.split_once(' ')?;
            let (rc, text) = rest.split_once(' ').unwrap_or((rest, ""));
            Some(BackendRecord::Banner {
                service: service.to_string(),
                rc: rc.parse().ok()?,
                text: redact_secrets(&clean(text)),
            })
        }
        "journal" => {
            let (unit, line) = rest.split_once(' ')?;
            Some(BackendRecord::Journal {
                unit: unit.to_string(),
                line: redact_secrets(&clean(line)),
            })
        }
        _ => None,
    }
}

/// Assembles the records into the systemd view and the banner results (service -> (rc, text)).
/// `None` when the command held no unit record and no systemd record (an older pvediag's command,
/// or a cut stream).
pub(crate) fn assemble(
    records: &[BackendRecord],
) -> (Option<SystemdView>, Vec<(String, i32, String)>) {
    let mut view: Option<SystemdView> = None;
    let mut banners = Vec::new();
    for r in records {
        match r {
            BackendRecord::Unit(u) => view
                .get_or_insert_with(Default::default)
                .units
                .push(u.clone()),
            BackendRecord::SystemdAbsent => {
                view.get_or_insert_with(Default::default).unavailable =
                    Some("systemctl is not installed in the container".into())
            }
            BackendRecord::SystemdError(m) => {
                view.get_or_insert_with(Default::default).unavailable = Some(if m.is_empty() {
                    "systemctl show reported no unit".into()
                } else {
                    format!("systemctl show failed: {m}")
                })
            }
            BackendRecord::Banner { service, rc, text } => {
                banners.push((service.clone(), *rc, text.clone()))
            }
            BackendRecord::Journal { .. } => {}
        }
    }
    if let Some(v) = view.as_mut() {
        for r in records {
            if let BackendRecord::Journal { unit, line } = r {
                if let Some(u) = v.units.iter_mut().find(|u| &u.id == unit) {
                    if u.journal.len() < JOURNAL_LINES && !line.is_empty() {
                        u.journal.push(line.clone());
                    }
                }
            }
        }
    }
    (view, banners)
}

/// Masks what looks like a credential in text from the container: `token=…`, `secret: …`,
/// `password …`, `Authorization: …` values, and any run of 32 or more hex digits (execd's token
/// is 64).
pub(crate) fn redact_secrets(text: &str) -> String {
    static KEYED: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    static HEX: std::sync::OnceLock<regex::Regex> = std::sync::OnceLock::new();
    let keyed = KEYED.get_or_init(|| {
        regex::Regex::new(
            r"(?i)\b(token|secret|password|passwd|api[_-]?key|authorization|bearer)(\s*[=:]\s*|\s+)(bearer\s+)?[^\s,;]+",
        )
        .expect("a valid regex")
    });
    let hex =
        HEX.get_or_init(|| regex::Regex::new(r"\b[0-9a-fA-F]{32,}\b").expect("a valid regex"));
    let t = keyed.replace_all(text, "${1}${2}${3}[redacted]");
    hex.replace_all(&t, "[redacted]").into_owned()
}

/// The back ends and the systemd view of one round trip, from its records.
pub(crate) fn inside_view(
    catalog: &crate::catalog::Catalog,
    records: &[crate::probe::internal::Record],
    backend_records: &[BackendRecord],
) -> crate::observation::InsideView {
    use crate::observation::{BackendCheckObservation, BackendObservation, FailureKind};
    let (systemd, banners) = assemble(backend_records);
    let mut backends = Vec::new();
    for s in &catalog.services {
        let Some(b) = &s.backend else { continue };
        let check = match &b.check {
            BackendCheck::PortHeader { .. } => continue,
            BackendCheck::Http { .. } => {
                let name = record_name(&s.name);
                match records.iter().find(|r| r.name == name) {
                    Some(r) => BackendCheckObservation::Http {
                        probe: r.probe.clone(),
                    },
                    None => BackendCheckObservation::NotRun {
                        reason: "no record from the exec round trip".into(),
                    },
                }
            }
            BackendCheck::Banner { .. } => match banners.iter().find(|(n, _, _)| *n == s.name) {
                Some((_, 0, line)) => BackendCheckObservation::Banner {
                    line: Some(line.clone()),
                    failure: None,
                },
                Some((_, rc, _)) => BackendCheckObservation::Banner {
                    line: None,
                    failure: Some(match rc {
                        7 => FailureKind::Refused,
                        28 => FailureKind::Timeout,
                        52 => FailureKind::EmptyReply,
                        _ => FailureKind::Other,
                    }),
                },
                None => BackendCheckObservation::NotRun {
                    reason: "no record from the exec round trip".into(),
                },
            },
        };
        backends.push(BackendObservation {
            service: s.name.clone(),
            port: b.port,
            check,
        });
    }
    crate::observation::InsideView { backends, systemd }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_records_parse() {
        let r = parse_line(
            "@pvediag3 n unit cmux-devtools.service loaded activating auto-restart 17 21 Mon 2026-11-30 20:01:13 UTC",
            "n",
        )
        .unwrap();
        let BackendRecord::Unit(u) = r else { panic!() };
        assert_eq!(u.id, "cmux-devtools.service");
        assert_eq!(u.restarts, Some(17));
        assert_eq!(u.exit_status, Some(21));
        assert_eq!(u.last_exit.as_deref(), Some("Mon 2026-11-30 20:01:13 UTC"));
        assert!(!u.is_running());
        assert!(
            u.describe().contains("restarted 17 times"),
            "{}",
            u.describe()
        );
        let r = parse_line(
            "@pvediag3 n unit x.service loaded active running 0 0 -",
            "n",
        )
        .unwrap();
        let BackendRecord::Unit(u) = r else { panic!() };
        assert!(u.is_running() && u.last_exit.is_none());
        assert!(parse_line(
            "@pvediag3 m unit x.service loaded active running 0 0 -",
            "n"
        )
        .is_none());
        assert!(parse_line("@pvediag3 n unit", "n").is_none());
        assert!(parse_line("@pvediag3 nn unit x", "n").is_none());
    }

    #[test]
    fn other_records_parse_and_are_cleaned() {
        assert_eq!(
            parse_line("@pvediag3 n systemd absent", "n"),
            Some(BackendRecord::SystemdAbsent)
        );
        assert_eq!(
            parse_line(
                "@pvediag3 n systemd error  System has not been booted with systemd",
                "n"
            ),
            Some(BackendRecord::SystemdError(
                "System has not been booted with systemd".into()
            ))
        );
        assert_eq!(
            parse_line("@pvediag3 n banner vnc 0 RFB 003.008", "n"),
            Some(BackendRecord::Banner {
                service: "vnc".into(),
                rc: 0,
                text: "RFB 003.008".into()
            })
        );
        assert_eq!(
            parse_line("@pvediag3 n banner vnc 7", "n"),
            Some(BackendRecord::Banner {
                service: "vnc".into(),
                rc: 7,
                text: String::new()
            })
        );
        let j = parse_line("@pvediag3 n journal a.service x\u{1b}[31my", "n").unwrap();
        assert_eq!(
            j,
            BackendRecord::Journal {
                unit: "a.service".into(),
                line: "x [31my".into()
            }
        );
        let (view, banners) = assemble(&[
            parse_line("@pvediag3 n unit a.service loaded failed failed 3 1 -", "n").unwrap(),
            j,
        ]);
        let view = view.unwrap();
        assert_eq!(view.unit("a").unwrap().journal, vec!["x [31my"]);
        assert!(banners.is_empty());
        let (view, _) = assemble(&[BackendRecord::SystemdAbsent]);
        assert!(view.unwrap().unavailable.unwrap().contains("not installed"));
        assert_eq!(assemble(&[]).0, None);
    }

    #[test]
    fn the_whole_command_is_valid_bash_and_bounded_by_one_deadline() {
        let c = crate::catalog::Catalog::embedded();
        let svcs: Vec<&Service> = c.services.iter().collect();
        let cmd = crate::probe::internal::build_command(
            &svcs,
            "feed",
            std::time::Duration::from_millis(500),
        );
        assert_eq!(cmd.matches("systemctl show").count(), 1);
        assert!(cmd.contains("-- 'cmux-execd' 'cmux-worker'"));
        assert!(cmd.contains("exec 3<>/dev/tcp/127.0.0.1/5901;"));
        // Every wait of the section uses the section's deadline.
        assert_eq!(cmd.matches("rt $((t0 + tus))").count(), 2, "{cmd}");
        assert!(!cmd.contains("-t \"$T\" ub") && cmd.contains("rt $je"));
        let Ok(out) = std::process::Command::new("bash")
            .arg("-n")
            .arg("-c")
            .arg(&cmd)
            .output()
        else {
            return;
        };
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    fn the_section_runs_while_curl_runs() {
        // curl's batch is started first; the section's forks (`b_start`) and its reads
        // (`b_mid`: systemd's answer, the banners) happen while curl runs; after the probes only
        // `b_end` (the journal decision) is left. The fallback runs them before its `wait`.
        let c = crate::catalog::Catalog::embedded();
        let svcs: Vec<&Service> = c.services.iter().collect();
        let cmd = crate::probe::internal::build_command(
            &svcs,
            "feed",
            std::time::Duration::from_millis(500),
        );
        let at = |s: &str, from: usize| {
            from + cmd[from..]
                .find(s)
                .unwrap_or_else(|| panic!("{s:?} after {from}: {cmd}"))
        };
        let launch = at(" >\"$q.w\" 2>/dev/null &\n", 0);
        let start = at("\n    b_start\n", launch);
        let mid = at("\n    b_mid\n", start);
        let wait = at("\n    wait $cp\n", mid);
        let end = at("\n      b_end\n", wait);
        assert!(launch < start && start < mid && mid < wait && wait < end);
        // Nothing of the section is started before curl.
        let head = &cmd[..launch];
        assert!(!head.contains("\nb_start\n") && !head.contains("\n    b_start\n"));
        // The fallback: started before the per-service probes, read before their `wait`.
        let fb = at("\nb_start\n", end);
        let fb_mid = at("\nb_mid\nwait\n", fb);
        assert!(fb < fb_mid && cmd[fb..fb_mid].contains("\np 'exec'"));
    }

    #[test]
    fn secrets_are_masked() {
        let tok = "3f9a1c7e5b2d4086a1e3c5b7d9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4";
        for line in [
            format!("started with token={tok}"),
            "Authorization: Bearer abc.def".to_string(),
            "password hunter2".to_string(),
            format!("id {tok} seen"),
        ] {
            let r = redact_secrets(&line);
            assert!(r.contains("[redacted]"), "{r}");
            assert!(
                !r.contains(tok) && !r.contains("abc.def") && !r.contains("hunter2"),
                "{r}"
            );
        }
        assert_eq!(
            redact_secrets("Main process exited, code=exited, status=21/n/a"),
            "Main process exited, code=exited, status=21/n/a"
        );
    }
}
