//! The schema, its migrations, and the check that a schema is tributary's.
//!
//! Every table lives in one PostgreSQL schema of the user's choosing
//! (`tributary` unless told otherwise); the schema's version is the one row
//! of its `tributary_schema` table. Opening a database runs every migration
//! the schema lacks in one transaction that first takes an advisory lock
//! named after the schema, so processes opening a new database at once
//! migrate it once, one after the other.

use tokio_postgres::Client;

use crate::error::PostgresError;

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// The tables tributary creates; finding one without the version table
/// means the schema belongs to someone else.
const TABLES: &[&str] = &["tributary_schema", "checkpoints", "fences", "apps", "steps"];

/// Migration `i` takes the schema from version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: checkpoints and their fencing epochs; the tracker's
    // applications and step attempts (the columns of the SQLite schema 2).
    // JSON is kept as text: it loads back byte for byte (jsonb would
    // reorder keys and refuse `\u0000`).
    "
    CREATE TABLE checkpoints (
        app_id        text    NOT NULL,
        sequence_id   bigint  NOT NULL,
        partition_key text,
        action        text    NOT NULL,
        status        text    NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
        state         text    NOT NULL,
        result        text,
        saved_at      bigint  NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    );
    CREATE INDEX checkpoints_by_partition ON checkpoints (partition_key, app_id);

    CREATE TABLE fences (
        app_id text   NOT NULL PRIMARY KEY,
        epoch  bigint NOT NULL
    );

    CREATE TABLE apps (
        app_id               text   NOT NULL PRIMARY KEY,
        partition_key        text,
        status               text   NOT NULL,
        created_at           bigint NOT NULL,
        updated_at           bigint NOT NULL,
        parent_app_id        text,
        parent_sequence_id   bigint,
        parent_action        text,
        parent_partition_key text,
        spawn_app_id         text,
        spawn_sequence_id    bigint,
        spawn_action         text,
        spawn_partition_key  text,
        task_key             text,
        task_path            text,
        task_index           bigint,
        run_id               text,
        label                text,
        spawned_at           bigint,
        process              text
    );
    CREATE INDEX apps_by_spawning_parent ON apps (spawn_app_id, spawn_sequence_id);

    CREATE TABLE steps (
        app_id             text    NOT NULL,
        sequence_id        bigint  NOT NULL,
        attempt            integer NOT NULL DEFAULT 0,
        partition_key      text,
        action             text    NOT NULL,
        status             text    NOT NULL,
        started_at         bigint  NOT NULL,
        ended_at           bigint,
        result             text,
        state              text,
        error              text,
        items              bigint  NOT NULL DEFAULT 0,
        parent_app_id      text,
        parent_sequence_id bigint,
        spawn_app_id       text,
        spawn_sequence_id  bigint,
        process            text,
        unrecorded         text,
        PRIMARY KEY (app_id, sequence_id, attempt)
    );
    CREATE INDEX steps_by_process ON steps (process, started_at);
    ",
    // 1 -> 2: a step's inputs (a JSON object) and the first tokens it
    // streamed (a JSON array), as in the SQLite schema 4.
    "
    ALTER TABLE steps ADD COLUMN inputs text;
    ALTER TABLE steps ADD COLUMN tokens text;
    ",
];

// Every version has its migration.
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// Whether `schema` is a name tributary accepts: it is spliced into SQL and
/// into a notification channel (at most 63 bytes with its prefix).
pub(crate) fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 40
}

/// Bring `schema` to [`SCHEMA_VERSION`], creating it if needed.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    target: &str,
    user: &str,
) -> Result<(), PostgresError> {
    let err = |e| PostgresError::classify(target, user, e);
    let tx = client.transaction().await.map_err(err)?;
    // One migrator per schema at a time, across every process; released
    // with the transaction.
    tx.execute(
        "SELECT pg_advisory_xact_lock(hashtext('tributary schema ' || $1::text))",
        &[&schema],
    )
    .await
    .map_err(err)?;
    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .map_err(err)?;
    let tables: Vec<String> = tx
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_name = ANY($2)",
            &[&schema, &TABLES],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let version: i64 = if tables.iter().any(|t| t == "tributary_schema") {
        tx.query_opt(
            &format!("SELECT version FROM \"{schema}\".tributary_schema"),
            &[],
        )
        .await
        .map_err(err)?
        .map_or(0, |row| row.get(0))
    } else if let Some(table) = tables.first() {
        return Err(PostgresError::Foreign {
            target: target.to_owned(),
            schema: schema.to_owned(),
            table: table.clone(),
        });
    } else {
        tx.batch_execute(&format!(
            "CREATE TABLE \"{schema}\".tributary_schema (version bigint NOT NULL);
             INSERT INTO \"{schema}\".tributary_schema VALUES (0);"
        ))
        .await
        .map_err(err)?;
        0
    };
    if version > SCHEMA_VERSION {
        return Err(PostgresError::SchemaTooNew {
            target: target.to_owned(),
            schema: schema.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    if version == SCHEMA_VERSION {
        return tx.commit().await.map_err(err);
    }
    // The migrations name tables unqualified: the schema first on the path
    // for this transaction only.
    tx.batch_execute(&format!("SET LOCAL search_path TO \"{schema}\""))
        .await
        .map_err(err)?;
    for migration in &MIGRATIONS[version as usize..] {
        tx.batch_execute(migration).await.map_err(err)?;
    }
    tx.execute(
        &format!("UPDATE \"{schema}\".tributary_schema SET version = $1"),
        &[&SCHEMA_VERSION],
    )
    .await
    .map_err(err)?;
    tx.commit().await.map_err(err)
}
