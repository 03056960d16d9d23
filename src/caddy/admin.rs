//! Reader for the running Caddy's JSON config (`GET /config/` on the admin API, 127.0.0.1:2019),
//! the same shape `caddy adapt --adapter caddyfile` prints.
//!
//! Walks `apps.http.servers.<name>.routes[]`: each route's `match[]` (`header_regexp.Host`
//! `{name, pattern}`, `host`, anything else as a condition) and `handle[]`, descending into
//! `subroute` handlers and recording every `reverse_proxy` handler (`upstreams[].dial`, whose
//! placeholders are `{http.regexp.NAME.N}`). Routes come out in the order Caddy evaluates them.

use serde_json::Value;

use super::{infer_service, Route, RouteTable, Source, Upstream, Warning};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AdminError {
    #[error("caddy admin API: not valid JSON: {0}")]
    Json(String),
    #[error("caddy admin API: not a Caddy config: {0}")]
    Shape(String),
}

#[derive(Clone, Default)]
struct Ctx {
    site: String,
    hosts: Vec<String>,
    host_re: Option<(Option<String>, String)>,
    conditions: Vec<String>,
}

struct Walker {
    routes: Vec<Route>,
    warnings: Vec<Warning>,
}

impl Walker {
    fn warn(&mut self, path: &str, msg: impl Into<String>) {
        self.warnings.push(Warning {
            source: Source::json(path),
            message: msg.into(),
        });
    }

    fn routes(&mut self, routes: &Value, path: &str, ctx: &Ctx, depth: usize) {
        let Some(list) = routes.as_array() else {
            if !routes.is_null() {
                self.warn(path, "`routes` is not an array; ignored");
            }
            return;
        };
        if depth > 64 {
            self.warn(path, "subroutes nested too deeply; ignored");
            return;
        }
        for (i, r) in list.iter().enumerate() {
            let rpath = format!("{path}[{i}]");
            let Some(obj) = r.as_object() else {
                self.warn(&rpath, "route is not an object; ignored");
                continue;
            };
            let mut c = ctx.clone();
            if let Some(m) = obj.get("match") {
                self.matchers(m, &format!("{rpath}.match"), &mut c);
            }
            match obj.get("handle") {
                Some(Value::Array(hs)) => {
                    for (j, h) in hs.iter().enumerate() {
                        self.handler(h, &format!("{rpath}.handle[{j}]"), &c, depth);
                    }
                }
                None | Some(Value::Null) => {}
                Some(_) => self.warn(&rpath, "`handle` is not an array; ignored"),
            }
        }
    }

    fn matchers(&mut self, m: &Value, path: &str, c: &mut Ctx) {
        let Some(sets) = m.as_array() else {
            self.warn(path, "`match` is not an array; kept as a condition");
            c.conditions.push(m.to_string());
            return;
        };
        if sets.len() > 1 {
            self.warn(
                path,
                format!(
                    "{} matcher sets (any may match); only the first is modelled",
                    sets.len()
                ),
            );
        }
        let Some(set) = sets.first() else { return };
        let Some(set) = set.as_object() else {
            self.warn(path, "matcher set is not an object; kept as a condition");
            c.conditions.push(set.to_string());
            return;
        };
        let spath = format!("{path}[0]");
        for (key, val) in set {
            match key.as_str() {
                "host" => match val.as_array() {
                    Some(hs) if hs.iter().all(Value::is_string) => {
                        c.hosts = hs
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_ascii_lowercase)
                            .collect();
                    }
                    _ => {
                        self.warn(&spath, "`host` matcher is not a list of names");
                        c.conditions.push(format!("host {val}"));
                    }
                },
                "header_regexp" => {
                    let Some(fields) = val.as_object() else {
                        self.warn(&spath, "`header_regexp` is not an object");
                        c.conditions.push(format!("header_regexp {val}"));
                        continue;
                    };
                    for (field, spec) in fields {
                        if !field.eq_ignore_ascii_case("host") {
                            c.conditions.push(format!("header_regexp {field} {spec}"));
                            continue;
                        }
                        let pattern = spec.get("pattern").and_then(Value::as_str);
                        let name = spec.get("name").and_then(Value::as_str);
                        let Some(pattern) = pattern else {
                            self.warn(&spath, "header_regexp Host without a pattern");
                            c.conditions.push(format!("header_regexp {field} {spec}"));
                            continue;
                        };
                        if let Err(e) = regex::Regex::new(pattern) {
                            self.warn(
                                &spath,
                                format!(
                                    "Host regexp {pattern:?} does not compile: {}",
                                    e.to_string().lines().last().unwrap_or("")
                                ),
                            );
                        }
                        if c.host_re.is_some() {
                            self.warn(
                                &spath,
                                "nested Host regexps; only the outer one is modelled",
                            );
                            c.conditions.push(format!("header_regexp Host {pattern}"));
                        } else {
                            c.host_re = Some((name.map(str::to_string), pattern.to_string()));
                        }
                    }
                }
                _ => c.conditions.push(format!("{key} {val}")),
            }
        }
    }

    fn handler(&mut self, h: &Value, path: &str, c: &Ctx, depth: usize) {
        match h.get("handler").and_then(Value::as_str) {
            Some("subroute") => {
                if let Some(r) = h.get("routes") {
                    self.routes(r, &format!("{path}.routes"), c, depth + 1);
                }
            }
            Some("reverse_proxy") => self.reverse_proxy(h, path, c),
            Some(_) => {}
            None => self.warn(path, "handler without a `handler` name; ignored"),
        }
    }

    fn reverse_proxy(&mut self, h: &Value, path: &str, c: &Ctx) {
        if h.get("dynamic_upstreams").is_some() {
            self.warn(path, "reverse_proxy: dynamic upstreams are not modelled");
        }
        let dials: Vec<String> = h
            .get("upstreams")
            .and_then(Value::as_array)
            .map(|us| {
                us.iter()
                    .filter_map(|u| u.get("dial").and_then(Value::as_str))
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default();
        if dials.is_empty() {
            self.warn(
                path,
                "reverse_proxy without a static upstream; no route recorded",
            );
            return;
        }
        if dials.len() > 1 {
            self.warn(
                path,
                format!(
                    "reverse_proxy has {} upstreams ({}); only the first is modelled",
                    dials.len(),
                    dials.join(" ")
                ),
            );
        }
        let tls = h
            .get("transport")
            .and_then(|t| t.get("tls"))
            .is_some_and(|t| !t.is_null());
        let raw = &dials[0];
        let upstream = if raw.contains("://") {
            Upstream::Other { raw: raw.clone() }
        } else if tls && !raw.contains(':') {
            Upstream::parse(&format!("https://{raw}"))
        } else {
            Upstream::parse(raw)
        };
        if let Upstream::Other { raw } = &upstream {
            self.warn(
                path,
                format!("reverse_proxy dial {raw:?} not understood (expected host:port)"),
            );
        }
        let (capture_name, host_pattern) = match &c.host_re {
            Some((n, p)) => (n.clone(), p.clone()),
            None => (None, String::new()),
        };
        // The regexp's name is a capture name (often `vmid`), not a service: only the pattern's
        // literal prefix names the service here.
        let service = infer_service(&host_pattern, None, &upstream);
        self.routes.push(Route {
            host_pattern,
            // The JSON keeps no matcher names.
            matcher: None,
            capture_name,
            service,
            upstream,
            source: Source::json(path),
            hosts: c.hosts.clone(),
            site: c.site.clone(),
            conditions: c.conditions.clone(),
        });
    }
}

/// Reads the admin API's JSON config. Errors only when the text is not JSON or not a config
/// object at all; everything else not understood becomes a warning.
pub fn parse(json: &str) -> Result<RouteTable, AdminError> {
    let root: Value = serde_json::from_str(json).map_err(|e| AdminError::Json(e.to_string()))?;
    let mut w = Walker {
        routes: Vec::new(),
        warnings: Vec::new(),
    };
    let root = match root {
        Value::Null => {
            w.warn("", "Caddy has no config loaded");
            return Ok(RouteTable {
                routes: w.routes,
                warnings: w.warnings,
                caddyfile_text: None,
            });
        }
        Value::Object(o) => o,
        other => {
            return Err(AdminError::Shape(format!(
                "expected a JSON object, got {}",
                kind(&other)
            )))
        }
    };
    let servers = root
        .get("apps")
        .and_then(|a| a.get("http"))
        .and_then(|h| h.get("servers"));
    let Some(servers) = servers else {
        w.warn("apps.http.servers", "no HTTP servers configured");
        return Ok(RouteTable {
            routes: w.routes,
            warnings: w.warnings,
            caddyfile_text: None,
        });
    };
    let Some(servers) = servers.as_object() else {
        return Err(AdminError::Shape(format!(
            "apps.http.servers is {}, expected an object",
            kind(servers)
        )));
    };
    for (name, srv) in servers {
        let path = format!("apps.http.servers.{name}");
        let listen: Vec<&str> = srv
            .get("listen")
            .and_then(Value::as_array)
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ctx = Ctx {
            site: if listen.is_empty() {
                name.clone()
            } else {
                format!("{name} ({})", listen.join(", "))
            },
            ..Ctx::default()
        };
        if let Some(r) = srv.get("routes") {
            w.routes(r, &format!("{path}.routes"), &ctx, 0);
        }
    }
    Ok(RouteTable {
        routes: w.routes,
        warnings: w.warnings,
        caddyfile_text: None,
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What `caddy adapt --adapter caddyfile` prints for the seed Caddyfile (the seed document's,
    /// with the correct xterm port 39383).
    pub(crate) const SEED_JSON: &str = r#"{
  "apps": {
    "http": {
      "servers": {
        "srv0": {
          "listen": [":8080"],
          "routes": [
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^vscode-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:39378"}]}]}]}],
              "group": "group6"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^worker-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:39377"}]}]}]}],
              "group": "group6"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^xterm-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:39383"}]}]}]}],
              "group": "group6"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^exec-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:39375"}]}]}]}],
              "group": "group6"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^vnc-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:39380"}]}]}]}],
              "group": "group6"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "vmid", "pattern": "^preview-(\\d+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": "cmux-{http.regexp.vmid.1}.lan:5173"}]}]}]}],
              "group": "group6"
            }
          ]
        }
      }
    }
  }
}"#;

    /// `caddy adapt` output for the later generic layout.
    const LATER_JSON: &str = r#"{
  "admin": {"listen": "localhost:2019"},
  "apps": {
    "http": {
      "servers": {
        "srv0": {
          "listen": [":8080"],
          "routes": [
            {
              "match": [{"method": ["OPTIONS"]}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [
                {"handler": "headers", "response": {"set": {"Access-Control-Allow-Origin": ["*"], "Access-Control-Max-Age": ["86400"]}}},
                {"handler": "static_response", "status_code": 204}
              ]}]}],
              "group": "group2"
            },
            {
              "match": [{"header_regexp": {"Host": {"name": "service", "pattern": "^port-(\\d+)-([a-z0-9-]+)\\."}}}],
              "handle": [{"handler": "subroute", "routes": [{"handle": [
                {"handler": "headers", "response": {"set": {"Access-Control-Allow-Origin": ["*"], "Access-Control-Expose-Headers": ["*"]}}},
                {"handler": "reverse_proxy",
                 "headers": {"request": {"set": {"Host": ["{http.reverse_proxy.upstream.hostport}"]}},
                             "response": {"delete": ["Access-Control-Allow-Origin"]}},
                 "transport": {"dial_timeout": 10000000000, "protocol": "http"},
                 "upstreams": [{"dial": "{http.regexp.service.2}.lan:{http.regexp.service.1}"}]}
              ]}]}],
              "group": "group2"
            },
            {
              "handle": [{"handler": "subroute", "routes": [{"handle": [
                {"handler": "static_response", "status_code": 404, "body": "cmux sandbox not found. Use format: port-{port}-{instanceId}.DOMAIN"}
              ]}]}],
              "group": "group2"
            }
          ]
        }
      }
    }
  }
}"#;

    #[test]
    fn seed_layout() {
        let t = parse(SEED_JSON).unwrap();
        assert_eq!(t.warnings, vec![]);
        let got: Vec<(String, Option<&str>, Option<u16>, String)> = t
            .routes
            .iter()
            .map(|r| {
                (
                    r.host_pattern.clone(),
                    r.service.as_deref(),
                    r.upstream.fixed_port(),
                    r.source.json_path.clone().unwrap(),
                )
            })
            .collect();
        let want: Vec<(String, Option<&str>, Option<u16>, String)> = [
            ("vscode", 39378),
            ("worker", 39377),
            ("xterm", 39383),
            ("exec", 39375),
            ("vnc", 39380),
            ("preview", 5173),
        ]
        .iter()
        .enumerate()
        .map(|(i, (s, p))| {
            (
                format!(r"^{s}-(\d+)\."),
                Some(*s),
                Some(*p),
                format!("apps.http.servers.srv0.routes[{i}].handle[0].routes[0].handle[0]"),
            )
        })
        .collect();
        assert_eq!(got, want);
        let x = &t.routes[2];
        assert_eq!(x.source.file, "caddy admin API");
        assert_eq!(x.source.line, 0);
        assert_eq!(x.capture_name.as_deref(), Some("vmid"));
        assert_eq!(x.matcher, None);
        assert_eq!(x.site, "srv0 (:8080)");
        assert_eq!(
            x.upstream,
            Upstream::Fixed {
                host_template: "cmux-{http.regexp.vmid.1}.lan".into(),
                port: 39383
            }
        );
        let r = t.resolve("xterm-202.example.com").unwrap();
        assert_eq!(
            (r.upstream_host.as_str(), r.port),
            ("cmux-202.lan", Some(39383))
        );
        assert_eq!(t.routes_for_service("xterm").len(), 1);
    }

    #[test]
    fn later_layout() {
        let t = parse(LATER_JSON).unwrap();
        assert_eq!(t.warnings, vec![]);
        assert_eq!(t.routes.len(), 1);
        let r = &t.routes[0];
        assert_eq!(r.service, None);
        assert_eq!(
            r.upstream,
            Upstream::FromHost {
                host_template: "{http.regexp.service.2}.lan".into(),
                port_placeholder: "{http.regexp.service.1}".into()
            }
        );
        let res = t.resolve("port-39383-pvelxc-1a2b3c4d.example.com").unwrap();
        assert_eq!(res.upstream_host, "pvelxc-1a2b3c4d.lan");
        assert_eq!(res.port, Some(39383));
    }

    #[test]
    fn host_wrapped_site_and_odd_shapes() {
        let json = r#"{"apps":{"http":{"servers":{"srv1":{"routes":[
            {"match":[{"host":["Xterm.Example.com"]}],"terminal":true,
             "handle":[{"handler":"subroute","routes":[
                {"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"10.0.0.5:39383"},{"dial":"10.0.0.6:39383"}]}]},
                {"handle":[{"handler":"reverse_proxy","dynamic_upstreams":{"source":"srv"}}]},
                {"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"unix//run/x.sock"}]}]},
                {"handle":[{}]}
             ]}]},
            {"match":[{"path":["/a"]},{"path":["/b"]}],"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"a:1"}]}]},
            {"match":[{"header_regexp":{"Host":{"pattern":"("}}}],"handle":[{"handler":"reverse_proxy","upstreams":[{"dial":"a:2"}]}]},
            7
        ]}}}}}"#;
        let t = parse(json).unwrap();
        assert_eq!(t.routes.len(), 4);
        assert_eq!(t.routes[0].hosts, vec!["xterm.example.com".to_string()]);
        assert_eq!(
            t.resolve("xterm.example.com:443").unwrap().dial(),
            "10.0.0.5:39383"
        );
        assert_eq!(t.routes[2].conditions, vec![r#"path ["/a"]"#.to_string()]);
        let msgs: Vec<&str> = t.warnings.iter().map(|w| w.message.as_str()).collect();
        for needle in [
            "2 upstreams",
            "dynamic upstreams",
            "without a static upstream",
            "not understood",
            "without a `handler`",
            "2 matcher sets",
            "does not compile",
            "not an object",
        ] {
            assert!(
                msgs.iter().any(|m| m.contains(needle)),
                "{needle}: {msgs:#?}"
            );
        }
    }

    #[test]
    fn errors_and_empty_configs() {
        assert!(matches!(parse("{"), Err(AdminError::Json(_))));
        assert!(matches!(parse("[1]"), Err(AdminError::Shape(_))));
        assert!(matches!(
            parse(r#"{"apps":{"http":{"servers":[]}}}"#),
            Err(AdminError::Shape(_))
        ));
        let t = parse("null").unwrap();
        assert!(t.routes.is_empty() && t.warnings.len() == 1);
        let t = parse("{}").unwrap();
        assert!(t.routes.is_empty() && t.warnings.len() == 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2500))]
        #[test]
        fn never_panics_on_any_string(s in any::<String>()) {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_json_noise(s in "[{}\\[\\]\":,a-z0-9 \\\\]{0,200}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_mutated_fixture(cut in 0usize..1400, del in 0usize..8, ins in "[{}\\[\\]\":,0-9a-z]{0,3}") {
            let mut s: Vec<char> = LATER_JSON.chars().collect();
            let at = cut.min(s.len());
            let end = (at + del).min(s.len());
            s.splice(at..end, ins.chars());
            let text: String = s.into_iter().collect();
            if let Ok(t) = parse(&text) {
                let _ = t.resolve("port-1-a.b");
            }
        }

        #[test]
        fn never_panics_on_arbitrary_json(v in arb_json()) {
            let _ = parse(&v.to_string());
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i32>().prop_map(Value::from),
            prop_oneof![
                Just("subroute".to_string()),
                Just("reverse_proxy".to_string()),
                Just("a:1".to_string()),
                Just("{http.regexp.x.1}:{http.regexp.x.2}".to_string()),
                "[a-z{}.:(]{0,8}",
            ]
            .prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("apps".to_string()),
                        Just("http".to_string()),
                        Just("servers".to_string()),
                        Just("routes".to_string()),
                        Just("handle".to_string()),
                        Just("handler".to_string()),
                        Just("match".to_string()),
                        Just("upstreams".to_string()),
                        Just("dial".to_string()),
                        Just("header_regexp".to_string()),
                        Just("Host".to_string()),
                        Just("pattern".to_string()),
                        Just("host".to_string()),
                    ],
                    inner,
                    0..4
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
