//! [`StepWatch`]: what a live run's stream does not say, learnt from its
//! tasks' hooks: which step each task is running now, which attempt of it
//! (a retried step), and which action of a parent runs its children.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};

use tributary_core::{Hook, StepInfo, StepOutcome, StepPause};

use crate::source::{LanePath, lane_key};

/// Steps as the run's tasks start and end them, for the web view.
///
/// The stream of a run reports the items of its tasks and their ends,
/// not the steps in between: a step that failed and is being retried
/// reports nothing until it succeeds. A `StepWatch` is a hook
/// ([`hook`](Self::hook), given to the run's `RunConfig::hook`; the tasks
/// of its parallel actions inherit it) that notes per task the step it is
/// running, the attempt, the errors of failed attempts and the action that
/// spawned its children. Given to the [`LiveRun`](crate::LiveRun) with
/// [`LiveRun::watch`](crate::LiveRun::watch), its lanes then show a task
/// retrying a step as `retrying`, and a parent lane the parallel action its
/// children run in.
///
/// It keeps one small note per task: its memory grows with the number of
/// tasks only.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use futures_util::StreamExt;
/// use serde_json::json;
/// use tributary_core::{State, action};
/// use tributary_runtime::{RunConfig, Runtime, TaskSpec};
/// use tributary_ui::{StepWatch, UiServer};
///
/// let watch = StepWatch::new();
/// let task = TaskSpec::action("t", action("work").run(|s: State, _, _| async move { Ok((json!(1), s)) }));
/// let (handle, stream) = Runtime::new().run(vec![task], RunConfig::new().hook(watch.hook()));
/// let live = UiServer::new().attach_run("watched", handle);
/// live.watch(watch);
/// assert_eq!(live.tap(stream).count().await, 1);
/// # }
/// ```
#[derive(Clone, Default)]
pub struct StepWatch {
    notes: Arc<Mutex<Notes>>,
}

impl std::fmt::Debug for StepWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepWatch")
            .field("tasks", &self.lock().by_lane.len())
            .finish()
    }
}

#[derive(Default)]
struct Notes {
    by_lane: HashMap<String, (LanePath, Note)>,
    /// Lanes whose note changed since the view last took them.
    changed: HashSet<String>,
}

/// What the watch knows of one task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Note {
    /// The action of the step it runs now (or ran last).
    pub(crate) action: Option<String>,
    /// The step's sequence id.
    sequence_id: Option<u64>,
    /// The attempt of that step running now, from 1.
    pub(crate) attempt: u32,
    /// Whether that attempt is a retry of a failed one.
    pub(crate) retrying: bool,
    /// Attempts of its steps that failed, in all.
    pub(crate) failures: u64,
    /// The error of the last failed attempt.
    pub(crate) error: Option<String>,
    /// The action (of this task's own steps) that spawned its children.
    pub(crate) children_action: Option<String>,
    /// What its step waits for, paused from inside its action (a durable
    /// step out of retries, with that step's last error), until resumed.
    pub(crate) waiting: Option<String>,
}

impl StepWatch {
    /// A watch that has seen nothing yet.
    pub fn new() -> Self {
        StepWatch::default()
    }

    /// The hook to give the run's `RunConfig::hook`.
    pub fn hook(&self) -> Arc<dyn Hook> {
        Arc::new(WatchHook {
            notes: Arc::clone(&self.notes),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Notes> {
        self.notes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The notes changed since the last call, by lane key.
    pub(crate) fn take_changed(&self) -> Vec<(LanePath, Note)> {
        let mut notes = self.lock();
        let changed = std::mem::take(&mut notes.changed);
        changed
            .into_iter()
            .filter_map(|key| notes.by_lane.get(&key).cloned())
            .collect()
    }
}

struct WatchHook {
    notes: Arc<Mutex<Notes>>,
}

impl WatchHook {
    fn note(&self, path: LanePath, f: impl FnOnce(&mut Note)) {
        let key = path.key();
        let mut notes = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        let (_, note) = notes
            .by_lane
            .entry(key.clone())
            .or_insert_with(|| (path, Note::default()));
        let before = note.clone();
        f(note);
        if *note != before {
            notes.changed.insert(key);
        }
    }
}

impl Hook for WatchHook {
    fn before_step(&self, step: &StepInfo<'_>) {
        let Some(path) = lane_key(step.app) else {
            return;
        };
        let sequence_id = step.sequence_id;
        self.note(path.clone(), |note| {
            if note.sequence_id == Some(sequence_id) {
                note.attempt += 1;
                note.retrying = true;
            } else {
                note.sequence_id = Some(sequence_id);
                note.attempt = 1;
                note.retrying = false;
            }
            note.action = Some(step.action.to_owned());
        });
        // A child's first step names the parent's step that spawned it.
        let spawner = step
            .app
            .spawning_parent
            .as_ref()
            .and_then(|p| p.action.clone());
        if let Some(action) = spawner.filter(|_| path.depth() > 1) {
            self.note(path.prefix(path.depth() - 1), |note| {
                note.children_action = Some(action);
            });
        }
    }

    fn on_step_paused(&self, pause: &StepPause<'_>) {
        let Some(path) = lane_key(pause.app) else {
            return;
        };
        let waiting = format!("{} out of retries: {}", pause.waiting, pause.reason);
        self.note(path, |note| note.waiting = Some(waiting));
    }

    fn on_step_resumed(&self, pause: &StepPause<'_>) {
        let Some(path) = lane_key(pause.app) else {
            return;
        };
        self.note(path, |note| note.waiting = None);
    }

    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let Some(path) = lane_key(step.app) else {
            return;
        };
        self.note(path, |note| match outcome {
            StepOutcome::Failed { error, .. } => {
                note.failures += 1;
                note.error = Some(error.to_string());
            }
            StepOutcome::Completed { .. } => note.retrying = false,
            _ => {}
        });
    }
}
