//! The web view of recorded runs: active time in the run list and on the
//! run page, a step's inputs and tokens in its detail.

use std::time::Duration;

use tributary::{Application, Inputs};
use tributary_sqlite::SqliteTracker;
use tributary_tests::chain::chain_graph;
use tributary_ui::UiServer;

use crate::ui_support::{Served, get_json};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_lists_duration_is_the_time_its_steps_ran_not_the_wait_between_them() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    let tracker = SqliteTracker::open(&db).await.unwrap();
    let mut app = Application::builder(chain_graph(3, Duration::from_millis(20), None))
        .app_id("waits")
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    // Three steps of 20 ms with 400 ms idle between them, as a run paused
    // between two steps waits.
    for _ in 0..3 {
        app.step(&Inputs::new()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tracker.flush().await.unwrap();
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;

    let page = get_json(&served.url("/api/runs/waits")).await;
    let ran: i64 = page["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ended_at"].as_i64().unwrap() - s["started_at"].as_i64().unwrap())
        .sum();
    assert_eq!(page["duration_us"].as_i64().unwrap(), ran, "{page}");
    let wall = page["wall_us"].as_i64().unwrap();
    assert!(wall - ran >= 800_000, "wall {wall} µs, ran {ran} µs");

    let list = get_json(&served.url("/api/runs")).await;
    let row = &list["roots"][0];
    assert_eq!(row["run"]["app_id"], "waits");
    assert_eq!(row["duration_us"].as_i64().unwrap(), ran);
    assert_eq!(row["wall_us"].as_i64().unwrap(), wall);
    served.stop().await;
}
