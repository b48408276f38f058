//! The per-partition factories a pipeline runs with, named once: each is called on its
//! partition's core with the partition's [`PartitionContext`].

use super::PartitionContext;
use crate::source::BoxError;

/// Makes a partition's source. Any `Fn(&PartitionContext) -> Result<S, BoxError>` that can
/// be shared across threads is one.
///
/// ```
/// use ringwait::runtime::SourceFactory;
/// use ringwait::source::{GeneratorSource, Source};
/// fn takes<S: Source>(_: impl SourceFactory<S>) {}
/// takes(|p| Ok(GeneratorSource::new(p.index, p.partitions, 10, |i: u64| i)));
/// ```
pub trait SourceFactory<S>:
    Fn(&PartitionContext) -> Result<S, BoxError> + Send + Sync + 'static
{
}

impl<S, T> SourceFactory<S> for T where
    T: Fn(&PartitionContext) -> Result<S, BoxError> + Send + Sync + 'static
{
}

/// Makes a partition's function, asynchronously (it may connect to a store first): any
/// shareable `Fn(&PartitionContext) -> Fut`; the pipeline asks `Fut` for the function.
///
/// ```
/// use ringwait::runtime::FunctionFactory;
/// use ringwait::function::from_fn;
/// fn takes<Fut>(_: impl FunctionFactory<Fut>) {}
/// takes(|_p| async { Ok::<_, ringwait::source::BoxError>(from_fn(|x: &u64, r| { let _ = r.complete_one(*x); })) });
/// ```
pub trait FunctionFactory<Fut>: Fn(&PartitionContext) -> Fut + Send + Sync + 'static {}

impl<Fut, T> FunctionFactory<Fut> for T where T: Fn(&PartitionContext) -> Fut + Send + Sync + 'static
{}

/// Makes a partition's sink: any shareable `Fn(&PartitionContext) -> Result<K, BoxError>`.
///
/// ```
/// use ringwait::runtime::SinkFactory;
/// use ringwait::sink::CountingSink;
/// fn takes<K>(_: impl SinkFactory<K>) {}
/// takes(|_p| Ok(CountingSink::default()));
/// ```
pub trait SinkFactory<K>:
    Fn(&PartitionContext) -> Result<K, BoxError> + Send + Sync + 'static
{
}

impl<K, T> SinkFactory<K> for T where
    T: Fn(&PartitionContext) -> Result<K, BoxError> + Send + Sync + 'static
{
}
