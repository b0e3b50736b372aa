//! Recognising a file by its content and reading it into a [`Model`].

pub(crate) mod archive;
pub mod config;
pub(crate) mod keras1;
pub(crate) mod legacy_h5;
pub(crate) mod saved_model_pb;
pub(crate) mod tf_checkpoint;
pub(crate) mod v3_weights;

pub use tf_checkpoint::is_tf_folder;

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::accounting;
use crate::cancel;
use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::files;
use crate::h5::{self, Element};
use crate::model::{Format, Model};
use config::LayerConfig;

/// Options that change what is read.
#[derive(Debug, Clone, Default)]
pub struct ReadOptions {
    /// Read the optimizer state too (skipped by default: not model weights).
    pub include_optimizer: bool,
    /// A model config (`config.json` of a `.keras` archive, or
    /// `model.to_json()`) for files that carry none: it gives classes,
    /// layer options and order.
    pub config: Option<PathBuf>,
    /// Write what the readers understood even when some datasets belong
    /// to no layer they know (each is reported as skipped); without it such
    /// a file is refused, naming the first.
    pub allow_unclaimed: bool,
    /// Write datasets that were never written (their fill value) even past
    /// 1 x the file's size, in all.
    pub allow_fill: bool,
    /// Decompress past 32 x the file's size + 16 MiB over a run.
    pub allow_expansion: bool,
    /// TF1 checkpoints: write each variable's ExponentialMovingAverage
    /// shadow under the variable's name (what evaluation loads).
    pub use_ema: bool,
}

/// What a file is, judged from its first bytes (never from its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// An HDF5 file: a Keras `.h5` or `.weights.h5` (or another HDF5 file).
    Hdf5,
    /// A zip archive: a `.keras` file.
    Zip,
    /// A JSON document: the index of a sharded Keras 3 save.
    Json,
    /// A safetensors file.
    Safetensors,
    /// A TensorFlow checkpoint (prefix, `.index`, data shard, folder with a
    /// `checkpoint` file) or a tf-keras SavedModel folder.
    TfCheckpoint,
}

/// The formats `open` reads, for error messages.
pub const SUPPORTED: &str = "Keras HDF5 (.h5, .hdf5, .weights.h5), .keras archives, \
                             sharded .weights.json saves, TensorFlow checkpoints and \
                             SavedModel folders, and safetensors";

/// Looks at the first bytes of a file and says what it is, or why it is
/// nothing we read.
pub fn detect(path: &Path) -> Result<FileKind> {
    if let Some(input) = tf_checkpoint::resolve(path) {
        input?;
        return Ok(FileKind::TfCheckpoint);
    }
    let mut head = [0u8; 16];
    let mut file = files::open_regular(path)?;
    let n = read_up_to(&mut file, &mut head).map_err(|e| Error::new(path, e.into()))?;
    let head = &head[..n];
    if head.is_empty() {
        return Err(Error::new(path, ErrorKind::Empty));
    }
    if head.starts_with(h5::SIGNATURE) {
        return Ok(FileKind::Hdf5);
    }
    if head.starts_with(b"PK\x03\x04") {
        return Ok(FileKind::Zip);
    }
    if head.len() >= 9 && head[8] == b'{' {
        return Ok(FileKind::Safetensors);
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        return Ok(FileKind::Json);
    }
    Err(Error::new(
        path,
        ErrorKind::UnknownFormat(describe_head(head)),
    ))
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Says what the first bytes look like, so the person can tell what they have.
fn describe_head(head: &[u8]) -> String {
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let hint = if head.starts_with(b"\x93NUMPY") {
        ": a numpy .npy file"
    } else if head
        .iter()
        .all(|&b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        ": plain text"
    } else {
        ""
    };
    format!(
        "first bytes are {}{hint}; this tool reads {SUPPORTED}",
        hex.join(" ")
    )
}

/// The layout of a Keras HDF5 file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// `layer_names` and `weight_names`: Keras 2, and Keras 3's `.h5`.
    Legacy,
    /// `nb_layers` and `layer_{k}/param_{p}`.
    Keras1,
    /// An object tree: Keras 3 `.weights.h5`.
    ObjectTree,
}

fn layout(path: &Path, file: &h5::File) -> Result<Layout> {
    let corrupt = |e: h5::H5Error| Error::new(path, ErrorKind::CorruptHdf5(e.0));
    let root = file.root().map_err(corrupt)?;
    let attrs = root.attribute_names().map_err(corrupt)?;
    let has_attr = |name: &str| attrs.iter().any(|a| a == name);
    // Looked up by name: listing a root of 100,000 layers reads every
    // layer's header.
    let has_group = |name: &str| root.has_member_group(name).map_err(corrupt);
    if has_group("model_weights")? || has_attr("layer_names") || has_attr("layer_names0") {
        Ok(Layout::Legacy)
    } else if has_attr("nb_layers") {
        Ok(Layout::Keras1)
    } else if has_group("layers")?
        || has_group("_layer_checkpoint_dependencies")?
        || has_group("vars")?
    {
        Ok(Layout::ObjectTree)
    } else {
        Err(Error::new(
            path,
            ErrorKind::NotKeras(
                "no `model_weights` group, no `layer_names` attribute and no Keras 3 `layers` tree"
                    .into(),
            ),
        ))
    }
}

/// Opens a Keras weight file of any format we read, and reads its
/// structure (not its data). Every dataset of the input is then accounted
/// for: claimed by a layer, or skipped for a reason the model records.
pub fn open(path: &Path, options: &ReadOptions) -> Result<Model> {
    let mut model = read_model(path, options).map_err(cancel::blame)?;
    cancel::check(path)?;
    accounting::account(&mut model, path, options.allow_unclaimed).map_err(cancel::blame)?;
    cancel::check(path)?;
    dedupe(&mut model.notes);
    let limits = h5::Limits {
        allow_fill: options.allow_fill,
        allow_expansion: options.allow_expansion,
    };
    for store in &mut model.stores {
        store.set_limits(limits);
        store.forget_cached_blocks();
    }
    // What reading and accounting used and freed (the link walk's list of
    // every dataset, made on its own thread) is not needed again.
    crate::memory::release_freed();
    Ok(model)
}

/// Drops repeated notes, keeping the first of each (readers note some
/// things once per weight).
fn dedupe(notes: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    notes.retain(|n| seen.insert(n.clone()));
}

fn read_model(path: &Path, options: &ReadOptions) -> Result<Model> {
    let config = match &options.config {
        Some(config_path) => Some(read_config(config_path)?),
        None => None,
    };
    if let Some(input) = tf_checkpoint::resolve(path) {
        return tf_checkpoint::read(path, &input?, options, config);
    }
    match detect(path)? {
        FileKind::TfCheckpoint => Err(Error::new(
            path,
            ErrorKind::Unsupported("a TensorFlow checkpoint that could not be resolved".into()),
        )),
        FileKind::Hdf5 => {
            if let Some(index) = shard_index_of(path) {
                return open_sharded(&index, options, config);
            }
            let file = open_hdf5(path)?;
            match layout(path, &file)? {
                Layout::Legacy => {
                    // The link walk and the reading of the layers each go
                    // once through the file's structure, and neither needs
                    // the other: side by side they take both cores and
                    // share the block cache. The legacy reader follows only
                    // the names the file lists and never leaves the file
                    // (the HDF5 crate is given no resolver for external
                    // links), and whatever the walk refuses is refused.
                    // The walk's own thread allocates from its own arena,
                    // which the reader never reuses: what it freed is given
                    // back as soon as it ends (20 MB for 100,000 layers,
                    // else held beside the reader's layers).
                    let (walked, read) = std::thread::scope(|scope| {
                        let walk = scope.spawn(|| {
                            let walked = refuse_links(path, &file);
                            crate::memory::release_freed();
                            walked
                        });
                        let read = legacy_h5::read(path, &file, options, config);
                        (walk.join(), read)
                    });
                    walked.unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
                    let mut model = read?;
                    file.forget_name_indexes();
                    model.stores = vec![file.into()];
                    Ok(model)
                }
                Layout::Keras1 => {
                    refuse_links(path, &file)?;
                    let read = keras1::read(path, &file, config.as_ref())?;
                    Ok(model(
                        Format::Keras1H5,
                        read.layers,
                        Vec::new(),
                        read.notes,
                        vec![file],
                    ))
                }
                Layout::ObjectTree => {
                    // The Keras 3 reader walks whatever the tree holds; it
                    // counts on the links being refused first.
                    refuse_links(path, &file)?;
                    open_tree(path, TreeSource::single(file), config, options)
                }
            }
        }
        FileKind::Zip => {
            let archive = archive::open(path)?;
            let config = match (config, &archive.config) {
                (Some(c), _) => Some(c),
                (None, Some(json)) => Some(LayerConfig::parse(json).map_err(|e| {
                    Error::new(path, ErrorKind::InvalidKeras(format!("config.json: {e}")))
                })?),
                (None, None) => None,
            };
            let source = TreeSource {
                in_archive: true,
                metadata: archive.metadata,
                ..TreeSource::single(archive.weights)
            };
            open_tree(path, source, config, options)
        }
        FileKind::Json => open_sharded(path, options, config),
        FileKind::Safetensors => Err(Error::new(
            path,
            ErrorKind::Unsupported(
                "a safetensors file, which is converted already: `convert` takes Keras files; \
                 `inspect`, `verify` and `diff` read this one"
                    .into(),
            ),
        )),
    }
}

fn open_h5(path: &Path) -> Result<h5::File> {
    let file = open_hdf5(path)?;
    refuse_links(path, &file)?;
    Ok(file)
}

/// Opens an HDF5 file without walking it: [`refuse_links`] has yet to run.
fn open_hdf5(path: &Path) -> Result<h5::File> {
    h5::File::from_fs_file(files::open_regular(path)?)
        .map_err(|e| Error::new(path, ErrorKind::CorruptHdf5(e.0)))
}

/// Refuses files with links: Keras never writes them, and a link can make a
/// weight read data from elsewhere (an external link, from another file).
pub(crate) fn refuse_links(path: &Path, file: &h5::File) -> Result<()> {
    file.refuse_links().map_err(|e| {
        let kind = if e.is_refusal() || e.0.contains("link") || e.0.contains("virtual") {
            ErrorKind::Unsafe(e.0)
        } else {
            ErrorKind::CorruptHdf5(e.0)
        };
        Error::new(path, kind)
    })
}

fn read_config(path: &Path) -> Result<LayerConfig> {
    let mut text = String::new();
    files::open_regular(path)?
        .take(config::MAX_CONFIG_BYTES as u64 + 1)
        .read_to_string(&mut text)
        .map_err(|e| Error::new(path, e.into()))?;
    if text.len() > config::MAX_CONFIG_BYTES {
        return Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "the config is over {}, more than a Keras model needs",
                crate::inspect::human_bytes(config::MAX_CONFIG_BYTES as u64)
            )),
        ));
    }
    LayerConfig::parse(&text).map_err(|e| Error::new(path, ErrorKind::InvalidKeras(e)))
}

/// Whether `path` is one shard of a sharded save whose index sits beside it.
pub fn is_shard_of_index(path: &Path) -> bool {
    shard_index_of(path).is_some()
}

/// `<base>_00001.weights.h5` belongs to the save indexed by
/// `<base>.weights.json`: the index, when it is there.
pub fn shard_index_of(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(".weights.h5")?;
    let (base, number) = stem.rsplit_once('_')?;
    if number.len() != 5 || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let index = path.with_file_name(format!("{base}.weights.json"));
    index.is_file().then_some(index)
}

fn open_sharded(index: &Path, options: &ReadOptions, config: Option<LayerConfig>) -> Result<Model> {
    let json = files::read_text(index)?;
    let shards = v3_weights::shard_files(index, &json)?;
    if shards.is_empty() {
        return Err(Error::new(
            index,
            ErrorKind::InvalidKeras("the shard index names no shard files".into()),
        ));
    }
    let folder = index.parent().unwrap_or(Path::new("."));
    let files = shards
        .iter()
        .map(|shard| {
            // Shard names are plain file names; a symbolic link must not
            // lead out of the index's folder either.
            cancel::check(index)?;
            files::check_inside(shard, folder, "this shard")?;
            if detect(shard)? != FileKind::Hdf5 {
                return Err(Error::new(
                    shard,
                    ErrorKind::InvalidKeras("a shard that is not an HDF5 file".into()),
                ));
            }
            open_h5(shard)
        })
        .collect::<Result<Vec<_>>>()?;
    let source = TreeSource {
        files,
        in_archive: false,
        metadata: None,
    };
    open_tree(index, source, config, options)
}

/// The files of a Keras 3 object tree and what came with them.
struct TreeSource {
    files: Vec<h5::File>,
    in_archive: bool,
    /// `metadata.json` of a `.keras` archive.
    metadata: Option<serde_json::Value>,
}

impl TreeSource {
    fn single(file: h5::File) -> TreeSource {
        TreeSource {
            files: vec![file],
            in_archive: false,
            metadata: None,
        }
    }
}

fn open_tree(
    path: &Path,
    source: TreeSource,
    config: Option<LayerConfig>,
    options: &ReadOptions,
) -> Result<Model> {
    let TreeSource {
        files,
        in_archive,
        metadata,
    } = source;
    let tree = v3_weights::Tree::read(path, &files)?;
    if !tree.is_object_tree() {
        return Err(Error::new(
            path,
            ErrorKind::NotKeras("no Keras 3 `layers` tree in the weights".into()),
        ));
    }
    let read = v3_weights::read(&tree, config.as_ref(), options.include_optimizer)?;
    drop(tree);
    let format = v3_weights::format_of(files.len(), in_archive);
    let mut model = model(format, read.layers, read.optimizer, read.notes, files);
    model.skipped_groups = read.skipped_groups;
    let meta = |key: &str| {
        metadata
            .as_ref()
            .and_then(|m| m.get(key))
            .and_then(|v| v.as_str())
            .map(str::to_string)
    };
    model.keras_version = meta("keras_version");
    model.date_saved = meta("date_saved");
    Ok(model)
}

fn model(
    format: Format,
    layers: Vec<crate::model::Layer>,
    optimizer: Vec<crate::model::Weight>,
    notes: Vec<String>,
    stores: Vec<h5::File>,
) -> Model {
    Model {
        format,
        keras_version: None,
        backend: None,
        date_saved: None,
        layers,
        optimizer,
        notes,
        skipped_groups: Vec::new(),
        skipped: Vec::new(),
        stores: stores.into_iter().map(Into::into).collect(),
    }
}

/// The safetensors dtype of a stored weight, or an error naming it.
pub(crate) fn weight_dtype(
    path: &Path,
    info: &h5::DatasetInfo,
    weight: &str,
    notes: &mut Vec<String>,
) -> Result<Dtype> {
    let unsupported = |detail: String| {
        Error::new(
            path,
            ErrorKind::UnsupportedDtype {
                weight: weight.to_string(),
                detail,
            },
        )
    };
    Ok(match &info.element {
        Element::Float { size: 2 } => Dtype::F16,
        Element::Float { size: 4 } => Dtype::F32,
        Element::Float { size: 8 } => Dtype::F64,
        Element::Float { size } => {
            return Err(unsupported(format!("{}-bit float", u32::from(*size) * 8)))
        }
        Element::Int { size, signed } => match (size, signed) {
            (1, true) => Dtype::I8,
            (2, true) => Dtype::I16,
            (4, true) => Dtype::I32,
            (8, true) => Dtype::I64,
            (1, false) => Dtype::U8,
            (2, false) => Dtype::U16,
            (4, false) => Dtype::U32,
            (8, false) => Dtype::U64,
            _ => return Err(unsupported(format!("{}-bit integer", u32::from(*size) * 8))),
        },
        Element::Bool => Dtype::Bool,
        // Keras writes bfloat16 as 2-byte opaque data: Keras 3 adds a
        // `dtype` attribute, tf-keras weights-only files mark it nowhere.
        Element::Opaque { size: 2, .. } => {
            if info.dtype_attr.as_deref() != Some("bfloat16") {
                // Once per weight; `open` keeps one.
                notes.push(
                    "2-byte opaque weights carry no dtype mark; read as bfloat16, \
                     the only 2-byte opaque type Keras writes"
                        .to_string(),
                );
            }
            Dtype::BF16
        }
        Element::Opaque { size, tag } => {
            return Err(unsupported(format!("opaque {size}-byte `{tag}`")))
        }
        Element::NonStandard(detail) => {
            return Err(Error::new(
                path,
                ErrorKind::NonStandardLayout {
                    weight: weight.to_string(),
                    detail: detail.clone(),
                },
            ))
        }
        Element::Other(what) => return Err(unsupported(what.clone())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shard_is_named_base_underscore_five_digits_beside_its_index() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.weights.json"), "{}").unwrap();
        let index = dir.path().join("model.weights.json");
        assert_eq!(
            shard_index_of(&dir.path().join("model_00001.weights.h5")),
            Some(index)
        );
        assert!(is_shard_of_index(
            &dir.path().join("model_00001.weights.h5")
        ));
        for not_a_shard in [
            "model_001.weights.h5",
            "model_0000a.weights.h5",
            "model_000001.weights.h5",
            "other_00001.weights.h5",
            "model_00001.h5",
        ] {
            assert!(
                !is_shard_of_index(&dir.path().join(not_a_shard)),
                "{not_a_shard}"
            );
        }
    }

    #[test]
    fn repeated_notes_are_kept_once_in_first_order() {
        let mut notes: Vec<String> = ["b", "a", "b", "c", "a"].map(String::from).to_vec();
        dedupe(&mut notes);
        assert_eq!(notes, ["b", "a", "c"]);
    }
}
