//! One node's task: take inputs through the join, run the processor with
//! up to `concurrency` inputs in flight, send the outputs, apply the error
//! policy, and end when the inputs end (or on cancel).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use futures_util::future::{BoxFuture, poll_immediate};
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::emit::{Control, EmitError, Emitter, Outputs};
use crate::graph::ErrorPolicy;
use crate::item::{BoxError, Input, Item, NodeContext, NodeInfo};
use crate::processor::{Processor, Source};
use crate::run::inputs::Inputs;
use crate::run::metrics::NodeCounters;
use crate::run::{DeadLetter, Failures};

type Outcome<T> = (Option<Input<T>>, Result<Vec<T>, BoxError>);

/// A processor call, with the copy of its input kept for the dead letters.
struct Call<T> {
    copy: Option<Input<T>>,
    fut: BoxFuture<'static, Result<Vec<T>, BoxError>>,
}

// The input copy is never pinned; only the boxed future is polled.
impl<T> Unpin for Call<T> {}

impl<T> Future for Call<T> {
    type Output = Outcome<T>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome<T>> {
        let r = std::task::ready!(self.fut.as_mut().poll(cx));
        Poll::Ready((self.copy.take(), r))
    }
}

/// The calls in flight: one slot for a sequential node (no allocation per
/// item), a set for a concurrent one, in input order when asked.
enum InFlight<T> {
    One(Option<Call<T>>),
    Unordered(FuturesUnordered<Call<T>>),
    Ordered(FuturesOrdered<Call<T>>),
}

impl<T> InFlight<T> {
    fn new(concurrency: usize, keep_order: bool) -> Self {
        match (concurrency, keep_order) {
            (1, _) => InFlight::One(None),
            (_, false) => InFlight::Unordered(FuturesUnordered::new()),
            (_, true) => InFlight::Ordered(FuturesOrdered::new()),
        }
    }

    fn len(&self) -> usize {
        match self {
            InFlight::One(c) => usize::from(c.is_some()),
            InFlight::Unordered(s) => s.len(),
            InFlight::Ordered(s) => s.len(),
        }
    }

    fn push(&mut self, call: Call<T>) {
        match self {
            InFlight::One(c) => *c = Some(call),
            InFlight::Unordered(s) => s.push(call),
            InFlight::Ordered(s) => s.push_back(call),
        }
    }
}

impl<T> Stream for InFlight<T> {
    type Item = Outcome<T>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Outcome<T>>> {
        match self.get_mut() {
            InFlight::One(slot) => match slot {
                None => Poll::Ready(None),
                Some(call) => {
                    let out = std::task::ready!(Pin::new(call).poll(cx));
                    *slot = None;
                    Poll::Ready(Some(out))
                }
            },
            InFlight::Unordered(s) => s.poll_next_unpin(cx),
            InFlight::Ordered(s) => s.poll_next_unpin(cx),
        }
    }
}

/// Everything a node's task needs.
pub(crate) struct NodeTask<T> {
    pub(crate) name: Arc<str>,
    pub(crate) info: Arc<NodeInfo>,
    pub(crate) counters: Arc<NodeCounters>,
    pub(crate) control: Control,
    pub(crate) outputs: Outputs<T>,
    pub(crate) on_error: ErrorPolicy,
    pub(crate) failures: Arc<Failures>,
}

impl<T: Item> NodeTask<T> {
    fn ctx(&self, seq: u64) -> NodeContext {
        NodeContext {
            info: Arc::clone(&self.info),
            seq,
        }
    }

    /// Run a source to its end.
    pub(crate) async fn run_source(self, source: Box<dyn Source<T>>) {
        let ctx = self.ctx(0);
        let NodeTask {
            name,
            counters,
            control,
            outputs,
            on_error,
            failures,
            ..
        } = self;
        let fut = source.run(Emitter { outputs }, ctx);
        let mut stop = control.stop.watch();
        let result = tokio::select! {
            biased;
            r = fut => r,
            () = stop.stopped() => Ok(()),
        };
        if let Err(error) = result {
            if error.downcast_ref::<EmitError>().is_none() {
                match on_error {
                    ErrorPolicy::Fail => failures.fail(&name, error, &control),
                    ErrorPolicy::Skip | ErrorPolicy::DeadLetter => {
                        tracing::warn!(node = %name, %error, "source failed; it ends here");
                        counters.skipped.add(1);
                    }
                }
            }
        }
        counters.ended.store(true, Relaxed);
    }

    /// Run a processor until its inputs end and its calls drain.
    pub(crate) async fn run_processor(
        mut self,
        processor: Arc<dyn Processor<T>>,
        mut inputs: Inputs<T>,
        concurrency: usize,
        keep_order: bool,
        dead_letters: Option<mpsc::Sender<DeadLetter<T>>>,
    ) {
        let mut in_flight = InFlight::new(concurrency, keep_order);
        let mut pause = self.control.pause.clone();
        let mut paused = *pause.borrow_and_update();
        let mut stop = self.control.stop.watch();
        let mut open = true;
        let mut seq = 0u64;
        let keep_copy = self.on_error == ErrorPolicy::DeadLetter;
        let mut dropped = false;
        while open || in_flight.len() > 0 {
            // A stop is seen here at once (an atomic), and below when the
            // node would otherwise wait.
            if stop.is_set() {
                dropped = true;
                break;
            }
            // The gate's version is an atomic; its lock is taken only when
            // it changed.
            if pause.has_changed().unwrap_or(false) {
                paused = *pause.borrow_and_update();
            }
            let take = open && !paused && in_flight.len() < concurrency;
            tokio::select! {
                biased;
                Some(outcome) = in_flight.next(), if in_flight.len() > 0 => {
                    self.counters.in_flight.sub(1);
                    if !self.deliver(outcome, &mut inputs, &mut open, dead_letters.as_ref()).await {
                        dropped = true;
                        break;
                    }
                }
                // Wake when the gate changes.
                _ = pause.changed(), if paused && open => {
                    paused = *pause.borrow_and_update();
                }
                input = inputs.next(), if take => match input {
                    Some(input) => {
                        let copy = keep_copy.then(|| input.clone());
                        let mut fut = processor.process(input, self.ctx(seq));
                        if tracing::enabled!(tracing::Level::TRACE) {
                            let span = tracing::trace_span!("pipeline.item", node = %self.name, seq);
                            fut = Box::pin(fut.instrument(span));
                        }
                        seq += 1;
                        let mut call = Call { copy, fut };
                        if in_flight.len() == 0 {
                            // Most calls finish at once: deliver without
                            // another turn of the loop (in order, as nothing
                            // earlier is pending).
                            if let Some(outcome) = poll_immediate(&mut call).await {
                                if !self
                                    .deliver(outcome, &mut inputs, &mut open, dead_letters.as_ref())
                                    .await
                                {
                                    dropped = true;
                                    break;
                                }
                                continue;
                            }
                        }
                        self.counters.in_flight.add(1);
                        in_flight.push(call);
                    }
                    None => open = false,
                },
                () = stop.stopped() => {
                    dropped = true;
                    break;
                }
            }
        }
        if dropped {
            let n = in_flight.len() as u64;
            self.counters.dropped.add(n);
            self.counters.in_flight.sub(n);
        }
        drop(in_flight);
        inputs.close(true);
        self.counters.ended.store(true, Relaxed);
    }

    /// Send a call's outputs, or apply the error policy to its failure;
    /// `false` when the node must stop (cancelled or failed).
    async fn deliver(
        &mut self,
        (copy, result): Outcome<T>,
        inputs: &mut Inputs<T>,
        open: &mut bool,
        dead_letters: Option<&mpsc::Sender<DeadLetter<T>>>,
    ) -> bool {
        let outs = match result {
            Ok(outs) => outs,
            Err(error) => return self.failed(copy, error, dead_letters).await,
        };
        let mut outs = outs.into_iter();
        while let Some(out) = outs.next() {
            if let Err(e) = self.outputs.send(out).await {
                let lost = 1 + outs.len() as u64;
                self.counters.dropped.add(lost);
                if e == EmitError::Cancelled {
                    return false;
                }
                break;
            }
        }
        if self.outputs.all_closed() && *open {
            // Nobody reads this node any more: stop taking inputs.
            *open = false;
            inputs.close(true);
        }
        true
    }

    /// Apply the error policy; `false` when the node must stop.
    async fn failed(
        &mut self,
        copy: Option<Input<T>>,
        error: BoxError,
        dead_letters: Option<&mpsc::Sender<DeadLetter<T>>>,
    ) -> bool {
        match self.on_error {
            ErrorPolicy::Fail => {
                self.failures.fail(&self.name, error, &self.control);
                false
            }
            ErrorPolicy::Skip => {
                tracing::debug!(node = %self.name, %error, "input skipped");
                self.counters.skipped.add(1);
                true
            }
            ErrorPolicy::DeadLetter => {
                let (Some(tx), Some(input)) = (dead_letters, copy) else {
                    tracing::warn!(node = %self.name, %error, "no dead-letter receiver; input dropped");
                    self.counters.dropped.add(1);
                    return true;
                };
                let letter = DeadLetter {
                    node: Arc::clone(&self.name),
                    input,
                    error,
                };
                let mut stop = self.control.stop.watch();
                let sent = tokio::select! {
                    biased;
                    () = stop.stopped() => return false,
                    r = tx.send(letter) => r,
                };
                match sent {
                    Ok(()) => self.counters.dead_lettered.add(1),
                    Err(_) => self.counters.dropped.add(1),
                };
                true
            }
        }
    }
}
