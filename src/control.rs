//! The control socket: HTTP/1.1 over a Unix socket, JSON in and out
//! (DESIGN §9). It lives at `<runtime dir>/<name>.ctl.sock`, mode 0600, in a
//! 0700 directory, so only the server's own user can reach it.
//!
//! Routes:
//!
//! | route | answer |
//! |---|---|
//! | `GET /server` | `200 ok` from the server itself |
//! | `GET /status` | JSON: name, version, pid, uptime, listeners, registry (source, path, error), hosts, and `apps` (each: name, app, hosts, pool, generation, desired_workers, workers, slots, restarts, roll, last_roll, rolls, module_reloads); the default app's (or only app's) fields are repeated at the top level |
//! | `GET /metrics` | Prometheus text, one sample per app (label `app`) |
//! | `POST /worker` | `{"op":"join","workerId":N,"pid":P,…}` or `{"op":"quit","workerId":N}` → `{"ok":true}` |
//! | `POST /reload[?host=HOST]` | a rolling restart of the app serving HOST, or of every app; answers when the rolls end: `200` + `{"ok":true,"rolls":[…]}`, or `409` with the failed rolls' `error` (their old generations keep serving); `404` for a host no app serves |
//! | `POST /stop` | `202`, then a graceful stop |
//!
//! [`call`] is the client side used by the commands (`crate::commands`).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{oneshot, watch};

use crate::apps::{AppHandle, AppsHandle};
use crate::server::accept::AcceptBackoff;
use crate::server::metrics::{self, AppSample};
use crate::supervisor::{Command, RollOutcome};

/// Largest control request body accepted.
const MAX_BODY: usize = 64 * 1024;

/// The control socket's path for instance `name`.
pub fn socket_path(runtime_dir: &Path, name: &str) -> PathBuf {
    runtime_dir.join(format!("{name}.ctl.sock"))
}

/// What the control socket reports on and acts upon.
pub struct ControlState {
    pub name: String,
    pub listeners: Vec<String>,
    pub started: Instant,
    pub apps: AppsHandle,
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
    let mut backoff = AcceptBackoff::new("control socket", Duration::from_millis(100));
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
        let state = state.clone();
        // Who is on the other end, from the kernel (SO_PEERCRED): a worker's
        // join or quit is believed only from that worker's own process.
        let peer = stream
            .peer_cred()
            .ok()
            .and_then(|cred| cred.pid())
            .map(|pid| pid as u32);
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(route(&state, request, peer).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn route(
    state: &ControlState,
    request: Request<Incoming>,
    peer: Option<u32>,
) -> Response<Full<Bytes>> {
    let query = request.uri().query().map(str::to_string);
    match (request.method(), request.uri().path()) {
        (&Method::GET, "/server") => text(StatusCode::OK, "ok"),
        (&Method::GET, "/status") => json(StatusCode::OK, &status(state).await),
        (&Method::GET, "/metrics") => metrics(state),
        (&Method::POST, "/worker") => worker_op(state, request, peer).await,
        (&Method::POST, "/reload") => reload(state, query_host(query.as_deref())).await,
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

/// `host=...` from a query string, percent-decoded.
fn query_host(query: Option<&str>) -> Option<String> {
    let value = query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("host="))?;
    let mut out = Vec::with_capacity(value.len());
    let bytes = value.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let decoded = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok());
        match decoded {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

fn metrics(state: &ControlState) -> Response<Full<Bytes>> {
    let table = state.apps.table();
    let samples: Vec<AppSample<'_>> = table
        .apps()
        .iter()
        .map(|(app, _)| AppSample {
            app: &app.name,
            metrics: &app.metrics,
            pool: app.pool.stats(),
        })
        .collect();
    let mut response = text(
        StatusCode::OK,
        metrics::render(
            &samples,
            metrics::ServerSample {
                log_lines_dropped: crate::logging::dropped_lines(),
            },
        ),
    );
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(metrics::CONTENT_TYPE),
    );
    response
}

/// One app's part of `/status`.
async fn app_status(app: &AppHandle, hosts: &[String]) -> serde_json::Value {
    let supervisor = app.supervisor.status().await;
    let load =
        |counter: &std::sync::atomic::AtomicU64| counter.load(std::sync::atomic::Ordering::Relaxed);
    let m = &app.metrics;
    serde_json::json!({
        "name": app.name,
        "app": app.about(),
        "hosts": hosts,
        "pool": app.pool.stats(),
        "generation": supervisor.as_ref().map(|s| s.generation),
        "desired_workers": supervisor.as_ref().map_or(app.desired(), |s| s.desired_workers),
        "workers": supervisor.as_ref().map(|s| &s.workers),
        "slots": supervisor.as_ref().map(|s| &s.slots),
        "restarts": supervisor.as_ref().map(|s| s.restarts),
        "roll": supervisor.as_ref().map(|s| &s.roll),
        "last_roll": supervisor.as_ref().map(|s| &s.last_roll),
        "rolls": {
            "started": load(&m.rolls_started),
            "succeeded": load(&m.rolls_succeeded),
            "failed": load(&m.rolls_failed),
        },
        "module_reloads": load(&m.module_reloads),
    })
}

/// The whole `/status` document.
pub async fn status(state: &ControlState) -> serde_json::Value {
    let table = state.apps.table();
    let registry = state.apps.registry();
    let mut apps = Vec::new();
    for (app, hosts) in table.apps() {
        apps.push(app_status(app, hosts).await);
    }
    let mut doc = serde_json::json!({
        "name": state.name,
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_s": state.started.elapsed().as_secs(),
        "listeners": state.listeners,
        "registry": {
            "source": registry.source.kind(),
            "path": registry.source.path(),
            "error": registry.error,
        },
        "hosts": table.hosts(),
    });
    // The default app (or the only one), at the top level as before apps.
    let primary = match table.default_app() {
        Some(default) => table
            .apps()
            .iter()
            .position(|(a, _)| Arc::ptr_eq(a, default)),
        None if apps.len() == 1 => Some(0),
        None => None,
    };
    if let (Some(i), Some(fields)) = (primary, doc.as_object_mut()) {
        if let Some(app) = apps[i].as_object() {
            for (key, value) in app {
                if key != "name" && key != "hosts" {
                    fields.insert(key.clone(), value.clone());
                }
            }
        }
    }
    if let Some(fields) = doc.as_object_mut() {
        fields.insert("apps".into(), serde_json::Value::Array(apps));
    }
    doc
}

/// Longest a `POST /reload` waits for its rolls to end before answering 202.
pub const ROLL_WAIT: Duration = Duration::from_secs(300);

async fn reload(state: &ControlState, host: Option<String>) -> Response<Full<Bytes>> {
    if let Some(tls) = &state.tls {
        crate::serve::reload_tls(tls, None);
    }
    let rolls = match state.apps.reload(host).await {
        Ok(rolls) => rolls,
        Err(error) => {
            return json(
                StatusCode::NOT_FOUND,
                &serde_json::json!({ "ok": false, "error": error }),
            )
        }
    };
    let waited = tokio::time::timeout(ROLL_WAIT, outcomes(rolls)).await;
    let Ok(outcomes) = waited else {
        return json(
            StatusCode::ACCEPTED,
            &serde_json::json!({ "ok": true, "rolling": true }),
        );
    };
    let ok = outcomes
        .iter()
        .all(|(_, o)| o.as_ref().is_some_and(|o| o.ok));
    let rolls: Vec<serde_json::Value> = outcomes
        .into_iter()
        .map(|(app, outcome)| match outcome {
            Some(outcome) => {
                let mut value = serde_json::to_value(&outcome).unwrap_or_default();
                if let Some(fields) = value.as_object_mut() {
                    fields.insert("app".into(), app.into());
                }
                value
            }
            None => serde_json::json!({ "app": app, "ok": false, "error": "the app stopped" }),
        })
        .collect();
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    json(status, &serde_json::json!({ "ok": ok, "rolls": rolls }))
}

async fn outcomes(
    rolls: Vec<(String, oneshot::Receiver<RollOutcome>)>,
) -> Vec<(String, Option<RollOutcome>)> {
    let mut out = Vec::new();
    for (app, outcome) in rolls {
        out.push((app, outcome.await.ok()));
    }
    out
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct WorkerOp {
    op: String,
    worker_id: u64,
    pid: Option<u32>,
}

async fn worker_op(
    state: &ControlState,
    request: Request<Incoming>,
    peer: Option<u32>,
) -> Response<Full<Bytes>> {
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
    if op.op != "join" && op.op != "quit" {
        return text(
            StatusCode::BAD_REQUEST,
            format!("unknown op '{}': expected join or quit\n", op.op),
        );
    }
    // Worker ids are unique across apps: the one supervisor that owns it acts.
    for supervisor in state.apps.supervisors() {
        let (reply, mine) = oneshot::channel();
        let command = match op.op.as_str() {
            // The pid in the body is the sender's word; the kernel's wins.
            "join" => Command::Join {
                id: op.worker_id,
                pid: peer.or(op.pid),
                reply,
            },
            _ => Command::Quit {
                id: op.worker_id,
                from: peer,
                reply,
            },
        };
        if supervisor.send(command).await && mine.await.unwrap_or(false) {
            return json(StatusCode::OK, &serde_json::json!({ "ok": true }));
        }
    }
    tracing::warn!(worker = op.worker_id, pid = ?op.pid, op = %op.op, "a worker op from an unknown worker ignored");
    json(
        StatusCode::NOT_FOUND,
        &serde_json::json!({ "ok": false, "error": "no such worker" }),
    )
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
    #[error(
        "no answer from the control socket {} within {} ms: the instance is hung or \
         overloaded. Look at its log (its terminal, or journalctl -u rip-server); if it stays \
         stuck, stop it with SIGTERM (a second one stops it at once). --timeout-ms=N waits longer",
        path.display(),
        after.as_millis()
    )]
    Timeout { path: PathBuf, after: Duration },
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

/// [`call`], given up after `limit` (connecting, sending and reading the
/// answer all count): a hung instance must not hang the command too.
pub async fn call_within(
    socket: &Path,
    method: Method,
    path: &str,
    body: Bytes,
    limit: Duration,
) -> Result<(StatusCode, String), CallError> {
    tokio::time::timeout(limit, call(socket, method, path, body))
        .await
        .unwrap_or_else(|_| {
            Err(CallError::Timeout {
                path: socket.to_path_buf(),
                after: limit,
            })
        })
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
