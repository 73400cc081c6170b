//! Processors, sources and sinks: the async functions a pipeline runs.

use std::fmt;
use std::future::Future;

use futures_util::future::BoxFuture;
use futures_util::{FutureExt, Stream, StreamExt};

use crate::emit::Emitter;
use crate::item::{BoxError, Input, Item, NodeContext};

/// A node that turns one input into zero, one or many outputs.
///
/// Called once per input; with [`Node::concurrency`](crate::Node::concurrency)
/// above one, several calls run at once. Closures become processors with
/// [`processor`], [`map`] and [`sink`].
pub trait Processor<T>: Send + Sync + 'static {
    /// Process one input; the outputs go to every downstream node (or to
    /// one of them, in turn, with [`FanOut::RoundRobin`](crate::FanOut)).
    fn process(
        &self,
        input: Input<T>,
        ctx: NodeContext,
    ) -> BoxFuture<'static, Result<Vec<T>, BoxError>>;
}

/// A node without inputs that produces items through an [`Emitter`].
///
/// It runs once; when it returns, its outputs end (end of stream).
pub trait Source<T>: Send + 'static {
    /// Produce items with `out.emit(item).await` until done.
    fn run(
        self: Box<Self>,
        out: Emitter<T>,
        ctx: NodeContext,
    ) -> BoxFuture<'static, Result<(), BoxError>>;
}

// ===== closures =====

/// A processor made of a closure; see [`processor`].
pub struct FnProcessor<F>(F);

impl<F> fmt::Debug for FnProcessor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnProcessor")
    }
}

/// A processor from an async closure taking the input and the node's
/// context and returning the outputs.
///
/// # Examples
///
/// ```
/// use tributary_pipeline::{processor, Input, NodeContext};
///
/// // Split a line into its words: one input, many outputs.
/// let split = processor(|input: Input<String>, _ctx: NodeContext| async move {
///     let line = input.into_single().unwrap_or_default();
///     Ok::<_, std::convert::Infallible>(line.split(' ').map(str::to_owned).collect())
/// });
/// # let _ = split;
/// ```
pub fn processor<T, F, Fut, E>(f: F) -> FnProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnProcessor(f)
}

impl<T, F, Fut, E> Processor<T> for FnProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<T>, E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn process(
        &self,
        input: Input<T>,
        ctx: NodeContext,
    ) -> BoxFuture<'static, Result<Vec<T>, BoxError>> {
        (self.0)(input, ctx).map(|r| r.map_err(Into::into)).boxed()
    }
}

/// The error of a [`map`] processor given a joined input (several items).
#[derive(Debug, thiserror::Error)]
#[error("node {node} maps one item but received one per input; give it one input or a merge join")]
pub struct NotSingle {
    /// The node.
    pub node: String,
}

/// A one-to-one processor: each item becomes one output.
///
/// For a node with one input or a [`Join::Merge`](crate::Join::Merge);
/// given a zipped or latest input it fails with [`NotSingle`].
///
/// # Examples
///
/// ```
/// use tributary_pipeline::map;
///
/// let upper = map(|s: String| async move { Ok::<_, std::convert::Infallible>(s.to_uppercase()) });
/// # let _ = upper;
/// ```
pub fn map<T, F, Fut, E>(f: F) -> impl Processor<T>
where
    T: Item,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnProcessor(move |input: Input<T>, ctx: NodeContext| {
        let item = input.into_single();
        let fut = item.map(&f);
        async move {
            match fut {
                Some(fut) => fut.await.map(|out| vec![out]).map_err(Into::into),
                None => Err(Box::new(NotSingle {
                    node: ctx.node().to_owned(),
                }) as BoxError),
            }
        }
    })
}

/// A processor without outputs, for the end of a pipeline.
///
/// # Examples
///
/// ```
/// use tributary_pipeline::{sink, Input, NodeContext};
///
/// let print = sink(|input: Input<String>, _ctx: NodeContext| async move {
///     println!("{input:?}");
///     Ok::<_, std::convert::Infallible>(())
/// });
/// # let _ = print;
/// ```
pub fn sink<T, F, Fut, E>(f: F) -> impl Processor<T>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnProcessor(move |input: Input<T>, ctx: NodeContext| {
        let fut = f(input, ctx);
        async move { fut.await.map(|()| Vec::new()) }
    })
}

/// A source made of a closure; see [`source`].
pub struct FnSource<F>(F);

impl<F> fmt::Debug for FnSource<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnSource")
    }
}

/// A source from an async closure that emits items.
///
/// # Examples
///
/// ```
/// use tributary_pipeline::{source, Emitter, NodeContext};
///
/// let count = source(|mut out: Emitter<u64>, _ctx: NodeContext| async move {
///     for i in 0..10 {
///         out.emit(i).await?; // waits while downstream is full or paused
///     }
///     Ok::<_, tributary_pipeline::EmitError>(())
/// });
/// # let _ = count;
/// ```
pub fn source<T, F, Fut, E>(f: F) -> FnSource<F>
where
    T: Item,
    F: FnOnce(Emitter<T>, NodeContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    FnSource(f)
}

impl<T, F, Fut, E> Source<T> for FnSource<F>
where
    T: Item,
    F: FnOnce(Emitter<T>, NodeContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError>,
{
    fn run(
        self: Box<Self>,
        out: Emitter<T>,
        ctx: NodeContext,
    ) -> BoxFuture<'static, Result<(), BoxError>> {
        (self.0)(out, ctx).map(|r| r.map_err(Into::into)).boxed()
    }
}

/// A source that emits every item of an iterator, then ends.
///
/// # Examples
///
/// ```
/// let numbers = tributary_pipeline::iter_source(0..100u32);
/// # let _ = numbers;
/// ```
pub fn iter_source<T, I>(items: I) -> impl Source<T>
where
    T: Item,
    I: IntoIterator<Item = T> + Send + 'static,
    I::IntoIter: Send,
{
    source(move |mut out: Emitter<T>, _ctx| async move {
        for item in items {
            out.emit(item).await?;
        }
        Ok::<_, crate::EmitError>(())
    })
}

/// A source that emits every item of a stream, then ends.
pub fn stream_source<T, S>(items: S) -> impl Source<T>
where
    T: Item,
    S: Stream<Item = T> + Send + 'static,
{
    source(move |mut out: Emitter<T>, _ctx| async move {
        let mut items = std::pin::pin!(items);
        while let Some(item) = items.next().await {
            out.emit(item).await?;
        }
        Ok::<_, crate::EmitError>(())
    })
}
