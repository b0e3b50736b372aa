#!/usr/bin/env python3
"""Proves each `--preset` numerically: a Keras model with seeded random
weights is saved by Keras, converted with the preset, loaded into the target
PyTorch model with `load_state_dict(strict=True)`, and both models are run on
one fixed input. Prints the max abs difference of the logits per preset and
Keras version.

Not part of `cargo test`: it needs TensorFlow, tf-keras, Keras 3, PyTorch,
timm and transformers. `scripts/verify_presets.sh` makes a venv with them
and runs this file. Run from the repository root after `cargo build --release`.

The `effdet` preset is proved on Google AutoML's own EfficientDet D0
(`efficientdet/tf2`, a checkout of https://github.com/google/automl given by
`--automl`, read only): seeded random weights, BatchNorm statistics from one
pass over the test input and then scaled (random statistics leave the
outputs dominated by biases, blind to swapped BatchNorms), written as a TF1
name-based checkpoint with AutoML's variable names and
`/ExponentialMovingAverage` shadows holding other values than the raw
variables (evaluation uses the shadows); converted with `--preset effdet`,
loaded into effdet's `tf_efficientdet_d0` (`--effdet-model d3` for another)
with `strict=True`, and the class
and box outputs compared per level.

Usage: verify_presets.py [--binary target/release/keras2safetensors] [--out DIR]
                         [--automl PATH/TO/automl/efficientdet]
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


EFFDET_SEED = 0


def automl_side(automl, model_name, out_dir):
    """In its own process (TensorFlow). Writes the checkpoint, the input and
    AutoML's outputs with the EMA values."""
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    sys.path.insert(0, automl)
    import tensorflow as tf
    from tf2 import efficientdet_keras

    tf.keras.utils.set_random_seed(EFFDET_SEED)
    model = efficientdet_keras.EfficientDetNet(f"efficientdet-{model_name}")
    size = model.config.image_size
    size = size if isinstance(size, int) else size[0]
    model.build((1, size, size, 3))
    rng = np.random.default_rng(EFFDET_SEED)
    name_of = lambda v: v.name[:-2] if v.name.endswith(":0") else v.name
    for v in model.variables:
        name, shape = name_of(v), tuple(v.shape)
        if name.endswith("/gamma"):
            v.assign(rng.uniform(0.8, 1.2, shape))
        elif name.endswith("/beta") or name.endswith("/bias"):
            v.assign(rng.normal(0, 0.1, shape))
        elif "/WSM" in name:
            # Distinct positive fusion weights, so edges in the wrong order show.
            v.assign(rng.uniform(0.2, 1.5, shape))
    # AutoML's preprocessing: RGB 0..255 normalised by ImageNet mean and std x 255.
    image = np.random.default_rng(1).uniform(0, 255, (1, size, size, 3))
    x = ((image - 255 * np.array([0.485, 0.456, 0.406]))
         / (255 * np.array([0.229, 0.224, 0.225]))).astype(np.float32)
    # Moving statistics from one pass over the input (momentum 0 keeps
    # the batch's), then moved off them per channel.
    # (AutoML's BatchNormalization subclasses another module's tf.keras
    # class: found by what it holds, not by isinstance.)
    batch_norms = [m for m in model._flatten_layers()
                   if hasattr(m, "moving_mean") and hasattr(m, "momentum")]
    means = sum(name_of(v).endswith("/moving_mean") for v in model.variables)
    if len(batch_norms) != means:
        sys.exit(f"found {len(batch_norms)} BatchNorm layers for {means} moving means")
    for bn in batch_norms:
        bn.momentum = 0.0
    model(x, training=True)
    for bn in batch_norms:
        var = bn.moving_variance.numpy()
        bn.moving_mean.assign(bn.moving_mean.numpy()
                              + rng.normal(0, 0.05, var.shape) * np.sqrt(var))
        bn.moving_variance.assign(var * rng.uniform(0.9, 1.1, var.shape))
    ema = {name_of(v): v.numpy() for v in model.variables}
    cls, box = model(x, training=False)
    outputs = {f"cls{i}": np.asarray(c) for i, c in enumerate(cls)}
    outputs.update({f"box{i}": np.asarray(b) for i, b in enumerate(box)})

    # Raw variables hold other values than their shadows: a conversion
    # that wrote them would be caught.
    raw = {name: (value * rng.uniform(0.9, 1.1, value.shape)).astype(value.dtype)
           for name, value in ema.items()}
    var_list = {name: tf.Variable(value) for name, value in raw.items()}
    var_list.update({f"{name}/ExponentialMovingAverage": tf.Variable(value)
                     for name, value in ema.items()})
    var_list["global_step"] = tf.Variable(np.int64(10000))
    folder = os.path.join(out_dir, f"automl_{model_name}_ckpt")
    os.makedirs(folder, exist_ok=True)
    tf.compat.v1.train.Saver(var_list=var_list).save(
        None, os.path.join(folder, "model"), write_meta_graph=False)
    for v in model.variables:
        v.assign(raw[name_of(v)])
    raw_cls, raw_box = model(x, training=False)
    raw_diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                   for a, b in zip(list(cls) + list(box), list(raw_cls) + list(raw_box)))
    np.save(os.path.join(out_dir, f"automl_{model_name}.input.npy"), x)
    np.savez(os.path.join(out_dir, f"automl_{model_name}.outputs.npz"), **outputs)
    print(json.dumps({"checkpoint": folder, "tensorflow": tf.__version__,
                      "variables": len(ema), "num_classes": model.config.num_classes,
                      "raw_vs_ema_max_abs_diff": raw_diff}))


def run_effdet(binary, out_dir, automl, model_name):
    if not automl:
        return {"error": "needs --automl PATH (the efficientdet/ folder of google/automl)"}
    made = subprocess.run([sys.executable, __file__, "--automl-side", "--automl", automl,
                           "--effdet-model", model_name, "--out", out_dir],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return {"error": made.stderr.strip().splitlines()[-1]}
    made = json.loads(made.stdout.strip().splitlines()[-1])
    converted = os.path.join(out_dir, f"automl_{model_name}.effdet.safetensors")
    result = subprocess.run([binary, "convert", made["checkpoint"], "--preset", "effdet", "-o",
                             converted, "--force", "--quiet"], capture_output=True, text=True)
    if result.returncode != 0:
        return {"error": result.stderr.strip()}

    import effdet
    import torch
    from safetensors.torch import load_file
    target = effdet.create_model(f"tf_efficientdet_{model_name}", pretrained=False,
                                 pretrained_backbone=False).eval()
    if target.config.num_classes != made["num_classes"]:
        return {"error": f"effdet has {target.config.num_classes} classes, "
                         f"AutoML {made['num_classes']}"}
    state = load_file(converted)
    x = torch.from_numpy(np.ascontiguousarray(
        np.load(os.path.join(out_dir, f"automl_{model_name}.input.npy")).transpose(0, 3, 1, 2)))
    expected = np.load(os.path.join(out_dir, f"automl_{model_name}.outputs.npz"))

    def diffs(weights):
        target.load_state_dict(weights, strict=True)
        with torch.no_grad():
            cls, box = target(x)
        per_level = {}
        for kind, outs in (("cls", cls), ("box", box)):
            for level, out in enumerate(outs):
                got = out.numpy().transpose(0, 2, 3, 1)  # NCHW -> AutoML's NHWC
                want = expected[f"{kind}{level}"]
                per_level[f"{kind}_p{level + 3}"] = float(np.max(np.abs(got - want)))
        return per_level

    # Is the check blind? The same comparison after two mistakes a mapping
    # could make: one node's fusion weights reversed, and two backbone
    # BatchNorms of one shape swapped.
    reversed_edges = dict(state)
    edges = "fpn.cell.0.fnode.4.combine.edge_weights"  # D6, D7: plain sums
    if edges in state:
        reversed_edges[edges] = state[edges].flip(0)
    swapped_bns = dict(state)
    for param in ("weight", "bias", "running_mean", "running_var"):
        a, b = f"backbone.blocks.5.1.bn2.{param}", f"backbone.blocks.5.2.bn2.{param}"
        swapped_bns[a], swapped_bns[b] = state[b], state[a]
    sensitivity = {"two_bns_swapped": max(diffs(swapped_bns).values())}
    if edges in state:
        sensitivity["edge_weights_reversed"] = max(diffs(reversed_edges).values())
    per_level = diffs(state)
    magnitude = max(float(np.max(np.abs(expected[k]))) for k in expected.files)
    return {
        "tensorflow": made["tensorflow"],
        "variables": made["variables"],
        "tensors": len(state),
        "max_abs_diff": max(per_level.values()),
        "max_abs_output": magnitude,
        "relative_diff": max(per_level.values()) / magnitude,
        "raw_vs_ema_max_abs_diff": made["raw_vs_ema_max_abs_diff"],
        "max_abs_diff_after_mistakes": sensitivity,
        "per_level": per_level,
    }


def refusal(binary, source):
    """The preset refuses a file of another family, naming a tensor."""
    result = subprocess.run([binary, "convert", source, "--preset", "effdet", "--dry-run"],
                            capture_output=True, text=True)
    return {"exit": result.returncode, "error": result.stderr.strip().splitlines()[-1]}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default="target/release/keras2safetensors")
    parser.add_argument("--out", default=None)
    parser.add_argument("--presets",
                        default="timm-tf-efficientnet,hf-efficientnet,timm-legacy-xception,effdet")
    parser.add_argument("--automl", default=os.environ.get("AUTOML"),
                        help="the efficientdet/ folder of a google/automl checkout")
    parser.add_argument("--keras-side", nargs=2, metavar=("FAMILY", "KERAS"))
    parser.add_argument("--effdet-model", default="d0",
                        help="the EfficientDet the effdet preset is proved on (d0..d7)")
    parser.add_argument("--automl-side", action="store_true")
    args = parser.parse_args()
    out_dir = args.out or tempfile.mkdtemp(prefix="verify_presets_")
    os.makedirs(out_dir, exist_ok=True)
    if args.keras_side:
        keras_side(*args.keras_side, out_dir)
        return
    if args.automl_side:
        automl_side(os.path.abspath(args.automl), args.effdet_model, out_dir)
        return

    failed = False
    for preset in args.presets.split(","):
        if preset == "effdet":
            automl = args.automl and os.path.abspath(args.automl)
            result = run_effdet(args.binary, out_dir, automl, args.effdet_model)
            # float32 through some 100 layers in two frameworks: judged
            # relative to the outputs' size (tens here; about 1e-5 is float32
            # rounding), where the mistakes above move them by whole units.
            failed |= "error" in result or result["relative_diff"] > 2e-5
            print(f"{preset:22} automl-{args.effdet_model} {json.dumps(result)}", flush=True)
            for other in ("fixtures/tf/tf1", "fixtures/presets/tiny_efficientnet.h5"):
                refused = refusal(args.binary, other)
                failed |= refused["exit"] == 0
                print(f"{preset:22} refuses  {other}: {json.dumps(refused)}", flush=True)
            continue
        for keras_name in ("tf_keras", "keras3"):
            result = run(preset, keras_name, args.binary, out_dir)
            failed |= "error" in result or result["max_abs_diff"] > 1e-4
            print(f"{preset:22} {keras_name:9} {json.dumps(result)}", flush=True)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
