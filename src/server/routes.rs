//! Routing a client request: the server's own endpoints, or an app chosen
//! by `Host`.
//!
//! After the edge ([`edge::admit`]) has settled the request's authority:
//! - `GET /server` is answered by the server itself without touching a
//!   worker (a health check for load balancers): `200 ok`, or `503
//!   draining` once a stop has begun, so the balancer takes this node out
//!   while it still serves;
//! - `GET /status` is the server's public health JSON (unless
//!   `--no-public-status` hands it to the app): no pids, paths or internals;
//! - everything else goes to the app the route table names for the `Host`
//!   (exact name, then wildcard, then the default app), or gets `404 Host
//!   not found` when hosts are registered and none matches.
//!
//! The table is read with one atomic load per request and never locked.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::conn::ClientConn;
use super::edge::{self, Refusal};
use super::proxy::ClientInfo;
use crate::apps::RouteTable;

/// What the public `/status` tells about the server itself.
pub struct PublicInfo {
    pub instance: String,
    pub started: Instant,
    /// `(scheme, port)` of each listener: `("https", 443)`, `("http", 80)`.
    pub ports: Vec<(&'static str, u16)>,
    /// Answer `GET /status` (false: `--no-public-status`).
    pub enabled: bool,
}

/// What [`Router::route`] made of a request.
pub enum Routed<F> {
    /// The server's own answer (an endpoint of its own, or a refusal).
    Answered(Response<ResponseBody>),
    /// The app's answer, once this future is done.
    Forwarded(F),
}

pub struct Router {
    table: Arc<ArcSwap<RouteTable>>,
    public: PublicInfo,
    /// Set when a stop begins; `/server` then answers 503.
    draining: AtomicBool,
}

impl Router {
    pub fn new(table: Arc<ArcSwap<RouteTable>>, public: PublicInfo) -> Self {
        Router {
            table,
            public,
            draining: AtomicBool::new(false),
        }
    }

    /// From now on `/server` answers `503 draining`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Relaxed);
    }

    /// Routes one request: answered here at once, or forwarded to its app
    /// (the future that will answer it, owning all it needs).
    pub fn route(
        &self,
        request: Request<Incoming>,
        client: ClientInfo,
        conn: Arc<ClientConn>,
    ) -> Routed<impl Future<Output = Response<ResponseBody>> + Send + 'static> {
        let (mut parts, body) = request.into_parts();
        if let Err(refusal) = edge::admit(&mut parts) {
            return Routed::Answered(refused(refusal, parts.version));
        }
        if matches!(parts.method, Method::GET | Method::HEAD) {
            match parts.uri.path() {
                "/server" => {
                    return Routed::Answered(match self.draining.load(Ordering::Relaxed) {
                        false => server_ok(),
                        true => server_draining(),
                    })
                }
                "/status" if self.public.enabled => return Routed::Answered(self.public_status()),
                _ => {}
            }
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or_default();
        let Some(proxy) = self.table.load().lookup(host).map(|app| app.proxy.clone()) else {
            return Routed::Answered(host_not_found());
        };
        Routed::Forwarded(proxy.forward(Request::from_parts(parts, body), client, conn))
    }

    /// The public health JSON: `healthy`, or `degraded` while an app has
    /// fewer ready workers than it is meant to run.
    fn public_status(&self) -> Response<ResponseBody> {
        let table = self.table.load();
        let apps: Vec<serde_json::Value> = table
            .apps()
            .iter()
            .map(|(app, hosts)| {
                serde_json::json!({
                    "app": app.name,
                    "hosts": hosts,
                    "workers": app.desired(),
                    "ready": app.ready(),
                })
            })
            .collect();
        let degraded = table
            .apps()
            .iter()
            .any(|(app, _)| app.ready() < app.desired());
        let ports: serde_json::Map<String, serde_json::Value> = self
            .public
            .ports
            .iter()
            .map(|(scheme, port)| (scheme.to_string(), (*port).into()))
            .collect();
        let primary = table.default_app().or(table.apps().first().map(|(a, _)| a));
        let mut doc = serde_json::json!({
            "status": if degraded { "degraded" } else { "healthy" },
            "app": primary.map_or(self.public.instance.as_str(), |a| a.name.as_str()),
            "workers": table.apps().iter().map(|(a, _)| a.desired()).sum::<usize>(),
            "ports": ports,
            "uptime": self.public.started.elapsed().as_secs(),
            "hosts": table.hosts(),
        });
        if apps.len() > 1 {
            if let Some(fields) = doc.as_object_mut() {
                fields.insert("apps".into(), apps.into());
            }
        }
        let mut response = Response::new(ResponseBody::text(doc.to_string()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        response
    }
}

/// `404 Host not found`, from the server itself.
fn host_not_found() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text("Host not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
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
