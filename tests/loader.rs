//! The Node loader (`loaders/node.mjs`) between rip-server and a fetch-handler app: what the
//! app receives (headers with repeats, streamed and chunked bodies, a real `Request`) and what
//! reaches the client of what it returns (every `Set-Cookie`, no body where none is allowed).
//! `tests/fixtures/fetch-app` is a Hono-style app (its `fetch` needs its `this`).

use std::path::Path;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Builder, Server};

fn fetch_app() -> Server {
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fetch-app");
    Builder::app(app.to_str().unwrap(), "fetch")
        .arg("w:1")
        .arg("--reload=none")
        .start()
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_headers_and_every_set_cookie_cross_the_loader() {
    let server = fetch_app();
    server.wait_ready().await;

    let reply = server
        .request(
            http::Method::GET,
            "/headers",
            &[("x-rep", "a"), ("x-rep", "b")],
            Bytes::new(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", server.log());
    let seen: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(seen["x-rep"], "a, b", "{seen}");

    let reply = server.get("/cookies").await;
    assert_eq!(reply.status, 200);
    let cookies: Vec<_> = reply.headers.get_all("set-cookie").iter().collect();
    assert_eq!(
        cookies,
        ["a=1; Path=/", "b=2; HttpOnly"],
        "{:?}",
        reply.headers
    );
    let many: Vec<_> = reply.headers.get_all("x-many").iter().collect();
    assert_eq!(many, ["one, two"], "{:?}", reply.headers);
    assert_eq!(reply.body, "cookies");
}

/// `data`'s length and byte sum as the app reports them.
fn expected_upload(data: &[u8]) -> serde_json::Value {
    let sum = data.iter().fold(0u32, |s, b| s.wrapping_add(u32::from(*b)));
    serde_json::json!({ "bytes": data.len(), "sum": sum })
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_reach_the_app_whole_as_streams() {
    let server = fetch_app();
    server.wait_ready().await;
    // Above the server's upload buffer (64 KiB), so it is streamed to the worker.
    let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 % 251) as u8).collect();

    // With a length.
    let reply = server
        .request(
            http::Method::POST,
            "/upload",
            &[],
            Bytes::from(data.clone()),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", server.log());
    let got: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(got, expected_upload(&data));

    // Chunked, in uneven chunks: it reaches the worker chunked too.
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    let mut wire = format!(
        "POST /upload HTTP/1.1\r\nHost: localhost:{}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        server.port
    )
    .into_bytes();
    for piece in data.chunks(70_001) {
        wire.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        wire.extend_from_slice(piece);
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b"0\r\n\r\n");
    stream.write_all(&wire).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(crate::harness::PATIENCE, stream.read_to_end(&mut answer))
        .await
        .expect("an answer within the patience")
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let got: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(got, expected_upload(&data), "{answer}");

    // The worker serves on after both.
    let reply = server
        .request(http::Method::POST, "/text", &[], Bytes::from("hello"))
        .await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "hello"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_app_gets_a_request_that_behaves_as_one() {
    let server = fetch_app();
    server.wait_ready().await;
    let reply = server.get("/shape?q=1").await;
    assert_eq!(reply.status, 200, "{}", server.log());
    let shape: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    let url = format!("http://localhost:{}/shape?q=1", server.port);
    assert_eq!(
        shape,
        serde_json::json!({
            "isRequest": true,
            "params": { "id": "7" },
            "method": "GET",
            "url": url,
            "aborted": false,
            "cloneUrl": url,
            "bodyUsed": false,
        })
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_and_204_answers_carry_no_body_whatever_the_app_returns() {
    let server = fetch_app();
    server.wait_ready().await;
    let stream = tokio::net::TcpStream::connect(("127.0.0.1", server.port))
        .await
        .unwrap();
    // One connection: a stray body would be read as the next answer.
    let (mut sender, _connection) = crate::harness::http1(stream).await;
    for (method, path, status) in [
        (http::Method::HEAD, "/head-body", 200),
        (http::Method::GET, "/no-content", 204),
        (http::Method::GET, "/cookies", 200),
    ] {
        let request = http::Request::builder()
            .method(method.clone())
            .uri(path)
            .header("host", format!("localhost:{}", server.port))
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        // hyper's client takes the next request only once the last answer is
        // read off the connection: sending earlier fails "not ready".
        sender
            .ready()
            .await
            .expect("the connection ready for the next request");
        let response = sender.send_request(request).await.expect("an answer");
        assert_eq!(response.status().as_u16(), status, "{method} {path}");
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let expected: &[u8] = if path == "/cookies" { b"cookies" } else { b"" };
        assert_eq!(body.as_ref(), expected, "{method} {path}");
    }
    // Bytes past an answer are caught by the server, which says so and replaces the worker.
    assert!(
        !server.log().contains("outside any response"),
        "the worker sent bytes past an answer:\n{}",
        server.log()
    );
}
