//! Routing a client request: the server's own endpoint, or an app's pool.
//!
//! `GET /server` is answered by the server itself without touching a worker
//! (a health check for load balancers). Everything else goes to the app's
//! [`Proxy`]. Virtual hosts (DESIGN §8) choose the proxy by `Host` here.

use std::sync::Arc;

use http::{header, HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use super::body::ResponseBody;
use super::proxy::{ClientInfo, Proxy};

pub struct Router {
    proxy: Arc<Proxy>,
}

impl Router {
    pub fn new(proxy: Arc<Proxy>) -> Self {
        Router { proxy }
    }

    pub async fn handle(
        &self,
        request: Request<Incoming>,
        client: ClientInfo,
    ) -> Response<ResponseBody> {
        if request.uri().path() == "/server"
            && matches!(*request.method(), Method::GET | Method::HEAD)
        {
            return server_ok();
        }
        self.proxy.forward(request, client).await
    }
}

/// `200 ok` from the server itself.
pub fn server_ok() -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::text("ok"));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}
