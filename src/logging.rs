//! Log setup: human lines by default, JSON lines with `--json-logging`.
//!
//! Server events, worker output (target `worker`) and the access log
//! (target `access`) share one subscriber, written by a background thread so
//! a slow terminal or pipe never stalls the request path. `RIP_LOG` takes a
//! `tracing` filter (default `info`); `--no-access-log` turns the `access`
//! target off entirely. Request values in a human line are quoted and
//! escaped ([`Field`]); query strings stay out of the access log unless
//! `--log-query`.
//!
//! The writer is lossy: when stdout is not being read (a stopped pager, a
//! pipe nobody drains, a stuck log shipper) and [`BUFFERED_LINES`] are
//! waiting, further lines are dropped rather than blocking requests,
//! workers or a stop. Dropped lines are counted ([`dropped_lines`], the
//! `rip_log_lines_dropped_total` metric) and [`report_dropped_lines`] says
//! how many once the writer keeps up again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::Logging;

/// Lines waiting for stdout before new ones are dropped: a burst (a boot,
/// a crash's stack trace) fits, and memory stays bounded.
pub const BUFFERED_LINES: usize = 8192;

/// How long a stop waits for waiting lines to reach stdout.
const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The writer's count of dropped lines, once [`init`] ran.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// The log writer, for lines rendered here rather than by the subscriber
/// ([`write_info_line`]); set only when lines are human and uncoloured.
static PLAIN_LINES: OnceLock<NonBlocking> = OnceLock::new();

/// Human lines (not JSON): [`Field`] quotes and escapes what it writes.
static HUMAN: AtomicBool = AtomicBool::new(true);

/// `--log-query`: the access log keeps query strings (tokens and other
/// secrets ride in them, so by default it does not).
static LOG_QUERY: AtomicBool = AtomicBool::new(false);

/// Whether the access log keeps query strings (`--log-query`).
pub fn log_query() -> bool {
    LOG_QUERY.load(Ordering::Relaxed)
}

/// Writes an `INFO` line of `target` whose fields `render` appends, as the
/// subscriber's human format would (`2026-12-03T03:19:54.150300Z  INFO
/// target: key=value ...`), straight to the log writer: for the access log,
/// a line per request, where the subscriber's per-field visitors, message
/// escaping and number formatting cost more than proxying the request.
/// `render` must quote what it takes from a request ([`Field`]). Returns
/// false, writing nothing, when lines are JSON or coloured: the caller then
/// emits a `tracing` event. Whether `target` is enabled (`RIP_LOG`,
/// `--no-access-log`) is the caller's to check.
pub fn write_info_line(target: &str, render: impl FnOnce(&mut String)) -> bool {
    use std::io::Write as _;
    let Some(writer) = PLAIN_LINES.get() else {
        return false;
    };
    let now = time::OffsetDateTime::now_utc();
    let mut line = String::with_capacity(256);
    push_padded(&mut line, u64::try_from(now.year()).unwrap_or(0), 4);
    line.push('-');
    push_padded(&mut line, u8::from(now.month()).into(), 2);
    line.push('-');
    push_padded(&mut line, now.day().into(), 2);
    line.push('T');
    push_padded(&mut line, now.hour().into(), 2);
    line.push(':');
    push_padded(&mut line, now.minute().into(), 2);
    line.push(':');
    push_padded(&mut line, now.second().into(), 2);
    line.push('.');
    push_padded(&mut line, now.microsecond().into(), 6);
    line.push_str("Z  INFO ");
    line.push_str(target);
    line.push_str(": ");
    render(&mut line);
    line.push('\n');
    // One write, one queued line (a full queue drops and counts it).
    let _ = writer.clone().write_all(line.as_bytes());
    true
}

/// Appends `n` in decimal, with leading zeros up to `width` digits.
pub fn push_padded(out: &mut String, n: u64, width: usize) {
    let mut digits = itoa::Buffer::new();
    let digits = digits.format(n);
    for _ in digits.len()..width {
        out.push('0');
    }
    out.push_str(digits);
}

/// A value from a request (a path, a `Host`) written as a log field. In
/// human lines, where fields are `key=value` separated by spaces, a value
/// that is not plain visible ASCII is quoted, with `"`, `\`, control and
/// non-ASCII characters escaped: a client cannot forge a field or a line.
/// JSON lines escape by themselves, so there it is written as it is.
pub struct Field<'a>(pub &'a str);

impl std::fmt::Display for Field<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let plain = |c: char| c.is_ascii_graphic() && c != '"' && c != '\\';
        if !HUMAN.load(Ordering::Relaxed) || (!self.0.is_empty() && self.0.chars().all(plain)) {
            return f.write_str(self.0);
        }
        f.write_str("\"")?;
        for c in self.0.chars() {
            match c {
                '"' => f.write_str("\\\"")?,
                '\\' => f.write_str("\\\\")?,
                '\t' => f.write_str("\\t")?,
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                ' ' => f.write_str(" ")?,
                c if plain(c) => write!(f, "{c}")?,
                c if c.is_ascii() => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
        }
        f.write_str("\"")
    }
}

/// Log lines dropped so far because stdout was not keeping up.
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// Colour only for a person at a terminal: a log written to a file or a
/// pipe (journald, a log shipper) gets plain text, and `NO_COLOR` turns it
/// off everywhere (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal;
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
}

/// Keeps the log writer alive; dropping it flushes the waiting lines, for
/// at most [`FLUSH_LIMIT`]: a stdout nobody reads must not hold up exit.
pub struct LogGuard(Option<WorkerGuard>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(guard) = self.0.take() else { return };
        // The writer's own guard waits for its thread, and prints (blocking)
        // when it cannot reach it: drop it on a thread of its own.
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let flush = std::thread::Builder::new()
            .name("log-flush".to_string())
            .spawn(move || {
                drop(guard);
                let _ = done_tx.send(());
            });
        if flush.is_ok() {
            let _ = done_rx.recv_timeout(FLUSH_LIMIT);
        }
    }
}

/// Installs the global subscriber; keep the guard alive until exit so
/// buffered lines are flushed.
pub fn init(logging: Logging) -> LogGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        // The writer thread flushes once it has written every waiting line:
        // under load, one write for many lines instead of one per line.
        .finish(std::io::BufWriter::with_capacity(
            64 * 1024,
            std::io::stdout(),
        ));
    let _ = DROPPED.set(writer.error_counter());
    let colour = colour();
    if !logging.json && !colour {
        let _ = PLAIN_LINES.set(writer.clone());
    }
    HUMAN.store(!logging.json, Ordering::Relaxed);
    LOG_QUERY.store(logging.query, Ordering::Relaxed);
    let mut filter = EnvFilter::try_from_env("RIP_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    if !logging.access_log {
        if let Ok(directive) = "access=off".parse() {
            filter = filter.add_directive(directive);
        }
    }
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(writer);
    let installed = if logging.json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.compact().try_init()
    };
    if let Err(e) = installed {
        eprintln!("rip-server: logging was already set up: {e}");
    }
    LogGuard(Some(guard))
}

/// Says, once stdout keeps up again, how many lines were dropped while it
/// did not. "Keeps up" is read as: no line dropped for a whole interval.
/// The warning can itself be dropped (stdout still stalled); that counts
/// as one more dropped line and the next quiet interval tries again.
pub async fn report_dropped_lines() {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seen, mut reported) = (0, 0);
    loop {
        tick.tick().await;
        let now = dropped_lines();
        let quiet = now == seen;
        seen = now;
        if quiet && now > reported {
            tracing::warn!(
                dropped = now - reported,
                "{} log lines dropped because stdout was not being read; whatever reads \
                 this server's output (terminal, pipe, journald, log shipper) stalled: \
                 keep it reading (rip_log_lines_dropped_total counts every drop)",
                now - reported
            );
            reported = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_field_cannot_forge_a_field_or_a_line() {
        assert_eq!(Field("/ping").to_string(), "/ping");
        assert_eq!(Field("").to_string(), "\"\"");
        assert_eq!(
            Field("a b=\"c\"\\\t\n\u{1}\u{7f}\u{202e}").to_string(),
            "\"a b=\\\"c\\\"\\\\\\t\\n\\x01\\x7f\\u{202e}\""
        );
    }
}
