//! A TensorFlow checkpoint built by the target from fuzzed parts, so that
//! mutations reach past the table's block checksums: the input is a data
//! shard, then `(key, value)` entries, separated by
//! `\n=====ENTRY=====\n` (key and value by `\n=====VALUE=====\n`). The
//! target sorts the entries into a valid table (right CRCs, flag bit 0 of
//! the first byte: snappy blocks), writes `ckpt.index` and
//! `ckpt.data-00000-of-00001`, and runs the `keras_file` calls on the
//! prefix: the bundle header and entry protos, shapes, slices and their
//! keys, the object graph, shard bounds and tensor CRCs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut records = keras2safetensors_fuzz::split(rest, b"\n=====ENTRY=====\n");
    if records.is_empty() {
        return;
    }
    let shard = records.remove(0);
    let entries: Vec<(Vec<u8>, Vec<u8>)> = records
        .into_iter()
        .map(|r| {
            let mut kv = keras2safetensors_fuzz::split(r, b"\n=====VALUE=====\n");
            let key = kv.remove(0).to_vec();
            (key, kv.concat())
        })
        .collect();
    let index = keras2safetensors_fuzz::table(entries, flags & 1 == 1);
    keras2safetensors_fuzz::write_input("ckpt.data-00000-of-00001", shard);
    let index = keras2safetensors_fuzz::write_input("ckpt.index", &index);
    keras2safetensors_fuzz::keras_calls(&index.with_file_name("ckpt"));
});
