//! Grouping verdicts by root cause: a pure function over verdicts (no I/O, no formatting).
//!
//! Services of one target whose verdicts say the same thing — the same status, the same layer or the
//! same set of candidate layers, the same summary and next step once the service's own name, URLs and
//! numbers are set aside — share a root cause: the report says it once for the group and then only
//! what differs per service. Across targets, groups with the same cause are counted again
//! ("broken (tunnel): 14 sandboxes").

use crate::verdict::{Layer, Status, Verdict};

/// What makes two verdicts the same root cause.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct CauseKey {
    pub(crate) status: Status,
    /// The pinned layer, when the evidence pins one.
    pub(crate) layer: Option<Layer>,
    /// The layers the evidence cannot tell apart (as a set: sorted), when it does not pin one.
    pub(crate) candidates: Vec<Layer>,
    /// The first verdict's `broken (caddy|service)`, candidates most likely first.
    pub(crate) shown: String,
    /// The summary with URLs and numbers set aside ([`shape`]).
    pub(crate) summary: String,
    /// The next step, the same way.
    pub(crate) next_step: Option<String>,
    /// The summary with the service's own name set aside too ([`normalize`]).
    pub(crate) named_summary: String,
    pub(crate) named_next_step: Option<String>,
}

impl CauseKey {
    pub(crate) fn of(name: &str, v: &Verdict) -> CauseKey {
        let mut candidates: Vec<Layer> = v.candidates.iter().map(|c| c.layer).collect();
        candidates.sort();
        candidates.dedup();
        CauseKey {
            status: v.status,
            layer: v.layer,
            candidates,
            shown: crate::report::table::verdict_cell(v),
            summary: shape(&v.summary),
            next_step: v.next_step.as_deref().map(shape),
            named_summary: normalize(name, &v.summary),
            named_next_step: v.next_step.as_deref().map(|n| normalize(name, n)),
        }
    }

    /// The same root cause: the same status and layer or candidates, and a summary and next step
    /// that say the same once URLs and numbers are set aside (and the service's own name, for
    /// texts that name it; a name like `exec` may also be a plain word of the text).
    pub(crate) fn same_cause(&self, other: &CauseKey) -> bool {
        self.status == other.status
            && self.layer == other.layer
            && self.candidates == other.candidates
            && (self.summary == other.summary || self.named_summary == other.named_summary)
            && (self.next_step == other.next_step || self.named_next_step == other.named_next_step)
    }

    /// `broken (tunnel)`, `inconclusive (tunnel|caddy)`, `inconclusive`: as the first verdict
    /// of the cause says it.
    pub(crate) fn label(&self) -> String {
        self.shown.clone()
    }
}

/// One root cause within a target: the services (indices into the target's verdicts, in order)
/// and what they share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Group {
    pub(crate) key: CauseKey,
    pub(crate) members: Vec<usize>,
    /// Whether every member's summary is the same text (else each says its own).
    pub(crate) same_summary: bool,
    /// Whether every member's next step is the same text.
    pub(crate) same_next_step: bool,
    /// Evidence lines that two or more members have in the same shape, in order of first
    /// appearance: each shown once, as the first member that has it says it.
    pub(crate) shared_evidence: Vec<SharedLine>,
    /// Per member (parallel to `members`): indices of its evidence lines no other member has.
    pub(crate) own_evidence: Vec<Vec<usize>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SharedLine {
    /// Positions in `members` of the members that have the line (the first one says it).
    pub(crate) holders: Vec<usize>,
    /// Index into the evidence of the first holder.
    pub(crate) index: usize,
    /// Every member has exactly this text.
    pub(crate) identical: bool,
}

/// Groups the not-healthy, not-skipped verdicts of one target by root cause, in the order of each
/// group's first service. `names[i]` is the name of the service of `verdicts[i]`.
pub(crate) fn group(names: &[&str], verdicts: &[Verdict]) -> Vec<Group> {
    let mut keys: Vec<(CauseKey, Vec<usize>)> = Vec::new();
    for (i, (name, v)) in names.iter().zip(verdicts).enumerate() {
        if matches!(v.status, Status::Healthy | Status::Skipped) {
            continue;
        }
        let key = CauseKey::of(name, v);
        match keys.iter_mut().find(|(k, _)| k.same_cause(&key)) {
            Some((_, m)) => m.push(i),
            None => keys.push((key, vec![i])),
        }
    }
    keys.into_iter()
        .map(|(key, members)| {
            let first = &verdicts[members[0]];
            let all = |f: &dyn Fn(&Verdict) -> bool| members.iter().all(|&m| f(&verdicts[m]));
            let same_summary = all(&|v| v.summary == first.summary);
            let same_next_step = all(&|v| v.next_step == first.next_step);
            // Evidence in shape: each member's lines, as they are and with its own name set aside.
            let shapes: Vec<Vec<(String, String)>> = members
                .iter()
                .map(|&m| {
                    verdicts[m]
                        .evidence
                        .iter()
                        .map(|e| (shape(e), normalize(names[m], e)))
                        .collect()
                })
                .collect();
            let alike = |a: &(String, String), b: &(String, String)| a.0 == b.0 || a.1 == b.1;
            let mut shared_evidence: Vec<SharedLine> = Vec::new();
            let mut own_evidence: Vec<Vec<usize>> = vec![Vec::new(); members.len()];
            for (k, lines) in shapes.iter().enumerate() {
                for (i, line) in lines.iter().enumerate() {
                    // Said already, as another member's line of the same shape.
                    if shared_evidence.iter().any(|l| {
                        l.holders.contains(&k) && alike(&shapes[l.holders[0]][l.index], line)
                    }) {
                        continue;
                    }
                    let holders: Vec<usize> = (0..members.len())
                        .filter(|&h| h == k || shapes[h].iter().any(|o| alike(o, line)))
                        .collect();
                    if holders.len() < 2 {
                        own_evidence[k].push(i);
                        continue;
                    }
                    let text = &verdicts[members[k]].evidence[i];
                    let identical = holders.len() == members.len()
                        && members.iter().all(|&m| verdicts[m].evidence.contains(text));
                    shared_evidence.push(SharedLine {
                        holders,
                        index: i,
                        identical,
                    });
                }
            }
            Group {
                key,
                members,
                same_summary,
                same_next_step,
                shared_evidence,
                own_evidence,
            }
        })
        .collect()
}

/// Identical causes across targets: each cause with the targets (their VMIDs) that have it, in the
/// order first seen. `targets` is (vmid, service names, verdicts) per target.
pub(crate) fn across_targets(
    targets: &[(u32, Vec<&str>, &[Verdict])],
) -> Vec<(CauseKey, Vec<u32>)> {
    let mut out: Vec<(CauseKey, Vec<u32>)> = Vec::new();
    for (vmid, names, verdicts) in targets {
        for g in group(names, verdicts) {
            // The target's own number and name do not make a cause different.
            let key = g.key;
            match out.iter_mut().find(|(k, _)| k.same_cause(&key)) {
                Some((_, v)) => {
                    if !v.contains(vmid) {
                        v.push(*vmid)
                    }
                }
                None => out.push((key, vec![*vmid])),
            }
        }
    }
    out
}

/// A text's shape: a word with a URL becomes `{url}`, a word with a digit `#` (ports, VMIDs,
/// durations, ray ids, line numbers). Two texts with the same shape say the same thing about
/// different services or targets.
pub(crate) fn shape(text: &str) -> String {
    normalize("", text)
}

/// [`shape`], and the service's own name becomes `{service}`.
pub(crate) fn normalize(name: &str, text: &str) -> String {
    text.split(' ')
        .map(|w| {
            if w.contains("://") {
                "{url}".to_string()
            } else if w.chars().any(|c| c.is_ascii_digit()) {
                "#".to_string()
            } else if !name.is_empty() && contains_word(w, name) {
                "{service}".to_string()
            } else {
                w.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `name` occurs in `word` delimited by non-identifier characters.
fn contains_word(word: &str, name: &str) -> bool {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    word.match_indices(name).any(|(i, _)| {
        let before = word[..i].chars().next_back();
        let after = word[i + name.len()..].chars().next();
        !before.is_some_and(ident) && !after.is_some_and(|c| ident(c) || c == '-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Candidate;

    fn cand(layers: &[Layer]) -> Vec<Candidate> {
        layers
            .iter()
            .map(|l| Candidate {
                layer: *l,
                check: "check".into(),
            })
            .collect()
    }

    fn v(status: Status, layer: Option<Layer>, summary: &str, evidence: &[&str]) -> Verdict {
        Verdict {
            status,
            layer,
            candidates: Vec::new(),
            summary: summary.into(),
            evidence: evidence.iter().map(|s| s.to_string()).collect(),
            next_step: Some("systemctl status cloudflared".into()),
            rule: "test",
        }
    }

    #[test]
    fn one_cause_one_group_with_evidence_once() {
        let tunnel = "Cloudflare answers 530 / error 1033 for every hostname";
        let vs = vec![
            v(
                Status::Broken,
                Some(Layer::Tunnel),
                tunnel,
                &[
                    "external https://xterm-202.example.test/: 530 in 25 ms",
                    "the origin check failed too",
                ],
            ),
            v(Status::Healthy, None, "ok", &[]),
            v(
                Status::Broken,
                Some(Layer::Tunnel),
                tunnel,
                &[
                    "external https://vnc-202.example.test/vnc.html: 530 in 27 ms",
                    "the origin check failed too",
                    "only vnc says this",
                ],
            ),
        ];
        let gs = group(&["xterm", "preview", "vnc"], &vs);
        assert_eq!(gs.len(), 1);
        let g = &gs[0];
        assert_eq!(g.members, vec![0, 2]);
        assert!(g.same_summary && g.same_next_step);
        assert_eq!(
            g.shared_evidence,
            vec![
                SharedLine {
                    holders: vec![0, 1],
                    index: 0,
                    identical: false
                },
                SharedLine {
                    holders: vec![0, 1],
                    index: 1,
                    identical: true
                }
            ]
        );
        assert_eq!(g.own_evidence, vec![vec![], vec![2]]);
        assert_eq!(g.key.label(), "broken (tunnel)");
    }

    #[test]
    fn different_layers_or_candidates_are_different_causes() {
        let mut a = v(Status::Broken, Some(Layer::Caddy), "x", &[]);
        let b = v(Status::Broken, Some(Layer::Service), "x", &[]);
        let mut c = v(Status::Inconclusive, None, "x", &[]);
        c.candidates = cand(&[Layer::Caddy, Layer::Tunnel]);
        let mut d = c.clone();
        d.candidates = cand(&[Layer::Tunnel, Layer::Caddy]);
        let gs = group(&["a", "b", "c", "d"], &[a.clone(), b, c, d]);
        assert_eq!(gs.len(), 3);
        assert_eq!(gs[2].members, vec![2, 3], "candidate sets compare as sets");
        assert_eq!(
            gs[2].key.label(),
            "inconclusive (caddy|tunnel)",
            "most likely first"
        );
        a.summary = "y".into();
        let x = v(Status::Broken, Some(Layer::Caddy), "x", &[]);
        assert!(!CauseKey::of("a", &a).same_cause(&CauseKey::of("a", &x)));
    }

    #[test]
    fn the_services_own_name_does_not_split_a_group() {
        let a = v(Status::Inconclusive, None, "proxy is not routed, so", &[]);
        let b = v(Status::Inconclusive, None, "cdp is not routed, so", &[]);
        let gs = group(&["proxy", "cdp"], &[a, b]);
        assert_eq!(gs.len(), 1);
        assert!(!gs[0].same_summary);
        // A name inside another word is not the name.
        assert_eq!(normalize("vnc", "novnc answers"), "novnc answers");
        assert_eq!(normalize("vnc", "vnc: 502"), "{service} #");
        assert_eq!(
            normalize("worker", "worker-daemon is down"),
            "worker-daemon is down"
        );
    }

    #[test]
    fn a_line_some_members_share_is_said_once_for_them() {
        // Unrouted services have no external line; the routed ones share theirs.
        let s = "the container is stopped";
        let a = v(
            Status::Broken,
            Some(Layer::Container),
            s,
            &["external https://a-1.x/: 502"],
        );
        let b = v(Status::Broken, Some(Layer::Container), s, &["only b"]);
        let c = v(
            Status::Broken,
            Some(Layer::Container),
            s,
            &["external https://c-1.x/: 502"],
        );
        let gs = group(&["a", "b", "c"], &[a, b, c]);
        assert_eq!(gs.len(), 1);
        assert_eq!(
            gs[0].shared_evidence,
            vec![SharedLine {
                holders: vec![0, 2],
                index: 0,
                identical: false
            }]
        );
        assert_eq!(gs[0].own_evidence, vec![vec![], vec![0], vec![]]);
    }

    #[test]
    fn a_name_that_is_also_a_word_does_not_split_a_group() {
        // `exec` is a service and a word of the texts: "the exec channel", "(exec included)".
        let s = "nothing of cmux-202 does (exec included)";
        let a = v(
            Status::Broken,
            Some(Layer::Container),
            s,
            &["the exec channel is down"],
        );
        let b = v(
            Status::Broken,
            Some(Layer::Container),
            s,
            &["the exec channel is down"],
        );
        let gs = group(&["xterm", "exec"], &[a, b]);
        assert_eq!(gs.len(), 1);
        assert_eq!(gs[0].members, vec![0, 1]);
        assert_eq!(gs[0].own_evidence, vec![Vec::<usize>::new(), vec![]]);
    }

    #[test]
    fn identical_causes_across_targets_are_counted() {
        let t = v(Status::Broken, Some(Layer::Tunnel), "tunnel down", &[]);
        let s = v(Status::Broken, Some(Layer::Service), "vscode down", &[]);
        let a = [t.clone(), t.clone()];
        let b = [t.clone(), s];
        let c = [t];
        let all = across_targets(&[
            (202, vec!["xterm", "vnc"], &a),
            (203, vec!["xterm", "vscode"], &b),
            (204, vec!["xterm"], &c),
        ]);
        assert_eq!(all.len(), 2);
        assert_eq!(all[0].1, vec![202, 203, 204]);
        assert_eq!(all[1].1, vec![203]);
    }
}
