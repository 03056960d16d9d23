//! What the test areas share: whether curl is here, the lab fleet with a fake PVE API
//! (`fleet_lab`), and hostile loopback servers with TLS material (`servers`).
#![allow(dead_code)]

pub mod fleet_lab;
pub mod servers;

/// Whether a working curl is on PATH. The lab's containers and the host vantage's script run the
/// real curl; without it the tests that need them skip loudly (and `.ci/run` installs it).
pub fn curl_present() -> bool {
    let ok = std::process::Command::new("curl")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("\n*** SKIPPED: curl is not installed; the lab's containers and the host script need it ***\n");
    }
    ok
}
