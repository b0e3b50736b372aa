//! Numerical proof of the PyTorch layout.
//!
//! Every test converts a real tf-keras file with `Layout::PyTorch`, loads the
//! result with candle (which takes PyTorch layout: NCHW activations, `(out,
//! in, kh, kw)` kernels, `(out, in)` linear weights, `torch.nn.LSTM`/`GRU`
//! parameters) and runs the layer, or the whole tiny EfficientDet, with candle
//! ops. The result must match what Keras computed on the same input
//! (`fixtures/numerics/*.io.safetensors`) to [`TOLERANCE`].
//!
//! The forward passes read only the converted tensors and the converter's
//! `pytorch_options` metadata (strides, padding, epsilon, activations), never
//! the Keras-layout arrays: a wrong permutation, gate order, depthwise channel
//! order or BN mapping shows up as a wrong output. Each test also checks that
//! every tensor of the converted file was used, so nothing is left over.
//!
//! TensorFlow's `same` padding puts the smaller half before (top/left); it is
//! applied explicitly with `pad_with_zeros` (or -inf for max pooling) before a
//! convolution with no padding, never with a symmetric PyTorch `padding=`.
//!
//! Run with `--nocapture` to see the error measured for each case.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::error::Error;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, D};
use keras2safetensors::{convert_file, ConvertOptions, Layout, PlanOptions};
use serde_json::{Map, Value};

type TestResult<T = ()> = Result<T, Box<dyn Error>>;

/// Largest absolute difference from Keras's float32 output that passes.
const TOLERANCE: f32 = 1e-5;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

/// Reads a safetensors file: its tensors (candle) and its `__metadata__`.
fn read_safetensors(path: &Path) -> TestResult<(HashMap<String, Tensor>, HashMap<String, String>)> {
    let bytes = std::fs::read(path)?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)?;
    Ok((tensors, metadata))
}

// ---------------------------------------------------------------------------
// The converted model: PyTorch-layout tensors and per-layer options.
// ---------------------------------------------------------------------------

/// A Keras file converted with `--layout pytorch` and loaded with candle.
struct Net {
    tensors: HashMap<String, Tensor>,
    /// `pytorch_options`: layer path (`efficientnet_tiny.stem_conv`) to the
    /// options the converter copied from the Keras config.
    options: Map<String, Value>,
    /// Names of the tensors a forward pass has read.
    used: RefCell<BTreeSet<String>>,
}

impl Net {
    /// Converts `h5` into a temporary folder and loads the result.
    fn convert(h5: &Path) -> TestResult<Net> {
        let dir = tempfile::tempdir()?;
        let output = dir.path().join("model.safetensors");
        let options = ConvertOptions {
            plan: PlanOptions {
                layout: Layout::PyTorch,
                ..Default::default()
            },
            ..Default::default()
        };
        convert_file(h5, &output, &options, &mut |_| {})?;
        let (tensors, metadata) = read_safetensors(&output)?;
        if metadata.get("layout").map(String::as_str) != Some("pytorch") {
            return Err(format!("{}: metadata `layout` is not `pytorch`", h5.display()).into());
        }
        let options = match metadata.get("pytorch_options") {
            Some(json) => match serde_json::from_str(json)? {
                Value::Object(map) => map,
                other => return Err(format!("pytorch_options is not an object: {other}").into()),
            },
            None => return Err(format!("{}: no `pytorch_options` metadata", h5.display()).into()),
        };
        Ok(Net {
            tensors,
            options,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The tensor `layer.name` (`conv1d.weight`), in float32.
    fn get(&self, layer: &str, name: &str) -> TestResult<Tensor> {
        let key = format!("{layer}.{name}");
        let tensor = self
            .tensors
            .get(&key)
            .ok_or_else(|| format!("the converted file has no tensor `{key}`"))?;
        if tensor.dtype() != DType::F32 {
            return Err(format!("`{key}` is {:?}, not F32", tensor.dtype()).into());
        }
        self.used.borrow_mut().insert(key);
        Ok(tensor.clone())
    }

    /// Like [`Net::get`], but `None` when the layer has no such tensor
    /// (a convolution with `use_bias=False`).
    fn get_optional(&self, layer: &str, name: &str) -> TestResult<Option<Tensor>> {
        if self.tensors.contains_key(&format!("{layer}.{name}")) {
            self.get(layer, name).map(Some)
        } else {
            Ok(None)
        }
    }

    /// The layer's options, after checking that its class is `class`.
    fn options(&self, layer: &str, class: &str) -> TestResult<&Map<String, Value>> {
        let options = self
            .options
            .get(layer)
            .and_then(Value::as_object)
            .ok_or_else(|| format!("pytorch_options has no layer `{layer}`"))?;
        let found = options.get("class").and_then(Value::as_str);
        if found != Some(class) {
            return Err(format!("layer `{layer}` is {found:?}, expected {class}").into());
        }
        Ok(options)
    }

    /// Fails if the forward pass left any converted tensor unread.
    fn check_all_used(&self) -> TestResult {
        let used = self.used.borrow();
        let unused: Vec<&String> = self.tensors.keys().filter(|k| !used.contains(*k)).collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(format!("converted tensors never used by the forward pass: {unused:?}").into())
        }
    }
}

fn option<'a>(options: &'a Map<String, Value>, key: &str) -> TestResult<&'a Value> {
    options
        .get(key)
        .ok_or_else(|| format!("option `{key}` missing from {options:?}").into())
}

fn option_str<'a>(options: &'a Map<String, Value>, key: &str) -> TestResult<&'a str> {
    option(options, key)?
        .as_str()
        .ok_or_else(|| format!("option `{key}` is not a string").into())
}

fn option_f64(options: &Map<String, Value>, key: &str) -> TestResult<f64> {
    option(options, key)?
        .as_f64()
        .ok_or_else(|| format!("option `{key}` is not a number").into())
}

fn option_usize(options: &Map<String, Value>, key: &str) -> TestResult<usize> {
    option(options, key)?
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| format!("option `{key}` is not an unsigned integer").into())
}

/// A Keras `(s, s)` / `[s]` option as one number: candle takes one stride
/// and one dilation for every spatial axis.
fn option_uniform(options: &Map<String, Value>, key: &str) -> TestResult<usize> {
    let values: Vec<u64> = option(options, key)?
        .as_array()
        .ok_or_else(|| format!("option `{key}` is not a list"))?
        .iter()
        .filter_map(Value::as_u64)
        .collect();
    match values.as_slice() {
        [first, rest @ ..] if rest.iter().all(|v| v == first) => Ok(*first as usize),
        _ => Err(format!("option `{key}` = {values:?} is not one value per axis").into()),
    }
}

// ---------------------------------------------------------------------------
// Ops in PyTorch layout (NCHW / NCL).
// ---------------------------------------------------------------------------

/// TensorFlow `same` padding of one spatial axis: `(before, after)`.
fn same_pad(input: usize, kernel: usize, stride: usize, dilation: usize) -> (usize, usize) {
    let effective = (kernel - 1) * dilation + 1;
    let output = input.div_ceil(stride);
    let total = ((output - 1) * stride + effective).saturating_sub(input);
    (total / 2, total - total / 2)
}

/// Pads `x` along `dim` with `value` (`pad_with_zeros` only pads zeros).
fn pad_with(x: &Tensor, dim: usize, before: usize, after: usize, value: f32) -> TestResult<Tensor> {
    let block = |size: usize| {
        let mut dims = x.dims().to_vec();
        dims[dim] = size;
        Tensor::full(value, dims, x.device())
    };
    Ok(Tensor::cat(
        &[block(before)?, x.clone(), block(after)?],
        dim,
    )?)
}

/// Applies a Keras `padding` (`same` or `valid`) to the spatial axes
/// (2 onwards) of `x` for a kernel of sizes `kernel`, so that a convolution
/// with no padding follows.
fn keras_pad(
    x: &Tensor,
    padding: &str,
    kernel: &[usize],
    stride: usize,
    dilation: usize,
    value: f32,
) -> TestResult<Tensor> {
    match padding {
        "valid" => Ok(x.clone()),
        "same" => {
            let mut x = x.clone();
            for (i, &k) in kernel.iter().enumerate() {
                let dim = 2 + i;
                let (before, after) = same_pad(x.dim(dim)?, k, stride, dilation);
                x = if value == 0.0 {
                    x.pad_with_zeros(dim, before, after)?
                } else {
                    pad_with(&x, dim, before, after, value)?
                };
            }
            Ok(x)
        }
        other => Err(format!("padding `{other}` is not implemented here").into()),
    }
}

/// Adds a per-channel vector to an `(N, C, ...)` tensor.
fn add_channel_bias(x: &Tensor, bias: &Tensor) -> TestResult<Tensor> {
    let mut shape = vec![1; x.rank()];
    shape[1] = bias.dim(0)?;
    Ok(x.broadcast_add(&bias.reshape(shape)?)?)
}

/// 2D convolution of an NCHW tensor with a `(out, in/groups, kh, kw)`
/// kernel, TensorFlow padding, optional bias.
fn conv2d_nchw(
    x: &Tensor,
    weight: &Tensor,
    bias: Option<&Tensor>,
    padding: &str,
    stride: usize,
    dilation: usize,
    groups: usize,
) -> TestResult<Tensor> {
    let (_, _, kh, kw) = weight.dims4()?;
    let x = keras_pad(x, padding, &[kh, kw], stride, dilation, 0.0)?;
    let y = x.conv2d(weight, 0, stride, dilation, groups)?;
    match bias {
        Some(b) => add_channel_bias(&y, b),
        None => Ok(y),
    }
}

fn swish(x: &Tensor) -> TestResult<Tensor> {
    Ok((x * candle_nn::ops::sigmoid(x)?)?)
}

/// A Keras `activation` option.
fn activation(x: &Tensor, name: &str) -> TestResult<Tensor> {
    match name {
        "linear" => Ok(x.clone()),
        "swish" | "silu" => swish(x),
        "sigmoid" => Ok(candle_nn::ops::sigmoid(x)?),
        "tanh" => Ok(x.tanh()?),
        "relu" => Ok(x.relu()?),
        other => Err(format!("activation `{other}` is not implemented here").into()),
    }
}

/// BatchNorm in inference over axis 1: `(x - mean) / sqrt(var + eps) * w + b`.
fn batch_norm(
    x: &Tensor,
    weight: &Tensor,
    bias: &Tensor,
    running_mean: &Tensor,
    running_var: &Tensor,
    eps: f64,
) -> TestResult<Tensor> {
    let scale = (weight / (running_var + eps)?.sqrt()?)?;
    let centered = x.broadcast_sub(&channel_shaped(running_mean, x.rank())?)?;
    let scaled = centered.broadcast_mul(&channel_shaped(&scale, x.rank())?)?;
    add_channel_bias(&scaled, bias)
}

fn channel_shaped(v: &Tensor, rank: usize) -> TestResult<Tensor> {
    let mut shape = vec![1; rank];
    shape[1] = v.dim(0)?;
    Ok(v.reshape(shape)?)
}

/// LayerNorm over the last axis: `(x - mean) / sqrt(var + eps) * w + b`.
fn layer_norm(x: &Tensor, weight: &Tensor, bias: &Tensor, eps: f64) -> TestResult<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    let normed = centered.broadcast_div(&(var + eps)?.sqrt()?)?;
    Ok(normed.broadcast_mul(weight)?.broadcast_add(bias)?)
}

/// `x @ w.T + b` for a torch.nn.Linear weight `(out, in)`.
fn linear(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>) -> TestResult<Tensor> {
    let y = x.broadcast_matmul(&weight.t()?)?;
    Ok(match bias {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

/// MaxPool2d with TensorFlow `same` padding: padded cells hold -inf, so
/// they never win.
fn max_pool_same(x: &Tensor, kernel: usize, stride: usize) -> TestResult<Tensor> {
    let x = keras_pad(x, "same", &[kernel, kernel], stride, 1, f32::NEG_INFINITY)?;
    Ok(x.max_pool2d_with_stride(kernel, stride)?)
}

fn upsample_nearest_2x(x: &Tensor) -> TestResult<Tensor> {
    let (_, _, h, w) = x.dims4()?;
    Ok(x.upsample_nearest2d(2 * h, 2 * w)?)
}

/// torch.nn.LSTM (one layer, batch first, gates i, f, g, o) over `x` of
/// shape `(N, T, F)`; returns every hidden state, `(N, T, H)`.
fn lstm_forward(
    x: &Tensor,
    weight_ih: &Tensor,
    weight_hh: &Tensor,
    bias_ih: &Tensor,
    bias_hh: &Tensor,
) -> TestResult<Tensor> {
    let (n, steps, _) = x.dims3()?;
    let hidden = weight_hh.dim(1)?;
    // The input projections of every step at once: (N, T, 4H).
    let projected = linear(x, weight_ih, Some(bias_ih))?;
    let mut h = Tensor::zeros((n, hidden), DType::F32, x.device())?;
    let mut c = h.clone();
    let mut outputs = Vec::with_capacity(steps);
    for t in 0..steps {
        let gates = (projected.get_on_dim(1, t)? + linear(&h, weight_hh, Some(bias_hh))?)?;
        let gate = |k: usize| gates.narrow(1, k * hidden, hidden);
        let i = candle_nn::ops::sigmoid(&gate(0)?)?;
        let f = candle_nn::ops::sigmoid(&gate(1)?)?;
        let g = gate(2)?.tanh()?;
        let o = candle_nn::ops::sigmoid(&gate(3)?)?;
        c = ((f * &c)? + (i * g)?)?;
        h = (o * c.tanh()?)?;
        outputs.push(h.clone());
    }
    Ok(Tensor::stack(&outputs, 1)?)
}

/// torch.nn.GRU (one layer, batch first, gates r, z, n) over `x` of shape
/// `(N, T, F)`; returns every hidden state, `(N, T, H)`:
/// r = σ(W_ir x + b_ir + W_hr h + b_hr), z = σ(W_iz x + b_iz + W_hz h + b_hz),
/// n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn)), h' = (1 − z) ⊙ n + z ⊙ h.
fn gru_forward(
    x: &Tensor,
    weight_ih: &Tensor,
    weight_hh: &Tensor,
    bias_ih: &Tensor,
    bias_hh: &Tensor,
) -> TestResult<Tensor> {
    let (n, steps, _) = x.dims3()?;
    let hidden = weight_hh.dim(1)?;
    let projected = linear(x, weight_ih, Some(bias_ih))?;
    let mut h = Tensor::zeros((n, hidden), DType::F32, x.device())?;
    let mut outputs = Vec::with_capacity(steps);
    for t in 0..steps {
        let gi = projected.get_on_dim(1, t)?;
        let gh = linear(&h, weight_hh, Some(bias_hh))?;
        let part = |g: &Tensor, k: usize| g.narrow(1, k * hidden, hidden);
        let r = candle_nn::ops::sigmoid(&(part(&gi, 0)? + part(&gh, 0)?)?)?;
        let z = candle_nn::ops::sigmoid(&(part(&gi, 1)? + part(&gh, 1)?)?)?;
        let new = (part(&gi, 2)? + (r * part(&gh, 2)?)?)?.tanh()?;
        h = ((z.affine(-1.0, 1.0)? * new)? + (z * &h)?)?;
        outputs.push(h.clone());
    }
    Ok(Tensor::stack(&outputs, 1)?)
}

fn nhwc_to_nchw(x: &Tensor) -> TestResult<Tensor> {
    Ok(x.permute((0, 3, 1, 2))?.contiguous()?)
}

fn nchw_to_nhwc(x: &Tensor) -> TestResult<Tensor> {
    Ok(x.permute((0, 2, 3, 1))?.contiguous()?)
}

/// `(N, L, C)` (Keras) <-> `(N, C, L)` (PyTorch): the same swap both ways.
fn swap_length_and_channels(x: &Tensor) -> TestResult<Tensor> {
    Ok(x.transpose(1, 2)?.contiguous()?)
}

// ---------------------------------------------------------------------------
// Keras layers, run from their converted weights and options.
// ---------------------------------------------------------------------------

impl Net {
    /// Conv1D on `(N, C, L)`.
    fn conv1d(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let options = self.options(layer, "Conv1D")?;
        let weight = self.get(layer, "weight")?;
        let bias = self.get_optional(layer, "bias")?;
        let stride = option_uniform(options, "strides")?;
        let dilation = option_uniform(options, "dilation_rate")?;
        let groups = option_usize(options, "groups")?;
        let (_, _, k) = weight.dims3()?;
        let x = keras_pad(
            x,
            option_str(options, "padding")?,
            &[k],
            stride,
            dilation,
            0.0,
        )?;
        let mut y = x.conv1d(&weight, 0, stride, dilation, groups)?;
        if let Some(b) = bias {
            y = add_channel_bias(&y, &b)?;
        }
        activation(&y, option_str(options, "activation")?)
    }

    /// Conv2D on NCHW.
    fn conv2d(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let options = self.options(layer, "Conv2D")?;
        let y = conv2d_nchw(
            x,
            &self.get(layer, "weight")?,
            self.get_optional(layer, "bias")?.as_ref(),
            option_str(options, "padding")?,
            option_uniform(options, "strides")?,
            option_uniform(options, "dilation_rate")?,
            option_usize(options, "groups")?,
        )?;
        activation(&y, option_str(options, "activation")?)
    }

    /// DepthwiseConv2D on NCHW: a convolution with `groups = in` channels,
    /// output channel `c * depth_multiplier + j`.
    fn depthwise_conv2d(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let options = self.options(layer, "DepthwiseConv2D")?;
        let weight = self.get(layer, "weight")?;
        let channels = x.dim(1)?;
        let multiplier = option_usize(options, "depth_multiplier")?;
        if weight.dim(0)? != channels * multiplier || weight.dim(1)? != 1 {
            return Err(format!("`{layer}.weight` has shape {:?}", weight.dims()).into());
        }
        let y = conv2d_nchw(
            x,
            &weight,
            self.get_optional(layer, "bias")?.as_ref(),
            option_str(options, "padding")?,
            option_uniform(options, "strides")?,
            option_uniform(options, "dilation_rate")?,
            channels,
        )?;
        activation(&y, option_str(options, "activation")?)
    }

    /// SeparableConv2D on NCHW: depthwise `conv_dw` (no bias, the layer's
    /// padding and stride), then the 1x1 `conv_pw` with its bias.
    fn separable_conv2d(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let options = self.options(layer, "SeparableConv2D")?;
        let depthwise = conv2d_nchw(
            x,
            &self.get(layer, "conv_dw.weight")?,
            None,
            option_str(options, "padding")?,
            option_uniform(options, "strides")?,
            option_uniform(options, "dilation_rate")?,
            x.dim(1)?,
        )?;
        let y = conv2d_nchw(
            &depthwise,
            &self.get(layer, "conv_pw.weight")?,
            self.get_optional(layer, "conv_pw.bias")?.as_ref(),
            "valid",
            1,
            1,
            1,
        )?;
        activation(&y, option_str(options, "activation")?)
    }

    /// Conv2DTranspose (`valid` padding) on NCHW, as torch's ConvTranspose2d
    /// with an `(in, out, kh, kw)` weight.
    fn conv2d_transpose(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let options = self.options(layer, "Conv2DTranspose")?;
        if option_str(options, "padding")? != "valid"
            || !option(options, "output_padding")?.is_null()
        {
            return Err("only Conv2DTranspose with valid padding is implemented here".into());
        }
        let weight = self.get(layer, "weight")?;
        let stride = option_uniform(options, "strides")?;
        let dilation = option_uniform(options, "dilation_rate")?;
        let mut y = x.conv_transpose2d(&weight, 0, 0, stride, dilation)?;
        if let Some(b) = self.get_optional(layer, "bias")? {
            y = add_channel_bias(&y, &b)?;
        }
        activation(&y, option_str(options, "activation")?)
    }

    /// BatchNormalization (inference) over axis 1, with the layer's epsilon.
    fn batch_norm(&self, layer: &str, x: &Tensor) -> TestResult<Tensor> {
        let eps = option_f64(self.options(layer, "BatchNormalization")?, "epsilon")?;
        batch_norm(
            x,
            &self.get(layer, "weight")?,
            &self.get(layer, "bias")?,
            &self.get(layer, "running_mean")?,
            &self.get(layer, "running_var")?,
            eps,
        )
    }
}

// ---------------------------------------------------------------------------
// One case: a single-layer model, its input and Keras's output.
// ---------------------------------------------------------------------------

struct Case {
    name: &'static str,
    net: Net,
    input: Tensor,
    expected: Tensor,
    /// The layer's Keras `get_config()`.
    layer_config: Value,
    /// Keras's own float32 error against float64, for the record.
    keras_f64_error: String,
}

/// Converts `fixtures/numerics/NAME.h5` and loads `NAME.io.safetensors`.
fn load_case(name: &'static str) -> TestResult<Case> {
    let net = Net::convert(&fixture(&format!("numerics/{name}.h5")))?;
    let (mut io, metadata) =
        read_safetensors(&fixture(&format!("numerics/{name}.io.safetensors")))?;
    let mut take = |key: &str| {
        io.remove(key)
            .ok_or_else(|| format!("{name}.io.safetensors has no `{key}`"))
    };
    let input = take("input")?;
    let expected = take("output")?;
    let layer_config = serde_json::from_str(
        metadata
            .get("layer_config")
            .ok_or("no layer_config metadata")?,
    )?;
    let keras_f64_error = metadata
        .get("max_abs_diff_vs_float64")
        .cloned()
        .unwrap_or_default();
    Ok(Case {
        name,
        net,
        input,
        expected,
        layer_config,
        keras_f64_error,
    })
}

/// Largest absolute difference, after checking that the shapes agree.
fn max_abs_error(actual: &Tensor, expected: &Tensor) -> TestResult<f32> {
    if actual.dims() != expected.dims() {
        return Err(format!("shape {:?}, Keras has {:?}", actual.dims(), expected.dims()).into());
    }
    Ok((actual - expected)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?)
}

/// Fails unless `actual` (in Keras's axis order) is within [`TOLERANCE`] of
/// `expected`; prints the error either way.
fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) -> TestResult {
    let error = max_abs_error(actual, expected).map_err(|e| format!("{what}: {e}"))?;
    println!("{what}: max abs error {error:.3e}");
    if error.is_nan() || error > TOLERANCE {
        return Err(format!("{what}: max abs error {error:e} > {TOLERANCE:e}").into());
    }
    Ok(())
}

impl Case {
    /// Compares with Keras's output and checks that every converted tensor
    /// took part.
    fn check(&self, actual: &Tensor) -> TestResult {
        println!(
            "{}: Keras float32 vs float64: {}",
            self.name, self.keras_f64_error
        );
        assert_close(self.name, actual, &self.expected)?;
        self.net.check_all_used()
    }

    /// The input in NCHW.
    fn input_nchw(&self) -> TestResult<Tensor> {
        nhwc_to_nchw(&self.input)
    }
}

// ---------------------------------------------------------------------------
// Single-layer cases.
// ---------------------------------------------------------------------------

#[test]
fn same_pad_follows_tensorflow() {
    // Stride 2 on an even size: the extra row goes after.
    assert_eq!(same_pad(8, 3, 2, 1), (0, 1));
    assert_eq!(same_pad(32, 3, 2, 1), (0, 1));
    assert_eq!(same_pad(7, 3, 1, 1), (1, 1));
    assert_eq!(same_pad(11, 3, 1, 1), (1, 1));
    assert_eq!(same_pad(9, 3, 1, 2), (2, 2));
    assert_eq!(same_pad(4, 1, 1, 1), (0, 0));
    assert_eq!(same_pad(9, 3, 2, 1), (1, 1));
    assert_eq!(same_pad(10, 4, 1, 1), (1, 2));
}

#[test]
fn conv1d() -> TestResult {
    let case = load_case("conv1d")?;
    let x = swap_length_and_channels(&case.input)?;
    let y = case.net.conv1d("conv1d", &x)?;
    case.check(&swap_length_and_channels(&y)?)
}

#[test]
fn conv2d_s2_same() -> TestResult {
    let case = load_case("conv2d_s2_same")?;
    let y = case.net.conv2d("conv2d_s2_same", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn conv2d_valid_dilated() -> TestResult {
    let case = load_case("conv2d_valid_dilated")?;
    let y = case
        .net
        .conv2d("conv2d_valid_dilated", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn depthwise_conv2d() -> TestResult {
    let case = load_case("depthwise_conv2d")?;
    let y = case
        .net
        .depthwise_conv2d("depthwise_conv2d", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn separable_conv2d() -> TestResult {
    let case = load_case("separable_conv2d")?;
    let y = case
        .net
        .separable_conv2d("separable_conv2d", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn conv2d_transpose() -> TestResult {
    let case = load_case("conv2d_transpose")?;
    let y = case
        .net
        .conv2d_transpose("conv2d_transpose", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn dense() -> TestResult {
    let case = load_case("dense")?;
    let options = case.net.options("dense", "Dense")?;
    let y = linear(
        &case.input,
        &case.net.get("dense", "weight")?,
        case.net.get_optional("dense", "bias")?.as_ref(),
    )?;
    case.check(&activation(&y, option_str(options, "activation")?)?)
}

#[test]
fn batch_norm_inference() -> TestResult {
    let case = load_case("batch_norm")?;
    let eps = option_f64(
        case.net.options("batch_norm", "BatchNormalization")?,
        "epsilon",
    )?;
    assert_eq!(Some(eps), case.layer_config["epsilon"].as_f64());
    let y = case.net.batch_norm("batch_norm", &case.input_nchw()?)?;
    case.check(&nchw_to_nhwc(&y)?)
}

#[test]
fn layer_norm_last_axis() -> TestResult {
    let case = load_case("layer_norm")?;
    // Keras's epsilon (1e-3, not torch's default 1e-5), as the converter
    // copied it into pytorch_options.
    let eps = option_f64(
        case.net.options("layer_norm", "LayerNormalization")?,
        "epsilon",
    )?;
    assert_eq!(Some(eps), case.layer_config["epsilon"].as_f64());
    assert_eq!(
        case.layer_config["axis"],
        serde_json::json!([2]),
        "normalized axis"
    );
    let y = layer_norm(
        &case.input,
        &case.net.get("layer_norm", "weight")?,
        &case.net.get("layer_norm", "bias")?,
        eps,
    )?;
    case.check(&y)
}

#[test]
fn embedding() -> TestResult {
    let case = load_case("embedding")?;
    let (n, t) = case.input.dims2()?;
    let ids = case.input.to_dtype(DType::I64)?.flatten_all()?;
    let table = case.net.get("embedding", "weight")?;
    let y = table.embedding(&ids)?.reshape((n, t, table.dim(1)?))?;
    case.check(&y)
}

#[test]
fn lstm() -> TestResult {
    let case = load_case("lstm")?;
    let options = case.net.options("lstm", "LSTM")?;
    assert_eq!(option_str(options, "activation")?, "tanh");
    assert_eq!(option_str(options, "recurrent_activation")?, "sigmoid");
    let get = |name| case.net.get("lstm", name);
    let y = lstm_forward(
        &case.input,
        &get("weight_ih_l0")?,
        &get("weight_hh_l0")?,
        &get("bias_ih_l0")?,
        &get("bias_hh_l0")?,
    )?;
    case.check(&y)
}

/// A torch.nn recurrent layer's forward pass: input, weight_ih, weight_hh,
/// bias_ih, bias_hh.
type RecurrentForward = fn(&Tensor, &Tensor, &Tensor, &Tensor, &Tensor) -> TestResult<Tensor>;

/// A CuDNN layer against the output Keras gives after loading its weights
/// into the plain layer with Keras's own converter (the CuDNN kernel does
/// not run without a GPU). Both biases are real here, not a zero
/// `bias_hh_l0`; CuDNNGRU's gates [z, r, h] become PyTorch's [r, z, n].
fn cudnn_case(name: &'static str, class: &str, forward: RecurrentForward) -> TestResult {
    let case = load_case(name)?;
    case.net.options(name, class)?;
    let get = |tensor| case.net.get(name, tensor);
    let y = forward(
        &case.input,
        &get("weight_ih_l0")?,
        &get("weight_hh_l0")?,
        &get("bias_ih_l0")?,
        &get("bias_hh_l0")?,
    )?;
    case.check(&y)
}

#[test]
fn cudnn_lstm() -> TestResult {
    cudnn_case("cudnn_lstm", "CuDNNLSTM", lstm_forward)
}

#[test]
fn cudnn_gru() -> TestResult {
    cudnn_case("cudnn_gru", "CuDNNGRU", gru_forward)
}

#[test]
fn gru() -> TestResult {
    let case = load_case("gru")?;
    let options = case.net.options("gru", "GRU")?;
    assert_eq!(option_str(options, "activation")?, "tanh");
    assert_eq!(option_str(options, "recurrent_activation")?, "sigmoid");
    assert_eq!(option(options, "reset_after")?, &Value::Bool(true));
    let get = |name| case.net.get("gru", name);
    let y = gru_forward(
        &case.input,
        &get("weight_ih_l0")?,
        &get("weight_hh_l0")?,
        &get("bias_ih_l0")?,
        &get("bias_hh_l0")?,
    )?;
    case.check(&y)
}

/// Reverses `x` along its time axis (1).
fn reverse_time(x: &Tensor) -> TestResult<Tensor> {
    let steps = x.dim(1)? as u32;
    let order: Vec<u32> = (0..steps).rev().collect();
    Ok(x.index_select(&Tensor::new(order.as_slice(), x.device())?, 1)?)
}

/// A Bidirectional(RNN) case. The converter records only the class for a
/// Bidirectional, so Keras's own layer config confirms that the fixture is
/// the RNN these forward passes implement (activations, concat). Then runs
/// `forward` with the forward tensors on `x` and with the `_reverse` ones on
/// `x` reversed in time, and compares each half of Keras's concatenated
/// output on its own, so a swap of the two directions cannot pass.
fn bidirectional_case(
    name: &'static str,
    rnn_class: &str,
    forward: RecurrentForward,
) -> TestResult {
    let case = load_case(name)?;
    case.net.options(name, "Bidirectional")?;
    let config = &case.layer_config;
    assert_eq!(config["merge_mode"], "concat");
    let inner = &config["layer"];
    assert_eq!(inner["class_name"], rnn_class);
    assert_eq!(inner["config"]["activation"], "tanh");
    assert_eq!(inner["config"]["recurrent_activation"], "sigmoid");
    assert_eq!(inner["config"]["go_backwards"], false);
    if rnn_class == "GRU" {
        assert_eq!(inner["config"]["reset_after"], true);
    }
    let units = inner["config"]["units"].as_u64().ok_or("no units")? as usize;
    let get = |tensor: &str| case.net.get(name, tensor);
    let y_forward = forward(
        &case.input,
        &get("weight_ih_l0")?,
        &get("weight_hh_l0")?,
        &get("bias_ih_l0")?,
        &get("bias_hh_l0")?,
    )?;
    // Keras runs the backward layer on the reversed sequence and reverses
    // its outputs back, as torch does for `_reverse` weights.
    let y_backward = reverse_time(&forward(
        &reverse_time(&case.input)?,
        &get("weight_ih_l0_reverse")?,
        &get("weight_hh_l0_reverse")?,
        &get("bias_ih_l0_reverse")?,
        &get("bias_hh_l0_reverse")?,
    )?)?;
    assert_close(
        &format!("{name} forward half"),
        &y_forward,
        &case.expected.narrow(2, 0, units)?,
    )?;
    assert_close(
        &format!("{name} backward half"),
        &y_backward,
        &case.expected.narrow(2, units, units)?,
    )?;
    case.check(&Tensor::cat(&[&y_forward, &y_backward], 2)?)
}

#[test]
fn bidirectional_lstm() -> TestResult {
    bidirectional_case("bidirectional_lstm", "LSTM", lstm_forward)
}

#[test]
fn bidirectional_gru() -> TestResult {
    bidirectional_case("bidirectional_gru", "GRU", gru_forward)
}

// ---------------------------------------------------------------------------
// The whole tiny EfficientDet (fixtures/numerics/tiny_efficientdet.architecture.md).
// ---------------------------------------------------------------------------

const BACKBONE: &str = "efficientnet_tiny";

/// One MBConv block of the backbone, NCHW in and out.
fn mbconv(net: &Net, block: &str, x: &Tensor, expand: bool, residual: bool) -> TestResult<Tensor> {
    let layer = |suffix: &str| format!("{BACKBONE}.{block}_{suffix}");
    let mut h = x.clone();
    if expand {
        h = net.conv2d(&layer("expand_conv"), &h)?;
        h = swish(&net.batch_norm(&layer("expand_bn"), &h)?)?;
    }
    h = net.depthwise_conv2d(&layer("dwconv"), &h)?;
    h = swish(&net.batch_norm(&layer("bn"), &h)?)?;
    // Squeeze-excite: the conv layers carry their own swish / sigmoid.
    let squeezed = h.mean_keepdim((2, 3))?;
    let excite = net.conv2d(
        &layer("se_expand"),
        &net.conv2d(&layer("se_reduce"), &squeezed)?,
    )?;
    h = h.broadcast_mul(&excite)?;
    h = net.conv2d(&layer("project_conv"), &h)?;
    h = net.batch_norm(&layer("project_bn"), &h)?;
    if residual {
        h = (h + x)?;
    }
    Ok(h)
}

/// A BiFPN node: sum -> swish -> SeparableConv2D -> BN.
fn fpn_node(net: &Net, node: &str, inputs: &[&Tensor]) -> TestResult<Tensor> {
    let mut sum = inputs[0].clone();
    for x in &inputs[1..] {
        sum = (sum + *x)?;
    }
    let h = net.separable_conv2d(&format!("{node}_sepconv"), &swish(&sum)?)?;
    net.batch_norm(&format!("{node}_bn"), &h)
}

/// A head (`class_net` or `box_net`) over the three levels: shared
/// separable convs, per-level BN, then Reshape (-1, k) of the NHWC
/// prediction and Concatenate on axis 1.
fn head(net: &Net, name: &str, levels: &[(&str, &Tensor)], k: usize) -> TestResult<Tensor> {
    let mut rows = Vec::new();
    for (level, x) in levels {
        let mut h = (*x).clone();
        for i in 0..2 {
            h = net.separable_conv2d(&format!("{name}_sepconv_{i}"), &h)?;
            h = swish(&net.batch_norm(&format!("{name}_bn_{i}_{level}"), &h)?)?;
        }
        let prediction = net.separable_conv2d(&format!("{name}_predict"), &h)?;
        let nhwc = nchw_to_nhwc(&prediction)?;
        let (n, height, width, channels) = nhwc.dims4()?;
        rows.push(nhwc.reshape((n, height * width * channels / k, k))?);
    }
    Ok(Tensor::cat(&rows, 1)?)
}

/// The detector's forward pass on an NHWC input; returns (class, box).
fn tiny_efficientdet(net: &Net, input: &Tensor) -> TestResult<(Tensor, Tensor)> {
    let x = nhwc_to_nchw(input)?;
    let stem = net.conv2d(&format!("{BACKBONE}.stem_conv"), &x)?;
    let stem = swish(&net.batch_norm(&format!("{BACKBONE}.stem_bn"), &stem)?)?;
    let b1 = mbconv(net, "block1a", &stem, false, false)?;
    let p3 = mbconv(net, "block2a", &b1, true, false)?;
    let p4 = mbconv(net, "block3a", &p3, true, false)?;
    let b4 = mbconv(net, "block4a", &p4, true, false)?;
    let p5 = mbconv(net, "block4b", &b4, true, true)?;

    let p3_in = net.batch_norm("resample_p3_bn", &net.conv2d("resample_p3_conv", &p3)?)?;
    let p4_td = fpn_node(net, "fpn_p4_td", &[&p4, &upsample_nearest_2x(&p5)?])?;
    let p3_out = fpn_node(net, "fpn_p3_out", &[&p3_in, &upsample_nearest_2x(&p4_td)?])?;
    let p3_down = max_pool_same(&p3_out, 3, 2)?;
    let p4_out = fpn_node(net, "fpn_p4_out", &[&p4, &p4_td, &p3_down])?;
    let p4_down = max_pool_same(&p4_out, 3, 2)?;
    let p5_out = fpn_node(net, "fpn_p5_out", &[&p5, &p4_down])?;

    let levels = [("p3", &p3_out), ("p4", &p4_out), ("p5", &p5_out)];
    let classes = head(net, "class_net", &levels, 2)?;
    let boxes = head(net, "box_net", &levels, 4)?;
    Ok((classes, boxes))
}

#[test]
fn tiny_efficientdet_end_to_end() -> TestResult {
    let net = Net::convert(&fixture("tiny_efficientdet_full.h5"))?;
    let (mut io, _) = read_safetensors(&fixture("numerics/tiny_efficientdet.io.safetensors"))?;
    let mut take = |key: &str| {
        io.remove(key)
            .ok_or_else(|| format!("tiny_efficientdet.io.safetensors has no `{key}`"))
    };
    let input = take("input")?;
    let expected_classes = take("output_0")?;
    let expected_boxes = take("output_1")?;
    let (classes, boxes) = tiny_efficientdet(&net, &input)?;
    assert_close(
        "tiny_efficientdet class_net_outputs",
        &classes,
        &expected_classes,
    )?;
    assert_close("tiny_efficientdet box_net_outputs", &boxes, &expected_boxes)?;
    net.check_all_used()
}
