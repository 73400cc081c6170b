//! Durable calls on workers: `ClusterInvoke` and `Graphs::functions`, on
//! the in-process broker.
#![cfg(feature = "durable")]

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tributary_cluster::{
    CallError, ClusterInvoke, ClusterOptions, ClusterRuntime, Graphs, MemoryBroker, Worker,
    WorkerStats,
};
use tributary_core::{BoxError, InMemoryPersister};
use tributary_durable::{
    DurableError, DurableExt, Functions, Invoke, JournalStore, MemoryJournal, StepPolicy, Terminal,
    WorkflowContext, Workflows,
};

fn fast() -> ClusterOptions {
    ClusterOptions::new()
        .heartbeat(Duration::from_millis(50))
        .alive_interval(Duration::from_millis(100))
        .unknown_graph_wait(Duration::from_millis(500))
}

/// `shout` (counted), `flaky` (fails its first `fail` calls with
/// "gateway busy <n>", counted), `strict` (takes a number).
fn functions(shouts: Arc<AtomicU32>, flaky: Arc<AtomicU32>, fail: u32) -> Functions {
    let functions = Functions::new();
    functions.register("shout", move |text: String| {
        let shouts = Arc::clone(&shouts);
        async move {
            shouts.fetch_add(1, Ordering::SeqCst);
            Ok::<_, BoxError>(text.to_uppercase())
        }
    });
    functions.register("flaky", move |n: u32| {
        let flaky = Arc::clone(&flaky);
        async move {
            let run = flaky.fetch_add(1, Ordering::SeqCst) + 1;
            if run <= fail {
                return Err::<u32, BoxError>(format!("gateway busy {run}").into());
            }
            Ok(n + 1)
        }
    });
    functions.register("strict", |n: u64| async move { Ok::<_, BoxError>(n) });
    functions
}

struct Fleet {
    stop: CancellationToken,
    run: tokio::task::JoinHandle<Arc<WorkerStats>>,
    stats: Arc<WorkerStats>,
}

async fn fleet(broker: &MemoryBroker, functions: Functions, persisted: bool) -> Fleet {
    let graphs = Graphs::new().functions(functions).unwrap();
    let mut builder = Worker::builder(broker.clone(), graphs).options(fast());
    if persisted {
        builder = builder.persister(Arc::new(InMemoryPersister::new()));
    }
    let worker = builder.build().unwrap();
    let stats = worker.stats();
    let stop = CancellationToken::new();
    let run = worker.run(stop.clone().cancelled_owned());
    let run = tokio::spawn(async move { run.await.unwrap() });
    Fleet { stop, run, stats }
}

impl Fleet {
    async fn stop(self) {
        self.stop.cancel();
        self.run.await.unwrap();
    }
}

fn invoker(broker: &MemoryBroker) -> ClusterInvoke {
    ClusterInvoke::new(ClusterRuntime::new(broker.clone()).options(fast()).unwrap())
}

fn call_error(error: &DurableError) -> Option<&CallError> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<CallError>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_workflow_call_runs_on_a_worker_and_replays_from_the_journal() {
    let broker = MemoryBroker::new();
    let shouts = Arc::new(AtomicU32::new(0));
    let fleet = fleet(
        &broker,
        functions(Arc::clone(&shouts), Arc::default(), 0),
        false,
    )
    .await;
    let store: Arc<dyn JournalStore> = Arc::new(MemoryJournal::new());
    let engine = |store: Arc<dyn JournalStore>| {
        let workflows = Workflows::new(store);
        workflows.set_functions(invoker(&broker));
        workflows.register("greet", |ctx: WorkflowContext, name: String| async move {
            let loud: String = ctx.call("shout", name).await?;
            let louder: String = ctx.call("shout", format!("{loud}!")).await?;
            Ok::<_, BoxError>(louder)
        });
        workflows
    };
    let first = engine(Arc::clone(&store));
    let out: String = first
        .start("greet", "g-1", "ada")
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, "ADA!");
    assert_eq!(shouts.load(Ordering::SeqCst), 2);
    let steps: Vec<String> = store
        .load("g-1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.step.to_string())
        .collect();
    assert_eq!(steps, ["call:shout#0", "call:shout#1"]);

    // Resumed by a new engine: both calls replay from the journal.
    let second = engine(store);
    let out: String = second.resume("g-1").await.unwrap().result().await.unwrap();
    assert_eq!(out, "ADA!");
    assert_eq!(shouts.load(Ordering::SeqCst), 2);
    assert_eq!(fleet.stats.completed(), 2);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_function_is_a_terminal_typed_error_not_retried() {
    let broker = MemoryBroker::new();
    let fleet = fleet(&broker, functions(Arc::default(), Arc::default(), 0), false).await;
    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    workflows.set_functions(invoker(&broker));
    workflows.register("missing", |ctx: WorkflowContext, ()| async move {
        let err = ctx
            .call::<_, String>("nope", "x")
            .policy(
                StepPolicy::new()
                    .retries(3)
                    .backoff(Duration::from_millis(1), Duration::from_millis(2)),
            )
            .await
            .unwrap_err();
        let DurableError::StepFailed { attempts, .. } = &err else {
            panic!("not a step failure: {err}");
        };
        let typed = call_error(&err).expect("a CallError in the chain");
        assert!(
            matches!(typed, CallError::UnknownFunction { function } if function == "nope"),
            "{typed:?}"
        );
        Ok::<_, BoxError>((*attempts, err.to_string()))
    });
    let (attempts, message): (u32, String) = workflows
        .start("missing", "m-1", ())
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(attempts, 1, "a terminal error is not retried");
    assert!(
        message.contains("no function is registered as nope"),
        "{message}"
    );
    assert_eq!(fleet.stats.claimed(), 1);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_input_is_terminal_with_its_message() {
    let broker = MemoryBroker::new();
    let fleet = fleet(&broker, functions(Arc::default(), Arc::default(), 0), false).await;
    let err = invoker(&broker)
        .invoke_keyed("strict", serde_json::json!("not a number"), "k-strict")
        .await
        .unwrap_err();
    assert!(Terminal::is_terminal(&err), "{err}");
    assert!(
        err.to_string()
            .contains("input of function strict does not fit its type"),
        "{err}"
    );
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_comes_back_with_its_message_and_is_retried() {
    let broker = MemoryBroker::new();
    let flaky = Arc::new(AtomicU32::new(0));
    // Persisted: a failed call must not be kept as an answer.
    let fleet = fleet(
        &broker,
        functions(Arc::default(), Arc::clone(&flaky), 2),
        true,
    )
    .await;
    let invoker = invoker(&broker);
    let err = invoker
        .call("flaky", serde_json::json!(1), "call/k-flaky")
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Failed { function, message } if function == "flaky" && message == "gateway busy 1"),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "gateway busy 1");
    assert!(!err.is_terminal());

    let workflows = Workflows::new(Arc::new(MemoryJournal::new()));
    workflows.set_functions(invoker);
    workflows.register("retry", |ctx: WorkflowContext, n: u32| async move {
        let out: u32 = ctx
            .call("flaky", n)
            .policy(
                StepPolicy::new()
                    .retries(3)
                    .backoff(Duration::from_millis(1), Duration::from_millis(2)),
            )
            .await?;
        Ok::<_, BoxError>(out)
    });
    let out: u32 = workflows
        .start("retry", "r-1", 41)
        .await
        .unwrap()
        .result()
        .await
        .unwrap();
    assert_eq!(out, 42);
    // One failure above, one in the workflow, then the success.
    assert_eq!(flaky.load(Ordering::SeqCst), 3);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finished_call_is_not_run_again_under_the_same_key() {
    let broker = MemoryBroker::new();
    let shouts = Arc::new(AtomicU32::new(0));
    let fleet = fleet(
        &broker,
        functions(Arc::clone(&shouts), Arc::default(), 0),
        true,
    )
    .await;
    let invoker = invoker(&broker);
    // A step's call, then the same call again (its workflow's process
    // crashed before journaling the result, and the step runs again).
    for _ in 0..2 {
        let out = invoker
            .invoke_keyed("shout", serde_json::json!("ada"), "wf-1/0/call:shout#0")
            .await
            .unwrap();
        assert_eq!(out, "ADA");
    }
    assert_eq!(shouts.load(Ordering::SeqCst), 1);
    // Another step's call runs.
    let out = invoker
        .invoke_keyed("shout", serde_json::json!("bob"), "wf-1/0/call:shout#1")
        .await
        .unwrap();
    assert_eq!(out, "BOB");
    assert_eq!(shouts.load(Ordering::SeqCst), 2);
    fleet.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_without_a_worker_serving_functions_fail_terminally() {
    let broker = MemoryBroker::new();
    let graphs = Graphs::new()
        .register(
            "other",
            tributary_core::Graph::single(tributary_core::action("noop").run(
                |s: tributary_core::State, _, _| async move { Ok((serde_json::json!({}), s)) },
            )),
        )
        .unwrap();
    let worker = Worker::builder(broker.clone(), graphs)
        .options(fast())
        .build()
        .unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn(worker.run(stop.clone().cancelled_owned()));
    let err = invoker(&broker)
        .call("shout", serde_json::json!("x"), "call/none")
        .await
        .unwrap_err();
    assert!(matches!(err, CallError::NotServed { .. }), "{err:?}");
    assert!(err.is_terminal());
    stop.cancel();
    run.await.unwrap().unwrap();
}

#[test]
fn functions_are_served_once() {
    let graphs = Graphs::new().functions(Functions::new()).unwrap();
    assert!(graphs.get(tributary_cluster::FUNCTIONS_GRAPH).is_some());
    assert!(graphs.functions(Functions::new()).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_actions_call_goes_to_the_fleet_through_an_invoker_extension() {
    use serde_json::json;
    use tributary_core::{Application, Graph, RunOptions, State, action};
    use tributary_durable::{Journal, WithJournal};

    let broker = MemoryBroker::new();
    let shouts = Arc::new(AtomicU32::new(0));
    let fleet = fleet(
        &broker,
        functions(Arc::clone(&shouts), Arc::default(), 0),
        false,
    )
    .await;
    let invoke: Arc<dyn Invoke> = Arc::new(invoker(&broker));
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = Graph::single(action("greet").writes(["loud"]).run(
        |s: State, _, ctx| async move {
            let loud: String = ctx.call("shout", "ada").await?;
            Ok((json!({}), s.set("loud", loud)))
        },
    ));
    for _ in 0..2 {
        let mut app = Application::builder(graph.clone())
            .app_id("greeter")
            .journal(&journal)
            .extension(Arc::clone(&invoke))
            .build()
            .await
            .unwrap();
        let out = app.run(RunOptions::new()).await.unwrap();
        assert_eq!(out.state.get("loud"), Some(&json!("ADA")));
    }
    // The second run replayed the journaled call.
    assert_eq!(shouts.load(Ordering::SeqCst), 1);
    fleet.stop().await;
}
