//! Merge modes: AsCompleted, Zip, Ordered, FinalOnly, and the switches.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use tributary::{ItemKind, MergeMode, RunConfig, Runtime, State, StreamItem, TaskSource, TaskSpec};

use crate::support::{Count, by_task, two_step};

/// `n` tasks of the two-step graph with `tokens` tokens per step; task `i`
/// sleeps `delays[i]` ms per token.
fn tasks(n: usize, tokens: usize, delays: &[u64]) -> Vec<TaskSpec> {
    let graph = two_step(tokens, Count::default());
    (0..n)
        .map(|i| {
            TaskSpec::new(format!("t{i}"), graph.clone())
                .state(State::new().set("delay_ms", delays.get(i).copied().unwrap_or(0)))
        })
        .collect()
}

async fn collect(tasks: Vec<TaskSpec>, config: RunConfig) -> Vec<StreamItem> {
    let (_h, stream) = Runtime::new().run(tasks, config);
    stream.collect().await
}

/// What one task of the two-step graph with 2 tokens streams, in order.
fn expected_kinds() -> Vec<(ItemKind, Option<&'static str>)> {
    vec![
        (ItemKind::Token, Some("first")),
        (ItemKind::Token, Some("first")),
        (ItemKind::NodeComplete, Some("first")),
        (ItemKind::Token, Some("second")),
        (ItemKind::Token, Some("second")),
        (ItemKind::Final, Some("second")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_completed_keeps_each_tasks_items_in_order() {
    let items = collect(tasks(6, 2, &[3, 0, 2, 1, 0, 4]), RunConfig::new()).await;
    assert_eq!(items.len(), 6 * 6);
    for (index, task_items) in by_task(&items) {
        let seqs: Vec<u64> = task_items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, (0..6).collect::<Vec<_>>(), "task {index}");
        let kinds: Vec<_> = task_items
            .iter()
            .map(|i| (i.kind, i.action.as_deref()))
            .collect();
        assert_eq!(kinds, expected_kinds(), "task {index}");
        assert_eq!(task_items[0].result, Some(json!("first0")));
        let last = task_items.last().unwrap();
        assert_eq!(last.result, Some(json!({ "action": "second" })));
        assert!(last.state_update.is_some());
    }
}

#[tokio::test]
async fn the_switches_drop_tokens_and_intermediate_nodes() {
    let config = RunConfig::new().intermediate_stream_outputs(false);
    let items = collect(tasks(3, 2, &[]), config).await;
    assert!(items.iter().all(|i| i.kind != ItemKind::Token));
    assert_eq!(items.len(), 3 * 2);

    let config = RunConfig::new().intermediate_nodes(false);
    let items = collect(tasks(3, 2, &[]), config).await;
    assert!(items.iter().all(|i| i.kind != ItemKind::NodeComplete));
    assert_eq!(items.len(), 3 * 5);

    let config = RunConfig::new()
        .intermediate_nodes(false)
        .intermediate_stream_outputs(false);
    let items = collect(tasks(3, 2, &[]), config).await;
    assert!(items.iter().all(|i| i.kind == ItemKind::Final));
    assert_eq!(items.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ordered_yields_all_of_task_0_then_task_1() {
    let config = RunConfig::new().merge_mode(MergeMode::Ordered);
    // Later tasks are faster: ordered must still be task order.
    let items = collect(tasks(5, 2, &[8, 6, 4, 2, 0]), config).await;
    let order: Vec<(u64, u64)> = items.iter().map(|i| (i.task_index, i.seq)).collect();
    let expected: Vec<(u64, u64)> = (0..5).flat_map(|t| (0..6).map(move |s| (t, s))).collect();
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn final_only_yields_one_terminal_per_task_in_completion_order() {
    let config = RunConfig::new().merge_mode(MergeMode::FinalOnly);
    let items = collect(tasks(4, 3, &[30, 0, 15, 5]), config).await;
    assert_eq!(items.len(), 4);
    assert!(
        items
            .iter()
            .all(|i| i.kind == ItemKind::Final && i.seq == 0)
    );
    let order: Vec<u64> = items.iter().map(|i| i.task_index).collect();
    assert_eq!(order, [1, 3, 2, 0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_round_r_holds_every_tasks_rth_item() {
    // Tasks of different lengths: task i streams i+1 tokens in one step.
    let graphs: Vec<TaskSpec> = (0..4)
        .map(|i| {
            TaskSpec::action(
                format!("t{i}"),
                crate::support::streamer("s", i + 1, Count::default()),
            )
            .state(State::new().set("delay_ms", (4 - i) as u64))
        })
        .collect();
    let (_h, mut stream) = Runtime::new().run(graphs, RunConfig::new().merge_mode(MergeMode::Zip));
    let mut rounds = Vec::new();
    while let Some(round) = stream.next_round().await {
        rounds.push(round);
    }
    // Task i has i+1 tokens then its Final: i+2 items; the longest has 5.
    assert_eq!(rounds.len(), 5);
    for (r, round) in rounds.iter().enumerate() {
        assert_eq!(round.index, r as u64);
        assert_eq!(round.slots.len(), 4);
        for (t, slot) in round.slots.iter().enumerate() {
            let len = t + 2;
            match slot {
                Some(item) => {
                    assert!(r < len, "round {r} task {t} should be empty");
                    assert_eq!((item.task_index, item.seq), (t as u64, r as u64));
                    assert_eq!(item.kind == ItemKind::Final, r == len - 1);
                }
                None => assert!(r >= len, "round {r} task {t} should hold an item"),
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_with_a_limit_below_the_task_count_zips_cohorts_without_deadlock() {
    let config = RunConfig::new()
        .merge_mode(MergeMode::Zip)
        .max_concurrency(2)
        .task_channel_capacity(1);
    let (_h, stream) = Runtime::new().run(tasks(5, 3, &[0, 2, 1, 0, 3]), config);
    let items: Vec<StreamItem> = stream.collect().await;
    assert_eq!(items.len(), 5 * 8);
    // Cohorts {0,1}, {2,3}, {4}: within a cohort, items go round by round.
    let order: Vec<(u64, u64)> = items.iter().map(|i| (i.task_index, i.seq)).collect();
    let mut expected = Vec::new();
    for cohort in [vec![0, 1], vec![2, 3], vec![4]] {
        for seq in 0..8 {
            for &t in &cohort {
                expected.push((t, seq));
            }
        }
    }
    assert_eq!(order, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_under_a_runtime_budget_smaller_than_the_run_completes() {
    let runtime = Runtime::builder().max_concurrency(3).build();
    let config = RunConfig::new()
        .merge_mode(MergeMode::Zip)
        .task_channel_capacity(1);
    let (_h, stream) = runtime.run(tasks(7, 2, &[1, 0, 2]), config);
    let items: Vec<StreamItem> = stream.collect().await;
    assert_eq!(
        items.iter().filter(|i| i.kind == ItemKind::Final).count(),
        7
    );
}

#[tokio::test]
async fn a_stream_item_round_trips_through_json() {
    let items = collect(tasks(1, 1, &[]), RunConfig::new()).await;
    for item in items {
        let text = serde_json::to_string(&item).unwrap();
        let back: StreamItem = serde_json::from_str(&text).unwrap();
        assert_eq!(back, item);
    }
}

#[tokio::test]
async fn an_async_stream_source_is_pulled_lazily() {
    let graph = two_step(0, Count::default());
    let pulled = Count::default();
    let p = pulled.clone();
    let source = futures_util::stream::iter(0..1000).map(move |i| {
        p.bump();
        TaskSpec::new(format!("t{i}"), graph.clone())
    });
    let runtime = Runtime::builder().max_concurrency(4).build();
    let (_h, mut stream) = runtime.run(
        TaskSource::stream(source),
        RunConfig::new().mailbox_capacity(1),
    );
    // Read one item, then look at how many tasks were taken: bounded by the
    // budget and the mailbox, not the source's 1000.
    let _first = stream.next().await.unwrap();
    assert!(pulled.get() <= 16, "pulled {}", pulled.get());
    let rest: Vec<_> = stream.collect().await;
    assert_eq!(rest.len() + 1, 1000 * 2);
    assert_eq!(pulled.get(), 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unbounded_mailbox_lets_producers_finish_before_anyone_reads() {
    let graph = two_step(200, Count::default());
    let tasks: Vec<TaskSpec> = (0..5)
        .map(|i| TaskSpec::new(format!("t{i}"), graph.clone()))
        .collect();
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new().unbounded_mailbox());
    // Nobody reads, yet every task runs to its end (its items wait in the
    // mailbox): 5 tasks x (400 tokens + node + final) items are produced.
    tokio::time::timeout(
        Duration::from_secs(20),
        handle.progress().wait_for(|p| p.completed == 5),
    )
    .await
    .expect("producers never wait on an unbounded mailbox")
    .unwrap();
    let items: Vec<StreamItem> = stream.collect().await;
    assert_eq!(items.len(), 5 * 402);
}
