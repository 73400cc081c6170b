//! Where a run's tasks come from, pulled lazily.

use std::fmt;

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::spec::TaskSpec;

/// Where a run's tasks come from. Pulled lazily: the next task is taken
/// only when it can start, so a million tasks never sit in memory at once.
pub struct TaskSource {
    inner: Inner,
}

enum Inner {
    Iter(Box<dyn Iterator<Item = TaskSpec> + Send>),
    Stream(BoxStream<'static, TaskSpec>),
}

impl fmt::Debug for TaskSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self.inner {
            Inner::Iter(_) => "TaskSource::Iter",
            Inner::Stream(_) => "TaskSource::Stream",
        })
    }
}

impl TaskSource {
    /// Tasks from a synchronous iterator.
    pub fn iter<I>(tasks: I) -> Self
    where
        I: IntoIterator<Item = TaskSpec>,
        I::IntoIter: Send + 'static,
    {
        TaskSource {
            inner: Inner::Iter(Box::new(tasks.into_iter())),
        }
    }

    /// Tasks from an async stream.
    pub fn stream<S>(tasks: S) -> Self
    where
        S: Stream<Item = TaskSpec> + Send + 'static,
    {
        TaskSource {
            inner: Inner::Stream(tasks.boxed()),
        }
    }

    /// No tasks: the run ends at once unless a task is added before its
    /// supervisor sees the source is empty. To feed a run only through
    /// `add_task`, give it a stream source that stays open (for example over
    /// a channel) and close that when no more tasks will come.
    pub fn empty() -> Self {
        Self::iter(std::iter::empty())
    }

    /// Apply `f` to every task as it is taken.
    pub(crate) fn map<F>(self, f: F) -> TaskSource
    where
        F: FnMut(TaskSpec) -> TaskSpec + Send + 'static,
    {
        let inner = match self.inner {
            Inner::Iter(it) => Inner::Iter(Box::new(it.map(f))),
            Inner::Stream(s) => Inner::Stream(s.map(f).boxed()),
        };
        TaskSource { inner }
    }

    /// The next task.
    pub(crate) async fn next(&mut self) -> Option<TaskSpec> {
        match &mut self.inner {
            Inner::Iter(it) => it.next(),
            Inner::Stream(s) => s.next().await,
        }
    }

    /// How many tasks the source holds, when it knows exactly (an iterator
    /// whose `size_hint` has equal bounds, as every `ExactSizeIterator`).
    pub fn size_hint(&self) -> Option<u64> {
        match &self.inner {
            Inner::Iter(it) => match it.size_hint() {
                (lower, Some(upper)) if lower == upper => u64::try_from(lower).ok(),
                _ => None,
            },
            Inner::Stream(s) => match s.size_hint() {
                (lower, Some(upper)) if lower == upper => u64::try_from(lower).ok(),
                _ => None,
            },
        }
    }

    /// The next task if it is ready without waiting; `Err(())` when the
    /// source must be awaited.
    pub(crate) fn try_next(&mut self) -> Result<Option<TaskSpec>, ()> {
        match &mut self.inner {
            Inner::Iter(it) => Ok(it.next()),
            Inner::Stream(_) => Err(()),
        }
    }
}

impl From<Vec<TaskSpec>> for TaskSource {
    fn from(tasks: Vec<TaskSpec>) -> Self {
        TaskSource::iter(tasks)
    }
}
