//! How a run merges, completes, fails, retries and limits its tasks.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use backon::ExponentialBuilder;
use tributary_core::{ApplicationError, Extensions, Hook, ParentPointer, Persister};

use crate::policy::{CompletionPolicy, JoinAll};

/// How the items of a run's tasks are merged into the one stream the
/// consumer reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum MergeMode {
    /// Every item in arrival order; items of one task stay in order.
    #[default]
    AsCompleted,
    /// Round by round: round `r` holds the `r`-th item (`seq == r`) of every
    /// task of the cohort, in task order, emitted once every still-running
    /// task has produced its `r`-th item; a finished task leaves an empty
    /// slot. Each task streams into its own small channel, so a fast task
    /// never forces unbounded buffering.
    ///
    /// Which tasks a round covers: with a concurrency limit `c` (the run's
    /// `max_concurrency`, capped by the runtime's budget) tasks are zipped
    /// in cohorts of `c` in task order: tasks `0..c` together, then, once
    /// all of them have finished, tasks `c..2c`, and so on. Without a limit
    /// the whole run is one cohort. A cohort starts only when all its tasks
    /// can hold a slot at once, so zip never deadlocks on the budget.
    ///
    /// The items of tasks nested in a task (a parallel action's children)
    /// travel in that task's lane: they take places in its rounds, in the
    /// order the task forwarded them.
    Zip,
    /// All items of task 0, then all of task 1, ...
    ///
    /// The task at the front (the one being read) streams through the run's
    /// mailbox (`mailbox_capacity`); the tasks behind it run ahead into
    /// small channels of their own (`task_channel_capacity`) and then wait
    /// until they come to the front.
    Ordered,
    /// One terminal item (`Final`, `Failed` or `Cancelled`) per task, in
    /// completion order. Tokens and node items are not even produced.
    FinalOnly,
}

/// What a run does when a task fails (after its retries).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum FailurePolicy {
    /// Cancel every other task and surface the error
    /// ([`RunError::TaskFailed`](crate::error::RunError::TaskFailed)).
    #[default]
    FailFast,
    /// Report the failure and go on; reducers see it as a failed task.
    Continue,
}

/// The factor is an f32: round the float noise off a wait (to whole
/// microseconds) so that 100 ms doubles to 200 ms, not 200.000003 ms.
pub(crate) fn round_backoff(d: Duration) -> Duration {
    Duration::from_micros(d.as_micros().try_into().unwrap_or(u64::MAX))
}

type RetryIf = Arc<dyn Fn(&ApplicationError) -> bool + Send + Sync>;

/// Retries of a failing step, with exponential backoff (computed by the
/// `backon` crate), optional jitter, and an optional predicate that says
/// which errors are worth a retry. The task resumes from its last
/// checkpoint: the failed step runs again, nothing before it. Time spent
/// waiting between attempts counts against the task's timeout.
///
/// # Examples
///
/// Retry a rate-limited call (an HTTP 429) up to five times with jittered
/// backoff, but fail at once on a bad request (a 400):
///
/// ```
/// use std::time::Duration;
/// use tributary_core::ApplicationError;
/// use tributary_runtime::RetryPolicy;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("http status {0}")]
/// struct Status(u16);
///
/// fn transient(error: &ApplicationError) -> bool {
///     // Walk the error's sources to the action's own error.
///     let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
///     while let Some(e) = source {
///         if let Some(Status(code)) = e.downcast_ref::<Status>() {
///             return *code == 429 || *code >= 500;
///         }
///         source = e.source();
///     }
///     false
/// }
///
/// let retry = RetryPolicy::exponential(5, Duration::from_millis(100))
///     .jitter()
///     .max_backoff(Duration::from_secs(5))
///     .retry_if(transient);
/// assert_eq!(retry.max_attempts(), 5);
/// ```
#[derive(Clone)]
pub struct RetryPolicy {
    max_attempts: u32,
    backoff: ExponentialBuilder,
    retry_if: Option<RetryIf>,
}

impl fmt::Debug for RetryPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RetryPolicy")
            .field("max_attempts", &self.max_attempts)
            .field("backoff", &self.backoff)
            .field("retry_if", &self.retry_if.is_some())
            .finish()
    }
}

impl RetryPolicy {
    /// No retries.
    pub const NONE: RetryPolicy = RetryPolicy {
        max_attempts: 1,
        backoff: ExponentialBuilder::new(),
        retry_if: None,
    };

    /// Up to `max_attempts` attempts per step, waiting `initial_backoff`,
    /// then twice that, ... up to 30 s.
    pub fn exponential(max_attempts: u32, initial_backoff: Duration) -> Self {
        let max_attempts = max_attempts.max(1);
        RetryPolicy {
            max_attempts,
            backoff: ExponentialBuilder::new()
                .with_min_delay(initial_backoff)
                .with_factor(2.0)
                .with_max_delay(Duration::from_secs(30))
                .with_max_times(max_attempts as usize - 1),
            retry_if: None,
        }
    }

    /// Multiply the wait by `factor` after each retry (2 by default).
    pub fn factor(mut self, factor: f32) -> Self {
        self.backoff = self.backoff.with_factor(factor);
        self
    }

    /// Wait at most `max` between two attempts (30 s by default).
    pub fn max_backoff(mut self, max: Duration) -> Self {
        self.backoff = self.backoff.with_max_delay(max);
        self
    }

    /// Add a random jitter to every wait, so that tasks that failed
    /// together do not all retry at the same instant.
    pub fn jitter(mut self) -> Self {
        self.backoff = self.backoff.with_jitter();
        self
    }

    /// Retry only the errors for which `transient` holds (a rate limit, a
    /// timeout); any other error fails the task at once.
    pub fn retry_if<F>(mut self, transient: F) -> Self
    where
        F: Fn(&ApplicationError) -> bool + Send + Sync + 'static,
    {
        self.retry_if = Some(Arc::new(transient));
        self
    }

    /// Attempts per step in all (1 means no retry).
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The waits before each retry, in order (random ones with jitter).
    pub fn backoffs(&self) -> impl Iterator<Item = Duration> + Send + 'static {
        self.backoff_iter().map(round_backoff)
    }

    pub(crate) fn backoff_iter(&self) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        self.backoff.build()
    }

    /// Whether `error` is worth another attempt.
    pub(crate) fn should_retry(&self, error: &ApplicationError) -> bool {
        self.retry_if.as_ref().is_none_or(|f| f(error))
    }

    pub(crate) fn is_none(&self) -> bool {
        self.max_attempts <= 1
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::NONE
    }
}

type PolicyFactory = Arc<dyn Fn() -> Box<dyn CompletionPolicy> + Send + Sync>;

/// The settings of one run. Cheap to clone.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tributary_runtime::{FailurePolicy, MergeMode, QuickExit, RetryPolicy, RunConfig};
///
/// let config = RunConfig::new()
///     .merge_mode(MergeMode::AsCompleted)
///     .policy(QuickExit)
///     .failure_policy(FailurePolicy::Continue)
///     .retry(RetryPolicy::exponential(3, Duration::from_millis(100)))
///     .task_timeout(Duration::from_secs(30))
///     .max_concurrency(8);
/// # let _ = config;
/// ```
#[derive(Clone)]
#[must_use]
pub struct RunConfig {
    pub(crate) merge_mode: MergeMode,
    pub(crate) policy: PolicyFactory,
    pub(crate) failure: FailurePolicy,
    pub(crate) retry: RetryPolicy,
    pub(crate) task_timeout: Option<Duration>,
    pub(crate) intermediate_stream_outputs: bool,
    pub(crate) intermediate_nodes: bool,
    pub(crate) mailbox_capacity: usize,
    pub(crate) task_channel_capacity: usize,
    pub(crate) max_concurrency: Option<usize>,
    pub(crate) persister: Option<Arc<dyn Persister>>,
    pub(crate) hooks: Vec<Arc<dyn Hook>>,
    pub(crate) spawning_parent: Option<ParentPointer>,
    pub(crate) partition_key: Option<String>,
    pub(crate) extensions: Extensions,
    pub(crate) remember_keys: Option<bool>,
    pub(crate) run_id: Option<Arc<str>>,
    pub(crate) resume_cancelled: bool,
    pub(crate) executor: Option<Arc<dyn crate::remote::TaskExecutor>>,
}

impl fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RunConfig")
            .field("merge_mode", &self.merge_mode)
            .field("failure", &self.failure)
            .field("retry", &self.retry)
            .field("task_timeout", &self.task_timeout)
            .field(
                "intermediate_stream_outputs",
                &self.intermediate_stream_outputs,
            )
            .field("intermediate_nodes", &self.intermediate_nodes)
            .field("mailbox_capacity", &self.mailbox_capacity)
            .field("max_concurrency", &self.max_concurrency)
            .field("persister", &self.persister.is_some())
            .field("hooks", &self.hooks.len())
            .field("run_id", &self.run_id)
            .field("resume_cancelled", &self.resume_cancelled)
            .field("executor", &self.executor.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for RunConfig {
    fn default() -> Self {
        RunConfig {
            merge_mode: MergeMode::AsCompleted,
            policy: Arc::new(|| Box::new(JoinAll)),
            failure: FailurePolicy::FailFast,
            retry: RetryPolicy::NONE,
            task_timeout: None,
            intermediate_stream_outputs: true,
            intermediate_nodes: true,
            mailbox_capacity: 256,
            task_channel_capacity: 4,
            max_concurrency: None,
            persister: None,
            hooks: Vec::new(),
            spawning_parent: None,
            partition_key: None,
            extensions: Extensions::new(),
            remember_keys: None,
            run_id: None,
            resume_cancelled: false,
            executor: None,
        }
    }
}

impl RunConfig {
    /// The defaults: `AsCompleted`, `JoinAll`, fail-fast, no retries, no
    /// timeout, both intermediate switches on, a mailbox of 256 items.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run [named](crate::TaskSpec::named) tasks through `executor` (a
    /// cluster executor sets this; see [`TaskExecutor`](crate::TaskExecutor)).
    /// Tasks that carry their graph still run in this process.
    pub fn executor(mut self, executor: Arc<dyn crate::remote::TaskExecutor>) -> Self {
        self.executor = Some(executor);
        self
    }

    /// Give the parallel actions of this run's tasks (and of their
    /// children, unless `cascade(false)`) an executor for their
    /// [named](crate::TaskSpec::named) children: each parallel action
    /// whose own config sets no executor asks `nested` for one (see
    /// [`NestedExecutors`](crate::NestedExecutors)). The cluster executor
    /// sets this on the runs it makes, so children of parallel actions are
    /// distributed like the tasks themselves.
    pub fn nested_executors(self, nested: Arc<dyn crate::remote::NestedExecutors>) -> Self {
        self.extension(crate::remote::Nesting(nested))
    }

    /// The run id set with [`run_id`](Self::run_id).
    pub fn get_run_id(&self) -> Option<&str> {
        self.run_id.as_deref()
    }

    /// The merge mode.
    pub fn get_merge_mode(&self) -> MergeMode {
        self.merge_mode
    }

    /// How items are merged.
    pub fn merge_mode(mut self, mode: MergeMode) -> Self {
        self.merge_mode = mode;
        self
    }

    /// When the run completes. Each run gets its own copy of `policy`.
    pub fn policy<P: CompletionPolicy + Clone + Sync>(mut self, policy: P) -> Self {
        self.policy = Arc::new(move || Box::new(policy.clone()));
        self
    }

    /// What a failed task does to the run.
    pub fn failure_policy(mut self, failure: FailurePolicy) -> Self {
        self.failure = failure;
        self
    }

    /// Retries of failing steps.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// Fail a task that runs longer than `timeout` (all its steps and
    /// retries together).
    pub fn task_timeout(mut self, timeout: Duration) -> Self {
        self.task_timeout = Some(timeout);
        self
    }

    /// Whether `Token` items (intermediate outputs of actions) are streamed.
    pub fn intermediate_stream_outputs(mut self, on: bool) -> Self {
        self.intermediate_stream_outputs = on;
        self
    }

    /// Whether `NodeComplete` items of non-halt nodes are streamed.
    pub fn intermediate_nodes(mut self, on: bool) -> Self {
        self.intermediate_nodes = on;
        self
    }

    /// Capacity of the shared mailbox (`AsCompleted`, `FinalOnly`, and the
    /// front task of an `Ordered` run): when it is full, producers wait for
    /// the consumer.
    ///
    /// # Panics
    ///
    /// When `capacity` is 0.
    pub fn mailbox_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "mailbox capacity must be at least 1");
        self.mailbox_capacity = capacity.min(tokio::sync::Semaphore::MAX_PERMITS);
        self
    }

    /// Opt in to an unbounded shared mailbox: producers never wait for the
    /// consumer, so memory grows with everything produced and not yet read.
    /// Use it only when the consumer is known to keep up, or memory is not a
    /// concern. (A task still holds its slot until its terminal item is read,
    /// so the number of tasks alive stays bounded by the budget.)
    pub fn unbounded_mailbox(self) -> Self {
        self.mailbox_capacity(tokio::sync::Semaphore::MAX_PERMITS)
    }

    /// Capacity of each task's own channel: that of every task of a `Zip`
    /// run, and, in an `Ordered` run, of every task behind the front one
    /// (how far it runs ahead before it waits). The front task of an
    /// `Ordered` run streams through the mailbox
    /// ([`mailbox_capacity`](Self::mailbox_capacity)).
    ///
    /// # Panics
    ///
    /// When `capacity` is 0.
    pub fn task_channel_capacity(mut self, capacity: usize) -> Self {
        assert!(capacity > 0, "task channel capacity must be at least 1");
        self.task_channel_capacity = capacity;
        self
    }

    /// At most `n` tasks of this run alive at once (on top of the runtime's
    /// shared budget).
    ///
    /// # Panics
    ///
    /// When `n` is 0.
    pub fn max_concurrency(mut self, n: usize) -> Self {
        assert!(n > 0, "max concurrency must be at least 1");
        self.max_concurrency = Some(n);
        self
    }

    /// Checkpoint every task's steps and resume tasks from their checkpoints.
    ///
    /// Resuming across processes needs a stable [`run_id`](Self::run_id)
    /// (or an app id on every task): without one, task app ids are unique
    /// to the process, so a restarted process finds none of its
    /// checkpoints. A top-level run with a persister and no run id logs a
    /// warning saying so.
    ///
    /// A task with a checkpoint that already reached its halt point runs
    /// no step and reports the `Final` it reported before (action and
    /// result from the checkpoint). A task cancelled with
    /// [`RunHandle::cancel_task`](crate::RunHandle::cancel_task) is saved
    /// as cancelled and stays cancelled on later runs unless
    /// [`resume_cancelled`](Self::resume_cancelled) is set.
    pub fn persister(mut self, persister: Arc<dyn Persister>) -> Self {
        self.persister = Some(persister);
        self
    }

    /// Add a hook (a tracker) to every task's application.
    pub fn hook(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Record `parent` as the spawning parent of every task.
    pub fn spawning_parent(mut self, parent: ParentPointer) -> Self {
        self.spawning_parent = Some(parent);
        self
    }

    /// The partition key of every task's application.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// Give every task's actions `value` (an HTTP client, a database pool):
    /// they read it with `ctx.extension::<T>()`. One value is shared by every
    /// task (put what must not be copied behind an `Arc`, or use a type that
    /// is a handle already); a second value of the same type replaces the
    /// first. Parallel actions pass the extensions of their task on to their
    /// children (unless `cascade(false)`).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use serde_json::json;
    /// use tributary_core::{action, State};
    /// use tributary_runtime::{RunConfig, Runtime, TaskSpec};
    ///
    /// #[derive(Debug)]
    /// struct Client { base: String }
    ///
    /// let fetch = action("fetch").run(|s: State, _, ctx| async move {
    ///     let client = ctx.extension::<Client>().expect("set on the run");
    ///     Ok((json!({ "url": format!("{}/{}", client.base, ctx.task_key().unwrap()) }), s))
    /// });
    /// let config = RunConfig::new().extension(Client { base: "https://example.org".into() });
    /// let (_h, stream) = Runtime::new().run(vec![TaskSpec::action("a", fetch)], config);
    /// let outcomes = stream.outcomes().await.unwrap();
    /// assert_eq!(outcomes[0].result(), Some(&json!({ "url": "https://example.org/a" })));
    /// # }
    /// ```
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Remember every key the run takes, so that a key stays refused after
    /// its first task ended (a second task with it fails with a
    /// `Validation` error). Without this a key is refused only while
    /// another task with it is queued or running.
    ///
    /// On by default when the run has a persister: a task reusing a key
    /// would share the first one's app id and find its checkpoints instead
    /// of running. Off by default otherwise, because remembering costs eight
    /// bytes per task for the whole run, and a run of millions of tasks
    /// must stay within bounded memory.
    pub fn remember_keys(mut self, on: bool) -> Self {
        self.remember_keys = Some(on);
        self
    }

    /// Name the run: every task's app id derives from `run_id` and its key
    /// (children of parallel actions from their parent's), the same in
    /// every process. Start a run again with the same run id and the same
    /// persister after a crash and every task finds its checkpoints:
    /// nothing finished runs again. A task's own
    /// [`TaskSpec::app_id`](crate::TaskSpec::app_id) still wins.
    ///
    /// Without a run id, app ids derive from a per-process id, so a run
    /// resumes only within its process.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main]
    /// # async fn main() {
    /// use std::sync::Arc;
    /// use serde_json::json;
    /// use tributary_core::{action, InMemoryPersister, State};
    /// use tributary_runtime::{RunConfig, Runtime, TaskSpec};
    ///
    /// let persister = Arc::new(InMemoryPersister::new());
    /// let work = action("work").run(|s: State, _, _| async move { Ok((json!({ "n": 1 }), s)) });
    /// let config = RunConfig::new().run_id("nightly-research").persister(persister);
    /// let tasks = vec![TaskSpec::action("a", work.clone())];
    /// let first = Runtime::new().run(tasks.clone(), config.clone()).1.outcomes().await.unwrap();
    /// // The same run id again: the task is found finished and runs nothing.
    /// let again = Runtime::new().run(tasks, config).1.outcomes().await.unwrap();
    /// assert_eq!(first[0].app_id, again[0].app_id);
    /// assert_eq!(again[0].result(), Some(&json!({ "n": 1 })));
    /// # }
    /// ```
    pub fn run_id(mut self, run_id: impl Into<String>) -> Self {
        self.run_id = Some(Arc::from(run_id.into()));
        self
    }

    /// Run again the tasks that a user cancelled in an earlier run with
    /// the same run id (off by default: a cancelled task stays cancelled
    /// and reports `Cancelled` with
    /// [`CancelReason::Earlier`](crate::CancelReason::Earlier)).
    pub fn resume_cancelled(mut self, on: bool) -> Self {
        self.resume_cancelled = on;
        self
    }

    pub(crate) fn remembers_keys(&self) -> bool {
        self.remember_keys.unwrap_or(self.persister.is_some())
    }

    pub(crate) fn make_policy(&self) -> Box<dyn CompletionPolicy> {
        (self.policy)()
    }
}
