//! Every fixture converts bit-exactly: each tensor's name, shape, dtype and
//! sha256 equal what Keras's `get_weights()` gave when the fixture was made.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use keras2safetensors::{convert_file, ConvertOptions, ReadOptions, WriteOptions};
use safetensors::SafeTensors;
use serde_json::Value;

/// Convert options that overwrite, for a test that writes one path twice.
fn forced(read: ReadOptions) -> ConvertOptions {
    ConvertOptions {
        read,
        write: WriteOptions {
            force: true,
            ..WriteOptions::default()
        },
        ..ConvertOptions::default()
    }
}

#[test]
fn every_fixture_converts_bit_exactly() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, expected) in keras_fixtures() {
        let out = dir
            .path()
            .join(fixture.file_name().unwrap())
            .with_extension("safetensors");
        convert_file(&fixture, &out, &convert_options(&fixture), &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        check_converted(&fixture, &std::fs::read(&out).unwrap(), &expected);
    }
}

/// The name `convert` gives each optimizer tensor in the expected JSON:
/// Keras 3 object trees store no optimizer variable names, so there the
/// name is the tensor's path in the file.
fn optimizer_names(expected: &Value) -> Vec<(String, &Value)> {
    let list = expected["optimizer"].as_array().unwrap();
    let tree_paths = expected
        .get("optimizer_h5_paths")
        .filter(|_| expected["kind"] != "legacy_h5");
    list.iter()
        .enumerate()
        .map(|(i, w)| {
            let name = match tree_paths {
                Some(paths) => paths[i].as_str().unwrap().to_string(),
                None => w["name"].as_str().unwrap().to_string(),
            };
            (name, w)
        })
        .collect()
}

#[test]
fn optimizer_state_is_written_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let with_optimizer: Vec<_> = keras_fixtures()
        .into_iter()
        .filter(|(_, e)| e.get("optimizer").is_some())
        .collect();
    assert!(
        with_optimizer.len() >= 7,
        "the text model from tf-keras 2.21, Keras 3.15, Keras 3.5 and tf.keras 2.13"
    );
    for (fixture, expected) in with_optimizer {
        let plain = dir.path().join("plain.safetensors");
        // Each fixture keeps its own read options (a bare `.weights.h5` needs
        // its config), so only the optimizer switch differs between the runs.
        convert_file(
            &fixture,
            &plain,
            &forced(read_options(&fixture)),
            &mut |_| {},
        )
        .unwrap();
        check_converted(&fixture, &std::fs::read(&plain).unwrap(), &expected);

        let with = dir.path().join("with.safetensors");
        let options = ReadOptions {
            include_optimizer: true,
            ..read_options(&fixture)
        };
        convert_file(&fixture, &with, &forced(options), &mut |_| {}).unwrap();
        let bytes = std::fs::read(&with).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let names = optimizer_names(&expected);
        assert!(!names.is_empty());
        let mut want = BTreeSet::new();
        for (name, w) in names {
            let mut w = w.clone();
            w["name"] = Value::from(name.clone());
            check_tensor(&fixture, &st, &w);
            want.insert(name);
        }
        for w in expected_weights(&expected) {
            check_tensor(&fixture, &st, w);
            want.insert(w["name"].as_str().unwrap().to_string());
        }
        let got: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
        assert_eq!(
            got,
            want,
            "{}: model and optimizer tensors",
            fixture.display()
        );
    }
}

/// Asking for optimizer state of a file that holds none is no error: the
/// model's tensors are written, and nothing else.
#[test]
fn include_optimizer_on_a_file_without_optimizer_state_writes_the_model() {
    let dir = tempfile::tempdir().unwrap();
    for name in [
        "classic_conv2d_full.h5",
        "classic_conv2d_weights.h5",
        "k3_classic_separable.weights.h5",
        "k3_classic_separable.keras",
        "older_keras3/k213_classic_separable.keras",
    ] {
        let fixture = fixture(name);
        let expected: Value = serde_json::from_str(
            &std::fs::read_to_string(format!("{}.expected.json", fixture.display())).unwrap(),
        )
        .unwrap();
        assert!(expected.get("optimizer").is_none(), "{name} has none");
        let out = dir.path().join("out.safetensors");
        let options = ReadOptions {
            include_optimizer: true,
            ..read_options(&fixture)
        };
        convert_file(&fixture, &out, &forced(options), &mut |_| {})
            .unwrap_or_else(|e| panic!("{e}"));
        check_converted(&fixture, &std::fs::read(&out).unwrap(), &expected);
    }
}

#[test]
fn metadata_records_source_versions_and_classes() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sep.safetensors");
    let fixture = fixture("classic_separable_full.h5");
    convert_file(&fixture, &out, &ConvertOptions::default(), &mut |_| {}).unwrap();
    let bytes = std::fs::read(&out).unwrap();
    let (_, header) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = header.metadata().clone().unwrap();
    assert_eq!(
        meta["format"], "tf",
        "Keras layout: TensorFlow-layout arrays"
    );
    assert_eq!(meta["source"], "classic_separable_full.h5");
    assert_eq!(meta["keras_version"], "2.21.0");
    assert_eq!(meta["backend"], "tensorflow");
    let classes: Value = serde_json::from_str(&meta["layer_classes"]).unwrap();
    assert_eq!(classes["separable_conv2d"], "SeparableConv2D");
}

/// Name → sha256 of every tensor a conversion writes.
fn converted_hashes(fixture: &Path) -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    convert_file(fixture, &out, &convert_options(fixture), &mut |_| {})
        .unwrap_or_else(|e| panic!("{e}"));
    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                format!(
                    "{:?} {:?} {}",
                    view.dtype(),
                    view.shape(),
                    sha256_hex(view.data())
                ),
            )
        })
        .collect()
}

#[test]
fn the_same_model_gets_the_same_names_and_bytes_in_every_format() {
    for (keras2, keras3_forms) in [
        (
            "classic_separable_full.h5",
            &[
                "classic_separable_weights.h5",
                "k3_classic_separable_legacy.h5",
                "k3_classic_separable.weights.h5",
                "k3_classic_separable.keras",
            ][..],
        ),
        (
            "tiny_efficientdet_full.h5",
            &[
                "tiny_efficientdet_weights.h5",
                "k3_tiny_efficientdet_legacy.h5",
                "k3_tiny_efficientdet.weights.h5",
                "k3_tiny_efficientdet.keras",
                "k3_tiny_efficientdet_sharded.weights.json",
                "k3_tiny_efficientdet_sharded_00001.weights.h5",
            ][..],
        ),
        (
            "text_model_full.h5",
            &[
                "k3_text_model_legacy.h5",
                "k3_text_model.weights.h5",
                "k3_text_model.keras",
            ][..],
        ),
    ] {
        let reference = converted_hashes(&fixture(keras2));
        assert!(!reference.is_empty());
        for form in keras3_forms {
            assert_eq!(
                converted_hashes(&fixture(form)),
                reference,
                "{form} differs from {keras2}"
            );
        }
    }
}
