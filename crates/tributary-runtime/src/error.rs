//! Errors of the runtime.

use std::time::Duration;

/// A run's failure, surfaced by [`RunStream::finish`](crate::RunStream::finish)
/// under the fail-fast policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// A task failed and the failure policy is fail-fast.
    #[error("task `{task_key}` failed: {error}")]
    TaskFailed {
        /// The task.
        task_key: String,
        /// Why.
        error: String,
    },
    /// The run was cancelled through its handle.
    #[error("the run was cancelled")]
    Cancelled,
}

/// Why a task failed, as reported in its `Failed` item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The task ran out of time.
    #[error("task `{task_key}` timed out after {after:?}")]
    TimedOut {
        /// The task.
        task_key: String,
        /// Its timeout.
        after: Duration,
    },
    /// Another task of the run already has this key.
    #[error("task key `{0}` is used twice in one run")]
    DuplicateKey(String),
    /// The task could not be built (bad entrypoint or halt action, ...).
    #[error("task `{task_key}` could not start: {error}")]
    Build {
        /// The task.
        task_key: String,
        /// Why.
        error: String,
    },
    /// A step failed after its retries.
    #[error("{0}")]
    Step(String),
}

/// `add_task` on a run that has ended.
#[derive(Debug, thiserror::Error)]
#[error("the run has ended; task `{}` was not added", .0.key())]
pub struct AddTaskError(pub Box<crate::TaskSpec>);
