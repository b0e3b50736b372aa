//! The list of tensors a conversion will write: names, dtypes, shapes,
//! where each tensor's bytes come from and how they change on the way.
//! `convert`, `convert --dry-run` and `inspect` all read names from here, so
//! what we show and what we write cannot drift apart.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use regex::Regex;
use serde_json::Value;

use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::export::pytorch::{self, TorchSource};
use crate::export::transform::{self, Step};
use crate::h5::Location;
use crate::json_order::object_in_order;
use crate::model::{Format, Layer, Model, Skipped, Weight};

/// The `__metadata__` key of the JSON object that maps layer paths to classes.
pub const LAYER_CLASSES_KEY: &str = "layer_classes";

/// The `__metadata__` key saying how names are joined (`keras` or `pytorch`).
pub const LAYOUT_KEY: &str = "layout";

/// The header key safetensors keeps for metadata: no tensor may have it.
pub const RESERVED_NAME: &str = "__metadata__";

/// Prefix of optimizer state in output names, apart from the model's layers.
pub const OPTIMIZER_PREFIX: &str = "optimizer";

/// How tensors are named and laid out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Layout {
    /// Keras names (`conv/kernel`) and Keras axes: the bytes of `get_weights()`.
    #[default]
    Keras,
    /// torch.nn names (`conv.weight`) and axes.
    PyTorch,
}

impl Layout {
    /// What joins the parts of a name.
    pub fn separator(self) -> &'static str {
        match self {
            Layout::Keras => "/",
            Layout::PyTorch => ".",
        }
    }

    pub fn id(self) -> &'static str {
        match self {
            Layout::Keras => "keras",
            Layout::PyTorch => "pytorch",
        }
    }
}

/// Everything about a conversion that is not the input.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    pub layout: Layout,
    /// Cast floating tensors to this dtype (integers are left alone).
    pub dtype: Option<Dtype>,
    /// `(pattern, replacement)` applied in order to every final name.
    pub rename: Vec<(Regex, String)>,
    /// Keep only tensors whose final name matches.
    pub include: Option<Regex>,
    /// Drop tensors whose final name matches.
    pub exclude: Option<Regex>,
    /// Layer paths (as `inspect` shows them) to leave out.
    pub skip: Vec<String>,
    /// Add a zero `num_batches_tracked` to BatchNorm layers (PyTorch layout).
    pub num_batches_tracked: bool,
}

/// Where a tensor's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A weight in one of the model's files, as stored.
    Stored {
        file: usize,
        location: Location,
        dtype: Dtype,
        shape: Vec<usize>,
    },
    /// Every element this value (PyTorch parameters Keras does not store).
    Fill(f64),
}

/// One tensor to be written.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    pub name: String,
    /// The Keras-layout name of the weight it comes from.
    pub keras_name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    pub source: Source,
    /// Axis changes on the way out (PyTorch layout).
    pub steps: Vec<Step>,
    pub byte_len: u64,
}

impl PlannedTensor {
    /// Whether the bytes go out exactly as stored, so they can be streamed.
    pub fn is_verbatim(&self) -> bool {
        matches!(&self.source, Source::Stored { dtype, .. } if *dtype == self.dtype)
            && self.steps.is_empty()
    }
}

/// Everything the writer needs, decided before a byte of data is read.
#[derive(Debug, Clone)]
pub struct Plan {
    pub tensors: Vec<PlannedTensor>,
    /// The safetensors `__metadata__` (string to string).
    pub metadata: BTreeMap<String, String>,
    /// Things a person should know (layers skipped, ...).
    pub notes: Vec<String>,
    /// Every dataset of the input that is not written, and why: what the
    /// reader set aside ([`Model::skipped`]) and what the options leave out.
    pub skipped: Vec<Skipped>,
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

/// A tensor before renaming and filtering.
struct Draft {
    name: String,
    keras_name: String,
    /// Where the weight is in the file, for messages.
    origin: String,
    /// The dataset it is read from; `None` for a filled-in tensor.
    dataset: Option<String>,
    source: Source,
    source_dtype: Dtype,
    source_shape: Vec<usize>,
    steps: Vec<Step>,
}

impl Draft {
    fn stored(name: String, layer_path: &[String], weight: &Weight, steps: Vec<Step>) -> Draft {
        Draft {
            name,
            keras_name: tensor_name(layer_path, weight),
            origin: weight.stored_name.clone(),
            dataset: Some(weight.dataset.clone()),
            source: Source::Stored {
                file: weight.file,
                location: weight.location.clone(),
                dtype: weight.dtype,
                shape: weight.shape.clone(),
            },
            source_dtype: weight.dtype,
            source_shape: weight.shape.clone(),
            steps,
        }
    }
}

/// Names every weight of `model`, applies the layout, casts, renames and
/// filters, and checks that no two names collide.
pub fn plan(model: &Model, source: &Path, options: &PlanOptions) -> Result<Plan> {
    let fail = |kind: ErrorKind| Error::new(source, kind);
    if options.layout == Layout::PyTorch && model.format == Format::Keras1H5 {
        return Err(fail(ErrorKind::Unsupported(
            "Keras 0.x files keep Theano-ordered, flipped kernels and a BatchNorm standard \
             deviation instead of a variance; PyTorch layout is not written for them \
             (the Keras layout is)"
                .into(),
        )));
    }
    let mut drafts = Vec::new();
    let mut notes = Vec::new();
    let mut skipped = model.skipped.clone();
    let mut torch_options: Vec<(String, Value)> = Vec::new();
    for layer in &model.layers {
        let path = layer.path_string();
        if options.skip.contains(&path) {
            notes.push(format!("layer `{path}` skipped (--skip)"));
            skipped.extend(layer.weights.iter().map(|w| Skipped {
                dataset: w.dataset.clone(),
                reason: format!("layer `{path}` left out (--skip)"),
            }));
            continue;
        }
        match options.layout {
            Layout::Keras => {
                for w in &layer.weights {
                    drafts.push(Draft::stored(
                        tensor_name(&layer.path, w),
                        &layer.path,
                        w,
                        Vec::new(),
                    ));
                }
            }
            Layout::PyTorch => {
                drafts.extend(torch_drafts(layer, options, source, theano_kernels(model))?);
                if let Some(o) = pytorch::layer_options(layer) {
                    torch_options.push((layer.path.join("."), o));
                }
            }
        }
    }
    if let Some(unknown) = options
        .skip
        .iter()
        .find(|s| !model.layers.iter().any(|l| &&l.path_string() == s))
    {
        return Err(fail(ErrorKind::Unsupported(format!(
            "--skip names `{unknown}`, which is no layer of this model (see `inspect`)"
        ))));
    }
    let optimizer_path = [OPTIMIZER_PREFIX.to_string()];
    for w in &model.optimizer {
        let name = tensor_name(&optimizer_path, w).replace('/', options.layout.separator());
        drafts.push(Draft::stored(name, &optimizer_path, w, Vec::new()));
    }

    let mut tensors = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    for draft in drafts {
        let mut name = draft.name;
        for (pattern, replacement) in &options.rename {
            name = pattern
                .replace_all(&name, replacement.as_str())
                .into_owned();
        }
        if options
            .include
            .as_ref()
            .is_some_and(|re| !re.is_match(&name))
            || options
                .exclude
                .as_ref()
                .is_some_and(|re| re.is_match(&name))
        {
            if let Some(dataset) = draft.dataset {
                skipped.push(Skipped {
                    dataset,
                    reason: format!("`{name}` left out by --include/--exclude"),
                });
            }
            continue;
        }
        if name == RESERVED_NAME {
            return Err(fail(ErrorKind::Unsupported(format!(
                "weight `{}` would be written as a tensor named `{RESERVED_NAME}`, the key \
                 safetensors reserves for metadata (every reader would reject the file); \
                 give it another name with --rename",
                draft.origin
            ))));
        }
        if let Some(first) = seen.insert(name.clone(), draft.origin.clone()) {
            return Err(fail(ErrorKind::NameClash {
                name,
                first,
                second: draft.origin,
            }));
        }
        let dtype =
            transform::casts(draft.source_dtype, options.dtype).unwrap_or(draft.source_dtype);
        let shape = transform::shape_after(&draft.source_shape, &draft.steps);
        let count: u64 = shape.iter().map(|&d| d as u64).product();
        tensors.push(PlannedTensor {
            name,
            keras_name: draft.keras_name,
            dtype,
            byte_len: count * dtype.size() as u64,
            shape,
            source: draft.source,
            steps: draft.steps,
        });
    }
    let mut metadata = metadata(model, source, options.layout);
    if !torch_options.is_empty() {
        metadata.insert(
            "pytorch_options".into(),
            object_in_order(torch_options.iter().map(|(k, v)| (k.as_str(), v.clone()))),
        );
    }
    if let Some(dtype) = options.dtype {
        metadata.insert("dtype".into(), dtype.numpy_name().into());
    }
    Ok(Plan {
        tensors,
        metadata,
        notes,
        skipped,
    })
}

/// Refuses a plan that writes nothing: an empty output is never what a
/// user asked for, and exit 0 would hide that the input held no weights
/// we could read.
pub fn ensure_tensors(plan: &Plan, model: &Model, source: &Path) -> Result<()> {
    if !plan.tensors.is_empty() {
        return Ok(());
    }
    let weights: usize =
        model.layers.iter().map(|l| l.weights.len()).sum::<usize>() + model.optimizer.len();
    let why = if weights > 0 {
        format!("all {weights} weights were left out by --include, --exclude or --skip")
    } else if plan.skipped.is_empty() {
        "the file holds no weights".to_string()
    } else {
        format!(
            "the file holds no model weights; its {} dataset(s) are all skipped ({})",
            plan.skipped.len(),
            skip_reasons(&plan.skipped).join("; ")
        )
    };
    Err(Error::new(source, ErrorKind::NothingToWrite(why)))
}

/// Each distinct skip reason with how many datasets it covers, in first-seen order.
pub fn skip_reasons(skipped: &[Skipped]) -> Vec<String> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for s in skipped {
        match counts.iter_mut().find(|(r, _)| *r == s.reason) {
            Some((_, n)) => *n += 1,
            None => counts.push((&s.reason, 1)),
        }
    }
    counts
        .into_iter()
        .map(|(reason, n)| format!("{n} x {reason}"))
        .collect()
}

/// Whether convolution kernels were saved by Theano, which convolves
/// (flipped kernels) where TensorFlow and PyTorch cross-correlate.
fn theano_kernels(model: &Model) -> bool {
    model.backend.as_deref() == Some("theano")
}

/// Classes whose kernels Keras's own loader flips when a Theano file is
/// loaded into another backend (`convert_kernel`).
const FLIPPED_WITH_THEANO: &[&str] = &["Conv1D", "Conv2D", "Conv3D", "Conv2DTranspose"];

/// The PyTorch tensors of one layer, or an error naming it.
fn torch_drafts(
    layer: &Layer,
    options: &PlanOptions,
    source: &Path,
    theano: bool,
) -> Result<Vec<Draft>> {
    let flip = theano
        && layer
            .class
            .as_deref()
            .is_some_and(|c| FLIPPED_WITH_THEANO.contains(&c));
    let path = layer.path_string();
    let tensors = pytorch::layer_tensors(layer, options.num_batches_tracked).map_err(|e| {
        Error::new(
            source,
            ErrorKind::Unsupported(format!(
                "layer `{path}` cannot be written in PyTorch layout: {}; pass --config CONFIG_JSON if the file lacks the class, or --skip {path} to leave the layer out",
                e.0
            )),
        )
    })?;
    let prefix = layer.path.join(".");
    let joined = |name: &str| {
        if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        }
    };
    Ok(tensors
        .into_iter()
        .map(|t| {
            let shape = pytorch::torch_shape(&t);
            match t.source {
                TorchSource::Weight(w) if flip && w.label == "kernel" => {
                    // Every axis but the last two (in, out) is spatial.
                    let spatial = (0..w.shape.len().saturating_sub(2)).collect();
                    let mut steps = vec![Step::Flip(spatial)];
                    steps.extend(t.steps);
                    Draft::stored(joined(&t.name), &layer.path, w, steps)
                }
                TorchSource::Weight(w) => Draft::stored(joined(&t.name), &layer.path, w, t.steps),
                TorchSource::Fill { value, like } => {
                    let counter = t.name == "num_batches_tracked";
                    Draft {
                        keras_name: format!("{}/({})", path, t.name),
                        origin: format!("a {} filled in for layer `{path}`", t.name),
                        dataset: None,
                        name: joined(&t.name),
                        source: Source::Fill(value),
                        source_dtype: if counter { Dtype::I64 } else { like.dtype },
                        source_shape: shape,
                        steps: Vec::new(),
                    }
                }
            }
        })
        .collect())
}

fn metadata(model: &Model, source: &Path, layout: Layout) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("format".into(), "keras".into());
    m.insert(LAYOUT_KEY.into(), layout.id().into());
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
    // Every layer path (as the output names spell it), with its class where
    // the file says it, in model order: readers of the output can group
    // tensors back into layers.
    let paths: Vec<String> = model
        .layers
        .iter()
        .map(|l| l.path.join(layout.separator()))
        .collect();
    let classes = paths
        .iter()
        .zip(&model.layers)
        .map(|(p, l)| (p.as_str(), Value::from(l.class.clone())));
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
        let err = plan(&model, &fixture, &PlanOptions::default()).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::NameClash { .. }));
        let message = err.to_string();
        assert!(message.contains("classic_conv2d_full.h5"), "{message}");
        assert!(message.contains("`conv2d/kernel`"), "{message}");
        assert!(message.contains("conv2d/other_scope/kernel:0"), "{message}");
    }
}
