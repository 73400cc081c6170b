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
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "Vec<Arc<str>>", into = "Vec<Arc<str>>")]
pub struct TaskPath(Keys);

/// A top-level task's path is its key: no allocation of its own (every
/// task has a path).
#[derive(Clone)]
enum Keys {
    One(Arc<str>),
    Many(Arc<[Arc<str>]>),
}

impl Default for TaskPath {
    fn default() -> Self {
        TaskPath(Keys::Many(Arc::new([])))
    }
}

impl PartialEq for TaskPath {
    fn eq(&self, other: &Self) -> bool {
        self.keys() == other.keys()
    }
}

impl Eq for TaskPath {}

impl std::hash::Hash for TaskPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.keys().hash(state);
    }
}

impl PartialOrd for TaskPath {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaskPath {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.keys().cmp(other.keys())
    }
}

impl From<Vec<Arc<str>>> for TaskPath {
    fn from(keys: Vec<Arc<str>>) -> Self {
        TaskPath::from_keys(keys)
    }
}

impl From<TaskPath> for Vec<Arc<str>> {
    fn from(path: TaskPath) -> Self {
        path.keys().to_vec()
    }
}

impl TaskPath {
    fn from_keys(mut keys: Vec<Arc<str>>) -> Self {
        if keys.len() == 1 {
            TaskPath(Keys::One(keys.pop().expect("one key")))
        } else {
            TaskPath(Keys::Many(keys.into()))
        }
    }

    /// The empty path (the root run itself).
    pub fn root() -> Self {
        Self::default()
    }

    /// The keys, from the root down.
    pub fn keys(&self) -> &[Arc<str>] {
        match &self.0 {
            Keys::One(key) => std::slice::from_ref(key),
            Keys::Many(keys) => keys,
        }
    }

    /// The task's own key (the last one); `None` for the empty path.
    pub fn key(&self) -> Option<&str> {
        self.keys().last().map(|k| &**k)
    }

    /// How many keys the path has (1 for a top-level task).
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    /// Whether the path is empty.
    pub fn is_empty(&self) -> bool {
        self.keys().is_empty()
    }

    /// The path of the task this one is nested in.
    pub fn parent(&self) -> Option<TaskPath> {
        match self.len() {
            0 => None,
            n => Some(TaskPath::from_keys(self.keys()[..n - 1].to_vec())),
        }
    }

    /// The path of this task's child `key`.
    pub fn child(&self, key: Arc<str>) -> TaskPath {
        if self.is_empty() {
            return TaskPath(Keys::One(key));
        }
        let mut keys = Vec::with_capacity(self.len() + 1);
        keys.extend(self.keys().iter().cloned());
        keys.push(key);
        TaskPath(Keys::Many(keys.into()))
    }

    /// Whether `self` is `other` or a task nested in it.
    pub fn starts_with(&self, other: &TaskPath) -> bool {
        self.keys().starts_with(other.keys())
    }
}

impl fmt::Debug for TaskPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys().iter()).finish()
    }
}

/// The keys joined by `/`.
impl fmt::Display for TaskPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, key) in self.keys().iter().enumerate() {
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
        TaskPath::from_keys(iter.into_iter().map(|k| Arc::from(k.as_ref())).collect())
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

impl From<Vec<String>> for TaskPath {
    fn from(keys: Vec<String>) -> Self {
        keys.into_iter().collect()
    }
}

impl From<Vec<&str>> for TaskPath {
    fn from(keys: Vec<&str>) -> Self {
        keys.into_iter().collect()
    }
}

/// A top-level task's path: its key.
impl From<&str> for TaskPath {
    fn from(key: &str) -> Self {
        TaskPath(Keys::One(Arc::from(key)))
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
        TaskPath(Keys::One(Arc::from(key)))
    }
}

impl From<&TaskPath> for TaskPath {
    fn from(path: &TaskPath) -> Self {
        path.clone()
    }
}
