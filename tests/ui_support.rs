//! Helpers of the web view's tests: a served [`UiServer`], HTTP requests,
//! a recorded demo run, and (for browser tests) a headless Chromium.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tributary::{Application, Graph, ParallelAction, RunOptions, State, Subgraph, action, default};
use tributary_sqlite::SqliteTracker;
use tributary_ui::UiServer;

/// A [`UiServer`] serving on a free loopback port until [`stop`](Self::stop).
pub(crate) struct Served {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), tributary_ui::UiError>>>,
}

impl Served {
    pub(crate) async fn start(ui: UiServer) -> Served {
        Served::start_at(ui, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Serve on `addr` (a server restarted on the address it had).
    pub(crate) async fn start_at(ui: UiServer, addr: SocketAddr) -> Served {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(ui.serve_with_shutdown(listener, async move {
            let _ = stopped.await;
        }));
        Served {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop serving (open event streams end too) and wait for the server.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("the server stops within 10 s")
                .unwrap()
                .unwrap();
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A request's status, headers and body.
pub(crate) async fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, headers, String::from_utf8(body.to_vec()).unwrap())
}

pub(crate) async fn get_json(url: &str) -> Value {
    let (status, _, body) = request("GET", url, &[]).await;
    assert_eq!(status, StatusCode::OK, "GET {url}: {body}");
    serde_json::from_str(&body).unwrap()
}

/// The first `update` event of the live stream at `url` (with
/// `Last-Event-ID: last` when given): its id and its data.
pub(crate) async fn first_event(url: &str, last: Option<u64>) -> (u64, Value) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut req = Request::builder()
        .uri(url)
        .header("accept", "text/event-stream");
    if let Some(last) = last {
        req = req.header("last-event-id", last.to_string());
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut text = String::new();
    let read = async {
        loop {
            let frame = body.frame().await.expect("the stream goes on").unwrap();
            if let Ok(data) = frame.into_data() {
                text.push_str(std::str::from_utf8(&data).unwrap());
            }
            if let Some(end) = text.find("\n\n") {
                let event = text[..end].to_owned();
                if event.contains("event: update") {
                    return event;
                }
                text.drain(..end + 2);
            }
        }
    };
    let event = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("an update within 10 s");
    let mut id = None;
    let mut data = String::new();
    for line in event.lines() {
        if let Some(v) = line.strip_prefix("id: ") {
            id = Some(v.parse().unwrap());
        } else if let Some(v) = line.strip_prefix("data: ") {
            data.push_str(v);
        }
    }
    (
        id.expect("an event id"),
        serde_json::from_str(&data).unwrap(),
    )
}

/// Record a finished run in a tracker's database at `path`: a root `root_id`
/// (partition `tenant`) that plans, fans out to `topics.len()` children
/// streaming tokens, and writes a report.
pub(crate) async fn record_demo_run(path: &Path, root_id: &str, topics: &[&str]) {
    let tracker = SqliteTracker::open(path).await.unwrap();
    let study = Subgraph::action(action("study").reads(["topic"]).writes(["notes"]).run(
        |s: State, _, ctx| async move {
            let topic: String = s.get_as("topic")?;
            for word in ["reading", "about", topic.as_str()] {
                ctx.emit(word).await?;
            }
            Ok((
                json!({ "topic": topic }),
                s.set("notes", format!("notes on {topic}")),
            ))
        },
    ));
    let research = ParallelAction::map_states("research", study, |s: &State, _| {
        let topics: Vec<String> = s.get_as("topics")?;
        Ok(topics.into_iter().map(|t| State::new().set("topic", t)))
    })
    .reads(["topics"])
    .writes(["notes"])
    .reduce(|s, outcomes| {
        let notes: Vec<Value> = outcomes
            .iter()
            .filter_map(|o| o.state()?.get("notes").cloned())
            .collect();
        Ok(s.set("notes", notes))
    })
    .build();
    let graph = Graph::builder()
        .action(action("plan").writes(["topics"]).run({
            let topics: Vec<String> = topics.iter().map(|t| t.to_string()).collect();
            move |s: State, _, _| {
                let topics = topics.clone();
                async move { Ok((json!({ "planned": topics.len() }), s.set("topics", topics))) }
            }
        }))
        .action(research)
        .action(action("write").reads(["notes"]).writes(["report"]).run(
            |s: State, _, _| async move {
                let notes: Vec<String> = s.get_as("notes")?;
                Ok((
                    json!({ "words": notes.len() }),
                    s.set("report", notes.join("; ")),
                ))
            },
        ))
        .transition("plan", "research", default())
        .transition("research", "write", default())
        .entrypoint("plan")
        .build()
        .unwrap();
    let mut app = Application::builder(graph)
        .app_id(root_id)
        .partition_key("tenant")
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap();
    tracker.flush().await.unwrap();
}
