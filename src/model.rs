//! The one shape every reader produces and everything downstream consumes.

use std::sync::Arc;

use crate::dtype::Dtype;
use crate::h5;
use crate::tf_bundle::Bundle;

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
    /// TF2 object-based checkpoint: tf-keras `save_weights('x')` in TF
    /// format, `tf.train.Checkpoint`.
    TfCheckpoint,
    /// TF1 name-based checkpoint (`tf.compat.v1.train.Saver`): keys are
    /// variable names.
    Tf1Checkpoint,
    /// tf-keras SavedModel folder (`model.save('dir')`).
    KerasSavedModel,
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
            Format::TfCheckpoint => "tf-checkpoint",
            Format::Tf1Checkpoint => "tf1-checkpoint",
            Format::KerasSavedModel => "keras-savedmodel",
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
            Format::TfCheckpoint => "TensorFlow object-based checkpoint (save_weights TF format)",
            Format::Tf1Checkpoint => "TensorFlow 1 name-based checkpoint (Saver)",
            Format::KerasSavedModel => "tf-keras SavedModel folder (model.save)",
        }
    }
}

/// A Keras model's weights, in model order, with what each array is.
pub struct Model {
    /// Which kind of file it was read from.
    pub format: Format,
    /// The Keras version that saved it, where the file says.
    pub keras_version: Option<String>,
    /// The Keras backend that saved it, where the file says.
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
    /// the accounting step after reading (`src/accounting.rs`).
    pub skipped: Vec<Skipped>,
    /// The files the weight bytes are read from: HDF5 files (several for
    /// shards) or a TensorFlow tensor bundle.
    pub(crate) stores: Vec<Store>,
}

/// A container weights are read from.
#[derive(Debug)]
pub(crate) enum Store {
    H5(h5::File),
    /// A TensorFlow tensor bundle (index and data shards).
    Bundle(Arc<Bundle>),
}

impl From<h5::File> for Store {
    fn from(file: h5::File) -> Store {
        Store::H5(file)
    }
}

/// Where a weight's bytes are, in its store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A dataset of an HDF5 file; [`Location::contiguous_range`] says where its bytes are when they are one run.
    H5(h5::Location),
    /// Entry `n` of a tensor bundle ([`Bundle::entries`]).
    Bundle(usize),
}

impl Location {
    /// The bytes of the weight's HDF5 file that hold it, when it is stored
    /// as one contiguous little-endian run, as Keras stores every weight
    /// (offsets count from the file's first byte; in a `.keras` archive,
    /// from the weights member's). `None` for data stored any other way
    /// and for tensor-bundle entries.
    pub fn contiguous_range(&self) -> Option<std::ops::Range<u64>> {
        match self {
            Location::H5(h5::Location::Contiguous { offset, len }) => Some(*offset..offset + len),
            _ => None,
        }
    }
}

impl From<h5::Location> for Location {
    fn from(location: h5::Location) -> Location {
        Location::H5(location)
    }
}

impl Store {
    /// The limits on decoded and filled bytes the user's flags set (HDF5
    /// only: a bundle's tensors are stored raw, checked against its shards).
    pub(crate) fn set_limits(&mut self, limits: h5::Limits) {
        if let Store::H5(file) = self {
            file.set_limits(limits);
        }
    }

    /// Every dataset (HDF5) or entry (bundle) the store holds, spelled as
    /// the weights' `dataset` fields spell them.
    pub(crate) fn dataset_paths(&self) -> Result<std::borrow::Cow<'_, h5::PathList>, String> {
        use std::borrow::Cow;
        match self {
            Store::H5(file) => file.dataset_paths().map(Cow::Borrowed).map_err(|e| e.0),
            Store::Bundle(bundle) => Ok(Cow::Owned(
                bundle.entries.iter().map(|e| e.key.as_str()).collect(),
            )),
        }
    }

    /// Drops the list [`Store::dataset_paths`] keeps (a path per dataset:
    /// 200,000 of them for a model of 100,000 layers) once accounted for.
    pub(crate) fn forget_dataset_paths(&mut self) {
        if let Store::H5(file) = self {
            file.forget_dataset_paths();
        }
    }

    /// Empties the caches of the file's structure once it is read.
    pub(crate) fn forget_cached_blocks(&self) {
        if let Store::H5(file) = self {
            file.forget_cached_blocks();
        }
    }

    /// Where a dataset's data is, to tell a second link from a second
    /// dataset; bundle entries are each their own.
    pub(crate) fn dataset_address(&self, path: &str) -> Result<u64, String> {
        match self {
            Store::H5(file) => file.dataset_address(path).map_err(|e| e.0),
            Store::Bundle(bundle) => bundle
                .find(path)
                .map(|i| i as u64)
                .ok_or_else(|| format!("no entry `{path}`")),
        }
    }

    /// The identities of the files on disk the store reads, so that no
    /// output replaces one of them.
    pub(crate) fn file_ids(&self) -> Vec<crate::files::FileId> {
        match self {
            Store::H5(file) => file.file_id().into_iter().collect(),
            Store::Bundle(bundle) => crate::files::FileId::of_path(&bundle.index_path())
                .into_iter()
                .chain(
                    bundle
                        .open_shards()
                        .filter_map(crate::files::FileId::of_file),
                )
                .collect(),
        }
    }

    /// How a weight's `dataset` is compared with [`Store::dataset_paths`].
    pub(crate) fn canonical<'a>(&self, dataset: &'a str) -> std::borrow::Cow<'a, str> {
        use std::borrow::Cow;
        match self {
            Store::H5(_) if crate::accounting::is_normal(dataset) => Cow::Borrowed(dataset),
            Store::H5(_) => Cow::Owned(crate::accounting::normalize(dataset)),
            Store::Bundle(_) => Cow::Borrowed(dataset),
        }
    }
}

/// A group whose datasets a reader leaves out on purpose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedGroup {
    /// Which of the model's files the group is in.
    pub file: usize,
    /// Absolute HDF5 path of the group (`/optimizer_weights`), or a
    /// bundle key: the entry itself and every key below it (`optimizer`).
    pub group: String,
    /// Why its datasets are not written.
    pub reason: String,
}

/// A dataset of the input that is not written.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Skipped {
    /// Absolute HDF5 path of the dataset (in the weights member of a
    /// `.keras` archive, or in one shard of a sharded save).
    pub dataset: String,
    /// Why it is not written.
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
    /// Its weights, in stored order.
    pub weights: Vec<Weight>,
}

/// One array, labelled.
#[derive(Debug, Clone)]
pub struct Weight {
    /// What the array is to its layer: `kernel`, `depthwise_kernel`,
    /// `moving_mean` (borrowed where our label tables have it:
    /// [`crate::labels::interned`]).
    pub label: std::borrow::Cow<'static, str>,
    /// The sub-object inside the layer that owns it, where the label alone is
    /// not unique (`forward_lstm` in a Bidirectional); usually empty.
    pub sub_path: Vec<String>,
    /// The name the file stores it under, for messages
    /// ([`Weight::stored_name`]).
    pub stored: StoredName,
    /// Its element type.
    pub dtype: Dtype,
    /// Its shape, as Keras gives it.
    pub shape: Vec<usize>,
    /// Which of the model's files holds the bytes, and where.
    pub file: usize,
    /// The absolute HDF5 path of the dataset, or the bundle entry's key,
    /// for the accounting step.
    pub dataset: String,
    /// Where in that file the bytes are.
    pub location: Location,
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

/// The name a file stores a weight under. Nearly always it ends the
/// weight's dataset path, and is kept as where it starts there: one string
/// less per weight (200,000 for a model of 100,000 layers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredName {
    /// The dataset path from this byte on.
    InDataset(usize),
    /// A name of its own (a TensorFlow variable's).
    Own(String),
}

impl StoredName {
    /// `name`, kept as its place in `dataset` where the path ends with it.
    pub fn of(name: String, dataset: &str) -> StoredName {
        match dataset.strip_suffix(name.as_str()) {
            Some(head) if head.is_empty() || head.ends_with('/') => {
                StoredName::InDataset(head.len())
            }
            _ => StoredName::Own(name),
        }
    }
}

impl Weight {
    /// The name the file stores it under, for messages.
    pub fn stored_name(&self) -> &str {
        match &self.stored {
            StoredName::InDataset(at) => self.dataset.get(*at..).unwrap_or_default(),
            StoredName::Own(name) => name,
        }
    }

    /// The number of elements.
    pub fn element_count(&self) -> u64 {
        self.shape.iter().map(|&d| d as u64).product()
    }

    /// The number of bytes of data.
    pub fn byte_len(&self) -> u64 {
        self.element_count() * self.dtype.size() as u64
    }
}

impl Layer {
    /// The path joined by `/`, as `inspect` shows it.
    pub fn path_string(&self) -> String {
        self.path.join("/")
    }

    /// Elements of all its weights.
    pub fn param_count(&self) -> u64 {
        self.weights.iter().map(Weight::element_count).sum()
    }
}

impl Model {
    /// Reads part of a weight stored contiguously; `false` when it is not.
    pub fn read_weight_at(
        &self,
        file: usize,
        location: &Location,
        offset: u64,
        buf: &mut [u8],
    ) -> std::io::Result<bool> {
        match (self.stores.get(file), location) {
            (Some(Store::H5(store)), Location::H5(location)) => {
                store.read_contiguous_at(location, offset, buf)
            }
            // A whole bundle tensor at once, so that its CRC can be checked.
            (Some(Store::Bundle(bundle)), Location::Bundle(i))
                if offset == 0 && bundle.entries[*i].byte_len() == buf.len() as u64 =>
            {
                bundle.read_into(*i, buf)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// Where a weight's bytes lie as one run of an input file, as stored;
    /// `None` for data kept any other way.
    pub(crate) fn weight_span(
        &self,
        file: usize,
        location: &Location,
    ) -> Option<crate::file_span::FileSpan> {
        match (self.stores.get(file), location) {
            (Some(Store::H5(store)), Location::H5(location)) => store.contiguous_span(location),
            _ => None,
        }
    }

    /// Copies the bytes of one weight (little-endian, C order) into `out`.
    pub fn copy_weight_data(
        &self,
        file: usize,
        location: &Location,
        out: &mut dyn std::io::Write,
        buf: &mut [u8],
        progress: &mut dyn FnMut(u64),
    ) -> std::io::Result<()> {
        match (self.stores.get(file), location) {
            (Some(Store::H5(store)), Location::H5(location)) => {
                store.copy_data(location, out, buf, progress)
            }
            (Some(Store::Bundle(bundle)), Location::Bundle(i)) => {
                bundle.copy(*i, out, buf, progress)
            }
            _ => Err(std::io::Error::other(
                "weight refers to a file that is not open",
            )),
        }
    }

    /// Drops the layers and optimizer weights once a plan is made from
    /// them: writing reads the model's files only, and for 100,000 layers
    /// the descriptions take about 90 MB.
    pub fn forget_layers(&mut self) {
        self.layers = Vec::new();
        self.optimizer = Vec::new();
        crate::memory::release_freed();
    }

    /// The identities of every file the model's bytes are read from.
    pub fn input_file_ids(&self) -> Vec<crate::files::FileId> {
        self.stores.iter().flat_map(Store::file_ids).collect()
    }

    /// Elements of every layer's weights (optimizer state not counted).
    pub fn total_params(&self) -> u64 {
        self.layers.iter().map(Layer::param_count).sum()
    }

    /// Bytes of every weight, optimizer state included when it was read.
    pub fn total_bytes(&self) -> u64 {
        self.layers
            .iter()
            .flat_map(|l| &l.weights)
            .chain(&self.optimizer)
            .map(Weight::byte_len)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn weight(dataset: &str, stored: &str) -> Weight {
        Weight {
            label: "kernel".into(),
            sub_path: Vec::new(),
            stored: StoredName::of(stored.to_string(), dataset),
            dtype: Dtype::F32,
            shape: vec![1],
            file: 0,
            dataset: dataset.to_string(),
            location: Location::Bundle(0),
        }
    }

    /// The writer has the kernel copy a weight from where `weight_span`
    /// says it lies: in an HDF5 file, and in a `.keras` archive that
    /// stores its weights file uncompressed, at the archive's offset.
    #[test]
    fn every_stored_weight_spans_the_bytes_keras_hashed() {
        use crate::test_support::{expected_of, fixture, sha256_hex, sorted_nonempty_hashes};
        for source in ["zoo_full.h5", "k3_classic_separable.keras"] {
            let expected = expected_of(source);
            let hashes = sorted_nonempty_hashes(&expected);
            let model = crate::keras::open(&fixture(source), &Default::default()).unwrap();
            let mut found = Vec::new();
            for w in model.layers.iter().flat_map(|l| &l.weights) {
                if w.shape.contains(&0) {
                    continue;
                }
                let span = model
                    .weight_span(w.file, &w.location)
                    .unwrap_or_else(|| panic!("{source}: {} has no span", w.dataset));
                let mut bytes = vec![0u8; span.len as usize];
                crate::pread::read_exact_at(&span.file, &mut bytes, span.offset).unwrap();
                found.push(sha256_hex(&bytes));
            }
            found.sort();
            assert_eq!(found, hashes, "{source}");
        }
    }

    #[test]
    fn a_stored_name_that_ends_the_dataset_path_is_kept_as_its_place() {
        let w = weight("/dense/dense/kernel:0", "dense/kernel:0");
        assert_eq!(w.stored, StoredName::InDataset(7));
        assert_eq!(w.stored_name(), "dense/kernel:0");
        let whole = weight("layers/dense/vars/0", "layers/dense/vars/0");
        assert_eq!(whole.stored, StoredName::InDataset(0));
        assert_eq!(whole.stored_name(), "layers/dense/vars/0");
        // Only at a `/`: `nse/kernel:0` ends the path too, but is no name in it.
        for (dataset, stored) in [
            ("/dense/dense/kernel:0", "nse/kernel:0"),
            (
                "layer_with_weights-0/kernel/.ATTRIBUTES/VARIABLE_VALUE",
                "dense/kernel",
            ),
        ] {
            let w = weight(dataset, stored);
            assert_eq!(w.stored, StoredName::Own(stored.to_string()));
            assert_eq!(w.stored_name(), stored);
        }
    }
}
