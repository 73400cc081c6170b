//! [`RunReader`]: reading back what a [`SqliteTracker`](crate::SqliteTracker)
//! recorded.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rusqlite::{Connection, Row, params};
use serde::Serialize;
use serde_json::Value;
use tributary_core::ParentPointer;

use crate::error::SqliteError;
use crate::schema;

/// The last known status of a tracked application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunStatus {
    /// Built; no run has started yet.
    Created,
    /// A run started and has not ended (or its process died).
    Running,
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
    Completed => "completed",
    Halted => "halted",
    Failed => "failed",
    Abandoned => "abandoned",
    Cancelled => "cancelled",
});

string_enum!(TrackedStepStatus {
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Abandoned => "abandoned",
});

/// One tracked application. Times are microseconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct RunSummary {
    /// The application.
    pub app_id: String,
    /// Its partition key.
    pub partition_key: Option<String>,
    /// Its last known status.
    pub status: RunStatus,
    /// How many steps were recorded: distinct sequence ids, so a step
    /// retried at its sequence id counts once.
    pub steps: u64,
    /// How many step attempts were recorded: every start of a step,
    /// retries included (at least `steps`).
    pub attempts: u64,
    /// When it was first built.
    pub created_at: i64,
    /// When its first recorded step started.
    pub started_at: Option<i64>,
    /// When its last recorded step ended.
    pub ended_at: Option<i64>,
    /// The application it was forked from.
    pub parent: Option<ParentPointer>,
    /// The application (and step) that spawned it.
    pub spawning_parent: Option<ParentPointer>,
}

impl RunSummary {
    /// From the first step's start to the last step's end, in microseconds.
    pub fn duration_micros(&self) -> Option<i64> {
        Some(self.ended_at? - self.started_at?)
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
}

impl TrackedStep {
    /// How long it ran, in microseconds.
    pub fn duration_micros(&self) -> Option<i64> {
        Some(self.ended_at? - self.started_at)
    }
}

/// Reads the runs a [`SqliteTracker`](crate::SqliteTracker) recorded.
///
/// A blocking reader for tools like the `tributary` command: it opens the
/// file read-only, never creates or migrates it, and reads while writers
/// keep writing (WAL). From async code, call it inside `spawn_blocking`.
#[derive(Debug)]
pub struct RunReader {
    conn: Connection,
    path: PathBuf,
}

const RUN_COLUMNS: &str = "
    a.app_id, a.partition_key, a.status, a.created_at,
    a.parent_app_id, a.parent_sequence_id, a.parent_action, a.parent_partition_key,
    a.spawn_app_id, a.spawn_sequence_id, a.spawn_action, a.spawn_partition_key,
    (SELECT COUNT(DISTINCT sequence_id) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT COUNT(*) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT MIN(started_at) FROM steps s WHERE s.app_id = a.app_id),
    (SELECT MAX(ended_at) FROM steps s WHERE s.app_id = a.app_id)";

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
        let conn = schema::open_read_only(&path)?;
        Ok(RunReader { conn, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn err(&self) -> impl Fn(rusqlite::Error) -> SqliteError + '_ {
        |e| SqliteError::sqlite(&self.path, e)
    }

    /// Every tracked application, oldest first.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails or a row is unreadable.
    pub fn runs(&self) -> Result<Vec<RunSummary>, SqliteError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM apps a ORDER BY a.created_at, a.app_id");
        self.query_runs(&sql, params![])
    }

    /// The application `app_id`, if it was tracked.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails or a row is unreadable.
    pub fn run(&self, app_id: &str) -> Result<Option<RunSummary>, SqliteError> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM apps a WHERE a.app_id = ?1");
        Ok(self.query_runs(&sql, params![app_id])?.pop())
    }

    /// The applications spawned by `app_id`, in the order of the spawning
    /// steps.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails or a row is unreadable.
    pub fn children(&self, app_id: &str) -> Result<Vec<RunSummary>, SqliteError> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM apps a WHERE a.spawn_app_id = ?1
             ORDER BY a.spawn_sequence_id, a.created_at, a.app_id"
        );
        self.query_runs(&sql, params![app_id])
    }

    /// The steps of `app_id`, every attempt of each, ordered by sequence id
    /// and attempt: a failed attempt comes before the retry that followed.
    ///
    /// # Errors
    ///
    /// [`SqliteError`] when SQLite fails or a row is unreadable.
    pub fn steps(&self, app_id: &str) -> Result<Vec<TrackedStep>, SqliteError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT sequence_id, attempt, action, status, started_at, ended_at, result, state,
                     error, items
                 FROM steps WHERE app_id = ?1 ORDER BY sequence_id, attempt",
            )
            .map_err(self.err())?;
        let rows = stmt
            .query_map([app_id], |row| {
                Ok(TrackedStep {
                    sequence_id: get_u64(row, 0)?,
                    attempt: u32::try_from(get_u64(row, 1)?)
                        .map_err(|e| bad_column(1, e.to_string()))?,
                    action: row.get(2)?,
                    status: get_parsed(row, 3)?,
                    started_at: row.get(4)?,
                    ended_at: row.get(5)?,
                    result: get_json(row, 6)?,
                    state: get_json(row, 7)?,
                    error: row.get(8)?,
                    items: get_u64(row, 9)?,
                })
            })
            .map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
    }

    fn query_runs(
        &self,
        sql: &str,
        params: &[&dyn rusqlite::ToSql],
    ) -> Result<Vec<RunSummary>, SqliteError> {
        let mut stmt = self.conn.prepare_cached(sql).map_err(self.err())?;
        let rows = stmt.query_map(params, run_from_row).map_err(self.err())?;
        rows.collect::<Result<_, _>>().map_err(self.err())
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
    })
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

fn get_json(row: &Row<'_>, at: usize) -> rusqlite::Result<Option<Value>> {
    let Some(s) = row.get::<_, Option<String>>(at)? else {
        return Ok(None);
    };
    serde_json::from_str(&s)
        .map(Some)
        .map_err(|e| bad_column(at, e.to_string()))
}
