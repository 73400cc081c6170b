//! The cluster executor on Redis Streams (see `cluster_fleet`), and the
//! Redis persister's contract.

use std::sync::Arc;

use tributary::Persister;
use tributary_cluster::RedisPersister;

use crate::cluster_support::Backend;
use crate::persister_contract::Open;
use crate::stream_support::{service_url, unique};

crate::cluster_tests!(
    Backend::Redis,
    10_000,
    #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
);

/// A key prefix of its own, connected again on every call.
fn redis() -> Open {
    let prefix = unique("cp");
    Arc::new(move || {
        let prefix = prefix.clone();
        Box::pin(async move {
            let url = service_url("TRIBUTARY_REDIS_URL");
            let p: Arc<dyn Persister> = Arc::new(
                RedisPersister::connect_with_prefix(&url, &prefix)
                    .await
                    .unwrap(),
            );
            p
        })
    })
}

mod persister {
    use super::redis;

    crate::persister_contract_tests!(
        redis(),
        #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
    );
}

/// The broker restarts mid-run (a server of the test's own, with its
/// append-only file): workers and caller reconnect by themselves and every
/// task ends as it would have, with no finished step run again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_restarted_broker_loses_no_task() {
    use crate::cluster_support::Cluster;
    use crate::stream_servers::OwnServer;

    let mut server = OwnServer::redis(true).await;
    let cluster = Cluster::on(Backend::Redis, server.url(), server.url(), 200);
    crate::cluster_fleet::tasks_survive_a_broker_restart(cluster, &mut server).await;
}

/// A caller killed mid-run: its workers notice it stopped saying it is
/// alive and cancel its tasks; nothing runs on unowned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
async fn a_dead_callers_tasks_are_cancelled_on_the_workers() {
    use std::time::Duration;

    use tokio::io::AsyncBufReadExt;

    use crate::cluster_support::{Cluster, WAIT};

    let mut cluster = Cluster::new(Backend::Redis, 200);
    cluster.start_worker(8).await;
    let mut caller = tokio::process::Command::new(env!("CARGO_BIN_EXE_cluster_caller"))
        .args([&cluster.broker_url, &cluster.ns, "4"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(caller.stdout.take().unwrap()).lines();
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("started"));
    let started = std::time::Instant::now();
    while cluster.busy_steps().await < 20 {
        assert!(started.elapsed() < WAIT, "the tasks run");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    caller.start_kill().unwrap(); // SIGKILL
    let _ = caller.wait().await;
    // Silent past the workers' `orphan_after` (3 s), noticed within a
    // heartbeat.
    tokio::time::sleep(Duration::from_millis(4000)).await;
    let settled = cluster.busy_steps().await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        cluster.busy_steps().await,
        settled,
        "the orphaned tasks stopped"
    );
}
