//! Keras 3 weights: `.weights.h5`, the `model.weights.h5` inside a `.keras`
//! archive, and the shards of a sharded save.
//!
//! The file is an object tree: `layers/<object>/vars/<i>`, where `<object>`
//! is the layer's class in snake case made unique (`dense`, `dense_1`, ...),
//! `<i>` the variable's position in `layer.weights` (trainable first), and
//! since Keras 3.6 each `vars` group has the layer's real name as attribute
//! `name`. Nothing stores what a variable is: labels come from the class's
//! label table, the class from the config when there is one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::accounting::{METRICS_SKIPPED, OPTIMIZER_SKIPPED};
use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::keras::config::{snake_case, ConfigIndex, LayerConfig};
use crate::keras::weight_dtype;
use crate::labels;
use crate::model::{Format, Layer, SkippedGroup, StoredName, Weight};

/// Where the layers of a model are listed: `layers` since Keras 3, and
/// `_layer_checkpoint_dependencies` in the Keras 2.13 `.keras` format.
const LAYER_LISTS: [&str; 2] = ["layers", "_layer_checkpoint_dependencies"];

/// Children of a model object that are not layers it holds: its own
/// variables, its optimizer, and its layer lists.
const NOT_ATTRIBUTES: [&str; 4] = [
    "vars",
    "optimizer",
    "layers",
    "_layer_checkpoint_dependencies",
];

/// Classes whose objects hold other objects rather than variables of their own.
const WRAPPERS: [&str; 2] = ["Bidirectional", "TimeDistributed"];

/// One group of the object tree, merged across shards.
#[derive(Debug, Default)]
struct Node {
    /// (file index, creation rank in its parent) where the group first
    /// appears: the order Keras wrote the objects in.
    first_seen: (usize, usize),
    groups: Vec<String>,
    /// Dataset names with the file that holds each.
    datasets: Vec<(String, usize)>,
    /// The `name` attribute (Keras 3.6+ `vars` groups).
    name: Option<String>,
}

/// The object trees of one or more files, merged: a sharded save splits
/// one model's tree (even one `vars` group) across files.
#[derive(Debug)]
pub struct Tree<'a> {
    path: &'a Path,
    files: &'a [h5::File],
    nodes: HashMap<String, Node>,
}

impl<'a> Tree<'a> {
    pub fn read(path: &'a Path, files: &'a [h5::File]) -> Result<Tree<'a>> {
        let mut tree = Tree {
            path,
            files,
            nodes: HashMap::new(),
        };
        for (index, file) in files.iter().enumerate() {
            let root = file.root().map_err(|e| tree.corrupt(e))?;
            let mut seen = HashSet::new();
            tree.walk(index, &root, "", 0, 0, &mut seen)?;
        }
        Ok(tree)
    }

    fn corrupt(&self, e: h5::H5Error) -> Error {
        Error::new(self.path, ErrorKind::CorruptHdf5(e.0))
    }

    fn walk(
        &mut self,
        file_index: usize,
        group: &h5::Group,
        path: &str,
        depth: usize,
        rank: usize,
        seen: &mut HashSet<u64>,
    ) -> Result<()> {
        crate::cancel::check(self.path)?;
        let file = &self.files[file_index];
        // `h5::File::refuse_links` has checked the tree when the file was
        // opened; these guards only keep a crafted file from looping here.
        if depth > h5::MAX_GROUP_DEPTH || !seen.insert(group.address()) {
            return Err(self.corrupt(h5::H5Error::new(format!(
                "`{path}` loops or nests too deep"
            ))));
        }
        let (mut groups, datasets) = group.member_names().map_err(|e| self.corrupt(e))?;
        if let Some(order) = file.creation_order(group).map_err(|e| self.corrupt(e))? {
            let rank: HashMap<&str, usize> = order
                .iter()
                .enumerate()
                .map(|(i, name)| (name.as_str(), i))
                .collect();
            groups.sort_by_key(|g| rank.get(g.as_str()).copied());
        }
        let name = group.string_attr("name").ok().flatten();
        let node = self.nodes.entry(path.to_string()).or_insert_with(|| Node {
            first_seen: (file_index, rank),
            ..Node::default()
        });
        if node.name.is_none() {
            node.name = name;
        }
        for d in datasets {
            node.datasets.push((d, file_index));
        }
        if node.groups.is_empty() {
            node.groups.clone_from(&groups);
        } else {
            // The same group in another shard: add the names not seen yet.
            let known: HashSet<&String> = node.groups.iter().collect();
            let new: Vec<String> = groups
                .iter()
                .filter(|g| !known.contains(g))
                .cloned()
                .collect();
            node.groups.extend(new);
        }
        for (rank, g) in groups.into_iter().enumerate() {
            let child = group.group(&g).map_err(|e| self.corrupt(e))?;
            self.walk(
                file_index,
                &child,
                &format!("{path}/{g}"),
                depth + 1,
                rank,
                seen,
            )?;
        }
        Ok(())
    }

    fn node(&self, path: &str) -> Option<&Node> {
        self.nodes.get(path)
    }

    fn has(&self, path: &str) -> bool {
        self.nodes.contains_key(path)
    }

    /// Child groups in the order Keras wrote them.
    fn children(&self, path: &str) -> Vec<String> {
        let Some(node) = self.node(path) else {
            return Vec::new();
        };
        let mut children = node.groups.clone();
        children.sort_by_cached_key(|c| {
            self.node(&format!("{path}/{c}"))
                .map(|n| n.first_seen)
                .unwrap_or((usize::MAX, usize::MAX))
        });
        children
    }

    /// The variables of a `vars` group, by index (`0`, `1`, ..., `10`).
    fn vars(&self, object: &str) -> Vec<(String, usize)> {
        let mut vars = self
            .node(&format!("{object}/vars"))
            .map(|n| n.datasets.clone())
            .unwrap_or_default();
        vars.sort_by_key(|(name, _)| (name.parse::<u64>().unwrap_or(u64::MAX), name.clone()));
        vars
    }

    /// The layer name Keras 3.6+ records on an object's `vars` group.
    fn recorded_name(&self, object: &str) -> Option<String> {
        self.node(&format!("{object}/vars"))?.name.clone()
    }

    /// Whether this looks like a Keras 3 object tree at all.
    pub fn is_object_tree(&self) -> bool {
        LAYER_LISTS.iter().any(|l| self.has(&format!("/{l}"))) || self.has("/vars")
    }
}

/// What the reader found.
#[derive(Debug)]
pub struct Read {
    pub layers: Vec<Layer>,
    pub optimizer: Vec<Weight>,
    pub notes: Vec<String>,
    pub skipped_groups: Vec<SkippedGroup>,
}

/// Reads the weights of a Keras 3 object tree. `config` (from `config.json`
/// or `--config`) gives classes, layer options and order.
pub fn read(
    tree: &Tree<'_>,
    config: Option<&LayerConfig>,
    include_optimizer: bool,
) -> Result<Read> {
    let mut reader = Reader {
        tree,
        notes: Vec::new(),
        has_config: config.is_some(),
    };
    let mut layers = Vec::new();
    reader.walk_model("", config, &[], &mut layers)?;
    let root_vars = reader.tree.vars("");
    if !root_vars.is_empty() {
        let weights = reader.weights_by_position("", None, None, &[], None)?;
        layers.push(Layer {
            path: Vec::new(),
            class: None,
            config: None,
            weights,
        });
    }
    let mut optimizer = Vec::new();
    let mut skipped_groups = Vec::new();
    if reader.tree.has("/metrics") {
        skipped_groups.extend((0..reader.tree.files.len()).map(|file| SkippedGroup {
            file,
            group: "/metrics".into(),
            reason: METRICS_SKIPPED.into(),
        }));
    }
    if !include_optimizer && reader.tree.has("/optimizer") {
        skipped_groups.extend((0..reader.tree.files.len()).map(|file| SkippedGroup {
            file,
            group: "/optimizer".into(),
            reason: OPTIMIZER_SKIPPED.into(),
        }));
    }
    if include_optimizer && reader.tree.has("/optimizer") {
        for (name, file) in reader.tree.vars("/optimizer") {
            let dataset = format!("/optimizer/vars/{name}");
            optimizer.push(reader.weight(&dataset, file, vec!["vars".into()], name)?);
        }
    }
    Ok(Read {
        layers,
        optimizer,
        notes: reader.notes,
        skipped_groups,
    })
}

struct Reader<'t, 'a> {
    tree: &'t Tree<'a>,
    notes: Vec<String>,
    has_config: bool,
}

/// A layer object matched to its config entry.
struct Object<'c> {
    key: String,
    config: Option<&'c LayerConfig>,
}

impl Reader<'_, '_> {
    fn path(&self) -> &Path {
        self.tree.path
    }

    fn walk_model(
        &mut self,
        model: &str,
        config: Option<&LayerConfig>,
        prefix: &[String],
        out: &mut Vec<Layer>,
    ) -> Result<()> {
        let list = LAYER_LISTS
            .iter()
            .map(|l| format!("{model}/{l}"))
            .find(|l| self.tree.has(l));
        if let Some(list) = list {
            for object in self.match_objects(&list, config) {
                let object_path = format!("{list}/{}", object.key);
                let name = self
                    .tree
                    .recorded_name(&object_path)
                    .or_else(|| object.config.map(|c| c.name.clone()))
                    .unwrap_or_else(|| object.key.clone());
                let class = object
                    .config
                    .map(|c| c.class.clone())
                    .or_else(|| class_from_object_key(&object.key).map(str::to_string));
                let mut path = prefix.to_vec();
                path.push(name);
                if self.is_model(&object_path) {
                    self.walk_model(&object_path, object.config, &path, out)?;
                } else {
                    let options = object.config.map(|c| &c.config);
                    let weights =
                        self.object_weights(&object_path, class.as_deref(), options, &path)?;
                    if !weights.is_empty() {
                        out.push(Layer {
                            path,
                            class,
                            config: options.cloned(),
                            weights,
                        });
                    }
                }
            }
        }
        // A subclassed model keeps the layers it holds as attributes under
        // the attribute's name, beside (or instead of) a layer list.
        // The top model's `metrics` holds compiled metrics' state.
        let not_attribute =
            |key: &str| NOT_ATTRIBUTES.contains(&key) || (model.is_empty() && key == "metrics");
        for key in self.tree.children(model) {
            if !not_attribute(&key) {
                self.walk_attribute(&format!("{model}/{key}"), &key, prefix, out)?;
            }
        }
        Ok(())
    }

    /// Whether an object is a list or dict a layer holds its layers in:
    /// Keras 3 gives every layer a `vars` group (empty if it has no
    /// variables) and a container none.
    fn is_container(&self, object: &str) -> bool {
        !self.tree.has(&format!("{object}/vars")) && !self.is_model(object)
    }

    /// Whether an object holds a layer list: a nested model.
    fn is_model(&self, object: &str) -> bool {
        LAYER_LISTS
            .iter()
            .any(|l| self.tree.has(&format!("{object}/{l}")))
    }

    /// An object a subclassed model or layer holds as an attribute: a
    /// layer, a model, or a list of layers (whose items are keyed by class).
    /// Every object that holds variables becomes a layer named by its path
    /// of object keys, each key replaced by the layer name Keras recorded
    /// on its `vars` group where there is one.
    fn walk_attribute(
        &mut self,
        object: &str,
        key: &str,
        prefix: &[String],
        out: &mut Vec<Layer>,
    ) -> Result<()> {
        crate::cancel::check(self.tree.path)?;
        if self.is_container(object) {
            // A list or dict of layers: not a layer, and not in Keras's
            // variable paths (`vit_encoder/transformer_block_1/...`, not
            // `vit_encoder/encoder_layers/transformer_block_1/...`).
            for child in self.tree.children(object) {
                self.walk_attribute(&format!("{object}/{child}"), &child, prefix, out)?;
            }
            return Ok(());
        }
        let recorded = self.tree.recorded_name(object);
        let mut path = prefix.to_vec();
        path.push(recorded.clone().unwrap_or_else(|| key.to_string()));
        if self.is_model(object) {
            return self.walk_model(object, None, &path, out);
        }
        let class = recorded
            .as_deref()
            .and_then(class_from_object_key)
            .or_else(|| class_from_object_key(key));
        if class.is_some() {
            let weights = self.object_weights(object, class, None, &path)?;
            if !weights.is_empty() {
                out.push(Layer {
                    path,
                    class: class.map(str::to_string),
                    config: None,
                    weights,
                });
            }
            return Ok(());
        }
        // A custom layer: its own variables, then each object it holds.
        let own = self.weights_by_position(object, None, None, &path, None)?;
        if !own.is_empty() {
            out.push(Layer {
                path: path.clone(),
                class: None,
                config: None,
                weights: own,
            });
        }
        for child in self.tree.children(object) {
            if child != "vars" {
                self.walk_attribute(&format!("{object}/{child}"), &child, &path, out)?;
            }
        }
        Ok(())
    }

    /// Pairs each object under `list` with its config entry, in model order.
    fn match_objects<'c>(&self, list: &str, config: Option<&'c LayerConfig>) -> Vec<Object<'c>> {
        let keys = self.tree.children(list);
        let Some(config) = config else {
            return keys
                .into_iter()
                .map(|key| Object { key, config: None })
                .collect();
        };
        // Object keys Keras gives the config's layers: snake-case class
        // names made unique in `model.layers` order.
        let mut used: HashMap<String, usize> = HashMap::new();
        let mut by_key: HashMap<String, &LayerConfig> = HashMap::new();
        for child in &config.children {
            let snake = snake_case(&child.class);
            let key = match used.get_mut(&snake) {
                Some(n) => {
                    *n += 1;
                    format!("{snake}_{n}")
                }
                None => {
                    used.insert(snake.clone(), 0);
                    snake
                }
            };
            by_key.insert(key, child);
        }
        let index = ConfigIndex::new(config);
        let mut objects: Vec<(usize, Object<'c>)> = keys
            .into_iter()
            .map(|key| {
                let path = format!("{list}/{key}");
                let matched = match self.tree.recorded_name(&path) {
                    Some(name) => index.child(&name),
                    None => by_key.get(&key).copied(),
                };
                let rank = matched
                    .and_then(|c| index.position(&c.name))
                    .unwrap_or(usize::MAX);
                (
                    rank,
                    Object {
                        key,
                        config: matched,
                    },
                )
            })
            .collect();
        objects.sort_by_key(|(rank, _)| *rank);
        objects.into_iter().map(|(_, o)| o).collect()
    }

    /// The labelled weights of one layer object and the objects it holds.
    fn object_weights(
        &mut self,
        object: &str,
        class: Option<&str>,
        options: Option<&Value>,
        layer_path: &[String],
    ) -> Result<Vec<Weight>> {
        let wrapped = |key: &str| -> (Option<String>, Option<Value>) {
            let layer = options.and_then(|o| o.get(key));
            let class = layer
                .and_then(|l| l.get("class_name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            (class, layer.and_then(|l| l.get("config")).cloned())
        };
        match class {
            Some("Bidirectional") => {
                let mut weights = Vec::new();
                for (direction, key) in
                    [("forward", "forward_layer"), ("backward", "backward_layer")]
                {
                    let child = format!("{object}/{key}");
                    if !self.tree.has(&child) {
                        continue;
                    }
                    let (mut inner_class, mut inner) = wrapped(key);
                    if inner_class.is_none() {
                        (inner_class, inner) = wrapped("layer");
                    }
                    // The wrapped layer's own name without a direction:
                    // configs say `lstm` (tf-keras) or `forward_lstm` /
                    // `backward_lstm` (Keras 3).
                    let base = inner
                        .as_ref()
                        .and_then(|c| c.get("name"))
                        .and_then(Value::as_str)
                        .map(|n| without_direction(n).to_string());
                    let inner_class = inner_class.or_else(|| self.guess_wrapped(&child));
                    // Keras names the halves `forward_<layer>`: without a name
                    // or config, the layer's class in snake case is its
                    // default name.
                    let base = base.or_else(|| {
                        inner_class
                            .as_deref()
                            .filter(|c| *c != "RNN")
                            .map(snake_case)
                    });
                    let sub = self
                        .tree
                        .recorded_name(&child)
                        .or_else(|| base.map(|b| format!("{direction}_{b}")))
                        .unwrap_or_else(|| key.to_string());
                    for mut w in self.object_weights(
                        &child,
                        inner_class.as_deref(),
                        inner.as_ref(),
                        layer_path,
                    )? {
                        w.sub_path.insert(0, sub.clone());
                        weights.push(w);
                    }
                }
                Ok(weights)
            }
            Some("TimeDistributed") => {
                let child = format!("{object}/layer");
                let (inner_class, inner) = wrapped("layer");
                let inner_class = inner_class.or_else(|| self.guess_wrapped(&child));
                self.object_weights(&child, inner_class.as_deref(), inner.as_ref(), layer_path)
            }
            // A recurrent layer keeps its variables in its cell, which has
            // the layer's own label table.
            _ if self.tree.vars(object).is_empty() && self.tree.has(&format!("{object}/cell")) => {
                let class = class.map(str::to_string).or_else(|| self.guess_rnn(object));
                self.object_weights(
                    &format!("{object}/cell"),
                    class.as_deref(),
                    options,
                    layer_path,
                )
            }
            _ => {
                let mut weights =
                    self.weights_by_position(object, class, options, layer_path, None)?;
                // A layer of no recorded class that holds MultiHeadAttention's
                // four projections (keras_hub's attention layers subclass
                // it) has its table.
                let class = class.or_else(|| self.holds_attention_projections(object));
                // Objects held by a layer we have no wrapper rule for, in
                // the order its table lists them (the file's is by key).
                let mut children: Vec<(String, String)> = self
                    .tree
                    .children(object)
                    .into_iter()
                    .filter(|c| c != "vars" && !LAYER_LISTS.contains(&c.as_str()))
                    .map(|child| {
                        let path = format!("{object}/{child}");
                        let sub = self.tree.recorded_name(&path).unwrap_or(child);
                        (path, sub)
                    })
                    .collect();
                if let Some(class) = class {
                    children.sort_by_key(|(_, sub)| labels::sub_object_rank(class, sub));
                }
                for (child_path, sub) in children {
                    // A table that names the sub-object's arrays
                    // (MultiHeadAttention's `query/kernel`) labels them.
                    let count = self.tree.vars(&child_path).len();
                    let given = class
                        .filter(|_| self.tree.children(&child_path).iter().all(|c| c == "vars"))
                        .and_then(|c| labels::below(c, options, &sub, count));
                    let child_weights = match given {
                        Some(given) => self.weights_by_position(
                            &child_path,
                            None,
                            None,
                            layer_path,
                            Some(given),
                        )?,
                        None => self.object_weights(&child_path, None, None, layer_path)?,
                    };
                    // A list or dict of layers adds no name to their paths.
                    let container = self.is_container(&child_path);
                    for mut w in child_weights {
                        if !container {
                            w.sub_path.insert(0, sub.clone());
                        }
                        weights.push(w);
                    }
                }
                Ok(weights)
            }
        }
    }

    /// MultiHeadAttention, where `object` holds its four projections under
    /// Keras's attribute names and nothing of its own.
    fn holds_attention_projections(&self, object: &str) -> Option<&'static str> {
        const PROJECTIONS: [&str; 4] = ["query_dense", "key_dense", "value_dense", "output_dense"];
        let children = self.tree.children(object);
        let has = |p: &str| children.iter().any(|c| c.trim_start_matches('_') == p);
        (self.tree.vars(object).is_empty() && PROJECTIONS.iter().all(|p| has(p)))
            .then_some("MultiHeadAttention")
    }

    /// The class of a wrapped layer when no config records it: Keras names
    /// layers after their class unless told otherwise (`dense`,
    /// `forward_lstm`), and only RNNs keep their variables in a cell.
    fn guess_wrapped(&self, object: &str) -> Option<String> {
        let named = self.tree.recorded_name(object).and_then(|name| {
            let base = without_direction(&name).to_string();
            class_from_object_key(&base)
        });
        named.map(str::to_string).or_else(|| self.guess_rnn(object))
    }

    /// An RNN object whose class the file does not record: LSTM, GRU or
    /// SimpleRNN by how many gates wide its cell's kernel is.
    fn guess_rnn(&self, object: &str) -> Option<String> {
        let cell = format!("{object}/cell");
        if !self.tree.has(&cell) {
            return None;
        }
        let shapes: Vec<Vec<usize>> = self
            .tree
            .vars(&cell)
            .iter()
            .take(2)
            .filter_map(|(name, file)| {
                let dataset = format!("{cell}/vars/{name}");
                self.tree.files[*file]
                    .dataset(&dataset)
                    .ok()
                    .map(|d| d.shape)
            })
            .collect();
        let class = match shapes.as_slice() {
            [kernel, recurrent, ..]
                if kernel.len() == 2 && recurrent.len() == 2 && recurrent[0] > 0 =>
            {
                match kernel[1] / recurrent[0] {
                    4 => "LSTM",
                    3 => "GRU",
                    1 => "SimpleRNN",
                    _ => "RNN",
                }
            }
            _ => "RNN",
        };
        Some(class.to_string())
    }

    /// Labels the variables of one `vars` group from the class's table.
    fn weights_by_position(
        &mut self,
        object: &str,
        class: Option<&str>,
        options: Option<&Value>,
        layer_path: &[String],
        given: Option<Vec<Option<labels::PositionalLabel>>>,
    ) -> Result<Vec<Weight>> {
        let vars = self.tree.vars(object);
        if vars.is_empty() {
            return Ok(Vec::new());
        }
        // A cell of an RNN whose class is unknown has the recurrent table
        // (kernel, recurrent_kernel, bias: every Keras cell's), where its
        // shapes are those of a Keras cell; a custom cell's are not.
        let table_class = match class {
            Some("RNN") if self.fits_keras_cell(object, &vars) => Some("SimpleRNN"),
            Some("RNN") => None,
            other => other,
        };
        let layer = if layer_path.is_empty() {
            "(model)".to_string()
        } else {
            layer_path.join("/")
        };
        let labels = match (given, table_class) {
            (Some(given), _) => Some(given),
            (None, Some(c)) => labels::by_position(c, options, vars.len()),
            (None, None) => self.labels_from_shapes(object, &vars, &layer),
        };
        match (&labels, class) {
            (Some(_), None) => {}
            (None, Some(c)) if !WRAPPERS.contains(&c) && labels::table(c).is_some() => {
                self.notes.push(format!(
                    "layer `{layer}` ({c}) has {} weights, which its label table does not explain; labelled param_N",
                    vars.len()
                ));
            }
            (None, Some("RNN")) => self.notes.push(format!(
                "layer `{layer}` is an RNN whose cell's weights are not shaped as a Keras cell's (kernel, recurrent_kernel, bias); labelled param_N by position"
            )),
            (None, Some(c)) => self.notes.push(format!(
                "layer `{layer}` has class {c}, which has no label table; weights labelled param_N by position"
            )),
            (None, None) => self.notes.push(format!(
                "layer `{layer}`: class unknown, weights labelled param_N by position"
            )),
            (Some(list), _) if list.iter().any(Option::is_none) => {
                let which = if self.has_config {
                    "its config does not say"
                } else {
                    "no config says (pass --config config.json)"
                };
                self.notes.push(format!(
                    "layer `{layer}` ({}): {} weights, and {which} which optional ones exist; uncertain ones labelled param_N",
                    class.unwrap_or("?"),
                    vars.len()
                ));
            }
            _ => {}
        }
        let mut weights = Vec::with_capacity(vars.len());
        for (i, (name, file)) in vars.into_iter().enumerate() {
            let (sub_path, label) = match labels.as_ref().and_then(|l| l[i].clone()) {
                Some(l) => (l.sub_path, l.label),
                None => (Vec::new(), format!("param_{i}")),
            };
            let dataset = format!("{object}/vars/{name}");
            weights.push(self.weight(&dataset, file, sub_path, label)?);
        }
        Ok(weights)
    }

    /// Whether the variables are shaped as a Keras RNN cell's: a kernel
    /// `(in, g * units)`, a recurrent kernel `(units, g * units)` for 1, 3
    /// or 4 gates, and maybe a bias of `g * units` (two rows of it for a
    /// GRU that resets after).
    fn fits_keras_cell(&self, object: &str, vars: &[(String, usize)]) -> bool {
        let Some(shapes) = self.shapes_of(object, vars) else {
            return false;
        };
        if !(2..=3).contains(&shapes.len()) {
            return false;
        }
        // The recurrent layers' own shape checks, on the cell's arrays
        // labelled as every Keras cell's are.
        let labelled: Vec<(String, Vec<usize>)> = ["kernel", "recurrent_kernel", "bias"]
            .iter()
            .zip(shapes)
            .map(|(label, shape)| (label.to_string(), shape))
            .collect();
        let candidates = labels::class_candidates(&labelled);
        ["LSTM", "GRU", "SimpleRNN"]
            .iter()
            .any(|class| candidates.contains(class))
    }

    /// The shapes of an object's variables, in order.
    fn shapes_of(&self, object: &str, vars: &[(String, usize)]) -> Option<Vec<Vec<usize>>> {
        vars.iter()
            .map(|(name, file)| {
                let dataset = format!("{object}/vars/{name}");
                self.tree.files[*file]
                    .dataset(&dataset)
                    .ok()
                    .map(|d| d.shape)
            })
            .collect()
    }

    /// Labels for the variables of an object whose class nothing records,
    /// where their shapes allow only one reading.
    fn labels_from_shapes(
        &mut self,
        object: &str,
        vars: &[(String, usize)],
        layer: &str,
    ) -> Option<Vec<Option<labels::PositionalLabel>>> {
        let shapes = self.shapes_of(object, vars)?;
        // The name Keras recorded (`ln_1`) and the attribute's key
        // (`layer_norm_1`): either may say the class.
        let key = object.rsplit('/').next().unwrap_or(object).to_string();
        let recorded = self.tree.recorded_name(object);
        let names: Vec<&str> = recorded
            .iter()
            .map(String::as_str)
            .chain([key.as_str()])
            .collect();
        let (class, found, name) = labels::guess_by_shapes_and_name(&shapes, &names)?;
        let by_name = name.is_some();
        let name = name.unwrap_or_default();
        let how = match by_name {
            true => format!("its name `{name}` and its shapes"),
            false => "their shapes".to_string(),
        };
        self.notes.push(format!(
            "layer `{layer}`: no class recorded; weights labelled from {how} ({})",
            class.map_or(
                "the labels every fitting class agrees on".to_string(),
                |c| format!("as {c}")
            )
        ));
        Some(
            found
                .into_iter()
                .map(|label| {
                    Some(labels::PositionalLabel {
                        sub_path: Vec::new(),
                        label: label.to_string(),
                    })
                })
                .collect(),
        )
    }

    fn weight(
        &mut self,
        dataset: &str,
        file: usize,
        sub_path: Vec<String>,
        label: String,
    ) -> Result<Weight> {
        let info = self.tree.files[file].dataset(dataset).map_err(|e| {
            let e = e.within(format_args!("weight `{dataset}`"));
            Error::new(self.path(), e.kind(ErrorKind::InvalidKeras))
        })?;
        let path = self.tree.path;
        let dtype = weight_dtype(path, &info, dataset, &mut self.notes)?;
        Ok(Weight {
            label: crate::labels::interned(&label),
            sub_path,
            stored: StoredName::InDataset(0),
            dtype,
            shape: info.shape,
            file,
            dataset: dataset.to_string(),
            location: info.location.into(),
        })
    }
}

/// A Bidirectional half's name without its direction (`forward_lstm` → `lstm`).
fn without_direction(name: &str) -> &str {
    name.strip_prefix("forward_")
        .or_else(|| name.strip_prefix("backward_"))
        .unwrap_or(name)
}

/// The class an object key names (`separable_conv2d_4` → `SeparableConv2D`),
/// for the classes we have label tables for.
fn class_from_object_key(key: &str) -> Option<&'static str> {
    let base = labels::without_counter(key);
    // Keras keys an object by its Python class's name, which for a few
    // classes is not the name we give them.
    let alias = labels::CLASS_ALIASES
        .iter()
        .find(|(other, _)| snake_case(other) == base)
        .map(|(_, ours)| *ours);
    alias.or_else(|| {
        labels::TABLES
            .iter()
            .map(|t| t.class)
            .chain(WRAPPERS)
            .find(|class| snake_case(class) == base)
    })
}

/// The format a merged tree was read as, for the model.
pub fn format_of(shards: usize, in_archive: bool) -> Format {
    match (in_archive, shards) {
        (true, _) => Format::KerasArchive,
        (false, 1) => Format::Keras3Weights,
        _ => Format::Keras3Sharded,
    }
}

/// The parts of a sharded save's `.weights.json` index we read.
#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: serde_json::Map<String, Value>,
}

/// The shard files of a sharded save, which sit beside its index.
pub fn shard_files(index: &Path, json: &str) -> Result<Vec<PathBuf>> {
    let invalid = |m: String| Error::new(index, ErrorKind::InvalidKeras(m));
    let parsed: ShardIndex = serde_json::from_str(json)
        .map_err(|e| invalid(format!("not a sharded-weights index: {e}")))?;
    let mut names = BTreeSet::new();
    for entry in parsed.weight_map.values() {
        let files: Vec<&Value> = match entry {
            Value::Array(list) => list.iter().collect(),
            other => vec![other],
        };
        for f in files {
            let name = f
                .as_str()
                .ok_or_else(|| invalid("a `weight_map` entry is not a file name".into()))?;
            // Shards sit beside the index: a name with a folder in it could
            // point anywhere on the disk.
            if name.contains('/') || name.contains('\\') || name == ".." || name.is_empty() {
                return Err(invalid(format!(
                    "shard name `{name}` is not a plain file name"
                )));
            }
            names.insert(name.to_string());
        }
    }
    let dir = index.parent().unwrap_or(Path::new("."));
    Ok(names.into_iter().map(|n| dir.join(n)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_keys_name_their_class() {
        assert_eq!(
            class_from_object_key("separable_conv2d_4"),
            Some("SeparableConv2D")
        );
        assert_eq!(class_from_object_key("dense"), Some("Dense"));
        assert_eq!(class_from_object_key("conv2d"), Some("Conv2D"));
        assert_eq!(
            class_from_object_key("batch_normalization_12"),
            Some("BatchNormalization")
        );
        assert_eq!(
            class_from_object_key("bidirectional"),
            Some("Bidirectional")
        );
        assert_eq!(class_from_object_key("my_layer_2"), None);
        assert_eq!(
            class_from_object_key("grouped_query_attention_1"),
            Some("GroupQueryAttention")
        );
    }

    #[test]
    fn shard_names_must_stay_beside_the_index() {
        let index = Path::new("/data/model.weights.json");
        let ok = r#"{"weight_map": {"/layers/dense/vars": ["m_00000.weights.h5", "m_00001.weights.h5"], "/vars": "m_00000.weights.h5"}}"#;
        let files = shard_files(index, ok).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0], Path::new("/data/m_00000.weights.h5"));
        let bad = r#"{"weight_map": {"/layers/dense/vars": "../../etc/passwd"}}"#;
        assert!(shard_files(index, bad).is_err());
        // The parent folder, no name at all, a Windows path: each refused
        // on its own.
        for name in ["..", "", r"..\\secret.h5"] {
            let bad = format!(r#"{{"weight_map": {{"/vars": "{name}"}}}}"#);
            let err = shard_files(index, &bad).unwrap_err().to_string();
            assert!(err.contains("is not a plain file name"), "{name}: {err}");
        }
    }
}
