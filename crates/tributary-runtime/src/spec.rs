//! A task: what a run runs.

use std::fmt;
use std::sync::Arc;

use tributary_core::{Action, Graph, Inputs, RunOptions, State};

/// The options of a task that sets none, shared by every such task.
fn no_options() -> Arc<RunOptions> {
    static NONE: std::sync::LazyLock<Arc<RunOptions>> =
        std::sync::LazyLock::new(|| Arc::new(RunOptions::new()));
    Arc::clone(&NONE)
}

/// One task: a subgraph application to run, from an entrypoint to a halt
/// point, on a state, with inputs, under a key unique within its run.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::{action, State};
/// use tributary_runtime::TaskSpec;
///
/// let double = action("double").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
///     let n: i64 = s.get_as("n")?;
///     Ok((json!({ "n": n * 2 }), s.set("n", n * 2)))
/// });
/// let spec = TaskSpec::action("task-1", double).state(State::new().set("n", 21));
/// assert_eq!(spec.key(), "task-1");
/// ```
#[derive(Clone)]
#[must_use]
pub struct TaskSpec {
    pub(crate) key: Arc<str>,
    pub(crate) graph: Graph,
    pub(crate) entrypoint: Option<Box<str>>,
    /// Shared: most tasks of a run have the same (often empty) options,
    /// and a task's actor keeps them for as long as it runs.
    pub(crate) halt: Arc<RunOptions>,
    pub(crate) state: State,
    pub(crate) app_id: Option<Box<str>>,
    /// The graph's name, for a task run by a [`TaskExecutor`](crate::TaskExecutor).
    pub(crate) graph_name: Option<Arc<str>>,
}

impl fmt::Debug for TaskSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskSpec")
            .field("key", &self.key)
            .field("graph", &self.graph)
            .field("entrypoint", &self.entrypoint)
            .field("app_id", &self.app_id)
            .field("graph_name", &self.graph_name)
            .finish_non_exhaustive()
    }
}

impl TaskSpec {
    /// A task that runs `graph` from its entrypoint until the graph ends.
    pub fn new(key: impl Into<String>, graph: Graph) -> Self {
        TaskSpec {
            key: Arc::from(key.into()),
            graph,
            entrypoint: None,
            halt: no_options(),
            state: State::new(),
            app_id: None,
            graph_name: None,
        }
    }

    /// A task that runs the graph registered under `graph` wherever the
    /// run's [`TaskExecutor`](crate::TaskExecutor) sends it (the cluster
    /// executor: on a worker that registered a graph of that name). The
    /// task carries only data. On a run without an executor it fails with
    /// a [`TaskErrorKind::UnknownGraph`](crate::TaskErrorKind::UnknownGraph) error.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_core::State;
    /// use tributary_runtime::TaskSpec;
    ///
    /// let spec = TaskSpec::named("doc-7", "summarise").state(State::new().set("doc", 7));
    /// assert_eq!(spec.graph_name(), Some("summarise"));
    /// ```
    pub fn named(key: impl Into<String>, graph: impl Into<String>) -> Self {
        let graph: Arc<str> = Arc::from(graph.into());
        let name = Arc::clone(&graph);
        // Never stepped when the run has an executor; without one the actor
        // refuses the task before it builds anything.
        let placeholder = Graph::single(tributary_core::action(graph.to_string()).run(
            move |_: State, _, _| {
                let name = Arc::clone(&name);
                async move { Err(format!("graph `{name}` runs only on a task executor").into()) }
            },
        ));
        let mut spec = TaskSpec::new(key, placeholder);
        spec.graph_name = Some(graph);
        spec
    }

    /// The graph's name, for a task made with [`named`](Self::named).
    pub fn graph_name(&self) -> Option<&str> {
        self.graph_name.as_deref()
    }

    /// The task's halting options and inputs.
    pub fn run_options(&self) -> &RunOptions {
        &self.halt
    }

    /// The task's initial state.
    pub fn initial_state(&self) -> &State {
        &self.state
    }

    /// The action the task starts at, when not its graph's entrypoint.
    pub fn get_entrypoint(&self) -> Option<&str> {
        self.entrypoint.as_deref()
    }

    /// A task of a single action. (To run one action in many tasks, build
    /// its graph once with [`Graph::single`] and use [`TaskSpec::new`].)
    pub fn action(key: impl Into<String>, action: impl Action) -> Self {
        Self::new(key, Graph::single(action))
    }

    /// The task's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The task's graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The initial state.
    pub fn state(mut self, state: State) -> Self {
        self.state = state;
        self
    }

    /// Start at `action` instead of the graph's entrypoint.
    pub fn entrypoint(mut self, action: impl Into<String>) -> Self {
        self.entrypoint = Some(action.into().into_boxed_str());
        self
    }

    /// End the task after any of `actions` (its `Final` item carries that
    /// action's result).
    pub fn halt_after<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let halt = Arc::make_mut(&mut self.halt);
        *halt = std::mem::take(halt).halt_after(actions);
        self
    }

    /// End the task before any of `actions`.
    pub fn halt_before<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        let halt = Arc::make_mut(&mut self.halt);
        *halt = std::mem::take(halt).halt_before(actions);
        self
    }

    /// Inputs for every step of the task.
    pub fn inputs(mut self, inputs: Inputs) -> Self {
        if inputs.is_empty() && self.halt.get_inputs().is_empty() {
            // Nothing changes: the options stay shared (a parallel action
            // gives every child its inputs, most often none).
            return self;
        }
        let halt = Arc::make_mut(&mut self.halt);
        *halt = std::mem::take(halt).inputs(inputs);
        self
    }

    /// Use this app id (otherwise the runtime derives one from the run's
    /// [`run_id`](crate::RunConfig::run_id) and the key, stable across
    /// processes; without a run id, unique to the process).
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into().into_boxed_str());
        self
    }

    /// The app id, if one was set.
    pub fn get_app_id(&self) -> Option<&str> {
        self.app_id.as_deref()
    }
}
