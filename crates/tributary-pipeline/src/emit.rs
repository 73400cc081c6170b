//! Sending a node's outputs downstream: fan-out, backpressure, the pause
//! gate, and the [`Emitter`] a source writes to.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use tokio::time::Instant;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use crate::graph::FanOut;
use crate::run::edge::EdgeTx;
use crate::run::metrics::NodeCounters;

/// Why an item could not be emitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EmitError {
    /// The pipeline was cancelled (or failed): stop producing.
    #[error("the pipeline was cancelled")]
    Cancelled,
    /// Every downstream node has ended: nobody reads these items any more.
    #[error("every downstream node has ended")]
    Closed,
}

/// The run's stop: a flag every node reads with one atomic load, and the
/// token that wakes the nodes waiting on it. Set the flag first.
#[derive(Debug, Default)]
pub(crate) struct Stop {
    flag: AtomicBool,
    token: CancellationToken,
}

impl Stop {
    /// Stop the run (cancel or failure).
    pub(crate) fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.token.cancel();
    }

    /// Whether the run was stopped.
    pub(crate) fn is_set(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    /// A watch for one node: its own child of the token.
    pub(crate) fn watch(self: &Arc<Self>) -> StopWatch {
        StopWatch {
            stop: Arc::clone(self),
            wait: Box::pin(self.token.child_token().cancelled_owned()),
            registered: None,
        }
    }
}

/// One node's wait for the stop. Waiting on a token takes its lock on
/// every poll; this polls it only until it has registered the node's waker,
/// and after that reads the flag (the token still wakes the node).
#[derive(Debug)]
pub(crate) struct StopWatch {
    stop: Arc<Stop>,
    wait: Pin<Box<WaitForCancellationFutureOwned>>,
    registered: Option<Waker>,
}

impl StopWatch {
    pub(crate) fn is_set(&self) -> bool {
        self.stop.is_set()
    }

    pub(crate) fn poll_stopped(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        if self.stop.is_set() {
            return Poll::Ready(());
        }
        if self
            .registered
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            return Poll::Pending;
        }
        match self.wait.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(()),
            Poll::Pending => {
                self.registered = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }

    /// Resolves once the run is stopped.
    pub(crate) async fn stopped(&mut self) {
        poll_fn(|cx| self.poll_stopped(cx)).await
    }
}

/// The pause gate and the stop a node holds.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    pub(crate) stop: Arc<Stop>,
    pub(crate) pause: watch::Receiver<bool>,
    /// The gate's value when this copy last read it.
    pub(crate) paused_seen: bool,
}

impl Control {
    /// Wait while the pipeline is paused.
    pub(crate) async fn resumed(&mut self) -> Result<(), EmitError> {
        // Fast path: the gate's version is an atomic; read the value (under
        // its lock) only when it changed since this node last looked.
        if !self.pause.has_changed().unwrap_or(true) && !self.paused_seen {
            return Ok(());
        }
        self.paused_seen = *self.pause.borrow_and_update();
        if !self.paused_seen {
            return Ok(());
        }
        // Rare (only while paused): a watch of its own is fine.
        let mut stop = self.stop.watch();
        tokio::select! {
            biased;
            () = stop.stopped() => Err(EmitError::Cancelled),
            r = self.pause.wait_for(|paused| !paused) => {
                // The gate's sender lives as long as the run; gone means over.
                r.map(|_| ()).map_err(|_| EmitError::Cancelled)?;
                self.paused_seen = false;
                Ok(())
            }
        }
    }
}

/// A node's outgoing edges.
#[derive(Debug)]
pub(crate) struct Outputs<T> {
    edges: Vec<Option<EdgeTx<T>>>,
    open: usize,
    fan_out: FanOut,
    next: usize,
    counters: Arc<NodeCounters>,
    control: Control,
}

impl<T: Clone> Outputs<T> {
    pub(crate) fn new(
        edges: Vec<EdgeTx<T>>,
        fan_out: FanOut,
        counters: Arc<NodeCounters>,
        control: Control,
    ) -> Self {
        Outputs {
            open: edges.len(),
            edges: edges.into_iter().map(Some).collect(),
            fan_out,
            next: 0,
            counters,
            control,
        }
    }

    /// Whether every downstream node has ended.
    pub(crate) fn all_closed(&self) -> bool {
        !self.edges.is_empty() && self.open == 0
    }

    /// Send one output: to every open edge (copy) or the next one (round
    /// robin), waiting while paused and while the edge is full.
    pub(crate) async fn send(&mut self, item: T) -> Result<(), EmitError> {
        if self.edges.is_empty() {
            self.counters.items_out.add(1);
            return Ok(());
        }
        self.control.resumed().await?;
        match self.fan_out {
            FanOut::Copy => {
                let Some(last) = self.edges.iter().rposition(Option::is_some) else {
                    return Err(EmitError::Closed);
                };
                for i in 0..last {
                    if self.edges[i].is_some() {
                        self.send_to(i, item.clone()).await?;
                    }
                }
                self.send_to(last, item).await?;
            }
            FanOut::RoundRobin => {
                let mut item = item;
                let n = self.edges.len();
                loop {
                    if self.open == 0 {
                        return Err(EmitError::Closed);
                    }
                    let i = self.next % n;
                    self.next = (i + 1) % n;
                    if self.edges[i].is_none() {
                        continue;
                    }
                    match self.send_to(i, item).await? {
                        None => break,
                        Some(back) => item = back,
                    }
                }
            }
        }
        if self.open == 0 {
            return Err(EmitError::Closed);
        }
        self.counters.items_out.add(1);
        Ok(())
    }

    /// Send to edge `i`; gives the item back when that edge has closed.
    async fn send_to(&mut self, i: usize, item: T) -> Result<Option<T>, EmitError> {
        let edge = self.edges[i].as_ref().expect("an open edge");
        let back = match edge.tx.try_send(item) {
            Ok(()) => {
                edge.counters.sent.add(1);
                return Ok(None);
            }
            Err(mpsc::error::TrySendError::Closed(item)) => item,
            Err(mpsc::error::TrySendError::Full(item)) => {
                // No race with the cancel token here: on cancel every node
                // drops its inputs, so a blocked send ends as closed.
                let started = Instant::now();
                let sent = edge.tx.send(item).await;
                let waited = started.elapsed().as_nanos();
                self.counters
                    .blocked_ns
                    .add(u64::try_from(waited).unwrap_or(u64::MAX));
                match sent {
                    Ok(()) => {
                        edge.counters.sent.add(1);
                        return Ok(None);
                    }
                    Err(mpsc::error::SendError(item)) => item,
                }
            }
        };
        self.edges[i] = None;
        self.open -= 1;
        if self.control.stop.is_set() {
            return Err(EmitError::Cancelled);
        }
        Ok(Some(back))
    }
}

/// Where a [`Source`](crate::Source) puts its items.
///
/// Each [`emit`](Emitter::emit) waits while the pipeline is paused and
/// while the downstream edge is full: a source never runs ahead of its
/// slowest consumer by more than the edges' capacities.
#[derive(Debug)]
pub struct Emitter<T> {
    pub(crate) outputs: Outputs<T>,
}

impl<T: Clone> Emitter<T> {
    /// Send one item downstream.
    ///
    /// # Errors
    ///
    /// [`EmitError::Cancelled`] once the pipeline is cancelled or failed;
    /// [`EmitError::Closed`] once every downstream node has ended. Either
    /// way the source should return (returning the error with `?` is fine:
    /// the run does not count it as the source's failure).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: an item whose send is cancelled may have reached
    /// some downstream nodes (copy fan-out) and not others.
    pub async fn emit(&mut self, item: T) -> Result<(), EmitError> {
        self.outputs.send(item).await
    }
}
