//! The voice search flow as a durable workflow over registered functions:
//! speech to text, then question answering or search, then text to speech.
//! Each `ctx.call` is a journaled step; the search function fails once and
//! its call retries.
//!
//! The functions are registered by name with a `Functions` registry and
//! run in this process. A second start of the same query id returns the
//! stored answer without calling anything.
//!
//! With `--cluster`, the functions run on a cluster worker instead
//! (`Graphs::functions`, in this process over the in-memory broker; a
//! deployment uses Redis or NATS and worker processes), and each call goes
//! there through `ClusterInvoke`: the workflow does not change.
//!
//! Run with `cargo run -p tributary-examples --example voice_search [-- --cluster]`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary::BoxError;
use tributary::cluster::{ClusterInvoke, ClusterRuntime, Graphs, MemoryBroker, Worker};
use tributary::durable::{
    DurableExt, Functions, MemoryJournal, StepPolicy, WorkflowContext, Workflows,
};

type Calls = Arc<Mutex<HashMap<&'static str, u32>>>;

fn called(calls: &Calls, name: &'static str) {
    *calls.lock().unwrap().entry(name).or_default() += 1;
}

/// Four simulated services, registered by name.
fn services(calls: Calls) -> Functions {
    let functions = Functions::new();
    let c = calls.clone();
    functions.register("speech_to_text", move |audio: String| {
        let c = c.clone();
        async move {
            called(&c, "speech_to_text");
            Ok::<_, BoxError>(audio.trim_start_matches("<audio>").to_owned())
        }
    });
    let c = calls.clone();
    functions.register("question_and_answer", move |text: String| {
        let c = c.clone();
        async move {
            called(&c, "question_and_answer");
            Ok::<_, BoxError>(format!("answer to '{text}': the Amazon"))
        }
    });
    let (c, was_down) = (calls.clone(), Arc::new(AtomicBool::new(false)));
    functions.register("search", move |text: String| {
        let (c, was_down) = (c.clone(), was_down.clone());
        async move {
            called(&c, "search");
            if !was_down.swap(true, Ordering::SeqCst) {
                return Err("search index is reloading".into());
            }
            Ok::<_, BoxError>(vec![format!("top result for '{text}'")])
        }
    });
    let c = calls;
    functions.register("text_to_speech", move |text: String| {
        let c = c.clone();
        async move {
            called(&c, "text_to_speech");
            Ok::<_, BoxError>(format!("<speech>{text}"))
        }
    });
    functions
}

async fn voice_search(ctx: WorkflowContext, audio: String) -> Result<String, BoxError> {
    let text: String = ctx.call("speech_to_text", audio).await?;
    if text.contains("what") {
        return Ok(ctx.call("question_and_answer", text).await?);
    }
    let retry = StepPolicy::new()
        .retries(3)
        .backoff(Duration::from_millis(10), Duration::from_millis(100));
    let found: Vec<String> = ctx.call("search", text).policy(retry).await?;
    Ok(ctx.call("text_to_speech", &found[0]).await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let calls = Calls::default();
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    let mut fleet = None;
    if std::env::args().any(|a| a == "--cluster") {
        // The worker serves the functions; the engine calls them there.
        let broker = MemoryBroker::new();
        let graphs = Graphs::new().functions(services(calls.clone()))?;
        let worker = Worker::builder(broker.clone(), graphs).build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let run = tokio::spawn(worker.run(async move {
            let _ = stopped.await;
        }));
        fleet = Some((stop, run));
        workflows.set_functions(ClusterInvoke::new(ClusterRuntime::new(broker)));
        println!("functions run on a cluster worker");
    } else {
        workflows.set_functions(services(calls.clone()));
    }
    workflows.register("voice_search", voice_search);

    for (id, audio) in [
        ("query-1", "<audio>rivers that flow north"),
        ("query-2", "<audio>what is the longest river"),
        // The same id again: the stored answer, no function called.
        ("query-1", "<audio>rivers that flow north"),
    ] {
        let handle = workflows.start("voice_search", id, audio).await?;
        println!("{id}: {}", handle.result::<String>().await?);
    }

    if let Some((stop, run)) = fleet {
        let _ = stop.send(());
        let stats = run.await??;
        println!("the worker ran {} call(s)", stats.completed());
    }
    let calls = calls.lock().unwrap().clone();
    let mut listed: Vec<_> = calls.iter().collect();
    listed.sort();
    println!("function calls: {listed:?}");
    assert_eq!(calls["speech_to_text"], 2);
    assert_eq!(calls["search"], 2, "one failure, one retry");
    assert_eq!(calls["text_to_speech"], 1);
    assert_eq!(calls["question_and_answer"], 1);
    Ok(())
}
