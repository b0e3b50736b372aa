//! Changes a tensor's bytes on the way out: axis permutations, gate
//! reordering and row selection (PyTorch layout), and dtype casts.
//!
//! Transforms work on any element type by treating elements as opaque
//! fixed-size byte groups, so one code path serves float16 and int64 alike.

use half::{bf16, f16};
use std::ops::Range;

use ndarray::{ArrayD, Axis, IxDyn};

use crate::dtype::Dtype;
use crate::values::for_each_value;

/// How many bytes of input one band of a streamed transpose holds (see
/// [`stream_reverse3`]): the memory a transposed tensor needs, whatever
/// its size. A band of an 8192-row float32 kernel is read in 8 KiB pieces,
/// one `pread` each: measured on a 1 GB file, 64 MiB bands took 0.71 s of
/// system time (peak RSS 99 MiB), 32 MiB 0.82-0.89 s (67 MiB), 16 MiB
/// 0.97-1.45 s (50 MiB).
pub const BAND_BYTES: usize = 64 << 20;

/// One step applied to a tensor, in order. Shapes are those of the tensor
/// as the step receives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Step {
    /// Reorders axes: output axis `i` is input axis `axes[i]`.
    Permute(Vec<usize>),
    /// Splits `axis` into `order.len()` equal blocks and puts them in the
    /// given order (GRU gates [z, r, h] to PyTorch's [r, z, n]).
    ReorderBlocks {
        /// The axis split into blocks.
        axis: usize,
        /// Output block `k` is input block `order[k]`.
        order: Vec<usize>,
    },
    /// Keeps one index of `axis`, dropping the axis.
    Select {
        /// The axis dropped.
        axis: usize,
        /// The index of it kept.
        index: usize,
    },
    /// Reinterprets the C-order elements with a new shape.
    Reshape(Vec<usize>),
    /// Reverses the order along these axes (Theano's convolution kernels
    /// are flipped relative to cross-correlation).
    Flip(Vec<usize>),
}

/// The shape a tensor has after `steps`.
pub fn shape_after(shape: &[usize], steps: &[Step]) -> Vec<usize> {
    let mut shape = shape.to_vec();
    for step in steps {
        shape = match step {
            Step::Permute(axes) => axes.iter().map(|&a| shape[a]).collect(),
            Step::ReorderBlocks { .. } => shape,
            Step::Select { axis, .. } => {
                let mut s = shape;
                s.remove(*axis);
                s
            }
            Step::Reshape(to) => to.clone(),
            Step::Flip(_) => shape,
        };
    }
    shape
}

/// Applies `steps` to C-order bytes of elements `element_size` bytes wide.
/// `out` is an allocation to reuse for the result (its contents are
/// replaced): big tensors then cost no fresh pages each time.
pub fn apply(
    bytes: &[u8],
    shape: &[usize],
    element_size: usize,
    steps: &[Step],
    mut out: Vec<u8>,
) -> Vec<u8> {
    out.clear();
    if steps.is_empty() {
        out.extend_from_slice(bytes);
        return out;
    }
    // Dense kernels are the big ones: a tiled transpose keeps both sides
    // in cache, where a strided walk over a 256 MiB matrix would not.
    if let ([rows, cols], [Step::Permute(axes)]) = (shape, steps) {
        if axes[..] == [1, 0] {
            out.resize(bytes.len(), 0);
            match element_size {
                1 => transpose::<1>(bytes, *rows, *cols, &mut out),
                2 => transpose::<2>(bytes, *rows, *cols, &mut out),
                4 => transpose::<4>(bytes, *rows, *cols, &mut out),
                8 => transpose::<8>(bytes, *rows, *cols, &mut out),
                other => unreachable!("no dtype has {other}-byte elements"),
            }
            return out;
        }
    }
    match element_size {
        1 => apply_typed::<1>(bytes, shape, steps),
        2 => apply_typed::<2>(bytes, shape, steps),
        4 => apply_typed::<4>(bytes, shape, steps),
        8 => apply_typed::<8>(bytes, shape, steps),
        other => unreachable!("no dtype has {other}-byte elements"),
    }
}

/// A row-major (rows, cols) matrix of N-byte elements, transposed in tiles,
/// the output split by column ranges across the cores.
fn transpose<const N: usize>(bytes: &[u8], rows: usize, cols: usize, out: &mut [u8]) {
    if rows == 0 || cols == 0 {
        return;
    }
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cols_per_part = cols.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        for (part, out_part) in out.chunks_mut(cols_per_part * rows * N).enumerate() {
            let first_col = part * cols_per_part;
            scope.spawn(move || transpose_columns::<N>(bytes, rows, cols, first_col, out_part));
        }
    });
}

/// Writes output rows `first_col..` (input columns) of the transpose into `out`.
fn transpose_columns<const N: usize>(
    bytes: &[u8],
    rows: usize,
    cols: usize,
    first_col: usize,
    out: &mut [u8],
) {
    const TILE: usize = 64;
    let last_col = first_col + out.len() / (rows * N);
    for r0 in (0..rows).step_by(TILE) {
        for c0 in (first_col..last_col).step_by(TILE) {
            let c1 = (c0 + TILE).min(last_col);
            for r in r0..(r0 + TILE).min(rows) {
                let row = &bytes[(r * cols + c0) * N..(r * cols + c1) * N];
                for (k, element) in row.chunks_exact(N).enumerate() {
                    let to = ((c0 + k - first_col) * rows + r) * N;
                    out[to..to + N].copy_from_slice(element);
                }
            }
        }
    }
}

fn apply_typed<const N: usize>(bytes: &[u8], shape: &[usize], steps: &[Step]) -> Vec<u8> {
    let elements: Vec<[u8; N]> = bytes
        .chunks_exact(N)
        .map(|c| c.try_into().unwrap_or([0; N]))
        .collect();
    let mut array = ArrayD::from_shape_vec(IxDyn(shape), elements)
        .expect("planned shape matches the stored element count");
    for step in steps {
        array = match step {
            Step::Permute(axes) => array.permuted_axes(IxDyn(axes)),
            Step::ReorderBlocks { axis, order } => {
                let block = array.len_of(Axis(*axis)) / order.len();
                let views: Vec<_> = order
                    .iter()
                    .map(|&b| {
                        array.slice_axis(
                            Axis(*axis),
                            ndarray::Slice::from(b * block..(b + 1) * block),
                        )
                    })
                    .collect();
                ndarray::concatenate(Axis(*axis), &views).expect("blocks of equal shape")
            }
            Step::Select { axis, index } => array.index_axis(Axis(*axis), *index).to_owned(),
            Step::Flip(axes) => {
                for &axis in axes {
                    array.invert_axis(Axis(axis));
                }
                array
            }
            Step::Reshape(to) => {
                let standard = array.as_standard_layout().into_owned();
                standard
                    .into_shape_with_order(IxDyn(to))
                    .expect("planned reshape keeps the element count")
            }
        };
    }
    let standard = array.as_standard_layout();
    let mut out = Vec::with_capacity(standard.len() * N);
    for element in standard.iter() {
        out.extend_from_slice(element);
    }
    out
}

/// A tensor whose steps only move axes, seen as a 3-D array `(s, i, o)`
/// (runs of its input axes) whose output is `(o, i, s)`: a Dense kernel is
/// `(rows, 1, cols)`, a convolution kernel `(kh * kw, in, out)`, a
/// depthwise one `(kh * kw, 1, in * m)`, a tensor that keeps its order
/// `(1, 1, len)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reverse3 {
    /// The first run of input axes (kernel positions): last in the output.
    pub s: usize,
    /// The middle run: in the middle on both sides.
    pub i: usize,
    /// The last run of input axes (output channels): first in the output.
    pub o: usize,
}

/// `shape` and `steps` as a [`Reverse3`], when the steps are a permutation
/// of that form (a reshape after it moves no bytes).
pub fn as_reverse3(shape: &[usize], steps: &[Step]) -> Option<Reverse3> {
    let n = shape.len();
    let perm: Vec<usize> = match steps {
        [] | [Step::Reshape(_)] => (0..n).collect(),
        [Step::Permute(p)] | [Step::Permute(p), Step::Reshape(_)] => p.clone(),
        _ => return None,
    };
    if perm.len() != n {
        return None;
    }
    let product = |r: std::ops::Range<usize>| shape[r].iter().product::<usize>();
    // A plain transpose (nothing in the middle) first: its kernel is the
    // fastest.
    let splits = (0..=n)
        .map(|a| (a, a))
        .chain((0..=n).flat_map(|a| (a + 1..=n).map(move |b| (a, b))));
    for (a, b) in splits {
        if (b..n).chain(a..b).chain(0..a).eq(perm.iter().copied()) {
            return Some(Reverse3 {
                s: product(0..a),
                i: product(a..b),
                o: product(b..n),
            });
        }
    }
    None
}

/// `shape` and `steps` as a [`Reverse3`] and the runs of `o` that its
/// output rows come from, in order: all of `o` for a permutation, and the
/// blocks in their new order where a GRU kernel's gates are reordered
/// before its transpose (the gates are blocks of its last axis, which alone
/// makes `o`).
pub fn as_banded(shape: &[usize], steps: &[Step]) -> Option<(Reverse3, Vec<Range<usize>>)> {
    if let [Step::ReorderBlocks { axis, order }, rest @ ..] = steps {
        let layout = as_reverse3(shape, rest)?;
        let last = *shape.last()?;
        if *axis + 1 != shape.len() || layout.o != last || !last.is_multiple_of(order.len()) {
            return None;
        }
        let block = last / order.len();
        let runs = order.iter().map(|&b| b * block..(b + 1) * block).collect();
        return Some((layout, runs));
    }
    as_reverse3(shape, steps).map(|layout| (layout, std::iter::once(0..layout.o).collect()))
}

/// Produces the output of a [`Reverse3`] tensor of `element_size`-byte
/// elements in pieces, reading its input band by band: a band is the input
/// for a run of output rows (`o`), at most `band_bytes` of it (one read
/// when the band is the whole tensor, else one per `(s, i)` row), held in
/// `input`; output rows are the runs `o_runs` of `o`, in order; each piece
/// is about `piece_bytes` of output in a buffer from
/// `next` (its old contents are overwritten), handed to `emit` in order.
/// Memory is `band_bytes` plus the pieces, whatever the tensor's size.
/// `read(offset, buf)` fills `buf` from the input's bytes at `offset`.
#[allow(clippy::too_many_arguments)]
pub fn stream_reverse3(
    shape: Reverse3,
    o_runs: &[Range<usize>],
    element_size: usize,
    band_bytes: usize,
    piece_bytes: usize,
    input: &mut Vec<u8>,
    read: &mut dyn FnMut(u64, &mut [u8]) -> std::io::Result<()>,
    next: &mut dyn FnMut() -> Vec<u8>,
    emit: &mut dyn FnMut(Vec<u8>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let Reverse3 { s, i, o } = shape;
    let n = element_size;
    let rows_in = s * i;
    if rows_in == 0 || o == 0 {
        return Ok(());
    }
    let width = (band_bytes / (rows_in * n)).clamp(1, o);
    let row_out = rows_in * n;
    let rows_per_piece = (piece_bytes / row_out).max(1);
    let bands = o_runs.iter().flat_map(|run| {
        let end = run.end.min(o);
        (run.start..end)
            .step_by(width)
            .map(move |o0| (o0, width.min(end - o0)))
    });
    for (o0, w) in bands {
        crate::cancel::checkpoint()?;
        input.resize(rows_in * w * n, 0);
        if w == o {
            read(0, input)?;
        } else {
            for (row, band_row) in input.chunks_exact_mut(w * n).enumerate() {
                read(((row * o + o0) * n) as u64, band_row)?;
            }
        }
        for w0 in (0..w).step_by(rows_per_piece) {
            let cols = rows_per_piece.min(w - w0);
            let mut out = next();
            out.resize(cols * row_out, 0);
            for ii in 0..i {
                let src = &input[(ii * w + w0) * n..];
                let dst = &mut out[ii * s * n..];
                match n {
                    1 => transpose_strided::<1>(src, i * w, s, cols, dst, i * s),
                    2 => transpose_strided::<2>(src, i * w, s, cols, dst, i * s),
                    4 => transpose_strided::<4>(src, i * w, s, cols, dst, i * s),
                    8 => transpose_strided::<8>(src, i * w, s, cols, dst, i * s),
                    other => unreachable!("no dtype has {other}-byte elements"),
                }
            }
            emit(out)?;
        }
    }
    Ok(())
}

/// `dst[c * dst_stride + r] = src[r * src_stride + c]` for `r < rows`,
/// `c < cols`, in elements of N bytes: blocks of 16 source rows, so that
/// each source cache line is read once and each output row gets 16
/// elements in a run.
fn transpose_strided<const N: usize>(
    src: &[u8],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [u8],
    dst_stride: usize,
) {
    const BLOCK: usize = 16;
    if rows == 1 && dst_stride == 1 {
        dst[..cols * N].copy_from_slice(&src[..cols * N]);
        return;
    }
    for r0 in (0..rows).step_by(BLOCK) {
        let r1 = (r0 + BLOCK).min(rows);
        for c in 0..cols {
            let out = &mut dst[(c * dst_stride + r0) * N..(c * dst_stride + r1) * N];
            for (k, element) in out.chunks_exact_mut(N).enumerate() {
                let from = ((r0 + k) * src_stride + c) * N;
                element.copy_from_slice(&src[from..from + N]);
            }
        }
    }
}

/// Whether a cast to `to` changes this dtype (only floating types are cast).
pub fn casts(from: Dtype, to: Option<Dtype>) -> Option<Dtype> {
    let is_float = |d: Dtype| matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64);
    match to {
        Some(to) if is_float(from) && from != to => Some(to),
        _ => None,
    }
}

/// Casts little-endian floats from one dtype to another, rounding to
/// nearest even. Returns the bytes and how many finite values became
/// infinite (too large for the target type).
pub fn cast(bytes: &[u8], from: Dtype, to: Dtype) -> (Vec<u8>, u64) {
    cast_into(bytes, from, to, Vec::new())
}

/// [`cast`], reusing `out`'s allocation.
pub fn cast_into(bytes: &[u8], from: Dtype, to: Dtype, mut out: Vec<u8>) -> (Vec<u8>, u64) {
    out.clear();
    let is_float = |d: Dtype| matches!(d, Dtype::F16 | Dtype::BF16 | Dtype::F32 | Dtype::F64);
    if !is_float(from) || !is_float(to) {
        out.extend_from_slice(bytes);
        return (out, 0);
    }
    let mut overflow = 0u64;
    out.reserve(bytes.len() / from.size() * to.size());
    // Each value is rounded once, from its own precision: f64 -> f16 goes
    // straight, as numpy's astype does, not through f32.
    for_each_value(bytes, from, |v| {
        let infinite = match to {
            Dtype::F16 => {
                let h = f16::from_f64(v);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_infinite()
            }
            Dtype::BF16 => {
                let h = bf16::from_f64(v);
                out.extend_from_slice(&h.to_le_bytes());
                h.is_infinite()
            }
            Dtype::F32 => {
                let f = v as f32;
                out.extend_from_slice(&f.to_le_bytes());
                f.is_infinite()
            }
            _ => {
                out.extend_from_slice(&v.to_le_bytes());
                v.is_infinite()
            }
        };
        if infinite && v.is_finite() {
            overflow += 1;
        }
    });
    (out, overflow)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32_bytes(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    fn f32_values(bytes: &[u8]) -> Vec<f32> {
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn transpose_of_a_dense_kernel() {
        // (in=2, out=3) -> (3, 2)
        let k = f32_bytes(&[1., 2., 3., 4., 5., 6.]);
        let t = apply(&k, &[2, 3], 4, &[Step::Permute(vec![1, 0])], Vec::new());
        assert_eq!(f32_values(&t), [1., 4., 2., 5., 3., 6.]);
    }

    #[test]
    fn tiled_transpose_matches_the_general_one() {
        let (rows, cols) = (70, 131);
        let values: Vec<f32> = (0..rows * cols).map(|v| v as f32).collect();
        let tiled = apply(
            &f32_bytes(&values),
            &[rows, cols],
            4,
            &[Step::Permute(vec![1, 0])],
            vec![7; 3],
        );
        let general = apply_typed::<4>(
            &f32_bytes(&values),
            &[rows, cols],
            &[Step::Permute(vec![1, 0])],
        );
        assert_eq!(tiled, general);
        assert_eq!(f32_values(&tiled)[1], cols as f32);
    }

    /// Element `k` of a test tensor: distinct for every `k` below 2^28.
    fn formula(k: usize) -> u32 {
        ((k as u32).wrapping_mul(2_654_435_761) & 0x0FFF_FFFF) | 0x3000_0000
    }

    fn elements<const N: usize>(count: usize) -> Vec<u8> {
        (0..count)
            .flat_map(|k| {
                let v = formula(k).to_le_bytes();
                let mut e = [0u8; N];
                for (j, b) in e.iter_mut().enumerate() {
                    *b = v[j % 4] ^ (j / 4) as u8;
                }
                e
            })
            .collect()
    }

    /// The output of [`stream_reverse3`], pieces joined, with the reads
    /// it made.
    fn banded(
        input: &[u8],
        shape: &[usize],
        steps: &[Step],
        n: usize,
        band: usize,
        piece: usize,
    ) -> (Vec<u8>, usize) {
        let (layout, runs) = as_banded(shape, steps).expect("a permutation of three runs");
        let mut out = Vec::new();
        let mut reads = 0;
        let mut read = |offset: u64, buf: &mut [u8]| {
            reads += 1;
            buf.copy_from_slice(&input[offset as usize..offset as usize + buf.len()]);
            Ok(())
        };
        // Recycled buffers hold stale bytes, which must all be overwritten.
        let mut next = || vec![0xEE; 5];
        let mut emit = |p: Vec<u8>| {
            assert!(p.len() <= piece.max(layout.s * layout.i * n));
            out.extend_from_slice(&p);
            Ok(())
        };
        let mut scratch = vec![0x55; 3];
        stream_reverse3(
            layout,
            &runs,
            n,
            band,
            piece,
            &mut scratch,
            &mut read,
            &mut next,
            &mut emit,
        )
        .unwrap();
        (out, reads)
    }

    #[test]
    fn banded_transpose_matches_the_whole_tensor_and_the_formula() {
        fn check<const N: usize>(rows: usize, cols: usize, band: usize, piece: usize) {
            let input = elements::<N>(rows * cols);
            let steps = [Step::Permute(vec![1, 0])];
            let (out, reads) = banded(&input, &[rows, cols], &steps, N, band, piece);
            let whole = apply(&input, &[rows, cols], N, &steps, Vec::new());
            assert!(
                out == whole,
                "{rows}x{cols}x{N}, band {band}, piece {piece}"
            );
            let bands = cols.div_ceil((band / (rows * N)).clamp(1, cols));
            assert_eq!(reads, if bands == 1 { 1 } else { bands * rows });
            for r in (0..rows).step_by(7) {
                for c in (0..cols).step_by(5) {
                    assert_eq!(
                        out[(c * rows + r) * N..][..N],
                        input[(r * cols + c) * N..][..N]
                    );
                }
            }
        }
        // 8 MiB of float32 in 1 MiB bands (many bands, edges not multiples
        // of the band, the piece or the 16-row block).
        check::<4>(1031, 2087, 1 << 20, 200_000);
        check::<4>(1031, 2087, 64 << 20, 2 << 20); // one band, one read
        check::<2>(1500, 1027, 300_000, 77_777);
        check::<8>(513, 777, 1 << 20, 1 << 16);
        check::<1>(65, 4099, 4096, 1000);
        check::<4>(3, 5, 1, 1); // a band and a piece of one row each
    }

    #[test]
    fn banded_convolution_kernels_match_the_whole_tensor() {
        // (kh, kw, in, out) -> (out, in, kh, kw); (k, in, out) -> (out, in, k);
        // depthwise (kh, kw, in, m) -> (in, m, kh, kw) -> (in * m, 1, kh, kw);
        // a tensor kept in order.
        let cases: [(Vec<usize>, Vec<Step>); 5] = [
            (vec![3, 3, 96, 1031], vec![Step::Permute(vec![3, 2, 0, 1])]),
            (vec![5, 130, 777], vec![Step::Permute(vec![2, 1, 0])]),
            (vec![3, 3, 1, 1], vec![Step::Permute(vec![3, 2, 0, 1])]),
            (
                vec![3, 5, 64, 3],
                vec![
                    Step::Permute(vec![2, 3, 0, 1]),
                    Step::Reshape(vec![192, 1, 3, 5]),
                ],
            ),
            (vec![2_000_003], Vec::new()),
        ];
        for (shape, steps) in cases {
            let count: usize = shape.iter().product();
            let input = elements::<4>(count);
            let whole = apply(&input, &shape, 4, &steps, Vec::new());
            for (band, piece) in [(1 << 20, 300_001), (64 << 20, 2 << 20), (4, 4)] {
                if count > 100_000 && band == 4 {
                    continue;
                }
                let (out, _) = banded(&input, &shape, &steps, 4, band, piece);
                assert!(out == whole, "{shape:?} {steps:?}, band {band}");
            }
        }
        // Conv2D by the formula: out[o][c][y][x] = in[y][x][c][o].
        let (kh, kw, cin, cout) = (3, 3, 96, 1031);
        let input = elements::<4>(kh * kw * cin * cout);
        let steps = [Step::Permute(vec![3, 2, 0, 1])];
        let (out, _) = banded(&input, &[kh, kw, cin, cout], &steps, 4, 1 << 20, 1 << 16);
        for o in (0..cout).step_by(13) {
            for c in 0..cin {
                for y in 0..kh {
                    for x in 0..kw {
                        let to = ((o * cin + c) * kh + y) * kw + x;
                        let from = ((y * kw + x) * cin + c) * cout + o;
                        assert_eq!(out[to * 4..][..4], formula(from).to_le_bytes());
                    }
                }
            }
        }
    }

    #[test]
    fn banded_gru_kernels_match_the_whole_tensor_and_the_formula() {
        // (in, 3 * units), gates [z, r, h] -> (3 * units, in), gates [r, z, h].
        let steps = [
            Step::ReorderBlocks {
                axis: 1,
                order: vec![1, 0, 2],
            },
            Step::Permute(vec![1, 0]),
        ];
        for (rows, units) in [(300, 257), (1, 5), (64, 1)] {
            let shape = [rows, 3 * units];
            let input = elements::<4>(rows * 3 * units);
            let whole = apply(&input, &shape, 4, &steps, Vec::new());
            for (band, piece) in [
                (1 << 20, 300_001),
                (64 << 20, 2 << 20),
                (4 * rows * 7, 999),
                (4, 4),
            ] {
                let (out, _) = banded(&input, &shape, &steps, 4, band, piece);
                assert!(out == whole, "{shape:?}, band {band}, piece {piece}");
            }
            for (gate, from) in [(0, 1), (1, 0), (2, 2)] {
                for u in (0..units).step_by(11) {
                    for r in (0..rows).step_by(7) {
                        let to = (gate * units + u) * rows + r;
                        let from = r * 3 * units + from * units + u;
                        assert_eq!(out_at(&whole, to), formula(from).to_le_bytes());
                    }
                }
            }
        }
        // Only the last axis's blocks, and only before a transpose of it.
        let reorder = |axis| Step::ReorderBlocks {
            axis,
            order: vec![1, 0, 2],
        };
        assert!(as_banded(&[4, 6], &[reorder(0), Step::Permute(vec![1, 0])]).is_none());
        assert!(as_banded(&[4, 7], &[reorder(1), Step::Permute(vec![1, 0])]).is_none());
        assert!(as_banded(&[2, 6], &[Step::Permute(vec![1, 0]), reorder(0)]).is_none());
        // Without a transpose the blocks are within each row: not banded.
        assert!(as_banded(&[4, 6], &[reorder(1)]).is_none());
        assert_eq!(
            as_banded(&[4, 6], &[reorder(1), Step::Permute(vec![1, 0])]),
            Some((Reverse3 { s: 4, i: 1, o: 6 }, vec![2..4, 0..2, 4..6]))
        );
    }

    fn out_at(bytes: &[u8], element: usize) -> [u8; 4] {
        bytes[element * 4..][..4].try_into().unwrap()
    }

    #[test]
    fn only_permutations_of_three_runs_are_banded() {
        let r = |s, i, o| Some(Reverse3 { s, i, o });
        let permute = |p: &[usize]| vec![Step::Permute(p.to_vec())];
        assert_eq!(as_reverse3(&[4, 6], &permute(&[1, 0])), r(4, 1, 6));
        assert_eq!(
            as_reverse3(&[2, 3, 4, 5], &permute(&[3, 2, 0, 1])),
            r(6, 4, 5)
        );
        assert_eq!(as_reverse3(&[7, 8], &[]), r(1, 1, 56));
        assert_eq!(as_reverse3(&[2, 3, 4], &permute(&[1, 0, 2])), None);
        assert_eq!(as_reverse3(&[2, 3, 4, 5], &permute(&[3, 2, 1, 0])), None);
        let flip = [Step::Flip(vec![0])];
        assert_eq!(as_reverse3(&[2, 3], &flip), None);
    }

    #[test]
    fn transposing_a_matrix_with_no_elements_gives_no_bytes() {
        // Keras allows zero-size weights (the `dtypes` fixtures hold a (3, 0)
        // one); a dense kernel of (0, 3) or (3, 0) has no bytes either way.
        for shape in [[0, 3], [3, 0], [0, 0]] {
            let out = apply(&[], &shape, 4, &[Step::Permute(vec![1, 0])], vec![9; 5]);
            assert!(out.is_empty(), "{shape:?}");
        }
    }

    #[test]
    fn gru_gates_are_reordered_by_block() {
        // one row, gates z=[1,2] r=[3,4] h=[5,6] -> r, z, h
        let b = f32_bytes(&[1., 2., 3., 4., 5., 6.]);
        let steps = [Step::ReorderBlocks {
            axis: 0,
            order: vec![1, 0, 2],
        }];
        assert_eq!(
            f32_values(&apply(&b, &[6], 4, &steps, Vec::new())),
            [3., 4., 1., 2., 5., 6.]
        );
    }

    #[test]
    fn depthwise_kernel_becomes_grouped_conv_weight() {
        // (kh=1, kw=2, in=2, m=2) -> permute (2,3,0,1) -> (2,2,1,2) -> (4,1,1,2)
        let values: Vec<f32> = (0..8).map(|v| v as f32).collect();
        let steps = [
            Step::Permute(vec![2, 3, 0, 1]),
            Step::Reshape(vec![4, 1, 1, 2]),
        ];
        assert_eq!(shape_after(&[1, 2, 2, 2], &steps), [4, 1, 1, 2]);
        let out = f32_values(&apply(
            &f32_bytes(&values),
            &[1, 2, 2, 2],
            4,
            &steps,
            Vec::new(),
        ));
        // element [c*m + j, 0, 0, w] = kernel[0, w, c, j] = index w*4 + c*2 + j
        assert_eq!(out, [0., 4., 1., 5., 2., 6., 3., 7.]);
    }

    #[test]
    fn flipping_spatial_axes() {
        // (2, 2, 1, 1) kernel [[a, b], [c, d]] -> [[d, c], [b, a]]
        let k = f32_bytes(&[1., 2., 3., 4.]);
        let out = apply(&k, &[2, 2, 1, 1], 4, &[Step::Flip(vec![0, 1])], Vec::new());
        assert_eq!(f32_values(&out), [4., 3., 2., 1.]);
    }

    #[test]
    fn selecting_a_row() {
        let b = f32_bytes(&[1., 2., 3., 4.]);
        let steps = [Step::Select { axis: 0, index: 1 }];
        assert_eq!(shape_after(&[2, 2], &steps), [2]);
        assert_eq!(
            f32_values(&apply(&b, &[2, 2], 4, &steps, Vec::new())),
            [3., 4.]
        );
    }

    #[test]
    fn casts_round_to_nearest_even_and_count_overflow() {
        let (out, overflow) = cast(
            &f32_bytes(&[1.0, 70000.0, -1e-8, f32::INFINITY]),
            Dtype::F32,
            Dtype::F16,
        );
        let halves: Vec<f16> = out
            .chunks_exact(2)
            .map(|c| f16::from_le_bytes([c[0], c[1]]))
            .collect();
        assert_eq!(halves[0], f16::from_f32(1.0));
        assert!(halves[1].is_infinite());
        assert_eq!(overflow, 1, "a value already infinite is not an overflow");
        // 1 + 2^-8 lies halfway between two bfloat16 values: ties go to even.
        let (out, _) = cast(&f32_bytes(&[1.0 + 1.0 / 256.0]), Dtype::F32, Dtype::BF16);
        assert_eq!(bf16::from_le_bytes([out[0], out[1]]).to_f32(), 1.0);
        // Only floats are cast: integer bytes, either side, pass unchanged.
        let ints: Vec<u8> = [1i32, -2, 70000]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        assert_eq!(cast(&ints, Dtype::I32, Dtype::F16), (ints.clone(), 0));
        assert_eq!(cast(&ints, Dtype::F32, Dtype::I32), (ints.clone(), 0));
        assert_eq!(casts(Dtype::I64, Some(Dtype::F16)), None);
        assert_eq!(casts(Dtype::F32, Some(Dtype::F32)), None);
    }
}
