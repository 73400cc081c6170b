//! The work-queue contract and its backends.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::QueueError;

pub(crate) mod memory;
#[cfg(feature = "nats")]
pub(crate) mod nats;
#[cfg(feature = "redis")]
pub(crate) mod redis;

/// The settings of a queue, the same on every backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueOptions {
    /// How long a delivery is held before it goes to another consumer.
    pub lease: Duration,
    /// Deliveries of a message before it goes to the dead letters.
    pub max_deliveries: u32,
    /// Unsettled deliveries a group may hold at once.
    pub max_in_flight: usize,
}

impl Default for QueueOptions {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
            max_deliveries: 5,
            max_in_flight: 1024,
        }
    }
}

impl QueueOptions {
    /// Sets [`lease`](Self::lease).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sets [`max_deliveries`](Self::max_deliveries) (at least 1).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n.max(1);
        self
    }

    /// Sets [`max_in_flight`](Self::max_in_flight) (at least 1).
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }
}

/// Where a new group starts reading.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Start {
    /// From the first message still in the queue: the whole history.
    First,
    /// Only messages published after the group was created.
    New,
    /// After the message at this [position](Delivery::position) (as another
    /// group received it): a replay from a known point.
    After(String),
}

/// One message handed to a consumer, to be settled with the queue.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Delivery {
    /// The message.
    pub payload: Bytes,
    /// The dedupe id it was published with.
    pub dedupe_id: Option<String>,
    /// 1 on the first delivery, one more on each redelivery.
    pub attempt: u32,
    /// The group it was delivered in.
    pub group: String,
    /// The consumer holding it.
    pub consumer: String,
    /// The message's place in the queue, for [`Start::After`].
    pub position: String,
    /// The backend's handle of this delivery.
    pub token: String,
}

/// A message a group gave up on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetter {
    /// The dead letter's id in its group's dead letters, for
    /// [`remove_dead_letter`](WorkQueue::remove_dead_letter).
    pub id: String,
    /// The message.
    pub payload: Bytes,
    /// Its dedupe id.
    pub dedupe_id: Option<String>,
    /// How many times it was delivered.
    pub attempts: u32,
    /// The error of its last nak or its terminate, if any was given.
    pub last_error: Option<String>,
}

/// A work queue.
///
/// A queue is an append-only log of messages. **Groups** read it
/// independently, each with its own cursor (a group created from the start
/// replays the whole history; two groups each see every message, in
/// order). Inside a group, messages are shared out among named
/// **consumers**: each message goes to one consumer at a time, under a
/// **lease**. The consumer settles it:
///
/// - [`ack`](WorkQueue::ack): done, never delivered again to this group;
/// - [`nak`](WorkQueue::nak): failed, deliver again no earlier than a delay;
/// - [`in_progress`](WorkQueue::in_progress): still working, extend the lease;
/// - [`terminate`](WorkQueue::terminate): give up, straight to the
///   dead letters.
///
/// A delivery not settled within its lease goes to the next consumer that
/// fetches, with its [`attempt`](Delivery::attempt) one higher. After
/// [`max_deliveries`](QueueOptions::max_deliveries) attempts it goes to the
/// group's dead letters with its last error. A group never holds more than
/// [`max_in_flight`](QueueOptions::max_in_flight) unsettled deliveries.
/// A message published with a dedupe id already seen is delivered once.
///
/// Backends: [`MemoryQueue`](crate::MemoryQueue) (one process, tests) and
/// [`RedisQueue`](crate::RedisQueue) (Redis Streams consumer groups, the
/// pending-entries list and its delivery counts).
///
/// Every method is cancel safe in the sense that matters for a queue: a
/// cancelled call loses no message. A cancelled `fetch` may leave messages
/// leased to the consumer; they come back after their lease.
#[async_trait]
pub trait WorkQueue: Send + Sync + fmt::Debug {
    /// The queue's name.
    fn name(&self) -> &str;

    /// The queue's settings.
    fn options(&self) -> QueueOptions;

    /// Appends a message. When this returns `Ok`, the broker holds it (the
    /// durable backends have persisted it as far as they are configured to).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    ///
    /// # Cancel safety
    ///
    /// A cancelled publish may or may not have been stored; publish again
    /// with the same dedupe id to be sure it is there once.
    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError>;

    /// Creates `group` starting at `start`; an existing group is left as
    /// it is.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError>;

    /// Up to `max` deliveries for `consumer` of `group` (fewer when the
    /// group is at its in-flight limit), waiting up to `wait` for at least
    /// one. Expired leases are handed out first, with their attempt one
    /// higher; messages out of attempts go to the dead letters on the way.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownGroup`], or when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: messages a cancelled fetch had leased come back after
    /// their lease.
    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError>;

    /// Settles a delivery as done.
    ///
    /// # Errors
    ///
    /// When the broker fails. Acknowledging twice is not an error.
    ///
    /// # Cancel safety
    ///
    /// A cancelled ack may not have reached the broker: the message is then
    /// delivered again after its lease (call `ack` again to be sure).
    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Settles many deliveries as done, in as few round trips as the broker
    /// allows (Redis: one pipeline for the whole batch). The default acks
    /// them one by one.
    ///
    /// # Errors
    ///
    /// When the broker fails; some of the deliveries may then be settled
    /// and the others are delivered again after their lease.
    ///
    /// # Cancel safety
    ///
    /// As [`ack`](Self::ack), for each delivery.
    async fn ack_all(&self, deliveries: &[Delivery]) -> Result<(), QueueError> {
        for delivery in deliveries {
            self.ack(delivery).await?;
        }
        Ok(())
    }

    /// Settles a delivery as failed with `error`: it is delivered again no
    /// earlier than `delay` from now (or goes to the dead letters when it
    /// used its last attempt).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    ///
    /// # Cancel safety
    ///
    /// A cancelled nak may not have reached the broker: the message then
    /// comes back after its lease instead of after `delay`.
    async fn nak(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError>;

    /// Extends the delivery's lease by a full lease from now.
    ///
    /// # Errors
    ///
    /// [`QueueError::NotHeld`] when the lease already went to another
    /// consumer, or when the broker fails.
    ///
    /// # Cancel safety
    ///
    /// A cancelled call may leave the lease unextended; call it again.
    async fn in_progress(&self, delivery: &Delivery) -> Result<(), QueueError>;

    /// Gives up on a delivery: it goes to the dead letters with `error`.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    ///
    /// # Cancel safety
    ///
    /// A cancelled call may leave the message unsettled (it comes back after
    /// its lease) or, on the durable backends, recorded as a dead letter and
    /// still unsettled; call it again.
    async fn terminate(&self, delivery: &Delivery, error: &str) -> Result<(), QueueError>;

    /// The dead letters of `group`, oldest first.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError>;

    /// Removes the dead letter `id` (its [`DeadLetter::id`]) from the dead
    /// letters of `group`, after it was dealt with (published again, say).
    /// Returns whether it was there: removing it twice, or from another
    /// group, removes nothing.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<bool, QueueError>;

    /// Retention: removes the messages every group has settled, and returns
    /// how many went. A message some group has not read yet, or holds
    /// unsettled, is never removed.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn trim(&self) -> Result<u64, QueueError>;

    /// Removes `group`: its cursor, its unsettled deliveries and its dead
    /// letters (the messages stay for the other groups). Removing a group
    /// that does not exist is not an error. Afterwards the group no longer
    /// holds back [`trim`](Self::trim).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn delete_group(&self, group: &str) -> Result<(), QueueError>;

    /// Removes the whole queue: its messages, groups and dead letters. The
    /// queue object must not be used afterwards (a backend may create the
    /// queue again on the next call).
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn destroy(&self) -> Result<(), QueueError>;

    /// How many messages the queue holds.
    ///
    /// # Errors
    ///
    /// When the broker fails.
    async fn stored(&self) -> Result<u64, QueueError>;

    /// How far `group` is behind: messages not yet delivered to it, and
    /// messages delivered and not yet settled.
    ///
    /// # Errors
    ///
    /// [`QueueError::UnknownGroup`] for a group never made; when the broker
    /// fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    async fn backlog(&self, group: &str) -> Result<Backlog, QueueError>;
}

/// How far a group is behind ([`WorkQueue::backlog`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Backlog {
    /// Messages not yet delivered to the group (its lag); `None` when the
    /// broker cannot tell (Redis after entries were deleted out of order).
    pub waiting: Option<u64>,
    /// Messages delivered to a consumer of the group and not yet settled.
    pub pending: u64,
}
