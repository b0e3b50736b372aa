#!/usr/bin/env python3
"""Write a large synthetic Keras 2 weights-only HDF5 file for benchmarks.

Usage:
    make_big_keras.py OUT.h5 [--gb 2.16] [--dense N] [--dim D] [--bn M] [--bn-size S]
                      [--small N] [--small-dim D]

Needs: pip install h5py numpy   (run it with ${PYTHON:-python3})

The layout is the one tf-keras's `model.save_weights("x.h5")` writes (compare
with fixtures/classic_conv2d_weights.h5): root attributes `layer_names`
(variable-length ASCII strings), `backend`, `keras_version`; one group per
layer with a `weight_names` attribute (`dense/kernel:0`, ...); each weight a
contiguous little-endian float32 dataset at `<layer>/<layer>/kernel:0`; and a
`top_level_model_weights` group with an empty float64 `weight_names` array.
A name list too big for one HDF5 object header (64 KiB) is split the way
tf-keras's `save_attributes_to_hdf5_group` splits it: `layer_names0`,
`layer_names1`, ..., fixed-length strings (compare with
fixtures/chunked_names_full.h5).

Layers, in this order: N Dense layers (`dense`, `dense_1`, ...) with a DxD
kernel and a D bias, then M BatchNormalization layers (`batch_normalization`,
`batch_normalization_1`, ...) with gamma, beta, moving_mean and
moving_variance of S elements each. Default: 8 Dense 8192x8192 + 1000 BN of
64, about 2.16 GB. `--gb` picks N (when --dense is not given) so that the
Dense kernels fill about that many gigabytes (10^9 bytes).

`--small N` adds N small Dense layers after the big ones (`dense_N`, ...,
SMALL_DIM x SMALL_DIM kernel and a bias; default 16).

Many small layers (the per-layer cost of a reader, not its bandwidth):
`--dense 0 --bn 0 --small 100000 --small-dim 8` writes 100,000 layers and
200,000 datasets, 323 MB (29 MB of weights: h5py's groups cost about 3 KB per
layer), in about 70 s; `--dense 0 --bn 100000 --bn-size 16` writes 400,000
datasets, 397 MB. `layer_names` is then split into chunks. The rule,
copied from tf-keras's code, leaves a gap: a list that fits the limit as
fixed-length strings (the form the split is decided on) is written whole as
variable-length strings (16 bytes each), which may not fit; with names of
about 10 characters, between about 4,000 and 6,400 layers h5py refuses the
attribute and the script stops there.

Content is a formula, so a test can compute the expected bytes at any
offset without reading the input. Datasets are numbered t = 0, 1, 2, ... in
the order they are written (dense kernel, dense bias, dense_1 kernel, ...);
element i (C order) of dataset t is the float32 whose bit pattern is

    0x30000000 | ((i * 2654435761 + t * 40503) mod 2^28)

a positive normal number in [2^-31, 2): no NaN, Inf, zero or subnormal, and
all elements of a dataset (up to 2^28 of them) are distinct, so a shifted or
misplaced copy is caught by any sample. It is generated in chunks of at most
16 MiB, so memory stays small whatever the file size.

Next to OUT.h5 it writes OUT.h5.json: the formula, the file size, and each
dataset's name, shape, id t and byte offset in the file (from h5py), which
tests/large_file.rs uses.
"""

import argparse
import json
import os
import sys
import time

try:
    import h5py
    import numpy as np
except ImportError as e:  # pragma: no cover
    sys.exit(f"make_big_keras.py needs h5py and numpy (pip install h5py numpy): {e}")

MULT = 2654435761
STEP = 40503
MASK = (1 << 28) - 1
BASE = 0x30000000
CHUNK_ELEMENTS = 4 << 20  # 16 MiB of float32


def formula_chunk(t, start, stop):
    """Elements start..stop of dataset t, as float32."""
    i = np.arange(start, stop, dtype=np.uint64)
    bits = ((i * np.uint64(MULT) + np.uint64(t * STEP)) & np.uint64(MASK)) | np.uint64(BASE)
    return bits.astype("<u4").view("<f4")


def write_dataset(group, name, shape, t):
    ds = group.create_dataset(name, shape=shape, dtype="<f4")  # contiguous, no filters
    count = int(np.prod(shape))
    if len(shape) == 1:
        ds[...] = formula_chunk(t, 0, count)
        return ds
    row = int(np.prod(shape[1:]))
    rows_per_chunk = max(1, CHUNK_ELEMENTS // row)
    for r0 in range(0, shape[0], rows_per_chunk):
        r1 = min(shape[0], r0 + rows_per_chunk)
        ds[r0:r1] = formula_chunk(t, r0 * row, r1 * row).reshape((r1 - r0,) + tuple(shape[1:]))
    return ds


# tf-keras's HDF5_OBJECT_HEADER_LIMIT (tf_keras/src/saving/legacy/hdf5_format.py).
HDF5_OBJECT_HEADER_LIMIT = 64512


def save_attributes(group, name, data):
    """tf-keras's save_attributes_to_hdf5_group: `data` (a list of bytes)
    as one attribute, or, when as a fixed-length string array it would pass
    the object header limit, split by np.array_split into the fewest chunks
    that each fit, as `name0`, `name1`, ... (fixed-length strings)."""
    too_long = [x for x in data if len(x) > HDF5_OBJECT_HEADER_LIMIT]
    if too_long:
        sys.exit(f"make_big_keras.py: {name} has an entry over {HDF5_OBJECT_HEADER_LIMIT} bytes")
    data_npy = np.asarray(data)
    num_chunks = 1
    chunked = np.array_split(data_npy, num_chunks)
    while any(x.nbytes > HDF5_OBJECT_HEADER_LIMIT for x in chunked):
        num_chunks += 1
        chunked = np.array_split(data_npy, num_chunks)
    if num_chunks > 1:
        for chunk_id, chunk in enumerate(chunked):
            group.attrs["%s%d" % (name, chunk_id)] = chunk
    else:
        # A list of bytes, which h5py stores as variable-length ASCII.
        group.attrs[name] = data


def layer_name(base, k):
    return base if k == 0 else f"{base}_{k}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--gb", type=float, default=2.16, help="approximate size in 10^9 bytes (sets --dense)")
    ap.add_argument("--dense", type=int, default=None, help="number of Dense layers")
    ap.add_argument("--dim", type=int, default=8192, help="Dense kernels are DIM x DIM")
    ap.add_argument("--bn", type=int, default=1000, help="number of BatchNormalization layers")
    ap.add_argument("--bn-size", type=int, default=64, help="elements per BatchNormalization weight")
    ap.add_argument("--small", type=int, default=0, help="number of small Dense layers, after the big ones")
    ap.add_argument("--small-dim", type=int, default=16, help="small Dense kernels are SMALL_DIM x SMALL_DIM")
    args = ap.parse_args()

    dense = args.dense
    if dense is None:
        dense = max(1, round(args.gb * 1e9 / (args.dim * args.dim * 4)))

    layers = []  # (layer name, [(weight label, shape)])
    for k in range(dense):
        layers.append((layer_name("dense", k), [("kernel", (args.dim, args.dim)), ("bias", (args.dim,))]))
    for k in range(dense, dense + args.small):
        d = args.small_dim
        layers.append((layer_name("dense", k), [("kernel", (d, d)), ("bias", (d,))]))
    for k in range(args.bn):
        labels = ["gamma", "beta", "moving_mean", "moving_variance"]
        layers.append((layer_name("batch_normalization", k), [(w, (args.bn_size,)) for w in labels]))

    started = time.time()
    tmp = args.out + ".part"
    listing = []
    with h5py.File(tmp, "w") as f:
        save_attributes(f, "layer_names", [name.encode("utf8") for name, _ in layers])
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.21.0"
        t = 0
        for name, weights in layers:
            g = f.create_group(name)
            save_attributes(g, "weight_names", [f"{name}/{w}:0".encode("utf8") for w, _ in weights])
            for w, shape in weights:
                ds = write_dataset(g, f"{name}/{w}:0", shape, t)
                listing.append(
                    {
                        "dataset": f"{name}/{name}/{w}:0",
                        "name": f"{name}/{w}",
                        "shape": list(shape),
                        "dtype": "F32",
                        "id": t,
                        "offset": ds.id.get_offset(),
                    }
                )
                t += 1
        top = f.create_group("top_level_model_weights")
        top.attrs["weight_names"] = np.array([], dtype=np.float64)
    os.replace(tmp, args.out)
    size = os.path.getsize(args.out)
    meta = {
        "generator": "scripts/make_big_keras.py",
        "formula": "f32::from_bits(0x30000000 | ((i * 2654435761 + id * 40503) mod 2^28))",
        "file_size": size,
        "tensors": listing,
    }
    with open(args.out + ".json", "w") as fh:
        json.dump(meta, fh, indent=1)
    print(
        f"wrote {args.out}: {size:,} bytes, {dense} Dense {args.dim}x{args.dim}, "
        f"{args.small} Dense {args.small_dim}x{args.small_dim}, {args.bn} BatchNormalization, {len(listing)} datasets in {time.time() - started:.1f} s",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
