//! Bad and oversized input gets a 4xx and costs nothing: malformed requests
//! (400), oversized heads (431) and bodies (413), and slow heads (closed).

use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::Builder;

async fn raw(port: u16, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut reply)).await;
    String::from_utf8_lossy(&reply).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_request_gets_400() {
    let server = Builder::rust().arg("w:1").start();
    let reply = raw(
        server.port,
        b"GET /ping HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
    )
    .await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    let reply = raw(server.port, b"NOT-HTTP\r\n\r\n").await;
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_head_gets_431() {
    let server = Builder::rust()
        .arg("w:1")
        .arg("--max-header-bytes=8192")
        .start();
    let big = "a".repeat(20_000);
    let request = format!("GET /ping HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    let reply = raw(server.port, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 431"), "{reply}");
}

/// Requests the server has handed to its one worker so far.
async fn worker_requests(server: &crate::harness::Server) -> u64 {
    let status = server.wait_ready().await;
    status["workers"][0]["requests"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_body_gets_413_before_reaching_a_worker() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--max-body-bytes=1000")
        .start();
    let before = worker_requests(&server).await;
    let reply = server
        .request(Method::POST, "/echo", &[], Bytes::from(vec![b'x'; 5000]))
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    assert_eq!(
        worker_requests(&server).await,
        before,
        "the oversized request reached a worker"
    );
    let reply = server
        .request(Method::POST, "/echo", &[], Bytes::from(vec![b'x'; 1000]))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(worker_requests(&server).await, before + 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_chunked_body_gets_413() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--max-body-bytes=1000")
        .start();
    let chunk = "x".repeat(800);
    let request = format!(
        "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{len:x}\r\n{chunk}\r\n{len:x}\r\n{chunk}\r\n0\r\n\r\n",
        len = chunk.len()
    );
    let reply = raw(server.port, request.as_bytes()).await;
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
    assert_eq!(server.get("/ping").await.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_request_head_is_cut_off() {
    let server = Builder::rust()
        .arg("w:1")
        .arg("--header-timeout-ms=300")
        .start();
    let mut stream = TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /ping HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    // Never finish the head: the server must close the connection itself.
    let mut buf = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut buf)).await;
    assert!(closed.is_ok(), "the server kept a slow request head open");
}
