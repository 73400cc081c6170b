//! Durable calls on the fleet: workers serve registered
//! [`Functions`](tributary_durable::Functions) ([`Graphs::functions`]), and
//! [`ClusterInvoke`] runs a `ctx.call` as a one-step task on one of them.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tributary_core::{BoxError, Graph, State, action};
use tributary_durable::{Functions, Invoke, Terminal};
use tributary_runtime::{ItemKind, RunConfig, TaskErrorKind, TaskSpec};

use crate::caller::ClusterRuntime;
use crate::error::ClusterError;
use crate::registry::Graphs;

/// The graph name under which a worker serves its functions (reserved).
pub const FUNCTIONS_GRAPH: &str = "tributary.functions";

/// The action of [`FUNCTIONS_GRAPH`]; its name shows in task errors.
const CALL_ACTION: &str = "call";

/// What a call's task ends with (its `outcome` state key). Outputs and
/// terminal answers are final (and checkpointed: a call with the same key
/// gets the same answer); a function's ordinary error fails the task, so
/// that a retry runs it again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Outcome {
    Output(Value),
    UnknownFunction,
    Refused(String),
}

/// A remote call that did not return an output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The worker that took the call serves no function of this name
    /// (terminal: a retry would get the same answer).
    #[error("no function is registered as {function} on the worker that took the call")]
    UnknownFunction {
        /// The function called.
        function: String,
    },
    /// No worker serves functions at all: every worker that saw the call
    /// refused its graph (terminal).
    #[error("no worker serves functions (call of {function}): {message}")]
    NotServed {
        /// The function called.
        function: String,
        /// The executor's account.
        message: String,
    },
    /// The function refused the call terminally: its input does not fit,
    /// or it returned a [`Terminal`] error.
    #[error("{message}")]
    Refused {
        /// The function called.
        function: String,
        /// Its error's message.
        message: String,
    },
    /// The function returned an error (retried by the step's policy).
    #[error("{message}")]
    Failed {
        /// The function called.
        function: String,
        /// Its error's message.
        message: String,
    },
    /// The call's task was lost: the broker failed, it was dead-lettered,
    /// cancelled, or it panicked (retried by the step's policy).
    #[error("call of {function} was lost: {message}")]
    Lost {
        /// The function called.
        function: String,
        /// What happened.
        message: String,
    },
}

impl CallError {
    /// Whether retrying the call cannot help.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            CallError::UnknownFunction { .. }
                | CallError::NotServed { .. }
                | CallError::Refused { .. }
        )
    }

    /// As a step error: [`Terminal`] when [`is_terminal`](Self::is_terminal).
    fn into_box(self) -> BoxError {
        if self.is_terminal() {
            Terminal::new(self).into()
        } else {
            self.into()
        }
    }
}

impl Graphs {
    /// Serve `functions` on the workers that run these graphs, under the
    /// reserved graph name [`FUNCTIONS_GRAPH`]: a [`ClusterInvoke`] caller
    /// runs its calls there.
    ///
    /// # Examples
    ///
    /// See [`ClusterInvoke`].
    ///
    /// # Errors
    ///
    /// [`ClusterError::DuplicateGraph`] when functions are served already.
    pub fn functions(self, functions: Functions) -> Result<Self, ClusterError> {
        self.register(FUNCTIONS_GRAPH, functions_graph(functions))
    }
}

/// One step: run the named function on the input, keep the outcome.
fn functions_graph(functions: Functions) -> Graph {
    Graph::single(
        action(CALL_ACTION)
            .reads(["function", "input"])
            .writes(["outcome"])
            .run(move |s: State, _, _| {
                let functions = functions.clone();
                async move {
                    let function: String = s.get_as("function")?;
                    let input = s.get("input").cloned().unwrap_or(Value::Null);
                    let outcome = if functions.contains(&function) {
                        match functions.invoke(&function, input).await {
                            Ok(output) => Outcome::Output(output),
                            Err(e) if Terminal::is_terminal(&e) => Outcome::Refused(e.to_string()),
                            Err(e) => return Err(e),
                        }
                    } else {
                        Outcome::UnknownFunction
                    };
                    let outcome = serde_json::to_value(outcome)?;
                    Ok((json!({ "outcome": outcome }), s.set("outcome", outcome)))
                }
            }),
    )
}

/// Runs durable calls on the cluster: each call is a one-step task of the
/// reserved graph [`FUNCTIONS_GRAPH`] on a worker that serves the function
/// ([`Graphs::functions`]), through a [`ClusterRuntime`]. Give it to a
/// workflow engine
/// ([`Workflows::set_functions`](tributary_durable::Workflows::set_functions)):
/// `ctx.call(name, input)` then runs on the fleet, journaled like any step.
///
/// A call from `ctx.call` runs under an app id derived from its step's
/// idempotency key (`call/<key>`). With a persister on the workers, a call
/// that finished is not run again: a retry of the step, or a resumed
/// workflow whose step had not been journaled yet (its caller crashed while
/// the call ran), gets the checkpointed answer. A worker that crashes mid-call
/// hands it to another worker, which runs it again (at least once, as any
/// step).
///
/// Errors are [`CallError`]s: an unknown function, a refused input, or no
/// worker serving functions at all are [`Terminal`] (the step's policy does
/// not retry them); a function's own error comes back with its message and
/// is retried by the step's policy.
///
/// # Examples
///
/// ```
/// # #[tokio::main]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tributary_cluster::{ClusterInvoke, ClusterRuntime, Graphs, MemoryBroker, Worker};
/// use tributary_core::BoxError;
/// use tributary_durable::{DurableExt, Functions, MemoryJournal, WorkflowContext, Workflows};
///
/// // The worker serves the functions.
/// let functions = Functions::new();
/// functions.register("shout", |text: String| async move { Ok::<_, BoxError>(text.to_uppercase()) });
/// let broker = MemoryBroker::new();
/// let worker = Worker::builder(broker.clone(), Graphs::new().functions(functions)?).build()?;
/// let stop = tokio_util::sync::CancellationToken::new();
/// let fleet = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
///
/// // The workflow's calls go to the fleet.
/// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
/// workflows.set_functions(ClusterInvoke::new(ClusterRuntime::new(broker)));
/// workflows.register("greet", |ctx: WorkflowContext, name: String| async move {
///     let loud: String = ctx.call("shout", name).await?;
///     Ok::<_, BoxError>(format!("hello {loud}"))
/// });
/// let handle = workflows.start("greet", "g-1", "ada").await?;
/// assert_eq!(handle.result::<String>().await?, "hello ADA");
/// stop.cancel();
/// fleet.await??;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct ClusterInvoke {
    runtime: ClusterRuntime,
}

impl ClusterInvoke {
    /// Calls through `runtime` (its broker and options reach the workers).
    pub fn new(runtime: ClusterRuntime) -> Self {
        ClusterInvoke { runtime }
    }

    /// Run `function` on `input` on a worker, as a task of app id `app_id`
    /// (a persisted final of that app id is returned without running the
    /// function again).
    ///
    /// # Errors
    ///
    /// See [`CallError`].
    ///
    /// # Cancel safety
    ///
    /// Dropping the future cancels the call's task on the fleet (it may
    /// have run already).
    pub async fn call(
        &self,
        function: &str,
        input: Value,
        app_id: &str,
    ) -> Result<Value, CallError> {
        let state = State::new().set("function", function).set("input", input);
        let task = TaskSpec::named(CALL_ACTION, FUNCTIONS_GRAPH)
            .app_id(app_id)
            .state(state);
        let (_handle, mut stream) = self.runtime.run(vec![task], RunConfig::new());
        let lost = |message: String| CallError::Lost {
            function: function.to_owned(),
            message,
        };
        while let Some(item) = stream.next().await {
            match item.kind {
                ItemKind::Final => {
                    let outcome = item
                        .state_update
                        .as_ref()
                        .and_then(|s| s.get("outcome"))
                        .or_else(|| item.result.as_ref().and_then(|r| r.get("outcome")))
                        .cloned()
                        .ok_or_else(|| lost("the call's task ended without an outcome".into()))?;
                    let outcome: Outcome = serde_json::from_value(outcome)
                        .map_err(|e| lost(format!("the call's outcome is malformed: {e}")))?;
                    return match outcome {
                        Outcome::Output(v) => Ok(v),
                        Outcome::UnknownFunction => Err(CallError::UnknownFunction {
                            function: function.to_owned(),
                        }),
                        Outcome::Refused(message) => Err(CallError::Refused {
                            function: function.to_owned(),
                            message,
                        }),
                    };
                }
                ItemKind::Failed => {
                    let Some(error) = item.error else {
                        return Err(lost("the call's task failed".into()));
                    };
                    return Err(match error.kind {
                        TaskErrorKind::ActionFailed => CallError::Failed {
                            function: function.to_owned(),
                            message: own_message(&error.message),
                        },
                        TaskErrorKind::UnknownGraph => CallError::NotServed {
                            function: function.to_owned(),
                            message: error.message,
                        },
                        _ => lost(error.message),
                    });
                }
                ItemKind::Cancelled => return Err(lost("the call's task was cancelled".into())),
                _ => {}
            }
        }
        Err(lost(
            "the call's run ended without an end of its task".into(),
        ))
    }
}

/// The function's own message inside a failed step's message
/// (`step N failed: action `call` failed: <message>`).
fn own_message(message: &str) -> String {
    let marker = format!("action `{CALL_ACTION}` failed: ");
    message
        .split_once(&marker)
        .map_or(message, |(_, own)| own)
        .to_owned()
}

impl Invoke for ClusterInvoke {
    fn invoke(&self, function: &str, input: Value) -> BoxFuture<'static, Result<Value, BoxError>> {
        let key = format!("call/{}", uuid::Uuid::new_v4().simple());
        self.run(function, input, key)
    }

    fn invoke_keyed(
        &self,
        function: &str,
        input: Value,
        idempotency_key: &str,
    ) -> BoxFuture<'static, Result<Value, BoxError>> {
        self.run(function, input, format!("call/{idempotency_key}"))
    }
}

impl ClusterInvoke {
    fn run(
        &self,
        function: &str,
        input: Value,
        app_id: String,
    ) -> BoxFuture<'static, Result<Value, BoxError>> {
        let this = self.clone();
        let function = function.to_owned();
        async move {
            this.call(&function, input, &app_id)
                .await
                .map_err(CallError::into_box)
        }
        .boxed()
    }
}
