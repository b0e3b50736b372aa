//! What each weight of a layer is, per layer class, as data.
//!
//! Keras 2 files store a weight name (`conv2d/kernel:0`) from which the label
//! is read directly. Files that store only a position (`param_0`, `vars/2`)
//! need the class's table: the weights come in the order `layer.weights` gives
//! them, and some are present only when a config flag says so.

use serde_json::Value;

/// One weight slot in a layer's `weights` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The label, with a sub-object first where the layer has several
    /// weights of the same kind (`query/kernel` in MultiHeadAttention).
    pub label: &'static str,
    /// The config flag that must be true for the slot to exist (flags default
    /// to true in Keras); `None` for a weight that is always there.
    pub flag: Option<&'static str>,
}

const fn always(label: &'static str) -> Slot {
    Slot { label, flag: None }
}

const fn when(flag: &'static str, label: &'static str) -> Slot {
    Slot {
        label,
        flag: Some(flag),
    }
}

/// The label table of one family of layer classes.
pub struct ClassTable {
    pub classes: &'static [&'static str],
    pub slots: &'static [Slot],
}

const KERNEL_BIAS: &[Slot] = &[always("kernel"), when("use_bias", "bias")];
const DEPTHWISE: &[Slot] = &[always("depthwise_kernel"), when("use_bias", "bias")];
const SEPARABLE: &[Slot] = &[
    always("depthwise_kernel"),
    always("pointwise_kernel"),
    when("use_bias", "bias"),
];
const NORMALIZATION_AFFINE: &[Slot] = &[when("scale", "gamma"), when("center", "beta")];
const BATCH_NORM: &[Slot] = &[
    when("scale", "gamma"),
    when("center", "beta"),
    always("moving_mean"),
    always("moving_variance"),
];
const RECURRENT: &[Slot] = &[
    always("kernel"),
    always("recurrent_kernel"),
    when("use_bias", "bias"),
];
const MULTI_HEAD_ATTENTION: &[Slot] = &[
    always("query/kernel"),
    when("use_bias", "query/bias"),
    always("key/kernel"),
    when("use_bias", "key/bias"),
    always("value/kernel"),
    when("use_bias", "value/bias"),
    always("attention_output/kernel"),
    when("use_bias", "attention_output/bias"),
];

/// Every class we can label by position. Wrappers (Bidirectional,
/// TimeDistributed) take the table of the layer they wrap.
pub const TABLES: &[ClassTable] = &[
    ClassTable {
        classes: &[
            "Conv1D",
            "Conv2D",
            "Conv3D",
            "Conv1DTranspose",
            "Conv2DTranspose",
            "Conv3DTranspose",
            "Convolution1D",
            "Convolution2D",
            "Convolution3D",
            "Deconvolution2D",
            "Dense",
            "EinsumDense",
        ],
        slots: KERNEL_BIAS,
    },
    ClassTable {
        classes: &["DepthwiseConv1D", "DepthwiseConv2D"],
        slots: DEPTHWISE,
    },
    ClassTable {
        classes: &[
            "SeparableConv1D",
            "SeparableConv2D",
            "SeparableConvolution1D",
            "SeparableConvolution2D",
        ],
        slots: SEPARABLE,
    },
    ClassTable {
        classes: &["Embedding"],
        slots: &[always("embeddings")],
    },
    ClassTable {
        classes: &["BatchNormalization", "SyncBatchNormalization"],
        slots: BATCH_NORM,
    },
    ClassTable {
        classes: &["LayerNormalization", "GroupNormalization"],
        slots: NORMALIZATION_AFFINE,
    },
    ClassTable {
        classes: &["PReLU"],
        slots: &[always("alpha")],
    },
    ClassTable {
        classes: &["Normalization"],
        slots: &[always("mean"), always("variance"), always("count")],
    },
    ClassTable {
        classes: &[
            "LSTM",
            "GRU",
            "SimpleRNN",
            "LSTMCell",
            "GRUCell",
            "SimpleRNNCell",
        ],
        slots: RECURRENT,
    },
    ClassTable {
        classes: &["MultiHeadAttention"],
        slots: MULTI_HEAD_ATTENTION,
    },
];

/// The label table of a class, if we have one.
pub fn table(class: &str) -> Option<&'static [Slot]> {
    TABLES
        .iter()
        .find(|t| t.classes.contains(&class))
        .map(|t| t.slots)
}

/// A label found by position: the sub-object path and the label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionalLabel {
    pub sub_path: Vec<String>,
    pub label: String,
}

/// The slots a layer of `class` has, expanding wrappers; `None` for a class
/// without a table. `config` is the layer's Keras config (`{"name": ..,
/// "use_bias": ..}`) when the file has one.
fn slots_of(class: &str, config: Option<&Value>) -> Option<Vec<(String, Slot)>> {
    let inner = || {
        let layer = config?.get("layer")?;
        let class = layer.get("class_name")?.as_str()?;
        Some((class.to_string(), layer.get("config")))
    };
    match class {
        "TimeDistributed" => {
            let (class, cfg) = inner()?;
            slots_of(&class, cfg)
        }
        "Bidirectional" => {
            let (class, cfg) = inner()?;
            let name = cfg
                .and_then(|c| c.get("name"))
                .and_then(Value::as_str)
                .unwrap_or("layer");
            let slots = slots_of(&class, cfg)?;
            let mut both = Vec::new();
            for direction in ["forward", "backward"] {
                for (prefix, slot) in &slots {
                    let sub = format!("{direction}_{name}{}", slash(prefix));
                    both.push((sub, *slot));
                }
            }
            Some(both)
        }
        _ => Some(table(class)?.iter().map(|s| (String::new(), *s)).collect()),
    }
}

fn slash(prefix: &str) -> String {
    if prefix.is_empty() {
        String::new()
    } else {
        format!("/{prefix}")
    }
}

/// Labels for `count` weights of a layer of `class`, by position.
///
/// Each entry is `Some` where the label is certain and `None` where it
/// depends on a flag the file does not record (a BatchNormalization with
/// three weights and no config: gamma or beta?). Returns `None` for a class
/// without a table, or a count no combination of flags explains.
pub fn by_position(
    class: &str,
    config: Option<&Value>,
    count: usize,
) -> Option<Vec<Option<PositionalLabel>>> {
    let slots = slots_of(class, config)?;
    let mut flags: Vec<&str> = slots.iter().filter_map(|(_, s)| s.flag).collect();
    flags.sort_unstable();
    flags.dedup();
    let flag_value = |flag: &str| -> Option<bool> { config?.get(flag)?.as_bool() };
    // Try every on/off combination of the flags the config does not settle.
    let open: Vec<&str> = flags
        .iter()
        .copied()
        .filter(|f| flag_value(f).is_none())
        .collect();
    let mut candidates: Vec<Vec<PositionalLabel>> = Vec::new();
    for mask in 0u32..(1 << open.len()) {
        let is_on = |flag: &str| match flag_value(flag) {
            Some(v) => v,
            None => mask & (1 << open.iter().position(|f| *f == flag).unwrap_or(0)) != 0,
        };
        let present: Vec<PositionalLabel> = slots
            .iter()
            .filter(|(_, s)| s.flag.is_none_or(is_on))
            .map(|(prefix, s)| split_label(prefix, s.label))
            .collect();
        if present.len() == count {
            candidates.push(present);
        }
    }
    let first = candidates.first()?;
    Some(
        (0..count)
            .map(|i| {
                let label = &first[i];
                candidates
                    .iter()
                    .all(|c| &c[i] == label)
                    .then(|| label.clone())
            })
            .collect(),
    )
}

fn split_label(prefix: &str, label: &str) -> PositionalLabel {
    let mut parts: Vec<String> = prefix
        .split('/')
        .chain(label.split('/'))
        .filter(|p| !p.is_empty())
        .map(str::to_string)
        .collect();
    let label = parts.pop().unwrap_or_default();
    PositionalLabel {
        sub_path: parts,
        label,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(class: &str, config: Option<Value>, n: usize) -> Vec<String> {
        by_position(class, config.as_ref(), n)
            .unwrap()
            .into_iter()
            .map(|l| match l {
                Some(l) if l.sub_path.is_empty() => l.label,
                Some(l) => format!("{}/{}", l.sub_path.join("/"), l.label),
                None => "?".into(),
            })
            .collect()
    }

    #[test]
    fn separable_conv_has_three_weights() {
        assert_eq!(
            labels("SeparableConv2D", None, 3),
            ["depthwise_kernel", "pointwise_kernel", "bias"]
        );
        assert_eq!(
            labels("SeparableConv2D", None, 2),
            ["depthwise_kernel", "pointwise_kernel"]
        );
    }

    #[test]
    fn batch_norm_with_three_weights_is_ambiguous_without_config() {
        assert_eq!(
            labels("BatchNormalization", None, 3),
            ["?", "moving_mean", "moving_variance"]
        );
        assert_eq!(
            labels("BatchNormalization", Some(json!({"center": false})), 3),
            ["gamma", "moving_mean", "moving_variance"]
        );
        assert_eq!(
            labels("BatchNormalization", Some(json!({"scale": false})), 3),
            ["beta", "moving_mean", "moving_variance"]
        );
    }

    #[test]
    fn wrappers_take_the_wrapped_table() {
        let lstm = json!({"layer": {"class_name": "LSTM", "config": {"name": "lstm"}}});
        assert_eq!(
            labels("Bidirectional", Some(lstm), 6),
            [
                "forward_lstm/kernel",
                "forward_lstm/recurrent_kernel",
                "forward_lstm/bias",
                "backward_lstm/kernel",
                "backward_lstm/recurrent_kernel",
                "backward_lstm/bias"
            ]
        );
        let dense = json!({"layer": {"class_name": "Dense", "config": {"use_bias": false}}});
        assert_eq!(labels("TimeDistributed", Some(dense), 1), ["kernel"]);
    }

    #[test]
    fn multi_head_attention_names_its_projections() {
        let l = labels("MultiHeadAttention", None, 8);
        assert_eq!(l[0], "query/kernel");
        assert_eq!(l[7], "attention_output/bias");
        assert_eq!(
            labels("MultiHeadAttention", None, 4)[3],
            "attention_output/kernel"
        );
    }

    #[test]
    fn impossible_counts_and_unknown_classes_give_none() {
        assert!(by_position("Dense", None, 5).is_none());
        assert!(by_position("MyCustomLayer", None, 1).is_none());
    }
}
