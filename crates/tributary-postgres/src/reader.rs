//! [`TrackerReader`]: the tracker's rows, queried directly, for tools.

use serde_json::{Map, Value};
use tokio::task::JoinHandle;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, NoTls};

use crate::database::reader_config;
use crate::error::PostgresError;
use crate::schema::{SCHEMA_VERSION, read_version};

/// Which applications [`TrackerReader::apps`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum AppsWhere<'a> {
    /// Every application, oldest first (by `created_at`, then app id).
    All,
    /// Those no other application spawned, oldest first.
    Roots,
    /// The one with this app id.
    One(&'a str),
    /// Those spawned by this app id, by spawning sequence id, then task
    /// index (those without one after), spawn time, creation time, app id.
    ChildrenOf(&'a str),
}

/// A read-only connection to the tracker's rows of one schema, for tools
/// (the `tributary` command): each query reads what has committed when it
/// runs, while writers go on. Rows come back as maps from column name to
/// value, the columns those of the SQLite tracker's `apps` and `steps`
/// (JSON columns as text), so one decoder serves both backends.
///
/// Reading never creates, migrates or writes anything: the session is
/// read-only.
#[derive(Debug)]
pub struct TrackerReader {
    client: Client,
    driver: JoinHandle<()>,
    target: String,
    user: String,
    schema: String,
    /// The schema's version (2 added the durable journal).
    version: i64,
}

/// The counts a reader adds to each `apps` row (names as the SQLite
/// reader's), then the row's own columns.
const APP_COLUMNS: &str = "
    (SELECT COUNT(DISTINCT s.sequence_id) FROM steps s WHERE s.app_id = a.app_id) AS steps,
    (SELECT COUNT(*) FROM steps s WHERE s.app_id = a.app_id) AS attempts,
    (SELECT MIN(s.started_at) FROM steps s WHERE s.app_id = a.app_id) AS first_started_at,
    (SELECT MAX(s.ended_at) FROM steps s WHERE s.app_id = a.app_id) AS last_ended_at,
    (SELECT COUNT(*) FROM apps c WHERE c.spawn_app_id = a.app_id) AS children,
    a.*";

impl TrackerReader {
    /// Connect to the tracker's rows of `schema` in the database at `url`.
    ///
    /// # Errors
    ///
    /// [`PostgresError::InvalidUrl`], [`PostgresError::InvalidSchema`],
    /// [`PostgresError::Unreachable`], [`PostgresError::Authentication`],
    /// [`PostgresError::NoSchema`] when nothing was ever tracked there,
    /// [`PostgresError::SchemaTooNew`], [`PostgresError::Postgres`].
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn connect(url: &str, schema: &str) -> Result<Self, PostgresError> {
        let (mut config, target, user) = reader_config(url, schema)?;
        let options = match config.get_options() {
            Some(o) if !o.is_empty() => {
                format!("{o} -c search_path={schema} -c default_transaction_read_only=on")
            }
            _ => format!("-c search_path={schema} -c default_transaction_read_only=on"),
        };
        config.options(options);
        let err = |e| PostgresError::classify(&target, &user, e);
        let (client, connection) = config.connect(NoTls).await.map_err(err)?;
        let driver = tokio::spawn(async move {
            let _ = connection.await;
        });
        let mut reader = TrackerReader {
            client,
            driver,
            target: target.clone(),
            user,
            schema: schema.to_owned(),
            version: 0,
        };
        let no_schema = || PostgresError::NoSchema {
            target: target.clone(),
            schema: schema.to_owned(),
        };
        let version = read_version(&reader.client, schema)
            .await
            .map_err(reader.err())?
            .ok_or_else(no_schema)?;
        if version > SCHEMA_VERSION {
            return Err(PostgresError::SchemaTooNew {
                target: target.clone(),
                schema: schema.to_owned(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        reader.version = version;
        Ok(reader)
    }

    /// `host:port/dbname schema NAME`, for messages.
    pub fn source(&self) -> String {
        format!("{} schema {}", self.target, self.schema)
    }

    fn err(&self) -> impl Fn(tokio_postgres::Error) -> PostgresError + '_ {
        |e| PostgresError::classify(&self.target, &self.user, e)
    }

    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Map<String, Value>>, PostgresError> {
        let rows = self.client.query(sql, params).await.map_err(self.err())?;
        Ok(rows
            .iter()
            .map(|row| match serde_json::from_str(row.get(0)) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            })
            .collect())
    }

    /// The `apps` rows `which` selects, in its order, each with the counts
    /// `steps` (distinct sequence ids), `attempts`, `first_started_at`,
    /// `last_ended_at` and `children`.
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the query fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn apps(
        &self,
        which: AppsWhere<'_>,
    ) -> Result<Vec<Map<String, Value>>, PostgresError> {
        // Sorted outside the subquery, app ids bytewise as SQLite sorts
        // them.
        let oldest_first = "ORDER BY t.created_at, t.app_id COLLATE \"C\"";
        let (filter, order, id) = match which {
            AppsWhere::All => ("TRUE", oldest_first, None),
            AppsWhere::Roots => ("a.spawn_app_id IS NULL", oldest_first, None),
            AppsWhere::One(id) => ("a.app_id = $1", "", Some(id)),
            AppsWhere::ChildrenOf(id) => (
                "a.spawn_app_id = $1",
                "ORDER BY t.spawn_sequence_id, t.task_index IS NULL, t.task_index,
                     COALESCE(t.spawned_at, t.created_at), t.created_at, t.app_id COLLATE \"C\"",
                Some(id),
            ),
        };
        let sql = format!(
            "SELECT row_to_json(t)::text FROM (SELECT {APP_COLUMNS} FROM apps a WHERE {filter}) t {order}"
        );
        match id {
            Some(id) => self.rows(&sql, &[&id]).await,
            None => self.rows(&sql, &[]).await,
        }
    }

    /// Every `steps` row of `app_id`, by sequence id and attempt.
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the query fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn steps(&self, app_id: &str) -> Result<Vec<Map<String, Value>>, PostgresError> {
        self.rows(
            "SELECT row_to_json(s)::text FROM steps s WHERE s.app_id = $1
             ORDER BY s.sequence_id, s.attempt",
            &[&app_id],
        )
        .await
    }

    /// What a run's timeline needs of each `steps` row of `app_id`
    /// (`sequence_id`, `status`, `started_at`, `ended_at`, `process`), by
    /// sequence id and attempt: [`steps`](Self::steps) without the JSON.
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the query fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn marks(&self, app_id: &str) -> Result<Vec<Map<String, Value>>, PostgresError> {
        self.rows(
            "SELECT row_to_json(m)::text FROM (
                 SELECT sequence_id, attempt, status, started_at, ended_at, process
                 FROM steps WHERE app_id = $1) m
             ORDER BY m.sequence_id, m.attempt",
            &[&app_id],
        )
        .await
    }

    /// Every `journal` row of `app_id` (durable steps), by sequence id and
    /// position, with the execution that wrote it and the latest execution
    /// of its (app id, sequence id) (from schema version 4); none in a
    /// schema older than the journal.
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the query fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn journal(&self, app_id: &str) -> Result<Vec<Map<String, Value>>, PostgresError> {
        if self.version < 2 {
            return Ok(Vec::new());
        }
        if self.version < 4 {
            return self
                .rows(
                    "SELECT row_to_json(j)::text FROM (
                         SELECT sequence_id, position, step, occurrence, kind, status, value,
                             error, written_at
                         FROM journal WHERE app_id = $1) j
                     ORDER BY j.sequence_id, j.position",
                    &[&app_id],
                )
                .await;
        }
        // With the execution that wrote each entry and the latest one.
        self.rows(
            "SELECT row_to_json(j)::text FROM (
                 SELECT j.sequence_id, j.position, j.step, j.occurrence, j.kind, j.status,
                     j.value, j.error, j.written_at, j.execution,
                     COALESCE(x.execution, 0) AS latest_execution
                 FROM journal j LEFT JOIN journal_executions x
                     ON x.app_id = j.app_id AND x.sequence_id = j.sequence_id
                 WHERE j.app_id = $1) j
             ORDER BY j.sequence_id, j.position",
            &[&app_id],
        )
        .await
    }

    /// The last time `process` recorded anything: the end (or, while it
    /// ran, the start) of the last step it started.
    ///
    /// # Errors
    ///
    /// [`PostgresError`] when the query fails.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only reads.
    pub async fn last_heard(&self, process: &str) -> Result<Option<i64>, PostgresError> {
        let row = self
            .client
            .query_opt(
                "SELECT COALESCE(ended_at, started_at) FROM steps
                 WHERE process = $1 ORDER BY started_at DESC LIMIT 1",
                &[&process],
            )
            .await
            .map_err(self.err())?;
        Ok(row.and_then(|r| r.get(0)))
    }
}

impl Drop for TrackerReader {
    fn drop(&mut self) {
        self.driver.abort();
    }
}
