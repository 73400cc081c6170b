//! Durable calls on a worker process of the cluster (`ClusterInvoke` on
//! Redis Streams, with the worker's Redis persister).

use std::sync::Arc;
use std::time::Duration;

use tributary::BoxError;
use tributary::durable::{
    DurableError, DurableExt, JournalStore, StepPolicy, WorkflowContext, WorkflowError, Workflows,
};
use tributary::sqlite::SqliteJournal;
use tributary_cluster::{CallError, ClusterInvoke};

use crate::cluster_support::{Backend, Cluster, WAIT};

async fn shouts(cluster: &Cluster) -> i64 {
    let mut redis = cluster.redis().await;
    let n: Option<i64> = redis::cmd("GET")
        .arg(format!("{}:fn:shout", cluster.ns))
        .query_async(&mut redis)
        .await
        .unwrap();
    n.unwrap_or(0)
}

fn engine(store: Arc<dyn JournalStore>, cluster: &Cluster) -> Workflows {
    let workflows = Workflows::new(store);
    workflows.set_functions(ClusterInvoke::new(cluster.caller()));
    workflows.register("greet", |ctx: WorkflowContext, name: String| async move {
        let loud: String = ctx.call("shout", name).await?;
        Ok::<_, BoxError>(format!("hello {loud}"))
    });
    workflows.register("order", |ctx: WorkflowContext, what: String| async move {
        let policy = StepPolicy::new()
            .retries(2)
            .backoff(Duration::from_millis(1), Duration::from_millis(2));
        match ctx
            .call::<_, String>("fail", what.clone())
            .policy(policy.clone())
            .await
        {
            Err(DurableError::StepFailed {
                attempts, source, ..
            }) => {
                let own = source.to_string();
                let unknown = ctx.call::<_, String>("nope", what).policy(policy).await;
                let Err(DurableError::StepFailed {
                    attempts: tries,
                    source,
                    ..
                }) = unknown
                else {
                    return Err("the unknown function did not fail".into());
                };
                let typed = std::iter::successors(
                    Some(source.as_ref() as &(dyn std::error::Error + 'static)),
                    |e| e.source(),
                )
                .find_map(|e| e.downcast_ref::<CallError>())
                .map(|e| format!("{e:?}"));
                Ok::<_, BoxError>(format!("{attempts}|{own}|{tries}|{typed:?}"))
            }
            other => Err(format!("unexpected: {other:?}").into()),
        }
    });
    workflows
}

/// A workflow's `ctx.call` runs on a worker process; the call is journaled,
/// so the workflow resumed by a new engine does not call again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_workflow_call_runs_on_a_worker_process_and_is_journaled() {
    let mut cluster = Cluster::new(Backend::Redis, 200);
    cluster.start_worker(4).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("journal.db");
    let store: Arc<dyn JournalStore> = Arc::new(SqliteJournal::open(&path).await.unwrap());
    let first = engine(Arc::clone(&store), &cluster);
    let out: String = tokio::time::timeout(WAIT, async {
        first.start("greet", "wf-1", "ada").await?.result().await
    })
    .await
    .expect("in time")
    .unwrap();
    assert_eq!(out, "hello ADA");
    assert_eq!(shouts(&cluster).await, 1);
    let steps: Vec<String> = store
        .load("wf-1", 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.step.to_string())
        .collect();
    assert_eq!(steps, ["call:shout#0"]);
    drop((first, store));

    // Another process's engine on the same journal: the call replays.
    let store: Arc<dyn JournalStore> = Arc::new(SqliteJournal::open(&path).await.unwrap());
    let second = engine(store, &cluster);
    let out: String =
        tokio::time::timeout(WAIT, async { second.resume("wf-1").await?.result().await })
            .await
            .expect("in time")
            .unwrap();
    assert_eq!(out, "hello ADA");
    assert_eq!(shouts(&cluster).await, 1);
}

/// A function's error comes back from the worker process with its message
/// (retried by the policy); an unknown function is a terminal `CallError`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn remote_errors_are_typed_and_faithful() {
    let mut cluster = Cluster::new(Backend::Redis, 200);
    cluster.start_worker(4).await;
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn JournalStore> =
        Arc::new(SqliteJournal::open(dir.path().join("j.db")).await.unwrap());
    let workflows = engine(store, &cluster);
    let out: Result<String, WorkflowError> = tokio::time::timeout(WAIT, async {
        workflows
            .start("order", "wf-2", "bikes")
            .await?
            .result()
            .await
    })
    .await
    .expect("in time");
    assert_eq!(
        out.unwrap(),
        "3|out of stock: bikes|1|Some(\"UnknownFunction { function: \\\"nope\\\" }\")"
    );
}

/// The same call key twice (a workflow whose process died after the call
/// finished but before its journal write): the worker's checkpoint answers
/// the second time, the function does not run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_finished_remote_call_is_answered_from_the_checkpoint() {
    use tributary::durable::Invoke;

    let mut cluster = Cluster::new(Backend::Redis, 200);
    cluster.start_worker(4).await;
    let invoke = ClusterInvoke::new(cluster.caller());
    for _ in 0..2 {
        let out = tokio::time::timeout(
            WAIT,
            invoke.invoke_keyed("shout", serde_json::json!("ada"), "wf-3/0/call:shout#0"),
        )
        .await
        .expect("in time")
        .unwrap();
        assert_eq!(out, "ADA");
    }
    assert_eq!(shouts(&cluster).await, 1);
}
