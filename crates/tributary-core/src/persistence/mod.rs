//! Persistence: a checkpoint after every step, and resuming from it.
//!
//! An application with a [`Persister`] saves a [`Checkpoint`] after every
//! step: on success the new state, the step's action and its result with
//! status [`StepStatus::Completed`]; on failure the state from before the
//! step with [`StepStatus::Failed`]. An application built with `resume()`
//! loads the latest checkpoint of its app id: after a completed step it
//! continues at the next action (by the transitions), after a failed or
//! cancelled one it runs that action again at the same sequence id. The
//! checkpoint it was built from stays readable through
//! [`Application::resumed_from`](crate::Application::resumed_from), so a
//! resumed application knows its last step's action and result. An
//! application built with `fork_from(app_id, sequence_id)` starts from
//! another application's checkpoint under its own id.
//!
//! A checkpoint with status [`StepStatus::Cancelled`] records that the user
//! cancelled the application before the step at its sequence id ran (or
//! while it ran): its state is the state before that step. It is saved by
//! [`Application::save_cancelled`](crate::Application::save_cancelled).
//! Resuming it with `resume()` runs that step, since asking for a resume is
//! asking for the application to go on; a caller that restarts many
//! applications at once (the runtime) reads the status first and leaves a
//! cancelled one cancelled unless it was asked to resume it.
//!
//! Whatever a persister saves, it can load again: a state or result nested
//! deeper than [`Checkpoint::MAX_DEPTH`] levels is refused at save time with
//! [`PersistError::TooDeep`], never stored unloadable (JSON decoders limit
//! nesting, and encoding a value tens of thousands of levels deep
//! recursively would overflow a thread's stack).
//!
//! [`InMemoryPersister`] keeps checkpoints in memory (tests, short-lived
//! runs); the SQLite persister is the durable default.

mod depth;
mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::PersistError;
use crate::state::State;

pub use depth::json_depth_exceeds;
pub use memory::InMemoryPersister;

/// How a step ended, as recorded in its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum StepStatus {
    /// The step's action ran and its state change was kept.
    Completed,
    /// The step's action failed; the checkpoint holds the state before it.
    Failed,
    /// The user cancelled the application before this step could complete;
    /// the checkpoint holds the state before it.
    Cancelled,
}

impl StepStatus {
    /// `"completed"`, `"failed"` or `"cancelled"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
            StepStatus::Cancelled => "cancelled",
        }
    }

    /// The status named by [`as_str`](Self::as_str), `None` for any other
    /// text.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "completed" => Some(StepStatus::Completed),
            "failed" => Some(StepStatus::Failed),
            "cancelled" => Some(StepStatus::Cancelled),
            _ => None,
        }
    }
}

/// The record of one step, enough to resume the application after it and
/// to report what the step produced.
///
/// # Examples
///
/// ```
/// use serde_json::json;
/// use tributary_core::{Checkpoint, State, StepStatus};
///
/// let cp = Checkpoint::new("job-1", 3, "summarise", StepStatus::Completed, State::new())
///     .with_partition_key("user-1")
///     .with_result(json!({ "words": 120 }));
/// assert_eq!(cp.result, Some(json!({ "words": 120 })));
/// assert!(cp.check_depth().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Checkpoint {
    /// The application.
    pub app_id: String,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// The step's sequence id.
    pub sequence_id: u64,
    /// The step's action: the one that completed, failed, or was cancelled
    /// (the action due to run next).
    pub action: String,
    /// How the step ended.
    pub status: StepStatus,
    /// The state after a completed step, before a failed or cancelled one.
    pub state: State,
    /// The action's result, for a completed step; `None` for a failed or
    /// cancelled one, and for checkpoints written before results were kept.
    #[serde(default)]
    pub result: Option<Value>,
}

impl Checkpoint {
    /// The deepest nesting of a state or result that a checkpoint may hold:
    /// arrays and objects count one level each, a state's own map included.
    /// Every persister refuses deeper values with [`PersistError::TooDeep`].
    pub const MAX_DEPTH: usize = 100;

    /// A checkpoint without partition key or result.
    pub fn new(
        app_id: impl Into<String>,
        sequence_id: u64,
        action: impl Into<String>,
        status: StepStatus,
        state: State,
    ) -> Self {
        Checkpoint {
            app_id: app_id.into(),
            partition_key: None,
            sequence_id,
            action: action.into(),
            status,
            state,
            result: None,
        }
    }

    /// With a partition key.
    pub fn with_partition_key(mut self, key: impl Into<String>) -> Self {
        self.partition_key = Some(key.into());
        self
    }

    /// With the step's result.
    pub fn with_result(mut self, result: Value) -> Self {
        self.result = Some(result);
        self
    }

    /// Refuse a state or result nested deeper than
    /// [`MAX_DEPTH`](Self::MAX_DEPTH). Persisters call it before they
    /// encode anything; it walks the values without recursion, so any depth
    /// is safe to check.
    ///
    /// # Errors
    ///
    /// [`PersistError::TooDeep`] naming the application, the sequence id and
    /// the part (`"state"` or `"result"`).
    pub fn check_depth(&self) -> Result<(), PersistError> {
        let too_deep = |part: &'static str| PersistError::TooDeep {
            app_id: self.app_id.clone(),
            sequence_id: self.sequence_id,
            part,
            limit: Self::MAX_DEPTH,
        };
        // The state's map is the first level.
        if self
            .state
            .iter()
            .any(|(_, v)| json_depth_exceeds(v, Self::MAX_DEPTH - 1))
        {
            return Err(too_deep("state"));
        }
        if self
            .result
            .as_ref()
            .is_some_and(|r| json_depth_exceeds(r, Self::MAX_DEPTH))
        {
            return Err(too_deep("result"));
        }
        Ok(())
    }
}

/// Saves and loads checkpoints.
///
/// The contract every backend keeps (one test suite checks them all):
///
/// - `save` is an upsert keyed by `(app_id, sequence_id)`: a failed or
///   cancelled step is run again at the same sequence id and its
///   checkpoint replaces the earlier one.
/// - A checkpoint loads exactly as it was saved: app id, partition key,
///   sequence id, action, status (completed, failed or cancelled), state
///   and result.
/// - What is saved can be loaded: a checkpoint whose
///   [`check_depth`](Checkpoint::check_depth) fails is refused with
///   [`PersistError::TooDeep`] and nothing is stored.
/// - Implementations are safe to call concurrently from many applications.
/// - Fencing (optional): [`save_fenced`](Persister::save_fenced) carries the
///   writer's epoch. A backend that supports it keeps, per application, the
///   highest epoch written so far; a fenced write with an older epoch is
///   refused with [`PersistError::Fenced`] and stores nothing, one with the
///   same or a newer epoch is saved and raises the stored epoch. The check
///   and the write are one atomic operation, so of two writers racing, the
///   older one cannot slip in after the newer. Plain [`save`](Persister::save)
///   is not checked. A backend without fencing keeps the default, which
///   refuses every fenced write with [`PersistError::FencingUnsupported`]
///   (never an unchecked write); [`supports_fencing`](Persister::supports_fencing)
///   tells which.
#[async_trait]
pub trait Persister: Send + Sync + 'static {
    /// Save a checkpoint.
    ///
    /// # Errors
    ///
    /// [`PersistError::TooDeep`] for a state or result nested too deep to
    /// load again, [`PersistError::Backend`] when the backend fails.
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError>;

    /// Load the checkpoint of `app_id` at `sequence_id`, or its latest one
    /// when `sequence_id` is `None`. `Ok(None)` when there is none.
    ///
    /// # Errors
    ///
    /// [`PersistError`] when the backend fails or the record is corrupt.
    async fn load(
        &self,
        app_id: &str,
        sequence_id: Option<u64>,
    ) -> Result<Option<Checkpoint>, PersistError>;

    /// The app ids with checkpoints under `partition_key` (every app id when
    /// `None`), sorted.
    ///
    /// # Errors
    ///
    /// [`PersistError`] when the backend fails.
    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError>;

    /// Whether [`save_fenced`](Self::save_fenced) checks epochs (`false`
    /// unless the backend overrides it).
    fn supports_fencing(&self) -> bool {
        false
    }

    /// Save a checkpoint written under fencing epoch `epoch` (a claim's
    /// number: each new owner of an application writes with a higher one).
    ///
    /// # Errors
    ///
    /// [`PersistError::Fenced`] when a newer epoch was already stored for
    /// the application; by default [`PersistError::FencingUnsupported`];
    /// otherwise as [`save`](Self::save).
    ///
    /// # Cancel safety
    ///
    /// As [`save`](Self::save) of the backend.
    async fn save_fenced(&self, checkpoint: &Checkpoint, epoch: u64) -> Result<(), PersistError> {
        let _ = epoch;
        Err(PersistError::FencingUnsupported {
            app_id: checkpoint.app_id.clone(),
        })
    }

    /// Raise `app_id`'s fencing epoch to `epoch` without writing a
    /// checkpoint, unless a higher one is stored; answer the epoch stored
    /// afterwards (higher than `epoch`: a newer owner exists).
    ///
    /// A new owner of an application calls it before it loads the latest
    /// checkpoint, so that from then on a write of an older owner is
    /// refused. Without it an older owner's write is refused only once the
    /// new owner has saved, and a step the older owner saves in between
    /// (after the new owner loaded) would be run again by the new owner,
    /// along with the step the older owner goes on to.
    ///
    /// # Errors
    ///
    /// By default [`PersistError::FencingUnsupported`]; otherwise the
    /// backend's failure.
    ///
    /// # Cancel safety
    ///
    /// As [`save`](Self::save) of the backend: the epoch may or may not be
    /// raised.
    async fn raise_fence(&self, app_id: &str, epoch: u64) -> Result<u64, PersistError> {
        let _ = epoch;
        Err(PersistError::FencingUnsupported {
            app_id: app_id.to_owned(),
        })
    }
}

impl std::fmt::Debug for dyn Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Persister")
    }
}
