//! The host vantage through the binary: `--on-host`, `--ssh` with a stand-in `ssh` on PATH, and the
//! `pct exec` fallback with a stand-in `pct`, including their failures. Loopback only.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use pvediag::lab::{self, Lab};
use serde_json::Value;

struct Running {
    _rt: tokio::runtime::Runtime,
    lab: Lab,
    token_file: Option<PathBuf>,
    bin: tempfile::TempDir,
}

fn start(scenario: &str) -> Running {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let sc = lab::scenario(scenario).unwrap();
    let lab = rt.block_on(Lab::start(sc.config.clone())).unwrap();
    let token_file = sc.client_token.as_ref().map(|t| {
        let p = lab.dir.join("client-token");
        std::fs::write(&p, t).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        p
    });
    Running {
        _rt: rt,
        lab,
        token_file,
        bin: tempfile::tempdir().unwrap(),
    }
}

fn stub(dir: &Path, name: &str, body: &str) {
    let p = dir.join(name);
    std::fs::write(&p, format!("#!/bin/bash\n{body}\n")).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
}

use crate::common::curl_present;

impl Running {
    /// Runs pvediag 202 against the lab with `extra` args; PATH starts with the stub directory.
    fn run(&self, extra: &[&str]) -> (i32, Value, String) {
        let path = format!(
            "{}:{}",
            self.bin.path().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::cargo_bin("pvediag").unwrap();
        cmd.env_clear()
            .env("PVEDIAG_NO_STATE", "1")
            .env("PATH", path)
            // the host's view of the lab: cmux-{vmid}.lan and cloudflared's /ready
            .env("CURL_HOME", &self.lab.host_dir)
            .env("HOME", &self.lab.host_dir)
            .env("STUB_LOG", self.bin.path().join("argv.log"))
            .env("CT_HOME", self.lab.container_dir(202).unwrap_or_default())
            .args([
                "202",
                "--domain",
                &self.lab.domain,
                "--color",
                "never",
                "--format",
                "json",
            ])
            .args(["--connect-to", &self.lab.edge_addr.to_string()])
            .args(["--cacert", self.lab.ca_cert_path.to_str().unwrap()])
            .args(["--caddy-url", &format!("http://{}", self.lab.caddy_addr)])
            .args(["--timeout", "5s"]);
        if let Some(t) = &self.token_file {
            cmd.args(["--exec-token-file", t.to_str().unwrap()]);
        }
        let out = cmd.args(extra).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        let v = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
        (out.status.code().unwrap(), v, stderr)
    }

    fn argv_log(&self) -> String {
        std::fs::read_to_string(self.bin.path().join("argv.log")).unwrap_or_default()
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

/// ssh stand-in: records its argv, skips its options up to `--`, then runs the remote words here.
const SSH_STUB: &str = r#"printf '%s\n' "$@" > "$STUB_LOG"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift; shift   # "--" and the destination
exec "$@""#;

/// pct stand-in: `pct exec VMID -- bash -s` runs bash with the container's view (its .curlrc, its
/// hostname, machine id and addresses as lab/identity.rs lays them out); `pct exec VMID -- ip ...`
/// prints the container's address; `pct config` is refused.
const PCT_STUB: &str = r#"printf 'pct %s\n' "$*" >> "$STUB_LOG.pct"
[ "$1" = exec ] && [ "$2" = 202 ] && [ "$3" = -- ] || { echo "pct: bad call: $*" >&2; exit 2; }
shift 3
if [ "$1" = ip ]; then echo '2: eth0    inet 10.10.0.202/24 brd 10.10.0.255 scope global eth0'; exit 0; fi
export CURL_HOME="$CT_HOME" HOME="$CT_HOME" PATH="$CT_HOME/bin:$PATH" HOSTNAME=cmux-202
# The lab's container shares this machine's loopback: bash's /dev/tcp gets the port map too.
sed -e "s#/etc/machine-id#$CT_HOME/etc/machine-id#g" -e "s#/proc/net/fib_trie#$CT_HOME/proc/net/fib_trie#g" -f "$CT_HOME/dev-tcp.sed" | "$@""#;

#[test]
fn on_host_pins_the_seed_incident_to_the_caddy_route() {
    if !curl_present() {
        return;
    }
    let r = start("seed");
    let (code, v, _) = r.run(&["--on-host"]);
    assert_eq!(code, 1);
    let x = service(&v, "xterm");
    assert_eq!(x["verdict"]["layer"], "caddy");
    assert_eq!(x["verdict"]["rule"], "host-caddy-route-wrong");
    let host = &v["targets"][0]["host"];
    assert_eq!(host["vantage"], "local");
    assert_eq!(host["cloudflared"]["status"], 200);
    let hx = host["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "xterm")
        .unwrap();
    // Caddy itself answers 502 while the service answers 200 at the upstream and inside.
    assert_eq!(hx["caddy"]["status"], 502);
    assert_eq!(hx["caddy"]["headers"]["server"], "Caddy");
    assert_eq!(hx["upstream"]["status"], 200);
    assert_eq!(x["internal"]["status"], 200);
}

#[test]
fn on_host_names_cloudflared_when_the_tunnel_is_down() {
    if !curl_present() {
        return;
    }
    let r = start("tunnel-down");
    let (code, v, _) = r.run(&["--on-host", "--no-pct"]);
    assert_eq!(code, 1);
    assert_eq!(
        service(&v, "xterm")["verdict"]["rule"],
        "host-cloudflared-not-ready"
    );
}

#[test]
fn on_host_names_caddy_when_it_is_down() {
    if !curl_present() {
        return;
    }
    let r = start("caddy-down");
    let (code, v, _) = r.run(&["--on-host", "--no-pct"]);
    assert_eq!(code, 1);
    assert_eq!(service(&v, "vscode")["verdict"]["rule"], "host-caddy-down");
    assert_eq!(service(&v, "vscode")["verdict"]["layer"], "caddy");
}

#[test]
fn ssh_runs_the_host_script_in_batch_mode_with_the_script_on_stdin() {
    if !curl_present() {
        return;
    }
    let r = start("seed");
    stub(r.bin.path(), "ssh", SSH_STUB);
    let (code, v, _) = r.run(&["--ssh", "root@pve.test"]);
    assert_eq!(code, 1);
    assert_eq!(v["targets"][0]["host"]["vantage"], "ssh root@pve.test");
    assert_eq!(
        service(&v, "xterm")["verdict"]["rule"],
        "host-caddy-route-wrong"
    );
    let argv = r.argv_log();
    let words: Vec<&str> = argv.lines().collect();
    assert!(words.contains(&"BatchMode=yes"), "{argv}");
    let dd = words.iter().position(|w| *w == "--").unwrap();
    assert_eq!(&words[dd + 1..], ["root@pve.test", "bash", "-s"], "{argv}");
    // The script never travels on the command line.
    assert!(!argv.contains("curl"), "{argv}");
}

#[test]
fn ssh_failure_is_reported_and_the_diagnosis_goes_on() {
    let r = start("seed");
    stub(
        r.bin.path(),
        "ssh",
        r#"echo "root@pve.test: Permission denied (publickey)." >&2; exit 255"#,
    );
    let (_, v, _) = r.run(&["--ssh", "root@pve.test", "--no-pct"]);
    let host = &v["targets"][0]["host"];
    assert_eq!(host["run"]["state"], "failed");
    assert!(
        host["run"]["message"]
            .as_str()
            .unwrap()
            .contains("Permission denied"),
        "{host}"
    );
    // Without the host's view the base rules still decide (no Caddyfile read: the hop is not
    // pinned, Caddy the most likely candidate).
    if curl_present() {
        assert_eq!(
            service(&v, "xterm")["verdict"]["rule"],
            "gateway-error-service-ok"
        );
        assert_eq!(
            service(&v, "xterm")["verdict"]["candidates"][0]["layer"],
            "caddy"
        );
    }
}

#[test]
fn pct_exec_takes_over_when_the_exec_token_is_wrong() {
    if !curl_present() {
        return;
    }
    let r = start("exec-unauthorized");
    stub(r.bin.path(), "pct", PCT_STUB);
    let (code, v, _) = r.run(&["--on-host"]);
    let exec = &v["targets"][0]["exec"];
    assert_eq!(exec["run"]["status"], 401);
    assert_eq!(exec["pct"]["run"]["state"], "completed", "{exec}");
    assert_eq!(exec["verdict"]["status"], "healthy", "{exec}");
    assert_eq!(service(&v, "proxy")["verdict"]["status"], "healthy");
    assert_eq!(service(&v, "cdp")["verdict"]["status"], "healthy");
    assert_eq!(code, 0);
    // `pct exec` once; the container's hostname was asked with `pct config` / `pct list`.
    let log = std::fs::read_to_string(r.bin.path().join("argv.log.pct")).unwrap();
    // The host script's identity calls (pct config, the container's own address), then the
    // internal probes; instance resolution may ask pct config and pct list too.
    let execs: Vec<&str> = log.lines().filter(|l| l.starts_with("pct exec")).collect();
    assert_eq!(
        execs,
        [
            "pct exec 202 -- ip -4 -o addr show scope global",
            "pct exec 202 -- bash -s"
        ],
        "{log}"
    );
    assert!(
        log.lines()
            .all(|l| l.starts_with("pct exec") || l == "pct config 202" || l == "pct list"),
        "{log}"
    );
    // Who the pct run ran in, and that it is 202.
    let id = &v["targets"][0]["identity"];
    assert_eq!(id["reported_via"], "pct");
    assert_eq!(id["reported"]["hostname"], "cmux-202");
    assert_eq!(id["host"]["own_ipv4"][0], "10.10.0.202");
}

#[test]
fn pct_failure_leaves_the_internal_view_unavailable() {
    let r = start("exec-unauthorized");
    stub(
        r.bin.path(),
        "pct",
        r#"echo "Configuration file 'nodes/pve/lxc/202.conf' does not exist" >&2; exit 2"#,
    );
    let (code, v, _) = r.run(&["--on-host"]);
    let exec = &v["targets"][0]["exec"];
    assert_eq!(exec["pct"]["run"]["state"], "failed");
    assert!(exec["pct"]["run"]["message"]
        .as_str()
        .unwrap()
        .contains("does not exist"));
    assert_eq!(exec["verdict"]["status"], "inconclusive");
    assert_eq!(code, 3);
}

#[test]
fn bad_ssh_destinations_are_usage_errors() {
    for bad in ["-oProxyCommand=touch /tmp/x", "root@h;id", "a b"] {
        let out = Command::cargo_bin("pvediag")
            .unwrap()
            .env_clear()
            .env("PVEDIAG_NO_STATE", "1")
            .args(["202", "--domain", "example.test", "--ssh", bad])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad}");
        let e = String::from_utf8(out.stderr).unwrap();
        assert!(e.contains("--ssh"), "{e}");
    }
}

/// ssh stand-in that also keeps each script it is sent.
const SSH_KEEP_STUB: &str = r#"f=$(mktemp "$STUB_LOG.script.XXXXXX")
cat > "$f"
while [ "$#" -gt 0 ] && [ "$1" != "--" ]; do shift; done
shift; shift
exec "$@" < "$f""#;

/// cloudflared's readiness and Caddy's loaded routes are the same for every target: one host
/// script asks them once per run, whatever the number of targets; each target's hops get their own.
#[test]
fn run_wide_host_probes_run_once_for_many_targets() {
    if !curl_present() {
        return;
    }
    let r = start("seed");
    stub(r.bin.path(), "ssh", SSH_KEEP_STUB);
    let (_, v, _) = r.run(&["203", "204", "--ssh", "root@pve.test", "--no-pct"]);
    assert_eq!(v["targets"].as_array().unwrap().len(), 3);
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["host"]["cloudflared"]["status"], 200, "{t}");
    }
    let scripts: Vec<String> = std::fs::read_dir(r.bin.path())
        .unwrap()
        .filter_map(|e| {
            let p = e.unwrap().path();
            p.file_name()?
                .to_str()?
                .starts_with("argv.log.script.")
                .then(|| std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    let wide = scripts.iter().filter(|s| s.contains("'/ready'")).count();
    let per_target = scripts
        .iter()
        .filter(|s| s.contains("'upstream.xterm'"))
        .count();
    assert_eq!((wide, per_target), (1, 3), "{} scripts", scripts.len());
}
