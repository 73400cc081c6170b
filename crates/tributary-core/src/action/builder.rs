use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{Action, ActionContext, ActionResult, InputSpec, Inputs};
use crate::state::State;

/// Start building an action named `name` from a closure.
///
/// See the [`action` module](mod@crate::action) for an example.
pub fn action(name: impl Into<String>) -> ActionBuilder {
    ActionBuilder {
        name: name.into(),
        reads: Vec::new(),
        writes: Vec::new(),
        inputs: Vec::new(),
    }
}

/// Builds a closure action: declare reads, writes and inputs, then give the
/// body with [`run`](Self::run) or [`run_blocking`](Self::run_blocking).
#[derive(Debug, Clone)]
#[must_use = "an action builder does nothing until `run` or `run_blocking` is called"]
pub struct ActionBuilder {
    name: String,
    reads: Vec<String>,
    writes: Vec<String>,
    inputs: Vec<InputSpec>,
}

fn strings<I, K>(keys: I) -> impl Iterator<Item = String>
where
    I: IntoIterator<Item = K>,
    K: Into<String>,
{
    keys.into_iter().map(Into::into)
}

impl ActionBuilder {
    /// Declare state keys the action reads.
    pub fn reads<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.reads.extend(strings(keys));
        self
    }

    /// Declare state keys the action writes.
    pub fn writes<I, K>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.writes.extend(strings(keys));
        self
    }

    /// Declare required inputs.
    pub fn inputs<I, K>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.inputs.extend(strings(names).map(|name| InputSpec {
            name,
            required: true,
        }));
        self
    }

    /// Declare optional inputs.
    pub fn optional_inputs<I, K>(mut self, names: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.inputs.extend(strings(names).map(|name| InputSpec {
            name,
            required: false,
        }));
        self
    }

    /// Finish with an async body.
    pub fn run<F, Fut>(self, f: F) -> FnAction
    where
        F: Fn(State, Inputs, ActionContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ActionResult> + Send + 'static,
    {
        FnAction {
            name: self.name,
            reads: self.reads,
            writes: self.writes,
            inputs: self.inputs,
            body: Arc::new(move |s, i, c| Box::pin(f(s, i, c))),
        }
    }

    /// Finish with a synchronous body that runs on the blocking thread pool,
    /// for blocking I/O or CPU-heavy work. It cannot stream.
    pub fn run_blocking<F>(self, f: F) -> FnAction
    where
        F: Fn(State, Inputs) -> ActionResult + Send + Sync + 'static,
    {
        let f = Arc::new(f);
        self.run(move |state, inputs, ctx| {
            let f = Arc::clone(&f);
            async move { ctx.spawn_blocking(move || f(state, inputs)).await? }
        })
    }
}

type Body =
    Arc<dyn Fn(State, Inputs, ActionContext) -> BoxFuture<'static, ActionResult> + Send + Sync>;

/// An action built from a closure by [`action`].
#[derive(Clone)]
pub struct FnAction {
    name: String,
    reads: Vec<String>,
    writes: Vec<String>,
    inputs: Vec<InputSpec>,
    body: Body,
}

impl fmt::Debug for FnAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnAction")
            .field("name", &self.name)
            .field("reads", &self.reads)
            .field("writes", &self.writes)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl FnAction {
    /// A copy of this action under another name (to use one body twice in a
    /// graph).
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
}

// Written out rather than through `#[async_trait]`: the body already
// returns a boxed future, and boxing it again costs an allocation per step.
impl Action for FnAction {
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

    fn run<'life0, 'async_trait>(
        &'life0 self,
        state: State,
        inputs: Inputs,
        ctx: ActionContext,
    ) -> BoxFuture<'async_trait, ActionResult>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        (self.body)(state, inputs, ctx)
    }
}
