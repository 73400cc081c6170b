//! Helpers shared by the pipeline tests.

use std::sync::{Arc, Mutex};

use tributary::pipeline::{Input, NodeContext, Processor, sink};

/// What a collecting sink received, in arrival order.
#[derive(Clone)]
pub(crate) struct Collected<T>(pub(crate) Arc<Mutex<Vec<Input<T>>>>);

impl<T: Clone + Send + 'static> Collected<T> {
    pub(crate) fn new() -> Self {
        Collected(Arc::new(Mutex::new(Vec::new())))
    }

    /// A sink that records every input.
    pub(crate) fn sink(&self) -> impl Processor<T> {
        let seen = Arc::clone(&self.0);
        sink(move |input: Input<T>, _ctx: NodeContext| {
            seen.lock().unwrap().push(input);
            async { Ok::<_, std::convert::Infallible>(()) }
        })
    }

    pub(crate) fn take(&self) -> Vec<Input<T>> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }

    /// The single items received, in arrival order.
    pub(crate) fn items(&self) -> Vec<T> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .map(|i| i.into_single().expect("a single item"))
            .collect()
    }
}
