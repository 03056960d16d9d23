//! End to end against the real `caddy` binary (Debian's package) with the seed's Caddyfile: the lab's
//! edge in front, the real Caddy as the origin, and the lab's container behind it with its services on
//! their real ports at a loopback address of its own. Caddy resolves `cmux-202.lan` through a private
//! `/etc/hosts` bind-mounted in a mount namespace of its own (`unshare -m`), so the machine's files are
//! untouched and no name ever reaches a real resolver.
//!
//! Without caddy (or root, or unshare) these tests say loudly that they were skipped; under CI (env
//! `CI` set) that is a failure.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pvediag::lab::{self, Lab, LabOptions};
use serde_json::Value;

const SEED: &str = include_str!("../fixtures/Caddyfile.seed");

fn have(cmd: &str, arg: &str) -> bool {
    Command::new(cmd)
        .arg(arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Whether the real-Caddy tests can run here; panics under CI when they cannot.
fn real_caddy_available() -> bool {
    let missing: Vec<&str> = [
        (!have("caddy", "version")).then_some("the caddy binary (apt-get install caddy)"),
        (!is_root()).then_some("root (for a private /etc/hosts in a mount namespace)"),
        (!have("unshare", "--version")).then_some("unshare (util-linux)"),
        (!have("curl", "--version")).then_some("curl"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!(
            "real Caddy tests cannot run under CI: missing {}",
            missing.join(", ")
        );
    }
    eprintln!(
        "\n*** SKIPPED: real Caddy end-to-end tests: missing {} ***\n",
        missing.join(", ")
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A loopback address of the container's own, unlikely to collide with another test run.
fn container_ip() -> Ipv4Addr {
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    Ipv4Addr::new(127, 78, (pid % 250 + 2) as u8, (nanos % 250 + 2) as u8)
}

struct RealCaddy {
    child: Child,
    dir: PathBuf,
    listen: u16,
    admin: u16,
}

impl Drop for RealCaddy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RealCaddy {
    /// The seed Caddyfile with a global options block (admin, no automatic HTTPS, loopback only)
    /// and its site on `listen` instead of :8080. Returns the text and the line of the xterm route.
    fn caddyfile(&self, xterm_port: u16) -> (String, usize) {
        let header = format!(
            // The host's own view of the admin API is 127.0.0.1:2019 (mapped to this port by the
            // host's curl config in the test): allow that Host too.
            "{{\n\tadmin 127.0.0.1:{a} {{\n\t\torigins 127.0.0.1:{a} 127.0.0.1:2019\n\t}}\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n",
            a = self.admin
        );
        let body = SEED
            .replace(":8080 {", &format!(":{} {{", self.listen))
            .replace(
                "cmux-{re.vmid.1}.lan:39383",
                &format!("cmux-{{re.vmid.1}}.lan:{xterm_port}"),
            );
        let text = format!("{header}{body}");
        let line = text
            .lines()
            .position(|l| l.contains(&format!(".lan:{xterm_port}")) && l.contains("reverse_proxy"))
            .unwrap()
            + 1;
        (text, line)
    }

    fn write(&self, xterm_port: u16) -> (PathBuf, usize) {
        let (text, line) = self.caddyfile(xterm_port);
        let p = self.dir.join("Caddyfile.cmux");
        std::fs::write(&p, text).unwrap();
        (p, line)
    }

    fn start(dir: &Path, ct_ip: Ipv4Addr) -> RealCaddy {
        let mut rc = RealCaddy::new(dir);
        let (caddyfile, _) = rc.write(39376);
        rc.spawn(&caddyfile, &format!("{ct_ip} cmux-202.lan\n"));
        rc
    }

    fn new(dir: &Path) -> RealCaddy {
        RealCaddy {
            child: Command::new("true").spawn().unwrap(),
            dir: dir.to_path_buf(),
            listen: free_port(),
            admin: free_port(),
        }
    }

    /// The global options block: admin, no automatic HTTPS, loopback only.
    fn header(&self) -> String {
        format!(
            "{{\n\tadmin 127.0.0.1:{a} {{\n\t\torigins 127.0.0.1:{a} 127.0.0.1:2019\n\t}}\n\tauto_https off\n\tdefault_bind 127.0.0.1\n}}\n",
            a = self.admin
        )
    }

    /// The 2026 Caddyfile (the lab's, with the rule's faults) on `listen`.
    fn write_2026(&self, rule: &lab::GenericRule) -> PathBuf {
        let body =
            lab::caddy::caddyfile_2026(rule).replace(":8080 {", &format!(":{} {{", self.listen));
        let p = self.dir.join("Caddyfile.cmux");
        std::fs::write(&p, format!("{}{body}", self.header())).unwrap();
        p
    }

    /// A real Caddy in the 2026 layout: `{hostname}.lan` resolves to the container's address.
    fn start_2026(
        dir: &Path,
        ct_ip: Ipv4Addr,
        hostname: &str,
        rule: &lab::GenericRule,
    ) -> RealCaddy {
        let mut rc = RealCaddy::new(dir);
        let caddyfile = rc.write_2026(rule);
        rc.spawn(&caddyfile, &format!("{ct_ip} {hostname}.lan\n"));
        rc
    }

    fn reload_2026(&self, rule: &lab::GenericRule) {
        let p = self.write_2026(rule);
        self.reload_file(&p);
    }

    /// Runs caddy with a private /etc/hosts holding `hosts` (mount namespace of its own).
    fn spawn(&mut self, caddyfile: &Path, hosts_lines: &str) {
        let dir = self.dir.clone();
        let dir = dir.as_path();
        let rc = self;
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, format!("127.0.0.1 localhost\n{hosts_lines}")).unwrap();
        let script = format!(
            "mount --bind '{}' /etc/hosts && exec caddy run --config '{}' --adapter caddyfile",
            hosts.display(),
            caddyfile.display()
        );
        let log = std::fs::File::create(dir.join("caddy.log")).unwrap();
        rc.child = Command::new("unshare")
            .args(["-m", "sh", "-c", &script])
            .env("HOME", dir)
            .env("XDG_DATA_HOME", dir)
            .env("XDG_CONFIG_HOME", dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let up = Command::new("curl")
                .args([
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "1",
                ])
                .arg(format!("http://127.0.0.1:{}/config/", rc.admin))
                .output()
                .map(|o| o.stdout == b"200")
                .unwrap_or(false);
            if up {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "caddy did not start: {}",
            std::fs::read_to_string(dir.join("caddy.log")).unwrap_or_default()
        );
    }

    fn reload(&self, xterm_port: u16) {
        let (p, _) = self.write(xterm_port);
        self.reload_file(&p);
    }

    fn reload_file(&self, p: &Path) {
        let out = Command::new("caddy")
            .args(["reload", "--adapter", "caddyfile", "--config"])
            .arg(p)
            .args(["--address", &format!("127.0.0.1:{}", self.admin)])
            .env("HOME", &self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "caddy reload: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

struct Setup {
    _rt: tokio::runtime::Runtime,
    lab: Lab,
    caddy: RealCaddy,
    token_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    if !real_caddy_available() {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let ip = container_ip();
    let caddy = RealCaddy::start(dir.path(), ip);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sc = lab::scenario("healthy").unwrap();
    let lab = rt
        .block_on(Lab::start_with(
            sc.config.clone(),
            LabOptions {
                origin: Some(SocketAddr::from(([127, 0, 0, 1], caddy.listen))),
                container_ip: Some(ip),
            },
        ))
        .expect("the lab's container binds its real ports on its own loopback address");
    let token_file = dir.path().join("token");
    let mut f = std::fs::File::create(&token_file).unwrap();
    f.write_all(sc.client_token.unwrap().as_bytes()).unwrap();
    Some(Setup {
        _rt: rt,
        lab,
        caddy,
        token_file,
        _dir: dir,
    })
}

impl Setup {
    fn pvediag(&self, extra: &[&str]) -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_pvediag"))
            .env_clear()
            .env("PVEDIAG_NO_STATE", "1")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("CURL_HOME", &self.lab.host_dir)
            .env("HOME", &self.lab.host_dir)
            .args(["202", "--domain", &self.lab.domain, "--format", "json"])
            .args(["--connect-to", &self.lab.edge_addr.to_string()])
            .args(["--cacert", self.lab.ca_cert_path.to_str().unwrap()])
            .args(["--exec-token-file", self.token_file.to_str().unwrap()])
            .args(["--timeout", "10s"])
            .args(extra)
            .output()
            .unwrap();
        let s = String::from_utf8(out.stdout).unwrap();
        let v = serde_json::from_str(&s)
            .unwrap_or_else(|e| panic!("{e}: {s}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), v)
    }
}

fn service<'a>(v: &'a Value, name: &str) -> &'a Value {
    v["targets"][0]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

#[test]
fn real_caddy_with_the_seed_caddyfile_then_fixed() {
    let Some(s) = setup() else { return };
    let caddyfile = s.caddy.dir.join("Caddyfile.cmux");
    let (_, line) = s.caddy.caddyfile(39376);

    // 1. The incident, read from the Caddyfile: the route line and both ports.
    let (code, v) = s.pvediag(&["--caddyfile", caddyfile.to_str().unwrap()]);
    assert_eq!(code, 1, "{v:#}");
    let x = &service(&v, "xterm")["verdict"];
    assert_eq!(x["layer"], "caddy", "{x:#}");
    let summary = x["summary"].as_str().unwrap();
    assert!(summary.contains("cmux-202.lan:39376"), "{summary}");
    assert!(summary.contains("39383"), "{summary}");
    assert!(
        summary.contains(&format!("Caddyfile.cmux:{line}")),
        "{summary}"
    );
    for other in ["exec", "worker", "vscode", "vnc", "preview", "proxy", "cdp"] {
        assert_eq!(
            service(&v, other)["verdict"]["status"],
            "healthy",
            "{other}: {v:#}"
        );
    }

    // 2. The same from Caddy's admin API (what is loaded, not what is on disk).
    let admin = format!("http://127.0.0.1:{}", s.caddy.admin);
    let (code, v) = s.pvediag(&["--caddy-admin", &admin]);
    assert_eq!(code, 1, "{v:#}");
    let route = v["targets"][0]["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["service"] == "xterm")
        .unwrap()
        .clone();
    assert_eq!(route["upstream_port"], 39376, "{route}");
    assert_eq!(route["upstream_host"], "cmux-202.lan");
    assert!(
        route["source"]
            .as_str()
            .unwrap()
            .contains("caddy admin API"),
        "{route}"
    );

    // 3. From the host: real Caddy itself answers 502 while the service answers 200, and the
    //    routes come from Caddy's admin API as the host sees it (127.0.0.1:2019 on a real host;
    //    here the host's curl config maps it to this Caddy's admin port).
    let rc = s.lab.host_dir.join(".curlrc");
    let mut text: String = std::fs::read_to_string(&rc)
        .unwrap()
        .lines()
        .filter(|l| !l.contains("127.0.0.1:2019:"))
        .map(|l| format!("{l}\n"))
        .collect();
    text.push_str(&format!(
        "connect-to = \"127.0.0.1:2019:127.0.0.1:{}\"\n",
        s.caddy.admin
    ));
    std::fs::write(&rc, text).unwrap();
    let caddy_url = format!("http://127.0.0.1:{}", s.caddy.listen);
    let (code, v) = s.pvediag(&["--on-host", "--caddy-url", &caddy_url]);
    assert_eq!(code, 1);
    let hx = v["targets"][0]["host"]["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap()
        .clone();
    assert_eq!(hx["caddy"]["status"], 502, "{hx:#}");
    assert_eq!(hx["caddy"]["headers"]["server"], "Caddy", "{hx:#}");
    assert_eq!(hx["upstream"]["status"], 200, "{hx:#}");
    assert_eq!(
        service(&v, "xterm")["verdict"]["rule"],
        "host-caddy-route-wrong"
    );
    assert!(
        v["caddy"]["source"]
            .as_str()
            .unwrap()
            .contains("admin API on the host"),
        "{v:#}"
    );
    assert!(v["caddy"]["error"].is_null(), "{:#}", v["caddy"]);
    let summary = service(&v, "xterm")["verdict"]["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(summary.contains("cmux-202.lan:39376"), "{summary}");
    assert_eq!(v["caddy"]["findings"].as_array().unwrap().len(), 1, "{v:#}");

    // 4. The fix: 39383, reloaded. Everything healthy, exit 0 (`--wait`, as after any deploy:
    //    Caddy swaps its configuration gracefully).
    s.caddy.reload(39383);
    let (code, v) = s.pvediag(&["--caddy-admin", &admin, "--wait", "20s"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(
        v["caddy"]["findings"].as_array().unwrap().is_empty(),
        "{v:#}"
    );
}

/// The 2026 generation through a real Caddy: the lab's 2026 container (hostname `pvelxc-…`, the
/// Node worker on 39376 and the Go daemon on 39377) behind the generic rule, its hostname from the
/// lab's PVE API, no `--catalog` and no `--url-template`. Broken (the upstream's CORS header kept,
/// so cmux-pty's and Caddy's both reach the client; then a regexp that misses port 5173), then fixed.
#[test]
fn real_caddy_with_the_2026_caddyfile_broken_then_fixed() {
    if !real_caddy_available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ip = container_ip();
    let sc = lab::scenario_in("healthy", pvediag::generation::Generation::Y2026).unwrap();
    let hostname = lab::pvelxc_hostname(202);
    let doubled = lab::GenericRule {
        strip_upstream_cors: false,
        ..Default::default()
    };
    let caddy = RealCaddy::start_2026(dir.path(), ip, &hostname, &doubled);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let lab = rt
        .block_on(Lab::start_with(
            sc.config.clone(),
            LabOptions {
                origin: Some(SocketAddr::from(([127, 0, 0, 1], caddy.listen))),
                container_ip: Some(ip),
            },
        ))
        .expect("the lab's container binds its real ports on its own loopback address");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, sc.client_token.unwrap()).unwrap();
    let caddyfile = caddy.dir.join("Caddyfile.cmux");
    let run = |extra: &[&str]| -> (i32, Value) {
        let out = Command::new(env!("CARGO_BIN_EXE_pvediag"))
            .env_clear()
            .env("PVEDIAG_NO_STATE", "1")
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PVE_API_URL", lab.pve_url.as_deref().unwrap())
            .env("PVE_API_TOKEN", lab::pve::TOKEN)
            .args(["202", "--domain", &lab.domain, "--format", "json"])
            .args(["--connect-to", &lab.edge_addr.to_string()])
            .args(["--cacert", lab.ca_cert_path.to_str().unwrap()])
            .args(["--exec-token-file", token_file.to_str().unwrap()])
            .args(["--timeout", "10s"])
            .args(extra)
            .output()
            .unwrap();
        let s = String::from_utf8(out.stdout).unwrap();
        let v = serde_json::from_str(&s)
            .unwrap_or_else(|e| panic!("{e}: {s}\n{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap(), v)
    };
    let not_healthy = |v: &Value| -> Vec<(String, String)> {
        v["targets"][0]["services"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|s| s["verdict"]["status"] != "healthy")
            .map(|s| {
                (
                    s["name"].as_str().unwrap().to_string(),
                    s["verdict"]["rule"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    };
    let admin = format!("http://127.0.0.1:{}", caddy.admin);

    // 1. Real Caddy sends cmux-pty's access-control-allow-origin next to its own.
    for source in [
        vec!["--caddyfile", caddyfile.to_str().unwrap()],
        vec!["--caddy-admin", &admin],
    ] {
        let (code, v) = run(&source);
        assert_eq!(code, 1, "{v:#}");
        let r = &v["targets"][0]["routing"];
        assert_eq!(r["generation"], "2026", "{r}");
        assert_eq!(r["instance"], hostname.as_str(), "{r}");
        assert_eq!(
            not_healthy(&v),
            [("xterm".to_string(), "header-doubled-by-proxy".to_string())],
            "{v:#}"
        );
        let x = service(&v, "xterm");
        assert_eq!(
            x["url"],
            format!("https://port-39383-{hostname}.{}/sessions", lab.domain)
        );
    }
    // The Caddyfile's lint names the generic rule's missing header_down (the test's global
    // options block is the reader's one `unparsed` note).
    let kinds = |v: &Value| -> Vec<String> {
        v["caddy"]["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["kind"].as_str().unwrap().to_string())
            .filter(|k| k != "unparsed")
            .collect()
    };
    let (_, v) = run(&["--caddyfile", caddyfile.to_str().unwrap()]);
    assert_eq!(kinds(&v), ["generic_cors"], "{v:#}");

    // 2. A regexp that misses the dev server's port: Caddy's own catch-all 404 for it.
    let narrow = lab::GenericRule {
        regex: r"^port-(3\d{4})-([a-z0-9-]+)\.".into(),
        ..Default::default()
    };
    caddy.reload_2026(&narrow);
    let (code, v) = run(&["--caddy-admin", &admin, "--wait", "20s"]);
    assert_eq!(code, 1, "{v:#}");
    assert_eq!(
        not_healthy(&v),
        [("preview".to_string(), "caddy-no-route".to_string())],
        "{v:#}"
    );

    // 3. Fixed: the lab's 2026 Caddyfile as cmux writes it. Healthy, exit 0.
    caddy.reload_2026(&lab::GenericRule::default());
    let (code, v) = run(&["--caddyfile", caddyfile.to_str().unwrap(), "--wait", "20s"]);
    assert_eq!(code, 0, "{v:#}");
    assert!(kinds(&v).is_empty(), "{v:#}");
    assert_eq!(v["targets"][0]["routing"]["generation"], "2026");
    drop(lab);
}
