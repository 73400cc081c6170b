//! Metrics per node and per edge: counters the nodes bump, and the
//! snapshots a `watch` publishes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// A counter with a single writer (the node or edge end it belongs to),
/// read by the sampler: an update is a plain load and store, not a locked
/// read-modify-write, as nobody else writes it.
#[derive(Debug, Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    pub(crate) fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    pub(crate) fn set(&self, n: u64) {
        self.0.store(n, Relaxed);
    }

    pub(crate) fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// A node's live counters, written by the node's task only; on cache lines
/// of their own, so that nodes running on different threads do not share
/// one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct NodeCounters {
    pub(crate) items_in: Counter,
    pub(crate) items_out: Counter,
    pub(crate) in_flight: Counter,
    pub(crate) skipped: Counter,
    pub(crate) dead_lettered: Counter,
    pub(crate) dropped: Counter,
    pub(crate) unpaired: Counter,
    pub(crate) blocked_ns: Counter,
    pub(crate) ended: AtomicBool,
}

/// A counter on a cache line of its own: an edge's two ends run on
/// different threads and must not contend for one line.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded(pub(crate) Counter);

impl std::ops::Deref for Padded {
    type Target = Counter;

    fn deref(&self) -> &Counter {
        &self.0
    }
}

/// An edge's live counters: the upstream end bumps `sent`, the downstream
/// end `received`.
#[derive(Debug)]
pub(crate) struct EdgeCounters {
    pub(crate) sent: Padded,
    pub(crate) received: Padded,
    pub(crate) capacity: usize,
}

impl EdgeCounters {
    pub(crate) fn new(capacity: usize) -> Self {
        EdgeCounters {
            sent: Padded::default(),
            received: Padded::default(),
            capacity,
        }
    }
}

/// A snapshot of a running pipeline, published through
/// [`PipelineHandle::metrics`](crate::PipelineHandle::metrics) at every
/// metrics interval and once more when the run ends.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct Metrics {
    /// Time since the run started.
    pub elapsed: Duration,
    /// Every node, in declaration order.
    pub nodes: Vec<NodeMetrics>,
    /// Every edge, in declaration order.
    pub edges: Vec<EdgeMetrics>,
    /// Whether the run has ended (this is the last snapshot).
    pub finished: bool,
}

impl Metrics {
    /// The metrics of node `name`.
    pub fn node(&self, name: &str) -> Option<&NodeMetrics> {
        self.nodes.iter().find(|n| &*n.name == name)
    }

    /// The metrics of the edge `from -> to`.
    pub fn edge(&self, from: &str, to: &str) -> Option<&EdgeMetrics> {
        self.edges.iter().find(|e| &*e.from == from && &*e.to == to)
    }
}

/// One node's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct NodeMetrics {
    /// The node's name.
    pub name: Arc<str>,
    /// Inputs taken (for a join, one per call of the processor).
    pub items_in: u64,
    /// Outputs produced (for a sink, the outputs it returned, discarded).
    pub items_out: u64,
    /// Inputs taken per second over the last interval.
    pub in_per_sec: f64,
    /// Outputs per second over the last interval.
    pub out_per_sec: f64,
    /// Inputs being processed right now.
    pub in_flight: u64,
    /// Inputs whose processing failed and were skipped.
    pub skipped: u64,
    /// Inputs whose processing failed and went to the dead letters.
    pub dead_lettered: u64,
    /// Items lost to a cancel or an early end: in flight, waiting on the
    /// node's input edges, or not delivered downstream.
    pub dropped: u64,
    /// Items a zip join read but could not pair because another input ended.
    pub unpaired: u64,
    /// Total time spent waiting for room on a downstream edge.
    pub blocked: Duration,
    /// Whether the node has ended.
    pub ended: bool,
}

/// One edge's metrics.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct EdgeMetrics {
    /// The upstream node.
    pub from: Arc<str>,
    /// The downstream node.
    pub to: Arc<str>,
    /// Items sent along the edge.
    pub sent: u64,
    /// Items waiting in the edge.
    pub depth: u64,
    /// The edge's capacity.
    pub capacity: usize,
}

/// Builds snapshots from the counters.
#[derive(Debug)]
pub(crate) struct Sampler {
    pub(crate) nodes: Vec<(Arc<str>, Arc<NodeCounters>)>,
    pub(crate) edges: Vec<(Arc<str>, Arc<str>, Arc<EdgeCounters>)>,
    last: Option<(Duration, Vec<(u64, u64)>)>,
}

impl Sampler {
    pub(crate) fn new(
        nodes: Vec<(Arc<str>, Arc<NodeCounters>)>,
        edges: Vec<(Arc<str>, Arc<str>, Arc<EdgeCounters>)>,
    ) -> Self {
        Sampler {
            nodes,
            edges,
            last: None,
        }
    }

    pub(crate) fn snapshot(&mut self, elapsed: Duration, finished: bool) -> Metrics {
        let (prev_t, prev) = self
            .last
            .take()
            .unwrap_or((Duration::ZERO, vec![(0, 0); self.nodes.len()]));
        let dt = (elapsed.saturating_sub(prev_t)).as_secs_f64();
        let rate = |now: u64, before: u64| {
            if dt > 0.0 {
                now.saturating_sub(before) as f64 / dt
            } else {
                0.0
            }
        };
        let mut counts = Vec::with_capacity(self.nodes.len());
        let nodes = self
            .nodes
            .iter()
            .zip(&prev)
            .map(|((name, c), &(pin, pout))| {
                let items_in = c.items_in.get();
                let items_out = c.items_out.get();
                counts.push((items_in, items_out));
                NodeMetrics {
                    name: Arc::clone(name),
                    items_in,
                    items_out,
                    in_per_sec: rate(items_in, pin),
                    out_per_sec: rate(items_out, pout),
                    in_flight: c.in_flight.get(),
                    skipped: c.skipped.get(),
                    dead_lettered: c.dead_lettered.get(),
                    dropped: c.dropped.get(),
                    unpaired: c.unpaired.get(),
                    blocked: Duration::from_nanos(c.blocked_ns.get()),
                    ended: c.ended.load(Relaxed),
                }
            })
            .collect();
        self.last = Some((elapsed, counts));
        let edges = self
            .edges
            .iter()
            .map(|(from, to, c)| {
                let sent = c.sent.get();
                EdgeMetrics {
                    from: Arc::clone(from),
                    to: Arc::clone(to),
                    sent,
                    depth: sent.saturating_sub(c.received.get()),
                    capacity: c.capacity,
                }
            })
            .collect();
        Metrics {
            elapsed,
            nodes,
            edges,
            finished,
        }
    }
}
