//! Persistence: a checkpoint after every step, and resuming from it.
//!
//! An application with a [`Persister`] saves a [`Checkpoint`] after every
//! step: on success the new state with status [`StepStatus::Completed`], on
//! failure the state from before the step with [`StepStatus::Failed`]. An
//! application built with `resume()` loads the latest checkpoint of its app id:
//! after a completed step it continues at the next action (by the
//! transitions), after a failed one it runs the failed action again. An
//! application built with `fork_from(app_id, sequence_id)` starts from another
//! application's checkpoint under its own id.
//!
//! [`InMemoryPersister`] keeps checkpoints in memory (tests, short-lived
//! runs); the SQLite persister is the durable default.

mod memory;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::PersistError;
use crate::state::State;

pub use memory::InMemoryPersister;

/// How a step ended, as recorded in its checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    /// The step's action ran and its state change was kept.
    Completed,
    /// The step's action failed; the checkpoint holds the state before it.
    Failed,
}

impl StepStatus {
    /// `"completed"` or `"failed"`.
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Completed => "completed",
            StepStatus::Failed => "failed",
        }
    }
}

/// The record of one step, enough to resume the application after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The application.
    pub app_id: String,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// The step's sequence id.
    pub sequence_id: u64,
    /// The step's action.
    pub action: String,
    /// How the step ended.
    pub status: StepStatus,
    /// The state after a completed step, before a failed one.
    pub state: State,
}

/// Saves and loads checkpoints.
///
/// `save` is an upsert keyed by `(app_id, sequence_id)`: a failed step is
/// retried at the same sequence id and its retry's checkpoint replaces the
/// failed one. Implementations must be safe to call concurrently from many
/// applications.
#[async_trait]
pub trait Persister: Send + Sync + 'static {
    /// Save a checkpoint.
    ///
    /// # Errors
    ///
    /// [`PersistError`] when the backend fails.
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
}

impl std::fmt::Debug for dyn Persister {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Persister")
    }
}
