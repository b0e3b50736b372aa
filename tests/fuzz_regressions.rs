//! Inputs found by fuzzing (`fuzz/`, see `fuzz/README.md`), run through the
//! same calls as the fuzz target that found them. Any `Result` is fine; a
//! panic, an abort (a huge allocation) or a hang is a bug.
//!
//! Each input runs in a child process (this test binary again, with
//! `FUZZ_REGRESSION_CHILD` set), so one that aborts or hangs fails its own
//! test and not the whole binary. The inputs are in `tests/fuzz_regressions/`,
//! in a folder named after the target.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use keras2safetensors::{
    dtype::Dtype, inspect, keras, manifest, tensors::TensorFile, ConvertOptions, Layout,
    PlanOptions, ReadOptions, WriteOptions,
};

/// A hang is an input that takes longer than this (the fuzzer's limit is 10 s;
/// debug builds are slower).
const TIME_LIMIT: Duration = Duration::from_secs(60);

const CHILD_ENV: &str = "FUZZ_REGRESSION_CHILD";

/// The fuzz targets, with the file name each gives its input.
#[derive(Clone, Copy, Debug)]
enum Target {
    KerasFile,
    KerasArchive,
    SafetensorsReader,
}

impl Target {
    fn folder(self) -> &'static str {
        match self {
            Target::KerasFile => "keras_file",
            Target::KerasArchive => "keras_archive",
            Target::SafetensorsReader => "safetensors_reader",
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Target::KerasFile => "model.h5",
            Target::KerasArchive => "model.keras",
            Target::SafetensorsReader => "model.safetensors",
        }
    }
}

fn saved_input(target: Target, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz_regressions")
        .join(target.folder())
        .join(name)
}

/// What `fuzz/src/lib.rs` runs for the target (kept in step with it).
fn run_calls(target: Target, input: &Path, out_dir: &Path) {
    match target {
        Target::KerasFile | Target::KerasArchive => {
            let _ = keras::detect(input);
            if keras2safetensors::open(input, &ReadOptions::default()).is_ok() {
                let output = out_dir.join("model.safetensors");
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
                }
            }
            let _ = inspect::inspect(input, &ReadOptions::default());
        }
        Target::SafetensorsReader => {
            let _ = inspect::inspect(input, &ReadOptions::default());
            if let Ok(file) =
                TensorFile::open(input, &ReadOptions::default(), &PlanOptions::default())
            {
                for i in 0..file.tensors().len() {
                    let _ = file.read(i);
                }
                let _ = manifest::build(input, &file);
            }
        }
    }
}

/// Runs saved input `name` of `target` (from the test named `test`) in a
/// child process, and fails unless it ends normally in time.
fn check(test: &str, target: Target, name: &str) {
    let saved = saved_input(target, name);
    let bytes = std::fs::read(&saved).unwrap_or_else(|e| panic!("{}: {e}", saved.display()));
    let dir = tempfile::tempdir().unwrap();
    let input_dir = dir.path().join("in");
    let out_dir = dir.path().join("out");
    std::fs::create_dir(&input_dir).unwrap();
    std::fs::create_dir(&out_dir).unwrap();
    let input = input_dir.join(target.file_name());
    std::fs::write(&input, bytes).unwrap();

    if std::env::var_os(CHILD_ENV).is_some() {
        run_calls(target, &input, &out_dir);
        return;
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > TIME_LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{}: still running after {TIME_LIMIT:?} (a hang)",
                saved.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    // The child's panic message and backtrace (its stdout is libtest's report).
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        status.success() && stdout.contains("1 passed"),
        "{} ({target:?}) did not end normally ({status}):\n{stderr}",
        saved.display()
    );
}

/// Every saved input has a test below.
#[test]
fn every_saved_input_is_checked() {
    let source = include_str!("fuzz_regressions.rs");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for target in [
        Target::KerasFile,
        Target::KerasArchive,
        Target::SafetensorsReader,
    ] {
        let Ok(entries) = std::fs::read_dir(root.join(target.folder())) else {
            continue;
        };
        for entry in entries {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(
                source.contains(&format!("\"{name}\"")),
                "tests/fuzz_regressions/{}/{name} has no test in tests/fuzz_regressions.rs",
                target.folder()
            );
        }
    }
}

/// One test per saved input: `regression!(test_name, Target, "file name")`.
macro_rules! regression {
    ($name:ident, $target:expr, $file:literal) => {
        #[test]
        fn $name() {
            check(stringify!($name), $target, $file);
        }
    };
}

// found by review of the code fuzz target safetensors_reader runs (a crafted
// input; the fuzzer had not reached it): `inspect` guesses the class of a
// layer with `kernel` and `recurrent_kernel`, and src/labels.rs:213
// (`k[1] == gates * r[0]`) overflows on an empty `recurrent_kernel` of shape
// [2^62, 0]. Panicked in debug builds; wrapped silently in release (a wrong
// guess). Passes since 355db74 (`checked_mul`).
regression!(
    inspect_guess_class_gates_overflow,
    Target::SafetensorsReader,
    "guess_class_gates_overflow.safetensors"
);

// found by review of the code fuzz target keras_file runs (a crafted input:
// classic_separable_full.h5 with the depthwise kernel's dims patched to
// [0, 5, 2^33, 2^33], an empty dataset): `convert --layout pytorch` panics at
// src/export/pytorch.rs:437 (`shape[spatial] * shape[spatial + 1]`, multiply
// with overflow) in debug builds, and in release builds at
// src/export/transform.rs:135 (the `expect` on `ArrayD::from_shape_vec`).
// Passes since d5dbb2e (src/h5.rs refuses the shape).
regression!(
    pytorch_depthwise_dims_overflow,
    Target::KerasFile,
    "pytorch_depthwise_dims_overflow.h5"
);

// found by review of the code fuzz target keras_file runs (a crafted input:
// classic_conv2d_full.h5 with the kernel's dims patched to
// [0, 1, 2^32, 2^32], an empty dataset): `convert --layout pytorch` permutes
// it to [2^32, 2^32, 0, 1], and src/export/plan.rs:255 (the element count,
// `shape.iter().map(..).product()`) overflows before it reaches the 0 in
// debug builds. Passes since d5dbb2e (src/h5.rs refuses the shape).
regression!(
    pytorch_conv_shape_overflow,
    Target::KerasFile,
    "pytorch_conv_shape_overflow.h5"
);

// found by review of the code fuzz target keras_file runs (a crafted input:
// classic_conv2d_full.h5 with the kernel's dims patched to [0, 1, 2^31, 2^32],
// an empty dataset whose element count fits u64): `convert --layout pytorch`
// panics in debug and release builds at src/export/transform.rs:135:
// `ArrayD::from_shape_vec(..).expect(..)` fails, since ndarray refuses shapes
// whose non-zero axis lengths multiply past isize::MAX; src/export/writer.rs:243
// then reports "a scoped thread panicked". Passes since d5dbb2e (src/h5.rs
// refuses the shape).
regression!(
    pytorch_conv_ndarray_shape,
    Target::KerasFile,
    "pytorch_conv_ndarray_shape.h5"
);

// found by fuzz target keras_archive_members (the archive it built, reduced to
// the one changed dimension: k3_bfloat16.keras with the Conv2D kernel's dims
// (3, 3, 2, 4) changed to (0xcccccccccccccd03, 0, 2, 4), an empty dataset).
// The same bug as `pytorch_conv_shape_overflow`: in PyTorch layout the shape
// becomes (4, 2, 0xcccccccccccccd03, 0), and the element count at
// src/export/plan.rs:255 overflows before it reaches the 0 (debug builds).
// Passes since d5dbb2e (src/h5.rs refuses the shape).
regression!(
    pytorch_conv_shape_overflow_archive,
    Target::KerasArchive,
    "pytorch_conv_shape_overflow.keras"
);

// found by fuzz target keras_file (reduced by hand to the one byte that
// matters: dtypes_full.h5 with the element size of the empty float dataset
// `dtype_zoo/empty:0` changed from 4 to 32 bytes). The error message for an
// unsupported float size, src/keras/mod.rs:356 (`size * 8` on a u8), overflows
// in debug builds; release builds say "0-bit float". The integer arm a few
// lines below (`{}-bit integer`, `size * 8`) had the same overflow. Passes
// since 355db74 (both widen to u32 first).
regression!(
    unsupported_float_size_message_overflow,
    Target::KerasFile,
    "float_size_overflow.h5"
);
