//! Address a nested child by its path: two documents are translated
//! paragraph by paragraph (a parallel action per document); the consumer
//! sees every paragraph's items as ordinary items with their path, lists
//! the live task tree, pauses one paragraph and cancels another by path,
//! while the run goes on. A shared "translation client" reaches every
//! paragraph through `RunConfig::extension`.
//!
//! Run with `cargo run -p tributary-examples --example nested_control`.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tributary::{
    ItemKind, ParallelAction, RunConfig, Runtime, State, Subgraph, TaskPath, TaskSpec, action,
};

/// A stand-in for an HTTP client: shared by every task, never cloned.
#[derive(Debug, Default)]
struct Translator {
    calls: AtomicUsize,
}

impl Translator {
    async fn translate(&self, word: &str) -> String {
        self.calls.fetch_add(1, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        word.chars().rev().collect()
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // One paragraph: translate word by word, streaming each word.
    let paragraph = Subgraph::action(action("translate").reads(["text"]).writes(["text"]).run(
        |s: State, _, ctx| async move {
            let client = Arc::clone(ctx.extension::<Arc<Translator>>().expect("set on the run"));
            let text: String = s.get_as("text")?;
            let mut out = Vec::new();
            for word in text.split_whitespace() {
                let word = client.translate(word).await;
                ctx.emit(word.clone()).await?;
                out.push(word);
            }
            Ok((json!({}), s.set("text", out.join(" "))))
        },
    ));
    // One document: its paragraphs in parallel, joined back in order.
    let document = ParallelAction::map_states("paragraphs", paragraph, |s: &State, _| {
        let paragraphs: Vec<String> = s.get_as("paragraphs")?;
        Ok(paragraphs
            .into_iter()
            .map(|p| State::new().set("text", p))
            .collect::<Vec<_>>())
    })
    .reads(["paragraphs"])
    .writes(["translated"])
    .reduce(|s, outcomes| {
        let done: Vec<_> = outcomes
            .iter()
            .map(|o| o.state().and_then(|st| st.get("text").cloned()))
            .collect();
        Ok(s.set("translated", json!(done)))
    })
    .build();
    let text = |ps: &[&str]| State::new().set("paragraphs", json!(ps));
    let tasks = vec![
        TaskSpec::action("doc-a", document.clone()).state(text(&[
            "rivers flow downhill",
            "the sea is wide",
            "rain falls",
        ])),
        TaskSpec::action("doc-b", document).state(text(&[
            "one two",
            "three four five",
            "six seven eight nine ten eleven twelve",
            "thirteen",
        ])),
    ];
    let client = Arc::new(Translator::default());
    let config = RunConfig::new().extension(Arc::clone(&client));
    let (handle, mut stream) = Runtime::new().run(tasks, config);

    let slow = TaskPath::from(["doc-b", "2"]);
    let held = TaskPath::from(["doc-a", "1"]);
    let mut words = 0;
    let mut acted = false;
    while let Some(item) = stream.next().await {
        match item.kind {
            ItemKind::Token => {
                words += 1;
                println!(
                    "{:<10} {}",
                    item.path.to_string(),
                    item.result.unwrap_or_default()
                );
            }
            ItemKind::Final | ItemKind::Failed | ItemKind::Cancelled => {
                let how = match item.kind {
                    ItemKind::Final => "done".to_owned(),
                    _ => item.error.map(|e| e.message).unwrap_or_default(),
                };
                println!("{:<10} -- {how}", item.path.to_string());
            }
            ItemKind::NodeComplete => {}
        }
        if !acted && words == 3 {
            acted = true;
            println!("live tasks:");
            for task in handle.tasks() {
                println!("  {:<10} {:?}", task.path.to_string(), task.status);
            }
            // Cancel the long paragraph and hold another for a moment, by path.
            handle.cancel_task(slow.clone())?;
            handle.pause_task(held.clone())?;
            println!("cancelled {slow}, paused {held}");
            let handle = handle.clone();
            let held = held.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                let _ = handle.resume_task(held.clone());
                println!("resumed {held}");
            });
        }
    }
    let report = stream.finish().await?;
    println!(
        "{} tasks, {} completed, {} cancelled; {} words translated by one shared client",
        report.progress.total,
        report.progress.completed,
        report.progress.cancelled,
        client.calls.load(Ordering::Relaxed),
    );
    anyhow::ensure!(report.progress.cancelled == 1, "only {slow} was cancelled");
    println!(
        "cancelled doc-b/2; translated {} of 7 paragraphs",
        report.progress.completed - 2
    );
    Ok(())
}
