//! [`TrackerSnapshot`]: the tracker's rows, read at once, for tools.

use serde_json::{Map, Value};
use tokio_postgres::NoTls;

use crate::database::reader_config;
use crate::error::PostgresError;
use crate::schema::{SCHEMA_VERSION, read_version};

/// Every row the [`PostgresTracker`](crate::PostgresTracker) wrote in one
/// schema, read in one repeatable-read transaction (a consistent picture
/// while writers go on), each row a map from column name to value.
///
/// The columns are those of the SQLite tracker's `apps` and `steps` tables
/// (schema version 4), so a tool can load the rows into a SQLite file for
/// tools that read only SQLite files (the `tributary ui` web view does).
///
/// Reading never creates, migrates or writes anything.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct TrackerSnapshot {
    /// `host:port/dbname` and the schema, for messages.
    pub source: String,
    /// The rows of `apps`.
    pub apps: Vec<Map<String, Value>>,
    /// The rows of `steps`.
    pub steps: Vec<Map<String, Value>>,
}

impl TrackerSnapshot {
    /// Read the tracker's rows of `schema` in the database at `url`.
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
    pub async fn read(url: &str, schema: &str) -> Result<Self, PostgresError> {
        let (config, target, user) = reader_config(url, schema)?;
        let err = |e| PostgresError::classify(&target, &user, e);
        let (mut client, connection) = config.connect(NoTls).await.map_err(err)?;
        let driver = tokio::spawn(connection);
        let read = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .map_err(err)?;
            let no_schema = || PostgresError::NoSchema {
                target: target.clone(),
                schema: schema.to_owned(),
            };
            let version = read_version(&tx, schema)
                .await
                .map_err(err)?
                .ok_or_else(no_schema)?;
            if version > SCHEMA_VERSION {
                return Err(PostgresError::SchemaTooNew {
                    target: target.clone(),
                    schema: schema.to_owned(),
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            let rows = |table: &'static str| {
                let sql = format!("SELECT row_to_json(t)::text FROM \"{schema}\".{table} t");
                let tx = &tx;
                async move {
                    let rows = tx.query(&sql, &[]).await.map_err(err)?;
                    Ok::<_, PostgresError>(
                        rows.iter()
                            .filter_map(|row| {
                                serde_json::from_str::<Map<String, Value>>(row.get(0)).ok()
                            })
                            .collect::<Vec<_>>(),
                    )
                }
            };
            let apps = rows("apps").await?;
            let steps = rows("steps").await?;
            Ok(TrackerSnapshot {
                source: format!("{target} schema {schema}"),
                apps,
                steps,
            })
        };
        let snapshot = read.await;
        drop(client);
        let _ = driver.await;
        snapshot
    }
}
