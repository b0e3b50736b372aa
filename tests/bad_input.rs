//! Bad input gets one clear line naming the file and the problem, exit code
//! 1, no panic, and no output file.

mod common;

use std::path::{Path, PathBuf};

use common::assert_clean_failure;

use common::*;

fn write_temp(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn empty_file() {
    let dir = tempfile::tempdir().unwrap();
    assert_clean_failure(
        &write_temp(dir.path(), "empty.h5", b""),
        "the file is empty",
    );
}

#[test]
fn random_bytes() {
    let dir = tempfile::tempdir().unwrap();
    // A fixed xorshift stream: the same "random" file on every run.
    let mut x = 0x2545_f491_4f6c_dd1du64;
    let bytes: Vec<u8> = (0..4096)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect();
    assert_clean_failure(
        &write_temp(dir.path(), "random.h5", &bytes),
        "not a Keras weight file or safetensors file",
    );
}

#[test]
fn text_file_named_h5() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), "notes.h5", b"these are my notes, not a model\n");
    assert_clean_failure(&path, "plain text");
}

#[test]
fn zip_archive_is_named_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(
        dir.path(),
        "model.h5",
        b"PK\x03\x04\x14\x00\x00\x00rest of a zip",
    );
    assert_clean_failure(&path, "zip archive");
}

#[test]
fn hdf5_file_that_is_not_keras() {
    assert_clean_failure(
        &fixture("not_keras.h5"),
        "an HDF5 file, but not a Keras weight file",
    );
}

#[test]
fn truncated_copies_of_a_fixture() {
    let original = std::fs::read(fixture("tiny_efficientdet_full.h5")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for fraction in [0.001, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99] {
        let len = (original.len() as f64 * fraction) as usize;
        let path = write_temp(dir.path(), &format!("cut_{len}.h5"), &original[..len]);
        let out_dir = tempfile::tempdir().unwrap();
        let output = out_dir.path().join("out.safetensors");
        let out = run(&[
            "convert",
            path.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "cut at {len}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{err}");
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert!(err.contains("truncated"), "{err}");
        assert_eq!(std::fs::read_dir(out_dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn truncated_safetensors_file() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("full.safetensors");
    let fixture = fixture("classic_conv2d_full.h5");
    let out = run(&[
        "convert",
        fixture.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success());
    let bytes = std::fs::read(&output).unwrap();
    let cut = write_temp(dir.path(), "cut.safetensors", &bytes[..bytes.len() - 10]);
    let out = run(&["inspect", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("truncated"), "{}", stderr(&out));
}

#[test]
fn existing_output_is_kept_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let output = write_temp(dir.path(), "out.safetensors", b"precious");
    let input = fixture("classic_conv2d_full.h5");
    let args = [
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    let out = run(&args);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("output exists already"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert!(err.contains(&output.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&output).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);

    let out = run(&[args.as_slice(), &["--force"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_ne!(std::fs::read(&output).unwrap(), b"precious");
}

#[test]
fn a_folder_in_the_way_of_a_forced_output_is_named_as_the_cause() {
    // --force replaces files, not folders. `-o` naming a folder writes into
    // it, as `cp` does; a folder where that file would go is refused by name
    // instead of suggesting --force, and left as it was.
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out");
    let in_the_way = output.join("classic_conv2d_full.safetensors");
    std::fs::create_dir_all(in_the_way.join("inside")).unwrap();
    let input = fixture("classic_conv2d_full.h5");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--force",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}: refused: the output is a folder",
            in_the_way.display()
        )),
        "{err}"
    );
    assert!(!err.contains("output exists already"), "{err}");
    assert!(in_the_way.join("inside").is_dir());
    // No temporary file is left beside it.
    assert_eq!(std::fs::read_dir(&output).unwrap().count(), 1);
}

#[test]
fn default_output_sits_beside_the_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.h5");
    std::fs::copy(fixture("classic_separable_weights.h5"), &input).unwrap();
    let out = run(&["convert", input.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(dir.path().join("model.safetensors").exists());
    assert!(stdout(&out).contains("3 tensors"), "{}", stdout(&out));
}

#[test]
fn missing_file_and_usage_errors() {
    let out = run(&["convert", "/no/such/file.h5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("/no/such/file.h5"));

    let out = run(&["convert"]);
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
    let out = run(&["frobnicate"]);
    assert_eq!(out.status.code(), Some(2));
}

fn layout_fixture(name: &str) -> PathBuf {
    fixtures_dir().join("malicious").join(name)
}

/// HDF5 types whose bits are not laid out the standard way (written with
/// h5py, which decodes them right): copying their bytes would give other
/// values, so they are refused, naming the weight and what is non-standard.
#[test]
fn float_of_precision_16_in_4_bytes_is_refused() {
    // Keras writes version 1 object headers; `_v2` has version 2 ones.
    for name in [
        "layout_float16_in_4_bytes.h5",
        "layout_float16_in_4_bytes_v2.h5",
    ] {
        assert_clean_failure(
            &layout_fixture(name),
            "weight `dense/kernel:0` has a non-standard float layout (precision 16 in 4 bytes), \
             which would be copied as wrong values",
        );
    }
}

#[test]
fn int32_of_precision_12_at_bit_offset_8_is_refused() {
    assert_clean_failure(
        &layout_fixture("layout_int32_precision12_offset8.h5"),
        "weight `counter/count:0` has a non-standard integer layout \
         (precision 12 at bit offset 8 in 4 bytes), which would be copied as wrong values",
    );
}

#[test]
fn bool_enum_with_false_1_and_true_0_is_refused() {
    assert_clean_failure(
        &layout_fixture("layout_bool_flipped.h5"),
        "weight `mask/flags:0` has a non-standard bool enum (FALSE=1, TRUE=0), \
         which would be copied as wrong values",
    );
}

/// The control for the refusals above: the same file layout with standard
/// types, big-endian ones among them (byte-swapped on the way), converts to
/// the values h5py wrote, with version 1 and version 2 object headers.
#[test]
fn standard_big_endian_types_convert_to_their_values() {
    for name in [
        "layout_big_endian_control.h5",
        "layout_big_endian_control_v2.h5",
    ] {
        check_big_endian_control(&layout_fixture(name));
    }
}

fn check_big_endian_control(input: &Path) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&output).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let le = |values: &[&[u8]]| values.concat();
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    let chunked: Vec<u8> = (0..15u8)
        .flat_map(|i| (f32::from(i) / 8.0 - 0.5).to_le_bytes())
        .collect();
    let expected: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = vec![
        (
            "f16_be",
            "F16",
            vec![3],
            le(&[&f16(1.5), &f16(-0.25), &f16(65504.0)]),
        ),
        (
            "f32_be",
            "F32",
            vec![2, 2],
            le(&[
                &1.0f32.to_le_bytes(),
                &(-2.5f32).to_le_bytes(),
                &3.25f32.to_le_bytes(),
                &1e-30f32.to_le_bytes(),
            ]),
        ),
        (
            "f64_be",
            "F64",
            vec![2],
            le(&[
                &std::f64::consts::PI.to_le_bytes(),
                &(-1e300f64).to_le_bytes(),
            ]),
        ),
        (
            "i16_be",
            "I16",
            vec![3],
            le(&[
                &i16::MIN.to_le_bytes(),
                &1i16.to_le_bytes(),
                &i16::MAX.to_le_bytes(),
            ]),
        ),
        (
            "i32_be",
            "I32",
            vec![6],
            [-7i32, 0, 5, 100, -2000, 2047]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        (
            "u64_be",
            "U64",
            vec![3],
            [1u64, (1 << 63) + 5, u64::MAX]
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        ),
        ("chunked_f32_be", "F32", vec![3, 5], chunked),
        ("bool", "BOOL", vec![3], vec![1, 0, 1]),
        (
            "f32_le",
            "F32",
            vec![2],
            le(&[&0.5f32.to_le_bytes(), &(-1.25f32).to_le_bytes()]),
        ),
    ];
    assert_eq!(file.len(), expected.len(), "{:?}", file.names());
    for (name, dtype, shape, data) in expected {
        let tensor = file.tensor(&format!("big_endian/{name}")).unwrap();
        let at = format!("{}: {name}", input.display());
        assert_eq!(format!("{:?}", tensor.dtype()), dtype, "{at}");
        assert_eq!(tensor.shape(), shape.as_slice(), "{at}");
        assert_eq!(tensor.data(), data.as_slice(), "{at}");
    }
}

#[test]
fn a_plan_whose_sizes_disagree_with_the_stored_data_writes_nothing() {
    // The writer checks each tensor's bytes against the size its header
    // gives: a planner or reader bug that got one wrong would otherwise
    // give a file whose offsets no longer match its data. Here the plan of
    // a real file is altered to claim 15 of the bias's 16 float32 values.
    use keras2safetensors::export::{self, PlanOptions, WriteOptions};
    use keras2safetensors::{dtype::Dtype, ReadOptions};
    let input = fixture("classic_conv2d_full.h5");
    let dir = tempfile::tempdir().unwrap();
    // As stored (streamed), and cast to f16 (built in memory).
    for (dtype, element) in [(None, 4), (Some(Dtype::F16), 2)] {
        let mut model = keras2safetensors::open(&input, &ReadOptions::default()).unwrap();
        let options = PlanOptions {
            dtype,
            ..Default::default()
        };
        let mut plan = export::plan(&mut model, &input, &options).unwrap();
        let bias = plan
            .tensors
            .iter_mut()
            .find(|t| t.name == "conv2d/bias")
            .unwrap();
        assert_eq!((&*bias.shape, bias.byte_len), (&[16][..], 16 * element));
        bias.shape = std::sync::Arc::new([15]);
        bias.byte_len = 15 * element;
        let output = dir.path().join("out.safetensors");
        let err = export::write(
            &plan,
            &model,
            &output,
            &WriteOptions::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        let want = format!(
            "gave {} bytes where its shape needs {}",
            16 * element,
            15 * element
        );
        assert!(err.contains("conv2d/bias") && err.contains(&want), "{err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}

#[test]
fn a_file_one_byte_short_is_named_cut_short_and_one_with_bytes_after_its_end_converts() {
    // The superblock records the file's end: one byte missing is found
    // before any weight is read, with both sizes in the message.
    let dir = tempfile::tempdir().unwrap();
    let original = std::fs::read(fixture("classic_conv2d_full.h5")).unwrap();
    let len = original.len();
    let cut = write_temp(dir.path(), "cut.h5", &original[..len - 1]);
    let output = dir.path().join("out.safetensors");
    let out = run(&[
        "convert",
        cut.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let want = format!("it has {} bytes but its HDF5 header says {len}", len - 1);
    assert!(err.contains(&want), "{err}");
    assert!(!output.exists());

    // Bytes past the recorded end (padding added by a copy or a download)
    // are not part of the file: the weights are Keras's all the same.
    let mut padded = original.clone();
    padded.extend_from_slice(&[0u8; 4096]);
    let padded = write_temp(dir.path(), "padded.h5", &padded);
    let out = run(&[
        "convert",
        padded.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let expected: serde_json::Value = expected_of("classic_conv2d_full.h5");
    check_converted(&padded, &std::fs::read(&output).unwrap(), &expected);
}

#[test]
fn a_dataset_claiming_more_bytes_than_its_file_is_refused() {
    // 16 MiB of float32 in a 15 KB file, none of it written: HDF5 would
    // hand back fill values. No Keras file has such a weight, and the size
    // a crafted file claims is not allocated.
    let input = fixture("crafted/claims_more_than_the_file.h5");
    let size = std::fs::metadata(&input).unwrap().len();
    assert!(size < 16 << 20);
    assert_clean_failure(
        &input,
        &format!("dataset /conv2d/conv2d/kernel:0 claims 16777216 bytes in a {size}-byte file"),
    );
}

#[test]
fn a_weight_stored_in_an_external_file_is_refused() {
    // HDF5 external storage names a raw file by path: reading it could
    // read any file on the machine. Keras never writes it.
    assert_clean_failure(
        &fixture("crafted/external_storage.h5"),
        "dataset /conv2d/conv2d/kernel:0 keeps its data in an external file",
    );
}

#[test]
fn a_weight_whose_storage_is_smaller_than_its_shape_is_refused() {
    // The kernel's layout message (version 3, contiguous: address, size)
    // is edited to give 4 bytes fewer than its (5, 5, 3, 16) float32 need:
    // reading the full shape would take 4 bytes that are not the kernel's.
    let source = fixture("classic_conv2d_weights.h5");
    let dataset = "/conv2d/conv2d/kernel:0";
    let model =
        keras2safetensors::open(&source, &keras2safetensors::ReadOptions::default()).unwrap();
    let kernel = model
        .layers
        .iter()
        .flat_map(|l| &l.weights)
        .find(|w| w.dataset == dataset)
        .expect("the kernel is read");
    let range = kernel
        .location
        .contiguous_range()
        .expect("Keras stores the kernel contiguously");
    let (offset, len) = (range.start, range.end - range.start);
    assert_eq!(len, 5 * 5 * 3 * 16 * 4);
    let mut bytes = std::fs::read(&source).unwrap();
    let message: Vec<u8> = [&[3u8, 1][..], &offset.to_le_bytes(), &len.to_le_bytes()].concat();
    let at: Vec<usize> = (0..bytes.len() - message.len())
        .filter(|&i| bytes[i..i + message.len()] == message[..])
        .collect();
    assert_eq!(at.len(), 1, "the layout message is found once");
    let size_at = at[0] + 10;
    bytes[size_at..size_at + 8].copy_from_slice(&(len - 4).to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let input = write_temp(dir.path(), "short_layout.h5", &bytes);
    assert_clean_convert_failure(
        &input,
        &format!(
            "dataset {dataset} stores {} bytes but its shape needs {len}",
            len - 4
        ),
    );
}

#[test]
fn enums_other_than_numpy_bool_are_refused_not_read_as_bool() {
    // h5py stores numpy bool as an int8 enum of exactly FALSE and TRUE;
    // any other enum is no safetensors dtype, whatever its base.
    for name in [
        "crafted/enum_three_members.h5",
        "crafted/enum_without_true.h5",
    ] {
        assert_clean_failure(
            &fixture(name),
            "weight `conv2d/bias:0` has element type enum, which safetensors cannot hold",
        );
    }
}

#[test]
fn weights_that_read_the_same_or_overlapping_bytes_are_refused() {
    // The bias's layout message (version 3, contiguous: address, size) is
    // edited to point into the kernel's bytes: at its first byte (what two
    // hard links to one dataset give), 4 bytes in (overlapping ranges),
    // and just past its last byte (adjacent ranges, which is no overlap).
    let source = fixture("classic_conv2d_weights.h5");
    let model =
        keras2safetensors::open(&source, &keras2safetensors::ReadOptions::default()).unwrap();
    let contiguous = |dataset: &str| {
        let range = model
            .layers
            .iter()
            .flat_map(|l| &l.weights)
            .find(|w| w.dataset == dataset)
            .and_then(|w| w.location.contiguous_range())
            .unwrap_or_else(|| panic!("Keras stores {dataset} contiguously"));
        (range.start, range.end - range.start)
    };
    let (kernel, kernel_len) = contiguous("/conv2d/conv2d/kernel:0");
    let (bias, bias_len) = contiguous("/conv2d/conv2d/bias:0");
    let bytes = std::fs::read(&source).unwrap();
    let message: Vec<u8> = [&[3u8, 1][..], &bias.to_le_bytes(), &bias_len.to_le_bytes()].concat();
    let at: Vec<usize> = (0..bytes.len() - message.len())
        .filter(|&i| bytes[i..i + message.len()] == message[..])
        .collect();
    assert_eq!(at.len(), 1, "the layout message is found once");
    let moved = |address: u64| {
        let mut b = bytes.clone();
        b[at[0] + 2..at[0] + 10].copy_from_slice(&address.to_le_bytes());
        b
    };
    let dir = tempfile::tempdir().unwrap();
    // Named in the order of their first byte, then of their last.
    assert_clean_failure(
        &write_temp(dir.path(), "same_bytes.h5", &moved(kernel)),
        "weights `/conv2d/conv2d/bias:0` and `/conv2d/conv2d/kernel:0` are one dataset \
         (hard links) or read the same bytes",
    );
    assert_clean_failure(
        &write_temp(dir.path(), "overlapping.h5", &moved(kernel + 4)),
        "weights `/conv2d/conv2d/kernel:0` and `/conv2d/conv2d/bias:0` read overlapping bytes \
         of the file",
    );
    let adjacent = write_temp(dir.path(), "adjacent.h5", &moved(kernel + kernel_len));
    let output = dir.path().join("out.safetensors");
    let out = run(&[
        "convert",
        adjacent.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}
