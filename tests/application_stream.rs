//! `stream_result`: the halt action's outputs live, then its final result.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use serde_json::{Value, json};
use tributary::{Application, Graph, HaltReason, RunOptions, State, action, default};

/// prepare (silent) -> warmup (streams 2, not the halt target) -> answer (streams `n` tokens).
fn graph(emitted: Arc<AtomicUsize>, n: usize) -> Graph {
    Graph::builder()
        .action(
            action("prepare")
                .writes(["ready"])
                .run(|s: State, _, _| async move { Ok((json!({}), s.set("ready", true))) }),
        )
        .action(action("warmup").run(|s: State, _, ctx| async move {
            ctx.emit("w1").await?;
            ctx.emit("w2").await?;
            Ok((json!({}), s))
        }))
        .action(
            action("answer")
                .reads(["ready"])
                .writes(["text"])
                .run(move |s: State, _, ctx| {
                    let emitted = Arc::clone(&emitted);
                    async move {
                        let mut text = String::new();
                        for i in 0..n {
                            let tok = format!("t{i}");
                            ctx.emit(tok.as_str()).await?;
                            emitted.fetch_add(1, Ordering::SeqCst);
                            text.push_str(&tok);
                        }
                        Ok((json!({ "text": text }), s.set("text", text.clone())))
                    }
                }),
        )
        .transition("prepare", "warmup", default())
        .transition("warmup", "answer", default())
        .entrypoint("prepare")
        .build()
        .unwrap()
}

async fn app(emitted: Arc<AtomicUsize>, n: usize) -> Application {
    Application::builder(graph(emitted, n))
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_streaming_halt_target_reached_through_earlier_steps() {
    let mut app = app(Arc::default(), 3).await;
    let mut stream = app
        .stream_result(RunOptions::after(["answer"]))
        .await
        .unwrap();
    let mut tokens = Vec::new();
    while let Some(t) = stream.next().await {
        tokens.push(t);
    }
    // Only the halt action's outputs: not warmup's.
    assert_eq!(tokens, [json!("t0"), json!("t1"), json!("t2")]);
    let out = stream.get().await.unwrap();
    assert_eq!(out.result, Some(json!({ "text": "t0t1t2" })));
    assert_eq!(out.state.get("text"), Some(&json!("t0t1t2")));
    assert_eq!(out.reason, HaltReason::HaltAfter);
    assert_eq!(app.state().get("text"), Some(&json!("t0t1t2")));
    assert_eq!(app.sequence_id(), Some(2));
}

#[tokio::test]
async fn get_without_reading_drains_and_returns_the_result() {
    let mut app = app(Arc::default(), 20).await;
    let out = app
        .stream_result(RunOptions::after(["answer"]))
        .await
        .unwrap()
        .get()
        .await
        .unwrap();
    assert_eq!(
        out.result.unwrap()["text"].as_str().unwrap().len(),
        20 * 2 + 10
    );
}

#[tokio::test]
async fn a_consumer_that_stops_early_gets_no_result_and_the_state_does_not_advance() {
    let emitted = Arc::new(AtomicUsize::new(0));
    let mut app = app(Arc::clone(&emitted), 100).await;
    {
        let mut stream = app
            .stream_result(RunOptions::after(["answer"]))
            .await
            .unwrap();
        assert_eq!(stream.next().await, Some(json!("t0")));
        assert_eq!(stream.next().await, Some(json!("t1")));
        // Dropped here, mid-stream.
    }
    // Backpressure: the action did not run ahead of the consumer.
    assert!(
        emitted.load(Ordering::SeqCst) < 20,
        "emitted {}",
        emitted.load(Ordering::SeqCst)
    );
    assert!(!app.state().contains_key("text"));
    // The abandoned step is next again; earlier steps are kept.
    assert_eq!(app.next_action(), Some("answer"));
    assert_eq!(app.state().get("ready"), Some(&json!(true)));
    let out = app.run(RunOptions::after(["answer"])).await.unwrap();
    assert_eq!(out.action.as_deref(), Some("answer"));
}

#[tokio::test]
async fn halting_before_the_target_gives_an_empty_stream_and_no_result() {
    let mut app = app(Arc::default(), 3).await;
    let mut stream = app
        .stream_result(RunOptions::after(["answer"]).halt_before(["warmup"]))
        .await
        .unwrap();
    assert_eq!(stream.next().await, None);
    let out = stream.get().await.unwrap();
    assert_eq!(out.reason, HaltReason::HaltBefore);
    assert_eq!(out.action.as_deref(), Some("warmup"));
    assert_eq!(out.result, None);
}

#[tokio::test]
async fn a_failing_halt_action_ends_the_stream_and_get_returns_the_error() {
    let graph = Graph::builder()
        .action(action("talk").run(|_s: State, _, ctx| async move {
            ctx.emit("partial").await?;
            Err::<(Value, State), _>("model crashed".into())
        }))
        .entrypoint("talk")
        .build()
        .unwrap();
    let mut app = Application::builder(graph)
        .state(State::new().set("k", 1))
        .build()
        .await
        .unwrap();
    let mut stream = app
        .stream_result(RunOptions::after(["talk"]))
        .await
        .unwrap();
    assert_eq!(stream.next().await, Some(json!("partial")));
    assert_eq!(stream.next().await, None);
    let err = stream.get().await.unwrap_err();
    assert_eq!(
        err.action_error().unwrap().to_string(),
        "action `talk` failed: model crashed"
    );
    assert_eq!(app.state(), &State::new().set("k", 1));
}

#[tokio::test]
async fn a_non_streaming_halt_action_gives_an_empty_stream_and_its_result() {
    let mut app = app(Arc::default(), 3).await;
    let mut stream = app
        .stream_result(RunOptions::after(["prepare"]))
        .await
        .unwrap();
    assert_eq!(stream.next().await, None);
    let out = stream.get().await.unwrap();
    assert_eq!(out.action.as_deref(), Some("prepare"));
    assert_eq!(out.result, Some(json!({})));
}
