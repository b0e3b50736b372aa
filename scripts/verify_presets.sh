#!/usr/bin/env bash
# Proves every --preset numerically (see scripts/verify_presets.py). Not run
# in CI: it makes a venv with TensorFlow, tf-keras, Keras 3, PyTorch, timm,
# transformers and effdet (a few GB) unless VENV names one that has them, and
# a shallow clone of google/automl (for the effdet preset's EfficientDet)
# unless AUTOML names its efficientdet/ folder.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-presets}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "tensorflow==2.21.*" "tf-keras==2.21.*" "keras==3.*" torch timm \
        transformers effdet pyyaml safetensors h5py numpy
fi
if [ -z "${AUTOML:-}" ]; then
    [ -d .automl ] || git clone -q --depth 1 https://github.com/google/automl .automl
    AUTOML=.automl/efficientdet
fi
cargo build --release
"$VENV/bin/python" scripts/verify_presets.py --binary target/release/keras2safetensors \
    --automl "$AUTOML" "$@"
