//! A conversion of a file larger than 4 GiB (run by `scripts/bench.sh --large`).
//!
//! Ignored by default: it needs a multi-gigabyte input written by
//! `scripts/make_big_keras.py` (with its `.json` listing beside it), named by
//! the environment variable `K2S_LARGE_FILE`:
//!
//! ```sh
//! python3 scripts/make_big_keras.py /tmp/big.h5 --dense 20
//! K2S_LARGE_FILE=/tmp/big.h5 cargo test --release --test large_file -- --ignored --nocapture
//! ```
//!
//! The generator fills every dataset with a formula of its index and the
//! element index, so the expected bytes at any offset are computed here
//! without reading the input. The output's header is parsed on its own (only
//! the first 8 + N bytes are read), and data is read with positioned reads:
//! 64-byte samples of every tensor (start, middle, end, and across the 4 GiB
//! offset in the input and in the output) are compared between the formula,
//! the input dataset and the output tensor, then the whole output data is
//! streamed once in fixed chunks and checked against the formula.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use keras2safetensors::{convert_file, ConvertOptions};
use safetensors::tensor::Metadata;
use safetensors::Dtype;
use serde_json::Value;

const FOUR_GIB: u64 = 1 << 32;
const SAMPLE: u64 = 64;
const STREAM_CHUNK: usize = 8 << 20;

/// Element `index` of dataset `id`, as `scripts/make_big_keras.py` writes it.
fn expected_value(id: u64, index: u64) -> f32 {
    let bits =
        (index.wrapping_mul(2_654_435_761).wrapping_add(id * 40_503) & 0x0FFF_FFFF) | 0x3000_0000;
    f32::from_bits(bits as u32)
}

/// The little-endian bytes `[start, start + len)` of dataset `id` (4-byte aligned).
fn expected_bytes(id: u64, start: u64, len: u64) -> Vec<u8> {
    assert!(start.is_multiple_of(4) && len.is_multiple_of(4));
    (start / 4..(start + len) / 4)
        .flat_map(|i| expected_value(id, i).to_le_bytes())
        .collect()
}

fn read_at(file: &File, offset: u64, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, offset)
        .unwrap_or_else(|e| panic!("reading {len} bytes at {offset}: {e}"));
    buf
}

/// Reads only the safetensors header: the 8-byte length, then the JSON.
fn read_header(path: &Path) -> (u64, Metadata) {
    let mut file = File::open(path).unwrap();
    let mut len = [0u8; 8];
    file.read_exact(&mut len).unwrap();
    let n = u64::from_le_bytes(len);
    assert!(n < 100_000_000, "header of {n} bytes");
    let mut json = vec![0u8; n as usize];
    file.read_exact(&mut json).unwrap();
    let metadata: Metadata = serde_json::from_slice(&json).expect("header parses as safetensors");
    (8 + n, metadata)
}

/// Peak resident memory of this process, from /proc (Linux only).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Removes the output however the test ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

struct Expected {
    name: String,
    shape: Vec<usize>,
    id: u64,
    input_offset: u64,
    byte_len: u64,
}

fn load_listing(input: &Path) -> Vec<Expected> {
    let listing_path = PathBuf::from(format!("{}.json", input.display()));
    let text = std::fs::read_to_string(&listing_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (write the input with scripts/make_big_keras.py, which puts it beside the file)",
            listing_path.display()
        )
    });
    let listing: Value = serde_json::from_str(&text).unwrap();
    let file_size = std::fs::metadata(input).unwrap().len();
    assert_eq!(
        listing["file_size"].as_u64(),
        Some(file_size),
        "listing is for another file"
    );
    listing["tensors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let shape: Vec<usize> = t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            assert_eq!(t["dtype"], "F32");
            let byte_len = shape.iter().product::<usize>() as u64 * 4;
            Expected {
                name: t["name"].as_str().unwrap().to_string(),
                shape,
                id: t["id"].as_u64().unwrap(),
                input_offset: t["offset"].as_u64().unwrap(),
                byte_len,
            }
        })
        .collect()
}

/// 4-byte-aligned offsets within a tensor of `len` bytes whose data starts
/// at `base` in its file, such that `[o, o + 64)` crosses the 4 GiB offset.
fn crossing(base: u64, len: u64) -> Option<u64> {
    if len >= SAMPLE && base < FOUR_GIB && FOUR_GIB < base + len {
        let o = (FOUR_GIB - base).saturating_sub(SAMPLE / 2) / 4 * 4;
        Some(o.min(len - SAMPLE))
    } else {
        None
    }
}

#[test]
#[ignore = "needs a >4 GiB input: K2S_LARGE_FILE=... (see scripts/bench.sh --large)"]
fn converts_a_file_larger_than_4_gib() {
    let Some(input) = std::env::var_os("K2S_LARGE_FILE").map(PathBuf::from) else {
        eprintln!("skipped: set K2S_LARGE_FILE to a file written by scripts/make_big_keras.py");
        return;
    };
    let expected = load_listing(&input);
    let input_size = std::fs::metadata(&input).unwrap().len();
    assert!(
        input_size > FOUR_GIB + (64 << 20),
        "{} has {input_size} bytes: this test needs more than 4 GiB (make_big_keras.py --dense 20)",
        input.display()
    );

    let output = std::env::var_os("K2S_LARGE_OUT")
        .map(PathBuf::from)
        .unwrap_or_else(|| input.with_extension("large_test.safetensors"));
    let _cleanup = RemoveOnDrop(output.clone());

    let started = std::time::Instant::now();
    let mut reported = 0u64;
    let options = ConvertOptions {
        write: keras2safetensors::WriteOptions {
            force: true,
            ..Default::default()
        },
        ..Default::default()
    };
    let summary = convert_file(&input, &output, &options, &mut |n| reported += n).unwrap();
    let convert_seconds = started.elapsed().as_secs_f64();
    let peak_after_convert = peak_rss_kib();

    let total: u64 = expected.iter().map(|t| t.byte_len).sum();
    assert_eq!(summary.tensors, expected.len());
    assert_eq!(summary.bytes, total);
    assert_eq!(reported, total, "progress callback total");

    // Header: every expected name, with its shape and dtype; nothing else.
    let (data_start, metadata) = read_header(&output);
    let infos = metadata.tensors();
    assert_eq!(infos.len(), expected.len(), "tensor count in the header");
    for t in &expected {
        let info = infos
            .get(&t.name)
            .unwrap_or_else(|| panic!("{} missing from the output", t.name));
        assert_eq!(info.dtype, Dtype::F32, "{}", t.name);
        assert_eq!(info.shape, t.shape, "{}", t.name);
        assert_eq!(
            (info.data_offsets.1 - info.data_offsets.0) as u64,
            t.byte_len,
            "{}",
            t.name
        );
    }
    assert_eq!(metadata.data_len() as u64, total);
    let output_size = std::fs::metadata(&output).unwrap().len();
    assert_eq!(output_size, data_start + total, "output file size");
    assert!(output_size > FOUR_GIB, "the output must pass 4 GiB too");
    let format = metadata
        .metadata()
        .as_ref()
        .and_then(|m| m.get("format").cloned());
    assert_eq!(format.as_deref(), Some("tf"));

    // Samples: formula == input dataset == output tensor.
    let input_file = File::open(&input).unwrap();
    let output_file = File::open(&output).unwrap();
    let (mut input_crossings, mut output_crossings, mut samples) = (0, 0, 0);
    for t in &expected {
        let out_base = data_start + infos[&t.name].data_offsets.0 as u64;
        let len = t.byte_len;
        let mut offsets = vec![0];
        if len > SAMPLE {
            offsets.push(len / 2 / 4 * 4);
            offsets.push(len - SAMPLE);
        }
        if let Some(o) = crossing(t.input_offset, len) {
            offsets.push(o);
            input_crossings += 1;
        }
        if let Some(o) = crossing(out_base, len) {
            offsets.push(o);
            output_crossings += 1;
        }
        for o in offsets {
            let n = SAMPLE.min(len - o);
            let want = expected_bytes(t.id, o, n);
            let got_in = read_at(&input_file, t.input_offset + o, n);
            assert_eq!(
                got_in, want,
                "input {} at byte {o} (generator mismatch?)",
                t.name
            );
            let got_out = read_at(&output_file, out_base + o, n);
            assert_eq!(got_out, want, "output {} at byte {o}", t.name);
            samples += 1;
        }
    }
    assert_eq!(input_crossings, 1, "a sample must cross 4 GiB in the input");
    assert_eq!(
        output_crossings, 1,
        "a sample must cross 4 GiB in the output"
    );

    // Every byte of the output data, streamed in fixed chunks.
    let mut by_offset: Vec<&Expected> = expected.iter().collect();
    by_offset.sort_by_key(|t| infos[&t.name].data_offsets.0);
    let mut buf = vec![0u8; STREAM_CHUNK];
    for t in by_offset {
        let base = data_start + infos[&t.name].data_offsets.0 as u64;
        let mut done = 0u64;
        while done < t.byte_len {
            let n = (t.byte_len - done).min(STREAM_CHUNK as u64) as usize;
            {
                use std::os::unix::fs::FileExt;
                output_file
                    .read_exact_at(&mut buf[..n], base + done)
                    .unwrap();
            }
            let first = done / 4;
            for (k, word) in buf[..n].chunks_exact(4).enumerate() {
                let want = expected_value(t.id, first + k as u64).to_bits();
                let got = u32::from_le_bytes(word.try_into().unwrap());
                if got != want {
                    panic!(
                        "output {} element {}: {got:#010x}, expected {want:#010x}",
                        t.name,
                        first + k as u64
                    );
                }
            }
            done += n as u64;
        }
    }

    eprintln!(
        "large file: {} ({input_size} bytes) -> {} ({output_size} bytes): {} tensors in {convert_seconds:.2} s; \
         {samples} samples and all {total} data bytes match; peak RSS after convert {} KiB",
        input.display(),
        output.display(),
        expected.len(),
        peak_after_convert.map_or("?".to_string(), |k| k.to_string())
    );
    if let Some(kib) = peak_after_convert {
        // Streaming: memory must not grow with a 5 GB model.
        assert!(kib < 512 * 1024, "peak RSS {kib} KiB while converting");
    }
}
