//! Why a task or a run was cancelled.

use serde::{Deserialize, Serialize};

/// Why a task or a run was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CancelReason {
    /// The run was cancelled through its handle
    /// ([`RunHandle::cancel`](crate::RunHandle::cancel)).
    Handle,
    /// This task, or a task it is nested in, was cancelled through
    /// [`RunHandle::cancel_task`](crate::RunHandle::cancel_task).
    Task,
    /// The completion policy finished the run or cancelled this task.
    Policy,
    /// Another task failed and the run fails fast.
    FailFast,
    /// The task its run is nested in timed out.
    Timeout,
    /// The task its run is nested in ended or was cancelled.
    Parent,
    /// The run's stream was dropped before the run ended.
    StreamDropped,
    /// The task was cancelled through
    /// [`RunHandle::cancel_task`](crate::RunHandle::cancel_task) in an
    /// earlier run with the same run id, and its cancellation was saved
    /// (see [`RunConfig::resume_cancelled`](crate::RunConfig::resume_cancelled)).
    Earlier,
}

impl CancelReason {
    /// The reason, for people.
    pub(crate) fn message(self) -> &'static str {
        match self {
            CancelReason::Handle => "cancelled through the run handle",
            CancelReason::Task => "cancelled through the run handle's cancel_task",
            CancelReason::Policy => "cancelled by the completion policy",
            CancelReason::FailFast => "another task failed and the run fails fast",
            CancelReason::Timeout => "the enclosing task timed out",
            CancelReason::Parent => "the enclosing task ended",
            CancelReason::StreamDropped => "the run's stream was dropped",
            CancelReason::Earlier => "cancelled by the user in an earlier run",
        }
    }
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}
