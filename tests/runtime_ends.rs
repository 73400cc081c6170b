//! Typed ends: cancel reasons and task errors on items, the run's end read
//! from the stream and from every handle.

use std::time::Duration;

use serde_json::json;
use tributary::{
    CancelReason, FailurePolicy, ItemKind, QuickExit, RunConfig, RunEnd, RunError, Runtime, State,
    StreamItem, TaskErrorKind, TaskPath, TaskSpec, action,
};

/// A task that sleeps `ms` and then fails when `fail`.
fn sleeper(key: &str, ms: u64, fail: bool) -> TaskSpec {
    TaskSpec::action(
        key,
        action("work").run(move |s: State, _, _| async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if fail {
                return Err("the upstream said 500".into());
            }
            Ok((json!({ "ms": ms }), s))
        }),
    )
}

async fn collect(stream: &mut tributary::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

#[tokio::test(start_paused = true)]
async fn a_handle_cancel_is_the_runs_end_and_every_tasks_reason() {
    let tasks = vec![sleeper("a", 1000, false), sleeper("b", 1000, false)];
    let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new());
    assert_eq!(handle.end(), None);
    handle
        .progress()
        .wait_for(|p| p.running == 2)
        .await
        .unwrap();
    handle.cancel().await;
    let items = collect(&mut stream).await;
    assert_eq!(items.len(), 2);
    for item in &items {
        assert_eq!(item.kind, ItemKind::Cancelled);
        let error = item.error.as_ref().unwrap();
        assert_eq!(error.kind, TaskErrorKind::Cancelled(CancelReason::Handle));
        assert_eq!(item.cancel_reason(), Some(CancelReason::Handle));
    }
    let end = RunEnd::Cancelled {
        reason: CancelReason::Handle,
    };
    assert_eq!(handle.end(), Some(end.clone()));
    assert_eq!(stream.end(), Some(&end));
    assert_eq!(
        handle.error(),
        Some(RunError::Cancelled(CancelReason::Handle))
    );
    assert_eq!(
        stream.finish().await.unwrap_err(),
        RunError::Cancelled(CancelReason::Handle)
    );
}

#[tokio::test(start_paused = true)]
async fn fail_fast_ends_the_run_failed_with_the_tasks_typed_error() {
    let tasks = vec![
        sleeper("slow", 1000, false),
        sleeper("boom", 10, true),
        sleeper("slower", 2000, false),
    ];
    let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new());
    let items = collect(&mut stream).await;
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    let error = failed[0].error.clone().unwrap();
    assert_eq!(error.kind, TaskErrorKind::ActionFailed);
    assert_eq!(error.action.as_deref(), Some("work"));
    assert!(error.message.contains("the upstream said 500"), "{error:?}");
    for item in items.iter().filter(|i| i.kind == ItemKind::Cancelled) {
        assert_eq!(item.cancel_reason(), Some(CancelReason::FailFast));
    }
    let expected = RunEnd::Failed {
        task: TaskPath::from(["boom"]),
        error: error.clone(),
    };
    assert_eq!(handle.end(), Some(expected.clone()));
    assert_eq!(stream.end(), Some(&expected));
    // A cancel after the end does not change it: the end is set once.
    handle.cancel().await;
    assert_eq!(handle.end(), Some(expected));
    assert!(matches!(
        handle.error(),
        Some(RunError::TaskFailed { ref task_key, error: ref e, .. }) if task_key == "boom" && *e == error
    ));
}

#[tokio::test(start_paused = true)]
async fn quick_exit_completes_by_policy_and_the_losers_say_policy() {
    let tasks = vec![sleeper("slow", 500, false), sleeper("fast", 5, false)];
    let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
    let items = collect(&mut stream).await;
    let loser = items
        .iter()
        .find(|i| i.kind == ItemKind::Cancelled)
        .unwrap();
    assert_eq!(loser.task_key.as_ref(), "slow");
    assert_eq!(loser.cancel_reason(), Some(CancelReason::Policy));
    assert_eq!(handle.end(), Some(RunEnd::Completed { by_policy: true }));
    assert_eq!(handle.error(), None);
    assert!(stream.finish().await.unwrap().finished_by_policy);
}

#[tokio::test(start_paused = true)]
async fn a_run_where_every_task_ends_completes() {
    let tasks = vec![sleeper("a", 5, false), sleeper("b", 10, true)];
    let config = RunConfig::new().failure_policy(FailurePolicy::Continue);
    let (handle, mut stream) = Runtime::new().run(tasks, config);
    let items = collect(&mut stream).await;
    assert_eq!(items.len(), 2);
    assert_eq!(handle.end(), Some(RunEnd::Completed { by_policy: false }));
}

#[tokio::test(start_paused = true)]
async fn dropping_the_stream_ends_the_run_cancelled_stream_dropped() {
    let (handle, stream) = Runtime::new().run(vec![sleeper("a", 1000, false)], RunConfig::new());
    handle
        .progress()
        .wait_for(|p| p.running == 1)
        .await
        .unwrap();
    drop(stream);
    assert_eq!(
        handle.end(),
        Some(RunEnd::Cancelled {
            reason: CancelReason::StreamDropped
        })
    );
    handle.cancel().await;
    // Still the first end.
    assert_eq!(
        handle.error(),
        Some(RunError::Cancelled(CancelReason::StreamDropped))
    );
}

#[tokio::test(start_paused = true)]
async fn failed_and_cancelled_items_round_trip_through_json_with_typed_errors() {
    let tasks = vec![sleeper("boom", 1, true), sleeper("other", 100, false)];
    let (_h, mut stream) = Runtime::new().run(tasks, RunConfig::new());
    let items = collect(&mut stream).await;
    assert_eq!(items.len(), 2);
    for item in items {
        let text = serde_json::to_string(&item).unwrap();
        let back: StreamItem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, item);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        match item.kind {
            ItemKind::Failed => assert_eq!(value["error"]["kind"], json!("action_failed")),
            _ => assert_eq!(value["error"]["kind"], json!({ "cancelled": "fail_fast" })),
        }
        assert_eq!(value["path"], json!([item.task_key.as_ref()]));
    }
}
