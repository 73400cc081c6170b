//! The work-queue contract on Redis Streams (the shared server), plus what
//! only a real broker can show: a killed consumer process and a restarted
//! server (a server of the test's own).

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tributary_queue::{
    DeadLetter, Delivery, QueueError, QueueOptions, RedisQueue, Start, WorkQueue,
};

use crate::stream_support::{service_url, unique};

/// A queue whose keys are deleted when the test ends.
#[derive(Debug)]
pub(crate) struct Cleaned {
    inner: RedisQueue,
    url: String,
}

impl Drop for Cleaned {
    fn drop(&mut self) {
        let conn = redis::Client::open(self.url.as_str()).and_then(|c| c.get_connection());
        if let Ok(mut conn) = conn {
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}*", self.inner.name()))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<()> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

#[async_trait]
impl WorkQueue for Cleaned {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn options(&self) -> QueueOptions {
        self.inner.options()
    }
    async fn publish(&self, payload: Bytes, dedupe_id: Option<&str>) -> Result<(), QueueError> {
        self.inner.publish(payload, dedupe_id).await
    }
    async fn create_group(&self, group: &str, start: Start) -> Result<(), QueueError> {
        self.inner.create_group(group, start).await
    }
    async fn fetch(
        &self,
        group: &str,
        consumer: &str,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<Delivery>, QueueError> {
        self.inner.fetch(group, consumer, max, wait).await
    }
    async fn ack(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.ack(d).await
    }
    async fn nak(&self, d: &Delivery, delay: Duration, error: &str) -> Result<(), QueueError> {
        self.inner.nak(d, delay, error).await
    }
    async fn in_progress(&self, d: &Delivery) -> Result<(), QueueError> {
        self.inner.in_progress(d).await
    }
    async fn terminate(&self, d: &Delivery, error: &str) -> Result<(), QueueError> {
        self.inner.terminate(d, error).await
    }
    async fn dead_letters(&self, group: &str) -> Result<Vec<DeadLetter>, QueueError> {
        self.inner.dead_letters(group).await
    }
    async fn trim(&self) -> Result<u64, QueueError> {
        self.inner.trim().await
    }
    async fn stored(&self) -> Result<u64, QueueError> {
        self.inner.stored().await
    }
}

fn make(options: QueueOptions) -> BoxFuture<'static, Box<dyn WorkQueue>> {
    async move {
        let url = service_url("TRIBUTARY_REDIS_URL");
        let inner = RedisQueue::connect(&url, unique("trib-test-q:"), options)
            .await
            .unwrap();
        Box::new(Cleaned { inner, url }) as Box<dyn WorkQueue>
    }
    .boxed()
}

crate::queue_conformance::conformance!(
    make,
    #[cfg_attr(not(tributary_redis), ignore = "needs TRIBUTARY_REDIS_URL")]
);
