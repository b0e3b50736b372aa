//! The commands for CI: verify, diff, manifest/check, inspect --stats and
//! batch conversion, each against deliberately altered copies.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

/// Converts a fixture to safetensors in `dir`.
fn converted(dir: &Path, fixture_name: &str) -> PathBuf {
    let out = dir.join(format!("{fixture_name}.safetensors"));
    let result = run(&[
        "convert",
        fixture(fixture_name).to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "-q",
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    out
}

/// Rewrites a safetensors file with `alter` applied to its tensors.
fn altered(
    original: &Path,
    out: &Path,
    alter: impl Fn(&mut Vec<(String, Dtype, Vec<usize>, Vec<u8>)>),
) -> PathBuf {
    let bytes = std::fs::read(original).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let mut tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    alter(&mut tensors);
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    let metadata: Option<HashMap<String, String>> = meta.metadata().clone();
    safetensors::serialize_to_file(views, metadata, out).unwrap();
    out.to_path_buf()
}

const VICTIM: &str = "efficientnet_tiny/stem_conv/kernel";

/// The three altered copies every command must catch.
fn altered_copies(dir: &Path, good: &Path) -> [(&'static str, PathBuf); 3] {
    let ulp = altered(good, &dir.join("ulp.safetensors"), |ts| {
        let t = ts.iter_mut().find(|t| t.0 == VICTIM).unwrap();
        t.3[0] ^= 1; // lowest mantissa bit of the first float: one ulp
    });
    let missing = altered(good, &dir.join("missing.safetensors"), |ts| {
        ts.retain(|t| t.0 != VICTIM)
    });
    let renamed = altered(good, &dir.join("renamed.safetensors"), |ts| {
        ts.iter_mut().find(|t| t.0 == VICTIM).unwrap().0 =
            "efficientnet_tiny/stem_conv/kernel_renamed".into();
    });
    [("ulp", ulp), ("missing", missing), ("renamed", renamed)]
}

fn json_of(out: &std::process::Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(out)))
}

#[test]
fn verify_catches_every_alteration() {
    let dir = tempfile::tempdir().unwrap();
    let good = converted(dir.path(), "tiny_efficientdet_full.h5");
    let source = fixture("tiny_efficientdet_full.h5");
    let ok = run(&[
        "verify",
        source.to_str().unwrap(),
        good.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    assert_eq!(json_of(&ok)["equal"], 195);
    for (what, bad) in altered_copies(dir.path(), &good) {
        let out = run(&[
            "verify",
            source.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let report = json_of(&out);
        assert_eq!(report["ok"], false);
        let text = report.to_string();
        assert!(text.contains(VICTIM), "{what}: {text}");
        match what {
            "ulp" => assert_eq!(report["different"][0]["name"], VICTIM),
            "missing" => assert_eq!(report["only_in_a"][0], VICTIM),
            _ => assert_eq!(report["only_in_b"][0], format!("{VICTIM}_renamed")),
        }
    }
}

#[test]
fn verify_understands_pytorch_layout_casts_and_shards() {
    let dir = tempfile::tempdir().unwrap();
    let source = fixture("tiny_efficientdet_full.h5");
    let out = dir.path().join("pt");
    let convert = run(&[
        "convert",
        source.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
        "--layout",
        "pytorch",
        "--dtype",
        "bf16",
        "--max-shard-size",
        "6KB",
        "-q",
    ]);
    assert!(convert.status.success(), "{}", stderr(&convert));
    let index = out.join("model.safetensors.index.json");
    let report = run(&["verify", source.to_str().unwrap(), index.to_str().unwrap()]);
    assert_eq!(report.status.code(), Some(0), "{}", stdout(&report));
    assert!(stdout(&report).starts_with("OK"), "{}", stdout(&report));
}

#[test]
fn diff_reports_differences_and_honours_tolerances() {
    let dir = tempfile::tempdir().unwrap();
    let good = converted(dir.path(), "tiny_efficientdet_full.h5");
    let keras3 = fixture("k3_tiny_efficientdet.keras");
    let same = run(&["diff", good.to_str().unwrap(), keras3.to_str().unwrap()]);
    assert_eq!(
        same.status.code(),
        Some(0),
        "a conversion and the Keras 3 twin: {}",
        stdout(&same)
    );
    for (what, bad) in altered_copies(dir.path(), &good) {
        let out = run(&[
            "diff",
            good.to_str().unwrap(),
            bad.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let report = json_of(&out);
        if what == "ulp" {
            let d = &report["different"][0];
            assert_eq!(d["name"], VICTIM);
            let max_abs = d["max_abs"].as_f64().unwrap();
            assert!(max_abs > 0.0 && max_abs < 1e-6, "{max_abs}");
            let tolerant = run(&[
                "diff",
                good.to_str().unwrap(),
                bad.to_str().unwrap(),
                "--atol",
                "1e-6",
            ]);
            assert_eq!(
                tolerant.status.code(),
                Some(0),
                "within --atol: {}",
                stdout(&tolerant)
            );
            let relative = run(&[
                "diff",
                good.to_str().unwrap(),
                bad.to_str().unwrap(),
                "--rtol",
                "1e-6",
            ]);
            assert_eq!(relative.status.code(), Some(0), "within --rtol");
        }
    }
}

#[test]
fn manifest_is_stable_and_check_catches_every_alteration() {
    let dir = tempfile::tempdir().unwrap();
    let good = converted(dir.path(), "tiny_efficientdet_full.h5");
    let manifest = dir.path().join("manifest.json");
    let once = run(&[
        "manifest",
        good.to_str().unwrap(),
        "-o",
        manifest.to_str().unwrap(),
    ]);
    assert!(once.status.success());
    let text = std::fs::read_to_string(&manifest).unwrap();
    let again = run(&["manifest", good.to_str().unwrap()]);
    assert_eq!(stdout(&again), text, "stable across runs");
    // The Keras file's manifest names the same tensors with the same hashes.
    let from_h5 = run(&[
        "manifest",
        fixture("tiny_efficientdet_full.h5").to_str().unwrap(),
    ]);
    let a: Value = serde_json::from_str(&text).unwrap();
    let b: Value = serde_json::from_slice(&from_h5.stdout).unwrap();
    assert_eq!(a["tensors"], b["tensors"]);
    assert_eq!(a["total_params"], 4490);
    let keys: Vec<&String> = a["tensors"].as_object().unwrap().keys().collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted, "sorted keys");
    assert!(!text.contains("date") && !text.contains("time"));

    let ok = run(&[
        "check",
        good.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    assert_eq!(ok.status.code(), Some(0), "{}", stdout(&ok));
    for (what, bad) in altered_copies(dir.path(), &good) {
        let out = run(&[
            "check",
            bad.to_str().unwrap(),
            "--manifest",
            manifest.to_str().unwrap(),
            "--json",
        ]);
        assert_eq!(out.status.code(), Some(1), "{what}");
        let report = json_of(&out);
        let problems: Vec<String> = report["differences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                format!(
                    "{}: {}",
                    d["name"].as_str().unwrap(),
                    d["problem"].as_str().unwrap()
                )
            })
            .collect();
        let expected = match what {
            "ulp" => vec![format!("{VICTIM}: bytes differ (sha256)")],
            "missing" => vec![format!("{VICTIM}: missing")],
            _ => vec![
                format!("{VICTIM}: missing"),
                format!("{VICTIM}_renamed: not in the manifest"),
            ],
        };
        assert_eq!(problems, expected, "{what}");
    }
}

#[test]
fn stats_are_computed_from_every_value() {
    let dir = tempfile::tempdir().unwrap();
    let good = converted(dir.path(), "dtypes_full.h5");
    let out = run(&[
        "inspect",
        fixture("dtypes_full.h5").to_str().unwrap(),
        "--stats",
        "--json",
        "--filter",
        "w_int16|dense_f64/kernel|empty$",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let summary = json_of(&out);
    let weights: Vec<&Value> = summary["layers"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|l| l["weights"].as_array().unwrap())
        .collect();
    let names: Vec<&str> = weights
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["dtype_zoo/empty", "dtype_zoo/w_int16", "dense_f64/kernel"]
    );
    let bytes = std::fs::read(&good).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    for w in &weights {
        let name = w["name"].as_str().unwrap();
        let view = st.tensor(name).unwrap();
        let values: Vec<f64> = match view.dtype() {
            Dtype::I16 => view
                .data()
                .chunks_exact(2)
                .map(|c| i16::from_le_bytes([c[0], c[1]]) as f64)
                .collect(),
            Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
                .collect(),
            other => panic!("{other:?}"),
        };
        let stats = &w["stats"];
        if values.is_empty() {
            assert_eq!(stats["min"], Value::Null, "{name}");
            continue;
        }
        let mean = values.iter().sum::<f64>() / values.len() as f64;
        let std =
            (values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / values.len() as f64).sqrt();
        let min = values.iter().cloned().fold(f64::INFINITY, f64::min);
        let max = values.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(stats["min"].as_f64().unwrap(), min, "{name}");
        assert_eq!(stats["max"].as_f64().unwrap(), max, "{name}");
        assert!(
            (stats["mean"].as_f64().unwrap() - mean).abs() <= 1e-9 * mean.abs().max(1.0),
            "{name}"
        );
        assert!(
            (stats["std"].as_f64().unwrap() - std).abs() <= 1e-9 * std.max(1.0),
            "{name}"
        );
        assert_eq!(
            stats["zero"].as_u64().unwrap(),
            values.iter().filter(|v| **v == 0.0).count() as u64
        );
    }
}

#[test]
fn a_folder_converts_in_parallel_and_one_bad_file_stops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(inputs.join("nested")).unwrap();
    std::fs::copy(fixture("classic_conv2d_full.h5"), inputs.join("conv.h5")).unwrap();
    std::fs::copy(
        fixture("k3_text_model.keras"),
        inputs.join("nested/text.keras"),
    )
    .unwrap();
    std::fs::write(inputs.join("broken.h5"), b"\x89HDF\r\n\x1a\nnot really").unwrap();
    std::fs::write(inputs.join("notes.txt"), b"not a model").unwrap();
    let outputs = dir.path().join("out");
    let out = run(&[
        "convert",
        inputs.to_str().unwrap(),
        "-o",
        outputs.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "one file failed");
    let reports = json_of(&out);
    let reports = reports.as_array().unwrap();
    assert_eq!(
        reports.len(),
        3,
        "text files are not Keras files: {reports:?}"
    );
    let ok: Vec<&str> = reports
        .iter()
        .filter(|r| r["ok"] == true)
        .map(|r| r["output"].as_str().unwrap())
        .collect();
    assert_eq!(ok.len(), 2);
    assert!(outputs.join("conv.safetensors").exists());
    assert!(outputs.join("nested/text.safetensors").exists());
    assert!(!outputs.join("broken.safetensors").exists());
    assert!(stderr(&out).contains("broken.h5"), "{}", stderr(&out));

    let table = run(&[
        "convert",
        fixture("classic_conv2d_full.h5").to_str().unwrap(),
        fixture("zoo_full.h5").to_str().unwrap(),
        "-o",
        dir.path().join("two").to_str().unwrap(),
    ]);
    assert_eq!(table.status.code(), Some(0), "{}", stderr(&table));
    assert!(
        stdout(&table).contains("2 of 2 converted"),
        "{}",
        stdout(&table)
    );
}

#[test]
fn the_readme_ci_example_runs() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let start = readme
        .find("<!-- ci-example -->")
        .expect("README has the CI example");
    let block = &readme[start..];
    let body_start = block.find("```sh\n").unwrap() + 6;
    let body_end = block[body_start..].find("```").unwrap() + body_start;
    let script = &block[body_start..body_end];
    assert!(script.contains("keras2safetensors check"), "{script}");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .parent()
        .unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = std::process::Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
}
