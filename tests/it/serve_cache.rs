//! `pvediag serve` keeps the PVE API's answers for a short while (node list, container list,
//! configs and their tokens) and fits the API's requests in the scrape's deadline.

use std::io::BufRead;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::common::fleet_lab::*;

struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `pvediag serve` against the lab with the PVE API at `pve`; returns it and its base URL.
fn serve(lab: &pvediag::lab::Lab, pve: &str) -> (Child, String) {
    let mut child = Child(
        std::process::Command::new(assert_cmd::cargo::cargo_bin("pvediag"))
            .env_clear()
            .env("PVE_API_URL", pve)
            .env("PVE_API_TOKEN", PVE_TOKEN)
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(lab_reach_args(lab))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    let mut r = std::io::BufReader::new(stderr);
    let mut line = String::new();
    // Warnings (the PVE API's TLS note) may come first.
    for _ in 0..10 {
        line.clear();
        r.read_line(&mut line).unwrap();
        if line.starts_with("pvediag serve: listening on ") {
            break;
        }
    }
    let base = line
        .trim()
        .strip_prefix("pvediag serve: listening on ")
        .unwrap_or_else(|| panic!("{line}"))
        .to_string();
    // Keep draining stderr so the child never blocks on it.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    (child, base)
}

#[test]
fn serve_caches_the_pve_api_answers() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let (pve, api_requests) = start_pve_counted(&rt, PveMode::Normal);
    let (_child, base) = serve(&lab, &pve);
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let scrape = |target: &str| {
            c.get(format!("{base}/probe?target={target}"))
                .header("X-Prometheus-Scrape-Timeout-Seconds", "20")
                .send()
        };
        for target in ["202", "202", "202", "cmux-202"] {
            let r = scrape(target).await.unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            let s = parse_prometheus(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));
            // The token came from the PVE API (cached or not): the internal view ran.
            let v = find(
                &s,
                "pvediag_verdict",
                &[("vmid", "202"), ("service", "xterm")],
            );
            assert_eq!(v[0].labels["status"], "healthy", "{body}");
        }
    });
    // Uncached: /nodes and 202's config per scrape, and the container list for the name: 9.
    // Cached: /nodes and the config once, the list once.
    assert_eq!(api_requests.load(Ordering::Relaxed), 3);
}

#[test]
fn serve_fits_a_hanging_pve_api_in_the_scrape_timeout() {
    if !crate::common::curl_present() {
        return;
    }
    let rt = runtime();
    let lab = start_lab(&rt, fleet_lab_config());
    let pve = start_pve(&rt, PveMode::Hang);
    let (_child, base) = serve(&lab, &pve);
    rt.block_on(async {
        let c = reqwest::Client::builder().no_proxy().build().unwrap();
        let start = Instant::now();
        let r = c
            .get(format!("{base}/probe?target=202"))
            .header("X-Prometheus-Scrape-Timeout-Seconds", "4")
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .unwrap();
        let took = start.elapsed();
        // Without the API's tokens the diagnosis still runs (the internal view is inconclusive),
        // and the answer arrives within Prometheus' timeout.
        assert_eq!(r.status(), 200);
        let body = r.text().await.unwrap();
        assert!(body.contains("pvediag_verdict"), "{body}");
        assert!(took < Duration::from_secs(4), "took {took:?}");
    });
}
