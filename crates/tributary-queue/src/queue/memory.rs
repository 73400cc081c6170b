//! The in-process backend.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::{DeadLetter, Delivery, QueueOptions, Start, WorkQueue};
use crate::error::QueueError;

/// How many recent dedupe ids a memory queue remembers.
const DEDUPE_WINDOW: usize = 100_000;

struct Pending {
    consumer: String,
    until: Instant,
    deliveries: u32,
    last_error: Option<String>,
}

#[derive(Default)]
struct Group {
    next: u64,
    pending: BTreeMap<u64, Pending>,
    dead: Vec<DeadLetter>,
    // The id of the next dead letter.
    dead_next: u64,
}

impl Group {
    fn bury(
        &mut self,
        (payload, dedupe_id): (Bytes, Option<String>),
        attempts: u32,
        last_error: Option<String>,
    ) {
        self.dead.push(DeadLetter {
            id: self.dead_next.to_string(),
            payload,
            dedupe_id,
            attempts,
            last_error,
        });
        self.dead_next += 1;
    }
}

#[derive(Default)]
struct State {
    // Sequence number of `log[0]`.
    base: u64,
    log: VecDeque<(Bytes, Option<String>)>,
    seen: HashSet<String>,
    seen_order: VecDeque<String>,
    groups: HashMap<String, Group>,
}

impl State {
    fn end(&self) -> u64 {
        self.base + self.log.len() as u64
    }

    fn message(&self, seq: u64) -> Option<&(Bytes, Option<String>)> {
        seq.checked_sub(self.base)
            .and_then(|i| self.log.get(usize::try_from(i).ok()?))
    }
}

/// A work queue in this process's memory, for tests and single-process
/// use. Clones share the queue. It holds every message until
/// [`trim`](WorkQueue::trim) removes what every group settled (memory grows
/// with the unsettled history), and remembers the last 100,000 dedupe ids.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use tributary_queue::{MemoryQueue, QueueOptions, Start, WorkQueue};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tributary_queue::QueueError> {
/// let queue = MemoryQueue::new("jobs", QueueOptions::default());
/// queue.create_group("workers", Start::First).await?;
/// queue.publish("resize cat.png".into(), Some("job-1")).await?;
/// queue.publish("resize cat.png".into(), Some("job-1")).await?; // a duplicate
///
/// let got = queue.fetch("workers", "w1", 10, Duration::ZERO).await?;
/// assert_eq!(got.len(), 1);
/// assert_eq!(got[0].attempt, 1);
/// queue.ack(&got[0]).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryQueue {
    name: String,
    options: QueueOptions,
    state: Arc<Mutex<State>>,
    published: Arc<Notify>,
}

impl std::fmt::Debug for MemoryQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryQueue")
            .field("name", &self.name)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(name: impl Into<String>, options: QueueOptions) -> Self {
        Self {
            name: name.into(),
            options,
            state: Arc::default(),
            published: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The lock is never held across a panic-prone call.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn unknown(&self, group: &str) -> QueueError {
        QueueError::UnknownGroup {
            queue: self.name.clone(),
            group: group.to_owned(),
        }
    }

    fn seq(&self, delivery: &Delivery) -> Result<u64, QueueError> {
        delivery.token.parse().map_err(|_| QueueError::NotHeld {
            queue: self.name.clone(),
            consumer: delivery.consumer.clone(),
            token: delivery.token.clone(),
        })
    }

    fn try_fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
    ) -> Result<Vec<Delivery>, QueueError> {
        let now = Instant::now();
        let options = self.options;
        let mut state = self.lock();
        let State {
            base, log, groups, ..
        } = &mut *state;
        let message = |seq: u64| {
            seq.checked_sub(*base)
                .and_then(|i| log.get(usize::try_from(i).ok()?))
                .cloned()
                .unwrap_or_default()
        };
        let g = groups.get_mut(group).ok_or_else(|| self.unknown(group))?;
        let mut out = Vec::new();
        let expired: Vec<u64> = g
            .pending
            .iter()
            .filter(|(_, p)| p.until <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if out.len() >= max {
                break;
            }
            let p = g.pending.get_mut(&seq).expect("listed");
            let (payload, dedupe_id) = message(seq);
            if p.deliveries >= options.max_deliveries {
                let p = g.pending.remove(&seq).expect("listed");
                g.bury((payload, dedupe_id), p.deliveries, p.last_error);
                continue;
            }
            p.deliveries += 1;
            p.consumer = consumer.to_owned();
            p.until = now + options.lease;
            out.push(Delivery {
                payload,
                dedupe_id,
                attempt: p.deliveries,
                group: group.to_owned(),
                consumer: consumer.to_owned(),
                position: seq.to_string(),
                token: seq.to_string(),
            });
        }
        let end = *base + log.len() as u64;
        g.next = g.next.max(*base);
        while out.len() < max && g.pending.len() < options.max_in_flight && g.next < end {
            let seq = g.next;
            g.next += 1;
            let (payload, dedupe_id) = message(seq);
            g.pending.insert(
                seq,
                Pending {
                    consumer: consumer.to_owned(),
                    until: now + options.lease,
                    deliveries: 1,
                    last_error: None,
                },
            );
            out.push(Delivery {
                payload,
                dedupe_id,
                attempt: 1,
                group: group.to_owned(),
                consumer: consumer.to_owned(),
                position: seq.to_string(),
                token: seq.to_string(),
            });
        }
        Ok(out)
    }
}

#[async_trait]
impl WorkQueue for MemoryQueue {
    fn name(&self) -> &str {
        &self.name
    }

    fn options(&self) -> QueueOptions {
        self.options
    }

    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError> {
        {
            let mut state = self.lock();
            if let Some(id) = dedupe_id {
                if !state.seen.insert(id.to_owned()) {
                    return Ok(());
                }
                state.seen_order.push_back(id.to_owned());
                if state.seen_order.len() > DEDUPE_WINDOW {
                    if let Some(old) = state.seen_order.pop_front() {
                        state.seen.remove(&old);
                    }
                }
            }
            state.log.push_back((payload, dedupe_id.map(str::to_owned)));
        }
        self.published.notify_waiters();
        Ok(())
    }

    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError> {
        let mut state = self.lock();
        let next = match start {
            Start::First => state.base,
            Start::New => state.end(),
            Start::After(position) => position
                .parse::<u64>()
                .ok()
                .and_then(|p| p.checked_add(1))
                .ok_or_else(|| QueueError::InvalidPosition {
                    queue: self.name.clone(),
                    position: position.clone(),
                })?
                .max(state.base),
        };
        state
            .groups
            .entry(group.to_owned())
            .or_insert_with(|| Group {
                next,
                ..Group::default()
            });
        Ok(())
    }

    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        let deadline = Instant::now() + wait;
        loop {
            let published = self.published.notified();
            let got = self.try_fetch(group, consumer, max)?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline {
                return Ok(got);
            }
            // Woken by a publish, or soon enough to see a lease run out.
            let nap = (deadline - now).min(Duration::from_millis(10));
            let _ = tokio::time::timeout(nap, published).await;
        }
    }

    async fn ack(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let seq = self.seq(delivery)?;
        let mut state = self.lock();
        let g = state
            .groups
            .get_mut(&delivery.group)
            .ok_or_else(|| self.unknown(&delivery.group))?;
        g.pending.remove(&seq);
        Ok(())
    }

    async fn nak(
        &self,
        delivery: &Delivery,
        delay: Duration,
        error: &str,
    ) -> Result<(), QueueError> {
        let seq = self.seq(delivery)?;
        let mut state = self.lock();
        let message = state.message(seq).cloned().unwrap_or_default();
        let max = self.options.max_deliveries;
        let g = state
            .groups
            .get_mut(&delivery.group)
            .ok_or_else(|| self.unknown(&delivery.group))?;
        let Some(p) = g.pending.get_mut(&seq) else {
            return Ok(());
        };
        p.last_error = Some(error.to_owned());
        if p.deliveries >= max {
            let p = g.pending.remove(&seq).expect("present");
            g.bury(message, p.deliveries, p.last_error);
        } else {
            p.until = Instant::now() + delay;
        }
        Ok(())
    }

    async fn in_progress(&self, delivery: &Delivery) -> Result<(), QueueError> {
        let seq = self.seq(delivery)?;
        let lease = self.options.lease;
        let mut state = self.lock();
        let g = state
            .groups
            .get_mut(&delivery.group)
            .ok_or_else(|| self.unknown(&delivery.group))?;
        match g.pending.get_mut(&seq) {
            Some(p) if p.consumer == delivery.consumer && p.deliveries == delivery.attempt => {
                p.until = Instant::now() + lease;
                Ok(())
            }
            _ => Err(QueueError::NotHeld {
                queue: self.name.clone(),
                consumer: delivery.consumer.clone(),
                token: delivery.token.clone(),
            }),
        }
    }

    async fn terminate(&self, delivery: &Delivery, error: &str) -> Result<(), QueueError> {
        let seq = self.seq(delivery)?;
        let mut state = self.lock();
        let message = state.message(seq).cloned().unwrap_or_default();
        let g = state
            .groups
            .get_mut(&delivery.group)
            .ok_or_else(|| self.unknown(&delivery.group))?;
        if let Some(p) = g.pending.remove(&seq) {
            g.bury(message, p.deliveries, Some(error.to_owned()));
        }
        Ok(())
    }

    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        let state = self.lock();
        let g = state.groups.get(group).ok_or_else(|| self.unknown(group))?;
        Ok(g.dead.clone())
    }

    async fn remove_dead_letter(&self, group: &str, id: &str) -> Result<bool, QueueError> {
        let mut state = self.lock();
        let Some(g) = state.groups.get_mut(group) else {
            return Ok(false);
        };
        let before = g.dead.len();
        g.dead.retain(|d| d.id != id);
        Ok(g.dead.len() < before)
    }

    async fn trim(&self) -> Result<u64, QueueError> {
        let mut state = self.lock();
        let Some(keep_from) = state
            .groups
            .values()
            .map(|g| {
                g.pending
                    .keys()
                    .next()
                    .copied()
                    .unwrap_or(g.next)
                    .min(g.next)
            })
            .min()
        else {
            // Nobody has read anything: everything is unread.
            return Ok(0);
        };
        let mut removed = 0;
        while state.base < keep_from && state.log.pop_front().is_some() {
            state.base += 1;
            removed += 1;
        }
        Ok(removed)
    }

    async fn stored(&self) -> Result<u64, QueueError> {
        Ok(self.lock().log.len() as u64)
    }

    async fn backlog(&self, group: &str) -> Result<crate::Backlog, QueueError> {
        let state = self.lock();
        let g = state.groups.get(group).ok_or_else(|| self.unknown(group))?;
        Ok(crate::Backlog {
            waiting: Some(state.end().saturating_sub(g.next)),
            pending: g.pending.len() as u64,
        })
    }

    async fn delete_group(&self, group: &str) -> Result<(), QueueError> {
        self.lock().groups.remove(group);
        Ok(())
    }

    async fn destroy(&self) -> Result<(), QueueError> {
        let mut state = self.lock();
        let end = state.end();
        *state = State {
            base: end,
            ..State::default()
        };
        Ok(())
    }
}
