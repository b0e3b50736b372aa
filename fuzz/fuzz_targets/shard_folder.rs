//! Bytes as a folder of files (cut at `FILE_SEPARATOR`): a sharded Keras
//! save and a sharded safetensors save, opened through their indexes and as
//! a folder, as the command line opens them.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    keras2safetensors_fuzz::folder_calls(data);
});
