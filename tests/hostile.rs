//! Hostile clients and misbehaving workers: no response reaches the wrong
//! client, no worker is held hostage, nothing waits without a deadline.
//! Workers here misbehave on purpose: `tests/fixtures/raw-worker` (HTTP/1.1
//! by hand) and `tests/fixtures/lying-app` (a fetch handler that lies about
//! its body, run by the Node loader).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;

use crate::harness::{serving_workers, Builder, Server};

fn lying_app() -> Builder {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/lying-app");
    Builder::app(app.to_str().unwrap(), "lying")
        .arg("w:1")
        .arg("--reload=none")
}

/// The value of a counter in `/metrics` text (0 when absent).
async fn counter(server: &Server, name: &str) -> u64 {
    let metrics = server.metrics().await;
    metrics
        .lines()
        .find(|line| line.starts_with(name))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread")]
async fn bytes_a_worker_sends_after_its_answer_never_reach_the_next_client() {
    let server = Builder::raw_worker().start();
    let first = serving_workers(&server.wait_ready().await);

    // A 204, then 50 ms later a whole second answer nobody asked for. It
    // lands on the idle connection; the next client must not get it.
    let reply = server.get("/late-bytes").await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    server.wait_log("raw-worker: wrote stray bytes 1").await;
    assert_eq!(server.get("/ping").await.body, "pong");

    // A second answer in the same write as the first.
    let reply = server.get("/extra-bytes").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    assert_eq!(server.get("/ping").await.body, "pong");

    // A body sent for HEAD.
    let head = server
        .request(Method::HEAD, "/head-body", &[], Bytes::new())
        .await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(server.get("/ping").await.body, "pong");

    assert_eq!(counter(&server, "rip_worker_stray_bytes_total").await, 3);
    server
        .wait_log("the worker sent bytes outside any response")
        .await;
    // The worker is reported and replaced (its replacement boots first).
    server
        .wait_status("the misbehaving worker replaced", |s| {
            let now = serving_workers(s);
            !now.is_empty() && now != first
        })
        .await;
    assert_eq!(server.get("/ping").await.body, "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_that_lies_about_its_length_cannot_desync_the_next_request() {
    let server = lying_app().start();
    server.wait_ready().await;
    // A streamed body longer than its declared Content-Length: the client
    // gets exactly the declared bytes, and the next request its own answer.
    let reply = server.get("/longer-than-declared").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello"));
    assert_eq!(server.get("/ping").await.body, "pong");
    // Shorter than declared: the answer cannot be completed, so it is cut off.
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, _conn) = crate::harness::http1(stream).await;
    let request = http::Request::get("/shorter-than-declared")
        .header("host", "x")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("a response head");
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(
        Duration::from_secs(10),
        http_body_util::BodyExt::collect(response.into_body()),
    )
    .await
    .expect("the cut-off answer ends within 10 s");
    assert!(body.is_err(), "a short body must not look complete");
    assert_eq!(server.get("/ping").await.body, "pong");
    // In memory, the same lies: the loader sends the real length.
    let reply = server.get("/in-memory-wrong-length").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello world"));
    assert_eq!(server.get("/ping").await.body, "pong");
    // HEAD and 204 carry no body whatever the app returns.
    let head = server
        .request(Method::HEAD, "/longer-than-declared", &[], Bytes::new())
        .await;
    assert_eq!((head.status, head.body.as_str()), (200, ""));
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(counter(&server, "rip_worker_stray_bytes_total").await, 0);
}
