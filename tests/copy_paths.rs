//! The copy paths of multi-MiB tensors, on bytes Keras wrote.
//!
//! The largest tensor in any fixture is a few KiB, far below the 1 MiB from
//! which the writer has the kernel copy a tensor file to file (or reads it
//! straight into its write buffer, where it is not one run on disk), the
//! 128 KiB of that buffer, and the 64 MiB band in which transposed tensors
//! are read; so without help, the suite never runs those paths. The writer
//! reads three test-only environment variables that lower these sizes; here
//! every Keras fixture is converted by the binary under several settings
//! and each tensor is checked against the sha256 Keras computed from
//! `get_weights()`, as in `convert_fixtures.rs`. A separate test checks the
//! PyTorch-layout transposes at real sizes against their formula (and the
//! banded transposes are checked against the whole-tensor ones, by formula,
//! in `src/export/transform.rs`).

mod common;

use std::path::Path;

use common::*;
use keras2safetensors::export::transform::{apply, Step};
use keras2safetensors::{convert_file, ConvertOptions, Layout, PlanOptions};

/// (what it exercises, direct-read threshold, buffer size, band size in bytes).
const SETTINGS: [(&str, &str, &str, &str); 3] = [
    // Every non-empty tensor is copied by the kernel from its offset in the
    // HDF5 file or in the `.keras` archive that holds it (or read straight
    // into the write buffer: TF checkpoints, compressed archive members);
    // transposed tensors are one band each.
    ("direct read for all", "1", "4194304", "4194304"),
    // Small tensors stream in 24-byte pieces, larger ones are copied by the
    // kernel: both kinds alternate in one output, each buffer after a copy
    // ending where a 24-byte one would. Transposed tensors go in
    // bands of 256 bytes of input (many bands, pieces of a row or two), or
    // whole when one output row is larger than that.
    ("mixed", "512", "24", "256"),
    // Every tensor streams in 7-byte pieces, which split elements: a piece
    // read from the wrong place, or one dropped or repeated, shows. No
    // output row fits a 1-byte band: every transposed tensor is built whole.
    ("buffer only, 7 bytes", "18446744073709551615", "7", "1"),
];

fn convert_with_sizes(
    fixture: &Path,
    out: &Path,
    kernel_copy_min: &str,
    buffer: &str,
    band: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "convert".into(),
        fixture.to_str().unwrap().into(),
        "-o".into(),
        out.to_str().unwrap().into(),
        "--quiet".into(),
        "--force".into(),
    ];
    args.extend(config_args(fixture));
    args.extend(extra.iter().map(|s| s.to_string()));
    std::process::Command::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .args(&args)
        .env(
            "KERAS2SAFETENSORS_TEST_KERNEL_COPY_MIN_BYTES",
            kernel_copy_min,
        )
        .env("KERAS2SAFETENSORS_TEST_COPY_BUFFER_BYTES", buffer)
        .env("KERAS2SAFETENSORS_TEST_BAND_BYTES", band)
        .output()
        .expect("the binary runs")
}

#[test]
fn every_fixture_is_exact_through_every_copy_path() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    for (fixture, expected) in keras_fixtures() {
        for (what, kernel_copy_min, buffer, band) in SETTINGS {
            let result = convert_with_sizes(&fixture, &out, kernel_copy_min, buffer, band, &[]);
            assert!(
                result.status.success(),
                "{} ({what}): {}",
                fixture.display(),
                stderr(&result)
            );
            check_converted(&fixture, &std::fs::read(&out).unwrap(), &expected);
        }
    }
}

/// Name, dtype, shape and bytes of every tensor (the header's metadata
/// comes from a hash map, so its order, and the file's bytes, vary).
fn tensors(file: &[u8]) -> Vec<(String, String, Vec<usize>, Vec<u8>)> {
    let st = safetensors::SafeTensors::deserialize(file).unwrap();
    let mut all: Vec<_> = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let dtype = format!("{:?}", t.dtype());
            (name, dtype, t.shape().to_vec(), t.data().to_vec())
        })
        .collect();
    all.sort();
    all
}

/// In the PyTorch layout the tensors that go out as stored (biases,
/// BatchNormalization statistics) take the same copy paths; the layout
/// itself is proven by `candle_numerics.rs` at the default sizes, so the
/// small-size paths must give the same bytes.
#[test]
fn pytorch_layout_is_the_same_through_every_copy_path() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference.safetensors");
    let out = dir.path().join("out.safetensors");
    let mut compared = 0;
    for (fixture, _) in keras_fixtures() {
        let options = ConvertOptions {
            plan: PlanOptions {
                layout: Layout::PyTorch,
                ..PlanOptions::default()
            },
            write: keras2safetensors::WriteOptions {
                force: true,
                ..Default::default()
            },
            ..convert_options(&fixture)
        };
        if convert_file(&fixture, &reference, &options, &mut |_| {}).is_err() {
            // Files the layout refuses are refused whatever the sizes.
            let (_, kernel_copy_min, buffer, band) = SETTINGS[1];
            let result = convert_with_sizes(
                &fixture,
                &out,
                kernel_copy_min,
                buffer,
                band,
                &["--layout", "pytorch"],
            );
            assert!(!result.status.success(), "{}", fixture.display());
            continue;
        }
        let want = tensors(&std::fs::read(&reference).unwrap());
        for (what, kernel_copy_min, buffer, band) in SETTINGS {
            let result = convert_with_sizes(
                &fixture,
                &out,
                kernel_copy_min,
                buffer,
                band,
                &["--layout", "pytorch"],
            );
            assert!(
                result.status.success(),
                "{} ({what}): {}",
                fixture.display(),
                stderr(&result)
            );
            assert_eq!(
                tensors(&std::fs::read(&out).unwrap()),
                want,
                "{} ({what}): PyTorch layout differs from the default sizes",
                fixture.display()
            );
        }
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} fixtures in PyTorch layout");
}

/// Element `i` of a test matrix: distinct for every `i` below 2^28 and
/// never zero, so a misplaced element cannot match by chance.
fn value(i: usize) -> u32 {
    ((i as u32).wrapping_mul(2_654_435_761) & 0x0FFF_FFFF) | 0x3000_0000
}

fn matrix_bytes<const N: usize>(rows: usize, cols: usize) -> Vec<u8> {
    (0..rows * cols)
        .flat_map(|i| {
            let v = value(i).to_le_bytes();
            let mut e = [0u8; N];
            for (k, b) in e.iter_mut().enumerate() {
                *b = v[k % 4] ^ (k / 4) as u8;
            }
            e
        })
        .collect()
}

/// A Dense kernel of several MiB goes through the same tiled, multi-thread
/// transpose as the fixtures' small ones only if the tiles and the
/// per-thread column bands are cut right at sizes no fixture has; checked
/// element by element against `out[c][r] = in[r][c]`.
#[test]
fn large_transposes_match_the_formula() {
    fn check<const N: usize>(rows: usize, cols: usize) {
        let input = matrix_bytes::<N>(rows, cols);
        // A reused allocation of the wrong size must not leak into the result.
        let out = apply(
            &input,
            &[rows, cols],
            N,
            &[Step::Permute(vec![1, 0])],
            vec![0xAB; 123],
        );
        assert_eq!(out.len(), input.len(), "{rows}x{cols}x{N}");
        for r in 0..rows {
            for c in 0..cols {
                let want = &input[(r * cols + c) * N..][..N];
                let got = &out[(c * rows + r) * N..][..N];
                if got != want {
                    panic!("{rows}x{cols} of {N}-byte elements: [{c}][{r}] is wrong");
                }
            }
        }
    }
    // 8.2 MiB of float32: above the kernel-copy threshold and the buffer.
    check::<4>(1031, 2087);
    // float16 and float64 of a few MiB, with edges that are not multiples
    // of the tile.
    check::<2>(1500, 1027);
    check::<8>(513, 777);
    check::<1>(65, 4099);
}
