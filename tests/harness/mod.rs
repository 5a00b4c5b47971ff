//! The integration-test harness: start the real `rip-server` binary with real
//! workers on real sockets, talk to it over HTTP and its control socket, and
//! stop it by PID when the test ends.
//!
//! Each [`Server`] gets a fresh temporary runtime directory (its private
//! socket directory) and an environment without `RIP_*`, `PORT` or
//! `RUNTIME_DIRECTORY`, listens on a kernel-chosen port (`http:0`), and is
//! stopped on drop. When a test fails, the server's captured log is printed.
//! Automatic certificates never come from an `mkcert` that happens to be
//! installed: `RIP_MKCERT=off` unless a test sets its own. Likewise the
//! JavaScript runtime: every builder passes `--runtime=node`, so a `bun` on
//! the machine does not change what the suite tests (`.js_runtime("auto")`
//! to leave the choice to the server; `RIP_TEST_RUNTIME=bun cargo test …`
//! runs the JavaScript apps of a test run under Bun instead, by hand).

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

pub const BIN: &str = env!("CARGO_BIN_EXE_rip-server");

/// How long a test waits for a state before it fails. Long, because a
/// loaded machine (builds and VMs beside the suite, disk writes stalling for
/// seconds) can hold up a process that long; a passing test never waits it
/// out, it goes on as soon as the state is reached.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A temporary directory in memory (`/dev/shm`) when there is one: a test
/// that times its own file writes (a burst of saves) must not wait on a
/// busy disk.
pub fn memory_tempdir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(dir) = tempfile::tempdir_in(shm) {
            return dir;
        }
    }
    tempfile::tempdir().unwrap()
}
pub const EXAMPLE_WORKER: &str = env!("CARGO_BIN_EXE_rip-example-worker");

/// The bundled Node example app.
pub fn node_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("apps/api")
}

/// `--runtime=node`, or `--runtime=$RIP_TEST_RUNTIME` when that is set.
fn test_runtime() -> String {
    let runtime = std::env::var("RIP_TEST_RUNTIME").unwrap_or_else(|_| "node".into());
    format!("--runtime={runtime}")
}

/// A running rip-server.
pub struct Server {
    child: Option<Child>,
    pub port: u16,
    /// The HTTP-to-HTTPS redirect port, when the server opened one.
    pub redirect_port: Option<u16>,
    /// HOME of the server (its certificate cache is under `.rip/certs`).
    pub home: PathBuf,
    pub name: String,
    pub runtime: tempfile::TempDir,
    log: Arc<Mutex<String>>,
    /// Dropped to let a stdout held by [`Builder::hold_stdout`] be read again.
    stdout_hold: Option<std::sync::mpsc::Sender<()>>,
}

/// Builds a server command line.
pub struct Builder {
    args: Vec<String>,
    env: Vec<(String, String)>,
    name: String,
    runtime: Option<tempfile::TempDir>,
    home: Option<PathBuf>,
    hold_stdout: bool,
    inherit: Option<(std::fs::File, i32)>,
    open_files: Option<u64>,
}

impl Builder {
    pub fn node() -> Self {
        Builder::app(node_app().to_str().unwrap(), "api")
    }

    /// The Rust example worker. Its "app directory" is cargo's target
    /// directory, which is not worth watching.
    pub fn rust() -> Self {
        Builder::app(EXAMPLE_WORKER, "rust").arg("--reload=none")
    }

    /// `tests/fixtures/raw-worker`: one worker that speaks HTTP/1.1 by hand
    /// and misbehaves in exact ways, by path (see its header).
    pub fn raw_worker() -> Self {
        let worker = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/raw-worker");
        Builder::app(worker.to_str().unwrap(), "raw")
            .arg("w:1")
            .arg("--reload=none")
    }

    /// A server started without an app (its apps come from the host registry).
    pub fn bare(name: &str) -> Self {
        let mut builder = Builder::app("", name);
        builder.args.retain(|a| !a.is_empty());
        builder
    }

    /// A server whose app comes from the config file `file` (no APP
    /// argument, which would win over the file).
    pub fn config(file: &Path, name: &str) -> Self {
        Builder {
            args: vec![
                "http:0".to_string(),
                format!("--name={name}"),
                format!("--config={}", file.display()),
                test_runtime(),
            ],
            env: Vec::new(),
            name: name.to_string(),
            runtime: None,
            home: None,
            hold_stdout: false,
            inherit: None,
            open_files: None,
        }
    }

    /// `tests/fixtures/gate-app`: requests to `/hold?file=PATH` end when
    /// the test opens a [`Gate`].
    pub fn gate() -> Self {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gate-app");
        Builder::app(app.to_str().unwrap(), "gate").arg("--reload=none")
    }

    /// `tests/fixtures/probe-app`: floods its stdout on request (`/print`).
    pub fn probe() -> Self {
        let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/probe-app");
        Builder::app(app.to_str().unwrap(), "probe").arg("--reload=none")
    }

    pub fn app(path: &str, name: &str) -> Self {
        Builder {
            args: vec![
                path.to_string(),
                "http:0".to_string(),
                format!("--name={name}"),
                test_runtime(),
            ],
            env: Vec::new(),
            name: name.to_string(),
            runtime: None,
            home: None,
            hold_stdout: false,
            inherit: None,
            open_files: None,
        }
    }

    /// Serve HTTPS on a kernel-chosen port, redirecting from another one.
    pub fn https(mut self) -> Self {
        self.args.retain(|a| a != "http:0");
        self.args.push("https:0".to_string());
        self.args.push("--redirect-port=0".to_string());
        self
    }

    /// Use this HOME (and so this certificate cache).
    pub fn home(mut self, home: &Path) -> Self {
        self.home = Some(home.to_path_buf());
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    /// `--runtime=RUNTIME` instead of the harness's `--runtime=node`.
    pub fn js_runtime(mut self, runtime: &str) -> Self {
        self.args.retain(|a| !a.starts_with("--runtime="));
        self.args.push(format!("--runtime={runtime}"));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Stops reading the server's stdout once it has printed its URLs, and
    /// holds the pipe open unread (a stalled terminal or log shipper) until
    /// [`Server::resume_stdout`] or the end of the test.
    pub fn hold_stdout(mut self) -> Self {
        self.hold_stdout = true;
        self
    }

    /// Passes `file` to the server as descriptor `fd`, without close-on-exec
    /// (as a careless parent process would).
    pub fn inherit_fd(mut self, file: std::fs::File, fd: i32) -> Self {
        self.inherit = Some((file, fd));
        self
    }

    /// Starts the server with this open-file limit, soft and hard (so it
    /// cannot raise it).
    pub fn open_file_limit(mut self, limit: u64) -> Self {
        self.open_files = Some(limit);
        self
    }

    /// Reuses a runtime directory (to test stale-socket cleanup).
    pub fn runtime(mut self, dir: tempfile::TempDir) -> Self {
        self.runtime = Some(dir);
        self
    }

    /// Starts the server and waits until it prints its URL.
    pub fn start(self) -> Server {
        let runtime = self.runtime.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let mut command = clean_command(BIN, runtime.path());
        let home = self.home.unwrap_or_else(|| runtime.path().to_path_buf());
        command.env("HOME", &home).env_remove("STATE_DIRECTORY");
        command.args(&self.args);
        for (k, v) in &self.env {
            command.env(k, v);
        }
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some((file, target)) = &self.inherit {
            use std::os::fd::AsRawFd;
            use std::os::unix::process::CommandExt;
            let (source, target) = (file.as_raw_fd(), *target);
            // SAFETY: dup2 is async-signal-safe; the new descriptor has no
            // close-on-exec flag.
            unsafe {
                command.pre_exec(move || {
                    nix::unistd::dup2(source, target)?;
                    Ok(())
                });
            }
        }
        if let Some(limit) = self.open_files {
            use nix::sys::resource::{setrlimit, Resource};
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe.
            unsafe {
                command.pre_exec(move || {
                    setrlimit(Resource::RLIMIT_NOFILE, limit, limit)?;
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("start rip-server");
        drop(self.inherit);
        let log = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        let (stdout_hold, hold) = match self.hold_stdout {
            true => {
                let (tx, rx) = std::sync::mpsc::channel();
                (Some(tx), Some(rx))
            }
            false => (None, None),
        };
        capture(
            child.stdout.take().unwrap(),
            log.clone(),
            Some(port_tx),
            hold,
        );
        capture(child.stderr.take().unwrap(), log.clone(), None, None);
        let (port, redirect_port) = match port_rx.recv_timeout(PATIENCE) {
            Ok(ports) => ports,
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "rip-server printed no URL within {PATIENCE:?}; log:\n{}",
                    log.lock().unwrap()
                );
            }
        };
        Server {
            child: Some(child),
            port,
            redirect_port,
            home,
            name: self.name,
            runtime,
            log,
            stdout_hold,
        }
    }
}

/// A command for the rip-server binary with a clean environment: no
/// inherited `RIP_*` (so no inherited `RIP_MKCERT` either), `PORT`,
/// `RUNTIME_DIRECTORY` or `NOTIFY_SOCKET`; `RIP_MKCERT=off`, so what is
/// installed on the machine cannot change a test (`.env("RIP_MKCERT", …)`
/// after this call overrides it).
pub fn clean_command(bin: &str, runtime: &Path) -> Command {
    let mut command = Command::new(bin);
    for (key, _) in std::env::vars() {
        if key.starts_with("RIP_")
            || key == "PORT"
            || key == "RUNTIME_DIRECTORY"
            || key == "STATE_DIRECTORY"
            || key == "NOTIFY_SOCKET"
        {
            command.env_remove(key);
        }
    }
    command
        .env("XDG_RUNTIME_DIR", runtime)
        .env("RIP_LOG", "info")
        .env("RIP_MKCERT", "off")
        .stdin(Stdio::null());
    command
}

/// A pipe whose reader has already gone: every write to it fails (EPIPE).
pub fn closed_pipe() -> Stdio {
    let (reader, writer) = nix::unistd::pipe().expect("pipe");
    drop(reader);
    Stdio::from(writer)
}

/// Reads `pipe` into `log` line by line. With `hold`, reading stops after
/// the control socket line until `hold` gets a message or is dropped.
fn capture(
    pipe: impl std::io::Read + Send + 'static,
    log: Arc<Mutex<String>>,
    port_tx: Option<std::sync::mpsc::Sender<(u16, Option<u16>)>>,
    mut hold: Option<std::sync::mpsc::Receiver<()>>,
) {
    std::thread::spawn(move || {
        let mut port = None;
        let mut redirect = None;
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            let url = line
                .strip_prefix("listening on http://localhost:")
                .or_else(|| line.strip_prefix("listening on https://localhost:"));
            if let Some(p) = url.and_then(|rest| rest.trim().parse().ok()) {
                port = Some(p);
            }
            if let Some(rest) = line.strip_prefix("redirecting http://localhost:") {
                redirect = rest.split(' ').next().and_then(|p| p.parse().ok());
            }
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            // The control socket line comes after every listener line.
            if let (Some(tx), Some(p), true) = (&port_tx, port, line.starts_with("control socket "))
            {
                let _ = tx.send((p, redirect));
                if let Some(hold) = hold.take() {
                    let _ = hold.recv();
                }
            }
        }
    });
}

/// Holds the gate app's `/hold` requests until [`Gate::open`].
pub struct Gate {
    dir: tempfile::TempDir,
}

impl Gate {
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Gate {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// The path and query of a request that waits for this gate.
    pub fn hold(&self) -> String {
        format!("/hold?file={}", self.dir.path().join("open").display())
    }

    /// Lets every held request (and every later one) answer.
    pub fn open(&self) {
        std::fs::write(self.dir.path().join("open"), "").unwrap();
    }
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: String,
}

impl Server {
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Reads the stdout held by [`Builder::hold_stdout`] again.
    pub fn resume_stdout(&mut self) {
        self.stdout_hold = None;
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn runtime_dir(&self) -> PathBuf {
        self.runtime.path().join("rip-server")
    }

    pub fn control_socket(&self) -> PathBuf {
        self.runtime_dir().join(format!("{}.ctl.sock", self.name))
    }

    /// GET `path` on a fresh connection.
    pub async fn get(&self, path: &str) -> Reply {
        self.request(http::Method::GET, path, &[], Bytes::new())
            .await
    }

    pub async fn request(
        &self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("localhost:{}", self.port));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        send(self.port, builder.body(Full::new(body)).unwrap()).await
    }

    /// The control socket's `/status`, parsed.
    pub async fn status(&self) -> serde_json::Value {
        let (status, body) = rip_server::control::call(
            &self.control_socket(),
            http::Method::GET,
            "/status",
            Bytes::new(),
        )
        .await
        .unwrap_or_else(|e| panic!("status: {e}\nlog:\n{}", self.log()));
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub async fn metrics(&self) -> String {
        let (_, body) = rip_server::control::call(
            &self.control_socket(),
            http::Method::GET,
            "/metrics",
            Bytes::new(),
        )
        .await
        .unwrap();
        body
    }

    /// Waits until `check(status)` holds, or fails the test with the log.
    pub async fn wait_status(
        &self,
        what: &str,
        check: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let status = self.status().await;
            if check(&status) {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for {what}; last status:\n{status:#}\nlog:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until every desired worker is serving.
    pub async fn wait_ready(&self) -> serde_json::Value {
        self.wait_status("all workers serving", |s| {
            let desired = s["desired_workers"].as_u64().unwrap_or(0);
            serving_workers(s).len() as u64 >= desired && desired > 0
        })
        .await
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.log().contains(needle) {
            if Instant::now() > deadline {
                panic!(
                    "timed out waiting for log line '{needle}'; log:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status (bounded).
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.terminate_within(Duration::from_secs(30))
    }

    /// Sends SIGTERM and fails the test unless the server exits within `limit`.
    pub fn terminate_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        wait_child(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rip-server did not exit within {limit:?} of SIGTERM; log:\n{}",
                self.log()
            )
        })
    }

    /// Sends `signal` to the server (which keeps running, for the test to wait on).
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.pid() as i32);
        nix::sys::signal::kill(pid, signal).expect("signal rip-server");
    }

    /// Waits for the server to exit, failing the test past `limit`.
    pub fn wait_exit_within(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        wait_child(&mut child, limit).unwrap_or_else(|| {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rip-server did not exit within {limit:?}; log:\n{}",
                self.log()
            )
        })
    }

    /// Kills the server with SIGKILL (no cleanup) and reaps it.
    pub fn kill_hard(&mut self) {
        let mut child = self.child.take().expect("server running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Waits for the server to exit on its own (after `rip-server stop`).
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        self.wait_exit_within(Duration::from_secs(30))
    }

    /// Runs `rip-server ARGS` against this instance's runtime directory and
    /// state directory (its HOME: the host registry is `.rip/hosts.toml`).
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        self.cli_command(args).output().unwrap()
    }

    /// The command [`Server::cli`] runs, for a test that starts it and goes
    /// on while it runs.
    pub fn cli_command(&self, args: &[&str]) -> Command {
        let mut command = clean_command(BIN, self.runtime.path());
        command.env("HOME", &self.home).args(args);
        command
    }
}

/// Waits (bounded) for a spawned command and collects what it piped; `None`
/// if it is still running after `limit` (it is then killed and reaped).
pub fn output_within(mut child: Child, limit: Duration) -> Option<std::process::Output> {
    if wait_child(&mut child, limit).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        return None;
    }
    child.wait_with_output().ok()
}

fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + limit;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.resume_stdout();
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            if wait_child(&mut child, Duration::from_secs(15)).is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::thread::panicking() {
            eprintln!("---- rip-server log ----\n{}", self.log());
        }
    }
}

/// Sends one request on a fresh connection to 127.0.0.1:`port`.
/// An HTTP/1.1 client over `io`. Its connection runs in a spawned task,
/// returned so a test can cut the connection.
pub async fn http1<T>(
    io: T,
) -> (
    hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    tokio::task::JoinHandle<hyper::Result<()>>,
)
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .expect("HTTP/1.1 handshake");
    (sender, tokio::spawn(connection))
}

/// Like a real client, it sends `Host` (HTTP/1.1 requires one) unless the
/// request has its own.
pub async fn send(port: u16, mut request: http::Request<Full<Bytes>>) -> Reply {
    if !request.headers().contains_key(http::header::HOST) {
        let host = http::HeaderValue::from_str(&format!("127.0.0.1:{port}")).unwrap();
        request.headers_mut().insert(http::header::HOST, host);
    }
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    let (mut sender, _connection) = http1(stream).await;
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// The ids of serving workers in a status document.
pub fn serving_workers(status: &serde_json::Value) -> Vec<u64> {
    status["workers"]
        .as_array()
        .map(|workers| {
            workers
                .iter()
                .filter(|w| w["state"] == "serving")
                .filter_map(|w| w["id"].as_u64())
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of every worker in a status document.
pub fn worker_pids(status: &serde_json::Value) -> Vec<u32> {
    status["workers"]
        .as_array()
        .map(|workers| {
            workers
                .iter()
                .filter_map(|w| w["pid"].as_u64())
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default()
}

pub fn process_alive(pid: u32) -> bool {
    // A zombie still has /proc/PID; read its state to tell.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .split_whitespace()
            .nth(2)
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits (bounded) until `pid` is gone.
pub async fn wait_gone(pid: u32, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while process_alive(pid) {
        if Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

/// Socket files left in a directory.
pub fn sockets_in(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".sock"))
                .collect()
        })
        .unwrap_or_default()
}
