//! One work-queue contract over memory, Redis Streams and NATS JetStream.
//!
//! Producers [`publish`](WorkQueue::publish) messages; consumers of a group
//! [`fetch`](WorkQueue::fetch) them under a lease and settle each one (ack,
//! nak with a delay, in progress, terminate). Unsettled deliveries come
//! back with their attempt number raised, and messages out of attempts go
//! to the group's dead letters. Groups read the queue independently, so a
//! queue is also a replayable event stream. See [`WorkQueue`] for the
//! contract and `docs/brokers.md` for each backend's guarantees and the
//! settings production brokers need.
//!
//! This crate is the brokers' layer beneath a cluster executor: it knows
//! nothing of tasks or graphs, only of opaque messages.

mod error;
mod queue;

#[doc(inline)]
pub use error::{BoxError, QueueError};
#[doc(inline)]
pub use queue::memory::MemoryQueue;
#[cfg(feature = "nats")]
#[doc(inline)]
pub use queue::nats::NatsQueue;
#[cfg(feature = "redis")]
#[doc(inline)]
pub use queue::redis::RedisQueue;
#[doc(inline)]
pub use queue::{Backlog, DeadLetter, Delivery, QueueOptions, Start, WorkQueue};
