//! Property tests over random task shapes and delays: the merge invariants
//! and "the reducer sees task order" hold for every schedule.

use std::time::Duration;

use futures_util::StreamExt;
use proptest::prelude::*;
use serde_json::{Value, json};
use tributary::{
    Application, Graph, ItemKind, MergeMode, ParallelAction, RunConfig, RunOptions, Runtime, State,
    StreamItem, Subgraph, TaskSpec, action,
};

/// One task: per token, the delay before it (ms).
type Shape = Vec<u64>;

fn shapes() -> impl Strategy<Value = Vec<Shape>> {
    prop::collection::vec(prop::collection::vec(0u64..15, 0..5), 1..7)
}

/// A one-action graph that sleeps before each token as `delays` says.
fn graph() -> Graph {
    Graph::single(
        action("talk")
            .reads(["delays"])
            .run(|s: State, _, ctx| async move {
                let delays: Vec<u64> = s.get_as("delays")?;
                for (i, d) in delays.iter().enumerate() {
                    tokio::time::sleep(Duration::from_millis(*d)).await;
                    ctx.emit(i).await?;
                }
                Ok((json!({}), s))
            }),
    )
}

fn run(shapes: &[Shape], config: RunConfig, zip: bool) -> (Vec<StreamItem>, Vec<tributary::Round>) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let g = graph();
        let tasks: Vec<_> = shapes
            .iter()
            .enumerate()
            .map(|(i, d)| {
                TaskSpec::new(format!("t{i}"), g.clone())
                    .state(State::new().set("delays", json!(d)))
            })
            .collect();
        let (_h, mut stream) = Runtime::new().run(tasks, config);
        if zip {
            let mut rounds = Vec::new();
            while let Some(r) = stream.next_round().await {
                rounds.push(r);
            }
            (Vec::new(), rounds)
        } else {
            (stream.collect().await, Vec::new())
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn as_completed_keeps_per_task_order(shapes in shapes()) {
        let (items, _) = run(&shapes, RunConfig::new(), false);
        prop_assert_eq!(items.len(), shapes.iter().map(|s| s.len() + 1).sum::<usize>());
        for (t, shape) in shapes.iter().enumerate() {
            let mine: Vec<_> = items.iter().filter(|i| i.task_index == t as u64).collect();
            let seqs: Vec<u64> = mine.iter().map(|i| i.seq).collect();
            prop_assert_eq!(seqs, (0..=shape.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(mine.last().unwrap().kind, ItemKind::Final);
            for (k, item) in mine.iter().take(shape.len()).enumerate() {
                prop_assert_eq!(item.result.clone(), Some(json!(k)));
            }
        }
    }

    #[test]
    fn zip_round_r_holds_every_tasks_rth_item(shapes in shapes()) {
        let (_, rounds) = run(&shapes, RunConfig::new().merge_mode(MergeMode::Zip).task_channel_capacity(1), true);
        let longest = shapes.iter().map(|s| s.len() + 1).max().unwrap();
        prop_assert_eq!(rounds.len(), longest);
        for (r, round) in rounds.iter().enumerate() {
            prop_assert_eq!(round.slots.len(), shapes.len());
            for (t, slot) in round.slots.iter().enumerate() {
                let len = shapes[t].len() + 1;
                match slot {
                    Some(item) => {
                        prop_assert!(r < len);
                        prop_assert_eq!((item.task_index, item.seq), (t as u64, r as u64));
                    }
                    None => prop_assert!(r >= len),
                }
            }
        }
    }

    #[test]
    fn ordered_is_task_order(shapes in shapes()) {
        let (items, _) = run(&shapes, RunConfig::new().merge_mode(MergeMode::Ordered).task_channel_capacity(1), false);
        let got: Vec<(u64, u64)> = items.iter().map(|i| (i.task_index, i.seq)).collect();
        let want: Vec<(u64, u64)> = shapes
            .iter()
            .enumerate()
            .flat_map(|(t, s)| (0..=s.len() as u64).map(move |q| (t as u64, q)))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// On two real threads, with random numbers of yields between tokens
    /// instead of timers: the scheduling itself is random.
    #[test]
    fn as_completed_keeps_per_task_order_on_two_threads(shapes in shapes()) {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
        let items: Vec<StreamItem> = rt.block_on(async {
            let g = Graph::single(action("spin").reads(["yields"]).run(|s: State, _, ctx| async move {
                let yields: Vec<u64> = s.get_as("yields")?;
                for (i, y) in yields.iter().enumerate() {
                    for _ in 0..*y {
                        tokio::task::yield_now().await;
                    }
                    ctx.emit(i).await?;
                }
                Ok((json!({}), s))
            }));
            let tasks: Vec<_> = shapes
                .iter()
                .enumerate()
                .map(|(i, y)| TaskSpec::new(format!("t{i}"), g.clone()).state(State::new().set("yields", json!(y))))
                .collect();
            let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().mailbox_capacity(2));
            stream.collect().await
        });
        for (t, shape) in shapes.iter().enumerate() {
            let seqs: Vec<u64> = items.iter().filter(|i| i.task_index == t as u64).map(|i| i.seq).collect();
            prop_assert_eq!(seqs, (0..=shape.len() as u64).collect::<Vec<_>>());
        }
    }

    #[test]
    fn the_reducer_sees_task_order(delays in prop::collection::vec(0u64..50, 0..10)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        let got = rt.block_on(async {
            let leaf = Subgraph::action(action("leaf").reads(["d"]).run(|s: State, _, _| async move {
                let d: u64 = s.get_as("d")?;
                tokio::time::sleep(Duration::from_millis(d)).await;
                Ok((json!({}), s))
            }));
            let map = ParallelAction::map_states("map", leaf, |s: &State, _| {
                let ds: Vec<u64> = s.get_as("ds")?;
                Ok(ds.into_iter().map(|d| State::new().set("d", d)).collect::<Vec<_>>())
            })
            .reads(["ds"])
            .writes(["seen"])
            .reduce(|s, outcomes| {
                let seen: Vec<Value> = outcomes.iter().map(|o| o.state().unwrap().get("d").cloned().unwrap()).collect();
                Ok(s.set("seen", Value::Array(seen)))
            })
            .build();
            let mut app = Application::builder(Graph::single(map))
                .state(State::new().set("ds", json!(delays)))
                .build()
                .await
                .unwrap();
            app.run(RunOptions::new()).await.unwrap().state.get("seen").cloned().unwrap()
        });
        prop_assert_eq!(got, json!(delays));
    }
}

/// One parent: its children's delays (ms) before they end.
type Tree = Vec<Vec<u64>>;

fn trees() -> impl Strategy<Value = (Tree, u64, MergeMode)> {
    (
        prop::collection::vec(prop::collection::vec(0u64..20, 0..8), 1..8),
        0u64..15,
        prop_oneof![
            Just(MergeMode::AsCompleted),
            Just(MergeMode::Ordered),
            Just(MergeMode::FinalOnly)
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever the tree and whenever `cancel()` comes, once it resolves no
    /// leaf is alive, and every top-level task the run took reported exactly
    /// one terminal item (the tasks the lazy source never yielded, always
    /// the last ones, report nothing).
    #[test]
    fn cancel_stops_the_whole_tree_at_any_moment((tree, cancel_at, mode) in trees()) {
        // Two real worker threads: leaves run beside the canceller.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let (alive_after, terminals) = rt.block_on(async {
            let live = crate::support::Live::default();
            let leaf = {
                let live = live.clone();
                Subgraph::action(action("leaf").reads(["ms"]).run(move |s: State, _, ctx| {
                    let live = live.clone();
                    async move {
                        let _alive = live.guard();
                        ctx.emit("tick").await?;
                        let ms: u64 = s.get_as("ms")?;
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        Ok((json!({}), s))
                    }
                }))
            };
            let tasks: Vec<_> = tree
                .iter()
                .enumerate()
                .map(|(i, children)| {
                    let children = children.clone();
                    let fan = ParallelAction::map_states("fan", leaf.clone(), move |_, _| {
                        Ok(children.iter().map(|ms| State::new().set("ms", *ms)).collect::<Vec<_>>())
                    })
                    .build();
                    TaskSpec::action(format!("p{i}"), fan)
                })
                .collect();
            let (handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().merge_mode(mode));
            let consumer = tokio::spawn(async move {
                let mut items = Vec::new();
                while let Some(item) = stream.next().await {
                    items.push(item);
                }
                items
            });
            tokio::time::sleep(Duration::from_millis(cancel_at)).await;
            handle.cancel().await;
            let alive_after = live.now();
            let items = consumer.await.unwrap();
            let terminals: Vec<usize> = (0..tree.len())
                .map(|i| {
                    let key = format!("p{i}");
                    items
                        .iter()
                        .filter(|it| !it.is_nested() && *it.task_key == *key && it.is_terminal())
                        .count()
                })
                .collect();
            (alive_after, terminals)
        });
        prop_assert_eq!(alive_after, 0);
        prop_assert!(terminals.iter().all(|&n| n <= 1), "terminals per task: {:?}", terminals);
        // Tasks are taken in order: the ones that reported are a prefix.
        let reported = terminals.iter().take_while(|&&n| n == 1).count();
        prop_assert!(terminals[reported..].iter().all(|&n| n == 0), "terminals per task: {:?}", terminals);
    }
}
