//! Where the server listens (`--bind`): by default every IPv4 and IPv6
//! interface, or exactly the addresses named.

use std::net::IpAddr;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::net::TcpStream;

use crate::harness::{http1, Builder};

const V4: &str = "127.0.0.1";
const V6: &str = "::1";

/// `GET /echo` at `ip:port`: the status and the X-Forwarded-For the app saw,
/// or the connect error.
async fn echo_at(ip: &str, port: u16) -> std::io::Result<(u16, String)> {
    let ip: IpAddr = ip.parse().unwrap();
    let stream = TcpStream::connect((ip, port)).await?;
    let (mut sender, _connection) = http1(stream).await;
    let request = http::Request::get("/echo")
        .header(http::header::HOST, "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.expect("response");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let forwarded = echo["headers"]["x-forwarded-for"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    Ok((status, forwarded))
}

#[tokio::test(flavor = "multi_thread")]
async fn by_default_both_ipv4_and_ipv6_are_served() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    // The dual-stack socket sees an IPv4 client as ::ffff:127.0.0.1; the
    // app must still be told 127.0.0.1.
    assert_eq!(
        echo_at(V4, server.port).await.unwrap(),
        (200, V4.to_string())
    );
    assert_eq!(
        echo_at(V6, server.port).await.unwrap(),
        (200, V6.to_string())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn bind_ipv6_loopback_serves_there_and_not_on_ipv4() {
    let server = Builder::node().arg("w:1").arg("--bind=::1").start();
    server.wait_ready().await;
    assert_eq!(
        echo_at(V6, server.port).await.unwrap(),
        (200, V6.to_string())
    );
    let refused = echo_at(V4, server.port).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        std::io::ErrorKind::ConnectionRefused,
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn two_binds_serve_both_on_one_port() {
    let server = Builder::node()
        .arg("w:1")
        .arg("--bind=127.0.0.1")
        .arg("--bind=[::1]")
        .start();
    server.wait_ready().await;
    for ip in [V4, V6] {
        assert_eq!(
            echo_at(ip, server.port).await.unwrap(),
            (200, ip.to_string()),
            "{ip}"
        );
    }
}
