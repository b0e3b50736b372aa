//! The parts of a Keras model config (`model_config` in HDF5 files) that
//! say what each layer is: its class, its options, and, for nested models,
//! its own layers.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// The largest model config read (`model_config`, `config.json`,
/// `--config`): real configs are kilobytes to a few megabytes, 100k-layer
/// models tens of megabytes.
pub const MAX_CONFIG_BYTES: usize = 64 << 20;

/// The config keys the converter reads; everything else (initializers,
/// `inbound_nodes`, vocabularies, constants) is skipped while parsing, so
/// a config's memory is bounded by its layers, not by its bulk.
const STRUCTURE_KEYS: &[&str] = &[
    "class_name",
    "config",
    "name",
    "custom_name",
    "layers",
    "layer",
    "forward_layer",
    "backward_layer",
    "dtype",
];

/// Whether the converter reads this key of a config object: the structure
/// keys, PyTorch module options and label-table flags, gathered once (a
/// config can have millions of keys).
fn is_read(key: &str) -> bool {
    static READ: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    READ.get_or_init(|| {
        STRUCTURE_KEYS
            .iter()
            .chain(crate::export::pytorch::OPTION_KEYS)
            .copied()
            .chain(
                crate::labels::TABLES
                    .iter()
                    .flat_map(|t| t.slots)
                    .filter_map(|s| s.flag),
            )
            .collect()
    })
    .contains(key)
}

/// A JSON value with only the keys [`is_read`] keeps, built while parsing.
struct Pruned;

impl<'de> DeserializeSeed<'de> for Pruned {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Pruned {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(Pruned)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if is_read(&key) {
                let value = map.next_value_seed(Pruned)?;
                out.insert(key, value);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(Value::Object(out))
    }
}

/// One layer of a model config; a nested model has children.
#[derive(Debug, Clone)]
pub struct LayerConfig {
    /// The layer's name.
    pub name: String,
    /// The Keras class (`Conv2D`, `Functional`).
    pub class: String,
    /// The layer's `config` object (`{"filters": 16, "use_bias": true, ...}`).
    pub config: Value,
    /// For a nested model: its layers, in order.
    pub children: Vec<LayerConfig>,
}

const MODEL_CLASSES: &[&str] = &["Functional", "Sequential", "Model"];

impl LayerConfig {
    /// Parses a model config JSON document, keeping only what the
    /// converter reads. Callers check [`MAX_CONFIG_BYTES`] first.
    pub fn parse(json: &str) -> Result<LayerConfig, String> {
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let value = Pruned
            .deserialize(&mut deserializer)
            .and_then(|v| deserializer.end().map(|_| v))
            .map_err(|e| format!("model_config is not JSON: {e}"))?;
        Self::from_value(&value).ok_or_else(|| "model_config has no class_name".to_string())
    }

    fn from_value(value: &Value) -> Option<LayerConfig> {
        if value.get("class_name").is_none() {
            return Self::from_keras0(value);
        }
        let class = crate::labels::canonical_class(value.get("class_name")?.as_str()?).to_string();
        let config = value.get("config").cloned().unwrap_or(Value::Null);
        let name = value
            .get("name")
            .and_then(Value::as_str)
            .or_else(|| config.get("name").and_then(Value::as_str))
            .unwrap_or_default()
            .to_string();
        // Keras 2.0 Sequential configs are a bare list of layers.
        let layer_list = config.get("layers").or(if config.is_array() {
            Some(&config)
        } else {
            None
        });
        let children = layer_list
            .and_then(Value::as_array)
            .map(|layers| layers.iter().filter_map(Self::from_value).collect())
            .unwrap_or_default();
        Some(LayerConfig {
            name,
            class,
            config,
            children,
        })
    }

    /// Keras 0.x `to_json()`: `{"name": <class>, "custom_name": <name>, ...}`,
    /// options inline, and a model's layers under `layers`.
    fn from_keras0(value: &Value) -> Option<LayerConfig> {
        let class = value.get("name")?.as_str()?.to_string();
        let name = value
            .get("custom_name")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| class.to_lowercase());
        let children = value
            .get("layers")
            .and_then(Value::as_array)
            .map(|layers| layers.iter().filter_map(Self::from_keras0).collect())
            .unwrap_or_default();
        Some(LayerConfig {
            name,
            class,
            config: value.clone(),
            children,
        })
    }

    /// A model (or a layer that contains layers), rather than a plain layer.
    pub fn is_model(&self) -> bool {
        !self.children.is_empty() || MODEL_CLASSES.contains(&self.class.as_str())
    }

    /// The direct child named `name`.
    pub fn child(&self, name: &str) -> Option<&LayerConfig> {
        self.children.iter().find(|c| c.name == name)
    }

    /// The chain of configs from a direct child down to the layer called
    /// `name`, searching nested models depth-first.
    pub fn find(&self, name: &str) -> Option<Vec<&LayerConfig>> {
        for child in &self.children {
            if child.name == name {
                return Some(vec![child]);
            }
        }
        for child in &self.children {
            if let Some(mut rest) = child.find(name) {
                rest.insert(0, child);
                return Some(rest);
            }
        }
        None
    }

    /// Position of a direct child, for ordering.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.children.iter().position(|c| c.name == name)
    }

    /// The dtype the layer's policy computes in or stores variables in, if set.
    pub fn dtype_name(&self) -> Option<String> {
        let dtype = self.config.get("dtype")?;
        if let Some(s) = dtype.as_str() {
            return Some(s.to_string());
        }
        // A policy object: {"class_name": "Policy", "config": {"name": "mixed_bfloat16"}}.
        dtype
            .get("config")?
            .get("name")?
            .as_str()
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_models_are_found_by_inner_layer_name() {
        let json = r#"{"class_name": "Functional", "config": {"name": "det", "layers": [
            {"class_name": "InputLayer", "config": {"name": "image"}, "name": "image"},
            {"class_name": "Functional", "name": "backbone", "config": {"name": "backbone", "layers": [
                {"class_name": "Conv2D", "config": {"name": "stem_conv", "use_bias": false}}
            ]}}
        ]}}"#;
        let root = LayerConfig::parse(json).unwrap();
        assert!(root.child("backbone").unwrap().is_model());
        let chain = root.find("stem_conv").unwrap();
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[1].class, "Conv2D");
    }

    #[test]
    fn the_keys_read_keep_their_values_of_every_json_type() {
        // `padding` spelled with an escape reaches the owned-string visitor;
        // `filters` a positive integer, `groups` a negative one (no Keras
        // config has one, but the value must pass unchanged), `epsilon` a
        // float, `activation` null, `strides` a list.
        let json = r#"{"class_name": "Conv2D", "config": {"name": "c", "filters": 16,
            "groups": -1, "epsilon": 0.001, "padding": "sa\u006de", "activation": null,
            "strides": [2, 2], "kernel_initializer": {"class_name": "GlorotUniform"}}}"#;
        let layer = LayerConfig::parse(json).unwrap();
        let config = &layer.config;
        assert_eq!(config["filters"], 16);
        assert_eq!(config["groups"], -1);
        assert_eq!(config["epsilon"], 0.001);
        assert_eq!(config["padding"], "same");
        assert!(config["activation"].is_null() && config.get("activation").is_some());
        assert_eq!(config["strides"], serde_json::json!([2, 2]));
        assert!(
            config.get("kernel_initializer").is_none(),
            "keys not read are pruned"
        );
    }

    #[test]
    fn a_layer_holding_layers_is_a_model_whatever_its_class() {
        let json = r#"{"class_name": "MyBlock", "config": {"name": "blk", "layers": [
            {"class_name": "Dense", "config": {"name": "d"}}]}}"#;
        assert!(LayerConfig::parse(json).unwrap().is_model());
        let json = r#"{"class_name": "Dense", "config": {"name": "d"}}"#;
        assert!(!LayerConfig::parse(json).unwrap().is_model());
    }

    #[test]
    fn keras_0_configs_name_the_class_and_the_layer_apart() {
        let json = r#"{"name": "Sequential", "layers": [
            {"name": "Convolution2D", "custom_name": "conv", "nb_filter": 4},
            {"name": "BatchNormalization", "custom_name": "batchnormalization"}]}"#;
        let root = LayerConfig::parse(json).unwrap();
        assert_eq!(root.class, "Sequential");
        assert_eq!(root.children[0].class, "Convolution2D");
        assert_eq!(root.children[0].name, "conv");
        assert_eq!(root.children[1].name, "batchnormalization");
    }

    #[test]
    fn only_the_keys_the_converter_reads_are_kept() {
        let json = r#"{"class_name": "Functional", "config": {"name": "m", "layers": [
            {"class_name": "Conv2D", "name": "c", "inbound_nodes": [[["input", 0, 0, {}]]],
             "config": {"name": "c", "use_bias": false, "padding": "same",
                        "kernel_initializer": {"class_name": "GlorotUniform", "config": {"seed": 1}},
                        "vocabulary": ["a", "b", "c"]}}]}}"#;
        let root = LayerConfig::parse(json).unwrap();
        let conv = root.child("c").unwrap();
        assert_eq!(conv.class, "Conv2D");
        assert_eq!(
            conv.config,
            serde_json::json!({"name": "c", "use_bias": false, "padding": "same"})
        );
        assert!(LayerConfig::parse(r#"{"class_name": "X"} trailing"#).is_err());
    }

    #[test]
    fn keras_2_0_sequential_lists_layers_directly() {
        let json = r#"{"class_name": "Sequential", "config": [
            {"class_name": "Dense", "config": {"name": "dense_1", "dtype": "float32"}}]}"#;
        let root = LayerConfig::parse(json).unwrap();
        assert_eq!(
            root.child("dense_1").unwrap().dtype_name().as_deref(),
            Some("float32")
        );
    }
}

/// Keras's `to_snake_case`, which names the objects of a Keras 3 weights
/// file after their class: `SeparableConv2D` → `separable_conv2d`,
/// `PReLU` → `p_re_lu`.
pub fn snake_case(class: &str) -> String {
    // Step 1: an upper-case letter that starts a lower-case run gets a `_`
    // before it (`(.)([A-Z][a-z]+)` → `\1_\2`).
    let chars: Vec<char> = class.chars().collect();
    let mut step1 = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = c.is_ascii_uppercase()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase())
            && i > 0;
        if starts_word {
            step1.push('_');
        }
        step1.push(c);
    }
    // Step 2: a lower-case letter followed by an upper-case one gets a `_`
    // between them (`([a-z])([A-Z])` → `\1_\2`), then everything lower-case.
    let chars: Vec<char> = step1.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        out.push(c.to_ascii_lowercase());
        if c.is_ascii_lowercase() && chars.get(i + 1).is_some_and(|n| n.is_ascii_uppercase()) {
            out.push('_');
        }
    }
    out
}

#[cfg(test)]
mod snake_tests {
    use super::snake_case;

    #[test]
    fn matches_keras_object_names() {
        for (class, snake) in [
            ("SeparableConv2D", "separable_conv2d"),
            ("BatchNormalization", "batch_normalization"),
            ("DepthwiseConv2D", "depthwise_conv2d"),
            ("Conv2DTranspose", "conv2d_transpose"),
            ("LSTM", "lstm"),
            ("GRU", "gru"),
            ("PReLU", "p_re_lu"),
            ("Dense", "dense"),
            ("Functional", "functional"),
            ("TimeDistributed", "time_distributed"),
            ("MultiHeadAttention", "multi_head_attention"),
            ("InputLayer", "input_layer"),
        ] {
            assert_eq!(snake_case(class), snake, "{class}");
        }
    }
}

/// Lookups among a config's layers by name in constant time, for models of
/// any number of layers: its direct children, and, where built with
/// [`ConfigIndex::with_descendants`], the first layer of a name anywhere
/// below, found in the order [`LayerConfig::find`] searches.
#[derive(Debug)]
pub struct ConfigIndex<'c> {
    config: &'c LayerConfig,
    direct: std::collections::HashMap<&'c str, usize>,
    /// Name -> positions from a direct child down to the layer.
    below: std::collections::HashMap<&'c str, Vec<usize>>,
}

impl<'c> ConfigIndex<'c> {
    /// An index of the direct children.
    pub fn new(config: &'c LayerConfig) -> ConfigIndex<'c> {
        let mut direct = std::collections::HashMap::with_capacity(config.children.len());
        for (i, child) in config.children.iter().enumerate() {
            direct.entry(child.name.as_str()).or_insert(i);
        }
        ConfigIndex {
            config,
            direct,
            below: std::collections::HashMap::new(),
        }
    }

    /// An index of the direct children and of every layer below them.
    pub fn with_descendants(config: &'c LayerConfig) -> ConfigIndex<'c> {
        let mut index = ConfigIndex::new(config);
        // `find` looks at a node's direct children before searching each
        // child's subtree in turn: visiting in that order, the first
        // position recorded for a name is the one `find` returns.
        let mut stack: Vec<(&LayerConfig, Vec<usize>)> = vec![(config, Vec::new())];
        while let Some((node, at)) = stack.pop() {
            for (i, child) in node.children.iter().enumerate() {
                index.below.entry(child.name.as_str()).or_insert_with(|| {
                    let mut chain = at.clone();
                    chain.push(i);
                    chain
                });
            }
            for (i, child) in node.children.iter().enumerate().rev() {
                if !child.children.is_empty() {
                    let mut chain = at.clone();
                    chain.push(i);
                    stack.push((child, chain));
                }
            }
        }
        index
    }

    /// The direct child called `name` (the first, if several are).
    pub fn child(&self, name: &str) -> Option<&'c LayerConfig> {
        self.position(name).map(|i| &self.config.children[i])
    }

    /// The position of the direct child called `name`.
    pub fn position(&self, name: &str) -> Option<usize> {
        self.direct.get(name).copied()
    }

    /// What [`LayerConfig::find`] returns, with the position of each
    /// config of the chain among its siblings (needs [`Self::with_descendants`]).
    pub fn find(&self, name: &str) -> Option<(Vec<&'c LayerConfig>, &[usize])> {
        let positions = self.below.get(name)?;
        let mut chain = Vec::with_capacity(positions.len());
        let mut node = self.config;
        for &i in positions {
            node = &node.children[i];
            chain.push(node);
        }
        Some((chain, positions))
    }
}

#[cfg(test)]
mod index_tests {
    use super::*;

    #[test]
    fn the_index_finds_what_the_linear_search_finds() {
        let json = r#"{"class_name": "Functional", "config": {"name": "top", "layers": [
            {"class_name": "Functional", "name": "a", "config": {"name": "a", "layers": [
                {"class_name": "Functional", "name": "deep", "config": {"name": "deep", "layers": [
                    {"class_name": "Dense", "config": {"name": "x"}}]}},
                {"class_name": "Conv2D", "config": {"name": "y"}}]}},
            {"class_name": "Functional", "name": "b", "config": {"name": "b", "layers": [
                {"class_name": "Dense", "config": {"name": "x"}},
                {"class_name": "Dense", "config": {"name": "z"}}]}},
            {"class_name": "Dense", "config": {"name": "y"}},
            {"class_name": "Dense", "config": {"name": "y"}}
        ]}}"#;
        let root = LayerConfig::parse(json).unwrap();
        let index = ConfigIndex::with_descendants(&root);
        for name in ["a", "b", "x", "y", "z", "deep", "missing"] {
            let linear = root.find(name);
            let indexed = index.find(name);
            assert_eq!(
                linear
                    .as_ref()
                    .map(|c| c.iter().map(|l| &l.name).collect::<Vec<_>>()),
                indexed
                    .as_ref()
                    .map(|(c, _)| c.iter().map(|l| &l.name).collect::<Vec<_>>()),
                "{name}"
            );
            assert_eq!(root.position(name), index.position(name), "{name}");
            assert_eq!(
                root.child(name).map(|c| c as *const _),
                index.child(name).map(|c| c as *const _),
                "{name}"
            );
        }
        assert_eq!(index.find("x").unwrap().1, [0, 0, 0]);
        assert_eq!(index.position("y"), Some(2));
    }
}
