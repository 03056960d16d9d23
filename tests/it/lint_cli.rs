//! `pvediag lint` through the binary: the seed's broken files are flagged with lines, the fixed ones pass.

use assert_cmd::Command;

/// The seed document's Caddyfile (xterm on 39383), with xterm's route on `xterm_port`.
fn seed_caddyfile(xterm_port: u16) -> String {
    include_str!("../fixtures/Caddyfile.seed").replace(".lan:39383", &format!(".lan:{xterm_port}"))
}

fn setup_script(xterm_port: u16) -> String {
    format!(
        "#!/usr/bin/env bash\nset -euo pipefail\n\n# Ports\nEXEC_PORT=39375\nWORKER_PORT=39377\nVSCODE_PORT=39378\nXTERM_PORT={xterm_port}\nVNC_PORT=39380\n"
    )
}

fn lint(args: &[&str]) -> (i32, String, String) {
    let out = Command::cargo_bin("pvediag")
        .unwrap()
        .env_clear()
        .arg("lint")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn seed_files_are_flagged_with_lines_and_fixed_files_pass() {
    let dir = tempfile::tempdir().unwrap();
    let cf = dir.path().join("Caddyfile.cmux");
    let sh = dir.path().join("pve-tunnel-setup.sh");
    std::fs::write(&cf, seed_caddyfile(39376)).unwrap();
    std::fs::write(&sh, setup_script(39376)).unwrap();
    let (code, out, _) = lint(&[
        "--caddyfile",
        cf.to_str().unwrap(),
        "--setup-script",
        sh.to_str().unwrap(),
    ]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("Caddyfile.cmux:17:") && out.contains("39376") && out.contains("39383"),
        "{out}"
    );
    assert!(
        out.contains("pve-tunnel-setup.sh:8:") && out.contains("XTERM_PORT"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");

    let (code, out, _) = lint(&[
        "--caddyfile",
        cf.to_str().unwrap(),
        "--setup-script",
        sh.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["count"], 2);
    let kinds: Vec<&str> = v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"route_port_mismatch") && kinds.contains(&"script_port_mismatch"),
        "{kinds:?}"
    );

    std::fs::write(&cf, seed_caddyfile(39383)).unwrap();
    std::fs::write(&sh, setup_script(39383)).unwrap();
    let (code, out, _) = lint(&[
        "--caddyfile",
        cf.to_str().unwrap(),
        "--setup-script",
        sh.to_str().unwrap(),
    ]);
    // A clean run says what it checked.
    assert_eq!(
        (code, out.as_str()),
        (0, "6 routes, 5 setup constants: all match the catalog\n")
    );
}

/// Pointing the pre-deploy gate at the wrong file fails: an empty file, a Caddyfile with no cmux
/// route, a script with no port constant — each a finding (exit 1) with a hint.
#[test]
fn lint_fails_closed_on_files_with_nothing_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let other = dir.path().join("Caddyfile");
    std::fs::write(&other, "example.com {\n\treverse_proxy 127.0.0.1:3000\n}\n").unwrap();
    for f in [&empty, &other] {
        let (code, out, _) = lint(&["--caddyfile", f.to_str().unwrap()]);
        assert_eq!(code, 1, "{out}");
        assert!(out.contains("no cmux route found"), "{out}");
        assert!(out.contains("/etc/caddy/Caddyfile.cmux"), "{out}");
    }
    let (code, out, _) = lint(&[
        "--setup-script",
        empty.to_str().unwrap(),
        "--format",
        "json",
    ]);
    assert_eq!(code, 1, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["findings"][0]["kind"], "no_port_constants");
}

#[test]
fn unreadable_input_is_exit_2() {
    let (code, out, err) = lint(&["--caddyfile", "/nonexistent/Caddyfile"]);
    assert_eq!(code, 2);
    assert!(out.is_empty());
    assert!(
        err.contains("/nonexistent/Caddyfile") && err.contains("cannot read"),
        "{err}"
    );
    let (code, _, err) = lint(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("nothing to lint"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("config.json");
    std::fs::write(&bad, "{not json").unwrap();
    let (code, _, err) = lint(&["--caddy-json", bad.to_str().unwrap()]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("config.json"), "{err}");
}
