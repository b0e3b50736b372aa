//! `inspect`: what is inside a Keras file or a safetensors file, like
//! `model.summary()`, for people (a table) and for machines (JSON).
//! Only structure is read, never weight data.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::dtype::Dtype;
use crate::error::Result;
use crate::export::plan::{skip_reasons, PlanOptions};
use crate::export::plan::{tensor_name, Layout, LAYER_CLASSES_KEY, LAYOUT_KEY, OPTIMIZER_PREFIX};
use crate::h5::COPY_BUFFER_BYTES;
use crate::json_order::ordered_object;
use crate::keras::{self, FileKind, ReadOptions};
use crate::labels;
use crate::model::{Layer, Model, Skipped, Weight};
use crate::safetensors_file::{shard_folder_entry, SafetensorsSet, INDEX_SUFFIX};
use crate::stats::Stats;
use crate::tensors::{read_error, TensorFile};
use crate::terminal::{elide, escape, escape_keeping_lines, pad};
use crate::values::parallel_map;

/// What `inspect --json` prints.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The file as given.
    pub file: String,
    /// A stable format identifier (`keras-h5-model`, `safetensors`, ...).
    pub format: String,
    /// What a person would call the format.
    pub format_description: String,
    /// The Keras version that saved the file, where it says.
    pub keras_version: Option<String>,
    /// The Keras backend that saved the file, where it says.
    pub backend: Option<String>,
    /// When the model was saved, where the file records it (`.keras`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date_saved: Option<String>,
    /// Elements of every weight, as Keras's `count_params()` counts them.
    pub total_params: u64,
    /// Bytes of weight data.
    pub total_bytes: u64,
    /// Layers that hold weights, in model order.
    pub layers: Vec<LayerSummary>,
    /// With `include_optimizer`: the optimizer state.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub optimizer: Vec<WeightSummary>,
    /// Datasets of the input that `convert` does not write, with why.
    pub skipped: Vec<Skipped>,
    /// What a person should know about how the file was read.
    pub notes: Vec<String>,
}

/// One row group of `inspect`: a layer and its weights.
#[derive(Debug, Clone, Serialize)]
pub struct LayerSummary {
    /// Enclosing sub-models and the layer name, joined by `/`.
    pub path: String,
    /// The class as the file records it.
    pub class: Option<String>,
    /// Where the file records no class: the one class the weights fit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class_guess: Option<String>,
    /// Where the file records no class and several fit the weights: all of
    /// them, likeliest first (a bias-free kernel: Conv2D or Conv2DTranspose).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub class_candidates: Vec<String>,
    /// Elements of all its weights.
    pub params: u64,
    /// Its weights, in stored order.
    pub weights: Vec<WeightSummary>,
}

/// One weight of a [`LayerSummary`].
#[derive(Debug, Clone, Serialize)]
pub struct WeightSummary {
    /// The tensor name, as `convert` writes it.
    pub name: String,
    /// What the array is to its layer, with the sub-object where there is one.
    pub label: String,
    /// Its shape, as Keras gives it.
    pub shape: Vec<usize>,
    /// Spelled as safetensors spells it: `F32`, `BF16`, `I64`.
    pub dtype: String,
    /// With `--stats`: statistics of the values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<Stats>,
}

impl Summary {
    /// Keeps only the weights whose tensor name passes `keep`, and the
    /// layers that still have weights. Totals stay those of the file.
    pub fn retain_weights(&mut self, keep: impl Fn(&str) -> bool) {
        for layer in &mut self.layers {
            layer.weights.retain(|w| keep(&w.name));
        }
        self.layers.retain(|l| !l.weights.is_empty());
        self.optimizer.retain(|w| keep(&w.name));
    }
}

/// Bytes of a tensor summarised on one thread at a time (a multiple of
/// every element size).
const STATS_PIECE_BYTES: u64 = 64 << 20;

/// Reads every value of the summarised file once (in parallel across
/// tensors and pieces of big tensors, streaming within each) and adds
/// statistics to each weight.
pub fn add_stats(summary: &mut Summary, path: &Path, options: &ReadOptions) -> Result<()> {
    add_stats_in_pieces(summary, path, options, STATS_PIECE_BYTES)
}

fn add_stats_in_pieces(
    summary: &mut Summary,
    path: &Path,
    options: &ReadOptions,
    piece_bytes: u64,
) -> Result<()> {
    let file = TensorFile::open(path, options, &PlanOptions::default())?;
    let tensors = file.tensors();
    let wanted: Vec<usize> = {
        let shown: std::collections::HashSet<&str> = summary
            .layers
            .iter()
            .flat_map(|l| &l.weights)
            .chain(&summary.optimizer)
            .map(|w| w.name.as_str())
            .collect();
        (0..tensors.len())
            .filter(|&i| shown.contains(tensors[i].name.as_str()))
            .collect()
    };
    // Big tensors are cut into pieces, so that both cores work on a model
    // whose bytes are mostly in one tensor; each piece is read once.
    let pieces: Vec<(usize, Option<(u64, u64)>)> = wanted
        .iter()
        .flat_map(|&i| {
            let len = tensors[i].byte_len;
            if len > piece_bytes && file.reads_piecewise(i) {
                (0..len)
                    .step_by(piece_bytes as usize)
                    .map(|start| (i, Some((start, (start + piece_bytes).min(len)))))
                    .collect()
            } else {
                vec![(i, None)]
            }
        })
        .collect();
    let results = parallel_map(pieces.len(), |k| {
        let (i, range) = pieces[k];
        let mut stats = Stats::default();
        match range {
            None => file.visit(i, &mut |chunk| {
                stats.add(chunk, tensors[i].dtype);
                Ok(())
            }),
            Some((start, end)) => add_piece(&mut stats, &file, i, tensors[i].dtype, start..end),
        }
        .map(|_| stats)
    });
    let mut by_name: std::collections::HashMap<String, Stats> = std::collections::HashMap::new();
    for (&(i, _), result) in pieces.iter().zip(results) {
        let stats = result.map_err(|e| read_error(path, &tensors[i].name, e))?;
        by_name
            .entry(tensors[i].name.clone())
            .or_default()
            .combine(&stats);
    }
    for w in summary
        .layers
        .iter_mut()
        .flat_map(|l| l.weights.iter_mut())
        .chain(summary.optimizer.iter_mut())
    {
        w.stats = by_name.remove(&w.name);
    }
    Ok(())
}

/// Adds the bytes `range` of tensor `index` to `stats`.
fn add_piece(
    stats: &mut Stats,
    file: &TensorFile,
    index: usize,
    dtype: Dtype,
    range: std::ops::Range<u64>,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; COPY_BUFFER_BYTES.min((range.end - range.start) as usize)];
    let mut offset = range.start;
    while offset < range.end {
        crate::cancel::checkpoint()?;
        let n = (range.end - offset).min(buf.len() as u64) as usize;
        if !file.read_at(index, offset, &mut buf[..n])? {
            return Err(std::io::Error::other("the tensor cannot be read in pieces"));
        }
        stats.add(&buf[..n], dtype);
        offset += n as u64;
    }
    Ok(())
}

/// Describes any file we read, choosing the reader by content.
pub fn inspect(path: &Path, options: &ReadOptions) -> Result<Summary> {
    let entry = shard_folder_entry(path)?;
    let path = entry.as_path();
    if path.to_string_lossy().ends_with(INDEX_SUFFIX) {
        return summarize_safetensors(path);
    }
    match keras::detect(path)? {
        FileKind::Safetensors => summarize_safetensors(path),
        FileKind::Hdf5 | FileKind::Zip | FileKind::Json | FileKind::TfCheckpoint => {
            Ok(summarize_model(path, &keras::open(path, options)?))
        }
    }
}

fn weight_summary(layer_path: &[String], w: &Weight) -> WeightSummary {
    let mut label = w.sub_path.clone();
    label.push(w.label.to_string());
    WeightSummary {
        name: tensor_name(layer_path, w),
        label: label.join("/"),
        shape: w.shape.clone(),
        dtype: w.dtype.to_string(),
        stats: None,
    }
}

/// The summary of a model already read (what [`inspect()`] gives).
pub fn summarize_model(path: &Path, model: &Model) -> Summary {
    let layer = |l: &Layer| {
        let weights: Vec<WeightSummary> = l
            .weights
            .iter()
            .map(|w| weight_summary(&l.path, w))
            .collect();
        let mut summary = LayerSummary {
            path: l.path_string(),
            class: l.class.clone(),
            class_guess: None,
            class_candidates: Vec::new(),
            params: l.param_count(),
            weights,
        };
        summary.guess_class();
        summary
    };
    let optimizer_path = [OPTIMIZER_PREFIX.to_string()];
    Summary {
        file: path.display().to_string(),
        format: model.format.id().into(),
        format_description: model.format.describe().into(),
        keras_version: model.keras_version.clone(),
        backend: model.backend.clone(),
        date_saved: model.date_saved.clone(),
        total_params: model.total_params(),
        total_bytes: model.total_bytes(),
        layers: model.layers.iter().map(layer).collect(),
        optimizer: model
            .optimizer
            .iter()
            .map(|w| weight_summary(&optimizer_path, w))
            .collect(),
        skipped: model.skipped.clone(),
        notes: model.notes.clone(),
    }
}

impl LayerSummary {
    /// Where the file records no class: the one class the weights fit, or
    /// every class they fit when there are several.
    fn guess_class(&mut self) {
        if self.class.is_some() {
            return;
        }
        let labelled: Vec<(String, Vec<usize>)> = self
            .weights
            .iter()
            .map(|w| (w.label.to_string(), w.shape.clone()))
            .collect();
        match labels::class_candidates(&labelled)[..] {
            [] => {}
            [one] => self.class_guess = Some(one.to_string()),
            ref several => self.class_candidates = several.iter().map(|c| c.to_string()).collect(),
        }
    }
}

/// Describes a safetensors file from its header. Tensors are grouped into
/// layers by the layer paths `convert` records in `__metadata__`; without
/// them, by the name up to its last `/`.
pub fn summarize_safetensors(path: &Path) -> Result<Summary> {
    let set = SafetensorsSet::open(path)?;
    let meta = &set.metadata;
    // Names written in PyTorch layout are joined with dots.
    let sep = if meta.get(LAYOUT_KEY).map(String::as_str) == Some(Layout::PyTorch.id()) {
        Layout::PyTorch.separator()
    } else {
        Layout::Keras.separator()
    };
    let known_layers: Vec<(String, Option<String>)> = meta
        .get(LAYER_CLASSES_KEY)
        .and_then(|json| ordered_object(json))
        .unwrap_or_default()
        .into_iter()
        .map(|(path, class)| (path, class.as_str().map(str::to_string)))
        .collect();

    // File order: by dtype, then name, as writers lay tensors out.
    let mut tensors: Vec<(String, &safetensors::tensor::TensorInfo)> = set
        .tensors
        .iter()
        .map(|t| (t.name.clone(), &t.info))
        .collect();
    tensors.sort_by_key(|(_, info)| info.data_offsets);
    let total_bytes: u64 = set
        .tensors
        .iter()
        .map(|t| (t.info.data_offsets.1 - t.info.data_offsets.0) as u64)
        .sum();

    let mut layers: Vec<LayerSummary> = known_layers
        .iter()
        .map(|(p, class)| LayerSummary {
            path: p.clone(),
            class: class.clone(),
            class_guess: None,
            class_candidates: Vec::new(),
            params: 0,
            weights: Vec::new(),
        })
        .collect();
    let known_paths: std::collections::HashMap<&str, usize> = known_layers
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.as_str(), i))
        .collect();
    let mut layer_index: std::collections::HashMap<String, usize> = known_layers
        .iter()
        .enumerate()
        .map(|(i, (p, _))| (p.clone(), i))
        .collect();
    let mut optimizer = Vec::new();
    let mut total_params = 0u64;
    let mut notes = Vec::new();
    for (name, info) in tensors {
        let dtype = match Dtype::from_safetensors(info.dtype) {
            Some(d) => d.to_string(),
            None => format!("{:?}", info.dtype),
        };
        let count: u64 = info.shape.iter().map(|&d| d as u64).product();
        let layer_path = longest_known_prefix(&name, sep, &known_paths)
            .unwrap_or_else(|| name.rsplit_once(sep).map(|(p, _)| p).unwrap_or(""))
            .to_string();
        let label = name
            .strip_prefix(&format!("{layer_path}{sep}"))
            .unwrap_or(&name)
            .to_string();
        let weight = WeightSummary {
            name: name.clone(),
            label,
            shape: info.shape.clone(),
            dtype,
            stats: None,
        };
        if !known_paths.contains_key(layer_path.as_str())
            && name.starts_with(&format!("{OPTIMIZER_PREFIX}{sep}"))
        {
            optimizer.push(weight);
            continue;
        }
        total_params += count;
        match layer_index.get(&layer_path) {
            Some(&i) => {
                layers[i].params += count;
                layers[i].weights.push(weight);
            }
            None => {
                layer_index.insert(layer_path.clone(), layers.len());
                layers.push(LayerSummary {
                    path: layer_path,
                    class: None,
                    class_guess: None,
                    class_candidates: Vec::new(),
                    params: count,
                    weights: vec![weight],
                });
            }
        }
    }
    layers.retain(|l| !l.weights.is_empty());
    for layer in &mut layers {
        layer.guess_class();
    }
    if known_layers.is_empty() {
        notes.push("no layer table in __metadata__: layers are grouped by tensor name".into());
    }
    Ok(Summary {
        file: path.display().to_string(),
        format: "safetensors".into(),
        format_description: match meta.get("source_format") {
            Some(source) => format!("safetensors (converted from {source})"),
            None => "safetensors".into(),
        },
        keras_version: meta.get("keras_version").cloned(),
        backend: meta.get("backend").cloned(),
        date_saved: None,
        total_params,
        total_bytes,
        layers,
        optimizer,
        skipped: Vec::new(),
        notes,
    })
}

/// The longest known layer path that `name` starts with, followed by the
/// separator: tried at each separator from the end, so a model with
/// thousands of layers is grouped in linear time.
fn longest_known_prefix<'a>(
    name: &'a str,
    sep: &str,
    known: &std::collections::HashMap<&str, usize>,
) -> Option<&'a str> {
    name.rmatch_indices(sep)
        .map(|(at, _)| &name[..at])
        .find(|prefix| known.contains_key(prefix))
}

/// The widest a table cell gets: longer names (a crafted file can hold
/// names of any length) are shown with their middle elided.
pub const MAX_CELL_CHARS: usize = 120;

/// The longest note shown in the table; JSON has them whole.
const MAX_NOTE_CHARS: usize = 400;

/// A name from the file as a table cell: control characters spelled out,
/// the middle of an over-long name elided.
fn cell(text: &str) -> String {
    let escaped = escape(text);
    elide(&escaped, MAX_CELL_CHARS).into_owned()
}

/// The width of each column: its widest cell, in characters.
fn columns<'a, const N: usize>(rows: impl Iterator<Item = &'a [String; N]>) -> [usize; N] {
    let mut widths = [0; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    widths
}

/// The table a person reads.
pub fn render_table(s: &Summary) -> String {
    let mut rows: Vec<[String; 6]> = Vec::new();
    // Whether a row starts a layer or a group (a rule goes above it).
    let mut starts_layer: Vec<bool> = Vec::new();
    // Sub-models and sub-networks show as a tree: a row per enclosing
    // group (with the params of everything in it), then each layer by its
    // own name, indented under its group.
    let mut open: Vec<&str> = Vec::new();
    // Each group's params, summed in one pass (a scan per group would be
    // quadratic in a model of many nested layers).
    let mut group_params: std::collections::HashMap<&str, u64> = Default::default();
    for layer in &s.layers {
        let path = layer.path.as_str();
        for (at, _) in path.match_indices('/') {
            *group_params.entry(&path[..=at]).or_default() += layer.params;
        }
    }
    // A group's first row needs no rule between it and its header.
    let mut after_header = false;
    for layer in &s.layers {
        let parts: Vec<&str> = layer.path.split('/').collect();
        let (leaf, groups) = parts.split_last().unwrap_or((&"", &[]));
        let shared = open.iter().zip(groups).take_while(|(a, b)| a == b).count();
        open.truncate(shared);
        for depth in shared..groups.len() {
            let prefix = format!("{}/", groups[..=depth].join("/"));
            let params = group_params.get(prefix.as_str()).copied().unwrap_or(0);
            starts_layer.push(!after_header);
            after_header = true;
            rows.push([
                format!("{}{}/", "  ".repeat(depth), cell(groups[depth])),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                group_digits(params),
            ]);
            open.push(groups[depth]);
        }
        let path = if layer.path.is_empty() {
            "(model)".to_string()
        } else {
            format!("{}{}", "  ".repeat(groups.len()), cell(leaf))
        };
        for (i, w) in layer.weights.iter().enumerate() {
            let first = i == 0;
            starts_layer.push(first && !after_header);
            after_header = false;
            rows.push([
                if first { path.clone() } else { String::new() },
                if first {
                    match (&layer.class, &layer.class_guess) {
                        (Some(class), _) => cell(class),
                        (None, Some(guess)) => format!("{} (guess)", cell(guess)),
                        (None, None) if !layer.class_candidates.is_empty() => {
                            format!("{} (guess)", cell(&layer.class_candidates.join("|")))
                        }
                        (None, None) => "?".into(),
                    }
                } else {
                    String::new()
                },
                cell(&w.label),
                shape_string(&w.shape),
                cell(&w.dtype),
                if first {
                    group_digits(layer.params)
                } else {
                    String::new()
                },
            ]);
        }
    }
    let head = ["Layer", "Class", "Weight", "Shape", "Dtype", "Params"].map(String::from);
    let widths = columns(std::iter::once(&head).chain(&rows));
    let line = |cells: &[String; 6]| -> String {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 5 {
                out.push_str(&pad(cell, w, true));
            } else {
                out.push_str(&pad(cell, w, false));
                out.push_str("  ");
            }
        }
        out.trim_end().to_string()
    };
    let total_width: usize = widths.iter().sum::<usize>() + 2 * 5;
    let rule = "─".repeat(total_width);
    let mut out = String::new();
    let _ = writeln!(out, "File:   {}", s.file);
    let _ = writeln!(out, "Format: {}", s.format_description);
    let versions: Vec<String> = [
        s.keras_version.as_ref().map(|v| format!("Keras {v}")),
        s.backend.as_ref().map(|b| format!("backend {b}")),
        s.date_saved.as_ref().map(|d| format!("saved {d}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !versions.is_empty() {
        let _ = writeln!(out, "Saved by: {}", versions.join(", "));
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "{}", line(&head));
    let _ = writeln!(out, "{}", "═".repeat(total_width));
    for (i, row) in rows.iter().enumerate() {
        if i > 0 && starts_layer[i] {
            let _ = writeln!(out, "{}", "╌".repeat(total_width));
        }
        let _ = writeln!(out, "{}", line(row));
    }
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(out, "Total params: {}", group_digits(s.total_params));
    let _ = writeln!(out, "Total bytes:  {}", human_bytes(s.total_bytes));
    if !s.optimizer.is_empty() {
        let _ = writeln!(out, "Optimizer tensors: {}", s.optimizer.len());
        for w in &s.optimizer {
            let _ = writeln!(out, "  {}  {}  {}", w.name, shape_string(&w.shape), w.dtype);
        }
    }
    let with_stats: Vec<&WeightSummary> = s
        .layers
        .iter()
        .flat_map(|l| &l.weights)
        .chain(&s.optimizer)
        .filter(|w| w.stats.is_some())
        .collect();
    if !with_stats.is_empty() {
        out.push_str(&stats_table(&with_stats));
    }
    if !s.skipped.is_empty() {
        let _ = writeln!(
            out,
            "Not written by convert: {} dataset(s)",
            s.skipped.len()
        );
        for reason in skip_reasons(&s.skipped) {
            let _ = writeln!(out, "  {reason}");
        }
    }
    for note in &s.notes {
        // Notes quote names, which can be of any length.
        let _ = writeln!(out, "note: {}", elide(note, MAX_NOTE_CHARS));
    }
    // Everything else that came from the file (the path, versions, notes,
    // optimizer names): no control character reaches the terminal.
    match escape_keeping_lines(&out) {
        std::borrow::Cow::Borrowed(_) => out,
        escaped => escaped.into_owned(),
    }
}

fn stats_table(weights: &[&WeightSummary]) -> String {
    let number = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.6e}"));
    let rows: Vec<[String; 8]> = weights
        .iter()
        .filter_map(|w| {
            let st = w.stats.as_ref()?;
            Some([
                cell(&w.name),
                number(st.min),
                number(st.max),
                number(st.mean),
                number(st.std),
                st.nan.to_string(),
                st.inf.to_string(),
                st.zero.to_string(),
            ])
        })
        .collect();
    let head = ["Tensor", "Min", "Max", "Mean", "Std", "NaN", "Inf", "Zero"].map(String::from);
    let widths = columns(std::iter::once(&head).chain(&rows));
    let mut out = String::from("\nStatistics\n");
    let line = |cells: &[String]| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(widths).enumerate() {
            if i == 0 {
                text.push_str(&pad(cell, w, false));
            } else {
                text.push_str("  ");
                text.push_str(&pad(cell, w, true));
            }
        }
        text + "\n"
    };
    out.push_str(&line(&head));
    for row in &rows {
        out.push_str(&line(row));
    }
    out
}

/// `(5, 5, 3, 16)`, with numpy's trailing comma for one dimension.
pub fn shape_string(shape: &[usize]) -> String {
    match shape {
        [] => "()".into(),
        [d] => format!("({d},)"),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// `1,216`.
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `4.9 KiB (4,864 bytes)`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {} ({} bytes)", UNITS[unit], group_digits(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_like_keras_prints_them() {
        assert_eq!(group_digits(1216), "1,216");
        assert_eq!(group_digits(139), "139");
        assert_eq!(group_digits(1_000_000), "1,000,000");
        assert_eq!(shape_string(&[16]), "(16,)");
        assert_eq!(shape_string(&[]), "()");
        assert_eq!(shape_string(&[5, 5, 3, 16]), "(5, 5, 3, 16)");
        assert_eq!(human_bytes(556), "556 bytes");
        assert_eq!(human_bytes(4864), "4.8 KiB (4,864 bytes)");
    }

    /// Each weight's statistics the plain way, from its bytes as `convert`
    /// writes them (which the fixture tests check against Keras).
    fn plain_stats(path: &Path, read: &ReadOptions) -> std::collections::HashMap<String, Stats> {
        let file = TensorFile::open(path, read, &PlanOptions::default()).unwrap();
        let mut all = std::collections::HashMap::new();
        for (i, t) in file.tensors().iter().enumerate() {
            let mut values = Vec::new();
            crate::values::for_each_value(&file.read(i).unwrap(), t.dtype, |v| values.push(v));
            all.insert(t.name.clone(), crate::stats::two_pass_reference(&values));
        }
        all
    }

    #[test]
    fn statistics_are_the_same_whole_or_in_pieces() {
        let read = ReadOptions::default();
        for name in ["zoo_full.h5", "dtypes_full.h5", "k3_text_model.keras"] {
            let path = crate::test_support::fixture(name);
            let want = plain_stats(&path, &read);
            // Pieces of 40 bytes cut every tensor of more than ten f32s.
            for piece_bytes in [40, STATS_PIECE_BYTES] {
                let mut summary = inspect(&path, &read).unwrap();
                add_stats_in_pieces(&mut summary, &path, &read, piece_bytes).unwrap();
                let weights: Vec<&WeightSummary> =
                    summary.layers.iter().flat_map(|l| &l.weights).collect();
                assert!(weights.len() > 3, "{name}");
                for w in weights {
                    let got = w.stats.as_ref().unwrap();
                    let want = &want[&w.name];
                    let what = format!("{name} {} in pieces of {piece_bytes}", w.name);
                    assert_eq!((got.min, got.max), (want.min, want.max), "{what}");
                    assert_eq!((got.nan, got.zero), (want.nan, want.zero), "{what}");
                    for (g, w) in [(got.mean, want.mean), (got.std, want.std)] {
                        let (g, w) = (g.unwrap_or(0.0), w.unwrap_or(0.0));
                        assert!((g - w).abs() <= 1e-12 * w.abs().max(1.0), "{what}: {g} {w}");
                    }
                }
            }
        }
    }
}
