//! pvediag's entry point: `main() -> ExitCode` around `run() -> Result<u8>`.

use std::process::ExitCode;

use clap::Parser;

use pvediag::cli::{Cli, Command, DiagnoseConfig, UsageError};
use pvediag::report::{exit, Report};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            // clap prints help/version on stdout (exit 0) and usage errors on stderr (exit 2).
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            });
        }
    };
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("pvediag: error: {e}");
            ExitCode::from(exit::USAGE)
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, UsageError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| UsageError::new(format!("cannot start the async runtime: {e}")))
}

fn env_token() -> Option<String> {
    std::env::var("CMUX_EXECD_AUTH_TOKEN")
        .ok()
        .filter(|t| !t.is_empty())
}

fn run(cli: Cli) -> Result<u8, UsageError> {
    match cli.command {
        Some(Command::Demo(args)) => pvediag::demo::run(*args, &runtime()?),
        Some(Command::Lint(args)) => pvediag::lint_command::run(&args),
        Some(Command::History(args)) => pvediag::state::history::command(&args),
        Some(Command::Serve(args)) => {
            pvediag::serve::run(*args, env_token().as_deref(), &runtime()?)
        }
        None => {
            let mut cfg = cli.diag.validate(&cli.vmids, env_token().as_deref())?;
            let rt = runtime()?;
            // The PVE API: --all's targets, instance names, per-container exec tokens.
            if let Err(e) = rt.block_on(pvediag::pve::resolve(&mut cfg)) {
                if !cfg.quiet {
                    eprintln!("pvediag: error: {e}");
                }
                return Ok(e.exit_code());
            }
            let mut report = rt.block_on(pvediag::wait::run(&cfg))?;
            pvediag::state::record_run(cfg.state_dir.as_deref(), cfg.quiet, &mut report);
            emit(&cfg, &report)
        }
    }
}

/// Prints warnings, renders the report, writes it, and returns the exit code.
pub fn emit(cfg: &DiagnoseConfig, report: &Report) -> Result<u8, UsageError> {
    pvediag::output::emit(cfg, report)
}
