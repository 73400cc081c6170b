//! Tasks: what a run runs, where they come from, and how they ended.

use std::fmt;
use std::sync::Arc;

use futures_core::Stream;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tributary_core::{Action, Graph, Inputs, RunOptions, State};

use crate::end::CancelReason;
use crate::error::TaskError;
use crate::item::{ItemKind, StreamItem};
use crate::path::TaskPath;

/// One task: a subgraph application to run, from an entrypoint to a halt
/// point, on a state, with inputs, under a key unique within its run.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_runtime::TaskSpec;
///
/// let double = action("double").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
///     let n: i64 = s.get_as("n")?;
///     Ok((json!({ "n": n * 2 }), s.set("n", n * 2)))
/// });
/// let spec = TaskSpec::action("task-1", double).state(State::new().set("n", 21));
/// assert_eq!(spec.key(), "task-1");
/// ```
#[derive(Clone)]
#[must_use]
pub struct TaskSpec {
    pub(crate) key: Arc<str>,
    pub(crate) graph: Graph,
    pub(crate) entrypoint: Option<String>,
    pub(crate) halt: RunOptions,
    pub(crate) state: State,
    pub(crate) app_id: Option<String>,
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("key", &self.key)
            .field("graph", &self.graph)
            .field("entrypoint", &self.entrypoint)
            .field("app_id", &self.app_id)
            .finish_non_exhaustive()
    }
}

impl TaskSpec {
    /// A task that runs `graph` from its entrypoint until the graph ends.
    pub fn new(key: impl Into<String>, graph: Graph) -> Self {
        TaskSpec {
            key: Arc::from(key.into()),
            graph,
            entrypoint: None,
            halt: RunOptions::new(),
            state: State::new(),
            app_id: None,
        }
    }

    /// A task of a single action. (To run one action in many tasks, build
    /// its graph once with [`Graph::single`] and use [`TaskSpec::new`].)
    pub fn action(key: impl Into<String>, action: impl Action) -> Self {
        Self::new(key, Graph::single(action))
    }

    /// The task's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The task's graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The initial state.
    pub fn state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// Start at `action` instead of the graph's entrypoint.
    pub fn entrypoint(mut self, action: impl Into<String>) -> Self {
        self.entrypoint = Some(action.into());
        self
    }

    /// End the task after any of `actions` (its `Final` item carries that
    /// action's result).
    pub fn halt_after<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.halt = self.halt.halt_after(actions);
        self
    }

    /// End the task before any of `actions`.
    pub fn halt_before<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.halt = self.halt.halt_before(actions);
        self
    }

    /// Inputs for every step of the task.
    pub fn inputs(mut self, inputs: Inputs) -> Self {
        self.halt = self.halt.inputs(inputs);
        self
    }

    /// Use this app id (otherwise the runtime derives a stable one from the
    /// run and the key).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// The app id, if one was set.
    pub fn get_app_id(&self) -> Option<&str> {
        self.app_id.as_deref()
    }
}

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

/// How a task ended, as a reducer sees it.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct TaskOutcome {
    /// The task's key.
    pub key: Arc<str>,
    /// The task's path from the root run.
    pub path: TaskPath,
    /// Its position in task order.
    pub index: u64,
    /// Its application's id.
    pub app_id: Arc<str>,
    /// How it ended.
    pub status: TaskStatus,
}

/// How a task ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TaskStatus {
    /// It reached its halt point.
    Completed {
        /// The halt action's result (`None` when it halted before an action).
        result: Option<Value>,
        /// Its final state.
        state: State,
    },
    /// It failed.
    Failed {
        /// Why.
        error: TaskError,
    },
    /// It was cancelled.
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
}

impl TaskOutcome {
    /// The final state of a completed task.
    pub fn state(&self) -> Option<&State> {
        match &self.status {
            TaskStatus::Completed { state, .. } => Some(state),
            _ => None,
        }
    }

    /// The halt action's result of a completed task.
    pub fn result(&self) -> Option<&Value> {
        match &self.status {
            TaskStatus::Completed { result, .. } => result.as_ref(),
            _ => None,
        }
    }

    /// Whether the task completed.
    pub fn is_completed(&self) -> bool {
        matches!(self.status, TaskStatus::Completed { .. })
    }

    /// The outcome a terminal item reports; `None` for other items.
    pub fn from_item(item: &StreamItem) -> Option<TaskOutcome> {
        let status = match item.kind {
            ItemKind::Final => TaskStatus::Completed {
                result: item.result.clone(),
                state: item.state_update.clone().unwrap_or_default(),
            },
            ItemKind::Failed => TaskStatus::Failed {
                error: item.error.clone().unwrap_or_else(|| {
                    TaskError::new(crate::TaskErrorKind::ActionFailed, "the task failed", None)
                }),
            },
            ItemKind::Cancelled => TaskStatus::Cancelled {
                reason: item.cancel_reason().unwrap_or(CancelReason::Parent),
            },
            ItemKind::Token | ItemKind::NodeComplete => return None,
        };
        Some(TaskOutcome {
            key: Arc::clone(&item.task_key),
            path: item.path.clone(),
            index: item.task_index,
            app_id: Arc::clone(&item.app_id),
            status,
        })
    }
}
