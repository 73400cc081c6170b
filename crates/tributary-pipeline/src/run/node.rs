//! One node's task: take inputs through the join, run the processor with
//! up to `concurrency` inputs in flight, send the outputs, apply the error
//! policy, and end when the inputs end (or on cancel).

use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use futures_util::future::{BoxFuture, Either, poll_immediate};
use futures_util::stream::{FuturesOrdered, FuturesUnordered};
use tokio::sync::mpsc;
use tracing::Instrument;

use crate::emit::{Control, EmitError, Emitter, Outputs};
use crate::graph::ErrorPolicy;
use crate::item::{BoxError, Input, Item, NodeContext, NodeInfo};
use crate::processor::{Processor, Source};
use crate::run::inputs::Inputs;
use crate::run::metrics::NodeCounters;
use crate::run::{DeadLetter, Failures};

type Outcome<T, O> = (Option<Input<T>>, Result<O, BoxError>);

/// A processor call, with the copy of its input kept for the dead letters.
async fn call<T, O>(
    copy: Option<Input<T>>,
    fut: impl Future<Output = Result<O, BoxError>>,
) -> Outcome<T, O> {
    (copy, fut.await)
}

/// The calls in flight of a concurrent node, in input order when asked.
enum Many<F: Future> {
    Unordered(FuturesUnordered<F>),
    Ordered(FuturesOrdered<F>),
}

impl<F: Future> Many<F> {
    fn len(&self) -> usize {
        match self {
            Many::Unordered(s) => s.len(),
            Many::Ordered(s) => s.len(),
        }
    }

    fn push(&mut self, f: F) {
        match self {
            Many::Unordered(s) => s.push(f),
            Many::Ordered(s) => s.push_back(f),
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<F::Output>> {
        match self {
            Many::Unordered(s) => s.poll_next_unpin(cx),
            Many::Ordered(s) => s.poll_next_unpin(cx),
        }
    }
}

/// An empty slot for the calls `start` makes.
fn slot_for<T, N, F>(_start: &impl Fn(&N, Input<T>, u64) -> F) -> Option<F> {
    None
}

/// An empty set for the calls `start` makes.
fn many_for<T, N, F: Future>(
    _start: &impl Fn(&N, Input<T>, u64) -> F,
    keep_order: bool,
) -> Many<F> {
    if keep_order {
        Many::Ordered(FuturesOrdered::new())
    } else {
        Many::Unordered(FuturesUnordered::new())
    }
}

/// What a processor node's task is made of.
pub(crate) struct ProcessorParts<T> {
    pub(crate) task: NodeTask<T>,
    pub(crate) inputs: Inputs<T>,
    pub(crate) concurrency: usize,
    pub(crate) keep_order: bool,
    pub(crate) dead_letters: Option<mpsc::Sender<DeadLetter<T>>>,
}

/// A processor node's task, built for the processor's own type (so that a
/// call's future is neither boxed nor dispatched dynamically) behind one
/// box per node.
pub(crate) trait RunProcessor<T>: Send {
    fn run(self: Box<Self>, parts: ProcessorParts<T>) -> BoxFuture<'static, ()>;
}

/// [`RunProcessor`] for processor type `P`.
pub(crate) struct Runner<P>(pub(crate) P);

impl<T: Item, P: Processor<T>> RunProcessor<T> for Runner<P> {
    fn run(self: Box<Self>, parts: ProcessorParts<T>) -> BoxFuture<'static, ()> {
        let ProcessorParts {
            task,
            inputs,
            concurrency,
            keep_order,
            dead_letters,
        } = parts;
        Box::pin(task.run_processor(self.0, inputs, concurrency, keep_order, dead_letters))
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
    pub(crate) async fn run_processor<P: Processor<T>>(
        mut self,
        processor: P,
        mut inputs: Inputs<T>,
        concurrency: usize,
        keep_order: bool,
        dead_letters: Option<mpsc::Sender<DeadLetter<T>>>,
    ) {
        // Per-call spans when TRACE is on as the node starts (asked once,
        // not per item).
        let trace_calls = tracing::enabled!(tracing::Level::TRACE);
        let start = |node: &NodeTask<T>, input: Input<T>, seq: u64| {
            let copy = (node.on_error == ErrorPolicy::DeadLetter).then(|| input.clone());
            let fut = processor.process(input, node.ctx(seq));
            let fut = if trace_calls {
                let span = tracing::trace_span!("pipeline.item", node = %node.name, seq);
                Either::Right(fut.instrument(span))
            } else {
                Either::Left(fut)
            };
            call(copy, fut)
        };
        // A sequential node keeps its one call in a slot pinned here (no
        // allocation per item); a concurrent one in a set.
        let mut one = std::pin::pin!(slot_for(&start));
        let mut many = many_for(&start, keep_order);
        let mut pause = self.control.pause.clone();
        let mut paused = *pause.borrow_and_update();
        let mut stop = self.control.stop.watch();
        let mut open = true;
        let mut seq = 0u64;
        let mut dropped = false;
        loop {
            let in_flight = usize::from(one.is_some()) + many.len();
            if !open && in_flight == 0 {
                break;
            }
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
            let take = open && !paused && in_flight < concurrency;
            if take && in_flight == 0 && concurrency == 1 {
                // Fast path of a busy sequential node: an input that is
                // already there is taken without building the select below.
                if let Some(input) = poll_immediate(inputs.next()).await {
                    let Some(input) = input else {
                        open = false;
                        continue;
                    };
                    one.set(Some(start(&self, input, seq)));
                    seq += 1;
                    self.counters.in_flight.add(1);
                    let now = poll_fn(|cx| {
                        Poll::Ready(match one.as_mut().as_pin_mut().map(|f| f.poll(cx)) {
                            Some(Poll::Ready(out)) => Some(out),
                            _ => None,
                        })
                    })
                    .await;
                    if let Some(outcome) = now {
                        one.set(None);
                        self.counters.in_flight.sub(1);
                        if !self
                            .deliver(outcome, &mut inputs, &mut open, dead_letters.as_ref())
                            .await
                        {
                            dropped = true;
                            break;
                        }
                    }
                    continue;
                }
            }
            tokio::select! {
                biased;
                Some(outcome) = poll_fn(|cx| match one.as_mut().as_pin_mut() {
                    Some(f) => {
                        let out = std::task::ready!(f.poll(cx));
                        one.set(None);
                        Poll::Ready(Some(out))
                    }
                    None => many.poll_next(cx),
                }), if in_flight > 0 => {
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
                        let c = start(&self, input, seq);
                        seq += 1;
                        self.counters.in_flight.add(1);
                        if concurrency > 1 {
                            many.push(c);
                            continue;
                        }
                        one.set(Some(c));
                        // Most calls finish at once: deliver without another
                        // turn of the loop.
                        let now = poll_fn(|cx| {
                            Poll::Ready(match one.as_mut().as_pin_mut().map(|f| f.poll(cx)) {
                                Some(Poll::Ready(out)) => Some(out),
                                _ => None,
                            })
                        })
                        .await;
                        if let Some(outcome) = now {
                            one.set(None);
                            self.counters.in_flight.sub(1);
                            if !self
                                .deliver(outcome, &mut inputs, &mut open, dead_letters.as_ref())
                                .await
                            {
                                dropped = true;
                                break;
                            }
                        }
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
            let n = (usize::from(one.is_some()) + many.len()) as u64;
            self.counters.dropped.add(n);
            self.counters.in_flight.sub(n);
        }
        one.set(None);
        drop(many);
        inputs.close(true);
        self.counters.ended.store(true, Relaxed);
    }

    /// Send a call's outputs, or apply the error policy to its failure;
    /// `false` when the node must stop (cancelled or failed).
    async fn deliver<O: IntoIterator<Item = T, IntoIter: Send>>(
        &mut self,
        (copy, result): Outcome<T, O>,
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
                let lost = 1 + outs.count() as u64;
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
