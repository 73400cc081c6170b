//! Resuming a run of the runtime by its run id: finished tasks run no step
//! again and report the same `Final`, a reducer sees the same outcomes, and
//! a task the user cancelled stays cancelled unless asked to resume.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tributary::{
    CancelReason, Graph, InMemoryPersister, ItemKind, ParallelAction, RunConfig, Runtime, State,
    Subgraph, TaskOutcome, TaskSpec, TaskStatus, action, default,
};
use tributary_sqlite::SqlitePersister;

/// How often each (task key, action) completed its body.
type Ledger = Arc<Mutex<BTreeMap<(String, String), usize>>>;

fn count(ledger: &Ledger, key: Option<&str>, action: &str) {
    let key = key.unwrap_or_default().to_owned();
    *ledger
        .lock()
        .unwrap()
        .entry((key, action.to_owned()))
        .or_default() += 1;
}

fn counts(ledger: &Ledger) -> BTreeMap<(String, String), usize> {
    ledger.lock().unwrap().clone()
}

/// `fetch` then `score`. While `block` is set, the `score` of tasks whose
/// `n` is 3 or more adds a permit to `entered` and never returns.
fn two_steps(ledger: Ledger, block: Arc<AtomicBool>, entered: Arc<Semaphore>) -> Graph {
    let l1 = ledger.clone();
    Graph::builder()
        .action(
            action("fetch")
                .reads(["n"])
                .writes(["v"])
                .run(move |s: State, _, ctx| {
                    let ledger = l1.clone();
                    async move {
                        let n: i64 = s.get_as("n")?;
                        count(&ledger, ctx.task_key(), "fetch");
                        Ok((json!({ "v": n * 10 }), s.set("v", n * 10)))
                    }
                }),
        )
        .action(
            action("score")
                .reads(["n", "v"])
                .writes(["score"])
                .run(move |s: State, _, ctx| {
                    let (ledger, block, entered) = (ledger.clone(), block.clone(), entered.clone());
                    async move {
                        let n: i64 = s.get_as("n")?;
                        let v: i64 = s.get_as("v")?;
                        if n >= 3 && block.load(Ordering::SeqCst) {
                            entered.add_permits(1);
                            std::future::pending::<()>().await;
                        }
                        count(&ledger, ctx.task_key(), "score");
                        Ok((json!({ "score": v + 1 }), s.set("score", v + 1)))
                    }
                }),
        )
        .transition("fetch", "score", default())
        .entrypoint("fetch")
        .build()
        .unwrap()
}

fn tasks(graph: &Graph) -> Vec<TaskSpec> {
    (0..6)
        .map(|n| TaskSpec::new(format!("t{n}"), graph.clone()).state(State::new().set("n", n)))
        .collect()
}

/// (key, app id, result, state) of every completed outcome, by key.
fn completed(outcomes: &[TaskOutcome]) -> BTreeMap<String, (String, Value, Value)> {
    outcomes
        .iter()
        .map(|o| {
            assert!(o.is_completed(), "{o:?}");
            let state = serde_json::to_value(o.state().unwrap()).unwrap();
            (
                o.key.to_string(),
                (o.app_id.to_string(), o.result().cloned().unwrap(), state),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_run_id_resumes_finished_tasks_in_a_new_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("runs.db");
    let ledger = Ledger::default();
    let block = Arc::new(AtomicBool::new(true));
    let entered = Arc::new(Semaphore::new(0));
    let graph = two_steps(ledger.clone(), block.clone(), entered.clone());

    // An uninterrupted run, for reference (no persister, same run id).
    let reference = Ledger::default();
    let ref_graph = two_steps(reference, Arc::new(AtomicBool::new(false)), entered.clone());
    let (_h, stream) = Runtime::new().run(
        tasks(&ref_graph),
        RunConfig::new().run_id("nightly-research"),
    );
    let expected = completed(&stream.outcomes().await.unwrap());

    // First process: three tasks finish, three stop in `score`; the run is
    // dropped there.
    {
        let persister = Arc::new(SqlitePersister::open(&db).await.unwrap());
        let config = RunConfig::new()
            .run_id("nightly-research")
            .persister(persister);
        let (_handle, mut stream) = Runtime::new().run(tasks(&graph), config);
        let mut finals = 0;
        tokio::time::timeout(Duration::from_secs(30), async {
            while finals < 3 {
                let item = stream.next().await.expect("the run ends after six tasks");
                finals += usize::from(item.kind == ItemKind::Final);
            }
            let _ = entered.acquire_many(3).await.unwrap();
        })
        .await
        .expect("three tasks finish and three reach `score`");
    }
    let after_first = counts(&ledger);
    assert_eq!(after_first.len(), 9, "{after_first:?}");

    // A new runtime and a new handle on the file, the same run id.
    block.store(false, Ordering::SeqCst);
    let persister = Arc::new(SqlitePersister::open(&db).await.unwrap());
    let config = RunConfig::new()
        .run_id("nightly-research")
        .persister(persister.clone());
    let (_h, stream) = Runtime::new().run(tasks(&graph), config);
    let resumed = completed(&stream.outcomes().await.unwrap());
    assert_eq!(resumed, expected);
    // Every step's body completed exactly once over both runs: nothing
    // finished ran again.
    let all = counts(&ledger);
    assert_eq!(all.len(), 12, "{all:?}");
    assert!(all.values().all(|&n| n == 1), "{all:?}");

    // Without a run id the app ids are the process's own: the tasks find
    // none of their checkpoints and run again.
    let (_h, stream) = Runtime::new().run(tasks(&graph), RunConfig::new().persister(persister));
    let fresh = completed(&stream.outcomes().await.unwrap());
    assert!(fresh.iter().all(|(k, v)| v.0 != expected[k].0));
    assert!(counts(&ledger).values().all(|&n| n == 2));
}

/// `a`, `b`, `c` in a row; each result names its action and the task.
fn abc(ledger: Ledger) -> Graph {
    let step = |name: &'static str| {
        let ledger = ledger.clone();
        action(name)
            .reads(["n"])
            .writes([name])
            .run(move |s: State, _, ctx| {
                let ledger = ledger.clone();
                async move {
                    let n: i64 = s.get_as("n")?;
                    count(&ledger, ctx.task_key(), name);
                    Ok((json!({ name: n, "list": [n, name] }), s.set(name, n)))
                }
            })
    };
    Graph::builder()
        .action(step("a"))
        .action(step("b"))
        .action(step("c"))
        .transition("a", "b", default())
        .transition("b", "c", default())
        .entrypoint("a")
        .build()
        .unwrap()
}

/// The `Final` items of a run, as JSON, by task key.
async fn finals(tasks: Vec<TaskSpec>, config: RunConfig) -> BTreeMap<String, String> {
    let (_h, mut stream) = Runtime::new().run(tasks, config);
    let mut out = BTreeMap::new();
    while let Some(item) = stream.next().await {
        assert!(
            !matches!(item.kind, ItemKind::Failed | ItemKind::Cancelled),
            "{item:?}"
        );
        if item.kind == ItemKind::Final {
            out.insert(
                item.task_key.to_string(),
                serde_json::to_string(&item).unwrap(),
            );
        }
    }
    out
}

#[tokio::test]
async fn a_resumed_final_is_the_uninterrupted_one_byte_for_byte() {
    let ledger = Ledger::default();
    let graph = abc(ledger.clone());
    let tasks = || {
        vec![
            // Halts after `b`: `c` is next but must not run on resume.
            TaskSpec::new("halt-after", graph.clone())
                .state(State::new().set("n", 1))
                .halt_after(["b"]),
            // Halts before `c`.
            TaskSpec::new("halt-before", graph.clone())
                .state(State::new().set("n", 2))
                .halt_before(["c"]),
            // Runs to the graph's end.
            TaskSpec::new("to-end", graph.clone()).state(State::new().set("n", 3)),
        ]
    };
    let persister = Arc::new(InMemoryPersister::new());
    // Node items off: an item's `seq` is its number in this run's stream of
    // the task, and a resumed task streams no nodes of the steps it skips.
    let config = RunConfig::new()
        .run_id("finals")
        .persister(persister)
        .intermediate_nodes(false);
    let first = finals(tasks(), config.clone()).await;
    let ran = counts(&ledger);
    assert_eq!(ran.values().sum::<usize>(), 7, "{ran:?}");
    let again = finals(tasks(), config).await;
    assert_eq!(first.len(), 3);
    for (key, item) in &first {
        assert_eq!(&again[key], item, "the Final of {key}");
    }
    assert_eq!(counts(&ledger), ran, "a resumed finished task runs no step");
}

#[tokio::test]
async fn a_reducer_sees_the_results_of_resumed_children() {
    let ledger = Ledger::default();
    let l = ledger.clone();
    let child = Subgraph::action(action("times10").reads(["n"]).writes(["m"]).run(
        move |s: State, _, ctx| {
            let ledger = l.clone();
            async move {
                let n: i64 = s.get_as("n")?;
                count(&ledger, ctx.task_key(), "times10");
                Ok((json!({ "v": n * 10 }), s.set("m", n * 10)))
            }
        },
    ));
    // The reducer fails the first time, after every child finished.
    let failed_once = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new(Vec::<Value>::new()));
    let (f, s2) = (failed_once.clone(), seen.clone());
    let map = ParallelAction::map_states("map", child, |s: &State, _| {
        let ns: Vec<i64> = s.get_as("ns")?;
        Ok(ns.into_iter().map(|n| State::new().set("n", n)))
    })
    .reads(["ns"])
    .writes(["results"])
    .reduce(move |s, outcomes| {
        let results: Vec<Value> = outcomes
            .iter()
            .map(|o| {
                o.result()
                    .and_then(|r| r.get("v"))
                    .cloned()
                    .unwrap_or(Value::Null)
            })
            .collect();
        s2.lock().unwrap().push(json!(results));
        if !f.swap(true, Ordering::SeqCst) {
            return Err("the reducer fails once".into());
        }
        Ok(s.set("results", results))
    })
    .build();
    let parent = || {
        vec![
            TaskSpec::action("parent", map.clone()).state(State::new().set("ns", json!([1, 2, 3]))),
        ]
    };
    let persister = Arc::new(InMemoryPersister::new());
    let config = RunConfig::new().run_id("reduce").persister(persister);
    let (_h, stream) = Runtime::new().run(parent(), config.clone());
    let first = stream.outcomes().await;
    assert!(failed_once.load(Ordering::SeqCst), "{first:?}");

    let (_h, stream) = Runtime::new().run(parent(), config);
    let outcomes = stream.outcomes().await.unwrap();
    assert_eq!(
        outcomes[0].state().unwrap().get("results"),
        Some(&json!([10, 20, 30]))
    );
    assert_eq!(
        *seen.lock().unwrap(),
        vec![json!([10, 20, 30]), json!([10, 20, 30])]
    );
    // The children ran once, in the first run.
    let ran = counts(&ledger);
    assert_eq!(ran.len(), 3, "{ran:?}");
    assert!(ran.values().all(|&n| n == 1), "{ran:?}");
}

#[tokio::test]
async fn a_task_cancelled_by_the_user_stays_cancelled_unless_resumed() {
    let ledger = Ledger::default();
    let block = Arc::new(AtomicBool::new(true));
    let entered = Arc::new(Semaphore::new(0));
    let graph = two_steps(ledger.clone(), block.clone(), entered.clone());
    let tasks = || {
        vec![
            TaskSpec::new("keep", graph.clone()).state(State::new().set("n", 0)),
            TaskSpec::new("stop", graph.clone()).state(State::new().set("n", 3)),
        ]
    };
    let persister = Arc::new(InMemoryPersister::new());
    let config = RunConfig::new().run_id("cancel").persister(persister);

    let (handle, stream) = Runtime::new().run(tasks(), config.clone());
    tokio::time::timeout(Duration::from_secs(30), entered.acquire())
        .await
        .expect("`stop` reaches `score`")
        .unwrap()
        .forget();
    handle.cancel_task("stop").unwrap();
    let outcomes = stream.outcomes().await.unwrap();
    let status = |outcomes: &[TaskOutcome], key: &str| {
        outcomes
            .iter()
            .find(|o| &*o.key == key)
            .map(|o| o.status.clone())
            .unwrap()
    };
    assert_eq!(
        status(&outcomes, "stop"),
        TaskStatus::Cancelled {
            reason: CancelReason::Task
        }
    );

    // Started again with the same run id: `stop` stays cancelled and runs
    // nothing (were it run, it would block in `score` again).
    let (_h, stream) = Runtime::new().run(tasks(), config.clone());
    let outcomes = tokio::time::timeout(Duration::from_secs(30), stream.outcomes())
        .await
        .expect("a cancelled task does not run")
        .unwrap();
    assert_eq!(
        status(&outcomes, "stop"),
        TaskStatus::Cancelled {
            reason: CancelReason::Earlier
        }
    );
    assert!(
        outcomes
            .iter()
            .any(|o| &*o.key == "keep" && o.is_completed())
    );
    assert_eq!(entered.available_permits(), 0);

    // Asked to resume it, it runs its remaining step.
    block.store(false, Ordering::SeqCst);
    let (_h, stream) = Runtime::new().run(tasks(), config.resume_cancelled(true));
    let outcomes = stream.outcomes().await.unwrap();
    let stop = outcomes.iter().find(|o| &*o.key == "stop").unwrap();
    assert_eq!(stop.result(), Some(&json!({ "score": 31 })));
    let all = counts(&ledger);
    assert_eq!(all[&("stop".to_owned(), "fetch".to_owned())], 1);
    assert_eq!(all[&("stop".to_owned(), "score".to_owned())], 1);
}

// ===== across processes =====

/// Tasks of the helper process; each maps three children.
const CRASH_TASKS: u64 = 6;

fn spawn_run(db: &std::path::Path, log: &std::path::Path, step_ms: u64) -> std::process::Child {
    std::process::Command::new(env!("CARGO_BIN_EXE_runtime_crash_run"))
        .arg(db)
        .arg(log)
        .arg(CRASH_TASKS.to_string())
        .arg(step_ms.to_string())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits (bounded) for the helper to succeed and returns its output lines.
fn output_lines(mut child: std::process::Child) -> Vec<String> {
    use std::io::Read;
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
    out.lines().map(str::to_owned).collect()
}

/// How often each `TASK WHAT` line of the execution log was written.
fn log_counts(log: &std::path::Path) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
        *counts.entry(line.to_owned()).or_default() += 1;
    }
    counts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_killed_mid_map_resumes_by_run_id_in_a_new_process() {
    use tributary::{StepStatus, child_app_id};
    use tributary_sqlite::SqlitePersister;

    let dir = tempfile::tempdir().unwrap();
    // The uninterrupted run, for reference.
    let reference = output_lines(spawn_run(
        &dir.path().join("ref.db"),
        &dir.path().join("ref.log"),
        0,
    ));
    assert_eq!(reference.len(), CRASH_TASKS as usize);

    // SIGKILL once six lines are logged (task 0's map and reduce, two of
    // task 1's three children): mid-map.
    let (db, log) = (dir.path().join("t.db"), dir.path().join("exec.log"));
    let mut first = spawn_run(&db, &log, 20);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while log_counts(&log).len() < 6 {
        assert!(
            first.try_wait().unwrap().is_none(),
            "the helper ended before it was killed"
        );
        assert!(
            std::time::Instant::now() < deadline,
            "no child finished in time"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
    first.kill().unwrap(); // SIGKILL: no destructor, no flush
    assert!(!first.wait().unwrap().success());

    // What was durable at the kill: the app ids derive from the run id, so
    // they can be computed here.
    let persister = SqlitePersister::open(&db).await.unwrap();
    let mut durable = Vec::new();
    for t in 0..CRASH_TASKS {
        let task_id = child_app_id("nightly-research", 0, "task", &format!("t{t}"));
        let done = |history: Vec<tributary::Checkpoint>| {
            history.iter().any(|c| c.status == StepStatus::Completed)
        };
        if done(persister.history(&task_id).await.unwrap()) {
            durable.push(format!("{t} r"));
        }
        for c in 0..3 {
            let id = child_app_id(&task_id, 0, "map", &c.to_string());
            if done(persister.history(&id).await.unwrap()) {
                durable.push(format!("{t} {c}"));
            }
        }
    }
    persister.database().clone().close().await.unwrap();
    drop(persister);
    let total = CRASH_TASKS as usize * 4;
    assert!(!durable.is_empty(), "nothing finished before the kill");
    assert!(durable.len() < total, "everything finished before the kill");

    // A new process, the same file, the same run id.
    let resumed = output_lines(spawn_run(&db, &log, 0));
    // Every Final, the reducer's input (the `results` in its state)
    // included, equals the uninterrupted run's, byte for byte.
    assert_eq!(resumed, reference);
    let counts = log_counts(&log);
    assert_eq!(counts.len(), total, "{counts:?}");
    for line in &durable {
        // Finished before the kill: never ran again.
        assert_eq!(counts[line], 1, "`{line}` ran again: {counts:?}");
    }
    // A step cut off between its log line and its checkpoint runs again,
    // at most once more.
    assert!(counts.values().all(|&n| n <= 2), "{counts:?}");
}
