//! The framework's top-level modules depend on each other one way only: model → registry
//! contract → h2 → client / server → config → app. A module depends on another when any of its
//! files names `crate::other…`, or `crate::Name` where `lib.rs` re-exports `Name` from `other`;
//! doc links count too, since a reader follows them the same way. Test modules are not
//! excluded: they are kept one-way too.
//!
//! An import cycle fails this test with the modules in it and, for each edge of the cycle, the
//! first place that makes it, so the edge to cut is found without another tool.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One module's dependencies, each with the first `file:line` that makes it.
type Deps = BTreeMap<String, BTreeMap<String, String>>;

#[test]
fn the_framework_has_no_import_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let deps = dependencies(&src);
    assert!(deps.len() > 10, "read too few modules from {}: {deps:?}", src.display());
    let cycles = cycles(&deps);
    assert!(
        cycles.is_empty(),
        "framework/src has import cycles; make each edge point down the layers \
         (model → registry contract → h2 → client / server → config → app):\n{}",
        describe(&cycles, &deps)
    );
}

#[test]
fn a_cycle_is_found_and_named_with_where_it_is_made() {
    let dir = std::env::temp_dir().join(format!(
        "jovian-module-layers-{}-{:?}",
        std::process::id(),
        std::time::SystemTime::now()
    ));
    let write = |path: &str, text: &str| {
        let path = dir.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "lib.rs",
        "mod low;\npub mod high;\nmod alone;\npub use high::{Top, deep::Deeper as D};\n",
    );
    write("low.rs", "/// Made by [`Top`](crate::Top).\npub struct Low;\n");
    write(
        "high/mod.rs",
        "pub mod deep;\nuse crate::{low::Low, std_like};\npub struct Top;\n",
    );
    write("high/deep.rs", "pub struct Deeper;\n");
    write("alone.rs", "use crate::D;\n");
    let deps = dependencies(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(cycles(&deps), vec![vec!["high".to_owned(), "low".to_owned()]]);
    let named = describe(&cycles(&deps), &deps);
    assert!(named.contains("low -> high (low.rs:1)"), "{named}");
    assert!(named.contains("high -> low (high/mod.rs:2)"), "{named}");
    assert!(
        deps["alone"].contains_key("high"),
        "a re-exported name counts: {deps:?}"
    );
}

/// Every top-level module's dependencies on the others.
fn dependencies(src: &Path) -> Deps {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("lib.rs");
    let modules = modules(&lib);
    let reexports = reexports(&lib, &modules);
    let mut deps: Deps = modules.iter().map(|m| (m.clone(), BTreeMap::new())).collect();
    for file in rust_files(src) {
        let relative = file.strip_prefix(src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let me = first.strip_suffix(".rs").unwrap_or(&first).to_owned();
        if !modules.contains(&me) {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            for name in named_after_crate(line) {
                let target = match modules.contains(&name) {
                    true => Some(&name),
                    false => reexports.get(&name),
                };
                if let Some(target) = target.filter(|t| **t != me) {
                    let place = format!("{}:{}", relative.display(), number + 1);
                    deps.get_mut(&me).unwrap().entry(target.clone()).or_insert(place);
                }
            }
        }
    }
    deps
}

/// The modules `lib.rs` declares (`mod x;`, `pub mod x;`, `pub(crate) mod x;`).
fn modules(lib: &str) -> BTreeSet<String> {
    lib.lines()
        .filter_map(|line| {
            let mut rest = line.trim();
            if let Some(after) = rest.strip_prefix("pub") {
                rest = after.trim_start();
                if rest.starts_with('(') {
                    rest = rest[rest.find(')')? + 1..].trim_start();
                }
            }
            let name = rest.strip_prefix("mod ")?.trim().strip_suffix(';')?.trim();
            is_ident(name).then(|| name.to_owned())
        })
        .collect()
}

/// The names `lib.rs` re-exports (`pub use module::Name;`, `pub use module::{A, b::B as C};`),
/// each with the module it comes from.
fn reexports(lib: &str, modules: &BTreeSet<String>) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for statement in lib.split("pub use ").skip(1) {
        let Some(statement) = statement.split(';').next() else {
            continue;
        };
        let statement = statement.trim();
        let statement = statement.strip_prefix("crate::").unwrap_or(statement);
        let (path, items): (&str, Vec<&str>) = match statement.split_once("::{") {
            Some((path, items)) => (path, items.trim_end_matches('}').split(',').collect()),
            None => match statement.rsplit_once("::") {
                Some((path, item)) => (path, vec![item]),
                None => continue,
            },
        };
        let top = path.split("::").next().unwrap_or_default();
        if !modules.contains(top) {
            continue;
        }
        for item in items {
            let item = item.trim();
            let name = item.rsplit(" as ").next().unwrap_or(item).trim();
            let name = name.rsplit("::").next().unwrap_or(name);
            if !name.is_empty() {
                names.insert(name.to_owned(), top.to_owned());
            }
        }
    }
    names
}

/// What `line` names after each `crate::`: the identifier, or for `crate::{a::B, C}` the
/// first segment of each item.
fn named_after_crate(line: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (at, _) in line.match_indices("crate::") {
        let rest = &line[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let group = group.split('}').next().unwrap_or_default();
            for item in group.split(',') {
                let first = item.trim().split("::").next().unwrap_or_default();
                if is_ident(first) {
                    names.push(first.to_owned());
                }
            }
        } else {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                names.push(rest[..end].to_owned());
            }
        }
    }
    names
}

fn is_ident(name: &str) -> bool {
    !name.is_empty() && name.chars().all(|c| c.is_alphanumeric() || c == '_')
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The groups of two or more modules that each reach the others: every cycle, sorted.
fn cycles(deps: &Deps) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from];
        while let Some(module) = todo.pop() {
            for next in deps.get(module).into_iter().flat_map(|d| d.keys()) {
                if seen.insert(next.clone()) {
                    todo.push(next);
                }
            }
        }
        seen
    };
    let reached: BTreeMap<&String, BTreeSet<String>> = deps.keys().map(|m| (m, reach(m))).collect();
    let mut cycles: Vec<Vec<String>> = Vec::new();
    for (module, reaches) in &reached {
        if cycles.iter().any(|c| c.contains(module)) {
            continue;
        }
        let group: Vec<String> = reaches
            .iter()
            .filter(|other| *other == *module || reached[other].contains(*module))
            .cloned()
            .collect();
        if group.len() > 1 {
            cycles.push(group);
        }
    }
    cycles
}

/// Each cycle with its edges and where each edge is made.
fn describe(cycles: &[Vec<String>], deps: &Deps) -> String {
    let mut out = String::new();
    for cycle in cycles {
        out.push_str(&format!("cycle of {} modules: {}\n", cycle.len(), cycle.join(" ")));
        for from in cycle {
            for (to, place) in &deps[from] {
                if cycle.contains(to) {
                    out.push_str(&format!("  {from} -> {to} ({place})\n"));
                }
            }
        }
    }
    out
}
