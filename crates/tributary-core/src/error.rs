//! Errors of the core: actions, graphs, applications and persistence.

use std::any::Any;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::state::json_type;

/// A boxed error from user code (an action, a condition, a persister backend).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why an action's step failed. Every variant names the action.
///
/// When a step fails the application's state is left exactly as it was
/// before the step.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ActionError {
    /// The action changed a key it did not declare in its writes.
    #[error("action `{action}` wrote key `{key}`, which it does not declare in its writes")]
    UndeclaredWrite {
        /// The action.
        action: String,
        /// The key.
        key: String,
    },
    /// A key the action declares in its writes is absent afterwards.
    #[error("action `{action}` declares a write of key `{key}` but the key is missing afterwards")]
    MissingWrite {
        /// The action.
        action: String,
        /// The key.
        key: String,
    },
    /// The action wrote a key beginning with `__`, reserved for the runtime.
    #[error(
        "action `{action}` wrote reserved key `{key}` (keys beginning `__` belong to the runtime)"
    )]
    ReservedKey {
        /// The action.
        action: String,
        /// The key.
        key: String,
    },
    /// The action's result was not a JSON object.
    #[error("action `{action}` returned {found} as its result; a result must be a JSON object")]
    ResultNotObject {
        /// The action.
        action: String,
        /// The JSON type it returned.
        found: &'static str,
    },
    /// A required input was not supplied.
    #[error("action `{action}` requires input `{input}`, which was not given")]
    MissingInput {
        /// The action.
        action: String,
        /// The input.
        input: String,
    },
    /// A transition condition out of the action needs a key the state lacks.
    #[error(
        "transition condition `{condition}` out of action `{action}` reads key `{key}`, which the state lacks"
    )]
    ConditionKeyMissing {
        /// The action the transition leaves.
        action: String,
        /// The condition, as displayed.
        condition: String,
        /// The missing key.
        key: String,
    },
    /// The action's own code returned an error.
    #[error("action `{action}` failed: {source}")]
    Failed {
        /// The action.
        action: String,
        /// The error it returned.
        #[source]
        source: BoxError,
    },
    /// The action panicked. The panic was caught: the application is intact.
    #[error("action `{action}` panicked: {message}")]
    Panicked {
        /// The action.
        action: String,
        /// The panic payload, when it was a string.
        message: String,
    },
    /// A hook panicked in `before_step` or `on_stream_item` while this
    /// action's step ran. The panic was caught and the step failed: the
    /// state is as it was before the step.
    #[error("a hook panicked during the step of action `{action}`: {panic}")]
    HookPanicked {
        /// The action.
        action: String,
        /// Which hook method panicked, and the panic message.
        #[source]
        panic: HookPanic,
    },
}

impl ActionError {
    /// The name of the action that failed.
    pub fn action(&self) -> &str {
        match self {
            ActionError::UndeclaredWrite { action, .. }
            | ActionError::MissingWrite { action, .. }
            | ActionError::ReservedKey { action, .. }
            | ActionError::ResultNotObject { action, .. }
            | ActionError::MissingInput { action, .. }
            | ActionError::ConditionKeyMissing { action, .. }
            | ActionError::Failed { action, .. }
            | ActionError::Panicked { action, .. }
            | ActionError::HookPanicked { action, .. } => action,
        }
    }

    /// A short name of the kind of failure, for logs and span fields.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ActionError::UndeclaredWrite { .. } => "undeclared_write",
            ActionError::MissingWrite { .. } => "missing_write",
            ActionError::ReservedKey { .. } => "reserved_key",
            ActionError::ResultNotObject { .. } => "result_not_object",
            ActionError::MissingInput { .. } => "missing_input",
            ActionError::ConditionKeyMissing { .. } => "condition_key_missing",
            ActionError::Failed { .. } => "action_failed",
            ActionError::Panicked { .. } => "action_panicked",
            ActionError::HookPanicked { .. } => "hook_panicked",
        }
    }

    pub(crate) fn result_not_object(action: &str, value: &Value) -> Self {
        ActionError::ResultNotObject {
            action: action.to_owned(),
            found: json_type(value),
        }
    }

    pub(crate) fn panicked(action: &str, payload: Box<dyn Any + Send>) -> Self {
        ActionError::Panicked {
            action: action.to_owned(),
            message: panic_message(payload),
        }
    }
}

/// The message of a caught panic: its payload when that is a string.
pub(crate) fn panic_message(payload: Box<dyn Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A method of [`Hook`](crate::Hook), as named in a [`HookPanic`].
///
/// Displays as the method's name (`before_step`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum HookMethod {
    /// [`Hook::on_create`](crate::Hook::on_create).
    OnCreate,
    /// [`Hook::before_run`](crate::Hook::before_run).
    BeforeRun,
    /// [`Hook::after_run`](crate::Hook::after_run).
    AfterRun,
    /// [`Hook::before_step`](crate::Hook::before_step).
    BeforeStep,
    /// [`Hook::after_step`](crate::Hook::after_step).
    AfterStep,
    /// [`Hook::on_stream_item`](crate::Hook::on_stream_item).
    OnStreamItem,
    /// [`Hook::on_task_spawn`](crate::Hook::on_task_spawn).
    OnTaskSpawn,
    /// [`Hook::on_task_complete`](crate::Hook::on_task_complete).
    OnTaskComplete,
    /// [`Hook::on_step_paused`](crate::Hook::on_step_paused).
    OnStepPaused,
    /// [`Hook::on_step_resumed`](crate::Hook::on_step_resumed).
    OnStepResumed,
}

impl HookMethod {
    /// The method's name: `"before_step"`, `"on_stream_item"`, ...
    ///
    /// # Examples
    ///
    /// ```
    /// use tributary_core::HookMethod;
    ///
    /// assert_eq!(HookMethod::OnStreamItem.as_str(), "on_stream_item");
    /// assert_eq!(HookMethod::AfterRun.to_string(), "after_run");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            HookMethod::OnCreate => "on_create",
            HookMethod::BeforeRun => "before_run",
            HookMethod::AfterRun => "after_run",
            HookMethod::BeforeStep => "before_step",
            HookMethod::AfterStep => "after_step",
            HookMethod::OnStreamItem => "on_stream_item",
            HookMethod::OnTaskSpawn => "on_task_spawn",
            HookMethod::OnTaskComplete => "on_task_complete",
            HookMethod::OnStepPaused => "on_step_paused",
            HookMethod::OnStepResumed => "on_step_resumed",
        }
    }
}

impl fmt::Display for HookMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A hook panicked: which method, and the panic message.
///
/// Hooks are called with their panics caught, so a panicking hook never
/// unwinds through the application (nor aborts the process when a second
/// hook panics during cleanup); the application reports this instead.
///
/// # Examples
///
/// ```
/// use tributary_core::{HookMethod, HookPanic};
///
/// let panic = HookPanic { method: HookMethod::AfterStep, message: "disk full".into() };
/// assert_eq!(panic.to_string(), "hook method `after_step` panicked: disk full");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("hook method `{method}` panicked: {message}")]
pub struct HookPanic {
    /// The hook method that panicked.
    pub method: HookMethod,
    /// The panic's message (its payload, when that was a string).
    pub message: String,
}

/// An error that refuses a graph at build time.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GraphError {
    /// Two actions have the same name.
    #[error("two actions are named `{0}`")]
    DuplicateAction(String),
    /// A transition names an action the graph does not have.
    #[error("transition {from} -> {to} names unknown action `{unknown}`")]
    UnknownAction {
        /// The transition's source.
        from: String,
        /// The transition's target.
        to: String,
        /// The name that is not an action.
        unknown: String,
    },
    /// More than one `default` transition leaves the same action.
    #[error("action `{0}` has more than one default transition")]
    DuplicateDefault(String),
    /// No entrypoint was set.
    #[error("the graph has no entrypoint")]
    MissingEntrypoint,
    /// The entrypoint is not an action of the graph.
    #[error("entrypoint `{0}` is not an action of the graph")]
    UnknownEntrypoint(String),
    /// The graph has no actions.
    #[error("the graph has no actions")]
    Empty,
}

/// An error from a [`Persister`](crate::Persister) backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PersistError {
    /// The backend failed (I/O, connection, database).
    #[error("persister backend failed: {0}")]
    Backend(#[source] BoxError),
    /// A stored checkpoint could not be decoded.
    #[error("checkpoint of app `{app_id}` is corrupt: {reason}")]
    Corrupt {
        /// The application.
        app_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A checkpoint's state or result nests deeper than
    /// [`Checkpoint::MAX_DEPTH`](crate::Checkpoint::MAX_DEPTH) levels: it
    /// could be written but never read back, so it is refused.
    #[error(
        "checkpoint of app `{app_id}` at sequence {sequence_id}: its {part} is nested more than {limit} levels deep and cannot be stored"
    )]
    TooDeep {
        /// The application.
        app_id: String,
        /// The step's sequence id.
        sequence_id: u64,
        /// `"state"` or `"result"`.
        part: &'static str,
        /// The deepest nesting allowed.
        limit: usize,
    },
    /// A fenced write carried an older epoch than the one stored for its
    /// application: a newer owner has taken the application over, and this
    /// writer must stop. Nothing was stored.
    #[error(
        "checkpoint of app `{app_id}` at sequence {sequence_id} refused: epoch {epoch} is older than the stored epoch {current}"
    )]
    Fenced {
        /// The application.
        app_id: String,
        /// The step's sequence id.
        sequence_id: u64,
        /// The epoch the write carried.
        epoch: u64,
        /// The epoch stored for the application.
        current: u64,
    },
    /// The persister cannot check fencing epochs, so a fenced write was
    /// refused rather than stored unchecked.
    #[error("this persister does not support fenced writes (checkpoint of app `{app_id}`)")]
    FencingUnsupported {
        /// The application.
        app_id: String,
    },
}

impl PersistError {
    /// Wrap a backend error.
    pub fn backend(err: impl Into<BoxError>) -> Self {
        PersistError::Backend(err.into())
    }
}

/// An error that refuses to build an [`Application`](crate::Application).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The entrypoint override is not an action of the graph.
    #[error("entrypoint `{0}` is not an action of the graph")]
    UnknownEntrypoint(String),
    /// `resume` or `fork_from` was asked for without a persister.
    #[error("resuming or forking needs a persister; set one with `persister`")]
    NoPersister,
    /// A fork names the application being built.
    #[error("cannot fork app `{0}` from itself")]
    ForkFromSelf(String),
    /// The checkpoint to fork from does not exist.
    #[error("no checkpoint of app `{app_id}`{} to fork from", .sequence_id.map(|s| format!(" at sequence {s}")).unwrap_or_default())]
    ForkSourceMissing {
        /// The application to fork from.
        app_id: String,
        /// The sequence id asked for, if any.
        sequence_id: Option<u64>,
    },
    /// A checkpoint names an action the graph does not have.
    #[error(
        "checkpoint of app `{app_id}` is positioned at `{action}`, which is not an action of the graph"
    )]
    UnknownCheckpointAction {
        /// The application.
        app_id: String,
        /// The action named by the checkpoint.
        action: String,
    },
    /// Computing the next action of a resumed checkpoint failed.
    #[error("cannot resume app `{app_id}`: {source}")]
    Resume {
        /// The application.
        app_id: String,
        /// Why.
        #[source]
        source: ActionError,
    },
    /// The persister failed while loading.
    #[error(transparent)]
    Persist(#[from] PersistError),
    /// A hook panicked in `on_create`.
    #[error("cannot build the application: {0}")]
    Hook(#[source] HookPanic),
    /// [`build_fresh`](crate::ApplicationBuilder::build_fresh) was asked
    /// of a builder that resumes or forks: loading a checkpoint needs
    /// [`build`](crate::ApplicationBuilder::build).
    #[error("resuming or forking loads a checkpoint: use `build().await`")]
    NeedsLoading,
}

/// An error from running an [`Application`](crate::Application).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApplicationError {
    /// A step failed; the state is as it was before the step.
    #[error("step {sequence_id} failed: {source}")]
    Step {
        /// The sequence id of the failed step.
        sequence_id: u64,
        /// Why it failed.
        #[source]
        source: ActionError,
    },
    /// Saving a checkpoint failed; the step's state change was not kept.
    #[error("step {sequence_id} ({action}) ran but its checkpoint could not be saved: {source}")]
    Persist {
        /// The sequence id of the step.
        sequence_id: u64,
        /// The action of the step.
        action: String,
        /// Why the save failed.
        #[source]
        source: PersistError,
    },
    /// A halt list names an action the graph does not have.
    #[error("halt list names unknown action `{0}`")]
    UnknownHaltAction(String),
    /// A hook panicked in `before_run`, `after_run` or `after_step`. The
    /// panic was caught. After an `after_step` panic the step is kept (it
    /// completed and its checkpoint says so) and the run stops; a panic in
    /// `before_step` or `on_stream_item` fails the step instead
    /// ([`ActionError::HookPanicked`] inside [`ApplicationError::Step`]).
    #[error("{0}")]
    Hook(#[source] HookPanic),
    /// The run was dropped before it ended (a consumer stopped reading
    /// `iterate` or `stream_result`, or the `run` future was dropped): what
    /// the `after_run` hooks are told then.
    #[error("the run of app `{app_id}` was abandoned before it ended")]
    Abandoned {
        /// The application.
        app_id: String,
    },
}

impl ApplicationError {
    /// The action error behind a failed step, if this is one.
    pub fn action_error(&self) -> Option<&ActionError> {
        match self {
            ApplicationError::Step { source, .. } => Some(source),
            _ => None,
        }
    }

    /// The hook panic behind this error, if a hook panicked: directly
    /// ([`ApplicationError::Hook`]) or during a step
    /// ([`ActionError::HookPanicked`]).
    ///
    /// # Examples
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// use serde_json::json;
    /// use tributary_core::{action, Application, Graph, Hook, HookMethod, RunOptions, StepInfo};
    ///
    /// struct Faulty;
    /// impl Hook for Faulty {
    ///     fn before_step(&self, _: &StepInfo<'_>) {
    ///         panic!("tracker is broken");
    ///     }
    /// }
    /// let graph = Graph::single(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }));
    /// let mut app = Application::builder(graph).hook(Faulty).build().await?;
    /// let err = app.run(RunOptions::new()).await.unwrap_err();
    /// let panic = err.hook_panic().expect("a hook panicked");
    /// assert_eq!(panic.method, HookMethod::BeforeStep);
    /// assert_eq!(panic.message, "tracker is broken");
    /// # Ok(())
    /// # }
    /// ```
    pub fn hook_panic(&self) -> Option<&HookPanic> {
        match self {
            ApplicationError::Hook(panic)
            | ApplicationError::Step {
                source: ActionError::HookPanicked { panic, .. },
                ..
            } => Some(panic),
            _ => None,
        }
    }

    /// A short name of the kind of failure, for logs and span fields.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            ApplicationError::Step { source, .. } => source.kind(),
            ApplicationError::Persist { .. } => "persist",
            ApplicationError::UnknownHaltAction(_) => "unknown_halt_action",
            ApplicationError::Hook(_) => "hook_panicked",
            ApplicationError::Abandoned { .. } => "abandoned",
        }
    }
}

/// Emitting a stream item failed because nobody is listening any more.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the stream of action `{action}` was closed by its consumer")]
pub struct EmitError {
    /// The action that emitted.
    pub action: String,
}
