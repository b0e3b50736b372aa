//! Files written by old Keras itself: Keras 0.3 (`nb_layers`,
//! `layer_{k}/param_{p}`, Theano) and Keras 2.0 (fixed-length name lists,
//! Theano kernels).

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::*;
use keras2safetensors::{convert_file, ConvertOptions, Layout, PlanOptions, ReadOptions};
use safetensors::SafeTensors;
use serde_json::Value;

fn old(name: &str) -> std::path::PathBuf {
    fixtures_dir().join("old_keras").join(name)
}

fn convert(input: &Path, options: ConvertOptions) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.safetensors");
    convert_file(input, &out, &options, &mut |_| {}).unwrap_or_else(|e| panic!("{e}"));
    std::fs::read(&out).unwrap()
}

#[test]
fn keras_0_weights_are_read_by_position() {
    let file = old("keras1_sequential.h5");
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(old("keras1_sequential.h5.expected.json")).unwrap(),
    )
    .unwrap();
    let bytes = convert(&file, ConvertOptions::default());
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut count = 0;
    for layer in expected["layers"].as_array().unwrap() {
        for w in layer["weights"].as_array().unwrap() {
            // Without a config, names are the file's own: layer_K/param_P.
            let name = format!("layer_{}/{}", layer["index"], w["param"].as_str().unwrap());
            let t = st
                .tensor(&name)
                .unwrap_or_else(|_| panic!("no tensor {name}"));
            assert_eq!(
                sha256_hex(t.data()),
                w["sha256"].as_str().unwrap(),
                "{name}"
            );
            count += 1;
        }
    }
    assert_eq!(st.len(), count);
}

#[test]
fn a_keras_0_config_names_layers_and_labels() {
    let file = old("keras1_sequential.h5");
    let options = ConvertOptions {
        read: ReadOptions {
            config: Some(old("keras1_sequential.config.json")),
            ..ReadOptions::default()
        },
        ..ConvertOptions::default()
    };
    let bytes = convert(&file, options);
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(old("keras1_sequential.h5.expected.json")).unwrap(),
    )
    .unwrap();
    let layers = expected["layers"].as_array().unwrap();
    let mut want = BTreeSet::new();
    for layer in layers {
        let name = layer["name"].as_str().unwrap();
        // Two layers share the name Keras 0.x gave them: the index keeps them apart.
        let shared = layers.iter().filter(|l| l["name"] == name).count() > 1;
        let layer_name = if shared {
            format!("{name}_{}", layer["index"])
        } else {
            name.to_string()
        };
        for w in layer["weights"].as_array().unwrap() {
            // Keras 0.x variables are `<layer>_W`, `<layer>_gamma`, ...: the
            // label is the suffix, with W and b spelled as Keras 2 does.
            let variable = w["variable"].as_str().unwrap();
            let label = match variable.strip_prefix(&format!("{name}_")).unwrap() {
                "W" => "kernel",
                "b" => "bias",
                other => other,
            };
            let tensor_name = format!("{layer_name}/{label}");
            let t = st
                .tensor(&tensor_name)
                .unwrap_or_else(|_| panic!("no tensor {tensor_name} in {:?}", st.names()));
            assert_eq!(
                sha256_hex(t.data()),
                w["sha256"].as_str().unwrap(),
                "{tensor_name}"
            );
            want.insert(tensor_name);
        }
    }
    let names: BTreeSet<String> = st.names().into_iter().map(str::to_string).collect();
    assert_eq!(names, want);
    let pytorch = ConvertOptions {
        plan: PlanOptions {
            layout: Layout::PyTorch,
            ..PlanOptions::default()
        },
        ..ConvertOptions::default()
    };
    let dir = tempfile::tempdir().unwrap();
    let err = convert_file(
        &file,
        &dir.path().join("x.safetensors"),
        &pytorch,
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("PyTorch layout is not written"),
        "{err}"
    );
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

#[test]
fn theano_conv_kernels_are_flipped_for_pytorch() {
    let file = old("keras20_full.h5");
    let keras = convert(&file, ConvertOptions::default());
    let keras = SafeTensors::deserialize(&keras).unwrap();
    let kernel = keras.tensor("conv2d_1/kernel").unwrap();
    let [kh, kw, cin, cout] = <[usize; 4]>::try_from(kernel.shape()).unwrap();
    let k = f32s(kernel.data());

    let options = ConvertOptions {
        plan: PlanOptions {
            layout: Layout::PyTorch,
            ..PlanOptions::default()
        },
        ..ConvertOptions::default()
    };
    let torch = convert(&file, options);
    let torch = SafeTensors::deserialize(&torch).unwrap();
    let weight = torch.tensor("conv2d_1.weight").unwrap();
    assert_eq!(weight.shape(), [cout, cin, kh, kw]);
    let w = f32s(weight.data());
    // weight[o, i, y, x] = kernel[kh-1-y, kw-1-x, i, o]: Keras's own
    // convert_kernel flips Theano kernels when loading them elsewhere.
    for o in 0..cout {
        for i in 0..cin {
            for y in 0..kh {
                for x in 0..kw {
                    let got = w[((o * cin + i) * kh + y) * kw + x];
                    let want = k[(((kh - 1 - y) * kw + (kw - 1 - x)) * cin + i) * cout + o];
                    assert_eq!(got, want, "weight[{o},{i},{y},{x}]");
                }
            }
        }
    }
}
