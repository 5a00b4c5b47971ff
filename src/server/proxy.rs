//! Forwarding one client request to one worker (DESIGN §3).
//!
//! [`Proxy::forward`] encodes the request head a worker gets (without what
//! must not cross, with `X-Forwarded-*`: [`super::wire`]), takes a worker
//! from the pool, sends the request over that worker's connection and
//! classifies the result. Failures are split by timing, as pingora does:
//! - before the request reached the worker (dial failed, connection closed
//!   before send): the worker is reported and the next one is tried;
//! - the worker answered `503 Rip-Worker-Busy` / `Rip-Worker-Draining`: the
//!   next worker is tried if the request has no body, else the 503 is passed on;
//! - after the request reached the worker: never replayed; 504 if no headers
//!   came within `--read-timeout-ms` (the worker is presumed hung and replaced),
//!   502 if the worker failed.
//!
//! [`Rejection::status`] is the one place that maps outcomes to statuses.

use std::future::Future;
use std::io::Write as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::{Body as _, SizeHint};
use hyper::body::Incoming;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::Full;
use tokio::sync::Semaphore;

use super::access_log::AccessRecord;
use super::body::{BodyStalled, BodyTooLarge, Buffered, ClientBody, ResponseBody};
use super::conn::ClientConn;
use super::metrics::Metrics;
use super::pool::{Lease, Pool, Report, Unavailable};
use super::relay::{self, RelayLimits};
use super::upstream::{
    settle, ExchangeError, InHand, Outgoing, Prestart, SmallBodyError, StreamedBody, Upstream,
};
use super::wire::{self, BodyFraming, RequestFraming, ResponseHead, UnframedHead};
use crate::config::{Limits, Timeouts};

/// How many workers one request may try before giving up with 503.
const MAX_ATTEMPTS: usize = 16;

/// A worker's response body up to this size (with a `Content-Length`) is
/// read whole with its head, so the worker is free before the client has
/// taken a byte.
const SMALL_BODY: usize = 64 * 1024;

/// Where a request came from: one per client connection.
#[derive(Debug, Clone, Copy)]
pub struct ClientInfo {
    /// The peer's address as text, formatted once per connection for
    /// `X-Forwarded-For`.
    ip_text: IpText,
    /// What the peer connected to: `X-Forwarded-Proto` and `-Port`.
    pub scheme: Scheme,
    pub port: u16,
    /// The peer is a trusted proxy (`--trusted-proxies`): its own forwarding
    /// headers pass (see [`wire::encode_request_head`]).
    pub trusted: bool,
}

impl ClientInfo {
    pub fn new(ip: IpAddr, scheme: Scheme, port: u16, trusted: bool) -> Self {
        ClientInfo {
            ip_text: IpText::new(ip),
            scheme,
            port,
            trusted,
        }
    }

    pub fn ip_text(&self) -> &[u8] {
        self.ip_text.as_bytes()
    }
}

/// An IP address as text, kept inline (the longest IPv6 form is 45 bytes).
#[derive(Clone, Copy)]
struct IpText {
    bytes: [u8; 45],
    len: u8,
}

impl IpText {
    fn new(ip: IpAddr) -> Self {
        let mut text = IpText {
            bytes: [0; 45],
            len: 0,
        };
        let mut cursor = &mut text.bytes[..];
        // Always fits; a failure would only shorten the text.
        let _ = write!(cursor, "{ip}");
        let left = cursor.len();
        text.len = (text.bytes.len() - left) as u8;
        text
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl std::fmt::Debug for IpText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&String::from_utf8_lossy(self.as_bytes()))
    }
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
    /// The client stopped sending its body.
    BodyStalled,
    /// The client's body ended early or was malformed.
    BodyBroken,
    /// No response headers within the read timeout.
    WorkerTimeout,
    /// The worker took none of the request body within the read timeout.
    WorkerNotReading,
    /// The worker failed after the request reached it.
    WorkerFailed,
}

impl Rejection {
    /// The one mapping from outcome to status (DESIGN §3).
    pub fn status(self) -> StatusCode {
        match self {
            Rejection::Unavailable(Unavailable::QueueTimeout)
            | Rejection::WorkerTimeout
            | Rejection::WorkerNotReading => StatusCode::GATEWAY_TIMEOUT,
            Rejection::Unavailable(_) | Rejection::NoWorkerTook => StatusCode::SERVICE_UNAVAILABLE,
            Rejection::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Rejection::BodyStalled => StatusCode::REQUEST_TIMEOUT,
            Rejection::BodyBroken => StatusCode::BAD_REQUEST,
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
            Rejection::BodyStalled => "request body stalled: no data within the header timeout\n",
            Rejection::BodyBroken => "request body ended early or was malformed\n",
            Rejection::WorkerTimeout => "the app did not answer in time\n",
            Rejection::WorkerNotReading => "the app did not take the request in time\n",
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

/// A client's request as the proxy keeps it once encoded.
struct Encoded {
    head: UnframedHead,
    head_request: bool,
    body: Incoming,
}

/// The limits and timeouts a request runs under.
struct Tuning {
    limits: Limits,
    timeouts: Timeouts,
}

/// Forwards requests to one app's pool.
pub struct Proxy {
    /// The app's name, for the access log.
    app: Arc<str>,
    pool: Arc<Pool<Upstream>>,
    metrics: Arc<Metrics>,
    /// Replaced when the config is re-read (SIGHUP); each request holds
    /// the one it began with.
    tuning: ArcSwap<Tuning>,
    access_log: bool,
    /// Response bytes queued for slow clients, server-wide ([`relay`]).
    relay_budget: Arc<Semaphore>,
}

/// What happened to one attempt at one worker (which comes back with it).
enum Attempt {
    Answered(ResponseHead, Duration),
    /// Never reached the worker; try another with this request.
    NotSent(Box<Outgoing>),
    /// The worker said busy/draining; retry only if the request can be replayed.
    Busy(ResponseHead),
    Failed(Rejection),
}

/// A worker holding a request in flight. If the client goes away before the
/// worker answers, dropping this lets the worker finish (bounded by the read
/// timeout) before it goes back to the pool, so a worker still busy with an
/// abandoned request is never handed the next one.
struct InFlight {
    lease: Option<Lease<Upstream>>,
}

impl InFlight {
    fn conn(&mut self) -> &mut Upstream {
        // Internal invariant: the lease is present until `land` or drop.
        self.lease
            .as_mut()
            .expect("in-flight request holds its lease")
            .conn()
    }

    /// The exchange is over (answered, failed or timed out): take the worker back.
    fn land(mut self) -> Lease<Upstream> {
        self.lease
            .take()
            .expect("in-flight request holds its lease")
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            settle(lease);
        }
    }
}

impl Proxy {
    pub fn new(
        app: &str,
        pool: Arc<Pool<Upstream>>,
        metrics: Arc<Metrics>,
        limits: Limits,
        timeouts: Timeouts,
        access_log: bool,
    ) -> Self {
        Proxy {
            app: Arc::from(app),
            pool,
            metrics,
            tuning: ArcSwap::from_pointee(Tuning { limits, timeouts }),
            access_log,
            relay_budget: Arc::new(Semaphore::new(relay::TOTAL_BUFFER_BYTES)),
        }
    }

    /// Applies new limits and timeouts to requests from now on.
    pub fn retune(&self, limits: Limits, timeouts: Timeouts) {
        self.tuning.store(Arc::new(Tuning { limits, timeouts }));
    }

    /// Answers one client request through a worker.
    ///
    /// The request is encoded for the worker here, before the future is
    /// first polled: the future then holds those bytes and the body, not
    /// the parsed request, and stays small. It is moved whole at every
    /// level of the call chain, so its size is paid per request.
    pub fn forward(
        self: Arc<Self>,
        request: Request<Incoming>,
        client: ClientInfo,
        conn: Arc<ClientConn>,
    ) -> impl Future<Output = Response<ResponseBody>> + Send + 'static {
        let (parts, body) = request.into_parts();
        let record = Unfinished(
            self.access_log
                .then(|| Box::new(AccessRecord::begin(&self.app, &parts, Instant::now()))),
        );
        let request = Encoded {
            head: wire::encode_unframed_head(&parts, client),
            head_request: parts.method == Method::HEAD,
            body,
        };
        async move {
            let mut record = record;
            let response = match self.exchange(request, &conn, &mut record.0).await {
                Ok(response) => response,
                Err(rejection) => rejection.response(),
            };
            self.metrics.count_response(response.status().as_u16());
            // Local answers are complete now; relayed bodies log when they end.
            if let (ResponseBody::Local(body), Some(mut record)) =
                (response.body(), record.0.take())
            {
                record.status = response.status().as_u16();
                record.bytes = body.size_hint().exact().unwrap_or(0);
                record.emit("ok");
            }
            response
        }
    }

    async fn exchange(
        &self,
        request: Encoded,
        conn: &Arc<ClientConn>,
        record: &mut Option<Box<AccessRecord>>,
    ) -> Result<Response<ResponseBody>, Rejection> {
        let tuning = self.tuning.load_full();
        let Tuning { limits, timeouts } = &*tuning;
        let Encoded {
            head,
            head_request,
            body,
        } = request;
        let declared = body.size_hint().exact().or(body.size_hint().upper());
        if declared.is_some_and(|len| len > limits.max_body_bytes) {
            return Err(Rejection::BodyTooLarge);
        }
        let (framing, whole, streamed) = self.read_body(body, limits, timeouts).await?;
        // A request whose body is in hand (or that has none) can be sent
        // again, to another worker.
        let replayable = streamed.is_none();
        let head = head.finish(framing, &whole);
        // Now in `head`: not held (nor made part of this future) while the
        // worker works.
        drop(whole);
        // The encoded request serves every attempt and the pool's hand-off.
        let prestart = Prestart {
            head,
            bodiless: replayable,
            head_request,
            read_timeout: timeouts.read,
            hung_timeout: timeouts.hung,
        };
        let head = &prestart.head;
        let mut pending = Some(Outgoing::new(head.clone(), streamed, head_request));

        let mut queued = Duration::ZERO;
        for _ in 0..MAX_ATTEMPTS {
            let request = match pending.take() {
                Some(request) => request,
                None if replayable => Outgoing::new(head.clone(), None, head_request),
                None => break,
            };
            let waited = Instant::now();
            let lease = self
                .pool
                .checkout_starting(Some(&prestart))
                .await
                .map_err(Rejection::Unavailable)?;
            let checked_out = Instant::now();
            queued += checked_out - waited;
            self.metrics.queue_wait.record(checked_out - waited);

            let (attempt, mut lease) = self.attempt(lease, request, timeouts, checked_out).await;
            match attempt {
                Attempt::Answered(response, worker_time) => {
                    if let Some(record) = record.as_mut() {
                        record.queue = queued;
                        record.worker = Some(worker_time);
                        record.worker_id = Some(lease.worker_id());
                        record.status = response.status.as_u16();
                    }
                    return self
                        .client_response(response, lease, conn, record, limits, timeouts)
                        .await;
                }
                Attempt::NotSent(request) => {
                    let id = lease.worker_id();
                    tracing::warn!(
                        worker = id,
                        "worker unreachable before the request was sent; trying another"
                    );
                    lease.retire(Report::Unreachable(id));
                    pending = Some(*request);
                }
                Attempt::Busy(_) if replayable => {
                    tracing::debug!(
                        worker = lease.worker_id(),
                        "worker answered busy; trying another"
                    );
                    Metrics::incr(&self.metrics.busy_retries);
                    // A short busy answer: read it so the connection is
                    // reused. Boxed: this rare wait would otherwise grow
                    // every request's future.
                    Box::pin(lease.conn().complete_within(timeouts.connect)).await;
                    lease.release_to_bottom();
                }
                Attempt::Busy(response) => {
                    if let Some(record) = record.as_mut() {
                        record.worker_id = Some(lease.worker_id());
                        record.status = response.status.as_u16();
                    }
                    return self
                        .client_response(response, lease, conn, record, limits, timeouts)
                        .await;
                }
                Attempt::Failed(rejection) => {
                    if let Some(record) = record.as_mut() {
                        record.worker_id = Some(lease.worker_id());
                    }
                    match rejection {
                        // Slow is not hung: the client gets 504 now, and the
                        // worker may finish (its answer is read and dropped)
                        // before it serves again, for up to --hung-timeout-ms.
                        Rejection::WorkerTimeout => {
                            tracing::warn!(
                                worker = lease.worker_id(),
                                timeout_ms = timeouts.read.as_millis() as u64,
                                hung_timeout_ms = timeouts.hung.as_millis() as u64,
                                "worker sent no response headers within --read-timeout-ms; the \
                                 client got 504. The worker may still finish; it is replaced if it \
                                 is still busy after --hung-timeout-ms"
                            );
                            settle(lease);
                        }
                        Rejection::WorkerNotReading => {
                            let id = lease.worker_id();
                            tracing::error!(
                                worker = id,
                                timeout_ms = timeouts.read.as_millis() as u64,
                                "worker took none of the request body within --read-timeout-ms; \
                                 replacing it (it is drained, then killed)"
                            );
                            lease.retire(Report::Hung(id));
                        }
                        _ => {}
                    }
                    return Err(rejection);
                }
            }
        }
        Err(Rejection::NoWorkerTook)
    }

    /// Reads a request body up to `--upload-buffer-bytes` before any worker
    /// is taken: a body that ends within it goes to the worker whole (with
    /// its length), so a slow upload holds only its own connection; a
    /// larger one streams, starting with what was read.
    async fn read_body(
        &self,
        body: Incoming,
        limits: &Limits,
        timeouts: &Timeouts,
    ) -> Result<(RequestFraming, Bytes, Option<StreamedBody>), Rejection> {
        if body.is_end_stream() {
            return Ok((RequestFraming::Empty, Bytes::new(), None));
        }
        let mut body = ClientBody::new(
            body,
            limits.max_body_bytes,
            timeouts.header,
            limits.min_upload_rate,
        );
        let buffered = body
            .read_up_to(limits.upload_buffer_bytes)
            .await
            .map_err(|e| upload_rejection(&*e))?;
        Ok(match buffered {
            Buffered::Whole(whole) if whole.is_empty() => (RequestFraming::Empty, whole, None),
            Buffered::Whole(whole) => (RequestFraming::Length(whole.len() as u64), whole, None),
            Buffered::Prefix(first) => {
                let framing = match body.exact_len() {
                    Some(length) => RequestFraming::Length(length + first.len() as u64),
                    None => RequestFraming::Chunked,
                };
                let streamed = StreamedBody {
                    first,
                    rest: body,
                    chunked: framing == RequestFraming::Chunked,
                };
                (framing, Bytes::new(), Some(streamed))
            }
        })
    }

    /// Sends the request on the leased worker's connection.
    async fn attempt(
        &self,
        lease: Lease<Upstream>,
        request: Outgoing,
        timeouts: &Timeouts,
        sent_at: Instant,
    ) -> (Attempt, Lease<Upstream>) {
        let mut lease = lease;
        let prestarted = lease.take_prestarted();
        let mut flight = InFlight { lease: Some(lease) };
        let result = flight
            .conn()
            .exchange(
                request,
                prestarted,
                timeouts.connect,
                timeouts.read,
                timeouts.hung,
            )
            .await;
        let lease = flight.land();
        let attempt = match result {
            Ok(head) if head.busy => Attempt::Busy(head),
            Ok(head) => {
                let worker_time = sent_at.elapsed();
                self.metrics.upstream_latency.record(worker_time);
                Attempt::Answered(head, worker_time)
            }
            Err(ExchangeError::NotSent(request, e)) => {
                tracing::warn!(worker = lease.worker_id(), error = %e, "cannot reach worker");
                Attempt::NotSent(request)
            }
            Err(ExchangeError::Upload(e)) => Attempt::Failed(upload_rejection(&*e)),
            Err(ExchangeError::Timeout) => Attempt::Failed(Rejection::WorkerTimeout),
            Err(ExchangeError::SendStalled) => Attempt::Failed(Rejection::WorkerNotReading),
            Err(ExchangeError::Failed(e)) => {
                tracing::warn!(worker = lease.worker_id(), error = %e, "request to worker failed");
                Attempt::Failed(Rejection::WorkerFailed)
            }
        };
        (attempt, lease)
    }

    /// The client's response to a worker's answer: its body taken whole if
    /// it is small (the worker is free at once), else relayed as it streams.
    async fn client_response(
        &self,
        head: ResponseHead,
        mut lease: Lease<Upstream>,
        conn: &Arc<ClientConn>,
        record: &mut Option<Box<AccessRecord>>,
        limits: &Limits,
        timeouts: &Timeouts,
    ) -> Result<Response<ResponseBody>, Rejection> {
        let size = match head.framing {
            BodyFraming::Empty => SizeHint::with_exact(0),
            BodyFraming::Length(n) => SizeHint::with_exact(n),
            BodyFraming::Chunked | BodyFraming::UntilClose => SizeHint::default(),
        };
        let taken = lease
            .conn()
            .take_small_body(SMALL_BODY, timeouts.body_idle)
            .await;
        let body = match taken {
            Ok(InHand::Whole(bytes)) => {
                drop(lease);
                ResponseBody::Local(Full::new(bytes))
            }
            Ok(InHand::Partial(first)) => {
                let relay = RelayLimits {
                    buffer: limits.response_buffer_bytes,
                    min_rate: limits.min_download_rate,
                    body_idle: timeouts.body_idle,
                };
                ResponseBody::Relay(relay::start(
                    lease,
                    first,
                    size,
                    conn.clone(),
                    record.take(),
                    relay,
                    &self.relay_budget,
                ))
            }
            Err(SmallBodyError::Stalled) => {
                let id = lease.worker_id();
                tracing::error!(
                    worker = id,
                    timeout_ms = timeouts.body_idle.as_millis() as u64,
                    "worker paused mid-response for longer than --body-idle-timeout-ms; replacing it"
                );
                lease.retire(Report::Hung(id));
                return Err(Rejection::WorkerTimeout);
            }
            Err(SmallBodyError::Broken(e)) => {
                tracing::warn!(worker = lease.worker_id(), error = %e, "worker response broke off mid-body");
                return Err(Rejection::WorkerFailed);
            }
        };
        let mut response = Response::new(body);
        *response.status_mut() = head.status;
        *response.headers_mut() = head.headers;
        Ok(response)
    }
}

/// The access record of a request under way. If the request is dropped
/// before it is answered (its client left while it waited or while its
/// worker worked), it is still logged, as `client-closed` with nginx's 499.
struct Unfinished(Option<Box<AccessRecord>>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(mut record) = self.0.take() {
            record.status = 499;
            record.emit("client-closed");
        }
    }
}

/// Which client mistake ended an upload.
fn upload_rejection(error: &(dyn std::error::Error + 'static)) -> Rejection {
    if error.is::<BodyTooLarge>() {
        Rejection::BodyTooLarge
    } else if error.is::<BodyStalled>() {
        Rejection::BodyStalled
    } else {
        Rejection::BodyBroken
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addresses_are_written_whole() {
        for ip in [
            "127.0.0.1",
            "255.255.255.255",
            "::1",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "::ffff:255.255.255.255",
        ] {
            let client = ClientInfo::new(ip.parse().unwrap(), Scheme::Http, 80, false);
            assert_eq!(client.ip_text(), ip.as_bytes());
        }
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
        assert_eq!(Rejection::BodyStalled.status(), 408);
        assert_eq!(Rejection::BodyBroken.status(), 400);
        let response = Rejection::Unavailable(Unavailable::QueueFull).response();
        assert_eq!(response.headers()["retry-after"], "1");
    }
}
