//! Damaged input never panics, hangs or leaves files behind; interrupted
//! and failing writes leave nothing either.

mod common;

use std::collections::BTreeSet;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use common::*;
use keras2safetensors::model::Format;
use keras2safetensors::{convert_file, ConvertOptions, ReadOptions};

/// A fixed xorshift stream, so every run damages files the same way.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Converts `bytes` (saved as `name`) in a worker thread: Ok(true) when it
/// converted, Ok(false) on a clean error, Err on a panic or after 20 s.
fn try_convert(dir: &Path, name: &str, bytes: Vec<u8>) -> Result<bool, String> {
    let input = dir.join(name);
    std::fs::write(&input, bytes).unwrap();
    // A folder per case: a conversion that outlived its timeout cannot
    // leave its output where the next case looks.
    let out_dir = dir.join(format!("out-{name}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let output = out_dir.join("model.safetensors");
    let (send, receive) = mpsc::channel();
    let (i, o) = (input.clone(), output.clone());
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| {
            convert_file(&i, &o, &ConvertOptions::default(), &mut |_| {}).is_ok()
        });
        let _ = send.send(result);
    });
    let outcome = match receive.recv_timeout(Duration::from_secs(20)) {
        Ok(Ok(converted)) => Ok(converted),
        Ok(Err(_)) => Err(format!("{name}: panicked")),
        Err(_) => Err(format!("{name}: hung")),
    }?;
    let left: Vec<PathBuf> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    if outcome {
        assert_eq!(left.len(), 1, "{name}: exactly the output, found {left:?}");
        assert_eq!(left[0], output, "{name}: exactly the output");
    } else {
        assert!(left.is_empty(), "{name}: a failed conversion left {left:?}");
    }
    std::fs::remove_dir_all(&out_dir).unwrap();
    Ok(outcome)
}

/// The byte ranges of `file` that hold weight data, as the library locates
/// the contiguous datasets (optimizer state included). A flip there changes
/// one value and tests nothing the reader does, so flips go elsewhere.
fn data_ranges(file: &Path) -> Vec<Range<u64>> {
    let options = ReadOptions {
        include_optimizer: true,
        ..read_options(file)
    };
    let model = keras2safetensors::open(file, &options).unwrap_or_else(|e| panic!("{e}"));
    if model.format == Format::Keras3Sharded {
        // The index holds no data; the shards are other files.
        return Vec::new();
    }
    // A `.keras` archive stores its weights file uncompressed; dataset
    // offsets count from that member's first byte, its HDF5 signature.
    let bytes = std::fs::read(file).unwrap();
    let base = bytes
        .windows(8)
        .position(|w| w == b"\x89HDF\r\n\x1a\n")
        .expect("an HDF5 signature") as u64;
    let mut ranges: Vec<Range<u64>> = model
        .layers
        .iter()
        .flat_map(|l| &l.weights)
        .chain(&model.optimizer)
        .filter_map(|w| w.location.contiguous_range())
        .map(|r| base + r.start..base + r.end)
        .collect();
    ranges.sort_by_key(|r| r.start);
    for r in &ranges {
        assert!(r.end <= bytes.len() as u64, "{}: {r:?}", file.display());
    }
    ranges
}

/// Runs of this many zero bytes or more are space HDF5 reserved and never
/// filled (unused B-tree slots, free heap space, header padding); the zero
/// fields of live structures (the high bytes of an address) are shorter.
const UNUSED_ZEROS: usize = 16;

/// The bytes outside `data` and outside long zero runs: headers, heaps,
/// B-tree entries, attributes, the superblock, and in archives the zip
/// records and JSON members.
fn metadata_ranges(bytes: &[u8], data: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut in_data = vec![false; bytes.len()];
    for r in data {
        in_data[r.start as usize..r.end as usize].fill(true);
    }
    let mut out: Vec<Range<u64>> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if in_data[i] {
            i += 1;
            continue;
        }
        let zeros = (i..bytes.len())
            .take_while(|&j| bytes[j] == 0 && !in_data[j])
            .count();
        if zeros >= UNUSED_ZEROS {
            i += zeros;
            continue;
        }
        let take = zeros.max(1);
        match out.last_mut() {
            Some(last) if last.end == i as u64 => last.end += take as u64,
            _ => out.push(i as u64..(i + take) as u64),
        }
        i += take;
    }
    out
}

/// Every Keras fixture, cut at 20 lengths and with 50 single-byte flips
/// aimed at the bytes the reader parses (see [`metadata_ranges`]); each
/// outcome must be a conversion or a clean error.
#[test]
fn truncated_and_bit_flipped_fixtures_fail_cleanly() {
    let fixtures = keras_fixtures();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut failures = Vec::new();
    let (mut converted, mut refused) = (0, 0);
    let (mut targeted, mut all_bytes) = (0, 0);
    let (mut flips_converted, mut flips) = (0, 0);
    for (file, expected) in &fixtures {
        let original = std::fs::read(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
        for k in 1..=20u64 {
            let len = (original.len() as u64 * k / 21) as usize;
            cases.push((format!("cut{k}-{name}"), original[..len].to_vec()));
        }
        let data = data_ranges(file);
        // The ranges must be where Keras's arrays are: every non-empty
        // weight's sha256 from the expected JSON is found among them.
        let located: BTreeSet<String> = data
            .iter()
            .map(|r| sha256_hex(&original[r.start as usize..r.end as usize]))
            .collect();
        for w in expected_weights(expected) {
            let empty = w["shape"].as_array().unwrap().iter().any(|d| d == 0);
            if expected["kind"] != "sharded" && !empty {
                assert!(
                    located.contains(w["sha256"].as_str().unwrap()),
                    "{name}: {} not located",
                    w["name"]
                );
            }
        }
        all_bytes += original.len() as u64;
        let metadata = metadata_ranges(&original, &data);
        let metadata_len: u64 = metadata.iter().map(|r| r.end - r.start).sum();
        targeted += metadata_len;
        for k in 0..50 {
            let mut damaged = original.clone();
            let mut at = rng.next() % metadata_len;
            let range = metadata
                .iter()
                .find(|r| {
                    let inside = at < r.end - r.start;
                    if !inside {
                        at -= r.end - r.start;
                    }
                    inside
                })
                .unwrap();
            let at = (range.start + at) as usize;
            damaged[at] ^= (rng.next() % 255 + 1) as u8;
            cases.push((format!("flip{k}-{name}"), damaged));
        }
        for (case, bytes) in cases {
            let flip = case.starts_with("flip");
            flips += flip as usize;
            match try_convert(dir.path(), &case, bytes) {
                Ok(true) => {
                    converted += 1;
                    flips_converted += flip as usize;
                }
                Ok(false) => refused += 1,
                Err(e) => failures.push(e),
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        refused > 0 && converted > 0,
        "{refused} refused, {converted} converted"
    );
    eprintln!(
        "{} files: {refused} refused, {converted} converted ({flips_converted} of {flips} flips); \
         flips aimed at {targeted} of {all_bytes} bytes",
        fixtures.len()
    );
}

/// Runs the binary under bash with `setup` (shell commands) before it.
fn shell(setup: &str, args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let bin = env!("CARGO_BIN_EXE_keras2safetensors");
    let quoted: Vec<String> = args.iter().map(|a| format!("'{a}'")).collect();
    let mut command = std::process::Command::new("bash");
    command.args(["-c", &format!("{setup}; exec '{bin}' {}", quoted.join(" "))]);
    for (k, v) in env {
        command.env(k, v);
    }
    command.output().unwrap()
}

#[test]
fn a_full_disk_gives_a_clear_error_and_no_file() {
    // Written through the write buffer, and (every tensor from 1 byte)
    // copied file to file by the kernel.
    for env in [
        &[][..],
        &[("KERAS2SAFETENSORS_TEST_KERNEL_COPY_MIN_BYTES", "1")][..],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let output = dir.path().join("out.safetensors");
        // The file-size limit makes writes past 32 KiB fail as a full disk
        // does: past the header (22 KB), inside the tensors (40 KB in all).
        // SIGXFSZ is ignored so the write reports the error instead of
        // killing us.
        let out = shell(
            "trap '' XFSZ; ulimit -f 32",
            &[
                "convert",
                fixture("tiny_efficientdet_full.h5").to_str().unwrap(),
                "-o",
                output.to_str().unwrap(),
            ],
            env,
        );
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {err}");
        assert!(err.starts_with("error: "), "{err}");
        assert!(
            err.contains("out.safetensors") || err.contains(".keras2safetensors-"),
            "{err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            0,
            "temporary file removed"
        );
    }
}

#[test]
fn ctrl_c_during_a_conversion_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let output = dir.path().join("out.safetensors");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_keras2safetensors"))
        .args([
            "convert",
            fixture("chunked_names_full.h5").to_str().unwrap(),
            "-o",
        ])
        .arg(&output)
        // 334 tensors at 30 ms each: the signal lands mid-write.
        .env("KERAS2SAFETENSORS_TEST_PAUSE_MS", "30")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the temporary file exists, then interrupt.
    let started = std::time::Instant::now();
    while std::fs::read_dir(dir.path()).unwrap().count() == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the write never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<PathBuf> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
