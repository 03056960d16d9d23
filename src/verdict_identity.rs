//! The identity rows of the decision table (docs/diagnosis.md, "Who answered"): healthy means the
//! right sandbox answered.
//!
//! Pure, like the rest of the engine. `identity.rs` holds the facts (who the exec call ran in, who
//! was expected, what the host's `.lan` name resolves to) and compares them ([`assess`]); this step
//! turns a contradicted identity into the row that overrides every service verdict of the target,
//! names a service whose Caddy route dials another sandbox, and writes the identity note of the
//! exec-channel line.

use super::*;
use crate::identity::{
    assess, disagreements, instance_of_host, sandbox_of_upstream, short_host, Assessment,
    IdentityObservation,
};

/// An identity row of the decision table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct IdentityRow {
    pub(super) status: Status,
    pub(super) layer: Option<Layer>,
    pub(super) candidates: Vec<Layer>,
    pub(super) rule: &'static str,
    pub(super) summary: String,
    pub(super) evidence: Vec<String>,
    pub(super) next_step: String,
}

/// The row that overrides every service verdict of a target whose exec call reached another
/// sandbox; `None` when identity is not contradicted. `exec_route` is the upstream host Caddy's
/// route dials for the exec hostname (when the route table was read).
fn target_row(
    o: &IdentityObservation,
    vmid: u32,
    exec_route: Option<&str>,
    via_public_url: bool,
) -> Option<IdentityRow> {
    let Assessment::Contradicted {
        expected,
        expected_from,
        reached,
        how,
    } = assess(o, vmid)
    else {
        return None;
    };
    let mut evidence = vec![format!(
        "identity: expected {expected} (from {expected_from}); {how}"
    )];
    evidence.extend(
        disagreements(o, vmid)
            .into_iter()
            .map(|d| format!("identity sources disagree: {d}")),
    );
    let lan = o.host.as_ref();
    let lan_name = lan
        .map(|h| h.lan_name.clone())
        .unwrap_or_else(|| format!("{}.lan", short_host(&expected)));
    let summary_head = if via_public_url {
        format!(
            "the exec call for {vmid} ran in {reached}, not in {}: users of {vmid} reach another sandbox",
            short_host(&expected)
        )
    } else {
        // --exec-url: not the public chain, but the name or address it dials leads elsewhere.
        format!(
            "the exec call for {vmid} (--exec-url) ran in {reached}, not in {}: the internal view is another sandbox's",
            short_host(&expected)
        )
    };
    // Caddy's route names another sandbox's host.
    if let Some(up) = exec_route {
        if let Some(other) = sandbox_of_upstream(up) {
            if other != short_host(&expected).to_ascii_lowercase() {
                evidence.push(format!(
                    "Caddy's route for {vmid}'s exec hostname dials {up}"
                ));
                return Some(IdentityRow {
                    status: Status::Broken,
                    layer: Some(Layer::Caddy),
                    candidates: Vec::new(),
                    rule: "identity-route-names-other-sandbox",
                    summary: format!("{summary_head}; Caddy's route dials {up}"),
                    evidence,
                    next_step: format!(
                        "on the PVE host: grep -n '{up}' /etc/caddy/Caddyfile.cmux — the route must dial {}.lan (cmux-{{re.vmid.1}}.lan or {{re.service.2}}.lan), then systemctl reload caddy-cmux",
                        short_host(&expected)
                    ),
                });
            }
        }
    }
    // The host vantage: the name resolves somewhere else than the container's own address.
    if let Some(h) = lan {
        if let (Some(lan_ip), Some(own)) = (&h.lan_ipv4, &h.own_ipv4) {
            if !lan_ip.is_empty() && !own.is_empty() && !lan_ip.iter().any(|a| own.contains(a)) {
                evidence.push(format!(
                    "on the host {} resolves to {}; container {vmid}'s own address is {} (pct exec {vmid} -- ip -4 addr)",
                    h.lan_name,
                    lan_ip.join(", "),
                    own.join(", ")
                ));
                return Some(IdentityRow {
                    status: Status::Broken,
                    layer: Some(Layer::Container),
                    candidates: Vec::new(),
                    rule: "identity-lan-name-elsewhere",
                    summary: format!(
                        "{summary_head}: {} resolves to {} on the host, but {vmid}'s address is {} (a stale DHCP lease or DNS record)",
                        h.lan_name,
                        lan_ip.join(", "),
                        own.join(", ")
                    ),
                    evidence,
                    next_step: format!(
                        "on the router (DHCP/DNS): fix the record of {} to {}; on the PVE host: getent hosts {}; pct config {vmid} | grep -E 'hostname|net0'; check no other container uses the hostname {}",
                        h.lan_name,
                        own.join(", "),
                        h.lan_name,
                        short_host(&expected)
                    ),
                });
            }
        }
    }
    Some(IdentityRow {
        status: Status::Broken,
        layer: None,
        candidates: vec![Layer::Caddy, Layer::Container],
        rule: "identity-wrong-sandbox",
        summary: summary_head,
        evidence,
        next_step: format!(
            "on the PVE host: getent hosts {lan_name} and compare with pct exec {vmid} -- ip -4 addr (a stale lease or DNS record); grep -n 'reverse_proxy' /etc/caddy/Caddyfile.cmux (a route naming another sandbox); --on-host pins it"
        ),
    })
}

/// The route row: Caddy's route for this service's hostname dials another host than the one the
/// request's own VMID/instance gives. `None` when it dials the expected host (or is unknown).
fn route_row(
    service: &str,
    public_host: &str,
    vmid: u32,
    upstream_host: &str,
    source: Option<&str>,
) -> Option<IdentityRow> {
    let want = format!("{}.lan", instance_of_host(public_host, vmid));
    if upstream_host.eq_ignore_ascii_case(&want) {
        return None;
    }
    // Only a host that names another sandbox (`cmux-203.lan`, `pvelxc-….lan`): other wrong names
    // (a `.local` suffix, a typo) reach nothing and are the gateway rows' (caddy-dials-other-host).
    let other = sandbox_of_upstream(upstream_host)?;
    let at = source.map(|s| format!(" ({s})")).unwrap_or_default();
    let (loc, grep) = match source.and_then(|s| s.rsplit_once(':')) {
        Some((file, line)) if line.parse::<usize>().is_ok() => (
            format!("{file} line {line}"),
            format!("sed -n '{line}p' {file}"),
        ),
        _ => (
            "Caddy's config".to_string(),
            format!("grep -n '{upstream_host}' /etc/caddy/Caddyfile.cmux"),
        ),
    };
    Some(IdentityRow {
        status: Status::Broken,
        layer: Some(Layer::Caddy),
        candidates: Vec::new(),
        rule: "route-names-other-sandbox",
        summary: format!(
            "Caddy's route for {public_host} dials {upstream_host}{at}: {service} of {vmid} is served by sandbox {other}"
        ),
        evidence: vec![format!(
            "identity: the route for {public_host} must dial {want} (the request's own sandbox); it dials {upstream_host}"
        )],
        next_step: format!(
            "edit {loc}: the upstream must be {} (not a literal host); on the PVE host: {grep}; then systemctl reload caddy-cmux",
            if public_host.starts_with("port-") {
                "{re.service.2}.lan:{re.service.1}"
            } else {
                "cmux-{re.vmid.1}.lan"
            }
        ),
    })
}

/// The identity note of the exec-channel line: who the exec call ran in, and what disagrees.
fn channel_note(o: &IdentityObservation, vmid: u32, internal_ran: bool) -> Option<String> {
    let mut note = match assess(o, vmid) {
        Assessment::Confirmed { name, how } => format!("ran in {name} ({how})"),
        Assessment::Contradicted {
            expected,
            reached,
            how,
            ..
        } => format!("WRONG SANDBOX: ran in {reached}, expected {expected} ({how})"),
        Assessment::Unknown { why } if internal_ran => {
            format!("the sandbox's identity could not be established ({why})")
        }
        Assessment::Unknown { .. } => return None,
    };
    let disagree = disagreements(o, vmid);
    if !disagree.is_empty() {
        note.push_str(&format!(
            "; identity sources disagree: {}",
            disagree.join(", ")
        ));
    }
    if !o.shared_with.is_empty() {
        let who = o
            .reported
            .as_ref()
            .and_then(|r| r.hostname.clone())
            .unwrap_or_default();
        note.push_str(&format!(
            "; the exec call of {} also reached this sandbox ({who}): two targets, one sandbox",
            o.shared_with
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    Some(note)
}

// ---------------------------------------------------------------------------------------------
// Applied by the engine over every service of a target

/// The target's identity row, else the service's route row, replaces the decided row; returns the
/// row and the identity evidence lines it adds.
pub(super) fn with_identity(
    r: Row,
    identity: &Option<IdentityRow>,
    t: &TargetObservation,
    service: &str,
    ctx: &Context,
) -> (Row, Vec<String>) {
    // Caddy's exec route names another sandbox, and this failing service's own route is read to
    // dial its own: it fails for its own reason; its row, decided without the other sandbox's
    // internal answers, stands, with the identity evidence. A healthy answer takes the identity
    // row: healthy means the right sandbox answered.
    if let Some(id) = identity
        .as_ref()
        .filter(|_| matches!(r.status, Status::Broken | Status::Degraded))
    {
        let own = format!("{}.lan", ctx.instance_name(t.vmid));
        let own_route = route_for(t, service)
            .and_then(|r| r.upstream_host.as_deref())
            .is_some_and(|h| h.eq_ignore_ascii_case(&own));
        if service != "exec" && own_route && id.rule == "identity-route-names-other-sandbox" {
            return (r, id.evidence.clone());
        }
    }
    match identity.clone().or_else(|| route_identity_row(t, service)) {
        Some(id) => (
            Row {
                status: id.status,
                layer: id.layer,
                candidates: id.candidates,
                summary: id.summary,
                next_step: Some(id.next_step),
                rule: id.rule,
            },
            id.evidence,
        ),
        None => (r, Vec::new()),
    }
}

/// The identity note of the exec-channel line; a contradicted or shared identity makes it broken.
pub(super) fn identity_channel(
    exec: &mut ChannelVerdict,
    t: &TargetObservation,
    identity: Option<IdentityRow>,
) {
    let Some(note) = channel_note(&t.identity, t.vmid, t.exec.internal_ran()) else {
        return;
    };
    exec.summary.push_str(&format!("; {note}"));
    // The exec call proves who answers at exec's URL only. Without Caddy's routes (or the host's
    // view) nothing traces the other public URLs to this sandbox: a route to another sandbox
    // answers exactly like this one, so "healthy" says no more than that.
    if t.routes.is_empty()
        && t.host.is_none()
        && matches!(assess(&t.identity, t.vmid), Assessment::Confirmed { .. })
    {
        exec.summary.push_str(
            "; the other public URLs are not traced to this sandbox: Caddy's routes were not read (--caddyfile, --caddy-admin or --on-host read them)",
        );
    }
    if identity.is_some() || !t.identity.shared_with.is_empty() {
        exec.status = Status::Broken;
        exec.next_step = identity.map(|r| r.next_step).or_else(|| {
            let names: Vec<String> = t
                .identity
                .shared_with
                .iter()
                .map(|v| format!("cmux-{v}.lan"))
                .collect();
            Some(format!(
                "two targets reach one sandbox: on the PVE host: getent hosts {} (where their names lead); diagnose them with --on-host",
                names.join(" ")
            ))
        });
    }
}

/// The identity row of the whole target: the exec call reached another sandbox.
pub(super) fn identity_row(t: &TargetObservation) -> Option<IdentityRow> {
    let route = route_for(t, "exec");
    let exec_route = route.and_then(|r| r.upstream_host.as_deref());
    let mut row = target_row(&t.identity, t.vmid, exec_route, t.exec.via_public_url)?;
    // What Caddy runs (its admin API) dials the exec hostname's own name: Caddy is ruled out,
    // the name leads elsewhere (a route read from a file leaves Caddy a candidate).
    if row.rule == "identity-wrong-sandbox"
        && route.is_some_and(|r| r.from == Some(RouteFrom::AdminApi) && r.upstream_port.is_some())
    {
        row.candidates.retain(|&l| l != Layer::Caddy);
        if row.candidates.len() == 1 {
            row.layer = row.candidates.pop();
        }
    }
    Some(row)
}

/// The identity row of one service: Caddy's route for its hostname names another host.
fn route_identity_row(t: &TargetObservation, service: &str) -> Option<IdentityRow> {
    let r = route_for(t, service)?;
    r.upstream_port?;
    route_row(
        service,
        &r.host,
        t.vmid,
        r.upstream_host.as_deref()?,
        r.source.as_deref(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::tests::obs;
    use crate::identity::{IdentityClaim, IdentitySource};

    #[test]
    fn a_route_row_only_for_a_route_that_names_another_sandbox() {
        assert!(route_row("xterm", "xterm-202.example.test", 202, "cmux-202.lan", None).is_none());
        assert!(route_row(
            "vscode",
            "port-39378-pvelxc-1a2b3c4d.example.test",
            207,
            "pvelxc-1a2b3c4d.lan",
            None
        )
        .is_none());
        let r = route_row(
            "xterm",
            "xterm-202.example.test",
            202,
            "cmux-203.lan",
            Some("/etc/caddy/Caddyfile.cmux:12"),
        )
        .unwrap();
        assert_eq!(r.rule, "route-names-other-sandbox");
        assert!(r.summary.contains("cmux-203"), "{}", r.summary);
        assert!(r.next_step.contains("line 12"), "{}", r.next_step);
    }

    #[test]
    fn disagreeing_sources_are_named_on_the_channel_line() {
        let mut o = obs("web-1", "10.0.0.2");
        o.expected.push(IdentityClaim {
            source: IdentitySource::PveApi,
            hostname: Some("web-1".into()),
            ipv4: vec![],
            mac: None,
        });
        let note = channel_note(&o, 202, true).unwrap();
        assert!(note.starts_with("ran in web-1"), "{note}");
        assert!(
            note.contains("the PVE API's config of 202 says web-1")
                && note.contains("the naming convention says cmux-202"),
            "{note}"
        );
        // Sources that agree: no such note.
        let note = channel_note(&obs("cmux-202", "10.0.0.2"), 202, true).unwrap();
        assert!(!note.contains("disagree"), "{note}");
    }
}
