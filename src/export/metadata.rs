//! The safetensors `__metadata__` a conversion writes: where the tensors
//! come from, and per layer (keyed by the layer's name in the output, after
//! any renames) its class and the options a PyTorch module needs.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::export::plan::{Layout, LAYER_CLASSES_KEY, LAYOUT_KEY};
use crate::json_order::{object_in_order, object_of_json};
use crate::model::Model;

/// The key listing layers written in Keras layout inside a PyTorch-layout
/// file (layers with no PyTorch equivalent).
pub const AS_STORED_KEY: &str = "keras_layout_layers";

/// What the PyTorch layout learned per layer (by index in `model.layers`).
#[derive(Debug, Default)]
pub struct TorchMetadata {
    /// Each written layer's class and module options, as JSON text: as a
    /// map each held 630 bytes, 63 MB for 100,000 layers.
    pub options: Vec<(usize, String)>,
    /// Layers with no PyTorch equivalent, written as stored.
    pub as_stored: Vec<usize>,
}

/// The `format` value Hugging Face loaders check: `pt` for PyTorch layout;
/// Keras layout holds TensorFlow-layout arrays under TensorFlow-style
/// names, which is what `tf` means to them.
pub fn format_id(layout: Layout) -> &'static str {
    match layout {
        Layout::Keras => "tf",
        Layout::PyTorch => "pt",
    }
}

/// Each layer's name in the output: its path joined by `separator`, or,
/// where renames moved all of its tensors under one new prefix, that prefix.
/// `renamed[i]` lists layer `i`'s written tensors as (name within the
/// layer, final name).
pub fn layer_keys(
    model: &Model,
    separator: &str,
    renamed: &[Option<LayerPrefix>],
    notes: &mut Vec<String>,
) -> Vec<String> {
    model
        .layers
        .iter()
        .zip(renamed)
        .map(|(layer, prefix)| {
            let original = layer.path.join(separator);
            match prefix {
                None => original,
                Some(LayerPrefix {
                    first: Some(key),
                    shared: true,
                }) => key.clone(),
                Some(_) => {
                    notes.push(format!(
                        "layer `{}`: renamed tensors share no layer prefix, so its metadata keeps the key `{original}`",
                        layer.path_string()
                    ));
                    original
                }
            }
        })
        .collect()
}

/// What the written names of one layer's tensors have before their name
/// within the layer, gathered tensor by tensor (not kept as a list of
/// names: 200,000 of them for a model of 100,000 layers).
#[derive(Debug, Clone)]
pub struct LayerPrefix {
    /// The first tensor's prefix, `None` if its name does not end with
    /// its name within the layer.
    first: Option<String>,
    /// Whether every later tensor has that same prefix.
    shared: bool,
}

impl LayerPrefix {
    /// Adds a tensor written as `name` whose name within its layer is `within`.
    pub fn add(prefix: &mut Option<LayerPrefix>, within: &str, name: &str, separator: &str) {
        let head = name.strip_suffix(within).and_then(|head| match head {
            "" => Some(""),
            head => head.strip_suffix(separator),
        });
        match prefix {
            None => {
                *prefix = Some(LayerPrefix {
                    first: head.map(str::to_string),
                    shared: true,
                })
            }
            Some(p) => {
                p.shared &= p.first.is_some() && p.first.as_deref() == head;
            }
        }
    }
}

pub fn metadata(
    model: &Model,
    source: &Path,
    layout: Layout,
    layer_keys: &[String],
    torch: &TorchMetadata,
) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), format_id(layout).into());
    m.insert(LAYOUT_KEY.into(), layout.id().into());
    m.insert("source_format".into(), model.format.id().into());
    m.insert(
        "converter".into(),
        concat!("keras2safetensors ", env!("CARGO_PKG_VERSION")).into(),
    );
    if let Some(name) = source.file_name() {
        m.insert("source".into(), name.to_string_lossy().into_owned());
    }
    if let Some(v) = &model.keras_version {
        m.insert("keras_version".into(), v.clone());
    }
    if let Some(b) = &model.backend {
        m.insert("backend".into(), b.clone());
    }
    // Every layer (as the output names spell it), with its class where the
    // file says it, in model order: readers of the output can group tensors
    // back into layers.
    let classes = layer_keys
        .iter()
        .zip(&model.layers)
        .map(|(key, l)| (key.as_str(), Value::from(l.class.clone())));
    m.insert(LAYER_CLASSES_KEY.into(), object_in_order(classes));
    if !torch.options.is_empty() {
        let options = torch
            .options
            .iter()
            .map(|(i, o)| (layer_keys[*i].as_str(), o.as_str()));
        m.insert("pytorch_options".into(), object_of_json(options));
    }
    if !torch.as_stored.is_empty() {
        let keys: Vec<Value> = torch
            .as_stored
            .iter()
            .map(|&i| Value::from(layer_keys[i].clone()))
            .collect();
        m.insert(AS_STORED_KEY.into(), Value::Array(keys).to_string());
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prefix_of(tensors: &[(&str, &str)], separator: &str) -> Option<LayerPrefix> {
        let mut prefix = None;
        for (within, name) in tensors {
            LayerPrefix::add(&mut prefix, within, name, separator);
        }
        prefix
    }

    fn key(prefix: &Option<LayerPrefix>) -> Option<Option<&str>> {
        prefix.as_ref().map(|p| match p {
            LayerPrefix {
                first: Some(k),
                shared: true,
            } => Some(k.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_layer_key_is_the_prefix_every_renamed_tensor_shares() {
        // (name within the layer, written name): the key, or none (a note).
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<Option<&'a str>>);
        let cases: &[Case] = &[
            (&[], None),
            (
                &[("kernel", "enc.0.kernel"), ("bias", "enc.0.bias")],
                Some(Some("enc.0")),
            ),
            (&[("kernel", "kernel")], Some(Some(""))),
            (
                &[("kernel", "enc.0.kernel"), ("bias", "enc.1.bias")],
                Some(None),
            ),
            (
                &[("kernel", "enc.0.weight"), ("bias", "enc.0.bias")],
                Some(None),
            ),
            (
                &[("kernel", "enc.0.kernel"), ("bias", "enc.0.weight")],
                Some(None),
            ),
            (&[("kernel", "enc0kernel")], Some(None)),
        ];
        for (tensors, expected) in cases {
            assert_eq!(key(&prefix_of(tensors, ".")), *expected, "{tensors:?}");
        }
    }
}
