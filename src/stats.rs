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

impl Stats {
    /// Adds a chunk of little-endian values. Chunks are merged with Chan's
    /// formula, so the mean and spread stay exact over billions of values.
    pub fn add(&mut self, bytes: &[u8], dtype: Dtype) {
        let (mut n, mut sum) = (0u64, 0.0f64);
        let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
        for_each_value(bytes, dtype, |v| {
            if v.is_nan() {
                self.nan += 1;
            } else if v.is_infinite() {
                self.inf += 1;
            } else {
                if v == 0.0 {
                    self.zero += 1;
                }
                n += 1;
                sum += v;
                lo = lo.min(v);
                hi = hi.max(v);
            }
        });
        if n == 0 {
            return;
        }
        let chunk_mean = sum / n as f64;
        let mut chunk_m2 = 0.0;
        for_each_value(bytes, dtype, |v| {
            if v.is_finite() {
                chunk_m2 += (v - chunk_mean) * (v - chunk_mean);
            }
        });
        let total = self.count + n;
        let mean = self.mean.unwrap_or(0.0);
        let delta = chunk_mean - mean;
        self.m2 += chunk_m2 + delta * delta * (self.count as f64) * (n as f64) / total as f64;
        self.mean = Some(mean + delta * n as f64 / total as f64);
        self.count = total;
        self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        self.std = Some((self.m2 / total as f64).sqrt());
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
}
