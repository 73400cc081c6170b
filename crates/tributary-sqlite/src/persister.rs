//! [`SqlitePersister`]: checkpoints in a SQLite file.

use std::path::Path;

use async_trait::async_trait;
use rusqlite::{OptionalExtension, Row, params};
use tributary_core::{Checkpoint, PersistError, Persister, State, StepStatus};

use crate::database::Database;
use crate::error::SqliteError;
use crate::now_micros;

/// A [`Persister`] that keeps checkpoints in a SQLite file: tributary's
/// durable default.
///
/// A save returns once its checkpoint is committed (WAL mode, `synchronous =
/// FULL`); the writes of concurrent saves are grouped into one transaction
/// by the database's writer thread (see [`Database`]). Many applications of
/// one process and several processes may write the same file at once:
/// SQLite serialises the writers, each waiting up to 30 s for the lock.
///
/// A checkpoint whose state or result nests deeper than
/// [`Checkpoint::MAX_DEPTH`] is refused before anything is encoded
/// ([`PersistError::TooDeep`]), so every stored checkpoint loads again.
///
/// Clones share the same database handle.
///
/// # Cancel safety
///
/// The trait's methods are cancel safe: once polled, a `save` has handed
/// its checkpoint to the writer, which commits it even if the future is
/// then dropped (the caller just does not learn the outcome); `load` and
/// `list_app_ids` only read.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_core::{Checkpoint, Persister, State, StepStatus};
/// use tributary_sqlite::SqlitePersister;
///
/// let dir = tempfile::tempdir()?;
/// let persister = SqlitePersister::open(dir.path().join("runs/tributary.db")).await?;
/// persister
///     .save(
///         &Checkpoint::new("job-1", 0, "plan", StepStatus::Completed, State::new().set("topic", "actors"))
///             .with_partition_key("user-1")
///             .with_result(serde_json::json!({ "sources": 3 })),
///     )
///     .await?;
/// let latest = persister.load("job-1", None).await?.unwrap();
/// assert_eq!(latest.state.get("topic"), Some(&"actors".into()));
/// assert_eq!(latest.result, Some(serde_json::json!({ "sources": 3 })));
/// assert_eq!(persister.list_app_ids(Some("user-1")).await?, ["job-1"]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct SqlitePersister {
    db: Database,
}

impl SqlitePersister {
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

    /// A persister on a private in-memory database (tests).
    ///
    /// # Errors
    ///
    /// As [`Database::open_in_memory`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe.
    pub async fn open_in_memory() -> Result<Self, SqliteError> {
        Ok(Self::new(Database::open_in_memory().await?))
    }

    /// A persister on an open database (to share it with a tracker).
    pub fn new(db: Database) -> Self {
        SqlitePersister { db }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every checkpoint of `app_id`, in sequence order.
    ///
    /// # Errors
    ///
    /// [`PersistError::Backend`] when SQLite fails, [`PersistError::Corrupt`]
    /// for a checkpoint that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn history(&self, app_id: &str) -> Result<Vec<Checkpoint>, PersistError> {
        let id = app_id.to_owned();
        let rows: Vec<RawCheckpoint> = self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT app_id, partition_key, sequence_id, action, status, state, result
                     FROM checkpoints WHERE app_id = ?1 ORDER BY sequence_id",
                )?;
                stmt.query_map([id], RawCheckpoint::from_row)?.collect()
            })
            .await?;
        rows.into_iter().map(RawCheckpoint::decode).collect()
    }
}

#[async_trait]
impl Persister for SqlitePersister {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        // Before anything is encoded: a value too deep to decode again must
        // not be stored, and encoding one tens of thousands of levels deep
        // would overflow the writer thread's stack.
        checkpoint.check_depth()?;
        let sequence_id = i64::try_from(checkpoint.sequence_id).map_err(PersistError::backend)?;
        // The state is encoded on the writer thread, off the async threads
        // (a `State` clone is cheap).
        let state = checkpoint.state.clone();
        let result = checkpoint.result.clone();
        let row = (
            checkpoint.app_id.clone(),
            checkpoint.partition_key.clone(),
            checkpoint.action.clone(),
            checkpoint.status.as_str(),
        );
        let saved_at = now_micros();
        self.db
            .write(move |tx| {
                let (app_id, partition_key, action, status) = row;
                let state = serde_json::to_string(&state)
                    .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
                let result = result.map(|r| r.to_string());
                tx.prepare_cached(
                    "INSERT INTO checkpoints
                         (app_id, sequence_id, partition_key, action, status, state, result,
                          saved_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (app_id, sequence_id) DO UPDATE SET
                         partition_key = excluded.partition_key,
                         action = excluded.action,
                         status = excluded.status,
                         state = excluded.state,
                         result = excluded.result,
                         saved_at = excluded.saved_at",
                )?
                .execute(params![
                    app_id,
                    sequence_id,
                    partition_key,
                    action,
                    status,
                    state,
                    result,
                    saved_at
                ])
                .map(drop)
            })
            .await?;
        Ok(())
    }

    async fn load(
        &self,
        app_id: &str,
        sequence_id: Option<u64>,
    ) -> Result<Option<Checkpoint>, PersistError> {
        let id = app_id.to_owned();
        let seq = match sequence_id.map(i64::try_from) {
            None => None,
            Some(Ok(seq)) => Some(seq),
            // No sequence id that large was ever saved.
            Some(Err(_)) => return Ok(None),
        };
        let row = self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT app_id, partition_key, sequence_id, action, status, state, result
                     FROM checkpoints
                     WHERE app_id = ?1 AND (?2 IS NULL OR sequence_id = ?2)
                     ORDER BY sequence_id DESC LIMIT 1",
                )?;
                stmt.query_row(params![id, seq], RawCheckpoint::from_row)
                    .optional()
            })
            .await?;
        row.map(RawCheckpoint::decode).transpose()
    }

    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError> {
        let key = partition_key.map(str::to_owned);
        // An application belongs to the partition of its latest checkpoint
        // (SQLite takes the bare columns from the row of the MAX).
        let ids = self
            .db
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(
                    "SELECT app_id FROM (
                         SELECT app_id, partition_key, MAX(sequence_id)
                         FROM checkpoints GROUP BY app_id
                     )
                     WHERE ?1 IS NULL OR partition_key = ?1
                     ORDER BY app_id",
                )?;
                stmt.query_map([key], |row| row.get(0))?.collect()
            })
            .await?;
        Ok(ids)
    }
}

/// A checkpoint row before its JSON is decoded (off the writer thread).
struct RawCheckpoint {
    app_id: String,
    partition_key: Option<String>,
    sequence_id: i64,
    action: String,
    status: String,
    state: String,
    result: Option<String>,
}

impl RawCheckpoint {
    fn from_row(row: &Row<'_>) -> rusqlite::Result<Self> {
        Ok(RawCheckpoint {
            app_id: row.get(0)?,
            partition_key: row.get(1)?,
            sequence_id: row.get(2)?,
            action: row.get(3)?,
            status: row.get(4)?,
            state: row.get(5)?,
            result: row.get(6)?,
        })
    }

    fn decode(self) -> Result<Checkpoint, PersistError> {
        let corrupt = |reason: String| PersistError::Corrupt {
            app_id: self.app_id.clone(),
            reason,
        };
        let Some(status) = StepStatus::parse(&self.status) else {
            return Err(corrupt(format!("unknown status `{}`", self.status)));
        };
        let sequence_id = u64::try_from(self.sequence_id)
            .map_err(|_| corrupt(format!("negative sequence id {}", self.sequence_id)))?;
        let value: serde_json::Value = serde_json::from_str(&self.state)
            .map_err(|e| corrupt(format!("state at sequence {sequence_id} is not JSON: {e}")))?;
        let state = State::from_json(value)
            .map_err(|e| corrupt(format!("state at sequence {sequence_id}: {e}")))?;
        let result = self
            .result
            .as_deref()
            .map(serde_json::from_str)
            .transpose()
            .map_err(|e| corrupt(format!("result at sequence {sequence_id} is not JSON: {e}")))?;
        let mut checkpoint = Checkpoint::new(self.app_id, sequence_id, self.action, status, state);
        checkpoint.partition_key = self.partition_key;
        checkpoint.result = result;
        Ok(checkpoint)
    }
}
