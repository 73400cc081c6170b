//! [`PostgresTracker`]: a hook that records every application and step, and
//! announces each step with `NOTIFY`.

use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::types::ToSql;
use tributary_core::{
    AppInfo, ApplicationError, Checkpoint, HaltReason, Hook, Inputs, ParentPointer, RunOutcome,
    State, StepInfo, StepOutcome, StepPause, StepTokens, StreamItemInfo, TaskEnd,
    json_depth_exceeds,
};

use crate::database::Database;
use crate::error::PostgresError;
use crate::now_micros;
use crate::process;

/// A [`Hook`] that records every step of every application it is attached
/// to in PostgreSQL: the same records, in the same columns, as the SQLite
/// tracker (the application with its fork and spawning-parent pointers, task
/// key and path and last status; each attempt of each step with its timing,
/// result, state, error, item count and the process that ran it; its inputs
/// and the first tokens it streamed, kept as [`StepTokens`] keeps them).
///
/// Every step that ends is announced on the database's notification
/// channel ([`Database::channel`]) when its record commits, so a reader
/// that follows ([`Database::follow`]) sees it without polling.
///
/// Hooks are synchronous: the tracker hands each record to the database's
/// writer thread and returns, waiting only when
/// [`Database::RECORD_QUEUE_CAPACITY`] records are already queued. The
/// writer commits the records waiting at once in one transaction, in the
/// order the hooks ran. [`flush`](Self::flush) waits for everything handed
/// over so far.
///
/// Attach one clone to every application of a run. Clones share the
/// database; several processes may record into one database at once.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_core::{Application, Graph, RunOptions, State, action};
/// use tributary_postgres::{Database, PostgresTracker};
///
/// let db = Database::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// let tracker = PostgresTracker::new(db.clone());
/// let mut feed = db.follow().await?;
/// let graph = Graph::single(action("hello").writes(["greeting"]).run(|s: State, _, _| async move {
///     Ok((json!({}), s.set("greeting", "hi")))
/// }));
/// let mut app = Application::builder(graph)
///     .app_id("job-1")
///     .hook(tracker.clone())
///     .build()
///     .await?;
/// app.run(RunOptions::new()).await?;
/// let step = feed.next().await.unwrap()?;
/// assert_eq!((step.app_id.as_str(), step.action.as_str()), ("job-1", "hello"));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresTracker {
    db: Database,
    tokens: Arc<StepTokens>,
}

impl PostgresTracker {
    /// Connect to the database at `url` (schema `tributary`).
    ///
    /// # Errors
    ///
    /// As [`DatabaseBuilder::connect`](crate::DatabaseBuilder::connect).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Ok(Self::new(Database::connect(url).await?))
    }

    /// A tracker on an open database (to share it with a persister).
    pub fn new(db: Database) -> Self {
        PostgresTracker {
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
    pub async fn flush(&self) -> Result<(), PostgresError> {
        self.db.flush().await
    }

    fn status(&self, app: &AppInfo, status: &'static str) {
        self.db.record(Record::Status {
            row: AppRow::new(app),
            status,
            now: now_micros(),
        });
    }
}

impl Hook for PostgresTracker {
    fn on_create(&self, app: &AppInfo, _state: &State) {
        self.db.record(Record::Create {
            row: AppRow::new(app),
            now: now_micros(),
        });
    }

    fn before_run(&self, app: &AppInfo, _state: &State) {
        self.status(app, "running");
    }

    fn after_run(&self, app: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {
        let status = match outcome {
            Ok(out) if out.reason == HaltReason::GraphEnd => "completed",
            Ok(_) => "halted",
            Err(_) => "failed",
        };
        self.status(app, status);
    }

    fn on_task_spawn(&self, app: &AppInfo, task_key: &str) {
        // The runtime runs a task's steps without `run`: its task is its run.
        self.status(app, "running");
        self.db.record(Record::TaskSpawn {
            app_id: app.app_id.clone(),
            key: task_key.to_owned(),
            index: app.task_index.and_then(|i| i64::try_from(i).ok()),
            run_id: app.run_id.as_deref().map(str::to_owned),
            now: now_micros(),
        });
    }

    fn on_task_complete(&self, app: &AppInfo, _task_key: &str, end: &TaskEnd<'_>) {
        let status = match end {
            TaskEnd::Completed => "completed",
            TaskEnd::Failed(_) => "failed",
            _ => "cancelled",
        };
        self.status(app, status);
    }

    fn on_stream_item(&self, item: &StreamItemInfo<'_>, value: &Value) {
        self.tokens.push(&item.app.app_id, item.sequence_id, value);
    }

    fn on_step_paused(&self, pause: &StepPause<'_>) {
        self.db.record(Record::Pause {
            app_id: pause.app.app_id.clone(),
            sequence_id: seq(pause.sequence_id),
            paused: Some((pause.waiting.to_owned(), pause.reason.to_owned())),
            now: now_micros(),
        });
    }

    fn on_step_resumed(&self, pause: &StepPause<'_>) {
        self.db.record(Record::Pause {
            app_id: pause.app.app_id.clone(),
            sequence_id: seq(pause.sequence_id),
            paused: None,
            now: now_micros(),
        });
    }

    fn before_step(&self, step: &StepInfo<'_>) {
        self.tokens.clear(&step.app.app_id);
        // Inputs that could not be read back (nested too deep) are left out.
        let limit = Checkpoint::MAX_DEPTH;
        let inputs = (!step.inputs.is_empty()
            && !step
                .inputs
                .as_map()
                .values()
                .any(|v| json_depth_exceeds(v, limit - 1)))
        .then(|| step.inputs.clone());
        self.db.record(Record::BeforeStep {
            row: AppRow::new(step.app),
            sequence_id: seq(step.sequence_id),
            action: step.action.to_owned(),
            inputs,
            now: now_micros(),
        });
    }

    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let (status, result, state, error, items) = match outcome {
            StepOutcome::Completed {
                result,
                state,
                items,
            } => (
                "completed",
                Some((*result).clone()),
                Some((*state).clone()),
                None,
                *items,
            ),
            StepOutcome::Failed { error, items } => (
                "failed",
                None,
                Some(step.state.clone()),
                Some(error.to_string()),
                *items,
            ),
            StepOutcome::Abandoned { items } => ("abandoned", None, None, None, *items),
            _ => ("abandoned", None, None, None, 0),
        };
        self.db.record(Record::AfterStep(Box::new(AfterStep {
            row: AppRow::new(step.app),
            sequence_id: seq(step.sequence_id),
            action: step.action.to_owned(),
            status,
            result,
            state,
            error,
            items: i64::try_from(items).unwrap_or(i64::MAX),
            tokens: self.tokens.take(&step.app.app_id, step.sequence_id),
            now: now_micros(),
        })));
    }
}

// ===== records =====

/// One thing the tracker hands to the writer.
pub(crate) enum Record {
    Create {
        row: AppRow,
        now: i64,
    },
    Status {
        row: AppRow,
        status: &'static str,
        now: i64,
    },
    TaskSpawn {
        app_id: String,
        key: String,
        index: Option<i64>,
        run_id: Option<String>,
        now: i64,
    },
    BeforeStep {
        row: AppRow,
        sequence_id: i64,
        action: String,
        inputs: Option<Inputs>,
        now: i64,
    },
    AfterStep(Box<AfterStep>),
    /// A step paused from inside its action (`waiting` and `reason`), or
    /// was resumed (`None`).
    Pause {
        app_id: String,
        sequence_id: i64,
        paused: Option<(String, String)>,
        now: i64,
    },
}

pub(crate) struct AfterStep {
    row: AppRow,
    sequence_id: i64,
    action: String,
    status: &'static str,
    result: Option<Value>,
    state: Option<State>,
    error: Option<String>,
    items: i64,
    tokens: Option<Vec<Value>>,
    now: i64,
}

/// A parameter of a statement, owned so the statements of a whole batch can
/// be sent before any answer comes back.
type Param = Box<dyn ToSql + Sync + Send>;

/// A statement and its parameters.
pub(crate) type Statement = (&'static str, Vec<Param>);

fn p<T: ToSql + Sync + Send + 'static>(value: T) -> Param {
    Box::new(value)
}

const CREATE: &str = "
    INSERT INTO apps (app_id, partition_key, status, created_at, updated_at,
        parent_app_id, parent_sequence_id, parent_action, parent_partition_key,
        spawn_app_id, spawn_sequence_id, spawn_action, spawn_partition_key)
    VALUES ($1, $2, 'created', $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (app_id) DO UPDATE SET
        partition_key = excluded.partition_key,
        updated_at = excluded.updated_at,
        parent_app_id = COALESCE(excluded.parent_app_id, apps.parent_app_id),
        parent_sequence_id = CASE WHEN excluded.parent_app_id IS NULL
            THEN apps.parent_sequence_id ELSE excluded.parent_sequence_id END,
        parent_action = CASE WHEN excluded.parent_app_id IS NULL
            THEN apps.parent_action ELSE excluded.parent_action END,
        parent_partition_key = CASE WHEN excluded.parent_app_id IS NULL
            THEN apps.parent_partition_key ELSE excluded.parent_partition_key END,
        spawn_app_id = COALESCE(excluded.spawn_app_id, apps.spawn_app_id),
        spawn_sequence_id = CASE WHEN excluded.spawn_app_id IS NULL
            THEN apps.spawn_sequence_id ELSE excluded.spawn_sequence_id END,
        spawn_action = CASE WHEN excluded.spawn_app_id IS NULL
            THEN apps.spawn_action ELSE excluded.spawn_action END,
        spawn_partition_key = CASE WHEN excluded.spawn_app_id IS NULL
            THEN apps.spawn_partition_key ELSE excluded.spawn_partition_key END";

const INSERT_IF_MISSING: &str = "
    INSERT INTO apps (app_id, partition_key, status, created_at, updated_at,
        parent_app_id, parent_sequence_id, parent_action, parent_partition_key,
        spawn_app_id, spawn_sequence_id, spawn_action, spawn_partition_key)
    VALUES ($1, $2, 'created', $3, $3, $4, $5, $6, $7, $8, $9, $10, $11)
    ON CONFLICT (app_id) DO NOTHING";

const SET_STATUS: &str = "UPDATE apps SET status = $2, updated_at = $3 WHERE app_id = $1";

const TASK_SPAWN: &str = "
    UPDATE apps SET task_key = $2, label = COALESCE(label, $2),
        spawned_at = COALESCE(spawned_at, $3),
        task_index = COALESCE($4, task_index),
        run_id = COALESCE($5, run_id),
        task_path = (COALESCE((SELECT p.task_path FROM apps p WHERE p.app_id = apps.spawn_app_id),
                              '[]')::jsonb || to_jsonb($2::text))::text
    WHERE app_id = $1";

const ABANDON_RUNNING: &str = "
    UPDATE steps SET status = 'abandoned'
    WHERE app_id = $1 AND sequence_id = $2 AND status = 'running'";

const START_STEP: &str = "
    INSERT INTO steps (app_id, sequence_id, attempt, partition_key, action, status,
        started_at, parent_app_id, parent_sequence_id, spawn_app_id, spawn_sequence_id, process,
        inputs)
    VALUES ($1, $2,
        (SELECT COALESCE(MAX(attempt) + 1, 0) FROM steps WHERE app_id = $1 AND sequence_id = $2),
        $3, $4, 'running', $5, $6, $7, $8, $9, $10, $11)";

const SET_PROCESS: &str = "UPDATE apps SET process = $2 WHERE app_id = $1";

/// Ends the step's latest attempt, or records the end alone when no start
/// was recorded (the tracker was attached mid-step).
const END_STEP: &str = "
    WITH ended AS (
        UPDATE steps SET status = $3, ended_at = $4, result = $5, state = $6,
            error = $7, items = $8, unrecorded = $9, tokens = $13
        WHERE app_id = $1 AND sequence_id = $2 AND attempt =
            (SELECT MAX(attempt) FROM steps WHERE app_id = $1 AND sequence_id = $2)
        RETURNING 1
    )
    INSERT INTO steps (app_id, sequence_id, attempt, partition_key, action, status,
        started_at, ended_at, result, state, error, items, unrecorded, process, tokens)
    SELECT $1::text, $2::bigint, 0, $10::text, $11::text, $3::text, $4::bigint, $4::bigint,
        $5::text, $6::text, $7::text, $8::bigint, $9::text, $12::text, $13::text
    WHERE NOT EXISTS (SELECT 1 FROM ended)";

/// After a completed step, an application that had failed or was abandoned
/// is running again (a retry by the runtime).
const TOUCH_RETRIED: &str = "
    UPDATE apps SET updated_at = $2,
        status = CASE WHEN status IN ('failed', 'abandoned') THEN 'running' ELSE status END
    WHERE app_id = $1";

/// A step's latest attempt paused, and its application with it.
const PAUSE_STEP: &str = "
    WITH paused AS (
        UPDATE steps SET paused_at = $3, paused_on = $4, pause_reason = $5, resumed_at = NULL
        WHERE app_id = $1 AND sequence_id = $2 AND attempt =
            (SELECT MAX(attempt) FROM steps WHERE app_id = $1 AND sequence_id = $2)
        RETURNING 1
    )
    UPDATE apps SET status = 'paused', updated_at = $3 WHERE app_id = $1";

/// A paused step's latest attempt resumed, and its application with it.
const RESUME_STEP: &str = "
    WITH resumed AS (
        UPDATE steps SET resumed_at = $3
        WHERE app_id = $1 AND sequence_id = $2 AND attempt =
            (SELECT MAX(attempt) FROM steps WHERE app_id = $1 AND sequence_id = $2)
        RETURNING 1
    )
    UPDATE apps SET status = 'running', updated_at = $3
    WHERE app_id = $1 AND status = 'paused'";

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

impl Record {
    /// The statements that write the record, in order.
    pub(crate) fn statements(&self, channel: &str, out: &mut Vec<Statement>) {
        match self {
            Record::Create { row, now } => out.push((CREATE, row.params(*now))),
            Record::Status { row, status, now } => {
                out.push((INSERT_IF_MISSING, row.params(*now)));
                out.push((SET_STATUS, vec![p(row.app_id.clone()), p(*status), p(*now)]));
            }
            Record::TaskSpawn {
                app_id,
                key,
                index,
                run_id,
                now,
            } => {
                out.push((
                    TASK_SPAWN,
                    vec![
                        p(app_id.clone()),
                        p(key.clone()),
                        p(*now),
                        p(*index),
                        p(run_id.clone()),
                    ],
                ));
            }
            Record::BeforeStep {
                row,
                sequence_id,
                action,
                inputs,
                now,
            } => {
                out.push((INSERT_IF_MISSING, row.params(*now)));
                out.push((
                    ABANDON_RUNNING,
                    vec![p(row.app_id.clone()), p(*sequence_id)],
                ));
                out.push((
                    START_STEP,
                    vec![
                        p(row.app_id.clone()),
                        p(*sequence_id),
                        p(row.partition_key.clone()),
                        p(action.clone()),
                        p(*now),
                        p(row.parent.as_ref().map(|x| x.app_id.clone())),
                        p(row.parent.as_ref().map(|x| seq(x.sequence_id))),
                        p(row.spawn.as_ref().map(|x| x.app_id.clone())),
                        p(row.spawn.as_ref().map(|x| seq(x.sequence_id))),
                        p(process::current()),
                        p(inputs.as_ref().and_then(|i| serde_json::to_string(i).ok())),
                    ],
                ));
                out.push((
                    SET_PROCESS,
                    vec![p(row.app_id.clone()), p(process::current())],
                ));
            }
            Record::AfterStep(step) => step.statements(channel, out),
            Record::Pause {
                app_id,
                sequence_id,
                paused,
                now,
            } => {
                match paused {
                    Some((waiting, reason)) => out.push((
                        PAUSE_STEP,
                        vec![
                            p(app_id.clone()),
                            p(*sequence_id),
                            p(*now),
                            p(waiting.clone()),
                            p(reason.clone()),
                        ],
                    )),
                    None => out.push((
                        RESUME_STEP,
                        vec![p(app_id.clone()), p(*sequence_id), p(*now)],
                    )),
                }
                // No notice: the feed announces steps that end.
            }
        }
    }
}

impl AfterStep {
    fn statements(&self, channel: &str, out: &mut Vec<Statement>) {
        let row = &self.row;
        out.push((INSERT_IF_MISSING, row.params(self.now)));
        // Measured without recursion before anything is encoded: what could
        // not be read back is left out, with a note.
        let limit = Checkpoint::MAX_DEPTH;
        let deep_state = self
            .state
            .as_ref()
            .is_some_and(|s| s.iter().any(|(_, v)| json_depth_exceeds(v, limit - 1)));
        let deep_result = self
            .result
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
        let result = self
            .result
            .as_ref()
            .filter(|_| !deep_result)
            .map(|r| r.to_string());
        let state = self
            .state
            .as_ref()
            .filter(|_| !deep_state)
            .and_then(|s| serde_json::to_string(s).ok());
        // Tokens are kept shallow or not at all: each is one emitted value.
        let tokens = self
            .tokens
            .as_ref()
            .filter(|t| !t.iter().any(|v| json_depth_exceeds(v, limit - 1)))
            .map(|t| Value::Array(t.clone()).to_string());
        out.push((
            END_STEP,
            vec![
                p(row.app_id.clone()),
                p(self.sequence_id),
                p(self.status),
                p(self.now),
                p(result),
                p(state),
                p(self.error.clone()),
                p(self.items),
                p(unrecorded),
                p(row.partition_key.clone()),
                p(self.action.clone()),
                p(process::current()),
                p(tokens),
            ],
        ));
        let app_status = match self.status {
            "failed" => Some("failed"),
            "abandoned" => Some("abandoned"),
            _ => None,
        };
        match app_status {
            Some(status) => out.push((
                SET_STATUS,
                vec![p(row.app_id.clone()), p(status), p(self.now)],
            )),
            None => out.push((TOUCH_RETRIED, vec![p(row.app_id.clone()), p(self.now)])),
        }
        let notice = serde_json::json!({
            "app_id": row.app_id,
            "sequence_id": self.sequence_id,
            "action": self.action,
            "status": self.status,
        });
        out.push((NOTIFY, vec![p(channel.to_owned()), p(notice.to_string())]));
    }
}

/// The identity of an application, owned so it can cross to the writer.
pub(crate) struct AppRow {
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

    /// The parameters of [`CREATE`] and [`INSERT_IF_MISSING`].
    fn params(&self, now: i64) -> Vec<Param> {
        let pointer = |x: &Option<ParentPointer>| -> [Param; 4] {
            [
                p(x.as_ref().map(|x| x.app_id.clone())),
                p(x.as_ref().map(|x| seq(x.sequence_id))),
                p(x.as_ref().and_then(|x| x.action.clone())),
                p(x.as_ref().and_then(|x| x.partition_key.clone())),
            ]
        };
        let mut params = vec![
            p(self.app_id.clone()),
            p(self.partition_key.clone()),
            p(now),
        ];
        params.extend(pointer(&self.parent));
        params.extend(pointer(&self.spawn));
        params
    }
}

/// A sequence id as PostgreSQL's bigint (ids beyond `i64::MAX` never occur
/// in practice and are clamped).
fn seq(sequence_id: u64) -> i64 {
    i64::try_from(sequence_id).unwrap_or(i64::MAX)
}
