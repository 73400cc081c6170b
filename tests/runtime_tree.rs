//! The task tree: paths on every item, nested items as ordinary items,
//! addressing any task by key or path (queued or running, nested or not),
//! tree-wide cancel, keys unique for the whole run, tree-wide progress.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tributary::{
    AddTaskError, CancelReason, Graph, InMemoryPersister, ItemKind, LiveStatus, ParallelAction,
    RunConfig, Runtime, State, StreamItem, Subgraph, TaskErrorKind, TaskPath, TaskSpec, action,
};

use crate::support::{Count, Live};

async fn collect(stream: &mut tributary::RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

/// A child that sleeps `ms` (from its state, default 10), emits two
/// tokens, and counts its runs.
fn child(runs: Count) -> Subgraph {
    Subgraph::action(action("leaf").run(move |s: State, _, ctx| {
        let runs = runs.clone();
        async move {
            runs.bump();
            let ms = s.get("ms").and_then(Value::as_u64).unwrap_or(10);
            ctx.emit("a").await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            ctx.emit("b").await?;
            Ok((json!({ "ms": ms }), s))
        }
    }))
}

/// A parallel action over `n` children (keys "0".."n-1"), child `j`
/// sleeping `ms[j]`.
fn fan_out(ms: Vec<u64>, sub: Subgraph) -> ParallelAction {
    ParallelAction::map_states("fan", sub, move |_, _| {
        Ok(ms
            .clone()
            .into_iter()
            .map(|m| State::new().set("ms", m))
            .collect::<Vec<_>>())
    })
    .build()
}

#[tokio::test(start_paused = true)]
async fn nested_items_arrive_with_their_path_and_never_as_json_tokens() {
    let runs = Count::default();
    let parent = TaskSpec::action("p", fan_out(vec![10, 20, 30], child(runs.clone())));
    let (_h, mut stream) = Runtime::new().run(vec![parent], RunConfig::new());
    let items = collect(&mut stream).await;
    for item in &items {
        // No item carries another item inside its result.
        if let Some(Value::Object(map)) = &item.result {
            assert!(
                !map.contains_key("task_key"),
                "an item inside a token: {item:?}"
            );
        }
        assert_eq!(item.path.key(), Some(item.task_key.as_ref()));
    }
    for j in ["0", "1", "2"] {
        let path = TaskPath::from(["p", j]);
        let mine: Vec<_> = items.iter().filter(|i| i.path == path).collect();
        let kinds: Vec<_> = mine.iter().map(|i| i.kind).collect();
        assert_eq!(kinds, [ItemKind::Token, ItemKind::Token, ItemKind::Final]);
        assert_eq!(mine[0].result, Some(json!("a")));
        assert_eq!(mine[1].result, Some(json!("b")));
        assert_eq!(mine.iter().map(|i| i.seq).collect::<Vec<_>>(), [0, 1, 2]);
        assert!(
            mine.iter()
                .all(|i| i.is_nested() && i.task_key.as_ref() == j)
        );
    }
    let own: Vec<_> = items.iter().filter(|i| !i.is_nested()).collect();
    assert_eq!(own.len(), 1);
    assert_eq!(own[0].kind, ItemKind::Final);
    assert_eq!(own[0].path, TaskPath::from(["p"]));
    assert_eq!(runs.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn two_levels_of_nesting_give_three_key_paths_and_the_switches_filter_them() {
    let inner = Subgraph::action(fan_out(vec![5, 5], child(Count::default())));
    let outer = TaskSpec::action(
        "root",
        ParallelAction::map_states("outer", inner, |_, _| Ok(vec![State::new(), State::new()]))
            .build(),
    );
    let (_h, mut stream) = Runtime::new().run(vec![outer.clone()], RunConfig::new());
    let items = collect(&mut stream).await;
    let leaves: Vec<_> = items.iter().filter(|i| i.path.len() == 3).collect();
    // 2 x 2 leaves, each 2 tokens and a final.
    assert_eq!(leaves.len(), 12);
    assert!(
        leaves
            .iter()
            .any(|i| i.path == TaskPath::from(["root", "1", "0"]))
    );

    // Tokens off: no token at any depth.
    let (_h, mut stream) = Runtime::new().run(
        vec![outer.clone()],
        RunConfig::new().intermediate_stream_outputs(false),
    );
    let items = collect(&mut stream).await;
    assert!(items.iter().all(|i| i.kind != ItemKind::Token));
    assert_eq!(items.iter().filter(|i| i.path.len() == 3).count(), 4);

    // Nodes off: nested tasks' node and terminal items stay inside; the
    // tokens still stream.
    let (_h, mut stream) =
        Runtime::new().run(vec![outer], RunConfig::new().intermediate_nodes(false));
    let items = collect(&mut stream).await;
    let nested: Vec<_> = items.iter().filter(|i| i.is_nested()).collect();
    assert_eq!(nested.len(), 8);
    assert!(nested.iter().all(|i| i.kind == ItemKind::Token));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_of_1000_parents_with_10_nested_children_leaves_no_live_leaf_20_times() {
    for round in 0..20 {
        let live = Live::default();
        let leaf = {
            let live = live.clone();
            Subgraph::action(action("leaf").run(move |s: State, _, _| {
                let live = live.clone();
                async move {
                    let _alive = live.guard();
                    std::future::pending::<()>().await;
                    Ok((json!({}), s))
                }
            }))
        };
        let parent = Graph::single(
            ParallelAction::map_states("ten", leaf, |_, _| Ok(vec![State::new(); 10])).build(),
        );
        let tasks = (0..1000).map(move |i| TaskSpec::new(format!("p{i}"), parent.clone()));
        let runtime = Runtime::builder().max_concurrency(20_000).build();
        let (handle, stream) = runtime.run(tributary::TaskSource::iter(tasks), RunConfig::new());
        let all_alive = async {
            while live.now() < 10_000 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), all_alive)
            .await
            .expect("every leaf starts");
        handle.cancel().await;
        assert_eq!(
            live.now(),
            0,
            "round {round}: leaves alive after cancel resolved"
        );
        drop(stream);
    }
}

#[tokio::test(start_paused = true)]
async fn a_queued_task_cancelled_before_it_starts_never_runs() {
    let runs = Count::default();
    let work = |ms: u64| {
        let runs = runs.clone();
        Graph::single(action("work").run(move |s: State, _, _| {
            let runs = runs.clone();
            async move {
                runs.bump();
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok((json!({}), s))
            }
        }))
    };
    let tasks = vec![
        TaskSpec::new("t0", work(100)),
        TaskSpec::new("t1", work(100)),
    ];
    let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().max_concurrency(1));
    handle
        .progress()
        .wait_for(|p| p.running == 1)
        .await
        .unwrap();
    handle.add_task(TaskSpec::new("added", work(100))).unwrap();
    // t1 is taken and waits for the slot t0 holds: queued.
    let listed = handle.tasks();
    let status = |key: &str| {
        listed
            .iter()
            .find(|t| t.path == TaskPath::from(key))
            .map(|t| t.status)
    };
    assert_eq!(status("t0"), Some(LiveStatus::Running));
    assert_eq!(status("t1"), Some(LiveStatus::Queued));
    assert_eq!(status("added"), Some(LiveStatus::Queued));
    handle.cancel_task("t1").unwrap();
    handle.cancel_task("added").unwrap();
    let items = collect(&mut stream).await;
    let end = |key: &str| items.iter().find(|i| i.task_key.as_ref() == key).unwrap();
    assert_eq!(end("t0").kind, ItemKind::Final);
    for key in ["t1", "added"] {
        assert_eq!(end(key).kind, ItemKind::Cancelled);
        assert_eq!(end(key).cancel_reason(), Some(CancelReason::Task));
    }
    // Only t0 ever ran.
    assert_eq!(runs.get(), 1);
}

#[tokio::test(start_paused = true)]
async fn children_of_a_parallel_action_are_addressed_by_path() {
    let runs = Count::default();
    let parent = TaskSpec::action("p", fan_out(vec![100, 100, 100], child(runs.clone())));
    let (handle, mut stream) = Runtime::new().run(vec![parent], RunConfig::new());
    // The tree: the parent and its three children once they run.
    handle
        .progress()
        .wait_for(|p| p.running == 4)
        .await
        .unwrap();
    let paths: Vec<TaskPath> = handle.tasks().into_iter().map(|t| t.path).collect();
    assert_eq!(
        paths,
        [
            TaskPath::from(["p"]),
            TaskPath::from(["p", "0"]),
            TaskPath::from(["p", "1"]),
            TaskPath::from(["p", "2"]),
        ]
    );
    handle.cancel_task(["p", "1"]).unwrap();
    handle.pause_task(["p", "2"]).unwrap();
    assert!(handle.cancel_task(["p", "9"]).is_err());
    let mut items = Vec::new();
    // Child 2 is paused: it finishes its running step and waits; everything
    // else ends.
    while let Some(item) = stream.next().await {
        let done = item.path == TaskPath::from(["p", "0"]) && item.kind == ItemKind::Final;
        items.push(item);
        if done {
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        handle
            .tasks()
            .iter()
            .any(|t| t.path == TaskPath::from(["p", "2"]))
    );
    handle.resume_task(["p", "2"]).unwrap();
    items.extend(collect(&mut stream).await);
    let terminal = |j: &str| {
        items
            .iter()
            .find(|i| i.path == TaskPath::from(["p", j]) && i.is_terminal())
            .unwrap()
    };
    assert_eq!(terminal("0").kind, ItemKind::Final);
    assert_eq!(terminal("1").kind, ItemKind::Cancelled);
    assert_eq!(terminal("1").cancel_reason(), Some(CancelReason::Task));
    assert_eq!(terminal("2").kind, ItemKind::Final);
    let parent = items.iter().find(|i| !i.is_nested()).unwrap();
    assert_eq!(parent.kind, ItemKind::Final);
    assert_eq!(
        parent.result,
        Some(json!({ "tasks": 3, "completed": 2, "failed": 0, "cancelled": 1 }))
    );
}

/// A child that holds a live guard while it sleeps `ms` (from its state).
fn guarded_child(live: Live) -> Subgraph {
    Subgraph::action(action("leaf").run(move |s: State, _, ctx| {
        let live = live.clone();
        async move {
            let _alive = live.guard();
            let ms = s.get("ms").and_then(Value::as_u64).unwrap_or(10);
            ctx.emit("a").await?;
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok((json!({ "ms": ms }), s))
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_parent_cancels_its_subtree() {
    let (live_p, live_q) = (Live::default(), Live::default());
    let parent = TaskSpec::action(
        "p",
        fan_out(vec![1000, 1000], guarded_child(live_p.clone())),
    );
    let other = TaskSpec::action("q", fan_out(vec![50], guarded_child(live_q.clone())));
    let (handle, mut stream) = Runtime::new().run(vec![parent, other], RunConfig::new());
    // Both of p's children stream their first token.
    let mut items = Vec::new();
    while items
        .iter()
        .filter(|i: &&StreamItem| i.path.len() == 2 && i.path.keys()[0].as_ref() == "p")
        .count()
        < 2
    {
        items.push(stream.next().await.unwrap());
    }
    assert_eq!(live_p.now(), 2);
    handle.cancel_task("p").unwrap();
    // The children stop with their parent: p's Cancelled item stands for
    // its subtree.
    let p = loop {
        let item = stream.next().await.unwrap();
        if item.path == TaskPath::from(["p"]) {
            break item;
        }
        items.push(item);
    };
    assert_eq!(p.kind, ItemKind::Cancelled);
    assert_eq!(p.cancel_reason(), Some(CancelReason::Task));
    assert_eq!(live_p.now(), 0, "p's children outlived its cancellation");
    items.extend(collect(&mut stream).await);
    assert!(
        !items
            .iter()
            .any(|i| i.path.keys()[0].as_ref() == "p" && i.kind == ItemKind::Final)
    );
    let q = items
        .iter()
        .find(|i| i.path == TaskPath::from(["q"]))
        .unwrap();
    assert_eq!(q.kind, ItemKind::Final);
    assert_eq!(live_q.now(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_key_is_unique_for_the_whole_run_not_only_while_tasks_overlap() {
    // With a persister (where a reused key would find the first task's
    // checkpoints) by default, and on request without one.
    let with_persister = RunConfig::new().persister(Arc::new(InMemoryPersister::new()));
    let on_request = RunConfig::new().remember_keys(true);
    for config in [with_persister, on_request] {
        let runs = Count::default();
        let work = {
            let runs = runs.clone();
            Graph::single(action("work").writes(["n"]).run(move |s: State, _, _| {
                let runs = runs.clone();
                async move {
                    runs.bump();
                    Ok((json!({}), s.set("n", runs.get())))
                }
            }))
        };
        let tasks = vec![
            TaskSpec::new("same", work.clone()),
            TaskSpec::new("same", work.clone()),
        ];
        let config = config
            .max_concurrency(1)
            .failure_policy(tributary::FailurePolicy::Continue);
        let (handle, mut stream) = Runtime::new().run(tasks, config);
        let items = collect(&mut stream).await;
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].kind, ItemKind::Final);
        assert_eq!(items[1].kind, ItemKind::Failed);
        let error = items[1].error.clone().unwrap();
        assert_eq!(error.kind, TaskErrorKind::Validation);
        assert!(error.message.contains("used twice"), "{error:?}");
        // The second never ran, and never returned the first's state.
        assert_eq!(runs.get(), 1);
        assert!(items[1].state_update.is_none());
        assert!(matches!(
            handle.add_task(TaskSpec::new("same", work)),
            Err(AddTaskError::Ended(_) | AddTaskError::DuplicateKey(_))
        ));
    }
}

#[tokio::test(start_paused = true)]
async fn add_task_refuses_a_key_in_use() {
    let forever = Graph::single(action("wait").run(|s: State, _, _| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok((json!({}), s))
    }));
    let (handle, _stream) = Runtime::new().run(
        vec![TaskSpec::new("busy", forever.clone())],
        RunConfig::new(),
    );
    handle
        .progress()
        .wait_for(|p| p.running == 1)
        .await
        .unwrap();
    let refused = handle.add_task(TaskSpec::new("busy", forever.clone()));
    assert!(matches!(refused, Err(AddTaskError::DuplicateKey(ref t)) if t.key() == "busy"));
    assert!(handle.add_task(TaskSpec::new("free", forever)).is_ok());
    handle.cancel().await;
}

#[tokio::test(start_paused = true)]
async fn progress_counts_the_tree_and_knows_the_sources_size() {
    let work = Graph::single(action("work").run(|s: State, _, _| async move {
        tokio::time::sleep(Duration::from_millis(10)).await;
        Ok((json!({}), s))
    }));
    let tasks: Vec<TaskSpec> = (0..50)
        .map(|i| TaskSpec::new(format!("t{i}"), work.clone()))
        .collect();
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new().max_concurrency(1));
    // Known from the start: "x of 50".
    let p = *handle
        .progress()
        .wait_for(|p| p.running == 1)
        .await
        .unwrap();
    assert_eq!(p.total, 50);
    let report = stream.finish().await.unwrap();
    assert_eq!((report.progress.total, report.progress.completed), (50, 50));

    // A fan-out counts its children.
    let parent = TaskSpec::action("p", fan_out(vec![10; 5], child(Count::default())));
    let (handle, stream) = Runtime::new().run(vec![parent], RunConfig::new());
    let p = *handle
        .progress()
        .wait_for(|p| p.running == 6)
        .await
        .unwrap();
    assert_eq!(p.total, 6);
    let report = stream.finish().await.unwrap();
    assert_eq!((report.progress.total, report.progress.completed), (6, 6));
}

#[tokio::test(start_paused = true)]
async fn the_paused_count_returns_to_zero_when_a_task_paused_in_emit_is_cancelled() {
    let talker = TaskSpec::action(
        "talker",
        action("talk").run(|s: State, _, ctx| async move {
            for i in 0..100 {
                ctx.emit(i).await?;
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok((json!({}), s))
        }),
    );
    let (handle, mut stream) = Runtime::new().run(vec![talker], RunConfig::new());
    stream.next().await.unwrap();
    handle.pause();
    // The task waits inside emit.
    handle.progress().wait_for(|p| p.paused == 1).await.unwrap();
    handle.cancel().await;
    let items = collect(&mut stream).await;
    assert_eq!(items.last().unwrap().kind, ItemKind::Cancelled);
    assert_eq!(handle.progress_now().paused, 0);
    assert_eq!(handle.progress_now().cancelled, 1);
}
