//! Lab tests: every answer of the chain, checked with reqwest over 127.0.0.1 only.

use std::time::{Duration, Instant};

use super::*;
use crate::catalog::Catalog;

fn client(lab: &Lab) -> reqwest::Client {
    lab.client_builder()
        .unwrap()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A plain-HTTP client for the host proxy and container ports (no env proxies).
fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn start(name: &str) -> (Lab, Scenario) {
    Lab::start_scenario(name).await.unwrap()
}

fn hdr(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap_or("").to_string())
}

fn is_cf_ray(v: &str) -> bool {
    regex::Regex::new(r"^[0-9a-f]{16}-LAB$")
        .unwrap()
        .is_match(v)
}

fn curl_available() -> bool {
    let ok = std::process::Command::new("sh")
        .args(["-c", "command -v curl"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "!!!!! SKIPPED: curl is not installed; the lab's .curlrc mapping is not tested !!!!!"
        );
    }
    ok
}

/// Parses an execd JSON-lines body into events.
fn events(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l:?}: {e}")))
        .collect()
}

fn stdout_lines(ev: &[serde_json::Value]) -> Vec<String> {
    ev.iter()
        .filter(|e| e["type"] == "stdout")
        .map(|e| e["data"].as_str().unwrap().to_string())
        .collect()
}

fn exit_code(ev: &[serde_json::Value]) -> i64 {
    let exits: Vec<_> = ev.iter().filter(|e| e["type"] == "exit").collect();
    assert_eq!(exits.len(), 1, "exactly one exit event: {ev:?}");
    assert_eq!(ev.last().unwrap()["type"], "exit", "exit is last: {ev:?}");
    exits[0]["code"].as_i64().unwrap()
}

async fn exec(lab: &Lab, token: Option<&str>, body: serde_json::Value) -> (u16, String) {
    let mut rb = client(lab)
        .post(lab.url("exec", VMID, "/exec"))
        .header("content-type", "application/json")
        .body(body.to_string());
    if let Some(t) = token {
        rb = rb.bearer_auth(t);
    }
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.text().await.unwrap())
}

#[tokio::test]
async fn lab_healthy_every_routed_service_passes_its_catalog_check_through_the_edge() {
    let (lab, _) = start("healthy").await;
    let c = client(&lab);
    let catalog = Catalog::embedded();
    for svc in catalog.services.iter().filter(|s| s.routed) {
        let mut rb = c.request(
            svc.probe.method.parse().unwrap(),
            lab.url(&svc.name, VMID, &svc.probe.path),
        );
        for (k, v) in &svc.probe.headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        let status = r.status().as_u16();
        assert!(
            svc.healthy.status_ok(status),
            "{}: status {status}",
            svc.name
        );
        assert_eq!(
            hdr(&r, "server").as_deref(),
            Some("cloudflare"),
            "{}",
            svc.name
        );
        assert!(is_cf_ray(&hdr(&r, "cf-ray").unwrap()), "{}", svc.name);
        assert_eq!(hdr(&r, "cf-cache-status").as_deref(), Some("DYNAMIC"));
        for h in &svc.healthy.headers {
            assert!(
                r.headers().contains_key(h.as_str()),
                "{}: header {h}",
                svc.name
            );
        }
        let ct = hdr(&r, "content-type");
        let body = r.text().await.unwrap();
        svc.healthy
            .fingerprint
            .check(ct.as_deref(), &body)
            .unwrap_or_else(|e| panic!("{}: {e}; body {body:?}", svc.name));
    }
    // xterm in detail.
    let r = c
        .get(lab.url("xterm", VMID, "/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(r.text().await.unwrap(), "{\"sessions\":[]}");
    lab.shutdown().await;
}

#[tokio::test]
async fn lab_every_catalog_service_is_healthy_inside_the_container() {
    let (lab, _) = start("healthy").await;
    let c = plain_client();
    for svc in &Catalog::embedded().services {
        let addr = lab.container_addr(VMID, svc.port).unwrap();
        let mut rb = c.request(
            svc.probe.method.parse().unwrap(),
            format!("http://{addr}{}", svc.probe.path),
        );
        for (k, v) in &svc.probe.headers {
            rb = rb.header(k, v);
        }
        let r = rb.send().await.unwrap();
        assert!(svc.healthy.status_ok(r.status().as_u16()), "{}", svc.name);
        let ct = hdr(&r, "content-type");
        let body = r.text().await.unwrap();
        svc.healthy
            .fingerprint
            .check(ct.as_deref(), &body)
            .unwrap_or_else(|e| panic!("{}: {e}; body {body:?}", svc.name));
    }
    // cmux-proxy without its header; unknown paths.
    let proxy = lab.container_addr(VMID, 39379).unwrap();
    let r = c
        .get(format!("http://{proxy}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.text().await.unwrap(),
        "missing required header: X-Cmux-Port-Internal\n"
    );
    let vscode = lab.container_addr(VMID, 39378).unwrap();
    let r = c.get(format!("http://{vscode}/nope")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let exec = lab.container_addr(VMID, 39375).unwrap();
    let r = c.get(format!("http://{exec}/health")).send().await.unwrap();
    assert_eq!(r.status(), 404, "execd has no /health");
    let preview = lab.container_addr(VMID, 5173).unwrap();
    let r = c
        .get(format!("http://{preview}/any/path"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/@vite/client"));
    // A cmux port nothing listens on refuses.
    let closed = lab.container_addr(VMID, 39376).unwrap();
    assert!(tokio::net::TcpStream::connect(closed).await.is_err());
    assert!(lab.container_addr(VMID, 40000).is_none());
    assert!(lab.container_addr(999, 39375).is_none());
}

#[tokio::test]
async fn lab_tunnel_down_answers_530_error_1033() {
    let (lab, _) = start("tunnel-down").await;
    let c = client(&lab);
    for svc in ["xterm", "exec", "nothing"] {
        let r = c.get(lab.url(svc, VMID, "/")).send().await.unwrap();
        assert_eq!(r.status(), 530);
        assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));
        assert_eq!(hdr(&r, "retry-after").as_deref(), Some("120"));
        assert_eq!(
            hdr(&r, "content-type").as_deref(),
            Some("text/plain; charset=UTF-8")
        );
        assert!(is_cf_ray(&hdr(&r, "cf-ray").unwrap()));
        assert_eq!(r.text().await.unwrap(), "error code: 1033");
    }
    // Browsers get an HTML page, API clients RFC 9457-style JSON with error_code.
    let r = c
        .get(lab.url("xterm", VMID, "/"))
        .header("accept", "text/html,application/xhtml+xml")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 530);
    assert!(r.text().await.unwrap().contains("Cloudflare Tunnel error"));
    let r = c
        .get(lab.url("xterm", VMID, "/"))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 530);
    let v: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(v["error_code"], 1033);
}

#[tokio::test]
async fn lab_seed_xterm_is_a_cloudflare_502_and_an_empty_caddy_502() {
    let (lab, sc) = start("seed").await;
    assert_eq!(sc.name, "seed");
    let r = client(&lab)
        .get(lab.url("xterm", VMID, "/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));
    assert_eq!(hdr(&r, "cf-error-type").as_deref(), Some("origin"));
    assert!(is_cf_ray(&hdr(&r, "cf-ray").unwrap()));
    assert_eq!(r.text().await.unwrap(), "error code: 502");

    // Caddy directly: 502, empty body, Server: Caddy.
    let c = plain_client();
    let caddy = format!("http://{}/sessions", lab.caddy_addr);
    let r = c
        .get(&caddy)
        .header("host", "xterm-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(hdr(&r, "server").as_deref(), Some("Caddy"));
    assert_eq!(r.text().await.unwrap(), "");
    // A host no route matches: Caddy's empty 200.
    let r = c
        .get(&caddy)
        .header("host", "nothing-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "server").as_deref(), Some("Caddy"));
    assert_eq!(r.text().await.unwrap(), "");
    // Through Caddy, a routed service answers with Caddy's Server header added.
    let r = c
        .get(format!("http://{}/version", lab.caddy_addr))
        .header("host", "vscode-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "server").as_deref(), Some("Caddy"));
    assert_eq!(r.text().await.unwrap(), container::VSCODE_COMMIT);
    // Unknown VMID: the .lan name does not resolve.
    let r = c
        .get(&caddy)
        .header("host", "vscode-999.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.text().await.unwrap(), "");

    // Inside the container cmux-pty is healthy on 39383.
    let pty = lab.container_addr(VMID, 39383).unwrap();
    let r = c
        .get(format!("http://{pty}/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "access-control-allow-origin").as_deref(), Some("*"));
}

#[tokio::test]
async fn lab_caddyfile_is_written_in_the_seed_layout() {
    let (lab, _) = start("seed").await;
    let text = std::fs::read_to_string(&lab.caddyfile_path).unwrap();
    assert!(
        text.contains("reverse_proxy cmux-{re.vmid.1}.lan:39376"),
        "{text}"
    );
    assert!(text.contains("@xterm header_regexp vmid Host ^xterm-(\\d+)\\."));
    assert!(text.starts_with(":8080 {\n"));

    // The healthy route table is the seed document's Caddyfile, byte for byte.
    let expected = crate::caddy::caddyfile::tests::SEED;
    assert_eq!(caddy::caddyfile(&seed_routes()), expected);
}

#[tokio::test]
async fn lab_exec_streams_json_lines_through_the_edge() {
    let (lab, sc) = start("healthy").await;
    let tok = sc.client_token.as_deref();
    let (status, body) = exec(&lab, tok, serde_json::json!({"command": "echo ready"})).await;
    assert_eq!(status, 200, "{body}");
    let ev = events(&body);
    assert_eq!(stdout_lines(&ev), vec!["ready"]);
    assert_eq!(exit_code(&ev), 0);

    // Content type, and the stream flows line by line through edge and Caddy.
    let started = Instant::now();
    let mut r = client(&lab)
        .post(lab.url("exec", VMID, "/exec"))
        .bearer_auth(SCENARIO_TOKEN)
        .header("content-type", "application/json")
        .body(r#"{"command":"echo one; sleep 3; echo two"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        hdr(&r, "content-type").as_deref(),
        Some("application/jsonlines")
    );
    assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));
    let first = r.chunk().await.unwrap().unwrap();
    assert!(
        String::from_utf8_lossy(&first).contains("\"one\""),
        "{first:?}"
    );
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "first line was buffered: {:?}",
        started.elapsed()
    );
    let mut rest = Vec::new();
    while let Some(c) = r.chunk().await.unwrap() {
        rest.extend_from_slice(&c);
    }
    let ev = events(&String::from_utf8_lossy(&rest));
    assert_eq!(stdout_lines(&ev), vec!["two"]);
    assert_eq!(exit_code(&ev), 0);
}

#[tokio::test]
async fn lab_exec_output_rules() {
    let (lab, _) = start("healthy").await;
    let t = Some(SCENARIO_TOKEN);
    // Lines split, \r stripped, empty lines dropped, stderr separate, exit code kept.
    let (s, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "printf 'a\\n\\n\\r\\nb\\r\\n'; echo oops >&2; exit 3"}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events(&body);
    assert_eq!(stdout_lines(&ev), vec!["a", "b"]);
    assert!(ev
        .iter()
        .any(|e| e["type"] == "stderr" && e["data"] == "oops"));
    assert_eq!(exit_code(&ev), 3);
    // Go's HTML escaping.
    let (_, body) = exec(&lab, t, serde_json::json!({"command": "echo '<a&b>'"})).await;
    assert!(
        body.contains(r#"{"type":"stdout","data":"\u003ca\u0026b\u003e"}"#),
        "{body}"
    );
    // Timeout: error event, exit 124.
    let (_, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "exec sleep 5", "timeout_ms": 300}),
    )
    .await;
    let ev = events(&body);
    assert!(
        ev.iter()
            .any(|e| e["type"] == "error" && e["message"] == "timeout after 300ms"),
        "{body}"
    );
    assert_eq!(exit_code(&ev), 124);
    // A line over 1 MiB: an error event, the stream goes on.
    let (_, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "head -c 1100000 /dev/zero | tr '\\0' a; echo; echo after"}),
    )
    .await;
    let ev = events(&body);
    assert!(ev.iter().any(|e| e["type"] == "error"), "no error event");
    assert_eq!(stdout_lines(&ev), vec!["after"]);
    assert_eq!(exit_code(&ev), 0);
    // Killed by a signal: -1.
    let (_, body) = exec(&lab, t, serde_json::json!({"command": "kill -9 $$"})).await;
    assert_eq!(exit_code(&events(&body)), -1);
    // Request errors.
    let (s, body) = exec(&lab, t, serde_json::json!({"command": ""})).await;
    assert_eq!((s, body.as_str()), (400, "Command is required\n"));
    let (s, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "true", "timeout_ms": -1}),
    )
    .await;
    assert_eq!(
        (s, body.as_str()),
        (400, "timeout_ms must be non-negative\n")
    );
    let r = client(&lab)
        .post(lab.url("exec", VMID, "/exec"))
        .bearer_auth(SCENARIO_TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().starts_with("Invalid JSON body: "));
    let r = client(&lab)
        .post(lab.url("exec", VMID, "/exec"))
        .bearer_auth(SCENARIO_TOKEN)
        .header("content-type", "text/plain")
        .body(r#"{"command":"true"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let big = format!(
        r#"{{"command":"true","pad":"{}"}}"#,
        "x".repeat(container::EXEC_MAX_BODY)
    );
    let r = client(&lab)
        .post(lab.url("exec", VMID, "/exec"))
        .bearer_auth(SCENARIO_TOKEN)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn lab_exec_auth() {
    let (lab, sc) = start("exec-unauthorized").await;
    let wrong = sc.client_token.clone().unwrap();
    assert_ne!(wrong, SCENARIO_TOKEN);
    let c = client(&lab);
    let url = lab.url("exec", VMID, "/exec");
    let unauthorized = |s: u16, body: &str, ct: Option<String>| {
        assert_eq!(s, 401);
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(body).unwrap(),
            serde_json::json!({"error": "Unauthorized"})
        );
        assert!(ct.unwrap().starts_with("application/json"));
    };
    // Wrong token, no token; auth runs before the method check.
    let (s, body) = exec(
        &lab,
        Some(&wrong),
        serde_json::json!({"command": "echo ready"}),
    )
    .await;
    unauthorized(s, &body, Some("application/json".into()));
    for rb in [
        c.post(&url)
            .header("content-type", "application/json")
            .body("{}"),
        c.get(&url),
        c.get(&url).bearer_auth(&wrong),
    ] {
        let r = rb.send().await.unwrap();
        let ct = hdr(&r, "content-type");
        let s = r.status().as_u16();
        unauthorized(s, &r.text().await.unwrap(), ct);
    }
    // /healthz needs no token.
    let r = c
        .get(lab.url("exec", VMID, "/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        (r.status().as_u16(), r.text().await.unwrap()),
        (200, "ok".into())
    );
    // Every way of passing the right token: GET /exec then answers 405.
    let raw = c
        .get(&url)
        .header("authorization", SCENARIO_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), 405);
    let bearer = c
        .get(&url)
        .bearer_auth(SCENARIO_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(bearer.status(), 405);
    let query = c
        .get(format!("{url}?token={SCENARIO_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(query.status(), 405);
    let cookie = c
        .get(&url)
        .header("cookie", format!("x=1; _cmux_auth={SCENARIO_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(cookie.status(), 405);
    let (s, body) = exec(
        &lab,
        Some(SCENARIO_TOKEN),
        serde_json::json!({"command": "echo ready"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(stdout_lines(&events(&body)), vec!["ready"]);

    // Auth off: GET /exec without a token is 405.
    let lab2 = Lab::start(LabConfig::default()).await.unwrap();
    let r = client(&lab2)
        .get(lab2.url("exec", VMID, "/exec"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

#[tokio::test]
async fn lab_curlrc_maps_the_container_loopback() {
    let (lab, _) = start("seed").await;
    let dir = lab.container_dir(VMID).unwrap();
    let rc = std::fs::read_to_string(dir.join(".curlrc")).unwrap();
    let pty = lab.container_addr(VMID, 39383).unwrap();
    assert!(rc.contains(&format!(
        "connect-to = \"127.0.0.1:39383:127.0.0.1:{}\"",
        pty.port()
    )));
    for p in container::CONTAINER_PORTS {
        assert!(rc.contains(&format!("\"127.0.0.1:{p}:")), "port {p}");
    }
    if !curl_available() {
        return;
    }
    let t = Some(SCENARIO_TOKEN);
    let (s, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "curl -s http://127.0.0.1:39383/sessions"}),
    )
    .await;
    assert_eq!(s, 200);
    let ev = events(&body);
    assert_eq!(stdout_lines(&ev), vec![r#"{"sessions":[]}"#], "{body}");
    assert_eq!(exit_code(&ev), 0);
    // The seed's wrong port: nothing listens inside either -> curl exit 7.
    let (_, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "curl -s -o /dev/null http://127.0.0.1:39376/sessions"}),
    )
    .await;
    assert_eq!(exit_code(&events(&body)), 7, "{body}");
    // -i shows the headers the seed document saw.
    let (_, body) = exec(
        &lab,
        t,
        serde_json::json!({"command": "curl -s -i http://127.0.0.1:39383/sessions"}),
    )
    .await;
    let lines = stdout_lines(&events(&body));
    assert!(
        lines.iter().any(|l| l == "access-control-allow-origin: *"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn lab_failure_scenarios_through_the_edge() {
    // (scenario, service, path, expected status, check)
    let cases: &[(&str, &str, &str, u16)] = &[
        ("caddy-port", "vnc", "/vnc.html", 502),
        ("caddy-port", "xterm", "/sessions", 200),
        ("service-down", "vscode", "/version", 502),
        ("service-down", "xterm", "/sessions", 200),
        ("container-down", "exec", "/healthz", 502),
        ("caddy-down", "xterm", "/sessions", 502),
        ("caddy-down", "exec", "/healthz", 502),
        ("preview-off", "preview", "/", 502),
        ("preview-off", "vscode", "/version", 200),
        ("cors-missing", "xterm", "/sessions", 200),
        ("wrong-service", "xterm", "/sessions", 200),
    ];
    for name in SCENARIOS {
        assert!(scenario(name).is_some(), "{name}");
    }
    assert!(scenario("nope").is_none());
    let mut current: Option<(String, Lab)> = None;
    for (name, svc, path, want) in cases {
        if current.as_ref().map(|(n, _)| n.as_str()) != Some(*name) {
            current = Some((name.to_string(), start(name).await.0));
        }
        let lab = &current.as_ref().unwrap().1;
        let r = client(lab)
            .get(lab.url(svc, VMID, path))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), *want, "{name} {svc}");
        assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));
        let acao = hdr(&r, "access-control-allow-origin");
        let ct = hdr(&r, "content-type");
        let body = r.text().await.unwrap();
        if *want == 502 {
            assert_eq!(body, "error code: 502", "{name} {svc}");
        }
        match *name {
            "cors-missing" => {
                assert_eq!(acao, None);
                assert_eq!(body, "{\"sessions\":[]}");
            }
            "wrong-service" => {
                // A healthy-looking 200 from the wrong service.
                assert!(ct.unwrap().starts_with("text/html"));
                assert!(body.contains("<div id=\"root\"></div>"));
                let xterm = Catalog::embedded();
                let xterm = xterm.get("xterm").unwrap();
                assert!(xterm
                    .healthy
                    .fingerprint
                    .check(Some("text/html"), &body)
                    .is_err());
            }
            _ => {}
        }
    }
    // Caddy down: nothing listens on caddy_addr.
    let lab = Lab::start(scenario("caddy-down").unwrap().config)
        .await
        .unwrap();
    assert!(tokio::net::TcpStream::connect(lab.caddy_addr)
        .await
        .is_err());
    // Container down: Caddy's own empty 502.
    let lab = Lab::start(scenario("container-down").unwrap().config)
        .await
        .unwrap();
    let r = plain_client()
        .get(format!("http://{}/healthz", lab.caddy_addr))
        .header("host", "exec-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(hdr(&r, "server").as_deref(), Some("Caddy"));
    assert_eq!(r.text().await.unwrap(), "");
    assert!(lab.container_addr(VMID, 39375).is_none());
}

#[tokio::test]
async fn lab_edge_host_outside_the_zone_is_cloudflareds_empty_404() {
    let lab = Lab::start(LabConfig::default()).await.unwrap();
    let r = client(&lab)
        .get(lab.url("xterm", VMID, "/sessions"))
        .header("host", "other.invalid")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));
    assert!(is_cf_ray(&hdr(&r, "cf-ray").unwrap()));
    assert_eq!(r.text().await.unwrap(), "");
    // Names outside the domain do not resolve at all.
    let err = client(&lab)
        .get(format!("https://other.invalid:{}/", lab.edge_addr.port()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.to_string().contains("dns"), "{err}");
}

#[tokio::test]
async fn lab_behaviours_error500_hang_and_recovery() {
    let mut ct = healthy_container(VMID, None);
    for s in ct.services.iter_mut() {
        s.behaviour = match s.kind {
            ServiceKind::Vscode => Behaviour::Error500,
            ServiceKind::Xterm => Behaviour::Hang,
            ServiceKind::Vnc => Behaviour::RecoversAfter(Duration::from_millis(800)),
            _ => Behaviour::Healthy,
        };
    }
    let lab = Lab::start(LabConfig {
        containers: vec![ct],
        delays: Delays {
            edge_ms: 20,
            caddy_ms: 20,
            exec_ms: 0,
            service_ms: 10,
        },
        ..LabConfig::default()
    })
    .await
    .unwrap();
    let c = client(&lab);
    // Not yet listening -> refused -> Caddy 502 -> Cloudflare 502.
    let vnc = lab.container_addr(VMID, 39380).unwrap();
    assert!(tokio::net::TcpStream::connect(vnc).await.is_err());
    let r = c
        .get(lab.url("vnc", VMID, "/vnc.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);

    let r = c
        .get(lab.url("vscode", VMID, "/version"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    assert_eq!(hdr(&r, "server").as_deref(), Some("cloudflare"));

    // Hang: Caddy gives up after 10 s with 504, which Cloudflare replaces with its own 504.
    let started = Instant::now();
    let r = c
        .get(lab.url("xterm", VMID, "/sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert_eq!(r.text().await.unwrap(), "error code: 504");
    assert!(started.elapsed() >= caddy::UPSTREAM_TIMEOUT);

    // By now vnc has recovered, on the same address.
    assert_eq!(lab.container_addr(VMID, 39380), Some(vnc));
    let r = c
        .get(lab.url("vnc", VMID, "/vnc.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("noVNC"));
}

#[tokio::test]
async fn lab_shutdown_stops_everything_and_removes_the_dir() {
    let lab = Lab::start(LabConfig::default()).await.unwrap();
    let dir = lab.dir.clone();
    let edge = lab.edge_addr;
    let exec = lab.container_addr(VMID, 39375).unwrap();
    assert!(dir.join("lab-ca.pem").exists());
    lab.shutdown().await;
    assert!(!dir.exists());
    assert!(tokio::net::TcpStream::connect(edge).await.is_err());
    assert!(tokio::net::TcpStream::connect(exec).await.is_err());
}

#[tokio::test]
async fn lab_later_layout_answers_like_the_generic_caddy_rule() {
    let (lab, _) = start("later-layout").await;
    let c = plain_client();
    let caddy = format!("http://{}", lab.caddy_addr);
    // The port comes from the hostname; Caddy replaces the upstream's CORS headers with its own.
    let r = c
        .get(format!("{caddy}/sessions"))
        .header("host", "port-39383-cmux-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(hdr(&r, "server").as_deref(), Some("Caddy"));
    assert_eq!(hdr(&r, "access-control-allow-origin").as_deref(), Some("*"));
    assert_eq!(
        hdr(&r, "access-control-expose-headers").as_deref(),
        Some("*")
    );
    assert_eq!(
        r.headers()
            .get_all("access-control-allow-origin")
            .iter()
            .count(),
        1
    );
    assert_eq!(r.text().await.unwrap(), r#"{"sessions":[]}"#);
    // OPTIONS is answered by Caddy itself, for any host.
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{caddy}/anything"))
        .header("host", "port-1-nowhere.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(hdr(&r, "access-control-max-age").as_deref(), Some("86400"));
    // A host no rule matches: the catch-all 404.
    let r = c
        .get(format!("{caddy}/"))
        .header("host", "xterm-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(r
        .text()
        .await
        .unwrap()
        .starts_with("cmux sandbox not found"));
    // A closed port through the generic rule: Caddy's empty 502.
    let r = c
        .get(format!("{caddy}/"))
        .header("host", "port-39382-cmux-202.example.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.text().await.unwrap(), "");
    // The Caddyfile is the later layout's, and pvediag's reader sees the generic rule.
    let text = std::fs::read_to_string(&lab.caddyfile_path).unwrap();
    assert!(text.contains("reverse_proxy {re.service.2}.lan:{re.service.1}"));
    let t = crate::caddy::caddyfile::parse("Caddyfile.cmux", &text);
    let r = t.resolve("port-39383-cmux-202.example.test").unwrap();
    assert_eq!(
        (r.upstream_host.as_str(), r.port),
        ("cmux-202.lan", Some(39383))
    );
}
