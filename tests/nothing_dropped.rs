//! Nothing is dropped silently: a dataset no reader claims is an error, and
//! an output with no tensors is never a success. That every dataset of
//! every fixture is written or reported skipped with a reason is checked
//! from the bytes inside the crate (`src/accounting/fixture_tests.rs`),
//! where the HDF5 layer is visible.

mod common;

use common::*;
use keras2safetensors::ReadOptions;

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
    // Optimizer state read with --include-optimizer counts too: as many
    // weights as the datasets reported skipped without it.
    let input = fixture("text_model_full.h5");
    let left_out = |extra: &[&str]| -> usize {
        let mut args = vec![
            "convert",
            input.to_str().unwrap(),
            "--exclude",
            ".",
            "--dry-run",
        ];
        args.extend(extra);
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1));
        let err = stderr(&out);
        let count = err
            .split("all ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse().ok());
        count.unwrap_or_else(|| panic!("{err}"))
    };
    let inspected = run(&["inspect", input.to_str().unwrap(), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&inspected.stdout).unwrap();
    let optimizer = json["skipped"].as_array().unwrap().len();
    assert!(optimizer > 0);
    assert_eq!(
        left_out(&["--include-optimizer"]),
        left_out(&[]) + optimizer
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
    let expected: serde_json::Value = expected_of("classic_conv2d_weights.h5");
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
