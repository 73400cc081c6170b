//! What a run streams: one [`StreamItem`] per token, per completed node and
//! per task end.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tributary_core::State;

use crate::error::TaskError;
use crate::path::TaskPath;
use crate::reason::CancelReason;

/// What a [`StreamItem`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// An intermediate output of an action (`ctx.emit`).
    Token,
    /// A node (action) of the subgraph completed; not its halt node.
    NodeComplete,
    /// The task's halt node completed: the task succeeded.
    Final,
    /// The task failed (after its retries).
    Failed,
    /// The task was cancelled (by the handle, a policy, a timeout... ).
    Cancelled,
}

impl ItemKind {
    /// Whether this kind ends its task (`Final`, `Failed`, `Cancelled`).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            ItemKind::Final | ItemKind::Failed | ItemKind::Cancelled
        )
    }
}

/// One thing a task produced, as the consumer of a run sees it.
///
/// Serializable, so it can cross a process boundary. `seq` counts the
/// task's items from 0; items of one task always arrive in `seq` order.
///
/// Items of tasks nested in a task (the children of a parallel action, to
/// any depth) reach the consumer as ordinary items: their `path` says where
/// they come from (`["t3", "0"]` for child `"0"` of task `"t3"`), their
/// `task_key`, `task_index`, `seq` and `app_id` are the child's own. A
/// task's terminal item comes after every task nested in it has stopped; a
/// task's `Cancelled` item stands for its subtree (the nested tasks
/// cancelled with it report nothing of their own).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct StreamItem {
    /// The task's key (unique within its run).
    pub task_key: Arc<str>,
    /// The task keys from the root run to the task (the last is `task_key`).
    pub path: TaskPath,
    /// The task's position in task order, from 0.
    pub task_index: u64,
    /// The subgraph application's id.
    pub app_id: Arc<str>,
    /// The action that produced the item (`None` for a task cancelled or
    /// failed before its first action).
    pub action: Option<Arc<str>>,
    /// The item's number within its task, from 0.
    pub seq: u64,
    /// What the item reports.
    pub kind: ItemKind,
    /// The token (`Token`), the node's result (`NodeComplete`, `Final`).
    pub result: Option<Value>,
    /// The state after the node (`NodeComplete`, `Final`).
    pub state_update: Option<State>,
    /// Why the task failed or was cancelled (`Failed`, `Cancelled`).
    pub error: Option<TaskError>,
}

impl StreamItem {
    /// Whether the item ends its task.
    pub fn is_terminal(&self) -> bool {
        self.kind.is_terminal()
    }

    /// Why the task was cancelled (`Cancelled` items).
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.error.as_ref().and_then(TaskError::cancel_reason)
    }

    /// Whether the item comes from a task nested in a top-level task of
    /// the run (a child of a parallel action).
    pub fn is_nested(&self) -> bool {
        self.path.len() > 1
    }
}
