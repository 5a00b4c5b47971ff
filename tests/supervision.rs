//! Worker supervision: recycling by request count, crash → 502 and respawn,
//! failed boots back off, and a killed server leaves no orphans.

use std::time::Duration;

use crate::harness::{process_alive, serving_workers, sockets_in, wait_gone, worker_pids, Builder};

#[tokio::test(flavor = "multi_thread")]
async fn recycling_by_request_count_keeps_answering() {
    let server = Builder::node().arg("w:2").arg("r:5").start();
    server.wait_ready().await;
    // A recycled worker keeps serving until its replacement is ready, so keep
    // sending until four generations of workers have answered (bounded).
    let mut seen = std::collections::BTreeSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut sent = 0;
    while seen.len() < 4 {
        assert!(
            std::time::Instant::now() < deadline,
            "only saw workers {seen:?} in {sent} requests"
        );
        let reply = server.get("/").await;
        sent += 1;
        assert_eq!(reply.status, 200, "request {sent}: {}", reply.body);
        let hello: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        seen.insert(hello["worker"].as_u64().unwrap());
    }
    let metrics = server.metrics().await;
    let recycles: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rip_worker_recycles_total{app=\"api\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(recycles >= 2, "{metrics}");
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
    let server = Builder::node().arg("w:1").start();
    let pid = worker_pids(&server.wait_ready().await)[0];
    let slow = server.get("/sleep?ms=5000");
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
