//! Connections to workers: dial a worker's Unix socket, keep one persistent
//! HTTP/1.1 connection to it, and re-dial it when it breaks.
//!
//! A worker serves one request at a time, so one connection is all it needs
//! (DESIGN §1). The [`Upstream`] is the `C` the pool hands out: taking a
//! worker means taking its connection. The readiness probe uses the same
//! connection, so a worker that passed its probe is admitted already dialled.

use std::convert::Infallible;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

use super::body::RequestBody;

/// The header that marks the supervisor's readiness probe; only the server
/// can send it, because client `Rip-*` headers are stripped.
pub const PROBE_HEADER: &str = "rip-probe";

/// One worker's connection, dialled lazily.
pub struct Upstream {
    socket: Arc<Path>,
    sender: Option<SendRequest<RequestBody>>,
}

/// Why a worker could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connecting to {socket} timed out after {timeout:?}")]
    Timeout { socket: PathBuf, timeout: Duration },
    #[error("connecting to {socket}: {source}")]
    Io { socket: PathBuf, source: io::Error },
    #[error("HTTP handshake with {socket}: {source}")]
    Handshake {
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
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// A sender ready for the next request, re-dialling a closed connection.
    pub async fn ready(
        &mut self,
        connect_timeout: Duration,
    ) -> Result<&mut SendRequest<RequestBody>, DialError> {
        if let Some(sender) = self.sender.as_mut() {
            let alive = !sender.is_closed()
                && matches!(
                    tokio::time::timeout(connect_timeout, sender.ready()).await,
                    Ok(Ok(()))
                );
            if !alive {
                self.sender = None;
            }
        }
        if self.sender.is_none() {
            self.sender = Some(dial(&self.socket, connect_timeout).await?);
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
        let exchange = async {
            let response = sender.send_request(request).await?;
            let ok = response.status() == StatusCode::OK;
            response.into_body().collect().await?;
            Ok::<bool, hyper::Error>(ok)
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(Ok(ok)) => Ok(ok),
            Ok(Err(source)) => {
                self.invalidate();
                Err(DialError::Handshake { socket, source })
            }
            Err(_) => {
                self.invalidate();
                Err(DialError::Timeout { socket, timeout })
            }
        }
    }
}

async fn dial(socket: &Path, timeout: Duration) -> Result<SendRequest<RequestBody>, DialError> {
    let connect = async {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| DialError::Io {
                socket: socket.to_path_buf(),
                source,
            })?;
        let (sender, connection) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|source| DialError::Handshake {
                socket: socket.to_path_buf(),
                source,
            })?;
        // The connection future drives the socket; it ends when either side
        // closes, which the sender then reports as closed.
        tokio::spawn(async move {
            let _ = connection.await;
            Ok::<(), Infallible>(())
        });
        Ok(sender)
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
