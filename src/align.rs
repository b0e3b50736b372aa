//! `align`: maps a converted model's PyTorch-layout names onto a reference
//! model's state-dict names, by structure and shape, and writes the mapping
//! as `--rename` rules.
//!
//! The reference is what `safetensors.torch.save_file(model.state_dict())`
//! writes, or a JSON object `{name: shape}`. Numbered children
//! (`blocks.3`) keep number order; named siblings are matched in whatever
//! order makes their shapes follow the source's module sequence, because
//! Keras's layer order and PyTorch's registration order can differ (a
//! residual branch listed before or after the main one). Siblings whose
//! shapes are identical (`bn1` and `bn2` around a depthwise convolution)
//! cannot be told apart by shape: a JSON object keeps the state dict's
//! order, which decides; a safetensors header is sorted by name, so they
//! are taken in name order, and each such case is reported.

use std::collections::HashMap;
use std::path::Path;

use crate::error::{Error, ErrorKind, Result};
use crate::export::presets::preprocessing_class;
use crate::export::rename::{parse_rules, Renamer};
use crate::export::PlannedTensor;

/// Reads a reference: a JSON object `{name: shape}` in state-dict order,
/// or the header of a safetensors file (its data is never read).
pub fn read_reference(path: &Path) -> Result<Reference> {
    let bad = |m: String| Error::new(path, ErrorKind::Unsupported(m));
    let mut start = [0u8; 1];
    {
        use std::io::Read;
        let mut file = crate::files::open_regular(path)?;
        file.read_exact(&mut start)
            .map_err(|_| bad("empty: not a reference state dict".into()))?;
    }
    if start[0] != b'{' {
        let header = crate::safetensors_file::read_header(path)?;
        let tensors = header
            .metadata
            .tensors()
            .into_iter()
            .map(|(name, info)| (name, info.shape.clone()))
            .collect();
        return checked(path, tensors, false);
    }
    let text = crate::files::read_text(path)?;
    let pairs = crate::json_order::ordered_object(&text).ok_or_else(|| {
        bad(
            "not a JSON object of tensor names and shapes ({\"conv.weight\": [8, 3, 3, 3], ...})"
                .into(),
        )
    })?;
    let tensors = pairs
        .into_iter()
        .map(|(name, shape)| {
            let dims = shape.as_array().and_then(|dims| {
                dims.iter()
                    .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
                    .collect::<Option<Vec<usize>>>()
            });
            dims.map(|dims| (name.clone(), dims))
                .ok_or_else(|| bad(format!("the shape of `{name}` is not a list of sizes")))
        })
        .collect::<Result<Vec<_>>>()?;
    checked(path, tensors, true)
}

/// Module paths nest this deep at most: PyTorch models nest a few levels,
/// and matching recurses once per level.
const MAX_DEPTH: usize = 256;

fn checked(path: &Path, tensors: Vec<(String, Vec<usize>)>, ordered: bool) -> Result<Reference> {
    if tensors.is_empty() {
        return Err(Error::new(
            path,
            ErrorKind::Unsupported("the reference lists no tensors".into()),
        ));
    }
    if let Some((name, _)) = tensors
        .iter()
        .find(|(n, _)| n.split('.').count() > MAX_DEPTH)
    {
        return Err(Error::new(
            path,
            ErrorKind::Unsafe(format!(
                "tensor name `{:.80}...` nests more than {MAX_DEPTH} modules deep",
                name
            )),
        ));
    }
    Ok(Reference { tensors, ordered })
}

/// A reference state dict: names and shapes, and whether their order is
/// the model's.
#[derive(Debug, Clone)]
pub struct Reference {
    /// `(name, shape)` of every tensor.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Whether `tensors` is in state-dict order (JSON), or in no particular
    /// order (safetensors).
    pub ordered: bool,
}

impl Reference {
    /// Whether the reference keeps BatchNorm's `num_batches_tracked`.
    pub fn tracks_batches(&self) -> bool {
        self.tensors
            .iter()
            .any(|(name, _)| name.ends_with(".num_batches_tracked"))
    }
}

/// The layers of `model` that preprocess inputs (Normalization): PyTorch
/// models expect that done outside, so `align` leaves them out. The same
/// test as the presets' ([`preprocessing_class`]).
pub fn preprocessing_layers(model: &crate::Model) -> Vec<String> {
    model
        .layers
        .iter()
        .filter(|l| preprocessing_class(l).is_some())
        .map(|l| l.path_string())
        .collect()
}

/// One converted module and the reference module it became.
#[derive(Debug, Clone, PartialEq)]
pub struct Pair {
    /// The module's name in the converted file (`block1a_dwconv`).
    pub source: String,
    /// Its name in the reference (`blocks.0.0.conv_dw`).
    pub target: String,
    /// Placed among siblings of identical shapes by name order alone.
    pub by_name_order: bool,
}

/// The result of aligning.
#[derive(Debug, Clone)]
pub struct Alignment {
    /// Every module, in the source's order.
    pub pairs: Vec<Pair>,
    /// How many tensors the pairs cover.
    pub tensor_count: usize,
}

/// One module of the converted source: its name and its tensors'
/// last name parts and shapes.
#[derive(Debug)]
struct SourceModule {
    prefix: String,
    params: Vec<(String, Vec<usize>)>,
}

fn split_last(name: &str) -> (&str, &str) {
    name.rsplit_once('.').unwrap_or(("", name))
}

/// Consecutive tensors with one prefix form a module.
fn source_modules(tensors: &[PlannedTensor]) -> Vec<SourceModule> {
    let mut modules: Vec<SourceModule> = Vec::new();
    for t in tensors {
        let (prefix, param) = split_last(&t.name);
        match modules.last_mut() {
            Some(m) if m.prefix == prefix => m.params.push((param.into(), t.shape.to_vec())),
            _ => modules.push(SourceModule {
                prefix: prefix.into(),
                params: vec![(param.into(), t.shape.to_vec())],
            }),
        }
    }
    modules
}

/// A module of the reference: its own tensors, then its children.
#[derive(Debug, Default)]
struct Node {
    path: String,
    params: Vec<(String, Vec<usize>)>,
    children: Vec<(String, usize)>,
}

struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    fn build(reference: &Reference) -> Tree {
        let mut tree = Tree {
            nodes: vec![Node::default()],
        };
        for (name, shape) in &reference.tensors {
            let (module, param) = split_last(name);
            let mut at = 0;
            if !module.is_empty() {
                for part in module.split('.') {
                    at = match tree.nodes[at].children.iter().find(|(n, _)| n == part) {
                        Some(&(_, child)) => child,
                        None => {
                            let path = match tree.nodes[at].path.as_str() {
                                "" => part.to_string(),
                                parent => format!("{parent}.{part}"),
                            };
                            tree.nodes.push(Node {
                                path,
                                ..Node::default()
                            });
                            let child = tree.nodes.len() - 1;
                            tree.nodes[at].children.push((part.to_string(), child));
                            child
                        }
                    };
                }
            }
            tree.nodes[at]
                .params
                .push((param.to_string(), shape.clone()));
        }
        if !reference.ordered {
            for node in &mut tree.nodes {
                node.children.sort_by(|a, b| natural_cmp(&a.0, &b.0));
            }
        }
        tree
    }

    /// Per node, computed children first (a child is always created after
    /// its parent): how many source modules its subtree stands for, and an
    /// id that is equal for subtrees of identical shapes, which the
    /// source's shapes cannot tell apart.
    fn counts_and_shape_ids(&self) -> (Vec<usize>, Vec<usize>) {
        let len = self.nodes.len();
        let (mut counts, mut ids) = (vec![0; len], vec![0; len]);
        let mut interned = HashMap::new();
        for node in (0..len).rev() {
            let n = &self.nodes[node];
            let children = n.children.iter().map(|&(_, c)| c);
            counts[node] = usize::from(!n.params.is_empty())
                + children.clone().map(|c| counts[c]).sum::<usize>();
            let key = (
                sorted(&n.params),
                children.map(|c| ids[c]).collect::<Vec<_>>(),
            );
            let next = interned.len();
            ids[node] = *interned.entry(key).or_insert(next);
        }
        (counts, ids)
    }
}

fn sorted(params: &[(String, Vec<usize>)]) -> Vec<&(String, Vec<usize>)> {
    let mut v: Vec<_> = params.iter().collect();
    v.sort();
    v
}

/// Orders `blocks.2` before `blocks.10`, and `bn1` before `bn2`.
fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn key(s: &str) -> (String, u64) {
        let digits = s.len() - s.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (stem, number) = s.split_at(s.len() - digits);
        (stem.to_string(), number.parse().unwrap_or(0))
    }
    match (a.parse::<u64>(), b.parse::<u64>()) {
        (Ok(x), Ok(y)) => x.cmp(&y),
        _ => key(a).cmp(&key(b)).then_with(|| a.cmp(b)),
    }
}

/// What matching a subtree at a source position gives.
type Placed = Option<Vec<Pair>>;

struct Matcher<'a> {
    tree: &'a Tree,
    source: &'a [SourceModule],
    counts: Vec<usize>,
    shape_ids: Vec<usize>,
    memo: HashMap<(usize, usize), Placed>,
    /// The reference lists siblings in the model's order (JSON), so twins
    /// are placed by it rather than by name.
    ordered: bool,
    steps: usize,
    /// The furthest source module that no reference module could take.
    furthest_failure: Option<usize>,
}

/// Past this many subtree trials the reference is called too ambiguous.
const MAX_STEPS: usize = 2_000_000;

impl Matcher<'_> {
    fn leaf_fits(&self, node: usize, at: usize) -> bool {
        let want = sorted(&self.tree.nodes[node].params);
        at < self.source.len() && sorted(&self.source[at].params) == want
    }

    fn place(&mut self, node: usize, at: usize) -> std::result::Result<Placed, String> {
        self.steps += 1;
        if self.steps > MAX_STEPS {
            return Err("the reference is too ambiguous to align by shapes".into());
        }
        if let Some(done) = self.memo.get(&(node, at)) {
            return Ok(done.clone());
        }
        let mut pairs = Vec::new();
        let mut next = at;
        if !self.tree.nodes[node].params.is_empty() {
            if !self.leaf_fits(node, at) {
                self.note_failure(at);
                self.memo.insert((node, at), None);
                return Ok(None);
            }
            pairs.push(Pair {
                source: self.source[at].prefix.clone(),
                target: self.tree.nodes[node].path.clone(),
                by_name_order: false,
            });
            next += 1;
        }
        let children: Vec<usize> = self.tree.nodes[node].children.iter().map(|c| c.1).collect();
        let placed = if self.tree_is_ordered(node) {
            self.place_in_order(&children, next)?
        } else {
            let twinned: Vec<usize> = children
                .iter()
                .copied()
                .filter(|&c| {
                    let same = |&&d: &&usize| self.shape_ids[d] == self.shape_ids[c];
                    children.iter().filter(same).count() > 1
                })
                .collect();
            self.place_any_order(&children, &twinned, next)?
        };
        let result = placed.map(|mut rest| {
            pairs.append(&mut rest);
            pairs
        });
        self.memo.insert((node, at), result.clone());
        Ok(result)
    }

    fn note_failure(&mut self, at: usize) {
        self.furthest_failure = Some(self.furthest_failure.map_or(at, |f| f.max(at)));
    }

    /// Numbered children (a Sequential, a ModuleList) keep their order.
    fn tree_is_ordered(&self, node: usize) -> bool {
        let children = &self.tree.nodes[node].children;
        children.iter().all(|(name, _)| name.parse::<u64>().is_ok())
    }

    fn place_in_order(
        &mut self,
        children: &[usize],
        mut at: usize,
    ) -> std::result::Result<Placed, String> {
        let mut pairs = Vec::new();
        for &child in children {
            match self.place(child, at)? {
                Some(mut placed) => pairs.append(&mut placed),
                None => return Ok(None),
            }
            at += self.counts[child];
        }
        Ok(Some(pairs))
    }

    /// Tries the named siblings in every order the shapes allow (Keras's
    /// layer order can differ from registration order: a residual branch
    /// before or after the main one); of siblings with identical
    /// signatures only the first in the reference's order (name order for a
    /// safetensors header) is tried at each step.
    fn place_any_order(
        &mut self,
        children: &[usize],
        twinned: &[usize],
        at: usize,
    ) -> std::result::Result<Placed, String> {
        if children.is_empty() {
            return Ok(Some(Vec::new()));
        }
        let mut tried: Vec<usize> = Vec::new();
        for (i, &child) in children.iter().enumerate() {
            let signature = self.shape_ids[child];
            if tried.contains(&signature) {
                continue;
            }
            let Some(mut pairs) = self.place(child, at)? else {
                tried.push(signature);
                continue;
            };
            let rest: Vec<usize> = children
                .iter()
                .enumerate()
                .filter(|&(j, _)| j != i)
                .map(|(_, &c)| c)
                .collect();
            if let Some(mut more) = self.place_any_order(&rest, twinned, at + self.counts[child])? {
                // In an ordered reference twins come in the model's order;
                // in a sorted one, in name order, which is a guess.
                if twinned.contains(&child) && !self.ordered {
                    for pair in &mut pairs {
                        pair.by_name_order = true;
                    }
                }
                pairs.append(&mut more);
                return Ok(Some(pairs));
            }
            tried.push(signature);
        }
        Ok(None)
    }
}

/// Aligns the planned (PyTorch-layout) tensors of a source with a
/// reference. The error names the first module that has no counterpart.
pub fn align(
    tensors: &[PlannedTensor],
    reference: &Reference,
) -> std::result::Result<Alignment, String> {
    let source = source_modules(tensors);
    let tree = Tree::build(reference);
    let (counts, shape_ids) = tree.counts_and_shape_ids();
    let mut matcher = Matcher {
        tree: &tree,
        source: &source,
        counts,
        shape_ids,
        memo: HashMap::new(),
        ordered: reference.ordered,
        steps: 0,
        furthest_failure: None,
    };
    let placed = matcher.place(0, 0)?;
    let describe = |m: &SourceModule| {
        let params: Vec<String> = m.params.iter().map(|(p, s)| format!("{p} {s:?}")).collect();
        format!("`{}` ({})", m.prefix, params.join(", "))
    };
    match placed {
        Some(pairs) if matcher.counts[0] == source.len() => Ok(Alignment {
            pairs,
            tensor_count: tensors.len(),
        }),
        _ => {
            let at = matcher.furthest_failure.unwrap_or(0).min(source.len());
            let detail = match source.get(at) {
                Some(module) => format!(
                    "module {} of {}, {}, has no counterpart in the reference at that point",
                    at + 1,
                    source.len(),
                    describe(module)
                ),
                None => "the reference has more modules than the source".to_string(),
            };
            Err(format!(
                "the models differ in structure ({} modules converted, {} in the reference): {detail}",
                source.len(),
                matcher.counts[0]
            ))
        }
    }
}

/// The alignment as `--rename` rules, one per module, checked by applying
/// them: where one rule's output would be caught by a later rule (two
/// modules trading names), every rule first tags its output and a last
/// rule removes the tag.
pub fn rules_text(alignment: &Alignment, source: &[PlannedTensor], header: &str) -> String {
    let write = |tag: &str| -> String {
        let mut text = String::from(header);
        for pair in &alignment.pairs {
            if pair.by_name_order {
                text.push_str("# placed among siblings of identical shapes by name order: check\n");
            }
            let from = regex::escape(&pair.source);
            let from = if from.is_empty() {
                String::new()
            } else {
                format!("{from}\\.")
            };
            let to = if pair.target.is_empty() {
                String::new()
            } else {
                format!("{}.", pair.target)
            };
            text.push_str(&format!("^{from}([^.]+)$ => {tag}{to}$1\n"));
        }
        if !tag.is_empty() {
            text.push_str(&format!("^{} => \n", regex::escape(tag)));
        }
        text
    };
    let plain = write("");
    if renames_as_planned(&plain, alignment, source) {
        plain
    } else {
        write("aligned:")
    }
}

fn renames_as_planned(text: &str, alignment: &Alignment, source: &[PlannedTensor]) -> bool {
    let Ok(rules) = parse_rules(text) else {
        return false;
    };
    let target_of: HashMap<&str, &str> = alignment
        .pairs
        .iter()
        .map(|p| (p.source.as_str(), p.target.as_str()))
        .collect();
    let mut renamer = Renamer::new(&rules);
    source.iter().all(|t| {
        let (prefix, param) = split_last(&t.name);
        let want = match target_of.get(prefix).copied() {
            Some("") => param.to_string(),
            Some(target) => format!("{target}.{param}"),
            None => return false,
        };
        renamer.apply(&t.name).is_ok_and(|(got, _)| got == want)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::Dtype;
    use crate::export::plan::Source;
    use std::sync::Arc;

    fn tensor(name: &str, shape: &[usize]) -> PlannedTensor {
        PlannedTensor {
            name: name.into(),
            keras_name: None,
            dtype: Dtype::F32,
            shape: shape.into(),
            source: Source::Fill(0.0),
            steps: Arc::from([]),
            byte_len: 0,
        }
    }

    fn reference(names: &[(&str, &[usize])], ordered: bool) -> Reference {
        Reference {
            tensors: names
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_vec()))
                .collect(),
            ordered,
        }
    }

    #[test]
    fn named_siblings_are_ordered_by_the_shapes_the_source_gives() {
        let source = [
            tensor("stem.weight", &[8, 3, 3, 3]),
            tensor("stem_bn.weight", &[8]),
            tensor("head.weight", &[16, 8, 1, 1]),
            tensor("fc.weight", &[10, 16]),
            tensor("fc.bias", &[10]),
        ];
        // As a safetensors header lists them: by name.
        let refs = reference(
            &[
                ("bn1.weight", &[8]),
                ("classifier.bias", &[10]),
                ("classifier.weight", &[10, 16]),
                ("conv_head.weight", &[16, 8, 1, 1]),
                ("conv_stem.weight", &[8, 3, 3, 3]),
            ],
            false,
        );
        let got = align(&source, &refs).unwrap();
        let targets: Vec<&str> = got.pairs.iter().map(|p| p.target.as_str()).collect();
        assert_eq!(targets, ["conv_stem", "bn1", "conv_head", "classifier"]);
        let rules = rules_text(&got, &source, "");
        let rules = parse_rules(&rules).unwrap();
        let mut renamer = Renamer::new(&rules);
        assert_eq!(renamer.apply("fc.bias").unwrap().0, "classifier.bias");
    }

    #[test]
    fn identical_siblings_are_taken_in_name_order_and_reported() {
        let source = [
            tensor("a.weight", &[4, 4, 1, 1]),
            tensor("a_bn.weight", &[4]),
            tensor("b.weight", &[4, 1, 3, 3]),
            tensor("b_bn.weight", &[4]),
        ];
        let refs = reference(
            &[
                ("blk.bn1.weight", &[4]),
                ("blk.bn2.weight", &[4]),
                ("blk.conv_dw.weight", &[4, 1, 3, 3]),
                ("blk.conv_pw.weight", &[4, 4, 1, 1]),
            ],
            false,
        );
        let got = align(&source, &refs).unwrap();
        let placed: Vec<(&str, bool)> = got
            .pairs
            .iter()
            .map(|p| (p.target.as_str(), p.by_name_order))
            .collect();
        assert_eq!(
            placed,
            [
                ("blk.conv_pw", false),
                ("blk.bn1", true),
                ("blk.conv_dw", false),
                ("blk.bn2", true)
            ]
        );
    }

    #[test]
    fn swapped_names_get_tagged_rules_that_still_rename_as_planned() {
        let source = [tensor("x.weight", &[2]), tensor("y.weight", &[3])];
        let refs = reference(&[("y.weight", &[2]), ("x.weight", &[3])], true);
        let got = align(&source, &refs).unwrap();
        let text = rules_text(&got, &source, "");
        assert!(text.contains("aligned:"), "{text}");
        let rules = parse_rules(&text).unwrap();
        let mut renamer = Renamer::new(&rules);
        assert_eq!(renamer.apply("x.weight").unwrap().0, "y.weight");
        assert_eq!(renamer.apply("y.weight").unwrap().0, "x.weight");
    }

    #[test]
    fn a_different_structure_is_refused_naming_the_first_module_without_a_counterpart() {
        let source = [
            tensor("conv.weight", &[8, 3, 3, 3]),
            tensor("dense.weight", &[10, 8]),
        ];
        let refs = reference(
            &[("conv1.weight", &[8, 3, 3, 3]), ("fc.weight", &[10, 9])],
            false,
        );
        let err = align(&source, &refs).unwrap_err();
        assert!(
            err.contains("module 2 of 2, `dense` (weight [10, 8])"),
            "{err}"
        );
        let longer = reference(&[("conv1.weight", &[8, 3, 3, 3])], true);
        let err = align(&source, &longer).unwrap_err();
        assert!(
            err.contains("2 modules converted, 1 in the reference"),
            "{err}"
        );
    }

    #[test]
    fn a_reference_nested_past_the_depth_bound_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep.json");
        let name = format!("{}weight", "m.".repeat(MAX_DEPTH));
        std::fs::write(&path, format!("{{\"{name}\": [1]}}")).unwrap();
        let err = read_reference(&path).unwrap_err().to_string();
        assert!(err.contains("nests more than 256 modules deep"), "{err}");
        let name = format!("{}weight", "m.".repeat(MAX_DEPTH - 1));
        std::fs::write(&path, format!("{{\"{name}\": [1]}}")).unwrap();
        assert_eq!(read_reference(&path).unwrap().tensors.len(), 1);
        std::fs::write(&path, "{}").unwrap();
        let err = read_reference(&path).unwrap_err().to_string();
        assert!(err.contains("lists no tensors"), "{err}");
    }

    #[test]
    fn numbered_children_keep_number_order() {
        assert_eq!(natural_cmp("2", "10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("bn2", "bn10"), std::cmp::Ordering::Less);
        assert_eq!(natural_cmp("conv_dw", "conv_pw"), std::cmp::Ordering::Less);
    }
}
