//! Keras 2 legacy HDF5 files: `model.save('x.h5')` and `save_weights('x.h5')`
//! from Keras 2.0 to tf-keras 2.x, and Keras 3's `model.save('x.h5')`.
//!
//! Layout: a list attribute `layer_names` (model order; the group listing is
//! alphabetical and says nothing about order), one group per layer, and in
//! it a `weight_names` list of dataset paths relative to the layer group. A
//! nested model is one group whose weight names start with its inner layers'
//! names.

use std::collections::HashMap;
use std::path::Path;

use crate::accounting::{self, OPTIMIZER_SKIPPED};
use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::inspect::human_bytes;
use crate::keras::config::{ConfigIndex, LayerConfig, MAX_CONFIG_BYTES};
use crate::keras::{weight_dtype, ReadOptions};
use crate::labels;
use crate::model::{Format, Layer, Location, Model, SkippedGroup, StoredName, Weight};

/// Layers that never hold weights, so a missing label table is no surprise.
const WRAPPERS: &[&str] = &["Bidirectional", "TimeDistributed"];

/// Reads a Keras HDF5 file that has already been opened.
/// Reads the model in `file`; the caller adds the file to its stores.
pub fn read(
    path: &Path,
    file: &h5::File,
    options: &ReadOptions,
    config: Option<LayerConfig>,
) -> Result<Model> {
    let mut reader = Reader {
        path,
        file,
        notes: Vec::new(),
        skipped_groups: Vec::new(),
    };
    let (format, layers, optimizer, keras_version, backend) = reader.read_all(options, config)?;
    let notes = reader.notes;
    let skipped_groups = reader.skipped_groups;
    Ok(Model {
        format,
        keras_version,
        backend,
        date_saved: None,
        layers,
        optimizer,
        notes,
        skipped_groups,
        skipped: Vec::new(),
        stores: Vec::new(),
    })
}

struct Reader<'a> {
    path: &'a Path,
    file: &'a h5::File,
    notes: Vec<String>,
    skipped_groups: Vec<SkippedGroup>,
}

/// A stored weight before it is assigned to a layer (also what the TF
/// checkpoint readers hand to [`assemble`], so both name alike).
pub(crate) struct RawWeight {
    pub(crate) stored_name: String,
    /// The dataset's absolute path (a bundle: the entry's key).
    pub(crate) dataset: String,
    /// The stored name split on `/`, without the `:0` suffix.
    pub(crate) parts: Vec<String>,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<usize>,
    pub(crate) location: Location,
}

type ReadResult = (
    Format,
    Vec<Layer>,
    Vec<Weight>,
    Option<String>,
    Option<String>,
);

impl Reader<'_> {
    fn corrupt(&self, e: h5::H5Error) -> Error {
        Error::new(self.path, ErrorKind::CorruptHdf5(e.0))
    }

    fn invalid(&self, message: String) -> Error {
        Error::new(self.path, ErrorKind::InvalidKeras(message))
    }

    fn read_all(
        &mut self,
        options: &ReadOptions,
        config: Option<LayerConfig>,
    ) -> Result<ReadResult> {
        let root = self.file.root().map_err(|e| self.corrupt(e))?;
        // Looked up by name: listing a root of 100,000 layers reads every
        // layer's header.
        let path = self.path;
        let has_group = |name: &str| {
            root.has_member_group(name)
                .map_err(|e| Error::new(path, ErrorKind::CorruptHdf5(e.0)))
        };
        // Every root attribute is looked up in one read of them.
        let root_attrs = root.attributes().map_err(|e| self.corrupt(e))?;
        let has_attr = |name: &str| root_attrs.has(name);

        let (format, weights_root, weights_root_path) = if has_group("model_weights")? {
            let group = root.group("model_weights").map_err(|e| self.corrupt(e))?;
            (Format::KerasH5Model, group, "/model_weights")
        } else if has_attr("layer_names") || has_attr("layer_names0") {
            (
                Format::KerasH5Weights,
                self.file.root().map_err(|e| self.corrupt(e))?,
                "",
            )
        } else if has_attr("nb_layers") {
            return Err(Error::new(
                self.path,
                ErrorKind::Unsupported(
                    "a Keras 1 weight file (`nb_layers`), which this version does not read yet"
                        .into(),
                ),
            ));
        } else if has_group("layers")? || has_group("_layer_checkpoint_dependencies")? {
            return Err(Error::new(
                self.path,
                ErrorKind::Unsupported(
                    "a Keras 3 `.weights.h5` file, which this version does not read yet".into(),
                ),
            ));
        } else {
            return Err(Error::new(
                self.path,
                ErrorKind::NotKeras(
                    "no `model_weights` group and no `layer_names` attribute".into(),
                ),
            ));
        };

        let weights_attrs = match format {
            Format::KerasH5Model => Some(weights_root.attributes().map_err(|e| self.corrupt(e))?),
            _ => None,
        };
        let weights_attrs = weights_attrs.as_ref().unwrap_or(&root_attrs);
        let string_attr = |name: &str| -> Option<String> {
            root_attrs
                .string(name)
                .ok()
                .flatten()
                .or_else(|| weights_attrs.string(name).ok().flatten())
        };
        let keras_version = string_attr("keras_version");
        let backend = string_attr("backend");
        let config = match root_attrs.string("model_config") {
            Ok(Some(json)) if json.len() > MAX_CONFIG_BYTES => {
                return Err(Error::new(
                    self.path,
                    ErrorKind::Unsafe(format!(
                        "the `model_config` attribute is {} bytes, more than the {} a Keras model needs",
                        json.len(),
                        human_bytes(MAX_CONFIG_BYTES as u64)
                    )),
                ))
            }
            Ok(Some(json)) => match LayerConfig::parse(&json) {
                Ok(c) => Some(c),
                Err(e) => {
                    self.notes.push(format!("{e}; classes are unknown"));
                    config
                }
            },
            _ => config,
        };

        let layer_names = read_list(weights_attrs, "layer_names")
            .map_err(|e| self.corrupt(e))?
            .ok_or_else(|| self.invalid("`model_weights` has no `layer_names` attribute".into()))?;

        // Each layer's config by name, in constant time.
        let config_index = config.as_ref().map(ConfigIndex::new);
        let mut layers = Vec::new();
        for name in &layer_names {
            crate::cancel::check(self.path)?;
            let group = weights_root.group(name).map_err(|e| {
                self.invalid(format!(
                    "layer `{name}` is listed in layer_names but has no group ({e})"
                ))
            })?;
            let group_path = format!("{weights_root_path}/{name}");
            let raw = self.read_weights(&group, &group_path, name)?;
            if raw.is_empty() {
                continue;
            }
            let layer_config = config_index.as_ref().and_then(|c| c.child(name));
            layers.extend(assemble(name, layer_config, raw, &mut self.notes)?);
        }
        if !layer_names.iter().any(|n| n == "top_level_model_weights")
            && weights_root.has_group("top_level_model_weights")
        {
            let group = weights_root
                .group("top_level_model_weights")
                .map_err(|e| self.corrupt(e))?;
            let group_path = format!("{weights_root_path}/top_level_model_weights");
            let raw = self.read_weights(&group, &group_path, "top_level_model_weights")?;
            if !raw.is_empty() {
                layers.push(Layer {
                    path: Vec::new(),
                    class: None,
                    config: None,
                    weights: raw.into_iter().map(|w| to_weight(w, Vec::new())).collect(),
                });
            }
        }

        let mut optimizer = Vec::new();
        let has_optimizer = has_group("optimizer_weights")?;
        if has_optimizer && !options.include_optimizer {
            self.skipped_groups.push(SkippedGroup {
                file: 0,
                group: "/optimizer_weights".into(),
                reason: OPTIMIZER_SKIPPED.into(),
            });
        }
        if options.include_optimizer && has_optimizer {
            let group = root
                .group("optimizer_weights")
                .map_err(|e| self.corrupt(e))?;
            for w in self.read_weights(&group, "/optimizer_weights", "optimizer_weights")? {
                let mut parts = w.parts.clone();
                let label = parts.pop().unwrap_or_default();
                optimizer.push(Weight {
                    label: label.into(),
                    sub_path: parts,
                    ..to_weight(w, Vec::new())
                });
            }
        }
        Ok((format, layers, optimizer, keras_version, backend))
    }

    /// Reads the `weight_names` of one layer group and describes each dataset.
    fn read_weights(
        &mut self,
        group: &h5::Group,
        group_path: &str,
        layer: &str,
    ) -> Result<Vec<RawWeight>> {
        let attrs = group
            .attributes()
            .map_err(|e| self.invalid(format!("layer `{layer}`: {e}")))?;
        let names = read_list(&attrs, "weight_names")
            .map_err(|e| self.invalid(format!("layer `{layer}`: {e}")))?
            .unwrap_or_default();
        let mut weights = Vec::with_capacity(names.len());
        for stored_name in names {
            let dataset_path = format!("{group_path}/{stored_name}");
            let info = self
                .file
                .dataset_in(group, &stored_name, &dataset_path)
                .map_err(|e| {
                    let e = e.within(format_args!("weight `{stored_name}` of layer `{layer}`"));
                    Error::new(self.path, e.kind(ErrorKind::InvalidKeras))
                })?;
            let dtype = self.dtype_of(&info, &stored_name)?;
            let trimmed = stored_name.strip_suffix(":0").unwrap_or(&stored_name);
            let parts = name_parts(trimmed, layer);
            if parts.is_empty() {
                return Err(self.invalid(format!("layer `{layer}` has an empty weight name")));
            }
            weights.push(RawWeight {
                dataset: accounting::normalize(&dataset_path),
                stored_name,
                parts,
                dtype,
                shape: info.shape,
                location: info.location.into(),
            });
        }
        Ok(weights)
    }

    fn dtype_of(&mut self, info: &h5::DatasetInfo, weight: &str) -> Result<Dtype> {
        weight_dtype(self.path, info, weight, &mut self.notes)
    }
}

/// The components of a stored weight name, with the layer's own name as one
/// component where it holds `/` (tf-keras's MobileNetV3 names layers
/// `Conv/BatchNorm`, whose weights are `Conv/BatchNorm/gamma:0`), at the
/// start or below one enclosing scope.
fn name_parts(stored: &str, layer: &str) -> Vec<String> {
    let mut parts: Vec<String> = stored
        .split('/')
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let n = layer.split('/').filter(|p| !p.is_empty()).count();
    if n > 1 {
        for start in [0, 1] {
            if parts.len() > start + n && parts[start..start + n].join("/") == layer {
                parts.splice(start..start + n, [layer.to_string()]);
                break;
            }
        }
    }
    parts
}

/// Joins the leading components of a weight's name into one where they
/// spell the name of a layer that holds `/` (tf-keras's MobileNetV3 has
/// `Conv/BatchNorm` beside `Conv`): the longest run that `names_layer`
/// knows. The last component, the label, is never joined.
pub(crate) fn join_layer_name(parts: &mut Vec<String>, names_layer: impl Fn(&str) -> bool) {
    let named = (2..parts.len())
        .rev()
        .find(|&k| names_layer(&parts[..k].join("/")));
    if let Some(k) = named {
        let joined = parts[..k].join("/");
        parts.splice(..k, [joined]);
    }
}

/// Turns the weights of one layer group into one layer, or, for a nested
/// model, into one layer per inner layer.
pub(crate) fn assemble(
    name: &str,
    config: Option<&LayerConfig>,
    raw: Vec<RawWeight>,
    notes: &mut Vec<String>,
) -> Result<Vec<Layer>> {
    // A subclassed tf-keras model builds its layers inside its own name
    // scope: the group `block_0` holds `my_model/block_0/sep/kernel:0`. The
    // component before the group's own name is that enclosing scope.
    let raw: Vec<RawWeight> = raw
        .into_iter()
        .map(|mut w| {
            if w.parts.len() > 2 && w.parts[0] != name && w.parts[1] == name {
                w.parts.remove(0);
            }
            w
        })
        .collect();
    let is_model = match config {
        Some(c) => c.is_model(),
        // Without a config, the weight names tell: a plain layer's
        // weights all start with its own scope.
        None => raw.iter().any(|w| w.parts.len() > 1 && w.parts[0] != name),
    };
    if !is_model {
        let class = config.map(|c| c.class.clone());
        let known = class
            .as_deref()
            .is_some_and(|c| labels::table(c).is_some() || WRAPPERS.contains(&c));
        let raw = match known {
            true => raw,
            false => match split_sub_layers(name, raw) {
                Ok(mut layers) => {
                    // The group's own weights keep the group's class; a
                    // container with none has no labels to note.
                    if let Some(own) = layers.iter_mut().find(|l| l.path.len() == 1) {
                        if let Some(class) = &class {
                            note_unknown_class(notes, name, class);
                        }
                        own.class = class;
                        own.config = config.map(|c| c.config.clone());
                    }
                    return Ok(layers);
                }
                Err(raw) => raw,
            },
        };
        if let Some(class) = &class {
            note_unknown_class(notes, name, class);
        }
        return Ok(vec![Layer {
            path: vec![name.to_string()],
            weights: canonical(label_layer(raw), class.as_deref()),
            class,
            config: config.map(|c| c.config.clone()),
        }]);
    }

    // Group by inner layer (the first name component), in first-seen order.
    let index = config.map(ConfigIndex::with_descendants);
    let mut order: Vec<String> = Vec::new();
    let mut by_inner: HashMap<String, Vec<RawWeight>> = HashMap::new();
    for mut w in raw {
        // Keras 3 prefixes inner weights with the sub-model's own name.
        if w.parts.len() > 2 && w.parts[0] == name {
            w.parts.remove(0);
        }
        if let Some(index) = &index {
            join_layer_name(&mut w.parts, |name| index.find(name).is_some());
        }
        let inner = w.parts[0].clone();
        if !by_inner.contains_key(&inner) {
            order.push(inner.clone());
        }
        by_inner.entry(inner).or_default().push(w);
    }
    let mut layers = Vec::new();
    for inner in order {
        let weights = by_inner.remove(&inner).unwrap_or_default();
        let found = index.as_ref().and_then(|i| i.find(&inner));
        let mut path = vec![name.to_string()];
        match &found {
            Some((chain, _)) => path.extend(chain.iter().map(|c| c.name.clone())),
            None => path.push(inner.clone()),
        }
        let inner_config = found.as_ref().and_then(|(c, _)| c.last());
        let class = inner_config.map(|c| c.class.clone());
        // With no config to name the inner layers, a first component can
        // be the start of several layers' names (`expanded_conv/depthwise`
        // and `expanded_conv/depthwise/BatchNorm`): split it as a
        // top-level group of unknown class would be.
        let weights = if found.is_none() {
            match split_sub_layers(&inner, weights) {
                Ok(split) => {
                    for layer in split {
                        let mut path = vec![name.to_string()];
                        path.extend(layer.path);
                        let weights = layer.weights;
                        layers.push((
                            config.map(|_| vec![usize::MAX]),
                            Layer {
                                path,
                                weights,
                                class: None,
                                config: None,
                            },
                        ));
                    }
                    continue;
                }
                Err(weights) => weights,
            }
        } else {
            weights
        };
        if let Some(class) = &class {
            note_unknown_class(notes, &path.join("/"), class);
        }
        // Position in config order, as a key that sorts depth-first.
        let rank = config.map(|_| match &found {
            Some((_, positions)) => positions.to_vec(),
            None => vec![usize::MAX],
        });
        layers.push((
            rank,
            Layer {
                path,
                weights: canonical(label_layer(weights), class.as_deref()),
                class,
                config: inner_config.map(|c| c.config.clone()),
            },
        ));
    }
    // The weight list puts every trainable weight before every
    // non-trainable one; the config has the real layer order.
    layers.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(layers.into_iter().map(|(_, l)| l).collect())
}

fn note_unknown_class(notes: &mut Vec<String>, path: &str, class: &str) {
    if labels::table(class).is_none() && !WRAPPERS.contains(&class) {
        notes.push(format!(
            "layer `{path}` has class {class}, which has no label table; labels are taken from the stored weight names"
        ));
    }
}

/// The sub-layers of a layer whose stored names carry a path below it
/// (`efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel:0` in the
/// group `efficientnet-b0` of a subclassed model): one layer per path, so
/// every tensor is named by its whole variable name and the weights of one
/// sub-layer share one prefix. Keras's own scaffolding in a path is not a
/// sub-layer (see [`is_scaffolding`]); neither is a standard layer whose
/// weights keep sub-objects (Bidirectional halves, MultiHeadAttention's
/// projections): those come back unsplit as `Err`.
fn split_sub_layers(
    name: &str,
    raw: Vec<RawWeight>,
) -> std::result::Result<Vec<Layer>, Vec<RawWeight>> {
    let below = |w: &RawWeight| -> Vec<String> {
        middle(&w.parts)
            .iter()
            .filter(|c| !is_scaffolding(name, c))
            .cloned()
            .collect()
    };
    if raw.iter().all(|w| below(w).is_empty()) {
        return Err(raw);
    }
    let labelled: Vec<(String, Vec<usize>)> = raw
        .iter()
        .map(|w| {
            let mut label = below(w);
            label.push(last(&w.parts).to_string());
            (label.join("/"), w.shape.clone())
        })
        .collect();
    if !labels::class_candidates(&labelled).is_empty() {
        return Err(raw);
    }
    let mut layers: Vec<Layer> = Vec::new();
    let mut by_path: HashMap<Vec<String>, usize> = HashMap::new();
    for w in raw {
        let mut path = vec![name.to_string()];
        path.extend(below(&w));
        let weight = to_weight(w, Vec::new());
        match by_path.get(&path) {
            Some(&i) => layers[i].weights.push(weight),
            None => {
                by_path.insert(path.clone(), layers.len());
                layers.push(Layer {
                    path,
                    class: None,
                    config: None,
                    weights: vec![weight],
                });
            }
        }
    }
    Ok(layers)
}

/// Whether a component of a stored weight's path is Keras's scaffolding
/// rather than a sub-layer: the variable scope Keras 2.0 opened with the
/// layer's own name made unique (`conv2d_1_1` in `conv2d_1`), or the cell
/// of a recurrent layer (`lstm_cell`, `gru_cell_2`).
fn is_scaffolding(layer: &str, component: &str) -> bool {
    let digits = |n: &str| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit());
    let numbered_layer = component == layer
        || component
            .strip_prefix(layer)
            .and_then(|rest| rest.strip_prefix('_'))
            .is_some_and(digits);
    let cell = component.rsplit_once("_cell").is_some_and(|(base, rest)| {
        !base.is_empty() && (rest.is_empty() || rest.strip_prefix('_').is_some_and(digits))
    });
    numbered_layer || cell
}

/// Labels the weights of one layer from their stored names: the label is the
/// last name component. The scope in between (`conv2d_1_1` in Keras 2.0's
/// `conv2d_1/conv2d_1_1/kernel:0`, `lstm_cell`) is dropped, except where the
/// layer has two weights with the same label: then the part of the scope
/// that tells them apart (`forward_lstm`, `backward_lstm`) stays.
fn label_layer(raw: Vec<RawWeight>) -> Vec<Weight> {
    let mut by_label: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, w) in raw.iter().enumerate() {
        by_label.entry(last(&w.parts)).or_default().push(i);
    }
    let mut sub_paths: Vec<Vec<String>> = vec![Vec::new(); raw.len()];
    for members in by_label.values() {
        if members.len() < 2 {
            continue;
        }
        let middles: Vec<&[String]> = members.iter().map(|&i| middle(&raw[i].parts)).collect();
        let prefix = common_prefix(&middles);
        let suffix = common_suffix(&middles, prefix);
        for (&i, m) in members.iter().zip(&middles) {
            sub_paths[i] = m[prefix..m.len() - suffix].to_vec();
        }
    }
    raw.into_iter()
        .zip(sub_paths)
        .map(|(w, sub_path)| to_weight(w, sub_path))
        .collect()
}

/// Renames labels that this Keras version spells its own way.
fn canonical(mut weights: Vec<Weight>, class: Option<&str>) -> Vec<Weight> {
    if let Some(class) = class {
        for w in &mut weights {
            labels::canonicalize_label(class, &mut w.label);
        }
    }
    weights
}

fn to_weight(w: RawWeight, sub_path: Vec<String>) -> Weight {
    Weight {
        label: labels::interned(last(&w.parts)),
        sub_path,
        stored: StoredName::of(w.stored_name, &w.dataset),
        dtype: w.dtype,
        shape: w.shape,
        file: 0,
        dataset: w.dataset,
        location: w.location,
    }
}

fn last(parts: &[String]) -> &str {
    parts.last().map(String::as_str).unwrap_or_default()
}

/// The components between the layer's scope and the label.
fn middle(parts: &[String]) -> &[String] {
    if parts.len() > 2 {
        &parts[1..parts.len() - 1]
    } else {
        &[]
    }
}

fn common_prefix(lists: &[&[String]]) -> usize {
    let shortest = lists.iter().map(|l| l.len()).min().unwrap_or(0);
    (0..shortest)
        .take_while(|&i| lists.iter().all(|l| l[i] == lists[0][i]))
        .count()
}

fn common_suffix(lists: &[&[String]], prefix: usize) -> usize {
    let room = lists.iter().map(|l| l.len() - prefix).min().unwrap_or(0);
    (0..room)
        .take_while(|&i| {
            let at = |l: &[String]| l[l.len() - 1 - i].clone();
            lists.iter().all(|l| at(l) == at(lists[0]))
        })
        .count()
}

/// A name-list attribute, joined from its chunks (`layer_names0`,
/// `layer_names1`, ...) where Keras split it to fit HDF5's header limit.
/// The attributes are read once for every chunk: a crafted file can hold
/// thousands of (empty) chunks.
fn read_list(
    attrs: &h5::Attributes,
    name: &str,
) -> std::result::Result<Option<Vec<String>>, h5::H5Error> {
    if let Some(list) = attrs.string_list(name)? {
        return Ok(Some(list));
    }
    let mut joined: Option<Vec<String>> = None;
    for chunk in 0.. {
        match attrs.string_list(&format!("{name}{chunk}"))? {
            Some(list) => joined.get_or_insert_with(Vec::new).extend(list),
            None => break,
        }
    }
    Ok(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::h5::Element;

    fn raw(name: &str) -> RawWeight {
        RawWeight {
            stored_name: name.into(),
            dataset: format!("/{name}"),
            parts: name
                .trim_end_matches(":0")
                .split('/')
                .map(String::from)
                .collect(),
            dtype: Dtype::F32,
            shape: vec![1],
            location: h5::Location::Empty.into(),
        }
    }

    fn names(weights: &[Weight]) -> Vec<String> {
        weights
            .iter()
            .map(|w| {
                let mut p = w.sub_path.clone();
                p.push(w.label.to_string());
                p.join("/")
            })
            .collect()
    }

    #[test]
    fn element_types_without_a_safetensors_twin_are_refused_by_name() {
        let path = Path::new("model.h5");
        let file = h5::File::open(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5"),
        )
        .unwrap();
        let mut reader = Reader {
            path,
            file: &file,
            notes: Vec::new(),
            skipped_groups: Vec::new(),
        };
        let info = |element| h5::DatasetInfo {
            shape: vec![2],
            element,
            location: h5::Location::Empty,
            dtype_attr: None,
        };
        let err = reader
            .dtype_of(&info(Element::Other("string".into())), "dense/names:0")
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "model.h5: weight `dense/names:0` has element type string, which safetensors cannot hold"
        );
        let err = reader
            .dtype_of(&info(Element::Float { size: 16 }), "dense/kernel:0")
            .unwrap_err();
        assert!(err.to_string().contains("128-bit float"), "{err}");
        let bf16 = reader
            .dtype_of(
                &info(Element::Opaque {
                    size: 2,
                    tag: String::new(),
                }),
                "w:0",
            )
            .unwrap();
        assert_eq!(bf16, Dtype::BF16);
        assert_eq!(reader.notes.len(), 1, "unmarked bfloat16 is noted");
    }

    #[test]
    fn scaffolding_is_told_from_sub_layers() {
        assert!(is_scaffolding("conv2d_1", "conv2d_1_1"));
        assert!(is_scaffolding("gru", "gru_cell"));
        assert!(is_scaffolding("bidirectional", "lstm_cell_3"));
        assert!(!is_scaffolding("efficientnet-b0", "blocks_0"));
        assert!(!is_scaffolding("conv2d_1", "conv2d_10x"));
        assert!(!is_scaffolding("net", "_cell"));
        assert!(!is_scaffolding("fpn_cells", "cell_0"));
        // Only digits make a numbered copy: a sub-layer named after its
        // parent is a sub-layer.
        assert!(!is_scaffolding("stem", "stem_bn"));
        assert!(!is_scaffolding("encoder", "lstm_cell_fw"));
    }

    #[test]
    fn sub_networks_held_as_one_layer_keep_their_whole_path() {
        let layers = split_sub_layers(
            "efficientnet-b0",
            vec![
                raw("efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel:0"),
                raw("efficientnet-b0/blocks_0/conv2d/kernel:0"),
                raw("efficientnet-b0/blocks_0/tpu_batch_normalization/gamma:0"),
                raw("efficientnet-b0/blocks_0/conv2d/bias:0"),
            ],
        )
        .unwrap_or_else(|_| panic!("split"));
        let paths: Vec<String> = layers.iter().map(Layer::path_string).collect();
        assert_eq!(
            paths,
            [
                "efficientnet-b0/blocks_0/depthwise_conv2d",
                "efficientnet-b0/blocks_0/conv2d",
                "efficientnet-b0/blocks_0/tpu_batch_normalization"
            ]
        );
        assert_eq!(names(&layers[1].weights), ["kernel", "bias"]);
        // A Bidirectional's halves are one layer, its cells scaffolding.
        let bidirectional = split_sub_layers(
            "bidirectional",
            ["forward_lstm", "backward_lstm"]
                .iter()
                .flat_map(|d| {
                    [
                        ("kernel", [4, 20]),
                        ("recurrent_kernel", [5, 20]),
                        ("bias", [1, 20]),
                    ]
                    .map(|(l, shape)| RawWeight {
                        shape: shape[usize::from(l == "bias")..].to_vec(),
                        ..raw(&format!("bidirectional/{d}/lstm_cell/{l}:0"))
                    })
                })
                .collect(),
        );
        assert!(bidirectional.is_err());
        // Keras 2.0's scope repeating the layer name is no sub-layer.
        assert!(split_sub_layers("conv2d_1", vec![raw("conv2d_1/conv2d_1_1/kernel:0")]).is_err());
    }

    #[test]
    fn a_custom_layer_keeps_its_class_on_its_own_weights_not_its_sub_layers() {
        // The names and class Keras 3.15 records for a registered custom
        // layer `block` with its own `scale` and a Dense `proj` it builds.
        let config = LayerConfig::parse(
            r#"{"class_name": "Custom>Block", "config": {"name": "block", "trainable": true}}"#,
        )
        .unwrap();
        let mut notes = Vec::new();
        let layers = assemble(
            "block",
            Some(&config),
            vec![
                raw("block/scale"),
                raw("block/proj/kernel"),
                raw("block/proj/bias"),
            ],
            &mut notes,
        )
        .unwrap();
        let got: Vec<(String, Option<&str>, bool, Vec<String>)> = layers
            .iter()
            .map(|l| {
                (
                    l.path_string(),
                    l.class.as_deref(),
                    l.config.is_some(),
                    names(&l.weights),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    "block".into(),
                    Some("Custom>Block"),
                    true,
                    vec!["scale".into()]
                ),
                (
                    "block/proj".into(),
                    None,
                    false,
                    vec!["kernel".into(), "bias".into()]
                ),
            ]
        );
    }

    #[test]
    fn a_scope_shared_by_clashing_labels_is_dropped_like_the_cell() {
        // Keras 3.15's names for TimeDistributed(Bidirectional(LSTM)) `td`
        // wrapping `bi`: `bi` and `lstm_cell` are common to both halves,
        // only the direction tells the two kernels apart.
        let w = label_layer(
            ["forward_lstm", "backward_lstm"]
                .iter()
                .flat_map(|d| {
                    ["kernel", "recurrent_kernel", "bias"]
                        .map(|l| raw(&format!("td/bi/{d}/lstm_cell/{l}")))
                })
                .collect(),
        );
        assert_eq!(
            names(&w),
            [
                "forward_lstm/kernel",
                "forward_lstm/recurrent_kernel",
                "forward_lstm/bias",
                "backward_lstm/kernel",
                "backward_lstm/recurrent_kernel",
                "backward_lstm/bias"
            ]
        );
    }

    #[test]
    fn variable_scope_is_dropped() {
        let w = label_layer(vec![
            raw("conv2d_1/conv2d_1_1/kernel:0"),
            raw("conv2d_1/conv2d_1_1/bias:0"),
        ]);
        assert_eq!(names(&w), ["kernel", "bias"]);
    }

    #[test]
    fn clashing_labels_keep_the_sub_object() {
        let w = label_layer(vec![
            raw("bidirectional/forward_lstm/lstm_cell/kernel:0"),
            raw("bidirectional/forward_lstm/lstm_cell/bias:0"),
            raw("bidirectional/backward_lstm/lstm_cell/kernel:0"),
            raw("bidirectional/backward_lstm/lstm_cell/bias:0"),
        ]);
        assert_eq!(
            names(&w),
            [
                "forward_lstm/kernel",
                "forward_lstm/bias",
                "backward_lstm/kernel",
                "backward_lstm/bias"
            ]
        );
    }
}
