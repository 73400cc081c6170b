//! Task paths: where a task sits in the task tree.
//!
//! A task's path is the task keys from the run's root to the task: a
//! top-level task `"t3"` has the path `["t3"]`; the child `"0"` that a
//! parallel action of `"t3"` runs has `["t3", "0"]`. Every
//! [`StreamItem`](crate::StreamItem) carries the path of the task that
//! produced it, and [`RunHandle`](crate::RunHandle) addresses any task of
//! the tree by its path (or, for a top-level task, by its key).
//!
//! # Examples
//!
//! ```
//! use tributary_runtime::TaskPath;
//!
//! let path = TaskPath::from(["t3", "0"]);
//! assert_eq!(path.key(), Some("0"));
//! assert_eq!(path.len(), 2);
//! assert_eq!(path.parent(), Some(TaskPath::from(["t3"])));
//! assert_eq!(path.to_string(), "t3/0");
//! ```

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// The task keys from the run's root to a task.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TaskPath(Arc<[Arc<str>]>);

impl TaskPath {
    /// The empty path (the root run itself).
    pub fn root() -> Self {
        Self::default()
    }

    /// The keys, from the root down.
    pub fn keys(&self) -> &[Arc<str>] {
        &self.0
    }

    /// The task's own key (the last one); `None` for the empty path.
    pub fn key(&self) -> Option<&str> {
        self.0.last().map(|k| &**k)
    }

    /// How many keys the path has (1 for a top-level task).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The path of the task this one is nested in.
    pub fn parent(&self) -> Option<TaskPath> {
        match self.0.len() {
            0 => None,
            n => Some(TaskPath(self.0[..n - 1].into())),
        }
    }

    /// The path of this task's child `key`.
    pub fn child(&self, key: Arc<str>) -> TaskPath {
        let mut keys = Vec::with_capacity(self.0.len() + 1);
        keys.extend(self.0.iter().cloned());
        keys.push(key);
        TaskPath(keys.into())
    }

    /// Whether `self` is `other` or a task nested in it.
    pub fn starts_with(&self, other: &TaskPath) -> bool {
        self.0.starts_with(&other.0)
    }
}

impl fmt::Debug for TaskPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter()).finish()
    }
}

/// The keys joined by `/`.
impl fmt::Display for TaskPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(key)?;
        }
        Ok(())
    }
}

impl<S: AsRef<str>> FromIterator<S> for TaskPath {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        TaskPath(iter.into_iter().map(|k| Arc::from(k.as_ref())).collect())
    }
}

impl<S: AsRef<str>, const N: usize> From<[S; N]> for TaskPath {
    fn from(keys: [S; N]) -> Self {
        keys.into_iter().collect()
    }
}

impl<S: AsRef<str>> From<&[S]> for TaskPath {
    fn from(keys: &[S]) -> Self {
        keys.iter().collect()
    }
}

impl<S: AsRef<str>> From<Vec<S>> for TaskPath {
    fn from(keys: Vec<S>) -> Self {
        keys.into_iter().collect()
    }
}

/// A top-level task's path: its key.
impl From<&str> for TaskPath {
    fn from(key: &str) -> Self {
        TaskPath(Arc::new([Arc::from(key)]))
    }
}

/// A top-level task's path: its key.
impl From<&String> for TaskPath {
    fn from(key: &String) -> Self {
        TaskPath::from(key.as_str())
    }
}

/// A top-level task's path: its key.
impl From<String> for TaskPath {
    fn from(key: String) -> Self {
        TaskPath(Arc::new([Arc::from(key)]))
    }
}

impl From<&TaskPath> for TaskPath {
    fn from(path: &TaskPath) -> Self {
        path.clone()
    }
}
