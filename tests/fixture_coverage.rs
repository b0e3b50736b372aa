//! Every file in `fixtures/` is used by some test.
//!
//! A whole folder of Keras-written fixtures (`older_keras3/`) once sat
//! untested because the shared fixture list left it out. This test walks
//! `fixtures/` and fails on any file that no test reaches: not in
//! [`keras_fixtures`] (nor its expected JSON, config or shards), not named
//! in a string literal of a test source (or in the README's CI example,
//! which `ci_commands.rs` runs), not a numerics case that
//! `candle_numerics.rs` names, and not among the deliberate exclusions.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;

/// Files no test reads, on purpose. A pattern starting with `/` matches a
/// file of that name in any folder; one ending in `/`, every file in that
/// folder.
const NOT_TEST_INPUTS: &[(&str, &str)] = &[
    ("/README.md", "documentation of each folder"),
    (
        "/generate.py",
        "the generator scripts need Python and Keras; tests do not",
    ),
    ("/generate_keras3.py", "a generator script"),
    (
        "older_keras3/generate_older_keras3.py",
        "a generator script",
    ),
    ("old_keras/generate_old_keras.py", "a generator script"),
    ("malicious/make_malicious.py", "a generator script"),
    ("crafted/make_crafted.py", "a generator script"),
    ("/generate_tf.py", "a generator script"),
    ("/generate_presets.py", "a generator script"),
    ("/generate_effdet.py", "a generator script"),
    (
        "third_party/expected_basic_pitch.py",
        "writes the expected JSON with TensorFlow",
    ),
    (
        "third_party/basic_pitch_nmp.LICENSE",
        "the license basic-pitch is distributed under",
    ),
    ("third_party/basic_pitch_nmp.NOTICE", "basic-pitch's NOTICE"),
    (
        "/fingerprint.pb",
        "a SavedModel's fingerprint: nothing of the weights",
    ),
    (
        "numerics/tiny_efficientdet.architecture.md",
        "the description that the candle re-implementation follows",
    ),
];

fn relative(path: &Path) -> String {
    path.strip_prefix(fixtures_dir())
        .unwrap()
        .to_string_lossy()
        .replace('\\', "/")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, out);
        } else {
            out.push(path);
        }
    }
}

/// The text of every test that names fixtures: the test sources and the
/// crate's sources with their unit tests (but this one, whose exclusion list must not count as use) and the README's CI
/// example.
fn test_sources() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut text = String::new();
    let mut files = Vec::new();
    walk(&root.join("tests"), &mut files);
    // Unit tests inside the crate read fixtures too.
    walk(&root.join("src"), &mut files);
    for file in files {
        if file.extension().is_some_and(|e| e == "rs") && !file.ends_with("fixture_coverage.rs") {
            text.push_str(&std::fs::read_to_string(&file).unwrap());
        }
    }
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let start = readme
        .find("<!-- ci-example -->")
        .expect("README has the CI example");
    let block = &readme[start..];
    let end = block[3..].find("```\n").map_or(block.len(), |e| e + 3);
    text.push_str(&block[..end]);
    text
}

#[test]
fn every_fixture_file_is_used_by_a_test() {
    let mut all = Vec::new();
    walk(&fixtures_dir(), &mut all);
    let all: BTreeSet<String> = all.iter().map(|p| relative(p)).collect();

    let mut covered = BTreeSet::new();
    for (fixture, expected) in keras_fixtures() {
        covered.insert(relative(&fixture));
        covered.insert(format!("{}.expected.json", relative(&fixture)));
        if let Some(config) = read_options(&fixture).config {
            covered.insert(relative(&config));
        }
        // A sharded save is read through all of its shards.
        for shard in expected["shards"].as_array().into_iter().flatten() {
            let shard = fixture.with_file_name(shard.as_str().unwrap());
            covered.insert(relative(&shard));
        }
    }

    let sources = test_sources();
    for rel in &all {
        let name = rel.rsplit('/').next().unwrap();
        // A checkpoint folder is read whole, through its name.
        let folder = rel.rsplit_once('/').map(|(folder, _)| folder);
        if sources.contains(&format!("\"{name}\""))
            || sources.contains(&format!("\"{rel}\""))
            || sources.contains(&format!("fixtures/{rel}"))
            || folder.is_some_and(|f| f.ends_with("_ckpt") && sources.contains(&format!("\"{f}\"")))
        {
            covered.insert(rel.clone());
        }
    }

    // candle_numerics.rs loads `numerics/<case>.h5` and its
    // `<case>.io.safetensors` by the case name alone.
    let candle = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/candle_numerics.rs"),
    )
    .unwrap();
    for rel in &all {
        if let Some(case) = rel
            .strip_prefix("numerics/")
            .and_then(|f| f.strip_suffix(".io.safetensors"))
        {
            if candle.contains(&format!("\"{case}\"")) {
                covered.insert(rel.clone());
                covered.insert(format!("numerics/{case}.h5"));
            }
        }
    }

    for (pattern, _why) in NOT_TEST_INPUTS {
        let matched: Vec<&String> = all
            .iter()
            .filter(|rel| match pattern.strip_prefix('/') {
                Some(name) => rel.rsplit('/').next() == Some(name),
                None if pattern.ends_with('/') => rel.starts_with(pattern),
                None => rel == pattern,
            })
            .collect();
        assert!(
            !matched.is_empty(),
            "exclusion {pattern} matches no file: remove it"
        );
        covered.extend(matched.into_iter().cloned());
    }

    let forgotten: Vec<&String> = all.difference(&covered).collect();
    assert!(
        forgotten.is_empty(),
        "fixture files no test uses (add their folder to keras_fixtures() in \
         tests/common/mod.rs, use them in a test, or list them in NOT_TEST_INPUTS \
         with the reason): {forgotten:#?}"
    );
    let stale: Vec<&String> = covered.difference(&all).collect();
    assert!(
        stale.is_empty(),
        "tests expect fixture files that do not exist: {stale:#?}"
    );
}
