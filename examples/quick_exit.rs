//! Run with `cargo run -p tributary-examples --example quick_exit`.
//!
//! Shows the `QuickExit` completion policy: the same question goes to four
//! simulated models with different (seeded, deterministic) latencies; their
//! tokens stream in live, the first complete answer wins, and the other
//! models are cancelled mid-answer and report `Cancelled`.
use std::time::Duration;

use serde_json::json;
use tributary::{Graph, ItemKind, QuickExit, RunConfig, Runtime, State, TaskSpec, action};
use tributary_examples::Rng;

/// A "model" answers word by word; `ms_per_token` is its speed.
fn model(ms_per_token: (u64, u64)) -> Graph {
    Graph::single(
        action("answer")
            .reads(["question", "model"])
            .writes(["answer"])
            .run(move |s: State, _, ctx| async move {
                let model: String = s.get_as("model")?;
                let mut rng = Rng::from_str_seed(&model);
                let words = ["rivers", "reach", "the", "sea", "by", "gravity"];
                let mut answer = Vec::new();
                for word in words {
                    tokio::time::sleep(rng.latency(ms_per_token.0, ms_per_token.1)).await;
                    ctx.emit(word).await?;
                    answer.push(word);
                }
                let answer = answer.join(" ");
                Ok((
                    json!({ "model": model, "answer": answer }),
                    s.set("answer", answer),
                ))
            }),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let models = [
        ("large", (90, 140)),
        ("medium", (40, 70)),
        ("small", (10, 25)),
        ("remote", (60, 200)),
    ];
    let tasks: Vec<TaskSpec> = models
        .iter()
        .map(|(name, speed)| {
            TaskSpec::new(*name, model(*speed)).state(
                State::new()
                    .set("model", *name)
                    .set("question", "why do rivers flow?"),
            )
        })
        .collect();

    let started = tokio::time::Instant::now();
    let (_handle, mut stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
    let mut winner = None;
    let mut cancelled = Vec::new();
    while let Some(item) = stream.next().await {
        let at = started.elapsed().as_millis();
        match item.kind {
            ItemKind::Token => println!(
                "{at:>5} ms  {:<7} {}",
                item.task_key,
                item.result.unwrap_or_default()
            ),
            ItemKind::Final => {
                println!(
                    "{at:>5} ms  {:<7} FINAL {}",
                    item.task_key,
                    item.result.unwrap_or_default()
                );
                winner = Some(item.task_key.to_string());
            }
            ItemKind::Cancelled => {
                println!(
                    "{at:>5} ms  {:<7} cancelled ({})",
                    item.task_key,
                    item.cancel_reason()
                        .map(|r| r.to_string())
                        .unwrap_or_default()
                );
                cancelled.push(item.task_key.to_string());
            }
            _ => {}
        }
    }
    let winner = winner.ok_or_else(|| anyhow::anyhow!("no model answered"))?;
    println!("winner: {winner}; cancelled: {}", cancelled.join(", "));
    anyhow::ensure!(winner == "small", "the fastest model should win");
    anyhow::ensure!(cancelled.len() == 3, "every other model is cancelled");
    tokio::time::sleep(Duration::from_millis(1)).await;
    Ok(())
}
