//! Where each input of `convert` goes, decided for every input before
//! anything is written: like `cp`, `-o` may name a file or a folder; a
//! batch maps each input to its own output, and two inputs never share one.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use keras2safetensors::cancel;
use keras2safetensors::files::{self, FileId};
use keras2safetensors::keras::{self, FileKind};
use keras2safetensors::{Error, ErrorKind, Result};

/// For `-o -`: a temporary folder to write the one output into before it
/// is copied to standard output; `None` for any other output.
pub fn stdout_target(
    inputs: &[PathBuf],
    output: Option<&Path>,
    max_shard_size: Option<u64>,
) -> Result<Option<tempfile::TempDir>> {
    if output != Some(Path::new("-")) {
        return Ok(None);
    }
    let unsupported = |why: &str| Error::new("-", ErrorKind::Unsupported(why.to_string()));
    if inputs.len() != 1 || is_folder_of_files(&inputs[0]) {
        return Err(unsupported(
            "standard output takes one converted file: give one input",
        ));
    }
    if max_shard_size.is_some() {
        return Err(unsupported(
            "shards are several files, which standard output cannot hold: give a folder with -o",
        ));
    }
    tempfile::Builder::new()
        .prefix("keras2safetensors-")
        .tempdir()
        .map(Some)
        .map_err(|e| Error::new(std::env::temp_dir(), e.into()))
}

/// Copies a finished output to standard output.
pub fn copy_to_stdout(path: &Path) -> Result<()> {
    let mut file = files::open_regular(path)?;
    let mut stdout = std::io::stdout().lock();
    std::io::copy(&mut file, &mut stdout)
        .and_then(|_| std::io::Write::flush(&mut stdout))
        .map(|_| ())
        .map_err(|e| Error::new("<stdout>", e.into()))
}

/// Every (input, output) of a run, checked: the same input given twice is
/// converted once, and two inputs that would get one output name keep
/// their whole file names instead (`x.keras.safetensors`,
/// `x.weights.h5.safetensors`); if even those collide, it is an error
/// naming both.
pub fn plan_outputs(
    inputs: &[PathBuf],
    output: Option<&Path>,
    shards: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    if let Some(stdin) = inputs.iter().find(|p| p.as_os_str() == "-") {
        return Err(Error::new(
            stdin,
            ErrorKind::Unsupported(
                "standard input cannot be read: a Keras file needs a seekable file (save it to disk first)"
                    .into(),
            ),
        ));
    }
    let batch = is_batch(inputs);
    let pairs = if batch {
        let pairs = batch_pairs(inputs, output, shards)?;
        if pairs.is_empty() {
            let searched: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
            return Err(Error::new(
                &inputs[0],
                ErrorKind::NothingToWrite(format!(
                    "no Keras file found in {} (folders are searched recursively, files recognised by content)",
                    searched.join(", ")
                )),
            ));
        }
        pairs
    } else {
        let input = &inputs[0];
        let target = match output {
            // Like `cp`: into an existing folder, or one named with a
            // trailing `/`, under the input's own name.
            Some(dir) if !shards && (dir.is_dir() || ends_with_separator(dir)) => {
                dir.join(default_output(input, false).file_name().unwrap_or_default())
            }
            Some(path) => path.to_path_buf(),
            None => default_output(input, shards),
        };
        vec![(input.clone(), target)]
    };
    distinct(pairs, shards, notes)
}

/// A folder to search for Keras files: any folder but a SavedModel or a
/// checkpoint folder, which is one model.
pub fn is_folder_of_files(path: &Path) -> bool {
    path.is_dir() && !keras::is_tf_folder(path)
}

/// Whether a run converts several models (several inputs, or a folder).
pub fn is_batch(inputs: &[PathBuf]) -> bool {
    inputs.len() > 1 || inputs.iter().any(|p| is_folder_of_files(p))
}

fn ends_with_separator(path: &Path) -> bool {
    path.as_os_str()
        .to_string_lossy()
        .ends_with(std::path::MAIN_SEPARATOR)
        || path.as_os_str().to_string_lossy().ends_with('/')
}

/// Drops repeated inputs and gives colliding outputs distinct names.
fn distinct(
    pairs: Vec<(PathBuf, PathBuf)>,
    shards: bool,
    notes: &mut Vec<String>,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    // One file reached by several paths is converted once, under the path
    // that is not a symbolic link where there is one.
    let is_link = |p: &Path| {
        p.symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
    };
    let mut seen: HashMap<FileId, usize> = HashMap::new();
    let mut unique: Vec<(PathBuf, PathBuf)> = Vec::new();
    for (input, output) in pairs {
        let Some(id) = FileId::of_path(&input) else {
            unique.push((input, output));
            continue;
        };
        match seen.get(&id) {
            Some(&kept) => {
                let mut dropped = (input, output);
                if is_link(&unique[kept].0) && !is_link(&dropped.0) {
                    std::mem::swap(&mut unique[kept], &mut dropped);
                }
                notes.push(format!(
                    "{}: the same file as {}, converted once",
                    dropped.0.display(),
                    unique[kept].0.display()
                ));
            }
            None => {
                seen.insert(id, unique.len());
                unique.push((input, output));
            }
        }
    }
    let mut count: HashMap<PathBuf, usize> = HashMap::new();
    for (_, output) in &unique {
        *count.entry(output.clone()).or_default() += 1;
    }
    let renamed: Vec<(PathBuf, PathBuf)> = unique
        .into_iter()
        .map(|(input, output)| {
            if count[&output] < 2 {
                return (input, output);
            }
            let whole = input.file_name().unwrap_or_default().to_string_lossy();
            let name = if shards {
                format!("{whole}.safetensors.d")
            } else {
                format!("{whole}.safetensors")
            };
            let output = output.with_file_name(name);
            (input, output)
        })
        .collect();
    let mut first: HashMap<&Path, &Path> = HashMap::new();
    for (input, output) in &renamed {
        if let Some(other) = first.insert(output, input) {
            return Err(Error::new(
                output,
                ErrorKind::Unsupported(format!(
                    "two inputs would be written here: `{}` and `{}`; convert them into different folders",
                    other.display(),
                    input.display()
                )),
            ));
        }
    }
    Ok(renamed)
}

/// Inputs and outputs for a batch: files as given, folders searched
/// recursively for Keras files, each written under `output` (or beside
/// its input) with the `.safetensors` extension.
fn batch_pairs(
    inputs: &[PathBuf],
    output: Option<&Path>,
    shards: bool,
) -> Result<Vec<(PathBuf, PathBuf)>> {
    if let Some(dir) = output {
        // Made later, when there is something to write into it.
        match std::fs::metadata(dir) {
            Ok(meta) if !meta.is_dir() => {
                return Err(Error::new(
                    dir,
                    ErrorKind::Unsupported(format!(
                        "several inputs need an output folder, and this is {}",
                        files::kind_name(meta.file_type())
                    )),
                ))
            }
            _ => {}
        }
    }
    let mut pairs = Vec::new();
    let mut visited = HashSet::new();
    for input in inputs {
        if is_folder_of_files(input) {
            let mut found = Vec::new();
            find_keras_files(input, &mut found, &mut visited)?;
            found.sort();
            for file in found {
                let relative = file.strip_prefix(input).unwrap_or(&file).to_path_buf();
                let target = match output {
                    Some(dir) => default_output(&dir.join(&relative), shards),
                    None => default_output(&file, shards),
                };
                pairs.push((file, target));
            }
        } else {
            let name = input.file_name().map(PathBuf::from).unwrap_or_default();
            let target = match output {
                Some(dir) => default_output(&dir.join(name), shards),
                None => default_output(input, shards),
            };
            pairs.push((input.clone(), target));
        }
    }
    Ok(pairs)
}

/// Keras files under `dir`, by content: HDF5, zip archives and sharded
/// indexes; a shard whose index is there is left to the index. Only
/// regular files are opened (named pipes, sockets and devices are passed
/// over: opening one could block). Symbolic links to folders are not
/// followed, and each real folder (by device and inode) is visited once, so
/// no link leads the search out of the tree or round it again.
fn find_keras_files(
    dir: &Path,
    found: &mut Vec<PathBuf>,
    visited: &mut HashSet<FileId>,
) -> Result<()> {
    if let Some(id) = FileId::of_path(dir) {
        if !visited.insert(id) {
            return Ok(());
        }
    }
    let entries = std::fs::read_dir(dir).map_err(|e| Error::new(dir, e.into()))?;
    for entry in entries {
        cancel::check(dir)?;
        let entry = entry.map_err(|e| Error::new(dir, e.into()))?;
        let path = entry.path();
        let file_type = entry.file_type().map_err(|e| Error::new(&path, e.into()))?;
        if file_type.is_dir() {
            // A SavedModel or checkpoint folder is one model.
            if keras::is_tf_folder(&path) {
                found.push(path);
            } else {
                find_keras_files(&path, found, visited)?;
            }
            continue;
        }
        if file_type.is_symlink() {
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_file() => {}
                Ok(meta) if meta.is_dir() => {
                    eprintln!(
                        "note: {}: a symbolic link to a folder, not followed",
                        path.display()
                    );
                    continue;
                }
                _ => continue,
            }
        } else if !file_type.is_file() {
            continue;
        }
        let is_index = path.to_string_lossy().ends_with(".weights.json");
        match keras::detect(&path) {
            Ok(FileKind::Hdf5) if !keras::is_shard_of_index(&path) => found.push(path),
            Ok(FileKind::Zip) => found.push(path),
            Ok(FileKind::Json) if is_index => found.push(path),
            // A TF checkpoint, once, by its index file.
            Ok(FileKind::TfCheckpoint) if path.extension().is_some_and(|e| e == "index") => {
                found.push(path)
            }
            _ => {}
        }
    }
    Ok(())
}

/// INPUT with the extension `.safetensors` (or, for shards, without an
/// extension: a folder); Keras's double extensions (`x.weights.h5`,
/// `x.weights.json`) are replaced whole.
fn default_output(input: &Path, folder: bool) -> PathBuf {
    let name = input
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let stem = [".weights.h5", ".weights.json"]
        .iter()
        .find_map(|double| name.strip_suffix(double))
        .map(str::to_string)
        .unwrap_or_else(|| {
            Path::new(&name)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or(name.clone())
        });
    if folder {
        input.with_file_name(stem)
    } else {
        input.with_file_name(format!("{stem}.safetensors"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colliding_outputs_keep_their_whole_names_and_repeats_go_once() {
        let dir = tempfile::tempdir().unwrap();
        let keras = dir.path().join("x.keras");
        let weights = dir.path().join("x.weights.h5");
        std::fs::write(&keras, b"k").unwrap();
        std::fs::write(&weights, b"w").unwrap();
        let out = dir.path().join("out");
        let pairs = vec![
            (keras.clone(), out.join("x.safetensors")),
            (weights.clone(), out.join("x.safetensors")),
            (keras.clone(), out.join("x.safetensors")),
        ];
        let mut notes = Vec::new();
        let planned = distinct(pairs, false, &mut notes).unwrap();
        assert_eq!(
            planned,
            [
                (keras, out.join("x.keras.safetensors")),
                (weights, out.join("x.weights.h5.safetensors")),
            ]
        );
        assert_eq!(notes.len(), 1, "{notes:?}");
        // Two files of one name in different folders, into one folder.
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        std::fs::write(a.join("m.h5"), b"1").unwrap();
        std::fs::write(b.join("m.h5"), b"2").unwrap();
        let err = distinct(
            vec![
                (a.join("m.h5"), out.join("m.safetensors")),
                (b.join("m.h5"), out.join("m.safetensors")),
            ],
            false,
            &mut notes,
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("two inputs would be written here"),
            "{err}"
        );
    }

    #[test]
    fn default_outputs_replace_keras_double_extensions() {
        assert_eq!(
            default_output(Path::new("d/m.h5"), false),
            Path::new("d/m.safetensors")
        );
        assert_eq!(
            default_output(Path::new("m.weights.h5"), false),
            Path::new("m.safetensors")
        );
        assert_eq!(
            default_output(Path::new("d/m.keras"), true),
            Path::new("d/m")
        );
    }
}
