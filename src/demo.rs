//! `pvediag demo`: start the built-in lab on loopback and run the ordinary diagnosis against it,
//! through the same code path as a real run ([`crate::run::diagnose`], `--wait` included): only
//! where the sandboxes are (the domain, `--connect-to`, `--cacert`, the exec token, Caddy's address
//! and Caddyfile) comes from the lab instead of the command line.

use std::io::Write;

use crate::cli::{CheckArgs, DemoArgs, HostPort, ReachArgs, UsageError};
use crate::exit;
use crate::generation::Generation;
use crate::lab::{self, Lab};
use crate::settings::{Environment, Parts, Settings};
use crate::target::{UrlTemplate, DEFAULT_TEMPLATE};

/// Writes the client's exec token into the lab's directory, readable by the owner only.
fn write_token(lab: &Lab, token: &str) -> Result<std::path::PathBuf, UsageError> {
    write_secret(lab, "exec-token", token)
}

/// Writes a secret into the lab's directory, readable by the owner only.
fn write_secret(lab: &Lab, name: &str, token: &str) -> Result<std::path::PathBuf, UsageError> {
    let path = lab.dir.join(name);
    let io = |e: std::io::Error| UsageError::new(format!("lab: cannot write the token file: {e}"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode_owner_only()
        .open(&path)
        .map_err(io)?;
    f.write_all(token.as_bytes()).map_err(io)?;
    Ok(path)
}

trait OwnerOnly {
    fn mode_owner_only(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_owner_only(&mut self) -> &mut Self {
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            self.mode(0o600);
        }
        self
    }
}

/// The first VMID of `pvediag demo --containers N`.
pub(crate) const FLEET_FIRST_VMID: u32 = 1000;

/// Where the sandboxes are: the running lab.
pub(crate) fn lab_reach(
    lab: &Lab,
    token_file: Option<std::path::PathBuf>,
    access_file: Option<std::path::PathBuf>,
) -> ReachArgs {
    ReachArgs {
        domain: Some(lab.domain.clone()),
        connect_to: Some(HostPort {
            host: lab.edge_addr.ip().to_string(),
            port: lab.edge_addr.port(),
            given: lab.edge_addr.to_string(),
        }),
        cacert: Some(lab.ca_cert_path.clone()),
        insecure: false,
        exec_token_file: token_file,
        access_token_file: access_file,
        // Read Caddy's routes the way a user on the host would, from the Caddyfile, unless the
        // demo was given --caddy-admin (see `lab_settings`).
        caddyfile: Some(lab.caddyfile_path.clone()),
        ssh: None,
        // On the lab's "host", Caddy listens here (not on :8080).
        caddy_url: HostPort {
            host: lab.caddy_addr.ip().to_string(),
            port: lab.caddy_addr.port(),
            given: format!("http://{}", lab.caddy_addr),
        },
    }
}

/// The demo's settings: the user's checks and output against the lab.
fn lab_settings(
    args: &DemoArgs,
    lab: &Lab,
    scenario: &lab::Scenario,
    token_file: Option<std::path::PathBuf>,
    access_file: Option<std::path::PathBuf>,
    state_dir: Option<std::path::PathBuf>,
) -> Result<Settings, UsageError> {
    let mut reach = lab_reach(lab, token_file, access_file);
    if args.check.caddy_admin.is_some() {
        reach.caddyfile = None;
    }
    // The scenario's routing layout decides the public URLs, unless the user chose a template.
    let check = CheckArgs {
        url_template: if args.check.url_template.as_str() == DEFAULT_TEMPLATE {
            UrlTemplate::parse(scenario.url_template).map_err(|e| UsageError::new(e.to_string()))?
        } else {
            args.check.url_template.clone()
        },
        ..args.check.clone()
    };
    // The host's view of the lab (cmux-{vmid}.lan, cloudflared's /ready) is in its .curlrc; its
    // name resolution and pct in the stand-ins on its PATH.
    // The lab's PVE API (2026 layout): container hostnames, as on a real host.
    let pve = lab.pve_url.as_ref().map(|url| crate::cli::PveArgs {
        pve_url: Some(url.clone()),
        pve_node: None,
        pve_insecure: true,
    });
    let parts = Parts {
        reach: &reach,
        check: &check,
        pve: pve.as_ref(),
        wait: args.wait,
        output: &args.output,
        host_env: lab.host_env(),
        // The demo keeps no state unless asked: never the user's directory.
        state_dir,
    };
    // The lab's tokens are in the token files; the environment's are for real sandboxes.
    let env = Environment {
        exec_token: None,
        access_client_id: None,
        access_client_secret: None,
        pve_token: lab.pve_url.as_ref().map(|_| lab::pve::TOKEN.to_string()),
        ..Environment::read()
    };
    Settings::from_parts_reading_files(parts, &env)
}

pub fn run(args: DemoArgs, rt: &tokio::runtime::Runtime) -> Result<u8, UsageError> {
    if args.list {
        // Wrapped to the terminal, the description under the description.
        let width = Environment::read().width();
        let say = |name: &str, description: &str, w: usize| {
            let text = format!("{name:<w$} {description}");
            for l in crate::report::table::fill(&text, width, "", &" ".repeat(w + 1)) {
                println!("{l}");
            }
        };
        for name in lab::SCENARIOS {
            if let Some(s) = lab::scenario(name) {
                say(s.name, s.description, 18);
            }
        }
        for (name, description, _) in SEQUENCES {
            say(name, description, 18);
        }
        println!();
        println!("with --layout 2026:");
        for name in lab::SCENARIOS_2026 {
            if let Some(s) = lab::scenario_in(name, Generation::Y2026) {
                say(s.name, s.description, 20);
            }
        }
        return Ok(exit::OK);
    }
    if let Some(&(name, _, steps)) = SEQUENCES.iter().find(|s| s.0 == args.scenario) {
        return run_sequence(&args, name, steps, rt);
    }
    let state_dir = args
        .state_dir
        .as_deref()
        .map(|d| crate::state::choose_dir(Some(d), false).map_err(UsageError::new))
        .transpose()?
        .flatten();
    run_scenario(&args, &args.scenario, rt, state_dir, true).map(|(code, _)| code)
}

/// A scenario's report, without printing it (snapshot tests of the formats): the same lab, the
/// same settings and the same diagnosis as `pvediag demo`, no state kept.
pub fn scenario_report(
    args: DemoArgs,
    rt: &tokio::runtime::Runtime,
) -> Result<crate::report::Report, UsageError> {
    let (_, report) = run_scenario(&args, &args.scenario, rt, None, false)?;
    report.ok_or_else(|| UsageError::new("demo: no report (--serve)"))
}

/// Scenarios that are a sequence of lab scenarios diagnosed one after the other with one state
/// directory: (name, description, steps). Only the last step's report is shown.
pub(crate) const SEQUENCES: &[(&str, &str, &[&str])] = &[(
    "seed-after-healthy",
    "a healthy run, then the seed incident as a change (Caddy's xterm route 39383 -> 39376): the verdict names what changed since the last healthy run",
    &["healthy", "seed"],
)];

/// Runs each step of a sequence against its own lab, with one state directory (a temporary one
/// unless --state-dir), and shows the last step's report.
fn run_sequence(
    args: &DemoArgs,
    name: &str,
    steps: &[&str],
    rt: &tokio::runtime::Runtime,
) -> Result<u8, UsageError> {
    if let Some(missing) = steps
        .iter()
        .find(|st| lab::scenario_in(st, args.layout).is_none())
    {
        return Err(UsageError::new(format!(
            "demo: --scenario {name} runs `{}`, which the {} layout does not have: run it without --layout",
            missing, args.layout
        )));
    }
    let tmp;
    let dir = match &args.state_dir {
        Some(d) => {
            crate::state::choose_dir(Some(d), false).map_err(UsageError::new)?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new()
                .prefix("pvediag-demo-state-")
                .tempdir()
                .map_err(|e| {
                    UsageError::new(format!("demo: cannot make a state directory: {e}"))
                })?;
            tmp.path().to_path_buf()
        }
    };
    let quiet = args.output.quiet;
    let mut code = exit::OK;
    for (i, step) in steps.iter().enumerate() {
        let last = i + 1 == steps.len();
        if !quiet {
            eprintln!("pvediag demo: `{name}`, step {}/{}:", i + 1, steps.len());
        }
        code = run_scenario(args, step, rt, Some(dir.clone()), last)?.0;
        if !last && !quiet {
            let line = format!(
                "pvediag demo: step {}: {}, recorded in the state directory ({})",
                i + 1,
                if code == exit::OK {
                    "healthy"
                } else {
                    "not healthy"
                },
                if args.state_dir.is_some() {
                    dir.display().to_string()
                } else {
                    "a temporary one, removed afterwards".to_string()
                }
            );
            let width = Environment::read().width();
            for l in crate::report::table::fill(&line, width, "", "  ") {
                eprintln!("{l}");
            }
        }
    }
    Ok(code)
}

/// One lab scenario diagnosed and recorded in `state_dir`; the report is written when `show`, and
/// returned (none with --serve).
fn run_scenario(
    args: &DemoArgs,
    scenario_name: &str,
    rt: &tokio::runtime::Runtime,
    state_dir: Option<std::path::PathBuf>,
    show: bool,
) -> Result<(u8, Option<crate::report::Report>), UsageError> {
    let mut scenario = match args.containers {
        Some(n) => lab::Scenario {
            name: "fleet",
            description: match args.layout {
                Generation::Seed => {
                    "healthy containers with VMIDs from 1000, one execd token (benchmarks)"
                }
                Generation::Y2026 => {
                    "healthy 2026 containers (pvelxc-… hostnames, generic Caddy rule) with VMIDs from 1000, one execd token"
                }
            },
            config: match args.layout {
                Generation::Seed => lab::fleet(
                    n as usize,
                    FLEET_FIRST_VMID,
                    Some(lab::SCENARIO_TOKEN.to_string()),
                    lab::Delays::default(),
                ),
                Generation::Y2026 => lab::fleet_2026(
                    n as usize,
                    FLEET_FIRST_VMID,
                    Some(lab::SCENARIO_TOKEN.to_string()),
                    lab::Delays::default(),
                ),
            },
            client_token: Some(lab::SCENARIO_TOKEN.to_string()),
            url_template: DEFAULT_TEMPLATE,
            client_access: None,
        },
        None => lab::scenario_in(scenario_name, args.layout).ok_or_else(|| {
            let known = match args.layout {
                Generation::Seed => lab::SCENARIOS,
                Generation::Y2026 => lab::SCENARIOS_2026,
            };
            UsageError::new(format!(
                "--scenario {:?} is not a lab scenario of the {} layout; one of: {}",
                scenario_name,
                args.layout,
                known.join(", ")
            ))
        })?,
    };
    if crate::lab::container::real_curl().is_none() {
        // The lab's container runs pvediag's real internal probe, which needs curl to reach the
        // lab's services (its bash-only fallback would dial this machine's own ports instead).
        return Err(UsageError::new(
            "demo: the lab's simulated container runs the internal probe with curl, which is not installed here: apt-get install curl",
        ));
    }
    if args.delay_ms > 0 {
        scenario.config.delays = lab::Delays::uniform(args.delay_ms);
    }
    let vmids: Vec<u32> = scenario.config.containers.iter().map(|c| c.vmid).collect();
    rt.block_on(async {
        let lab = Lab::start(scenario.config.clone())
            .await
            .map_err(|e| UsageError::new(format!("lab: cannot start: {e:#}")))?;
        let token_file = match &scenario.client_token {
            Some(t) => Some(write_token(&lab, t)?),
            None => None,
        };
        // The lab's Access service token, as a file (two lines: id, secret).
        let access_file = match &scenario.client_access {
            Some((id, secret)) => Some(write_secret(
                &lab,
                "access-token",
                &format!("{id}\n{secret}\n"),
            )?),
            None => None,
        };
        let pve_token_file = match &lab.pve_url {
            Some(_) => Some(write_secret(&lab, "pve-token", lab::pve::TOKEN)?),
            None => None,
        };
        if args.serve {
            return serve(
                &lab,
                &scenario,
                &vmids,
                token_file.as_deref(),
                pve_token_file.as_deref(),
                access_file.as_deref(),
            )
            .await
            .map(|code| (code, None));
        }
        let settings = lab_settings(args, &lab, &scenario, token_file, access_file, state_dir)?;
        if !settings.quiet {
            let banner = format!(
                "pvediag demo: lab scenario `{}` — {}",
                scenario.name, scenario.description
            );
            for line in crate::report::table::fill(&banner, settings.width, "", "  ") {
                eprintln!("{line}");
            }
        }
        // As on a real host: the PVE API's answers (the lab's, for the 2026 layout), then the
        // containers' hostnames.
        let request = crate::target::TargetRequest {
            vmids,
            ..Default::default()
        };
        let mut targets = crate::run::resolve_targets(&settings, &request)
            .await
            .map_err(|e| UsageError::new(format!("lab: the lab's PVE API: {e}")))?;
        crate::run::resolve_instances(&settings, &request, &mut targets).await?;
        let mut report = crate::run::diagnose(&settings, &targets).await?;
        crate::run::record_state(settings.state_dir.as_deref(), settings.quiet, &mut report);
        let code = if show {
            crate::output::emit(&settings, &targets, &report)?
        } else {
            report.exit_code()
        };
        lab.shutdown().await;
        Ok((code, Some(report)))
    })
}

/// Diagnoses a running lab with the demo's options, through the same path as `pvediag demo` (the
/// selection property test runs many option sets against one lab this way).
pub async fn diagnose_lab(
    args: &DemoArgs,
    lab: &Lab,
    scenario: &lab::Scenario,
) -> Result<crate::report::Report, UsageError> {
    let token_file = match &scenario.client_token {
        Some(t) => Some(write_token(lab, t)?),
        None => None,
    };
    let access_file = match &scenario.client_access {
        Some((id, secret)) => Some(write_secret(
            lab,
            "access-token",
            &format!("{id}\n{secret}\n"),
        )?),
        None => None,
    };
    // No state: many option sets against one lab are not a sequence of runs.
    let settings = lab_settings(args, lab, scenario, token_file, access_file, None)?;
    let vmids: Vec<u32> = scenario.config.containers.iter().map(|c| c.vmid).collect();
    crate::run::diagnose(&settings, &crate::target::Targets::given(vmids)).await
}

/// Keeps the lab up and says how to diagnose it by hand, until Ctrl-C.
async fn serve(
    lab: &Lab,
    scenario: &lab::Scenario,
    vmids: &[u32],
    token_file: Option<&std::path::Path>,
    pve_token_file: Option<&std::path::Path>,
    access_file: Option<&std::path::Path>,
) -> Result<u8, UsageError> {
    // Listening before the command is printed: a stop sent right after it still counts.
    let stop = crate::signal::Stop::listen();
    let vmids: Vec<String> = vmids.iter().map(|v| v.to_string()).collect();
    // The lab's PVE API, as on a real host: in the environment, the token read from a file.
    let pve_env = match (&lab.pve_url, pve_token_file) {
        (Some(url), Some(f)) => format!(
            "PVE_API_URL={url} PVE_API_TOKEN=\"$(cat {})\" ",
            f.display()
        ),
        _ => String::new(),
    };
    let mut cmd = format!(
        "{pve_env}pvediag {} --domain {} --connect-to {} --cacert {} --caddyfile {}",
        vmids.join(" "),
        lab.domain,
        lab.edge_addr,
        lab.ca_cert_path.display(),
        lab.caddyfile_path.display()
    );
    if let Some(t) = token_file {
        cmd.push_str(&format!(" --exec-token-file {}", t.display()));
    }
    if let Some(a) = access_file {
        cmd.push_str(&format!(" --access-token-file {}", a.display()));
    }
    if scenario.url_template != DEFAULT_TEMPLATE {
        cmd.push_str(&format!(" --url-template {}", scenario.url_template));
    }
    println!(
        "lab scenario `{}` — {}",
        scenario.name, scenario.description
    );
    println!(
        "edge (Cloudflare + cloudflared): https://{} (TLS, lab CA)",
        lab.edge_addr
    );
    println!("host proxy (Caddy):              http://{}", lab.caddy_addr);
    println!(
        "Caddyfile:                       {}",
        lab.caddyfile_path.display()
    );
    println!();
    println!("diagnose it with:");
    println!("  {cmd}");
    println!("or, with the environment:");
    let access_env = access_file
        .map(|a| {
            format!(
                "CF_ACCESS_CLIENT_ID=\"$(sed -n 1p {a})\" CF_ACCESS_CLIENT_SECRET=\"$(sed -n 2p {a})\" ",
                a = a.display()
            )
        })
        .unwrap_or_default();
    println!(
        "  {pve_env}PVE_PUBLIC_DOMAIN={} {access_env}{}pvediag {} --connect-to {} --cacert {}",
        lab.domain,
        if token_file.is_some() {
            format!(
                "CMUX_EXECD_AUTH_TOKEN=\"$(cat {})\" ",
                token_file
                    .map(|p| p.display().to_string())
                    .unwrap_or_default()
            )
        } else {
            String::new()
        },
        vmids.join(" "),
        lab.edge_addr,
        lab.ca_cert_path.display()
    );
    println!();
    println!("press Ctrl-C to stop the lab");
    let _ = std::io::stdout().flush();
    // Ctrl-C or SIGTERM: the lab is dropped afterwards, which removes its temporary directory.
    stop.wait().await;
    Ok(exit::OK)
}
