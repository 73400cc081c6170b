//! Durable workflows: an async function of a [`WorkflowContext`] and an
//! input, started under an id, journaled step by step, resumed after a
//! crash.
//!
//! A workflow's steps are journaled under (workflow id, sequence 0); its
//! record ([`WorkflowRecord`]) keeps its function's name, its input and how
//! it ended. Starting an id that exists attaches to it: a running workflow
//! is not started twice in one engine, a finished one returns its stored
//! outcome without running anything, and an unfinished one left by a
//! crashed process is resumed. [`Workflows::resume_all`] resumes every
//! unfinished workflow (call it on startup).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_core::BoxError;

use crate::error::{DurableError, WorkflowError};
use crate::functions::Invoke;
use crate::scope::{Clock, PauseGate, Scope, system_clock};
use crate::step::DurableExt;
use crate::store::{JournalEntry, JournalStore, StepKey, WorkflowRecord, WorkflowStatus};

type WorkflowFn = Arc<
    dyn Fn(WorkflowContext, Value) -> BoxFuture<'static, Result<Value, BoxError>> + Send + Sync,
>;

/// How a workflow ended, as its handles see it.
#[derive(Debug, Clone, PartialEq)]
enum End {
    Completed(Value),
    Failed(String),
    Cancelled,
    Lost,
}

struct Running {
    end: watch::Receiver<Option<End>>,
    cancel: CancellationToken,
    unpause: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

/// Where a workflow's exhausted step waits: the record says paused until
/// [`Workflows::resume`] wakes it.
struct WorkflowPause {
    store: Arc<dyn JournalStore>,
    record: WorkflowRecord,
    unpause: Arc<Notify>,
}

impl PauseGate for WorkflowPause {
    fn pause<'a>(&'a self, step: &'a StepKey, error: &'a BoxError) -> BoxFuture<'a, bool> {
        async move {
            // Registered before the record says paused: a resume that reads
            // the record afterwards always wakes this wait.
            let resumed = self.unpause.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            let paused = WorkflowRecord {
                status: WorkflowStatus::Paused,
                output: None,
                error: Some(format!("step {step} is out of retries: {error}")),
                ..self.record.clone()
            };
            if let Err(e) = self.store.put_workflow(paused).await {
                tracing::error!(workflow = %self.record.workflow_id, error = %e, "cannot record the pause");
                return false;
            }
            resumed.await;
            let running = WorkflowRecord {
                status: WorkflowStatus::Running,
                output: None,
                error: None,
                ..self.record.clone()
            };
            match self.store.put_workflow(running).await {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(workflow = %self.record.workflow_id, error = %e, "cannot record the resume");
                    false
                }
            }
        }
        .boxed()
    }
}

type RunningMap = Arc<std::sync::Mutex<HashMap<String, Running>>>;

/// The workflow engine of a process: registered workflow functions over a
/// [`JournalStore`]. Clones share everything; when the last clone is
/// dropped, the workflows still running in it are stopped (they stay
/// unfinished in the store, and `resume_all` picks them up).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tributary_core::BoxError;
/// use tributary_durable::{DurableExt, MemoryJournal, WorkflowContext, Workflows};
///
/// async fn greet(ctx: WorkflowContext, name: String) -> Result<String, BoxError> {
///     let upper: String = ctx.step("upper", async { Ok::<_, BoxError>(name.to_uppercase()) }).await?;
///     Ok(format!("hello {upper}"))
/// }
///
/// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
/// workflows.register("greet", greet);
/// let handle = workflows.start("greet", "greet-1", "ada").await?;
/// assert_eq!(handle.result::<String>().await?, "hello ADA");
/// // The same id again: the stored outcome, nothing runs.
/// let again = workflows.start("greet", "greet-1", "ada").await?;
/// assert_eq!(again.result::<String>().await?, "hello ADA");
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Workflows {
    inner: Arc<Engine>,
}

struct Engine {
    store: Arc<dyn JournalStore>,
    clock: Clock,
    functions: RwLock<HashMap<String, WorkflowFn>>,
    running: RunningMap,
    /// One lock per id while a start, resume or cancel of that id decides
    /// whether to launch a run, so two of them never both launch one id
    /// (starts of different ids go on concurrently).
    launching: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    /// Woken on every event sent through this engine.
    events: Arc<Notify>,
    /// How often a waiting workflow reads the store for events sent by
    /// other processes, in milliseconds.
    event_poll_ms: Arc<AtomicU64>,
    /// What `ctx.call` runs.
    invoker: RwLock<Option<Arc<dyn Invoke>>>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        for (_, run) in running.drain() {
            if let Some(task) = run.task {
                task.abort();
            }
        }
    }
}

impl fmt::Debug for Workflows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let functions: Vec<String> = self
            .inner
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("Workflows")
            .field("functions", &functions)
            .finish_non_exhaustive()
    }
}

impl Workflows {
    /// An engine over `store`, with no functions registered yet.
    pub fn new(store: Arc<dyn JournalStore>) -> Self {
        Self::with_clock_arc(store, system_clock())
    }

    /// An engine whose durable sleeps read the time of day from `clock`.
    pub fn with_clock(
        store: Arc<dyn JournalStore>,
        clock: impl Fn() -> std::time::SystemTime + Send + Sync + 'static,
    ) -> Self {
        Self::with_clock_arc(store, Arc::new(clock))
    }

    fn with_clock_arc(store: Arc<dyn JournalStore>, clock: Clock) -> Self {
        Workflows {
            inner: Arc::new(Engine {
                store,
                clock,
                functions: RwLock::new(HashMap::new()),
                running: Arc::default(),
                launching: Arc::default(),
                events: Arc::new(Notify::new()),
                event_poll_ms: Arc::new(AtomicU64::new(1_000)),
                invoker: RwLock::new(None),
            }),
        }
    }

    /// Register `f` as the workflow function `name` (replacing an earlier
    /// one of that name). Workflows name their function in the store: a
    /// process that resumes them must register the same names.
    pub fn register<I, O, F, Fut>(&self, name: impl Into<String>, f: F) -> &Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(WorkflowContext, I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, BoxError>> + Send + 'static,
    {
        let f = Arc::new(f);
        let erased: WorkflowFn = Arc::new(move |ctx: WorkflowContext, input: Value| {
            let f = Arc::clone(&f);
            async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    BoxError::from(format!("input does not fit the workflow's type: {e}"))
                })?;
                let output = f(ctx, input).await?;
                Ok(serde_json::to_value(output)?)
            }
            .boxed()
        });
        self.inner
            .functions
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.into(), erased);
        self
    }

    /// Start the workflow `id` running the function `name` on `input`, or
    /// attach to it if the id exists (running here: the same run; finished:
    /// its stored outcome; unfinished after a crash: resumed).
    ///
    /// # Errors
    ///
    /// [`WorkflowError::UnknownFunction`] for a name never registered,
    /// [`WorkflowError::OtherFunction`] for an id started with another
    /// function, [`WorkflowError::Value`] for an input that does not
    /// serialise, [`WorkflowError::Store`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the record is written, the workflow
    /// is left unfinished for `resume` or `resume_all` to run.
    pub async fn start<I: Serialize>(
        &self,
        name: &str,
        id: &str,
        input: I,
    ) -> Result<WorkflowHandle, WorkflowError> {
        let input = serde_json::to_value(input).map_err(|source| WorkflowError::Value {
            workflow_id: id.to_owned(),
            source,
        })?;
        self.function(name)?;
        let _launching = self.lock_id(id).await;
        if let Some(handle) = self.attach_running(id) {
            return Ok(handle);
        }
        let (record, created) = self
            .inner
            .store
            .create_workflow(WorkflowRecord {
                workflow_id: id.to_owned(),
                name: name.to_owned(),
                input,
                status: WorkflowStatus::Running,
                output: None,
                error: None,
            })
            .await?;
        if record.name != name {
            return Err(WorkflowError::OtherFunction {
                workflow_id: id.to_owned(),
                existing: record.name,
                requested: name.to_owned(),
            });
        }
        // A record created just now has no journal yet: its first step
        // need not read one.
        self.launch(record, created)
    }

    /// Resume the workflow `id`: attach to it if it runs here, return its
    /// outcome if it has finished, run it again (replaying its journal)
    /// otherwise.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::UnknownId`] for an id never started,
    /// [`WorkflowError::UnknownFunction`] when its function is not
    /// registered in this process, [`WorkflowError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: nothing is written before the workflow is launched.
    pub async fn resume(&self, id: &str) -> Result<WorkflowHandle, WorkflowError> {
        let _launching = self.lock_id(id).await;
        if let Some(handle) = self.attach_running(id) {
            // Paused here: start its step's retries again.
            let paused = self.inner.store.workflow(id).await?;
            if paused.is_some_and(|r| r.status == WorkflowStatus::Paused) {
                if let Some(run) = self.running().get(id) {
                    run.unpause.notify_waiters();
                }
            }
            return Ok(handle);
        }
        let record = self
            .inner
            .store
            .workflow(id)
            .await?
            .ok_or_else(|| WorkflowError::UnknownId(id.to_owned()))?;
        self.launch(record, false)
    }

    /// Fork the recorded workflow `source` into a new workflow `id`: the new
    /// one runs the same function on the same input, with the first `keep`
    /// journaled steps of `source` copied into its journal, so they replay
    /// (their bodies do not run) and every later step runs anew. `source`
    /// is left as it is, finished or not. `keep` of 0 runs it all again.
    ///
    /// The journal is copied before the new record is written, each entry
    /// insert-if-absent: a fork interrupted while copying is finished by
    /// asking for it again; one interrupted after its record was written
    /// is run by [`resume`](Self::resume) (or `resume_all`) like any
    /// workflow.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use tributary_core::BoxError;
    /// use tributary_durable::{DurableExt, MemoryJournal, WorkflowContext, Workflows};
    ///
    /// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    /// workflows.register("count", |ctx: WorkflowContext, ()| async move {
    ///     let a: u32 = ctx.step("a", async { Ok::<_, BoxError>(1) }).await?;
    ///     let b: u32 = ctx.step("b", async { Ok::<_, BoxError>(2) }).await?;
    ///     Ok::<_, BoxError>(a + b)
    /// });
    /// workflows.start("count", "run-1", ()).await?.result::<u32>().await?;
    /// // A new run that keeps step `a` of run-1 and runs `b` again.
    /// let fork = workflows.fork("run-1", "run-1-retry-b", 1).await?;
    /// assert_eq!(fork.result::<u32>().await?, 3);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`WorkflowError::UnknownId`] for a `source` never started,
    /// [`WorkflowError::ForkPoint`] when `source` has journaled fewer than
    /// `keep` steps, [`WorkflowError::IdTaken`] when `id` has a record (it
    /// is another workflow, or this fork already) or holds another journal,
    /// [`WorkflowError::UnknownFunction`] when the function is not
    /// registered in this process, [`WorkflowError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped midway, the fork is partly written; asking
    /// for it again finishes it.
    pub async fn fork(
        &self,
        source: &str,
        id: &str,
        keep: u32,
    ) -> Result<WorkflowHandle, WorkflowError> {
        let record = self
            .inner
            .store
            .workflow(source)
            .await?
            .ok_or_else(|| WorkflowError::UnknownId(source.to_owned()))?;
        self.function(&record.name)?;
        let journal = self.inner.store.load(source, 0).await?;
        if journal.len() < keep as usize {
            return Err(WorkflowError::ForkPoint {
                workflow_id: source.to_owned(),
                requested: keep,
                journaled: journal.len(),
            });
        }
        let _launching = self.lock_id(id).await;
        if self.attach_running(id).is_some() {
            return Err(WorkflowError::IdTaken(id.to_owned()));
        }
        // The record is written last: one that exists belongs to another
        // workflow, or to a fork that is complete (`resume` runs it).
        if self.inner.store.workflow(id).await?.is_some() {
            return Err(WorkflowError::IdTaken(id.to_owned()));
        }
        for entry in journal.into_iter().take(keep as usize) {
            // The fork's first execution replays the copied steps.
            let wanted = JournalEntry {
                app_id: id.to_owned(),
                execution: 0,
                ..entry
            };
            let stored = self.inner.store.append(wanted.clone()).await?;
            if stored != wanted {
                return Err(WorkflowError::IdTaken(id.to_owned()));
            }
        }
        let (forked, _) = self
            .inner
            .store
            .create_workflow(WorkflowRecord {
                workflow_id: id.to_owned(),
                name: record.name.clone(),
                input: record.input.clone(),
                status: WorkflowStatus::Running,
                output: None,
                error: None,
            })
            .await?;
        self.launch(forked, false)
    }

    /// Resume every unfinished workflow of the store (on startup, after a
    /// crash); their handles, by id.
    ///
    /// # Errors
    ///
    /// As [`resume`](Self::resume), for the first workflow that cannot be
    /// resumed (those before it are running).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: workflows launched before the drop keep running.
    pub async fn resume_all(&self) -> Result<Vec<WorkflowHandle>, WorkflowError> {
        let unfinished = self.inner.store.unfinished_workflows().await?;
        let mut handles = Vec::with_capacity(unfinished.len());
        for record in unfinished {
            handles.push(self.resume(&record.workflow_id).await?);
        }
        Ok(handles)
    }

    /// Cancel the workflow `id`: a running one is stopped at its next await
    /// (the step in flight is dropped); it is recorded as cancelled and
    /// never resumed.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::UnknownId`] for an id never started,
    /// [`WorkflowError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn cancel(&self, id: &str) -> Result<(), WorkflowError> {
        let _launching = self.lock_id(id).await;
        if let Some(handle) = self.attach_running(id) {
            handle.cancel();
            return Ok(());
        }
        let mut record = self
            .inner
            .store
            .workflow(id)
            .await?
            .ok_or_else(|| WorkflowError::UnknownId(id.to_owned()))?;
        if !record.status.is_finished() {
            record.status = WorkflowStatus::Cancelled;
            self.inner.store.put_workflow(record).await?;
        }
        Ok(())
    }

    /// Send an event named `name` to the workflow `id`. It is stored first
    /// (so neither a crash of the sender nor one of the workflow loses it);
    /// the workflow's next [`WorkflowContext::await_event`] of that name
    /// that has not received one yet takes it, journals it and never takes
    /// it again. Workflows waiting in this engine wake at once; those in
    /// other processes within their poll interval.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::UnknownId`] for an id never started,
    /// [`WorkflowError::Value`] for a value that does not serialise,
    /// [`WorkflowError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: dropped after the store was asked, the event may or
    /// may not have been kept.
    pub async fn send_event<T: Serialize>(
        &self,
        id: &str,
        name: &str,
        value: T,
    ) -> Result<(), WorkflowError> {
        let value = serde_json::to_value(value).map_err(|source| WorkflowError::Value {
            workflow_id: id.to_owned(),
            source,
        })?;
        if self.inner.store.workflow(id).await?.is_none() {
            return Err(WorkflowError::UnknownId(id.to_owned()));
        }
        self.inner.store.send_event(id, name, value).await?;
        self.inner.events.notify_waiters();
        Ok(())
    }

    /// How often a workflow waiting for an event reads the store, for
    /// events sent by other processes (1 s unless set; events sent through
    /// this engine wake it at once).
    pub fn set_event_poll_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis()).unwrap_or(u64::MAX).max(1);
        self.inner.event_poll_ms.store(ms, Ordering::Relaxed);
    }

    /// Where the workflows' `ctx.call`s go: [`Functions`](crate::Functions)
    /// run in this process, or any other [`Invoke`] (workflows launched
    /// afterwards use it).
    pub fn set_functions(&self, functions: impl Invoke) {
        *self
            .inner
            .invoker
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(functions));
    }

    /// The stored record of `id`, if any.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn record(&self, id: &str) -> Result<Option<WorkflowRecord>, WorkflowError> {
        Ok(self.inner.store.workflow(id).await?)
    }

    fn function(&self, name: &str) -> Result<WorkflowFn, WorkflowError> {
        self.inner
            .functions
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| WorkflowError::UnknownFunction(name.to_owned()))
    }

    /// Take the launch lock of `id`.
    async fn lock_id(&self, id: &str) -> IdLock {
        let lock = {
            let mut map = self
                .inner
                .launching
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            Arc::clone(map.entry(id.to_owned()).or_default())
        };
        IdLock {
            guard: Some(lock.lock_owned().await),
            map: Arc::clone(&self.inner.launching),
            id: id.to_owned(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        self.inner
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn attach_running(&self, id: &str) -> Option<WorkflowHandle> {
        self.running().get(id).map(|run| WorkflowHandle {
            id: id.to_owned(),
            end: run.end.clone(),
            cancel: run.cancel.clone(),
        })
    }

    /// A handle on `record`: its outcome if finished, a new run otherwise.
    fn launch(&self, record: WorkflowRecord, fresh: bool) -> Result<WorkflowHandle, WorkflowError> {
        let id = record.workflow_id.clone();
        let finished = match record.status {
            WorkflowStatus::Running | WorkflowStatus::Paused => None,
            WorkflowStatus::Completed => {
                Some(End::Completed(record.output.clone().unwrap_or(Value::Null)))
            }
            WorkflowStatus::Failed => Some(End::Failed(record.error.clone().unwrap_or_default())),
            WorkflowStatus::Cancelled => Some(End::Cancelled),
        };
        if let Some(end) = finished {
            let (_tx, end) = watch::channel(Some(end));
            return Ok(WorkflowHandle {
                id,
                end,
                cancel: CancellationToken::new(),
            });
        }
        let function = self.function(&record.name)?;
        let (tx, end) = watch::channel(None);
        let cancel = CancellationToken::new();
        let unpause = Arc::new(Notify::new());
        let ctx = WorkflowContext {
            id: id.clone(),
            scope: Arc::new({
                let scope = Scope::new(
                    Arc::clone(&self.inner.store),
                    id.clone(),
                    0,
                    Arc::clone(&self.inner.clock),
                )
                .with_pause(Arc::new(WorkflowPause {
                    store: Arc::clone(&self.inner.store),
                    record: record.clone(),
                    unpause: Arc::clone(&unpause),
                }));
                if fresh {
                    scope.with_empty_journal()
                } else {
                    scope
                }
            }),
            cancel: cancel.clone(),
            events: Arc::clone(&self.inner.events),
            event_poll_ms: Arc::clone(&self.inner.event_poll_ms),
            functions: self
                .inner
                .invoker
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .clone(),
        };
        let store = Arc::clone(&self.inner.store);
        let map = Arc::clone(&self.inner.running);
        let handle_id = id.clone();
        let token = cancel.clone();
        let mut running = self.running();
        let task = tokio::spawn(async move {
            if record.status == WorkflowStatus::Paused {
                // Resumed by a user in a new process: no longer paused.
                let running = WorkflowRecord {
                    status: WorkflowStatus::Running,
                    error: None,
                    ..record.clone()
                };
                if let Err(e) = store.put_workflow(running).await {
                    tracing::error!(workflow = %id, error = %e, "cannot record the resume");
                }
            }
            let body = function(ctx, record.input.clone());
            let end = tokio::select! {
                out = body => match out {
                    Ok(value) => End::Completed(value),
                    Err(e) => End::Failed(e.to_string()),
                },
                () = token.cancelled() => End::Cancelled,
            };
            let (status, output, error) = match &end {
                End::Completed(v) => (WorkflowStatus::Completed, Some(v.clone()), None),
                End::Failed(e) => (WorkflowStatus::Failed, None, Some(e.clone())),
                _ => (WorkflowStatus::Cancelled, None, None),
            };
            let saved = store
                .put_workflow(WorkflowRecord {
                    status,
                    output,
                    error,
                    ..record
                })
                .await;
            let end = match saved {
                Ok(()) => end,
                Err(e) => {
                    tracing::error!(workflow = %id, error = %e, "the workflow's outcome was not stored");
                    End::Lost
                }
            };
            // Removed before the outcome is sent: a start that sees the
            // outcome finds the record, not a finished run.
            map.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            let _ = tx.send(Some(end));
        });
        // The map's lock is taken before the task is spawned: the task
        // cannot remove its entry before it is inserted.
        running.insert(
            handle_id.clone(),
            Running {
                end: end.clone(),
                cancel: cancel.clone(),
                unpause,
                task: Some(task),
            },
        );
        Ok(WorkflowHandle {
            id: handle_id,
            end,
            cancel,
        })
    }
}

/// The launch lock of one id; its map entry goes once nobody holds or
/// waits for it (the map holds only ids being launched).
struct IdLock {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    map: Arc<std::sync::Mutex<HashMap<String, Arc<Mutex<()>>>>>,
    id: String,
}

impl Drop for IdLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut map = self.map.lock().unwrap_or_else(PoisonError::into_inner);
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

/// A handle on one workflow: wait for its outcome, or cancel it. Cheap to
/// clone; any number of handles may wait.
#[derive(Clone)]
pub struct WorkflowHandle {
    id: String,
    end: watch::Receiver<Option<End>>,
    cancel: CancellationToken,
}

impl fmt::Debug for WorkflowHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowHandle")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl WorkflowHandle {
    /// The workflow's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Ask the workflow to stop (as [`Workflows::cancel`] for a workflow
    /// running in this engine; nothing for one that has finished).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// Wait for the workflow's outcome.
    ///
    /// # Errors
    ///
    /// [`WorkflowError::Failed`] with the function's error,
    /// [`WorkflowError::Cancelled`], [`WorkflowError::Value`] for an output
    /// that does not fit `O`, [`WorkflowError::Lost`] when the run stopped
    /// without an outcome (its engine was dropped, the store failed).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future leaves the workflow running.
    pub async fn result<O: DeserializeOwned>(&self) -> Result<O, WorkflowError> {
        let mut end = self.end.clone();
        let outcome = match end.wait_for(Option::is_some).await {
            Ok(outcome) => outcome.clone(),
            Err(_) => None,
        };
        match outcome {
            Some(End::Completed(value)) => {
                serde_json::from_value(value).map_err(|source| WorkflowError::Value {
                    workflow_id: self.id.clone(),
                    source,
                })
            }
            Some(End::Failed(error)) => Err(WorkflowError::Failed {
                workflow_id: self.id.clone(),
                error,
            }),
            Some(End::Cancelled) => Err(WorkflowError::Cancelled(self.id.clone())),
            Some(End::Lost) | None => Err(WorkflowError::Lost(self.id.clone())),
        }
    }
}

/// What a workflow function is given: its id, durable steps (through
/// [`DurableExt`]), and its cancellation.
#[derive(Clone)]
pub struct WorkflowContext {
    id: String,
    scope: Arc<Scope>,
    cancel: CancellationToken,
    events: Arc<Notify>,
    event_poll_ms: Arc<AtomicU64>,
    functions: Option<Arc<dyn Invoke>>,
}

impl fmt::Debug for WorkflowContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkflowContext")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl WorkflowContext {
    /// The workflow's id.
    pub fn workflow_id(&self) -> &str {
        &self.id
    }

    /// Whether the workflow was asked to stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Wait for the next event named `name` sent to this workflow with
    /// [`Workflows::send_event`]: the n-th wait for a name takes the n-th
    /// event of that name. The event is journaled once received, so after
    /// a crash it is neither lost (an event sent but not yet received is
    /// still in the store) nor delivered twice (a received one is replayed
    /// from the journal).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use tributary_core::BoxError;
    /// use tributary_durable::{MemoryJournal, WorkflowContext, Workflows};
    ///
    /// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    /// workflows.register("refund", |ctx: WorkflowContext, amount: u32| async move {
    ///     let approved: bool = ctx.await_event("approval").await?;
    ///     Ok::<_, BoxError>(if approved { amount } else { 0 })
    /// });
    /// let handle = workflows.start("refund", "refund-1", 40).await?;
    /// workflows.send_event("refund-1", "approval", true).await?;
    /// assert_eq!(handle.result::<u32>().await?, 40);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`DurableError::NonDeterminism`] when the journal holds another step
    /// here, [`DurableError::Value`] for an event that does not fit `T`,
    /// [`DurableError::Store`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event is taken only when journaled; dropped before,
    /// it stays for the next wait.
    pub async fn await_event<T: DeserializeOwned>(&self, name: &str) -> Result<T, DurableError> {
        let poll = Duration::from_millis(self.event_poll_ms.load(Ordering::Relaxed));
        let (step, value) = self.scope.await_event(name, &self.events, poll).await?;
        serde_json::from_value(value).map_err(|source| DurableError::Value { step, source })
    }
}

impl DurableExt for WorkflowContext {
    fn invoker(&self) -> Option<Arc<dyn Invoke>> {
        self.functions.clone()
    }

    fn scope(&self) -> Result<Arc<Scope>, DurableError> {
        Ok(Arc::clone(&self.scope))
    }
}
