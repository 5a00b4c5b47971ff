//! Serving: wires the listeners, the apps, the control socket and the
//! signals together, and runs until a stop.
//!
//! Start order: certificates (a bad one stops us before anything listens),
//! the private runtime directory and the instance lock, the control socket,
//! the listeners (bound, or taken from systemd), the apps (their workers
//! boot meanwhile; requests wait in their queues), then the accept loops.
//! Stop order: `/server` answers 503 (load balancers take the node out),
//! the listeners close and connections finish (`--grace-ms`), every app
//! drains and its workers are reaped, the sockets are removed. A second
//! SIGTERM or SIGINT meanwhile kills every worker and exits at once
//! (status 143 or 130).

use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{oneshot, watch};

use crate::apps::{stack::loader_path, Apps, AppsHandle};
use crate::cli::{Cli, ServeArgs};
use crate::config::{self, Config, Listen, ProcessEnv};
use crate::server::listen::{self, ServeOptions};
use crate::server::routes::{PublicInfo, Router};
use crate::{control, logging, privileges, supervisor, systemd, tls, Error};

/// Longest Unix socket path the kernel accepts (sun_path, minus the NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Serves until a stop is requested; returns once every worker has been
/// reaped and every socket removed.
pub async fn serve(cli: &Cli, args: &ServeArgs, config: Config) -> Result<(), Error> {
    let _log_guard = logging::init(config.logging);
    let drop_reports = tokio::spawn(logging::report_dropped_lines());
    let tls = load_tls(&config)?;
    prepare_runtime_dir(&config.runtime_dir)?;
    if let Some(run_as) = config.run_as.as_ref().filter(|r| r.switches()) {
        privileges::share_runtime_dir(&config.runtime_dir, run_as)
            .map_err(|e| Error::Startup(e.to_string()))?;
    }

    let control_path = control::socket_path(&config.runtime_dir, &config.name);
    check_socket_path(&config, &control_path)?;
    // Held until exit: a second instance of the same name stops here, before
    // it could remove the first one's sockets.
    let _instance_lock = lock_instance(&config)?;
    let control_listener = control::bind(&control_path, &config.name).await?;
    remove_stale_worker_sockets(&config.runtime_dir, &config.name);

    let listeners = open_listeners(&config, tls.as_ref()).await?;
    let url = listeners.url.clone();
    let started = Instant::now();
    // The ports are bound: what is left of root is what managing workers needs.
    if let Some(run_as) = config.run_as.as_ref().filter(|r| r.switches()) {
        privileges::drop_server_privileges(run_as).map_err(|e| Error::Startup(e.to_string()))?;
    }
    privileges::announce(config.run_as.as_ref());

    let (ready_tx, ready_rx) = oneshot::channel();
    let (apps, apps_task) =
        Apps::start(config.clone(), control_path.clone(), tls.clone(), ready_tx)?;
    let public = PublicInfo {
        instance: config.name.clone(),
        started,
        ports: listeners.ports(),
        enabled: config.public_status,
    };
    let router = Arc::new(Router::new(apps.route_table().clone(), public));

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (control_stop_tx, control_stop_rx) = watch::channel(false);
    let control_state = Arc::new(control::ControlState {
        name: config.name.clone(),
        listeners: listeners.urls(),
        tls: tls.clone(),
        started,
        apps: apps.clone(),
        stop: stop_tx.clone(),
    });
    let control_task = tokio::spawn(control::serve(
        control_listener,
        control_state,
        control_stop_rx,
    ));
    let max_connections =
        listen::connection_cap(config.limits.max_connections, total_workers(&config));
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
    if let Some((redirects, _)) = listeners.redirect {
        for redirect in redirects {
            tokio::spawn(listen::serve_redirect(
                redirect,
                listeners.port,
                stop_rx.clone(),
            ));
        }
    }

    banner(&config);
    say!("listening on {url}");
    if let Some(redirect_url) = &listeners.redirect_url {
        say!("redirecting {redirect_url} to {url}");
    }
    say!("control socket {}", control_path.display());
    let ready_apps = apps.clone();
    tokio::spawn(async move {
        if ready_rx.await.is_ok() {
            tracing::info!("all workers ready");
            systemd::ready(&systemd::status_of(&ready_apps).await);
        }
    });
    let heartbeat = tokio::spawn(systemd::heartbeat(apps.clone()));

    let reconfigure = Reconfigure {
        cli: cli.clone(),
        args: args.clone(),
        running: config.clone(),
        apps: apps.clone(),
        tls,
    };
    let mut signals = Signals::new()?;
    run_until_stopped(&mut signals, &mut stop_rx, &reconfigure).await?;
    heartbeat.abort();
    let graceful = async {
        drain(&router, config.shutdown_delay).await;
        tracing::info!("stopping: no new connections; finishing requests in flight");
        let _ = stop_tx.send(true);
        let _ = listener_task.await;
        apps.stop().await;
        let _ = apps_task.await;
        let _ = control_stop_tx.send(true);
        let _ = control_task.await;
    };
    let forced = tokio::select! {
        () = graceful => None,
        signal = signals.second() => Some(signal),
    };
    if let Some(signal) = forced {
        stop_at_once(signal).await;
    }
    supervisor::remove_stale(&control_path);
    supervisor::remove_stale(&loader_path(&config));
    drop_reports.abort();
    match forced {
        Some(signal) => Err(Error::StoppedAtOnce(signal)),
        None => {
            tracing::info!("stopped");
            Ok(())
        }
    }
}

/// What the server serves, for the person who started it.
fn banner(config: &Config) {
    let workers = |n: usize| format!("{n} worker{}", if n == 1 { "" } else { "s" });
    match &config.app {
        Some(app) => say!(
            "rip-server {}: serving {} ({}, {}) with {}, reload={}",
            env!("CARGO_PKG_VERSION"),
            config.name,
            app.entry.display(),
            app.kind.describe(config.js_runtime),
            workers(config.workers),
            config.reload.as_str(),
        ),
        None => say!(
            "rip-server {}: serving {} registered host{} (no default app: other hosts get 404)",
            env!("CARGO_PKG_VERSION"),
            config.registry.spec.hosts.len(),
            if config.registry.spec.hosts.len() == 1 {
                ""
            } else {
                "s"
            },
        ),
    }
    for (host, entry) in &config.registry.spec.hosts {
        say!(
            "  host {host} -> {} ({})",
            entry.app.entry.display(),
            entry.app.kind.describe(config.js_runtime)
        );
    }
    if !config.registry.spec.hosts.is_empty() {
        let source = &config.registry.source;
        say!(
            "host registry: {} ({})",
            source.path().display(),
            source.kind()
        );
    }
}

/// Workers across every app, to leave room for their descriptors.
fn total_workers(config: &Config) -> usize {
    let hosts = config.registry.spec.hosts.len();
    config.workers.saturating_mul(hosts + 1)
}

/// The signals a running server handles.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> io::Result<Self> {
        Ok(Signals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            hup: signal(SignalKind::hangup())?,
        })
    }

    /// The next SIGTERM or SIGINT, once a stop is under way.
    async fn second(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Term,
            _ = self.int.recv() => StopSignal::Int,
        }
    }
}

/// The signal that ended a stop early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    Term,
    Int,
}

impl StopSignal {
    /// The exit status a shell shows for a process killed by this signal
    /// (128 + its number): 143 for SIGTERM, 130 for SIGINT.
    pub fn exit_code(self) -> u8 {
        match self {
            StopSignal::Term => 143,
            StopSignal::Int => 130,
        }
    }
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
        })
    }
}

/// How long a stop at once waits for the killed workers to be reaped.
const REAP_LIMIT: Duration = Duration::from_secs(5);

/// A second SIGTERM or SIGINT during a stop: the operator will not wait for
/// requests in flight. Every worker is killed (its whole process group) and
/// reaped; the caller exits with [`StopSignal::exit_code`].
async fn stop_at_once(signal: StopSignal) {
    tracing::warn!(
        "second {signal} during the stop: killing every worker now, without finishing the \
         requests in flight; exiting with status {}",
        signal.exit_code()
    );
    supervisor::kill_all();
    if !supervisor::all_reaped(REAP_LIMIT).await {
        tracing::error!(
            "some killed workers were not reaped within {REAP_LIMIT:?}; they die with this \
             process (parent-death signal)"
        );
    }
}

/// Handles signals until SIGTERM or SIGINT arrives or a stop is requested:
/// SIGHUP re-reads the configuration and rolls every app.
async fn run_until_stopped(
    signals: &mut Signals,
    stop: &mut watch::Receiver<bool>,
    reconfigure: &Reconfigure,
) -> io::Result<()> {
    loop {
        tokio::select! {
            _ = signals.term.recv() => {
                tracing::info!("SIGTERM received; a second one stops at once");
                return Ok(());
            }
            _ = signals.int.recv() => {
                tracing::info!("SIGINT received; a second one stops at once");
                return Ok(());
            }
            _ = stop.wait_for(|stop| *stop) => return Ok(()),
            _ = signals.hup.recv() => {
                tracing::info!("SIGHUP received: re-reading the configuration and rolling the workers");
                systemd::reloading("reloading: re-reading the configuration and rolling the workers");
                let rolls = reconfigure.apply().await;
                tokio::spawn(systemd::report_reload(rolls, reconfigure.apps.clone()));
            }
        }
    }
}

/// What SIGHUP needs to re-read the configuration and apply it.
struct Reconfigure {
    cli: Cli,
    args: ServeArgs,
    running: Config,
    apps: AppsHandle,
    tls: Option<Arc<tls::Tls>>,
}

impl Reconfigure {
    /// Rebuilds the config (flags > env > file > defaults, as at start) and
    /// applies what can change live: apps and hosts, workers, restart
    /// policy, reload mode, queue and timeouts, certificates. A bad config
    /// keeps the running one. Answers with the rolls under way.
    async fn apply(&self) -> Result<Vec<crate::apps::Rolling>, String> {
        let config = match Config::build(&self.cli, &self.args, &ProcessEnv) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!(error = %e, "config reload failed; keeping the running configuration and workers");
                return Err(e.to_string());
            }
        };
        if config.listen != self.running.listen
            || config.bind != self.running.bind
            || config.name != self.running.name
        {
            tracing::warn!(
                "the listener and instance name change only on restart; keeping the running ones"
            );
        }
        if let (Some(tls), Listen::Https(https)) = (&self.tls, &config.listen) {
            reload_tls(tls, Some(https.tls.clone()));
        }
        self.apps.reconfigure(config).await.inspect_err(|e| {
            tracing::error!(error = %e, "config reload failed; keeping the running configuration and workers");
        })
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
    let mut names: Vec<String> = tls::auto::LOCAL_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    let hosts = &config.registry.spec.hosts;
    names.extend(hosts.keys().map(ToString::to_string));
    let certs = hosts
        .iter()
        .filter_map(|(host, entry)| {
            entry.tls.clone().map(|pair| tls::HostCert {
                host: host.to_string(),
                pair,
            })
        })
        .collect();
    let (tls, loaded) = tls::Tls::load(https.tls.clone(), tls::auto::state_dir(), names, certs)?;
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
    /// One per `--bind` address (one dual-stack socket by default).
    main: Vec<tokio::net::TcpListener>,
    port: u16,
    url: String,
    transport: listen::Transport,
    redirect: Option<(Vec<tokio::net::TcpListener>, u16)>,
    redirect_url: Option<String>,
}

impl Listeners {
    /// `(scheme, port)` of each listener, for the public `/status`.
    fn ports(&self) -> Vec<(&'static str, u16)> {
        let main = match self.transport {
            listen::Transport::Plain => "http",
            listen::Transport::Tls { .. } => "https",
        };
        std::iter::once((main, self.port))
            .chain(self.redirect.as_ref().map(|(_, port)| ("http", *port)))
            .collect()
    }

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
    if !config.bind.is_empty() && (passed_main.is_some() || passed_redirect.is_some()) {
        say!(
            "--bind applies only to listeners rip-server binds itself; systemd passed sockets, \
             so their addresses (ListenStream=) decide"
        );
    }
    let bind = config.bind.as_slice();
    match (&config.listen, tls) {
        (Listen::Https(https), Some(tls)) => {
            let main = match passed_main {
                Some(listener) => vec![listener],
                None => listen::bind(https.port, bind).await?,
            };
            let port = first_port(&main)?;
            let url = match port {
                443 => "https://localhost".to_string(),
                port => format!("https://localhost:{port}"),
            };
            let redirect = match (https.redirect, passed_redirect) {
                (_, Some(listener)) => {
                    let bound = listener.local_addr()?.port();
                    Some((vec![listener], bound))
                }
                (config::Redirect::Off, None) => None,
                (config::Redirect::From(from), None) => {
                    match listen::bind(config::PortChoice::Fixed(from), bind).await {
                        Ok(listeners) => {
                            let bound = first_port(&listeners)?;
                            Some((listeners, bound))
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
                Some(listener) => vec![listener],
                None => listen::bind(*choice, bind).await?,
            };
            let port = first_port(&main)?;
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

/// The port a set of listeners shares (every one takes the same).
fn first_port(listeners: &[tokio::net::TcpListener]) -> io::Result<u16> {
    match listeners.first() {
        Some(listener) => Ok(listener.local_addr()?.port()),
        None => Err(io::Error::other("no listener was bound")),
    }
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
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
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
