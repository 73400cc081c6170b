//! Processors, sources and sinks: the async functions a pipeline runs.

use std::fmt;
use std::future::Future;

use futures_util::future::{BoxFuture, Either, Map, Ready, ready};
use futures_util::{FutureExt, Stream, StreamExt};

use crate::emit::Emitter;
use crate::item::{BoxError, Input, Item, NodeContext};

/// A node that turns one input into zero, one or many outputs.
///
/// Called once per input; with [`Node::concurrency`](crate::Node::concurrency)
/// above one, several calls run at once. Closures become processors with
/// [`processor`], [`map`] and [`sink`]. The node's task is built for the
/// processor's own type: a call's future is not boxed.
///
/// # Examples
///
/// A processor type of its own, here one that counts what it has seen and
/// emits each item with its number:
///
/// ```
/// use std::future::{ready, Ready};
/// use std::sync::atomic::{AtomicU64, Ordering};
/// use tributary_pipeline::{BoxError, Input, NodeContext, Processor};
///
/// #[derive(Default)]
/// struct Number(AtomicU64);
///
/// impl Processor<String> for Number {
///     type Outputs = Vec<String>;
///     type Future = Ready<Result<Vec<String>, BoxError>>;
///
///     fn process(&self, input: Input<String>, _ctx: NodeContext) -> Self::Future {
///         let outs = input
///             .into_items()
///             .into_iter()
///             .map(|s| format!("{} {s}", self.0.fetch_add(1, Ordering::Relaxed)))
///             .collect();
///         ready(Ok(outs))
///     }
/// }
/// ```
pub trait Processor<T>: Send + Sync + 'static {
    /// What one call produces: a `Vec`, an `Option`, any iterable.
    type Outputs: IntoIterator<Item = T, IntoIter: Send> + Send + 'static;
    /// The future of one call.
    type Future: Future<Output = Result<Self::Outputs, BoxError>> + Send + 'static;

    /// Process one input; the outputs go to every downstream node (or to
    /// one of them, in turn, with [`FanOut::RoundRobin`](crate::FanOut)).
    fn process(&self, input: Input<T>, ctx: NodeContext) -> Self::Future;
}

/// Turns a closure's error into a [`BoxError`].
type BoxErr<O, E> = fn(Result<O, E>) -> Result<O, BoxError>;

fn box_err<O, E: Into<BoxError>>(r: Result<O, E>) -> Result<O, BoxError> {
    r.map_err(Into::into)
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
/// context and returning the outputs (a `Vec`, an `Option`, any iterable).
///
/// # Examples
///
/// ```
/// use tributary_pipeline::{processor, Input, NodeContext};
///
/// // Split a line into its words: one input, many outputs.
/// let split = processor(|input: Input<String>, _ctx: NodeContext| async move {
///     let line = input.into_single().unwrap_or_default();
///     Ok::<_, std::convert::Infallible>(line.split(' ').map(str::to_owned).collect::<Vec<_>>())
/// });
/// # let _ = split;
/// ```
pub fn processor<T, F, Fut, O, E>(f: F) -> FnProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    O: IntoIterator<Item = T, IntoIter: Send> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    FnProcessor(f)
}

impl<T, F, Fut, O, E> Processor<T> for FnProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<O, E>> + Send + 'static,
    O: IntoIterator<Item = T, IntoIter: Send> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    type Outputs = O;
    type Future = Map<Fut, BoxErr<O, E>>;

    fn process(&self, input: Input<T>, ctx: NodeContext) -> Self::Future {
        (self.0)(input, ctx).map(box_err as BoxErr<O, E>)
    }
}

/// The error of a [`map`] processor given a joined input (several items).
#[derive(Debug, thiserror::Error)]
#[error("node {node} maps one item but received one per input; give it one input or a merge join")]
pub struct NotSingle {
    /// The node.
    pub node: String,
}

/// A one-to-one processor; see [`map`].
pub struct MapProcessor<F>(F);

impl<F> fmt::Debug for MapProcessor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MapProcessor")
    }
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
pub fn map<T, F, Fut, E>(f: F) -> MapProcessor<F>
where
    T: Item,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    MapProcessor(f)
}

type Single<T, E> = fn(Result<T, E>) -> Result<Option<T>, BoxError>;

fn single<T, E: Into<BoxError>>(r: Result<T, E>) -> Result<Option<T>, BoxError> {
    r.map(Some).map_err(Into::into)
}

impl<T, F, Fut, E> Processor<T> for MapProcessor<F>
where
    T: Item,
    F: Fn(T) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    type Outputs = Option<T>;
    type Future = Either<Map<Fut, Single<T, E>>, Ready<Result<Option<T>, BoxError>>>;

    fn process(&self, input: Input<T>, ctx: NodeContext) -> Self::Future {
        match input.into_single() {
            Some(item) => Either::Left((self.0)(item).map(single as Single<T, E>)),
            None => Either::Right(ready(Err(Box::new(NotSingle {
                node: ctx.node().to_owned(),
            }) as BoxError))),
        }
    }
}

/// A processor without outputs; see [`sink`].
pub struct SinkProcessor<F>(F);

impl<F> fmt::Debug for SinkProcessor<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SinkProcessor")
    }
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
pub fn sink<T, F, Fut, E>(f: F) -> SinkProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    SinkProcessor(f)
}

type Nothing<T, E> = fn(Result<(), E>) -> Result<Option<T>, BoxError>;

fn nothing<T, E: Into<BoxError>>(r: Result<(), E>) -> Result<Option<T>, BoxError> {
    r.map(|()| None).map_err(Into::into)
}

impl<T, F, Fut, E> Processor<T> for SinkProcessor<F>
where
    T: Item,
    F: Fn(Input<T>, NodeContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
{
    type Outputs = Option<T>;
    type Future = Map<Fut, Nothing<T, E>>;

    fn process(&self, input: Input<T>, ctx: NodeContext) -> Self::Future {
        (self.0)(input, ctx).map(nothing as Nothing<T, E>)
    }
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
    E: Into<BoxError> + 'static,
{
    FnSource(f)
}

impl<T, F, Fut, E> Source<T> for FnSource<F>
where
    T: Item,
    F: FnOnce(Emitter<T>, NodeContext) -> Fut + Send + 'static,
    Fut: Future<Output = Result<(), E>> + Send + 'static,
    E: Into<BoxError> + 'static,
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
