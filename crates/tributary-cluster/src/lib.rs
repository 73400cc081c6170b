//! Run tributary tasks on many worker processes and machines.
//!
//! A [`ClusterRuntime`] is a caller: its `run(tasks, config)` returns the
//! same [`RunHandle`](tributary_runtime::RunHandle) and
//! [`RunStream`](tributary_runtime::RunStream) as the local runtime, and
//! merge modes, completion and failure policies, pause, cancel, `add_task`
//! and progress work as they do locally, in the caller's process. The
//! tasks' steps run on [`Worker`]s: processes of the user's own binary that
//! register the graphs they can run under names ([`Graphs`]), claim tasks
//! from a shared [`Broker`] (Redis Streams or NATS JetStream), checkpoint
//! every step to a shared persister under their claim's fencing epoch, and
//! stream the items back.
//!
//! What the cluster guarantees (see `docs/cluster.md`):
//!
//! - a task runs on one worker at a time; a worker that stops renewing its
//!   claim (crashed, frozen, cut off) loses it within two heartbeats and
//!   another worker resumes the task from its last checkpoint — finished
//!   steps do not run again;
//! - a worker that lost its claim cannot write over the new owner's steps
//!   (its checkpoint writes are refused by epoch) nor speak for the task
//!   (the caller ignores events of older claims);
//! - each step's node item reaches the consumer once; the tokens of a step
//!   interrupted by a crash may be streamed again when the step re-runs;
//! - pause, resume and cancel reach the worker holding a task, and a run
//!   whose caller went away is cancelled on the workers (or left to
//!   finish, per [`Orphans`]).
//!
//! With the `durable` feature, workers also serve durable functions
//! (`Graphs::functions`) and `ClusterInvoke` runs a workflow's `ctx.call`
//! on them, journaled like any step.
//!
//! The wire protocol is in [`protocol`].

/// The guide to the cluster (`docs/cluster.md`), whose examples are
/// compiled and run as doctests (with the `redis` feature, which its
/// production example uses).
#[cfg_attr(feature = "redis", doc = include_str!("../../../docs/cluster.md"))]
pub mod guide {}

mod broker;
mod caller;
mod error;
mod fence;
#[cfg(feature = "durable")]
mod functions;
mod ops;
mod options;
pub mod protocol;
#[cfg(feature = "redis")]
mod redis_persister;
mod registry;
mod worker;

#[cfg(feature = "nats")]
#[doc(inline)]
pub use broker::NatsBroker;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use broker::RedisBroker;
#[doc(inline)]
pub use broker::{Broker, MemoryBroker};
#[doc(inline)]
pub use caller::ClusterRuntime;
#[doc(inline)]
pub use error::ClusterError;
#[cfg(feature = "durable")]
#[doc(inline)]
pub use functions::{CallError, ClusterInvoke, FUNCTIONS_GRAPH};
#[doc(inline)]
pub use ops::{DeadTask, Fleet, FleetStatus, OpsError, RetriedTask, TaskIdentity, WorkerBeat};
#[doc(inline)]
pub use options::{ClusterOptions, Orphans};
#[cfg(feature = "redis")]
#[doc(inline)]
pub use redis_persister::RedisPersister;
#[doc(inline)]
pub use registry::Graphs;
#[doc(inline)]
pub use worker::{Worker, WorkerBuilder, WorkerStats};
