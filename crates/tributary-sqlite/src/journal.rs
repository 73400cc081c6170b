//! [`SqliteJournal`]: the journal of durable steps and the records of
//! durable workflows in a SQLite file (feature `durable`).

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use serde_json::Value;
use tributary_durable::{
    JournalEntry, JournalError, JournalRow, JournalStore, WorkflowRecord, WorkflowRow,
};

use crate::database::Database;
use crate::error::SqliteError;
use crate::now_micros;

/// A [`JournalStore`] in a SQLite file: the `journal` and `workflows`
/// tables of a tributary database (schema version 3), and the numbered
/// executions of version 5 (`journal_executions`).
///
/// An append returns once its row is committed (WAL, `synchronous = FULL`);
/// appends of concurrent steps and workflows share a transaction through
/// the database's writer thread (group commit, see [`Database`]). The
/// persister, the tracker and the journal can share one database.
///
/// # Cancel safety
///
/// Once polled, a write has been handed to the writer, which commits it
/// even if the future is dropped; reads only read.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_durable::{EntryKind, JournalEntry, JournalStore, Outcome, StepKey};
/// use tributary_sqlite::SqliteJournal;
///
/// let dir = tempfile::tempdir()?;
/// let journal = SqliteJournal::open(dir.path().join("tributary.db")).await?;
/// let entry = JournalEntry {
///     app_id: "job-1".into(),
///     sequence_id: 0,
///     position: 0,
///     step: StepKey::new("fetch", 0),
///     kind: EntryKind::Step,
///     outcome: Outcome::Completed(json!({ "pages": 3 })),
///     execution: 1,
/// };
/// journal.append(entry.clone()).await?;
/// assert_eq!(journal.load("job-1", 0).await?, [entry.clone()]);
/// assert_eq!(journal.entries("job-1").await?, [entry]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqliteJournal {
    db: Database,
}

impl SqliteJournal {
    /// Open (or create) the database at `path`.
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

    /// A journal on an open database (to share it with a persister or a
    /// tracker).
    pub fn new(db: Database) -> Self {
        SqliteJournal { db }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every journal entry of `app_id` (an application or a workflow), in
    /// (sequence id, position) order: what a listing of its durable steps
    /// shows.
    ///
    /// # Errors
    ///
    /// [`JournalError::Backend`] when SQLite fails,
    /// [`JournalError::Corrupt`] for an entry that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn entries(&self, app_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        let id = app_id.to_owned();
        let rows: Vec<JournalRow> = self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM journal
                     WHERE app_id = ?1 ORDER BY sequence_id, position"
                ))?;
                stmt.query_map([id], entry_row)?.collect()
            })
            .await
            .map_err(backend)?;
        rows.into_iter().map(JournalRow::decode).collect()
    }
}

fn backend(e: SqliteError) -> JournalError {
    JournalError::backend(e)
}

fn to_i64(n: u64) -> Result<i64, JournalError> {
    i64::try_from(n).map_err(JournalError::backend)
}

const ENTRY_COLUMNS: &str =
    "app_id, sequence_id, position, step, occurrence, kind, status, value, error, execution";

fn entry_row(row: &Row<'_>) -> rusqlite::Result<JournalRow> {
    Ok(JournalRow {
        app_id: row.get(0)?,
        sequence_id: row.get(1)?,
        position: row.get(2)?,
        step: row.get(3)?,
        occurrence: row.get(4)?,
        kind: row.get(5)?,
        status: row.get(6)?,
        value: row.get(7)?,
        error: row.get(8)?,
        execution: row.get(9)?,
    })
}

const WORKFLOW_COLUMNS: &str = "workflow_id, name, input, status, output, error";

fn workflow_row(row: &Row<'_>) -> rusqlite::Result<WorkflowRow> {
    Ok(WorkflowRow {
        workflow_id: row.get(0)?,
        name: row.get(1)?,
        input: row.get(2)?,
        status: row.get(3)?,
        output: row.get(4)?,
        error: row.get(5)?,
    })
}

#[async_trait]
impl JournalStore for SqliteJournal {
    async fn load(
        &self,
        app_id: &str,
        sequence_id: u64,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let rows: Vec<JournalRow> = self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {ENTRY_COLUMNS} FROM journal
                     WHERE app_id = ?1 AND sequence_id = ?2 ORDER BY position"
                ))?;
                stmt.query_map(params![id, seq], entry_row)?.collect()
            })
            .await
            .map_err(backend)?;
        rows.into_iter().map(JournalRow::decode).collect()
    }

    async fn append(&self, entry: JournalEntry) -> Result<JournalEntry, JournalError> {
        to_i64(entry.sequence_id)?;
        let written_at = now_micros();
        // Filled inside the transaction: `None` when this entry was
        // inserted, the row already there otherwise.
        let existing: Arc<Mutex<Option<JournalRow>>> = Arc::default();
        let slot = Arc::clone(&existing);
        let row = JournalRow::from(&entry);
        self.db
            .write(move |tx| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO journal
                             (app_id, sequence_id, position, step, occurrence, kind, status,
                              value, error, written_at, execution)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                         ON CONFLICT (app_id, sequence_id, position) DO NOTHING",
                    )?
                    .execute(params![
                        row.app_id,
                        row.sequence_id,
                        row.position,
                        row.step,
                        row.occurrence,
                        row.kind,
                        row.status,
                        row.value,
                        row.error,
                        written_at,
                        row.execution
                    ])?;
                if inserted == 0 {
                    let found = tx
                        .prepare_cached(&format!(
                            "SELECT {ENTRY_COLUMNS} FROM journal
                             WHERE app_id = ?1 AND sequence_id = ?2 AND position = ?3"
                        ))?
                        .query_row(
                            params![row.app_id, row.sequence_id, row.position],
                            entry_row,
                        )
                        .optional()?;
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = found;
                }
                Ok(())
            })
            .await
            .map_err(backend)?;
        let found = existing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match found {
            None => Ok(entry),
            Some(raw) => raw.decode(),
        }
    }

    async fn begin_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let now = now_micros();
        let number: Arc<Mutex<i64>> = Arc::default();
        let slot = Arc::clone(&number);
        self.db
            .write(move |tx| {
                let n: i64 = tx
                    .prepare_cached(
                        "INSERT INTO journal_executions (app_id, sequence_id, execution, started_at)
                         VALUES (?1, ?2, 1, ?3)
                         ON CONFLICT (app_id, sequence_id) DO UPDATE SET
                             execution = execution + 1,
                             started_at = excluded.started_at
                         RETURNING execution",
                    )?
                    .query_row(params![id, seq, now], |row| row.get(0))?;
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = n;
                Ok(())
            })
            .await
            .map_err(backend)?;
        let n = *number.lock().unwrap_or_else(PoisonError::into_inner);
        u32::try_from(n).map_err(JournalError::backend)
    }

    async fn latest_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let n: Option<i64> = self
            .db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT execution FROM journal_executions
                     WHERE app_id = ?1 AND sequence_id = ?2",
                )?
                .query_row(params![id, seq], |row| row.get(0))
                .optional()
            })
            .await
            .map_err(backend)?;
        u32::try_from(n.unwrap_or(0)).map_err(JournalError::backend)
    }

    async fn create_workflow(
        &self,
        record: WorkflowRecord,
    ) -> Result<(WorkflowRecord, bool), JournalError> {
        let input = record.input.to_string();
        let now = now_micros();
        let existing: Arc<Mutex<Option<WorkflowRow>>> = Arc::default();
        let slot = Arc::clone(&existing);
        let (id, name, status) = (
            record.workflow_id.clone(),
            record.name.clone(),
            record.status.as_str(),
        );
        self.db
            .write(move |tx| {
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO workflows
                             (workflow_id, name, input, status, created_at, updated_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                         ON CONFLICT (workflow_id) DO NOTHING",
                    )?
                    .execute(params![id, name, input, status, now])?;
                if inserted == 0 {
                    let found = tx
                        .prepare_cached(&format!(
                            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = ?1"
                        ))?
                        .query_row([&id], workflow_row)
                        .optional()?;
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = found;
                }
                Ok(())
            })
            .await
            .map_err(backend)?;
        let found = existing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match found {
            None => Ok((record, true)),
            Some(raw) => Ok((raw.decode()?, false)),
        }
    }

    async fn put_workflow(&self, record: WorkflowRecord) -> Result<(), JournalError> {
        let now = now_micros();
        let input = record.input.to_string();
        let output = record.output.as_ref().map(Value::to_string);
        self.db
            .write(move |tx| {
                tx.prepare_cached(
                    "INSERT INTO workflows
                         (workflow_id, name, input, status, output, error, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                     ON CONFLICT (workflow_id) DO UPDATE SET
                         status = excluded.status,
                         output = excluded.output,
                         error = excluded.error,
                         updated_at = excluded.updated_at",
                )?
                .execute(params![
                    record.workflow_id,
                    record.name,
                    input,
                    record.status.as_str(),
                    output,
                    record.error,
                    now
                ])
                .map(drop)
            })
            .await
            .map_err(backend)
    }

    async fn workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        let id = workflow_id.to_owned();
        let row = self
            .db
            .read(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = ?1"
                ))?
                .query_row([id], workflow_row)
                .optional()
            })
            .await
            .map_err(backend)?;
        row.map(WorkflowRow::decode).transpose()
    }

    async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>, JournalError> {
        let rows: Vec<WorkflowRow> = self
            .db
            .read(|conn| {
                let mut stmt = conn.prepare_cached(&format!(
                    "SELECT {WORKFLOW_COLUMNS} FROM workflows
                     WHERE status = 'running' ORDER BY workflow_id"
                ))?;
                stmt.query_map([], workflow_row)?.collect()
            })
            .await
            .map_err(backend)?;
        rows.into_iter().map(WorkflowRow::decode).collect()
    }

    async fn send_event(
        &self,
        target: &str,
        name: &str,
        value: Value,
    ) -> Result<u64, JournalError> {
        let (target, name, value) = (target.to_owned(), name.to_owned(), value.to_string());
        let sent_at = now_micros();
        let index: Arc<Mutex<i64>> = Arc::default();
        let slot = Arc::clone(&index);
        self.db
            .write(move |tx| {
                let next: i64 = tx
                    .prepare_cached(
                        "SELECT COALESCE(MAX(idx) + 1, 0) FROM events WHERE target = ?1 AND name = ?2",
                    )?
                    .query_row(params![target, name], |row| row.get(0))?;
                tx.prepare_cached(
                    "INSERT INTO events (target, name, idx, value, sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5)",
                )?
                .execute(params![target, name, next, value, sent_at])?;
                *slot.lock().unwrap_or_else(PoisonError::into_inner) = next;
                Ok(())
            })
            .await
            .map_err(backend)?;
        let index = *index.lock().unwrap_or_else(PoisonError::into_inner);
        u64::try_from(index).map_err(JournalError::backend)
    }

    async fn event(
        &self,
        target: &str,
        name: &str,
        index: u64,
    ) -> Result<Option<Value>, JournalError> {
        let (t, n, i) = (target.to_owned(), name.to_owned(), to_i64(index)?);
        let text: Option<String> = self
            .db
            .read(move |conn| {
                conn.prepare_cached(
                    "SELECT value FROM events WHERE target = ?1 AND name = ?2 AND idx = ?3",
                )?
                .query_row(params![t, n, i], |row| row.get(0))
                .optional()
            })
            .await
            .map_err(backend)?;
        text.map(|t| {
            serde_json::from_str(&t).map_err(|e| JournalError::Corrupt {
                app_id: target.to_owned(),
                sequence_id: 0,
                reason: format!("event {name} #{index} is not JSON: {e}"),
            })
        })
        .transpose()
    }
}
