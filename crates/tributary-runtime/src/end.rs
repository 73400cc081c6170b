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
use crate::reason::CancelReason;

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
    pub fn error(&self) -> Option<crate::error::RunError> {
        match self {
            RunEnd::Completed { .. } => None,
            RunEnd::Cancelled { reason } => Some(crate::error::RunError::Cancelled(*reason)),
            RunEnd::Failed { task, error } => Some(crate::error::RunError::TaskFailed {
                task_key: task.key().unwrap_or_default().to_owned(),
                path: task.clone(),
                error: error.clone(),
            }),
        }
    }
}
