//! Errors of work queues.

/// A boxed error from a backend client.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A work-queue operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// The broker or its client failed.
    #[error("{backend} queue `{queue}` failed on {what}")]
    Backend {
        /// The backend (`"memory"`, `"redis"`, `"nats"`).
        backend: &'static str,
        /// The queue.
        queue: String,
        /// What was being done.
        what: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The broker did not answer within the deadline; the call can be tried
    /// again.
    #[error("{backend} queue `{queue}` got no reply within {after:?} on {what}")]
    Timeout {
        /// The backend.
        backend: &'static str,
        /// The queue.
        queue: String,
        /// What was being done.
        what: String,
        /// The deadline that passed.
        after: std::time::Duration,
    },
    /// A queue or group name the backend cannot use.
    #[error("invalid name `{name}`: {reason}")]
    InvalidName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A [`Start::After`](crate::Start::After) position that is not one of
    /// this backend's.
    #[error("`{position}` is not a position in queue `{queue}`")]
    InvalidPosition {
        /// The queue.
        queue: String,
        /// The position.
        position: String,
    },
    /// The group was never created on this queue.
    #[error("queue `{queue}` has no group `{group}`")]
    UnknownGroup {
        /// The queue.
        queue: String,
        /// The group.
        group: String,
    },
    /// The delivery is no longer held by its consumer: it was acknowledged
    /// already, or its lease ran out and it went to another consumer.
    #[error("delivery {token} of queue `{queue}` is no longer held by consumer `{consumer}`")]
    NotHeld {
        /// The queue.
        queue: String,
        /// The consumer that tried to settle it.
        consumer: String,
        /// The backend's id of the delivery.
        token: String,
    },
}
