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
use crate::observation::Probe;
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
    pub const ALL: [Generation; 2] = [Generation::Seed, Generation::Y2026];

    /// The name `--catalog` takes and reports print.
    pub fn name(self) -> &'static str {
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
    pub fn catalog(self) -> Catalog {
        match self {
            Generation::Seed => Catalog::embedded(),
            Generation::Y2026 => Catalog::embedded_2026(),
        }
    }

    /// The public URL template of this generation.
    pub fn template(self) -> UrlTemplate {
        let raw = match self {
            Generation::Seed => DEFAULT_TEMPLATE,
            Generation::Y2026 => TEMPLATE_2026,
        };
        UrlTemplate::parse(raw).expect("the built-in templates are valid")
    }

    /// The upstream Caddy dials for a container in this generation.
    pub fn upstream_template(self) -> &'static str {
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
pub struct GenerationSetting {
    /// `--catalog NAME` (None: detect per target). Ignored when `--checks DIR` gave the catalog.
    pub catalog: Option<Generation>,
    /// `--checks DIR` gave the catalog.
    pub checks_dir: bool,
    /// `--url-template` was given (not the default): it is kept whatever the generation.
    pub explicit_template: bool,
    /// `--services`: applied to whichever catalog a target gets.
    pub services: Vec<String>,
}

impl GenerationSetting {
    /// Nothing to detect: the catalog was given by name or directory.
    pub fn fixed(&self) -> bool {
        self.checks_dir || self.catalog.is_some()
    }
}

/// The generation a target was diagnosed with, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Routing {
    pub generation: Generation,
    /// The generation of the container's services (its catalog): the routing's, except behind
    /// seed rules in front of a container already on the 2026 images.
    pub container: Generation,
    /// One sentence: the evidence (or the option) that chose it.
    pub why: String,
    /// The container's hostname used for `{instance}`, and where it came from.
    pub instance: String,
    pub instance_source: String,
    /// The public URL template used for this target.
    pub url_template: String,
}

/// What Caddy's configuration says about the generation of every target behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaddyLayout {
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
pub fn caddy_layout(table: &RouteTable) -> CaddyLayout {
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
pub fn is_2026_catch_all(p: &Probe) -> bool {
    p.response()
        .is_some_and(|r| r.status == 404 && r.body.contains("cmux sandbox not found"))
}

/// What the public URL forms answered for one target: execd's `/healthz` in both forms, and the
/// 2026 worker daemon's `/health`.
#[derive(Debug, Clone)]
pub struct FormProbes {
    pub seed_url: String,
    pub seed: Probe,
    pub y2026_url: String,
    pub y2026: Probe,
    pub daemon_url: String,
    pub daemon: Option<Probe>,
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
pub fn decide_from_answers(f: &FormProbes) -> Option<(Generation, String)> {
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
pub fn decide_without_probes(
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
pub struct Choice {
    /// Routing: URL form, Caddy's rules, the upstream name.
    pub routing: Generation,
    /// The container's services (catalog).
    pub container: Generation,
    pub why: String,
}

impl Choice {
    fn same(g: Generation, why: String) -> Choice {
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
pub fn config_for(base: &ProbeConfig, setting: &GenerationSetting, choice: &Choice) -> ProbeConfig {
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
pub async fn probe_forms(client: &reqwest::Client, base: &ProbeConfig, vmid: u32) -> FormProbes {
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
        detect_get(client, &seed_url, base.timeout),
        detect_get(client, &y2026_url, base.timeout),
        detect_get(client, &daemon_url, base.timeout)
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
pub fn is_worker_daemon(p: &Probe) -> bool {
    answers_as(p, Generation::Y2026, "worker-daemon")
}

/// One detection request: a small answer, the run's per-probe timeout.
async fn detect_get(client: &reqwest::Client, url: &str, timeout: std::time::Duration) -> Probe {
    crate::http::fetch(
        client,
        crate::http::Request {
            method: "GET",
            url,
            headers: &[],
            keep_headers: &[],
            body_cap: 4096,
            timeout,
        },
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
    let p = detect_get(client, &url, base.timeout).await;
    is_worker_daemon(&p).then_some(url)
}

/// Chooses every target's generation: the option, Caddy's layout, else what answers. `layout` is
/// Caddy's layout and where it was read (a phrase such as "the Caddyfile /etc/caddy/Caddyfile.cmux").
pub async fn choose(
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
    if setting.checks_dir {
        // A catalog directory: the generation is whatever the template says.
        let g = if base.template.uses("port") {
            Generation::Y2026
        } else {
            Generation::Seed
        };
        for &v in vmids {
            out.insert(
                v,
                (
                    Choice::same(
                        g,
                        format!(
                            "--checks {} (URL form of the template)",
                            base.catalog.origin
                        ),
                    ),
                    None,
                ),
            );
        }
        return out;
    }
    if let Some((g, why)) = decide_without_probes(setting, layout) {
        for &v in vmids {
            out.insert(v, (Choice::same(g, why.clone()), None));
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
pub async fn preflight(client: &reqwest::Client, base: &ProbeConfig) -> (String, Probe) {
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
    let p = crate::http::fetch(
        client,
        crate::http::Request {
            method: "OPTIONS",
            url: &url,
            headers: &headers,
            keep_headers: &keep,
            body_cap: 1024,
            timeout: base.timeout,
        },
    )
    .await;
    (url, p)
}

/// What the preflight says: `None` when Caddy answered it as the 2026 layout does (or when nothing
/// answered at all: the tunnel or Caddy being down is the verdicts' business), else why not.
pub fn preflight_problem(url: &str, p: &Probe) -> Option<String> {
    let r = p.response()?;
    let by_cloudflare = r
        .header("server")
        .is_some_and(|s| s.eq_ignore_ascii_case("cloudflare"));
    if by_cloudflare && r.status >= 500 {
        return None;
    }
    if r.status == 204 && r.has_header("access-control-allow-origin") {
        return None;
    }
    let what = if is_2026_catch_all(p) {
        "Caddy's catch-all 404".to_string()
    } else {
        let body: String = r.body.chars().take(60).collect();
        format!("{} {body:?}", r.status)
    };
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
    }

    #[test]
    fn names() {
        for g in Generation::ALL {
            assert_eq!(Generation::parse(g.name()), Some(g));
        }
        assert_eq!(Generation::parse("nope"), None);
    }
}
