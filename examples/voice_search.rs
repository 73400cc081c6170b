//! The voice search flow as a durable workflow: speech to text, then
//! question answering or search, then text to speech, each service call a
//! journaled step. The search service fails once and its step retries.
//!
//! The services are plain async functions here. Each call is a step, so a
//! crash between them repeats none that finished, and a second start of
//! the same query id returns the stored answer without calling anything.
//!
//! Run with `cargo run -p tributary-examples --example voice_search`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tributary::BoxError;
use tributary::durable::{DurableExt, MemoryJournal, StepPolicy, WorkflowContext, Workflows};

/// Three simulated services that count their calls.
#[derive(Default)]
struct Services {
    calls: Mutex<HashMap<&'static str, u32>>,
    search_was_down: AtomicBool,
}

impl Services {
    fn called(&self, name: &'static str) {
        *self.calls.lock().unwrap().entry(name).or_default() += 1;
    }

    async fn speech_to_text(&self, audio: &str) -> Result<String, BoxError> {
        self.called("speech_to_text");
        Ok(audio.trim_start_matches("<audio>").to_owned())
    }

    async fn question_and_answer(&self, text: &str) -> Result<String, BoxError> {
        self.called("question_and_answer");
        Ok(format!("answer to '{text}': the Amazon"))
    }

    async fn search(&self, text: &str) -> Result<Vec<String>, BoxError> {
        self.called("search");
        if !self.search_was_down.swap(true, Ordering::SeqCst) {
            return Err("search index is reloading".into());
        }
        Ok(vec![format!("top result for '{text}'")])
    }

    async fn text_to_speech(&self, text: &str) -> Result<String, BoxError> {
        self.called("text_to_speech");
        Ok(format!("<speech>{text}"))
    }
}

async fn voice_search(
    ctx: WorkflowContext,
    services: Arc<Services>,
    audio: String,
) -> Result<String, BoxError> {
    let s = services.clone();
    let text: String = ctx
        .step(
            "speech-to-text",
            async move { s.speech_to_text(&audio).await },
        )
        .await?;
    if text.contains("what") {
        let s = services.clone();
        return Ok(ctx
            .step("question-and-answer", async move {
                s.question_and_answer(&text).await
            })
            .await?);
    }
    let found: Vec<String> = ctx
        .step_with("search", |_| {
            let (s, text) = (services.clone(), text.clone());
            async move { s.search(&text).await }
        })
        .policy(
            StepPolicy::new()
                .retries(3)
                .backoff(Duration::from_millis(10), Duration::from_millis(100)),
        )
        .await?;
    let s = services.clone();
    Ok(ctx
        .step("text-to-speech", async move {
            s.text_to_speech(&found[0]).await
        })
        .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let services = Arc::new(Services::default());
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    {
        let services = services.clone();
        workflows.register(
            "voice_search",
            move |ctx: WorkflowContext, audio: String| voice_search(ctx, services.clone(), audio),
        );
    }

    for (id, audio) in [
        ("query-1", "<audio>rivers that flow north"),
        ("query-2", "<audio>what is the longest river"),
        // The same id again: the stored answer, no service called.
        ("query-1", "<audio>rivers that flow north"),
    ] {
        let handle = workflows.start("voice_search", id, audio).await?;
        println!("{id}: {}", handle.result::<String>().await?);
    }

    let calls = services.calls.lock().unwrap().clone();
    let mut listed: Vec<_> = calls.iter().collect();
    listed.sort();
    println!("service calls: {listed:?}");
    assert_eq!(calls["speech_to_text"], 2);
    assert_eq!(calls["search"], 2, "one failure, one retry");
    assert_eq!(calls["text_to_speech"], 1);
    assert_eq!(calls["question_and_answer"], 1);
    Ok(())
}
