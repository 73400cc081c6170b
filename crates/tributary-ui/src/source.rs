//! The adapter: the only module that names the runtime's and the
//! tracker's APIs. Everything else in this crate works on the small types
//! defined here, so that a change of the runtime or the tracker changes
//! this file only.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::Value;
use tributary_core::{AppInfo, State};
use tributary_runtime::{CancelReason, ItemKind, LiveStatus, RunHandle, StreamItem, TaskPath};
use tributary_sqlite::{RunReader, RunSummary, SqliteError, TrackedStep};

use crate::error::UiError;

// ===== recorded runs =====

/// One recorded application, as the view shows it. Times are microseconds
/// since the Unix epoch.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecordedRun {
    pub(crate) app_id: String,
    pub(crate) partition_key: Option<String>,
    pub(crate) status: &'static str,
    pub(crate) steps: u64,
    pub(crate) attempts: u64,
    pub(crate) created_at: i64,
    pub(crate) started_at: Option<i64>,
    pub(crate) ended_at: Option<i64>,
    /// The app id of the application that spawned it.
    pub(crate) spawned_by: Option<String>,
    /// The spawning step's sequence id and action.
    pub(crate) spawn_sequence_id: Option<u64>,
    pub(crate) spawn_action: Option<String>,
    /// The app id it was forked from.
    pub(crate) forked_from: Option<String>,
}

/// One recorded step attempt.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RecordedStep {
    pub(crate) sequence_id: u64,
    pub(crate) attempt: u32,
    pub(crate) action: String,
    pub(crate) status: &'static str,
    pub(crate) started_at: i64,
    pub(crate) ended_at: Option<i64>,
    pub(crate) result: Option<Value>,
    pub(crate) state: Option<Value>,
    pub(crate) error: Option<String>,
    pub(crate) items: u64,
    /// The inputs it was given, when recorded.
    #[serde(skip)]
    pub(crate) inputs: Option<Value>,
    /// The first tokens it streamed, when recorded.
    #[serde(skip)]
    pub(crate) tokens: Option<Vec<Value>>,
}

fn run_from(r: RunSummary) -> RecordedRun {
    RecordedRun {
        status: r.status.as_str(),
        spawned_by: r.spawning_parent.as_ref().map(|p| p.app_id.clone()),
        spawn_sequence_id: r.spawning_parent.as_ref().map(|p| p.sequence_id),
        spawn_action: r.spawning_parent.and_then(|p| p.action),
        forked_from: r.parent.map(|p| p.app_id),
        app_id: r.app_id,
        partition_key: r.partition_key,
        steps: r.steps,
        attempts: r.attempts,
        created_at: r.created_at,
        started_at: r.started_at,
        ended_at: r.ended_at,
    }
}

fn step_from(s: TrackedStep) -> RecordedStep {
    RecordedStep {
        sequence_id: s.sequence_id,
        attempt: s.attempt,
        action: s.action,
        status: s.status.as_str(),
        started_at: s.started_at,
        ended_at: s.ended_at,
        result: s.result,
        state: s.state,
        error: s.error,
        items: s.items,
        inputs: s.inputs,
        tokens: s.tokens,
    }
}

/// A recorded database, read-only. Each read opens its own reader on the
/// blocking pool (SQLite reads block), so reads never hold up the server
/// and a database written by another process is read fresh.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    path: PathBuf,
}

/// The reads the view needs, on one open reader.
pub(crate) struct Reads<'a> {
    reader: &'a RunReader,
}

impl Reads<'_> {
    pub(crate) fn runs(&self) -> Result<Vec<RecordedRun>, SqliteError> {
        Ok(self.reader.runs()?.into_iter().map(run_from).collect())
    }

    pub(crate) fn run(&self, app_id: &str) -> Result<Option<RecordedRun>, SqliteError> {
        Ok(self.reader.run(app_id)?.map(run_from))
    }

    /// The applications `app_id` spawned, in the order of the spawning
    /// steps (task order within one step, as the tracker records it).
    pub(crate) fn children(&self, app_id: &str) -> Result<Vec<RecordedRun>, SqliteError> {
        Ok(self
            .reader
            .children(app_id)?
            .into_iter()
            .map(run_from)
            .collect())
    }

    pub(crate) fn steps(&self, app_id: &str) -> Result<Vec<RecordedStep>, SqliteError> {
        Ok(self
            .reader
            .steps(app_id)?
            .into_iter()
            .map(step_from)
            .collect())
    }
}

impl Recorded {
    pub(crate) fn new(path: impl AsRef<Path>) -> Self {
        Recorded {
            path: path.as_ref().to_path_buf(),
        }
    }

    /// Check that the file is a database the reader can open.
    pub(crate) fn check(&self) -> Result<(), UiError> {
        RunReader::open(&self.path)?;
        Ok(())
    }

    /// Run `f` with a fresh reader on the blocking pool.
    pub(crate) async fn read<R, F>(&self, f: F) -> Result<R, UiError>
    where
        R: Send + 'static,
        F: FnOnce(&Reads<'_>) -> Result<R, UiError> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let reader = RunReader::open(&path)?;
            f(&Reads { reader: &reader })
        })
        .await
        .map_err(|_| UiError::Interrupted(self.path.clone()))?
    }
}

// ===== live runs =====

/// What a stream item reports, as the view sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Kind {
    Token,
    Node,
    Final,
    Failed,
    Cancelled,
}

/// Why a task was cancelled, as far as the view needs to know: a
/// completion policy's cancellation makes its task a loser of the race.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum CancelCause {
    /// The completion policy finished the run (quick exit, first-N...).
    Policy,
    /// The run's handle cancelled it (the run or the one task).
    Handle,
    /// A timeout, fail-fast, the enclosing task's end or anything else.
    Other,
}

impl CancelCause {
    fn of(reason: CancelReason) -> Self {
        match reason {
            CancelReason::Policy => CancelCause::Policy,
            CancelReason::Handle | CancelReason::Task => CancelCause::Handle,
            _ => CancelCause::Other,
        }
    }
}

/// Where a task sits in the run's task tree: the lane's address for the
/// handle's per-task commands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LanePath(TaskPath);

impl LanePath {
    /// A top-level task's path: its key.
    pub(crate) fn top(key: &str) -> Self {
        LanePath(TaskPath::from(key))
    }

    /// The lane key: the task keys from the top-level task, joined by `/`.
    pub(crate) fn key(&self) -> String {
        self.0.to_string()
    }

    /// How many tasks the path has (1 for a top-level task).
    pub(crate) fn depth(&self) -> usize {
        self.0.len()
    }

    /// The path of the ancestor at `depth` (1 for the top-level task).
    pub(crate) fn prefix(&self, depth: usize) -> LanePath {
        LanePath(self.0.keys()[..depth].to_vec().into())
    }

    /// The parent's lane key (`""` for a top-level task).
    pub(crate) fn parent_key(&self) -> String {
        self.0.parent().map(|p| p.to_string()).unwrap_or_default()
    }
}

/// The lane of the task an application runs in (`None` outside a
/// runtime).
pub(crate) fn lane_key(app: &AppInfo) -> Option<LanePath> {
    (!app.task_path.is_empty()).then(|| LanePath(TaskPath::from(app.task_path.clone())))
}

/// One item the consumer received.
#[derive(Debug, Clone)]
pub(crate) struct Observed {
    /// The lane: the task keys from the run's top-level task to the task
    /// that produced the item, joined by `/`.
    pub(crate) task_key: String,
    /// The lane of the task's parent (`""` for a top-level task).
    pub(crate) parent: String,
    /// The task's path in the run's tree.
    pub(crate) path: LanePath,
    /// The task's position in its own run's task order.
    pub(crate) task_index: u64,
    pub(crate) app_id: String,
    pub(crate) action: Option<String>,
    pub(crate) seq: u64,
    pub(crate) kind: Kind,
    pub(crate) result: Option<Value>,
    pub(crate) state: Option<State>,
    pub(crate) error: Option<String>,
    pub(crate) cancel_cause: Option<CancelCause>,
}

/// The view of one item: nested tasks' items carry their path, so the
/// lane is the path and the parent lane its prefix.
pub(crate) fn observe(item: &StreamItem) -> Observed {
    let kind = match item.kind {
        ItemKind::Token => Kind::Token,
        ItemKind::NodeComplete => Kind::Node,
        ItemKind::Final => Kind::Final,
        ItemKind::Failed => Kind::Failed,
        ItemKind::Cancelled => Kind::Cancelled,
    };
    let cancel_cause = (kind == Kind::Cancelled).then(|| {
        item.cancel_reason()
            .map_or(CancelCause::Other, CancelCause::of)
    });
    let path = if item.path.is_empty() {
        LanePath::top(&item.task_key)
    } else {
        LanePath(item.path.clone())
    };
    Observed {
        task_key: path.key(),
        parent: path.parent_key(),
        path,
        task_index: item.task_index,
        app_id: item.app_id.to_string(),
        action: item.action.as_deref().map(str::to_owned),
        seq: item.seq,
        kind,
        result: item.result.clone(),
        state: item.state_update.clone(),
        error: item.error.as_ref().map(ToString::to_string),
        cancel_cause,
    }
}

/// Where a task that has not ended stands, as the run's handle lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Known to the run, not started.
    Queued,
    /// Started.
    Running,
    /// Paused: the task, its run or a run it is nested in.
    Paused,
    /// Cancelled, its end not reported yet.
    Cancelling,
}

/// A task of the run's tree that has not ended.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub(crate) path: LanePath,
    pub(crate) index: u64,
    pub(crate) standing: Standing,
}

/// The run's counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub(crate) total: u64,
    pub(crate) pending: u64,
    pub(crate) running: u64,
    pub(crate) paused: u64,
    pub(crate) completed: u64,
    pub(crate) failed: u64,
    pub(crate) cancelled: u64,
}

/// Why a per-task command was refused.
#[derive(Debug)]
pub(crate) struct NotRunning;

/// The commands and counts of a live run, through its handle.
#[derive(Debug, Clone)]
pub(crate) struct Control {
    handle: RunHandle,
}

impl Control {
    pub(crate) fn new(handle: RunHandle) -> Self {
        Control { handle }
    }

    pub(crate) fn counts(&self) -> Counts {
        let p = self.handle.progress_now();
        Counts {
            total: p.total,
            pending: p.pending(),
            running: p.running,
            paused: p.paused,
            completed: p.completed,
            failed: p.failed,
            cancelled: p.cancelled,
        }
    }

    pub(crate) fn is_paused(&self) -> bool {
        self.handle.is_paused()
    }

    pub(crate) fn is_cancelled(&self) -> bool {
        self.handle.is_cancelled()
    }

    pub(crate) fn pause(&self) {
        self.handle.pause();
    }

    pub(crate) fn resume(&self) {
        self.handle.resume();
    }

    pub(crate) fn cancel(&self) {
        // Cancelling happens on the call; the returned future only waits
        // for the tasks to stop, which the page learns from the stream.
        drop(self.handle.cancel());
    }

    /// Every task of the run's tree that has not ended, in task order,
    /// each followed by the tasks nested in it.
    pub(crate) fn tasks(&self) -> Vec<Listed> {
        self.handle
            .tasks()
            .into_iter()
            .map(|t| Listed {
                standing: match t.status {
                    LiveStatus::Queued => Standing::Queued,
                    LiveStatus::Paused => Standing::Paused,
                    LiveStatus::Cancelling => Standing::Cancelling,
                    _ => Standing::Running,
                },
                path: LanePath(t.path),
                index: t.index,
            })
            .collect()
    }

    // Any task of the tree, queued or running, by its path.
    pub(crate) fn pause_task(&self, path: &LanePath) -> Result<(), NotRunning> {
        self.handle.pause_task(&path.0).map_err(|_| NotRunning)
    }

    pub(crate) fn resume_task(&self, path: &LanePath) -> Result<(), NotRunning> {
        self.handle.resume_task(&path.0).map_err(|_| NotRunning)
    }

    pub(crate) fn cancel_task(&self, path: &LanePath) -> Result<(), NotRunning> {
        self.handle.cancel_task(&path.0).map_err(|_| NotRunning)
    }
}
