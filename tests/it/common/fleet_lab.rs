//! Shared fixtures of the fleet tests: the lab with several containers, a fake Proxmox VE API on
//! 127.0.0.1, a strict Prometheus exposition parser, and the binary with a cleared environment.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use assert_cmd::Command;
use pvediag::lab::{self, Behaviour, ContainerSpec, Lab, LabConfig, ServiceKind};
use tokio::io::BufReader;
use tokio::net::TcpListener;

pub const DOMAIN: &str = "example.test";
/// The PVE API token the fake API accepts; its secret part must never appear in any output.
pub const PVE_TOKEN: &str = "root@pam!pvediag=6f1e2d3c-0a0b-4c0d-8e0f-5ec7e75ec7e7";
pub const PVE_SECRET: &str = "6f1e2d3c-0a0b-4c0d-8e0f-5ec7e75ec7e7";
/// The execd tokens of the lab containers 202 (in the PVE `env`) and 203 (in `description`).
pub const TOKEN_202: &str = lab::SCENARIO_TOKEN;
pub const TOKEN_203: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
pub const NAME_203: &str = "pvelxc-1a2b3c4d";

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// 202 healthy (token), 203 with cmux-pty down (token).
pub fn fleet_lab_config() -> LabConfig {
    let c202 = lab::healthy_container(202, Some(TOKEN_202.into()));
    let mut c203 = lab::healthy_container(203, Some(TOKEN_203.into()));
    c203.services.retain(|s| s.kind != ServiceKind::Xterm);
    // The fake PVE API's config names it so (a later-generation instance name).
    c203.hostname = NAME_203.into();
    LabConfig {
        containers: vec![c202, c203],
        ..LabConfig::default()
    }
}

/// One container 202 (no token) whose xterm refuses until `after` past the lab's start.
pub fn recovering_lab_config(after: std::time::Duration) -> LabConfig {
    let mut c: ContainerSpec = lab::healthy_container(202, None);
    for s in c
        .services
        .iter_mut()
        .filter(|s| s.kind == ServiceKind::Xterm)
    {
        s.behaviour = Behaviour::RecoversAfter(after);
    }
    LabConfig {
        containers: vec![c],
        ..LabConfig::default()
    }
}

pub fn start_lab(rt: &tokio::runtime::Runtime, cfg: LabConfig) -> Lab {
    rt.block_on(Lab::start(cfg)).expect("lab starts")
}

/// The binary, environment cleared, colour off.
pub fn pvediag() -> Command {
    let mut c = Command::cargo_bin("pvediag").unwrap();
    // Tests never write a state directory (as root the default is /var/lib/pvediag).
    c.env_clear()
        .env("NO_COLOR", "1")
        .env("PVEDIAG_NO_STATE", "1");
    c
}

/// The options that point a diagnosis at the lab, colour off.
pub fn lab_args(lab: &Lab) -> Vec<String> {
    let mut a = lab_reach_args(lab);
    a.extend(["--color".into(), "never".into()]);
    a
}

/// Where the lab is: the options `serve` takes too (it has no output options).
pub fn lab_reach_args(lab: &Lab) -> Vec<String> {
    vec![
        "--domain".into(),
        lab.domain.clone(),
        "--connect-to".into(),
        lab.edge_addr.to_string(),
        "--cacert".into(),
        lab.ca_cert_path.display().to_string(),
    ]
}

/// How the fake PVE API behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PveMode {
    Normal,
    Status500,
    Malformed,
    /// Accepts, reads the request, never answers.
    Hang,
}

/// The containers the fake PVE node `pve1` lists.
pub fn fleet_listing() -> serde_json::Value {
    serde_json::json!([
        {"vmid": 203, "name": NAME_203, "status": "running", "type": "lxc"},
        {"vmid": 202, "name": "cmux-202", "status": "running", "type": "lxc"},
        {"vmid": 204, "name": "cmux-204", "status": "stopped", "type": "lxc"},
        {"vmid": 9000, "name": "cmux-template", "status": "stopped", "template": 1},
        {"vmid": 300, "name": "postgres", "status": "running"},
    ])
}

fn route(path: &str) -> Option<serde_json::Value> {
    use serde_json::json;
    Some(match path {
        "/api2/json/nodes" => json!([{"node": "pve1", "status": "online"}, {"node": "pve2"}]),
        "/api2/json/nodes/pve1/lxc" => fleet_listing(),
        "/api2/json/nodes/pve1/lxc/202/config" => json!({
            "hostname": "cmux-202",
            "env": format!("HOME=/root\0CMUX_EXECD_AUTH_TOKEN={TOKEN_202}\0LANG=C.UTF-8"),
        }),
        "/api2/json/nodes/pve1/lxc/203/config" => json!({
            "hostname": NAME_203,
            "description": format!("cmux sandbox\ncmux-execd-auth-token={TOKEN_203}\n"),
        }),
        p if p.starts_with("/api2/json/nodes/pve1/lxc/") && p.ends_with("/config") => json!({}),
        _ => return None,
    })
}

fn add_close(mut bytes: Vec<u8>) -> Vec<u8> {
    let i = bytes.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    bytes.splice(i..i, b"Connection: close\r\n".iter().copied());
    bytes
}

/// Starts the fake PVE API on 127.0.0.1; returns its base URL.
pub fn start_pve(rt: &tokio::runtime::Runtime, mode: PveMode) -> String {
    start_pve_counted(rt, mode).0
}

/// [`start_pve`], and the number of requests it has read (whatever their answer).
pub fn start_pve_counted(
    rt: &tokio::runtime::Runtime,
    mode: PveMode,
) -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let counter = count.clone();
    let listener = rt.block_on(TcpListener::bind("127.0.0.1:0")).expect("bind");
    let addr: SocketAddr = listener.local_addr().unwrap();
    rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut s = BufReader::new(stream);
                let Ok(Some(req)) = lab::http::read_request(&mut s, 0).await else {
                    return;
                };
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let expected = format!("PVEAPIToken={PVE_TOKEN}");
                let bytes = if req.header("authorization") != Some(expected.as_str()) {
                    lab::http::response_bytes(401, &[("Content-Type", "application/json")], b"")
                } else {
                    match mode {
                        PveMode::Hang => {
                            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
                            return;
                        }
                        PveMode::Status500 => lab::http::response_bytes(
                            500,
                            &[("Content-Type", "application/json")],
                            b"{\"data\":null}",
                        ),
                        PveMode::Malformed => lab::http::response_bytes(
                            200,
                            &[("Content-Type", "text/html")],
                            b"<html>login</html>",
                        ),
                        PveMode::Normal => match route(req.path()) {
                            Some(data) => {
                                let body = serde_json::to_vec(&serde_json::json!({ "data": data }))
                                    .unwrap();
                                lab::http::response_bytes(
                                    200,
                                    &[("Content-Type", "application/json;charset=UTF-8")],
                                    &body,
                                )
                            }
                            None => lab::http::response_bytes(
                                404,
                                &[("Content-Type", "application/json")],
                                b"{\"data\":null}",
                            ),
                        },
                    }
                };
                // One request per connection, and the client is told so (else it may reuse a
                // connection this server is closing).
                let bytes = add_close(bytes);
                let _ = lab::http::send(&mut s, &bytes).await;
            });
        }
    });
    (format!("http://{addr}"), count)
}

/// The binary against the lab, with the fake PVE API configured (token in the environment only).
pub fn pvediag_pve(lab: &Lab, pve_url: &str) -> Command {
    let mut c = pvediag();
    c.env("PVE_API_URL", pve_url)
        .env("PVE_API_TOKEN", PVE_TOKEN)
        .args(lab_args(lab));
    c
}

/// Asserts that no secret appears in the text.
pub fn assert_no_secret(text: &str) {
    for s in [PVE_SECRET, TOKEN_202, TOKEN_203] {
        assert!(
            !text.contains(s),
            "a secret leaked into the output:\n{text}"
        );
    }
}

/// One sample of the exposition format.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

fn valid_metric_name(n: &str) -> bool {
    let mut it = n.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(n: &str) -> bool {
    let mut it = n.chars();
    matches!(it.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && it.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A strict parser of the Prometheus text format 0.0.4: HELP/TYPE before samples, families
/// contiguous, valid names, escaped label values, no timestamps, no duplicate series.
pub fn parse_prometheus(text: &str) -> Result<Vec<Sample>, String> {
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut helps: BTreeMap<String, String> = BTreeMap::new();
    let mut done: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut samples = Vec::new();
    let mut seen = std::collections::HashSet::new();
    if !text.ends_with('\n') {
        return Err("the text does not end with a newline".into());
    }
    for (i, line) in text.lines().enumerate() {
        let err = |m: &str| format!("line {}: {m}: {line:?}", i + 1);
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kw = parts.next().unwrap_or("");
            let name = parts
                .next()
                .ok_or_else(|| err("no metric name"))?
                .to_string();
            let arg = parts.next().unwrap_or("").to_string();
            if !valid_metric_name(&name) {
                return Err(err("bad metric name"));
            }
            if current.as_deref() != Some(name.as_str()) {
                if done.contains(&name) {
                    return Err(err("family is not contiguous"));
                }
                if let Some(c) = current.take() {
                    done.push(c);
                }
                current = Some(name.clone());
            }
            match kw {
                "HELP" => {
                    if helps.insert(name, arg).is_some() {
                        return Err(err("second HELP"));
                    }
                }
                "TYPE" => {
                    if !matches!(
                        arg.as_str(),
                        "counter" | "gauge" | "summary" | "histogram" | "untyped"
                    ) {
                        return Err(err("bad TYPE"));
                    }
                    if types.insert(name, arg).is_some() {
                        return Err(err("second TYPE"));
                    }
                }
                _ => return Err(err("unknown comment keyword")),
            }
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        // name{labels} value
        let name_end = line.find(['{', ' ']).ok_or_else(|| err("no value"))?;
        let name = &line[..name_end];
        if !valid_metric_name(name) {
            return Err(err("bad metric name"));
        }
        let family = ["_sum", "_count", "_bucket"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s).filter(|b| {
                    types
                        .get(*b)
                        .is_some_and(|t| t == "summary" || t == "histogram")
                })
            })
            .unwrap_or(name);
        if current.as_deref() != Some(family) {
            return Err(err("sample outside its family's HELP/TYPE block"));
        }
        let mut labels = BTreeMap::new();
        let mut rest = &line[name_end..];
        if let Some(r) = rest.strip_prefix('{') {
            let mut chars = r.char_indices().peekable();
            let end;
            loop {
                // label name
                let start = match chars.peek() {
                    Some((_, '}')) => {
                        end = Some(chars.next().unwrap().0 + 1);
                        break;
                    }
                    Some((i, _)) => *i,
                    None => return Err(err("unterminated labels")),
                };
                let mut eq = None;
                for (i, c) in chars.by_ref() {
                    if c == '=' {
                        eq = Some(i);
                        break;
                    }
                }
                let eq = eq.ok_or_else(|| err("label without ="))?;
                let lname = &r[start..eq];
                if !valid_label_name(lname) {
                    return Err(err("bad label name"));
                }
                if chars.next().map(|(_, c)| c) != Some('"') {
                    return Err(err("label value not quoted"));
                }
                let mut value = String::new();
                loop {
                    match chars.next() {
                        Some((_, '\\')) => match chars.next() {
                            Some((_, '\\')) => value.push('\\'),
                            Some((_, '"')) => value.push('"'),
                            Some((_, 'n')) => value.push('\n'),
                            _ => return Err(err("bad escape in label value")),
                        },
                        Some((_, '"')) => break,
                        Some((_, '\n')) | None => return Err(err("unterminated label value")),
                        Some((_, c)) => value.push(c),
                    }
                }
                if labels.insert(lname.to_string(), value).is_some() {
                    return Err(err("duplicate label"));
                }
                match chars.next() {
                    Some((_, ',')) => continue,
                    Some((i, '}')) => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => return Err(err("expected , or }")),
                }
            }
            rest = &r[end.unwrap()..];
        }
        let rest = rest
            .strip_prefix(' ')
            .ok_or_else(|| err("no space before the value"))?;
        let fields: Vec<&str> = rest.split(' ').collect();
        if fields.len() != 1 {
            return Err(err("a timestamp or trailing text after the value"));
        }
        let value: f64 = match fields[0] {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            "NaN" => f64::NAN,
            v => v.parse().map_err(|_| err("value is not a number"))?,
        };
        let key = format!("{name}{labels:?}");
        if !seen.insert(key) {
            return Err(err("duplicate series"));
        }
        samples.push(Sample {
            name: name.to_string(),
            labels,
            value,
        });
    }
    for s in &samples {
        let fam = s.name.trim_end_matches("_sum").trim_end_matches("_count");
        if !types.contains_key(&s.name) && !types.contains_key(fam) {
            return Err(format!("{} has no TYPE", s.name));
        }
    }
    Ok(samples)
}

/// The samples of one metric whose labels include all of `want`.
pub fn find<'a>(samples: &'a [Sample], name: &str, want: &[(&str, &str)]) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && want
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .collect()
}

#[test]
fn the_parser_rejects_broken_expositions() {
    let good = "# HELP a_b x\n# TYPE a_b gauge\na_b{x=\"q\\\"\\n\\\\\"} 1\na_b 2.5\n";
    let s = parse_prometheus(good).unwrap();
    assert_eq!(s[0].labels["x"], "q\"\n\\");
    for bad in [
        "a_b 1\n",                                        // no TYPE
        "# TYPE a_b gauge\na_b 1 1700000000\n",           // timestamp
        "# TYPE a_b gauge\na_b{x=\"1} 1\n",               // unterminated
        "# TYPE a_b gauge\na_b{x=\"a\\q\"} 1\n",          // bad escape
        "# TYPE a_b gauge\na_b{1x=\"a\"} 1\n",            // bad label name
        "# TYPE a_b gauge\na_b 1\na_b 1\n",               // duplicate
        "# TYPE a_b gauge\n# TYPE c gauge\nc 1\na_b 1\n", // not contiguous
        "# TYPE a_b gauge\na_b one\n",                    // not a number
        "# TYPE a_b gauge\na_b 1",                        // no final newline
    ] {
        assert!(parse_prometheus(bad).is_err(), "{bad:?}");
    }
}
