//! The internal probe: one bash command that probes every service at `127.0.0.1:PORT` inside the
//! container, concurrently, and prints one self-delimiting record per service.
//!
//! The command is read-only: it runs `curl` (or, where curl is missing, bash's `/dev/tcp`) against
//! loopback and writes only to a private temporary directory it removes. Every value from the
//! catalog is validated by the catalog loader and single-quoted here, so nothing reaches bash
//! unquoted.
//!
//! A record is one line (execd splits output into lines, strips `\r` and drops empty lines):
//! `@pvediag1 NONCE NAME via=curl rc=0 code=200 t=0.001 h=B64 b=B64 e=B64 end`
//! (base64 has no spaces and no newlines, so the line survives execd unchanged).
//!
//! Process start-up dominates the command's cost (a container runs it on a busy CPU, and a fork
//! plus exec costs milliseconds). So where curl can (7.75+: `--parallel`, `%{exitcode}`,
//! `%{errormsg}`), ONE curl process probes every service and bash itself, with builtins only,
//! prints one record line per service, `@pvediagr NONCE NAME CAP W H B end`: curl's `-w` line
//! (`NAME RC CODE TIME HEADER_BYTES BODY_BYTES ERRMSG`), the header dump (up to [`HEADER_CAP`]) and
//! the body (up to the service's [`body_cap`]), each escaped so that it is one word on one line
//! (`\\`, `\n`, `\r`, `\s`). At the end `rm` removes its files in the background: three
//! processes in all (bash, curl, rm), whatever the number of services. Older curl, no curl, or a
//! malformed `-w` output fall back to one probe per service.

use std::time::Duration;

use base64::Engine as _;

use crate::catalog::Service;
use crate::observation::{FailureKind, HttpResponse, Probe};
use crate::shell::{shell_quote, valid_host};

/// Body bytes kept per internal probe.
pub const BODY_CAP: usize = 16 * 1024;
/// Header bytes kept per internal probe.
pub(crate) const HEADER_CAP: usize = 8 * 1024;

/// A fresh random nonce (hex), so records cannot be faked by other output.
pub fn new_nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.write_u32(std::process::id());
    format!("{:016x}", h.finish())
}

/// The start of every command: the nonce, the timeout, cleanup at exit (in the background: the
/// stream ends without waiting for `rm`), and whether curl is there.
const HEAD: &str = r#"set +e
n=__NONCE__
T=__TIMEOUT__
d=
q=
cleanup() { [ -z "$d" ] || rm -rf "$d"; [ -z "$q" ] || rm -f "$q".*; }
trap 'cleanup </dev/null >/dev/null 2>&1 &' EXIT
if command -v curl >/dev/null 2>&1; then via=curl; else via=bash; fi
"#;

/// The per-service probes (the fallback of the batch): a private directory, one probe each.
const PRELUDE: &str = r#"d=$(mktemp -d 2>/dev/null) || { d=/tmp/pvediag.$$.$RANDOM; mkdir -p "$d" && chmod 700 "$d"; }
b64() { head -c "$1" "$2" 2>/dev/null | base64 -w0 2>/dev/null || head -c "$1" "$2" 2>/dev/null | base64 | tr -d '\n'; }
p() {
  local name=$1 host=$2 port=$3 method=$4 path=$5 h rc code t0 t1
  shift 5
  local hargs=()
  for h in "$@"; do hargs+=(-H "$h"); done
  if [ "$via" = curl ]; then
    local m=(-X "$method")
    [ "$method" = HEAD ] && m=(-I)
    code=$(curl -sS -o "$d/$name.b" -D "$d/$name.h" -w '%{http_code} %{time_total}' --max-time "$T" "${m[@]}" "${hargs[@]}" "http://$host:$port$path" 2>"$d/$name.e")
    rc=$?
    printf '@pvediag1 %s %s via=curl rc=%s code=%s t=%s h=%s b=%s e=%s end\n' "$n" "$name" "$rc" "${code% *}" "${code#* }" "$(b64 __HCAP__ "$d/$name.h")" "$(b64 __BCAP__ "$d/$name.b")" "$(b64 512 "$d/$name.e")" > "$d/$name.rec"
  else
    t0=$EPOCHREALTIME
    (
      exec 3<>"/dev/tcp/$host/$port" || exit 7
      local r x
      printf -v r '%s %s HTTP/1.0\r\nUser-Agent: pvediag\r\nConnection: close\r\n' "$method" "$path"
      case "$*" in *[Hh]ost:*) ;; *) printf -v x 'Host: %s:%s\r\n' "$host" "$port"; r+=$x ;; esac
      for h in "$@"; do printf -v x '%s\r\n' "$h"; r+=$x; done
      printf '%s\r\n' "$r" >&3
      head -c __RAWCAP__ <&3 > "$d/$name.raw"
    ) 2>"$d/$name.e" &
    local pid=$!
    ( sleep "$T"; kill -TERM "$pid" 2>/dev/null ) >/dev/null 2>&1 &
    local killer=$!
    wait "$pid"; rc=$?
    kill "$killer" 2>/dev/null
    [ "$rc" -gt 128 ] && rc=28
    [ "$rc" = 1 ] && grep -qi refused "$d/$name.e" 2>/dev/null && rc=7
    t1=$EPOCHREALTIME
    printf '@pvediag1 %s %s via=bash rc=%s t0=%s t1=%s raw=%s e=%s end\n' "$n" "$name" "$rc" "$t0" "$t1" "$(b64 __RAWCAP__ "$d/$name.raw")" "$(b64 512 "$d/$name.e")" > "$d/$name.rec"
  fi
}
"#;

/// One HTTP probe of a script: `http://{host}:{port}{path}`, recorded under `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptProbe {
    /// Record name: letters, digits, `-`, `_` and `.` only.
    pub name: String,
    /// A hostname or IPv4 address (validated by [`valid_host`]).
    pub host: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

fn valid_record_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || b"-_.".contains(&c))
}

/// The internal probes of `services`: `127.0.0.1:PORT` inside the container.
pub(crate) fn service_probes(services: &[&Service]) -> Vec<ScriptProbe> {
    services
        .iter()
        .map(|s| ScriptProbe {
            name: s.name.clone(),
            host: "127.0.0.1".into(),
            port: s.port,
            method: s.probe.method.clone(),
            path: s.probe.path.clone(),
            headers: s.probe.headers.clone(),
        })
        .collect()
}

/// Record name of execd's auth-mode answer inside the container (not a catalog name: those have no
/// `.`).
pub(crate) const AUTH_RECORD: &str = "exec.auth";

/// execd's `GET /exec` without a token, from inside the container: 401 where auth is on, 405 where
/// it is off (side-effect free). Probed in the same batch as the services.
/// Not a service of its own: no unit and no back end (its 401/405 is not the exec service's
/// healthy 200, and with `cmux-execd` named here the back ends' section took every healthy run for
/// a failing execd and read its journal after the probes: one more process, serialised).
pub(crate) fn auth_probe_service(exec: &Service) -> Service {
    let mut s = exec.clone();
    s.name = AUTH_RECORD.to_string();
    s.probe.method = "GET".into();
    s.probe.path = "/exec".into();
    s.probe.headers.clear();
    s.unit.clear();
    s.backend = None;
    s
}

/// Most services probed by one batch line: each can add `(HEADER_CAP + BODY_CAP) * 4 / 3` bytes
/// to it, and execd passes lines of at most 1 MiB.
pub(crate) const BATCH_MAX: usize = 24;

/// Builds the one bash command that probes `services` inside the container: one `curl --parallel`
/// batch where curl can, the per-service probes otherwise; the back ends and the units of the
/// services ([`super::backend`]) in the same command.
pub fn build_command(services: &[&Service], nonce: &str, timeout: Duration) -> String {
    let mut probes = service_probes(services);
    probes.extend(super::backend::http_probes(services));
    // Body caps: what each service's fingerprint needs; the back ends' probes keep the most.
    let caps: Vec<usize> = services.iter().map(|s| body_cap(s)).collect();
    let batch = (!probes.is_empty() && probes.len() <= BATCH_MAX).then(|| batch(&probes, &caps));
    let section = Section {
        start: super::backend::start(services),
        finish: super::backend::finish(services),
    };
    // Who the command runs in comes first: the batch may end the script.
    let identity = crate::identity::CONTAINER_SECTION;
    script(
        &probes,
        batch.as_deref(),
        Some(&section),
        nonce,
        timeout,
        Some(identity),
        None,
    )
}

/// Code around the probes: `start` becomes `b_start`, run once curl's batch is on its way (or before
/// the per-service probes), so the section's forks are not on the probes' path; `finish` defines
/// `b_end`, run after them.
struct Section {
    start: String,
    finish: String,
}

/// Builds a bash script that runs every probe concurrently and prints one record each (the host
/// vantage's probes: any host, one probe per record).
/// Probes whose name or host is not valid are left out (their record is then missing).
pub fn build_script(probes: &[ScriptProbe], nonce: &str, timeout: Duration) -> String {
    script(probes, None, None, nonce, timeout, None, None)
}

/// [`build_script`] with one more job (`job`, a self-contained bash section) run in the background
/// next to the probes; its output goes straight to stdout.
pub(crate) fn build_script_with_job(
    probes: &[ScriptProbe],
    nonce: &str,
    timeout: Duration,
    job: &str,
) -> String {
    script(probes, None, None, nonce, timeout, None, Some(job))
}

fn script(
    probes: &[ScriptProbe],
    batch: Option<&str>,
    section: Option<&Section>,
    nonce: &str,
    timeout: Duration,
    first: Option<&str>,
    job: Option<&str>,
) -> String {
    let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
    let mut cmd = HEAD
        .replace("__NONCE__", &shell_quote(nonce))
        .replace("__TIMEOUT__", &shell_quote(&secs));
    if let Some(f) = first {
        cmd.push_str(f);
    }
    match section {
        Some(sec) => {
            cmd.push_str("bs=\nb_start() {\n  [ -z \"$bs\" ] || return 0\n  bs=1\n");
            cmd.push_str(&sec.start);
            cmd.push_str("}\n");
            cmd.push_str(&sec.finish);
        }
        None => cmd.push_str("b_start() { :; }\nb_mid() { :; }\nb_end() { :; }\n"),
    }
    if let Some(b) = batch {
        cmd.push_str(b);
    }
    cmd.push_str(
        &PRELUDE
            .replace("__HCAP__", &HEADER_CAP.to_string())
            .replace("__BCAP__", &BODY_CAP.to_string())
            .replace("__RAWCAP__", &(HEADER_CAP + BODY_CAP).to_string()),
    );
    // The section's start, where the batch did not run it (once only).
    cmd.push_str("b_start\n");
    for p in probes {
        if !valid_record_name(&p.name) || !valid_host(&p.host) {
            continue;
        }
        let mut line = format!(
            "p {} {} {} {} {}",
            shell_quote(&p.name),
            shell_quote(&p.host),
            p.port,
            shell_quote(&p.method),
            shell_quote(&p.path)
        );
        for (k, v) in &p.headers {
            line.push(' ');
            line.push_str(&shell_quote(&format!("{k}: {v}")));
        }
        line.push_str(" &\n");
        cmd.push_str(&line);
    }
    if let Some(j) = job {
        cmd.push_str(&format!("(\n{j}) &\n"));
    }
    cmd.push_str("b_mid\nwait\ncat \"$d\"/*.rec 2>/dev/null\nb_end\nexit 0\n");
    cmd
}

/// The batch: one `curl --parallel` for every service, then one record line per service written by
/// bash itself; falls through to the per-service probes when curl cannot (old curl: exit 2 or no
/// `%{exitcode}` in the `-w` output) or the files cannot be made. The files are
/// `$TMPDIR/pvediag.PID.RANDOM.*` (without TMPDIR: in `/dev/shm` where it is writable, memory
/// rather than disk, else `/tmp`), each created by bash with noclobber (O_EXCL: never someone
/// else's file or link) before curl writes it — no `mktemp` process on the way.
///
/// Lean: the container runs bash, curl and `rm`, nothing else, and curl writes one file per answer
/// (`-i`: the header dump, then the body; the `-w` line's header size splits them). Bash reads each
/// header dump and each body (up to [`body_cap`] of the service: what its fingerprint needs) with
/// `read -N`, escapes
/// it with parameter expansion (`\` `\\`, newline `\n`, CR `\r`, space `\s`) and prints it; at the
/// end `rm` removes the files in the background (the stream ends without waiting for it).
/// `caps[i]`: the body bytes kept for `probes[i]`.
fn batch(probes: &[ScriptProbe], caps: &[usize]) -> String {
    let n = probes.len();
    let mut c = String::from(
        "if [ \"$via\" = curl ]; then\n  qd=${TMPDIR:-/tmp}\n  [ -z \"$TMPDIR\" ] && [ -d /dev/shm ] && [ -w /dev/shm ] && qd=/dev/shm\n  q=$qd/pvediag.$$.$RANDOM$RANDOM\n  ok=1\n  set -C\n  for f in w",
    );
    for i in 0..n {
        c.push_str(&format!(" {i}"));
    }
    c.push_str("; do { : >\"$q.$f\"; } 2>/dev/null || ok=0; done\n  set +C\n");
    c.push_str(&format!(
        "  if [ $ok = 1 ]; then\n    curl --parallel --parallel-immediate --no-progress-meter --parallel-max {n}"
    ));
    for (i, s) in probes.iter().enumerate() {
        if i > 0 {
            c.push_str(" \\\n      --next");
        }
        let method = if s.method == "HEAD" {
            "-I".to_string()
        } else {
            format!("-X {}", shell_quote(&s.method))
        };
        c.push_str(&format!(
            " -s --max-time \"$T\" -i -o \"$q.{i}\" -w {} {method}",
            // Names are [a-z0-9-.]: nothing for -w to interpret.
            shell_quote(&format!(
                "{} %{{exitcode}} %{{http_code}} %{{time_total}} %{{size_header}} %{{size_download}} %{{errormsg}}\\n",
                s.name
            ))
        ));
        for (k, v) in &s.headers {
            c.push_str(&format!(" -H {}", shell_quote(&format!("{k}: {v}"))));
        }
        c.push_str(&format!(
            " {}",
            shell_quote(&format!("http://{}:{}{}", s.host, s.port, s.path))
        ));
    }
    // curl first, then the back ends' and units' section while curl runs (`b_start`: its forks;
    // `b_mid`: systemd's answer and the banners read and printed), then wait for curl.
    c.push_str(" >\"$q.w\" 2>/dev/null &\n    cp=$!\n    b_start\n    b_mid\n    wait $cp\n");
    c.push_str(&format!(
        "    mapfile -t W < \"$q.w\"\n    [ \"${{#W[@]}}\" -eq {n} ] || ok=0\n"
    ));
    c.push_str(
        "    for l in \"${W[@]}\"; do r=${l#* }; r=${r%% *}; case $r in ''|*[!0-9]*) ok=0;; esac; done\n",
    );
    let names: Vec<&str> = probes.iter().map(|s| s.name.as_str()).collect();
    let caps: Vec<String> = (0..n)
        .map(|i| caps.get(i).copied().unwrap_or(BODY_CAP).to_string())
        .collect();
    c.push_str(&format!(
        "    if [ $ok = 1 ]; then\n      N=({})\n      C=({})\n",
        names.join(" "),
        caps.join(" ")
    ));
    c.push_str(&RECORDS.replace("__HCAP__", &HEADER_CAP.to_string()));
    // Its own files, named (no directory scan), removed in the background: the stream's end does
    // not wait for `rm`.
    let files: Vec<String> = std::iter::once("\"$q.w\"".to_string())
        .chain((0..n).map(|i| format!("\"$q.{i}\"")))
        .collect();
    // The back ends' and units' section ends first (`b_end`, issue 14).
    c.push_str(&format!(
        "      b_end\n      trap - EXIT\n      rm -f -- {} </dev/null >/dev/null 2>&1 &\n      exit 0\n    fi\n  fi\nfi\n",
        files.join(" ")
    ));
    c
}

/// Bash (builtins only) that prints one `@pvediagr` record per service of the batch: `N` names,
/// `C` body caps, `W` curl's `-w` lines, the file `$q.I` (curl's `-i`: the header dump, then the
/// body; its `-w` line's 5th field is the header dump's size). `LC_ALL=C`: `read -N` counts bytes.
/// One file per answer instead of two (`-D`): what curl and `rm` do in the container is less.
const RECORDS: &str = r#"      LC_ALL=C
      B='\'
      esc() { x=${x//"$B"/"$B$B"}; x=${x//$'\n'/"${B}n"}; x=${x//$'\r'/"${B}r"}; x=${x//' '/"${B}s"}; }
      for i in "${!N[@]}"; do
        x=; for l in "${W[@]}"; do case $l in "${N[i]} "*) x=$l; break ;; esac; done
        hs=${x#* }; hs=${hs#* }; hs=${hs#* }; hs=${hs#* }; hs=${hs%% *}
        case $hs in ''|*[!0-9]*) hs=0 ;; esac
        hk=$(( hs < __HCAP__ ? hs : __HCAP__ ))
        esc; w=$x
        h=; x=
        {
          [ $hk -gt 0 ] && { IFS= read -r -d '' -N $hk h; [ $hs -gt $hk ] && IFS= read -r -d '' -N $(( hs - hk )) x; }
          x=; IFS= read -r -d '' -N "${C[i]}" x
        } < "$q.$i" 2>/dev/null
        b=$x; x=$h; esc; h=$x; x=$b; esc
        printf '@pvediagr %s %s %s %s %s %s end\n' "$n" "${N[i]}" "${C[i]}" "$w" "$h" "$x"
      done
"#;

/// Body bytes an internal probe keeps for `s`: what its fingerprint needs to be checked (a whole
/// body, up to [`BODY_CAP`], when a pattern, a substring or JSON keys are looked for; the prefix
/// for a prefix), and never less than [`EVIDENCE_CAP`] (what a report shows of a body).
pub(crate) fn body_cap(s: &Service) -> usize {
    let f = &s.healthy.fingerprint;
    if f.body_matches.is_some() || f.body_contains.is_some() || !f.json_keys.is_empty() {
        return BODY_CAP;
    }
    f.body_prefix
        .as_ref()
        .map_or(0, |p| p.len())
        .clamp(EVIDENCE_CAP, BODY_CAP)
}

/// Body bytes kept where the fingerprint needs none: enough for the evidence of a report.
pub(crate) const EVIDENCE_CAP: usize = 1024;

/// Decodes a field escaped by [`RECORDS`] (`\\`, `\n`, `\r`, `\s`; anything else as it is).
fn unescape(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 1 < b.len() {
            let c = match b[i + 1] {
                b'\\' => Some(b'\\'),
                b'n' => Some(b'\n'),
                b'r' => Some(b'\r'),
                b's' => Some(b' '),
                _ => None,
            };
            if let Some(c) = c {
                out.push(c);
                i += 2;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    out
}

/// Parses one `@pvediagr` record line of `nonce` (the batch's); `None` for anything else.
pub(crate) fn parse_batch_record(line: &str, nonce: &str) -> Option<Record> {
    let rest = line.strip_prefix("@pvediagr ")?;
    let f: Vec<&str> = rest.split(' ').collect();
    if f.len() != 7 || f[0] != nonce || f[6] != "end" {
        return None;
    }
    let name = f[1];
    if !valid_record_name(name) {
        return None;
    }
    let cap: usize = f[2].parse().ok()?;
    let w = String::from_utf8_lossy(&unescape(f[3])).into_owned();
    let header_dump = unescape(f[4]);
    let body = unescape(f[5]);
    // curl's -w line: NAME RC CODE TIME HEADER_BYTES BODY_BYTES ERRMSG
    let mut it = w.splitn(7, ' ');
    if it.next()? != name {
        return None;
    }
    let rc: i32 = it.next()?.parse().ok()?;
    let code: u16 = it.next()?.parse().unwrap_or(0);
    let t: f64 = it.next()?.parse().unwrap_or(0.0);
    let _h: usize = it.next()?.parse().ok()?;
    let b: usize = it.next()?.parse().ok()?;
    let err = it.next().unwrap_or("").trim().to_string();
    let elapsed_ms = (t * 1000.0).round().max(0.0) as u64;
    let probe = if rc == 0 && code >= 100 {
        let h = &header_dump[..header_dump.len().min(HEADER_CAP)];
        let mut r = response_from(code, h, &body);
        r.body_truncated = b > cap;
        Probe::Response {
            response: r,
            elapsed_ms,
        }
    } else {
        curl_failure(rc, &err, elapsed_ms)
    };
    Some(Record {
        name: name.to_string(),
        via_bash: false,
        probe,
    })
}

/// Parses a batch record line (`@pvediagr ...`, one service each) of `nonce`; `None` for any
/// other line, or a record that is not complete and consistent (then its service gets no record).
pub(crate) fn parse_batch(line: &str, nonce: &str) -> Option<Vec<Record>> {
    parse_batch_record(line, nonce).map(|r| vec![r])
}

/// One decoded record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub via_bash: bool,
    pub probe: Probe,
}

/// Parses one stdout line; `None` when it is not a complete record of this nonce.
pub fn parse_record(line: &str, nonce: &str) -> Option<Record> {
    let rest = line.strip_prefix("@pvediag1 ")?;
    let mut it = rest.split(' ');
    if it.next()? != nonce {
        return None;
    }
    let name = it.next()?.to_string();
    let mut fields = std::collections::HashMap::new();
    let mut ended = false;
    for f in it {
        if f == "end" {
            ended = true;
            break;
        }
        let (k, v) = f.split_once('=')?;
        fields.insert(k, v);
    }
    if !ended {
        return None;
    }
    let dec = |k: &str| -> Option<Vec<u8>> {
        let v = fields.get(k)?;
        base64::engine::general_purpose::STANDARD.decode(v).ok()
    };
    let rc: i32 = fields.get("rc")?.parse().ok()?;
    let stderr = String::from_utf8_lossy(&dec("e")?).trim().to_string();
    let via = *fields.get("via")?;
    match via {
        "curl" => {
            let t: f64 = fields.get("t").and_then(|t| t.parse().ok()).unwrap_or(0.0);
            let elapsed_ms = (t * 1000.0).round().max(0.0) as u64;
            let headers = dec("h")?;
            let body = dec("b")?;
            let code: u16 = fields.get("code").and_then(|c| c.parse().ok()).unwrap_or(0);
            let probe = if rc == 0 && code >= 100 {
                Probe::Response {
                    response: response_from(code, &headers, &body),
                    elapsed_ms,
                }
            } else {
                curl_failure(rc, &stderr, elapsed_ms)
            };
            Some(Record {
                name,
                via_bash: false,
                probe,
            })
        }
        "bash" => {
            let t0: f64 = fields.get("t0").and_then(|t| t.parse().ok()).unwrap_or(0.0);
            let t1: f64 = fields.get("t1").and_then(|t| t.parse().ok()).unwrap_or(t0);
            let elapsed_ms = ((t1 - t0) * 1000.0).round().max(0.0) as u64;
            let raw = dec("raw")?;
            let probe = match (rc, parse_raw_response(&raw)) {
                (0, Some(r)) => Probe::Response {
                    response: r,
                    elapsed_ms,
                },
                (0, None) if raw.is_empty() => Probe::Failed {
                    kind: FailureKind::EmptyReply,
                    message: "the connection closed without an answer (bash /dev/tcp)".into(),
                    elapsed_ms,
                },
                (0, None) => Probe::Failed {
                    kind: FailureKind::Protocol,
                    message: "the answer is not HTTP (bash /dev/tcp)".into(),
                    elapsed_ms,
                },
                _ => curl_failure(rc, &stderr, elapsed_ms),
            };
            Some(Record {
                name,
                via_bash: true,
                probe,
            })
        }
        _ => None,
    }
}

/// Text from the container made safe to print: control characters (terminal escapes, bells,
/// line breaks) become spaces.
pub(crate) fn printable(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

fn curl_failure(rc: i32, stderr: &str, elapsed_ms: u64) -> Probe {
    let kind = FailureKind::from_curl_exit(rc);
    let mut message = format!("curl exit {rc}");
    if !stderr.is_empty() {
        message.push_str(": ");
        message.push_str(&printable(&stderr.chars().take(200).collect::<String>()));
    }
    Probe::Failed {
        kind,
        message,
        elapsed_ms,
    }
}

/// Builds the response from curl's `-D` header dump (the last header block wins: 100-continue and
/// the like come first) and the body.
fn response_from(code: u16, header_dump: &[u8], body: &[u8]) -> HttpResponse {
    let text = String::from_utf8_lossy(header_dump);
    let mut headers = Vec::new();
    for line in text.split('\n') {
        let line = line.trim_end_matches('\r');
        if line.starts_with("HTTP/") {
            headers.clear();
            continue;
        }
        if let Some((k, v)) = line.split_once(':') {
            if headers.len() < 64 {
                headers.push((
                    printable(k.trim()).to_ascii_lowercase(),
                    printable(&v.trim().chars().take(256).collect::<String>()),
                ));
            }
        }
    }
    HttpResponse {
        status: code,
        headers,
        body: String::from_utf8_lossy(body).into_owned(),
        body_truncated: body.len() >= BODY_CAP,
    }
}

/// Parses a raw HTTP/1.x response (the bash fallback's capture).
pub fn parse_raw_response(raw: &[u8]) -> Option<HttpResponse> {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4))
        .or_else(|| {
            raw.windows(2)
                .position(|w| w == b"\n\n")
                .map(|i| (i, i + 2))
        })?;
    let head = String::from_utf8_lossy(&raw[..split.0]);
    let mut lines = head.split('\n');
    let status_line = lines.next()?.trim_end_matches('\r');
    let mut parts = status_line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    let status: u16 = parts.next()?.parse().ok()?;
    if !(100..=599).contains(&status) {
        return None;
    }
    let headers = lines
        .filter_map(|l| {
            let (k, v) = l.trim_end_matches('\r').split_once(':')?;
            Some((
                printable(k.trim()).to_ascii_lowercase(),
                printable(&v.trim().chars().take(256).collect::<String>()),
            ))
        })
        .take(64)
        .collect();
    let body = &raw[split.1..];
    Some(HttpResponse {
        status,
        headers,
        body: String::from_utf8_lossy(&body[..body.len().min(BODY_CAP)]).into_owned(),
        body_truncated: body.len() > BODY_CAP,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::Catalog;

    fn b64(s: &[u8]) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    #[test]
    fn invalid_names_and_hosts_never_reach_the_script() {
        let mut p = ScriptProbe {
            name: "caddy.xterm".into(),
            host: "cmux-202.lan".into(),
            port: 39383,
            method: "GET".into(),
            path: "/sessions".into(),
            headers: vec![("Host".into(), "xterm-202.example.test".into())],
        };
        let ok = build_script(std::slice::from_ref(&p), "n", Duration::from_secs(1));
        assert!(ok.contains("p 'caddy.xterm' 'cmux-202.lan' 39383 'GET' '/sessions' 'Host: xterm-202.example.test' &"));
        for host in ["$(id)", "a b", "-oProxyCommand=x", "", "a;b"] {
            p.host = host.into();
            let s = build_script(std::slice::from_ref(&p), "n", Duration::from_secs(1));
            assert!(!s.contains("p 'caddy.xterm'"), "{host}");
        }
    }

    #[test]
    fn curl_record_round_trip() {
        let h = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: application/json\r\nAccess-Control-Allow-Origin: *\r\n\r\n";
        let line = format!(
            "@pvediag1 abc xterm via=curl rc=0 code=200 t=0.012 h={} b={} e= end",
            b64(h),
            b64(br#"{"sessions":[]}"#)
        );
        let r = parse_record(&line, "abc").unwrap();
        assert_eq!(r.name, "xterm");
        let resp = r.probe.response().unwrap();
        assert_eq!(resp.status, 200);
        assert_eq!(resp.header("access-control-allow-origin"), Some("*"));
        assert_eq!(resp.headers.len(), 2);
        assert_eq!(resp.body, r#"{"sessions":[]}"#);
        assert!(matches!(r.probe, Probe::Response { elapsed_ms: 12, .. }));
    }

    #[test]
    fn curl_failures_map_exit_codes() {
        for (rc, kind) in [
            (7, FailureKind::Refused),
            (28, FailureKind::Timeout),
            (6, FailureKind::Dns),
            (52, FailureKind::EmptyReply),
            (56, FailureKind::Receive),
            (35, FailureKind::Tls),
            (99, FailureKind::Other),
        ] {
            let line = format!(
                "@pvediag1 n vscode via=curl rc={rc} code=000 t=0 h= b= e={} end",
                b64(b"curl: (7) Failed to connect")
            );
            let r = parse_record(&line, "n").unwrap();
            assert_eq!(r.probe.failure(), Some(kind), "rc {rc}");
        }
    }

    #[test]
    fn records_of_other_nonces_or_cut_lines_are_ignored() {
        let ok = format!(
            "@pvediag1 n exec via=curl rc=0 code=200 t=0 h= b={} e= end",
            b64(b"ok")
        );
        assert!(parse_record(&ok, "n").is_some());
        assert!(parse_record(&ok, "m").is_none());
        assert!(parse_record(&ok[..ok.len() - 4], "n").is_none());
        assert!(parse_record(
            "@pvediag1 n exec via=curl rc=0 code=200 h=!!! b= e= end",
            "n"
        )
        .is_none());
        assert!(parse_record("hello", "n").is_none());
        assert!(parse_record("@pvediag1 n x via=ftp rc=0 e= end", "n").is_none());
    }

    #[test]
    fn bash_fallback_records() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok";
        let line = format!(
            "@pvediag1 n exec via=bash rc=0 t0=100.000 t1=100.250 raw={} e= end",
            b64(raw)
        );
        let r = parse_record(&line, "n").unwrap();
        assert!(r.via_bash);
        assert_eq!(r.probe.response().unwrap().body, "ok");
        assert!(matches!(
            r.probe,
            Probe::Response {
                elapsed_ms: 250,
                ..
            }
        ));
        let refused = format!(
            "@pvediag1 n exec via=bash rc=7 t0=1 t1=1 raw= e={} end",
            b64(b"bash: connect: Connection refused")
        );
        assert_eq!(
            parse_record(&refused, "n").unwrap().probe.failure(),
            Some(FailureKind::Refused)
        );
        let empty = "@pvediag1 n exec via=bash rc=0 t0=1 t1=1 raw= e= end";
        assert_eq!(
            parse_record(empty, "n").unwrap().probe.failure(),
            Some(FailureKind::EmptyReply)
        );
    }

    #[test]
    fn raw_response_parsing() {
        assert!(parse_raw_response(b"garbage").is_none());
        assert!(parse_raw_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_none());
        let r = parse_raw_response(b"HTTP/1.0 404 Not Found\nX: y\n\nnope").unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.header("x"), Some("y"));
    }

    #[test]
    fn command_quotes_every_catalog_value() {
        let c = Catalog::embedded();
        let svcs: Vec<&Service> = c.services.iter().collect();
        let cmd = build_command(&svcs, "feed", Duration::from_secs(5));
        assert!(cmd.contains("p 'xterm' '127.0.0.1' 39383 'GET' '/sessions' &"));
        assert!(cmd.contains(
            "p 'proxy' '127.0.0.1' 39379 'GET' '/healthz' 'X-Cmux-Port-Internal: 39375' &"
        ));
        assert!(cmd.contains(
            "p 'worker' '127.0.0.1' 39377 'GET' '/socket.io/?EIO=4&transport=polling' &"
        ));
        assert!(cmd.contains("T='5.000'"));
    }

    #[test]
    fn batch_record_round_trip() {
        let esc = |b: &[u8]| {
            String::from_utf8(b.to_vec())
                .unwrap()
                .replace('\\', "\\\\")
                .replace('\n', "\\n")
                .replace('\r', "\\r")
                .replace(' ', "\\s")
        };
        let h = b"HTTP/1.1 200 OK\r\nContent-Type: x/y\r\n\r\n";
        let line = format!(
            "@pvediagr n exec 1024 {} {} {} end",
            esc(b"exec 0 200 0.052 38 2 "),
            esc(h),
            esc(b"ok")
        );
        let rs = parse_batch(&line, "n").unwrap();
        assert_eq!(rs.len(), 1);
        assert_eq!(rs[0].name, "exec");
        let r = rs[0].probe.response().unwrap();
        assert_eq!((r.status, r.body.as_str()), (200, "ok"));
        assert_eq!(r.header("content-type"), Some("x/y"));
        assert!(!r.body_truncated);
        assert!(matches!(
            rs[0].probe,
            Probe::Response { elapsed_ms: 52, .. }
        ));
        // A body with every escaped byte, longer than its cap.
        let body = b"a b\\c\r\nd\\n";
        let line = format!(
            "@pvediagr n preview 1024 {} {} {} end",
            esc(b"preview 0 200 0.001 38 5000 "),
            esc(h),
            esc(body)
        );
        let r = parse_batch_record(&line, "n").unwrap();
        let resp = r.probe.response().unwrap();
        assert_eq!(resp.body.as_bytes(), body);
        assert!(resp.body_truncated);
        // A failure: curl's exit code and message.
        let line = format!(
            "@pvediagr n xterm 16384 {} \\s {} end",
            esc(b"xterm 7 000 0.001 0 0 Failed to connect to 127.0.0.1 port 39383"),
            ""
        );
        let r = parse_batch_record(&line, "n").unwrap();
        assert_eq!(r.probe.failure(), Some(FailureKind::Refused));
        // Another nonce, a cut line, a -w line of another name, a name that is not one: nothing.
        let ok = format!(
            "@pvediagr n exec 1024 {} {} {} end",
            esc(b"exec 0 200 0.052 38 2 "),
            esc(h),
            esc(b"ok")
        );
        assert!(parse_batch(&ok, "m").is_none());
        assert!(parse_batch(&ok[..ok.len() - 4], "n").is_none());
        assert!(parse_batch(&ok.replace(" exec 1024", " xterm 1024"), "n").is_none());
        assert!(parse_batch(&ok.replace(" exec 1024", " $(id) 1024"), "n").is_none());
    }

    #[test]
    fn the_batch_encodes_bodies_with_bash_builtins_only() {
        // Run the record section itself over files with every awkward byte, and decode its output.
        let dir = tempfile::tempdir().unwrap();
        let q = dir.path().join("p");
        let q = q.to_str().unwrap();
        // curl's `-i`: the header dump, then the body, in one file; the `-w` line's 5th field is
        // the dump's size. A body that starts like headers stays the body.
        let body: Vec<u8> =
            b"HTTP/1.1 200 OK\r\n\r\nline one\r\nline\ttwo \\ back\\slash\n\n  end ".to_vec();
        let head0: &[u8] = b"HTTP/1.1 200 OK\r\nX: a b\r\n\r\n";
        std::fs::write(format!("{q}.0"), [head0, &body].concat()).unwrap();
        let head1: &[u8] = b"HTTP/1.1 404 Not Found\r\n\r\n";
        std::fs::write(format!("{q}.1"), [head1, &vec![b'z'; 3000]].concat()).unwrap();
        // Headers longer than the cap: the first HEADER_CAP bytes kept, the body still found.
        let long = format!(
            "HTTP/1.1 200 OK\r\nX-Long: {}\r\n\r\n",
            "y".repeat(HEADER_CAP + 100)
        );
        std::fs::write(format!("{q}.2"), [long.as_bytes(), b"ok"].concat()).unwrap();
        let script = format!(
            "n=abc\nq={}\nW=('preview 0 404 0.002 {} 3000 ' 'exec 0 200 0.001 {} {} ' 'proxy 0 200 0.001 {} 2 ')\nN=(exec preview proxy)\nC=(16384 1024 1024)\n{}",
            shell_quote(q),
            head1.len(),
            head0.len(),
            body.len(),
            long.len(),
            RECORDS.replace("__HCAP__", &HEADER_CAP.to_string())
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let recs: Vec<Record> = stdout
            .lines()
            .filter_map(|l| parse_batch_record(l, "abc"))
            .collect();
        assert_eq!(recs.len(), 3, "{stdout}");
        let r = recs[0].probe.response().unwrap();
        assert_eq!(r.body.as_bytes(), &body[..], "{stdout}");
        assert_eq!(r.header("x"), Some("a b"));
        assert!(!r.body_truncated);
        let p = recs[1].probe.response().unwrap();
        assert_eq!(
            (p.status, p.body.len(), p.body_truncated),
            (404, 1024, true)
        );
        let l = recs[2].probe.response().unwrap();
        assert_eq!((l.status, l.body.as_str()), (200, "ok"), "{stdout}");
    }

    #[test]
    fn body_caps_follow_the_fingerprints() {
        let c = Catalog::embedded();
        let cap = |n: &str| body_cap(c.get(n).unwrap());
        assert_eq!(cap("exec"), BODY_CAP); // body_matches
        assert_eq!(cap("vnc"), BODY_CAP); // body_contains
        assert_eq!(cap("xterm"), BODY_CAP); // json_keys
        assert_eq!(cap("worker"), EVIDENCE_CAP); // a short prefix
        assert_eq!(cap("preview"), EVIDENCE_CAP); // no body check
    }

    #[test]
    fn batch_command_is_one_curl_with_a_fallback() {
        let c = Catalog::embedded();
        let svcs: Vec<&Service> = c.services.iter().collect();
        let cmd = build_command(&svcs, "feed", Duration::from_secs(5));
        assert_eq!(cmd.matches("curl --parallel").count(), 1);
        // One transfer per service, and one for the HTTP back end (cdp: Chrome DevTools).
        assert_eq!(cmd.matches("--next").count(), svcs.len());
        assert!(cmd.contains("'http://127.0.0.1:39382/json/version'"));
        assert!(cmd.contains("-H 'X-Cmux-Port-Internal: 39375' 'http://127.0.0.1:39379/healthz'"));
        // The per-service probes stay as the fallback.
        assert!(cmd.contains("p 'xterm' '127.0.0.1' 39383 'GET' '/sessions' &"));
        let many: Vec<&Service> = std::iter::repeat_n(svcs[0], BATCH_MAX + 1).collect();
        assert!(!build_command(&many, "feed", Duration::from_secs(5)).contains("--parallel"));
    }
}
