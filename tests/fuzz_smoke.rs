//! A `cargo test`-sized run of every fuzz target's seed corpus
//! (`fuzz/seeds/<target>/`) through the calls that target makes (kept in
//! step with `fuzz/src/lib.rs`, which this crate's tests cannot build): a
//! seed that panics, or a target whose seeds were forgotten, fails here
//! before anyone runs the fuzzer.

use std::path::{Path, PathBuf};

use keras2safetensors::keras::config::LayerConfig;
use keras2safetensors::{
    export, inspect, tensors::TensorFile, ConvertOptions, Layout, PlanOptions, ReadOptions,
    WriteOptions,
};

fn seeds(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "{target} has no seeds");
    files
}

fn keras_calls(input: &Path, out: &Path) {
    if keras2safetensors::open(input, &ReadOptions::default()).is_ok() {
        for layout in [Layout::Keras, Layout::PyTorch] {
            let options = ConvertOptions {
                plan: PlanOptions {
                    layout,
                    ..PlanOptions::default()
                },
                write: WriteOptions {
                    force: true,
                    ..WriteOptions::default()
                },
                ..ConvertOptions::default()
            };
            let _ = keras2safetensors::convert_file(input, out, &options, &mut |_| {});
        }
    }
    let _ = inspect::inspect(input, &ReadOptions::default());
}

fn safetensors_calls(input: &Path) {
    let _ = inspect::inspect(input, &ReadOptions::default());
    if let Ok(file) = TensorFile::open(input, &ReadOptions::default(), &PlanOptions::default()) {
        for i in 0..file.tensors().len() {
            let _ = file.read(i);
        }
    }
}

#[test]
fn every_target_has_its_seeds_run_here() {
    let targets: Vec<String> =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets"))
            .unwrap()
            .map(|e| {
                e.unwrap()
                    .path()
                    .file_stem()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
    let source = include_str!("fuzz_smoke.rs");
    for target in targets {
        assert!(
            source.contains(&format!("seeds(\"{target}\")")),
            "fuzz target {target} has no smoke run in tests/fuzz_smoke.rs"
        );
    }
}

#[test]
fn keras_file_and_archive_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    for seed in seeds("keras_file")
        .into_iter()
        .chain(seeds("keras_archive"))
    {
        keras_calls(&seed, &out);
    }
    // Member seeds are raw members; the archive target builds archives.
    assert!(!seeds("keras_archive_members").is_empty());
}

#[test]
fn safetensors_reader_seeds() {
    for seed in seeds("safetensors_reader") {
        safetensors_calls(&seed);
    }
}

#[test]
fn tf_checkpoint_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    for seed in seeds("tf_index")
        .into_iter()
        .chain(seeds("tf_bundle_entries"))
    {
        // An index alone: every read refers to shards that are not there.
        let index = dir.path().join("ckpt.index");
        std::fs::copy(&seed, &index).unwrap();
        keras_calls(&index, &out);
    }
}

#[test]
fn saved_model_pb_seeds() {
    // As the target builds it: the seed as saved_model.pb beside basic-pitch's
    // variables, no keras_metadata.pb.
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("savedmodel");
    std::fs::create_dir_all(folder.join("variables")).unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/third_party/basic_pitch_nmp");
    for name in ["variables.index", "variables.data-00000-of-00001"] {
        std::fs::copy(
            fixture.join("variables").join(name),
            folder.join("variables").join(name),
        )
        .unwrap();
    }
    let out = dir.path().join("out.safetensors");
    for seed in seeds("saved_model_pb") {
        std::fs::copy(&seed, folder.join("saved_model.pb")).unwrap();
        keras_calls(&folder, &out);
    }
}

#[test]
fn keras_config_seeds() {
    let dir = tempfile::tempdir().unwrap();
    let weights = dir.path().join("model.weights.h5");
    std::fs::copy(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/k3_classic_separable.weights.h5"),
        &weights,
    )
    .unwrap();
    for seed in seeds("keras_config") {
        let text = std::fs::read_to_string(&seed).unwrap();
        LayerConfig::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", seed.display()));
        let options = ReadOptions {
            config: Some(seed.clone()),
            ..ReadOptions::default()
        };
        if let Ok(mut model) = keras2safetensors::open(&weights, &options) {
            let _ = export::plan(&mut model, &weights, &PlanOptions::default());
        }
    }
}

#[test]
fn shard_folder_seeds() {
    const FILES: [&str; 6] = [
        "m.weights.json",
        "m_00000.weights.h5",
        "m_00001.weights.h5",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let separator = b"\n@@file@@\n";
    for seed in seeds("shard_folder") {
        let data = std::fs::read(&seed).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut rest = &data[..];
        for name in FILES {
            let (part, next) = match rest.windows(separator.len()).position(|w| w == separator) {
                Some(at) => (&rest[..at], &rest[at + separator.len()..]),
                None => (rest, &rest[rest.len()..]),
            };
            std::fs::write(dir.path().join(name), part).unwrap();
            rest = next;
        }
        let out = dir.path().join("out.safetensors");
        keras_calls(&dir.path().join(FILES[0]), &out);
        safetensors_calls(dir.path());
    }
}
