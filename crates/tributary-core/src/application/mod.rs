//! Applications: a graph, a state and a position, run step by step.
//!
//! An [`Application`] runs its graph one action at a time. Each
//! [`step`](Application::step) runs the next action, validates its writes,
//! picks the next action by the transitions, saves a checkpoint when a
//! persister is set, and fires the hooks. [`run`](Application::run) steps
//! until a halt condition, [`iterate`](Application::iterate) yields each step
//! as a `Stream`, and [`stream_result`](Application::stream_result) streams the
//! intermediate outputs of the halt action.
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
mod stream;

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::FutureExt;
use futures_util::stream::BoxStream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tracing::Instrument;

use crate::action::{ActionContext, Extensions, Inputs, ParentPointer, StreamSink};
use crate::error::{ActionError, ApplicationError};
use crate::graph::Graph;
use crate::hooks::{HookList, StepInfo, StepOutcome};
use crate::persistence::{Checkpoint, Persister, StepStatus};
use crate::state::{RESERVED_PREFIX, State};

pub use builder::ApplicationBuilder;
pub use stream::StreamResult;

/// Who an application is: its id, partition key and parent pointers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct AppInfo {
    /// The application's id.
    pub app_id: String,
    /// Its partition key (a user or tenant id, for listing).
    pub partition_key: Option<String>,
    /// The application it was forked from.
    pub parent: Option<ParentPointer>,
    /// The application (and step) that spawned it.
    pub spawning_parent: Option<ParentPointer>,
}

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
}

/// Why a run stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HaltReason {
    /// The action just run is in `halt_after`.
    HaltAfter,
    /// The next action is in `halt_before`; it did not run.
    HaltBefore,
    /// No transition holds (or there was nothing left to run).
    GraphEnd,
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct RunOutcome {
    /// The action the run halted at: the last action run, or for
    /// [`HaltReason::HaltBefore`] the action it halted before. `None` when
    /// there was nothing to run.
    pub action: Option<String>,
    /// The result of the last action run; `None` for `HaltBefore` and when
    /// nothing ran.
    pub result: Option<Value>,
    /// The state at the end.
    pub state: State,
    /// Why the run stopped.
    pub reason: HaltReason,
}

/// One completed step.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct StepRecord {
    /// Its sequence id.
    pub sequence_id: u64,
    /// Its action.
    pub action: Arc<str>,
    /// The action's result.
    pub result: Value,
    /// The state after the step.
    pub state: State,
    /// How many intermediate outputs it emitted.
    pub items: u64,
}

/// A graph, a state and a position, run one action at a time.
///
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
    info: Arc<AppInfo>,
    state: State,
    next_seq: u64,
    last_seq: Option<u64>,
    next_action: Option<usize>,
    hooks: HookList,
    persister: Option<Arc<dyn Persister>>,
    sink: Option<Arc<dyn StreamSink>>,
    extensions: Arc<Extensions>,
    /// The checkpoint this application was resumed or forked from.
    resumed: Option<Arc<Checkpoint>>,
}

impl std::fmt::Debug for Application {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Application")
            .field("app_id", &self.info.app_id)
            .field("next_action", &self.next_action())
            .field("sequence_id", &self.last_seq)
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Application {
    /// Start building an application of `graph`.
    pub fn builder(graph: Graph) -> ApplicationBuilder {
        ApplicationBuilder::new(graph)
    }

    /// The application's id.
    pub fn app_id(&self) -> &str {
        &self.info.app_id
    }

    /// The application's partition key.
    pub fn partition_key(&self) -> Option<&str> {
        self.info.partition_key.as_deref()
    }

    /// The application's identity and parent pointers.
    pub fn info(&self) -> &Arc<AppInfo> {
        &self.info
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
            &self.info,
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
    /// Returns `Ok(None)` when no action is left. On error the state is as
    /// it was before the step and the same action is next again.
    ///
    /// # Errors
    ///
    /// [`ApplicationError::Step`] when the action fails, panics or breaks its
    /// declarations; [`ApplicationError::Persist`] when its checkpoint cannot
    /// be saved.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe in the sense that dropping the future leaves the
    /// application at the state before the step (the step is abandoned and
    /// the hooks are told); the action's own side effects are not undone.
    pub async fn step(&mut self, inputs: &Inputs) -> Result<Option<StepRecord>, ApplicationError> {
        self.step_with(inputs, None).await
    }

    pub(crate) async fn step_with(
        &mut self,
        inputs: &Inputs,
        sink_override: Option<Arc<dyn StreamSink>>,
    ) -> Result<Option<StepRecord>, ApplicationError> {
        let Some(index) = self.next_action else {
            return Ok(None);
        };
        let action = Arc::clone(self.graph.action_at(index));
        let name: Arc<str> = Arc::clone(self.graph.name_at(index));
        let seq = self.next_seq;
        self.last_seq = Some(seq);
        let span = tracing::info_span!(
            "tributary.step",
            app_id = %self.info.app_id,
            action = %name,
            sequence_id = seq
        );
        async move {
            let emitted = Arc::new(AtomicU64::new(0));
            let selected = inputs.select(&name, action.inputs());
            let guard = (!self.hooks.is_empty()).then(|| {
                let step_inputs = selected.as_ref().cloned().unwrap_or_default();
                // Boxed: applications without hooks (the common case for
                // runtime tasks) keep no room for it in the step's future.
                let guard = Box::new(AbandonGuard {
                    app: Arc::clone(&self.info),
                    hooks: Arc::clone(&self.hooks),
                    action: Arc::clone(&name),
                    seq,
                    state: self.state.clone(),
                    inputs: step_inputs,
                    emitted: Arc::clone(&emitted),
                    armed: true,
                });
                let info = guard.info();
                for hook in self.hooks.iter() {
                    hook.before_step(&info);
                }
                guard
            });

            let outcome = match selected {
                Err(e) => Err(e),
                Ok(step_inputs) => {
                    let ctx = ActionContext {
                        app: Arc::clone(&self.info),
                        sequence_id: seq,
                        action: Arc::clone(&name),
                        sink: sink_override.or_else(|| self.sink.clone()),
                        hooks: Arc::clone(&self.hooks),
                        emitted: Arc::clone(&emitted),
                        extensions: Arc::clone(&self.extensions),
                        persister: self.persister.clone(),
                    };
                    let run = action.run(self.state.clone(), step_inputs, ctx);
                    match AssertUnwindSafe(run).catch_unwind().await {
                        Err(payload) => Err(ActionError::panicked(&name, payload)),
                        Ok(Err(source)) => Err(ActionError::Failed {
                            action: name.to_string(),
                            source,
                        }),
                        Ok(Ok((result, state))) => {
                            validate(&name, action.writes(), &self.state, &result, &state)
                                .and_then(|()| self.graph.next(index, &state))
                                .map(|next| (result, state, next))
                        }
                    }
                }
            };

            if let Some(persister) = &self.persister {
                let (status, state, result) = match &outcome {
                    Ok((result, state, _)) => {
                        (StepStatus::Completed, state.clone(), Some(result.clone()))
                    }
                    Err(_) => (StepStatus::Failed, self.state.clone(), None),
                };
                // Boxed: the checkpoint would otherwise take room in every
                // step's future, with or without a persister.
                let saved = Box::pin(save_checkpoint(
                    persister.as_ref(),
                    &self.info,
                    seq,
                    &name,
                    status,
                    state,
                    result,
                ))
                .await;
                // On error the guard reports the step as abandoned: nothing
                // was kept.
                saved?;
            }

            let items = emitted.load(Ordering::Relaxed);
            if let Some(mut guard) = guard {
                guard.armed = false;
                let info = guard.info();
                let hook_outcome = match &outcome {
                    Ok((result, state, _)) => StepOutcome::Completed {
                        result,
                        state,
                        items,
                    },
                    Err(error) => StepOutcome::Failed { error, items },
                };
                for hook in self.hooks.iter() {
                    hook.after_step(&info, &hook_outcome);
                }
            }
            match outcome {
                Ok((result, state, next)) => {
                    self.state = state.clone();
                    self.next_action = next;
                    self.next_seq = seq + 1;
                    Ok(Some(StepRecord {
                        sequence_id: seq,
                        action: name,
                        result,
                        state,
                        items,
                    }))
                }
                Err(source) => Err(ApplicationError::Step {
                    sequence_id: seq,
                    source,
                }),
            }
        }
        .instrument(span)
        .await
    }

    fn check_halts(&self, opts: &RunOptions) -> Result<(), ApplicationError> {
        match opts.unknown_action(&self.graph) {
            Some(unknown) => Err(ApplicationError::UnknownHaltAction(unknown.to_owned())),
            None => Ok(()),
        }
    }

    /// After `record`, whether the run halts, and how.
    fn halt_check(&self, opts: &RunOptions, record: &StepRecord) -> Option<RunOutcome> {
        let outcome = |action: &str, result: Option<&Value>, reason| RunOutcome {
            action: Some(action.to_owned()),
            result: result.cloned(),
            state: self.state.clone(),
            reason,
        };
        match self.next_action() {
            Some(next) if opts.halts_before(next) => {
                Some(outcome(next, None, HaltReason::HaltBefore))
            }
            _ if opts.halts_after(&record.action) => Some(outcome(
                &record.action,
                Some(&record.result),
                HaltReason::HaltAfter,
            )),
            None => Some(outcome(
                &record.action,
                Some(&record.result),
                HaltReason::GraphEnd,
            )),
            Some(_) => None,
        }
    }

    fn nothing_ran(&self, last: Option<StepRecord>) -> RunOutcome {
        RunOutcome {
            action: last.as_ref().map(|r| r.action.to_string()),
            result: last.map(|r| r.result),
            state: self.state.clone(),
            reason: HaltReason::GraphEnd,
        }
    }

    /// Step until a halt condition holds or the graph ends.
    ///
    /// # Errors
    ///
    /// [`ApplicationError::UnknownHaltAction`] before anything runs when a
    /// halt list names an unknown action; otherwise the first failing step's
    /// error (the state is as it was before that step).
    ///
    /// # Cancel safety
    ///
    /// Dropping the future stops the run between or inside a step; the
    /// application keeps every completed step and abandons the current one.
    pub async fn run(&mut self, opts: RunOptions) -> Result<RunOutcome, ApplicationError> {
        self.check_halts(&opts)?;
        for hook in self.hooks.iter() {
            hook.before_run(&self.info, &self.state);
        }
        let span = tracing::info_span!("tributary.run", app_id = %self.info.app_id);
        let result = async {
            let mut last = None;
            loop {
                match self.step(&opts.inputs).await? {
                    None => return Ok(self.nothing_ran(last)),
                    Some(record) => {
                        if let Some(outcome) = self.halt_check(&opts, &record) {
                            return Ok(outcome);
                        }
                        last = Some(record);
                    }
                }
            }
        }
        .instrument(span)
        .await;
        for hook in self.hooks.iter() {
            hook.after_run(&self.info, result.as_ref());
        }
        result
    }

    /// The steps of a run as a `Stream`, ending after the step at which
    /// [`run`](Self::run) would halt, or after the first error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the stream between items loses nothing; dropping it while a
    /// step runs abandons that step (the state stays as before it).
    pub fn iterate(
        &mut self,
        opts: RunOptions,
    ) -> BoxStream<'_, Result<StepRecord, ApplicationError>> {
        let start = match self.check_halts(&opts) {
            Ok(()) => Ok((self, opts)),
            Err(e) => Err(e),
        };
        Box::pin(futures_util::stream::unfold(
            Some(start),
            |next| async move {
                match next? {
                    Err(e) => Some((Err(e), None)),
                    Ok((app, opts)) => match app.step(&opts.inputs).await {
                        Err(e) => Some((Err(e), None)),
                        Ok(None) => None,
                        Ok(Some(record)) => {
                            let more = app.halt_check(&opts, &record).is_none();
                            Some((Ok(record), more.then_some(Ok((app, opts)))))
                        }
                    },
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
    /// # Errors
    ///
    /// As [`run`](Self::run), for the steps before the halt action.
    ///
    /// # Cancel safety
    ///
    /// As [`run`](Self::run).
    pub async fn stream_result(
        &mut self,
        opts: RunOptions,
    ) -> Result<StreamResult<'_>, ApplicationError> {
        self.check_halts(&opts)?;
        for hook in self.hooks.iter() {
            hook.before_run(&self.info, &self.state);
        }
        let mut last: Option<StepRecord> = None;
        loop {
            let Some(next) = self.next_action() else {
                let outcome = self.nothing_ran(last);
                return Ok(StreamResult::done(self, Ok(outcome)));
            };
            if opts.halts_after(next) {
                break;
            }
            if last.is_some() && opts.halts_before(next) {
                let outcome = RunOutcome {
                    action: Some(next.to_owned()),
                    result: None,
                    state: self.state.clone(),
                    reason: HaltReason::HaltBefore,
                };
                return Ok(StreamResult::done(self, Ok(outcome)));
            }
            match self.step(&opts.inputs).await {
                Ok(record) => last = record,
                Err(e) => return Ok(StreamResult::done(self, Err(e))),
            }
        }
        Ok(StreamResult::live(self, opts))
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

/// Tells the hooks a step was abandoned if it is dropped while armed.
struct AbandonGuard {
    app: Arc<AppInfo>,
    hooks: HookList,
    action: Arc<str>,
    seq: u64,
    state: State,
    inputs: Inputs,
    emitted: Arc<AtomicU64>,
    armed: bool,
}

impl AbandonGuard {
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

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            let outcome = StepOutcome::Abandoned {
                items: self.emitted.load(Ordering::Relaxed),
            };
            let info = self.info();
            for hook in self.hooks.iter() {
                hook.after_step(&info, &outcome);
            }
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
    for key in before.changed_keys(after) {
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
    }
    if let Some(key) = writes.iter().find(|w| !after.contains_key(w)) {
        return Err(ActionError::MissingWrite {
            action: action.to_owned(),
            key: key.clone(),
        });
    }
    Ok(())
}
