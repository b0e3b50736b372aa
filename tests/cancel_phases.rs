//! A stop asked for (what SIGINT and SIGTERM do) ends every phase with the
//! same error, and leaves nothing behind: reading a file's structure,
//! planning, reading data for `--stats`, `verify` and `manifest`, writing.
//! One test in a file of its own: the stop is process-wide and cannot be
//! taken back, so it would stop every other test of a shared binary.
//! `tests/hostile_files.rs` sends real signals to the binary.

mod common;

use common::*;
use keras2safetensors::export::{self, WriteOptions};
use keras2safetensors::tensors::TensorFile;
use keras2safetensors::{cancel, compare, inspect, manifest, Error, PlanOptions, ReadOptions};

fn assert_stopped<T>(what: &str, result: Result<T, Error>) {
    match result {
        Ok(_) => panic!("{what}: went on after the stop"),
        Err(e) => assert!(
            e.to_string().contains("interrupted (Ctrl-C or SIGTERM)"),
            "{what}: {e}"
        ),
    }
}

#[test]
fn a_stop_ends_every_phase() {
    let dir = tempfile::tempdir().unwrap();
    let keras = fixture("tiny_efficientdet_full.h5");
    let sharded = fixture("k3_tiny_efficientdet_sharded.weights.json");
    let read = ReadOptions::default();
    // Everything a phase needs, made before the stop.
    let converted = dir.path().join("converted.safetensors");
    keras2safetensors::convert_file(&keras, &converted, &Default::default(), &mut |_| {}).unwrap();
    let mut model = keras2safetensors::open(&keras, &read).unwrap();
    // A plan takes the weights of the model it is given.
    let mut unplanned = keras2safetensors::open(&keras, &read).unwrap();
    let plan = export::plan(&mut model, &keras, &PlanOptions::default()).unwrap();
    let mut summary = inspect::inspect(&keras, &read).unwrap();
    let tensors = TensorFile::open(&converted, &read, &PlanOptions::default()).unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir_all(&out).unwrap();

    cancel::request();

    assert_stopped("open", keras2safetensors::open(&keras, &read));
    assert_stopped("open sharded", keras2safetensors::open(&sharded, &read));
    assert_stopped(
        "open archive",
        keras2safetensors::open(&fixture("k3_tiny_efficientdet.keras"), &read),
    );
    assert_stopped("inspect", inspect::inspect(&keras, &read));
    assert_stopped(
        "plan",
        export::plan(&mut unplanned, &keras, &PlanOptions::default()),
    );
    assert_stopped("stats", inspect::add_stats(&mut summary, &keras, &read));
    assert_stopped("verify", compare::verify(&keras, &converted, &read));
    assert_stopped("manifest", manifest::build(&converted, &tensors));
    for (max_shard_bytes, target) in [
        (None, out.join("model.safetensors")),
        (Some(10_000), out.join("new/model")),
    ] {
        let options = WriteOptions {
            max_shard_bytes,
            ..WriteOptions::default()
        };
        assert_stopped(
            "write",
            export::write(&plan, &model, &target, &options, &mut |_| {}),
        );
    }
    assert_eq!(
        std::fs::read_dir(&out).unwrap().count(),
        0,
        "nothing left behind"
    );
}
