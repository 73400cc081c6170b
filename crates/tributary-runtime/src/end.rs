//! How tasks and runs end: the reasons and ends a program decides on, as
//! enums that serialise.
//!
//! A run ends once. Whichever path gets there first (the handle's
//! `cancel`, a failure under fail-fast, the completion policy, the stream
//! being dropped, the last task ending) sets the run's [`RunEnd`]; every
//! later attempt leaves it as it is. The stream and every handle read the
//! same value ([`RunStream::end`](crate::RunStream::end),
//! [`RunHandle::end`](crate::RunHandle::end)).
//!
//! # Examples
//!
//! ```
//! # #[tokio::main]
//! # async fn main() {
//! use serde_json::json;
//! use tributary_core::{action, State};
//! use tributary_runtime::{CancelReason, RunConfig, RunEnd, Runtime, TaskSpec};
//!
//! let forever = TaskSpec::action("forever", action("wait").run(|s: State, _, _| async move {
//!     std::future::pending::<()>().await;
//!     Ok((json!({}), s))
//! }));
//! let (handle, stream) = Runtime::new().run(vec![forever], RunConfig::new());
//! handle.progress().wait_for(|p| p.running == 1).await.unwrap();
//! handle.cancel().await;
//! assert_eq!(handle.end(), Some(RunEnd::Cancelled { reason: CancelReason::Handle }));
//! let _ = stream.finish().await; // the stream reads the same end
//! # }
//! ```

use serde::{Deserialize, Serialize};

use crate::error::TaskError;
use crate::path::TaskPath;

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
}

impl std::fmt::Display for CancelReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CancelReason::Handle => "cancelled through the run handle",
            CancelReason::Task => "cancelled through the run handle's cancel_task",
            CancelReason::Policy => "cancelled by the completion policy",
            CancelReason::FailFast => "another task failed and the run fails fast",
            CancelReason::Timeout => "the enclosing task timed out",
            CancelReason::Parent => "the enclosing task ended",
            CancelReason::StreamDropped => "the run's stream was dropped",
        })
    }
}

/// How a run ended. Set once, by whichever path ends the run first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEnd {
    /// Every task ended, or the completion policy finished the run.
    Completed {
        /// Whether the completion policy finished the run (quick exit,
        /// first-N, ...) rather than every task running to its end.
        by_policy: bool,
    },
    /// The run was cancelled.
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
    /// A task failed under the fail-fast policy.
    Failed {
        /// The task, by its path from the root run.
        task: TaskPath,
        /// Why it failed.
        error: TaskError,
    },
}

impl RunEnd {
    /// Whether the run completed (every task ended or the policy finished it).
    pub fn is_completed(&self) -> bool {
        matches!(self, RunEnd::Completed { .. })
    }

    /// The run's error: `None` when it completed.
    pub fn error(&self) -> Option<crate::RunError> {
        match self {
            RunEnd::Completed { .. } => None,
            RunEnd::Cancelled { reason } => Some(crate::RunError::Cancelled(*reason)),
            RunEnd::Failed { task, error } => Some(crate::RunError::TaskFailed {
                task_key: task.key().unwrap_or_default().to_owned(),
                path: task.clone(),
                error: error.clone(),
            }),
        }
    }
}
