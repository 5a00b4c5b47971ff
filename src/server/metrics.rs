//! Counters and latency histograms, rendered as Prometheus text for `GET /metrics`.
//!
//! Everything is a relaxed atomic: the request path only ever adds, and a
//! scrape reads a near-consistent snapshot. Histograms use fixed buckets
//! (seconds) so recording is one comparison loop and one add.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

    fn render(&self, out: &mut String, name: &str, help: &str, labels: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (le, count) in BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.overflow.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(
            out,
            "{name}_sum{{{labels}}} {sum}\n{name}_count{{{labels}}} {cumulative}"
        );
    }
}

/// One app's counters.
pub struct Metrics {
    app: String,
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
}

impl Metrics {
    pub fn new(app: &str) -> Self {
        Metrics {
            app: app.replace(['"', '\\', '\n'], "_"),
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

    /// Appends this app's series in Prometheus text format.
    pub fn render(&self, out: &mut String, pool: &super::pool::PoolStats) {
        let labels = format!("app=\"{}\"", self.app);
        let _ = writeln!(
            out,
            "# HELP rip_requests_total Responses sent to clients, by status.\n# TYPE rip_requests_total counter"
        );
        for (status, count) in self.responses.iter().enumerate() {
            let count = count.load(Ordering::Relaxed);
            if count > 0 {
                let _ = writeln!(
                    out,
                    "rip_requests_total{{{labels},status=\"{status}\"}} {count}"
                );
            }
        }
        self.queue_wait.render(
            out,
            "rip_queue_wait_seconds",
            "Time requests waited for a worker.",
            &labels,
        );
        self.upstream_latency.render(
            out,
            "rip_upstream_latency_seconds",
            "Time from sending a request to a worker to its response headers.",
            &labels,
        );
        let counters: [(&str, &str, &AtomicU64); 10] = [
            (
                "rip_worker_stray_bytes_total",
                "Worker connections closed because the worker sent bytes outside any response.",
                &self.stray_bytes,
            ),
            (
                "rip_worker_idle_closes_total",
                "Idle worker connections found closed by the worker (and dialled again).",
                &self.idle_connections_closed,
            ),
            (
                "rip_busy_retries_total",
                "Requests moved to another worker after a busy answer.",
                &self.busy_retries,
            ),
            (
                "rip_worker_starts_total",
                "Worker processes started.",
                &self.worker_starts,
            ),
            (
                "rip_worker_crashes_total",
                "Workers that exited unexpectedly or failed to boot.",
                &self.worker_crashes,
            ),
            (
                "rip_worker_recycles_total",
                "Workers recycled by the restart policy.",
                &self.worker_recycles,
            ),
            (
                "rip_rolls_started_total",
                "Rolling restarts started.",
                &self.rolls_started,
            ),
            (
                "rip_rolls_succeeded_total",
                "Rolling restarts that switched to a new generation.",
                &self.rolls_succeeded,
            ),
            (
                "rip_rolls_failed_total",
                "Rolling restarts abandoned; the old generation kept serving.",
                &self.rolls_failed,
            ),
            (
                "rip_module_reloads_total",
                "In-worker module reloads signalled.",
                &self.module_reloads,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name}{{{labels}}} {}",
                value.load(Ordering::Relaxed)
            );
        }
        let gauges = [
            (
                "rip_workers_idle",
                "Workers waiting for a request.",
                pool.idle,
            ),
            ("rip_workers_busy", "Workers serving a request.", pool.busy),
            ("rip_workers_booting", "Workers starting.", pool.booting),
            (
                "rip_queue_depth",
                "Requests waiting for a worker.",
                pool.queued,
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name}{{{labels}}} {value}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP rip_generation Admitted worker generation.\n# TYPE rip_generation gauge\nrip_generation{{{labels}}} {}",
            pool.generation
        );
    }
}
