//! What is served of a live run: the event stream's updates and a lane's
//! detail.

use serde::Serialize;
use serde_json::Value;

use super::goal::TallyView;
use super::state::{Merged, Span};
use crate::diff::Change;
use crate::source::{Counts, Kind};

/// An event of the live stream: the run and what changed.
#[derive(Debug, Serialize)]
pub(crate) struct Update {
    pub(crate) version: u64,
    /// The browser's copy must be replaced, not patched.
    pub(super) reset: bool,
    pub(super) run: RunView,
    pub(super) lanes: Vec<LaneView>,
    pub(super) merged: Vec<Merged>,
    /// Some merged items were not sent (too many at once, or older than
    /// what the server keeps).
    pub(super) merged_gap: bool,
}

#[derive(Debug, Serialize)]
pub(super) struct RunView {
    pub(super) name: String,
    pub(super) control: bool,
    pub(super) counts: Counts,
    pub(super) paused: bool,
    pub(super) cancelled: bool,
    pub(super) ended: bool,
    pub(super) policy_finished: bool,
    pub(super) lanes: usize,
    pub(super) max_seq: u64,
    pub(super) merged_total: u64,
    pub(super) elapsed_ms: u64,
    pub(super) pauses: Vec<Span>,
    /// The count toward the run's completion policy, when told its goal.
    pub(super) goal: Option<TallyView>,
}

#[derive(Debug, Serialize)]
pub(super) struct LaneView {
    /// The task keys from the top-level task, joined by `/`.
    pub(super) key: String,
    /// The parent lane (`""` for a top-level task).
    pub(super) parent: String,
    /// The task indices along the path (the lanes' order).
    pub(super) order: Vec<u64>,
    /// Whether the task can be paused, resumed and cancelled on its own.
    pub(super) control: bool,
    pub(super) index: u64,
    pub(super) status: &'static str,
    pub(super) action: Option<String>,
    pub(super) items: u64,
    pub(super) tokens: u64,
    pub(super) tail: Vec<String>,
    /// The last items' (seq, kind): their seq is their zip round.
    pub(super) columns: Vec<(u64, Kind)>,
    pub(super) start_ms: u64,
    pub(super) elapsed_ms: u64,
    pub(super) winner: bool,
    pub(super) lost: bool,
    pub(super) paused_here: bool,
    pub(super) error: Option<String>,
    /// The action of the step it runs now (from a step watch).
    pub(super) step: Option<String>,
    /// That step's attempt, from 1 (0 without a step watch).
    pub(super) attempt: u32,
    /// Attempts of its steps that failed (retried or not).
    pub(super) failures: u64,
    /// The error of the last failed attempt.
    pub(super) last_failure: Option<String>,
    /// The action of this task that runs the tasks nested in it.
    pub(super) children_action: Option<String>,
    /// What its step waits for while paused from inside its action (a
    /// durable step out of retries, and its last error).
    pub(super) waiting: Option<String>,
    /// The count toward the completion policy of its children, when told
    /// its goal.
    pub(super) goal: Option<TallyView>,
    pub(super) steps: Vec<StepBar>,
    pub(super) pauses: Vec<Span>,
}

#[derive(Debug, Serialize)]
pub(super) struct StepBar {
    pub(super) action: String,
    pub(super) kind: Kind,
    pub(super) start_ms: u64,
    pub(super) end_ms: u64,
}

#[derive(Debug, Serialize)]
pub(crate) struct LaneDetail {
    pub(super) app_id: String,
    pub(super) lane: LaneView,
    pub(super) tail: Vec<String>,
    pub(super) steps: Vec<LaneStepView>,
    pub(super) steps_dropped: u64,
    pub(super) pauses: Vec<Span>,
}

#[derive(Debug, Serialize)]
pub(super) struct LaneStepView {
    pub(super) action: String,
    pub(super) kind: Kind,
    pub(super) start_ms: u64,
    pub(super) end_ms: u64,
    pub(super) duration_ms: u64,
    pub(super) first_item_ms: Option<u64>,
    pub(super) items: u64,
    pub(super) result: Option<Value>,
    pub(super) error: Option<String>,
    pub(super) state: Option<Value>,
    pub(super) changes: Vec<Change>,
}
