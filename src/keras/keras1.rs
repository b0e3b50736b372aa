//! Keras 1 HDF5 weights: `nb_layers` at the root, groups `layer_{k}` for
//! every layer of `model.layers` (weightless ones too), each with datasets
//! `param_{p}`. No names are stored: the layer's name and class come from
//! the config (`model_config`, or `--config`), the labels from the class's
//! label table and the position.

use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::keras::config::LayerConfig;
use crate::keras::weight_dtype;
use crate::labels;
use crate::model::{Layer, StoredName, Weight};

/// Keras 0.x weight orders that differ from later Keras's label tables: its
/// BatchNormalization stored a running standard deviation, not a variance.
const KERAS0_LABELS: &[(&str, &[&str])] = &[(
    "BatchNormalization",
    &["gamma", "beta", "running_mean", "running_std"],
)];

/// Upper bound on `nb_layers`, so a crafted count cannot make us loop long.
const MAX_LAYERS: u64 = 1 << 20;

#[derive(Debug)]
pub struct Read {
    pub layers: Vec<Layer>,
    pub notes: Vec<String>,
}

pub fn read(path: &Path, file: &h5::File, config: Option<&LayerConfig>) -> Result<Read> {
    let corrupt = |e: h5::H5Error| Error::new(path, ErrorKind::CorruptHdf5(e.0));
    let invalid = |m: String| Error::new(path, ErrorKind::InvalidKeras(m));
    let root = file.root().map_err(corrupt)?;
    let count = root
        .string_attr("nb_layers")
        .ok()
        .flatten()
        .and_then(|s| s.parse::<u64>().ok())
        .or_else(|| root.integer_attr("nb_layers"))
        .ok_or_else(|| invalid("`nb_layers` is not a number".into()))?;
    if count > MAX_LAYERS {
        return Err(invalid(format!("`nb_layers` is {count}")));
    }
    let (groups, _) = root.member_names().map_err(corrupt)?;
    let groups: std::collections::HashSet<String> = groups.into_iter().collect();
    let mut notes = Vec::new();
    if config.is_none() {
        notes.push(
            "a Keras 1 file stores no layer names or classes: layers are named layer_K and \
             weights param_P (pass --config config.json to name them)"
                .to_string(),
        );
    }
    let mut layers = Vec::new();
    for k in 0..count {
        crate::cancel::check(path)?;
        let key = format!("layer_{k}");
        if !groups.contains(&key) {
            return Err(invalid(format!(
                "`nb_layers` is {count} but there is no `{key}`"
            )));
        }
        let group = root.group(&key).map_err(corrupt)?;
        let (_, mut params) = group.member_names().map_err(corrupt)?;
        params.sort_by_key(|p| {
            p.strip_prefix("param_")
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(u64::MAX)
        });
        if params.is_empty() {
            continue;
        }
        let layer_config = config.and_then(|c| c.children.get(k as usize));
        let class = layer_config.map(|c| c.class.clone());
        // Keras 0.x named layers after their class without numbering them,
        // so a name may repeat: then the index keeps paths apart.
        let repeats =
            |n: &str| config.is_some_and(|c| c.children.iter().filter(|x| x.name == n).count() > 1);
        let name = match layer_config.map(|c| c.name.clone()) {
            Some(n) if repeats(&n) => format!("{n}_{k}"),
            Some(n) => n,
            None => key.clone(),
        };
        let positional =
            class
                .as_deref()
                .and_then(|c| match KERAS0_LABELS.iter().find(|(k, _)| *k == c) {
                    Some((_, names)) if names.len() == params.len() => Some(
                        names
                            .iter()
                            .map(|n| {
                                Some(labels::PositionalLabel {
                                    sub_path: Vec::new(),
                                    label: n.to_string(),
                                })
                            })
                            .collect(),
                    ),
                    _ => labels::by_position(c, layer_config.map(|c| &c.config), params.len()),
                });
        let mut weights = Vec::with_capacity(params.len());
        for (p, param) in params.iter().enumerate() {
            let dataset = format!("/{key}/{param}");
            let info = file.dataset(&dataset).map_err(|e| {
                let e = e.within(format_args!("weight `{dataset}`"));
                Error::new(path, e.kind(ErrorKind::InvalidKeras))
            })?;
            let dtype = weight_dtype(path, &info, &dataset, &mut notes)?;
            let (sub_path, label) = match positional.as_ref().and_then(|l| l[p].clone()) {
                Some(l) => (l.sub_path, l.label),
                None => (Vec::new(), param.clone()),
            };
            weights.push(Weight {
                label: labels::interned(&label),
                sub_path,
                stored: StoredName::InDataset(0),
                dtype,
                shape: info.shape,
                file: 0,
                dataset,
                location: info.location.into(),
            });
        }
        layers.push(Layer {
            path: vec![name],
            class,
            config: layer_config.map(|c| c.config.clone()),
            weights,
        });
    }
    Ok(Read { layers, notes })
}
