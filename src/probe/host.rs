//! The host vantage: the same kind of bash script as the internal probe, run on the PVE host itself
//! (`--on-host`: locally; `--ssh USER@HOST`: through the system ssh client in BatchMode), probing
//! each hop directly: Caddy's listener with the public Host header, the upstream `cmux-{vmid}.lan:PORT`
//! exactly as Caddy dials it, and cloudflared's `/ready`. It also offers `pct exec VMID -- bash -s`
//! as the internal channel when the exec endpoint cannot be used.
//!
//! Scripts travel on stdin, never on a command line; the only words of the remote command are
//! constants and the validated VMID.

use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::observation::{
    ExecRun, FailureKind, HostObservation, HostServiceObservation, PctRun, Probe,
};
use crate::probe::internal::{self, build_script, parse_batch, parse_record, Record, ScriptProbe};
use crate::probe::ProbeConfig;

/// cloudflared's metrics server: the first free port of this range (its `/ready` endpoint).
pub(crate) const CLOUDFLARED_READY_PORTS: std::ops::RangeInclusive<u16> = 20241..=20245;

/// Caddy's admin API as the host sees it, and the request that gives its loaded configuration.
pub(crate) const CADDY_ADMIN_HOST: &str = "127.0.0.1";
pub(crate) const CADDY_ADMIN_PORT: u16 = 2019;
pub(crate) const CADDY_ADMIN_PATH: &str = "GET http://127.0.0.1:2019/config/";

/// Where host scripts run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vantage {
    /// On this machine (pvediag runs on the PVE host).
    Local,
    /// `ssh -o BatchMode=yes DEST` (validated `[user@]host`).
    Ssh(String),
}

impl Vantage {
    pub(crate) fn describe(&self) -> String {
        match self {
            Vantage::Local => "local".into(),
            Vantage::Ssh(d) => format!("ssh {d}"),
        }
    }
}

/// The host vantage's settings, validated.
#[derive(Debug, Clone)]
pub(crate) struct HostConfig {
    pub(crate) vantage: Vantage,
    /// Caddy's listener as seen from the host.
    pub(crate) caddy_host: String,
    pub(crate) caddy_port: u16,
    /// The upstream host Caddy dials; `{vmid}` is replaced (default `cmux-{vmid}.lan`).
    pub(crate) upstream_template: String,
    /// Use `pct exec` when the exec endpoint cannot be used.
    pub(crate) pct_fallback: bool,
    /// Extra environment for local scripts (the lab uses it to give curl the host's view).
    pub(crate) env: Vec<(String, String)>,
}

/// A `--ssh` destination: `[user@]host`, no option-looking or shell-special characters.
pub(crate) fn valid_ssh_dest(d: &str) -> bool {
    let (user, host) = match d.split_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, d),
    };
    let user_ok = user.is_none_or(|u| {
        !u.is_empty()
            && u.len() <= 32
            && !u.starts_with('-')
            && u.bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
    });
    user_ok && crate::shell::valid_host(host)
}

/// What a script run gave.
#[derive(Debug)]
pub(crate) struct ScriptOutput {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) status: Option<i32>,
}

/// Runs `script` with bash on the vantage, optionally inside a container through `pct exec`.
pub(crate) async fn run_script(
    cfg: &HostConfig,
    pct_vmid: Option<u32>,
    script: &str,
    timeout: Duration,
) -> Result<ScriptOutput, (FailureKind, String)> {
    let mut words: Vec<String> = Vec::new();
    if let Some(vmid) = pct_vmid {
        words.extend(["pct".into(), "exec".into(), vmid.to_string(), "--".into()]);
    }
    words.extend(["bash".into(), "-s".into()]);
    let mut cmd = match &cfg.vantage {
        Vantage::Local => {
            let mut c = tokio::process::Command::new(&words[0]);
            c.args(&words[1..]);
            for (k, v) in &cfg.env {
                c.env(k, v);
            }
            c
        }
        Vantage::Ssh(dest) => {
            let mut c = tokio::process::Command::new("ssh");
            let connect = timeout.as_secs().clamp(1, 30).to_string();
            c.args([
                "-o",
                "BatchMode=yes",
                "-o",
                &format!("ConnectTimeout={connect}"),
                "-T",
                "--",
                dest,
            ]);
            // ssh joins the remote words with spaces: they are constants and a number.
            c.args(&words);
            c
        }
    };
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|e| {
        let program = match &cfg.vantage {
            Vantage::Local => words[0].clone(),
            Vantage::Ssh(_) => "ssh".into(),
        };
        let why = if e.kind() == std::io::ErrorKind::NotFound {
            "not installed here".to_string()
        } else {
            e.kind().to_string()
        };
        (FailureKind::Other, format!("cannot start {program}: {why}"))
    })?;
    let mut stdin = child.stdin.take();
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let script = script.to_string();
    let work = async move {
        let feed = async {
            if let Some(mut i) = stdin.take() {
                let _ = i.write_all(script.as_bytes()).await;
                let _ = i.shutdown().await;
            }
        };
        let read_out = async {
            let mut buf = Vec::new();
            if let Some(o) = stdout.as_mut() {
                let _ = o.take(8 * 1024 * 1024).read_to_end(&mut buf).await;
            }
            buf
        };
        let read_err = async {
            let mut buf = Vec::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.take(64 * 1024).read_to_end(&mut buf).await;
            }
            buf
        };
        let ((), out, err) = tokio::join!(feed, read_out, read_err);
        let status = child.wait().await.ok().and_then(|s| s.code());
        ScriptOutput {
            stdout: String::from_utf8_lossy(&out).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
            status,
        }
    };
    tokio::time::timeout(timeout, work).await.map_err(|_| {
        (
            FailureKind::Timeout,
            format!("no complete answer within {} ms", timeout.as_millis()),
        )
    })
}

/// Turns a script's output into records and a run outcome.
fn collect(
    out: Result<ScriptOutput, (FailureKind, String)>,
    nonce: &str,
    what: &str,
    elapsed_ms: u64,
) -> (ExecRun, Vec<Record>) {
    match out {
        Err((kind, message)) => (ExecRun::Failed { kind, message }, Vec::new()),
        Ok(o) => {
            let records: Vec<Record> = o
                .stdout
                .lines()
                .flat_map(|l| {
                    let l = l.trim_end_matches('\r');
                    match parse_record(l, nonce) {
                        Some(r) => vec![r],
                        None => parse_batch(l, nonce).unwrap_or_default(),
                    }
                })
                .collect();
            let first_err = o
                .stderr
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.chars().take(200).collect::<String>());
            if records.is_empty() && o.status != Some(0) {
                // ssh says 255 for its own failures; pct and bash their own codes.
                let message = format!(
                    "{what} exited {}{}",
                    o.status
                        .map_or("by a signal".to_string(), |c| c.to_string()),
                    first_err.map(|e| format!(": {e}")).unwrap_or_default()
                );
                let kind = if o.status == Some(255) {
                    FailureKind::Refused
                } else {
                    FailureKind::Other
                };
                return (ExecRun::Failed { kind, message }, records);
            }
            let mut notes = Vec::new();
            if let Some(e) = first_err {
                notes.push(format!("stderr: {e}"));
            }
            let used_fallback = records.iter().any(|r| r.via_bash);
            (
                ExecRun::Completed {
                    exit_code: o.status,
                    notes,
                    used_fallback,
                    elapsed_ms,
                },
                records,
            )
        }
    }
}

/// The internal probes through `pct exec` on the host.
pub(crate) async fn pct_internal(
    cfg: &HostConfig,
    script: &str,
    nonce: &str,
    vmid: u32,
    timeout: Duration,
) -> (
    PctRun,
    Vec<Record>,
    Vec<crate::probe::backend::BackendRecord>,
    Option<crate::identity::ReportedIdentity>,
) {
    let start = Instant::now();
    let out = run_script(cfg, Some(vmid), script, timeout).await;
    // Back ends, units and journal lines ride in the same script (probe/backend.rs).
    let backend = out
        .as_ref()
        .map(|o| {
            o.stdout
                .lines()
                .filter_map(|l| crate::probe::backend::parse_line(l.trim_end_matches('\r'), nonce))
                .take(512)
                .collect()
        })
        .unwrap_or_default();
    let identity = out.as_ref().ok().and_then(|o| {
        o.stdout
            .lines()
            .find_map(|l| crate::identity::parse_line(l.trim_end_matches('\r'), nonce))
    });
    let (run, records) = collect(
        out,
        nonce,
        &format!("pct exec {vmid}"),
        start.elapsed().as_millis() as u64,
    );
    (
        PctRun {
            vantage: cfg.vantage.describe(),
            run,
        },
        records,
        backend,
        identity,
    )
}

/// What the host shows about every target at once: cloudflared's readiness and the routes Caddy
/// has loaded. Probed once per run (one script), shared by every target.
#[derive(Debug, Clone)]
pub(crate) struct HostWide {
    pub(crate) cloudflared: Probe,
    pub(crate) caddy_config: Probe,
}

/// Runs `probes` on the host in one script and returns the run outcome and a lookup by name.
async fn run_probes(
    cfg: &HostConfig,
    probes: &[ScriptProbe],
    timeout: Duration,
    identity_of: Option<(&str, u32)>,
) -> (ExecRun, impl Fn(&str) -> Probe, crate::identity::HostLines) {
    let nonce = internal::new_nonce();
    // The target's identity (its `.lan` name on the host, `pct config`, its own address) in the
    // same script, next to the probes.
    let script = match identity_of {
        Some((lan_name, vmid)) if crate::shell::valid_host(lan_name) => {
            let job = crate::identity::host_section(lan_name, vmid, &nonce, cfg.pct_fallback);
            internal::build_script_with_job(probes, &nonce, timeout, &job)
        }
        _ => build_script(probes, &nonce, timeout),
    };
    let start = Instant::now();
    let out = run_script(cfg, None, &script, timeout + Duration::from_secs(5)).await;
    let lines = match &out {
        Ok(o) => crate::identity::parse_host_lines(&o.stdout, &nonce),
        Err(_) => Default::default(),
    };
    let (run, records) = collect(
        out,
        &nonce,
        &cfg.vantage.describe(),
        start.elapsed().as_millis() as u64,
    );
    let find = move |name: &str| -> Probe {
        records
            .iter()
            .find(|r| r.name == name)
            .map(|r| r.probe.clone())
            .unwrap_or_else(|| Probe::not_run("no record from the host script"))
    };
    (run, find, lines)
}

/// cloudflared's `/ready` (the first port of its range that answers) and Caddy's admin config.
pub(crate) async fn observe_wide(cfg: &HostConfig, timeout: Duration) -> HostWide {
    let mut probes: Vec<ScriptProbe> = CLOUDFLARED_READY_PORTS
        .map(|port| ScriptProbe {
            name: format!("ready.{port}"),
            host: "127.0.0.1".into(),
            port,
            method: "GET".into(),
            path: "/ready".into(),
            headers: Vec::new(),
        })
        .collect();
    probes.push(ScriptProbe {
        name: "caddy-admin".into(),
        host: CADDY_ADMIN_HOST.into(),
        port: CADDY_ADMIN_PORT,
        method: "GET".into(),
        path: "/config/".into(),
        headers: Vec::new(),
    });
    let (_, find, _) = run_probes(cfg, &probes, timeout, None).await;
    let mut cloudflared = Probe::not_run("no record from the host script");
    for port in CLOUDFLARED_READY_PORTS {
        let p = find(&format!("ready.{port}"));
        let answered = p.response().is_some();
        if answered || matches!(cloudflared, Probe::NotRun { .. }) {
            cloudflared = p;
        }
        if answered {
            break;
        }
    }
    HostWide {
        cloudflared,
        caddy_config: find("caddy-admin"),
    }
}

/// Probes one target's hops from the host, in one script run: Caddy's listener with each public
/// Host header, and each upstream as Caddy dials it. `wide` is the run's [`observe_wide`].
pub(crate) async fn observe(
    cfg: &HostConfig,
    probe: &ProbeConfig,
    vmid: u32,
    timeout: Duration,
    wide: impl std::future::Future<Output = HostWide>,
) -> HostObservation {
    let upstream_host = cfg
        .upstream_template
        .replace("{vmid}", &vmid.to_string())
        .replace("{instance}", &probe.instance(vmid));
    let mut probes = Vec::new();
    let mut upstream_urls = Vec::new();
    for s in probe.catalog.services.iter().filter(|s| s.routed) {
        let public = url::Url::parse(&probe.public_url(s, vmid)).ok();
        let host_header = public
            .as_ref()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let mut headers = s.probe.headers.clone();
        headers.push(("Host".into(), host_header));
        probes.push(ScriptProbe {
            name: format!("caddy.{}", s.name),
            host: cfg.caddy_host.clone(),
            port: cfg.caddy_port,
            method: s.probe.method.clone(),
            path: s.probe.path.clone(),
            headers,
        });
        probes.push(ScriptProbe {
            name: format!("upstream.{}", s.name),
            host: upstream_host.clone(),
            port: s.port,
            method: s.probe.method.clone(),
            path: s.probe.path.clone(),
            headers: s.probe.headers.clone(),
        });
        upstream_urls.push(format!("http://{upstream_host}:{}{}", s.port, s.probe.path));
    }
    let ((run, find, identity), wide) = tokio::join!(
        run_probes(cfg, &probes, timeout, Some((upstream_host.as_str(), vmid))),
        wide
    );
    let services = probe
        .catalog
        .services
        .iter()
        .filter(|s| s.routed)
        .zip(upstream_urls)
        .map(|(s, upstream_url)| HostServiceObservation {
            name: s.name.clone(),
            caddy: find(&format!("caddy.{}", s.name)),
            upstream_url,
            upstream: find(&format!("upstream.{}", s.name)),
        })
        .collect();
    HostObservation {
        vantage: cfg.vantage.describe(),
        run,
        caddy_url: format!("http://{}:{}", cfg.caddy_host, cfg.caddy_port),
        cloudflared: wide.cloudflared,
        caddy_config: wide.caddy_config,
        services,
        identity,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_destinations() {
        for ok in ["root@pve", "pve.lan", "admin@10.0.0.5", "a_b@host-1"] {
            assert!(valid_ssh_dest(ok), "{ok}");
        }
        for bad in [
            "-oProxyCommand=x",
            "root@-x",
            "@host",
            "a b",
            "root@h;id",
            "$(id)@h",
            "",
        ] {
            assert!(!valid_ssh_dest(bad), "{bad}");
        }
    }
}
