//! `convert`'s output options: casts, renaming, selection, dry runs and
//! Hugging Face shards.

mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use half::{bf16, f16};
use safetensors::SafeTensors;
use serde_json::Value;

fn tensors(path: &Path) -> BTreeMap<String, (String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(n, v)| {
            (
                n,
                (
                    format!("{:?}", v.dtype()),
                    v.shape().to_vec(),
                    v.data().to_vec(),
                ),
            )
        })
        .collect()
}

fn convert(args: &[&str]) -> std::process::Output {
    let out = run(&[&["convert"], args].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

#[test]
fn floats_are_cast_to_nearest_and_integers_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("dtypes_full.h5");
    let plain = dir.path().join("plain.safetensors");
    let half = dir.path().join("half.safetensors");
    let brain = dir.path().join("brain.safetensors");
    convert(&[input.to_str().unwrap(), "-o", plain.to_str().unwrap()]);
    convert(&[
        input.to_str().unwrap(),
        "-o",
        half.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    convert(&[
        input.to_str().unwrap(),
        "-o",
        brain.to_str().unwrap(),
        "--dtype",
        "bf16",
    ]);
    // The uncast file is Keras's own values, so the casts below start from
    // them, not from the tool's reading of the file.
    let expected: Value = expected_of("dtypes_full.h5");
    check_converted(&input, &std::fs::read(&plain).unwrap(), &expected);
    let (plain, half, brain) = (tensors(&plain), tensors(&half), tensors(&brain));
    let names = |m: &BTreeMap<String, _>| m.keys().cloned().collect::<Vec<_>>();
    assert_eq!(names(&half), names(&plain));
    assert_eq!(names(&brain), names(&plain));
    // Each float as f64 (exact for every float dtype), or None for integers.
    let floats = |dtype: &str, bytes: &[u8]| -> Option<Vec<f64>> {
        match dtype {
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
            "F16" => Some(
                bytes
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f64())
                    .collect(),
            ),
            _ => None,
        }
    };
    let mut cast_tensors = 0;
    for (name, (dtype, shape, bytes)) in &plain {
        let (h_dtype, h_shape, h_bytes) = &half[name];
        let (b_dtype, b_shape, b_bytes) = &brain[name];
        assert_eq!(h_shape, shape, "{name}");
        assert_eq!(b_shape, shape, "{name}");
        let Some(values) = floats(dtype, bytes) else {
            assert_eq!(
                (h_dtype, h_bytes),
                (dtype, bytes),
                "{name}: integers are not cast"
            );
            assert_eq!(
                (b_dtype, b_bytes),
                (dtype, bytes),
                "{name}: integers are not cast"
            );
            continue;
        };
        // Each value is rounded once, from its own precision, to nearest even.
        let want_half: Vec<u8> = values
            .iter()
            .flat_map(|&v| f16::from_f64(v).to_le_bytes())
            .collect();
        let want_brain: Vec<u8> = values
            .iter()
            .flat_map(|&v| bf16::from_f64(v).to_le_bytes())
            .collect();
        assert_eq!(
            (h_dtype.as_str(), h_bytes),
            ("F16", &want_half),
            "{name}: f16 cast"
        );
        assert_eq!(
            (b_dtype.as_str(), b_bytes),
            ("BF16", &want_brain),
            "{name}: bf16 cast"
        );
        if !values.is_empty() && dtype != "F16" {
            cast_tensors += 1;
        }
    }
    assert!(
        cast_tensors >= 6,
        "float64 and float32 tensors with values: {cast_tensors}"
    );
    for (file, dtype) in [("half", "float16"), ("brain", "bfloat16")] {
        let bytes = std::fs::read(dir.path().join(format!("{file}.safetensors"))).unwrap();
        let meta = SafeTensors::read_metadata(&bytes).unwrap().1;
        assert_eq!(meta.metadata().as_ref().unwrap()["dtype"], dtype, "{file}");
    }
}

#[test]
fn casting_to_f32_rounds_float64_once_and_widens_float16_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("dtypes_full.h5");
    let plain = dir.path().join("plain.safetensors");
    let single = dir.path().join("single.safetensors");
    convert(&[input.to_str().unwrap(), "-o", plain.to_str().unwrap()]);
    convert(&[
        input.to_str().unwrap(),
        "-o",
        single.to_str().unwrap(),
        "--dtype",
        "f32",
    ]);
    // The uncast file is Keras's own values (checked against Keras's hashes),
    // so the expected f32 bytes come from those, by IEEE rounding.
    let expected: Value = expected_of("dtypes_full.h5");
    check_converted(&input, &std::fs::read(&plain).unwrap(), &expected);
    let (plain, single) = (tensors(&plain), tensors(&single));
    assert_eq!(
        single.keys().collect::<Vec<_>>(),
        plain.keys().collect::<Vec<_>>()
    );
    let mut cast = BTreeMap::new();
    for (name, (dtype, shape, bytes)) in &plain {
        let (s_dtype, s_shape, s_bytes) = &single[name];
        assert_eq!(s_shape, shape, "{name}");
        let want: Vec<u8> = match dtype.as_str() {
            // Round to nearest even, once: what numpy's astype(float32) does.
            "F64" => bytes
                .chunks_exact(8)
                .flat_map(|c| (f64::from_le_bytes(c.try_into().unwrap()) as f32).to_le_bytes())
                .collect(),
            // Every float16 is exactly a float32.
            "F16" => bytes
                .chunks_exact(2)
                .flat_map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes())
                .collect(),
            _ => {
                assert_eq!((s_dtype, s_bytes), (dtype, bytes), "{name}: not cast");
                continue;
            }
        };
        assert_eq!((s_dtype.as_str(), s_bytes), ("F32", &want), "{name}");
        if !bytes.is_empty() {
            *cast.entry(dtype.clone()).or_insert(0) += 1;
        }
    }
    // dtypes_full has a float64 weight and a float64 and a float16 Dense.
    assert!(
        cast.get("F64").is_some_and(|&n| n >= 3) && cast.get("F16").is_some_and(|&n| n >= 2),
        "tensors cast: {cast:?}"
    );
}

#[test]
fn a_value_too_large_for_float16_becomes_infinite_with_a_warning() {
    // Keras's own kernel, with its first value replaced in the file by 1e6
    // (above float16's largest, 65504): the bytes are found by their
    // content, which the uncast conversion checks against Keras's sha256.
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("classic_conv2d_full.h5");
    let plain = dir.path().join("plain.safetensors");
    convert(&[input.to_str().unwrap(), "-o", plain.to_str().unwrap()]);
    let expected: Value = expected_of("classic_conv2d_full.h5");
    check_converted(&input, &std::fs::read(&plain).unwrap(), &expected);
    let (dtype, _, kernel) = tensors(&plain).remove("conv2d/kernel").unwrap();
    assert_eq!(dtype, "F32");
    let mut file = std::fs::read(&input).unwrap();
    let at: Vec<usize> = (0..=file.len() - kernel.len())
        .filter(|&i| file[i..i + kernel.len()] == kernel[..])
        .collect();
    assert_eq!(at.len(), 1, "the kernel's bytes are in the file once");
    file[at[0]..at[0] + 4].copy_from_slice(&1e6f32.to_le_bytes());
    let patched = dir.path().join("patched.h5");
    std::fs::write(&patched, &file).unwrap();

    let half = dir.path().join("half.safetensors");
    let out = convert(&[
        patched.to_str().unwrap(),
        "-o",
        half.to_str().unwrap(),
        "--dtype",
        "f16",
    ]);
    let err = stderr(&out);
    assert!(
        err.contains("tensor `conv2d/kernel`: 1 values too large for float16 became infinite"),
        "{err}"
    );
    assert_eq!(
        err.matches("too large").count(),
        1,
        "only the kernel: {err}"
    );
    let (dtype, _, bytes) = tensors(&half).remove("conv2d/kernel").unwrap();
    assert_eq!(dtype, "F16");
    let want: Vec<u8> = std::iter::once(f16::INFINITY)
        .chain(
            kernel[4..]
                .chunks_exact(4)
                .map(|c| f16::from_f32(f32::from_le_bytes(c.try_into().unwrap()))),
        )
        .flat_map(f16::to_le_bytes)
        .collect();
    assert_eq!(bytes, want);
}

#[test]
fn rename_include_exclude_and_dry_run() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(
        &rules,
        "# match timm's EfficientDet names\n^efficientnet_tiny\\. => backbone.\n(\\w+)_bn\\. => $1.bn.\n",
    )
    .unwrap();
    let input = fixture("tiny_efficientdet_full.h5");
    let out = convert(&[
        input.to_str().unwrap(),
        "--layout",
        "pytorch",
        "--rename",
        rules.to_str().unwrap(),
        "--include",
        "^backbone\\.",
        "--exclude",
        "se_",
        "--dry-run",
    ]);
    let text = stdout(&out);
    assert!(
        text.contains("efficientnet_tiny/stem_bn/moving_variance -> backbone.stem.bn.running_var  (8,)  F32\n"),
        "{text}"
    );
    assert!(text.lines().all(|l| l.contains("-> backbone.")), "{text}");
    assert!(!text.contains("se_reduce"), "{text}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        1,
        "a dry run writes nothing"
    );

    let clash = dir.path().join("clash.txt");
    std::fs::write(&clash, "\\.(weight|bias)$ => .param\n").unwrap();
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "--layout",
        "pytorch",
        "--rename",
        clash.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("would both be named"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn shards_follow_the_hugging_face_convention() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny_efficientdet_full.h5");
    let single = dir.path().join("single.safetensors");
    convert(&[input.to_str().unwrap(), "-o", single.to_str().unwrap()]);
    let expected: Value = expected_of("tiny_efficientdet_full.h5");
    check_converted(&input, &std::fs::read(&single).unwrap(), &expected);
    let all = tensors(&single);

    let sharded = dir.path().join("sharded");
    convert(&[
        input.to_str().unwrap(),
        "-o",
        sharded.to_str().unwrap(),
        "--max-shard-size",
        "4KB",
    ]);
    let index: Value = serde_json::from_str(
        &std::fs::read_to_string(sharded.join("model.safetensors.index.json")).unwrap(),
    )
    .unwrap();
    let total: u64 = all.values().map(|(_, _, b)| b.len() as u64).sum();
    assert_eq!(index["metadata"]["total_size"], total);
    let weight_map = index["weight_map"].as_object().unwrap();
    assert_eq!(weight_map.len(), all.len());
    let mut files: Vec<String> = std::fs::read_dir(&sharded)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    // Hugging Face's packing, from the tensor sizes alone: names in order, a
    // new shard when the next tensor would pass 4000 bytes.
    let mut groups: Vec<Vec<String>> = Vec::new();
    let mut size = 0;
    for (name, (_, _, bytes)) in &all {
        match groups.last_mut() {
            Some(group) if size + bytes.len() <= 4000 => group.push(name.clone()),
            _ => {
                groups.push(vec![name.clone()]);
                size = 0;
            }
        }
        size += bytes.len();
    }
    let count = files.len();
    assert_eq!(count, groups.len(), "{files:?}");
    assert!(
        count >= 4,
        "the fixture must need several shards: {files:?}"
    );
    for (i, file) in files.iter().enumerate() {
        assert_eq!(
            file,
            &format!("model-{:05}-of-{count:05}.safetensors", i + 1)
        );
        let shard = tensors(&sharded.join(file));
        let size: u64 = shard.values().map(|(_, _, b)| b.len() as u64).sum();
        assert!(
            size <= 4000 || shard.len() == 1,
            "{file} holds {size} bytes"
        );
        for (name, tensor) in shard {
            assert_eq!(weight_map[&name], file.as_str());
            assert_eq!(all[&name], tensor, "{name}");
        }
    }
    for (file, group) in files.iter().zip(&groups) {
        let names: Vec<String> = tensors(&sharded.join(file)).into_keys().collect();
        assert_eq!(&names, group, "{file}");
    }

    let one = dir.path().join("one");
    convert(&[
        input.to_str().unwrap(),
        "-o",
        one.to_str().unwrap(),
        "--max-shard-size",
        "5GB",
    ]);
    let entries: Vec<String> = std::fs::read_dir(&one)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(entries, ["model.safetensors"], "one shard: no index");
    assert_eq!(tensors(&one.join("model.safetensors")), all);

    let again = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        one.to_str().unwrap(),
        "--max-shard-size",
        "5GB",
    ]);
    assert_eq!(again.status.code(), Some(1));
    assert!(stderr(&again).contains("output exists already"));
}

#[test]
fn layers_without_a_pytorch_equivalent_are_written_as_stored_or_refused_with_strict() {
    // A custom layer (class DtypeZoo, no PyTorch rule).
    let input = fixture("dtypes_full.h5");
    let dry_run = |extra: &[&str]| {
        let mut args = vec![
            "convert",
            input.to_str().unwrap(),
            "--layout",
            "pytorch",
            "--dry-run",
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let out = dry_run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("warning: ")
            && stderr(&out).contains("layer `dtype_zoo` has no PyTorch layout"),
        "{}",
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("dtype_zoo/w_float64 -> dtype_zoo.w_float64"),
        "as stored, under its Keras label: {}",
        stdout(&out)
    );

    let out = dry_run(&["--strict"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("layer `dtype_zoo` cannot be written in PyTorch layout"),
        "{err}"
    );
    assert!(err.contains("--skip dtype_zoo"), "{err}");

    let out = dry_run(&["--strict", "--skip", "dtype_zoo"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("dtype_zoo"));
    assert!(stderr(&out).contains("layer `dtype_zoo` skipped"));

    // A name that is no layer of the model is refused, not ignored, for
    // --skip and for --class alike.
    for extra in [["--skip", "dtype_zo"], ["--class", "dtype_zo=Dense"]] {
        let out = dry_run(&extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(
            stderr(&out).contains("names `dtype_zo`, which is no layer of this model"),
            "{extra:?}: {}",
            stderr(&out)
        );
    }
}

#[test]
fn a_time_distributed_dense_is_written_as_the_dense_it_wraps() {
    // TimeDistributed(Dense(6)) on 8 features: torch.nn.Linear holds the
    // kernel transposed, (6, 8), and the bias as Keras does.
    let input = fixture("text_model_full.h5");
    let expected: Value = expected_of("text_model_full.h5");
    let sha = |name: &str| {
        expected_weights(&expected)
            .into_iter()
            .find(|w| w["name"] == name)
            .unwrap()["sha256"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let dir = tempfile::tempdir().unwrap();
    let keras_out = dir.path().join("keras.safetensors");
    let torch_out = dir.path().join("torch.safetensors");
    let input = input.to_str().unwrap();
    convert(&[input, "-o", keras_out.to_str().unwrap()]);
    convert(&[
        input,
        "-o",
        torch_out.to_str().unwrap(),
        "--layout",
        "pytorch",
    ]);
    let (keras, torch) = (tensors(&keras_out), tensors(&torch_out));
    let (_, shape, kernel) = &keras["time_distributed/kernel"];
    assert_eq!(shape, &[8, 6]);
    assert_eq!(sha256_hex(kernel), sha("time_distributed/kernel"));
    let (_, shape, weight) = &torch["time_distributed.weight"];
    assert_eq!(shape, &[6, 8]);
    for o in 0..6 {
        for i in 0..8 {
            assert_eq!(
                weight[(o * 8 + i) * 4..][..4],
                kernel[(i * 6 + o) * 4..][..4],
                "weight[{o}, {i}] is kernel[{i}, {o}]"
            );
        }
    }
    let (_, _, bias) = &torch["time_distributed.bias"];
    assert_eq!(sha256_hex(bias), sha("time_distributed/bias"));
}
