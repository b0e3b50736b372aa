//! Nothing is dropped silently: every dataset of every fixture is written
//! or reported skipped with a reason, a dataset no reader claims is an
//! error, and an output with no tensors is never a success.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use common::*;
use keras2safetensors::keras::{self, archive, FileKind};
use keras2safetensors::{convert_file, h5, inspect, ConvertOptions, ReadOptions};
use safetensors::SafeTensors;

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
    walk(&fixtures_dir(), &mut out);
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
            (path.clone(), sha256_hex(&bytes))
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
            write: keras2safetensors::WriteOptions {
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

#[test]
fn a_dataset_no_reader_claims_is_refused_unless_allowed() {
    let input = fixture("crafted/unclaimed_dataset.h5");
    assert_clean_failure(
        &input,
        "dataset `/conv2d/conv2d/extra:0` belongs to no layer",
    );

    let dir = tempfile::tempdir().unwrap();
    let (tensors, _, err) = convert_ok(dir.path(), &input, &["--allow-unclaimed"]);
    assert!(
        err.contains("/conv2d/conv2d/extra:0"),
        "the skipped dataset is named: {err}"
    );
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(names, ["conv2d/bias", "conv2d/kernel"]);

    let inspected = run(&[
        "inspect",
        input.to_str().unwrap(),
        "--allow-unclaimed",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(json["skipped"][0]["dataset"], "/conv2d/conv2d/extra:0");
}

#[test]
fn an_output_without_tensors_is_an_error() {
    // Written by tf-keras: a model whose layers hold no weights.
    assert_clean_convert_failure(
        &fixture("crafted/no_weights_full.h5"),
        "no tensor to write: the file holds no weights",
    );
    // Everything filtered out.
    let input = fixture("classic_conv2d_full.h5");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "--exclude",
        ".",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("all 2 weights were left out by --include, --exclude or --skip"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_tensor_named_like_the_metadata_key_is_refused() {
    assert_clean_convert_failure(
        &fixture("crafted/metadata_named_weight.h5"),
        "a tensor named `__metadata__`",
    );
}

#[test]
fn optimizer_state_is_reported_as_skipped_in_inspect() {
    let out = run(&["inspect", fixture("text_model_full.h5").to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(
        text.contains("optimizer state (pass --include-optimizer to write it)"),
        "{text}"
    );
    let with = run(&[
        "inspect",
        fixture("text_model_full.h5").to_str().unwrap(),
        "--include-optimizer",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&with.stdout).unwrap();
    assert_eq!(json["skipped"], serde_json::json!([]));
}

/// `ReadOptions` is what library users fill in; the CLI flag maps onto it.
#[test]
fn allow_unclaimed_is_a_read_option() {
    let options = ReadOptions {
        allow_unclaimed: true,
        ..Default::default()
    };
    let model =
        keras2safetensors::open(&fixture("crafted/unclaimed_dataset.h5"), &options).unwrap();
    assert_eq!(model.skipped.len(), 1);
    assert!(model.skipped[0].reason.contains("--allow-unclaimed"));
}

/// A second name for a dataset that is written (a hard link no layer
/// lists) is reported skipped, naming the name that is written, and the
/// file converts with Keras's values.
#[test]
fn a_second_link_to_a_written_dataset_is_skipped_naming_the_first() {
    let input = fixture("crafted/second_link.h5");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let convert = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(convert.status.success(), "{}", stderr(&convert));
    let expected: serde_json::Value = serde_json::from_slice(
        &std::fs::read(fixture("classic_conv2d_weights.h5.expected.json")).unwrap(),
    )
    .unwrap();
    check_converted(&input, &std::fs::read(&out).unwrap(), &expected);

    let inspected = run(&["inspect", input.to_str().unwrap(), "--json"]);
    assert!(inspected.status.success(), "{}", stderr(&inspected));
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    assert_eq!(
        json["skipped"],
        serde_json::json!([{
            "dataset": "/conv2d/conv2d/kernel_link:0",
            "reason": "a second link to `/conv2d/conv2d/kernel:0`, which is written once"
        }])
    );
}
