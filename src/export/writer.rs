//! Writes a [`Plan`] as safetensors: one file, or Hugging Face shards with
//! an index.
//!
//! The header comes from the `safetensors` crate's own types (so its
//! validation and byte layout are the reference), but the data is copied
//! here: the crate's `View::data()` would hold a whole tensor in memory at
//! once. Tensors that go out as stored are copied file to file by the
//! kernel where they lie in one run of a file on disk, or else read into
//! fixed, aligned write buffers; a thread of its own does the copies and
//! writes the buffers (`sink.rs`). Tensors that
//! change on the way (PyTorch axes, casts) are built on another thread,
//! band by band into pieces written as they come, or, for the rarer steps,
//! whole, one at a time. Every output appears only when all are complete:
//! each is written to a temporary file in the target folder, synced, and
//! renamed into place at the end.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use safetensors::tensor::{Metadata, TensorInfo};
use tempfile::NamedTempFile;

use crate::cancel;
use crate::dtype::Dtype;
use crate::error::{Error, ErrorKind, Result};
use crate::export::plan::{Plan, PlannedTensor, Source};
use crate::export::sink::Sink;
use crate::export::transform;
use crate::files::{self, CreatedDirs, FileId};
use crate::h5;
use crate::model::{Location, Model};

/// The largest header the safetensors format allows (as the crate checks on read).
pub const MAX_HEADER_BYTES: usize = 100_000_000;

/// Tensors this large are copied file to file by the kernel where they are
/// one run of a file on disk, else read straight into the write buffer, one
/// `pread` per piece; smaller ones go through a scratch buffer first.
const DIRECT_READ_MIN_BYTES: u64 = 1 << 20;

/// The write buffer: every `write` is this many bytes at an offset that is
/// a multiple of it. Measured on a 1 GB bench file (2 cores, ext4, load
/// 7-9, medians of 5-7 alternating runs): 128 KiB pieces took 1.40 s
/// against 1.14 s for `cat` + sync and 1.72 s for `copy_file_range` (on a
/// machine that busy; on an idle one it is now what large stored tensors
/// take, see `sink.rs`); 64 KiB 1.49 s; 1 MiB pieces 3.4 s (three times
/// the system time), and `fallocate` of the output first made every size
/// slower (1 MiB: 2.9 s, 128 KiB: 2.2 s).
const WRITE_BUFFER_BYTES: usize = 128 << 10;

/// The direct-read threshold and the buffer sizes. The tests lower them
/// through the environment so that the few-KiB tensors Keras wrote in
/// `fixtures/` take the paths that multi-MiB tensors take (direct reads, a
/// tensor spread over many buffers, transposes in many bands), where Keras's
/// own hashes check them; without these variables the sizes are the
/// constants.
struct CopySizes {
    direct_read_min: u64,
    /// The write buffer, and the scratch buffer of smaller tensors.
    buffer: usize,
    /// How many bytes of input one band of a transposed tensor may hold.
    band: usize,
}

fn copy_sizes() -> &'static CopySizes {
    static SIZES: OnceLock<CopySizes> = OnceLock::new();
    SIZES.get_or_init(|| {
        let var = |name: &str| -> Option<u64> { std::env::var(name).ok()?.parse().ok() };
        let size = |name: &str| -> Option<usize> {
            var(name)
                .and_then(|n| usize::try_from(n).ok())
                .filter(|&n| n > 0)
        };
        CopySizes {
            direct_read_min: var("KERAS2SAFETENSORS_TEST_KERNEL_COPY_MIN_BYTES")
                .unwrap_or(DIRECT_READ_MIN_BYTES),
            buffer: size("KERAS2SAFETENSORS_TEST_COPY_BUFFER_BYTES").unwrap_or(WRITE_BUFFER_BYTES),
            band: size("KERAS2SAFETENSORS_TEST_BAND_BYTES").unwrap_or(transform::BAND_BYTES),
        }
    })
}

/// Name of the single output file, and of the index, in a sharded save.
pub const SINGLE_SHARD: &str = "model.safetensors";
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// How to write.
#[derive(Debug, Clone, Default)]
pub struct WriteOptions {
    /// Replace outputs that exist.
    pub force: bool,
    /// Split into Hugging Face shards of at most this many bytes of tensor
    /// data; the output is then a folder.
    pub max_shard_bytes: Option<u64>,
    /// Files the conversion reads (the input, its index, a config): an
    /// output that is one of them is refused, even with `force`. The files
    /// the weights are read from are protected without being listed.
    pub inputs: Vec<PathBuf>,
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct WriteSummary {
    /// Tensors written.
    pub tensors: usize,
    /// Bytes of tensor data written (headers not counted).
    pub bytes: u64,
    /// Wall time of the write.
    pub elapsed: Duration,
    /// The files written (shards and index, or the one file).
    pub files: Vec<PathBuf>,
    /// Casts that overflowed, one line per tensor.
    pub warnings: Vec<String>,
}

/// Writes `plan` (whose data lives in `model`) to `output`: a file, or with
/// `max_shard_bytes` a folder of shards. `progress` is called with each
/// number of data bytes written.
pub fn write(
    plan: &Plan,
    model: &Model,
    output: &Path,
    options: &WriteOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<WriteSummary> {
    let started = Instant::now();
    let fail = |path: &Path, kind: ErrorKind| Error::new(path, kind);
    let mut inputs: Vec<FileId> = options
        .inputs
        .iter()
        .filter_map(|p| FileId::of_path(p))
        .collect();
    inputs.extend(model.input_file_ids());
    // Folders made here (a shard folder and its missing parents) go again
    // if the write fails.
    let mut created = CreatedDirs::new();
    // What an earlier sharded conversion left here, replaced below.
    let previous = match options.max_shard_bytes {
        Some(_) => previous_set(output),
        None => Vec::new(),
    };
    let shards: Vec<(PathBuf, Vec<usize>)> = match options.max_shard_bytes {
        None => vec![(output.to_path_buf(), (0..plan.tensors.len()).collect())],
        Some(max) => {
            files::check_output_folder(output)?;
            if !previous.is_empty() && !options.force {
                return Err(fail(output, ErrorKind::OutputExists));
            }
            created.create(output)?;
            let groups = pack_shards(&plan.tensors, max);
            let count = groups.len();
            groups
                .into_iter()
                .enumerate()
                .map(|(i, group)| {
                    let name = if count == 1 {
                        SINGLE_SHARD.to_string()
                    } else {
                        format!("model-{:05}-of-{count:05}.safetensors", i + 1)
                    };
                    (output.join(name), group)
                })
                .collect()
        }
    };
    let index = (shards.len() > 1).then(|| output.join(SHARD_INDEX));
    for path in shards.iter().map(|(p, _)| p).chain(&index) {
        files::check_output(path, options.force, &inputs)?;
    }

    let mut written: Vec<(PathBuf, NamedTempFile)> = Vec::new();
    let mut warnings = Vec::new();
    for (path, members) in &shards {
        let temp = write_one(plan, members, model, path, progress, &mut warnings)?;
        written.push((path.clone(), temp));
    }
    if let Some(index_path) = &index {
        let mut weight_map = BTreeMap::new();
        for (path, members) in &shards {
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
            for &i in members {
                weight_map.insert(
                    plan.tensors[i].name.clone(),
                    file.clone().unwrap_or_default(),
                );
            }
        }
        let json = serde_json::json!({
            "metadata": {"total_size": plan.total_bytes()},
            "weight_map": weight_map,
        });
        let temp = temp_beside(index_path)?;
        let text = serde_json::to_string_pretty(&json).unwrap_or_default();
        temp.as_file()
            .write_all(text.as_bytes())
            .and_then(|_| temp.as_file().sync_all())
            .map_err(|e| fail(index_path, e.into()))?;
        written.push((index_path.clone(), temp));
    }
    let mut files = Vec::new();
    for (path, temp) in written {
        // Checked again just before the rename, which would replace
        // whatever is there by then.
        let persisted = files::check_output(&path, options.force, &inputs)
            .and_then(|_| persist(temp, &path, options.force));
        if let Err(e) = persisted {
            // A sharded output appears whole or not at all.
            for done in &files {
                let _ = std::fs::remove_file(done);
            }
            return Err(e);
        }
        files.push(path);
    }
    created.keep();
    if options.max_shard_bytes.is_some() {
        // The previous set goes as a whole: its shards that this set did
        // not replace. Files the tool did not write are left alone.
        for stale in previous {
            if !files.contains(&stale) {
                let _ = std::fs::remove_file(&stale);
            }
        }
    }
    // The renames themselves are durable once the folder is synced.
    #[cfg(unix)]
    if let Some(dir) = files.first().and_then(|f| f.parent()) {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        if let Ok(handle) = std::fs::File::open(dir) {
            let _ = handle.sync_all();
        }
    }
    Ok(WriteSummary {
        tensors: plan.tensors.len(),
        bytes: plan.total_bytes(),
        elapsed: started.elapsed(),
        files,
        warnings,
    })
}

/// The files an earlier sharded conversion wrote into `folder`: its index
/// and the shards the index names, and a lone `model.safetensors`. Names
/// in the index that are not plain file names in the folder are ignored.
fn previous_set(folder: &Path) -> Vec<PathBuf> {
    let mut set = Vec::new();
    let index = folder.join(SHARD_INDEX);
    if index.is_file() {
        let shards = std::fs::read_to_string(&index)
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|json| json.get("weight_map").and_then(|m| m.as_object()).cloned())
            .unwrap_or_default();
        for name in shards.values().filter_map(|v| v.as_str()) {
            let plain = Path::new(name).file_name().is_some_and(|f| f == name);
            let path = folder.join(name);
            if plain && path.is_file() && !set.contains(&path) {
                set.push(path);
            }
        }
        set.push(index);
    }
    let single = folder.join(SINGLE_SHARD);
    if single.is_file() {
        set.push(single);
    }
    set
}

/// Hugging Face's packing: tensors in name order, a new shard when the next
/// tensor would pass `max`; a tensor larger than `max` gets a shard alone.
pub fn pack_shards(tensors: &[PlannedTensor], max: u64) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| tensors[a].name.cmp(&tensors[b].name));
    let mut shards: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut size = 0u64;
    for i in order {
        let len = tensors[i].byte_len;
        if !current.is_empty() && size + len > max {
            shards.push(std::mem::take(&mut current));
            size = 0;
        }
        current.push(i);
        size += len;
    }
    if !current.is_empty() || shards.is_empty() {
        shards.push(current);
    }
    shards
}

/// Writes a small output (a rules file) as every output is written: to a
/// temporary file beside it, created with mode 0666 less the umask, synced,
/// then renamed into place, replacing an existing file only with `force`.
/// The caller checks first that `path` is no input ([`files::check_output`]).
pub fn write_small_output(path: &Path, bytes: &[u8], force: bool) -> Result<()> {
    let mut temp = temp_beside(path)?;
    temp.write_all(bytes)
        .and_then(|_| temp.as_file().sync_all())
        .map_err(|e| Error::new(path, e.into()))?;
    persist(temp, path, force)
}

/// A temporary file in `path`'s folder, to be renamed to `path`. It is
/// created with mode 0666 less the umask, as `cp` and `cat >` create files
/// (tempfile's default is 0600). Errors name the output or its folder,
/// never the temporary name.
fn temp_beside(path: &Path) -> Result<NamedTempFile> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(Error::new(
            dir,
            ErrorKind::Unsupported(format!(
                "no such folder, so `{}` cannot be written there",
                path.file_name().unwrap_or_default().to_string_lossy()
            )),
        ));
    }
    let mut builder = tempfile::Builder::new();
    builder.prefix(".keras2safetensors-").suffix(".tmp");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        // The kernel applies the umask to the mode given at creation.
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    builder
        .tempfile_in(dir)
        .map_err(|e| Error::new(path, e.into()))
}

fn persist(temp: NamedTempFile, path: &Path, force: bool) -> Result<()> {
    let persisted = if force {
        temp.persist(path).map(|_| ())
    } else {
        temp.persist_noclobber(path).map(|_| ())
    };
    persisted.map_err(|e| {
        let kind = if e.error.kind() == std::io::ErrorKind::AlreadyExists {
            ErrorKind::OutputExists
        } else {
            e.error.into()
        };
        Error::new(path, kind)
    })
}

/// A tensor's bytes as the writer receives them.
/// Most tensors, and most bytes of built tensors, the builder sends the
/// writer in one message: one message per tensor cost two thread wake-ups
/// each, 200,000 of them for a model of 100,000 small layers (in the PyTorch
/// layout, 10 s of task switches). A band of a big transposed tensor (2 MiB)
/// still goes alone, as soon as it is built; with 4 MiB batches the writer
/// waited for two.
const BATCH_TENSORS: usize = 1024;
const BATCH_BYTES: usize = 1 << 20;

/// What the writer does next, in output order.
enum Chunk {
    /// Copy the stored bytes of this tensor straight through.
    Stream(usize),
    /// Bytes built in memory, with how many values overflowed in a cast.
    Built(usize, Vec<u8>, u64),
    /// The next piece of a tensor built band by band.
    Piece(usize, Vec<u8>),
    /// The end of a tensor built band by band, with its cast overflows.
    End(usize, u64),
    Failed(usize, std::io::Error),
}

/// Chunks gathered for one message to the writer.
struct Batch<'s> {
    sender: &'s SyncSender<Vec<Chunk>>,
    chunks: Vec<Chunk>,
    bytes: usize,
}

impl Batch<'_> {
    /// Adds a chunk, sending the batch once it is full; `false` once the
    /// writer has stopped or a stop was asked for.
    fn push(&mut self, chunk: Chunk) -> bool {
        // Counted by capacity: a buffer used again may be far larger
        // than the small tensor built into it.
        if let Chunk::Built(_, bytes, _) | Chunk::Piece(_, bytes) = &chunk {
            self.bytes += bytes.capacity();
        }
        self.chunks.push(chunk);
        if self.chunks.len() < BATCH_TENSORS && self.bytes < BATCH_BYTES {
            return true;
        }
        self.send()
    }

    fn send(&mut self) -> bool {
        if self.chunks.is_empty() {
            return !cancel::requested();
        }
        self.bytes = 0;
        self.sender.send(std::mem::take(&mut self.chunks)).is_ok() && !cancel::requested()
    }
}

/// Writes the tensors `members` of `plan` into a temporary file beside
/// `path`, synced, and returns it for renaming.
fn write_one(
    plan: &Plan,
    members: &[usize],
    model: &Model,
    path: &Path,
    progress: &mut dyn FnMut(u64),
    warnings: &mut Vec<String>,
) -> Result<NamedTempFile> {
    let fail = |kind: ErrorKind| Error::new(path, kind);
    // The crate's order: by descending dtype alignment, then by name.
    let mut order: Vec<usize> = members.to_vec();
    order.sort_by(|&a, &b| {
        let (a, b) = (&plan.tensors[a], &plan.tensors[b]);
        b.dtype
            .to_safetensors()
            .cmp(&a.dtype.to_safetensors())
            .then(a.name.cmp(&b.name))
    });
    let header = Header::new(plan, &order).map_err(fail)?;
    let temp = temp_beside(path)?;
    std::thread::scope(|scope| -> Result<()> {
        // A batch waits while another is written.
        let (sender, receiver) = sync_channel::<Vec<Chunk>>(2);
        // Written buffers come back to be filled again.
        let (recycle, recycled) = std::sync::mpsc::channel::<Vec<u8>>();
        let order_for_builder = order.clone();
        scope.spawn(move || {
            let mut scratch = Scratch::default();
            let mut batch = Batch {
                sender: &sender,
                chunks: Vec::new(),
                bytes: 0,
            };
            for i in order_for_builder {
                let tensor = &plan.tensors[i];
                if tensor.is_verbatim() {
                    if !batch.push(Chunk::Stream(i)) {
                        return;
                    }
                    continue;
                }
                // A tensor built band by band goes a band at a time; a big
                // band fills a batch by itself.
                let mut sent = true;
                let mut send = |piece: Vec<u8>| {
                    sent = batch.push(Chunk::Piece(i, piece));
                    if sent {
                        Ok(())
                    } else {
                        Err(std::io::Error::other("the writer stopped"))
                    }
                };
                let mut next = || recycled.try_recv().unwrap_or_default();
                let chunk = match build_in_bands(model, tensor, &mut scratch, &mut next, &mut send)
                {
                    Ok(Some(overflow)) => Chunk::End(i, overflow),
                    Ok(None) => {
                        if let Ok(spare) = recycled.try_recv() {
                            scratch.spare = spare;
                        }
                        match build(model, tensor, &mut scratch) {
                            Ok((bytes, overflow)) => Chunk::Built(i, bytes, overflow),
                            Err(e) => Chunk::Failed(i, e),
                        }
                    }
                    Err(e) => Chunk::Failed(i, e),
                };
                if !sent || !batch.push(chunk) {
                    return;
                }
            }
            batch.send();
        });
        let sizes = copy_sizes();
        let mut out = Sink::start(scope, temp.as_file(), sizes.buffer);
        out.write_all(&(header.len as u64).to_le_bytes())
            .and_then(|_| header.write_to(&mut out))
            .map_err(|e| fail(e.into()))?;
        let mut buf = vec![0u8; sizes.buffer];
        let report = |i: usize, result: std::io::Result<()>| {
            result.map_err(|e| {
                let name = &plan.tensors[i].name;
                if let Some(limit) = crate::h5::refusal(&e) {
                    return fail(ErrorKind::Unsafe(format!("tensor `{name}`: {limit}")));
                }
                fail(ErrorKind::Io(std::io::Error::new(
                    e.kind(),
                    format!("writing tensor `{name}`: {e}"),
                )))
            })
        };
        // Bytes of the tensor being written in pieces.
        let mut banded = 0u64;
        // Tensors written whole, to be sure none was left out.
        let mut written = 0usize;
        for chunk in receiver.into_iter().flatten() {
            pause_for_tests();
            let (i, result) = match chunk {
                Chunk::Stream(i) => {
                    let tensor = &plan.tensors[i];
                    (
                        i,
                        stream_tensor(model, tensor, &mut out, &mut buf, progress),
                    )
                }
                Chunk::Built(i, bytes, overflow) => {
                    let tensor = &plan.tensors[i];
                    warnings.extend(overflow_warning(tensor, overflow));
                    let result =
                        check_len(tensor, bytes.len() as u64).and_then(|_| out.write_all(&bytes));
                    progress(bytes.len() as u64);
                    let _ = recycle.send(bytes);
                    (i, result)
                }
                Chunk::Piece(i, piece) => {
                    let result = out.write_all(&piece);
                    banded += piece.len() as u64;
                    progress(piece.len() as u64);
                    let _ = recycle.send(piece);
                    if let Err(e) = result {
                        (i, Err(e))
                    } else {
                        continue;
                    }
                }
                Chunk::End(i, overflow) => {
                    let tensor = &plan.tensors[i];
                    warnings.extend(overflow_warning(tensor, overflow));
                    (i, check_len(tensor, std::mem::take(&mut banded)))
                }
                Chunk::Failed(i, e) => (i, Err(e)),
            };
            report(i, result)?;
            written += 1;
        }
        if cancel::requested() {
            return Err(fail(cancel::interrupted().into()));
        }
        // The header promises every tensor: a builder that stopped early
        // would leave a short file behind a valid header.
        if written != order.len() {
            return Err(fail(ErrorKind::Io(std::io::Error::other(format!(
                "only {written} of {} tensors were made",
                order.len()
            )))));
        }
        out.finish().map_err(|e| fail(e.into()))
    })?;
    temp.as_file().sync_all().map_err(|e| fail(e.into()))?;
    Ok(temp)
}

/// Copies one stored tensor into the output: a contiguous one read
/// straight into the sink's buffer, anything else through `buf`.
fn stream_tensor(
    model: &Model,
    tensor: &PlannedTensor,
    out: &mut Sink<'_>,
    buf: &mut [u8],
    progress: &mut dyn FnMut(u64),
) -> std::io::Result<()> {
    let Source::Stored { file, location, .. } = &tensor.source else {
        unreachable!("only stored tensors stream");
    };
    let file = *file;
    if tensor.byte_len >= copy_sizes().direct_read_min {
        // Read by offset, the stored run must be exactly the planned size:
        // a longer one would be cut short without an error.
        if let Location::H5(h5::Location::Contiguous { len, .. }) = location {
            check_len(tensor, *len)?;
        }
        if let Some(span) = model.weight_span(file, location) {
            let len = span.len;
            out.copy_span(span)?;
            progress(len);
            return Ok(());
        }
        let mut done = 0u64;
        while done < tensor.byte_len {
            let space = out.spare();
            let n = (tensor.byte_len - done).min(space.len() as u64) as usize;
            if !model.read_weight_at(file, location, done, &mut space[..n])? {
                break;
            }
            out.commit(n)?;
            progress(n as u64);
            done += n as u64;
        }
        if done == tensor.byte_len {
            return Ok(());
        }
        if done > 0 {
            return Err(std::io::Error::other("stored data changed its layout"));
        }
    }
    let mut written = 0u64;
    model.copy_weight_data(file, location, out, buf, &mut |n| {
        written += n;
        progress(n);
    })?;
    check_len(tensor, written)
}

/// A pause between tensors, only when the environment asks for it, so that
/// the interrupt tests can land a signal in the middle of a write.
fn pause_for_tests() {
    static PAUSE: OnceLock<Option<Duration>> = OnceLock::new();
    let pause = PAUSE.get_or_init(|| {
        std::env::var("KERAS2SAFETENSORS_TEST_PAUSE_MS")
            .ok()
            .and_then(|ms| ms.parse().ok())
            .map(Duration::from_millis)
    });
    if let Some(pause) = pause {
        std::thread::sleep(*pause);
    }
}

/// What a person is told when a cast turned `overflow` values infinite.
fn overflow_warning(tensor: &PlannedTensor, overflow: u64) -> Option<String> {
    (overflow > 0).then(|| {
        format!(
            "tensor `{}`: {overflow} values too large for {} became infinite",
            tensor.name,
            tensor.dtype.numpy_name()
        )
    })
}

fn check_len(tensor: &PlannedTensor, written: u64) -> std::io::Result<()> {
    if written == tensor.byte_len {
        Ok(())
    } else {
        Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "gave {written} bytes where its shape needs {}",
                tensor.byte_len
            ),
        ))
    }
}

/// The size of the pieces a banded tensor is written in.
const PIECE_BYTES: usize = 2 << 20;

/// Builds a tensor whose steps only move axes (a transpose, a convolution
/// kernel's permutation, a GRU kernel's gate blocks reordered and
/// transposed) or that is only cast, band by band: its output
/// goes to `emit` in pieces of about 2 MiB from `next`, and memory stays
/// one band of input (64 MiB) whatever the tensor's size. `None` when the
/// tensor needs the whole-tensor path ([`build`]): other steps, a fill,
/// data that is not one contiguous run, or a single output row larger
/// than a band.
fn build_in_bands(
    model: &Model,
    tensor: &PlannedTensor,
    scratch: &mut Scratch,
    next: &mut dyn FnMut() -> Vec<u8>,
    emit: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<Option<u64>> {
    let Source::Stored {
        file,
        location,
        dtype,
        shape,
    } = &tensor.source
    else {
        return Ok(None);
    };
    let Some((layout, o_runs)) = transform::as_banded(shape, &tensor.steps) else {
        return Ok(None);
    };
    let band = copy_sizes().band;
    if layout.s * layout.i * dtype.size() > band
        || !model.read_weight_at(*file, location, 0, &mut [])?
    {
        return Ok(None);
    }
    let expected = shape.iter().map(|&d| d as u64).product::<u64>() * dtype.size() as u64;
    let mut read = |offset: u64, buf: &mut [u8]| -> std::io::Result<()> {
        if offset + buf.len() as u64 > expected
            || !model.read_weight_at(*file, location, offset, buf)?
        {
            return Err(std::io::Error::other("stored data changed its layout"));
        }
        Ok(())
    };
    let piece = PIECE_BYTES.min(band);
    let mut overflow = 0u64;
    if *dtype == tensor.dtype {
        transform::stream_reverse3(
            layout,
            &o_runs,
            dtype.size(),
            band,
            piece,
            &mut scratch.input,
            &mut read,
            next,
            emit,
        )?;
    } else {
        // The uncast piece's buffer goes round between the two closures.
        let uncast = std::cell::Cell::new(std::mem::take(&mut scratch.spare));
        let mut cast_piece = |moved: Vec<u8>| {
            let (bytes, n) = transform::cast_into(&moved, *dtype, tensor.dtype, next());
            overflow += n;
            uncast.set(moved);
            emit(bytes)
        };
        let mut own = || uncast.take();
        transform::stream_reverse3(
            layout,
            &o_runs,
            dtype.size(),
            band,
            piece,
            &mut scratch.input,
            &mut read,
            &mut own,
            &mut cast_piece,
        )?;
    }
    Ok(Some(overflow))
}

/// Builds a tensor that changes on the way out: reads it whole, moves its
/// axes, casts it.
/// Allocations kept from one built tensor to the next: a 256 MiB kernel
/// costs page faults the first time only.
#[derive(Default)]
pub(crate) struct Scratch {
    input: Vec<u8>,
    /// An output buffer the writer has finished with.
    pub spare: Vec<u8>,
}

/// Builds a tensor that changes on the way out: reads it whole, moves its
/// axes, casts it.
pub(crate) fn build(
    model: &Model,
    tensor: &PlannedTensor,
    scratch: &mut Scratch,
) -> std::io::Result<(Vec<u8>, u64)> {
    let spare = std::mem::take(&mut scratch.spare);
    match &tensor.source {
        Source::Stored {
            file,
            location,
            dtype,
            shape,
        } => {
            let expected = shape.iter().map(|&d| d as u64).product::<u64>() * dtype.size() as u64;
            let input = &mut scratch.input;
            // One read where the data is one run; else the general copy.
            input.resize(expected as usize, 0);
            if !model.read_weight_at(*file, location, 0, input)? {
                input.clear();
                let mut buf = vec![0u8; h5::COPY_BUFFER_BYTES.min(1 << 16)];
                model.copy_weight_data(*file, location, input, &mut buf, &mut |_| {})?;
                if input.len() as u64 != expected {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!(
                            "read {} bytes where its shape needs {expected}",
                            input.len()
                        ),
                    ));
                }
            }
            if *dtype == tensor.dtype {
                Ok((
                    transform::apply(input, shape, dtype.size(), &tensor.steps, spare),
                    0,
                ))
            } else if tensor.steps.is_empty() {
                Ok(transform::cast_into(input, *dtype, tensor.dtype, spare))
            } else {
                let moved = transform::apply(input, shape, dtype.size(), &tensor.steps, Vec::new());
                Ok(transform::cast_into(&moved, *dtype, tensor.dtype, spare))
            }
        }
        Source::Fill(value) => {
            let count: u64 = tensor.shape.iter().map(|&d| d as u64).product();
            let one = encode(*value, tensor.dtype);
            Ok((one.repeat(count as usize), 0))
        }
        Source::Stacked(parts) => {
            // Stacking along a new first axis puts each part's output
            // bytes one after the other.
            let mut out = spare;
            out.clear();
            let mut overflow = 0;
            let part_shape: crate::export::shared::Dims =
                tensor.shape.get(1..).unwrap_or_default().into();
            for part in parts {
                let one = PlannedTensor {
                    source: part.clone(),
                    shape: part_shape.clone(),
                    byte_len: tensor.byte_len / parts.len().max(1) as u64,
                    ..tensor.clone()
                };
                let (bytes, n) = build(model, &one, scratch)?;
                out.extend_from_slice(&bytes);
                overflow += n;
            }
            Ok((out, overflow))
        }
    }
}

/// One value in a dtype's little-endian bytes.
fn encode(value: f64, dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::F64 => value.to_le_bytes().to_vec(),
        Dtype::F32 => (value as f32).to_le_bytes().to_vec(),
        Dtype::F16 => half::f16::from_f64(value).to_le_bytes().to_vec(),
        Dtype::BF16 => half::bf16::from_f64(value).to_le_bytes().to_vec(),
        Dtype::I64 => (value as i64).to_le_bytes().to_vec(),
        Dtype::U64 => (value as u64).to_le_bytes().to_vec(),
        Dtype::I32 => (value as i32).to_le_bytes().to_vec(),
        Dtype::U32 => (value as u32).to_le_bytes().to_vec(),
        Dtype::I16 => (value as i16).to_le_bytes().to_vec(),
        Dtype::U16 => (value as u16).to_le_bytes().to_vec(),
        Dtype::I8 => (value as i8).to_le_bytes().to_vec(),
        Dtype::U8 | Dtype::Bool => vec![value as u8],
    }
}

/// Tensors the crate checks at a time (see [`Header::new`]).
const HEADER_CHECK_TENSORS: usize = 4096;

/// The JSON header of one output file, checked and measured before a byte
/// is written, then written straight into the file: it is never held
/// whole (18 MB for 200,000 tensors).
struct Header<'p> {
    plan: &'p Plan,
    /// The plan's tensors in writing order.
    order: &'p [usize],
    /// Where each tensor's data ends, in writing order.
    ends: Vec<usize>,
    /// Its length, padded with spaces to a multiple of 8 bytes.
    len: usize,
}

impl<'p> Header<'p> {
    fn new(plan: &'p Plan, order: &'p [usize]) -> std::result::Result<Header<'p>, ErrorKind> {
        let mut offset = 0usize;
        let mut ends = Vec::with_capacity(order.len());
        for &i in order {
            let t = &plan.tensors[i];
            let len = usize::try_from(t.byte_len)
                .map_err(|_| ErrorKind::Unsupported(format!("tensor `{}` is too large", t.name)))?;
            offset += len;
            ends.push(offset);
        }
        let mut header = Header {
            plan,
            order,
            ends,
            len: 0,
        };
        header.check()?;
        let mut counted = Counted {
            inner: std::io::sink(),
            count: 0,
        };
        header.json(&mut counted).map_err(|e| {
            ErrorKind::InvalidSafetensors(format!("header does not serialise: {e}"))
        })?;
        header.len = counted.count.next_multiple_of(8);
        if header.len > MAX_HEADER_BYTES {
            return Err(ErrorKind::Unsupported(format!(
                "the header would be {} bytes, over the format's limit of {MAX_HEADER_BYTES}",
                header.len
            )));
        }
        Ok(header)
    }

    fn info(&self, k: usize) -> TensorInfo {
        let t = &self.plan.tensors[self.order[k]];
        TensorInfo {
            dtype: t.dtype.to_safetensors(),
            shape: t.shape.to_vec(),
            data_offsets: (if k == 0 { 0 } else { self.ends[k - 1] }, self.ends[k]),
        }
    }

    /// The crate checks the header (offsets against dtypes and shapes,
    /// names) on a copy dropped before the bytes are made, a piece of
    /// `HEADER_CHECK_TENSORS` tensors at a time with offsets counted from
    /// the piece's start: a copy of the whole header is 30 MB for 200,000
    /// tensors. The plan has refused two tensors of one name already.
    fn check(&self) -> std::result::Result<(), ErrorKind> {
        let metadata: HashMap<String, String> = self.plan.metadata.clone().into_iter().collect();
        let mut metadata = Some(metadata);
        for start in (0..self.order.len()).step_by(HEADER_CHECK_TENSORS) {
            let piece = start..(start + HEADER_CHECK_TENSORS).min(self.order.len());
            let base = match start {
                0 => 0,
                k => self.ends[k - 1],
            };
            let infos = piece
                .map(|k| {
                    let mut info = self.info(k);
                    info.data_offsets = (info.data_offsets.0 - base, info.data_offsets.1 - base);
                    (self.plan.tensors[self.order[k]].name.clone(), info)
                })
                .collect();
            Metadata::new(metadata.take(), infos).map_err(|e| {
                ErrorKind::InvalidSafetensors(format!("planned header is invalid: {e}"))
            })?;
        }
        Ok(())
    }

    /// The JSON, unpadded. Made here rather than by the crate so that it is
    /// the same on every run: the crate keeps `__metadata__` in a hash map,
    /// whose order changes from run to run.
    fn json(&self, out: &mut dyn Write) -> serde_json::Result<()> {
        let mut out = out;
        let io = serde_json::Error::io;
        out.write_all(b"{\"__metadata__\":").map_err(io)?;
        serde_json::to_writer(&mut out, &self.plan.metadata)?;
        for (k, &i) in self.order.iter().enumerate() {
            out.write_all(b",").map_err(io)?;
            serde_json::to_writer(&mut out, &self.plan.tensors[i].name)?;
            out.write_all(b":").map_err(io)?;
            serde_json::to_writer(&mut out, &self.info(k))?;
        }
        out.write_all(b"}").map_err(io)
    }

    /// Writes the JSON and its padding (not the length before them).
    fn write_to(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let mut counted = Counted {
            inner: out,
            count: 0,
        };
        self.json(&mut counted).map_err(std::io::Error::from)?;
        let padding = self.len.checked_sub(counted.count).ok_or_else(|| {
            std::io::Error::other("the header came out longer than it was measured")
        })?;
        counted.inner.write_all(&b" ".repeat(padding))
    }
}

/// A writer that counts the bytes it passes on.
struct Counted<W> {
    inner: W,
    count: usize,
}

impl<W: Write> Write for Counted<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// The header as written: JSON and padding.
    fn header_bytes(plan: &Plan, order: &[usize]) -> std::result::Result<Vec<u8>, ErrorKind> {
        let header = Header::new(plan, order)?;
        let mut bytes = Vec::new();
        header.write_to(&mut bytes).unwrap();
        assert_eq!(bytes.len(), header.len);
        Ok(bytes)
    }

    fn tensor(name: &str, byte_len: u64) -> PlannedTensor {
        PlannedTensor {
            name: name.into(),
            keras_name: None,
            dtype: Dtype::U8,
            shape: Arc::new([byte_len as usize]),
            source: Source::Fill(0.0),
            steps: Arc::from([]),
            byte_len,
        }
    }

    #[test]
    fn a_header_may_be_as_large_as_the_format_allows() {
        // The safetensors crate reads headers of up to MAX_HEADER_BYTES
        // bytes, so one of exactly that size is written. A plan with no
        // tensors and one metadata value: the header is the JSON around
        // that value, padded with spaces to a multiple of 8.
        let plan = |value_len: usize| Plan {
            tensors: Vec::new(),
            metadata: BTreeMap::from([("k".to_string(), "v".repeat(value_len))]),
            notes: Vec::new(),
            warnings: Vec::new(),
            skipped: Vec::new(),
            weights: 0,
        };
        let around = header_bytes(&plan(0), &[]).unwrap().trim_ascii_end().len();
        assert_eq!(MAX_HEADER_BYTES % 8, 0);
        let largest = header_bytes(&plan(MAX_HEADER_BYTES - around), &[]).unwrap();
        assert_eq!(largest.len(), MAX_HEADER_BYTES);
    }

    #[test]
    fn the_crate_checks_every_piece_of_a_long_header() {
        // Tensors of 1..=3 bytes, so offsets in every piece but the first
        // start past zero; one whose size disagrees with its shape, in a
        // later piece than the first, is caught there.
        let count = 2 * HEADER_CHECK_TENSORS + 10;
        let plan = |bad: Option<usize>| Plan {
            tensors: (0..count)
                .map(|i| {
                    let mut t = tensor(&format!("t{i:06}"), 1 + (i % 3) as u64);
                    if Some(i) == bad {
                        t.shape = Arc::new([7]);
                    }
                    t
                })
                .collect(),
            metadata: BTreeMap::new(),
            notes: Vec::new(),
            warnings: Vec::new(),
            skipped: Vec::new(),
            weights: 0,
        };
        let order: Vec<usize> = (0..count).collect();
        let header = header_bytes(&plan(None), &order).unwrap();
        let parsed: serde_json::Value = serde_json::from_slice(&header).unwrap();
        let last = &parsed[format!("t{:06}", count - 1)]["data_offsets"];
        let total: u64 = (0..count).map(|i| 1 + (i % 3) as u64).sum();
        assert_eq!(last[1], total);
        for bad in [0, HEADER_CHECK_TENSORS, count - 1] {
            let err = header_bytes(&plan(Some(bad)), &order).unwrap_err();
            assert!(
                matches!(&err, ErrorKind::InvalidSafetensors(m) if m.contains("planned header is invalid")),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn the_builder_sends_a_batch_when_it_is_full_and_a_big_band_at_once() {
        // Room for a message per chunk: a batch sent too soon is counted
        // below, not waited on.
        let (sender, receiver) = sync_channel::<Vec<Chunk>>(2 * BATCH_TENSORS);
        let mut batch = Batch {
            sender: &sender,
            chunks: Vec::new(),
            bytes: 0,
        };
        let sizes = |r: &std::sync::mpsc::Receiver<Vec<Chunk>>| -> Vec<usize> {
            r.try_iter().map(|b| b.len()).collect()
        };
        // Nothing to send: nothing sent.
        assert!(batch.send());
        assert_eq!(sizes(&receiver), Vec::<usize>::new());
        // Stored tensors: BATCH_TENSORS to a message.
        for i in 0..BATCH_TENSORS - 1 {
            assert!(batch.push(Chunk::Stream(i)));
        }
        assert_eq!(sizes(&receiver), Vec::<usize>::new());
        assert!(batch.push(Chunk::Stream(0)));
        assert_eq!(sizes(&receiver), [BATCH_TENSORS]);
        // Built tensors: until their buffers reach BATCH_BYTES.
        let quarter = BATCH_BYTES / 4;
        for _ in 0..3 {
            assert!(batch.push(Chunk::Built(0, Vec::with_capacity(quarter), 0)));
        }
        assert_eq!(sizes(&receiver), Vec::<usize>::new());
        assert!(batch.push(Chunk::Built(0, Vec::with_capacity(quarter), 0)));
        assert_eq!(sizes(&receiver), [4]);
        // A band of a big tensor goes at once, with what waited before it.
        assert!(batch.push(Chunk::Stream(1)));
        assert!(batch.push(Chunk::Piece(0, vec![0u8; 2 * BATCH_BYTES])));
        assert_eq!(sizes(&receiver), [2]);
        // The rest at the end; a writer that stopped is told.
        assert!(batch.push(Chunk::Stream(2)));
        assert!(batch.send());
        assert_eq!(sizes(&receiver), [1]);
        drop(receiver);
        assert!(batch.push(Chunk::Stream(3)));
        assert!(!batch.send());
    }

    #[test]
    fn shards_pack_greedily_in_name_order() {
        let tensors = [
            tensor("c", 4),
            tensor("a", 3),
            tensor("b", 3),
            tensor("d", 20),
        ];
        let names = |shards: Vec<Vec<usize>>| -> Vec<Vec<&str>> {
            shards
                .iter()
                .map(|s| s.iter().map(|&i| tensors[i].name.as_str()).collect())
                .collect()
        };
        assert_eq!(
            names(pack_shards(&tensors, 7)),
            [vec!["a", "b"], vec!["c"], vec!["d"]]
        );
        assert_eq!(
            names(pack_shards(&tensors, 100)),
            [vec!["a", "b", "c", "d"]]
        );
        // A shard may be filled exactly: Hugging Face starts a new one only
        // when the next tensor would pass the limit.
        assert_eq!(
            names(pack_shards(&tensors, 6)),
            [vec!["a", "b"], vec!["c"], vec!["d"]]
        );
    }
}
