//! The architecture invariants ARCHITECTURE.md names, checked on the sources: no module of any
//! crate is part of an import cycle, the pure crates do no IO, and the service core has no
//! transport in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(workspace().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| {
            workspace()
                .join("crates")
                .join(n)
                .join("Cargo.toml")
                .exists()
        })
        .collect();
    names.sort();
    names
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file without comments (doc links are not imports) and without its unit tests
/// (a test may use anything).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let text = text.split("#[cfg(test)]\nmod tests").next().unwrap_or("");
    text.lines()
        .map(|l| match l.find("//") {
            Some(at) => &l[..at],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A crate's modules by path (`""` for the crate root, `release/flow` for
/// `src/release/flow.rs`), each with its source file.
fn modules(krate: &str) -> BTreeMap<String, PathBuf> {
    let src = workspace().join("crates").join(krate).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files
        .into_iter()
        .map(|f| {
            let rel = f.strip_prefix(&src).unwrap().with_extension("");
            let mut name = rel.to_string_lossy().replace('\\', "/");
            if let Some(parent) = name.strip_suffix("/mod") {
                name = parent.to_owned();
            }
            if name == "lib" || name == "main" {
                name = String::new();
            }
            (name, f)
        })
        .collect()
}

fn ident(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The paths named after each `crate::` / `super::` in `code`, as segment lists from the crate
/// root; a `{a::b, c}` group yields one path per member.
fn referenced_paths(code: &str, module: &[&str], is_dir_module: bool) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (kind, base) in [
        ("crate::", Vec::new()),
        ("super::", {
            let mut b: Vec<String> = module.iter().map(|s| (*s).to_owned()).collect();
            // `super` of `release/flow.rs` is `release`; of `release/mod.rs`, the crate root.
            if !is_dir_module || !b.is_empty() {
                b.pop();
            }
            b
        }),
    ] {
        let mut rest = code;
        while let Some(at) = rest.find(kind) {
            let preceded_by_ident = rest[..at]
                .chars()
                .last()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + kind.len()..];
            if preceded_by_ident {
                continue;
            }
            let mut path = base.clone();
            let mut tail = rest;
            loop {
                if let Some(group) = tail.strip_prefix('{') {
                    let end = group.find('}').unwrap_or(group.len());
                    for member in group[..end].split(',') {
                        let first = ident(member.trim());
                        if !first.is_empty() {
                            let mut p = path.clone();
                            p.push(first.to_owned());
                            let after = member.trim()[first.len()..].trim_start();
                            if let Some(more) = after.strip_prefix("::") {
                                p.push(ident(more).to_owned());
                            }
                            out.push(p);
                        }
                    }
                    break;
                }
                let id = ident(tail);
                if id.is_empty() {
                    out.push(path.clone());
                    break;
                }
                path.push(id.to_owned());
                tail = &tail[id.len()..];
                match tail.strip_prefix("::") {
                    Some(t) => tail = t,
                    None => {
                        out.push(path.clone());
                        break;
                    }
                }
            }
        }
    }
    out
}

/// Edges between modules of one crate, leaving out a module's edges to its own ancestors and
/// descendants: a directory module and its files are one unit that declares itself.
fn import_graph(krate: &str) -> BTreeMap<String, BTreeSet<String>> {
    let modules = modules(krate);
    let mut graph = BTreeMap::new();
    for (name, file) in &modules {
        let segments: Vec<&str> = name.split('/').filter(|s| !s.is_empty()).collect();
        let is_dir_module = file.ends_with("mod.rs") || name.is_empty();
        let mut edges = BTreeSet::new();
        for path in referenced_paths(&code(file), &segments, is_dir_module) {
            // The longest prefix of the path that is a module is what it imports.
            let target = (0..=path.len())
                .rev()
                .map(|k| path[..k].join("/"))
                .find(|candidate| modules.contains_key(candidate));
            if let Some(target) = target {
                let related = |a: &str, b: &str| a.is_empty() || b.starts_with(&format!("{a}/"));
                if target != *name && !related(&target, name) && !related(name, &target) {
                    edges.insert(target);
                }
            }
        }
        graph.insert(name.clone(), edges);
    }
    graph
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        next: usize,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        let graph = s.graph;
        for w in graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        next: 0,
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(&mut state, v);
        }
    }
    state.found
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a", vec!["b"]),
        ("b", vec!["c"]),
        ("c", vec!["a"]),
        ("d", vec!["a"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
    .collect();
    assert_eq!(cycles(&graph), vec![vec!["a", "b", "c"]]);
    let paths = referenced_paths(
        "use super::{flow::plan, Ctx};\nlet x = crate::config::Config::load();",
        &["release", "api"],
        false,
    );
    assert!(paths.contains(&vec!["release".into(), "flow".into(), "plan".into()]));
    assert!(paths.contains(&vec!["release".into(), "Ctx".into()]));
    assert!(paths.contains(&vec!["config".into(), "Config".into(), "load".into()]));
}

#[test]
fn no_module_of_any_crate_is_part_of_an_import_cycle() {
    let mut found = Vec::new();
    for krate in crates() {
        for cycle in cycles(&import_graph(&krate)) {
            found.push(format!("{krate}: {}", cycle.join(" → ")));
        }
    }
    assert!(found.is_empty(), "import cycles:\n{}", found.join("\n"));
}

/// A module of unit tests in its own file (`#[cfg(test)] mod tests;`).
fn is_tests(module: &str) -> bool {
    module == "tests" || module.ends_with("/tests")
}

/// `[dependencies]` of a crate (not dev-dependencies), by name.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let manifest =
        std::fs::read_to_string(workspace().join("crates").join(krate).join("Cargo.toml")).unwrap();
    let mut deps = BTreeSet::new();
    let mut in_deps = false;
    for line in manifest.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_deps = line == "[dependencies]";
            continue;
        }
        if in_deps && let Some((name, _)) = line.split_once(['=', '.']) {
            let name = name.trim();
            if !name.is_empty() && !name.starts_with('#') {
                deps.insert(name.to_owned());
            }
        }
    }
    deps
}

/// The crates that are functions from values to values: the edit engine, the spec model, the
/// release rules. Tested without git, a database or a network, and usable anywhere.
const PURE_CRATES: [&str; 3] = ["tug-edit", "tug-spec", "tug-release"];

#[test]
fn the_pure_crates_do_no_io() {
    const IO: [&str; 8] = [
        "std::fs",
        "std::net",
        "std::process",
        "std::env",
        "tokio",
        "reqwest",
        "sqlx",
        "tug_git",
    ];
    let mut found = Vec::new();
    for krate in PURE_CRATES {
        for (module, file) in modules(krate) {
            if is_tests(&module) {
                continue;
            }
            let code = code(&file);
            for io in IO {
                if code.contains(io) {
                    found.push(format!("{krate} {module}: {io}"));
                }
            }
        }
        for dep in dependencies(krate) {
            if ["tokio", "reqwest", "sqlx", "tug-git", "tug-store"].contains(&dep.as_str()) {
                found.push(format!("{krate} depends on {dep}"));
            }
        }
    }
    assert!(found.is_empty(), "IO in pure crates:\n{}", found.join("\n"));
}

#[test]
fn the_service_core_has_no_transport() {
    const TRANSPORTS: [&str; 7] = [
        "axum",
        "axum-server",
        "tonic",
        "hyper",
        "http",
        "tower",
        "tower-http",
    ];
    let deps = dependencies("tug-service");
    let found: Vec<&str> = TRANSPORTS
        .into_iter()
        .filter(|t| deps.contains(*t))
        .collect();
    assert!(found.is_empty(), "tug-service depends on {found:?}");
    for (module, file) in modules("tug-service") {
        if is_tests(&module) {
            continue;
        }
        let code = code(&file);
        for t in ["axum::", "tonic::", "StatusCode"] {
            assert!(!code.contains(t), "tug-service {module} uses {t}");
        }
    }
}
