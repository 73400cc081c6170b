//! Edges: a bounded channel and its counters.

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::run::metrics::EdgeCounters;

/// The sending end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeTx<T> {
    pub(crate) tx: mpsc::Sender<T>,
    pub(crate) counters: Arc<EdgeCounters>,
}

/// The receiving end of an edge.
#[derive(Debug)]
pub(crate) struct EdgeRx<T> {
    pub(crate) rx: mpsc::Receiver<T>,
    pub(crate) from: Arc<str>,
    pub(crate) counters: Arc<EdgeCounters>,
}

impl<T> EdgeRx<T> {
    /// Poll for the next item, counting it.
    pub(crate) fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<T>> {
        let r = self.rx.poll_recv(cx);
        if let std::task::Poll::Ready(Some(_)) = &r {
            self.counters.received.add(1);
        }
        r
    }

    /// Items still waiting in the edge.
    pub(crate) fn waiting(&self) -> usize {
        self.rx.len()
    }
}

/// A new edge of `capacity` from `from`.
pub(crate) fn edge<T>(from: Arc<str>, capacity: usize) -> (EdgeTx<T>, EdgeRx<T>) {
    let (tx, rx) = mpsc::channel(capacity);
    let counters = Arc::new(EdgeCounters::new(capacity));
    (
        EdgeTx {
            tx,
            counters: Arc::clone(&counters),
        },
        EdgeRx { rx, from, counters },
    )
}
