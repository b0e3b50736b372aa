//! Keras 3 formats and the files Keras's own loader refuses.

mod common;

use common::*;
use serde_json::Value;

fn malicious(name: &str) -> std::path::PathBuf {
    fixtures_dir().join("malicious").join(name)
}

#[test]
fn archives_keras_itself_refuses_are_refused() {
    assert_clean_failure(
        &malicious("zip_bomb.keras"),
        "refused: archive members would expand",
    );
    assert_clean_failure(
        &malicious("path_escape.keras"),
        "refused: archive member `../../escape.txt`",
    );
    assert_clean_failure(
        &malicious("soft_link.keras"),
        "refused: group `/layers/separable_conv2d/vars` holds a soft link",
    );
    assert_clean_failure(&malicious("soft_link.weights.h5"), "holds a soft link");
    assert_clean_failure(
        &malicious("external_link.keras"),
        "is an external link (to `secret.h5`)",
    );
    assert_clean_failure(&malicious("virtual_dataset.keras"), "a virtual dataset");
    assert_clean_failure(&malicious("no_weights.keras"), "without `model.weights.h5`");
    assert_clean_failure(&malicious("truncated.keras"), "truncated");
}

#[test]
fn formats_are_recognised_by_content_not_extension() {
    let dir = tempfile::tempdir().unwrap();
    for (name, format) in [
        ("k3_classic_separable.keras", "keras-archive"),
        ("k3_classic_separable.weights.h5", "keras3-weights-h5"),
        ("classic_separable_full.h5", "keras-h5-model"),
    ] {
        let renamed = dir.path().join("mystery.bin");
        std::fs::copy(fixture(name), &renamed).unwrap();
        let out = run(&["inspect", "--json", renamed.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let got: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(got["format"], format);
        assert_eq!(got["total_params"], 139);
    }
    let out = run(&[
        "inspect",
        fixture("k3_classic_separable.keras").to_str().unwrap(),
    ]);
    let text = stdout(&out);
    assert!(text.contains("Format: Keras 3 archive (.keras)"), "{text}");
    assert!(text.contains("Keras 3.15.1"), "{text}");
    assert!(
        text.contains("saved 20"),
        "metadata.json's save date: {text}"
    );
}

#[test]
fn an_archive_is_read_in_place_without_temporary_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let output = out_dir.path().join("model.safetensors");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .args([
            "convert",
            fixture("k3_tiny_efficientdet.keras").to_str().unwrap(),
            "-o",
        ])
        .arg(&output)
        .env("TMPDIR", tmp.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_dir(tmp.path()).unwrap().count(),
        0,
        "nothing extracted"
    );
    assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 1);
}

#[test]
fn ambiguous_batch_norm_is_labelled_by_what_is_certain_and_said() {
    let file = fixture("k3_bn_center_false.weights.h5");
    let out = run(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(out.status.success());
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = got["layers"][0]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["param_0", "moving_mean", "moving_variance"]);
    assert!(
        got["notes"].to_string().contains("--config"),
        "{}",
        got["notes"]
    );

    let config = fixture("k3_bn_center_false.config.json");
    let out = run(&[
        "inspect",
        "--json",
        file.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    let got: Value = serde_json::from_slice(&out.stdout).unwrap();
    let labels: Vec<&str> = got["layers"][0]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["gamma", "moving_mean", "moving_variance"]);
    assert_eq!(got["notes"], Value::Array(vec![]));
}

#[test]
fn any_shard_reads_the_whole_sharded_save() {
    let whole = run(&[
        "inspect",
        "--json",
        fixture("k3_tiny_efficientdet_sharded.weights.json")
            .to_str()
            .unwrap(),
    ]);
    let shard = run(&[
        "inspect",
        "--json",
        fixture("k3_tiny_efficientdet_sharded_00002.weights.h5")
            .to_str()
            .unwrap(),
    ]);
    assert!(whole.status.success() && shard.status.success());
    let whole: Value = serde_json::from_slice(&whole.stdout).unwrap();
    let shard: Value = serde_json::from_slice(&shard.stdout).unwrap();
    assert_eq!(whole["total_params"], 4490);
    assert_eq!(whole["layers"], shard["layers"]);
    assert_eq!(shard["format"], "keras3-sharded-weights");
}

/// A `.keras` archive whose `model.weights.h5` is not a Keras 3 object tree
/// (here a Keras 2 `model.save` file) is named as such, built at test time
/// from the real archive's other members.
#[test]
fn an_archive_whose_weights_are_not_an_object_tree_is_refused() {
    use std::io::{Read, Write};
    let source = fixture("k3_classic_separable.keras");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&source).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crafted = dir.path().join("legacy_inside.keras");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&crafted).unwrap());
    let stored =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().unwrap().to_string();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        if name == "model.weights.h5" {
            bytes = std::fs::read(fixture("classic_separable_full.h5")).unwrap();
        }
        writer.start_file(name, stored).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
    assert_clean_failure(&crafted, "no Keras 3 `layers` tree in the weights");
}

/// Keras 3.5 records no layer names in a `.weights.h5`; without its config
/// the layers are named by their object keys, which are Keras's default
/// names for every layer of this model but the last Dense (`dense_1`, keyed
/// `dense`). The Bidirectional halves are named from the class their cell's
/// shapes give (`forward_lstm`), as Keras names them.
#[test]
fn a_keras_3_5_weights_file_without_its_config_keeps_keras_names() {
    let file = fixtures_dir().join("older_keras3/k35_text_model.weights.h5");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{}.expected.json", file.display())).unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (tensors, _, _) = convert_ok(dir.path(), &file, &[]);
    let want: std::collections::BTreeMap<String, String> = expected_weights(&expected)
        .iter()
        .map(|w| {
            let name = w["name"].as_str().unwrap();
            let name = name
                .strip_prefix("dense_1/")
                .map_or(name.to_string(), |label| format!("dense/{label}"));
            (name, w["sha256"].as_str().unwrap().to_string())
        })
        .collect();
    assert!(want.contains_key("bidirectional/backward_lstm/recurrent_kernel"));
    let got: std::collections::BTreeMap<String, String> = tensors
        .into_iter()
        .map(|(name, v)| (name, v.rsplit(' ').next().unwrap().to_string()))
        .collect();
    assert_eq!(got, want);
}

/// A layer whose weights sit in sub-objects (MultiHeadAttention's
/// `query_dense`, `key_dense`, ...) is written whole from a `.keras` file,
/// each sub-object's arrays labelled from the class's table
/// (`query/kernel`, ...): the names, shapes and values Keras gives the same
/// model in `k3_attention_legacy.h5`'s expected JSON.
#[test]
fn every_weight_of_a_layer_with_sub_objects_is_written() {
    let expected: Value = expected_of("k3_attention_legacy.h5");
    let want: std::collections::BTreeMap<String, String> = expected_weights(&expected)
        .iter()
        .map(|w| {
            let value = format!("{} {}", w["shape"], w["sha256"].as_str().unwrap());
            (w["name"].as_str().unwrap().to_string(), value)
        })
        .collect();
    assert_eq!(want.len(), 8);
    assert!(want.contains_key("mha/query/kernel"), "{want:?}");
    let dir = tempfile::tempdir().unwrap();
    let (tensors, _, err) = convert_ok(dir.path(), &fixture("k3_attention.keras"), &[]);
    assert!(!err.contains("param_N"), "{err}");
    // `F32 [4, 2, 3] <sha256>` -> `[4,2,3] <sha256>`, as the JSON prints it.
    let got: std::collections::BTreeMap<String, String> = tensors
        .into_iter()
        .map(|(name, v)| (name, v.split_once(' ').unwrap().1.replace(", ", ",")))
        .collect();
    assert_eq!(got, want);
}

/// `dtype shape sha256` of every variable in a fixture's `.values.json`
/// (Keras's own values, for files whose labels are not Keras's), by the
/// variable's Keras path.
fn keras_values_by_path(json: &str) -> std::collections::BTreeMap<String, String> {
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(json)).unwrap()).unwrap();
    values["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let value = format!(
                "{} {} {}",
                safetensors_dtype(v["dtype"].as_str().unwrap()),
                v["shape"],
                v["sha256"].as_str().unwrap()
            );
            (v["path"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

/// The same triples, sorted.
fn keras_values(json: &str) -> Vec<String> {
    let mut want: Vec<String> = keras_values_by_path(json).into_values().collect();
    want.sort();
    want
}

/// The same triple for every tensor [`convert_ok`] wrote, sorted.
fn values_of(tensors: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let mut got: Vec<String> = tensors.values().map(|v| v.replace(", ", ",")).collect();
    got.sort();
    got
}

/// Weights no label table explains are written with Keras's values and
/// labelled param_N, and a note says why for each layer: a custom class
/// (`Scale`) has no table; an int8-quantized Dense has three weights where
/// the Dense table has two.
#[test]
fn weights_without_labels_are_written_and_each_layer_says_why() {
    let file = fixture("k3_unlabelled.keras");
    let dir = tempfile::tempdir().unwrap();
    let (tensors, _, _) = convert_ok(dir.path(), &file, &[]);
    assert_eq!(
        values_of(&tensors),
        keras_values("k3_unlabelled.keras.values.json")
    );

    let out = run(&["inspect", "--json", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["notes"],
        serde_json::json!([
            "layer `scale` has class Scale, which has no label table; weights labelled param_N by position",
            "layer `q_dense` (Dense) has 3 weights, which its label table does not explain; labelled param_N"
        ])
    );
}

/// Generic RNNs, over a custom cell and over Keras's GRUCell and LSTMCell,
/// with no config (`.weights.h5`) and with one (`.keras`). The custom
/// cell's first variable is a vector, not a kernel: its weights are not a
/// Keras cell's, so they are labelled by position (the recurrent table used
/// to call the `scale` vector a `kernel`) and a note says why. The Keras
/// cells' weights keep their names. Each name is checked against the value
/// Keras saved under the matching variable path.
#[test]
fn an_rnn_over_a_custom_cell_is_written_whole() {
    let values = keras_values_by_path("k3_custom_rnn.weights.h5.values.json");
    let keras_value = |path: &str| {
        values
            .get(path)
            .cloned()
            .unwrap_or_else(|| panic!("{path}"))
    };
    let want = [
        ("rnn/param_0", "rnn/scaled_cell/scale"),
        ("rnn/param_1", "rnn/scaled_cell/kernel"),
        ("rnn_1/bias", "rnn_1/gru_cell/bias"),
        ("rnn_1/kernel", "rnn_1/gru_cell/kernel"),
        ("rnn_1/recurrent_kernel", "rnn_1/gru_cell/recurrent_kernel"),
        ("rnn_2/bias", "rnn_2/lstm_cell/bias"),
        ("rnn_2/kernel", "rnn_2/lstm_cell/kernel"),
        ("rnn_2/recurrent_kernel", "rnn_2/lstm_cell/recurrent_kernel"),
    ];
    for file in ["k3_custom_rnn.weights.h5", "k3_custom_rnn.keras"] {
        let dir = tempfile::tempdir().unwrap();
        let (tensors, _, stderr) = convert_ok(dir.path(), &fixture(file), &[]);
        let got: Vec<(&str, String)> = tensors
            .iter()
            .map(|(name, value)| (name.as_str(), value.replace(", ", ",")))
            .collect();
        let expected: Vec<(&str, String)> = want
            .iter()
            .map(|(name, path)| (*name, keras_value(path)))
            .collect();
        assert_eq!(got, expected, "{file}");
        assert!(
            stderr.contains(
                "layer `rnn` is an RNN whose cell's weights are not shaped as a Keras cell's"
            ),
            "{file}: {stderr}"
        );
    }
}

/// Sub-layers of a custom layer, held by attribute and named as keras_hub
/// names them, with no config to give their classes. Where their shapes
/// fit several classes, a name ending in `layer_norm`, `embedding` or
/// `dense` picks the class; a MultiHeadAttention subclass is known by its
/// four projections; a list of layers adds no name. So every tensor gets
/// Keras's own variable path, except a lone LayerNormalization array (gamma
/// or beta?), which stays `param_0`.
#[test]
fn sub_layer_names_settle_classes_their_shapes_leave_open() {
    let mut want: Vec<(String, String)> = keras_values_by_path("k3_named_sublayers.values.json")
        .into_iter()
        .map(|(path, value)| {
            let name = match path.as_str() {
                "block/final_layernorm/gamma" => "block/final_layernorm/param_0".to_string(),
                _ => path,
            };
            (name, value)
        })
        .collect();
    want.sort();
    assert_eq!(want.len(), 16);
    for file in ["k3_named_sublayers.weights.h5", "k3_named_sublayers.keras"] {
        let dir = tempfile::tempdir().unwrap();
        let (tensors, _, stderr) = convert_ok(dir.path(), &fixture(file), &[]);
        let got: Vec<(String, String)> = tensors
            .into_iter()
            .map(|(name, value)| (name, value.replace(", ", ",")))
            .collect();
        assert_eq!(got, want, "{file}");
        assert!(
            stderr.contains("from its name `token_embedding` and its shapes (as Embedding)"),
            "{file}: {stderr}"
        );
    }
}
