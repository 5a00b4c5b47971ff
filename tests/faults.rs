//! Supervision under faults: a failing slot is retried for as long as the
//! server runs, a slow or abandoned request costs no capacity, and no
//! process can take a worker away. The app is `tests/fixtures/faulty`,
//! which fails on purpose.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{output_within, serving_workers, worker_pids, Builder, Server};

fn faulty() -> Builder {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faulty");
    Builder::app(app.to_str().unwrap(), "faulty").arg("--reload=none")
}

/// Waits until `/ping` answers 200 (a worker serves).
async fn wait_serving(server: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.get("/ping").await.status != 200 {
        assert!(
            Instant::now() < deadline,
            "{what}: not serving within 20 s; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crash_burst_never_stops_the_app() {
    let server = faulty().arg("w:1").arg("--max-backoff-ms=300").start();
    server.wait_ready().await;
    // More fast crashes in a row than any give-up count would allow.
    for round in 1..=8 {
        let before = serving_workers(&server.status().await);
        assert_eq!(server.get("/crash").await.body, "crashing", "round {round}");
        server
            .wait_status("the crashed worker replaced", |s| {
                let now = serving_workers(s);
                !now.is_empty() && now != before
            })
            .await;
    }
    let status = server.status().await;
    assert!(
        status["slots"][0]["failures"].as_u64().unwrap() >= 8,
        "{status:#}"
    );
    assert_eq!(status["slots"][0]["state"], "ok");
    assert_eq!(server.get("/ping").await.body, "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_cannot_boot_until_its_database_returns_serves_when_it_does() {
    let dir = tempfile::tempdir().unwrap();
    let marker: PathBuf = dir.path().join("db-down");
    std::fs::write(&marker, "").unwrap();
    let server = faulty()
        .arg("w:1")
        .arg("--max-backoff-ms=300")
        .env("FAULTY_BOOT_MARKER", marker.to_str().unwrap())
        .start();
    let status = server
        .wait_status("eight failed starts", |s| {
            s["slots"][0]["failures"].as_u64().unwrap_or(0) >= 8
        })
        .await;
    let slot = &status["slots"][0];
    assert_eq!(slot["state"], "failing", "{status:#}");
    assert!(
        slot["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("exited while starting"),
        "{slot}"
    );
    assert!(
        slot["next_retry_ms"].as_u64().unwrap_or(u64::MAX) <= 300,
        "{slot}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rip_slots_failing{app=\"faulty\"} 1"),
        "{metrics}"
    );
    assert_eq!(server.get("/ping").await.status, 503);
    // Logged loudly once, not once per failure.
    let loud = server.log().matches("worker slot is failing").count();
    assert_eq!(loud, 1, "{}", server.log());

    std::fs::remove_file(&marker).unwrap();
    let back = Instant::now();
    wait_serving(&server, "after the database came back").await;
    assert!(
        back.elapsed() < Duration::from_secs(5),
        "{:?}",
        back.elapsed()
    );
    let status = server.status().await;
    assert_eq!(status["slots"][0]["state"], "ok", "{status:#}");
    assert!(server
        .metrics()
        .await
        .contains("rip_slots_failing{app=\"faulty\"} 0"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_request_gets_504_and_its_worker_finishes_and_serves_on() {
    let server = faulty()
        .arg("w:1")
        .arg("--read-timeout-ms=300")
        .arg("--queue-timeout-ms=5000")
        .start();
    let worker = serving_workers(&server.wait_ready().await);
    let reply = server.get("/sleep?ms=1500").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    // The worker is still working: the next request waits for it instead of
    // getting a busy answer, and the same worker (not a replacement) serves it.
    let reply = server.get("/ping").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
    let status = server.status().await;
    assert_eq!(serving_workers(&status), worker, "{status:#}");
    assert_eq!(status["restarts"], 0, "{status:#}");
    server.wait_log("The worker may still finish").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_abandoned_request_keeps_its_worker_out_of_the_pool_until_it_is_done() {
    let server = faulty()
        .arg("w:1")
        .arg("--read-timeout-ms=500")
        .arg("--queue-timeout-ms=5000")
        .start();
    let worker = serving_workers(&server.wait_ready().await);
    // A client that leaves while its request runs.
    let port = server.port;
    let leaver = tokio::spawn(async move {
        let request = http::Request::get("/sleep?ms=2000")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        crate::harness::send(port, request).await
    });
    server
        .wait_status("the worker busy", |s| s["pool"]["busy"] == 1)
        .await;
    leaver.abort();
    server.wait_log("outcome=\"client-closed\"").await;
    // Past the read timeout the worker is still busy: it must not be handed
    // the next request (that would be a busy 503); the request waits for it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let reply = server.get("/ping").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
    assert_eq!(serving_workers(&server.status().await), worker);
    assert!(server.log().contains("status=499"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_still_busy_past_the_hung_timeout_is_drained_then_killed() {
    let server = faulty()
        .arg("w:1")
        .arg("--read-timeout-ms=200")
        .arg("--hung-timeout-ms=500")
        .arg("--grace-ms=500")
        .arg("--max-backoff-ms=200")
        .start();
    let before = crate::harness::worker_pids(&server.wait_ready().await);
    let reply = server.get("/sleep?ms=60000").await;
    assert_eq!(reply.status, 504);
    server
        .wait_log("worker still busy with a request its client left or timed out on")
        .await;
    // Drained first (SIGTERM), killed after the grace: gone within a few s.
    assert!(crate::harness::wait_gone(before[0], Duration::from_secs(10)).await);
    server
        .wait_log("did not exit within the grace period; killing it")
        .await;
    wait_serving(&server, "the replacement").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stray_quit_costs_no_capacity() {
    let server = faulty().arg("w:2").start();
    let workers = serving_workers(&server.wait_ready().await);
    // Any process of this user can reach the control socket; this one is not
    // the worker, and the worker is not draining.
    let body = format!("{{\"op\":\"quit\",\"workerId\":{}}}", workers[0]);
    let (status, answer) = rip_server::control::call(
        &server.control_socket(),
        http::Method::POST,
        "/worker",
        bytes::Bytes::from(body),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{answer}");
    server
        .wait_log("a quit for a worker that is not draining")
        .await;
    // The worker is replaced (replacement first), and the pool is whole.
    let status = server
        .wait_status("the quit worker replaced and the pool whole", |s| {
            let serving = serving_workers(s);
            let pool = &s["pool"];
            serving.len() == 2
                && !serving.contains(&workers[0])
                && pool["idle"].as_u64().unwrap_or(0) + pool["busy"].as_u64().unwrap_or(0) == 2
        })
        .await;
    assert_eq!(status["desired_workers"], 2);
    for _ in 0..4 {
        assert_eq!(server.get("/ping").await.status, 200);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_leaking_worker_is_recycled_past_max_rss_without_a_failed_request() {
    let server = faulty().arg("w:1").arg("--max-rss=160M").start();
    let first = serving_workers(&server.wait_ready().await);
    let status = server.status().await;
    let rss = status["workers"][0]["rss_bytes"].as_u64().unwrap();
    assert!(rss > 1024 * 1024 && rss < 160 * 1024 * 1024, "{rss}");
    // Each request keeps 32 MiB; past 160 MiB the worker is replaced,
    // replacement first, while requests keep coming.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reply = server.get("/leak?mb=32").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let now = serving_workers(&server.status().await);
        if !now.is_empty() && now != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not recycled; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.wait_log("resident memory is over --max-rss").await;
    assert!(server
        .metrics()
        .await
        .contains("rip_worker_memory_recycles_total{app=\"faulty\"} 1"));
    assert_eq!(server.status().await["restarts"], 0);
}

/// A process's `Key:` line from /proc/PID/status.
fn proc_status(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_run_as_the_given_user_and_the_server_keeps_three_capabilities() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test starts the server as root to check --user; run the test suite as root (CI does)"
    );
    let nobody = nix::unistd::User::from_name("nobody")
        .unwrap()
        .expect("a 'nobody' user");
    // The runtime directory's parent must be reachable by the workers' user.
    let runtime = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        runtime.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let server = faulty()
        .arg("w:1")
        .arg("--user=nobody")
        .runtime(runtime)
        .start();
    server.wait_ready().await;
    let worker: u32 = server.get("/pid").await.body.parse().unwrap();
    let uids = proc_status(worker, "Uid");
    assert!(
        uids.split_whitespace()
            .all(|uid| uid == nobody.uid.to_string()),
        "worker uids {uids}"
    );
    // CAP_KILL (5), CAP_SETGID (6), CAP_SETUID (7): 0xe0.
    assert_eq!(proc_status(server.pid(), "CapEff"), "00000000000000e0");
    assert_eq!(proc_status(server.pid(), "CapBnd"), "00000000000000e0");
    assert_eq!(server.get("/ping").await.body, "pong");
    server.wait_log("workers run as nobody").await;

    // Without --user, as root: said loudly.
    let root_run = faulty().arg("w:1").start();
    root_run.wait_ready().await;
    root_run.wait_log("the workers run as root too").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sighup_whose_roll_fails_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/faulty");
    let broken = dir.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("index.mjs"),
        "throw new Error('broken deploy');\n",
    )
    .unwrap();
    let config = dir.path().join("rip.toml");
    let write = |app: &Path, queue_timeout_ms: u64| {
        std::fs::write(
            &config,
            format!(
                "app = {:?}\nlisten = \"http:0\"\nworkers = 1\nreload = \"none\"\n\
                 queue_timeout_ms = {queue_timeout_ms}\nboot_timeout_ms = 2000\n",
                app
            ),
        )
        .unwrap();
    };
    write(&good, 5000);
    let server = Builder::bare("whole")
        .arg(&format!("--config={}", config.display()))
        .start();
    server.wait_ready().await;
    // A deploy of broken code with a shorter queue timeout: the roll fails,
    // so the queue timeout must stay 5 s too.
    write(&broken, 200);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    server.wait_log("nothing was changed").await;
    let port = server.port;
    let busy = tokio::spawn(async move {
        let request = http::Request::get("/sleep?ms=1000")
            .header("host", "localhost")
            .body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap();
        crate::harness::send(port, request).await
    });
    server
        .wait_status("the worker busy", |s| s["pool"]["busy"] == 1)
        .await;
    // Queued behind a 1 s request: served with the old 5 s queue timeout,
    // a 504 after 200 ms with the new one.
    let queued = server.get("/ping").await;
    assert_eq!((queued.status, queued.body.as_str()), (200, "pong"));
    assert_eq!(busy.await.unwrap().status, 200);
    let status = server.status().await;
    assert_eq!(
        status["app"]["dir"].as_str(),
        good.canonicalize().unwrap().to_str(),
        "{status:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_during_a_roll_is_started_again_and_the_deploy_lands() {
    let server = faulty()
        .arg("w:2")
        .env("FAULTY_BOOT_DELAY_MS", "1500")
        .start();
    let before = server.wait_ready().await;
    let old_generation = before["generation"].as_u64().unwrap();
    let reload = server
        .cli_command(&["reload", "--name", "faulty"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // A worker of the new generation, still booting: the OOM killer's victim.
    let status = server
        .wait_status("a worker of the new generation booting", |s| {
            new_generation_pid(s, old_generation).is_some()
        })
        .await;
    let victim = new_generation_pid(&status, old_generation).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(victim as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = output_within(reload, Duration::from_secs(60))
        .expect("rip-server reload did not finish within 60 s");
    assert!(
        out.status.success(),
        "the roll failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let after = server.status().await;
    assert_eq!(after["generation"].as_u64(), Some(old_generation + 1));
    assert_eq!(after["last_roll"]["ok"], true, "{after:#}");
    assert!(!worker_pids(&after).contains(&victim), "{after:#}");
    server
        .wait_log("a worker of the new generation died during the roll")
        .await;
    assert_eq!(server.get("/ping").await.body, "pong");
}

/// The pid of a worker newer than `generation`, if one is running.
fn new_generation_pid(status: &serde_json::Value, generation: u64) -> Option<u32> {
    status["workers"]
        .as_array()?
        .iter()
        .find(|w| w["generation"].as_u64().is_some_and(|g| g > generation))
        .and_then(|w| w["pid"].as_u64())
        .map(|p| p as u32)
}

/// Out of file descriptors, the control socket cannot accept; the pending
/// connection keeps it ready, so a naive loop spins and logs each failure
/// (it logged one every 50 ms). It backs off and reports at most once
/// every 10 s, then says when it accepts again.
#[tokio::test(flavor = "multi_thread")]
async fn out_of_descriptors_the_control_socket_backs_off_and_reports_rarely() {
    const FAILED: &str = "control socket: accept failed";
    let server = Builder::rust().arg("w:1").open_file_limit(128).start();
    server.wait_ready().await;
    // Control connections, held open, until the server has no descriptor
    // left to accept one more.
    let mut held = Vec::new();
    while !server.log().contains(FAILED) {
        assert!(
            held.len() < 1000,
            "1000 control connections and no accept failed; log:\n{}",
            server.log()
        );
        let connect = tokio::net::UnixStream::connect(server.control_socket());
        if let Ok(Ok(stream)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
            held.push(stream);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // An observation window, not a wait for a state: a spinning loop
    // reports dozens of times in it, a backed-off one not at all.
    let reports = |log: &str| log.matches(FAILED).count();
    let before = reports(&server.log());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let during = reports(&server.log()) - before;
    assert!(
        during <= 1,
        "{during} accept failure reports in 2 s; log:\n{}",
        server.log()
    );

    // Descriptors free again: the next connection is accepted (within the
    // backoff's second), and that is said.
    drop(held);
    assert_eq!(server.status().await["name"], "rust");
    server
        .wait_log("control socket: accepting again after")
        .await;
}
