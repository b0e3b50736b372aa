//! Files that do not record layer classes (weights-only saves, subclassed
//! models) still convert to PyTorch layout: a class is decided from the
//! weights where every fitting class gives the same tensors, `--class`
//! decides where the user knows better, and a layer without any PyTorch
//! equivalent is written as stored rather than refusing the whole file.

mod common;

use std::collections::BTreeMap;

use common::*;
use serde_json::Value;

#[test]
fn weights_only_files_convert_to_pytorch_layout_like_their_full_twins() {
    let dir = tempfile::tempdir().unwrap();
    for (full, weights) in [
        // Bias-free Conv2D kernels (EfficientNet's stem and projections):
        // Conv2D and Conv2DTranspose give the same PyTorch tensors.
        ("tiny_efficientdet_full.h5", "tiny_efficientdet_weights.h5"),
        ("zoo_full.h5", "zoo_weights.h5"),
        ("classic_conv2d_full.h5", "classic_conv2d_weights.h5"),
        ("classic_separable_full.h5", "classic_separable_weights.h5"),
        ("cudnn_rnn_full.h5", "cudnn_rnn_weights.h5"),
        // No class recorded anywhere: halves named forward_/backward_.
        (
            "numerics/bidirectional_lstm.h5",
            "numerics/bidirectional_lstm_weights.h5",
        ),
        (
            "numerics/bidirectional_gru.h5",
            "numerics/bidirectional_gru_weights.h5",
        ),
    ] {
        let (want, _, _) = convert_ok(dir.path(), &fixture(full), &["--layout", "pytorch"]);
        let (got, _, err) = convert_ok(dir.path(), &fixture(weights), &["--layout", "pytorch"]);
        assert_eq!(got, want, "{weights} differs from {full}");
        assert!(!err.contains("warning"), "{weights}: {err}");
    }
}

#[test]
fn a_weights_only_bidirectional_layer_is_recognised() {
    let out = run(&[
        "inspect",
        fixture("numerics/bidirectional_lstm_weights.h5")
            .to_str()
            .unwrap(),
        "--json",
    ]);
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    let layer = &json["layers"][0];
    assert_eq!(layer["class"], Value::Null, "the file records no class");
    assert_eq!(layer["class_guess"], "Bidirectional");
    let dir = tempfile::tempdir().unwrap();
    let (tensors, _, _) = convert_ok(
        dir.path(),
        &fixture("numerics/bidirectional_lstm_weights.h5"),
        &["--layout", "pytorch"],
    );
    let names: Vec<&str> = tensors.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "bidirectional_lstm.bias_hh_l0",
            "bidirectional_lstm.bias_hh_l0_reverse",
            "bidirectional_lstm.bias_ih_l0",
            "bidirectional_lstm.bias_ih_l0_reverse",
            "bidirectional_lstm.weight_hh_l0",
            "bidirectional_lstm.weight_hh_l0_reverse",
            "bidirectional_lstm.weight_ih_l0",
            "bidirectional_lstm.weight_ih_l0_reverse",
        ]
    );
    // Keras folds PyTorch's two LSTM biases into one: the second is zeros
    // of the first's shape, in each direction.
    for suffix in ["", "_reverse"] {
        let ih = &tensors[&format!("bidirectional_lstm.bias_ih_l0{suffix}")];
        let (dtype_shape, _) = ih.rsplit_once(' ').unwrap();
        let units4: usize = dtype_shape
            .trim_start_matches("F32 [")
            .trim_end_matches(']')
            .parse()
            .unwrap();
        let zeros = sha256_hex(&vec![0u8; units4 * 4]);
        assert_eq!(
            tensors[&format!("bidirectional_lstm.bias_hh_l0{suffix}")],
            format!("{dtype_shape} {zeros}")
        );
    }
}

#[test]
fn class_overrides_a_guess_and_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("zoo_weights.h5");
    let (_, metadata, _) = convert_ok(dir.path(), &input, &["--layout", "pytorch"]);
    let options: Value = serde_json::from_str(&metadata["pytorch_options"]).unwrap();
    assert_eq!(options["conv2d_no_bias"]["class"], "Conv2D");
    assert_eq!(options["conv2d_no_bias"]["class_recorded"], Value::Null);

    let (_, metadata, _) = convert_ok(
        dir.path(),
        &input,
        &[
            "--layout",
            "pytorch",
            "--class",
            "conv2d_no_bias=Conv2DTranspose",
        ],
    );
    let options: Value = serde_json::from_str(&metadata["pytorch_options"]).unwrap();
    assert_eq!(options["conv2d_no_bias"]["class"], "Conv2DTranspose");

    // A class the weights cannot be, or a layer that is not there.
    for (class, expect) in [
        (
            "conv2d_no_bias=Dense",
            "layer `conv2d_no_bias` cannot be written",
        ),
        ("no_such_layer=Dense", "`no_such_layer`, which is no layer"),
    ] {
        let out = run(&[
            "convert",
            input.to_str().unwrap(),
            "--layout",
            "pytorch",
            "--dry-run",
            "--class",
            class,
        ]);
        assert_eq!(out.status.code(), Some(1), "{class}");
        assert!(stderr(&out).contains(expect), "{}", stderr(&out));
    }
}

#[test]
fn two_weights_with_one_label_are_both_written() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("crafted/two_kernels_one_label.h5");
    let (keras, _, _) = convert_ok(dir.path(), &input, &[]);
    assert_eq!(keras.len(), 3);
    let (torch, metadata, err) = convert_ok(dir.path(), &input, &["--layout", "pytorch"]);
    let names: Vec<&str> = torch.keys().map(String::as_str).collect();
    assert_eq!(names, ["dense.bias", "dense.extra.kernel", "dense.kernel"]);
    assert!(err.contains("layer `dense` has no PyTorch layout"), "{err}");
    assert_eq!(metadata["keras_layout_layers"], r#"["dense"]"#);
    // As stored: the same bytes as the Keras layout.
    assert_eq!(torch["dense.extra.kernel"], keras["dense/extra/kernel"]);

    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "--layout",
        "pytorch",
        "--strict",
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("two of its weights are labelled `kernel`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_format_key_is_one_hugging_face_loaders_accept() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("classic_conv2d_full.h5");
    let (_, keras, _) = convert_ok(dir.path(), &input, &[]);
    assert_eq!(keras["format"], "tf");
    assert_eq!(keras["layout"], "keras");
    let (_, torch, _) = convert_ok(dir.path(), &input, &["--layout", "pytorch"]);
    assert_eq!(torch["format"], "pt");
    assert_eq!(torch["layout"], "pytorch");
}

#[test]
fn layer_metadata_follows_renamed_layers_and_unused_rules_are_warned() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "^separable_conv2d\\. => head.sep.\n^nothing_matches_this => x\n",
    )
    .unwrap();
    let input = fixture("classic_separable_full.h5");
    let (tensors, metadata, err) = convert_ok(
        dir.path(),
        &input,
        &["--layout", "pytorch", "--rename", rules.to_str().unwrap()],
    );
    assert!(tensors.contains_key("head.sep.conv_pw.weight"));
    let classes: Value = serde_json::from_str(&metadata["layer_classes"]).unwrap();
    assert_eq!(classes["head.sep"], "SeparableConv2D");
    let options: Value = serde_json::from_str(&metadata["pytorch_options"]).unwrap();
    assert_eq!(options["head.sep"]["padding"], "valid");
    assert!(
        err.contains("warning: ")
            && err.contains("rename rule `^nothing_matches_this => x` matched no tensor name"),
        "{err}"
    );
    assert!(!err.contains("rule `^separable_conv2d"), "{err}");

    // A dry run warns too.
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "--dry-run",
        "--rename",
        rules.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("`^nothing_matches_this => x` matched no tensor name"),
        "{}",
        stderr(&out)
    );
}

/// Issue 16: a subclassed tf.keras model saved with `save_weights` keeps
/// each tensor under its variable name, and every tensor has a PyTorch
/// layout (standard sub-layers by their guessed class, the rest as stored).
#[test]
fn subclassed_models_keep_their_variable_names() {
    let input = fixture("subclassed_effdet_weights.h5");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            input.with_file_name("subclassed_effdet_weights.h5.expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let want: BTreeMap<String, String> = expected["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let name = v["name"].as_str().unwrap();
            (
                name.strip_suffix(":0").unwrap().to_string(),
                v["sha256"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(want.len(), 96);
    let dir = tempfile::tempdir().unwrap();
    let (got, _, _) = convert_ok(dir.path(), &input, &[]);
    let got: BTreeMap<String, String> = got
        .into_iter()
        .map(|(name, v)| (name, v.rsplit(' ').next().unwrap().to_string()))
        .collect();
    assert_eq!(got, want);

    let (torch, metadata, _) = convert_ok(dir.path(), &input, &["--layout", "pytorch"]);
    assert_eq!(torch.len(), 96, "every tensor written");
    assert_eq!(
        torch["efficientnet-b0.blocks_0.depthwise_conv2d.weight"]
            .split(' ')
            .nth(1)
            .unwrap(),
        "[4,",
        "depthwise (3, 3, 4, 1) -> (4, 1, 3, 3)"
    );
    let as_stored: Vec<String> = serde_json::from_str(&metadata["keras_layout_layers"]).unwrap();
    assert_eq!(
        as_stored,
        ["fpn_cells/cell_0/fnode0", "fpn_cells/cell_0/fnode1"].map(|p| p.replace('/', ".")),
        "only the BiFPN nodes' scalar fusion weights lack a PyTorch module"
    );
}

/// Issue 16: `inspect` shows a sub-network's sub-layers as a tree, each
/// group with the params of everything in it.
#[test]
fn inspect_shows_sub_networks_as_a_tree() {
    let input = fixture("subclassed_effdet_weights.h5");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(
            input.with_file_name("subclassed_effdet_weights.h5.expected.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let params_under = |prefix: &str| -> u64 {
        expected["layers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|l| l["path"].as_str().unwrap().starts_with(prefix))
            .map(|l| l["params"].as_u64().unwrap())
            .sum()
    };
    let out = run(&["inspect", input.to_str().unwrap()]);
    assert!(out.status.success());
    let text = stdout(&out);
    let row = |start: &str| {
        text.lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no row starting {start:?} in\n{text}"))
            .to_string()
    };
    for (indent, group, prefix) in [
        ("", "efficientnet-b0/", "efficientnet-b0/"),
        ("  ", "blocks_0/", "efficientnet-b0/blocks_0/"),
        ("    ", "se/", "efficientnet-b0/blocks_0/se/"),
        ("", "fpn_cells/", "fpn_cells/"),
    ] {
        let line = row(&format!("{indent}{group} "));
        let params = params_under(prefix);
        assert!(params > 0);
        // Grouped as the table prints numbers (1,030), by Keras's own count.
        let printed = keras2safetensors::inspect::group_digits(params);
        assert!(
            line.trim_end().ends_with(&format!(" {printed}")),
            "{group}: {line}"
        );
    }
    let dw = row("    depthwise_conv2d ");
    assert!(dw.contains("DepthwiseConv2D (guess)"), "{dw}");
}
