//! The bad input matrix (issue 5): every bad command line, environment value, catalog directory,
//! token file or certificate file ends in exit code 2 with nothing on stdout and a one-line
//! message on stderr that names the offending value and says what is expected. Nothing is probed:
//! no case starts a server, and each is rejected before any connection is made.

use std::path::Path;

use crate::common::servers::*;

/// One service file with `patch` applied to the healthy xterm entry.
fn service(patch: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = serde_json::json!({
        "name": "xterm",
        "description": "cmux-pty",
        "unit": "cmux-pty",
        "port": 39383,
        "routed": true,
        "probe": { "method": "GET", "path": "/sessions", "headers": {} },
        "healthy": { "status": [200], "headers": [], "fingerprint": {} }
    });
    patch(&mut v);
    serde_json::to_string_pretty(&v).unwrap()
}

fn catalog_dir(root: &Path, name: &str, files: &[(&str, &[u8])]) -> String {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    for (f, text) in files {
        std::fs::write(d.join(f), text).unwrap();
    }
    d.display().to_string()
}

struct Case {
    name: &'static str,
    args: Vec<String>,
    env: Vec<(&'static str, String)>,
    /// Each must appear in the stderr line.
    expect: Vec<String>,
    /// clap's own errors add usage lines after the first; only the first is checked then.
    clap: bool,
}

fn case(name: &'static str, args: &[&str], expect: &[&str]) -> Case {
    Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env: Vec::new(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
        clap: false,
    }
}

/// The base command: everything valid, plus `extra`.
fn base(extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = ["202", "--domain", "example.test"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn with(name: &'static str, extra: &[&str], expect: &[&str]) -> Case {
    Case {
        name,
        args: base(extra),
        env: Vec::new(),
        expect: expect.iter().map(|s| s.to_string()).collect(),
        clap: false,
    }
}

#[test]
fn bad_input_matrix() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let t = |s: &str| s.to_string();

    // Catalog directories.
    let broken_json = catalog_dir(root, "broken-json", &[("x.json", b"{\"name\": \"xterm\",")]);
    let not_utf8 = catalog_dir(root, "not-utf8", &[("x.json", b"{\"name\": \"\xff\xfe\"}")]);
    let bad = |name: &'static str, patch: fn(&mut serde_json::Value)| {
        catalog_dir(root, name, &[("x.json", service(patch).as_bytes())])
    };
    let port0 = bad("port0", |v| v["port"] = 0.into());
    let port_big = bad("port-big", |v| v["port"] = 70000.into());
    let port_str = bad("port-str", |v| v["port"] = "39383".into());
    let name_shell = bad("name-shell", |v| v["name"] = "x$(reboot)".into());
    let path_rel = bad("path-rel", |v| v["probe"]["path"] = "sessions".into());
    let path_space = bad("path-space", |v| {
        v["probe"]["path"] = "/a b'; rm -rf /".into()
    });
    let method_bad = bad("method-bad", |v| v["probe"]["method"] = "GET /x".into());
    let header_name = bad("header-name", |v| {
        v["probe"]["headers"] = serde_json::json!({"X Bad": "1"})
    });
    let header_value = bad("header-value", |v| {
        v["probe"]["headers"] = serde_json::json!({"X-Ok": "a\r\nInjected: 1"})
    });
    let unit_bad = bad("unit-bad", |v| v["unit"] = "cmux;reboot".into());
    let status_empty = bad("status-empty", |v| {
        v["healthy"]["status"] = serde_json::json!([])
    });
    let status_999 = bad("status-999", |v| {
        v["healthy"]["status"] = serde_json::json!([999])
    });
    let regex_bad = bad("regex-bad", |v| {
        v["healthy"]["fingerprint"]["body_matches"] = "(".into()
    });
    let unknown_field = bad("unknown-field", |v| v["colour"] = "red".into());
    let x = service(|_| {});
    let y = service(|v| v["name"] = "other".into());
    let dup_ports = catalog_dir(
        root,
        "dup-ports",
        &[("a.json", x.as_bytes()), ("b.json", y.as_bytes())],
    );
    let dup_names = catalog_dir(
        root,
        "dup-names",
        &[
            ("a.json", x.as_bytes()),
            ("b.json", service(|v| v["port"] = 1.into()).as_bytes()),
        ],
    );
    let empty_dir = catalog_dir(root, "empty", &[("README.txt", b"no json here")]);
    let huge = vec![b' '; 2 * 1024 * 1024];
    let huge_file = catalog_dir(root, "huge", &[("big.json", &huge)]);
    let checks_file = format!("{broken_json}/x.json");
    let missing_dir = root.join("no-such-dir").display().to_string();

    // Token files.
    let tok_missing = root.join("no-token").display().to_string();
    let tok_empty = write_private(root, "tok-empty", b"\n");
    let tok_dir = root.join("tok-dir");
    std::fs::create_dir(&tok_dir).unwrap();
    let tok_dir = tok_dir.display().to_string();
    let tok_binary = write_private(root, "tok-binary", b"\x00\xff\xfe\x01token");
    let tok_lines = write_private(root, "tok-lines", b"abc\ndef\n");

    // Certificate files.
    let ca_missing = root.join("no-ca.pem").display().to_string();
    let ca_not_pem = write_private(root, "ca.txt", b"this is not a certificate\n");
    let ca_bad_pem = write_private(
        root,
        "ca-bad.pem",
        b"-----BEGIN CERTIFICATE-----\nnot base64 at all !!!\n-----END CERTIFICATE-----\n",
    );

    let out_missing = root
        .join("no-such-dir")
        .join("report.json")
        .display()
        .to_string();
    let out_dir = root.display().to_string();

    let mut cases = vec![
        // Positional VMIDs and the domain.
        case(
            "vmid not a number",
            &["abc", "--domain", "example.test"],
            &["\"abc\"", "positive integer"],
        ),
        case(
            "vmid zero",
            &["0", "--domain", "example.test"],
            &["\"0\"", "positive integer"],
        ),
        case(
            "vmid with sign",
            &["+202", "--domain", "example.test"],
            &["\"+202\"", "positive integer"],
        ),
        case("no domain", &["202"], &["no domain", "--domain"]),
        case(
            "domain with space",
            &["202", "--domain", "exa mple.test"],
            &["\"exa mple.test\"", "hostname"],
        ),
        case(
            "domain one label",
            &["202", "--domain", "localhost"],
            &["\"localhost\"", "hostname"],
        ),
        // Durations.
        with(
            "timeout not a duration",
            &["--timeout", "abc"],
            &["--timeout", "\"abc\"", "10s"],
        ),
        with(
            "timeout zero",
            &["--timeout", "0"],
            &["--timeout", "\"0\"", "1ms"],
        ),
        with(
            "timeout negative",
            &["--timeout=-1s"],
            &["--timeout", "\"-1s\""],
        ),
        with(
            "deadline unit",
            &["--deadline", "5x"],
            &["--deadline", "\"5x\""],
        ),
        with(
            "deadline huge",
            &["--deadline", "1000000h"],
            &["--deadline", "24h"],
        ),
        // URL template.
        with(
            "template no scheme",
            &["--url-template", "{service}-{vmid}.{domain}"],
            &["--url-template", "https://"],
        ),
        with(
            "template unknown placeholder",
            &["--url-template", "https://{svc}-{vmid}.{domain}"],
            &["{svc}", "known"],
        ),
        with(
            "template unbalanced",
            &["--url-template", "https://{service-{vmid}.{domain}"],
            &["--url-template", "brace"],
        ),
        with(
            "template no vmid",
            &["--url-template", "https://{service}.{domain}"],
            &["--url-template", "{vmid}"],
        ),
        with(
            "template query",
            &["--url-template", "https://{service}-{vmid}.{domain}/?x=1"],
            &["--url-template", "query"],
        ),
        // --connect-to and --exec-url.
        with(
            "connect-to no port",
            &["--connect-to", "127.0.0.1"],
            &["--connect-to", "\"127.0.0.1\"", "HOST:PORT"],
        ),
        with(
            "connect-to port 0",
            &["--connect-to", "127.0.0.1:0"],
            &["--connect-to", "port 0", "HOST:PORT"],
        ),
        with(
            "connect-to port too big",
            &["--connect-to", "127.0.0.1:70000"],
            &["\"127.0.0.1:70000\"", "1-65535"],
        ),
        with(
            "connect-to bad host",
            &["--connect-to", "a b:80"],
            &["\"a b:80\"", "HOST:PORT"],
        ),
        with(
            "exec-url ftp",
            &["--exec-url", "ftp://x"],
            &["--exec-url", "\"ftp://x\"", "http(s)"],
        ),
        with(
            "exec-url credentials",
            &["--exec-url", "http://u:p@x"],
            &["--exec-url", "credentials"],
        ),
        // Catalogs.
        with(
            "catalog broken JSON",
            &["--checks", &broken_json],
            &["x.json", "invalid JSON"],
        ),
        with(
            "catalog not UTF-8",
            &["--checks", &not_utf8],
            &["x.json", "UTF-8"],
        ),
        with(
            "catalog port 0",
            &["--checks", &port0],
            &["port", "1 to 65535"],
        ),
        with(
            "catalog port too big",
            &["--checks", &port_big],
            &["70000", "1 to 65535"],
        ),
        with(
            "catalog port a string",
            &["--checks", &port_str],
            &["\"39383\"", "1 to 65535"],
        ),
        with(
            "catalog name with $()",
            &["--checks", &name_shell],
            &["name", "x$(reboot)", "lower-case"],
        ),
        with(
            "catalog relative path",
            &["--checks", &path_rel],
            &["probe.path", "\"sessions\"", "start with '/'"],
        ),
        with(
            "catalog path with quote",
            &["--checks", &path_space],
            &["probe.path", "rm -rf", "URL characters"],
        ),
        with(
            "catalog bad method",
            &["--checks", &method_bad],
            &["probe.method", "\"GET /x\"", "HTTP method"],
        ),
        with(
            "catalog bad header name",
            &["--checks", &header_name],
            &["probe.headers", "\"X Bad\"", "header name"],
        ),
        with(
            "catalog header value CRLF",
            &["--checks", &header_value],
            &["probe.headers", "X-Ok", "without line breaks"],
        ),
        with(
            "catalog bad unit",
            &["--checks", &unit_bad],
            &["unit", "cmux;reboot", "systemd unit"],
        ),
        with(
            "catalog empty status",
            &["--checks", &status_empty],
            &["healthy.status", "is empty"],
        ),
        with(
            "catalog status 999",
            &["--checks", &status_999],
            &["healthy.status", "999", "100-599"],
        ),
        with(
            "catalog bad regex",
            &["--checks", &regex_bad],
            &["body_matches", "regular expression"],
        ),
        with(
            "catalog unknown field",
            &["--checks", &unknown_field],
            &["x.json", "colour"],
        ),
        with(
            "catalog duplicate ports",
            &["--checks", &dup_ports],
            &["port", "39383", "also used"],
        ),
        with(
            "catalog duplicate names",
            &["--checks", &dup_names],
            &["name", "\"xterm\"", "also defined"],
        ),
        with(
            "catalog empty dir",
            &["--checks", &empty_dir],
            &["empty", "no *.json"],
        ),
        with(
            "catalog missing dir",
            &["--checks", &missing_dir],
            &["no-such-dir", "cannot read catalog directory"],
        ),
        with(
            "catalog file over 1 MiB",
            &["--checks", &huge_file],
            &["big.json", "1 MiB"],
        ),
        with(
            "catalog is a file",
            &["--checks", &checks_file],
            &["x.json", "cannot read catalog directory"],
        ),
        with(
            "services unknown",
            &["--services", "xterm,nope"],
            &["--services", "\"nope\"", "known"],
        ),
        // Token files and the token variable.
        with(
            "token file missing",
            &["--exec-token-file", &tok_missing],
            &["no-token", "cannot read the token file"],
        ),
        with(
            "token file empty",
            &["--exec-token-file", &tok_empty],
            &["tok-empty", "empty"],
        ),
        with(
            "token file a directory",
            &["--exec-token-file", &tok_dir],
            &["tok-dir", "not a regular file"],
        ),
        with(
            "token file binary",
            &["--exec-token-file", &tok_binary],
            &["tok-binary", "printable ASCII"],
        ),
        with(
            "token file two lines",
            &["--exec-token-file", &tok_lines],
            &["tok-lines", "one line"],
        ),
        // Certificates.
        with(
            "cacert missing",
            &["--cacert", &ca_missing],
            &["--cacert", "no-ca.pem", "cannot read"],
        ),
        with(
            "cacert not PEM",
            &["--cacert", &ca_not_pem],
            &["--cacert", "ca.txt", "PEM"],
        ),
        with(
            "cacert broken PEM",
            &["--cacert", &ca_bad_pem],
            &["--cacert", "ca-bad.pem", "PEM"],
        ),
        // Output.
        with(
            "output into a missing directory",
            &["-o", &out_missing],
            &["-o", "no-such-dir", "directory"],
        ),
        with(
            "output is a directory",
            &["-o", &out_dir],
            &["-o", "not a file path"],
        ),
        // The demo.
        case(
            "demo unknown scenario",
            &["demo", "--scenario", "nope"],
            &["--scenario", "\"nope\"", "one of"],
        ),
        // Subcommands take only the options they use, and say why in one line.
        case(
            "demo takes no domain",
            &["demo", "--domain", "x.example"],
            &["demo does not take --domain", "the lab sets"],
        ),
        case(
            "demo takes no connect-to",
            &["demo", "--connect-to", "127.0.0.1:1"],
            &["demo does not take --connect-to"],
        ),
        case(
            "demo takes no token file",
            &["demo", "--exec-token-file", "/nope"],
            &["demo does not take --exec-token-file"],
        ),
        with(
            "caddy-admin with credentials",
            &["--caddy-admin", "http://u:p@127.0.0.1:2019"],
            &["--caddy-admin", "credentials"],
        ),
        case(
            "serve takes no wait",
            &["serve", "--wait", "5s"],
            &["serve does not take --wait"],
        ),
    ];

    // The environment.
    let env_case = |name, args: &[&str], env: Vec<(&'static str, String)>, expect: &[&str]| Case {
        name,
        args: args.iter().map(|s| s.to_string()).collect(),
        env,
        expect: expect.iter().map(|s| s.to_string()).collect(),
        clap: false,
    };
    cases.push(env_case(
        "env domain bad",
        &["202"],
        vec![("PVE_PUBLIC_DOMAIN", t("not a domain"))],
        &["\"not a domain\"", "hostname"],
    ));
    cases.push(env_case(
        "env url template bad",
        &["202", "--domain", "example.test"],
        vec![("PVEDIAG_URL_TEMPLATE", t("ftp://{vmid}.{domain}"))],
        &["--url-template", "\"ftp://{vmid}.{domain}\"", "https://"],
    ));
    cases.push(env_case(
        "env token with a space",
        &["202", "--domain", "example.test"],
        vec![("CMUX_EXECD_AUTH_TOKEN", t("two words"))],
        &["CMUX_EXECD_AUTH_TOKEN", "printable ASCII"],
    ));
    cases.push(env_case(
        "env token two lines",
        &["202", "--domain", "example.test"],
        vec![("CMUX_EXECD_AUTH_TOKEN", t("abc\ndef"))],
        &["CMUX_EXECD_AUTH_TOKEN", "one line"],
    ));
    // clap's own errors: the first line names the value.
    for (name, args, expect) in [
        (
            "format unknown",
            vec!["202", "--format", "xml"],
            vec!["'xml'", "--format"],
        ),
        (
            "unknown flag",
            vec!["202", "--frobnicate"],
            vec!["'--frobnicate'"],
        ),
        ("missing value", vec!["202", "--timeout"], vec!["--timeout"]),
        ("no VMID", vec!["--domain", "example.test"], vec!["VMID"]),
    ] {
        cases.push(Case {
            name,
            args: args.iter().map(|s| s.to_string()).collect(),
            env: Vec::new(),
            expect: expect.iter().map(|s| s.to_string()).collect(),
            clap: true,
        });
    }
    assert!(cases.len() >= 30);

    let mut failures = Vec::new();
    for c in &cases {
        let mut cmd = pvediag();
        cmd.args(&c.args);
        for (k, v) in &c.env {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        let first = stderr.lines().next().unwrap_or("");
        let mut why = Vec::new();
        if out.status.code() != Some(2) {
            why.push(format!("exit {:?}", out.status.code()));
        }
        if !stdout.is_empty() {
            why.push(format!("stdout {stdout:?}"));
        }
        if !c.clap && stderr.lines().count() != 1 {
            why.push("stderr is not one line".into());
        }
        if c.clap && !first.starts_with("error:") {
            why.push("clap's first line is not an error".into());
        }
        if !c.clap && !first.starts_with("pvediag: error: ") {
            why.push("no `pvediag: error:` prefix".into());
        }
        for e in &c.expect {
            let hay = if c.clap { &stderr[..] } else { first };
            if !hay.contains(e.as_str()) {
                why.push(format!("missing {e:?}"));
            }
        }
        if stderr.contains("panicked") {
            why.push("panic".into());
        }
        if !why.is_empty() {
            failures.push(format!(
                "{}: {} — stderr: {stderr:?}",
                c.name,
                why.join(", ")
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases fail:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
