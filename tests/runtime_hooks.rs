//! A hook that panics fails its task: a `Failed` item, the stream ends,
//! nothing hangs and nothing aborts.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tributary::{
    AppInfo, Graph, Hook, ItemKind, RunConfig, Runtime, State, StepInfo, StepOutcome, StreamItem,
    TaskEnd, TaskErrorKind, TaskSpec, action, default,
};

#[derive(Debug, Clone, Copy, PartialEq)]
enum Where {
    Spawn,
    Complete,
    BeforeStep,
    AfterStep,
}

#[derive(Debug)]
struct Panicky(Where);

impl Hook for Panicky {
    fn before_step(&self, _: &StepInfo<'_>) {
        if self.0 == Where::BeforeStep {
            panic!("before_step hook broke");
        }
    }
    fn after_step(&self, _: &StepInfo<'_>, _: &StepOutcome<'_>) {
        if self.0 == Where::AfterStep {
            panic!("after_step hook broke");
        }
    }
    fn on_task_spawn(&self, _: &AppInfo, _: &str) {
        if self.0 == Where::Spawn {
            panic!("on_task_spawn hook broke");
        }
    }
    fn on_task_complete(&self, _: &AppInfo, _: &str, _: &TaskEnd<'_>) {
        if self.0 == Where::Complete {
            panic!("on_task_complete hook broke");
        }
    }
}

fn graph() -> Graph {
    Graph::builder()
        .action(action("one").run(|s: State, _, ctx| async move {
            ctx.emit("tick").await?;
            Ok((json!({}), s))
        }))
        .action(action("two").run(|s: State, _, _| async move { Ok((json!({}), s)) }))
        .transition("one", "two", default())
        .entrypoint("one")
        .build()
        .unwrap()
}

async fn collect(stream: &mut tributary::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

#[tokio::test]
async fn a_hook_panicking_in_any_method_gives_a_failed_item_and_the_stream_ends() {
    for at in [
        Where::Spawn,
        Where::Complete,
        Where::BeforeStep,
        Where::AfterStep,
    ] {
        let config = RunConfig::new().hook(Arc::new(Panicky(at)));
        let (_h, mut stream) = Runtime::new().run(vec![TaskSpec::new("t", graph())], config);
        let items = tokio::time::timeout(Duration::from_secs(30), collect(&mut stream))
            .await
            .unwrap_or_else(|_| panic!("the stream of a run whose {at:?} hook panics never ended"));
        let terminals: Vec<_> = items.iter().filter(|i| i.is_terminal()).collect();
        assert_eq!(terminals.len(), 1, "{at:?}: {items:?}");
        assert_eq!(terminals[0].kind, ItemKind::Failed, "{at:?}");
        let error = terminals[0].error.as_ref().unwrap();
        assert_eq!(error.kind, TaskErrorKind::Panicked, "{at:?}: {error:?}");
        assert!(error.message.contains("hook broke"), "{at:?}: {error:?}");
    }
}

/// Panics in `before_step` and again in `after_step`.
#[derive(Debug)]
struct TwicePanicky;

impl Hook for TwicePanicky {
    fn before_step(&self, _: &StepInfo<'_>) {
        panic!("before_step hook broke");
    }
    fn after_step(&self, _: &StepInfo<'_>, _: &StepOutcome<'_>) {
        panic!("after_step hook broke");
    }
}

#[tokio::test]
async fn two_panicking_hooks_fail_the_task_without_aborting_the_process() {
    let config = RunConfig::new()
        .hook(Arc::new(TwicePanicky))
        .hook(Arc::new(Panicky(Where::AfterStep)));
    let tasks = vec![TaskSpec::new("a", graph()), TaskSpec::new("b", graph())];
    let (handle, mut stream) = Runtime::new().run(
        tasks,
        config.failure_policy(tributary::FailurePolicy::Continue),
    );
    let items = tokio::time::timeout(Duration::from_secs(30), collect(&mut stream))
        .await
        .expect("the stream ends");
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Failed)
        .collect();
    assert_eq!(failed.len(), 2);
    for item in failed {
        assert_eq!(item.error.as_ref().unwrap().kind, TaskErrorKind::Panicked);
    }
    assert_eq!(handle.progress_now().failed, 2);
}
