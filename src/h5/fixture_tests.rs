//! The HDF5 layer on files: the crafted fixtures store weights in every
//! layout the decoded read path handles, Keras's own contiguous runs are
//! located at the bytes Keras hashed, and a run is read back from any
//! offset. (Moved from `tests/storage_layouts.rs` when `h5` stopped being
//! public; the conversions of the same files stay there.)

use super::*;
use crate::test_support::{
    expected_of, expected_weights, fixture, sha256_hex, sorted_nonempty_hashes,
};

#[test]
fn the_crafted_files_store_weights_in_every_layout() {
    // Guards the fixtures themselves: each layout the tests of
    // `tests/storage_layouts.rs` rely on is there, in datasets of more
    // than one byte per element.
    for crafted in [
        "crafted/zoo_full_restored.h5",
        "crafted/dtypes_full_restored.h5",
    ] {
        let file = File::open(&fixture(crafted)).unwrap();
        let (mut swapped, mut decoded, mut contiguous) = (0, 0, 0);
        for path in file.dataset_paths().unwrap().to_vec() {
            match file.dataset(&path).unwrap().location {
                Location::Decoded(d) if d.swap_bytes.is_some_and(|n| n > 1) => swapped += 1,
                Location::Decoded(d) if d.swap_bytes.is_none() => decoded += 1,
                Location::Contiguous { .. } => contiguous += 1,
                _ => {}
            }
        }
        assert!(
            swapped >= 4 && decoded >= 4,
            "{crafted}: {swapped} big-endian, {decoded} chunked or compact, {contiguous} contiguous"
        );
    }
}

#[test]
fn keras_weights_are_located_at_their_bytes_in_the_file() {
    // Keras writes every weight as one contiguous little-endian run, which
    // the writer streams or copies by offset: each located run must be
    // the bytes Keras hashed.
    for source in ["zoo_full.h5", "dtypes_full.h5", "bfloat16_full.h5"] {
        let path = fixture(source);
        let bytes = std::fs::read(&path).unwrap();
        let expected = expected_of(source);
        let hashes = sorted_nonempty_hashes(&expected);
        let file = File::open(&path).unwrap();
        let mut found = Vec::new();
        for dataset in file.dataset_paths().unwrap().to_vec() {
            if !dataset.starts_with("/model_weights/") {
                continue;
            }
            match file.dataset(&dataset).unwrap().location {
                Location::Contiguous { offset, len } => {
                    let run = &bytes[offset as usize..(offset + len) as usize];
                    found.push(sha256_hex(run));
                }
                Location::Empty => {}
                other => panic!("{source}: {dataset} is located as {other:?}"),
            }
        }
        found.sort();
        assert_eq!(found, hashes, "{source}");
    }
}

#[test]
fn a_weight_is_read_in_pieces_from_any_offset() {
    // `diff` and `verify` read stored tensors piecewise (4 MiB at a time),
    // which no fixture tensor is large enough to need: pieces from every
    // offset must put the run back together, and the Keras hash holds.
    let source = "classic_conv2d_full.h5";
    let path = fixture(source);
    let expected = expected_of(source);
    let kernel = expected_weights(&expected)
        .into_iter()
        .find(|w| w["name"] == "conv2d/kernel")
        .unwrap();
    let file = File::open(&path).unwrap();
    let location = file
        .dataset("/model_weights/conv2d/conv2d/kernel:0")
        .unwrap()
        .location;
    let Location::Contiguous { len, .. } = location else {
        panic!("{location:?}");
    };
    for piece in [1usize, 7, 64, 4799] {
        let mut whole = Vec::new();
        let mut offset = 0u64;
        while offset < len {
            let mut buf = vec![0u8; piece.min((len - offset) as usize)];
            assert!(file
                .read_contiguous_at(&location, offset, &mut buf)
                .unwrap());
            whole.extend_from_slice(&buf);
            offset += buf.len() as u64;
        }
        assert_eq!(sha256_hex(&whole), kernel["sha256"], "pieces of {piece}");
    }
    // Past the end is an error, not bytes of whatever follows.
    let mut two = [0u8; 2];
    let err = file
        .read_contiguous_at(&location, len - 1, &mut two)
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
}

/// Every group of a file, by a walk of our own `Group`s.
fn all_groups(file: &File) -> Vec<Group> {
    let mut found = vec![file.root().unwrap()];
    let mut next = 0;
    while next < found.len() {
        let (groups, _) = found[next].member_names().unwrap();
        let children: Vec<Group> = groups
            .iter()
            .map(|name| found[next].group(name).unwrap())
            .collect();
        found.extend(children);
        next += 1;
    }
    found
}

#[test]
fn old_style_groups_read_without_the_crate_read_as_the_crate_reads_them() {
    // Members, attributes (variable-length, fixed-length and chunked name
    // lists) and group lookups, read from symbol tables and headers parsed
    // here, against the HDF5 crate's own handle on the same group.
    let mut read_here = 0;
    let mut fixtures: Vec<_> = std::fs::read_dir(fixture(""))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "h5"))
        .collect();
    fixtures.sort();
    assert!(fixtures.len() > 20, "{fixtures:?}");
    for path in &fixtures {
        let file = File::open(path).unwrap();
        for group in all_groups(&file) {
            let at = format!("{} {}", path.display(), group.path);
            let crate_group = group.inner().unwrap();
            if let Some(members) = group.member_names_uncached() {
                read_here += 1;
                assert_eq!(members, crate_group.member_names().unwrap(), "{at}");
            }
            let (groups, datasets) = group.member_names().unwrap();
            for name in &groups {
                assert!(group.has_member_group(name).unwrap(), "{at} {name}");
                let child = group.group(name).unwrap();
                assert_eq!(child.address(), crate_group.group(name).unwrap().address());
            }
            for name in datasets.iter().chain([&"no such member".to_string()]) {
                assert!(!group.has_member_group(name).unwrap(), "{at} {name}");
            }
            let ours = group.attributes().unwrap().list;
            let theirs = crate_group.attributes().unwrap();
            assert_eq!(ours.len(), theirs.len(), "{at}");
            for (a, b) in ours.iter().zip(&theirs) {
                assert_eq!(
                    (&a.name, &a.shape, &a.raw_data, &a.decoded_strings),
                    (&b.name, &b.shape, &b.raw_data, &b.decoded_strings),
                    "{at}"
                );
                assert_eq!(format!("{:?}", a.datatype), format!("{:?}", b.datatype));
            }
        }
    }
    // The comparison is not empty: h5py writes old-style groups.
    assert!(read_here > 100, "{read_here} groups read here");
}

#[test]
fn chunked_layer_names_are_read_from_the_root_header_parsed_here() {
    // tf-keras splits a long `layer_names` into `layer_names0`,
    // `layer_names1`, ... of fixed-length strings; Keras's own check wrote
    // 168 layers.
    let file = File::open(&fixture("chunked_names_full.h5")).unwrap();
    let weights = file.root().unwrap().group("model_weights").unwrap();
    let header = uncached::header(&file.h5, weights.address()).unwrap();
    let attrs = uncached::attributes(&file.h5, &header, &file.shared.heaps).unwrap();
    let names: Vec<_> = attrs.iter().map(|a| a.name.as_str()).collect();
    assert!(names.contains(&"layer_names0") && names.contains(&"layer_names1"));
    let attributes = weights.attributes().unwrap();
    let first = attributes.string_list("layer_names0").unwrap().unwrap();
    let second = attributes.string_list("layer_names1").unwrap().unwrap();
    assert_eq!(first.len() + second.len(), 168);
    assert_eq!(first[0], "x");
    assert!(
        first[1].starts_with("dense_0000_a_rather_long_layer_name"),
        "{}",
        first[1]
    );
}
