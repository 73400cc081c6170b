//! [`Journal`]: how an application's actions reach the journal.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use tributary_core::{ActionContext, ApplicationBuilder, Hook, StepInfo, StepOutcome};

use tributary_runtime::RunConfig;

use crate::error::DurableError;
use crate::scope::{Clock, Scope, system_clock};
use crate::store::JournalStore;

/// An application's handle on a [`JournalStore`]: attached to an
/// application with [`WithJournal::journal`], it lets every action journal
/// its steps ([`DurableExt`](crate::DurableExt)).
///
/// It is both an extension (actions find it with
/// `ctx.extension::<Journal>()`) and a [`Hook`]: before each step (each
/// attempt of an action) it opens a fresh replay cursor for the step's
/// (app id, sequence id), and after the step it drops it. One journal may
/// serve many applications at once (clones share everything), but not two
/// running copies of one app id: they would share a cursor.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tributary_core::{action, Application, Graph, RunOptions, State};
/// use tributary_durable::{DurableExt, Journal, MemoryJournal, WithJournal};
///
/// let journal = Journal::new(Arc::new(MemoryJournal::new()));
/// let graph = Graph::single(action("fetch").writes(["n"]).run(|s: State, _, ctx| async move {
///     let n: u32 = ctx.step("download", async { Ok::<_, std::io::Error>(7) }).await?;
///     Ok((json!({}), s.set("n", n)))
/// }));
/// let mut app = Application::builder(graph).app_id("job-1").journal(&journal).build().await?;
/// let out = app.run(RunOptions::new()).await?;
/// assert_eq!(out.state.get("n"), Some(&json!(7)));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn JournalStore>,
    clock: Clock,
    /// Woken by every event sent through this journal, so actions waiting
    /// in this process see it at once (others poll the store).
    events: tokio::sync::Notify,
    scopes: Mutex<HashMap<(String, u64), Arc<Scope>>>,
}

impl fmt::Debug for Journal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Journal")
            .field("open_scopes", &self.lock().len())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// A journal writing to `store`.
    pub fn new(store: Arc<dyn JournalStore>) -> Self {
        Self::with_clock_arc(store, system_clock())
    }

    /// A journal that reads the time of day from `clock` (durable sleeps
    /// journal their wake-up time in it; tests drive it by hand).
    pub fn with_clock(
        store: Arc<dyn JournalStore>,
        clock: impl Fn() -> SystemTime + Send + Sync + 'static,
    ) -> Self {
        Self::with_clock_arc(store, Arc::new(clock))
    }

    fn with_clock_arc(store: Arc<dyn JournalStore>, clock: Clock) -> Self {
        Journal {
            inner: Arc::new(Inner {
                store,
                clock,
                events: tokio::sync::Notify::new(),
                scopes: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn JournalStore> {
        &self.inner.store
    }

    /// Send an event named `name` to the application `app_id`: its actions'
    /// next [`EventExt::await_event`](crate::EventExt::await_event) of
    /// that name receives it (the n-th wait takes the n-th event). The event
    /// is stored before this returns, so it is neither lost nor, once
    /// received (journaled), delivered twice across a crash. Returns its
    /// index among the events of that name sent to the application.
    ///
    /// To address a task of a live run by its path instead, see
    /// [`RunEvents::send_event`](crate::RunEvents::send_event).
    ///
    /// # Errors
    ///
    /// When the store fails, or `value` does not serialise.
    ///
    /// # Cancel safety
    ///
    /// A cancelled call may or may not have stored the event; call it again
    /// only if a second event is acceptable (the index tells them apart).
    pub async fn send_event<T: serde::Serialize>(
        &self,
        app_id: &str,
        name: &str,
        value: T,
    ) -> Result<u64, DurableError> {
        let value = serde_json::to_value(value).map_err(|e| DurableError::Event {
            name: name.to_owned(),
            reason: format!("its value does not serialise: {e}"),
        })?;
        let index = self.inner.store.send_event(app_id, name, value).await?;
        self.inner.events.notify_waiters();
        Ok(index)
    }

    pub(crate) fn events(&self) -> &tokio::sync::Notify {
        &self.inner.events
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), Arc<Scope>>> {
        self.inner
            .scopes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The cursor of the step `ctx` runs in.
    pub(crate) fn scope_of(&self, ctx: &ActionContext) -> Result<Arc<Scope>, DurableError> {
        let scope = self
            .lock()
            .get(&(ctx.app_id().to_owned(), ctx.sequence_id()))
            .cloned()
            .ok_or_else(|| DurableError::NoJournal {
                app_id: ctx.app_id().to_owned(),
            })?;
        // In a runtime task, a step out of retries with `pause_on_exhausted`
        // pauses the task until it is resumed through the run's handle.
        if let Some(task) = ctx.extension::<tributary_runtime::TaskRuntime>() {
            scope.set_pause(|| Arc::new(TaskPause(task.clone(), ctx.clone())));
        }
        Ok(scope)
    }
}

/// Pauses the runtime task a step runs in, and tells the application's
/// hooks (a tracker) that it waits and when it goes on.
struct TaskPause(tributary_runtime::TaskRuntime, ActionContext);

impl crate::scope::PauseGate for TaskPause {
    fn pause<'a>(
        &'a self,
        step: &'a crate::store::StepKey,
        error: &'a tributary_core::BoxError,
    ) -> futures_util::future::BoxFuture<'a, bool> {
        Box::pin(async move {
            tracing::warn!(
                task = %self.0.path(),
                %step,
                %error,
                "durable step out of retries; the task is paused until resumed through its run's handle"
            );
            let (waiting, reason) = (step.to_string(), error.to_string());
            self.1.report_paused(&waiting, &reason);
            let resumed = self.0.pause_and_wait().await.is_ok();
            if resumed {
                self.1.report_resumed(&waiting, &reason);
            }
            resumed
        })
    }
}

impl Hook for Journal {
    fn before_step(&self, step: &StepInfo<'_>) {
        let scope = Scope::new(
            Arc::clone(&self.inner.store),
            step.app.app_id.clone(),
            step.sequence_id,
            Arc::clone(&self.inner.clock),
        );
        self.lock()
            .insert((step.app.app_id.clone(), step.sequence_id), Arc::new(scope));
    }

    fn after_step(&self, step: &StepInfo<'_>, _outcome: &StepOutcome<'_>) {
        self.lock()
            .remove(&(step.app.app_id.clone(), step.sequence_id));
    }
}

/// Attach a [`Journal`] to an application or to a runtime run:
/// `.journal(&journal)` adds it as an extension and as a hook.
///
/// On an [`ApplicationBuilder`] it serves that application's actions. On a
/// [`RunConfig`] it serves every task of the run and every child of their
/// parallel actions (children inherit their task's extensions and hooks),
/// so `ctx.step` journals and replays inside runtime tasks: a task retried
/// by the run's [`RetryPolicy`](tributary_runtime::RetryPolicy) replays the
/// steps that finished before the failure. Give the run a
/// [`run_id`](RunConfig::run_id) so that task app ids are the same in a
/// new process, which then finds the journaled steps.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_durable::{DurableExt, Journal, MemoryJournal, WithJournal};
/// use tributary_runtime::{RunConfig, Runtime, TaskSpec};
///
/// let journal = Journal::new(Arc::new(MemoryJournal::new()));
/// let fetch = action("fetch").run(|s: State, _, ctx| async move {
///     let n: u32 = ctx.step("download", async { Ok::<_, std::io::Error>(7) }).await?;
///     Ok((json!({ "n": n }), s))
/// });
/// let config = RunConfig::new().run_id("nightly").journal(&journal);
/// let (_h, stream) = Runtime::new().run(vec![TaskSpec::action("a", fetch)], config);
/// let outcomes = stream.outcomes().await.unwrap();
/// assert_eq!(outcomes[0].result(), Some(&json!({ "n": 7 })));
/// # }
/// ```
pub trait WithJournal {
    /// Attach `journal`.
    #[must_use]
    fn journal(self, journal: &Journal) -> Self;
}

impl WithJournal for ApplicationBuilder {
    fn journal(self, journal: &Journal) -> Self {
        self.extension(journal.clone()).hook(journal.clone())
    }
}

impl WithJournal for RunConfig {
    fn journal(self, journal: &Journal) -> Self {
        self.extension(journal.clone())
            .hook(Arc::new(journal.clone()))
    }
}
