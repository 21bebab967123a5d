//! The architecture, checked: inside `server/`, a module imports only from the
//! layers below it and files of one module never import each other in a circle;
//! the typed client library compiles without the server.
//!
//! The layers, from the bottom (README, "Architecture"):
//! settings and errors; storage, the registry and the runtimes; keys and the
//! tasks' pipelines; the services; the state the front ends share (the crate
//! root); the HTTP API; the catalogue.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Each top-level module of `server/src` and its layer. A module may import from
/// its own module and from lower layers only.
const LAYERS: &[(&str, u32)] = &[
    ("config", 0),
    ("error", 0),
    ("metrics", 0),
    ("store", 10),
    ("registry", 10),
    ("runtime", 10),
    ("auth", 20),
    ("pipeline", 20),
    ("service", 30),
    // lib.rs: `AppState`, what the front ends share, and the wiring (which may
    // import anything: it is not checked as an importer).
    ("", 35),
    ("api", 40),
    ("ui", 50),
];

fn layer(module: &str) -> Option<u32> {
    let top = module.split("::").next().unwrap_or("");
    LAYERS.iter().find(|(m, _)| *m == top).map(|(_, l)| *l)
}

/// `server/src/a/b.rs` -> `a::b`, `a/mod.rs` -> `a`, `lib.rs` -> ``.
fn module_of(root: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(root).expect("under root").with_extension("");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read_dir") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The source without comments and without its test module (tests may reach
/// anywhere); `None` for a file that is a test module as a whole.
fn code(src: &str) -> String {
    let mut out = String::new();
    for line in src.lines() {
        let t = line.trim_start();
        if t.starts_with("#[cfg(test)]") {
            // What follows is the file's test module (by this project's convention, last).
            break;
        }
        if t.starts_with("//") {
            continue;
        }
        out.push_str(line.split(" // ").next().unwrap_or(line));
        out.push('\n');
    }
    out
}

/// Modules declared `#[cfg(test)] mod x;` in a file: test code, not checked.
fn test_only_children(src: &str) -> Vec<String> {
    let lines: Vec<&str> = src.lines().map(str::trim).collect();
    lines
        .windows(2)
        .filter(|w| w[0] == "#[cfg(test)]")
        .filter_map(|w| w[1].trim_start_matches("pub(crate) ").strip_prefix("mod ")?.strip_suffix(';'))
        .map(str::to_string)
        .collect()
}

/// The modules a file's code names through `crate::` and `super::` paths,
/// resolved to the longest known module.
fn imports(module: &str, code: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let resolve = |path: &str| -> String {
        let parts: Vec<&str> = path.split("::").collect();
        (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|c| known.contains(c)).unwrap_or_default()
    };
    // `super` of `a::b` is `a`, whether it lives in a/b.rs or a/b/mod.rs.
    let parent = module.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string());
    let mut found = BTreeSet::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent)] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            let preceded_by_ident = i > 0 && {
                let b = rest.as_bytes()[i - 1];
                b.is_ascii_alphanumeric() || b == b'_'
            };
            let tail = &rest[i + prefix.len()..];
            rest = tail;
            if preceded_by_ident {
                continue;
            }
            let path: String =
                tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':').collect();
            let path = path.trim_end_matches(':');
            let full = match (base.is_empty(), path.is_empty()) {
                (true, _) => path.to_string(),
                (false, true) => base.clone(),
                (false, false) => format!("{base}::{path}"),
            };
            found.insert(resolve(&full));
        }
    }
    found.remove(module);
    found
}

struct Graph {
    /// module -> the modules it imports.
    edges: BTreeMap<String, BTreeSet<String>>,
}

fn server_graph() -> Graph {
    let g = graph(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../server/src"));
    assert!(g.edges.len() > 40, "server/src not found");
    g
}

/// The import graph of the crate whose sources are under `root`.
fn graph(root: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    let sources: BTreeMap<String, (PathBuf, String)> = files
        .into_iter()
        .map(|f| {
            let src = std::fs::read_to_string(&f).expect("read");
            (module_of(root, &f), (f, src))
        })
        .collect();
    let mut test_only = BTreeSet::new();
    for (m, (_, src)) in &sources {
        for child in test_only_children(src) {
            test_only.insert(if m.is_empty() { child } else { format!("{m}::{child}") });
        }
    }
    let known: BTreeSet<String> = sources.keys().cloned().collect();
    let mut edges = BTreeMap::new();
    for (m, (_, src)) in &sources {
        if test_only.contains(m) {
            continue;
        }
        edges.insert(m.clone(), imports(m, &code(src), &known));
    }
    Graph { edges }
}

fn top(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

/// A module imports nothing from a layer above its own, nor from another module
/// of its own layer.
#[test]
fn server_modules_import_only_from_lower_layers() {
    let wrong = against_layers(&server_graph());
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

fn against_layers(g: &Graph) -> Vec<String> {
    let mut wrong = Vec::new();
    for (m, targets) in &g.edges {
        if m.is_empty() {
            continue; // the wiring
        }
        let Some(own) = layer(m) else {
            wrong.push(format!("server/src module '{m}' has no layer: add it to LAYERS in tests/tests/layering.rs"));
            continue;
        };
        for t in targets {
            if top(t) == top(m) {
                continue;
            }
            match layer(t) {
                Some(l) if l < own => {}
                _ => wrong.push(format!("'{m}' (layer {own}) imports '{t}' (layer {:?})", layer(t))),
            }
        }
    }
    wrong
}

/// The files of one module (siblings, not counting their parent `mod.rs`,
/// which declares them) never import each other in a circle.
#[test]
fn no_circle_between_files() {
    let circles = circles(&server_graph());
    assert!(circles.is_empty(), "files that import each other:\n{}", circles.join("\n"));
}

fn circles(g: &Graph) -> Vec<String> {
    let parent = |m: &str| m.rsplit_once("::").map_or(String::new(), |(p, _)| p.to_string());
    // Edges between files, without those between a module and its own children.
    let edges: BTreeMap<&str, Vec<&str>> = g
        .edges
        .iter()
        .map(|(m, ts)| {
            let keep = ts.iter().filter(|t| parent(t) != *m && parent(m) != **t).map(String::as_str).collect();
            (m.as_str(), keep)
        })
        .collect();
    // Depth-first search for a back edge.
    fn visit<'a>(
        n: &'a str,
        edges: &BTreeMap<&'a str, Vec<&'a str>>,
        state: &mut BTreeMap<&'a str, u8>,
        stack: &mut Vec<&'a str>,
        circles: &mut Vec<String>,
    ) {
        state.insert(n, 1);
        stack.push(n);
        for &t in edges.get(n).into_iter().flatten() {
            match state.get(t).copied().unwrap_or(0) {
                0 => visit(t, edges, state, stack, circles),
                1 => {
                    let from = stack.iter().position(|s| *s == t).unwrap_or(0);
                    let mut c: Vec<&str> = stack[from..].to_vec();
                    c.push(t);
                    circles.push(c.join(" -> "));
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(n, 2);
    }
    let mut state = BTreeMap::new();
    let mut circles = Vec::new();
    for &n in edges.keys() {
        if state.get(n).copied().unwrap_or(0) == 0 {
            visit(n, &edges, &mut state, &mut Vec::new(), &mut circles);
        }
    }
    circles
}

/// The checks above see what they must: in a small crate with a circle between
/// two files and an upward import, both are found; the test module is not read.
#[test]
fn the_checks_find_what_they_look_for() {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = [
        ("lib.rs", "pub mod api;\npub mod service;\npub struct AppState;\n"),
        ("api/mod.rs", "use crate::service::predict::Target;\nuse crate::AppState;\n"),
        ("service/mod.rs", "pub mod loader;\npub mod predict;\npub struct Services;\n"),
        ("service/loader.rs", "use super::Services;\nuse super::predict::now; // the circle\n"),
        (
            "service/predict.rs",
            "use super::{loader::Load, Services};\nuse super::loader::Load;\nfn f() { crate::api::parse(b) }\n\
             // crate::ui::x is a comment\n#[cfg(test)]\nmod tests {\n    use crate::AppState;\n}\n",
        ),
    ];
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    }
    let g = graph(dir.path());
    let set = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>();
    assert_eq!(g.edges["service::predict"], set(&["service", "service::loader", "api"]));
    assert_eq!(g.edges["api"], set(&["service::predict", ""]));
    assert_eq!(against_layers(&g), ["'service::predict' (layer 30) imports 'api' (layer Some(40))"]);
    // The upward import closes a circle too.
    assert_eq!(
        circles(&g),
        ["api -> service::predict -> api", "service::predict -> service::loader -> service::predict"]
    );
    assert_eq!(test_only_children("#[cfg(test)]\npub(crate) mod conformance;\nmod x;"), ["conformance"]);
}

/// A program that uses the typed client (`zoo-client` without default features)
/// compiles zoo-api, reqwest and serde, not the server, the formats or the runtimes.
#[test]
fn the_client_library_does_not_depend_on_the_server() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = std::process::Command::new(cargo)
        .args(["tree", "--locked", "-p", "zoo-client", "--no-default-features", "-e", "normal"])
        .args(["--prefix", "none", "--format", "{p}"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo tree");
    assert!(out.status.success(), "cargo tree failed: {}", String::from_utf8_lossy(&out.stderr));
    let tree = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = tree.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert!(crates.contains("zoo-api") && crates.contains("reqwest"), "{crates:?}");
    for heavy in
        ["zoo-server", "zoo-formats", "zoo-torch", "ort", "tract-onnx", "candle-core", "sqlx", "aws-sdk-s3", "axum"]
    {
        assert!(!crates.contains(heavy), "zoo-client without default features depends on {heavy}");
    }
}
