//! The actix example as a client sees it: the service runs as its own
//! process on a free port and is driven over HTTP with a real client; a
//! run's items arrive as server-sent events. `cargo test` builds the
//! example before it runs these.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use serde_json::{Value, json};

/// Generous bound for anything that should happen "soon".
const SOON: Duration = Duration::from_secs(30);

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary has a path");
    // target/<profile>/deps/actix_service-<hash> -> target/<profile>/examples/<name>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("in target/<profile>/deps");
    profile_dir.join("examples").join(name)
}

/// The example, running; killed when dropped.
struct Service {
    child: Child,
    lines: mpsc::Receiver<String>,
    base: String,
    http: reqwest::Client,
}

impl Service {
    fn start() -> Service {
        let path = example("actix_service");
        assert!(
            path.exists(),
            "the example is not built at {}",
            path.display()
        );
        let mut child = Command::new(&path)
            .args([
                "--addr",
                "127.0.0.1:0",
                "--workers",
                "2",
                "--run-threads",
                "2",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the example starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let first = lines
            .recv_timeout(SOON)
            .expect("the service prints its address");
        let base = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("not an address line: {first}"))
            .trim_end_matches('/')
            .to_owned();
        Service {
            child,
            lines,
            base,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.post(self.url(path));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        let response = self
            .http
            .get(self.url(path))
            .send()
            .await
            .expect("the service answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("a JSON answer"))
    }

    /// Start a run of `job`; its id.
    async fn start_run(&self, job: Value) -> String {
        let (status, body) = self.post("/runs", Some(job)).await;
        assert_eq!(status, 201, "{body}");
        body["id"].as_str().expect("an id").to_owned()
    }

    async fn status(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/runs/{id}")).await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Follow a run's events (after item `last`, when given).
    async fn events(&self, id: &str, last: Option<u64>) -> Events {
        let mut request = self.http.get(self.url(&format!("/runs/{id}/events")));
        if let Some(last) = last {
            request = request.header("last-event-id", last.to_string());
        }
        let response = request.send().await.expect("the service answers");
        assert_eq!(response.status().as_u16(), 200);
        let kind = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(kind, "text/event-stream");
        Events {
            body: Box::pin(
                response
                    .bytes_stream()
                    .map(|chunk| chunk.map(|b| b.to_vec())),
            ),
            buf: Vec::new(),
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One server-sent event.
#[derive(Debug)]
struct Event {
    id: Option<u64>,
    name: String,
    data: Value,
}

/// A response of server-sent events, read event by event.
struct Events {
    body: Pin<Box<dyn Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buf: Vec<u8>,
}

impl Events {
    /// The next event; `None` once the response has ended. Cancel safe
    /// (bytes read so far stay in the buffer).
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..at + 2).collect();
                let block = String::from_utf8(block).expect("events are UTF-8");
                let mut event = Event {
                    id: None,
                    name: "message".to_owned(),
                    data: Value::Null,
                };
                for line in block.lines() {
                    if let Some(id) = line.strip_prefix("id: ") {
                        event.id = Some(id.parse().expect("a numeric id"));
                    } else if let Some(name) = line.strip_prefix("event: ") {
                        event.name = name.to_owned();
                    } else if let Some(data) = line.strip_prefix("data: ") {
                        event.data = serde_json::from_str(data).expect("JSON data");
                    }
                }
                return Some(event);
            }
            match self.body.next().await {
                Some(chunk) => self
                    .buf
                    .extend_from_slice(&chunk.expect("the stream reads")),
                None => {
                    assert!(self.buf.is_empty(), "a partial event at the end");
                    return None;
                }
            }
        }
    }

    /// The next event, which must come soon.
    async fn next_soon(&mut self) -> Option<Event> {
        tokio::time::timeout(SOON, self.next())
            .await
            .expect("the next event comes within the bound")
    }
}

/// Checks that each writer's items come in order: tokens numbered from 0
/// (`seq` and the token's `n` agree), then one terminal item, then nothing.
#[derive(Default)]
struct Order {
    next: HashMap<String, u64>,
    ended: HashMap<String, Value>,
    items: u64,
}

impl Order {
    fn see(&mut self, event: &Event) {
        assert_eq!(event.name, "item", "{event:?}");
        assert_eq!(event.id, Some(self.items), "item ids count up from 0");
        self.items += 1;
        let item = &event.data;
        let key = item["task_key"].as_str().unwrap().to_owned();
        assert!(
            !self.ended.contains_key(&key),
            "{key} sent {item} after its end"
        );
        let seq = self.next.entry(key.clone()).or_insert(0);
        assert_eq!(item["seq"], json!(*seq), "{key} out of order: {item}");
        match item["kind"].as_str().unwrap() {
            "token" => assert_eq!(item["result"]["n"], json!(*seq), "{item}"),
            "final" | "cancelled" | "failed" => {
                self.ended.insert(key, item.clone());
            }
            other => panic!("unexpected item kind {other}: {item}"),
        }
        *seq += 1;
    }

    fn tokens(&self, key: &str) -> u64 {
        let seen = self.next.get(key).copied().unwrap_or(0);
        seen - u64::from(self.ended.contains_key(key))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_streams_its_items_in_order_to_its_end() {
    let service = Service::start();
    let id = service
        .start_run(json!({ "writers": 3, "words": 25, "interval_ms": 5 }))
        .await;
    let mut events = service.events(&id, None).await;
    let mut order = Order::default();
    let end = loop {
        let event = events
            .next_soon()
            .await
            .expect("an end event before the stream ends");
        if event.name == "end" {
            break event;
        }
        order.see(&event);
    };
    assert_eq!(end.data, json!({ "completed": { "by_policy": false } }));
    assert!(
        events.next_soon().await.is_none(),
        "the response ends after the end event"
    );
    for w in 0..3 {
        let key = format!("writer-{w}");
        assert_eq!(order.tokens(&key), 25, "{key}");
        let last = &order.ended[&key];
        assert_eq!(last["kind"], "final", "{last}");
        assert_eq!(last["result"], json!({ "words": 25 }), "{last}");
    }
    assert_eq!(order.items, 3 * 26);

    let status = service.status(&id).await;
    assert_eq!(status["items"], json!(3 * 26), "{status}");
    assert_eq!(status["progress"]["completed"], 3, "{status}");
    assert_eq!(
        status["end"],
        json!({ "completed": { "by_policy": false } })
    );

    // A client that reconnects after item 9 gets the items after it, then
    // the end.
    let mut again = service.events(&id, Some(9)).await;
    let mut ids = Vec::new();
    while let Some(event) = again.next_soon().await {
        if event.name == "end" {
            continue;
        }
        ids.push(event.id.unwrap());
    }
    assert_eq!(ids, (10..3 * 26).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_stops_the_items_resume_goes_on_and_cancel_ends_with_cancelled_items() {
    let service = Service::start();
    // Far more words than the test waits for: only cancel ends this run.
    let id = service
        .start_run(json!({ "writers": 3, "words": 100000, "interval_ms": 10 }))
        .await;
    let mut events = service.events(&id, None).await;
    let mut order = Order::default();
    while order.items < 30 {
        order.see(&events.next_soon().await.expect("items while running"));
    }

    let (code, status) = service.post(&format!("/runs/{id}/pause"), None).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["paused"], true, "{status}");
    // Every writer comes to wait at the pause (its next `emit`).
    let deadline = tokio::time::Instant::now() + SOON;
    loop {
        let status = service.status(&id).await;
        if status["progress"]["paused"] == 3 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writers never all waited at the pause: {status}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The items emitted before the pause still arrive; then no more.
    let deadline = tokio::time::Instant::now() + SOON;
    while let Ok(event) = tokio::time::timeout(Duration::from_secs(1), events.next()).await {
        order.see(&event.expect("the stream goes on while paused"));
        assert!(
            tokio::time::Instant::now() < deadline,
            "items kept coming while paused"
        );
    }
    let paused_at = order.items;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), events.next())
            .await
            .is_err(),
        "an item arrived while the run was paused"
    );
    let status = service.status(&id).await;
    assert_eq!(status["paused"], true, "{status}");
    assert_eq!(status["items"], json!(paused_at), "{status}");
    assert_eq!(status["end"], Value::Null, "{status}");
    assert_eq!(status["progress"]["running"], 3, "{status}");
    assert!(order.ended.is_empty(), "a writer ended while paused");

    let (code, status) = service.post(&format!("/runs/{id}/resume"), None).await;
    assert_eq!(code, 200, "{status}");
    assert_eq!(status["paused"], false, "{status}");
    while order.items < paused_at + 30 {
        order.see(&events.next_soon().await.expect("items after the resume"));
    }

    let (code, status) = service.post(&format!("/runs/{id}/cancel"), None).await;
    assert_eq!(code, 200, "{status}");
    let end = loop {
        let event = events
            .next_soon()
            .await
            .expect("an end event before the stream ends");
        if event.name == "end" {
            break event;
        }
        order.see(&event);
    };
    assert_eq!(end.data, json!({ "cancelled": { "reason": "handle" } }));
    assert!(
        events.next_soon().await.is_none(),
        "the response ends after the end event"
    );
    for w in 0..3 {
        let key = format!("writer-{w}");
        let last = &order.ended[&key];
        assert_eq!(last["kind"], "cancelled", "{last}");
        assert_eq!(
            last["error"]["kind"],
            json!({ "cancelled": "handle" }),
            "{last}"
        );
        assert!(order.tokens(&key) < 100000, "{key} ran to its end");
    }
    let status = service.status(&id).await;
    assert_eq!(status["progress"]["cancelled"], 3, "{status}");
    assert_eq!(
        status["end"],
        json!({ "cancelled": { "reason": "handle" } })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_errors_that_name_what_is_wrong() {
    let service = Service::start();
    for (path, get) in [
        ("/runs/run-99", true),
        ("/runs/run-99/events", true),
        ("/runs/run-99/pause", false),
        ("/runs/run-99/cancel", false),
    ] {
        let (code, body) = if get {
            service.get(path).await
        } else {
            service.post(path, None).await
        };
        assert_eq!(code, 404, "{path}: {body}");
        assert_eq!(body, json!({ "error": "no run run-99" }), "{path}");
    }
    for (job, field) in [
        (json!({ "writers": 0 }), "writers"),
        (json!({ "words": 0 }), "words"),
        (json!({ "interval_ms": 20000 }), "interval_ms"),
    ] {
        let (code, body) = service.post("/runs", Some(job)).await;
        assert_eq!(code, 400, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field} must be")),
            "{body}"
        );
    }
    let id = service.start_run(json!({})).await;
    let (code, body) = service.post(&format!("/runs/{id}/explode"), None).await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("explode"),
        "{body}"
    );

    let page = service.http.get(service.url("/")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("new EventSource("), "{html}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_cancels_the_live_runs_and_their_clients_see_them_end() {
    let mut service = Service::start();
    let id = service
        .start_run(json!({ "writers": 2, "words": 100000, "interval_ms": 10 }))
        .await;
    let mut events = service.events(&id, None).await;
    let mut order = Order::default();
    while order.items < 10 {
        order.see(&events.next_soon().await.expect("items while running"));
    }
    let pid = service.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let end = loop {
        let event = events
            .next_soon()
            .await
            .expect("an end event before the stream ends");
        if event.name == "end" {
            break event;
        }
        order.see(&event);
    };
    assert_eq!(end.data, json!({ "cancelled": { "reason": "handle" } }));
    for w in 0..2 {
        assert_eq!(order.ended[&format!("writer-{w}")]["kind"], "cancelled");
    }
    // The process exits by itself, cleanly.
    let deadline = std::time::Instant::now() + SOON;
    let exit = loop {
        if let Some(exit) = service.child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the service did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(exit.success(), "{exit}");
    // Its output, to the end of the pipe.
    let said: Vec<String> = std::iter::from_fn(|| service.lines.recv_timeout(SOON).ok()).collect();
    assert!(
        said.iter().any(|l| l == "cancelled 1 runs; stopping"),
        "{said:?}"
    );
}

/// What the docs say of starting a run on an actix thread: it works there
/// (actix's runtimes have time enabled) and its tasks run on that thread.
#[test]
fn a_run_started_on_an_actix_runtime_runs_on_its_thread() {
    use tributary::{ItemKind, RunConfig, Runtime, State, TaskSpec, action};

    let actix_thread = std::thread::current().id();
    let threads = actix_web::rt::System::new().block_on(async {
        let tasks: Vec<TaskSpec> = (0..3)
            .map(|i| {
                TaskSpec::action(
                    format!("t{i}"),
                    action("where").run(|s: State, _, ctx| async move {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        ctx.emit(format!("{:?}", std::thread::current().id()))
                            .await?;
                        Ok((json!({}), s))
                    }),
                )
            })
            .collect();
        let (_handle, mut stream) = Runtime::new().run(tasks, RunConfig::new());
        let mut threads = Vec::new();
        while let Some(item) = stream.next().await {
            if item.kind == ItemKind::Token {
                threads.push(item.result.unwrap());
            }
        }
        threads
    });
    assert_eq!(threads.len(), 3);
    for thread in threads {
        assert_eq!(thread, json!(format!("{actix_thread:?}")));
    }
}
