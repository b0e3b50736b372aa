//! Messages that say what happened and what to do, and shard folders read
//! as one model wherever a file is taken.

mod common;

use common::*;

#[test]
fn converting_a_safetensors_file_says_what_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let converted = dir.path().join("m.safetensors");
    let input = fixture("classic_conv2d_full.h5");
    assert!(run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        converted.to_str().unwrap()
    ])
    .status
    .success());
    let out = run(&[
        "convert",
        converted.to_str().unwrap(),
        "-o",
        "/nonexistent/x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("a safetensors file, which is converted already")
            && err.contains("`inspect`, `verify` and `diff` read this one"),
        "{err}"
    );
    assert!(
        !err.contains("not a Keras weight file or safetensors file"),
        "{err}"
    );
}

#[test]
fn a_manifest_that_is_not_one_is_named_as_such() {
    let input = fixture("classic_conv2d_full.h5");
    let out = run(&[
        "check",
        input.to_str().unwrap(),
        "--manifest",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("not a keras2safetensors manifest (not a text file)")
            && err.contains("`manifest FILE -o MANIFEST_JSON` writes one"),
        "{err}"
    );
    assert!(!err.contains("UTF-8"), "{err}");
}

#[test]
fn a_shard_folder_is_inspected_verified_and_diffed_as_one_model() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    let input = fixture("tiny_efficientdet_full.h5");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        shards.to_str().unwrap(),
        "--max-shard-size",
        "8KB",
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(shards.join("model.safetensors.index.json").is_file());

    let inspect = run(&["inspect", shards.to_str().unwrap(), "--json"]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let json: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let expected: serde_json::Value = expected_of("tiny_efficientdet_full.h5");
    assert_eq!(json["total_params"], expected["total_params"]);

    let verify = run(&["verify", input.to_str().unwrap(), shards.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
    let diff = run(&["diff", input.to_str().unwrap(), shards.to_str().unwrap()]);
    assert!(diff.status.success(), "{}", stdout(&diff));

    let other = run(&["inspect", dir.path().to_str().unwrap()]);
    assert_eq!(other.status.code(), Some(1));
    assert!(
        stderr(&other).contains("a folder without model.safetensors.index.json"),
        "{}",
        stderr(&other)
    );
}
