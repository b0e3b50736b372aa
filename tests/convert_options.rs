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
    let (plain, half, brain) = (tensors(&plain), tensors(&half), tensors(&brain));
    assert_eq!(plain.len(), half.len());
    for (name, (dtype, shape, bytes)) in &plain {
        let (h_dtype, h_shape, h_bytes) = &half[name];
        assert_eq!(shape, h_shape, "{name}");
        match dtype.as_str() {
            "F64" => {
                assert_eq!(h_dtype, "F16", "{name}");
                for (v, h) in bytes.chunks_exact(8).zip(h_bytes.chunks_exact(2)) {
                    let v = f64::from_le_bytes(v.try_into().unwrap());
                    assert_eq!(f16::from_le_bytes([h[0], h[1]]), f16::from_f64(v), "{name}");
                }
            }
            "F32" => {
                assert_eq!(h_dtype, "F16", "{name}");
                let (_, _, b_bytes) = &brain[name];
                for ((v, h), b) in bytes
                    .chunks_exact(4)
                    .zip(h_bytes.chunks_exact(2))
                    .zip(b_bytes.chunks_exact(2))
                {
                    let v = f32::from_le_bytes(v.try_into().unwrap());
                    assert_eq!(f16::from_le_bytes([h[0], h[1]]), f16::from_f32(v), "{name}");
                    assert_eq!(
                        bf16::from_le_bytes([b[0], b[1]]),
                        bf16::from_f32(v),
                        "{name}"
                    );
                }
            }
            "F16" => assert_eq!((h_dtype, h_bytes), (dtype, bytes), "{name}: already f16"),
            _ => assert_eq!(
                (h_dtype, h_bytes),
                (dtype, bytes),
                "{name}: integers are not cast"
            ),
        }
    }
    let meta =
        SafeTensors::read_metadata(&std::fs::read(dir.path().join("half.safetensors")).unwrap())
            .unwrap()
            .1;
    assert_eq!(meta.metadata().as_ref().unwrap()["dtype"], "float16");
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
    let count = files.len();
    assert!(count >= 4, "{files:?}");
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
    // Greedy in name order: every shard's names come after the previous shard's.
    let mut last = String::new();
    for file in &files {
        let names: Vec<String> = tensors(&sharded.join(file)).into_keys().collect();
        assert!(names.first().unwrap() > &last, "{file}");
        last = names.last().unwrap().clone();
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
}
