//! [`Functions`]: named async functions that durable code calls as steps
//! ([`DurableExt::call`](crate::DurableExt::call)).
//!
//! A call names its function and passes a JSON input; the call and its
//! result are journaled like any step. [`Invoke`] is where a call goes:
//! [`Functions`] runs it in this process; `tributary_cluster::ClusterInvoke`
//! (feature `durable` of `tributary-cluster`) runs it on a worker of the
//! cluster that serves the same [`Functions`].

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::{Arc, PoisonError, RwLock};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tributary_core::BoxError;

use crate::error::Terminal;

type Function = Arc<dyn Fn(Value) -> BoxFuture<'static, Result<Value, BoxError>> + Send + Sync>;

/// Runs a named function on a JSON input: the seam between
/// [`DurableExt::call`](crate::DurableExt::call) and whatever runs the
/// function — [`Functions`] in this process, or
/// `tributary_cluster::ClusterInvoke` on a worker of a cluster.
pub trait Invoke: Send + Sync + 'static {
    /// Run `function` on `input`.
    ///
    /// # Errors
    ///
    /// The function's error; a [`Terminal`] error for a function that
    /// does not exist or an input that does not fit it.
    fn invoke(&self, function: &str, input: Value) -> BoxFuture<'static, Result<Value, BoxError>>;

    /// Run `function` on `input` as the call identified by
    /// `idempotency_key` (the calling step's key, the same on every replay
    /// and retry of the step; see
    /// [`StepAttempt::idempotency_key`](crate::StepAttempt::idempotency_key)).
    /// [`DurableExt::call`](crate::DurableExt::call) calls this. An invoker
    /// that keeps results (a remote executor with a persister) returns the
    /// kept result of a call with this key that already finished instead
    /// of running it again. The default runs [`invoke`](Self::invoke).
    ///
    /// # Errors
    ///
    /// As [`invoke`](Self::invoke).
    fn invoke_keyed(
        &self,
        function: &str,
        input: Value,
        idempotency_key: &str,
    ) -> BoxFuture<'static, Result<Value, BoxError>> {
        let _ = idempotency_key;
        self.invoke(function, input)
    }
}

/// Named async functions, run in this process. Clones share the registry.
///
/// Attach it to an application as an extension
/// (`.extension(functions.clone())`) or to a workflow engine
/// ([`Workflows::set_functions`](crate::Workflows::set_functions)); then
/// `ctx.call(name, input)` runs it as a journaled step.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use tributary_core::BoxError;
/// use tributary_durable::{DurableExt, Functions, MemoryJournal, WorkflowContext, Workflows};
///
/// let functions = Functions::new();
/// functions.register("shout", |text: String| async move { Ok::<_, BoxError>(text.to_uppercase()) });
/// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
/// workflows.set_functions(functions);
/// workflows.register("greet", |ctx: WorkflowContext, name: String| async move {
///     let loud: String = ctx.call("shout", name).await?;
///     Ok::<_, BoxError>(format!("hello {loud}"))
/// });
/// let handle = workflows.start("greet", "g-1", "ada").await?;
/// assert_eq!(handle.result::<String>().await?, "hello ADA");
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Functions {
    map: Arc<RwLock<HashMap<String, Function>>>,
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        f.debug_struct("Functions").field("names", &names).finish()
    }
}

impl Functions {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether a function is registered as `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(name)
    }

    /// Register `f` as `name` (replacing an earlier function of that name).
    pub fn register<I, O, F, Fut>(&self, name: impl Into<String>, f: F) -> &Self
    where
        I: DeserializeOwned + Send + 'static,
        O: Serialize + Send + 'static,
        F: Fn(I) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<O, BoxError>> + Send + 'static,
    {
        let name = name.into();
        let label = name.clone();
        let f = Arc::new(f);
        let erased: Function = Arc::new(move |input: Value| {
            let (f, label) = (Arc::clone(&f), label.clone());
            async move {
                let input: I = serde_json::from_value(input).map_err(|e| {
                    Terminal::new(format!(
                        "input of function {label} does not fit its type: {e}"
                    ))
                })?;
                let output = f(input).await?;
                Ok(serde_json::to_value(output)?)
            }
            .boxed()
        });
        self.map
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name, erased);
        self
    }
}

impl Invoke for Functions {
    fn invoke(&self, function: &str, input: Value) -> BoxFuture<'static, Result<Value, BoxError>> {
        let found = self
            .map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(function)
            .cloned();
        match found {
            Some(f) => f(input),
            None => {
                let e = Terminal::new(format!("no function is registered as {function}"));
                async move { Err(e.into()) }.boxed()
            }
        }
    }
}
