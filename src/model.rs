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
}

impl Format {
    /// A stable identifier, used in JSON output.
    pub fn id(self) -> &'static str {
        match self {
            Format::KerasH5Model => "keras-h5-model",
            Format::KerasH5Weights => "keras-h5-weights",
        }
    }

    /// What a person would call it.
    pub fn describe(self) -> &'static str {
        match self {
            Format::KerasH5Model => "Keras HDF5, full model (model.save)",
            Format::KerasH5Weights => "Keras HDF5, weights only (save_weights)",
        }
    }
}

/// A Keras model's weights, in model order, with what each array is.
pub struct Model {
    pub format: Format,
    pub keras_version: Option<String>,
    pub backend: Option<String>,
    /// Layers in model order; the layers of nested sub-models are flattened
    /// in place, with the sub-model's name leading their path.
    pub layers: Vec<Layer>,
    /// Optimizer state, read only when asked for.
    pub optimizer: Vec<Weight>,
    /// Things a person should know about how the file was read.
    pub notes: Vec<String>,
    /// Where the weight bytes are read from.
    pub(crate) store: h5::File,
}

/// One layer that holds weights.
#[derive(Debug, Clone)]
pub struct Layer {
    /// Names of the enclosing sub-models, then the layer's own name.
    pub path: Vec<String>,
    /// The Keras class name (`SeparableConv2D`) when the file says it.
    pub class: Option<String>,
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
    pub location: h5::Location,
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
