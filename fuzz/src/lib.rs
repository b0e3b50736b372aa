//! What the fuzz targets run on one input: the bytes are written to a file in
//! a scratch folder (the crate reads paths, not buffers), then read through the
//! same public calls the command line makes. Any `Result` is fine; a panic,
//! a hang or a huge allocation is a bug.
//!
//! `tests/fuzz_regressions.rs` at the crate root runs saved inputs through the
//! same calls (it keeps its own copy of them, since the crate's tests must not
//! build this folder).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use keras2safetensors::{
    dtype::Dtype, inspect, keras, manifest, tensors::TensorFile, ConvertOptions, Layout,
    PlanOptions, ReadOptions, WriteOptions,
};

/// One scratch folder per fuzzing process, removed at exit by the OS's tmp
/// cleaning (libFuzzer exits without running destructors).
fn scratch() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("k2s-fuzz-")
            .tempdir()
            .expect("scratch folder");
        std::fs::create_dir(dir.path().join("in")).expect("input folder");
        std::fs::create_dir(dir.path().join("out")).expect("output folder");
        dir
    })
    .path()
}

/// Writes `data` to `in/<name>` in the scratch folder (alone there, so a
/// sharded-save index in the input can name no other file).
pub fn write_input(name: &str, data: &[u8]) -> PathBuf {
    let path = scratch().join("in").join(name);
    std::fs::write(&path, data).expect("write fuzz input");
    path
}

/// Targets `keras_file`, `keras_archive` and `keras_archive_members`:
/// detect, open, convert, inspect. A file that opens is converted twice:
/// with the default options, and in PyTorch layout cast to f16 (the paths
/// that move axes and cast, on shapes the file chose).
pub fn keras_calls(input: &Path) {
    let _ = keras::detect(input);
    if keras2safetensors::open(input, &ReadOptions::default()).is_ok() {
        let output = scratch().join("out").join("model.safetensors");
        let write = WriteOptions {
            force: true,
            ..WriteOptions::default()
        };
        let default = ConvertOptions {
            write: write.clone(),
            ..ConvertOptions::default()
        };
        let pytorch = ConvertOptions {
            write,
            plan: PlanOptions {
                layout: Layout::PyTorch,
                dtype: Some(Dtype::F16),
                num_batches_tracked: true,
                ..PlanOptions::default()
            },
            ..ConvertOptions::default()
        };
        for options in [default, pytorch] {
            let _ = keras2safetensors::convert_file(input, &output, &options, &mut |_| {});
            let _ = std::fs::remove_file(&output);
        }
    }
    let _ = inspect::inspect(input, &ReadOptions::default());
}

/// Target `safetensors_reader`: inspect, open as tensors and read every
/// tensor, and build the manifest.
pub fn safetensors_calls(input: &Path) {
    let _ = inspect::inspect(input, &ReadOptions::default());
    if let Ok(file) = TensorFile::open(input, &ReadOptions::default(), &PlanOptions::default()) {
        for i in 0..file.tensors().len() {
            let _ = file.read(i);
        }
        let _ = manifest::build(input, &file);
    }
}
