//! `inspect` agrees with Keras: layer order, classes, labels, shapes,
//! dtypes and parameter counts, for the Keras file and for its conversion.

mod common;

use common::*;
use serde_json::Value;

fn inspect_json(path: &std::path::Path) -> Value {
    let mut args = vec!["inspect", "--json", path.to_str().unwrap()];
    let options = read_options(path);
    let config = options.config.map(|c| c.to_str().unwrap().to_string());
    if let Some(c) = &config {
        args.extend(["--config", c]);
    }
    let out = run(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("inspect --json prints JSON")
}

/// Compares one inspect result with the expected JSON Keras wrote.
fn assert_matches_keras(got: &Value, expected: &Value, check_classes: bool) {
    let file = expected["file"].as_str().unwrap();
    // A subclassed model's file records neither the classes of the layers
    // it holds nor the order its attributes were set in (Keras writes them
    // sorted by attribute name): compare layers by path, classes as guesses.
    if expected.get("model_class").is_some() {
        let by_path = |v: &Value| {
            let mut v = v.clone();
            v["layers"]
                .as_array_mut()
                .unwrap()
                .sort_by_key(|l| l["path"].as_str().unwrap().to_string());
            v
        };
        let mut expected = by_path(expected);
        expected["model_class"] = Value::Null;
        let expected = serde_json::from_value::<serde_json::Map<_, _>>(expected)
            .map(|mut m| {
                m.remove("model_class");
                Value::Object(m)
            })
            .unwrap();
        return assert_matches_keras(&by_path(got), &expected, false);
    }
    assert_eq!(
        got["total_params"], expected["total_params"],
        "{file}: total params"
    );
    let got_layers = got["layers"].as_array().unwrap();
    let want_layers = expected["layers"].as_array().unwrap();
    let paths = |layers: &[Value]| -> Vec<String> {
        layers
            .iter()
            .map(|l| l["path"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(paths(got_layers), paths(want_layers), "{file}: layer order");
    for (g, w) in got_layers.iter().zip(want_layers) {
        let path = w["path"].as_str().unwrap();
        assert_eq!(g["params"], w["params"], "{file}: params of {path}");
        if check_classes {
            assert_eq!(g["class"], w["class"], "{file}: class of {path}");
        } else if let Some(guess) = g.get("class_guess") {
            // A guess may be absent, but where made it must be right; for a
            // subclass of a built-in layer (TpuBatchNormalization), the
            // built-in is what the weights can tell.
            let want = w.get("builtin_class").unwrap_or(&w["class"]);
            assert_eq!(guess, want, "{file}: class guess for {path}");
        }
        let gw = g["weights"].as_array().unwrap();
        let ww = w["weights"].as_array().unwrap();
        assert_eq!(gw.len(), ww.len(), "{file}: weight count of {path}");
        for (a, b) in gw.iter().zip(ww) {
            assert_eq!(a["name"], b["name"], "{file}: {path}");
            assert_eq!(a["shape"], b["shape"], "{file}: {path}");
            // Keras's label is the last component of the variable name; ours
            // keeps the sub-object where a layer has two of one label
            // (`forward_lstm/kernel`), so it is the name after the layer path
            // (README: every tensor is named `<layer path>/<label>`).
            let name = b["name"].as_str().unwrap();
            let full_label = name
                .strip_prefix(&format!("{path}/"))
                .unwrap_or_else(|| panic!("{file}: {name} is not under {path}"));
            assert_eq!(a["label"], full_label, "{file}: label of {name}");
            assert_eq!(
                full_label.rsplit('/').next(),
                b["label"].as_str(),
                "{file}: the expected JSON's label of {name}"
            );
            assert_eq!(
                a["dtype"].as_str().unwrap(),
                safetensors_dtype(b["dtype"].as_str().unwrap()),
                "{file}: {path}"
            );
        }
    }
}

#[test]
fn inspect_matches_keras_for_every_fixture() {
    for (fixture, expected) in keras_fixtures() {
        let got = inspect_json(&fixture);
        let kind = expected["kind"].as_str().unwrap();
        assert_eq!(got["format"], format_id(kind), "{}", fixture.display());
        assert_matches_keras(&got, &expected, records_classes(kind));
    }
}

#[test]
fn inspect_reads_the_converted_file_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    for (fixture, expected) in keras_fixtures() {
        let out = dir
            .path()
            .join(fixture.file_name().unwrap())
            .with_extension("safetensors");
        let mut args = vec![
            "convert".to_string(),
            fixture.to_str().unwrap().to_string(),
            "-o".to_string(),
            out.to_str().unwrap().to_string(),
            "--quiet".to_string(),
        ];
        if let Some(config) = read_options(&fixture).config {
            args.extend(["--config".to_string(), config.to_str().unwrap().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let convert = run(&args);
        assert!(convert.status.success(), "{}", stderr(&convert));
        let got = inspect_json(&out);
        assert_eq!(got["format"], "safetensors");
        let full = records_classes(expected["kind"].as_str().unwrap());
        // Tensor order inside a safetensors file is by dtype and name, so
        // compare each layer's weights as sets.
        let mut sorted = got.clone();
        let mut want = expected.clone();
        for v in [&mut sorted, &mut want] {
            for layer in v["layers"].as_array_mut().unwrap() {
                layer["weights"]
                    .as_array_mut()
                    .unwrap()
                    .sort_by_key(|w| w["name"].as_str().unwrap().to_string());
            }
        }
        assert_matches_keras(&sorted, &want, full);
    }
}

#[test]
fn the_classic_pair_counts_1216_and_139() {
    for (file, params) in [
        ("classic_conv2d_full.h5", "1,216"),
        ("classic_conv2d_weights.h5", "1,216"),
        ("classic_separable_full.h5", "139"),
        ("classic_separable_weights.h5", "139"),
    ] {
        let out = run(&["inspect", fixture(file).to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains(&format!("Total params: {params}\n")),
            "{file}:\n{text}"
        );
    }
    let sep = inspect_json(&fixture("classic_separable_full.h5"));
    let labels: Vec<&str> = sep["layers"][0]["weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["depthwise_kernel", "pointwise_kernel", "bias"]);
    assert_eq!(sep["layers"][0]["class"], "SeparableConv2D");
    let weights_only = inspect_json(&fixture("classic_separable_weights.h5"));
    assert_eq!(weights_only["layers"][0]["class"], Value::Null);
    assert_eq!(weights_only["layers"][0]["class_guess"], "SeparableConv2D");
}

#[test]
fn unmarked_bfloat16_is_read_and_said() {
    let got = inspect_json(&fixture("bfloat16_weights.h5"));
    let dtypes: Vec<&str> = got["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["weights"].as_array().unwrap())
        .map(|w| w["dtype"].as_str().unwrap())
        .collect();
    assert!(dtypes.contains(&"BF16"));
    assert!(dtypes.contains(&"F32"), "BatchNormalization keeps float32");
    let notes = got["notes"].to_string();
    assert!(notes.contains("bfloat16"), "{notes}");
}

#[test]
fn only_a_class_without_a_label_table_is_noted() {
    // `dtype_zoo` is the generator's custom layer `DtypeZoo`; the other
    // classes, Bidirectional and TimeDistributed included, are Keras's own.
    let got = inspect_json(&fixture("dtypes_full.h5"));
    assert_eq!(
        got["notes"],
        serde_json::json!([
            "layer `dtype_zoo` has class DtypeZoo, which has no label table; labels are taken from the stored weight names"
        ])
    );
    let got = inspect_json(&fixture("text_model_full.h5"));
    assert_eq!(got["notes"], serde_json::json!([]));
}
