//! TensorFlow checkpoints, read from a tensor bundle ([`crate::tf_bundle`]):
//!
//! - **object-based** (TF2: tf-keras `save_weights('x')` in TF format,
//!   `tf.train.Checkpoint`, a SavedModel's `variables/`): keys are paths in
//!   the object graph (`layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE`);
//!   the `_CHECKPOINTABLE_OBJECT_GRAPH` entry gives each its variable name
//!   (`full_name`, `dense/kernel`), which names the tensor;
//! - **name-based** (TF1 `Saver`, Google AutoML EfficientDet releases): keys
//!   are the variable names.
//!
//! Either way a weight is named by its variable name and the names go
//! through the same rules as a Keras HDF5 file's weight names
//! ([`legacy_h5::assemble`]), so one model saved both ways gets the same
//! tensor names (except a sub-model's own name, which only a config or a
//! SavedModel's Keras metadata records: `keras_metadata.pb`, or for TF
//! 2.0-2.4 `saved_model.pb` itself, see [`saved_model_pb`]).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;

use crate::accounting::{METRICS_SKIPPED, OPTIMIZER_SKIPPED};
use crate::error::{Error, ErrorKind, Result};
use crate::files;
use crate::keras::config::{LayerConfig, MAX_CONFIG_BYTES};
use crate::keras::legacy_h5::{self, RawWeight};
use crate::keras::saved_model_pb;
use crate::keras::ReadOptions;
use crate::labels;
use crate::model::{Format, Layer, Location, Model, SkippedGroup, Store, StoredName, Weight};
use crate::tf_bundle::{self, proto, Bundle, BundleError, Data, TensorType};

/// The key of the object graph in an object-based checkpoint.
pub const OBJECT_GRAPH_KEY: &str = "_CHECKPOINTABLE_OBJECT_GRAPH";
const VARIABLE_VALUE: &str = "VARIABLE_VALUE";
/// The suffix of a TF1 moving-average shadow variable.
const EMA_SUFFIX: &str = "/ExponentialMovingAverage";
/// Slot names TF1 optimizers give their per-variable state
/// (`<variable>/<slot>`, `<variable>/<slot>_1`).
const TF1_SLOTS: &[&str] = &[
    "Adam",
    "AdamW",
    "Momentum",
    "RMSProp",
    "Adagrad",
    "AdagradDA",
    "Adadelta",
    "Ftrl",
    "LARSOptimizer",
    "LAMB",
    "Nadam",
    "ProximalAdagrad",
];
/// TF1 optimizer variables that belong to no model variable.
const TF1_OPTIMIZER_VARIABLES: &[&str] = &["beta1_power", "beta2_power"];

pub const GRAPH_SKIPPED: &str = "the checkpoint's object graph (read for the names, not a weight)";
pub const SAVE_COUNTER_SKIPPED: &str =
    "tf.train.Checkpoint's save counter (bookkeeping, not a weight)";
pub const GLOBAL_STEP_SKIPPED: &str = "the training step counter (global_step, not a weight)";
pub const EMA_SKIPPED: &str =
    "an ExponentialMovingAverage shadow (pass --use-ema to write it under its variable's name)";
pub const DUPLICATE_SKIPPED: &str =
    "the same variable saved again under another path (same name, shape, dtype and CRC-32C \
     as the one written; Keras 3's `model.export()` keeps each variable twice)";
pub const EMA_REPLACED: &str =
    "replaced by its ExponentialMovingAverage shadow, written under this name (--use-ema)";

/// What a path given by the user names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TfInput {
    /// A checkpoint: the prefix its files share (`ckpt/ckpt-1`).
    Checkpoint(PathBuf),
    /// A SavedModel folder (its checkpoint is `variables/variables`).
    SavedModel(PathBuf),
}

impl TfInput {
    pub fn prefix(&self) -> PathBuf {
        match self {
            TfInput::Checkpoint(prefix) => prefix.clone(),
            TfInput::SavedModel(dir) => dir.join("variables").join("variables"),
        }
    }
}

/// Whether `path` is a folder that is one TF model: a SavedModel, or a
/// folder with a `checkpoint` file.
pub fn is_tf_folder(path: &Path) -> bool {
    path.is_dir() && (is_saved_model(path) || path.join("checkpoint").is_file())
}

fn is_saved_model(dir: &Path) -> bool {
    dir.join("saved_model.pb").is_file() || dir.join("keras_metadata.pb").is_file()
}

/// Recognises the ways TF users name a checkpoint: the prefix, the
/// `.index` file (by its content), a data shard, the folder holding a
/// `checkpoint` file, or a SavedModel folder. `None`: not a TF input.
pub fn resolve(path: &Path) -> Option<Result<TfInput>> {
    if path.is_dir() {
        if is_saved_model(path) {
            let index = tf_bundle::index_path(&path.join("variables").join("variables"));
            if !index.is_file() {
                return Some(Err(Error::new(
                    index,
                    ErrorKind::CorruptCheckpoint(
                        "a SavedModel folder without its variables (no variables/variables.index)"
                            .into(),
                    ),
                )));
            }
            return Some(Ok(TfInput::SavedModel(path.to_path_buf())));
        }
        let state = path.join("checkpoint");
        if state.is_file() {
            return Some(latest_checkpoint(path, &state).map(TfInput::Checkpoint));
        }
        return None;
    }
    let name = path.file_name()?.to_string_lossy().into_owned();
    if let Some(stem) = name.strip_suffix(".index") {
        if tf_bundle::looks_like_index(path) {
            return Some(Ok(TfInput::Checkpoint(path.with_file_name(stem))));
        }
        return None;
    }
    if let Some((stem, shard)) = name.rsplit_once(".data-") {
        let numbered = shard.len() == 14
            && shard.as_bytes()[5..9] == *b"-of-"
            && shard
                .bytes()
                .enumerate()
                .all(|(i, b)| (5..9).contains(&i) || b.is_ascii_digit());
        let prefix = path.with_file_name(stem);
        if numbered && tf_bundle::index_path(&prefix).is_file() {
            return Some(Ok(TfInput::Checkpoint(prefix)));
        }
        return None;
    }
    if !path.exists() && tf_bundle::index_path(path).is_file() {
        return Some(Ok(TfInput::Checkpoint(path.to_path_buf())));
    }
    None
}

/// The checkpoint a `checkpoint` state file names as the latest
/// (`model_checkpoint_path: "ckpt-2"`, relative to its folder).
fn latest_checkpoint(dir: &Path, state: &Path) -> Result<PathBuf> {
    let text = std::fs::read(state).map_err(|e| Error::new(state, e.into()))?;
    if text.len() > 1 << 20 {
        return Err(Error::new(
            state,
            ErrorKind::InvalidKeras("a checkpoint state file over 1 MiB".into()),
        ));
    }
    let text = String::from_utf8_lossy(&text);
    let named = text.lines().find_map(|line| {
        let rest = line.trim().strip_prefix("model_checkpoint_path:")?;
        let rest = rest.trim();
        let quoted = rest.strip_prefix('"')?.strip_suffix('"')?;
        Some(quoted.replace("\\\"", "\"").replace("\\\\", "\\"))
    });
    let named = named.ok_or_else(|| {
        Error::new(
            state,
            ErrorKind::InvalidKeras("names no checkpoint (no `model_checkpoint_path`)".into()),
        )
    })?;
    // The prefix's last part as TF takes it: a prefix that ends in `/`
    // (`saver.save(sess, "run/")`) names `run/.index`, whose part is empty.
    let base = named
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_string();
    let named = PathBuf::from(named);
    let mut prefix = if named.is_absolute() {
        named
    } else {
        dir.join(named)
    };
    // TF1 savers wrote absolute paths: a folder that was moved (or shipped
    // in a package) still holds the checkpoint beside its state file.
    if !tf_bundle::index_path(&prefix).is_file() {
        let beside = dir.join(&base);
        if tf_bundle::index_path(&beside).is_file() {
            prefix = beside;
        }
    }
    if !tf_bundle::index_path(&prefix).is_file() {
        return Err(Error::new(
            state,
            ErrorKind::InvalidKeras(format!(
                "names the checkpoint `{}`, whose .index file is not there",
                prefix.display()
            )),
        ));
    }
    Ok(prefix)
}

/// Whether two entries hold the same stored tensor: dtype, shape, and the
/// size and checksum of every stored run. (Their bytes are not compared:
/// that would read every such tensor twice, even for `inspect`.)
fn same_stored_data(bundle: &Bundle, a: usize, b: usize) -> bool {
    let (a, b) = (&bundle.entries[a], &bundle.entries[b]);
    let runs = |data: &Data| -> Vec<(u64, u32)> {
        match data {
            Data::Whole(c) => vec![(c.size, c.crc)],
            Data::Sliced(pieces) => pieces.iter().map(|p| (p.chunk.size, p.chunk.crc)).collect(),
        }
    };
    a.dtype == b.dtype && a.shape == b.shape && runs(&a.data) == runs(&b.data)
}

fn bundle_error(e: BundleError) -> Error {
    Error::new(e.file, ErrorKind::CorruptCheckpoint(e.message))
}

/// Reads a TF checkpoint or SavedModel into a model.
pub fn read(
    path: &Path,
    input: &TfInput,
    options: &ReadOptions,
    config: Option<LayerConfig>,
) -> Result<Model> {
    let prefix = input.prefix();
    let bundle = Bundle::open(&prefix).map_err(bundle_error)?;
    let index = bundle.index_path();
    let mut reader = Reader {
        bundle: &bundle,
        index: &index,
        options,
        skipped_groups: Vec::new(),
        notes: Vec::new(),
        optimizer: Vec::new(),
    };
    let (format, raw) = match bundle.find(OBJECT_GRAPH_KEY) {
        Some(graph) => {
            reader.skip(OBJECT_GRAPH_KEY, GRAPH_SKIPPED);
            let raw = reader.object_based(graph)?;
            let format = match input {
                TfInput::SavedModel(_) => Format::KerasSavedModel,
                TfInput::Checkpoint(_) => Format::TfCheckpoint,
            };
            (format, raw)
        }
        None => (Format::Tf1Checkpoint, reader.name_based()?),
    };
    let saved = match input {
        TfInput::SavedModel(dir) => saved_model_metadata(dir, &mut reader.notes)?,
        TfInput::Checkpoint(_) => SavedModelMetadata::default(),
    };
    // A subclassed model's config lists no layers: its layers' classes come
    // from their own entries in the Keras metadata (only when no --config).
    let sub_layers = if config.is_none() {
        saved.sub_layers
    } else {
        Vec::new()
    };
    let mut config = config.or(saved.config);
    if config.is_none() && format != Format::Tf1Checkpoint {
        reader.notes.push(
            "a TF checkpoint records variable names, not layer classes or sub-model names: \
             tensors are named by variable name (pass --config with the model's JSON for \
             sub-model prefixes and classes)"
                .into(),
        );
    }
    let mut raw = raw;
    if !sub_layers.is_empty() {
        strip_model_scope(&mut raw, saved.model_name.as_deref(), &sub_layers);
        if let Some(root) = config.take() {
            config = Some(subclassed_config(root, &sub_layers, &raw));
        }
    }
    let mut layers = name_layers(raw, config.as_ref(), &mut reader.notes)?;
    if !sub_layers.is_empty() {
        give_classes(&mut layers, &sub_layers, saved.source, &mut reader.notes);
    }
    let Reader {
        skipped_groups,
        notes,
        optimizer,
        ..
    } = reader;
    let _ = path;
    Ok(Model {
        format,
        keras_version: saved.keras_version,
        backend: Some(saved.backend.unwrap_or_else(|| "tensorflow".into())),
        date_saved: None,
        layers,
        optimizer,
        notes,
        skipped_groups,
        skipped: Vec::new(),
        stores: vec![Store::Bundle(Arc::new(bundle))],
    })
}

struct Reader<'a> {
    bundle: &'a Bundle,
    index: &'a Path,
    options: &'a ReadOptions,
    skipped_groups: Vec<SkippedGroup>,
    notes: Vec<String>,
    optimizer: Vec<Weight>,
}

impl Reader<'_> {
    fn skip(&mut self, key: &str, reason: &str) {
        self.skipped_groups.push(SkippedGroup {
            file: 0,
            group: key.to_string(),
            reason: reason.to_string(),
        });
    }

    fn invalid(&self, message: String) -> Error {
        Error::new(self.index, ErrorKind::InvalidKeras(message))
    }

    /// A weight from entry `i`, named `name`; `None` (and the entry
    /// skipped) for strings and handles, which are never weights.
    fn raw(&mut self, i: usize, name: &str) -> Result<Option<RawWeight>> {
        let entry = &self.bundle.entries[i];
        let dtype = match entry.dtype {
            TensorType::Numeric(d) => d,
            TensorType::String | TensorType::Handle => {
                let reason = format!("a {} tensor (not a weight)", entry.dtype.name());
                let key = entry.key.clone();
                self.skip(&key, &reason);
                return Ok(None);
            }
            TensorType::Other(_) => {
                return Err(Error::new(
                    self.index,
                    ErrorKind::UnsupportedDtype {
                        weight: name.to_string(),
                        detail: entry.dtype.name(),
                    },
                ))
            }
        };
        let parts: Vec<String> = name
            .split('/')
            .filter(|p| !p.is_empty())
            .map(str::to_string)
            .collect();
        if parts.is_empty() {
            return Err(self.invalid(format!("entry `{}` has an empty variable name", entry.key)));
        }
        Ok(Some(RawWeight {
            stored_name: name.to_string(),
            dataset: entry.key.clone(),
            parts,
            dtype,
            shape: entry.shape.clone(),
            location: Location::Bundle(i),
        }))
    }

    /// Optimizer state: kept under `optimizer/<name>` when asked for, else
    /// skipped with the reason.
    fn optimizer_state(&mut self, i: usize, name: &str) -> Result<()> {
        if !self.options.include_optimizer {
            let key = self.bundle.entries[i].key.clone();
            self.skip(&key, OPTIMIZER_SKIPPED);
            return Ok(());
        }
        if let Some(w) = self.raw(i, name)? {
            let mut parts = w.parts.clone();
            let label = parts.pop().unwrap_or_default();
            self.optimizer.push(Weight {
                label: label.into(),
                sub_path: parts,
                stored: StoredName::of(w.stored_name, &w.dataset),
                dtype: w.dtype,
                shape: w.shape,
                file: 0,
                dataset: w.dataset,
                location: w.location,
            });
        }
        Ok(())
    }

    /// TF2: names from the object graph, in its depth-first order.
    fn object_based(&mut self, graph_entry: usize) -> Result<Vec<RawWeight>> {
        let bytes = self
            .bundle
            .read_scalar_string(graph_entry)
            .map_err(|e| Error::new(self.index, ErrorKind::CorruptCheckpoint(e.to_string())))?;
        let graph = proto::TrackableObjectGraph::decode(bytes.as_slice()).map_err(|e| {
            Error::new(
                self.index,
                ErrorKind::CorruptCheckpoint(format!("unreadable object graph ({e})")),
            )
        })?;
        let nodes = &graph.nodes;
        let node = |id: i32| usize::try_from(id).ok().filter(|&i| i < nodes.len());
        // Optimizer state: whatever hangs below an `optimizer` edge, and
        // the slot variables optimizers list.
        let mut optimizer_nodes: HashSet<usize> = HashSet::new();
        let mut stack: Vec<usize> = Vec::new();
        for n in nodes {
            for c in &n.children {
                if c.local_name == "optimizer" {
                    stack.extend(node(c.node_id));
                }
            }
            for s in &n.slot_variables {
                stack.extend(node(s.slot_variable_node_id));
            }
        }
        while let Some(i) = stack.pop() {
            if optimizer_nodes.insert(i) {
                stack.extend(nodes[i].children.iter().filter_map(|c| node(c.node_id)));
            }
        }
        // Depth-first from the root, children in their order: layers in
        // model order, each variable once (under its first path).
        let mut order: Vec<usize> = Vec::new();
        let mut seen = vec![false; nodes.len()];
        let mut stack: Vec<(usize, bool)> = if nodes.is_empty() {
            Vec::new()
        } else {
            vec![(0, false)]
        };
        let mut metrics_nodes: HashSet<usize> = HashSet::new();
        while let Some((i, in_metrics)) = stack.pop() {
            if seen[i] {
                continue;
            }
            seen[i] = true;
            order.push(i);
            if in_metrics {
                metrics_nodes.insert(i);
            }
            for c in nodes[i].children.iter().rev() {
                if let Some(child) = node(c.node_id) {
                    let metrics = in_metrics || c.local_name == "metrics";
                    stack.push((child, metrics));
                }
            }
        }
        // TF2 does not make variable names unique: two modules that each
        // make a `tf.Variable(name="w")` save two variables named `w`.
        // Those are named by their object path instead; copies of one
        // variable (same stored data) keep the name and are written once.
        let mut by_name: HashMap<&str, Vec<usize>> = HashMap::new();
        for n in nodes {
            for attribute in &n.attributes {
                if attribute.name == VARIABLE_VALUE && !attribute.full_name.is_empty() {
                    if let Some(entry) = self.bundle.find(&attribute.checkpoint_key) {
                        by_name.entry(&attribute.full_name).or_default().push(entry);
                    }
                }
            }
        }
        let clashing: HashSet<String> = by_name
            .into_iter()
            .filter(|(_, entries)| {
                entries
                    .iter()
                    .any(|&e| !same_stored_data(self.bundle, entries[0], e))
            })
            .map(|(name, _)| name.to_string())
            .collect();
        let mut renamed = 0usize;
        let mut raw = Vec::new();
        let mut named: HashSet<usize> = HashSet::new();
        // The entry written under each name, to tell a second copy of the
        // same variable from another variable of the same name.
        let mut written: HashMap<String, usize> = HashMap::new();
        for i in order.into_iter().chain(0..nodes.len()) {
            for attribute in &nodes[i].attributes {
                let Some(entry) = self.bundle.find(&attribute.checkpoint_key) else {
                    continue;
                };
                if !named.insert(entry) {
                    continue;
                }
                let key = attribute.checkpoint_key.as_str();
                let clash = clashing.contains(&attribute.full_name);
                renamed += usize::from(clash);
                let name = if attribute.full_name.is_empty() || clash {
                    key.strip_suffix("/.ATTRIBUTES/VARIABLE_VALUE")
                        .unwrap_or(key)
                        .to_string()
                } else {
                    attribute.full_name.clone()
                };
                if attribute.name != VARIABLE_VALUE {
                    // Saved object state that is no variable
                    // (`OBJECT_CONFIG_JSON`): left to the accounting.
                    if matches!(
                        self.bundle.entries[entry].dtype,
                        TensorType::String | TensorType::Handle
                    ) {
                        self.raw(entry, &name)?;
                    }
                    continue;
                }
                if optimizer_nodes.contains(&i) {
                    self.optimizer_state(entry, &name)?;
                } else if metrics_nodes.contains(&i) {
                    self.skip(key, METRICS_SKIPPED);
                } else if key == "save_counter/.ATTRIBUTES/VARIABLE_VALUE" {
                    self.skip(key, SAVE_COUNTER_SKIPPED);
                } else if written
                    .get(&name)
                    .is_some_and(|&first| same_stored_data(self.bundle, first, entry))
                {
                    self.skip(key, DUPLICATE_SKIPPED);
                } else if let Some(w) = self.raw(entry, &name)? {
                    written.entry(name).or_insert(entry);
                    raw.push(w);
                }
            }
        }
        if renamed > 0 {
            self.notes.push(format!(
                "{renamed} variables share their name with a different variable (TF does not make \
                 names unique): they are named by their object path in the checkpoint instead"
            ));
        }
        Ok(raw)
    }

    /// TF1: keys are variable names.
    fn name_based(&mut self) -> Result<Vec<RawWeight>> {
        let bundle = self.bundle;
        let has = |key: &str| bundle.find(key).is_some();
        let use_ema = self.options.use_ema;
        let mut raw = Vec::new();
        let mut shadows = 0usize;
        for (i, entry) in bundle.entries.iter().enumerate() {
            let key = entry.key.as_str();
            let last = key.rsplit('/').next().unwrap_or(key);
            if key == "global_step" || key.ends_with("/global_step") {
                self.skip(key, GLOBAL_STEP_SKIPPED);
            } else if let Some(variable) = key.strip_suffix(EMA_SUFFIX) {
                shadows += 1;
                if use_ema {
                    if let Some(w) = self.raw(i, variable)? {
                        raw.push(w);
                    }
                } else {
                    self.skip(key, EMA_SKIPPED);
                }
            } else if use_ema && has(&format!("{key}{EMA_SUFFIX}")) {
                self.skip(key, EMA_REPLACED);
            } else if TF1_OPTIMIZER_VARIABLES.contains(&last) || is_slot(key, &has) {
                self.optimizer_state(i, key)?;
            } else if let Some(w) = self.raw(i, key)? {
                raw.push(w);
            }
        }
        if use_ema && shadows == 0 {
            self.notes.push(
                "--use-ema: the checkpoint has no ExponentialMovingAverage shadows; the variables are written"
                    .into(),
            );
        }
        if use_ema && shadows > 0 {
            self.notes.push(format!(
                "--use-ema: {shadows} variables written with their ExponentialMovingAverage values"
            ));
        }
        Ok(raw)
    }
}

/// `<variable>/Adam`, `<variable>/Adam_1`, ... where `<variable>` is
/// another entry of the checkpoint.
fn is_slot(key: &str, has: &dyn Fn(&str) -> bool) -> bool {
    let Some((variable, slot)) = key.rsplit_once('/') else {
        return false;
    };
    let base = labels::without_counter(slot);
    TF1_SLOTS.contains(&base) && has(variable)
}

/// Groups weights by their first name component (or, with a config, by the
/// top-level layer that holds that layer) and names them as a Keras HDF5
/// file's weights are named.
fn name_layers(
    raw: Vec<RawWeight>,
    config: Option<&LayerConfig>,
    notes: &mut Vec<String>,
) -> Result<Vec<Layer>> {
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Vec<RawWeight>> = HashMap::new();
    // A variable whose name has one component (`tf.Variable(..., name='w')`)
    // belongs to no layer: it is written under its own name.
    let mut top_level = Vec::new();
    for mut w in raw {
        if w.parts.len() == 1 {
            top_level.push(Weight {
                label: labels::interned(&w.parts[0]),
                sub_path: Vec::new(),
                stored: StoredName::of(w.stored_name, &w.dataset),
                dtype: w.dtype,
                shape: w.shape,
                file: 0,
                dataset: w.dataset,
                location: w.location,
            });
            continue;
        }
        if let Some(config) = config {
            legacy_h5::join_layer_name(&mut w.parts, |name| config.find(name).is_some());
        }
        let first = &w.parts[0];
        let group = match config.and_then(|c| c.find(first)) {
            Some(chain) if chain.len() > 1 => chain[0].name.clone(),
            _ => first.clone(),
        };
        if !groups.contains_key(&group) {
            order.push(group.clone());
        }
        groups.entry(group).or_default().push(w);
    }
    if let Some(config) = config {
        // The config's layer order; groups it does not know keep theirs, last.
        order.sort_by_key(|g| config.position(g).unwrap_or(usize::MAX));
    }
    let mut layers = Vec::new();
    for group in order {
        let raw = groups.remove(&group).unwrap_or_default();
        let layer_config = config.and_then(|c| c.child(&group));
        layers.extend(legacy_h5::assemble(&group, layer_config, raw, notes)?);
    }
    if !top_level.is_empty() {
        layers.push(Layer {
            path: Vec::new(),
            class: None,
            config: None,
            weights: top_level,
        });
    }
    Ok(layers)
}

/// The layers a name-based (TF1) checkpoint holding these variables reads
/// as, for tests that plan from a model's variable list without its bytes.
#[cfg(test)]
pub(crate) fn tf1_layers(variables: &[(String, Vec<usize>)]) -> Vec<Layer> {
    // A bundle's keys are sorted, and the reader takes them in that order.
    let mut variables = variables.to_vec();
    variables.sort();
    let raw = variables
        .into_iter()
        .enumerate()
        .map(|(i, (name, shape))| RawWeight {
            parts: name.split('/').map(str::to_string).collect(),
            dataset: name.clone(),
            stored_name: name,
            dtype: crate::dtype::Dtype::F32,
            shape,
            location: Location::Bundle(i),
        })
        .collect();
    name_layers(raw, None, &mut Vec::new()).expect("variable names form layers")
}

/// The largest Keras metadata read (`keras_metadata.pb`, or the object
/// graph of a `saved_model.pb` written by TF 2.0-2.4): it holds the model
/// config and each layer's config again, so twice what a config may be,
/// and more.
const MAX_METADATA_BYTES: usize = 4 * MAX_CONFIG_BYTES;

/// What a tf-keras SavedModel's Keras metadata tells about the model.
#[derive(Default)]
struct SavedModelMetadata {
    config: Option<LayerConfig>,
    keras_version: Option<String>,
    backend: Option<String>,
    /// The root model's name (the scope its variables may carry).
    model_name: Option<String>,
    /// For a subclassed model (whose config lists no layers): every layer
    /// the metadata describes below the root.
    sub_layers: Vec<SubLayer>,
    /// The file the metadata came from, for notes.
    source: &'static str,
}

/// One layer of a subclassed model, from its own Keras metadata entry.
#[derive(Debug, Clone, PartialEq)]
struct SubLayer {
    /// The names of the layers that hold it, then its own (`block_0/sep`):
    /// the path its variables' names carry below the model's scope.
    path: Vec<String>,
    class: String,
    config: Option<serde_json::Value>,
}

/// The layers below the root in the Keras metadata. Each entry's
/// `node_path` is its attribute path from the root (`root.stages.0.1.sep`:
/// list items count too); a layer's name path takes the names of the
/// layers among its path's prefixes (`block_1`, then `sep`). Metrics are
/// not layers. The paths go into a tree of components, so the work is
/// linear in their total length, however deep a hostile file nests them.
fn sub_layers(nodes: &[proto::SavedObject]) -> Vec<SubLayer> {
    let text = |v: &serde_json::Value, key: &str| v.get(key)?.as_str().map(str::to_string);
    let mut described: Vec<(Vec<&str>, String, String, Option<serde_json::Value>)> = Vec::new();
    for n in nodes {
        let Some(rest) = n.node_path.strip_prefix("root.") else {
            continue;
        };
        if !n.identifier.starts_with("_tf_keras_") || n.identifier == "_tf_keras_metric" {
            continue;
        }
        let Ok(json) = serde_json::from_str::<serde_json::Value>(&n.metadata) else {
            continue;
        };
        let (Some(class), Some(name)) = (text(&json, "class_name"), text(&json, "name")) else {
            continue;
        };
        let config = json.get("config").cloned();
        described.push((rest.split('.').collect(), name, class, config));
    }
    // Tree node 0 is the root; `child[(parent, component)]` is a node;
    // `layer_at[node]`, the entry whose path ends there.
    let mut child: HashMap<(usize, &str), usize> = HashMap::new();
    let mut layer_at: Vec<Option<usize>> = vec![None];
    for (i, (components, ..)) in described.iter().enumerate() {
        let mut at = 0;
        for &c in components {
            let next = layer_at.len();
            at = *child.entry((at, c)).or_insert(next);
            if at == next {
                layer_at.push(None);
            }
        }
        layer_at[at] = Some(i);
    }
    let names: Vec<String> = described.iter().map(|d| d.1.clone()).collect();
    let mut layers = Vec::with_capacity(described.len());
    for (components, _, class, config) in described {
        let mut path = Vec::new();
        let mut at = 0;
        for c in components {
            at = child[&(at, c)];
            if let Some(i) = layer_at[at] {
                path.push(names[i].clone());
            }
        }
        layers.push(SubLayer {
            path,
            class,
            config,
        });
    }
    layers
}

/// A subclassed model builds its layers inside its own name scope, so
/// their variables are named `<model>/<layer>/...`; the HDF5 naming (and
/// the `.h5` of the same model) has no model prefix. Dropped where the
/// next component is one of the model's top-level layers.
fn strip_model_scope(raw: &mut [RawWeight], model: Option<&str>, layers: &[SubLayer]) {
    let Some(model) = model.filter(|m| !m.is_empty()) else {
        return;
    };
    let top: HashSet<&str> = layers
        .iter()
        .filter(|l| l.path.len() == 1)
        .map(|l| l.path[0].as_str())
        .collect();
    for w in raw {
        if w.parts.len() > 2 && w.parts[0] == model && top.contains(w.parts[1].as_str()) {
            w.parts.remove(0);
        }
    }
}

/// A subclassed model's config with its top-level layers as children,
/// each from its metadata entry (a functional sub-model's with its own
/// layers, so its layers are found under its name as in the `.h5`), in the
/// order their weights come in the checkpoint.
fn subclassed_config(root: LayerConfig, sub_layers: &[SubLayer], raw: &[RawWeight]) -> LayerConfig {
    let top: Vec<LayerConfig> = sub_layers
        .iter()
        .filter(|l| l.path.len() == 1)
        .filter_map(|l| {
            let json = serde_json::json!({"class_name": l.class, "config": l.config});
            let mut c = LayerConfig::parse(&json.to_string()).ok()?;
            c.name.clone_from(&l.path[0]);
            Some(c)
        })
        .collect();
    // Layer name -> the top-level layer holding it: itself, or a
    // functional sub-model's layer (a direct name wins).
    let mut holder: HashMap<&str, usize> = HashMap::new();
    for (i, c) in top.iter().enumerate() {
        holder.insert(c.name.as_str(), i);
    }
    for (i, c) in top.iter().enumerate() {
        let mut stack: Vec<&LayerConfig> = c.children.iter().collect();
        while let Some(inner) = stack.pop() {
            holder.entry(inner.name.as_str()).or_insert(i);
            stack.extend(inner.children.iter());
        }
    }
    let mut placed = vec![false; top.len()];
    let mut order: Vec<usize> = Vec::new();
    for w in raw {
        if let Some(&i) = holder.get(w.parts[0].as_str()) {
            if !std::mem::replace(&mut placed[i], true) {
                order.push(i);
            }
        }
    }
    order.extend((0..top.len()).filter(|&i| !placed[i]));
    let mut slots: Vec<Option<LayerConfig>> = top.into_iter().map(Some).collect();
    let children = order.into_iter().filter_map(|i| slots[i].take()).collect();
    LayerConfig { children, ..root }
}

/// Gives each layer that has no class the class and config of the
/// metadata entry with its path, and that class's labels.
fn give_classes(
    layers: &mut [Layer],
    sub_layers: &[SubLayer],
    source: &str,
    notes: &mut Vec<String>,
) {
    let by_path: HashMap<&[String], &SubLayer> =
        sub_layers.iter().map(|l| (l.path.as_slice(), l)).collect();
    let mut unmatched = 0usize;
    for layer in layers.iter_mut().filter(|l| l.class.is_none()) {
        let Some(found) = by_path.get(layer.path.as_slice()) else {
            unmatched += usize::from(!layer.path.is_empty());
            continue;
        };
        for w in &mut layer.weights {
            labels::canonicalize_label(&found.class, &mut w.label);
        }
        layer.class = Some(found.class.clone());
        layer.config = found.config.clone();
    }
    if unmatched > 0 {
        notes.push(format!(
            "{source}: {unmatched} layer(s) of this subclassed model are named by variable names that match no layer it describes; their classes are guessed"
        ));
    }
}

/// Where a SavedModel's Keras metadata was found and what it holds.
/// `keras_metadata.pb` (TF >= 2.5, which leaves `saved_model.pb`'s copy
/// empty) wins over `saved_model.pb` (TF 2.0-2.4 wrote it only there).
fn read_metadata(dir: &Path) -> Result<Option<(&'static str, proto::SavedMetadata)>> {
    let path = dir.join("keras_metadata.pb");
    if path.is_file() {
        return read_keras_metadata(&path).map(|m| Some(("keras_metadata.pb", m)));
    }
    let graph = dir.join("saved_model.pb");
    if graph.is_file() {
        let found = saved_model_pb::keras_metadata(&graph, MAX_METADATA_BYTES)?;
        if !found.nodes.is_empty() {
            return Ok(Some(("saved_model.pb", found)));
        }
    }
    Ok(None)
}

fn read_keras_metadata(path: &Path) -> Result<proto::SavedMetadata> {
    let file = files::open_regular(path)?;
    let size = file.metadata().map_or(0, |m| m.len());
    let mut bytes = Vec::new();
    if size <= MAX_METADATA_BYTES as u64 {
        file.take(MAX_METADATA_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| Error::new(path, e.into()))?;
    }
    if size > MAX_METADATA_BYTES as u64 || bytes.len() > MAX_METADATA_BYTES {
        return Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "keras_metadata.pb is over {}, more than a Keras model needs",
                crate::inspect::human_bytes(MAX_METADATA_BYTES as u64)
            )),
        ));
    }
    proto::SavedMetadata::decode(bytes.as_slice()).map_err(|e| {
        Error::new(
            path,
            ErrorKind::InvalidKeras(format!("unreadable keras_metadata.pb ({e})")),
        )
    })
}

/// The root object's Keras metadata (from [`read_metadata`]): the whole
/// model's `class_name` and `config` (as `model.to_json()` would give them;
/// a subclassed model's config lists no layers), `keras_version`, `backend`.
fn saved_model_metadata(dir: &Path, notes: &mut Vec<String>) -> Result<SavedModelMetadata> {
    let Some((source, metadata)) = read_metadata(dir)? else {
        notes.push(
            "the SavedModel has no keras_metadata.pb, nor Keras metadata in saved_model.pb (Keras 3's `export()` and plain TensorFlow write none): tensors are named by variable name"
                .into(),
        );
        return Ok(SavedModelMetadata::default());
    };
    let path = dir.join(source);
    let Some(root) = metadata.nodes.iter().find(|n| n.node_path == "root") else {
        notes.push(format!(
            "{source} describes no root object: tensors are named by variable name"
        ));
        return Ok(SavedModelMetadata::default());
    };
    let json: serde_json::Value = serde_json::from_str(&root.metadata).map_err(|e| {
        Error::new(
            &path,
            ErrorKind::InvalidKeras(format!("the root object's metadata is not JSON ({e})")),
        )
    })?;
    let text_of = |key: &str| json.get(key).and_then(|v| v.as_str()).map(str::to_string);
    let mut saved = SavedModelMetadata {
        config: None,
        keras_version: text_of("keras_version"),
        backend: text_of("backend"),
        model_name: text_of("name"),
        sub_layers: Vec::new(),
        source,
    };
    let (Some(class), Some(config)) = (json.get("class_name"), json.get("config")) else {
        notes.push(format!(
            "{source} has no model config: tensors are named by variable name"
        ));
        return Ok(saved);
    };
    let text = serde_json::json!({"class_name": class, "config": config}).to_string();
    match LayerConfig::parse(&text) {
        Ok(c) => saved.config = Some(c),
        Err(e) => notes.push(format!("{source}: {e}; tensors are named by variable name")),
    }
    if saved.config.as_ref().is_some_and(|c| c.children.is_empty()) {
        saved.sub_layers = sub_layers(&metadata.nodes);
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::export::plan::tensor_name;

    fn raw(name: &str, shape: &[usize]) -> RawWeight {
        RawWeight {
            stored_name: name.into(),
            dataset: name.into(),
            parts: name.split('/').map(String::from).collect(),
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            location: Location::Bundle(0),
        }
    }

    fn names(layers: &[Layer]) -> Vec<String> {
        layers
            .iter()
            .flat_map(|l| l.weights.iter().map(|w| tensor_name(&l.path, w)))
            .collect()
    }

    #[test]
    fn variable_names_become_tensor_names() {
        let layers = name_layers(
            vec![
                raw("efficientnet-b0/stem/conv2d/kernel", &[3, 3, 3, 4]),
                raw(
                    "efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel",
                    &[3, 3, 4, 1],
                ),
                raw("class_net/class-0/depthwise_kernel", &[3, 3, 4, 1]),
                raw("class_net/class-0/pointwise_kernel", &[1, 1, 4, 4]),
                raw("class_net/class-0/bias", &[4]),
                raw("class_net/class-predict/bias", &[2]),
                raw("dense/kernel", &[4, 3]),
                raw("w", &[2]),
                raw("bidirectional/forward_lstm/lstm_cell/kernel", &[4, 20]),
            ],
            None,
            &mut Vec::new(),
        )
        .unwrap();
        assert_eq!(
            names(&layers),
            [
                "efficientnet-b0/stem/conv2d/kernel",
                "efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel",
                "class_net/class-0/depthwise_kernel",
                "class_net/class-0/pointwise_kernel",
                "class_net/class-0/bias",
                "class_net/class-predict/bias",
                "dense/kernel",
                "bidirectional/forward_lstm/kernel",
                "w",
            ]
        );
    }

    #[test]
    fn tf1_slots_need_their_variable() {
        let keys = ["a/kernel", "a/kernel/Adam", "a/kernel/Adam_1", "b/Momentum"];
        let has = |k: &str| keys.contains(&k);
        assert!(is_slot("a/kernel/Adam", &has));
        assert!(is_slot("a/kernel/Adam_1", &has));
        assert!(!is_slot("b/Momentum", &has), "no variable `b`");
        assert!(!is_slot("a/kernel", &has));
    }

    #[test]
    fn metadata_layer_paths_take_the_names_along_the_node_path() {
        let node = |path: &str, identifier: &str, name: &str| proto::SavedObject {
            node_id: 0,
            node_path: path.into(),
            identifier: identifier.into(),
            metadata: serde_json::json!({"name": name, "class_name": "C"}).to_string(),
        };
        // 200,000 components: hashing every prefix would take minutes.
        let deep = format!("root.x{}", ".0".repeat(200_000));
        let nodes = [
            node("root", "_tf_keras_model", "model"),
            node("root.stages.0.1", "_tf_keras_layer", "block_1"),
            node("root.stages.0.1.sep", "_tf_keras_layer", "sep"),
            node("root.keras_api.metrics.0", "_tf_keras_metric", "loss"),
            node("root.head", "some_other_object", "head"),
            node(&deep, "_tf_keras_layer", "deep"),
            node(&format!("{deep}.w"), "_tf_keras_layer", "w"),
        ];
        let paths: Vec<Vec<String>> = sub_layers(&nodes).into_iter().map(|l| l.path).collect();
        assert_eq!(
            paths,
            [
                vec!["block_1"],
                vec!["block_1", "sep"],
                vec!["deep"],
                vec!["deep", "w"],
            ]
        );
    }

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name)
    }

    #[test]
    fn saved_model_pb_gives_the_node_paths_tf_keras_gives() {
        // basic-pitch 0.4.0 (Keras 2.4.0): its expected JSON holds the
        // paths tf-keras's own `_read_legacy_metadata` gave.
        let expected: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture("third_party/basic_pitch_nmp.expected.json")).unwrap(),
        )
        .unwrap();
        let want: HashMap<i32, String> = expected["node_paths"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, path)| (id.parse().unwrap(), path.as_str().unwrap().to_string()))
            .collect();
        let dir = fixture("third_party/basic_pitch_nmp");
        let (source, found) = read_metadata(&dir).unwrap().unwrap();
        assert_eq!(source, "saved_model.pb");
        let got: HashMap<i32, String> = found
            .nodes
            .iter()
            .map(|n| (n.node_id, n.node_path.clone()))
            .collect();
        assert_eq!(got, want);
        let mut notes = Vec::new();
        let saved = saved_model_metadata(&dir, &mut notes).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(saved.keras_version.as_deref(), Some("2.4.0"));
        assert_eq!(saved.model_name.as_deref(), expected["model_name"].as_str());
        assert!(saved.config.is_some_and(|c| !c.children.is_empty()));
    }

    #[test]
    fn keras_metadata_pb_wins_over_saved_model_pb() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::copy(
            fixture("third_party/basic_pitch_nmp/saved_model.pb"),
            dir.path().join("saved_model.pb"),
        )
        .unwrap();
        std::fs::copy(
            fixture("tf/functional_savedmodel/keras_metadata.pb"),
            dir.path().join("keras_metadata.pb"),
        )
        .unwrap();
        let (source, _) = read_metadata(dir.path()).unwrap().unwrap();
        assert_eq!(source, "keras_metadata.pb");
        let saved = saved_model_metadata(dir.path(), &mut Vec::new()).unwrap();
        assert_eq!(saved.keras_version.as_deref(), Some("2.21.0"));
        // A TF >= 2.5 saved_model.pb records no Keras metadata of its own.
        let tf_2_21 = fixture("tf/functional_savedmodel/saved_model.pb");
        let found = saved_model_pb::keras_metadata(&tf_2_21, MAX_METADATA_BYTES).unwrap();
        assert!(found.nodes.is_empty());
    }

    #[test]
    fn the_state_file_names_the_latest_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ckpt-2.index"), b"").unwrap();
        std::fs::write(
            dir.path().join("checkpoint"),
            "model_checkpoint_path: \"/elsewhere/ckpt-2\"\nall_model_checkpoint_paths: \"ckpt-1\"\n",
        )
        .unwrap();
        // An absolute path that moved is found beside the state file.
        assert_eq!(
            latest_checkpoint(dir.path(), &dir.path().join("checkpoint")).unwrap(),
            dir.path().join("ckpt-2")
        );
        std::fs::write(dir.path().join("checkpoint"), "nothing here\n").unwrap();
        assert!(latest_checkpoint(dir.path(), &dir.path().join("checkpoint")).is_err());
    }
}
