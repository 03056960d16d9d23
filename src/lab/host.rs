//! The PVE host's own view, for the host vantage (`--on-host`): cloudflared's `/ready` endpoint,
//! and a `.curlrc` that makes `curl http://cmux-{vmid}.lan:PORT/` and `curl http://127.0.0.1:20241/ready`
//! on "the host" reach the lab's containers and readiness endpoint, as the LAN's DNS and cloudflared
//! would on a real host.

use std::net::SocketAddr;
use std::path::Path;

use tokio::io::AsyncWriteExt;
use tokio::task::JoinHandle;

use super::container::ContainerRuntime;
use super::http::read_request;

/// cloudflared's metrics server answering `GET /ready` like the real one.
pub async fn start_ready(tunnel_up: bool) -> std::io::Result<(JoinHandle<()>, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                break;
            };
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(&mut sock);
                let req = read_request(&mut reader, 0).await;
                let (status, body) = match req {
                    Ok(Some(r)) if r.target == "/ready" && tunnel_up => (
                        "200 OK",
                        r#"{"status":200,"readyConnections":4,"connectorId":"7a1c0f4e-0000-4000-8000-00000000lab0"}"#,
                    ),
                    Ok(Some(r)) if r.target == "/ready" => (
                        "503 Service Unavailable",
                        r#"{"status":503,"readyConnections":0,"connectorId":"7a1c0f4e-0000-4000-8000-00000000lab0"}"#,
                    ),
                    _ => ("404 Not Found", "404 page not found\n"),
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    Ok((task, addr))
}

/// Writes `<dir>/.curlrc` with the host's view of the containers and of cloudflared.
pub fn write_host_curlrc<'a>(
    dir: &Path,
    containers: impl Iterator<Item = &'a ContainerRuntime>,
    ready: SocketAddr,
    closed: SocketAddr,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut rc = String::from("# the PVE host's view of the lab (written by pvediag's lab)\n");
    let all: std::collections::BTreeMap<u32, &ContainerRuntime> =
        containers.map(|c| (c.vmid, c)).collect();
    for named in all.values() {
        // `cmux-{vmid}.lan` leads where the LAN's DNS sends it (see lab/identity.rs).
        let Some(ct) = all.get(&named.lan_name_to.unwrap_or(named.vmid)) else {
            continue;
        };
        // Every container port is mapped, so curl never asks a real resolver about cmux-*.lan.
        let mut ports: Vec<(u16, SocketAddr)> = ct.ports.iter().map(|(p, a)| (*p, *a)).collect();
        for p in super::container::CONTAINER_PORTS {
            if !ct.ports.contains_key(p) {
                ports.push((*p, closed));
            }
        }
        for (port, addr) in &ports {
            let to = if ct.running { *addr } else { closed };
            rc.push_str(&format!(
                "connect-to = \"cmux-{}.lan:{port}:{}:{}\"\n",
                named.vmid,
                to.ip(),
                to.port()
            ));
        }
    }
    for (i, port) in crate::probe::host::CLOUDFLARED_READY_PORTS.enumerate() {
        let to = if i == 0 { ready } else { closed };
        rc.push_str(&format!(
            "connect-to = \"127.0.0.1:{port}:{}:{}\"\n",
            to.ip(),
            to.port()
        ));
    }
    // No Caddy admin API in the lab: the host's 127.0.0.1:2019 refuses (never a real local Caddy).
    rc.push_str(&format!(
        "connect-to = \"127.0.0.1:{}:{}:{}\"\n",
        crate::probe::host::CADDY_ADMIN_PORT,
        closed.ip(),
        closed.port()
    ));
    std::fs::write(dir.join(".curlrc"), rc)
}

/// Appends `{hostname}.lan` lines to the host's `.curlrc` for containers whose hostname is not
/// `cmux-{vmid}` (those lines are already there): the running, published ones map to their ports,
/// the others refuse.
pub fn append_hostnames<'a>(
    dir: &Path,
    containers: impl Iterator<Item = (&'a str, Option<&'a ContainerRuntime>, bool)>,
    closed: SocketAddr,
) -> std::io::Result<()> {
    let path = dir.join(".curlrc");
    let mut rc = std::fs::read_to_string(&path)?;
    for (hostname, ct, published) in containers {
        let Some(ct) = ct else { continue };
        if hostname == format!("cmux-{}", ct.vmid) {
            continue;
        }
        for p in super::container::CONTAINER_PORTS
            .iter()
            .copied()
            .chain(ct.ports.keys().copied())
            .collect::<std::collections::BTreeSet<u16>>()
        {
            let to = match ct.ports.get(&p) {
                Some(a) if ct.running && published => *a,
                _ => closed,
            };
            rc.push_str(&format!(
                "connect-to = \"{hostname}.lan:{p}:{}:{}\"\n",
                to.ip(),
                to.port()
            ));
        }
    }
    std::fs::write(path, rc)
}
