//! Crafted files that try to make the reader work without bound, write
//! more than it read, panic, or send escape sequences to a terminal
//! (issue 10). Each is built here, at test time, by a small HDF5 writer
//! (`support/h5write.rs`); each must end in a clear `refused:` line or a
//! correct result, within a time bound and, where the attack was one of
//! memory, a peak-memory bound measured on the real binary.

mod common;
#[path = "support/h5write.rs"]
mod h5write;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use h5write::{keras2_weights, Attr, Builder, Storage};

/// Generous bounds for debug builds on 2 busy cores.
const TIME_BOUND: Duration = Duration::from_secs(10);

/// What one run of the binary did.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// Peak resident memory of the process, from `wait4`.
    peak_kib: u64,
}

/// Runs the binary with `args`, measuring its time and peak memory.
fn run(args: &[&str]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let started = Instant::now();
    let child = Command::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid, and wait4 only writes into it.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for our own child, which `child` never waits for.
    let waited = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(waited, pid, "wait4");
    let elapsed = started.elapsed();
    std::mem::forget(child);
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Run {
        code,
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
        elapsed,
        peak_kib: usage.ru_maxrss as u64,
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
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

/// A Keras 3 object tree with one Dense layer object per key.
fn keras3_tree(keys: &[String]) -> Builder {
    let mut b = Builder::new();
    let layers = b.group(Builder::ROOT, "layers");
    for key in keys {
        let vars = b.groups(layers, &format!("{key}/vars"));
        b.dataset_f32(vars, "0", &[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        b.dataset_f32(vars, "1", &[2], &[0.5, 0.25]);
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
        &keras3_tree(&[key.clone()]).finish(),
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
