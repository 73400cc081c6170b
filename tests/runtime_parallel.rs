//! Parallel actions inside graphs: the Map* constructors, task-based
//! actions, reducers, live streaming, nesting, recursion, child ids.

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tributary::{
    Application, Graph, Hook, InMemoryPersister, ItemKind, ParallelAction, RunConfig, RunOptions,
    Runtime, State, StreamItem, Subgraph, TaskSpec, action, default,
};

use crate::support::Count;

/// A subgraph that appends `tag` to the list `seen` after sleeping
/// `delay_ms` (from the state).
fn tagger(tag: &'static str) -> Subgraph {
    Subgraph::action(action(tag).reads(["item"]).writes(["seen"]).run(
        move |s: State, _, _| async move {
            let ms = s.get("delay_ms").and_then(Value::as_u64).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            let item = s.get("item").cloned().unwrap_or(Value::Null);
            Ok((json!({}), s.set("seen", json!(format!("{tag}:{item}")))))
        },
    ))
}

/// Collects the children's `seen` values, in the order the reducer got them.
fn collect_seen(
    s: State,
    outcomes: Vec<tributary::TaskOutcome>,
) -> Result<State, tributary::BoxError> {
    let seen: Vec<Value> = outcomes
        .iter()
        .map(|o| o.state().unwrap().get("seen").cloned().unwrap())
        .collect();
    Ok(s.set("all", Value::Array(seen)))
}

async fn run_parent(map: ParallelAction, state: State) -> State {
    let mut app = Application::builder(Graph::single(map))
        .app_id("parent")
        .state(state)
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap().state
}

fn items_state(delays: &[u64]) -> State {
    State::new().set("items", json!(delays))
}

fn states_from_items(s: &State, _: &tributary::Inputs) -> Result<Vec<State>, tributary::BoxError> {
    let delays: Vec<u64> = s.get_as("items")?;
    Ok(delays
        .into_iter()
        .map(|d| State::new().set("item", d).set("delay_ms", d))
        .collect())
}

#[tokio::test(start_paused = true)]
async fn map_states_reduces_in_task_order_whatever_the_completion_order() {
    let map = ParallelAction::map_states("map", tagger("t"), states_from_items)
        .reads(["items"])
        .writes(["all"])
        .reduce(collect_seen)
        .build();
    let state = run_parent(map, items_state(&[30, 10, 20, 0])).await;
    assert_eq!(
        state.get("all"),
        Some(&json!(["t:30", "t:10", "t:20", "t:0"]))
    );
}

#[tokio::test]
async fn map_actions_runs_every_subgraph_on_one_state() {
    let map = ParallelAction::map_actions(
        "map",
        vec![tagger("a"), tagger("b"), tagger("c")],
        |s: &State, _| Ok(State::new().set("item", s.get("x").cloned().unwrap())),
    )
    .reads(["x"])
    .writes(["all"])
    .reduce(collect_seen)
    .build();
    let state = run_parent(map, State::new().set("x", 7)).await;
    assert_eq!(state.get("all"), Some(&json!(["a:7", "b:7", "c:7"])));
}

#[tokio::test(start_paused = true)]
async fn map_actions_and_states_is_action_major() {
    let map = ParallelAction::map_actions_and_states(
        "map",
        vec![tagger("a"), tagger("b")],
        states_from_items,
    )
    .reads(["items"])
    .writes(["all"])
    .reduce(collect_seen)
    .build();
    let state = run_parent(map, items_state(&[5, 0, 3])).await;
    assert_eq!(
        state.get("all"),
        Some(&json!(["a:5", "a:0", "a:3", "b:5", "b:0", "b:3"]))
    );
}

#[tokio::test]
async fn task_based_actions_from_an_iterator_and_from_a_stream() {
    let sub = tagger("k");
    let s2 = sub.clone();
    let from_iter = ParallelAction::tasks("it", move |_s: &State, _| {
        let sub = sub.clone();
        Ok((0..3).map(move |i| {
            sub.task(
                format!("key-{i}"),
                State::new().set("item", i),
                Default::default(),
            )
        }))
    })
    .writes(["all"])
    .reduce(collect_seen)
    .build();
    assert_eq!(
        run_parent(from_iter, State::new()).await.get("all"),
        Some(&json!(["k:0", "k:1", "k:2"]))
    );

    let from_stream = ParallelAction::task_stream("st", move |_s: &State, _| {
        let sub = s2.clone();
        Ok(futures_util::stream::iter(0..3).then(move |i| {
            let sub = sub.clone();
            async move {
                tokio::task::yield_now().await;
                sub.task(
                    format!("key-{i}"),
                    State::new().set("item", i * 10),
                    Default::default(),
                )
            }
        }))
    })
    .writes(["all"])
    .reduce(collect_seen)
    .build();
    assert_eq!(
        run_parent(from_stream, State::new()).await.get("all"),
        Some(&json!(["k:0", "k:10", "k:20"]))
    );
}

#[tokio::test]
async fn zero_tasks_give_the_reducer_an_empty_list() {
    let seen = Arc::new(Mutex::new(None));
    let s2 = Arc::clone(&seen);
    let map = ParallelAction::map_states("map", tagger("t"), |_s: &State, _| Ok(Vec::new()))
        .writes(["n"])
        .reduce(move |s, outcomes| {
            *s2.lock().unwrap() = Some(outcomes.len());
            Ok(s.set("n", outcomes.len()))
        })
        .build();
    let state = run_parent(map, State::new()).await;
    assert_eq!(state.get("n"), Some(&json!(0)));
    assert_eq!(*seen.lock().unwrap(), Some(0));
}

#[tokio::test(start_paused = true)]
async fn fold_sees_each_outcome_as_it_completes() {
    let map = ParallelAction::map_states("map", tagger("t"), states_from_items)
        .reads(["items"])
        .writes(["order"])
        .fold(|s, o| Ok(s.append("order", o.state().unwrap().get("seen").cloned().unwrap())?))
        .build();
    let mut app = Application::builder(Graph::single(map))
        .state(items_state(&[30, 10, 20]).set("order", json!([])))
        .build()
        .await
        .unwrap();
    let out = app.run(RunOptions::new()).await.unwrap();
    assert_eq!(
        out.state.get("order"),
        Some(&json!(["t:10", "t:20", "t:30"]))
    );
}

#[tokio::test(start_paused = true)]
async fn the_parents_stream_result_streams_the_childrens_items_live() {
    let talker = Subgraph::action(
        action("talk")
            .reads(["n"])
            .run(|s: State, _, ctx| async move {
                let n: u64 = s.get_as("n")?;
                for i in 0..2 {
                    tokio::time::sleep(Duration::from_millis(10 * n)).await;
                    ctx.emit(format!("{n}.{i}")).await?;
                }
                Ok((json!({}), s))
            }),
    );
    let map = ParallelAction::map_states("fanout", talker, |_s: &State, _| {
        Ok((1..=3)
            .map(|n| State::new().set("n", n))
            .collect::<Vec<_>>())
    })
    .build();
    let mut app = Application::builder(Graph::single(map))
        .build()
        .await
        .unwrap();
    let start = tokio::time::Instant::now();
    let mut stream = app
        .stream_result(RunOptions::new().halt_after(["fanout"]))
        .await
        .unwrap();
    let first: StreamItem = serde_json::from_value(stream.next().await.unwrap()).unwrap();
    // The first token arrives as soon as the fastest child emits it, long
    // before the children are done (60 ms).
    assert_eq!(
        (first.kind, first.result.clone()),
        (ItemKind::Token, Some(json!("1.0")))
    );
    assert_eq!(start.elapsed(), Duration::from_millis(10));
    let mut rest = Vec::new();
    while let Some(v) = stream.next().await {
        rest.push(serde_json::from_value::<StreamItem>(v).unwrap());
    }
    let out = stream.get().await.unwrap();
    assert_eq!(rest.iter().filter(|i| i.kind == ItemKind::Token).count(), 5);
    assert_eq!(rest.iter().filter(|i| i.kind == ItemKind::Final).count(), 3);
    assert_eq!(
        out.result,
        Some(json!({ "tasks": 3, "completed": 3, "failed": 0, "cancelled": 0 }))
    );
}

/// Level `depth` maps `width` children of level `depth - 1`; level 0 counts.
fn nested(depth: usize, width: usize, leaves: Count) -> Subgraph {
    if depth == 0 {
        return Subgraph::action(action("leaf").run(move |s: State, _, _| {
            let leaves = leaves.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(1)).await;
                leaves.bump();
                Ok((json!({}), s))
            }
        }));
    }
    let child = nested(depth - 1, width, leaves);
    Subgraph::action(
        ParallelAction::map_states(format!("level{depth}"), child, move |_s: &State, _| {
            Ok((0..width).map(|_| State::new()).collect::<Vec<_>>())
        })
        .forward_items(false)
        .build(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_parallel_actions_three_levels_deep_with_max_concurrency_2_complete() {
    let leaves = Count::default();
    let runtime = Runtime::builder().max_concurrency(2).build();
    let top = nested(3, 3, leaves.clone());
    let tasks = vec![
        top.task("root-a", State::new(), Default::default()),
        top.task("root-b", State::new(), Default::default()),
    ];
    let (_h, stream) = runtime.run(tasks, RunConfig::new());
    let outcomes = tokio::time::timeout(Duration::from_secs(30), stream.outcomes())
        .await
        .expect("no deadlock")
        .unwrap();
    assert!(outcomes.iter().all(|o| o.is_completed()));
    assert_eq!(leaves.get(), 2 * 27);
    // Every slot went back to the budget.
    assert_eq!(runtime.available_slots(), Some(2));
}

/// Counts every application it sees created.
#[derive(Default)]
struct Apps(Mutex<Vec<(String, Option<String>)>>);

impl Hook for Apps {
    fn on_create(&self, app: &tributary::AppInfo, _: &State) {
        let parent = app.spawning_parent.as_ref().map(|p| p.app_id.clone());
        self.0.lock().unwrap().push((app.app_id.clone(), parent));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recursive_fork_to_depth_5_counts_63_applications() {
    // An action that, below depth 5, runs two children of its own graph.
    let graph_cell: Arc<OnceLock<Graph>> = Arc::new(OnceLock::new());
    let cell = Arc::clone(&graph_cell);
    let fork = ParallelAction::tasks("fork", move |s: &State, _| {
        let depth: u64 = s.get_as("depth")?;
        let graph = cell.get().unwrap().clone();
        let n = if depth < 5 { 2 } else { 0 };
        Ok((0..n).map(move |i| {
            TaskSpec::new(format!("c{i}"), graph.clone())
                .state(State::new().set("depth", depth + 1))
        }))
    })
    .reads(["depth"])
    .forward_items(false)
    .build();
    let graph = Graph::single(fork);
    graph_cell.set(graph.clone()).unwrap();

    let apps = Arc::new(Apps::default());
    let mut root = Application::builder(graph)
        .app_id("root")
        .state(State::new().set("depth", 0))
        .hook_arc(apps.clone())
        .build()
        .await
        .unwrap();
    root.run(RunOptions::new()).await.unwrap();
    let apps = apps.0.lock().unwrap();
    assert_eq!(apps.len(), 63, "1 + 2 + 4 + 8 + 16 + 32");
    // Every child points at an app that exists; ids are unique.
    let ids: std::collections::HashSet<_> = apps.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 63);
    assert!(
        apps.iter()
            .all(|(id, parent)| id == "root" || parent.as_ref().is_some_and(|p| ids.contains(p)))
    );
}

#[tokio::test]
async fn child_ids_are_stable_across_parent_reruns_and_differ_between_invocations() {
    let persister = Arc::new(InMemoryPersister::new());
    let runs = Count::default();
    let r = runs.clone();
    let child = Subgraph::action(action("child").run(move |s: State, _, _| {
        let r = r.clone();
        async move {
            r.bump();
            Ok((json!({}), s))
        }
    }));
    let map = ParallelAction::map_states("map", child, |_s: &State, _| {
        Ok(vec![State::new(), State::new()])
    })
    .reads(["round"])
    .build();
    // map -> bump -> map (twice in one run, via a loop).
    let graph = Graph::builder()
        .action(map)
        .action(
            action("bump")
                .reads(["round"])
                .writes(["round"])
                .run(|s: State, _, _| async move { Ok((json!({}), s.increment("round", 1)?)) }),
        )
        .transition("map", "bump", tributary::when("round", 0))
        .transition("bump", "map", default())
        .entrypoint("map")
        .build()
        .unwrap();
    let mut app = Application::builder(graph.clone())
        .app_id("p")
        .state(State::new().set("round", 0))
        .persister(persister.clone())
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap();
    // Two invocations of `map` (sequence 0 and 2), two children each: four
    // distinct child apps, each checkpointed through the cascaded persister.
    let mut ids = tributary::Persister::list_app_ids(&*persister, None)
        .await
        .unwrap();
    ids.retain(|id| id != "p");
    assert_eq!(ids.len(), 4);
    assert_eq!(runs.get(), 4);
    let expected: Vec<String> = [(0, "0"), (0, "1"), (2, "0"), (2, "1")]
        .iter()
        .map(|(seq, key)| tributary::child_app_id("p", *seq, "map", key))
        .collect();
    let mut sorted = expected.clone();
    sorted.sort();
    assert_eq!(ids, sorted);

    // Rerunning the parent from scratch (as after a crash) finds the same
    // children, finished: none of them runs again.
    let mut again = Application::builder(graph)
        .app_id("p")
        .state(State::new().set("round", 0))
        .persister(persister.clone())
        .build()
        .await
        .unwrap();
    again.run(RunOptions::new()).await.unwrap();
    assert_eq!(runs.get(), 4);
}

#[tokio::test]
async fn the_persister_cascades_to_children_unless_overridden_or_turned_off() {
    let child = || tagger("c");
    let states = |_s: &State, _: &tributary::Inputs| Ok(vec![State::new().set("item", 1)]);
    let parent_store = Arc::new(InMemoryPersister::new());
    let child_store = Arc::new(InMemoryPersister::new());
    let count = |p: &Arc<InMemoryPersister>| {
        let p = Arc::clone(p);
        async move {
            tributary::Persister::list_app_ids(&*p, None)
                .await
                .unwrap()
                .len()
        }
    };
    let build = |map: ParallelAction, id: &'static str| {
        let store = parent_store.clone();
        async move {
            let mut app = Application::builder(Graph::single(map))
                .app_id(id)
                .persister(store)
                .build()
                .await
                .unwrap();
            app.run(RunOptions::new()).await.unwrap();
        }
    };

    // Cascade: the child checkpoints next to its parent.
    build(
        ParallelAction::map_states("m", child(), states).build(),
        "a",
    )
    .await;
    assert_eq!(count(&parent_store).await, 2);
    // Override: the child checkpoints to its own persister.
    let config = RunConfig::new().persister(child_store.clone());
    build(
        ParallelAction::map_states("m", child(), states)
            .config(config)
            .build(),
        "b",
    )
    .await;
    assert_eq!(
        (count(&parent_store).await, count(&child_store).await),
        (3, 1)
    );
    // Off: the child is not persisted at all.
    build(
        ParallelAction::map_states("m", child(), states)
            .cascade(false)
            .build(),
        "c",
    )
    .await;
    assert_eq!(
        (count(&parent_store).await, count(&child_store).await),
        (4, 1)
    );
    // The child id is derived from the parent, its step and the task key.
    let child_id = tributary::child_app_id("b", 0, "m", "0");
    assert!(!child_store.history(&child_id).is_empty());
}
