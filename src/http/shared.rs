//! A service behind an `Arc`: cloning it is one reference count, whatever it wraps.
//!
//! `axum::middleware::from_fn` clones the service beneath it on every request (it hands a fresh
//! copy to `Next`). Beneath one such layer is the whole rest of the stack, so with several of
//! them a request cloned every layer below each one: work growing with the square of the stack's
//! depth, about 5 % of a cheap request in a profile. With [`SharedLayer`] under each `from_fn`
//! layer, each clone stops at the next `Arc`.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt as _};

#[derive(Debug)]
pub struct Shared<S>(Arc<S>);

impl<S> Clone for Shared<S> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<S, R> Service<R> for Shared<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    /// The copy is made ready before it is called (tower's contract), inside the future.
    type Future = Oneshot<S, R>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: R) -> Self::Future {
        S::clone(&self.0).oneshot(request)
    }
}

/// Puts the service beneath it behind an `Arc` ([`Shared`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct SharedLayer;

impl<S> Layer<S> for SharedLayer {
    type Service = Shared<S>;

    fn layer(&self, inner: S) -> Shared<S> {
        Shared(Arc::new(inner))
    }
}
