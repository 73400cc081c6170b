//! Many writers on one SQLite file: concurrent applications of one process
//! and two processes at once. Nothing is lost.

use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tributary::{Application, Persister, RunOptions, StepStatus};
use tributary_sqlite::{Database, RunReader, RunStatus, SqlitePersister, SqliteTracker};
use tributary_tests::chain::chain_graph;

/// Checks that `app_id` has exactly `steps` completed checkpoints, 0 to
/// `steps - 1`, and ends with the whole trail.
async fn assert_complete(p: &SqlitePersister, app_id: &str, steps: usize) {
    let history = p.history(app_id).await.unwrap();
    let seqs: Vec<u64> = history.iter().map(|c| c.sequence_id).collect();
    assert_eq!(seqs, (0..steps as u64).collect::<Vec<_>>(), "{app_id}");
    assert!(history.iter().all(|c| c.status == StepStatus::Completed));
    let trail: Vec<String> = (0..steps).map(|i| format!("step{i}")).collect();
    assert_eq!(
        history.last().unwrap().state.get("trail"),
        Some(&json!(trail)),
        "{app_id}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_applications_checkpoint_at_once_and_nothing_is_lost() {
    const APPS: usize = 50;
    const STEPS: usize = 6;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.db");
    // Two handles on the same file (two connections, two writer threads):
    // they contend for SQLite's lock as separate processes would.
    // Opened at once, they also race to create and migrate the new file.
    let (first, second) = tokio::join!(Database::open(&path), Database::open(&path));
    let (first, second) = (first.unwrap(), second.unwrap());
    let graph = chain_graph(STEPS, Duration::ZERO, None);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..APPS {
        let db = if i % 2 == 0 { &first } else { &second };
        let mut app = Application::builder(graph.clone())
            .app_id(format!("app-{i:02}"))
            .partition_key(if i % 2 == 0 { "even" } else { "odd" })
            .persister(Arc::new(SqlitePersister::new(db.clone())))
            .hook(SqliteTracker::new(db.clone()))
            .build()
            .await
            .unwrap();
        tasks.spawn(async move { app.run(RunOptions::new()).await });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    first.close().await.unwrap();
    second.close().await.unwrap();

    let p = SqlitePersister::open(&path).await.unwrap();
    let ids = p.list_app_ids(None).await.unwrap();
    assert_eq!(ids.len(), APPS);
    assert_eq!(p.list_app_ids(Some("odd")).await.unwrap().len(), APPS / 2);
    for id in &ids {
        assert_complete(&p, id, STEPS).await;
    }
    let runs = RunReader::open(&path).unwrap().runs().unwrap();
    assert_eq!(runs.len(), APPS);
    for run in runs {
        assert_eq!(
            (run.status, run.steps),
            (RunStatus::Completed, STEPS as u64)
        );
    }
}

/// Waits for `child`, at most `limit`.
fn wait_bounded(child: &mut Child, limit: Duration) -> ExitStatus {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("helper process still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn writer(path: &Path, prefix: &str, apps: usize, steps: usize) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sqlite_writer"))
        .arg(path)
        .arg(prefix)
        .arg(apps.to_string())
        .arg(steps.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn two_processes_write_the_same_file_at_once() {
    const APPS: usize = 30;
    const STEPS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    // A fresh file: both processes also race to create and migrate it.
    let path = dir.path().join("shared.db");
    let mut a = writer(&path, "a", APPS, STEPS);
    let mut b = writer(&path, "b", APPS, STEPS);
    assert!(wait_bounded(&mut a, Duration::from_secs(120)).success());
    assert!(wait_bounded(&mut b, Duration::from_secs(120)).success());

    let p = SqlitePersister::open(&path).await.unwrap();
    for prefix in ["a", "b"] {
        let ids = p.list_app_ids(Some(prefix)).await.unwrap();
        assert_eq!(ids.len(), APPS, "{prefix}");
        for id in &ids {
            assert_complete(&p, id, STEPS).await;
        }
    }
    let reader = RunReader::open(&path).unwrap();
    let runs = reader.runs().unwrap();
    assert_eq!(runs.len(), 2 * APPS);
    assert!(runs.iter().all(|r| r.status == RunStatus::Completed));
    assert_eq!(reader.steps("b-7").unwrap().len(), STEPS);
}
