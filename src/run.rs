//! One diagnosis run: targets -> probes (concurrently) -> verdicts -> report.

use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::cli::{DiagnoseConfig, UsageError};
use crate::http::{build_client, ClientOptions};
use crate::observation::{
    AuthMode, ExecChannel, ExecRun, Probe, ServiceObservation, TargetObservation,
};
use crate::report::{Report, TargetReport};
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
        probe.timeout = budget
            .saturating_sub(probe.exec_grace)
            .max(Duration::from_millis(1));
    }

    // The origin check names no VMID: one request serves every target.
    let origin = crate::probe::origin_check(&client, &probe).boxed().shared();
    let sem = tokio::sync::Semaphore::new(cfg.concurrency.max(1));
    let observations = futures_util::future::join_all(cfg.vmids.iter().map(|&vmid| {
        let (client, probe, sem, origin) = (&client, &probe, &sem, origin.clone());
        async move {
            let remaining = cfg.deadline.saturating_sub(start.elapsed());
            let work = async {
                let _permit = sem.acquire().await;
                crate::probe::observe_with(client, probe, vmid, origin).await
            };
            match tokio::time::timeout(remaining, work).await {
                Ok(o) => o,
                Err(_) => unfinished(probe, vmid, cfg.deadline),
            }
        }
    }))
    .await;

    let ctx = Context {
        catalog: &probe.catalog,
        layout: probe.template.layout(),
        caddyfile: HOST_CADDYFILE,
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
    })
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
            token_sent: cfg.exec_token.is_some(),
            run: ExecRun::NotRun {
                reason: reason.clone(),
            },
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
    }
}
