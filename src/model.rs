//! The one shape every reader produces and everything downstream consumes.

use crate::dtype::Dtype;
use crate::h5;

/// Which kind of file a model was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Keras 2 legacy HDF5 from `model.save('x.h5')`: weights under `model_weights/`.
    KerasH5Model,
    /// Keras 2 legacy HDF5 from `save_weights('x.h5')`: layer groups at the root.
    KerasH5Weights,
    /// Keras 3 `.weights.h5`: an object tree `layers/<obj>/vars/<i>`.
    Keras3Weights,
    /// Keras 3 `.weights.h5` split into shards by a `.weights.json` index.
    Keras3Sharded,
    /// Keras 3 `.keras` zip archive: `config.json` plus `model.weights.h5`.
    KerasArchive,
    /// Keras 1 HDF5: `nb_layers`, `layer_{k}`, `param_{p}`.
    Keras1H5,
}

impl Format {
    /// A stable identifier, used in JSON output.
    pub fn id(self) -> &'static str {
        match self {
            Format::KerasH5Model => "keras-h5-model",
            Format::KerasH5Weights => "keras-h5-weights",
            Format::Keras3Weights => "keras3-weights-h5",
            Format::Keras3Sharded => "keras3-sharded-weights",
            Format::KerasArchive => "keras-archive",
            Format::Keras1H5 => "keras1-h5",
        }
    }

    /// What a person would call it.
    pub fn describe(self) -> &'static str {
        match self {
            Format::KerasH5Model => "Keras HDF5, full model (model.save)",
            Format::KerasH5Weights => "Keras HDF5, weights only (save_weights)",
            Format::Keras3Weights => "Keras 3 weights (.weights.h5)",
            Format::Keras3Sharded => "Keras 3 sharded weights (.weights.json + shards)",
            Format::KerasArchive => "Keras 3 archive (.keras)",
            Format::Keras1H5 => "Keras 0.x/1 HDF5 (nb_layers)",
        }
    }
}

/// A Keras model's weights, in model order, with what each array is.
pub struct Model {
    pub format: Format,
    pub keras_version: Option<String>,
    pub backend: Option<String>,
    /// When the model was saved, where the file says (`.keras` metadata).
    pub date_saved: Option<String>,
    /// Layers in model order; the layers of nested sub-models are flattened
    /// in place, with the sub-model's name leading their path.
    pub layers: Vec<Layer>,
    /// Optimizer state, read only when asked for.
    pub optimizer: Vec<Weight>,
    /// Things a person should know about how the file was read.
    pub notes: Vec<String>,
    /// Groups a reader leaves out on purpose, and why (optimizer state
    /// that was not asked for): the accounting step skips every dataset
    /// under them with that reason.
    pub skipped_groups: Vec<SkippedGroup>,
    /// Every dataset of the input that is not written, and why; filled by
    /// the accounting step after reading ([`crate::accounting`]).
    pub skipped: Vec<Skipped>,
    /// The HDF5 files the weight bytes are read from (several for shards).
    pub(crate) stores: Vec<h5::File>,
}

/// A group whose datasets a reader leaves out on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedGroup {
    pub file: usize,
    /// Absolute HDF5 path of the group (`/optimizer_weights`).
    pub group: String,
    pub reason: String,
}

/// A dataset of the input that is not written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Absolute HDF5 path of the dataset (in the weights member of a
    /// `.keras` archive, or in one shard of a sharded save).
    pub dataset: String,
    pub reason: String,
}

/// One layer that holds weights.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Names of the enclosing sub-models, then the layer's own name.
    pub path: Vec<String>,
    /// The Keras class name (`SeparableConv2D`) when the file says it.
    pub class: Option<String>,
    /// The layer's Keras config (`{"filters": 16, "padding": "same", ...}`)
    /// when the file or `--config` has one.
    pub config: Option<serde_json::Value>,
    pub weights: Vec<Weight>,
}

/// One array, labelled.
#[derive(Debug, Clone)]
pub struct Weight {
    /// What the array is to its layer: `kernel`, `depthwise_kernel`, `moving_mean`.
    pub label: String,
    /// The sub-object inside the layer that owns it, where the label alone is
    /// not unique (`forward_lstm` in a Bidirectional); usually empty.
    pub sub_path: Vec<String>,
    /// The name the file stores it under, for messages.
    pub stored_name: String,
    pub dtype: Dtype,
    pub shape: Vec<usize>,
    /// Which of the model's files holds the bytes, and where.
    pub file: usize,
    /// The absolute HDF5 path of the dataset, for the accounting step.
    pub dataset: String,
    pub location: h5::Location,
}

impl std::fmt::Debug for Model {
    /// Everything but the open files, which have nothing a person reads.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("format", &self.format)
            .field("keras_version", &self.keras_version)
            .field("backend", &self.backend)
            .field("date_saved", &self.date_saved)
            .field("layers", &self.layers)
            .field("optimizer", &self.optimizer)
            .field("notes", &self.notes)
            .field("skipped", &self.skipped)
            .field("files", &self.stores.len())
            .finish()
    }
}

impl Weight {
    pub fn element_count(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    pub fn byte_len(&self) -> u64 {
        self.element_count() * self.dtype.size() as u64
    }
}

impl Layer {
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }

    pub fn param_count(&self) -> u64 {
        self.weights.iter().map(Weight::element_count).sum()
    }
}

impl Model {
    /// Reads part of a weight stored contiguously; `false` when it is not.
    pub fn read_weight_at(
        &self,
        file: usize,
        location: &h5::Location,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<bool> {
        match self.stores.get(file) {
            Some(store) => store.read_contiguous_at(location, offset, buf),
            None => Ok(false),
        }
    }

    /// Copies the bytes of one weight (little-endian, C order) into `out`.
    pub fn copy_weight_data(
        &self,
        file: usize,
        location: &h5::Location,
        out: &mut dyn std::io::Write,
        buf: &mut [u8],
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        match self.stores.get(file) {
            Some(store) => store.copy_data(location, out, buf, progress),
            None => Err(std::io::Error::other(
                "weight refers to a file that is not open",
            )),
        }
    }

    pub fn total_params(&self) -> u64 {
        self.layers.iter().map(Layer::param_count).sum()
    }

    pub fn total_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| &l.weights)
            .chain(&self.optimizer)
            .map(Weight::byte_len)
            .sum()
    }
}
