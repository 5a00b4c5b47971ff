//! One access log record per request, emitted when its response is complete.
//!
//! The record is a plain value filled in along the request path; rendering is
//! left to the `tracing` subscriber (`logging.rs`), which writes it as a human
//! line or, with `--json-logging`, as a JSON object with the same fields
//! (the app, then host, method, path, status, bytes and timings).
//! With `--no-access-log` no record is built at all. The path is logged
//! without its query string (where tokens and other secrets ride) unless
//! `--log-query`; in human lines the host and path are quoted and escaped
//! when they hold anything but plain visible ASCII ([`Field`]), so a
//! client cannot forge a field or a line.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::logging::Field;

/// What the access log says about one request.
#[derive(Debug, Clone)]
pub struct AccessRecord {
    /// The app that answered (its name).
    pub app: Arc<str>,
    pub host: String,
    pub method: http::Method,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub started: Instant,
    pub queue: Duration,
    pub worker: Option<Duration>,
    pub worker_id: Option<u64>,
}

impl AccessRecord {
    pub fn begin(app: &Arc<str>, parts: &http::request::Parts, started: Instant) -> Self {
        let host = parts
            .headers
            .get(http::header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("-")
            .to_string();
        AccessRecord {
            app: app.clone(),
            host,
            method: parts.method.clone(),
            path: match parts.uri.path_and_query() {
                Some(pq) if crate::logging::log_query() => pq.as_str().to_string(),
                _ => parts.uri.path().to_string(),
            },
            status: 0,
            bytes: 0,
            started,
            queue: Duration::ZERO,
            worker: None,
            worker_id: None,
        }
    }

    /// Writes the record (the response is complete, or the client left).
    pub fn emit(&self, outcome: &'static str) {
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: "access",
            app = %self.app,
            host = %Field(&self.host),
            method = %self.method,
            path = %Field(&self.path),
            status = self.status,
            bytes = self.bytes,
            total_ms = ms(self.started.elapsed()),
            queue_ms = ms(self.queue),
            worker_ms = self.worker.map(ms),
            worker = self.worker_id,
            outcome,
        );
    }
}
