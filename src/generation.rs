//! The two routing generations of cmux, and which one a target runs.
//!
//! - **seed** (December 2025): one Caddy rule per service, `https://{service}-{vmid}.{domain}`,
//!   the Node worker on 39377.
//! - **2026** (from February 2026): one generic Caddy rule, `https://port-{port}-{instance}.{domain}`
//!   where `instance` is the container's hostname; the Node worker on 39376 and the Go worker daemon
//!   on 39377; Caddy answers `OPTIONS` itself and sets CORS headers on every answer.
//!
//! Both catalogs are in the binary. Which one a target gets is chosen, in this order: `--checks DIR`
//! or `--catalog NAME`; Caddy's configuration when it is known (one rule per service, or the
//! generic rule); else what answers for this target (the public URL form whose execd answers, Caddy's
//! 2026 catch-all, the worker daemon's fingerprint on 39377). Each target is chosen on its own, so a
//! host with containers of both generations behind one Caddy works.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::caddy::{RouteTable, Upstream};
use crate::catalog::Catalog;
use crate::observation::{Probe, TargetObservation};
use crate::probe::ProbeConfig;
use crate::target::{UrlTemplate, DEFAULT_TEMPLATE, TEMPLATE_2026};

/// A routing generation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Generation {
    #[serde(rename = "seed")]
    Seed,
    #[serde(rename = "2026")]
    Y2026,
}

impl Generation {
    pub(crate) const ALL: [Generation; 2] = [Generation::Seed, Generation::Y2026];

    /// The name `--catalog` takes and reports print.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Generation::Seed => "seed",
            Generation::Y2026 => "2026",
        }
    }

    pub fn parse(s: &str) -> Option<Generation> {
        match s.trim().to_ascii_lowercase().as_str() {
            "seed" | "2025" => Some(Generation::Seed),
            "2026" | "later" => Some(Generation::Y2026),
            _ => None,
        }
    }

    /// The built-in catalog of this generation.
    pub(crate) fn catalog(self) -> Catalog {
        match self {
            Generation::Seed => Catalog::embedded(),
            Generation::Y2026 => Catalog::embedded_2026(),
        }
    }

    /// The public URL template of this generation.
    pub(crate) fn template(self) -> UrlTemplate {
        let raw = match self {
            Generation::Seed => DEFAULT_TEMPLATE,
            Generation::Y2026 => TEMPLATE_2026,
        };
        UrlTemplate::parse(raw).expect("the built-in templates are valid")
    }

    /// The upstream Caddy dials for a container in this generation.
    pub(crate) fn upstream_template(self) -> &'static str {
        match self {
            Generation::Seed => "cmux-{vmid}.lan",
            Generation::Y2026 => "{instance}.lan",
        }
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What the command line fixed about the catalog and the URL template.
#[derive(Debug, Clone, Default)]
pub(crate) struct GenerationSetting {
    /// `--catalog NAME` (None: detect per target). Ignored when `--checks DIR` gave the catalog.
    pub(crate) catalog: Option<Generation>,
    /// `--checks DIR` gave the catalog.
    pub(crate) checks_dir: bool,
    /// `--url-template` was given (not the default): it is kept whatever the generation.
    pub(crate) explicit_template: bool,
    /// `--services`: applied to whichever catalog a target gets.
    pub(crate) services: Vec<String>,
}

impl GenerationSetting {
    /// Nothing to detect: the catalog was given by name or directory.
    pub(crate) fn fixed(&self) -> bool {
        self.checks_dir || self.catalog.is_some()
    }
}

/// The generation a target was diagnosed with, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Routing {
    pub(crate) generation: Generation,
    /// The generation of the container's services (its catalog): the routing's, except behind
    /// seed rules in front of a container already on the 2026 images.
    pub(crate) container: Generation,
    /// One sentence: the evidence (or the option) that chose it.
    pub(crate) why: String,
    /// The container's hostname used for `{instance}`, and where it came from.
    pub(crate) instance: String,
    pub(crate) instance_source: String,
    /// The public URL template used for this target.
    pub(crate) url_template: String,
}

/// What Caddy's configuration says about the generation of every target behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CaddyLayout {
    /// One rule per service (first rule's source).
    PerService(String),
    /// The generic `port-{port}-{instance}` rule (its source).
    Generic(String),
    /// Both: the generation is per container (a host in transition).
    Mixed {
        per_service: String,
        generic: String,
    },
    /// No route Caddy could use for a cmux service.
    Unknown,
}

/// Reads the layout off a route table.
pub(crate) fn caddy_layout(table: &RouteTable) -> CaddyLayout {
    let usable = |r: &&crate::caddy::Route| r.conditions.is_empty();
    let generic = table
        .routes
        .iter()
        .filter(usable)
        .find(|r| matches!(r.upstream, Upstream::FromHost { .. }))
        .map(|r| r.source.to_string());
    let per_service = table
        .routes
        .iter()
        .filter(usable)
        .find(|r| r.service.is_some() && matches!(r.upstream, Upstream::Fixed { .. }))
        .map(|r| r.source.to_string());
    match (per_service, generic) {
        (Some(p), Some(g)) => CaddyLayout::Mixed {
            per_service: p,
            generic: g,
        },
        (Some(p), None) => CaddyLayout::PerService(p),
        (None, Some(g)) => CaddyLayout::Generic(g),
        (None, None) => CaddyLayout::Unknown,
    }
}

/// Caddy's 2026 catch-all answer for a hostname no rule matches.
pub(crate) fn is_2026_catch_all(p: &Probe) -> bool {
    p.response()
        .is_some_and(|r| r.status == 404 && r.body.contains("cmux sandbox not found"))
}

/// What the public URL forms answered for one target: execd's `/healthz` in both forms, and the
/// 2026 worker daemon's `/health`.
#[derive(Debug, Clone)]
pub(crate) struct FormProbes {
    pub(crate) seed_url: String,
    pub(crate) seed: Probe,
    pub(crate) y2026_url: String,
    pub(crate) y2026: Probe,
    pub(crate) daemon_url: String,
    pub(crate) daemon: Option<Probe>,
}

/// Whether `p` is the healthy answer of the service `name` of generation `g`'s catalog (status and
/// fingerprint).
fn answers_as(p: &Probe, g: Generation, name: &str) -> bool {
    let c = g.catalog();
    let Some(s) = c.get(name) else { return false };
    p.response().is_some_and(|r| {
        s.healthy.status_ok(r.status)
            && s.healthy
                .fingerprint
                .check(r.header("content-type"), &r.body)
                .is_ok()
    })
}

/// Decides from the answers of the two URL forms. Pure, so every row is tested.
pub(crate) fn decide_from_answers(f: &FormProbes) -> Option<(Generation, String)> {
    let seed_ok = answers_as(&f.seed, Generation::Seed, crate::catalog::EXEC_SERVICE);
    let y_ok = answers_as(&f.y2026, Generation::Y2026, crate::catalog::EXEC_SERVICE);
    match (seed_ok, y_ok) {
        (true, false) => Some((
            Generation::Seed,
            format!(
                "execd answered at the seed URL {} and not at the 2026 URL {}",
                f.seed_url, f.y2026_url
            ),
        )),
        (false, true) => Some((
            Generation::Y2026,
            format!(
                "execd answered at the 2026 URL {} and not at the seed URL {}",
                f.y2026_url, f.seed_url
            ),
        )),
        (true, true) => {
            // Both rule kinds reach the container: what listens on 39377 tells its generation.
            let is_daemon = f.daemon.as_ref().is_some_and(is_worker_daemon);
            Some(if is_daemon {
                (
                    Generation::Y2026,
                    format!(
                        "both URL forms reach execd, and the Go worker daemon answers on 39377 ({})",
                        f.daemon_url
                    ),
                )
            } else {
                (
                    Generation::Seed,
                    format!(
                        "both URL forms reach execd, and no Go worker daemon answers on 39377 ({})",
                        f.daemon_url
                    ),
                )
            })
        }
        (false, false) if is_2026_catch_all(&f.seed) => Some((
            Generation::Y2026,
            format!(
                "Caddy answered the seed URL {} with its 2026 catch-all (404 \"cmux sandbox not found\")",
                f.seed_url
            ),
        )),
        (false, false) => None,
    }
}

/// The target's generation from the setting and Caddy's layout alone, when they decide it.
pub(crate) fn decide_without_probes(
    setting: &GenerationSetting,
    layout: Option<(&CaddyLayout, &str)>,
) -> Option<(Generation, String)> {
    if setting.checks_dir {
        return None;
    }
    if let Some(g) = setting.catalog {
        return Some((g, format!("--catalog {g}")));
    }
    match layout {
        Some((CaddyLayout::Generic(src), from)) => Some((
            Generation::Y2026,
            format!("{from} has the generic port-{{port}}-{{instance}} rule ({src})"),
        )),
        Some((CaddyLayout::PerService(src), from)) => Some((
            Generation::Seed,
            format!("{from} has one rule per service ({src}, ...) and no generic port rule"),
        )),
        _ => None,
    }
}

/// The choice for one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Choice {
    /// Routing: URL form, Caddy's rules, the upstream name.
    pub(crate) routing: Generation,
    /// The container's services (catalog).
    pub(crate) container: Generation,
    pub(crate) why: String,
}

impl Choice {
    pub(crate) fn same(g: Generation, why: String) -> Choice {
        Choice {
            routing: g,
            container: g,
            why,
        }
    }
}

/// A probe config for one target: the container generation's catalog (with `--services`
/// applied) and, unless `--url-template` was given, the routing generation's URL template and
/// upstream. Behind seed rules a 2026 container's worker daemon has no public route.
pub(crate) fn config_for(
    base: &ProbeConfig,
    setting: &GenerationSetting,
    choice: &Choice,
) -> ProbeConfig {
    let g = choice.routing;
    let mut p = base.clone();
    if !setting.checks_dir {
        let mut c = choice.container.catalog();
        if choice.routing == Generation::Seed && choice.container == Generation::Y2026 {
            for s in c.services.iter_mut().filter(|s| s.name == "worker-daemon") {
                s.routed = false;
            }
        }
        if !setting.services.is_empty() {
            let names: Vec<String> = setting
                .services
                .iter()
                .filter(|n| c.get(n).is_some())
                .cloned()
                .collect();
            if let Ok(sel) = c.select(&names) {
                c = sel;
            }
        }
        p.catalog = c;
    }
    if !setting.explicit_template {
        p.template = g.template();
    }
    if let Some(h) = p.host.as_mut() {
        if h.upstream_template == Generation::Seed.upstream_template() {
            h.upstream_template = g.upstream_template().to_string();
        }
    }
    p
}

/// Probes the public URL forms of one target (execd in both forms; the worker daemon's 2026 URL).
pub(crate) async fn probe_forms(
    client: &reqwest::Client,
    base: &ProbeConfig,
    vmid: u32,
) -> FormProbes {
    let instance = base.instance(vmid);
    let seed_t = Generation::Seed.template();
    let y_t = Generation::Y2026.template();
    let seed_url = format!(
        "{}/healthz",
        seed_t.base_url_for("exec", vmid, &instance, 39375, &base.domain)
    );
    let y2026_url = format!(
        "{}/healthz",
        y_t.base_url_for("exec", vmid, &instance, 39375, &base.domain)
    );
    let daemon_url = format!(
        "{}/health",
        y_t.base_url_for("worker-daemon", vmid, &instance, 39377, &base.domain)
    );
    let (seed, y2026, daemon) = tokio::join!(
        detect_get(client, &seed_url, base),
        detect_get(client, &y2026_url, base),
        detect_get(client, &daemon_url, base)
    );
    FormProbes {
        seed_url,
        seed,
        y2026_url,
        y2026,
        daemon_url,
        daemon: Some(daemon),
    }
}

/// Is this the Go worker daemon's `/health` answer?
pub(crate) fn is_worker_daemon(p: &Probe) -> bool {
    answers_as(p, Generation::Y2026, "worker-daemon")
}

/// One detection request: a small answer, the run's per-probe timeout.
async fn detect_get(client: &reqwest::Client, url: &str, base: &ProbeConfig) -> Probe {
    crate::http::fetch_with(
        client,
        crate::http::Request {
            method: "GET",
            url,
            headers: &[],
            keep_headers: &[],
            body_cap: 4096,
            timeout: base.timeout,
        },
        base.access_for(url),
    )
    .await
}

/// Behind seed rules: asks `GET /health` through the worker's seed route (it dials 39377), to find
/// containers already on the 2026 images, where the Go worker daemon holds 39377.
async fn container_behind_seed_rules(
    client: &reqwest::Client,
    base: &ProbeConfig,
    vmid: u32,
) -> Option<String> {
    let url = format!(
        "{}/health",
        Generation::Seed.template().base_url_for(
            "worker",
            vmid,
            &base.instance(vmid),
            39377,
            &base.domain
        )
    );
    let p = detect_get(client, &url, base).await;
    is_worker_daemon(&p).then_some(url)
}

/// How far a target's generation is known before its probes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Known {
    /// By an option (`--checks`, `--catalog`) or the generic rule in Caddy's layout.
    Decided,
    /// Seed routing from Caddy's layout; the container's generation is still open (a 2026
    /// container behind seed rules): the worker's own probe answers it.
    RoutingOnly,
    /// Nothing decides it: a guess, which the target's own probes confirm or refute.
    Guessed,
}

/// A target's generation before its probes: the choice they are made with, and how far it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Plan {
    pub(crate) choice: Choice,
    pub(crate) known: Known,
}

/// The plan for every target: the option and Caddy's layout where they decide, else a guess (the
/// seed form, or the 2026 form under a `--url-template` with `{port}`). No request is sent: a
/// guess costs nothing when the target's probes confirm it ([`settle`]); only a target whose
/// probes leave it open asks the URL forms ([`choose`]).
pub(crate) fn plan(
    base: &ProbeConfig,
    setting: &GenerationSetting,
    layout: Option<(&CaddyLayout, &str)>,
    remembered: Option<Generation>,
) -> Plan {
    if setting.checks_dir {
        let g = if base.template.uses("port") {
            Generation::Y2026
        } else {
            Generation::Seed
        };
        let why = format!(
            "--checks {} (URL form of the template)",
            base.catalog.origin
        );
        return Plan {
            choice: Choice::same(g, why),
            known: Known::Decided,
        };
    }
    if let Some((g, why)) = decide_without_probes(setting, layout) {
        let known = if setting.fixed() || g == Generation::Y2026 {
            Known::Decided
        } else {
            Known::RoutingOnly
        };
        return Plan {
            choice: Choice::same(g, why),
            known,
        };
    }
    let (g, from) = match remembered {
        _ if setting.explicit_template => (
            if base.template.uses("port") {
                Generation::Y2026
            } else {
                Generation::Seed
            },
            "the --url-template",
        ),
        Some(g) => (g, "the target's last run"),
        None => (Generation::Seed, "the default"),
    };
    Plan {
        choice: Choice::same(
            g,
            format!("assumed {g} ({from}) until the probes tell: no --catalog, and no Caddy configuration to read; give --catalog seed|2026"),
        ),
        known: Known::Guessed,
    }
}

/// The service `name`'s public answer in `o`, when it was probed.
fn public_answer<'a>(o: &'a TargetObservation, name: &str) -> Option<&'a Probe> {
    o.services
        .iter()
        .find(|s| s.name == name && s.url.is_some())
        .map(|s| &s.external)
}

/// Whether execd answered at the public URL form the probes used: the exec call went through it
/// and execd (not the edge, not Caddy) answered, or the exec service's public probe did.
fn execd_answered_publicly(o: &TargetObservation, g: Generation) -> bool {
    (o.exec.via_public_url && o.exec.run.reached_execd())
        || public_answer(o, crate::catalog::EXEC_SERVICE)
            .is_some_and(|p| answers_as(p, g, crate::catalog::EXEC_SERVICE))
}

/// Whether the exec service's seed URL got Caddy's 2026 catch-all: the exec call through it, or
/// its public probe. Then the routing is 2026, as [`decide_from_answers`] says.
fn seed_hit_catch_all(o: &TargetObservation) -> bool {
    let call = o.exec.via_public_url
        && matches!(&o.exec.run, crate::observation::ExecRun::Rejected { status: 404, body, from_edge: false }
            if body.contains("cmux sandbox not found"));
    call || public_answer(o, crate::catalog::EXEC_SERVICE).is_some_and(is_2026_catch_all)
}

/// What the target's own probes, made with `plan`, settle about its generation: the final choice,
/// or None when they leave it open (then [`choose`] asks the URL forms). Pure.
///
/// They settle exactly what the URL forms would: a guess of seed holds when execd answered at
/// the seed URL and the Node worker (Socket.IO) answers behind the seed worker rule, so no Go
/// worker daemon holds 39377; a guess of 2026 holds when execd answered at the 2026 URL and the
/// Go worker daemon answers on 39377. Seed routing from Caddy's layout holds its seed catalog on
/// the same worker answer.
pub(crate) fn settle(
    plan: &Plan,
    o: &TargetObservation,
    layout: Option<(&CaddyLayout, &str)>,
) -> Option<Choice> {
    let node_worker =
        || public_answer(o, "worker").is_some_and(|p| answers_as(p, Generation::Seed, "worker"));
    // The service's public origin (scheme and host: the probe's path says nothing here).
    let url = |name: &str| {
        let u = o.services.iter().find(|s| s.name == name)?.url.as_deref()?;
        let u = url::Url::parse(u).ok()?;
        Some(format!("{}://{}", u.scheme(), u.host_str()?))
    };
    match plan.known {
        Known::Decided => Some(plan.choice.clone()),
        Known::RoutingOnly => node_worker().then(|| plan.choice.clone()),
        Known::Guessed if plan.choice.routing == Generation::Seed && seed_hit_catch_all(o) => {
            let why = format!(
                "Caddy answered the seed URL {} with its 2026 catch-all (404 \"cmux sandbox not found\")",
                o.exec.url
            );
            Some(Choice::same(Generation::Y2026, why))
        }
        Known::Guessed => {
            let g = plan.choice.routing;
            if plan.choice.container != g || !execd_answered_publicly(o, g) {
                return None;
            }
            let exec_url = if o.exec.via_public_url {
                o.exec.url.clone()
            } else {
                url(crate::catalog::EXEC_SERVICE).unwrap_or_default()
            };
            let why = match g {
                Generation::Seed if node_worker() => format!(
                    "execd answered at the seed URL {exec_url}, and the Node worker answers behind the seed worker rule ({})",
                    url("worker").unwrap_or_default()
                ),
                Generation::Y2026
                    if public_answer(o, "worker-daemon").is_some_and(is_worker_daemon) =>
                {
                    format!(
                        "execd answered at the 2026 URL {exec_url}, and the Go worker daemon answers on 39377 ({})",
                        url("worker-daemon").unwrap_or_default()
                    )
                }
                _ => return None,
            };
            let why = match layout {
                Some((CaddyLayout::Mixed { .. }, _)) => {
                    format!("Caddy has rules of both generations; {why}")
                }
                _ => why,
            };
            Some(Choice::same(g, why))
        }
    }
}

/// Chooses every target's generation: the option, Caddy's layout, else what answers. `layout` is
/// Caddy's layout and where it was read (a phrase such as "the Caddyfile /etc/caddy/Caddyfile.cmux").
pub(crate) async fn choose(
    client: &reqwest::Client,
    base: &ProbeConfig,
    setting: &GenerationSetting,
    layout: Option<(&CaddyLayout, &str)>,
    vmids: &[u32],
) -> BTreeMap<u32, Choice> {
    let found = choose_routing(client, base, setting, layout, vmids).await;
    // Seed rules, detected (not named by --catalog): is the container behind them on 2026 images?
    // (Targets decided by probing had this asked in the same round.)
    if setting.fixed() {
        return found.into_iter().map(|(v, (c, _))| (v, c)).collect();
    }
    let checked = futures_util::future::join_all(found.into_iter().map(|(v, (c, daemon))| async move {
        if c.routing != Generation::Seed {
            return (v, c);
        }
        let daemon = match daemon {
            Some(d) => d,
            None => container_behind_seed_rules(client, base, v).await,
        };
        match daemon {
            Some(url) => (
                v,
                Choice {
                    routing: Generation::Seed,
                    container: Generation::Y2026,
                    why: format!(
                        "{}; but the Go worker daemon of the 2026 images answers behind the seed worker rule ({url}): a 2026 container behind seed rules",
                        c.why
                    ),
                },
            ),
            None => (v, c),
        }
    }))
    .await;
    checked.into_iter().collect()
}

/// A target's choice, and the seed worker rule's daemon check when it was already made.
type Routed = (Choice, Option<Option<String>>);

/// The routing generation of each target, and (when it was probed in the same round) whether the
/// Go worker daemon answers behind the seed worker rule: `Some(None)` no, `Some(Some(url))` yes.
async fn choose_routing(
    client: &reqwest::Client,
    base: &ProbeConfig,
    setting: &GenerationSetting,
    layout: Option<(&CaddyLayout, &str)>,
    vmids: &[u32],
) -> BTreeMap<u32, Routed> {
    let mut out = BTreeMap::new();
    let p = plan(base, setting, layout, None);
    if p.known != Known::Guessed {
        for &v in vmids {
            out.insert(v, (p.choice.clone(), None));
        }
        return out;
    }
    let mixed = matches!(layout, Some((CaddyLayout::Mixed { .. }, _)));
    // One round per target: both URL forms and the seed worker rule, at once.
    let found = futures_util::future::join_all(vmids.iter().map(|&v| async move {
        let (f, daemon) = tokio::join!(
            probe_forms(client, base, v),
            container_behind_seed_rules(client, base, v)
        );
        (v, decide_from_answers(&f), daemon)
    }))
    .await;
    for (v, d, daemon) in found {
        let d = d.unwrap_or_else(|| {
            let g = if setting.explicit_template && base.template.uses("port") {
                Generation::Y2026
            } else {
                Generation::Seed
            };
            (
                g,
                format!(
                    "nothing told the generations apart (execd answered at neither URL form); assumed {g}: give --catalog seed|2026"
                ),
            )
        });
        let d = if mixed {
            (d.0, format!("Caddy has rules of both generations; {}", d.1))
        } else {
            d
        };
        out.insert(v, (Choice::same(d.0, d.1), Some(daemon)));
    }
    out
}

/// The 2026 layout answers every CORS preflight in Caddy (`@options`: 204 with the CORS headers and
/// `Access-Control-Max-Age`), for any hostname: one `OPTIONS` to the origin-check name, which no
/// container serves, tells whether Caddy does.
pub(crate) async fn preflight(client: &reqwest::Client, base: &ProbeConfig) -> (String, Probe) {
    let url = crate::target::origin_check_url(&base.template, &base.domain);
    let headers = vec![
        ("Origin".to_string(), "https://pvediag.invalid".to_string()),
        (
            "Access-Control-Request-Method".to_string(),
            "GET".to_string(),
        ),
    ];
    let keep = [
        "access-control-allow-origin".to_string(),
        "access-control-max-age".to_string(),
    ];
    let p = crate::http::fetch_with(
        client,
        crate::http::Request {
            method: "OPTIONS",
            url: &url,
            headers: &headers,
            keep_headers: &keep,
            body_cap: 1024,
            timeout: base.timeout,
        },
        base.access_for(&url),
    )
    .await;
    (url, p)
}

/// What the preflight says: `None` when Caddy answered it as the 2026 layout does (or when nothing
/// answered at all: the tunnel or Caddy being down is the verdicts' business), else why not.
pub(crate) fn preflight_problem(url: &str, p: &Probe) -> Option<String> {
    let what = crate::verdict::preflight_fault(p)?.what;
    Some(format!(
        "Caddy does not answer CORS preflights: OPTIONS {url} got {what}, not 204 with access-control-allow-origin; the 2026 Caddyfile needs `@options method OPTIONS` with `respond 204` (browsers' preflights otherwise reach the services, most of which refuse them)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observation::{HttpResponse, Probe};

    fn answer(status: u16, body: &str, ct: &str) -> Probe {
        Probe::Response {
            response: HttpResponse {
                status,
                headers: vec![("content-type".into(), ct.into())],
                body: body.into(),
                body_truncated: false,
            },
            elapsed_ms: 1,
        }
    }

    fn forms(seed: Probe, y: Probe, daemon: Probe) -> FormProbes {
        FormProbes {
            seed_url: "https://exec-202.d/healthz".into(),
            seed,
            y2026_url: "https://port-39375-pvelxc-1.d/healthz".into(),
            y2026: y,
            daemon_url: "https://port-39377-pvelxc-1.d/health".into(),
            daemon: Some(daemon),
        }
    }

    #[test]
    fn the_url_form_that_answers_decides() {
        let ok = || answer(200, "ok", "text/plain");
        let caddy502 = || answer(502, "", "");
        let catch_all = || {
            answer(
                404,
                "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN",
                "text/plain",
            )
        };
        let daemon = || {
            answer(
                200,
                r#"{"authenticated":false,"provider":"e2b","status":"ok"}"#,
                "application/json",
            )
        };
        let g = |f: FormProbes| decide_from_answers(&f).map(|d| d.0);
        assert_eq!(
            g(forms(ok(), catch_all(), caddy502())),
            Some(Generation::Seed)
        );
        assert_eq!(
            g(forms(catch_all(), ok(), daemon())),
            Some(Generation::Y2026)
        );
        assert_eq!(g(forms(ok(), ok(), daemon())), Some(Generation::Y2026));
        assert_eq!(g(forms(ok(), ok(), caddy502())), Some(Generation::Seed));
        // execd down behind a 2026 Caddy: the seed form hits the catch-all.
        assert_eq!(
            g(forms(catch_all(), caddy502(), caddy502())),
            Some(Generation::Y2026)
        );
        // Nothing routed at all (tunnel down): undecided.
        let t530 = || answer(530, "error code: 1033", "text/plain");
        assert_eq!(g(forms(t530(), t530(), t530())), None);
    }

    #[test]
    fn caddy_layouts_decide_before_any_probe() {
        let seed = crate::caddy::caddyfile::parse(
            "Caddyfile.seed",
            include_str!("../tests/fixtures/Caddyfile.seed"),
        );
        let later = crate::caddy::caddyfile::parse(
            "Caddyfile.later",
            include_str!("../tests/fixtures/Caddyfile.later"),
        );
        assert!(matches!(caddy_layout(&seed), CaddyLayout::PerService(_)));
        assert!(matches!(caddy_layout(&later), CaddyLayout::Generic(_)));
        let s = GenerationSetting::default();
        let d = decide_without_probes(&s, Some((&caddy_layout(&later), "the Caddyfile")));
        assert_eq!(d.as_ref().map(|d| d.0), Some(Generation::Y2026));
        assert!(d.unwrap().1.contains("Caddyfile.later:"));
        let d = decide_without_probes(&s, Some((&caddy_layout(&seed), "the Caddyfile")));
        assert_eq!(d.map(|d| d.0), Some(Generation::Seed));
        // --catalog wins over Caddy; --checks leaves it to the template.
        let named = GenerationSetting {
            catalog: Some(Generation::Seed),
            ..Default::default()
        };
        assert_eq!(
            decide_without_probes(&named, Some((&caddy_layout(&later), "x"))).map(|d| d.0),
            Some(Generation::Seed)
        );
        let mixed = CaddyLayout::Mixed {
            per_service: "a".into(),
            generic: "b".into(),
        };
        assert_eq!(decide_without_probes(&s, Some((&mixed, "x"))), None);
    }

    #[test]
    fn preflights() {
        let caddy204 = Probe::Response {
            response: HttpResponse {
                status: 204,
                headers: vec![
                    ("access-control-allow-origin".into(), "*".into()),
                    ("access-control-max-age".into(), "86400".into()),
                ],
                body: String::new(),
                body_truncated: false,
            },
            elapsed_ms: 1,
        };
        assert_eq!(preflight_problem("u", &caddy204), None);
        let catch_all = answer(
            404,
            "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN",
            "text/plain",
        );
        assert!(preflight_problem("u", &catch_all)
            .unwrap()
            .contains("catch-all"));
        assert_eq!(preflight_problem("u", &Probe::not_run("x")), None);
        // Behind a gate of the edge the preflight never reaches Caddy: not Caddy's finding.
        let challenge = Probe::Response {
            response: HttpResponse {
                status: 403,
                headers: vec![
                    ("server".into(), "cloudflare".into()),
                    ("cf-ray".into(), "8f0c2a1b3c4d5e6f-FRA".into()),
                    ("cf-mitigated".into(), "challenge".into()),
                ],
                body: "<title>Just a moment...</title>".into(),
                body_truncated: false,
            },
            elapsed_ms: 1,
        };
        assert_eq!(preflight_problem("u", &challenge), None);
    }

    fn guessed(g: Generation) -> Plan {
        Plan {
            choice: Choice::same(g, "assumed".into()),
            known: Known::Guessed,
        }
    }

    fn set_external(o: &mut TargetObservation, name: &str, p: Probe) {
        let s = o.services.iter_mut().find(|s| s.name == name).unwrap();
        s.external = p;
    }

    fn daemon_answer() -> Probe {
        answer(
            200,
            r#"{"authenticated":false,"provider":"e2b","status":"ok"}"#,
            "application/json",
        )
    }

    /// Every way a target's own probes settle its generation, or leave it to the URL forms; each
    /// settled row is what [`decide_from_answers`] and the seed worker rule's check would say.
    #[test]
    fn the_probes_settle_a_guess_or_leave_it_open() {
        use crate::observation::{ExecRun, FailureKind};
        use crate::verdict::tests::{failed, healthy_target};
        let seed = Generation::Seed.catalog();
        let y = Generation::Y2026.catalog();
        let settle_g = |p: &Plan, o: &TargetObservation| settle(p, o, None).map(|c| c.routing);

        // Seed guess, execd answered the exec call at the seed URL, the Node worker on 39377.
        let o = healthy_target(&seed);
        let c = settle(&guessed(Generation::Seed), &o, None).unwrap();
        assert_eq!(
            (c.routing, c.container),
            (Generation::Seed, Generation::Seed)
        );
        assert!(
            c.why
                .contains("execd answered at the seed URL https://exec-202"),
            "{}",
            c.why
        );
        // ... on a host with both kinds of rules, said so.
        let mixed = CaddyLayout::Mixed {
            per_service: "a".into(),
            generic: "b".into(),
        };
        let c = settle(&guessed(Generation::Seed), &o, Some((&mixed, "x"))).unwrap();
        assert!(
            c.why.starts_with("Caddy has rules of both generations; "),
            "{}",
            c.why
        );
        // The Go worker daemon (or nothing healthy) behind the seed worker rule: open.
        let mut d = o.clone();
        set_external(&mut d, "worker", daemon_answer());
        assert_eq!(settle_g(&guessed(Generation::Seed), &d), None);
        let mut d = o.clone();
        set_external(&mut d, "worker", failed(FailureKind::Timeout));
        assert_eq!(settle_g(&guessed(Generation::Seed), &d), None);
        // execd did not answer at the seed URL (the exec call is its public probe): open.
        let mut d = o.clone();
        d.exec.run = ExecRun::Failed {
            kind: FailureKind::Timeout,
            message: "x".into(),
        };
        set_external(&mut d, "exec", failed(FailureKind::Timeout));
        assert_eq!(settle_g(&guessed(Generation::Seed), &d), None);
        // A 401 from execd itself still proves the route reaches execd.
        let mut d = o.clone();
        d.exec.run = ExecRun::Rejected {
            status: 401,
            body: "unauthorized".into(),
            from_edge: false,
        };
        assert_eq!(
            settle_g(&guessed(Generation::Seed), &d),
            Some(Generation::Seed)
        );
        // Caddy's 2026 catch-all at the seed URL: 2026 (to be probed again in its own form).
        let mut d = o.clone();
        d.exec.run = ExecRun::Rejected {
            status: 404,
            body: "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN".into(),
            from_edge: false,
        };
        let c = settle(&guessed(Generation::Seed), &d, None).unwrap();
        assert_eq!(
            (c.routing, c.container),
            (Generation::Y2026, Generation::Y2026)
        );
        assert!(c.why.contains("catch-all"), "{}", c.why);
        // An exec call not through the public URL (--exec-url) proves nothing about the form,
        // unless the exec service's public probe answered as execd.
        let mut d = o.clone();
        d.exec.via_public_url = false;
        set_external(&mut d, "exec", failed(FailureKind::Timeout));
        assert_eq!(settle_g(&guessed(Generation::Seed), &d), None);
        set_external(&mut d, "exec", answer(200, "ok", "text/plain"));
        assert_eq!(
            settle_g(&guessed(Generation::Seed), &d),
            Some(Generation::Seed)
        );

        // 2026 guess: execd at the 2026 URL and the Go worker daemon on 39377.
        let mut o = healthy_target(&y);
        set_external(&mut o, "worker-daemon", daemon_answer());
        let c = settle(&guessed(Generation::Y2026), &o, None).unwrap();
        assert_eq!(
            (c.routing, c.container),
            (Generation::Y2026, Generation::Y2026)
        );
        assert!(
            c.why.contains("Go worker daemon answers on 39377"),
            "{}",
            c.why
        );
        // Without the daemon's answer, both URL forms may reach execd: open.
        let mut d = o.clone();
        set_external(&mut d, "worker-daemon", failed(FailureKind::Refused));
        assert_eq!(settle_g(&guessed(Generation::Y2026), &d), None);
        // The catch-all says nothing about a 2026 guess.
        let mut d = o.clone();
        d.exec.run = ExecRun::Rejected {
            status: 404,
            body: "cmux sandbox not found".into(),
            from_edge: false,
        };
        set_external(
            &mut d,
            "exec",
            answer(404, "cmux sandbox not found", "text/plain"),
        );
        assert_eq!(settle_g(&guessed(Generation::Y2026), &d), None);

        // Decided: whatever the probes say. Seed routing from Caddy's layout: the Node worker
        // settles the container's catalog; the daemon there leaves it open.
        let decided = Plan {
            choice: Choice::same(Generation::Y2026, "--catalog 2026".into()),
            known: Known::Decided,
        };
        let mut broken = healthy_target(&seed);
        broken.exec.run = ExecRun::Failed {
            kind: FailureKind::Timeout,
            message: "x".into(),
        };
        assert_eq!(
            settle(&decided, &broken, None),
            Some(decided.choice.clone())
        );
        let routing_only = Plan {
            choice: Choice::same(Generation::Seed, "Caddyfile: one rule per service".into()),
            known: Known::RoutingOnly,
        };
        let o = healthy_target(&seed);
        assert_eq!(
            settle(&routing_only, &o, None),
            Some(routing_only.choice.clone())
        );
        let mut d = o.clone();
        set_external(&mut d, "worker", daemon_answer());
        assert_eq!(settle(&routing_only, &d, None), None);
    }

    /// Nothing is sent to make a plan; what decides it, and the guess's source.
    #[test]
    fn plans() {
        use clap::Parser;
        let cli = crate::cli::Cli::try_parse_from(["pvediag", "202", "--domain", "example.test"])
            .unwrap();
        let base = crate::settings::Settings::from_args_reading_env_and_files(&cli.diag)
            .unwrap()
            .probe;
        let none = GenerationSetting::default();
        let p = plan(&base, &none, None, None);
        assert_eq!(p.known, Known::Guessed);
        assert_eq!(p.choice.routing, Generation::Seed);
        assert!(p.choice.why.contains("(the default)"), "{}", p.choice.why);
        let p = plan(&base, &none, None, Some(Generation::Y2026));
        assert_eq!(
            (p.known, p.choice.routing),
            (Known::Guessed, Generation::Y2026)
        );
        assert!(p.choice.why.contains("last run"), "{}", p.choice.why);
        let named = GenerationSetting {
            catalog: Some(Generation::Y2026),
            ..Default::default()
        };
        let p = plan(&base, &named, None, Some(Generation::Seed));
        assert_eq!(
            (p.known, p.choice.routing),
            (Known::Decided, Generation::Y2026)
        );
        let seed_rules = CaddyLayout::PerService("Caddyfile:5".into());
        let p = plan(&base, &none, Some((&seed_rules, "the Caddyfile")), None);
        assert_eq!(
            (p.known, p.choice.routing),
            (Known::RoutingOnly, Generation::Seed)
        );
        let generic = CaddyLayout::Generic("Caddyfile:13".into());
        let p = plan(&base, &none, Some((&generic, "the Caddyfile")), None);
        assert_eq!(
            (p.known, p.choice.routing),
            (Known::Decided, Generation::Y2026)
        );
    }

    #[test]
    fn names() {
        for g in Generation::ALL {
            assert_eq!(Generation::parse(g.name()), Some(g));
        }
        assert_eq!(Generation::parse("nope"), None);
    }
}
