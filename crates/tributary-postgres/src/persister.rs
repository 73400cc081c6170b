//! [`PostgresPersister`]: checkpoints in a PostgreSQL database.

use async_trait::async_trait;
use tokio_postgres::{GenericClient, Row, Statement};
use tributary_core::{Checkpoint, PersistError, Persister, State, StepStatus};

use crate::database::{Database, Save};
use crate::error::PostgresError;
use crate::now_micros;

/// Insert or replace one checkpoint.
pub(crate) const SAVE: &str = "
    INSERT INTO checkpoints
        (app_id, sequence_id, partition_key, action, status, state, result, saved_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (app_id, sequence_id) DO UPDATE SET
        partition_key = excluded.partition_key,
        action = excluded.action,
        status = excluded.status,
        state = excluded.state,
        result = excluded.result,
        saved_at = excluded.saved_at";

/// Raise the application's fence to `$9` unless it is higher, and insert or
/// replace the checkpoint only if it was raised: one statement, so the
/// check and the write cannot be separated. Counts the rows saved.
pub(crate) const SAVE_FENCED: &str = "
    WITH fence AS (
        INSERT INTO fences (app_id, epoch) VALUES ($1::text, $9::bigint)
        ON CONFLICT (app_id) DO UPDATE SET epoch = excluded.epoch
            WHERE fences.epoch <= excluded.epoch
        RETURNING epoch
    ), saved AS (
        INSERT INTO checkpoints
            (app_id, sequence_id, partition_key, action, status, state, result, saved_at)
        SELECT $1::text, $2::bigint, $3::text, $4::text, $5::text, $6::text, $7::text, $8::bigint
        WHERE EXISTS (SELECT 1 FROM fence)
        ON CONFLICT (app_id, sequence_id) DO UPDATE SET
            partition_key = excluded.partition_key,
            action = excluded.action,
            status = excluded.status,
            state = excluded.state,
            result = excluded.result,
            saved_at = excluded.saved_at
        RETURNING 1
    )
    SELECT COUNT(*) FROM saved";

const COLUMNS: &str = "app_id, partition_key, sequence_id, action, status, state, result";

/// Write one save on `client`; the inner result is the save's own outcome
/// (a refused fence), the outer one a failure of the statement.
pub(crate) async fn write<C: GenericClient + Sync>(
    client: &C,
    plain: &Statement,
    fenced: &Statement,
    save: &Save,
) -> Result<Result<(), PersistError>, tokio_postgres::Error> {
    let cp = &save.checkpoint;
    let Ok(sequence_id) = i64::try_from(cp.sequence_id) else {
        return Ok(Err(PersistError::backend(format!(
            "sequence id {} of app `{}` is beyond PostgreSQL's bigint",
            cp.sequence_id, cp.app_id
        ))));
    };
    let state = match serde_json::to_string(&cp.state) {
        Ok(s) => s,
        Err(e) => return Ok(Err(PersistError::backend(e))),
    };
    let result = cp.result.as_ref().map(|r| r.to_string());
    let saved_at = now_micros();
    let status = cp.status.as_str();
    match save.epoch {
        None => {
            client
                .execute(
                    plain,
                    &[
                        &cp.app_id,
                        &sequence_id,
                        &cp.partition_key,
                        &cp.action,
                        &status,
                        &state,
                        &result,
                        &saved_at,
                    ],
                )
                .await?;
            Ok(Ok(()))
        }
        Some(epoch) => {
            let epoch_i = match epoch_param(epoch) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            let saved: i64 = client
                .query_one(
                    fenced,
                    &[
                        &cp.app_id,
                        &sequence_id,
                        &cp.partition_key,
                        &cp.action,
                        &status,
                        &state,
                        &result,
                        &saved_at,
                        &epoch_i,
                    ],
                )
                .await?
                .get(0);
            if saved == 1 {
                return Ok(Ok(()));
            }
            let current: Option<i64> = client
                .query_opt("SELECT epoch FROM fences WHERE app_id = $1", &[&cp.app_id])
                .await?
                .map(|row| row.get(0));
            Ok(Err(PersistError::Fenced {
                app_id: cp.app_id.clone(),
                sequence_id: cp.sequence_id,
                epoch,
                current: current.map_or(epoch, |c| u64::try_from(c).unwrap_or(0)),
            }))
        }
    }
}

/// A [`Persister`] that keeps checkpoints in PostgreSQL: the store many
/// processes and machines share.
///
/// A save returns once its checkpoint is committed. The saves waiting at
/// the database's writer are written together, pipelined in one
/// transaction (see [`Database`]); a batch that hits a serialization
/// failure or a deadlock is retried whole (every write in it is an upsert,
/// so a retry is safe). Each batch takes its row locks in one global order
/// (by app id and sequence id), so concurrent writers do not deadlock each
/// other in the first place.
///
/// Fencing is supported: [`save_fenced`](Persister::save_fenced) raises the
/// application's epoch and writes in one statement, and refuses a write
/// from an older epoch with [`PersistError::Fenced`].
///
/// Clones share the same database handle.
///
/// # Cancel safety
///
/// The trait's methods are cancel safe: once polled, a `save` has handed
/// its checkpoint to the writer, which commits it even if the future is
/// then dropped; `load` and `list_app_ids` only read.
///
/// # Examples
///
/// ```no_run
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use tributary_core::{Checkpoint, Persister, State, StepStatus};
/// use tributary_postgres::PostgresPersister;
///
/// let persister = PostgresPersister::connect("postgres://postgres@127.0.0.1:5432/test").await?;
/// persister
///     .save(&Checkpoint::new("job-1", 0, "plan", StepStatus::Completed, State::new()))
///     .await?;
/// assert_eq!(persister.load("job-1", None).await?.unwrap().action, "plan");
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct PostgresPersister {
    db: Database,
}

impl PostgresPersister {
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

    /// A persister on an open database (to share it with a tracker).
    pub fn new(db: Database) -> Self {
        PostgresPersister { db }
    }

    /// The database.
    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Every checkpoint of `app_id`, in sequence order.
    ///
    /// # Errors
    ///
    /// [`PersistError::Backend`] when PostgreSQL fails,
    /// [`PersistError::Corrupt`] for a checkpoint that cannot be decoded.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn history(&self, app_id: &str) -> Result<Vec<Checkpoint>, PersistError> {
        let id = app_id.to_owned();
        let rows = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    let stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM checkpoints WHERE app_id = $1 ORDER BY sequence_id"
                        ))
                        .await?;
                    conn.query(&stmt, &[&id]).await
                })
            })
            .await?;
        rows.iter().map(decode).collect()
    }
}

#[async_trait]
impl Persister for PostgresPersister {
    async fn save(&self, checkpoint: &Checkpoint) -> Result<(), PersistError> {
        checkpoint.check_depth()?;
        self.db.save(checkpoint, None).await
    }

    fn supports_fencing(&self) -> bool {
        true
    }

    async fn save_fenced(&self, checkpoint: &Checkpoint, epoch: u64) -> Result<(), PersistError> {
        checkpoint.check_depth()?;
        self.db.save(checkpoint, Some(epoch)).await
    }

    async fn raise_fence(&self, app_id: &str, epoch: u64) -> Result<u64, PersistError> {
        let epoch_i = epoch_param(epoch)?;
        let id = app_id.to_owned();
        // A write through `read` (any statement on a pooled connection): the
        // upsert is atomic in the database and needs no place among the
        // writer's batched saves, whose own fence check it orders against.
        let stored: i64 = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    let stmt = conn
                        .prepare_cached(
                            "INSERT INTO fences (app_id, epoch) VALUES ($1::text, $2::bigint)
                             ON CONFLICT (app_id)
                             DO UPDATE SET epoch = GREATEST(fences.epoch, excluded.epoch)
                             RETURNING epoch",
                        )
                        .await?;
                    Ok(conn.query_one(&stmt, &[&id, &epoch_i]).await?.get(0))
                })
            })
            .await?;
        Ok(u64::try_from(stored).unwrap_or(epoch))
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
                Box::pin(async move {
                    let stmt = conn
                        .prepare_cached(&format!(
                            "SELECT {COLUMNS} FROM checkpoints
                             WHERE app_id = $1 AND ($2::bigint IS NULL OR sequence_id = $2)
                             ORDER BY sequence_id DESC LIMIT 1"
                        ))
                        .await?;
                    conn.query_opt(&stmt, &[&id, &seq]).await
                })
            })
            .await?;
        row.as_ref().map(decode).transpose()
    }

    async fn list_app_ids(&self, partition_key: Option<&str>) -> Result<Vec<String>, PersistError> {
        let key = partition_key.map(str::to_owned);
        // An application belongs to the partition of its latest checkpoint.
        let rows = self
            .db
            .read(move |conn| {
                Box::pin(async move {
                    let stmt = conn
                        .prepare_cached(
                            "SELECT app_id FROM (
                                 SELECT DISTINCT ON (app_id) app_id, partition_key
                                 FROM checkpoints ORDER BY app_id, sequence_id DESC
                             ) latest
                             WHERE $1::text IS NULL OR partition_key = $1
                             ORDER BY app_id",
                        )
                        .await?;
                    conn.query(&stmt, &[&key]).await
                })
            })
            .await?;
        Ok(rows.iter().map(|row| row.get(0)).collect())
    }
}

/// A checkpoint from its row.
fn decode(row: &Row) -> Result<Checkpoint, PersistError> {
    let app_id: String = row.get(0);
    let corrupt = |reason: String| PersistError::Corrupt {
        app_id: app_id.clone(),
        reason,
    };
    let status: String = row.get(4);
    let Some(status) = StepStatus::parse(&status) else {
        return Err(corrupt(format!("unknown status `{status}`")));
    };
    let raw_seq: i64 = row.get(2);
    let sequence_id =
        u64::try_from(raw_seq).map_err(|_| corrupt(format!("negative sequence id {raw_seq}")))?;
    let state: String = row.get(5);
    let value: serde_json::Value = serde_json::from_str(&state)
        .map_err(|e| corrupt(format!("state at sequence {sequence_id} is not JSON: {e}")))?;
    let state = State::from_json(value)
        .map_err(|e| corrupt(format!("state at sequence {sequence_id}: {e}")))?;
    let result: Option<String> = row.get(6);
    let result = result
        .as_deref()
        .map(serde_json::from_str)
        .transpose()
        .map_err(|e| corrupt(format!("result at sequence {sequence_id} is not JSON: {e}")))?;
    let action: String = row.get(3);
    let mut checkpoint = Checkpoint::new(app_id.clone(), sequence_id, action, status, state);
    checkpoint.partition_key = row.get(1);
    checkpoint.result = result;
    Ok(checkpoint)
}

/// A fencing epoch as the `bigint` the `fences` table stores.
fn epoch_param(epoch: u64) -> Result<i64, PersistError> {
    i64::try_from(epoch).map_err(|_| {
        PersistError::backend(format!(
            "fencing epoch {epoch} is beyond PostgreSQL's bigint"
        ))
    })
}
