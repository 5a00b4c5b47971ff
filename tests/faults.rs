//! Supervision under faults: a failing slot is retried for as long as the
//! server runs, a slow or abandoned request costs no capacity, and no
//! process can take a worker away. The app is `tests/fixtures/faulty`,
//! which fails on purpose.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{serving_workers, Builder, Server};

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
