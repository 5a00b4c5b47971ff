//! Counters and latency histograms per app, exposed in the Prometheus text
//! format on the control socket's `GET /metrics`.
//!
//! The request path only ever adds to relaxed atomics ([`Metrics`], one per
//! app; histograms have fixed buckets, so recording is one comparison loop
//! and one add). A scrape builds the metric families with the
//! `prometheus-client` crate from a snapshot of every app ([`render`]): one
//! family per metric, one sample per app, labelled `app`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use super::pool::PoolStats;

const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram with fixed buckets.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    overflow: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn record(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        match BUCKETS.iter().position(|&le| secs <= le) {
            Some(i) => self.counts[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
    }

    /// `(sum in seconds, count, [(upper bound, count in that bucket)])`,
    /// the last bucket `+Inf` (as prometheus-client writes it: `f64::MAX`).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let mut buckets: Vec<(f64, u64)> = BUCKETS
            .iter()
            .zip(&self.counts)
            .map(|(&le, count)| (le, count.load(Ordering::Relaxed)))
            .collect();
        buckets.push((f64::MAX, self.overflow.load(Ordering::Relaxed)));
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        (sum, count, buckets)
    }
}

/// One app's counters.
pub struct Metrics {
    /// Responses by status code (index = code).
    responses: Box<[AtomicU64; 600]>,
    pub queue_wait: Histogram,
    pub upstream_latency: Histogram,
    pub worker_starts: AtomicU64,
    pub worker_crashes: AtomicU64,
    pub worker_recycles: AtomicU64,
    pub rolls_started: AtomicU64,
    pub rolls_succeeded: AtomicU64,
    pub rolls_failed: AtomicU64,
    pub module_reloads: AtomicU64,
    pub busy_retries: AtomicU64,
    pub stray_bytes: AtomicU64,
    pub idle_connections_closed: AtomicU64,
    /// Worker slots whose last worker failed (a gauge the supervisor sets).
    pub slots_failing: AtomicU64,
    pub memory_recycles: AtomicU64,
}

impl Metrics {
    pub fn new() -> Self {
        Metrics {
            responses: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
            queue_wait: Histogram::default(),
            upstream_latency: Histogram::default(),
            worker_starts: AtomicU64::new(0),
            worker_crashes: AtomicU64::new(0),
            worker_recycles: AtomicU64::new(0),
            rolls_started: AtomicU64::new(0),
            rolls_succeeded: AtomicU64::new(0),
            rolls_failed: AtomicU64::new(0),
            module_reloads: AtomicU64::new(0),
            busy_retries: AtomicU64::new(0),
            stray_bytes: AtomicU64::new(0),
            idle_connections_closed: AtomicU64::new(0),
            slots_failing: AtomicU64::new(0),
            memory_recycles: AtomicU64::new(0),
        }
    }

    pub fn count_response(&self, status: u16) {
        if let Some(counter) = self.responses.get(usize::from(status)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn incr(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// One app at scrape time.
pub struct AppSample<'a> {
    pub app: &'a str,
    pub metrics: &'a Metrics,
    pub pool: PoolStats,
}

/// What the server as a whole counts, beside its apps.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerSample {
    /// Log lines dropped because stdout was not being read.
    pub log_lines_dropped: u64,
}

/// The Prometheus text of every app's metrics and the server's own
/// (OpenMetrics framing, as prometheus-client writes it: `# EOF` at the end).
pub fn render(apps: &[AppSample<'_>], server: ServerSample) -> String {
    let mut registry = Registry::default();
    let snapshot = Snapshot(
        apps.iter()
            .map(|a| Sampled::of(a.app, a.metrics, a.pool))
            .collect(),
        server,
    );
    registry.register_collector(Box::new(snapshot));
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &registry) {
        let _ = writeln!(out, "# encoding failed: {e}");
    }
    out
}

/// The content type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every app's values, read once when the scrape begins.
#[derive(Debug)]
struct Snapshot(Vec<Sampled>, ServerSample);

#[derive(Debug)]
struct Sampled {
    app: String,
    responses: Vec<(u16, u64)>,
    queue_wait: (f64, u64, Vec<(f64, u64)>),
    upstream_latency: (f64, u64, Vec<(f64, u64)>),
    counters: [u64; COUNTERS.len()],
    slots_failing: u64,
    pool: PoolStats,
}

/// Which counter of an app's [`Metrics`].
type Field = for<'a> fn(&'a Metrics) -> &'a AtomicU64;

/// The counters every app has: name (without `_total`), help, and which field.
const COUNTERS: [(&str, &str, Field); 11] = [
    (
        "rip_worker_memory_recycles",
        "Workers recycled because their resident memory passed --max-rss.",
        |m| &m.memory_recycles,
    ),
    (
        "rip_busy_retries",
        "Requests moved to another worker after a busy answer.",
        |m| &m.busy_retries,
    ),
    ("rip_worker_starts", "Worker processes started.", |m| {
        &m.worker_starts
    }),
    (
        "rip_worker_crashes",
        "Workers that exited unexpectedly or failed to boot.",
        |m| &m.worker_crashes,
    ),
    (
        "rip_worker_recycles",
        "Workers recycled by the restart policy.",
        |m| &m.worker_recycles,
    ),
    ("rip_rolls_started", "Rolling restarts started.", |m| {
        &m.rolls_started
    }),
    (
        "rip_rolls_succeeded",
        "Rolling restarts that switched to a new generation.",
        |m| &m.rolls_succeeded,
    ),
    (
        "rip_rolls_failed",
        "Rolling restarts abandoned; the old generation kept serving.",
        |m| &m.rolls_failed,
    ),
    (
        "rip_module_reloads",
        "In-worker module reloads signalled.",
        |m| &m.module_reloads,
    ),
    (
        "rip_worker_stray_bytes",
        "Worker connections closed because the worker sent bytes outside any response.",
        |m| &m.stray_bytes,
    ),
    (
        "rip_worker_idle_closes",
        "Idle worker connections found closed by the worker (and dialled again).",
        |m| &m.idle_connections_closed,
    ),
];

impl Sampled {
    fn of(app: &str, metrics: &Metrics, pool: PoolStats) -> Self {
        Sampled {
            app: app.to_string(),
            responses: metrics
                .responses
                .iter()
                .enumerate()
                .filter_map(|(status, n)| {
                    let n = n.load(Ordering::Relaxed);
                    (n > 0).then_some((status as u16, n))
                })
                .collect(),
            queue_wait: metrics.queue_wait.snapshot(),
            upstream_latency: metrics.upstream_latency.snapshot(),
            counters: COUNTERS.map(|(_, _, field)| field(metrics).load(Ordering::Relaxed)),
            slots_failing: metrics.slots_failing.load(Ordering::Relaxed),
            pool,
        }
    }

    fn labels(&self) -> Vec<(&'static str, String)> {
        vec![("app", self.app.clone())]
    }
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut family = encoder.encode_descriptor(
                "rip_requests",
                "Responses sent to clients, by status.",
                None,
                MetricType::Counter,
            )?;
            for app in &self.0 {
                for (status, n) in &app.responses {
                    let labels = vec![("app", app.app.clone()), ("status", status.to_string())];
                    ConstCounter::new(*n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        for (name, help, pick) in [
            (
                "rip_queue_wait_seconds",
                "Time requests waited for a worker.",
                (|s: &Sampled| &s.queue_wait) as fn(&Sampled) -> &(f64, u64, Vec<(f64, u64)>),
            ),
            (
                "rip_upstream_latency_seconds",
                "Time from sending a request to a worker to its response headers.",
                |s: &Sampled| &s.upstream_latency,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for app in &self.0 {
                let (sum, count, buckets) = pick(app);
                family
                    .encode_family(&app.labels())?
                    .encode_histogram::<Vec<(&str, String)>>(*sum, *count, buckets, None)?;
            }
        }
        for (i, (name, help, _)) in COUNTERS.iter().enumerate() {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for app in &self.0 {
                ConstCounter::new(app.counters[i]).encode(family.encode_family(&app.labels())?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "rip_slots_failing",
                "Worker slots whose last worker failed to start or crashed (retried with backoff).",
                None,
                MetricType::Gauge,
            )?;
            for app in &self.0 {
                let value = i64::try_from(app.slots_failing).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&app.labels())?)?;
            }
        }
        type Gauge = (&'static str, &'static str, fn(&PoolStats) -> usize);
        let gauges: [Gauge; 5] = [
            ("rip_workers_idle", "Workers waiting for a request.", |p| {
                p.idle
            }),
            ("rip_workers_busy", "Workers serving a request.", |p| p.busy),
            ("rip_workers_booting", "Workers starting.", |p| p.booting),
            ("rip_queue_depth", "Requests waiting for a worker.", |p| {
                p.queued
            }),
            ("rip_generation", "Admitted worker generation.", |p| {
                p.generation as usize
            }),
        ];
        for (name, help, pick) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for app in &self.0 {
                let value = i64::try_from(pick(&app.pool)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&app.labels())?)?;
            }
        }
        ConstCounter::new(self.1.log_lines_dropped).encode(encoder.encode_descriptor(
            "rip_log_lines_dropped",
            "Log lines dropped because stdout was not being read.",
            None,
            MetricType::Counter,
        )?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_app_is_one_labelled_sample_of_each_family() {
        let (a, b) = (Metrics::new(), Metrics::new());
        a.count_response(200);
        a.count_response(200);
        b.count_response(404);
        Metrics::incr(&b.rolls_started);
        a.queue_wait.record(Duration::from_millis(3));
        let pool = PoolStats::default();
        let server = ServerSample {
            log_lines_dropped: 7,
        };
        let text = render(
            &[
                AppSample {
                    app: "api",
                    metrics: &a,
                    pool,
                },
                AppSample {
                    app: "labs",
                    metrics: &b,
                    pool,
                },
            ],
            server,
        );
        assert!(
            text.contains("rip_requests_total{app=\"api\",status=\"200\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("rip_requests_total{app=\"labs\",status=\"404\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rip_rolls_started_total{app=\"labs\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rip_queue_wait_seconds_bucket{le=\"0.005\",app=\"api\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("rip_queue_wait_seconds_count{app=\"api\"} 1"),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE rip_requests counter").count(),
            1,
            "{text}"
        );
        assert!(text.contains("\nrip_log_lines_dropped_total 7\n"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
