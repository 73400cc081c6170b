//! Where journal entries and workflow records are kept.
//!
//! A [`JournalStore`] keeps two things: the journal of step outcomes, one
//! [`JournalEntry`] per (app id, sequence id, position), and one
//! [`WorkflowRecord`] per workflow id. Appending is *insert if absent*: the
//! first entry written at a position wins and every later writer gets that
//! entry back, so two executions racing on one step agree on its result.
//!
//! [`MemoryJournal`] keeps everything in memory (tests, short-lived runs);
//! the SQLite backend (`tributary_sqlite::SqliteJournal`, feature
//! `durable` of `tributary-sqlite`) is the durable default.

mod memory;
mod row;

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::JournalError;

pub use memory::MemoryJournal;
pub use row::{JournalRow, WorkflowRow};

/// A step's identity within one action attempt: its explicit name and how
/// many steps of that name ran before it in the same attempt.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StepKey {
    /// The name given to the step.
    pub name: String,
    /// 0 for the first step of this name in the attempt, 1 for the second...
    pub occurrence: u32,
}

impl StepKey {
    /// The key of the `occurrence`-th step named `name`.
    pub fn new(name: impl Into<String>, occurrence: u32) -> Self {
        StepKey {
            name: name.into(),
            occurrence,
        }
    }
}

impl fmt::Display for StepKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.name, self.occurrence)
    }
}

/// What a journal entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum EntryKind {
    /// A step's body ran; its value is the step's result.
    Step,
    /// A durable sleep; its value is the wake-up time in milliseconds since
    /// the Unix epoch.
    Sleep,
    /// A compensation ran (saga undo); its value is `null`.
    Compensation,
    /// An external event was received; its value is the event's.
    Event,
}

impl EntryKind {
    /// The kind's name as stored (`step`, `sleep`, `compensation`).
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Step => "step",
            EntryKind::Sleep => "sleep",
            EntryKind::Compensation => "compensation",
            EntryKind::Event => "event",
        }
    }

    /// The kind named `name` (the inverse of [`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "step" => Some(EntryKind::Step),
            "sleep" => Some(EntryKind::Sleep),
            "compensation" => Some(EntryKind::Compensation),
            "event" => Some(EntryKind::Event),
            _ => None,
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How a journaled step ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// It succeeded with this value.
    Completed(Value),
    /// It failed terminally while compensations were registered, so the
    /// failure started a compensation and is final; the error's message.
    /// (A failure with nothing to compensate is not journaled: the step runs
    /// again when the action does.)
    Failed(String),
}

/// One journaled step outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JournalEntry {
    /// The application (or workflow) id.
    pub app_id: String,
    /// The sequence id of the action's step (0 for a workflow).
    pub sequence_id: u64,
    /// The step's position among the journaled steps of the attempt, from 0.
    pub position: u32,
    /// The step's key.
    pub step: StepKey,
    /// What the entry records.
    pub kind: EntryKind,
    /// How the step ended.
    pub outcome: Outcome,
    /// The execution that wrote it: executions of one (app id, sequence
    /// id) — the first run, each retry of the action, each resume of the
    /// workflow — are numbered from 1 by
    /// [`JournalStore::begin_execution`]. An entry written by an earlier
    /// execution than the latest was replayed by the latest (0: written
    /// before executions were numbered, or copied by a fork).
    #[serde(default)]
    pub execution: u32,
}

impl JournalEntry {
    /// Whether the latest execution `latest` of its (app id, sequence id)
    /// ran this entry's step or replayed it; `None` when executions were
    /// not numbered (`latest` 0).
    pub fn replay(&self, latest: u32) -> Option<Replay> {
        Replay::of(self.execution, latest)
    }
}

/// Whether the latest execution of an action attempt or a workflow ran a
/// journaled step or returned it from the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Replay {
    /// The latest execution ran it (and wrote the entry).
    Run,
    /// An earlier execution wrote it; the latest returned it from the
    /// journal.
    Replayed,
}

impl Replay {
    /// What an entry written by execution `written` is to execution
    /// `latest` of the same (app id, sequence id); `None` when `latest` is
    /// 0 (not numbered).
    pub fn of(written: u32, latest: u32) -> Option<Self> {
        match latest {
            0 => None,
            _ if written >= latest => Some(Replay::Run),
            _ => Some(Replay::Replayed),
        }
    }

    /// `run` or `replayed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Replay::Run => "run",
            Replay::Replayed => "replayed",
        }
    }
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a workflow is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum WorkflowStatus {
    /// Started and not finished: running, or interrupted by a crash (then
    /// `resume_all` picks it up).
    Running,
    /// Returned a value.
    Completed,
    /// Returned an error.
    Failed,
    /// Cancelled by a user; never resumed.
    Cancelled,
    /// A step ran out of retries and waits for a user to resume the
    /// workflow (or cancel it); not resumed by `resume_all`.
    Paused,
}

impl WorkflowStatus {
    /// The status's name as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkflowStatus::Running => "running",
            WorkflowStatus::Completed => "completed",
            WorkflowStatus::Failed => "failed",
            WorkflowStatus::Cancelled => "cancelled",
            WorkflowStatus::Paused => "paused",
        }
    }

    /// The status named `name` (the inverse of [`as_str`](Self::as_str)).
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "running" => Some(WorkflowStatus::Running),
            "completed" => Some(WorkflowStatus::Completed),
            "failed" => Some(WorkflowStatus::Failed),
            "cancelled" => Some(WorkflowStatus::Cancelled),
            "paused" => Some(WorkflowStatus::Paused),
            _ => None,
        }
    }

    /// Whether the workflow has ended.
    pub fn is_finished(self) -> bool {
        !matches!(self, WorkflowStatus::Running | WorkflowStatus::Paused)
    }
}

/// A workflow's record: what started it and how it ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowRecord {
    /// The id it was started with.
    pub workflow_id: String,
    /// The registered name of its function.
    pub name: String,
    /// Its input.
    pub input: Value,
    /// Its status.
    pub status: WorkflowStatus,
    /// Its output, once completed.
    pub output: Option<Value>,
    /// Its error message, once failed.
    pub error: Option<String>,
}

/// Keeps journal entries, workflow records and the events sent to
/// workflows.
///
/// Implementations must make an acknowledged [`append`](Self::append) durable
/// (it survives a crash of the process) and must be insert-if-absent at
/// (app id, sequence id, position).
///
/// # Cancel safety
///
/// A dropped `append` or `put_workflow` may or may not have been written;
/// callers treat a dropped write like a crash before it.
#[async_trait]
pub trait JournalStore: Send + Sync + 'static {
    /// Every entry of (`app_id`, `sequence_id`), in position order.
    async fn load(&self, app_id: &str, sequence_id: u64)
    -> Result<Vec<JournalEntry>, JournalError>;

    /// Write `entry` unless an entry exists at its position; return the
    /// entry stored there afterwards (the given one, or an earlier writer's).
    async fn append(&self, entry: JournalEntry) -> Result<JournalEntry, JournalError>;

    /// Count a new execution of (`app_id`, `sequence_id`) — a run, retry
    /// or resume reaching its first durable step — and return its number,
    /// from 1. One write per execution, however many steps it replays;
    /// its entries carry the number ([`JournalEntry::execution`]).
    async fn begin_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError>;

    /// The number of the latest execution of (`app_id`, `sequence_id`); 0
    /// when none was counted.
    async fn latest_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError>;

    /// Insert `record` unless a record of its workflow id exists; return
    /// the stored record and whether it was inserted now.
    async fn create_workflow(
        &self,
        record: WorkflowRecord,
    ) -> Result<(WorkflowRecord, bool), JournalError>;

    /// Replace the record of `record.workflow_id` (status, output, error).
    async fn put_workflow(&self, record: WorkflowRecord) -> Result<(), JournalError>;

    /// The record of `workflow_id`, if any.
    async fn workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRecord>, JournalError>;

    /// Every workflow with status [`WorkflowStatus::Running`], by id.
    async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>, JournalError>;

    /// Keep an event named `name` for `target` (a workflow id), after the
    /// events of that name sent to it before; its index among them, from 0.
    async fn send_event(&self, target: &str, name: &str, value: Value)
    -> Result<u64, JournalError>;

    /// The `index`-th event named `name` sent to `target`, if it has been
    /// sent.
    async fn event(
        &self,
        target: &str,
        name: &str,
        index: u64,
    ) -> Result<Option<Value>, JournalError>;
}

impl fmt::Debug for dyn JournalStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JournalStore")
    }
}
