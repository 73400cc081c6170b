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
use crate::item::{ItemKind, StreamItem};
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

    /// A parallel action whose children this executor runs starts waiting
    /// for them. An executor whose caller holds a slot of its own (a
    /// cluster worker's claim slot) gives it back here, so that a waiting
    /// parent never keeps its children from running. Does nothing by
    /// default.
    fn parent_waits(&self) {}

    /// The parallel action's children are done and it is about to reduce
    /// them: take the slot given back by
    /// [`parent_waits`](Self::parent_waits) again. Resolves at once by
    /// default.
    fn parent_resumes(&self) -> BoxFuture<'static, ()> {
        Box::pin(std::future::ready(()))
    }
}

/// Gives each run nested in a task (the children of one parallel action)
/// an executor of its own: a parallel action whose config sets no
/// executor takes one from here when its task's run has one
/// ([`RunConfig::nested_executors`](crate::RunConfig::nested_executors)),
/// so that its [named](crate::TaskSpec::named) children run elsewhere too.
/// A cluster worker gives every task it runs one; so does the cluster's
/// caller.
pub trait NestedExecutors: Send + Sync + 'static {
    /// The executor of the children `nested` describes.
    fn executor(&self, nested: NestedRun) -> Arc<dyn TaskExecutor>;
}

impl fmt::Debug for dyn NestedExecutors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NestedExecutors")
    }
}

/// Which nested run an executor is asked for: one parallel action's
/// children, under one step of one task.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NestedRun {
    /// The run's id (nested runs share their root's).
    pub run_id: Arc<str>,
    /// Where the parent task sits in the run's tree.
    pub parent_path: TaskPath,
    /// The parent task's app id.
    pub parent_app_id: Arc<str>,
    /// The step of the parent that runs the parallel action.
    pub sequence_id: u64,
    /// The parallel action's name.
    pub action: String,
}

/// What a [`RunHandle`](crate::RunHandle) asks of a task below a task run
/// elsewhere (`pause_task`, `resume_task` or `cancel_task` with a path that
/// goes through a remote task).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskOp {
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
    /// Cancel it (and what is nested in it).
    Cancel,
}

/// A control for a task below a remote task, as its executor receives it
/// ([`RemoteLane::descendant_controls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DescendantControl {
    /// The path of the task below the remote task (its first key is a
    /// child's key).
    pub path: TaskPath,
    /// What to do.
    pub op: TaskOp,
}

/// Controls the run's handle sends to tasks below one remote task; while
/// this lives, such paths are accepted by the handle and come out here.
pub struct DescendantControls {
    rx: tokio::sync::mpsc::UnboundedReceiver<DescendantControl>,
    run: std::sync::Weak<crate::shared::RunShared>,
    key: Arc<str>,
}

impl fmt::Debug for DescendantControls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DescendantControls")
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl DescendantControls {
    /// The next control; `None` once the run is gone.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a control is taken only when returned.
    pub async fn recv(&mut self) -> Option<DescendantControl> {
        self.rx.recv().await
    }
}

impl Drop for DescendantControls {
    fn drop(&mut self) {
        if let Some(run) = self.run.upgrade() {
            run.remote
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&self.key);
        }
    }
}

/// The extension a run's config carries its [`NestedExecutors`] in.
#[derive(Clone)]
pub(crate) struct Nesting(pub(crate) Arc<dyn NestedExecutors>);

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
        // An executor waits for the task's pause (`paused`) rather than
        // looking between steps: its gates must exist to be waited on.
        lane.gates.materialize_with(Some(&lane.task));
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

    /// Stream an item of a task nested in this one (a child of one of its
    /// parallel actions, run wherever its executor runs it): `item.path`
    /// is the child's path *below* this task (its first key is the child's
    /// own key); the item reaches the run with this task's path in front.
    /// Dropped like a local child's item when the run does not stream
    /// nested items of its kind. Waits for room in the run's mailbox.
    ///
    /// # Errors
    ///
    /// [`LaneClosed`] when the task was cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a cancelled call sent nothing.
    pub async fn nested(&self, mut item: StreamItem) -> Result<(), LaneClosed> {
        if item.path.is_empty() {
            return Ok(());
        }
        let mut path = self.lane.path.clone();
        for key in item.path.keys() {
            path = path.child(Arc::clone(key));
        }
        item.path = path;
        self.lane.forward(item).await.map_err(stopped)
    }

    /// Take the controls the run's handle sends to tasks below this one
    /// (children of its parallel actions, run wherever they run). Until
    /// this is dropped, `pause_task`/`resume_task`/`cancel_task` with a
    /// path under this task are accepted and come out of the receiver; an
    /// executor that does not call it leaves such paths unknown.
    pub fn descendant_controls(&self) -> DescendantControls {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let key = Arc::clone(self.lane.key());
        self.lane
            .run
            .shared
            .remote
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Arc::clone(&key), tx);
        DescendantControls {
            rx,
            run: Arc::downgrade(&self.lane.run.shared),
            key,
        }
    }

    /// Whether the task is paused right now (by itself, its run or a run it
    /// is nested in).
    pub fn is_paused(&self) -> bool {
        !self.lane.gates_open()
    }

    /// Wait until the task is paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn paused(&self) {
        self.lane
            .gates
            .wait_closed_with(Some(&self.lane.task))
            .await;
    }

    /// Wait until the task is not paused.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn unpaused(&self) {
        self.lane.gates.wait_open_with(Some(&self.lane.task)).await;
    }

    /// Whether the task was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.lane.is_cancelled()
    }

    /// Resolves when the task is cancelled.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn cancelled(&self) {
        self.lane.cancelled().await;
    }

    /// Why the task was cancelled, once it is.
    pub fn cancel_reason(&self) -> Option<CancelReason> {
        self.lane
            .is_cancelled()
            .then(|| self.lane.cancel_reason().cancel_reason())
            .flatten()
    }
}

fn stopped(_: Stopped) -> LaneClosed {
    LaneClosed
}
