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
    use crate::cluster_support::Cluster;
    use crate::stream_servers::OwnServer;
    use crate::stream_support::service_url;

    let mut server = OwnServer::nats().await;
    let cluster = Cluster::on(
        Backend::Nats,
        server.url(),
        service_url("TRIBUTARY_REDIS_URL"),
        200,
    );
    crate::cluster_fleet::tasks_survive_a_broker_restart(cluster, &mut server).await;
}
