//! Run with `cargo run -p tributary-examples --example sync_blocking`.
//!
//! Shows the blocking facade: a plain synchronous `main` (no async, no
//! `#[tokio::main]`) runs tasks in parallel and iterates their items, the
//! way `reqwest::blocking` serves sync programs.
use serde_json::json;
use tributary::blocking::BlockingRuntime;
use tributary::{Graph, ItemKind, RunConfig, State, TaskSource, TaskSpec, action};

fn main() -> anyhow::Result<()> {
    let words = Graph::single(
        action("count_words")
            .reads(["text"])
            .writes(["words"])
            .run_blocking(|s: State, _| {
                let text: String = s.get_as("text")?;
                let words = text.split_whitespace().count();
                Ok((json!({ "words": words }), s.set("words", words)))
            }),
    );
    let texts = [
        "all rivers run to the sea",
        "yet the sea is not full",
        "unto the place from whence the rivers come",
    ];
    let tasks = texts.into_iter().enumerate().map(move |(i, t)| {
        TaskSpec::new(format!("text-{i}"), words.clone()).state(State::new().set("text", t))
    });

    let runtime = BlockingRuntime::new()?;
    let mut total = 0;
    for item in runtime.run(TaskSource::iter(tasks), RunConfig::new()) {
        if item.kind == ItemKind::Final {
            let n = item
                .result
                .as_ref()
                .and_then(|r| r["words"].as_u64())
                .unwrap_or(0);
            println!("{}: {n} words", item.task_key);
            total += n;
        }
    }
    println!("total: {total} words");
    anyhow::ensure!(total == 20, "6 + 6 + 8 words");
    Ok(())
}
