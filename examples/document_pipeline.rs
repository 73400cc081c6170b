//! Run with `cargo run -p tributary-examples --example document_pipeline`.
//!
//! A processor pipeline over documents, printing every node's live rate:
//!
//! ```text
//! load ─> split ─┬─> agent (a subgraph per chunk, 4 at once) ─┐
//!                └─> meta ────────────────────────────────────┴─> zip ─> report
//! ```
//!
//! `load` reads documents (generated here), `split` cuts each into chunks,
//! `agent` runs a small tributary graph per chunk (a simulated model that
//! summarises, then a scorer) on the shared runtime, `meta` describes each
//! chunk, `zip` pairs each summary with its chunk's metadata (in order:
//! the agent keeps input order), and `report` folds the pairs into one line
//! per document.
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tributary::pipeline::{
    Input, Join, Node, NodeContext, Pipeline, iter_source, map, processor, sink, subgraph,
};
use tributary::{Graph, Runtime, State, TaskSpec, action, default};
use tributary_examples::Rng;

const DOCUMENTS: usize = 20;

/// Per document: chunks, words, score.
type Reports = BTreeMap<u64, (usize, usize, u64)>;
const WORDS: &[&str] = &[
    "rivers",
    "carry",
    "silt",
    "to",
    "the",
    "delta",
    "where",
    "cities",
    "grow",
    "on",
    "soft",
    "ground",
    "and",
    "engineers",
    "build",
    "levees",
];

/// Document `i`: a title and some sentences, deterministic per document.
fn document(i: usize) -> Value {
    let mut rng = Rng::new(i as u64 + 1);
    let sentences: Vec<String> = (0..6 + i % 5)
        .map(|_| {
            let n = 6 + rng.range(0, 6) as usize;
            (0..n)
                .map(|_| WORDS[rng.range(0, WORDS.len() as u64 - 1) as usize])
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    json!({ "doc": i, "title": format!("report {i}"), "text": sentences.join(". ") })
}

/// The agent: `summarise` (a simulated model, 15-40 ms per chunk) then
/// `score`.
fn agent() -> Graph {
    let summarise = action("summarise")
        .reads(["text", "key"])
        .writes(["summary"])
        .run(|s: State, _, _| async move {
            let key: String = s.get_as("key")?;
            tokio::time::sleep(Rng::from_str_seed(&key).latency(15, 40)).await;
            let text: String = s.get_as("text")?;
            let summary: Vec<&str> = text.split(' ').take(3).collect();
            let summary = summary.join(" ");
            Ok((json!({ "summary": summary }), s.set("summary", summary)))
        });
    let score =
        action("score")
            .reads(["text"])
            .writes(["score"])
            .run(|s: State, _, _| async move {
                let text: String = s.get_as("text")?;
                let score = text.matches("rivers").count();
                Ok((json!({ "score": score }), s.set("score", score)))
            });
    Graph::builder()
        .action(summarise)
        .action(score)
        .transition("summarise", "score", default())
        .entrypoint("summarise")
        .build()
        .expect("a valid graph")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let runtime = Runtime::new();
    let graph = agent();
    let reports: Arc<Mutex<Reports>> = Arc::default();
    let r = Arc::clone(&reports);

    let split = processor(|input: Input<Value>, _ctx: NodeContext| async move {
        let doc = input.into_single().unwrap_or_default();
        let chunks: Vec<Value> = doc["text"]
            .as_str()
            .unwrap_or_default()
            .split(". ")
            .enumerate()
            .map(|(j, text)| json!({ "doc": doc["doc"], "chunk": j, "text": text }))
            .collect();
        Ok::<_, anyhow::Error>(chunks)
    });
    let stage = subgraph(
        runtime.clone(),
        move |input: Input<Value>, _ctx: &NodeContext| {
            let chunk = input.into_single().ok_or("one chunk per call")?;
            let key = format!("doc{}-chunk{}", chunk["doc"], chunk["chunk"]);
            let state = State::new()
                .set("text", chunk["text"].clone())
                .set("key", key.clone());
            Ok(TaskSpec::new(key, graph.clone()).state(state))
        },
        |_result, state| {
            Ok(vec![
                json!({ "summary": state.get("summary"), "score": state.get("score") }),
            ])
        },
    );
    let meta = map(|chunk: Value| async move {
        let words = chunk["text"]
            .as_str()
            .unwrap_or_default()
            .split(' ')
            .count();
        Ok::<_, anyhow::Error>(
            json!({ "doc": chunk["doc"], "chunk": chunk["chunk"], "words": words }),
        )
    });
    let report = sink(move |input: Input<Value>, _ctx: NodeContext| {
        let r = Arc::clone(&r);
        async move {
            let Input::Zip(pair) = input else {
                anyhow::bail!("report expects (summary, metadata) pairs");
            };
            let (summary, meta) = (&pair[0], &pair[1]);
            let doc = meta["doc"].as_u64().unwrap_or_default();
            let mut reports = r.lock().expect("reports");
            let entry = reports.entry(doc).or_default();
            entry.0 += 1;
            entry.1 += meta["words"].as_u64().unwrap_or_default() as usize;
            entry.2 += summary["score"].as_u64().unwrap_or_default();
            Ok(())
        }
    });

    let pipeline = Pipeline::builder()
        .source("load", iter_source((0..DOCUMENTS).map(document)))
        .processor("split", split)
        .node(
            "agent",
            Node::processor(stage).concurrency(4).keep_order(true),
        )
        .processor("meta", meta)
        .node("report", Node::processor(report).join(Join::Zip))
        .edge("load", "split")
        .edge("split", "agent")
        .edge("split", "meta")
        .edge("agent", "report")
        .edge("meta", "report")
        .default_capacity(8)
        .metrics_interval(Duration::from_millis(200))
        .build()?;
    println!("{}", pipeline.to_mermaid());

    let run = pipeline.start();
    let mut metrics = run.handle().metrics();
    let printer = tokio::spawn(async move {
        while metrics.changed().await.is_ok() {
            let m = metrics.borrow_and_update().clone();
            let line: Vec<String> = m
                .nodes
                .iter()
                .map(|n| {
                    format!(
                        "{} {}→{} {:.0}/s{}",
                        n.name,
                        n.items_in,
                        n.items_out,
                        n.in_per_sec.max(n.out_per_sec),
                        if n.in_flight > 1 {
                            format!(" ({} in flight)", n.in_flight)
                        } else {
                            String::new()
                        }
                    )
                })
                .collect();
            println!("[{:>5.2}s] {}", m.elapsed.as_secs_f64(), line.join(" | "));
            if m.finished {
                break;
            }
        }
    });
    let summary = run.wait().await?;
    printer.await?;

    let chunks = summary.node("report").map_or(0, |n| n.items_in);
    println!(
        "document pipeline: {chunks} chunks from {DOCUMENTS} documents, each summary zipped with its metadata"
    );
    for (doc, (n, words, score)) in reports.lock().expect("reports").iter() {
        println!("doc {doc}: {n} chunks, {words} words, score {score}");
    }
    println!(
        "done in {:.2}s, nothing dropped: {}",
        summary.elapsed.as_secs_f64(),
        summary.dropped() == 0
    );
    Ok(())
}
