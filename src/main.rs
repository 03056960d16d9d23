//! pvediag's entry point: `main() -> ExitCode` around `run() -> Result<u8>`.
//!
//! The pipeline, one module each: flags ([`pvediag::cli`]) -> settings ([`pvediag::settings`]) ->
//! targets resolved ([`pvediag::pve`]) -> diagnosis ([`pvediag::run`]: probes, observations,
//! verdicts) -> report written ([`pvediag::output`]).

use std::process::ExitCode;

use clap::Parser;

use pvediag::cli::{refusal_line, value_error_line, Cli, Command, UsageError};
use pvediag::exit;
use pvediag::settings::Settings;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return ExitCode::from(clap_error(&e)),
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pvediag: error: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

/// A value one of pvediag's parsers refused, or an option a subcommand does not take: one line.
/// Otherwise clap prints help/version on stdout (exit 0) and usage errors on stderr (exit 2).
fn clap_error(e: &clap::Error) -> u8 {
    let subcommand = std::env::args().nth(1);
    if let Some(line) = value_error_line(e).or_else(|| refusal_line(e, subcommand.as_deref())) {
        eprintln!("pvediag: error: {line}");
        return exit::USAGE;
    }
    let _ = e.print();
    if e.use_stderr() {
        exit::USAGE
    } else {
        exit::OK
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, UsageError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| UsageError::new(format!("cannot start the async runtime: {e}")))
}

fn run(cli: Cli) -> Result<u8, UsageError> {
    match cli.command {
        #[cfg(feature = "lab")]
        Some(Command::Demo(args)) => pvediag::demo::run(*args, &runtime()?),
        #[cfg(not(feature = "lab"))]
        Some(Command::Demo(_)) => Err(UsageError::new(
            "demo: this pvediag was built without the lab (cargo feature `lab`)",
        )),
        Some(Command::Lint(args)) => pvediag::lint_command::run(&args),
        Some(Command::History(args)) => pvediag::state::history::command(&args),
        Some(Command::Serve(args)) => pvediag::serve::run(*args, &runtime()?),
        Some(Command::Completions(args)) => pvediag::docs_command::completions(&args),
        Some(Command::Man) => pvediag::docs_command::man(),
        None if cli.targets.is_empty() && !cli.all => {
            if std::env::args_os().len() > 1 {
                return Err(UsageError::new(
                    "no target: give a VMID (202), an instance name or a public URL, or --all \
                     (`pvediag` alone shows how to start)",
                ));
            }
            // Bare `pvediag`: a short help that knows the environment.
            eprint!("{}", pvediag::docs_command::first_contact());
            Ok(exit::USAGE)
        }
        None => {
            let mut cli = cli;
            pvediag::docs_command::domain_from_urls(&cli.targets, &mut cli.diag.reach.domain)?;
            let settings = Settings::from_args_reading_env_and_files(&cli.diag)?;
            let request = settings.target_request(&cli.targets, cli.all)?;
            let rt = runtime()?;
            // The PVE API: --all's targets, instance names, per-container exec tokens.
            let mut targets = match rt.block_on(pvediag::run::resolve_targets(&settings, &request))
            {
                Ok(t) => t,
                Err(e) => {
                    if !settings.quiet {
                        eprintln!("pvediag: error: {e}");
                    }
                    return Ok(e.exit_code());
                }
            };
            // Container hostnames (the 2026 layout's {instance}): PVE API, `pct`, or as given.
            rt.block_on(pvediag::run::resolve_instances(
                &settings,
                &request,
                &mut targets,
            ))?;
            let mut report = rt.block_on(pvediag::run::diagnose(&settings, &targets))?;
            pvediag::run::record_state(settings.state_dir.as_deref(), settings.quiet, &mut report);
            report.focus = pvediag::docs_command::focus(&cli.targets, &report);
            pvediag::output::emit(&settings, &targets, &report)
        }
    }
}
