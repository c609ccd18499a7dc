//! No two modules import each other, directly or in a loop, anywhere in the workspace:
//! `cargo test -p xtask --test module_graph`.
//!
//! A module imports another when its file names an item of it: a `use` of a path through
//! `crate::`, `super::`, `self::` or a child module's name, or such a path written inline
//! (`composed::product(..)`). A path counts for the deepest module it passes through, so
//! `crate::kernels::composed::project` imports `kernels::composed`, and a `pub use child::Item`
//! in a parent imports the child. Declaring a child (`mod child;`) is not an import. Each crate
//! root (`lib.rs`, `main.rs`, an example, a test, a bench) is its own tree.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::{is_ident, strip, workspace};

/// A module: its file and its children's names.
struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
}

/// Every module of the crate rooted at `root`, by path (`crate`, `crate::kernels`, …).
fn module_tree(root: &Path) -> BTreeMap<String, Module> {
    let mut tree = BTreeMap::new();
    let mut pending = vec![("crate".to_string(), root.to_path_buf())];
    while let Some((path, file)) = pending.pop() {
        let code = strip(&std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
        let dir = child_dir(&file);
        let mut children = BTreeSet::new();
        for name in declared_modules(&code) {
            let candidates = [dir.join(format!("{name}.rs")), dir.join(&name).join("mod.rs")];
            if let Some(child) = candidates.into_iter().find(|c| c.is_file()) {
                pending.push((format!("{path}::{name}"), child));
                children.insert(name);
            }
        }
        tree.insert(path, Module { file, children });
    }
    tree
}

/// Where `mod x;` in `file` looks for `x.rs`.
fn child_dir(file: &Path) -> PathBuf {
    let parent = file.parent().expect("a file has a folder").to_path_buf();
    match file.file_name().and_then(|n| n.to_str()) {
        Some("lib.rs" | "main.rs" | "mod.rs") => parent,
        _ if parent.ends_with("examples") || parent.ends_with("tests") || parent.ends_with("benches") => parent,
        _ => parent.join(file.file_stem().expect("a file stem")),
    }
}

/// `x` of every `mod x;` (not inline `mod x { … }`, which is part of this file).
fn declared_modules(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let tokens = tokens(code);
    for (i, t) in tokens.iter().enumerate() {
        if t == "mod" && tokens.get(i + 2).is_some_and(|s| s == ";") {
            out.push(tokens[i + 1].clone());
        }
    }
    out
}

/// Identifiers, `::` and single punctuation characters.
fn tokens(code: &str) -> Vec<String> {
    let c: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        if c[i].is_whitespace() {
            i += 1;
        } else if is_ident(c[i]) {
            let start = i;
            while i < c.len() && is_ident(c[i]) {
                i += 1;
            }
            out.push(c[start..i].iter().collect());
        } else if c[i] == ':' && c.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c[i].to_string());
            i += 1;
        }
    }
    out
}

/// Every path the file names: each `use` tree expanded, and each inline `a::b::c` path; with
/// each, how many inline modules (`mod tests { … }`) it sits in.
fn named_paths(code: &str) -> Vec<(usize, Vec<String>)> {
    let tokens = tokens(code);
    let mut paths = Vec::new();
    // The brace depth at which each enclosing inline module opened.
    let (mut depth, mut inline): (usize, Vec<usize>) = (0, Vec::new());
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        if t == "{" {
            let opens_module = i >= 2 && tokens[i - 2] == "mod";
            depth += 1;
            if opens_module {
                inline.push(depth);
            }
            i += 1;
        } else if t == "}" {
            if inline.last() == Some(&depth) {
                inline.pop();
            }
            depth = depth.saturating_sub(1);
            i += 1;
        } else if t == "use" && (i == 0 || tokens[i - 1] != "::") {
            let end = tokens[i..].iter().position(|t| t == ";").map_or(tokens.len(), |p| i + p);
            let mut found = Vec::new();
            expand_use(&tokens[i + 1..end], &[], &mut found);
            paths.extend(found.into_iter().map(|p| (inline.len(), p)));
            i = end;
        } else if is_ident_token(t) && tokens.get(i + 1).is_some_and(|t| t == "::") && (i == 0 || tokens[i - 1] != "::")
        {
            let mut path = vec![t.to_string()];
            let mut j = i + 1;
            while tokens.get(j).is_some_and(|t| t == "::") && tokens.get(j + 1).is_some_and(|t| is_ident_token(t)) {
                path.push(tokens[j + 1].clone());
                j += 2;
            }
            paths.push((inline.len(), path));
            i = j;
        } else {
            i += 1;
        }
    }
    paths
}

fn is_ident_token(t: &str) -> bool {
    t.chars().next().is_some_and(|c| is_ident(c) && !c.is_numeric())
}

/// The paths of one `use` tree (`a::{b, c::{d, e}}` → `a::b`, `a::c::d`, `a::c::e`).
fn expand_use(tree: &[String], prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut i = 0;
    let mut path = prefix.to_vec();
    while i < tree.len() {
        match tree[i].as_str() {
            "::" => i += 1,
            "{" => {
                let close = matching_brace(tree, i);
                for part in split_top_level(&tree[i + 1..close]) {
                    expand_use(part, &path, out);
                }
                return;
            }
            "as" => break,
            "*" | "self" if !path.is_empty() => break,
            t if is_ident_token(t) => {
                path.push(t.to_string());
                i += 1;
            }
            _ => i += 1,
        }
    }
    if !path.is_empty() {
        out.push(path);
    }
}

fn matching_brace(tree: &[String], open: usize) -> usize {
    let mut depth = 0;
    for (i, t) in tree.iter().enumerate().skip(open) {
        depth += match t.as_str() {
            "{" => 1,
            "}" => -1,
            _ => 0,
        };
        if depth == 0 {
            return i;
        }
    }
    tree.len()
}

fn split_top_level(tree: &[String]) -> Vec<&[String]> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, t) in tree.iter().enumerate() {
        match t.as_str() {
            "{" => depth += 1,
            "}" => depth -= 1,
            "," if depth == 0 => {
                parts.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// The module `path`, named in module `from` inside `inline` inline modules, passes through last
/// (None: outside this crate; an inline module counts as its file's).
fn resolve(tree: &BTreeMap<String, Module>, from: &str, inline: usize, path: &[String]) -> Option<String> {
    let mut at: Vec<&str> = from.split("::").collect();
    let mut rest = path;
    let mut inline = inline;
    match path.first().map(String::as_str)? {
        "crate" => {
            at.truncate(1);
            rest = &path[1..];
        }
        "self" => rest = &path[1..],
        "super" => {
            while rest.first().is_some_and(|s| s == "super") {
                if inline > 0 {
                    inline -= 1;
                } else {
                    at.pop();
                }
                rest = &rest[1..];
            }
        }
        first if inline == 0 && tree[from].children.contains(first) => {}
        _ => return None,
    }
    let mut module = at.join("::");
    for segment in rest {
        if tree.get(&module).is_some_and(|m| m.children.contains(segment)) {
            module = format!("{module}::{segment}");
        } else {
            break;
        }
    }
    Some(module)
}

/// Who imports whom in one crate.
fn imports(tree: &BTreeMap<String, Module>) -> BTreeMap<String, BTreeSet<String>> {
    tree.iter()
        .map(|(name, module)| {
            let code = strip(&std::fs::read_to_string(&module.file).expect("read again"));
            let targets = named_paths(&code)
                .iter()
                .filter_map(|(inline, p)| resolve(tree, name, *inline, p))
                .filter(|target| target != name)
                .collect();
            (name.clone(), targets)
        })
        .collect()
}

/// The loops of `graph` (strongly connected sets of more than one module), Tarjan's way.
fn loops(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'g> {
        graph: &'g BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'g str, usize>,
        low: BTreeMap<&'g str, usize>,
        stack: Vec<&'g str>,
        on_stack: BTreeSet<&'g str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'g>(s: &mut State<'g>, v: &'g str) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.graph.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.graph.contains_key(w) {
                continue;
            }
            if !s.index.contains_key(w) {
                visit(s, w);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.on_stack.contains(w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut set = Vec::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                set.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if set.len() > 1 {
                set.sort();
                s.found.push(set);
            }
        }
    }
    let mut s = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.found
}

/// Every crate root of the workspace: each package's `src/lib.rs`, `src/main.rs`, and the files
/// directly in its `examples/`, `tests/` and `benches/`.
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for package in common::PACKAGES {
        let dir = workspace().join(package);
        for file in ["src/lib.rs", "src/main.rs", "lib.rs"] {
            if dir.join(file).is_file() {
                roots.push(dir.join(file));
            }
        }
        for folder in ["examples", "tests", "benches", "fuzz_targets"] {
            let Ok(entries) = std::fs::read_dir(dir.join(folder)) else { continue };
            roots.extend(
                entries.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "rs")),
            );
        }
    }
    roots.sort();
    roots
}

#[test]
fn no_module_imports_one_that_imports_it() {
    let mut found = Vec::new();
    let mut modules = 0;
    for root in crate_roots() {
        let tree = module_tree(&root);
        modules += tree.len();
        let graph = imports(&tree);
        for set in loops(&graph) {
            let edges: Vec<String> = set
                .iter()
                .flat_map(|from| {
                    graph[from].iter().filter(|to| set.contains(to)).map(move |to| format!("{from} → {to}"))
                })
                .collect();
            found.push(format!("{}: {} ({})", root.display(), set.join(" ⇄ "), edges.join(", ")));
        }
    }
    assert!(modules > 100, "only {modules} modules found: the walk is broken");
    assert!(found.is_empty(), "modules that import each other:\n{}", found.join("\n"));
}

#[test]
fn the_checker_sees_a_loop_through_a_parent_and_its_child() {
    let dir = std::env::temp_dir().join(format!("module-graph-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("kernels")).unwrap();
    std::fs::write(dir.join("lib.rs"), "mod kernels;\nmod model;\nuse crate::model::Llama;\n").unwrap();
    std::fs::write(dir.join("kernels.rs"), "mod composed;\npub trait K { fn f() { composed::g() } }\n").unwrap();
    std::fs::write(dir.join("kernels/composed.rs"), "use super::{K};\n// use crate::model;\npub fn g() {}\n").unwrap();
    std::fs::write(
        dir.join("model.rs"),
        "pub struct Llama;\nfn s() { let _ = \"crate::kernels::x\"; }\n#[cfg(test)]\nmod tests {\n    use super::*;\n}\n",
    )
    .unwrap();
    let tree = module_tree(&dir.join("lib.rs"));
    assert_eq!(tree.len(), 4);
    let graph = imports(&tree);
    assert_eq!(loops(&graph), vec![vec!["crate::kernels".to_string(), "crate::kernels::composed".to_string()]]);
    assert!(graph["crate::model"].is_empty(), "comments and strings are not imports: {:?}", graph["crate::model"]);
    assert_eq!(graph["crate"], BTreeSet::from(["crate::model".to_string()]));
    std::fs::remove_dir_all(&dir).unwrap();
}
