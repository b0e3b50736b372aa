//! The PyTorch layout: per layer class, which Keras weight becomes which
//! PyTorch parameter, and how its axes move. One rule per class, as data.
//!
//! Names follow torch.nn (`weight`, `bias`, `running_mean`, `weight_ih_l0`)
//! and, for SeparableConv, the timm / efficientdet-pytorch convention
//! (`conv_dw.weight`, `conv_pw.weight`, `conv_pw.bias`).

use serde_json::{Map, Value};

use crate::export::transform::{shape_after, Step};
use crate::labels;
use crate::model::{Layer, Weight};

/// How a Keras array becomes a PyTorch one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Axes {
    /// Unchanged.
    Same,
    /// Reordered axes: output axis `i` is Keras axis `p[i]`.
    Permute(&'static [usize]),
    /// A depthwise kernel (k..., in, m) becomes a grouped convolution's
    /// (in*m, 1, k...): channel-major, then the multiplier.
    Depthwise,
    /// GRU kernels: gate blocks [z, r, h] become [r, z, n], then transposed.
    GruKernel,
    /// One row of a GRU reset_after bias (2, 3u), gates reordered.
    GruBiasRow(usize),
    /// A cuDNN layer's kernel or recurrent kernel (rows, gates*u): each
    /// gate's (rows, u) block holds cuDNN's (u, rows) matrix in its bytes
    /// (Keras hands the blocks to cuDNN untransposed). GRU gates [z, r, h]
    /// are reordered to PyTorch's [r, z, n].
    Cudnn { gates: usize, gru: bool },
    /// Half `half` (0 input, 1 recurrent) of a cuDNN bias (2*gates*u,).
    CudnnBias {
        gates: usize,
        half: usize,
        gru: bool,
    },
}

/// A Keras weight and the PyTorch parameter it becomes.
struct Param {
    label: &'static str,
    torch: &'static str,
    axes: Axes,
}

/// A parameter PyTorch needs that Keras does not store: filled with
/// `value`, shaped like the weight labelled `like`.
struct Fill {
    torch: &'static str,
    value: f64,
    like: &'static str,
    /// Only when the Keras weight with this label is absent (BatchNorm
    /// without `center` still needs a zero bias in PyTorch).
    unless: Option<&'static str>,
}

struct Rule {
    classes: &'static [&'static str],
    params: &'static [Param],
    fills: &'static [Fill],
}

const fn p(label: &'static str, torch: &'static str, axes: Axes) -> Param {
    Param { label, torch, axes }
}

const CONV1D: &[usize] = &[2, 1, 0];
const CONV2D: &[usize] = &[3, 2, 0, 1];
const CONV3D: &[usize] = &[4, 3, 0, 1, 2];
const TRANSPOSE: &[usize] = &[1, 0];
const CUDNN_LSTM: Axes = Axes::Cudnn {
    gates: 4,
    gru: false,
};
const CUDNN_GRU: Axes = Axes::Cudnn {
    gates: 3,
    gru: true,
};

const fn cudnn_bias(gates: usize, half: usize) -> Axes {
    Axes::CudnnBias {
        gates,
        half,
        gru: gates == 3,
    }
}

const NORM_FILLS: &[Fill] = &[
    Fill {
        torch: "weight",
        value: 1.0,
        like: "moving_mean",
        unless: Some("gamma"),
    },
    Fill {
        torch: "bias",
        value: 0.0,
        like: "moving_mean",
        unless: Some("beta"),
    },
];
const LAYER_NORM_FILLS: &[Fill] = &[
    Fill {
        torch: "weight",
        value: 1.0,
        like: "beta",
        unless: Some("gamma"),
    },
    Fill {
        torch: "bias",
        value: 0.0,
        like: "gamma",
        unless: Some("beta"),
    },
];
/// PyTorch RNNs have a second bias Keras folds into the first.
const RNN_FILLS: &[Fill] = &[Fill {
    torch: "bias_hh_l0",
    value: 0.0,
    like: "bias",
    unless: None,
}];

const RULES: &[Rule] = &[
    Rule {
        classes: &["Conv1D", "Conv1DTranspose"],
        params: &[
            p("kernel", "weight", Axes::Permute(CONV1D)),
            p("bias", "bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        // Conv2DTranspose kernels are (kh, kw, out, in); ConvTranspose2d
        // wants (in, out, kh, kw): the same permutation.
        classes: &["Conv2D", "Conv2DTranspose"],
        params: &[
            p("kernel", "weight", Axes::Permute(CONV2D)),
            p("bias", "bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["Conv3D", "Conv3DTranspose"],
        params: &[
            p("kernel", "weight", Axes::Permute(CONV3D)),
            p("bias", "bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["DepthwiseConv1D", "DepthwiseConv2D"],
        params: &[
            p("depthwise_kernel", "weight", Axes::Depthwise),
            p("bias", "bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["SeparableConv1D"],
        params: &[
            p("depthwise_kernel", "conv_dw.weight", Axes::Depthwise),
            p("pointwise_kernel", "conv_pw.weight", Axes::Permute(CONV1D)),
            p("bias", "conv_pw.bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["SeparableConv2D"],
        params: &[
            p("depthwise_kernel", "conv_dw.weight", Axes::Depthwise),
            p("pointwise_kernel", "conv_pw.weight", Axes::Permute(CONV2D)),
            p("bias", "conv_pw.bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["Dense"],
        params: &[
            p("kernel", "weight", Axes::Permute(TRANSPOSE)),
            p("bias", "bias", Axes::Same),
        ],
        fills: &[],
    },
    Rule {
        classes: &["Embedding"],
        params: &[p("embeddings", "weight", Axes::Same)],
        fills: &[],
    },
    Rule {
        classes: &["BatchNormalization", "SyncBatchNormalization"],
        params: &[
            p("gamma", "weight", Axes::Same),
            p("beta", "bias", Axes::Same),
            p("moving_mean", "running_mean", Axes::Same),
            p("moving_variance", "running_var", Axes::Same),
        ],
        fills: NORM_FILLS,
    },
    Rule {
        classes: &["LayerNormalization", "GroupNormalization"],
        params: &[
            p("gamma", "weight", Axes::Same),
            p("beta", "bias", Axes::Same),
        ],
        fills: LAYER_NORM_FILLS,
    },
    Rule {
        // LSTM gates are i, f, c, o in both.
        classes: &["LSTM", "SimpleRNN"],
        params: &[
            p("kernel", "weight_ih_l0", Axes::Permute(TRANSPOSE)),
            p("recurrent_kernel", "weight_hh_l0", Axes::Permute(TRANSPOSE)),
            p("bias", "bias_ih_l0", Axes::Same),
        ],
        fills: RNN_FILLS,
    },
    Rule {
        classes: &["GRU"],
        params: &[
            p("kernel", "weight_ih_l0", Axes::GruKernel),
            p("recurrent_kernel", "weight_hh_l0", Axes::GruKernel),
            p("bias", "bias_ih_l0", Axes::GruBiasRow(0)),
            p("bias", "bias_hh_l0", Axes::GruBiasRow(1)),
        ],
        fills: &[],
    },
    Rule {
        classes: &["CuDNNLSTM"],
        params: &[
            p("kernel", "weight_ih_l0", CUDNN_LSTM),
            p("recurrent_kernel", "weight_hh_l0", CUDNN_LSTM),
            p("bias", "bias_ih_l0", cudnn_bias(4, 0)),
            p("bias", "bias_hh_l0", cudnn_bias(4, 1)),
        ],
        fills: &[],
    },
    Rule {
        classes: &["CuDNNGRU"],
        params: &[
            p("kernel", "weight_ih_l0", CUDNN_GRU),
            p("recurrent_kernel", "weight_hh_l0", CUDNN_GRU),
            p("bias", "bias_ih_l0", cudnn_bias(3, 0)),
            p("bias", "bias_hh_l0", cudnn_bias(3, 1)),
        ],
        fills: &[],
    },
    Rule {
        classes: &["PReLU"],
        params: &[p("alpha", "weight", Axes::Same)],
        fills: &[],
    },
    Rule {
        // No torch.nn module: kept as buffers under their Keras names.
        classes: &["Normalization"],
        params: &[
            p("mean", "mean", Axes::Same),
            p("variance", "variance", Axes::Same),
            p("count", "count", Axes::Same),
        ],
        fills: &[],
    },
];

/// Layer options PyTorch modules take as arguments, copied from the config.
pub(crate) const OPTION_KEYS: &[&str] = &[
    "strides",
    "padding",
    "dilation_rate",
    "groups",
    "depth_multiplier",
    "data_format",
    "output_padding",
    "epsilon",
    "momentum",
    "reset_after",
    "activation",
    "recurrent_activation",
    "use_bias",
    "units",
    "filters",
    "kernel_size",
];

/// Where a PyTorch tensor's bytes come from.
#[derive(Debug, Clone)]
pub enum TorchSource<'m> {
    Weight(&'m Weight),
    /// A constant, with the dtype and shape of this weight.
    Fill {
        value: f64,
        like: &'m Weight,
    },
}

/// One PyTorch tensor of a layer.
#[derive(Debug, Clone)]
pub struct TorchTensor<'m> {
    /// The name within the layer (`weight`, `conv_dw.weight`, `weight_ih_l0_reverse`).
    pub name: String,
    pub source: TorchSource<'m>,
    pub steps: Vec<Step>,
}

/// Why a layer cannot be written in PyTorch layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoEquivalent(pub String);

/// A layer's PyTorch tensors, and how its class was decided.
#[derive(Debug, Clone)]
pub struct LayerTensors<'m> {
    pub class: String,
    pub tensors: Vec<TorchTensor<'m>>,
    /// Where the file records no class and the classes its weights fit
    /// give different PyTorch tensors: which was chosen, for the user.
    pub choice: Option<String>,
}

/// The PyTorch tensors of one layer. `class` overrides what the file says
/// (`--class LAYER=CLASS`).
pub fn layer_tensors<'m>(
    layer: &'m Layer,
    num_batches_tracked: bool,
    class: Option<&str>,
) -> Result<LayerTensors<'m>, NoEquivalent> {
    let candidates: Vec<String> = match (class, layer.class.as_deref()) {
        (Some(class), _) | (None, Some(class)) => vec![class.to_string()],
        (None, None) => {
            let labelled: Vec<(String, Vec<usize>)> = layer
                .weights
                .iter()
                .map(|w| (labelled_name(w), w.shape.clone()))
                .collect();
            labels::class_candidates(&labelled)
                .into_iter()
                .map(str::to_string)
                .collect()
        }
    };
    let mut fitting = Vec::new();
    let mut first_error = None;
    for candidate in &candidates {
        match class_layer_tensors(layer, candidate, num_batches_tracked) {
            Ok(tensors) => fitting.push((candidate, tensors)),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let mut fitting = fitting.into_iter();
    let Some((class, tensors)) = fitting.next() else {
        return Err(first_error.unwrap_or_else(|| {
            NoEquivalent(
                "the file does not record its class, and its weights fit no class we know".into(),
            )
        }));
    };
    // Candidates that give the same tensors (Conv2D and Conv2DTranspose
    // without a bias) leave nothing to choose.
    let differing: Vec<&String> = fitting
        .filter(|(_, other)| signature(other) != signature(&tensors))
        .map(|(c, _)| c)
        .collect();
    let choice = (!differing.is_empty()).then(|| {
        let others: Vec<&str> = differing.iter().map(|c| c.as_str()).collect();
        format!(
            "the file does not record its class; its weights fit {class} and {}, which differ in PyTorch layout; written as {class}, the likelier (--class {}={} for the other)",
            others.join(", "),
            layer.path_string(),
            others[0]
        )
    });
    Ok(LayerTensors {
        class: class.clone(),
        tensors,
        choice,
    })
}

/// A weight's label with its sub-object (`forward_lstm/kernel`).
fn labelled_name(w: &Weight) -> String {
    let mut parts = w.sub_path.clone();
    parts.push(w.label.to_string());
    parts.join("/")
}

/// What a list of PyTorch tensors writes, to tell candidate classes apart.
fn signature(tensors: &[TorchTensor<'_>]) -> Vec<(String, Vec<usize>, Vec<Step>, String)> {
    tensors
        .iter()
        .map(|t| {
            let source = match &t.source {
                TorchSource::Weight(w) => labelled_name(w),
                TorchSource::Fill { value, like } => {
                    format!("{value} like {}", labelled_name(like))
                }
            };
            (t.name.clone(), torch_shape(t), t.steps.clone(), source)
        })
        .collect()
}

/// The PyTorch tensors of a layer taken as `class`.
fn class_layer_tensors<'m>(
    layer: &'m Layer,
    class: &str,
    num_batches_tracked: bool,
) -> Result<Vec<TorchTensor<'m>>, NoEquivalent> {
    match class {
        "Bidirectional" => {
            let inner = wrapped_class(layer)?;
            let mut out = Vec::new();
            // Counted by source weight: fills (an LSTM's second bias) make
            // more tensors than weights, and would hide one left out.
            let mut placed = 0;
            for (direction, suffix) in [("forward", ""), ("backward", "_reverse")] {
                let weights: Vec<&Weight> = layer
                    .weights
                    .iter()
                    .filter(|w| w.sub_path.first().is_some_and(|s| s.starts_with(direction)))
                    .collect();
                placed += weights.len();
                for mut t in class_tensors(&inner, &weights, false)? {
                    t.name.push_str(suffix);
                    out.push(t);
                }
            }
            if placed < layer.weights.len() {
                return Err(NoEquivalent(
                    "a Bidirectional weight belongs to neither the forward nor the backward layer"
                        .into(),
                ));
            }
            Ok(out)
        }
        "TimeDistributed" => {
            let inner = wrapped_class(layer)?;
            class_tensors(
                &inner,
                &layer.weights.iter().collect::<Vec<_>>(),
                num_batches_tracked,
            )
        }
        _ => class_tensors(
            class,
            &layer.weights.iter().collect::<Vec<_>>(),
            num_batches_tracked,
        ),
    }
}

/// The class a Bidirectional or TimeDistributed wraps: from the config, or
/// the likeliest class the wrapped weights fit.
fn wrapped_class(layer: &Layer) -> Result<String, NoEquivalent> {
    if let Some(class) = layer
        .config
        .as_ref()
        .and_then(|c| c.get("layer"))
        .and_then(|l| l.get("class_name"))
        .and_then(Value::as_str)
    {
        return Ok(class.to_string());
    }
    let forward: Vec<(String, Vec<usize>)> = layer
        .weights
        .iter()
        .filter(|w| {
            w.sub_path
                .first()
                .is_none_or(|s| !s.starts_with("backward"))
        })
        .map(|w| (w.label.to_string(), w.shape.clone()))
        .collect();
    labels::class_candidates(&forward)
        .first()
        .map(|c| c.to_string())
        .ok_or_else(|| {
            NoEquivalent("the file does not record the class of the layer it wraps".into())
        })
}

fn class_tensors<'m>(
    class: &str,
    weights: &[&'m Weight],
    num_batches_tracked: bool,
) -> Result<Vec<TorchTensor<'m>>, NoEquivalent> {
    let rule = RULES
        .iter()
        .find(|r| r.classes.contains(&class))
        .ok_or_else(|| NoEquivalent(format!("{class} has no PyTorch layout rule")))?;
    let mut first: std::collections::HashMap<&str, &Weight> = std::collections::HashMap::new();
    for w in weights {
        if let Some(twin) = first.insert(&w.label, w) {
            return Err(NoEquivalent(format!(
                "two of its weights are labelled `{}` (`{}` and `{}`), and {class} has one",
                w.label,
                twin.stored_name(),
                w.stored_name()
            )));
        }
    }
    let find = |label: &str| weights.iter().copied().find(|w| w.label == label);
    if class == "GRU" && find("bias").is_some_and(|b| b.shape.len() != 2) {
        return Err(NoEquivalent(
            "GRU with reset_after=False has no exact PyTorch equivalent".into(),
        ));
    }
    let mut out = Vec::new();
    for param in rule.params {
        let Some(weight) = find(param.label) else {
            continue;
        };
        out.push(TorchTensor {
            name: param.torch.to_string(),
            source: TorchSource::Weight(weight),
            steps: steps_for(param.axes, &weight.shape)?,
        });
    }
    for fill in rule.fills {
        if fill.unless.is_some_and(|label| find(label).is_some()) {
            continue;
        }
        if let Some(like) = find(fill.like) {
            out.push(TorchTensor {
                name: fill.torch.to_string(),
                source: TorchSource::Fill {
                    value: fill.value,
                    like,
                },
                steps: Vec::new(),
            });
        }
    }
    if num_batches_tracked && rule.classes.contains(&"BatchNormalization") {
        if let Some(like) = find("moving_mean") {
            out.push(TorchTensor {
                name: "num_batches_tracked".into(),
                // Shape and dtype are set by the planner (an int64 scalar).
                source: TorchSource::Fill { value: 0.0, like },
                steps: vec![Step::Reshape(Vec::new())],
            });
        }
    }
    let mapped = out
        .iter()
        .filter_map(|t| match t.source {
            TorchSource::Weight(w) => Some(&*w.label),
            TorchSource::Fill { .. } => None,
        })
        .collect::<Vec<_>>();
    if let Some(unmapped) = weights.iter().find(|w| !mapped.contains(&&*w.label)) {
        return Err(NoEquivalent(format!(
            "{class} weight `{}` has no PyTorch counterpart",
            unmapped.label
        )));
    }
    Ok(out)
}

/// Keras's GRU gates [z, r, h] in PyTorch's order [r, z, n], as blocks of
/// the first axis.
fn gru_gates_to_torch() -> Step {
    Step::ReorderBlocks {
        axis: 0,
        order: vec![1, 0, 2],
    }
}

fn steps_for(axes: Axes, shape: &[usize]) -> Result<Vec<Step>, NoEquivalent> {
    let rank_error = || NoEquivalent(format!("unexpected weight shape {shape:?}"));
    Ok(match axes {
        Axes::Same => Vec::new(),
        Axes::Permute(p) => {
            if p.len() != shape.len() {
                return Err(rank_error());
            }
            vec![Step::Permute(p.to_vec())]
        }
        Axes::Depthwise => {
            // (k..., in, m) -> (in, m, k...) -> (in*m, 1, k...)
            let rank = shape.len();
            if rank < 3 {
                return Err(rank_error());
            }
            let spatial = rank - 2;
            let mut permute = vec![spatial, spatial + 1];
            permute.extend(0..spatial);
            let mut target = vec![shape[spatial] * shape[spatial + 1], 1];
            target.extend_from_slice(&shape[..spatial]);
            vec![Step::Permute(permute), Step::Reshape(target)]
        }
        Axes::GruKernel => {
            if shape.len() != 2 || !shape[1].is_multiple_of(3) {
                return Err(rank_error());
            }
            vec![
                Step::ReorderBlocks {
                    axis: 1,
                    order: vec![1, 0, 2],
                },
                Step::Permute(vec![1, 0]),
            ]
        }
        Axes::Cudnn { gates, gru } => {
            let [rows, width] = shape else {
                return Err(rank_error());
            };
            if !width.is_multiple_of(gates) {
                return Err(rank_error());
            }
            let units = width / gates;
            let mut steps = vec![
                Step::Reshape(vec![*rows, gates, units]),
                Step::Permute(vec![1, 0, 2]),
                Step::Reshape(vec![*width, *rows]),
            ];
            if gru {
                steps.push(gru_gates_to_torch());
            }
            steps
        }
        Axes::CudnnBias { gates, half, gru } => {
            let [len] = shape else {
                return Err(rank_error());
            };
            if !len.is_multiple_of(2 * gates) {
                return Err(rank_error());
            }
            let mut steps = vec![
                Step::Reshape(vec![2, len / 2]),
                Step::Select {
                    axis: 0,
                    index: half,
                },
            ];
            if gru {
                steps.push(gru_gates_to_torch());
            }
            steps
        }
        Axes::GruBiasRow(row) => {
            if shape.len() != 2 || shape[0] != 2 || !shape[1].is_multiple_of(3) {
                return Err(rank_error());
            }
            vec![
                Step::Select {
                    axis: 0,
                    index: row,
                },
                Step::ReorderBlocks {
                    axis: 0,
                    order: vec![1, 0, 2],
                },
            ]
        }
    })
}

/// The output shape of a PyTorch tensor.
pub fn torch_shape(tensor: &TorchTensor<'_>) -> Vec<usize> {
    match &tensor.source {
        TorchSource::Weight(w) => shape_after(&w.shape, &tensor.steps),
        TorchSource::Fill { like, .. } => shape_after(&like.shape, &tensor.steps),
    }
}

/// The class a layer was written as, and the options a PyTorch module
/// needs that weights do not carry, from the layer's config (BatchNorm
/// epsilon and momentum, padding, GRU reset_after) where the file has one.
pub fn layer_options(layer: &Layer, resolved: &LayerTensors<'_>) -> Value {
    let mut out = Map::new();
    out.insert("class".into(), Value::from(resolved.class.clone()));
    if layer.class.as_deref() != Some(resolved.class.as_str()) {
        // Not the file's word: guessed from the weights, or --class.
        out.insert("class_recorded".into(), Value::from(layer.class.clone()));
    }
    let config = layer.config.as_ref().and_then(Value::as_object);
    if let Some(config) = config {
        for key in OPTION_KEYS {
            if let Some(v) = config.get(*key) {
                out.insert((*key).into(), v.clone());
            }
        }
    }
    // Keras's `groups` is 1 for depthwise convolutions, which PyTorch runs
    // as grouped ones: one group per input channel.
    if let Some(kernel) = layer.weights.iter().find(|w| w.label == "depthwise_kernel") {
        if let Some(&channels) = kernel.shape.get(kernel.shape.len().saturating_sub(2)) {
            out.insert("groups".into(), Value::from(channels));
        }
    }
    // Keras's moving average keeps `momentum` of the old value; PyTorch's
    // momentum is the weight of the new one.
    if let Some(m) = config
        .and_then(|c| c.get("momentum"))
        .and_then(Value::as_f64)
    {
        out.insert("torch_momentum".into(), Value::from(1.0 - m));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::transform::apply;

    #[test]
    fn depthwise_kernels_of_every_spatial_rank_become_grouped_conv_weights() {
        // (k..., in, m) -> (in*m, 1, k...), as torch.nn.Conv{1,2,3}d with
        // groups=in hold them: element [c*m + j, 0, w...] = kernel[w..., c, j].
        for shape in [vec![3, 4, 2], vec![3, 2, 4, 2], vec![2, 3, 2, 4, 2]] {
            let rank = shape.len();
            let (spatial, (channels, multiplier)) =
                (&shape[..rank - 2], (shape[rank - 2], shape[rank - 1]));
            let steps = steps_for(Axes::Depthwise, &shape).unwrap();
            let mut want_shape = vec![channels * multiplier, 1];
            want_shape.extend_from_slice(spatial);
            assert_eq!(shape_after(&shape, &steps), want_shape);
            // Each element holds its own C-order index in the Keras kernel.
            let count: usize = shape.iter().product();
            let bytes: Vec<u8> = (0..count as u32).flat_map(u32::to_le_bytes).collect();
            let out: Vec<u32> = apply(&bytes, &shape, 4, &steps, Vec::new())
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
                .collect();
            let spatial_count: usize = spatial.iter().product();
            for (o, &value) in out.iter().enumerate() {
                let (group, w) = (o / spatial_count, o % spatial_count);
                let (c, j) = (group / multiplier, group % multiplier);
                let keras_index = (w * channels + c) * multiplier + j;
                assert_eq!(value as usize, keras_index, "{shape:?} at {o}");
            }
        }
        assert!(steps_for(Axes::Depthwise, &[3, 4]).is_err());
    }

    /// A layer of a file that records no class, holding `weights` (label,
    /// shape); the bytes are never read here.
    fn unclassed(weights: &[(&str, &[usize])]) -> Layer {
        Layer {
            path: vec!["layer".into()],
            class: None,
            config: None,
            weights: weights
                .iter()
                .map(|(label, shape)| Weight {
                    label: label.to_string().into(),
                    sub_path: Vec::new(),
                    stored: crate::model::StoredName::Own(label.to_string()),
                    dtype: crate::dtype::Dtype::F32,
                    shape: shape.to_vec(),
                    file: 0,
                    dataset: String::new(),
                    location: crate::model::Location::Bundle(0),
                })
                .collect(),
        }
    }

    #[test]
    fn a_guess_is_named_only_where_the_fitting_classes_differ_in_pytorch_layout() {
        // Conv2D and Conv2DTranspose kernels take the same permutation:
        // either guess writes the same tensors, so there is nothing to say.
        let conv = unclassed(&[("kernel", &[3, 3, 8, 4])]);
        let resolved = layer_tensors(&conv, false, None).unwrap();
        assert_eq!((resolved.class.as_str(), resolved.choice), ("Conv2D", None));
        // A recurrent layer of zero units without a bias fits LSTM, GRU and
        // SimpleRNN (every gate block is empty); a GRU's kernels are
        // reordered, an LSTM's or SimpleRNN's only transposed.
        let rnn = unclassed(&[("kernel", &[4, 0]), ("recurrent_kernel", &[0, 0])]);
        let resolved = layer_tensors(&rnn, false, None).unwrap();
        assert_eq!(resolved.class, "LSTM");
        assert_eq!(
            resolved.choice.as_deref(),
            Some(
                "the file does not record its class; its weights fit LSTM and GRU, which \
                 differ in PyTorch layout; written as LSTM, the likelier (--class layer=GRU \
                 for the other)"
            )
        );
    }

    #[test]
    fn a_bidirectional_weight_of_neither_direction_is_refused_not_dropped() {
        // Bidirectional(LSTM(5)) on 4 inputs, plus a weight outside both
        // halves. Each LSTM half gives 4 tensors for its 3 weights (PyTorch's
        // second bias is a fill), so counting tensors would not see it.
        let mut weights = Vec::new();
        for direction in ["forward_lstm", "backward_lstm"] {
            for (label, shape) in [
                ("kernel", &[4, 20][..]),
                ("recurrent_kernel", &[5, 20]),
                ("bias", &[20]),
            ] {
                weights.push((direction, label, shape));
            }
        }
        let layer = |stray: bool| {
            let mut layer = unclassed(&[]);
            layer.class = Some("Bidirectional".into());
            layer.config = Some(serde_json::json!({"layer": {"class_name": "LSTM"}}));
            let all = weights
                .iter()
                .copied()
                .chain(stray.then_some(("", "bias", &[20][..])));
            for (direction, label, shape) in all {
                let mut w = unclassed(&[(label, shape)]).weights.remove(0);
                w.sub_path = [direction]
                    .iter()
                    .filter(|d| !d.is_empty())
                    .map(|d| d.to_string())
                    .collect();
                layer.weights.push(w);
            }
            layer
        };
        let whole = layer(false);
        let resolved = layer_tensors(&whole, false, None).unwrap();
        assert_eq!(resolved.tensors.len(), 8);
        let err = layer_tensors(&layer(true), false, None).err().unwrap();
        assert!(
            err.0
                .contains("belongs to neither the forward nor the backward layer"),
            "{}",
            err.0
        );
    }

    #[test]
    fn options_say_where_the_class_came_from_and_convert_the_momentum() {
        let norm = [
            ("gamma", &[4][..]),
            ("beta", &[4]),
            ("moving_mean", &[4]),
            ("moving_variance", &[4]),
        ];
        let mut recorded = unclassed(&norm);
        recorded.class = Some("BatchNormalization".into());
        recorded.config = Some(serde_json::json!({"momentum": 0.99, "epsilon": 0.001}));
        let options = layer_options(&recorded, &layer_tensors(&recorded, false, None).unwrap());
        let options = options.as_object().unwrap();
        assert_eq!(options["class"], "BatchNormalization");
        assert!(!options.contains_key("class_recorded"), "{options:?}");
        assert_eq!(options["epsilon"], 0.001);
        // Keras keeps `momentum` of the running value, PyTorch replaces
        // `momentum` of it: 1 - 0.99.
        assert_eq!(options["torch_momentum"], 1.0 - 0.99);

        // Guessed from the weights: the file's word (none) is kept beside it.
        let guessed = unclassed(&norm);
        let options = layer_options(&guessed, &layer_tensors(&guessed, false, None).unwrap());
        assert_eq!(options["class"], "BatchNormalization");
        assert_eq!(options.get("class_recorded"), Some(&Value::Null));
    }

    #[test]
    fn gru_weights_of_the_wrong_shape_are_refused() {
        // A kernel (in, 3u) and a reset_after bias (2, 3u); anything else
        // has no gate blocks to reorder.
        assert!(steps_for(Axes::GruKernel, &[4, 15]).is_ok());
        for shape in [&[4, 16][..], &[4, 15, 1], &[15]] {
            assert!(steps_for(Axes::GruKernel, shape).is_err(), "{shape:?}");
        }
        for row in [0, 1] {
            assert!(steps_for(Axes::GruBiasRow(row), &[2, 15]).is_ok());
            for shape in [&[2, 16][..], &[3, 15], &[15], &[2, 15, 1]] {
                assert!(
                    steps_for(Axes::GruBiasRow(row), shape).is_err(),
                    "{shape:?}"
                );
            }
        }
    }
}
