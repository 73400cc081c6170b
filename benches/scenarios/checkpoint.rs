//! Checkpointed steps per second on PostgreSQL and SQLite, with 1 and 1,000
//! applications stepping at once, each against a bare loop inserting the
//! same rows, one statement at a time, with the same driver in the same run.
//!
//! PostgreSQL runs when `TRIBUTARY_POSTGRES_URL` is set, in a schema of its
//! own that is dropped at the end. The goal: at least half the bare loop's
//! rate (with 1,000 applications, group commit should beat it).

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;
use tributary::postgres::{Database, PostgresPersister};
use tributary::sqlite::SqlitePersister;
use tributary::{Application, Graph, Inputs, Persister, State, action, default};

use crate::Opts;
use crate::report::{Measurement, Target};

/// `(applications, steps each)`: the same number of rows order of
/// magnitude either way.
const SHAPES: [(usize, usize); 2] = [(1, 300), (1_000, 3)];

pub(crate) async fn checkpoint(opts: &Opts) {
    let url = std::env::var("TRIBUTARY_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty());
    for (apps, steps) in SHAPES {
        sqlite(opts, apps, steps).await;
        match &url {
            Some(url) => postgres(opts, url, apps, steps).await,
            None => eprintln!("checkpoint: TRIBUTARY_POSTGRES_URL is not set, PostgreSQL skipped"),
        }
    }
}

/// One action that counts, looping on itself: one checkpoint per step.
fn tick() -> Graph {
    Graph::builder()
        .action(
            action("tick")
                .reads(["n"])
                .writes(["n"])
                .run(|s: State, _, _| async move { Ok((json!({}), s.increment("n", 1)?)) }),
        )
        .transition("tick", "tick", default())
        .entrypoint("tick")
        .build()
        .expect("the graph builds")
}

/// `apps` applications stepping `steps` times each at once; checkpoints/s.
async fn ours(persister: Arc<dyn Persister>, prefix: &str, apps: usize, steps: usize) -> f64 {
    let graph = tick();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..apps {
        let (graph, persister) = (graph.clone(), Arc::clone(&persister));
        let id = format!("{prefix}-{i}");
        tasks.spawn(async move {
            let mut app = Application::builder(graph)
                .app_id(id)
                .persister(persister)
                .build()
                .await
                .expect("the application builds");
            for _ in 0..steps {
                app.step(&Inputs::new()).await.expect("the step runs");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("the application ran");
    }
    (apps * steps) as f64 / started.elapsed().as_secs_f64()
}

/// The row the checkpoint of step `seq` of app `i` holds in repeat
/// `repeat`, encoded.
fn row(repeat: usize, i: usize, seq: usize) -> (String, i64, String) {
    let state = json!({ "n": seq + 1 }).to_string();
    (format!("bare-r{repeat}-{i}"), seq as i64, state)
}

fn emit(backend: &str, apps: usize, steps: usize, ours: Vec<f64>, bare: Vec<f64>) {
    Measurement::new(
        "checkpoint",
        json!({ "backend": backend, "apps": apps, "steps_per_app": steps }),
        "checkpoints_per_s",
    )
    .samples(ours)
    .baseline("bare_insert_loop", bare)
    .target_ratio(Target::AtLeast(0.5))
    .emit();
}

// ===== PostgreSQL =====

async fn postgres(opts: &Opts, url: &str, apps: usize, steps: usize) {
    let schema = format!("bench_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let db = Database::builder(url)
        .schema(schema.as_str())
        .connect()
        .await
        .expect("PostgreSQL answers");
    let persister: Arc<dyn Persister> = Arc::new(PostgresPersister::new(db.clone()));
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("PostgreSQL answers");
    let driver = tokio::spawn(connection);
    client
        .batch_execute(&format!(
            "SET search_path TO {schema};
             CREATE TABLE bare (LIKE checkpoints INCLUDING ALL);"
        ))
        .await
        .expect("the bare table is created");
    let insert = client
        .prepare(
            "INSERT INTO bare (app_id, sequence_id, partition_key, action, status, state, result,
                 saved_at)
             VALUES ($1, $2, $3, 'tick', 'completed', $4, '{}', $5)",
        )
        .await
        .expect("the insert prepares");
    let (mut ours_s, mut bare_s) = (Vec::new(), Vec::new());
    // Like the persister's table, the bare one keeps the rows of every
    // repeat: each repeat writes new app ids into a table as large.
    for repeat in 0..opts.repeats(5) {
        let started = Instant::now();
        for i in 0..apps {
            for seq in 0..steps {
                let (id, seq, state) = row(repeat, i, seq);
                client
                    .execute(&insert, &[&id, &seq, &None::<String>, &state, &0i64])
                    .await
                    .expect("the bare insert");
            }
        }
        bare_s.push((apps * steps) as f64 / started.elapsed().as_secs_f64());
        ours_s.push(ours(Arc::clone(&persister), &format!("r{repeat}"), apps, steps).await);
    }
    emit("postgres", apps, steps, ours_s, bare_s);
    drop(persister);
    let _ = db.close().await;
    let _ = client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await;
    drop(client);
    let _ = driver.await;
}

// ===== SQLite =====

async fn sqlite(opts: &Opts, apps: usize, steps: usize) {
    let dir =
        std::env::temp_dir().join(format!("tributary-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    let persister: Arc<dyn Persister> = Arc::new(
        SqlitePersister::open(dir.join("ours.db"))
            .await
            .expect("the database opens"),
    );
    let bare_path = dir.join("bare.db");
    let (mut ours_s, mut bare_s) = (Vec::new(), Vec::new());
    for repeat in 0..opts.repeats(3) {
        let path = bare_path.clone();
        let rate = tokio::task::spawn_blocking(move || bare_sqlite(&path, repeat, apps, steps))
            .await
            .expect("the bare loop ran");
        bare_s.push(rate);
        ours_s.push(ours(Arc::clone(&persister), &format!("r{repeat}"), apps, steps).await);
    }
    emit("sqlite", apps, steps, ours_s, bare_s);
    drop(persister);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The bare loop on SQLite: the persister's table and settings (WAL,
/// `synchronous = FULL`), one autocommitted insert per row, into one file
/// kept across repeats as the persister's is (a fresh file's growing
/// write-ahead log makes every commit dearer).
fn bare_sqlite(path: &std::path::Path, repeat: usize, apps: usize, steps: usize) -> f64 {
    let conn = rusqlite::Connection::open(path).expect("the bare database opens");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS checkpoints (
             app_id        TEXT    NOT NULL,
             sequence_id   INTEGER NOT NULL,
             partition_key TEXT,
             action        TEXT    NOT NULL,
             status        TEXT    NOT NULL CHECK (status IN ('completed', 'failed', 'cancelled')),
             state         TEXT    NOT NULL,
             result        TEXT,
             saved_at      INTEGER NOT NULL,
             PRIMARY KEY (app_id, sequence_id)
         ) WITHOUT ROWID;",
    )
    .expect("the bare table is created");
    let mut insert = conn
        .prepare(
            "INSERT INTO checkpoints (app_id, sequence_id, partition_key, action, status, state,
                 result, saved_at)
             VALUES (?1, ?2, NULL, 'tick', 'completed', ?3, '{}', 0)",
        )
        .expect("the insert prepares");
    let started = Instant::now();
    for i in 0..apps {
        for seq in 0..steps {
            let (id, seq, state) = row(repeat, i, seq);
            insert
                .execute(rusqlite::params![id, seq, state])
                .expect("the bare insert");
        }
    }
    (apps * steps) as f64 / started.elapsed().as_secs_f64()
}
