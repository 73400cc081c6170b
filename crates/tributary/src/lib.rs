//! tributary runs many small **subgraph applications** (state machines of
//! actions over a JSON state) in parallel, one actor per subgraph, and
//! streams what they produce (tokens, node results, state updates, final
//! results) back to one consumer as it happens.
//!
//! - Build applications from [`action()`]s, [`Graph`]s and [`State`]; run one
//!   with [`Application`] ([`step`](Application::step),
//!   [`run`](Application::run), [`stream_result`](Application::stream_result)).
//! - Run many with a [`Runtime`]: give it a [`TaskSource`] and a
//!   [`RunConfig`] ([`MergeMode`], [`CompletionPolicy`], [`FailurePolicy`],
//!   retries, timeouts, limits), read the [`RunStream`] in a `select!` loop
//!   and hold the [`RunHandle`] to pause, resume, cancel, add tasks and watch
//!   progress.
//! - Fan out inside a graph with a [`ParallelAction`] (`map_states`,
//!   `map_actions`, `map_actions_and_states`, task-based) and reduce the
//!   children's final states in task order.
//! - Persist every step and resume after a crash with the SQLite
//!   [`sqlite::SqlitePersister`] (the embedded default), and inspect runs
//!   recorded by the [`sqlite::SqliteTracker`] with the `tributary` command.
//!
//! # Examples
//!
//! Three simulated models answer; the first complete answer wins and the
//! others are cancelled:
//!
//! ```
//! # #[tokio::main]
//! # async fn main() {
//! use std::time::Duration;
//! use serde_json::json;
//! use tributary::{action, Graph, ItemKind, QuickExit, RunConfig, Runtime, State, TaskSpec};
//!
//! let model = |ms: u64| Graph::single(action("answer").run(move |s: State, _, ctx| async move {
//!     for word in ["rivers", "flow", "downhill"] {
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         ctx.emit(word).await?;                  // each token streams live
//!     }
//!     Ok((json!({ "ms_per_token": ms }), s))
//! }));
//! let tasks = vec![
//!     TaskSpec::new("large", model(200)),
//!     TaskSpec::new("small", model(5)),
//!     TaskSpec::new("medium", model(50)),
//! ];
//! let (_handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
//! let (mut winner, mut cancelled) = (None, 0);
//! while let Some(item) = stream.next().await {
//!     match item.kind {
//!         ItemKind::Token => println!("{}: {}", item.task_key, item.result.unwrap()),
//!         ItemKind::Final => winner = Some(item.task_key),
//!         ItemKind::Cancelled => cancelled += 1,
//!         _ => {}
//!     }
//! }
//! assert_eq!(winner.as_deref(), Some("small"));
//! assert_eq!(cancelled, 2);
//! # }
//! ```
//!
//! # The guide
//!
//! [getting started](guide::getting_started), [concepts](guide::concepts),
//! [parallelism](guide::parallelism), [streaming and merge
//! modes](guide::streaming), [policies](guide::policies),
//! [control](guide::control), [architecture](guide::architecture), and in
//! the repository `docs/persistence.md`, `docs/tracking.md` and
//! `docs/streams.md`.
//!
//! # Features
//!
//! - `sqlite` (default): the SQLite persister and tracker, as
//!   [`sqlite`].
//! - `durable`: durable steps and workflows, as `durable` (and the SQLite
//!   journal, `sqlite::SqliteJournal`, with `sqlite`).
//! - `pipeline`: processor pipelines (a graph of async processors joined
//!   by bounded channels), as `pipeline`; see `docs/pipelines.md`.
//! - `ui` (off): the web view of recorded and live runs, as `ui`
//!   (`tributary::ui::UiServer`).
//! - `postgres`: the PostgreSQL persister and tracker, as `postgres`.

// ===== building and running one application (tributary-core) =====

// ===== building and running one application (tributary-core) =====

#[doc(inline)]
pub use tributary_core::{
    Action, ActionContext, ActionError, ActionResult, Advance, AppInfo, Application,
    ApplicationBuilder, ApplicationError, BoxError, BuildError, Checkpoint, Condition, EmitError,
    Extensions, FnAction, Graph, GraphError, HaltReason, Halted, Hook, HookMethod, HookPanic,
    InMemoryPersister, InputSpec, Inputs, ParentPointer, PersistError, Persister, RESERVED_PREFIX,
    RunOptions, RunOutcome, State, StateError, StepInfo, StepOutcome, StepRecord, StepStatus,
    StreamItemInfo, TaskEnd, Wipe, action, call_hooks, condition, default, spawn_blocking, when,
};

// ===== running many (tributary-runtime) =====

#[doc(inline)]
pub use tributary_runtime::{
    AddTaskError, CancelReason, CompletionPolicy, DEFAULT_MAX_CONCURRENCY, Decision, FailurePolicy,
    FirstMatching, FirstN, ItemKind, JoinAll, LaneClosed, LiveStatus, MergeMode, NestedExecutors,
    NestedRun, ParallelAction, Progress, QuickExit, Quorum, RemoteEnd, RemoteLane, RemoteTask,
    RetryPolicy, Round, RunConfig, RunEnd, RunError, RunHandle, RunReport, RunStream, Runtime,
    StreamItem, Subgraph, TaskError, TaskErrorKind, TaskExecutor, TaskInfo, TaskOutcome, TaskPath,
    TaskRuntime, TaskSource, TaskSpec, TaskStatus, UnknownTask, blocking, child_app_id,
};

/// Implement [`Action`], [`Hook`] or [`Persister`] with `#[async_trait]`
/// without adding the crate yourself.
pub use async_trait::async_trait;

/// The types you rarely name: builders (returned by `builder()` methods)
/// and the stream-sink seam between actions and the runtime.
pub mod plumbing {
    #[doc(inline)]
    pub use tributary_core::{
        ActionBuilder, Emitted, GraphBuilder, StreamResult, StreamSink, Transition,
    };
    #[doc(inline)]
    pub use tributary_runtime::{ParallelBuilder, RuntimeBuilder};
}

/// SQLite persistence and tracking, the embedded default (feature `sqlite`,
/// on by default): [`sqlite::SqlitePersister`], [`sqlite::SqliteTracker`],
/// [`sqlite::RunReader`].
#[cfg(feature = "sqlite")]
pub use tributary_sqlite as sqlite;

/// Durable steps and workflows (feature `durable`, off by default): a
/// journal of step results inside any action, replay, retries, saga
/// compensation and durable sleep. See `docs/durable.md`.
#[cfg(feature = "durable")]
pub use tributary_durable as durable;

/// The cluster executor (feature `cluster`, off by default): the same runs
/// on many worker processes and machines — [`cluster::ClusterRuntime`] on
/// the caller's side, [`cluster::Worker`] in the workers, over Redis Streams
/// or NATS JetStream, with crash recovery and fenced checkpoints. See
/// `docs/cluster.md`.
#[cfg(feature = "cluster")]
pub use tributary_cluster as cluster;
/// Processor pipelines (feature `pipeline`): a graph of async processors
/// joined by bounded channels, with joins, backpressure, clean ends and
/// metrics. See [`pipeline::Pipeline`].
#[cfg(feature = "pipeline")]
pub use tributary_pipeline as pipeline;
/// PostgreSQL persistence and tracking, for many processes and machines
/// sharing one store (feature `postgres`, off by default):
/// [`postgres::PostgresPersister`], [`postgres::PostgresTracker`],
/// [`postgres::Database::follow`].
#[cfg(feature = "postgres")]
pub use tributary_postgres as postgres;
/// The web view of runs (feature `ui`): [`ui::UiServer`] serves recorded
/// runs and live runs attached with their handle.
#[cfg(feature = "ui")]
pub use tributary_ui as ui;

/// The guide, whose examples are compiled and run as doctests.
pub mod guide {
    #[doc = include_str!("../../../docs/getting-started.md")]
    pub mod getting_started {}
    #[doc = include_str!("../../../docs/concepts.md")]
    pub mod concepts {}
    #[doc = include_str!("../../../docs/parallelism.md")]
    pub mod parallelism {}
    #[doc = include_str!("../../../docs/streaming.md")]
    pub mod streaming {}
    #[doc = include_str!("../../../docs/policies.md")]
    pub mod policies {}
    #[doc = include_str!("../../../docs/control.md")]
    pub mod control {}
    #[doc = include_str!("../../../docs/architecture.md")]
    pub mod architecture {}
}
