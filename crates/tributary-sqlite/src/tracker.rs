//! [`SqliteTracker`]: a hook that records every application and step.

use std::path::Path;
use std::sync::Arc;

use rusqlite::params;
use serde_json::Value;
use tributary_core::{
    AppInfo, ApplicationError, Checkpoint, HaltReason, Hook, ParentPointer, RunOutcome, State,
    StepInfo, StepOutcome, StepPause, StepTokens, StreamItemInfo, TaskEnd, json_depth_exceeds,
};

use crate::database::Database;
use crate::error::SqliteError;
use crate::now_micros;
use crate::process;
use crate::runs::{RunStatus, TrackedStepStatus};

/// A [`Hook`] that records every step of every application it is attached
/// to in a SQLite database: the application (id, partition key, fork and
/// spawning-parent pointers, last status) and each step (sequence id,
/// action, start and end time, result, state, error, status, number of
/// intermediate outputs). [`RunReader`](crate::RunReader) and the
/// `tributary` command read it back.
///
/// A failed step is retried at the same sequence id; the tracker keeps every
/// attempt (numbered from 0), so the failure and its error stay on record
/// next to the retry that followed. An attempt left `running` by a process
/// that died is marked `abandoned` when the step starts again. Every
/// attempt records the process that ran it (host, pid and the process's
/// start time), so a reader can tell a resume after a crash from a retry
/// after a failure, and a run still going from one whose process died.
///
/// A task spawned by the runtime is recorded with its task key (also its
/// label), its path of task keys from the root run, and when it was
/// spawned. The run id and the task's index among its siblings have columns
/// of their own, empty until the runtime reports them to hooks.
///
/// Each attempt also records the step's inputs (when it was given any) and
/// the first tokens it streamed (at most 256, and 64 KiB of their JSON;
/// `items` counts them all), kept in memory until the step's end is
/// recorded.
///
/// A state, result or inputs nested deeper than
/// [`Checkpoint::MAX_DEPTH`](tributary_core::Checkpoint::MAX_DEPTH) is not
/// recorded (a note says why): it could not be read back.
///
/// Records are queued for the writer thread, at most
/// [`Database::RECORD_QUEUE_CAPACITY`] at once: when the queue is full a
/// hook waits for the writer, so a fast run slows down to what the disk can
/// take instead of queueing without bound.
///
/// Hooks are synchronous, so the tracker never touches SQLite on the
/// caller's thread: it takes the time, hands the record to the database's
/// writer thread and returns. [`flush`](Self::flush) waits until everything
/// handed over so far is written; dropping the last handle to the database
/// writes the rest before it returns.
///
/// Attach one clone to every application of a run (children included:
/// their `spawning_parent` pointer builds the tree). Clones share the
/// database.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_core::{Application, Graph, RunOptions, State, action};
/// use tributary_sqlite::{RunReader, RunStatus, SqliteTracker};
///
/// let dir = tempfile::tempdir()?;
/// let db = dir.path().join("tributary.db");
/// let tracker = SqliteTracker::open(&db).await?;
/// let graph = Graph::single(action("hello").writes(["greeting"]).run(|s: State, _, _| async move {
///     Ok((json!({}), s.set("greeting", "hi")))
/// }));
/// let mut app = Application::builder(graph)
///     .app_id("job-1")
///     .hook(tracker.clone())
///     .build()
///     .await?;
/// app.run(RunOptions::new()).await?;
/// tracker.flush().await?;
///
/// let runs = RunReader::open(&db)?;
/// let run = runs.run("job-1")?.unwrap();
/// assert_eq!((run.status, run.steps), (RunStatus::Completed, 1));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteTracker {
    db: Database,
    tokens: Arc<StepTokens>,
}

impl SqliteTracker {
    /// Open (or create, with its parent directories) the database at `path`.
    ///
    /// # Errors
    ///
    /// As [`Database::open`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        Ok(Self::new(Database::open(path).await?))
    }

    /// A tracker on an open database (to share it with a persister).
    pub fn new(db: Database) -> Self {
        SqliteTracker {
            db,
            tokens: Arc::default(),
        }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Wait until every record handed over so far is written.
    ///
    /// # Errors
    ///
    /// The first record that could not be written since the last flush.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: the records are written whether or not this is awaited.
    pub async fn flush(&self) -> Result<(), SqliteError> {
        self.db.flush().await
    }

    fn upsert_app_status(&self, app: &AppInfo, status: RunStatus) {
        let row = AppRow::new(app);
        let now = now_micros();
        self.db.write_detached(move |tx| {
            row.insert_if_missing(tx, now)?;
            tx.prepare_cached("UPDATE apps SET status = ?2, updated_at = ?3 WHERE app_id = ?1")?
                .execute(params![row.app_id, status.as_str(), now])
                .map(drop)
        });
    }
}

impl Hook for SqliteTracker {
    fn on_create(&self, app: &AppInfo, _state: &State) {
        let row = AppRow::new(app);
        let now = now_micros();
        self.db.write_detached(move |tx| {
            // A resumed application keeps its creation time and status; its
            // pointers are refreshed when it has new ones.
            tx.prepare_cached(
                "INSERT INTO apps (app_id, partition_key, status, created_at, updated_at,
                     parent_app_id, parent_sequence_id, parent_action, parent_partition_key,
                     spawn_app_id, spawn_sequence_id, spawn_action, spawn_partition_key)
                 VALUES (?1, ?2, 'created', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                 ON CONFLICT (app_id) DO UPDATE SET
                     partition_key = excluded.partition_key,
                     updated_at = excluded.updated_at,
                     parent_app_id = COALESCE(excluded.parent_app_id, parent_app_id),
                     parent_sequence_id = IIF(excluded.parent_app_id IS NULL, parent_sequence_id, excluded.parent_sequence_id),
                     parent_action = IIF(excluded.parent_app_id IS NULL, parent_action, excluded.parent_action),
                     parent_partition_key = IIF(excluded.parent_app_id IS NULL, parent_partition_key, excluded.parent_partition_key),
                     spawn_app_id = COALESCE(excluded.spawn_app_id, spawn_app_id),
                     spawn_sequence_id = IIF(excluded.spawn_app_id IS NULL, spawn_sequence_id, excluded.spawn_sequence_id),
                     spawn_action = IIF(excluded.spawn_app_id IS NULL, spawn_action, excluded.spawn_action),
                     spawn_partition_key = IIF(excluded.spawn_app_id IS NULL, spawn_partition_key, excluded.spawn_partition_key)",
            )?
            .execute(params![
                row.app_id,
                row.partition_key,
                now,
                row.parent.as_ref().map(|p| &p.app_id),
                row.parent.as_ref().map(|p| seq(p.sequence_id)),
                row.parent.as_ref().and_then(|p| p.action.as_ref()),
                row.parent.as_ref().and_then(|p| p.partition_key.as_ref()),
                row.spawn.as_ref().map(|p| &p.app_id),
                row.spawn.as_ref().map(|p| seq(p.sequence_id)),
                row.spawn.as_ref().and_then(|p| p.action.as_ref()),
                row.spawn.as_ref().and_then(|p| p.partition_key.as_ref()),
            ])
            .map(drop)
        });
    }

    fn before_run(&self, app: &AppInfo, _state: &State) {
        self.upsert_app_status(app, RunStatus::Running);
    }

    fn after_run(&self, app: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {
        let status = match outcome {
            Ok(out) if out.reason == HaltReason::GraphEnd => RunStatus::Completed,
            Ok(_) => RunStatus::Halted,
            Err(_) => RunStatus::Failed,
        };
        self.upsert_app_status(app, status);
    }

    fn on_task_spawn(&self, app: &AppInfo, task_key: &str) {
        // The runtime runs a task's steps without `run`: its task is its run.
        self.upsert_app_status(app, RunStatus::Running);
        let (app_id, key) = (app.app_id.clone(), task_key.to_owned());
        let run_id = app.run_id.as_deref().map(str::to_owned);
        let index = app.task_index.and_then(|i| i64::try_from(i).ok());
        let now = now_micros();
        self.db.write_detached(move |tx| {
            // The path extends the spawning parent's (a top-level task's
            // parent has none): the task keys from the root run.
            tx.prepare_cached(
                "UPDATE apps SET task_key = ?2, label = COALESCE(label, ?2),
                     spawned_at = COALESCE(spawned_at, ?3),
                     task_index = COALESCE(?4, task_index),
                     run_id = COALESCE(?5, run_id),
                     task_path = json_insert(
                         COALESCE((SELECT p.task_path FROM apps p
                                   WHERE p.app_id = apps.spawn_app_id), '[]'),
                         '$[#]', ?2)
                 WHERE app_id = ?1",
            )?
            .execute(params![app_id, key, now, index, run_id])
            .map(drop)
        });
    }

    fn on_task_complete(&self, app: &AppInfo, _task_key: &str, end: &TaskEnd<'_>) {
        let status = match end {
            TaskEnd::Completed => RunStatus::Completed,
            TaskEnd::Failed(_) => RunStatus::Failed,
            _ => RunStatus::Cancelled,
        };
        self.upsert_app_status(app, status);
    }

    fn on_stream_item(&self, item: &StreamItemInfo<'_>, value: &Value) {
        self.tokens.push(&item.app.app_id, item.sequence_id, value);
    }

    fn on_step_paused(&self, pause: &StepPause<'_>) {
        let (app_id, sequence_id) = (pause.app.app_id.clone(), seq(pause.sequence_id));
        let (waiting, reason) = (pause.waiting.to_owned(), pause.reason.to_owned());
        let now = now_micros();
        self.db.write_detached(move |tx| {
            // The step's latest attempt, the one that waits.
            tx.prepare_cached(
                "UPDATE steps SET paused_at = ?3, paused_on = ?4, pause_reason = ?5,
                     resumed_at = NULL
                 WHERE app_id = ?1 AND sequence_id = ?2 AND attempt =
                     (SELECT MAX(attempt) FROM steps WHERE app_id = ?1 AND sequence_id = ?2)",
            )?
            .execute(params![app_id, sequence_id, now, waiting, reason])?;
            tx.prepare_cached(
                "UPDATE apps SET status = 'paused', updated_at = ?2 WHERE app_id = ?1",
            )?
            .execute(params![app_id, now])
            .map(drop)
        });
    }

    fn on_step_resumed(&self, pause: &StepPause<'_>) {
        let (app_id, sequence_id) = (pause.app.app_id.clone(), seq(pause.sequence_id));
        let now = now_micros();
        self.db.write_detached(move |tx| {
            tx.prepare_cached(
                "UPDATE steps SET resumed_at = ?3
                 WHERE app_id = ?1 AND sequence_id = ?2 AND attempt =
                     (SELECT MAX(attempt) FROM steps WHERE app_id = ?1 AND sequence_id = ?2)",
            )?
            .execute(params![app_id, sequence_id, now])?;
            tx.prepare_cached(
                "UPDATE apps SET status = 'running', updated_at = ?2
                 WHERE app_id = ?1 AND status = 'paused'",
            )?
            .execute(params![app_id, now])
            .map(drop)
        });
    }

    fn before_step(&self, step: &StepInfo<'_>) {
        let row = AppRow::new(step.app);
        let (sequence_id, action) = (seq(step.sequence_id), step.action.to_owned());
        let now = now_micros();
        self.tokens.clear(&row.app_id);
        // Inputs that could not be read back (nested too deep) are left out.
        let limit = Checkpoint::MAX_DEPTH;
        let inputs = (!step.inputs.is_empty()
            && !step
                .inputs
                .as_map()
                .values()
                .any(|v| json_depth_exceeds(v, limit - 1)))
        .then(|| step.inputs.clone());
        self.db.write_detached(move |tx| {
            row.insert_if_missing(tx, now)?;
            // Records reach the writer in the order the hooks ran, so an
            // earlier attempt still `running` when a new one starts never
            // got its `after_step`: its process died mid-step.
            tx.prepare_cached(
                "UPDATE steps SET status = 'abandoned'
                 WHERE app_id = ?1 AND sequence_id = ?2 AND status = 'running'",
            )?
            .execute(params![row.app_id, sequence_id])?;
            let inputs = inputs
                .map(|i| serde_json::to_string(&i))
                .transpose()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            // Every start is a new attempt: a retry at the same sequence id
            // keeps the rows of the attempts before it.
            tx.prepare_cached(
                "INSERT INTO steps (app_id, sequence_id, attempt, partition_key, action, status,
                     started_at, parent_app_id, parent_sequence_id, spawn_app_id, spawn_sequence_id,
                     process, inputs)
                 VALUES (?1, ?2,
                     (SELECT COALESCE(MAX(attempt) + 1, 0) FROM steps
                      WHERE app_id = ?1 AND sequence_id = ?2),
                     ?3, ?4, 'running', ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                row.app_id,
                sequence_id,
                row.partition_key,
                action,
                now,
                row.parent.as_ref().map(|p| &p.app_id),
                row.parent.as_ref().map(|p| seq(p.sequence_id)),
                row.spawn.as_ref().map(|p| &p.app_id),
                row.spawn.as_ref().map(|p| seq(p.sequence_id)),
                process::current(),
                inputs,
            ])?;
            tx.prepare_cached("UPDATE apps SET process = ?2 WHERE app_id = ?1")?
                .execute(params![row.app_id, process::current()])
                .map(drop)
        });
    }

    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let now = now_micros();
        let row = AppRow::new(step.app);
        let (sequence_id, action) = (seq(step.sequence_id), step.action.to_owned());
        // Clones only here (a `State` clone is cheap); the JSON is encoded on
        // the writer thread.
        let (status, result, state, error, items): (_, Option<Value>, Option<State>, _, _) =
            match outcome {
                StepOutcome::Completed {
                    result,
                    state,
                    items,
                } => (
                    TrackedStepStatus::Completed,
                    Some((*result).clone()),
                    Some((*state).clone()),
                    None,
                    *items,
                ),
                StepOutcome::Failed { error, items } => (
                    TrackedStepStatus::Failed,
                    None,
                    Some(step.state.clone()),
                    Some(error.to_string()),
                    *items,
                ),
                StepOutcome::Abandoned { items } => {
                    (TrackedStepStatus::Abandoned, None, None, None, *items)
                }
                _ => (TrackedStepStatus::Abandoned, None, None, None, 0),
            };
        let app_status = match status {
            TrackedStepStatus::Failed => Some(RunStatus::Failed),
            TrackedStepStatus::Abandoned => Some(RunStatus::Abandoned),
            _ => None,
        };
        let retried = status == TrackedStepStatus::Completed;
        let tokens = self.tokens.take(&row.app_id, step.sequence_id);
        self.db.write_detached(move |tx| {
            // Tokens are kept shallow or not at all: each is one emitted value.
            let tokens = tokens
                .filter(|t| {
                    !t.iter()
                        .any(|v| json_depth_exceeds(v, Checkpoint::MAX_DEPTH - 1))
                })
                .map(|t| Value::Array(t).to_string());
            row.insert_if_missing(tx, now)?;
            // Measured without recursion before anything is encoded: what
            // could not be read back (or would overflow this thread's stack
            // to encode) is left out, with a note.
            let limit = Checkpoint::MAX_DEPTH;
            let deep_state = state
                .as_ref()
                .is_some_and(|s| s.iter().any(|(_, v)| json_depth_exceeds(v, limit - 1)));
            let deep_result = result
                .as_ref()
                .is_some_and(|r| json_depth_exceeds(r, limit));
            let unrecorded = match (deep_state, deep_result) {
                (false, false) => None,
                (true, false) => Some(format!("state nested more than {limit} levels deep")),
                (false, true) => Some(format!("result nested more than {limit} levels deep")),
                (true, true) => Some(format!(
                    "state and result nested more than {limit} levels deep"
                )),
            };
            let result = result.filter(|_| !deep_result).map(|r| r.to_string());
            let state = state
                .filter(|_| !deep_state)
                .map(|s| serde_json::to_string(&s))
                .transpose()
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            // The step's latest attempt, the one its `before_step` started.
            let updated = tx
                .prepare_cached(
                    "UPDATE steps SET status = ?3, ended_at = ?4, result = ?5, state = ?6,
                         error = ?7, items = ?8, unrecorded = ?9, tokens = ?10
                     WHERE app_id = ?1 AND sequence_id = ?2 AND attempt =
                         (SELECT MAX(attempt) FROM steps WHERE app_id = ?1 AND sequence_id = ?2)",
                )?
                .execute(params![
                    row.app_id,
                    sequence_id,
                    status.as_str(),
                    now,
                    result,
                    state,
                    error,
                    i64::try_from(items).unwrap_or(i64::MAX),
                    unrecorded,
                    tokens,
                ])?;
            if updated == 0 {
                // No `before_step` was recorded (the tracker was attached
                // mid-step): the end is all there is.
                tx.prepare_cached(
                    "INSERT INTO steps (app_id, sequence_id, attempt, partition_key, action,
                         status, started_at, ended_at, result, state, error, items, unrecorded,
                         process, tokens)
                     VALUES (?1, ?2, 0, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![
                    row.app_id,
                    sequence_id,
                    row.partition_key,
                    action,
                    status.as_str(),
                    now,
                    result,
                    state,
                    error,
                    i64::try_from(items).unwrap_or(i64::MAX),
                    unrecorded,
                    process::current(),
                    tokens,
                ])?;
            }
            match app_status {
                Some(s) => tx
                    .prepare_cached(
                        "UPDATE apps SET status = ?2, updated_at = ?3 WHERE app_id = ?1",
                    )?
                    .execute(params![row.app_id, s.as_str(), now])?,
                // A completed step after a failed or abandoned one (a retry
                // by the runtime, which runs steps without `run`): the
                // application is running again.
                None if retried => tx
                    .prepare_cached(
                        "UPDATE apps SET updated_at = ?2,
                             status = IIF(status IN ('failed', 'abandoned'), 'running', status)
                         WHERE app_id = ?1",
                    )?
                    .execute(params![row.app_id, now])?,
                None => tx
                    .prepare_cached("UPDATE apps SET updated_at = ?2 WHERE app_id = ?1")?
                    .execute(params![row.app_id, now])?,
            };
            Ok(())
        });
    }
}

/// The identity of an application, owned so it can cross to the writer.
struct AppRow {
    app_id: String,
    partition_key: Option<String>,
    parent: Option<ParentPointer>,
    spawn: Option<ParentPointer>,
}

impl AppRow {
    fn new(app: &AppInfo) -> Self {
        AppRow {
            app_id: app.app_id.clone(),
            partition_key: app.partition_key.clone(),
            parent: app.parent.clone(),
            spawn: app.spawning_parent.clone(),
        }
    }

    /// Record the application if `on_create` never did (the tracker was
    /// attached some other way).
    fn insert_if_missing(&self, tx: &rusqlite::Transaction<'_>, now: i64) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO apps (app_id, partition_key, status, created_at, updated_at,
                 parent_app_id, parent_sequence_id, parent_action, parent_partition_key,
                 spawn_app_id, spawn_sequence_id, spawn_action, spawn_partition_key)
             VALUES (?1, ?2, 'created', ?3, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (app_id) DO NOTHING",
        )?
        .execute(params![
            self.app_id,
            self.partition_key,
            now,
            self.parent.as_ref().map(|p| &p.app_id),
            self.parent.as_ref().map(|p| seq(p.sequence_id)),
            self.parent.as_ref().and_then(|p| p.action.as_ref()),
            self.parent.as_ref().and_then(|p| p.partition_key.as_ref()),
            self.spawn.as_ref().map(|p| &p.app_id),
            self.spawn.as_ref().map(|p| seq(p.sequence_id)),
            self.spawn.as_ref().and_then(|p| p.action.as_ref()),
            self.spawn.as_ref().and_then(|p| p.partition_key.as_ref()),
        ])
        .map(drop)
    }
}

/// A sequence id as SQLite's signed integer (ids beyond `i64::MAX` never
/// occur in practice and are clamped).
fn seq(sequence_id: u64) -> i64 {
    i64::try_from(sequence_id).unwrap_or(i64::MAX)
}
