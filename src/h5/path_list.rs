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
    /// Where each path ends in `text`.
    ends: Vec<usize>,
}

impl PathList {
    pub const fn new() -> PathList {
        PathList {
            text: String::new(),
            ends: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Adds `parent/name`.
    pub fn push_joined(&mut self, parent: &str, name: &str) {
        self.text.push_str(parent);
        self.text.push('/');
        self.text.push_str(name);
        self.ends.push(self.text.len());
    }

    pub fn push(&mut self, path: &str) {
        self.text.push_str(path);
        self.ends.push(self.text.len());
    }

    pub fn get(&self, index: usize) -> Option<&str> {
        let end = *self.ends.get(index)?;
        let start = match index {
            0 => 0,
            i => self.ends[i - 1],
        };
        Some(&self.text[start..end])
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(|i| self.get(i).unwrap_or_default())
    }

    /// Keeps the first `len` paths.
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.ends.truncate(len);
            let end = if self.is_empty() {
                0
            } else {
                self.ends[len - 1]
            };
            self.text.truncate(end);
        }
    }

    /// Takes the paths from `at` on into a list of their own.
    pub fn split_off(&mut self, at: usize) -> PathList {
        if at >= self.len() {
            return PathList::default();
        }
        let start = match at {
            0 => 0,
            i => self.ends[i - 1],
        };
        let text = self.text.split_off(start);
        let ends = self.ends.split_off(at).iter().map(|e| e - start).collect();
        PathList { text, ends }
    }

    /// Adds the paths `range` of `other`, in order.
    pub fn extend_from(&mut self, other: &PathList, range: Range<usize>) {
        for i in range {
            if let Some(path) = other.get(i) {
                self.push(path);
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

        let mut tail_of = list.clone();
        let tail = tail_of.split_off(1);
        assert_eq!(tail_of.to_vec(), ["/a/b:0"]);
        assert_eq!(tail.to_vec(), ["", "/c", "/d/é"]);
        assert!(tail_of.split_off(5).is_empty());

        let mut joined = tail_of.clone();
        joined.extend_from(&tail, 1..3);
        assert_eq!(joined.to_vec(), ["/a/b:0", "/c", "/d/é"]);
        joined.truncate(2);
        assert_eq!(joined.to_vec(), ["/a/b:0", "/c"]);
        joined.push("/e");
        assert_eq!(joined.to_vec(), ["/a/b:0", "/c", "/e"]);
        assert_eq!(["x", "y"].iter().collect::<PathList>().to_vec(), ["x", "y"]);
    }
}
