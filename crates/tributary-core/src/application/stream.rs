use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use async_trait::async_trait;
use futures_core::Stream;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tokio::sync::mpsc;

use super::run_hooks::RunHooks;
use crate::action::{Emitted, StreamSink};
use crate::error::{ApplicationError, EmitError};
use crate::identity::AppInfo;
use crate::outcome::RunOutcome;

/// How many outputs of the halt action may wait for the consumer before
/// `emit` blocks.
const STREAM_CAPACITY: usize = 8;

/// The intermediate outputs of a halt action, then its final result.
///
/// Returned by [`Application::stream_result`](crate::Application::stream_result). It is a `Stream` of the
/// action's outputs; consuming it drives the action. [`get`](Self::get)
/// gives the final result and state.
#[must_use = "a stream result does nothing unless polled or awaited with `get`"]
pub struct StreamResult<'a> {
    rx: Option<mpsc::Receiver<Value>>,
    step: Option<BoxFuture<'a, Result<RunOutcome, ApplicationError>>>,
    outcome: Option<Result<RunOutcome, ApplicationError>>,
    app: Arc<AppInfo>,
    // After `step`: fields drop in order, so an abandoned halt step is
    // reported before the abandoned run.
    run: Option<RunHooks>,
}

impl fmt::Debug for StreamResult<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamResult")
            .field("app_id", &self.app.app_id)
            .field("running", &self.step.is_some())
            .finish_non_exhaustive()
    }
}

struct ChannelSink(mpsc::Sender<Value>);

#[async_trait]
impl StreamSink for ChannelSink {
    async fn send(&self, item: Emitted) -> Result<(), EmitError> {
        self.0.send(item.value).await.map_err(|_| EmitError {
            action: item.action.to_string(),
        })
    }
}

/// A sink for the halt action's outputs and the stream's end of it.
pub(super) fn channel() -> (Arc<dyn StreamSink>, mpsc::Receiver<Value>) {
    let (tx, rx) = mpsc::channel(STREAM_CAPACITY);
    (Arc::new(ChannelSink(tx)), rx)
}

impl<'a> StreamResult<'a> {
    /// A run that ended before its halt action (the hooks were told).
    pub(super) fn done(app: Arc<AppInfo>, outcome: Result<RunOutcome, ApplicationError>) -> Self {
        StreamResult {
            rx: None,
            step: None,
            outcome: Some(outcome),
            app,
            run: None,
        }
    }

    /// A run whose halt action `step` streams into `rx` (from [`channel`]);
    /// `run` tells the hooks how it ends.
    pub(super) fn live(
        app: Arc<AppInfo>,
        rx: mpsc::Receiver<Value>,
        step: BoxFuture<'a, Result<RunOutcome, ApplicationError>>,
        run: RunHooks,
    ) -> Self {
        StreamResult {
            rx: Some(rx),
            step: Some(step),
            outcome: None,
            app,
            run: Some(run),
        }
    }

    /// Drain the remaining outputs, then return the final result and state.
    ///
    /// # Errors
    ///
    /// The error of the halt step (or of a step before it).
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropping the future abandons the halt step.
    pub async fn get(mut self) -> Result<RunOutcome, ApplicationError> {
        while futures_util::StreamExt::next(&mut self).await.is_some() {}
        self.outcome
            .take()
            .expect("a drained stream result holds its outcome")
    }
}

impl Stream for StreamResult<'_> {
    type Item = Value;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Value>> {
        let this = &mut *self;
        loop {
            if let Some(rx) = &mut this.rx {
                match rx.poll_recv(cx) {
                    Poll::Ready(Some(value)) => return Poll::Ready(Some(value)),
                    Poll::Ready(None) => {
                        this.rx = None;
                    }
                    Poll::Pending => {}
                }
            }
            match &mut this.step {
                Some(step) => match step.as_mut().poll(cx) {
                    Poll::Ready(outcome) => {
                        this.step = None;
                        this.outcome = Some(match this.run.take() {
                            Some(run) => run.end(outcome),
                            None => outcome,
                        });
                        // The sink is dropped with the step: drain what is left.
                    }
                    Poll::Pending => return Poll::Pending,
                },
                None if this.rx.is_none() => return Poll::Ready(None),
                // The step is done and the channel still holds items, but
                // `poll_recv` was pending: cannot happen once every sender
                // is gone, so loop to read again.
                None => {}
            }
        }
    }
}
