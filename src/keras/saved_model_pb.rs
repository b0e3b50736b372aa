//! The Keras metadata of SavedModels written by TF 2.0-2.4, which wrote no
//! `keras_metadata.pb`: each Keras object's JSON is in `saved_model.pb`
//! itself, as `SavedUserObject.metadata` of its node in the first meta
//! graph's object graph. Read the way tf-keras's loader reads such files
//! (`_read_legacy_metadata` in `saving/legacy/saved_model/load.py`) into
//! the message of a `keras_metadata.pb`, so one reader serves both.
//!
//! The file is mostly the graph and its function library; only the object
//! graph is kept (skipped over, not read, is everything else), bounded by
//! the limit of a `keras_metadata.pb`.

use std::io::{BufReader, Read};
use std::path::Path;

use prost::Message;

use crate::error::{Error, ErrorKind, Result};
use crate::files;
use crate::tf_bundle::proto;

/// `SavedModel.meta_graphs`.
const META_GRAPHS: u64 = 2;
/// `MetaGraphDef.object_graph_def`.
const OBJECT_GRAPH_DEF: u64 = 7;

/// The Keras objects of `path`'s object graph (those whose metadata was
/// recorded), each with the `node_path` tf-keras's loader gives it. Empty
/// when the file records none (TF >= 2.5 leaves the field empty; a
/// SavedModel not written by Keras has no Keras objects).
pub fn keras_metadata(path: &Path, limit: usize) -> Result<proto::SavedMetadata> {
    let bytes = object_graph_bytes(path, limit)?;
    let graph = proto::SavedObjectGraph::decode(bytes.as_slice())
        .map_err(|e| damaged(path, format!("its object graph: {e}")))?;
    drop(bytes);
    keras_nodes(&graph.nodes, limit).map_err(|e| Error::new(path, e))
}

fn damaged(path: &Path, detail: String) -> Error {
    Error::new(
        path,
        ErrorKind::InvalidKeras(format!("unreadable saved_model.pb ({detail})")),
    )
}

fn over(limit: usize, what: &str) -> ErrorKind {
    ErrorKind::Unsafe(format!(
        "saved_model.pb's {what} is over {}, more than a Keras model needs",
        crate::inspect::human_bytes(limit as u64)
    ))
}

/// A length-delimited field not yet read, or any other (already skipped).
enum Field {
    Bytes(u64),
    Other,
}

/// Walks protobuf fields of a file without holding it.
struct Scanner<R> {
    r: BufReader<R>,
    pos: u64,
}

impl<R: Read + std::io::Seek> Scanner<R> {
    fn byte(&mut self) -> std::io::Result<u8> {
        let mut b = [0u8];
        self.r.read_exact(&mut b)?;
        self.pos += 1;
        Ok(b[0])
    }

    fn varint(&mut self, end: u64) -> std::result::Result<u64, String> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            if self.pos >= end {
                return Err("a number runs past its message".into());
            }
            let b = self.byte().map_err(|e| e.to_string())?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("a number of more than 64 bits".into())
    }

    fn skip(&mut self, n: u64, end: u64) -> std::result::Result<(), String> {
        if n > end - self.pos {
            return Err("a field runs past its message".into());
        }
        let step = i64::try_from(n).map_err(|_| "a field too long".to_string())?;
        self.r.seek_relative(step).map_err(|e| e.to_string())?;
        self.pos += n;
        Ok(())
    }

    /// The next field before `end`, its number and, when length-delimited,
    /// its length (the caller reads or skips it); `None` at `end`.
    fn field(&mut self, end: u64) -> std::result::Result<Option<(u64, Field)>, String> {
        if self.pos >= end {
            return Ok(None);
        }
        let key = self.varint(end)?;
        let number = key >> 3;
        if number == 0 {
            return Err("field number 0".into());
        }
        let field = match key & 7 {
            0 => {
                self.varint(end)?;
                Field::Other
            }
            1 => {
                self.skip(8, end)?;
                Field::Other
            }
            5 => {
                self.skip(4, end)?;
                Field::Other
            }
            2 => {
                let len = self.varint(end)?;
                if len > end - self.pos {
                    return Err("a field runs past its message".into());
                }
                Field::Bytes(len)
            }
            w => {
                return Err(format!(
                    "wire type {w}, which TensorFlow's messages never use"
                ))
            }
        };
        Ok(Some((number, field)))
    }
}

/// The bytes of the first meta graph's `object_graph_def` (its pieces
/// joined, as protobuf merges a field given more than once); empty if the
/// file has no meta graph or the meta graph no object graph.
fn object_graph_bytes(path: &Path, limit: usize) -> Result<Vec<u8>> {
    let file = files::open_regular(path)?;
    let size = file
        .metadata()
        .map_err(|e| Error::new(path, e.into()))?
        .len();
    let mut s = Scanner {
        r: BufReader::new(file),
        pos: 0,
    };
    let scan = |s: &mut Scanner<std::fs::File>| -> std::result::Result<Vec<u8>, ScanError> {
        let mut meta_end = None;
        while let Some((number, field)) = s.field(size)? {
            if let Field::Bytes(len) = field {
                if number == META_GRAPHS {
                    meta_end = Some(s.pos + len);
                    break;
                }
                s.skip(len, size)?;
            }
        }
        let mut graph = Vec::new();
        let Some(end) = meta_end else {
            return Ok(graph);
        };
        while let Some((number, field)) = s.field(end)? {
            let Field::Bytes(len) = field else { continue };
            if number != OBJECT_GRAPH_DEF {
                s.skip(len, end)?;
                continue;
            }
            if len > (limit - graph.len()) as u64 {
                return Err(ScanError::Over);
            }
            let start = graph.len();
            graph.resize(start + len as usize, 0);
            s.r.read_exact(&mut graph[start..])
                .map_err(|e| e.to_string())?;
            s.pos += len;
        }
        Ok(graph)
    };
    scan(&mut s).map_err(|e| match e {
        ScanError::Over => Error::new(path, over(limit, "object graph")),
        ScanError::Damaged(detail) => damaged(path, detail),
    })
}

enum ScanError {
    Over,
    Damaged(String),
}

impl From<String> for ScanError {
    fn from(detail: String) -> Self {
        ScanError::Damaged(detail)
    }
}

/// Each Keras object with its metadata as a `keras_metadata.pb` entry. Its
/// path is the one tf-keras's `_generate_object_paths` gives: from node 0
/// (`root`), children in their order, a node taking the path it is first
/// reached by, the last reached node expanded first. Paths are kept as
/// links to the parent until spelled out for the Keras objects, whose total
/// length is bounded, so a deep chain of nodes costs no more than its size.
fn keras_nodes(
    nodes: &[proto::SavedGraphObject],
    limit: usize,
) -> std::result::Result<proto::SavedMetadata, ErrorKind> {
    let mut found = proto::SavedMetadata::default();
    if nodes.is_empty() {
        return Ok(found);
    }
    // parent[i]: the node it was reached from, by the child name at that
    // node's children[k] (kept as (parent, k)).
    let mut parent: Vec<Option<(usize, usize)>> = vec![None; nodes.len()];
    let mut path_len: Vec<Option<u64>> = vec![None; nodes.len()];
    path_len[0] = Some("root".len() as u64);
    let mut stack = vec![0usize];
    while let Some(at) = stack.pop() {
        let here = path_len[at].unwrap_or_default();
        for (k, r) in nodes[at].children.iter().enumerate() {
            let Some(child) = usize::try_from(r.node_id).ok().filter(|&c| c < nodes.len()) else {
                continue;
            };
            if path_len[child].is_some() {
                continue;
            }
            path_len[child] = Some(here + 1 + r.local_name.len() as u64);
            parent[child] = Some((at, k));
            stack.push(child);
        }
    }
    let mut total = 0u64;
    for (i, node) in nodes.iter().enumerate() {
        let (Some(user), Some(len)) = (&node.user_object, path_len[i]) else {
            continue;
        };
        if !user.identifier.starts_with("_tf_keras_") || user.metadata.is_empty() {
            continue;
        }
        total += len + user.metadata.len() as u64;
        if total > limit as u64 {
            return Err(over(limit, "Keras metadata with its object paths"));
        }
        let mut names = Vec::new();
        let mut at = i;
        while let Some((up, k)) = parent[at] {
            names.push(nodes[up].children[k].local_name.as_str());
            at = up;
        }
        names.push("root");
        names.reverse();
        found.nodes.push(proto::SavedObject {
            node_id: i as i32,
            node_path: names.join("."),
            identifier: user.identifier.clone(),
            metadata: user.metadata.clone(),
        });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(children: &[(i32, &str)], identifier: &str) -> proto::SavedGraphObject {
        proto::SavedGraphObject {
            children: children
                .iter()
                .map(|&(node_id, name)| proto::ObjectReference {
                    node_id,
                    local_name: name.into(),
                })
                .collect(),
            user_object: (!identifier.is_empty()).then(|| proto::SavedUserObject {
                identifier: identifier.into(),
                metadata: "{}".into(),
            }),
        }
    }

    #[test]
    fn paths_follow_tf_keras_generate_object_paths() {
        // Node 3 is reachable as root.a.x and root.b.y: tf-keras expands the
        // last pushed node (b) first, so it is root.b.y.
        let nodes = [
            node(
                &[(1, "a"), (2, "b"), (9, "dangling"), (0, "self")],
                "_tf_keras_network",
            ),
            node(&[(3, "x")], "_tf_keras_layer"),
            node(&[(3, "y")], "_tf_keras_layer"),
            node(&[], "_tf_keras_layer"),
            node(&[], "_tf_keras_layer"),
            node(&[], "_generic_user_object"),
        ];
        let found = keras_nodes(&nodes, 1 << 20).unwrap();
        let paths: Vec<(i32, &str)> = found
            .nodes
            .iter()
            .map(|n| (n.node_id, n.node_path.as_str()))
            .collect();
        // Node 4 is reached from nowhere: tf-keras would fail on it; it is
        // left out.
        assert_eq!(
            paths,
            [(0, "root"), (1, "root.a"), (2, "root.b"), (3, "root.b.y")]
        );
    }

    #[test]
    fn a_deep_chain_is_refused_not_spelled_out() {
        // 100,000 nested Keras layers: their paths would take 10^10 bytes.
        let n = 100_000;
        let nodes: Vec<_> = (0..n)
            .map(|i| node(&[(i + 1, "layer")], "_tf_keras_layer"))
            .collect();
        let e = keras_nodes(&nodes, 256 << 20).unwrap_err();
        assert!(e.to_string().starts_with("refused: "), "{e}");
    }
}
