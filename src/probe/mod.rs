//! Probes: the I/O edge that turns a target into observations.
//!
//! For one VMID every probe runs at once: each routed service through its public URL, the origin
//! check (once per run), and the one exec round trip that probes every service inside. The exec
//! call through the public URL is also the exec service's external probe and the auth-mode probe:
//! `GET /healthz` and `GET /exec` are sent through the tunnel only when its answer leaves their
//! question open (no answer from execd). One request per fact: a target costs one request per
//! routed service. A diagnosis therefore takes about as long as its slowest probe.

pub mod backend;
pub(crate) mod exec;
pub mod external;
pub(crate) mod host;
pub mod internal;
pub mod jsonlines;

use std::time::Duration;

use crate::catalog::{Catalog, Service};
use crate::observation::{
    AuthMode, ExecChannel, ExecRun, OriginCheck, Probe, ServiceObservation, TargetObservation,
};
use crate::secret::{AccessToken, Secret};
use crate::target::{origin_check_url, UrlTemplate};

/// Everything the probes need, validated.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    pub catalog: Catalog,
    pub(crate) template: UrlTemplate,
    pub(crate) domain: String,
    /// Per-probe timeout.
    pub(crate) timeout: Duration,
    /// The token for every target (from `--exec-token-file` or `CMUX_EXECD_AUTH_TOKEN`).
    pub(crate) exec_token: Option<Secret>,
    /// Per-target tokens (read from the PVE API), used where `exec_token` is not set.
    pub(crate) exec_tokens: std::collections::BTreeMap<u32, Secret>,
    /// Retries of an external probe that failed transiently ([`external::is_transient`]).
    pub(crate) retries: u32,
    /// Reach execd here instead of its public URL (`{vmid}` is replaced).
    pub(crate) exec_url: Option<String>,
    /// Skip the origin check.
    pub(crate) no_origin_check: bool,
    /// How much longer than `timeout` the exec round trip may take (execd's own start-up, the
    /// stream's way back).
    pub(crate) exec_grace: Duration,
    /// The host vantage (`--on-host`, `--ssh`).
    pub(crate) host: Option<host::HostConfig>,
    /// The Cloudflare Access service token, sent with every request to a hostname under `domain`.
    pub(crate) access: Option<AccessToken>,
    /// What other sources (the PVE API) say each target is (see [`crate::identity`]).
    pub(crate) expected_identity:
        std::collections::BTreeMap<u32, Vec<crate::identity::IdentityClaim>>,
    /// Container hostnames (the 2026 layout's `{instance}`), by VMID, as
    /// [`crate::instance`] resolved them; a VMID not in here is `cmux-{vmid}`.
    pub(crate) instances: std::collections::BTreeMap<u32, crate::target::Instance>,
}

impl ProbeConfig {
    pub(crate) fn public_url(&self, s: &Service, vmid: u32) -> String {
        self.template
            .base_url_for(&s.name, vmid, &self.instance(vmid), s.port, &self.domain)
    }

    /// The container's hostname: resolved, else `cmux-{vmid}`.
    pub(crate) fn instance(&self, vmid: u32) -> String {
        self.instances
            .get(&vmid)
            .map(|i| i.hostname.clone())
            .unwrap_or_else(|| crate::target::default_instance(vmid))
    }

    /// The Access service token for a request to `url`: only to hostnames under the domain (the
    /// public chain), never to an internal `--exec-url`.
    pub(crate) fn access_for(&self, url: &str) -> Option<&AccessToken> {
        self.access
            .as_ref()
            .filter(|_| crate::http::under_domain(url, &self.domain))
    }

    /// The exec token for one target: the global one, else the one found for this VMID.
    pub(crate) fn token_for(&self, vmid: u32) -> Option<&Secret> {
        self.exec_token
            .as_ref()
            .or_else(|| self.exec_tokens.get(&vmid))
    }

    fn exec_base(&self, vmid: u32) -> Option<(String, bool)> {
        if let Some(u) = &self.exec_url {
            return Some((
                u.replace("{vmid}", &vmid.to_string())
                    .replace("{instance}", &self.instance(vmid))
                    .trim_end_matches('/')
                    .to_string(),
                false,
            ));
        }
        let exec = self.catalog.exec()?;
        Some((self.public_url(exec, vmid), true))
    }
}

/// `{public URL}{probe path}` of a routed service.
fn public_probe_url(cfg: &ProbeConfig, s: &Service, vmid: u32) -> String {
    format!("{}{}", cfg.public_url(s, vmid), s.probe.path)
}

/// One external probe, retried while it fails transiently.
async fn external_with_retries(
    client: &reqwest::Client,
    cfg: &ProbeConfig,
    s: &Service,
    vmid: u32,
) -> (String, String, Probe) {
    let url = public_probe_url(cfg, s, vmid);
    let access = cfg.access_for(&url);
    let mut p = external::probe(client, s, &url, cfg.timeout, access).await;
    for attempt in 0..cfg.retries {
        if !external::is_transient(&p) {
            break;
        }
        tokio::time::sleep(external::retry_backoff(attempt)).await;
        p = external::probe(client, s, &url, cfg.timeout, access).await;
    }
    (s.name.clone(), url, p)
}

/// The origin check: a hostname under the domain that no route matches (Caddy answers it itself).
/// It names no VMID, so one check can serve every target of a run.
pub(crate) async fn origin_check(
    client: &reqwest::Client,
    cfg: &ProbeConfig,
) -> Option<OriginCheck> {
    if cfg.no_origin_check {
        return None;
    }
    let url = origin_check_url(&cfg.template, &cfg.domain);
    let probe = crate::http::fetch_with(
        client,
        crate::http::Request {
            method: "GET",
            url: &url,
            headers: &[],
            keep_headers: &[],
            body_cap: 4096,
            timeout: cfg.timeout,
        },
        cfg.access_for(&url),
    )
    .await;
    Some(OriginCheck { url, probe })
}

/// The host's run-wide view ([`host::observe_wide`]), when there is a host vantage.
pub(crate) async fn host_wide(cfg: &ProbeConfig) -> Option<host::HostWide> {
    match &cfg.host {
        Some(h) => Some(host::observe_wide(h, cfg.timeout).await),
        None => None,
    }
}

/// The HTTP clients of a run: the public URLs' (with `--connect-to`), and the exec channel's
/// (without it when `--exec-url` names execd directly: `--connect-to` is for public URLs only).
#[derive(Clone, Copy)]
pub(crate) struct Clients<'a> {
    pub(crate) public: &'a reqwest::Client,
    pub(crate) exec: &'a reqwest::Client,
}

/// Probes one target: every probe concurrently, within about one probe timeout. The run-wide checks
/// are given (the origin check and the host's run-wide view: one shared future each for every
/// target of a run); they are awaited concurrently with the target's own probes.
pub(crate) async fn observe_with(
    clients: Clients<'_>,
    cfg: &ProbeConfig,
    vmid: u32,
    origin: impl std::future::Future<Output = Option<OriginCheck>>,
    host_wide: impl std::future::Future<Output = Option<host::HostWide>>,
) -> TargetObservation {
    let client = clients.public;
    // One request per fact: where the exec call goes through the public URL, it is also the exec
    // service's external probe and the auth-mode probe; those are sent only when its answer leaves
    // the question open (see `exec_followups`).
    let exec_base = cfg.exec_base(vmid);
    let exec_public = exec_base
        .as_ref()
        .is_some_and(|(_, via_public)| *via_public);
    let exec_service = cfg.catalog.exec().map(|s| s.name.clone());
    let skip_external = |s: &Service| exec_public && exec_service.as_deref() == Some(&s.name);
    let routed: Vec<&Service> = cfg
        .catalog
        .services
        .iter()
        .filter(|s| s.routed && !skip_external(s))
        .collect();
    let externals = futures_util::future::join_all(
        routed
            .iter()
            .map(|s| external_with_retries(client, cfg, s, vmid)),
    );

    let nonce = internal::new_nonce();
    let all: Vec<&Service> = cfg.catalog.services.iter().collect();
    // Inside, execd's own `GET /exec` (no token: 401 auth on, 405 off) rides in the same batch: the
    // auth mode when the exec call's answer does not tell it (a token was sent and accepted).
    let auth_inside = cfg.catalog.exec().map(internal::auth_probe_service);
    let mut probed = all.clone();
    if let Some(a) = &auth_inside {
        probed.push(a);
    }
    let command = internal::build_command(&probed, &nonce, cfg.timeout);
    let channel = async {
        let Some((base, via_public)) = &exec_base else {
            return (
                exec::ExecResult {
                    run: ExecRun::NotRun {
                        reason: "the catalog has no exec service and no --exec-url was given"
                            .into(),
                    },
                    records: Vec::new(),
                    backend: Vec::new(),
                    identity: None,
                },
                String::new(),
                false,
                0,
            );
        };
        let client = if *via_public { client } else { clients.exec };
        let access = cfg.access_for(base);
        let start = std::time::Instant::now();
        let result = exec::run(
            client,
            base,
            exec::Credentials {
                token: cfg.token_for(vmid),
                access,
            },
            &command,
            &nonce,
            cfg.timeout + cfg.exec_grace / 2,
            cfg.timeout + cfg.exec_grace,
        )
        .await;
        let elapsed_ms = start.elapsed().as_millis() as u64;
        (result, base.clone(), *via_public, elapsed_ms)
    };

    let host_view = async {
        match &cfg.host {
            Some(h) => {
                let wide = async {
                    host_wide.await.unwrap_or_else(|| host::HostWide {
                        cloudflared: Probe::not_run("no run-wide host view"),
                        caddy_config: Probe::not_run("no run-wide host view"),
                    })
                };
                Some(host::observe(h, cfg, vmid, cfg.timeout, wide).await)
            }
            None => None,
        }
    };

    let (mut externals, origin, (mut result, exec_url, via_public_url, exec_ms), host_obs) =
        tokio::join!(externals, origin, channel, host_view);

    // What the exec call's answer leaves open, asked now (concurrently).
    let token_sent = cfg.token_for(vmid).is_some();
    let inside_auth = auth_inside.as_ref().and_then(|a| {
        let i = result.records.iter().position(|r| r.name == a.name)?;
        Some(result.records.remove(i).probe)
    });
    let known_mode = exec::auth_mode_from_exec(&result.run, token_sent, inside_auth.as_ref());
    let exec_svc = cfg.catalog.exec().filter(|s| skip_external(s));
    let healthz = async {
        match exec_svc {
            Some(s) => Some(match exec::external_from_exec(&result.run, exec_ms) {
                Some(p) => (s.name.clone(), public_probe_url(cfg, s, vmid), p),
                None => external_with_retries(client, cfg, s, vmid).await,
            }),
            None => None,
        }
    };
    let auth = async {
        match (known_mode, &exec_base) {
            (Some(m), _) => m,
            (None, Some((base, via_public))) => {
                let c = if *via_public { client } else { clients.exec };
                exec::auth_mode(c, base, cfg.timeout, cfg.access_for(base))
                    .await
                    .0
            }
            (None, None) => AuthMode::Unknown,
        }
    };
    let (healthz, auth_mode) = tokio::join!(healthz, auth);
    externals.extend(healthz);

    // The exec endpoint could not be used: try `pct exec` on the host.
    let mut pct = None;
    let mut reported_via = result.identity.as_ref().map(|_| "exec".to_string());
    if let Some(h) = cfg.host.as_ref().filter(|h| h.pct_fallback) {
        if !matches!(
            result.run,
            ExecRun::Completed { .. } | ExecRun::Incomplete { .. }
        ) {
            let (run, records, backend, id) =
                host::pct_internal(h, &command, &nonce, vmid, cfg.timeout + cfg.exec_grace).await;
            if !records.is_empty() {
                result.records = records;
                result.backend = backend;
            }
            if id.is_some() && result.identity.is_none() {
                result.identity = id;
                reported_via = Some("pct".into());
            }
            pct = Some(run);
        }
    }
    let identity = identity_observation(cfg, vmid, result.identity.take(), reported_via, &host_obs);

    let services = cfg
        .catalog
        .services
        .iter()
        .map(|s| {
            let (url, external) = match externals.iter().find(|(n, _, _)| *n == s.name) {
                Some((_, url, p)) => (Some(url.clone()), p.clone()),
                None => (None, Probe::not_run("not routed through the tunnel")),
            };
            let internal = match result.records.iter().find(|r| r.name == s.name) {
                Some(r) => {
                    let mut p = r.probe.clone();
                    if let Probe::Response { response, .. } = &mut p {
                        response.retain_headers(crate::http::EVIDENCE_HEADERS, &s.healthy.headers);
                    }
                    p
                }
                None => Probe::not_run(match &result.run {
                    _ if pct
                        .as_ref()
                        .is_some_and(|p| matches!(p.run, ExecRun::Completed { .. })) =>
                    {
                        "no record from pct exec".to_string()
                    }
                    ExecRun::Completed { .. } => "no record from the exec round trip".to_string(),
                    ExecRun::Incomplete { .. } => {
                        "the exec stream was cut before this record".to_string()
                    }
                    _ => "the exec channel is unavailable".to_string(),
                }),
            };
            ServiceObservation {
                name: s.name.clone(),
                port: s.port,
                url,
                external,
                internal,
                dial: None,
            }
        })
        .collect();

    let inside = (!result.records.is_empty() || !result.backend.is_empty())
        .then(|| backend::inside_view(&cfg.catalog, &result.records, &result.backend));

    TargetObservation {
        vmid,
        inside,
        exec: ExecChannel {
            url: exec_url,
            via_public_url,
            auth_mode,
            token_sent,
            run: result.run,
            pct,
        },
        origin,
        services,
        routes: Vec::new(),
        host: host_obs,
        identity,
        preflight: None,
    }
}

/// What is known about who answered: the report of the internal command, what the naming
/// convention and the host (`pct config`) expect, and the host's view of the `.lan` name.
fn identity_observation(
    cfg: &ProbeConfig,
    vmid: u32,
    reported: Option<crate::identity::ReportedIdentity>,
    reported_via: Option<String>,
    host_obs: &Option<crate::observation::HostObservation>,
) -> crate::identity::IdentityObservation {
    let mut expected: Vec<crate::identity::IdentityClaim> = Vec::new();
    if let Some(c) = cfg.expected_identity.get(&vmid) {
        expected.extend(c.iter().cloned());
    }
    // The instance name resolution (crate::instance) is an expected identity too.
    if let Some(i) = cfg.instances.get(&vmid) {
        use crate::target::InstanceSource as I;
        let source = match i.source {
            I::PveApi => Some(crate::identity::IdentitySource::PveApi),
            I::Pct => Some(crate::identity::IdentitySource::PctConfig),
            I::Given | I::Default => None,
        };
        if let Some(source) = source {
            if !expected
                .iter()
                .any(|c| c.source == source && c.hostname.as_deref() == Some(&i.hostname))
            {
                expected.push(crate::identity::IdentityClaim {
                    source,
                    hostname: Some(i.hostname.clone()),
                    ipv4: Vec::new(),
                    mac: None,
                });
            }
        }
    }
    if let Some(h) = host_obs {
        if let Some(c) = &h.identity.pct_claim {
            // One claim per source: the host script's `pct config` carries the MAC as well.
            expected.retain(|e| e.source != c.source || e.hostname != c.hostname);
            expected.push(c.clone());
        }
    }
    let exec_host = cfg
        .catalog
        .exec()
        .and_then(|s| url::Url::parse(&cfg.public_url(s, vmid)).ok())
        .and_then(|u| u.host_str().map(str::to_string));
    if let Some(h) = exec_host {
        expected.push(crate::identity::convention_claim(&h, vmid));
    }
    let host = match (host_obs, &cfg.host) {
        (Some(h), Some(hc)) => Some(crate::identity::HostIdentity {
            lan_name: hc
                .upstream_template
                .replace("{vmid}", &vmid.to_string())
                .replace("{instance}", &cfg.instance(vmid)),
            lan_ipv4: h.identity.lan_ipv4.clone(),
            own_ipv4: h.identity.own_ipv4.clone(),
        }),
        _ => None,
    };
    crate::identity::IdentityObservation {
        reported,
        reported_via,
        expected,
        host,
        shared_with: Vec::new(),
    }
}
