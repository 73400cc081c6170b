//! The PostgreSQL schema's migrations through the migration tool: a schema
//! created by an earlier tributary (its version kept by hand in a
//! `tributary_schema` table) opens, keeps its rows and is recorded in the
//! tool's history without its scripts running again; a recorded script that
//! no longer matches this build's is refused.

use serde_json::json;
use tributary::{Checkpoint, Persister, State, StepStatus};
use tributary_postgres::{Database, PostgresError, PostgresPersister, SCHEMA_VERSION};

use crate::postgres_support::{TestSchema, url};

/// The layout an earlier tributary created: schema version 1 kept in the
/// one row of `tributary_schema`, the tables of version 1.
const OLD_LAYOUT: &str = r#"
CREATE TABLE tributary_schema (version bigint NOT NULL);
INSERT INTO tributary_schema VALUES (1);
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
"#;

async fn create_old_layout(schema: &TestSchema) -> tokio_postgres::Client {
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "CREATE SCHEMA \"{0}\"; SET search_path TO \"{0}\"; {OLD_LAYOUT}
             INSERT INTO checkpoints VALUES
                 ('old-app', 0, NULL, 'count', 'completed', '{{\"n\":1}}', '{{\"ok\":true}}', 1);
             RESET search_path;",
            schema.name
        ))
        .await
        .unwrap();
    client
}

async fn tables(client: &tokio_postgres::Client, schema: &str) -> Vec<String> {
    client
        .query(
            "SELECT table_name::text FROM information_schema.tables
             WHERE table_schema = $1 ORDER BY table_name",
            &[&schema],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

async fn history(client: &tokio_postgres::Client, schema: &str) -> Vec<(i32, String)> {
    client
        .query(
            &format!(
                "SELECT version, name FROM \"{schema}\".tributary_migrations ORDER BY version"
            ),
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_schema_with_the_old_version_table_upgrades_and_keeps_its_rows() {
    let schema = TestSchema::new("old_layout");
    let client = create_old_layout(&schema).await;

    let db = schema.connect().await;
    let persister = PostgresPersister::new(db.clone());
    // The row written under the old layout is still there...
    let old = persister.load("old-app", None).await.unwrap().unwrap();
    assert_eq!(old.sequence_id, 0);
    assert_eq!(old.action, "count");
    assert_eq!(old.state.get("n"), Some(&json!(1)));
    assert_eq!(old.result, Some(json!({"ok": true})));
    // ...and the schema takes new ones.
    persister
        .save(&Checkpoint::new(
            "old-app",
            1,
            "count",
            StepStatus::Completed,
            State::new().set("n", 2),
        ))
        .await
        .unwrap();
    db.close().await.unwrap();

    // The tool's history records version 1 as applied (its script did not
    // run again: its tables exist, so it would have failed) and the later
    // ones as run now; the hand-kept table is gone.
    assert_eq!(
        history(&client, &schema.name).await,
        [
            (1, "checkpoints_and_tracker".to_owned()),
            (2, "durable_journal".to_owned()),
            (3, "step_inputs_and_tokens".to_owned()),
            (4, "journal_executions".to_owned()),
            (5, "step_pauses".to_owned())
        ]
    );
    assert_eq!(
        tables(&client, &schema.name).await,
        [
            "apps",
            "checkpoints",
            "events",
            "fences",
            "journal",
            "journal_executions",
            "steps",
            "tributary_migrations",
            "workflows"
        ]
    );

    // Opening it again changes nothing.
    let db = schema.connect().await;
    let persister = PostgresPersister::new(db.clone());
    assert_eq!(
        persister
            .load("old-app", None)
            .await
            .unwrap()
            .unwrap()
            .sequence_id,
        1
    );
    db.close().await.unwrap();
    assert_eq!(history(&client, &schema.name).await.len(), 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn handles_opening_an_old_schema_at_once_upgrade_it_once() {
    let schema = TestSchema::new("old_race");
    let client = create_old_layout(&schema).await;
    let opened = futures_util::future::join_all(
        (0..6).map(|_| Database::builder(url()).schema(&schema.name).connect()),
    )
    .await;
    for db in opened {
        db.unwrap().close().await.unwrap();
    }
    let versions: Vec<i32> = history(&client, &schema.name)
        .await
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5]);
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_new_schema_records_every_migration() {
    let schema = TestSchema::new("fresh");
    schema.connect().await.close().await.unwrap();
    let client = schema.client().await;
    let recorded = history(&client, &schema.name).await;
    assert_eq!(recorded.len() as i64, SCHEMA_VERSION);
    assert_eq!(recorded.last().unwrap().0 as i64, SCHEMA_VERSION);
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_recorded_migration_whose_script_changed_is_refused() {
    let schema = TestSchema::new("divergent");
    schema.connect().await.close().await.unwrap();
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "UPDATE \"{}\".tributary_migrations SET checksum = '1' WHERE version = 1",
            schema.name
        ))
        .await
        .unwrap();
    let err = Database::builder(url())
        .schema(&schema.name)
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, PostgresError::Migration { schema: s, .. } if *s == schema.name),
        "{err:?}"
    );
}

/// A schema at version 3 (journal entries without the execution that wrote
/// them) keeps its entries when opened: they decode as written by no
/// numbered execution, and new executions are numbered from 1.
#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_version_3_journal_upgrades_and_keeps_its_entries() {
    use tributary::durable::{EntryKind, JournalEntry, JournalStore, Outcome, StepKey};
    use tributary_postgres::PostgresJournal;

    let schema = TestSchema::new("journal_v3");
    let db = schema.connect().await;
    let entry = JournalEntry {
        app_id: "old-wf".into(),
        sequence_id: 0,
        position: 0,
        step: StepKey::new("fetch", 0),
        kind: EntryKind::Step,
        outcome: Outcome::Completed(json!("page")),
        execution: 1,
    };
    PostgresJournal::new(db.clone())
        .append(entry.clone())
        .await
        .unwrap();
    db.close().await.unwrap();
    // Back to version 3, as an earlier tributary left it.
    let client = schema.client().await;
    client
        .batch_execute(&format!(
            "SET search_path TO \"{0}\";
             ALTER TABLE journal DROP COLUMN execution;
             DROP TABLE journal_executions;
             ALTER TABLE steps DROP COLUMN paused_at, DROP COLUMN paused_on,
                 DROP COLUMN pause_reason, DROP COLUMN resumed_at;
             DELETE FROM tributary_migrations WHERE version >= 4;
             RESET search_path;",
            schema.name
        ))
        .await
        .unwrap();
    assert_eq!(history(&client, &schema.name).await.len(), 3);

    let db = schema.connect().await;
    let journal = PostgresJournal::new(db.clone());
    let old = JournalEntry {
        execution: 0,
        ..entry
    };
    assert_eq!(journal.load("old-wf", 0).await.unwrap(), [old]);
    assert_eq!(journal.latest_execution("old-wf", 0).await.unwrap(), 0);
    assert_eq!(journal.begin_execution("old-wf", 0).await.unwrap(), 1);
    db.close().await.unwrap();
    assert_eq!(history(&client, &schema.name).await.len(), 5);
}
