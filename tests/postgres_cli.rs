//! The `tributary` command on a PostgreSQL database: `--db postgres://...`
//! prints what it prints for a SQLite file holding the same run, and
//! `show --follow` prints each new step as it is recorded.

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::Duration;

use clap::Parser;
use serde_json::Value;
use tributary::{Application, Inputs, Persister, RunOptions};
use tributary_cli::{Cli, CliError, run};
use tributary_postgres::{PostgresPersister, PostgresTracker};
use tributary_sqlite::SqliteTracker;
use tributary_tests::chain::chain_graph;

use crate::persister_contract::{Counters, graph};
use crate::postgres_support::{TestSchema, url};

fn command(db: &str, schema: &str, args: &[&str]) -> Result<String, CliError> {
    let mut argv = vec!["tributary", "--db", db, "--schema", schema];
    argv.extend_from_slice(args);
    let cli = Cli::parse_from(argv);
    let mut out = Vec::new();
    run(&cli, &mut out)?;
    Ok(String::from_utf8(out).unwrap())
}

/// The JSON output without what differs between two trackers recording
/// the same steps: the clock readings each took.
fn timeless(text: &str) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                for key in [
                    "created_at",
                    "started_at",
                    "ended_at",
                    "active_micros",
                    "gaps",
                ] {
                    map.remove(key);
                }
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    let mut v: Value = serde_json::from_str(text).unwrap();
    strip(&mut v);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_postgres_url_reads_the_same_run_as_a_sqlite_file() {
    let schema = TestSchema::new("cli_same");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    let db = schema.connect().await;
    let pg = PostgresTracker::new(db.clone());
    let sqlite = SqliteTracker::open(&file).await.unwrap();
    let persister: Arc<dyn Persister> = Arc::new(PostgresPersister::new(db));
    // One run, both trackers on it: a failure, then the retry.
    let k = Counters::default();
    k.fail_b.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let mut app = Application::builder(graph(&k))
            .app_id("job")
            .partition_key("user-1")
            .persister(Arc::clone(&persister))
            .hook(pg.clone())
            .hook(sqlite.clone())
            .resume()
            .build()
            .await
            .unwrap();
        let _ = app.run(RunOptions::new()).await;
        k.fail_b.store(false, Ordering::SeqCst);
    }
    pg.flush().await.unwrap();
    sqlite.flush().await.unwrap();

    let file = file.display().to_string();
    let (url, name) = (url(), schema.name.clone());
    tokio::task::spawn_blocking(move || {
        let both = |args: &[&str]| {
            (
                command(&url, &name, args).unwrap(),
                command(&file, &name, args).unwrap(),
            )
        };
        for args in [
            &["--json", "runs"][..],
            &["--json", "runs", "--all"],
            &["--json", "show", "job"],
            &["--json", "tree", "job"],
        ] {
            let (pg, sqlite) = both(args);
            assert_eq!(timeless(&pg), timeless(&sqlite), "{args:?}");
        }
        let shown = timeless(&both(&["--json", "show", "job"]).0);
        assert_eq!(shown["run"]["status"], "completed");
        assert_eq!(shown["run"]["retries"], 1);
        assert_eq!(shown["steps"].as_array().unwrap().len(), 4);
        for format in ["mermaid", "dot"] {
            let (pg, sqlite) = both(&["export", "job", "--format", format]);
            assert_eq!(pg, sqlite, "{format}");
            assert!(pg.contains('b'), "{pg}");
        }
        // An unknown app names the server and schema, not a temp file.
        let err = command(&url, &name, &["show", "nobody"]).unwrap_err();
        assert!(err.to_string().contains(&format!("schema {name}")), "{err}");
    })
    .await
    .unwrap();
}

#[tokio::test]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_schema_never_written_is_an_error_and_not_created() {
    let schema = TestSchema::new("cli_empty");
    let (url, name) = (url(), schema.name.clone());
    let err = tokio::task::spawn_blocking(move || command(&url, &name, &["runs"]).unwrap_err())
        .await
        .unwrap();
    assert!(
        err.to_string().contains("holds no tributary data yet"),
        "{err}"
    );
    let exists: bool = schema
        .client()
        .await
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)",
            &[&schema.name],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!exists);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn the_reader_queries_the_database_and_sees_steps_recorded_after_it_opened() {
    let schema = TestSchema::new("cli_live");
    let db = schema.connect().await;
    let tracker = PostgresTracker::new(db.clone());
    let k = Counters::default();
    let mut app = Application::builder(graph(&k))
        .app_id("live")
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    app.step(&Inputs::new()).await.unwrap();
    tracker.flush().await.unwrap();

    // One reader, opened after the first step; each read queries the
    // database (a copy taken at opening would show one step forever).
    let (url, name) = (url(), schema.name.clone());
    let (to_reader, reads) = mpsc::channel::<()>();
    let (to_test, counts) = mpsc::channel::<usize>();
    let reading = std::thread::spawn(move || {
        let reader = tributary_cli::open_reader(Path::new(&url), &name).unwrap();
        while reads.recv().is_ok() {
            to_test.send(reader.steps("live").unwrap().len()).unwrap();
        }
    });
    to_reader.send(()).unwrap();
    assert_eq!(counts.recv().unwrap(), 1);
    app.run(RunOptions::new()).await.unwrap();
    tracker.flush().await.unwrap();
    to_reader.send(()).unwrap();
    assert_eq!(counts.recv().unwrap(), 3);
    drop(to_reader);
    reading.join().unwrap();
}

#[test]
fn follow_on_a_sqlite_file_is_refused() {
    let err = command(
        Path::new("/nonexistent/t.db").to_str().unwrap(),
        "tributary",
        &["show", "job", "--follow"],
    )
    .unwrap_err();
    assert!(matches!(err, CliError::FollowNeedsPostgres), "{err}");
}

/// Lines written to it go to a channel; after `limit` lines, the next
/// write fails as a closed pipe does.
struct Lines {
    sender: mpsc::Sender<String>,
    partial: String,
    sent: usize,
    limit: usize,
}

impl Write for Lines {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.sent >= self.limit {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        self.partial.push_str(&String::from_utf8_lossy(buf));
        while let Some(end) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=end).collect();
            let _ = self.sender.send(line.trim_end().to_owned());
            if !line.trim().is_empty() && line.starts_with("step ") {
                self.sent += 1;
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn show_follow_prints_each_new_step_as_it_is_recorded() {
    let schema = TestSchema::new("cli_follow");
    let db = schema.connect().await;
    let tracker = PostgresTracker::new(db.clone());
    let mut app = Application::builder(chain_graph(5, Duration::ZERO, None))
        .app_id("live")
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    app.step(&Inputs::new()).await.unwrap();
    tracker.flush().await.unwrap();

    let (sender, lines) = mpsc::channel();
    let (url, name) = (url(), schema.name.clone());
    let follower = std::thread::spawn(move || {
        let cli = Cli::parse_from([
            "tributary",
            "--db",
            &url,
            "--schema",
            &name,
            "show",
            "live",
            "--follow",
        ]);
        let mut out = Lines {
            sender,
            partial: String::new(),
            sent: 0,
            limit: 2,
        };
        run(&cli, &mut out)
    });
    let next = || {
        lines
            .recv_timeout(Duration::from_secs(30))
            .expect("a line within the bound")
    };
    // The run as it stands, then the follow banner.
    while !next().starts_with("following live") {}
    for _ in 0..3 {
        app.step(&Inputs::new()).await.unwrap();
    }
    tracker.flush().await.unwrap();
    let mut steps = Vec::new();
    while steps.len() < 2 {
        let line = next();
        if line.starts_with("step ") {
            steps.push(line);
        }
    }
    assert_eq!(
        steps,
        ["step 1  step1  completed", "step 2  step2  completed"]
    );
    // The third new step's line finds the output closed: the command ends.
    let err = follower.join().unwrap().unwrap_err();
    assert!(err.is_broken_pipe(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn nested_children_read_the_same_from_both_backends() {
    use tributary::{Graph, ParallelAction, RunConfig, State, Subgraph, action};

    let schema = TestSchema::new("cli_tree");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    let pg = PostgresTracker::new(schema.connect().await);
    let sqlite = SqliteTracker::open(&file).await.unwrap();
    // Not in alphabetical order, so task order and key order differ.
    const OUTER: [&str; 2] = ["west", "east"];
    const INNER: [&str; 3] = ["wind", "heat", "flood"];
    let leaf = Subgraph::new(Graph::single(
        action("assess")
            .reads(["topic"])
            .writes(["done"])
            .run(|s: State, _, _| async move { Ok((serde_json::json!({}), s.set("done", true))) }),
    ));
    let fan = |name: &'static str, keys: &'static [&'static str], sub: Subgraph| {
        Graph::builder()
            .action(
                ParallelAction::tasks(name, move |_: &State, _| {
                    Ok(keys
                        .iter()
                        .map(|k| sub.task(*k, State::new().set("topic", *k), Inputs::new()))
                        .collect::<Vec<_>>())
                })
                .reduce(|s, _| Ok(s))
                .config(RunConfig::new().max_concurrency(1))
                .build(),
            )
            .entrypoint(name)
            .build()
            .unwrap()
    };
    let region = Subgraph::new(fan("hazards", &INNER, leaf));
    Application::builder(fan("regions", &OUTER, region))
        .app_id("country")
        .hook(pg.clone())
        .hook(sqlite.clone())
        .build()
        .await
        .unwrap()
        .run(RunOptions::new())
        .await
        .unwrap();
    pg.flush().await.unwrap();
    sqlite.flush().await.unwrap();

    let file = file.display().to_string();
    let (url, name) = (url(), schema.name.clone());
    tokio::task::spawn_blocking(move || {
        let both = |args: &[&str]| {
            (
                command(&url, &name, args).unwrap(),
                command(&file, &name, args).unwrap(),
            )
        };
        for args in [
            &["--json", "tree", "country"][..],
            &["--json", "runs", "--all"],
        ] {
            let (pg, sqlite) = both(args);
            assert_eq!(timeless(&pg), timeless(&sqlite), "{args:?}");
        }
        let tree = timeless(&both(&["--json", "tree", "country"]).0);
        let outer = tree["children"].as_array().unwrap();
        assert_eq!(outer.len(), 2);
        for (child, key) in outer.iter().zip(OUTER) {
            assert_eq!(child["task_path"], serde_json::json!([key]));
            let inner = child["children"].as_array().unwrap();
            let paths: Vec<&Value> = inner.iter().map(|c| &c["task_path"]).collect();
            let expected: Vec<Value> = INNER.iter().map(|k| serde_json::json!([key, k])).collect();
            assert_eq!(paths, expected.iter().collect::<Vec<_>>());
        }
    })
    .await
    .unwrap();
}

/// The roots `/api/runs` lists, by app id.
async fn listed(url: &str) -> Vec<String> {
    let list = crate::ui_support::get_json(url).await;
    list["roots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run"]["app_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn ui_serves_a_postgres_database_and_shows_runs_recorded_after_it_started() {
    let schema = TestSchema::new("cli_ui");
    let tracker = PostgresTracker::new(schema.connect().await);
    let record = |app_id: &'static str| {
        let tracker = tracker.clone();
        async move {
            let mut app = Application::builder(chain_graph(3, Duration::ZERO, None))
                .app_id(app_id)
                .hook(tracker.clone())
                .build()
                .await
                .unwrap();
            app.run(RunOptions::new()).await.unwrap();
            tracker.flush().await.unwrap();
        }
    };
    record("before").await;

    let cli = Cli::parse_from(["tributary", "--db", &url(), "--schema", &schema.name, "ui"]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (told, announced) = tokio::sync::oneshot::channel::<String>();
    let server = tokio::spawn(async move {
        tributary_cli::serve_ui(
            &cli,
            listener,
            async move {
                let _ = stopped.await;
            },
            |what| {
                let _ = told.send(what.to_owned());
            },
        )
        .await
    });
    // It names the server and schema it reads, not a temporary file.
    let announced = tokio::time::timeout(Duration::from_secs(30), announced)
        .await
        .expect("served within 30 s")
        .unwrap();
    assert!(
        announced.contains(&format!("schema {}", schema.name)),
        "{announced}"
    );
    let runs = format!("http://{addr}/api/runs");
    assert_eq!(listed(&runs).await, ["before"]);
    let page = crate::ui_support::get_json(&format!("http://{addr}/api/runs/before")).await;
    assert_eq!(page["run"]["status"], "completed");
    assert_eq!(page["steps"].as_array().unwrap().len(), 3);

    // A run recorded while the view is up appears without a restart.
    record("after").await;
    let shown = async {
        loop {
            let ids = listed(&runs).await;
            if ids.iter().any(|id| id == "after") {
                return ids;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let mut ids = tokio::time::timeout(Duration::from_secs(30), shown)
        .await
        .expect("the new run is listed within 30 s");
    ids.sort();
    assert_eq!(ids, ["after", "before"]);
    let page = crate::ui_support::get_json(&format!("http://{addr}/api/runs/after")).await;
    assert_eq!(page["steps"].as_array().unwrap().len(), 3);

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("the server stops within 10 s")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_steps_inputs_and_tokens_read_the_same_from_both_backends() {
    use serde_json::json;
    use tributary::{Graph, Inputs, State, action};

    let schema = TestSchema::new("cli_tokens");
    // A schema as version 2 left it: no inputs or tokens columns. The
    // tracker's connection migrates it.
    let db = schema.connect().await;
    schema
        .client()
        .await
        .batch_execute(&format!(
            "ALTER TABLE \"{0}\".steps DROP COLUMN inputs;
             ALTER TABLE \"{0}\".steps DROP COLUMN tokens;
             ALTER TABLE \"{0}\".journal DROP COLUMN execution;
             DROP TABLE \"{0}\".journal_executions;
             ALTER TABLE \"{0}\".steps DROP COLUMN paused_at, DROP COLUMN paused_on,
                 DROP COLUMN pause_reason, DROP COLUMN resumed_at;
             DELETE FROM \"{0}\".tributary_migrations WHERE version >= 3;",
            schema.name
        ))
        .await
        .unwrap();
    drop(db);
    let pg = PostgresTracker::new(schema.connect().await);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("t.db");
    let sqlite = SqliteTracker::open(&file).await.unwrap();
    let graph = Graph::single(action("echo").inputs(["words"]).run(
        |s: State, inputs: Inputs, ctx| async move {
            let words: Vec<String> = inputs.get_as("words")?;
            for word in &words {
                ctx.emit(word.as_str()).await?;
            }
            Ok((json!({ "said": words.len() }), s))
        },
    ));
    let mut app = Application::builder(graph)
        .app_id("echo")
        .hook(pg.clone())
        .hook(sqlite.clone())
        .build()
        .await
        .unwrap();
    app.step(&Inputs::new().with("words", json!(["rivers", "shape", "cities"])))
        .await
        .unwrap();
    pg.flush().await.unwrap();
    sqlite.flush().await.unwrap();

    let (url, name, file) = (url(), schema.name.clone(), file.display().to_string());
    let (pg, sqlite) = tokio::task::spawn_blocking(move || {
        (
            command(&url, &name, &["--json", "show", "echo"]).unwrap(),
            command(&file, &name, &["--json", "show", "echo"]).unwrap(),
        )
    })
    .await
    .unwrap();
    assert_eq!(timeless(&pg), timeless(&sqlite));
    let step = &timeless(&pg)["steps"][0];
    assert_eq!(
        step["inputs"],
        json!({ "words": ["rivers", "shape", "cities"] }),
        "{step}"
    );
    assert_eq!(step["tokens"], json!(["rivers", "shape", "cities"]));
}
