//! The list of tensors a conversion will write: names, dtypes, shapes and
//! where each tensor's bytes come from. `inspect`, `convert` and the tests
//! all read names from here, so what we show and what we write agree.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::h5::Location;
use crate::json_order::object_in_order;
use crate::model::{Model, Weight};

/// The `__metadata__` key of the JSON object that maps layer paths to classes.
pub const LAYER_CLASSES_KEY: &str = "layer_classes";

/// Prefix of optimizer state in output names, apart from the model's layers.
pub const OPTIMIZER_PREFIX: &str = "optimizer";

/// One tensor to be written.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Index of the model file that holds the bytes.
    pub file: usize,
    pub location: Location,
    pub byte_len: u64,
}

/// Everything the writer needs, decided before a byte of data is read.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// The safetensors `__metadata__` (string to string).
    pub metadata: BTreeMap<String, String>,
}

impl Plan {
    pub fn total_bytes(&self) -> u64 {
        self.tensors.iter().map(|t| t.byte_len).sum()
    }
}

/// The output name of a weight: the layer path, the sub-object where the
/// layer needs one to keep labels apart, then the label, joined by `/`
/// (`efficientnetb0/block1a_dwconv/depthwise_kernel`).
pub fn tensor_name(layer_path: &[String], weight: &Weight) -> String {
    layer_path
        .iter()
        .chain(&weight.sub_path)
        .map(String::as_str)
        .chain(std::iter::once(weight.label.as_str()))
        .collect::<Vec<_>>()
        .join("/")
}

/// Names every weight of `model` and checks that no two names collide.
pub fn plan(model: &Model, source: &Path) -> Result<Plan> {
    let optimizer_path = [OPTIMIZER_PREFIX.to_string()];
    let weights = model
        .layers
        .iter()
        .flat_map(|l| l.weights.iter().map(move |w| (l.path.as_slice(), w)))
        .chain(model.optimizer.iter().map(|w| (&optimizer_path[..], w)));

    let mut tensors = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for (layer_path, weight) in weights {
        let name = tensor_name(layer_path, weight);
        if let Some(first) = seen.insert(name.clone(), weight.stored_name.clone()) {
            return Err(Error::new(
                source,
                ErrorKind::NameClash {
                    name,
                    first,
                    second: weight.stored_name.clone(),
                },
            ));
        }
        tensors.push(PlannedTensor {
            name,
            dtype: weight.dtype,
            shape: weight.shape.clone(),
            file: weight.file,
            location: weight.location.clone(),
            byte_len: weight.byte_len(),
        });
    }
    Ok(Plan {
        tensors,
        metadata: metadata(model, source),
    })
}

fn metadata(model: &Model, source: &Path) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "keras".into());
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
    // Every layer path, with its class where the file says it: readers of
    // the output can group tensors back into layers.
    // The object keeps model order, which a sorted map would lose.
    let paths: Vec<String> = model.layers.iter().map(|l| l.path_string()).collect();
    let classes = paths
        .iter()
        .zip(&model.layers)
        .map(|(p, l)| (p.as_str(), serde_json::Value::from(l.class.clone())));
    m.insert(LAYER_CLASSES_KEY.into(), object_in_order(classes));
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keras::{self, ReadOptions};

    #[test]
    fn a_name_clash_is_an_error_not_an_overwrite() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5");
        let mut model = keras::open(&fixture, &ReadOptions::default()).unwrap();
        let mut twin = model.layers[0].clone();
        twin.weights[0].stored_name = "conv2d/other_scope/kernel:0".into();
        model.layers.push(twin);
        let err = plan(&model, &fixture).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::NameClash { .. }));
        let message = err.to_string();
        assert!(message.contains("classic_conv2d_full.h5"), "{message}");
        assert!(message.contains("`conv2d/kernel`"), "{message}");
        assert!(message.contains("conv2d/other_scope/kernel:0"), "{message}");
    }
}
