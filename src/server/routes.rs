//! Routing a client request: the server's own endpoint, or an app's pool.
//!
//! `GET /server` is answered by the server itself without touching a worker
//! (a health check for load balancers): `200 ok`, or `503 draining` once a
//! stop has begun, so the balancer takes this node out while it still
//! serves. Everything else goes to the app's [`Proxy`]. Virtual hosts
//! (DESIGN §8) choose the proxy by `Host` here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::conn::ClientConn;
use super::edge::{self, Refusal};
use super::proxy::{ClientInfo, Proxy};

pub struct Router {
    proxy: Arc<Proxy>,
    /// Set when a stop begins; `/server` then answers 503.
    draining: AtomicBool,
}

impl Router {
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Router {
            proxy,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on `/server` answers `503 draining`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: ClientInfo,
        conn: &Arc<ClientConn>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = request.into_parts();
        if let Err(refusal) = edge::admit(&mut parts) {
            return refused(refusal, parts.version);
        }
        if parts.uri.path() == "/server" && matches!(parts.method, Method::GET | Method::HEAD) {
            return match self.draining.load(Ordering::Relaxed) {
                false => server_ok(),
                true => server_draining(),
            };
        }
        self.proxy
            .forward(Request::from_parts(parts, body), client, conn)
            .await
    }
}

/// The edge's answer to a request it will not route.
fn refused(refusal: Refusal, version: http::Version) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text(refusal.message()));
    *response.status_mut() = refusal.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if let Some(allow) = refusal.allow() {
        headers.insert(header::ALLOW, allow);
    }
    // A client this confused is not worth keeping (its body, if any, is not
    // read). HTTP/2 has no Connection header; its stream simply ends.
    if version < http::Version::HTTP_2 {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// `503 draining`: this node is stopping; send new work elsewhere.
pub fn server_draining() -> Response<ResponseBody> {
    let mut response = server_ok();
    *response.body_mut() = ResponseBody::text("draining");
    *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    response
}

/// `200 ok` from the server itself.
pub fn server_ok() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text("ok"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
