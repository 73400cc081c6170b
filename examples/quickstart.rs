//! Run with `cargo run -p tributary-examples --example quickstart`.
//!
//! Shows one application: a graph of three actions over a JSON state, the
//! last of which streams its tokens live through `stream_result`, with a
//! checkpoint after every step.
use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;
use tributary::{Application, Graph, InMemoryPersister, RunOptions, State, action, default, when};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let graph = Graph::builder()
        .action(action("plan").reads(["topic"]).writes(["outline"]).run(
            |s: State, _, _| async move {
                let topic: String = s.get_as("topic")?;
                let outline = vec![format!("why {topic}"), format!("how {topic}")];
                Ok((
                    json!({ "sections": outline.len() }),
                    s.set("outline", json!(outline)),
                ))
            },
        ))
        .action(
            action("research")
                .reads(["outline"])
                .writes(["notes", "rounds"])
                .run(|s: State, _, _| async move {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    let s = s.increment("rounds", 1)?.append("notes", "a finding")?;
                    Ok((json!({}), s))
                }),
        )
        .action(
            action("write")
                .reads(["outline", "notes"])
                .writes(["report"])
                .run(|s: State, _, ctx| async move {
                    let outline: Vec<String> = s.get_as("outline")?;
                    let mut report = String::new();
                    for section in &outline {
                        for word in section.split(' ') {
                            tokio::time::sleep(std::time::Duration::from_millis(30)).await;
                            ctx.emit(format!("{word} ")).await?;
                            report.push_str(word);
                            report.push(' ');
                        }
                    }
                    Ok((
                        json!({ "words": report.split_whitespace().count() }),
                        s.set("report", report.trim()),
                    ))
                }),
        )
        .transition("plan", "research", default())
        .transition("research", "write", when("rounds", 2))
        .transition("research", "research", default())
        .entrypoint("plan")
        .build()?;

    let persister = Arc::new(InMemoryPersister::new());
    let mut app = Application::builder(graph)
        .app_id("quickstart")
        .state(State::new().set("topic", "actors"))
        .persister(persister.clone())
        .build()
        .await?;

    print!("streaming: ");
    let mut stream = app.stream_result(RunOptions::after(["write"])).await?;
    while let Some(token) = stream.next().await {
        print!("{}", token.as_str().unwrap_or_default());
        std::io::stdout().flush()?;
    }
    let outcome = stream.get().await?;
    println!();
    println!("result: {}", outcome.result.unwrap_or_default());
    println!(
        "report: {}",
        outcome.state.get("report").unwrap_or(&json!(null))
    );
    for cp in persister.history("quickstart") {
        println!(
            "checkpoint {} {:<8} {}",
            cp.sequence_id,
            cp.action,
            cp.status.as_str()
        );
    }
    Ok(())
}
