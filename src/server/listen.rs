//! The public listener: bind a port, accept connections, serve each one with
//! hyper (HTTP/1.1 and HTTP/2) in its own task, and shut down gracefully.
//!
//! Limits applied here: at most [`MAX_CONNECTIONS`] open client connections
//! (a semaphore; further clients wait in the kernel's accept backlog), the
//! request-head size (`--max-header-bytes`, 431 beyond it) and the head read
//! timeout (`--header-timeout-ms`; hyper starts it whenever the connection
//! waits for a request head, so it also bounds idle keep-alive connections).
//! Malformed requests get hyper's 400.
//!
//! With TLS the handshake runs in the connection's own task under
//! [`HANDSHAKE_TIMEOUT`], so a slow client never blocks accepting others.
//! [`serve_redirect`] answers plain HTTP with `301` to the HTTPS URL.

use std::convert::Infallible;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio_rustls::TlsAcceptor;

use super::body::ResponseBody;
use super::proxy::{ClientInfo, Scheme};
use super::routes::Router;
use crate::config::{Limits, PortChoice, Timeouts};

/// Open client connections beyond this wait in the accept backlog.
pub const MAX_CONNECTIONS: usize = 16_384;

/// Longest a client may take to complete its TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How far past the fallback start to look for a free port.
const FALLBACK_PORTS: u16 = 1_000;

/// Binds the HTTP listener on all IPv4 interfaces.
pub async fn bind(choice: PortChoice) -> io::Result<TcpListener> {
    let bind_port = |port: u16| TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    match choice {
        PortChoice::Fixed(port) => bind_port(port)
            .await
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on port {port}: {e}"))),
        PortChoice::FirstFree {
            preferred,
            fallback_from,
        } => {
            if let Ok(listener) = bind_port(preferred).await {
                return Ok(listener);
            }
            for port in fallback_from..fallback_from.saturating_add(FALLBACK_PORTS) {
                if let Ok(listener) = bind_port(port).await {
                    return Ok(listener);
                }
            }
            Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!(
                    "no free port: {preferred} and {fallback_from}-{} are all taken; name one with http:PORT",
                    fallback_from.saturating_add(FALLBACK_PORTS - 1)
                ),
            ))
        }
    }
}

/// How client connections are served.
#[derive(Clone)]
pub struct ServeOptions {
    pub limits: Limits,
    pub timeouts: Timeouts,
    pub transport: Transport,
}

/// Plain TCP, or TLS terminated here.
#[derive(Clone)]
pub enum Transport {
    Plain,
    Tls {
        acceptor: TlsAcceptor,
        /// Add Strict-Transport-Security to responses that lack it.
        hsts: bool,
    },
}

/// The HSTS policy rip-server sends with `--hsts`.
pub const HSTS_VALUE: &str = "max-age=31536000; includeSubDomains";

/// Accepts and serves connections until `shutdown` fires, then lets open
/// connections finish their requests for up to `timeouts.grace`.
pub async fn serve(
    listener: TcpListener,
    router: Arc<Router>,
    options: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
) {
    let builder = Arc::new(connection_builder(&options));
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut backoff = Duration::from_millis(5);

    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_closed) => break,
            },
            _ = shutdown.changed() => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::error!(error = %e, "accept failed; backing off {backoff:?}");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        let builder = builder.clone();
        let router = router.clone();
        let watcher = graceful.watcher();
        let transport = options.transport.clone();
        tokio::spawn(async move {
            let result = match transport {
                Transport::Plain => {
                    let client = ClientInfo::new(peer.ip(), Scheme::Http);
                    let service = service(router, client, false);
                    let connection = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
                Transport::Tls { acceptor, hsts } => {
                    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
                        Ok(Ok(tls)) => tls,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client = ClientInfo::new(peer.ip(), Scheme::Https);
                    let service = service(router, client, hsts);
                    let connection = builder
                        .serve_connection(TokioIo::new(tls), service)
                        .into_owned();
                    watcher.watch(connection).await
                }
            };
            if let Err(e) = result {
                tracing::debug!(error = %e, "client connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(options.timeouts.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = options.timeouts.grace.as_millis() as u64,
            "client connections still open after the grace period; stopping without them"
        );
    }
}

fn connection_builder(options: &ServeOptions) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(options.timeouts.header)
        .max_buf_size(options.limits.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(options.limits.max_header_bytes as u32)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

type ServiceResult = Result<Response<ResponseBody>, Infallible>;

/// The per-connection service: route the request, add HSTS if asked.
fn service(
    router: Arc<Router>,
    client: ClientInfo,
    hsts: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = impl std::future::Future<Output = ServiceResult> + Send,
> + Clone {
    service_fn(move |request| {
        let router = router.clone();
        async move {
            let mut response = router.handle(request, client).await;
            if hsts
                && !response
                    .headers()
                    .contains_key(header::STRICT_TRANSPORT_SECURITY)
            {
                response.headers_mut().insert(
                    header::STRICT_TRANSPORT_SECURITY,
                    HeaderValue::from_static(HSTS_VALUE),
                );
            }
            Ok(response)
        }
    })
}

/// Answers every plain-HTTP request with `301` to the same host, path and
/// query over HTTPS on `https_port`, until `shutdown` fires.
pub async fn serve_redirect(
    listener: TcpListener,
    https_port: u16,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "redirect listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<Incoming>| async move {
                Ok::<_, Infallible>(redirect_response(&request, https_port))
            });
            let mut http1 = hyper::server::conn::http1::Builder::new();
            http1
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10));
            let _ = http1.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// `301 Location: https://host[:port]/path?query`.
pub fn redirect_response<B>(request: &Request<B>, https_port: u16) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().host())
        .unwrap_or("localhost");
    // Only a plain host[:port] may go into Location (no userinfo, path or query).
    let host = match host.parse::<http::uri::Authority>() {
        Ok(authority) if !authority.as_str().contains('@') => strip_port(host),
        _ => {
            let mut response = Response::new(ResponseBody::text("invalid Host header\n"));
            *response.status_mut() = StatusCode::BAD_REQUEST;
            return response;
        }
    };
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = if https_port == 443 {
        format!("https://{host}{target}")
    } else {
        format!("https://{host}:{https_port}{target}")
    };
    let mut response = Response::new(ResponseBody::text(""));
    *response.status_mut() = StatusCode::MOVED_PERMANENTLY;
    match HeaderValue::from_str(&location) {
        Ok(value) => {
            response.headers_mut().insert(header::LOCATION, value);
        }
        Err(_) => *response.status_mut() = StatusCode::BAD_REQUEST,
    }
    response
}

/// `example.com:80` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']')
                && (host.starts_with('[') || host[..i].find(':').is_none()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn location(host: &str, target: &str, port: u16) -> String {
        let request = Request::get(target).header("host", host).body(()).unwrap();
        let response = redirect_response(&request, port);
        assert_eq!(response.status(), StatusCode::MOVED_PERMANENTLY);
        response.headers()[header::LOCATION]
            .to_str()
            .unwrap()
            .to_string()
    }

    #[test]
    fn redirects_keep_host_path_and_query() {
        assert_eq!(
            location("example.com", "/a/b?x=1", 443),
            "https://example.com/a/b?x=1"
        );
        assert_eq!(
            location("example.com:80", "/", 5443),
            "https://example.com:5443/"
        );
        assert_eq!(location("[::1]:8080", "/p", 443), "https://[::1]/p");
        assert_eq!(location("[::1]", "/p", 443), "https://[::1]/p");
    }

    #[test]
    fn odd_hosts_are_refused() {
        for host in ["a@evil.example", "x/y", "x?y", "evil.example/#"] {
            let request = Request::get("/").header("host", host).body(()).unwrap();
            assert_eq!(
                redirect_response(&request, 443).status(),
                StatusCode::BAD_REQUEST,
                "{host}"
            );
        }
    }
}
