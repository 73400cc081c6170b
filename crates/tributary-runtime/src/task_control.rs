//! A task's controls: its cancellation, its pause gate, why it was
//! cancelled and whether it has started (all in its lane).
//!
//! Invariants: a task's control exists from the moment the run knows the
//! task (taken from its source or added) until the task has ended, so a
//! queued task can be paused or cancelled before it starts. Cancelling a
//! run cancels its token and then every task in its table; a task
//! registered meanwhile sees the token cancelled. Cancelling a task
//! cancels every run nested in it, and a run nested in a task that is
//! already cancelled starts cancelled, so cancelling a task cancels its
//! subtree. (The runs nested in a task are recorded by the task's run, so
//! that tasks that nest nothing pay nothing for it.)

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU8, Ordering};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::path::TaskPath;
use crate::reason::CancelReason;

/// The controls of one task that has not ended: its lane, made when the
/// run learns of the task and filled in when the task starts, so that a
/// task's controls, cancellation, slot, gates and way out are one
/// allocation.
pub(crate) type TaskControl = std::sync::Arc<crate::mailbox::lane::Lane>;

/// A task's pause gate, cancellation reason and start flag (in its lane).
#[derive(Default)]
pub(crate) struct TaskShared {
    /// Created the first time the task is paused: most tasks never are,
    /// and a `watch` costs a few hundred bytes per task.
    paused: OnceLock<watch::Sender<bool>>,
    pub(crate) reason: OnceLock<CancelReason>,
    /// Where the task stands: [`QUEUED`], [`SPAWNED`] or [`RAN`].
    stage: AtomicU8,
}

/// Known to the run, waiting for its turn and its slot.
const QUEUED: u8 = 0;
/// Given its slot and its actor, which has not run yet.
const SPAWNED: u8 = 1;
/// Its actor has run.
const RAN: u8 = 2;

impl TaskShared {
    /// Pause or resume the task (its gate is created on first pause).
    pub(crate) fn set_paused(&self, paused: bool) {
        match self.paused.get() {
            Some(gate) => {
                gate.send_replace(paused);
            }
            None if paused => {
                let gate = self.paused.get_or_init(|| watch::Sender::new(false));
                gate.send_replace(true);
            }
            // Never paused: nothing to resume.
            None => {}
        }
    }

    /// The task's gate, made now if it was never paused (for a wait that
    /// must see a later first pause).
    pub(crate) fn pause_gate_or_init(&self) -> &watch::Sender<bool> {
        self.paused.get_or_init(|| watch::Sender::new(false))
    }

    pub(crate) fn pause_gate(&self) -> Option<&watch::Sender<bool>> {
        self.paused.get()
    }

    /// The task has its slot and its actor: it no longer waits for its
    /// turn (from now on `tasks()` lists it as running).
    pub(crate) fn mark_spawned(&self) {
        self.stage.store(SPAWNED, Ordering::Relaxed);
    }

    /// The task's actor has run.
    pub(crate) fn mark_ran(&self) {
        self.stage.store(RAN, Ordering::Relaxed);
    }

    /// Whether the task has its slot and its actor.
    pub(crate) fn is_started(&self) -> bool {
        self.stage.load(Ordering::Relaxed) != QUEUED
    }

    /// Whether the task's actor has run.
    pub(crate) fn has_run(&self) -> bool {
        self.stage.load(Ordering::Relaxed) == RAN
    }
}

/// Where a task of the tree stands, from [`RunHandle::tasks`](crate::RunHandle::tasks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum LiveStatus {
    /// Known to the run (taken from its source or added) but not started:
    /// waiting for its turn, its slot or the run's gates.
    Queued,
    /// Started (it holds its slot) and not ended.
    Running,
    /// Paused: the task, its run or a run it is nested in is paused.
    Paused,
    /// Cancelled, and not yet reported as ended.
    Cancelling,
}

/// A task of the tree that has not ended, from
/// [`RunHandle::tasks`](crate::RunHandle::tasks).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TaskInfo {
    /// The task's path from the run the handle controls.
    pub path: TaskPath,
    /// Its position in its own run's task order.
    pub index: u64,
    /// Where it stands.
    pub status: LiveStatus,
}
