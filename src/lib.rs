//! rip-server: a per-worker-socket application server.
//!
//! One process owns the public listener, supervises N worker processes of an
//! app, and forwards each request to one idle worker over that worker's own
//! Unix socket. Each worker handles one request at a time; the most recently
//! freed worker goes next (LIFO) and the rest of the requests wait in a
//! bounded FIFO queue.
//!
//! # Layout
//!
//! - [`cli`]: the command line as typed: clap definitions and the pure parsers
//!   for the `w:` / `r:` / `http:` tokens.
//! - [`config`]: flags over environment over config file over defaults,
//!   validated into a [`config::Config`].
//! - [`app`]: resolving an app path to its entry and loader.
//! - [`check`]: `--check`, the configuration validated without binding.
//! - [`server`]: the data path: listener, routing, proxy, pool, bodies,
//!   access log and metrics.
//! - [`supervisor`]: worker processes: spawn, readiness, recycling, crash
//!   backoff, drain and reaping.
//! - [`control`]: the private control socket (status, metrics, join/quit, stop).
//! - [`systemd`]: sd_notify (ready, reloading, stopping, status, watchdog) and
//!   listening sockets passed by socket activation.
//! - [`worker_kit`]: a library for writing workers in Rust that speak the
//!   worker protocol (`docs/worker-protocol.md`).
//! - [`logging`]: human or JSON logs.
//!
//! [`serve`] wires these together and runs until SIGTERM, SIGINT or
//! `rip-server stop`.

/// Prints a line for the operator on standard output. A closed stdout (a
/// pipe whose reader left, as in `rip-server status | head -1`) must not
/// bring the server or a command down, so a failed write is ignored.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

pub mod app;
pub mod check;
pub mod cli;
pub mod config;
pub mod control;
pub mod logging;
pub mod server;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod worker_kit;

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};

use app::EntryKind;
use cli::{Cli, Command, ServeArgs};
use config::{Config, ConfigError, Listen, ProcessEnv};
use server::listen::{self, ServeOptions};
use server::metrics::Metrics;
use server::pool::Pool;
use server::proxy::Proxy;
use server::routes::Router;
use supervisor::{Settings, Spawner, Supervisor};

/// Anything that stops rip-server from starting or finishing a command.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Args(#[from] cli::ArgsError),
    #[error("runtime directory {path}: {message}")]
    RuntimeDir { path: PathBuf, message: String },
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Systemd(#[from] systemd::SystemdError),
    #[error(transparent)]
    Control(#[from] control::CallError),
    #[error("rolling restart failed, the old workers keep serving: {0}")]
    RollFailed(String),
    #[error("--check validates a configuration for serving; it does not apply to status, reload or stop")]
    CheckNeedsServe,
    #[error(
        "{program} is not on PATH; it runs {entry}: install it, or pick another with --runtime"
    )]
    RuntimeMissing { program: String, entry: PathBuf },
    #[error("the instance answered {status}: {body}")]
    Refused {
        status: http::StatusCode,
        body: String,
    },
}

/// Longest Unix socket path the kernel accepts (sun_path, minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Serves the app until a stop is requested; returns once every worker has
/// been reaped and every socket removed.
pub async fn serve(cli: &Cli, args: &ServeArgs, config: Config) -> Result<(), Error> {
    let _log_guard = logging::init(config.logging);
    // Certificates first: a bad one stops us before anything listens.
    let tls = load_tls(&config)?;
    prepare_runtime_dir(&config.runtime_dir)?;

    let control_path = control::socket_path(&config.runtime_dir, &config.name);
    check_socket_path(&config, &control_path)?;
    // Held until exit: a second instance of the same name stops here, before
    // it could remove the first one's sockets.
    let _instance_lock = lock_instance(&config)?;
    let control_listener = control::bind(&control_path, &config.name).await?;
    remove_stale_worker_sockets(&config.runtime_dir, &config.name);
    let spawner = spawner(&config, &control_path)?;

    let listeners = open_listeners(&config, tls.as_ref()).await?;
    let url = listeners.url.clone();

    let pool = Pool::new(config.limits.max_queue, config.timeouts.queue);
    let metrics = Arc::new(Metrics::new(&config.name));
    let proxy = Arc::new(Proxy::new(
        pool.clone(),
        metrics.clone(),
        config.limits,
        config.timeouts,
        config.logging.access_log,
    ));
    let router = Arc::new(Router::new(proxy.clone()));

    let (ready_tx, ready_rx) = oneshot::channel();
    let settings = supervisor_settings(&config);
    let (supervisor, supervisor_task) =
        Supervisor::start(settings, spawner, pool.clone(), metrics.clone(), ready_tx);

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (control_stop_tx, control_stop_rx) = watch::channel(false);
    let control_state = Arc::new(control::ControlState {
        name: config.name.clone(),
        app_dir: config.app.dir.clone(),
        entry: config.app.entry.clone(),
        reload: config.reload.as_str(),
        listeners: listeners.urls(),
        tls: tls.clone(),
        started: Instant::now(),
        pool: pool.clone(),
        metrics,
        supervisor: supervisor.clone(),
        stop: stop_tx.clone(),
    });
    let control_task = tokio::spawn(control::serve(
        control_listener,
        control_state,
        control_stop_rx,
    ));
    let max_connections = listen::connection_cap(config.limits.max_connections, config.workers);
    tracing::info!(max_connections, "client connection limit");
    let options = ServeOptions {
        limits: config.limits,
        timeouts: config.timeouts,
        transport: listeners.transport,
        trusted_proxies: config.trusted_proxies.clone(),
        max_connections,
    };
    let listener_task = tokio::spawn(listen::serve(
        listeners.main,
        router.clone(),
        options,
        stop_rx.clone(),
    ));
    if let Some((redirect, _)) = listeners.redirect {
        tokio::spawn(listen::serve_redirect(
            redirect,
            listeners.port,
            stop_rx.clone(),
        ));
    }

    say!(
        "rip-server {}: serving {} ({}, {}) with {} worker{}, reload={}",
        env!("CARGO_PKG_VERSION"),
        config.name,
        config.app.entry.display(),
        config.app.kind,
        config.workers,
        if config.workers == 1 { "" } else { "s" },
        config.reload.as_str(),
    );
    say!("listening on {url}");
    if let Some(redirect_url) = &listeners.redirect_url {
        say!("redirecting {redirect_url} to {url}");
    }
    say!("control socket {}", control_path.display());
    let workers = config.workers;
    let ready_supervisor = supervisor.clone();
    tokio::spawn(async move {
        if ready_rx.await.is_ok() {
            tracing::info!(workers, "all workers ready");
            systemd::ready(&systemd::status_of(&ready_supervisor).await);
        }
    });
    let heartbeat = tokio::spawn(systemd::heartbeat(supervisor.clone()));

    let reconfigure = Reconfigure {
        cli: cli.clone(),
        args: args.clone(),
        running: config.clone(),
        proxy,
        pool: pool.clone(),
        supervisor: supervisor.clone(),
        control_path: control_path.clone(),
        tls,
    };
    run_until_stopped(&mut stop_rx, &reconfigure).await?;
    heartbeat.abort();
    drain(&router, config.shutdown_delay).await;
    tracing::info!("stopping: no new connections; finishing requests in flight");
    let _ = stop_tx.send(true);
    let _ = listener_task.await;
    supervisor.stop().await;
    let _ = supervisor_task.await;
    let _ = control_stop_tx.send(true);
    let _ = control_task.await;
    supervisor::remove_stale(&control_path);
    if config.app.kind == EntryKind::JsModule {
        supervisor::remove_stale(&loader_path(&config));
    }
    tracing::info!("stopped");
    Ok(())
}

/// Handles signals until SIGTERM or SIGINT arrives or a stop is requested:
/// SIGHUP re-reads the config file and rolls the workers.
async fn run_until_stopped(
    stop: &mut watch::Receiver<bool>,
    reconfigure: &Reconfigure,
) -> io::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => {
                tracing::info!("SIGTERM received");
                return Ok(());
            }
            _ = int.recv() => {
                tracing::info!("SIGINT received");
                return Ok(());
            }
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            _ = hup.recv() => {
                tracing::info!("SIGHUP received: re-reading the configuration and rolling the workers");
                systemd::reloading("reloading: re-reading the configuration and rolling the workers");
                let roll = reconfigure.apply().await;
                tokio::spawn(systemd::report_reload(roll, reconfigure.supervisor.clone()));
            }
        }
    }
}

/// What SIGHUP needs to re-read the configuration and apply it.
struct Reconfigure {
    cli: Cli,
    args: ServeArgs,
    running: Config,
    proxy: Arc<Proxy>,
    pool: Arc<Pool<server::upstream::Upstream>>,
    supervisor: supervisor::SupervisorHandle,
    control_path: PathBuf,
    tls: Option<Arc<tls::Tls>>,
}

impl Reconfigure {
    /// Rebuilds the config (flags > env > file > defaults, as at start) and
    /// applies what can change live: app, workers, restart policy, reload
    /// mode, queue and timeouts. A bad config keeps the running one. The
    /// receiver answers when the roll ends.
    async fn apply(&self) -> Result<oneshot::Receiver<supervisor::RollOutcome>, String> {
        let config = match Config::build(&self.cli, &self.args, &ProcessEnv) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running configuration and workers");
                return Err(e.to_string());
            }
        };
        if config.listen != self.running.listen || config.name != self.running.name {
            tracing::warn!(
                "the listener and instance name change only on restart; keeping the running ones"
            );
        }
        let spawner = match spawner(&config, &self.control_path) {
            Ok(spawner) => spawner,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running configuration and workers");
                return Err(e.to_string());
            }
        };
        if let (Some(tls), Listen::Https(https)) = (&self.tls, &config.listen) {
            reload_tls(tls, Some(https.tls.clone()));
        }
        self.proxy.retune(config.limits, config.timeouts);
        self.pool
            .set_queue_limits(config.limits.max_queue, config.timeouts.queue);
        let (reply, outcome) = oneshot::channel();
        let command = supervisor::Command::Reconfigure {
            settings: Box::new(supervisor_settings(&config)),
            spawner: Box::new(spawner),
            reply: Some(reply),
        };
        self.supervisor.send(command).await;
        Ok(outcome)
    }
}

/// The start of a stop: `/server` answers 503 from now on, so a load
/// balancer that health-checks it takes this node out, and for
/// `--shutdown-delay-ms` everything else is still served before the
/// listener closes.
async fn drain(router: &Router, delay: Duration) {
    router.start_draining();
    let status = if delay.is_zero() {
        "stopping: finishing requests in flight".to_string()
    } else {
        format!(
            "draining: /server answers 503; stopping in {} ms",
            delay.as_millis()
        )
    };
    systemd::stopping(&status);
    if !delay.is_zero() {
        tracing::info!(
            delay_ms = delay.as_millis() as u64,
            "draining: /server answers 503 so load balancers take this node out; still serving"
        );
        tokio::time::sleep(delay).await;
    }
}

/// Re-reads the certificates; a bad one keeps the current ones serving.
pub fn reload_tls(tls: &tls::Tls, source: Option<tls::TlsSource>) {
    match tls.reload(source) {
        Ok(loaded) => {
            for cert in loaded {
                tracing::info!(
                    names = %cert.material.info.names.join(","),
                    expires = %cert.material.info.expiry(),
                    sha256 = %cert.material.info.fingerprint,
                    "certificate loaded"
                );
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "certificate reload failed; the current certificates keep serving")
        }
    }
}

/// Loads the HTTPS certificates (and prints what they are), if HTTPS is on.
fn load_tls(config: &Config) -> Result<Option<Arc<tls::Tls>>, Error> {
    let Listen::Https(https) = &config.listen else {
        return Ok(None);
    };
    let names = tls::auto::LOCAL_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    let (tls, loaded) = tls::Tls::load(https.tls.clone(), tls::auto::state_dir(), names)?;
    for cert in &loaded {
        say!("certificate {}", cert.origin);
        say!("{}", cert.material.info);
        if let Some(hint) = &cert.trust_hint {
            say!("  {hint}");
        }
    }
    Ok(Some(Arc::new(tls)))
}

/// The bound listeners.
struct Listeners {
    main: tokio::net::TcpListener,
    port: u16,
    url: String,
    transport: listen::Transport,
    redirect: Option<(tokio::net::TcpListener, u16)>,
    redirect_url: Option<String>,
}

impl Listeners {
    fn urls(&self) -> Vec<String> {
        std::iter::once(self.url.clone())
            .chain(self.redirect_url.clone())
            .collect()
    }
}

async fn open_listeners(config: &Config, tls: Option<&Arc<tls::Tls>>) -> Result<Listeners, Error> {
    // Sockets systemd holds (socket activation) are used instead of binding.
    let mut adopted = systemd::take_listeners(&config.listen)?;
    if !adopted.described.is_empty() {
        say!(
            "using the sockets systemd passed: {}",
            adopted.described.join(", ")
        );
    }
    let passed_main = adopted.main.take().map(systemd::into_tokio).transpose()?;
    let passed_redirect = adopted
        .redirect
        .take()
        .map(systemd::into_tokio)
        .transpose()?;
    match (&config.listen, tls) {
        (Listen::Https(https), Some(tls)) => {
            let main = match passed_main {
                Some(listener) => listener,
                None => listen::bind(https.port).await?,
            };
            let port = main.local_addr()?.port();
            let url = match port {
                443 => "https://localhost".to_string(),
                port => format!("https://localhost:{port}"),
            };
            let redirect = match (https.redirect, passed_redirect) {
                (_, Some(listener)) => {
                    let bound = listener.local_addr()?.port();
                    Some((listener, bound))
                }
                (config::Redirect::Off, None) => None,
                (config::Redirect::From(from), None) => {
                    match listen::bind(config::PortChoice::Fixed(from)).await {
                        Ok(listener) => {
                            let bound = listener.local_addr()?.port();
                            Some((listener, bound))
                        }
                        Err(e) => {
                            say!("no HTTP redirect: {e} (use --no-redirect-http to silence this)");
                            None
                        }
                    }
                }
            };
            let redirect_url = redirect
                .as_ref()
                .map(|(_, p)| format!("http://localhost:{p}"));
            Ok(Listeners {
                main,
                port,
                url,
                transport: listen::Transport::Tls {
                    acceptor: tls.acceptor(),
                    hsts: https.hsts,
                },
                redirect,
                redirect_url,
            })
        }
        (Listen::Http(choice), _) | (Listen::Https(config::Https { port: choice, .. }), None) => {
            let main = match passed_main {
                Some(listener) => listener,
                None => listen::bind(*choice).await?,
            };
            let port = main.local_addr()?.port();
            Ok(Listeners {
                main,
                port,
                url: format!("http://localhost:{port}"),
                transport: listen::Transport::Plain,
                redirect: None,
                redirect_url: None,
            })
        }
    }
}

fn supervisor_settings(config: &Config) -> Settings {
    Settings {
        workers: config.workers,
        restart: config.restart,
        timeouts: config.timeouts,
        reload: config.reload,
    }
}

/// Runs `rip-server status|reload|stop` against a running instance.
pub async fn control_command(cli: &Cli, command: Command) -> Result<(), Error> {
    let runtime_dir = config::runtime_dir(&ProcessEnv);
    let socket = control::find_socket(&runtime_dir, cli.name.as_deref())?;
    let (method, path) = match command {
        Command::Status => (http::Method::GET, "/status"),
        Command::Stop => (http::Method::POST, "/stop"),
        Command::Reload => (http::Method::POST, "/reload"),
    };
    let (status, body) = control::call(&socket, method, path, bytes::Bytes::new()).await?;
    if command == Command::Reload && status == http::StatusCode::CONFLICT {
        let outcome: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        return Err(Error::RollFailed(
            outcome["error"].as_str().unwrap_or(&body).to_string(),
        ));
    }
    if !status.is_success() {
        return Err(Error::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    match command {
        Command::Status => match serde_json::from_str::<serde_json::Value>(&body) {
            Ok(value) => say!("{}", serde_json::to_string_pretty(&value).unwrap_or(body)),
            Err(_) => say!("{body}"),
        },
        Command::Stop => {
            wait_until_gone(&socket).await;
            say!("stopped");
        }
        Command::Reload => {
            let outcome: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            say!(
                "rolled to generation {} in {} ms",
                outcome["generation"],
                outcome["duration_ms"]
            );
        }
    }
    Ok(())
}

/// Waits (bounded) until the instance has removed its control socket.
async fn wait_until_gone(socket: &Path) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    while socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

fn loader_path(config: &Config) -> PathBuf {
    config
        .runtime_dir
        .join(format!("{}.loader.mjs", config.name))
}

/// How workers of this app are started.
fn spawner(config: &Config, control_path: &Path) -> Result<Spawner, Error> {
    let (program, args) = match config.app.kind {
        EntryKind::JsModule => {
            let loader = loader_path(config);
            write_atomically(&loader, app::NODE_LOADER.as_bytes()).map_err(|e| {
                Error::RuntimeDir {
                    path: loader.clone(),
                    message: format!("cannot write the node loader: {e}"),
                }
            })?;
            (
                config.js_runtime.program().into(),
                vec![loader.into_os_string()],
            )
        }
        EntryKind::Executable => (config.app.entry.clone().into_os_string(), Vec::new()),
    };
    Ok(Spawner {
        name: config.name.clone(),
        program,
        args,
        app_dir: config.app.dir.clone(),
        entry: config.app.entry.clone(),
        reload: config.reload,
        runtime_dir: config.runtime_dir.clone(),
        control_socket: control_path.to_path_buf(),
    })
}

/// Takes `<runtime dir>/<name>.lock`, or says which instance holds it.
fn lock_instance(config: &Config) -> Result<nix::fcntl::Flock<std::fs::File>, Error> {
    let path = config.runtime_dir.join(format!("{}.lock", config.name));
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::RuntimeDir {
            path: path.clone(),
            message: format!("cannot open the instance lock: {e}"),
        })?;
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock).map_err(|_| {
        Error::Io(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "an instance named '{name}' is already running (it holds {}); stop it with \
                 'rip-server stop --name {name}' or choose another --name",
                path.display(),
                name = config.name
            ),
        ))
    })
}

/// Replaces a file by rename, so a worker starting meanwhile never reads half of it.
fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    if std::fs::read(path).is_ok_and(|current| current == bytes) {
        return Ok(());
    }
    let temp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&temp, bytes)?;
    std::fs::rename(&temp, path)
}

/// Creates the runtime directory 0700 and refuses one owned by someone else.
fn prepare_runtime_dir(dir: &Path) -> Result<(), Error> {
    let fail = |message: String| Error::RuntimeDir {
        path: dir.to_path_buf(),
        message,
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| fail(format!("cannot create it: {e}")))?;
    let meta = std::fs::symlink_metadata(dir).map_err(|e| fail(e.to_string()))?;
    let uid = nix::unistd::getuid().as_raw();
    if !meta.is_dir() || meta.uid() != uid {
        return Err(fail(format!(
            "it is not a directory owned by uid {uid}; set XDG_RUNTIME_DIR or RUNTIME_DIRECTORY to a private directory"
        )));
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(|e| fail(format!("cannot make it private (0700): {e}")))?;
    Ok(())
}

pub(crate) fn check_socket_path(config: &Config, control_path: &Path) -> Result<(), Error> {
    // Worker sockets are `<name>.w<id>.sock`; leave room for a long id.
    let longest = control_path.as_os_str().len().max(
        config.runtime_dir.as_os_str().len()
            + config.name.len()
            + ".w18446744073709.sock".len()
            + 1,
    );
    if longest > MAX_SOCKET_PATH {
        return Err(Error::RuntimeDir {
            path: config.runtime_dir.clone(),
            message: format!(
                "socket paths under it would be {longest} bytes, over the kernel's limit of {MAX_SOCKET_PATH}; \
                 use a shorter RUNTIME_DIRECTORY / XDG_RUNTIME_DIR or --name"
            ),
        });
    }
    Ok(())
}

/// Removes worker sockets a killed instance of the same name left behind.
fn remove_stale_worker_sockets(dir: &Path, name: &str) {
    let prefix = format!("{name}.w");
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let is_worker_socket = file
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".sock"))
            .is_some_and(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
        if is_worker_socket {
            tracing::info!(socket = %file, "removing a stale worker socket from an earlier run");
            supervisor::remove_stale(&entry.path());
        }
    }
}
