//! The seed's test graph (inp -> n1; n1 -> n2, n3; n2 -> n3, n4; n3 -> n4)
//! with exact outputs under both joins at n4, its Mermaid drawing, fan-out
//! by copy and round robin, and per-node concurrency with and without
//! order keeping.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tributary::pipeline::{
    FanOut, Input, Join, Node, NodeContext, Pipeline, PipelineBuilder, iter_source, map, processor,
};

use crate::pipeline_support::Collected;

const N: usize = 50;

fn inputs() -> Vec<String> {
    (0..N).map(|i| format!("Ab{i}-cD")).collect()
}

fn rev(s: &str) -> String {
    s.chars().rev().collect()
}

/// The seed's graph: n1 reverses, n2 upper-cases, n3 zips (n1, n2) and
/// lower-cases both, n4 is the sink with the given join.
fn seed_graph(n4_join: Join, sink: &Collected<String>) -> PipelineBuilder<String> {
    Pipeline::builder()
        .source("inp", iter_source(inputs()))
        .processor(
            "n1",
            map(|s: String| async move {
                // Some nodes yield, as the seed's coroutines sleep.
                tokio::task::yield_now().await;
                Ok::<_, std::io::Error>(rev(&s))
            }),
        )
        .processor(
            "n2",
            map(|s: String| async move { Ok::<_, std::io::Error>(s.to_uppercase()) }),
        )
        .node(
            "n3",
            Node::processor(processor(
                |input: Input<String>, _ctx: NodeContext| async move {
                    let Input::Zip(items) = input else {
                        return Err("n3 zips its inputs");
                    };
                    let lower: Vec<String> = items.iter().map(|s| s.to_lowercase()).collect();
                    Ok(vec![lower.join("+")])
                },
            ))
            .join(Join::Zip),
        )
        .node("n4", Node::processor(sink.sink()).join(n4_join))
        .edge("inp", "n1")
        .edge("n1", "n2")
        .edge("n1", "n3")
        .edge("n2", "n3")
        .edge("n2", "n4")
        .edge("n3", "n4")
        .default_capacity(2)
}

fn expected_n2() -> Vec<String> {
    inputs().iter().map(|s| rev(s).to_uppercase()).collect()
}

fn expected_n3() -> Vec<String> {
    inputs()
        .iter()
        .map(|s| {
            let r = rev(s).to_lowercase();
            format!("{r}+{r}")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_graph_merge_at_n4_gets_every_item_tagged_and_in_order_per_input() {
    let sink = Collected::new();
    let summary = seed_graph(Join::Merge, &sink)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let got = sink.take();
    assert_eq!(got.len(), 2 * N, "merge: one input per upstream item");
    let (mut from_n2, mut from_n3) = (Vec::new(), Vec::new());
    for input in got {
        match input {
            Input::Merge { from, item } if &*from == "n2" => from_n2.push(item),
            Input::Merge { from, item } if &*from == "n3" => from_n3.push(item),
            other => panic!("n4 got {other:?}"),
        }
    }
    assert_eq!(from_n2, expected_n2());
    assert_eq!(from_n3, expected_n3());
    let n4 = summary.node("n4").unwrap();
    assert_eq!((n4.items_in, n4.dropped, n4.unpaired), (2 * N as u64, 0, 0));
    let n3 = summary.node("n3").unwrap();
    assert_eq!((n3.items_in, n3.items_out), (N as u64, N as u64));
    assert!(summary.nodes.iter().all(|n| n.ended));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_graph_zip_at_n4_pairs_item_i_of_each_input() {
    let sink = Collected::new();
    let summary = seed_graph(Join::Zip, &sink)
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let want: Vec<Input<String>> = expected_n2()
        .into_iter()
        .zip(expected_n3())
        .map(|(a, b)| Input::Zip(vec![a, b]))
        .collect();
    assert_eq!(sink.take(), want);
    assert_eq!(summary.node("n4").unwrap().items_in, N as u64);
    assert_eq!(summary.dropped(), 0);
}

#[tokio::test]
async fn seed_graph_as_mermaid() {
    let sink = Collected::new();
    let p = seed_graph(Join::Merge, &sink).build().unwrap();
    assert_eq!(
        p.to_mermaid(),
        "flowchart LR\n\
         \x20   n0([\"inp\"])\n\
         \x20   n1[\"n1\"]\n\
         \x20   n2[\"n2\"]\n\
         \x20   n3[\"n3 · zip\"]\n\
         \x20   n4[[\"n4 · merge\"]]\n\
         \x20   n0 -->|2| n1\n\
         \x20   n1 -->|2| n2\n\
         \x20   n1 -->|2| n3\n\
         \x20   n2 -->|2| n3\n\
         \x20   n2 -->|2| n4\n\
         \x20   n3 -->|2| n4\n"
    );
}

#[tokio::test]
async fn fan_out_copies_to_every_downstream_node() {
    let (a, b) = (Collected::new(), Collected::new());
    Pipeline::builder()
        .source("inp", iter_source(0..20u32))
        .processor("a", a.sink())
        .processor("b", b.sink())
        .edge("inp", "a")
        .edge("inp", "b")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(a.items(), (0..20).collect::<Vec<_>>());
    assert_eq!(b.items(), (0..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn fan_out_round_robin_deals_items_in_turn() {
    let (a, b, c) = (Collected::new(), Collected::new(), Collected::new());
    let summary = Pipeline::builder()
        .node(
            "inp",
            Node::source(iter_source(0..30u32)).fan_out(FanOut::RoundRobin),
        )
        .processor("a", a.sink())
        .processor("b", b.sink())
        .processor("c", c.sink())
        .edge("inp", "a")
        .edge("inp", "b")
        .edge("inp", "c")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(a.items(), (0..30).step_by(3).collect::<Vec<_>>());
    assert_eq!(b.items(), (1..30).step_by(3).collect::<Vec<_>>());
    assert_eq!(c.items(), (2..30).step_by(3).collect::<Vec<_>>());
    assert_eq!(summary.node("inp").unwrap().items_out, 30);
}

/// A processor whose item i takes (10 - i % 10) ms, so later items finish
/// first; it records how many calls run at once.
fn slow_first(peak: Arc<AtomicUsize>, live: Arc<AtomicUsize>) -> Node<u64> {
    Node::processor(processor(move |input: Input<u64>, _ctx: NodeContext| {
        let (peak, live) = (Arc::clone(&peak), Arc::clone(&live));
        async move {
            let n = input.into_single().unwrap();
            let now = live.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(10 - n % 10)).await;
            live.fetch_sub(1, Ordering::SeqCst);
            Ok::<_, std::io::Error>(vec![n])
        }
    }))
}

#[tokio::test(start_paused = true)]
async fn concurrency_with_keep_order_emits_in_input_order() {
    let (peak, live) = (Arc::default(), Arc::default());
    let out = Collected::new();
    Pipeline::builder()
        .source("inp", iter_source(0..40u64))
        .node(
            "slow",
            slow_first(Arc::clone(&peak), live)
                .concurrency(4)
                .keep_order(true),
        )
        .processor("out", out.sink())
        .edge("inp", "slow")
        .edge("slow", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    assert_eq!(out.items(), (0..40).collect::<Vec<_>>());
    assert_eq!(peak.load(Ordering::SeqCst), 4, "four calls ran at once");
}

#[tokio::test(start_paused = true)]
async fn concurrency_without_keep_order_emits_in_completion_order() {
    let (peak, live) = (Arc::default(), Arc::default());
    let out = Collected::new();
    Pipeline::builder()
        .source("inp", iter_source(0..40u64))
        .node("slow", slow_first(Arc::clone(&peak), live).concurrency(4))
        .processor("out", out.sink())
        .edge("inp", "slow")
        .edge("slow", "out")
        .build()
        .unwrap()
        .run()
        .await
        .unwrap();
    let got = out.items();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());
    assert_ne!(got, sorted, "later, faster items overtake");
    assert_eq!(peak.load(Ordering::SeqCst), 4);
}
