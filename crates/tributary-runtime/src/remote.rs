//! Tasks run elsewhere: the seam a cluster executor plugs into.
//!
//! A task made with [`TaskSpec::named`](crate::TaskSpec::named) names its
//! graph instead of carrying it. A run whose [`RunConfig`] has a
//! [`TaskExecutor`] hands such tasks to it: the executor runs the task
//! wherever it likes (another process, another machine) and reports its
//! items through the [`RemoteLane`] it is given. Everything else stays in
//! the caller's process, exactly as for local tasks: the supervisor's
//! window of tasks alive at once, the merger, the completion and failure
//! policies, pause, cancel, timeouts and progress.
//!
//! [`RunConfig`]: crate::RunConfig

use std::fmt;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde_json::Value;
use tributary_core::{RunOptions, State};

use crate::error::TaskError;
use crate::item::ItemKind;
use crate::mailbox::lane::{Lane, Report, Stopped};
use crate::path::TaskPath;
use crate::reason::CancelReason;

/// Runs named tasks on behalf of a run.
///
/// A task made with [`TaskSpec::named`](crate::TaskSpec::named) names its
/// graph instead of carrying it; a run whose config has an executor hands
/// such tasks to it, and everything else (the window of tasks in flight,
/// the merger, the policies, pause, cancel, timeouts, progress) stays in
/// the caller's process as for local tasks. The cluster executor
/// (`tributary-cluster`) is one.
///
/// The future `execute` returns must end with the task's [`RemoteEnd`]. It
/// may be dropped before it ends (the task timed out, or the run went away):
/// an executor that started work elsewhere must then stop that work itself.
pub trait TaskExecutor: Send + Sync + 'static {
    /// Run `task`, reporting its intermediate items through `lane`.
    fn execute(&self, task: RemoteTask, lane: RemoteLane) -> BoxFuture<'static, RemoteEnd>;
}

impl fmt::Debug for dyn TaskExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TaskExecutor")
    }
}

/// What an executor needs to run a named task: data only.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RemoteTask {
    /// The run's id (shared by every task of the run).
    pub run_id: Arc<str>,
    /// The task's position in task order.
    pub index: u64,
    /// The task's key.
    pub key: Arc<str>,
    /// Where the task sits in the run's tree.
    pub path: TaskPath,
    /// The app id its checkpoints are saved under.
    pub app_id: Arc<str>,
    /// The graph's name.
    pub graph: Arc<str>,
    /// The initial state.
    pub state: State,
    /// The action to start at, when not the graph's entrypoint.
    pub entrypoint: Option<String>,
    /// Where the task halts, and its inputs.
    pub halt: RunOptions,
    /// Whether the run streams tokens.
    pub tokens: bool,
    /// Whether the run streams node items.
    pub nodes: bool,
}

/// How a task run by an executor ended.
#[derive(Debug, Clone)]
pub enum RemoteEnd {
    /// It reached its halt point.
    Final {
        /// The action whose result ends it.
        action: Option<Arc<str>>,
        /// That action's result.
        result: Option<Value>,
        /// The final state.
        state: State,
    },
    /// It failed.
    Failed {
        /// The action that failed.
        action: Option<Arc<str>>,
        /// Why.
        error: TaskError,
    },
    /// It stopped because it was cancelled (its reason is the caller's).
    Cancelled {
        /// The action it would have run next.
        action: Option<Arc<str>>,
    },
}

/// The task was cancelled, or its run's consumer went away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaneClosed;

impl fmt::Display for LaneClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the task was cancelled")
    }
}

impl std::error::Error for LaneClosed {}

/// A named task's way back into its run: its items, its pause state and
/// its cancellation.
#[derive(Clone)]
pub struct RemoteLane {
    lane: Arc<Lane>,
    nodes: bool,
}

impl fmt::Debug for RemoteLane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RemoteLane")
            .field("path", &self.lane.path)
            .finish_non_exhaustive()
    }
}

impl RemoteLane {
    pub(crate) fn new(lane: Arc<Lane>, nodes: bool) -> Self {
        RemoteLane { lane, nodes }
    }

    /// Stream a token of the task (dropped when the run does not stream
    /// tokens). Waits for room in the run's mailbox: a slow consumer slows
    /// the task.
    ///
    /// # Errors
    ///
    /// [`LaneClosed`] when the task was cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call sent nothing.
    pub async fn token(&self, action: Option<Arc<str>>, value: Value) -> Result<(), LaneClosed> {
        if !self.lane.streams_tokens() {
            return Ok(());
        }
        let report = Report {
            kind: ItemKind::Token,
            action,
            result: Some(value),
            state: None,
            error: None,
        };
        self.lane.send(report, None).await.map_err(stopped)
    }

    /// Stream the completion of an intermediate node of the task (dropped
    /// when the run does not stream node items).
    ///
    /// # Errors
    ///
    /// [`LaneClosed`] when the task was cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call sent nothing.
    pub async fn node(
        &self,
        action: Arc<str>,
        result: Value,
        state: State,
    ) -> Result<(), LaneClosed> {
        if !self.nodes {
            return Ok(());
        }
        let report = Report {
            kind: ItemKind::NodeComplete,
            action: Some(action),
            result: Some(result),
            state: Some(state),
            error: None,
        };
        self.lane.send(report, None).await.map_err(stopped)
    }

    /// Whether the task is paused right now (by itself, its run or a run it
    /// is nested in).
    pub fn is_paused(&self) -> bool {
        !self.lane.gates.is_open()
    }

    /// Wait until the task is paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn paused(&self) {
        self.lane.gates.wait_closed().await;
    }

    /// Wait until the task is not paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn unpaused(&self) {
        self.lane.gates.wait_open().await;
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.lane.token.is_cancelled()
    }

    /// Resolves when the task is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn cancelled(&self) {
        self.lane.token.cancelled().await;
    }

    /// Why the task was cancelled, once it is.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.lane
            .token
            .is_cancelled()
            .then(|| self.lane.cancel_reason().cancel_reason())
            .flatten()
    }
}

fn stopped(_: Stopped) -> LaneClosed {
    LaneClosed
}
