//! Parallel actions: an action of a graph that runs many subgraph
//! applications on the runtime and reduces their final states into its own.
//!
//! Four ways to say what runs:
//! - [`ParallelAction::map_states`]: one subgraph, many states;
//! - [`ParallelAction::map_actions`]: many subgraphs, one state;
//! - [`ParallelAction::map_actions_and_states`]: every subgraph on every
//!   state, action-major (all states of subgraph 0, then of subgraph 1, ...);
//! - [`ParallelAction::tasks`] / [`ParallelAction::task_stream`]: you yield
//!   [`TaskSpec`]s, from an iterator or an async stream.
//!
//! The reducer receives the children's outcomes **in task order**, whatever
//! order they completed in (and an empty list for zero tasks); or, for runs
//! too large to buffer, [`ParallelBuilder::fold`] folds each outcome into the
//! state as it completes. Children get stable app ids
//! ([`child_app_id`](crate::child_app_id)), a spawning-parent pointer, and
//! the parent's persister, hooks and partition key (override any of them in
//! the [`RunConfig`]). They run on the parent's runtime and budget; while the
//! parent waits for them it gives its own slot back, so nesting to any depth
//! never deadlocks. Every child item reaches the consumer of the parent's
//! run live, as an ordinary [`StreamItem`](crate::StreamItem) whose `path`
//! says where it comes from (filtered by the parent run's
//! `intermediate_stream_outputs` and `intermediate_nodes` switches), unless
//! [`ParallelBuilder::forward_items`] turns that off. (A parallel action run
//! by an [`Application`](tributary_core::Application) outside any runtime
//! has no stream of items: it emits each child item as its JSON through
//! `ctx.emit`.)
//!
//! # Examples
//!
//! ```
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use tributary_core::{action, Application, Graph, RunOptions, State};
//! use tributary_runtime::{ParallelAction, Subgraph};
//!
//! let square = Subgraph::action(action("square").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
//!     let n: i64 = s.get_as("n")?;
//!     Ok((json!({}), s.set("n", n * n)))
//! }));
//! let map = ParallelAction::map_states("squares", square, |s: &State, _| {
//!     let ns: Vec<i64> = s.get_as("ns")?;
//!     Ok(ns.into_iter().map(|n| State::new().set("n", n)))
//! })
//! .reads(["ns"])
//! .writes(["squares"])
//! .reduce(|s, outcomes| {
//!     let squares: Vec<_> = outcomes.iter().map(|o| o.state().unwrap().get("n").cloned()).collect();
//!     Ok(s.set("squares", json!(squares)))
//! })
//! .build();
//!
//! let mut app = Application::builder(Graph::single(map))
//!     .state(State::new().set("ns", json!([3, 1, 2])))
//!     .build()
//!     .await?;
//! let out = app.run(RunOptions::new()).await?;
//! assert_eq!(out.state.get("squares"), Some(&json!([9, 1, 4])));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use futures_core::Stream;
use serde_json::json;
use tributary_core::{
    Action, ActionContext, ActionResult, BoxError, Graph, InputSpec, Inputs, ParentPointer, State,
};

use crate::config::RunConfig;
use crate::ids::ChildIds;
use crate::outcome::TaskOutcome;
use crate::path::TaskPath;
use crate::remote::{NestedRun, Nesting};
use crate::runtime::Runtime;
use crate::scope::TaskRuntime;
use crate::source::TaskSource;
use crate::spec::TaskSpec;

/// A subgraph a parallel action runs: a graph, where to enter it and where
/// to halt.
#[derive(Clone)]
#[must_use]
pub struct Subgraph {
    /// Every task of the subgraph is this one with its own key, state and
    /// inputs.
    template: TaskSpec,
}

impl fmt::Debug for Subgraph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subgraph")
            .field("graph", &self.template.graph)
            .field("entrypoint", &self.template.entrypoint)
            .finish_non_exhaustive()
    }
}

impl Subgraph {
    /// Run `graph` from its entrypoint until it ends.
    pub fn new(graph: Graph) -> Self {
        Subgraph {
            template: TaskSpec::new("", graph),
        }
    }

    /// Run the graph registered under `graph` wherever the run's task
    /// executor sends it (see [`TaskSpec::named`]): on a cluster, the
    /// children go to the fleet's workers like the run's own tasks, and
    /// the parent waits for them without holding a worker's slot. On a run
    /// without an executor each child fails with an
    /// [`UnknownGraph`](crate::TaskErrorKind::UnknownGraph) error.
    pub fn named(graph: impl Into<String>) -> Self {
        Subgraph {
            template: TaskSpec::named("", graph),
        }
    }

    /// Run one action (its graph is built once, here).
    pub fn action(action: impl Action) -> Self {
        Self::new(Graph::single(action))
    }

    /// Enter at `action`.
    pub fn entrypoint(mut self, action: impl Into<String>) -> Self {
        self.template = self.template.entrypoint(action);
        self
    }

    /// Halt after any of `actions`.
    pub fn halt_after<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.template = self.template.halt_after(actions);
        self
    }

    /// Halt before any of `actions`.
    pub fn halt_before<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.template = self.template.halt_before(actions);
        self
    }

    /// The task that runs this subgraph on `state`.
    pub fn task(&self, key: impl Into<String>, state: State, inputs: Inputs) -> TaskSpec {
        TaskSpec {
            key: Arc::from(key.into()),
            state,
            ..self.template.clone()
        }
        .inputs(inputs)
    }
}

type TasksFn = Arc<dyn Fn(&State, &Inputs) -> Result<TaskSource, BoxError> + Send + Sync>;
type ReduceFn = Arc<dyn Fn(State, Vec<TaskOutcome>) -> Result<State, BoxError> + Send + Sync>;
type FoldFn = Arc<dyn Fn(State, TaskOutcome) -> Result<State, BoxError> + Send + Sync>;

#[derive(Clone)]
enum Reducer {
    All(ReduceFn),
    Fold(FoldFn),
}

/// An action that runs subgraph applications in parallel. Built by
/// [`ParallelBuilder::build`]; see [`ParallelAction::map_states`] and its
/// siblings for the ways to say what runs.
#[derive(Clone)]
pub struct ParallelAction {
    name: String,
    reads: Vec<String>,
    writes: Vec<String>,
    inputs: Vec<InputSpec>,
    tasks: TasksFn,
    reducer: Reducer,
    config: RunConfig,
    forward: bool,
    cascade: bool,
}

impl fmt::Debug for ParallelAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ParallelAction")
            .field("name", &self.name)
            .field("reads", &self.reads)
            .field("writes", &self.writes)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// Builds a [`ParallelAction`].
#[must_use = "a parallel builder does nothing until `build` is called"]
pub struct ParallelBuilder {
    action: ParallelAction,
}

impl fmt::Debug for ParallelBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.action.fmt(f)
    }
}

impl ParallelAction {
    fn builder(name: impl Into<String>, tasks: TasksFn) -> ParallelBuilder {
        ParallelBuilder {
            action: ParallelAction {
                name: name.into(),
                reads: Vec::new(),
                writes: Vec::new(),
                inputs: Vec::new(),
                tasks,
                reducer: Reducer::All(Arc::new(|state, _| Ok(state))),
                config: RunConfig::new(),
                forward: true,
                cascade: true,
            },
        }
    }

    /// One subgraph over many states: task `j` runs `subgraph` on the `j`-th
    /// state `states` yields (task key `"{j}"`).
    pub fn map_states<F, I>(
        name: impl Into<String>,
        subgraph: Subgraph,
        states: F,
    ) -> ParallelBuilder
    where
        F: Fn(&State, &Inputs) -> Result<I, BoxError> + Send + Sync + 'static,
        I: IntoIterator<Item = State>,
        I::IntoIter: Send + 'static,
    {
        Self::builder(
            name,
            Arc::new(move |state, inputs| {
                let subgraph = subgraph.clone();
                let inputs = inputs.clone();
                let tasks = states(state, &inputs)?
                    .into_iter()
                    .enumerate()
                    .map(move |(j, s)| subgraph.task(j.to_string(), s, inputs.clone()));
                Ok(TaskSource::iter(tasks))
            }),
        )
    }

    /// Many subgraphs over one state: task `i` runs the `i`-th subgraph on
    /// the state `state` returns (task key `"{i}"`).
    pub fn map_actions<F>(
        name: impl Into<String>,
        subgraphs: Vec<Subgraph>,
        state: F,
    ) -> ParallelBuilder
    where
        F: Fn(&State, &Inputs) -> Result<State, BoxError> + Send + Sync + 'static,
    {
        let subgraphs = Arc::new(subgraphs);
        Self::builder(
            name,
            Arc::new(move |parent, inputs| {
                let child = state(parent, inputs)?;
                let subgraphs = Arc::clone(&subgraphs);
                let inputs = inputs.clone();
                let tasks = (0..subgraphs.len())
                    .map(move |i| subgraphs[i].task(i.to_string(), child.clone(), inputs.clone()));
                Ok(TaskSource::iter(tasks))
            }),
        )
    }

    /// Every subgraph on every state, action-major: all states through
    /// subgraph 0, then all through subgraph 1, ... (task key `"{i}-{j}"`).
    /// The states are taken once and shared by every subgraph.
    pub fn map_actions_and_states<F, I>(
        name: impl Into<String>,
        subgraphs: Vec<Subgraph>,
        states: F,
    ) -> ParallelBuilder
    where
        F: Fn(&State, &Inputs) -> Result<I, BoxError> + Send + Sync + 'static,
        I: IntoIterator<Item = State>,
    {
        let subgraphs = Arc::new(subgraphs);
        Self::builder(
            name,
            Arc::new(move |parent, inputs| {
                let states: Arc<Vec<State>> =
                    Arc::new(states(parent, inputs)?.into_iter().collect());
                let subgraphs = Arc::clone(&subgraphs);
                let inputs = inputs.clone();
                let n = states.len();
                let tasks = (0..subgraphs.len() * n).map(move |k| {
                    let (i, j) = (k / n, k % n);
                    subgraphs[i].task(format!("{i}-{j}"), states[j].clone(), inputs.clone())
                });
                Ok(TaskSource::iter(tasks))
            }),
        )
    }

    /// Tasks you build, from a synchronous iterator (pulled lazily).
    pub fn tasks<F, I>(name: impl Into<String>, tasks: F) -> ParallelBuilder
    where
        F: Fn(&State, &Inputs) -> Result<I, BoxError> + Send + Sync + 'static,
        I: IntoIterator<Item = TaskSpec>,
        I::IntoIter: Send + 'static,
    {
        Self::builder(
            name,
            Arc::new(move |s, i| Ok(TaskSource::iter(tasks(s, i)?))),
        )
    }

    /// Tasks you build, from an async stream.
    pub fn task_stream<F, S>(name: impl Into<String>, tasks: F) -> ParallelBuilder
    where
        F: Fn(&State, &Inputs) -> Result<S, BoxError> + Send + Sync + 'static,
        S: Stream<Item = TaskSpec> + Send + 'static,
    {
        Self::builder(
            name,
            Arc::new(move |s, i| Ok(TaskSource::stream(tasks(s, i)?))),
        )
    }
}

impl ParallelBuilder {
    /// Declare state keys the action (its task builder) reads.
    pub fn reads<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.action.reads.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Declare state keys the reducer writes.
    pub fn writes<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.action.writes.extend(keys.into_iter().map(Into::into));
        self
    }

    /// Declare inputs; they are passed on to every child.
    pub fn inputs<I, K>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.action
            .inputs
            .extend(names.into_iter().map(|n| InputSpec {
                name: n.into(),
                required: true,
            }));
        self
    }

    /// Reduce the children's outcomes, in task order, into the parent's
    /// state.
    pub fn reduce<F>(mut self, reduce: F) -> Self
    where
        F: Fn(State, Vec<TaskOutcome>) -> Result<State, BoxError> + Send + Sync + 'static,
    {
        self.action.reducer = Reducer::All(Arc::new(reduce));
        self
    }

    /// Fold each child's outcome into the parent's state as it completes
    /// (completion order), buffering nothing.
    pub fn fold<F>(mut self, fold: F) -> Self
    where
        F: Fn(State, TaskOutcome) -> Result<State, BoxError> + Send + Sync + 'static,
    {
        self.action.reducer = Reducer::Fold(Arc::new(fold));
        self
    }

    /// The children's run settings (merge mode, policies, limits, retries,
    /// persister and hooks overrides).
    pub fn config(mut self, config: RunConfig) -> Self {
        // Extensions given with `extension` before stay.
        let given = std::mem::take(&mut self.action.config.extensions);
        self.action.config = config;
        let mut extensions = given;
        extensions.merge(&self.action.config.extensions);
        self.action.config.extensions = extensions;
        self
    }

    /// Give every child's actions `value` (see
    /// [`RunConfig::extension`](crate::RunConfig::extension)); it overrides
    /// a value of the same type the parent's task has.
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.action.config = self.action.config.extension(value);
        self
    }

    /// Whether children's items are forwarded live through the parent's
    /// `ctx.emit` (on by default).
    pub fn forward_items(mut self, on: bool) -> Self {
        self.action.forward = on;
        self
    }

    /// Whether children inherit the parent's persister and hooks when the
    /// config sets none (on by default).
    pub fn cascade(mut self, on: bool) -> Self {
        self.action.cascade = on;
        self
    }

    /// The action.
    pub fn build(self) -> ParallelAction {
        self.action
    }
}

#[async_trait]
impl Action for ParallelAction {
    fn name(&self) -> &str {
        &self.name
    }

    fn reads(&self) -> &[String] {
        &self.reads
    }

    fn writes(&self) -> &[String] {
        &self.writes
    }

    fn inputs(&self) -> &[InputSpec] {
        &self.inputs
    }

    async fn run(&self, state: State, inputs: Inputs, ctx: ActionContext) -> ActionResult {
        let source = (self.tasks)(&state, &inputs)?;
        let ids = ChildIds::new(ctx.app_id(), ctx.sequence_id(), &self.name);
        let source = source.map(move |spec| match spec.app_id {
            Some(_) => spec,
            None => {
                let id = ids.id(&spec.key);
                spec.app_id(id)
            }
        });

        let mut config = self.config.clone().spawning_parent(ParentPointer {
            app_id: ctx.app_id().to_owned(),
            sequence_id: ctx.sequence_id(),
            action: Some(self.name.clone()),
            partition_key: ctx.partition_key().map(str::to_owned),
        });
        if config.partition_key.is_none() {
            config.partition_key = ctx.partition_key().map(str::to_owned);
        }
        if self.cascade {
            if config.persister.is_none() {
                config.persister = ctx.persister().cloned();
            }
            if config.hooks.is_empty() {
                config.hooks = ctx.hooks().to_vec();
            }
            let mut extensions = ctx.extensions().clone();
            extensions.merge(&config.extensions);
            config.extensions = extensions;
        }

        let task = ctx.extensions().get::<TaskRuntime>().cloned();
        if config.executor.is_none() {
            if let Some(Nesting(nested)) = ctx.extensions().get::<Nesting>() {
                config.executor = Some(
                    nested.executor(NestedRun {
                        run_id: task.as_ref().map_or_else(
                            || Arc::from(ctx.app_id()),
                            |t| Arc::clone(&t.lane.run.shared.run_id),
                        ),
                        parent_path: task
                            .as_ref()
                            .map_or_else(TaskPath::root, |t| t.path().clone()),
                        parent_app_id: Arc::from(ctx.app_id()),
                        sequence_id: ctx.sequence_id(),
                        action: self.name.clone(),
                    }),
                );
            }
        }
        let executor = config.executor.clone();
        let (_handle, mut stream) = match &task {
            Some(t) => t.runtime().run_nested(source, config, t),
            None => Runtime::shared().run(source, config),
        };
        // While the children run, this task's slot goes back to the budget.
        if let Some(t) = &task {
            t.lane.slot.release_budget();
        }
        // And any slot held outside the runtime (a cluster worker's).
        if let Some(e) = &executor {
            e.parent_waits();
        }
        let result = async {
            let mut outcomes = Vec::new();
            let mut state = state;
            let mut counts = [0u64; 3];
            while let Some(item) = stream.next().await {
                let outcome = if stream.is_own(&item) {
                    TaskOutcome::from_item(&item)
                } else {
                    None
                };
                if self.forward {
                    match &task {
                        Some(t) => {
                            if t.lane.forward(item).await.is_err() {
                                return Err(tributary_core::EmitError {
                                    action: self.name.clone(),
                                }
                                .into());
                            }
                        }
                        None => ctx.emit(serde_json::to_value(&item)?).await?,
                    }
                }
                if let Some(outcome) = outcome {
                    counts[match outcome.status {
                        crate::outcome::TaskStatus::Completed { .. } => 0,
                        crate::outcome::TaskStatus::Failed { .. } => 1,
                        _ => 2,
                    }] += 1;
                    match &self.reducer {
                        Reducer::All(_) => outcomes.push(outcome),
                        Reducer::Fold(fold) => state = fold(state, outcome)?,
                    }
                }
            }
            stream.summary()?;
            if let Reducer::All(reduce) = &self.reducer {
                outcomes.sort_by_key(|o| o.index);
                state = reduce(state, outcomes)?;
            }
            let [completed, failed, cancelled] = counts;
            let result = json!({
                "tasks": completed + failed + cancelled,
                "completed": completed,
                "failed": failed,
                "cancelled": cancelled,
            });
            Ok::<_, BoxError>((result, state))
        }
        .await;
        if let Some(e) = &executor {
            e.parent_resumes().await;
        }
        if let Some(t) = &task {
            t.lane.slot.reacquire_budget().await;
        }
        result
    }
}
