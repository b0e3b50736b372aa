//! Bytes as a TensorFlow checkpoint's `.index` file (a LevelDB-style table
//! of bundle entries), beside one fixed, valid data shard: the table reader
//! on its own, then the whole path (detect, open, convert, inspect), which
//! reaches the entry protos, the object graph and the shard bounds checks.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The data shard of `fixtures/tf/train_checkpoint/ckpt-1`.
const SHARD: &[u8] =
    include_bytes!("../../fixtures/tf/train_checkpoint/ckpt-1.data-00000-of-00001");

fuzz_target!(|data: &[u8]| {
    let _ = keras2safetensors::tf_bundle::table::entries(data);
    keras2safetensors_fuzz::write_input("ckpt.data-00000-of-00001", SHARD);
    let index = keras2safetensors_fuzz::write_input("ckpt.index", data);
    keras2safetensors_fuzz::keras_calls(&index.with_file_name("ckpt"));
});
