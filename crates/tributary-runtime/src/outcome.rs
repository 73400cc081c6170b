//! How a task ended, as a reducer sees it.

use std::sync::Arc;

use serde_json::Value;
use tributary_core::State;

use crate::error::{TaskError, TaskErrorKind};
use crate::item::{ItemKind, StreamItem};
use crate::path::TaskPath;
use crate::reason::CancelReason;

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
                    TaskError::new(TaskErrorKind::ActionFailed, "the task failed", None)
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
