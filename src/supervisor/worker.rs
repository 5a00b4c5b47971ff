//! One worker process: how it is started, watched, signalled and proven ready.
//!
//! [`Spawner::spawn`] starts the app's entry with the worker protocol's
//! environment (docs/worker-protocol.md) in its own process group, with a
//! parent-death signal so a `SIGKILL`ed server leaves no orphan workers; it
//! is forked on the server's one forking thread ([`forker`]). What is the
//! server's alone stays with it: systemd's variables (its notify socket, its
//! listening sockets, its journal stream) are scrubbed from the worker's
//! environment, and no descriptor above stderr survives exec. Each child
//! gets one task that owns its `Child`: it reaps the child and reports the
//! exit, and it delivers signals only while the child is unreaped, so a
//! signal can never reach a recycled pid. When the child exits, what it
//! left running in its process group is killed before it is reaped. stdout
//! and stderr are forwarded to the server's log line by line, prefixed with
//! the app and worker id, by a task of their own that always reads on: the
//! log writer drops rather than waits (`logging.rs`), so a stalled stdout
//! never blocks a worker's writes.
//!
//! [`boot`] polls the worker's `/ready` probe (woken early by a `join`) until
//! it answers 200 or the boot deadline passes; the probe's connection becomes
//! the worker's persistent upstream connection.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use nix::libc;
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::forker;
use crate::cli::ReloadMode;
use crate::server::pool::{Generation, WorkerId};
use crate::server::upstream::{DialError, Upstream};

/// What a worker's tasks tell the supervisor.
#[derive(Debug)]
pub enum Event {
    Booted {
        id: WorkerId,
        result: Result<Box<Upstream>, BootError>,
    },
    Exited {
        id: WorkerId,
        status: std::io::Result<ExitStatus>,
    },
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("socket", &self.socket())
            .finish()
    }
}

/// Why a worker did not become ready.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(
        "did not answer its readiness probe (GET /ready) within {timeout:?}{}",
        last_error.as_ref().map(|e| format!("; last attempt: {e}")).unwrap_or_default()
    )]
    Deadline {
        timeout: Duration,
        last_error: Option<DialError>,
    },
}

/// Everything needed to start workers of one app.
#[derive(Debug, Clone)]
pub struct Spawner {
    /// The server instance's name: worker sockets are `<name>.w<id>.sock`.
    pub name: String,
    /// The app's name, for the log lines of its workers.
    pub app_name: String,
    pub program: OsString,
    pub args: Vec<OsString>,
    pub app_dir: PathBuf,
    pub entry: PathBuf,
    pub reload: ReloadMode,
    pub runtime_dir: PathBuf,
    pub control_socket: PathBuf,
    /// Run workers as this user and group (`--user`/`--group`).
    pub run_as: Option<(nix::unistd::Uid, nix::unistd::Gid)>,
}

/// Set once, by [`kill_all`]: every worker is killed now.
static KILL_ALL: LazyLock<watch::Sender<bool>> = LazyLock::new(|| watch::Sender::new(false));

/// Workers started and not yet reaped, across every app.
static UNREAPED: AtomicUsize = AtomicUsize::new(0);

/// Kills every worker of every app, and any started from now on, with
/// `SIGKILL` to its process group (a stop that must not wait: a second
/// SIGTERM or SIGINT). Each worker's own task delivers it, so it never
/// reaches a recycled pid.
pub fn kill_all() {
    KILL_ALL.send_replace(true);
}

/// Waits until every worker started so far has been reaped, at most
/// `limit`; says whether they all were.
pub async fn all_reaped(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while UNREAPED.load(Ordering::Acquire) > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    true
}

/// Returns once [`kill_all`] was called.
async fn killed_all(kill: &mut watch::Receiver<bool>) {
    // The guard it answers is not `Send`: drop it here, not in a select.
    let gone = kill.wait_for(|kill| *kill).await.is_err();
    if gone {
        // The switch lives as long as the process; this is never reached.
        std::future::pending::<()>().await;
    }
}

/// The supervisor's grip on a running child.
#[derive(Debug)]
pub struct ProcessHandle {
    pub pid: u32,
    pub socket: PathBuf,
    signals: mpsc::Sender<Signal>,
}

impl ProcessHandle {
    /// Sends `signal` to the worker's process group (if it is still running).
    pub fn signal(&self, signal: Signal) {
        // Capacity is ample for the handful of signals a worker ever gets;
        // a full or closed channel means the child is already gone.
        let _ = self.signals.try_send(signal);
    }
}

impl Spawner {
    /// The socket a worker binds.
    pub fn socket_path(&self, id: WorkerId) -> PathBuf {
        self.runtime_dir.join(format!("{}.w{id}.sock", self.name))
    }

    /// Starts worker `id` of `generation`; its exit is reported on `events`.
    pub fn spawn(
        &self,
        id: WorkerId,
        generation: Generation,
        events: mpsc::Sender<Event>,
    ) -> std::io::Result<ProcessHandle> {
        let socket = self.socket_path(id);
        remove_stale(&socket);
        let mut command = Command::new(&self.program);
        command
            .args(&self.args)
            .current_dir(&self.app_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("RIP_SOCKET", &socket)
            .env("RIP_WORKER_ID", id.to_string())
            .env("RIP_APP_DIR", &self.app_dir)
            .env("RIP_ENTRY", &self.entry)
            .env("RIP_RELOAD", self.reload.as_str())
            .env("RIP_CONTROL", &self.control_socket)
            .env("RIP_VERSION", generation.to_string())
            // Its own group: signals reach the worker and its children, and a
            // Ctrl-C in the terminal reaches only the server, which drains.
            .process_group(0);
        for var in SERVER_ONLY_VARS {
            command.env_remove(var);
        }
        let parent = std::process::id();
        let run_as = self.run_as;
        // SAFETY: the closure runs between fork and exec and calls only
        // async-signal-safe functions (close_range, getrlimit, fcntl, umask,
        // setgroups, setgid, setuid, prctl, getppid, kill).
        unsafe {
            command.pre_exec(move || {
                cloexec_above_stderr();
                if let Some((uid, gid)) = run_as {
                    // Sockets group-writable: the server reaches them through the group.
                    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o007));
                    nix::unistd::setgroups(&[gid])?;
                    nix::unistd::setgid(gid)?;
                    nix::unistd::setuid(uid)?;
                }
                // After the user switch: a change of credentials clears it.
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                // The server may have died before prctl took effect.
                if nix::unistd::getppid().as_raw() as u32 != parent {
                    let _ = nix::sys::signal::kill(Pid::this(), Signal::SIGKILL);
                }
                Ok(())
            });
        }
        let mut child = forker::spawn(command).map_err(|e| {
            std::io::Error::new(
                e.kind(),
                format!("cannot start {}: {e}", Path::new(&self.program).display()),
            )
        })?;
        UNREAPED.fetch_add(1, Ordering::AcqRel);
        let pid = child.id().unwrap_or(0);
        let label = format!("{} w{id}", self.app_name);
        if let Some(out) = child.stdout.take() {
            tokio::spawn(forward_lines(out, label.clone(), Stream::Stdout));
        }
        if let Some(err) = child.stderr.take() {
            tokio::spawn(forward_lines(err, label, Stream::Stderr));
        }
        let (signals, mut inbox) = mpsc::channel::<Signal>(8);
        let mut kill = KILL_ALL.subscribe();
        tokio::spawn(async move {
            // `id()` is None once reaped: never signal a recycled pid.
            let signal_group = |child: &tokio::process::Child, signal| {
                if let Some(pid) = child.id() {
                    let _ = nix::sys::signal::killpg(Pid::from_raw(pid as i32), signal);
                }
            };
            let mut killed = false;
            let mut exit = forker::ExitWatch::new(pid);
            loop {
                tokio::select! {
                    exited = exit.exited(), if exit.is_armed() => {
                        if exited {
                            // Unreaped, so its pid still names its group.
                            forker::end_group(pid);
                        }
                        exit = forker::ExitWatch::disarmed();
                    }
                    status = child.wait(), if !exit.is_armed() => {
                        UNREAPED.fetch_sub(1, Ordering::AcqRel);
                        let _ = events.send(Event::Exited { id, status }).await;
                        break;
                    }
                    Some(signal) = inbox.recv() => signal_group(&child, signal),
                    () = killed_all(&mut kill), if !killed => {
                        killed = true;
                        signal_group(&child, Signal::SIGKILL);
                    }
                }
            }
        });
        Ok(ProcessHandle {
            pid,
            socket,
            signals,
        })
    }
}

/// Variables that describe the server's own setup and mean something else,
/// or nothing, in a worker: systemd's (a worker that notified systemd or
/// took its sockets would confuse it) and `JOURNAL_STREAM` (the worker's
/// stderr is a pipe to the server, not the journal).
const SERVER_ONLY_VARS: [&str; 7] = [
    crate::systemd::SYSTEMD_VARS[0],
    crate::systemd::SYSTEMD_VARS[1],
    crate::systemd::SYSTEMD_VARS[2],
    crate::systemd::SYSTEMD_VARS[3],
    crate::systemd::SYSTEMD_VARS[4],
    crate::systemd::SYSTEMD_VARS[5],
    "JOURNAL_STREAM",
];

/// Marks every descriptor above stderr close-on-exec, so a worker starts
/// with stdin, stdout and stderr only: not the listening sockets, the
/// control socket, client connections or anything the server inherited
/// without `FD_CLOEXEC`. (Closing them here instead would also close the
/// pipe through which a failed exec is reported.) Runs between fork and
/// exec: async-signal-safe calls only.
fn cloexec_above_stderr() {
    // SAFETY: a system call on integers; it touches no memory.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    } == 0;
    if marked {
        return;
    }
    // Before Linux 5.11: one fcntl per descriptor the limit allows.
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
        .min(libc::c_int::MAX as u64) as libc::c_int;
    for fd in 3..limit {
        // SAFETY: as above; an fd that is not open answers EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
}

/// A process's resident memory in bytes, from `/proc/PID/statm` (one small
/// read; `None` if the process is gone).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())
        .unwrap_or(4096);
    Some(pages * page)
}

/// Removes a socket file left by an earlier run (ignoring "not found").
pub fn remove_stale(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(path = %path.display(), error = %e, "cannot remove stale socket");
        }
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Longest worker log line kept; the rest of a longer line is dropped.
const MAX_LINE: usize = 16 * 1024;

/// Forwards a worker's output to the log, line by line. Memory is bounded
/// whatever the worker writes: a line longer than [`MAX_LINE`] is cut there
/// (and says so), and the rest of it is read and dropped.
async fn forward_lines(mut pipe: impl AsyncRead + Unpin, label: String, stream: Stream) {
    let mut lines = LineCutter::default();
    let mut chunk = vec![0u8; 8 * 1024];
    loop {
        let n = match pipe.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        lines.feed(&chunk[..n], |line| emit(&label, stream, line));
    }
    lines.finish(|line| emit(&label, stream, line));
}

fn emit(label: &str, stream: Stream, line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    let text = text.trim_end();
    match stream {
        Stream::Stdout => tracing::info!(target: "worker", "[{label}] {text}"),
        Stream::Stderr => tracing::warn!(target: "worker", "[{label}] {text}"),
    }
}

/// Splits a byte stream into lines of at most [`MAX_LINE`] bytes.
#[derive(Default)]
struct LineCutter {
    line: Vec<u8>,
    /// The current line was cut: drop bytes until its end.
    skipping: bool,
}

const CUT_MARK: &[u8] = b" [line cut at 16384 bytes]";

impl LineCutter {
    fn feed(&mut self, mut bytes: &[u8], mut emit: impl FnMut(&[u8])) {
        while !bytes.is_empty() {
            let newline = bytes.iter().position(|&b| b == b'\n');
            let (part, rest, ends) = match newline {
                Some(i) => (&bytes[..i], &bytes[i + 1..], true),
                None => (bytes, &[][..], false),
            };
            bytes = rest;
            if !self.skipping {
                let room = MAX_LINE - self.line.len();
                self.line.extend_from_slice(&part[..part.len().min(room)]);
                if part.len() > room {
                    self.line.extend_from_slice(CUT_MARK);
                    emit(&self.line);
                    self.line.clear();
                    self.skipping = true;
                }
            }
            if ends {
                if !self.skipping {
                    emit(&self.line);
                }
                self.line.clear();
                self.skipping = false;
            }
        }
    }

    fn finish(&mut self, mut emit: impl FnMut(&[u8])) {
        if !self.skipping && !self.line.is_empty() {
            emit(&self.line);
        }
    }
}

/// Polls a new worker until its app is loaded, or the deadline passes.
pub async fn boot(
    id: WorkerId,
    socket: PathBuf,
    deadline: Instant,
    joined: Arc<Notify>,
    connect_timeout: Duration,
    boot_timeout: Duration,
) -> Result<Box<Upstream>, BootError> {
    let mut upstream = Box::new(Upstream::new(&socket, id));
    let mut delay = Duration::from_millis(5);
    let mut last_error = None;
    while Instant::now() < deadline {
        if socket.exists() {
            let probe_timeout = connect_timeout.max(Duration::from_secs(1));
            match upstream.probe(probe_timeout).await {
                Ok(true) => return Ok(upstream),
                Ok(false) => last_error = None,
                Err(e) => last_error = Some(e),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = joined.notified() => {}
            () = tokio::time::sleep_until(deadline) => break,
        }
        delay = (delay * 2).min(Duration::from_millis(100));
    }
    Err(BootError::Deadline {
        timeout: boot_timeout,
        last_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut cutter = LineCutter::default();
        for piece in pieces {
            cutter.feed(piece, |line| out.push(line.to_vec()));
        }
        cutter.finish(|line| out.push(line.to_vec()));
        out
    }

    #[test]
    fn lines_are_split_and_cut_at_the_limit() {
        assert_eq!(
            cut(&[b"a\nb", b"c\n", b"d"]),
            vec![b"a".to_vec(), b"bc".to_vec(), b"d".to_vec()]
        );
        let long = vec![b'x'; MAX_LINE * 3];
        let out = cut(&[&long, b"tail\nnext\n"]);
        assert_eq!(out.len(), 2, "the rest of a cut line is dropped");
        assert_eq!(out[0].len(), MAX_LINE + CUT_MARK.len());
        assert!(out[0].ends_with(CUT_MARK));
        assert_eq!(out[1], b"next");
    }
}
