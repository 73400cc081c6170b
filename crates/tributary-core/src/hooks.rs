//! Lifecycle hooks: observe runs, steps and stream items.
//!
//! A [`Hook`] is called synchronously on the task that runs the application,
//! so it must be quick: a hook that does I/O hands the record to a channel or
//! a writer thread (the SQLite tracker does). Every method has an empty
//! default; implement the ones you need.
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

use std::sync::Arc;

use serde_json::Value;

use crate::error::{ActionError, ApplicationError};
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

    /// `run`, `iterate` or `stream_result` starts.
    fn before_run(&self, app: &AppInfo, state: &State) {}

    /// `run`, `iterate` or `stream_result` ended.
    fn after_run(&self, app: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {}

    /// A step is about to run its action.
    fn before_step(&self, step: &StepInfo<'_>) {}

    /// A step ended.
    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {}

    /// An action emitted an intermediate output.
    fn on_stream_item(&self, item: &StreamItemInfo<'_>, value: &Value) {}

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
