//! The runtime: a shared concurrency budget and start rate, and `run`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{Semaphore, mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::RunConfig;
use crate::control::{Gate, GateChain, Progress, RunHandle, RunShared, TaskRuntime};
use crate::merger::RunStream;
use crate::supervisor::Supervisor;
use crate::task::TaskSource;

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
/// use futures_util::StreamExt;
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
    inner: Arc<Inner>,
}

struct Inner {
    budget: Option<Arc<Semaphore>>,
    max_concurrency: Option<usize>,
    start_interval: Option<Duration>,
    next_start: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("max_concurrency", &self.inner.max_concurrency)
            .field("start_interval", &self.inner.start_interval)
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
            inner: Arc::new(Inner {
                budget: self.max_concurrency.map(|n| Arc::new(Semaphore::new(n))),
                max_concurrency: self.max_concurrency,
                start_interval: self.start_rate.map(|r| Duration::from_secs_f64(1.0 / r)),
                next_start: Mutex::new(None),
            }),
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
        self.inner.max_concurrency
    }

    /// Budget permits free right now (`None`: unlimited).
    pub fn available_slots(&self) -> Option<usize> {
        self.inner.budget.as_ref().map(|b| b.available_permits())
    }

    pub(crate) fn budget(&self) -> Option<&Arc<Semaphore>> {
        self.inner.budget.as_ref()
    }

    /// Whether the runtime has no start rate.
    pub(crate) fn is_unpaced(&self) -> bool {
        self.inner.start_interval.is_none()
    }

    /// Wait for this task's turn under the start rate.
    pub(crate) async fn pace(&self) {
        let Some(interval) = self.inner.start_interval else {
            return;
        };
        let at = {
            let mut next = self
                .inner
                .next_start
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let now = Instant::now();
            let at = next.map_or(now, |n| n.max(now));
            *next = Some(at + interval);
            at
        };
        tokio::time::sleep_until(at).await;
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
        let root = match parent {
            Some(p) => p.token().child_token(),
            None => CancellationToken::new(),
        };
        let gate = Arc::new(watch::Sender::new(false));
        let gates = parent
            .map_or_else(GateChain::default, |p| p.gates().clone())
            .with(Gate::Run(Arc::clone(&gate)));
        let (inbox_tx, inbox_rx) = mpsc::unbounded_channel();
        let (mail_tx, mail_rx) = mpsc::channel(config.mailbox_capacity);
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(RunShared {
            runtime: self.clone(),
            root,
            reason: OnceLock::new(),
            gate,
            gates,
            tasks: Mutex::new(Default::default()),
            progress: watch::Sender::new(Progress::default()),
            tracker: TaskTracker::new(),
            inbox: inbox_tx,
            accepting: Mutex::new(true),
        });
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
            run_id(),
        );
        shared.tracker.spawn(supervisor.run());
        (handle, stream)
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
