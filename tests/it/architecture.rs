//! The shape of `src/` (docs/architecture.md): dependencies between top-level modules point one
//! way (no import cycle), `cli.rs` does no I/O, and the architecture document names every module.
//!
//! The module graph is read from the source text: every `crate::MODULE` path (use lines, grouped
//! `use crate::{a, b::c}` and inline paths), comments and test modules (`#[cfg(test)] mod x {`) left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and without its unit-test module.
fn code(text: &str) -> String {
    let test_module = regex::Regex::new(r"#\[cfg\((?:all\()?test\b[^\]]*\]\s*mod \w+ \{").unwrap();
    let text = match test_module.find(text) {
        Some(m) => &text[..m.start()],
        None => text,
    };
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The top-level modules each top-level module refers to.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let root = src();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let path = regex::Regex::new(r"crate::(\w+)").unwrap();
    let group = regex::Regex::new(r"crate::\{([^;]*)\}").unwrap();
    let head = regex::Regex::new(r"(?:^|[,{])\s*(\w+)").unwrap();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&root).unwrap();
        let module = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let module = module.trim_end_matches(".rs").to_string();
        let name = f.file_name().unwrap().to_string_lossy();
        if module == "lib" || module == "main" || name == "tests.rs" || name.ends_with("_tests.rs")
        {
            continue;
        }
        let text = code(&std::fs::read_to_string(&f).unwrap());
        let deps = graph.entry(module.clone()).or_default();
        for c in path.captures_iter(&text) {
            deps.insert(c[1].to_string());
        }
        for g in group.captures_iter(&text) {
            // Only the first name of each top-level item of the group: `a::{x, y}, b` -> a, b.
            let mut depth = 0;
            let mut top = String::new();
            for ch in g[1].chars() {
                match ch {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ if depth == 0 => top.push(ch),
                    _ => {}
                }
            }
            for c in head.captures_iter(&top) {
                deps.insert(c[1].to_string());
            }
        }
        deps.remove(&module);
    }
    let known: BTreeSet<String> = graph.keys().cloned().collect();
    for deps in graph.values_mut() {
        deps.retain(|d| known.contains(d));
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        out: Vec<Vec<String>>,
    }
    fn strong<'a>(t: &mut T<'a>, v: &'a str) {
        t.index.insert(v, t.next);
        t.low.insert(v, t.next);
        t.next += 1;
        t.stack.push(v);
        for w in &t.g[v] {
            let w = w.as_str();
            if !t.index.contains_key(w) {
                strong(t, w);
                let l = t.low[v].min(t.low[w]);
                t.low.insert(v, l);
            } else if t.stack.contains(&w) {
                let l = t.low[v].min(t.index[w]);
                t.low.insert(v, l);
            }
        }
        if t.low[v] == t.index[v] {
            let mut c = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                c.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if c.len() > 1 {
                c.sort();
                t.out.push(c);
            }
        }
    }
    let mut t = T {
        g: graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !t.index.contains_key(v.as_str()) {
            strong(&mut t, v);
        }
    }
    t.out
}

#[test]
fn no_import_cycle_between_modules() {
    let g = module_graph();
    assert!(g.len() > 10, "{g:?}");
    // The reader sees what it must see: a few edges that exist, and none that must not.
    assert!(
        g["run"].contains("verdict") && g["serve"].contains("run"),
        "{g:?}"
    );
    for (from, to) in [
        ("verdict", "probe"),
        ("verdict", "run"),
        ("cli", "settings"),
        ("cli", "run"),
        ("target", "verdict"),
        ("serve", "lab"),
        // Once the edges that closed a cycle: the facts below the engine, state below the report.
        ("identity", "probe"),
        ("identity", "verdict"),
        ("observation", "probe"),
        ("state", "report"),
    ] {
        assert!(!g[from].contains(to), "{from} -> {to}: {g:?}");
    }
    let map: String = g
        .iter()
        .map(|(m, d)| {
            format!(
                "{m} -> {}\n",
                d.iter().cloned().collect::<Vec<_>>().join(", ")
            )
        })
        .collect();
    let c = cycles(&g);
    assert!(c.is_empty(), "import cycles: {c:?}\n{map}");
}

#[test]
fn the_cycle_finder_finds_cycles() {
    let g: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
        ("e", vec![]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    assert_eq!(cycles(&g), vec![vec!["a", "b", "c"]]);
    let mut g = g;
    g.get_mut("c").unwrap().clear();
    assert!(cycles(&g).is_empty());
}

/// `cli.rs` is the clap definitions and their value parsers: no files, environment, terminal,
/// network or output (settings.rs reads those).
#[test]
fn cli_does_no_io() {
    let text = code(&std::fs::read_to_string(src().join("cli.rs")).unwrap());
    for io in [
        "std::fs",
        "fs::",
        "File::",
        "std::env",
        "env::var",
        "IsTerminal",
        "stdin",
        "stdout",
        "stderr",
        "print!",
        "println!",
        "to_socket_addrs",
        "lookup_host",
        "tokio",
        "reqwest",
        "std::net::TcpStream",
        "Command::new",
    ] {
        assert!(!text.contains(io), "cli.rs uses {io}");
    }
}

/// Every top-level module is on docs/architecture.md's map.
#[test]
fn the_architecture_document_names_every_module() {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/architecture.md"))
            .unwrap();
    let mut missing = Vec::new();
    for m in module_graph().keys() {
        let file = if src().join(m).is_dir() {
            format!("{m}/")
        } else {
            format!("{m}.rs")
        };
        if !doc.contains(&file) {
            missing.push(file);
        }
    }
    assert!(
        missing.is_empty(),
        "not in docs/architecture.md: {missing:?}"
    );
}
