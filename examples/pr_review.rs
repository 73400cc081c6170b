//! Run with `cargo run -p tributary-examples --example pr_review`.
//!
//! Shows nested parallel actions: a pull-request review bot maps over the
//! files of a PR, and the review of each file maps over that file's comments
//! (a parallel action inside a subgraph). Each comment's reply streams its
//! tokens; the parent reduces everything, in file order, into one review,
//! on a runtime limited to 3 tasks at once (nesting never deadlocks: a task
//! waiting on its children gives its slot back).
use std::time::Duration;

use serde_json::{Value, json};
use tributary::{
    Graph, ItemKind, ParallelAction, RunConfig, Runtime, State, Subgraph, TaskSpec, action, default,
};
use tributary_examples::Rng;

/// Reply to one comment, token by token.
fn reply() -> Subgraph {
    Subgraph::action(action("reply").reads(["comment"]).writes(["reply"]).run(
        |s: State, _, ctx| async move {
            let comment: String = s.get_as("comment")?;
            let mut rng = Rng::from_str_seed(&comment);
            let words = ["good", "catch,", "fixed", "in", "the", "next", "push"];
            for w in words {
                tokio::time::sleep(rng.latency(2, 12)).await;
                ctx.emit(w).await?;
            }
            Ok((
                json!({}),
                s.set("reply", format!("re: {comment}: {}", words.join(" "))),
            ))
        },
    ))
}

/// Review one file: read it, then reply to each of its comments in parallel.
fn review_file() -> Subgraph {
    let replies = ParallelAction::map_states("reply_all", reply(), |s: &State, _| {
        let comments: Vec<String> = s.get_as("comments")?;
        Ok(comments.into_iter().map(|c| State::new().set("comment", c)))
    })
    .reads(["comments"])
    .writes(["replies"])
    .reduce(|s, outcomes| {
        let replies: Vec<Value> = outcomes
            .iter()
            .filter_map(|o| o.state()?.get("reply").cloned())
            .collect();
        Ok(s.set("replies", Value::Array(replies)))
    })
    .build();
    let graph = Graph::builder()
        .action(
            action("read")
                .reads(["file"])
                .run(|s: State, _, _| async move {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    Ok((json!({}), s))
                }),
        )
        .action(replies)
        .transition("read", "reply_all", default())
        .entrypoint("read")
        .build()
        .expect("a valid graph");
    Subgraph::new(graph)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let review = ParallelAction::map_states("review_files", review_file(), |s: &State, _| {
        let files: Vec<Value> = s.get_as("files")?;
        Ok(files.into_iter().map(|f| {
            State::new()
                .set("file", f["path"].clone())
                .set("comments", f["comments"].clone())
        }))
    })
    .reads(["files"])
    .writes(["review"])
    .reduce(|s, outcomes| {
        let review: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                let st = o.state().expect("every file was reviewed");
                json!({ "file": st.get("file"), "replies": st.get("replies") })
            })
            .collect();
        Ok(s.set("review", Value::Array(review)))
    })
    .build();

    let pr = json!([
        { "path": "src/lib.rs", "comments": ["naming", "missing docs", "unwrap here"] },
        { "path": "src/merge.rs", "comments": ["off by one"] },
        { "path": "README.md", "comments": [] },
        { "path": "tests/zip.rs", "comments": ["flaky?", "use paused time"] },
    ]);
    // The bot itself is one task on a runtime of 3 slots.
    let runtime = Runtime::builder().max_concurrency(3).build();
    let bot = Graph::single(review);
    let task = TaskSpec::new("pr-42", bot).state(State::new().set("files", pr));
    let (_handle, mut stream) = runtime.run(vec![task], RunConfig::new());

    let mut tokens = 0;
    let mut final_state = None;
    while let Some(item) = stream.next().await {
        match item.kind {
            // Children's items arrive as ordinary items; their path says
            // where they come from: ["pr-42", file, comment] for a reply.
            ItemKind::Token if item.path.len() == 3 => tokens += 1,
            ItemKind::Final if !item.is_nested() => final_state = item.state_update,
            ItemKind::Failed => anyhow::bail!("review failed: {:?}", item.error),
            _ => {}
        }
    }
    let state = final_state.ok_or_else(|| anyhow::anyhow!("no final state"))?;
    let review = state.get("review").cloned().unwrap_or_default();
    println!("{}", serde_json::to_string_pretty(&review)?);
    println!("streamed {tokens} reply tokens live");
    anyhow::ensure!(tokens == 6 * 7, "six comments of seven tokens each");
    anyhow::ensure!(
        review[0]["file"] == "src/lib.rs" && review[3]["file"] == "tests/zip.rs",
        "file order"
    );
    anyhow::ensure!(
        runtime.available_slots() == Some(3),
        "every slot given back"
    );

    Ok(())
}
