//! Weights stored the ways HDF5 allows and Keras never writes: chunked with
//! shuffle and gzip, big-endian, compact (inside the object header). The
//! crafted files hold Keras's own values with only the storage changed
//! (`fixtures/crafted/make_crafted.py`), so the sha256s Keras wrote for the
//! source fixtures still hold. No Keras fixture has such a dataset, so
//! without these files the decoded read path (whole-dataset reads through
//! the HDF5 crate, byte swapping) would run in no test. And the other way:
//! the contiguous runs Keras does write are located at the bytes it hashed.

mod common;

use std::collections::BTreeMap;

use common::*;
use half::f16;
use keras2safetensors::h5::{self, Location};
use safetensors::SafeTensors;
use serde_json::Value;

/// (crafted file, the Keras fixture it was stored again from).
const CASES: [(&str, &str); 2] = [
    ("crafted/zoo_full_restored.h5", "zoo_full.h5"),
    ("crafted/dtypes_full_restored.h5", "dtypes_full.h5"),
];

fn expected_of(source: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("{source}.expected.json"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

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
fn the_crafted_files_store_weights_in_every_layout() {
    // Guards the fixtures themselves: each layout the tests below rely on
    // is there, in datasets of more than one byte per element.
    for (crafted, _) in CASES {
        let file = h5::File::open(&fixture(crafted)).unwrap();
        let (mut swapped, mut decoded, mut contiguous) = (0, 0, 0);
        for path in file.dataset_paths().unwrap().to_vec() {
            match file.dataset(&path).unwrap().location {
                Location::Decoded {
                    swap_bytes: Some(n),
                    ..
                } if n > 1 => swapped += 1,
                Location::Decoded {
                    swap_bytes: None, ..
                } => decoded += 1,
                Location::Contiguous { .. } => contiguous += 1,
                _ => {}
            }
        }
        assert!(
            swapped >= 4 && decoded >= 4,
            "{crafted}: {swapped} big-endian, {decoded} chunked or compact, {contiguous} contiguous"
        );
    }
}

#[test]
fn keras_weights_are_located_at_their_bytes_in_the_file() {
    // Keras writes every weight as one contiguous little-endian run, which
    // the writer streams or copies by offset: each located run must be
    // the bytes Keras hashed.
    for source in ["zoo_full.h5", "dtypes_full.h5", "bfloat16_full.h5"] {
        let path = fixture(source);
        let bytes = std::fs::read(&path).unwrap();
        let expected = expected_of(source);
        let mut hashes: Vec<&str> = expected_weights(&expected)
            .iter()
            .filter(|w| w["shape"].as_array().unwrap().iter().all(|d| d != 0))
            .map(|w| w["sha256"].as_str().unwrap())
            .collect();
        hashes.sort();
        let file = h5::File::open(&path).unwrap();
        let mut found = Vec::new();
        for dataset in file.dataset_paths().unwrap().to_vec() {
            if !dataset.starts_with("/model_weights/") {
                continue;
            }
            match file.dataset(&dataset).unwrap().location {
                Location::Contiguous { offset, len } => {
                    let run = &bytes[offset as usize..(offset + len) as usize];
                    found.push(sha256_hex(run));
                }
                Location::Empty => {}
                other => panic!("{source}: {dataset} is located as {other:?}"),
            }
        }
        found.sort();
        assert_eq!(found, hashes, "{source}");
    }
}

#[test]
fn a_weight_is_read_in_pieces_from_any_offset() {
    // `diff` and `verify` read stored tensors piecewise (4 MiB at a time),
    // which no fixture tensor is large enough to need: pieces from every
    // offset must put the run back together, and the Keras hash holds.
    let source = "classic_conv2d_full.h5";
    let path = fixture(source);
    let expected = expected_of(source);
    let kernel = expected_weights(&expected)
        .into_iter()
        .find(|w| w["name"] == "conv2d/kernel")
        .unwrap();
    let file = h5::File::open(&path).unwrap();
    let location = file
        .dataset("/model_weights/conv2d/conv2d/kernel:0")
        .unwrap()
        .location;
    let Location::Contiguous { len, .. } = location else {
        panic!("{location:?}");
    };
    for piece in [1usize, 7, 64, 4799] {
        let mut whole = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let mut buf = vec![0u8; piece.min((len - offset) as usize)];
            assert!(file
                .read_contiguous_at(&location, offset, &mut buf)
                .unwrap());
            whole.extend_from_slice(&buf);
            offset += buf.len() as u64;
        }
        assert_eq!(sha256_hex(&whole), kernel["sha256"], "pieces of {piece}");
    }
    // Past the end is an error, not bytes of whatever follows.
    let mut two = [0u8; 2];
    let err = file
        .read_contiguous_at(&location, len - 1, &mut two)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
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
