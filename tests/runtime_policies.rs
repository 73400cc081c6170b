//! Completion policies, failure policies, retries, timeouts and panics.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{Value, json};
use tributary::{
    CancelReason, CompletionPolicy, Decision, FailurePolicy, FirstMatching, FirstN, Graph,
    ItemKind, QuickExit, Quorum, RetryPolicy, RunConfig, RunError, Runtime, State, StreamItem,
    TaskErrorKind, TaskSpec, action, default,
};

use crate::support::Count;

/// A graph of `steps` steps; each step sleeps `delay_ms` (from the state)
/// then counts itself in `steps_run`; the result is the state's `answer`.
fn stepper(steps: usize, steps_run: Count) -> Graph {
    let mut b = Graph::builder();
    for i in 0..steps {
        let c = steps_run.clone();
        b = b.action(action(format!("s{i}")).run(move |s: State, _, _| {
            let c = c.clone();
            async move {
                let ms = s.get("delay_ms").and_then(Value::as_u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                c.bump();
                Ok((json!({ "answer": s.get("answer").cloned() }), s))
            }
        }));
        if i > 0 {
            b = b.transition(format!("s{}", i - 1), format!("s{i}"), default());
        }
    }
    b.entrypoint("s0").build().unwrap()
}

fn task(key: &str, graph: &Graph, delay_ms: u64, answer: Value) -> TaskSpec {
    TaskSpec::new(key, graph.clone())
        .state(State::new().set("delay_ms", delay_ms).set("answer", answer))
}

#[tokio::test(start_paused = true)]
async fn quick_exit_the_losers_later_steps_never_run() {
    let steps = Count::default();
    let graph = stepper(3, steps.clone());
    let tasks = vec![
        task("slow", &graph, 100, json!("s")),
        task("fast", &graph, 10, json!("f")),
        task("slower", &graph, 250, json!("x")),
    ];
    let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().policy(QuickExit));
    let items: Vec<StreamItem> = stream.collect().await;
    let finals: Vec<_> = items.iter().filter(|i| i.kind == ItemKind::Final).collect();
    assert_eq!(finals.len(), 1);
    assert_eq!(&*finals[0].task_key, "fast");
    let mut cancelled: Vec<_> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Cancelled)
        .map(|i| i.task_key.to_string())
        .collect();
    cancelled.sort();
    assert_eq!(cancelled, ["slow", "slower"]);
    // fast ran 3 steps (ending at 30 ms); slow had finished none by then
    // and slower none: no later step of theirs ever ran.
    assert_eq!(steps.get(), 3);
    // Even much later.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(steps.get(), 3);
}

#[tokio::test(start_paused = true)]
async fn first_n_finishes_after_n_successes() {
    let graph = stepper(1, Count::default());
    let tasks: Vec<_> = (0..5)
        .map(|i| task(&format!("t{i}"), &graph, 10 * (i + 1), json!(i)))
        .collect();
    let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().policy(FirstN::new(2)));
    let outcomes = stream.outcomes().await.unwrap();
    let done: Vec<_> = outcomes
        .iter()
        .filter(|o| o.is_completed())
        .map(|o| o.key.to_string())
        .collect();
    assert_eq!(done, ["t0", "t1"]);
    assert_eq!(outcomes.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn quorum_finishes_when_enough_tasks_agree() {
    let graph = stepper(1, Count::default());
    let answers = [
        ("a", 10, "yes"),
        ("b", 20, "no"),
        ("c", 30, "yes"),
        ("d", 40, "yes"),
        ("e", 50, "no"),
    ];
    let tasks: Vec<_> = answers
        .iter()
        .map(|(k, ms, a)| task(k, &graph, *ms, json!(a)))
        .collect();
    let policy = Quorum::new(2).by(|item| {
        item.result
            .as_ref()
            .map_or(Value::Null, |r| r["answer"].clone())
    });
    let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().policy(policy));
    let outcomes = stream.outcomes().await.unwrap();
    let done: Vec<_> = outcomes
        .iter()
        .filter(|o| o.is_completed())
        .map(|o| o.key.to_string())
        .collect();
    // a (yes), b (no), c (yes): two yes votes at 30 ms; d and e cancelled.
    assert_eq!(done, ["a", "b", "c"]);
}

#[tokio::test(start_paused = true)]
async fn first_matching_finishes_at_the_first_passing_result() {
    let graph = stepper(1, Count::default());
    let tasks: Vec<_> = (0..5)
        .map(|i| task(&format!("t{i}"), &graph, 10 * (i + 1), json!(i * 10)))
        .collect();
    let policy = FirstMatching::new(|item| {
        item.result
            .as_ref()
            .is_some_and(|r| r["answer"].as_u64() >= Some(25))
    });
    let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().policy(policy));
    let outcomes = stream.outcomes().await.unwrap();
    let done: Vec<_> = outcomes
        .iter()
        .filter(|o| o.is_completed())
        .map(|o| o.key.to_string())
        .collect();
    assert_eq!(done, ["t0", "t1", "t2", "t3"]);
}

/// Cancels any task that emits a token saying "stop".
#[derive(Clone)]
struct CancelOnStop;

impl CompletionPolicy for CancelOnStop {
    fn on_item(&mut self, item: &StreamItem) -> Decision {
        if item.result == Some(json!("stop")) {
            Decision::CancelTask(item.task_key.clone())
        } else {
            Decision::Continue
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_custom_policy_cancels_one_task_and_the_run_goes_on() {
    let talker = Graph::single(
        action("talk")
            .reads(["say"])
            .run(|s: State, _, ctx| async move {
                ctx.emit(s.get("say").cloned().unwrap()).await?;
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok((json!({}), s))
            }),
    );
    let tasks = vec![
        TaskSpec::new("a", talker.clone()).state(State::new().set("say", "hello")),
        TaskSpec::new("b", talker.clone()).state(State::new().set("say", "stop")),
    ];
    let (_h, stream) = Runtime::new().run(tasks, RunConfig::new().policy(CancelOnStop));
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed());
    assert!(
        matches!(outcomes[1].status, tributary::TaskStatus::Cancelled { ref reason } if *reason == CancelReason::Policy)
    );
}

/// Task `boom` panics in its second step; the others take 3 steps.
fn panicking_run(failure: FailurePolicy) -> (tributary::RunHandle, tributary::RunStream, Count) {
    let steps = Count::default();
    let graph = stepper(3, steps.clone());
    let bomb = Graph::builder()
        .action(action("ok").run(|s, _, _| async move { Ok((json!({}), s)) }))
        .action(action("explode").run(|_s: State, _, _| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            panic!("kaboom")
        }))
        .transition("ok", "explode", default())
        .entrypoint("ok")
        .build()
        .unwrap();
    let tasks = vec![
        task("a", &graph, 10, json!(1)),
        TaskSpec::new("boom", bomb),
        task("c", &graph, 10, json!(3)),
    ];
    let (h, s) = Runtime::new().run(tasks, RunConfig::new().failure_policy(failure));
    (h, s, steps)
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_under_fail_fast_cancels_the_rest_and_surfaces_the_error() {
    let (_h, stream, steps) = panicking_run(FailurePolicy::FailFast);
    let items: Vec<StreamItem> = stream.collect().await;
    let failed: Vec<_> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0].error.as_ref().is_some_and(
            |e| e.kind == TaskErrorKind::Panicked && e.message.contains("panicked: kaboom")
        ),
        "{:?}",
        failed[0].error
    );
    assert_eq!(
        items
            .iter()
            .filter(|i| i.kind == ItemKind::Cancelled)
            .count(),
        2
    );
    // The panic came at 5 ms, before a and c finished their first step.
    assert_eq!(steps.get(), 0);

    let (_h, stream, _) = panicking_run(FailurePolicy::FailFast);
    let err = stream.finish().await.unwrap_err();
    assert!(matches!(err, RunError::TaskFailed { ref task_key, .. } if task_key == "boom"));
}

#[tokio::test(start_paused = true)]
async fn a_panicking_task_under_continue_is_reported_and_the_rest_complete() {
    let (_h, stream, steps) = panicking_run(FailurePolicy::Continue);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed() && outcomes[2].is_completed());
    assert!(
        matches!(&outcomes[1].status, tributary::TaskStatus::Failed { error } if error.kind == TaskErrorKind::Panicked && error.message.contains("kaboom"))
    );
    assert_eq!(steps.get(), 6);
}

#[tokio::test(start_paused = true)]
async fn retries_with_backoff_resume_at_the_failed_step() {
    let first_runs = Count::default();
    let flaky_runs = Count::default();
    let (f, k) = (first_runs.clone(), flaky_runs.clone());
    let graph = Graph::builder()
        .action(action("first").run(move |s, _, _| {
            let f = f.clone();
            async move {
                f.bump();
                Ok((json!({}), s))
            }
        }))
        .action(action("flaky").run(move |s, _, _| {
            let k = k.clone();
            async move {
                k.bump();
                if k.get() < 3 {
                    return Err::<(Value, State), _>("transient".into());
                }
                Ok((json!({ "ok": true }), s))
            }
        }))
        .transition("first", "flaky", default())
        .entrypoint("first")
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    let config = RunConfig::new().retry(RetryPolicy::exponential(3, Duration::from_millis(100)));
    let (_h, stream) = Runtime::new().run(vec![TaskSpec::new("t", graph.clone())], config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed());
    assert_eq!((first_runs.get(), flaky_runs.get()), (1, 3));
    // Backoff 100 ms then 200 ms.
    assert_eq!(start.elapsed(), Duration::from_millis(300));

    // Out of attempts: the task fails with the step's error.
    let flaky_runs2 = Count::default();
    let k = flaky_runs2.clone();
    let always = Graph::single(action("never").run(move |_s: State, _, _| {
        let k = k.clone();
        async move {
            k.bump();
            Err::<(Value, State), _>("still broken".into())
        }
    }));
    let config = RunConfig::new()
        .retry(RetryPolicy::exponential(2, Duration::from_millis(10)))
        .failure_policy(FailurePolicy::Continue);
    let (_h, stream) = Runtime::new().run(vec![TaskSpec::new("t", always)], config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(
        matches!(&outcomes[0].status, tributary::TaskStatus::Failed { error } if error.kind == TaskErrorKind::ActionFailed && error.message.contains("still broken"))
    );
    assert_eq!(flaky_runs2.get(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_task_that_runs_too_long_fails_with_a_timeout() {
    let steps = Count::default();
    let graph = stepper(5, steps.clone());
    let config = RunConfig::new()
        .task_timeout(Duration::from_millis(250))
        .failure_policy(FailurePolicy::Continue);
    let tasks = vec![
        task("slow", &graph, 100, json!(0)),
        task("quick", &graph, 10, json!(0)),
    ];
    let (_h, stream) = Runtime::new().run(tasks, config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(
        matches!(&outcomes[0].status, tributary::TaskStatus::Failed { error } if error.kind == TaskErrorKind::TimedOut && error.message == "task `slow` timed out after 250ms")
    );
    assert!(outcomes[1].is_completed());
    // slow finished 2 steps (200 ms) before its timeout; quick all 5.
    assert_eq!(steps.get(), 7);
}

/// An action's own error type, as a client library would return it.
#[derive(Debug)]
struct Status(u16);

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "http status {}", self.0)
    }
}

impl std::error::Error for Status {}

/// Whether an error is an HTTP status worth retrying (429 or 5xx).
fn transient(error: &tributary::ApplicationError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(Status(code)) = e.downcast_ref::<Status>() {
            return *code == 429 || *code >= 500;
        }
        source = e.source();
    }
    false
}

#[tokio::test(start_paused = true)]
async fn a_retry_predicate_retries_transient_errors_only() {
    // `code` fails twice with the status in the state, then succeeds.
    let calls = |runs: Count| {
        Graph::single(action("call").run(move |s: State, _, _| {
            let runs = runs.clone();
            async move {
                runs.bump();
                let code: u16 = s.get_as("code")?;
                if runs.get() <= 2 {
                    return Err(Box::new(Status(code)) as tributary::BoxError);
                }
                Ok((json!({}), s))
            }
        }))
    };
    let config = RunConfig::new()
        .retry(
            RetryPolicy::exponential(5, Duration::from_millis(10))
                .jitter()
                .retry_if(transient),
        )
        .failure_policy(FailurePolicy::Continue);
    let (rate_limited, bad_request) = (Count::default(), Count::default());
    let tasks = vec![
        TaskSpec::new("429", calls(rate_limited.clone())).state(State::new().set("code", 429)),
        TaskSpec::new("400", calls(bad_request.clone())).state(State::new().set("code", 400)),
    ];
    let (_h, stream) = Runtime::new().run(tasks, config);
    let outcomes = stream.outcomes().await.unwrap();
    assert!(outcomes[0].is_completed());
    assert_eq!(rate_limited.get(), 3);
    assert!(
        matches!(&outcomes[1].status, tributary::TaskStatus::Failed { error } if error.message.contains("http status 400"))
    );
    assert_eq!(bad_request.get(), 1, "a 400 is not retried");
}

#[test]
fn jitter_spreads_the_waits_above_the_plain_backoff() {
    let plain: Vec<Duration> = RetryPolicy::exponential(6, Duration::from_millis(100))
        .backoffs()
        .collect();
    assert_eq!(plain, [100, 200, 400, 800, 1600].map(Duration::from_millis));
    let jittered: Vec<Duration> = RetryPolicy::exponential(6, Duration::from_millis(100))
        .jitter()
        .backoffs()
        .collect();
    assert_eq!(jittered.len(), plain.len());
    assert!(jittered.iter().zip(&plain).all(|(j, p)| j >= p));
    assert_ne!(jittered, plain);
}

#[tokio::test(start_paused = true)]
async fn a_start_rate_spaces_task_starts_across_the_runtime() {
    let started = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let t0 = tokio::time::Instant::now();
    let work = {
        let started = started.clone();
        Graph::single(action("work").run(move |s: State, _, _| {
            let started = started.clone();
            async move {
                started.lock().unwrap().push(t0.elapsed().as_millis());
                Ok((json!({}), s))
            }
        }))
    };
    let runtime = Runtime::builder().start_rate(10.0).build();
    let tasks = (0..5).map(move |i| TaskSpec::new(format!("t{i}"), work.clone()));
    let (_h, stream) = runtime.run(tributary::TaskSource::iter(tasks), RunConfig::new());
    stream.finish().await.unwrap();
    assert_eq!(*started.lock().unwrap(), [0, 100, 200, 300, 400]);
}
