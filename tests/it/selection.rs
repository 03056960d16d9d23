//! `--services` selects what is shown, never what is known: for every lab scenario and every
//! service X, X's verdict with `--services X` equals X's verdict in the full run. Through the
//! library (the same path as `pvediag demo`), one lab per scenario; the selected runs of a scenario
//! go at once, so a scenario with a hung service costs one timeout, not nine.

use clap::Parser;
use pvediag::cli::{Cli, Command, DemoArgs};
use pvediag::lab::{self, Lab};
use pvediag::verdict::Verdict;

use crate::common::curl_present;

fn demo_args(args: &[&str]) -> DemoArgs {
    let cli = Cli::try_parse_from(
        ["pvediag", "demo", "--color", "never", "--timeout", "5s"]
            .iter()
            .chain(args),
    )
    .unwrap();
    match cli.command {
        Some(Command::Demo(d)) => *d,
        _ => unreachable!(),
    }
}

/// What must not change: everything but the timings in the evidence.
fn essence(v: &Verdict) -> (String, Option<String>, Vec<String>, String, String) {
    (
        v.status.as_str().to_string(),
        v.layer.map(|l| l.as_str().to_string()),
        v.layers().iter().map(|l| l.as_str().to_string()).collect(),
        v.rule.to_string(),
        v.summary.clone(),
    )
}

#[test]
fn selecting_a_service_never_changes_its_verdict() {
    if !curl_present() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut compared = 0;
    for name in lab::SCENARIOS {
        let scenario = lab::scenario(name).unwrap();
        rt.block_on(async {
            let lab = Lab::start(scenario.config.clone()).await.unwrap();
            let services: Vec<String> = pvediag::catalog::Catalog::embedded()
                .services
                .iter()
                .map(|s| s.name.clone())
                .collect();
            let full = async {
                pvediag::demo::diagnose_lab(&demo_args(&[]), &lab, &scenario)
                    .await
                    .unwrap()
            };
            let selected = futures_util::future::join_all(services.iter().map(|x| {
                let args = demo_args(&["--services", x]);
                let (lab, scenario) = (&lab, &scenario);
                async move {
                    pvediag::demo::diagnose_lab(&args, lab, scenario)
                        .await
                        .unwrap()
                }
            }));
            let (full, selected) = tokio::join!(full, selected);
            for (x, report) in services.iter().zip(&selected) {
                for (t_full, t_sel) in full.targets.iter().zip(&report.targets) {
                    let shown: Vec<&str> = t_sel
                        .observation
                        .services
                        .iter()
                        .map(|s| s.name.as_str())
                        .collect();
                    assert_eq!(shown, [x.as_str()], "{name}: --services {x} shows only {x}");
                    let i = t_full
                        .observation
                        .services
                        .iter()
                        .position(|s| &s.name == x)
                        .unwrap();
                    assert_eq!(
                        essence(&t_sel.verdict.services[0]),
                        essence(&t_full.verdict.services[i]),
                        "{name} vmid {}: --services {x} changed {x}'s verdict",
                        t_full.verdict.vmid
                    );
                    assert_eq!(t_sel.verdict.exec.status, t_full.verdict.exec.status);
                    compared += 1;
                }
                // The Caddy findings come from the whole catalog.
                assert_eq!(
                    report.caddy.as_ref().map(|c| c.findings.len()),
                    full.caddy.as_ref().map(|c| c.findings.len()),
                    "{name}: --services {x} changed the Caddy findings"
                );
            }
            lab.shutdown().await;
        });
    }
    assert!(compared >= lab::SCENARIOS.len() * 8, "{compared}");
}
