//! Issue 13, goal 5: the cost per layer. A Keras 2 weights-only file of
//! many layers, its `layer_names` split into `layer_names0`,
//! `layer_names1`, ... as tf-keras splits a long list, converts with every
//! layer and value, in memory far below what the HDF5 crate's caches used
//! to hold (each object header, member list and heap it read, for the life
//! of the file: 146 MB for these 30,000 layers, 716 MiB for 100,000).
//!
//! A test binary of its own: the peak memory of a child, from `wait4`,
//! includes the memory of the process that started it (a spawned child
//! shares it until it execs), so this process stays small: the file is
//! written by another run of this binary.

#[path = "support/h5write.rs"]
mod h5write;
#[path = "support/measured.rs"]
mod measured;

use std::process::{Command, Stdio};

use h5write::keras2_weights;

const LAYERS: usize = 30_000;
const FILE_VAR: &str = "K2S_MANY_LAYERS_FILE";
const VALUES: [f32; 2] = [0.25, -2.0];

fn names() -> Vec<String> {
    (0..LAYERS).map(|i| format!("dense_{i}")).collect()
}

#[test]
fn a_keras2_file_of_many_layers_with_chunked_names_converts_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("many.h5");
    let status = Command::new(std::env::current_exe().unwrap())
        .args(["write_the_file", "--exact", "--include-ignored", "--quiet"])
        .env(FILE_VAR, &input)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success() && input.exists());
    let output = dir.path().join("many.safetensors");

    let run = measured::run(&[
        "convert",
        "-q",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    let bytes = std::fs::read(&output).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let names = names();
    assert_eq!(tensors.len(), LAYERS);
    for name in &names {
        let t = tensors.tensor(&format!("{name}/bias")).unwrap();
        assert_eq!(t.shape(), [VALUES.len()]);
        assert_eq!(t.data(), VALUES.map(f32::to_le_bytes).concat());
    }
    let peak_kib = run.peak_kib;
    let size = std::fs::metadata(&input).unwrap().len() >> 10;
    eprintln!(
        "convert: {:?}, peak {peak_kib} KiB for {size} KiB",
        run.elapsed
    );
    assert!(peak_kib < 96 << 10, "peak {peak_kib} KiB");
}

/// Writes the file of the test above where `K2S_MANY_LAYERS_FILE` says;
/// does nothing otherwise.
#[test]
#[ignore = "run by the test above, in a process of its own"]
fn write_the_file() {
    let Some(path) = std::env::var_os(FILE_VAR) else {
        return;
    };
    std::fs::write(path, keras2_weights(&names(), &VALUES).finish()).unwrap();
}
