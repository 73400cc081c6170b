//! The workloads, written once for tributary and once for bare tokio.
//!
//! The bare-tokio versions are what a careful user would write by hand: one
//! task per subgraph in a `JoinSet`, items over a bounded `mpsc` to a
//! consumer that reduces them. They do the same steps and send the same
//! number of items, with a payload of the same JSON.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tributary::{
    Application, Graph, ItemKind, ParallelAction, RunConfig, RunOptions, Runtime, State, Subgraph,
    TaskSource, TaskSpec, action, default,
};

/// Capacity of the bare baselines' channel: the runtime's default mailbox.
pub(crate) const CHANNEL: usize = 256;

/// Two actions `a -> b`, each adding one to `n` (after awaiting `io`).
pub(crate) fn two_steps(io: Option<Duration>) -> Graph {
    let step = |name: &str| {
        action(name)
            .reads(["n"])
            .writes(["n"])
            .run(move |s: State, _, _| async move {
                if let Some(d) = io {
                    tokio::time::sleep(d).await;
                }
                let n: i64 = s.get_as("n")?;
                Ok((json!({ "n": n + 1 }), s.set("n", n + 1)))
            })
    };
    Graph::builder()
        .action(step("a"))
        .action(step("b"))
        .transition("a", "b", default())
        .entrypoint("a")
        .build()
        .expect("a valid graph")
}

/// What the bare baselines send: a task's index, the item's kind and its
/// JSON result.
#[derive(Debug)]
pub(crate) struct BareItem {
    pub(crate) index: u64,
    pub(crate) seq: u64,
    pub(crate) last: bool,
    pub(crate) value: Value,
}

/// The reduction of a map run: the sum of final `n`s and the node items.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Reduced {
    pub(crate) sum: i64,
    pub(crate) nodes: u64,
    pub(crate) finals: u64,
}

/// The expected reduction of `n` subgraphs of [`two_steps`] started at `i`.
pub(crate) fn expected(n: usize) -> Reduced {
    let n = n as i64;
    Reduced {
        sum: n * (n - 1) / 2 + 2 * n,
        nodes: n as u64,
        finals: n as u64,
    }
}

/// Map over `n` states with tributary: a standalone run of `n` tasks whose
/// items the consumer folds.
pub(crate) async fn tributary_map(rt: &Runtime, graph: &Graph, n: usize) -> Reduced {
    let g = graph.clone();
    let tasks = (0..n).map(move |i| {
        TaskSpec::new(i.to_string(), g.clone()).state(State::new().set("n", i as i64))
    });
    let (_handle, mut stream) = rt.run(TaskSource::iter(tasks), RunConfig::new());
    let mut r = Reduced::default();
    while let Some(item) = stream.next().await {
        match item.kind {
            ItemKind::NodeComplete => r.nodes += 1,
            ItemKind::Final => {
                r.finals += 1;
                r.sum += item
                    .result
                    .as_ref()
                    .and_then(|v| v["n"].as_i64())
                    .unwrap_or(0);
            }
            kind => panic!("unexpected {kind:?}: {:?}", item.error),
        }
    }
    r
}

/// Map over `n` states with tributary inside a parent application: one
/// `ParallelAction::map_states` whose fold sums the children's final `n`.
pub(crate) async fn tributary_map_states(graph: &Graph, n: usize) -> Reduced {
    let map = ParallelAction::map_states("map", Subgraph::new(graph.clone()), |s: &State, _| {
        let n: usize = s.get_as("count")?;
        Ok((0..n).map(|i| State::new().set("n", i as i64)))
    })
    .reads(["count"])
    .writes(["sum"])
    .fold(|s, outcome| {
        let n = outcome
            .state()
            .and_then(|st| st.get("n"))
            .and_then(Value::as_i64);
        Ok(s.increment("sum", n.unwrap_or(0))?)
    })
    .build();
    let mut app = Application::builder(Graph::single(map))
        .state(State::new().set("count", n).set("sum", 0))
        .build()
        .await
        .expect("the parent builds");
    let out = app.run(RunOptions::new()).await.expect("the parent runs");
    let result = out.result.unwrap_or_default();
    Reduced {
        sum: out.state.get("sum").and_then(Value::as_i64).unwrap_or(0),
        nodes: result["completed"].as_u64().unwrap_or(0),
        finals: result["completed"].as_u64().unwrap_or(0),
    }
}

/// The same map by hand: one task per subgraph, two items each over a
/// bounded channel, reduced by the consumer.
pub(crate) async fn bare_map(n: usize, io: Option<Duration>) -> Reduced {
    let (tx, mut rx) = mpsc::channel::<BareItem>(CHANNEL);
    let spawner = tokio::spawn(async move {
        let mut set = JoinSet::new();
        for i in 0..n {
            let tx = tx.clone();
            set.spawn(async move {
                let mut v = i as i64;
                for (seq, last) in [(0, false), (1, true)] {
                    if let Some(d) = io {
                        tokio::time::sleep(d).await;
                    }
                    v += 1;
                    let item = BareItem {
                        index: i as u64,
                        seq,
                        last,
                        value: json!({ "n": v }),
                    };
                    if tx.send(item).await.is_err() {
                        return;
                    }
                }
            });
        }
        drop(tx);
        while set.join_next().await.is_some() {}
    });
    let mut r = Reduced::default();
    while let Some(item) = rx.recv().await {
        std::hint::black_box((item.index, item.seq));
        if item.last {
            r.finals += 1;
            r.sum += item.value["n"].as_i64().unwrap_or(0);
        } else {
            r.nodes += 1;
        }
    }
    spawner.await.expect("the spawner finishes");
    r
}

/// A subgraph of one action that emits `k` tokens.
pub(crate) fn emitter(k: u64) -> Graph {
    Graph::single(action("stream").run(move |s: State, _, ctx| async move {
        for i in 0..k {
            ctx.emit(i).await?;
        }
        Ok((json!({}), s))
    }))
}

/// `m` producers of `k` items and a final each over one raw channel; returns
/// the items received.
pub(crate) async fn raw_stream(m: usize, k: u64) -> u64 {
    let (tx, mut rx) = mpsc::channel::<(Arc<str>, BareItem)>(CHANNEL);
    let mut set = JoinSet::new();
    for i in 0..m {
        let tx = tx.clone();
        let key: Arc<str> = Arc::from(i.to_string());
        set.spawn(async move {
            for seq in 0..=k {
                let item = BareItem {
                    index: i as u64,
                    seq,
                    last: seq == k,
                    value: json!(seq),
                };
                if tx.send((Arc::clone(&key), item)).await.is_err() {
                    return;
                }
            }
        });
    }
    drop(tx);
    let mut received = 0;
    while let Some(item) = rx.recv().await {
        std::hint::black_box(item);
        received += 1;
    }
    while set.join_next().await.is_some() {}
    received
}
