//! Stopping: `rip-server stop`, SIGTERM and SIGINT finish requests in flight
//! (for at most `--grace-ms`), stop
//! every worker, remove every socket and exit 0; a second SIGTERM or SIGINT
//! during that stop kills every worker and exits at once (143 or 130); the
//! runtime directory and sockets are private to the server's user.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use crate::harness::{
    clean_command, closed_pipe, memory_tempdir, process_alive, send, sockets_in, wait_gone,
    worker_pids, Builder, Gate, BIN, EXAMPLE_WORKER,
};

#[tokio::test(flavor = "multi_thread")]
async fn stop_command_leaves_no_process_and_no_socket() {
    let mut server = Builder::node().arg("w:2").start();
    let pids = worker_pids(&server.wait_ready().await);
    assert!(!sockets_in(&server.runtime_dir()).is_empty());
    let output = server.cli(&["stop", "--name", "api"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(server.wait_exit().code(), Some(0));
    for pid in pids {
        assert!(
            wait_gone(pid, Duration::from_secs(5)).await,
            "worker {pid} still running after stop"
        );
    }
    assert_eq!(sockets_in(&server.runtime_dir()), Vec::<String>::new());
}

/// GET `path` on a fresh connection; a request cut off by a stop may end in
/// an error, which is its answer.
async fn get(port: u16, path: String) -> std::io::Result<(u16, String)> {
    let request = http::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut sender, _conn) = crate::harness::http1(stream).await;
    let response = sender
        .send_request(request)
        .await
        .map_err(std::io::Error::other)?;
    let status = response.status().as_u16();
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// A worker that ignores SIGTERM holds a request: the first `signal`
/// starts a stop that would wait out the grace period (a minute); a second
/// one kills the workers and exits at once, with 128 + the signal's number.
async fn a_second_stop_signal_exits_at_once(signal: nix::sys::signal::Signal, code: i32) {
    let mut server = Builder::probe()
        .arg("w:2")
        .arg("--grace-ms=60000")
        .arg("--read-timeout-ms=120000")
        .start();
    let workers = worker_pids(&server.wait_ready().await);
    let held = tokio::spawn(get(server.port, "/deaf".to_string()));
    server.wait_log("deaf to SIGTERM (child ").await;
    let log = server.log();
    let child: u32 = log
        .split("deaf to SIGTERM (child ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("no child pid in the log:\n{log}"));
    server.signal(signal);
    server.wait_log(&format!("{signal} received")).await;
    server.signal(signal);
    let status = server.wait_exit_within(Duration::from_secs(10));
    assert_eq!(status.code(), Some(code), "log:\n{}", server.log());
    // Killed and reaped before the server exited, not left to init; the
    // worker's own child too (its process group was killed).
    let child_alive = process_alive(child);
    if child_alive {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    assert!(
        !child_alive,
        "the worker's child {child} outlived the server"
    );
    for pid in workers {
        assert!(!process_alive(pid), "worker {pid} outlived the server");
    }
    // Cut: an error, or a 502 written as its worker died.
    let held = held.await.unwrap();
    assert!(
        !matches!(held, Ok((200, _))),
        "the held request was not cut: {held:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigterm_exits_at_once() {
    a_second_stop_signal_exits_at_once(nix::sys::signal::Signal::SIGTERM, 143).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_sigint_exits_at_once() {
    a_second_stop_signal_exits_at_once(nix::sys::signal::Signal::SIGINT, 130).await;
}

/// Sends `signal` to a server with a request in flight: the request
/// finishes, every worker and socket goes, and the server exits 0.
async fn a_stop_signal_finishes_the_request_in_flight(signal: nix::sys::signal::Signal) {
    let mut server = Builder::gate().arg("w:1").start();
    let workers = worker_pids(&server.wait_ready().await);
    // The request is held until after the stop has begun.
    let gate = Gate::new();
    let in_flight = tokio::spawn(get(server.port, gate.hold()));
    server
        .wait_status("the worker busy", |s| s["pool"]["busy"] == 1)
        .await;
    let pid = server.pid();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), signal).unwrap();
    server.wait_log(&format!("{signal:?} received")).await;
    gate.open();
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, server)
    });
    let reply = in_flight.await.unwrap();
    assert_eq!(reply.ok(), Some((200, "released".to_string())));
    let (status, server) = exit.await.unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "rip-server {pid} exit after {signal:?}"
    );
    assert_eq!(sockets_in(&server.runtime_dir()), Vec::<String>::new());
    for worker in workers {
        assert!(
            !process_alive(worker),
            "worker {worker} outlived the server"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_the_request_in_flight() {
    a_stop_signal_finishes_the_request_in_flight(nix::sys::signal::Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigint_finishes_the_request_in_flight() {
    a_stop_signal_finishes_the_request_in_flight(nix::sys::signal::Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grace_ms_bounds_how_long_a_stop_waits_for_requests() {
    // A request shorter than the grace period finishes; one longer is cut
    // off once it has passed, and the stop takes about the grace period
    // (twice: client connections, then workers), not the default 10 s.
    // The read timeout is out of the way: only the grace period can end
    // the long request.
    let mut server = Builder::gate()
        .arg("w:2")
        .arg("--grace-ms=1500")
        .arg("--read-timeout-ms=60000")
        .start();
    let workers = worker_pids(&server.wait_ready().await);
    let (short_gate, long_gate) = (Gate::new(), Gate::new());
    let short = tokio::spawn(get(server.port, short_gate.hold()));
    let long = tokio::spawn(get(server.port, long_gate.hold()));
    server
        .wait_status("both workers busy", |s| s["pool"]["busy"] == 2)
        .await;
    let pid = server.pid();
    let started = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.wait_log("SIGTERM received").await;
    // One request ends within the grace period; the other never would.
    short_gate.open();
    let exit = tokio::task::spawn_blocking(move || {
        let status = server.wait_exit();
        (status, started.elapsed(), server)
    });
    let short = short.await.unwrap();
    assert_eq!(short.ok(), Some((200, "released".to_string())));
    let long = long.await.unwrap();
    assert!(
        !matches!(&long, Ok((200, _))),
        "a request past the grace period was waited for: {long:?}"
    );
    let (status, took, server) = exit.await.unwrap();
    assert_eq!(status.code(), Some(0), "rip-server {pid} exit");
    assert!(
        took < Duration::from_secs(8),
        "the stop took {took:?} with --grace-ms=1500\n{}",
        server.log()
    );
    assert_eq!(sockets_in(&server.runtime_dir()), Vec::<String>::new());
    for worker in workers {
        assert!(
            wait_gone(worker, Duration::from_secs(5)).await,
            "worker {worker} outlived the server"
        );
    }
}

/// Whether process `pid` holds the server end of the loopback TCP
/// connection from `client_port` to `server_port` (it has accepted it).
/// The default listener is dual-stack, so an IPv4 client's connection is
/// listed in `tcp6` (as `::ffff:127.0.0.1`).
fn holds_connection(pid: u32, server_port: u16, client_port: u16) -> bool {
    let table = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect::<Vec<_>>()
        .join("\n");
    let inode = table
        .lines()
        .filter(|l| !l.trim_start().starts_with("sl"))
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next()?, 16).ok();
            let matches =
                port(fields.get(1)?)? == server_port && port(fields.get(2)?)? == client_port;
            matches.then(|| fields.get(9).map(|inode| inode.to_string()))?
        });
    let Some(inode) = inode else { return false };
    let wanted = format!("socket:[{inode}]");
    std::fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
        fds.flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|target| target.to_string_lossy() == wanted)
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_connected_just_before_a_stop_is_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    let pid = server.pid();
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let client_port = stream.local_addr().unwrap().port();
    // The server has accepted it, and no request came yet.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !holds_connection(pid, server.port, client_port) {
        assert!(
            Instant::now() < deadline,
            "the connection was never accepted"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    server.wait_log("SIGTERM received").await;
    // Its request, sent now, is served (and the connection then closed).
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply))
        .await
        .expect("the connection ends within 10 s")
        .ok();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply:?}");
    assert!(reply.ends_with("pong"), "{reply:?}");
    let status = tokio::task::spawn_blocking(move || server.wait_exit())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread")]
async fn status_command_prints_json() {
    let server = Builder::rust().arg("w:2").start();
    server.wait_ready().await;
    let output = server.cli(&["status"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["name"], "rust");
    assert_eq!(status["workers"].as_array().unwrap().len(), 2);
    assert!(status["workers"][0]["pid"].as_u64().is_some());
}

#[tokio::test(flavor = "multi_thread")]
async fn sockets_are_private_to_the_server_user() {
    // Let other users traverse the temporary root, so only rip-server's own
    // modes stand between them and the sockets.
    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let server = Builder::node().arg("w:1").runtime(root).start();
    server.wait_ready().await;
    let dir = server.runtime_dir();
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "runtime directory mode");
    let control = std::fs::metadata(server.control_socket())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(control, 0o600, "control socket mode");

    // Another user cannot reach the control socket or a worker socket.
    // That takes root (to become user 65534), setpriv and python3: without
    // them the test fails saying what is missing, rather than passing.
    assert!(
        nix::unistd::getuid().is_root(),
        "this test must run as root: it connects to the sockets as user 65534 \
         (setpriv --reuid); .ci/run runs the suite as root"
    );
    for (tool, package) in [("setpriv", "util-linux"), ("/usr/bin/python3", "python3")] {
        assert!(
            std::process::Command::new(tool)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success()),
            "{tool} is missing: install {package} (apt-get install {package})"
        );
    }
    for socket in sockets_in(&dir) {
        let path = dir.join(&socket);
        let probe = format!(
            "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ntry:\n s.connect({:?})\nexcept PermissionError:\n sys.exit(13)\nsys.exit(0)",
            path.to_str().unwrap()
        );
        let output = std::process::Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/python3",
                "-c",
                &probe,
            ])
            .output()
            .unwrap();
        assert_eq!(
            output.status.code(),
            Some(13),
            "user 65534 could connect to {socket}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_instance_of_the_same_name_is_refused() {
    let first = Builder::rust().arg("w:1").start();
    first.wait_ready().await;
    let output = crate::harness::clean_command(crate::harness::BIN, first.runtime.path())
        .args([
            crate::harness::EXAMPLE_WORKER,
            "http:0",
            "--name=rust",
            "--reload=none",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("an instance named 'rust' is already running"),
        "{stderr}"
    );
    assert_eq!(
        first.get("/ping").await.status,
        200,
        "the first instance must be untouched"
    );
    assert!(sockets_in(&first.runtime_dir())
        .iter()
        .any(|s| s.starts_with("rust.w")));
}

/// A server started by hand: killed by PID when the test ends, passing or
/// not, with its log shown if the test failed.
struct HandStarted {
    child: Child,
    log: PathBuf,
}

impl Drop for HandStarted {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            eprintln!("---- rip-server log ----\n{log}");
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_closed_stdout_stops_neither_the_server_nor_a_command() {
    let runtime = tempfile::tempdir().unwrap();
    let log = runtime.path().join("server.log");
    let child = clean_command(BIN, runtime.path())
        .args([
            EXAMPLE_WORKER,
            "w:1",
            "http:0",
            "--reload=none",
            "--name=quiet",
        ])
        .stdout(closed_pipe())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("start rip-server");
    let mut server = HandStarted { child, log };
    let pid = server.child.id();
    let status_command = || {
        clean_command(BIN, runtime.path())
            .args(["status", "--name", "quiet"])
            .output()
            .expect("run rip-server status")
    };

    // The startup banner went nowhere; the server must still come up.
    let deadline = Instant::now() + Duration::from_secs(20);
    let status: serde_json::Value = loop {
        assert_eq!(server.child.try_wait().unwrap(), None, "rip-server exited");
        let output = status_command();
        if output.status.success() {
            break serde_json::from_slice(&output.stdout).unwrap();
        }
        assert!(Instant::now() < deadline, "no status within 20 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let url = status["listeners"][0].as_str().unwrap();
    let port: u16 = url.rsplit(':').next().unwrap().parse().unwrap();
    let reply = send(
        port,
        http::Request::get("/server")
            .body(Default::default())
            .unwrap(),
    )
    .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));

    // A command whose output nobody reads finishes normally.
    let quiet_status = clean_command(BIN, runtime.path())
        .args(["status", "--name", "quiet"])
        .stdout(closed_pipe())
        .status()
        .expect("run rip-server status");
    assert_eq!(quiet_status.code(), Some(0));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(
        wait_gone(pid, Duration::from_secs(15)).await,
        "rip-server still running"
    );
    assert_eq!(server.child.wait().unwrap().code(), Some(0));
}

/// An app that starts a helper process which ignores SIGTERM (as some
/// daemons and shells do) and does not wait for it; `GET /` answers the
/// helper's pid.
const APP_WITH_HELPER: &str = "import { spawn } from 'node:child_process';\n\
const helper = spawn('sh', ['-c', 'trap \"\" TERM; exec sleep 1000'], { stdio: 'ignore' });\n\
helper.unref();\n\
export default { fetch() { return new Response(String(helper.pid)); } };\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_ends_the_processes_an_app_started() {
    let dir = memory_tempdir();
    std::fs::write(dir.path().join("index.mjs"), APP_WITH_HELPER).unwrap();
    let mut server = Builder::app(dir.path().to_str().unwrap(), "helper")
        .arg("w:1")
        .start();
    server.wait_ready().await;
    let reply = server.get("/").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let helper: u32 = reply.body.parse().expect("the helper's pid");
    assert!(process_alive(helper), "the helper is not running");
    // SIGTERM drains the worker, which exits; its helper ignores SIGTERM.
    assert_eq!(server.terminate().code(), Some(0));
    if !wait_gone(helper, Duration::from_secs(10)).await {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(helper as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        panic!(
            "the app's helper {helper} outlived the server; log:\n{}",
            server.log()
        );
    }
}
