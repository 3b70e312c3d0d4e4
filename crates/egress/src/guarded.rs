//! A request body that passes through the leak guard: every chunk is scanned (across chunk
//! boundaries) before any of it goes upstream. When a guarded value shows up the body ends with
//! an error — the upstream request is aborted, nothing of the value having been sent — and the
//! credential is noted in `found` for the proxy to answer 403 and record the attempt.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use crate::leak::{LeakCheck, Scanner};
use crate::upstream::{BoxError, RequestBody};

/// The error that ends a guarded body.
#[derive(Debug, thiserror::Error)]
#[error("request blocked by the leak guard")]
pub(crate) struct LeakBlocked;

pub(crate) struct GuardedBody {
    inner: RequestBody,
    scanner: Scanner,
    found: Arc<OnceLock<usize>>,
    /// Called once when the guard trips (records the attempt).
    on_found: Option<Box<dyn FnOnce(usize) + Send + Sync>>,
    /// Trailers that arrived while held bytes were still to be released.
    trailers: Option<Frame<Bytes>>,
    done: bool,
}

impl GuardedBody {
    pub(crate) fn new(
        inner: RequestBody,
        guards: LeakCheck,
        found: Arc<OnceLock<usize>>,
        on_found: Box<dyn FnOnce(usize) + Send + Sync>,
    ) -> Self {
        GuardedBody {
            inner,
            scanner: Scanner::new(guards),
            found,
            on_found: Some(on_found),
            trailers: None,
            done: false,
        }
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(this.trailers.take().map(Ok));
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => match this.scanner.push(&data) {
                        Ok(safe) if safe.is_empty() => continue,
                        Ok(safe) => return Poll::Ready(Some(Ok(Frame::data(safe)))),
                        Err(credential) => {
                            let _ = this.found.set(credential);
                            if let Some(record) = this.on_found.take() {
                                record(credential);
                            }
                            this.done = true;
                            return Poll::Ready(Some(Err(Box::new(LeakBlocked))));
                        }
                    },
                    Err(trailers) => {
                        this.done = true;
                        this.trailers = Some(trailers);
                        let rest = this.scanner.finish();
                        if !rest.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(rest))));
                        }
                    }
                },
                Poll::Ready(None) => {
                    this.done = true;
                    let rest = this.scanner.finish();
                    if !rest.is_empty() {
                        return Poll::Ready(Some(Ok(Frame::data(rest))));
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // The same bytes, re-chunked (unless blocked, when the request is aborted anyway).
        self.inner.size_hint()
    }
}
