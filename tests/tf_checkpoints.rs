//! TensorFlow checkpoints and tf-keras SavedModels (fixtures in
//! `fixtures/tf/`, written by `fixtures/generate_tf.py`, and
//! `fixtures/subclassed_effdet_ckpt/`): every form converts bit-exactly
//! against the sha256 TensorFlow computed from the live variables, with the
//! names the HDF5 path gives the same model; damage is one clean error.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;
use safetensors::SafeTensors;
use serde_json::Value;

fn expected(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("tf/{name}"))).unwrap()).unwrap()
}

/// Converts `input` with extra arguments; returns the output's bytes.
fn convert(input: &Path, extra: &[&str]) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let mut args = vec![
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let out = run(&args);
    assert!(
        out.status.success(),
        "{}: {}",
        input.display(),
        stderr(&out)
    );
    std::fs::read(&output).unwrap()
}

/// name -> (dtype, shape, sha256) of a converted file.
fn tensors(bytes: &[u8]) -> BTreeMap<String, (String, Vec<usize>, String)> {
    let st = SafeTensors::deserialize(bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, t)| {
            (
                name,
                (
                    format!("{:?}", t.dtype()),
                    t.shape().to_vec(),
                    sha256_hex(t.data()),
                ),
            )
        })
        .collect()
}

/// The expected tensors of a Keras fixture, named by `field` (`name`: the
/// HDF5 naming; `tf_name`: what a checkpoint without a config knows).
fn keras_tensors(expected: &Value, field: &str) -> BTreeMap<String, (String, Vec<usize>, String)> {
    expected["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["weights"].as_array().unwrap())
        .map(|w| (w[field].as_str().unwrap().to_string(), value_of(w)))
        .collect()
}

fn value_of(w: &Value) -> (String, Vec<usize>, String) {
    (
        safetensors_dtype(w["dtype"].as_str().unwrap()).to_string(),
        w["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect(),
        w["sha256"].as_str().unwrap().to_string(),
    )
}

/// The `variables` of an expected JSON by one of their fields (`path`,
/// `full_name`): (dtype, shape, sha256).
fn variables_by(expected: &Value, key: &str) -> BTreeMap<String, (String, Vec<usize>, String)> {
    expected["variables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v[key].as_str().unwrap().to_string(), value_of(v)))
        .collect()
}

fn metadata(bytes: &[u8]) -> BTreeMap<String, String> {
    let (_, meta) = SafeTensors::read_metadata(bytes).unwrap();
    meta.metadata()
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect()
}

#[test]
fn object_based_checkpoint_is_named_by_variable_names() {
    let exp = expected("functional.expected.json");
    let ckpt = fixture("tf/functional_ckpt/ckpt");
    let out = convert(&ckpt, &[]);
    assert_eq!(tensors(&out), keras_tensors(&exp, "tf_name"));
    let meta = metadata(&out);
    assert_eq!(meta["source_format"], "tf-checkpoint");
    // The model JSON adds the sub-model's name: the names of the .h5 file.
    let config = fixture("tf/functional.config.json");
    let with_config = convert(&ckpt, &["--config", config.to_str().unwrap()]);
    assert_eq!(tensors(&with_config), keras_tensors(&exp, "name"));
    assert!(metadata(&with_config)["layer_classes"]
        .contains("\"backbone/stem_bn\":\"BatchNormalization\""));
}

/// Keras 3's `model.export()` writes a SavedModel with no Keras metadata
/// that saves every variable twice (`variables/<i>` and `_all_variables/<i>`,
/// one full name): each is written once, under its variable path, with
/// Keras's value, and each second copy is reported (it was refused as two
/// weights of one name).
#[test]
fn a_keras_3_export_writes_each_variable_once() {
    let values: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("k3_export.values.json")).unwrap())
            .unwrap();
    let want = variables_by(&values, "path");
    assert_eq!(want.len(), 8);
    assert_eq!(tensors(&convert(&fixture("k3_export"), &[])), want);
    let dry = run(&[
        "convert",
        fixture("k3_export").to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(
        stderr(&dry).contains("8 x the same variable saved again under another path"),
        "{}",
        stderr(&dry)
    );
}

/// Two `tf.Module`s that each make `tf.Variable(name="w")`: TF2 saves two
/// different variables named `w` (it was refused as two weights of one
/// name). Each is named by its object path, with TensorFlow's value, and a
/// note says why; a variable tracked twice is saved and written once.
#[test]
fn variables_of_one_name_are_named_by_their_object_path() {
    let want = variables_by(&expected("same_names.expected.json"), "path");
    assert_eq!(want.len(), 3);
    let input = fixture("tf/same_names_ckpt");
    assert_eq!(tensors(&convert(&input, &[])), want);
    let dry = run(&["convert", input.to_str().unwrap(), "--dry-run"]);
    assert!(
        stderr(&dry).contains("2 variables share their name with a different variable"),
        "{}",
        stderr(&dry)
    );
}

/// Layer names holding `/` (tf-keras's MobileNetV3 has `Conv` beside
/// `Conv/BatchNorm`, also inside a nested model) in a SavedModel: each
/// weight goes to the longest layer name the metadata knows, so the names
/// are the `.h5`'s (the BatchNorm's arrays were named `Conv/gamma`, ...).
#[test]
fn saved_model_layer_names_with_slashes_keep_their_layers() {
    let exp = expected("slash.expected.json");
    let out = convert(&fixture("tf/slash_savedmodel"), &[]);
    let want = keras_tensors(&exp, "name");
    assert!(
        want.contains_key("backbone/Conv/BatchNorm/gamma"),
        "{want:?}"
    );
    assert_eq!(tensors(&out), want);
}

#[test]
fn the_same_model_as_h5_and_checkpoint_gives_the_same_tensors() {
    let exp = expected("functional.expected.json");
    let h5 = convert(&fixture("tf/functional_weights.h5"), &[]);
    assert_eq!(tensors(&h5), keras_tensors(&exp, "name"));
    let config = fixture("tf/functional.config.json");
    let ckpt = convert(
        &fixture("tf/functional_ckpt/ckpt"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(tensors(&ckpt), tensors(&h5));
    // Bidirectional(LSTM): the cell scaffolding is dropped from all three.
    let text = expected("text.expected.json");
    let h5 = convert(&fixture("tf/text_weights.h5"), &[]);
    let ckpt = convert(&fixture("tf/text_ckpt/ckpt"), &[]);
    let saved = convert(&fixture("tf/text_savedmodel"), &[]);
    assert_eq!(tensors(&h5), keras_tensors(&text, "name"));
    assert_eq!(tensors(&ckpt), tensors(&h5));
    assert_eq!(tensors(&saved), tensors(&h5));
    // Trained with the new Adam instead: other values, the same names.
    let text_adam = expected("text_adam.expected.json");
    let ckpt = tensors(&convert(&fixture("tf/text_adam_ckpt"), &[]));
    assert_eq!(ckpt, keras_tensors(&text_adam, "name"));
    assert_eq!(
        ckpt.keys().collect::<Vec<_>>(),
        tensors(&h5).keys().collect::<Vec<_>>()
    );
    assert_ne!(ckpt, tensors(&h5));
    // A subclassed model (automl EfficientDet naming): no sub-model to lose.
    let effdet: Value = expected_of("subclassed_effdet_weights.h5");
    let h5 = convert(&fixture("subclassed_effdet_weights.h5"), &[]);
    let ckpt = convert(&fixture("subclassed_effdet_ckpt/ckpt"), &[]);
    assert_eq!(tensors(&ckpt), keras_tensors(&effdet, "name"));
    assert_eq!(tensors(&ckpt), tensors(&h5));
}

#[test]
fn saved_model_names_and_classes_come_from_keras_metadata() {
    let exp = expected("functional.expected.json");
    let out = convert(&fixture("tf/functional_savedmodel"), &[]);
    assert_eq!(tensors(&out), keras_tensors(&exp, "name"));
    let meta = metadata(&out);
    assert_eq!(meta["source_format"], "keras-savedmodel");
    assert_eq!(meta["keras_version"], "2.21.0");
    assert!(meta["layer_classes"].contains("\"head_sep\":\"SeparableConv2D\""));
    // One model, not a batch: the folder gives one output file.
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("m.safetensors");
    let run_out = run(&[
        "convert",
        fixture("tf/functional_savedmodel").to_str().unwrap(),
        "-o",
        target.to_str().unwrap(),
    ]);
    assert!(run_out.status.success(), "{}", stderr(&run_out));
    assert!(target.is_file());
    let notes = stderr(&run_out);
    assert!(notes.contains("metric state"), "{notes}");
    assert!(notes.contains("optimizer state"), "{notes}");
    // The text model (saved without traces, which saved_model.pb can do
    // without): Embedding, Bidirectional(LSTM) and Dense by their classes.
    let text = expected("text.expected.json");
    let out = convert(&fixture("tf/text_savedmodel"), &[]);
    assert_eq!(tensors(&out), keras_tensors(&text, "name"));
    let classes: Value = serde_json::from_str(&metadata(&out)["layer_classes"]).unwrap();
    let want: BTreeMap<String, String> = text["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let class = l["class"].as_str().unwrap().to_string();
            (l["path"].as_str().unwrap().to_string(), class)
        })
        .collect();
    let got: BTreeMap<String, String> = classes
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("(none)").to_string()))
        .collect();
    assert_eq!(got, want);
}

/// `layer path -> class` as the converted file's metadata records it.
fn layer_classes(bytes: &[u8]) -> BTreeMap<String, Option<String>> {
    let classes: Value = serde_json::from_str(&metadata(bytes)["layer_classes"]).unwrap();
    classes
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().map(str::to_string)))
        .collect()
}

/// Each layer's class by path, as the expected JSON records them.
fn expected_classes(exp: &Value) -> BTreeMap<String, Option<String>> {
    exp["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            let class = l["class"].as_str().map(str::to_string);
            (l["path"].as_str().unwrap().to_string(), class)
        })
        .collect()
}

#[test]
fn a_subclassed_saved_model_gives_each_layer_its_class() {
    let exp = expected("subclassed.expected.json");
    assert_eq!(exp["model_name"], "tf_subclassed");
    let saved = convert(&fixture("tf/subclassed_savedmodel"), &[]);
    // Named below the model's own scope, as the HDF5 naming names layers.
    assert_eq!(tensors(&saved), keras_tensors(&exp, "name"));
    // Every layer's class, nested ones (`block_0/sep`, in a list inside a
    // list) included, from its own entry in keras_metadata.pb (the model's
    // config lists no layers).
    let want = expected_classes(&exp);
    assert!(want.contains_key("block_1/sep"), "{want:?}");
    // A functional sub-model inside: its layers under its name, as in the .h5.
    assert_eq!(want["neck/neck_conv"].as_deref(), Some("Conv2D"));
    assert_eq!(layer_classes(&saved), want);
    // The weights-only .h5 of the same model: the same tensors (its weight
    // names carry the model's scope too, `tf_subclassed/block_0/sep/...` in
    // the group `block_0`), but no class: those are guessed.
    let h5 = convert(&fixture("tf/subclassed_weights.h5"), &[]);
    assert_eq!(tensors(&h5), tensors(&saved));
    assert!(layer_classes(&h5).values().all(Option::is_none));
    // --layout pytorch from the recorded classes: Dense and Conv2D kernels
    // transposed (checked against the Keras-layout bytes), BatchNormalization
    // renamed, and each layer's config carried into pytorch_options.
    let pt = convert(
        &fixture("tf/subclassed_savedmodel"),
        &["--layout", "pytorch"],
    );
    let st = SafeTensors::deserialize(&pt).unwrap();
    let keras = SafeTensors::deserialize(&saved).unwrap();
    let kernel = keras.tensor("head/kernel").unwrap();
    let (rows, cols) = (kernel.shape()[0], kernel.shape()[1]);
    let weight = st.tensor("head.weight").unwrap();
    assert_eq!(weight.shape(), [cols, rows]);
    let k = kernel.data();
    let transposed: Vec<u8> = (0..cols)
        .flat_map(|c| {
            (0..rows).flat_map(move |r| k[(r * cols + c) * 4..(r * cols + c) * 4 + 4].to_vec())
        })
        .collect();
    assert_eq!(weight.data(), transposed.as_slice());
    for name in [
        "block_0.bn.running_mean",
        "block_1.bn.running_var",
        "stem_bn.weight",
        "block_1.sep.conv_pw.weight",
    ] {
        assert!(st.tensor(name).is_ok(), "{name}: {:?}", st.names());
    }
    let options: Value = serde_json::from_str(&metadata(&pt)["pytorch_options"]).unwrap();
    assert!(options.get("block_1.bn").is_some(), "{options}");
}

#[test]
fn optimizer_state_is_left_out_by_default_and_kept_with_the_flag() {
    for (name, ckpt) in [
        // tf-keras's new optimizer: `optimizer/_variables/<i>`.
        ("functional.expected.json", "tf/functional_ckpt/ckpt"),
        // The legacy optimizer: `<key>/.OPTIMIZER_SLOT/optimizer/m`.
        ("text.expected.json", "tf/text_ckpt/ckpt"),
        // The same two in SavedModels.
        ("functional.expected.json", "tf/functional_savedmodel"),
        ("text.expected.json", "tf/text_savedmodel"),
        // The text model with the new Adam: LSTM slots `Adam/m/bidirectional/...`.
        ("text_adam.expected.json", "tf/text_adam_ckpt/ckpt"),
    ] {
        let exp = expected(name);
        let plain = tensors(&convert(&fixture(ckpt), &[]));
        assert!(plain.keys().all(|k| !k.starts_with("optimizer/")), "{ckpt}");
        let with = tensors(&convert(&fixture(ckpt), &["--include-optimizer"]));
        let optimizer: Vec<&Value> = exp["optimizer"].as_array().unwrap().iter().collect();
        assert!(optimizer.len() > 10, "{ckpt}");
        for v in optimizer {
            let tensor = format!("optimizer/{}", v["full_name"].as_str().unwrap());
            assert_eq!(with.get(&tensor), Some(&value_of(v)), "{ckpt}: {tensor}");
        }
        for (k, v) in &plain {
            assert_eq!(with.get(k), Some(v), "{ckpt}: {k}");
        }
    }
}

#[test]
fn train_checkpoint_folder_reads_the_latest_and_skips_save_counter() {
    let exp = expected("train_checkpoint.expected.json");
    assert_eq!(exp["save_counter"], 1);
    let folder = fixture("tf/train_checkpoint");
    let out = run(&["convert", folder.to_str().unwrap(), "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("save counter"), "{}", stderr(&out));
    let from_folder = convert(&folder, &[]);
    assert_eq!(tensors(&from_folder), keras_tensors(&exp, "name"));
    // The prefix, the index file and a data shard name the same checkpoint.
    for input in [
        "tf/train_checkpoint/ckpt-1",
        "tf/train_checkpoint/ckpt-1.index",
        "tf/train_checkpoint/ckpt-1.data-00000-of-00001",
    ] {
        assert_eq!(
            tensors(&convert(&fixture(input), &[])),
            tensors(&from_folder),
            "{input}"
        );
    }
    let json = run(&["inspect", folder.to_str().unwrap(), "--json"]);
    assert!(json.status.success(), "{}", stderr(&json));
    let summary: Value = serde_json::from_slice(&json.stdout).unwrap();
    let skipped = summary["skipped"].as_array().unwrap();
    assert!(skipped
        .iter()
        .any(|s| s["dataset"] == "save_counter/.ATTRIBUTES/VARIABLE_VALUE"));
}

#[test]
fn sliced_tensors_across_shards_are_reassembled() {
    let exp = expected("sharded.expected.json");
    let shards: Vec<&str> = exp["shards"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert_eq!(
        shards,
        [
            "ckpt.data-00000-of-00004",
            "ckpt.data-00001-of-00004",
            "ckpt.data-00002-of-00004",
            "ckpt.data-00003-of-00004"
        ]
    );
    let out = convert(&fixture("tf/sharded/ckpt"), &[]);
    assert_eq!(tensors(&out), keras_tensors(&exp, "name"));
    assert_eq!(tensors(&out)["embedding/embeddings"].1, [200, 16]);
}

/// TF1 variables by name: (dtype, shape, sha256).
fn tf1_variables() -> BTreeMap<String, (String, Vec<usize>, String)> {
    variables_by(&expected("tf1.expected.json"), "full_name")
}

fn is_tf1_bookkeeping(name: &str) -> bool {
    name == "global_step"
        || name.ends_with("/Adam")
        || name.ends_with("/Adam_1")
        || name.starts_with("beta")
        || name.ends_with("/ExponentialMovingAverage")
}

#[test]
fn tf1_checkpoint_skips_bookkeeping_and_writes_f16_bf16() {
    let vars = tf1_variables();
    let expected_shards: Vec<&str> = vec![
        "model.data-00000-of-00003",
        "model.data-00001-of-00003",
        "model.data-00002-of-00003",
    ];
    assert_eq!(
        expected("tf1.expected.json")["shards"],
        serde_json::json!(expected_shards)
    );
    let model: BTreeMap<_, _> = vars
        .iter()
        .filter(|(k, _)| !is_tf1_bookkeeping(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let out = tensors(&convert(&fixture("tf/tf1/model"), &[]));
    assert_eq!(out, model);
    assert_eq!(out["box_net/box-predict/kernel_half"].0, "F16");
    assert_eq!(out["box_net/box-predict/bias_bf16"].0, "BF16");
    // The folder with its `checkpoint` file names the same checkpoint.
    assert_eq!(tensors(&convert(&fixture("tf/tf1"), &[])), model);
    let dry = run(&[
        "convert",
        fixture("tf/tf1/model").to_str().unwrap(),
        "--dry-run",
    ]);
    let notes = stderr(&dry);
    for reason in [
        "global_step",
        "ExponentialMovingAverage shadow",
        "optimizer state",
    ] {
        assert!(notes.contains(reason), "{reason}: {notes}");
    }
}

/// A folder moved after TF saved into it, as musicnn ships its
/// checkpoints: the `checkpoint` state file names an absolute folder that
/// is gone, under a prefix ending in `/` (files `.index` and
/// `.data-00000-of-00001`). The folder, and its `.index`, still read.
#[test]
fn a_moved_tf1_folder_reads_the_checkpoint_beside_its_state_file() {
    let want = variables_by(&expected("tf1_moved.expected.json"), "full_name");
    assert_eq!(want.len(), 2);
    let state = std::fs::read_to_string(fixture("tf/tf1_moved/checkpoint")).unwrap();
    let named = state.split('"').nth(1).unwrap();
    assert!(named.starts_with('/') && named.ends_with('/'), "{state}");
    assert!(!Path::new(named).exists(), "{named}");
    // TF's files for the prefix `.../run/`: an empty last part.
    assert!(fixture("tf/tf1_moved/.data-00000-of-00001").is_file());
    assert_eq!(tensors(&convert(&fixture("tf/tf1_moved"), &[])), want);
    assert_eq!(
        tensors(&convert(&fixture("tf/tf1_moved/.index"), &[])),
        want
    );
}

#[test]
fn tf1_use_ema_writes_shadows_under_the_variable_names() {
    let vars = tf1_variables();
    let out = tensors(&convert(&fixture("tf/tf1/model"), &["--use-ema"]));
    let mut shadowed = 0;
    for (name, value) in &vars {
        if is_tf1_bookkeeping(name) {
            assert!(!out.contains_key(name), "{name}");
            continue;
        }
        match vars.get(&format!("{name}/ExponentialMovingAverage")) {
            Some(shadow) => {
                shadowed += 1;
                assert_eq!(&out[name], shadow, "{name}: the shadow's values");
            }
            None => assert_eq!(&out[name], value, "{name}"),
        }
    }
    assert_eq!(shadowed, 9);
    assert_eq!(out.len(), 13);
    // Kept optimizer state: slots and beta powers, under optimizer/.
    let with = tensors(&convert(&fixture("tf/tf1/model"), &["--include-optimizer"]));
    for (name, value) in &vars {
        if name.ends_with("/Adam") || name.ends_with("/Adam_1") || name.starts_with("beta") {
            assert_eq!(
                with.get(&format!("optimizer/{name}")),
                Some(value),
                "{name}"
            );
        }
    }
}

#[test]
fn every_form_inspects_verifies_and_converts_to_pytorch_layout() {
    for input in [
        "tf/functional_ckpt/ckpt",
        "tf/functional_savedmodel",
        "tf/text_ckpt",
        "tf/text_savedmodel",
        "tf/subclassed_savedmodel",
        "tf/train_checkpoint",
        "tf/sharded/ckpt",
        "tf/tf1/model",
        "subclassed_effdet_ckpt/ckpt",
        "third_party/basic_pitch_nmp",
    ] {
        let path = fixture(input);
        let p = path.to_str().unwrap();
        let inspect = run(&["inspect", p]);
        assert!(inspect.status.success(), "{input}: {}", stderr(&inspect));
        assert!(stdout(&inspect).contains("Total params"), "{input}");
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.safetensors");
        let o = out.to_str().unwrap();
        let convert = run(&["convert", p, "-o", o, "-q"]);
        assert!(convert.status.success(), "{input}: {}", stderr(&convert));
        let verify = run(&["verify", p, o]);
        assert!(verify.status.success(), "{input}: {}", stderr(&verify));
        let diff = run(&["diff", p, o]);
        assert!(diff.status.success(), "{input}: {}", stderr(&diff));
        let manifest = dir.path().join("m.json");
        let m = run(&["manifest", p, "-o", manifest.to_str().unwrap()]);
        assert!(m.status.success(), "{input}: {}", stderr(&m));
        let pt = dir.path().join("pt.safetensors");
        let torch = run(&[
            "convert",
            p,
            "--layout",
            "pytorch",
            "-o",
            pt.to_str().unwrap(),
            "-q",
        ]);
        assert!(torch.status.success(), "{input}: {}", stderr(&torch));
    }
    // PyTorch layout of a checkpoint and of its .h5 twin agree.
    let dir = tempfile::tempdir().unwrap();
    let config = fixture("tf/functional.config.json");
    let a = dir.path().join("a.safetensors");
    let b = dir.path().join("b.safetensors");
    for (input, out, extra) in [
        (fixture("tf/functional_weights.h5"), &a, None),
        (fixture("tf/functional_ckpt/ckpt"), &b, Some(&config)),
    ] {
        let mut args = vec![
            "convert".to_string(),
            input.to_str().unwrap().into(),
            "--layout".into(),
            "pytorch".into(),
            "-o".into(),
            out.to_str().unwrap().into(),
            "-q".into(),
        ];
        if let Some(c) = extra {
            args.extend(["--config".into(), c.to_str().unwrap().into()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = run(&args);
        assert!(r.status.success(), "{}", stderr(&r));
    }
    assert_eq!(
        tensors(&std::fs::read(&a).unwrap()),
        tensors(&std::fs::read(&b).unwrap())
    );
}

/// A copy of a checkpoint's files in a fresh folder, for damaging.
fn copy_checkpoint(dir: &Path, files: &[&str]) -> PathBuf {
    for f in files {
        let from = fixture(f);
        std::fs::copy(&from, dir.join(from.file_name().unwrap())).unwrap();
    }
    dir.to_path_buf()
}

const SHARDED: &[&str] = &[
    "tf/sharded/ckpt.index",
    "tf/sharded/ckpt.data-00000-of-00004",
    "tf/sharded/ckpt.data-00001-of-00004",
    "tf/sharded/ckpt.data-00002-of-00004",
    "tf/sharded/ckpt.data-00003-of-00004",
];

#[test]
fn a_corrupted_tensor_is_refused_by_its_checksum() {
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path(), SHARDED);
    let shard = dir.path().join("ckpt.data-00001-of-00004");
    let mut bytes = std::fs::read(&shard).unwrap();
    bytes[100] ^= 0x01;
    std::fs::write(&shard, bytes).unwrap();
    // Notes about the reading come first; then one error line, naming the
    // shard, and no output.
    let out = dir.path().join("out.safetensors");
    let r = run(&[
        "convert",
        dir.path().join("ckpt").to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.status.code(), Some(1));
    let errors: Vec<String> = stderr(&r)
        .lines()
        .filter(|l| !l.starts_with("note: "))
        .map(str::to_string)
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("error: "), "{errors:?}");
    assert!(
        errors[0].contains("ckpt.data-00001-of-00004: checksum mismatch"),
        "{errors:?}"
    );
    assert!(!out.exists());
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        SHARDED.len()
    );
    // verify reads the data too.
    let good = convert(&fixture("tf/sharded/ckpt"), &[]);
    let out = dir.path().join("good.safetensors");
    std::fs::write(&out, good).unwrap();
    let verify = run(&[
        "verify",
        dir.path().join("ckpt").to_str().unwrap(),
        out.to_str().unwrap(),
    ]);
    assert_eq!(verify.status.code(), Some(1));
    assert!(
        stderr(&verify).contains("checksum mismatch"),
        "{}",
        stderr(&verify)
    );
}

#[test]
fn truncated_and_missing_files_are_clean_errors() {
    // A truncated index (every length short of the footer, and some inside).
    let index = std::fs::read(fixture("tf/sharded/ckpt.index")).unwrap();
    for cut in [0usize, 10, index.len() / 2, index.len() - 1] {
        let dir = tempfile::tempdir().unwrap();
        copy_checkpoint(dir.path(), SHARDED);
        std::fs::write(dir.path().join("ckpt.index"), &index[..cut]).unwrap();
        assert_clean_failure(&dir.path().join("ckpt"), "TensorFlow checkpoint");
    }
    // A truncated data shard: found when the index is checked against it.
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path(), SHARDED);
    let shard = dir.path().join("ckpt.data-00002-of-00004");
    let bytes = std::fs::read(&shard).unwrap();
    std::fs::write(&shard, &bytes[..bytes.len() - 7]).unwrap();
    assert_clean_failure(&dir.path().join("ckpt"), "truncated");
    // A missing shard.
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path(), SHARDED);
    std::fs::remove_file(dir.path().join("ckpt.data-00003-of-00004")).unwrap();
    assert_clean_failure(&dir.path().join("ckpt"), "data shard missing");
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &[u8], pos: &mut usize) -> u64 {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let b = data[*pos];
        *pos += 1;
        v |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return v;
        }
        shift += 7;
    }
}

#[test]
fn an_index_block_pointing_past_the_end_is_a_clean_error() {
    let index = std::fs::read(fixture("tf/train_checkpoint/ckpt-1.index")).unwrap();
    let footer_at = index.len() - 48;
    let footer = &index[footer_at..];
    let mut pos = 0;
    let meta = (get_varint(footer, &mut pos), get_varint(footer, &mut pos));
    let index_block = (get_varint(footer, &mut pos), get_varint(footer, &mut pos));
    let mut new_footer = Vec::new();
    put_varint(&mut new_footer, meta.0);
    put_varint(&mut new_footer, meta.1);
    put_varint(&mut new_footer, index_block.0 + 1_000_000);
    put_varint(&mut new_footer, index_block.1);
    new_footer.resize(40, 0);
    new_footer.extend_from_slice(&footer[40..]);
    let mut damaged = index[..footer_at].to_vec();
    damaged.extend_from_slice(&new_footer);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ckpt-1.index"), damaged).unwrap();
    std::fs::copy(
        fixture("tf/train_checkpoint/ckpt-1.data-00000-of-00001"),
        dir.path().join("ckpt-1.data-00000-of-00001"),
    )
    .unwrap();
    assert_clean_failure(&dir.path().join("ckpt-1"), "past the end of the table");
}

#[test]
fn byte_flips_in_an_index_never_panic() {
    let index = std::fs::read(fixture("tf/tf1/model.index")).unwrap();
    let files = [
        "tf/tf1/model.data-00000-of-00003",
        "tf/tf1/model.data-00001-of-00003",
        "tf/tf1/model.data-00002-of-00003",
    ];
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path(), &files);
    let prefix = dir.path().join("model");
    let mut seen = BTreeSet::new();
    for step in 0..40usize {
        let mut damaged = index.clone();
        let at = (step * 7919) % damaged.len();
        damaged[at] ^= 0x5a;
        std::fs::write(dir.path().join("model.index"), &damaged).unwrap();
        let out = run(&["inspect", prefix.to_str().unwrap()]);
        assert!(!stderr(&out).contains("panicked"), "flip at {at}");
        seen.insert(out.status.code());
    }
    assert!(seen.contains(&Some(1)));
}

/// Copies fixture files into `dir`, keeping their paths below `base`.
fn copy_tree(dir: &Path, base: &str, files: &[&str]) -> PathBuf {
    for f in files {
        let rel = f.strip_prefix(base).unwrap().trim_start_matches('/');
        let to = dir.join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(fixture(f), to).unwrap();
    }
    dir.to_path_buf()
}

#[test]
fn each_folder_needs_each_of_its_files() {
    let forms: &[(&str, &[&str])] = &[
        (
            "subclassed_effdet_ckpt",
            &[
                "subclassed_effdet_ckpt/checkpoint",
                "subclassed_effdet_ckpt/ckpt.index",
                "subclassed_effdet_ckpt/ckpt.data-00000-of-00001",
            ],
        ),
        (
            "tf/functional_ckpt",
            &[
                "tf/functional_ckpt/checkpoint",
                "tf/functional_ckpt/ckpt.index",
                "tf/functional_ckpt/ckpt.data-00000-of-00001",
            ],
        ),
        (
            "tf/text_ckpt",
            &[
                "tf/text_ckpt/checkpoint",
                "tf/text_ckpt/ckpt.index",
                "tf/text_ckpt/ckpt.data-00000-of-00001",
            ],
        ),
        (
            "tf/text_adam_ckpt",
            &[
                "tf/text_adam_ckpt/checkpoint",
                "tf/text_adam_ckpt/ckpt.index",
                "tf/text_adam_ckpt/ckpt.data-00000-of-00001",
            ],
        ),
        (
            "tf/train_checkpoint",
            &[
                "tf/train_checkpoint/checkpoint",
                "tf/train_checkpoint/ckpt-1.index",
                "tf/train_checkpoint/ckpt-1.data-00000-of-00001",
            ],
        ),
        (
            "tf/tf1",
            &[
                "tf/tf1/checkpoint",
                "tf/tf1/model.index",
                "tf/tf1/model.data-00000-of-00003",
                "tf/tf1/model.data-00001-of-00003",
                "tf/tf1/model.data-00002-of-00003",
            ],
        ),
        (
            "tf/functional_savedmodel",
            &[
                "tf/functional_savedmodel/saved_model.pb",
                "tf/functional_savedmodel/keras_metadata.pb",
                "tf/functional_savedmodel/variables/variables.index",
                "tf/functional_savedmodel/variables/variables.data-00000-of-00001",
            ],
        ),
        (
            "tf/text_savedmodel",
            &[
                "tf/text_savedmodel/saved_model.pb",
                "tf/text_savedmodel/keras_metadata.pb",
                "tf/text_savedmodel/variables/variables.index",
                "tf/text_savedmodel/variables/variables.data-00000-of-00001",
            ],
        ),
        (
            "tf/subclassed_savedmodel",
            &[
                "tf/subclassed_savedmodel/saved_model.pb",
                "tf/subclassed_savedmodel/keras_metadata.pb",
                "tf/subclassed_savedmodel/variables/variables.index",
                "tf/subclassed_savedmodel/variables/variables.data-00000-of-00001",
            ],
        ),
    ];
    for (base, files) in forms {
        let whole = tempfile::tempdir().unwrap();
        let reference = tensors(&convert(&copy_tree(whole.path(), base, files), &[]));
        for missing in *files {
            let dir = tempfile::tempdir().unwrap();
            let kept: Vec<&str> = files.iter().copied().filter(|f| f != missing).collect();
            let folder = copy_tree(dir.path(), base, &kept);
            let out = dir.path().join("out.safetensors");
            let r = run(&[
                "convert",
                folder.to_str().unwrap(),
                "-o",
                out.to_str().unwrap(),
            ]);
            match missing.rsplit('/').next().unwrap() {
                // Either of the two marks a SavedModel folder.
                "saved_model.pb" => {
                    assert!(r.status.success(), "{missing}: {}", stderr(&r));
                    assert_eq!(tensors(&std::fs::read(&out).unwrap()), reference);
                }
                // Without its state file the folder is a folder: its
                // checkpoint is found by its index, as in any batch.
                "checkpoint" => {
                    assert!(r.status.success(), "{missing}: {}", stderr(&r));
                    assert!(out.is_dir(), "{missing}: a batch writes a folder");
                    let written: Vec<_> = std::fs::read_dir(&out).unwrap().collect();
                    assert_eq!(written.len(), 1, "{missing}");
                }
                // Without Keras's metadata, names are variable names
                // (`stem_conv/kernel`, not `backbone/stem_conv/kernel`; a
                // subclassed model's scope stays): the same values.
                "keras_metadata.pb" => {
                    assert!(r.status.success(), "{missing}: {}", stderr(&r));
                    let got = tensors(&std::fs::read(&out).unwrap());
                    let values = |t: &BTreeMap<String, (String, Vec<usize>, String)>| {
                        let mut v: Vec<_> = t.values().cloned().collect();
                        v.sort();
                        v
                    };
                    assert_eq!(values(&got), values(&reference), "{missing}");
                    let variable_name = match *base {
                        "tf/subclassed_savedmodel" => "tf_subclassed/stem_conv/kernel",
                        "tf/text_savedmodel" => "bidirectional/forward_lstm/kernel",
                        _ => "stem_conv/kernel",
                    };
                    assert!(got.contains_key(variable_name), "{got:?}");
                }
                _ => {
                    assert_eq!(r.status.code(), Some(1), "{missing}: {}", stderr(&r));
                    assert!(!stderr(&r).contains("panicked"), "{missing}");
                    assert!(!out.exists(), "{missing}");
                }
            }
        }
    }
}

#[test]
fn an_oversized_keras_metadata_is_refused_before_it_is_read() {
    let files = [
        "tf/subclassed_savedmodel/saved_model.pb",
        "tf/subclassed_savedmodel/variables/variables.index",
        "tf/subclassed_savedmodel/variables/variables.data-00000-of-00001",
    ];
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_tree(dir.path(), "tf/subclassed_savedmodel", &files);
    // Sparse: 257 MiB that cost nothing to make.
    let metadata = std::fs::File::create(folder.join("keras_metadata.pb")).unwrap();
    metadata.set_len(257 << 20).unwrap();
    assert_clean_convert_failure(&folder, "keras_metadata.pb is over");
}

#[test]
fn a_checkpoint_file_is_never_the_output() {
    let dir = tempfile::tempdir().unwrap();
    copy_checkpoint(dir.path(), SHARDED);
    let prefix = dir.path().join("ckpt");
    for target in ["ckpt.index", "ckpt.data-00002-of-00004"] {
        let before = std::fs::read(dir.path().join(target)).unwrap();
        let out = dir.path().join(target);
        let r = run(&[
            "convert",
            prefix.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--force",
        ]);
        assert_eq!(r.status.code(), Some(1), "{target}");
        assert!(stderr(&r).contains("is an input"), "{}", stderr(&r));
        assert_eq!(std::fs::read(&out).unwrap(), before, "{target} untouched");
    }
}

const BASIC_PITCH: &str = "third_party/basic_pitch_nmp";
const BASIC_PITCH_FILES: [&str; 3] = [
    "third_party/basic_pitch_nmp/saved_model.pb",
    "third_party/basic_pitch_nmp/variables/variables.index",
    "third_party/basic_pitch_nmp/variables/variables.data-00000-of-00001",
];

fn basic_pitch_expected() -> Value {
    let path = fixture("third_party/basic_pitch_nmp.expected.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_tf_2_4_saved_model_gives_classes_from_saved_model_pb() {
    // Spotify basic-pitch 0.4.0's model, saved by Keras 2.4.0: no
    // keras_metadata.pb, the metadata is in saved_model.pb. Expected: the
    // variables tf.saved_model.load restores and the class_name TF's own
    // protos decode from saved_model.pb.
    let exp = basic_pitch_expected();
    let out = convert(&fixture(BASIC_PITCH), &[]);
    assert_eq!(tensors(&out), keras_tensors(&exp, "name"));
    assert_eq!(tensors(&out).len(), 24);
    let meta = metadata(&out);
    assert_eq!(meta["source_format"], "keras-savedmodel");
    assert_eq!(
        meta["keras_version"],
        exp["keras_version"].as_str().unwrap()
    );
    let want = expected_classes(&exp);
    assert_eq!(layer_classes(&out), want);
    let inspect = run(&["inspect", fixture(BASIC_PITCH).to_str().unwrap()]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let text = String::from_utf8_lossy(&inspect.stdout).into_owned();
    assert!(!text.contains("(guess)"), "{text}");
    assert!(text.contains("Keras 2.4.0"), "{text}");
    assert!(!stderr(&inspect).contains("keras_metadata.pb"));
    // The recorded classes drive --layout pytorch: Conv2D kernels to OIHW.
    let pt = convert(&fixture(BASIC_PITCH), &["--layout", "pytorch"]);
    let st = SafeTensors::deserialize(&pt).unwrap();
    assert_eq!(st.tensor("conv2d_1.weight").unwrap().shape(), [8, 8, 3, 39]);
    assert!(st.tensor("batch_normalization.running_mean").is_ok());
}

/// `keras2safetensors::open` on a copy of basic-pitch's folder whose
/// saved_model.pb is `bytes`: never a panic.
fn open_with_saved_model(dir: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(dir.join("saved_model.pb"), bytes).unwrap();
    keras2safetensors::open(dir, &keras2safetensors::ReadOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[test]
fn a_damaged_saved_model_pb_is_a_clean_error_or_read_without_it() {
    let whole = std::fs::read(fixture(BASIC_PITCH_FILES[0])).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_tree(dir.path(), BASIC_PITCH, &BASIC_PITCH_FILES);
    assert!(open_with_saved_model(&folder, &whole).is_ok());
    // Cut anywhere: the object graph is the file's last field, so a cut
    // file is refused (an empty one holds no meta graph: read without).
    for step in 0..200usize {
        let cut = step * 5417 % whole.len();
        let r = open_with_saved_model(&folder, &whole[..cut]);
        if cut > 0 {
            let e = r.expect_err(&format!("cut at {cut}"));
            assert!(e.contains("unreadable saved_model.pb"), "cut at {cut}: {e}");
        }
    }
    // Flipped bytes, most in the object graph (the last 89,236 bytes).
    let mut failed = 0;
    for step in 0..1500usize {
        let mut damaged = whole.clone();
        let at = whole.len() - 1 - (step * 7919) % 95_000;
        damaged[at] ^= 1 << (step % 8);
        if let Err(e) = open_with_saved_model(&folder, &damaged) {
            assert!(!e.contains('\n'), "{e}");
            failed += 1;
        }
    }
    assert!(failed > 0);
    // The CLI: one line, exit 1, nothing written.
    std::fs::write(folder.join("saved_model.pb"), &whole[..whole.len() - 10]).unwrap();
    assert_clean_failure(&folder, "unreadable saved_model.pb");
}

#[test]
fn an_oversized_object_graph_in_saved_model_pb_is_refused_before_it_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let folder = copy_tree(dir.path(), BASIC_PITCH, &BASIC_PITCH_FILES[1..]);
    // A meta graph (field 2) whose object graph (field 7) is 257 MiB,
    // sparse, so it costs nothing to make.
    let graph_len: u64 = 257 << 20;
    let mut graph_field = vec![0x3a];
    put_varint(&mut graph_field, graph_len);
    let mut head = vec![0x12];
    put_varint(&mut head, graph_field.len() as u64 + graph_len);
    head.extend_from_slice(&graph_field);
    let path = folder.join("saved_model.pb");
    std::fs::write(&path, &head).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(head.len() as u64 + graph_len).unwrap();
    assert_clean_convert_failure(
        &folder,
        "refused: saved_model.pb's object graph is over 256",
    );
}
