//! Where the queues live: memory (one process), Redis or NATS.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
#[cfg(feature = "nats")]
use std::time::Duration;

use async_trait::async_trait;
use tributary_queue::{MemoryQueue, QueueError, QueueOptions, WorkQueue};

/// Opens the cluster's queues on one broker. Callers and workers of one
/// cluster use brokers pointing at the same server.
#[async_trait]
pub trait Broker: Send + Sync + fmt::Debug + 'static {
    /// Opens (creating if needed) the queue `name` with `options`.
    ///
    /// # Errors
    ///
    /// When the broker is unreachable or refuses the queue.
    async fn queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Arc<dyn WorkQueue>, QueueError>;
}

/// The two queues every caller and worker of a cluster talks through: the
/// task queue (with the workers' group made) and the control queue.
#[derive(Clone, Debug)]
pub(crate) struct FleetQueues {
    pub(crate) tasks: Arc<dyn WorkQueue>,
    pub(crate) control: Arc<dyn WorkQueue>,
}

impl FleetQueues {
    /// Open both on `broker` (making the workers' group if needed).
    pub(crate) async fn open(
        broker: &dyn Broker,
        options: &crate::options::ClusterOptions,
    ) -> Result<Self, QueueError> {
        let tasks = broker
            .queue(&options.tasks_queue(), options.task_queue_options())
            .await?;
        tasks
            .create_group(crate::caller::WORKERS_GROUP, tributary_queue::Start::First)
            .await?;
        let control = broker
            .queue(&options.control_queue(), options.stream_queue_options())
            .await?;
        Ok(FleetQueues { tasks, control })
    }
}

/// Queues in this process's memory: for tests and for trying the cluster
/// API on one machine. Clones share the queues.
#[derive(Debug, Clone, Default)]
pub struct MemoryBroker {
    queues: Arc<Mutex<HashMap<String, Arc<MemoryQueue>>>>,
}

impl MemoryBroker {
    /// No queues yet.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let mut queues = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        let queue = queues
            .entry(name.to_owned())
            .or_insert_with(|| Arc::new(MemoryQueue::new(name, options)));
        Ok(Arc::clone(queue) as Arc<dyn WorkQueue>)
    }
}

/// Queues as Redis streams on the server at a URL.
#[cfg(feature = "redis")]
#[derive(Debug, Clone)]
pub struct RedisBroker {
    url: String,
}

#[cfg(feature = "redis")]
impl RedisBroker {
    /// The server at `url` (`redis://host:port`).
    pub fn new(url: impl Into<String>) -> Self {
        RedisBroker { url: url.into() }
    }
}

#[cfg(feature = "redis")]
#[async_trait]
impl Broker for RedisBroker {
    async fn queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let queue = tributary_queue::RedisQueue::connect(&self.url, name, options).await?;
        Ok(Arc::new(queue))
    }
}

/// Queues as JetStream streams on the NATS server at a URL.
#[cfg(feature = "nats")]
#[derive(Debug, Clone)]
pub struct NatsBroker {
    url: String,
}

#[cfg(feature = "nats")]
impl NatsBroker {
    /// The server at `url` (`nats://host:port`), with JetStream on.
    pub fn new(url: impl Into<String>) -> Self {
        NatsBroker { url: url.into() }
    }
}

#[cfg(feature = "nats")]
#[async_trait]
impl Broker for NatsBroker {
    async fn queue(
        &self,
        name: &str,
        options: QueueOptions,
    ) -> Result<Arc<dyn WorkQueue>, QueueError> {
        let queue =
            tributary_queue::NatsQueue::connect(&self.url, name, options, Duration::from_secs(120))
                .await?;
        Ok(Arc::new(queue))
    }
}
