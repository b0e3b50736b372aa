//! Bytes as a SavedModel's `saved_model.pb`, beside a fixed, valid
//! `variables/` and no `keras_metadata.pb`, so the Keras metadata is looked
//! for in the bytes (as in SavedModels written by TF 2.0-2.4): the field
//! scan, the object graph, the node paths and the metadata JSON.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// The variables of `fixtures/third_party/basic_pitch_nmp`.
const INDEX: &[u8] =
    include_bytes!("../../fixtures/third_party/basic_pitch_nmp/variables/variables.index");
const DATA: &[u8] = include_bytes!(
    "../../fixtures/third_party/basic_pitch_nmp/variables/variables.data-00000-of-00001"
);

fuzz_target!(|data: &[u8]| {
    keras2safetensors_fuzz::saved_model_calls(data, INDEX, DATA);
});
