//! A PostgreSQL database (`--db postgres://...`), read with the same reader
//! as a SQLite file: the tracker's rows of the schema are read in one
//! consistent transaction ([`TrackerSnapshot`]) and copied into a temporary
//! SQLite file with the tracker's schema, which [`RunReader`] then reads.
//! The columns are the same in both backends, so every command prints the
//! same output by construction. The copy is as large as the schema's
//! records; it is deleted when the command ends.

use std::collections::HashSet;
use std::io::Write;
use std::path::PathBuf;

use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value};
use tributary_postgres::{StepFeed, TrackerSnapshot};
use tributary_sqlite::{Database, RunReader};

use crate::CliError;
use crate::render::clean;

/// Whether `db` names a PostgreSQL database rather than a file.
pub(crate) fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The copy of a PostgreSQL database's records; the file goes with it.
#[derive(Debug)]
pub(crate) struct Snapshot {
    _dir: tempfile::TempDir,
    pub(crate) path: PathBuf,
    /// `host:port/dbname schema NAME`.
    pub(crate) source: String,
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Snapshot {
            reason: e.to_string(),
        })
}

/// Read the records of `schema` at `url` into a temporary SQLite file.
pub(crate) fn snapshot(url: &str, schema: &str) -> Result<Snapshot, CliError> {
    let dir = tempfile::tempdir().map_err(|e| CliError::Snapshot {
        reason: e.to_string(),
    })?;
    let path = dir.path().join("snapshot.db");
    let source = runtime()?.block_on(copy_into(url, schema, &path))?;
    Ok(Snapshot {
        _dir: dir,
        path,
        source,
    })
}

/// Read the records of `schema` at `url` and write them into a new SQLite
/// file at `path`, with the tracker's schema; the source's name for
/// messages.
pub(crate) async fn copy_into(
    url: &str,
    schema: &str,
    path: &std::path::Path,
) -> Result<String, CliError> {
    let rows = TrackerSnapshot::read(url, schema).await?;
    let failed = |reason: String| CliError::Snapshot { reason };
    // The tracker's schema, created as the tracker creates it.
    Database::open(path).await?.close().await?;
    let path = path.to_path_buf();
    let source = rows.source.clone();
    // SQLite writes block: off the runtime's workers.
    tokio::task::spawn_blocking(move || {
        let mut conn = rusqlite::Connection::open(&path)?;
        let tx = conn.transaction()?;
        insert(&tx, "apps", &rows.apps)?;
        insert(&tx, "steps", &rows.steps)?;
        tx.commit()
    })
    .await
    .map_err(|e| failed(e.to_string()))?
    .map_err(|e| failed(e.to_string()))?;
    Ok(source)
}

fn insert(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    rows: &[Map<String, Value>],
) -> rusqlite::Result<()> {
    for row in rows {
        let columns: Vec<String> = row
            .keys()
            .map(|c| format!("\"{}\"", c.replace('"', "\"\"")))
            .collect();
        let marks: Vec<String> = (1..=columns.len()).map(|i| format!("?{i}")).collect();
        let sql = format!(
            "INSERT INTO {table} ({}) VALUES ({})",
            columns.join(", "),
            marks.join(", ")
        );
        let values = row.values().map(|v| match v {
            Value::Null => SqlValue::Null,
            Value::Bool(b) => SqlValue::Integer(i64::from(*b)),
            Value::Number(n) => match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or_default()),
            },
            Value::String(s) => SqlValue::Text(s.clone()),
            other => SqlValue::Text(other.to_string()),
        });
        tx.prepare_cached(&sql)?
            .execute(rusqlite::params_from_iter(values))?;
    }
    Ok(())
}

/// A feed of the steps recorded in `schema` at `url`, listening before the
/// run is read, so no step falls between the two.
pub(crate) fn listen(
    url: &str,
    schema: &str,
) -> Result<(tokio::runtime::Runtime, StepFeed), CliError> {
    let rt = runtime()?;
    let feed = rt.block_on(StepFeed::connect(url, schema))?;
    Ok((rt, feed))
}

/// Print each new step of `app_id` as it is recorded, until the feed or the
/// output fails. Steps `reader` already shows are not printed again.
pub(crate) fn follow(
    rt: tokio::runtime::Runtime,
    mut feed: StepFeed,
    reader: &RunReader,
    app_id: &str,
    out: &mut dyn Write,
) -> Result<(), CliError> {
    let mut shown: HashSet<(i64, String)> = reader
        .steps(app_id)?
        .into_iter()
        .filter(|s| s.ended_at.is_some())
        .map(|s| {
            (
                i64::try_from(s.sequence_id).unwrap_or(i64::MAX),
                s.status.to_string(),
            )
        })
        .collect();
    writeln!(out)?;
    writeln!(
        out,
        "following {}: each new step as it is recorded",
        clean(app_id)
    )?;
    out.flush()?;
    rt.block_on(async {
        while let Some(notice) = feed.next().await {
            let notice = notice?;
            if notice.app_id != app_id || shown.remove(&(notice.sequence_id, notice.status.clone()))
            {
                continue;
            }
            writeln!(
                out,
                "step {}  {}  {}",
                notice.sequence_id,
                clean(&notice.action),
                clean(&notice.status)
            )?;
            out.flush()?;
        }
        Ok(())
    })
}
