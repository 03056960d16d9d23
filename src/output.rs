//! Writing a report where it goes: stdout or a file (atomically: temporary file, then rename).

use std::io::Write;

use crate::cli::{OutputFormat, UsageError};
use crate::report::{
    json::Json, junit::Junit, prometheus::Prometheus, table::TableFormat, Format, Report,
};
use crate::settings::Settings;

/// The configured format.
fn format(cfg: &Settings) -> Box<dyn Format> {
    match cfg.format {
        OutputFormat::Table => Box::new(TableFormat::new(cfg.color, cfg.width)),
        OutputFormat::Json => Box::new(Json),
        OutputFormat::Junit => Box::new(Junit),
        OutputFormat::Prometheus => Box::new(Prometheus),
    }
}

/// Prints warnings on stderr (not with `quiet`), each prefixed `pvediag: `.
pub(crate) fn print_warnings<'a>(quiet: bool, warnings: impl IntoIterator<Item = &'a String>) {
    if !quiet {
        for w in warnings {
            eprintln!("pvediag: {w}");
        }
    }
}

/// Prints the settings' and the targets' warnings, writes the report, returns the exit code.
pub fn emit(
    cfg: &Settings,
    targets: &crate::target::Targets,
    report: &Report,
) -> Result<u8, UsageError> {
    print_warnings(cfg.quiet, cfg.warnings.iter().chain(&targets.warnings));
    // Written as it is rendered (a fleet's JSON is never held whole in memory).
    let f = format(cfg);
    match &cfg.output {
        Some(path) => {
            crate::state::store::write_atomically_with(path, false, false, |w| f.write(report, w))
        }
        .map_err(|e| UsageError::new(format!("-o {}: {e}", path.display())))?,
        None if !cfg.quiet => {
            let mut out = std::io::BufWriter::new(std::io::stdout().lock());
            // A closed pipe (| head) is not an error worth a message.
            let _ = f.write(report, &mut out).and_then(|_| out.flush());
        }
        None => {}
    }
    Ok(report.exit_code())
}
