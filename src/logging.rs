//! Log setup: human lines by default, JSON lines with `--json-logging`.
//!
//! Server events, worker output (target `worker`) and the access log
//! (target `access`) share one subscriber, written by a background thread so
//! a slow terminal or pipe never stalls the request path. `RIP_LOG` takes a
//! `tracing` filter (default `info`); `--no-access-log` turns the `access`
//! target off entirely.

use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

use crate::config::Logging;

/// Colour only for a person at a terminal: a log written to a file or a
/// pipe (journald, a log shipper) gets plain text, and `NO_COLOR` turns it
/// off everywhere (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Installs the global subscriber; keep the guard alive until exit so
/// buffered lines are flushed.
pub fn init(logging: Logging) -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let mut filter = EnvFilter::try_from_env("RIP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if !logging.access_log {
        if let Ok(directive) = "access=off".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour())
        .with_writer(writer);
    let installed = if logging.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    if let Err(e) = installed {
        eprintln!("rip-server: logging was already set up: {e}");
    }
    guard
}
