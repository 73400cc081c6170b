use std::fmt;
use std::sync::Arc;

use super::Application;
use crate::action::{Extensions, StepShared, StreamSink};
use crate::error::{BuildError, HookMethod};
use crate::graph::Graph;
use crate::hooks::{Hook, HookList, call_hooks};
use crate::identity::{AppInfo, Identity, ParentPointer, TaskIdentity};
use crate::persistence::{Checkpoint, Persister, StepStatus};
use crate::state::State;

/// Builds an [`Application`].
///
/// # Examples
///
/// Resume after a failure: the failed action runs again, nothing else does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tributary_core::{action, default, Application, Graph, InMemoryPersister, RunOptions, State};
///
/// let persister = Arc::new(InMemoryPersister::new());
/// let graph = Graph::builder()
///     .action(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }))
///     .action(action("b").reads(["ok"]).run(|s: State, _, _| async move {
///         if s.get("ok").is_none() { return Err("not yet".into()) }
///         Ok((json!({}), s))
///     }))
///     .transition("a", "b", default())
///     .entrypoint("a")
///     .build()?;
///
/// let mut first = Application::builder(graph.clone())
///     .app_id("job-1")
///     .persister(persister.clone())
///     .build()
///     .await?;
/// assert!(first.run(RunOptions::new()).await.is_err()); // `a` ran, `b` failed
///
/// let mut again = Application::builder(graph)
///     .app_id("job-1")
///     .state(State::new().set("ok", true)) // ignored: the checkpoint wins
///     .persister(persister.clone())
///     .resume()
///     .build()
///     .await?;
/// assert_eq!(again.next_action(), Some("b"));
/// # Ok(())
/// # }
/// ```
#[must_use = "an application builder does nothing until `build` is awaited"]
pub struct ApplicationBuilder {
    graph: Graph,
    app_id: Option<String>,
    partition_key: Option<String>,
    state: State,
    entrypoint: Option<String>,
    hooks: Vec<Arc<dyn Hook>>,
    persister: Option<Arc<dyn Persister>>,
    resume: bool,
    fork: Option<(String, Option<u64>)>,
    spawning_parent: Option<ParentPointer>,
    sink: Option<Arc<dyn StreamSink>>,
    extensions: Extensions,
    task_path: Vec<Arc<str>>,
    run_id: Option<Arc<str>>,
    task_index: Option<u64>,
    identity: Option<Arc<dyn TaskIdentity>>,
}

impl fmt::Debug for ApplicationBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApplicationBuilder")
            .field("graph", &self.graph)
            .field("app_id", &self.app_id)
            .field("resume", &self.resume)
            .field("fork", &self.fork)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Start building an application of `graph`.
    ///
    /// See [`ApplicationBuilder`] for an example.
    #[inline]
    pub fn builder(graph: Graph) -> ApplicationBuilder {
        ApplicationBuilder::new(graph)
    }
}

impl ApplicationBuilder {
    #[inline]
    fn new(graph: Graph) -> Self {
        ApplicationBuilder {
            graph,
            app_id: None,
            partition_key: None,
            state: State::new(),
            entrypoint: None,
            hooks: Vec::new(),
            persister: None,
            resume: false,
            fork: None,
            spawning_parent: None,
            sink: None,
            extensions: Extensions::new(),
            task_path: Vec::new(),
            run_id: None,
            task_index: None,
            identity: None,
        }
    }

    /// Set the app id (a random UUID otherwise).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// Set the partition key.
    pub fn partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// The initial state of a fresh application (ignored when a checkpoint
    /// is resumed or forked).
    #[inline]
    pub fn state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// Start a fresh application at `action` instead of the graph's
    /// entrypoint.
    pub fn entrypoint(mut self, action: impl Into<String>) -> Self {
        self.entrypoint = Some(action.into());
        self
    }

    /// Add a hook.
    pub fn hook(self, hook: impl Hook) -> Self {
        self.hook_arc(Arc::new(hook))
    }

    /// Add a hook already behind an `Arc` (to keep a handle to it).
    #[inline]
    pub fn hook_arc(mut self, hook: Arc<dyn Hook>) -> Self {
        self.hooks.push(hook);
        self
    }

    /// Save a checkpoint after every step.
    #[inline]
    pub fn persister(mut self, persister: Arc<dyn Persister>) -> Self {
        self.persister = Some(persister);
        self
    }

    /// Continue from this app id's latest checkpoint, if it has one.
    #[inline]
    pub fn resume(mut self) -> Self {
        self.resume = true;
        self
    }

    /// Start from the checkpoint of another application (`sequence_id`, or
    /// its latest), under this application's own id.
    pub fn fork_from(mut self, app_id: impl Into<String>, sequence_id: Option<u64>) -> Self {
        self.fork = Some((app_id.into(), sequence_id));
        self
    }

    /// Record the application (and step) that spawned this one.
    pub fn spawning_parent(mut self, parent: ParentPointer) -> Self {
        self.spawning_parent = Some(parent);
        self
    }

    /// Send every action's intermediate outputs to `sink`.
    #[inline]
    pub fn stream_sink(mut self, sink: Arc<dyn StreamSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Place the application in a run's task tree: the task keys from the
    /// run's root to this application's task, its own key last. The runtime
    /// sets it; actions read it with
    /// [`ActionContext::task_key`](crate::ActionContext::task_key) and
    /// [`ActionContext::task_path`](crate::ActionContext::task_path), hooks
    /// through [`AppInfo::task_path`].
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, RunOptions};
    ///
    /// let graph = Graph::single(action("where").writes(["key"]).run(|s, _, ctx| async move {
    ///     let key = ctx.task_key().unwrap_or("none").to_owned();
    ///     Ok((json!({}), s.set("key", key)))
    /// }));
    /// let mut app = Application::builder(graph)
    ///     .task_path(["forecast", "flood risk"])
    ///     .build()
    ///     .await?;
    /// let outcome = app.run(RunOptions::new()).await?;
    /// assert_eq!(outcome.state.get("key"), Some(&json!("flood risk")));
    /// # Ok(())
    /// # }
    /// ```
    pub fn task_path<I, K>(mut self, path: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<Arc<str>>,
    {
        self.task_path = path.into_iter().map(Into::into).collect();
        self
    }

    /// Record the runtime run the application's task belongs to and the
    /// task's position in task order, for hooks ([`AppInfo::run_id`],
    /// [`AppInfo::task_index`]): a tracker stores them. The runtime sets
    /// them.
    pub fn run_task(mut self, run_id: impl Into<Arc<str>>, task_index: u64) -> Self {
        self.run_id = Some(run_id.into());
        self.task_index = Some(task_index);
        self
    }

    /// Take the application's identity from its runtime task: its id and
    /// task path are read from `identity`, and its [`AppInfo`] is built by
    /// `identity` the first time a hook, a persister or an action asks for
    /// it, not when the application is built. The id, partition key, task
    /// path, run and spawning parent set on this builder are then not used
    /// (the task's identity carries them). The runtime builds its tasks'
    /// applications this way, so that a task nobody asks about costs no
    /// identity of its own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, OnceLock};
    /// use serde_json::json;
    /// use tributary_core::{action, AppInfo, Application, Graph, TaskIdentity};
    ///
    /// struct Task {
    ///     id: String,
    ///     path: Vec<Arc<str>>,
    ///     info: OnceLock<Arc<AppInfo>>,
    /// }
    ///
    /// impl TaskIdentity for Task {
    ///     fn app_id(&self) -> &str {
    ///         &self.id
    ///     }
    ///     fn task_path(&self) -> &[Arc<str>] {
    ///         &self.path
    ///     }
    ///     fn info(&self) -> &Arc<AppInfo> {
    ///         self.info.get_or_init(|| {
    ///             let mut info = AppInfo::new(self.id.clone());
    ///             info.task_path = self.path.clone();
    ///             Arc::new(info)
    ///         })
    ///     }
    /// }
    ///
    /// let task = Arc::new(Task { id: "job-9".into(), path: vec!["city".into()], info: OnceLock::new() });
    /// let graph = Graph::single(action("noop").run(|s, _, _| async move { Ok((json!({}), s)) }));
    /// let app = Application::builder(graph).task_identity(task.clone()).build_fresh()?;
    /// assert_eq!(app.app_id(), "job-9");
    /// assert!(task.info.get().is_none(), "nothing asked for the whole identity yet");
    /// assert_eq!(app.info().task_key(), Some("city"));
    /// assert!(task.info.get().is_some());
    /// # Ok::<(), tributary_core::BuildError>(())
    /// ```
    #[inline]
    pub fn task_identity(mut self, identity: Arc<dyn TaskIdentity>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// Make a service available to actions through
    /// [`ActionContext::extension`](crate::ActionContext::extension) (one
    /// value per type; a later value of the same type replaces it).
    ///
    /// See [`ActionContext::extension`](crate::ActionContext::extension)
    /// for an example.
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Make every service of `extensions` available to actions, replacing
    /// values of the same types set before (the runtime hands a run's
    /// extensions to each of its tasks this way; the values are shared, not
    /// cloned).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Extensions, Graph, RunOptions};
    ///
    /// let mut shared = Extensions::new();
    /// shared.insert(42u32);
    /// let graph = Graph::single(action("read").writes(["n"]).run(|s, _, ctx| async move {
    ///     let n = *ctx.extension::<u32>().ok_or("missing")?;
    ///     Ok((json!({}), s.set("n", n)))
    /// }));
    /// let mut app = Application::builder(graph).extensions(&shared).build().await?;
    /// assert_eq!(app.run(RunOptions::new()).await?.state.get("n"), Some(&json!(42)));
    /// # Ok(())
    /// # }
    /// ```
    #[inline]
    pub fn extensions(mut self, extensions: &Extensions) -> Self {
        self.extensions.merge(extensions);
        self
    }

    /// Build the application, loading its checkpoint when resuming or
    /// forking.
    ///
    /// # Errors
    ///
    /// [`BuildError`] for an unknown entrypoint, a resume or fork without a
    /// persister, a fork from itself or from a missing checkpoint, a
    /// checkpoint that names an unknown action, persister failures, and a
    /// hook that panics in `on_create` ([`BuildError::Hook`]).
    pub async fn build(mut self) -> Result<Application, BuildError> {
        let app_id = self.take_app_id();
        if let Some(name) = &self.entrypoint {
            if self.graph.index_of(name).is_none() {
                return Err(BuildError::UnknownEntrypoint(name.clone()));
            }
        }
        let mut parent = None;
        let loaded = if let Some((source, sequence_id)) = &self.fork {
            let persister = self.persister.as_ref().ok_or(BuildError::NoPersister)?;
            if *source == app_id {
                return Err(BuildError::ForkFromSelf(app_id));
            }
            let checkpoint = persister.load(source, *sequence_id).await?.ok_or_else(|| {
                BuildError::ForkSourceMissing {
                    app_id: source.clone(),
                    sequence_id: *sequence_id,
                }
            })?;
            parent = Some(ParentPointer {
                app_id: source.clone(),
                sequence_id: checkpoint.sequence_id,
                action: Some(checkpoint.action.clone()),
                partition_key: checkpoint.partition_key.clone(),
            });
            Some(checkpoint)
        } else if self.resume {
            let persister = self.persister.as_ref().ok_or(BuildError::NoPersister)?;
            persister.load(&app_id, None).await?
        } else {
            None
        };
        self.finish(app_id, parent, loaded)
    }

    /// Build a fresh application at once, without awaiting anything: the
    /// same as [`build`](Self::build) for a builder that neither resumes
    /// nor forks (there is no checkpoint to load). The runtime starts its
    /// tasks this way when they have no persister.
    ///
    /// # Errors
    ///
    /// [`BuildError::NeedsLoading`] when the builder resumes or forks;
    /// otherwise as [`build`](Self::build).
    ///
    /// # Examples
    ///
    /// ```
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, State};
    ///
    /// let graph = Graph::single(action("noop").run(|s, _, _| async move { Ok((json!({}), s)) }));
    /// let app = Application::builder(graph)
    ///     .app_id("job-1")
    ///     .state(State::new().set("n", 1))
    ///     .build_fresh()?;
    /// assert_eq!(app.app_id(), "job-1");
    /// assert_eq!(app.next_action(), Some("noop"));
    /// # Ok::<(), tributary_core::BuildError>(())
    /// ```
    pub fn build_fresh(mut self) -> Result<Application, BuildError> {
        if self.resume || self.fork.is_some() {
            return Err(BuildError::NeedsLoading);
        }
        // With a task identity the id is the task's: nothing to make.
        let app_id = if self.identity.is_some() {
            String::new()
        } else {
            self.take_app_id()
        };
        self.finish(app_id, None, None)
    }

    /// The application's id: its task's, the one set, or a new one.
    fn take_app_id(&mut self) -> String {
        match (&self.identity, self.app_id.take()) {
            (Some(task), _) => task.app_id().to_owned(),
            (None, Some(id)) => id,
            (None, None) => uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The application, from its id, the application it was forked from
    /// and the checkpoint loaded (`None`: a fresh start).
    fn finish(
        self,
        app_id: String,
        parent: Option<ParentPointer>,
        loaded: Option<Checkpoint>,
    ) -> Result<Application, BuildError> {
        let fresh_start = match &self.entrypoint {
            Some(name) => self
                .graph
                .index_of(name)
                .ok_or_else(|| BuildError::UnknownEntrypoint(name.clone()))?,
            None => self.graph.entrypoint_index(),
        };

        let (state, next_seq, last_seq, next_action, resumed) = match loaded {
            None => (self.state, 0, None, Some(fresh_start), None),
            Some(checkpoint) => {
                let next = self.position_after(&app_id, &checkpoint)?;
                let seq = checkpoint.sequence_id;
                // A failed or cancelled step runs again at its own sequence id.
                let next_seq = match checkpoint.status {
                    StepStatus::Completed => seq + 1,
                    _ => seq,
                };
                let state = checkpoint.state.clone();
                (state, next_seq, Some(seq), next, Some(Arc::new(checkpoint)))
            }
        };

        let info = match self.identity {
            // The identity is the task's, built when asked for.
            Some(task) if parent.is_none() => Identity::Task(task),
            // A fork's identity points at its parent: built now.
            Some(task) => Identity::Built(Arc::new(AppInfo {
                parent,
                ..AppInfo::clone(task.info())
            })),
            None => Identity::Built(Arc::new(AppInfo {
                app_id,
                partition_key: self.partition_key,
                parent,
                spawning_parent: self.spawning_parent,
                task_path: self.task_path,
                run_id: self.run_id,
                task_index: self.task_index,
            })),
        };
        call_hooks(&self.hooks, HookMethod::OnCreate, |hook| {
            hook.on_create(info.info(), &state)
        })
        .map_err(BuildError::Hook)?;
        Ok(Application {
            graph: self.graph,
            info,
            state,
            next_seq,
            last_seq,
            next_action,
            hooks: hook_list(self.hooks),
            persister: self.persister,
            sink: self.sink,
            shared: Arc::new(StepShared::new(self.extensions)),
            resumed,
        })
    }

    /// Where a loaded checkpoint continues: the next action after a completed
    /// step, the same action after a failed one.
    fn position_after(
        &self,
        app_id: &str,
        checkpoint: &Checkpoint,
    ) -> Result<Option<usize>, BuildError> {
        let index = self.graph.index_of(&checkpoint.action).ok_or_else(|| {
            BuildError::UnknownCheckpointAction {
                app_id: checkpoint.app_id.clone(),
                action: checkpoint.action.clone(),
            }
        })?;
        match checkpoint.status {
            StepStatus::Failed | StepStatus::Cancelled => Ok(Some(index)),
            _ => self
                .graph
                .next(index, &checkpoint.state)
                .map_err(|source| BuildError::Resume {
                    app_id: app_id.to_owned(),
                    source,
                }),
        }
    }
}

/// The hooks as the application keeps them. Most applications have none:
/// they all share one empty list instead of allocating their own.
fn hook_list(hooks: Vec<Arc<dyn Hook>>) -> HookList {
    static EMPTY: std::sync::OnceLock<HookList> = std::sync::OnceLock::new();
    if hooks.is_empty() {
        Arc::clone(EMPTY.get_or_init(|| Arc::from(Vec::new())))
    } else {
        hooks.into()
    }
}
