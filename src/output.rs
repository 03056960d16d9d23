//! Writing a report where it goes: stdout or a file (atomically: temporary file, then rename).

use std::io::Write;
use std::path::Path;

use crate::cli::{OutputFormat, UsageError};
use crate::report::{
    json::Json, junit::Junit, prometheus::Prometheus, table::TableFormat, Format, Report,
};
use crate::settings::Settings;

/// Renders the report in the configured format.
pub fn render(cfg: &Settings, report: &Report) -> String {
    match cfg.format {
        OutputFormat::Table => TableFormat { color: cfg.color }.render(report),
        OutputFormat::Json => Json.render(report),
        OutputFormat::Junit => Junit.render(report),
        OutputFormat::Prometheus => Prometheus.render(report),
    }
}

/// Prints warnings on stderr (not with `quiet`), each prefixed `pvediag: `.
pub fn print_warnings<'a>(quiet: bool, warnings: impl IntoIterator<Item = &'a String>) {
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
    let text = render(cfg, report);
    match &cfg.output {
        Some(path) => write_atomically(path, text.as_bytes())
            .map_err(|e| UsageError::new(format!("-o {}: {e}", path.display())))?,
        None if !cfg.quiet => {
            let mut out = std::io::stdout().lock();
            // A closed pipe (| head) is not an error worth a message.
            let _ = out.write_all(text.as_bytes()).and_then(|_| out.flush());
        }
        None => {}
    }
    Ok(report.exit_code())
}

/// Writes `NAME.tmp` next to the file, then renames it over the file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("not a file path"))?;
    let mut tmp_name = file_name.to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}
