//! The runtime: a shared concurrency budget and start rate, and `run`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::config::{MergeMode, RunConfig};
use crate::gate::{Gate, GateChain};
use crate::handle::RunHandle;
use crate::merger::RunStream;
use crate::path::TaskPath;
use crate::progress::{Counters, Progress};
use crate::scope::TaskRuntime;
use crate::shared::{ParentTask, RunShared, TaskTable};
use crate::source::TaskSource;
use crate::supervisor::Supervisor;

/// The budget a runtime gives its tasks when none is set: enough to keep
/// two cores busy with I/O-bound tasks, small enough to bound memory.
pub const DEFAULT_MAX_CONCURRENCY: usize = 4096;

/// Runs task sources as parallel subgraph applications.
///
/// A runtime holds the budget shared by every run started on it, nested
/// runs included: at most `max_concurrency` tasks alive at once, started at
/// most `start_rate` per second. A task that waits on its own children (a
/// parallel action) gives its slot back while it waits, so nesting never
/// deadlocks. Cheap to clone; clones share the budget.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() {
/// use serde_json::json;
/// use tributary_core::{action, Graph, State};
/// use tributary_runtime::{ItemKind, RunConfig, Runtime, TaskSource, TaskSpec};
///
/// let square = Graph::single(action("square").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
///     let n: i64 = s.get_as("n")?;
///     Ok((json!({ "n": n * n }), s.set("n", n * n)))
/// }));
/// let tasks = (0..10).map(move |i| TaskSpec::new(format!("t{i}"), square.clone()).state(State::new().set("n", i)));
/// let (_handle, mut stream) = Runtime::new().run(TaskSource::iter(tasks), RunConfig::new());
/// let mut sum = 0;
/// while let Some(item) = stream.next().await {
///     if item.kind == ItemKind::Final {
///         sum += item.result.unwrap()["n"].as_i64().unwrap();
///     }
/// }
/// assert_eq!(sum, 285);
/// # }
/// ```
#[derive(Clone)]
pub struct Runtime {
    budget: Arc<Budget>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("max_concurrency", &self.budget.max_concurrency())
            .field("start_interval", &self.budget.start_interval())
            .finish()
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Runtime::new()
    }
}

/// Builds a [`Runtime`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RuntimeBuilder {
    max_concurrency: Option<usize>,
    start_rate: Option<f64>,
}

impl RuntimeBuilder {
    /// At most `n` tasks alive at once across every run of the runtime.
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        assert!(n > 0, "max concurrency must be at least 1");
        self.max_concurrency = Some(n);
        self
    }

    /// No limit on tasks alive at once (memory grows with the number of
    /// tasks a source yields faster than they finish).
    pub fn unlimited(mut self) -> Self {
        self.max_concurrency = None;
        self
    }

    /// Start at most `per_second` tasks per second across every run.
    ///
    /// # Panics
    ///
    /// When `per_second` is not a positive finite number.
    pub fn start_rate(mut self, per_second: f64) -> Self {
        assert!(
            per_second.is_finite() && per_second > 0.0,
            "start rate must be a positive number of tasks per second"
        );
        self.start_rate = Some(per_second);
        self
    }

    /// Build the runtime.
    pub fn build(self) -> Runtime {
        Runtime {
            budget: Arc::new(Budget::new(self.max_concurrency, self.start_rate)),
        }
    }
}

impl Runtime {
    /// A runtime with the default budget ([`DEFAULT_MAX_CONCURRENCY`]) and
    /// no start rate.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configure a runtime.
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            max_concurrency: Some(DEFAULT_MAX_CONCURRENCY),
            start_rate: None,
        }
    }

    /// The process-wide default runtime, used by parallel actions of
    /// applications that do not run on a runtime of their own.
    pub fn shared() -> Runtime {
        static SHARED: OnceLock<Runtime> = OnceLock::new();
        SHARED.get_or_init(Runtime::new).clone()
    }

    /// The budget of tasks alive at once (`None`: unlimited).
    pub fn max_concurrency(&self) -> Option<usize> {
        self.budget.max_concurrency()
    }

    /// Budget permits free right now (`None`: unlimited).
    pub fn available_slots(&self) -> Option<usize> {
        self.budget.permits().map(|b| b.available_permits())
    }

    /// Start a run of `tasks` and return its handle and its stream.
    ///
    /// The stream is the run's merger: read it (it is a `Stream` of
    /// [`StreamItem`](crate::StreamItem)s) to drive the run. Dropping it
    /// cancels the run.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn run(&self, tasks: impl Into<TaskSource>, config: RunConfig) -> (RunHandle, RunStream) {
        self.run_inner(tasks.into(), config, None)
    }

    /// Start a run nested under the task `parent`: it shares the runtime's
    /// budget, stops when the task is cancelled and pauses when it pauses.
    pub(crate) fn run_nested(
        &self,
        tasks: TaskSource,
        config: RunConfig,
        parent: &TaskRuntime,
    ) -> (RunHandle, RunStream) {
        self.run_inner(tasks, config, Some(parent))
    }

    fn run_inner(
        &self,
        source: TaskSource,
        config: RunConfig,
        parent: Option<&TaskRuntime>,
    ) -> (RunHandle, RunStream) {
        let (handle, stream, supervisor) = self.pair(source, config, parent);
        handle.shared.spawn(supervisor.run());
        (handle, stream)
    }

    /// Build a run's three parts without spawning anything: its handle, its
    /// stream (the merger) and its supervisor (whose `run` drives it).
    pub(crate) fn pair(
        &self,
        source: TaskSource,
        config: RunConfig,
        parent: Option<&TaskRuntime>,
    ) -> (RunHandle, RunStream, Supervisor) {
        // A nested run's tasks learn of their parent task's cancellation
        // from the parent's lane (see `Lane::cancel_tree`), not through a
        // token of the parent's.
        let root = CancellationToken::new();
        let gate = Arc::new(watch::Sender::new(false));
        let gates = parent
            .map_or_else(GateChain::default, |p| {
                p.lane.gates.with(Gate::Task(Arc::clone(&p.lane)))
            })
            .with(Gate::Run(Arc::clone(&gate)));
        let id = match &config.run_id {
            Some(id) => id.to_string(),
            None => {
                if parent.is_none() && config.persister.is_some() {
                    tracing::warn!(
                        "a run with a persister and no run id cannot resume across processes: \
                         its task app ids are unique to this process (set RunConfig::run_id)"
                    );
                }
                run_id()
            }
        };
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (mail_tx, mail_rx) = mpsc::channel(config.mailbox_capacity);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(RunShared {
            budget: Arc::clone(&self.budget),
            root,
            reason: OnceLock::new(),
            end: OnceLock::new(),
            gate,
            gates,
            prefix: parent.map_or_else(TaskPath::root, |p| p.lane.path.clone()),
            run_id: match parent {
                Some(p) => Arc::clone(&p.lane.run.shared.run_id),
                None => Arc::from(id.as_str()),
            },
            parent: parent.map(|p| ParentTask {
                run: Arc::clone(&p.lane.run.shared),
                lane: Arc::clone(&p.lane),
            }),
            tasks: Mutex::new(TaskTable::new(config.remembers_keys())),
            nested: Mutex::new(Default::default()),
            remote: Mutex::new(Default::default()),
            has_nested: AtomicBool::new(false),
            counts: Counters::default(),
            progress: watch::Sender::new(Progress::default()),
            pump_wake: Arc::default(),
            pumping: AtomicBool::new(false),
            tokio: tokio::runtime::Handle::try_current().ok(),
            tracker: TaskTracker::new(),
            inbox: inbox_tx,
            ordered_mailbox: (config.merge_mode == MergeMode::Ordered).then(|| mail_tx.clone()),
            accepting: Mutex::new(true),
            span: tracing::Span::current(),
        });
        if let Some(p) = parent {
            p.lane.run.shared.add_nested(p.lane.key(), &shared);
            // After the record: a cancellation of the parent task either
            // finds this run among its nested runs or is seen here.
            if p.lane.is_cancelled() {
                shared.cancel_tasks();
            }
        }
        let handle = RunHandle {
            shared: Arc::clone(&shared),
        };
        let stream = RunStream::new(Arc::clone(&shared), &config, mail_rx, ctl_rx);
        let supervisor = Supervisor::new(
            Arc::clone(&shared),
            config,
            source,
            inbox_rx,
            mail_tx,
            ctl_tx,
            id,
        );
        (handle, stream, supervisor)
    }
}

impl TaskRuntime {
    /// The runtime the task runs on.
    pub fn runtime(&self) -> Runtime {
        Runtime {
            budget: Arc::clone(&self.lane.run.shared.budget),
        }
    }
}

/// A process-unique id for a run whose tasks have no app ids of their own.
fn run_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!(
        "run-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tributary_core::{State, action};

    use super::*;
    use crate::spec::TaskSpec;

    #[tokio::test(start_paused = true)]
    async fn a_runs_parts_are_built_without_spawning_and_driven_by_the_caller() {
        let work = action("work").run(|s: State, _, _| async move {
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            Ok((json!({}), s))
        });
        let tasks: Vec<TaskSpec> = (0..3)
            .map(|i| TaskSpec::action(format!("t{i}"), work.clone()))
            .collect();
        let (handle, stream, supervisor) =
            Runtime::new().pair(TaskSource::iter(tasks), RunConfig::new(), None);
        // Nothing runs until the supervisor is driven.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            handle.progress_now().running + handle.progress_now().completed,
            0
        );
        let ((), report) = tokio::join!(supervisor.run(), stream.finish());
        assert_eq!(report.unwrap().progress.completed, 3);
        assert_eq!(
            handle.end(),
            Some(crate::RunEnd::Completed { by_policy: false })
        );
    }

    /// A task's lane holds its run once the task starts, and its run's table
    /// holds the lane until the task leaves: a runtime shut down with
    /// tasks queued, started, or spawned and never run must still free
    /// every run and every lane.
    #[test]
    fn a_runtime_shut_down_mid_run_frees_its_runs_and_their_lanes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let wait = action("wait").run(|s: State, _, _| async move {
            std::future::pending::<()>().await;
            Ok((json!({}), s))
        });
        let (run, lane) = rt.block_on(async {
            let tasks = (0..1000).map(move |i| TaskSpec::action(format!("t{i}"), wait.clone()));
            let (handle, stream) = Runtime::new().run(TaskSource::iter(tasks), RunConfig::new());
            // Let the supervisor start a batch of tasks (it yields to them
            // every so often), then leave with some spawned and not run.
            while handle.progress_now().running == 0 {
                tokio::task::yield_now().await;
            }
            let run = Arc::downgrade(&handle.shared);
            let lane = Arc::downgrade(&handle.shared.task("t0").expect("t0 is live"));
            drop((handle, stream));
            (run, lane)
        });
        drop(rt);
        assert!(lane.upgrade().is_none(), "a lane outlived its runtime");
        assert!(run.upgrade().is_none(), "a run outlived its runtime");
    }

    /// The tasks changing a watched run's counts hand them to its pump
    /// and do not publish: a burst of changes reaches the watch together,
    /// once the pump runs. A run dropped before its pump ran still leaves
    /// its last counts in the watch.
    #[tokio::test]
    async fn changes_reach_the_watch_through_the_pump_together_and_at_the_end() {
        let (handle, stream, supervisor) =
            Runtime::new().pair(TaskSource::iter(Vec::new()), RunConfig::new(), None);
        let mut progress = handle.progress();
        assert!(!progress.has_changed().unwrap());
        let started = crate::progress::Change {
            total: 1,
            running: 1,
            ..Default::default()
        };
        for _ in 0..100 {
            handle.shared.update_progress(started);
        }
        assert!(
            !progress.has_changed().unwrap(),
            "a task changing the counts published them itself"
        );
        // The pump runs: the hundred changes arrive as one.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        assert!(progress.has_changed().unwrap());
        assert_eq!(progress.borrow_and_update().running, 100);
        // A change the pump has not handed over when the run goes away.
        handle.shared.update_progress(started);
        assert!(!progress.has_changed().unwrap());
        drop((handle, stream, supervisor));
        assert_eq!(progress.borrow_and_update().running, 101);
        assert!(
            progress.changed().await.is_err(),
            "the watch closed with its run"
        );
    }

    /// A task that holds its slot is running, even before its actor has
    /// run: only the tasks waiting for their turn are listed as queued.
    #[tokio::test]
    async fn a_task_with_its_slot_is_listed_running_before_its_actor_runs() {
        let wait = action("wait").run(|s: State, _, _| async move {
            std::future::pending::<()>().await;
            Ok((json!({}), s))
        });
        let tasks: Vec<TaskSpec> = (0..2)
            .map(|i| TaskSpec::action(format!("t{i}"), wait.clone()))
            .collect();
        let config = RunConfig::new().max_concurrency(1);
        let (handle, _stream, supervisor) =
            Runtime::new().pair(TaskSource::iter(tasks), config, None);
        // Poll the supervisor once, here: it spawns t0's actor (which runs
        // only when this test yields) and waits for a slot for t1.
        let mut supervisor = Box::pin(supervisor.run());
        tokio::select! {
            biased;
            () = &mut supervisor => panic!("the supervisor ended"),
            () = std::future::ready(()) => {}
        }
        assert_eq!(handle.progress_now().running, 0, "t0's actor has not run");
        let listed = handle.tasks();
        let status = |key: &str| {
            listed
                .iter()
                .find(|t| t.path.key() == Some(key))
                .map(|t| t.status)
        };
        assert_eq!(status("t0"), Some(crate::LiveStatus::Running));
        assert_eq!(status("t1"), Some(crate::LiveStatus::Queued));
        handle.cancel().await;
    }
}
