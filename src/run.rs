//! The one diagnosis path, used by the plain command, `demo`, `serve` and `--wait`:
//! settings + targets -> probes (concurrently) -> observations -> verdicts -> report.

use std::time::{Duration, Instant};

use futures_util::FutureExt;

use crate::caddy::RouteTable;
use crate::cli::UsageError;
use crate::generation::Generation;
use crate::http::{build_client, ClientOptions};
use crate::observation::{
    AuthMode, ExecChannel, ExecRun, Probe, RouteObservation, ServiceObservation, TargetObservation,
};
use crate::report::{CaddyReport, Completion, Report, TargetReport};
use crate::settings::{CaddySource, Settings};
use crate::target::Targets;
use crate::verdict::Context;

/// Resolves the command line's targets through the PVE API when the settings have one (exec tokens
/// only when no token was given).
pub async fn resolve_targets(
    settings: &Settings,
    request: &crate::target::TargetRequest,
) -> Result<Targets, crate::pve::PveError> {
    crate::pve::resolve(
        settings.pve.as_ref(),
        request,
        settings.probe.exec_token.is_none(),
        settings.concurrency,
    )
    .await
}

/// The targets' container hostnames (the 2026 layout's `{instance}`) and the instance names the
/// PVE API did not resolve: [`crate::instance`], within half the run's deadline.
pub async fn resolve_instances(
    settings: &Settings,
    request: &crate::target::TargetRequest,
    targets: &mut Targets,
) -> Result<(), UsageError> {
    crate::instance::resolve_within(settings, request, targets, settings.deadline / 2).await
}

/// Diagnoses `targets` with `settings`: once, or with `--wait` until healthy. Within the settings'
/// deadline.
pub async fn diagnose(settings: &Settings, targets: &Targets) -> Result<Report, UsageError> {
    diagnose_within(settings, targets, settings.deadline, &Memory::default()).await
}

/// The routing generation each target was found with by an earlier diagnosis in this process
/// (`--wait`'s previous attempt, the exporter's previous scrape), by domain and VMID: the guess
/// for a target nothing else decides. It changes what a diagnosis costs, never its verdicts.
#[derive(Debug, Default)]
pub(crate) struct Memory(std::sync::Mutex<std::collections::BTreeMap<(String, u32), Generation>>);

impl Memory {
    fn get(&self, domain: &str, vmid: u32) -> Option<Generation> {
        let m = self.0.lock().ok()?;
        m.get(&(domain.to_string(), vmid)).copied()
    }

    fn remember(&self, domain: &str, vmid: u32, g: Generation) {
        if let Ok(mut m) = self.0.lock() {
            m.insert((domain.to_string(), vmid), g);
        }
    }
}

/// [`diagnose`] with the deadline of each attempt given (the exporter's scrape timeout) and what
/// earlier diagnoses in this process found.
pub(crate) async fn diagnose_within(
    settings: &Settings,
    targets: &Targets,
    deadline: Duration,
    memory: &Memory,
) -> Result<Report, UsageError> {
    let once = || diagnose_once(settings, targets, deadline, memory);
    match settings.wait {
        None => once().await,
        Some(wait) => crate::wait::until_healthy(wait, settings.quiet, once).await,
    }
}

/// One attempt over every target within `deadline`.
async fn diagnose_once(
    settings: &Settings,
    targets: &Targets,
    deadline: Duration,
    memory: &Memory,
) -> Result<Report, UsageError> {
    let start = Instant::now();
    // The public URLs' client records what each name resolved to (the dial evidence).
    let (client, dns_log) = crate::http::build_client_logged(&ClientOptions {
        connect_to: settings.connect_to,
        cacert_pem: settings.cacert_pem.clone(),
        insecure: settings.insecure,
        connect_timeout: Some(settings.probe.timeout),
    })
    .map_err(|e| UsageError::new(e.to_string()))?;
    // `--connect-to` is for the public URLs: an `--exec-url` is dialled as given.
    let exec_client = match (&settings.probe.exec_url, settings.connect_to) {
        (Some(_), Some(_)) => Some(
            build_client(&ClientOptions {
                connect_to: None,
                cacert_pem: settings.cacert_pem.clone(),
                insecure: settings.insecure,
                connect_timeout: Some(settings.probe.timeout),
            })
            .map_err(|e| UsageError::new(e.to_string()))?,
        ),
        _ => None,
    };
    let clients = crate::probe::Clients {
        public: &client,
        exec: exec_client.as_ref().unwrap_or(&client),
    };
    let probe = probe_config(settings, targets, deadline);
    // Caddy's routes first: their layout chooses each target's routing generation.
    let (table, mut caddy) = read_caddy(settings, probe.timeout).await;
    // The origin check names no VMID: one request serves every target.
    let origin = crate::probe::origin_check(&client, &probe).boxed().shared();
    // Likewise the host's cloudflared readiness and Caddy's loaded routes.
    let host_wide = crate::probe::host_wide(&probe).boxed().shared();
    // Read once for the run: every target's host view carries the same run-wide answer.
    let host_admin = match (&table, settings.caddy.is_none(), &probe.host) {
        (None, true, Some(_)) => host_wide
            .clone()
            .await
            .map(|h| host_admin_table(&h.caddy_config)),
        _ => None,
    };
    let host_table = host_admin.as_ref().and_then(|r| r.as_ref().ok());
    let layout = match (&table, host_table) {
        (Some(t), _) => Some((
            crate::generation::caddy_layout(t),
            format!(
                "Caddy's configuration ({})",
                caddy.as_ref().map_or("given", |c| c.source.as_str())
            ),
        )),
        (None, Some(t)) => Some((
            crate::generation::caddy_layout(t),
            "Caddy's admin API on the host".to_string(),
        )),
        _ => None,
    };
    let layout = layout.as_ref().map(|(l, from)| (l, from.as_str()));
    // Each target's generation before its probes: decided, or a guess its own probes settle.
    // What this process found last, else (only for the others) the state directory's last run.
    let mut remembered: std::collections::BTreeMap<u32, Generation> = targets
        .vmids
        .iter()
        .filter_map(|&v| Some((v, memory.get(&probe.domain, v)?)))
        .collect();
    let unknown: Vec<u32> = targets
        .vmids
        .iter()
        .copied()
        .filter(|v| !remembered.contains_key(v))
        .collect();
    remembered.extend(remembered_generations(settings, &probe, layout, &unknown));
    let plans: std::collections::BTreeMap<u32, crate::generation::Plan> = targets
        .vmids
        .iter()
        .map(|&v| {
            let r = remembered.get(&v).copied();
            let p = crate::generation::plan(&probe, &settings.generation, layout, r);
            (v, p)
        })
        .collect();
    // The 2026 layout answers CORS preflights in Caddy: one OPTIONS for the run, sent with the
    // probes of the first target that goes to the 2026 URL form (a lazy shared future).
    // The probe configs a target can get: one per (routing, container) generation, shared by
    // every target that gets it (a config holds the whole fleet's tokens and names).
    let configs = Configs::new(&probe, &settings.generation);
    let preflight_cfg = configs
        .get(&crate::generation::Choice::same(
            Generation::Y2026,
            String::new(),
        ))
        .clone();
    let preflight_client = &client;
    let preflight = async move {
        match preflight_cfg.template.uses("port") && !preflight_cfg.no_origin_check {
            true => Some(crate::generation::preflight(preflight_client, &preflight_cfg).await),
            false => None,
        }
    }
    .boxed()
    .shared();
    let n = targets.vmids.len();
    // Targets in flight: up to --concurrency, as many as the chain takes without slowing down.
    // What is left of the deadline once Caddy's routes and the host's view were read.
    let gate = crate::adaptive::Gate::new(
        settings.concurrency,
        n,
        deadline.saturating_sub(start.elapsed()),
    );
    let progress = Progress::new(
        n,
        !settings.quiet && n > 1 && std::io::IsTerminal::is_terminal(&std::io::stderr()),
    );
    let run = Run {
        clients,
        base: &probe,
        settings,
        layout,
        configs: &configs,
        origin,
        host_wide,
        preflight,
    };
    let observed = futures_util::future::join_all(targets.vmids.iter().map(|&vmid| {
        let (run, plan, gate, progress) = (&run, &plans[&vmid], &gate, &progress);
        async move {
            let remaining = deadline.saturating_sub(start.elapsed());
            let work = async {
                let permit = gate.acquire().await;
                let o = run.observe(plan, vmid).await;
                permit.done();
                o
            };
            let o = match tokio::time::timeout(remaining, work).await {
                Ok((o, choice)) => (o, Completion::InTime, choice),
                Err(_) => {
                    let o = unfinished(run.configs.get(&plan.choice), vmid, deadline);
                    (o, Completion::CutByDeadline, plan.choice.clone())
                }
            };
            progress.done();
            o
        }
    }))
    .await;
    let mut chosen = std::collections::BTreeMap::new();

    let mut observations = Vec::with_capacity(observed.len());
    for (o, completion, choice) in observed {
        if completion == Completion::InTime {
            memory.remember(&probe.domain, o.vmid, choice.routing);
        }
        chosen.insert(o.vmid, choice);
        observations.push((o, completion));
    }
    let probe_of = |vmid: u32| chosen.get(&vmid).map_or(&probe, |c| configs.get(c));
    // The preflight's answer when a target goes to the 2026 URL form (already there: it was sent
    // with that target's probes).
    let preflight = match chosen
        .values()
        .any(|c| c.routing == crate::generation::Generation::Y2026)
    {
        true => run.preflight.clone().await,
        false => None,
    };
    progress.finish();
    // A Caddy source without a single cmux route (the wrong file?) is a finding, not evidence:
    // its "no route for every hostname" would pin Caddy on a file Caddy may not even load.
    let table = table.filter(|t| crate::lint::cmux_routes(&probe.catalog, t) > 0);
    mark_shared_identities(observations.iter_mut().map(|(o, _)| o));
    // The preflight is evidence for every target behind the generic rule (the 2026 layout).
    if let Some((url, p)) = &preflight {
        for (o, _) in &mut observations {
            if probe_of(o.vmid).template.uses("port") {
                o.preflight = Some(crate::observation::OriginCheck {
                    url: url.clone(),
                    probe: p.clone(),
                });
            }
        }
    }
    if let Some(table) = &table {
        for (o, _) in &mut observations {
            o.routes = routes_for(probe_of(o.vmid), table, o.vmid);
        }
    } else if let Some(admin) = &host_admin {
        for (o, _) in &mut observations {
            host_admin_routes(probe_of(o.vmid), o, admin, &mut caddy);
        }
    }

    // Where each public hostname was dialled: the --connect-to address, or what it resolved to.
    for (o, _) in &mut observations {
        attach_dials(o, settings.connect_to, &dns_log);
    }

    // The Caddyfile really read (next steps name it); none when routes came from the admin API.
    let caddyfile_read = match &settings.caddy {
        Some(CaddySource::File { path, .. }) => Some(path.display().to_string()),
        _ => None,
    };
    let connect_to = settings.connect_to.map(|a| a.to_string());
    if let Some((url, p)) = &preflight {
        if let Some(message) = crate::generation::preflight_problem(url, p) {
            let c = caddy.get_or_insert_with(|| CaddyReport {
                source: format!("Caddy's answer to OPTIONS {url}"),
                error: None,
                findings: Vec::new(),
            });
            c.findings.push(crate::lint::Finding {
                file: "OPTIONS preflight".into(),
                line: 0,
                message,
                kind: crate::lint::FindingKind::PreflightUnanswered,
            });
        }
    }
    let reports: Vec<TargetReport> = observations
        .into_iter()
        .map(|(o, completion)| {
            let p = probe_of(o.vmid);
            let choice = chosen.get(&o.vmid);
            let ctx = Context {
                catalog: &p.catalog,
                layout: p.template.layout(),
                caddyfile: caddyfile_read.as_deref(),
                connect_to: connect_to.as_deref(),
                // The probes' time limit was the deadline's, not --timeout: a timeout is then a
                // cut. A target the deadline cut: every probe not run was cut.
                deadline: match completion {
                    Completion::CutByDeadline => Some(deadline),
                    Completion::InTime => (p.timeout < settings.probe.timeout).then_some(deadline),
                },
                target_cut: completion == Completion::CutByDeadline,
                // The name Caddy dials: the hostname behind the generic rule, cmux-{vmid} behind
                // the seed's per-service rules.
                instance: match choice.map(|c| c.routing) {
                    Some(crate::generation::Generation::Y2026) => {
                        p.instances.get(&o.vmid).map(|i| i.hostname.as_str())
                    }
                    _ => None,
                },
                access_token_sent: p.access.is_some(),
            };
            let routing = choice.map(|c| crate::generation::Routing {
                generation: c.routing,
                container: c.container,
                why: c.why.clone(),
                instance: p.instance(o.vmid),
                instance_source: p
                    .instances
                    .get(&o.vmid)
                    .map_or(crate::target::InstanceSource::Default, |i| i.source)
                    .describe()
                    .to_string(),
                url_template: p.template.as_str().to_string(),
            });
            let verdict = crate::verdict::diagnose(&ctx, &o);
            let mut r = TargetReport {
                // Recorded before `--services` narrows the report: the state keeps what is known.
                record: crate::state::record::record(
                    0,
                    &p.catalog,
                    p.template.as_str(),
                    &o,
                    &verdict,
                ),
                verdict,
                observation: o,
                completion,
                routing,
                state: None,
                catalog: p.catalog.clone(),
            };
            // `--services`: what is shown, after everything was diagnosed with everything known.
            if let Some(names) = &settings.shown {
                r.retain_services(names);
            }
            r
        })
        .collect();
    // One template for headings: the first target's (each target carries its own).
    let head = reports
        .first()
        .map_or(&probe, |t| probe_of(t.observation.vmid));
    Ok(Report {
        targets: reports,
        template: head.template.as_str().to_string(),
        domain: probe.domain.clone(),
        duration_ms: start.elapsed().as_millis() as u64,
        caddy,
        skipped_targets: targets.skipped.clone(),
        focus: None,
        waited: None,
    })
}

/// The routing generation each target had in its last recorded run (the state directory), when
/// nothing else decides it: the guess its probes then confirm. Only what it costs depends on it:
/// a wrong guess is refuted by the same probes and the URL forms are asked.
fn remembered_generations(
    settings: &Settings,
    probe: &crate::probe::ProbeConfig,
    layout: Option<(&crate::generation::CaddyLayout, &str)>,
    vmids: &[u32],
) -> std::collections::BTreeMap<u32, crate::generation::Generation> {
    // Decided, or guessed from the URL template: a remembered generation would not be used.
    let undecided = crate::generation::plan(probe, &settings.generation, layout, None).known
        == crate::generation::Known::Guessed
        && !settings.generation.explicit_template;
    let Some(dir) = settings.state_dir.as_deref().filter(|_| undecided) else {
        return Default::default();
    };
    let store = crate::state::store::Store::new(dir);
    vmids
        .iter()
        .filter_map(|&v| match store.load(&probe.domain, v) {
            crate::state::store::Loaded::Ok(f) => {
                let port = crate::target::UrlTemplate::parse(&f.last.facts.url_template)
                    .is_ok_and(|t| t.uses("port"));
                Some((
                    v,
                    match port {
                        true => crate::generation::Generation::Y2026,
                        false => crate::generation::Generation::Seed,
                    },
                ))
            }
            _ => None,
        })
        .collect()
}

/// The probe config of each (routing, container) generation pair, made once per run.
struct Configs(std::collections::BTreeMap<(Generation, Generation), crate::probe::ProbeConfig>);

impl Configs {
    fn new(
        base: &crate::probe::ProbeConfig,
        setting: &crate::generation::GenerationSetting,
    ) -> Configs {
        let mut m = std::collections::BTreeMap::new();
        for routing in Generation::ALL {
            for container in Generation::ALL {
                let c = crate::generation::Choice {
                    routing,
                    container,
                    why: String::new(),
                };
                m.insert(
                    (routing, container),
                    crate::generation::config_for(base, setting, &c),
                );
            }
        }
        Configs(m)
    }

    /// The config a target with this choice is probed with.
    fn get(&self, c: &crate::generation::Choice) -> &crate::probe::ProbeConfig {
        &self.0[&(c.routing, c.container)]
    }
}

type SharedRunWide<'a, T> = futures_util::future::Shared<futures_util::future::BoxFuture<'a, T>>;

/// What every target's probes share in one run.
struct Run<'a, 'f> {
    clients: crate::probe::Clients<'a>,
    base: &'a crate::probe::ProbeConfig,
    settings: &'a Settings,
    layout: Option<(&'a crate::generation::CaddyLayout, &'a str)>,
    configs: &'a Configs,
    origin: SharedRunWide<'f, Option<crate::observation::OriginCheck>>,
    host_wide: SharedRunWide<'f, Option<crate::probe::host::HostWide>>,
    preflight: SharedRunWide<'f, Option<(String, Probe)>>,
}

impl Run<'_, '_> {
    /// Probes one target with its plan's generation and settles the generation: the probes
    /// confirm the plan (nothing more is sent), or the URL forms are asked; a target that turns
    /// out to be of the other generation is probed again with its own catalog and URL form.
    async fn observe(
        &self,
        plan: &crate::generation::Plan,
        vmid: u32,
    ) -> (TargetObservation, crate::generation::Choice) {
        let setting = &self.settings.generation;
        let o = self
            .probe(
                self.configs.get(&plan.choice),
                vmid,
                plan.choice.routing == Generation::Y2026,
            )
            .await;
        let c = match crate::generation::settle(plan, &o, self.layout) {
            Some(c) => c,
            None => crate::generation::choose(
                self.clients.public,
                self.base,
                setting,
                self.layout,
                &[vmid],
            )
            .await
            .remove(&vmid)
            .unwrap_or_else(|| plan.choice.clone()),
        };
        if (c.routing, c.container) == (plan.choice.routing, plan.choice.container) {
            return (o, c);
        }
        let o = self
            .probe(self.configs.get(&c), vmid, c.routing == Generation::Y2026)
            .await;
        (o, c)
    }

    /// One target's probes; with the run's CORS preflight alongside when they go to the 2026 form.
    async fn probe(
        &self,
        cfg: &crate::probe::ProbeConfig,
        vmid: u32,
        preflight: bool,
    ) -> TargetObservation {
        let observe = crate::probe::observe_with(
            self.clients,
            cfg,
            vmid,
            self.origin.clone(),
            self.host_wide.clone(),
        );
        match preflight {
            true => tokio::join!(observe, self.preflight.clone()).0,
            false => observe.await,
        }
    }
}

/// Two targets whose exec calls ran in one sandbox: each gets the other's VMID (see
/// [`crate::identity::shared`]).
pub(crate) fn mark_shared_identities<'a>(
    observations: impl Iterator<Item = &'a mut TargetObservation>,
) {
    let mut observations: Vec<&mut TargetObservation> = observations.collect();
    let shared = {
        let reports: Vec<(u32, &crate::identity::ReportedIdentity)> = observations
            .iter()
            .filter_map(|o| o.identity.reported.as_ref().map(|r| (o.vmid, r)))
            .collect();
        crate::identity::shared(&reports)
    };
    for o in observations.iter_mut() {
        if let Some(others) = shared.get(&o.vmid) {
            o.identity.shared_with = others.clone();
        }
    }
}

/// The probes' configuration for this run: the targets' tokens, and timeouts that end on their own
/// before the deadline (only the grace shrinks when that is enough; never longer than --timeout).
fn probe_config(
    settings: &Settings,
    targets: &Targets,
    deadline: Duration,
) -> crate::probe::ProbeConfig {
    let mut probe = settings.probe.clone();
    probe.exec_tokens = targets.exec_tokens.clone();
    probe.expected_identity = targets.expected_identity.clone();
    probe.instances = targets.instances.clone();
    let margin = (deadline / 4).min(Duration::from_millis(200));
    let budget = deadline.saturating_sub(margin);
    if probe.timeout + probe.exec_grace > budget {
        probe.exec_grace = (budget / 5).min(probe.exec_grace);
        probe.timeout = budget
            .saturating_sub(probe.exec_grace)
            .max(Duration::from_millis(1))
            .min(probe.timeout);
    }
    probe
}

/// With the host vantage and no Caddy source given: what Caddy has loaded, from its admin API on
/// the host (read once for the run). The first target with a host view makes the run's Caddy report.
fn host_admin_routes(
    probe: &crate::probe::ProbeConfig,
    o: &mut TargetObservation,
    table: &Result<RouteTable, String>,
    caddy: &mut Option<CaddyReport>,
) {
    let Some(h) = &o.host else { return };
    let source = format!(
        "Caddy's admin API on the host ({}, {})",
        h.vantage,
        crate::probe::host::CADDY_ADMIN_PATH
    );
    if let Ok(t) = table {
        o.routes = routes_for(probe, t, o.vmid);
    }
    if caddy.is_none() {
        let catalog = match table {
            Ok(t) => lint_catalog(probe, t),
            Err(_) => probe.catalog.clone(),
        };
        *caddy = Some(CaddyReport::new(source, table, &catalog));
    }
}

/// Reads Caddy's routes (the Caddyfile was parsed up front; the admin API is asked now).
/// `timeout`: the run's per-probe timeout (shortened to fit the deadline): the admin API is read
/// before the probes, so it must leave them their time.
async fn read_caddy(
    settings: &Settings,
    timeout: Duration,
) -> (Option<RouteTable>, Option<CaddyReport>) {
    let (source, table) = match &settings.caddy {
        None => return (None, None),
        Some(CaddySource::File { path, table }) => (path.display().to_string(), Ok(table.clone())),
        Some(CaddySource::Admin(url)) => (url.clone(), fetch_admin(url, timeout).await),
    };
    let catalog = match (&table, settings.generation.fixed()) {
        (Ok(t), false) => lint_catalog(&settings.probe, t),
        _ => settings.probe.catalog.clone(),
    };
    let report = CaddyReport::new(source, &table, &catalog);
    (table.ok(), Some(report))
}

/// The catalog Caddy's configuration is checked against: a configuration with only the generic
/// port rule is the 2026 generation's; otherwise the run's catalog.
fn lint_catalog(probe: &crate::probe::ProbeConfig, t: &RouteTable) -> crate::catalog::Catalog {
    use crate::generation::{caddy_layout, CaddyLayout, Generation};
    match caddy_layout(t) {
        CaddyLayout::Generic(_) => Generation::Y2026.catalog(),
        _ => probe.catalog.clone(),
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
pub(crate) async fn fetch_admin(url: &str, timeout: Duration) -> Result<RouteTable, String> {
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
pub(crate) fn routes_for(
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
                from: r.as_ref().map(|r| {
                    if r.route.source.json_path.is_some() {
                        crate::observation::RouteFrom::AdminApi
                    } else {
                        crate::observation::RouteFrom::Caddyfile
                    }
                }),
                host,
            })
        })
        .collect()
}

/// A one-line progress counter on stderr, for a person watching a run over many targets. Off in a
/// pipe, under cron and with `-q`: then it writes nothing at all.
pub(crate) struct Progress {
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
    pub(crate) fn line(done: usize, total: usize) -> String {
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
                dial: None,
            })
            .collect(),
        routes: Vec::new(),
        host: None,
        inside: None,
        identity: Default::default(),
        preflight: None,
    }
}

/// Each probed public URL's [`crate::observation::Dial`]: the `--connect-to` address, or what its
/// hostname resolved to (or the resolver's error) as the run's client recorded it.
pub(crate) fn attach_dials(
    o: &mut TargetObservation,
    connect_to: Option<std::net::SocketAddr>,
    log: &crate::http::DnsLog,
) {
    use crate::observation::Dial;
    for s in &mut o.services {
        if matches!(s.external, Probe::NotRun { .. }) {
            continue;
        }
        let Some(host) = s
            .url
            .as_deref()
            .and_then(|u| url::Url::parse(u).ok())
            .and_then(|u| u.host_str().map(str::to_string))
        else {
            continue;
        };
        s.dial = match connect_to {
            Some(a) => Some(Dial::ConnectTo {
                host,
                address: a.to_string(),
            }),
            None => match log.get(&host) {
                Some(Ok(addrs)) => Some(Dial::Dns {
                    host,
                    addresses: addrs.iter().map(|a| a.ip().to_string()).collect(),
                }),
                Some(Err(error)) => Some(Dial::DnsFailed { host, error }),
                // An address in the URL, or a request cut before the lookup.
                None => None,
            },
        };
    }
}

/// The step after a diagnosis (docs/state.md): records each target of the report in the state
/// directory `dir` (None: no state), adds what changed since its last healthy run to its verdicts'
/// evidence and its `state`, and prints the state's notes on stderr (unless quiet).
pub fn record_state(dir: Option<&std::path::Path>, quiet: bool, report: &mut Report) {
    let Some(dir) = dir else { return };
    let mut runs: Vec<crate::state::TargetRun<'_>> = report
        .targets
        .iter_mut()
        .map(|t| crate::state::TargetRun {
            observation: &t.observation,
            verdict: &mut t.verdict,
            record: &t.record,
            state: &mut t.state,
        })
        .collect();
    for n in crate::state::apply(dir, &report.domain, &mut runs, crate::state::now()) {
        if !quiet {
            eprintln!("pvediag: state: {n}");
        }
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
