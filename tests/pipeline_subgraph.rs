//! A node that runs a tributary subgraph per item on a shared runtime and
//! budget, and the live metrics of a run.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use tributary::pipeline::{
    ErrorPolicy, Input, Node, NodeContext, Pipeline, SubgraphError, iter_source, map, processor,
    subgraph,
};
use tributary::{Graph, Runtime, State, TaskSpec, action, default};

use crate::pipeline_support::Collected;
use crate::support::Live;

/// split -> count: counts the words of `text`; fails on the word "boom".
/// Records how many actions run at once.
fn word_count(live: Arc<AtomicUsize>, peak: Arc<AtomicUsize>, guards: Live) -> Graph {
    let (l, p, g) = (Arc::clone(&live), Arc::clone(&peak), guards.clone());
    let split = action("split")
        .reads(["text"])
        .writes(["words"])
        .run(move |s: State, _, _| {
            let (live, peak, guards) = (Arc::clone(&l), Arc::clone(&p), g.clone());
            async move {
                let _guard = guards.guard();
                let now = live.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(10)).await;
                live.fetch_sub(1, Ordering::SeqCst);
                let text: String = s.get_as("text")?;
                if text.contains("boom") {
                    return Err("the text went boom".into());
                }
                let words: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
                Ok((
                    json!({ "split": words.len() }),
                    s.set("words", json!(words)),
                ))
            }
        });
    let count =
        action("count")
            .reads(["words"])
            .writes(["count"])
            .run(|s: State, _, _| async move {
                let n = s.get("words").and_then(Value::as_array).map_or(0, Vec::len);
                Ok((json!({ "words": n }), s.set("count", n)))
            });
    Graph::builder()
        .action(split)
        .action(count)
        .transition("split", "count", default())
        .entrypoint("split")
        .build()
        .unwrap()
}

fn texts() -> Vec<Value> {
    (0..12)
        .map(|i| json!(vec!["word"; i + 1].join(" ")))
        .collect()
}

fn stage(rt: &Runtime, graph: Graph) -> tributary::pipeline::SubgraphProcessor<Value> {
    subgraph(
        rt.clone(),
        move |input: Input<Value>, ctx: &NodeContext| {
            let text = input.into_single().ok_or("one text per call")?;
            Ok(TaskSpec::new(format!("chunk-{}", ctx.seq()), graph.clone())
                .state(State::new().set("text", text)))
        },
        |result, state| {
            Ok(vec![
                json!({ "result": result, "count": state.get("count") }),
            ])
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subgraph_per_item_runs_on_the_shared_runtime_budget() {
    let (live, peak, guards) = (
        Arc::default(),
        Arc::new(AtomicUsize::new(0)),
        Live::default(),
    );
    let rt = Runtime::builder().max_concurrency(2).build();
    let out = Collected::new();
    let summary = Pipeline::builder()
        .source("texts", iter_source(texts()))
        .node(
            "agent",
            Node::processor(stage(&rt, word_count(live, Arc::clone(&peak), guards)))
                .concurrency(4)
                .keep_order(true),
        )
        .processor("out", out.sink())
        .edge("texts", "agent")
        .edge("agent", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let want: Vec<Value> = (1..=12)
        .map(|n| json!({ "result": { "words": n }, "count": n }))
        .collect();
    assert_eq!(out.items(), want);
    // Four calls in flight, but the runtime's budget of two holds.
    assert_eq!(peak.load(Ordering::SeqCst), 2);
    assert_eq!(summary.node("agent").unwrap().items_out, 12);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_subgraph_is_the_inputs_error_under_the_nodes_policy() {
    let rt = Runtime::new();
    let graph = word_count(Arc::default(), Arc::default(), Live::default());
    let mut pipeline = Pipeline::builder()
        .source(
            "texts",
            iter_source(vec![json!("a b"), json!("a boom"), json!("c")]),
        )
        .node(
            "agent",
            Node::processor(stage(&rt, graph)).on_error(ErrorPolicy::DeadLetter),
        )
        .processor("out", Collected::new().sink())
        .edge("texts", "agent")
        .edge("agent", "out")
        .build()
        .unwrap();
    let mut letters = pipeline.dead_letters();
    let summary = pipeline.run().await.unwrap();
    let letter = letters.recv().await.expect("one dead letter");
    assert_eq!(letter.input, Input::One(json!("a boom")));
    let err = letter
        .error
        .downcast_ref::<SubgraphError>()
        .expect("a subgraph error");
    assert!(
        matches!(err, SubgraphError::Failed { node, task, error }
            if node == "agent" && task == "chunk-1"
                && error.kind == tributary::TaskErrorKind::ActionFailed),
        "{err:?}"
    );
    assert!(letters.recv().await.is_none());
    let agent = summary.node("agent").unwrap();
    assert_eq!((agent.items_out, agent.dead_lettered), (2, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_pipeline_cancels_the_subgraphs_in_flight() {
    let guards = Live::default();
    let rt = Runtime::new();
    let g = guards.clone();
    let graph = Graph::single(action("hold").run(move |s: State, _, _| {
        let g = g.clone();
        async move {
            let _guard = g.guard();
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Ok((json!({}), s))
        }
    }));
    let run = Pipeline::builder()
        .source("texts", iter_source(texts()))
        .node("agent", Node::processor(stage(&rt, graph)).concurrency(3))
        .edge("texts", "agent")
        .build()
        .unwrap()
        .start();
    let handle = run.handle();
    tokio::time::timeout(Duration::from_secs(10), async {
        while guards.now() < 3 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("three subgraphs running");
    handle.cancel().await;
    tokio::time::timeout(Duration::from_secs(10), async {
        while guards.now() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the subgraphs were cancelled");
    let err = run.wait().await.unwrap_err();
    let agent = err.summary().node("agent").unwrap();
    // Three in flight, the rest of the twelve waiting on the edge.
    assert_eq!(agent.dropped, 12, "{agent:?}");
}

#[tokio::test(start_paused = true)]
async fn metrics_report_counts_rates_and_edges_live_and_at_the_end() {
    let slow = processor(|input: Input<u64>, _ctx: NodeContext| async move {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Ok::<_, std::io::Error>(input.into_items())
    });
    let run = Pipeline::builder()
        .source("src", iter_source(0..500u64))
        .processor(
            "double",
            map(|x: u64| async move { Ok::<_, std::io::Error>(x * 2) }),
        )
        .processor("slow", slow)
        .edge_with_capacity("src", "double", 8)
        .edge_with_capacity("double", "slow", 4)
        .metrics_interval(Duration::from_millis(20))
        .build()
        .unwrap()
        .start();
    let mut metrics = run.handle().metrics();
    let mut snapshots = Vec::new();
    while metrics.changed().await.is_ok() {
        let m = metrics.borrow_and_update().clone();
        let done = m.finished;
        snapshots.push(m);
        if done {
            break;
        }
    }
    let summary = run.wait().await.unwrap();
    let last = snapshots.last().unwrap();
    assert!(last.finished);
    assert_eq!(last.nodes, summary.nodes);
    let slow_m = summary.node("slow").unwrap();
    assert_eq!((slow_m.items_in, slow_m.items_out), (500, 500));
    assert_eq!(summary.node("double").unwrap().items_out, 500);
    let edge = last.edge("double", "slow").unwrap();
    assert_eq!((edge.sent, edge.depth, edge.capacity), (500, 0, 4));
    // While running: the slow node's rate is live and at most one item per
    // millisecond; the edge into it is full.
    let live: Vec<_> = snapshots.iter().filter(|m| !m.finished).collect();
    assert!(live.len() >= 10, "{} snapshots", live.len());
    for m in &live[1..] {
        let s = m.node("slow").unwrap();
        assert!(
            s.in_per_sec > 0.0 && s.in_per_sec <= 1_000.0 * 1.01,
            "{s:?}"
        );
        assert!(s.in_flight <= 1);
        assert!(!s.ended);
    }
    assert!(
        live.iter()
            .any(|m| m.edge("double", "slow").unwrap().depth == 4)
    );
    assert!(summary.nodes.iter().all(|n| n.ended));
}
