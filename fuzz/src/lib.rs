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

/// `data` cut at every `separator`.
pub fn split<'a>(data: &'a [u8], separator: &[u8]) -> Vec<&'a [u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest
        .windows(separator.len())
        .position(|w| w == separator)
    {
        parts.push(&rest[..at]);
        rest = &rest[at + separator.len()..];
    }
    parts.push(rest);
    parts
}

/// A valid LevelDB-style table (the `.index` of a TF checkpoint) holding
/// `entries` (sorted, later duplicates dropped): one data block, an empty
/// metaindex, an index block, the footer; every block with its masked
/// CRC-32C, snappy-compressed when `snappy`.
pub fn table(mut entries: Vec<(Vec<u8>, Vec<u8>)>, snappy: bool) -> Vec<u8> {
    fn put_varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }
    fn block(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (k, v) in entries {
            put_varint(&mut out, 0);
            put_varint(&mut out, k.len() as u64);
            put_varint(&mut out, v.len() as u64);
            out.extend_from_slice(k);
            out.extend_from_slice(v);
        }
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out
    }
    fn append(file: &mut Vec<u8>, contents: &[u8], snappy: bool) -> (u64, u64) {
        let offset = file.len() as u64;
        let (body, kind) = if snappy {
            (
                snap::raw::Encoder::new()
                    .compress_vec(contents)
                    .expect("snappy"),
                1u8,
            )
        } else {
            (contents.to_vec(), 0u8)
        };
        file.extend_from_slice(&body);
        file.push(kind);
        let mut with_type = body.clone();
        with_type.push(kind);
        let crc = crc32c::crc32c(&with_type);
        let masked = crc.rotate_right(15).wrapping_add(0xa282_ead8);
        file.extend_from_slice(&masked.to_le_bytes());
        (offset, body.len() as u64)
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    entries.dedup_by(|a, b| a.0 == b.0);
    let mut file = Vec::new();
    let data = append(&mut file, &block(&entries), snappy);
    let meta = append(&mut file, &block(&[]), false);
    let mut handle = Vec::new();
    put_varint(&mut handle, data.0);
    put_varint(&mut handle, data.1);
    let last = entries.last().map(|e| e.0.clone()).unwrap_or_default();
    let index = append(&mut file, &block(&[(last, handle)]), snappy);
    let mut footer = Vec::new();
    put_varint(&mut footer, meta.0);
    put_varint(&mut footer, meta.1);
    put_varint(&mut footer, index.0);
    put_varint(&mut footer, index.1);
    footer.resize(40, 0);
    footer.extend_from_slice(&0xdb47_7524_8b80_fb57u64.to_le_bytes());
    file.extend_from_slice(&footer);
    file
}

/// The separator `shard_folder` inputs use between the files of a folder.
pub const FILE_SEPARATOR: &[u8] = b"\n@@file@@\n";

/// The files a `shard_folder` input is cut into, in this order: a Keras
/// sharded index and two shards, a Hugging Face index and its two shards.
pub const FOLDER_FILES: [&str; 6] = [
    "m.weights.json",
    "m_00000.weights.h5",
    "m_00001.weights.h5",
    "model.safetensors.index.json",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
];

/// Target `shard_folder`: `data` cut into the files of one folder (a
/// sharded Keras save and a sharded safetensors save); then every call the
/// command line makes on a folder or an index: open, inspect, read every
/// tensor, convert.
pub fn folder_calls(data: &[u8]) {
    let folder = scratch().join("folder");
    let _ = std::fs::remove_dir_all(&folder);
    std::fs::create_dir_all(&folder).expect("fuzz folder");
    for (name, part) in FOLDER_FILES.iter().zip(split(data, FILE_SEPARATOR)) {
        std::fs::write(folder.join(name), part).expect("fuzz folder file");
    }
    let keras_index = folder.join(FOLDER_FILES[0]);
    keras_calls(&keras_index);
    keras_calls(&folder.join(FOLDER_FILES[2]));
    safetensors_calls(&folder);
    safetensors_calls(&folder.join(FOLDER_FILES[3]));
}

/// A real Keras 3 weights file, for configs to describe.
const CONFIG_WEIGHTS: &[u8] = include_bytes!("../../fixtures/k3_classic_separable.weights.h5");

/// Target `keras_config`: `data` as a model config, parsed alone, given as
/// `--config` to a real weights file, and as the `config.json` and
/// `metadata.json` of a `.keras` archive around that file.
pub fn config_calls(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = keras::config::LayerConfig::parse(&text);
    let weights = write_input("model.weights.h5", CONFIG_WEIGHTS);
    let config = write_input("config.json", data);
    let options = ReadOptions {
        config: Some(config),
        ..ReadOptions::default()
    };
    if let Ok(model) = keras2safetensors::open(&weights, &options) {
        let _ = keras2safetensors::export::plan(&model, &weights, &PlanOptions::default());
        let pytorch = PlanOptions {
            layout: Layout::PyTorch,
            ..PlanOptions::default()
        };
        let _ = keras2safetensors::export::plan(&model, &weights, &pytorch);
    }
    let _ = inspect::inspect(&weights, &options);
    let archive = write_input("model.keras", &keras_archive(data, data, CONFIG_WEIGHTS));
    keras_calls(&archive);
}

/// A `.keras` archive of these three members, stored.
pub fn keras_archive(config: &[u8], metadata: &[u8], weights: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut buffer = std::io::Cursor::new(Vec::new());
    {
        let mut zip = zip::ZipWriter::new(&mut buffer);
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        for (name, bytes) in [
            ("metadata.json", metadata),
            ("config.json", config),
            ("model.weights.h5", weights),
        ] {
            zip.start_file(name, stored).expect("zip member");
            zip.write_all(bytes).expect("zip member bytes");
        }
        zip.finish().expect("zip");
    }
    buffer.into_inner()
}

/// Target `saved_model_pb`: a SavedModel folder of `saved_model.pb` (the
/// input) and `variables/` (`index`, `data`), with no `keras_metadata.pb`;
/// the `keras_file` calls on the folder.
pub fn saved_model_calls(saved_model: &[u8], index: &[u8], data: &[u8]) {
    let folder = scratch().join("savedmodel");
    let variables = folder.join("variables");
    if !variables.is_dir() {
        std::fs::create_dir_all(&variables).expect("fuzz SavedModel folder");
        std::fs::write(variables.join("variables.index"), index).expect("variables index");
        std::fs::write(variables.join("variables.data-00000-of-00001"), data)
            .expect("variables data");
    }
    std::fs::write(folder.join("saved_model.pb"), saved_model).expect("saved_model.pb");
    keras_calls(&folder);
}
