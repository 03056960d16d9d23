//! No shell injection (issue 5). pvediag sends cmux-execd exactly one command, its own read-only
//! probe script; catalog values reach it only single-quoted. Each hostile catalog value is either
//! rejected by `Catalog::from_sources` with an error naming its field, or the command built by
//! `probe::internal::build_command` makes a real `/bin/bash` call curl with exactly the intended
//! URL, method and headers — checked with a `curl` recorder script first on `PATH`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use proptest::prelude::*;
use pvediag::catalog::{Catalog, CatalogError};
use pvediag::probe::internal::build_command;

const RECORDER: &str = r#"#!/bin/bash
# Records its argv NUL-separated (one file per call), prints nothing, exits 0.
printf '%s\0' "$@" > "$PVEDIAG_REC/argv.$$"
"#;

/// The catalog values under test; `None` keeps the valid default.
#[derive(Debug, Clone, Default)]
struct Values {
    name: Option<String>,
    path: Option<String>,
    header_name: Option<String>,
    header_value: Option<String>,
    method: Option<String>,
    unit: Option<String>,
}

fn service_json(v: &Values) -> String {
    let mut headers = serde_json::Map::new();
    headers.insert(
        v.header_name.clone().unwrap_or_else(|| "X-Probe".into()),
        v.header_value.clone().unwrap_or_else(|| "1".into()).into(),
    );
    serde_json::json!({
        "name": v.name.clone().unwrap_or_else(|| "svc".into()),
        "unit": v.unit.clone().unwrap_or_else(|| "svc.service".into()),
        "port": 39383,
        "probe": {
            "method": v.method.clone().unwrap_or_else(|| "GET".into()),
            "path": v.path.clone().unwrap_or_else(|| "/".into()),
            "headers": headers,
        },
        "healthy": { "status": [200] }
    })
    .to_string()
}

/// Runs `command` under real bash with the recorder first on PATH; returns each curl argv.
fn run_under_bash(command: &str, rec: &Path, bin: &Path) -> Vec<Vec<String>> {
    for e in std::fs::read_dir(rec).unwrap() {
        std::fs::remove_file(e.unwrap().path()).unwrap();
    }
    let out = Command::new("/bin/bash")
        .arg("-c")
        .arg(command)
        .env_clear()
        .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
        .env("PVEDIAG_REC", rec)
        // An injected `touch pwned` would land here and fail the file check below.
        .current_dir(rec)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash failed: {out:?}");
    let mut calls = Vec::new();
    for e in std::fs::read_dir(rec).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            name.starts_with("argv."),
            "unexpected file {name}: a value ran a command"
        );
        let bytes = std::fs::read(&p).unwrap();
        let args: Vec<String> = bytes
            .split(|b| *b == 0)
            .map(|a| String::from_utf8(a.to_vec()).unwrap())
            .collect();
        calls.push(args[..args.len() - 1].to_vec()); // the last NUL ends the last argument
    }
    calls
}

struct Sandbox {
    _dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    rec: std::path::PathBuf,
}

fn sandbox() -> Sandbox {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    let rec = dir.path().join("rec");
    std::fs::create_dir(&bin).unwrap();
    std::fs::create_dir(&rec).unwrap();
    let curl = bin.join("curl");
    std::fs::write(&curl, RECORDER).unwrap();
    std::fs::set_permissions(&curl, std::fs::Permissions::from_mode(0o755)).unwrap();
    Sandbox {
        _dir: dir,
        bin,
        rec,
    }
}

/// The whole check for one set of values.
fn check(v: &Values, sb: &Sandbox) -> Result<(), TestCaseError> {
    let json = service_json(v);
    let catalog = match Catalog::from_sources("prop", &[("x.json".into(), json)]) {
        Err(CatalogError::Field { field, message, .. }) => {
            // Rejected: the error names the field that holds the hostile value.
            let expected: &[&str] = &[
                if v.name.is_some() { "name" } else { "" },
                if v.path.is_some() { "probe.path" } else { "" },
                if v.header_name.is_some() || v.header_value.is_some() {
                    "probe.headers"
                } else {
                    ""
                },
                if v.method.is_some() {
                    "probe.method"
                } else {
                    ""
                },
                if v.unit.is_some() { "unit" } else { "" },
            ];
            prop_assert!(
                expected.contains(&field.as_str()),
                "rejected with field {field}: {message} for {v:?}"
            );
            prop_assert!(!message.is_empty());
            return Ok(());
        }
        Err(other) => return Err(TestCaseError::fail(format!("{other} for {v:?}"))),
        Ok(c) => c,
    };
    let s = &catalog.services[0];
    let svcs = vec![s];
    let cmd = build_command(&svcs, "0123abcd", Duration::from_secs(1));
    // The recorder prints nothing, so the `curl --parallel` batch finds no results and the
    // per-service probe runs too: every transfer of every call must be exactly the intended one.
    let calls = run_under_bash(&cmd, &sb.rec, &sb.bin);
    prop_assert!(!calls.is_empty(), "no curl call for {:?}", v);
    let url = format!("http://127.0.0.1:{}{}", s.port, s.probe.path);
    let want: Vec<String> = s
        .probe
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}"))
        .collect();
    for argv in &calls {
        for transfer in argv.split(|a| a == "--next") {
            check_transfer(transfer, &url, &s.probe.method, &want)?;
        }
    }
    Ok(())
}

/// One transfer's arguments: the URL, the method and the headers exactly as intended, and no other
/// argument that is not a fixed option or its value.
fn check_transfer(
    args: &[String],
    url: &str,
    method: &str,
    want: &[String],
) -> Result<(), TestCaseError> {
    const WITH_VALUE: &[&str] = &["-o", "-D", "-w", "-X", "-H", "--max-time", "--parallel-max"];
    const FLAGS: &[&str] = &[
        "-s",
        "-sS",
        "-S",
        "-I",
        "-i",
        "--parallel",
        "--parallel-immediate",
        "--no-progress-meter",
    ];
    let mut positional = Vec::new();
    let mut headers = Vec::new();
    let mut methods = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = args[i].as_str();
        if WITH_VALUE.contains(&a) {
            prop_assert!(i + 1 < args.len(), "{a} without a value: {args:?}");
            match a {
                "-H" => headers.push(args[i + 1].clone()),
                "-X" => methods.push(args[i + 1].clone()),
                _ => {}
            }
            i += 2;
        } else if FLAGS.contains(&a) {
            if a == "-I" {
                methods.push("HEAD".into());
            }
            i += 1;
        } else {
            positional.push(a.to_string());
            i += 1;
        }
    }
    prop_assert_eq!(positional, vec![url.to_string()], "{:?}", args);
    prop_assert_eq!(methods, vec![method.to_string()], "{:?}", args);
    prop_assert_eq!(headers, want.to_vec(), "{:?}", args);
    Ok(())
}

/// Pieces a hostile value is made of.
fn piece() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("'".to_string()),
        Just("\"".to_string()),
        Just("$(touch pwned)".to_string()),
        Just("`touch pwned`".to_string()),
        Just("${PVEDIAG_REC}".to_string()),
        Just("'\\''".to_string()),
        Just("\n".to_string()),
        Just("\r\n".to_string()),
        Just("\0".to_string()),
        Just(";".to_string()),
        Just("|".to_string()),
        Just("&".to_string()),
        Just("\\".to_string()),
        Just(" ".to_string()),
        Just("*".to_string()),
        Just("~".to_string()),
        Just("é💥".to_string()),
        Just("\u{202e}".to_string()),
        Just("-H".to_string()),
        Just("--output=/etc/passwd".to_string()),
        "[a-zA-Z0-9/?=.:@%!,+-]{1,6}",
    ]
}

pub(crate) fn hostile() -> impl Strategy<Value = String> {
    prop_oneof![
        8 => prop::collection::vec(piece(), 0..10).prop_map(|v| v.concat()),
        1 => (piece(), 500usize..3000).prop_map(|(p, n)| p.repeat(n)),
    ]
}

fn values() -> impl Strategy<Value = Values> {
    (0..6usize, hostile(), any::<bool>()).prop_map(|(field, s, slash)| {
        let mut v = Values::default();
        match field {
            0 => v.name = Some(s),
            1 => v.path = Some(if slash { format!("/{s}") } else { s }),
            2 => v.header_name = Some(s),
            3 => v.header_value = Some(s),
            4 => v.method = Some(s),
            _ => v.unit = Some(s),
        }
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn hostile_catalog_values_are_rejected_or_probe_exactly_the_intended_url(v in values()) {
        let sb = sandbox();
        check(&v, &sb)?;
    }
}

/// Values that pass validation yet are full of shell syntax: bash must pass them on literally.
#[test]
fn accepted_values_with_shell_syntax_reach_curl_literally() {
    let sb = sandbox();
    let cases = [
        Values {
            path: Some("/a'b$(touch pwned)&c=;d|e*(f)!~@:,+%27".into()),
            ..Default::default()
        },
        Values {
            path: Some("/'\\''".replace('\\', "")),
            ..Default::default()
        },
        Values {
            header_name: Some("X-'$|&`!#*".into()),
            header_value: Some("v'\"$(touch pwned) `id` \\ ${HOME} ;|&".into()),
            ..Default::default()
        },
        Values {
            method: Some("head".into()),
            ..Default::default()
        },
        Values {
            method: Some("PROPFIND".into()),
            path: Some(format!("/{}", "'".repeat(1000))),
            ..Default::default()
        },
    ];
    for v in &cases {
        check(v, &sb).unwrap_or_else(|e| panic!("{v:?}: {e}"));
    }
    // And the header map: several headers keep their order and values.
    let mut headers = BTreeMap::new();
    headers.insert("A", "'");
    headers.insert("B", "$(x)");
    let json = serde_json::json!({
        "name": "svc", "port": 1, "probe": {"path": "/", "headers": headers},
        "healthy": {"status": [200]}
    })
    .to_string();
    let c = Catalog::from_sources("t", &[("x.json".into(), json)]).unwrap();
    let cmd = build_command(&[&c.services[0]], "n", Duration::from_secs(1));
    let calls = run_under_bash(&cmd, &sb.rec, &sb.bin);
    assert!(calls[0].windows(2).any(|w| w[0] == "-H" && w[1] == "A: '"));
    assert!(calls[0]
        .windows(2)
        .any(|w| w[0] == "-H" && w[1] == "B: $(x)"));
}
