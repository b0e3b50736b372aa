//! Bytes as a `.keras` archive (zip). Inputs that do not start like a zip are
//! skipped: `keras_file` covers them, and this target's time goes to the
//! archive reader and the HDF5 member read through a window on the zip.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if !data.starts_with(b"PK\x03\x04") {
        return;
    }
    let input = keras2safetensors_fuzz::write_input("model.keras", data);
    keras2safetensors_fuzz::keras_calls(&input);
});
