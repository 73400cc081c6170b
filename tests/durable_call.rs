//! Calls of named functions as journaled steps.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary::durable::*;
use tributary::{Application, BoxError, RunOptions};

use crate::durable_support::{LastError, Runs, graph_of};

fn functions(runs: Runs) -> Functions {
    let functions = Functions::new();
    functions.register("double", move |n: u32| {
        let runs = runs.clone();
        async move {
            runs.bump("double");
            Ok::<_, BoxError>(n * 2)
        }
    });
    functions
}

#[tokio::test]
async fn a_workflow_call_is_journaled_and_replayed_without_calling_again() {
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let runs = Runs::default();
    let register = |workflows: &Workflows| {
        workflows.set_functions(functions(runs.clone()));
        workflows.register("twice", |ctx: WorkflowContext, n: u32| async move {
            let a: u32 = ctx.call("double", n).await?;
            let b: u32 = ctx.call("double", a).await?;
            Ok::<_, BoxError>(b)
        });
    };
    let first = Workflows::new(Arc::clone(&store));
    register(&first);
    let out: u32 = first
        .start("twice", "t-1", 5)
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, 20);
    let keys: Vec<String> = store
        .load("t-1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.step.to_string())
        .collect();
    assert_eq!(keys, ["call:double#0", "call:double#1"]);

    // A new engine resuming the finished workflow calls nothing.
    let second = Workflows::new(store);
    register(&second);
    let out: u32 = second.resume("t-1").await.unwrap().result().await.unwrap();
    assert_eq!(out, 20);
    assert_eq!(runs.get("double"), 2);
}

#[tokio::test]
async fn an_action_calls_the_functions_attached_as_an_extension() {
    let runs = Runs::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = graph_of(|ctx| async move {
        let n: u32 = ctx.call("double", 21).await?;
        Ok(json!(n))
    });
    for _ in 0..2 {
        let mut app = Application::builder(graph.clone())
            .app_id("calls")
            .journal(&journal)
            .extension(functions(runs.clone()))
            .build()
            .await
            .unwrap();
        let out = app.run(RunOptions::new()).await.unwrap();
        assert_eq!(out.state.get("out"), Some(&json!(42)));
    }
    assert_eq!(runs.get("double"), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_of_an_unknown_function_fails_without_retries() {
    let last = LastError::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = graph_of({
        let last = last.clone();
        move |ctx| {
            let last = last.clone();
            async move {
                let policy = StepPolicy::new()
                    .retries(5)
                    .backoff(Duration::from_millis(1), Duration::from_millis(1));
                let n: u32 = last.keep(ctx.call("missing", 1).policy(policy).await)?;
                Ok(json!(n))
            }
        }
    });
    let mut app = Application::builder(graph)
        .journal(&journal)
        .extension(Functions::new())
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap_err();
    match last.take() {
        Some(DurableError::StepFailed {
            step,
            attempts,
            source,
        }) => {
            assert_eq!(step, StepKey::new("call:missing", 0));
            assert_eq!(attempts, 1);
            assert_eq!(source.to_string(), "no function is registered as missing");
        }
        other => panic!("expected a terminal failure, got {other:?}"),
    }
}
