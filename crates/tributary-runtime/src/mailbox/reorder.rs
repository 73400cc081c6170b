//! The receiving half of the mailbox: puts each task's items back in lane
//! order. A task's items travel in order, but its terminal item may take the
//! control channel (it never waits for room), so it can overtake the items
//! before it; the receiving half holds it until they have arrived.

use std::collections::HashMap;
use std::task::{Context, Poll};

use tokio::sync::mpsc;

use super::Envelope;

/// Hashes lane indices: they are handed out by the runtime (0, 1, 2, ...),
/// never chosen by a caller, so a multiplicative hash is enough and much
/// cheaper than SipHash on the per-item path.
#[derive(Clone, Copy, Default)]
struct IndexHash;

impl std::hash::BuildHasher for IndexHash {
    type Hasher = IndexHasher;

    fn build_hasher(&self) -> IndexHasher {
        IndexHasher(0)
    }
}

struct IndexHasher(u64);

impl std::hash::Hasher for IndexHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// Re-ordering for the shared mailbox (`AsCompleted`, `FinalOnly`): counts
/// what each lane delivered and parks a terminal that came early.
#[derive(Default)]
pub(crate) struct Reorder {
    received: HashMap<u64, u64, IndexHash>,
    parked: HashMap<u64, Envelope, IndexHash>,
}

impl Reorder {
    /// A terminal item from the control channel: `Some` when it is due now,
    /// `None` when it waits for the lane's earlier items.
    pub(crate) fn terminal(&mut self, env: Envelope) -> Option<Envelope> {
        if self.received.get(&env.index).copied().unwrap_or(0) == env.seq {
            Some(env)
        } else {
            self.parked.insert(env.index, env);
            None
        }
    }

    /// A non-terminal item from the mailbox was delivered: the lane's parked
    /// terminal, if it is due now.
    pub(crate) fn delivered(&mut self, index: u64) -> Option<Envelope> {
        let count = self.received.entry(index).or_insert(0);
        *count += 1;
        let expected = *count;
        if !self.parked.is_empty() && self.parked.get(&index).is_some_and(|p| p.seq == expected) {
            return self.parked.remove(&index);
        }
        None
    }

    /// The lane's terminal item was delivered: forget the lane.
    pub(crate) fn ended(&mut self, index: u64) {
        self.received.remove(&index);
    }

    /// Whether no terminal waits.
    pub(crate) fn is_idle(&self) -> bool {
        self.parked.is_empty()
    }
}

/// The receiving end of one task's own channel (`Zip`, `Ordered`), with
/// its terminal item put back in place.
pub(crate) struct LaneReceiver {
    pub(crate) index: u64,
    pub(crate) cohort: u64,
    rx: Option<mpsc::Receiver<Envelope>>,
    received: u64,
    terminal: Option<Envelope>,
    /// Zip: the lane's item of the round being assembled.
    pub(crate) buffered: Option<Envelope>,
    /// Zip: the lane's terminal item was taken.
    pub(crate) done: bool,
}

impl LaneReceiver {
    pub(crate) fn new(index: u64, cohort: u64, rx: Option<mpsc::Receiver<Envelope>>) -> Self {
        LaneReceiver {
            index,
            cohort,
            rx,
            received: 0,
            terminal: None,
            buffered: None,
            done: false,
        }
    }

    /// The lane's terminal item, from the control channel.
    pub(crate) fn set_terminal(&mut self, env: Envelope) {
        self.terminal = Some(env);
    }

    /// The lane's next item in order. `Ready(None)` once, when the channel
    /// closes (the terminal comes through the control channel, whose poll
    /// wakes the merger); `Pending` afterwards until the terminal is due.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when it is returned.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Envelope>> {
        if self
            .terminal
            .as_ref()
            .is_some_and(|t| t.seq == self.received)
        {
            self.received += 1;
            return Poll::Ready(self.terminal.take());
        }
        let Some(rx) = &mut self.rx else {
            return Poll::Pending;
        };
        match rx.poll_recv(cx) {
            Poll::Ready(Some(env)) => {
                self.received += 1;
                Poll::Ready(Some(env))
            }
            Poll::Ready(None) => {
                self.rx = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
