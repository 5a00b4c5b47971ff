//! The load-balancer twin of `vm-tests/cluster.nix`, on loopback: two
//! rip-server nodes behind a real HAProxy that health-checks `GET /server`,
//! deployed node by node under load. A stopping node answers `/server` with
//! 503 for `--shutdown-delay-ms` while it still serves, so HAProxy takes it
//! out before its listener closes; the new version then starts on the same
//! port and HAProxy takes it back. No request may fail.
//!
//! HAProxy is deliberately strict here (`retries 0`, no `option redispatch`):
//! a request sent to a node that already closed would come back as 503, so
//! zero failures shows the drain worked, not that HAProxy retried.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::systemd::{wait_version, write_app, Launch, Load, Running};

/// The HAProxy binary: on PATH (a Nix build's check inputs), else Debian's.
fn haproxy_binary() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("haproxy"))
            .find(|candidate| candidate.is_file())
    });
    let found = on_path.unwrap_or_else(|| PathBuf::from("/usr/sbin/haproxy"));
    assert!(
        found.is_file(),
        "haproxy is not installed (not on PATH, not /usr/sbin/haproxy); \
         this test needs it: apt-get install haproxy (.ci/run does)"
    );
    found
}

/// A free loopback port (bound and released; HAProxy binds it next).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

/// A running HAProxy, stopped by its pid on drop.
struct Haproxy {
    child: Child,
    port: u16,
    stats: PathBuf,
    /// Its config, stats socket and log.
    _dir: tempfile::TempDir,
}

impl Haproxy {
    fn start(servers: &[(&str, u16)]) -> Haproxy {
        let dir = tempfile::tempdir().unwrap();
        let stats = dir.path().join("stats.sock");
        let port = free_port();
        let backends: String = servers
            .iter()
            .map(|(name, port)| format!("    server {name} 127.0.0.1:{port}\n"))
            .collect();
        let config = format!(
            "global\n\
             \x20   stats socket {stats} mode 600 level admin\n\
             defaults\n\
             \x20   mode http\n\
             \x20   timeout connect 2s\n\
             \x20   timeout client 30s\n\
             \x20   timeout server 30s\n\
             \x20   timeout check 1s\n\
             \x20   retries 0\n\
             frontend web\n\
             \x20   bind 127.0.0.1:{port}\n\
             \x20   default_backend nodes\n\
             backend nodes\n\
             \x20   balance roundrobin\n\
             \x20   option httpchk GET /server\n\
             \x20   http-check expect status 200\n\
             \x20   default-server check inter 100ms fall 1 rise 1\n\
             {backends}",
            stats = stats.display()
        );
        let path = dir.path().join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("haproxy.log")).unwrap();
        let child = Command::new(haproxy_binary())
            .args(["-db", "-f"])
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start haproxy");
        Haproxy {
            child,
            port,
            stats,
            _dir: dir,
        }
    }

    /// Each server's health as HAProxy sees it (`UP`, `DOWN`, …).
    async fn states(&self) -> Vec<(String, String)> {
        let Ok(mut socket) = tokio::net::UnixStream::connect(&self.stats).await else {
            return Vec::new();
        };
        if socket.write_all(b"show stat\n").await.is_err() {
            return Vec::new();
        }
        let mut csv = String::new();
        let _ = socket.read_to_string(&mut csv).await;
        let mut lines = csv.lines();
        let header: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let column = |name: &str| header.iter().position(|h| *h == name);
        let (Some(proxy), Some(server), Some(status)) =
            (column("pxname"), column("svname"), column("status"))
        else {
            return Vec::new();
        };
        lines
            .map(|line| line.split(',').collect::<Vec<_>>())
            .filter(|f| f.get(proxy) == Some(&"nodes") && f.len() > status)
            .filter(|f| !["FRONTEND", "BACKEND"].contains(&f[server]))
            .map(|f| (f[server].to_string(), f[status].to_string()))
            .collect()
    }

    /// Waits until HAProxy reports `server` as `state` (`UP` or `DOWN`).
    async fn wait_state(&self, server: &str, state: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let states = self.states().await;
            if states
                .iter()
                .any(|(name, s)| name == server && s.starts_with(state))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "haproxy never saw {server} {state}: {states:?}; its log:\n{}",
                std::fs::read_to_string(self._dir.path().join("haproxy.log")).unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One node: `app` on `port` (0: the kernel picks), draining for 1 s on stop.
fn node(app: &Path, name: &str, port: u16) -> Running {
    Launch::new(app, name)
        .arg(&format!("http:{port}"))
        .arg("w:2")
        .arg("--shutdown-delay-ms=1000")
        .arg("--no-access-log")
        .start()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn drain_then_switch_behind_haproxy_drops_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (v1, v2) = (dir.path().join("v1"), dir.path().join("v2"));
    write_app(&v1, "v1", 0);
    write_app(&v2, "v2", 0);
    let mut nodes = [node(&v1, "a", 0), node(&v1, "b", 0)];
    let ports: Vec<u16> = nodes.iter().map(Running::port).collect();
    let haproxy = Haproxy::start(&[("a", ports[0]), ("b", ports[1])]);
    haproxy.wait_state("a", "UP").await;
    haproxy.wait_state("b", "UP").await;
    wait_version(haproxy.port, "v1").await;

    let load = Load::start(haproxy.port, 16);
    load.wait_answers(10).await;
    for (i, name) in ["a", "b"].into_iter().enumerate() {
        nodes[i].signal(nix::sys::signal::Signal::SIGTERM);
        // Out of the pool while it still runs: drained, not cut.
        haproxy.wait_state(name, "DOWN").await;
        assert!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(nodes[i].pid() as i32), None).is_ok(),
            "node {name} had exited before haproxy took it out"
        );
        assert!(nodes[i].wait_exit().await.success());
        nodes[i] = node(&v2, name, ports[i]);
        haproxy.wait_state(name, "UP").await;
        // Every client answered after the upgraded node's return, before
        // the next one goes.
        load.wait_answers(10).await;
    }
    wait_version(haproxy.port, "v2").await;
    // Every client's last answers come after both nodes run v2.
    load.wait_answers(2).await;
    let logs = load.finish().await;
    let mut total = 0;
    for log in &logs {
        log.assert_clean();
        total += log.sent;
        assert_eq!(log.bodies.last().map(String::as_str), Some("v2"));
    }
    assert!(total > 300, "too little load: {total} requests");
    eprintln!("{total} requests through haproxy across a node-by-node deploy, all answered 200");
}
