//! Helpers shared by the integration tests: fixture discovery and the
//! expected values Keras wrote when the fixtures were generated.

#![allow(dead_code)]

// The fixture helpers the unit tests use, compiled here too.
#[path = "../../src/test_support.rs"]
mod unit_support;
#[allow(unused_imports)] // each test binary uses some of them
pub use unit_support::{expected_of, expected_weights, fixture, sha256_hex};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use safetensors::SafeTensors;
use serde_json::Value;

pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// Every Keras fixture that has an expected-values file in the common
/// schema, with that file parsed: the fixtures folder and its `numerics/`,
/// `old_keras/`, `older_keras3/` and `presets/` folders (Keras 0.x files
/// have a schema of their own).
pub fn keras_fixtures() -> Vec<(PathBuf, Value)> {
    let mut out = Vec::new();
    for dir in [
        fixtures_dir(),
        fixtures_dir().join("numerics"),
        fixtures_dir().join("old_keras"),
        fixtures_dir().join("older_keras3"),
        fixtures_dir().join("presets"),
    ] {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if let Some(fixture) = name.strip_suffix(".expected.json") {
                let expected: Value =
                    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
                if expected["kind"] != "keras1" {
                    out.push((dir.join(fixture), expected));
                }
            }
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    assert!(out.len() >= 50, "fixtures are missing: found {}", out.len());
    out
}

/// Read options for a fixture: a bare `.weights.h5` whose config sits
/// beside it as `<stem>.config.json` is read with that config.
pub fn read_options(fixture: &Path) -> keras2safetensors::ReadOptions {
    let name = fixture.file_name().unwrap().to_string_lossy();
    let config = name
        .strip_suffix(".weights.h5")
        .map(|stem| fixture.with_file_name(format!("{stem}.config.json")))
        .filter(|c| c.exists());
    keras2safetensors::ReadOptions {
        include_optimizer: false,
        config,
        ..Default::default()
    }
}

/// Default convert options with the fixture's read options.
pub fn convert_options(fixture: &Path) -> keras2safetensors::ConvertOptions {
    keras2safetensors::ConvertOptions {
        read: read_options(fixture),
        ..Default::default()
    }
}

/// The `inspect` format id of a fixture kind in the expected JSON.
pub fn format_id(kind: &str) -> &'static str {
    match kind {
        "full" | "legacy_h5" => "keras-h5-model",
        "weights" => "keras-h5-weights",
        "weights_h5" => "keras3-weights-h5",
        "keras" => "keras-archive",
        "sharded" => "keras3-sharded-weights",
        other => panic!("unknown fixture kind {other}"),
    }
}

/// Whether the file records layer classes (so inspect must give them).
pub fn records_classes(kind: &str) -> bool {
    matches!(kind, "full" | "legacy_h5" | "keras")
}

/// Checks one tensor of a converted file against the expected JSON: its
/// shape, dtype and the sha256 of its bytes, as Keras wrote them.
pub fn check_tensor(file: &Path, st: &SafeTensors, w: &Value) {
    let name = w["name"].as_str().unwrap();
    let tensor = st
        .tensor(name)
        .unwrap_or_else(|_| panic!("{}: no tensor `{name}`", file.display()));
    let shape: Vec<usize> = w["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(tensor.shape(), shape.as_slice(), "{name}: shape");
    assert_eq!(
        format!("{:?}", tensor.dtype()),
        safetensors_dtype(w["dtype"].as_str().unwrap()),
        "{name}: dtype"
    );
    assert_eq!(
        sha256_hex(tensor.data()),
        w["sha256"].as_str().unwrap(),
        "{}: bytes of `{name}` differ from get_weights()",
        file.display()
    );
}

/// Checks a converted file against the expected JSON: exactly the expected
/// tensor names, each with Keras's shape, dtype and sha256.
pub fn check_converted(fixture: &Path, converted: &[u8], expected: &Value) {
    let st = SafeTensors::deserialize(converted)
        .unwrap_or_else(|e| panic!("{}: output does not parse: {e}", fixture.display()));
    let weights = expected_weights(expected);
    for w in &weights {
        check_tensor(fixture, &st, w);
    }
    let want: std::collections::BTreeSet<&str> = weights
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    let got: std::collections::BTreeSet<&str> = st.names().into_iter().collect();
    assert_eq!(got, want, "{}: tensor names", fixture.display());
}

/// The command-line arguments that give a fixture its read options.
pub fn config_args(fixture: &Path) -> Vec<String> {
    match read_options(fixture).config {
        Some(config) => vec!["--config".into(), config.to_str().unwrap().into()],
        None => Vec::new(),
    }
}

/// The safetensors spelling of a numpy dtype name.
pub fn safetensors_dtype(numpy: &str) -> &'static str {
    match numpy {
        "float16" => "F16",
        "bfloat16" => "BF16",
        "float32" => "F32",
        "float64" => "F64",
        "int8" => "I8",
        "int16" => "I16",
        "int32" => "I32",
        "int64" => "I64",
        "uint8" => "U8",
        "uint16" => "U16",
        "uint32" => "U32",
        "uint64" => "U64",
        "bool" => "BOOL",
        other => panic!("fixture uses dtype {other} the tests do not know"),
    }
}

/// Runs the command-line tool.
pub fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .args(args)
        .output()
        .expect("the binary runs")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Converts `input` into a fresh folder and checks the failure: exit 1, one
/// line on stderr that starts `error: `, names the file and contains
/// `expect`, no panic, nothing written; `inspect` fails cleanly too.
pub fn assert_clean_failure(input: &Path, expect: &str) {
    assert_clean_convert_failure(input, expect);
    let inspect = run(&["inspect", input.to_str().unwrap()]);
    assert_eq!(inspect.status.code(), Some(1));
    assert!(!stderr(&inspect).contains("panicked"));
}

/// [`assert_clean_failure`] for a file that `inspect` can still describe
/// (it holds nothing to write, or a name only the output cannot hold).
pub fn assert_clean_convert_failure(input: &Path, expect: &str) {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{}: {err}", input.display());
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("error: "), "{err}");
    assert!(
        err.contains(&input.display().to_string()),
        "names the file: {err}"
    );
    assert!(err.contains(expect), "expected `{expect}` in: {err}");
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Name -> (dtype, shape, sha256) of every tensor in a safetensors file,
/// and its metadata.
pub fn read_output(path: &Path) -> (BTreeMap<String, String>, BTreeMap<String, String>) {
    let bytes = std::fs::read(path).unwrap();
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
    let metadata = header.metadata().clone().unwrap_or_default();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(name, t)| {
            let value = format!("{:?} {:?} {}", t.dtype(), t.shape(), sha256_hex(t.data()));
            (name, value)
        })
        .collect();
    (tensors, metadata.into_iter().collect())
}

/// Converts `input` with `args` into `dir/out.safetensors` (overwriting),
/// asserting success; returns the tensors, the metadata and stderr.
pub fn convert_ok(
    dir: &Path,
    input: &Path,
    args: &[&str],
) -> (BTreeMap<String, String>, BTreeMap<String, String>, String) {
    let output = dir.join("out.safetensors");
    let mut all = vec![
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--force",
    ];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "{}: {}",
        input.display(),
        stderr(&out)
    );
    let (tensors, metadata) = read_output(&output);
    (tensors, metadata, stderr(&out))
}
