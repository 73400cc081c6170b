//! `tributary show` lists an application's durable steps (its journal)
//! after its tracked steps, and a durable workflow's journal on its own, on
//! SQLite and on PostgreSQL.

use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use serde_json::{Value, json};
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
        assert!(line.trim_end().ends_with(value), "{line}");
    }
    let json: Value =
        serde_json::from_str(&command(&backend, &["show", "job", "--json"]).await).unwrap();
    let steps: Vec<&str> = json["journal"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["fetch", "fetch", "summarise"]);

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
