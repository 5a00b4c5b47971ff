//! The public listener: bind a port, accept connections, serve each one with
//! hyper (HTTP/1.1 and HTTP/2) in its own task, and shut down gracefully.
//!
//! Every connection is bounded, so no client can hold the server's capacity
//! by doing nothing:
//! - at most `max_connections` open at once (a semaphore; further clients
//!   wait in the kernel's accept backlog), sized from the open-file limit;
//! - with TLS, the handshake runs in the connection's own task under
//!   [`HANDSHAKE_TIMEOUT`], so a slow client never blocks accepting others;
//! - the first request must arrive within `--header-timeout-ms` of the
//!   connection (or of its handshake): a client that sends nothing, or only
//!   part of the HTTP/2 preface, is closed ([`Activity`]);
//! - a connection with no request in flight is closed after about
//!   `--idle-timeout-ms` (HTTP/2: GOAWAY); HTTP/1.1 must also send each next
//!   head within `--header-timeout-ms` (hyper's header read timeout);
//! - a client that takes no response bytes for `--send-timeout-ms` is
//!   disconnected ([`ClientIo`]);
//! - request heads over `--max-header-bytes` get 431, malformed ones 400.
//!
//! [`serve_redirect`] answers plain HTTP with `301` to the HTTPS URL.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;

use super::accept::AcceptBackoff;
use super::body::{BoxError, ResponseBody};
use super::conn::{ClientConn, Ongoing};
use super::proxy::{ClientInfo, Scheme};
use super::routes::{Routed, Router};
use crate::config::{Limits, PortChoice, Timeouts, TrustedProxies};

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How far past the fallback start to look for a free port.
const FALLBACK_PORTS: u16 = 1_000;

/// Pending connections the kernel may hold for each listener (capped by
/// `net.core.somaxconn`; the NixOS module's socket unit asks the same).
const BACKLOG: u32 = 4096;
/// Tries at a port every address can share when the kernel picks it (port 0).
const PICK_TRIES: usize = 16;

/// Binds a listener on `port` at each of `addresses`, or, with none given,
/// on every IPv4 and IPv6 interface (one dual-stack socket; IPv4 alone on a
/// host without IPv6). `choice` picks one port that every address takes.
pub async fn bind(choice: PortChoice, addresses: &[IpAddr]) -> io::Result<Vec<TcpListener>> {
    match choice {
        PortChoice::Fixed(port) => bind_port(addresses, port)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on port {port}: {e}"))),
        PortChoice::FirstFree {
            preferred,
            fallback_from,
        } => {
            if let Ok(listeners) = bind_port(addresses, preferred) {
                return Ok(listeners);
            }
            for port in fallback_from..fallback_from.saturating_add(FALLBACK_PORTS) {
                if let Ok(listeners) = bind_port(addresses, port) {
                    return Ok(listeners);
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "no free port: {preferred} and {fallback_from}-{} are all taken; name one with http:PORT",
                    fallback_from.saturating_add(FALLBACK_PORTS - 1)
                ),
            ))
        }
    }
}

/// One listener per address on `port`; port 0: the kernel picks it for the
/// first address, and the others take the same (tried again if one of them
/// has it taken).
fn bind_port(addresses: &[IpAddr], port: u16) -> io::Result<Vec<TcpListener>> {
    let Some((&first, rest)) = addresses.split_first() else {
        return bind_every_interface(port).map(|listener| vec![listener]);
    };
    let tries = if port == 0 { PICK_TRIES } else { 1 };
    let mut last_error = io::Error::from(io::ErrorKind::AddrInUse);
    for _ in 0..tries {
        let first = bind_one(SocketAddr::new(first, port), true)?;
        let picked = first.local_addr()?.port();
        let mut listeners = vec![first];
        let others: io::Result<Vec<TcpListener>> = rest
            .iter()
            .map(|&address| bind_one(SocketAddr::new(address, picked), true))
            .collect();
        match others {
            Ok(others) => {
                listeners.extend(others);
                return Ok(listeners);
            }
            Err(e) => last_error = e,
        }
    }
    Err(last_error)
}

/// `[::]` accepting IPv4 too; `0.0.0.0` where the host has no IPv6.
fn bind_every_interface(port: u16) -> io::Result<TcpListener> {
    match bind_one(SocketAddr::from((Ipv6Addr::UNSPECIFIED, port)), false) {
        Ok(listener) => Ok(listener),
        Err(e) if ipv6_unavailable(&e) => {
            tracing::info!(error = %e, "IPv6 is not available on this host; listening on IPv4 only");
            bind_one(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)), true)
        }
        Err(e) => Err(e),
    }
}

fn ipv6_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error().map(nix::errno::Errno::from_raw),
        Some(
            nix::errno::Errno::EAFNOSUPPORT
                | nix::errno::Errno::EADDRNOTAVAIL
                | nix::errno::Errno::EPROTONOSUPPORT
        )
    )
}

/// A listening socket at `address`; an IPv6 one takes IPv4 connections too
/// unless `v6_only` (so an explicit `::` can sit beside `0.0.0.0`).
fn bind_one(address: SocketAddr, v6_only: bool) -> io::Result<TcpListener> {
    let socket = match address {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = TcpSocket::new_v6()?;
            nix::sys::socket::setsockopt(&socket, nix::sys::socket::sockopt::Ipv6V6Only, &v6_only)
                .map_err(io::Error::from)?;
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket
        .bind(address)
        .map_err(|e| io::Error::new(e.kind(), format!("{address}: {e}")))?;
    socket.listen(BACKLOG)
}

/// File descriptors kept free for everything that is not a client
/// connection: the listeners, the control socket, log files, and for each
/// worker (twice over, for a rolling restart) its connection, its output
/// pipes and its process handle.
fn reserved_fds(workers: usize) -> u64 {
    128 + 2 * 4 * workers as u64
}

/// How many client connections may be open at once: `requested`, or what
/// the open-file limit leaves after [`reserved_fds`]. Raises the soft
/// `RLIMIT_NOFILE` to the hard limit first (the default soft limit of 1024
/// would cap a busy server at a few hundred clients).
pub fn connection_cap(requested: Option<usize>, workers: usize) -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let limit = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    };
    let room = limit.saturating_sub(reserved_fds(workers)).max(16);
    let room = usize::try_from(room).unwrap_or(usize::MAX).min(1 << 20);
    match requested {
        Some(n) if n > room => {
            tracing::warn!(
                requested = n,
                allowed = room,
                open_file_limit = limit,
                "--max-connections is more than the open-file limit allows; raise LimitNOFILE (ulimit -n) or lower it"
            );
            room
        }
        Some(n) => n,
        None => room,
    }
}

/// How client connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub transport: Transport,
    pub trusted_proxies: TrustedProxies,
    /// Client connections open at once.
    pub max_connections: usize,
}

/// Plain TCP, or TLS terminated here.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls {
        acceptor: TlsAcceptor,
        /// Add Strict-Transport-Security to responses that lack it.
        hsts: bool,
    },
}

/// The HSTS policy rip-server sends with `--hsts`.
pub const HSTS_VALUE: &str = "max-age=31536000; includeSubDomains";

/// Accepts and serves connections on every listener until `shutdown`
/// fires, then lets open connections finish their requests for up to
/// `timeouts.grace`.
pub async fn serve(
    listeners: Vec<TcpListener>,
    router: Arc<Router>,
    options: ServeOptions,
    shutdown: watch::Receiver<bool>,
) {
    let accepting = Accepting {
        builder: Arc::new(connection_builder(&options)),
        // Shared: the connection cap is for the server, not per address.
        permits: Arc::new(Semaphore::new(options.max_connections)),
        router,
        options,
    };
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| tokio::spawn(accepting.clone().run(listener, shutdown.clone())))
        .collect();
    for accept_loop in loops {
        let _ = accept_loop.await;
    }
    let options = &accepting.options;
    // Every connection task holds a permit: all of them back means all done.
    let all = u32::try_from(options.max_connections).unwrap_or(u32::MAX);
    if tokio::time::timeout(options.timeouts.grace, accepting.permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = options.timeouts.grace.as_millis() as u64,
            "client connections still open after the grace period; stopping without them"
        );
    }
}

/// What every accept loop shares.
#[derive(Clone)]
struct Accepting {
    builder: Arc<auto::Builder<TokioExecutor>>,
    permits: Arc<Semaphore>,
    router: Arc<Router>,
    options: ServeOptions,
}

impl Accepting {
    /// Accepts on `listener` until `shutdown` fires.
    async fn run(self, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
        let port = listener.local_addr().map_or(0, |a| a.port());
        // Connections close often under load: try again soon.
        let mut backoff = AcceptBackoff::new("listener", Duration::from_millis(5));
        loop {
            let permit = tokio::select! {
                permit = self.permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_closed) => break,
                },
                _ = shutdown.changed() => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tokio::time::sleep(backoff.failed(&e)).await;
                        continue;
                    }
                },
                _ = shutdown.changed() => break,
            };
            backoff.succeeded();
            let _ = stream.set_nodelay(true);
            // The dual-stack listener sees IPv4 clients as ::ffff:a.b.c.d;
            // logs, forwarding headers and --trusted-proxies want a.b.c.d.
            let peer = SocketAddr::new(peer.ip().to_canonical(), peer.port());
            let connection = Connection {
                builder: self.builder.clone(),
                router: self.router.clone(),
                options: self.options.clone(),
                shutdown: shutdown.clone(),
                _permit: permit,
            };
            let trusted = self.options.trusted_proxies.contains(peer.ip());
            tokio::spawn(connection.run(stream, peer, port, trusted));
        }
    }
}

/// One client connection and what it needs to be served.
struct Connection {
    builder: Arc<auto::Builder<TokioExecutor>>,
    router: Arc<Router>,
    options: ServeOptions,
    shutdown: watch::Receiver<bool>,
    /// Returned when the connection ends (the connection cap).
    _permit: OwnedSemaphorePermit,
}

impl Connection {
    async fn run(self, stream: TcpStream, peer: SocketAddr, port: u16, trusted: bool) {
        let socket = stream.as_raw_fd();
        let io = ClientIo::new(stream, self.options.timeouts.send);
        let result = match self.options.transport.clone() {
            Transport::Plain => {
                let client = ClientInfo::new(peer.ip(), Scheme::Http, port, trusted);
                self.serve(io, socket, client, false).await
            }
            Transport::Tls { acceptor, hsts } => {
                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(io)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(client = %peer, "TLS handshake timed out");
                        return;
                    }
                };
                let client = ClientInfo::new(peer.ip(), Scheme::Https, port, trusted);
                self.serve(tls, socket, client, hsts).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
        }
    }

    /// Serves requests until the client leaves, the connection idles out,
    /// or the server stops (then the requests in flight finish first).
    /// `socket`: the raw descriptor under `io`, owned by `io`.
    async fn serve<I>(
        self,
        io: I,
        socket: RawFd,
        client: ClientInfo,
        hsts: bool,
    ) -> Result<(), BoxError>
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let activity = Arc::new(ClientConn::default());
        let service = service(self.router, client, hsts, activity.clone());
        let abort = activity.clone();
        let connection = self
            .builder
            .serve_connection(TokioIo::new(io), service)
            .into_owned();
        tokio::pin!(connection);
        let timeouts = self.options.timeouts;
        let mut watch = IdleWatch::new(activity, timeouts.header, timeouts.idle);
        let mut shutdown = self.shutdown;
        let mut closing = false;
        // A stop closes a connection with no request in flight only once
        // nothing is waiting to be read from it. Before its first request the
        // client has just connected and its request is on its way (closing
        // now would fail it, and a client does not retry on a fresh
        // connection). A kept-alive connection may hold a request the client
        // sent just before the stop that hyper has not read yet: closing it
        // then would reset that request unanswered. Either way the request is
        // waited for this long (and the requests begun at the stop), then
        // served with keep-alive off, and the connection closed.
        let mut stop_wait: Option<(Instant, u64)> = None;
        loop {
            tokio::select! {
                // In this order: the connection is what wakes the task almost
                // every time (and no random start costs a draw per wake).
                biased;
                result = connection.as_mut() => return result,
                () = abort.aborted() => {
                    reset_on_close(socket);
                    return Err("the connection was cut off".into());
                }
                () = watch.expired(), if !closing => {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
                _ = shutdown.wait_for(|stop| *stop), if !closing && stop_wait.is_none() => {
                    let begun = abort.begun();
                    if begun > 0 && (abort.busy() || !bytes_waiting(socket)) {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    } else {
                        stop_wait = Some((Instant::now() + FIRST_REQUEST_ON_STOP.min(timeouts.header), begun));
                    }
                }
                () = tokio::time::sleep(STOP_POLL), if !closing && stop_wait.is_some() => {
                    if stop_wait.is_some_and(|(by, begun)| abort.begun() > begun || Instant::now() >= by) {
                        connection.as_mut().graceful_shutdown();
                        closing = true;
                    }
                }
            }
        }
    }
}

/// On a stop, how long a connection that has sent no request yet, or whose
/// next request is still unread, is given for it (it is served, then closed).
const FIRST_REQUEST_ON_STOP: Duration = Duration::from_secs(1);

/// Whether the client has sent bytes the server has not read yet (a request
/// hyper has not picked up). `false` at EOF and on any error.
fn bytes_waiting(socket: RawFd) -> bool {
    use nix::sys::socket::{recv, MsgFlags};
    let mut byte = [0u8; 1];
    matches!(
        recv(socket, &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT),
        Ok(n) if n > 0
    )
}

/// How often such a connection is looked at meanwhile.
const STOP_POLL: Duration = Duration::from_millis(10);

/// Makes closing `socket` reset the connection rather than linger to
/// deliver what is still queued for a client that is not reading it.
fn reset_on_close(socket: RawFd) {
    use nix::sys::socket::{setsockopt, sockopt::Linger};
    // SAFETY: `socket` belongs to the connection future that the caller
    // still holds (it is dropped only after this returns), so the
    // descriptor is open and is the client's TCP socket.
    let fd = unsafe { BorrowedFd::borrow_raw(socket) };
    let reset = nix::libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    let _ = setsockopt(&fd, Linger, &reset);
}

fn connection_builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeouts.header)
        .max_buf_size(options.limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(options.limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

/// Decides when a connection has been idle too long: with no request yet,
/// at `first` after it opened; later, after at least `idle` with no request
/// in flight and none begun. It looks only when its timer fires (every
/// `idle`, or sooner for the first deadline), so an idle connection is
/// closed between `idle` and twice that.
struct IdleWatch {
    activity: Arc<ClientConn>,
    opened: Instant,
    first: Duration,
    idle: Duration,
    timer: Pin<Box<Sleep>>,
    /// `begun` when the timer was last armed.
    seen: u64,
}

impl IdleWatch {
    fn new(activity: Arc<ClientConn>, first: Duration, idle: Duration) -> Self {
        let opened = Instant::now();
        IdleWatch {
            activity,
            opened,
            first,
            idle,
            timer: Box::pin(tokio::time::sleep_until(opened + first.min(idle))),
            seen: 0,
        }
    }

    /// Resolves once the connection has idled out.
    async fn expired(&mut self) {
        loop {
            self.timer.as_mut().await;
            let now = Instant::now();
            let begun = self.activity.begun();
            let busy = self.activity.busy();
            let next = if busy || begun != self.seen {
                self.seen = begun;
                now + self.idle
            } else if begun == 0 && now < self.opened + self.first {
                (now + self.idle).min(self.opened + self.first)
            } else {
                return;
            };
            self.timer.as_mut().reset(next);
        }
    }
}

/// A client's byte stream with a send deadline: a write (or flush) that
/// makes no progress for `send_timeout` fails with `TimedOut`, which ends
/// the connection. Without it a client that stops reading would hold its
/// connection, and the response buffered for it, forever.
pub struct ClientIo<T> {
    inner: T,
    send_timeout: Duration,
    /// Armed while a write is waiting for the client.
    stalled: Option<Pin<Box<Sleep>>>,
    waiting: bool,
}

impl<T> ClientIo<T> {
    pub fn new(inner: T, send_timeout: Duration) -> Self {
        ClientIo {
            inner,
            send_timeout,
            stalled: None,
            waiting: false,
        }
    }

    /// Called when a write could not proceed: starts the deadline, or
    /// reports it passed.
    fn stall(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        if !self.waiting {
            self.waiting = true;
            let deadline = Instant::now() + self.send_timeout;
            match &mut self.stalled {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.stalled = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let passed = self
            .stalled
            .as_mut()
            .is_some_and(|timer| timer.as_mut().poll(cx).is_ready());
        if passed {
            Poll::Ready(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no response bytes within the send timeout",
            ))
        } else {
            Poll::Pending
        }
    }

    fn progressed(&mut self) {
        self.waiting = false;
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for ClientIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for ClientIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, buf) {
            Poll::Pending => this.stall(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => this.stall(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Pending => this.stall(cx).map(Err),
            ready => {
                this.progressed();
                ready
            }
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that marks its request finished when it is done with.
pub struct Tracked {
    body: ResponseBody,
    _ongoing: Ongoing,
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

type ServiceResult = Result<Response<Tracked>, Infallible>;

/// The per-connection service: route the request, add HSTS if asked.
fn service(
    router: Arc<Router>,
    client: ClientInfo,
    hsts: bool,
    activity: Arc<ClientConn>,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Tracked>,
    Error = Infallible,
    Future = impl std::future::Future<Output = ServiceResult> + Send,
> + Clone {
    service_fn(move |request| {
        let ongoing = Ongoing::begin(&activity);
        let routed = router.route(request, client, activity.clone());
        async move {
            let mut response = match routed {
                Routed::Answered(response) => response,
                Routed::Forwarded(forwarded) => forwarded.await,
            };
            if hsts
                && !response
                    .headers()
                    .contains_key(header::STRICT_TRANSPORT_SECURITY)
            {
                response.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS_VALUE),
                );
            }
            Ok(response.map(|body| Tracked {
                body,
                _ongoing: ongoing,
            }))
        }
    })
}

/// Answers every plain-HTTP request with `301` to the same host, path and
/// query over HTTPS on `https_port`, until `shutdown` fires.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut backoff = AcceptBackoff::new("redirect listener", Duration::from_millis(100));
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tokio::time::sleep(backoff.failed(&e)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        backoff.succeeded();
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| async move {
                Ok::<_, Infallible>(redirect_response(&request, https_port))
            });
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = http1.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `301 Location: https://host[:port]/path?query`.
pub fn redirect_response<B>(request: &Request<B>, https_port: u16) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("localhost");
    // Only a plain host[:port] may go into Location (no userinfo, path or query).
    let host = match host.parse::<http::uri::Authority>() {
        Ok(authority) if !authority.as_str().contains('@') => strip_port(host),
        _ => {
            let mut response = Response::new(ResponseBody::text("invalid Host header\n"));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{https_port}{target}")
    };
    let mut response = Response::new(ResponseBody::text(""));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

/// `example.com:80` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']')
                && (host.starts_with('[') || host[..i].find(':').is_none()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, target: &str, port: u16) -> String {
        let request = Request::get(target).header("host", host).body(()).unwrap();
        let response = redirect_response(&request, port);
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location("example.com", "/a/b?x=1", 443),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            location("example.com:80", "/", 5443),
            "https://example.com:5443/"
        );
        assert_eq!(location("[::1]:8080", "/p", 443), "https://[::1]/p");
        assert_eq!(location("[::1]", "/p", 443), "https://[::1]/p");
    }

    #[test]
    fn bytes_waiting_sees_an_unread_request_only() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        assert!(!bytes_waiting(server.as_raw_fd()), "nothing sent yet");
        client.write_all(b"GET / HTTP/1.1\r\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !bytes_waiting(server.as_raw_fd()) {
            assert!(
                std::time::Instant::now() < deadline,
                "the sent bytes never showed"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        // Peeking leaves them for hyper.
        assert!(bytes_waiting(server.as_raw_fd()));
        let mut other = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (closed, _) = listener.accept().unwrap();
        other.flush().unwrap();
        drop(other);
        std::thread::sleep(Duration::from_millis(50));
        assert!(!bytes_waiting(closed.as_raw_fd()), "EOF is not a request");
    }

    #[test]
    fn odd_hosts_are_refused() {
        for host in ["a@evil.example", "x/y", "x?y", "evil.example/#"] {
            let request = Request::get("/").header("host", host).body(()).unwrap();
            assert_eq!(
                redirect_response(&request, 443).status(),
                StatusCode::BAD_REQUEST,
                "{host}"
            );
        }
    }
}
