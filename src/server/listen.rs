//! The public listener: bind a port, accept connections, serve each one with
//! hyper (HTTP/1.1 and HTTP/2) in its own task, and shut down gracefully.
//!
//! Limits applied here: at most [`MAX_CONNECTIONS`] open client connections
//! (a semaphore; further clients wait in the kernel's accept backlog), the
//! request-head size (`--max-header-bytes`, 431 beyond it) and the head read
//! timeout (`--header-timeout-ms`; hyper starts it whenever the connection
//! waits for a request head, so it also bounds idle keep-alive connections).
//! Malformed requests get hyper's 400.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use super::proxy::{ClientInfo, Scheme};
use super::routes::Router;
use crate::config::{Limits, PortChoice, Timeouts};

/// Open client connections beyond this wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 16_384;

/// How far past the fallback start to look for a free port.
const FALLBACK_PORTS: u16 = 1_000;

/// Binds the HTTP listener on all IPv4 interfaces.
pub async fn bind(choice: PortChoice) -> io::Result<TcpListener> {
    let bind_port = |port: u16| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    match choice {
        PortChoice::Fixed(port) => bind_port(port)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on port {port}: {e}"))),
        PortChoice::FirstFree {
            preferred,
            fallback_from,
        } => {
            if let Ok(listener) = bind_port(preferred).await {
                return Ok(listener);
            }
            for port in fallback_from..fallback_from.saturating_add(FALLBACK_PORTS) {
                if let Ok(listener) = bind_port(port).await {
                    return Ok(listener);
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

/// How client connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    pub timeouts: Timeouts,
}

/// Accepts and serves connections until `shutdown` fires, then lets open
/// connections finish their requests for up to `timeouts.grace`.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    options: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&options));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);

    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed; backing off {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        backoff = Duration::from_millis(5);
        let client = ClientInfo {
            ip: peer.ip(),
            scheme: Scheme::Http,
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = service_fn(move |request| {
            let router = router.clone();
            async move { Ok::<_, Infallible>(router.handle(request, client).await) }
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let watched = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = watched.await {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.timeouts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = options.timeouts.grace.as_millis() as u64,
            "client connections still open after the grace period; closing them"
        );
    }
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
