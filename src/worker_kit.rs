//! A kit for writing workers in Rust that speak the worker protocol
//! (`docs/worker-protocol.md`): bind `RIP_SOCKET`, answer the readiness
//! probe, serve one request at a time (a second concurrent one gets
//! `503 Rip-Worker-Busy`), tag responses with `Rip-Worker-Id`, announce
//! `join`/`quit` on the control socket, and drain on `SIGTERM`.
//!
//! ```no_run
//! use rip_server::worker_kit::{self, text};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let env = worker_kit::WorkerEnv::from_env().map_err(std::io::Error::other)?;
//!     worker_kit::run(env, |_request| async { text(200, "pong") }).await
//! }
//! ```

use std::future::Future;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Notify;

/// The protocol's spawn environment.
#[derive(Debug, Clone)]
pub struct WorkerEnv {
    pub socket: PathBuf,
    pub id: u64,
    pub version: u64,
    pub control: Option<PathBuf>,
}

impl WorkerEnv {
    /// Reads `RIP_SOCKET`, `RIP_WORKER_ID`, `RIP_VERSION` and `RIP_CONTROL`.
    pub fn from_env() -> Result<Self, String> {
        let socket = std::env::var_os("RIP_SOCKET").map(PathBuf::from).ok_or(
            "RIP_SOCKET is not set: this program is a rip-server worker; run it with rip-server",
        )?;
        let number = |name: &str| -> Result<u64, String> {
            match std::env::var(name) {
                Ok(v) => v
                    .parse()
                    .map_err(|_| format!("{name}='{v}': expected a whole number")),
                Err(_) => Ok(0),
            }
        };
        Ok(WorkerEnv {
            socket,
            id: number("RIP_WORKER_ID")?,
            version: number("RIP_VERSION")?,
            control: std::env::var_os("RIP_CONTROL").map(PathBuf::from),
        })
    }
}

/// A plain-text response.
pub fn text(status: u16, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() =
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

struct Shared {
    busy: AtomicBool,
    draining: AtomicBool,
    idle: Notify,
    worker_id: HeaderValue,
}

/// Serves `handler` on `RIP_SOCKET` until `SIGTERM`, then drains and returns.
pub async fn run<H, F>(env: WorkerEnv, handler: H) -> io::Result<()>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let _ = std::fs::remove_file(&env.socket);
    let listener = UnixListener::bind(&env.socket)?;
    let shared = Arc::new(Shared {
        busy: AtomicBool::new(false),
        draining: AtomicBool::new(false),
        idle: Notify::new(),
        worker_id: HeaderValue::from(env.id),
    });
    let handler = Arc::new(handler);
    let mut term = signal(SignalKind::terminate())?;
    announce(&env, "join").await;

    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(_) => continue,
            },
            _ = term.recv() => break,
        };
        let shared = shared.clone();
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let shared = shared.clone();
                let handler = handler.clone();
                async move {
                    Ok::<_, std::convert::Infallible>(dispatch(&shared, &*handler, request).await)
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }

    // Drain: new requests get "draining"; wait for the one in flight.
    shared.draining.store(true, Ordering::SeqCst);
    while shared.busy.load(Ordering::SeqCst) {
        let idle = shared.idle.notified();
        if !shared.busy.load(Ordering::SeqCst) {
            break;
        }
        idle.await;
    }
    announce(&env, "quit").await;
    let _ = std::fs::remove_file(&env.socket);
    Ok(())
}

async fn dispatch<H, F>(
    shared: &Shared,
    handler: &H,
    request: Request<Incoming>,
) -> Response<Full<Bytes>>
where
    H: Fn(Request<Incoming>) -> F,
    F: Future<Output = Response<Full<Bytes>>>,
{
    let head = request.method() == Method::HEAD;
    let mut response = if request.headers().contains_key("rip-probe")
        && request.method() == Method::GET
        && request.uri().path() == "/ready"
    {
        if shared.draining.load(Ordering::SeqCst) {
            signal_response("rip-worker-draining")
        } else {
            text(200, "ready")
        }
    } else if shared.draining.load(Ordering::SeqCst) {
        signal_response("rip-worker-draining")
    } else if shared.busy.swap(true, Ordering::SeqCst) {
        signal_response("rip-worker-busy")
    } else {
        let response = handler(request).await;
        shared.busy.store(false, Ordering::SeqCst);
        shared.idle.notify_waiters();
        response
    };
    response
        .headers_mut()
        .insert("rip-worker-id", shared.worker_id.clone());
    // The body's length on the wire is hyper's to write, from the body
    // itself: a Content-Length the handler set could disagree with it, and
    // the server would read the difference as the next request's answer. A
    // HEAD answer keeps it (it says how long the body would be).
    let status = response.status();
    if !head || status == StatusCode::NO_CONTENT {
        response.headers_mut().remove(header::CONTENT_LENGTH);
    } else if response.headers().contains_key(header::CONTENT_LENGTH) {
        // No body goes out for HEAD; hyper then trusts the header as given.
        *response.body_mut() = Full::new(Bytes::new());
    }
    response
}

fn signal_response(header: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(503, "worker unavailable\n");
    response
        .headers_mut()
        .insert(header, HeaderValue::from_static("1"));
    response
}

/// Best-effort `join` / `quit` on the control socket.
async fn announce(env: &WorkerEnv, op: &str) {
    let Some(control) = &env.control else { return };
    let body = serde_json::json!({
        "op": op,
        "workerId": env.id,
        "socket": env.socket,
        "pid": std::process::id(),
        "version": env.version,
    });
    let call = crate::control::call(
        control,
        Method::POST,
        "/worker",
        Bytes::from(body.to_string()),
    );
    let _ = tokio::time::timeout(Duration::from_secs(1), call).await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A handler that sets lengths its bodies do not have.
    async fn liar(request: Request<Incoming>) -> Response<Full<Bytes>> {
        let mut response = match request.uri().path() {
            "/empty" => text(204, "a body a 204 must not carry"),
            _ => text(200, "hello world"),
        };
        response
            .headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from_static("3"));
        response
    }

    #[tokio::test]
    async fn the_wire_carries_the_bodys_real_length_whatever_the_handler_says() {
        let dir = tempfile::tempdir().unwrap();
        let env = WorkerEnv {
            socket: dir.path().join("w.sock"),
            id: 7,
            version: 0,
            control: None,
        };
        let socket = env.socket.clone();
        let worker = tokio::spawn(run(env, liar));
        let stream = loop {
            match tokio::net::UnixStream::connect(&socket).await {
                Ok(stream) => break stream,
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        };
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        // One connection, several exchanges: a wrong length on any of them
        // would break the framing of the next.
        for (method, path, status, body, length) in [
            (Method::GET, "/", 200, "hello world", Some("11")),
            (Method::GET, "/empty", 204, "", None),
            (Method::HEAD, "/", 200, "", Some("3")),
            (Method::GET, "/", 200, "hello world", Some("11")),
        ] {
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .header(header::HOST, "x")
                .body(Full::new(Bytes::new()))
                .unwrap();
            let response = sender.send_request(request).await.unwrap();
            assert_eq!(response.status(), status, "{method} {path}");
            assert_eq!(
                response
                    .headers()
                    .get(header::CONTENT_LENGTH)
                    .map(|v| v.to_str().unwrap()),
                length,
                "{method} {path}"
            );
            let got = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(got, body.as_bytes(), "{method} {path}");
        }
        worker.abort();
    }
}
