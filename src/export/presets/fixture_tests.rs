//! Each preset applied to a Keras model's weight list gives exactly the
//! state-dict names and shapes of its target. Both sides were dumped by the
//! libraries themselves (`fixtures/generate_presets.py`): the layer list by
//! tf-keras from `keras.applications`, the state dicts by timm and
//! transformers. The full-size models are too large to commit, but planning
//! reads no weight bytes, so a model built from the list plans exactly as
//! the file would.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Preset;
use crate::dtype::Dtype;
use crate::export::{plan, Layout, PlanOptions};
use crate::model::{Format, Layer, Location, Model, Weight};
use crate::test_support::fixture;

pub(super) fn json(name: &str) -> Value {
    let text = std::fs::read_to_string(fixture(&format!("presets/{name}"))).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A model with the layers, classes, labels and shapes Keras listed.
pub(super) fn keras_model(name: &str) -> Model {
    let listed = json(name);
    let mut entry = 0;
    let layers = listed["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|layer| {
            let layer_name = layer["name"].as_str().unwrap().to_string();
            let weights = layer["weights"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| {
                    let label = w[0].as_str().unwrap().to_string();
                    entry += 1;
                    Weight {
                        stored: crate::model::StoredName::InDataset(1),
                        dataset: format!("/{layer_name}/{label}"),
                        label: label.into(),
                        sub_path: Vec::new(),
                        dtype: Dtype::F32,
                        shape: w[1]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|d| d.as_u64().unwrap() as usize)
                            .collect(),
                        file: 0,
                        location: Location::Bundle(entry),
                    }
                })
                .collect();
            Layer {
                path: vec![layer_name],
                class: Some(layer["class"].as_str().unwrap().to_string()),
                config: None,
                weights,
            }
        })
        .collect();
    Model {
        format: Format::KerasH5Model,
        keras_version: listed["keras"].as_str().map(str::to_string),
        backend: None,
        date_saved: None,
        layers,
        optimizer: Vec::new(),
        notes: Vec::new(),
        skipped_groups: Vec::new(),
        skipped: Vec::new(),
        stores: Vec::new(),
    }
}

pub(super) fn options(preset: &str) -> PlanOptions {
    PlanOptions {
        layout: Layout::PyTorch,
        num_batches_tracked: true,
        preset: Some(Preset::named(preset).unwrap()),
        ..PlanOptions::default()
    }
}

/// Names to shapes, in order.
pub(super) fn state_dict(name: &str) -> Vec<(String, Vec<usize>)> {
    names_and_shapes(name, "state_dict")
}

/// The `[name, shape]` pairs listed under `key` in a fixture, in order.
pub(super) fn names_and_shapes(name: &str, key: &str) -> Vec<(String, Vec<usize>)> {
    json(name)[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|pair| {
            let shape = pair[1].as_array().unwrap();
            let shape = shape.iter().map(|d| d.as_u64().unwrap() as usize).collect();
            (pair[0].as_str().unwrap().to_string(), shape)
        })
        .collect()
}

fn assert_preset_gives(keras: &str, preset: &str, target: &str) {
    assert_plan_gives(keras_model(keras), keras, preset, target);
}

/// `model` (listed in `keras`) planned with `preset` has exactly the
/// names and shapes of the state dict in `target`.
pub(super) fn assert_plan_gives(mut model: Model, keras: &str, preset: &str, target: &str) {
    let planned = plan(&mut model, "x.h5".as_ref(), &options(preset)).unwrap();
    let got: BTreeMap<String, Vec<usize>> = planned
        .tensors
        .iter()
        .map(|t| (t.name.clone(), t.shape.to_vec()))
        .collect();
    let want: BTreeMap<String, Vec<usize>> = state_dict(target).into_iter().collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{keras} with {preset}: missing {missing:?}, not in {target}: {extra:?}"
    );
    for (name, shape) in &want {
        assert_eq!(&got[name], shape, "{keras} with {preset}: shape of {name}");
    }
    assert_eq!(planned.tensors.len(), want.len());
    assert_eq!(planned.metadata["preset"], preset);
}

#[test]
fn timm_tf_efficientnet_names_and_shapes_match_timm_state_dicts() {
    assert_preset_gives(
        "keras_efficientnetb0.layers.json",
        "timm-tf-efficientnet",
        "timm_tf_efficientnet_b0.state_dict.json",
    );
    assert_preset_gives(
        "keras_efficientnetb7.layers.json",
        "timm-tf-efficientnet",
        "timm_tf_efficientnet_b7.state_dict.json",
    );
}

#[test]
fn hf_efficientnet_names_and_shapes_match_transformers_state_dicts() {
    assert_preset_gives(
        "keras_efficientnetb0.layers.json",
        "hf-efficientnet",
        "hf_efficientnet_b0.state_dict.json",
    );
    assert_preset_gives(
        "keras_efficientnetb7.layers.json",
        "hf-efficientnet",
        "hf_efficientnet_b7.state_dict.json",
    );
}

#[test]
fn timm_legacy_xception_names_and_shapes_match_timm_state_dict() {
    assert_preset_gives(
        "keras_xception.layers.json",
        "timm-legacy-xception",
        "timm_legacy_xception.state_dict.json",
    );
}

#[test]
fn a_model_of_another_family_is_refused_naming_the_first_tensor_with_no_place() {
    let cases = [
        (
            "keras_xception.layers.json",
            "timm-tf-efficientnet",
            "`block1_conv1.weight`",
        ),
        (
            "keras_xception.layers.json",
            "hf-efficientnet",
            "`block1_conv1.weight`",
        ),
        (
            "keras_efficientnetb0.layers.json",
            "timm-legacy-xception",
            "`normalization.mean`",
        ),
    ];
    for (keras, preset, first) in cases {
        let err = plan(&mut keras_model(keras), "x.h5".as_ref(), &options(preset))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("has no place in") && err.contains(first),
            "{err}"
        );
    }
}

#[test]
fn preprocessing_layers_are_left_out_with_their_reason() {
    let mut model = keras_model("keras_efficientnetb0.layers.json");
    let planned = plan(
        &mut model,
        "x.h5".as_ref(),
        &options("timm-tf-efficientnet"),
    )
    .unwrap();
    let reasons: Vec<&str> = planned.skipped.iter().map(|s| s.reason.as_str()).collect();
    assert_eq!(planned.skipped.len(), 3, "{reasons:?}");
    assert!(reasons
        .iter()
        .all(|r| r.contains("Normalization layer `normalization`")));
    assert!(planned.notes.iter().any(|n| n.contains("normalised")));
    assert!(planned
        .warnings
        .iter()
        .any(|w| w.contains("not `efficientnet_bN`")));
}

/// `align` finds the preset's mapping on its own, from the target's names
/// and shapes: in state-dict order (a JSON reference) and with the order
/// lost (a safetensors header lists names sorted).
#[test]
fn align_finds_each_presets_mapping_with_no_rules() {
    use crate::align::{align, Reference};
    let cases = [
        (
            "keras_efficientnetb0.layers.json",
            "timm-tf-efficientnet",
            "timm_tf_efficientnet_b0.state_dict.json",
        ),
        (
            "keras_efficientnetb7.layers.json",
            "timm-tf-efficientnet",
            "timm_tf_efficientnet_b7.state_dict.json",
        ),
        (
            "keras_efficientnetb0.layers.json",
            "hf-efficientnet",
            "hf_efficientnet_b0.state_dict.json",
        ),
        (
            "keras_xception.layers.json",
            "timm-legacy-xception",
            "timm_legacy_xception.state_dict.json",
        ),
    ];
    for (keras, preset, target) in cases {
        // Each plan takes the weights of the model it is given.
        let mut model = keras_model(keras);
        let by_preset = plan(&mut model, "x.h5".as_ref(), &options(preset)).unwrap();
        let mut model = keras_model(keras);
        let want: Vec<&str> = by_preset.tensors.iter().map(|t| t.name.as_str()).collect();
        let unaligned = PlanOptions {
            layout: Layout::PyTorch,
            num_batches_tracked: true,
            skip: crate::align::preprocessing_layers(&model),
            ..PlanOptions::default()
        };
        let source = plan(&mut model, "x.h5".as_ref(), &unaligned)
            .unwrap()
            .tensors;
        for ordered in [true, false] {
            let mut tensors = state_dict(target);
            if !ordered {
                tensors.sort();
            }
            let alignment = align(&source, &Reference { tensors, ordered }).unwrap();
            let target_of: BTreeMap<&str, &str> = alignment
                .pairs
                .iter()
                .map(|p| (p.source.as_str(), p.target.as_str()))
                .collect();
            let got: Vec<String> = source
                .iter()
                .map(|t| {
                    let (module, param) = t.name.rsplit_once('.').unwrap();
                    format!("{}.{param}", target_of[module])
                })
                .collect();
            assert_eq!(got, want, "{keras} onto {target} (ordered: {ordered})");
        }
    }
}

#[test]
fn align_refuses_a_reference_of_another_architecture() {
    use crate::align::{align, Reference};
    let mut model = keras_model("keras_xception.layers.json");
    let source = plan(&mut model, "x.h5".as_ref(), &options_without_preset())
        .unwrap()
        .tensors;
    let mut tensors = state_dict("timm_tf_efficientnet_b0.state_dict.json");
    tensors.sort();
    let err = align(
        &source,
        &Reference {
            tensors,
            ordered: false,
        },
    )
    .unwrap_err();
    assert!(
        err.contains("differ in structure") && err.contains("`block1_conv2`"),
        "{err}"
    );
}

fn options_without_preset() -> PlanOptions {
    PlanOptions {
        layout: Layout::PyTorch,
        num_batches_tracked: true,
        ..PlanOptions::default()
    }
}

/// Presets and `align` leave out the same layers, classes recorded or not.
#[test]
fn preprocessing_is_told_by_class_or_by_its_arrays() {
    let mut model = keras_model("keras_efficientnetb0.layers.json");
    assert_eq!(
        crate::align::preprocessing_layers(&model),
        ["normalization"]
    );
    for layer in &mut model.layers {
        layer.class = None;
    }
    assert_eq!(
        crate::align::preprocessing_layers(&model),
        ["normalization"]
    );
    let planned = plan(
        &mut model,
        "x.h5".as_ref(),
        &options("timm-tf-efficientnet"),
    )
    .unwrap();
    assert_eq!(planned.skipped.len(), 3);
}
