//! The Proxmox VE API edge: which cmux containers run on a node (`--all`), instance names to VMIDs,
//! and each container's cmux-execd token from its config.
//!
//! Requests: `Authorization: PVEAPIToken=<PVE_API_TOKEN>` (the value as is, never printed), each one
//! bounded by the probe timeout. TLS: as in cmux, the API's certificate is not verified unless
//! `PVE_VERIFY_TLS` is set (PVE hosts use self-signed certificates); `--pve-insecure` turns
//! verification off even then.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;

use crate::cli::UsageError;
use crate::exit;
use crate::secret::Secret;
use crate::target::{is_instance_name, SkippedTarget, TargetRequest, Targets};

/// The Proxmox VE API, validated.
#[derive(Debug, Clone)]
pub(crate) struct PveConfig {
    /// `https://pve.lan:8006` (no trailing slash, no `/api2/json`).
    pub(crate) base: String,
    pub(crate) token: Secret,
    /// `PVE_NODE`; the first node the API lists when unset.
    pub(crate) node: Option<String>,
    pub(crate) verify_tls: bool,
    /// Bound on every request.
    pub(crate) timeout: Duration,
    /// Keep answers for a short while (`serve`: [`crate::pve_cache`]); `None`: ask every time.
    pub(crate) cache: Option<crate::pve_cache::PveCache>,
}

impl PveConfig {
    /// The API at `raw` (`PVE_API_URL`) with `token` (`PVE_API_TOKEN`), checked.
    pub fn new(
        raw: &str,
        token: &str,
        node: Option<&str>,
        verify_tls: bool,
        timeout: Duration,
    ) -> Result<PveConfig, UsageError> {
        let bad = |why: &str| {
            UsageError::new(format!(
                "PVE_API_URL {raw:?} {why}: expected the API's base URL, e.g. https://pve.lan:8006"
            ))
        };
        url::Url::parse(raw.trim()).map_err(|_| bad("is not a URL"))?;
        let u = crate::target::http_base_url(raw.trim())
            .ok_or_else(|| bad("is not an http(s) URL without query or credentials"))?;
        let mut base = u.as_str().trim_end_matches('/').to_string();
        if let Some(b) = base.strip_suffix("/api2/json") {
            base = b.to_string();
        }
        let token = crate::secret::parse_token("PVE_API_TOKEN", token)
            .map_err(|e| UsageError::new(e.to_string()))?;
        let node = match node.map(str::trim) {
            None | Some("") => None,
            Some(n) if valid_node(n) => Some(n.to_string()),
            Some(n) => {
                return Err(UsageError::new(format!(
                    "PVE_NODE {n:?} is not a node name (letters, digits, '-' and '.')"
                )))
            }
        };
        Ok(PveConfig {
            base,
            token,
            node,
            verify_tls,
            timeout,
            cache: None,
        })
    }
}

fn valid_node(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'.')
}

/// Why the PVE API could not be used. Messages are one line and never hold the token.
#[derive(Debug, thiserror::Error)]
pub enum PveError {
    #[error("the PVE API refused the token (401) for {path}: check PVE_API_TOKEN (user@realm!tokenid=secret)")]
    Unauthorized { path: String },
    #[error("the PVE API token may not read {path} (403): it needs VM.Audit (Sys.Audit for the node list)")]
    Forbidden { path: String },
    #[error("the PVE API answered {status} for {path}{hint}")]
    Status {
        status: u16,
        path: String,
        hint: &'static str,
    },
    #[error("the PVE API answered {path} with something that is not PVE JSON ({why}): is PVE_API_URL the API, e.g. https://pve.lan:8006?")]
    Malformed { path: String, why: String },
    #[error("the PVE API did not answer {path} within {ms} ms")]
    Timeout { path: String, ms: u128 },
    #[error("cannot reach the PVE API at {base}: {why}")]
    Unreachable { base: String, why: String },
    #[error("the PVE API lists no node")]
    NoNode,
    #[error("no container named {name:?} on PVE node {node}")]
    UnknownName { name: String, node: String },
    #[error("cannot build the PVE API client: {0}")]
    Client(String),
}

impl PveError {
    /// 2 for what the operator must fix (token, URL, name), 3 for an API that could not answer.
    pub fn exit_code(&self) -> u8 {
        match self {
            PveError::Timeout { .. } | PveError::Unreachable { .. } => exit::INCONCLUSIVE,
            PveError::Status { status, .. } if *status >= 500 => exit::INCONCLUSIVE,
            _ => exit::USAGE,
        }
    }
}

/// One container as `GET /nodes/{node}/lxc` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Container {
    pub(crate) vmid: u32,
    pub(crate) name: String,
    pub(crate) status: String,
    pub(crate) template: bool,
}

/// A client of one PVE API.
pub(crate) struct PveApi {
    cfg: PveConfig,
    client: reqwest::Client,
}

fn int_field(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn bool_field(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Bool(b)) => *b,
        Some(v) => int_field(v).is_some_and(|n| n != 0),
        None => false,
    }
}

/// Parses the `data` of `GET /nodes/{node}/lxc`.
pub(crate) fn parse_containers(path: &str, data: &Value) -> Result<Vec<Container>, PveError> {
    let malformed = |why: &str| PveError::Malformed {
        path: path.to_string(),
        why: why.to_string(),
    };
    let list = data
        .as_array()
        .ok_or_else(|| malformed("data is not a list"))?;
    let mut out = Vec::new();
    for item in list {
        let vmid = item
            .get("vmid")
            .and_then(int_field)
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v > 0)
            .ok_or_else(|| malformed("a container without a numeric vmid"))?;
        out.push(Container {
            vmid,
            name: item
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            status: item
                .get("status")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_string(),
            template: bool_field(item.get("template")),
        });
    }
    out.sort_by_key(|c| c.vmid);
    Ok(out)
}

fn hex64(s: &str) -> Option<Secret> {
    let t = s.trim();
    (t.len() == 64 && t.bytes().all(|c| c.is_ascii_hexdigit())).then(|| Secret::new(t))
}

/// The execd token in a container's config: `env` (NUL-separated, `CMUX_EXECD_AUTH_TOKEN=<64hex>`,
/// PVE >= 9.1) first, else a line `cmux-execd-auth-token=<64hex>` in `description` (PVE 8).
pub(crate) fn token_from_config(data: &Value) -> Option<Secret> {
    let from_env = data.get("env").and_then(Value::as_str).and_then(|env| {
        env.split('\0')
            .filter_map(|e| e.trim().strip_prefix("CMUX_EXECD_AUTH_TOKEN="))
            .find_map(hex64)
    });
    from_env.or_else(|| {
        data.get("description")
            .and_then(Value::as_str)
            .and_then(|d| {
                d.lines()
                    .filter_map(|l| l.trim().strip_prefix("cmux-execd-auth-token="))
                    .find_map(hex64)
            })
    })
}

impl PveApi {
    pub fn new(cfg: &PveConfig) -> Result<PveApi, PveError> {
        let client = reqwest::Client::builder()
            .user_agent(crate::http::USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(cfg.timeout)
            .timeout(cfg.timeout)
            .danger_accept_invalid_certs(!cfg.verify_tls)
            .no_proxy()
            .build()
            .map_err(|e| PveError::Client(e.to_string()))?;
        Ok(PveApi {
            cfg: cfg.clone(),
            client,
        })
    }

    /// `GET /api2/json{path}` and its `data`, from the cache when there is one and it is fresh.
    async fn get(&self, path: &str) -> Result<Value, PveError> {
        match &self.cfg.cache {
            Some(c) => {
                let key =
                    crate::pve_cache::PveCache::key(&self.cfg.base, self.cfg.token.expose(), path);
                c.get_or_fetch(&key, || self.fetch(path)).await
            }
            None => self.fetch(path).await,
        }
    }

    /// `GET /api2/json{path}` and its `data`.
    async fn fetch(&self, path: &str) -> Result<Value, PveError> {
        let url = format!("{}/api2/json{path}", self.cfg.base);
        let mut auth = reqwest::header::HeaderValue::from_str(&format!(
            "PVEAPIToken={}",
            self.cfg.token.expose()
        ))
        .map_err(|_| PveError::Client("PVE_API_TOKEN is not a valid header value".into()))?;
        auth.set_sensitive(true);
        let fut = async {
            let resp = self
                .client
                .get(&url)
                .header(reqwest::header::AUTHORIZATION, auth)
                .header(reqwest::header::ACCEPT, "application/json")
                .send()
                .await?;
            let status = resp.status().as_u16();
            let body = resp.bytes().await?;
            Ok::<_, reqwest::Error>((status, body))
        };
        let timeout = || PveError::Timeout {
            path: path.to_string(),
            ms: self.cfg.timeout.as_millis(),
        };
        let (status, body) = match tokio::time::timeout(self.cfg.timeout, fut)
            .await
            .map_err(|_| timeout())?
        {
            Ok(x) => x,
            Err(e) if e.is_timeout() => return Err(timeout()),
            Err(e) => {
                let (kind, message) = crate::http::classify_error(&e);
                return Err(PveError::Unreachable {
                    base: self.cfg.base.clone(),
                    why: format!("{} ({message})", kind.as_str()),
                });
            }
        };
        match status {
            200..=299 => {}
            401 => {
                return Err(PveError::Unauthorized {
                    path: path.to_string(),
                })
            }
            403 => {
                return Err(PveError::Forbidden {
                    path: path.to_string(),
                })
            }
            s => {
                return Err(PveError::Status {
                    status: s,
                    path: path.to_string(),
                    hint: match s {
                        404 => ": is PVE_NODE a node of this cluster and PVE_API_URL the API?",
                        500..=599 => ": the API itself failed, try again or check pveproxy",
                        _ => "",
                    },
                })
            }
        }
        let v: Value = serde_json::from_slice(&body).map_err(|e| PveError::Malformed {
            path: path.to_string(),
            why: format!("invalid JSON at line {} column {}", e.line(), e.column()),
        })?;
        match v {
            Value::Object(mut m) if m.contains_key("data") => {
                Ok(m.remove("data").unwrap_or(Value::Null))
            }
            _ => Err(PveError::Malformed {
                path: path.to_string(),
                why: "no \"data\" member".into(),
            }),
        }
    }

    /// `PVE_NODE`, else the first node the API lists.
    pub(crate) async fn node(&self) -> Result<String, PveError> {
        if let Some(n) = &self.cfg.node {
            return Ok(n.clone());
        }
        let path = "/nodes";
        let data = self.get(path).await?;
        let list = data.as_array().ok_or_else(|| PveError::Malformed {
            path: path.into(),
            why: "data is not a list".into(),
        })?;
        let first = list
            .first()
            .ok_or(PveError::NoNode)?
            .get("node")
            .and_then(Value::as_str)
            .ok_or_else(|| PveError::Malformed {
                path: path.into(),
                why: "a node without a name".into(),
            })?;
        if !valid_node(first) {
            return Err(PveError::Malformed {
                path: path.into(),
                why: "a node name with unexpected characters".into(),
            });
        }
        Ok(first.to_string())
    }

    pub(crate) async fn containers(&self, node: &str) -> Result<Vec<Container>, PveError> {
        let path = format!("/nodes/{node}/lxc");
        let data = self.get(&path).await?;
        parse_containers(&path, &data)
    }

    /// One container's config, read once: its execd token and what it says the container is
    /// (hostname, net0) for the identity check.
    pub(crate) async fn token_and_identity(
        &self,
        node: &str,
        vmid: u32,
    ) -> Result<(Option<Secret>, Option<crate::identity::IdentityClaim>), PveError> {
        let data = self
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"))
            .await?;
        Ok((
            token_from_config(&data),
            crate::identity::claim_from_pve_config(&data),
        ))
    }
}

impl PveApi {
    /// The container's hostname (`hostname` of `GET /nodes/{node}/lxc/{vmid}/config`): the 2026
    /// layout's `{instance}`. `None` when the config has none or it is not a hostname.
    pub(crate) async fn hostname(&self, node: &str, vmid: u32) -> Result<Option<String>, PveError> {
        let data = self
            .get(&format!("/nodes/{node}/lxc/{vmid}/config"))
            .await?;
        Ok(data
            .get("hostname")
            .and_then(Value::as_str)
            .filter(|h| crate::target::valid_hostname(h))
            .map(str::to_string))
    }
}

/// Resolves what the command line asked for through the PVE API: `--all`'s targets (and the
/// skipped ones), instance names as VMIDs, and per-target exec tokens when `need_tokens` (no token
/// was given). Without the API: the VMIDs as given.
pub(crate) async fn resolve(
    pve: Option<&PveConfig>,
    req: &TargetRequest,
    need_tokens: bool,
    concurrency: usize,
) -> Result<Targets, PveError> {
    let mut out = Targets::given(req.vmids.clone());
    let Some(pve) = pve else {
        return Ok(out);
    };
    let need_list = req.all || !req.names.is_empty();
    if !need_list && !need_tokens {
        return Ok(out);
    }
    if pve.base.starts_with("https:") && !pve.verify_tls {
        out.warnings.push(
            "note: the PVE API's TLS certificate is not verified (as in cmux); set PVE_VERIFY_TLS=1 to verify it"
                .into(),
        );
    }
    let api = PveApi::new(pve)?;
    let node = match api.node().await {
        Ok(n) => n,
        Err(e) if !need_list => {
            out.warnings
                .push(format!("warning: no exec tokens from the PVE API: {e}"));
            return Ok(out);
        }
        Err(e) => return Err(e),
    };
    if need_list {
        let cts = api.containers(&node).await?;
        if req.all {
            pick_running(&cts, &node, &mut out);
        }
        for name in &req.names {
            let c = cts
                .iter()
                .find(|c| &c.name == name)
                .ok_or_else(|| PveError::UnknownName {
                    name: name.clone(),
                    node: node.clone(),
                })?;
            if c.status != "running" {
                out.warnings.push(format!(
                    "warning: {name} (VMID {}) is {} on node {node}",
                    c.vmid, c.status
                ));
            }
            if !out.vmids.contains(&c.vmid) {
                out.vmids.push(c.vmid);
            }
        }
    }
    if need_tokens {
        (out.exec_tokens, out.expected_identity) =
            tokens(&api, &node, &out.vmids, concurrency, &mut out.warnings).await;
    }
    Ok(out)
}

/// `--all`: the running cmux containers become targets; stopped ones and templates are skipped.
fn pick_running(cts: &[Container], node: &str, out: &mut Targets) {
    for c in cts.iter().filter(|c| is_instance_name(&c.name)) {
        let reason = if c.template {
            Some("template".to_string())
        } else if c.status != "running" {
            Some(format!("not running ({})", c.status))
        } else {
            None
        };
        match reason {
            Some(reason) => out.skipped.push(SkippedTarget {
                vmid: c.vmid,
                name: c.name.clone(),
                reason,
            }),
            None if !out.vmids.contains(&c.vmid) => out.vmids.push(c.vmid),
            None => {}
        }
    }
    if out.vmids.is_empty() {
        out.warnings.push(format!(
            "note: the PVE API lists no running cmux container on node {node}"
        ));
    }
}

/// Each target's exec token from its container config, `concurrency` requests at a time.
async fn tokens(
    api: &PveApi,
    node: &str,
    vmids: &[u32],
    concurrency: usize,
    warnings: &mut Vec<String>,
) -> (
    BTreeMap<u32, Secret>,
    BTreeMap<u32, Vec<crate::identity::IdentityClaim>>,
) {
    let sem = tokio::sync::Semaphore::new(concurrency.max(1));
    let found = futures_util::future::join_all(vmids.iter().map(|&vmid| {
        let sem = &sem;
        async move {
            let _permit = sem.acquire().await;
            (vmid, api.token_and_identity(node, vmid).await)
        }
    }))
    .await;
    let mut tokens = BTreeMap::new();
    let mut identity = BTreeMap::new();
    for (vmid, r) in found {
        match r {
            Ok((t, claim)) => {
                if let Some(t) = t {
                    tokens.insert(vmid, t);
                }
                // The same config read says what the container is (see crate::identity).
                if let Some(c) = claim {
                    identity.insert(vmid, vec![c]);
                }
            }
            Err(e) => warnings.push(format!(
                "warning: no exec token for VMID {vmid} from the PVE API: {e}"
            )),
        }
    }
    (tokens, identity)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const T: &str = "3f9a1c7e5b2d4086a1e3c5b7d9f0a2c4e6b8d0f1a3c5e7b9d1f3a5c7e9b0d2f4";

    #[test]
    fn tokens_from_env_and_description() {
        let env = format!("FOO=bar\0CMUX_EXECD_AUTH_TOKEN={T}\0X=1");
        let t = token_from_config(&json!({ "env": env })).unwrap();
        assert_eq!(t.expose(), T);
        let d = format!("cmux sandbox\ncmux-execd-auth-token={T}\n");
        let t = token_from_config(&json!({ "description": d })).unwrap();
        assert_eq!(t.expose(), T);
        assert!(token_from_config(&json!({ "env": "CMUX_EXECD_AUTH_TOKEN=short" })).is_none());
        assert!(token_from_config(&json!({ "description": "nothing here" })).is_none());
        assert!(token_from_config(&json!({})).is_none());
    }

    #[test]
    fn container_list() {
        let data = json!([
            {"vmid": 203, "name": "pvelxc-1a2b3c4d", "status": "running"},
            {"vmid": "202", "name": "cmux-202", "status": "stopped"},
            {"vmid": 9000, "name": "cmux-template", "status": "stopped", "template": 1},
        ]);
        let c = parse_containers("/x", &data).unwrap();
        assert_eq!(
            c.iter().map(|c| c.vmid).collect::<Vec<_>>(),
            [202, 203, 9000]
        );
        assert!(c[2].template && !c[0].template);
        assert!(parse_containers("/x", &json!({"a": 1})).is_err());
        assert!(parse_containers("/x", &json!([{"name": "x"}])).is_err());
        assert!(
            is_instance_name("cmux-202") && is_instance_name("pvelxc-1") && !is_instance_name("db")
        );
    }

    #[test]
    fn exit_codes_and_no_token_in_messages() {
        assert_eq!(
            PveError::Unauthorized {
                path: "/nodes".into()
            }
            .exit_code(),
            2
        );
        assert_eq!(
            PveError::Timeout {
                path: "/nodes".into(),
                ms: 1
            }
            .exit_code(),
            3
        );
    }
}
