//! The tap: a run's stream that records what the consumer receives.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_util::Stream;
use tributary_runtime::StreamItem;

use super::LiveRun;

/// A run's stream that records every item it yields into a [`LiveRun`],
/// from [`LiveRun::tap`]. Yields the same items in the same order.
///
/// # Cancel safety
///
/// As cancel safe as the wrapped stream (a `RunStream`'s `next()` is): an
/// item is recorded only when it is handed to the caller, so a `next()`
/// dropped in a `select!` records nothing and loses nothing.
#[derive(Debug)]
pub struct Tapped<S> {
    pub(super) inner: S,
    pub(super) run: LiveRun,
}

impl<S> Tapped<S> {
    /// The wrapped stream.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The wrapped stream, no longer recorded.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S> Stream for Tapped<S>
where
    S: Stream<Item = StreamItem> + Unpin,
{
    type Item = StreamItem;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<StreamItem>> {
        let polled = Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            Poll::Ready(Some(item)) => self.run.record(item),
            Poll::Ready(None) => self.run.record_end(),
            Poll::Pending => {}
        }
        polled
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}
