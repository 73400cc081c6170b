//! Events for the tasks of a live run, addressed by path through its handle.

use std::future::Future;

use serde::Serialize;
use tributary_runtime::{RunHandle, TaskPath};

use crate::error::DurableError;
use crate::journal::Journal;

/// `send_event(path, name, value)` through a run's [`RunHandle`]: the task
/// at `path` (a top-level task's key, or the path of a child of a parallel
/// action) receives it in its next
/// [`EventExt::await_event`](crate::EventExt::await_event) of that name.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tributary_core::{action, Graph, State};
/// use tributary_durable::{EventExt, Journal, MemoryJournal, RunEvents, WithJournal};
/// use tributary_runtime::{ItemKind, RunConfig, Runtime, TaskSpec};
///
/// let journal = Journal::new(Arc::new(MemoryJournal::new()));
/// let approve = Graph::single(action("approve").writes(["ok"]).run(|s: State, _, ctx| async move {
///     ctx.emit("waiting").await?;
///     let ok: bool = ctx.await_event("approval").await?;
///     Ok((json!({ "ok": ok }), s.set("ok", ok)))
/// }));
/// let (handle, mut stream) = Runtime::new().run(
///     vec![TaskSpec::new("order-7", approve)],
///     RunConfig::new().journal(&journal),
/// );
/// while let Some(item) = stream.next().await {
///     match item.kind {
///         ItemKind::Token => { handle.send_event(&journal, "order-7", "approval", true).await?; }
///         ItemKind::Final => assert_eq!(item.result, Some(json!({ "ok": true }))),
///         _ => {}
///     }
/// }
/// # Ok(()) }
/// ```
pub trait RunEvents {
    /// Send an event named `name` with `value` to the task at `path`, stored
    /// in `journal` (the run's). Returns its index among the events of that
    /// name sent to the task.
    ///
    /// # Errors
    ///
    /// [`DurableError::Event`] when no task of the run that has not ended
    /// has this path, or it has not started yet (a queued task has no app
    /// id), or `value` does not serialise; a store failure.
    ///
    /// # Cancel safety
    ///
    /// As [`Journal::send_event`]: a cancelled call may or may not have
    /// stored the event.
    fn send_event<T: Serialize + Send>(
        &self,
        journal: &Journal,
        path: impl Into<TaskPath> + Send,
        name: &str,
        value: T,
    ) -> impl Future<Output = Result<u64, DurableError>> + Send;
}

impl RunEvents for RunHandle {
    async fn send_event<T: Serialize + Send>(
        &self,
        journal: &Journal,
        path: impl Into<TaskPath> + Send,
        name: &str,
        value: T,
    ) -> Result<u64, DurableError> {
        let path = path.into();
        let unsent = |reason: String| DurableError::Event {
            name: name.to_owned(),
            reason,
        };
        let app_id = self
            .app_id(path.clone())
            .map_err(|e| unsent(e.to_string()))?
            .ok_or_else(|| unsent(format!("task {path} has not started yet")))?;
        journal.send_event(&app_id, name, value).await
    }
}
