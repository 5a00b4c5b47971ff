//! The two bodies that cross the proxy.
//!
//! [`RequestBody`] carries a client's upload to a worker: streamed, capped at
//! `--max-body-bytes`, with a stall timeout between chunks, and a signal when
//! it is fully sent (the worker's read timeout starts only then, so a slow
//! upload is not mistaken for a hung worker).
//!
//! [`ResponseBody`] carries an answer to the client: either a small local
//! answer (errors, `/server`) or a worker's streamed response that holds the
//! worker's [`Lease`] until the last byte. When the stream ends the worker
//! goes back to the pool; if the client leaves early the connection to the
//! worker is in an unknown state and is re-dialled before its next use.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::access_log::AccessRecord;
use super::pool::Lease;
use super::upstream::Upstream;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client sent more than `--max-body-bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A request body on its way to a worker.
pub enum RequestBody {
    Empty,
    Client(Box<ClientBody>),
}

pub struct ClientBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
    finished: Option<oneshot::Sender<()>>,
}

impl RequestBody {
    /// Wraps a client body; the receiver fires once it has been sent in full
    /// (or failed).
    pub fn client(inner: Incoming, limit: u64, stall: Duration) -> (Self, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let body = ClientBody {
            inner,
            remaining: limit,
            limit,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
            finished: Some(tx),
        };
        (RequestBody::Client(Box::new(body)), rx)
    }
}

impl ClientBody {
    fn finish(&mut self) {
        if let Some(tx) = self.finished.take() {
            let _ = tx.send(());
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = match self.get_mut() {
            RequestBody::Empty => return Poll::Ready(None),
            RequestBody::Client(body) => body,
        };
        match Pin::new(&mut body.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                match body.remaining.checked_sub(len) {
                    Some(rest) => body.remaining = rest,
                    None => {
                        body.finish();
                        return Poll::Ready(Some(Err(BodyTooLarge(body.limit).into())));
                    }
                }
                let deadline = tokio::time::Instant::now() + body.stall;
                body.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                body.finish();
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                body.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match body.timer.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    body.finish();
                    Poll::Ready(Some(Err(BodyStalled(body.stall).into())))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Client(body) => body.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Client(body) => body.inner.size_hint(),
        }
    }
}

/// A response body on its way to a client.
pub enum ResponseBody {
    Local(Full<Bytes>),
    Worker(Box<WorkerBody>),
}

/// A worker's response, holding the worker until its last byte.
pub struct WorkerBody {
    /// `None` only after a drop handed the rest to a drain task.
    inner: Option<Incoming>,
    lease: Option<Lease<Upstream>>,
    record: Option<AccessRecord>,
    /// How long a drain of an abandoned response may take.
    drain_limit: Duration,
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }

    pub fn worker(
        inner: Incoming,
        lease: Lease<Upstream>,
        record: Option<AccessRecord>,
        drain_limit: Duration,
    ) -> Self {
        ResponseBody::Worker(Box::new(WorkerBody {
            inner: Some(inner),
            lease: Some(lease),
            record,
            drain_limit,
        }))
    }
}

impl WorkerBody {
    /// The response is over: return the worker, log the request.
    fn finish(&mut self, outcome: &'static str) {
        if let Some(mut lease) = self.lease.take() {
            if outcome != "ok" {
                lease.conn().invalidate();
            }
        }
        if let Some(record) = self.record.take() {
            record.emit(outcome);
        }
    }
}

impl Drop for WorkerBody {
    fn drop(&mut self) {
        let Some(lease) = self.lease.take() else {
            return;
        };
        let inner = self.inner.take();
        // hyper may stop polling once `is_end_stream` says the body is over.
        if inner.as_ref().is_none_or(Body::is_end_stream) {
            self.lease = Some(lease);
            self.finish("ok");
            return;
        }
        // The client left mid-response. The worker is still sending: let it
        // finish in the background (bounded) before it takes another request.
        if let Some(record) = self.record.take() {
            record.emit("client-closed");
        }
        let limit = self.drain_limit;
        if let (Some(inner), Ok(runtime)) = (inner, tokio::runtime::Handle::try_current()) {
            runtime.spawn(drain(inner, lease, limit));
        }
    }
}

/// Reads an abandoned response to its end, then returns the worker.
async fn drain(inner: Incoming, mut lease: Lease<Upstream>, limit: Duration) {
    let upstream = lease.conn();
    let drained = tokio::time::timeout(limit, upstream.drain(inner)).await;
    if !matches!(drained, Ok(Ok(()))) {
        upstream.invalidate();
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let body = match self.get_mut() {
            ResponseBody::Local(full) => {
                return Pin::new(full)
                    .poll_frame(cx)
                    .map_err(|never| match never {})
            }
            ResponseBody::Worker(body) => body,
        };
        let Some(inner) = body.inner.as_mut() else {
            return Poll::Ready(None);
        };
        // The worker's connection runs in this task: let it read more first.
        if let Some(lease) = body.lease.as_mut() {
            lease.conn().poll_connection(cx);
        }
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(record), Some(data)) = (body.record.as_mut(), frame.data_ref()) {
                    record.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "worker response broke off mid-stream; the client gets a truncated response");
                body.finish("worker-error");
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                body.finish("ok");
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(full) => full.is_end_stream(),
            ResponseBody::Worker(body) => body.inner.as_ref().is_none_or(Body::is_end_stream),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(full) => full.size_hint(),
            ResponseBody::Worker(body) => body
                .inner
                .as_ref()
                .map_or_else(SizeHint::default, Body::size_hint),
        }
    }
}
