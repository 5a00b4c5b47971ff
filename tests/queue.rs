//! The wait queue and the timeouts of DESIGN §3: queue full → 503 with
//! Retry-After, queue timeout → 504, read timeout → 504 and the worker replaced.

use crate::harness::{serving_workers, Builder, Gate};

#[tokio::test(flavor = "multi_thread")]
async fn full_queue_answers_503_with_retry_after() {
    // Held requests: the full queue lasts until the test has used it.
    let server = Builder::gate()
        .arg("w:1")
        .arg("--max-queue=1")
        .arg("--queue-timeout-ms=20000")
        .start();
    server.wait_ready().await;
    let gate = Gate::new();
    let hold = gate.hold();
    let (busy, queued) = (server.get(&hold), server.get(&hold));
    let overflow = async {
        server
            .wait_status("one busy, one queued", |s| {
                s["pool"]["busy"] == 1 && s["pool"]["queued"] == 1
            })
            .await;
        let overflow = server.get("/ping").await;
        gate.open();
        overflow
    };
    let (busy, queued, overflow) = tokio::join!(busy, queued, overflow);
    assert_eq!((busy.status, queued.status), (200, 200));
    assert_eq!(overflow.status, 503, "{}", overflow.body);
    assert_eq!(overflow.headers["retry-after"], "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn waiting_past_the_queue_timeout_answers_504() {
    let server = Builder::gate()
        .arg("w:1")
        .arg("--queue-timeout-ms=300")
        .start();
    server.wait_ready().await;
    let gate = Gate::new();
    let hold = gate.hold();
    let busy = server.get(&hold);
    let waiting = async {
        server
            .wait_status("worker busy", |s| s["pool"]["busy"] == 1)
            .await;
        let waiting = server.get("/ping").await;
        gate.open();
        waiting
    };
    let (busy, waiting) = tokio::join!(busy, waiting);
    assert_eq!(busy.status, 200);
    assert_eq!(waiting.status, 504, "{}", waiting.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn hung_worker_gets_504_and_is_replaced() {
    // 2 s: short enough for a quick test, long enough that the /ping on the
    // replacement below is not a 504 on a loaded machine.
    let server = Builder::node()
        .arg("w:1")
        .arg("--read-timeout-ms=2000")
        .arg("--hung-timeout-ms=1000")
        .arg("--max-backoff-ms=200")
        .start();
    let before = serving_workers(&server.wait_ready().await);
    let reply = server.get("/sleep?ms=30000").await;
    assert_eq!(reply.status, 504, "{}", reply.body);
    let after = server
        .wait_status("a replacement worker serving", |s| {
            let now = serving_workers(s);
            !now.is_empty() && now.iter().all(|id| !before.contains(id))
        })
        .await;
    assert_eq!(after["restarts"], 1);
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn client_leaving_the_queue_never_reaches_a_worker() {
    let server = Builder::gate().arg("w:1").start();
    server.wait_ready().await;
    let gate = Gate::new();
    let hold = gate.hold();
    let busy = server.get(&hold);
    let leaver = async {
        server
            .wait_status("worker busy", |s| s["pool"]["busy"] == 1)
            .await;
        let queued = tokio::spawn({
            let port = server.port;
            async move {
                let request = http::Request::post("/echo")
                    .header("host", "localhost")
                    .body(http_body_util::Full::new(bytes::Bytes::from_static(
                        b"from the leaver",
                    )))
                    .unwrap();
                crate::harness::send(port, request).await
            }
        });
        server
            .wait_status("one queued", |s| s["pool"]["queued"] == 1)
            .await;
        queued.abort();
        server
            .wait_status("queue empty", |s| s["pool"]["queued"] == 0)
            .await;
        gate.open();
    };
    let (busy, ()) = tokio::join!(busy, leaver);
    assert_eq!(busy.status, 200);
    assert_eq!(server.get("/ping").await.status, 200);
    // Two requests reached the worker (the held one and the ping); the leaver did not.
    let status = server.status().await;
    let served: u64 = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(served, 2, "{status:#}");
}
