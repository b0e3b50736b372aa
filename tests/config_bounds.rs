//! A model config costs memory in proportion to its layers, not its bulk,
//! and one larger than any Keras model needs is refused.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A functional config naming the layer of `classic_conv2d_weights.h5`,
/// padded with `bulk` zeros in a field the converter never reads (the
/// way vocabularies, constants and `inbound_nodes` make configs big).
fn config_with_bulk(bulk: usize) -> String {
    let mut json = String::with_capacity(bulk * 2 + 512);
    json.push_str(
        r#"{"class_name": "Sequential", "config": {"name": "s", "layers": [
        {"class_name": "Conv2D", "config": {"name": "conv2d", "filters": 16,
         "kernel_size": [5, 5], "use_bias": true, "padding": "valid",
         "vocabulary": ["#,
    );
    for i in 0..bulk {
        json.push_str(if i == 0 { "0" } else { ",0" });
    }
    json.push_str("]}}]}}");
    json
}

/// Runs the binary with its address space capped at `limit_mib`, so an
/// allocation beyond it fails the run instead of swapping the machine.
fn run_capped(limit_mib: u64, args: &[&str]) -> (std::process::Output, Duration) {
    let binary = env!("CARGO_BIN_EXE_keras2safetensors");
    let started = Instant::now();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "ulimit -v {} && exec \"$0\" \"$@\"",
            limit_mib * 1024
        ))
        .arg(binary)
        .args(args)
        .output()
        .unwrap();
    (out, started.elapsed())
}

#[test]
fn a_bulky_config_is_read_in_memory_bounded_by_its_layers() {
    let dir = tempfile::tempdir().unwrap();
    // 30 million numbers: 60 MB of JSON that a full JSON tree would hold
    // in about 1 GB.
    let config = dir.path().join("config.json");
    std::fs::write(&config, config_with_bulk(30_000_000)).unwrap();
    assert!(std::fs::metadata(&config).unwrap().len() > 59_000_000);
    let input = fixture("classic_conv2d_weights.h5");
    // The input's text, 60 MB, plus the binary and a little more.
    let (out, took) = run_capped(
        400,
        &[
            "inspect",
            input.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["layers"][0]["class"], "Conv2D", "the config was read");
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

#[test]
fn a_config_larger_than_any_model_needs_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    let mut text = config_with_bulk(0);
    text.push_str(&" ".repeat(65 << 20));
    std::fs::write(&config, text).unwrap();
    let input = fixture("classic_conv2d_weights.h5");
    let (out, took) = run_capped(
        400,
        &[
            "inspect",
            input.to_str().unwrap(),
            "--config",
            config.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.starts_with("error: ") && err.contains("refused: the config is over 64.0 MiB"),
        "{err}"
    );

    // A config of exactly 64 MiB is still read: the limit is on what is
    // over it.
    let mut text = config_with_bulk(0);
    text.push_str(&" ".repeat((64 << 20) - text.len()));
    assert_eq!(text.len(), 64 << 20);
    std::fs::write(&config, text).unwrap();
    let out = run(&[
        "inspect",
        input.to_str().unwrap(),
        "--config",
        config.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        err.contains(config.to_str().unwrap()),
        "names the file: {err}"
    );
    assert!(took < Duration::from_secs(10), "took {took:?}");
}

/// The same limit inside a `.keras` archive, where a deflated config can be
/// small on disk: built at test time from the real archive's members.
#[test]
fn a_huge_config_inside_an_archive_is_refused_before_it_is_inflated() {
    use std::io::{Read, Write};
    let source = fixture("k3_classic_separable.keras");
    let mut archive = zip::ZipArchive::new(std::fs::File::open(&source).unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let crafted = dir.path().join("big_config.keras");
    let mut writer = zip::ZipWriter::new(std::fs::File::create(&crafted).unwrap());
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().unwrap().to_string();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        let stored = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        if name == "config.json" {
            let deflated = zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated);
            writer.start_file(name, deflated).unwrap();
            writer.write_all(&bytes).unwrap();
            // Whitespace after the JSON: valid, and it deflates to little.
            writer.write_all(&vec![b' '; 70 << 20]).unwrap();
        } else {
            writer.start_file(name, stored).unwrap();
            writer.write_all(&bytes).unwrap();
        }
    }
    // A stored filler keeps the archive above the zip-bomb ratio, so the
    // config limit is what refuses it.
    writer
        .start_file(
            "assets/filler.bin",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Stored),
        )
        .unwrap();
    writer.write_all(&vec![7u8; 1 << 20]).unwrap();
    writer.finish().unwrap();
    assert_clean_failure(&crafted, "refused: `config.json` is");
}

/// Rebuilds the real archive `source` member by member: `edit` sees each
/// member's name and bytes and returns what to write instead (name, bytes,
/// whether to deflate it), or nothing to leave it out; `extra` members
/// follow.
fn repack(
    source: &str,
    out: &std::path::Path,
    edit: impl Fn(&str, Vec<u8>) -> Option<(String, Vec<u8>, bool)>,
    extra: Vec<(String, Vec<u8>, bool)>,
) {
    use std::io::{Read, Write};
    let mut archive = zip::ZipArchive::new(std::fs::File::open(fixture(source)).unwrap()).unwrap();
    let mut members = Vec::new();
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).unwrap();
        let name = member.name().unwrap().to_string();
        let mut bytes = Vec::new();
        member.read_to_end(&mut bytes).unwrap();
        members.extend(edit(&name, bytes));
    }
    members.extend(extra);
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    for (name, bytes, deflate) in members {
        let method = match deflate {
            true => zip::CompressionMethod::Deflated,
            false => zip::CompressionMethod::Stored,
        };
        let options = zip::write::SimpleFileOptions::default().compression_method(method);
        writer.start_file(name, options).unwrap();
        writer.write_all(&bytes).unwrap();
    }
    writer.finish().unwrap();
}

fn converts_like_keras(archive: &std::path::Path, fixture_name: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    let result = run(&[
        "convert",
        archive.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(result.status.success(), "{}", stderr(&result));
    let expected: serde_json::Value = expected_of(fixture_name);
    check_converted(archive, &std::fs::read(&out).unwrap(), &expected);
}

/// Keras stores `model.weights.h5` uncompressed, and it is read in place;
/// a deflated one (another zip tool's doing) is inflated instead, to the
/// same values.
#[test]
fn a_deflated_weights_member_reads_like_a_stored_one() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("deflated.keras");
    repack(
        "k3_classic_separable.keras",
        &archive,
        |name, bytes| Some((name.to_string(), bytes, name == "model.weights.h5")),
        Vec::new(),
    );
    converts_like_keras(&archive, "k3_classic_separable.keras");
}

/// `config.json` may be as large as a config can be (64 MiB), far more than
/// `metadata.json` (1 MiB).
#[test]
fn a_config_larger_than_the_metadata_limit_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("wide_config.keras");
    repack(
        "k3_classic_separable.keras",
        &archive,
        |name, mut bytes| {
            if name == "config.json" {
                bytes.extend(vec![b' '; 2 << 20]);
            }
            Some((name.to_string(), bytes, false))
        },
        Vec::new(),
    );
    converts_like_keras(&archive, "k3_classic_separable.keras");
}

/// The zip-bomb bound allows any archive to expand to 1 MiB, however small
/// it is: a tiny archive of well-compressed members is not a bomb.
#[test]
fn a_small_archive_may_expand_past_the_ratio_up_to_one_mib() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("small.keras");
    let mut declared = 0usize;
    repack(
        "k3_classic_separable.keras",
        &archive,
        |name, bytes| Some((name.to_string(), bytes, true)),
        Vec::new(),
    );
    {
        let mut zip = zip::ZipArchive::new(std::fs::File::open(&archive).unwrap()).unwrap();
        for i in 0..zip.len() {
            declared += zip.by_index(i).unwrap().size() as usize;
        }
    }
    let filler = (1 << 20) - declared - 4096;
    repack(
        "k3_classic_separable.keras",
        &archive,
        |name, bytes| Some((name.to_string(), bytes, true)),
        vec![("assets/zeros.bin".into(), vec![0u8; filler], true)],
    );
    let archive_len = std::fs::metadata(&archive).unwrap().len() as usize;
    assert!(
        archive_len * 100 < declared + filler,
        "the premise: {archive_len}-byte archive, {} bytes declared",
        declared + filler
    );
    converts_like_keras(&archive, "k3_classic_separable.keras");
}

/// Keras 3.0's `.npz` weights are named, not misread or reported missing.
#[test]
fn an_archive_with_npz_weights_is_refused_as_such() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("npz.keras");
    repack(
        "k3_classic_separable.keras",
        &archive,
        |name, bytes| match name {
            "model.weights.h5" => Some(("model.weights.npz".into(), bytes, false)),
            _ => Some((name.to_string(), bytes, false)),
        },
        Vec::new(),
    );
    assert_clean_failure(
        &archive,
        "weights are `.npz`, which this version does not read",
    );
}
