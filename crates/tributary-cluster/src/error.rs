//! The cluster's errors.

use tributary_queue::QueueError;

/// What can go wrong setting up or running a worker or a caller.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// The broker failed.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Two graphs were registered under one name.
    #[error("a graph named `{0}` is already registered")]
    DuplicateGraph(String),
    /// A worker needs a persister that checks fencing epochs, so that a
    /// worker that lost its claim cannot overwrite the new owner's steps.
    #[error(
        "the worker's persister does not support fenced writes; use one that does \
         (InMemoryPersister, PostgresPersister, RedisPersister)"
    )]
    PersisterNotFenced,
    /// A setting is out of range.
    #[error("invalid setting `{name}`: {reason}")]
    Invalid {
        /// The setting.
        name: &'static str,
        /// Why.
        reason: String,
    },
}
