//! Bytes as a model config: parsed alone, given as `--config`, and as the
//! `config.json` and `metadata.json` of a `.keras` archive around a real
//! weights file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keras2safetensors_fuzz::config_calls(data);
});
