//! `verify` (did the conversion keep every weight?) and `diff` (how do two
//! files differ?). Both read tensor by tensor, on all cores.

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use crate::dtype::Dtype;
use crate::error::Result;
use crate::export::plan::{Layout, PlanOptions, LAYOUT_KEY};
use crate::keras::ReadOptions;
use crate::tensors::{read_error, TensorFile, TensorInfo};
use crate::values::{for_each_value, parallel_map};

/// A tensor present in both files whose shape, dtype or values differ.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Changed {
    /// The tensor's name.
    pub name: String,
    /// `dtype [shape]` on each side, when those differ.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<String>,
    /// Same as `a`, for B.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<String>,
    /// For values: the largest absolute and relative difference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_abs: Option<f64>,
    /// The largest relative difference, `|a - b| / |b|`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_rel: Option<f64>,
}

/// What `verify` and `diff` report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// The first file, as given.
    pub a: String,
    /// The second file, as given.
    pub b: String,
    /// Whether the files match (within tolerance, for `diff`).
    pub ok: bool,
    /// Tensors compared with equal bytes.
    pub equal: usize,
    /// Tensors only in A, by name.
    pub only_in_a: Vec<String>,
    /// Tensors only in B, by name.
    pub only_in_b: Vec<String>,
    /// Present in both, with a different dtype or shape.
    pub changed: Vec<Changed>,
    /// Same dtype and shape, different values.
    pub different: Vec<Changed>,
}

/// Tolerances for `diff`: a pair of values matches when
/// `|a - b| <= atol + rtol * |b|`; NaN matches NaN.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Tolerance {
    /// Absolute tolerance.
    pub atol: f64,
    /// Relative tolerance (of B's value).
    pub rtol: f64,
}

/// Checks that every weight of `source` is in `converted` under the name
/// `convert` gives it, with the bytes `convert` writes. The layout and dtype
/// of the converted file are read from its metadata, so a PyTorch-layout or
/// cast conversion is checked after the same transform.
pub fn verify(source: &Path, converted: &Path, read: &ReadOptions) -> Result<Report> {
    let b = TensorFile::open(converted, read, &PlanOptions::default())?;
    let meta = b.metadata();
    let plan_options = PlanOptions {
        layout: if meta.get(LAYOUT_KEY).map(String::as_str) == Some(Layout::PyTorch.id()) {
            Layout::PyTorch
        } else {
            Layout::Keras
        },
        dtype: meta.get("dtype").and_then(|d| Dtype::from_numpy_name(d)),
        num_batches_tracked: true,
        ..PlanOptions::default()
    };
    let a = TensorFile::open(source, read, &plan_options)?;
    let mut report = compare(source, &a, converted, &b, None)?;
    // A file converted without num_batches_tracked lacks those counters;
    // they carry no weight, so they are not missing.
    report
        .only_in_a
        .retain(|n| !n.ends_with("num_batches_tracked"));
    report.ok = report.only_in_a.is_empty()
        && report.only_in_b.is_empty()
        && report.changed.is_empty()
        && report.different.is_empty();
    Ok(report)
}

/// Compares any two files we read, tensor by tensor.
pub fn diff(
    a_path: &Path,
    b_path: &Path,
    read: &ReadOptions,
    tolerance: Tolerance,
) -> Result<Report> {
    let a = TensorFile::open(a_path, read, &PlanOptions::default())?;
    let b = TensorFile::open(b_path, read, &PlanOptions::default())?;
    compare(a_path, &a, b_path, &b, Some(tolerance))
}

fn describe(t: &TensorInfo) -> String {
    format!("{} {:?}", t.dtype, t.shape)
}

fn compare(
    a_path: &Path,
    a: &TensorFile,
    b_path: &Path,
    b: &TensorFile,
    tolerance: Option<Tolerance>,
) -> Result<Report> {
    let a_tensors = a.tensors();
    let b_tensors = b.tensors();
    let b_index: BTreeMap<&str, usize> = b_tensors
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect();
    let mut report = Report {
        a: a_path.display().to_string(),
        b: b_path.display().to_string(),
        ok: false,
        equal: 0,
        only_in_a: Vec::new(),
        only_in_b: Vec::new(),
        changed: Vec::new(),
        different: Vec::new(),
    };
    let mut pairs = Vec::new();
    for (i, t) in a_tensors.iter().enumerate() {
        match b_index.get(t.name.as_str()) {
            None => report.only_in_a.push(t.name.clone()),
            Some(&j) if b_tensors[j].dtype != t.dtype || b_tensors[j].shape != t.shape => {
                report.changed.push(Changed {
                    name: t.name.clone(),
                    a: Some(describe(t)),
                    b: Some(describe(&b_tensors[j])),
                    max_abs: None,
                    max_rel: None,
                })
            }
            Some(&j) => pairs.push((i, j)),
        }
    }
    let in_a: std::collections::HashSet<&str> = a_tensors.iter().map(|t| t.name.as_str()).collect();
    report.only_in_b = b_tensors
        .iter()
        .filter(|t| !in_a.contains(t.name.as_str()))
        .map(|t| t.name.clone())
        .collect();

    let tolerance_or_exact = tolerance.unwrap_or_default();
    let outcomes = parallel_map(pairs.len(), |k| {
        let (i, j) = pairs[k];
        compare_pair(a, i, b, j, &a_tensors[i], tolerance_or_exact).map_err(|(side, e)| {
            let (path, name) = if side == 0 {
                (a_path, &a_tensors[i].name)
            } else {
                (b_path, &b_tensors[j].name)
            };
            read_error(path, name, e)
        })
    });
    let mut within = true;
    for ((i, _), outcome) in pairs.iter().zip(outcomes) {
        let difference = outcome?;
        if !difference.differs {
            report.equal += 1;
            continue;
        }
        within &= tolerance.is_some() && difference.within;
        report.different.push(Changed {
            name: a_tensors[*i].name.clone(),
            a: None,
            b: None,
            max_abs: Some(difference.max_abs),
            max_rel: Some(difference.max_rel),
        });
    }
    report.ok = report.only_in_a.is_empty()
        && report.only_in_b.is_empty()
        && report.changed.is_empty()
        && within;
    Ok(report)
}

/// How two tensors of one dtype and shape differ.
#[derive(Debug, Clone, Copy, Default)]
struct Difference {
    differs: bool,
    max_abs: f64,
    max_rel: f64,
    /// Every pair within the tolerance.
    within: bool,
}

impl Difference {
    /// Adds a pair of chunks whose bytes differ.
    fn add(&mut self, a: &[f64], b: &[f64], tol: Tolerance) {
        self.differs = true;
        for (&x, &y) in a.iter().zip(b) {
            if x == y || (x.is_nan() && y.is_nan()) {
                continue;
            }
            let abs = (x - y).abs();
            let abs = if abs.is_nan() { f64::INFINITY } else { abs };
            let rel = if y != 0.0 {
                abs / y.abs()
            } else {
                f64::INFINITY
            };
            self.max_abs = self.max_abs.max(abs);
            self.max_rel = self.max_rel.max(rel);
            self.within &= abs <= tol.atol + tol.rtol * y.abs();
        }
    }
}

/// Size of the pieces two tensors are compared in.
const COMPARE_CHUNK: usize = 4 << 20;

/// Compares tensor `i` of `a` with tensor `j` of `b` (same dtype and shape)
/// piece by piece where both can be read piecewise, else whole. An error
/// says which side (0 or 1) failed.
fn compare_pair(
    a: &TensorFile,
    i: usize,
    b: &TensorFile,
    j: usize,
    info: &TensorInfo,
    tol: Tolerance,
) -> std::result::Result<Difference, (usize, std::io::Error)> {
    let mut difference = Difference {
        within: true,
        ..Difference::default()
    };
    let (mut left, mut right) = (Vec::new(), Vec::new());
    let mut compare_bytes = |x: &[u8], y: &[u8], difference: &mut Difference| {
        if x != y {
            left.clear();
            right.clear();
            for_each_value(x, info.dtype, |v| left.push(v));
            for_each_value(y, info.dtype, |v| right.push(v));
            difference.add(&left, &right, tol);
        }
    };
    let len = info.byte_len;
    let chunk = (COMPARE_CHUNK as u64).min(len) as usize;
    let (mut x, mut y) = (vec![0u8; chunk], vec![0u8; chunk]);
    let mut offset = 0u64;
    let mut piecewise = true;
    while offset < len && piecewise {
        crate::cancel::checkpoint().map_err(|e| (0, e))?;
        let n = (len - offset).min(chunk as u64) as usize;
        let ok_a = a.read_at(i, offset, &mut x[..n]).map_err(|e| (0, e))?;
        let ok_b = ok_a && b.read_at(j, offset, &mut y[..n]).map_err(|e| (1, e))?;
        if ok_a && ok_b {
            compare_bytes(&x[..n], &y[..n], &mut difference);
            offset += n as u64;
        } else {
            piecewise = false;
        }
    }
    if !piecewise {
        let x = a.read(i).map_err(|e| (0, e))?;
        let y = b.read(j).map_err(|e| (1, e))?;
        difference = Difference {
            within: true,
            ..Difference::default()
        };
        compare_bytes(&x, &y, &mut difference);
    }
    Ok(difference)
}
