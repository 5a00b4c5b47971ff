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
    ///
    /// A plain human line is rendered here, in the form the subscriber gives
    /// fields, and written straight to the log ([`crate::logging::write_info_line`]):
    /// at one line per request, the subscriber's own rendering cost more
    /// than proxying the request. JSON and coloured lines go through it.
    pub fn emit(&self, outcome: &'static str) {
        if !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        let total = self.started.elapsed();
        let line = HumanLine {
            record: self,
            total,
            outcome,
        };
        if crate::logging::write_info_line("access", |out| line.render(out)) {
            return;
        }
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        tracing::info!(
            target: "access",
            app = %self.app,
            host = %Field(&self.host),
            method = %self.method,
            path = %Field(&self.path),
            status = self.status,
            bytes = self.bytes,
            total_ms = ms(total),
            queue_ms = ms(self.queue),
            worker_ms = self.worker.map(ms),
            worker = self.worker_id,
            outcome,
        );
    }
}

/// A record as a human line: `app=… host=… method=… path=… status=…
/// bytes=… total_ms=… queue_ms=… [worker_ms=… worker=…] outcome="…"`.
struct HumanLine<'a> {
    record: &'a AccessRecord,
    total: Duration,
    outcome: &'static str,
}

impl HumanLine<'_> {
    /// Appends the line (without a timestamp, level or newline) to `out`.
    fn render(&self, out: &mut String) {
        use std::fmt::Write as _;
        let r = self.record;
        out.push_str("app=");
        out.push_str(&r.app);
        let _ = write!(out, " host={}", Field(&r.host));
        out.push_str(" method=");
        out.push_str(r.method.as_str());
        let _ = write!(out, " path={}", Field(&r.path));
        out.push_str(" status=");
        push_number(out, r.status.into());
        out.push_str(" bytes=");
        push_number(out, r.bytes);
        out.push_str(" total_ms=");
        push_millis(out, self.total);
        out.push_str(" queue_ms=");
        push_millis(out, r.queue);
        if let Some(worker) = r.worker {
            out.push_str(" worker_ms=");
            push_millis(out, worker);
        }
        if let Some(id) = r.worker_id {
            out.push_str(" worker=");
            push_number(out, id);
        }
        out.push_str(" outcome=\"");
        out.push_str(self.outcome);
        out.push('"');
    }
}

fn push_number(out: &mut String, n: u64) {
    crate::logging::push_padded(out, n, 0);
}

/// Appends milliseconds rounded to the microsecond as the rounded `f64`
/// read with `{:?}` (`0.0`, `1.5`, `12.034`), without formatting a float.
fn push_millis(out: &mut String, d: Duration) {
    let micros = u64::try_from(d.as_nanos().saturating_add(500) / 1000).unwrap_or(u64::MAX);
    let (whole, mut frac) = (micros / 1000, micros % 1000);
    push_number(out, whole);
    out.push('.');
    if frac == 0 {
        out.push('0');
        return;
    }
    let mut width = 3;
    while frac % 10 == 0 {
        frac /= 10;
        width -= 1;
    }
    crate::logging::push_padded(out, frac, width);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(d: Duration) -> String {
        let mut out = String::new();
        push_millis(&mut out, d);
        out
    }

    fn render(line: HumanLine) -> String {
        let mut out = String::new();
        line.render(&mut out);
        out
    }

    /// How the field-based line wrote a duration: `{:?}` of the f64.
    fn as_float(d: Duration) -> String {
        format!("{:?}", (d.as_secs_f64() * 1e6).round() / 1e3)
    }

    #[test]
    fn milliseconds_read_as_the_rounded_float_did() {
        let mut nanos: u64 = 0;
        while nanos < 5_000_000_000 {
            let d = Duration::from_nanos(nanos);
            assert_eq!(millis(d), as_float(d), "{nanos} ns");
            // Every microsecond and its rounding edges at first, then sparser.
            nanos += if nanos < 3_000_000 { 499 } else { 7_919_993 };
        }
        for d in [
            Duration::ZERO,
            Duration::from_micros(1_500),
            Duration::from_micros(2_000),
            Duration::from_micros(10),
            Duration::from_nanos(1_999_500),
            Duration::from_secs(3_600),
        ] {
            assert_eq!(millis(d), as_float(d), "{d:?}");
        }
    }

    #[test]
    fn a_human_line_holds_every_field_in_order() {
        let record = AccessRecord {
            app: Arc::from("api"),
            host: "example.com:8080".to_string(),
            method: http::Method::GET,
            path: "/a \"b\"".to_string(),
            status: 200,
            bytes: 4,
            started: Instant::now(),
            queue: Duration::from_micros(20),
            worker: Some(Duration::from_micros(1_250)),
            worker_id: Some(3),
        };
        let line = render(HumanLine {
            record: &record,
            total: Duration::from_micros(1_992),
            outcome: "ok",
        });
        assert_eq!(
            line,
            r#"app=api host=example.com:8080 method=GET path="/a \"b\"" status=200 bytes=4 total_ms=1.992 queue_ms=0.02 worker_ms=1.25 worker=3 outcome="ok""#
        );
        let unanswered = AccessRecord {
            worker: None,
            worker_id: None,
            ..record
        };
        let line = render(HumanLine {
            record: &unanswered,
            total: Duration::ZERO,
            outcome: "client-closed",
        });
        assert!(
            line.ends_with(r#"total_ms=0.0 queue_ms=0.02 outcome="client-closed""#),
            "{line}"
        );
    }
}
