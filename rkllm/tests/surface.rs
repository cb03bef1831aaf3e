//! The size of the crate's public face, counted from its source: the public types a user can
//! name (`pub struct`/`enum`/`trait`/`type`/`union` in a public module, or re-exported by one)
//! and the names at the crate root (items re-exported or defined there; public modules are
//! listed apart). Where a type is defined does not matter: `pub use` paths are followed to the
//! definition, and a type reachable by two paths counts once.
//!
//! Two views are counted, reading the `#[cfg(..)]` of each module and item:
//! * **as a dependency sees it**: every feature but the development tools (`mock`, the mock
//!   runtime for tests, and `probe`, the board experiments), the face a program that runs
//!   models works with. The targets apply here: at most 60 public types and 25 root names.
//! * **every feature**, as docs.rs shows it; its ceiling is today's figure.
//!
//! The test prints the figures per public module and fails when two public types share a name
//! or when a figure rises above its ceiling. Ceilings only ever go down.
//!
//! Run `cargo test -p rkllm --test surface -- --nocapture` to see the figures and the lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The public types a dependency may see at most (every feature but `mock` and `probe`): 60
/// for the model-agnostic core, plus 14 of the chat layer for every model family
/// (`chat::hf`: `HfChatTemplate`, `TemplateInput`, `TemplateTokenizer`, `RenderedPrompt`,
/// `TemplateError`, `Clock`; `chat::reasoning`: 3; `chat::tool_calls`: 5).
const MAX_PUBLIC_TYPES: usize = 74;
/// The public types there may be at most with every feature on (as docs.rs shows them): 83
/// for the core, plus the same 14.
const MAX_PUBLIC_TYPES_EVERY_FEATURE: usize = 97;
/// The names there may be at the crate root (modules not counted), in both views.
const MAX_ROOT_NAMES: usize = 25;
/// Where the public types of the dependency's view are headed (the core's 60 and the
/// families' 14).
const TARGET_PUBLIC_TYPES: usize = 74;
/// Where the root names are headed.
const TARGET_ROOT_NAMES: usize = 25;

/// Source text with comments removed and the contents of string and character literals
/// blanked, so that braces and keywords inside them are not seen.
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == '/' && b.get(i + 1) == Some(&'/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && b.get(i + 1) == Some(&'*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r'
            && (b.get(i + 1) == Some(&'"') || b.get(i + 1) == Some(&'#'))
            && (i == 0 || !(b[i - 1].is_alphanumeric() || b[i - 1] == '_'))
        {
            // Raw string r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            loop {
                if j >= b.len() {
                    break;
                }
                if b[j] == '"' && (0..hashes).all(|k| b.get(j + 1 + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break;
                }
                j += 1;
            }
            out.push_str("\"\"");
            i = j;
        } else if c == '"' {
            let start = i + 1;
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            let content: String = b[start..i.min(b.len())].iter().collect();
            i += 1;
            // Plain names (a feature, a file) are kept for the attributes that use them;
            // anything else is blanked.
            let plain = content
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c));
            out.push('"');
            if plain {
                out.push_str(&content);
            }
            out.push('"');
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}') or a lifetime ('a).
            if b.get(i + 1) == Some(&'\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// Identifiers, `::`, string literals (one token, quotes included) and single punctuation
/// characters.
fn tokens(src: &str) -> Vec<String> {
    let b: Vec<char> = strip(src).chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                i += 1;
            }
            out.push(b[start..i].iter().collect());
        } else if c == '"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += 1;
            }
            i += 1;
            out.push(b[start..i.min(b.len())].iter().collect());
        } else if c == ':' && b.get(i + 1) == Some(&':') {
            out.push("::".into());
            i += 2;
        } else {
            out.push(c.to_string());
            i += 1;
        }
    }
    out
}

/// The index just past the bracket that closes the one at `open`.
fn close(t: &[String], open: usize) -> usize {
    let (o, c) = match t[open].as_str() {
        "{" => ("{", "}"),
        "[" => ("[", "]"),
        "(" => ("(", ")"),
        other => panic!("not a bracket: {other}"),
    };
    let mut depth = 0;
    for (i, tok) in t.iter().enumerate().skip(open) {
        if tok == o {
            depth += 1;
        } else if tok == c {
            depth -= 1;
            if depth == 0 {
                return i + 1;
            }
        }
    }
    panic!("unbalanced {o}");
}

#[derive(Default, Debug)]
struct Module {
    /// Declared `pub mod` (or the crate root).
    public: bool,
    parent: Option<String>,
    children: BTreeMap<String, String>,
    /// `pub` types defined here.
    types: BTreeSet<String>,
    /// Other `pub` items defined here (functions, constants, statics, macros).
    others: BTreeSet<String>,
    /// `pub use` entries: (path, name it is known by here); name `*` for a glob.
    uses: Vec<(Vec<String>, String)>,
}

type Modules = BTreeMap<String, Module>;

/// Parses a `use` tree from `t[i..]` up to its end; returns the index after it.
fn use_tree(
    t: &[String],
    mut i: usize,
    prefix: &[String],
    out: &mut Vec<(Vec<String>, String)>,
) -> usize {
    let mut path = prefix.to_vec();
    loop {
        let tok = t[i].as_str();
        if tok == "{" {
            i += 1;
            while t[i] != "}" {
                i = use_tree(t, i, &path, out);
                if t[i] == "," {
                    i += 1;
                }
            }
            return i + 1;
        }
        if tok == "*" {
            out.push((path, "*".into()));
            return i + 1;
        }
        if tok == "::" {
            i += 1;
            continue;
        }
        // An identifier: a segment, or the last one.
        if t[i + 1] == "::" {
            path.push(tok.to_string());
            i += 2;
            continue;
        }
        let (name, next) = if t[i + 1] == "as" {
            (t[i + 2].clone(), i + 3)
        } else {
            (tok.to_string(), i + 1)
        };
        if tok == "self" {
            let name = if t[i + 1] == "as" {
                name
            } else {
                path.last().cloned().unwrap_or_default()
            };
            out.push((path, name));
        } else {
            path.push(tok.to_string());
            out.push((path, name));
        }
        return next;
    }
}

/// Whether a feature is on in the view being counted.
type On<'a> = &'a dyn Fn(&str) -> bool;

/// The value of the `cfg` predicate `t[at..]` (up to its end) with the features `on` gives:
/// `test`, `doc`, `doctest` and `docsrs` are off; other settings (`unix`, `target_os = ..`)
/// are taken to hold. Returns the value and the index past the predicate.
fn cfg_holds(t: &[String], at: usize, on: On) -> (bool, usize) {
    let name = t[at].as_str();
    if t.get(at + 1).is_some_and(|x| x == "(") {
        let end = close(t, at + 1);
        let mut values = Vec::new();
        let mut i = at + 2;
        while i < end - 1 {
            let (v, next) = cfg_holds(t, i, on);
            values.push(v);
            i = if t[next] == "," { next + 1 } else { next };
        }
        let value = match name {
            "all" => values.iter().all(|v| *v),
            "any" => values.iter().any(|v| *v),
            "not" => !values[0],
            other => panic!("unknown cfg predicate {other}"),
        };
        return (value, end);
    }
    if t.get(at + 1).is_some_and(|x| x == "=") {
        let value = t[at + 2].trim_matches('"');
        let holds = if name == "feature" { on(value) } else { true };
        return (holds, at + 3);
    }
    let holds = !matches!(name, "test" | "doc" | "doctest" | "docsrs");
    (holds, at + 1)
}

/// The index past the item that starts at `i`: its `;`, or its first `{ .. }` block.
fn skip_item(t: &[String], mut i: usize) -> usize {
    while i < t.len() {
        match t[i].as_str() {
            ";" => return i + 1,
            "{" => return close(t, i),
            "(" | "[" => i = close(t, i),
            _ => i += 1,
        }
    }
    i
}

/// Parses the items `t` of module `path` into `modules`. `dir` is where its child modules'
/// files are (`dir/x.rs`, `dir/x/mod.rs`), `file_dir` the directory a `#[path]` is relative to.
fn parse(modules: &mut Modules, path: &str, t: &[String], dir: &Path, file_dir: &Path, on: On) {
    let mut i = 0;
    // What the outer attributes before the current item said.
    let mut cfg_off = false;
    let mut file: Option<String> = None;
    while i < t.len() {
        // Attributes.
        if t[i] == "#" {
            let inner = t.get(i + 1).is_some_and(|x| x == "!");
            let open = if inner { i + 2 } else { i + 1 };
            let end = close(t, open);
            if !inner {
                match t[open + 1].as_str() {
                    "cfg" if t[open + 2] == "(" => {
                        cfg_off |= !cfg_holds(t, open + 3, on).0;
                    }
                    "path" if t[open + 2] == "=" => {
                        file = Some(t[open + 3].trim_matches('"').to_string());
                    }
                    _ => {}
                }
            }
            i = end;
            continue;
        }
        // An item `cfg` leaves out of this view.
        if std::mem::take(&mut cfg_off) {
            file = None;
            i = skip_item(t, i);
            continue;
        }
        let file = file.take();
        let mut public = false;
        if t[i] == "pub" {
            if t.get(i + 1).is_some_and(|x| x == "(") {
                i = close(t, i + 1);
            } else {
                public = true;
                i += 1;
            }
        }
        // Qualifiers before the item keyword.
        while matches!(
            t[i].as_str(),
            "unsafe" | "const" | "async" | "extern" | "default"
        ) && !(t[i] == "const" && t.get(i + 2).is_some_and(|x| x == ":"))
        {
            if t[i] == "extern" && t.get(i + 1).is_some_and(|x| x.starts_with('"')) {
                i += 2;
            } else {
                i += 1;
            }
            if t[i] == "{" || t[i] == "fn" || t[i] == "trait" || t[i] == "impl" {
                break;
            }
        }
        match t[i].as_str() {
            "mod" => {
                let name = t[i + 1].clone();
                let child = format!("{path}::{name}");
                modules
                    .get_mut(path)
                    .unwrap()
                    .children
                    .insert(name.clone(), child.clone());
                modules.insert(
                    child.clone(),
                    Module {
                        public,
                        parent: Some(path.to_string()),
                        ..Default::default()
                    },
                );
                // Child modules of `dir/x.rs` and `dir/x/mod.rs` both live in `dir/x/`.
                let sub_dir = dir.join(&name);
                if t[i + 2] == "{" {
                    let end = close(t, i + 2);
                    parse(modules, &child, &t[i + 3..end - 1], &sub_dir, &sub_dir, on);
                    i = end;
                } else {
                    let file = if let Some(file) = &file {
                        file_dir.join(file)
                    } else if dir.join(format!("{name}.rs")).exists() {
                        dir.join(format!("{name}.rs"))
                    } else {
                        sub_dir.join("mod.rs")
                    };
                    let src = std::fs::read_to_string(&file)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    // A `#[path]` inside `x/mod.rs` is relative to `x/`, inside `x.rs` to
                    // the directory of `x.rs`.
                    let child_file_dir = if file.ends_with("mod.rs") {
                        sub_dir.clone()
                    } else {
                        file.parent().unwrap().to_path_buf()
                    };
                    parse(
                        modules,
                        &child,
                        &tokens(&src),
                        &sub_dir,
                        &child_file_dir,
                        on,
                    );
                    i += 3;
                }
            }
            "use" => {
                let mut entries = Vec::new();
                let end = use_tree(t, i + 1, &[], &mut entries);
                if public {
                    modules.get_mut(path).unwrap().uses.extend(entries);
                }
                i = end;
            }
            "struct" | "enum" | "trait" | "type" | "union" | "fn" | "static" | "const"
            | "macro_rules" => {
                let kind = t[i].clone();
                let name_at = if kind == "macro_rules" { i + 2 } else { i + 1 };
                let name = t[name_at].clone();
                if public {
                    let m = modules.get_mut(path).unwrap();
                    if matches!(
                        kind.as_str(),
                        "struct" | "enum" | "trait" | "type" | "union"
                    ) {
                        m.types.insert(name);
                    } else {
                        m.others.insert(name);
                    }
                }
                // Skip to the end of the item: a `;` or a closing brace at this level.
                let mut j = name_at + 1;
                while j < t.len() {
                    match t[j].as_str() {
                        ";" => {
                            j += 1;
                            break;
                        }
                        "{" => {
                            j = close(t, j);
                            // `struct S { .. }` ends here; `const X: T = S { .. };` goes on.
                            if matches!(kind.as_str(), "const" | "static" | "type") {
                                continue;
                            }
                            break;
                        }
                        "(" | "[" => j = close(t, j),
                        _ => j += 1,
                    }
                }
                i = j;
            }
            "{" => i = close(t, i),
            _ => i += 1,
        }
    }
}

/// The module a path prefix names, seen from `from`; `None` for another crate.
fn module_at(modules: &Modules, from: &str, segments: &[String]) -> Option<String> {
    let mut at = from.to_string();
    for (k, seg) in segments.iter().enumerate() {
        at = match seg.as_str() {
            "crate" if k == 0 => "crate".to_string(),
            "self" => at,
            "super" => modules[&at].parent.clone()?,
            name => modules[&at].children.get(name)?.clone(),
        };
    }
    Some(at)
}

/// The types (as `module::Name`) that the name `name` of module `at` stands for.
fn resolve(modules: &Modules, at: &str, name: &str, found: &mut BTreeSet<String>, depth: usize) {
    assert!(depth < 32, "re-export cycle at {at}::{name}");
    let m = &modules[at];
    if name == "*" {
        for t in &m.types {
            found.insert(format!("{at}::{t}"));
        }
        for (path, alias) in &m.uses {
            resolve_use(modules, at, path, alias, found, depth + 1);
        }
        return;
    }
    if m.types.contains(name) {
        found.insert(format!("{at}::{name}"));
    }
    for (path, alias) in &m.uses {
        if alias == name {
            resolve_use(modules, at, path, alias, found, depth + 1);
        }
    }
}

fn resolve_use(
    modules: &Modules,
    at: &str,
    path: &[String],
    alias: &str,
    found: &mut BTreeSet<String>,
    depth: usize,
) {
    if alias != "*" && module_at(modules, at, path).is_some() {
        return; // a module, not a type
    }
    let (target_module, name) = if alias == "*" {
        (module_at(modules, at, path), "*".to_string())
    } else {
        let (last, prefix) = path.split_last().unwrap();
        (module_at(modules, at, prefix), last.clone())
    };
    match target_module {
        Some(target) => resolve(modules, &target, &name, found, depth),
        // Another crate's type re-exported here is a public type of this crate too
        // (a capitalised name is taken for a type; a glob of another crate is refused).
        None => {
            assert_ne!(
                name, "*",
                "a glob re-export of another crate at {at}: {path:?}"
            );
            let is_type = name.starts_with(|c: char| c.is_ascii_uppercase())
                && name.chars().any(|c| c.is_ascii_lowercase());
            if is_type {
                found.insert(format!("{}::{name}", path[..path.len() - 1].join("::")));
            }
        }
    }
}

fn reachable(modules: &Modules, path: &str) -> bool {
    let m = &modules[path];
    m.public && m.parent.as_deref().is_none_or(|p| reachable(modules, p))
}

/// The public types (as `module::Name` of their definition), the root names and the public
/// modules of a parsed crate.
fn surface(modules: &Modules) -> (BTreeSet<String>, BTreeSet<String>, Vec<String>) {
    let mut types = BTreeSet::new();
    for (path, m) in modules {
        if !reachable(modules, path) {
            continue;
        }
        for t in &m.types {
            types.insert(format!("{path}::{t}"));
        }
        for (use_path, alias) in &m.uses {
            resolve_use(modules, path, use_path, alias, &mut types, 0);
        }
    }
    let public_modules: Vec<String> = modules
        .keys()
        .filter(|p| *p != "crate" && reachable(modules, p))
        .cloned()
        .collect();
    let root = &modules["crate"];
    let mut root_names: BTreeSet<String> = root.types.iter().chain(&root.others).cloned().collect();
    for (path, alias) in &root.uses {
        assert_ne!(alias, "*", "a glob re-export at the root: list the names");
        let is_module = module_at(modules, "crate", path).is_some_and(|m| m != "crate");
        if !is_module {
            root_names.insert(alias.clone());
        }
    }
    (types, root_names, public_modules)
}

/// A crate from inline source (its modules inline too), with the features `on` gives.
fn parse_inline(src: &str, on: On) -> Modules {
    let mut modules = Modules::new();
    modules.insert(
        "crate".into(),
        Module {
            public: true,
            ..Default::default()
        },
    );
    let nowhere = Path::new("/nonexistent");
    parse(&mut modules, "crate", &tokens(src), nowhere, nowhere, on);
    modules
}

/// Every feature on.
fn every_feature(_: &str) -> bool {
    true
}

/// The features a dependency builds with: all but the development tools.
fn runtime_features(feature: &str) -> bool {
    !DEVELOPMENT_FEATURES.contains(&feature)
}

/// Features that only add tools for developing and testing (the mock runtime, the board
/// probe); a program that depends on the crate to run models does not turn them on.
const DEVELOPMENT_FEATURES: [&str; 2] = ["mock", "probe"];

#[test]
fn the_counter_follows_re_exports_and_skips_what_users_cannot_name() {
    let modules = parse_inline(
        r#"
        mod inner {
            pub struct Reexported;
            pub struct Hidden;
            pub enum AlsoReexported { A }
            pub(crate) struct CrateOnly;
            pub const LIMIT: usize = 3;
            pub fn helper() -> &'static str { "pub struct InString {" }
            mod deeper { pub struct Unreachable; }
        }
        pub mod open {
            pub trait Visible {}
            pub type Alias = u8;
            pub use crate::inner::AlsoReexported as Renamed;
            pub use super::inner::*;
            #[cfg(test)]
            mod tests { pub struct TestOnly; }
            // pub struct InComment;
        }
        pub use inner::{Reexported, LIMIT, helper};
        pub use open::{self, Visible};
        pub use inner::Reexported as Twice;
        pub use std::time::Duration;
        pub struct AtRoot<'a>(&'a str);
        "#,
        &every_feature,
    );
    let (types, root_names, public_modules) = surface(&modules);
    let expected: BTreeSet<String> = [
        "crate::AtRoot",
        "crate::inner::AlsoReexported",
        "crate::inner::Hidden", // through `open`'s glob
        "crate::inner::Reexported",
        "crate::open::Alias",
        "crate::open::Visible",
        "std::time::Duration",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    assert_eq!(types, expected);
    let root: Vec<&str> = root_names.iter().map(String::as_str).collect();
    assert_eq!(
        root,
        [
            "AtRoot",
            "Duration",
            "LIMIT",
            "Reexported",
            "Twice",
            "Visible",
            "helper"
        ]
    );
    assert_eq!(public_modules, ["crate::open"]);
}

#[test]
fn the_counter_leaves_out_what_a_views_features_turn_off() {
    let src = r#"
        #[cfg(feature = "mock")]
        #[cfg_attr(docsrs, doc(cfg(feature = "mock")))]
        pub mod tool {
            pub struct Dev;
        }
        #[cfg(feature = "tokenizer")]
        pub mod words {
            pub struct Vocabulary;
            #[cfg(all(feature = "tokenizer", feature = "probe"))]
            pub struct Measured;
            #[cfg(any(feature = "mock", unix))]
            pub struct Either;
            #[cfg(not(feature = "probe"))]
            pub struct WithoutProbe;
        }
        mod core { pub struct Runs; pub struct Tooling; }
        pub use core::Runs;
        #[cfg(feature = "mock")]
        pub use core::Tooling;
        #[cfg(feature = "probe")]
        pub use core::{Runs as Again};
        #[cfg(test)]
        mod tests;
        #[cfg(test)]
        #[path = "missing_tests.rs"]
        mod more_tests;
        pub extern "C" fn exported() {}
        pub struct Last;
        "#;
    let named = |on: On| {
        let (types, root, _) = surface(&parse_inline(src, on));
        let names = |set: BTreeSet<String>| set.into_iter().collect::<Vec<_>>().join(" ");
        (names(types), names(root))
    };
    assert_eq!(
        named(&every_feature),
        (
            "crate::Last crate::core::Runs crate::core::Tooling crate::tool::Dev \
             crate::words::Either crate::words::Measured crate::words::Vocabulary"
                .to_string(),
            "Again Last Runs Tooling exported".to_string()
        )
    );
    assert_eq!(
        named(&runtime_features),
        (
            "crate::Last crate::core::Runs crate::words::Either crate::words::Vocabulary \
             crate::words::WithoutProbe"
                .to_string(),
            "Last Runs exported".to_string()
        )
    );
    assert_eq!(
        named(&|_: &str| false),
        (
            "crate::Last crate::core::Runs".to_string(),
            "Last Runs exported".to_string()
        )
    );
}

/// One view of the crate's face: its public types, root names and public modules.
struct Face {
    types: BTreeSet<String>,
    root_names: BTreeSet<String>,
    public_modules: Vec<String>,
}

fn face(on: On) -> Face {
    let src: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut modules = Modules::new();
    modules.insert(
        "crate".into(),
        Module {
            public: true,
            ..Default::default()
        },
    );
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    parse(&mut modules, "crate", &tokens(&lib), &src, &src, on);
    let (types, root_names, public_modules) = surface(&modules);
    Face {
        types,
        root_names,
        public_modules,
    }
}

/// Prints a view's figures, its types per public module and its root names; checks the
/// ceilings and that no two types share a name.
fn report(title: &str, face: &Face, max_types: usize, max_root_names: usize) {
    println!("== {title}");
    println!("public modules ({}):", face.public_modules.len());
    for m in &face.public_modules {
        println!("  {m}");
    }
    // Each type under the innermost public module of the path it is defined at (the root
    // for types of private modules re-exported there or elsewhere).
    let mut by_module: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for t in &face.types {
        let segments: Vec<&str> = t.split("::").collect();
        let mut area = "crate".to_string();
        for k in 2..segments.len() {
            let candidate = segments[..k].join("::");
            if face.public_modules.contains(&candidate) {
                area = candidate;
            }
        }
        by_module.entry(area).or_default().push(t);
    }
    println!("public types ({}), by module:", face.types.len());
    for (module, types) in &by_module {
        println!("  {module} ({}):", types.len());
        for t in types {
            println!("    {t}");
        }
    }
    println!(
        "root names ({}): {}",
        face.root_names.len(),
        face.root_names
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    let breakdown: Vec<String> = by_module
        .iter()
        .map(|(m, t)| {
            format!(
                "{} {}",
                m.strip_prefix("crate::").unwrap_or("root"),
                t.len()
            )
        })
        .collect();
    println!(
        "figures ({title}): {} public types (ceiling {max_types}, target {TARGET_PUBLIC_TYPES}; {}), \
         {} root names (ceiling {max_root_names}, target {TARGET_ROOT_NAMES}), {} public modules",
        face.types.len(),
        breakdown.join(", "),
        face.root_names.len(),
        face.public_modules.len()
    );

    // The counter itself must have found the crate's main types; a parse gone wrong would
    // otherwise pass with small figures.
    for known in [
        "crate::model::Model",
        "crate::error::Error",
        "crate::runtime::Runtime",
    ] {
        assert!(
            face.types.contains(known),
            "{known} not found: the counter misread the source"
        );
    }
    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &face.types {
        by_name
            .entry(t.rsplit("::").next().unwrap())
            .or_default()
            .push(t);
    }
    let duplicates: Vec<_> = by_name.values().filter(|v| v.len() > 1).collect();
    assert!(
        duplicates.is_empty(),
        "{title}: two public types share a name: {duplicates:?}"
    );
    assert!(
        face.types.len() <= max_types,
        "{title}: {} public types, more than {max_types}",
        face.types.len()
    );
    assert!(
        face.root_names.len() <= max_root_names,
        "{title}: {} root names, more than {max_root_names}",
        face.root_names.len()
    );
}

#[test]
fn public_surface_stays_small() {
    let dependency = face(&runtime_features);
    let docs = face(&every_feature);
    // The development tools' modules are the only difference between the views.
    for dev in ["crate::mock", "crate::probe"] {
        assert!(
            docs.public_modules.iter().any(|m| m == dev),
            "{dev} not found"
        );
        assert!(
            !dependency.public_modules.iter().any(|m| m == dev),
            "{dev} counted"
        );
    }
    report(
        "as a dependency sees it (every feature but mock and probe)",
        &dependency,
        MAX_PUBLIC_TYPES,
        MAX_ROOT_NAMES,
    );
    report(
        "every feature, as docs.rs shows it",
        &docs,
        MAX_PUBLIC_TYPES_EVERY_FEATURE,
        MAX_ROOT_NAMES,
    );
}
