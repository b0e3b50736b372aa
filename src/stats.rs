//! `inspect --stats`: per-tensor statistics in one streaming pass.

use serde::Serialize;

use crate::dtype::Dtype;
use crate::values::for_each_value;

/// Statistics of one tensor's values.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Stats {
    /// Of the finite values; `null` when there are none.
    pub min: Option<f64>,
    /// The largest finite value.
    pub max: Option<f64>,
    /// The mean of the finite values.
    pub mean: Option<f64>,
    /// Population standard deviation.
    pub std: Option<f64>,
    /// How many values are NaN.
    pub nan: u64,
    /// How many values are infinite.
    pub inf: u64,
    /// How many values are zero.
    pub zero: u64,
    #[serde(skip)]
    count: u64,
    #[serde(skip)]
    m2: f64,
}

/// Values summarised at a time: small enough that the second pass over a
/// block (for the spread around its mean) reads it from L1 cache, so the
/// data is read from memory once.
const BLOCK: usize = 4096;
/// Independent accumulators per pass, so that the compiler can keep them in
/// vector registers (floating-point sums are not reassociated otherwise).
const LANES: usize = 8;

/// One block's statistics, before they are merged into a [`Stats`].
#[derive(Debug, Clone, Copy)]
struct Block {
    finite: u64,
    nan: u64,
    inf: u64,
    zero: u64,
    sum: f64,
    lo: f64,
    hi: f64,
}

impl Stats {
    /// Adds a chunk of little-endian values. Blocks are merged with Chan's
    /// formula, so the mean and spread stay exact over billions of values.
    pub fn add(&mut self, bytes: &[u8], dtype: Dtype) {
        match dtype {
            Dtype::F32 => {
                #[cfg(target_arch = "x86_64")]
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: the CPU has just been found to support AVX2.
                    unsafe { self.add_f32s_avx2(bytes) };
                    return;
                }
                self.add_f32s(bytes, f32::from_le_bytes)
            }
            // Half floats widen to f32 exactly.
            Dtype::F16 => self.add_f32s(bytes, |c| half::f16::from_le_bytes(c).to_f32()),
            Dtype::BF16 => self.add_f32s(bytes, |c| half::bf16::from_le_bytes(c).to_f32()),
            _ => self.add_any(bytes, dtype),
        }
    }

    /// `add_f32s` compiled for AVX2: the build targets every x86-64, whose
    /// 128-bit vectors make the statistics slower than reading the file.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn add_f32s_avx2(&mut self, bytes: &[u8]) {
        self.add_f32s(bytes, f32::from_le_bytes)
    }

    /// The fast path: `N`-byte values that are exactly f32s, a block at a
    /// time, decoded where they lie (a copy into an f32 buffer costs as much
    /// as the statistics).
    #[inline(always)]
    fn add_f32s<const N: usize>(&mut self, bytes: &[u8], decode: impl Fn([u8; N]) -> f32 + Copy) {
        let (values, _) = bytes.as_chunks::<N>();
        for block in values.chunks(BLOCK) {
            let summary = summarise(block, decode);
            if summary.finite == 0 {
                self.merge_counts(&summary);
                continue;
            }
            let mean = summary.sum / summary.finite as f64;
            let m2 = spread(block, decode, mean);
            self.merge(&summary, mean, m2);
        }
    }

    /// Any dtype, one value at a time (integers do not fit f32 exactly).
    fn add_any(&mut self, bytes: &[u8], dtype: Dtype) {
        let mut block = Block::empty();
        for_each_value(bytes, dtype, |v| block.add(v));
        if block.finite == 0 {
            self.merge_counts(&block);
            return;
        }
        let mean = block.sum / block.finite as f64;
        let mut m2 = 0.0;
        for_each_value(bytes, dtype, |v| {
            if v.is_finite() {
                m2 += (v - mean) * (v - mean);
            }
        });
        self.merge(&block, mean, m2);
    }

    fn merge_counts(&mut self, block: &Block) {
        self.nan += block.nan;
        self.inf += block.inf;
        self.zero += block.zero;
    }

    fn merge(&mut self, block: &Block, block_mean: f64, block_m2: f64) {
        self.merge_counts(block);
        self.absorb(block.finite, block_mean, block_m2, block.lo, block.hi);
    }

    /// Adds the statistics of another part of the same tensor, such as a
    /// piece read on another thread.
    pub fn combine(&mut self, other: &Stats) {
        self.nan += other.nan;
        self.inf += other.inf;
        self.zero += other.zero;
        if let (Some(mean), Some(lo), Some(hi)) = (other.mean, other.min, other.max) {
            self.absorb(other.count, mean, other.m2, lo, hi);
        }
    }

    /// Chan's formula for the mean and spread of two parts.
    fn absorb(&mut self, n: u64, part_mean: f64, part_m2: f64, lo: f64, hi: f64) {
        let total = self.count + n;
        let mean = self.mean.unwrap_or(0.0);
        let delta = part_mean - mean;
        self.m2 += part_m2 + delta * delta * (self.count as f64) * (n as f64) / total as f64;
        self.mean = Some(mean + delta * n as f64 / total as f64);
        self.count = total;
        self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        self.std = Some((self.m2 / total as f64).sqrt());
    }
}

impl Block {
    fn empty() -> Block {
        Block {
            finite: 0,
            nan: 0,
            inf: 0,
            zero: 0,
            sum: 0.0,
            lo: f64::INFINITY,
            hi: f64::NEG_INFINITY,
        }
    }

    /// Counts one value in, the plain way.
    fn add(&mut self, v: f64) {
        if v.is_nan() {
            self.nan += 1;
        } else if v.is_infinite() {
            self.inf += 1;
        } else {
            self.finite += 1;
            self.zero += (v == 0.0) as u64;
            self.sum += v;
            self.lo = self.lo.min(v);
            self.hi = self.hi.max(v);
        }
    }
}

/// Counts, sum and range of a block. Blocks with a NaN or an infinity are
/// rare, so the common case runs as simple loops that compile to vector
/// code, and only a block that has one is summarised value by value.
#[inline(always)]
fn summarise<E: Copy>(values: &[E], decode: impl Fn(E) -> f32) -> Block {
    let mut lanes = values.chunks_exact(LANES);
    let mut not_finite = [0u32; LANES];
    let mut zero = [0u32; LANES];
    let mut lo = [f32::INFINITY; LANES];
    let mut hi = [f32::NEG_INFINITY; LANES];
    for c in &mut lanes {
        for k in 0..LANES {
            let v = decode(c[k]);
            // Integer tests on the bits vectorise better than float ones.
            let magnitude = v.to_bits() & 0x7fff_ffff;
            not_finite[k] |= (magnitude >= 0x7f80_0000) as u32;
            zero[k] += (magnitude == 0) as u32;
            lo[k] = if v < lo[k] { v } else { lo[k] };
            hi[k] = if v > hi[k] { v } else { hi[k] };
        }
    }
    let rest = lanes.remainder();
    if not_finite.iter().any(|&b| b != 0) || rest.iter().any(|&v| !decode(v).is_finite()) {
        return summarise_one_by_one(values, decode);
    }
    let mut sum = [0f64; LANES];
    let mut lanes = values.chunks_exact(LANES);
    for c in &mut lanes {
        for k in 0..LANES {
            sum[k] += decode(c[k]) as f64;
        }
    }
    let mut block = Block::empty();
    for &v in rest {
        block.add(decode(v) as f64);
    }
    block.finite += (values.len() - rest.len()) as u64;
    for k in 0..LANES {
        block.zero += zero[k] as u64;
        block.sum += sum[k];
        block.lo = block.lo.min(lo[k] as f64);
        block.hi = block.hi.max(hi[k] as f64);
    }
    block
}

fn summarise_one_by_one<E: Copy>(values: &[E], decode: impl Fn(E) -> f32) -> Block {
    let mut block = Block::empty();
    for &v in values {
        block.add(decode(v) as f64);
    }
    block
}

/// The sum of squared distances of the finite values from `mean`.
#[inline(always)]
fn spread<E: Copy>(values: &[E], decode: impl Fn(E) -> f32, mean: f64) -> f64 {
    let mut m2 = [0f64; LANES];
    let mut lanes = values.chunks_exact(LANES);
    for c in &mut lanes {
        for k in 0..LANES {
            let v = decode(c[k]);
            let d = if v.abs() < f32::INFINITY {
                v as f64 - mean
            } else {
                0.0
            };
            m2[k] += d * d;
        }
    }
    let rest: f64 = lanes
        .remainder()
        .iter()
        .map(|&v| decode(v))
        .filter(|v| v.is_finite())
        .map(|v| (v as f64 - mean) * (v as f64 - mean))
        .sum();
    m2.iter().sum::<f64>() + rest
}
#[cfg(test)]
/// For tests: the statistics computed the plain way: one value at a time in f64,
/// two passes over all of them.
pub(crate) fn two_pass_reference(values: &[f64]) -> Stats {
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    let n = finite.len() as f64;
    let mean = finite.iter().sum::<f64>() / n;
    let var = finite.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    let some = |x: f64| (!finite.is_empty()).then_some(x);
    Stats {
        min: some(finite.iter().copied().fold(f64::INFINITY, f64::min)),
        max: some(finite.iter().copied().fold(f64::NEG_INFINITY, f64::max)),
        mean: some(mean),
        std: some(var.sqrt()),
        nan: values.iter().filter(|v| v.is_nan()).count() as u64,
        inf: values.iter().filter(|v| v.is_infinite()).count() as u64,
        zero: values.iter().filter(|&&v| v == 0.0).count() as u64,
        ..Stats::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f32s(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn chunks_merge_to_the_same_answer() {
        let values = [1.0, 2.0, 3.0, 4.0, f32::NAN, f32::INFINITY, 0.0];
        let mut whole = Stats::default();
        whole.add(&f32s(&values), Dtype::F32);
        let mut parts = Stats::default();
        parts.add(&f32s(&values[..3]), Dtype::F32);
        parts.add(&f32s(&values[3..]), Dtype::F32);
        for s in [&whole, &parts] {
            assert_eq!(s.min, Some(0.0));
            assert_eq!(s.max, Some(4.0));
            assert!((s.mean.unwrap() - 2.0).abs() < 1e-12);
            assert!((s.std.unwrap() - 2f64.sqrt()).abs() < 1e-12);
            assert_eq!((s.nan, s.inf, s.zero), (1, 1, 1));
        }
    }

    fn assert_close(got: &Stats, want: &Stats, what: &str) {
        assert_eq!((got.min, got.max), (want.min, want.max), "{what}");
        assert_eq!(
            (got.nan, got.inf, got.zero),
            (want.nan, want.inf, want.zero),
            "{what}"
        );
        for (g, w) in [(got.mean, want.mean), (got.std, want.std)] {
            match (g, w) {
                (Some(g), Some(w)) => assert!(
                    (g - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{what}: {g} vs {w}"
                ),
                _ => assert_eq!(g, w, "{what}"),
            }
        }
    }

    /// Several blocks and a ragged tail, with NaN, infinities, zeros of
    /// both signs and extremes placed in vector lanes and in the tail.
    fn awkward_values() -> Vec<f32> {
        let mut state = 0x2545_f491_u32;
        let mut values: Vec<f32> = (0..3 * BLOCK + 13)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                (state as f32 / u32::MAX as f32 - 0.3) * 1000.0
            })
            .collect();
        values[5] = f32::NAN;
        values[BLOCK + 3] = f32::INFINITY;
        values[BLOCK + 4] = f32::NEG_INFINITY;
        values[2 * BLOCK + 7] = 0.0;
        values[2 * BLOCK + 8] = -0.0;
        values[3 * BLOCK + 11] = f32::NAN;
        values[3 * BLOCK + 12] = -3.0e4;
        values[17] = 5.0e4;
        values
    }

    #[test]
    fn the_block_kernels_agree_with_the_plain_computation() {
        let values = awkward_values();
        let wide: Vec<f64> = values.iter().map(|&v| v as f64).collect();
        let want = two_pass_reference(&wide);
        let mut fast = Stats::default();
        fast.add(&f32s(&values), Dtype::F32);
        assert_close(&fast, &want, "f32");
        // In pieces that split blocks and lanes.
        let bytes = f32s(&values);
        let mut pieces = Stats::default();
        for piece in bytes.chunks(4 * 1001) {
            pieces.add(piece, Dtype::F32);
        }
        assert_close(&pieces, &want, "f32 in pieces");
        // In parts summarised apart and combined, as threads do.
        let mut combined = Stats::default();
        for part in bytes.chunks(4 * 2500) {
            let mut alone = Stats::default();
            alone.add(part, Dtype::F32);
            combined.combine(&alone);
        }
        combined.combine(&Stats::default());
        assert_close(&combined, &want, "f32 combined");
        // Every finite block takes the vector path, a block of only
        // non-finite values none.
        let all_nan = vec![f32::NAN; BLOCK + 3];
        let mut nan = Stats::default();
        nan.add(&f32s(&all_nan), Dtype::F32);
        assert_eq!((nan.min, nan.mean, nan.nan), (None, None, BLOCK as u64 + 3));
    }

    #[test]
    fn every_build_of_the_f32_kernel_gives_the_same_bits() {
        let bytes = f32s(&awkward_values());
        let mut dispatched = Stats::default();
        dispatched.add(&bytes, Dtype::F32);
        let mut portable = Stats::default();
        portable.add_f32s(&bytes, f32::from_le_bytes);
        assert_eq!(dispatched, portable);
    }

    #[test]
    fn half_floats_and_integers_agree_with_the_plain_computation() {
        let values = awkward_values();
        for dtype in [Dtype::F16, Dtype::BF16] {
            let (bytes, wide): (Vec<u8>, Vec<f64>) = values
                .iter()
                .map(|&v| match dtype {
                    Dtype::F16 => (
                        half::f16::from_f32(v).to_le_bytes(),
                        half::f16::from_f32(v).to_f64(),
                    ),
                    _ => (
                        half::bf16::from_f32(v).to_le_bytes(),
                        half::bf16::from_f32(v).to_f64(),
                    ),
                })
                .fold((Vec::new(), Vec::new()), |(mut b, mut w), (x, y)| {
                    b.extend_from_slice(&x);
                    w.push(y);
                    (b, w)
                });
            let mut got = Stats::default();
            got.add(&bytes, dtype);
            assert_close(&got, &two_pass_reference(&wide), &format!("{dtype:?}"));
        }
        let ints: Vec<i64> = vec![-5, 0, i64::MAX, 7, 0];
        let bytes: Vec<u8> = ints.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut got = Stats::default();
        got.add(&bytes, Dtype::I64);
        let wide: Vec<f64> = ints.iter().map(|&v| v as f64).collect();
        assert_close(&got, &two_pass_reference(&wide), "i64");
    }
}
