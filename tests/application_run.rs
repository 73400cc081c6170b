//! Running an application: sequence ids, halting rules, iterate, inputs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use futures_util::StreamExt;
use serde_json::json;
use tributary::{
    Advance, Application, ApplicationError, Graph, HaltReason, Inputs, RunOptions, State, action,
    default, when,
};

/// a -> b -> c -> (end); each appends its name to `trail`.
fn chain() -> Graph {
    let step = |name: &'static str| {
        action(name)
            .reads(["trail"])
            .writes(["trail"])
            .run(move |s: State, _, ctx| async move {
                let s = s.append("trail", name)?;
                Ok((json!({ "ran": name, "seq": ctx.sequence_id() }), s))
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

async fn app() -> Application {
    Application::builder(chain())
        .app_id("chain")
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn sequence_ids_start_at_zero_and_increase_by_one() {
    let mut app = app().await;
    assert_eq!(app.sequence_id(), None);
    let mut seqs = Vec::new();
    while let Some(rec) = app.step(&Inputs::new()).await.unwrap() {
        assert_eq!(rec.result["seq"], json!(rec.sequence_id));
        seqs.push(rec.sequence_id);
    }
    assert_eq!(seqs, [0, 1, 2]);
    assert_eq!(app.sequence_id(), Some(2));
    assert_eq!(app.state().get("trail"), Some(&json!(["a", "b", "c"])));
}

#[tokio::test]
async fn halt_after_returns_the_action_result() {
    let mut app = app().await;
    let out = app.run(RunOptions::after(["b"])).await.unwrap();
    assert_eq!(out.action.as_deref(), Some("b"));
    assert_eq!(out.result, Some(json!({ "ran": "b", "seq": 1 })));
    assert_eq!(out.reason, HaltReason::HaltAfter);
    assert_eq!(app.next_action(), Some("c"));
}

#[tokio::test]
async fn halt_before_gives_no_result_and_does_not_run_the_action() {
    let mut app = app().await;
    let out = app.run(RunOptions::before(["c"])).await.unwrap();
    assert_eq!(out.action.as_deref(), Some("c"));
    assert_eq!(out.result, None);
    assert_eq!(out.reason, HaltReason::HaltBefore);
    assert_eq!(out.state.get("trail"), Some(&json!(["a", "b"])));
}

#[tokio::test]
async fn halt_before_beats_halt_after() {
    let mut app = app().await;
    // After `b`, both hold: `b` is in halt_after and `c` in halt_before.
    let out = app
        .run(RunOptions::after(["b"]).halt_before(["c"]))
        .await
        .unwrap();
    assert_eq!(out.reason, HaltReason::HaltBefore);
    assert_eq!(out.result, None);
    assert_eq!(out.action.as_deref(), Some("c"));
}

#[tokio::test]
async fn the_first_action_runs_before_any_halt_check() {
    let mut app = app().await;
    let out = app.run(RunOptions::before(["a", "b"])).await.unwrap();
    // `a` ran although it is in halt_before; the run halted before `b`.
    assert_eq!(out.state.get("trail"), Some(&json!(["a"])));
    assert_eq!(out.action.as_deref(), Some("b"));
}

#[tokio::test]
async fn the_run_ends_when_no_transition_holds() {
    let mut app = app().await;
    let out = app.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.reason, HaltReason::GraphEnd);
    assert_eq!(out.action.as_deref(), Some("c"));
    // Nothing left: running again runs nothing.
    let again = app.run(RunOptions::new()).await.unwrap();
    assert_eq!((again.action, again.result), (None, None));
    assert_eq!(app.sequence_id(), Some(2));
}

#[tokio::test]
async fn unknown_halt_actions_are_refused_before_anything_runs() {
    let mut app = app().await;
    let err = app.run(RunOptions::after(["nope"])).await.unwrap_err();
    assert!(matches!(err, ApplicationError::UnknownHaltAction(ref a) if a == "nope"));
    assert_eq!(app.sequence_id(), None);
    let first = app
        .iterate(RunOptions::before(["ghost"]))
        .next()
        .await
        .unwrap();
    assert!(matches!(first, Err(ApplicationError::UnknownHaltAction(_))));
}

#[tokio::test]
async fn iterate_yields_each_step_and_stops_at_the_halt() {
    let mut app = app().await;
    let steps: Vec<_> = app
        .iterate(RunOptions::after(["b"]))
        .map(|r| r.unwrap().action.to_string())
        .collect()
        .await;
    assert_eq!(steps, ["a", "b"]);
    let rest: Vec<_> = app
        .iterate(RunOptions::new())
        .map(|r| r.unwrap().sequence_id)
        .collect()
        .await;
    assert_eq!(rest, [2]);
}

#[tokio::test]
async fn iterate_stops_after_an_error() {
    let graph = Graph::builder()
        .action(action("ok").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("bad").run(|_s: State, _, _| async move {
            Err::<(serde_json::Value, State), _>("no".into())
        }))
        .transition("ok", "bad", default())
        .entrypoint("ok")
        .build()
        .unwrap();
    let mut app = Application::builder(graph).build().await.unwrap();
    let items: Vec<_> = app.iterate(RunOptions::new()).collect().await;
    assert_eq!(items.len(), 2);
    assert!(items[0].is_ok() && items[1].is_err());
}

#[tokio::test]
async fn inputs_reach_every_step_that_declares_them() {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let graph = Graph::builder()
        .action(
            action("loop")
                .inputs(["step"])
                .reads(["n"])
                .writes(["n"])
                .run(move |s: State, i, _| {
                    let c = Arc::clone(&c);
                    async move {
                        c.fetch_add(1, Ordering::SeqCst);
                        let by: i64 = i.get_as("step")?;
                        let s = s.increment("n", by)?;
                        Ok((json!({}), s))
                    }
                }),
        )
        .action(action("stop").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .transition("loop", "stop", when("n", 9))
        .transition("loop", "loop", default())
        .entrypoint("loop")
        .build()
        .unwrap();
    let mut app = Application::builder(graph)
        .state(State::new().set("n", 0))
        .build()
        .await
        .unwrap();
    let out = app
        .run(RunOptions::after(["stop"]).inputs(Inputs::new().with("step", 3)))
        .await
        .unwrap();
    assert_eq!(out.state.get("n"), Some(&json!(9)));
    assert_eq!(calls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_failed_step_keeps_the_state_and_is_retried_at_the_same_sequence_id() {
    let graph =
        Graph::builder()
            .action(action("flaky").reads(["go"]).writes(["done"]).run(
                |s: State, _, _| async move {
                    if s.get("go") != Some(&json!(true)) {
                        return Err("not yet".into());
                    }
                    Ok((json!({}), s.set("done", true)))
                },
            ))
            .entrypoint("flaky")
            .build()
            .unwrap();
    let mut app = Application::builder(graph).build().await.unwrap();
    let err = app.step(&Inputs::new()).await.unwrap_err();
    assert!(matches!(err, ApplicationError::Step { sequence_id: 0, .. }));
    assert!(app.state().is_empty());
    app.set_state(State::new().set("go", true));
    assert_eq!(app.sequence_id(), Some(0));
    let rec = app.step(&Inputs::new()).await.unwrap().unwrap();
    assert_eq!(rec.sequence_id, 0);
}

/// Drive `app` with `advance` to its halt: (intermediate nodes, outcome).
async fn drive(app: &mut Application, opts: &RunOptions) -> (Vec<String>, tributary::RunOutcome) {
    let mut nodes = Vec::new();
    loop {
        let (node, outcome) = app.advance(opts).await.unwrap().split();
        nodes.extend(node.map(|n| n.action.to_string()));
        if let Some(outcome) = outcome {
            return (nodes, outcome);
        }
    }
}

#[tokio::test]
async fn advance_halts_where_run_halts_with_the_same_outcome() {
    let cases = [
        RunOptions::new(),
        RunOptions::after(["b"]),
        RunOptions::before(["c"]),
        RunOptions::after(["b"]).halt_before(["c"]),
        RunOptions::before(["a"]),
        RunOptions::after(["a"]),
    ];
    for opts in cases {
        let by_run = app().await.run(opts.clone()).await.unwrap();
        let mut stepped = app().await;
        let (_, by_advance) = drive(&mut stepped, &opts).await;
        assert_eq!(by_advance, by_run, "{opts:?}");
        assert_eq!(stepped.state(), &by_run.state);
    }
}

#[tokio::test]
async fn advance_reports_intermediate_nodes_apart_from_the_halt_step() {
    // Halting after `c` (the graph's end): a and b are nodes, c is the halt.
    let (nodes, outcome) = drive(&mut app().await, &RunOptions::new()).await;
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(outcome.reason, HaltReason::GraphEnd);
    assert_eq!(outcome.result, Some(json!({ "ran": "c", "seq": 2 })));

    // Halting before `c`: b ran and is a node; the outcome names c, no result.
    let (nodes, outcome) = drive(&mut app().await, &RunOptions::before(["c"])).await;
    assert_eq!(nodes, ["a", "b"]);
    assert_eq!(outcome.action.as_deref(), Some("c"));
    assert_eq!(outcome.result, None);
    assert_eq!(outcome.reason, HaltReason::HaltBefore);
}

#[tokio::test]
async fn advance_with_nothing_left_halts_without_a_step() {
    let mut app = app().await;
    app.run(RunOptions::new()).await.unwrap();
    match app.advance(&RunOptions::new()).await.unwrap() {
        Advance::Halt { step, outcome } => {
            assert!(step.is_none());
            assert_eq!(outcome.reason, HaltReason::GraphEnd);
            assert_eq!(outcome.action, None);
        }
        other => panic!("expected a halt, got {other:?}"),
    }
    assert_eq!(app.sequence_id(), Some(2));
}

/// ping <-> pong, two actions that never await; the loop ends only when
/// `stop` is set (pong copies it into the state).
fn busy_loop(stop: Arc<std::sync::atomic::AtomicBool>) -> Graph {
    Graph::builder()
        .action(action("ping").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("pong").writes(["stop"]).run(move |s: State, _, _| {
            let stop = stop.load(Ordering::Relaxed);
            async move { Ok((json!({}), s.set("stop", stop))) }
        }))
        .transition("ping", "pong", default())
        .transition("pong", "ping", when("stop", false))
        .entrypoint("ping")
        .build()
        .unwrap()
}

/// Run the busy loop under `tokio::time::timeout(50 ms)` on `runtime` in a
/// thread of its own; whether the timeout fired, or `None` if nothing came
/// back within 20 s (the loop is then stopped through its flag, so the test
/// never hangs).
fn timeout_of_a_busy_loop(runtime: tokio::runtime::Runtime) -> Option<bool> {
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let graph = busy_loop(stop.clone());
    let thread = std::thread::spawn(move || {
        let fired = runtime.block_on(async move {
            let mut app = Application::builder(graph).build().await.unwrap();
            let run = app.run(RunOptions::new());
            tokio::time::timeout(Duration::from_millis(50), run)
                .await
                .is_err()
        });
        let _ = tx.send(fired);
    });
    let fired = rx.recv_timeout(Duration::from_secs(20)).ok();
    stop.store(true, Ordering::Relaxed);
    thread.join().unwrap();
    fired
}

#[test]
fn a_timeout_fires_around_a_run_whose_steps_never_await_current_thread() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(timeout_of_a_busy_loop(runtime), Some(true));
}

#[test]
fn a_timeout_fires_around_a_run_whose_steps_never_await_multi_thread() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();
    assert_eq!(timeout_of_a_busy_loop(runtime), Some(true));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spawned_busy_run_can_be_aborted() {
    // Aborting a task only takes effect when it yields: the budget makes a
    // never-awaiting run yield.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let graph = busy_loop(stop.clone());
    let started = Arc::new(tokio::sync::Notify::new());
    let running = started.clone();
    let task = tokio::spawn(async move {
        let mut app = Application::builder(graph).build().await.unwrap();
        running.notify_one();
        app.run(RunOptions::new()).await
    });
    tokio::time::timeout(std::time::Duration::from_secs(20), started.notified())
        .await
        .expect("the run started");
    task.abort();
    let joined = tokio::time::timeout(std::time::Duration::from_secs(20), task).await;
    stop.store(true, Ordering::Relaxed);
    let joined = joined.expect("the aborted run stopped");
    assert!(joined.unwrap_err().is_cancelled());
}

#[tokio::test]
async fn a_context_kept_from_an_earlier_step_does_not_count_into_the_next_one() {
    use std::sync::Mutex;
    use tributary::ActionContext;

    let kept: Arc<Mutex<Option<ActionContext>>> = Arc::default();
    let keep = Arc::clone(&kept);
    let first = action("first").run(move |s: State, _, ctx| {
        let keep = Arc::clone(&keep);
        async move {
            ctx.emit(json!(1)).await?;
            *keep.lock().unwrap() = Some(ctx);
            Ok((json!({}), s))
        }
    });
    let reuse = Arc::clone(&kept);
    let second = action("second").run(move |s: State, _, ctx| {
        let reuse = Arc::clone(&reuse);
        async move {
            let old = reuse
                .lock()
                .unwrap()
                .take()
                .expect("the first step kept its context");
            old.emit(json!(2)).await?;
            old.emit(json!(3)).await?;
            assert_eq!(
                old.items_emitted(),
                3,
                "the kept context counts on for its own step"
            );
            assert_eq!(ctx.items_emitted(), 0, "the new step starts from zero");
            ctx.emit(json!(4)).await?;
            assert_eq!(ctx.items_emitted(), 1);
            Ok((json!({}), s))
        }
    });
    let plain = action("third").run(|s: State, _, ctx| async move {
        ctx.emit(json!(5)).await?;
        assert_eq!(ctx.items_emitted(), 1);
        Ok((json!({}), s))
    });
    let graph = Graph::builder()
        .action(first)
        .action(second)
        .action(plain)
        .transition("first", "second", default())
        .transition("second", "third", default())
        .entrypoint("first")
        .build()
        .unwrap();
    let mut app = Application::builder(graph).build().await.unwrap();
    let opts = RunOptions::new();
    let mut items = Vec::new();
    for _ in 0..3 {
        items.push(app.step(opts.get_inputs()).await.unwrap().unwrap().items);
    }
    assert_eq!(items, [1, 1, 1]);
}
