//! The two bodies that cross the proxy.
//!
//! [`ClientBody`] carries a client's upload to a worker: capped at
//! `--max-body-bytes`, with a stall timeout between pieces
//! (`--header-timeout-ms`) and a minimum rate over each
//! [`RATE_WINDOW`] (`--min-upload-rate`), both answered with 408. A body up
//! to `--upload-buffer-bytes` is read whole before a worker is taken
//! ([`ClientBody::read_up_to`]), so a slow upload never holds a worker;
//! a larger one streams, pulled by the worker connection as it writes.
//!
//! [`ResponseBody`] carries an answer to the client: a complete one (the
//! server's own, or a worker's small body read whole while its head was
//! read, the worker already back in the pool), or a worker's streamed body
//! relayed through a bounded buffer ([`super::relay`]).

use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::relay::RelayBody;
use crate::config::RATE_WINDOW;

pub type BoxError = Box<dyn StdError + Send + Sync>;

/// The client sent more than `--max-body-bytes`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// The client stopped sending its body, or sent it too slowly.
#[derive(Debug, thiserror::Error)]
pub enum BodyStalled {
    #[error("request body stalled: no data for {0:?}")]
    Paused(Duration),
    #[error("request body too slow: under {0} bytes per second")]
    TooSlow(u64),
}

/// A client's request body on its way to a worker.
pub struct ClientBody {
    inner: Incoming,
    remaining: u64,
    limit: u64,
    stall: Duration,
    min_rate: u64,
    /// When the last piece came.
    last_piece: Instant,
    /// The current rate window: when it opened and what came in it.
    window_start: Instant,
    window_bytes: u64,
    timer: Pin<Box<Sleep>>,
}

/// What [`ClientBody::read_up_to`] found.
pub enum Buffered {
    /// The whole body.
    Whole(Bytes),
    /// The body is larger: its first part, the rest still to come.
    Prefix(Bytes),
}

impl ClientBody {
    pub fn new(inner: Incoming, limit: u64, stall: Duration, min_rate: u64) -> Box<Self> {
        let now = Instant::now();
        let mut body = Box::new(ClientBody {
            inner,
            remaining: limit,
            limit,
            stall,
            min_rate,
            last_piece: now,
            window_start: now,
            window_bytes: 0,
            timer: Box::pin(tokio::time::sleep_until(now + stall)),
        });
        body.rearm();
        body
    }

    /// The client's declared length, if it gave one.
    pub fn exact_len(&self) -> Option<u64> {
        self.inner.size_hint().exact()
    }

    /// Reads until the body ends or more than `limit` bytes are in.
    pub async fn read_up_to(&mut self, limit: usize) -> Result<Buffered, BoxError> {
        let mut buf = BytesMut::new();
        loop {
            match std::future::poll_fn(|cx| self.poll_data(cx)).await {
                None => return Ok(Buffered::Whole(buf.freeze())),
                Some(Err(e)) => return Err(e),
                Some(Ok(data)) => {
                    buf.extend_from_slice(&data);
                    if buf.len() > limit {
                        return Ok(Buffered::Prefix(buf.freeze()));
                    }
                }
            }
        }
    }

    /// The next deadline: a pause past `stall`, or the end of the window.
    fn rearm(&mut self) {
        let paused = self.last_piece + self.stall;
        let deadline = if self.min_rate == 0 {
            paused
        } else {
            paused.min(self.window_start + RATE_WINDOW)
        };
        self.timer.as_mut().reset(deadline);
    }

    /// The timer fired: a stall, a window too slow, or a new window.
    fn judge(&mut self, now: Instant) -> Result<(), BodyStalled> {
        if now >= self.last_piece + self.stall {
            return Err(BodyStalled::Paused(self.stall));
        }
        if self.window_bytes < self.min_rate.saturating_mul(RATE_WINDOW.as_secs()) {
            return Err(BodyStalled::TooSlow(self.min_rate));
        }
        self.window_start = now;
        self.window_bytes = 0;
        self.rearm();
        Ok(())
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
                    self.last_piece = Instant::now();
                    self.window_bytes += data.len() as u64;
                    self.rearm();
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e.into()))),
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => {
                    ready!(self.timer.as_mut().poll(cx));
                    if let Err(e) = self.judge(Instant::now()) {
                        return Poll::Ready(Some(Err(e.into())));
                    }
                }
            }
        }
    }
}

/// A response body on its way to a client.
pub enum ResponseBody {
    /// Complete: the server's own answer, or a worker's small body.
    Local(Full<Bytes>),
    /// A worker's body, still streaming.
    Relay(RelayBody),
}

impl ResponseBody {
    pub fn text(text: impl Into<Bytes>) -> Self {
        ResponseBody::Local(Full::new(text.into()))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            ResponseBody::Local(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            ResponseBody::Relay(relay) => Pin::new(relay).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Local(full) => full.is_end_stream(),
            ResponseBody::Relay(relay) => relay.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Local(full) => full.size_hint(),
            ResponseBody::Relay(relay) => relay.size_hint(),
        }
    }
}
