//! The `async fn` form of an [`AsyncFunction`]: one local task per record.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;

use futures_lite::FutureExt;

use crate::function::{AsyncError, AsyncFunction, PanicError, ResultFuture};

/// An [`AsyncFunction`] from an `async` closure: each record's future runs as a task on the
/// partition's executor and completes the record with its `Ok` value or its error; a panic in
/// the future fails only that record (SPEC S13).
///
/// Convenient, but each record costs a task allocation; hot paths implement
/// [`AsyncFunction::invoke`] directly.
///
/// ```
/// use ringwait::runtime::{async_fn, Pipeline};
/// use ringwait::source::GeneratorSource;
/// use ringwait::sink::CountingSink;
/// use ringwait::AsyncError;
///
/// let report = Pipeline::builder().partitions(1).build().unwrap()
///     .run(
///         |p| Ok(GeneratorSource::new(p.index, p.partitions, 100, |i| i)),
///         |_p| async {
///             Ok(async_fn(|x: u64| async move {
///                 glommio::yield_if_needed().await;
///                 Ok::<_, AsyncError>(x * 2)
///             }))
///         },
///         |_p| Ok(CountingSink::default()),
///     )
///     .unwrap();
/// assert_eq!(report.merged.outputs, 100);
/// ```
pub fn async_fn<In, Out, Fut, F>(f: F) -> AsyncFn<In, Out, F>
where
    F: Fn(In) -> Fut + 'static,
    Fut: Future<Output = Result<Out, AsyncError>> + 'static,
    In: Clone + 'static,
    Out: 'static,
{
    AsyncFn {
        f,
        _types: PhantomData,
    }
}

/// The function made by [`async_fn`].
pub struct AsyncFn<In, Out, F> {
    f: F,
    _types: PhantomData<fn(In) -> Out>,
}

impl<In, Out, Fut, F> AsyncFunction for AsyncFn<In, Out, F>
where
    F: Fn(In) -> Fut + 'static,
    Fut: Future<Output = Result<Out, AsyncError>> + 'static,
    In: Clone + 'static,
    Out: 'static,
{
    type In = In;
    type Out = Out;

    fn invoke(&self, input: &In, result: ResultFuture<Out>) {
        let fut = (self.f)(input.clone());
        glommio::spawn_local(async move {
            let _ = match AssertUnwindSafe(fut).catch_unwind().await {
                Ok(Ok(v)) => result.complete_one(v),
                Ok(Err(e)) => result.fail(e),
                Err(payload) => result.fail(AsyncError::new(PanicError::from_payload(payload))),
            };
        })
        .detach();
    }
}
