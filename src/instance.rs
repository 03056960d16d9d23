//! Instances: a container's hostname, the `{instance}` of the 2026 layout's public names
//! (`port-{port}-{instance}.DOMAIN`) and of Caddy's upstream `{instance}.lan`.
//!
//! This is the one place that maps VMID -> hostname (and a hostname given as a target -> VMID):
//!
//! 1. the Proxmox VE API: `GET /nodes/{node}/lxc/{vmid}/config`, field `hostname`;
//! 2. the host vantage (`--on-host`, `--ssh`): `pct config VMID` (`hostname:` line) and `pct list`;
//! 3. a target given as a hostname is taken as is (`cmux-202` is VMID 202 by cmux's naming);
//! 4. else `cmux-{vmid}`, the name cmux gave containers before the `pvelxc-` names.
//!
//! The hostname found here is also the identity a target is expected to have.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use crate::cli::UsageError;
use crate::settings::Settings;
use crate::target::{TargetRequest, Targets};

/// A container's hostname and where it was learnt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub hostname: String,
    pub source: InstanceSource,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InstanceSource {
    /// `hostname` of the container's config in the PVE API.
    PveApi,
    /// `pct config` on the PVE host.
    Pct,
    /// Given as the target on the command line.
    Given,
    /// Nothing knew better: `cmux-{vmid}`.
    Default,
}

impl InstanceSource {
    pub fn describe(self) -> &'static str {
        match self {
            InstanceSource::PveApi => "the PVE API's container config",
            InstanceSource::Pct => "`pct config` on the host",
            InstanceSource::Given => "the command line",
            InstanceSource::Default => "assumed: cmux-{vmid}, no PVE API or host vantage to ask",
        }
    }
}

/// A DNS label as cmux names containers: lower-case letters, digits and '-', 1-63 characters.
pub fn valid_hostname(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 63
        && !h.starts_with('-')
        && !h.ends_with('-')
        && h.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
}

/// `cmux-202` -> 202: cmux's older containers are named by their VMID.
pub fn vmid_of_cmux_name(name: &str) -> Option<u32> {
    name.strip_prefix("cmux-")
        .and_then(|r| crate::target::parse_vmid(r).ok())
}

/// The one line per VMID the host script prints: `instance VMID HOSTNAME` (HOSTNAME may be empty).
fn parse_pct_lines(stdout: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for l in stdout.lines() {
        let mut w = l.split_whitespace();
        if w.next() != Some("instance") {
            continue;
        }
        let (Some(v), Some(h)) = (w.next(), w.next()) else {
            continue;
        };
        if let (Ok(v), true) = (v.parse::<u32>(), valid_hostname(h)) {
            out.insert(v, h.to_string());
        }
    }
    out
}

/// `pct list` as printed on a PVE host: `VMID Status Lock Name` (Lock may be empty).
pub fn parse_pct_list(stdout: &str) -> BTreeMap<String, u32> {
    let mut out = BTreeMap::new();
    for l in stdout
        .lines()
        .skip_while(|l| l.trim_start().starts_with("VMID"))
    {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() < 3 {
            continue;
        }
        if let (Ok(v), Some(name)) = (w[0].parse::<u32>(), w.last()) {
            if valid_hostname(name) {
                out.insert(name.to_string(), v);
            }
        }
    }
    out
}

/// The script that asks `pct` for every VMID's hostname (VMIDs are numbers: nothing else reaches it).
fn pct_script(vmids: &[u32]) -> String {
    let list: Vec<String> = vmids.iter().map(u32::to_string).collect();
    format!(
        "for v in {}; do h=$(pct config \"$v\" 2>/dev/null | sed -n 's/^hostname: *//p' | head -n1); printf 'instance %s %s\\n' \"$v\" \"$h\"; done\npct list 2>/dev/null | sed 's/^/list /'\n",
        list.join(" ")
    )
}

/// Fills `targets.instances` for every target, and turns instance names given as targets into
/// VMIDs where the PVE API did not (see the module documentation for the order).
pub async fn resolve(
    settings: &Settings,
    request: &TargetRequest,
    targets: &mut Targets,
) -> Result<(), UsageError> {
    let mut found: BTreeMap<u32, Instance> = BTreeMap::new();
    // With the PVE API, names are already VMIDs (crate::pve::resolve); without it, here.
    let names: Vec<String> = if settings.pve.is_some() {
        Vec::new()
    } else {
        request.names.clone()
    };
    let mut pct_list: Option<BTreeMap<String, u32>> = None;
    let timeout = settings.probe.timeout;

    // The host vantage: one script for every target.
    if let Some(h) = settings.probe.host.clone() {
        let mut ask: Vec<u32> = targets.vmids.clone();
        ask.extend(names.iter().filter_map(|n| vmid_of_cmux_name(n)));
        ask.sort_unstable();
        ask.dedup();
        let out = crate::probe::host::run_script(&h, None, &pct_script(&ask), timeout).await;
        if let Ok(o) = out {
            for (v, name) in parse_pct_lines(&o.stdout) {
                found.insert(
                    v,
                    Instance {
                        hostname: name,
                        source: InstanceSource::Pct,
                    },
                );
            }
            let list: String = o
                .stdout
                .lines()
                .filter_map(|l| l.strip_prefix("list "))
                .map(|l| format!("{l}\n"))
                .collect();
            if !list.trim().is_empty() {
                pct_list = Some(parse_pct_list(&list));
            }
        }
    }

    for name in names {
        let vmid = pct_list
            .as_ref()
            .and_then(|l| l.get(&name).copied())
            .or_else(|| vmid_of_cmux_name(&name));
        let Some(vmid) = vmid else {
            return Err(UsageError::new(format!(
                "the instance name {name:?} needs the Proxmox VE API (PVE_API_URL, PVE_API_TOKEN) or the host vantage (--on-host, --ssh) to find its VMID"
            )));
        };
        if !targets.vmids.contains(&vmid) {
            targets.vmids.push(vmid);
        }
        found.entry(vmid).or_insert(Instance {
            hostname: name,
            source: InstanceSource::Given,
        });
    }

    // The PVE API, for every target `pct` did not answer for.
    if let Some(pve) = settings.pve.clone() {
        let missing: Vec<u32> = targets
            .vmids
            .iter()
            .copied()
            .filter(|v| !matches!(found.get(v), Some(i) if i.source == InstanceSource::Pct))
            .collect();
        if !missing.is_empty() {
            match crate::pve::PveApi::new(&pve) {
                Ok(api) => match api.node().await {
                    Ok(node) => {
                        let sem = tokio::sync::Semaphore::new(settings.concurrency.max(1));
                        let got = futures_util::future::join_all(missing.iter().map(|&v| {
                            let (api, node, sem) = (&api, &node, &sem);
                            async move {
                                let _p = sem.acquire().await;
                                (v, api.hostname(node, v).await)
                            }
                        }))
                        .await;
                        for (v, r) in got {
                            match r {
                                Ok(Some(h)) => {
                                    found.insert(
                                        v,
                                        Instance {
                                            hostname: h,
                                            source: InstanceSource::PveApi,
                                        },
                                    );
                                }
                                Ok(None) => {}
                                Err(e) => targets.warnings.push(format!(
                                    "warning: no hostname for VMID {v} from the PVE API ({e}); its 2026 URLs use {}",
                                    crate::target::default_instance(v)
                                )),
                            }
                        }
                    }
                    Err(e) => targets.warnings.push(format!(
                        "warning: no container hostnames from the PVE API: {e}"
                    )),
                },
                Err(e) => targets.warnings.push(format!(
                    "warning: no container hostnames from the PVE API: {e}"
                )),
            }
        }
    }
    for &v in &targets.vmids {
        let i = found.remove(&v).unwrap_or_else(|| Instance {
            hostname: crate::target::default_instance(v),
            source: InstanceSource::Default,
        });
        targets.instances.insert(v, i);
    }
    Ok(())
}

/// Resolution with a bound: the host script and the API each have their own timeouts; this is the
/// outer bound so a hung vantage can never hold the run.
pub async fn resolve_within(
    settings: &Settings,
    request: &TargetRequest,
    targets: &mut Targets,
    bound: Duration,
) -> Result<(), UsageError> {
    match tokio::time::timeout(bound, resolve(settings, request, targets)).await {
        Ok(r) => r,
        Err(_) => {
            targets.warnings.push(format!(
                "warning: container hostnames not resolved within {} ms; 2026 URLs use cmux-{{vmid}}",
                bound.as_millis()
            ));
            for &v in &targets.vmids {
                targets.instances.entry(v).or_insert_with(|| Instance {
                    hostname: crate::target::default_instance(v),
                    source: InstanceSource::Default,
                });
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pct_output() {
        let out = "instance 202 pvelxc-1a2b3c4d\ninstance 203 \ninstance 204 BAD_NAME\n";
        let m = parse_pct_lines(out);
        assert_eq!(m.get(&202).map(String::as_str), Some("pvelxc-1a2b3c4d"));
        assert_eq!(m.len(), 1);
        let list = "VMID       Status     Lock         Name\n202        running                 pvelxc-1a2b3c4d\n203        stopped    backup       cmux-203\n";
        let l = parse_pct_list(list);
        assert_eq!(l.get("pvelxc-1a2b3c4d"), Some(&202));
        assert_eq!(l.get("cmux-203"), Some(&203));
        assert!(pct_script(&[202, 203]).starts_with("for v in 202 203;"));
    }

    #[test]
    fn names() {
        assert_eq!(vmid_of_cmux_name("cmux-202"), Some(202));
        assert_eq!(vmid_of_cmux_name("pvelxc-1a2b3c4d"), None);
        assert!(valid_hostname("pvelxc-1a2b3c4d"));
        for bad in ["", "-a", "a-", "A", "a.b", "a b", "a;b"] {
            assert!(!valid_hostname(bad), "{bad}");
        }
    }
}
