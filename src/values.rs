//! Reading tensor bytes as numbers, and walking many tensors on all cores.

use std::sync::atomic::{AtomicUsize, Ordering};

use half::{bf16, f16};

use crate::dtype::Dtype;

/// Calls `f` with each element of little-endian `bytes` as an f64.
pub fn for_each_value(bytes: &[u8], dtype: Dtype, mut f: impl FnMut(f64)) {
    macro_rules! each {
        ($n:literal, $conv:expr) => {
            for c in bytes.chunks_exact($n) {
                let a: [u8; $n] = c.try_into().unwrap_or([0; $n]);
                f($conv(a));
            }
        };
    }
    match dtype {
        Dtype::F16 => each!(2, |a| f16::from_le_bytes(a).to_f64()),
        Dtype::BF16 => each!(2, |a| bf16::from_le_bytes(a).to_f64()),
        Dtype::F32 => each!(4, |a| f32::from_le_bytes(a) as f64),
        Dtype::F64 => each!(8, f64::from_le_bytes),
        Dtype::I8 => each!(1, |a| i8::from_le_bytes(a) as f64),
        Dtype::U8 | Dtype::Bool => each!(1, |a: [u8; 1]| a[0] as f64),
        Dtype::I16 => each!(2, |a| i16::from_le_bytes(a) as f64),
        Dtype::U16 => each!(2, |a| u16::from_le_bytes(a) as f64),
        Dtype::I32 => each!(4, |a| i32::from_le_bytes(a) as f64),
        Dtype::U32 => each!(4, |a| u32::from_le_bytes(a) as f64),
        Dtype::I64 => each!(8, |a| i64::from_le_bytes(a) as f64),
        Dtype::U64 => each!(8, |a| u64::from_le_bytes(a) as f64),
    }
}

/// Runs `work(i)` for every `i` in `0..count` on up to `threads` threads,
/// each taking the next index when it is free, and returns the results in
/// index order.
pub fn parallel_map<T: Send>(count: usize, work: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(count.max(1));
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, T)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= count {
                            return done;
                        }
                        done.push((i, work(i)));
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_decode_each_dtype() {
        let mut seen = Vec::new();
        for_each_value(&(-2i16).to_le_bytes(), Dtype::I16, |v| seen.push(v));
        for_each_value(&f16::from_f32(1.5).to_le_bytes(), Dtype::F16, |v| {
            seen.push(v)
        });
        for_each_value(&[1u8], Dtype::Bool, |v| seen.push(v));
        assert_eq!(seen, [-2.0, 1.5, 1.0]);
    }

    #[test]
    fn parallel_results_keep_their_order() {
        let squares = parallel_map(100, |i| i * i);
        assert_eq!(squares, (0..100).map(|i| i * i).collect::<Vec<_>>());
        assert!(parallel_map(0, |i| i).is_empty());
    }
}
