//! `tributary show` lists an application's durable steps (its journal)
//! after its tracked steps, and a durable workflow's journal on its own, on
//! SQLite and on PostgreSQL, each entry marked run or replayed by the
//! latest execution.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tributary::durable::*;
use tributary::sqlite::SqliteJournal;
use tributary::{Application, BoxError, Hook, RunOptions};
use tributary_postgres::{PostgresJournal, PostgresTracker};
use tributary_sqlite::SqliteTracker;

use crate::durable_support::graph_of;
use crate::postgres_support::{TestSchema, url};

/// A journal and a tracker on one database, and the command's arguments
/// that read it.
struct Backend {
    journal: Arc<dyn JournalStore>,
    tracker: Arc<dyn Hook>,
    flush: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
    args: Vec<String>,
    _keep: Box<dyn std::any::Any + Send>,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tributary.db");
    let db = tributary_sqlite::Database::open(&path).await.unwrap();
    let tracker = SqliteTracker::new(db.clone());
    let flusher = tracker.clone();
    Backend {
        journal: Arc::new(SqliteJournal::new(db)),
        tracker: Arc::new(tracker),
        flush: Box::new(move || {
            let tracker = flusher.clone();
            async move { tracker.flush().await.unwrap() }.boxed()
        }),
        args: vec!["--db".into(), path.display().to_string()],
        _keep: Box::new(dir),
    }
}

async fn postgres() -> Backend {
    let schema = TestSchema::new("show_journal");
    let db = schema.connect().await;
    let tracker = PostgresTracker::new(db.clone());
    let flusher = tracker.clone();
    Backend {
        journal: Arc::new(PostgresJournal::new(db)),
        tracker: Arc::new(tracker),
        flush: Box::new(move || {
            let tracker = flusher.clone();
            async move { tracker.flush().await.unwrap() }.boxed()
        }),
        args: vec!["--db".into(), url(), "--schema".into(), schema.name.clone()],
        _keep: Box::new(schema),
    }
}

async fn command(backend: &Backend, args: &[&str]) -> String {
    let argv: Vec<String> = ["tributary".to_owned()]
        .into_iter()
        .chain(backend.args.iter().cloned())
        .chain(args.iter().map(|a| (*a).to_owned()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let cli = <tributary_cli::Cli as clap::Parser>::parse_from(argv);
        let mut out = Vec::new();
        tributary_cli::run(&cli, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    })
    .await
    .unwrap()
}

/// The lines of `text` from the journal's heading on.
fn journal_lines(text: &str) -> Vec<&str> {
    text.lines()
        .skip_while(|l| !l.starts_with("journal (durable steps)"))
        .collect()
}

async fn show_lists_the_journal(backend: Backend) {
    // An action with three durable steps, tracked.
    let graph = graph_of(|ctx| async move {
        let mut pages = Vec::new();
        for url in ["a.example/1", "a.example/2"] {
            let page: String = ctx
                .step("fetch", async move {
                    Ok::<_, BoxError>(format!("page of {url}"))
                })
                .await?;
            pages.push(page);
        }
        let summary: usize = ctx
            .step("summarise", async { Ok::<_, BoxError>(pages.len()) })
            .await?;
        Ok(json!(summary))
    });
    let journal = Journal::new(Arc::clone(&backend.journal));
    Application::builder(graph)
        .app_id("job")
        .journal(&journal)
        .hook_arc(Arc::clone(&backend.tracker))
        .build()
        .await
        .unwrap()
        .run(RunOptions::new())
        .await
        .unwrap();
    (backend.flush)().await;

    let text = command(&backend, &["show", "job"]).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("journaled") && l.ends_with('3')),
        "{text}"
    );
    let lines = journal_lines(&text);
    assert_eq!(lines.len(), 5, "heading, header and three entries:\n{text}");
    for (line, (step, value)) in lines[2..].iter().zip([
        ("fetch#0", "\"page of a.example/1\""),
        ("fetch#1", "\"page of a.example/2\""),
        ("summarise#0", "2"),
    ]) {
        assert!(line.contains(step) && line.contains("completed"), "{line}");
        // One execution ran every step.
        assert!(line.contains(" run "), "{line}");
        assert!(line.trim_end().ends_with(value), "{line}");
    }
    assert!(lines[1].contains("LATEST"), "{text}");
    let json: Value =
        serde_json::from_str(&command(&backend, &["show", "job", "--json"]).await).unwrap();
    let steps: Vec<&str> = json["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["fetch", "fetch", "summarise"]);
    let marks: Vec<&str> = json["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["replay"].as_str().unwrap())
        .collect();
    assert_eq!(marks, ["run", "run", "run"]);

    // A workflow no tracker recorded: its journal alone.
    let workflows = Workflows::new(Arc::clone(&backend.journal));
    workflows.register("greet", |ctx: WorkflowContext, name: String| async move {
        let hello: String = ctx
            .step("hello", async move {
                Ok::<_, BoxError>(format!("hello {name}"))
            })
            .await?;
        Ok::<_, BoxError>(hello)
    });
    let run = workflows
        .start("greet", "greet-1", "Ada".to_owned())
        .await
        .unwrap();
    assert_eq!(run.result::<String>().await.unwrap(), "hello Ada");
    let text = command(&backend, &["show", "greet-1"]).await;
    let lines = journal_lines(&text);
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[2].contains("hello#0") && lines[2].contains("\"hello Ada\""),
        "{text}"
    );

    // A workflow whose engine stopped (a crash) after its first step, then
    // resumed: the first step replayed, the second run.
    let engine = |gate: Arc<Semaphore>| {
        let workflows = Workflows::new(Arc::clone(&backend.journal));
        workflows.register("book", move |ctx: WorkflowContext, ()| {
            let gate = gate.clone();
            async move {
                let car: String = ctx
                    .step("car", async { Ok::<_, BoxError>("car-1".to_owned()) })
                    .await?;
                let hotel: String = ctx
                    .step("hotel", async move {
                        gate.acquire().await?.forget();
                        Ok::<_, BoxError>("hotel-1".to_owned())
                    })
                    .await?;
                Ok::<_, BoxError>(format!("{car} {hotel}"))
            }
        });
        workflows
    };
    let first = engine(Arc::new(Semaphore::new(0)));
    let handle = first.start("book", "trip-1", ()).await.unwrap();
    while backend.journal.load("trip-1", 0).await.unwrap().is_empty() {
        tokio::task::yield_now().await;
    }
    drop(first);
    assert!(handle.result::<String>().await.is_err());
    let resumed = engine(Arc::new(Semaphore::new(1)));
    let out: String = resumed
        .resume("trip-1")
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, "car-1 hotel-1");
    let text = command(&backend, &["show", "trip-1"]).await;
    let lines = journal_lines(&text);
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[2].contains("car#0") && lines[2].contains(" replayed "),
        "{text}"
    );
    assert!(
        lines[3].contains("hotel#0") && lines[3].contains(" run "),
        "{text}"
    );
    let json: Value =
        serde_json::from_str(&command(&backend, &["show", "trip-1", "--json"]).await).unwrap();
    let marks: Vec<(&str, &str, i64, i64)> = json["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["step"].as_str().unwrap(),
                e["replay"].as_str().unwrap(),
                e["execution"].as_i64().unwrap(),
                e["latest_execution"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(marks, [("car", "replayed", 1, 2), ("hotel", "run", 2, 2)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_lists_the_journal_of_a_sqlite_database() {
    show_lists_the_journal(sqlite().await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn show_lists_the_journal_of_a_postgres_database() {
    show_lists_the_journal(postgres().await).await;
}
