//! Settings: the run's configuration, built once from the parsed command line, the files it names
//! and the environment, then never changed. Flags are parsed in [`crate::cli`] (no I/O there);
//! here they meet the world: token files, the CA bundle, the catalog, the Caddyfile, names that
//! resolve, the terminal, `NO_COLOR`, `CMUX_EXECD_AUTH_TOKEN`, `PVE_API_TOKEN`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::catalog::Catalog;
use crate::cli::{
    connect_to_error, CheckArgs, ColorChoice, DiagnoseArgs, HostPort, OutputArgs, OutputFormat,
    PveArgs, ReachArgs, TargetArg, UsageError,
};
use crate::probe::host::{HostConfig, Vantage};
use crate::probe::ProbeConfig;
use crate::pve::PveConfig;
use crate::secret::{parse_token, read_token_file, Secret};
use crate::target::TargetRequest;

/// What pvediag reads from its environment, read in one place.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    /// `CMUX_EXECD_AUTH_TOKEN`, when set and not empty.
    pub exec_token: Option<String>,
    /// `CF_ACCESS_CLIENT_ID` and `CF_ACCESS_CLIENT_SECRET`: a Cloudflare Access service token.
    pub access_client_id: Option<String>,
    pub access_client_secret: Option<String>,
    /// `PVE_API_TOKEN`, when set and not empty (never a flag: it would show in process listings).
    pub pve_token: Option<String>,
    /// `PVE_VERIFY_TLS`.
    pub pve_verify_tls: Option<String>,
    /// `NO_COLOR` is set and not empty.
    pub no_color: bool,
    /// stdout is a terminal.
    pub stdout_is_terminal: bool,
    /// The terminal's width (ioctl on stdout, else on stderr), when either is one.
    pub terminal_width: Option<usize>,
    /// `COLUMNS`, when it is a number.
    pub columns: Option<usize>,
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|t| !t.is_empty())
}

impl Environment {
    pub fn read() -> Environment {
        Environment {
            exec_token: non_empty_env("CMUX_EXECD_AUTH_TOKEN"),
            access_client_id: non_empty_env("CF_ACCESS_CLIENT_ID"),
            access_client_secret: non_empty_env("CF_ACCESS_CLIENT_SECRET"),
            pve_token: non_empty_env("PVE_API_TOKEN"),
            pve_verify_tls: std::env::var("PVE_VERIFY_TLS").ok(),
            no_color: std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
            stdout_is_terminal: std::io::IsTerminal::is_terminal(&std::io::stdout()),
            // stdout's terminal, else stderr's: `pvediag 202 | less` is still read in that terminal.
            terminal_width: terminal_size::terminal_size_of(std::io::stdout())
                .or_else(|| terminal_size::terminal_size_of(std::io::stderr()))
                .map(|(w, _)| w.0 as usize)
                .filter(|w| *w > 0),
            columns: std::env::var("COLUMNS")
                .ok()
                .and_then(|c| c.trim().parse().ok())
                .filter(|c: &usize| *c > 0),
        }
    }

    /// The width text is laid out for: the terminal's (stdout's, else stderr's), then `COLUMNS`,
    /// else 100.
    pub(crate) fn width(&self) -> usize {
        self.terminal_width
            .or(self.columns)
            .unwrap_or(crate::report::table::DEFAULT_WIDTH)
    }
}

/// Where Caddy's routes come from.
#[derive(Debug, Clone)]
pub(crate) enum CaddySource {
    /// A Caddyfile, read and parsed up front.
    File {
        path: PathBuf,
        table: crate::caddy::RouteTable,
    },
    /// The admin API, asked at run time.
    Admin(String),
}

/// Everything a diagnosis needs, validated. Built once; nothing changes it afterwards.
#[derive(Debug, Clone)]
pub struct Settings {
    pub(crate) caddy: Option<CaddySource>,
    /// The Proxmox VE API, when configured.
    pub(crate) pve: Option<PveConfig>,
    /// Targets diagnosed at once.
    pub(crate) concurrency: usize,
    /// `--wait`: re-diagnose until healthy for at most this long.
    pub(crate) wait: Option<Duration>,
    pub probe: ProbeConfig,
    pub(crate) connect_to: Option<SocketAddr>,
    pub(crate) cacert_pem: Option<Vec<u8>>,
    pub(crate) insecure: bool,
    pub(crate) deadline: Duration,
    pub(crate) format: OutputFormat,
    pub(crate) output: Option<PathBuf>,
    pub(crate) color: bool,
    /// Columns the human format fits in.
    pub(crate) width: usize,
    pub quiet: bool,
    /// Warnings to print on stderr (never containing secrets).
    pub(crate) warnings: Vec<String>,
    /// The state directory (docs/state.md); None: no state is read or written.
    pub state_dir: Option<PathBuf>,
    /// `--services`: the services shown (all when `None`). Only the report is narrowed: every
    /// service is probed and diagnosed, so a selection never changes a verdict.
    pub(crate) shown: Option<Vec<String>>,
    /// `--catalog`, `--checks`, `--url-template`, `--services`: what is fixed about each target's
    /// routing generation; the rest is detected per target ([`crate::generation`]).
    pub(crate) generation: crate::generation::GenerationSetting,
}

/// The option groups a subcommand has, and what it sets itself (the lab's host view).
pub struct Parts<'a> {
    pub reach: &'a ReachArgs,
    pub check: &'a CheckArgs,
    /// `None`: this subcommand does not use the PVE API (`demo`).
    pub pve: Option<&'a PveArgs>,
    pub wait: Option<Duration>,
    pub output: &'a OutputArgs,
    /// Extra environment of the host vantage's local scripts (the lab's curl view).
    pub host_env: Vec<(String, String)>,
    /// The state directory, already chosen ([`crate::state::choose_dir`]); None: no state.
    pub state_dir: Option<PathBuf>,
}

impl Settings {
    /// The plain command's settings: reads the files its options name and the environment.
    pub fn from_args_reading_env_and_files(args: &DiagnoseArgs) -> Result<Settings, UsageError> {
        Settings::from_parts_reading_files(
            Parts {
                reach: &args.reach,
                check: &args.check,
                pve: Some(&args.pve),
                wait: args.wait,
                output: &args.output,
                host_env: Vec::new(),
                state_dir: crate::state::choose_dir(
                    args.state.state_dir.as_deref(),
                    args.state.no_state,
                )
                .map_err(UsageError::new)?,
            },
            &Environment::read(),
        )
    }

    /// The settings from option groups and an environment already read.
    pub fn from_parts_reading_files(
        p: Parts<'_>,
        env: &Environment,
    ) -> Result<Settings, UsageError> {
        let (reach, check) = (p.reach, p.check);
        let mut warnings = Vec::new();
        let domain = reach.domain.clone().ok_or_else(|| {
            UsageError::new("no domain: give --domain sandbox.example.com or set PVE_PUBLIC_DOMAIN")
        })?;
        let timeout = check.timeout;
        let pve = match p.pve {
            Some(a) => pve_config(a, env, timeout)?,
            None => None,
        };
        let deadline = check
            .deadline
            .unwrap_or(timeout * 2 + Duration::from_secs(15));
        let connect_to = reach
            .connect_to
            .as_ref()
            .map(resolve_host_port)
            .transpose()?;
        let cacert_pem = reach.cacert.as_deref().map(read_cacert).transpose()?;
        let exec_token: Option<Secret> = match (&reach.exec_token_file, env.exec_token.as_deref()) {
            (Some(p), _) => {
                let (s, w) = read_token_file(p).map_err(|e| UsageError::new(e.to_string()))?;
                warnings.extend(w);
                Some(s)
            }
            (None, Some(t)) => Some(
                parse_token("CMUX_EXECD_AUTH_TOKEN", t)
                    .map_err(|e| UsageError::new(e.to_string()))?,
            ),
            (None, None) => None,
        };
        let access = crate::secret::access_token(
            reach.access_token_file.as_deref(),
            env.access_client_id.as_deref(),
            env.access_client_secret.as_deref(),
        )
        .map_err(|e| UsageError::new(e.to_string()))?
        .map(|(t, w)| {
            warnings.extend(w);
            t
        });
        // `--services` selects what is shown, never what is known: the probes, the exec channel and
        // the Caddy findings always use the whole catalog (each name is checked here).
        let catalog = match (check.checks.as_deref(), check.catalog) {
            (None, Some(g)) => g.catalog(),
            (dir, _) => catalog_reading_dir(dir)?,
        };
        let detected = check.checks.is_none() && check.catalog.is_none();
        if detected {
            select_services_of_both(catalog.clone(), &check.services)?;
        }
        let shown = select_services(&catalog, &check.services, !detected)?;
        let generation = crate::generation::GenerationSetting {
            catalog: check.catalog,
            checks_dir: check.checks.is_some(),
            explicit_template: check.url_template.as_str() != crate::target::DEFAULT_TEMPLATE,
            // Not applied to any target's catalog: `--services` narrows the report only.
            services: Vec::new(),
        };
        if catalog.exec().is_none() && check.exec_url.is_none() {
            warnings.push(
                "note: the catalog has no `exec` service, so nothing is probed inside the container"
                    .into(),
            );
        }
        if reach.insecure {
            warnings.push("warning: -k/--insecure: TLS certificates are not verified".into());
        }
        if let Some(w) = deadline_warning(deadline, timeout, EXEC_GRACE) {
            warnings.push(w);
        }
        // `-o -` is standard output, as for most tools.
        let output = p.output.output.clone().filter(|o| o.as_os_str() != "-");
        check_output_path(output.as_deref())?;
        let color = match p.output.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !env.no_color && output.is_none() && env.stdout_is_terminal,
        };
        let caddy = match (&reach.caddyfile, &check.caddy_admin) {
            (Some(path), _) => Some(CaddySource::File {
                table: read_caddyfile(path)?,
                path: path.clone(),
            }),
            (None, Some(u)) => Some(CaddySource::Admin(u.clone())),
            (None, None) => None,
        };
        Ok(Settings {
            caddy,
            pve,
            concurrency: check.concurrency,
            wait: p.wait,
            probe: ProbeConfig {
                catalog,
                template: check.url_template.clone(),
                domain,
                timeout,
                exec_token,
                exec_tokens: Default::default(),
                expected_identity: Default::default(),
                retries: check.retries,
                exec_url: check.exec_url.clone(),
                no_origin_check: check.no_origin_check,
                exec_grace: EXEC_GRACE,
                host: host_config(reach, check, p.host_env),
                access,
                instances: Default::default(),
            },
            connect_to,
            cacert_pem,
            insecure: reach.insecure,
            deadline,
            format: p.output.format,
            output,
            color,
            width: env.width(),
            quiet: p.output.quiet,
            warnings,
            state_dir: p.state_dir,
            shown,
            generation,
        })
    }

    /// The targets the command line names, checked against what these settings can resolve.
    pub fn target_request(
        &self,
        targets: &[TargetArg],
        all: bool,
    ) -> Result<TargetRequest, UsageError> {
        let mut req = TargetRequest {
            all,
            ..TargetRequest::default()
        };
        for t in targets {
            match t.sandbox() {
                crate::cli::Sandbox::Vmid(v) if !req.vmids.contains(&v) => req.vmids.push(v),
                crate::cli::Sandbox::Name(n) if !req.names.contains(&n) => req.names.push(n),
                _ => {}
            }
        }
        // Without the API: `cmux-N` is VMID N, and the host's `pct list` knows the others
        // (crate::instance).
        let unresolvable = req
            .names
            .iter()
            .find(|n| crate::target::vmid_of_cmux_name(n).is_none() && self.probe.host.is_none());
        if self.pve.is_none() && (all || unresolvable.is_some()) {
            let what = if all {
                "--all".to_string()
            } else {
                format!(
                    "the instance name {:?}",
                    unresolvable.cloned().unwrap_or_default()
                )
            };
            return Err(UsageError::new(format!(
                "{what} needs the Proxmox VE API: set PVE_API_URL (or --pve-url) and PVE_API_TOKEN{}",
                if all { "" } else { " (or run on the PVE host with --on-host)" }
            )));
        }
        Ok(req)
    }
}

/// The PVE API when both its URL and token are given; `None` otherwise.
fn pve_config(
    a: &PveArgs,
    env: &Environment,
    timeout: Duration,
) -> Result<Option<PveConfig>, UsageError> {
    let (Some(url), Some(token)) = (a.pve_url.as_deref(), env.pve_token.as_deref()) else {
        return Ok(None);
    };
    PveConfig::new(
        url,
        token,
        a.pve_node.as_deref(),
        !a.pve_insecure && truthy(env.pve_verify_tls.as_deref()),
        timeout,
    )
    .map(Some)
}

fn truthy(v: Option<&str>) -> bool {
    matches!(v.map(|s| s.trim().to_ascii_lowercase()), Some(s) if !s.is_empty() && !matches!(s.as_str(), "0" | "false" | "no" | "off"))
}

/// The host vantage (`--on-host`, `--ssh`), or `None` without one.
fn host_config(
    reach: &ReachArgs,
    check: &CheckArgs,
    env: Vec<(String, String)>,
) -> Option<HostConfig> {
    let vantage = match (&reach.ssh, check.on_host) {
        (Some(d), _) => Vantage::Ssh(d.clone()),
        (None, true) => Vantage::Local,
        (None, false) => return None,
    };
    Some(HostConfig {
        vantage,
        caddy_host: reach.caddy_url.host.clone(),
        caddy_port: reach.caddy_url.port,
        upstream_template: check.upstream_host.clone(),
        pct_fallback: !check.no_pct,
        env,
    })
}

/// `--connect-to`: an address as is, a name resolved here.
fn resolve_host_port(hp: &HostPort) -> Result<SocketAddr, UsageError> {
    if let Some(a) = hp.literal() {
        return Ok(a);
    }
    (hp.host.as_str(), hp.port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| connect_to_error(&hp.given, "the host does not resolve"))
}

fn read_cacert(p: &Path) -> Result<Vec<u8>, UsageError> {
    let bytes = std::fs::read(p).map_err(|e| {
        UsageError::new(format!(
            "--cacert {}: cannot read: {}",
            p.display(),
            e.kind()
        ))
    })?;
    if !String::from_utf8_lossy(&bytes).contains("-----BEGIN CERTIFICATE-----") {
        return Err(UsageError::new(format!(
            "--cacert {}: holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            p.display()
        )));
    }
    if reqwest::Certificate::from_pem_bundle(&bytes).is_err() {
        return Err(UsageError::new(format!(
            "--cacert {}: a PEM certificate in it is broken: expected base64 between \
             -----BEGIN CERTIFICATE----- and -----END CERTIFICATE-----",
            p.display()
        )));
    }
    Ok(bytes)
}

/// The catalog in `--checks DIR`, else the built-in one.
pub(crate) fn catalog_reading_dir(dir: Option<&Path>) -> Result<Catalog, UsageError> {
    match dir {
        Some(dir) => Catalog::load_dir(dir).map_err(|e| UsageError::new(e.to_string())),
        None => Ok(Catalog::embedded()),
    }
}

/// How much longer than `--timeout` the exec round trip may take (the services' probes run inside it).
pub(crate) const EXEC_GRACE: Duration = Duration::from_secs(5);

/// A deadline shorter than a probe's own time limit is the operator's choice: said up front, and
/// every probe it cuts is reported as cut by the deadline, never as a failure of the chain.
fn deadline_warning(deadline: Duration, timeout: Duration, grace: Duration) -> Option<String> {
    (deadline < timeout + grace).then(|| {
        format!(
            "warning: --deadline {} ms is shorter than --timeout {} ms plus the exec grace ({} s): \
             probes still running then are cut and reported as cut by the deadline, no hop blamed",
            deadline.as_millis(),
            timeout.as_millis(),
            grace.as_secs()
        )
    })
}

/// `--services A,B`: the names shown (each one checked against the catalog when `check`; with a
/// detected catalog they were checked against both built-in ones); `None`: all.
fn select_services(
    catalog: &Catalog,
    services: &[String],
    check: bool,
) -> Result<Option<Vec<String>>, UsageError> {
    let names: Vec<String> = services
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(None);
    }
    if check {
        catalog
            .select(&names)
            .map_err(|e| UsageError::new(format!("--services: {e}")))?;
    }
    Ok(Some(names))
}

/// `--services A,B` while the catalog is detected per target: each name must be a service of one
/// of the two built-in catalogs; the default catalog keeps the names it has.
fn select_services_of_both(catalog: Catalog, services: &[String]) -> Result<Catalog, UsageError> {
    let names: Vec<String> = services
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if names.is_empty() {
        return Ok(catalog);
    }
    let both = crate::generation::Generation::ALL.map(|g| g.catalog());
    for n in &names {
        if both.iter().all(|c| c.get(n).is_none()) {
            let err = both[1]
                .select(std::slice::from_ref(n))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            return Err(UsageError::new(format!("--services: {err}")));
        }
    }
    let known: Vec<String> = names
        .into_iter()
        .filter(|n| catalog.get(n).is_some())
        .collect();
    catalog
        .select(&known)
        .map_err(|e| UsageError::new(format!("--services: {e}")))
}

/// `-o FILE`: found out before probing, not after the whole run.
fn check_output_path(o: Option<&Path>) -> Result<(), UsageError> {
    let Some(o) = o else { return Ok(()) };
    if o.as_os_str().is_empty() || o.is_dir() {
        return Err(UsageError::new(format!(
            "-o/--output {:?} is not a file path",
            o.display()
        )));
    }
    if let Some(dir) = o.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(UsageError::new(format!(
                "-o/--output {:?}: the directory {:?} does not exist; expected a file in an existing directory",
                o.display(),
                dir.display()
            )));
        }
    }
    Ok(())
}

/// Reads a text file pvediag was pointed at, with a one-line error naming the option and file.
pub(crate) fn read_text(option: &str, p: &Path) -> Result<String, UsageError> {
    let cannot = |e: std::io::Error| {
        UsageError::new(format!(
            "{option} {}: cannot read: {}",
            p.display(),
            e.kind()
        ))
    };
    let meta = std::fs::metadata(p).map_err(cannot)?;
    if !meta.is_file() {
        return Err(UsageError::new(format!(
            "{option} {}: not a regular file",
            p.display()
        )));
    }
    if meta.len() > 4 * 1024 * 1024 {
        return Err(UsageError::new(format!(
            "{option} {}: larger than 4 MiB",
            p.display()
        )));
    }
    let bytes = std::fs::read(p).map_err(cannot)?;
    String::from_utf8(bytes)
        .map_err(|_| UsageError::new(format!("{option} {}: not UTF-8 text", p.display())))
}

/// Reads and parses a Caddyfile (never fails on content: what is not understood becomes findings).
pub(crate) fn read_caddyfile(p: &Path) -> Result<crate::caddy::RouteTable, UsageError> {
    let text = read_text("--caddyfile", p)?;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string());
    Ok(crate::caddy::caddyfile::parse(&name, &text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_connect_to;

    #[test]
    fn connect_to_names_resolve_here() {
        let a = resolve_host_port(&parse_connect_to("127.0.0.1:8443").unwrap()).unwrap();
        assert_eq!(a, "127.0.0.1:8443".parse().unwrap());
        assert!(resolve_host_port(&parse_connect_to("[::1]:8443").unwrap()).is_ok());
        assert!(resolve_host_port(&parse_connect_to("localhost:8443").unwrap()).is_ok());
        let e = resolve_host_port(&parse_connect_to("no-such-host.invalid:1").unwrap());
        assert!(e.unwrap_err().to_string().contains("does not resolve"));
    }

    #[test]
    fn pve_verify_tls_values() {
        assert!(truthy(Some("1")) && truthy(Some("true")) && !truthy(Some("0")) && !truthy(None));
    }
}
