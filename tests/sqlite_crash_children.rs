//! The crash invariant of parallel children: with a SQLite persister, a
//! child's finished steps never run again across any number of parent
//! reruns, and the final state equals an uninterrupted run's.
//!
//! In one process, a parent whose parallel action maps 20 multi-step
//! children, with steps failing at random (seeded), is rebuilt and rerun
//! until it succeeds (and `tributary tree` draws what the tracker recorded
//! of it). Across processes, a helper running a parent of 12 children is
//! killed with SIGKILL and restarted on the same file.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary::{Application, Graph, RunOptions, State, StepStatus, Subgraph, action, default};
use tributary_sqlite::{
    Database, RunReader, RunStatus, SqlitePersister, SqliteTracker, TrackedStepStatus,
};
use tributary_tests::crash::{map_children, prepare};

const CHILDREN: usize = 20;
const STEPS: usize = 4;
const PARENT: &str = "crash-parent";
/// The parent's sequence id of its `map` step (after `prepare`).
const MAP_SEQ: u64 = 1;
/// A child step fails when the hash of (seed, child, step, earlier
/// failures of that step) falls below this many percent.
const FAIL_PERCENT: u64 = 5;
/// Injects 5 failures into 3 steps, one of which fails 3 times in a row.
const SEED: u64 = 326;

/// What happened to one (child, step): how often its body started, failed
/// on purpose, and returned successfully.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Runs {
    started: usize,
    failed: usize,
    completed: usize,
}

type Ledger = Arc<Mutex<BTreeMap<(usize, usize), Runs>>>;

/// splitmix64's finaliser: a well-mixed hash of `x`.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Whether attempt `failures` (the number of earlier failures) of `step` of
/// `child` fails. Depends on nothing else, so the same seed injects the same
/// failures whatever the interleaving.
fn fails(seed: u64, child: usize, step: usize, failures: usize) -> bool {
    if step == 0 {
        return false; // the first step always succeeds (see below)
    }
    let h = mix(seed ^ mix((child as u64) << 32 | (step as u64) << 16 | failures as u64));
    h % 100 < FAIL_PERCENT
}

/// The failures `fails` injects (each step fails until its first success):
/// in all, and the most in a row for one step. A failed child fails the
/// parent's run, so the parent needs at least one run more than the
/// longest streak.
fn planned_failures(seed: u64) -> (usize, usize) {
    let (mut total, mut streak) = (0, 0);
    for child in 0..CHILDREN {
        for step in 0..STEPS {
            let mut n = 0;
            while fails(seed, child, step, n) {
                n += 1;
            }
            total += n;
            streak = streak.max(n);
        }
    }
    (total, streak)
}

/// The child: `s0` -> `s1` -> `s2` -> `s3`, each appending its name to
/// `trail` and folding itself into `v`. `s0` never fails and never awaits,
/// so it cannot be interrupted between running and handing over its
/// checkpoint; the later steps yield first (so siblings interleave and a
/// fail-fast cancellation can interrupt them mid-body) and then fail when
/// `fails` says so.
fn child(ledger: Ledger, seed: Option<u64>) -> Subgraph {
    let mut builder = Graph::builder();
    for step in 0..STEPS {
        let ledger = ledger.clone();
        let name = format!("s{step}");
        builder = builder.action(
            action(name.clone())
                .reads(["item", "v", "trail"])
                .writes(["v", "trail"])
                .run(move |s: State, _, _| {
                    let ledger = ledger.clone();
                    let name = name.clone();
                    async move {
                        let item: usize = s.get_as("item")?;
                        ledger
                            .lock()
                            .unwrap()
                            .entry((item, step))
                            .or_default()
                            .started += 1;
                        if step > 0 {
                            tokio::task::yield_now().await;
                        }
                        {
                            let mut ledger = ledger.lock().unwrap();
                            let runs = ledger.entry((item, step)).or_default();
                            if seed.is_some_and(|seed| fails(seed, item, step, runs.failed)) {
                                runs.failed += 1;
                                return Err(
                                    format!("{name} of child {item} failed on purpose").into()
                                );
                            }
                            runs.completed += 1;
                        }
                        let v: u64 = s.get_as("v")?;
                        let v = v * 31 + (item * STEPS + step) as u64;
                        Ok((
                            json!({ "v": v }),
                            s.set("v", v).append("trail", name.as_str())?,
                        ))
                    }
                }),
        );
        if step > 0 {
            builder = builder.transition(format!("s{}", step - 1), format!("s{step}"), default());
        }
    }
    Subgraph::new(builder.entrypoint("s0").build().unwrap())
}

/// `prepare` -> `map` (20 children) -> `total`.
fn parent(ledger: Ledger, seed: Option<u64>) -> Graph {
    Graph::builder()
        .action(prepare(CHILDREN as u64))
        .action(map_children(child(ledger, seed)))
        .action(action("total").reads(["results"]).writes(["total"]).run(
            |s: State, _, _| async move {
                let results: Vec<Value> = s.get_as("results")?;
                let total = results
                    .iter()
                    .map(|r| r["v"].as_u64().unwrap() % 1_000_003)
                    .sum::<u64>();
                Ok((json!({}), s.set("total", total)))
            },
        ))
        .transition("prepare", "map", default())
        .transition("map", "total", default())
        .entrypoint("prepare")
        .build()
        .unwrap()
}

/// Rebuild the parent (same app id, `.resume()`) and run it until it
/// succeeds; returns its final state and how many runs it took.
async fn run_until_done(db_path: &Path, ledger: Ledger, seed: Option<u64>) -> (State, usize) {
    let db = Database::open(db_path).await.unwrap();
    let persister = Arc::new(SqlitePersister::new(db.clone()));
    let tracker = SqliteTracker::new(db.clone());
    let graph = parent(ledger, seed);
    let mut runs = 0;
    let state = loop {
        runs += 1;
        assert!(runs <= 200, "the parent never succeeded");
        let mut app = Application::builder(graph.clone())
            .app_id(PARENT)
            .persister(persister.clone())
            .hook(tracker.clone())
            .resume()
            .build()
            .await
            .unwrap();
        match app.run(RunOptions::new()).await {
            Ok(out) => break out.state,
            // Only the parent's `map` step fails, and only because a
            // child failed on purpose.
            Err(e) => {
                let e = e.to_string();
                assert!(
                    e.starts_with("step 1 failed: action `map` failed: task `")
                        && e.ends_with("failed on purpose"),
                    "unexpected failure: {e}"
                );
            }
        }
    };
    tracker.flush().await.unwrap();
    db.close().await.unwrap();
    (state, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rerun_parents_never_rerun_finished_child_steps_and_end_like_an_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let flaky_db = dir.path().join("flaky.db");

    let ledger = Ledger::default();
    let (state, runs) = run_until_done(&flaky_db, ledger.clone(), Some(SEED)).await;
    let ledger = ledger.lock().unwrap().clone();

    let injected: usize = ledger.values().map(|r| r.failed).sum();
    let (planned, streak) = planned_failures(SEED);
    assert_eq!((injected, streak), (planned, 3), "{ledger:?}");
    // The failing runs happen: one step fails three runs in a row, and
    // each failed run used up at least one injected failure.
    assert!(runs > streak && runs <= injected + 1, "{runs} runs");

    assert_eq!(ledger.len(), CHILDREN * STEPS, "every step ran: {ledger:?}");
    for (&(child, step), r) in &ledger {
        // The step's body returned successfully exactly once: once it had,
        // its checkpoint was handed to the database and no rerun of the
        // parent ran it again.
        assert_eq!(r.completed, 1, "child {child} step {step}: {r:?}");
        // Every other start either failed on purpose or was cancelled
        // mid-body when a sibling's failure failed the parallel step.
        assert!(r.started > r.failed, "child {child} step {step}: {r:?}");
        if step == 0 {
            assert_eq!(r.started, 1, "child {child}'s first step ran again: {r:?}");
        }
    }

    // Every child ends with one completed checkpoint per step; the
    // parent's `map` step is completed (its retry replaced the failures).
    let persister = SqlitePersister::open(&flaky_db).await.unwrap();
    for child in 0..CHILDREN {
        let id = tributary::child_app_id(PARENT, MAP_SEQ, "map", &child.to_string());
        let history = persister.history(&id).await.unwrap();
        let seqs: Vec<u64> = history.iter().map(|c| c.sequence_id).collect();
        assert_eq!(seqs, (0..STEPS as u64).collect::<Vec<_>>(), "{id}");
        assert!(history.iter().all(|c| c.status == StepStatus::Completed));
    }
    let parent_history = persister.history(PARENT).await.unwrap();
    assert_eq!(parent_history.len(), 3);
    assert!(
        parent_history
            .iter()
            .all(|c| c.status == StepStatus::Completed)
    );
    drop(persister);

    // The tracker saw every child under the parent's `map` step, and every
    // attempt of every step: one per start of its body.
    let reader = RunReader::open(&flaky_db).unwrap();
    let parent_run = reader.run(PARENT).unwrap().unwrap();
    assert_eq!(
        (parent_run.status, parent_run.steps, parent_run.attempts),
        (RunStatus::Completed, 3, runs as u64 + 2),
        "`map` ran once per run of the parent"
    );
    let children = reader.children(PARENT).unwrap();
    assert_eq!(children.len(), CHILDREN);
    for run in &children {
        let pointer = run.spawning_parent.as_ref().unwrap();
        assert_eq!(
            (
                pointer.app_id.as_str(),
                pointer.sequence_id,
                pointer.action.as_deref()
            ),
            (PARENT, MAP_SEQ, Some("map"))
        );
        let child: usize = (0..CHILDREN)
            .find(|c| tributary::child_app_id(PARENT, MAP_SEQ, "map", &c.to_string()) == run.app_id)
            .unwrap();
        let started: usize = (0..STEPS).map(|s| ledger[&(child, s)].started).sum();
        assert_eq!(
            (run.status, run.steps, run.attempts),
            (RunStatus::Completed, STEPS as u64, started as u64),
            "child {child}"
        );
        // A step's attempt is recorded `failed` when it failed, or
        // `abandoned` when a sibling's failure cancelled it first (even
        // mid-save of its own checkpoint); the last attempt of each
        // sequence id never failed, as every step succeeded in the end.
        let steps = reader.steps(&run.app_id).unwrap();
        let failed = steps
            .iter()
            .filter(|s| s.status == TrackedStepStatus::Failed)
            .count();
        let planned: usize = (0..STEPS).map(|s| ledger[&(child, s)].failed).sum();
        assert!(failed <= planned, "child {child}: {steps:?}");
        for (i, step) in steps.iter().enumerate() {
            let last = steps
                .get(i + 1)
                .is_none_or(|n| n.sequence_id != step.sequence_id);
            assert!(
                step.status != TrackedStepStatus::Running
                    && !(last && step.status == TrackedStepStatus::Failed),
                "child {child}: {steps:?}"
            );
        }
    }

    // `tributary tree` draws the parent with its 20 children, each hanging
    // off step 1 (`map`), completed, four steps.
    let tree = |json: bool| {
        let cli = tributary_cli::Cli {
            db: Some(flaky_db.clone()),
            json,
            command: tributary_cli::Command::Tree {
                app_id: PARENT.to_owned(),
            },
        };
        let mut out = Vec::new();
        tributary_cli::run(&cli, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    };
    let drawn: Value = serde_json::from_str(&tree(true)).unwrap();
    assert_eq!(
        (&drawn["app_id"], &drawn["status"], &drawn["steps"]),
        (&json!(PARENT), &json!("completed"), &json!(3))
    );
    let nodes = drawn["children"].as_array().unwrap();
    assert_eq!(nodes.len(), CHILDREN);
    for node in nodes {
        assert_eq!(node["status"], "completed", "{node}");
        assert_eq!(node["steps"], STEPS, "{node}");
        assert_eq!(node["children"], json!([]), "{node}");
        assert_eq!(
            node["spawning_parent"],
            json!({ "app_id": PARENT, "sequence_id": MAP_SEQ, "action": "map", "partition_key": null })
        );
    }
    let text = tree(false);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), CHILDREN + 1, "{text}");
    assert!(
        lines[0].starts_with("crash-parent  [completed]  3 steps"),
        "{text}"
    );
    for (i, line) in lines[1..].iter().enumerate() {
        let branch = if i + 1 == CHILDREN {
            "└── "
        } else {
            "├── "
        };
        assert!(line.starts_with(branch), "{text}");
        assert!(line.contains("  [completed]  4 steps  "), "{text}");
        assert!(line.ends_with("  (from step 1 map)"), "{text}");
    }

    // An uninterrupted run, on a fresh database, ends in the same state.
    let clean_ledger = Ledger::default();
    let (clean, clean_runs) =
        run_until_done(&dir.path().join("clean.db"), clean_ledger.clone(), None).await;
    assert_eq!(clean_runs, 1);
    assert!(clean_ledger.lock().unwrap().values().all(|r| *r
        == Runs {
            started: 1,
            failed: 0,
            completed: 1
        }));
    assert_eq!(state.to_json(), clean.to_json());
    assert_eq!(
        state.get_as::<Vec<Value>>("results").unwrap().len(),
        CHILDREN
    );
}

// ===== across processes =====

/// Children of the helper process; child `i` takes `4 * STEP_MS * (1 + 5i)`
/// ms, so the first finish long before the last.
const PROCESS_CHILDREN: usize = 12;
const STEP_MS: u64 = 10;

fn spawn_parent(db: &Path, log: &Path, step_ms: u64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_sqlite_crash_parent"))
        .arg(db)
        .arg(log)
        .arg(PROCESS_CHILDREN.to_string())
        .arg(step_ms.to_string())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for the helper to succeed and returns its last line.
fn final_line(mut child: Child) -> String {
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    let out = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the helper ends within two minutes");
    let status = child.wait().unwrap();
    assert!(status.success(), "helper failed: {status:?}");
    out.lines()
        .last()
        .expect("the helper prints its final state")
        .to_owned()
}

/// The (child, step) of every line of the execution log, in order.
fn log_lines(log: &Path) -> Vec<(usize, usize)> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let (child, step) = line.split_once(" s").expect("`CHILD sSTEP`");
            (child.parse().unwrap(), step.parse().unwrap())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_parent_process_never_reruns_checkpointed_child_steps() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("t.db");
    let log = dir.path().join("exec.log");

    // First run: SIGKILL once three children have logged their last step.
    let mut first = spawn_parent(&db, &log, STEP_MS);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let finished = log_lines(&log)
            .iter()
            .filter(|(_, step)| *step == STEPS - 1)
            .count();
        if finished >= 3 {
            break;
        }
        assert!(
            first.try_wait().unwrap().is_none(),
            "the helper ended before it was killed"
        );
        assert!(Instant::now() < deadline, "no child finished in time");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().unwrap(); // SIGKILL: no destructor, no flush
    assert!(!first.wait().unwrap().success());

    // What was durable at the kill: each child's completed checkpoints,
    // and the log written so far.
    let before = log_lines(&log);
    let persister = SqlitePersister::open(&db).await.unwrap();
    let mut checkpointed = BTreeMap::new();
    for child in 0..PROCESS_CHILDREN {
        let id = tributary::child_app_id(PARENT, MAP_SEQ, "map", &child.to_string());
        let done: Vec<usize> = persister
            .history(&id)
            .await
            .unwrap()
            .iter()
            .filter(|c| c.status == StepStatus::Completed)
            .map(|c| c.sequence_id as usize)
            .collect();
        checkpointed.insert(child, done);
    }
    persister.database().clone().close().await.unwrap();
    drop(persister);
    // The killed process left the parent `running`: the reader, which can
    // tell that process is gone, says it was interrupted.
    let reader = RunReader::open(&db).unwrap();
    assert_eq!(
        reader.run(PARENT).unwrap().unwrap().status,
        RunStatus::Interrupted
    );
    let map_attempt = reader
        .steps(PARENT)
        .unwrap()
        .into_iter()
        .find(|s| s.action == "map")
        .unwrap();
    assert_eq!(map_attempt.status, TrackedStepStatus::Interrupted);
    drop(reader);
    let finished: Vec<usize> = (0..PROCESS_CHILDREN)
        .filter(|c| checkpointed[c].len() == STEPS)
        .collect();
    let unfinished = PROCESS_CHILDREN - finished.len();
    assert!(
        !finished.is_empty(),
        "no child finished before the kill: {checkpointed:?}"
    );
    assert!(unfinished > 0, "every child finished before the kill");

    // Second run, same file, to the end.
    let resumed = final_line(spawn_parent(&db, &log, STEP_MS));
    let all = log_lines(&log);
    assert_eq!(all[..before.len()], before[..], "the log only grows");
    let after = &all[before.len()..];
    let count = |lines: &[(usize, usize)], c: usize, s: usize| {
        lines.iter().filter(|&&l| l == (c, s)).count()
    };
    for child in 0..PROCESS_CHILDREN {
        for step in 0..STEPS {
            let (b, a) = (count(&before, child, step), count(after, child, step));
            if checkpointed[&child].contains(&step) {
                // Checkpointed before the kill: ran once, never again.
                assert_eq!((b, a), (1, 0), "child {child} step {step}");
            } else {
                // Not checkpointed: it may have run (and logged) before the
                // kill without its checkpoint being written; it runs exactly
                // once in the second run.
                assert!(
                    b <= 1,
                    "child {child} step {step} ran {b} times before the kill"
                );
                assert_eq!(a, 1, "child {child} step {step}");
            }
        }
    }
    for child in &finished {
        assert!(
            after.iter().all(|(c, _)| c != child),
            "finished child {child} ran again: {after:?}"
        );
    }
    assert!(!after.is_empty());

    // The tracker, on the same file, saw the parent and its children end
    // (whatever records the kill cut off).
    let reader = RunReader::open(&db).unwrap();
    assert_eq!(
        reader.run(PARENT).unwrap().unwrap().status,
        RunStatus::Completed
    );
    let tracked = reader.children(PARENT).unwrap();
    assert_eq!(tracked.len(), PROCESS_CHILDREN);
    assert!(tracked.iter().all(|c| c.status == RunStatus::Completed));
    // Each child is known by its task key (its label) and its path.
    let mut keys: Vec<String> = tracked
        .iter()
        .map(|c| {
            assert_eq!(c.task_path, [c.task_key.clone().unwrap()], "{c:?}");
            assert_eq!(c.label, c.task_key);
            c.display_name().to_owned()
        })
        .collect();
    keys.sort_by_key(|k| k.parse::<usize>().unwrap());
    let expected: Vec<String> = (0..PROCESS_CHILDREN).map(|c| c.to_string()).collect();
    assert_eq!(keys, expected);
    // The parent was resumed, not retried: its `map` step's first attempt
    // died with its process, and the time no process ran is a gap, not
    // active time.
    let parent = reader.run(PARENT).unwrap().unwrap();
    assert_eq!((parent.resumes, parent.retries), (1, 0), "{parent:?}");
    assert_eq!(parent.gaps.len(), 1, "{parent:?}");
    let gap = parent.gaps[0].micros().unwrap();
    assert!(gap > 0);
    assert_eq!(
        parent.active_micros.unwrap() + gap,
        parent.duration_micros().unwrap()
    );
    let map_steps: Vec<(u32, TrackedStepStatus, bool)> = reader
        .steps(PARENT)
        .unwrap()
        .into_iter()
        .filter(|s| s.action == "map")
        .map(|s| (s.attempt, s.status, s.resumed))
        .collect();
    assert_eq!(
        map_steps,
        [
            (0, TrackedStepStatus::Abandoned, false),
            (1, TrackedStepStatus::Completed, true)
        ]
    );
    // Children cut short by the kill were resumed too.
    assert!(
        tracked
            .iter()
            .filter(|c| !finished.iter().any(|f| c.task_key == Some(f.to_string())))
            .any(|c| c.resumes > 0),
        "{tracked:?}"
    );

    // An uninterrupted run on a fresh database ends in the same state.
    let clean = final_line(spawn_parent(
        &dir.path().join("clean.db"),
        &dir.path().join("clean.log"),
        0,
    ));
    assert_eq!(resumed, clean);
    let state: Value = serde_json::from_str(&clean).unwrap();
    assert_eq!(state["results"].as_array().unwrap().len(), PROCESS_CHILDREN);
}
