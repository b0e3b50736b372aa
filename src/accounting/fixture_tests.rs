//! The accounting rule checked from the bytes on every Keras fixture: each
//! dataset of every HDF5 container is written or reported skipped. (Moved
//! from `tests/nothing_dropped.rs` when `h5` stopped being public: hashing
//! every dataset needs the HDF5 layer.)

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use safetensors::SafeTensors;

use crate::h5;
use crate::keras::{self, archive, FileKind};
use crate::test_support::{fixture, sha256_hex};
use crate::{convert_file, inspect, ConvertOptions, ReadOptions};

/// As `tests/common`: a bare `.weights.h5` whose config sits beside it as
/// `<stem>.config.json` is read with that config.
fn read_options(fixture: &Path) -> ReadOptions {
    let name = fixture.file_name().unwrap().to_string_lossy();
    let config = name
        .strip_suffix(".weights.h5")
        .map(|stem| fixture.with_file_name(format!("{stem}.config.json")))
        .filter(|c| c.exists());
    ReadOptions {
        include_optimizer: false,
        config,
        ..Default::default()
    }
}

/// Every Keras file under `fixtures/` (by content), except the crafted
/// and malicious inputs, which have tests of their own; a shard is
/// covered by its index.
fn every_keras_fixture() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "malicious" && name != "crafted" {
                    walk(&path, out);
                }
                continue;
            }
            let keras_file = match keras::detect(&path) {
                Ok(FileKind::Hdf5) => !keras::is_shard_of_index(&path) && name != "not_keras.h5",
                Ok(FileKind::Zip) => true,
                Ok(FileKind::Json) => name.ends_with(".weights.json"),
                _ => false,
            };
            if keras_file {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&fixture(""), &mut out);
    out.sort();
    assert!(out.len() >= 50, "fixtures are missing: found {}", out.len());
    out
}

/// The HDF5 containers a fixture's datasets live in.
fn containers(fixture: &Path) -> Vec<h5::File> {
    let name = fixture.file_name().unwrap().to_string_lossy().into_owned();
    if name.ends_with(".keras") {
        return vec![archive::open(fixture).unwrap().weights];
    }
    if let Some(base) = name.strip_suffix(".weights.json") {
        let mut shards: Vec<PathBuf> = std::fs::read_dir(fixture.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with(&format!("{base}_")) && n.ends_with(".weights.h5")
            })
            .collect();
        shards.sort();
        assert!(!shards.is_empty());
        return shards.iter().map(|s| h5::File::open(s).unwrap()).collect();
    }
    vec![h5::File::open(fixture).unwrap()]
}

/// The sha256 of every dataset in `file`, by path.
fn dataset_hashes(file: &h5::File) -> Vec<(String, String)> {
    let mut buf = vec![0u8; 1 << 16];
    file.dataset_paths()
        .unwrap()
        .iter()
        .map(|path| {
            let info = file.dataset(path).unwrap();
            let mut bytes = Vec::new();
            file.copy_data(&info.location, &mut bytes, &mut buf, &mut |_| {})
                .unwrap();
            (path.to_string(), sha256_hex(&bytes))
        })
        .collect()
}

/// The accounting rule on every fixture, checked from the bytes: each
/// dataset's bytes are those of a written tensor, or `inspect` reports the
/// dataset as skipped with a reason.
#[test]
fn every_dataset_of_every_fixture_is_written_or_reported_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut skipped_total = 0;
    for fixture in every_keras_fixture() {
        let options = read_options(&fixture);
        let out = dir.path().join("out.safetensors");
        let convert = ConvertOptions {
            read: options.clone(),
            write: crate::WriteOptions {
                force: true,
                ..Default::default()
            },
            ..Default::default()
        };
        convert_file(&fixture, &out, &convert, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
        let bytes = std::fs::read(&out).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let written: HashSet<String> = st
            .tensors()
            .iter()
            .map(|(_, t)| sha256_hex(t.data()))
            .collect();
        let summary = inspect::inspect(&fixture, &options).unwrap();
        let skipped: HashSet<&str> = summary
            .skipped
            .iter()
            .inspect(|s| assert!(!s.reason.is_empty()))
            .map(|s| s.dataset.as_str())
            .collect();
        skipped_total += skipped.len();
        for file in containers(&fixture) {
            for (path, hash) in dataset_hashes(&file) {
                assert!(
                    written.contains(&hash) || skipped.contains(path.as_str()),
                    "{}: dataset `{path}` is neither written nor reported skipped",
                    fixture.display()
                );
            }
        }
    }
    assert!(
        skipped_total > 30,
        "optimizer state of the text models is reported skipped"
    );
}
