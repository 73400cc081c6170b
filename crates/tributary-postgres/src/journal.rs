//! [`PostgresJournal`]: the journal of durable steps and the records of
//! durable workflows in PostgreSQL (feature `durable`).

use async_trait::async_trait;
use serde_json::Value;
use tokio_postgres::Row;
use tributary_durable::{
    JournalEntry, JournalError, JournalRow, JournalStore, WorkflowRecord, WorkflowRow,
};

use crate::database::Database;
use crate::error::PostgresError;
use crate::now_micros;

/// A [`JournalStore`] in PostgreSQL: the `journal`, `workflows` and
/// `events` tables of a tributary schema (version 2; the numbered
/// executions of version 4, `journal_executions`), beside the
/// persister's and the tracker's, so many processes on many machines share
/// one journal.
///
/// An append returns once its row is committed. Appending is one
/// `INSERT ... ON CONFLICT DO NOTHING`, so two processes racing on one
/// step's position agree on the first writer's entry; creating a workflow
/// likewise, so two starts of one id run it once. Events are numbered per
/// (target, name) by an insert that takes the next free index, so
/// concurrent senders never share one.
///
/// # Cancel safety
///
/// Once polled, a statement has been handed to the database's runtime,
/// which finishes it even if the future is dropped; reads only read.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use serde_json::json;
/// use tributary_durable::{EntryKind, JournalEntry, JournalStore, Outcome, StepKey};
/// use tributary_postgres::{Database, PostgresJournal};
///
/// let db = Database::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// let journal = PostgresJournal::new(db);
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
/// assert_eq!(journal.load("job-1", 0).await?, [entry]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresJournal {
    db: Database,
}

impl PostgresJournal {
    /// Connect to the database at `url` (schema `tributary`).
    ///
    /// # Errors
    ///
    /// As [`Database::connect`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn connect(url: &str) -> Result<Self, PostgresError> {
        Ok(Self::new(Database::connect(url).await?))
    }

    /// A journal on an open database (to share it with a persister or a
    /// tracker).
    pub fn new(db: Database) -> Self {
        PostgresJournal { db }
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
    /// [`JournalError::Backend`] when PostgreSQL fails,
    /// [`JournalError::Corrupt`] for an entry that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn entries(&self, app_id: &str) -> Result<Vec<JournalEntry>, JournalError> {
        let id = app_id.to_owned();
        let rows = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    conn.query(
                        &format!(
                            "SELECT {ENTRY_COLUMNS} FROM journal
                             WHERE app_id = $1 ORDER BY sequence_id, position"
                        ),
                        &[&id],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        rows.iter().map(decode_entry).collect()
    }
}

fn backend(e: PostgresError) -> JournalError {
    JournalError::backend(e)
}

fn to_i64(n: u64) -> Result<i64, JournalError> {
    i64::try_from(n).map_err(JournalError::backend)
}

const ENTRY_COLUMNS: &str =
    "app_id, sequence_id, position, step, occurrence, kind, status, value, error, execution";

fn decode_entry(row: &Row) -> Result<JournalEntry, JournalError> {
    JournalRow {
        app_id: row.get(0),
        sequence_id: row.get(1),
        position: row.get::<_, i32>(2).into(),
        step: row.get(3),
        occurrence: row.get::<_, i32>(4).into(),
        kind: row.get(5),
        status: row.get(6),
        value: row.get(7),
        error: row.get(8),
        execution: row.get::<_, i32>(9).into(),
    }
    .decode()
}

const WORKFLOW_COLUMNS: &str = "workflow_id, name, input, status, output, error";

fn decode_workflow(row: &Row) -> Result<WorkflowRecord, JournalError> {
    WorkflowRow {
        workflow_id: row.get(0),
        name: row.get(1),
        input: row.get(2),
        status: row.get(3),
        output: row.get(4),
        error: row.get(5),
    }
    .decode()
}

#[async_trait]
impl JournalStore for PostgresJournal {
    async fn load(
        &self,
        app_id: &str,
        sequence_id: u64,
    ) -> Result<Vec<JournalEntry>, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let rows = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    conn.query(
                        &format!(
                            "SELECT {ENTRY_COLUMNS} FROM journal
                             WHERE app_id = $1 AND sequence_id = $2 ORDER BY position"
                        ),
                        &[&id, &seq],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        rows.iter().map(decode_entry).collect()
    }

    async fn append(&self, entry: JournalEntry) -> Result<JournalEntry, JournalError> {
        to_i64(entry.sequence_id)?;
        let position = i32::try_from(entry.position).map_err(JournalError::backend)?;
        let occurrence = i32::try_from(entry.step.occurrence).map_err(JournalError::backend)?;
        let execution = i32::try_from(entry.execution).map_err(JournalError::backend)?;
        let written_at = now_micros();
        let row = JournalRow::from(&entry);
        // The row at the position afterwards: this one when it was
        // inserted, an earlier writer's otherwise.
        let stored = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    let inserted = conn
                        .execute(
                            "INSERT INTO journal
                                 (app_id, sequence_id, position, step, occurrence, kind, status,
                                  value, error, written_at, execution)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                             ON CONFLICT (app_id, sequence_id, position) DO NOTHING",
                            &[
                                &row.app_id,
                                &row.sequence_id,
                                &position,
                                &row.step,
                                &occurrence,
                                &row.kind,
                                &row.status,
                                &row.value,
                                &row.error,
                                &written_at,
                                &execution,
                            ],
                        )
                        .await?;
                    if inserted == 1 {
                        return Ok(None);
                    }
                    conn.query_opt(
                        &format!(
                            "SELECT {ENTRY_COLUMNS} FROM journal
                             WHERE app_id = $1 AND sequence_id = $2 AND position = $3"
                        ),
                        &[&row.app_id, &row.sequence_id, &position],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        match stored {
            None => Ok(entry),
            Some(row) => decode_entry(&row),
        }
    }

    async fn begin_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let now = now_micros();
        let row = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    conn.query_one(
                        "INSERT INTO journal_executions (app_id, sequence_id, execution, started_at)
                         VALUES ($1, $2, 1, $3)
                         ON CONFLICT (app_id, sequence_id) DO UPDATE SET
                             execution = journal_executions.execution + 1,
                             started_at = excluded.started_at
                         RETURNING execution",
                        &[&id, &seq, &now],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        u32::try_from(row.get::<_, i32>(0)).map_err(JournalError::backend)
    }

    async fn latest_execution(&self, app_id: &str, sequence_id: u64) -> Result<u32, JournalError> {
        let (id, seq) = (app_id.to_owned(), to_i64(sequence_id)?);
        let row = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    conn.query_opt(
                        "SELECT execution FROM journal_executions
                         WHERE app_id = $1 AND sequence_id = $2",
                        &[&id, &seq],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        u32::try_from(row.map_or(0, |r| r.get::<_, i32>(0))).map_err(JournalError::backend)
    }

    async fn create_workflow(
        &self,
        record: WorkflowRecord,
    ) -> Result<(WorkflowRecord, bool), JournalError> {
        let input = record.input.to_string();
        let now = now_micros();
        let (id, name, status) = (
            record.workflow_id.clone(),
            record.name.clone(),
            record.status.as_str(),
        );
        let stored = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    let inserted = conn
                        .execute(
                            "INSERT INTO workflows
                                 (workflow_id, name, input, status, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $5)
                             ON CONFLICT (workflow_id) DO NOTHING",
                            &[&id, &name, &input, &status, &now],
                        )
                        .await?;
                    if inserted == 1 {
                        return Ok(None);
                    }
                    conn.query_opt(
                        &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = $1"),
                        &[&id],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        match stored {
            None => Ok((record, true)),
            Some(row) => Ok((decode_workflow(&row)?, false)),
        }
    }

    async fn put_workflow(&self, record: WorkflowRecord) -> Result<(), JournalError> {
        let now = now_micros();
        let input = record.input.to_string();
        let output = record.output.as_ref().map(Value::to_string);
        self.db
            .read(move |conn| {
                Box::pin(async move {
                    conn.execute(
                        "INSERT INTO workflows
                             (workflow_id, name, input, status, output, error, created_at,
                              updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
                         ON CONFLICT (workflow_id) DO UPDATE SET
                             status = excluded.status,
                             output = excluded.output,
                             error = excluded.error,
                             updated_at = excluded.updated_at",
                        &[
                            &record.workflow_id,
                            &record.name,
                            &input,
                            &record.status.as_str(),
                            &output,
                            &record.error,
                            &now,
                        ],
                    )
                    .await
                    .map(drop)
                })
            })
            .await
            .map_err(backend)
    }

    async fn workflow(&self, workflow_id: &str) -> Result<Option<WorkflowRecord>, JournalError> {
        let id = workflow_id.to_owned();
        let row = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    conn.query_opt(
                        &format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE workflow_id = $1"),
                        &[&id],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        row.as_ref().map(decode_workflow).transpose()
    }

    async fn unfinished_workflows(&self) -> Result<Vec<WorkflowRecord>, JournalError> {
        let rows = self
            .db
            .read(|conn| {
                Box::pin(async move {
                    conn.query(
                        &format!(
                            "SELECT {WORKFLOW_COLUMNS} FROM workflows
                             WHERE status = 'running' ORDER BY workflow_id COLLATE \"C\""
                        ),
                        &[],
                    )
                    .await
                })
            })
            .await
            .map_err(backend)?;
        rows.iter().map(decode_workflow).collect()
    }

    async fn send_event(
        &self,
        target: &str,
        name: &str,
        value: Value,
    ) -> Result<u64, JournalError> {
        let (target, name, value) = (target.to_owned(), name.to_owned(), value.to_string());
        let sent_at = now_micros();
        let index: i64 = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    // The next index; when a concurrent sender took it
                    // first, the insert does nothing and the next statement
                    // sees that sender's row.
                    loop {
                        let row = conn
                            .query_opt(
                                "INSERT INTO events (target, name, idx, value, sent_at)
                                 SELECT $1, $2, COALESCE(MAX(idx) + 1, 0), $3, $4
                                 FROM events WHERE target = $1 AND name = $2
                                 ON CONFLICT (target, name, idx) DO NOTHING
                                 RETURNING idx",
                                &[&target, &name, &value, &sent_at],
                            )
                            .await?;
                        if let Some(row) = row {
                            return Ok(row.get(0));
                        }
                    }
                })
            })
            .await
            .map_err(backend)?;
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
                Box::pin(async move {
                    Ok(conn
                        .query_opt(
                            "SELECT value FROM events WHERE target = $1 AND name = $2 AND idx = $3",
                            &[&t, &n, &i],
                        )
                        .await?
                        .map(|row| row.get(0)))
                })
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
