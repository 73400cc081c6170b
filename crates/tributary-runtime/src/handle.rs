//! The run handle: pause, resume and cancel a run or any task of its tree,
//! feed it tasks, watch its progress and read how it ended.

use std::future::Future;
use std::sync::Arc;

use tokio::sync::watch;

use crate::end::RunEnd;
use crate::error::{AddTaskError, RunError, UnknownTask};
use crate::mailbox::Inbox;
use crate::path::TaskPath;
use crate::progress::Progress;
use crate::reason::CancelReason;
use crate::remote::{DescendantControl, TaskOp};
use crate::shared::RunShared;
use crate::spec::TaskSpec;
use crate::task_control::{TaskControl, TaskInfo};

/// Controls a live run. `Clone + Send + Sync`; its commands never block.
///
/// Per-task commands take a task's key (a top-level task) or its
/// [`TaskPath`] (any task of the tree: `["t3", "0"]` is child `"0"` of the
/// parallel action running in task `"t3"`), whether the task is queued or
/// running.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_runtime::{CancelReason, ItemKind, RunConfig, Runtime, TaskSource, TaskSpec};
///
/// let task = |i: u32| TaskSpec::action(format!("t{i}"), action("work").run(|s: State, _, _| async move {
///     tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
///     Ok((json!({}), s))
/// }));
/// let (handle, mut stream) = Runtime::new().run(TaskSource::iter((0..3).map(task)), RunConfig::new());
/// // Wait until the three tasks run, then cancel them all.
/// handle.progress().wait_for(|p| p.running == 3).await.unwrap();
/// handle.cancel().await; // resolves once every task has stopped
/// let mut cancelled = 0;
/// while let Some(item) = stream.next().await {
///     assert_eq!(item.cancel_reason(), Some(CancelReason::Handle));
///     cancelled += usize::from(item.kind == ItemKind::Cancelled);
/// }
/// assert_eq!(cancelled, 3);
/// # }
/// ```
#[derive(Clone)]
pub struct RunHandle {
    pub(crate) shared: Arc<RunShared>,
}

impl std::fmt::Debug for RunHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunHandle")
            .field("progress", &self.shared.progress_now())
            .field("cancelled", &self.shared.root.is_cancelled())
            .field("end", &self.shared.end.get())
            .finish()
    }
}

impl RunHandle {
    /// Pause the run: from now on no task starts a new step and no new task
    /// starts; steps already running finish, and their `ctx.emit` waits
    /// while paused. Nested runs inside the run's tasks pause too. Time
    /// spent paused does not count against a task's timeout.
    pub fn pause(&self) {
        self.shared.gate.send_replace(true);
    }

    /// Resume a paused run.
    pub fn resume(&self) {
        self.shared.gate.send_replace(false);
    }

    /// Whether the run is paused.
    pub fn is_paused(&self) -> bool {
        *self.shared.gate.borrow()
    }

    /// Cancel the run now: no new step or task starts, running steps are
    /// dropped at their next await point, every task taken from the source
    /// reports `Cancelled` (tasks the lazy source has not yielded yet are
    /// never taken), and so does every task nested in them.
    /// The returned future resolves once every task of the tree has
    /// stopped (no step runs and no task of the run or of a run nested in
    /// it is alive afterwards); awaiting it is optional.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancellation happens when `cancel` is called;
    /// dropping the future only stops waiting.
    pub fn cancel(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.set_end(RunEnd::Cancelled {
            reason: CancelReason::Handle,
        });
        self.shared.cancel(CancelReason::Handle);
        self.shared.tracker.close();
        let tracker = self.shared.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Whether the run was cancelled (by the handle, a policy, fail-fast,
    /// or the task it is nested in).
    pub fn is_cancelled(&self) -> bool {
        self.shared.root.is_cancelled()
    }

    /// How the run ended; `None` while it has not.
    pub fn end(&self) -> Option<RunEnd> {
        self.shared.end.get().cloned()
    }

    /// The run's error: `None` while it runs or when it completed.
    pub fn error(&self) -> Option<RunError> {
        self.shared.end.get().and_then(RunEnd::error)
    }

    fn find(&self, path: TaskPath) -> Result<TaskControl, UnknownTask> {
        self.shared.resolve(path.keys()).ok_or(UnknownTask(path))
    }

    /// Pause one task of the tree, queued or running (see
    /// [`pause`](Self::pause)); the runs nested in it pause too.
    ///
    /// # Errors
    ///
    /// [`UnknownTask`] when no task of the tree that has not ended has
    /// this key or path (a lazy source's tasks are known once taken).
    pub fn pause_task(&self, task: impl Into<TaskPath>) -> Result<(), UnknownTask> {
        self.control(task.into(), TaskOp::Pause)
    }

    /// Resume one paused task.
    ///
    /// # Errors
    ///
    /// As [`pause_task`](Self::pause_task).
    pub fn resume_task(&self, task: impl Into<TaskPath>) -> Result<(), UnknownTask> {
        self.control(task.into(), TaskOp::Resume)
    }

    /// Cancel one task of the tree and everything nested in it; a queued
    /// task never starts. It reports `Cancelled` and the run goes on.
    ///
    /// With a persister, a task that had started is saved as cancelled:
    /// run again under the same [`run_id`](crate::RunConfig::run_id), it
    /// stays cancelled unless
    /// [`resume_cancelled`](crate::RunConfig::resume_cancelled) is set.
    ///
    /// # Errors
    ///
    /// As [`pause_task`](Self::pause_task).
    pub fn cancel_task(&self, task: impl Into<TaskPath>) -> Result<(), UnknownTask> {
        self.control(task.into(), TaskOp::Cancel)
    }

    /// Apply `op` to the task at `path`: a task of this process's tree, or
    /// one below a task run elsewhere (sent on to its executor, which knows
    /// whether it exists there).
    fn control(&self, path: TaskPath, op: TaskOp) -> Result<(), UnknownTask> {
        match self.find(path) {
            Ok(task) => {
                match op {
                    TaskOp::Pause => task.set_paused(true),
                    TaskOp::Resume => task.set_paused(false),
                    TaskOp::Cancel => task.cancel(CancelReason::Task),
                }
                Ok(())
            }
            Err(UnknownTask(path)) => {
                let Some((channel, below)) = self.shared.resolve_remote(path.keys()) else {
                    return Err(UnknownTask(path));
                };
                channel
                    .send(DescendantControl { path: below, op })
                    .map_err(|_| UnknownTask(path))
            }
        }
    }

    /// The app id of one task of the tree that has not ended: the id its
    /// checkpoints, its tracker records and its durable journal live
    /// under (`None` while it is queued: a task gets its app id when it
    /// starts).
    ///
    /// # Errors
    ///
    /// As [`pause_task`](Self::pause_task).
    pub fn app_id(&self, task: impl Into<TaskPath>) -> Result<Option<Arc<str>>, UnknownTask> {
        Ok(self.find(task.into())?.started_app_id())
    }

    /// Every task of the tree that has not ended (queued, running, paused),
    /// in task order, each followed by the tasks nested in it.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let mut out = Vec::new();
        self.shared.list(&TaskPath::root(), &mut out);
        out
    }

    /// Feed a new task into the live run (a crawler adding pages it found).
    /// From now on it can be addressed by its key.
    ///
    /// # Errors
    ///
    /// [`AddTaskError`], giving the task back, when the run has ended or
    /// was cancelled, or when another task of the run has its key.
    pub fn add_task(&self, task: TaskSpec) -> Result<(), AddTaskError> {
        let accepting = self
            .shared
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*accepting || self.shared.root.is_cancelled() {
            return Err(AddTaskError::Ended(Box::new(task)));
        }
        let Ok(control) = self.shared.reserve(&task.key) else {
            return Err(AddTaskError::DuplicateKey(Box::new(task)));
        };
        self.shared
            .inbox
            .send(Inbox::Add(task, control))
            .map_err(|e| match e.0 {
                Inbox::Add(task, control) => {
                    self.shared.unregister(&task.key, &control);
                    AddTaskError::Ended(Box::new(task))
                }
                Inbox::Exited => unreachable!("only an add was sent"),
            })
    }

    /// A `watch` of the progress counts of the run's task tree, up to date
    /// when returned.
    ///
    /// While it is watched, the counts are handed to the watch by a small
    /// task of the run: woken by a change, it publishes the counts of that
    /// moment, then lets the runtime's other tasks run before it looks
    /// again. So a burst of changes (ten thousand tasks pausing) wakes the
    /// watchers about once per scheduler round, not once per task, and the
    /// watch always ends with the latest counts. For the exact counts at
    /// one moment, use [`progress_now`](Self::progress_now).
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.watch_progress()
    }

    /// The progress counts now.
    pub fn progress_now(&self) -> Progress {
        self.shared.progress_now()
    }
}
