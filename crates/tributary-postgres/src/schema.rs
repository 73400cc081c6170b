//! The schema, its migrations, and the check that a schema is tributary's.
//!
//! Every table lives in one PostgreSQL schema of the user's choosing
//! (`tributary` unless told otherwise). Its migrations are versioned SQL
//! scripts run by [`refinery`], which records each applied one (version,
//! name, checksum) in the schema's `tributary_migrations` table and refuses
//! a recorded script whose text has changed. Opening a database takes a
//! session advisory lock named after the schema before looking at
//! anything, so processes opening a new database at once migrate it once,
//! one after the other.
//!
//! Schemas created before the migration tool kept their version in the one
//! row of a `tributary_schema` table; opening one records the migrations
//! that version had applied as done (without running them again), then
//! drops the old table.

use std::sync::Arc;

use refinery::{Migration, Runner, Target};
use tokio_postgres::{Client, GenericClient};

use crate::error::PostgresError;

/// The newest schema version this build knows.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// The table in which refinery records the applied migrations.
pub(crate) const HISTORY: &str = "tributary_migrations";

/// The version table of schemas created before the migration tool.
const LEGACY: &str = "tributary_schema";

/// The tables tributary creates; finding one without a version table
/// means the schema belongs to someone else.
const TABLES: &[&str] = &[
    "checkpoints",
    "fences",
    "apps",
    "steps",
    "journal",
    "workflows",
    "events",
    "journal_executions",
];

/// The migrations, in order: `V{n}__{name}` takes the schema from version
/// `n - 1` to `n`. A script, once released, is never edited (refinery
/// compares its checksum with the recorded one); a change is a new script.
const MIGRATIONS: &[(&str, &str)] = &[
    // 1: checkpoints and their fencing epochs; the tracker's applications
    // and step attempts (the columns of the SQLite schema 2). JSON is kept
    // as text: it loads back byte for byte (jsonb would reorder keys and
    // refuse `\u0000`).
    (
        "V1__checkpoints_and_tracker",
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
    ),
    // 2: the journal of durable steps (one row per step outcome at a
    // position of an action attempt), the records of durable workflows and
    // the events sent to them (the columns of the SQLite schema 3).
    (
        "V2__durable_journal",
        "
    CREATE TABLE journal (
        app_id      text    NOT NULL,
        sequence_id bigint  NOT NULL,
        position    integer NOT NULL,
        step        text    NOT NULL,
        occurrence  integer NOT NULL,
        kind        text    NOT NULL,
        status      text    NOT NULL CHECK (status IN ('completed', 'failed')),
        value       text,
        error       text,
        written_at  bigint  NOT NULL,
        PRIMARY KEY (app_id, sequence_id, position)
    );

    CREATE TABLE workflows (
        workflow_id text   NOT NULL PRIMARY KEY,
        name        text   NOT NULL,
        input       text   NOT NULL,
        status      text   NOT NULL,
        output      text,
        error       text,
        created_at  bigint NOT NULL,
        updated_at  bigint NOT NULL
    );
    CREATE INDEX workflows_by_status ON workflows (status);

    -- Events sent to workflows, numbered per (target, name) from 0.
    CREATE TABLE events (
        target  text   NOT NULL,
        name    text   NOT NULL,
        idx     bigint NOT NULL,
        value   text   NOT NULL,
        sent_at bigint NOT NULL,
        PRIMARY KEY (target, name, idx)
    );
    ",
    ),
    // 3: a step's inputs (a JSON object) and the first tokens it streamed
    // (a JSON array), as in the SQLite schema 4.
    (
        "V3__step_inputs_and_tokens",
        "
    ALTER TABLE steps ADD COLUMN inputs text;
    ALTER TABLE steps ADD COLUMN tokens text;
    ",
    ),
    // 4: numbered executions of durable code: the execution that wrote
    // each journal entry (0 before this version) and the latest execution
    // of each (app id, sequence id), as in the SQLite schema 5.
    (
        "V4__journal_executions",
        "
    ALTER TABLE journal ADD COLUMN execution integer NOT NULL DEFAULT 0;
    CREATE TABLE journal_executions (
        app_id      text    NOT NULL,
        sequence_id bigint  NOT NULL,
        execution   integer NOT NULL,
        started_at  bigint  NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    );
    ",
    ),
    // 5: a step that paused from inside its action (a durable step out of
    // retries): when, what waits, why, and when it was resumed (as in the
    // SQLite schema 6).
    (
        "V5__step_pauses",
        "
    ALTER TABLE steps ADD COLUMN paused_at    bigint;
    ALTER TABLE steps ADD COLUMN paused_on    text;
    ALTER TABLE steps ADD COLUMN pause_reason text;
    ALTER TABLE steps ADD COLUMN resumed_at   bigint;
    ",
    ),
];

/// Whether `schema` is a name tributary accepts: it is spliced into SQL and
/// into a notification channel (at most 63 bytes with its prefix).
pub(crate) fn valid_schema(schema: &str) -> bool {
    let mut chars = schema.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && schema.len() <= 40
}

/// The runner over every migration, recording into `schema`'s history.
fn runner(schema: &str) -> Runner {
    let migrations: Vec<Migration> = MIGRATIONS
        .iter()
        .map(|(name, sql)| {
            Migration::unapplied(name, sql).expect("migration names are V{n}__{name}")
        })
        .collect();
    let mut runner = Runner::new(&migrations)
        .set_grouped(true)
        .set_abort_divergent(true)
        .set_abort_missing(false);
    runner.set_migration_table_name(format!("\"{schema}\".{HISTORY}"));
    runner
}

/// Bring `schema` to [`SCHEMA_VERSION`], creating it if needed.
///
/// `client`'s session must name `schema` first on its search path (the
/// scripts name tables unqualified), as every pooled connection does.
pub(crate) async fn migrate(
    client: &mut Client,
    schema: &str,
    target: &str,
    user: &str,
) -> Result<(), PostgresError> {
    let err = |e| PostgresError::classify(target, user, e);
    // One migrator per schema at a time, across every process. refinery
    // commits in transactions of its own, so the lock is the session's;
    // it is released below, or by the server if the connection breaks.
    client
        .execute(
            "SELECT pg_advisory_lock(hashtext('tributary schema ' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err)?;
    let migrated = migrate_locked(client, schema, target, user).await;
    let unlocked = client
        .execute(
            "SELECT pg_advisory_unlock(hashtext('tributary schema ' || $1::text))",
            &[&schema],
        )
        .await
        .map_err(err);
    migrated.and(unlocked.map(drop))
}

async fn migrate_locked(
    client: &mut Client,
    schema: &str,
    target: &str,
    user: &str,
) -> Result<(), PostgresError> {
    let err = |e| PostgresError::classify(target, user, e);
    let refinery_err = |e: refinery::Error| PostgresError::Migration {
        target: target.to_owned(),
        schema: schema.to_owned(),
        source: Arc::new(e),
    };
    client
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\""))
        .await
        .map_err(err)?;
    let names: Vec<&str> = TABLES.iter().copied().chain([HISTORY, LEGACY]).collect();
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_name = ANY($2)",
            &[&schema, &names],
        )
        .await
        .map_err(err)?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let has = |name: &str| tables.iter().any(|t| t == name);
    let too_new = |found: i64| PostgresError::SchemaTooNew {
        target: target.to_owned(),
        schema: schema.to_owned(),
        found,
        supported: SCHEMA_VERSION,
    };
    if !has(HISTORY) {
        if has(LEGACY) {
            // A schema of the hand-kept version table: its migrations are
            // the first `version` of ours, already applied.
            let version: i64 = client
                .query_opt(&format!("SELECT version FROM \"{schema}\".{LEGACY}"), &[])
                .await
                .map_err(err)?
                .map_or(0, |row| row.get(0));
            if version > SCHEMA_VERSION {
                return Err(too_new(version));
            }
            let applied = u32::try_from(version).unwrap_or(0);
            runner(schema)
                .set_target(Target::FakeVersion(applied))
                .run_async(client)
                .await
                .map_err(refinery_err)?;
        } else if let Some(table) = TABLES.iter().find(|t| has(t)) {
            return Err(PostgresError::Foreign {
                target: target.to_owned(),
                schema: schema.to_owned(),
                table: (*table).to_owned(),
            });
        }
    }
    if has(LEGACY) {
        // Its versions now live in the history (also when a previous
        // upgrade stopped between recording them and this drop).
        client
            .batch_execute(&format!("DROP TABLE IF EXISTS \"{schema}\".{LEGACY}"))
            .await
            .map_err(err)?;
    }
    let runner = runner(schema);
    if has(HISTORY) {
        let newest = runner
            .get_last_applied_migration_async(client)
            .await
            .map_err(refinery_err)?;
        let newest = newest.map_or(0, |m| i64::from(m.version()));
        if newest > SCHEMA_VERSION {
            return Err(too_new(newest));
        }
    }
    runner.run_async(client).await.map_err(refinery_err)?;
    Ok(())
}

/// The version of `schema` for readers, which never migrate: the newest
/// recorded migration, or the hand-kept version of a schema no writer of
/// this build has opened yet; `None` when it holds no tributary tables.
pub(crate) async fn read_version(
    client: &impl GenericClient,
    schema: &str,
) -> Result<Option<i64>, tokio_postgres::Error> {
    let tables: Vec<String> = client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 AND table_name = ANY($2)",
            &[&schema, &[HISTORY, LEGACY].as_slice()],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let sql = if tables.iter().any(|t| t == HISTORY) {
        format!("SELECT MAX(version)::bigint FROM \"{schema}\".{HISTORY}")
    } else if tables.iter().any(|t| t == LEGACY) {
        format!("SELECT MAX(version) FROM \"{schema}\".{LEGACY}")
    } else {
        return Ok(None);
    };
    let version: Option<i64> = client.query_one(&sql, &[]).await?.get(0);
    Ok(version.filter(|v| *v > 0))
}
