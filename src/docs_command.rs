//! First contact and self-description: the short help of a bare `pvediag`, shell completions and
//! the man page (both generated from the clap definitions), and what a public URL given as the
//! target means for the run (its domain, the service to highlight).

use std::io::Write;

use clap::CommandFactory;

use crate::cli::{Cli, CompletionsArgs, Sandbox, ServiceRef, TargetArg, UsageError};
use crate::exit;
use crate::report::{Focus, Report};

/// What a bare `pvediag` prints: how to start, with what the environment already provides.
pub fn first_contact() -> String {
    first_contact_with(
        std::env::var("PVE_PUBLIC_DOMAIN")
            .ok()
            .filter(|d| !d.is_empty()),
    )
}

/// [`first_contact`] for a given `PVE_PUBLIC_DOMAIN`.
pub(crate) fn first_contact_with(domain: Option<String>) -> String {
    let d = domain
        .clone()
        .unwrap_or_else(|| "sandbox.example.com".into());
    let flag = if domain.is_some() {
        String::new()
    } else {
        format!(" --domain {d}")
    };
    let mut s = String::new();
    s.push_str("pvediag: where is the routing chain of a cmux sandbox broken?\n\n");
    s.push_str(&format!(
        "  pvediag{flag} 202\n      diagnose every service of container 202\n"
    ));
    s.push_str(&format!(
        "  pvediag https://xterm-202.{d}/\n      the URL from the browser: its sandbox, service and domain\n"
    ));
    s.push_str(&format!(
        "  pvediag{flag} --all\n      every running container the PVE API lists\n"
    ));
    s.push_str(
        "  pvediag demo\n      try it first: a built-in lab on loopback, no Proxmox needed\n\n",
    );
    match domain {
        Some(d) => s.push_str(&format!("domain: {d} (from PVE_PUBLIC_DOMAIN)\n")),
        None => s.push_str("domain: give --domain, set PVE_PUBLIC_DOMAIN, or paste a public URL\n"),
    }
    s.push_str("every option: pvediag --help; the manual: pvediag man | man -l -\n");
    s
}

/// `pvediag completions SHELL`.
pub fn completions(args: &CompletionsArgs) -> Result<u8, UsageError> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "pvediag", &mut out);
    write_stdout(&out)
}

/// `pvediag man`: the man page, subcommands included, from the clap definitions.
pub fn man() -> Result<u8, UsageError> {
    write_stdout(&man_page()?)
}

/// The roff text of pvediag(1), with a section per subcommand.
pub(crate) fn man_page() -> Result<Vec<u8>, UsageError> {
    let cmd = Cli::command();
    let mut out = Vec::new();
    let io = |e: std::io::Error| UsageError::new(format!("man page: {e}"));
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(&mut out).map_err(io)?;
    man.render_name_section(&mut out).map_err(io)?;
    man.render_synopsis_section(&mut out).map_err(io)?;
    man.render_description_section(&mut out).map_err(io)?;
    man.render_options_section(&mut out).map_err(io)?;
    for sub in cmd.get_subcommands() {
        writeln!(out, ".SH \"PVEDIAG {}\"", sub.get_name().to_uppercase()).map_err(io)?;
        if let Some(a) = sub.get_about() {
            writeln!(out, "{}", roff_escape(&a.to_string())).map_err(io)?;
        }
        for arg in sub.get_arguments().filter(|a| !a.is_hide_set()) {
            let name = match (arg.get_short(), arg.get_long()) {
                (Some(s), Some(l)) => format!("\\-{s}, \\-\\-{l}"),
                (None, Some(l)) => format!("\\-\\-{l}"),
                (Some(s), None) => format!("\\-{s}"),
                (None, None) => arg.get_id().to_string().to_uppercase(),
            };
            writeln!(out, ".TP\n\\fB{name}\\fR").map_err(io)?;
            if let Some(h) = arg.get_help() {
                writeln!(out, "{}", roff_escape(&h.to_string())).map_err(io)?;
            }
        }
    }
    man.render_subcommands_section(&mut out).map_err(io)?;
    writeln!(
        out,
        ".SH \"EXIT STATUS\"\n0 all healthy; 1 something broken or degraded; 2 usage or configuration \
         error; 3 nothing proven broken but something could not be checked."
    )
    .map_err(io)?;
    man.render_version_section(&mut out).map_err(io)?;
    Ok(out)
}

fn roff_escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('-', "\\-")
        .lines()
        .map(|l| {
            if l.starts_with('.') || l.starts_with('\'') {
                format!("\\&{l}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn write_stdout(bytes: &[u8]) -> Result<u8, UsageError> {
    let mut out = std::io::stdout().lock();
    // A closed pipe (| head) is not an error worth a message.
    let _ = out.write_all(bytes).and_then(|_| out.flush());
    Ok(exit::OK)
}

/// The domain the public URLs name: taken when none is configured, refused when it differs from
/// the configured one or between URLs.
pub fn domain_from_urls(
    targets: &[TargetArg],
    domain: &mut Option<String>,
) -> Result<(), UsageError> {
    for t in targets {
        if let TargetArg::Url(u) = t {
            match domain {
                None => *domain = Some(u.domain.clone()),
                Some(d) if d.trim_end_matches('.').eq_ignore_ascii_case(&u.domain) => {}
                Some(d) => {
                    return Err(UsageError::new(format!(
                    "the URL's domain {} differs from the domain {d} (--domain, PVE_PUBLIC_DOMAIN \
                         or another URL)",
                    u.domain
                )))
                }
            }
        }
    }
    Ok(())
}

/// The service the first public URL names, on the target it resolved to.
pub fn focus(targets: &[TargetArg], report: &Report) -> Option<Focus> {
    targets.iter().find_map(|t| {
        let TargetArg::Url(u) = t else { return None };
        let tr = report.targets.iter().find(|tr| match &u.sandbox {
            Sandbox::Vmid(v) => tr.observation.vmid == *v,
            Sandbox::Name(n) => {
                tr.routing.as_ref().is_some_and(|r| &r.instance == n)
                    || crate::instance::vmid_of_cmux_name(n) == Some(tr.observation.vmid)
            }
        })?;
        let service = tr.observation.services.iter().find(|s| match &u.service {
            ServiceRef::Name(n) => &s.name == n,
            ServiceRef::Port(p) => s.port == *p,
        })?;
        Some(Focus {
            vmid: tr.observation.vmid,
            service: service.name.clone(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_contact_respects_the_environment() {
        let with = first_contact_with(Some("alpha.example".into()));
        assert!(!with.contains("--domain"), "{with}");
        assert!(with.contains("pvediag 202") && with.contains("pvediag demo"));
        assert!(with.contains("https://xterm-202.alpha.example/"));
        let without = first_contact_with(None);
        assert!(without.contains("pvediag --domain sandbox.example.com 202"));
        assert!(without.contains("pvediag demo"));
        assert!(with
            .lines()
            .chain(without.lines())
            .all(|l| l.chars().count() <= 80));
    }

    #[test]
    fn the_urls_domain_is_taken_or_must_agree() {
        use clap::Parser;
        let t = crate::cli::Cli::try_parse_from(["pvediag", "https://xterm-202.example.test/"])
            .unwrap()
            .targets;
        let mut d = None;
        domain_from_urls(&t, &mut d).unwrap();
        assert_eq!(d.as_deref(), Some("example.test"));
        let mut d = Some("other.test".to_string());
        let e = domain_from_urls(&t, &mut d).unwrap_err().to_string();
        assert!(e.contains("differs"), "{e}");
    }
}
