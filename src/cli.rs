//! The command line: clap definitions, parsed once into a validated [`DiagnoseConfig`].
//! Nothing deeper ever sees a raw string from the command line or the environment.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::catalog::Catalog;
use crate::probe::ProbeConfig;
use crate::secret::{parse_token, read_token_file, Secret};
use crate::target::{parse_vmid, validate_domain, UrlTemplate, DEFAULT_TEMPLATE};

#[derive(Debug, Parser)]
#[command(
    name = "pvediag",
    version,
    about = "Where is the routing chain of a cmux sandbox broken: tunnel, Caddy port, or the service?",
    long_about = "Probes every service of a cmux container externally (through Cloudflare Tunnel and Caddy) and \
internally (through cmux-execd), compares the two, and says which link is broken, with the evidence and \
the command that fixes it.\n\nExit codes: 0 all healthy, 1 something broken or degraded, 2 usage or \
configuration error, 3 nothing proven broken but something could not be checked.",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Containers to diagnose: VMIDs (202) or instance names (cmux-202, pvelxc-1a2b3c4d; names need
    /// the PVE API)
    #[arg(value_name = "VMID|NAME", required_unless_present = "all")]
    pub vmids: Vec<String>,

    #[command(flatten)]
    pub diag: DiagnoseArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in lab on loopback and diagnose it (no Proxmox needed)
    Demo(Box<DemoArgs>),
    /// Check Caddyfiles and setup scripts against the service catalog, before a deploy (no network)
    Lint(LintArgs),
    /// Run as a Prometheus multi-target exporter: GET /probe?target=202 diagnoses one container
    Serve(Box<ServeArgs>),
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// A Caddyfile to check (repeatable)
    #[arg(long, value_name = "FILE")]
    pub caddyfile: Vec<PathBuf>,

    /// A JSON config as Caddy's admin API gives it (`curl localhost:2019/config/`), repeatable
    #[arg(long, value_name = "FILE")]
    pub caddy_json: Vec<PathBuf>,

    /// A setup script whose NAME_PORT=NUMBER constants must match the catalog (repeatable)
    #[arg(long, value_name = "FILE")]
    pub setup_script: Vec<PathBuf>,

    /// Use the service catalog in DIR instead of the built-in one
    #[arg(long, value_name = "DIR")]
    pub checks: Option<PathBuf>,

    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub format: LintFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LintFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9839", value_name = "ADDR")]
    pub listen: String,

    #[command(flatten)]
    pub diag: DiagnoseArgs,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The fault the lab simulates
    #[arg(long, default_value = "seed", value_name = "NAME")]
    pub scenario: String,

    /// List the scenarios and exit
    #[arg(long)]
    pub list: bool,

    /// Keep the lab running and print the command to diagnose it by hand
    #[arg(long)]
    pub serve: bool,

    /// Instead of a scenario: N healthy containers, VMIDs 1000.. (for benchmarks)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub containers: Option<u32>,

    /// Latency injected at every hop of the lab (edge, host proxy, execd, each service)
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub delay_ms: u64,

    #[command(flatten)]
    pub diag: DiagnoseArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
    Junit,
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Options of a diagnosis (shared by the plain command and `demo`).
#[derive(Debug, Args, Clone)]
pub struct DiagnoseArgs {
    /// The public domain of the sandboxes
    #[arg(long, env = "PVE_PUBLIC_DOMAIN", value_name = "DOMAIN")]
    pub domain: Option<String>,

    /// Public URL of a service; placeholders {service} {vmid} {port} {domain}
    #[arg(long, env = "PVEDIAG_URL_TEMPLATE", default_value = DEFAULT_TEMPLATE, value_name = "TEMPLATE")]
    pub url_template: String,

    /// Dial HOST:PORT for every public URL, keeping Host and SNI (like curl --connect-to)
    #[arg(long, value_name = "HOST:PORT")]
    pub connect_to: Option<String>,

    /// Trust the CA certificate(s) in this PEM file too
    #[arg(long, value_name = "FILE")]
    pub cacert: Option<PathBuf>,

    /// Accept any TLS certificate (insecure)
    #[arg(short = 'k', long)]
    pub insecure: bool,

    /// Read the cmux-execd token from FILE (else env CMUX_EXECD_AUTH_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub exec_token_file: Option<PathBuf>,

    /// Cloudflare Access service token: FILE holds two lines, the client id and the client secret
    /// (else env CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET)
    #[arg(long, value_name = "FILE")]
    pub access_token_file: Option<PathBuf>,

    /// Reach cmux-execd at this URL instead of its public one ({vmid} is replaced)
    #[arg(long, value_name = "URL")]
    pub exec_url: Option<String>,

    /// Only these services (comma-separated names from the catalog)
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub services: Vec<String>,

    /// Use the service catalog in DIR (*.json) instead of the built-in one
    #[arg(long, value_name = "DIR")]
    pub checks: Option<PathBuf>,

    /// Timeout of each probe (e.g. 10s, 1500ms, 1m)
    #[arg(long, default_value = "10s", value_name = "DURATION")]
    pub timeout: String,

    /// Bound on the whole run, however many probes hang (default: 2 × timeout + 15s)
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,

    /// Read Caddy's routes from this Caddyfile (as on the host: /etc/caddy/Caddyfile.cmux)
    #[arg(long, value_name = "FILE", conflicts_with = "caddy_admin")]
    pub caddyfile: Option<PathBuf>,

    /// Read Caddy's loaded routes from its admin API (e.g. http://127.0.0.1:2019)
    #[arg(long, value_name = "URL")]
    pub caddy_admin: Option<String>,

    /// pvediag runs on the PVE host: also probe Caddy, the upstream and cloudflared directly
    #[arg(long, conflicts_with = "ssh")]
    pub on_host: bool,

    /// Probe from the PVE host through ssh (BatchMode, the system ssh client): [USER@]HOST
    #[arg(long, value_name = "USER@HOST")]
    pub ssh: Option<String>,

    /// Caddy's listener as seen from the host (with --on-host / --ssh)
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL")]
    pub caddy_url: String,

    /// The upstream Caddy dials for a container ({vmid} is replaced)
    #[arg(long, default_value = "cmux-{vmid}.lan", value_name = "HOST")]
    pub upstream_host: String,

    /// With --on-host / --ssh: never fall back to `pct exec` for the internal probes
    #[arg(long)]
    pub no_pct: bool,
    /// Targets diagnosed at once (1-256)
    #[arg(long, default_value_t = crate::run::CONCURRENCY, value_name = "N",
          value_parser = parse_concurrency)]
    pub concurrency: usize,

    /// Diagnose every running cmux container the Proxmox VE API lists (PVE_API_URL, PVE_API_TOKEN)
    #[arg(long)]
    pub all: bool,

    /// The Proxmox VE API, e.g. https://pve.lan:8006
    #[arg(long, env = "PVE_API_URL", value_name = "URL")]
    pub pve_url: Option<String>,

    /// The PVE node (default: the first node the API lists)
    #[arg(long, env = "PVE_NODE", value_name = "NODE")]
    pub pve_node: Option<String>,

    /// Do not verify the PVE API's TLS certificate (the default unless PVE_VERIFY_TLS is set, as in cmux)
    #[arg(long)]
    pub pve_insecure: bool,

    /// Re-diagnose with backoff until everything is healthy or DURATION is spent (CI after a deploy)
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,

    /// Retry an external probe that failed transiently (timeout, edge 502/503/504, receive error)
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub retries: u32,

    /// Skip the origin check (a hostname Caddy answers itself)
    #[arg(long)]
    pub no_origin_check: bool,

    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub format: OutputFormat,

    /// Write the report to FILE (written atomically) instead of stdout
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Colour: auto (on a terminal, unless NO_COLOR), always, never
    #[arg(long, value_enum, default_value = "auto")]
    pub color: ColorChoice,

    /// Print nothing; only the exit code tells
    #[arg(short, long)]
    pub quiet: bool,
}

/// A usage or configuration error: exit code 2, one line.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

impl UsageError {
    pub fn new(s: impl Into<String>) -> UsageError {
        UsageError(s.into())
    }
}

/// Where Caddy's routes come from.
#[derive(Debug, Clone)]
pub enum CaddySource {
    /// A Caddyfile, read and parsed up front.
    File {
        path: PathBuf,
        table: crate::caddy::RouteTable,
    },
    /// The admin API, asked at run time.
    Admin(String),
}

/// Everything a diagnosis needs, validated.
#[derive(Debug, Clone)]
pub struct DiagnoseConfig {
    pub caddy: Option<CaddySource>,
    pub vmids: Vec<u32>,
    /// Instance names given where a VMID is expected, resolved through the PVE API.
    pub names: Vec<String>,
    /// `--all`: the targets come from the PVE API.
    pub all: bool,
    /// The Proxmox VE API, when configured.
    pub pve: Option<crate::pve::PveConfig>,
    /// Targets `--all` found but does not diagnose (stopped, templates).
    pub skipped_targets: Vec<crate::report::SkippedTarget>,
    /// Targets diagnosed at once.
    pub concurrency: usize,
    /// `--wait`: re-diagnose until healthy for at most this long.
    pub wait: Option<Duration>,
    pub probe: ProbeConfig,
    pub connect_to: Option<SocketAddr>,
    pub cacert_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub deadline: Duration,
    pub format: OutputFormat,
    pub output: Option<PathBuf>,
    pub color: bool,
    pub quiet: bool,
    /// Warnings to print on stderr (never containing secrets).
    pub warnings: Vec<String>,
}

/// `PVE_API_TOKEN` from the environment (never a flag: a flag would show in process listings).
fn pve_env_token() -> Option<String> {
    std::env::var("PVE_API_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

/// Parses `10s`, `1500ms`, `1m`, `2.5s`, or a plain number of seconds.
pub fn parse_duration(what: &str, s: &str) -> Result<Duration, UsageError> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    let bad = || {
        UsageError::new(format!(
            "{what} {s:?} is not a duration: write e.g. 10s, 1500ms or 2m (from 1ms to 24h)"
        ))
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v <= 0.0 {
        return Err(bad());
    }
    let secs = v * mult;
    if !(0.001..=86400.0).contains(&secs) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Parses `HOST:PORT` (an address or a name that resolves locally) for --connect-to.
pub fn parse_connect_to(s: &str) -> Result<SocketAddr, UsageError> {
    let bad = |why: &str| {
        UsageError::new(format!(
            "--connect-to {s:?}: {why}; expected HOST:PORT such as 127.0.0.1:8443 or [::1]:8443"
        ))
    };
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(bad("port 0 is not a port"));
        }
        return Ok(a);
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| bad("no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| bad("the port is not 1-65535"))?;
    if host.is_empty() || host.contains(|c: char| c.is_whitespace() || c == '/') {
        return Err(bad("the host is empty or malformed"));
    }
    (host, port)
        .to_socket_addrs()
        .ok()
        .and_then(|mut it| it.next())
        .ok_or_else(|| bad("the host does not resolve"))
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number from 1 to 256")),
    }
}

/// `cmux-202`, `pvelxc-1a2b3c4d`: an instance name (the container's hostname).
pub fn is_instance_name(s: &str) -> bool {
    let rest = s
        .strip_prefix("cmux-")
        .or_else(|| s.strip_prefix("pvelxc-"));
    matches!(rest, Some(r) if !r.is_empty()
        && r.len() <= 56
        && r.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-'))
}

fn parse_exec_url(s: &str) -> Result<String, UsageError> {
    let sample = s.replace("{vmid}", "202");
    match url::Url::parse(&sample) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.query().is_none()
                && u.username().is_empty()
                && u.password().is_none() =>
        {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(UsageError::new(format!(
            "--exec-url {s:?} is not an http(s) base URL without query or credentials, e.g. http://cmux-{{vmid}}.lan:39375"
        ))),
    }
}

/// Reads a text file pvediag was pointed at, with a one-line error naming the option and file.
pub fn read_text(option: &str, p: &std::path::Path) -> Result<String, UsageError> {
    let meta = std::fs::metadata(p).map_err(|e| {
        UsageError::new(format!(
            "{option} {}: cannot read: {}",
            p.display(),
            e.kind()
        ))
    })?;
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
    let bytes = std::fs::read(p).map_err(|e| {
        UsageError::new(format!(
            "{option} {}: cannot read: {}",
            p.display(),
            e.kind()
        ))
    })?;
    String::from_utf8(bytes)
        .map_err(|_| UsageError::new(format!("{option} {}: not UTF-8 text", p.display())))
}

/// Reads and parses a Caddyfile (never fails on content: what is not understood becomes findings).
pub fn read_caddyfile(p: &std::path::Path) -> Result<crate::caddy::RouteTable, UsageError> {
    let text = read_text("--caddyfile", p)?;
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string());
    Ok(crate::caddy::caddyfile::parse(&name, &text))
}

fn parse_admin_url(s: &str) -> Result<String, UsageError> {
    match url::Url::parse(s) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some()
                && u.query().is_none() =>
        {
            Ok(s.trim_end_matches('/').to_string())
        }
        _ => Err(UsageError::new(format!(
            "--caddy-admin {s:?} is not an http(s) URL such as http://127.0.0.1:2019"
        ))),
    }
}

impl DiagnoseArgs {
    fn host_config(&self) -> Result<Option<crate::probe::host::HostConfig>, UsageError> {
        use crate::probe::host::{valid_ssh_dest, HostConfig, Vantage};
        let vantage = match (&self.ssh, self.on_host) {
            (Some(d), _) => {
                if !valid_ssh_dest(d) {
                    return Err(UsageError::new(format!(
                        "--ssh {d:?} is not a destination: expected [USER@]HOST such as root@pve.lan"
                    )));
                }
                Vantage::Ssh(d.clone())
            }
            (None, true) => Vantage::Local,
            (None, false) => return Ok(None),
        };
        let bad_caddy = || {
            UsageError::new(format!(
                "--caddy-url {:?} is not a plain http URL such as http://127.0.0.1:8080",
                self.caddy_url
            ))
        };
        let u = url::Url::parse(&self.caddy_url).map_err(|_| bad_caddy())?;
        let host = u.host_str().ok_or_else(bad_caddy)?.to_string();
        if u.scheme() != "http" || !crate::probe::internal::valid_host(&host) || u.path() != "/" {
            return Err(bad_caddy());
        }
        let port = u.port().unwrap_or(80);
        let sample = self.upstream_host.replace("{vmid}", "202");
        if !self.upstream_host.contains("{vmid}") || !crate::probe::internal::valid_host(&sample) {
            return Err(UsageError::new(format!(
                "--upstream-host {:?} must be a hostname holding {{vmid}}, such as cmux-{{vmid}}.lan",
                self.upstream_host
            )));
        }
        Ok(Some(HostConfig {
            vantage,
            caddy_host: host,
            caddy_port: port,
            upstream_template: self.upstream_host.clone(),
            pct_fallback: !self.no_pct,
            env: Vec::new(),
        }))
    }

    /// Validates everything up front; `vmids` are the raw positional values.
    pub fn validate(
        &self,
        vmids: &[String],
        env_token: Option<&str>,
    ) -> Result<DiagnoseConfig, UsageError> {
        let mut warnings = Vec::new();
        let mut ids = Vec::new();
        let mut names = Vec::new();
        for v in vmids {
            if is_instance_name(v) {
                if !names.contains(v) {
                    names.push(v.clone());
                }
                continue;
            }
            let id = parse_vmid(v).map_err(|e| UsageError::new(e.to_string()))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let wait = self
            .wait
            .as_deref()
            .map(|w| parse_duration("--wait", w))
            .transpose()?;
        let domain = match &self.domain {
            Some(d) => validate_domain(d).map_err(|e| UsageError::new(e.to_string()))?,
            None => {
                return Err(UsageError::new(
                    "no domain: give --domain sandbox.example.com or set PVE_PUBLIC_DOMAIN",
                ))
            }
        };
        let template =
            UrlTemplate::parse(&self.url_template).map_err(|e| UsageError::new(e.to_string()))?;
        let timeout = parse_duration("--timeout", &self.timeout)?;
        let pve = crate::pve::PveConfig::from_args(self, pve_env_token().as_deref(), timeout)?;
        if pve.is_none() && (self.all || !names.is_empty()) {
            let what = if self.all {
                "--all".to_string()
            } else {
                format!("the instance name {:?}", names[0])
            };
            return Err(UsageError::new(format!(
                "{what} needs the Proxmox VE API: set PVE_API_URL (or --pve-url) and PVE_API_TOKEN"
            )));
        }
        let deadline = match &self.deadline {
            Some(d) => parse_duration("--deadline", d)?,
            None => timeout * 2 + Duration::from_secs(15),
        };
        let connect_to = self
            .connect_to
            .as_deref()
            .map(parse_connect_to)
            .transpose()?;
        let cacert_pem = match &self.cacert {
            Some(p) => {
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
                Some(bytes)
            }
            None => None,
        };
        let exec_token: Option<Secret> = match (&self.exec_token_file, env_token) {
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
            self.access_token_file.as_deref(),
            std::env::var("CF_ACCESS_CLIENT_ID").ok().as_deref(),
            std::env::var("CF_ACCESS_CLIENT_SECRET").ok().as_deref(),
        )
        .map_err(|e| UsageError::new(e.to_string()))?
        .map(|(t, w)| {
            warnings.extend(w);
            t
        });
        let exec_url = self.exec_url.as_deref().map(parse_exec_url).transpose()?;
        let mut catalog = match &self.checks {
            Some(dir) => Catalog::load_dir(dir).map_err(|e| UsageError::new(e.to_string()))?,
            None => Catalog::embedded(),
        };
        if !self.services.is_empty() {
            let names: Vec<String> = self
                .services
                .iter()
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            catalog = catalog
                .select(&names)
                .map_err(|e| UsageError::new(format!("--services: {e}")))?;
        }
        if catalog.exec().is_none() && exec_url.is_none() {
            warnings.push(
                "note: the catalog has no `exec` service, so nothing is probed inside the container"
                    .into(),
            );
        }
        if self.insecure {
            warnings.push("warning: -k/--insecure: TLS certificates are not verified".into());
        }
        if let Some(o) = &self.output {
            if o.as_os_str().is_empty() || o.is_dir() {
                return Err(UsageError::new(format!(
                    "-o/--output {:?} is not a file path",
                    o.display()
                )));
            }
            // Found out before probing, not after the whole run.
            if let Some(dir) = o.parent().filter(|d| !d.as_os_str().is_empty()) {
                if !dir.is_dir() {
                    return Err(UsageError::new(format!(
                        "-o/--output {:?}: the directory {:?} does not exist; expected a file in an existing directory",
                        o.display(),
                        dir.display()
                    )));
                }
            }
        }
        let color = match self.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && self.output.is_none()
                    && std::io::IsTerminal::is_terminal(&std::io::stdout())
            }
        };
        let caddy = match (&self.caddyfile, &self.caddy_admin) {
            (Some(p), _) => Some(CaddySource::File {
                table: read_caddyfile(p)?,
                path: p.clone(),
            }),
            (None, Some(u)) => Some(CaddySource::Admin(parse_admin_url(u)?)),
            (None, None) => None,
        };
        Ok(DiagnoseConfig {
            caddy,
            vmids: ids,
            names,
            all: self.all,
            pve,
            skipped_targets: Vec::new(),
            concurrency: self.concurrency,
            wait,
            probe: ProbeConfig {
                catalog,
                template,
                domain,
                timeout,
                exec_token,
                exec_tokens: Default::default(),
                retries: self.retries,
                exec_url,
                no_origin_check: self.no_origin_check,
                exec_grace: Duration::from_secs(5),
                host: self.host_config()?,
                access,
            },
            connect_to,
            cacert_pem,
            insecure: self.insecure,
            deadline,
            format: self.format,
            output: self.output.clone(),
            color,
            quiet: self.quiet,
            warnings,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("t", "10s").unwrap(), Duration::from_secs(10));
        assert_eq!(
            parse_duration("t", "1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(parse_duration("t", "2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("t", "3").unwrap(), Duration::from_secs(3));
        for bad in [
            "", "0", "-1s", "abc", "1x", "NaNs", "infs", "100000h", "0.0001ms",
        ] {
            assert!(parse_duration("--timeout", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn connect_to() {
        assert_eq!(
            parse_connect_to("127.0.0.1:8443").unwrap(),
            "127.0.0.1:8443".parse().unwrap()
        );
        assert!(parse_connect_to("[::1]:8443").is_ok());
        assert!(parse_connect_to("localhost:8443").is_ok());
        for bad in [
            "127.0.0.1",
            "127.0.0.1:0",
            "127.0.0.1:99999",
            ":80",
            "a b:80",
        ] {
            assert!(parse_connect_to(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn instance_names_and_concurrency() {
        for ok in ["cmux-202", "pvelxc-1a2b3c4d"] {
            assert!(is_instance_name(ok), "{ok}");
        }
        for bad in [
            "202",
            "cmux-",
            "pvelxc-",
            "CMUX-202",
            "cmux-2 02",
            "other-1",
            "cmux-a/b",
        ] {
            assert!(!is_instance_name(bad), "{bad}");
        }
        assert_eq!(parse_concurrency("1"), Ok(1));
        assert_eq!(parse_concurrency("256"), Ok(256));
        for bad in ["0", "257", "-1", "x", ""] {
            assert!(parse_concurrency(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn exec_urls() {
        assert!(parse_exec_url("http://cmux-{vmid}.lan:39375").is_ok());
        for bad in ["ftp://x", "http://u:p@x", "http://x/?a=1", "nope"] {
            assert!(parse_exec_url(bad).is_err(), "{bad}");
        }
    }
}
