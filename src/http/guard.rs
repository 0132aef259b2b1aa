//! A layer that may answer a request itself, deciding from the request alone (the CSRF check).
//!
//! `axum::middleware::from_fn` boxes each request's future, hands the layer a copy of every
//! service beneath it, and wraps the answer twice more; for a check that only reads the request
//! none of that is needed. A [`Guard`]'s future is the service's own, or the ready refusal.

use std::task::{Context, Poll};

use axum::extract::Request;
use axum::response::Response;
use futures_util::future::{Either, Ready, ready};
use tower::{Layer, Service};

/// Puts a [`Guard`] running `check` over the service beneath it.
#[derive(Debug, Clone)]
pub struct GuardLayer<F>(F);

impl<F> GuardLayer<F>
where
    F: Fn(&Request) -> Option<Response>,
{
    /// `check` returns the answer to send in the service's place, or `None` to pass the request on.
    pub fn new(check: F) -> Self {
        Self(check)
    }
}

impl<S, F: Clone> Layer<S> for GuardLayer<F> {
    type Service = Guard<S, F>;

    fn layer(&self, inner: S) -> Guard<S, F> {
        Guard {
            inner,
            check: self.0.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Guard<S, F> {
    inner: S,
    check: F,
}

impl<S, F> Service<Request> for Guard<S, F>
where
    S: Service<Request, Response = Response>,
    F: Fn(&Request) -> Option<Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Either<Ready<Result<Response, S::Error>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        match (self.check)(&request) {
            Some(answer) => Either::Left(ready(Ok(answer))),
            None => Either::Right(self.inner.call(request)),
        }
    }
}
