//! Connections to workers: dial a worker's Unix socket, keep one persistent
//! HTTP/1.1 connection to it, and re-dial it when it breaks.
//!
//! A worker serves one request at a time, so one connection is all it needs
//! (DESIGN §1). The [`Upstream`] is the `C` the pool hands out: taking a
//! worker means taking its connection. The readiness probe uses the same
//! connection, so a worker that passed its probe is admitted already dialled.
//!
//! The hyper connection is not spawned as a task of its own: whoever holds
//! the worker drives it ([`Upstream::poll_connection`]) while waiting for the
//! response and while streaming its body. The whole exchange then runs in
//! the client request's task, without a hop to a dispatch task and back for
//! every request, which is most of a proxy's per-request cost.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use http_body::Body;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::body::RequestBody;

/// The header that marks the supervisor's readiness probe; only the server
/// can send it, because client `Rip-*` headers are stripped.
pub const PROBE_HEADER: &str = "rip-probe";

type WorkerConnection = Connection<TokioIo<UnixStream>, RequestBody>;

/// One worker's connection, dialled lazily.
pub struct Upstream {
    socket: Arc<Path>,
    sender: Option<SendRequest<RequestBody>>,
    /// Moves bytes between the socket and the request/response in flight;
    /// polled by whoever holds the worker.
    connection: Option<WorkerConnection>,
}

/// Why a worker could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connecting to {socket} timed out after {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("connecting to {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("HTTP exchange with {socket}: {source}")]
    Http {
        socket: PathBuf,
        source: hyper::Error,
    },
}

impl Upstream {
    /// A connection to `socket`, not yet dialled.
    pub fn new(socket: &Path) -> Self {
        Upstream {
            socket: Arc::from(socket),
            sender: None,
            connection: None,
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Drives the connection: reads the response, writes the request body.
    /// Call it whenever a request or response on this worker is pending.
    pub fn poll_connection(&mut self, cx: &mut Context<'_>) {
        if let Some(connection) = self.connection.as_mut() {
            if let Poll::Ready(result) = Pin::new(connection).poll(cx) {
                if let Err(e) = result {
                    tracing::debug!(socket = %self.socket.display(), error = %e, "worker connection ended");
                }
                // Closed: whatever it carried has been delivered or failed.
                self.connection = None;
                self.sender = None;
            }
        }
    }

    /// Runs `future` (a response or body of this worker) to completion while
    /// driving the connection.
    pub async fn drive<F: Future + Unpin>(&mut self, mut future: F) -> F::Output {
        std::future::poll_fn(|cx| {
            self.poll_connection(cx);
            Pin::new(&mut future).poll(cx)
        })
        .await
    }

    /// A sender ready for the next request, re-dialling a closed connection.
    pub async fn ready(
        &mut self,
        connect_timeout: Duration,
    ) -> Result<&mut SendRequest<RequestBody>, DialError> {
        if self.sender.is_some() {
            let ready = std::future::poll_fn(|cx| {
                // The sender turns ready only once the connection has
                // processed the end of the previous exchange.
                self.poll_connection(cx);
                match self.sender.as_mut() {
                    Some(sender) => sender.poll_ready(cx).map(|r| r.is_ok()),
                    None => Poll::Ready(false),
                }
            });
            if !matches!(tokio::time::timeout(connect_timeout, ready).await, Ok(true)) {
                self.invalidate();
            }
        }
        if self.sender.is_none() {
            // Boxed: dialling is rare, and its future is large.
            let (sender, connection) = Box::pin(dial(&self.socket, connect_timeout)).await?;
            self.sender = Some(sender);
            self.connection = Some(connection);
        }
        match self.sender.as_mut() {
            Some(sender) => Ok(sender),
            // Just set above.
            None => Err(DialError::Io {
                socket: self.socket.to_path_buf(),
                source: io::Error::other("connection vanished"),
            }),
        }
    }

    /// Forgets the connection (its state is unknown); the next use re-dials.
    pub fn invalidate(&mut self) {
        self.sender = None;
        self.connection = None;
    }

    /// Asks the worker whether its app is loaded: `GET /ready` with the probe
    /// header. The answer's body is read in full so the connection stays usable.
    pub async fn probe(&mut self, timeout: Duration) -> Result<bool, DialError> {
        let socket = self.socket.to_path_buf();
        let sender = self.ready(timeout).await?;
        let request = Request::get("/ready")
            .header(http::header::HOST, "rip-server")
            .header(PROBE_HEADER, HeaderValue::from_static("1"))
            .body(RequestBody::Empty);
        let request = match request {
            Ok(request) => request,
            Err(e) => {
                return Err(DialError::Io {
                    socket,
                    source: io::Error::other(e),
                })
            }
        };
        let response = Box::pin(sender.send_request(request));
        let exchange = async {
            let response = self.drive(response).await?;
            let ok = response.status() == StatusCode::OK;
            self.drain(response.into_body()).await?;
            Ok::<bool, hyper::Error>(ok)
        };
        let outcome = tokio::time::timeout(timeout, exchange).await;
        match outcome {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(source)) => {
                self.invalidate();
                Err(DialError::Http { socket, source })
            }
            Err(_) => {
                self.invalidate();
                Err(DialError::Timeout { socket, timeout })
            }
        }
    }

    /// Reads a response body of this worker to its end, driving the connection.
    pub async fn drain(&mut self, mut body: Incoming) -> Result<(), hyper::Error> {
        loop {
            let frame = std::future::poll_fn(|cx| {
                self.poll_connection(cx);
                Pin::new(&mut body).poll_frame(cx)
            })
            .await;
            match frame {
                None => return Ok(()),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) => {}
            }
        }
    }
}

async fn dial(
    socket: &Path,
    timeout: Duration,
) -> Result<(SendRequest<RequestBody>, WorkerConnection), DialError> {
    let connect = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| DialError::Io {
                socket: socket.to_path_buf(),
                source,
            })?;
        http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DialError::Http {
                socket: socket.to_path_buf(),
                source,
            })
    };
    tokio::time::timeout(timeout, connect)
        .await
        .unwrap_or_else(|_| {
            Err(DialError::Timeout {
                socket: socket.to_path_buf(),
                timeout,
            })
        })
}
