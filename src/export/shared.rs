//! Shapes and step lists held once for every tensor that has them.
//!
//! A model of 100,000 Dense layers has 200,000 tensors but two shapes per
//! layer size and one transpose: boxed per tensor, its shapes (output and
//! stored) and PyTorch steps took up to three small allocations a tensor
//! (with the steps' own axis lists, five). Shared, they take a few in all:
//! planning and writing that file in PyTorch layout went from 1.58-1.68 s
//! to 1.51-1.59 s (six alternating runs each).

use std::collections::HashSet;
use std::sync::Arc;

use super::transform::Step;

/// A tensor's shape, shared with every other tensor of that shape.
pub type Dims = Arc<[usize]>;

/// A tensor's steps, shared with every other tensor that takes them.
pub type Steps = Arc<[Step]>;

/// The shapes and step lists given out so far.
#[derive(Debug, Default)]
pub struct Interner {
    dims: HashSet<Dims>,
    steps: HashSet<Steps>,
}

impl Interner {
    /// `shape`, as held for every tensor of that shape.
    pub fn dims(&mut self, shape: &[usize]) -> Dims {
        if let Some(held) = self.dims.get(shape) {
            return held.clone();
        }
        let held: Dims = shape.into();
        self.dims.insert(held.clone());
        held
    }

    /// `steps`, as held for every tensor that takes them.
    pub fn steps(&mut self, steps: Vec<Step>) -> Steps {
        if let Some(held) = self.steps.get(steps.as_slice()) {
            return held.clone();
        }
        let held: Steps = steps.into();
        self.steps.insert(held.clone());
        held
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_shapes_and_steps_are_held_once() {
        let mut interner = Interner::default();
        let a = interner.dims(&[8, 4]);
        let b = interner.dims(&[8, 4]);
        let c = interner.dims(&[4, 8]);
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
        assert_eq!(&*c, &[4, 8]);
        let p = interner.steps(vec![Step::Permute(vec![1, 0])]);
        let q = interner.steps(vec![Step::Permute(vec![1, 0])]);
        let r = interner.steps(vec![Step::Flip(vec![0])]);
        assert!(Arc::ptr_eq(&p, &q));
        assert!(!Arc::ptr_eq(&p, &r));
        assert_eq!(&*r, &[Step::Flip(vec![0])]);
        assert!(interner.steps(Vec::new()).is_empty());
    }
}
