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
