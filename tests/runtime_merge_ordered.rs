//! `Ordered`: the front task streams through the run's mailbox, the tasks
//! behind it into their own channels. Task order, each task's order and the
//! place of its terminal item hold across the move from one to the other.

use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use serde_json::json;
use tokio::sync::Notify;
use tributary::{
    ActionContext, CancelReason, Graph, ItemKind, MergeMode, ParallelAction, RunConfig, RunError,
    RunStream, Runtime, State, StreamItem, Subgraph, TaskSpec, action,
};

/// A bound on waits that only a bug makes long.
const BOUND: Duration = Duration::from_secs(20);

fn ordered() -> RunConfig {
    RunConfig::new().merge_mode(MergeMode::Ordered)
}

/// A task that emits the tokens `0..n` and ends.
fn counter(key: &str, n: u64) -> TaskSpec {
    TaskSpec::action(
        key,
        action("count").run(move |s: State, _, ctx| async move {
            for i in 0..n {
                ctx.emit(i).await?;
            }
            Ok((json!({ "n": n }), s))
        }),
    )
}

async fn collect(stream: &mut RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    while let Some(item) = stream.next().await {
        items.push(item);
    }
    items
}

/// `(task index, seq, kind)` of each item.
fn order(items: &[StreamItem]) -> Vec<(u64, u64, ItemKind)> {
    items
        .iter()
        .map(|i| (i.task_index, i.seq, i.kind))
        .collect()
}

/// What a task of `n` tokens (`0..n`) and a `Final` streams, as `order` has it.
fn counted(index: u64, n: u64) -> Vec<(u64, u64, ItemKind)> {
    (0..n)
        .map(|seq| (index, seq, ItemKind::Token))
        .chain([(index, n, ItemKind::Final)])
        .collect()
}

/// Emit `value`; wake `blocked` when the emit must wait for room.
async fn emit_noting_a_wait(
    ctx: &ActionContext,
    value: u64,
    blocked: &Notify,
) -> Result<(), tributary::BoxError> {
    let mut emit = std::pin::pin!(ctx.emit(value));
    let first = std::future::poll_fn(|cx| Poll::Ready(emit.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(sent) => sent?,
        Poll::Pending => {
            blocked.notify_one();
            emit.await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_fills_its_channel_behind_the_front_keeps_its_order_at_the_front() {
    // t1 fills its channel (4 items) while t0 holds the front; t0 ends only
    // then, and t1's later tokens go through the mailbox.
    let filled = Arc::new(Notify::new());
    let wait = Arc::clone(&filled);
    let t0 = TaskSpec::action(
        "t0",
        action("hold").run(move |s: State, _, ctx| {
            let wait = Arc::clone(&wait);
            async move {
                ctx.emit(0).await?;
                wait.notified().await;
                Ok((json!({}), s))
            }
        }),
    );
    let fill = Arc::clone(&filled);
    let t1 = TaskSpec::action(
        "t1",
        action("fill").run(move |s: State, _, ctx| {
            let fill = Arc::clone(&fill);
            async move {
                for i in 0..300u64 {
                    ctx.emit(i).await?;
                    if i == 3 {
                        fill.notify_one();
                    }
                }
                Ok((json!({}), s))
            }
        }),
    );
    let tasks = vec![t0, t1, counter("t2", 100), counter("t3", 0)];
    let (_h, mut stream) = Runtime::new().run(tasks, ordered().mailbox_capacity(8));
    let items = tokio::time::timeout(BOUND, collect(&mut stream))
        .await
        .expect("the run ends");
    let mut want = counted(0, 1);
    want.extend(counted(1, 300));
    want.extend(counted(2, 100));
    want.extend(counted(3, 0));
    assert_eq!(order(&items), want);
    for item in items.iter().filter(|i| i.kind == ItemKind::Token) {
        assert_eq!(item.result, Some(json!(item.seq)));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_emitters_of_a_task_keep_its_items_numbered_in_order_across_the_move() {
    const EMITTERS: u64 = 4;
    const EACH: u64 = 200;
    for round in 0..10 {
        // t1's emitters run while t0 holds the front and go on while t1
        // moves to the mailbox.
        let started = Arc::new(Notify::new());
        let wait = Arc::clone(&started);
        let t0 = TaskSpec::action(
            "t0",
            action("hold").run(move |s: State, _, _| {
                let wait = Arc::clone(&wait);
                async move {
                    wait.notified().await;
                    Ok((json!({}), s))
                }
            }),
        );
        let start = Arc::clone(&started);
        let t1 = TaskSpec::action(
            "t1",
            action("fan").run(move |s: State, _, ctx| {
                let start = Arc::clone(&start);
                async move {
                    let emitters: Vec<_> = (0..EMITTERS)
                        .map(|e| {
                            let ctx = ctx.clone();
                            tokio::spawn(async move {
                                for i in 0..EACH {
                                    ctx.emit(json!([e, i])).await?;
                                    if i % 7 == e {
                                        tokio::task::yield_now().await;
                                    }
                                }
                                Ok::<_, tributary::BoxError>(())
                            })
                        })
                        .collect();
                    start.notify_one();
                    for emitter in emitters {
                        emitter.await??;
                    }
                    Ok((json!({}), s))
                }
            }),
        );
        let config = ordered().task_channel_capacity(2).mailbox_capacity(4);
        let (_h, mut stream) = Runtime::new().run(vec![t0, t1], config);
        let items = tokio::time::timeout(BOUND, collect(&mut stream))
            .await
            .expect("the run ends");
        let total = EMITTERS * EACH;
        let mut want = counted(0, 0);
        want.extend((0..total).map(|seq| (1, seq, ItemKind::Token)).chain([(
            1,
            total,
            ItemKind::Final,
        )]));
        assert_eq!(order(&items), want, "round {round}");
        // Each emitter's tokens in the order it sent them.
        let mut next = [0u64; EMITTERS as usize];
        for item in items.iter().filter(|i| i.kind == ItemKind::Token) {
            let [e, i] = &item.result.as_ref().unwrap().as_array().unwrap()[..] else {
                panic!("a token is [emitter, i]");
            };
            let e = e.as_u64().unwrap() as usize;
            assert_eq!(i.as_u64(), Some(next[e]), "round {round}, emitter {e}");
            next[e] += 1;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terminal_item_comes_after_the_items_in_the_mailbox() {
    // t0 runs to its end with its tokens waiting in the mailbox: its Final
    // is delivered (through the control channel) before any of them is read.
    let tasks = vec![counter("t0", 1000), counter("t1", 3)];
    let config = ordered().mailbox_capacity(2000);
    let (handle, mut stream) = Runtime::new().run(tasks, config);
    let first = tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("t0 streams")
        .unwrap();
    tokio::time::timeout(BOUND, handle.progress().wait_for(|p| p.completed == 2))
        .await
        .expect("both tasks end while nobody reads")
        .unwrap();
    let mut items = vec![first];
    items.extend(
        tokio::time::timeout(BOUND, collect(&mut stream))
            .await
            .expect("the run ends"),
    );
    let mut want = counted(0, 1000);
    want.extend(counted(1, 3));
    assert_eq!(order(&items), want);
    assert!(stream.finish().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_front_task_while_it_waits_for_mailbox_room_ends_it() {
    let go = Arc::new(Notify::new());
    let blocked = Arc::new(Notify::new());
    let stopped = Arc::new(Notify::new());
    let (wait, note, stop) = (Arc::clone(&go), Arc::clone(&blocked), Arc::clone(&stopped));
    let endless = TaskSpec::action(
        "t1",
        action("endless").run(move |s: State, _, ctx| {
            let (wait, note, stop) = (Arc::clone(&wait), Arc::clone(&note), Arc::clone(&stop));
            async move {
                wait.notified().await;
                // The emitter is a task of its own: cancelling the task
                // drops its step, not the emitter, which only the lane's
                // wait for room can stop.
                let emitter = tokio::spawn(async move {
                    let mut i = 0u64;
                    while emit_noting_a_wait(&ctx, i, &note).await.is_ok() {
                        i += 1;
                    }
                    stop.notify_one();
                });
                emitter.await?;
                Ok((json!({}), s))
            }
        }),
    );
    let tasks = vec![counter("t0", 0), endless, counter("t2", 2)];
    let (handle, mut stream) = Runtime::new().run(tasks, ordered().mailbox_capacity(2));
    // t0's Final brings t1 to the front: from then on its items go into the
    // mailbox, and the first emit that waits waits for room there.
    let first = tokio::time::timeout(BOUND, stream.next())
        .await
        .expect("t0 ends")
        .unwrap();
    assert_eq!((first.task_index, first.kind), (0, ItemKind::Final));
    go.notify_one();
    tokio::time::timeout(BOUND, blocked.notified())
        .await
        .expect("t1 fills the mailbox");
    handle.cancel_task("t1").unwrap();
    tokio::time::timeout(BOUND, stopped.notified())
        .await
        .expect("the emitter waiting for room is stopped");
    tokio::time::timeout(BOUND, handle.progress().wait_for(|p| p.cancelled == 1))
        .await
        .expect("the task ends while nobody reads")
        .unwrap();
    let items = tokio::time::timeout(BOUND, collect(&mut stream))
        .await
        .expect("the run ends");
    let (t1, t2): (Vec<_>, Vec<_>) = items.iter().partition(|i| i.task_index == 1);
    let last = t1.last().unwrap();
    assert_eq!(last.kind, ItemKind::Cancelled);
    assert_eq!(last.cancel_reason(), Some(CancelReason::Task));
    let tokens = &t1[..t1.len() - 1];
    assert!(tokens.len() >= 2, "the mailbox was full: {}", tokens.len());
    for (k, item) in tokens.iter().enumerate() {
        assert_eq!((item.seq, item.kind), (k as u64, ItemKind::Token));
        assert_eq!(item.result, Some(json!(k)));
    }
    assert_eq!(last.seq, tokens.len() as u64);
    assert_eq!(
        order(&t2.into_iter().cloned().collect::<Vec<_>>()),
        counted(2, 2)
    );
    assert!(stream.finish().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_emitter_left_running_after_its_task_ended_is_stopped() {
    // t0 ends while an emitter it spawned goes on; t1 waits until that
    // emitter is stopped. Its items would only take room from t1's.
    let stopped = Arc::new(Notify::new());
    let stop = Arc::clone(&stopped);
    let leaky = TaskSpec::action(
        "t0",
        action("leak").run(move |s: State, _, ctx| {
            let stop = Arc::clone(&stop);
            async move {
                ctx.emit(0).await?;
                tokio::spawn(async move {
                    while ctx.emit(1).await.is_ok() {}
                    stop.notify_one();
                });
                Ok((json!({}), s))
            }
        }),
    );
    let wait = Arc::clone(&stopped);
    let waiter = TaskSpec::action(
        "t1",
        action("wait").run(move |s: State, _, _| {
            let wait = Arc::clone(&wait);
            async move {
                wait.notified().await;
                Ok((json!({}), s))
            }
        }),
    );
    let (_h, mut stream) = Runtime::new().run(vec![leaky, waiter], ordered().mailbox_capacity(4));
    let items = tokio::time::timeout(BOUND, collect(&mut stream))
        .await
        .expect("the run ends");
    // t0's items up to its Final (what the emitter sent before it counts),
    // then t1's Final.
    let t0: Vec<&StreamItem> = items.iter().filter(|i| i.task_index == 0).collect();
    let last = t0.last().unwrap();
    assert_eq!(last.kind, ItemKind::Final);
    assert_eq!(last.seq, t0.len() as u64 - 1);
    assert_eq!(
        order(&items[t0.len()..]),
        [(1, 0, ItemKind::Final)],
        "t1 follows t0"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_nested_in_an_ordered_task_streams_in_that_tasks_place() {
    const CHILDREN: u64 = 3;
    const TOKENS: u64 = 30;
    let child = Subgraph::action(
        action("child")
            .reads(["n"])
            .run(|s: State, _, ctx| async move {
                let n: u64 = s.get_as("n")?;
                for i in 0..TOKENS {
                    ctx.emit(json!([n, i])).await?;
                    if i % (n + 2) == 0 {
                        tokio::task::yield_now().await;
                    }
                }
                Ok((json!({}), s))
            }),
    );
    let map = ParallelAction::map_states("map", child, |_s: &State, _| {
        Ok((0..CHILDREN)
            .map(|n| State::new().set("n", n))
            .collect::<Vec<_>>())
    })
    .build();
    let graph = Graph::single(map);
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|t| TaskSpec::new(format!("t{t}"), graph.clone()))
        .collect();
    let config = ordered().task_channel_capacity(1).mailbox_capacity(2);
    let (_h, mut stream) = Runtime::new().run(tasks, config);
    let items = tokio::time::timeout(BOUND, collect(&mut stream))
        .await
        .expect("the run ends");
    // Every item of top-level task t (its own or a nested one) comes before
    // every item of task t + 1; a top-level task's Final ends its block.
    let tops: Vec<&str> = items.iter().map(|i| &*i.path.keys()[0]).collect();
    let mut blocks: Vec<&str> = tops.clone();
    blocks.dedup();
    assert_eq!(blocks, ["t0", "t1", "t2", "t3"]);
    for t in 0..4 {
        let key = format!("t{t}");
        let block: Vec<&StreamItem> = items.iter().filter(|i| *i.path.keys()[0] == *key).collect();
        let last = block.last().unwrap();
        assert_eq!((last.path.len(), last.kind), (1, ItemKind::Final), "{key}");
        // Each nested child's items, in order: its tokens, then its end.
        for n in 0..CHILDREN {
            let mine: Vec<&&StreamItem> = block
                .iter()
                .filter(|i| {
                    i.path.len() == 2
                        && i.kind == ItemKind::Token
                        && i.result.as_ref().unwrap()[0] == json!(n)
                })
                .collect();
            let got: Vec<(u64, serde_json::Value)> = mine
                .iter()
                .map(|i| (i.seq, i.result.clone().unwrap()))
                .collect();
            let want: Vec<(u64, serde_json::Value)> =
                (0..TOKENS).map(|i| (i, json!([n, i]))).collect();
            assert_eq!(got, want, "{key}, child {n}");
        }
    }
    assert!(stream.finish().await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_fast_in_an_ordered_run_keeps_task_order_and_surfaces_the_failure() {
    let talker = TaskSpec::action(
        "t0",
        action("talk").run(|s: State, _, ctx| async move {
            for i in 0..10_000u64 {
                ctx.emit(i).await?;
                tokio::task::yield_now().await;
            }
            Ok((json!({}), s))
        }),
    );
    let boom = TaskSpec::action(
        "t1",
        action("boom").run(|_s: State, _, _| async move {
            Err::<(serde_json::Value, State), _>("the upstream said 500".into())
        }),
    );
    let tasks = vec![talker, boom, counter("t2", 5)];
    let (_h, mut stream) = Runtime::new().run(tasks, ordered().mailbox_capacity(4));
    let items = tokio::time::timeout(BOUND, collect(&mut stream))
        .await
        .expect("the run ends");
    // Task order, each task's items numbered in order, one terminal per
    // task at the end of its block.
    let indices: Vec<u64> = items.iter().map(|i| i.task_index).collect();
    assert!(indices.is_sorted(), "{indices:?}");
    for t in 0..3 {
        let mine: Vec<&StreamItem> = items.iter().filter(|i| i.task_index == t).collect();
        let seqs: Vec<u64> = mine.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, (0..mine.len() as u64).collect::<Vec<_>>(), "task {t}");
        let terminals = mine.iter().filter(|i| i.kind.is_terminal()).count();
        assert_eq!(terminals, 1, "task {t}");
        assert!(mine.last().unwrap().kind.is_terminal(), "task {t}");
    }
    let t0 = items.iter().rfind(|i| i.task_index == 0).unwrap();
    assert_eq!(
        t0.kind,
        ItemKind::Cancelled,
        "t0 is cancelled by t1's failure"
    );
    assert_eq!(t0.cancel_reason(), Some(CancelReason::FailFast));
    let t1 = items.iter().find(|i| i.task_index == 1).unwrap();
    assert_eq!(t1.kind, ItemKind::Failed);
    let error = stream.finish().await.unwrap_err();
    assert!(
        matches!(error, RunError::TaskFailed { ref task_key, .. } if task_key == "t1"),
        "{error:?}"
    );
}
