//! A PostgreSQL database (`--db postgres://...`): [`PostgresRuns`] queries
//! the tracker's rows directly ([`TrackerReader`]) and decodes them with the
//! decoders of the SQLite reader, so every command prints the same output.
//! The web view, which reads only SQLite files, is served a temporary copy
//! of the rows ([`snapshot`]), deleted when the command ends.

use std::collections::HashSet;
use std::io::Write;

use rusqlite::types::Value as SqlValue;
use serde_json::{Map, Value};
use tributary_postgres::{AppsWhere, PostgresError, StepFeed, TrackerReader, TrackerSnapshot};
use tributary_sqlite::{
    AppFilter, AppRecord, Database, JournaledStep, RunSummary, StepMark, StepRecord, TrackedStep,
    TrackerRows,
};

use crate::render::clean;
use crate::{CliError, Reader};

/// Whether `db` names a PostgreSQL database rather than a file.
pub(crate) fn is_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// The tracker's rows in a PostgreSQL schema, read as the SQLite reader
/// reads a file: a [`TrackerRows`], so a
/// [`RunSource`](tributary_sqlite::RunSource).
#[derive(Debug)]
pub(crate) struct PostgresRuns {
    // The connection goes before the runtime that drives it.
    reader: TrackerReader,
    rt: tokio::runtime::Runtime,
}

impl PostgresRuns {
    /// Connect to the tracker's rows of `schema` at `url`.
    pub(crate) fn connect(url: &str, schema: &str) -> Result<Self, CliError> {
        let rt = runtime()?;
        let reader = rt.block_on(TrackerReader::connect(url, schema))?;
        Ok(PostgresRuns { reader, rt })
    }

    /// `host:port/dbname schema NAME`.
    pub(crate) fn source(&self) -> String {
        self.reader.source()
    }
}

/// A row decoded into `T` by its column names.
fn decode<T: serde::de::DeserializeOwned>(row: Map<String, Value>) -> Result<T, String> {
    serde_json::from_value(Value::Object(row)).map_err(|e| e.to_string())
}

fn text(row: &Map<String, Value>, column: &str) -> String {
    match row.get(column) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        _ => "?".to_owned(),
    }
}

impl TrackerRows for PostgresRuns {
    type Error = PostgresError;

    fn apps(&self, filter: AppFilter<'_>) -> Result<Vec<RunSummary>, PostgresError> {
        let which = match filter {
            AppFilter::Roots => AppsWhere::Roots,
            AppFilter::One(id) => AppsWhere::One(id),
            AppFilter::ChildrenOf(id) => AppsWhere::ChildrenOf(id),
            _ => AppsWhere::All,
        };
        let rows = self.rt.block_on(self.reader.apps(which))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let id = text(&row, "app_id");
                match decode::<AppRecord>(row) {
                    Ok(record) => record.into_summary(),
                    Err(problem) => RunSummary::unreadable(id, problem),
                }
            })
            .collect())
    }

    fn step_rows(&self, app_id: &str) -> Result<Vec<TrackedStep>, PostgresError> {
        let rows = self.rt.block_on(self.reader.steps(app_id))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let (sequence_id, action) = (row.get("sequence_id").cloned(), text(&row, "action"));
                decode::<StepRecord>(row).map_or_else(
                    |problem| {
                        let sequence_id = sequence_id.and_then(|v| v.as_u64()).unwrap_or(0);
                        TrackedStep::unreadable(sequence_id, action, problem)
                    },
                    StepRecord::into_step,
                )
            })
            .collect())
    }

    fn marks(&self, app_id: &str) -> Result<Vec<StepMark>, PostgresError> {
        let rows = self.rt.block_on(self.reader.marks(app_id))?;
        // A row the marks cannot use is left out of the timeline (its step
        // is listed as unreadable).
        Ok(rows
            .into_iter()
            .filter_map(|row| decode(row).ok())
            .collect())
    }

    fn last_heard(&self, process: &str) -> Result<Option<i64>, PostgresError> {
        self.rt.block_on(self.reader.last_heard(process))
    }

    fn journal_rows(&self, app_id: &str) -> Result<Vec<JournaledStep>, PostgresError> {
        let rows = self.rt.block_on(self.reader.journal(app_id))?;
        // The columns are typed by the schema: a row always decodes.
        Ok(rows
            .into_iter()
            .filter_map(|row| decode(row).ok())
            .collect())
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Snapshot {
            reason: e.to_string(),
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
    reader: &Reader,
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
