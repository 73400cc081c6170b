//! A processor that runs a tributary subgraph application per input, on a
//! shared [`Runtime`]: a pipeline stage can be an agent.

use std::fmt;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::Value;
use tributary_core::State;
use tributary_runtime::{
    CancelReason, ItemKind, RunConfig, Runtime, TaskError, TaskErrorKind, TaskSpec,
};

use crate::item::{BoxError, Input, Item, NodeContext};
use crate::processor::Processor;

/// Why a subgraph run gave no result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SubgraphError {
    /// The subgraph's task failed.
    #[error("node {node}: subgraph task {task} failed: {error}")]
    Failed {
        /// The pipeline node.
        node: String,
        /// The task's key.
        task: String,
        /// Why, as the runtime reported it.
        error: TaskError,
    },
    /// The subgraph's task was cancelled.
    #[error("node {node}: subgraph task {task} was cancelled")]
    Cancelled {
        /// The pipeline node.
        node: String,
        /// The task's key.
        task: String,
        /// Why, as the runtime reported it.
        reason: Option<CancelReason>,
    },
    /// The run ended without a terminal item for the task.
    #[error("node {node}: subgraph task {task} ended without a result")]
    NoResult {
        /// The pipeline node.
        node: String,
        /// The task's key.
        task: String,
    },
}

type ToTask<T> = dyn Fn(Input<T>, &NodeContext) -> Result<TaskSpec, BoxError> + Send + Sync;
type FromFinal<T> = dyn Fn(Option<Value>, State) -> Result<Vec<T>, BoxError> + Send + Sync;

/// A processor that runs one subgraph application per input; see
/// [`subgraph`].
pub struct SubgraphProcessor<T> {
    runtime: Runtime,
    config: RunConfig,
    to_task: Arc<ToTask<T>>,
    from_final: Arc<FromFinal<T>>,
}

impl<T> fmt::Debug for SubgraphProcessor<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SubgraphProcessor")
            .field("runtime", &self.runtime)
            .finish_non_exhaustive()
    }
}

/// A processor that turns each input into a [`TaskSpec`] (`to_task`), runs
/// it as a subgraph application on `runtime` — the same runtime, and so the
/// same concurrency budget, as the rest of the program — and turns the
/// halt action's result and the final state into outputs (`from_final`).
///
/// The node's [`concurrency`](crate::Node::concurrency) is how many
/// subgraphs run at once. A failed or cancelled subgraph is the input's
/// error ([`SubgraphError`]), handled by the node's error policy. Cancelling
/// the pipeline cancels the subgraphs in flight.
///
/// # Examples
///
/// ```
/// use serde_json::{json, Value};
/// use tributary_core::{action, Graph, State};
/// use tributary_pipeline::{iter_source, subgraph, Input, Node, Pipeline};
/// use tributary_runtime::{Runtime, TaskSpec};
///
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let shout = Graph::single(action("shout").reads(["text"]).writes(["text"]).run(
///     |s: State, _, _| async move {
///         let text = s.get_as::<String>("text")?.to_uppercase();
///         Ok((json!({ "text": text }), s.set("text", text)))
///     },
/// ));
/// let stage = subgraph(
///     Runtime::shared(),
///     move |input: Input<Value>, ctx| {
///         let text = input.into_single().unwrap_or_default();
///         Ok(TaskSpec::new(format!("chunk-{}", ctx.seq()), shout.clone())
///             .state(State::new().set("text", text)))
///     },
///     |result, _state| Ok(result.into_iter().collect()),
/// );
/// let summary = Pipeline::builder()
///     .source("chunks", iter_source(vec![json!("a"), json!("b")]))
///     .node("agent", Node::processor(stage).concurrency(2))
///     .edge("chunks", "agent")
///     .build()?
///     .run()
///     .await?;
/// assert_eq!(summary.node("agent").unwrap().items_out, 2);
/// # Ok(()) }
/// ```
pub fn subgraph<T, F, G>(runtime: Runtime, to_task: F, from_final: G) -> SubgraphProcessor<T>
where
    T: Item,
    F: Fn(Input<T>, &NodeContext) -> Result<TaskSpec, BoxError> + Send + Sync + 'static,
    G: Fn(Option<Value>, State) -> Result<Vec<T>, BoxError> + Send + Sync + 'static,
{
    SubgraphProcessor {
        runtime,
        config: RunConfig::new()
            .intermediate_stream_outputs(false)
            .intermediate_nodes(false),
        to_task: Arc::new(to_task),
        from_final: Arc::new(from_final),
    }
}

impl<T> SubgraphProcessor<T> {
    /// The configuration of each subgraph's run (default: intermediate
    /// tokens and node results off, as only the final result is used).
    pub fn config(mut self, config: RunConfig) -> Self {
        self.config = config;
        self
    }
}

impl<T: Item> Processor<T> for SubgraphProcessor<T> {
    type Outputs = Vec<T>;
    type Future = BoxFuture<'static, Result<Vec<T>, BoxError>>;

    fn process(&self, input: Input<T>, ctx: NodeContext) -> Self::Future {
        let spec = match (self.to_task)(input, &ctx) {
            Ok(spec) => spec,
            Err(e) => return futures_util::future::ready(Err(e)).boxed(),
        };
        let task = spec.key().to_owned();
        let node = ctx.node().to_owned();
        // Dropping the stream (on cancel) cancels the subgraph's run.
        let (_handle, mut stream) = self.runtime.run(vec![spec], self.config.clone());
        let from_final = Arc::clone(&self.from_final);
        async move {
            while let Some(item) = stream.next().await {
                match item.kind {
                    ItemKind::Final => {
                        return from_final(item.result, item.state_update.unwrap_or_default());
                    }
                    ItemKind::Failed => {
                        let error = item.error.unwrap_or_else(|| {
                            TaskError::new(TaskErrorKind::ActionFailed, "no error reported", None)
                        });
                        return Err(SubgraphError::Failed { node, task, error }.into());
                    }
                    ItemKind::Cancelled => {
                        let reason = item.cancel_reason();
                        return Err(SubgraphError::Cancelled { node, task, reason }.into());
                    }
                    _ => {}
                }
            }
            Err(SubgraphError::NoResult { node, task }.into())
        }
        .boxed()
    }
}
