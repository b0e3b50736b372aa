#!/usr/bin/env python3
"""Proves each `--preset` numerically: a Keras model with seeded random
weights is saved by Keras, converted with the preset, loaded into the target
PyTorch model with `load_state_dict(strict=True)`, and both models are run on
one fixed input. Prints the max abs difference of the logits per preset and
Keras version.

Not part of `cargo test`: it needs TensorFlow, tf-keras, Keras 3, PyTorch,
timm and transformers. `scripts/verify_presets.sh` makes a venv with them
and runs this file. Run from the repository root after `cargo build --release`.

Usage: verify_presets.py [--binary target/release/keras2safetensors] [--out DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def randomise(model, seed):
    """Seeded random weights, with BatchNorm variances positive and the
    moving statistics far from 0/1, so a swapped or mislabelled array shows."""
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.weights:
        name = w.name if hasattr(w, "name") else ""
        path = getattr(w, "path", name)
        shape = tuple(w.shape)
        if "normalization" in path and "batch" not in path:
            # Input normalisation: ImageNet statistics on the 0..1 scale.
            if path.endswith("mean") or "mean" in name:
                value = np.array([0.485, 0.456, 0.406], np.float32).reshape(shape)
            elif "variance" in name or path.endswith("variance"):
                value = np.square(np.array([0.229, 0.224, 0.225], np.float32)).reshape(shape)
            else:
                value = np.array(w.numpy())
        elif "moving_variance" in name or path.endswith("moving_variance"):
            value = rng.uniform(0.5, 1.5, shape).astype(np.float32)
        elif "moving_mean" in name or path.endswith("moving_mean"):
            value = rng.normal(0, 0.1, shape).astype(np.float32)
        elif "gamma" in name or path.endswith("gamma"):
            value = rng.uniform(0.8, 1.2, shape).astype(np.float32)
        else:
            fan_in = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
            value = (rng.normal(0, 1, shape) / np.sqrt(max(fan_in, 1))).astype(np.float32)
        weights.append(value)
    model.set_weights(weights)


def keras_model(keras, family):
    apps = keras.applications
    if family == "efficientnet":
        model = apps.EfficientNetB0(weights=None, classifier_activation=None)
    else:
        model = apps.Xception(weights=None, classifier_activation=None)
    randomise(model, seed=0)
    return model


def tf_same_max_pool(torch):
    class TfSameMaxPool(torch.nn.Module):
        """MaxPool2d(3, 2) with TensorFlow's 'same' padding (the extra row and
        column go at the end), which timm's legacy_xception does not do."""

        def __init__(self, kernel, stride):
            super().__init__()
            self.kernel, self.stride = kernel, stride

        def forward(self, x):
            pads = []
            for size in (x.shape[-1], x.shape[-2]):
                out = -(-size // self.stride)
                total = max((out - 1) * self.stride + self.kernel - size, 0)
                pads += [total // 2, total - total // 2]
            x = torch.nn.functional.pad(x, pads, value=float("-inf"))
            return torch.nn.functional.max_pool2d(x, self.kernel, self.stride)

    return TfSameMaxPool


def torch_model(preset):
    import torch
    if preset == "timm-tf-efficientnet":
        import timm
        return timm.create_model("tf_efficientnet_b0", pretrained=False)
    if preset == "hf-efficientnet":
        from transformers import EfficientNetConfig, EfficientNetForImageClassification
        # google/efficientnet-b0's config; the class's defaults are B7's.
        config = EfficientNetConfig(width_coefficient=1.0, depth_coefficient=1.0,
                                    image_size=224, hidden_dim=1280, num_labels=1000)
        return EfficientNetForImageClassification(config)
    import timm
    model = timm.create_model("legacy_xception", pretrained=False)
    pool = tf_same_max_pool(torch)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.eps = 1e-3
        if isinstance(module, torch.nn.Sequential):
            for i, child in enumerate(module):
                if isinstance(child, torch.nn.MaxPool2d):
                    module[i] = pool(child.kernel_size, child.stride)
    return model


def keras_side(family, keras_name, out_dir):
    """In its own process: TensorFlow and PyTorch each bundle LLVM, and one
    process cannot load both."""
    if keras_name == "tf_keras":
        import tf_keras as keras
    else:
        import keras
    model = keras_model(keras, family)
    suffix = ".h5" if keras_name == "tf_keras" else ".keras"
    source = os.path.join(out_dir, f"{family}_{keras_name}{suffix}")
    model.save(source)
    size = 299 if family == "xception" else 224
    image = np.random.default_rng(1).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    np.save(source + ".input.npy", image)
    np.save(source + ".logits.npy", np.asarray(model(image, training=False)))
    print(json.dumps({"source": source, "keras": keras.__version__}))


def run(preset, keras_name, binary, out_dir):
    import torch
    from safetensors.torch import load_file

    family = "xception" if "xception" in preset else "efficientnet"
    made = subprocess.run([sys.executable, __file__, "--keras-side", family, keras_name,
                           "--out", out_dir], capture_output=True, text=True)
    if made.returncode != 0:
        return {"error": made.stderr.strip().splitlines()[-1]}
    made = json.loads(made.stdout.strip().splitlines()[-1])
    source = made["source"]
    converted = f"{source}.{preset}.safetensors"
    result = subprocess.run([binary, "convert", source, "--preset", preset, "-o", converted,
                             "--force", "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        return {"keras": made["keras"], "error": result.stderr.strip()}

    target = torch_model(preset).eval()
    state = load_file(converted)
    target.load_state_dict(state, strict=True)

    image = np.load(source + ".input.npy")
    expected = np.load(source + ".logits.npy")
    x = image
    if family == "efficientnet":
        x = (image / 255.0 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225])
    x = torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(np.float32))
    with torch.no_grad():
        got = target(x)
        got = (got.logits if hasattr(got, "logits") else got).numpy()
    return {
        "keras": made["keras"],
        "tensors": len(state),
        "max_abs_diff": float(np.max(np.abs(got - expected))),
        "max_abs_logit": float(np.max(np.abs(expected))),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/keras2safetensors")
    parser.add_argument("--out", default=None)
    parser.add_argument("--presets",
                        default="timm-tf-efficientnet,hf-efficientnet,timm-legacy-xception")
    parser.add_argument("--keras-side", nargs=2, metavar=("FAMILY", "KERAS"))
    args = parser.parse_args()
    out_dir = args.out or tempfile.mkdtemp(prefix="verify_presets_")
    os.makedirs(out_dir, exist_ok=True)
    if args.keras_side:
        keras_side(*args.keras_side, out_dir)
        return

    failed = False
    for preset in args.presets.split(","):
        for keras_name in ("tf_keras", "keras3"):
            result = run(preset, keras_name, args.binary, out_dir)
            failed |= "error" in result or result["max_abs_diff"] > 1e-4
            print(f"{preset:22} {keras_name:9} {json.dumps(result)}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
