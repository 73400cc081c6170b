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

/// One step `answer` that reads the input `question` and streams `tokens`
/// words, recorded under `app_id`.
pub(crate) async fn record_answer(db: &std::path::Path, app_id: &str, tokens: usize) {
    use serde_json::json;
    use tributary::{Graph, State, action};

    let tracker = SqliteTracker::open(db).await.unwrap();
    let graph = Graph::single(action("answer").inputs(["question"]).run(
        move |s: State, inputs: Inputs, ctx| async move {
            let question: String = inputs.get_as("question")?;
            for n in 0..tokens {
                ctx.emit(format!("word{n}")).await?;
            }
            Ok((json!({ "answered": question }), s))
        },
    ));
    let mut app = Application::builder(graph)
        .app_id(app_id)
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    let inputs = Inputs::new().with("question", "why do rivers meander?");
    app.step(&inputs).await.unwrap();
    tracker.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_detail_shows_the_inputs_it_was_given_and_the_tokens_it_streamed() {
    use serde_json::json;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ui.db");
    record_answer(&db, "asked", 3).await;
    record_answer(&db, "chatty", 300).await;
    let served = Served::start(UiServer::new().database(&db).unwrap()).await;

    let step = get_json(&served.url("/api/runs/asked/steps/0")).await;
    assert_eq!(
        step["inputs"],
        json!({ "question": "why do rivers meander?" }),
        "{step}"
    );
    assert_eq!(step["tokens"], json!(["word0", "word1", "word2"]));
    assert_eq!(step["step"]["items"], 3);

    // A long stream keeps its first tokens only; the count has them all.
    let step = get_json(&served.url("/api/runs/chatty/steps/0")).await;
    let tokens = step["tokens"].as_array().unwrap();
    assert_eq!(tokens.len(), 256);
    assert_eq!(tokens[0], "word0");
    assert_eq!(tokens[255], "word255");
    assert_eq!(step["tokens_recorded"], 256);
    assert_eq!(step["step"]["items"], 300);
    served.stop().await;
}
