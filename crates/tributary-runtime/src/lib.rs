//! tributary's actor runtime: many subgraph applications in parallel, one
//! actor per task, their items merged into one stream.
//!
//! Give a [`Runtime`] a [`TaskSource`] (an iterator or async stream of
//! [`TaskSpec`]s, pulled lazily) and a [`RunConfig`]; get back a
//! [`RunHandle`] (pause, resume, cancel, per-task control, `add_task`,
//! progress) and a [`RunStream`] of [`StreamItem`]s to read in a `select!`
//! loop. Inside a graph, a [`ParallelAction`] does the same for its children
//! and reduces their final states into the parent's.
//!
//! Architecture: a supervisor task pulls tasks lazily, applies the limits
//! (the runtime's shared budget, the run's own limit, the start rate) and
//! spawns one actor (a tokio task owning its application) per task. Actors
//! publish items into a bounded mailbox (for `Zip`, a small channel of
//! their own; for `Ordered`, their own small channel until they reach the
//! front, then the mailbox) and check the pause gates and their
//! cancellation between steps. The merger runs in the consumer's
//! `poll_next`: it applies the [`MergeMode`], the [`CompletionPolicy`] and
//! the [`FailurePolicy`], so an item reaches the consumer with one channel
//! hop. A task keeps its slot until the consumer has its terminal item, so
//! a slow consumer bounds memory instead of growing it.
//!
//! The run's tasks form a tree: a parallel action's children are nested in
//! its task, their items reach the consumer as ordinary items carrying
//! their [`TaskPath`], and the handle pauses, resumes or cancels any task of
//! the tree by key or path. A run ends once, with a [`RunEnd`] that the
//! stream and every handle read; failed and cancelled tasks carry a typed
//! [`TaskError`] (with a [`CancelReason`] for cancellations).
//!
//! # Examples
//!
//! ```
//! # #[tokio::main]
//! # async fn main() {
//! use std::time::Duration;
//! use serde_json::json;
//! use tributary_core::{action, Graph, State};
//! use tributary_runtime::{ItemKind, QuickExit, RunConfig, Runtime, TaskSource, TaskSpec};
//!
//! // Three "models" answer with different latencies; the first answer wins.
//! let model = |ms: u64| Graph::single(action("answer").run(move |s: State, _, ctx| async move {
//!     for word in ["the", "answer"] {
//!         tokio::time::sleep(Duration::from_millis(ms)).await;
//!         ctx.emit(word).await?;
//!     }
//!     Ok((json!({ "latency_ms": ms }), s))
//! }));
//! let tasks = vec![
//!     TaskSpec::new("slow", model(300)),
//!     TaskSpec::new("fast", model(5)),
//!     TaskSpec::new("medium", model(100)),
//! ];
//! let (_handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
//! let mut winner = None;
//! let mut cancelled = Vec::new();
//! while let Some(item) = stream.next().await {
//!     match item.kind {
//!         ItemKind::Final => winner = Some(item.task_key.to_string()),
//!         ItemKind::Cancelled => cancelled.push(item.task_key.to_string()),
//!         _ => {}
//!     }
//! }
//! assert_eq!(winner.as_deref(), Some("fast"));
//! cancelled.sort();
//! assert_eq!(cancelled, ["medium", "slow"]);
//! # }
//! ```

mod actor;
pub mod blocking;
mod budget;
mod config;
mod end;
mod error;
mod gate;
mod handle;
mod ids;
mod item;
mod mailbox;
mod merger;
mod outcome;
mod parallel;
mod path;
mod policy;
mod progress;
mod reason;
mod remote;
mod runtime;
mod scope;
mod shared;
mod source;
mod spec;
mod supervisor;
mod task_control;

#[doc(inline)]
pub use config::{FailurePolicy, MergeMode, RetryPolicy, RunConfig};
#[doc(inline)]
pub use end::RunEnd;
#[doc(inline)]
pub use error::{AddTaskError, RunError, TaskError, TaskErrorKind, UnknownTask};
#[doc(inline)]
pub use handle::RunHandle;
#[doc(inline)]
pub use ids::child_app_id;
#[doc(inline)]
pub use item::{ItemKind, StreamItem};
#[doc(inline)]
pub use merger::{Round, RunReport, RunStream};
#[doc(inline)]
pub use outcome::{TaskOutcome, TaskStatus};
#[doc(inline)]
pub use parallel::{ParallelAction, ParallelBuilder, Subgraph};
#[doc(inline)]
pub use path::TaskPath;
#[doc(inline)]
pub use policy::{CompletionPolicy, Decision, FirstMatching, FirstN, JoinAll, QuickExit, Quorum};
#[doc(inline)]
pub use progress::Progress;
#[doc(inline)]
pub use reason::CancelReason;
#[doc(inline)]
pub use remote::{
    DescendantControl, DescendantControls, LaneClosed, NestedExecutors, NestedRun, RemoteEnd,
    RemoteLane, RemoteTask, TaskExecutor, TaskOp,
};
#[doc(inline)]
pub use runtime::{DEFAULT_MAX_CONCURRENCY, Runtime, RuntimeBuilder};
#[doc(inline)]
pub use scope::TaskRuntime;
#[doc(inline)]
pub use source::TaskSource;
#[doc(inline)]
pub use spec::TaskSpec;
#[doc(inline)]
pub use task_control::{LiveStatus, TaskInfo};
