//! Hostile clients and misbehaving workers: no response reaches the wrong
//! client, no worker is held hostage, nothing waits without a deadline.
//! Workers here misbehave on purpose: `tests/fixtures/raw-worker` (HTTP/1.1
//! by hand) and `tests/fixtures/lying-app` (a fetch handler that lies about
//! its body, run by the Node loader).

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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
    // Shorter than declared: the answer cannot be completed. The loader cuts
    // it off; the server, which had not answered yet, says the app failed.
    let reply = server.get("/shorter-than-declared").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
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

/// Sends `request` on a fresh connection and reads until the server closes
/// it (or 15 s pass).
async fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "no complete reply within 15 s");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The status line's code of a raw reply.
fn status_of(reply: &str) -> &str {
    reply.split(' ').nth(1).unwrap_or("")
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_that_is_not_an_authority_is_refused_and_the_target_wins() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    let port = server.port;
    for (request, why) in [
        (
            "GET /ping HTTP/1.1\r\nHost: x/echo?\r\n\r\n",
            "a path in Host",
        ),
        (
            "GET /ping HTTP/1.1\r\nHost: user@x\r\n\r\n",
            "userinfo in Host",
        ),
        (
            "GET /ping HTTP/1.1\r\nHost: x:port\r\n\r\n",
            "a port that is not a number",
        ),
        ("GET /ping HTTP/1.1\r\n\r\n", "no Host"),
        (
            "GET /ping HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
            "two Hosts",
        ),
    ] {
        let reply = raw(port, request.as_bytes()).await;
        assert_eq!(status_of(&reply), "400", "{why}: {reply}");
    }
    // An absolute-form target wins over Host, and is what the app sees.
    let reply = raw(
        port,
        b"GET http://real.example:8080/echo HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), "200", "{reply}");
    let body = reply.split_once("\r\n\r\n").unwrap().1;
    let echo: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["host"], "real.example:8080");
    assert_eq!(echo["headers"]["x-forwarded-host"], "real.example:8080");
    // HTTP/1.0 may leave Host out.
    let reply = raw(port, b"GET /ping HTTP/1.0\r\n\r\n").await;
    assert_eq!(status_of(&reply), "200", "{reply}");
}

#[tokio::test(flavor = "multi_thread")]
async fn over_http2_the_authority_wins_over_host() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    // HTTP/2 with prior knowledge, on the plain port.
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(connection);
    let request = http::Request::get("http://real.example/echo")
        .header("host", "other.example")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["headers"]["host"], "real.example");
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarding_headers_are_the_servers_own_unless_a_trusted_proxy_sent_them() {
    let spoofed: &[(&str, &str)] = &[
        ("x-forwarded-for", "6.6.6.6"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "evil.example"),
        ("x-forwarded-port", "1"),
        ("x-real-ip", "6.6.6.6"),
        ("forwarded", "for=6.6.6.6"),
        ("x_forwarded_for", "6.6.6.6"),
        ("rip_probe", "1"),
    ];
    let echo = |reply: crate::harness::Reply| -> serde_json::Value {
        assert_eq!(reply.status, 200, "{}", reply.body);
        let echo: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        echo["headers"].clone()
    };

    let server = Builder::node().arg("w:1").start();
    let seen = echo(
        server
            .request(Method::GET, "/echo", spoofed, Bytes::new())
            .await,
    );
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-real-ip"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(
        seen["x-forwarded-host"],
        format!("localhost:{}", server.port)
    );
    assert_eq!(seen["x-forwarded-port"], server.port.to_string());
    assert!(seen.get("forwarded").is_none(), "{seen}");
    for name in ["x_forwarded_for", "rip_probe"] {
        assert!(seen.get(name).is_none(), "{name} crossed: {seen}");
    }
    drop(server);

    let behind_proxy = Builder::node()
        .arg("w:1")
        .arg("--trusted-proxies=10.0.0.0/8,127.0.0.1")
        .start();
    let seen = echo(
        behind_proxy
            .request(Method::GET, "/echo", spoofed, Bytes::new())
            .await,
    );
    assert_eq!(seen["x-forwarded-for"], "6.6.6.6, 127.0.0.1");
    assert_eq!(seen["x-real-ip"], "6.6.6.6");
    assert_eq!(seen["x-forwarded-proto"], "https");
    assert_eq!(seen["x-forwarded-host"], "evil.example");
    assert_eq!(seen["x-forwarded-port"], "1");
    assert_eq!(seen["forwarded"], "for=6.6.6.6");
    assert!(seen.get("x_forwarded_for").is_none(), "{seen}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_trace_and_unknown_codings_are_refused_at_the_edge() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    let port = server.port;
    let reply = raw(
        port,
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), "501", "{reply}");
    let reply = raw(port, b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(status_of(&reply), "405", "{reply}");
    assert!(reply.to_lowercase().contains("\r\nallow: "), "{reply}");
    let reply = raw(
        port,
        b"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(status_of(&reply), "501", "{reply}");
    // None of them reached the app.
    assert!(!server.log().contains("path=/echo"), "{}", server.log());
}

/// A client that uploads `length` bytes at one byte every `pause`.
fn slow_uploader(port: u16, length: usize, pause: Duration) -> tokio::task::JoinHandle<String> {
    tokio::spawn(async move {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let head = format!("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let (mut reader, mut writer) = stream.into_split();
        let trickle = tokio::spawn(async move {
            for _ in 0..length {
                if writer.write_all(b"x").await.is_err() {
                    break;
                }
                tokio::time::sleep(pause).await;
            }
        });
        let mut reply = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(60), reader.read_to_end(&mut reply)).await;
        trickle.abort();
        String::from_utf8_lossy(&reply).into_owned()
    })
}

/// A client that asks for `path` and reads its answer `chunk` bytes every
/// `pause`, through a small receive buffer.
fn slow_reader(
    port: u16,
    path: &str,
    chunk: usize,
    pause: Duration,
) -> tokio::task::JoinHandle<usize> {
    let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tokio::spawn(async move {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(([127, 0, 0, 1], port).into()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut total = 0;
        let mut buf = vec![0u8; chunk];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_uploaders_and_slow_readers_do_not_hold_the_workers() {
    let server = Builder::node().arg("w:2").start();
    server.wait_ready().await;
    let port = server.port;
    // Two uploads at one byte a second, two 512 KiB answers read at 1 KiB a
    // second: as many slow clients as workers, each kind.
    let uploaders: Vec<_> = (0..2)
        .map(|_| slow_uploader(port, 2000, Duration::from_secs(1)))
        .collect();
    let readers: Vec<_> = (0..2)
        .map(|_| slow_reader(port, "/bytes?n=524288", 1024, Duration::from_secs(1)))
        .collect();
    // Let them all get going.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for round in 0..5 {
        let started = std::time::Instant::now();
        let reply = server.get("/ping").await;
        let took = started.elapsed();
        assert_eq!(reply.body, "pong", "round {round}: {}", reply.body);
        assert!(
            took < Duration::from_secs(1),
            "round {round}: /ping took {took:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // No worker is busy with them: both are idle between pings.
    let status = server.status().await;
    assert_eq!(status["pool"]["busy"], 0, "{status:#}");
    for task in uploaders {
        task.abort();
    }
    for task in readers {
        task.abort();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_slower_than_the_minimum_rate_gets_408() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--min-upload-rate=100")
        .start();
    server.wait_ready().await;
    // 10 bytes a second, for a body that would take a minute.
    let started = std::time::Instant::now();
    let reply = slow_uploader(server.port, 600, Duration::from_millis(100))
        .await
        .unwrap();
    assert_eq!(status_of(&reply), "408", "{reply}");
    // Judged at the end of the first 10 s window.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_too_slow_for_a_large_answer_is_cut_off_and_frees_its_worker() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--response-buffer-bytes=65536")
        .arg("--min-download-rate=200000")
        .start();
    let worker = serving_workers(&server.wait_ready().await);
    let reader = slow_reader(
        server.port,
        "/bytes?n=104857600",
        4096,
        Duration::from_millis(50),
    );
    // It reads 80 KB/s: once the buffers between it and its worker are
    // full, the first 10 s window it is judged on cuts it off.
    let deadline = std::time::Instant::now() + Duration::from_secs(40);
    while !server.log().contains("outcome=\"client-too-slow\"") {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow client was not cut off within 40 s; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The same worker serves on, at once (the kernel may still be handing
    // the slow client what was already sent to it).
    let started = std::time::Instant::now();
    assert_eq!(server.get("/ping").await.body, "pong");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(serving_workers(&server.status().await), worker);
    reader.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_is_disconnected_and_its_worker_freed() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--send-timeout-ms=500")
        .start();
    server.wait_ready().await;
    // Asks for 50 MiB and reads nothing.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stuck = socket
        .connect(([127, 0, 0, 1], server.port).into())
        .await
        .unwrap();
    stuck
        .write_all(b"GET /bytes?n=52428800 HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    // Well inside the 10 s rate window: only the send timeout can free it.
    let started = std::time::Instant::now();
    let reply = loop {
        let reply = server.get("/ping").await;
        if reply.status == 200 || started.elapsed() > Duration::from_secs(8) {
            break reply;
        }
    };
    assert_eq!(reply.body, "pong", "the worker stayed held: {}", reply.body);
    assert!(started.elapsed() < Duration::from_secs(8));
    // The stuck client's connection was closed under it.
    let mut sink = vec![0u8; 1 << 20];
    let mut total = 0;
    let read_all = async {
        loop {
            match stuck.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(n) => total += n,
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read_all)
        .await
        .expect("the connection was closed");
    assert!(total < 50 * 1024 * 1024, "got all {total} bytes");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_that_never_send_a_request_are_closed() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--header-timeout-ms=300")
        .start();
    server.wait_ready().await;
    for (opening, what) in [
        (&b""[..], "nothing"),
        (&b"PRI * HTTP/2.0\r\n"[..], "part of the HTTP/2 preface"),
        (&b"GET /ping HTTP/1.1\r\nHo"[..], "part of a head"),
    ] {
        let mut stream = TcpStream::connect(("127.0.0.1", server.port))
            .await
            .unwrap();
        stream.write_all(opening).await.unwrap();
        let mut rest = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut rest)).await;
        assert!(closed.is_ok(), "a connection that sent {what} stayed open");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_tls_connection_is_closed_after_its_handshake() {
    let server = Builder::node()
        .arg("w:1")
        .https()
        .arg("--header-timeout-ms=300")
        .start();
    server.wait_ready().await;
    let connector = crate::tls::connector(&[crate::tls::cached_cert(&server)], &[b"h2"]);
    let mut tls = crate::tls::handshake(server.port, "localhost", &connector)
        .await
        .unwrap();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "a silent TLS connection stayed open");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_http2_connection_is_closed_after_the_idle_timeout() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--idle-timeout-ms=300")
        .start();
    server.wait_ready().await;
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = http::Request::get("http://localhost/ping")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    drop(response);
    // No stream open: the server says GOAWAY within about twice the timeout.
    let ended = tokio::time::timeout(Duration::from_secs(5), connection).await;
    assert!(ended.is_ok(), "the idle HTTP/2 connection stayed open");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_stalls_mid_body_is_cut_off_and_replaced() {
    let server = Builder::raw_worker()
        .arg("--body-idle-timeout-ms=300")
        .start();
    let first = serving_workers(&server.wait_ready().await);
    // A small body that never completes: the client gets a clear 504, at
    // the body idle timeout.
    let reply = tokio::time::timeout(Duration::from_secs(5), server.get("/stall-small"))
        .await
        .expect("an answer within 5 s");
    assert_eq!(reply.status, 504, "{}", reply.body);
    let second = serving_workers(
        &server
            .wait_status("the stalled worker replaced", |s| {
                let now = serving_workers(s);
                !now.is_empty() && now != first
            })
            .await,
    );
    // A large one, already streaming: the client sees it cut off.
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut sender, _conn) = crate::harness::http1(stream).await;
    let request = http::Request::get("/stall-large")
        .header("host", "x")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = tokio::time::timeout(Duration::from_secs(10), response.into_body().collect())
        .await
        .expect("the stalled answer ends");
    assert!(body.is_err(), "a cut-off body must not look complete");
    server
        .wait_status("the second stalled worker replaced", |s| {
            let now = serving_workers(s);
            !now.is_empty() && now != second
        })
        .await;
    assert_eq!(server.get("/ping").await.body, "pong");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_early_answer_to_an_upload_is_passed_on_and_the_worker_kept() {
    let server = Builder::raw_worker().start();
    let worker = serving_workers(&server.wait_ready().await);
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let length = 8 * 1024 * 1024;
    let upload = tokio::spawn(async move {
        let head =
            format!("POST /early-open HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..length / piece.len() {
            writer.write_all(&piece).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
    while !String::from_utf8_lossy(&reply).contains("no way") {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            other => panic!(
                "no early answer ({other:?}); got {:?}\n{}",
                String::from_utf8_lossy(&reply),
                server.log()
            ),
        }
    }
    upload.abort();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 401"), "{reply}");
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(serving_workers(&server.status().await), worker);
}

/// The resident memory of a process, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_worker_output_keeps_the_servers_memory_bounded() {
    let server = Builder::raw_worker().start();
    server.wait_ready().await;
    let before = rss_kib(server.pid());
    // One 200 MiB line on the worker's stdout.
    let reply = server.get("/flood?mb=200").await;
    assert_eq!(reply.body, "flooded");
    server.wait_log("[line cut at 16384 bytes]").await;
    let grown = rss_kib(server.pid()).saturating_sub(before);
    assert!(grown < 32 * 1024, "the server grew by {grown} KiB");
}
