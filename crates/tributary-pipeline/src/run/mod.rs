//! Running a pipeline: one task per node, a driver that waits for them and
//! publishes metrics, a handle to pause, resume and cancel, and the run's
//! summary.

pub(crate) mod edge;
pub(crate) mod inputs;
pub(crate) mod metrics;
pub(crate) mod node;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::emit::{Control, Outputs, Stop};
use crate::error::RunError;
use crate::graph::{NodeKind, Pipeline};
use crate::item::{BoxError, Input, Item, NodeInfo};
use metrics::{EdgeMetrics, Metrics, NodeCounters, NodeMetrics, Sampler};

// ===== dead letters =====

/// An input a node failed on, with its error
/// ([`ErrorPolicy::DeadLetter`](crate::ErrorPolicy::DeadLetter)).
#[derive(Debug)]
#[non_exhaustive]
pub struct DeadLetter<T> {
    /// The node that failed.
    pub node: Arc<str>,
    /// The input it failed on.
    pub input: Input<T>,
    /// Its error.
    pub error: BoxError,
}

/// The receiving end of a pipeline's dead letters
/// ([`Pipeline::dead_letters`]). Bounded: while it is full, a failing node
/// waits.
#[derive(Debug)]
pub struct DeadLetters<T> {
    pub(crate) rx: mpsc::Receiver<DeadLetter<T>>,
}

impl<T> DeadLetters<T> {
    /// The next dead letter; `None` once the run has ended and every letter
    /// was read.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn recv(&mut self) -> Option<DeadLetter<T>> {
        self.rx.recv().await
    }
}

// ===== failures =====

enum Failure {
    Error(BoxError),
    Panic,
}

/// The first failure of a run; later ones are only logged.
#[derive(Default)]
pub(crate) struct Failures {
    first: Mutex<Option<(Arc<str>, Failure)>>,
}

impl fmt::Debug for Failures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Failures")
    }
}

impl Failures {
    pub(crate) fn fail(&self, node: &Arc<str>, error: BoxError, control: &Control) {
        tracing::error!(node = %node, %error, "node failed; cancelling the pipeline");
        self.set(node, Failure::Error(error));
        control.stop.cancel();
    }

    fn set(&self, node: &Arc<str>, failure: Failure) {
        let mut first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some((Arc::clone(node), failure));
        }
    }

    fn take(&self) -> Option<(Arc<str>, Failure)> {
        self.first.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

// ===== summary =====

/// What a run did: every node's and edge's final counts.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunSummary {
    /// How long the run took.
    pub elapsed: Duration,
    /// Every node's final metrics, in declaration order.
    pub nodes: Vec<NodeMetrics>,
    /// Every edge's final metrics, in declaration order.
    pub edges: Vec<EdgeMetrics>,
}

impl RunSummary {
    /// Node `name`'s final metrics.
    pub fn node(&self, name: &str) -> Option<&NodeMetrics> {
        self.nodes.iter().find(|n| &*n.name == name)
    }

    /// Items dropped over the whole pipeline.
    pub fn dropped(&self) -> u64 {
        self.nodes.iter().map(|n| n.dropped).sum()
    }
}

// ===== handle =====

#[derive(Debug)]
struct Shared {
    stop: Arc<Stop>,
    pause: watch::Sender<bool>,
    cancelled: AtomicBool,
    tracker: TaskTracker,
    metrics: watch::Receiver<Metrics>,
}

/// Controls a running pipeline: pause, resume, cancel, and its metrics.
/// Cheap to clone; its commands do not block.
#[derive(Debug, Clone)]
pub struct PipelineHandle {
    shared: Arc<Shared>,
}

impl PipelineHandle {
    /// Pause: no node takes a new input and no output is sent until
    /// [`resume`](Self::resume); calls already running finish and their
    /// outputs wait. A paused pipeline stops within one item per node (per
    /// in-flight slot).
    pub fn pause(&self) {
        self.shared.pause.send_replace(true);
    }

    /// Resume after [`pause`](Self::pause).
    pub fn resume(&self) {
        self.shared.pause.send_replace(false);
    }

    /// Whether the pipeline is paused.
    pub fn is_paused(&self) -> bool {
        *self.shared.pause.borrow()
    }

    /// Cancel the run. The returned future resolves once every node's task
    /// (and the run's own) has ended: after it, no processor runs and no
    /// item moves. Calls in flight are dropped and counted as
    /// [`dropped`](crate::NodeMetrics::dropped), as are items waiting on
    /// edges. The run returns [`RunError::Cancelled`] unless it had already
    /// ended. Cancelling starts at once, whether or not the future is
    /// awaited.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future does not undo the cancel.
    pub fn cancel(&self) -> impl Future<Output = ()> + Send + 'static {
        self.shared.cancelled.store(true, Relaxed);
        self.shared.stop.cancel();
        let tracker = self.shared.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Live metrics of every node and edge, refreshed at the metrics
    /// interval and once more at the end (with `finished` set).
    pub fn metrics(&self) -> watch::Receiver<Metrics> {
        self.shared.metrics.clone()
    }

    /// How many of the run's tasks (one per node, and the driver) are alive.
    pub fn live_tasks(&self) -> usize {
        self.shared.tracker.len()
    }
}

// ===== the run =====

/// A started pipeline: [`wait`](Self::wait) for its end. Dropping it before
/// the end cancels the run.
#[must_use = "dropping the run cancels it"]
#[derive(Debug)]
pub struct PipelineRun {
    handle: PipelineHandle,
    done: Option<oneshot::Receiver<Result<RunSummary, RunError>>>,
}

impl PipelineRun {
    /// A handle to the run.
    pub fn handle(&self) -> PipelineHandle {
        self.handle.clone()
    }

    /// Wait for the end: every source done, end of stream through every
    /// edge, every node drained.
    ///
    /// # Errors
    ///
    /// [`RunError::NodeFailed`] when a node under
    /// [`ErrorPolicy::Fail`](crate::ErrorPolicy::Fail) failed,
    /// [`RunError::NodePanicked`], [`RunError::Cancelled`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future cancels the run (like dropping
    /// the `PipelineRun`).
    pub async fn wait(mut self) -> Result<RunSummary, RunError> {
        let done = self.done.as_mut().expect("only wait takes it");
        let result = done.await;
        self.done = None;
        match result {
            Ok(r) => r,
            // The driver is gone without answering: the runtime shut down.
            Err(_) => Err(RunError::Cancelled {
                summary: Box::new(summary(self.handle.shared.metrics.borrow().clone())),
            }),
        }
    }
}

impl Drop for PipelineRun {
    fn drop(&mut self) {
        if self.done.is_some() {
            self.handle.shared.stop.cancel();
            self.handle.shared.cancelled.store(true, Relaxed);
        }
    }
}

fn summary(m: Metrics) -> RunSummary {
    RunSummary {
        elapsed: m.elapsed,
        nodes: m.nodes,
        edges: m.edges,
    }
}

impl<T: Item> Pipeline<T> {
    /// Start every node on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime.
    pub fn start(self) -> PipelineRun {
        let stop = Arc::new(Stop::default());
        let (pause_tx, pause_rx) = watch::channel(false);
        let control = Control {
            stop: Arc::clone(&stop),
            pause: pause_rx,
            paused_seen: false,
        };
        let failures = Arc::new(Failures::default());
        let n = self.nodes.len();
        let counters: Vec<Arc<NodeCounters>> = (0..n).map(|_| Arc::default()).collect();
        let mut txs: Vec<Vec<edge::EdgeTx<T>>> = (0..n).map(|_| Vec::new()).collect();
        let mut rxs: Vec<Vec<edge::EdgeRx<T>>> = (0..n).map(|_| Vec::new()).collect();
        let mut edge_counters = Vec::with_capacity(self.edges.len());
        for e in &self.edges {
            let (tx, rx) = edge::edge(Arc::clone(&self.nodes[e.from].0), e.capacity);
            edge_counters.push((
                Arc::clone(&self.nodes[e.from].0),
                Arc::clone(&self.nodes[e.to].0),
                Arc::clone(&tx.counters),
            ));
            txs[e.from].push(tx);
            rxs[e.to].push(rx);
        }
        let mut sampler = Sampler::new(
            self.nodes
                .iter()
                .zip(&counters)
                .map(|((name, _), c)| (Arc::clone(name), Arc::clone(c)))
                .collect(),
            edge_counters,
        );
        let started = Instant::now();
        let (metrics_tx, metrics_rx) = watch::channel(sampler.snapshot(Duration::ZERO, false));
        let tracker = TaskTracker::new();
        let shared = Arc::new(Shared {
            stop: Arc::clone(&stop),
            pause: pause_tx,
            cancelled: AtomicBool::new(false),
            tracker: tracker.clone(),
            metrics: metrics_rx,
        });
        let mut tasks = JoinSet::new();
        let mut names = HashMap::new();
        for (((name, node), (tx, rx)), c) in self
            .nodes
            .into_iter()
            .zip(txs.into_iter().zip(rxs))
            .zip(&counters)
        {
            let task = node::NodeTask {
                name: Arc::clone(&name),
                info: Arc::new(NodeInfo {
                    node: Arc::clone(&name),
                    env: Arc::clone(&self.env),
                }),
                counters: Arc::clone(c),
                control: control.clone(),
                outputs: Outputs::new(tx, node.fan_out, Arc::clone(c), control.clone()),
                on_error: node.on_error,
                failures: Arc::clone(&failures),
            };
            let span = tracing::info_span!("pipeline.node", node = %name);
            let id = match node.kind {
                NodeKind::Source(source) => tasks
                    .spawn(tracker.track_future(task.run_source(source).instrument(span)))
                    .id(),
                NodeKind::Processor(runner) => {
                    let inputs = inputs::Inputs::new(rx, node.join, Arc::clone(c));
                    let fut = runner.run(node::ProcessorParts {
                        task,
                        inputs,
                        concurrency: node.concurrency,
                        keep_order: node.keep_order,
                        dead_letters: self.dead_letters.clone(),
                    });
                    tasks.spawn(tracker.track_future(fut.instrument(span))).id()
                }
            };
            names.insert(id, name);
        }
        drop(self.dead_letters);
        let (done_tx, done_rx) = oneshot::channel();
        let interval = self.metrics_interval;
        let driver_shared = Arc::clone(&shared);
        let driver = async move {
            let mut tick = tokio::time::interval_at(started + interval, interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    joined = tasks.join_next_with_id() => match joined {
                        None => break,
                        Some(Ok(_)) => {}
                        Some(Err(e)) => {
                            let name = names.get(&e.id()).cloned().unwrap_or_else(|| "?".into());
                            if e.is_panic() {
                                tracing::error!(node = %name, "node panicked; cancelling the pipeline");
                                if let Some((_, c)) = sampler.nodes.iter().find(|(n, _)| *n == name) {
                                    c.ended.store(true, Relaxed);
                                    c.in_flight.set(0);
                                }
                                failures.set(&name, Failure::Panic);
                                stop.cancel();
                            }
                        }
                    },
                    _ = tick.tick() => {
                        metrics_tx.send_replace(sampler.snapshot(started.elapsed(), false));
                    }
                }
            }
            let last = sampler.snapshot(started.elapsed(), true);
            metrics_tx.send_replace(last.clone());
            let summary = Box::new(summary(last));
            let result = match failures.take() {
                Some((node, Failure::Error(source))) => Err(RunError::NodeFailed {
                    node: node.to_string(),
                    source,
                    summary,
                }),
                Some((node, Failure::Panic)) => Err(RunError::NodePanicked {
                    node: node.to_string(),
                    summary,
                }),
                None if driver_shared.cancelled.load(Relaxed) => {
                    Err(RunError::Cancelled { summary })
                }
                None => Ok(*summary),
            };
            let _ = done_tx.send(result);
        };
        tracker.spawn(driver.instrument(tracing::info_span!("pipeline.run")));
        tracker.close();
        PipelineRun {
            handle: PipelineHandle { shared },
            done: Some(done_rx),
        }
    }

    /// Start the pipeline and wait for its end
    /// ([`start`](Self::start) then [`PipelineRun::wait`]).
    ///
    /// # Errors
    ///
    /// As [`PipelineRun::wait`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future cancels the run.
    pub async fn run(self) -> Result<RunSummary, RunError> {
        self.start().wait().await
    }
}
