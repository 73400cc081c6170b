//! The contract every `Persister` keeps, written once and run against each
//! backend (`persistence_resume` for memory, `sqlite_persistence` for
//! SQLite, `postgres_persistence` for PostgreSQL). `open` hands out the
//! persister under test; a file-backed one reopens its file each time, so
//! every check also survives a reopen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tributary::{
    Application, Checkpoint, Graph, Inputs, PersistError, Persister, RunOptions, State, StepStatus,
    action, default,
};

/// Hands out the persister under test.
pub(crate) type Open = Arc<dyn Fn() -> BoxFuture<'static, Arc<dyn Persister>> + Send + Sync>;

/// Counts how often each of `a`, `b`, `c` ran. `b` fails while `fail_b` is
/// set.
#[derive(Clone, Default)]
pub(crate) struct Counters {
    a: Arc<AtomicUsize>,
    b: Arc<AtomicUsize>,
    c: Arc<AtomicUsize>,
    pub(crate) fail_b: Arc<AtomicBool>,
}

impl Counters {
    pub(crate) fn runs(&self) -> [usize; 3] {
        [&self.a, &self.b, &self.c].map(|c| c.load(Ordering::SeqCst))
    }
}

/// a -> b -> c, each appending its name to `trail`.
pub(crate) fn graph(k: &Counters) -> Graph {
    let counted = |name: &'static str, counter: Arc<AtomicUsize>, fail: Option<Arc<AtomicBool>>| {
        action(name)
            .reads(["trail"])
            .writes(["trail"])
            .run(move |s: State, _, _| {
                let counter = Arc::clone(&counter);
                let fail = fail.clone();
                async move {
                    counter.fetch_add(1, Ordering::SeqCst);
                    if fail.is_some_and(|f| f.load(Ordering::SeqCst)) {
                        return Err::<(Value, State), _>(format!("{name} failed").into());
                    }
                    Ok((json!({}), s.append("trail", name)?))
                }
            })
    };
    Graph::builder()
        .action(counted("a", Arc::clone(&k.a), None))
        .action(counted("b", Arc::clone(&k.b), Some(Arc::clone(&k.fail_b))))
        .action(counted("c", Arc::clone(&k.c), None))
        .transition("a", "b", default())
        .transition("b", "c", default())
        .entrypoint("a")
        .build()
        .unwrap()
}

/// The application `id` of `graph(k)`, resuming from `p`.
pub(crate) async fn build(k: &Counters, p: &Arc<dyn Persister>, id: &str) -> Application {
    Application::builder(graph(k))
        .app_id(id)
        .partition_key("user-1")
        .persister(Arc::clone(p))
        .resume()
        .build()
        .await
        .unwrap()
}

/// Every checkpoint of `app_id`, in sequence order, through the trait.
pub(crate) async fn history(p: &Arc<dyn Persister>, app_id: &str) -> Vec<Checkpoint> {
    let Some(last) = p.load(app_id, None).await.unwrap() else {
        return Vec::new();
    };
    let mut all = Vec::new();
    for seq in 0..=last.sequence_id {
        if let Some(cp) = p.load(app_id, Some(seq)).await.unwrap() {
            all.push(cp);
        }
    }
    all
}

fn summary(history: &[Checkpoint]) -> Vec<(u64, &str, StepStatus)> {
    history
        .iter()
        .map(|c| (c.sequence_id, c.action.as_str(), c.status))
        .collect()
}

pub(crate) async fn a_checkpoint_is_saved_after_every_step_with_its_status(open: Open) {
    let k = Counters::default();
    k.fail_b.store(true, Ordering::SeqCst);
    let p = open().await;
    let mut app = build(&k, &p, "job").await;
    assert!(app.run(RunOptions::new()).await.is_err());
    drop((app, p));

    let p = open().await;
    let history = history(&p, "job").await;
    assert_eq!(
        summary(&history),
        [
            (0, "a", StepStatus::Completed),
            (1, "b", StepStatus::Failed)
        ]
    );
    // A failed checkpoint holds the state from before the step.
    assert_eq!(history[1].state.get("trail"), Some(&json!(["a"])));
    assert_eq!(history[1].partition_key.as_deref(), Some("user-1"));
}

pub(crate) async fn resume_after_a_failure_reruns_only_the_failed_action(open: Open) {
    let k = Counters::default();
    k.fail_b.store(true, Ordering::SeqCst);
    let p = open().await;
    assert!(
        build(&k, &p, "job")
            .await
            .run(RunOptions::new())
            .await
            .is_err()
    );
    drop(p);

    k.fail_b.store(false, Ordering::SeqCst);
    let p = open().await;
    let mut again = build(&k, &p, "job").await;
    assert_eq!(again.next_action(), Some("b"));
    let out = again.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("trail"), Some(&json!(["a", "b", "c"])));
    assert_eq!(k.runs(), [1, 2, 1]);
    // The retry ran at the failed step's sequence id and replaced its
    // checkpoint: 0 a, 1 b, 2 c, all completed.
    let done = StepStatus::Completed;
    assert_eq!(
        summary(&history(&p, "job").await),
        [(0, "a", done), (1, "b", done), (2, "c", done)]
    );
}

pub(crate) async fn resume_after_a_completed_step_continues_at_the_next_action(open: Open) {
    let k = Counters::default();
    let p = open().await;
    build(&k, &p, "job")
        .await
        .run(RunOptions::after(["a"]))
        .await
        .unwrap();
    drop(p);

    let p = open().await;
    let mut again = build(&k, &p, "job").await;
    assert_eq!(again.next_action(), Some("b"));
    assert_eq!(again.sequence_id(), Some(0));
    again.run(RunOptions::new()).await.unwrap();
    assert_eq!(k.runs(), [1, 1, 1]);
    // A finished run resumes as finished: nothing runs again.
    let mut done = build(&k, &p, "job").await;
    assert_eq!(done.next_action(), None);
    assert_eq!(done.run(RunOptions::new()).await.unwrap().action, None);
    assert_eq!(k.runs(), [1, 1, 1]);
}

pub(crate) async fn fork_from_an_app_and_sequence_id(open: Open) {
    let k = Counters::default();
    let p = open().await;
    build(&k, &p, "orig")
        .await
        .run(RunOptions::new())
        .await
        .unwrap();

    let mut fork = Application::builder(graph(&k))
        .app_id("fork")
        .persister(Arc::clone(&p))
        .fork_from("orig", Some(0))
        .build()
        .await
        .unwrap();
    assert_eq!(fork.next_action(), Some("b"));
    assert_eq!(fork.state().get("trail"), Some(&json!(["a"])));
    let parent = fork.info().parent.clone().unwrap();
    assert_eq!((parent.app_id.as_str(), parent.sequence_id), ("orig", 0));
    fork.run(RunOptions::new()).await.unwrap();
    // The fork saves under its own id, continuing the sequence; the
    // original is untouched.
    let fork_seqs: Vec<u64> = history(&p, "fork")
        .await
        .iter()
        .map(|c| c.sequence_id)
        .collect();
    assert_eq!(fork_seqs, [1, 2]);
    assert_eq!(history(&p, "orig").await.len(), 3);
}

pub(crate) async fn load_latest_or_by_sequence_and_list_by_partition(open: Open) {
    let k = Counters::default();
    let p = open().await;
    build(&k, &p, "u1-a")
        .await
        .run(RunOptions::new())
        .await
        .unwrap();
    build(&k, &p, "u1-b")
        .await
        .run(RunOptions::after(["a"]))
        .await
        .unwrap();
    let mut other = Application::builder(graph(&k))
        .app_id("u2-a")
        .partition_key("user-2")
        .persister(Arc::clone(&p))
        .build()
        .await
        .unwrap();
    other.step(&Inputs::new()).await.unwrap();

    let p = open().await;
    assert_eq!(p.load("u1-a", None).await.unwrap().unwrap().sequence_id, 2);
    assert_eq!(p.load("u1-a", Some(1)).await.unwrap().unwrap().action, "b");
    assert!(p.load("u1-a", Some(9)).await.unwrap().is_none());
    assert!(p.load("u1-a", Some(u64::MAX)).await.unwrap().is_none());
    assert!(p.load("nobody", None).await.unwrap().is_none());
    assert_eq!(
        p.list_app_ids(Some("user-1")).await.unwrap(),
        ["u1-a", "u1-b"]
    );
    assert_eq!(p.list_app_ids(Some("user-2")).await.unwrap(), ["u2-a"]);
    assert!(p.list_app_ids(Some("user-3")).await.unwrap().is_empty());
    assert_eq!(
        p.list_app_ids(None).await.unwrap(),
        ["u1-a", "u1-b", "u2-a"]
    );
}

pub(crate) async fn save_is_an_upsert_and_the_state_round_trips(open: Open) {
    let p = open().await;
    let state = State::new()
        .set("text", "héllo \u{1F30A}")
        .set("nested", json!({"list": [1, 2.5, null, true], "obj": {}}));
    let mut cp = Checkpoint::new("x", 7, "a", StepStatus::Failed, State::new());
    p.save(&cp).await.unwrap();
    cp.status = StepStatus::Completed;
    cp.state = state.clone();
    cp.partition_key = Some("p".into());
    cp.result = Some(json!({"score": 0.5, "tags": ["a", "é"]}));
    p.save(&cp).await.unwrap();
    let p = open().await;
    let history = history(&p, "x").await;
    assert_eq!(history, [cp]);
    assert_eq!(history[0].state, state);
}

/// a -> b -> c, each with a result of its own, so a mix-up shows.
fn result_graph() -> Graph {
    let step = |name: &'static str, result: Value| {
        action(name)
            .reads(["trail"])
            .writes(["trail"])
            .run(move |s: State, _, _| {
                let result = result.clone();
                async move { Ok((result, s.append("trail", name)?)) }
            })
    };
    Graph::builder()
        .action(step("a", json!({"one": 1})))
        .action(step("b", json!({"two": "2"})))
        .action(step("c", json!({"three": 3})))
        .transition("a", "b", default())
        .transition("b", "c", default())
        .entrypoint("a")
        .build()
        .unwrap()
}

pub(crate) async fn a_checkpoint_holds_the_result_and_action_of_its_step(open: Open) {
    let p = open().await;
    let mut app = Application::builder(result_graph())
        .app_id("res")
        .persister(Arc::clone(&p))
        .build()
        .await
        .unwrap();
    app.run(RunOptions::after(["b"])).await.unwrap();
    drop((app, p));

    let p = open().await;
    let saved: Vec<(u64, String, Option<Value>)> = history(&p, "res")
        .await
        .into_iter()
        .map(|c| (c.sequence_id, c.action, c.result))
        .collect();
    assert_eq!(
        saved,
        [
            (0, "a".to_owned(), Some(json!({"one": 1}))),
            (1, "b".to_owned(), Some(json!({"two": "2"})))
        ]
    );

    // Resumed in a new application: the last step's action and result are
    // known without running it again.
    let resumed = Application::builder(result_graph())
        .app_id("res")
        .persister(Arc::clone(&p))
        .resume()
        .build()
        .await
        .unwrap();
    let last = resumed.resumed_from().unwrap();
    assert_eq!(
        (last.sequence_id, last.action.as_str(), last.status),
        (1, "b", StepStatus::Completed)
    );
    assert_eq!(last.result, Some(json!({"two": "2"})));
    assert_eq!(resumed.next_action(), Some("c"));

    // A fresh application has no such checkpoint; a failed step keeps none.
    let fresh = Application::builder(result_graph())
        .app_id("other")
        .persister(Arc::clone(&p))
        .resume()
        .build()
        .await
        .unwrap();
    assert!(fresh.resumed_from().is_none());
    let k = Counters::default();
    k.fail_b.store(true, Ordering::SeqCst);
    assert!(
        build(&k, &p, "failing")
            .await
            .run(RunOptions::new())
            .await
            .is_err()
    );
    let failed = p.load("failing", None).await.unwrap().unwrap();
    assert_eq!((failed.status, failed.result), (StepStatus::Failed, None));
}

pub(crate) async fn a_cancelled_checkpoint_is_stored_and_resumes_at_its_action(open: Open) {
    let k = Counters::default();
    let p = open().await;
    let mut app = build(&k, &p, "cancel-me").await;
    app.run(RunOptions::after(["a"])).await.unwrap();
    // The user cancels before `b` runs.
    app.save_cancelled().await.unwrap();
    drop((app, p));

    let p = open().await;
    let cp = p.load("cancel-me", None).await.unwrap().unwrap();
    assert_eq!(
        (cp.sequence_id, cp.action.as_str(), cp.status),
        (1, "b", StepStatus::Cancelled)
    );
    assert_eq!(cp.state.get("trail"), Some(&json!(["a"])));
    assert_eq!(cp.result, None);
    assert_eq!(history(&p, "cancel-me").await.len(), 2);

    // Asking to resume it runs the cancelled step, at its sequence id.
    let mut again = build(&k, &p, "cancel-me").await;
    assert_eq!(
        again.resumed_from().map(|c| c.status),
        Some(StepStatus::Cancelled)
    );
    assert_eq!(again.next_action(), Some("b"));
    let out = again.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("trail"), Some(&json!(["a", "b", "c"])));
    assert_eq!(k.runs(), [1, 1, 1]);
    let statuses: Vec<StepStatus> = history(&p, "cancel-me")
        .await
        .iter()
        .map(|c| c.status)
        .collect();
    assert_eq!(statuses, [StepStatus::Completed; 3]);
}

/// A JSON value `levels` arrays deep, built without recursion.
pub(crate) fn nested(levels: usize) -> Value {
    let mut v = json!(0);
    for _ in 0..levels {
        v = Value::Array(vec![v]);
    }
    v
}

/// Drop `value` on a thread with a large stack: dropping a value tens of
/// thousands of levels deep recurses once per level, more than a test
/// thread's stack holds. (A state keeps its values behind `Arc`s, so it
/// cannot be taken apart level by level from outside.)
pub(crate) fn drop_deep<T: Send + 'static>(value: T) {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(move || drop(value))
        .unwrap()
        .join()
        .unwrap();
}

pub(crate) async fn a_state_too_deep_to_load_is_refused_at_save(open: Open) {
    let p = open().await;
    let limit = Checkpoint::MAX_DEPTH;
    // The deepest state allowed (its map is one level) saves and loads.
    let ok = Checkpoint::new(
        "deep",
        0,
        "a",
        StepStatus::Completed,
        State::new().set("v", nested(limit - 1)),
    )
    .with_result(nested(limit));
    p.save(&ok).await.unwrap();
    assert_eq!(open().await.load("deep", None).await.unwrap(), Some(ok));

    // One level more, serde_json's own limit, and far beyond it: refused
    // with a typed error, and nothing stored.
    for levels in [limit, 128, 10_000, 30_000] {
        let mut cp = Checkpoint::new(
            "deep",
            1,
            "a",
            StepStatus::Completed,
            State::new().set("v", nested(levels)),
        );
        let err = p.save(&cp).await.unwrap_err();
        assert!(
            matches!(
                err,
                PersistError::TooDeep { ref app_id, sequence_id: 1, part: "state", limit: l }
                    if app_id == "deep" && l == limit
            ),
            "{levels} levels: {err}"
        );
        assert!(err.to_string().contains("more than 100 levels"), "{err}");
        drop_deep(std::mem::take(&mut cp.state));
        cp.result = Some(nested(levels + 1));
        let err = p.save(&cp).await.unwrap_err();
        assert!(
            matches!(err, PersistError::TooDeep { part: "result", .. }),
            "{err}"
        );
        drop_deep(cp);
    }
    assert_eq!(history(&open().await, "deep").await.len(), 1);
}

/// Fencing: a backend that supports it refuses a write from an older epoch
/// than the one stored for the application and stores nothing; one that
/// does not refuses every fenced write, never storing it unchecked.
pub(crate) async fn a_fenced_write_from_an_older_epoch_is_refused(open: Open) {
    let p = open().await;
    let cp = |app: &str, seq: u64, step: &str| {
        Checkpoint::new(
            app,
            seq,
            step,
            StepStatus::Completed,
            State::new().set("step", step),
        )
    };
    if !p.supports_fencing() {
        let err = p.save_fenced(&cp("fenced", 0, "a"), 1).await.unwrap_err();
        assert!(
            matches!(&err, PersistError::FencingUnsupported { app_id } if app_id == "fenced"),
            "{err}"
        );
        assert!(p.load("fenced", None).await.unwrap().is_none());
        return;
    }
    p.save_fenced(&cp("fenced", 0, "a"), 2).await.unwrap();
    let err = p
        .save_fenced(&cp("fenced", 1, "stale"), 1)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            PersistError::Fenced { app_id, sequence_id: 1, epoch: 1, current: 2 } if app_id == "fenced"
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("epoch 1 is older than the stored epoch 2"),
        "{err}"
    );
    let p = open().await;
    assert!(p.load("fenced", Some(1)).await.unwrap().is_none());
    // The same epoch writes on; a newer one takes over and fences it out.
    p.save_fenced(&cp("fenced", 1, "b"), 2).await.unwrap();
    p.save_fenced(&cp("fenced", 1, "c"), 3).await.unwrap();
    let err = p
        .save_fenced(&cp("fenced", 2, "late"), 2)
        .await
        .unwrap_err();
    assert!(
        matches!(err, PersistError::Fenced { current: 3, .. }),
        "{err}"
    );
    let latest = p.load("fenced", None).await.unwrap().unwrap();
    assert_eq!((latest.sequence_id, latest.action.as_str()), (1, "c"));
    // Epochs are per application.
    p.save_fenced(&cp("other", 0, "a"), 1).await.unwrap();
}

/// A new owner raises the application's fence before it loads (and before
/// it saves anything): an older owner's write is refused from then on.
pub(crate) async fn a_raised_fence_refuses_older_writes_before_any_save(open: Open) {
    let p = open().await;
    let cp = |seq: u64, step: &str| {
        Checkpoint::new(
            "raised",
            seq,
            step,
            StepStatus::Completed,
            State::new().set("step", step),
        )
    };
    if !p.supports_fencing() {
        let err = p.raise_fence("raised", 1).await.unwrap_err();
        assert!(
            matches!(&err, PersistError::FencingUnsupported { app_id } if app_id == "raised"),
            "{err}"
        );
        return;
    }
    assert_eq!(p.raise_fence("raised", 3).await.unwrap(), 3);
    // Raising writes no checkpoint.
    assert!(p.load("raised", None).await.unwrap().is_none());
    let apps = p.list_app_ids(None).await.unwrap();
    assert!(!apps.iter().any(|a| a == "raised"), "{apps:?}");
    // The older owner's write is refused, though the new one saved nothing.
    let err = p.save_fenced(&cp(0, "old"), 2).await.unwrap_err();
    assert!(
        matches!(
            err,
            PersistError::Fenced {
                epoch: 2,
                current: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(p.load("raised", None).await.unwrap().is_none());
    // A lower raise leaves the stored epoch and says so; the owner writes.
    assert_eq!(p.raise_fence("raised", 1).await.unwrap(), 3);
    p.save_fenced(&cp(0, "new"), 3).await.unwrap();
    // A save under a newer epoch raises it as well.
    p.save_fenced(&cp(1, "newer"), 5).await.unwrap();
    assert_eq!(p.raise_fence("raised", 4).await.unwrap(), 5);
    let latest = p.load("raised", None).await.unwrap().unwrap();
    assert_eq!((latest.sequence_id, latest.action.as_str()), (1, "newer"));
}

/// One `#[tokio::test]` per contract check, for the backend `open` makes.
#[macro_export]
macro_rules! persister_contract_tests {
    ($open:expr) => {
        $crate::persister_contract_tests!($open, #[cfg(all())]);
    };
    // `$attr` goes on every test (an `ignore` for a missing service).
    ($open:expr, #[$attr:meta]) => {
        #[tokio::test]
        #[$attr]
        async fn a_checkpoint_is_saved_after_every_step_with_its_status() {
            $crate::persister_contract::a_checkpoint_is_saved_after_every_step_with_its_status(
                $open,
            )
            .await
        }
        #[tokio::test]
        #[$attr]
        async fn resume_after_a_failure_reruns_only_the_failed_action() {
            $crate::persister_contract::resume_after_a_failure_reruns_only_the_failed_action($open)
                .await
        }
        #[tokio::test]
        #[$attr]
        async fn resume_after_a_completed_step_continues_at_the_next_action() {
            $crate::persister_contract::resume_after_a_completed_step_continues_at_the_next_action(
                $open,
            )
            .await
        }
        #[tokio::test]
        #[$attr]
        async fn fork_from_an_app_and_sequence_id() {
            $crate::persister_contract::fork_from_an_app_and_sequence_id($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn load_latest_or_by_sequence_and_list_by_partition() {
            $crate::persister_contract::load_latest_or_by_sequence_and_list_by_partition($open)
                .await
        }
        #[tokio::test]
        #[$attr]
        async fn a_checkpoint_holds_the_result_and_action_of_its_step() {
            $crate::persister_contract::a_checkpoint_holds_the_result_and_action_of_its_step($open)
                .await
        }
        #[tokio::test]
        #[$attr]
        async fn a_cancelled_checkpoint_is_stored_and_resumes_at_its_action() {
            $crate::persister_contract::a_cancelled_checkpoint_is_stored_and_resumes_at_its_action(
                $open,
            )
            .await
        }
        #[tokio::test]
        #[$attr]
        async fn a_state_too_deep_to_load_is_refused_at_save() {
            $crate::persister_contract::a_state_too_deep_to_load_is_refused_at_save($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn save_is_an_upsert_and_the_state_round_trips() {
            $crate::persister_contract::save_is_an_upsert_and_the_state_round_trips($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn a_fenced_write_from_an_older_epoch_is_refused() {
            $crate::persister_contract::a_fenced_write_from_an_older_epoch_is_refused($open).await
        }
        #[tokio::test]
        #[$attr]
        async fn a_raised_fence_refuses_older_writes_before_any_save() {
            $crate::persister_contract::a_raised_fence_refuses_older_writes_before_any_save($open)
                .await
        }
    };
}
