//! One diagnosis run: targets -> probes (concurrently) -> verdicts -> report.

use std::time::{Duration, Instant};

use crate::cli::{DiagnoseConfig, UsageError};
use crate::http::{build_client, ClientOptions};
use crate::observation::{
    AuthMode, ExecChannel, ExecRun, Probe, ServiceObservation, TargetObservation,
};
use crate::report::{Report, TargetReport};
use crate::verdict::{diagnose, Context};

/// Targets probed at once.
pub const CONCURRENCY: usize = 16;

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

    let sem = tokio::sync::Semaphore::new(CONCURRENCY);
    let observations = futures_util::future::join_all(cfg.vmids.iter().map(|&vmid| {
        let (client, probe, sem) = (&client, &probe, &sem);
        async move {
            let remaining = cfg.deadline.saturating_sub(start.elapsed());
            let work = async {
                let _permit = sem.acquire().await;
                crate::probe::observe(client, probe, vmid).await
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
