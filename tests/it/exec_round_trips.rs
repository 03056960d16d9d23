//! The structural performance promises, without timing a fast path (debug build, loaded machine):
//! one exec round trip per VMID whatever the number of services, and a diagnosis that takes about
//! as long as its slowest probe, not the sum of its probes. Figures: `cargo bench --bench fleet`.

use std::time::{Duration, Instant};

use pvediag::lab::{self, Delays, Lab};

const FIRST: u32 = 1000;

use crate::common::curl_present;

fn config(lab: &Lab, vmids: &[u32], extra: &[&str]) -> crate::common::servers::Config {
    let token = lab.dir.join("client-token");
    std::fs::write(&token, lab::SCENARIO_TOKEN).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let mut argv: Vec<String> = vec!["pvediag".into()];
    argv.extend(vmids.iter().map(|v| v.to_string()));
    for a in [
        "--domain",
        &lab.domain,
        "--connect-to",
        &lab.edge_addr.to_string(),
        "--cacert",
        &lab.ca_cert_path.display().to_string(),
        "--exec-token-file",
        &token.display().to_string(),
        "--timeout",
        "20s",
    ] {
        argv.push(a.to_string());
    }
    argv.extend(extra.iter().map(|s| s.to_string()));
    let argv: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
    crate::common::servers::config(&argv[1..]).unwrap()
}

fn assert_healthy(report: &pvediag::report::Report) {
    let v = pvediag::report::json::to_value(report);
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["status"], "healthy", "{t:#}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_one_exec_post_per_vmid_whatever_the_services() {
    if !curl_present() {
        return;
    }
    let n = 12;
    let lab = Lab::start(lab::fleet(
        n,
        FIRST,
        Some(lab::SCENARIO_TOKEN.into()),
        Delays::default(),
    ))
    .await
    .unwrap();
    let vmids: Vec<u32> = (0..n as u32).map(|i| FIRST + i).collect();
    // All eight services, then a concurrency below the number of targets, then two services.
    for extra in [
        &[][..],
        &["--concurrency", "5"][..],
        &["--services", "exec,xterm"][..],
    ] {
        let before: Vec<u64> = vmids.iter().map(|&v| lab.exec_posts(v)).collect();
        let cfg = config(&lab, &vmids, extra);
        let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
            .await
            .unwrap();
        assert_healthy(&report);
        for (&v, b) in vmids.iter().zip(before) {
            assert_eq!(
                lab.exec_posts(v) - b,
                1,
                "VMID {v}: exactly one POST /exec per run ({extra:?})"
            );
        }
    }
    assert_eq!(lab.exec_posts_total(), 3 * n as u64);
    lab.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_a_diagnosis_takes_about_its_slowest_probe_not_their_sum() {
    if !curl_present() {
        return;
    }
    let d = 300;
    let lab = Lab::start(lab::fleet(
        1,
        FIRST,
        Some(lab::SCENARIO_TOKEN.into()),
        Delays::uniform(d),
    ))
    .await
    .unwrap();
    // The slowest chain: the exec round trip, edge + caddy + execd, then cmux-proxy inside
    // (proxy + the execd behind it). The sum of all probes, one after another, is far more:
    // 6 external (3 hops) + origin (2) + auth (3) + exec (5) = 28 delays.
    let floor = Duration::from_millis(5 * d);
    let sum = Duration::from_millis(28 * d);
    let cfg = config(&lab, &[FIRST], &[]);
    let start = Instant::now();
    let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
        .await
        .unwrap();
    let took = start.elapsed();
    assert_healthy(&report);
    assert_eq!(lab.exec_posts(FIRST), 1);
    assert!(
        took >= floor,
        "faster than the injected delays allow: {took:?}"
    );
    assert!(
        took < floor * 3 && took < sum / 2,
        "took {took:?}: the probes did not run concurrently (floor {floor:?}, sum {sum:?})"
    );
    lab.shutdown().await;
}

/// Back ends, unit state and journal lines (issue 14) ride in the same exec round trip: one POST
/// per VMID, also where a failing service makes the command read the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_ends_units_and_journal_cost_no_extra_exec_call() {
    if !curl_present() {
        return;
    }
    for name in ["healthy", "vnc-server-down", "chrome-down", "crash-loop"] {
        let sc = lab::scenario(name).unwrap();
        let lab = Lab::start(sc.config.clone()).await.unwrap();
        let cfg = config(&lab, &[lab::VMID], &[]);
        let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
            .await
            .unwrap();
        assert_eq!(lab.exec_posts(lab::VMID), 1, "{name}: one POST /exec");
        let v = pvediag::report::json::to_value(&report);
        let inside = &v["targets"][0]["inside"];
        assert_eq!(
            inside["backends"].as_array().unwrap().len(),
            2,
            "{name}: {inside:#}"
        );
        assert!(
            inside["systemd"]["units"].as_array().unwrap().len() >= 10,
            "{name}: {inside:#}"
        );
        let journal = inside.to_string().contains("\"journal\"");
        assert_eq!(
            journal,
            name != "healthy",
            "{name}: journal read only when something fails"
        );
        lab.shutdown().await;
    }
}
