//! A cluster caller in a process of its own, for the test that kills it:
//! `cluster_caller <redis url> <namespace> <tasks>` runs `tasks` tasks of
//! the workers' `busy` graph, prints `started`, and reads the stream
//! forever.

use std::time::Duration;

use tributary::{RunConfig, State, TaskSpec};
use tributary_cluster::{ClusterOptions, ClusterRuntime, RedisBroker};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, ns, tasks] = args.as_slice() else {
        anyhow::bail!("usage: cluster_caller <redis url> <namespace> <tasks>");
    };
    let options = ClusterOptions::new()
        .namespace(ns.clone())
        .heartbeat(Duration::from_millis(200))
        .alive_interval(Duration::from_millis(200));
    let caller = ClusterRuntime::new(RedisBroker::new(url.clone())).options(options)?;
    let tasks: Vec<TaskSpec> = (0..tasks.parse::<usize>()?)
        .map(|i| TaskSpec::named(format!("b{i}"), "busy").state(State::new().set("ms", 40)))
        .collect();
    let (_handle, mut stream) = caller.run(tasks, RunConfig::new());
    println!("started");
    while stream.next().await.is_some() {}
    Ok(())
}
