//! The worker side of the wire: every legal way a worker can frame its
//! answer reaches the client whole, the worker receives exactly the framing
//! it should, and a worker that closes connections, answers early or sends
//! garbage costs at most the request it held. The worker is
//! `tests/fixtures/raw-worker`, which speaks HTTP/1.1 by hand.

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{serving_workers, Builder, Server};

fn raw_worker() -> Builder {
    Builder::raw_worker()
}

/// Sends `request` on a fresh connection and reads until the server closes it.
async fn raw(port: u16, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(15), stream.read_to_end(&mut reply)).await;
    assert!(read.is_ok(), "no complete reply within 15 s");
    String::from_utf8_lossy(&reply).into_owned()
}

/// The one worker's id, which must not change: nothing here may cost a worker.
async fn the_worker(server: &Server) -> Vec<u64> {
    let status = server.wait_ready().await;
    serving_workers(&status)
}

#[tokio::test(flavor = "multi_thread")]
async fn every_response_framing_reaches_the_client_whole() {
    let server = raw_worker().start();
    let worker = the_worker(&server).await;
    for (path, body) in [
        ("/chunked", "hello world"),
        ("/until-close", "until the connection closes"),
        ("/interim", "ok"),
        ("/connection-close", "ok"),
        ("/ping", "pong"),
    ] {
        let reply = server.get(path).await;
        assert_eq!(reply.status, 200, "{path}: {}", reply.body);
        assert_eq!(reply.body, body, "{path}");
        // Neither a chunked trailer nor an interim (103) answer's header
        // reaches the client as a header of the final answer.
        for internal in ["x-checksum", "link"] {
            assert!(
                reply.headers.get(internal).is_none(),
                "{path}: {internal} leaked: {:?}",
                reply.headers
            );
        }
    }
    let head = server
        .request(Method::HEAD, "/ping", &[], Bytes::new())
        .await;
    assert_eq!(head.status, 200);
    assert_eq!(head.headers["content-length"], "4");
    assert_eq!(head.body, "");
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(serving_workers(&server.status().await), worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_closing_its_connection_after_an_answer_costs_no_request() {
    let server = raw_worker().start();
    let worker = the_worker(&server).await;
    for round in 1..=5 {
        let reply = server.get("/close-after").await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "closed"));
        // The next request finds the connection closed and dials again.
        server
            .wait_log(&format!("raw-worker: closed connection {round}"))
            .await;
        assert_eq!(server.get("/ping").await.body, "pong", "round {round}");
    }
    assert_eq!(serving_workers(&server.status().await), worker);
    assert!(!server.log().contains("unreachable"), "{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_answering_garbage_costs_that_request_only() {
    let server = raw_worker().start();
    let worker = the_worker(&server).await;
    let reply = server.get("/garbage").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    // The server logs before it answers; its log reaches us through a pipe.
    server.wait_log("malformed response head").await;
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(serving_workers(&server.status().await), worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_worker_receives_the_framing_the_body_needs() {
    let server = raw_worker().start();
    server.wait_ready().await;
    // A body that fits the upload buffer is read whole first, and arrives
    // with its length, however the client framed it.
    let small_chunked = raw(
        server.port,
        b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    let received = small_chunked
        .split_once("\r\n\r\n")
        .unwrap()
        .1
        .to_lowercase();
    assert!(
        received.contains("\r\ncontent-length: 11\r\n"),
        "{received}"
    );
    assert!(!received.contains("transfer-encoding"), "{received}");
    assert!(received.ends_with("\r\n\r\nhello world"), "{received}");
    drop(server);

    // Past the buffer (here, any body) it streams, chunked as it came.
    let server = raw_worker().arg("--upload-buffer-bytes=0").start();
    server.wait_ready().await;
    let chunked = raw(
        server.port,
        b"POST /raw HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(chunked.starts_with("HTTP/1.1 200"), "{chunked}");
    let received = chunked.split_once("\r\n\r\n").unwrap().1.to_lowercase();
    assert!(
        received.contains("\r\ntransfer-encoding: chunked\r\n"),
        "{received}"
    );
    assert!(!received.contains("content-length"), "{received}");
    assert!(
        received.ends_with("\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
        "{received}"
    );

    let sized = server
        .request(Method::POST, "/raw", &[], Bytes::from_static(b"hello"))
        .await;
    let received = sized.body.to_lowercase();
    assert!(received.contains("\r\ncontent-length: 5\r\n"), "{received}");
    assert!(!received.contains("transfer-encoding"), "{received}");
    assert!(received.ends_with("\r\n\r\nhello"), "{received}");

    // A client cannot strip the framing with `Connection`: the smuggled
    // request stays the body of the first one.
    let smuggled = "GET /ping HTTP/1.1\r\nHost: x\r\nRip-Probe: 1\r\n\r\n";
    let attempt = format!(
        "POST /raw HTTP/1.1\r\nHost: x\r\nConnection: content-length, close\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let reply = raw(server.port, attempt.as_bytes()).await;
    let received = reply.split_once("\r\n\r\n").unwrap().1.to_lowercase();
    assert!(
        received.contains(&format!("\r\ncontent-length: {}\r\n", smuggled.len())),
        "{received}"
    );
    assert!(received.ends_with(&smuggled.to_lowercase()), "{received}");

    let bodiless = server.get("/raw").await.body.to_lowercase();
    assert!(bodiless.starts_with("get /raw http/1.1\r\n"), "{bodiless}");
    assert!(!bodiless.contains("content-length") && !bodiless.contains("transfer-encoding"));
    assert!(bodiless.ends_with("\r\n\r\n"), "{bodiless}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_upload_the_worker_refuses_early_gets_the_workers_answer() {
    let server = raw_worker().start();
    let worker = the_worker(&server).await;
    let stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let length = 8 * 1024 * 1024;
    let upload = tokio::spawn(async move {
        let head = format!("POST /early HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        writer.write_all(head.as_bytes()).await?;
        let piece = vec![b'x'; 64 * 1024];
        for _ in 0..length / piece.len() {
            writer.write_all(&piece).await?;
        }
        Ok::<_, std::io::Error>(())
    });
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !String::from_utf8_lossy(&reply).contains("too big") {
        match tokio::time::timeout_at(deadline, reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => reply.extend_from_slice(&buf[..n]),
            other => panic!(
                "no answer ({other:?}); got {:?}",
                String::from_utf8_lossy(&reply)
            ),
        }
    }
    upload.abort();
    let reply = String::from_utf8_lossy(&reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(serving_workers(&server.status().await), worker);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upload_gets_408_and_the_worker_keeps_serving() {
    let server = raw_worker().arg("--header-timeout-ms=300").start();
    let worker = the_worker(&server).await;
    // Ten bytes announced, three sent, then silence (the connection stays open).
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(b"POST /raw HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc")
        .await
        .unwrap();
    let mut reply = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(15), stream.read(&mut reply))
        .await
        .expect("an answer within 15 s")
        .unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 408"), "{reply}");
    assert_eq!(server.get("/ping").await.body, "pong");
    assert_eq!(serving_workers(&server.status().await), worker);
}
