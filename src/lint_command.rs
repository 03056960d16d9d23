//! `pvediag lint`: the static check for CI before a deploy. Reads files only; no network.
//! Exit 0 clean, 1 findings, 2 unreadable input.

use crate::cli::{LintArgs, LintFormat, UsageError};
use crate::exit;
use crate::lint::{lint, parse_setup_script, render_json, render_text, ScriptFile};
use crate::settings::{catalog_reading_dir, read_caddyfile, read_text};

pub fn run(args: &LintArgs) -> Result<u8, UsageError> {
    if args.caddyfile.is_empty() && args.caddy_json.is_empty() && args.setup_script.is_empty() {
        return Err(UsageError::new(
            "nothing to lint: give --caddyfile FILE, --caddy-json FILE and/or --setup-script FILE",
        ));
    }
    let mut tables = Vec::new();
    // Fails closed: a file with nothing cmux in it is a finding, not a pass.
    let mut empty = Vec::new();
    let mut names = Vec::new();
    for p in &args.caddyfile {
        let t = read_caddyfile(p)?;
        names.push(p.display().to_string());
        tables.push(t);
    }
    for p in &args.caddy_json {
        let text = read_text("--caddy-json", p)?;
        let t = crate::caddy::admin::parse(&text)
            .map_err(|e| UsageError::new(format!("--caddy-json {}: {e}", p.display())))?;
        names.push(p.display().to_string());
        tables.push(t);
    }
    let catalog = match (args.checks.as_deref(), args.catalog) {
        (None, Some(g)) => g.catalog(),
        (None, None) => {
            // The generation of the Caddy configurations: only the generic rule means 2026.
            use crate::generation::{caddy_layout, CaddyLayout, Generation};
            let generic = !tables.is_empty()
                && tables
                    .iter()
                    .all(|t| matches!(caddy_layout(t), CaddyLayout::Generic(_)));
            if generic {
                Generation::Y2026.catalog()
            } else {
                Generation::Seed.catalog()
            }
        }
        (dir, _) => catalog_reading_dir(dir)?,
    };
    for (name, t) in names.iter().zip(&tables) {
        empty.extend(crate::lint::no_cmux_route(&catalog, name, t));
    }
    let mut scripts: Vec<ScriptFile> = Vec::new();
    for p in &args.setup_script {
        let text = read_text("--setup-script", p)?;
        let name = p.display().to_string();
        let consts = parse_setup_script(&name, &text);
        empty.extend(crate::lint::no_port_constants(&catalog, &name, &consts));
        scripts.push((name, consts));
    }
    let mut findings = lint(&catalog, &tables, &scripts);
    findings.splice(0..0, empty);
    let routes: usize = tables
        .iter()
        .map(|t| crate::lint::cmux_routes(&catalog, t))
        .sum();
    let constants: usize = scripts
        .iter()
        .map(|(_, c)| crate::lint::catalog_constants(&catalog, c))
        .sum();
    let out = match args.format {
        LintFormat::Text if findings.is_empty() => {
            format!("{}\n", crate::lint::checked_line(routes, constants))
        }
        LintFormat::Text => render_text(&findings),
        LintFormat::Json => format!("{}\n", render_json(&findings)),
    };
    print!("{out}");
    Ok(if findings.is_empty() {
        exit::OK
    } else {
        exit::BROKEN
    })
}
