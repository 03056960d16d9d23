//! The lab's Proxmox VE API: enough of `/api2/json` for pvediag to learn a lab container's
//! hostname (`/nodes/{node}/lxc/{vmid}/config`), list the containers (`--all`, instance names),
//! and read execd tokens from `env`, the way it does on a real host. Requests need the lab's API
//! token (`Authorization: PVEAPIToken=...`), else 401 like pveproxy.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::{json, Value};
use tokio::io::BufReader;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use super::container::serve;
use super::{http, ContainerSpec};

/// The lab's node name.
pub const NODE: &str = "lab";
/// The lab's API token (user@realm!tokenid=secret), as `PVE_API_TOKEN` holds it. A lab value, not a
/// secret of anything real; pvediag still never prints it.
pub const TOKEN: &str = "root@pam!pvediag-lab=5b1f0c7e-4a2d-4e8b-9c3f-lab000000000";

/// What the API answers for a path (the `data` member), None for 404.
pub fn route(containers: &[ContainerSpec], path: &str) -> Option<Value> {
    let path = path.split('?').next().unwrap_or(path);
    let rest = path.strip_prefix("/api2/json")?;
    if rest == "/nodes" {
        return Some(json!([{ "node": NODE, "status": "online" }]));
    }
    let rest = rest.strip_prefix(&format!("/nodes/{NODE}/lxc"))?;
    if rest.is_empty() || rest == "/" {
        return Some(Value::Array(
            containers
                .iter()
                .map(|c| {
                    json!({
                        "vmid": c.vmid,
                        "name": c.hostname,
                        "status": if c.running { "running" } else { "stopped" },
                        "type": "lxc",
                    })
                })
                .collect(),
        ));
    }
    let vmid: u32 = rest
        .strip_prefix('/')?
        .strip_suffix("/config")?
        .parse()
        .ok()?;
    let c = containers.iter().find(|c| c.vmid == vmid)?;
    let mut cfg = json!({
        "hostname": c.hostname,
        "arch": "amd64",
        "ostype": "debian",
        "net0": format!("name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:{:02X}:{:02X},ip=dhcp,type=veth", (vmid >> 8) & 0xff, vmid & 0xff),
    });
    if let Some(t) = &c.exec_token {
        cfg["env"] = json!(format!(
            "HOME=/root\0CMUX_EXECD_AUTH_TOKEN={t}\0LANG=C.UTF-8"
        ));
    }
    Some(cfg)
}

/// Starts the API on `listener`.
pub fn start(listener: TcpListener, containers: Vec<ContainerSpec>) -> JoinHandle<()> {
    let containers = Arc::new(containers);
    serve(listener, move |stream| {
        let containers = containers.clone();
        async move {
            let mut s = BufReader::new(stream);
            let Ok(Some(req)) = http::read_request(&mut s, 0).await else {
                return;
            };
            let expected = format!("PVEAPIToken={TOKEN}");
            let json_h = [
                ("Content-Type", "application/json;charset=UTF-8"),
                ("Server", "pve-api-daemon/3.0"),
                ("Connection", "close"),
            ];
            let bytes = if req.header("authorization") != Some(expected.as_str()) {
                http::response_bytes(401, &json_h, b"{\"data\":null}")
            } else if req.method != "GET" {
                http::response_bytes(501, &json_h, b"{\"data\":null}")
            } else {
                match route(&containers, &req.target) {
                    Some(data) => {
                        let body = serde_json::to_vec(&json!({ "data": data })).unwrap_or_default();
                        http::response_bytes(200, &json_h, &body)
                    }
                    None => http::response_bytes(404, &json_h, b"{\"data\":null}"),
                }
            };
            let _ = http::send(&mut s, &bytes).await;
        }
    })
}

/// Binds 127.0.0.1:0 and starts the API; returns the task and its base URL.
pub async fn start_local(
    containers: Vec<ContainerSpec>,
) -> std::io::Result<(JoinHandle<()>, String)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr: SocketAddr = listener.local_addr()?;
    Ok((start(listener, containers), format!("http://{addr}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        let c = vec![super::super::container_2026(202, Some("ab".repeat(32)))];
        let list = route(&c, "/api2/json/nodes/lab/lxc").unwrap();
        assert_eq!(list[0]["name"], c[0].hostname);
        let cfg = route(&c, "/api2/json/nodes/lab/lxc/202/config").unwrap();
        assert_eq!(cfg["hostname"], c[0].hostname);
        assert!(crate::pve::token_from_config(&cfg).is_some());
        assert!(route(&c, "/api2/json/nodes/lab/lxc/203/config").is_none());
        assert!(route(&c, "/api2/json/nodes/other/lxc").is_none());
    }
}
