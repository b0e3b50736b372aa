//! Outputs behave like `cp`: every output is planned before anything is
//! written, a batch never loses a file, `-o` takes a file, a folder or
//! `-`, files get the usual permissions, and the same input gives the same
//! bytes every time.

mod common;

use std::path::{Path, PathBuf};

use common::*;

fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn ok(args: &[&str]) -> std::process::Output {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", stderr(&out));
    out
}

#[test]
fn a_batch_gives_every_input_its_own_output() {
    let dir = tempfile::tempdir().unwrap();
    let inputs = dir.path().join("in");
    std::fs::create_dir_all(&inputs).unwrap();
    // Both would be `x.safetensors`.
    std::fs::copy(
        fixture("k3_classic_separable.keras"),
        inputs.join("x.keras"),
    )
    .unwrap();
    std::fs::copy(
        fixture("k3_classic_separable.weights.h5"),
        inputs.join("x.weights.h5"),
    )
    .unwrap();
    let out = dir.path().join("out");
    let result = ok(&[
        "convert",
        inputs.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(
        files_in(&out),
        ["x.keras.safetensors", "x.weights.h5.safetensors"]
    );
    assert!(
        stdout(&result).contains("2 of 2 converted"),
        "{}",
        stdout(&result)
    );

    // The same input twice is converted once.
    let twice = dir.path().join("twice");
    let m = fixture("classic_conv2d_full.h5");
    let result = ok(&[
        "convert",
        m.to_str().unwrap(),
        m.to_str().unwrap(),
        "-o",
        twice.to_str().unwrap(),
    ]);
    assert_eq!(files_in(&twice), ["classic_conv2d_full.safetensors"]);
    assert!(
        stderr(&result).contains("converted once"),
        "{}",
        stderr(&result)
    );
    assert!(
        stdout(&result).contains("1 of 1 converted"),
        "{}",
        stdout(&result)
    );
}

#[test]
fn a_stale_shard_folder_is_refused_then_replaced_whole() {
    let dir = tempfile::tempdir().unwrap();
    let mix = dir.path().join("mix");
    ok(&[
        "convert",
        fixture("tiny_efficientdet_full.h5").to_str().unwrap(),
        "-o",
        mix.to_str().unwrap(),
        "--max-shard-size",
        "8KB",
        "-q",
    ]);
    assert_eq!(files_in(&mix).len(), 4, "3 shards and the index");
    std::fs::write(mix.join("notes.txt"), "mine").unwrap();
    let other = fixture("classic_conv2d_full.h5");
    let refused = run(&[
        "convert",
        other.to_str().unwrap(),
        "-o",
        mix.to_str().unwrap(),
        "--max-shard-size",
        "8KB",
    ]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        stderr(&refused).contains("output exists already"),
        "{}",
        stderr(&refused)
    );
    ok(&[
        "convert",
        other.to_str().unwrap(),
        "-o",
        mix.to_str().unwrap(),
        "--max-shard-size",
        "8KB",
        "--force",
        "-q",
    ]);
    assert_eq!(files_in(&mix), ["model.safetensors", "notes.txt"]);
    let verify = run(&["verify", other.to_str().unwrap(), mix.to_str().unwrap()]);
    assert!(verify.status.success(), "{}", stdout(&verify));
}

#[cfg(unix)]
#[test]
fn outputs_get_the_mode_cp_gives_them() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let single = dir.path().join("one.safetensors");
    let shards = dir.path().join("shards");
    let input = fixture("tiny_efficientdet_full.h5");
    let binary = env!("CARGO_BIN_EXE_keras2safetensors");
    let script = format!(
        "umask 022 && \"{binary}\" convert \"{i}\" -o \"{single}\" -q && \"{binary}\" convert \"{i}\" -o \"{shards}\" --max-shard-size 8KB -q",
        i = input.display(),
        single = single.display(),
        shards = shards.display(),
    );
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut outputs: Vec<PathBuf> = vec![single];
    outputs.extend(files_in(&shards).iter().map(|n| shards.join(n)));
    assert_eq!(outputs.len(), 5);
    for path in outputs {
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "{}", path.display());
    }
}

#[test]
fn o_takes_a_folder_a_file_or_standard_output() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("classic_conv2d_full.h5");
    // An existing folder: the input's name inside it.
    ok(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        dir.path().to_str().unwrap(),
        "-q",
    ]);
    let file = dir.path().join("classic_conv2d_full.safetensors");
    assert!(file.is_file());
    // A folder that does not exist: one line naming it, no temporary name.
    let missing = dir.path().join("missing");
    let out = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        &format!("{}/", missing.display()),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("{}: no such folder", missing.display())),
        "{err}"
    );
    assert!(!err.contains(".keras2safetensors-"), "{err}");
    // Standard output: the same bytes as the file, and nothing else.
    let out = ok(&["convert", input.to_str().unwrap(), "-o", "-"]);
    assert_eq!(out.stdout, std::fs::read(&file).unwrap());
    // Standard input cannot be read.
    let out = run(&["convert", "-", "-o", dir.path().join("x").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("needs a seekable file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("tiny_efficientdet_full.h5");
    let (a, b) = (
        dir.path().join("a.safetensors"),
        dir.path().join("b.safetensors"),
    );
    for out in [&a, &b] {
        ok(&[
            "convert",
            input.to_str().unwrap(),
            "-o",
            out.to_str().unwrap(),
            "--layout",
            "pytorch",
            "-q",
        ]);
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn a_folder_without_keras_files_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "not a model").unwrap();
    let out = run(&[
        "convert",
        empty.to_str().unwrap(),
        "-o",
        dir.path().join("out").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no Keras file found in"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.path().join("out").exists());
}
