//! `convert --preset effdet` on real bytes: a small TF1 checkpoint written by
//! TensorFlow's `Saver` under Google AutoML's names
//! (`fixtures/presets/automl_fnode_ckpt`, made by `fixtures/generate_effdet.py`):
//! one BiFPN node with its three fusion scalars, its separable convolution
//! and BatchNorm, each with an ExponentialMovingAverage shadow of other
//! values. The values TensorFlow holds are in `automl_fnode_ckpt.values.json` beside it.

mod common;

use std::collections::BTreeMap;

use common::*;
use safetensors::SafeTensors;
use serde_json::Value;

const CKPT: &str = "presets/automl_fnode_ckpt";
const VALUES: &str = "presets/automl_fnode_ckpt.values.json";
const NODE: &str = "fpn_cells/cell_0/fnode4";
const OUT: &str = "fpn.cell.0.fnode.4";

/// Each value of a variable (or, with `ema`, of its shadow), flattened in
/// TensorFlow's order.
fn values(expected: &Value, variable: &str, ema: bool) -> Vec<f32> {
    let key = if ema {
        format!("{NODE}/{variable}/ExponentialMovingAverage")
    } else {
        format!("{NODE}/{variable}")
    };
    fn flatten(v: &Value, out: &mut Vec<f32>) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
            number => out.push(number.as_f64().unwrap() as f32),
        }
    }
    let mut out = Vec::new();
    flatten(&expected["values"][&key], &mut out);
    assert!(!out.is_empty(), "{key}");
    out
}

fn expected() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(VALUES)).unwrap()).unwrap()
}

fn floats(st: &SafeTensors, name: &str) -> Vec<f32> {
    let view = st.tensor(name).unwrap();
    view.data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect()
}

fn convert(extra: &[&str]) -> (tempfile::TempDir, Vec<u8>, String) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("node.safetensors");
    let mut args = vec![
        "convert",
        fixture(CKPT).to_str().unwrap().to_owned().leak() as &str,
    ];
    args.extend_from_slice(extra);
    args.extend(["-o", out.to_str().unwrap().to_owned().leak()]);
    let result = run(&args);
    assert!(result.status.success(), "{}", stderr(&result));
    let bytes = std::fs::read(&out).unwrap();
    (dir, bytes, stderr(&result))
}

#[test]
fn a_nodes_fusion_scalars_become_one_vector_of_their_shadows_in_order() {
    let expected = expected();
    let (_dir, bytes, err) = convert(&["--preset", "effdet"]);
    assert!(
        err.contains("--use-ema: 10 variables written with their ExponentialMovingAverage values"),
        "{err}"
    );
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let shapes: BTreeMap<String, Vec<usize>> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| (name, view.shape().to_vec()))
        .collect();
    let want: BTreeMap<String, Vec<usize>> = [
        ("combine.edge_weights", vec![3]),
        ("after_combine.conv.conv_dw.weight", vec![4, 1, 3, 3]),
        ("after_combine.conv.conv_pw.weight", vec![4, 4, 1, 1]),
        ("after_combine.conv.conv_pw.bias", vec![4]),
        ("after_combine.conv.bn.weight", vec![4]),
        ("after_combine.conv.bn.bias", vec![4]),
        ("after_combine.conv.bn.running_mean", vec![4]),
        ("after_combine.conv.bn.running_var", vec![4]),
        ("after_combine.conv.bn.num_batches_tracked", vec![]),
    ]
    .into_iter()
    .map(|(name, shape)| (format!("{OUT}.{name}"), shape))
    .collect();
    assert_eq!(shapes, want);

    let edges = floats(&st, &format!("{OUT}.combine.edge_weights"));
    let shadows: Vec<f32> = ["WSM", "WSM_1", "WSM_2"]
        .iter()
        .flat_map(|w| values(&expected, w, true))
        .collect();
    assert_eq!(edges, shadows);
    let raw: Vec<f32> = ["WSM", "WSM_1", "WSM_2"]
        .iter()
        .flat_map(|w| values(&expected, w, false))
        .collect();
    assert_ne!(edges, raw, "the raw variables differ from their shadows");

    // The node's other tensors: shadows too, in PyTorch's axes.
    let var = floats(&st, &format!("{OUT}.after_combine.conv.bn.running_var"));
    assert_eq!(
        var,
        values(&expected, "op_after_combine9/bn/moving_variance", true)
    );
    // depthwise (h, w, c, 1) -> (c, 1, h, w)
    let kernel = values(&expected, "op_after_combine9/conv/depthwise_kernel", true);
    let dw = floats(&st, &format!("{OUT}.after_combine.conv.conv_dw.weight"));
    for c in 0..4 {
        for hw in 0..9 {
            assert_eq!(dw[c * 9 + hw], kernel[hw * 4 + c]);
        }
    }
}

#[test]
fn a_stacked_tensor_is_cast_like_any_other() {
    let expected = expected();
    let (_dir, bytes, _) = convert(&["--preset", "effdet", "--dtype", "f16"]);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(&format!("{OUT}.combine.edge_weights")).unwrap();
    assert_eq!(view.dtype(), safetensors::Dtype::F16);
    let got: Vec<f32> = view
        .data()
        .chunks_exact(2)
        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    let want: Vec<f32> = ["WSM", "WSM_1", "WSM_2"]
        .iter()
        .flat_map(|w| values(&expected, w, true))
        .map(|v| half::f16::from_f32(v).to_f32())
        .collect();
    assert_eq!(got, want);
}

#[test]
fn a_checkpoint_of_another_model_is_refused_and_nothing_is_written() {
    // AutoML-like names, but its prediction layers hold arrays no
    // EfficientDet has.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.safetensors");
    let input = fixture("tf/tf1");
    let result = run(&[
        "convert",
        input.to_str().unwrap(),
        "--preset",
        "effdet",
        "-o",
        out.to_str().unwrap(),
    ]);
    assert_eq!(result.status.code(), Some(1), "{}", stderr(&result));
    let err = stderr(&result);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("tf/tf1")
            && err.contains("for preset effdet: tensor `box_net.box-predict.bias_bf16`")
            && err.contains("has no place in effdet"),
        "{err}"
    );
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
