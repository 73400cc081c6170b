//! Every `before_run` gets exactly one `after_run`, however the run is
//! driven and however it ends: `run`, `iterate` to the end or dropped
//! midway, `stream_result` consumed or dropped.

use std::sync::{Arc, Mutex};

use futures_util::{FutureExt, StreamExt};
use serde_json::json;
use tributary::{
    AppInfo, Application, ApplicationError, Graph, Hook, RunOptions, RunOutcome, State, StepInfo,
    StepOutcome, action, default,
};

#[derive(Default)]
struct Runs(Mutex<Vec<String>>);

impl Runs {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap())
    }
}

impl Hook for Runs {
    fn before_run(&self, _: &AppInfo, _: &State) {
        self.0.lock().unwrap().push("before_run".into());
    }
    fn after_run(&self, _: &AppInfo, outcome: Result<&RunOutcome, &ApplicationError>) {
        let line = match outcome {
            Ok(out) => format!("after_run ok {}", out.action.as_deref().unwrap_or("-")),
            Err(ApplicationError::Abandoned { app_id }) => format!("after_run abandoned {app_id}"),
            Err(e) => format!("after_run err {e}"),
        };
        self.0.lock().unwrap().push(line);
    }
    fn after_step(&self, step: &StepInfo<'_>, outcome: &StepOutcome<'_>) {
        let what = match outcome {
            StepOutcome::Completed { .. } => "completed",
            StepOutcome::Failed { .. } => "failed",
            StepOutcome::Abandoned { .. } => "abandoned",
            _ => "other",
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("after_step {} {what}", step.action));
    }
}

/// a -> b -> c; `c` streams 20 items (more than a `stream_result` buffers,
/// so a consumer that stops reading leaves `c` mid-way).
fn graph() -> Graph {
    let quick = |name: &'static str| action(name).run(|s, _, _| async move { Ok((json!({}), s)) });
    Graph::builder()
        .action(quick("a"))
        .action(quick("b"))
        .action(action("c").run(|s: State, _, ctx| async move {
            for i in 0..20 {
                ctx.emit(i).await?;
            }
            Ok((json!({ "c": true }), s))
        }))
        .transition("a", "b", default())
        .transition("b", "c", default())
        .entrypoint("a")
        .build()
        .unwrap()
}

async fn app(runs: &Arc<Runs>) -> Application {
    Application::builder(graph())
        .app_id("paired")
        .hook_arc(runs.clone())
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn run_pairs_before_and_after_run() {
    let runs = Arc::new(Runs::default());
    app(&runs).await.run(RunOptions::new()).await.unwrap();
    let log = runs.take();
    assert_eq!(log.first().map(String::as_str), Some("before_run"));
    assert_eq!(log.last().map(String::as_str), Some("after_run ok c"));
    assert_eq!(log.iter().filter(|l| l.contains("_run")).count(), 2);
}

#[tokio::test]
async fn iterate_to_the_end_fires_before_and_after_run() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    let steps: Vec<_> = app.iterate(RunOptions::new()).collect().await;
    assert_eq!(steps.len(), 3);
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step a completed",
            "after_step b completed",
            "after_step c completed",
            "after_run ok c",
        ]
    );
}

#[tokio::test]
async fn iterate_that_is_never_polled_tells_the_hooks_nothing() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    drop(app.iterate(RunOptions::new()));
    assert_eq!(runs.take(), Vec::<String>::new());
}

#[tokio::test]
async fn iterate_dropped_between_steps_fires_after_run_abandoned() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    {
        let mut steps = app.iterate(RunOptions::new());
        let first = steps.next().await.unwrap().unwrap();
        assert_eq!(&*first.action, "a");
    }
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step a completed",
            "after_run abandoned paired"
        ]
    );
    assert_eq!(app.next_action(), Some("b"));
}

#[tokio::test]
async fn iterate_dropped_during_a_step_reports_the_step_then_the_run_abandoned() {
    let runs = Arc::new(Runs::default());
    let waits = Graph::single(action("waits").run(|s, _, _| async move {
        std::future::pending::<()>().await;
        Ok((json!({}), s))
    }));
    let mut app = Application::builder(waits)
        .app_id("stuck")
        .hook_arc(runs.clone())
        .build()
        .await
        .unwrap();
    {
        let mut steps = app.iterate(RunOptions::new());
        assert!(steps.next().now_or_never().is_none(), "the step waits");
    }
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step waits abandoned",
            "after_run abandoned stuck"
        ]
    );
}

#[tokio::test]
async fn run_dropped_midway_fires_after_run_abandoned() {
    let runs = Arc::new(Runs::default());
    let waits = Graph::single(action("waits").run(|s, _, _| async move {
        std::future::pending::<()>().await;
        Ok((json!({}), s))
    }));
    let mut app = Application::builder(waits)
        .app_id("dropped")
        .hook_arc(runs.clone())
        .build()
        .await
        .unwrap();
    assert!(app.run(RunOptions::new()).now_or_never().is_none());
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step waits abandoned",
            "after_run abandoned dropped"
        ]
    );
}

#[tokio::test]
async fn stream_result_consumed_fires_after_run_once() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    let mut stream = app.stream_result(RunOptions::after(["c"])).await.unwrap();
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    let outcome = stream.get().await.unwrap();
    assert_eq!(items, (0..20).map(|i| json!(i)).collect::<Vec<_>>());
    assert_eq!(outcome.result, Some(json!({ "c": true })));
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step a completed",
            "after_step b completed",
            "after_step c completed",
            "after_run ok c",
        ]
    );
}

#[tokio::test]
async fn stream_result_that_halts_before_its_halt_action_fires_after_run_once() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    let stream = app
        .stream_result(RunOptions::after(["c"]).halt_before(["b"]))
        .await
        .unwrap();
    let outcome = stream.get().await.unwrap();
    assert_eq!(outcome.action.as_deref(), Some("b"));
    assert_eq!(
        runs.take(),
        ["before_run", "after_step a completed", "after_run ok b"]
    );
}

#[tokio::test]
async fn stream_result_dropped_midway_fires_after_run_abandoned() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    {
        let mut stream = app.stream_result(RunOptions::after(["c"])).await.unwrap();
        assert_eq!(stream.next().await, Some(json!(0)));
    }
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step a completed",
            "after_step b completed",
            "after_step c abandoned",
            "after_run abandoned paired",
        ]
    );
    assert_eq!(app.next_action(), Some("c"));
}

#[tokio::test]
async fn stream_result_dropped_before_it_is_polled_fires_after_run_abandoned() {
    let runs = Arc::new(Runs::default());
    let mut app = app(&runs).await;
    drop(app.stream_result(RunOptions::after(["c"])).await.unwrap());
    assert_eq!(
        runs.take(),
        [
            "before_run",
            "after_step a completed",
            "after_step b completed",
            "after_run abandoned paired",
        ]
    );
}
