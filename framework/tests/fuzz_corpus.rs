//! The fuzz corpus as a regression test on stable Rust: every file under `fuzz/corpus/<target>/`
//! goes through the same `jovian::fuzzing` check as the fuzz target of that name. A fuzzer's
//! finding, once fixed, is added there and stays fixed without nightly or cargo-fuzz.

use std::path::{Path, PathBuf};

use jovian::fuzzing::TARGETS;

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn every_corpus_file_passes_its_targets_check() {
    let mut failed = Vec::new();
    for (target, check) in TARGETS {
        let dir = fuzz_dir().join("corpus").join(target);
        let files = names_in(&dir);
        assert!(!files.is_empty(), "{} has no seeds", dir.display());
        for file in files {
            let data = std::fs::read(dir.join(&file)).unwrap();
            // Every file runs, so one failure does not hide others; each check's own panic
            // message is printed as it fails.
            if std::panic::catch_unwind(|| check(&data)).is_err() {
                failed.push(format!("fuzz/corpus/{target}/{file}"));
            }
        }
    }
    assert!(failed.is_empty(), "these corpus files fail their checks: {failed:#?}");
}

/// A target added on one side only would fuzz without a regression test, or be tested without
/// being fuzzed.
#[test]
fn the_fuzz_targets_and_corpus_directories_are_the_checks() {
    let mut checks: Vec<String> = TARGETS.iter().map(|(name, _)| (*name).to_owned()).collect();
    checks.sort();
    let targets: Vec<String> = names_in(&fuzz_dir().join("fuzz_targets"))
        .into_iter()
        .map(|file| {
            file.strip_suffix(".rs")
                .expect("only .rs files in fuzz_targets")
                .to_owned()
        })
        .collect();
    assert_eq!(targets, checks, "fuzz/fuzz_targets/*.rs");
    assert_eq!(names_in(&fuzz_dir().join("corpus")), checks, "fuzz/corpus/*/");
}
