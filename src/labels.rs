//! What each weight of a layer is, per layer class, as data.
//!
//! Keras 2 files store a weight name (`conv2d/kernel:0`) from which the label
//! is read directly. Files that store only a position (`param_0`, `vars/2`)
//! need the class's table: the weights come in the order `layer.weights` gives
//! them, and some are present only when a config flag says so.

use std::borrow::Cow;
use std::collections::HashSet;
use std::sync::OnceLock;

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

/// When a layer's class may be guessed from its weights alone, for files
/// that do not record classes (weights-only saves).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guess {
    /// Its labels are never shared with a more likely class.
    Always,
    /// Its weights all have one shape (normalization parameters).
    SameShapes,
    /// Its labels match, and its kernel (or embedding table) has this rank
    /// (Conv2D's kernel is rank 4, Conv1D's rank 3).
    KernelRank(usize),
    /// A convolution of this kernel rank; told apart from its transpose
    /// only by the bias, whose length is the kernel's last dimension
    /// (a transpose's is the one before).
    Conv(usize),
    /// The transpose of [`Guess::Conv`].
    ConvTranspose(usize),
    /// A separable convolution of this kernel rank: a depthwise kernel
    /// (k..., in, m), a pointwise kernel (1..., in*m, out), a bias of out.
    Separable(usize),
    /// A depthwise convolution of this kernel rank, (k..., in, m), whose
    /// bias, where there is one, has in*m entries.
    Depthwise(usize),
    /// A recurrent layer whose kernel is this many times wider than its
    /// recurrent kernel is tall (LSTM 4 gates, GRU 3, SimpleRNN 1), with one
    /// bias per gate (a GRU with reset_after has two rows of them).
    Gates(usize),
    /// A cuDNN recurrent layer: gates as [`Guess::Gates`], and one bias
    /// vector holding input and recurrent biases, twice as long.
    CudnnGates(usize),
    /// Its weights look like another class's (GroupNormalization like
    /// LayerNormalization): never guessed.
    Never,
}

/// The label table of one layer class.
#[derive(Debug)]
pub struct ClassLabels {
    pub class: &'static str,
    pub slots: &'static [Slot],
    pub guess: Guess,
}

const fn row(class: &'static str, slots: &'static [Slot], guess: Guess) -> ClassLabels {
    ClassLabels {
        class,
        slots,
        guess,
    }
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
const CUDNN_RECURRENT: &[Slot] = &[always("kernel"), always("recurrent_kernel"), always("bias")];
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

/// Every class we can label by position, one row per class. Wrappers
/// (Bidirectional, TimeDistributed) take the table of the layer they wrap.
pub const TABLES: &[ClassLabels] = &[
    row("Conv1D", KERNEL_BIAS, Guess::Conv(3)),
    row("Conv2D", KERNEL_BIAS, Guess::Conv(4)),
    row("Conv3D", KERNEL_BIAS, Guess::Conv(5)),
    row("Conv1DTranspose", KERNEL_BIAS, Guess::ConvTranspose(3)),
    row("Conv2DTranspose", KERNEL_BIAS, Guess::ConvTranspose(4)),
    row("Conv3DTranspose", KERNEL_BIAS, Guess::ConvTranspose(5)),
    row("Dense", KERNEL_BIAS, Guess::KernelRank(2)),
    row("EinsumDense", KERNEL_BIAS, Guess::Never),
    row("DepthwiseConv1D", DEPTHWISE, Guess::Depthwise(3)),
    row("DepthwiseConv2D", DEPTHWISE, Guess::Depthwise(4)),
    row("SeparableConv1D", SEPARABLE, Guess::Separable(3)),
    row("SeparableConv2D", SEPARABLE, Guess::Separable(4)),
    // An embedding table is a matrix: a (1, 1, d) class token named
    // `..._embedding` is not one.
    row("Embedding", &[always("embeddings")], Guess::KernelRank(2)),
    row("BatchNormalization", BATCH_NORM, Guess::SameShapes),
    row("SyncBatchNormalization", BATCH_NORM, Guess::Never),
    // LayerNormalization and GroupNormalization hold the same two arrays:
    // both are candidates, so neither is ever the one guess.
    row(
        "LayerNormalization",
        NORMALIZATION_AFFINE,
        Guess::SameShapes,
    ),
    row(
        "GroupNormalization",
        NORMALIZATION_AFFINE,
        Guess::SameShapes,
    ),
    row("PReLU", &[always("alpha")], Guess::Always),
    row(
        "Normalization",
        &[always("mean"), always("variance"), always("count")],
        Guess::Always,
    ),
    row("LSTM", RECURRENT, Guess::Gates(4)),
    row("GRU", RECURRENT, Guess::Gates(3)),
    row("SimpleRNN", RECURRENT, Guess::Gates(1)),
    // tf.compat.v1.keras.layers: always a bias, of input and recurrent halves.
    row("CuDNNLSTM", CUDNN_RECURRENT, Guess::CudnnGates(4)),
    row("CuDNNGRU", CUDNN_RECURRENT, Guess::CudnnGates(3)),
    row("LSTMCell", RECURRENT, Guess::Never),
    row("GRUCell", RECURRENT, Guess::Never),
    row("SimpleRNNCell", RECURRENT, Guess::Never),
    row("MultiHeadAttention", MULTI_HEAD_ATTENTION, Guess::Always),
    // Dot-product attention: a learned scale, and a second one when scores
    // are concatenated (`score_mode` is a string; the count settles it).
    row(
        "Attention",
        &[
            when("use_scale", "scale"),
            when("score_mode", "concat_score_weight"),
        ],
        Guess::Never,
    ),
    row(
        "AdditiveAttention",
        &[when("use_scale", "scale")],
        Guess::Never,
    ),
    // Keras 3's grouped-query attention: the same four projections.
    row("GroupQueryAttention", MULTI_HEAD_ATTENTION, Guess::Never),
    // Convolutional recurrent layers: one cell, the RNN's three arrays with
    // convolution kernels.
    row("ConvLSTM1D", RECURRENT, Guess::Never),
    row("ConvLSTM2D", RECURRENT, Guess::Never),
    row("ConvLSTM3D", RECURRENT, Guess::Never),
    row("RMSNormalization", &[always("scale")], Guess::Never),
    // keras.applications ConvNeXt's per-channel scale, created unnamed:
    // Keras 3 calls it `variable`.
    row("LayerScale", &[always("variable")], Guess::Never),
    // Keras 1 names.
    row("Convolution1D", KERNEL_BIAS, Guess::Never),
    row("Convolution2D", KERNEL_BIAS, Guess::Never),
    row("Convolution3D", KERNEL_BIAS, Guess::Never),
    row("Deconvolution2D", KERNEL_BIAS, Guess::Never),
    row("SeparableConvolution2D", SEPARABLE, Guess::Never),
];

/// Labels that Keras versions spell differently for the same array, as
/// (class, stored label, our label): one name per array, whatever Keras
/// wrote the file (Keras 3 calls a DepthwiseConv2D's kernel `kernel`).
pub const LABEL_ALIASES: &[(&str, &str, &str)] = &[
    ("DepthwiseConv1D", "kernel", "depthwise_kernel"),
    ("DepthwiseConv2D", "kernel", "depthwise_kernel"),
];

/// Classes Keras records under two names, as (other name, our name): a
/// `.keras` config says GroupQueryAttention (its public name), a legacy
/// `.h5` config and the object keys the Python class GroupedQueryAttention.
pub const CLASS_ALIASES: &[(&str, &str)] = &[("GroupedQueryAttention", "GroupQueryAttention")];

/// The one name we give a class Keras records under several.
pub fn canonical_class(recorded: &str) -> &str {
    CLASS_ALIASES
        .iter()
        .find(|(other, _)| *other == recorded)
        .map_or(recorded, |(_, ours)| ours)
}

/// Gives a stored label of a layer of `class` the name we give it; a
/// label no alias names stays as it is.
pub fn canonicalize_label(class: &str, label: &mut Cow<'static, str>) {
    if let Some((_, _, ours)) = LABEL_ALIASES
        .iter()
        .find(|(c, from, _)| *c == class && *from == label.as_ref())
    {
        *label = Cow::Borrowed(ours);
    }
}

/// A label as a weight keeps it: a label of our tables is borrowed from
/// them, so that the labels of 200,000 weights are not 200,000 strings.
pub fn interned(label: &str) -> Cow<'static, str> {
    static KNOWN: OnceLock<HashSet<&'static str>> = OnceLock::new();
    let known = KNOWN.get_or_init(|| {
        TABLES
            .iter()
            .flat_map(|t| t.slots)
            .map(|slot| slot.label)
            .chain(LABEL_ALIASES.iter().map(|(_, _, to)| *to))
            .flat_map(|label| [label, label.rsplit('/').next().unwrap_or(label)])
            .collect()
    });
    match known.get(label) {
        Some(known) => Cow::Borrowed(known),
        None => Cow::Owned(label.to_string()),
    }
}

/// The label table of a class, if we have one.
pub fn table(class: &str) -> Option<&'static [Slot]> {
    TABLES.iter().find(|t| t.class == class).map(|t| t.slots)
}

/// The items present under every on/off choice of the flags that `fixed`
/// does not settle (flags are true by default in Keras, so a settled flag
/// is its config value).
fn flag_choices<T>(
    items: &[T],
    flag_of: impl Fn(&T) -> Option<&'static str>,
    fixed: impl Fn(&str) -> Option<bool>,
) -> Vec<Vec<&T>> {
    let mut open: Vec<&str> = items
        .iter()
        .filter_map(&flag_of)
        .filter(|f| fixed(f).is_none())
        .collect();
    open.sort_unstable();
    open.dedup();
    (0u32..(1 << open.len()))
        .map(|mask| {
            let is_on = |flag: &str| match fixed(flag) {
                Some(v) => v,
                None => mask & (1 << open.iter().position(|f| *f == flag).unwrap_or(0)) != 0,
            };
            items
                .iter()
                .filter(|item| flag_of(item).is_none_or(is_on))
                .collect()
        })
        .collect()
}

/// Every list of labels a table allows, one per on/off choice of its flags.
fn label_lists(slots: &[Slot]) -> Vec<Vec<&'static str>> {
    flag_choices(slots, |s| s.flag, |_| None)
        .into_iter()
        .map(|present| present.iter().map(|s| s.label).collect())
        .collect()
}

/// The class a layer's weights point to, for files that do not say: the
/// one class whose table gives exactly these labels and whose shapes fit.
/// `weights` are (label with sub-object, shape). (The readers use
/// [`class_candidates`] and decide on ties themselves.)
#[cfg(test)]
pub fn guess_class(weights: &[(String, Vec<usize>)]) -> Option<&'static str> {
    match class_candidates(weights)[..] {
        [one] => Some(one),
        _ => None,
    }
}

/// Every class whose table gives exactly these labels and whose shapes fit,
/// likeliest first (table order: Conv2D before Conv2DTranspose). A layer
/// whose weights come in `forward_*` and `backward_*` halves with the same
/// labels is a Bidirectional wrapper when its halves fit some class.
pub fn class_candidates(weights: &[(String, Vec<usize>)]) -> Vec<&'static str> {
    if let Some(forward) = bidirectional_half(weights) {
        return if class_candidates(&forward).is_empty() {
            Vec::new()
        } else {
            vec!["Bidirectional"]
        };
    }
    // Compared as sorted lists: a safetensors file keeps no weight order.
    let mut labels: Vec<&str> = weights.iter().map(|(l, _)| l.as_str()).collect();
    labels.sort_unstable();
    let shape_of = |label: &str| weights.iter().find(|(l, _)| l == label).map(|(_, s)| s);
    let fits = |guess: Guess| match guess {
        Guess::Always => true,
        Guess::SameShapes => weights.windows(2).all(|w| w[0].1 == w[1].1),
        Guess::Never => false,
        Guess::KernelRank(rank) => ["kernel", "depthwise_kernel", "embeddings"]
            .iter()
            .find_map(|k| shape_of(k))
            .is_some_and(|s| s.len() == rank),
        Guess::Conv(rank) | Guess::ConvTranspose(rank) => {
            let transposed = matches!(guess, Guess::ConvTranspose(_));
            match (shape_of("kernel"), shape_of("bias")) {
                (Some(k), Some(b)) if k.len() == rank && b.len() == 1 => {
                    let out = if transposed { k[rank - 2] } else { k[rank - 1] };
                    b[0] == out
                }
                (Some(k), None) => k.len() == rank,
                _ => false,
            }
        }
        Guess::Separable(rank) => match (
            shape_of("depthwise_kernel"),
            shape_of("pointwise_kernel"),
            shape_of("bias"),
        ) {
            (Some(d), Some(p), bias) if d.len() == rank && p.len() == rank => {
                d[rank - 2].checked_mul(d[rank - 1]) == Some(p[rank - 2])
                    && bias.is_none_or(|b| b[..] == [p[rank - 1]])
            }
            _ => false,
        },
        Guess::Depthwise(rank) => match (shape_of("depthwise_kernel"), shape_of("bias")) {
            (Some(k), bias) if k.len() == rank => bias
                .is_none_or(|b| b.len() == 1 && k[rank - 2].checked_mul(k[rank - 1]) == Some(b[0])),
            _ => false,
        },
        Guess::Gates(gates) | Guess::CudnnGates(gates) => {
            let cudnn = matches!(guess, Guess::CudnnGates(_));
            match (shape_of("kernel"), shape_of("recurrent_kernel")) {
                (Some(k), Some(r)) if k.len() == 2 && r.len() == 2 => {
                    let width = r[0].checked_mul(gates);
                    let bias_fits = match (shape_of("bias").map(Vec::as_slice), width) {
                        (None, _) => !cudnn,
                        (Some(&[n]), Some(w)) => Some(n) == w.checked_mul(1 + usize::from(cudnn)),
                        (Some(&[2, n]), Some(w)) => !cudnn && n == w,
                        _ => false,
                    };
                    // The kernel and the recurrent kernel are as wide.
                    width == Some(k[1]) && r[1] == k[1] && bias_fits
                }
                _ => false,
            }
        }
    };
    TABLES
        .iter()
        .filter(|t| {
            fits(t.guess)
                && label_lists(t.slots).into_iter().any(|mut list| {
                    list.sort_unstable();
                    list == labels
                })
        })
        .map(|t| t.class)
        .collect()
}

/// Labels for the weights of a layer that stores them by position and
/// whose class nothing records (a layer held by a subclassed Keras 3
/// model), from their shapes alone: the labels every fitting class's
/// table agrees on, and the class where only one fits. `None` when the
/// fitting classes label the weights differently, or none fits.
pub fn guess_by_position(
    shapes: &[Vec<usize>],
) -> Option<(Option<&'static str>, Vec<&'static str>)> {
    let mut found: Vec<(&'static str, Vec<&'static str>)> = Vec::new();
    for table in TABLES {
        // Classes never guessed, and those whose labels name sub-objects
        // (their shapes are not checked), are left to a config.
        if table.guess == Guess::Never || table.slots.iter().any(|s| s.label.contains('/')) {
            continue;
        }
        for labels in label_lists(table.slots) {
            if labels.len() != shapes.len() {
                continue;
            }
            let labelled: Vec<(String, Vec<usize>)> = labels
                .iter()
                .zip(shapes)
                .map(|(l, s)| (l.to_string(), s.clone()))
                .collect();
            if class_candidates(&labelled).contains(&table.class) {
                found.push((table.class, labels));
            }
        }
    }
    agreed(&found)
}

/// The class and labels of `found` where every entry has the same labels.
fn agreed(
    found: &[(&'static str, Vec<&'static str>)],
) -> Option<(Option<&'static str>, Vec<&'static str>)> {
    let (class, labels) = found.first()?.clone();
    found
        .iter()
        .all(|(_, l)| *l == labels)
        .then(|| ((found.len() == 1).then_some(class), labels))
}

/// Endings of layer names that say a class, as keras_hub and most model
/// code name their sub-layers (`feedforward_layer_norm`, `token_embedding`,
/// `intermediate_dense`).
const NAME_HINTS: &[(&str, &str)] = &[
    ("layer_norm", "LayerNormalization"),
    ("layernorm", "LayerNormalization"),
    ("layer_normalization", "LayerNormalization"),
    ("embedding", "Embedding"),
    ("embeddings", "Embedding"),
    ("dense", "Dense"),
    ("batch_norm", "BatchNormalization"),
    ("batchnorm", "BatchNormalization"),
    ("batch_normalization", "BatchNormalization"),
];

/// Like [`guess_by_position`], and where the fitting classes disagree,
/// the one class the first of `names` that has one ends with
/// (`token_embedding`: Embedding), if its table fits the shapes; the name
/// that decided, if one did.
pub fn guess_by_shapes_and_name<'n>(
    shapes: &[Vec<usize>],
    names: &[&'n str],
) -> Option<(Option<&'static str>, Vec<&'static str>, Option<&'n str>)> {
    if let Some((class, labels)) = guess_by_position(shapes) {
        return Some((class, labels, None));
    }
    let (name, hinted) = names
        .iter()
        .find_map(|name| Some((*name, name_hint(name)?)))?;
    let table = TABLES.iter().find(|t| t.class == hinted)?;
    let found: Vec<(&'static str, Vec<&'static str>)> = label_lists(table.slots)
        .into_iter()
        .filter(|labels| labels.len() == shapes.len())
        .filter(|labels| {
            let labelled: Vec<(String, Vec<usize>)> = labels
                .iter()
                .zip(shapes)
                .map(|(l, s)| (l.to_string(), s.clone()))
                .collect();
            class_candidates(&labelled).contains(&table.class)
        })
        .map(|labels| (table.class, labels))
        .collect();
    let (_, labels) = agreed(&found)?;
    Some((Some(hinted), labels, Some(name)))
}

/// A name without the `_<n>` Keras adds to make it unique (`dense_3` ->
/// `dense`).
pub fn without_counter(name: &str) -> &str {
    match name.rsplit_once('_') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => name,
    }
}

/// The class a layer's name ends with, by [`NAME_HINTS`].
fn name_hint(name: &str) -> Option<&'static str> {
    let name = name.trim_start_matches('_').to_ascii_lowercase();
    let base = without_counter(&name);
    NAME_HINTS
        .iter()
        .find(|(ending, _)| base == *ending || base.ends_with(&format!("_{ending}")))
        .map(|(_, class)| *class)
}

/// The forward half of a layer's weights, labels without the direction,
/// when the layer is split into `forward_*` and `backward_*` halves that
/// hold the same labels.
fn bidirectional_half(weights: &[(String, Vec<usize>)]) -> Option<Vec<(String, Vec<usize>)>> {
    let mut halves: [Vec<(String, Vec<usize>)>; 2] = Default::default();
    for (label, shape) in weights {
        let (direction, rest) = label.split_once('/')?;
        let half = if direction.starts_with("forward_") {
            0
        } else if direction.starts_with("backward_") {
            1
        } else {
            return None;
        };
        halves[half].push((rest.to_string(), shape.clone()));
    }
    let [forward, backward] = halves;
    let sorted = |half: &[(String, Vec<usize>)]| {
        let mut h = half.to_vec();
        h.sort();
        h.into_iter().map(|(l, _)| l).collect::<Vec<_>>()
    };
    (!forward.is_empty() && sorted(&forward) == sorted(&backward)).then_some(forward)
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
    positional(&slots_of(class, config)?, config, count)
}

/// Labels by position for the arrays of one sub-object of a layer of
/// `class`, the one its table names `sub` (`query` in MultiHeadAttention's
/// `query/kernel`): Keras 3 files keep those arrays in the sub-object.
/// `None` where the table names no such sub-object.
pub fn below(
    class: &str,
    config: Option<&Value>,
    sub: &str,
    count: usize,
) -> Option<Vec<Option<PositionalLabel>>> {
    let slots: Vec<(String, Slot)> = slots_of(class, config)?
        .into_iter()
        .filter_map(|(prefix, slot)| {
            let label = slot.label.strip_prefix(sub)?.strip_prefix('/')?;
            Some((prefix, Slot { label, ..slot }))
        })
        .collect();
    if slots.is_empty() {
        return None;
    }
    positional(&slots, config, count)
}

/// Where a class's table first names the sub-object `sub`, for putting
/// sub-objects in Keras's order; past every named one otherwise.
pub fn sub_object_rank(class: &str, sub: &str) -> usize {
    table(class)
        .and_then(|slots| {
            slots.iter().position(|s| {
                s.label
                    .strip_prefix(sub)
                    .is_some_and(|rest| rest.starts_with('/'))
            })
        })
        .unwrap_or(usize::MAX)
}

fn positional(
    slots: &[(String, Slot)],
    config: Option<&Value>,
    count: usize,
) -> Option<Vec<Option<PositionalLabel>>> {
    let flag_value = |flag: &str| -> Option<bool> { config?.get(flag)?.as_bool() };
    // Every on/off combination of the flags the config does not settle.
    let candidates: Vec<Vec<PositionalLabel>> = flag_choices(slots, |(_, s)| s.flag, flag_value)
        .into_iter()
        .filter(|present| present.len() == count)
        .map(|present| {
            present
                .iter()
                .map(|(prefix, s)| split_label(prefix, s.label))
                .collect()
        })
        .collect();
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

    #[test]
    fn table_labels_are_borrowed_and_others_copied() {
        for label in [
            "kernel",
            "depthwise_kernel",
            "moving_variance",
            "query/kernel",
        ] {
            let interned = interned(label);
            assert!(matches!(interned, Cow::Borrowed(_)), "{label}");
            assert_eq!(interned, label);
        }
        let unknown = interned("my_own_weight");
        assert!(matches!(unknown, Cow::Owned(_)));
        assert_eq!(unknown, "my_own_weight");
    }
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
    fn classes_are_guessed_only_when_one_fits() {
        let w = |pairs: &[(&str, &[usize])]| -> Vec<(String, Vec<usize>)> {
            pairs
                .iter()
                .map(|(l, s)| (l.to_string(), s.to_vec()))
                .collect()
        };
        let separable = w(&[
            ("depthwise_kernel", &[5, 5, 3, 1]),
            ("pointwise_kernel", &[1, 1, 3, 16]),
            ("bias", &[16]),
        ]);
        assert_eq!(guess_class(&separable), Some("SeparableConv2D"));
        let conv = w(&[("kernel", &[5, 5, 3, 16]), ("bias", &[16])]);
        assert_eq!(guess_class(&conv), Some("Conv2D"));
        let transpose = w(&[("kernel", &[3, 3, 8, 4]), ("bias", &[8])]);
        assert_eq!(guess_class(&transpose), Some("Conv2DTranspose"));
        // Without a bias, or with as many inputs as outputs, either could be.
        assert_eq!(guess_class(&w(&[("kernel", &[5, 5, 3, 16])])), None);
        let square = w(&[("kernel", &[3, 3, 8, 8]), ("bias", &[8])]);
        assert_eq!(guess_class(&square), None);
        assert_eq!(
            guess_class(&w(&[("kernel", &[8, 4]), ("bias", &[4])])),
            Some("Dense")
        );
        let gru = w(&[
            ("kernel", &[6, 15]),
            ("recurrent_kernel", &[5, 15]),
            ("bias", &[2, 15]),
        ]);
        assert_eq!(guess_class(&gru), Some("GRU"));
        // gamma and beta alone could be LayerNormalization or GroupNormalization.
        assert_eq!(guess_class(&w(&[("gamma", &[4]), ("beta", &[4])])), None);
        assert_eq!(guess_class(&w(&[("kernel", &[2, 2, 2, 2, 2, 2])])), None);
        // Without a bias, both convolutions remain, likeliest first.
        assert_eq!(
            class_candidates(&w(&[("kernel", &[1, 1, 16, 32])])),
            ["Conv2D", "Conv2DTranspose"]
        );
        assert_eq!(
            class_candidates(&w(&[("gamma", &[4]), ("beta", &[4])])),
            ["LayerNormalization", "GroupNormalization"]
        );
    }

    #[test]
    fn weights_stored_by_position_are_labelled_from_shapes_where_one_reading_fits() {
        let shapes = |list: &[&[usize]]| list.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
        // A 1x1 convolution to one channel: not depthwise (bias 1, not 4).
        assert_eq!(
            guess_by_position(&shapes(&[&[1, 1, 4, 1], &[1]])),
            Some((Some("Conv2D"), vec!["kernel", "bias"]))
        );
        assert_eq!(
            guess_by_position(&shapes(&[&[3, 3, 4, 2], &[8]])),
            Some((Some("DepthwiseConv2D"), vec!["depthwise_kernel", "bias"]))
        );
        assert_eq!(
            guess_by_position(&shapes(&[&[3, 2], &[2]])),
            Some((Some("Dense"), vec!["kernel", "bias"]))
        );
        assert_eq!(
            guess_by_position(&shapes(&[&[4], &[4], &[4], &[4]])),
            Some((
                Some("BatchNormalization"),
                vec!["gamma", "beta", "moving_mean", "moving_variance"]
            ))
        );
        // Gamma or beta? The shapes cannot say.
        assert_eq!(guess_by_position(&shapes(&[&[4], &[4], &[4]])), None);
        // Layer or group normalization (gamma, beta), or a BatchNorm with
        // neither (moving statistics only)?
        assert_eq!(guess_by_position(&shapes(&[&[4], &[4]])), None);
        // Conv1D: its transpose would have a bias of 3, a depthwise one 12.
        assert_eq!(
            guess_by_position(&shapes(&[&[3, 3, 4], &[4]])),
            Some((Some("Conv1D"), vec!["kernel", "bias"]))
        );
    }

    #[test]
    fn cudnn_layers_are_told_from_plain_ones_by_the_bias() {
        let w = |bias: &[usize]| {
            vec![
                ("kernel".to_string(), vec![4, 20]),
                ("recurrent_kernel".to_string(), vec![5, 20]),
                ("bias".to_string(), bias.to_vec()),
            ]
        };
        assert_eq!(guess_class(&w(&[20])), Some("LSTM"));
        assert_eq!(guess_class(&w(&[40])), Some("CuDNNLSTM"));
        let gru = |bias: &[usize]| {
            vec![
                ("kernel".to_string(), vec![4, 15]),
                ("recurrent_kernel".to_string(), vec![5, 15]),
                ("bias".to_string(), bias.to_vec()),
            ]
        };
        assert_eq!(guess_class(&gru(&[2, 15])), Some("GRU"));
        assert_eq!(guess_class(&gru(&[30])), Some("CuDNNGRU"));
        assert_eq!(guess_class(&gru(&[31])), None);
    }

    #[test]
    fn halves_named_forward_and_backward_are_a_bidirectional_layer() {
        let half = |d: &str| {
            [
                ("kernel", vec![4, 20]),
                ("recurrent_kernel", vec![5, 20]),
                ("bias", vec![20]),
            ]
            .map(|(l, s)| (format!("{d}_lstm/{l}"), s))
        };
        let mut both: Vec<_> = half("forward").into();
        both.extend(half("backward"));
        assert_eq!(class_candidates(&both), ["Bidirectional"]);
        both.pop();
        assert!(class_candidates(&both).is_empty(), "halves must match");
    }

    /// Shapes as Keras builds them: a convolution's kernel is (k..., in,
    /// out) and its bias (out,); a transpose's kernel is (k..., out, in).
    #[test]
    fn three_dimensional_convolutions_are_told_from_their_transposes_by_the_bias() {
        let w = |kernel: &[usize], bias: &[usize]| {
            vec![
                ("kernel".to_string(), kernel.to_vec()),
                ("bias".to_string(), bias.to_vec()),
            ]
        };
        // Conv3D(filters=8) on 4 channels, Conv3DTranspose(filters=8) on 4.
        assert_eq!(class_candidates(&w(&[3, 3, 3, 4, 8], &[8])), ["Conv3D"]);
        assert_eq!(
            class_candidates(&w(&[3, 3, 3, 8, 4], &[8])),
            ["Conv3DTranspose"]
        );
    }

    #[test]
    fn a_depthwise_kernel_alone_fits_only_the_depthwise_class_of_its_rank() {
        // DepthwiseConv2D(use_bias=False): kernel (kh, kw, in, multiplier).
        let kernel = |shape: &[usize]| vec![("depthwise_kernel".to_string(), shape.to_vec())];
        assert_eq!(
            class_candidates(&kernel(&[3, 3, 4, 2])),
            ["DepthwiseConv2D"]
        );
        assert_eq!(class_candidates(&kernel(&[3, 4, 2])), ["DepthwiseConv1D"]);
    }

    #[test]
    fn recurrent_layers_without_a_bias_are_told_apart_by_their_gates() {
        // LSTM(5, use_bias=False) on 4 inputs: kernel (4, 4*5), recurrent
        // kernel (5, 4*5); a GRU's would be 3*5 wide, a SimpleRNN's 5.
        let w = |kernel: &[usize], recurrent: &[usize]| {
            vec![
                ("kernel".to_string(), kernel.to_vec()),
                ("recurrent_kernel".to_string(), recurrent.to_vec()),
            ]
        };
        assert_eq!(guess_class(&w(&[4, 20], &[5, 20])), Some("LSTM"));
        assert_eq!(guess_class(&w(&[4, 15], &[5, 15])), Some("GRU"));
        assert_eq!(guess_class(&w(&[4, 5], &[5, 5])), Some("SimpleRNN"));
        // Gates are counted on matrices only: a kernel or recurrent kernel
        // of another rank is no recurrent layer's, whatever its widths.
        let mut odd = w(&[4, 20, 1], &[5, 20]);
        odd.push(("bias".to_string(), vec![20]));
        assert!(class_candidates(&odd).is_empty());
        let mut odd = w(&[4, 20], &[5, 20, 1]);
        odd.push(("bias".to_string(), vec![20]));
        assert!(class_candidates(&odd).is_empty());
        // The recurrent kernel is as wide as the kernel.
        assert_eq!(guess_class(&w(&[4, 20], &[5, 12])), None);
    }

    #[test]
    fn nested_wrappers_join_their_sub_objects_with_a_slash() {
        let inner = json!({"layer": {"class_name": "LSTM", "config": {"name": "lstm"}}});
        let outer = json!({"layer": {"class_name": "Bidirectional", "config": {
            "name": "bi", "layer": inner["layer"].clone()}}});
        let l = labels("Bidirectional", Some(outer), 12);
        assert_eq!(l[0], "forward_bi/forward_lstm/kernel");
        assert_eq!(l[11], "backward_bi/backward_lstm/bias");
    }

    #[test]
    fn every_on_off_choice_of_the_open_flags_is_listed_once() {
        // No table has more than two flags; the choices must not depend on
        // that. Three open flags give 2^3 choices, the settled one none.
        let items = [Some("a"), Some("b"), Some("c"), None, Some("d")];
        let fixed = |f: &str| (f == "d").then_some(false);
        let mut choices: Vec<Vec<Option<&str>>> = flag_choices(&items, |i| *i, fixed)
            .into_iter()
            .map(|c| c.into_iter().copied().collect())
            .collect();
        choices.sort();
        let mut want = Vec::new();
        for mask in 0..8 {
            let on = |bit: usize| mask & (1 << bit) != 0;
            let mut c = Vec::new();
            for (bit, flag) in ["a", "b", "c"].iter().enumerate() {
                if on(bit) {
                    c.push(Some(*flag));
                }
            }
            c.push(None);
            want.push(c);
        }
        want.sort();
        assert_eq!(choices, want);
    }

    #[test]
    fn a_separable_convolution_needs_both_its_inner_width_and_its_bias_to_agree() {
        // SeparableConv2D(16) on 3 channels, depth multiplier 1: depthwise
        // (5, 5, 3, 1), pointwise (1, 1, 3*1, 16), bias (16,).
        let w = |pointwise: &[usize], bias: usize| {
            vec![
                ("depthwise_kernel".to_string(), vec![5, 5, 3, 1]),
                ("pointwise_kernel".to_string(), pointwise.to_vec()),
                ("bias".to_string(), vec![bias]),
            ]
        };
        assert_eq!(
            class_candidates(&w(&[1, 1, 3, 16], 16)),
            ["SeparableConv2D"]
        );
        assert!(class_candidates(&w(&[1, 1, 3, 16], 8)).is_empty());
        assert!(class_candidates(&w(&[1, 1, 4, 16], 16)).is_empty());
    }

    #[test]
    fn impossible_counts_and_unknown_classes_give_none() {
        assert!(by_position("Dense", None, 5).is_none());
        assert!(by_position("MyCustomLayer", None, 1).is_none());
    }
}
