//! Checkpoints after every step, resume, fork, and the in-memory persister.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use tributary::{
    Application, BuildError, Graph, InMemoryPersister, Inputs, Persister, RunOptions, State,
    StepStatus, action, default,
};

/// Counts how often each of `a`, `b`, `c` ran. `b` fails while the shared
/// `fail_b` flag is set.
#[derive(Clone, Default)]
struct Counters {
    a: Arc<AtomicUsize>,
    b: Arc<AtomicUsize>,
    c: Arc<AtomicUsize>,
    fail_b: Arc<std::sync::atomic::AtomicBool>,
}

fn graph(k: &Counters) -> Graph {
    let counted = |name: &'static str,
                   counter: Arc<AtomicUsize>,
                   fail: Option<Arc<std::sync::atomic::AtomicBool>>| {
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

async fn build(k: &Counters, p: &Arc<InMemoryPersister>, id: &str) -> Application {
    Application::builder(graph(k))
        .app_id(id)
        .partition_key("user-1")
        .persister(p.clone())
        .resume()
        .build()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_checkpoint_is_saved_after_every_step_with_its_status() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    k.fail_b.store(true, Ordering::SeqCst);
    let mut app = build(&k, &p, "job").await;
    assert!(app.run(RunOptions::new()).await.is_err());
    let history = p.history("job");
    let summary: Vec<_> = history
        .iter()
        .map(|c| (c.sequence_id, c.action.as_str(), c.status))
        .collect();
    assert_eq!(
        summary,
        [
            (0, "a", StepStatus::Completed),
            (1, "b", StepStatus::Failed)
        ]
    );
    // A failed checkpoint holds the state from before the step.
    assert_eq!(history[1].state.get("trail"), Some(&json!(["a"])));
    assert_eq!(history[1].partition_key.as_deref(), Some("user-1"));
}

#[tokio::test]
async fn resume_after_a_failure_reruns_only_the_failed_action() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    k.fail_b.store(true, Ordering::SeqCst);
    let mut first = build(&k, &p, "job").await;
    assert!(first.run(RunOptions::new()).await.is_err());
    drop(first);

    k.fail_b.store(false, Ordering::SeqCst);
    let mut again = build(&k, &p, "job").await;
    assert_eq!(again.next_action(), Some("b"));
    let out = again.run(RunOptions::new()).await.unwrap();
    assert_eq!(out.state.get("trail"), Some(&json!(["a", "b", "c"])));
    assert_eq!(
        [
            k.a.load(Ordering::SeqCst),
            k.b.load(Ordering::SeqCst),
            k.c.load(Ordering::SeqCst)
        ],
        [1, 2, 1]
    );
    // The retry ran at the failed step's sequence id and replaced its
    // checkpoint: 0 a, 1 b, 2 c, all completed.
    let seqs: Vec<_> = p
        .history("job")
        .iter()
        .map(|c| (c.sequence_id, c.action.clone(), c.status))
        .collect();
    let done = StepStatus::Completed;
    assert_eq!(
        seqs,
        [
            (0, "a".into(), done),
            (1, "b".into(), done),
            (2, "c".into(), done)
        ]
    );
}

#[tokio::test]
async fn resume_after_a_completed_step_continues_at_the_next_action() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let mut first = build(&k, &p, "job").await;
    first.run(RunOptions::after(["a"])).await.unwrap();
    drop(first);
    let mut again = build(&k, &p, "job").await;
    assert_eq!(again.next_action(), Some("b"));
    assert_eq!(again.sequence_id(), Some(0));
    again.run(RunOptions::new()).await.unwrap();
    assert_eq!(k.a.load(Ordering::SeqCst), 1);
    // A finished run resumes as finished: nothing runs again.
    let mut done = build(&k, &p, "job").await;
    assert_eq!(done.next_action(), None);
    assert_eq!(done.run(RunOptions::new()).await.unwrap().action, None);
    assert_eq!(k.c.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn resume_without_a_checkpoint_starts_fresh_from_the_given_state() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let app = Application::builder(graph(&k))
        .app_id("new")
        .state(State::new().set("trail", json!(["seed"])))
        .persister(p.clone())
        .resume()
        .build()
        .await
        .unwrap();
    assert_eq!(app.next_action(), Some("a"));
    assert_eq!(app.state().get("trail"), Some(&json!(["seed"])));
}

#[tokio::test]
async fn fork_from_an_app_and_sequence_id() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let mut original = build(&k, &p, "orig").await;
    original.run(RunOptions::new()).await.unwrap();

    let mut fork = Application::builder(graph(&k))
        .app_id("fork")
        .persister(p.clone())
        .fork_from("orig", Some(0))
        .build()
        .await
        .unwrap();
    assert_eq!(fork.next_action(), Some("b"));
    assert_eq!(fork.state().get("trail"), Some(&json!(["a"])));
    let parent = fork.info().parent.clone().unwrap();
    assert_eq!((parent.app_id.as_str(), parent.sequence_id), ("orig", 0));
    fork.run(RunOptions::new()).await.unwrap();
    // The fork saves under its own id; the original is untouched.
    assert_eq!(p.history("fork").len(), 2);
    assert_eq!(p.history("orig").len(), 3);
}

#[tokio::test]
async fn resume_and_fork_errors_are_clear() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    let no_persister = Application::builder(graph(&k))
        .resume()
        .build()
        .await
        .unwrap_err();
    assert!(matches!(no_persister, BuildError::NoPersister));
    let self_fork = Application::builder(graph(&k))
        .app_id("x")
        .persister(p.clone())
        .fork_from("x", None)
        .build()
        .await
        .unwrap_err();
    assert_eq!(self_fork.to_string(), "cannot fork app `x` from itself");
    let missing = Application::builder(graph(&k))
        .persister(p.clone())
        .fork_from("ghost", Some(4))
        .build()
        .await
        .unwrap_err();
    assert_eq!(
        missing.to_string(),
        "no checkpoint of app `ghost` at sequence 4 to fork from"
    );
    let bad_entry = Application::builder(graph(&k))
        .entrypoint("zzz")
        .build()
        .await
        .unwrap_err();
    assert!(matches!(bad_entry, BuildError::UnknownEntrypoint(ref e) if e == "zzz"));
}

#[tokio::test]
async fn a_checkpoint_of_an_unknown_action_is_refused() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
    p.save(&tributary::Checkpoint {
        app_id: "old".into(),
        partition_key: None,
        sequence_id: 3,
        action: "removed_action".into(),
        status: StepStatus::Completed,
        state: State::new(),
    })
    .await
    .unwrap();
    let err = Application::builder(graph(&k))
        .app_id("old")
        .persister(p.clone())
        .resume()
        .build()
        .await
        .unwrap_err();
    assert!(
        matches!(err, BuildError::UnknownCheckpointAction { ref action, .. } if action == "removed_action")
    );
}

#[tokio::test]
async fn load_latest_or_by_sequence_and_list_by_partition() {
    let (k, p) = (Counters::default(), Arc::new(InMemoryPersister::new()));
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
        .persister(p.clone())
        .build()
        .await
        .unwrap();
    other.step(&Inputs::new()).await.unwrap();

    assert_eq!(p.load("u1-a", None).await.unwrap().unwrap().sequence_id, 2);
    assert_eq!(p.load("u1-a", Some(1)).await.unwrap().unwrap().action, "b");
    assert!(p.load("u1-a", Some(9)).await.unwrap().is_none());
    assert!(p.load("nobody", None).await.unwrap().is_none());
    assert_eq!(
        p.list_app_ids(Some("user-1")).await.unwrap(),
        ["u1-a", "u1-b"]
    );
    assert_eq!(p.list_app_ids(Some("user-2")).await.unwrap(), ["u2-a"]);
    assert_eq!(p.list_app_ids(None).await.unwrap().len(), 3);
}
