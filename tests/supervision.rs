//! Worker supervision: recycling by request count and by age (capacity
//! never drops), crash → 502 and respawn,
//! failed boots back off, and a killed server leaves no orphans.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::harness::{
    process_alive, send, serving_workers, sockets_in, wait_gone, worker_pids, Builder, Gate, Server,
};

/// Load and a capacity watch while workers recycle: `clients` keep-alive
/// clients send `GET /` and a sampler reads `/status` every few ms, until
/// `done(status)` holds (bounded). Every answer must be 200, and no sample
/// may show fewer than `workers` serving workers: a replacement is ready
/// before the worker it replaces leaves.
async fn recycle_under_load(
    server: &Server,
    workers: usize,
    clients: usize,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let stop = Arc::new(AtomicBool::new(false));
    let load: Vec<_> = (0..clients)
        .map(|_| {
            let (port, stop) = (server.port, stop.clone());
            tokio::spawn(async move {
                let mut answers = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let request = http::Request::get("/").body(Default::default()).unwrap();
                    let reply = send(port, request).await;
                    if reply.status != 200 {
                        return Err(format!("{}: {}", reply.status, reply.body));
                    }
                    answers += 1;
                }
                Ok(answers)
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut samples = 0;
    let mut replacing = 0;
    let status = loop {
        let status = server.status().await;
        // A worker due for recycling still serves until it is replaced.
        let serving = status["workers"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|w| w["state"] == "serving" || w["state"] == "recycling")
            .count();
        if serving < workers {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "capacity dropped to {serving} serving workers of {workers}: {status:#}\nlog:\n{}",
                server.log()
            );
        }
        samples += 1;
        // A replacement booting beside the worker it replaces.
        replacing += usize::from(status["workers"].as_array().unwrap().len() > workers);
        if done(&status) {
            break status;
        }
        if Instant::now() > deadline {
            stop.store(true, Ordering::Relaxed);
            panic!(
                "recycling never finished: {status:#}\nlog:\n{}",
                server.log()
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    stop.store(true, Ordering::Relaxed);
    let mut answers = 0;
    for client in load {
        answers += client.await.unwrap().unwrap_or_else(|e| {
            panic!(
                "a request failed during recycling: {e}\nlog:\n{}",
                server.log()
            )
        });
    }
    assert!(
        replacing >= 3,
        "only {replacing} of {samples} samples caught a replacement booting"
    );
    assert!(answers > 0);
    status
}

fn recycles(metrics: &str, app: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&format!("rip_worker_recycles_total{{app=\"{app}\"}} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no recycles metric in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn recycling_by_request_count_keeps_capacity_and_answering() {
    let server = Builder::node().arg("w:2").arg("r:5").start();
    let first = worker_pids(&server.wait_ready().await);
    let status = recycle_under_load(&server, 2, 4, |s| {
        let pids = worker_pids(s);
        // Both original workers gone, their replacements serving. (Not "and alone": at r:5
        // a worker is due again within milliseconds of taking over, so with workers this
        // fast a moment without a replacement booting is too short for a sampler to see.)
        first.iter().all(|p| !pids.contains(p)) && serving_workers(s).len() >= 2
    })
    .await;
    let metrics = server.metrics().await;
    assert!(recycles(&metrics, "api") >= 2, "{metrics}\n{status:#}");
    server.wait_log("reason=Requests").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn recycling_by_age_keeps_capacity_and_answering() {
    // r:0,2s: no request limit; each worker is due after 1.8 to 2 s
    // (jitter), however many requests it served.
    let server = Builder::node().arg("w:2").arg("r:0,2s").start();
    let first = worker_pids(&server.wait_ready().await);
    recycle_under_load(&server, 2, 2, |s| {
        let pids = worker_pids(s);
        first.iter().all(|p| !pids.contains(p)) && serving_workers(s).len() == 2
    })
    .await;
    assert!(recycles(&server.metrics().await, "api") >= 2);
    server.wait_log("reason=Age").await;
    assert!(
        !server.log().contains("reason=Requests"),
        "recycled by request count, not age"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_dying_mid_request_gets_502_and_is_respawned() {
    let server = Builder::rust().arg("w:1").start();
    let before = serving_workers(&server.wait_ready().await);
    let reply = server.get("/exit").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    server
        .wait_status("a new worker serving", |s| {
            let now = serving_workers(s);
            !now.is_empty() && now.iter().all(|id| !before.contains(id))
        })
        .await;
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn worker_killed_during_a_request_costs_only_that_request() {
    // The request is held (never released): only the kill can end it.
    let server = Builder::gate().arg("w:1").start();
    let pid = worker_pids(&server.wait_ready().await)[0];
    let gate = Gate::new();
    let hold = gate.hold();
    let slow = server.get(&hold);
    let kill = async {
        server
            .wait_status("the worker busy", |s| s["pool"]["busy"] == 1)
            .await;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    };
    let (slow, ()) = tokio::join!(slow, kill);
    assert_eq!(slow.status, 502, "{}", slow.body);
    server
        .wait_status("a respawned worker", |s| {
            !worker_pids(s).contains(&pid) && !serving_workers(s).is_empty()
        })
        .await;
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_cannot_boot_backs_off_and_answers_503() {
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("broken");
    std::fs::create_dir(&app).unwrap();
    std::fs::write(
        app.join("index.mjs"),
        "throw new Error('boom at import');\n",
    )
    .unwrap();
    let server = Builder::app(app.to_str().unwrap(), "broken")
        .arg("w:1")
        .start();
    let status = server
        .wait_status("the slot failing", |s| s["slots"][0]["state"] == "failing")
        .await;
    assert!(status["slots"][0]["failures"].as_u64().unwrap() >= 1);
    let reply = server.get("/ping").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        server.log().contains("boom at import"),
        "the app's error should be in the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_server_leaves_no_orphans_and_the_next_start_cleans_up() {
    let mut server = Builder::node().arg("w:2").start();
    let pids = worker_pids(&server.wait_ready().await);
    assert_eq!(pids.len(), 2);
    server.kill_hard();
    for pid in &pids {
        assert!(
            wait_gone(*pid, Duration::from_secs(10)).await,
            "worker {pid} outlived a SIGKILLed server"
        );
    }
    let runtime_dir = server.runtime_dir();
    let stale = sockets_in(&runtime_dir);
    assert!(
        stale.iter().any(|s| s.ends_with(".ctl.sock")),
        "expected a stale control socket, found {stale:?}"
    );
    std::fs::write(runtime_dir.join("api.w999.sock"), "").unwrap();

    let runtime = std::mem::replace(&mut server.runtime, tempfile::tempdir().unwrap());
    drop(server);
    let server = Builder::node().arg("w:1").runtime(runtime).start();
    server.wait_ready().await;
    assert_eq!(server.get("/ping").await.status, 200);
    let sockets = sockets_in(&server.runtime_dir());
    assert!(
        !sockets.contains(&"api.w999.sock".to_string()),
        "stale worker socket kept: {sockets:?}"
    );
    assert!(pids.iter().all(|pid| !process_alive(*pid)));
}

/// A worker gets what the worker protocol gives it, not what was the
/// server's: neither the variables systemd set for the server nor a
/// descriptor the server inherited without close-on-exec.
#[tokio::test(flavor = "multi_thread")]
async fn workers_inherit_neither_systemd_variables_nor_stray_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("the-servers-own-file");
    let file = std::fs::File::create(&marker).unwrap();
    let server = Builder::probe()
        .arg("w:1")
        .env(
            "NOTIFY_SOCKET",
            &dir.path().join("notify").display().to_string(),
        )
        .env("WATCHDOG_USEC", "30000000")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDS", "1")
        .env("JOURNAL_STREAM", "8:12345")
        .inherit_fd(file, 7)
        .start();
    server.wait_ready().await;
    // The test's setup took: the server holds the file as fd 7.
    let held = std::fs::read_link(format!("/proc/{}/fd/7", server.pid())).unwrap();
    assert_eq!(held, marker);

    let reply = server.get("/inherited").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen["env"], serde_json::json!({}), "{seen:#}");
    let fds = seen["fds"].as_object().unwrap();
    assert!(
        !fds.is_empty(),
        "node's own descriptors are listed: {seen:#}"
    );
    // Sockets too: a descriptor shared with the server has the same
    // target (socket:[inode]) on both sides.
    let server_fds: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .map(|target| target.display().to_string())
        .filter(|target| target.starts_with("socket:"))
        .collect();
    for (fd, target) in fds {
        let target = target.as_str().unwrap_or_default();
        assert!(
            target != marker.display().to_string() && !server_fds.iter().any(|s| s == target),
            "the worker holds the server's fd {fd} -> {target}: {seen:#}"
        );
    }
}
