use std::any::{Any, TypeId};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use serde_json::Value;
use smallvec::SmallVec;

use crate::error::{BoxError, EmitError, HookMethod, HookPanic};
use crate::hooks::{Hook, HookList, StepPause, StreamItemInfo, call_hooks};
use crate::identity::{AppInfo, Identity, ParentPointer};
use crate::persistence::Persister;

/// One intermediate output of an action, as handed to a [`StreamSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct Emitted {
    /// The action that emitted it.
    pub action: Arc<str>,
    /// The sequence id of the step.
    pub sequence_id: u64,
    /// Its index among the step's outputs, from 0.
    pub index: u64,
    /// The output.
    pub value: Value,
}

/// Where the intermediate outputs of an application's actions go.
///
/// The runtime installs one per subgraph to turn outputs into stream items;
/// [`Application::stream_result`](crate::Application::stream_result) installs
/// its own for the halt action. Awaiting `send` is the action's backpressure.
#[async_trait]
pub trait StreamSink: Send + Sync + 'static {
    /// Deliver one output.
    ///
    /// # Errors
    ///
    /// [`EmitError`] when the consumer is gone.
    async fn send(&self, item: Emitted) -> Result<(), EmitError>;
}

/// A type map that carries runtime services into actions (the runtime puts
/// its handle here so actions can spawn children on it).
#[derive(Clone, Default)]
pub struct Extensions {
    // A handful of entries at most (every task of a run carries one): a
    // vector searched linearly is smaller and faster than a hash map, and
    // the first two live inline (a runtime task has its scope and often
    // one service), so most maps allocate nothing of their own.
    map: SmallVec<[(TypeId, Arc<dyn Any + Send + Sync>); 2]>,
}

impl Extensions {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Insert a value, replacing any value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        let id = TypeId::of::<T>();
        let value: Arc<dyn Any + Send + Sync> = Arc::new(value);
        match self.map.iter_mut().find(|(k, _)| *k == id) {
            Some(slot) => slot.1 = value,
            None => self.map.push((id, value)),
        }
    }

    /// The value of type `T`, if present.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.map
            .iter()
            .find(|(k, _)| *k == id)
            .and_then(|(_, v)| v.downcast_ref::<T>())
    }

    /// Insert every value of `other` (shared, not cloned), replacing values
    /// of the same types.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_core::Extensions;
    ///
    /// let mut a = Extensions::new();
    /// a.insert(1u8);
    /// a.insert("kept");
    /// let mut b = Extensions::new();
    /// b.insert(2u8);
    /// a.merge(&b);
    /// assert_eq!(a.get::<u8>(), Some(&2));
    /// assert_eq!(a.get::<&str>(), Some(&"kept"));
    /// ```
    pub fn merge(&mut self, other: &Extensions) {
        for (id, value) in &other.map {
            match self.map.iter_mut().find(|(k, _)| k == id) {
                Some(slot) => slot.1 = Arc::clone(value),
                None => self.map.push((*id, Arc::clone(value))),
            }
        }
    }

    /// Whether the map is empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl fmt::Debug for Extensions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Extensions")
            .field("len", &self.map.len())
            .finish()
    }
}

/// What the contexts of one step share: the application's services and the
/// count of the step's outputs. One allocation per application: the next
/// step reuses it when no context of the last one is left (see
/// `Application::step_shared`).
pub(crate) struct StepShared {
    pub(crate) extensions: Extensions,
    pub(crate) emitted: AtomicU64,
}

impl StepShared {
    pub(crate) fn new(extensions: Extensions) -> Self {
        StepShared {
            extensions,
            emitted: AtomicU64::new(0),
        }
    }
}

/// Where an `on_stream_item` hook's panic during a step is kept for the
/// step to fail with. Only steps of applications with hooks have one.
pub(crate) type HookPanicSlot = Arc<OnceLock<HookPanic>>;

/// What an action knows about the step it runs in, and how it streams.
///
/// Cheap to clone; a clone emits into the same stream.
#[derive(Clone)]
pub struct ActionContext {
    pub(crate) app: Identity,
    pub(crate) sequence_id: u64,
    pub(crate) action: Arc<str>,
    pub(crate) sink: Option<Arc<dyn StreamSink>>,
    pub(crate) hooks: HookList,
    pub(crate) shared: Arc<StepShared>,
    pub(crate) hook_panic: Option<HookPanicSlot>,
    pub(crate) persister: Option<Arc<dyn Persister>>,
}

impl fmt::Debug for ActionContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionContext")
            .field("app_id", &self.app.app_id())
            .field("sequence_id", &self.sequence_id)
            .field("action", &self.action)
            .finish_non_exhaustive()
    }
}

impl ActionContext {
    /// The application's id.
    pub fn app_id(&self) -> &str {
        self.app.app_id()
    }

    /// The application's partition key.
    pub fn partition_key(&self) -> Option<&str> {
        self.app.info().partition_key.as_deref()
    }

    /// The sequence id of this step.
    pub fn sequence_id(&self) -> u64 {
        self.sequence_id
    }

    /// The name of the running action.
    pub fn action_name(&self) -> &str {
        &self.action
    }

    /// The key of the runtime task running this application; `None` when
    /// the application runs outside a runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, RunOptions};
    ///
    /// let graph = Graph::single(action("label").writes(["label"]).run(|s, _, ctx| async move {
    ///     let label = match ctx.task_key() {
    ///         Some(key) => format!("{} (at {})", key, ctx.task_path().join("/")),
    ///         None => "standalone".to_owned(),
    ///     };
    ///     Ok((json!({}), s.set("label", label)))
    /// }));
    /// let mut app = Application::builder(graph.clone()).build().await?;
    /// let out = app.run(RunOptions::new()).await?;
    /// assert_eq!(out.state.get("label"), Some(&json!("standalone")));
    ///
    /// let mut app = Application::builder(graph).task_path(["city", "rain"]).build().await?;
    /// let out = app.run(RunOptions::new()).await?;
    /// assert_eq!(out.state.get("label"), Some(&json!("rain (at city/rain)")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn task_key(&self) -> Option<&str> {
        self.app.task_key()
    }

    /// The task keys from the root of the run to this application's task,
    /// its own key last; empty when the application runs outside a runtime.
    /// See [`task_key`](Self::task_key) for an example.
    pub fn task_path(&self) -> &[Arc<str>] {
        self.app.task_path()
    }

    /// The application this one was forked from, if any.
    pub fn parent(&self) -> Option<&ParentPointer> {
        self.app.info().parent.as_ref()
    }

    /// The application (and step) that spawned this one, if any.
    pub fn spawning_parent(&self) -> Option<&ParentPointer> {
        self.app.info().spawning_parent.as_ref()
    }

    /// The application's identity.
    pub fn app(&self) -> &Arc<AppInfo> {
        self.app.info()
    }

    /// Services the runtime made available to actions.
    pub fn extensions(&self) -> &Extensions {
        &self.shared.extensions
    }

    /// The service of type `T` attached with
    /// [`ApplicationBuilder::extension`](crate::ApplicationBuilder::extension)
    /// (or by the runtime), if any: dependency injection without a clone per
    /// closure.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, RunOptions};
    ///
    /// #[derive(Debug)]
    /// struct Pool { url: String }
    ///
    /// let graph = Graph::single(action("query").writes(["db"]).run(|s, _, ctx| async move {
    ///     let pool = ctx.extension::<Pool>().ok_or("no pool attached")?;
    ///     let url = pool.url.clone();
    ///     Ok((json!({}), s.set("db", url)))
    /// }));
    /// let mut app = Application::builder(graph)
    ///     .extension(Pool { url: "postgres://db".into() })
    ///     .build()
    ///     .await?;
    /// let out = app.run(RunOptions::new()).await?;
    /// assert_eq!(out.state.get("db"), Some(&json!("postgres://db")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.shared.extensions.get::<T>()
    }

    /// The application's persister, if it has one (parallel actions cascade
    /// it to their children).
    pub fn persister(&self) -> Option<&Arc<dyn Persister>> {
        self.persister.as_ref()
    }

    /// The application's hooks (parallel actions cascade them to their
    /// children).
    pub fn hooks(&self) -> &[Arc<dyn Hook>] {
        &self.hooks
    }

    /// How many outputs this step has emitted so far.
    pub fn items_emitted(&self) -> u64 {
        self.shared.emitted.load(Ordering::Relaxed)
    }

    /// Tell the application's hooks (a tracker) that this step now waits,
    /// paused from inside its action, for `waiting` (what waits: a durable
    /// step out of retries) because of `reason` (its last error). Call
    /// [`report_resumed`](Self::report_resumed) when it goes on. Durable
    /// steps with `pause_on_exhausted` call both.
    ///
    /// A hook that panics fails the step, as for
    /// [`emit`](Self::emit).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::{Arc, Mutex};
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, Hook, RunOptions, State, StepPause};
    ///
    /// #[derive(Default)]
    /// struct Log(Mutex<Vec<String>>);
    /// impl Hook for Log {
    ///     fn on_step_paused(&self, p: &StepPause<'_>) {
    ///         self.0.lock().unwrap().push(format!("paused {} on {}: {}", p.action, p.waiting, p.reason));
    ///     }
    ///     fn on_step_resumed(&self, p: &StepPause<'_>) {
    ///         self.0.lock().unwrap().push(format!("resumed {}", p.waiting));
    ///     }
    /// }
    /// let log = Arc::new(Log::default());
    /// let graph = Graph::single(action("pay").run(|s: State, _, ctx| async move {
    ///     ctx.report_paused("charge#0", "card service down");
    ///     ctx.report_resumed("charge#0", "card service down");
    ///     Ok((json!({}), s))
    /// }));
    /// let mut app = Application::builder(graph).hook_arc(log.clone()).build().await?;
    /// app.run(RunOptions::new()).await?;
    /// assert_eq!(
    ///     *log.0.lock().unwrap(),
    ///     ["paused pay on charge#0: card service down", "resumed charge#0"]
    /// );
    /// # Ok(())
    /// # }
    /// ```
    pub fn report_paused(&self, waiting: &str, reason: &str) {
        self.report_pause(HookMethod::OnStepPaused, waiting, reason);
    }

    /// Tell the application's hooks that the step paused by
    /// [`report_paused`](Self::report_paused) goes on.
    pub fn report_resumed(&self, waiting: &str, reason: &str) {
        self.report_pause(HookMethod::OnStepResumed, waiting, reason);
    }

    fn report_pause(&self, method: HookMethod, waiting: &str, reason: &str) {
        if self.hooks.is_empty() {
            return;
        }
        let pause = StepPause {
            app: self.app.info(),
            sequence_id: self.sequence_id,
            action: &self.action,
            waiting,
            reason,
        };
        let called = call_hooks(&self.hooks, method, |hook| match method {
            HookMethod::OnStepPaused => hook.on_step_paused(&pause),
            _ => hook.on_step_resumed(&pause),
        });
        if let Err(panic) = called {
            if let Some(slot) = &self.hook_panic {
                let _ = slot.set(panic);
            }
        }
    }

    /// Emit one intermediate output of this action.
    ///
    /// Awaiting is the backpressure: it returns once the consumer (or the
    /// runtime's mailbox) has room, and while the run is paused it waits.
    /// Without a consumer (a plain `run`) the output goes to the stream-item
    /// hooks only and this returns at once.
    ///
    /// # Errors
    ///
    /// [`EmitError`] when the consumer has gone away, or when an
    /// `on_stream_item` hook panicked (the step then fails with
    /// [`ActionError::HookPanicked`](crate::ActionError::HookPanicked));
    /// returning it with `?` ends the action.
    ///
    /// # Cancel safety
    ///
    /// Not cancel safe: if the future is dropped before it completes the
    /// output may or may not have been delivered.
    pub async fn emit(&self, value: impl Into<Value>) -> Result<(), EmitError> {
        let value = value.into();
        let index = self.shared.emitted.fetch_add(1, Ordering::Relaxed);
        if !self.hooks.is_empty() {
            let info = StreamItemInfo {
                app: self.app.info(),
                sequence_id: self.sequence_id,
                action: &self.action,
                index,
            };
            let called = call_hooks(&self.hooks, HookMethod::OnStreamItem, |hook| {
                hook.on_stream_item(&info, &value)
            });
            if let Err(panic) = called {
                // The step fails with the panic (the application reads it
                // from here); the error stops the action.
                if let Some(slot) = &self.hook_panic {
                    let _ = slot.set(panic);
                }
                return Err(EmitError {
                    action: self.action.to_string(),
                });
            }
        }
        match &self.sink {
            Some(sink) => {
                sink.send(Emitted {
                    action: Arc::clone(&self.action),
                    sequence_id: self.sequence_id,
                    index,
                    value,
                })
                .await
            }
            None => Ok(()),
        }
    }

    /// Run blocking or CPU-heavy work on the blocking thread pool and await
    /// its result, so it never stalls the async threads. See
    /// [`spawn_blocking`].
    ///
    /// # Errors
    ///
    /// When the closure panics.
    pub async fn spawn_blocking<F, R>(&self, f: F) -> Result<R, BoxError>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        spawn_blocking(f).await
    }
}

/// Run `f` on tokio's blocking thread pool and await its result.
///
/// # Errors
///
/// When `f` panics, with the panic message.
///
/// # Panics
///
/// Outside a tokio runtime.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tributary_core::BoxError> {
/// let sum = tributary_core::spawn_blocking(|| (0..1_000u64).sum::<u64>()).await?;
/// assert_eq!(sum, 499_500);
/// # Ok(())
/// # }
/// ```
pub async fn spawn_blocking<F, R>(f: F) -> Result<R, BoxError>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        if e.is_panic() {
            let payload = e.into_panic();
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_owned());
            format!("blocking task panicked: {msg}").into()
        } else {
            BoxError::from("blocking task was cancelled")
        }
    })
}
