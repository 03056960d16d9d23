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

    /// Container IDs to diagnose (e.g. 202)
    #[arg(value_name = "VMID", required = true)]
    pub vmids: Vec<String>,

    #[command(flatten)]
    pub diag: DiagnoseArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the built-in lab on loopback and diagnose it (no Proxmox needed)
    Demo(DemoArgs),
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

    /// Bound on the whole run, however many probes hang (default: timeout + 15s)
    #[arg(long, value_name = "DURATION")]
    pub deadline: Option<String>,

    /// Targets (VMIDs) probed at once; each holds about 8 connections while it runs
    #[arg(long, default_value_t = crate::run::CONCURRENCY as u16, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

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

/// Everything a diagnosis needs, validated.
#[derive(Debug, Clone)]
pub struct DiagnoseConfig {
    pub vmids: Vec<u32>,
    pub probe: ProbeConfig,
    pub connect_to: Option<SocketAddr>,
    pub cacert_pem: Option<Vec<u8>>,
    pub insecure: bool,
    pub deadline: Duration,
    /// Targets probed at once.
    pub concurrency: usize,
    pub format: OutputFormat,
    pub output: Option<PathBuf>,
    pub color: bool,
    pub quiet: bool,
    /// Warnings to print on stderr (never containing secrets).
    pub warnings: Vec<String>,
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

impl DiagnoseArgs {
    /// Validates everything up front; `vmids` are the raw positional values.
    pub fn validate(
        &self,
        vmids: &[String],
        env_token: Option<&str>,
    ) -> Result<DiagnoseConfig, UsageError> {
        let mut warnings = Vec::new();
        let mut ids = Vec::new();
        for v in vmids {
            let id = parse_vmid(v).map_err(|e| UsageError::new(e.to_string()))?;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
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
        Ok(DiagnoseConfig {
            vmids: ids,
            probe: ProbeConfig {
                catalog,
                template,
                domain,
                timeout,
                exec_token,
                exec_url,
                no_origin_check: self.no_origin_check,
                exec_grace: Duration::from_secs(5),
            },
            connect_to,
            cacert_pem,
            insecure: self.insecure,
            deadline,
            concurrency: usize::from(self.concurrency),
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
    fn exec_urls() {
        assert!(parse_exec_url("http://cmux-{vmid}.lan:39375").is_ok());
        for bad in ["ftp://x", "http://u:p@x", "http://x/?a=1", "nope"] {
            assert!(parse_exec_url(bad).is_err(), "{bad}");
        }
    }
}
