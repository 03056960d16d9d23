//! Sandbox identity: "healthy means the right sandbox answered".
//!
//! Caddy sends `{service}-202.{domain}` to `cmux-202.lan`, and that name is whatever the LAN's
//! DHCP/DNS says. After a clone, a reused hostname, a stale lease or a hand-edited route it can
//! point at another user's sandbox: every answer is a healthy 200 with the right fingerprint, from
//! the wrong container. This module holds what proves who answered:
//!
//! - **reported**: the internal command (the same exec round trip that probes the services) says
//!   who it ran in: the hostname (bash's `$HOSTNAME`, i.e. `gethostname()`), `/etc/machine-id` and
//!   the container's IPv4 addresses (the `/32 host LOCAL` entries of `/proc/net/fib_trie`). Bash
//!   builtins only: no extra process in the container.
//! - **expected**: claims about the target, each with its source: the PVE API (the container
//!   config's `hostname` and `net0`), the host vantage (`pct config VMID`), else the generation's
//!   naming convention (`cmux-{vmid}`, or the instance in the 2026 URL).
//! - **host**: with the host vantage, what `{name}.lan` resolves to on the host and the container's
//!   own addresses (`pct exec VMID -- ip -4 -o addr show scope global`).
//!
//! [`assess`] compares them (pure). The verdict engine's `verdict_identity.rs` turns the comparison
//! into the identity rows of the decision table (docs/diagnosis.md) and applies them over every
//! service.

use std::collections::BTreeMap;

use serde::Serialize;

// ---------------------------------------------------------------------------------------------
// Observations

/// Who the internal command ran in, as it reported itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct ReportedIdentity {
    /// `gethostname()` as bash sees it (`$HOSTNAME`); `None` when empty.
    pub(crate) hostname: Option<String>,
    /// `/etc/machine-id`; `None` when unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) machine_id: Option<String>,
    /// The container's own IPv4 addresses (loopback left out).
    pub(crate) ipv4: Vec<String>,
}

/// Where an expected identity comes from. Stable names: they appear in JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum IdentitySource {
    /// `GET /nodes/{node}/lxc/{vmid}/config` of the PVE API.
    PveApi,
    /// `pct config VMID` on the host vantage.
    PctConfig,
    /// The generation's naming convention (`cmux-{vmid}`, the instance of the 2026 URL).
    Convention,
}

impl IdentitySource {
    pub(crate) fn describe(self, vmid: u32) -> String {
        match self {
            IdentitySource::PveApi => format!("the PVE API's config of {vmid}"),
            IdentitySource::PctConfig => format!("pct config {vmid} on the host"),
            IdentitySource::Convention => "the naming convention".into(),
        }
    }
}

/// One source's claim about the target's identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct IdentityClaim {
    pub(crate) source: IdentitySource,
    pub(crate) hostname: Option<String>,
    /// Static addresses (`net0: ...,ip=10.0.0.5/24`); empty with DHCP.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) ipv4: Vec<String>,
    /// `net0`'s `hwaddr`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) mac: Option<String>,
}

/// The host vantage's view of the target's name and address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct HostIdentity {
    /// The name Caddy dials, e.g. `cmux-202.lan`.
    pub(crate) lan_name: String,
    /// What it resolves to on the host (`getent ahostsv4`); `None`: not looked up, `Some([])`:
    /// it does not resolve.
    pub(crate) lan_ipv4: Option<Vec<String>>,
    /// The container's own addresses (`pct exec VMID -- ip -4 -o addr show scope global`).
    pub(crate) own_ipv4: Option<Vec<String>>,
}

/// Everything observed about one target's identity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct IdentityObservation {
    /// What the internal command reported; `None` when it ran nowhere or said nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reported: Option<ReportedIdentity>,
    /// The channel that carried the report: `exec` or `pct`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reported_via: Option<String>,
    pub(crate) expected: Vec<IdentityClaim>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) host: Option<HostIdentity>,
    /// Other targets of the run whose exec call reported this very sandbox.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) shared_with: Vec<u32>,
}

// ---------------------------------------------------------------------------------------------
// The internal command's identity section (bash builtins only) and its record

/// Bash that prints one `@pvediagid NONCE h=HOST m=MACHINEID a=IP,IP end` line. Uses the script's
/// nonce variable `$n`. Only builtins (`read`, `case`, `printf`): no process in the container.
/// Characters outside `[A-Za-z0-9.-]` become `_`, so the line always has its five fields.
pub(crate) const CONTAINER_SECTION: &str = r#"pvediag_identity() {
  local h=${HOSTNAME-} m= a= l c= s=' '
  { read -r m < /etc/machine-id; } 2>/dev/null
  if { exec 9< /proc/net/fib_trie; } 2>/dev/null; then
    while read -r l <&9; do
      case $l in
        '|-- '*) c=${l#'|-- '} ;;
        '/32 host LOCAL'*) case $c in 127.*|'') ;; *) case $s in *" $c "*) ;; *) s="$s$c "; a=$a${a:+,}$c ;; esac ;; esac ;;
      esac
    done
    exec 9<&-
  fi
  h=${h//[^A-Za-z0-9.-]/_}; m=${m//[^A-Za-z0-9]/_}; a=${a//[^0-9.,]/_}
  printf '@pvediagid %s h=%s m=%s a=%s end\n' "$n" "$h" "$m" "$a"
}
pvediag_identity
"#;

/// Parses the identity line of `nonce`; `None` for any other line.
pub(crate) fn parse_line(line: &str, nonce: &str) -> Option<ReportedIdentity> {
    let rest = line.strip_prefix("@pvediagid ")?;
    let mut it = rest.split(' ');
    if it.next()? != nonce {
        return None;
    }
    let mut fields = BTreeMap::new();
    let mut ended = false;
    for f in it {
        if f == "end" {
            ended = true;
            break;
        }
        let (k, v) = f.split_once('=')?;
        fields.insert(k, v);
    }
    if !ended {
        return None;
    }
    let nonempty = |k: &str| {
        fields
            .get(k)
            .filter(|v| !v.is_empty() && !v.contains('_'))
            .map(|v| v.to_ascii_lowercase())
    };
    Some(ReportedIdentity {
        hostname: nonempty("h"),
        machine_id: nonempty("m"),
        ipv4: fields
            .get("a")
            .map(|a| ipv4_list(a.split(',')))
            .unwrap_or_default(),
    })
}

/// Valid dotted IPv4 addresses of `items`, sorted, without duplicates.
pub(crate) fn ipv4_list<'a>(items: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut v: Vec<String> = items
        .filter_map(|s| s.trim().parse::<std::net::Ipv4Addr>().ok())
        .filter(|a| !a.is_loopback() && !a.is_unspecified())
        .map(|a| a.to_string())
        .collect();
    v.sort();
    v.dedup();
    v
}

// ---------------------------------------------------------------------------------------------
// The host vantage's identity section

/// Bash for the host script (uses its `$T` timeout): resolves the target's `.lan` name, and (with `pct`) reads the
/// container's config and own addresses. Prints `@pvediaglan`, `@pvediagpct` lines of `nonce`.
/// `lan_name` must be a valid host (see [`crate::shell::valid_host`]); the VMID is a number.
pub(crate) fn host_section(lan_name: &str, vmid: u32, nonce: &str, with_pct: bool) -> String {
    let q = crate::shell::shell_quote;
    let mut s = format!(
        "pvediag_lan() {{\n  local l a=\n  while read -r l _; do a=$a${{a:+,}}$l; done < <(timeout \"$T\" getent ahostsv4 {name} 2>/dev/null)\n  printf '@pvediaglan %s %s a=%s end\\n' {nonce} {name} \"${{a//[^0-9.,]/_}}\"\n}}\npvediag_lan\n",
        name = q(lan_name),
        nonce = q(nonce),
    );
    if with_pct {
        // `pct config` gives hostname and net0; `ip -4 -o addr` inside gives the address DHCP gave.
        s.push_str(&format!(
            "pvediag_pct() {{\n  local l h= net= a=\n  while read -r l; do case $l in 'hostname: '*) h=${{l#hostname: }} ;; 'net0: '*) net=${{l#net0: }} ;; esac; done < <(timeout \"$T\" pct config {vmid} 2>/dev/null)\n  while read -r _ _ _ l _; do a=$a${{a:+,}}${{l%/*}}; done < <(timeout \"$T\" pct exec {vmid} -- ip -4 -o addr show scope global 2>/dev/null)\n  h=${{h//[^A-Za-z0-9.-]/_}}; net=${{net//[^A-Za-z0-9=,.:\\/]/_}}; a=${{a//[^0-9.,]/_}}\n  printf '@pvediagpct %s h=%s net=%s a=%s end\\n' {nonce} \"$h\" \"$net\" \"$a\"\n}}\npvediag_pct\n",
            nonce = q(nonce),
        ));
    }
    s
}

/// What the host section printed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostLines {
    pub(crate) lan_ipv4: Option<Vec<String>>,
    pub(crate) pct_claim: Option<IdentityClaim>,
    pub(crate) own_ipv4: Option<Vec<String>>,
}

/// Reads the host section's lines of `nonce` out of a script's stdout.
pub(crate) fn parse_host_lines(stdout: &str, nonce: &str) -> HostLines {
    let mut out = HostLines::default();
    for line in stdout.lines() {
        let line = line.trim_end_matches('\r');
        let fields = |rest: &str| -> Option<BTreeMap<String, String>> {
            let mut m = BTreeMap::new();
            let mut ended = false;
            for f in rest.split(' ') {
                if f == "end" {
                    ended = true;
                    break;
                }
                if let Some((k, v)) = f.split_once('=') {
                    m.insert(k.to_string(), v.to_string());
                }
            }
            ended.then_some(m)
        };
        if let Some(rest) = line
            .strip_prefix("@pvediaglan ")
            .and_then(|r| r.strip_prefix(nonce))
        {
            if let Some(m) = fields(rest) {
                out.lan_ipv4 = Some(ipv4_list(m.get("a").map_or("", |s| s).split(',')));
            }
        } else if let Some(rest) = line
            .strip_prefix("@pvediagpct ")
            .and_then(|r| r.strip_prefix(nonce))
        {
            if let Some(m) = fields(rest) {
                let h = m.get("h").filter(|h| !h.is_empty() && !h.contains('_'));
                let net = m.get("net").map(String::as_str).unwrap_or("");
                let (mac, ip) = parse_net0(net);
                if h.is_some() || mac.is_some() {
                    out.pct_claim = Some(IdentityClaim {
                        source: IdentitySource::PctConfig,
                        hostname: h.map(|h| h.to_ascii_lowercase()),
                        ipv4: ip,
                        mac,
                    });
                }
                let a = ipv4_list(m.get("a").map_or("", |s| s).split(','));
                if !a.is_empty() {
                    out.own_ipv4 = Some(a);
                }
            }
        }
    }
    out
}

/// `net0` of a container config: `name=eth0,bridge=vmbr0,hwaddr=BC:24:11:..,ip=10.0.0.5/24,type=veth`
/// -> (MAC, static IPv4 addresses).
pub(crate) fn parse_net0(net0: &str) -> (Option<String>, Vec<String>) {
    let mut mac = None;
    let mut ip = Vec::new();
    for kv in net0.split(',') {
        match kv.split_once('=') {
            Some(("hwaddr", m)) if !m.is_empty() => mac = Some(m.to_ascii_lowercase()),
            Some(("ip", a)) => ip = ipv4_list(std::iter::once(a.split('/').next().unwrap_or(""))),
            _ => {}
        }
    }
    (mac, ip)
}

/// The claim of a container config from the PVE API (`{"hostname": ..., "net0": ...}`).
pub(crate) fn claim_from_pve_config(data: &serde_json::Value) -> Option<IdentityClaim> {
    let hostname = data
        .get("hostname")
        .and_then(|h| h.as_str())
        .filter(|h| crate::shell::valid_host(h))
        .map(str::to_ascii_lowercase);
    let (mac, ipv4) = parse_net0(data.get("net0").and_then(|n| n.as_str()).unwrap_or(""));
    (hostname.is_some() || mac.is_some()).then_some(IdentityClaim {
        source: IdentitySource::PveApi,
        hostname,
        ipv4,
        mac,
    })
}

// ---------------------------------------------------------------------------------------------
// Naming convention

/// The sandbox a public hostname names: the instance of the 2026 layout
/// (`port-{port}-{instance}.DOMAIN`), else `cmux-{vmid}` (the seed layout's `{service}-{vmid}`).
pub(crate) fn instance_of_host(public_host: &str, vmid: u32) -> String {
    let first = public_host.split('.').next().unwrap_or("");
    if let Some(rest) = first.strip_prefix("port-") {
        if let Some((port, instance)) = rest.split_once('-') {
            if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) && !instance.is_empty()
            {
                return instance.to_ascii_lowercase();
            }
        }
    }
    format!("cmux-{vmid}")
}

/// The convention's claim for a target whose exec URL has this public host.
pub(crate) fn convention_claim(public_host: &str, vmid: u32) -> IdentityClaim {
    IdentityClaim {
        source: IdentitySource::Convention,
        hostname: Some(instance_of_host(public_host, vmid)),
        ipv4: Vec::new(),
        mac: None,
    }
}

/// A host name that names a sandbox (`cmux-203.lan`, `pvelxc-1a2b3c4d.lan`): the sandbox name.
pub(crate) fn sandbox_of_upstream(host: &str) -> Option<String> {
    let h = host
        .strip_suffix(".lan")
        .unwrap_or(host)
        .to_ascii_lowercase();
    let is_sandbox = h
        .strip_prefix("cmux-")
        .is_some_and(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        || h.strip_prefix("pvelxc-").is_some_and(|v| {
            !v.is_empty() && v.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
        });
    is_sandbox.then_some(h)
}

// ---------------------------------------------------------------------------------------------
// Assessment (pure)

/// What the identity evidence says about one target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Assessment {
    /// The exec call ran in the expected sandbox.
    Confirmed { name: String, how: String },
    /// It ran somewhere else.
    Contradicted {
        expected: String,
        expected_from: String,
        reached: String,
        how: String,
    },
    /// Nothing to compare (no report, or no hostname in it).
    Unknown { why: String },
}

/// The expected hostname: PVE API first, then `pct config`, then the convention.
pub(crate) fn expected_hostname(o: &IdentityObservation) -> Option<(&str, IdentitySource)> {
    let mut claims: Vec<&IdentityClaim> = o.expected.iter().collect();
    claims.sort_by_key(|c| c.source);
    claims
        .into_iter()
        .find_map(|c| c.hostname.as_deref().map(|h| (h, c.source)))
}

/// Sources that name different hostnames: `source says X` lines (empty when they agree).
pub(crate) fn disagreements(o: &IdentityObservation, vmid: u32) -> Vec<String> {
    let names: Vec<(&str, IdentitySource)> = o
        .expected
        .iter()
        .filter_map(|c| c.hostname.as_deref().map(|h| (h, c.source)))
        .collect();
    let first = names.first().map(|(h, _)| *h);
    if names.iter().all(|(h, _)| Some(*h) == first) {
        return Vec::new();
    }
    names
        .iter()
        .map(|(h, s)| format!("{} says {h}", s.describe(vmid)))
        .collect()
}

/// The sandbox name of a hostname (`cmux-202.lan` → `cmux-202`); an expected identity that carries
/// its address (`cmux-202 (10.0.0.5)`, a clone told apart by it) gives its name too.
pub(crate) fn short_host(h: &str) -> &str {
    h.split(['.', ' ']).next().unwrap_or(h)
}

/// Compares what the target reported with what is expected of it.
pub(crate) fn assess(o: &IdentityObservation, vmid: u32) -> Assessment {
    let Some(r) = &o.reported else {
        return Assessment::Unknown {
            why: "the internal command reported no identity".into(),
        };
    };
    let Some(got) = r.hostname.as_deref() else {
        return Assessment::Unknown {
            why: "the internal command reported no hostname".into(),
        };
    };
    let via = o.reported_via.as_deref().unwrap_or("exec");
    let Some((want, from)) = expected_hostname(o) else {
        return Assessment::Unknown {
            why: format!("no expected hostname for {vmid}"),
        };
    };
    let own: Option<&Vec<String>> = o
        .host
        .as_ref()
        .and_then(|h| h.own_ipv4.as_ref())
        .filter(|a| !a.is_empty())
        .or_else(|| o.expected.iter().map(|c| &c.ipv4).find(|a| !a.is_empty()));
    if !short_host(got).eq_ignore_ascii_case(short_host(want)) {
        let mut how = format!("the {via} call's command reported hostname {got}");
        if !r.ipv4.is_empty() {
            how.push_str(&format!(" and address {}", r.ipv4.join(", ")));
        }
        return Assessment::Contradicted {
            expected: want.to_string(),
            expected_from: from.describe(vmid),
            reached: short_host(got).to_string(),
            how,
        };
    }
    // Same hostname: a clone or a reused name can still be another container. Its addresses tell.
    if let Some(own) = own {
        if !r.ipv4.is_empty() && !r.ipv4.iter().any(|a| own.contains(a)) {
            return Assessment::Contradicted {
                expected: format!("{want} ({})", own.join(", ")),
                expected_from: format!("{vmid}'s own address"),
                reached: format!("another container named {got} ({})", r.ipv4.join(", ")),
                how: format!(
                    "the {via} call's command reported hostname {got} but address {}, not {vmid}'s {}",
                    r.ipv4.join(", "),
                    own.join(", ")
                ),
            };
        }
    }
    let mut how = format!("hostname {got}, as {} expects", from.describe(vmid));
    if !r.ipv4.is_empty() {
        how.push_str(&format!("; address {}", r.ipv4.join(", ")));
    }
    Assessment::Confirmed {
        name: short_host(got).to_string(),
        how,
    }
}

/// The fleet's shared identities: targets whose exec calls reported one sandbox (same hostname,
/// machine id and addresses). Returns, per VMID, the other VMIDs.
pub(crate) fn shared(reports: &[(u32, &ReportedIdentity)]) -> BTreeMap<u32, Vec<u32>> {
    let mut by_key: BTreeMap<(String, Option<String>, Vec<String>), Vec<u32>> = BTreeMap::new();
    for (vmid, r) in reports {
        let Some(h) = &r.hostname else { continue };
        by_key
            .entry((h.clone(), r.machine_id.clone(), r.ipv4.clone()))
            .or_default()
            .push(*vmid);
    }
    let mut out = BTreeMap::new();
    for vmids in by_key.values().filter(|v| v.len() > 1) {
        for v in vmids {
            out.insert(*v, vmids.iter().copied().filter(|o| o != v).collect());
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn identity_line_round_trip() {
        let r = parse_line(
            "@pvediagid n h=cmux-203 m=0123abcd a=10.10.0.203,10.10.0.203,127.0.0.1 end",
            "n",
        )
        .unwrap();
        assert_eq!(r.hostname.as_deref(), Some("cmux-203"));
        assert_eq!(r.machine_id.as_deref(), Some("0123abcd"));
        assert_eq!(r.ipv4, vec!["10.10.0.203"]);
        assert!(parse_line("@pvediagid m h=x m= a= end", "n").is_none());
        assert!(parse_line("@pvediagid n h=x m= a=", "n").is_none());
        let empty = parse_line("@pvediagid n h= m= a= end", "n").unwrap();
        assert_eq!(empty.hostname, None);
        let odd = parse_line("@pvediagid n h=a_b m= a= end", "n").unwrap();
        assert_eq!(odd.hostname, None);
    }

    #[test]
    fn container_section_reads_a_fib_trie_with_bash() {
        let dir = tempfile::tempdir().unwrap();
        let fib = dir.path().join("fib_trie");
        std::fs::write(
            &fib,
            "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n     +-- 10.10.0.0/24 2 0 2\n           |-- 10.10.0.0\n              /24 link UNICAST\n           |-- 10.10.0.202\n              /32 host LOCAL\n        |-- 10.10.0.255\n           /32 link BROADCAST\nLocal:\n           |-- 10.10.0.202\n              /32 host LOCAL\n",
        )
        .unwrap();
        let mid = dir.path().join("machine-id");
        std::fs::write(&mid, "4f1c0a9e2b7d4c3a8e6f5d4c3b2a1908\n").unwrap();
        let script = format!(
            "n=abc\n{}",
            CONTAINER_SECTION
                .replace("/proc/net/fib_trie", fib.to_str().unwrap())
                .replace("/etc/machine-id", mid.to_str().unwrap())
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HOSTNAME", "cmux-202")
            .output()
            .unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        let r = parse_line(stdout.trim(), "abc").unwrap();
        assert_eq!(r.hostname.as_deref(), Some("cmux-202"));
        assert_eq!(
            r.machine_id.as_deref(),
            Some("4f1c0a9e2b7d4c3a8e6f5d4c3b2a1908")
        );
        assert_eq!(r.ipv4, vec!["10.10.0.202"]);
        // Missing sources: still one line, fields empty.
        let script = format!(
            "n=abc\n{}",
            CONTAINER_SECTION
                .replace("/proc/net/fib_trie", "/nonexistent/fib")
                .replace("/etc/machine-id", "/nonexistent/mid")
        );
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(&script)
            .env("HOSTNAME", "we;ird host")
            .output()
            .unwrap();
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r = parse_line(String::from_utf8(out.stdout).unwrap().trim(), "abc").unwrap();
        assert_eq!(r.hostname, None);
        assert!(r.ipv4.is_empty());
    }

    #[test]
    fn host_lines() {
        let out = "@pvediaglan n 'x' a=10.10.0.203 end\n@pvediaglan n cmux-202.lan a=10.10.0.203 end\n@pvediagpct n h=cmux-202 net=name=eth0,bridge=vmbr0,hwaddr=BC:24:11:00:02:02,ip=dhcp,type=veth a=10.10.0.202 end\n";
        let h = parse_host_lines(out, "n");
        assert_eq!(h.lan_ipv4, Some(vec!["10.10.0.203".to_string()]));
        assert_eq!(h.own_ipv4, Some(vec!["10.10.0.202".to_string()]));
        let c = h.pct_claim.unwrap();
        assert_eq!(c.hostname.as_deref(), Some("cmux-202"));
        assert_eq!(c.mac.as_deref(), Some("bc:24:11:00:02:02"));
        assert!(c.ipv4.is_empty());
        let none = parse_host_lines("@pvediaglan n cmux-202.lan a= end\n", "n");
        assert_eq!(none.lan_ipv4, Some(vec![]));
        assert_eq!(parse_host_lines("", "n"), HostLines::default());
    }

    #[test]
    fn pve_config_claim() {
        let c = claim_from_pve_config(&serde_json::json!({
            "hostname": "cmux-202",
            "net0": "name=eth0,bridge=vmbr0,hwaddr=BC:24:11:AA:BB:CC,ip=10.0.0.5/24,type=veth"
        }))
        .unwrap();
        assert_eq!(c.hostname.as_deref(), Some("cmux-202"));
        assert_eq!(c.ipv4, vec!["10.0.0.5"]);
        assert!(claim_from_pve_config(&serde_json::json!({"hostname": "$(id)"})).is_none());
    }

    #[test]
    fn naming_convention_in_both_generations() {
        assert_eq!(instance_of_host("xterm-202.example.test", 202), "cmux-202");
        assert_eq!(
            instance_of_host("port-39375-cmux-202.example.test", 202),
            "cmux-202"
        );
        assert_eq!(
            instance_of_host("port-39375-pvelxc-1a2b3c4d.example.test", 207),
            "pvelxc-1a2b3c4d"
        );
        assert_eq!(
            sandbox_of_upstream("cmux-203.lan").as_deref(),
            Some("cmux-203")
        );
        assert_eq!(
            sandbox_of_upstream("pvelxc-1a2b3c4d.lan").as_deref(),
            Some("pvelxc-1a2b3c4d")
        );
        assert_eq!(sandbox_of_upstream("localhost"), None);
    }

    /// A target's identity as the exec call reported it, expected by the naming convention.
    pub(crate) fn obs(got: &str, ip: &str) -> IdentityObservation {
        IdentityObservation {
            reported: Some(ReportedIdentity {
                hostname: Some(got.into()),
                machine_id: None,
                ipv4: ipv4_list(std::iter::once(ip)),
            }),
            reported_via: Some("exec".into()),
            expected: vec![convention_claim("exec-202.example.test", 202)],
            host: None,
            shared_with: Vec::new(),
        }
    }

    #[test]
    fn assessment() {
        assert!(matches!(
            assess(&obs("cmux-202", "10.0.0.2"), 202),
            Assessment::Confirmed { .. }
        ));
        assert!(matches!(
            assess(&obs("cmux-202.lan", "10.0.0.2"), 202),
            Assessment::Confirmed { .. }
        ));
        match assess(&obs("cmux-203", "10.0.0.3"), 202) {
            Assessment::Contradicted { reached, .. } => assert_eq!(reached, "cmux-203"),
            a => panic!("{a:?}"),
        }
        // A clone with the same hostname: the address tells.
        let mut o = obs("cmux-202", "10.0.0.3");
        o.host = Some(HostIdentity {
            lan_name: "cmux-202.lan".into(),
            lan_ipv4: Some(vec!["10.0.0.3".into()]),
            own_ipv4: Some(vec!["10.0.0.2".into()]),
        });
        assert!(matches!(assess(&o, 202), Assessment::Contradicted { .. }));
        // The PVE API outranks the convention; disagreement is reported.
        let mut o = obs("web-1", "10.0.0.2");
        o.expected.push(IdentityClaim {
            source: IdentitySource::PveApi,
            hostname: Some("web-1".into()),
            ipv4: vec![],
            mac: None,
        });
        assert!(matches!(assess(&o, 202), Assessment::Confirmed { .. }));
        assert_eq!(disagreements(&o, 202).len(), 2);
        let mut o = obs("x", "");
        o.reported.as_mut().unwrap().hostname = None;
        assert!(matches!(assess(&o, 202), Assessment::Unknown { .. }));
    }

    #[test]
    fn fleet_sharing() {
        let a = ReportedIdentity {
            hostname: Some("cmux-203".into()),
            machine_id: Some("m".into()),
            ipv4: vec!["10.0.0.3".into()],
        };
        let b = ReportedIdentity {
            hostname: Some("cmux-204".into()),
            machine_id: Some("m".into()),
            ipv4: vec!["10.0.0.4".into()],
        };
        let s = shared(&[(202, &a), (203, &a), (204, &b)]);
        assert_eq!(s.get(&202), Some(&vec![203]));
        assert_eq!(s.get(&203), Some(&vec![202]));
        // Same machine id (a cloned template) but another hostname and address: not shared.
        assert_eq!(s.get(&204), None);
    }
}
