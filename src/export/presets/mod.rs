//! `--preset NAME`: shipped mappings from a Keras model family to a
//! PyTorch model's state-dict names, so a converted file loads with
//! `load_state_dict(strict=True)` without hand-written rules.
//!
//! A preset is data: its rename rules live in a `.rules` file beside this
//! one (the same language as `--rename`), and the table below says what
//! else the target needs. Every tensor must be placed by one of the
//! preset's rules; a tensor no rule places means the file is not of the
//! family, and the conversion is refused naming it.
//!
//! A preset's rule may end a name with `[i]`: the tensors so named with one
//! base name are stacked in index order into one tensor of that name
//! (AutoML's per-edge fusion scalars are one vector in effdet). Only the
//! names a preset gives are read so, before `--rename` applies: without a
//! preset, brackets in a name are just characters.

use super::rename::{parse_rules, RenameRule};
use crate::model::Layer;

/// One shipped mapping.
#[derive(Debug)]
pub struct Preset {
    /// What `--preset` takes.
    pub name: &'static str,
    /// The Keras models it reads.
    pub source: &'static str,
    /// The PyTorch models whose state dict it writes.
    pub target: &'static str,
    rules: &'static str,
    /// Keras layer classes that do input preprocessing inside the model;
    /// the targets expect that done before the model, so they are left out.
    pub preprocessing: &'static [&'static str],
    /// What a user must do to inputs once the preprocessing layers are gone.
    pub input_note: &'static str,
    /// Written into the output's metadata: what the target must be
    /// configured with for its outputs to match Keras's.
    pub metadata: &'static [(&'static str, &'static str)],
    /// Where the target's defaults differ from what the weights need.
    pub caveats: &'static [&'static str],
    /// Read TF1 checkpoints with `--use-ema`: the target is evaluated with
    /// the ExponentialMovingAverage values, as the source's own evaluation.
    pub use_ema: bool,
}

/// Keras layers that preprocess inputs inside a model; PyTorch models
/// expect that done before them.
pub const PREPROCESSING_CLASSES: &[&str] = &["Rescaling", "Normalization"];
/// The preprocessing class of `layer`, if it is one. Weights-only files
/// record no classes; Normalization's arrays are told by their labels
/// (Rescaling has no weights, so it never reaches here).
pub fn preprocessing_class(layer: &Layer) -> Option<&'static str> {
    let class = layer.class.as_deref().or_else(|| {
        let labels: Vec<&str> = layer.weights.iter().map(|w| &*w.label).collect();
        matches!(
            labels.as_slice(),
            ["mean", "variance", "count"] | ["mean", "variance"]
        )
        .then_some("Normalization")
    })?;
    PREPROCESSING_CLASSES.iter().copied().find(|p| *p == class)
}

const EFFICIENTNET_INPUT: &str = "Keras's EfficientNet scales inputs by 1/255 and normalises them \
     inside the model (its `rescaling` and `normalization` layers, left out here): feed the \
     target RGB inputs in [0, 1] normalised with the `normalization` layer's mean and variance \
     (`inspect --stats` shows them; for ImageNet weights they are timm's and Hugging Face's \
     ImageNet defaults)";

/// Every shipped preset.
pub static PRESETS: &[Preset] = &[
    Preset {
        name: "timm-tf-efficientnet",
        source: "Keras EfficientNetB0..B7",
        target: "timm tf_efficientnet_b0..b7",
        rules: include_str!("timm-tf-efficientnet.rules"),
        preprocessing: PREPROCESSING_CLASSES,
        input_note: EFFICIENTNET_INPUT,
        metadata: &[
            ("target", "timm tf_efficientnet_bN"),
            ("bn_eps", "0.001"),
            ("padding", "tf_same"),
        ],
        caveats: &[
            "load into timm's `tf_efficientnet_bN`, not `efficientnet_bN`: the latter uses \
             BatchNorm eps 1e-5 and symmetric padding, so the names match but the outputs do not",
        ],
        use_ema: false,
    },
    Preset {
        name: "hf-efficientnet",
        source: "Keras EfficientNetB0..B7",
        target: "transformers EfficientNetForImageClassification",
        rules: include_str!("hf-efficientnet.rules"),
        preprocessing: PREPROCESSING_CLASSES,
        input_note: EFFICIENTNET_INPUT,
        metadata: &[
            ("target", "transformers EfficientNetForImageClassification"),
            ("bn_eps", "0.001"),
        ],
        caveats: &[
            "configure EfficientNetConfig as google/efficientnet-bN's config (B0: \
             width_coefficient 1.0, depth_coefficient 1.0, hidden_dim 1280; the class's \
             defaults are B7's) with num_labels equal to the Keras classifier's size",
        ],
        use_ema: false,
    },
    Preset {
        name: "timm-legacy-xception",
        source: "Keras Xception",
        target: "timm legacy_xception",
        rules: include_str!("timm-legacy-xception.rules"),
        preprocessing: &[],
        input_note: "",
        metadata: &[
            ("target", "timm legacy_xception"),
            ("bn_eps", "0.001"),
            ("pool_padding", "tf_same"),
        ],
        caveats: &[
            "timm's legacy_xception uses BatchNorm eps 1e-5 and pads its max pools \
             symmetrically; Keras used eps 1e-3 and TensorFlow's 'same' padding: set eps=1e-3 \
             on every BatchNorm2d and pad the pools like TensorFlow, or the outputs differ",
        ],
        use_ema: false,
    },
    Preset {
        name: "effdet",
        source: "Google AutoML EfficientDet D0..D7 (TF1 checkpoint)",
        target: "effdet tf_efficientdet_d0..d7",
        rules: include_str!("effdet.rules"),
        preprocessing: &[],
        input_note: "",
        metadata: &[
            ("target", "effdet tf_efficientdet_dN"),
            ("bn_eps", "0.001"),
            ("padding", "tf_same"),
            ("input", "RGB, (x - 255 * [0.485, 0.456, 0.406]) / (255 * [0.229, 0.224, 0.225])"),
            ("outputs", "NCHW (AutoML's are NHWC)"),
        ],
        caveats: &[
            "load into effdet's `tf_efficientdet_dN` (`effdet.create_model('tf_efficientdet_dN')`, \
             90 classes as AutoML's COCO models), not `efficientdet_dN`: the `tf_` models use \
             BatchNorm eps 1e-3 and TensorFlow's 'same' padding, as the checkpoint does",
            "feed effdet what AutoML's inference feeds its network: RGB normalised with the \
             ImageNet mean and std times 255; effdet's outputs are NCHW where AutoML's are NHWC",
            "effdet's anchors have sides 1.4 and 0.7 where AutoML's have sqrt(2) and \
             1/sqrt(2), so boxes decoded from the same raw class and box outputs differ slightly",
        ],
        use_ema: true,
    },
];

impl Preset {
    /// Looks a preset up by name.
    pub fn named(name: &str) -> Option<&'static Preset> {
        PRESETS.iter().find(|p| p.name == name)
    }

    /// The preset's rename rules.
    pub fn rules(&self) -> Vec<RenameRule> {
        // The files are part of the binary and parsed in a unit test.
        parse_rules(self.rules).unwrap_or_default()
    }

    /// What to read the source with: the preset's `--use-ema` on top of
    /// the user's options.
    pub fn read_options(&self, read: &crate::ReadOptions) -> crate::ReadOptions {
        crate::ReadOptions {
            use_ema: read.use_ema || self.use_ema,
            ..read.clone()
        }
    }

    /// Every preset's name, for messages.
    pub fn names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.name).collect()
    }
}

#[cfg(test)]
impl Preset {
    /// A preset of these rules alone, for tests of what rules can do.
    pub(crate) fn with_rules(rules: &'static str) -> &'static Preset {
        Box::leak(Box::new(Preset {
            name: "test",
            source: "test",
            target: "test",
            rules,
            preprocessing: &[],
            input_note: "",
            metadata: &[],
            caveats: &[],
            use_ema: false,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses_and_is_found_by_name() {
        for preset in PRESETS {
            parse_rules(preset.rules).unwrap_or_else(|e| panic!("{}: {e}", preset.name));
            assert!(!preset.rules().is_empty());
            assert!(std::ptr::eq(Preset::named(preset.name).unwrap(), preset));
        }
        assert!(Preset::named("nope").is_none());
    }
}

#[cfg(test)]
mod effdet_tests;
#[cfg(test)]
mod fixture_tests;
