//! A database written by an earlier tributary (schema version 1: no step
//! results in checkpoints, no cancelled status, no task columns) is read
//! as it is by the reader, migrated by the first writer, and resumes.

use std::path::Path;
use std::sync::Arc;

use serde_json::json;
use tributary::{Persister, RunOptions, StepStatus};
use tributary_sqlite::{RunReader, RunStatus, SCHEMA_VERSION, SqlitePersister};

use crate::persister_contract::{Counters, build};

/// The schema of version 1, as tributary 0.1 created it.
const SCHEMA_V1: &str = "
    CREATE TABLE checkpoints (
        app_id        TEXT    NOT NULL,
        sequence_id   INTEGER NOT NULL,
        partition_key TEXT,
        action        TEXT    NOT NULL,
        status        TEXT    NOT NULL CHECK (status IN ('completed', 'failed')),
        state         TEXT    NOT NULL,
        saved_at      INTEGER NOT NULL,
        PRIMARY KEY (app_id, sequence_id)
    ) WITHOUT ROWID;
    CREATE TABLE apps (
        app_id               TEXT    NOT NULL PRIMARY KEY,
        partition_key        TEXT,
        status               TEXT    NOT NULL,
        created_at           INTEGER NOT NULL,
        updated_at           INTEGER NOT NULL,
        parent_app_id        TEXT,
        parent_sequence_id   INTEGER,
        parent_action        TEXT,
        parent_partition_key TEXT,
        spawn_app_id         TEXT,
        spawn_sequence_id    INTEGER,
        spawn_action         TEXT,
        spawn_partition_key  TEXT
    ) WITHOUT ROWID;
    CREATE INDEX apps_by_spawning_parent ON apps (spawn_app_id, spawn_sequence_id);
    CREATE TABLE steps (
        app_id             TEXT    NOT NULL,
        sequence_id        INTEGER NOT NULL,
        attempt            INTEGER NOT NULL DEFAULT 0,
        partition_key      TEXT,
        action             TEXT    NOT NULL,
        status             TEXT    NOT NULL,
        started_at         INTEGER NOT NULL,
        ended_at           INTEGER,
        result             TEXT,
        state              TEXT,
        error              TEXT,
        items              INTEGER NOT NULL DEFAULT 0,
        parent_app_id      TEXT,
        parent_sequence_id INTEGER,
        spawn_app_id       TEXT,
        spawn_sequence_id  INTEGER,
        PRIMARY KEY (app_id, sequence_id, attempt)
    ) WITHOUT ROWID;
    PRAGMA application_id = 1416784226; -- Trib
    PRAGMA user_version = 1;
";

/// A version 1 database where `job` (the contract graph a -> b -> c) has
/// completed `a`, as tributary 0.1 left it.
fn version_1_database(path: &Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    conn.execute_batch(SCHEMA_V1).unwrap();
    conn.execute_batch(
        r#"
        INSERT INTO checkpoints VALUES
            ('job', 0, 'user-1', 'a', 'completed', '{"trail":["a"]}', 1000);
        INSERT INTO apps (app_id, partition_key, status, created_at, updated_at)
            VALUES ('job', 'user-1', 'running', 1000, 2000);
        INSERT INTO steps (app_id, sequence_id, attempt, partition_key, action, status,
                started_at, ended_at, result, state)
            VALUES ('job', 0, 0, 'user-1', 'a', 'completed', 1000, 2000, '{}',
                '{"trail":["a"]}');
        "#,
    )
    .unwrap();
}

fn user_version(path: &Path) -> i64 {
    rusqlite::Connection::open(path)
        .unwrap()
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .unwrap()
}

#[tokio::test]
async fn a_version_1_database_is_read_as_is_then_migrated_and_resumed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("old.db");
    version_1_database(&path);

    // The reader reads the old schema without touching it.
    let reader = RunReader::open(&path).unwrap();
    let runs = reader.runs().unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].app_id.as_str(), runs[0].steps), ("job", 1));
    assert_eq!(runs[0].task_key, None);
    assert_eq!(reader.steps("job").unwrap()[0].action, "a");
    drop(reader);
    assert_eq!(user_version(&path), 1);

    // A writer migrates it; the old checkpoint loads (without a result:
    // version 1 kept none) and the application resumes after it.
    let p: Arc<dyn Persister> = Arc::new(SqlitePersister::open(&path).await.unwrap());
    let old = p.load("job", None).await.unwrap().unwrap();
    assert_eq!(
        (old.action.as_str(), old.status, old.result),
        ("a", StepStatus::Completed, None)
    );
    let k = Counters::default();
    let mut app = build(&k, &p, "job").await;
    assert_eq!(app.next_action(), Some("b"));
    app.run(RunOptions::after(["b"])).await.unwrap();
    assert_eq!(k.runs(), [0, 1, 0]);
    // The migrated table keeps results and accepts the cancelled status.
    assert_eq!(
        p.load("job", Some(1)).await.unwrap().unwrap().result,
        Some(json!({}))
    );
    app.save_cancelled().await.unwrap();
    assert_eq!(
        p.load("job", None).await.unwrap().unwrap().status,
        StepStatus::Cancelled
    );
    drop((app, p));
    assert_eq!(user_version(&path), SCHEMA_VERSION);

    let reader = RunReader::open(&path).unwrap();
    let run = reader.run("job").unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Running);
    assert_eq!(run.steps, 1);
}

#[tokio::test]
async fn a_version_3_database_without_step_inputs_and_tokens_is_read_then_migrated() {
    use tributary::{Application, Graph, Inputs, State, action};
    use tributary_sqlite::SqliteTracker;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v3.db");
    let graph = || {
        Graph::single(action("echo").inputs(["word"]).run(
            |s: State, inputs: Inputs, ctx| async move {
                let word: String = inputs.get_as("word")?;
                ctx.emit(word.clone()).await?;
                Ok((json!({ "said": word }), s))
            },
        ))
    };
    let record = |app_id: &'static str| {
        let path = path.clone();
        async move {
            let tracker = SqliteTracker::open(&path).await.unwrap();
            let mut app = Application::builder(graph())
                .app_id(app_id)
                .hook(tracker.clone())
                .build()
                .await
                .unwrap();
            app.step(&Inputs::new().with("word", app_id)).await.unwrap();
            tracker.flush().await.unwrap();
        }
    };
    // A database as version 3 left it: no inputs or tokens columns.
    record("old").await;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE steps DROP COLUMN inputs;
             ALTER TABLE steps DROP COLUMN tokens;
             ALTER TABLE journal DROP COLUMN execution;
             DROP TABLE journal_executions;
             ALTER TABLE steps DROP COLUMN paused_at;
             ALTER TABLE steps DROP COLUMN paused_on;
             ALTER TABLE steps DROP COLUMN pause_reason;
             ALTER TABLE steps DROP COLUMN resumed_at;
             PRAGMA user_version = 3;",
        )
        .unwrap();
    }
    let reader = RunReader::open(&path).unwrap();
    let old = &reader.steps("old").unwrap()[0];
    assert_eq!((old.action.as_str(), old.items), ("echo", 1));
    assert_eq!((old.inputs.clone(), old.tokens.clone()), (None, None));
    drop(reader);
    assert_eq!(user_version(&path), 3);

    // The next writer migrates it: new steps record both, old ones stay.
    record("new").await;
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let reader = RunReader::open(&path).unwrap();
    let new = &reader.steps("new").unwrap()[0];
    assert_eq!(new.inputs, Some(json!({ "word": "new" })));
    assert_eq!(new.tokens, Some(vec![json!("new")]));
    assert_eq!(reader.steps("old").unwrap()[0].inputs, None);
}

/// A version 4 database (journal entries without the execution that wrote
/// them) is read as it is (no run/replayed marks), then migrated by the
/// next journal that opens it; its old entries stay, unmarked, and new
/// executions are numbered.
#[tokio::test]
async fn a_version_4_journal_is_read_then_migrated_and_keeps_its_entries() {
    use tributary::BoxError;
    use tributary::durable::{DurableExt, WorkflowContext, Workflows};
    use tributary::sqlite::SqliteJournal;

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v4.db");
    let run = |id: &'static str| {
        let path = path.clone();
        async move {
            let workflows = Workflows::new(Arc::new(SqliteJournal::open(&path).await.unwrap()));
            workflows.register("one", |ctx: WorkflowContext, ()| async move {
                Ok::<_, BoxError>(ctx.step("fetch", async { Ok::<_, BoxError>(7u32) }).await?)
            });
            let out: u32 = workflows
                .start("one", id, ())
                .await
                .unwrap()
                .result()
                .await
                .unwrap();
            assert_eq!(out, 7);
        }
    };
    run("old").await;
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "ALTER TABLE journal DROP COLUMN execution;
             DROP TABLE journal_executions;
             ALTER TABLE steps DROP COLUMN paused_at;
             ALTER TABLE steps DROP COLUMN paused_on;
             ALTER TABLE steps DROP COLUMN pause_reason;
             ALTER TABLE steps DROP COLUMN resumed_at;
             PRAGMA user_version = 4;",
        )
        .unwrap();
    }
    let reader = RunReader::open(&path).unwrap();
    let old = reader.journal("old").unwrap();
    assert_eq!(old.len(), 1);
    assert_eq!(
        (old[0].execution, old[0].latest_execution, old[0].replay),
        (0, 0, None)
    );
    drop(reader);
    assert_eq!(user_version(&path), 4);

    run("new").await;
    assert_eq!(user_version(&path), SCHEMA_VERSION);
    let reader = RunReader::open(&path).unwrap();
    let old = reader.journal("old").unwrap();
    assert_eq!((old[0].execution, old[0].replay), (0, None));
    let new = reader.journal("new").unwrap();
    assert_eq!(
        (new[0].execution, new[0].latest_execution, new[0].replay),
        (1, 1, Some(tributary_sqlite::JournalReplay::Run))
    );
    let journal = SqliteJournal::open(&path).await.unwrap();
    assert_eq!(journal.entries("old").await.unwrap()[0].execution, 0);
}
