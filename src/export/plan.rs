//! The list of tensors a conversion will write: names, dtypes, shapes,
//! where each tensor's bytes come from and how they change on the way.
//! `convert`, `convert --dry-run` and `inspect` all read names from here, so
//! what we show and what we write cannot drift apart.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use regex::Regex;

use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::export::metadata::{self, TorchMetadata};
use crate::export::presets::{self, Preset};
use crate::export::pytorch::{self, TorchSource};
use crate::export::rename::{RenameRule, Renamer};
use crate::export::shared::{Dims, Interner, Steps};
use crate::export::transform::{self, Step};
use crate::model::Location;
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

    /// A stable identifier, recorded as `layout` in `__metadata__`.
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
    /// Keras names and axes, or torch.nn names and axes.
    pub layout: Layout,
    /// Cast floating tensors to this dtype (integers are left alone).
    pub dtype: Option<Dtype>,
    /// Rules applied in order to every final name.
    pub rename: Vec<RenameRule>,
    /// Keep only tensors whose final name matches.
    pub include: Option<Regex>,
    /// Drop tensors whose final name matches.
    pub exclude: Option<Regex>,
    /// Layer paths (as `inspect` shows them) to leave out.
    pub skip: Vec<String>,
    /// Add a zero `num_batches_tracked` to BatchNorm layers (PyTorch layout).
    pub num_batches_tracked: bool,
    /// `(layer path, class)`: take the layer as this class in PyTorch
    /// layout, whatever the file says or its weights suggest.
    pub classes: Vec<(String, String)>,
    /// PyTorch layout: refuse a layer with no PyTorch equivalent instead
    /// of writing it in Keras layout.
    pub strict: bool,
    /// A shipped mapping onto a PyTorch model's names, applied before
    /// `rename`; every tensor must be placed by it.
    pub preset: Option<&'static Preset>,
    /// Leave [`PlannedTensor::keras_name`] unset: the writer never reads
    /// it, and a PyTorch-layout plan of 100,000 layers held 200,000 of
    /// them (only `convert --dry-run` lists them).
    pub drop_keras_names: bool,
}

/// Where a tensor's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A weight in one of the model's files, as stored.
    Stored {
        /// Which of the model's files holds it.
        file: usize,
        /// Where in that file.
        location: Location,
        /// Its stored dtype.
        dtype: Dtype,
        /// Its stored shape.
        shape: Dims,
    },
    /// Every element this value (PyTorch parameters Keras does not store).
    Fill(f64),
    /// Several sources of one dtype and shape, in order, stacked along a
    /// new first axis; the tensor's steps apply to each. A preset writes
    /// AutoML's per-edge fusion scalars (`WSM`, `WSM_1`, ...) as the one
    /// vector effdet holds.
    Stacked(Vec<Source>),
}

/// One tensor to be written.
#[derive(Debug, Clone)]
pub struct PlannedTensor {
    /// The name it is written under.
    pub name: String,
    /// The Keras-layout name of the weight it comes from, where it is not
    /// `name` (see [`PlannedTensor::keras_name`]): in the Keras layout it
    /// rarely is, and 200,000 copies of the same names are not kept.
    pub keras_name: Option<Box<str>>,
    /// Its dtype in the output (after any cast).
    pub dtype: Dtype,
    /// Its shape in the output.
    pub shape: Dims,
    /// Where its bytes come from.
    pub source: Source,
    /// Axis changes on the way out (PyTorch layout).
    pub steps: Steps,
    /// Its size in the output, in bytes.
    pub byte_len: u64,
}

impl PlannedTensor {
    /// The Keras-layout name of the weight it comes from (its own name
    /// if the plan was made with [`PlanOptions::drop_keras_names`]).
    pub fn keras_name(&self) -> &str {
        self.keras_name.as_deref().unwrap_or(&self.name)
    }

    /// Whether the bytes go out exactly as stored, so they can be streamed.
    pub fn is_verbatim(&self) -> bool {
        matches!(&self.source, Source::Stored { dtype, .. } if *dtype == self.dtype)
            && self.steps.is_empty()
    }
}

/// Everything the writer needs, decided before a byte of data is read.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The tensors, in the order they are written.
    pub tensors: Vec<PlannedTensor>,
    /// The safetensors `__metadata__` (string to string).
    pub metadata: BTreeMap<String, String>,
    /// Things a person should know (layers skipped, ...).
    pub notes: Vec<String>,
    /// Things a person should check: a class chosen among several, a layer
    /// written in Keras layout, a rename rule that matched nothing.
    pub warnings: Vec<String>,
    /// Every dataset of the input that is not written, and why: what the
    /// reader set aside ([`Model::skipped`]) and what the options leave out.
    pub skipped: Vec<Skipped>,
    /// How many weights the model held (optimizer state included when
    /// read), before `--skip`, `--include` and `--exclude` left any out.
    pub weights: usize,
}

impl Plan {
    /// The bytes of tensor data all tensors together take.
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
        .chain(std::iter::once(&*weight.label))
        .collect::<Vec<_>>()
        .join("/")
}

/// A tensor before renaming and filtering. What it takes from the model
/// it borrows: a model of 100,000 layers has 200,000 of these.
struct Draft<'a> {
    name: String,
    keras_name: KerasName<'a>,
    /// Where the weight is in the file, for messages.
    origin: Cow<'a, str>,
    /// The dataset it is read from; `None` for a filled-in tensor.
    dataset: Option<&'a str>,
    /// The model layer it belongs to (`None` for optimizer state) and its
    /// name within the layer, so metadata can follow renamed layers.
    layer: Option<usize>,
    within: String,
    from: Values<'a>,
    steps: Vec<Step>,
}

/// A draft's Keras-layout name, made when it becomes a tensor.
enum KerasName<'a> {
    /// [`tensor_name`] of a weight in the layer at a path.
    Of(&'a [String], &'a Weight),
    Text(String),
}

impl KerasName<'_> {
    fn text(&self) -> Cow<'_, str> {
        match self {
            KerasName::Of(path, weight) => Cow::Owned(tensor_name(path, weight)),
            KerasName::Text(text) => Cow::Borrowed(text),
        }
    }
}

/// Where a draft's values come from.
enum Values<'a> {
    Weight(&'a Weight),
    Fill {
        value: f64,
        dtype: Dtype,
        shape: Vec<usize>,
    },
}

impl Values<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Values::Weight(w) => w.dtype,
            Values::Fill { dtype, .. } => *dtype,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Values::Weight(w) => &w.shape,
            Values::Fill { shape, .. } => shape,
        }
    }

    fn source(&self, interner: &mut Interner) -> Source {
        match self {
            Values::Weight(w) => Source::Stored {
                file: w.file,
                location: w.location.clone(),
                dtype: w.dtype,
                shape: interner.dims(&w.shape),
            },
            Values::Fill { value, .. } => Source::Fill(*value),
        }
    }
}

impl<'a> Draft<'a> {
    fn stored(
        name: String,
        layer_path: &'a [String],
        weight: &'a Weight,
        steps: Vec<Step>,
    ) -> Draft<'a> {
        Draft {
            name,
            keras_name: KerasName::Of(layer_path, weight),
            origin: Cow::Borrowed(weight.stored_name()),
            dataset: Some(&weight.dataset),
            layer: None,
            within: String::new(),
            from: Values::Weight(weight),
            steps,
        }
    }
}

/// Names every weight of `model`, applies the layout, casts, renames and
/// filters, and checks that no two names collide.
///
/// The plan takes each layer's weights as it places them (the layers keep
/// their paths, classes and configs): what the plan needs of a weight it
/// holds itself, so a model of 100,000 layers is not held twice, once as
/// weights and once as tensors.
pub fn plan(model: &mut Model, source: &Path, options: &PlanOptions) -> Result<Plan> {
    let fail = |kind: ErrorKind| Error::new(source, kind);
    if options.layout == Layout::PyTorch && model.format == Format::Keras1H5 {
        return Err(fail(ErrorKind::Unsupported(
            "Keras 0.x files keep Theano-ordered, flipped kernels and a BatchNorm standard \
             deviation instead of a variance; PyTorch layout is not written for them \
             (the Keras layout is)"
                .into(),
        )));
    }
    if let Some(preset) = options.preset.filter(|_| options.layout != Layout::PyTorch) {
        return Err(fail(ErrorKind::Unsupported(format!(
            "preset {} writes PyTorch layout; it cannot be combined with the Keras layout",
            preset.name
        ))));
    }
    let known = |p: &String| model.layers.iter().any(|l| &l.path_string() == p);
    if let Some(unknown) = options
        .skip
        .iter()
        .chain(options.classes.iter().map(|(p, _)| p))
        .find(|p| !known(p))
    {
        return Err(fail(ErrorKind::Unsupported(format!(
            "--skip or --class names `{unknown}`, which is no layer of this model (see `inspect`)"
        ))));
    }
    // Sized once: growing by doubling holds two copies at the end.
    let weights = model.layers.iter().map(|l| l.weights.len()).sum::<usize>();
    let preset_rules = options.preset.map(Preset::rules).unwrap_or_default();
    let mut placing = Placing {
        options,
        source,
        tensors: Vec::with_capacity(weights + model.optimizer.len()),
        origins: Vec::with_capacity(weights + model.optimizer.len()),
        interner: Interner::default(),
        skipped: model.skipped.clone(),
        preset_renamer: Renamer::new(&preset_rules),
        renamer: Renamer::new(&options.rename),
        renamed_layers: vec![None; model.layers.len()],
        stacks: HashMap::new(),
        notes: Vec::new(),
        warnings: Vec::new(),
        torch: TorchMetadata::default(),
        preprocessing_dropped: false,
    };
    let separator = options.layout.separator();
    // Each layer's tensors are placed as soon as they are drafted: a list
    // of every draft first would hold 200,000 of them for 100,000 layers.
    let theano = theano_kernels(model);
    for index in 0..model.layers.len() {
        crate::cancel::check(source)?;
        placing.place_layer(index, &model.layers[index], theano)?;
        // The plan now holds what it needs of these weights: the space
        // they free serves the plan's own small allocations. What those do
        // not take back would stay resident beside the plan's tensor list,
        // so it is given back as it goes (for 100,000 layers in PyTorch
        // layout, 117-121 MiB at the peak against 122-134 MiB, for 0.03 s).
        model.layers[index].weights = Vec::new();
        if index % RELEASE_EVERY_LAYERS == RELEASE_EVERY_LAYERS - 1 {
            crate::memory::release_freed();
        }
    }
    let optimizer_path = [OPTIMIZER_PREFIX.to_string()];
    for w in &model.optimizer {
        let name = tensor_name(&optimizer_path, w).replace('/', separator);
        placing.place(Draft::stored(name, &optimizer_path, w, Vec::new()))?;
    }
    placing.refuse_clashes()?;
    let Placing {
        mut tensors,
        skipped,
        renamer,
        renamed_layers,
        stacks,
        mut notes,
        mut warnings,
        torch,
        preprocessing_dropped,
        mut interner,
        ..
    } = placing;
    let mut stacks: Vec<(String, Stack)> = stacks.into_iter().collect();
    stacks.sort_by_key(|(_, stack)| stack.at);
    for (name, stack) in stacks {
        let at = stack.at;
        tensors[at] = stacked(name, stack.parts, options, &mut interner)
            .map_err(|e| fail(ErrorKind::Unsupported(e)))?;
    }
    for rule in renamer.unused() {
        warnings.push(format!("rename rule `{rule}` matched no tensor name"));
    }
    let layer_keys = metadata::layer_keys(model, separator, &renamed_layers, &mut notes);
    let mut metadata = metadata::metadata(model, source, options.layout, &layer_keys, &torch);
    if let Some(dtype) = options.dtype {
        metadata.insert("dtype".into(), dtype.numpy_name().into());
    }
    if let Some(preset) = options.preset {
        metadata.insert("preset".into(), preset.name.into());
        for (key, value) in preset.metadata {
            metadata.insert((*key).into(), (*value).into());
        }
        if preprocessing_dropped {
            notes.push(preset.input_note.to_string());
        }
        warnings.extend(preset.caveats.iter().map(|c| c.to_string()));
    }
    Ok(Plan {
        tensors,
        metadata,
        notes,
        warnings,
        skipped,
        weights: weights + model.optimizer.len(),
    })
}

/// How many layers are placed between two returns of freed memory to the
/// system: each return walks the allocator's free lists.
const RELEASE_EVERY_LAYERS: usize = 8192;

/// The tensors placed so far, what placing them needs, and what it found
/// to tell the user.
struct Placing<'o> {
    options: &'o PlanOptions,
    source: &'o Path,
    tensors: Vec<PlannedTensor>,
    /// Where each tensor's weight is in the file, for messages.
    origins: Vec<Box<str>>,
    interner: Interner,
    skipped: Vec<Skipped>,
    preset_renamer: Renamer<'o>,
    renamer: Renamer<'o>,
    renamed_layers: Vec<Option<metadata::LayerPrefix>>,
    /// Tensors a preset builds from several (`name[i]`), by final name.
    stacks: HashMap<String, Stack>,
    notes: Vec<String>,
    warnings: Vec<String>,
    torch: TorchMetadata,
    /// Whether a preset left out a preprocessing layer.
    preprocessing_dropped: bool,
}

impl Placing<'_> {
    fn fail(&self, kind: ErrorKind) -> Error {
        Error::new(self.source, kind)
    }

    /// Drafts the tensors of layer `index` in the plan's layout and places
    /// them, or sets its weights aside where the options leave it out.
    fn place_layer(&mut self, index: usize, layer: &Layer, theano: bool) -> Result<()> {
        let options = self.options;
        let separator = options.layout.separator();
        let path = layer.path_string();
        if options.skip.contains(&path) {
            self.notes.push(format!("layer `{path}` skipped (--skip)"));
            self.skipped.extend(layer.weights.iter().map(|w| Skipped {
                dataset: w.dataset.clone(),
                reason: format!("layer `{path}` left out (--skip)"),
            }));
            return Ok(());
        }
        if let Some(preset) = options.preset {
            if let Some(class) = presets::preprocessing_class(layer)
                .filter(|class| preset.preprocessing.contains(class))
            {
                self.skipped.extend(layer.weights.iter().map(|w| Skipped {
                    dataset: w.dataset.clone(),
                    reason: format!(
                        "{class} layer `{path}`: in-model preprocessing, left out by preset {}",
                        preset.name
                    ),
                }));
                self.preprocessing_dropped = true;
                return Ok(());
            }
        }
        let layer_drafts = match options.layout {
            Layout::Keras => keras_drafts(layer, separator),
            Layout::PyTorch => {
                let class = options
                    .classes
                    .iter()
                    .find(|(p, _)| *p == path)
                    .map(|(_, c)| c.as_str());
                match pytorch::layer_tensors(layer, options.num_batches_tracked, class) {
                    Ok(resolved) => {
                        if let Some(choice) = &resolved.choice {
                            self.warnings.push(format!("layer `{path}`: {choice}"));
                        }
                        self.torch
                            .options
                            .push((index, pytorch::layer_options(layer, &resolved).to_string()));
                        torch_drafts(layer, resolved, theano)
                    }
                    Err(e) if options.strict || class.is_some() => {
                        return Err(self.fail(ErrorKind::Unsupported(format!(
                            "layer `{path}` cannot be written in PyTorch layout: {}; pass --class {path}=CLASS or --config CONFIG_JSON if the file lacks the class, or --skip {path} to leave the layer out",
                            e.0
                        ))))
                    }
                    Err(e) => {
                        // A preset places every tensor or refuses the file,
                        // so its rules say where such weights go.
                        if options.preset.is_none() {
                            self.warnings.push(format!(
                                "layer `{path}` has no PyTorch layout ({}); written as stored, under its Keras labels (--strict refuses instead)",
                                e.0
                            ));
                        }
                        self.torch.as_stored.push(index);
                        keras_drafts(layer, separator)
                    }
                }
            }
        };
        for (within, mut draft) in layer_drafts {
            draft.layer = Some(index);
            draft.within = within;
            self.place(draft)?;
        }
        Ok(())
    }

    /// Renames and filters one draft, and adds it as a tensor (or as a
    /// part of a stacked one).
    fn place(&mut self, mut draft: Draft<'_>) -> Result<()> {
        let options = self.options;
        let separator = options.layout.separator();
        let mut name = std::mem::take(&mut draft.name);
        let mut part = None;
        if let Some(preset) = options.preset {
            let (placed, matched) = self
                .preset_renamer
                .apply(&name)
                .map_err(|e| self.fail(ErrorKind::Unsupported(e)))?;
            if !matched {
                return Err(self.fail(ErrorKind::Unsupported(format!(
                    "not a {} file for preset {}: tensor `{name}` (from `{}`) has no place in {} \
                     (use --layout pytorch with --rename for other models)",
                    preset.source, preset.name, draft.origin, preset.target
                ))));
            }
            name = match stack_part(&placed) {
                Some((base, index)) => {
                    part = Some(index);
                    base.to_string()
                }
                None => placed,
            };
        }
        let (name, _) = self
            .renamer
            .apply(&name)
            .map_err(|e| self.fail(ErrorKind::Unsupported(e)))?;
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
                self.skipped.push(Skipped {
                    dataset: dataset.to_string(),
                    reason: format!("`{name}` left out by --include/--exclude"),
                });
            }
            return Ok(());
        }
        if name == RESERVED_NAME {
            return Err(self.fail(ErrorKind::Unsupported(format!(
                "weight `{}` would be written as a tensor named `{RESERVED_NAME}`, the key \
                 safetensors reserves for metadata (every reader would reject the file); \
                 give it another name with --rename",
                draft.origin
            ))));
        }
        if let Some(index) = part {
            let part = Part::new(draft, &mut self.interner);
            if let Some(stack) = self.stacks.get_mut(&name) {
                stack.parts.push((index, part));
                return Ok(());
            }
            // Its place in the output; the tensor is built once all its
            // parts are known.
            self.origins.push(part.origin.as_str().into());
            self.stacks.insert(
                name.clone(),
                Stack {
                    at: self.tensors.len(),
                    parts: vec![(index, part)],
                },
            );
            self.tensors.push(PlannedTensor {
                name,
                keras_name: None,
                dtype: Dtype::F32,
                shape: self.interner.dims(&[]),
                source: Source::Stacked(Vec::new()),
                steps: self.interner.steps(Vec::new()),
                byte_len: 0,
            });
            return Ok(());
        }
        if let Some(index) = draft.layer {
            metadata::LayerPrefix::add(
                &mut self.renamed_layers[index],
                &draft.within,
                &name,
                separator,
            );
        }
        let source_dtype = draft.from.dtype();
        let dtype = transform::casts(source_dtype, options.dtype).unwrap_or(source_dtype);
        let shape = transform::shape_after(draft.from.shape(), &draft.steps);
        let count: u64 = shape.iter().map(|&d| d as u64).product();
        let keras_name = if options.drop_keras_names {
            None
        } else {
            let keras_name = draft.keras_name.text();
            (keras_name != name).then(|| keras_name.into())
        };
        self.origins.push(draft.origin.into());
        self.tensors.push(PlannedTensor {
            name,
            keras_name,
            dtype,
            byte_len: count * dtype.size() as u64,
            shape: self.interner.dims(&shape),
            source: draft.from.source(&mut self.interner),
            steps: self.interner.steps(draft.steps),
        });
        Ok(())
    }

    /// Refuses two tensors under one name, naming the first pair met in
    /// output order (checked once all are placed: sorting their positions
    /// by name costs 4 bytes a tensor, where a set of the names would copy
    /// every name).
    fn refuse_clashes(&self) -> Result<()> {
        let tensors = &self.tensors;
        let mut by_name: Vec<u32> = (0..tensors.len() as u32).collect();
        by_name.sort_unstable_by(|&a, &b| {
            tensors[a as usize]
                .name
                .cmp(&tensors[b as usize].name)
                .then(a.cmp(&b))
        });
        // For each name held twice: its first and second positions.
        let clash = by_name
            .windows(2)
            .enumerate()
            .filter(|(_, pair)| tensors[pair[0] as usize].name == tensors[pair[1] as usize].name)
            .filter(|(k, pair)| {
                *k == 0 || tensors[by_name[k - 1] as usize].name != tensors[pair[0] as usize].name
            })
            .map(|(_, pair)| (pair[0] as usize, pair[1] as usize))
            .min_by_key(|&(_, second)| second);
        match clash {
            None => Ok(()),
            Some((first, second)) => Err(self.fail(ErrorKind::NameClash {
                name: tensors[second].name.clone(),
                first: self.origins[first].to_string(),
                second: self.origins[second].to_string(),
            })),
        }
    }
}

/// The tensors a preset stacks into one, as they arrive: (position, part).
struct Stack {
    /// Where the stacked tensor goes in the output's order: its first part's place.
    at: usize,
    parts: Vec<(usize, Part)>,
}

/// What a stacked tensor needs of one part's draft, kept until every part
/// has arrived (the weights a draft borrows are dropped as each layer is
/// placed).
struct Part {
    origin: String,
    keras_name: String,
    dtype: Dtype,
    shape: Vec<usize>,
    steps: Vec<Step>,
    source: Source,
}

impl Part {
    fn new(draft: Draft<'_>, interner: &mut Interner) -> Part {
        Part {
            origin: draft.origin.into_owned(),
            keras_name: draft.keras_name.text().into_owned(),
            dtype: draft.from.dtype(),
            shape: draft.from.shape().to_vec(),
            source: draft.from.source(interner),
            steps: draft.steps,
        }
    }
}

/// `base[i]`: a preset's name for part `i` of a tensor stacked from several.
fn stack_part(name: &str) -> Option<(&str, usize)> {
    let (base, index) = name.strip_suffix(']')?.rsplit_once('[')?;
    let index = index
        .parse()
        .ok()
        .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))?;
    Some((base, index))
}

/// One tensor from its parts, stacked in index order along a new first
/// axis; the parts must be numbered 0, 1, ... with none missing or twice,
/// and agree in dtype, shape and steps.
fn stacked(
    name: String,
    mut parts: Vec<(usize, Part)>,
    options: &PlanOptions,
    interner: &mut Interner,
) -> std::result::Result<PlannedTensor, String> {
    parts.sort_by_key(|(index, _)| *index);
    for (want, (got, draft)) in parts.iter().enumerate() {
        if *got != want {
            return Err(format!(
                "tensor `{name}` is stacked from {} parts numbered from 0, but part {want} is \
                 missing or named twice (`{}` is part {got})",
                parts.len(),
                draft.origin
            ));
        }
    }
    let first = &parts[0].1;
    if let Some((_, odd)) = parts
        .iter()
        .find(|(_, p)| p.dtype != first.dtype || p.shape != first.shape || p.steps != first.steps)
    {
        return Err(format!(
            "tensor `{name}`: `{}` and `{}` differ in dtype or shape, so they cannot be stacked",
            first.origin, odd.origin
        ));
    }
    let source_dtype = first.dtype;
    let dtype = transform::casts(source_dtype, options.dtype).unwrap_or(source_dtype);
    let mut shape = vec![parts.len()];
    shape.extend(transform::shape_after(&first.shape, &first.steps));
    let count: u64 = shape.iter().map(|&d| d as u64).product();
    let steps = first.steps.clone();
    let keras_name = (!options.drop_keras_names).then(|| {
        let names: Vec<&str> = parts.iter().map(|(_, p)| p.keras_name.as_str()).collect();
        names.join(" + ").into()
    });
    Ok(PlannedTensor {
        name,
        keras_name,
        dtype,
        byte_len: count * dtype.size() as u64,
        shape: interner.dims(&shape),
        steps: interner.steps(steps),
        source: Source::Stacked(parts.into_iter().map(|(_, p)| p.source).collect()),
    })
}

/// A layer's weights under their Keras labels, joined by `separator`:
/// (name within the layer, draft).
fn keras_drafts<'a>(layer: &'a Layer, separator: &str) -> Vec<(String, Draft<'a>)> {
    layer
        .weights
        .iter()
        .map(|w| {
            let within = tensor_name(&[], w).replace('/', separator);
            let name = join(&layer.path, separator, &within);
            (within, Draft::stored(name, &layer.path, w, Vec::new()))
        })
        .collect()
}

/// `path` and a name within it, joined by `separator`.
fn join(path: &[String], separator: &str, within: &str) -> String {
    if path.is_empty() {
        within.to_string()
    } else {
        format!("{}{separator}{within}", path.join(separator))
    }
}

/// Refuses a plan that writes nothing: an empty output is never what a
/// user asked for, and exit 0 would hide that the input held no weights
/// we could read.
pub fn ensure_tensors(plan: &Plan, source: &Path) -> Result<()> {
    if !plan.tensors.is_empty() {
        return Ok(());
    }
    let why = if plan.weights > 0 {
        format!(
            "all {} weights were left out by --include, --exclude or --skip",
            plan.weights
        )
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
    let mut index: HashMap<&str, usize> = HashMap::new();
    for s in skipped {
        match index.get(s.reason.as_str()) {
            Some(&i) => counts[i].1 += 1,
            None => {
                index.insert(&s.reason, counts.len());
                counts.push((&s.reason, 1));
            }
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

/// The drafts of a layer's PyTorch tensors: (name within the layer, draft).
fn torch_drafts<'a>(
    layer: &'a Layer,
    resolved: pytorch::LayerTensors<'a>,
    theano: bool,
) -> Vec<(String, Draft<'a>)> {
    let flip = theano && FLIPPED_WITH_THEANO.contains(&resolved.class.as_str());
    let path = layer.path_string();
    resolved
        .tensors
        .into_iter()
        .map(|t| {
            let shape = pytorch::torch_shape(&t);
            let name = join(&layer.path, ".", &t.name);
            let draft = match t.source {
                TorchSource::Weight(w) if flip && w.label == "kernel" => {
                    // Every axis but the last two (in, out) is spatial.
                    let spatial = (0..w.shape.len().saturating_sub(2)).collect();
                    let mut steps = vec![Step::Flip(spatial)];
                    steps.extend(t.steps);
                    Draft::stored(name, &layer.path, w, steps)
                }
                TorchSource::Weight(w) => Draft::stored(name, &layer.path, w, t.steps),
                TorchSource::Fill { value, like } => {
                    let counter = t.name == "num_batches_tracked";
                    Draft {
                        keras_name: KerasName::Text(format!("{}/({})", path, t.name)),
                        origin: Cow::Owned(format!("a {} filled in for layer `{path}`", t.name)),
                        dataset: None,
                        layer: None,
                        within: String::new(),
                        name,
                        from: Values::Fill {
                            value,
                            dtype: if counter { Dtype::I64 } else { like.dtype },
                            shape,
                        },
                        steps: Vec::new(),
                    }
                }
            };
            (t.name, draft)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keras::{self, ReadOptions};

    /// A model of one layer `node` holding scalars under these labels.
    fn scalars(labels: &[(&str, &[usize])]) -> Model {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5");
        let mut model = keras::open(&fixture, &ReadOptions::default()).unwrap();
        let like = model.layers[0].weights[0].clone();
        model.layers = vec![Layer {
            path: vec!["node".into()],
            class: None,
            config: None,
            weights: labels
                .iter()
                .enumerate()
                .map(|(i, (label, shape))| Weight {
                    label: label.to_string().into(),
                    stored: crate::model::StoredName::InDataset(1),
                    dataset: format!("/node/{label}"),
                    shape: shape.to_vec(),
                    location: Location::Bundle(i),
                    ..like.clone()
                })
                .collect(),
        }];
        model
    }

    fn stacking(rules: &'static str) -> PlanOptions {
        PlanOptions {
            layout: Layout::PyTorch,
            preset: Some(Preset::with_rules(rules)),
            ..PlanOptions::default()
        }
    }

    const WSM: &str = "\\.WSM$ => .w[0]\n\\.WSM_(\\d+)$ => .w[$1]\n^node\\.b$ => bias";

    #[test]
    fn a_preset_stacks_parts_in_index_order_where_the_first_arrives() {
        let mut model = scalars(&[("WSM_2", &[]), ("b", &[2]), ("WSM", &[]), ("WSM_1", &[])]);
        let planned = plan(&mut model, "x".as_ref(), &stacking(WSM)).unwrap();
        let names: Vec<&str> = planned.tensors.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["node.w", "bias"]);
        let stacked = &planned.tensors[0];
        assert_eq!(*stacked.shape, [3]);
        assert_eq!(stacked.byte_len, 3 * stacked.dtype.size() as u64);
        assert_eq!(stacked.keras_name(), "node/WSM + node/WSM_1 + node/WSM_2");
        let dropped = PlanOptions {
            drop_keras_names: true,
            ..stacking(WSM)
        };
        let order = [
            ("WSM_2", &[][..]),
            ("b", &[2]),
            ("WSM", &[]),
            ("WSM_1", &[]),
        ];
        let without = plan(&mut scalars(&order), "x".as_ref(), &dropped).unwrap();
        assert_eq!(without.tensors[0].keras_name, None);
        let Source::Stacked(parts) = &stacked.source else {
            panic!("{:?}", stacked.source)
        };
        let order: Vec<&Location> = parts
            .iter()
            .map(|p| match p {
                Source::Stored { location, .. } => location,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            order,
            [
                &Location::Bundle(2),
                &Location::Bundle(3),
                &Location::Bundle(0)
            ]
        );
        assert!(!stacked.is_verbatim());
    }

    #[test]
    fn stacked_parts_must_be_numbered_from_zero_once_each_and_agree_in_shape() {
        let refused = |labels: &[(&str, &[usize])], rules: &'static str| {
            plan(&mut scalars(labels), "x".as_ref(), &stacking(rules))
                .unwrap_err()
                .to_string()
        };
        let err = refused(&[("WSM", &[]), ("WSM_2", &[])], WSM);
        assert!(err.contains("part 1 is missing or named twice"), "{err}");
        let err = refused(&[("WSM", &[]), ("WSM_1", &[])], "WSM(_1)?$ => w[0]");
        assert!(err.contains("part 1 is missing or named twice"), "{err}");
        let err = refused(&[("WSM", &[]), ("WSM_1", &[2])], WSM);
        assert!(
            err.contains("`node/WSM` and `node/WSM_1` differ in dtype or shape"),
            "{err}"
        );
        // A stacked name may not be another tensor's.
        let err = refused(
            &[("b", &[]), ("WSM", &[])],
            "^node\\.b$ => node.w\n\\.WSM$ => .w[0]",
        );
        assert!(err.contains("node.w"), "{err}");
    }

    #[test]
    fn a_name_clash_is_an_error_not_an_overwrite() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5");
        let mut model = keras::open(&fixture, &ReadOptions::default()).unwrap();
        let mut twin = model.layers[0].clone();
        twin.weights[0].stored =
            crate::model::StoredName::Own("conv2d/other_scope/kernel:0".into());
        model.layers.push(twin);
        let err = plan(&mut model, &fixture, &PlanOptions::default()).unwrap_err();
        assert!(matches!(err.kind, ErrorKind::NameClash { .. }));
        let message = err.to_string();
        assert!(message.contains("classic_conv2d_full.h5"), "{message}");
        // The first pair met in output order (the kernels, ahead of the
        // biases), and both weights it comes from.
        assert!(message.contains("`conv2d/kernel`"), "{message}");
        assert!(message.contains("(conv2d/kernel:0 and "), "{message}");
        assert!(message.contains("conv2d/other_scope/kernel:0"), "{message}");
    }

    #[test]
    fn the_plan_takes_the_weights_it_places_and_counts_them() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5");
        let mut model = keras::open(&fixture, &ReadOptions::default()).unwrap();
        let paths: Vec<String> = model.layers.iter().map(Layer::path_string).collect();
        let weights: usize = model.layers.iter().map(|l| l.weights.len()).sum();
        let skip_first = PlanOptions {
            skip: vec![paths[0].clone()],
            ..PlanOptions::default()
        };
        let planned = plan(&mut model, &fixture, &skip_first).unwrap();
        assert_eq!(planned.weights, weights, "skipped weights are counted too");
        assert!(planned.tensors.len() < weights);
        assert!(model.layers.iter().all(|l| l.weights.is_empty()));
        // The layers themselves stay, for the metadata and for messages.
        let kept: Vec<String> = model.layers.iter().map(Layer::path_string).collect();
        assert_eq!(kept, paths);
    }

    #[test]
    fn keras_names_are_kept_unless_dropped() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/classic_conv2d_full.h5");
        let plan_with = |drop_keras_names: bool| {
            let mut model = keras::open(&fixture, &ReadOptions::default()).unwrap();
            let options = PlanOptions {
                layout: Layout::PyTorch,
                drop_keras_names,
                ..PlanOptions::default()
            };
            plan(&mut model, &fixture, &options).unwrap()
        };
        let kept = plan_with(false);
        let kernel = kept
            .tensors
            .iter()
            .find(|t| t.name == "conv2d.weight")
            .unwrap();
        assert_eq!(kernel.keras_name(), "conv2d/kernel");
        let dropped = plan_with(true);
        assert!(dropped.tensors.iter().all(|t| t.keras_name.is_none()));
        // Nothing else changes.
        let names = |p: &Plan| p.tensors.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&kept), names(&dropped));
    }
}
