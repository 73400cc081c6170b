//! Pause, resume, cancel, per-task control, add_task, progress, drop.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tributary::{
    CancelReason, Graph, ItemKind, MergeMode, RunConfig, RunError, Runtime, State, StreamItem,
    TaskErrorKind, TaskRuntime, TaskSpec, action, default,
};

use crate::support::{Count, Live};

/// `steps` steps of 10 ms each; each counts a step start and holds a live
/// guard while it runs.
fn ticking(steps: usize, started: Count, live: Live) -> Graph {
    let mut b = Graph::builder();
    for i in 0..steps {
        let (started, live) = (started.clone(), live.clone());
        b = b.action(action(format!("s{i}")).run(move |s: State, _, ctx| {
            let (started, live) = (started.clone(), live.clone());
            async move {
                started.bump();
                let _alive = live.guard();
                tokio::time::sleep(Duration::from_millis(10)).await;
                ctx.emit(json!(i)).await?;
                Ok((json!({}), s))
            }
        }));
        if i > 0 {
            b = b.transition(format!("s{}", i - 1), format!("s{i}"), default());
        }
    }
    b.entrypoint("s0").build().unwrap()
}

fn tasks(n: usize, graph: &Graph) -> Vec<TaskSpec> {
    (0..n)
        .map(|i| TaskSpec::new(format!("t{i}"), graph.clone()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn no_step_starts_while_paused_and_resume_finishes_the_run() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(5, started.clone(), live.clone());
    let (handle, mut stream) = Runtime::new().run(tasks(3, &graph), RunConfig::new());
    // Let every task finish its first step.
    for _ in 0..3 * 2 {
        stream.next().await.unwrap();
    }
    handle.pause();
    let at_pause = started.get();
    // Whatever was already running finishes; nothing new starts.
    let mut during = Vec::new();
    let drain = async {
        while let Some(item) = stream.next().await {
            during.push(item);
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), drain).await;
    assert!(started.get() <= at_pause, "a step started while paused");
    // Steps that were running wait in `ctx.emit`: the run stops streaming
    // within one item per task.
    assert!(during.len() <= 3, "{} items while paused", during.len());
    assert!(during.iter().all(|i| i.kind != ItemKind::Final));
    let progress = handle.progress_now();
    assert_eq!((progress.running, progress.paused), (3, 3));

    handle.resume();
    let rest: Vec<StreamItem> = stream.collect().await;
    assert_eq!(rest.iter().filter(|i| i.kind == ItemKind::Final).count(), 3);
    assert_eq!(started.get(), 15);
}

#[tokio::test(start_paused = true)]
async fn pause_task_pauses_only_that_task() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(4, started, live);
    let (handle, mut stream) = Runtime::new().run(tasks(2, &graph), RunConfig::new());
    handle
        .progress()
        .wait_for(|p| p.running == 2)
        .await
        .unwrap();
    handle.pause_task("t1").unwrap();
    assert!(handle.pause_task("nope").is_err());
    let mut finals = Vec::new();
    while let Ok(Some(item)) = tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
        if item.kind == ItemKind::Final {
            finals.push(item.task_key.to_string());
        }
    }
    assert_eq!(finals, ["t0"]);
    handle.resume_task("t1").unwrap();
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(
        rest.last().map(|i| (i.task_key.to_string(), i.kind)),
        Some(("t1".into(), ItemKind::Final))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_cancel_resolves_no_task_is_alive_and_nothing_runs_again() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(1000, started.clone(), live.clone());
    let (handle, mut stream) = Runtime::new().run(tasks(50, &graph), RunConfig::new());
    handle
        .progress()
        .wait_for(|p| p.running == 50)
        .await
        .unwrap();
    stream.next().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.cancel())
        .await
        .expect("cancel resolves");
    assert_eq!(live.now(), 0, "a step is alive after cancel resolved");
    let after = started.get();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(started.get(), after, "a step started after cancel resolved");
    // Every task reports Cancelled; the stream ends; finish says why.
    let items: Vec<StreamItem> = stream.by_ref().collect().await;
    let odd: Vec<_> = items
        .iter()
        .filter(|i| i.is_terminal() && i.kind != ItemKind::Cancelled)
        .map(|i| (i.task_index, i.kind, i.error.clone()))
        .collect();
    assert_eq!(
        items
            .iter()
            .filter(|i| i.kind == ItemKind::Cancelled)
            .count(),
        50,
        "other terminals: {odd:?}"
    );
    assert_eq!(
        stream.finish().await.unwrap_err(),
        RunError::Cancelled(CancelReason::Handle)
    );
    assert!(handle.add_task(TaskSpec::new("late", graph)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_resolves_even_when_the_consumer_is_not_reading() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(1000, started, live.clone());
    let config = RunConfig::new().mailbox_capacity(1);
    let (handle, stream) = Runtime::new().run(tasks(20, &graph), config);
    handle
        .progress()
        .wait_for(|p| p.running == 20)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), handle.cancel())
        .await
        .expect("cancel resolves");
    assert_eq!(live.now(), 0);
    drop(stream);
}

#[tokio::test(start_paused = true)]
async fn cancel_task_cancels_one_task() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(3, started, live);
    let (handle, stream) = Runtime::new().run(tasks(3, &graph), RunConfig::new());
    handle
        .progress()
        .wait_for(|p| p.running == 3)
        .await
        .unwrap();
    handle.cancel_task("t1").unwrap();
    let outcomes = stream.outcomes().await.unwrap();
    let kinds: Vec<_> = outcomes.iter().map(|o| o.is_completed()).collect();
    assert_eq!(kinds, [true, false, true]);
    assert!(
        handle.cancel_task("t1").is_err(),
        "a finished task is unknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_stream_cancels_the_run() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(1000, started, live.clone());
    let (handle, mut stream) = Runtime::new().run(tasks(10, &graph), RunConfig::new());
    stream.next().await.unwrap();
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), handle.cancel())
        .await
        .expect("the run stops");
    assert_eq!(live.now(), 0);
    assert!(handle.is_cancelled());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_task_feeds_a_live_run_from_inside_a_task() {
    // A crawler: page n discovers pages 2n+1 and 2n+2 while n < 7, adding
    // them to its own live run.
    let graph_cell: Arc<OnceLock<Graph>> = Arc::new(OnceLock::new());
    let cell = Arc::clone(&graph_cell);
    let crawl = Graph::single(
        action("crawl")
            .reads(["page"])
            .run(move |s: State, _, ctx| {
                let cell = Arc::clone(&cell);
                async move {
                    let page: u64 = s.get_as("page")?;
                    if page < 7 {
                        let task = ctx
                            .extensions()
                            .get::<TaskRuntime>()
                            .expect("runs on the runtime");
                        for child in [2 * page + 1, 2 * page + 2] {
                            let spec =
                                TaskSpec::new(format!("p{child}"), cell.get().unwrap().clone())
                                    .state(State::new().set("page", child));
                            task.handle().add_task(spec).map_err(|e| e.to_string())?;
                        }
                    }
                    Ok((json!({ "page": page }), s))
                }
            }),
    );
    graph_cell.set(crawl.clone()).unwrap();
    let seed = vec![TaskSpec::new("p0", crawl).state(State::new().set("page", 0))];
    let (_h, stream) = Runtime::new().run(seed, RunConfig::new());
    let outcomes = stream.outcomes().await.unwrap();
    // Pages 0..=14: 0..7 each found two.
    let mut pages: Vec<u64> = outcomes
        .iter()
        .map(|o| o.result().unwrap()["page"].as_u64().unwrap())
        .collect();
    pages.sort();
    assert_eq!(pages, (0..15).collect::<Vec<_>>());
}

#[tokio::test(start_paused = true)]
async fn add_task_from_outside_while_running() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(3, started, live);
    // A source that stays open until we close it keeps the run alive.
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<TaskSpec>();
    let source =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    let (handle, mut stream) =
        Runtime::new().run(tributary::TaskSource::stream(source), RunConfig::new());
    tx.send(TaskSpec::new("first", graph.clone())).unwrap();
    let first = stream.next().await.unwrap();
    assert_eq!(&*first.task_key, "first");
    handle
        .add_task(TaskSpec::new("added", graph.clone()))
        .unwrap();
    drop(tx);
    let outcomes: Vec<_> = stream.outcomes().await.unwrap();
    let keys: Vec<_> = outcomes.iter().map(|o| o.key.to_string()).collect();
    assert_eq!(keys, ["first", "added"]);
    assert!(outcomes.iter().all(|o| o.is_completed()));
    // Duplicate keys are refused as a failed task, not silently merged.
    let (_h, stream) = Runtime::new().run(
        vec![
            TaskSpec::new("same", graph.clone()),
            TaskSpec::new("same", graph),
        ],
        RunConfig::new().failure_policy(tributary::FailurePolicy::Continue),
    );
    let outcomes = stream.outcomes().await.unwrap();
    assert!(
        matches!(&outcomes[1].status, tributary::TaskStatus::Failed { error } if error.kind == TaskErrorKind::Validation && error.message.contains("used twice"))
    );
}

#[tokio::test(start_paused = true)]
async fn progress_counts_follow_the_run() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(2, started, live);
    let config = RunConfig::new()
        .merge_mode(MergeMode::FinalOnly)
        .max_concurrency(2);
    let (handle, mut stream) = Runtime::new().run(tasks(5, &graph), config);
    let mut progress = handle.progress();
    progress.wait_for(|p| p.running == 2).await.unwrap();
    let p = handle.progress_now();
    assert_eq!((p.running, p.completed), (2, 0));
    assert!(p.total >= 2);
    while stream.next().await.is_some() {}
    let p = handle.progress_now();
    assert_eq!(
        (
            p.total,
            p.running,
            p.completed,
            p.failed,
            p.cancelled,
            p.pending()
        ),
        (5, 0, 5, 0, 0, 0)
    );
}

/// Records task spawns and ends.
#[derive(Default)]
struct TaskLog(std::sync::Mutex<Vec<String>>);

impl tributary::Hook for TaskLog {
    fn on_task_spawn(&self, app: &tributary::AppInfo, key: &str) {
        assert!(!app.app_id.is_empty());
        self.0.lock().unwrap().push(format!("spawn {key}"));
    }
    fn on_task_complete(&self, _: &tributary::AppInfo, key: &str, end: &tributary::TaskEnd<'_>) {
        let end = match end {
            tributary::TaskEnd::Completed => "completed".to_owned(),
            tributary::TaskEnd::Cancelled(why) => format!("cancelled: {why}"),
            other => format!("{other:?}"),
        };
        self.0.lock().unwrap().push(format!("end {key} {end}"));
    }
}

#[tokio::test(start_paused = true)]
async fn task_hooks_fire_on_spawn_and_completion() {
    let (started, live) = (Count::default(), Live::default());
    let graph = ticking(3, started, live);
    let log = Arc::new(TaskLog::default());
    let config = RunConfig::new().hook(log.clone()).max_concurrency(1);
    let (handle, stream) = Runtime::new().run(tasks(2, &graph), config);
    handle
        .progress()
        .wait_for(|p| p.running == 1)
        .await
        .unwrap();
    let finished = stream.outcomes().await.unwrap();
    assert_eq!(finished.len(), 2);
    assert_eq!(
        *log.0.lock().unwrap(),
        [
            "spawn t0",
            "end t0 completed",
            "spawn t1",
            "end t1 completed"
        ]
    );
}

#[tokio::test]
async fn a_task_cancelled_while_its_action_emits_reports_cancelled() {
    // The action cancels its own task and then emits: the emit fails
    // inside the step, before the actor's own check sees the cancellation.
    let graph = Graph::single(action("emit").run(|s: State, _, ctx| async move {
        let task = ctx.extensions().get::<TaskRuntime>().unwrap().clone();
        task.handle().cancel_task("t0").unwrap();
        ctx.emit(json!("late")).await?;
        Ok((json!({}), s))
    }));
    let config = RunConfig::new().failure_policy(tributary::FailurePolicy::Continue);
    let (_handle, stream) = Runtime::new().run(vec![TaskSpec::new("t0", graph)], config);
    let items: Vec<StreamItem> = stream.collect().await;
    let kinds: Vec<ItemKind> = items.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Cancelled], "{items:?}");
}

/// A watcher of `progress()` that outlives its run sees the run's final
/// counts last, and its watch then closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_watch_ends_with_the_final_counts_and_closes_with_its_run() {
    const N: u64 = 1000;
    let step = action("step").run(|s: State, _, _| async move { Ok((json!({}), s)) });
    let specs: Vec<TaskSpec> = (0..N)
        .map(|i| TaskSpec::action(format!("t{i}"), step.clone()))
        .collect();
    let config = RunConfig::new().merge_mode(MergeMode::FinalOnly);
    let (handle, stream) = Runtime::builder().unlimited().build().run(specs, config);
    let mut progress = handle.progress();
    let watcher = tokio::spawn(async move {
        while progress.changed().await.is_ok() {}
        *progress.borrow()
    });
    let finals = stream.collect::<Vec<StreamItem>>().await.len() as u64;
    assert_eq!(finals, N);
    let at_end = handle.progress_now();
    drop(handle);
    let last = tokio::time::timeout(Duration::from_secs(10), watcher)
        .await
        .expect("the watch closes with its run")
        .unwrap();
    assert_eq!(last, at_end, "the watch ends with the final counts");
    assert_eq!((last.completed, last.running, last.total), (N, 0, N));
}
