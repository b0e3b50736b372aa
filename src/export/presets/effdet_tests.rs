//! `--preset effdet` applied to Google AutoML EfficientDet's variable list
//! gives exactly the state dict of effdet's `tf_efficientdet_dN`. Both lists
//! were dumped by the libraries themselves (`fixtures/generate_effdet.py`):
//! AutoML's variables by TensorFlow from the built `EfficientDetNet`, the
//! state dicts by effdet. The model is read from the list as a TF1
//! checkpoint holding those variables is read, so it plans as the file would.

use std::collections::BTreeMap;

use super::fixture_tests::{assert_plan_gives, json, names_and_shapes, options};
use crate::export::plan::{plan, Source};
use crate::keras::tf_checkpoint::tf1_layers;
use crate::model::{Format, Location, Model};

/// AutoML's variables and effdet's state dict of D0, D3 (a B3 backbone)
/// and D7 (B6, and BiFPN nodes that sum without weights).
const MODELS: [(&str, &str); 3] = [
    (
        "automl_efficientdet_d0.variables.json",
        "effdet_tf_efficientdet_d0.state_dict.json",
    ),
    (
        "automl_efficientdet_d3.variables.json",
        "effdet_tf_efficientdet_d3.state_dict.json",
    ),
    (
        "automl_efficientdet_d7.variables.json",
        "effdet_tf_efficientdet_d7.state_dict.json",
    ),
];

fn variables(listed: &str) -> Vec<(String, Vec<usize>)> {
    names_and_shapes(listed, "variables")
}

fn automl_model(listed: &str) -> Model {
    Model {
        format: Format::Tf1Checkpoint,
        keras_version: None,
        backend: Some("tensorflow".into()),
        date_saved: None,
        layers: tf1_layers(&variables(listed)),
        optimizer: Vec::new(),
        notes: Vec::new(),
        skipped_groups: Vec::new(),
        skipped: Vec::new(),
        stores: Vec::new(),
    }
}

#[test]
fn effdet_names_and_shapes_match_effdet_state_dicts() {
    for (listed, target) in MODELS {
        assert_eq!(
            json(listed)["num_classes"],
            json(target)["num_classes"],
            "{listed}: AutoML's and effdet's default class counts"
        );
        assert_plan_gives(automl_model(listed), listed, "effdet", target);
    }
}

/// Each of the checkpoint's variables is written into exactly one output
/// tensor; the fusion scalars go into their node's vector, in the order
/// of their names.
#[test]
fn every_automl_variable_is_written_once_and_fusion_scalars_are_stacked_in_order() {
    for (listed, _) in MODELS {
        let d = listed;
        let mut model = automl_model(listed);
        let planned = plan(&mut model, "x".as_ref(), &options("effdet")).unwrap();
        let mut written: BTreeMap<usize, usize> = BTreeMap::new();
        let mut count = |source: &Source| {
            if let Source::Stored {
                location: Location::Bundle(i),
                ..
            } = source
            {
                *written.entry(*i).or_default() += 1;
            }
        };
        let mut stacked = 0;
        for tensor in &planned.tensors {
            match &tensor.source {
                Source::Stacked(parts) => {
                    stacked += 1;
                    assert!(tensor.name.ends_with(".combine.edge_weights"));
                    let names: Vec<&str> = tensor.keras_name().split(" + ").collect();
                    let node = names[0].strip_suffix("/WSM").unwrap();
                    let want: Vec<String> = (0..parts.len())
                        .map(|i| match i {
                            0 => format!("{node}/WSM"),
                            _ => format!("{node}/WSM_{i}"),
                        })
                        .collect();
                    assert_eq!(names, want);
                    parts.iter().for_each(&mut count);
                }
                source => count(source),
            }
        }
        let variables = variables(listed).len();
        assert_eq!(written.len(), variables, "{d}: every variable is written");
        assert!(written.values().all(|&n| n == 1), "{d}: none twice");
        // D6 and D7 fuse by plain sums: no weights to stack.
        let nodes = if d.contains("_d7.") { 0 } else { 8 };
        let cells = json(listed)["variables"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|v| {
                v[0].as_str()
                    .unwrap()
                    .ends_with("/fnode0/op_after_combine5/bn/gamma")
            })
            .count();
        assert_eq!(stacked, nodes * cells, "{d}");
    }
}

#[test]
fn a_model_of_another_family_is_refused_naming_the_first_tensor_with_no_place() {
    let mut keras = super::fixture_tests::keras_model("keras_efficientnetb0.layers.json");
    let err = plan(&mut keras, "x.h5".as_ref(), &options("effdet"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no place in effdet") && err.contains("`normalization.mean`"),
        "{err}"
    );
}

/// The backbones the name lists do not cover: each one's stage sizes in the
/// rules are B0's repeats times its depth coefficient, rounded up, as
/// AutoML's `round_repeats` (backbone/efficientnet_model.py) computes them
/// with the coefficients of backbone/efficientnet_builder.py.
#[test]
fn every_backbones_stage_sizes_are_b0s_scaled_by_its_depth_coefficient() {
    let depth: [f64; 8] = [1.0, 1.1, 1.2, 1.4, 1.8, 2.2, 2.6, 3.1];
    let rules = include_str!("effdet.rules");
    for (b, coefficient) in depth.iter().enumerate() {
        let prefix = format!(r"^efficientnet-b{b}\.blocks_(\d+)\. => backbone.blocks.${{1:stages(");
        let line = rules
            .lines()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no stage rule for b{b}"));
        let sizes: Vec<u32> = line[prefix.len()..]
            .split(')')
            .next()
            .unwrap()
            .split(',')
            .map(|n| n.trim().parse().unwrap())
            .collect();
        let want: Vec<u32> = [1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 1.0]
            .iter()
            .map(|repeats| (coefficient * repeats).ceil() as u32)
            .collect();
        assert_eq!(sizes, want, "b{b}");
    }
}
