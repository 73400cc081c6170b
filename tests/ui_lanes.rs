//! Live lanes with a step watch and a goal: a retried step shows
//! `retrying`, a task paused by a durable step out of retries shows
//! `paused` with what it waits for, a parent names the parallel action its
//! children run in, and a run under a quorum or first-N policy counts
//! toward it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tributary::{FirstN, Quorum, RetryPolicy, RunConfig, Runtime, State, TaskSpec, action};
use tributary_ui::{Goal, StepWatch, UiServer};

use crate::ui_server::lane_when;
use crate::ui_support::{Served, get_json};

/// The run's snapshot until `done` holds of it (30 s at most).
async fn run_when(served: &Served, run: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        last = get_json(&served.url(&format!("/api/live/{run}"))).await;
        if done(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("run {run} never got there in 30 s: {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_being_retried_shows_retrying_with_its_attempt_and_error() {
    let attempts = Arc::new(AtomicU32::new(0));
    let gate = Arc::new(Notify::new());
    let flaky = {
        let (attempts, gate) = (Arc::clone(&attempts), Arc::clone(&gate));
        action("fetch").run(move |s: State, _, _| {
            let n = attempts.fetch_add(1, Ordering::SeqCst) + 1;
            let gate = Arc::clone(&gate);
            async move {
                if n == 1 {
                    return Err::<(Value, State), _>("the server said 503".into());
                }
                // The retry waits here until the test has seen it.
                gate.notified().await;
                Ok((json!({ "attempt": n }), s))
            }
        })
    };
    let watch = StepWatch::new();
    let config = RunConfig::new()
        .retry(RetryPolicy::exponential(3, Duration::from_millis(10)))
        .hook(watch.hook());
    let (handle, stream) = Runtime::new().run(vec![TaskSpec::action("flaky", flaky)], config);
    let ui = UiServer::new();
    let live = ui.attach_run("retry", handle);
    live.watch(watch);
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    let lane = lane_when(&served, "retry", "flaky", |l| l["status"] == "retrying").await;
    assert_eq!(lane["attempt"], 2, "{lane}");
    assert_eq!(lane["failures"], 1);
    assert_eq!(lane["step"], "fetch");
    assert!(
        lane["last_failure"].as_str().unwrap().contains("503"),
        "{lane}"
    );
    assert_eq!(attempts.load(Ordering::SeqCst), 2);

    gate.notify_one();
    let lane = lane_when(&served, "retry", "flaky", |l| l["status"] == "completed").await;
    assert_eq!(lane["failures"], 1);
    assert_eq!(consumer.await.unwrap(), 1);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_paused_by_a_durable_step_shows_paused_with_what_it_waits_for() {
    use std::sync::atomic::AtomicBool;
    use tributary::durable::{Journal, MemoryJournal, WithJournal};

    let healthy = Arc::new(AtomicBool::new(false));
    let pay =
        crate::durable_support::pay_pausing_until_healthy(Arc::clone(&healthy), Arc::default());
    let watch = StepWatch::new();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let config = RunConfig::new().journal(&journal).hook(watch.hook());
    let (handle, stream) = Runtime::new().run(vec![TaskSpec::action("order", pay)], config);
    let ui = UiServer::new();
    let live = ui.attach_run("durable", handle.clone());
    live.watch(watch);
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    let lane = lane_when(&served, "durable", "order", |l| {
        l["status"] == "paused" && !l["waiting"].is_null()
    })
    .await;
    let waiting = lane["waiting"].as_str().unwrap();
    assert!(
        waiting.contains("charge#0 out of retries") && waiting.contains("card service down"),
        "{lane}"
    );

    healthy.store(true, Ordering::SeqCst);
    handle.resume_task("order").unwrap();
    let lane = lane_when(&served, "durable", "order", |l| l["status"] == "completed").await;
    assert!(lane["waiting"].is_null(), "{lane}");
    assert_eq!(consumer.await.unwrap(), 1);
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_lane_names_the_parallel_action_its_children_run_in() {
    let watch = StepWatch::new();
    let child = tributary::Subgraph::action(action("tick").run(|s: State, _, ctx| async move {
        for n in 0u64.. {
            tokio::time::sleep(Duration::from_millis(20)).await;
            ctx.emit(n).await?;
        }
        Ok((json!({}), s))
    }));
    let fan = tributary::ParallelAction::map_states("fan_out", child, |_: &State, _| {
        Ok([0, 1].map(|n| State::new().set("n", n)))
    })
    .build();
    let graph = tributary::Graph::builder()
        .action(fan)
        .entrypoint("fan_out")
        .build()
        .unwrap();
    let (handle, stream) = Runtime::new().run(
        vec![TaskSpec::new("root", graph)],
        RunConfig::new().hook(watch.hook()),
    );
    let ui = UiServer::new();
    let live = ui.attach_run("tree", handle.clone());
    live.watch(watch);
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    let root = lane_when(&served, "tree", "root", |l| !l["children_action"].is_null()).await;
    assert_eq!(root["children_action"], "fan_out", "{root}");
    assert_eq!(root["step"], "fan_out");
    let child = lane_when(&served, "tree", "root/1", |l| l["step"] == "tick").await;
    assert!(child["children_action"].is_null(), "{child}");
    handle.cancel().await;
    tokio::time::timeout(Duration::from_secs(10), consumer)
        .await
        .expect("the run ends once cancelled")
        .unwrap();
    served.stop().await;
}

/// Tasks `keys` whose single step returns `{"answer": answers[i]}`; the
/// task at `gated` waits for `gate` first, and `None` answers never come.
fn voters(
    answers: &[(&'static str, Option<&'static str>)],
    gate: &Arc<Notify>,
    gated: usize,
) -> Vec<TaskSpec> {
    answers
        .iter()
        .enumerate()
        .map(|(i, &(key, answer))| {
            let gate = Arc::clone(gate);
            TaskSpec::action(
                key,
                action("answer").run(move |s: State, _, _| {
                    let gate = Arc::clone(&gate);
                    async move {
                        if i == gated {
                            gate.notified().await;
                        }
                        match answer {
                            Some(a) => Ok((json!({ "answer": a }), s)),
                            None => std::future::pending().await,
                        }
                    }
                }),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quorum_run_counts_the_votes_toward_its_quorum() {
    let gate = Arc::new(Notify::new());
    let tasks = voters(
        &[("a", Some("yes")), ("b", Some("no")), ("c", Some("yes"))],
        &gate,
        2,
    );
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new().policy(Quorum::new(2)));
    let ui = UiServer::new();
    let live = ui.attach_run("vote", handle);
    live.goal(Goal::quorum(2));
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    // Two finals, two answers: one vote each, no quorum yet.
    let run = run_when(&served, "vote", |r| r["run"]["goal"]["answers"] == 2).await;
    let goal = &run["run"]["goal"];
    assert_eq!(goal["kind"], "quorum", "{goal}");
    assert_eq!(goal["needed"], 2);
    assert_eq!(goal["reached"], 1);
    assert_eq!(goal["met"], false);

    gate.notify_one();
    let run = run_when(&served, "vote", |r| r["run"]["goal"]["met"] == true).await;
    let goal = &run["run"]["goal"];
    assert_eq!(goal["reached"], 2, "{goal}");
    assert_eq!(goal["answers"], 2);
    assert_eq!(goal["leading"], json!({ "answer": "yes" }).to_string());
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_n_run_counts_its_successes_and_its_straggler_loses() {
    let gate = Arc::new(Notify::new());
    let tasks = voters(
        &[("a", Some("1")), ("b", Some("2")), ("slow", None)],
        &gate,
        1,
    );
    let (handle, stream) = Runtime::new().run(tasks, RunConfig::new().policy(FirstN::new(2)));
    let ui = UiServer::new();
    let live = ui.attach_run("first", handle);
    live.goal(Goal::first_n(2));
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    let run = run_when(&served, "first", |r| r["run"]["goal"]["reached"] == 1).await;
    assert_eq!(run["run"]["goal"]["kind"], "first_n");
    assert_eq!(run["run"]["goal"]["met"], false);
    gate.notify_one();
    let run = run_when(&served, "first", |r| r["run"]["ended"] == true).await;
    let goal = &run["run"]["goal"];
    assert_eq!(
        (goal["reached"].clone(), goal["met"].clone()),
        (json!(2), json!(true)),
        "{goal}"
    );
    let slow = lane_when(&served, "first", "slow", |l| l["status"] == "cancelled").await;
    assert_eq!(slow["lost"], true);
    consumer.await.unwrap();
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_lane_counts_its_childrens_first_n_policy() {
    let child =
        tributary::Subgraph::action(action("try").reads(["n"]).run(|s: State, _, _| async move {
            let n: u64 = s.get_as("n")?;
            if n == 2 {
                // The straggler: cancelled once two have succeeded.
                std::future::pending::<()>().await;
            }
            Ok((json!({ "n": n }), s))
        }));
    let fan = tributary::ParallelAction::map_states("attempts", child, |_: &State, _| {
        Ok([0u64, 1, 2].map(|n| State::new().set("n", n)))
    })
    .config(RunConfig::new().policy(FirstN::new(2)))
    .build();
    let graph = tributary::Graph::builder()
        .action(fan)
        .entrypoint("attempts")
        .build()
        .unwrap();
    let (handle, stream) = Runtime::new().run(vec![TaskSpec::new("root", graph)], RunConfig::new());
    let ui = UiServer::new();
    let live = ui.attach_run("nested", handle);
    live.lane_goal("root", Goal::first_n(2));
    let consumer = tokio::spawn(live.tap(stream).count());
    let served = Served::start(ui).await;

    let root = lane_when(&served, "nested", "root", |l| l["status"] == "completed").await;
    let goal = &root["goal"];
    assert_eq!(goal["kind"], "first_n", "{root}");
    assert_eq!(
        (goal["reached"].clone(), goal["met"].clone()),
        (json!(2), json!(true))
    );
    let straggler = lane_when(&served, "nested", "root/2", |l| l["status"] == "cancelled").await;
    assert_eq!(straggler["lost"], true, "{straggler}");
    // The run's own count is not this one.
    let run = get_json(&served.url("/api/live/nested")).await;
    assert!(run["run"]["goal"].is_null(), "{run}");
    consumer.await.unwrap();
    served.stop().await;
}
