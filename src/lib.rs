//! rip-server: a per-worker-socket application server.
//!
//! One process owns the public listeners, supervises the worker processes of
//! one or many apps (chosen by `Host` and TLS SNI from the host registry),
//! and forwards each request to one idle worker over that worker's own Unix
//! socket. Each worker handles one request at a time; the most recently
//! freed worker goes next (LIFO) and the rest of the requests wait in a
//! bounded FIFO queue.
//!
//! # Layout
//!
//! Data flows one way: listener → edge → route table → app → pool → worker.
//!
//! - [`cli`]: the command line as typed: clap definitions and the pure parsers
//!   for the `w:` / `r:` / `http:` tokens and the commands.
//! - [`config`]: flags over environment over config file over defaults,
//!   validated into a [`config::Config`].
//! - [`app`]: resolving an app path to its entry and loader.
//! - [`registry`]: the host registry (file or `[hosts]`), host names, edits.
//! - [`apps`]: the apps a server runs (one supervisor + pool + proxy each),
//!   the task that changes them, and the route table.
//! - [`serve`](mod@serve): wiring it all together until a stop.
//! - [`commands`]: `status`, `reload`, `stop`, `add`, `remove`, `list`.
//! - [`privileges`]: workers as `--user`; what the server keeps.
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
//! [`serve()`] runs until SIGTERM, SIGINT or `rip-server stop`.

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
pub mod apps;
pub mod check;
pub mod cli;
pub mod commands;
pub mod config;
pub mod control;
pub mod logging;
pub mod privileges;
pub mod registry;
pub mod serve;
pub mod server;
pub mod supervisor;
pub mod systemd;
pub mod tls;
pub mod worker_kit;

pub use serve::serve;
pub(crate) use serve::{check_socket_path, write_atomically};

use std::io;
use std::path::PathBuf;

use cli::Command;
use config::ConfigError;

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
    #[error(transparent)]
    Registry(#[from] registry::RegistryError),
    #[error(
        "the hosts are declared in {0} ([hosts]), which the commands do not edit: change \
         that file and reload the server (SIGHUP; systemctl reload rip-server)"
    )]
    Declarative(PathBuf),
    #[error("host '{0}' is not registered (rip-server list shows the registered hosts)")]
    NotRegistered(String),
    #[error("--cert and --key come as one pair for 'add'")]
    AddCertPair,
    #[error("{0}")]
    Startup(String),
    /// A second SIGTERM or SIGINT cut a stop short (workers killed).
    #[error("stopped at once by a second {0}: workers killed, requests in flight cut")]
    StoppedAtOnce(serve::StopSignal),
    #[error("the instance answered {status}: {body}")]
    Refused {
        status: http::StatusCode,
        body: String,
    },
}

/// Runs a command other than serving (see [`commands`]).
pub async fn control_command(cli: &cli::Cli, command: Command) -> Result<(), Error> {
    commands::run(cli, command).await
}
