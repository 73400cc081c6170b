//! Timeouts and cancellation always get in: a task whose steps never await
//! is stopped by its timeout and by cancel, and paused time does not count
//! against a timeout.

use std::time::Duration;

use serde_json::json;
use tributary::{
    CancelReason, FailurePolicy, Graph, ItemKind, MergeMode, RunConfig, Runtime, State, StreamItem,
    TaskErrorKind, TaskSpec, action, default,
};

use crate::support::Count;

async fn collect(stream: &mut tributary::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

/// `ping` -> `pong` -> `ping` ... forever; neither action ever awaits.
fn spinner(steps: Count) -> Graph {
    let (a, b) = (steps.clone(), steps);
    Graph::builder()
        .action(action("ping").run(move |s: State, _, _| {
            a.bump();
            async move { Ok((json!({}), s)) }
        }))
        .action(action("pong").run(move |s: State, _, _| {
            b.bump();
            async move { Ok((json!({}), s)) }
        }))
        .transition("ping", "pong", default())
        .transition("pong", "ping", default())
        .entrypoint("ping")
        .build()
        .unwrap()
}

// A current-thread runtime: one worker, so a task that never yields would
// keep everyone else (the timer, the canceller, the consumer) out.
#[tokio::test]
async fn a_non_yielding_loop_is_stopped_by_task_timeout() {
    for mode in [MergeMode::AsCompleted, MergeMode::FinalOnly] {
        let steps = Count::default();
        let config = RunConfig::new()
            .merge_mode(mode)
            .intermediate_nodes(false)
            .task_timeout(Duration::from_millis(50));
        let task = TaskSpec::new("spin", spinner(steps.clone()));
        let (_h, mut stream) = Runtime::new().run(vec![task], config);
        let items = tokio::time::timeout(Duration::from_secs(30), collect(&mut stream))
            .await
            .expect("the timeout stops the loop");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].kind, ItemKind::Failed);
        assert_eq!(
            items[0].error.as_ref().unwrap().kind,
            TaskErrorKind::TimedOut
        );
        assert!(steps.get() > 0);
    }
}

#[tokio::test]
async fn a_non_yielding_loop_is_stopped_by_cancel() {
    let steps = Count::default();
    let config = RunConfig::new().intermediate_nodes(false);
    let task = TaskSpec::new("spin", spinner(steps.clone()));
    let (handle, mut stream) = Runtime::new().run(vec![task], config);
    let canceller = tokio::spawn({
        let handle = handle.clone();
        async move {
            handle
                .progress()
                .wait_for(|p| p.running == 1)
                .await
                .unwrap();
            handle.cancel().await;
        }
    });
    let items = tokio::time::timeout(Duration::from_secs(30), collect(&mut stream))
        .await
        .expect("cancel stops the loop");
    canceller.await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0].kind, ItemKind::Cancelled);
    assert_eq!(items[0].cancel_reason(), Some(CancelReason::Handle));
    // Nothing steps after cancel resolved.
    let after = steps.get();
    tokio::task::yield_now().await;
    assert_eq!(steps.get(), after);
}

/// `steps` steps of 100 ms each.
fn ticker(steps: usize) -> Graph {
    let mut b = Graph::builder();
    for i in 0..steps {
        b = b.action(action(format!("s{i}")).run(|s: State, _, _| async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            Ok((json!({}), s))
        }));
        if i > 0 {
            b = b.transition(format!("s{}", i - 1), format!("s{i}"), default());
        }
    }
    b.entrypoint("s0").build().unwrap()
}

#[tokio::test(start_paused = true)]
async fn time_spent_paused_does_not_count_against_the_timeout() {
    let config = RunConfig::new()
        .task_timeout(Duration::from_millis(1200))
        .failure_policy(FailurePolicy::Continue);
    // 1 s of work fits the timeout; 1.5 s does not, pause or no pause.
    let tasks = vec![
        TaskSpec::new("fits", ticker(10)),
        TaskSpec::new("too-long", ticker(15)),
    ];
    let (handle, mut stream) = Runtime::new().run(tasks, config);
    tokio::time::sleep(Duration::from_millis(250)).await;
    handle.pause();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    handle.resume();
    let items = collect(&mut stream).await;
    let end = |key: &str| {
        items
            .iter()
            .find(|i| i.task_key.as_ref() == key && i.is_terminal())
            .unwrap()
    };
    assert_eq!(end("fits").kind, ItemKind::Final, "{:?}", end("fits").error);
    assert_eq!(end("too-long").kind, ItemKind::Failed);
    assert_eq!(
        end("too-long").error.as_ref().unwrap().kind,
        TaskErrorKind::TimedOut
    );
    assert_eq!(handle.progress_now().paused, 0);
}
