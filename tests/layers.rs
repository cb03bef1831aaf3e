//! The modules of `rkllm/src` form the layers that `ARCHITECTURE.md` describes: no module
//! imports one of a higher layer, and no two modules import each other (directly or round a
//! cycle). The layer table is read from `ARCHITECTURE.md` itself, so the map and the check
//! cannot drift apart. Test modules (`#[cfg(test)] mod tests`, at the end of a file, and
//! files of tests named `*_tests.rs`, included with `#[path]`) are not counted: tests may use
//! anything.
//!
//! A test of the workspace's root package, not of the `rkllm` package: it reads the
//! repository's `ARCHITECTURE.md`, which the published crate does not ship.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layer table of `ARCHITECTURE.md`: rows `| N | name | `module` `module` … | … |`.
fn layers() -> BTreeMap<String, usize> {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("ARCHITECTURE.md"))
            .expect("ARCHITECTURE.md at the workspace root");
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let Ok(layer) = cells[1].parse::<usize>() else {
            continue;
        };
        for module in cells[3].split('`').skip(1).step_by(2) {
            let module = module.to_string();
            assert!(
                map.insert(module.clone(), layer).is_none(),
                "{module} is listed twice in ARCHITECTURE.md"
            );
        }
    }
    assert!(map.len() > 10, "the layer table was not found: {map:?}");
    map
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs")
            && !path
                .file_stem()
                .is_some_and(|s| s.to_string_lossy().ends_with("_tests"))
        {
            out.push(path);
        }
    }
}

/// `chat/session.rs` → `chat::session`; `chat/mod.rs` → `chat`; `lib.rs` → `lib`.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.len() > 1 && parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code of a file without comments and without its test module.
fn code(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::new();
    for (i, line) in lines.iter().enumerate() {
        let next = lines.get(i + 1).map_or("", |l| l.trim());
        if line.trim() == "#[cfg(test)]"
            && (next.starts_with("mod tests") || next.starts_with("pub(crate) mod tests"))
        {
            break;
        }
        let line = line.split("//").next().unwrap_or("");
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A module's re-exports of its children's items: in `chat/mod.rs`, `pub use
/// error::ChatError` maps `chat::ChatError` to `chat::error`; in `lib.rs`, `Error` to `error`.
fn reexports(module: &str, text: &str, items: &mut BTreeMap<String, String>) {
    let prefix = if module == "lib" {
        String::new()
    } else {
        format!("{module}::")
    };
    for stmt in code(text).split(';') {
        let stmt = stmt.trim();
        let Some(rest) = stmt.strip_prefix("pub use ") else {
            continue;
        };
        let Some((module, names)) = rest.split_once("::") else {
            continue;
        };
        let module = module.trim_start_matches("crate::");
        for name in names.trim_matches(|c| c == '{' || c == '}').split(',') {
            let name = name.trim().rsplit("::").next().unwrap_or("").trim();
            if !name.is_empty() {
                items.insert(format!("{prefix}{name}"), format!("{prefix}{module}"));
            }
        }
    }
}

/// Modules named right after `prefix` (`crate::` or `super::`), including in `{…}` groups.
fn imports(
    code: &str,
    me: &str,
    known: &BTreeMap<String, usize>,
    root: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let parent = me.rsplit_once("::").map_or("", |(p, _)| p);
    for (prefix, base) in [("crate::", String::new()), ("super::", parent.to_string())] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let paths: Vec<String> = if let Some(group) = rest.strip_prefix('{') {
                let end = matching_brace(group);
                split_top(&group[..end])
            } else {
                vec![rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect()]
            };
            for path in paths {
                if let Some(module) = resolve(&base, &path, known, root) {
                    found.insert(module);
                }
            }
        }
    }
    found.remove(me);
    found
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 0usize;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return i,
            '}' => depth -= 1,
            _ => {}
        }
    }
    s.len()
}

fn split_top(group: &str) -> Vec<String> {
    let (mut parts, mut depth, mut cur) = (Vec::new(), 0usize, String::new());
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    parts.push(cur);
    parts
        .into_iter()
        .map(|p| {
            p.trim()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect()
        })
        .filter(|p: &String| !p.is_empty())
        .collect()
}

/// The deepest known module a path names (`ffi::handle::Handle` → `ffi::handle`).
fn resolve(
    base: &str,
    path: &str,
    known: &BTreeMap<String, usize>,
    root: &BTreeMap<String, String>,
) -> Option<String> {
    let full = if base.is_empty() {
        path.to_string()
    } else {
        format!("{base}::{path}")
    };
    let segments: Vec<&str> = full.split("::").filter(|s| !s.is_empty()).collect();
    // An item re-exported by a module stands for the module that defines it.
    for n in (1..=segments.len()).rev() {
        if let Some(module) = root.get(&segments[..n].join("::")) {
            return Some(module.clone());
        }
    }
    (1..=segments.len())
        .rev()
        .map(|n| segments[..n].join("::"))
        .find(|m| known.contains_key(m))
}

#[test]
fn no_module_imports_a_higher_layer_and_there_are_no_cycles() {
    let table = layers();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("rkllm/src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    // Every module's layer: its own row, or its parent's `parent::*` row.
    let mut layers = BTreeMap::new();
    let mut problems = Vec::new();
    for file in &files {
        let me = module_of(&src, file);
        if me == "lib" {
            continue;
        }
        let wildcard = me.rsplit_once("::").map(|(p, _)| format!("{p}::*"));
        match table
            .get(&me)
            .or_else(|| wildcard.and_then(|w| table.get(&w)))
        {
            Some(&layer) => {
                layers.insert(me, layer);
            }
            None => problems.push(format!("{me} is in no layer of ARCHITECTURE.md")),
        }
    }
    let mut root = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        reexports(&module_of(&src, file), &text, &mut root);
    }
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let me = module_of(&src, file);
        let Some(&my_layer) = layers.get(&me) else {
            continue;
        };
        let deps = imports(
            &code(&std::fs::read_to_string(file).unwrap()),
            &me,
            &layers,
            &root,
        );
        for dep in &deps {
            // A module may use its own submodules (a parent and its children form one unit).
            if dep.starts_with(&format!("{me}::")) {
                continue;
            }
            let dep_layer = layers[dep];
            if dep_layer > my_layer {
                problems.push(format!(
                    "{me} (layer {my_layer}) imports {dep} (layer {dep_layer})"
                ));
            }
        }
        graph.insert(
            me,
            deps.into_iter().filter(|d| !d.starts_with("lib")).collect(),
        );
    }
    // Cycles: depth-first search over the import graph.
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        problems: &mut Vec<String>,
    ) {
        if done.contains(node) {
            return;
        }
        if let Some(at) = stack.iter().position(|n| n == node) {
            problems.push(format!(
                "import cycle: {} -> {node}",
                stack[at..].join(" -> ")
            ));
            return;
        }
        stack.push(node.to_string());
        for dep in graph.get(node).into_iter().flatten() {
            if !dep.starts_with(&format!("{node}::")) && !node.starts_with(&format!("{dep}::")) {
                visit(dep, graph, stack, done, problems);
            }
        }
        stack.pop();
        done.insert(node.to_string());
    }
    let mut done = BTreeSet::new();
    for node in graph.keys() {
        visit(node, &graph, &mut Vec::new(), &mut done, &mut problems);
    }
    for module in layers.keys() {
        if !graph.contains_key(module) {
            problems.push(format!(
                "ARCHITECTURE.md lists {module}, which does not exist"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "layering problems:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_sees_imports_in_all_their_forms() {
    let known: BTreeMap<String, usize> = [
        "error",
        "ffi",
        "ffi::handle",
        "chat",
        "chat::strip",
        "settings",
    ]
    .into_iter()
    .map(|m| (m.to_string(), 0))
    .collect();
    let root: BTreeMap<String, String> = [("Error".to_string(), "error".to_string())].into();
    let code = code(
        "use crate::ffi::handle::{Handle, RunTicket};\n\
         use crate::{settings::WaitingText, Error};\n\
         use super::strip::python_strip; // crate::chat in a comment\n\
         fn f() { crate::error::c_string(\"x\", \"y\"); }\n\
         #[cfg(test)]\nmod tests { use crate::chat; }\n",
    );
    let found = imports(&code, "chat::template", &known, &root);
    let want: BTreeSet<String> = ["ffi::handle", "settings", "error", "chat::strip"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(found, want);
}
