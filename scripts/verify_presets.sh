#!/usr/bin/env bash
# Proves every --preset numerically (see scripts/verify_presets.py). Not run
# in CI: it makes a venv with TensorFlow, tf-keras, Keras 3, PyTorch, timm and
# transformers (a few GB) unless VENV names one that has them.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv-presets}
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q "tensorflow==2.21.*" "tf-keras==2.21.*" "keras==3.*" torch timm \
        transformers safetensors h5py numpy
fi
cargo build --release
"$VENV/bin/python" scripts/verify_presets.py --binary target/release/keras2safetensors "$@"
