//! Weights stored the ways HDF5 allows and Keras never writes: chunked with
//! shuffle and gzip, big-endian, compact (inside the object header). The
//! crafted files hold Keras's own values with only the storage changed
//! (`fixtures/crafted/make_crafted.py`), so the sha256s Keras wrote for the
//! source fixtures still hold. No Keras fixture has such a dataset, so
//! without these files the decoded read path (whole-dataset reads through
//! the HDF5 crate, byte swapping) would run in no test. That the files do
//! hold those layouts, and that the contiguous runs Keras does write are
//! located at the bytes it hashed, is checked inside the crate
//! (`src/h5/fixture_tests.rs`), where the HDF5 layer is visible.

mod common;

use std::collections::BTreeMap;

use common::*;
use half::f16;
use safetensors::SafeTensors;

/// (crafted file, the Keras fixture it was stored again from).
const CASES: [(&str, &str); 2] = [
    ("crafted/zoo_full_restored.h5", "zoo_full.h5"),
    ("crafted/dtypes_full_restored.h5", "dtypes_full.h5"),
];

fn convert(input: &std::path::Path, output: &std::path::Path, extra: &[&str]) {
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--force",
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}: {}",
        input.display(),
        stderr(&out)
    );
}

#[test]
fn every_layout_gives_the_values_keras_wrote() {
    let dir = tempfile::tempdir().unwrap();
    for (crafted, source) in CASES {
        let input = fixture(crafted);
        let output = dir.path().join("out.safetensors");
        // Stored tensors stream out as they are read.
        convert(&input, &output, &[]);
        let plain = std::fs::read(&output).unwrap();
        check_converted(&input, &plain, &expected_of(source));

        // A cast builds every float tensor in memory from a whole read:
        // each value, checked above against Keras, rounded once to f16.
        let half_path = dir.path().join("half.safetensors");
        convert(&input, &half_path, &["--dtype", "f16"]);
        let half = std::fs::read(&half_path).unwrap();
        let (plain, half) = (
            SafeTensors::deserialize(&plain).unwrap(),
            SafeTensors::deserialize(&half).unwrap(),
        );
        let mut cast: BTreeMap<String, usize> = BTreeMap::new();
        for (name, tensor) in plain.tensors() {
            let got = half.tensor(&name).unwrap();
            let bytes = tensor.data();
            let values: Option<Vec<f64>> = match format!("{:?}", tensor.dtype()).as_str() {
                "F64" => Some(
                    bytes
                        .chunks_exact(8)
                        .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                ),
                "F32" => Some(
                    bytes
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                        .collect(),
                ),
                _ => None,
            };
            let Some(values) = values else {
                assert_eq!(got.data(), bytes, "{crafted}: `{name}` is not cast");
                continue;
            };
            let want: Vec<u8> = values
                .iter()
                .flat_map(|&v| f16::from_f64(v).to_le_bytes())
                .collect();
            assert_eq!(got.data(), want.as_slice(), "{crafted}: `{name}` as f16");
            assert_eq!(got.shape(), tensor.shape(), "{crafted}: `{name}`");
            if !values.is_empty() {
                *cast.entry(format!("{:?}", tensor.dtype())).or_default() += 1;
            }
        }
        assert!(
            cast.values().sum::<usize>() >= 5,
            "{crafted}: tensors cast {cast:?}"
        );
    }
}
