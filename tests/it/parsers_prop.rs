//! No-panic properties of every parser that reads outside input (the same targets as the
//! coverage-guided fuzzers in tests/fuzz), so `cargo test` covers them too; and the crashing or
//! interesting inputs the fuzzers found, kept as regression tests.

use proptest::prelude::*;
use pvediag::caddy;
use pvediag::catalog::Catalog;
use pvediag::probe::internal::{parse_raw_response, parse_record};
use pvediag::probe::jsonlines::{Event, Parser};

fn feed_all(chunks: &[&[u8]]) -> (Vec<Event>, usize) {
    let mut p = Parser::new();
    let mut ev = Vec::new();
    for c in chunks {
        ev.extend(p.feed(c));
    }
    ev.extend(p.finish());
    (ev, p.malformed)
}

/// Bytes that look like an execd stream: valid lines, broken lines, garbage.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let line = prop_oneof![
        "[a-z ]{0,20}".prop_map(|d| format!("{{\"type\":\"stdout\",\"data\":\"{d}\"}}\n")),
        "[a-z ]{0,20}".prop_map(|d| format!("{{\"type\":\"stderr\",\"data\":\"{d}\"}}\n")),
        (-300i64..300).prop_map(|c| format!("{{\"type\":\"exit\",\"code\":{c}}}\n")),
        Just("{\"type\":\"exit\",\"code\":99999999999}\n".to_string()),
        Just("{\"type\":\"error\"}\n".to_string()),
        Just("<html>\n".to_string()),
        "\\PC{0,30}\n?",
    ];
    prop_oneof![
        prop::collection::vec(line, 0..20).prop_map(|v| v.concat().into_bytes()),
        prop::collection::vec(any::<u8>(), 0..600),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn jsonlines_chunking_never_changes_the_events(data in stream(), cuts in prop::collection::vec(0usize..700, 0..8)) {
        let (whole, bad) = feed_all(&[&data]);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(data.len())).collect();
        cuts.sort();
        let mut chunks = Vec::new();
        let mut prev = 0;
        for c in cuts {
            chunks.push(&data[prev..c]);
            prev = c;
        }
        chunks.push(&data[prev..]);
        let (split, bad2) = feed_all(&chunks);
        prop_assert_eq!(whole, split);
        prop_assert_eq!(bad, bad2);
    }

    #[test]
    fn record_and_raw_parsers_never_panic(data in prop::collection::vec(any::<u8>(), 0..400), tail in "\\PC{0,80}") {
        let _ = parse_raw_response(&data);
        let line = String::from_utf8_lossy(&data);
        let _ = parse_record(&line, "n");
        let _ = parse_record(&format!("@pvediag1 n svc {tail}"), "n");
        let _ = parse_record(&format!("@pvediag1 n svc via=curl rc=0 code=200 {tail} end"), "n");
        let _ = parse_record(&format!("@pvediag1 n svc via=bash rc=0 t0=1 t1=2 e= raw={tail} end"), "n");
    }

    #[test]
    fn raw_response_never_panics_on_http_like_input(status in "[0-9]{0,6}", head in "[ -~\r\n]{0,200}", body in prop::collection::vec(any::<u8>(), 0..64)) {
        let mut raw = format!("HTTP/1.1 {status} X\r\n{head}\r\n\r\n").into_bytes();
        raw.extend(body);
        if let Some(r) = parse_raw_response(&raw) {
            prop_assert!((100..=599).contains(&r.status));
            prop_assert!(r.headers.len() <= 64);
        }
    }

    #[test]
    fn caddyfile_reader_never_panics(text in caddyfile_like()) {
        let t = caddy::caddyfile::parse("Caddyfile", &text);
        for host in ["xterm-202.example.test", "port-39383-cmux-202.example.test", ""] {
            if let Some(r) = t.resolve(host) {
                let _ = r.dial();
            }
        }
    }

    #[test]
    fn caddy_admin_reader_never_panics(text in admin_like()) {
        if let Ok(t) = caddy::admin::parse(&text) {
            let _ = t.resolve("xterm-202.example.test").map(|r| r.dial());
        }
    }

    #[test]
    fn catalog_loader_never_panics(files in prop::collection::vec(catalog_like(), 1..4)) {
        let files: Vec<(String, String)> = files
            .into_iter()
            .enumerate()
            .map(|(i, t)| (format!("f{i}.json"), t))
            .collect();
        let _ = Catalog::from_sources("prop", &files);
    }
}

fn caddyfile_like() -> impl Strategy<Value = String> {
    let tok = prop_oneof![
        Just("{".to_string()),
        Just("}".to_string()),
        Just("\n".to_string()),
        Just(" ".to_string()),
        Just("\"".to_string()),
        Just("`".to_string()),
        Just("#".to_string()),
        Just("\\".to_string()),
        Just("@xterm".to_string()),
        Just("header_regexp".to_string()),
        Just("vmid Host ^xterm-(\\d+)\\.".to_string()),
        Just("handle".to_string()),
        Just("handle @xterm".to_string()),
        Just("reverse_proxy".to_string()),
        Just("cmux-{re.vmid.1}.lan:39383".to_string()),
        Just("{re.service.2}.lan:{re.service.1}".to_string()),
        Just("import".to_string()),
        Just("(snip)".to_string()),
        Just("*.example.test".to_string()),
        Just(":8080".to_string()),
        Just("respond".to_string()),
        "\\PC{0,12}",
    ];
    prop::collection::vec(tok, 0..60).prop_map(|v| v.join(" "))
}

fn admin_like() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        prop_oneof![
            Just("reverse_proxy".to_string()),
            Just("subroute".to_string()),
            Just("cmux-{http.regexp.vmid.1}.lan:39383".to_string()),
            Just("^xterm-(\\d+)\\.".to_string()),
            Just("(".to_string()),
            "\\PC{0,10}",
        ]
        .prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("apps"),
        Just("http"),
        Just("servers"),
        Just("routes"),
        Just("match"),
        Just("handle"),
        Just("handler"),
        Just("upstreams"),
        Just("dial"),
        Just("host"),
        Just("header_regexp"),
        Just("Host"),
        Just("pattern"),
        Just("name"),
        Just("listen"),
    ];
    let value = leaf.prop_recursive(5, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::vec((keys.clone(), inner), 0..5).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    });
    prop_oneof![
        4 => value.prop_map(|v| v.to_string()),
        1 => "\\PC{0,60}",
    ]
}

fn catalog_like() -> impl Strategy<Value = String> {
    (
        "[a-z]{1,4}",
        prop_oneof![
            Just(serde_json::json!(39383)),
            Just(serde_json::json!(0)),
            Just(serde_json::json!(-1)),
            Just(serde_json::json!(1.5)),
            Just(serde_json::json!("x")),
            (1u32..70000).prop_map(|p| serde_json::json!(p))
        ],
        "\\PC{0,12}",
        prop::collection::vec(
            prop_oneof![
                Just(serde_json::json!(200)),
                Just(serde_json::json!("2xx")),
                Just(serde_json::json!("6xx")),
                Just(serde_json::json!(null)),
                Just(serde_json::json!(1e99))
            ],
            0..3,
        ),
        prop_oneof![Just(None), "\\PC{0,10}".prop_map(Some)],
    )
        .prop_map(|(name, port, path, status, re)| {
            serde_json::json!({
                "name": name, "port": port,
                "probe": {"path": path},
                "healthy": {"status": status, "fingerprint": {"body_matches": re}}
            })
            .to_string()
        })
}

// ------------------------------------------------------------------------------------------------
// Regression inputs (see tests/fuzz/regressions/).

#[test]
fn fuzz_regressions_do_not_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd {
        let p = e.unwrap().path();
        let data = std::fs::read(&p).unwrap();
        let text = String::from_utf8_lossy(&data);
        let name = p.file_name().unwrap().to_string_lossy().to_string();
        if name == "README.md" {
            continue;
        }
        let target = name.split('-').next().unwrap();
        match target {
            "jsonlines" => {
                let _ = feed_all(&[&data]);
            }
            "record" => {
                let _ = parse_raw_response(&data);
                let _ = parse_record(&text, "n");
            }
            "caddyfile" => {
                let _ = caddy::caddyfile::parse("Caddyfile", &text);
            }
            "admin" => {
                let _ = caddy::admin::parse(&text);
            }
            "catalog" => {
                let _ = Catalog::from_sources("r", &[("r.json".into(), text.to_string())]);
            }
            other => panic!("{name}: unknown target {other}"),
        }
    }
}
