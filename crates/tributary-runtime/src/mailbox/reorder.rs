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
    /// `Ordered`: the lane is at the front, and its channel is closed.
    front: bool,
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
            front: false,
            buffered: None,
            done: false,
        }
    }

    /// The lane's terminal item, from the control channel.
    pub(crate) fn set_terminal(&mut self, env: Envelope) {
        self.terminal = Some(env);
    }

    /// `Zip`: the lane's next item in order. `Ready(None)` once, when the channel
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

    /// `Ordered`: the lane is now at the front. Closing its channel tells
    /// the lane to send everything after into the run's mailbox (a lane
    /// waiting for room in its channel is woken to do so). The channel
    /// reports its end only once it is closed, empty, and no emitter of the
    /// lane holds room in it: every item the lane will ever put there has
    /// then been read, and the lane's later items are in the mailbox, in
    /// order.
    pub(crate) fn bring_to_front(&mut self) {
        if !self.front {
            self.front = true;
            if let Some(rx) = &mut self.rx {
                rx.close();
            }
        }
    }

    /// `Ordered`: the next item of the front lane, which reads its channel
    /// to the end and then the run's mailbox (see [`bring_to_front`](Self::bring_to_front)).
    /// Never `Ready(None)`: the lane ends with its terminal item.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an item is taken only when it is returned (or dropped,
    /// when it was sent after its lane's terminal item).
    pub(crate) fn poll_front(
        &mut self,
        mailbox: &mut mpsc::Receiver<Envelope>,
        cx: &mut Context<'_>,
    ) -> Poll<Envelope> {
        self.bring_to_front();
        loop {
            if let Some(terminal) = self.terminal.take_if(|t| t.seq == self.received) {
                self.received += 1;
                return Poll::Ready(terminal);
            }
            if let Some(rx) = &mut self.rx {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(env)) => {
                        self.received += 1;
                        return Poll::Ready(env);
                    }
                    Poll::Ready(None) => {
                        self.rx = None;
                        continue;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            }
            match mailbox.poll_recv(cx) {
                Poll::Ready(Some(env)) if env.index == self.index && env.seq == self.received => {
                    self.received += 1;
                    return Poll::Ready(env);
                }
                // Only the front lane sends into the mailbox, its items in
                // order, so anything else was sent after its lane's terminal
                // item (by an emitter the task left running): dropped, as
                // such items are with the lane's channel.
                Poll::Ready(Some(_)) => {}
                // The run holds a sender of its mailbox: it never ends.
                Poll::Ready(None) | Poll::Pending => return Poll::Pending,
            }
        }
    }
}
