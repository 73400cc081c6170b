//! Applications: a graph, a state and a position, run step by step.
//!
//! An [`Application`] runs its graph one action at a time. Each
//! [`step`](Application::step) runs the next action, validates its writes,
//! picks the next action by the transitions, saves a checkpoint when a
//! persister is set, and fires the hooks. [`advance`](Application::advance)
//! runs one step and applies the halting decision: it is the one stepping
//! function that [`run`](Application::run) (steps until a halt condition),
//! [`iterate`](Application::iterate) (yields each step as a `Stream`),
//! [`stream_result`](Application::stream_result) (streams the intermediate
//! outputs of the halt action) and the runtime's subgraph actors share.
//!
//! Halting: after each step the run stops if the next action is in
//! `halt_before` (no result), or the action just run is in `halt_after`, or no
//! transition holds. `halt_before` beats `halt_after`; the first action always
//! runs before any halt check. Sequence ids start at 0 and increase by one
//! per completed step; a failed step is retried at the same sequence id, so
//! its checkpoint (status failed) is replaced by the retry's.
//!
//! # Examples
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use serde_json::json;
//! use tributary_core::{action, default, when, Application, Graph, RunOptions, State};
//!
//! let graph = Graph::builder()
//!     .action(action("count").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
//!         let s = s.increment("n", 1)?;
//!         Ok((json!({ "n": s.get("n") }), s))
//!     }))
//!     .action(action("done").run(|s, _, _| async move { Ok((json!({ "ok": true }), s)) }))
//!     .transition("count", "done", when("n", 3))
//!     .transition("count", "count", default())
//!     .entrypoint("count")
//!     .build()?;
//!
//! let mut app = Application::builder(graph)
//!     .state(State::new().set("n", 0))
//!     .build()
//!     .await?;
//! let outcome = app.run(RunOptions::after(["done"])).await?;
//! assert_eq!(outcome.action.as_deref(), Some("done"));
//! assert_eq!(outcome.state.get("n"), Some(&json!(3)));
//! assert_eq!(app.sequence_id(), Some(3)); // count, count, count, done
//! # Ok(())
//! # }
//! ```

mod builder;
mod run_hooks;
mod stream;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use futures_util::FutureExt;
use futures_util::stream::BoxStream;
use serde_json::Value;
use tracing::Instrument;

use crate::action::{Action, ActionContext, HookPanicSlot, StepShared, StreamSink};
use crate::error::{ActionError, ApplicationError, HookMethod};
use crate::graph::Graph;
use crate::hooks::{HookList, StepInfo, StepOutcome, call_hooks};
use crate::identity::{AppInfo, Identity};
use crate::inputs::Inputs;
use crate::outcome::{Advance, HaltReason, Halted, RunOutcome, StepRecord};
use crate::persistence::{Checkpoint, Persister, StepStatus};
use crate::state::{RESERVED_PREFIX, State};

use run_hooks::RunHooks;

pub use builder::ApplicationBuilder;
pub use stream::StreamResult;

/// Where a run stops and what every step receives.
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct RunOptions {
    halt_after: Vec<String>,
    halt_before: Vec<String>,
    inputs: Inputs,
}

impl RunOptions {
    /// Run until the graph ends.
    pub fn new() -> Self {
        Self::default()
    }

    /// Run until one of `actions` has run.
    pub fn after<I, K>(actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Self::new().halt_after(actions)
    }

    /// Run until one of `actions` is next.
    pub fn before<I, K>(actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        Self::new().halt_before(actions)
    }

    /// Also halt after any of `actions`.
    pub fn halt_after<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.halt_after.extend(actions.into_iter().map(Into::into));
        self
    }

    /// Also halt before any of `actions`.
    pub fn halt_before<I, K>(mut self, actions: I) -> Self
    where
        I: IntoIterator<Item = K>,
        K: Into<String>,
    {
        self.halt_before.extend(actions.into_iter().map(Into::into));
        self
    }

    /// Inputs for every step; each action receives those it declares.
    pub fn inputs(mut self, inputs: Inputs) -> Self {
        self.inputs = inputs;
        self
    }

    /// The inputs.
    pub fn get_inputs(&self) -> &Inputs {
        &self.inputs
    }

    /// The actions the run halts after.
    pub fn get_halt_after(&self) -> &[String] {
        &self.halt_after
    }

    /// The actions the run halts before.
    pub fn get_halt_before(&self) -> &[String] {
        &self.halt_before
    }

    /// The first action named in a halt list that `graph` does not have.
    pub fn unknown_action(&self, graph: &Graph) -> Option<&str> {
        self.halt_after
            .iter()
            .chain(&self.halt_before)
            .find(|a| !graph.contains(a))
            .map(String::as_str)
    }

    /// Whether `action` is in the halt-after list.
    pub fn halts_after(&self, action: &str) -> bool {
        self.halt_after.iter().any(|a| a == action)
    }

    /// Whether `action` is in the halt-before list.
    pub fn halts_before(&self, action: &str) -> bool {
        self.halt_before.iter().any(|a| a == action)
    }

    /// The halting decision after a step of `ran`, when `next` is the action
    /// the transitions chose (`None`: no transition holds).
    ///
    /// `halt_before` beats `halt_after`: the run halts before `next` when it
    /// is in `halt_before`, else after `ran` when it is in `halt_after`,
    /// else at the graph's end when there is no `next`; otherwise it goes on
    /// (`None`). There is no check before the first step: the first action
    /// always runs. [`Application::advance`] applies this after every step.
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_core::{HaltReason, RunOptions};
    ///
    /// let opts = RunOptions::after(["write"]).halt_before(["review"]);
    /// assert_eq!(opts.halt_after_step("plan", Some("write")), None);
    /// assert_eq!(opts.halt_after_step("write", Some("review")), Some(HaltReason::HaltBefore));
    /// assert_eq!(opts.halt_after_step("write", Some("plan")), Some(HaltReason::HaltAfter));
    /// assert_eq!(opts.halt_after_step("plan", None), Some(HaltReason::GraphEnd));
    /// ```
    pub fn halt_after_step(&self, ran: &str, next: Option<&str>) -> Option<HaltReason> {
        match next {
            Some(next) if self.halts_before(next) => Some(HaltReason::HaltBefore),
            _ if self.halts_after(ran) => Some(HaltReason::HaltAfter),
            None => Some(HaltReason::GraphEnd),
            Some(_) => None,
        }
    }
}

/// A graph, a state and a position, run one action at a time.
///
/// [`advance`](Application::advance) is the stepping function every driver
/// shares (`run`, `iterate`, `stream_result`, the runtime's actors).
/// Each [`step`](Application::step) runs the next action, validates its
/// writes, picks the next action by the transitions, saves a checkpoint when
/// a persister is set, and fires the hooks. After each step a run stops if
/// the next action is in `halt_before` (no result), or the action just run is
/// in `halt_after`, or no transition holds; `halt_before` beats `halt_after`
/// and the first action always runs before any halt check. Sequence ids
/// start at 0 and grow by one per completed step; a failed step is retried
/// at the same sequence id.
pub struct Application {
    graph: Graph,
    info: Identity,
    state: State,
    next_seq: u64,
    last_seq: Option<u64>,
    next_action: Option<usize>,
    hooks: HookList,
    persister: Option<Arc<dyn Persister>>,
    sink: Option<Arc<dyn StreamSink>>,
    /// The services its actions find in their contexts, with the output
    /// counter of the last step (see `step_shared`).
    shared: Arc<StepShared>,
    /// The checkpoint this application was resumed or forked from.
    resumed: Option<Arc<Checkpoint>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("app_id", &self.info.app_id())
            .field("next_action", &self.next_action())
            .field("sequence_id", &self.last_seq)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// The application's id.
    pub fn app_id(&self) -> &str {
        self.info.app_id()
    }

    /// The application's partition key.
    pub fn partition_key(&self) -> Option<&str> {
        self.info.info().partition_key.as_deref()
    }

    /// The application's identity and parent pointers.
    pub fn info(&self) -> &Arc<AppInfo> {
        self.info.info()
    }

    /// The current state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Replace the current state (between steps).
    pub fn set_state(&mut self, state: State) {
        self.state = state;
    }

    /// The graph.
    pub fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The sequence id of the last step attempted (completed, or failed and
    /// due to be retried at this id), `None` before the first.
    pub fn sequence_id(&self) -> Option<u64> {
        self.last_seq
    }

    /// The action the next step will run, `None` when the run has ended.
    pub fn next_action(&self) -> Option<&str> {
        self.next_action.map(|i| self.graph.action_at(i).name())
    }

    /// The checkpoint this application was built from by `resume()` or
    /// `fork_from`, `None` for a fresh start. It holds the last step's
    /// action, status and (for a completed step) result, so a resumed
    /// application can report the outcome of work that finished before a
    /// crash without running it again. It does not change as the
    /// application steps on.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use std::sync::Arc;
    /// use serde_json::json;
    /// use tributary_core::{Application, Graph, InMemoryPersister, RunOptions, State, action};
    ///
    /// let graph = Graph::single(action("count").writes(["n"]).run(|s: State, _, _| async move {
    ///     Ok((json!({ "n": 1 }), s.set("n", 1)))
    /// }));
    /// let persister = Arc::new(InMemoryPersister::new());
    /// let build = |resume: bool| {
    ///     let b = Application::builder(graph.clone()).app_id("job").persister(persister.clone());
    ///     if resume { b.resume() } else { b }
    /// };
    /// build(false).build().await?.run(RunOptions::new()).await?;
    ///
    /// let again = build(true).build().await?;
    /// let last = again.resumed_from().expect("a checkpoint was saved");
    /// assert_eq!((last.action.as_str(), last.result.clone()), ("count", Some(json!({ "n": 1 }))));
    /// assert_eq!(again.next_action(), None);
    /// # Ok(())
    /// # }
    /// ```
    pub fn resumed_from(&self) -> Option<&Checkpoint> {
        self.resumed.as_deref()
    }

    /// Record that the user cancelled this application: save a
    /// [`StepStatus::Cancelled`] checkpoint at the next step's sequence id,
    /// naming the action that was due to run and holding the current state
    /// (the state before that step). Does nothing without a persister or
    /// when no action is left. A later `resume()` runs that action.
    ///
    /// # Errors
    ///
    /// [`ApplicationError::Persist`] when the persister refuses or fails.
    ///
    /// # Cancel safety
    ///
    /// As the persister's `save`: the SQLite persister writes the
    /// checkpoint even if this future is dropped once polled.
    pub async fn save_cancelled(&self) -> Result<(), ApplicationError> {
        let (Some(persister), Some(action)) = (&self.persister, self.next_action()) else {
            return Ok(());
        };
        save_checkpoint(
            persister.as_ref(),
            self.info.info(),
            self.next_seq,
            action,
            StepStatus::Cancelled,
            self.state.clone(),
            None,
        )
        .await
    }

    /// Run the next action.
    ///
    /// Returns `Ok(None)` when no action is left. When the step fails the
    /// state is as it was before it and the same action is next again (the
    /// one error after which the step is kept is a panicking `after_step`
    /// hook, see below).
    ///
    /// Each step consumes a unit of tokio's cooperative budget, so a run
    /// whose actions never wait still yields to the scheduler now and then:
    /// timeouts and cancellation around it always get in.
    ///
    /// # Errors
    ///
    /// [`ApplicationError::Step`] when the action fails, panics or breaks its
    /// declarations, or a hook panics in `before_step` or `on_stream_item`
    /// ([`ActionError::HookPanicked`]); [`ApplicationError::Persist`] when
    /// its checkpoint cannot be saved; [`ApplicationError::Hook`] when a hook
    /// panics in `after_step` (the step is kept).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that dropping the future leaves the
    /// application at the state before the step (the step is abandoned and
    /// the hooks are told); the action's own side effects are not undone.
    pub async fn step(&mut self, inputs: &Inputs) -> Result<Option<StepRecord>, ApplicationError> {
        self.step_with(inputs, None).await
    }

    #[allow(clippy::manual_async_fn)] // on purpose, see the comment inside
    pub(crate) fn step_with<'a>(
        &'a mut self,
        inputs: &'a Inputs,
        sink_override: Option<Arc<dyn StreamSink>>,
    ) -> impl Future<Output = Result<Option<StepRecord>, ApplicationError>> + Send + 'a {
        // A plain `fn` returning an `async move` block: an `async fn` keeps
        // a second copy of its arguments in its future.
        async move {
            // Give the scheduler a chance between steps: a graph whose
            // actions never wait would otherwise keep its thread forever,
            // and no timeout, cancellation or pause around it could get in.
            // The budget yields once every hundred-odd steps, not every step.
            tokio::task::coop::consume_budget().await;
            let Some((step, span)) = self.begin_step() else {
                return Ok(None);
            };
            self.run_step(step, inputs, sink_override)
                .instrument(span)
                .await
        }
    }

    /// The next step's place and span (`None`: no action is left). Not
    /// `async`, so that the locals it borrows take no room in the step's
    /// future.
    fn begin_step(&mut self) -> Option<(StepCall, tracing::Span)> {
        let index = self.next_action?;
        let name: Arc<str> = Arc::clone(self.graph.name_at(index));
        let seq = self.next_seq;
        self.last_seq = Some(seq);
        let span = tracing::info_span!(
            "tributary.step",
            app_id = %self.info.app_id(),
            action = %name,
            sequence_id = seq,
            outcome = tracing::field::Empty,
            error_kind = tracing::field::Empty,
        );
        // Without a subscriber interested in the span, skip looking it up
        // again to record the outcome.
        let traced = !span.is_disabled();
        Some((
            StepCall {
                index,
                seq,
                name,
                traced,
            },
            span,
        ))
    }

    /// The step itself, inside its span. Only what the step needs after its
    /// action has run lives across the action's await: the preparations
    /// (hooks, inputs, context) are made by [`start_action`](Self::start_action),
    /// the checkpoint is saved from a boxed future and the end is made by
    /// [`finish_step`](Self::finish_step), so that a task suspended in an
    /// action keeps a small future. (A plain `fn` returning an `async move`
    /// block: an `async fn` keeps a second copy of its arguments.)
    #[allow(clippy::manual_async_fn)] // on purpose, see above
    fn run_step<'a>(
        &'a mut self,
        step: StepCall,
        inputs: &'a Inputs,
        sink_override: Option<Arc<dyn StreamSink>>,
    ) -> impl Future<Output = Result<Option<StepRecord>, ApplicationError>> + Send + 'a {
        async move {
            let action = Arc::clone(self.graph.action_at(step.index));
            let shared = self.step_shared();
            let mut guard = StepGuard {
                hooks: None,
                armed: true,
            };
            let started =
                self.start_action(&action, &step, inputs, sink_override, &shared, &mut guard);
            let outcome = match started {
                Err(e) => Err(*e),
                Ok(run) => {
                    let ran = AssertUnwindSafe(run).catch_unwind().await;
                    self.action_ran(&action, &step, ran, &guard)
                }
            };
            let outcome = if self.persister.is_some() {
                // Boxed, and the outcome with it: the checkpoint would
                // otherwise take room in every step's future, with or
                // without a persister.
                match Box::pin(self.save_step(&step, outcome)).await {
                    Ok(outcome) => outcome,
                    Err(error) => {
                        // The hooks hear the step was abandoned: nothing
                        // was kept.
                        record_failure(&error);
                        guard.armed = false;
                        guard.abandon_hooks();
                        return Err(error);
                    }
                }
            } else {
                outcome
            };
            let items = shared.emitted.load(Ordering::Relaxed);
            guard.armed = false;
            self.finish_step(step, outcome, items, &guard)
        }
    }

    /// Tell the hooks a step begins, select its inputs and start its
    /// action.
    fn start_action<'a>(
        &self,
        action: &'a Arc<dyn Action>,
        step: &StepCall,
        inputs: &Inputs,
        sink_override: Option<Arc<dyn StreamSink>>,
        shared: &Arc<StepShared>,
        guard: &mut StepGuard,
    ) -> Result<ActionFuture<'a>, Box<ActionError>> {
        let name = &step.name;
        let selected = inputs.select(name, action.inputs());
        if !self.hooks.is_empty() {
            // Boxed: applications without hooks (the common case for
            // runtime tasks) keep no room for it in the step's future.
            let hooks = guard.hooks.insert(Box::new(StepHooks {
                app: Arc::clone(self.info.info()),
                hooks: Arc::clone(&self.hooks),
                action: Arc::clone(name),
                seq: step.seq,
                state: self.state.clone(),
                inputs: selected.as_ref().cloned().unwrap_or_default(),
                shared: Arc::clone(shared),
                hook_panic: HookPanicSlot::default(),
            }));
            let info = hooks.info();
            if let Err(panic) = call_hooks(&self.hooks, HookMethod::BeforeStep, |hook| {
                hook.before_step(&info)
            }) {
                return Err(Box::new(ActionError::HookPanicked {
                    action: name.to_string(),
                    panic,
                }));
            }
        }
        let step_inputs = selected.map_err(Box::new)?;
        let ctx = ActionContext {
            app: self.info.clone(),
            sequence_id: step.seq,
            action: Arc::clone(name),
            sink: sink_override.or_else(|| self.sink.clone()),
            hooks: Arc::clone(&self.hooks),
            shared: Arc::clone(shared),
            hook_panic: guard.hooks.as_ref().map(|h| Arc::clone(&h.hook_panic)),
            persister: self.persister.clone(),
        };
        Ok(action.run(self.state.clone(), step_inputs, ctx))
    }

    /// What a step's action came back with: its result and new state,
    /// validated, and the next action; or why the step failed.
    fn action_ran(
        &self,
        action: &Arc<dyn Action>,
        step: &StepCall,
        ran: std::thread::Result<crate::action::ActionResult>,
        guard: &StepGuard,
    ) -> StepResult {
        let name = &step.name;
        let ran = match ran {
            Err(payload) => Err(ActionError::panicked(name, payload)),
            Ok(Err(source)) => Err(ActionError::Failed {
                action: name.to_string(),
                source,
            }),
            // The application's state is still the one before the step.
            Ok(Ok((result, state))) => {
                validate(name, action.writes(), &self.state, &result, &state)
                    .and_then(|()| self.graph.next(step.index, &state))
                    .map(|next| (result, state, next))
            }
        };
        // A stream-item hook that panicked fails the step, whatever the
        // action made of its emit error.
        match guard.hooks.as_ref().and_then(|h| h.hook_panic.get()) {
            Some(panic) => Err(ActionError::HookPanicked {
                action: name.to_string(),
                panic: panic.clone(),
            }),
            None => ran,
        }
    }

    /// Save the step's checkpoint; the step's outcome is handed back.
    async fn save_step(
        &self,
        step: &StepCall,
        outcome: StepResult,
    ) -> Result<StepResult, ApplicationError> {
        let Some(persister) = &self.persister else {
            return Ok(outcome);
        };
        let (status, state, result) = match &outcome {
            Ok((result, state, _)) => (StepStatus::Completed, state.clone(), Some(result.clone())),
            Err(_) => (StepStatus::Failed, self.state.clone(), None),
        };
        save_checkpoint(
            persister.as_ref(),
            self.info.info(),
            step.seq,
            &step.name,
            status,
            state,
            result,
        )
        .await?;
        Ok(outcome)
    }

    /// Tell the hooks how the step ended and keep it (or not).
    fn finish_step(
        &mut self,
        step: StepCall,
        outcome: StepResult,
        items: u64,
        guard: &StepGuard,
    ) -> Result<Option<StepRecord>, ApplicationError> {
        let mut after = Ok(());
        if let Some(hooks) = &guard.hooks {
            let info = hooks.info();
            let hook_outcome = match &outcome {
                Ok((result, state, _)) => StepOutcome::Completed {
                    result,
                    state,
                    items,
                },
                Err(error) => StepOutcome::Failed { error, items },
            };
            after = call_hooks(&self.hooks, HookMethod::AfterStep, |hook| {
                hook.after_step(&info, &hook_outcome)
            });
        }
        match outcome {
            Ok((result, state, next)) => {
                self.state = state.clone();
                self.next_action = next;
                self.next_seq = step.seq + 1;
                if step.traced {
                    tracing::Span::current().record("outcome", "completed");
                }
                tracing::debug!(items, "step completed");
                // The step is kept (its checkpoint says completed); a
                // panicking after_step hook still stops the run.
                after.map_err(ApplicationError::Hook)?;
                Ok(Some(StepRecord {
                    sequence_id: step.seq,
                    action: step.name,
                    result,
                    state,
                    items,
                }))
            }
            Err(source) => {
                let error = ApplicationError::Step {
                    sequence_id: step.seq,
                    source,
                };
                record_failure(&error);
                Err(error)
            }
        }
    }

    /// What the next step's contexts share, its output counter zeroed: the
    /// last step's, when no context of that step is left holding it (the
    /// common case), so that a step allocates nothing; a fresh copy
    /// otherwise, so that a context kept from an earlier step never counts
    /// into this one.
    fn step_shared(&mut self) -> Arc<StepShared> {
        // No weak references are ever made: one strong count means only the
        // application holds it.
        if Arc::strong_count(&self.shared) == 1 {
            self.shared.emitted.store(0, Ordering::Relaxed);
        } else {
            self.shared = Arc::new(StepShared::new(self.shared.extensions.clone()));
        }
        Arc::clone(&self.shared)
    }

    fn check_halts(&self, opts: &RunOptions) -> Result<(), ApplicationError> {
        match opts.unknown_action(&self.graph) {
            Some(unknown) => Err(ApplicationError::UnknownHaltAction(unknown.to_owned())),
            None => Ok(()),
        }
    }

    /// Run the next step and decide whether the run halts after it: the
    /// stepping function behind [`run`](Self::run),
    /// [`iterate`](Self::iterate), [`stream_result`](Self::stream_result)
    /// and the runtime's subgraph actors.
    ///
    /// One call runs one [`step`](Self::step) (hooks, validation, the next
    /// action by the transitions, the checkpoint) and then applies the
    /// halting decision ([`RunOptions::halt_after_step`]). It returns
    /// [`Advance::Continue`] with the step when the run goes on, and
    /// [`Advance::Halt`] with the run's outcome when it halts (with no step
    /// when nothing was left to run). Nothing is checked before the step:
    /// the first action of a run always runs. The halt lists are not
    /// checked against the graph here; [`RunOptions::unknown_action`] does
    /// that once per run.
    ///
    /// # Examples
    ///
    /// A driver loop that reports every intermediate node and the final
    /// outcome, as the runtime does:
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, default, when, Application, Graph, HaltReason, RunOptions, State};
    ///
    /// let graph = Graph::builder()
    ///     .action(action("count").reads(["n"]).writes(["n"]).run(|s: State, _, _| async move {
    ///         let s = s.increment("n", 1)?;
    ///         Ok((json!({ "n": s.get("n") }), s))
    ///     }))
    ///     .action(action("done").run(|s, _, _| async move { Ok((json!({ "ok": true }), s)) }))
    ///     .transition("count", "done", when("n", 2))
    ///     .transition("count", "count", default())
    ///     .entrypoint("count")
    ///     .build()?;
    /// let mut app = Application::builder(graph).state(State::new().set("n", 0)).build().await?;
    ///
    /// let opts = RunOptions::after(["done"]);
    /// let mut nodes = Vec::new();
    /// let outcome = loop {
    ///     let (node, outcome) = app.advance(&opts).await?.split();
    ///     nodes.extend(node.map(|n| n.action.to_string()));
    ///     if let Some(outcome) = outcome {
    ///         break outcome;
    ///     }
    /// };
    /// assert_eq!(nodes, ["count", "count"]);
    /// assert_eq!(outcome.reason, HaltReason::HaltAfter);
    /// assert_eq!(outcome.result, Some(json!({ "ok": true })));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step): on error the state is as it was before the
    /// step and the same action is next again.
    ///
    /// # Cancel safety
    ///
    /// As [`step`](Self::step): dropping the future abandons the step and
    /// leaves the application at the state before it.
    pub async fn advance(&mut self, opts: &RunOptions) -> Result<Advance, ApplicationError> {
        self.advance_with(opts, None).await
    }

    pub(crate) async fn advance_with(
        &mut self,
        opts: &RunOptions,
        sink_override: Option<Arc<dyn StreamSink>>,
    ) -> Result<Advance, ApplicationError> {
        let Some(record) = self.step_with(&opts.inputs, sink_override).await? else {
            return Ok(Advance::Halt {
                step: None,
                outcome: self.nothing_to_run(),
            });
        };
        let next = self.next_action();
        let Some(reason) = opts.halt_after_step(&record.action, next) else {
            return Ok(Advance::Continue(record));
        };
        let (action, result) = match (reason, next) {
            (HaltReason::HaltBefore, Some(next)) => (next.to_owned(), None),
            _ => (record.action.to_string(), Some(record.result.clone())),
        };
        let outcome = RunOutcome {
            action: Some(action),
            result,
            state: self.state.clone(),
            reason,
        };
        Ok(Advance::Halt {
            step: Some(record),
            outcome,
        })
    }

    /// One step and the halting decision, as [`advance`](Self::advance),
    /// already [`split`](Advance::split) into the intermediate node and
    /// the run's end, and without copying anything: the halt step's action,
    /// result and state move into the end instead of being cloned (a
    /// runtime that reports each task's end calls this once per task).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, default, Application, Graph, HaltReason, RunOptions};
    ///
    /// let graph = Graph::builder()
    ///     .action(action("a").run(|s, _, _| async move { Ok((json!({ "a": 1 }), s)) }))
    ///     .action(action("b").run(|s, _, _| async move { Ok((json!({ "b": 2 }), s)) }))
    ///     .transition("a", "b", default())
    ///     .entrypoint("a")
    ///     .build()?;
    /// let mut app = Application::builder(graph).build().await?;
    /// let opts = RunOptions::new();
    /// let (node, end) = app.advance_split(&opts).await?;
    /// assert_eq!(node.map(|n| n.action.to_string()).as_deref(), Some("a"));
    /// assert!(end.is_none());
    /// let (node, end) = app.advance_split(&opts).await?;
    /// assert!(node.is_none()); // `b` is the halt step: its result is the end's
    /// let end = end.expect("the graph ends after b");
    /// assert_eq!(end.action.as_deref(), Some("b"));
    /// assert_eq!(end.result, Some(json!({ "b": 2 })));
    /// assert_eq!(end.reason, HaltReason::GraphEnd);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// As [`advance`](Self::advance).
    ///
    /// # Cancel safety
    ///
    /// As [`advance`](Self::advance).
    pub async fn advance_split(
        &mut self,
        opts: &RunOptions,
    ) -> Result<(Option<StepRecord>, Option<Halted>), ApplicationError> {
        let Some(record) = self.step_with(&opts.inputs, None).await? else {
            return Ok((
                None,
                Some(Halted {
                    action: None,
                    result: None,
                    state: self.state.clone(),
                    reason: HaltReason::GraphEnd,
                }),
            ));
        };
        match opts.halt_after_step(&record.action, self.next_action()) {
            None => Ok((Some(record), None)),
            Some(HaltReason::HaltBefore) => {
                let end = Halted {
                    action: self.next_action_name().cloned(),
                    result: None,
                    state: self.state.clone(),
                    reason: HaltReason::HaltBefore,
                };
                Ok((Some(record), Some(end)))
            }
            Some(reason) => Ok((
                None,
                Some(Halted {
                    action: Some(record.action),
                    result: Some(record.result),
                    state: record.state,
                    reason,
                }),
            )),
        }
    }

    /// The name of the action the next step will run, shared (no copy).
    pub fn next_action_name(&self) -> Option<&Arc<str>> {
        self.next_action.map(|i| self.graph.name_at(i))
    }

    /// The outcome of a run that found nothing left to run.
    fn nothing_to_run(&self) -> RunOutcome {
        RunOutcome {
            action: None,
            result: None,
            state: self.state.clone(),
            reason: HaltReason::GraphEnd,
        }
    }

    /// Step until a halt condition holds or the graph ends.
    ///
    /// The hooks hear `before_run` first and `after_run` exactly once at the
    /// end (with [`ApplicationError::Abandoned`] when the future is dropped
    /// before the run ends).
    ///
    /// # Errors
    ///
    /// [`ApplicationError::UnknownHaltAction`] before anything runs when a
    /// halt list names an unknown action; otherwise the first failing step's
    /// error (the state is as it was before that step), or a hook's panic
    /// ([`ApplicationError::hook_panic`]).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run between or inside a step; the
    /// application keeps every completed step and abandons the current one.
    pub async fn run(&mut self, opts: RunOptions) -> Result<RunOutcome, ApplicationError> {
        self.check_halts(&opts)?;
        let span = tracing::info_span!(
            "tributary.run",
            app_id = %self.info.app_id(),
            outcome = tracing::field::Empty,
            error_kind = tracing::field::Empty,
        );
        async {
            let hooks = RunHooks::begin(self.info.info(), &self.hooks, &self.state)?;
            let result = loop {
                match self.advance(&opts).await {
                    Ok(Advance::Continue(_)) => {}
                    Ok(Advance::Halt { outcome, .. }) => break Ok(outcome),
                    Err(error) => break Err(error),
                }
            };
            let result = hooks.end(result);
            let span = tracing::Span::current();
            match &result {
                Ok(_) => span.record("outcome", "completed"),
                Err(error) => span
                    .record("outcome", "failed")
                    .record("error_kind", error.kind()),
            };
            result
        }
        .instrument(span)
        .await
    }

    /// The steps of a run as a `Stream`, ending after the step at which
    /// [`run`](Self::run) would halt, or after the first error.
    ///
    /// The hooks are told as for [`run`](Self::run): `before_run` when the
    /// stream is first polled, `after_run` when it ends (before its last
    /// item is handed out), or with [`ApplicationError::Abandoned`] when it
    /// is dropped before the end.
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use futures_util::StreamExt;
    /// use serde_json::json;
    /// use tributary_core::{action, default, Application, Graph, RunOptions};
    ///
    /// let graph = Graph::builder()
    ///     .action(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }))
    ///     .action(action("b").run(|s, _, _| async move { Ok((json!({}), s)) }))
    ///     .transition("a", "b", default())
    ///     .entrypoint("a")
    ///     .build()?;
    /// let mut app = Application::builder(graph).build().await?;
    /// let mut names = Vec::new();
    /// let mut steps = app.iterate(RunOptions::new());
    /// while let Some(step) = steps.next().await {
    ///     names.push(step?.action.to_string());
    /// }
    /// assert_eq!(names, ["a", "b"]);
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// The stream's last item is the error that ended the run, if one did:
    /// [`ApplicationError::UnknownHaltAction`] before anything runs, a
    /// failed step, or a hook's panic.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream between items loses nothing; dropping it while a
    /// step runs abandons that step (the state stays as before it).
    pub fn iterate(
        &mut self,
        opts: RunOptions,
    ) -> BoxStream<'_, Result<StepRecord, ApplicationError>> {
        /// Where the stream is.
        enum Iter<'a> {
            /// Not polled yet: the hooks have not been told.
            Start(&'a mut Application, RunOptions),
            /// Running, its hooks told.
            Running(&'a mut Application, RunOptions, RunHooks),
            /// Ended with this error, still to hand out.
            Fail(ApplicationError),
        }
        let start = match self.check_halts(&opts) {
            Ok(()) => Iter::Start(self, opts),
            Err(e) => Iter::Fail(e),
        };
        Box::pin(futures_util::stream::unfold(
            Some(start),
            |state| async move {
                let (app, opts, hooks) = match state? {
                    Iter::Fail(e) => return Some((Err(e), None)),
                    Iter::Start(app, opts) => {
                        match RunHooks::begin(app.info.info(), &app.hooks, &app.state) {
                            Ok(hooks) => (app, opts, hooks),
                            Err(e) => return Some((Err(e), None)),
                        }
                    }
                    Iter::Running(app, opts, hooks) => (app, opts, hooks),
                };
                match app.advance(&opts).await {
                    Ok(Advance::Continue(record)) => {
                        Some((Ok(record), Some(Iter::Running(app, opts, hooks))))
                    }
                    Ok(Advance::Halt { step, outcome }) => match (step, hooks.end(Ok(outcome))) {
                        (Some(record), Ok(_)) => Some((Ok(record), None)),
                        (Some(record), Err(e)) => Some((Ok(record), Some(Iter::Fail(e)))),
                        (None, Ok(_)) => None,
                        (None, Err(e)) => Some((Err(e), None)),
                    },
                    Err(e) => hooks.end(Err(e)).err().map(|e| (Err(e), None)),
                }
            },
        ))
    }

    /// Run to the halt action and stream its intermediate outputs.
    ///
    /// Steps before the halt action run to completion first (their outputs
    /// go to the hooks and the application's sink, not to this stream). The
    /// halt action is the next action in `halt_after`; if the run halts
    /// before reaching one (a `halt_before` or the graph's end), the stream
    /// is empty and [`StreamResult::get`] gives that outcome. Consuming the
    /// stream drives the action; [`StreamResult::get`] then gives the final
    /// result and state. Dropping the `StreamResult` early abandons the halt
    /// step: there is no final result and the state does not advance.
    ///
    /// The hooks are told as for [`run`](Self::run): `before_run` now, and
    /// `after_run` once when the run ends, or with
    /// [`ApplicationError::Abandoned`] when the `StreamResult` is dropped
    /// before its halt step ended.
    ///
    /// # Errors
    ///
    /// [`ApplicationError::UnknownHaltAction`] before anything runs, and a
    /// `before_run` hook's panic; the errors of the steps before the halt
    /// action come from [`StreamResult::get`].
    ///
    /// # Cancel safety
    ///
    /// As [`run`](Self::run).
    pub async fn stream_result(
        &mut self,
        opts: RunOptions,
    ) -> Result<StreamResult<'_>, ApplicationError> {
        self.check_halts(&opts)?;
        let hooks = RunHooks::begin(self.info.info(), &self.hooks, &self.state)?;
        // Step until the next action is the one to stream, or the run
        // halts on its way there.
        loop {
            let Some(next) = self.next_action() else {
                let outcome = hooks.end(Ok(self.nothing_to_run()));
                return Ok(StreamResult::done(Arc::clone(self.info.info()), outcome));
            };
            if opts.halts_after(next) {
                break;
            }
            match self.advance(&opts).await {
                Ok(Advance::Continue(_)) => {}
                Ok(Advance::Halt { outcome, .. }) => {
                    return Ok(StreamResult::done(
                        Arc::clone(self.info.info()),
                        hooks.end(Ok(outcome)),
                    ));
                }
                Err(e) => {
                    return Ok(StreamResult::done(
                        Arc::clone(self.info.info()),
                        hooks.end(Err(e)),
                    ));
                }
            }
        }
        let (sink, rx) = stream::channel();
        let info = Arc::clone(self.info.info());
        let step = Box::pin(async move {
            // The halt action is in `halt_after`: this step ends the run.
            match self.advance_with(&opts, Some(sink)).await? {
                Advance::Halt { outcome, .. } => Ok(outcome),
                Advance::Continue(record) => Ok(RunOutcome {
                    action: Some(record.action.to_string()),
                    result: Some(record.result),
                    state: record.state,
                    reason: HaltReason::HaltAfter,
                }),
            }
        });
        Ok(StreamResult::live(info, rx, step, hooks))
    }
}

/// Save the checkpoint of step `seq`.
async fn save_checkpoint(
    persister: &dyn Persister,
    info: &AppInfo,
    seq: u64,
    action: &str,
    status: StepStatus,
    state: State,
    result: Option<Value>,
) -> Result<(), ApplicationError> {
    let mut checkpoint = Checkpoint::new(info.app_id.clone(), seq, action, status, state);
    checkpoint.partition_key = info.partition_key.clone();
    checkpoint.result = result;
    persister
        .save(&checkpoint)
        .await
        .map_err(|source| ApplicationError::Persist {
            sequence_id: seq,
            action: action.to_owned(),
            source,
        })
}

/// Record a failed step on its span (the current one) and log it.
fn record_failure(error: &ApplicationError) {
    let span = tracing::Span::current();
    span.record("outcome", "failed");
    span.record("error_kind", error.kind());
    tracing::warn!(error_kind = error.kind(), error = %error, "step failed");
}

/// A step's place: the action's index, the sequence id, the action's
/// name, and whether its span is traced.
struct StepCall {
    index: usize,
    seq: u64,
    name: Arc<str>,
    traced: bool,
}

/// A step's outcome: the action's result, the new state and the next
/// action, or why the step failed.
type StepResult = Result<(Value, State, Option<usize>), ActionError>;

/// An action's future.
type ActionFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = crate::action::ActionResult> + Send + 'a>>;

/// What the step hooks are told about a step.
struct StepHooks {
    app: Arc<AppInfo>,
    hooks: HookList,
    action: Arc<str>,
    seq: u64,
    state: State,
    inputs: Inputs,
    shared: Arc<StepShared>,
    /// Where the action's context puts an `on_stream_item` hook's panic.
    hook_panic: HookPanicSlot,
}

impl StepHooks {
    fn info(&self) -> StepInfo<'_> {
        StepInfo {
            app: &self.app,
            sequence_id: self.seq,
            action: &self.action,
            state: &self.state,
            inputs: &self.inputs,
        }
    }
}

/// Reports a step dropped before it ended (while armed) as abandoned: on
/// its span and to its hooks.
struct StepGuard {
    hooks: Option<Box<StepHooks>>,
    armed: bool,
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // The step's future is dropped inside its span.
        tracing::Span::current().record("outcome", "abandoned");
        tracing::debug!("step abandoned");
        self.abandon_hooks();
    }
}

impl StepGuard {
    /// Tell the hooks the step was abandoned.
    fn abandon_hooks(&self) {
        if let Some(hooks) = &self.hooks {
            let outcome = StepOutcome::Abandoned {
                items: hooks.shared.emitted.load(Ordering::Relaxed),
            };
            let info = hooks.info();
            // Nobody is left to hand a panic to: `call_hooks` logs it, and
            // catching it keeps a drop during unwinding from aborting.
            let _ = call_hooks(&hooks.hooks, HookMethod::AfterStep, |hook| {
                hook.after_step(&info, &outcome)
            });
        }
    }
}

/// Check an action's result and new state against its declarations.
fn validate(
    action: &str,
    writes: &[String],
    before: &State,
    result: &Value,
    after: &State,
) -> Result<(), ActionError> {
    if !result.is_object() {
        return Err(ActionError::result_not_object(action, result));
    }
    before.try_for_each_changed(after, |key| {
        if key.starts_with(RESERVED_PREFIX) {
            return Err(ActionError::ReservedKey {
                action: action.to_owned(),
                key: key.to_owned(),
            });
        }
        if !writes.iter().any(|w| w == key) {
            return Err(ActionError::UndeclaredWrite {
                action: action.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(())
    })?;
    if let Some(key) = writes.iter().find(|w| !after.contains_key(w)) {
        return Err(ActionError::MissingWrite {
            action: action.to_owned(),
            key: key.clone(),
        });
    }
    Ok(())
}
