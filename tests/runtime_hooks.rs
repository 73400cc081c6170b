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

/// Records what `on_task_spawn` and `on_task_complete` saw of a task.
#[derive(Debug, Default)]
struct Seen(std::sync::Mutex<Vec<(&'static str, Arc<AppInfo>)>>);

impl Hook for Seen {
    fn on_task_spawn(&self, app: &AppInfo, _: &str) {
        self.0
            .lock()
            .unwrap()
            .push(("spawn", Arc::new(app.clone())));
    }
    fn on_task_complete(&self, app: &AppInfo, _: &str, _: &TaskEnd<'_>) {
        self.0
            .lock()
            .unwrap()
            .push(("complete", Arc::new(app.clone())));
    }
}

/// A task's identity is built only when asked for, and then whole: the
/// hooks and the task's own actions see the same id, path, run, index and
/// partition key as its items carry.
#[tokio::test]
async fn hooks_and_actions_see_the_whole_identity_of_a_task() {
    let seen = Arc::new(Seen::default());
    let who = action("who")
        .writes(["who"])
        .run(|s: State, _, ctx| async move {
            let app = ctx.app();
            let who = json!({
                "app_id": app.app_id,
                "ctx_app_id": ctx.app_id(),
                "path": app.task_path.iter().map(|k| k.to_string()).collect::<Vec<_>>(),
                "key": ctx.task_key(),
                "run_id": app.run_id.as_deref(),
                "index": app.task_index,
                "partition": ctx.partition_key(),
            });
            Ok((json!({}), s.set("who", who)))
        });
    let tasks = vec![
        TaskSpec::action("first", who.clone()),
        TaskSpec::action("second", who),
    ];
    let config = RunConfig::new()
        .run_id("identity-run")
        .partition_key("tenant-7")
        .hook(seen.clone());
    let (_h, stream) = Runtime::new().run(tasks, config);
    let outcomes = stream.outcomes().await.unwrap();
    for (index, outcome) in outcomes.iter().enumerate() {
        let item_app_id = outcome.app_id.to_string();
        let who = outcome.state().unwrap().get("who").unwrap().clone();
        let key = ["first", "second"][index];
        assert_eq!(who["app_id"], json!(item_app_id));
        assert_eq!(who["ctx_app_id"], json!(item_app_id));
        assert_eq!(who["path"], json!([key]));
        assert_eq!(who["key"], json!(key));
        assert_eq!(who["run_id"], json!("identity-run"));
        assert_eq!(who["index"], json!(index));
        assert_eq!(who["partition"], json!("tenant-7"));
    }
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), 4, "spawn and complete for each task: {seen:?}");
    for (_, info) in seen.iter() {
        let key = info.task_key().unwrap();
        let outcome = outcomes.iter().find(|o| &*o.key == key).unwrap();
        assert_eq!(info.app_id, &*outcome.app_id);
        assert_eq!(info.run_id.as_deref(), Some("identity-run"));
        assert_eq!(info.task_index, Some(outcome.index));
        assert_eq!(info.partition_key.as_deref(), Some("tenant-7"));
    }
}
