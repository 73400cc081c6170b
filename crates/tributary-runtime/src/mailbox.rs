//! What travels from the supervisor and the actors to the merger.

use tokio::sync::mpsc;

use crate::control::TaskSlot;
use crate::item::StreamItem;

/// An item on its way to the merger. A terminal item carries its task's
/// slot, released when the merger takes the item.
pub(crate) struct Envelope {
    pub(crate) item: StreamItem,
    pub(crate) slot: Option<TaskSlot>,
}

/// The merger's control channel (unbounded: at most a few messages per
/// task, and tasks are bounded by their slots).
pub(crate) enum Ctl {
    /// A terminal item that must not wait for mailbox room: every terminal in
    /// the per-task modes, and cancellations in every mode.
    Terminal(Envelope),
    /// A task started (per-task modes): its channel, in task order.
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
