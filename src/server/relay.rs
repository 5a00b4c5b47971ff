//! Relaying a worker's streamed response to its client, so that neither side
//! can hold the other hostage.
//!
//! A response whose body is not in hand when its head arrives (a large or
//! slow body, an event stream) is moved by a pump task: it reads the body
//! from the worker and queues it for the client in a buffer of at most
//! `--response-buffer-bytes` for this response, and at most
//! [`TOTAL_BUFFER_BYTES`] across all responses. So:
//! - a client slower than its worker holds the worker only until the rest of
//!   the answer fits in the buffer; the worker then goes back to the pool
//!   while the client drains what is queued;
//! - a client that holds a worker anyway (its answer outgrew the buffer)
//!   must take at least `--min-download-rate` bytes per second, measured
//!   over [`RATE_WINDOW`] while the buffer is full, or it is disconnected
//!   and the worker freed;
//! - a worker that pauses mid-body for `--body-idle-timeout-ms` has its
//!   answer cut off (the client sees a broken response, never a complete
//!   looking one) and is replaced;
//! - a client that leaves has the rest of the worker's answer read and
//!   dropped before the worker takes another request ([`settle`]).

use std::future::poll_fn;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::access_log::AccessRecord;
use super::body::BoxError;
use super::conn::ClientConn;
use super::pool::{Lease, Report};
use super::upstream::{settle, Upstream};
use crate::config::RATE_WINDOW;

/// The most response bytes queued for clients across the whole server.
pub const TOTAL_BUFFER_BYTES: usize = 256 * 1024 * 1024;

/// The largest piece queued at once (a worker read can be larger).
const MAX_PIECE: usize = 64 * 1024;

/// The limits a relay keeps.
#[derive(Debug, Clone, Copy)]
pub struct RelayLimits {
    /// Bytes of this response that may wait for the client.
    pub buffer: usize,
    /// Slowest client, in bytes per second over [`RATE_WINDOW`], while the
    /// buffer is full; 0: no check.
    pub min_rate: u64,
    /// Longest pause the worker may take mid-body.
    pub body_idle: Duration,
}

/// Why a relayed response ended before its last byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RelayError {
    #[error("the worker's response broke off mid-body")]
    Worker,
    #[error("the worker paused mid-body for longer than the body idle timeout")]
    WorkerStalled,
    #[error("the client took its response slower than the minimum download rate")]
    ClientTooSlow,
}

impl RelayError {
    fn outcome(self) -> &'static str {
        match self {
            RelayError::Worker => "worker-error",
            RelayError::WorkerStalled => "worker-stalled",
            RelayError::ClientTooSlow => "client-too-slow",
        }
    }
}

/// One queued piece, holding its share of the buffers until it is taken.
struct Piece {
    data: Bytes,
    _room: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

enum Message {
    Data(Piece),
    End,
    Failed(RelayError),
}

/// How far the client has got, shared by the pump and the client's body.
#[derive(Default)]
struct Progress {
    delivered: AtomicU64,
}

/// Starts relaying the body of the response whose head was just read on
/// `lease` (`first`: what was read of it already; `size`: the whole body's);
/// the returned body is the client's side.
pub fn start(
    lease: Lease<Upstream>,
    first: Bytes,
    size: SizeHint,
    client: Arc<ClientConn>,
    record: Option<Box<AccessRecord>>,
    limits: RelayLimits,
    total: &Arc<Semaphore>,
) -> RelayBody {
    let (tx, rx) = mpsc::unbounded_channel();
    let progress = Arc::new(Progress::default());
    let pump = Pump {
        lease: Some(lease),
        tx,
        room: Arc::new(Semaphore::new(limits.buffer.max(MAX_PIECE))),
        total: total.clone(),
        progress: progress.clone(),
        client,
        limits,
    };
    tokio::spawn(pump.run(first));
    RelayBody {
        rx,
        progress,
        record,
        size,
        ended: false,
    }
}

/// The task that moves one response from its worker to the client's buffer.
struct Pump {
    /// `None` once the worker has been let go.
    lease: Option<Lease<Upstream>>,
    tx: mpsc::UnboundedSender<Message>,
    /// This response's share of buffer bytes.
    room: Arc<Semaphore>,
    /// The server-wide buffer bytes.
    total: Arc<Semaphore>,
    progress: Arc<Progress>,
    /// The client's connection, cut off when its response must end now.
    client: Arc<ClientConn>,
    limits: RelayLimits,
}

/// What waiting for buffer room came to.
enum Room {
    Granted(OwnedSemaphorePermit, OwnedSemaphorePermit),
    ClientGone,
    ClientTooSlow,
}

impl Pump {
    async fn run(mut self, first: Bytes) {
        let mut rate = RateWindow::new(self.limits.min_rate);
        if !self.queue(first, &mut rate).await {
            return;
        }
        loop {
            let Some(lease) = self.lease.as_mut() else {
                return;
            };
            let read = poll_fn(|cx| lease.conn().poll_body(cx));
            let data = match tokio::time::timeout(self.limits.body_idle, read).await {
                Ok(Some(Ok(data))) => data,
                // The end: the connection is idle again (or closed, if it
                // cannot be reused), and the worker goes back to the pool.
                Ok(None) => {
                    self.lease = None;
                    let _ = self.tx.send(Message::End);
                    return;
                }
                Ok(Some(Err(e))) => {
                    tracing::warn!(worker = lease.worker_id(), error = %e, "worker response broke off mid-stream; the client gets a cut-off response");
                    self.lease = None;
                    let _ = self.tx.send(Message::Failed(RelayError::Worker));
                    return;
                }
                Err(_) => {
                    let id = lease.worker_id();
                    tracing::error!(
                        worker = id,
                        timeout_ms = self.limits.body_idle.as_millis() as u64,
                        "worker paused mid-response for longer than --body-idle-timeout-ms; \
                         cutting the response off and replacing the worker"
                    );
                    if let Some(lease) = self.lease.take() {
                        lease.retire(Report::Hung(id));
                    }
                    // The client is waiting for data: it sees the error next.
                    let _ = self.tx.send(Message::Failed(RelayError::WorkerStalled));
                    return;
                }
            };
            if !self.queue(data, &mut rate).await {
                return;
            }
        }
    }

    /// Queues `data` for the client in pieces; false if the relay is over
    /// (the client left or was too slow, and the worker was let go).
    async fn queue(&mut self, mut data: Bytes, rate: &mut RateWindow) -> bool {
        while !data.is_empty() {
            let piece = data.split_to(data.len().min(MAX_PIECE));
            let (mine, shared) = match self.room_for(piece.len(), rate).await {
                Room::Granted(mine, shared) => (mine, shared),
                Room::ClientGone => {
                    self.let_worker_finish();
                    return false;
                }
                Room::ClientTooSlow => {
                    if let Some(lease) = &self.lease {
                        tracing::warn!(
                            worker = lease.worker_id(),
                            min_rate = self.limits.min_rate,
                            "client read its response slower than --min-download-rate while \
                             holding a worker; disconnecting it and freeing the worker"
                        );
                    }
                    self.fail(RelayError::ClientTooSlow);
                    self.let_worker_finish();
                    return false;
                }
            };
            let piece = Piece {
                data: piece,
                _room: (mine, shared),
            };
            if self.tx.send(Message::Data(piece)).is_err() {
                self.let_worker_finish();
                return false;
            }
        }
        true
    }

    /// Waits for room for `len` bytes in this response's buffer and the
    /// server's, while the client keeps its minimum rate.
    async fn room_for(&mut self, len: usize, rate: &mut RateWindow) -> Room {
        let n = u32::try_from(len).unwrap_or(u32::MAX);
        let acquire = async {
            let mine = self.room.clone().acquire_many_owned(n).await;
            let shared = self.total.clone().acquire_many_owned(n).await;
            (mine, shared)
        };
        tokio::pin!(acquire);
        // Room at once: the client is keeping up.
        if let Some(granted) = futures_now(acquire.as_mut()) {
            return granted_or_gone(granted);
        }
        loop {
            let delivered = self.progress.delivered.load(Ordering::Relaxed);
            let deadline = match rate.check(Instant::now(), delivered) {
                Verdict::TooSlow => return Room::ClientTooSlow,
                Verdict::Until(deadline) => deadline,
            };
            tokio::select! {
                granted = acquire.as_mut() => return granted_or_gone(granted),
                () = self.tx.closed() => return Room::ClientGone,
                () = sleep_until_or_never(deadline) => {}
            }
        }
    }

    /// Ends the client's response now: what is queued for it is not
    /// delivered first, and its connection is cut off, so a client that is
    /// not reading cannot keep it open (with HTTP/2, its other streams too:
    /// this is for clients too slow to keep).
    fn fail(&mut self, error: RelayError) {
        let _ = self.tx.send(Message::Failed(error));
        self.client.abort();
    }

    /// The client's side is over: the worker finishes its answer (read and
    /// dropped) before it takes another request.
    fn let_worker_finish(&mut self) {
        if let Some(lease) = self.lease.take() {
            settle(lease);
        }
    }
}

impl Drop for Pump {
    fn drop(&mut self) {
        // Only reached with a lease if the task was cancelled (the runtime
        // is shutting down): never return a worker mid-answer to the pool.
        if let Some(lease) = self.lease.take() {
            settle(lease);
        }
    }
}

fn granted_or_gone(
    granted: (
        Result<OwnedSemaphorePermit, tokio::sync::AcquireError>,
        Result<OwnedSemaphorePermit, tokio::sync::AcquireError>,
    ),
) -> Room {
    match granted {
        (Ok(mine), Ok(shared)) => Room::Granted(mine, shared),
        // The semaphores are never closed; treat it as the end.
        _ => Room::ClientGone,
    }
}

/// Polls `future` once; its output if it is ready now.
fn futures_now<F: std::future::Future>(future: Pin<&mut F>) -> Option<F::Output> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    match future.poll(&mut cx) {
        Poll::Ready(output) => Some(output),
        Poll::Pending => None,
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The minimum rate, over windows of [`RATE_WINDOW`]: a window opens when
/// the client first falls behind (the buffer is full) and is judged when it
/// ends; a client that took enough in it gets a new one.
struct RateWindow {
    min_rate: u64,
    window: Option<(Instant, u64)>,
}

enum Verdict {
    TooSlow,
    /// Judge again at this instant (`None`: no check).
    Until(Option<Instant>),
}

impl RateWindow {
    fn new(min_rate: u64) -> Self {
        RateWindow {
            min_rate,
            window: None,
        }
    }

    fn check(&mut self, now: Instant, delivered: u64) -> Verdict {
        if self.min_rate == 0 {
            return Verdict::Until(None);
        }
        let (start, at_start) = *self.window.get_or_insert((now, delivered));
        let end = start + RATE_WINDOW;
        if now < end {
            return Verdict::Until(Some(end));
        }
        let needed = self.min_rate.saturating_mul(RATE_WINDOW.as_secs());
        if delivered.saturating_sub(at_start) < needed {
            return Verdict::TooSlow;
        }
        self.window = Some((now, delivered));
        Verdict::Until(Some(now + RATE_WINDOW))
    }
}

/// The client's side of a relayed response.
pub struct RelayBody {
    rx: mpsc::UnboundedReceiver<Message>,
    progress: Arc<Progress>,
    record: Option<Box<AccessRecord>>,
    size: SizeHint,
    ended: bool,
}

impl RelayBody {
    fn finish(&mut self, outcome: &'static str) {
        self.ended = true;
        if let Some(record) = self.record.take() {
            record.emit(outcome);
        }
    }
}

impl Drop for RelayBody {
    fn drop(&mut self) {
        if self.ended {
            return;
        }
        // Cut off by the relay (its connection dropped before this body was
        // polled again), or the client left.
        let mut outcome = "client-closed";
        while let Ok(message) = self.rx.try_recv() {
            if let Message::Failed(error) = message {
                outcome = error.outcome();
            }
        }
        self.finish(outcome);
    }
}

impl Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        match ready!(this.rx.poll_recv(cx)) {
            Some(Message::Data(piece)) => {
                let len = piece.data.len() as u64;
                this.progress.delivered.fetch_add(len, Ordering::Relaxed);
                if let Some(record) = this.record.as_mut() {
                    record.bytes += len;
                }
                Poll::Ready(Some(Ok(Frame::data(piece.data))))
            }
            Some(Message::End) => {
                this.finish("ok");
                Poll::Ready(None)
            }
            Some(Message::Failed(error)) => {
                this.finish(error.outcome());
                Poll::Ready(Some(Err(error.into())))
            }
            // The pump is gone without a word: only if the runtime stops.
            None => {
                this.finish("worker-error");
                Poll::Ready(Some(Err(RelayError::Worker.into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended
    }

    fn size_hint(&self) -> SizeHint {
        self.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_must_keep_the_minimum_rate_over_each_window() {
        let start = Instant::now();
        let mut rate = RateWindow::new(1000);
        // The window opens when the client first falls behind.
        assert!(
            matches!(rate.check(start, 0), Verdict::Until(Some(end)) if end == start + RATE_WINDOW)
        );
        // Judged when it ends: 10 000 bytes in 10 s is enough...
        let later = start + RATE_WINDOW;
        assert!(matches!(rate.check(later, 10_000), Verdict::Until(Some(_))));
        // ...and the next window needs as much again.
        let last = later + RATE_WINDOW;
        assert!(matches!(rate.check(last, 19_999), Verdict::TooSlow));
        // 0 turns the check off.
        assert!(matches!(
            RateWindow::new(0).check(start, 0),
            Verdict::Until(None)
        ));
    }
}
