//! The accounting rule: every dataset of the input is written or skipped
//! for a reason the user can see, whatever reader read the file.
//!
//! Readers claim datasets by turning them into weights, and may set whole
//! groups aside on purpose (optimizer state not asked for). This one step,
//! run after every reader, walks every dataset of every file the model
//! reads and checks that nothing fell between the two: a dataset no reader
//! claimed is an error, so a layout a reader does not understand can never
//! come out as a file that silently lacks weights.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::h5;
use crate::model::Location;
use crate::model::{Model, Skipped};

/// Why optimizer state is not written by default.
pub const OPTIMIZER_SKIPPED: &str = "optimizer state (pass --include-optimizer to write it)";

/// Why the running totals of compiled metrics are not written.
pub const METRICS_SKIPPED: &str = "metric state (running totals of compiled metrics, not weights)";

/// Why a dataset is skipped under `--allow-unclaimed`.
pub const UNCLAIMED_ALLOWED: &str = "part of no layer the reader knows (--allow-unclaimed)";

/// An HDF5 path as the file walk spells it: `/a/b`, no empty parts.
pub fn normalize(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    format!("/{}", parts.join("/"))
}

/// Whether `path` is spelled as [`normalize`] spells it.
pub fn is_normal(path: &str) -> bool {
    path == "/" || (path.starts_with('/') && !path.ends_with('/') && !path.contains("//"))
}

/// Checks that every dataset of the model's files is claimed by a weight
/// or skipped on purpose, and records the skipped ones in `model.skipped`.
pub fn account(model: &mut Model, path: &Path, allow_unclaimed: bool) -> Result<()> {
    let corrupt = |e: String| Error::new(path, ErrorKind::CorruptHdf5(e));
    refuse_shared_data(model, path)?;
    // Borrowed from the model where a weight's path is already canonical
    // (always, for Keras files): 200,000 copies for 100,000 layers otherwise.
    let claimed: HashSet<(usize, Cow<'_, str>)> = model
        .layers
        .iter()
        .flat_map(|l| &l.weights)
        .chain(&model.optimizer)
        .map(|w| match model.stores.get(w.file) {
            Some(store) => (w.file, store.canonical(&w.dataset)),
            None => (w.file, Cow::Owned(normalize(&w.dataset))),
        })
        .collect();
    let mut skipped = Vec::new();
    let mut unclaimed: Vec<(usize, String)> = Vec::new();
    for (file, store) in model.stores.iter().enumerate() {
        for dataset in store.dataset_paths().map_err(corrupt)?.iter() {
            crate::cancel::check(path)?;
            if claimed.contains(&(file, Cow::Borrowed(dataset))) {
                continue;
            }
            // A group sets aside what lies below it; a bundle entry is
            // set aside by its own key.
            let set_aside = model.skipped_groups.iter().find(|g| {
                g.file == file
                    && dataset
                        .strip_prefix(g.group.as_str())
                        .is_some_and(|rest| rest.starts_with('/') || rest.is_empty())
            });
            match set_aside {
                Some(group) => skipped.push(Skipped {
                    dataset: dataset.to_string(),
                    reason: group.reason.clone(),
                }),
                None => unclaimed.push((file, dataset.to_string())),
            }
        }
    }
    if !unclaimed.is_empty() {
        // A second hard link to a dataset that is written is no loss:
        // look up addresses only now, when there is something to explain.
        let mut addresses: HashMap<(usize, u64), String> = HashMap::new();
        for (file, dataset) in &claimed {
            if unclaimed.iter().any(|(f, _)| f == file) {
                let address = model.stores[*file]
                    .dataset_address(dataset)
                    .map_err(corrupt)?;
                addresses.insert((*file, address), dataset.to_string());
            }
        }
        let mut still = Vec::new();
        for (file, dataset) in unclaimed {
            let address = model.stores[file]
                .dataset_address(&dataset)
                .map_err(corrupt)?;
            match addresses.get(&(file, address)) {
                Some(twin) => skipped.push(Skipped {
                    reason: format!("a second link to `{twin}`, which is written once"),
                    dataset,
                }),
                None => still.push(dataset),
            }
        }
        if let Some(first) = still.first() {
            if !allow_unclaimed {
                let more = match still.len() {
                    1 => String::new(),
                    n => format!(" (and {} more)", n - 1),
                };
                return Err(Error::new(
                    path,
                    ErrorKind::Unclaimed(format!(
                        "dataset `{first}`{more} belongs to no layer the reader understands; \
                         pass --allow-unclaimed to write the rest"
                    )),
                ));
            }
            model.notes.push(format!(
                "{} dataset(s) belong to no layer the reader understands and are not written (--allow-unclaimed), first `{first}`",
                still.len()
            ));
            skipped.extend(still.into_iter().map(|dataset| Skipped {
                dataset,
                reason: UNCLAIMED_ALLOWED.into(),
            }));
        }
    }
    model.skipped = skipped;
    for store in &mut model.stores {
        store.forget_dataset_paths();
    }
    Ok(())
}

/// Refuses weights that read the same stored bytes: several names
/// hard-linked to one dataset, or datasets whose data overlap. Keras never
/// writes either, and each would be written again in full: 1000 links to a
/// 1 MiB dataset turn a 3 MB file into 1 GB of output.
fn refuse_shared_data(model: &Model, path: &Path) -> Result<()> {
    let weights = || {
        model
            .layers
            .iter()
            .flat_map(|l| &l.weights)
            .chain(&model.optimizer)
    };
    let refuse = |a: &str, b: &str, how: &str| {
        Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "weights `{a}` and `{b}` {how}, which Keras files never do; each would be \
                 written again in full"
            )),
        ))
    };
    // Contiguous data: no two ranges may overlap.
    let mut ranges: Vec<(usize, u64, u64, &str)> = weights()
        .filter_map(|w| match &w.location {
            Location::H5(h5::Location::Contiguous { offset, len }) => {
                Some((w.file, *offset, offset + len, w.dataset.as_str()))
            }
            _ => None,
        })
        .collect();
    ranges.sort_unstable();
    for pair in ranges.windows(2) {
        let ((file_a, start_a, end_a, a), (file_b, start_b, _, b)) = (pair[0], pair[1]);
        if file_a == file_b && start_b < end_a {
            let how = if start_a == start_b {
                "are one dataset (hard links) or read the same bytes"
            } else {
                "read overlapping bytes of the file"
            };
            return refuse(a, b, how);
        }
    }
    // Data stored otherwise: no two names for one object header.
    let mut headers: HashMap<(usize, u64), &str> = HashMap::new();
    for w in weights() {
        if let Location::H5(h5::Location::Decoded(decoded)) = &w.location {
            if let Some(first) = headers.insert((w.file, decoded.address), &w.dataset) {
                return refuse(first, &w.dataset, "are one dataset (hard links)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod fixture_tests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_normal_exactly_when_normalize_leaves_it_alone() {
        for path in [
            "/", "", "/a", "a", "/a/b", "/a/", "//a", "/a//b", "a/b/", "/a/b:0", "///", "/ /x",
        ] {
            assert_eq!(is_normal(path), normalize(path) == path, "{path:?}");
        }
    }

    #[test]
    fn paths_are_compared_in_one_spelling() {
        assert_eq!(
            normalize("/model_weights/dense//dense/kernel:0"),
            "/model_weights/dense/dense/kernel:0"
        );
        assert_eq!(normalize("layers/dense/vars/0"), "/layers/dense/vars/0");
    }
}
