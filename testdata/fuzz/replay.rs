//! Reads a committed fuzzing corpus (`testdata/fuzz/<target>/*`), for the tests that replay it
//! through the checks the fuzz targets in `fuzz/` make. Included by path (`#[path]`) from each
//! crate's `tests/fuzz_corpus.rs`.

use std::path::PathBuf;

pub fn corpus(target: &str) -> Vec<Vec<u8>> {
    // Read at run time (cargo sets it for tests): a build cache shared by two checkouts
    // may run a binary compiled in the other one.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    let dir = manifest_dir.join("../../testdata/fuzz").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}
