//! The architecture of docs/architecture.md, checked on the source text so it
//! stays true: modules form layers (gpu ← ops ← models ← the loop ← engine ←
//! farm, bench, cli) and a module imports only its own layer or lower ones; no
//! two modules import each other, directly or around a cycle; no file in src/
//! grows past 500 lines, no function past 80.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules by layer, lowest first. A module may use its own layer
/// and every layer before it.
const LAYERS: &[&[&str]] = &[
    &["error"],
    &["gpu"],
    &["ops"],
    &[
        "weights",
        "tokenizer",
        "prompt",
        "output",
        "model_dir",
        "lora",
    ],
    &["models", "schedulers"],
    &["phases"],
    &["request", "postprocess", "trace", "search", "memory_plan"],
    &["engine"],
    &["farm", "bench", "cli"],
    &["lib", "main"],
];

const MAX_FILE_LINES: usize = 500;
const MAX_FN_LINES: usize = 80;

fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir).unwrap().flatten().collect();
        entries.sort_by_key(|e| e.path());
        for entry in entries {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"), &mut out);
    out
}

/// `src/ops/matmul.rs` → `["ops", "matmul"]`; `mod.rs` is its folder.
fn module_of(path: &Path) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut parts: Vec<String> = path
        .strip_prefix(&src)
        .unwrap()
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

fn layer(top: &str) -> usize {
    LAYERS
        .iter()
        .position(|l| l.contains(&top))
        .unwrap_or_else(|| panic!("module `{top}` has no layer in tests/architecture.rs"))
}

/// The `crate::a::b` paths a file names, in `use` trees (groups expanded) and
/// inline, each as its segments.
fn crate_paths(text: &str) -> Vec<Vec<String>> {
    let code: String = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let chars: Vec<char> = code.chars().collect();
    let mut paths = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let mut pos = code[..at].chars().count() + "crate::".len();
        use_tree(&chars, &mut pos, Vec::new(), &mut paths);
    }
    for path in &mut paths {
        path.retain(|s| s != "self" && s != "*");
    }
    paths
}

/// One use tree at `pos` (`a::b`, `a::{b, c::d}`, ...), its paths appended to `out`.
fn use_tree(chars: &[char], pos: &mut usize, mut prefix: Vec<String>, out: &mut Vec<Vec<String>>) {
    let skip_space = |pos: &mut usize| {
        while chars.get(*pos).is_some_and(|c| c.is_whitespace()) {
            *pos += 1;
        }
    };
    skip_space(pos);
    if chars.get(*pos) == Some(&'{') {
        *pos += 1;
        loop {
            skip_space(pos);
            match chars.get(*pos) {
                None => return,
                Some('}') => {
                    *pos += 1;
                    return;
                }
                Some(',') => *pos += 1,
                Some(_) => use_tree(chars, pos, prefix.clone(), out),
            }
        }
    }
    let start = *pos;
    while chars
        .get(*pos)
        .is_some_and(|c| c.is_alphanumeric() || *c == '_' || *c == '*')
    {
        *pos += 1;
    }
    if *pos == start {
        *pos += 1; // not a path: step over it
        return;
    }
    prefix.push(chars[start..*pos].iter().collect());
    if chars.get(*pos) == Some(&':') && chars.get(*pos + 1) == Some(&':') {
        *pos += 2;
        use_tree(chars, pos, prefix, out);
    } else {
        out.push(prefix);
    }
}

/// The longest known module that `path` starts with.
fn resolve(path: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    (1..=path.len())
        .rev()
        .map(|n| path[..n].to_vec())
        .find(|m| modules.contains(m))
}

fn import_graph() -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let files = sources();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(p, _)| module_of(p)).collect();
    let mut graph = BTreeMap::new();
    for (path, text) in &files {
        let me = module_of(path);
        let uses: BTreeSet<Vec<String>> = crate_paths(text)
            .iter()
            .filter_map(|p| resolve(p, &modules))
            .filter(|m| *m != me && !me.starts_with(m))
            .collect();
        graph.insert(me, uses);
    }
    graph
}

#[test]
fn modules_import_only_their_layer_or_lower() {
    let mut wrong = Vec::new();
    for (module, uses) in import_graph() {
        let Some(top) = module.first() else { continue };
        for used in uses {
            if layer(&used[0]) > layer(top) {
                wrong.push(format!("{} imports {}", module.join("::"), used.join("::")));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports that reach up a layer:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn no_import_cycles() {
    let graph = import_graph();
    // Depth-first search with the path on a stack: a back edge is a cycle.
    fn visit(
        m: &Vec<String>,
        graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<String> {
        if let Some(i) = stack.iter().position(|s| s == m) {
            let cycle: Vec<String> = stack[i..].iter().chain([m]).map(|s| s.join("::")).collect();
            return Some(cycle.join(" -> "));
        }
        if done.contains(m) {
            return None;
        }
        stack.push(m.clone());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(m.clone());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("import cycle: {cycle}");
        }
    }
}

#[test]
fn files_and_functions_stay_short() {
    let fn_re =
        regex::Regex::new(r"^(\s*)(pub(\([\w:]+\))? )?(const )?(unsafe )?fn (\w+)").unwrap();
    let mut long = Vec::new();
    for (path, text) in sources() {
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() > MAX_FILE_LINES {
            long.push(format!("{}: {} lines", path.display(), lines.len()));
        }
        for (i, line) in lines.iter().enumerate() {
            let Some(cap) = fn_re.captures(line) else {
                continue;
            };
            if line.trim_end().ends_with(';') {
                continue; // a trait method without a body
            }
            let close = format!("{}}}", &cap[1]);
            if let Some(end) = lines[i..].iter().position(|l| *l == close) {
                if end + 1 > MAX_FN_LINES {
                    long.push(format!(
                        "{}:{} fn {}: {} lines",
                        path.display(),
                        i + 1,
                        &cap[6],
                        end + 1
                    ));
                }
            }
        }
    }
    assert!(
        long.is_empty(),
        "over the limits ({MAX_FILE_LINES} lines a file, {MAX_FN_LINES} a function):\n{}",
        long.join("\n")
    );
}

#[test]
fn the_checks_see_what_they_check() {
    // The parser must find real imports, or the tests above pass vacuously.
    let graph = import_graph();
    let search = &graph[&vec!["search".to_string()]];
    assert!(search.contains(&vec!["request".to_string()]), "{search:?}");
    let paths =
        crate_paths("use crate::ops::{layout, score::{self}};\nlet x = crate::gpu::dispatch::run(");
    assert!(
        paths.contains(&vec!["ops".into(), "layout".into()]),
        "{paths:?}"
    );
    assert!(
        paths.contains(&vec!["gpu".into(), "dispatch".into(), "run".into()]),
        "{paths:?}"
    );
}
