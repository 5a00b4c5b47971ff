//! The data path: forwarding, header hygiene, streaming, LIFO selection,
//! single-inflight workers and the busy retry.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};

use crate::harness::{http1, worker_pids, Builder, Gate, Server};

#[tokio::test(flavor = "multi_thread")]
async fn node_app_answers_through_the_server() {
    let server = Builder::node().arg("w:2").start();
    let reply = server.get("/ping").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "pong"));
    let reply = server.get("/").await;
    let hello: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(hello["hello"], "rip-server");
    assert!(hello["worker"].as_u64().unwrap() >= 1);
    let reply = server.get("/server").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = server.get("/missing").await;
    assert_eq!(reply.status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn internal_headers_never_cross_and_forwarded_headers_are_set() {
    let server = Builder::node().arg("w:1").start();
    let reply = server
        .request(
            Method::POST,
            "/echo?x=1",
            &[
                ("rip-probe", "1"),
                ("rip-worker-id", "99"),
                ("x-forwarded-for", "203.0.113.9"),
                ("connection", "keep-alive, x-hop"),
                ("x-hop", "1"),
            ],
            Bytes::from_static(b"hello body"),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(
        reply
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("rip-")),
        "internal header leaked to the client: {:?}",
        reply.headers
    );
    let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let headers = echo["headers"].as_object().unwrap();
    assert!(
        headers.keys().all(|k| !k.starts_with("rip-")),
        "client Rip-* header reached the worker: {headers:?}"
    );
    assert!(
        !headers.contains_key("x-hop"),
        "hop-by-hop header reached the worker"
    );
    // The client's own forwarding headers are not believed.
    assert_eq!(headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(headers["x-real-ip"], "127.0.0.1");
    assert_eq!(headers["x-forwarded-port"], server.port.to_string());
    assert_eq!(headers["x-forwarded-proto"], "http");
    assert_eq!(
        headers["x-forwarded-host"],
        format!("localhost:{}", server.port)
    );
    assert_eq!(echo["body"], "hello body");
    assert_eq!(echo["method"], "POST");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_keeps_its_own_ready_route() {
    let server = Builder::node().arg("w:1").start();
    let reply = server.get("/ready").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "app ready route")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_stream_without_buffering() {
    let server = Builder::node().arg("w:1").start();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, _connection) = http1(stream).await;
    let request = http::Request::get("/stream?n=5&ms=200")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    // A buffering proxy would deliver all five events at once.
    assert_eq!(&first[..], b"data: 0\n\n");
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
}

#[tokio::test(flavor = "multi_thread")]
async fn sequential_requests_stay_on_the_warmest_worker() {
    let server = Builder::node().arg("w:3").start();
    server.wait_ready().await;
    let mut workers = std::collections::BTreeSet::new();
    for _ in 0..20 {
        let reply = server.get("/").await;
        let hello: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        workers.insert(hello["worker"].as_u64().unwrap());
    }
    assert_eq!(
        workers.len(),
        1,
        "LIFO should reuse one worker for sequential requests, saw {workers:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn one_worker_serves_one_request_at_a_time() {
    // Requests held until the gate opens: the state below lasts until the
    // test has seen it, however loaded the machine.
    let server = Builder::gate().arg("w:1").start();
    server.wait_ready().await;
    let gate = Gate::new();
    let hold = gate.hold();
    let (a, b) = (server.get(&hold), server.get(&hold));
    let watch = async {
        // While both are in flight: one on the worker, one queued.
        server
            .wait_status("one busy, one queued", |s| {
                s["pool"]["busy"] == 1 && s["pool"]["queued"] == 1
            })
            .await;
        gate.open();
    };
    let (a, b, _) = tokio::join!(a, b, watch);
    assert_eq!((a.status, b.status), (200, 200));
    assert_eq!((a.body.as_str(), b.body.as_str()), ("released", "released"));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_serve_in_parallel() {
    let server = Builder::gate().arg("w:2").start();
    server.wait_ready().await;
    let gate = Gate::new();
    let hold = gate.hold();
    let (a, b) = (server.get(&hold), server.get(&hold));
    let watch = async {
        server
            .wait_status("both workers busy, nothing queued", |s| {
                s["pool"]["busy"] == 2 && s["pool"]["queued"] == 0
            })
            .await;
        gate.open();
    };
    let (a, b, _) = tokio::join!(a, b, watch);
    assert_eq!((a.status, b.status), (200, 200));
}

/// Occupies a worker behind the server's back: a slow request straight to
/// its socket, so the worker is busy while the pool sees it idle.
async fn occupy_worker_directly(
    server: &Server,
    worker: u64,
    ms: u64,
) -> tokio::task::JoinHandle<()> {
    let socket = server
        .runtime_dir()
        .join(format!("{}.w{worker}.sock", server.name));
    let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
    let (mut sender, _connection) = http1(stream).await;
    let request = http::Request::get(format!("/sleep?ms={ms}"))
        .header("host", "direct")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let task = tokio::spawn(async move {
        let response = sender.send_request(request).await.unwrap();
        let _ = response.into_body().collect().await;
    });
    // The worker answers busy once it holds the direct request.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let probe = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (mut probe, _connection) = http1(probe).await;
        let request = http::Request::get("/ping")
            .header("host", "direct")
            .body(Full::new(Bytes::new()))
            .unwrap();
        if probe
            .send_request(request)
            .await
            .unwrap()
            .headers()
            .contains_key("rip-worker-busy")
        {
            return task;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "worker {worker} never became busy"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The worker LIFO will pick next (the one that served the last request).
async fn warmest_worker(server: &Server) -> u64 {
    let reply = server.get("/").await;
    let hello: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    hello["worker"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_worker_is_skipped_for_a_bodiless_request() {
    let server = Builder::node().arg("w:2").start();
    server.wait_ready().await;
    let warmest = warmest_worker(&server).await;
    let _occupied = occupy_worker_directly(&server, warmest, 3000).await;
    // LIFO picks the occupied worker first; it answers busy and the request
    // moves to the other worker.
    let reply = server.get("/").await;
    assert_eq!(reply.status, 200);
    let hello: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_ne!(hello["worker"].as_u64().unwrap(), warmest);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rip_busy_retries_total{app=\"api\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn busy_answer_is_passed_on_for_a_request_with_a_body() {
    // Two workers, so a server that wrongly replayed the request would find
    // the idle one and answer 200. With no upload buffer the body streams
    // to the worker as it arrives: it cannot be sent twice.
    let server = Builder::node()
        .arg("w:2")
        .arg("--upload-buffer-bytes=0")
        .start();
    server.wait_ready().await;
    let warmest = warmest_worker(&server).await;
    let _occupied = occupy_worker_directly(&server, warmest, 3000).await;
    let reply = server
        .request(Method::POST, "/echo", &[], Bytes::from_static(b"payload"))
        .await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.body, "busy", "not the worker's own busy answer");
    assert!(
        reply
            .headers
            .keys()
            .all(|k| !k.as_str().starts_with("rip-")),
        "{:?}",
        reply.headers
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rip_busy_retries_total{app=\"api\"} 0"),
        "a streamed request was retried: {metrics}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_whose_client_left_keeps_its_worker_until_done() {
    let server = Builder::gate().arg("w:1").start();
    let pids = worker_pids(&server.wait_ready().await);
    // Send a held request and hang up while the worker is on it.
    let gate = Gate::new();
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, conn_task) = http1(stream).await;
    let request = http::Request::get(gate.hold())
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let pending = tokio::spawn(async move { sender.send_request(request).await });
    server
        .wait_status("the request reached the worker", |s| s["pool"]["busy"] == 1)
        .await;
    pending.abort();
    conn_task.abort();
    // A request with a body cannot be retried elsewhere: it must wait for the
    // worker to finish the abandoned request, not be sent into a busy worker.
    let next = server.request(Method::POST, "/echo", &[], Bytes::from_static(b"after"));
    let release = async {
        // The abandoned request still holds the worker; the next one waits.
        let status = server
            .wait_status("the next request queued (or the worker gone)", |s| {
                (s["pool"]["busy"] == 1 && s["pool"]["queued"] == 1) || worker_pids(s) != pids
            })
            .await;
        assert_eq!(
            worker_pids(&status),
            pids,
            "the worker was replaced while it held the abandoned request: {status:#}"
        );
        gate.open();
    };
    let (reply, ()) = tokio::join!(next, release);
    assert_eq!((reply.status, reply.body.as_str()), (200, "after"));
    // The same worker served it: the abandoned request cost no worker.
    let status = server.status().await;
    assert_eq!(
        worker_pids(&status),
        pids,
        "the worker was replaced: {status:#}"
    );
    assert_eq!(status["restarts"], 0, "{status:#}");
    assert_eq!(status["workers"][0]["requests"], 2, "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn access_log_as_json_lines() {
    let server = Builder::rust().arg("w:1").arg("--json-logging").start();
    assert_eq!(server.get("/ping").await.status, 200);
    server.wait_log("\"target\":\"access\"").await;
    let line = server
        .log()
        .lines()
        .find(|l| l.contains("\"target\":\"access\""))
        .unwrap()
        .to_string();
    let record: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(record["path"], "/ping");
    assert_eq!(record["status"], 200);
    assert_eq!(record["bytes"], 4);
    assert_eq!(record["method"], "GET");
    assert!(record["worker"].as_u64().is_some(), "{line}");
    assert!(
        record["queue_ms"].as_f64().is_some() && record["worker_ms"].as_f64().is_some(),
        "{line}"
    );
}

/// The access log line of the request whose path starts `path`.
async fn access_line(server: &Server, path: &str) -> String {
    server.wait_log(&format!("path={path}")).await;
    let log = server.log();
    log.lines()
        .find(|l| l.contains(&format!("path={path}")))
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_leaves_query_strings_out_unless_log_query() {
    let server = Builder::rust().arg("w:1").start();
    assert_eq!(server.get("/ping?token=secret").await.status, 200);
    let line = access_line(&server, "/ping").await;
    assert!(line.contains("path=/ping "), "{line}");
    assert!(!server.log().contains("secret"), "{}", server.log());

    let server = Builder::rust().arg("w:1").arg("--log-query").start();
    assert_eq!(server.get("/ping?token=secret").await.status, 200);
    let line = access_line(&server, "/ping").await;
    assert!(line.contains("path=/ping?token=secret "), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn request_paths_are_escaped_in_the_access_log() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = Builder::rust().arg("w:1").arg("--log-query").start();
    // What a request line lets through: a quote, a backslash, a
    // right-to-left override (it would show the rest of the line reversed)
    // and an encoded newline, which stays encoded.
    let request = "GET /forge\"d\\\u{202e}x?q=%0a HTTP/1.1\r\n\
                   Host: localhost\r\nConnection: close\r\n\r\n";
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut reply = Vec::new();
    let _ = stream.read_to_end(&mut reply).await;
    let line = access_line(&server, "\"/forge").await;
    assert!(
        line.contains(r#" path="/forge\"d\\\u{202e}x?q=%0a" status="#),
        "{line}"
    );
    assert!(!server.log().contains('\u{202e}'), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn no_access_log_writes_none() {
    let server = Builder::rust().arg("w:1").arg("--no-access-log").start();
    assert_eq!(server.get("/ping").await.status, 200);
    assert_eq!(server.get("/server").await.status, 200);
    let status = server.status().await; // a round trip after the requests
    assert_eq!(status["name"], "rust");
    assert!(!server.log().contains("access"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_responses_by_status() {
    let server = Builder::rust().arg("w:1").start();
    for _ in 0..3 {
        assert_eq!(server.get("/ping").await.status, 200);
    }
    assert_eq!(server.get("/status/418").await.status, 418);
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rip_requests_total{app=\"rust\",status=\"200\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rip_requests_total{app=\"rust\",status=\"418\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rip_upstream_latency_seconds_count{app=\"rust\"} 4"),
        "{metrics}"
    );
}
