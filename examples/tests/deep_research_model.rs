//! `deep_research --model URL` against a small local server speaking the
//! OpenAI chat-completions protocol: the requests it sends, and a report
//! made of the model's streamed answers.

use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::post;
use serde_json::{Value, json};

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    exe.parent()
        .and_then(|deps| deps.parent())
        .expect("in target/<profile>/deps")
        .join("examples")
        .join(name)
}

type Seen = Arc<Mutex<Vec<Value>>>;

/// The answer the fake model gives to a question: it names the question's
/// angle, so each section's answer can be told apart.
fn answer_to(question: &str) -> String {
    let angle = question
        .split(": ")
        .nth(1)
        .unwrap_or("?")
        .trim_end_matches('?');
    format!("The model answers that {angle}, according to [1] and [2].")
}

/// `POST /v1/chat/completions`: remember the request, stream the answer in
/// pieces as server-sent events.
async fn completions(State(seen): State<Seen>, Json(request): Json<Value>) -> impl IntoResponse {
    seen.lock().unwrap().push(request.clone());
    let prompt = request["messages"][1]["content"]
        .as_str()
        .unwrap_or_default();
    let question = prompt
        .lines()
        .find_map(|l| l.strip_prefix("Question: "))
        .unwrap_or_default();
    let mut body = String::new();
    for piece in answer_to(question).split_inclusive(' ') {
        let chunk = json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "choices": [{ "index": 0, "delta": { "content": piece }, "finish_reason": null }],
        });
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    body.push_str("data: [DONE]\n\n");
    ([(header::CONTENT_TYPE, "text/event-stream")], body)
}

#[test]
fn deep_research_streams_its_answers_from_a_chat_completions_endpoint() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let seen: Seen = Arc::default();
    let addr = runtime.block_on(async {
        let app = axum::Router::new()
            .route("/v1/chat/completions", post(completions))
            .with_state(Arc::clone(&seen));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    });
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let out = Command::new(example("deep_research"))
        .args([
            "--db",
            db.to_str().unwrap(),
            "--subtopics",
            "3",
            "--speed",
            "0.05",
        ])
        .args([
            "--model",
            &format!("http://{addr}/v1"),
            "--model-name",
            "tiny-test",
        ])
        .env_remove("OPENAI_API_KEY")
        .output()
        .expect("the example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // One streamed request per sub-question, each with its question, the
    // sources found for it and the notes read.
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "{requests:?}");
    let mut questions = Vec::new();
    for request in &requests {
        assert_eq!(request["model"], "tiny-test");
        assert_eq!(request["stream"], true);
        assert_eq!(request["messages"][0]["role"], "system");
        assert_eq!(request["messages"][1]["role"], "user");
        let prompt = request["messages"][1]["content"].as_str().unwrap();
        assert!(
            prompt.contains("Topic: how rivers shape cities\n"),
            "{prompt}"
        );
        assert!(
            prompt.contains("\n[1] ") && prompt.contains("\n[2] "),
            "{prompt}"
        );
        assert!(prompt.contains("Notes: read "), "{prompt}");
        questions.push(
            prompt
                .lines()
                .find_map(|l| l.strip_prefix("Question: "))
                .unwrap()
                .to_owned(),
        );
    }
    questions.sort();
    assert_eq!(
        questions,
        [
            "How rivers shape cities: what did it mean for trade and land values?",
            "How rivers shape cities: what does history show?",
            "How rivers shape cities: what does it do to the living river and its banks?",
        ]
    );

    // The report's sections hold the model's answers, in sub-question order.
    assert!(
        stdout.contains("answers from the model `tiny-test` at http://"),
        "{stdout}"
    );
    let report = &stdout[stdout
        .find("\n# How rivers shape cities")
        .expect("a report")..];
    let sections: Vec<&str> = report.split("\n## ").skip(1).collect();
    assert_eq!(sections.len(), 3, "{report}");
    for (section, angle) in sections.iter().zip([
        "what does history show",
        "what did it mean for trade and land values",
        "what does it do to the living river and its banks",
    ]) {
        let answer = format!("The model answers that {angle}, according to [1] and [2].");
        assert!(section.contains(&answer), "{section}");
        assert!(section.contains("\nSources: [1] "), "{section}");
    }
    runtime.shutdown_timeout(Duration::from_secs(1));
}
