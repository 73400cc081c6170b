//! Control of a live run: the handle, pause gates, progress, task slots.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::AddTaskError;
use crate::runtime::Runtime;
use crate::task::TaskSpec;

/// Counts of a run's tasks, for progress bars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// Tasks known so far (taken from the source or added).
    pub total: u64,
    /// Tasks started and not yet ended.
    pub running: u64,
    /// Running tasks waiting at a pause gate right now.
    pub paused: u64,
    /// Tasks that reached their halt point.
    pub completed: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Tasks that were cancelled.
    pub cancelled: u64,
}

impl Progress {
    /// Tasks known but not started yet.
    pub fn pending(&self) -> u64 {
        self.total
            .saturating_sub(self.running + self.completed + self.failed + self.cancelled)
    }

    /// Tasks that have ended.
    pub fn done(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}

/// A chain of pause gates (a run's, its task's, and those of the runs it is
/// nested in): open when none is paused.
#[derive(Clone, Default)]
pub(crate) struct GateChain {
    gates: Arc<[Gate]>,
    /// A task's own gate, kept apart so that a task's chain shares its
    /// run's instead of copying it.
    task: Option<Arc<TaskShared>>,
}

/// One pause gate of a chain.
#[derive(Clone)]
pub(crate) enum Gate {
    /// A run's gate.
    Run(Arc<watch::Sender<bool>>),
    /// A task's gate.
    Task(Arc<TaskShared>),
}

impl Gate {
    fn sender(&self) -> Option<&watch::Sender<bool>> {
        match self {
            Gate::Run(gate) => Some(gate),
            Gate::Task(task) => task.paused.get(),
        }
    }
}

impl GateChain {
    fn all(&self) -> impl Iterator<Item = Gate> + '_ {
        self.gates
            .iter()
            .cloned()
            .chain(self.task.iter().map(|t| Gate::Task(Arc::clone(t))))
    }

    /// This chain and then `gate`.
    pub(crate) fn with(&self, gate: Gate) -> GateChain {
        match (gate, &self.task) {
            (Gate::Task(task), None) => GateChain {
                gates: Arc::clone(&self.gates),
                task: Some(task),
            },
            (gate, _) => {
                let mut gates: Vec<_> = self.all().collect();
                gates.push(gate);
                GateChain {
                    gates: gates.into(),
                    task: None,
                }
            }
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.all().all(|g| g.sender().is_none_or(|g| !*g.borrow()))
    }

    /// Wait until every gate is open at once.
    pub(crate) async fn wait_open(&self) {
        loop {
            let mut waited = false;
            for gate in self.all() {
                let Some(gate) = gate.sender() else { continue };
                if *gate.borrow() {
                    waited = true;
                    let mut rx = gate.subscribe();
                    // A dropped gate counts as open.
                    let _ = rx.wait_for(|paused| !*paused).await;
                }
            }
            if !waited {
                return;
            }
        }
    }
}

/// A task's hold on the concurrency limits: its permit of the runtime's
/// shared budget and of its run's own limit. Held until the consumer has
/// received the task's terminal item, so a slow consumer bounds memory.
#[derive(Clone, Default)]
pub(crate) struct TaskSlot(Arc<Mutex<SlotInner>>);

#[derive(Default)]
struct SlotInner {
    budget: Option<Arc<Semaphore>>,
    budget_permit: Option<OwnedSemaphorePermit>,
    run_permit: Option<OwnedSemaphorePermit>,
}

impl TaskSlot {
    pub(crate) fn new(
        budget: Option<Arc<Semaphore>>,
        budget_permit: Option<OwnedSemaphorePermit>,
        run_permit: Option<OwnedSemaphorePermit>,
    ) -> Self {
        TaskSlot(Arc::new(Mutex::new(SlotInner {
            budget,
            budget_permit,
            run_permit,
        })))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotInner> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Give the budget permit back (while the task waits on its children).
    pub(crate) fn release_budget(&self) {
        self.lock().budget_permit = None;
    }

    /// Take a budget permit again after [`release_budget`](Self::release_budget).
    pub(crate) async fn reacquire_budget(&self) {
        let budget = self.lock().budget.clone();
        if let Some(budget) = budget {
            if let Ok(permit) = budget.acquire_owned().await {
                self.lock().budget_permit = Some(permit);
            }
        }
    }

    /// Give every permit back (the consumer has the task's terminal item).
    pub(crate) fn release_all(&self) {
        let mut inner = self.lock();
        inner.budget_permit = None;
        inner.run_permit = None;
    }
}

/// The controls of one live task.
#[derive(Clone)]
pub(crate) struct TaskControl {
    pub(crate) token: CancellationToken,
    pub(crate) shared: Arc<TaskShared>,
}

/// A task's pause gate and cancellation reason, in one allocation.
#[derive(Default)]
pub(crate) struct TaskShared {
    /// Created the first time the task is paused: most tasks never are,
    /// and a `watch` costs a few hundred bytes per task.
    paused: OnceLock<watch::Sender<bool>>,
    pub(crate) reason: OnceLock<String>,
}

impl TaskControl {
    pub(crate) fn new(parent: &CancellationToken) -> Self {
        TaskControl {
            token: parent.child_token(),
            shared: Arc::default(),
        }
    }

    /// Why the task was cancelled, if it was cancelled on its own.
    pub(crate) fn reason(&self) -> Option<&String> {
        self.shared.reason.get()
    }

    /// Pause or resume the task (its gate is created on first pause).
    pub(crate) fn set_paused(&self, paused: bool) {
        match self.shared.paused.get() {
            Some(gate) => {
                gate.send_replace(paused);
            }
            None if paused => {
                let gate = self.shared.paused.get_or_init(|| watch::Sender::new(false));
                gate.send_replace(true);
            }
            // Never paused: nothing to resume.
            None => {}
        }
    }

    pub(crate) fn cancel(&self, reason: impl Into<String>) {
        let _ = self.shared.reason.set(reason.into());
        self.token.cancel();
    }
}

/// What the supervisor's inbox carries.
pub(crate) enum Inbox {
    Add(TaskSpec),
    Exited,
}

/// State shared by a run's supervisor, actors, merger and handles.
pub(crate) struct RunShared {
    pub(crate) runtime: Runtime,
    pub(crate) root: CancellationToken,
    pub(crate) reason: OnceLock<String>,
    pub(crate) gate: Arc<watch::Sender<bool>>,
    pub(crate) gates: GateChain,
    pub(crate) tasks: Mutex<HashMap<Arc<str>, TaskControl>>,
    pub(crate) progress: watch::Sender<Progress>,
    pub(crate) tracker: TaskTracker,
    pub(crate) inbox: mpsc::UnboundedSender<Inbox>,
    /// Whether `add_task` is still accepted. `add_task` holds this lock while
    /// it checks and sends, and the supervisor while it decides to end, so
    /// an accepted task is never lost.
    pub(crate) accepting: Mutex<bool>,
}

impl RunShared {
    /// Cancel the whole run for `reason` (the first reason given sticks).
    pub(crate) fn cancel(&self, reason: &str) {
        let _ = self.reason.set(reason.to_owned());
        self.root.cancel();
    }

    pub(crate) fn task(&self, key: &str) -> Option<TaskControl> {
        self.tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .cloned()
    }

    pub(crate) fn update_progress(&self, f: impl FnOnce(&mut Progress)) {
        // Notify only when someone watches: waking the watch's notifiers
        // for every task start and end costs more than the task itself.
        // The count is read under the write lock, and a receiver that
        // subscribes later reads the value under the read lock, so no
        // subscriber misses an update.
        self.progress.send_if_modified(|p| {
            f(p);
            self.progress.receiver_count() > 0
        });
    }
}

/// Controls a live run. `Clone + Send + Sync`; its commands never block.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// use futures_util::StreamExt;
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_runtime::{RunConfig, Runtime, TaskSource, TaskSpec};
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
///     cancelled += usize::from(item.kind == tributary_runtime::ItemKind::Cancelled);
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
            .field("progress", &*self.shared.progress.borrow())
            .field("cancelled", &self.shared.root.is_cancelled())
            .finish()
    }
}

/// A per-task command named a task that is not running.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no running task has key `{0}`")]
pub struct UnknownTask(pub String);

impl RunHandle {
    /// Pause the run: from now on no task starts a new step and no new task
    /// starts; steps already running finish, and their `ctx.emit` waits
    /// while paused. Nested runs inside the run's tasks pause too.
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
    /// never taken).
    /// The returned future resolves once every task has stopped (no step
    /// runs and no task of the run is alive afterwards); awaiting it is
    /// optional.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the cancellation happens when `cancel` is called;
    /// dropping the future only stops waiting.
    pub fn cancel(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.cancel(crate::merger::HANDLE_CANCEL);
        self.shared.tracker.close();
        let tracker = self.shared.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Whether the run was cancelled (by the handle, a policy or fail-fast).
    pub fn is_cancelled(&self) -> bool {
        self.shared.root.is_cancelled()
    }

    /// Pause one task (see [`pause`](Self::pause)).
    ///
    /// # Errors
    ///
    /// [`UnknownTask`] when no running task has this key.
    pub fn pause_task(&self, key: &str) -> Result<(), UnknownTask> {
        let task = self
            .shared
            .task(key)
            .ok_or_else(|| UnknownTask(key.to_owned()))?;
        task.set_paused(true);
        Ok(())
    }

    /// Resume one paused task.
    ///
    /// # Errors
    ///
    /// [`UnknownTask`] when no running task has this key.
    pub fn resume_task(&self, key: &str) -> Result<(), UnknownTask> {
        let task = self
            .shared
            .task(key)
            .ok_or_else(|| UnknownTask(key.to_owned()))?;
        task.set_paused(false);
        Ok(())
    }

    /// Cancel one task; it reports `Cancelled` and the run goes on.
    ///
    /// # Errors
    ///
    /// [`UnknownTask`] when no running task has this key.
    pub fn cancel_task(&self, key: &str) -> Result<(), UnknownTask> {
        let task = self
            .shared
            .task(key)
            .ok_or_else(|| UnknownTask(key.to_owned()))?;
        task.cancel("cancelled through the run handle");
        Ok(())
    }

    /// Feed a new task into the live run (a crawler adding pages it found).
    ///
    /// # Errors
    ///
    /// [`AddTaskError`], giving the task back, when the run has ended or
    /// was cancelled.
    pub fn add_task(&self, task: TaskSpec) -> Result<(), AddTaskError> {
        let accepting = self
            .shared
            .accepting
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !*accepting || self.shared.root.is_cancelled() {
            return Err(AddTaskError(Box::new(task)));
        }
        self.shared
            .inbox
            .send(Inbox::Add(task))
            .map_err(|e| match e.0 {
                Inbox::Add(task) => AddTaskError(Box::new(task)),
                Inbox::Exited => unreachable!("only an add was sent"),
            })
    }

    /// A `watch` of the run's progress counts.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.shared.progress.subscribe()
    }

    /// The progress counts now.
    pub fn progress_now(&self) -> Progress {
        *self.shared.progress.borrow()
    }
}

/// What a task's actions find in their context's extensions: the runtime
/// they run on, their run's handle, their slot and their gates, so that a
/// parallel action nests its run under its task.
#[derive(Clone)]
pub struct TaskRuntime {
    /// The task's lane holds its run, gates and token.
    pub(crate) lane: Arc<crate::actor::Lane>,
    pub(crate) slot: TaskSlot,
}

impl std::fmt::Debug for TaskRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskRuntime").finish_non_exhaustive()
    }
}

impl TaskRuntime {
    /// The runtime the task runs on.
    pub fn runtime(&self) -> &Runtime {
        &self.lane.run.shared.runtime
    }

    /// The handle of the task's run (to `add_task` from inside a task).
    pub fn handle(&self) -> &RunHandle {
        &self.lane.run
    }

    pub(crate) fn token(&self) -> &CancellationToken {
        &self.lane.token
    }

    pub(crate) fn gates(&self) -> &GateChain {
        &self.lane.gates
    }
}
