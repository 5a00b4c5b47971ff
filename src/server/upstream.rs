//! Connections to workers: dial a worker's Unix socket, keep one persistent
//! HTTP/1.1 connection to it, run one exchange at a time on it, and re-dial
//! it when it breaks.
//!
//! A worker serves one request at a time, so one connection is all it needs
//! (DESIGN §1). The [`Upstream`] is the `C` the pool hands out: taking a
//! worker means taking its connection. The readiness probe uses the same
//! connection, so a worker that passed its probe is admitted already dialled.
//!
//! Whoever holds the worker drives the exchange in its own task: the client
//! request's task writes the request ([`Upstream::exchange`]) and reads the
//! response body ([`Upstream::poll_body`]) straight from the socket, with no
//! hop to a connection task and back. The bytes are framed by [`super::wire`].
//!
//! A connection is always in one [`Phase`]. A worker whose exchange is not
//! over (its client left) goes back to the pool only after [`settle`] has
//! read the rest of the answer, so the next request never meets the tail of
//! the last one.

use std::future::{poll_fn, Future};
use std::io::{self, IoSlice};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use http::StatusCode;
use tokio::io::AsyncWrite;
use tokio::net::UnixStream;
use tokio::time::{Instant, Sleep};

use super::body::{BoxError, ClientBody};
use super::pool::{Conn as PoolConn, ConnFault, Lease, Report, WorkerId};
use super::wire::{
    self, BodyFraming, ChunkedDecoder, Decoded, ResponseHead, WireError, CHUNK_SUFFIX, LAST_CHUNK,
};

/// Read buffer growth: room for a whole small response, or a slice of a large one.
const READ_BUFFER: usize = 16 * 1024;

/// Below this much free room, the read buffer grows before the next read.
const MIN_READ_ROOM: usize = 2 * 1024;

/// One worker's connection, dialled lazily.
pub struct Upstream {
    socket: Arc<Path>,
    /// The worker's id, for the log.
    worker: WorkerId,
    conn: Option<Box<Conn>>,
    /// What the connection noticed since the pool last asked ([`PoolConn::take_fault`]).
    fault: Option<ConnFault>,
}

/// An open connection to a worker.
struct Conn {
    stream: UnixStream,
    /// Bytes read from the worker and not yet consumed.
    buf: BytesMut,
    phase: Phase,
    /// The read timeout: armed while waiting on the worker.
    deadline: Pin<Box<Sleep>>,
    /// The deadline runs for a write the worker is not taking.
    write_stalled: bool,
    /// It has carried a request before: a write that fails on it may mean
    /// the worker closed an idle connection, not that the worker is gone.
    reused: bool,
    /// How long the request on this connection may take to finish once
    /// its client has left or got 504 (`--hung-timeout-ms`, [`settle`]).
    settle_limit: Duration,
}

/// Where a connection is in its exchange.
enum Phase {
    /// Ready for a request.
    Idle,
    /// Writing a request (its body may still be streaming from the client).
    Sending,
    /// The request is written; waiting for the response head.
    AwaitingHead { head_request: bool },
    /// Reading the response body.
    Body { reader: BodyReader, reusable: bool },
}

enum BodyReader {
    Length(u64),
    Chunked(ChunkedDecoder),
    UntilClose,
}

/// How much of a response body [`Upstream::take_small_body`] has in hand.
pub enum InHand {
    /// All of it: the exchange is over and the worker free.
    Whole(Bytes),
    /// Its beginning (maybe nothing); the rest streams.
    Partial(Bytes),
}

/// Body pieces gathered into one: a body that came in one piece (the
/// common case) is kept as it is, without a copy.
#[derive(Default)]
struct Gathered {
    first: Bytes,
    /// Set once a second piece came: every piece so far, copied together.
    joined: Option<BytesMut>,
}

impl Gathered {
    fn push(&mut self, piece: Bytes) {
        match &mut self.joined {
            Some(joined) => joined.extend_from_slice(&piece),
            None if self.first.is_empty() => self.first = piece,
            None => {
                let mut joined = BytesMut::with_capacity(self.first.len() + piece.len());
                joined.extend_from_slice(&self.first);
                joined.extend_from_slice(&piece);
                self.joined = Some(joined);
            }
        }
    }

    fn len(&self) -> usize {
        self.joined.as_ref().map_or(self.first.len(), BytesMut::len)
    }

    fn freeze(self) -> Bytes {
        self.joined.map_or(self.first, BytesMut::freeze)
    }
}

/// Why a small response body could not be taken whole.
#[derive(Debug, thiserror::Error)]
pub enum SmallBodyError {
    #[error("the worker paused mid-body for longer than the body idle timeout")]
    Stalled,
    #[error("{0}")]
    Broken(WorkerError),
}

/// Why a worker could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connecting to {socket} timed out after {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("connecting to {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("exchange with {socket}: {source}")]
    Exchange {
        socket: PathBuf,
        source: Box<ExchangeError>,
    },
}

/// How a worker broke an exchange.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Wire(#[from] WireError),
}

/// Why an exchange produced no response head.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Nothing reached the worker: the request can go to another.
    #[error("the request never reached the worker: {1}")]
    NotSent(Box<Outgoing>, DialError),
    /// The client's upload failed (too large, stalled, or cut off).
    #[error("the client's request body failed: {0}")]
    Upload(BoxError),
    /// The worker sent no response head within the read timeout (its
    /// connection is kept: the answer may still come).
    #[error("the worker did not answer within the read timeout")]
    Timeout,
    /// The worker took no request bytes within the read timeout.
    #[error("the worker took no request bytes within the read timeout")]
    SendStalled,
    /// The worker failed after the request reached it.
    #[error("{0}")]
    Failed(WorkerError),
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outgoing")
            .field("written", &self.written)
            .finish_non_exhaustive()
    }
}

/// A request on its way to a worker: the encoded head and, if the client
/// sent one, the body, framed as it streams.
pub struct Outgoing {
    /// The unwritten part of the head.
    head: Bytes,
    /// The unwritten part of the current body piece: chunk-size line, data,
    /// chunk end (the first and last are empty for a `Content-Length` body).
    piece: [Bytes; 3],
    upload: Upload,
    written: u64,
    head_request: bool,
}

enum Upload {
    /// Nothing (more) to read from the client.
    Done,
    Streaming {
        body: Box<ClientBody>,
        chunked: bool,
    },
}

/// The body of a request that streams to its worker: what was read of it
/// before the worker was taken, and the rest, still coming from the client.
pub struct StreamedBody {
    pub first: Bytes,
    pub rest: Box<ClientBody>,
    pub chunked: bool,
}

impl Outgoing {
    /// `head` from [`wire::encode_request_head`] (with the whole body after
    /// it, if it was read whole), and the body that streams, if any.
    pub fn new(head: Bytes, body: Option<StreamedBody>, head_request: bool) -> Self {
        let mut out = Outgoing {
            head,
            piece: [Bytes::new(), Bytes::new(), Bytes::new()],
            upload: Upload::Done,
            written: 0,
            head_request,
        };
        if let Some(body) = body {
            out.set_piece(body.first, body.chunked);
            out.upload = Upload::Streaming {
                body: body.rest,
                chunked: body.chunked,
            };
        }
        out
    }

    /// Queues `data` as the next piece of the body, framed.
    fn set_piece(&mut self, data: Bytes, chunked: bool) {
        if data.is_empty() {
            return;
        }
        self.piece = if chunked {
            [
                wire::chunk_prefix(data.len()),
                data,
                Bytes::from_static(CHUNK_SUFFIX),
            ]
        } else {
            [Bytes::new(), data, Bytes::new()]
        };
    }

    /// Whether a body is still streaming from the client.
    fn streaming(&self) -> bool {
        matches!(self.upload, Upload::Streaming { .. })
    }

    fn has_unwritten(&self) -> bool {
        !self.head.is_empty() || self.piece.iter().any(|b| !b.is_empty())
    }

    fn io_slices(&self) -> ([IoSlice<'_>; 4], usize) {
        let mut slices = [IoSlice::new(&[]); 4];
        let mut count = 0;
        for bytes in std::iter::once(&self.head).chain(&self.piece) {
            if !bytes.is_empty() {
                slices[count] = IoSlice::new(bytes);
                count += 1;
            }
        }
        (slices, count)
    }

    fn advance(&mut self, mut n: usize) {
        self.written += n as u64;
        for bytes in std::iter::once(&mut self.head).chain(&mut self.piece) {
            let step = n.min(bytes.len());
            bytes.advance(step);
            n -= step;
        }
    }

    /// Takes the next body piece from the client into `piece`.
    /// `Ready(Ok(()))`: a piece is queued, or the upload is over.
    fn poll_upload(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let Upload::Streaming { body, chunked } = &mut self.upload else {
            return Poll::Ready(Ok(()));
        };
        let chunked = *chunked;
        loop {
            match ready!(body.poll_data(cx)) {
                // An empty chunk would end a chunked body early.
                Some(Ok(data)) if data.is_empty() => continue,
                Some(Ok(data)) => self.set_piece(data, chunked),
                Some(Err(e)) => return Poll::Ready(Err(e)),
                None => {
                    if chunked {
                        self.piece[0] = Bytes::from_static(LAST_CHUNK);
                    }
                    self.upload = Upload::Done;
                }
            }
            return Poll::Ready(Ok(()));
        }
    }
}

/// Where the pool's hand-off left a prestarted request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resumed {
    Nothing,
    /// Part of it was written; the rest follows.
    Sending,
    /// All of it (a bodiless request) was written.
    AwaitingHead,
}

/// How sending a request ended.
enum Sent {
    Done(Result<(), SendError>),
    /// The worker answered before the body was all sent.
    Answered(ResponseHead),
}

/// Why sending stopped.
enum SendError {
    Io(io::Error),
    Upload(BoxError),
    /// The worker took no bytes within the read timeout.
    Stalled,
}

impl Conn {
    fn new(stream: UnixStream) -> Self {
        Conn {
            stream,
            buf: BytesMut::new(),
            phase: Phase::Idle,
            deadline: Box::pin(tokio::time::sleep(Duration::ZERO)),
            write_stalled: false,
            reused: false,
            settle_limit: Duration::ZERO,
        }
    }

    fn arm(&mut self, timeout: Duration) {
        self.deadline.as_mut().reset(Instant::now() + timeout);
    }

    /// Writes the request: its head, then its body as the client sends it.
    fn poll_send(
        &mut self,
        out: &mut Outgoing,
        stall: Duration,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            // Take a body piece when there is room for one; with the head
            // still unwritten, a piece already here goes out in the same write.
            if out.piece.iter().all(Bytes::is_empty) {
                match out.poll_upload(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Upload(e))),
                    Poll::Pending if out.head.is_empty() => return Poll::Pending,
                    Poll::Pending => {}
                }
            }
            if !out.has_unwritten() {
                return match out.upload {
                    Upload::Done => Poll::Ready(Ok(())),
                    // The client has sent nothing new; it wakes us when it does.
                    Upload::Streaming { .. } => Poll::Pending,
                };
            }
            let (slices, count) = out.io_slices();
            match Pin::new(&mut self.stream).poll_write_vectored(cx, &slices[..count]) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(SendError::Io(io::ErrorKind::WriteZero.into())))
                }
                Poll::Ready(Ok(n)) => {
                    out.advance(n);
                    self.write_stalled = false;
                }
                Poll::Ready(Err(e)) => return Poll::Ready(Err(SendError::Io(e))),
                Poll::Pending => {
                    if !self.write_stalled {
                        self.write_stalled = true;
                        self.arm(stall);
                    }
                    ready!(self.deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(SendError::Stalled));
                }
            }
        }
    }

    /// Reads until a whole response head is in, or the deadline passes.
    fn poll_head(
        &mut self,
        head_request: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Result<ResponseHead, ExchangeError>> {
        loop {
            if !self.buf.is_empty() {
                match wire::parse_response_head(&mut self.buf, head_request) {
                    Ok(Some(head)) => return Poll::Ready(Ok(head)),
                    Ok(None) => {}
                    Err(e) => return Poll::Ready(Err(ExchangeError::Failed(e.into()))),
                }
            }
            match fill(&mut self.stream, &mut self.buf, cx) {
                Poll::Ready(Ok(0)) => {
                    return Poll::Ready(Err(ExchangeError::Failed(WireError::Truncated.into())))
                }
                Poll::Ready(Ok(_)) => {}
                Poll::Ready(Err(e)) => return Poll::Ready(Err(ExchangeError::Failed(e.into()))),
                Poll::Pending => {
                    ready!(self.deadline.as_mut().poll(cx));
                    return Poll::Ready(Err(ExchangeError::Timeout));
                }
            }
        }
    }

    /// While a body is being sent: whether the worker has already answered
    /// (say, `401` or `413` to an upload it will not read). Reads what has
    /// arrived without waiting; a closed read side is left for the send to
    /// find.
    fn poll_early_head(
        &mut self,
        head_request: bool,
        cx: &mut Context<'_>,
    ) -> Poll<Option<ResponseHead>> {
        loop {
            if !self.buf.is_empty() {
                match wire::parse_response_head(&mut self.buf, head_request) {
                    Ok(Some(head)) => return Poll::Ready(Some(head)),
                    Ok(None) => {}
                    // Garbage: the exchange fails when the send is done.
                    Err(_) => return Poll::Ready(None),
                }
            }
            match fill(&mut self.stream, &mut self.buf, cx) {
                Poll::Ready(Ok(n)) if n > 0 => {}
                Poll::Ready(_) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// After a head: where the body comes from.
    fn begin_body(&mut self, head: &ResponseHead) {
        let reader = match head.framing {
            BodyFraming::Empty | BodyFraming::Length(0) => {
                self.phase = Phase::Body {
                    reader: BodyReader::Length(0),
                    reusable: head.reusable,
                };
                return;
            }
            BodyFraming::Length(n) => BodyReader::Length(n),
            BodyFraming::Chunked => BodyReader::Chunked(ChunkedDecoder::default()),
            BodyFraming::UntilClose => BodyReader::UntilClose,
        };
        self.phase = Phase::Body {
            reader,
            reusable: head.reusable,
        };
    }

    /// The next piece of the response body; `None` at its end.
    fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WorkerError>>> {
        loop {
            let Phase::Body { reader, .. } = &mut self.phase else {
                return Poll::Ready(None);
            };
            match reader {
                BodyReader::Length(0) => return Poll::Ready(None),
                BodyReader::Length(remaining) if !self.buf.is_empty() => {
                    let take = (*remaining).min(self.buf.len() as u64);
                    *remaining -= take;
                    let data = self.buf.split_to(take as usize).freeze();
                    return Poll::Ready(Some(Ok(data)));
                }
                BodyReader::Length(_) => {}
                BodyReader::Chunked(decoder) => match decoder.decode(&mut self.buf) {
                    Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(data))),
                    Ok(Decoded::End) => return Poll::Ready(None),
                    Ok(Decoded::NeedMore) => {}
                    Err(e) => return Poll::Ready(Some(Err(e.into()))),
                },
                BodyReader::UntilClose if !self.buf.is_empty() => {
                    return Poll::Ready(Some(Ok(self.buf.split().freeze())));
                }
                BodyReader::UntilClose => {}
            }
            let closes_body = matches!(reader, BodyReader::UntilClose);
            match ready!(fill(&mut self.stream, &mut self.buf, cx)) {
                Ok(0) if closes_body => {
                    self.phase = Phase::Body {
                        reader: BodyReader::Length(0),
                        reusable: false,
                    };
                    return Poll::Ready(None);
                }
                Ok(0) => return Poll::Ready(Some(Err(WireError::Truncated.into()))),
                Ok(_) => {}
                Err(e) => return Poll::Ready(Some(Err(e.into()))),
            }
        }
    }

    /// Whether the response body has been read to its end.
    fn body_done(&self) -> bool {
        match &self.phase {
            Phase::Idle => true,
            Phase::Body { reader, .. } => match reader {
                BodyReader::Length(n) => *n == 0,
                BodyReader::Chunked(decoder) => decoder.is_done(),
                BodyReader::UntilClose => false,
            },
            Phase::Sending | Phase::AwaitingHead { .. } => false,
        }
    }

    /// The exchange is over: can the connection carry the next one?
    fn finish(&mut self) -> Finished {
        let reusable = match &self.phase {
            Phase::Idle => true,
            Phase::Body { reusable, .. } => *reusable && self.body_done(),
            Phase::Sending | Phase::AwaitingHead { .. } => false,
        };
        self.phase = Phase::Idle;
        if !reusable {
            return Finished::Closed;
        }
        // Bytes past the end of the response would be read as the next
        // exchange's answer, and reach the wrong client.
        if !self.buf.is_empty() {
            return Finished::StrayBytes(preview(&self.buf));
        }
        self.reused = true;
        Finished::Reusable
    }

    /// Whether an idle connection is still clean: the worker has sent
    /// nothing since its last answer ended, and has not closed it. Checked
    /// before every reuse, without blocking. When tokio saw no readiness
    /// since the last read, this costs nothing; otherwise it is the one
    /// `read` that the wait for the next answer would have made anyway.
    fn check_idle(&mut self) -> IdleCheck {
        let mut probe = [0u8; 64];
        match self.stream.try_read(&mut probe) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => IdleCheck::Clean,
            Ok(0) => IdleCheck::Closed,
            Ok(n) => IdleCheck::StrayBytes(preview(&probe[..n])),
            Err(_) => IdleCheck::Closed,
        }
    }
}

/// How an exchange left its connection.
enum Finished {
    Reusable,
    /// It cannot carry another exchange (the worker said close, or the
    /// exchange was cut short).
    Closed,
    /// The worker sent more than its answer's framing declared.
    StrayBytes(String),
}

/// What an idle connection held when it was checked before reuse.
enum IdleCheck {
    Clean,
    /// The worker closed it.
    Closed,
    /// The worker sent bytes outside any exchange.
    StrayBytes(String),
}

/// The first bytes a worker sent out of turn, printable, for the log.
fn preview(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(48)];
    let mut text: String = shown.escape_ascii().to_string();
    if bytes.len() > shown.len() {
        text.push('…');
    }
    text
}

/// Reads what the worker has sent into `buf`.
fn fill(
    stream: &mut UnixStream,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_BUFFER);
    }
    tokio_util::io::poll_read_buf(Pin::new(stream), cx, buf)
}

impl Upstream {
    /// A connection to worker `worker`'s `socket`, not yet dialled.
    pub fn new(socket: &Path, worker: WorkerId) -> Self {
        Upstream {
            socket: Arc::from(socket),
            worker,
            conn: None,
            fault: None,
        }
    }

    /// Drops an idle connection the worker has written to or closed since
    /// its last answer; the next use dials a fresh one. Returns whether a
    /// connection is left to use.
    fn keep_if_clean(&mut self) -> bool {
        let Some(conn) = self.conn.as_deref_mut() else {
            return false;
        };
        match conn.check_idle() {
            IdleCheck::Clean => return true,
            IdleCheck::Closed => {
                tracing::debug!(
                    worker = self.worker,
                    "the worker closed its idle connection; dialling a new one"
                );
                self.fault = Some(ConnFault::ClosedIdle);
            }
            IdleCheck::StrayBytes(preview) => self.stray_bytes("while idle", &preview),
        }
        self.conn = None;
        false
    }

    /// Records and logs bytes a worker sent out of turn. The connection is
    /// dropped by the caller; the supervisor replaces the worker.
    fn stray_bytes(&mut self, when: &str, preview: &str) {
        tracing::warn!(
            worker = self.worker,
            bytes = %preview,
            "the worker sent bytes outside any response ({when}); its connection is closed so \
             they cannot reach another client, and the worker will be replaced. Check that the \
             app's Content-Length matches its body and that it sends no body for HEAD, 204 and 304"
        );
        self.fault = Some(ConnFault::StrayBytes);
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Forgets the connection (its state is unknown); the next use re-dials.
    pub fn invalidate(&mut self) {
        self.conn = None;
    }

    /// An idle, clean connection, dialled if there is none.
    async fn connect(&mut self, timeout: Duration) -> Result<&mut Conn, DialError> {
        if self
            .conn
            .as_ref()
            .is_some_and(|c| !matches!(c.phase, Phase::Idle))
        {
            self.conn = None;
        }
        self.keep_if_clean();
        let conn = match self.conn.take() {
            Some(conn) => conn,
            // Boxed: dialling is rare, and its future is large.
            None => Box::new(Conn::new(Box::pin(dial(&self.socket, timeout)).await?)),
        };
        Ok(self.conn.insert(conn))
    }

    /// Sends `out` and reads the response head. The read timeout runs from
    /// the end of the send (a slow upload is not a hung worker), and while
    /// the worker takes no request bytes.
    ///
    /// `prestarted`: bytes of the head the pool's hand-off already wrote on
    /// this connection ([`super::pool::Conn`]); sending resumes after them.
    pub async fn exchange(
        &mut self,
        mut out: Outgoing,
        prestarted: usize,
        connect_timeout: Duration,
        read_timeout: Duration,
        hung_timeout: Duration,
    ) -> Result<ResponseHead, ExchangeError> {
        let prestart_phase = match self.conn.as_deref().map(|c| &c.phase) {
            _ if prestarted == 0 => Resumed::Nothing,
            Some(Phase::Sending) => Resumed::Sending,
            Some(Phase::AwaitingHead { .. }) => Resumed::AwaitingHead,
            _ => Resumed::Nothing,
        };
        if prestart_phase != Resumed::Nothing {
            out.advance(prestarted);
        }
        let mut resume = prestart_phase == Resumed::Sending;
        // A kept-alive connection the worker has closed fails on its first
        // write: that is a stale connection, not a dead worker. Re-dial once.
        let mut redialled = false;
        let early_answer = match prestart_phase {
            // The hand-off wrote the whole request.
            Resumed::AwaitingHead => false,
            Resumed::Nothing | Resumed::Sending => loop {
                let conn = if std::mem::take(&mut resume) {
                    self.conn.as_deref_mut()
                } else {
                    match self.connect(connect_timeout).await {
                        Ok(conn) => {
                            conn.phase = Phase::Sending;
                            Some(conn)
                        }
                        Err(e) => return Err(ExchangeError::NotSent(Box::new(out), e)),
                    }
                };
                let Some(conn) = conn else {
                    return Err(ExchangeError::Failed(WireError::Truncated.into()));
                };
                conn.write_stalled = false;
                conn.settle_limit = hung_timeout;
                let head_request = out.head_request;
                // A worker may answer an upload before reading it all; then
                // the rest is not sent and the answer goes to the client.
                let mut watch_answer = out.streaming();
                let sent = poll_fn(|cx| {
                    if watch_answer {
                        match conn.poll_early_head(head_request, cx) {
                            Poll::Ready(Some(head)) => return Poll::Ready(Sent::Answered(head)),
                            Poll::Ready(None) => watch_answer = false,
                            Poll::Pending => {}
                        }
                    }
                    conn.poll_send(&mut out, read_timeout, cx).map(Sent::Done)
                })
                .await;
                let sent = match sent {
                    Sent::Done(result) => result,
                    Sent::Answered(head) => {
                        let mut head = head;
                        // Half a body is on this connection: it is not reused.
                        head.reusable = false;
                        conn.begin_body(&head);
                        return Ok(head);
                    }
                };
                match sent {
                    Ok(()) => break false,
                    Err(SendError::Io(e)) if out.written == 0 => {
                        let stale = conn.reused && !redialled;
                        self.conn = None;
                        if stale {
                            redialled = true;
                            continue;
                        }
                        let socket = self.socket.to_path_buf();
                        let e = DialError::Io { socket, source: e };
                        return Err(ExchangeError::NotSent(Box::new(out), e));
                    }
                    // Part of the request is in: the worker may have answered
                    // early (and closed); read what it said.
                    Err(SendError::Io(_)) => break true,
                    Err(SendError::Upload(e)) => {
                        self.conn = None;
                        return Err(ExchangeError::Upload(e));
                    }
                    Err(SendError::Stalled) => {
                        self.conn = None;
                        return Err(ExchangeError::SendStalled);
                    }
                }
            },
        };
        let Some(conn) = self.conn.as_deref_mut() else {
            return Err(ExchangeError::Failed(WireError::Truncated.into()));
        };
        let head_request = out.head_request;
        if prestart_phase != Resumed::AwaitingHead {
            // (A prestarted request's deadline runs from its hand-off.)
            conn.phase = Phase::AwaitingHead { head_request };
            conn.arm(read_timeout);
        }
        match poll_fn(|cx| conn.poll_head(head_request, cx)).await {
            Ok(mut head) => {
                head.reusable &= !early_answer;
                conn.begin_body(&head);
                Ok(head)
            }
            // The worker is slow, not gone: the connection stays, so that
            // [`settle`] can take its late answer before it serves again.
            Err(ExchangeError::Timeout) => Err(ExchangeError::Timeout),
            Err(e) => {
                self.conn = None;
                Err(e)
            }
        }
    }

    /// The next piece of the response body; `None` at its end, after which
    /// the connection is idle (or closed, if it cannot be reused).
    pub fn poll_body(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, WorkerError>>> {
        let Some(conn) = self.conn.as_deref_mut() else {
            return Poll::Ready(None);
        };
        match ready!(conn.poll_body(cx)) {
            None => {
                self.finish_settled();
                Poll::Ready(None)
            }
            Some(Err(e)) => {
                self.conn = None;
                Poll::Ready(Some(Err(e)))
            }
            Some(Ok(data)) => Poll::Ready(Some(Ok(data))),
        }
    }

    /// Reads the response body to its end.
    async fn drain(&mut self) -> Result<(), WorkerError> {
        loop {
            match poll_fn(|cx| self.poll_body(cx)).await {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            }
        }
    }

    /// Takes the body of the response just begun, if it is small: a
    /// `Content-Length` body up to `limit` (read to its end, each read within
    /// `idle`), or any body that is already complete in hand. The worker is
    /// then free at once, whatever the client does. A body that is larger,
    /// or still coming, is left to stream: [`InHand::Partial`] holds what
    /// was read of it so far.
    pub async fn take_small_body(
        &mut self,
        limit: usize,
        idle: Duration,
    ) -> Result<InHand, SmallBodyError> {
        let sized_small = matches!(
            self.conn.as_deref().map(|c| &c.phase),
            Some(Phase::Body { reader: BodyReader::Length(n), .. }) if *n <= limit as u64
        );
        let mut parts = Gathered::default();
        loop {
            let piece = if sized_small {
                match tokio::time::timeout(idle, poll_fn(|cx| self.poll_body(cx))).await {
                    Ok(piece) => piece,
                    Err(_) => {
                        self.conn = None;
                        return Err(SmallBodyError::Stalled);
                    }
                }
            } else {
                // Only what needs no waiting.
                let waker = std::task::Waker::noop();
                match self.poll_body(&mut Context::from_waker(waker)) {
                    Poll::Ready(piece) => piece,
                    Poll::Pending => return Ok(InHand::Partial(parts.freeze())),
                }
            };
            match piece {
                None => return Ok(InHand::Whole(parts.freeze())),
                Some(Ok(data)) => {
                    parts.push(data);
                    if !sized_small && parts.len() > limit {
                        return Ok(InHand::Partial(parts.freeze()));
                    }
                }
                Some(Err(e)) => return Err(SmallBodyError::Broken(e)),
            }
        }
    }

    /// Whether the exchange is over (the body fully read, or never begun).
    pub fn is_settled(&self) -> bool {
        self.conn.as_ref().is_none_or(|c| c.body_done())
    }

    /// Marks a body read to its end as finished, so the connection is idle.
    fn finish_settled(&mut self) {
        let Some(conn) = self.conn.as_deref_mut() else {
            return;
        };
        match conn.finish() {
            Finished::Reusable => {}
            Finished::Closed => self.conn = None,
            Finished::StrayBytes(preview) => {
                self.stray_bytes("after its response", &preview);
                self.conn = None;
            }
        }
    }

    /// Completes the exchange ([`Upstream::complete`]) within `limit`. A
    /// connection that fails is closed (the worker's next request dials
    /// afresh); one that does not finish in time is closed too, and the
    /// caller learns the worker is still busy.
    pub async fn complete_within(&mut self, limit: Duration) -> Completion {
        match tokio::time::timeout(limit, self.complete(limit)).await {
            Ok(Ok(())) => Completion::Done,
            Ok(Err(Some(e))) => {
                tracing::debug!(socket = %self.socket.display(), error = %e, "unfinished exchange failed");
                self.invalidate();
                Completion::Broken
            }
            Ok(Err(None)) | Err(_) => {
                self.invalidate();
                Completion::StillBusy
            }
        }
    }

    /// Completes an exchange whose client left or got 504: reads the
    /// response head if it has not come yet (waiting up to `limit`), then
    /// the body. `Err(None)`: no head within `limit` (still busy).
    async fn complete(&mut self, limit: Duration) -> Result<(), Option<WorkerError>> {
        let Some(conn) = self.conn.as_deref_mut() else {
            return Ok(());
        };
        match conn.phase {
            Phase::Idle | Phase::Body { .. } => {}
            // The worker has half a request: only closing the connection ends it.
            Phase::Sending => {
                self.conn = None;
                return Ok(());
            }
            Phase::AwaitingHead { head_request } => {
                // The request's read timeout may have passed: this wait has its own.
                conn.arm(limit);
                match poll_fn(|cx| conn.poll_head(head_request, cx)).await {
                    Ok(head) => conn.begin_body(&head),
                    Err(ExchangeError::Timeout) => return Err(None),
                    Err(e) => {
                        self.conn = None;
                        return Err(Some(match e {
                            ExchangeError::Failed(e) => e,
                            other => WorkerError::Io(io::Error::other(other.to_string())),
                        }));
                    }
                }
            }
        }
        self.drain().await.map_err(Some)
    }

    /// Asks the worker whether its app is loaded: `GET /ready` with the probe
    /// header. The answer's body is read in full so the connection stays usable.
    pub async fn probe(&mut self, timeout: Duration) -> Result<bool, DialError> {
        let socket = self.socket.to_path_buf();
        let request = Outgoing::new(Bytes::from_static(wire::PROBE_REQUEST), None, false);
        let exchange = async {
            let head = self.exchange(request, 0, timeout, timeout, timeout).await?;
            self.drain().await.map_err(ExchangeError::Failed)?;
            Ok::<bool, ExchangeError>(head.status == StatusCode::OK)
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(ExchangeError::NotSent(_, e))) => Err(e),
            Ok(Err(source)) => {
                self.invalidate();
                Err(DialError::Exchange {
                    socket,
                    source: Box::new(source),
                })
            }
            Err(_) => {
                self.invalidate();
                Err(DialError::Timeout { socket, timeout })
            }
        }
    }
}

/// What a queued request leaves with the pool, to be started on the worker
/// handed to it ([`super::pool::Conn`]).
#[derive(Clone)]
pub struct Prestart {
    /// The encoded request head.
    pub head: Bytes,
    /// No body follows: once the head is written the request is complete.
    pub bodiless: bool,
    pub head_request: bool,
    pub read_timeout: Duration,
    pub hung_timeout: Duration,
}

impl PoolConn for Upstream {
    type Head = Prestart;

    /// Writes as much of a queued request's head as the socket takes now.
    fn prestart(&mut self, start: &Prestart) -> usize {
        if !self
            .conn
            .as_ref()
            .is_some_and(|c| matches!(c.phase, Phase::Idle))
        {
            return 0;
        }
        // A connection the worker wrote to or closed is not used: the
        // request's own task dials a fresh one.
        if !self.keep_if_clean() {
            return 0;
        }
        let Some(conn) = self.conn.as_deref_mut() else {
            return 0;
        };
        match conn.stream.try_write(&start.head) {
            Ok(written) if written > 0 => {
                conn.settle_limit = start.hung_timeout;
                conn.phase = if written == start.head.len() && start.bodiless {
                    // The whole request is in: its read timeout runs from now.
                    conn.arm(start.read_timeout);
                    Phase::AwaitingHead {
                        head_request: start.head_request,
                    }
                } else {
                    Phase::Sending
                };
                written
            }
            // A closed connection shows up here as EPIPE: the request's own
            // task re-dials, as for any stale connection.
            _ => 0,
        }
    }

    fn abandon(&mut self) {
        self.invalidate();
    }

    fn take_fault(&mut self) -> Option<ConnFault> {
        self.fault.take()
    }

    /// Completes the prestarted request in the background (or closes a
    /// connection left with half a head), then returns the worker.
    fn abandoned(mut lease: Lease<Self>) {
        lease.take_prestarted();
        settle(lease);
    }
}

/// How [`Upstream::complete_within`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The answer was read to its end: the worker is free.
    Done,
    /// The connection failed; it is closed (the worker may well be free).
    Broken,
    /// The worker is still busy with it; its connection is closed.
    StillBusy,
}

/// Returns a worker to the pool once its exchange is over. An exchange cut
/// short (its client left, or got 504 at the read timeout) is completed in
/// the background first, for at most `--hung-timeout-ms`: the worker
/// rejoins the pool only when it is free. One that is still busy then is
/// replaced (gracefully: the supervisor drains it), never handed the next
/// request.
pub fn settle(mut lease: Lease<Upstream>) {
    let upstream = lease.conn();
    if upstream.is_settled() {
        upstream.finish_settled();
        return;
    }
    let limit = upstream
        .conn
        .as_ref()
        .map_or(Duration::ZERO, |conn| conn.settle_limit);
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        runtime.spawn(async move {
            if lease.conn().complete_within(limit).await == Completion::StillBusy {
                let id = lease.worker_id();
                tracing::error!(
                    worker = id,
                    limit_ms = limit.as_millis() as u64,
                    "worker still busy with a request its client left or timed out on, after \
                     --hung-timeout-ms; replacing it (it is drained, then killed)"
                );
                lease.retire(Report::Hung(id));
            }
        });
    } else {
        upstream.invalidate();
    }
}

async fn dial(socket: &Path, timeout: Duration) -> Result<UnixStream, DialError> {
    match tokio::time::timeout(timeout, UnixStream::connect(socket)).await {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(source)) => Err(DialError::Io {
            socket: socket.to_path_buf(),
            source,
        }),
        Err(_) => Err(DialError::Timeout {
            socket: socket.to_path_buf(),
            timeout,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_in_one_piece_is_not_copied() {
        let piece = Bytes::from_static(b"pong");
        let mut gathered = Gathered::default();
        gathered.push(piece.clone());
        assert_eq!(gathered.len(), 4);
        assert_eq!(gathered.freeze().as_ptr(), piece.as_ptr());
    }

    #[test]
    fn pieces_are_joined_in_order() {
        let mut gathered = Gathered::default();
        for piece in ["a", "bc", "", "def"] {
            gathered.push(Bytes::from(piece));
        }
        assert_eq!(gathered.len(), 6);
        assert_eq!(gathered.freeze(), "abcdef");
    }
}
