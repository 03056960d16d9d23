//! The command line: clap definitions only. Every value is parsed by clap into its type (durations,
//! addresses, URLs, VMIDs) with the one-line error users see; nothing here reads a file, the
//! environment or the network. [`crate::settings`] turns these into the run's settings.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::target::{is_instance_name, parse_vmid, validate_domain, UrlTemplate, DEFAULT_TEMPLATE};

/// Targets diagnosed at once by default (`--concurrency`). Each target in flight holds about eight
/// connections (six public URLs, the exec channel's two) and spawns one bash in its container; 32
/// targets keep a run under about 30 MB and 300 sockets.
pub const CONCURRENCY: usize = 32;

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

    /// Containers to diagnose: VMIDs (202), instance names (cmux-202, pvelxc-1a2b3c4d; names need
    /// the PVE API) or a service's public URL as the browser shows it
    /// (https://xterm-202.example.com/sessions, https://port-39383-pvelxc-1a2b3c4d.example.com/)
    #[arg(value_name = "VMID|NAME|URL", value_parser = parse_target)]
    pub targets: Vec<TargetArg>,

    /// Diagnose every running cmux container the Proxmox VE API lists (PVE_API_URL, PVE_API_TOKEN)
    #[arg(long)]
    pub all: bool,

    #[command(flatten)]
    pub diag: DiagnoseArgs,
}

/// A positional target: a VMID or an instance name (resolved through the PVE API), or a public URL
/// that names both a sandbox and one of its services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetArg {
    Vmid(u32),
    Name(String),
    Url(PublicUrl),
}

/// A service's public URL, taken apart: `https://{service}-{vmid}.{domain}/…` (seed) or
/// `https://port-{port}-{instance}.{domain}/…` (2026).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicUrl {
    /// The sandbox: a VMID (seed) or an instance name (2026).
    pub(crate) sandbox: Sandbox,
    pub(crate) service: ServiceRef,
    pub(crate) domain: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Sandbox {
    Vmid(u32),
    Name(String),
}

/// How a URL names its service: by name (seed) or by port (2026).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ServiceRef {
    Name(String),
    Port(u16),
}

impl TargetArg {
    /// The sandbox part: a VMID or a name.
    pub(crate) fn sandbox(&self) -> Sandbox {
        match self {
            TargetArg::Vmid(v) => Sandbox::Vmid(*v),
            TargetArg::Name(n) => Sandbox::Name(n.clone()),
            TargetArg::Url(u) => u.sandbox.clone(),
        }
    }
}

/// Takes a public URL apart; `None` when it is not an http(s) URL of either form.
pub(crate) fn parse_public_url(s: &str) -> Result<PublicUrl, UsageError> {
    let bad = |why: &str| {
        UsageError::new(format!(
            "{s:?}: {why}; a public URL looks like https://xterm-202.example.com/ or \
             https://port-39383-pvelxc-1a2b3c4d.example.com/"
        ))
    };
    let u = url::Url::parse(s).map_err(|_| bad("not a URL"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(bad("not an http(s) URL"));
    }
    let host = u
        .host_str()
        .ok_or_else(|| bad("no host"))?
        .to_ascii_lowercase();
    let (label, domain) = host.split_once('.').ok_or_else(|| bad("no domain"))?;
    let domain = validate_domain(domain).map_err(|e| bad(&e.to_string()))?;
    // 2026: port-{port}-{instance}
    if let Some(rest) = label.strip_prefix("port-") {
        if let Some((port, instance)) = rest.split_once('-') {
            if let Ok(port) = port.parse::<u16>() {
                if is_instance_name(instance) {
                    return Ok(PublicUrl {
                        sandbox: Sandbox::Name(instance.to_string()),
                        service: ServiceRef::Port(port),
                        domain,
                    });
                }
            }
        }
    }
    // seed: {service}-{vmid}
    let (service, vmid) = label
        .rsplit_once('-')
        .ok_or_else(|| bad("the host names no sandbox"))?;
    let vmid = parse_vmid(vmid).map_err(|_| bad("the host names no sandbox"))?;
    if service.is_empty() {
        return Err(bad("the host names no service"));
    }
    Ok(PublicUrl {
        sandbox: Sandbox::Vmid(vmid),
        service: ServiceRef::Name(service.to_string()),
        domain,
    })
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in lab on loopback and diagnose it (no Proxmox needed)
    Demo(Box<DemoArgs>),
    /// Check Caddyfiles and setup scripts against the service catalog, before a deploy (no network)
    Lint(LintArgs),
    /// Run as a Prometheus multi-target exporter: GET /probe?target=202 diagnoses one container
    Serve(Box<ServeArgs>),
    /// Show a container's recent transitions (healthy -> broken at T, and why) from the state directory
    History(HistoryArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout
    Completions(CompletionsArgs),
    /// Print the man page (roff) on stdout
    Man,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub(crate) shell: clap_complete::Shell,
}

/// `pvediag history VMID` (docs/state.md).
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The container's VMID
    #[arg(value_name = "VMID", value_parser = parse_history_vmid)]
    pub(crate) vmid: u32,

    /// The state directory (default: /var/lib/pvediag as root, else $XDG_STATE_HOME/pvediag or
    /// ~/.local/state/pvediag)
    #[arg(long, env = "PVEDIAG_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Only the records made under this public domain (default: every domain)
    #[arg(long, value_name = "DOMAIN")]
    pub(crate) domain: Option<String>,

    /// Transitions shown per target, newest first
    #[arg(long, default_value_t = 20, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub(crate) limit: u32,

    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: LintFormat,
}

fn parse_history_vmid(s: &str) -> Result<u32, UsageError> {
    parse_vmid(s).map_err(|e| UsageError::new(format!("history: {e}")))
}

/// Where each run's record is kept (docs/state.md).
#[derive(Debug, Args, Clone, Default)]
pub(crate) struct StateArgs {
    /// Keep each run's record and the last healthy one in DIR (default: /var/lib/pvediag as root,
    /// else $XDG_STATE_HOME/pvediag or ~/.local/state/pvediag)
    #[arg(long, env = "PVEDIAG_STATE_DIR", value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,

    /// Keep no state: nothing recorded, no "since the last healthy run" in the evidence (wins over
    /// --state-dir)
    #[arg(long, env = "PVEDIAG_NO_STATE", value_parser = clap::builder::BoolishValueParser::new())]
    pub(crate) no_state: bool,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    /// A Caddyfile to check (repeatable)
    #[arg(long, value_name = "FILE")]
    pub(crate) caddyfile: Vec<PathBuf>,

    /// A JSON config as Caddy's admin API gives it (`curl localhost:2019/config/`), repeatable
    #[arg(long, value_name = "FILE")]
    pub(crate) caddy_json: Vec<PathBuf>,

    /// A setup script whose NAME_PORT=NUMBER constants must match the catalog (repeatable)
    #[arg(long, value_name = "FILE")]
    pub(crate) setup_script: Vec<PathBuf>,

    /// Use the service catalog in DIR instead of the built-in one
    #[arg(long, value_name = "DIR")]
    pub(crate) checks: Option<PathBuf>,

    /// The built-in catalog to check against: seed or 2026 (default: 2026 when the Caddy
    /// configurations have only the generic port rule, else seed)
    #[arg(long, value_name = "seed|2026", value_parser = parse_generation)]
    pub(crate) catalog: Option<crate::generation::Generation>,

    /// Output format
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) format: LintFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum LintFormat {
    Text,
    Json,
}

/// `pvediag serve`: no `--wait`, no output options (it answers in Prometheus' format).
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on
    #[arg(long, default_value = "127.0.0.1:9839", value_name = "ADDR", value_parser = parse_listen)]
    pub(crate) listen: SocketAddr,

    #[command(flatten)]
    pub(crate) reach: ReachArgs,

    #[command(flatten)]
    pub(crate) check: CheckArgs,

    #[command(flatten)]
    pub(crate) pve: PveArgs,

    /// Print no warnings
    #[arg(short, long)]
    pub(crate) quiet: bool,
}

/// `pvediag demo`: the lab decides the domain, the edge address, the CA, the exec token and Caddy's
/// address, so those options are not taken here.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The fault the lab simulates
    #[arg(long, default_value = "seed", value_name = "NAME")]
    pub(crate) scenario: String,

    /// List the scenarios and exit
    #[arg(long)]
    pub(crate) list: bool,

    /// Keep the lab running and print the command to diagnose it by hand
    #[arg(long)]
    pub(crate) serve: bool,

    /// Instead of a scenario: N healthy containers, VMIDs 1000.. (for benchmarks)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=2000))]
    pub(crate) containers: Option<u32>,

    /// The routing generation the lab runs: seed (one Caddy rule per service) or 2026 (one
    /// generic port-{port}-{instance} rule, pvelxc-… hostnames, a PVE API)
    #[arg(long, default_value = "seed", value_name = "seed|2026", value_parser = parse_generation)]
    pub(crate) layout: crate::generation::Generation,

    /// Latency injected at every hop of the lab (edge, host proxy, execd, each service)
    #[arg(long, default_value_t = 0, value_name = "MS", value_parser = clap::value_parser!(u64).range(0..=60_000))]
    pub(crate) delay_ms: u64,

    #[command(flatten)]
    pub(crate) check: CheckArgs,

    /// Re-diagnose with backoff until everything is healthy or DURATION is spent
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub(crate) wait: Option<Duration>,

    #[command(flatten)]
    pub(crate) output: OutputArgs,

    /// Record the demo's runs in DIR (the demo keeps no state otherwise; `seed-after-healthy` uses
    /// a temporary directory)
    #[arg(long, value_name = "DIR")]
    pub(crate) state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    Table,
    Json,
    Junit,
    Prometheus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// The options of the plain command: where the sandboxes are, what to check, the PVE API, `--wait`
/// and the output.
#[derive(Debug, Args, Clone)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub reach: ReachArgs,

    #[command(flatten)]
    pub check: CheckArgs,

    #[command(flatten)]
    pub pve: PveArgs,

    /// Re-diagnose with backoff until everything is healthy or DURATION is spent (CI after a deploy)
    #[arg(long, value_name = "DURATION", value_parser = parse_wait)]
    pub wait: Option<Duration>,

    #[command(flatten)]
    pub output: OutputArgs,

    #[command(flatten)]
    pub(crate) state: StateArgs,
}

/// Where the sandboxes are and how to reach them (the lab sets all of these in `demo`).
#[derive(Debug, Args, Clone)]
pub struct ReachArgs {
    /// The public domain of the sandboxes
    #[arg(long, env = "PVE_PUBLIC_DOMAIN", value_name = "DOMAIN", value_parser = parse_domain)]
    pub domain: Option<String>,

    /// Dial HOST:PORT for every public URL, keeping Host and SNI (like curl --connect-to); not --exec-url
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_connect_to)]
    pub(crate) connect_to: Option<HostPort>,

    /// Trust the CA certificate(s) in this PEM file too
    #[arg(long, value_name = "FILE")]
    pub(crate) cacert: Option<PathBuf>,

    /// Accept any TLS certificate (insecure)
    #[arg(short = 'k', long)]
    pub(crate) insecure: bool,

    /// Read the cmux-execd token from FILE (else env CMUX_EXECD_AUTH_TOKEN)
    #[arg(long, value_name = "FILE")]
    pub(crate) exec_token_file: Option<PathBuf>,

    /// Cloudflare Access service token: FILE holds two lines, the client id and the client secret
    /// (else env CF_ACCESS_CLIENT_ID and CF_ACCESS_CLIENT_SECRET)
    #[arg(long, value_name = "FILE")]
    pub(crate) access_token_file: Option<PathBuf>,

    /// Read Caddy's routes from this Caddyfile (as on the host: /etc/caddy/Caddyfile.cmux)
    #[arg(long, value_name = "FILE", conflicts_with = "caddy_admin")]
    pub(crate) caddyfile: Option<PathBuf>,

    /// Probe from the PVE host through ssh (BatchMode, the system ssh client): [USER@]HOST
    #[arg(long, value_name = "USER@HOST", conflicts_with = "on_host", value_parser = parse_ssh)]
    pub(crate) ssh: Option<String>,

    /// Caddy's listener as seen from the host (with --on-host / --ssh)
    #[arg(long, default_value = "http://127.0.0.1:8080", value_name = "URL", value_parser = parse_caddy_url)]
    pub(crate) caddy_url: HostPort,
}

/// What to check and how long to try.
#[derive(Debug, Args, Clone)]
pub struct CheckArgs {
    /// Public URL of a service; placeholders {service} {vmid} {instance} {port} {domain}
    /// (default: the routing generation's own: {service}-{vmid}.{domain} or
    /// port-{port}-{instance}.{domain})
    #[arg(long, env = "PVEDIAG_URL_TEMPLATE", default_value = DEFAULT_TEMPLATE, value_name = "TEMPLATE",
          value_parser = parse_template)]
    pub(crate) url_template: UrlTemplate,

    /// Reach cmux-execd at this URL instead of its public one ({vmid} is replaced)
    #[arg(long, value_name = "URL", value_parser = parse_exec_url)]
    pub(crate) exec_url: Option<String>,

    /// Show only these services (comma-separated catalog names); every service is still probed
    #[arg(long, value_delimiter = ',', value_name = "A,B")]
    pub(crate) services: Vec<String>,

    /// Use the service catalog in DIR (*.json) instead of the built-in one
    #[arg(long, value_name = "DIR")]
    pub(crate) checks: Option<PathBuf>,

    /// The routing generation's built-in catalog: seed (one Caddy rule per service, worker on
    /// 39377) or 2026 (generic port-{port}-{instance} rule, worker 39376, daemon 39377); default:
    /// detected per target from Caddy's configuration, else from what answers
    #[arg(long, value_name = "seed|2026", value_parser = parse_generation)]
    pub(crate) catalog: Option<crate::generation::Generation>,

    /// Timeout of each probe (e.g. 10s, 1500ms, 1m)
    #[arg(long, default_value = "10s", value_name = "DURATION", value_parser = parse_timeout)]
    pub(crate) timeout: Duration,

    /// Bound on the whole run, however many probes hang (default: 2 × timeout + 15s)
    #[arg(long, value_name = "DURATION", value_parser = parse_deadline)]
    pub(crate) deadline: Option<Duration>,

    /// Read Caddy's loaded routes from its admin API (e.g. http://127.0.0.1:2019)
    #[arg(long, value_name = "URL", value_parser = parse_admin_url)]
    pub(crate) caddy_admin: Option<String>,

    /// pvediag runs on the PVE host: also probe Caddy, the upstream and cloudflared directly
    #[arg(long)]
    pub(crate) on_host: bool,

    /// The upstream Caddy dials for a container ({vmid}, {instance} are replaced; the 2026
    /// generation dials {instance}.lan when this is left at its default)
    #[arg(long, default_value = "cmux-{vmid}.lan", value_name = "HOST", value_parser = parse_upstream_host)]
    pub(crate) upstream_host: String,

    /// With --on-host / --ssh: never fall back to `pct exec` for the internal probes
    #[arg(long)]
    pub(crate) no_pct: bool,

    /// Most targets diagnosed at once (1-256); fewer while the chain slows down under the load
    #[arg(long, default_value_t = CONCURRENCY, value_name = "N", value_parser = parse_concurrency)]
    pub(crate) concurrency: usize,

    /// Retry an external probe that failed transiently (timeout, edge 502/503/504, receive error)
    #[arg(long, default_value_t = 0, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=10))]
    pub(crate) retries: u32,

    /// Skip the origin check (a hostname Caddy answers itself)
    #[arg(long)]
    pub(crate) no_origin_check: bool,
}

/// The Proxmox VE API (its token comes from the environment only: PVE_API_TOKEN).
#[derive(Debug, Args, Clone)]
pub struct PveArgs {
    /// The Proxmox VE API, e.g. https://pve.lan:8006
    #[arg(long, env = "PVE_API_URL", value_name = "URL")]
    pub(crate) pve_url: Option<String>,

    /// The PVE node (default: the first node the API lists)
    #[arg(long, env = "PVE_NODE", value_name = "NODE")]
    pub(crate) pve_node: Option<String>,

    /// Do not verify the PVE API's TLS certificate (the default unless PVE_VERIFY_TLS is set, as in cmux)
    #[arg(long)]
    pub(crate) pve_insecure: bool,
}

/// How and where the report is written.
#[derive(Debug, Args, Clone)]
pub struct OutputArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: OutputFormat,

    /// Write the report to FILE (written atomically) instead of stdout
    #[arg(short = 'o', long, value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,

    /// Colour: auto (on a terminal, unless NO_COLOR), always, never
    #[arg(long, value_enum, default_value = "auto")]
    pub(crate) color: ColorChoice,

    /// Print nothing; only the exit code tells
    #[arg(short, long)]
    pub(crate) quiet: bool,
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

/// `HOST:PORT` as given: an address, or a name [`crate::settings`] resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostPort {
    pub(crate) host: String,
    pub(crate) port: u16,
    /// The text the user gave, for messages.
    pub(crate) given: String,
}

impl HostPort {
    /// The address when the host is an IP literal (no resolution needed).
    pub(crate) fn literal(&self) -> Option<SocketAddr> {
        let h = self.host.trim_start_matches('[').trim_end_matches(']');
        h.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, self.port))
    }
}

/// Parses `10s`, `1500ms`, `1m`, `2.5s`, or a plain number of seconds.
pub(crate) fn parse_duration(what: &str, s: &str) -> Result<Duration, UsageError> {
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

fn parse_timeout(s: &str) -> Result<Duration, UsageError> {
    parse_duration("--timeout", s)
}

/// The shortest `--deadline` that leaves time to run a probe at all.
pub(crate) const MIN_DEADLINE: Duration = Duration::from_millis(100);

fn parse_deadline(s: &str) -> Result<Duration, UsageError> {
    let d = parse_duration("--deadline", s)?;
    if d < MIN_DEADLINE {
        return Err(UsageError::new(format!(
            "--deadline {s}: too short to run any probe (at least {} ms)",
            MIN_DEADLINE.as_millis()
        )));
    }
    Ok(d)
}

fn parse_wait(s: &str) -> Result<Duration, UsageError> {
    parse_duration("--wait", s)
}

fn parse_target(s: &str) -> Result<TargetArg, UsageError> {
    if s.contains("://") {
        return parse_public_url(s).map(TargetArg::Url);
    }
    if is_instance_name(s) {
        return Ok(TargetArg::Name(s.to_string()));
    }
    parse_vmid(s)
        .map(TargetArg::Vmid)
        .map_err(|e| UsageError::new(e.to_string()))
}

fn parse_domain(s: &str) -> Result<String, UsageError> {
    validate_domain(s).map_err(|e| UsageError::new(e.to_string()))
}

fn parse_template(s: &str) -> Result<UrlTemplate, UsageError> {
    UrlTemplate::parse(s).map_err(|e| UsageError::new(e.to_string()))
}

/// Parses `HOST:PORT` for --connect-to (a name is resolved later, by the settings).
pub(crate) fn parse_connect_to(s: &str) -> Result<HostPort, UsageError> {
    let bad = |why: &str| connect_to_error(s, why);
    if let Ok(a) = s.parse::<SocketAddr>() {
        if a.port() == 0 {
            return Err(bad("port 0 is not a port"));
        }
        return Ok(HostPort {
            host: a.ip().to_string(),
            port: a.port(),
            given: s.to_string(),
        });
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
    Ok(HostPort {
        host: host.to_string(),
        port,
        given: s.to_string(),
    })
}

/// The one-line error of a bad `--connect-to`.
pub(crate) fn connect_to_error(s: &str, why: &str) -> UsageError {
    UsageError::new(format!(
        "--connect-to {s:?}: {why}; expected HOST:PORT such as 127.0.0.1:8443 or [::1]:8443"
    ))
}

fn parse_concurrency(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(n) if (1..=256).contains(&n) => Ok(n),
        _ => Err(format!("{s:?} is not a number from 1 to 256")),
    }
}

fn parse_exec_url(s: &str) -> Result<String, UsageError> {
    match crate::target::http_base_url(&s.replace("{vmid}", "202")) {
        Some(_) => Ok(s.trim_end_matches('/').to_string()),
        None => Err(UsageError::new(format!(
            "--exec-url {s:?} is not an http(s) base URL without query or credentials, e.g. http://cmux-{{vmid}}.lan:39375"
        ))),
    }
}

fn parse_admin_url(s: &str) -> Result<String, UsageError> {
    match crate::target::http_base_url(s) {
        Some(_) => Ok(s.trim_end_matches('/').to_string()),
        None => Err(UsageError::new(format!(
            "--caddy-admin {s:?} is not an http(s) URL without query or credentials, such as http://127.0.0.1:2019"
        ))),
    }
}

fn parse_listen(s: &str) -> Result<SocketAddr, UsageError> {
    s.parse().map_err(|_| {
        UsageError::new(format!(
            "--listen {s:?} is not an address such as 127.0.0.1:9839"
        ))
    })
}

fn parse_ssh(d: &str) -> Result<String, UsageError> {
    if crate::probe::host::valid_ssh_dest(d) {
        Ok(d.to_string())
    } else {
        Err(UsageError::new(format!(
            "--ssh {d:?} is not a destination: expected [USER@]HOST such as root@pve.lan"
        )))
    }
}

/// `--caddy-url`: a plain `http://HOST[:PORT]` with no path.
fn parse_caddy_url(s: &str) -> Result<HostPort, UsageError> {
    let bad = || {
        UsageError::new(format!(
            "--caddy-url {s:?} is not a plain http URL such as http://127.0.0.1:8080"
        ))
    };
    let u = url::Url::parse(s).map_err(|_| bad())?;
    let host = u.host_str().ok_or_else(bad)?.to_string();
    if u.scheme() != "http" || !crate::shell::valid_host(&host) || u.path() != "/" {
        return Err(bad());
    }
    Ok(HostPort {
        host,
        port: u.port().unwrap_or(80),
        given: s.to_string(),
    })
}

fn parse_upstream_host(s: &str) -> Result<String, UsageError> {
    let sample = s
        .replace("{vmid}", "202")
        .replace("{instance}", "pvelxc-1a2b3c4d");
    if !(s.contains("{vmid}") || s.contains("{instance}")) || !crate::shell::valid_host(&sample) {
        return Err(UsageError::new(format!(
            "--upstream-host {s:?} must be a hostname holding {{vmid}} or {{instance}}, such as cmux-{{vmid}}.lan or {{instance}}.lan"
        )));
    }
    Ok(s.to_string())
}

fn parse_generation(s: &str) -> Result<crate::generation::Generation, UsageError> {
    crate::generation::Generation::parse(s)
        .ok_or_else(|| UsageError::new(format!("{s:?} is not a routing generation: seed or 2026")))
}

/// The one line of a command-line value clap refused through one of the parsers above: their
/// message as is, as when they were checked after parsing. `None` for clap's own errors.
pub fn value_error_line(e: &clap::Error) -> Option<String> {
    use std::error::Error as _;
    if e.kind() != clap::error::ErrorKind::ValueValidation {
        return None;
    }
    e.source()
        .and_then(|s| s.downcast_ref::<UsageError>())
        .map(|u| u.to_string())
}

/// The one line for an option a subcommand does not take (`pvediag demo --domain x`), with the
/// reason when there is one. `None` for other errors.
pub fn refusal_line(e: &clap::Error, subcommand: Option<&str>) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if e.kind() != ErrorKind::UnknownArgument {
        return None;
    }
    let sub = subcommand.filter(|s| matches!(*s, "demo" | "serve" | "lint"))?;
    let arg = match e.get(ContextKind::InvalidArg) {
        Some(ContextValue::String(s)) => s.split('=').next().unwrap_or(s).to_string(),
        _ => return None,
    };
    let why = match sub {
        "demo" => {
            "the lab sets the domain, --connect-to, --cacert, the exec token, Caddy's address \
                   and Caddyfile itself, and uses no PVE API"
        }
        "serve" => "the exporter answers each scrape once, in Prometheus' format",
        _ => "it reads files only",
    };
    Some(format!(
        "{sub} does not take {arg}: {why} (see pvediag {sub} --help)"
    ))
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
        let a = parse_connect_to("127.0.0.1:8443").unwrap();
        assert_eq!(a.literal(), Some("127.0.0.1:8443".parse().unwrap()));
        assert!(parse_connect_to("[::1]:8443").unwrap().literal().is_some());
        assert_eq!(
            parse_connect_to("localhost:8443").unwrap().host,
            "localhost"
        );
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
        assert_eq!(parse_target("202").unwrap(), TargetArg::Vmid(202));
        assert_eq!(
            parse_target("https://xterm-202.example.test/sessions").unwrap(),
            TargetArg::Url(PublicUrl {
                sandbox: Sandbox::Vmid(202),
                service: ServiceRef::Name("xterm".into()),
                domain: "example.test".into(),
            })
        );
        assert_eq!(
            parse_target("https://port-39383-cmux-202.example.test/").unwrap(),
            TargetArg::Url(PublicUrl {
                sandbox: Sandbox::Name("cmux-202".into()),
                service: ServiceRef::Port(39383),
                domain: "example.test".into(),
            })
        );
        assert_eq!(
            parse_target("https://port-39383-pvelxc-8d9c05aa.a.example.com/x").unwrap(),
            TargetArg::Url(PublicUrl {
                sandbox: Sandbox::Name("pvelxc-8d9c05aa".into()),
                service: ServiceRef::Port(39383),
                domain: "a.example.com".into(),
            })
        );
        for bad in [
            "ftp://xterm-202.example.test/",
            "https://example/",
            "https://xterm.example.test/",
        ] {
            let e = parse_target(bad).unwrap_err().to_string();
            assert!(e.contains("a public URL looks like"), "{bad}: {e}");
        }
        assert!(parse_target("+202").is_err());
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

    #[test]
    fn refused_values_keep_their_one_line() {
        let e = Cli::try_parse_from(["pvediag", "202", "--timeout", "abc"]).unwrap_err();
        let line = value_error_line(&e).unwrap();
        assert!(
            line.starts_with("--timeout \"abc\" is not a duration"),
            "{line}"
        );
        let e = Cli::try_parse_from(["pvediag", "202", "--format", "nope"]).unwrap_err();
        assert_eq!(value_error_line(&e), None);
        let e = Cli::try_parse_from(["pvediag", "demo", "--domain", "x"]).unwrap_err();
        let line = refusal_line(&e, Some("demo")).unwrap();
        assert!(
            line.starts_with("demo does not take --domain: the lab sets"),
            "{line}"
        );
    }
}
