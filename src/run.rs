//! One diagnosis run: targets -> probes (concurrently) -> verdicts -> report.

use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::caddy::RouteTable;
use crate::cli::{CaddySource, DiagnoseConfig, UsageError};
use crate::http::{build_client, ClientOptions};
use crate::observation::{
    AuthMode, ExecChannel, ExecRun, Probe, RouteObservation, ServiceObservation, TargetObservation,
};
use crate::report::{CaddyReport, Report, TargetReport};
use crate::verdict::{diagnose, Context};

/// Targets probed at once by default (`--concurrency`). Each target in flight holds about eight
/// connections (six public URLs, the exec channel's two) and spawns one bash in
/// its container; 32 targets keep a run under about 30 MB and 300 sockets.
pub const CONCURRENCY: usize = 32;

/// The Caddyfile path on a PVE host, for next steps.
pub const HOST_CADDYFILE: &str = "/etc/caddy/Caddyfile.cmux";

/// Runs the diagnosis of every target of `cfg` within its deadline.
pub async fn run(cfg: &DiagnoseConfig) -> Result<Report, UsageError> {
    let start = Instant::now();
    let client = build_client(&ClientOptions {
        connect_to: cfg.connect_to,
        cacert_pem: cfg.cacert_pem.clone(),
        insecure: cfg.insecure,
        connect_timeout: Some(cfg.probe.timeout),
    })
    .map_err(|e| UsageError::new(e.to_string()))?;

    // Probes end on their own before the deadline: shrink their timeouts to fit inside it.
    let mut probe = cfg.probe.clone();
    let budget = cfg.deadline.saturating_sub(Duration::from_millis(200));
    if probe.timeout + probe.exec_grace > budget {
        probe.exec_grace = (budget / 5).min(probe.exec_grace);
        // Never longer than the user's --timeout: only the grace shrinks when that is enough.
        probe.timeout = budget
            .saturating_sub(probe.exec_grace)
            .max(Duration::from_millis(1))
            .min(probe.timeout);
    }

    let caddy_read = read_caddy(cfg);
    // The origin check names no VMID: one request serves every target.
    let origin = crate::probe::origin_check(&client, &probe).boxed().shared();
    // Likewise the host's cloudflared readiness and Caddy's loaded routes.
    let host_wide = crate::probe::host_wide(&probe).boxed().shared();
    let sem = tokio::sync::Semaphore::new(cfg.concurrency.max(1));
    let progress = Progress::new(
        cfg.vmids.len(),
        !cfg.quiet && cfg.vmids.len() > 1 && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let observations = futures_util::future::join_all(cfg.vmids.iter().map(|&vmid| {
        let (client, probe, sem, origin, host_wide, progress) = (
            &client,
            &probe,
            &sem,
            origin.clone(),
            host_wide.clone(),
            &progress,
        );
        async move {
            let remaining = cfg.deadline.saturating_sub(start.elapsed());
            let work = async {
                let _permit = sem.acquire().await;
                crate::probe::observe_with(client, probe, vmid, origin, host_wide).await
            };
            let o = match tokio::time::timeout(remaining, work).await {
                Ok(o) => o,
                Err(_) => unfinished(probe, vmid, cfg.deadline),
            };
            progress.done();
            o
        }
    }));
    let (mut observations, (table, mut caddy)) = tokio::join!(observations, caddy_read);
    progress.finish();
    if let Some(table) = &table {
        for o in &mut observations {
            o.routes = routes_for(&probe, table, o.vmid);
        }
    } else if cfg.caddy.is_none() {
        // With the host vantage and no Caddy source given: what Caddy has loaded, from its admin
        // API on the host.
        for o in &mut observations {
            let Some(h) = &o.host else { continue };
            let source = format!(
                "Caddy's admin API on the host ({}, {})",
                h.vantage,
                crate::probe::host::CADDY_ADMIN_PATH
            );
            match host_admin_table(&h.caddy_config) {
                Ok(t) => {
                    o.routes = routes_for(&probe, &t, o.vmid);
                    if caddy.is_none() {
                        caddy = Some(CaddyReport {
                            findings: crate::lint::lint(
                                &probe.catalog,
                                std::slice::from_ref(&t),
                                &[],
                            ),
                            source,
                            error: None,
                        });
                    }
                }
                Err(e) if caddy.is_none() => {
                    caddy = Some(CaddyReport {
                        source,
                        error: Some(e),
                        findings: Vec::new(),
                    })
                }
                Err(_) => {}
            }
        }
    }

    let ctx = Context {
        catalog: &probe.catalog,
        layout: probe.template.layout(),
        caddyfile: HOST_CADDYFILE,
        access_token_sent: probe.access.is_some(),
    };
    let targets = observations
        .into_iter()
        .map(|o| TargetReport {
            verdict: diagnose(&ctx, &o),
            observation: o,
        })
        .collect();
    Ok(Report {
        targets,
        catalog: probe.catalog.clone(),
        template: probe.template.as_str().to_string(),
        domain: probe.domain.clone(),
        duration_ms: start.elapsed().as_millis() as u64,
        caddy,
        skipped_targets: cfg.skipped_targets.clone(),
    })
}

/// Reads Caddy's routes (the Caddyfile was parsed up front; the admin API is asked now).
async fn read_caddy(cfg: &DiagnoseConfig) -> (Option<RouteTable>, Option<CaddyReport>) {
    let (source, table) = match &cfg.caddy {
        None => return (None, None),
        Some(CaddySource::File { path, table }) => (path.display().to_string(), Ok(table.clone())),
        Some(CaddySource::Admin(url)) => (url.clone(), fetch_admin(url, cfg.probe.timeout).await),
    };
    match table {
        Ok(t) => {
            let findings = crate::lint::lint(&cfg.probe.catalog, std::slice::from_ref(&t), &[]);
            (
                Some(t),
                Some(CaddyReport {
                    source,
                    error: None,
                    findings,
                }),
            )
        }
        Err(e) => (
            None,
            Some(CaddyReport {
                source,
                error: Some(e),
                findings: Vec::new(),
            }),
        ),
    }
}

/// The route table from the host script's probe of Caddy's admin API.
fn host_admin_table(p: &Probe) -> Result<RouteTable, String> {
    admin_table(
        p,
        "larger than what the host script keeps (16 KiB): give --caddy-admin or --caddyfile",
    )
}

/// A probe of `GET /config/` on Caddy's admin API, as a route table or the reason it is not one.
fn admin_table(p: &Probe, too_large: &str) -> Result<RouteTable, String> {
    match p {
        Probe::Response { response, .. } if response.status == 200 => {
            if response.body_truncated {
                return Err(format!("the admin API's config is {too_large}"));
            }
            crate::caddy::admin::parse(&response.body).map_err(|e| e.to_string())
        }
        Probe::Response { response, .. } => Err(format!(
            "the admin API answered {} to GET /config/",
            response.status
        )),
        Probe::Failed { kind, message, .. } => Err(format!(
            "the admin API did not answer ({}: {message})",
            kind.as_str()
        )),
        Probe::NotRun { reason } => Err(reason.clone()),
    }
}

/// `GET {admin}/config/` on Caddy's admin API (local: no --connect-to, no proxy).
pub async fn fetch_admin(url: &str, timeout: Duration) -> Result<RouteTable, String> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .user_agent(crate::http::USER_AGENT)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())?;
    let probe = crate::http::fetch(
        &client,
        crate::http::Request {
            method: "GET",
            url: &format!("{url}/config/"),
            headers: &[],
            keep_headers: &[],
            body_cap: 4 * 1024 * 1024,
            timeout,
        },
    )
    .await;
    admin_table(&probe, "larger than 4 MiB")
}

/// What the route table says about each routed service's public hostname.
pub fn routes_for(
    probe: &crate::probe::ProbeConfig,
    table: &RouteTable,
    vmid: u32,
) -> Vec<RouteObservation> {
    probe
        .catalog
        .services
        .iter()
        .filter(|s| s.routed)
        .filter_map(|s| {
            let url = url::Url::parse(&probe.public_url(s, vmid)).ok()?;
            let host = url.host_str()?.to_string();
            let r = table.resolve(&host);
            Some(RouteObservation {
                service: s.name.clone(),
                upstream_host: r.as_ref().map(|r| r.upstream_host.clone()),
                upstream_port: r.as_ref().and_then(|r| r.port),
                source: r.as_ref().map(|r| r.route.source.to_string()),
                host,
            })
        })
        .collect()
}

/// A one-line progress counter on stderr, for a person watching a run over many targets. Off in a
/// pipe, under cron and with `-q`: then it writes nothing at all.
pub struct Progress {
    total: usize,
    done: std::sync::atomic::AtomicUsize,
    on: bool,
}

impl Progress {
    pub fn new(total: usize, on: bool) -> Progress {
        Progress {
            total,
            done: std::sync::atomic::AtomicUsize::new(0),
            on,
        }
    }

    /// The line for `done` of `total` targets.
    pub fn line(done: usize, total: usize) -> String {
        let width = 20;
        let filled = (done * width).checked_div(total).unwrap_or(width);
        format!(
            "\r[{}{}] {done}/{total} targets diagnosed",
            "#".repeat(filled),
            "-".repeat(width - filled)
        )
    }

    fn done(&self) {
        let n = self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if self.on {
            use std::io::Write;
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(Progress::line(n, self.total).as_bytes());
            let _ = e.flush();
        }
    }

    fn finish(&self) {
        if self.on {
            eprint!("\r\x1b[K");
        }
    }
}

/// The observation of a target the deadline cut off: every check marked as not finished.
fn unfinished(cfg: &crate::probe::ProbeConfig, vmid: u32, deadline: Duration) -> TargetObservation {
    let reason = format!(
        "did not finish within the run's deadline ({} ms)",
        deadline.as_millis()
    );
    TargetObservation {
        vmid,
        exec: ExecChannel {
            url: String::new(),
            via_public_url: false,
            auth_mode: AuthMode::Unknown,
            token_sent: cfg.token_for(vmid).is_some(),
            run: ExecRun::NotRun {
                reason: reason.clone(),
            },
            pct: None,
        },
        origin: None,
        services: cfg
            .catalog
            .services
            .iter()
            .map(|s| ServiceObservation {
                name: s.name.clone(),
                port: s.port,
                url: s.routed.then(|| cfg.public_url(s, vmid)),
                external: Probe::not_run(reason.clone()),
                internal: Probe::not_run(reason.clone()),
            })
            .collect(),
        routes: Vec::new(),
        host: None,
    }
}

#[cfg(test)]
mod tests {
    use super::Progress;

    #[test]
    fn progress_line() {
        assert_eq!(
            Progress::line(5, 20),
            "\r[#####---------------] 5/20 targets diagnosed"
        );
        assert!(Progress::line(3, 3).contains("[####################] 3/3"));
        assert!(Progress::line(0, 0).contains("0/0"));
    }

    #[test]
    fn progress_off_writes_nothing_and_counts() {
        let p = Progress::new(2, false);
        p.done();
        p.done();
        p.finish();
        assert_eq!(p.done.load(std::sync::atomic::Ordering::Relaxed), 2);
    }
}
