//! Helpers of the cluster tests: worker processes, callers, counters.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tributary::{RunConfig, RunStream, StreamItem};
use tributary_cluster::{ClusterOptions, ClusterRuntime, NatsBroker, RedisBroker};

use crate::stream_support::{service_url, unique};

/// A bound on anything that could hang.
pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The broker a cluster test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    Redis,
    Nats,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Backend::Redis => "redis",
            Backend::Nats => "nats",
        }
    }
}

/// One cluster: a namespace of its own on the shared services, the worker
/// processes started for it, and a caller.
pub(crate) struct Cluster {
    pub(crate) backend: Backend,
    pub(crate) broker_url: String,
    pub(crate) redis_url: String,
    pub(crate) ns: String,
    pub(crate) heartbeat_ms: u64,
    /// Where the test graphs count their executions (the shared Redis).
    counter_url: String,
    /// Deliveries of a task before the dead letters.
    pub(crate) max_deliveries: u32,
    workers: Vec<Option<Child>>,
}

impl Cluster {
    pub(crate) fn new(backend: Backend, heartbeat_ms: u64) -> Self {
        let redis_url = service_url("TRIBUTARY_REDIS_URL");
        let broker_url = match backend {
            Backend::Redis => redis_url.clone(),
            Backend::Nats => service_url("TRIBUTARY_NATS_URL"),
        };
        Self::on(backend, broker_url, redis_url, heartbeat_ms)
    }

    pub(crate) fn on(
        backend: Backend,
        broker_url: String,
        redis_url: String,
        heartbeat_ms: u64,
    ) -> Self {
        Cluster {
            backend,
            broker_url,
            redis_url,
            ns: unique("cl"),
            heartbeat_ms,
            counter_url: service_url("TRIBUTARY_REDIS_URL"),
            max_deliveries: 10,
            workers: Vec::new(),
        }
    }

    pub(crate) fn options(&self) -> ClusterOptions {
        ClusterOptions::new()
            .namespace(self.ns.clone())
            .heartbeat(Duration::from_millis(self.heartbeat_ms))
            .alive_interval(Duration::from_millis(200))
            .cancel_wait(Duration::from_secs(10))
            .max_deliveries(self.max_deliveries)
    }

    /// Starts a worker process; returns its number once it is ready.
    pub(crate) async fn start_worker(&mut self, concurrency: usize) -> usize {
        self.start_worker_env(concurrency, &[]).await
    }

    /// Starts a worker process with more environment variables.
    pub(crate) async fn start_worker_env(
        &mut self,
        concurrency: usize,
        env: &[(&str, &str)],
    ) -> usize {
        let n = self.workers.len();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster_worker"))
            .args([
                self.backend.name(),
                &self.broker_url,
                &self.redis_url,
                &self.ns,
                &format!("w{n}"),
                &concurrency.to_string(),
                &self.heartbeat_ms.to_string(),
            ])
            .env("CLUSTER_COUNTER_URL", &self.counter_url)
            .env("CLUSTER_MAX_DELIVERIES", self.max_deliveries.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start a worker process");
        let stdout = child.stdout.take().expect("piped");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("the worker starts in time")
            .expect("read the worker's output");
        assert_eq!(ready.as_deref(), Some(format!("ready w{n}").as_str()));
        // Keep draining its output so it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        self.workers.push(Some(child));
        n
    }

    fn pid(&self, n: usize) -> i32 {
        let child = self.workers[n].as_ref().expect("a live worker");
        i32::try_from(child.id().expect("running")).expect("a pid")
    }

    fn signal(&self, n: usize, signal: &str) {
        let status = std::process::Command::new("kill")
            .args([signal, &self.pid(n).to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} worker {n}");
    }

    /// SIGKILL, and reap it.
    pub(crate) async fn kill(&mut self, n: usize) {
        self.signal(n, "-KILL");
        let mut child = self.workers[n].take().expect("a live worker");
        let _ = child.wait().await;
    }

    /// SIGSTOP: frozen, holding whatever it held.
    pub(crate) fn freeze(&self, n: usize) {
        self.signal(n, "-STOP");
    }

    /// SIGCONT.
    pub(crate) fn thaw(&self, n: usize) {
        self.signal(n, "-CONT");
    }

    /// SIGTERM, and wait for it to exit; returns its exit status.
    pub(crate) async fn terminate(&mut self, n: usize) -> std::process::ExitStatus {
        self.signal(n, "-TERM");
        let mut child = self.workers[n].take().expect("a live worker");
        tokio::time::timeout(WAIT, child.wait())
            .await
            .expect("the worker exits in time")
            .expect("wait for the worker")
    }

    pub(crate) fn caller(&self) -> ClusterRuntime {
        let caller = match self.backend {
            Backend::Redis => ClusterRuntime::new(RedisBroker::new(self.broker_url.clone())),
            Backend::Nats => ClusterRuntime::new(NatsBroker::new(self.broker_url.clone())),
        };
        caller.options(self.options()).expect("valid options")
    }

    pub(crate) async fn redis(&self) -> redis::aio::ConnectionManager {
        redis::Client::open(self.counter_url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap()
    }

    /// How many times each step of `app_id` ran (`count` graph).
    pub(crate) async fn executions(&self, app_id: &str) -> BTreeMap<u64, i64> {
        let mut redis = self.redis().await;
        let prefix = format!("{}:exec:{app_id}:", self.ns);
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}*"))
            .query_async(&mut redis)
            .await
            .unwrap();
        let mut out = BTreeMap::new();
        for key in keys {
            let n: i64 = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut redis)
                .await
                .unwrap();
            out.insert(key[prefix.len()..].parse().unwrap(), n);
        }
        out
    }

    /// Steps of the `count` graph run so far, by worker name.
    pub(crate) async fn steps_by_worker(&self) -> BTreeMap<String, i64> {
        let mut redis = self.redis().await;
        redis::cmd("HGETALL")
            .arg(format!("{}:by-worker", self.ns))
            .query_async(&mut redis)
            .await
            .unwrap()
    }

    /// Steps of the `busy` graph run so far.
    pub(crate) async fn busy_steps(&self) -> i64 {
        let mut redis = self.redis().await;
        let n: Option<i64> = redis::cmd("GET")
            .arg(format!("{}:busy", self.ns))
            .query_async(&mut redis)
            .await
            .unwrap();
        n.unwrap_or(0)
    }

    /// The fencing epoch stored for `app_id`.
    pub(crate) async fn epoch(&self, app_id: &str) -> Option<u64> {
        let mut redis = redis::Client::open(self.redis_url.as_str())
            .unwrap()
            .get_connection_manager()
            .await
            .unwrap();
        redis::cmd("HGET")
            .arg(format!("{}:{{{app_id}}}:meta", self.ns))
            .arg("epoch")
            .query_async(&mut redis)
            .await
            .unwrap()
    }
}

/// Read a stream to its end within [`WAIT`].
pub(crate) async fn collect(mut stream: RunStream) -> Vec<StreamItem> {
    let mut items = Vec::new();
    tokio::time::timeout(WAIT, async {
        while let Some(item) = stream.next().await {
            items.push(item);
        }
    })
    .await
    .unwrap_or_else(|_| {
        let summary: Vec<String> = items
            .iter()
            .map(|i| format!("{}:{:?}:{}:{:?}", i.task_key, i.kind, i.seq, i.action))
            .collect();
        panic!(
            "the run ends in time; had {} items: {summary:?}",
            items.len()
        )
    });
    items
}

/// A run config with a fresh run id.
pub(crate) fn config() -> RunConfig {
    RunConfig::new().run_id(unique("run"))
}
