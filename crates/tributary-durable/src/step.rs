//! [`DurableExt`] and [`Step`]: journaled steps inside actions and
//! workflows.

use std::fmt;
use std::future::{Future, IntoFuture};
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tributary_core::{ActionContext, BoxError};

use crate::error::{DurableError, Terminal};
use crate::functions::{Functions, Invoke};
use crate::journal::Journal;
use crate::policy::StepPolicy;
use crate::scope::{Body, Compensation, Scope, StepAttempt};

/// Durable steps on a context: [`ActionContext`] (through its attached
/// [`Journal`]) and [`WorkflowContext`](crate::WorkflowContext).
///
/// Steps must be awaited one at a time, in an order that depends only on
/// the action's state, inputs and earlier steps' results: replay matches
/// the n-th step called with the n-th step journaled.
pub trait DurableExt {
    /// The replay cursor of the current attempt.
    ///
    /// # Errors
    ///
    /// [`DurableError::NoJournal`] when no journal is attached.
    fn scope(&self) -> Result<Arc<Scope>, DurableError>;

    /// Where [`call`](Self::call) sends calls: for an action, the
    /// [`Functions`] attached as an extension, else an `Arc<dyn Invoke>`
    /// attached as one (a cluster's invoker); for a workflow, those of its
    /// engine.
    fn invoker(&self) -> Option<Arc<dyn Invoke>>;

    /// Call the named function on `input` as a step named `call:<function>`:
    /// the result is journaled, so a replay returns it without calling
    /// again. Set a [`StepPolicy`] on the returned step to retry failed
    /// calls (a function that does not exist fails terminally).
    ///
    /// # Examples
    ///
    /// See [`Functions`].
    ///
    /// # Errors
    ///
    /// See [`Step`]; a call without functions attached fails with a
    /// terminal [`DurableError::StepFailed`].
    fn call<'a, I, O>(&'a self, function: &str, input: I) -> Step<'a, O>
    where
        I: Serialize,
        O: Serialize + DeserializeOwned + Send + 'a,
    {
        let invoker = self.invoker();
        let input = serde_json::to_value(input).map_err(|e| e.to_string());
        let function = function.to_owned();
        let name = format!("call:{function}");
        self.step_with(&name, move |attempt| {
            let (invoker, input, function) = (invoker.clone(), input.clone(), function.clone());
            async move {
                let input = input.map_err(|e| {
                    Terminal::new(format!("input of {function} does not serialise: {e}"))
                })?;
                let invoker = invoker.ok_or_else(|| {
                    Terminal::new(format!("no functions attached to call {function} with"))
                })?;
                let output = invoker
                    .invoke_keyed(&function, input, &attempt.idempotency_key)
                    .await?;
                serde_json::from_value::<O>(output).map_err(|e| {
                    BoxError::from(Terminal::new(format!(
                        "output of {function} does not fit its type: {e}"
                    )))
                })
            }
        })
    }

    /// A step running `fut` once: awaiting it journals the value under
    /// (app id, sequence id, `name` + occurrence) before returning it; when
    /// the journal already holds it, returns it without polling `fut`.
    ///
    /// # Examples
    ///
    /// See [`Journal`].
    ///
    /// # Errors
    ///
    /// See [`Step`].
    fn step<'a, T, E, Fut>(&'a self, name: &str, fut: Fut) -> Step<'a, T>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
        E: Into<BoxError> + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
    {
        let mut fut = Some(fut);
        let body: Body<'a, T> =
            Box::new(move |_attempt| fut.take().map(|f| f.map(|r| r.map_err(Into::into)).boxed()));
        Step::new(self.scope(), name, body)
    }

    /// A step whose body is built by `body` for each attempt (so a
    /// [`StepPolicy`] can retry it), told the attempt and the step's
    /// idempotency key.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, RunOptions, State};
    /// use tributary_durable::{DurableExt, Journal, MemoryJournal, StepPolicy, WithJournal};
    ///
    /// let journal = Journal::new(Arc::new(MemoryJournal::new()));
    /// let graph = Graph::single(action("pay").writes(["receipt"]).run(|s: State, _, ctx| async move {
    ///     let receipt: String = ctx
    ///         .step_with("charge", |attempt| async move {
    ///             if attempt.attempt < 3 { return Err("gateway busy".into()) }
    ///             Ok::<_, tributary_core::BoxError>(format!("paid with key {}", attempt.idempotency_key))
    ///         })
    ///         .policy(StepPolicy::new().retries(3).backoff(Duration::from_millis(1), Duration::from_millis(5)))
    ///         .await?;
    ///     Ok((json!({}), s.set("receipt", receipt)))
    /// }));
    /// let mut app = Application::builder(graph).app_id("order-7").journal(&journal).build().await?;
    /// let out = app.run(RunOptions::new()).await?;
    /// assert_eq!(out.state.get("receipt"), Some(&json!("paid with key order-7/0/charge#0")));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// See [`Step`].
    fn step_with<'a, T, E, F, Fut>(&'a self, name: &str, mut body: F) -> Step<'a, T>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
        E: Into<BoxError> + 'a,
        F: FnMut(StepAttempt) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, E>> + Send + 'a,
    {
        let body: Body<'a, T> =
            Box::new(move |attempt| Some(body(attempt).map(|r| r.map_err(Into::into)).boxed()));
        Step::new(self.scope(), name, body)
    }

    /// Run two steps concurrently, each journaled on its own: their
    /// positions are taken in argument order before either runs, so replay
    /// matches them whichever finished first, and a crash after one
    /// finished re-runs only the other.
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
    /// workflows.register("both", |ctx: WorkflowContext, ()| async move {
    ///     let (hotel, car): (String, String) = ctx
    ///         .join(
    ///             ctx.step("hotel", async { Ok::<_, BoxError>("h-1".to_owned()) }),
    ///             ctx.step("car", async { Ok::<_, BoxError>("c-1".to_owned()) }),
    ///         )
    ///         .await?;
    ///     Ok::<_, BoxError>(format!("{hotel} {car}"))
    /// });
    /// let handle = workflows.start("both", "trip-1", ()).await?;
    /// assert_eq!(handle.result::<String>().await?, "h-1 c-1");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first branch's error (in argument order) when either fails; see
    /// [`Step`].
    ///
    /// # Cancel safety
    ///
    /// As [`Step`]: a branch interrupted before its journal write runs
    /// again on replay.
    fn join<'a, A, B>(
        &'a self,
        a: Step<'a, A>,
        b: Step<'a, B>,
    ) -> BoxFuture<'a, Result<(A, B), DurableError>>
    where
        A: Serialize + DeserializeOwned + Send + 'a,
        B: Serialize + DeserializeOwned + Send + 'a,
    {
        let scope = self.scope();
        async move {
            let scope = scope?;
            let claim_a = scope.claim_step(&a.name).await?;
            let claim_b = scope.claim_step(&b.name).await?;
            let (ra, rb) = futures_util::future::join(
                scope.complete(claim_a, a.body, &a.policy, a.compensation),
                scope.complete(claim_b, b.body, &b.policy, b.compensation),
            )
            .await;
            Ok((ra?, rb?))
        }
        .boxed()
    }

    /// Run any number of steps concurrently, each journaled on its own,
    /// and return their values in the order given: the n-ary form of
    /// [`join`](Self::join). Their positions are taken in vector order
    /// before any runs, so replay matches them whichever finished first,
    /// and a crash after some finished re-runs only the others.
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
    /// workflows.register("pages", |ctx: WorkflowContext, urls: Vec<String>| async move {
    ///     let fetches = urls
    ///         .iter()
    ///         .map(|url| ctx.step("fetch", async move { Ok::<_, BoxError>(url.len()) }))
    ///         .collect();
    ///     let sizes: Vec<usize> = ctx.join_all(fetches).await?;
    ///     Ok::<_, BoxError>(sizes.iter().sum::<usize>())
    /// });
    /// let urls = vec!["a.example".to_owned(), "bb.example".to_owned()];
    /// let handle = workflows.start("pages", "crawl-1", urls).await?;
    /// assert_eq!(handle.result::<usize>().await?, 19);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The first failed step's error in vector order, once every step has
    /// ended; see [`Step`].
    ///
    /// # Cancel safety
    ///
    /// As [`Step`]: a step interrupted before its journal write runs again
    /// on replay.
    fn join_all<'a, T>(
        &'a self,
        steps: Vec<Step<'a, T>>,
    ) -> BoxFuture<'a, Result<Vec<T>, DurableError>>
    where
        T: Serialize + DeserializeOwned + Send + 'a,
    {
        let scope = self.scope();
        async move {
            let scope = scope?;
            let names: Vec<String> = steps.iter().map(|step| step.name.clone()).collect();
            let mut claims = Vec::with_capacity(names.len());
            for name in &names {
                claims.push(scope.claim_step(name).await?);
            }
            let scope = &scope;
            let runs = steps
                .into_iter()
                .zip(claims)
                .map(|(step, claim)| async move {
                    let Step {
                        body,
                        policy,
                        compensation,
                        ..
                    } = step;
                    scope.complete(claim, body, &policy, compensation).await
                });
            futures_util::future::join_all(runs)
                .await
                .into_iter()
                .collect()
        }
        .boxed()
    }

    /// Race two futures as one step named `name`: the first to finish
    /// wins, the other is dropped, and the winning branch and its value are
    /// journaled, so replay takes the same branch without running either.
    /// (A raw `tokio::select!` between steps breaks replay; see the guide.)
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use std::time::Duration;
    /// use tributary_core::BoxError;
    /// use tributary_durable::{Branch, DurableExt, MemoryJournal, WorkflowContext, Workflows};
    ///
    /// let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    /// workflows.register("quote", |ctx: WorkflowContext, ()| async move {
    ///     let slow = async {
    ///         tokio::time::sleep(Duration::from_secs(60)).await;
    ///         Ok::<_, BoxError>(120u32)
    ///     };
    ///     let fallback = async { Ok::<_, BoxError>("no quote".to_owned()) };
    ///     let out = match ctx.select("quote-or-fallback", slow, fallback).await? {
    ///         Branch::First(price) => format!("price {price}"),
    ///         Branch::Second(text) => text,
    ///     };
    ///     Ok::<_, BoxError>(out)
    /// });
    /// let handle = workflows.start("quote", "q-1", ()).await?;
    /// assert_eq!(handle.result::<String>().await?, "no quote");
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The winner's error, if the first future to finish failed (as
    /// [`DurableError::StepFailed`]); see [`Step`].
    ///
    /// # Cancel safety
    ///
    /// As [`Step`].
    fn select<'a, A, B, E1, E2, FA, FB>(
        &'a self,
        name: &str,
        a: FA,
        b: FB,
    ) -> BoxFuture<'a, Result<Branch<A, B>, DurableError>>
    where
        A: Serialize + DeserializeOwned + Send + 'a,
        B: Serialize + DeserializeOwned + Send + 'a,
        E1: Into<BoxError> + 'a,
        E2: Into<BoxError> + 'a,
        FA: Future<Output = Result<A, E1>> + Send + 'a,
        FB: Future<Output = Result<B, E2>> + Send + 'a,
    {
        let race = async move {
            let a = std::pin::pin!(a);
            let b = std::pin::pin!(b);
            match futures_util::future::select(a, b).await {
                futures_util::future::Either::Left((won, _)) => {
                    won.map(Branch::First).map_err(Into::into)
                }
                futures_util::future::Either::Right((won, _)) => {
                    won.map(Branch::Second).map_err(Into::into)
                }
            }
        };
        let step: Step<'a, Branch<A, B>> = self.step::<_, BoxError, _>(name, race);
        step.into_future()
    }

    /// Sleep durably: the wake-up time is journaled, so a replay sleeps
    /// only what remains of it (nothing if it has passed).
    ///
    /// # Errors
    ///
    /// [`DurableError::NonDeterminism`] when the journal holds another step
    /// here, [`DurableError::Store`] when the store fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe once the wake-up time is journaled: dropping the future
    /// and replaying sleeps until the same time.
    fn sleep(&self, duration: Duration) -> BoxFuture<'_, Result<(), DurableError>> {
        let scope = self.scope();
        async move { scope?.sleep(duration).await }.boxed()
    }
}

/// External events for actions (workflows have
/// [`WorkflowContext::await_event`](crate::WorkflowContext::await_event)).
pub trait EventExt {
    /// Wait for the next event named `name` sent to this application
    /// ([`Journal::send_event`] by app id, or
    /// [`RunEvents::send_event`](crate::RunEvents::send_event) by task path
    /// through the run's handle), journal it as a step `event:<name>`, and
    /// return it; a replay (a retry, a resume after a crash) returns the
    /// journaled event without waiting. The n-th wait for a name takes the
    /// n-th event of that name. Events sent in this process wake the wait
    /// at once; events sent by another process are seen within 100 ms.
    ///
    /// # Errors
    ///
    /// [`DurableError::NoJournal`] without a journal; a value that does not
    /// fit `T` ([`DurableError::Value`]); a store failure.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: an event not yet journaled stays in the store for the
    /// next wait.
    fn await_event<T: DeserializeOwned + Send>(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<T, DurableError>> + Send;
}

impl EventExt for ActionContext {
    async fn await_event<T: DeserializeOwned + Send>(&self, name: &str) -> Result<T, DurableError> {
        let journal = self
            .extension::<Journal>()
            .ok_or_else(|| DurableError::NoJournal {
                app_id: self.app_id().to_owned(),
            })?
            .clone();
        let scope = journal.scope_of(self)?;
        let (step, value) = scope
            .await_event(name, journal.events(), Duration::from_millis(100))
            .await?;
        serde_json::from_value(value).map_err(|source| DurableError::Value { step, source })
    }
}

impl DurableExt for ActionContext {
    fn invoker(&self) -> Option<Arc<dyn Invoke>> {
        self.extension::<Functions>()
            .map(|f| Arc::new(f.clone()) as Arc<dyn Invoke>)
            .or_else(|| self.extension::<Arc<dyn Invoke>>().cloned())
    }

    fn scope(&self) -> Result<Arc<Scope>, DurableError> {
        self.extension::<Journal>()
            .ok_or_else(|| DurableError::NoJournal {
                app_id: self.app_id().to_owned(),
            })?
            .scope_of(self)
    }
}

/// Which branch of a [`DurableExt::select`] won, with its value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub enum Branch<A, B> {
    /// The first future finished first.
    First(A),
    /// The second future finished first.
    Second(B),
}

/// A durable step, ready to be awaited; set its [`policy`](Self::policy)
/// and [`compensation`](Self::compensate) first if needed.
///
/// Awaiting it resolves to the step's value: journaled (then returned),
/// or read back from the journal without running the body.
///
/// # Errors
///
/// [`DurableError::NonDeterminism`] when the journal holds another step at
/// this position; [`DurableError::StepFailed`] when the body failed and
/// the policy gave up; [`DurableError::Compensated`] when it failed with
/// compensations registered (they ran); [`DurableError::Value`] for a value
/// that does not fit `T`; [`DurableError::Store`] when the store fails;
/// [`DurableError::NoJournal`] without a journal.
///
/// # Cancel safety
///
/// Not cancel safe: dropping it while the body runs is a crash of the step
/// (the body runs again on replay); dropping it after its journal write
/// loses nothing.
#[must_use = "a step does nothing until awaited"]
pub struct Step<'a, T> {
    scope: Result<Arc<Scope>, DurableError>,
    name: String,
    body: Body<'a, T>,
    policy: StepPolicy,
    compensation: Option<Compensation<'a, T>>,
}

impl<T> fmt::Debug for Step<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Step")
            .field("name", &self.name)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<'a, T> Step<'a, T>
where
    T: Serialize + DeserializeOwned + Send + 'a,
{
    fn new(scope: Result<Arc<Scope>, DurableError>, name: &str, body: Body<'a, T>) -> Self {
        Step {
            scope,
            name: name.to_owned(),
            body,
            policy: StepPolicy::default(),
            compensation: None,
        }
    }

    /// Retries, backoff and timeout of this step.
    pub fn policy(mut self, policy: StepPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Register the step's compensation (saga undo), built from its value
    /// once it succeeds (or is replayed). When a later step of the same
    /// attempt fails for good, the registered compensations run in reverse
    /// order, each journaled as a step named `undo:<step name>`.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::{Arc, Mutex};
    /// use serde_json::json;
    /// use tributary_core::{action, Application, BoxError, Graph, RunOptions, State};
    /// use tributary_durable::{DurableError, DurableExt, Journal, MemoryJournal, WithJournal};
    ///
    /// let undone = Arc::new(Mutex::new(Vec::<String>::new()));
    /// let log = undone.clone();
    /// let journal = Journal::new(Arc::new(MemoryJournal::new()));
    /// let graph = Graph::single(action("book").run(move |s: State, _, ctx| {
    ///     let log = log.clone();
    ///     async move {
    ///         let car: String = ctx
    ///             .step("car", async { Ok::<_, BoxError>("car-1".to_owned()) })
    ///             .compensate(move |id: &String| {
    ///                 let (log, id) = (log.clone(), id.clone());
    ///                 async move { log.lock().unwrap().push(id); Ok::<_, BoxError>(()) }
    ///             })
    ///             .await?;
    ///         let _flight: String = ctx.step("flight", async { Err::<String, _>("sold out") }).await?;
    ///         Ok((json!({ "car": car }), s))
    ///     }
    /// }));
    /// let mut app = Application::builder(graph).journal(&journal).build().await?;
    /// let err = app.run(RunOptions::new()).await.unwrap_err();
    /// assert!(err.to_string().contains("1 compensation(s) ran"), "{err}");
    /// assert_eq!(*undone.lock().unwrap(), ["car-1"]);
    /// # Ok(())
    /// # }
    /// ```
    pub fn compensate<F, Fut, E>(mut self, undo: F) -> Self
    where
        F: FnOnce(&T) -> Fut + Send + 'a,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<BoxError> + 'static,
    {
        self.compensation = Some(Compensation {
            name: format!("undo:{}", self.name),
            make: Box::new(move |value: &T| undo(value).map(|r| r.map_err(Into::into)).boxed()),
        });
        self
    }
}

impl<'a, T> IntoFuture for Step<'a, T>
where
    T: Serialize + DeserializeOwned + Send + 'a,
{
    type Output = Result<T, DurableError>;
    type IntoFuture = BoxFuture<'a, Result<T, DurableError>>;

    fn into_future(self) -> Self::IntoFuture {
        async move {
            let scope = self.scope?;
            scope
                .run_step(&self.name, self.body, &self.policy, self.compensation)
                .await
        }
        .boxed()
    }
}
