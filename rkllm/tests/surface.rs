//! The size of the crate's public face, counted from its source: the public types a user can
//! name (`pub struct`/`enum`/`trait`/`type`/`union` in a public module, or re-exported by one)
//! and the names at the crate root (items re-exported or defined there; public modules are
//! listed apart). Every feature's modules are counted, as on docs.rs. Where a type is defined
//! does not matter: `pub use` paths are followed to the definition, and a type reachable by two
//! paths counts once.
//!
//! The test prints the figures and fails when two public types share a name or when a figure
//! rises above its ceiling. The ceilings are today's figures and only ever go down; the targets
//! (at most 60 public types and 25 root names) are printed beside them, and the ceilings become
//! the targets once the face is that small.
//!
//! Run `cargo test -p rkllm --test surface -- --nocapture` to see the figures and the lists.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The public types there may be at most: today's figure, lowered as types go, down to
/// [`TARGET_PUBLIC_TYPES`].
const MAX_PUBLIC_TYPES: usize = 101;
/// The names there may be at the crate root (modules not counted): today's figure, lowered
/// as names go, down to [`TARGET_ROOT_NAMES`].
const MAX_ROOT_NAMES: usize = 27;
/// Where the public types are headed.
const TARGET_PUBLIC_TYPES: usize = 60;
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
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
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

/// Identifiers, `::`, and single punctuation characters.
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

fn parse(modules: &mut Modules, path: &str, t: &[String], dir: &Path) {
    let mut i = 0;
    while i < t.len() {
        // Attributes.
        if t[i] == "#" {
            let open = if t.get(i + 1).is_some_and(|x| x == "!") {
                i + 2
            } else {
                i + 1
            };
            i = close(t, open);
            continue;
        }
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
            if t[i] == "extern" && t.get(i + 1).is_some_and(|x| x == "\"") {
                i += 3;
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
                    parse(modules, &child, &t[i + 3..end - 1], &sub_dir);
                    i = end;
                } else {
                    let file = if dir.join(format!("{name}.rs")).exists() {
                        dir.join(format!("{name}.rs"))
                    } else {
                        sub_dir.join("mod.rs")
                    };
                    let src = std::fs::read_to_string(&file)
                        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
                    parse(modules, &child, &tokens(&src), &sub_dir);
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

/// A crate from inline source (its modules inline too).
fn parse_inline(src: &str) -> Modules {
    let mut modules = Modules::new();
    modules.insert(
        "crate".into(),
        Module {
            public: true,
            ..Default::default()
        },
    );
    parse(
        &mut modules,
        "crate",
        &tokens(src),
        Path::new("/nonexistent"),
    );
    modules
}

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
fn public_surface_stays_small() {
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
    parse(&mut modules, "crate", &tokens(&lib), &src);

    let (types, root_names, public_modules) = surface(&modules);

    let mut by_name: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for t in &types {
        by_name
            .entry(t.rsplit("::").next().unwrap())
            .or_default()
            .push(t);
    }
    let duplicates: Vec<_> = by_name.values().filter(|v| v.len() > 1).collect();

    println!("public modules ({}):", public_modules.len());
    for m in &public_modules {
        println!("  {m}");
    }
    println!("public types ({}):", types.len());
    for t in &types {
        println!("  {t}");
    }
    println!(
        "root names ({}): {}",
        root_names.len(),
        root_names.iter().cloned().collect::<Vec<_>>().join(", ")
    );
    println!(
        "figures: {} public types (ceiling {MAX_PUBLIC_TYPES}, target {TARGET_PUBLIC_TYPES}), \
         {} root names (ceiling {MAX_ROOT_NAMES}, target {TARGET_ROOT_NAMES}), {} public modules",
        types.len(),
        root_names.len(),
        public_modules.len()
    );

    // The counter itself must have found the crate's main types; a parse gone wrong would
    // otherwise pass with small figures.
    for known in [
        "crate::model::Model",
        "crate::error::Error",
        "crate::runtime::Runtime",
    ] {
        assert!(
            types.contains(known),
            "{known} not found: the counter misread the source"
        );
    }
    assert!(
        duplicates.is_empty(),
        "two public types share a name: {duplicates:?}"
    );
    assert!(
        types.len() <= MAX_PUBLIC_TYPES,
        "{} public types, more than {MAX_PUBLIC_TYPES}",
        types.len()
    );
    assert!(
        root_names.len() <= MAX_ROOT_NAMES,
        "{} root names, more than {MAX_ROOT_NAMES}",
        root_names.len()
    );
}
