//! The cluster executor on NATS JetStream (see `cluster_fleet`);
//! checkpoints still go to Redis.

use crate::cluster_support::Backend;

crate::cluster_tests!(
    Backend::Nats,
    2_000,
    #[cfg_attr(
        not(all(tributary_nats, tributary_redis)),
        ignore = "needs TRIBUTARY_NATS_URL and TRIBUTARY_REDIS_URL"
    )]
);

/// The NATS server restarts mid-run (a server of the test's own, its
/// JetStream store on disk): workers and caller reconnect by themselves and
/// every task ends as it would have, with no finished step run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    not(all(tributary_nats, tributary_redis)),
    ignore = "needs TRIBUTARY_NATS_URL and TRIBUTARY_REDIS_URL"
)]
async fn a_restarted_broker_loses_no_task() {
    use std::time::Duration;

    use tributary::{ItemKind, State, TaskSpec};

    use crate::cluster_support::{Cluster, WAIT, collect, config};
    use crate::stream_servers::OwnServer;
    use crate::stream_support::service_url;

    let mut server = OwnServer::nats().await;
    let mut cluster = Cluster::on(
        Backend::Nats,
        server.url(),
        service_url("TRIBUTARY_REDIS_URL"),
        200,
    );
    cluster.start_worker(8).await;
    cluster.start_worker(8).await;
    let steps = 10i64;
    let tasks: Vec<TaskSpec> = (0..4)
        .map(|i| {
            TaskSpec::named(format!("r{i}"), "count")
                .state(State::new().set("i", 0).set("n", steps).set("ms", 100))
        })
        .collect();
    let (_handle, stream) = cluster.caller().run(tasks, config());
    let consumer = tokio::spawn(collect(stream));
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.start_again().await;
    let items = tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap();
    let finals: Vec<_> = items.iter().filter(|i| i.kind == ItemKind::Final).collect();
    assert_eq!(finals.len(), 4, "{items:?}");
    for end in finals {
        let state = end.state_update.as_ref().unwrap();
        assert_eq!(state.get_as::<i64>("i").unwrap(), steps);
        let runs = cluster.executions(&end.app_id).await;
        assert_eq!(runs.len(), usize::try_from(steps).unwrap(), "{runs:?}");
        assert!(runs.values().filter(|n| **n > 1).count() <= 1, "{runs:?}");
    }
}
