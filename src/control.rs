//! The control socket: HTTP/1.1 over a Unix socket, JSON in and out
//! (DESIGN §9). It lives at `<runtime dir>/<name>.ctl.sock`, mode 0600, in a
//! 0700 directory, so only the server's own user can reach it.
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /server` | `200 ok` from the server itself |
//! | `GET /status` | JSON: name, version, pid, uptime, app, listeners, pool, workers, slots |
//! | `GET /metrics` | Prometheus text |
//! | `POST /worker` | `{"op":"join","workerId":N,"pid":P,…}` or `{"op":"quit","workerId":N}` → `{"ok":true}` |
//! | `POST /reload` | a rolling restart; answers when it ends: `200` + the outcome JSON, or `409` + the outcome with its `error` (the old generation keeps serving) |
//! | `POST /stop` | `202`, then a graceful stop |
//!
//! [`call`] is the client side used by `rip-server status|stop`.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use crate::server::metrics::Metrics;
use crate::server::pool::Pool;
use crate::server::upstream::Upstream;
use crate::supervisor::{Command, SupervisorHandle, Trigger};

/// Largest control request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The control socket's path for instance `name`.
pub fn socket_path(runtime_dir: &Path, name: &str) -> PathBuf {
    runtime_dir.join(format!("{name}.ctl.sock"))
}

/// What the control socket reports on and acts upon.
pub struct ControlState {
    pub name: String,
    pub app_dir: PathBuf,
    pub entry: PathBuf,
    pub reload: &'static str,
    pub listeners: Vec<String>,
    pub started: Instant,
    pub pool: Arc<Pool<Upstream>>,
    pub metrics: Arc<Metrics>,
    pub supervisor: SupervisorHandle,
    /// Re-read on `POST /reload` (certificate renewals without restart).
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// Set to request a graceful stop.
    pub stop: watch::Sender<bool>,
}

/// Binds the control socket, refusing if a live instance already owns it
/// and removing a stale one left by a crash.
pub async fn bind(path: &Path, name: &str) -> io::Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "an instance named '{name}' is already running (control socket {}); \
                     stop it with 'rip-server stop --name {name}' or choose another --name",
                    path.display()
                ),
            ));
        }
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Serves control requests until `shutdown` fires.
pub async fn serve(
    listener: UnixListener,
    state: Arc<ControlState>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "control socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&state, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(state: &ControlState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/server") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/status") => status(state).await,
        (&Method::GET, "/metrics") => {
            let mut out = String::new();
            state.metrics.render(&mut out, &state.pool.stats());
            let mut response = text(StatusCode::OK, out);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::POST, "/worker") => worker_op(state, request).await,
        (&Method::POST, "/reload") => reload(state).await,
        (&Method::POST, "/stop") => {
            tracing::info!("stop requested over the control socket");
            let _ = state.stop.send(true);
            json(
                StatusCode::ACCEPTED,
                &serde_json::json!({ "ok": true, "stopping": true }),
            )
        }
        (_, "/server" | "/status" | "/metrics" | "/worker" | "/reload" | "/stop") => {
            text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n")
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /status, /metrics, /reload, /stop\n",
        ),
    }
}

async fn status(state: &ControlState) -> Response<Full<Bytes>> {
    let Some(supervisor) = state.supervisor.status().await else {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is stopping\n",
        );
    };
    let body = serde_json::json!({
        "name": state.name,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs(),
        "app": {
            "dir": state.app_dir,
            "entry": state.entry,
            "reload": state.reload,
        },
        "listeners": state.listeners,
        "pool": state.pool.stats(),
        "generation": supervisor.generation,
        "desired_workers": supervisor.desired_workers,
        "workers": supervisor.workers,
        "slots": supervisor.slots,
        "restarts": supervisor.restarts,
        "roll": supervisor.roll,
        "last_roll": supervisor.last_roll,
        "rolls": {
            "started": state.metrics.rolls_started.load(std::sync::atomic::Ordering::Relaxed),
            "succeeded": state.metrics.rolls_succeeded.load(std::sync::atomic::Ordering::Relaxed),
            "failed": state.metrics.rolls_failed.load(std::sync::atomic::Ordering::Relaxed),
        },
        "module_reloads": state.metrics.module_reloads.load(std::sync::atomic::Ordering::Relaxed),
        "hosts": [],
    });
    json(StatusCode::OK, &body)
}

/// Longest a `POST /reload` waits for its roll to end before answering 202.
const ROLL_WAIT: std::time::Duration = std::time::Duration::from_secs(300);

async fn reload(state: &ControlState) -> Response<Full<Bytes>> {
    if let Some(tls) = &state.tls {
        crate::reload_tls(tls, None);
    }
    let (reply, outcome) = tokio::sync::oneshot::channel();
    let command = Command::Reload {
        trigger: Trigger::Command,
        reply: Some(reply),
    };
    if !state.supervisor.send(command).await {
        return text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is stopping\n",
        );
    }
    match tokio::time::timeout(ROLL_WAIT, outcome).await {
        Ok(Ok(outcome)) => {
            let status = if outcome.ok {
                StatusCode::OK
            } else {
                StatusCode::CONFLICT
            };
            json(status, &serde_json::to_value(&outcome).unwrap_or_default())
        }
        Ok(Err(_)) => text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is stopping\n",
        ),
        Err(_) => json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "ok": true, "rolling": true }),
        ),
    }
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkerOp {
    op: String,
    worker_id: u64,
    pid: Option<u32>,
}

async fn worker_op(state: &ControlState, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let op: WorkerOp = match serde_json::from_slice(&body) {
        Ok(op) => op,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("expected {{\"op\":\"join\"|\"quit\",\"workerId\":N}}: {e}\n"),
            )
        }
    };
    let command = match op.op.as_str() {
        "join" => Command::Join {
            id: op.worker_id,
            pid: op.pid,
        },
        "quit" => Command::Quit { id: op.worker_id },
        other => {
            return text(
                StatusCode::BAD_REQUEST,
                format!("unknown op '{other}': expected join or quit\n"),
            )
        }
    };
    if state.supervisor.send(command).await {
        json(StatusCode::OK, &serde_json::json!({ "ok": true }))
    } else {
        text(
            StatusCode::SERVICE_UNAVAILABLE,
            "the supervisor is stopping\n",
        )
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn json(status: StatusCode, value: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = text(status, value.to_string());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// Why a command could not reach an instance.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no rip-server instance is running (no control socket in {0})")]
    NoneRunning(PathBuf),
    #[error("no instance named '{name}' is running (no live control socket at {path})")]
    NotRunning { name: String, path: PathBuf },
    #[error("several instances are running ({0}); pick one with --name")]
    Ambiguous(String),
    #[error("talking to {path}: {message}")]
    Io { path: PathBuf, message: String },
}

/// Finds the control socket of the instance to talk to: `--name`, or the
/// only one running.
pub fn find_socket(runtime_dir: &Path, name: Option<&str>) -> Result<PathBuf, CallError> {
    if let Some(name) = name {
        return Ok(socket_path(runtime_dir, name));
    }
    let mut names: Vec<String> = std::fs::read_dir(runtime_dir)
        .map_err(|_| CallError::NoneRunning(runtime_dir.to_path_buf()))?
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| {
            let file = entry.file_name().to_string_lossy().into_owned();
            file.strip_suffix(".ctl.sock").map(str::to_string)
        })
        .collect();
    names.sort();
    match names.as_slice() {
        [] => Err(CallError::NoneRunning(runtime_dir.to_path_buf())),
        [one] => Ok(socket_path(runtime_dir, one)),
        many => Err(CallError::Ambiguous(many.join(", "))),
    }
}

/// Sends one request to a control socket; returns the status and body.
pub async fn call(
    socket: &Path,
    method: Method,
    path: &str,
    body: Bytes,
) -> Result<(StatusCode, String), CallError> {
    let io_error = |message: String| CallError::Io {
        path: socket.to_path_buf(),
        message,
    };
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|_| CallError::NotRunning {
            name: socket
                .file_name()
                .map(|f| {
                    f.to_string_lossy()
                        .trim_end_matches(".ctl.sock")
                        .to_string()
                })
                .unwrap_or_default(),
            path: socket.to_path_buf(),
        })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| io_error(e.to_string()))?;
    tokio::spawn(connection);
    let request = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, "rip-server")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(body))
        .map_err(|e| io_error(e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| io_error(e.to_string()))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| io_error(e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
