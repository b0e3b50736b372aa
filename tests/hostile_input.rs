//! Crafted files that try to make the reader work without bound, write
//! more than it read, panic, or send escape sequences to a terminal
//! (issue 10). Each is built here, at test time, by a small HDF5 writer
//! (`support/h5write.rs`); each must end in a clear `refused:` line or a
//! correct result, within a time bound and, where the attack was one of
//! memory, a peak-memory bound measured on the real binary.

mod common;
#[path = "support/h5write.rs"]
mod h5write;
#[path = "support/measured.rs"]
mod measured;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use h5write::{keras2_weights, Attr, Builder, Storage};
use measured::{run, Run};

/// Generous bounds for debug builds on 2 busy cores.
const TIME_BOUND: Duration = Duration::from_secs(10);

/// Asserts the time bound on a run: on its processor time, and, far more
/// generously, on the wall clock (a hang uses no processor time).
fn assert_fast(run: &Run) {
    assert!(run.cpu < TIME_BOUND, "took {:?} of processor time", run.cpu);
    assert!(run.elapsed < 3 * TIME_BOUND, "took {:?}", run.elapsed);
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// `convert INPUT -o OUTPUT`, measured.
fn convert(input: &Path, output: &Path) -> Run {
    run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ])
}

fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}_{i}")).collect()
}

/// Writes the crafted files into `K2S_HOSTILE_DUMP` to look at them with
/// other tools (h5py, h5dump).
#[test]
fn dump_for_inspection() {
    let Ok(dir) = std::env::var("K2S_HOSTILE_DUMP") else {
        return;
    };
    let dir = Path::new(&dir);
    write(
        dir,
        "k2_small.h5",
        &keras2_weights(&names("dense", 3), &[1.0, 2.0])
            .libhdf5_compatible()
            .finish(),
    );
    let mut b = Builder::new();
    let layers = b.group(Builder::ROOT, "layers");
    let vars = b.groups(layers, "dense/vars");
    b.attr(vars, "name", Attr::Scalar("dense".into()));
    b.dataset_f32(vars, "0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
    b.dataset(vars, "1", &[2], 4, Storage::Fill(1.5));
    let zeros = vec![0u8; 4 * 8];
    let mut deflated = zeros.clone();
    for _ in 0..2 {
        deflated = deflate(&deflated);
    }
    b.dataset(
        vars,
        "2",
        &[5],
        4,
        Storage::Chunked {
            chunk: vec![8],
            deflates: 2,
            chunks: vec![(vec![0], deflated)],
        },
    );
    b.group(Builder::ROOT, "vars");
    write(dir, "k3_small.h5", &b.libhdf5_compatible().finish());
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// A Keras 3 object tree with one Dense layer object per key (kernel and bias).
fn keras3_tree(keys: &[String]) -> Builder {
    keras3_tree_with(keys, true)
}

/// A Keras 3 object tree; with `bias: false`, each Dense layer has only its
/// kernel (three HDF5 objects a layer: its group, `vars`, the kernel).
fn keras3_tree_with(keys: &[String], bias: bool) -> Builder {
    let mut b = Builder::new();
    let layers = b.group(Builder::ROOT, "layers");
    for key in keys {
        let object = b.group(layers, key);
        let vars = b.group(object, "vars");
        b.dataset_f32(vars, "0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        if bias {
            b.dataset_f32(vars, "1", &[2], &[0.5, 0.25]);
        }
    }
    b.group(Builder::ROOT, "vars");
    b
}

/// Defect 7: a 70,000-character layer name (h5py writes one without
/// complaint) panicked the table's formatting. It is elided in the table
/// and kept whole in JSON.
#[test]
fn a_huge_name_is_elided_in_the_table() {
    let dir = tempfile::tempdir().unwrap();
    let key = format!("dense_{}", "x".repeat(70_000));
    let path = write(
        dir.path(),
        "long.weights.h5",
        &keras3_tree(std::slice::from_ref(&key)).finish(),
    );
    let table = run(&["inspect", path.to_str().unwrap()]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(!table.stderr.contains("panicked"), "{}", table.stderr);
    assert!(table.stdout.contains("dense_xxx"), "{}", table.stdout);
    assert!(table.stdout.contains('…'), "{}", table.stdout);
    let widest = table
        .stdout
        .lines()
        .max_by_key(|l| l.chars().count())
        .unwrap();
    let width = widest.chars().count();
    let start: String = widest.chars().take(100).collect();
    assert!(width <= 410, "a line of {width} characters: {start}");
    let json = run(&["inspect", "--json", path.to_str().unwrap()]);
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let summary: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(summary["layers"][0]["path"], key.as_str());
}

/// Defect 12: names holding terminal escape sequences (a window title
/// change, a colour, a screen clear, a C1 CSI) reach the terminal spelled
/// out, in the table and in error messages; JSON keeps them exactly.
#[test]
fn escape_sequences_in_names_never_reach_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let evil = "dense_\u{1b}]0;pwned\u{7}\u{1b}[31m\u{9b}2J";
    let path = write(
        dir.path(),
        "evil.weights.h5",
        &keras3_tree(&[evil.to_string()]).finish(),
    );
    let raw = |text: &str| text.chars().any(|c| c.is_control() && c != '\n');
    let table = run(&["inspect", path.to_str().unwrap()]);
    assert_eq!(table.code, Some(0), "{}", table.stderr);
    assert!(!raw(&table.stdout), "{:?}", table.stdout);
    assert!(
        table
            .stdout
            .contains("dense_\\x1b]0;pwned\\x07\\x1b[31m\\u{9b}2J"),
        "{}",
        table.stdout
    );
    let json = run(&["inspect", "--json", path.to_str().unwrap()]);
    let summary: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(summary["layers"][0]["path"], evil);

    // In an error: a listed layer with no group.
    let mut b = keras2_weights(&names("dense", 1), &[1.0]);
    b.attr(
        Builder::ROOT,
        "layer_names",
        Attr::Strings(vec!["ghost\u{1b}[2J\u{7}".into()]),
    );
    let path = write(dir.path(), "ghost.h5", &b.finish());
    let out = run(&["inspect", path.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{}", out.stdout);
    assert!(!raw(&out.stderr), "{:?}", out.stderr);
    assert!(out.stderr.contains("ghost\\x1b[2J\\x07"), "{}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
}

/// A Keras 2 weights file of `n` Dense layers and the model config that
/// describes them (for `--config`).
fn keras2_with_config(n: usize) -> (Builder, String) {
    let names = names("dense", n);
    let layers: Vec<serde_json::Value> = names
        .iter()
        .map(|name| {
            serde_json::json!({"class_name": "Dense", "config": {"name": name, "units": 1, "use_bias": true}})
        })
        .collect();
    let config = serde_json::json!({"class_name": "Sequential", "config": {"name": "seq", "layers": layers}});
    (keras2_weights(&names, &[0.5]), config.to_string())
}

/// Asserts a run ended in one `refused:` line naming the input, within
/// the time bound, and left no output behind.
fn assert_refused(run: &Run, input: &Path, what: &str) {
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let line = run.stderr.trim_end();
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(
        line.starts_with(&format!("error: {}: refused: ", input.display())),
        "{line}"
    );
    assert!(line.contains(what), "{line}");
    assert_fast(run);
}

/// Zeros as Keras 2 stores a chunked float32 bias: `deflates` deflate
/// filters, run in order when written.
fn deflated_zeros(bytes: usize, deflates: usize) -> Vec<u8> {
    let mut data = vec![0u8; bytes];
    for _ in 0..deflates {
        data = deflate(&data);
    }
    data
}

/// Defect 1, first form: 200 biases of 4 floats, each declaring one
/// chunk of 2^26 floats (256 MiB). Before, a 1 MB file took 42 s and
/// 265 MB to convert; the chunk is now refused before anything is read.
#[test]
fn a_chunk_far_larger_than_its_dataset_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let names = names("dense", 200);
    let mut b = keras2_weights(&[], &[]);
    b.attr(Builder::ROOT, "layer_names", Attr::Strings(names.clone()));
    // The payload is never decompressed: a short, valid stream will do.
    let payload = deflated_zeros(4096, 2);
    for name in &names {
        let layer = b.group(Builder::ROOT, name);
        b.attr(
            layer,
            "weight_names",
            Attr::Strings(vec![format!("{name}/bias:0")]),
        );
        let scope = b.group(layer, name);
        b.dataset(
            scope,
            "bias:0",
            &[4],
            4,
            Storage::Chunked {
                chunk: vec![1 << 26],
                deflates: 2,
                chunks: vec![(vec![0], payload.clone())],
            },
        );
    }
    let input = write(dir.path(), "bomb.h5", &b.finish());
    let output = dir.path().join("out.safetensors");
    for args in [
        vec![
            "convert",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        vec!["inspect", "--stats", input.to_str().unwrap()],
    ] {
        let run = run(&args);
        assert_refused(
            &run,
            &input,
            "declares chunks of 268435456 bytes for 16 bytes",
        );
        assert!(run.peak_kib < 64 << 10, "peak {} KiB", run.peak_kib);
        eprintln!("{}: {:?}, peak {} KiB", args[0], run.elapsed, run.peak_kib);
    }
    assert!(!output.exists());
}

/// Defect 1, second form: chunks within the per-chunk limit (1 MiB for a
/// bias of 4 floats), each deflated 8 times, in a file of a few hundred KB:
/// decompression stops at 32 x the file's size + 16 MiB, where converting
/// all of them would inflate 320 MiB.
#[test]
fn decompression_past_the_budget_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let chunk = 1usize << 20;
    let payload = deflated_zeros(chunk, 8);
    let build = |count: usize| {
        let names = names("dense", count);
        let mut b = keras2_weights(&[], &[]);
        b.attr(Builder::ROOT, "layer_names", Attr::Strings(names.clone()));
        for name in &names {
            let layer = b.group(Builder::ROOT, name);
            b.attr(
                layer,
                "weight_names",
                Attr::Strings(vec![format!("{name}/bias:0")]),
            );
            let scope = b.group(layer, name);
            b.dataset(
                scope,
                "bias:0",
                &[4],
                4,
                Storage::Chunked {
                    chunk: vec![(chunk / 4) as u64],
                    deflates: 8,
                    chunks: vec![(vec![0], payload.clone())],
                },
            );
        }
        b.finish()
    };
    let input = write(dir.path(), "inflating.h5", &build(40));
    let output = dir.path().join("out.safetensors");
    let args = [
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    let run1 = run(&args);
    assert_refused(&run1, &input, "--allow-expansion");
    assert!(run1.peak_kib < 128 << 10, "peak {} KiB", run1.peak_kib);
    assert!(!output.exists());
    eprintln!("convert: {:?}, peak {} KiB", run1.elapsed, run1.peak_kib);
    let stats = run(&["inspect", "--stats", input.to_str().unwrap()]);
    assert_refused(&stats, &input, "--allow-expansion");
    // Structure alone is read without decompressing anything.
    assert_eq!(run(&["inspect", input.to_str().unwrap()]).code, Some(0));
    // A few such chunks are within the budget, and read right.
    let small = write(dir.path(), "small.h5", &build(2));
    let out = convert(&small, &output);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let bytes = std::fs::read(&output).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(tensors.tensor("dense_1/bias").unwrap().data(), [0u8; 16]);
    // The user can lift the budget.
    std::fs::remove_file(&output).unwrap();
    let lifted = run(&[
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--allow-expansion",
    ]);
    assert_eq!(lifted.code, Some(0), "{}", lifted.stderr);
}

/// Chunked data is put together chunk by chunk: edge chunks clipped to the
/// dataset, chunks never written filled with the fill value.
#[test]
fn chunks_are_assembled_like_hdf5_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = keras2_weights(&[], &[]);
    b.attr(
        Builder::ROOT,
        "layer_names",
        Attr::Strings(vec!["dense".into()]),
    );
    let layer = b.group(Builder::ROOT, "dense");
    b.attr(
        layer,
        "weight_names",
        Attr::Strings(vec!["dense/kernel:0".into()]),
    );
    let scope = b.group(layer, "dense");
    // A 5 x 3 kernel in 2 x 2 chunks: 6 chunk positions, one never written.
    let value = |r: u64, c: u64| (r * 10 + c) as f32;
    let mut chunks = Vec::new();
    for r0 in [0u64, 2, 4] {
        for c0 in [0u64, 2] {
            if (r0, c0) == (2, 2) {
                continue;
            }
            let mut bytes = Vec::new();
            for r in r0..r0 + 2 {
                for c in c0..c0 + 2 {
                    bytes.extend_from_slice(&value(r, c).to_le_bytes());
                }
            }
            chunks.push((vec![r0, c0], deflate(&bytes)));
        }
    }
    b.dataset(
        scope,
        "kernel:0",
        &[5, 3],
        4,
        Storage::Chunked {
            chunk: vec![2, 2],
            deflates: 1,
            chunks,
        },
    );
    let input = write(dir.path(), "chunks.h5", &b.finish());
    let output = dir.path().join("out.safetensors");
    let out = convert(&input, &output);
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let bytes = std::fs::read(&output).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kernel = tensors.tensor("dense/kernel").unwrap();
    let got: Vec<f32> = kernel
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let mut expected = Vec::new();
    for r in 0..5 {
        for c in 0..3 {
            let missing = (2..4).contains(&r) && c == 2;
            expected.push(if missing { 0.0 } else { value(r, c) });
        }
    }
    assert_eq!(got, expected);
}

/// Defect 2, first form: 1000 names hard-linked to one 1 MiB dataset
/// (3.4 MB in, 1.05 GB out before). Refused at read.
#[test]
fn a_dataset_reached_by_many_names_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let names = names("dense", 1000);
    let mut b = keras2_weights(&[], &[]);
    b.attr(Builder::ROOT, "layer_names", Attr::Strings(names.clone()));
    let values: Vec<f32> = (0..1 << 18).map(|i| i as f32).collect();
    let mut shared = None;
    for name in &names {
        let layer = b.group(Builder::ROOT, name);
        b.attr(
            layer,
            "weight_names",
            Attr::Strings(vec![format!("{name}/kernel:0")]),
        );
        let scope = b.group(layer, name);
        match shared {
            None => shared = Some(b.dataset_f32(scope, "kernel:0", &[512, 512], &values)),
            Some(id) => b.link(scope, "kernel:0", id),
        }
    }
    let input = write(dir.path(), "links.h5", &b.finish());
    let output = dir.path().join("out.safetensors");
    for args in [
        vec![
            "convert",
            input.to_str().unwrap(),
            "-o",
            output.to_str().unwrap(),
        ],
        vec!["inspect", input.to_str().unwrap()],
    ] {
        let run = run(&args);
        assert_refused(&run, &input, "are one dataset (hard links)");
        assert!(run.peak_kib < 128 << 10, "peak {} KiB", run.peak_kib);
        eprintln!("{}: {:?}, peak {} KiB", args[0], run.elapsed, run.peak_kib);
    }
    assert!(!output.exists());
}

/// A Keras 2 file is walked for links while its layers are read, side by
/// side; when both go wrong, the walk's refusal is the one reported, as
/// when the walk ran first. Here `layer_names` lists a layer with no group
/// (the read fails) and a second name is hard-linked to a layer's group
/// (the walk refuses).
#[test]
fn the_link_walk_is_reported_before_what_the_read_found() {
    let dir = tempfile::tempdir().unwrap();
    let listing = Attr::Strings(vec!["dense".into(), "missing".into()]);
    let mut b = keras2_weights(&["dense".to_string()], &[1.0, 2.0]);
    b.remove_attr(Builder::ROOT, "layer_names");
    b.attr(Builder::ROOT, "layer_names", listing.clone());
    let mut linked = keras2_weights(&[], &[]);
    let layer = linked.group(Builder::ROOT, "dense");
    linked.attr(
        layer,
        "weight_names",
        Attr::Strings(vec!["dense/bias:0".into()]),
    );
    let scope = linked.group(layer, "dense");
    linked.dataset_f32(scope, "bias:0", &[2], &[1.0, 2.0]);
    linked.link(Builder::ROOT, "twin", layer);
    linked.remove_attr(Builder::ROOT, "layer_names");
    linked.attr(Builder::ROOT, "layer_names", listing);
    let input = write(dir.path(), "twin.h5", &linked.finish());
    let output = dir.path().join("out.safetensors");
    let linked_run = convert(&input, &output);
    assert_refused(&linked_run, &input, "is reached twice (a hard link)");
    assert!(!output.exists());
    // Without the link, the read's own error.
    let input = write(dir.path(), "missing.h5", &b.finish());
    let run = convert(&input, &output);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("`missing` is listed in layer_names but has no group"),
        "{}",
        run.stderr
    );
}

/// Groups nested past `MAX_GROUP_DEPTH` (64) are refused by the link walk:
/// each level is a step of recursion, and a crafted file can nest deeper
/// than the stack goes. The limit is a refusal, not damage.
#[test]
fn groups_nested_too_deep_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = keras2_weights(&["dense".to_string()], &[1.0]);
    let mut group = Builder::ROOT;
    for level in 0..100 {
        group = b.group(group, &format!("g{level}"));
    }
    let input = write(dir.path(), "deep.h5", &b.finish());
    let output = dir.path().join("out.safetensors");
    let run = convert(&input, &output);
    assert_refused(&run, &input, "groups nest deeper than 64 levels");
    assert!(!output.exists());
}

/// Defect 2, second form: datasets never written (HDF5 gives their fill
/// value) adding more than the file's size to the output need --allow-fill.
#[test]
fn never_written_data_past_the_input_size_needs_a_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut names = names("dense", 4);
    names.insert(0, "real".into());
    let mut b = keras2_weights(&[], &[]);
    b.attr(Builder::ROOT, "layer_names", Attr::Strings(names.clone()));
    for name in &names {
        let layer = b.group(Builder::ROOT, name);
        b.attr(
            layer,
            "weight_names",
            Attr::Strings(vec![format!("{name}/kernel:0")]),
        );
        let scope = b.group(layer, name);
        if name == "real" {
            let values: Vec<f32> = (0..1 << 16).map(|i| i as f32).collect();
            b.dataset_f32(scope, "kernel:0", &[256, 256], &values);
        } else {
            b.dataset(scope, "kernel:0", &[256, 256], 4, Storage::Fill(1.5));
        }
    }
    let input = write(dir.path(), "fill.h5", &b.finish());
    let output = dir.path().join("out.safetensors");
    let args = [
        "convert",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
    ];
    let refused = run(&args);
    assert_refused(&refused, &input, "--allow-fill");
    assert!(!output.exists());
    let allowed = run(&[&args[..], &["--allow-fill"]].concat());
    assert_eq!(allowed.code, Some(0), "{}", allowed.stderr);
    let bytes = std::fs::read(&output).unwrap();
    let tensors = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let filled = tensors.tensor("dense_3/kernel").unwrap();
    assert!(filled
        .data()
        .chunks_exact(4)
        .all(|v| v == 1.5f32.to_le_bytes()));
}

/// Defect 4: `layer_names0` and 5000 empty `layer_namesK` attributes. Each
/// chunk used to be looked up in a fresh read of every attribute (5000 took
/// 514 s). These are compact attributes; the file kept them in
/// dense storage, which this writer does not write.
#[test]
fn thousands_of_name_list_chunks_are_read_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut b = keras2_weights(&names("dense", 1), &[1.0]);
    // Replace the list by its chunks: the real name, then 4999 empty ones.
    b.remove_attr(Builder::ROOT, "layer_names");
    b.attr(
        Builder::ROOT,
        "layer_names0",
        Attr::Strings(vec!["dense_0".into()]),
    );
    for k in 1..5000 {
        b.attr(
            Builder::ROOT,
            &format!("layer_names{k}"),
            Attr::Strings(Vec::new()),
        );
    }
    let input = write(dir.path(), "names.h5", &b.finish());
    let run = run(&["inspect", "--json", input.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(summary["layers"].as_array().unwrap().len(), 1);
    assert_fast(&run);
    eprintln!("inspect: {:?}, peak {} KiB", run.elapsed, run.peak_kib);
}

/// Defect 5: 100,000 HDF5 objects in a Keras 3 object tree (33,334 layer
/// objects, each a group, its `vars` and a kernel) and in a Keras 2 file
/// read with its config (33,334 layers, each a group, its scope group and
/// a bias). Sorting children by creation order, matching objects and
/// config entries, and reading a big group's names were quadratic: 40,000
/// objects took 45 s, Keras 2 with 40,000 layers and a config 6.5 s.
#[test]
fn a_hundred_thousand_objects_are_read_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let layers = 33_334;
    let started = Instant::now();
    let tree = write(
        dir.path(),
        "tree.weights.h5",
        &keras3_tree_with(&names("dense", layers), false).finish(),
    );
    let (file, config) = keras2_with_config(layers);
    let legacy = write(dir.path(), "legacy.h5", &file.finish());
    let config_path = dir.path().join("config.json");
    std::fs::write(&config_path, config).unwrap();
    eprintln!("generated in {:?}", started.elapsed());

    let jobs = [
        (&tree, vec!["inspect", "--json", tree.to_str().unwrap()]),
        (
            &legacy,
            vec![
                "inspect",
                "--json",
                legacy.to_str().unwrap(),
                "--config",
                config_path.to_str().unwrap(),
            ],
        ),
    ];
    // Both at once: one per core.
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .iter()
            .map(|(_, args)| scope.spawn(|| run(args)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((input, _), run) in jobs.iter().zip(runs) {
        assert_eq!(run.code, Some(0), "{}", run.stderr);
        let summary: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        let found = summary["layers"].as_array().unwrap();
        assert_eq!(found.len(), layers);
        // Model order, and classes from the config or the object keys.
        assert_eq!(found[layers - 1]["path"], format!("dense_{}", layers - 1));
        assert_eq!(found[7]["class"], "Dense");
        let size = std::fs::metadata(input).unwrap().len() >> 10;
        eprintln!(
            "{}: {:?} ({:?} of processor time), peak {} KiB for {size} KiB",
            input.display(),
            run.elapsed,
            run.cpu,
            run.peak_kib
        );
        assert_fast(&run);
        assert!(run.peak_kib < 512 << 10, "peak {} KiB", run.peak_kib);
    }
}
