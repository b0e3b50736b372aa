//! Hostile files and folders on the filesystem side: named pipes and other
//! non-regular files, folder links that loop, shard links that escape,
//! outputs that are inputs or devices, leftovers of failed runs, and
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
    assert!(!dir.path().join("out").exists());
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
    // A link to a file in the tree is that file: converted once, under
    // its own name.
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
    assert_eq!(tree(&output), ["model.safetensors"]);
    assert!(err.contains("converted once"), "{err}");
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
// What --force may replace.

fn convert_to(input: &Path, output: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        OsStr::new("convert"),
        path_arg(input),
        OsStr::new("-o"),
        path_arg(output),
    ];
    args.extend(extra.iter().map(OsStr::new));
    run_bounded(&args)
}

#[test]
fn force_never_replaces_an_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("model.h5");
    std::fs::copy(fixture("classic_conv2d_full.h5"), &input).unwrap();
    let original = std::fs::read(&input).unwrap();
    let hard_link = dir.path().join("hard.h5");
    std::fs::hard_link(&input, &hard_link).unwrap();
    let soft_link = dir.path().join("soft.safetensors");
    symlink(&input, &soft_link).unwrap();

    for (output, expect) in [
        (&input, "the output is an input of this conversion"),
        (&hard_link, "the output is an input of this conversion"),
        (
            &soft_link,
            "the output is a symbolic link, which is never replaced",
        ),
    ] {
        for extra in [&["--force"][..], &["--force", "--max-shard-size", "1KB"]] {
            let out = convert_to(&input, output, extra);
            assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
            let expect = if extra.len() > 1 && output != &soft_link {
                "the output must be a folder here, and this is a regular file"
            } else if extra.len() > 1 {
                "the output must be a folder here"
            } else {
                expect
            };
            assert_one_error_line(&out, &output.display().to_string(), expect);
            assert_eq!(
                std::fs::read(&input).unwrap(),
                original,
                "{output:?} {extra:?}"
            );
        }
    }
    assert!(std::fs::symlink_metadata(&soft_link)
        .unwrap()
        .file_type()
        .is_symlink());

    // The config read with the weights is an input too.
    let weights = fixture("k3_bn_center_false.weights.h5");
    let config = dir.path().join("config.json");
    std::fs::copy(fixture("k3_bn_center_false.config.json"), &config).unwrap();
    let config_text = std::fs::read(&config).unwrap();
    let out = convert_to(
        &weights,
        &config,
        &["--force", "--config", config.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_error_line(&out, "config.json", "the output is an input");
    assert_eq!(std::fs::read(&config).unwrap(), config_text);

    // `manifest -o` writes over its output, but never over the file it describes.
    let out = run_bounded(&[
        OsStr::new("manifest"),
        path_arg(&input),
        OsStr::new("-o"),
        path_arg(&soft_link),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_error_line(&out, "soft.safetensors", "the output is an input");
    assert_eq!(std::fs::read(&input).unwrap(), original);

    // An ordinary output is still replaced with --force.
    let output = dir.path().join("out.safetensors");
    std::fs::write(&output, b"old").unwrap();
    let out = convert_to(&input, &output, &["--force"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_ne!(std::fs::read(&output).unwrap(), b"old");
}

#[test]
fn force_never_replaces_a_pipe_or_a_device() {
    let dir = tempfile::tempdir().unwrap();
    let input = fixture("classic_conv2d_full.h5");
    let fifo = dir.path().join("out.safetensors");
    mkfifo(&fifo);
    for extra in [
        &["--force"][..],
        &[],
        &["--force", "--max-shard-size", "1KB"],
    ] {
        let out = convert_to(&input, &fifo, extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {}", stderr(&out));
        let expect = if extra.len() > 1 {
            "refused: the output must be a folder here, and this is a named pipe (FIFO)"
        } else {
            "refused: the output is a named pipe (FIFO), which is never replaced, even with --force"
        };
        assert_one_error_line(&out, "out.safetensors", expect);
        assert!(is_fifo(&fifo), "{extra:?}: the pipe is still there");
    }
    let out = run_bounded(&[
        OsStr::new("manifest"),
        path_arg(&input),
        OsStr::new("-o"),
        path_arg(&fifo),
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_error_line(
        &out,
        "out.safetensors",
        "refused: the output is a named pipe",
    );
    assert!(is_fifo(&fifo));
    assert_eq!(
        tree(dir.path()),
        ["out.safetensors"],
        "no temporary file left"
    );
    // A device: only where a regression could not replace it (as root it
    // could, so the pipe above stands for it there).
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        let out = convert_to(&input, Path::new("/dev/null"), &["--force"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert_one_error_line(&out, "/dev/null", "the output is a character device");
        let null = std::fs::metadata("/dev/null").unwrap();
        assert!(null.file_type().is_char_device());
    }
}

// ---------------------------------------------------------------------------
// Nothing left behind by a failed run.

/// A copy of a fixture whose weight `f32_be` (stored big-endian, so read
/// through the HDF5 decoder at write time) points past the end of the
/// file: the file opens and plans, and the write fails on that weight.
fn failing_weight(dir: &Path) -> PathBuf {
    let mut bytes = std::fs::read(fixture("malicious/layout_big_endian_control.h5")).unwrap();
    let len = bytes.len() as u64;
    // The contiguous layout message (version 3, class 1) of the first
    // 16-byte dataset: address, then size.
    let at = (0..bytes.len() - 18)
        .find(|&i| {
            let address = u64::from_le_bytes(bytes[i + 2..i + 10].try_into().unwrap());
            let size = u64::from_le_bytes(bytes[i + 10..i + 18].try_into().unwrap());
            bytes[i] == 3 && bytes[i + 1] == 1 && size == 16 && address > 0 && address + 16 <= len
        })
        .expect("a contiguous 16-byte dataset");
    bytes[at + 2..at + 10].copy_from_slice(&(len + 100_000).to_le_bytes());
    let path = dir.join("failing.h5");
    std::fs::write(&path, bytes).unwrap();
    path
}

#[test]
fn a_failed_sharded_write_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let input = failing_weight(dir.path());
    // The weight fails only when written, after the folder was made.
    let inspect = run_bounded(&[OsStr::new("inspect"), path_arg(&input)]);
    assert_eq!(inspect.status.code(), Some(0), "{}", stderr(&inspect));

    let output = dir.path().join("new/deeper/shards");
    let out = convert_to(&input, &output, &["--max-shard-size", "1KB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_one_error_line(&out, "model.safetensors", "f32_be");
    assert_eq!(
        tree(dir.path()),
        ["failing.h5"],
        "every folder made is gone"
    );

    // A folder that was there stays, with what it held.
    let existing = dir.path().join("existing");
    std::fs::create_dir_all(&existing).unwrap();
    std::fs::write(existing.join("notes.txt"), b"mine").unwrap();
    let out = convert_to(&input, &existing, &["--max-shard-size", "1KB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(tree(&existing), ["notes.txt"]);
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = convert_to(&input, &empty, &["--max-shard-size", "1KB"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(empty.is_dir(), "an empty folder that was there stays");
}

#[test]
fn a_batch_leaves_no_folder_for_inputs_that_failed() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in");
    std::fs::create_dir_all(input.join("a/b")).unwrap();
    std::fs::create_dir_all(input.join("c")).unwrap();
    // One input fails to open, the other fails while written.
    std::fs::copy(fixture("not_keras.h5"), input.join("a/b/not_keras.h5")).unwrap();
    std::fs::rename(failing_weight(dir.path()), input.join("c/failing.h5")).unwrap();
    for extra in [&[][..], &["--max-shard-size", "1MB"]] {
        let output = dir.path().join("out");
        let mut args = vec![
            OsStr::new("convert"),
            path_arg(&input),
            OsStr::new("-o"),
            path_arg(&output),
        ];
        args.extend(extra.iter().map(OsStr::new));
        let out = run_bounded(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        assert!(!output.exists(), "{extra:?}: left {:?}", tree(&output));

        // With one input that converts, only its folder stays.
        std::fs::create_dir_all(input.join("d")).unwrap();
        std::fs::copy(fixture("classic_conv2d_full.h5"), input.join("d/good.h5")).unwrap();
        let out = run_bounded(&args);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let expected: &[&str] = if extra.is_empty() {
            &["d", "d/good.safetensors"]
        } else {
            &["d", "d/good", "d/good/model.safetensors"]
        };
        assert_eq!(tree(&output), expected, "{extra:?}");
        std::fs::remove_dir_all(&output).unwrap();
        std::fs::remove_dir_all(input.join("d")).unwrap();
    }
    assert_eq!(
        tree(&input),
        ["a", "a/b", "a/b/not_keras.h5", "c", "c/failing.h5"],
        "the inputs' folders are untouched"
    );
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

/// How many files process `pid` has open (`None` without /proc).
fn open_files(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// Starts the binary, sends SIGTERM once `ready(pid)` says it is in the
/// phase under test and `delay` more has passed, and checks it stops within
/// [`BOUND`] with exit code 130 and one line naming the stop.
fn stopped_by_sigterm(
    args: &[&OsStr],
    env: &[(&str, &str)],
    ready: &dyn Fn(u32) -> bool,
    delay: Duration,
) -> Output {
    let logs = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let mut child = spawn(args, env, logs.path());
    while !(handles_sigterm(child.id()) && ready(child.id())) {
        if child.try_wait().unwrap().is_some() || started.elapsed() > BOUND {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{args:?}: never got ready for the signal");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(delay);
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
    // Signalled while the shards are being opened and walked (they stay
    // open once read), however fast that becomes.
    let reading_shards = |pid| open_files(pid).is_none_or(|n| n > 100);
    stopped_by_sigterm(
        &[OsStr::new("inspect"), path_arg(&index)],
        &[],
        &reading_shards,
        Duration::ZERO,
    );
    // The same in `convert`, single and batch: nothing is written, no
    // output folder is made.
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
        &reading_shards,
        Duration::ZERO,
    );
    assert_eq!(tree(&output), Vec::<String>::new());
    let batch = dir.path().join("batch");
    stopped_by_sigterm(
        &[
            OsStr::new("convert"),
            path_arg(&dir.path().join("model")),
            path_arg(&fixture("classic_conv2d_full.h5")),
            OsStr::new("-o"),
            path_arg(&batch),
            OsStr::new("--max-shard-size"),
            OsStr::new("1MB"),
        ],
        &[],
        &reading_shards,
        Duration::ZERO,
    );
    assert!(!batch.exists(), "left {:?}", tree(&batch));
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
        &|_| true,
        Duration::from_millis(200),
    );
    stopped_by_sigterm(
        &os(&["verify", big.to_str().unwrap(), other.to_str().unwrap()]),
        &[],
        &|_| true,
        Duration::from_millis(200),
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
        &|_| true,
        Duration::from_millis(200),
    );
    assert!(!manifest.exists());
}

#[test]
fn sigterm_while_writing_shards_leaves_no_folder() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("new/shards");
    let watch = output.clone();
    stopped_by_sigterm(
        &[
            OsStr::new("convert"),
            path_arg(&fixture("chunked_names_full.h5")),
            OsStr::new("-o"),
            path_arg(&output),
            OsStr::new("--max-shard-size"),
            OsStr::new("100KB"),
        ],
        // 334 tensors at 30 ms each: the signal lands mid-write.
        &[("KERAS2SAFETENSORS_TEST_PAUSE_MS", "30")],
        &move |_| tree(&watch).iter().any(|f| f.ends_with(".tmp")),
        Duration::from_millis(200),
    );
    assert_eq!(tree(dir.path()), Vec::<String>::new());
}
