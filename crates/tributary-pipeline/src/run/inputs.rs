//! A node's incoming edges and its join.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use crate::graph::Join;
use crate::item::Input;
use crate::run::edge::EdgeRx;
use crate::run::metrics::NodeCounters;

/// A node's inputs, read through its join.
#[derive(Debug)]
pub(crate) struct Inputs<T> {
    edges: Vec<Option<EdgeRx<T>>>,
    join: Join,
    /// Where the next fair poll starts (merge, latest).
    start: usize,
    /// The current round of a zip.
    round: Vec<T>,
    /// The newest item of each input (latest).
    latest: Vec<Option<T>>,
    counters: Arc<NodeCounters>,
}

impl<T: Clone> Inputs<T> {
    pub(crate) fn new(edges: Vec<EdgeRx<T>>, join: Join, counters: Arc<NodeCounters>) -> Self {
        let n = edges.len();
        Inputs {
            edges: edges.into_iter().map(Some).collect(),
            join,
            start: 0,
            round: Vec::with_capacity(n),
            latest: (0..n).map(|_| None).collect(),
            counters,
        }
    }

    /// The next input, or `None` once the join has ended.
    ///
    /// Cancel safe: a partly read zip round stays in `self`.
    pub(crate) async fn next(&mut self) -> Option<Input<T>> {
        let input = poll_fn(|cx| self.poll_next(cx)).await;
        if input.is_some() {
            self.counters.items_in.add(1);
        }
        input
    }

    fn poll_next(&mut self, cx: &mut std::task::Context<'_>) -> Poll<Option<Input<T>>> {
        let n = self.edges.len();
        if n == 1 {
            let Some(rx) = self.edges[0].as_mut() else {
                return Poll::Ready(None);
            };
            return match rx.poll_recv(cx) {
                Poll::Ready(Some(item)) => Poll::Ready(Some(Input::One(item))),
                Poll::Ready(None) => {
                    self.edges[0] = None;
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        match self.join {
            Join::Zip => loop {
                let i = self.round.len();
                let Some(rx) = self.edges[i].as_mut() else {
                    return Poll::Ready(None);
                };
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(item)) => {
                        self.round.push(item);
                        if self.round.len() == n {
                            return Poll::Ready(Some(Input::Zip(std::mem::take(&mut self.round))));
                        }
                    }
                    Poll::Ready(None) => {
                        // Zip ends at the shortest input; what the others
                        // still hold can never be paired.
                        self.close(false);
                        return Poll::Ready(None);
                    }
                    Poll::Pending => return Poll::Pending,
                }
            },
            Join::Merge | Join::Latest => loop {
                let mut open = 0;
                let mut got = None;
                for k in 0..n {
                    let i = (self.start + k) % n;
                    let Some(rx) = self.edges[i].as_mut() else {
                        continue;
                    };
                    match rx.poll_recv(cx) {
                        Poll::Ready(Some(item)) => {
                            got = Some((i, item));
                            break;
                        }
                        Poll::Ready(None) => self.edges[i] = None,
                        Poll::Pending => open += 1,
                    }
                }
                let Some((i, item)) = got else {
                    return if open == 0 {
                        Poll::Ready(None)
                    } else {
                        Poll::Pending
                    };
                };
                self.start = (i + 1) % n;
                if self.join == Join::Merge {
                    let from = Arc::clone(&self.edges[i].as_ref().expect("just read").from);
                    return Poll::Ready(Some(Input::Merge { from, item }));
                }
                self.latest[i] = Some(item);
                if self.latest.iter().all(Option::is_some) {
                    let items = self.latest.iter().flatten().cloned().collect();
                    return Poll::Ready(Some(Input::Latest { items, changed: i }));
                }
            },
        }
    }

    /// Stop reading: close every edge and count what is left in them as
    /// dropped (`dropped`) or unpaired (a zip that ended at its shortest
    /// input), and a partly read zip round as unpaired.
    pub(crate) fn close(&mut self, dropped: bool) {
        let mut waiting = 0;
        for rx in self.edges.iter_mut() {
            if let Some(mut rx) = rx.take() {
                rx.rx.close();
                waiting += rx.waiting() as u64;
            }
        }
        if dropped {
            self.counters.dropped.add(waiting);
        } else {
            self.counters.unpaired.add(waiting);
        }
        self.counters.unpaired.add(self.round.len() as u64);
        self.round.clear();
    }
}
