//! The two bodies that cross the proxy.
//!
//! [`ClientBody`] carries a client's upload to a worker: streamed, capped at
//! `--max-body-bytes`, with a stall timeout between pieces. The upstream
//! connection pulls it as it writes, so the worker's read timeout starts
//! only once it is fully sent (a slow upload is not a hung worker).
//!
//! [`ResponseBody`] carries an answer to the client: either a small local
//! answer (errors, `/server`) or a worker's streamed response that holds the
//! worker's [`Lease`] until the last byte, read straight from the worker's
//! socket. When the stream ends the worker goes back to the pool; if the
//! client leaves early, [`settle`] lets the worker finish first.

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::Sleep;

use super::access_log::AccessRecord;
use super::pool::Lease;
use super::upstream::{settle, Upstream};

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client sent more than `--max-body-bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client stopped sending its body.
#[derive(Debug, thiserror::Error)]
#[error("request body stalled for {0:?}")]
pub struct BodyStalled(pub Duration);

/// A client's request body on its way to a worker: capped at
/// `--max-body-bytes`, with a stall timeout between pieces.
pub struct ClientBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    stall: Duration,
    timer: Pin<Box<Sleep>>,
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: u64, stall: Duration) -> Box<Self> {
        Box::new(ClientBody {
            inner,
            remaining: limit,
            limit,
            stall,
            timer: Box::pin(tokio::time::sleep(stall)),
        })
    }

    /// The next piece of data; trailers are dropped (workers get none).
    pub fn poll_data(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, BoxError>>> {
        loop {
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    match self.remaining.checked_sub(data.len() as u64) {
                        Some(rest) => self.remaining = rest,
                        None => return Poll::Ready(Some(Err(BodyTooLarge(self.limit).into()))),
                    }
                    let deadline = tokio::time::Instant::now() + self.stall;
                    self.timer.as_mut().reset(deadline);
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    ready!(self.timer.as_mut().poll(cx));
                    return Poll::Ready(Some(Err(BodyStalled(self.stall).into())));
                }
            }
        }
    }
}

/// A response body on its way to a client.
pub enum ResponseBody {
    Local(Full<Bytes>),
    Worker(WorkerBody),
}

/// A worker's response, holding the worker until its last byte.
pub struct WorkerBody {
    /// `None` once the body has ended (or been handed to [`settle`]).
    lease: Option<Lease<Upstream>>,
    record: Option<Box<AccessRecord>>,
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }

    /// The body of the response whose head was just read on `lease`.
    pub fn worker(lease: Lease<Upstream>, record: Option<Box<AccessRecord>>) -> Self {
        ResponseBody::Worker(WorkerBody {
            lease: Some(lease),
            record,
        })
    }
}

impl WorkerBody {
    /// The response is over: return the worker, log the request.
    fn finish(&mut self, outcome: &'static str) {
        if let Some(lease) = self.lease.take() {
            settle(lease);
        }
        if let Some(record) = self.record.take() {
            record.emit(outcome);
        }
    }
}

impl Drop for WorkerBody {
    fn drop(&mut self) {
        let Some(lease) = self.lease.as_mut() else {
            return;
        };
        // hyper may stop polling once `is_end_stream` says the body is over.
        if lease.conn().is_settled() {
            self.finish("ok");
        } else {
            // The client left mid-response: the worker finishes in the
            // background before it takes another request.
            self.finish("client-closed");
        }
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
        let Some(lease) = body.lease.as_mut() else {
            return Poll::Ready(None);
        };
        match ready!(lease.conn().poll_body(cx)) {
            Some(Ok(data)) => {
                if let Some(record) = body.record.as_mut() {
                    record.bytes += data.len() as u64;
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Some(Err(e)) => {
                tracing::warn!(worker = lease.worker_id(), error = %e, "worker response broke off mid-stream; the client gets a truncated response");
                body.finish("worker-error");
                Poll::Ready(Some(Err(e.into())))
            }
            None => {
                body.finish("ok");
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(full) => full.is_end_stream(),
            ResponseBody::Worker(body) => body
                .lease
                .as_ref()
                .is_none_or(|lease| lease.conn_ref().is_settled()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(full) => full.size_hint(),
            ResponseBody::Worker(body) => body.lease.as_ref().map_or_else(
                || SizeHint::with_exact(0),
                |l| l.conn_ref().body_size_hint(),
            ),
        }
    }
}
