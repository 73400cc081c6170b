//! Errors of the runtime.

use serde::{Deserialize, Serialize};
use tributary_core::{ActionError, ApplicationError, BuildError};

use crate::path::TaskPath;
use crate::reason::CancelReason;

/// A run's failure, from [`RunStream::finish`](crate::RunStream::finish),
/// [`RunHandle::error`](crate::RunHandle::error) and
/// [`RunEnd::error`](crate::RunEnd::error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A task failed and the failure policy is fail-fast.
    #[error("task `{path}` failed: {error}")]
    TaskFailed {
        /// The task's key.
        task_key: String,
        /// The task's path from the root run.
        path: TaskPath,
        /// Why.
        error: TaskError,
    },
    /// The run was cancelled.
    #[error("the run was cancelled: {0}")]
    Cancelled(CancelReason),
}

/// What kind of failure a [`TaskError`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TaskErrorKind {
    /// An action returned an error.
    ActionFailed,
    /// An action or a hook panicked.
    Panicked,
    /// The task ran out of time.
    TimedOut,
    /// The task or a step broke a rule: an undeclared or missing write, a
    /// missing input, a bad entrypoint or halt action, a task key used twice.
    Validation,
    /// Loading or saving a checkpoint failed.
    Persistence,
    /// The task names a graph nothing can run: its run has no task
    /// executor, or no worker registered a graph of that name.
    UnknownGraph,
    /// The task's executor lost it: the broker failed, or the worker running
    /// it stopped answering.
    Executor,
    /// The task was cancelled.
    Cancelled(CancelReason),
}

/// Why a task failed or was cancelled, as its `Failed` or `Cancelled` item
/// reports it. Serialisable, so it crosses a process boundary.
///
/// # Examples
///
/// ```
/// use tributary_runtime::{TaskError, TaskErrorKind};
///
/// let e = TaskError::new(TaskErrorKind::ActionFailed, "action `fetch` failed: 429", Some("fetch"));
/// assert_eq!(e.to_string(), "action `fetch` failed: 429");
/// let back: TaskError = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
/// assert_eq!(back, e);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
#[non_exhaustive]
pub struct TaskError {
    /// What kind of failure.
    pub kind: TaskErrorKind,
    /// What happened, for people.
    pub message: String,
    /// The action it happened in, when there was one.
    pub action: Option<String>,
}

impl TaskError {
    /// A task error of `kind`.
    pub fn new(kind: TaskErrorKind, message: impl Into<String>, action: Option<&str>) -> Self {
        TaskError {
            kind,
            message: message.into(),
            action: action.map(str::to_owned),
        }
    }

    /// The error of a task cancelled for `reason`.
    pub fn cancelled(reason: CancelReason) -> Self {
        // The message is a fixed text: copied, not formatted.
        TaskError::new(TaskErrorKind::Cancelled(reason), reason.message(), None)
    }

    /// Why the task was cancelled, when it was.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        match self.kind {
            TaskErrorKind::Cancelled(reason) => Some(reason),
            _ => None,
        }
    }

    pub(crate) fn timed_out(task: &str, after: std::time::Duration) -> Self {
        TaskError::new(
            TaskErrorKind::TimedOut,
            format!("task `{task}` timed out after {after:?}"),
            None,
        )
    }

    pub(crate) fn duplicate_key(task: &str) -> Self {
        TaskError::new(
            TaskErrorKind::Validation,
            format!("task key `{task}` is used twice in one run"),
            None,
        )
    }

    pub(crate) fn hook(panic: &tributary_core::HookPanic) -> Self {
        TaskError::new(TaskErrorKind::Panicked, panic.to_string(), None)
    }

    pub(crate) fn panicked(what: &str, payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        TaskError::new(
            TaskErrorKind::Panicked,
            format!("{what} panicked: {message}"),
            None,
        )
    }

    pub(crate) fn build(task: &str, error: &BuildError, action: Option<&str>) -> Self {
        let kind = match error {
            BuildError::Persist(_) => TaskErrorKind::Persistence,
            BuildError::Hook(_) => TaskErrorKind::Panicked,
            _ => TaskErrorKind::Validation,
        };
        TaskError::new(
            kind,
            format!("task `{task}` could not start: {error}"),
            action,
        )
    }

    pub(crate) fn bad_halt(task: &str, unknown: &str) -> Self {
        TaskError::new(
            TaskErrorKind::Validation,
            format!("task `{task}` could not start: halt list names unknown action `{unknown}`"),
            None,
        )
    }

    /// The error of a failed step.
    pub(crate) fn from_application(error: &ApplicationError, action: Option<&str>) -> Self {
        let kind = match error {
            ApplicationError::Step { source, .. } => match source {
                ActionError::Failed { .. } => TaskErrorKind::ActionFailed,
                ActionError::Panicked { .. } | ActionError::HookPanicked { .. } => {
                    TaskErrorKind::Panicked
                }
                _ => TaskErrorKind::Validation,
            },
            ApplicationError::Persist { .. } => TaskErrorKind::Persistence,
            ApplicationError::UnknownHaltAction(_) => TaskErrorKind::Validation,
            ApplicationError::Hook(_) => TaskErrorKind::Panicked,
            _ => TaskErrorKind::ActionFailed,
        };
        let action = match error {
            ApplicationError::Step { source, .. } => Some(source.action()),
            ApplicationError::Persist { action, .. } => Some(action.as_str()),
            _ => action,
        };
        TaskError::new(kind, error.to_string(), action)
    }
}

/// `add_task` on a run that has ended, or with a key already used in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AddTaskError {
    /// The run has ended; the task is given back.
    #[error("the run has ended; task `{}` was not added", .0.key())]
    Ended(Box<crate::spec::TaskSpec>),
    /// Another task of the run already has this key; the task is given back.
    #[error("task key `{}` is used twice in one run", .0.key())]
    DuplicateKey(Box<crate::spec::TaskSpec>),
}

impl AddTaskError {
    /// The task that was not added.
    pub fn into_task(self) -> crate::spec::TaskSpec {
        match self {
            AddTaskError::Ended(t) | AddTaskError::DuplicateKey(t) => *t,
        }
    }
}

/// A per-task command named no task of the run's tree that has not ended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no live task has path `{0}`")]
pub struct UnknownTask(pub TaskPath);
