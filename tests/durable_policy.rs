//! Step policies: retries with backoff, the retry predicate, terminal
//! errors and the timeout per attempt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use serde_json::json;
use tributary::BoxError;
use tributary::durable::*;

use crate::durable_support::{LastError, graph_of, run_app};

/// An action whose one step fails `failures` times (with `error`) before
/// succeeding, under `policy`; the number of attempts is counted.
fn flaky(
    failures: u32,
    error: fn() -> BoxError,
    policy: StepPolicy,
    attempts: Arc<AtomicU32>,
    last: LastError,
) -> tributary::Graph {
    graph_of(move |ctx| {
        let (policy, attempts, last) = (policy.clone(), attempts.clone(), last.clone());
        async move {
            let v: u32 = last.keep(
                ctx.step_with("call", |attempt| {
                    let attempts = attempts.clone();
                    async move {
                        attempts.fetch_add(1, Ordering::SeqCst);
                        if attempt.attempt <= failures {
                            return Err(error());
                        }
                        Ok::<_, BoxError>(attempt.attempt)
                    }
                })
                .policy(policy)
                .await,
            )?;
            Ok(json!(v))
        }
    })
}

fn transient() -> BoxError {
    "service unavailable".into()
}

fn terminal() -> BoxError {
    Terminal::new("card declined").into()
}

fn retries(n: usize) -> StepPolicy {
    StepPolicy::new()
        .retries(n)
        .backoff(Duration::from_millis(10), Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn k_failures_with_k_retries_succeed_and_k_plus_one_fail() {
    for k in 0..4u32 {
        // k failures, k retries: the (k+1)-th attempt succeeds.
        let attempts = Arc::new(AtomicU32::new(0));
        let journal = Journal::new(Arc::new(MemoryJournal::new()));
        let graph = flaky(
            k,
            transient,
            retries(k as usize),
            attempts.clone(),
            LastError::default(),
        );
        assert_eq!(
            run_app(&graph, "ok", &journal).await.unwrap(),
            json!(k + 1),
            "k = {k}"
        );
        assert_eq!(attempts.load(Ordering::SeqCst), k + 1);

        // k + 1 failures, k retries: the step fails after k + 1 attempts.
        let attempts = Arc::new(AtomicU32::new(0));
        let last = LastError::default();
        let graph = flaky(
            k + 1,
            transient,
            retries(k as usize),
            attempts.clone(),
            last.clone(),
        );
        run_app(&graph, "fail", &journal).await.unwrap_err();
        assert_eq!(attempts.load(Ordering::SeqCst), k + 1, "k = {k}");
        match last.take() {
            Some(DurableError::StepFailed {
                step,
                attempts,
                source,
            }) => {
                assert_eq!(step, StepKey::new("call", 0));
                assert_eq!(attempts, k + 1);
                assert_eq!(source.to_string(), "service unavailable");
            }
            other => panic!("k = {k}: expected a step failure, got {other:?}"),
        }
    }
}

#[tokio::test(start_paused = true)]
async fn retries_wait_for_the_exponential_backoff() {
    let attempts = Arc::new(AtomicU32::new(0));
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let policy = StepPolicy::new()
        .retries(3)
        .backoff(Duration::from_millis(100), Duration::from_secs(10));
    let graph = flaky(3, transient, policy, attempts.clone(), LastError::default());
    let started = tokio::time::Instant::now();
    run_app(&graph, "job", &journal).await.unwrap();
    // 100 + 200 + 400 ms between the four attempts (the paused clock
    // rounds each timer up to the next millisecond).
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(700) && waited < Duration::from_millis(710),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_terminal_error_is_not_retried() {
    let attempts = Arc::new(AtomicU32::new(0));
    let last = LastError::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = flaky(1, terminal, retries(5), attempts.clone(), last.clone());
    run_app(&graph, "job", &journal).await.unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 1);
    assert!(matches!(
        last.take(),
        Some(DurableError::StepFailed { attempts: 1, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn the_retry_predicate_decides_which_errors_are_retried() {
    let attempts = Arc::new(AtomicU32::new(0));
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let only_timeouts = retries(5).retry_if(|e| e.to_string().contains("timeout"));
    let graph = flaky(
        1,
        transient,
        only_timeouts.clone(),
        attempts.clone(),
        LastError::default(),
    );
    run_app(&graph, "job", &journal).await.unwrap_err();
    assert_eq!(
        attempts.load(Ordering::SeqCst),
        1,
        "not a timeout: not retried"
    );

    let attempts = Arc::new(AtomicU32::new(0));
    let graph = flaky(
        2,
        || "upstream timeout".into(),
        only_timeouts,
        attempts.clone(),
        LastError::default(),
    );
    assert_eq!(run_app(&graph, "job-2", &journal).await.unwrap(), json!(3));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn an_attempt_longer_than_the_timeout_fails_and_is_retried() {
    let attempts = Arc::new(AtomicU32::new(0));
    let last = LastError::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let policy = StepPolicy::new()
        .timeout(Duration::from_secs(1))
        .retries(1)
        .backoff(Duration::from_millis(10), Duration::from_millis(10));
    let graph = graph_of({
        let (attempts, last) = (attempts.clone(), last.clone());
        move |ctx| {
            let (attempts, last, policy) = (attempts.clone(), last.clone(), policy.clone());
            async move {
                let v: u32 = last.keep(
                    ctx.step_with("slow", |attempt| {
                        let attempts = attempts.clone();
                        async move {
                            attempts.fetch_add(1, Ordering::SeqCst);
                            // The first attempt hangs; the second is quick.
                            if attempt.attempt == 1 {
                                tokio::time::sleep(Duration::from_secs(3600)).await;
                            }
                            Ok::<_, BoxError>(attempt.attempt)
                        }
                    })
                    .policy(policy)
                    .await,
                )?;
                Ok(json!(v))
            }
        }
    });
    let started = tokio::time::Instant::now();
    assert_eq!(run_app(&graph, "job", &journal).await.unwrap(), json!(2));
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1010) && waited < Duration::from_millis(1020),
        "{waited:?}"
    );

    // Without a retry the timeout is the step's failure.
    let graph = graph_of({
        let last = last.clone();
        move |ctx| {
            let last = last.clone();
            async move {
                let v: u32 = last.keep(
                    ctx.step("hang", async {
                        tokio::time::sleep(Duration::from_secs(3600)).await;
                        Ok::<_, BoxError>(1)
                    })
                    .policy(StepPolicy::new().timeout(Duration::from_secs(2)))
                    .await,
                )?;
                Ok(json!(v))
            }
        }
    });
    run_app(&graph, "job-2", &journal).await.unwrap_err();
    match last.take() {
        Some(DurableError::StepFailed {
            source,
            attempts: 1,
            ..
        }) => {
            assert_eq!(source.to_string(), "step hang#0 timed out after 2s");
        }
        other => panic!("expected a timed-out step, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn a_step_of_one_future_reports_its_own_error_when_retries_are_asked_for() {
    let last = LastError::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = graph_of({
        let last = last.clone();
        move |ctx| {
            let last = last.clone();
            async move {
                let v: u32 = last.keep(
                    ctx.step("once", async { Err::<u32, _>("boom") })
                        .policy(retries(3))
                        .await,
                )?;
                Ok(json!(v))
            }
        }
    });
    run_app(&graph, "job", &journal).await.unwrap_err();
    match last.take() {
        Some(DurableError::StepFailed {
            source,
            attempts: 1,
            ..
        }) => {
            assert_eq!(source.to_string(), "boom");
        }
        other => panic!("expected the body's own error, got {other:?}"),
    }
}

#[tokio::test(start_paused = true)]
async fn pause_on_exhausted_in_an_action_fails_as_without_it() {
    // No workflow, nobody to resume it: the step fails after its retries.
    let attempts = Arc::new(AtomicU32::new(0));
    let last = LastError::default();
    let journal = Journal::new(Arc::new(MemoryJournal::new()));
    let graph = flaky(
        5,
        transient,
        retries(1).pause_on_exhausted(),
        attempts.clone(),
        last.clone(),
    );
    run_app(&graph, "job", &journal).await.unwrap_err();
    assert_eq!(attempts.load(Ordering::SeqCst), 2);
    assert!(matches!(
        last.take(),
        Some(DurableError::StepFailed { attempts: 2, .. })
    ));
}
