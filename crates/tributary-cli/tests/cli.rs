//! The `tributary` binary on a database the SQLite tracker wrote: runs,
//! show, tree and export, as tables and as JSON, and its error cases.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use serde_json::{Value, json};
use tributary_core::{
    ActionContext, Application, Graph, ParentPointer, RunOptions, State, action, default,
};
use tributary_sqlite::{Database, SqlitePersister, SqliteTracker};

fn spawned_by(ctx: &ActionContext) -> ParentPointer {
    ParentPointer {
        app_id: ctx.app_id().to_owned(),
        sequence_id: ctx.sequence_id(),
        action: Some(ctx.action_name().to_owned()),
        partition_key: ctx.partition_key().map(str::to_owned),
    }
}

/// `summarize` streams one token per word; it fails for a topic "fail".
fn leaf() -> Graph {
    Graph::builder()
        .action(
            action("search")
                .reads(["topic"])
                .writes(["hits"])
                .run(|s: State, _, _| async move { Ok((json!({ "hits": 2 }), s.set("hits", 2))) }),
        )
        .action(
            action("summarize")
                .reads(["topic"])
                .writes(["summary"])
                .run(|s: State, _, ctx| async move {
                    let topic: String = s.get_as("topic")?;
                    if topic == "fail" {
                        return Err::<(Value, State), _>("no sources for `fail`".into());
                    }
                    for word in ["all", "about", topic.as_str()] {
                        ctx.emit(word).await?;
                    }
                    Ok((json!({ "summary": topic }), s.set("summary", topic.clone())))
                }),
        )
        .transition("search", "summarize", default())
        .entrypoint("search")
        .build()
        .unwrap()
}

/// `plan -> research -> research -> write`: `research` loops once, spawning
/// a child per topic each time.
fn root(tracker: SqliteTracker) -> Graph {
    Graph::builder()
        .action(
            action("plan")
                .writes(["round"])
                .run(|s: State, _, _| async move { Ok((json!({}), s.set("round", 0))) }),
        )
        .action(action("research").reads(["round"]).writes(["round"]).run(
            move |s: State, _, ctx| {
                let tracker = tracker.clone();
                async move {
                    let round: u64 = s.get_as("round")?;
                    let topics: &[&str] = if round == 0 {
                        &["rust", "fail"]
                    } else {
                        &["tokio"]
                    };
                    for topic in topics {
                        let mut child = Application::builder(leaf())
                            .app_id(format!("job/{topic}"))
                            .partition_key("team-a")
                            .state(State::new().set("topic", *topic))
                            .spawning_parent(spawned_by(&ctx))
                            .hook(tracker.clone())
                            .build()
                            .await?;
                        let _ = child.run(RunOptions::new()).await;
                    }
                    Ok((json!({ "round": round + 1 }), s.set("round", round + 1)))
                }
            },
        ))
        .action(action("write").run(|s, _, _| async move { Ok((json!({ "ok": true }), s)) }))
        .transition("research", "research", tributary_core::when("round", 1))
        .transition("research", "write", default())
        .transition("plan", "research", default())
        .entrypoint("plan")
        .build()
        .unwrap()
}

/// A database with `job` (4 steps, three children, one failed) and an
/// unrelated `solo` run in another partition.
async fn fixture(dir: &Path) -> PathBuf {
    let path = dir.join("tributary.db");
    let db = Database::open(&path).await.unwrap();
    let tracker = SqliteTracker::new(db.clone());
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let mut job = Application::builder(root(tracker.clone()))
        .app_id("job")
        .partition_key("team-a")
        .persister(persister.clone())
        .hook(tracker.clone())
        .build()
        .await
        .unwrap();
    job.run(RunOptions::new()).await.unwrap();
    let mut solo = Application::builder(leaf())
        .app_id("solo")
        .partition_key("team-b")
        .state(State::new().set("topic", "sqlite"))
        .hook(tracker)
        .build()
        .await
        .unwrap();
    solo.run(RunOptions::new()).await.unwrap();
    db.close().await.unwrap();
    path
}

fn tributary(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("TRIBUTARY_DB")
        .output()
        .unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_str(&stdout(out)).expect("--json prints JSON")
}

/// Asserts `out` failed with exactly one line on stderr, and returns it.
fn one_line_error(out: &Output) -> String {
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr.clone()).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err.trim_end().to_owned()
}

#[tokio::test]
async fn runs_lists_the_roots_with_child_counts_and_all_with_all() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;

    let table = stdout(&tributary(&db, &["runs"]));
    println!("{table}");
    let lines: Vec<&str> = table.lines().collect();
    // The roots only: `job` (with its three children) and `solo`.
    assert_eq!(lines.len(), 3, "{table}");
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "APP",
            "ID",
            "PARTITION",
            "STATUS",
            "STEPS",
            "CHILDREN",
            "ACTIVE",
            "STARTED"
        ]
    );
    let row_of = |lines: &[&str], id: &str| -> Vec<String> {
        lines
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap()
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        row_of(&lines, "job")[..5],
        ["job", "team-a", "completed", "4", "3"]
    );
    assert_eq!(
        row_of(&lines, "solo")[..5],
        ["solo", "team-b", "completed", "2", "0"]
    );

    let all = stdout(&tributary(&db, &["runs", "--all"]));
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines.len(), 6, "{all}");
    assert!(lines[0].trim_end().ends_with("TASK PATH"), "{all}");
    assert_eq!(
        row_of(&lines, "job/fail")[..5],
        ["job/fail", "team-a", "failed", "2", "0"]
    );

    let runs = json_of(&tributary(&db, &["runs", "--all", "--json"]));
    let ids: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["app_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["job", "job/rust", "job/fail", "job/tokio", "solo"]);
    assert_eq!(runs[2]["status"], "failed");
    assert_eq!(runs[1]["spawning_parent"]["app_id"], "job");
    assert_eq!(runs[0]["children"], 3);
    let roots = json_of(&tributary(&db, &["runs", "--json"]));
    assert_eq!(roots.as_array().unwrap().len(), 2);

    let team_b = json_of(&tributary(
        &db,
        &["--json", "runs", "--partition", "team-b"],
    ));
    assert_eq!(team_b.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn show_prints_a_run_step_by_step() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;

    let text = stdout(&tributary(&db, &["show", "job/fail"]));
    println!("{text}");
    let spawned: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("spawned by"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(spawned, ["spawned", "by", "job", "step", "1", "(research)"]);
    let steps: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("SEQ"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(steps.len(), 2, "{text}");
    assert_eq!(steps[0][..4], ["0", "0", "search", "completed"]);
    assert_eq!(steps[1][..4], ["1", "0", "summarize", "failed"]);
    assert!(text.contains("action `summarize` failed: no sources for `fail`"));

    let shown = json_of(&tributary(&db, &["show", "job", "--json"]));
    assert_eq!(shown["run"]["steps"], 4);
    assert_eq!(
        shown["children"],
        json!(["job/rust", "job/fail", "job/tokio"])
    );
    let actions: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["plan", "research", "research", "write"]);
    let rust = json_of(&tributary(&db, &["show", "job/rust", "--json"]));
    assert_eq!(rust["steps"][1]["items"], 3);
    assert_eq!(rust["steps"][1]["result"], json!({ "summary": "rust" }));
}

/// A database with `flaky`, whose `fetch` step failed once and was retried
/// at the same sequence id by a resumed rerun.
async fn retried_fixture(dir: &Path) -> PathBuf {
    let path = dir.join("retried.db");
    let db = Database::open(&path).await.unwrap();
    let tracker = SqliteTracker::new(db.clone());
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let tries = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let graph = Graph::builder()
        .action(action("plan").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("fetch").writes(["page"]).run(move |s: State, _, _| {
            let tries = tries.clone();
            async move {
                if tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return Err::<(Value, State), _>("connection reset".into());
                }
                Ok((json!({ "page": 1 }), s.set("page", 1)))
            }
        }))
        .transition("plan", "fetch", default())
        .entrypoint("plan")
        .build()
        .unwrap();
    for _ in 0..2 {
        let mut app = Application::builder(graph.clone())
            .app_id("flaky")
            .persister(persister.clone())
            .hook(tracker.clone())
            .resume()
            .build()
            .await
            .unwrap();
        let _ = app.run(RunOptions::new()).await;
    }
    db.close().await.unwrap();
    path
}

#[tokio::test]
async fn a_retried_step_shows_its_failed_attempt_then_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let db = retried_fixture(dir.path()).await;

    let runs = stdout(&tributary(&db, &["runs"]));
    let row: Vec<&str> = runs.lines().nth(1).unwrap().split_whitespace().collect();
    // Steps count sequence ids: the retry is not a third step.
    assert_eq!(row[..4], ["flaky", "-", "completed", "2"], "{runs}");

    let text = stdout(&tributary(&db, &["show", "flaky"]));
    println!("{text}");
    let steps_line: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("steps"))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(steps_line, ["steps", "2", "(1", "retry)"]);
    let steps: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("SEQ"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(steps.len(), 3, "{text}");
    assert_eq!(steps[0][..4], ["0", "0", "plan", "completed"]);
    assert_eq!(steps[1][..4], ["1", "0", "fetch", "failed"]);
    assert_eq!(steps[2][..4], ["1", "1", "fetch", "completed"]);
    assert!(steps[1].join(" ").contains("connection reset"), "{text}");

    let shown = json_of(&tributary(&db, &["show", "flaky", "--json"]));
    assert_eq!(
        (
            shown["run"]["steps"].clone(),
            shown["run"]["attempts"].clone()
        ),
        (json!(2), json!(3))
    );
    assert_eq!(shown["steps"][1]["attempt"], 0);
    assert_eq!(
        shown["steps"][1]["error"],
        "action `fetch` failed: connection reset"
    );
    assert_eq!(shown["steps"][2]["attempt"], 1);
    assert_eq!(shown["steps"][2]["result"], json!({ "page": 1 }));

    // The retry is no transition: `fetch` ran twice, one edge leads to it.
    let graph = json_of(&tributary(&db, &["export", "flaky", "--json"]));
    assert_eq!(
        graph["edges"],
        json!([{ "from": "plan", "to": "fetch", "count": 1 }])
    );
    assert_eq!(
        graph["nodes"][1],
        json!({ "action": "fetch", "runs": 2, "failed": 1 })
    );
}

#[tokio::test]
async fn tree_draws_the_spawned_subgraphs() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;

    let text = stdout(&tributary(&db, &["tree", "job"]));
    println!("{text}");
    let shape: Vec<String> = text
        .lines()
        .map(|l| {
            let mut parts = l.split("  ");
            format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    assert_eq!(
        shape,
        [
            "job [completed]",
            "├── job/rust [completed]",
            "├── job/fail [failed]",
            "└── job/tokio [completed]",
        ]
    );
    assert!(text.contains("(from step 2 research)"), "{text}");

    let tree = json_of(&tributary(&db, &["tree", "job", "--json"]));
    assert_eq!(tree["app_id"], "job");
    assert_eq!(tree["children"].as_array().unwrap().len(), 3);
    assert_eq!(tree["children"][1]["status"], "failed");
    assert_eq!(tree["children"][2]["spawning_parent"]["sequence_id"], 2);
}

#[tokio::test]
async fn export_gives_mermaid_and_dot_of_the_observed_transitions() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;

    let mermaid = stdout(&tributary(&db, &["export", "job", "--format", "mermaid"]));
    println!("{mermaid}");
    // The parent's graph, then one subgraph per child in task order, each
    // joined to the action that spawned it.
    let (parent, children) = mermaid.split_at(mermaid.find("    subgraph").unwrap());
    assert_eq!(
        parent,
        "flowchart LR\n    start((\"job\"))\n    n0[\"plan ×1\"]\n    n1[\"research ×2\"]\n    n2[\"write ×1\"]\n    start --> n0\n    n0 --> n1\n    n1 --> n1\n    n1 --> n2\n"
    );
    assert!(
        children.starts_with(
            "    subgraph c0 [\"job/rust\"]\n        direction LR\n        c0_n0[\"search ×1\"]\n        c0_n1[\"summarize ×1\"]\n        c0_start(( )) --> c0_n0\n        c0_n0 --> c0_n1\n    end\n    n1 -.-> c0\n"
        ),
        "{children}"
    );
    assert!(children.contains("    subgraph c1 [\"job/fail\"]\n"));
    assert!(children.contains("        class c1_n1 failed\n"));
    assert!(
        children.ends_with("    end\n    n1 -.-> c2\n"),
        "{children}"
    );
    let dot = stdout(&tributary(&db, &["export", "job", "--format", "dot"]));
    assert!(dot.contains("    compound=true;\n"), "{dot}");
    assert!(
        dot.contains("    subgraph \"cluster_c2\" {\n        label=\"job/tokio\";\n"),
        "{dot}"
    );
    assert!(
        dot.contains("        \"c1/summarize\" [label=\"summarize ×1 (1 failed)\", color=red];\n"),
        "{dot}"
    );
    assert!(
        dot.contains("    \"research\" -> \"c0/search\" [style=dashed, lhead=\"cluster_c0\"];\n"),
        "{dot}"
    );
    let dot = stdout(&tributary(&db, &["export", "job/fail", "--format", "dot"]));
    println!("{dot}");
    assert!(dot.starts_with("digraph \"job/fail\" {\n"), "{dot}");
    assert!(dot.contains("\"summarize\" [label=\"summarize ×1 (1 failed)\", color=red];"));
    assert!(dot.contains("\"search\" -> \"summarize\";"));
    assert!(dot.trim_end().ends_with('}'));

    let graph = json_of(&tributary(&db, &["export", "job", "--json"]));
    assert_eq!(graph["entry"], "plan");
    assert_eq!(
        graph["edges"],
        json!([
            { "from": "plan", "to": "research", "count": 1 },
            { "from": "research", "to": "research", "count": 1 },
            { "from": "research", "to": "write", "count": 1 },
        ])
    );
}

#[tokio::test]
async fn errors_are_one_line_and_exit_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;

    let unknown = one_line_error(&tributary(&db, &["show", "ghost"]));
    assert_eq!(
        unknown,
        format!("tributary: no run with app id `ghost` in {}", db.display())
    );
    one_line_error(&tributary(&db, &["tree", "ghost"]));
    one_line_error(&tributary(&db, &["export", "ghost", "--format", "dot"]));

    let missing = dir.path().join("missing.db");
    let err = one_line_error(&tributary(&missing, &["runs"]));
    assert_eq!(
        err,
        format!("tributary: no tributary database at {}", missing.display())
    );
    assert!(!missing.exists(), "the command never creates a database");

    let corrupt = dir.path().join("corrupt.db");
    std::fs::write(&corrupt, "not sqlite at all\n".repeat(100)).unwrap();
    let err = one_line_error(&tributary(&corrupt, &["runs"]));
    assert_eq!(
        err,
        format!("tributary: {} is not a SQLite database", corrupt.display())
    );

    // A database written by a newer schema: user_version (header bytes
    // 60..64) beyond what this build knows.
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[60..64].copy_from_slice(&7u32.to_be_bytes());
    std::fs::write(&db, bytes).unwrap();
    let err = one_line_error(&tributary(&db, &["runs"]));
    assert!(
        err.contains("has schema version 7, newer than version"),
        "{err}"
    );
}

#[tokio::test]
async fn the_database_comes_from_the_environment_or_the_default_path() {
    let dir = tempfile::tempdir().unwrap();
    let db = fixture(dir.path()).await;
    let from_env = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["runs", "--all", "--json"])
        .env("TRIBUTARY_DB", &db)
        .output()
        .unwrap();
    assert_eq!(json_of(&from_env).as_array().unwrap().len(), 5);

    // No flag, no variable: `.tributary/tributary.db` under the working
    // directory.
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(work.path().join(".tributary")).unwrap();
    std::fs::copy(&db, work.path().join(".tributary/tributary.db")).unwrap();
    let default = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["runs", "--all", "--json"])
        .env_remove("TRIBUTARY_DB")
        .current_dir(work.path())
        .output()
        .unwrap();
    assert_eq!(json_of(&default).as_array().unwrap().len(), 5);

    let usage = Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["export", "job", "--format", "png"])
        .output()
        .unwrap();
    assert!(!usage.status.success());
}
