//! The mailbox of a run: the messages of the supervisor's inbox and of the
//! merger's mailbox and control channel, the sending half (a task's
//! [`lane`]) and the receiving half ([`reorder`]: each task's items back in
//! order), so that the merger only merges.

pub(crate) mod lane;
pub(crate) mod reorder;

use tokio::sync::mpsc;

use crate::item::StreamItem;
use crate::spec::TaskSpec;
use crate::task_control::TaskControl;

/// An item on its way to the merger, with its place in its lane: the
/// top-level task of the run it travels in (`index`) and its position among
/// everything that task sent (`seq`; items of tasks nested in it travel in
/// its lane too). A terminal item of the lane's own task carries the task's
/// slot, released when the merger takes the item.
pub(crate) struct Envelope {
    pub(crate) item: StreamItem,
    pub(crate) index: u64,
    pub(crate) seq: u64,
    /// Whether the item ends the lane's own task.
    pub(crate) terminal: bool,
    pub(crate) slot: Option<SlotHold>,
}

/// A terminal item's hold on its task's slot: the task's lane, which keeps
/// the slot, so that carrying it costs no allocation.
#[derive(Clone)]
pub(crate) struct SlotHold(pub(crate) std::sync::Arc<lane::Lane>);

impl SlotHold {
    /// Give every permit back (the consumer has the task's terminal item).
    pub(crate) fn release_all(&self) {
        self.0.slot.release_all();
    }
}

/// The merger's control channel (unbounded: at most a few messages per
/// task, and tasks are bounded by their slots).
// `Terminal` is the large variant and the common one (every terminal item
// of a `Zip` or `Ordered` run): boxing it would cost each an allocation.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Ctl {
    /// A terminal item that must not wait for mailbox room: every terminal in
    /// the per-task modes, and cancellations in every mode.
    Terminal(Envelope),
    /// A task started (per-task modes): its channel. Sent in task order,
    /// which `Ordered` relies on: the first lane registered and not ended
    /// is the front one.
    Register {
        index: u64,
        cohort: u64,
        rx: Option<mpsc::Receiver<Envelope>>,
    },
    /// Every task of a zip cohort is registered.
    Seal { cohort: u64 },
    /// No task will be added: the run has `total` tasks.
    Closed { total: u64 },
}

/// What the supervisor's inbox carries.
pub(crate) enum Inbox {
    /// A task added through the handle, its key already reserved.
    Add(TaskSpec, TaskControl),
    /// A task's actor has exited.
    Exited,
}
