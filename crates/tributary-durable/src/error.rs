//! Errors of durable steps and workflows.

use std::time::Duration;

use tributary_core::BoxError;

use crate::store::{EntryKind, StepKey};

/// A journal store failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// The backend failed (I/O, a database error).
    #[error("journal store failed: {0}")]
    Backend(#[source] BoxError),
    /// A stored entry or record could not be decoded.
    #[error("journal entry of {app_id} at sequence {sequence_id} is corrupt: {reason}")]
    Corrupt {
        /// The application or workflow id.
        app_id: String,
        /// The sequence id.
        sequence_id: u64,
        /// What was wrong.
        reason: String,
    },
}

impl JournalError {
    /// Wrap a backend's error.
    pub fn backend(e: impl Into<BoxError>) -> Self {
        JournalError::Backend(e.into())
    }
}

/// A durable step (or sleep, or compensation) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DurableError {
    /// Replay found another step than the journal holds at this position:
    /// the action's code changed, or it depends on something other than
    /// its state, inputs and journaled results.
    #[error(
        "non-determinism in {app_id} at sequence {sequence_id}, step {position}: the journal has {expected_kind} {expected}, the code ran {found_kind} {found}"
    )]
    NonDeterminism {
        /// The application or workflow id.
        app_id: String,
        /// The sequence id.
        sequence_id: u64,
        /// The position of the step in the attempt.
        position: u32,
        /// The step the journal holds there.
        expected: StepKey,
        /// Its kind.
        expected_kind: EntryKind,
        /// The step the code asked for.
        found: StepKey,
        /// Its kind.
        found_kind: EntryKind,
    },
    /// The step's body failed, and its policy gave up (or the error was
    /// terminal).
    #[error("step {step} failed after {attempts} attempt(s): {source}")]
    StepFailed {
        /// The step.
        step: StepKey,
        /// How many times the body ran in this attempt.
        attempts: u32,
        /// The last error.
        #[source]
        source: BoxError,
    },
    /// The step failed terminally, and the compensations registered before
    /// it ran, in reverse order (the failure is journaled: a re-run replays
    /// it).
    #[error("step {step} failed and {compensated} compensation(s) ran: {error}")]
    Compensated {
        /// The step that failed.
        step: StepKey,
        /// Its error message.
        error: String,
        /// How many compensations ran.
        compensated: usize,
    },
    /// A compensation itself failed; the ones after it in the undo order
    /// did not run (a re-run of the action retries from this one).
    #[error("compensation {compensation} failed while undoing after {step}: {source}")]
    CompensationFailed {
        /// The step whose failure started the compensation.
        step: StepKey,
        /// The compensation that failed.
        compensation: StepKey,
        /// Its error.
        #[source]
        source: BoxError,
    },
    /// The step's attempt ran longer than its policy's timeout.
    #[error("step {step} timed out after {after:?}")]
    TimedOut {
        /// The step.
        step: StepKey,
        /// The timeout.
        after: Duration,
    },
    /// A journaled value could not be turned back into the step's type, or
    /// a step's value could not be encoded.
    #[error("value of step {step} does not fit its type: {source}")]
    Value {
        /// The step.
        step: StepKey,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The action has no journal: build the application with
    /// `.journal(&journal)` ([`WithJournal`](crate::WithJournal)), which
    /// attaches it as an extension and as a hook.
    #[error("no journal attached to application {app_id} (build it with `.journal(&journal)`)")]
    NoJournal {
        /// The application.
        app_id: String,
    },
    /// An event could not be sent: its value does not serialise, or the
    /// task it is addressed to is unknown or has not started yet.
    #[error("event `{name}` not sent: {reason}")]
    Event {
        /// The event's name.
        name: String,
        /// Why.
        reason: String,
    },
    /// The journal store failed.
    #[error(transparent)]
    Store(#[from] JournalError),
}

/// Wrap an error to make it terminal: a step never retries it, whatever its
/// policy says.
///
/// # Examples
///
/// ```
/// use tributary_core::BoxError;
/// use tributary_durable::Terminal;
///
/// let e: BoxError = Terminal::new("card declined").into();
/// assert!(Terminal::is_terminal(&e));
/// assert_eq!(e.to_string(), "card declined");
/// ```
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Terminal(#[source] pub BoxError);

impl Terminal {
    /// Make `error` terminal.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Terminal(error.into())
    }

    /// Whether `error` is a [`Terminal`] (directly, or as a step failure
    /// whose source is one).
    pub fn is_terminal(error: &BoxError) -> bool {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = current {
            if e.is::<Terminal>() {
                return true;
            }
            current = e.source();
        }
        false
    }
}

/// A workflow could not be started, resumed or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkflowError {
    /// No workflow function is registered under this name.
    #[error("no workflow function is registered as {0}")]
    UnknownFunction(String),
    /// No workflow has this id.
    #[error("no workflow has id {0}")]
    UnknownId(String),
    /// The id belongs to a workflow of another function.
    #[error("workflow {workflow_id} runs {existing}, not {requested}")]
    OtherFunction {
        /// The id.
        workflow_id: String,
        /// The function it was started with.
        existing: String,
        /// The function asked for now.
        requested: String,
    },
    /// The workflow was cancelled; it is never resumed.
    #[error("workflow {0} was cancelled")]
    Cancelled(String),
    /// A fork was asked to a workflow id that is taken (a fork starts a
    /// new workflow).
    #[error("workflow {0} exists; a fork needs a new workflow id")]
    IdTaken(String),
    /// A fork was asked from a step the source workflow has not journaled.
    #[error(
        "workflow {workflow_id} has journaled {journaled} step(s); cannot fork after step {requested}"
    )]
    ForkPoint {
        /// The source workflow.
        workflow_id: String,
        /// How many steps the fork was to keep.
        requested: u32,
        /// How many steps the source has journaled.
        journaled: usize,
    },
    /// The workflow's function returned an error.
    #[error("workflow {workflow_id} failed: {error}")]
    Failed {
        /// The id.
        workflow_id: String,
        /// The error's message.
        error: String,
    },
    /// The input or output does not fit the function's types.
    #[error("value of workflow {workflow_id} does not fit its type: {source}")]
    Value {
        /// The id.
        workflow_id: String,
        /// The serde error.
        #[source]
        source: serde_json::Error,
    },
    /// The task running the workflow stopped without an outcome (it
    /// panicked, or the engine was dropped).
    #[error("workflow {0} stopped without an outcome")]
    Lost(String),
    /// The journal store failed.
    #[error(transparent)]
    Store(#[from] JournalError),
}
