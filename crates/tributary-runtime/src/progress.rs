//! Progress counts of a run's task tree, for progress bars.

use serde::{Deserialize, Serialize};

/// Counts of a run's tasks, nested tasks included, for progress bars.
///
/// `total` counts every task the run knows of: when a run's source knows
/// its size up front (an iterator whose `size_hint` is exact, such as a
/// `Vec` or a `Range`), all its tasks count from the start, so a bar can
/// say "x of 50" at once; otherwise tasks count as they are taken from the
/// source. Tasks added with `add_task`, and the children of a parallel
/// action once it starts them, are added as they come. When a run is
/// cancelled, tasks its lazy source never yielded are taken off `total`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Progress {
    /// Tasks known so far (see above).
    pub total: u64,
    /// Tasks started and not yet ended.
    pub running: u64,
    /// Running tasks waiting at a pause gate right now.
    pub paused: u64,
    /// Tasks that reached their halt point.
    pub completed: u64,
    /// Tasks that failed.
    pub failed: u64,
    /// Tasks that were cancelled.
    pub cancelled: u64,
}

impl Progress {
    /// Tasks known but not started yet.
    pub fn pending(&self) -> u64 {
        self.total
            .saturating_sub(self.running + self.completed + self.failed + self.cancelled)
    }

    /// Tasks that have ended.
    pub fn done(&self) -> u64 {
        self.completed + self.failed + self.cancelled
    }
}
