//! The work-queue contract on the memory backend.

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tributary_queue::{MemoryQueue, QueueOptions, WorkQueue};

fn make(options: QueueOptions) -> BoxFuture<'static, Box<dyn WorkQueue>> {
    async move { Box::new(MemoryQueue::new("jobs", options)) as Box<dyn WorkQueue> }.boxed()
}

crate::queue_conformance::conformance!(make);
