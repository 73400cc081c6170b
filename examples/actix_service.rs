//! Run with `cargo run -p tributary-examples --example actix_service`, then
//! open the address it prints.
//!
//! tributary inside an actix service: an actix-web server starts runs from
//! an HTTP endpoint and streams each run's items to the browser as
//! server-sent events; an actix actor, [`Runs`], owns every run (its
//! handle and its stream), consumes the streams, keeps a bounded history
//! of each run's items for late and reconnecting clients, and takes the
//! messages that pause, resume and cancel a run.
//!
//! | endpoint | does |
//! |---|---|
//! | `GET /` | a small page: start a run, watch its items, pause/resume/cancel it |
//! | `POST /runs` | start a run; JSON body `{"writers": 3, "words": 60, "interval_ms": 80}` (all optional) |
//! | `GET /runs/{id}` | the run's status: paused, progress counts, items read, how it ended |
//! | `GET /runs/{id}/events` | the run's items as server-sent events (`event: item`, then one `event: end`); `Last-Event-ID` resumes after that item |
//! | `POST /runs/{id}/pause` | pause the run: no task takes a new step and `ctx.emit` waits |
//! | `POST /runs/{id}/resume` | resume it |
//! | `POST /runs/{id}/cancel` | cancel it: every unfinished task reports a `cancelled` item, then the run ends |
//!
//! Where the runs execute: on a multi-thread tokio runtime of their own,
//! not on actix's worker threads. Each actix-web worker is a
//! single-threaded tokio runtime; `Runtime::run` works there too (it has
//! time and I/O enabled), but then every task of the run would share the
//! one thread that also answers that worker's connections, and the run
//! would end whenever actix stops or restarts that worker. A run outlives
//! the request that started it, so it gets threads that only the service's
//! shutdown ends: the actor enters the runtime's handle when it calls
//! `Runtime::run`, so the run's supervisor and tasks are spawned there. The
//! actor reads the run's stream on its own (actix) thread: a stream is
//! plain channels, readable from any runtime. At Ctrl-C the service
//! cancels every run, waits until their tasks have stopped, then stops
//! the server and the runtime.
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use actix::prelude::*;
use actix_web::http::StatusCode;
use actix_web::http::header::{CACHE_CONTROL, ContentType};
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use clap::Parser;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tributary::{
    Progress, RunConfig, RunEnd, RunHandle, Runtime, State, StreamItem, TaskSpec, action,
};

/// Items of a run kept for clients that subscribe late or reconnect.
const HISTORY: usize = 4096;
/// Items a client may fall behind before it is disconnected (its browser
/// reconnects with `Last-Event-ID` and catches up from the history).
const CLIENT_BUFFER: usize = 1024;
/// Clients of one run at once.
const MAX_CLIENTS: usize = 64;
/// Runs that may be live at once.
const MAX_LIVE_RUNS: usize = 32;
/// Ended runs kept for their status and history, oldest dropped first.
const KEEP_ENDED: usize = 32;

const TEXT: &str = "rivers carve valleys over long years and carry silt to the sea \
    where deltas grow and cities gather along their banks to trade and to drink";

#[derive(Debug, Parser)]
#[command(about = "tributary runs served by actix-web and owned by an actix actor")]
struct Args {
    /// Where to listen (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// actix-web worker threads (each a single-threaded runtime).
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Threads of the tokio runtime the runs execute on.
    #[arg(long, default_value_t = 2)]
    run_threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let jobs = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.run_threads.max(1))
        .thread_name("tributary-runs")
        .enable_all()
        .build()?;
    let served = actix_web::rt::System::new().block_on(serve(args, jobs.handle().clone()));
    // Every run has stopped by now; nothing is left for the timeout to cut.
    jobs.shutdown_timeout(Duration::from_secs(5));
    served
}

async fn serve(args: Args, jobs: tokio::runtime::Handle) -> anyhow::Result<()> {
    // The actor lives on this (the system's) thread; handlers on every
    // worker reach it through its address.
    let runs = Runs::new(jobs).start();
    let data = web::Data::new(runs.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .route("/", web::get().to(page))
            .route("/runs", web::post().to(start))
            .route("/runs/{id}", web::get().to(status))
            .route("/runs/{id}/events", web::get().to(events))
            .route("/runs/{id}/{command}", web::post().to(control))
    })
    .workers(args.workers.max(1))
    // Ctrl-C is ours: the runs are cancelled first, so that the event
    // streams end and the server's graceful stop does not wait on them.
    .disable_signals()
    .shutdown_timeout(5)
    .bind(args.addr)?;
    let addr = server.addrs()[0];
    println!("listening on http://{addr}/");
    let server = server.run();
    let stop = server.handle();
    let serving = actix_web::rt::spawn(server);

    tokio::signal::ctrl_c().await?;
    println!("ctrl-c: cancelling every run");
    let live = runs.send(LiveRuns).await?;
    futures_util::future::join_all(live.iter().map(|run| run.handle.cancel())).await;
    // Every task has stopped; wait until the actor has read each run to
    // its end, so that every client has its run's last items.
    for mut run in live.iter().map(|run| run.ended.clone()) {
        let _ = run.wait_for(|ended| *ended).await;
    }
    println!("cancelled {} runs; stopping", live.len());
    stop.stop(true).await;
    serving.await??;
    Ok(())
}

// ===== the job =====

/// What `POST /runs` starts: `writers` tasks, each drafting `words` words
/// of a text, one every `interval_ms`, streaming each word.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Job {
    writers: u32,
    words: u32,
    interval_ms: u64,
}

impl Default for Job {
    fn default() -> Self {
        Job {
            writers: 3,
            words: 60,
            interval_ms: 80,
        }
    }
}

impl Job {
    fn check(&self) -> Result<(), ApiError> {
        let bad = |field, limits| Err(ApiError::BadJob { field, limits });
        if !(1..=100).contains(&self.writers) {
            return bad("writers", "1 to 100");
        }
        if !(1..=100_000).contains(&self.words) {
            return bad("words", "1 to 100000");
        }
        if !(1..=10_000).contains(&self.interval_ms) {
            return bad("interval_ms", "1 to 10000");
        }
        Ok(())
    }

    fn tasks(&self) -> Vec<TaskSpec> {
        let (words, pace) = (self.words, Duration::from_millis(self.interval_ms));
        (0..self.writers)
            .map(|i| {
                TaskSpec::action(
                    format!("writer-{i}"),
                    action("draft").run(move |s: State, _, ctx| async move {
                        let text: Vec<&str> = TEXT.split(' ').collect();
                        for n in 0..words {
                            tokio::time::sleep(pace).await;
                            let word = text[n as usize % text.len()];
                            ctx.emit(json!({ "n": n, "word": word })).await?;
                        }
                        Ok((json!({ "words": words }), s))
                    }),
                )
            })
            .collect()
    }
}

// ===== the actor that owns the runs =====

/// Owns every run of the service: its handle, the reading of its stream,
/// the history of its items and the clients following it.
struct Runs {
    /// The runtime the runs execute on.
    jobs: tokio::runtime::Handle,
    /// The tributary runtime: one concurrency budget for every run.
    runtime: Runtime,
    runs: HashMap<String, Run>,
    /// Ended runs, oldest first.
    ended: VecDeque<String>,
    started: u64,
}

impl fmt::Debug for Runs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Runs")
            .field("runs", &self.runs.len())
            .field("started", &self.started)
            .finish_non_exhaustive()
    }
}

/// One run, as the actor keeps it.
struct Run {
    handle: RunHandle,
    /// The last items as server-sent events, the oldest numbered `first`.
    history: VecDeque<Bytes>,
    first: u64,
    /// Items read from the run's stream so far.
    read: u64,
    clients: Vec<mpsc::Sender<Bytes>>,
    /// The `end` event, once the stream has ended.
    end: Option<Bytes>,
    /// Whether the stream has ended, for whoever waits on it.
    ended: watch::Sender<bool>,
}

impl Runs {
    fn new(jobs: tokio::runtime::Handle) -> Self {
        Runs {
            jobs,
            runtime: Runtime::new(),
            runs: HashMap::new(),
            ended: VecDeque::new(),
            started: 0,
        }
    }

    fn run(&self, id: &str) -> Result<&Run, ApiError> {
        self.runs
            .get(id)
            .ok_or_else(|| ApiError::UnknownRun(id.to_owned()))
    }
}

impl Actor for Runs {
    type Context = Context<Self>;
}

impl Run {
    fn status(&self, id: &str) -> RunStatus {
        RunStatus {
            id: id.to_owned(),
            paused: self.handle.is_paused(),
            progress: self.handle.progress_now(),
            items: self.read,
            end: self.end.is_some().then(|| self.handle.end()).flatten(),
        }
    }

    /// Keep an item and pass it to every client; a client too far behind
    /// (or gone) is dropped.
    fn push(&mut self, item: &StreamItem) {
        let n = self.read;
        self.read += 1;
        let data = serde_json::to_string(item)
            .unwrap_or_else(|e| json!({ "unserialisable": e.to_string() }).to_string());
        let event = Bytes::from(format!("id: {n}\nevent: item\ndata: {data}\n\n"));
        if self.history.len() == HISTORY {
            self.history.pop_front();
            self.first += 1;
        }
        self.history.push_back(event.clone());
        self.clients.retain(|c| c.try_send(event.clone()).is_ok());
    }

    /// The stream has ended: tell every client, then let their streams end.
    fn finish(&mut self) {
        let end = serde_json::to_string(&self.handle.end()).unwrap_or_default();
        let event = Bytes::from(format!("event: end\ndata: {end}\n\n"));
        for client in self.clients.drain(..) {
            let _ = client.try_send(event.clone());
        }
        self.end = Some(event);
        self.ended.send_replace(true);
    }
}

/// Start a run; answers its id.
struct Start(Job);

impl Message for Start {
    type Result = Result<String, ApiError>;
}

impl Handler<Start> for Runs {
    type Result = Result<String, ApiError>;

    fn handle(&mut self, Start(job): Start, ctx: &mut Context<Self>) -> Self::Result {
        job.check()?;
        let live = self.runs.len() - self.ended.len();
        if live >= MAX_LIVE_RUNS {
            return Err(ApiError::Busy { live });
        }
        self.started += 1;
        let id = format!("run-{}", self.started);
        let (handle, stream) = {
            // `run` spawns the run's supervisor on the runtime it is
            // called in, and the supervisor spawns the tasks beside it.
            let _on_jobs = self.jobs.enter();
            self.runtime
                .run(job.tasks(), RunConfig::new().run_id(id.clone()))
        };
        // The actor reads the stream (which drives the run): each item
        // comes to it as a message, then one message says the stream ended.
        let (item_id, end_id) = (id.clone(), id.clone());
        let from_run = stream
            .map(move |item| FromRun {
                id: item_id.clone(),
                item: Some(item),
            })
            .chain(futures_util::stream::once(async move {
                FromRun {
                    id: end_id,
                    item: None,
                }
            }));
        ctx.add_message_stream(from_run);
        self.runs.insert(
            id.clone(),
            Run {
                handle,
                history: VecDeque::new(),
                first: 0,
                read: 0,
                clients: Vec::new(),
                end: None,
                ended: watch::Sender::new(false),
            },
        );
        Ok(id)
    }
}

/// An item of a run's stream, or (`None`) the end of it.
struct FromRun {
    id: String,
    item: Option<StreamItem>,
}

impl Message for FromRun {
    type Result = ();
}

impl Handler<FromRun> for Runs {
    type Result = ();

    fn handle(&mut self, msg: FromRun, _: &mut Context<Self>) {
        let Some(run) = self.runs.get_mut(&msg.id) else {
            return;
        };
        match msg.item {
            Some(item) => run.push(&item),
            None => {
                run.finish();
                self.ended.push_back(msg.id);
                while self.ended.len() > KEEP_ENDED {
                    if let Some(old) = self.ended.pop_front() {
                        self.runs.remove(&old);
                    }
                }
            }
        }
    }
}

/// Follow a run: the kept items from number `from` on, then the live ones.
struct Follow {
    id: String,
    from: u64,
}

/// What a client of a run receives: events to send at once, then (while
/// the run goes on) the live events.
struct Feed {
    replay: Vec<Bytes>,
    live: Option<mpsc::Receiver<Bytes>>,
}

impl Message for Follow {
    type Result = Result<Feed, ApiError>;
}

impl Handler<Follow> for Runs {
    type Result = Result<Feed, ApiError>;

    fn handle(&mut self, Follow { id, from }: Follow, _: &mut Context<Self>) -> Self::Result {
        let run = self
            .runs
            .get_mut(&id)
            .ok_or_else(|| ApiError::UnknownRun(id.clone()))?;
        let mut replay = Vec::new();
        if from < run.first {
            let missed = run.first - from;
            replay.push(Bytes::from(format!(
                "event: gap\ndata: {{\"missed\":{missed}}}\n\n"
            )));
        }
        let kept = usize::try_from(from.saturating_sub(run.first)).unwrap_or(usize::MAX);
        replay.extend(run.history.iter().skip(kept).cloned());
        let live = match &run.end {
            Some(end) => {
                replay.push(end.clone());
                None
            }
            None => {
                run.clients.retain(|c| !c.is_closed());
                if run.clients.len() >= MAX_CLIENTS {
                    return Err(ApiError::TooManyClients(id));
                }
                let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
                run.clients.push(tx);
                Some(rx)
            }
        };
        Ok(Feed { replay, live })
    }
}

/// What a client may ask of a run.
#[derive(Debug, Clone, Copy)]
enum Command {
    Pause,
    Resume,
    Cancel,
}

/// Pause, resume or cancel a run; answers its status.
struct Control {
    id: String,
    command: Command,
}

impl Message for Control {
    type Result = Result<RunStatus, ApiError>;
}

impl Handler<Control> for Runs {
    type Result = Result<RunStatus, ApiError>;

    fn handle(&mut self, Control { id, command }: Control, _: &mut Context<Self>) -> Self::Result {
        let run = self.run(&id)?;
        match command {
            Command::Pause => run.handle.pause(),
            Command::Resume => run.handle.resume(),
            // The cancellation happens on the call; the future would only
            // wait for the tasks to stop, which the stream reports anyway.
            Command::Cancel => drop(run.handle.cancel()),
        }
        Ok(run.status(&id))
    }
}

/// A run's status.
struct Status(String);

impl Message for Status {
    type Result = Result<RunStatus, ApiError>;
}

impl Handler<Status> for Runs {
    type Result = Result<RunStatus, ApiError>;

    fn handle(&mut self, Status(id): Status, _: &mut Context<Self>) -> Self::Result {
        Ok(self.run(&id)?.status(&id))
    }
}

/// The runs that have not ended (to cancel them at shutdown).
struct LiveRuns;

/// A run that has not ended: its handle, and whether the actor has read
/// its stream to the end.
struct LiveRun {
    handle: RunHandle,
    ended: watch::Receiver<bool>,
}

impl Message for LiveRuns {
    type Result = Vec<LiveRun>;
}

impl Handler<LiveRuns> for Runs {
    type Result = Vec<LiveRun>;

    fn handle(&mut self, _: LiveRuns, _: &mut Context<Self>) -> Self::Result {
        self.runs
            .values()
            .filter(|r| r.end.is_none())
            .map(|r| LiveRun {
                handle: r.handle.clone(),
                ended: r.ended.subscribe(),
            })
            .collect()
    }
}

/// A run's status, as `GET /runs/{id}` and the controls answer it.
#[derive(Debug, Serialize)]
struct RunStatus {
    id: String,
    paused: bool,
    progress: Progress,
    /// Items read from the run's stream so far.
    items: u64,
    /// How the run ended, once its stream has ended.
    end: Option<RunEnd>,
}

// ===== errors =====

/// What the service refuses, and why.
#[derive(Debug)]
enum ApiError {
    UnknownRun(String),
    UnknownCommand(String),
    BadJob {
        field: &'static str,
        limits: &'static str,
    },
    Busy {
        live: usize,
    },
    TooManyClients(String),
    /// The actor is gone (the service is stopping).
    Stopping,
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ApiError::UnknownRun(id) => write!(f, "no run {id}"),
            ApiError::UnknownCommand(c) => {
                write!(f, "no command {c} (pause, resume or cancel)")
            }
            ApiError::BadJob { field, limits } => write!(f, "{field} must be {limits}"),
            ApiError::Busy { live } => write!(f, "{live} runs are live; try again later"),
            ApiError::TooManyClients(id) => {
                write!(f, "run {id} has {MAX_CLIENTS} clients already")
            }
            ApiError::Stopping => write!(f, "the service is stopping"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownRun(_) | ApiError::UnknownCommand(_) => StatusCode::NOT_FOUND,
            ApiError::BadJob { .. } => StatusCode::BAD_REQUEST,
            ApiError::Busy { .. } | ApiError::TooManyClients(_) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code()).json(json!({ "error": self.to_string() }))
    }
}

impl From<MailboxError> for ApiError {
    fn from(_: MailboxError) -> Self {
        ApiError::Stopping
    }
}

// ===== the handlers =====

type RunsData = web::Data<Addr<Runs>>;

async fn start(runs: RunsData, job: web::Json<Job>) -> Result<HttpResponse, ApiError> {
    let id = runs.send(Start(job.into_inner())).await??;
    Ok(HttpResponse::Created().json(json!({ "id": id, "events": format!("/runs/{id}/events") })))
}

async fn status(runs: RunsData, id: web::Path<String>) -> Result<web::Json<RunStatus>, ApiError> {
    Ok(web::Json(runs.send(Status(id.into_inner())).await??))
}

async fn control(
    runs: RunsData,
    path: web::Path<(String, String)>,
) -> Result<web::Json<RunStatus>, ApiError> {
    let (id, command) = path.into_inner();
    let command = match command.as_str() {
        "pause" => Command::Pause,
        "resume" => Command::Resume,
        "cancel" => Command::Cancel,
        _ => return Err(ApiError::UnknownCommand(command)),
    };
    Ok(web::Json(runs.send(Control { id, command }).await??))
}

/// The run's items as server-sent events: each item is an `item` event
/// whose id is its number in the run; the run's end is an `end` event,
/// after which the response ends. A browser's `EventSource` reconnects
/// with `Last-Event-ID` and gets the items after it.
async fn events(
    runs: RunsData,
    id: web::Path<String>,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let from = req
        .headers()
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map_or(0, |last| last + 1);
    let Feed { replay, live } = runs
        .send(Follow {
            id: id.into_inner(),
            from,
        })
        .await??;
    let live = futures_util::stream::unfold(live, |live| async move {
        let mut rx = live?;
        let event = rx.recv().await?;
        Some((event, Some(rx)))
    });
    let body = futures_util::stream::iter(replay)
        .chain(live)
        .map(Ok::<_, Infallible>);
    Ok(HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header((CACHE_CONTROL, "no-cache"))
        .streaming(body))
}

async fn page() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::html())
        .body(PAGE)
}

/// Everything from a run is shown as text (`textContent`), never as HTML.
const PAGE: &str = r#"<!doctype html>
<meta charset="utf-8">
<title>tributary on actix</title>
<style>body{font:14px system-ui;margin:2em} pre{background:#f4f4f4;padding:1em;height:60vh;overflow:auto}</style>
<h1>tributary on actix</h1>
<p><button id="start">start a run</button>
<button data-command="pause">pause</button>
<button data-command="resume">resume</button>
<button data-command="cancel">cancel</button>
<span id="run"></span></p>
<pre id="log"></pre>
<script>
let run = null, source = null;
const log = document.getElementById("log");
const say = (line) => { log.textContent += line + "\n"; log.scrollTop = log.scrollHeight; };
document.getElementById("start").onclick = async () => {
  const answer = await fetch("/runs", {method: "POST", headers: {"content-type": "application/json"}, body: "{}"});
  run = (await answer.json()).id;
  document.getElementById("run").textContent = run;
  log.textContent = "";
  if (source) source.close();
  source = new EventSource(`/runs/${encodeURIComponent(run)}/events`);
  source.addEventListener("item", (e) => {
    const item = JSON.parse(e.data);
    const what = item.kind === "token" ? item.result.word : JSON.stringify(item.result ?? item.error);
    say(`${item.task_key} #${item.seq} ${item.kind} ${what}`);
  });
  source.addEventListener("gap", (e) => say(`(missed ${JSON.parse(e.data).missed} items)`));
  source.addEventListener("end", (e) => { say(`run ended: ${e.data}`); source.close(); });
};
for (const button of document.querySelectorAll("[data-command]")) {
  button.onclick = async () => {
    if (!run) return;
    const answer = await fetch(`/runs/${encodeURIComponent(run)}/${button.dataset.command}`, {method: "POST"});
    say(`${button.dataset.command}: ${answer.status}`);
  };
}
</script>
"#;
