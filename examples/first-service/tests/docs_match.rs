//! docs/first-service.md builds as written: every snippet that names one of this crate's files
//! (`// src/lib.rs`, `# Cargo.toml`, ...) is in that file, and §1's dependencies are this
//! crate's, at the same versions (jovian's own crates aside, which are path dependencies here).

use std::collections::BTreeMap;
use std::path::Path;

const GUIDE: &str = include_str!("../../../docs/first-service.md");

/// The guide's fenced code blocks, each as its lines.
fn blocks() -> Vec<Vec<&'static str>> {
    let mut blocks = Vec::new();
    let mut current: Option<Vec<&str>> = None;
    for line in GUIDE.lines() {
        match (&mut current, line.trim_start().starts_with("```")) {
            (None, true) => current = Some(Vec::new()),
            (Some(_), true) => blocks.push(current.take().unwrap()),
            (Some(block), false) => block.push(line),
            (None, false) => {}
        }
    }
    blocks
}

/// Lines without their indentation or trailing spaces, blank ones dropped.
fn normalized<'a>(lines: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    lines.into_iter().map(str::trim).filter(|l| !l.is_empty()).collect()
}

/// `[section]` → dependency name → what follows `=`, of a Cargo.toml's text.
fn dependencies(toml: &str) -> BTreeMap<String, BTreeMap<String, String>> {
    let mut sections: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut section = String::new();
    for line in toml.lines().map(|l| l.split(" #").next().unwrap().trim()) {
        if let Some(name) = line.strip_prefix('[') {
            section = name.trim_end_matches(']').to_owned();
        } else if let Some((name, value)) = line.split_once(" = ")
            && section.ends_with("dependencies")
        {
            let name = name.trim_end_matches(".workspace");
            sections
                .entry(section.clone())
                .or_default()
                .insert(name.to_owned(), value.to_owned());
        }
    }
    sections
}

#[test]
fn every_snippet_naming_a_file_is_in_that_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut checked = Vec::new();
    for block in blocks() {
        let Some(first) = block.first() else { continue };
        let Some(file) = first.strip_prefix("// ").or_else(|| first.strip_prefix("# ")) else {
            continue;
        };
        // `// src/lib.rs`, `// src/lib.rs, continued`, `// build.rs: needs protoc`: the first
        // word names the file; the rest of the line is the guide's.
        let file = file.split([' ', ',', ':']).next().unwrap();
        let path = root.join(file);
        if !path.is_file() || file == "Cargo.toml" {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        // The naming line is the file's own first line, or only the guide's.
        let snippet = match text.lines().next() == Some(*first) {
            true => &block[..],
            false => &block[1..],
        };
        let (snippet, source) = (normalized(snippet.iter().copied()), normalized(text.lines()));
        assert!(
            source.windows(snippet.len()).any(|window| window == snippet),
            "docs/first-service.md has a snippet of {file} that is not in it:\n{}",
            block.join("\n")
        );
        checked.push(file.to_owned());
    }
    for file in [
        "build.rs",
        "proto/orders.proto",
        "src/lib.rs",
        "src/main.rs",
        "tests/orders.rs",
    ] {
        assert!(
            checked.iter().any(|c| c == file),
            "the guide shows no snippet of {file}: {checked:?}"
        );
    }
}

#[test]
fn section_one_lists_every_dependency_at_its_version() {
    let guide = blocks()
        .into_iter()
        .find(|block| block.first() == Some(&"# Cargo.toml"))
        .expect("a `# Cargo.toml` block in the guide")
        .join("\n");
    let guide = dependencies(&guide);
    let crate_toml = dependencies(include_str!("../Cargo.toml"));
    assert_eq!(
        guide.keys().collect::<Vec<_>>(),
        crate_toml.keys().collect::<Vec<_>>(),
        "the same sections"
    );
    for (section, wanted) in &crate_toml {
        let listed = &guide[section];
        assert_eq!(
            listed.keys().collect::<Vec<_>>(),
            wanted.keys().collect::<Vec<_>>(),
            "[{section}]: the guide lists exactly the crate's dependencies"
        );
        for (name, version) in wanted {
            if name.starts_with("jovian") {
                assert!(listed[name].starts_with("\"0."), "{name} = {}", listed[name]);
            } else {
                assert_eq!(&listed[name], version, "[{section}] {name}");
            }
        }
    }
}
