//! Bytes as a `.safetensors` file: the header reader, tensor reads and the
//! manifest (sha256 of every tensor).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = keras2safetensors_fuzz::write_input("model.safetensors", data);
    keras2safetensors_fuzz::safetensors_calls(&input);
});
