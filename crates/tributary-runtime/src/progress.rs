//! Progress counts of a run's task tree, for progress bars.

use std::sync::atomic::{AtomicU64, Ordering};

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

/// A run's counts as its tasks keep them: one atomic per count, so that
/// starting and ending tasks never take a lock. A watch of
/// [`Progress`] is fed from them only while someone watches.
#[derive(Default)]
pub(crate) struct Counters {
    total: AtomicU64,
    running: AtomicU64,
    paused: AtomicU64,
    completed: AtomicU64,
    failed: AtomicU64,
    cancelled: AtomicU64,
}

/// A change of a run's counts (each field added, negative taken off).
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Change {
    pub(crate) total: i64,
    pub(crate) running: i64,
    pub(crate) paused: i64,
    pub(crate) completed: i64,
    pub(crate) failed: i64,
    pub(crate) cancelled: i64,
}

impl Change {
    /// A task ended as `completed`, `failed` or `cancelled`.
    pub(crate) fn ended(kind: Ended) -> Self {
        let mut change = Change {
            running: -1,
            ..Change::default()
        };
        match kind {
            Ended::Completed => change.completed = 1,
            Ended::Failed => change.failed = 1,
            Ended::Cancelled => change.cancelled = 1,
        }
        change
    }
}

/// How a task ended, for its counts.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ended {
    Completed,
    Failed,
    Cancelled,
}

impl Counters {
    fn fields(&self) -> [&AtomicU64; 6] {
        [
            &self.total,
            &self.running,
            &self.paused,
            &self.completed,
            &self.failed,
            &self.cancelled,
        ]
    }

    /// Apply `change`: the counts that grow first, then those that shrink,
    /// so that a reader between the two sees a task in both places rather
    /// than in neither (a task ending is never missing from every count).
    pub(crate) fn apply(&self, change: Change) {
        let deltas = [
            change.total,
            change.running,
            change.paused,
            change.completed,
            change.failed,
            change.cancelled,
        ];
        let fields = self.fields();
        for (field, delta) in fields.iter().zip(deltas) {
            if delta > 0 {
                field.fetch_add(delta.unsigned_abs(), Ordering::SeqCst);
            }
        }
        for (field, delta) in fields.iter().zip(deltas) {
            if delta < 0 {
                let by = delta.unsigned_abs();
                let _ = field.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |v| {
                    Some(v.saturating_sub(by))
                });
            }
        }
    }

    /// The counts now.
    pub(crate) fn snapshot(&self) -> Progress {
        let load = |a: &AtomicU64| a.load(Ordering::SeqCst);
        Progress {
            total: load(&self.total),
            running: load(&self.running),
            paused: load(&self.paused),
            completed: load(&self.completed),
            failed: load(&self.failed),
            cancelled: load(&self.cancelled),
        }
    }
}
