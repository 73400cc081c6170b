//! Lifecycle hooks: observe runs, steps and stream items.
//!
//! A [`Hook`] is called synchronously on the task that runs the application,
//! so it must be quick: a hook that does I/O hands the record to a channel or
//! a writer thread (the SQLite tracker does). Every method has an empty
//! default; implement the ones you need.
//!
//! Every `before_run` is paired with exactly one `after_run`, whether the
//! run is driven by [`Application::run`](crate::Application::run),
//! [`iterate`](crate::Application::iterate) or
//! [`stream_result`](crate::Application::stream_result); a run dropped
//! before it ends reports [`ApplicationError::Abandoned`].
//!
//! A hook that panics does not unwind through the application: every hook
//! method is called with its panics caught ([`call_hooks`]), the other hooks
//! are still called, and the application returns a typed error naming the
//! method ([`HookPanic`]).
//!
//! # Examples
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use tributary_core::{Hook, StepInfo, StepOutcome};
//!
//! #[derive(Debug, Default)]
//! struct CountSteps(AtomicUsize);
//!
//! impl Hook for CountSteps {
//!     fn after_step(&self, _step: &StepInfo<'_>, _outcome: &StepOutcome<'_>) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//! ```

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use serde_json::Value;

use crate::error::{ActionError, ApplicationError, HookMethod, HookPanic, panic_message};
use crate::identity::AppInfo;
use crate::inputs::Inputs;
use crate::outcome::RunOutcome;
use crate::state::State;

/// Observes an application's lifecycle. Hooks are also how a tracker
/// records runs.
#[allow(unused_variables)]
pub trait Hook: Send + Sync + 'static {
    /// An application was built (fresh, resumed or forked).
    fn on_create(&self, app: &AppInfo, state: &State) {}

    /// `run`, `iterate` (on its first poll) or `stream_result` starts.
    fn before_run(&self, app: &AppInfo, state: &State) {}

    /// `run`, `iterate` or `stream_result` ended: called exactly once after
    /// every `before_run`, with [`ApplicationError::Abandoned`] when the run
    /// was dropped before it ended.
    fn after_run(&self, app: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {}

    /// A step is about to run its action.
    fn before_step(&self, step: &StepInfo<'_>) {}

    /// A step ended.
    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {}

    /// An action emitted an intermediate output.
    fn on_stream_item(&self, item: &StreamItemInfo<'_>, value: &Value) {}

    /// A running step paused from inside its action and waits to be
    /// resumed (a durable step out of retries with `pause_on_exhausted`;
    /// see [`ActionContext::report_paused`](crate::ActionContext::report_paused)).
    fn on_step_paused(&self, pause: &StepPause<'_>) {}

    /// A step that paused from inside its action was resumed and goes on.
    fn on_step_resumed(&self, pause: &StepPause<'_>) {}

    /// The runtime spawned a task running this application.
    fn on_task_spawn(&self, app: &AppInfo, task_key: &str) {}

    /// A task of the runtime ended.
    fn on_task_complete(&self, app: &AppInfo, task_key: &str, end: &TaskEnd<'_>) {}
}

/// How a runtime task ended, as its hooks are told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TaskEnd<'a> {
    /// It reached its halt point.
    Completed,
    /// It failed; the error.
    Failed(&'a str),
    /// It was cancelled; the reason.
    Cancelled(&'a str),
}

impl std::fmt::Debug for dyn Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hook")
    }
}

/// The hooks of an application, shared by its steps and contexts.
pub(crate) type HookList = Arc<[Arc<dyn Hook>]>;

/// Call `f` on every hook, catching panics: every hook is called even when
/// an earlier one panics, and the first panic is returned as a
/// [`HookPanic`] naming `method`.
///
/// The application calls its hooks through this; a runtime calls
/// `on_task_spawn` and `on_task_complete` through it too, so that a
/// panicking hook becomes the task's failure instead of unwinding through
/// (or aborting) the runtime.
///
/// # Errors
///
/// The first hook's panic, as a [`HookPanic`].
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use std::sync::Arc;
/// use serde_json::json;
/// use tributary_core::{action, call_hooks, AppInfo, Application, Graph, Hook, HookMethod, TaskEnd};
///
/// struct Faulty;
/// impl Hook for Faulty {
///     fn on_task_complete(&self, _: &AppInfo, key: &str, _: &TaskEnd<'_>) {
///         panic!("cannot record {key}");
///     }
/// }
/// struct Quiet;
/// impl Hook for Quiet {}
///
/// let graph = Graph::single(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }));
/// let app = Application::builder(graph).build().await?;
/// let hooks: Vec<Arc<dyn Hook>> = vec![Arc::new(Quiet), Arc::new(Faulty)];
/// let result = call_hooks(&hooks, HookMethod::OnTaskComplete, |hook| {
///     hook.on_task_complete(app.info(), "t-1", &TaskEnd::Completed)
/// });
/// let panic = result.unwrap_err();
/// assert_eq!(panic.method, HookMethod::OnTaskComplete);
/// assert_eq!(panic.message, "cannot record t-1");
/// # Ok(())
/// # }
/// ```
pub fn call_hooks<F>(hooks: &[Arc<dyn Hook>], method: HookMethod, mut f: F) -> Result<(), HookPanic>
where
    F: FnMut(&dyn Hook),
{
    let mut first = None;
    for hook in hooks {
        if let Err(payload) = std::panic::catch_unwind(AssertUnwindSafe(|| f(hook.as_ref()))) {
            let panic = HookPanic {
                method,
                message: panic_message(payload),
            };
            tracing::error!(hook_method = %method, message = %panic.message, "a hook panicked");
            first.get_or_insert(panic);
        }
    }
    match first {
        None => Ok(()),
        Some(panic) => Err(panic),
    }
}

/// The step a hook is told about.
#[derive(Debug)]
#[non_exhaustive]
pub struct StepInfo<'a> {
    /// The application.
    pub app: &'a AppInfo,
    /// The step's sequence id.
    pub sequence_id: u64,
    /// The action of the step.
    pub action: &'a str,
    /// The state before the step.
    pub state: &'a State,
    /// The inputs given to the step (already filtered to the action's
    /// declared inputs).
    pub inputs: &'a Inputs,
}

/// How a step ended.
#[derive(Debug)]
#[non_exhaustive]
pub enum StepOutcome<'a> {
    /// The action ran, its state change passed validation and was kept.
    Completed {
        /// The action's result.
        result: &'a Value,
        /// The state after the step.
        state: &'a State,
        /// How many intermediate outputs the step emitted.
        items: u64,
    },
    /// The action failed; the state is unchanged.
    Failed {
        /// Why.
        error: &'a ActionError,
        /// How many intermediate outputs the step emitted before failing.
        items: u64,
    },
    /// The step's future was dropped before it finished (a consumer stopped
    /// reading a stream early, or the run was cancelled); the state is
    /// unchanged.
    Abandoned {
        /// How many intermediate outputs the step emitted before that.
        items: u64,
    },
}

/// A step paused from inside its action, as hooks are told: what waits
/// and why.
#[derive(Debug)]
#[non_exhaustive]
pub struct StepPause<'a> {
    /// The application.
    pub app: &'a AppInfo,
    /// The step's sequence id.
    pub sequence_id: u64,
    /// The step's action.
    pub action: &'a str,
    /// What waits inside the action (the durable step out of retries,
    /// `charge#0`).
    pub waiting: &'a str,
    /// Why it waits (that step's last error).
    pub reason: &'a str,
}

/// The intermediate output a hook is told about.
#[derive(Debug)]
#[non_exhaustive]
pub struct StreamItemInfo<'a> {
    /// The application.
    pub app: &'a AppInfo,
    /// The step's sequence id.
    pub sequence_id: u64,
    /// The action that emitted.
    pub action: &'a str,
    /// The output's index within the step, from 0.
    pub index: u64,
}
