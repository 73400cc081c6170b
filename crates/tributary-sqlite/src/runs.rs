//! [`RunReader`]: reading back what a [`SqliteTracker`](crate::SqliteTracker)
//! recorded.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;
use serde_json::Value;
use tributary_core::ParentPointer;

use crate::error::SqliteError;
use crate::schema;
use crate::source::{AppFilter, JournaledStep, RunSource, StepMark, TrackerRows};

/// The last known status of a tracked application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Built; no run has started yet.
    Created,
    /// A run started and has not ended (or its process died).
    Running,
    /// A step paused from inside its action (a durable step out of
    /// retries) and waits to be resumed ([`TrackedStep::pause`]).
    Paused,
    /// The last run reached the end of the graph.
    Completed,
    /// The last run stopped at a halt point.
    Halted,
    /// A step failed.
    Failed,
    /// A step was abandoned (its future dropped: the run was cancelled or
    /// its consumer stopped reading).
    Abandoned,
    /// The runtime cancelled the task running it.
    Cancelled,
    /// Recorded as running, but the process that ran it is gone (killed or
    /// crashed): it will not go on unless it is resumed. Never stored; the
    /// reader reports it for a `running` app whose process has died.
    Interrupted,
    /// The row could not be read (see [`RunSummary::problem`]).
    Unreadable,
}

/// How a tracked step ended, or that it has not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum TrackedStepStatus {
    /// Started, not ended (or its process died).
    Running,
    /// Completed; its state change was kept.
    Completed,
    /// Failed; the state is as before the step.
    Failed,
    /// Abandoned before it ended.
    Abandoned,
    /// Recorded as running, but the process that ran it is gone. Never
    /// stored; the reader reports it for a `running` attempt whose process
    /// has died.
    Interrupted,
    /// The row could not be decoded (see [`TrackedStep::unreadable`]).
    Unreadable,
}

macro_rules! string_enum {
    ($ty:ident { $($variant:ident => $s:literal),* $(,)? }) => {
        impl $ty {
            /// The name stored in the database and shown by the CLI.
            pub fn as_str(self) -> &'static str {
                match self { $($ty::$variant => $s),* }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($s => Ok($ty::$variant),)*
                    other => Err(format!("unknown status `{other}`")),
                }
            }
        }
    };
}

string_enum!(RunStatus {
    Created => "created",
    Running => "running",
    Paused => "paused",
    Completed => "completed",
    Halted => "halted",
    Failed => "failed",
    Abandoned => "abandoned",
    Cancelled => "cancelled",
    Interrupted => "interrupted",
    Unreadable => "unreadable",
});

string_enum!(TrackedStepStatus {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Abandoned => "abandoned",
    Interrupted => "interrupted",
    Unreadable => "unreadable",
});

/// A stretch of time in which no process ran an application: between the
/// last record of a process that died and the first record of the process
/// that resumed it. Microseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Gap {
    /// The last record before it.
    pub from: i64,
    /// The first record after it.
    pub to: i64,
}

impl Gap {
    /// Its length in microseconds (`None` if the times are inconsistent).
    pub fn micros(&self) -> Option<i64> {
        self.to.checked_sub(self.from).filter(|d| *d >= 0)
    }
}

/// One tracked application. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The application.
    pub app_id: String,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// Its last known status ([`RunStatus::Interrupted`] when it was
    /// running and its process has died).
    pub status: RunStatus,
    /// How many steps were recorded: distinct sequence ids, so a step
    /// retried at its sequence id counts once.
    pub steps: u64,
    /// How many step attempts were recorded: every start of a step,
    /// retries included (at least `steps`).
    pub attempts: u64,
    /// How many attempts were retries after a failure.
    pub retries: u64,
    /// How many times the application was resumed after its process died
    /// (or an attempt was abandoned) and another run picked it up.
    pub resumes: u64,
    /// When it was first built.
    pub created_at: i64,
    /// When its first recorded step started.
    pub started_at: Option<i64>,
    /// When its last recorded step ended.
    pub ended_at: Option<i64>,
    /// Time some process was running it: from the first step's start to
    /// the last record, minus the [`gaps`](Self::gaps).
    pub active_micros: Option<i64>,
    /// The stretches when no process ran it (between a death and a resume).
    pub gaps: Vec<Gap>,
    /// The application it was forked from.
    pub parent: Option<ParentPointer>,
    /// The application (and step) that spawned it.
    pub spawning_parent: Option<ParentPointer>,
    /// Its task key, when the runtime spawned it as a task.
    pub task_key: Option<String>,
    /// The task keys from the root run down to it (empty when unknown).
    pub task_path: Vec<String>,
    /// Its index among its sibling tasks, when the runtime reported it.
    pub task_index: Option<u64>,
    /// The run id of its run, when the runtime reported it.
    pub run_id: Option<String>,
    /// A name for people (the task key unless set otherwise).
    pub label: Option<String>,
    /// How many applications it spawned directly.
    pub children: u64,
    /// The process that last ran it (`host/pid/start`).
    pub process: Option<String>,
    /// Why the row could not be read, for [`RunStatus::Unreadable`].
    pub problem: Option<String>,
}

impl RunSummary {
    /// From the first step's start to the last step's end, in microseconds,
    /// gaps included (`None` without both times, or if they are
    /// inconsistent).
    pub fn duration_micros(&self) -> Option<i64> {
        self.ended_at?
            .checked_sub(self.started_at?)
            .filter(|d| *d >= 0)
    }

    /// The label, else the task key, else the app id.
    pub fn display_name(&self) -> &str {
        self.label
            .as_deref()
            .or(self.task_key.as_deref())
            .unwrap_or(&self.app_id)
    }

    /// A row of `app_id` that could not be decoded, listed with the
    /// reason ([`RunStatus::Unreadable`]).
    pub fn unreadable(app_id: String, problem: String) -> Self {
        RunSummary {
            app_id,
            partition_key: None,
            status: RunStatus::Unreadable,
            steps: 0,
            attempts: 0,
            retries: 0,
            resumes: 0,
            created_at: 0,
            started_at: None,
            ended_at: None,
            active_micros: None,
            gaps: Vec::new(),
            parent: None,
            spawning_parent: None,
            task_key: None,
            task_path: Vec::new(),
            task_index: None,
            run_id: None,
            label: None,
            children: 0,
            process: None,
            problem: Some(problem),
        }
    }
}

/// One tracked step. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct TrackedStep {
    /// The step's sequence id.
    pub sequence_id: u64,
    /// Which attempt at this sequence id, from 0: a failed step is retried
    /// at the same sequence id, and each retry is the next attempt.
    pub attempt: u32,
    /// Its action.
    pub action: String,
    /// How it ended.
    pub status: TrackedStepStatus,
    /// When it started.
    pub started_at: i64,
    /// When it ended.
    pub ended_at: Option<i64>,
    /// The action's result (completed steps).
    pub result: Option<Value>,
    /// The state after a completed step, before a failed one.
    pub state: Option<Value>,
    /// Why it failed.
    pub error: Option<String>,
    /// How many intermediate outputs it emitted.
    pub items: u64,
    /// The process that ran it (`host/pid/start`), when recorded.
    pub process: Option<String>,
    /// Whether it began a resume: the attempt before it was abandoned or
    /// its process died, rather than failed (a retry).
    pub resumed: bool,
    /// Why its state or result was not recorded (nested too deep).
    pub unrecorded: Option<String>,
    /// The inputs the step was given (a JSON object), when it was given
    /// any and they were recorded (schema version 4 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<Value>,
    /// The first tokens it streamed (the `items` count has them all), when
    /// recorded (schema version 4 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokens: Option<Vec<Value>>,
    /// What of the record could not be decoded (its JSON is damaged or
    /// nested deeper than a decoder accepts).
    pub unreadable: Option<String>,
    /// The step's latest pause from inside its action, if it paused
    /// (schema version 6 on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<StepPaused>,
}

/// A step that paused from inside its action — a durable step out of
/// retries with `pause_on_exhausted` pauses its task — as the tracker
/// recorded it. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct StepPaused {
    /// When it paused.
    pub at: i64,
    /// What waits (the durable step, `charge#0`).
    pub waiting: String,
    /// Why (that step's last error).
    pub reason: String,
    /// When it was resumed; `None` while it waits.
    pub resumed_at: Option<i64>,
}

impl StepPaused {
    /// The pause of a row's four columns, when it has one.
    pub fn of(
        at: Option<i64>,
        waiting: Option<String>,
        reason: Option<String>,
        resumed_at: Option<i64>,
    ) -> Option<Self> {
        Some(StepPaused {
            at: at?,
            waiting: waiting.unwrap_or_default(),
            reason: reason.unwrap_or_default(),
            resumed_at,
        })
    }

    /// Whether it still waits.
    pub fn is_waiting(&self) -> bool {
        self.resumed_at.is_none()
    }
}

impl TrackedStep {
    /// A step row that could not be decoded, listed with the reason
    /// ([`TrackedStepStatus::Unreadable`]).
    pub fn unreadable(sequence_id: u64, action: String, problem: String) -> Self {
        TrackedStep {
            sequence_id,
            attempt: 0,
            action,
            status: TrackedStepStatus::Unreadable,
            started_at: 0,
            ended_at: None,
            result: None,
            state: None,
            error: None,
            items: 0,
            process: None,
            resumed: false,
            unrecorded: None,
            inputs: None,
            tokens: None,
            unreadable: Some(problem),
            pause: None,
        }
    }

    /// How long it ran, in microseconds (`None` while running, or if the
    /// times are inconsistent).
    pub fn duration_micros(&self) -> Option<i64> {
        self.ended_at?
            .checked_sub(self.started_at)
            .filter(|d| *d >= 0)
    }
}

/// Reads the runs a [`SqliteTracker`](crate::SqliteTracker) recorded.
///
/// A blocking reader for tools like the `tributary` command: it opens the
/// file read-only, never creates, migrates or writes it (a file the user
/// may only read, in a directory they may not write, is read as it is), and
/// reads while writers keep writing (WAL). From async code, call it inside
/// `spawn_blocking`. A row it cannot decode is reported as
/// [`RunStatus::Unreadable`] with the reason, not as an error for the whole
/// listing.
#[derive(Debug)]
pub struct RunReader {
    conn: Connection,
    path: PathBuf,
    /// The columns of `apps` to select (older schemas lack some).
    run_columns: String,
    /// Whether `steps` has the columns of schema version 2.
    steps_v2: bool,
    /// Whether the file has the journal of schema version 3.
    journal: bool,
    /// Whether the journal has the numbered executions of version 5.
    executions: bool,
    /// Whether `steps` has the columns of schema version 4.
    steps_v4: bool,
    /// Whether `steps` has the pause columns of schema version 6.
    steps_v6: bool,
}

const RUN_COLUMNS: &str = "
    a.app_id, a.partition_key, a.status, a.created_at,
    a.parent_app_id, a.parent_sequence_id, a.parent_action, a.parent_partition_key,
    a.spawn_app_id, a.spawn_sequence_id, a.spawn_action, a.spawn_partition_key,
    (SELECT COUNT(DISTINCT sequence_id) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT COUNT(*) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT MIN(started_at) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT MAX(ended_at) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT COUNT(*) FROM apps c WHERE c.spawn_app_id = a.app_id),
    a.task_key, a.task_path, a.task_index, a.run_id, a.label, a.process";

/// Schema version 1 has no task, run or process columns.
const RUN_COLUMNS_V1: &str = "NULL, NULL, NULL, NULL, NULL, NULL";

/// Children in task order: by the index the runtime reported, else in the
/// order they were spawned.
const TASK_ORDER: &str = "a.spawn_sequence_id, a.task_index IS NULL, a.task_index,
    COALESCE(a.spawned_at, a.created_at), a.created_at, a.app_id";
const TASK_ORDER_V1: &str = "a.spawn_sequence_id, a.created_at, a.app_id";

impl RunReader {
    /// Open the database at `path` for reading.
    ///
    /// # Errors
    ///
    /// [`SqliteError::NotFound`] when there is no such file,
    /// [`SqliteError::NotADatabase`], [`SqliteError::Corrupt`],
    /// [`SqliteError::Foreign`], [`SqliteError::Uninitialized`] and
    /// [`SqliteError::SchemaTooNew`] for a file it cannot read.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, SqliteError> {
        let path = path.as_ref().to_path_buf();
        let (conn, version) = schema::open_read_only(&path)?;
        let v2 = version >= 2;
        let run_columns = if v2 {
            RUN_COLUMNS.to_owned()
        } else {
            // The same columns, the version 2 ones empty.
            let common = &RUN_COLUMNS[..RUN_COLUMNS.rfind("a.task_key").unwrap_or(0)];
            format!("{common}{RUN_COLUMNS_V1}")
        };
        Ok(RunReader {
            conn,
            path,
            run_columns,
            steps_v2: v2,
            journal: version >= 3,
            executions: version >= 5,
            steps_v4: version >= 4,
            steps_v6: version >= 6,
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
        |e| SqliteError::sqlite(&self.path, e)
    }

    /// Every tracked application, children included, oldest first.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn runs(&self) -> Result<Vec<RunSummary>, SqliteError> {
        RunSource::runs(self)
    }

    /// The applications no other application spawned (the roots of their
    /// trees), oldest first.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn roots(&self) -> Result<Vec<RunSummary>, SqliteError> {
        RunSource::roots(self)
    }

    /// The application `app_id`, if it was tracked.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn run(&self, app_id: &str) -> Result<Option<RunSummary>, SqliteError> {
        RunSource::run(self, app_id)
    }

    /// The applications spawned by `app_id`, by spawning step, then in task
    /// order.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn children(&self, app_id: &str) -> Result<Vec<RunSummary>, SqliteError> {
        RunSource::children(self, app_id)
    }

    /// The steps of `app_id`, every attempt of each, ordered by sequence id
    /// and attempt: a failed attempt comes before the retry that followed.
    /// JSON that cannot be decoded is left out and named in
    /// [`TrackedStep::unreadable`]; a row that cannot be decoded at all is
    /// listed as [`TrackedStepStatus::Unreadable`] with the reason.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn steps(&self, app_id: &str) -> Result<Vec<TrackedStep>, SqliteError> {
        RunSource::steps(self, app_id)
    }

    /// The durable-step journal of `app_id`, by sequence id and position
    /// (empty for a file written before the journal existed).
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails.
    pub fn journal(&self, app_id: &str) -> Result<Vec<JournaledStep>, SqliteError> {
        RunSource::journal(self, app_id)
    }

    /// `process, unrecorded` of `steps`, empty in schema version 1.
    fn steps_extra(&self) -> &'static str {
        if self.steps_v2 {
            "process, unrecorded"
        } else {
            "NULL, NULL"
        }
    }

    fn query_runs(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RunSummary>, SqliteError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt
            .query_map(params, |row| {
                Ok(run_from_row(row).unwrap_or_else(|e| {
                    let id = match row.get_ref(0) {
                        Ok(v) => value_text(v),
                        Err(_) => "?".to_owned(),
                    };
                    RunSummary::unreadable(id, e.to_string())
                }))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }
}

impl TrackerRows for RunReader {
    type Error = SqliteError;

    fn journal_rows(&self, app_id: &str) -> Result<Vec<JournaledStep>, SqliteError> {
        if !self.journal {
            return Ok(Vec::new());
        }
        let sql = if self.executions {
            "SELECT j.sequence_id, j.position, j.step, j.occurrence, j.kind, j.status, j.value,
                 j.error, j.written_at, j.execution, COALESCE(x.execution, 0)
             FROM journal j LEFT JOIN journal_executions x
                 ON x.app_id = j.app_id AND x.sequence_id = j.sequence_id
             WHERE j.app_id = ?1 ORDER BY j.sequence_id, j.position"
        } else {
            "SELECT sequence_id, position, step, occurrence, kind, status, value, error,
                 written_at, 0, 0
             FROM journal WHERE app_id = ?1 ORDER BY sequence_id, position"
        };
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt
            .query_map([app_id], |row| {
                Ok(JournaledStep {
                    sequence_id: row.get(0)?,
                    position: row.get(1)?,
                    step: row.get(2)?,
                    occurrence: row.get(3)?,
                    kind: row.get(4)?,
                    status: row.get(5)?,
                    value: row.get(6)?,
                    error: row.get(7)?,
                    written_at: row.get(8)?,
                    execution: row.get(9)?,
                    latest_execution: row.get(10)?,
                    replay: None,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn apps(&self, filter: AppFilter<'_>) -> Result<Vec<RunSummary>, SqliteError> {
        let columns = &self.run_columns;
        match filter {
            AppFilter::All => self.query_runs(
                &format!("SELECT {columns} FROM apps a ORDER BY a.created_at, a.app_id"),
                params![],
            ),
            AppFilter::Roots => self.query_runs(
                &format!(
                    "SELECT {columns} FROM apps a WHERE a.spawn_app_id IS NULL
                     ORDER BY a.created_at, a.app_id"
                ),
                params![],
            ),
            AppFilter::One(app_id) => self.query_runs(
                &format!("SELECT {columns} FROM apps a WHERE a.app_id = ?1"),
                params![app_id],
            ),
            AppFilter::ChildrenOf(app_id) => {
                let order = if self.steps_v2 {
                    TASK_ORDER
                } else {
                    TASK_ORDER_V1
                };
                self.query_runs(
                    &format!(
                        "SELECT {columns} FROM apps a WHERE a.spawn_app_id = ?1 ORDER BY {order}"
                    ),
                    params![app_id],
                )
            }
        }
    }

    fn step_rows(&self, app_id: &str) -> Result<Vec<TrackedStep>, SqliteError> {
        let sql = format!(
            "SELECT sequence_id, attempt, action, status, started_at, ended_at, result, state,
                 error, items, {}, {}, {}
             FROM steps WHERE app_id = ?1 ORDER BY sequence_id, attempt",
            self.steps_extra(),
            if self.steps_v4 {
                "inputs, tokens"
            } else {
                "NULL, NULL"
            },
            if self.steps_v6 {
                "paused_at, paused_on, pause_reason, resumed_at"
            } else {
                "NULL, NULL, NULL, NULL"
            }
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let rows = stmt
            .query_map([app_id], |row| {
                Ok(step_from_row(row).unwrap_or_else(|e| unreadable_step(row, e)))
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn marks(&self, app_id: &str) -> Result<Vec<StepMark>, SqliteError> {
        let sql = format!(
            "SELECT sequence_id, attempt, status, started_at, ended_at, {}
             FROM steps WHERE app_id = ?1 ORDER BY sequence_id, attempt",
            self.steps_extra()
        );
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.err())?;
        let marks = stmt
            .query_map([app_id], |row| {
                Ok(StepMark::new(
                    row.get(0)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .map_err(self.err())?;
        marks.collect::<Result<_, _>>().map_err(self.err())
    }

    fn last_heard(&self, process: &str) -> Result<Option<i64>, SqliteError> {
        self.conn
            .prepare_cached(
                "SELECT COALESCE(ended_at, started_at) FROM steps
                 WHERE process = ?1 ORDER BY started_at DESC LIMIT 1",
            )
            .and_then(|mut stmt| stmt.query_row([process], |row| row.get(0)).optional())
            .map_err(self.err())
    }
}

fn value_text(v: ValueRef<'_>) -> String {
    match v {
        ValueRef::Text(t) | ValueRef::Blob(t) => String::from_utf8_lossy(t).into_owned(),
        ValueRef::Integer(i) => i.to_string(),
        ValueRef::Real(r) => r.to_string(),
        ValueRef::Null => "?".to_owned(),
    }
}

fn run_from_row(row: &Row<'_>) -> rusqlite::Result<RunSummary> {
    let pointer = |at: usize| -> rusqlite::Result<Option<ParentPointer>> {
        let Some(app_id) = row.get::<_, Option<String>>(at)? else {
            return Ok(None);
        };
        Ok(Some(ParentPointer {
            app_id,
            sequence_id: row
                .get::<_, Option<i64>>(at + 1)?
                .and_then(|s| u64::try_from(s).ok())
                .unwrap_or_default(),
            action: row.get(at + 2)?,
            partition_key: row.get(at + 3)?,
        }))
    };
    let task_path = match row.get::<_, Option<String>>(18)? {
        None => Vec::new(),
        Some(text) => {
            serde_json::from_str(&text).map_err(|e| bad_column(18, format!("task path: {e}")))?
        }
    };
    Ok(RunSummary {
        app_id: row.get(0)?,
        partition_key: row.get(1)?,
        status: get_parsed(row, 2)?,
        created_at: row.get(3)?,
        parent: pointer(4)?,
        spawning_parent: pointer(8)?,
        steps: get_u64(row, 12)?,
        attempts: get_u64(row, 13)?,
        started_at: row.get(14)?,
        ended_at: row.get(15)?,
        children: get_u64(row, 16)?,
        task_key: row.get(17)?,
        task_path,
        task_index: row
            .get::<_, Option<i64>>(19)?
            .and_then(|i| u64::try_from(i).ok()),
        run_id: row.get(20)?,
        label: row.get(21)?,
        process: row.get(22)?,
        retries: 0,
        resumes: 0,
        active_micros: None,
        gaps: Vec::new(),
        problem: None,
    })
}

fn step_from_row(row: &Row<'_>) -> rusqlite::Result<TrackedStep> {
    let mut unreadable = Vec::new();
    let mut json = |at: usize, what: &str| -> rusqlite::Result<Option<Value>> {
        Ok(get_json(row, at)?.unwrap_or_else(|e| {
            unreadable.push(format!("{what}: {e}"));
            None
        }))
    };
    let result = json(6, "result")?;
    let state = json(7, "state")?;
    let inputs = json(12, "inputs")?;
    let tokens = match json(13, "tokens")? {
        Some(Value::Array(tokens)) => Some(tokens),
        Some(_) => {
            unreadable.push("tokens: not an array".to_owned());
            None
        }
        None => None,
    };
    Ok(TrackedStep {
        sequence_id: get_u64(row, 0)?,
        attempt: u32::try_from(get_u64(row, 1)?).map_err(|e| bad_column(1, e.to_string()))?,
        action: row.get(2)?,
        status: get_parsed(row, 3)?,
        started_at: row.get(4)?,
        ended_at: row.get(5)?,
        result,
        state,
        error: row.get(8)?,
        items: get_u64(row, 9)?,
        process: row.get(10)?,
        resumed: false,
        unrecorded: row.get(11)?,
        inputs,
        tokens,
        unreadable: (!unreadable.is_empty()).then(|| unreadable.join("; ")),
        pause: StepPaused::of(row.get(14)?, row.get(15)?, row.get(16)?, row.get(17)?),
    })
}

/// A step row that could not be decoded, kept in the list with what could
/// be read and the reason.
fn unreadable_step(row: &Row<'_>, error: rusqlite::Error) -> TrackedStep {
    let int = |at: usize| row.get::<_, i64>(at).ok();
    TrackedStep {
        sequence_id: int(0).and_then(|v| u64::try_from(v).ok()).unwrap_or(0),
        attempt: int(1).and_then(|v| u32::try_from(v).ok()).unwrap_or(0),
        action: row.get_ref(2).map_or_else(|_| "?".to_owned(), value_text),
        status: TrackedStepStatus::Unreadable,
        started_at: int(4).unwrap_or(0),
        ended_at: int(5),
        result: None,
        state: None,
        error: None,
        items: 0,
        process: None,
        resumed: false,
        unrecorded: None,
        inputs: None,
        tokens: None,
        unreadable: Some(error.to_string()),
        pause: None,
    }
}

fn bad_column(at: usize, reason: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(at, rusqlite::types::Type::Text, reason.into())
}

fn get_u64(row: &Row<'_>, at: usize) -> rusqlite::Result<u64> {
    let v: i64 = row.get(at)?;
    u64::try_from(v).map_err(|_| bad_column(at, format!("negative count {v}")))
}

fn get_parsed<T: FromStr<Err = String>>(row: &Row<'_>, at: usize) -> rusqlite::Result<T> {
    let s: String = row.get(at)?;
    s.parse().map_err(|e| bad_column(at, e))
}

/// A JSON column: `Ok(Err(_))` when it holds text that does not decode
/// (damaged, or nested deeper than the decoder's limit).
fn get_json(
    row: &Row<'_>,
    at: usize,
) -> rusqlite::Result<Result<Option<Value>, serde_json::Error>> {
    let Some(s) = row.get::<_, Option<String>>(at)? else {
        return Ok(Ok(None));
    };
    Ok(serde_json::from_str(&s).map(Some))
}
