//! A `.keras` archive built from the input's parts, so that the fuzzer's
//! changes reach `config.json` and `metadata.json` (in a raw zip, a changed
//! member fails its CRC check before any JSON is parsed).
//!
//! Input: a flags byte, then `config.json`, `metadata.json` and
//! `model.weights.h5`, separated by [`SEPARATOR`]; missing parts are left out
//! of the archive. Flag bit 0 deflates the weights member (read into memory
//! instead of through a window on the archive). Seeds in
//! `seeds/keras_archive_members/` are the fixture archives' members.
#![no_main]

use std::io::Write;

use libfuzzer_sys::fuzz_target;
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

const SEPARATOR: &[u8] = b"\n=====MEMBER=====\n";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let parts = split(rest);
    let names = ["config.json", "metadata.json", "model.weights.h5"];
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (i, (name, part)) in names.iter().zip(&parts).enumerate() {
        let method = if i == 2 && flags & 1 != 0 {
            CompressionMethod::Deflated
        } else {
            CompressionMethod::Stored
        };
        let options = SimpleFileOptions::default().compression_method(method);
        zip.start_file(*name, options).expect("zip member");
        zip.write_all(part).expect("zip write");
    }
    let archive = zip.finish().expect("zip finish").into_inner();
    let input = keras2safetensors_fuzz::write_input("model.keras", &archive);
    keras2safetensors_fuzz::keras_calls(&input);
});
