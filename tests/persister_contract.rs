//! The contract every `Persister` keeps, written once and run against each
//! backend (`persistence_resume` for memory, `sqlite_persistence` for
//! SQLite). `open` hands out the persister under test; a file-backed one
//! reopens its file each time, so every check also survives a reopen.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tributary::{
    Application, Checkpoint, Graph, Inputs, Persister, RunOptions, State, StepStatus, action,
    default,
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
    let mut cp = Checkpoint {
        app_id: "x".into(),
        partition_key: None,
        sequence_id: 7,
        action: "a".into(),
        status: StepStatus::Failed,
        state: State::new(),
    };
    p.save(&cp).await.unwrap();
    cp.status = StepStatus::Completed;
    cp.state = state.clone();
    cp.partition_key = Some("p".into());
    p.save(&cp).await.unwrap();
    let p = open().await;
    let history = history(&p, "x").await;
    assert_eq!(history, [cp]);
    assert_eq!(history[0].state, state);
}

/// One `#[tokio::test]` per contract check, for the backend `open` makes.
#[macro_export]
macro_rules! persister_contract_tests {
    ($open:expr) => {
        #[tokio::test]
        async fn a_checkpoint_is_saved_after_every_step_with_its_status() {
            $crate::persister_contract::a_checkpoint_is_saved_after_every_step_with_its_status(
                $open,
            )
            .await
        }
        #[tokio::test]
        async fn resume_after_a_failure_reruns_only_the_failed_action() {
            $crate::persister_contract::resume_after_a_failure_reruns_only_the_failed_action($open)
                .await
        }
        #[tokio::test]
        async fn resume_after_a_completed_step_continues_at_the_next_action() {
            $crate::persister_contract::resume_after_a_completed_step_continues_at_the_next_action(
                $open,
            )
            .await
        }
        #[tokio::test]
        async fn fork_from_an_app_and_sequence_id() {
            $crate::persister_contract::fork_from_an_app_and_sequence_id($open).await
        }
        #[tokio::test]
        async fn load_latest_or_by_sequence_and_list_by_partition() {
            $crate::persister_contract::load_latest_or_by_sequence_and_list_by_partition($open)
                .await
        }
        #[tokio::test]
        async fn save_is_an_upsert_and_the_state_round_trips() {
            $crate::persister_contract::save_is_an_upsert_and_the_state_round_trips($open).await
        }
    };
}
