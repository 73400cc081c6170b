//! The PostgreSQL persister keeps the persister contract
//! (`persister_contract`), fencing included; every check reconnects, so
//! everything also survives a new connection pool.

use std::sync::Arc;

use tributary::{Checkpoint, PersistError, Persister, State, StepStatus};
use tributary_postgres::PostgresPersister;

use crate::persister_contract::Open;
use crate::postgres_support::TestSchema;

/// A schema of its own, connected again on every call; dropped when the
/// last clone of the closure goes.
fn postgres() -> Open {
    let schema = Arc::new(TestSchema::new("contract"));
    Arc::new(move || {
        let schema = Arc::clone(&schema);
        Box::pin(async move {
            let p: Arc<dyn Persister> = Arc::new(PostgresPersister::new(schema.connect().await));
            p
        })
    })
}

crate::persister_contract_tests!(
    postgres(),
    #[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
);

/// Many epochs racing for one application: whatever order they commit in,
/// the epoch stored at the end is the highest, every write that returned
/// `Ok` carried an epoch at least as high as every epoch before it, and the
/// last checkpoint saved is the highest epoch's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn racing_epochs_leave_the_newest_owner_in_place() {
    let schema = TestSchema::new("fence_race");
    let p = Arc::new(PostgresPersister::new(schema.connect().await));
    let mut tasks = tokio::task::JoinSet::new();
    for epoch in 1..=40u64 {
        let p = Arc::clone(&p);
        tasks.spawn(async move {
            let cp = Checkpoint::new(
                "contested",
                0,
                format!("epoch-{epoch}"),
                StepStatus::Completed,
                State::new(),
            );
            (epoch, p.save_fenced(&cp, epoch).await)
        });
    }
    let mut accepted = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (epoch, Ok(())) => accepted.push(epoch),
            (
                epoch,
                Err(PersistError::Fenced {
                    epoch: e, current, ..
                }),
            ) => {
                assert_eq!(e, epoch);
                assert!(current > epoch, "{epoch} refused by {current}");
            }
            (_, Err(e)) => panic!("{e}"),
        }
    }
    assert!(accepted.contains(&40), "{accepted:?}");
    let latest = p.load("contested", None).await.unwrap().unwrap();
    assert_eq!(latest.action, "epoch-40");
    // A late write from any older owner is refused.
    let err = p
        .save_fenced(
            &Checkpoint::new("contested", 1, "late", StepStatus::Completed, State::new()),
            39,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, PersistError::Fenced { current: 40, .. }),
        "{err}"
    );
}

/// A batch of checkpoints that the server aborts to break a deadlock is
/// retried, and its saves succeed: two saves in one batch lock `a` then
/// wait for `b`, held by another transaction that then asks for `a`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_postgres), ignore = "needs TRIBUTARY_POSTGRES_URL")]
async fn a_batch_broken_by_a_deadlock_is_retried() {
    use crate::postgres_support::{client, url};
    use std::time::Duration;

    let schema = TestSchema::new("deadlock");
    let app_name = schema.name.clone();
    let sep = if url().contains('?') { '&' } else { '?' };
    let db =
        tributary_postgres::Database::builder(format!("{}{sep}application_name={app_name}", url()))
            .schema(&schema.name)
            .connect()
            .await
            .unwrap();
    let p = Arc::new(PostgresPersister::new(db));
    let cp = |app: &str, action: &str| {
        Checkpoint::new(app, 0, action, StepStatus::Completed, State::new())
    };
    for app in ["a", "b", "z"] {
        p.save(&cp(app, "before")).await.unwrap();
    }
    let table = format!("\"{}\".checkpoints", schema.name);
    let lock =
        |app: &'static str| format!("UPDATE {table} SET saved_at = 0 WHERE app_id = '{app}'");
    let (mut e1, mut e2) = (client().await, client().await);
    let t1 = e1.transaction().await.unwrap();
    t1.batch_execute(&lock("z")).await.unwrap();
    let t2 = e2.transaction().await.unwrap();
    t2.batch_execute(&lock("b")).await.unwrap();

    // `z` holds the writer while `a` and `b` queue behind it: they are
    // written together in the next batch.
    let z = tokio::spawn({
        let p = Arc::clone(&p);
        async move { p.save(&cp("z", "ours")).await }
    });
    let watcher = client().await;
    let waiting = |n: i64| {
        let (watcher, app_name) = (&watcher, app_name.clone());
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let waiting: i64 = watcher
                    .query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity
                         WHERE application_name = $1 AND wait_event_type = 'Lock'",
                        &[&app_name],
                    )
                    .await
                    .unwrap()
                    .get(0);
                if waiting == n {
                    return;
                }
                assert!(tokio::time::Instant::now() < deadline, "no writer waited");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    waiting(1).await;
    // One poll hands both saves to the writer, which is still busy with
    // `z`: they queue, and are written together in its next batch.
    let (a, b) = (cp("a", "ours"), cp("b", "ours"));
    let mut ab = Box::pin(async { tokio::join!(p.save(&a), p.save(&b)) });
    assert!(futures_util::FutureExt::now_or_never(&mut ab).is_none());
    t1.commit().await.unwrap();
    z.await.unwrap().unwrap();
    // The batch holds `a` and waits for `b`; asking for `a` closes the
    // cycle. The server aborts the batch (it waited first), so this
    // returns.
    waiting(1).await;
    tokio::time::timeout(Duration::from_secs(30), t2.batch_execute(&lock("a")))
        .await
        .expect("the deadlock was broken")
        .unwrap();
    t2.commit().await.unwrap();
    let (a, b) = tokio::time::timeout(Duration::from_secs(30), ab)
        .await
        .unwrap();
    a.unwrap();
    b.unwrap();
    for app in ["a", "b"] {
        assert_eq!(p.load(app, None).await.unwrap().unwrap().action, "ours");
    }
}
