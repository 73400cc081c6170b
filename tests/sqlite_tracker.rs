//! The SQLite tracker: the tracker's contract (`tracker_contract`) on a
//! SQLite file, and what only a file shows: the drop of the last handle
//! writes everything, and a record an earlier tracker wrote too deep to
//! decode is reported, not fatal.

use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::{Value, json};
use tributary::{Application, Graph, RunOptions, State, action};
use tributary_sqlite::{RunReader, RunStatus, SqlitePersister, SqliteTracker};

use crate::tracker_contract::Tracked;

fn sqlite() -> futures_util::future::BoxFuture<'static, Tracked> {
    async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("track.db");
        let db = tributary_sqlite::Database::open(&path).await.unwrap();
        let tracker = SqliteTracker::new(db.clone());
        let flusher = tracker.clone();
        Tracked::new(
            Arc::new(tracker),
            Arc::new(SqlitePersister::new(db)),
            move || {
                let tracker = flusher.clone();
                async move { tracker.flush().await.unwrap() }.boxed()
            },
            path,
            "tributary",
            dir,
        )
    }
    .boxed()
}

crate::tracker_contract_tests!(sqlite);

/// A leaf: `work` emits two items and waits 20 ms; it fails when the state
/// says so.
fn leaf_graph() -> Graph {
    Graph::builder()
        .action(
            action("work")
                .reads(["fail"])
                .writes(["out"])
                .run(|s: State, _, ctx| async move {
                    ctx.emit("token-1").await?;
                    ctx.emit("token-2").await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if s.get("fail") == Some(&json!(true)) {
                        return Err::<(Value, State), _>("leaf gave up".into());
                    }
                    Ok((json!({ "out": 1 }), s.set("out", 1)))
                }),
        )
        .entrypoint("work")
        .build()
        .unwrap()
}

#[tokio::test]
async fn dropping_the_last_handle_writes_everything_handed_over() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.db");
    let tracker = SqliteTracker::open(&path).await.unwrap();
    for i in 0..20 {
        let mut app = Application::builder(leaf_graph())
            .app_id(format!("app-{i}"))
            .hook(tracker.clone())
            .build()
            .await
            .unwrap();
        app.run(RunOptions::new()).await.unwrap();
    }
    // No flush: the drop of the last handle waits for the writer.
    drop(tracker);
    let reader = RunReader::open(&path).unwrap();
    let runs = reader.runs().unwrap();
    assert_eq!(runs.len(), 20);
    assert!(
        runs.iter()
            .all(|r| r.status == RunStatus::Completed && r.steps == 1)
    );
}

#[tokio::test]
async fn json_too_deep_to_decode_in_an_old_record_is_reported_not_fatal() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("track.db");
    let tracker = SqliteTracker::open(&path).await.unwrap();
    let graph =
        Graph::single(action("one").run(|s: State, _, _| async move { Ok((json!({}), s)) }));
    for id in ["fine", "deep"] {
        Application::builder(graph.clone())
            .app_id(id)
            .hook(tracker.clone())
            .build()
            .await
            .unwrap()
            .run(RunOptions::new())
            .await
            .unwrap();
    }
    tracker.database().clone().close().await.unwrap();
    drop(tracker);
    // What an earlier tracker wrote for a deep state: valid JSON, but
    // deeper than any decoder accepts (128, 10,000 and 30,000 levels).
    let conn = rusqlite::Connection::open(&path).unwrap();
    for (seq, levels) in [(1, 128), (2, 10_000), (3, 30_000)] {
        let deep = format!("{{\"v\":{}0{}}}", "[".repeat(levels), "]".repeat(levels));
        conn.execute(
            "INSERT INTO steps (app_id, sequence_id, attempt, action, status, started_at,
                 ended_at, result, state)
             VALUES ('deep', ?1, 0, 'one', 'completed', 10, 20, ?2, ?2)",
            rusqlite::params![seq, deep],
        )
        .unwrap();
    }
    drop(conn);
    let reader = RunReader::open(&path).unwrap();
    let steps = reader.steps("deep").unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps[0].unreadable.is_none());
    for step in &steps[1..] {
        assert_eq!((&step.state, &step.result), (&None, &None));
        let why = step.unreadable.as_deref().unwrap();
        assert!(why.contains("recursion limit exceeded"), "{why}");
    }
    assert_eq!(reader.run("deep").unwrap().unwrap().steps, 4);
    assert_eq!(reader.runs().unwrap().len(), 2);

    // `tributary show` shows the run, saying what it could not decode.
    for json in [false, true] {
        let db = path.display().to_string();
        let mut args = vec!["tributary", "--db", &db, "show", "deep"];
        if json {
            args.push("--json");
        }
        let cli = <tributary_cli::Cli as clap::Parser>::parse_from(args);
        let mut out = Vec::new();
        tributary_cli::run(&cli, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("recursion limit exceeded"), "{text}");
    }
}
