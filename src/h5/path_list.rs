//! A list of paths kept end to end in one buffer.
//!
//! The link walk lists every dataset of a file for the accounting step: for
//! a model of 100,000 layers that is 200,000 paths, which as `String`s took
//! 14 MB in 200,000 allocations, made on the walk's own thread and so
//! freed where nothing later could use the space again. Here they take two
//! allocations and about a third of the memory.

use std::ops::Range;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PathList {
    text: String,
    /// Where each path lies in `text`, in list order. The walk lists a
    /// group's datasets in file order and then puts them in name order:
    /// it moves these spans, never the text (at the root, that would copy
    /// every path in the file).
    spans: Vec<(usize, usize)>,
}

/// A list's length, to go back to with [`PathList::truncate_to`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    paths: usize,
    text: usize,
}

impl PathList {
    pub const fn new() -> PathList {
        PathList {
            text: String::new(),
            spans: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    /// Adds `parent/name`.
    pub fn push_joined(&mut self, parent: &str, name: &str) {
        let start = self.text.len();
        self.text.push_str(parent);
        self.text.push('/');
        self.text.push_str(name);
        self.spans.push((start, self.text.len()));
    }

    pub fn push(&mut self, path: &str) {
        let start = self.text.len();
        self.text.push_str(path);
        self.spans.push((start, self.text.len()));
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        let &(start, end) = self.spans.get(index)?;
        self.text.get(start..end)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Where the list ends now.
    pub fn mark(&self) -> Mark {
        Mark {
            paths: self.spans.len(),
            text: self.text.len(),
        }
    }

    /// Drops every path added since `mark` was taken.
    pub fn truncate_to(&mut self, mark: Mark) {
        self.spans.truncate(mark.paths);
        self.text.truncate(mark.text);
    }

    /// Puts the paths from `from` on in a new order: the ranges of `order`
    /// (counted from `from`) one after another. Paths in no range are dropped.
    pub fn reorder_tail(&mut self, from: usize, order: impl IntoIterator<Item = Range<usize>>) {
        let tail: Vec<(usize, usize)> = self.spans.drain(from.min(self.spans.len())..).collect();
        for range in order {
            if let Some(spans) = tail.get(range) {
                self.spans.extend_from_slice(spans);
            }
        }
    }

    #[cfg(test)]
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl<S: AsRef<str>> FromIterator<S> for PathList {
    fn from_iter<I: IntoIterator<Item = S>>(paths: I) -> PathList {
        let mut list = PathList::default();
        for path in paths {
            list.push(path.as_ref());
        }
        list
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_come_back_as_they_went_in() {
        let mut list = PathList::default();
        list.push_joined("/a", "b:0");
        list.push("");
        list.push_joined("", "c");
        list.push("/d/é");
        assert_eq!(list.to_vec(), ["/a/b:0", "", "/c", "/d/é"]);
        assert_eq!(list.iter().len(), 4);
        assert_eq!(list.get(4), None);

        let mark = list.mark();
        list.push("/e");
        list.push_joined("/f", "g");
        list.push("/h");
        list.reorder_tail(mark.paths, [2..3, 0..1]);
        assert_eq!(list.to_vec(), ["/a/b:0", "", "/c", "/d/é", "/h", "/e"]);
        list.reorder_tail(9, std::iter::once(0..1));
        assert_eq!(list.len(), 6, "a tail past the end is empty");
        list.truncate_to(mark);
        assert_eq!(list.to_vec(), ["/a/b:0", "", "/c", "/d/é"]);
        list.push("/i");
        list.reorder_tail(1, [3..4, 0..1, 1..3]);
        assert_eq!(list.to_vec(), ["/a/b:0", "/i", "", "/c", "/d/é"]);
        assert_eq!(["x", "y"].iter().collect::<PathList>().to_vec(), ["x", "y"]);
    }
}
