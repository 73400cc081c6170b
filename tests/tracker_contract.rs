//! The tracker's contract, written once and run against each backend
//! (`sqlite_tracker` for SQLite, `postgres_tracker` for PostgreSQL): every
//! application and step is recorded (timing, results, errors, item counts,
//! statuses, attempts, the spawning-parent links that make the tree of
//! nested applications, run ids and task order), and reads back the same
//! through the command's reader (`tributary_cli::open_reader`), which
//! queries either backend directly.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tributary::{
    ActionContext, Application, Graph, Hook, Inputs, ParentPointer, Persister, RetryPolicy,
    RunConfig, RunOptions, Runtime, State, TaskSpec, action, default,
};
use tributary_cli::Reader;
use tributary_sqlite::{RunStatus, TrackedStepStatus};

/// A tracker under test, the persister of the same database, and where the
/// command reads them.
pub(crate) struct Tracked {
    hook: Arc<dyn Hook>,
    persister: Arc<dyn Persister>,
    flush: Box<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>,
    db: PathBuf,
    schema: String,
    /// What must live as long as the database (its directory, its schema).
    _keep: Box<dyn std::any::Any + Send + Sync>,
}

impl Tracked {
    pub(crate) fn new(
        hook: Arc<dyn Hook>,
        persister: Arc<dyn Persister>,
        flush: impl Fn() -> BoxFuture<'static, ()> + Send + Sync + 'static,
        db: impl Into<PathBuf>,
        schema: &str,
        keep: impl std::any::Any + Send + Sync,
    ) -> Self {
        Tracked {
            hook,
            persister,
            flush: Box::new(flush),
            db: db.into(),
            schema: schema.to_owned(),
            _keep: Box::new(keep),
        }
    }

    fn hook(&self) -> Arc<dyn Hook> {
        Arc::clone(&self.hook)
    }

    fn persister(&self) -> Arc<dyn Persister> {
        Arc::clone(&self.persister)
    }

    /// Wait until every record handed to the tracker is written.
    async fn flush(&self) {
        (self.flush)().await;
    }

    /// `f` over a fresh reader of the database, on a blocking thread (the
    /// reader blocks).
    async fn read<T: Send + 'static>(&self, f: impl FnOnce(&Reader) -> T + Send + 'static) -> T {
        let (db, schema) = (self.db.clone(), self.schema.clone());
        tokio::task::spawn_blocking(move || {
            let reader = tributary_cli::open_reader(&db, &schema).unwrap();
            f(&*reader)
        })
        .await
        .unwrap()
    }

    /// `--db DB --schema SCHEMA` for the command.
    fn cli_args(&self) -> [String; 4] {
        [
            "--db".to_owned(),
            self.db.display().to_string(),
            "--schema".to_owned(),
            self.schema.clone(),
        ]
    }
}

/// Hands out a tracker under test on an empty database.
pub(crate) type Open = fn() -> BoxFuture<'static, Tracked>;

fn pointer(ctx: &ActionContext) -> ParentPointer {
    ParentPointer {
        app_id: ctx.app_id().to_owned(),
        sequence_id: ctx.sequence_id(),
        action: Some(ctx.action_name().to_owned()),
        partition_key: ctx.partition_key().map(str::to_owned),
    }
}

/// A leaf: `work` emits two items and waits 20 ms; it fails when the state
/// says so.
fn leaf_graph() -> Graph {
    Graph::builder()
        .action(
            action("work")
                .reads(["fail"])
                .writes(["out"])
                .run(|s: State, _, ctx| async move {
                    ctx.emit("token-1").await?;
                    ctx.emit("token-2").await?;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if s.get("fail") == Some(&json!(true)) {
                        return Err::<(Value, State), _>("leaf gave up".into());
                    }
                    Ok((json!({ "out": 1 }), s.set("out", 1)))
                }),
        )
        .entrypoint("work")
        .build()
        .unwrap()
}

/// A node that spawns children in its `fan_out` step: one leaf per entry of
/// `children` (`true` means the leaf fails), and, for `nested`, a grandchild
/// under the first child.
fn fan_out_graph(tracker: Arc<dyn Hook>) -> Graph {
    Graph::builder()
        .action(action("prepare").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(
            action("fan_out")
                .reads(["children"])
                .writes(["failures"])
                .run(move |s: State, _, ctx| {
                    let tracker = tracker.clone();
                    async move {
                        let children: Vec<bool> = s.get_as("children")?;
                        let mut failures = 0;
                        for (i, fail) in children.into_iter().enumerate() {
                            let mut child = Application::builder(leaf_graph())
                                .app_id(format!("{}/child-{i}", ctx.app_id()))
                                .partition_key("tenant")
                                .state(State::new().set("fail", fail))
                                .spawning_parent(pointer(&ctx))
                                .hook_arc(tracker.clone())
                                .build()
                                .await?;
                            if child.run(RunOptions::new()).await.is_err() {
                                failures += 1;
                            }
                            if i == 0 && ctx.app_id() == "root" {
                                let mut grandchild = Application::builder(leaf_graph())
                                    .app_id(format!("{}/child-0/grandchild", ctx.app_id()))
                                    .partition_key("tenant")
                                    .spawning_parent(ParentPointer {
                                        app_id: format!("{}/child-0", ctx.app_id()),
                                        sequence_id: 0,
                                        action: Some("work".into()),
                                        partition_key: Some("tenant".into()),
                                    })
                                    .hook_arc(tracker.clone())
                                    .build()
                                    .await?;
                                grandchild.run(RunOptions::new()).await?;
                            }
                        }
                        Ok((json!({ "failures": failures }), s.set("failures", failures)))
                    }
                }),
        )
        .transition("prepare", "fan_out", default())
        .entrypoint("prepare")
        .build()
        .unwrap()
}

pub(crate) async fn the_tracker_records_steps_timing_errors_items_and_the_tree(open: Open) {
    let t = open().await;
    let tracker = t.hook();
    let mut root = Application::builder(fan_out_graph(tracker.clone()))
        .app_id("root")
        .partition_key("tenant")
        .state(State::new().set("children", json!([false, true, false])))
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    let out = root.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("failures"), Some(&json!(1)));
    t.flush().await;

    t.read(|reader| {
        let runs = reader.runs().unwrap();
        let ids: Vec<&str> = runs.iter().map(|r| r.app_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "root",
                "root/child-0",
                "root/child-0/grandchild",
                "root/child-1",
                "root/child-2"
            ]
        );

        // The root: two steps, completed, with results and states.
        let root_run = reader.run("root").unwrap().unwrap();
        assert_eq!(root_run.status, RunStatus::Completed);
        assert_eq!(root_run.steps, 2);
        assert_eq!(root_run.partition_key.as_deref(), Some("tenant"));
        assert!(root_run.spawning_parent.is_none());
        let steps = reader.steps("root").unwrap();
        let summary: Vec<_> = steps
            .iter()
            .map(|s| (s.sequence_id, s.action.as_str(), s.status))
            .collect();
        assert_eq!(
            summary,
            [
                (0, "prepare", TrackedStepStatus::Completed),
                (1, "fan_out", TrackedStepStatus::Completed)
            ]
        );
        assert_eq!(steps[1].result, Some(json!({ "failures": 1 })));
        assert_eq!(steps[1].state.as_ref().unwrap()["failures"], json!(1));
        // fan_out ran four leaves of at least 20 ms each.
        assert!(steps[1].duration_micros().unwrap() >= 80_000, "{steps:?}");

        // The children hang off the fan_out step, in order.
        let children = reader.children("root").unwrap();
        let ids: Vec<&str> = children.iter().map(|r| r.app_id.as_str()).collect();
        assert_eq!(ids, ["root/child-0", "root/child-1", "root/child-2"]);
        for child in &children {
            let spawn = child.spawning_parent.as_ref().unwrap();
            assert_eq!(
                (
                    spawn.app_id.as_str(),
                    spawn.sequence_id,
                    spawn.action.as_deref()
                ),
                ("root", 1, Some("fan_out"))
            );
        }
        let statuses: Vec<RunStatus> = children.iter().map(|c| c.status).collect();
        assert_eq!(
            statuses,
            [
                RunStatus::Completed,
                RunStatus::Failed,
                RunStatus::Completed
            ]
        );
        let grandchildren = reader.children("root/child-0").unwrap();
        assert_eq!(grandchildren.len(), 1);
        assert_eq!(grandchildren[0].app_id, "root/child-0/grandchild");
        assert!(reader.children("root/child-1").unwrap().is_empty());

        // A leaf step: timing, item count, result; the failed one: its error.
        let ok = &reader.steps("root/child-0").unwrap()[0];
        assert_eq!((ok.status, ok.items), (TrackedStepStatus::Completed, 2));
        assert!(ok.duration_micros().unwrap() >= 20_000, "{ok:?}");
        assert_eq!(ok.result, Some(json!({ "out": 1 })));
        let failed = &reader.steps("root/child-1").unwrap()[0];
        assert_eq!(
            (failed.status, failed.items),
            (TrackedStepStatus::Failed, 2)
        );
        assert_eq!(
            failed.error.as_deref(),
            Some("action `work` failed: leaf gave up")
        );
        assert!(failed.result.is_none());
        assert!(failed.ended_at.unwrap() >= failed.started_at);
    })
    .await;
}

pub(crate) async fn an_abandoned_step_and_a_halted_run_are_recorded(open: Open) {
    let t = open().await;
    let tracker = t.hook();
    let graph = Graph::builder()
        .action(action("quick").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("slow").run(|s, _, ctx| async move {
            ctx.emit("partial").await?;
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok((json!({}), s))
        }))
        .transition("quick", "slow", default())
        .entrypoint("quick")
        .build()
        .unwrap();

    let mut halted = Application::builder(graph.clone())
        .app_id("halted")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    halted.run(RunOptions::after(["quick"])).await.unwrap();

    let mut app = Application::builder(graph)
        .app_id("dropped")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    app.step(&Inputs::new()).await.unwrap();
    // The step future is dropped before `slow` ends.
    let cut = tokio::time::timeout(Duration::from_millis(50), app.step(&Inputs::new())).await;
    assert!(cut.is_err());
    t.flush().await;

    t.read(|reader| {
        assert_eq!(
            reader.run("halted").unwrap().unwrap().status,
            RunStatus::Halted
        );
        assert_eq!(
            reader.run("dropped").unwrap().unwrap().status,
            RunStatus::Abandoned
        );
        let steps = reader.steps("dropped").unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(
            (steps[1].status, steps[1].items),
            (TrackedStepStatus::Abandoned, 1)
        );
        assert!(reader.run("nobody").unwrap().is_none());
    })
    .await;
}

pub(crate) async fn a_resumed_and_a_forked_application_are_tracked_with_their_parent(open: Open) {
    let t = open().await;
    let (persister, tracker) = (t.persister(), t.hook());
    let graph = Graph::builder()
        .action(action("a").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("b").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .transition("a", "b", default())
        .entrypoint("a")
        .build()
        .unwrap();
    let build = |id: &str| {
        Application::builder(graph.clone())
            .app_id(id)
            .persister(persister.clone())
            .hook_arc(tracker.clone())
    };
    build("orig")
        .build()
        .await
        .unwrap()
        .run(RunOptions::after(["a"]))
        .await
        .unwrap();
    // Resumed: the same run goes on at sequence 1.
    build("orig")
        .resume()
        .build()
        .await
        .unwrap()
        .run(RunOptions::new())
        .await
        .unwrap();
    build("fork")
        .fork_from("orig", Some(0))
        .build()
        .await
        .unwrap()
        .run(RunOptions::new())
        .await
        .unwrap();
    t.flush().await;

    t.read(|reader| {
        let orig = reader.run("orig").unwrap().unwrap();
        assert_eq!((orig.status, orig.steps), (RunStatus::Completed, 2));
        let fork = reader.run("fork").unwrap().unwrap();
        let parent = fork.parent.unwrap();
        assert_eq!((parent.app_id.as_str(), parent.sequence_id), ("orig", 0));
        assert!(fork.spawning_parent.is_none());
        let seqs: Vec<(u64, String)> = reader
            .steps("fork")
            .unwrap()
            .into_iter()
            .map(|s| (s.sequence_id, s.action))
            .collect();
        assert_eq!(seqs, [(1, "b".to_owned())]);
    })
    .await;
}

pub(crate) async fn every_attempt_of_a_retried_step_is_recorded(open: Open) {
    let t = open().await;
    let (persister, tracker) = (t.persister(), t.hook());
    let tries = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let graph = Graph::builder()
        .action(action("first").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("flaky").writes(["ok"]).run(move |s: State, _, _| {
            let tries = tries.clone();
            async move {
                let n = tries.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                if n < 2 {
                    return Err::<(Value, State), _>(format!("try {n} failed").into());
                }
                Ok((json!({ "tries": n + 1 }), s.set("ok", true)))
            }
        }))
        .transition("first", "flaky", default())
        .entrypoint("first")
        .build()
        .unwrap();
    let config = RunConfig::new()
        .retry(RetryPolicy::exponential(3, Duration::from_millis(1)))
        .persister(persister.clone())
        .hook(tracker.clone());
    let (_h, stream) = Runtime::new().run(vec![TaskSpec::new("t", graph)], config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed());
    t.flush().await;

    let app_id = t
        .read(|reader| {
            let runs = reader.runs().unwrap();
            assert_eq!(runs.len(), 1);
            let run = &runs[0];
            // Two steps (sequence ids), four attempts.
            assert_eq!(
                (run.status, run.steps, run.attempts),
                (RunStatus::Completed, 2, 4)
            );
            let steps = reader.steps(&run.app_id).unwrap();
            let summary: Vec<_> = steps
                .iter()
                .map(|s| (s.sequence_id, s.attempt, s.action.as_str(), s.status))
                .collect();
            assert_eq!(
                summary,
                [
                    (0, 0, "first", TrackedStepStatus::Completed),
                    (1, 0, "flaky", TrackedStepStatus::Failed),
                    (1, 1, "flaky", TrackedStepStatus::Failed),
                    (1, 2, "flaky", TrackedStepStatus::Completed),
                ]
            );
            assert_eq!(
                steps[1].error.as_deref(),
                Some("action `flaky` failed: try 0 failed")
            );
            assert_eq!(
                steps[2].error.as_deref(),
                Some("action `flaky` failed: try 1 failed")
            );
            assert_eq!(steps[3].result, Some(json!({ "tries": 3 })));
            assert!(steps[3].error.is_none());
            // Each attempt has its own timing, in order.
            for pair in steps.windows(2) {
                assert!(pair[0].ended_at.unwrap() <= pair[1].started_at, "{steps:?}");
            }
            run.app_id.clone()
        })
        .await;
    // The checkpoints keep one row per sequence id: the retry replaced the
    // failures.
    let history = crate::persister_contract::history(&persister, &app_id).await;
    let statuses: Vec<_> = history.iter().map(|c| (c.sequence_id, c.status)).collect();
    assert_eq!(
        statuses,
        [
            (0, tributary::StepStatus::Completed),
            (1, tributary::StepStatus::Completed)
        ]
    );
}

pub(crate) async fn an_attempt_left_running_by_a_dead_process_is_abandoned_when_the_step_restarts(
    open: Open,
) {
    let t = open().await;
    let tracker = t.hook();
    let hang = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = hang.clone();
    let graph = Graph::single(action("work").run(move |s: State, _, _| {
        let hang = h.load(std::sync::atomic::Ordering::SeqCst);
        async move {
            if hang {
                std::future::pending::<()>().await;
            }
            Ok((json!({}), s))
        }
    }));
    let mut app = Application::builder(graph.clone())
        .app_id("died")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    // A process that dies mid-step never ends the step: leak its future,
    // so that not even the abandon guard runs.
    let inputs = Inputs::new();
    let mut step = Box::pin(app.step(&inputs));
    assert!(futures_util::poll!(step.as_mut()).is_pending());
    std::mem::forget(step);
    t.flush().await;
    let statuses = |reader: &Reader| -> Vec<(u64, u32, TrackedStepStatus)> {
        reader
            .steps("died")
            .unwrap()
            .iter()
            .map(|s| (s.sequence_id, s.attempt, s.status))
            .collect()
    };
    assert_eq!(
        t.read(move |r| statuses(r)).await,
        [(0, 0, TrackedStepStatus::Running)]
    );

    // The next process runs the step again: a new attempt, and the old one
    // is marked abandoned.
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let mut again = Application::builder(graph)
        .app_id("died")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    again.run(RunOptions::new()).await.unwrap();
    t.flush().await;
    let (now, run) = t
        .read(move |r| (statuses(r), r.run("died").unwrap().unwrap()))
        .await;
    assert_eq!(
        now,
        [
            (0, 0, TrackedStepStatus::Abandoned),
            (0, 1, TrackedStepStatus::Completed)
        ]
    );
    assert_eq!(
        (run.status, run.steps, run.attempts),
        (RunStatus::Completed, 1, 2)
    );
}

pub(crate) fn a_state_too_deep_to_read_back_is_not_recorded_and_the_step_is(open: Open) {
    // The application's own state handling recurses over a value this
    // deep (comparing and dropping it), so it runs on a thread with room;
    // the tracker's writer must cope on its own.
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(deep_state_is_not_recorded(open))
        })
        .unwrap()
        .join()
        .unwrap();
}

async fn deep_state_is_not_recorded(open: Open) {
    let t = open().await;
    let tracker = t.hook();
    let graph = Graph::single(
        action("deepen")
            .writes(["v"])
            .run(|s: State, _, _| async move {
                Ok((json!({ "ok": true }), s.set("v", nested(30_000))))
            }),
    );
    let mut app = Application::builder(graph)
        .app_id("deep")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap();
    app.run(RunOptions::new()).await.unwrap();
    t.flush().await;
    let steps = t.read(|reader| reader.steps("deep").unwrap()).await;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].status, TrackedStepStatus::Completed);
    assert_eq!(steps[0].state, None);
    assert_eq!(steps[0].result, Some(json!({ "ok": true })));
    assert_eq!(
        steps[0].unrecorded.as_deref(),
        Some("state nested more than 100 levels deep")
    );
    drop(app);
}

fn nested(levels: usize) -> Value {
    let mut v = json!(0);
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

pub(crate) async fn children_of_a_parallel_action_are_recorded_by_task_key_in_task_order(
    open: Open,
) {
    let t = open().await;
    let tracker = t.hook();
    // Not in alphabetical order, so task order and key order differ.
    const KEYS: [&str; 4] = ["flood risk", "heat", "drought", "wind"];
    let assess = tributary::Subgraph::new(Graph::single(
        action("assess")
            .reads(["topic"])
            .writes(["done"])
            .run(|s: State, _, _| async move { Ok((json!({}), s.set("done", true))) }),
    ));
    let parent = Graph::builder()
        .action(
            tributary::ParallelAction::tasks("fan", move |_: &State, _| {
                Ok(KEYS.map(|k| assess.task(k, State::new().set("topic", k), Inputs::new())))
            })
            .reduce(|s, _| Ok(s))
            // One at a time: spawned in task order.
            .config(RunConfig::new().max_concurrency(1))
            .build(),
        )
        .entrypoint("fan")
        .build()
        .unwrap();
    Application::builder(parent)
        .app_id("region")
        .hook_arc(tracker.clone())
        .build()
        .await
        .unwrap()
        .run(RunOptions::new())
        .await
        .unwrap();
    t.flush().await;

    t.read(|reader| {
        let root = reader.run("region").unwrap().unwrap();
        assert_eq!(root.children, 4);
        let children = reader.children("region").unwrap();
        let names: Vec<&str> = children.iter().map(|c| c.display_name()).collect();
        assert_eq!(names, KEYS);
        for (child, key) in children.iter().zip(KEYS) {
            assert_eq!(child.task_key.as_deref(), Some(key));
            assert_eq!(child.task_path, [key]);
            assert_ne!(child.app_id, key, "the app id is derived, not the key");
        }
        // The roots are the parent alone.
        let roots: Vec<String> = reader
            .roots()
            .unwrap()
            .into_iter()
            .map(|r| r.app_id)
            .collect();
        assert_eq!(roots, ["region"]);
    })
    .await;
}

pub(crate) async fn a_runtime_run_records_its_run_id_and_each_task_index(open: Open) {
    let t = open().await;
    let tracker = t.hook();
    let leaf = tributary::Subgraph::new(leaf_graph());
    let parent = Graph::single(
        tributary::ParallelAction::tasks("fan", move |_: &State, _| {
            Ok(["x", "y"].map(|k| leaf.task(k, State::new().set("n", 1), Inputs::new())))
        })
        .reduce(|s, _| Ok(s))
        .build(),
    );
    // Keys not in alphabetical order: the index is task order.
    let tasks: Vec<_> = ["b", "a"].map(|k| TaskSpec::new(k, parent.clone())).into();
    let config = RunConfig::new()
        .run_id("nightly-research")
        .hook(tracker.clone());
    let (_h, stream) = Runtime::new().run(tasks, config);
    stream.outcomes().await.unwrap();
    t.flush().await;

    let args = t.cli_args();
    t.read(move |reader| {
        let roots = reader.roots().unwrap();
        let mut roots: Vec<_> = roots
            .iter()
            .map(|r| (r.task_key.as_deref(), r.task_index, r.run_id.as_deref()))
            .collect();
        roots.sort_by_key(|r| r.1);
        assert_eq!(
            roots,
            [
                (Some("b"), Some(0), Some("nightly-research")),
                (Some("a"), Some(1), Some("nightly-research")),
            ]
        );
        for root in reader.roots().unwrap() {
            let children: Vec<_> = reader
                .children(&root.app_id)
                .unwrap()
                .into_iter()
                .map(|c| (c.task_key, c.task_index, c.run_id))
                .collect();
            // A child reports the root run's id and its index among its
            // siblings.
            assert_eq!(
                children,
                [
                    (Some("x".into()), Some(0), Some("nightly-research".into())),
                    (Some("y".into()), Some(1), Some("nightly-research".into())),
                ]
            );
        }

        // `tributary show` names the run a child belongs to.
        let child = &reader.children(&reader.roots().unwrap()[0].app_id).unwrap()[0];
        let args = ["tributary"]
            .into_iter()
            .map(str::to_owned)
            .chain(args)
            .chain(["show".to_owned(), child.app_id.clone()]);
        let cli = <tributary_cli::Cli as clap::Parser>::parse_from(args);
        let mut out = Vec::new();
        tributary_cli::run(&cli, &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .any(|l| l.contains("run id") && l.contains("nightly-research")),
            "{text}"
        );
    })
    .await;
}

/// `tributary show APP` on the tracker's database.
fn show(args: [String; 4], app_id: &str) -> String {
    let args = ["tributary"]
        .into_iter()
        .map(str::to_owned)
        .chain(args)
        .chain(["show".to_owned(), app_id.to_owned()]);
    let cli = <tributary_cli::Cli as clap::Parser>::parse_from(args);
    let mut out = Vec::new();
    tributary_cli::run(&cli, &mut out).unwrap();
    String::from_utf8(out).unwrap()
}

pub(crate) async fn a_task_paused_by_a_durable_step_out_of_retries_is_recorded_until_resumed(
    open: Open,
) {
    use std::sync::atomic::{AtomicBool, Ordering};
    use tributary::durable::{Journal, MemoryJournal, WithJournal};

    let t = open().await;
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let healthy = Arc::new(AtomicBool::new(false));
    let graph = Graph::single(crate::durable_support::pay_pausing_until_healthy(
        Arc::clone(&healthy),
        Arc::default(),
    ));
    let config = RunConfig::new().journal(&journal).hook(t.hook());
    let (handle, stream) = Runtime::new().run(vec![TaskSpec::new("order", graph)], config);
    let mut progress = handle.progress();
    tokio::time::timeout(
        Duration::from_secs(10),
        progress.wait_for(|p| p.paused == 1),
    )
    .await
    .expect("the task pauses")
    .unwrap();
    t.flush().await;

    // Recorded as paused: the run, and its step with what waits and why.
    let args = t.cli_args();
    let app_id = t
        .read(move |reader| {
            let runs = reader.runs().unwrap();
            assert_eq!(runs.len(), 1);
            assert_eq!(runs[0].status, RunStatus::Paused);
            let steps = reader.steps(&runs[0].app_id).unwrap();
            assert_eq!(steps.len(), 1);
            assert_eq!(steps[0].status, TrackedStepStatus::Running);
            let pause = steps[0]
                .pause
                .clone()
                .expect("the step's pause is recorded");
            assert_eq!(pause.waiting, "charge#0");
            assert!(pause.reason.contains("card service down"), "{pause:?}");
            assert!(pause.resumed_at.is_none() && pause.at >= steps[0].started_at);
            let text = show(args, &runs[0].app_id);
            assert!(
                text.lines()
                    .any(|l| l.starts_with("status") && l.contains("paused")),
                "{text}"
            );
            assert!(
                text.lines().any(|l| l.starts_with("paused")
                    && l.contains("since")
                    && l.contains("charge#0 out of retries")
                    && l.contains("card service down")),
                "{text}"
            );
            runs[0].app_id.clone()
        })
        .await;

    healthy.store(true, Ordering::SeqCst);
    handle.resume_task("order").unwrap();
    let outcomes = tokio::time::timeout(Duration::from_secs(10), stream.outcomes())
        .await
        .expect("the run ends after the resume")
        .unwrap();
    assert!(outcomes[0].is_completed(), "{:?}", outcomes[0]);
    t.flush().await;

    // Recorded as resumed: the pause keeps its record, with its end.
    let args = t.cli_args();
    t.read(move |reader| {
        let run = reader.run(&app_id).unwrap().unwrap();
        assert_eq!(run.status, RunStatus::Completed);
        let steps = reader.steps(&app_id).unwrap();
        assert_eq!(steps[0].status, TrackedStepStatus::Completed);
        let pause = steps[0].pause.clone().expect("the pause stays on record");
        let resumed = pause.resumed_at.expect("its resume is recorded");
        assert!(pause.at <= resumed && resumed <= steps[0].ended_at.unwrap());
        let text = show(args, &app_id);
        assert!(
            text.lines().any(|l| l.starts_with("paused")
                && l.contains("resumed")
                && l.contains("charge#0")),
            "{text}"
        );
    })
    .await;
}

/// One test per contract check, for the backend `open` makes.
#[macro_export]
macro_rules! tracker_contract_tests {
    ($open:expr) => {
        $crate::tracker_contract_tests!($open, #[cfg(all())]);
    };
    // `$attr` goes on every test (an `ignore` for a missing service).
    ($open:expr, #[$attr:meta]) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn the_tracker_records_steps_timing_errors_items_and_the_tree() {
            $crate::tracker_contract::the_tracker_records_steps_timing_errors_items_and_the_tree(
                $open,
            )
            .await
        }
        #[tokio::test]
        #[$attr]
        async fn an_abandoned_step_and_a_halted_run_are_recorded() {
            $crate::tracker_contract::an_abandoned_step_and_a_halted_run_are_recorded($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn a_resumed_and_a_forked_application_are_tracked_with_their_parent() {
            $crate::tracker_contract::a_resumed_and_a_forked_application_are_tracked_with_their_parent(
                $open,
            )
            .await
        }
        #[tokio::test]
        #[$attr]
        async fn every_attempt_of_a_retried_step_is_recorded() {
            $crate::tracker_contract::every_attempt_of_a_retried_step_is_recorded($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn an_attempt_left_running_by_a_dead_process_is_abandoned_when_the_step_restarts() {
            $crate::tracker_contract::an_attempt_left_running_by_a_dead_process_is_abandoned_when_the_step_restarts(
                $open,
            )
            .await
        }
        #[test]
        #[$attr]
        fn a_state_too_deep_to_read_back_is_not_recorded_and_the_step_is() {
            $crate::tracker_contract::a_state_too_deep_to_read_back_is_not_recorded_and_the_step_is(
                $open,
            )
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn children_of_a_parallel_action_are_recorded_by_task_key_in_task_order() {
            $crate::tracker_contract::children_of_a_parallel_action_are_recorded_by_task_key_in_task_order(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn a_task_paused_by_a_durable_step_out_of_retries_is_recorded_until_resumed() {
            $crate::tracker_contract::a_task_paused_by_a_durable_step_out_of_retries_is_recorded_until_resumed(
                $open,
            )
            .await
        }
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[$attr]
        async fn a_runtime_run_records_its_run_id_and_each_task_index() {
            $crate::tracker_contract::a_runtime_run_records_its_run_id_and_each_task_index($open)
                .await
        }
    };
}
