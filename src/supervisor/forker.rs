//! Where worker processes are forked, and how what they leave behind ends.
//!
//! A worker's parent-death signal (`PR_SET_PDEATHSIG`, set in
//! [`Spawner::spawn`](super::Spawner::spawn)) fires when the *thread* that
//! forked it exits, not when the server does. tokio retires threads: a
//! blocking-pool thread idle past its keep-alive, a runtime thread handed off
//! by `block_in_place`. A worker forked on such a thread would be killed for
//! nothing, mid-request. So every worker is forked on one dedicated thread
//! that lives as long as the server ([`spawn`]); the `Child` it returns is
//! then owned and reaped by a task like any other.
//!
//! Each worker leads its own process group, so a signal to it reaches the
//! processes the app started too. When the leader exits, whatever it left
//! in its group (a child that ignores SIGTERM, say) is killed before the
//! leader is reaped ([`ExitWatch`]): until then the leader's pid, which is
//! the group's id, cannot be reused, so the kill cannot reach a stranger.
//! A child that left the group (`setsid`, Node's `detached: true`) is the
//! app's own business; so is what is left when the server itself is
//! `SIGKILL`ed (the parent-death signal reaches only the worker; under
//! systemd, the unit's cgroup ends the rest).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::mpsc;
use std::sync::OnceLock;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::{Child, Command};
use tokio::runtime::Handle;

/// A command to fork, and where to send the child.
struct Request {
    command: Command,
    /// The runtime that will own the child (its reaper and pipes).
    runtime: Handle,
    reply: mpsc::SyncSender<io::Result<Child>>,
}

/// Forks `command` on the server's forking thread; the child belongs to the
/// caller's tokio runtime. Blocks the caller for the length of a fork.
pub fn spawn(mut command: Command) -> io::Result<Child> {
    static FORKER: OnceLock<Option<mpsc::Sender<Request>>> = OnceLock::new();
    let runtime = Handle::try_current()
        .map_err(|e| io::Error::other(format!("workers are started from the runtime: {e}")))?;
    let Some(forker) = FORKER.get_or_init(start_forker) else {
        // No thread could be started: forking here still works, with the
        // risk the module docs describe.
        return command.spawn();
    };
    let (reply, answer) = mpsc::sync_channel(1);
    let request = Request {
        command,
        runtime,
        reply,
    };
    forker
        .send(request)
        .map_err(|_| io::Error::other("the worker forking thread has stopped"))?;
    answer
        .recv()
        .map_err(|_| io::Error::other("the worker forking thread has stopped"))?
}

/// Starts the forking thread; it runs until the process exits.
fn start_forker() -> Option<mpsc::Sender<Request>> {
    let (requests, inbox) = mpsc::channel::<Request>();
    let started = std::thread::Builder::new()
        .name("rip-forker".into())
        .spawn(move || {
            for mut request in inbox {
                let _runtime = request.runtime.enter();
                let _ = request.reply.send(request.command.spawn());
            }
        });
    match started {
        Ok(_) => Some(requests),
        Err(e) => {
            tracing::error!(
                error = %e,
                "cannot start the worker forking thread; forking workers on runtime threads instead"
            );
            None
        }
    }
}

/// Tells when a worker has exited but is not reaped yet (a pidfd, Linux
/// 5.3+). Without one, [`ExitWatch::exited`] never resolves, and the
/// worker's group is not cleaned up after it.
pub struct ExitWatch(Option<AsyncFd<OwnedFd>>);

impl ExitWatch {
    pub fn new(pid: u32) -> ExitWatch {
        let watch = pidfd(pid).and_then(|fd| {
            // SAFETY: an OwnedFd is open and keeps the same descriptor until
            // the AsyncFd that owns it is dropped.
            unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.ok()
        });
        ExitWatch(watch)
    }

    /// A watch that never fires (its notice has come, or cannot).
    pub fn disarmed() -> ExitWatch {
        ExitWatch(None)
    }

    /// Whether a notice can come at all.
    pub fn is_armed(&self) -> bool {
        self.0.is_some()
    }

    /// Resolves once the process has exited (it is then a zombie until
    /// reaped); `false` if the watch failed.
    pub async fn exited(&self) -> bool {
        match &self.0 {
            Some(fd) => fd.readable().await.is_ok(),
            None => std::future::pending().await,
        }
    }
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    let pid = nix::libc::pid_t::try_from(pid).ok()?;
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor
    // or -1; it touches no memory of ours.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: `fd` was just returned to us and nothing else owns it.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Kills every process left in the group `leader` led. Call only while the
/// leader is unreaped, so the group id still names its group.
pub fn end_group(leader: u32) {
    let Ok(pgid) = i32::try_from(leader) else {
        return;
    };
    match nix::sys::signal::killpg(Pid::from_raw(pgid), Signal::SIGKILL) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(e) => tracing::warn!(
            group = leader,
            error = %e,
            "cannot kill what the worker left running in its process group"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    /// The fork must not happen on the thread that asks for it: here a
    /// blocking-pool thread with a 1 ms keep-alive, which exits right
    /// after. Had the child been forked there, its parent-death signal
    /// would kill it as that thread exits.
    #[test]
    fn a_worker_outlives_the_runtime_thread_that_started_it() {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_keep_alive(Duration::from_millis(1))
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (tid, child) = tokio::task::spawn_blocking(|| {
                let mut command = Command::new("sleep");
                command.arg("1000").kill_on_drop(true);
                // SAFETY: prctl is async-signal-safe.
                unsafe {
                    command.pre_exec(|| {
                        nix::sys::prctl::set_pdeathsig(Signal::SIGKILL)?;
                        Ok(())
                    });
                }
                (nix::unistd::gettid(), spawn(command))
            })
            .await
            .unwrap();
            let mut child = child.unwrap();
            let task = format!("/proc/self/task/{tid}");
            let deadline = Instant::now() + Duration::from_secs(30);
            while Path::new(&task).exists() {
                assert!(
                    Instant::now() < deadline,
                    "the blocking thread never exited"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The parent-death signal is sent as the thread exits, and a
            // SIGKILLed child is a zombie at once: had it come, it shows
            // well within this bound.
            let watch_until = Instant::now() + Duration::from_millis(500);
            while Instant::now() < watch_until {
                assert!(
                    child.try_wait().unwrap().is_none(),
                    "the worker died with the thread that asked for it"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            child.kill().await.unwrap();
        });
    }
}
