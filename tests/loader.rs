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

/// What the client gets of `/answer/{name}` of the fetch app: status, the named headers (each
/// joined as sent), body.
async fn answer(server: &Server, name: &str) -> (u16, Vec<(String, String)>, String) {
    let reply = server.get(&format!("/answer/{name}")).await;
    let headers = reply
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                v.to_str().unwrap_or("<not text>").to_string(),
            )
        })
        .collect();
    (reply.status, headers, reply.body)
}

/// `/answer/{name}`: the status, headers and body the client must get.
type Answer<'a> = (&'a str, u16, &'a [(&'a str, &'a str)], &'a str);

#[tokio::test(flavor = "multi_thread")]
async fn answers_the_app_builds_reach_the_client_as_undici_would_send_them() {
    let server = fetch_app();
    server.wait_ready().await;
    const TEXT: (&str, &str) = ("content-type", "text/plain;charset=UTF-8");
    let cases: &[Answer] = &[
        ("default-type", 200, &[TEXT], "plain"),
        (
            "own-headers",
            201,
            &[("content-type", "application/json"), ("x-set", "yes")],
            "{}",
        ),
        ("joined", 200, &[TEXT, ("x-dup", "a, b")], "x"),
        ("trimmed", 200, &[TEXT, ("x-pad", "padded")], "x"),
        ("number-value", 200, &[TEXT, ("x-n", "5")], "x"),
        ("late-header", 200, &[TEXT, ("x-late", "1")], "x"),
        (
            "json",
            200,
            &[("content-type", "application/json"), ("x-j", "1")],
            r#"{"ok":true}"#,
        ),
        ("no-body", 202, &[("content-length", "0")], ""),
        ("empty", 200, &[TEXT, ("content-length", "0")], ""),
        ("bytes", 200, &[("content-length", "5")], "bytes"),
        ("cookie", 200, &[TEXT, ("set-cookie", "a=1; Path=/")], "x"),
        ("read-back", 200, &[TEXT, ("x-r", "1")], "round trip"),
        ("reused", 200, &[TEXT], "the same object every time"),
        ("reused", 200, &[TEXT], "the same object every time"),
    ];
    for (name, status, expected, body) in cases {
        let (got_status, headers, got_body) = answer(&server, name).await;
        assert_eq!(
            (got_status, got_body.as_str()),
            (*status, *body),
            "{name}: {headers:?}\n{}",
            server.log()
        );
        for (key, value) in *expected {
            let got: Vec<_> = headers.iter().filter(|(k, _)| k == key).collect();
            assert_eq!(
                got,
                [&(key.to_string(), value.to_string())],
                "{name}: {key} in {headers:?}"
            );
        }
    }

    // What undici refuses to build is refused where the app builds it: a 500, nothing of it
    // on the wire, and the app's error in the log.
    for (name, error) in [
        ("injection", "TypeError"),
        ("bad-status", "RangeError"),
        ("bad-name", "TypeError"),
        ("body-on-204", "TypeError"),
        ("bad-json", "TypeError"),
    ] {
        let (status, headers, body) = answer(&server, name).await;
        assert_eq!(
            (status, body.as_str()),
            (500, "Internal Server Error"),
            "{name}: {headers:?}"
        );
        assert!(
            headers
                .iter()
                .all(|(k, _)| k != "x-injected" && k != "x-bad"),
            "{name}: {headers:?}"
        );
        server
            .wait_log(&format!("handling GET /answer/{name}: {error}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn responses_the_app_builds_behave_as_responses() {
    let server = fetch_app();
    server.wait_ready().await;
    let reply = server.get("/answer-shape").await;
    assert_eq!(reply.status, 200, "{}", server.log());
    let shape: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(
        shape,
        serde_json::json!({
            "builtIsResponse": true,
            "redirectIsResponse": true,
            "name": "Response",
            "constructorIsResponse": true,
            "tag": "[object Response]",
            "status": 200,
            "ok": true,
            "header": "1",
            "type": "text/plain;charset=UTF-8",
            "text": "x",
            "bodyUsed": true,
            "cloneText": "c",
        })
    );
}

/// The loader keeps simple Responses itself (loaders/node.mjs, LightResponse); for any input,
/// what it builds must be what undici builds, or throw what undici throws. The app builds
/// thousands of random ones both ways and reports the differences.
#[tokio::test(flavor = "multi_thread")]
async fn the_loaders_response_is_undicis_for_any_input() {
    let server = fetch_app();
    server.wait_ready().await;
    for seed in [1, 2, 3] {
        let reply = server.get(&format!("/answer-parity?seed={seed}")).await;
        assert_eq!(reply.status, 200, "{}", server.log());
        let report: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        assert_eq!(
            report["differences"],
            serde_json::json!([]),
            "seed {seed}: {report:#}"
        );
        // The comparison means something only if the loader kept many of them itself.
        let kept = report["kept"].as_u64().unwrap_or(0);
        assert!(kept >= 300, "seed {seed}: only {kept} kept: {report}");
    }
}
