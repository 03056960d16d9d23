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
    // The lab's layout, named, unless the test says `--detect` (then nothing names it: no
    // Caddyfile, no admin API, no --catalog; the probes settle it, see generation.rs).
    if !extra.contains(&"--detect") {
        argv.extend(["--catalog".to_string(), "seed".to_string()]);
    }
    argv.extend(
        extra
            .iter()
            .filter(|s| **s != "--detect")
            .map(|s| s.to_string()),
    );
    let argv: Vec<&str> = argv.iter().map(|s| s.as_str()).collect();
    crate::common::servers::config(&argv[1..]).unwrap()
}

fn assert_healthy(report: &pvediag::report::Report) {
    use pvediag::report::Format;
    let v = pvediag::report::json::to_value(report);
    // `--format json` writes one target at a time: the same bytes as the whole document.
    assert_eq!(
        pvediag::report::json::Json.render(report),
        serde_json::to_string_pretty(&v).unwrap() + "\n"
    );
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
    // 5 external (3 hops) + origin (2) + exec (5) = 22 delays (the exec call is also the exec
    // service's public probe and the auth-mode probe).
    let floor = Duration::from_millis(5 * d);
    let sum = Duration::from_millis(22 * d);
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

/// Requests that entered the lab's edge for hosts naming `vmid` (`{service}-{vmid}.{domain}`).
fn edge_requests_for(lab: &Lab, vmid: u32) -> u64 {
    let v = vmid.to_string();
    lab.edge_requests()
        .iter()
        .filter(|(h, _)| h.split(['.', '-']).any(|p| p == v))
        .map(|(_, c)| c)
        .sum()
}

fn routed(cfg: &crate::common::servers::Config) -> u64 {
    cfg.settings
        .probe
        .catalog
        .services
        .iter()
        .filter(|s| s.routed)
        .count() as u64
}

/// One request per fact: per sandbox, one public GET per routed service except the exec service,
/// whose public probe and auth-mode probe are the exec POST itself; plus one origin check per run.
/// So a run of N sandboxes sends N x routed services + 1 requests through the edge, with the
/// generation named or, when nothing names it, settled by those same probes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fleet_one_request_per_fact_at_the_edge() {
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
    for (targets, extra) in [
        (&vmids[..1], &[][..]),
        (&vmids[..], &[][..]),
        (&vmids[..], &["--concurrency", "5"][..]),
        (&vmids[..], &["--services", "exec,xterm"][..]),
        // Nothing names the generation: the probes confirm the guess, no URL form is asked.
        (&vmids[..1], &["--detect"][..]),
        (&vmids[..], &["--detect"][..]),
    ] {
        let before: Vec<u64> = targets
            .iter()
            .map(|&v| edge_requests_for(&lab, v))
            .collect();
        let total0 = lab.edge_requests_total();
        let cfg = config(&lab, targets, extra);
        let per_sandbox = routed(&cfg);
        let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
            .await
            .unwrap();
        assert_healthy(&report);
        let v = pvediag::report::json::to_value(&report);
        for t in v["targets"].as_array().unwrap() {
            // The auth mode still comes out: execd's own `GET /exec`, asked inside the container.
            assert_eq!(t["exec"]["auth_mode"], "required", "{t:#}");
            assert_eq!(t["routing"]["generation"], "seed", "{t:#}");
            if extra.contains(&"--detect") {
                let why = t["routing"]["why"].as_str().unwrap();
                assert!(why.starts_with("execd answered at the seed URL"), "{why}");
            }
        }
        for (&vmid, b) in targets.iter().zip(before) {
            assert_eq!(
                edge_requests_for(&lab, vmid) - b,
                per_sandbox,
                "VMID {vmid}: one request per routed service ({extra:?}): {:?}",
                lab.edge_requests()
            );
        }
        assert_eq!(
            lab.edge_requests_total() - total0,
            targets.len() as u64 * per_sandbox + 1,
            "N x routed services + 1 origin check ({extra:?})"
        );
    }
    lab.shutdown().await;
}

/// Where the exec call's answer leaves a question open, the separate probe is sent, and the
/// answers are the same as with the separate probes: auth off (no token, 200), token refused (401).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exec_call_answers_the_auth_mode() {
    if !curl_present() {
        return;
    }
    // VMID 1000: auth off; 1001: a token, and the client sends the scenario token (refused).
    let mut config_ = lab::fleet(2, FIRST, None, Delays::default());
    config_.containers[1].exec_token = Some("a".repeat(64));
    let lab = Lab::start(config_).await.unwrap();
    let cfg = config(&lab, &[FIRST, FIRST + 1], &[]);
    let per_sandbox = routed(&cfg);
    let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
        .await
        .unwrap();
    let v = pvediag::report::json::to_value(&report);
    let t = |vmid: u32| {
        v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["vmid"] == vmid)
            .unwrap()
            .clone()
    };
    // Auth off: execd ran the command with the token sent (it ignores it) and said 405 inside.
    assert_eq!(t(FIRST)["exec"]["auth_mode"], "off", "{:#}", t(FIRST));
    assert_eq!(t(FIRST)["status"], "healthy", "{:#}", t(FIRST));
    // Token refused: 401 from execd itself is the auth mode; the exec service still answers
    // through the tunnel (execd answered), the channel is inconclusive.
    let refused = t(FIRST + 1);
    assert_eq!(refused["exec"]["auth_mode"], "required", "{refused:#}");
    assert_eq!(
        refused["exec"]["verdict"]["status"], "inconclusive",
        "{refused:#}"
    );
    let exec = refused["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "exec")
        .unwrap();
    assert_eq!(exec["verdict"]["status"], "healthy", "{exec:#}");
    assert_eq!(exec["verdict"]["rule"], "healthy", "{exec:#}");
    for vmid in [FIRST, FIRST + 1] {
        assert_eq!(
            edge_requests_for(&lab, vmid),
            per_sandbox,
            "{:?}",
            lab.edge_requests()
        );
    }
    lab.shutdown().await;
}

/// Processes started in the container by one exec call (the lab's process accounting): the lean
/// in-container command. Budget: bash, curl (one for every service), and what encoding the
/// results needs; nothing per service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_per_exec_call() {
    if !curl_present() {
        return;
    }
    let n = 3;
    let lab = Lab::start(lab::fleet(
        n,
        FIRST,
        Some(lab::SCENARIO_TOKEN.into()),
        Delays::default(),
    ))
    .await
    .unwrap();
    if !lab.set_process_accounting(true) {
        eprintln!(
            "\n*** SKIPPED: strace is not installed; the lab's process accounting needs it ***\n"
        );
        return;
    }
    let vmids: Vec<u32> = (0..n as u32).map(|i| FIRST + i).collect();
    let cfg = config(&lab, &vmids, &[]);
    let report = pvediag::run::diagnose(&cfg.settings, &cfg.targets)
        .await
        .unwrap();
    assert_healthy(&report);
    for &v in &vmids {
        let c = lab.exec_processes(v);
        assert_eq!(c.calls, 1, "VMID {v}: {c:?}");
        eprintln!("VMID {v}: {c:?}");
        assert!(
            c.processes <= PROCESS_BUDGET,
            "VMID {v}: {} processes for one exec call (budget {PROCESS_BUDGET}): {c:?}",
            c.processes
        );
    }
    lab.shutdown().await;
}

/// Processes one exec call may start in the container (measured: see docs/performance.md): the
/// probes' 3 (bash, curl for every service, a background `rm`), and the back ends' and units'
/// section (issue 14): `systemctl show` (1) and one reader per banner back end (1 in the catalog:
/// vnc). No `journalctl` on the healthy path: the journal is read only for services that look
/// unhealthy (a 6th process here was execd's auth-mode probe taken for a failing execd).
const PROCESS_BUDGET: u64 = 5;

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
