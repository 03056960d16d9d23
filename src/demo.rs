//! `pvediag demo`: start the built-in lab on loopback and run the ordinary diagnosis against it,
//! through the same code path as a real run (only the domain, `--connect-to`, `--cacert` and the
//! exec token point at the lab).

use std::io::Write;

use crate::cli::{DemoArgs, DiagnoseArgs, UsageError};
use crate::lab::{self, Lab};
use crate::report::exit;

/// Writes the client's exec token into the lab's directory, readable by the owner only.
fn write_token(lab: &Lab, token: &str) -> Result<std::path::PathBuf, UsageError> {
    write_secret_file(lab, "exec-token", token)
}

/// Writes a secret file into the lab's directory, readable by the owner only.
fn write_secret_file(lab: &Lab, name: &str, token: &str) -> Result<std::path::PathBuf, UsageError> {
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
pub const FLEET_FIRST_VMID: u32 = 1000;

/// The diagnosis options that point at a running lab.
pub fn lab_args(
    base: &DiagnoseArgs,
    lab: &Lab,
    token_file: Option<std::path::PathBuf>,
) -> DiagnoseArgs {
    let mut d = base.clone();
    d.domain = Some(lab.domain.clone());
    d.connect_to = Some(lab.edge_addr.to_string());
    d.cacert = Some(lab.ca_cert_path.clone());
    d.exec_token_file = token_file;
    // On the lab's "host", Caddy listens here (not on :8080).
    d.caddy_url = format!("http://{}", lab.caddy_addr);
    // Read Caddy's routes the way a user on the host would: from the Caddyfile.
    if d.caddy_admin.is_none() {
        d.caddyfile = Some(lab.caddyfile_path.clone());
    }
    d
}

pub fn run(args: DemoArgs, rt: &tokio::runtime::Runtime) -> Result<u8, UsageError> {
    if args.list {
        for name in lab::SCENARIOS {
            if let Some(s) = lab::scenario(name) {
                println!("{:<18} {}", s.name, s.description);
            }
        }
        return Ok(exit::OK);
    }
    let mut scenario = match args.containers {
        Some(n) => lab::Scenario {
            name: "fleet",
            description: "healthy containers with VMIDs from 1000, one execd token (benchmarks)",
            config: lab::fleet(
                n as usize,
                FLEET_FIRST_VMID,
                Some(lab::SCENARIO_TOKEN.to_string()),
                lab::Delays::default(),
            ),
            client_token: Some(lab::SCENARIO_TOKEN.to_string()),
            url_template: crate::target::DEFAULT_TEMPLATE,
            client_access: None,
        },
        None => lab::scenario(&args.scenario).ok_or_else(|| {
            UsageError::new(format!(
                "--scenario {:?} is not a lab scenario; one of: {}",
                args.scenario,
                lab::SCENARIOS.join(", ")
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
    let vmids: Vec<String> = scenario
        .config
        .containers
        .iter()
        .map(|c| c.vmid.to_string())
        .collect();
    rt.block_on(async {
        let lab = Lab::start(scenario.config.clone())
            .await
            .map_err(|e| UsageError::new(format!("lab: cannot start: {e:#}")))?;
        let token_file = match &scenario.client_token {
            Some(t) => Some(write_token(&lab, t)?),
            None => None,
        };
        let mut diag = lab_args(&args.diag, &lab, token_file.clone());
        // The lab's Access service token, as a file (two lines: id, secret).
        let access_file = match &scenario.client_access {
            Some((id, secret)) => Some(write_secret_file(
                &lab,
                "access-token",
                &format!("{id}\n{secret}\n"),
            )?),
            None => None,
        };
        if access_file.is_some() {
            diag.access_token_file = access_file.clone();
        }
        // The scenario's routing layout decides the public URLs, unless the user chose a template.
        if diag.url_template == crate::target::DEFAULT_TEMPLATE {
            diag.url_template = scenario.url_template.to_string();
        }
        if args.serve {
            return serve(
                &lab,
                &scenario,
                &vmids,
                token_file.as_deref(),
                access_file.as_deref(),
            )
            .await;
        }
        if diag.ssh.is_some() {
            return Err(UsageError::new(
                "demo: the lab runs on this machine; use --on-host for the host vantage, not --ssh",
            ));
        }
        let mut cfg = diag.validate(&vmids, None)?;
        if let Some(h) = cfg.probe.host.as_mut() {
            // The host's view of the lab (cmux-{vmid}.lan, cloudflared's /ready) is in its .curlrc.
            let home = lab.host_dir.display().to_string();
            h.env = vec![("CURL_HOME".into(), home.clone()), ("HOME".into(), home)];
        }
        if !cfg.quiet {
            eprintln!(
                "pvediag demo: lab scenario `{}` — {}",
                scenario.name, scenario.description
            );
        }
        let report = crate::run::run(&cfg).await?;
        let code = crate::output::emit(&cfg, &report)?;
        lab.shutdown().await;
        Ok(code)
    })
}

/// Keeps the lab up and says how to diagnose it by hand, until Ctrl-C.
async fn serve(
    lab: &Lab,
    scenario: &lab::Scenario,
    vmids: &[String],
    token_file: Option<&std::path::Path>,
    access_file: Option<&std::path::Path>,
) -> Result<u8, UsageError> {
    let mut cmd = format!(
        "pvediag {} --domain {} --connect-to {} --cacert {} --caddyfile {}",
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
    if scenario.url_template != crate::target::DEFAULT_TEMPLATE {
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
        "  PVE_PUBLIC_DOMAIN={} {access_env}{}pvediag {} --connect-to {} --cacert {}",
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
    wait_for_stop().await;
    Ok(exit::OK)
}

/// Ctrl-C or SIGTERM: the lab is dropped afterwards, which removes its temporary directory.
async fn wait_for_stop() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
