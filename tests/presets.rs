//! `convert --preset` on a real Keras file: a small EfficientNet saved by
//! tf-keras (`fixtures/presets/tiny_efficientnet.h5`), whose timm twin
//! loaded the converted file with `strict=True` and reproduced Keras's
//! logits when the fixture was generated (`fixtures/generate_presets.py`
//! records the difference). Here: the names and shapes are exactly the
//! twin's state dict, the bytes are Keras's, and other families are refused.

mod common;

use std::collections::BTreeMap;

use common::*;
use safetensors::SafeTensors;
use serde_json::Value;

const TINY: &str = "presets/tiny_efficientnet.h5";

fn timm_twin() -> Value {
    let text = std::fs::read_to_string(fixture("presets/tiny_efficientnet.timm.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn the_converted_file_has_exactly_the_timm_twins_names_shapes_and_keras_bytes() {
    let twin = timm_twin();
    assert!(twin["max_abs_logit_diff"].as_f64().unwrap() < 1e-5);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("tiny.safetensors");
    let run_out = run(&[
        "convert",
        fixture(TINY).to_str().unwrap(),
        "--preset",
        "timm-tf-efficientnet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(run_out.status.success(), "{}", stderr(&run_out));
    let err = stderr(&run_out);
    assert!(err.contains("not `efficientnet_bN`"), "{err}");
    assert!(
        err.contains("normalised with the `normalization` layer's mean"),
        "{err}"
    );

    let bytes = std::fs::read(&out).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let got: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    let want: BTreeMap<String, Vec<usize>> = twin["state_dict"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let shape = p[1].as_array().unwrap().iter();
            (
                p[0].as_str().unwrap().to_string(),
                shape.map(|d| d.as_u64().unwrap() as usize).collect(),
            )
        })
        .collect();
    assert_eq!(got, want);

    // Arrays whose layout does not change keep Keras's bytes, under their
    // timm names; num_batches_tracked is PyTorch's own zero.
    let expected = expected_of("presets/tiny_efficientnet.h5");
    let keras: BTreeMap<&str, &str> = expected_weights(&expected)
        .iter()
        .map(|w| (w["name"].as_str().unwrap(), w["sha256"].as_str().unwrap()))
        .collect();
    for (timm, keras_name) in [
        ("bn1.weight", "stem_bn/gamma"),
        ("bn1.running_var", "stem_bn/moving_variance"),
        ("blocks.0.0.bn1.bias", "block1a_bn/beta"),
        ("blocks.0.0.se.conv_reduce.bias", "block1a_se_reduce/bias"),
        (
            "blocks.1.0.bn3.running_mean",
            "block2a_project_bn/moving_mean",
        ),
        ("blocks.6.0.se.conv_expand.bias", "block7a_se_expand/bias"),
        ("bn2.weight", "top_bn/gamma"),
        ("classifier.bias", "predictions/bias"),
    ] {
        let tensor = st.tensor(timm).unwrap();
        assert_eq!(
            sha256_hex(tensor.data()),
            keras[keras_name],
            "{timm} <- {keras_name}"
        );
    }
    let counter = st.tensor("blocks.3.0.bn2.num_batches_tracked").unwrap();
    assert_eq!(counter.data(), &[0u8; 8]);

    let (_, metadata) = read_output(&out);
    assert_eq!(metadata["preset"], "timm-tf-efficientnet");
    assert_eq!(metadata["bn_eps"], "0.001");
    assert_eq!(metadata["padding"], "tf_same");
    assert_eq!(metadata["format"], "pt");
}

#[test]
fn a_file_of_another_family_is_refused_and_nothing_is_written() {
    assert_clean_convert_failure_with(
        &["--preset", "timm-legacy-xception"],
        "not a Keras Xception file for preset timm-legacy-xception: tensor `normalization.mean`",
    );
}

fn assert_clean_convert_failure_with(extra: &[&str], expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let mut args = vec![
        "convert",
        fixture(TINY).to_str().unwrap().to_owned().leak() as &str,
    ];
    args.extend_from_slice(extra);
    args.extend(["-o", out.to_str().unwrap()]);
    let result = run(&args);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let err = stderr(&result);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(expect) && err.contains("tiny_efficientnet.h5"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn a_preset_cannot_be_combined_with_the_keras_layout_and_unknown_names_are_listed() {
    let tiny = fixture(TINY);
    let both = run(&[
        "convert",
        tiny.to_str().unwrap(),
        "--preset",
        "hf-efficientnet",
        "--layout",
        "keras",
        "--dry-run",
    ]);
    assert_eq!(both.status.code(), Some(2));
    assert!(
        stderr(&both).contains("cannot be used with"),
        "{}",
        stderr(&both)
    );
    let unknown = run(&[
        "convert",
        tiny.to_str().unwrap(),
        "--preset",
        "resnet",
        "--dry-run",
    ]);
    assert_eq!(unknown.status.code(), Some(2));
    let err = stderr(&unknown);
    for name in [
        "timm-tf-efficientnet",
        "hf-efficientnet",
        "timm-legacy-xception",
    ] {
        assert!(err.contains(name), "{err}");
    }
}

#[test]
fn user_rename_rules_apply_after_the_preset() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.txt");
    std::fs::write(&rules, "^ => backbone.\n").unwrap();
    let out = run(&[
        "convert",
        fixture(TINY).to_str().unwrap(),
        "--preset",
        "timm-tf-efficientnet",
        "--rename",
        rules.to_str().unwrap(),
        "--dry-run",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("-> backbone.conv_stem.weight"), "{text}");
    assert!(
        text.contains("-> backbone.blocks.0.0.conv_dw.weight"),
        "{text}"
    );
}

/// The twin's state dict as `align` takes it: the JSON object timm's
/// state dict gave (`{name: shape}`, in order), and a safetensors file of
/// the same names and shapes (zero data; its header lists names sorted).
fn write_references(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let json = dir.join("ref.json");
    std::fs::copy(
        fixture("presets/tiny_efficientnet.timm.state_dict.json"),
        &json,
    )
    .unwrap();
    let twin = timm_twin();
    let pairs = twin["state_dict"].as_array().unwrap();
    let mut data = Vec::new();
    for p in pairs {
        let shape: Vec<usize> = p[1]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| d.as_u64().unwrap() as usize)
            .collect();
        let name = p[0].as_str().unwrap();
        let (dtype, size) = if name.ends_with("num_batches_tracked") {
            (safetensors::Dtype::I64, 8)
        } else {
            (safetensors::Dtype::F32, 4)
        };
        let bytes = vec![0u8; shape.iter().product::<usize>() * size];
        data.push((name.to_string(), dtype, shape, bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView)> = data
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let st = dir.join("ref.safetensors");
    safetensors::tensor::serialize_to_file(views, None, &st).unwrap();
    (json, st)
}

#[test]
fn align_finds_the_presets_mapping_from_a_reference_state_dict_alone() {
    let dir = tempfile::tempdir().unwrap();
    let (json, st) = write_references(dir.path());
    let tiny = fixture(TINY);
    let by_preset = dir.path().join("preset.safetensors");
    let out = run(&[
        "convert",
        tiny.to_str().unwrap(),
        "--preset",
        "timm-tf-efficientnet",
        "-o",
        by_preset.to_str().unwrap(),
        "--quiet",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (want, _) = read_output(&by_preset);

    for reference in [&json, &st] {
        let aligned = dir.path().join("aligned.safetensors");
        let rules = dir.path().join("tiny.rules");
        let out = run(&[
            "align",
            tiny.to_str().unwrap(),
            "--to",
            reference.to_str().unwrap(),
            "-o",
            rules.to_str().unwrap(),
            "--apply",
            aligned.to_str().unwrap(),
            "--force",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("162 tensors in 59 modules aligned"),
            "{}",
            stderr(&out)
        );
        let (got, _) = read_output(&aligned);
        assert_eq!(got, want, "align --apply with {}", reference.display());

        // The rules file works with convert, as its header says.
        let converted = dir.path().join("by_rules.safetensors");
        let out = run(&[
            "convert",
            tiny.to_str().unwrap(),
            "--layout",
            "pytorch",
            "--num-batches-tracked",
            "--skip",
            "normalization",
            "--rename",
            rules.to_str().unwrap(),
            "-o",
            converted.to_str().unwrap(),
            "--force",
            "--quiet",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(read_output(&converted).0, want);
        let text = std::fs::read_to_string(&rules).unwrap();
        assert!(
            text.contains("--skip normalization --rename RULES"),
            "{text}"
        );
    }
}

#[test]
fn align_refuses_a_reference_whose_structure_differs_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = write_references(dir.path());
    let text = std::fs::read_to_string(&json).unwrap();
    // The twin with a wider head: one module no longer fits.
    let wider = text.replace("[\n  128,\n  32,\n  1,\n  1\n ]", "[128, 33, 1, 1]");
    assert_ne!(wider, text);
    std::fs::write(&json, wider).unwrap();
    let rules = dir.path().join("x.rules");
    let applied = dir.path().join("x.safetensors");
    let out = run(&[
        "align",
        fixture(TINY).to_str().unwrap(),
        "--to",
        json.to_str().unwrap(),
        "-o",
        rules.to_str().unwrap(),
        "--apply",
        applied.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("differ in structure") && err.contains("`top_conv` (weight [128, 32, 1, 1])"),
        "{err}"
    );
    assert!(!rules.exists() && !applied.exists());
}

/// A rules file is an output like any other: created 0644 under umask 022,
/// never written over an input (even with `--force`), and not over an
/// existing file without `--force`.
#[cfg(unix)]
#[test]
fn the_rules_file_is_written_like_every_output() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (json, _) = write_references(dir.path());
    let tiny = dir.path().join("tiny.h5");
    std::fs::copy(fixture(TINY), &tiny).unwrap();
    let rules = dir.path().join("tiny.rules");
    let align_to = |output: &std::path::Path, force: bool| {
        let binary = env!("CARGO_BIN_EXE_keras2safetensors");
        let force = if force { " --force" } else { "" };
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "umask 022 && \"{binary}\" align \"{}\" --to \"{}\" -o \"{}\"{force}",
                tiny.display(),
                json.display(),
                output.display()
            ))
            .output()
            .unwrap()
    };
    let out = align_to(&rules, false);
    assert!(out.status.success(), "{}", stderr(&out));
    let mode = std::fs::metadata(&rules).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);

    let again = align_to(&rules, false);
    assert_eq!(again.status.code(), Some(1), "{}", stderr(&again));
    for input in [&tiny, &json] {
        let before = std::fs::read(input).unwrap();
        let out = align_to(input, true);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_eq!(
            std::fs::read(input).unwrap(),
            before,
            "{} was written over",
            input.display()
        );
    }
}
