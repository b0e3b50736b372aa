//! Any bytes as a Keras file (`.h5`): detection is by content, so this reaches
//! every reader (HDF5 layouts, zip, JSON shard index, safetensors).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let input = keras2safetensors_fuzz::write_input("model.h5", data);
    keras2safetensors_fuzz::keras_calls(&input);
});
