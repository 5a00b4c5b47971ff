//! Forwarding one client request to one worker (DESIGN §3).
//!
//! [`Proxy::forward`] strips what must not cross (hop-by-hop headers, any
//! `Rip-*` header a client sent), adds `X-Forwarded-*`, takes a worker from
//! the pool, sends the request over that worker's connection and classifies
//! the result. Failures are split by timing, as pingora does:
//! - before the request reached the worker (dial failed, connection closed
//!   before send): the worker is reported and the next one is tried;
//! - the worker answered `503 Rip-Worker-Busy` / `Rip-Worker-Draining`: the
//!   next worker is tried if the request has no body, else the 503 is passed on;
//! - after the request reached the worker: never replayed; 504 if no headers
//!   came within `--read-timeout-ms` (the worker is presumed hung and replaced),
//!   502 if the worker failed.
//!
//! [`Rejection::status`] is the one place that maps outcomes to statuses.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use std::future::Future;
use std::pin::Pin;
use tokio::sync::oneshot;

use super::access_log::AccessRecord;
use super::body::{RequestBody, ResponseBody};
use super::metrics::Metrics;
use super::pool::{Lease, Pool, Report, Unavailable};
use super::upstream::Upstream;
use crate::config::{Limits, Timeouts};

/// How many workers one request may try before giving up with 503.
const MAX_ATTEMPTS: usize = 16;

/// Where a request came from.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    pub ip: IpAddr,
    pub scheme: Scheme,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// Why a request got a local answer instead of a worker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    Unavailable(Unavailable),
    /// Every worker tried was busy or unreachable.
    NoWorkerTook,
    BodyTooLarge,
    /// No response headers within the read timeout.
    WorkerTimeout,
    /// The worker failed after the request reached it.
    WorkerFailed,
}

impl Rejection {
    /// The one mapping from outcome to status (DESIGN §3).
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::Unavailable(Unavailable::QueueTimeout) | Rejection::WorkerTimeout => {
                StatusCode::GATEWAY_TIMEOUT
            }
            Rejection::Unavailable(_) | Rejection::NoWorkerTook => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::WorkerFailed => StatusCode::BAD_GATEWAY,
        }
    }

    fn message(self) -> &'static str {
        match self {
            Rejection::Unavailable(Unavailable::QueueFull) => {
                "server busy: the request queue is full, retry shortly\n"
            }
            Rejection::Unavailable(Unavailable::QueueTimeout) => {
                "timed out waiting for a free worker\n"
            }
            Rejection::Unavailable(Unavailable::NoWorkers) => "no worker is running for this app\n",
            Rejection::Unavailable(Unavailable::ShuttingDown) => "server is shutting down\n",
            Rejection::NoWorkerTook => "no worker could take the request, retry shortly\n",
            Rejection::BodyTooLarge => "request body too large\n",
            Rejection::WorkerTimeout => "the app did not answer in time\n",
            Rejection::WorkerFailed => "the app failed while handling the request\n",
        }
    }

    pub fn response(self) -> Response<ResponseBody> {
        let mut response = Response::new(ResponseBody::text(self.message()));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if self.status() == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Forwards requests to one app's pool.
pub struct Proxy {
    pool: Arc<Pool<Upstream>>,
    metrics: Arc<Metrics>,
    /// Replaced when the config is re-read (SIGHUP); copied per request.
    tuning: RwLock<(Limits, Timeouts)>,
    access_log: bool,
}

/// The parts needed to send a bodiless request again to another worker.
struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    fn request(&self) -> Request<RequestBody> {
        let mut request = Request::new(RequestBody::Empty);
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

/// What happened to one attempt at one worker (which comes back with it).
enum Attempt {
    Answered(Response<Incoming>, Duration),
    /// Never reached the worker; try another with this request.
    NotSent(Request<RequestBody>),
    /// The worker said busy/draining; retry only if the request can be replayed.
    Busy(Response<Incoming>),
    Failed(Rejection),
}

type Exchange = Pin<
    Box<dyn Future<Output = Result<Response<Incoming>, TrySendError<Request<RequestBody>>>> + Send>,
>;

/// A request in flight on a worker. If the client goes away before the
/// worker answers, dropping this hands the exchange to a background task
/// that lets the worker finish (bounded by the read timeout) before the
/// worker goes back to the pool, so a worker still busy with an abandoned
/// request is never handed the next one.
struct InFlight {
    exchange: Option<Exchange>,
    lease: Option<Lease<Upstream>>,
    limit: Duration,
}

impl InFlight {
    /// The exchange is over (answered, failed or timed out): take the worker back.
    fn land(mut self) -> Lease<Upstream> {
        self.exchange = None;
        // Internal invariant: the lease is present until `land` or drop.
        self.lease
            .take()
            .expect("in-flight request holds its lease")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let (Some(exchange), Some(lease)) = (self.exchange.take(), self.lease.take()) {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(finish_abandoned(exchange, lease, self.limit));
            }
        }
    }
}

/// Waits out a request whose client left, then returns its worker.
async fn finish_abandoned(exchange: Exchange, mut lease: Lease<Upstream>, limit: Duration) {
    let finished = tokio::time::timeout(limit, async {
        let response = lease.conn().drive(exchange).await.ok()?;
        lease.conn().drain(response.into_body()).await.ok()
    })
    .await;
    if !matches!(finished, Ok(Some(_))) {
        lease.conn().invalidate();
    }
}

impl Proxy {
    pub fn new(
        pool: Arc<Pool<Upstream>>,
        metrics: Arc<Metrics>,
        limits: Limits,
        timeouts: Timeouts,
        access_log: bool,
    ) -> Self {
        Proxy {
            pool,
            metrics,
            tuning: RwLock::new((limits, timeouts)),
            access_log,
        }
    }

    /// Applies new limits and timeouts to requests from now on.
    pub fn retune(&self, limits: Limits, timeouts: Timeouts) {
        *self.tuning.write().unwrap_or_else(|p| p.into_inner()) = (limits, timeouts);
    }

    fn tuning(&self) -> (Limits, Timeouts) {
        *self.tuning.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one client request through a worker.
    pub async fn forward(
        &self,
        request: Request<Incoming>,
        client: ClientInfo,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let (parts, body) = request.into_parts();
        let mut record = self
            .access_log
            .then(|| AccessRecord::begin(&parts, started));

        let response = match self.exchange(parts, body, client, &mut record).await {
            Ok(response) => response,
            Err(rejection) => rejection.response(),
        };
        self.metrics.count_response(response.status().as_u16());
        // Local answers are complete now; worker bodies log when they end.
        if let (ResponseBody::Local(body), Some(record)) = (response.body(), record.as_mut()) {
            record.status = response.status().as_u16();
            record.bytes = body.size_hint().exact().unwrap_or(0);
            record.emit("ok");
        }
        response
    }

    async fn exchange(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        client: ClientInfo,
        record: &mut Option<AccessRecord>,
    ) -> Result<Response<ResponseBody>, Rejection> {
        let (limits, timeouts) = self.tuning();
        let declared = body.size_hint().exact().or(body.size_hint().upper());
        if declared.is_some_and(|len| len > limits.max_body_bytes) {
            return Err(Rejection::BodyTooLarge);
        }
        let mut parts = parts;
        let headers = forwarded_headers(&mut parts, client);
        let uri = origin_form(&parts.uri);
        let replay = body.is_end_stream().then(|| Replay {
            method: parts.method.clone(),
            uri: uri.clone(),
            headers: headers.clone(),
        });
        let mut body_sent = None;
        let mut pending = Some(if replay.is_some() {
            build(parts.method, uri, headers, RequestBody::Empty)
        } else {
            let (body, sent) = RequestBody::client(body, limits.max_body_bytes, timeouts.header);
            body_sent = Some(sent);
            build(parts.method, uri, headers, body)
        });

        let mut queued = Duration::ZERO;
        for _ in 0..MAX_ATTEMPTS {
            let request = match pending
                .take()
                .or_else(|| replay.as_ref().map(Replay::request))
            {
                Some(request) => request,
                None => break,
            };
            let waited = Instant::now();
            let lease = self.pool.checkout().await.map_err(Rejection::Unavailable)?;
            queued += waited.elapsed();
            self.metrics.queue_wait.record(waited.elapsed());

            let (attempt, mut lease) = self
                .attempt(lease, request, &mut body_sent, &timeouts)
                .await;
            match attempt {
                Attempt::Answered(response, worker_time) => {
                    if let Some(record) = record.as_mut() {
                        record.queue = queued;
                        record.worker = Some(worker_time);
                        record.worker_id = Some(lease.worker_id());
                        record.status = response.status().as_u16();
                    }
                    return Ok(self.client_response(response, lease, record.take()));
                }
                Attempt::NotSent(request) => {
                    let id = lease.worker_id();
                    tracing::warn!(
                        worker = id,
                        "worker unreachable before the request was sent; trying another"
                    );
                    lease.retire(Report::Unreachable(id));
                    pending = Some(request);
                }
                Attempt::Busy(response) if replay.is_some() => {
                    tracing::debug!(
                        worker = lease.worker_id(),
                        "worker answered busy; trying another"
                    );
                    Metrics::incr(&self.metrics.busy_retries);
                    discard_body(&mut lease, response, timeouts.connect).await;
                    lease.release_to_bottom();
                }
                Attempt::Busy(response) => {
                    if let Some(record) = record.as_mut() {
                        record.worker_id = Some(lease.worker_id());
                        record.status = response.status().as_u16();
                    }
                    return Ok(self.client_response(response, lease, record.take()));
                }
                Attempt::Failed(rejection) => {
                    if let Some(record) = record.as_mut() {
                        record.worker_id = Some(lease.worker_id());
                    }
                    match rejection {
                        Rejection::WorkerTimeout => {
                            let id = lease.worker_id();
                            tracing::error!(
                                worker = id,
                                timeout_ms = timeouts.read.as_millis() as u64,
                                "worker sent no response headers within the read timeout; replacing it"
                            );
                            lease.retire(Report::Hung(id));
                        }
                        _ => lease.conn().invalidate(),
                    }
                    return Err(rejection);
                }
            }
        }
        Err(Rejection::NoWorkerTook)
    }

    /// Sends the request on the leased worker's connection.
    async fn attempt(
        &self,
        mut lease: Lease<Upstream>,
        request: Request<RequestBody>,
        body_sent: &mut Option<oneshot::Receiver<()>>,
        timeouts: &Timeouts,
    ) -> (Attempt, Lease<Upstream>) {
        let mut request = request;
        // A kept-alive connection may close between `ready` and the send;
        // that is a stale connection, not a dead worker: re-dial it once.
        for _ in 0..2 {
            let exchange: Exchange = match lease.conn().ready(timeouts.connect).await {
                Ok(sender) => Box::pin(sender.try_send_request(request)),
                Err(e) => {
                    tracing::warn!(worker = lease.worker_id(), error = %e, "cannot dial worker");
                    return (Attempt::NotSent(request), lease);
                }
            };
            let sent_at = Instant::now();
            let mut flight = InFlight {
                exchange: Some(exchange),
                lease: Some(lease),
                limit: timeouts.read,
            };
            // The read timeout starts once the request body is fully sent.
            let read_deadline = async {
                if let Some(sent) = body_sent.as_mut() {
                    let _ = sent.await;
                }
                tokio::time::sleep(timeouts.read).await;
            };
            let race = {
                // Internal invariant: both set just above.
                let exchange = flight.exchange.as_mut().expect("exchange in flight");
                let held = flight.lease.as_mut().expect("lease in flight");
                let response = std::future::poll_fn(|cx| {
                    held.conn().poll_connection(cx);
                    exchange.as_mut().poll(cx)
                });
                tokio::select! {
                    biased;
                    result = response => Some(result),
                    () = read_deadline => None,
                }
            };
            lease = flight.land();
            let Some(result) = race else {
                return (Attempt::Failed(Rejection::WorkerTimeout), lease);
            };
            match result {
                Ok(response) => {
                    let worker_time = sent_at.elapsed();
                    self.metrics.upstream_latency.record(worker_time);
                    let attempt = if is_busy(&response) {
                        Attempt::Busy(response)
                    } else {
                        Attempt::Answered(response, worker_time)
                    };
                    return (attempt, lease);
                }
                Err(mut e) => match e.take_message() {
                    Some(unsent) => {
                        lease.conn().invalidate();
                        request = unsent;
                    }
                    None => {
                        let error = e.into_error();
                        let too_large = error_chain_has::<super::body::BodyTooLarge>(&error);
                        tracing::warn!(worker = lease.worker_id(), error = %error, "request to worker failed");
                        let rejection = if too_large {
                            Rejection::BodyTooLarge
                        } else {
                            Rejection::WorkerFailed
                        };
                        return (Attempt::Failed(rejection), lease);
                    }
                },
            }
        }
        (Attempt::NotSent(request), lease)
    }

    fn client_response(
        &self,
        response: Response<Incoming>,
        lease: Lease<Upstream>,
        record: Option<AccessRecord>,
    ) -> Response<ResponseBody> {
        let (mut parts, body) = response.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        strip_internal(&mut parts.headers);
        let drain_limit = self.tuning().1.read;
        let body = ResponseBody::worker(body, lease, record, drain_limit);
        Response::from_parts(parts, body)
    }
}

fn build(method: Method, uri: Uri, headers: HeaderMap, body: RequestBody) -> Request<RequestBody> {
    let mut request = Request::new(body);
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = Version::HTTP_11;
    *request.headers_mut() = headers;
    request
}

/// Workers get origin-form targets (`/path?query`).
fn origin_form(uri: &Uri) -> Uri {
    match uri.path_and_query() {
        Some(pq) => Uri::from(pq.clone()),
        None => Uri::from_static("/"),
    }
}

/// The headers a worker sees: the client's, minus hop-by-hop and `Rip-*`,
/// plus `Host` (from `:authority` for HTTP/2) and `X-Forwarded-*`.
fn forwarded_headers(parts: &mut http::request::Parts, client: ClientInfo) -> HeaderMap {
    let mut headers = std::mem::take(&mut parts.headers);
    strip_hop_by_hop(&mut headers);
    strip_internal(&mut headers);
    if !headers.contains_key(header::HOST) {
        if let Some(host) = parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, host);
        }
    }
    let ip = client.ip.to_string();
    // Every X-Forwarded-For line the client sent, in order, then the client.
    let prior: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let forwarded_for = match prior.as_slice() {
        [] => ip,
        lines => format!("{}, {ip}", lines.join(", ")),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert("x-forwarded-for", value);
    }
    headers.insert(
        "x-forwarded-proto",
        HeaderValue::from_static(client.scheme.as_str()),
    );
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
    headers
}

const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// including any the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
    headers.remove(header::PROXY_AUTHORIZATION);
}

/// Removes every `Rip-*` header: internal signals never cross the server.
fn strip_internal(headers: &mut HeaderMap) {
    let internal: Vec<HeaderName> = headers
        .keys()
        .filter(|name| name.as_str().starts_with("rip-"))
        .cloned()
        .collect();
    for name in internal {
        headers.remove(name);
    }
}

fn is_busy(response: &Response<Incoming>) -> bool {
    response.status() == StatusCode::SERVICE_UNAVAILABLE
        && (response.headers().contains_key("rip-worker-busy")
            || response.headers().contains_key("rip-worker-draining"))
}

/// Reads a short busy answer to its end so the connection can be reused.
async fn discard_body(lease: &mut Lease<Upstream>, response: Response<Incoming>, limit: Duration) {
    let upstream = lease.conn();
    let drained = tokio::time::timeout(limit, upstream.drain(response.into_body())).await;
    if !matches!(drained, Ok(Ok(()))) {
        upstream.invalidate();
    }
}

fn error_chain_has<E: std::error::Error + 'static>(
    error: &(dyn std::error::Error + 'static),
) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.is::<E>() {
            return true;
        }
        current = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_and_hop_by_hop_headers_are_stripped() {
        let request = Request::get("http://example.com/a?b=1")
            .header("rip-worker-busy", "1")
            .header("Rip-Probe", "1")
            .header("connection", "keep-alive, x-secret")
            .header("x-secret", "s")
            .header("x-forwarded-for", "10.0.0.1")
            .header("accept", "*/*")
            .body(())
            .unwrap();
        let (mut parts, ()) = request.into_parts();
        let client = ClientInfo {
            ip: "127.0.0.1".parse().unwrap(),
            scheme: Scheme::Http,
        };
        let headers = forwarded_headers(&mut parts, client);
        assert!(headers.get("rip-worker-busy").is_none());
        assert!(headers.get("rip-probe").is_none());
        assert!(headers.get("connection").is_none());
        assert!(headers.get("x-secret").is_none());
        assert_eq!(headers["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(headers["x-forwarded-proto"], "http");
        assert_eq!(headers["host"], "example.com");
        assert_eq!(headers["x-forwarded-host"], "example.com");
        assert_eq!(headers["accept"], "*/*");
        assert_eq!(origin_form(&parts.uri), "/a?b=1");
    }

    #[test]
    fn statuses_follow_the_design_table() {
        assert_eq!(Rejection::Unavailable(Unavailable::QueueFull).status(), 503);
        assert_eq!(
            Rejection::Unavailable(Unavailable::QueueTimeout).status(),
            504
        );
        assert_eq!(Rejection::Unavailable(Unavailable::NoWorkers).status(), 503);
        assert_eq!(Rejection::WorkerTimeout.status(), 504);
        assert_eq!(Rejection::WorkerFailed.status(), 502);
        assert_eq!(Rejection::BodyTooLarge.status(), 413);
        let response = Rejection::Unavailable(Unavailable::QueueFull).response();
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
