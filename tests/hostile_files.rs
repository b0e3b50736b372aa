//! Hostile files and folders on the filesystem side: named pipes and other
//! non-regular files, folder links that loop, shard links that escape, and
//! SIGTERM in every phase. Each case that once hung runs the binary as a
//! child under a time bound and kills it past the bound, so a regression
//! fails here instead of hanging the test run.

#![cfg(unix)]

mod common;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::{symlink, FileTypeExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Generous: every case here takes well under a second when it works.
const BOUND: Duration = Duration::from_secs(10);

/// Starts the binary with its output going to files (a child printing a
/// lot cannot block on a full pipe).
fn spawn(args: &[&OsStr], env: &[(&str, &str)], logs: &Path) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_keras2safetensors"));
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(File::create(logs.join("stdout")).unwrap())
        .stderr(File::create(logs.join("stderr")).unwrap());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("the binary runs")
}

/// Waits for `child` at most [`BOUND`]; kills it and fails past that.
fn finish(mut child: Child, logs: &Path, started: Instant, what: &str) -> (Output, Duration) {
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let elapsed = started.elapsed();
            let read = |name: &str| std::fs::read(logs.join(name)).unwrap_or_default();
            let output = Output {
                status,
                stdout: read("stdout"),
                stderr: read("stderr"),
            };
            return (output, elapsed);
        }
        if started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {BOUND:?}, killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Runs the binary under [`BOUND`].
fn run_bounded(args: &[&OsStr]) -> Output {
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let child = spawn(args, &[], logs.path());
    finish(child, logs.path(), started, &format!("{args:?}")).0
}

fn os(args: &[&str]) -> Vec<&'static OsStr> {
    args.iter()
        .map(|a| OsStr::new(Box::leak(a.to_string().into_boxed_str())))
        .collect()
}

fn path_arg(p: &Path) -> &OsStr {
    p.as_os_str()
}

fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path for the whole call.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

fn is_fifo(path: &Path) -> bool {
    std::fs::symlink_metadata(path)
        .map(|m| m.file_type().is_fifo())
        .unwrap_or(false)
}

/// Every path under `dir`, relative, sorted.
fn tree(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().display().to_string());
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                walk(root, &path, out);
            }
        }
    }
    let mut out = Vec::new();
    if dir.exists() {
        walk(dir, dir, &mut out);
    }
    out.sort();
    out
}

/// One line on stderr: `error: <file>: ...` with `expect` in it, no panic.
fn assert_one_error_line(out: &Output, file: &str, expect: &str) {
    let err = stderr(out);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(errors[0].contains(file), "names {file}: {err}");
    assert!(errors[0].contains(expect), "says {expect}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

const SHARDED_INDEX: &str = "k3_tiny_efficientdet_sharded.weights.json";
const SHARDS: [&str; 3] = [
    "k3_tiny_efficientdet_sharded_00000.weights.h5",
    "k3_tiny_efficientdet_sharded_00001.weights.h5",
    "k3_tiny_efficientdet_sharded_00002.weights.h5",
];

/// Copies the sharded fixture (index and shards) into `dir`.
fn copy_sharded(dir: &Path) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for name in SHARDS.iter().chain([&SHARDED_INDEX]) {
        std::fs::copy(fixture(name), dir.join(name)).unwrap();
    }
    dir.join(SHARDED_INDEX)
}

// ---------------------------------------------------------------------------
// Named pipes and other files that are not regular files.

#[test]
fn a_named_pipe_named_as_input_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("model.h5");
    mkfifo(&fifo);
    for command in ["inspect", "convert"] {
        let out = run_bounded(&[OsStr::new(command), path_arg(&fifo)]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_one_error_line(
            &out,
            "model.h5",
            "refused: a named pipe (FIFO), not a regular file",
        );
    }
    // A config or rename rules that are a pipe: the same.
    let out = run_bounded(&[
        OsStr::new("convert"),
        path_arg(&fixture("k3_bn_center_false.weights.h5")),
        OsStr::new("--config"),
        path_arg(&fifo),
        OsStr::new("-o"),
        path_arg(&dir.path().join("out.safetensors")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "model.h5", "refused: a named pipe");
    // A device is not read either.
    let out = run_bounded(&os(&["inspect", "/dev/zero"]));
    assert_eq!(out.status.code(), Some(1));
    assert_one_error_line(&out, "/dev/zero", "refused: a character device");
    assert!(is_fifo(&fifo));
}

#[test]
fn a_named_pipe_in_an_input_folder_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("sub")).unwrap();
    std::fs::copy(
        fixture("classic_conv2d_full.h5"),
        input.join("sub/model.h5"),
    )
    .unwrap();
    mkfifo(&input.join("pipe.h5"));
    mkfifo(&input.join("sub/pipe2.weights.h5"));
    let output = dir.path().join("out");
    let out = run_bounded(&[
        OsStr::new("convert"),
        path_arg(&input),
        OsStr::new("-o"),
        path_arg(&output),
        OsStr::new("--quiet"),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(tree(&output), ["sub", "sub/model.safetensors"]);
}

#[test]
fn a_shard_that_is_a_named_pipe_is_refused_without_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let index = copy_sharded(dir.path());
    let shard = dir.path().join(SHARDS[1]);
    std::fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    for command in ["inspect", "convert"] {
        let out = run_bounded(&[OsStr::new(command), path_arg(&index)]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_one_error_line(&out, SHARDS[1], "refused: a named pipe (FIFO)");
    }
    // A folder search meets the pipe through the index: refused there too,
    // and the batch still ends.
    let out = run_bounded(&[
        OsStr::new("convert"),
        path_arg(dir.path()),
        OsStr::new("-o"),
        path_arg(&dir.path().join("out")),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("refused: a named pipe"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------
// Folder links.

#[test]
fn folder_links_are_not_followed_and_each_folder_is_visited_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(&input).unwrap();
    std::fs::copy(fixture("classic_conv2d_full.h5"), input.join("model.h5")).unwrap();
    // Two links back into the tree: once, the same model 41 times into
    // nested folders; twice, a search that never ended.
    symlink(".", input.join("a")).unwrap();
    symlink("..", input.join("b")).unwrap();
    // A link out of the tree, to a folder with a model of its own.
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::copy(
        fixture("classic_separable_full.h5"),
        elsewhere.join("other.h5"),
    )
    .unwrap();
    symlink(&elsewhere, input.join("outside")).unwrap();
    // A link to a file is read as that file.
    symlink(input.join("model.h5"), input.join("linked.h5")).unwrap();

    let output = dir.path().join("out");
    let out = run_bounded(&[
        OsStr::new("convert"),
        path_arg(&input),
        OsStr::new("-o"),
        path_arg(&output),
        OsStr::new("--quiet"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert_eq!(tree(&output), ["linked.safetensors", "model.safetensors"]);
    for link in ["a", "b", "outside"] {
        assert!(
            err.contains(&format!(
                "{link}: a symbolic link to a folder, not followed"
            )),
            "{err}"
        );
    }
    assert_eq!(tree(&elsewhere), ["other.h5"], "nothing written out there");
}

// ---------------------------------------------------------------------------
// Shard links.

#[test]
fn a_shard_linked_from_outside_the_index_folder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("model");
    let index = copy_sharded(&folder);
    let outside = dir.path().join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    let shard = folder.join(SHARDS[2]);
    std::fs::rename(&shard, outside.join(SHARDS[2])).unwrap();
    symlink(outside.join(SHARDS[2]), &shard).unwrap();
    let output = dir.path().join("out.safetensors");
    for args in [
        vec![OsStr::new("inspect"), path_arg(&index)],
        vec![
            OsStr::new("convert"),
            path_arg(&index),
            OsStr::new("-o"),
            path_arg(&output),
        ],
    ] {
        let out = run_bounded(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_one_error_line(&out, SHARDS[2], "refused: this shard is a symbolic link to");
        assert!(
            stderr(&out).contains("outside the folder"),
            "{}",
            stderr(&out)
        );
    }
    assert!(!output.exists());

    // A link that stays inside the folder is fine.
    std::fs::remove_file(&shard).unwrap();
    std::fs::create_dir_all(folder.join("parts")).unwrap();
    std::fs::rename(
        outside.join(SHARDS[2]),
        folder.join("parts").join(SHARDS[2]),
    )
    .unwrap();
    symlink(Path::new("parts").join(SHARDS[2]), &shard).unwrap();
    let out = run_bounded(&[
        OsStr::new("convert"),
        path_arg(&index),
        OsStr::new("-o"),
        path_arg(&output),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

// ---------------------------------------------------------------------------
// SIGTERM in every phase.

/// Whether process `pid` has a handler for SIGTERM yet (so a signal sent
/// now is the program's to handle, not a kill).
fn handles_sigterm(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        // No /proc: give the program time to start.
        std::thread::sleep(Duration::from_millis(500));
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        // SIGTERM is signal 15: bit 14 of the mask.
        .is_some_and(|mask| mask & (1 << 14) != 0)
}

/// Starts the binary, sends SIGTERM once it is `delay` into its work, and
/// checks it stops within [`BOUND`] with exit code 130 and one line naming
/// the stop.
fn stopped_by_sigterm(args: &[&OsStr], env: &[(&str, &str)], ready: &dyn Fn() -> bool) -> Output {
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = spawn(args, env, logs.path());
    while !(handles_sigterm(child.id()) && ready()) {
        if child.try_wait().unwrap().is_some() || started.elapsed() > BOUND {
            let _ = child.kill();
            panic!("{args:?}: never got ready for the signal");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        child.try_wait().unwrap().is_none(),
        "{args:?}: finished before the signal; the input is not slow enough"
    );
    let signalled = Instant::now();
    let kill = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let (out, _) = finish(
        child,
        logs.path(),
        signalled,
        &format!("{args:?} after SIGTERM"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(130), "{args:?}: {err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    assert!(
        errors[0].ends_with("interrupted (Ctrl-C or SIGTERM); stopped cleanly"),
        "{err}"
    );
    assert!(
        signalled.elapsed() < BOUND,
        "stopped {:?} after the signal",
        signalled.elapsed()
    );
    out
}

/// A sharded save whose index names `extra` more shards, hard links to
/// one shard: reading its structure takes seconds in a debug build.
fn many_shards(dir: &Path, extra: usize) -> PathBuf {
    let index = copy_sharded(dir);
    let mut json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&index).unwrap()).unwrap();
    let map = json["weight_map"].as_object_mut().unwrap();
    for i in 0..extra {
        let name = format!("k3_tiny_efficientdet_sharded_{:05}.weights.h5", i + 3);
        std::fs::hard_link(dir.join(SHARDS[0]), dir.join(&name)).unwrap();
        map.insert(format!("/extra/{i}"), serde_json::Value::String(name));
    }
    std::fs::write(&index, serde_json::to_string(&json).unwrap()).unwrap();
    index
}

/// A safetensors file of one float32 tensor of `bytes` bytes, sparse (no
/// disk used): `inspect --stats` and `verify` read every byte.
fn big_sparse_safetensors(path: &Path, bytes: u64) {
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{bytes}]}}}}"#,
        bytes / 4
    );
    let mut header = header.into_bytes();
    header.resize(header.len().next_multiple_of(8), b' ');
    let mut data = (header.len() as u64).to_le_bytes().to_vec();
    data.extend_from_slice(&header);
    std::fs::write(path, &data).unwrap();
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.set_len(data.len() as u64 + bytes).unwrap();
}

#[test]
fn sigterm_stops_reading_the_structure() {
    let dir = tempfile::tempdir().unwrap();
    let index = many_shards(&dir.path().join("model"), 900);
    stopped_by_sigterm(&[OsStr::new("inspect"), path_arg(&index)], &[], &|| true);
    // The same in `convert`: nothing is written.
    let output = dir.path().join("out");
    std::fs::create_dir_all(&output).unwrap();
    let file = output.join("model.safetensors");
    stopped_by_sigterm(
        &[
            OsStr::new("convert"),
            path_arg(&index),
            OsStr::new("-o"),
            path_arg(&file),
        ],
        &[],
        &|| true,
    );
    assert_eq!(tree(&output), Vec::<String>::new());
}

#[test]
fn sigterm_stops_reading_data_in_stats_verify_and_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.safetensors");
    big_sparse_safetensors(&big, 2 << 30);
    let other = dir.path().join("other.safetensors");
    big_sparse_safetensors(&other, 2 << 30);
    stopped_by_sigterm(
        &os(&["inspect", "--stats", big.to_str().unwrap()]),
        &[],
        &|| true,
    );
    stopped_by_sigterm(
        &os(&["verify", big.to_str().unwrap(), other.to_str().unwrap()]),
        &[],
        &|| true,
    );
    let manifest = dir.path().join("manifest.json");
    stopped_by_sigterm(
        &os(&[
            "manifest",
            big.to_str().unwrap(),
            "-o",
            manifest.to_str().unwrap(),
        ]),
        &[],
        &|| true,
    );
    assert!(!manifest.exists());
}
