//! systemd integration, host-level: each test acts as systemd for the real
//! binary. It owns a notify datagram socket (`NOTIFY_SOCKET`), and where
//! socket activation is tested it binds the listening sockets itself and
//! passes them as fd 3 onwards with `LISTEN_FDS`, `LISTEN_FDNAMES` and a
//! `LISTEN_PID` equal to the child's pid (set by a `sh -c 'exec'` wrapper,
//! which keeps its pid across the exec).
//!
//! These are the host-level twins of `vm-tests/`: the notify-reload
//! handshake behind `systemctl reload`, a switch to a new app version under
//! load (the NixOS specialisation switch), and a restart of the server while
//! the sockets stay open (socket activation). `cluster.rs` has the load
//! balancer twin.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::UnixDatagram;

use crate::harness::{send, worker_pids, BIN};

// ---------------------------------------------------------------------------
// A fake systemd: the notify socket

/// The notify socket a test owns, and every message received on it.
pub struct Notify {
    _dir: tempfile::TempDir,
    pub path: PathBuf,
    socket: UnixDatagram,
    pub received: Vec<String>,
}

impl Notify {
    pub fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        Notify {
            _dir: dir,
            path,
            socket,
            received: Vec::new(),
        }
    }

    /// Waits for the next message for which `check` holds and returns it;
    /// every message is kept in `received`. Fails the test at the deadline.
    pub async fn wait_for(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut buf = vec![0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.socket.recv(&mut buf)).await {
                Ok(Ok(n)) => {
                    let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                    self.received.push(message.clone());
                    if check(&message) {
                        return message;
                    }
                }
                Ok(Err(e)) => panic!("notify socket: {e}"),
                Err(_) => panic!(
                    "no notification {what} within 30 s; received: {:#?}",
                    self.received
                ),
            }
        }
    }

    /// Collects every message that arrives within `window` (to count, or to
    /// show that none came).
    pub async fn collect_for(&mut self, window: Duration) -> Vec<String> {
        let end = Instant::now() + window;
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            if let Ok(Ok(n)) = tokio::time::timeout(left, self.socket.recv(&mut buf)).await {
                got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        self.received.extend(got.iter().cloned());
        got
    }
}

/// The value of `KEY=` in a notification.
pub fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message
        .lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
}

fn monotonic_usec() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000
}

// ---------------------------------------------------------------------------
// Starting the binary the way systemd does

/// A rip-server command line with what systemd would pass.
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    sockets: Vec<OwnedFd>,
    names: Option<String>,
    runtime: tempfile::TempDir,
    name: String,
}

impl Launch {
    /// `app` as the instance `name`; no listener token (add one with `arg`).
    pub fn new(app: &Path, name: &str) -> Launch {
        let mut launch = Launch::bare(name);
        launch.args.insert(0, app.display().to_string());
        launch
    }

    /// No app argument: the config file names it.
    pub fn bare(name: &str) -> Launch {
        Launch {
            args: vec![format!("--name={name}")],
            env: Vec::new(),
            sockets: Vec::new(),
            names: None,
            runtime: tempfile::tempdir().unwrap(),
            name: name.to_string(),
        }
    }

    pub fn arg(mut self, arg: &str) -> Launch {
        self.args.push(arg.to_string());
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Launch {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn notify(self, notify: &Notify) -> Launch {
        let path = notify.path.display().to_string();
        self.env("NOTIFY_SOCKET", &path)
    }

    /// Passes (a duplicate of) `socket` as the next fd from 3 on.
    pub fn socket(mut self, socket: &impl AsFd) -> Launch {
        self.sockets
            .push(socket.as_fd().try_clone_to_owned().unwrap());
        self
    }

    /// `LISTEN_FDNAMES`, e.g. `https:http`.
    pub fn names(mut self, names: &str) -> Launch {
        self.names = Some(names.to_string());
        self
    }

    /// Starts the server and waits until it prints its control socket.
    pub fn start(self) -> Running {
        let mut command = self.command();
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = command.spawn().expect("start rip-server");
        let log = Arc::new(Mutex::new(String::new()));
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        capture(child.stdout.take().unwrap(), log.clone(), Some(up_tx));
        capture(child.stderr.take().unwrap(), log.clone(), None);
        let mut running = Running {
            child: Some(child),
            log,
            runtime: self.runtime,
            name: self.name,
        };
        if up_rx.recv_timeout(crate::harness::PATIENCE).is_err() {
            running.kill();
            panic!(
                "rip-server printed no control socket in time; log:\n{}",
                running.log()
            );
        }
        running
    }

    fn command(&self) -> Command {
        let mut command = if self.sockets.is_empty() {
            Command::new(BIN)
        } else {
            // sh keeps its pid across exec, so $$ is the server's pid.
            let mut sh = Command::new("/bin/sh");
            sh.args(["-c", "LISTEN_PID=$$ exec \"$0\" \"$@\"", BIN]);
            sh.env("LISTEN_FDS", self.sockets.len().to_string());
            if let Some(names) = &self.names {
                sh.env("LISTEN_FDNAMES", names);
            }
            pass_fds(&mut sh, &self.sockets);
            sh
        };
        for (key, _) in std::env::vars() {
            let inherited_from_systemd = [
                "NOTIFY_SOCKET",
                "LISTEN_PID",
                "LISTEN_FDS",
                "LISTEN_FDNAMES",
                "WATCHDOG_USEC",
                "WATCHDOG_PID",
            ]
            .contains(&key.as_str());
            if key.starts_with("RIP_")
                || key == "PORT"
                || key == "RUNTIME_DIRECTORY"
                || inherited_from_systemd
            {
                command.env_remove(key);
            }
        }
        command
            .args(&self.args)
            .env("XDG_RUNTIME_DIR", self.runtime.path())
            .env("HOME", self.runtime.path())
            .env("RIP_LOG", "info")
            .env_remove("STATE_DIRECTORY")
            .stdin(Stdio::null());
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }
}

/// Makes `sockets` fds 3, 4, … of the child, as systemd does.
fn pass_fds(command: &mut Command, sockets: &[OwnedFd]) {
    const MAX: usize = 4;
    assert!(sockets.len() <= MAX);
    let mut sources: [RawFd; MAX] = [-1; MAX];
    for (slot, socket) in sources.iter_mut().zip(sockets) {
        *slot = socket.as_raw_fd();
    }
    let count = sockets.len();
    use std::os::unix::process::CommandExt;
    // SAFETY: runs between fork and exec and calls only fcntl and dup2,
    // which are async-signal-safe; it allocates nothing.
    unsafe {
        command.pre_exec(move || {
            // Out of the way first, so a dup2 onto 3.. never clobbers a source.
            let mut high: [RawFd; MAX] = [-1; MAX];
            for i in 0..count {
                high[i] = nix::fcntl::fcntl(sources[i], nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(64))?;
            }
            for (i, fd) in high.iter().take(count).enumerate() {
                // dup2 clears close-on-exec on the new fd: it survives exec.
                nix::unistd::dup2(*fd, 3 + i as RawFd)?;
            }
            Ok(())
        });
    }
}

fn capture(
    pipe: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    up: Option<std::sync::mpsc::Sender<()>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if let (Some(up), true) = (&up, line.starts_with("control socket ")) {
                let _ = up.send(());
            }
        }
    });
}

/// A rip-server started by [`Launch`]; stopped by its pid on drop.
pub struct Running {
    child: Option<Child>,
    log: Arc<Mutex<String>>,
    runtime: tempfile::TempDir,
    name: String,
}

impl Running {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The port of the main listener, from the startup banner.
    pub fn port(&self) -> u16 {
        let log = self.log();
        log.lines()
            .find_map(|line| {
                line.strip_prefix("listening on http://localhost:")
                    .or_else(|| line.strip_prefix("listening on https://localhost:"))
            })
            .and_then(|port| port.trim().parse().ok())
            .unwrap_or_else(|| panic!("no listening line in the log:\n{log}"))
    }

    pub fn control_socket(&self) -> PathBuf {
        self.runtime
            .path()
            .join("rip-server")
            .join(format!("{}.ctl.sock", self.name))
    }

    pub async fn status(&self) -> serde_json::Value {
        let (code, body) = rip_server::control::call(
            &self.control_socket(),
            http::Method::GET,
            "/status",
            Bytes::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("status: {e}\nlog:\n{}", self.log()));
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), signal).unwrap();
    }

    /// Waits (bounded) for the server to exit after a signal.
    pub async fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        let child = self.child.as_mut().expect("server running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            if Instant::now() > deadline {
                self.kill();
                panic!("rip-server did not exit within 30 s; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(15);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- rip-server log ----\n{}", self.log());
        }
    }
}

// ---------------------------------------------------------------------------
// Apps and load

const INDEX: &str = "import { VERSION } from './version.mjs';\n\
export default {\n\
  async fetch(req) {\n\
    const url = new URL(req.url);\n\
    if (url.pathname === '/v') return new Response(VERSION);\n\
    return new Response('not found', { status: 404 });\n\
  },\n\
};\n";

/// Writes an app that answers `GET /v` with `version`; `boot_ms` delays its
/// import (a slow-starting app).
pub fn write_app(dir: &Path, version: &str, boot_ms: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let delay = match boot_ms {
        0 => String::new(),
        ms => format!("await new Promise((r) => setTimeout(r, {ms}));\n"),
    };
    std::fs::write(dir.join("index.mjs"), format!("{delay}{INDEX}")).unwrap();
    std::fs::write(
        dir.join("version.mjs"),
        format!("export const VERSION = '{version}';\n"),
    )
    .unwrap();
}

/// GET `path` on a fresh connection to 127.0.0.1:`port`; fails the test
/// if no answer comes within 10 s.
pub async fn get(port: u16, path: &str) -> crate::harness::Reply {
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), send(port, request))
        .await
        .unwrap_or_else(|_| panic!("GET {path} on port {port}: no answer within 10 s"))
}

/// What one load client saw.
#[derive(Default, Debug)]
pub struct ClientLog {
    pub sent: u64,
    pub ok: u64,
    pub non_200: BTreeMap<u16, u64>,
    pub errors: Vec<String>,
    /// Bodies of 200 answers, in order.
    pub bodies: Vec<String>,
}

impl ClientLog {
    /// Fails the test on any error or non-200 answer.
    pub fn assert_clean(&self) {
        assert!(self.errors.is_empty(), "errors: {:?}", self.errors);
        assert!(self.non_200.is_empty(), "non-200: {:?}", self.non_200);
        assert_eq!(self.sent, self.ok, "requests without an answer");
    }
}

/// One keep-alive client sending `GET /v` to `port` until `stop`; a request
/// has 10 s to be answered.
pub async fn load_client(port: u16, stop: Arc<AtomicBool>, answered: Arc<AtomicU64>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut sender = None;
    while !stop.load(Ordering::Relaxed) {
        if sender.is_none() {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => {
                    match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                        Ok((s, connection)) => {
                            tokio::spawn(connection);
                            sender = Some(s);
                        }
                        Err(e) => {
                            log.errors.push(format!("handshake: {e}"));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    log.errors.push(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = http::Request::get("/v")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        log.sent += 1;
        let exchange = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        };
        match tokio::time::timeout(Duration::from_secs(10), exchange).await {
            Ok(Ok((200, body))) => {
                log.ok += 1;
                log.bodies.push(body);
                answered.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Ok((status, _))) => *log.non_200.entry(status).or_default() += 1,
            Ok(Err(e)) => {
                log.errors.push(e.to_string());
                sender = None;
            }
            Err(_) => {
                log.errors.push("no answer within 10 s".into());
                sender = None;
            }
        }
    }
    log
}

/// `clients` load clients against `port`, stopped together.
pub struct Load {
    stop: Arc<AtomicBool>,
    /// 200 answers so far, per client.
    answered: Vec<Arc<AtomicU64>>,
    clients: Vec<tokio::task::JoinHandle<ClientLog>>,
}

impl Load {
    pub fn start(port: u16, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let answered: Vec<_> = (0..clients).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let clients = answered
            .iter()
            .map(|count| tokio::spawn(load_client(port, stop.clone(), count.clone())))
            .collect();
        Load {
            stop,
            answered,
            clients,
        }
    }

    /// Waits until every client has had `more` answers since the call: load
    /// known to have run through a transition, not a guessed sleep. Two
    /// answers after a switch: the second was surely sent after it.
    pub async fn wait_answers(&self, more: u64) {
        let starts: Vec<u64> = self
            .answered
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let behind = self
                .answered
                .iter()
                .zip(&starts)
                .filter(|(count, start)| count.load(Ordering::Relaxed) < *start + more)
                .count();
            if behind == 0 {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{behind} of {} load clients had fewer than {more} answers in 30 s",
                starts.len()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn finish(self) -> Vec<ClientLog> {
        self.stop.store(true, Ordering::Relaxed);
        let mut logs = Vec::new();
        for client in self.clients {
            logs.push(client.await.unwrap());
        }
        logs
    }
}

/// Waits (at most 30 s) until `counter` has grown by `more`.
pub async fn wait_count(counter: &AtomicU64, more: u64) {
    let start = counter.load(Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(30);
    while counter.load(Ordering::Relaxed) < start + more {
        assert!(
            Instant::now() < deadline,
            "the load made {} of {more} more answers in 30 s",
            counter.load(Ordering::Relaxed) - start
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits until `check` holds for the answer to `GET /v` on `port`.
pub async fn wait_version(port: u16, version: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = get(port, "/v").await;
        if reply.status == 200 && reply.body == version {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{version} never answered; last: {} {}",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn serving(status: &serde_json::Value) -> Vec<&serde_json::Value> {
    status["workers"]
        .as_array()
        .map(|w| w.iter().filter(|w| w["state"] == "serving").collect())
        .unwrap_or_default()
}

/// Variables a process was started with, from /proc.
fn environ(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .map(|v| String::from_utf8_lossy(v).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `socket:[inode]` targets of a process's open fds.
fn socket_inodes(pid: u32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|target| target.display().to_string())
                .filter(|target| target.starts_with("socket:"))
                .collect()
        })
        .unwrap_or_default()
}

fn inode_of(fd: &impl AsRawFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .unwrap()
        .display()
        .to_string()
}

// ---------------------------------------------------------------------------
// Notifications

#[tokio::test(flavor = "multi_thread")]
async fn ready_is_sent_once_every_worker_serves() {
    let dir = tempfile::tempdir().unwrap();
    // A slow import: the listener is up a second before the workers are.
    write_app(dir.path(), "v1", 1000);
    let mut notify = Notify::new();
    let server = Launch::new(dir.path(), "ready")
        .arg("http:0")
        .arg("w:2")
        .notify(&notify)
        .start();
    let ready = notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    // Checked at once: had READY=1 come at listen time, workers would boot.
    let status = server.status().await;
    assert_eq!(serving(&status).len(), 2, "READY=1 too early: {status:#}");
    assert_eq!(
        field(&ready, "STATUS"),
        Some("serving 1 app, 2 workers, generation 0")
    );
    assert!(
        notify
            .received
            .iter()
            .all(|m| field(m, "RELOADING").is_none()),
        "{:?}",
        notify.received
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_reports_reloading_then_ready_or_the_failure() {
    use nix::sys::signal::Signal::SIGHUP;
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    write_app(&app, "v1", 0);
    let config = dir.path().join("config.toml");
    let conf = |workers: &str| {
        format!(
            "app = {:?}\nworkers = {workers}\nreload = \"none\"\nlisten = \"http:0\"\n",
            app.display()
        )
    };
    std::fs::write(&config, conf("1")).unwrap();
    let mut notify = Notify::new();
    let server = Launch::new(&app, "hup")
        .arg(&format!("--config={}", config.display()))
        .notify(&notify)
        .start();
    notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;

    // A good reload: RELOADING=1 stamped after the signal, READY=1 once rolled.
    std::fs::write(&config, conf("2")).unwrap();
    let before = monotonic_usec();
    server.signal(SIGHUP);
    let reloading = notify
        .wait_for("RELOADING=1", |m| field(m, "RELOADING").is_some())
        .await;
    let stamped: u64 = field(&reloading, "MONOTONIC_USEC")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no MONOTONIC_USEC in {reloading:?}"));
    assert!(
        stamped >= before && stamped <= monotonic_usec(),
        "{reloading:?}"
    );
    let ready = notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    assert_eq!(
        field(&ready, "STATUS"),
        Some("serving 1 app, 2 workers, generation 1")
    );
    let status = server.status().await;
    assert_eq!(status["last_roll"]["ok"], true, "{status:#}");
    assert_eq!(
        serving(&status).len(),
        2,
        "READY=1 before the roll ended: {status:#}"
    );

    // A deploy that cannot boot: READY=1 again (still serving), the failure in STATUS.
    std::fs::write(app.join("index.mjs"), "throw new Error('deploy bug');\n").unwrap();
    server.signal(SIGHUP);
    notify
        .wait_for("RELOADING=1", |m| field(m, "RELOADING").is_some())
        .await;
    let ready = notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    let line = field(&ready, "STATUS").unwrap_or_default();
    assert!(
        line.starts_with("reload failed: ")
            && line.ends_with("still serving 1 app, 2 workers, generation 1"),
        "{line}"
    );
    assert_eq!(get(server.port(), "/v").await.body, "v1");

    // A config file that does not parse: the same, said as a config error.
    std::fs::write(&config, "workers = \"many\"\n").unwrap();
    server.signal(SIGHUP);
    notify
        .wait_for("RELOADING=1", |m| field(m, "RELOADING").is_some())
        .await;
    let ready = notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    let line = field(&ready, "STATUS").unwrap_or_default();
    assert!(line.starts_with("config reload failed: workers:"), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stopping_is_notified_and_the_health_check_drains_first() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let mut notify = Notify::new();
    let mut server = Launch::new(dir.path(), "drain")
        .arg("http:0")
        .arg("--shutdown-delay-ms=1500")
        .notify(&notify)
        .start();
    notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    let port = server.port();
    assert_eq!(get(port, "/server").await.status, 200);

    server.signal(nix::sys::signal::Signal::SIGTERM);
    let stopping = notify
        .wait_for("STOPPING=1", |m| field(m, "STOPPING").is_some())
        .await;
    assert!(
        field(&stopping, "STATUS").is_some_and(|s| s.starts_with("draining")),
        "{stopping:?}"
    );
    // Draining: the health check says 503, the app still answers.
    let health = get(port, "/server").await;
    assert_eq!((health.status, health.body.as_str()), (503, "draining"));
    let app = get(port, "/v").await;
    assert_eq!((app.status, app.body.as_str()), (200, "v1"));
    assert!(server.wait_exit().await.success());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_watchdog_is_pinged_only_when_asked_for_this_process() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let mut asked = Notify::new();
    let _pinged = Launch::new(dir.path(), "dog")
        .arg("http:0")
        .env("WATCHDOG_USEC", "200000")
        .notify(&asked)
        .start();
    let mut other = Notify::new();
    // WATCHDOG_PID names another process: the watchdog is not ours.
    let _not_ours = Launch::new(dir.path(), "notdog")
        .arg("http:0")
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .notify(&other)
        .start();
    asked
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    other
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;

    // At half the period, ~10 pings in a second; allow for a loaded machine.
    let pings = |got: &[String]| got.iter().filter(|m| m.as_str() == "WATCHDOG=1").count();
    let window = Duration::from_millis(1000);
    let (got, none) = tokio::join!(asked.collect_for(window), other.collect_for(window));
    assert!(pings(&got) >= 3, "too few pings: {got:?}");
    assert_eq!(
        pings(&none),
        0,
        "pinged a watchdog meant for pid 1: {none:?}"
    );
}

// ---------------------------------------------------------------------------
// Socket activation

#[tokio::test(flavor = "multi_thread")]
async fn passed_sockets_are_served_and_never_reach_workers() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    // A client that connects before the server runs: the kernel queues it.
    let early = tokio::spawn(async move { get(port, "/v").await });

    let mut notify = Notify::new();
    let server = Launch::new(dir.path(), "passed")
        .arg("http:0")
        .arg("w:2")
        .socket(&socket)
        .names("http")
        .notify(&notify)
        .start();
    notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    assert_eq!(server.port(), port, "{}", server.log());
    assert!(server
        .log()
        .contains("using the sockets systemd passed: 127.0.0.1:"));
    let reply = early.await.unwrap();
    assert_eq!((reply.status, reply.body.as_str()), (200, "v1"));

    let status = server.status().await;
    let passed = inode_of(&socket);
    let server_env = environ(server.pid());
    for pid in worker_pids(&status) {
        let env = environ(pid);
        for var in [
            "NOTIFY_SOCKET",
            "LISTEN_FDS",
            "LISTEN_PID",
            "LISTEN_FDNAMES",
        ] {
            assert!(
                !env.iter().any(|v| v.starts_with(&format!("{var}="))),
                "worker {pid} inherited {var}"
            );
        }
        assert!(
            !socket_inodes(pid).contains(&passed),
            "worker {pid} holds the passed socket {passed}"
        );
    }
    assert!(
        server_env.iter().any(|v| v.starts_with("LISTEN_FDS=")),
        "the test did not pass LISTEN_FDS: {server_env:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_gives_way_to_passed_sockets_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let mut notify = Notify::new();
    let server = Launch::new(dir.path(), "passedbind")
        .arg("http:0")
        .arg("w:1")
        .arg("--bind=::1")
        .socket(&socket)
        .names("http")
        .notify(&notify)
        .start();
    notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    assert_eq!(server.port(), port, "{}", server.log());
    // The passed 127.0.0.1 socket serves, whatever --bind said.
    let reply = get(port, "/v").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "v1"));
    assert!(
        server
            .log()
            .contains("--bind applies only to listeners rip-server binds itself"),
        "{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn passed_https_and_redirect_sockets_are_told_apart_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let https = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let https_port = https.local_addr().unwrap().port();
    // Passed redirect first: the names, not the order, decide.
    let server = Launch::new(dir.path(), "named")
        .arg("https:0")
        .arg("--redirect-port=0")
        .socket(&http)
        .socket(&https)
        .names("http:https")
        .start();
    assert_eq!(server.port(), https_port, "{}", server.log());
    let redirect_port = http.local_addr().unwrap().port();
    let reply = get(redirect_port, "/v?x=1").await;
    assert_eq!(reply.status, 301, "{}", server.log());
    assert_eq!(
        reply.headers["location"],
        format!("https://localhost:{https_port}/v?x=1").as_str()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_socket_that_fits_no_listener_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    write_app(dir.path(), "v1", 0);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let launch = Launch::new(dir.path(), "misfit")
        .arg("http:0")
        .socket(&socket)
        .names("https");
    let mut child = launch
        .command()
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rip-server started with a socket that fits no listener");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("socket activation: a socket named 'https' was passed, but this configuration has one plain HTTP listener"),
        "{stderr}"
    );
}

/// How one request on a fresh connection ended.
#[derive(Debug)]
#[allow(dead_code)] // the reasons are read through Debug, in failure messages
enum Fresh {
    Answered(u16, String),
    /// connect() failed: nobody held the port.
    Refused(String),
    /// The connection closed before any answer.
    Closed(String),
    TimedOut,
}

/// `GET /v` on a fresh connection to `port`.
async fn fresh_get(port: u16) -> Fresh {
    let stream = match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(stream) => stream,
        Err(e) => return Fresh::Refused(e.to_string()),
    };
    let request = http::Request::get("/v")
        .header("host", "localhost")
        .header("connection", "close")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let exchange = async {
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let response = sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).into_owned()))
    };
    match tokio::time::timeout(Duration::from_secs(10), exchange).await {
        Ok(Ok((status, body))) => Fresh::Answered(status, body),
        Ok(Err(e)) => Fresh::Closed(e.to_string()),
        Err(_) => Fresh::TimedOut,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restart_with_held_sockets_refuses_no_connection() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    write_app(&v1, "v1", 0);
    write_app(&v2, "v2", 0);
    // The test is systemd: it holds the socket across the restart.
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let start = |app: &Path| {
        Launch::new(app, "held")
            .arg("http:0")
            .arg("w:2")
            .socket(&socket)
            .start()
    };
    let mut first = start(&v1);
    wait_version(port, "v1").await;

    // Clients on fresh connections all through the restart.
    let stop = Arc::new(AtomicBool::new(false));
    let outcomes = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, count) = (stop.clone(), outcomes.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    outcomes.push(fresh_get(port).await);
                    count.fetch_add(1, Ordering::Relaxed);
                }
                outcomes
            })
        })
        .collect();
    // Load before the stop, and after the new server answers.
    wait_count(&outcomes, 50).await;
    first.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(first.wait_exit().await.success());
    // Between the two servers nobody accepts: connections wait in the
    // kernel's queue of the socket the test holds.
    let second = start(&v2);
    wait_version(port, "v2").await;
    wait_count(&outcomes, 50).await;
    stop.store(true, Ordering::Relaxed);

    let mut answered = 0;
    for client in clients {
        let mut versions = Vec::new();
        for outcome in client.await.unwrap() {
            match outcome {
                Fresh::Answered(200, body) => versions.push(body),
                // Refused, closed unanswered (the old server's stop serves a
                // connection it accepted before reading its request) or late:
                // every one is a failure.
                other => panic!("{other:?}\nnew server's log:\n{}", second.log()),
            }
        }
        answered += versions.len();
        assert_eq!(versions.last().map(String::as_str), Some("v2"));
    }
    assert!(answered > 100, "too little load: {answered} answers");
    eprintln!("{answered} answered across the restart, none refused, none closed unanswered");
}

/// One `GET /v` on a kept-alive blocking connection: (status, body, whether
/// the server said `Connection: close`), or the error that ended it.
fn kept_alive_get(stream: &mut std::net::TcpStream) -> std::io::Result<(u16, String, bool)> {
    use std::io::{Read, Write};
    stream.write_all(b"GET /v HTTP/1.1\r\nhost: localhost\r\n\r\n")?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        return Err(std::io::ErrorKind::UnexpectedEof.into());
    }
    let status = line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (mut length, mut close) = (0, false);
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let header = line.trim_end().to_ascii_lowercase();
        if header.is_empty() {
            break;
        }
        if let Some(v) = header.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        }
        close |= header == "connection: close";
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), close))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stop_serves_the_request_a_kept_alive_connection_already_sent() {
    use nix::sys::signal::Signal::{SIGCONT, SIGSTOP, SIGTERM};
    // A kept-alive client may send its next request just before the server
    // stops. Closing the connection as idle then (hyper has not read it yet)
    // resets a request the client already sent. The server is frozen while
    // the requests go out and the stop is signalled, so on waking it finds
    // both at once: every one of them must be answered, then closed.
    let dir = tempfile::tempdir().unwrap();
    write_app(&dir.path().join("app"), "v1", 0);
    let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = socket.local_addr().unwrap().port();
    let server = Launch::new(&dir.path().join("app"), "keptalive")
        .arg("http:0")
        .arg("w:2")
        .arg("--threads=2")
        .socket(&socket)
        .start();
    wait_version(port, "v1").await;
    let result = tokio::task::spawn_blocking(move || {
        let mut connections: Vec<_> = (0..32)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                stream
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let first = kept_alive_get(&mut stream).unwrap();
                assert_eq!((first.0, first.2), (200, false), "{first:?}");
                stream
            })
            .collect();
        let pid = nix::unistd::Pid::from_raw(server.pid() as i32);
        nix::sys::signal::kill(pid, SIGSTOP).unwrap();
        let outcomes: Vec<_> = {
            let requests: Vec<_> = connections
                .iter_mut()
                .map(|stream| {
                    let mut stream = stream.try_clone().unwrap();
                    std::thread::spawn(move || {
                        kept_alive_get(&mut stream).map_err(|e| e.to_string())
                    })
                })
                .collect();
            std::thread::sleep(Duration::from_millis(300));
            nix::sys::signal::kill(pid, SIGTERM).unwrap();
            nix::sys::signal::kill(pid, SIGCONT).unwrap();
            requests.into_iter().map(|r| r.join().unwrap()).collect()
        };
        (server, outcomes)
    });
    let (mut server, outcomes) = result.await.unwrap();
    assert!(server.wait_exit().await.success(), "{}", server.log());
    for outcome in &outcomes {
        match outcome {
            Ok((200, body, _)) if body == "v1" => {}
            other => panic!("{other:?} of {outcomes:?}\nlog:\n{}", server.log()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn switching_to_a_new_app_version_under_load_drops_nothing() {
    use nix::sys::signal::Signal::SIGHUP;
    // As NixOS does it: each generation's app and config in its own
    // directory (store paths), a stable config path (/etc) pointing at the
    // current one, and `systemctl reload` (SIGHUP) after the switch.
    let dir = tempfile::tempdir().unwrap();
    let etc = dir.path().join("etc-config.toml");
    let generation = |n: u32| {
        let store = dir.path().join(format!("store-{n}"));
        write_app(&store.join("app"), &format!("v{n}"), 0);
        let config = store.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "app = {:?}\nworkers = 2\nlisten = \"http:0\"\nno_access_log = true\n",
                store.join("app").display()
            ),
        )
        .unwrap();
        config
    };
    let switch_to = |config: &Path| {
        let temp = dir.path().join("etc-config.toml.new");
        std::os::unix::fs::symlink(config, &temp).unwrap();
        std::fs::rename(&temp, &etc).unwrap();
    };
    switch_to(&generation(1));
    let mut notify = Notify::new();
    // No app argument: a positional app would beat the file's.
    let server = Launch::bare("switch")
        .arg(&format!("--config={}", etc.display()))
        .notify(&notify)
        .start();
    notify
        .wait_for("READY=1", |m| field(m, "READY").is_some())
        .await;
    let port = server.port();

    let load = Load::start(port, 16);
    for n in 2..=4 {
        switch_to(&generation(n));
        server.signal(SIGHUP);
        notify
            .wait_for("RELOADING=1", |m| field(m, "RELOADING").is_some())
            .await;
        let ready = notify
            .wait_for("READY=1", |m| field(m, "READY").is_some())
            .await;
        assert_eq!(
            field(&ready, "STATUS"),
            Some(format!("serving 1 app, 2 workers, generation {}", n - 1).as_str())
        );
        // Every client answered by the new generation before the next switch.
        load.wait_answers(2).await;
    }
    let logs = load.finish().await;
    let mut total = 0;
    for log in &logs {
        log.assert_clean();
        total += log.sent;
        assert_eq!(log.bodies.last().map(String::as_str), Some("v4"));
    }
    assert!(total > 300, "too little load: {total} requests");
    eprintln!("{total} requests across 3 switches, all answered 200");
}

// ---------------------------------------------------------------------------
// --check: what ExecStart would do, validated without binding

fn check(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String, tempfile::TempDir) {
    let runtime = tempfile::tempdir().unwrap();
    let mut command = crate::harness::clean_command(BIN, runtime.path());
    command.arg("--check").args(args);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
        runtime,
    )
}

#[test]
fn check_validates_everything_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("app");
    write_app(&app, "v1", 0);
    let cert = rcgen::generate_simple_self_signed(vec!["example.test".to_string()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.key_pair.serialize_pem()).unwrap();
    // The port is taken: a check that tried to bind it would fail.
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "app = {:?}\nworkers = 3\nhttps_port = {port}\ncert = {:?}\nkey = {:?}\nhsts = true\nno_redirect_http = true\n",
            app.display(),
            cert_path.display(),
            key_path.display()
        ),
    )
    .unwrap();
    let config_flag = format!("--config={}", config.display());
    let (code, stdout, stderr, runtime) = check(&[&config_flag], &[("RIP_MAX_QUEUE", "5")]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with("configuration ok: app serves ")
            && stdout.contains(&format!("with 3 workers, reload=process, https on port {port} (1 certificate file pair(s), hsts)")),
        "{stdout}"
    );
    assert!(
        !runtime.path().join("rip-server").exists(),
        "--check created the runtime directory"
    );

    // Each layer is validated: environment, flags, file, certificates.
    let (code, _, stderr, _) = check(&[&config_flag], &[("RIP_MAX_QUEUE", "lots")]);
    assert_eq!(code, 2);
    assert!(stderr.contains("RIP_MAX_QUEUE='lots'"), "{stderr}");
    let (code, _, stderr, _) = check(&[&config_flag, "--read-timeout-ms=0"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--read-timeout-ms: 0 ms is out of range"),
        "{stderr}"
    );
    std::fs::write(&key_path, "not a key").unwrap();
    let (code, _, stderr, _) = check(&[&config_flag], &[]);
    assert_eq!(code, 2);
    assert!(stderr.contains("key.pem"), "{stderr}");
    // A declarative host registry is checked whole: its hosts and their apps.
    std::fs::write(
        &config,
        format!(
            "app = {:?}\n[hosts.\"a.test\"]\napp = {:?}\n",
            app.display(),
            app.display()
        ),
    )
    .unwrap();
    let (code, stdout, stderr, _) = check(&[&config_flag], &[]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("1 host from"), "{stdout}");
    std::fs::write(
        &config,
        format!("[hosts.\"a.test:80\"]\napp = {:?}\n", app.display()),
    )
    .unwrap();
    let (code, _, stderr, _) = check(&[&config_flag], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("a.test:80") && stderr.contains("port"),
        "{stderr}"
    );
}

#[test]
fn check_applies_to_serving_only() {
    let (code, _, stderr, _) = check(&["status"], &[]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--check validates a configuration for serving"),
        "{stderr}"
    );
}
