//! One worker slot's health: its failures in a row, when it is tried next,
//! and why it last failed.
//!
//! A slot never gives up. A database that is down at boot, an exception
//! thrown six times, a full file-descriptor table: all of these pass, and
//! the app must serve again when they do. So a slot that fails is retried
//! after a capped exponential backoff with jitter (1 s doubling to
//! `--max-backoff-ms`, 30 s by default, ±20 %, so the slots of an app do not
//! retry in lockstep) for as long as the server runs. `status` shows it `failing` with its last error, its
//! attempts and its next retry; the log says so loudly at the first failure
//! and then at most once a minute, counting what it did not repeat.

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Each delay is spread over ±this fraction.
const JITTER: f64 = 0.2;
/// A failing slot is logged at most this often.
const LOG_EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Default)]
pub(super) struct Slot {
    /// Failed starts and crashes in a row.
    failures: u32,
    /// Backing off: not filled before this.
    next_try: Option<Instant>,
    last_error: Option<String>,
    last_logged: Option<Instant>,
    /// Failures since the last log line.
    unlogged: u32,
    /// A worker of it serves now (its failures are kept for the backoff
    /// until it has served a while, but it is not failing).
    serving: bool,
}

/// `/status`'s view of a slot.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SlotStatus {
    pub slot: usize,
    /// `ok`, or `failing` (its last worker failed; retried with backoff).
    pub state: &'static str,
    pub failures: u32,
    pub last_error: Option<String>,
    /// When the next worker starts, if the slot is waiting.
    pub next_retry_ms: Option<u64>,
}

impl Slot {
    /// Whether a worker may be started in it now.
    pub fn ready_to_fill(&mut self, now: Instant) -> bool {
        match self.next_try {
            Some(at) if now < at => false,
            Some(_) => {
                self.next_try = None;
                true
            }
            None => true,
        }
    }

    pub fn failures(&self) -> u32 {
        self.failures
    }

    pub fn is_failing(&self) -> bool {
        self.failures > 0 && !self.serving
    }

    /// A worker of this slot became ready.
    pub fn serving(&mut self) {
        self.serving = true;
    }

    /// Restores a count of failures carried by a worker that did not fail
    /// (it was replaced for another reason).
    pub fn set_failures(&mut self, failures: u32) {
        self.failures = failures;
        self.next_try = None;
    }

    /// A worker of this slot served long enough: the slot is healthy again.
    pub fn healthy(&mut self) {
        if self.failures > 0 {
            self.failures = 0;
            self.next_try = None;
        }
    }

    /// Counts a failure and schedules the next try; says what it did in the
    /// log (first failure, then at most once a minute).
    pub fn failed(
        &mut self,
        app: &str,
        index: usize,
        error: String,
        cap: Duration,
        now: Instant,
    ) -> Duration {
        self.failures += 1;
        self.serving = false;
        let jitter = rand::thread_rng().gen_range(-JITTER..=JITTER);
        let delay = backoff(self.failures, jitter, cap);
        self.next_try = Some(now + delay);
        let log_now = self
            .last_logged
            .is_none_or(|at| now.duration_since(at) >= LOG_EVERY);
        if log_now {
            tracing::error!(
                app,
                slot = index,
                attempts = self.failures,
                retry_in_ms = delay.as_millis() as u64,
                not_logged_since_last = self.unlogged,
                error = %error,
                "worker slot is failing; retrying with backoff (up to {} ms) for as long as the server \
                 runs. 'rip-server status' shows it; this repeats at most once a minute",
                cap.as_millis()
            );
            self.last_logged = Some(now);
            self.unlogged = 0;
        } else {
            self.unlogged += 1;
            tracing::debug!(app, slot = index, attempts = self.failures, error = %error, "worker slot failed again");
        }
        self.last_error = Some(error);
        delay
    }

    pub fn status(&self, index: usize, now: Instant) -> SlotStatus {
        SlotStatus {
            slot: index,
            state: if self.is_failing() { "failing" } else { "ok" },
            failures: self.failures,
            last_error: self.last_error.clone(),
            next_retry_ms: self
                .next_try
                .map(|at| at.saturating_duration_since(now).as_millis() as u64),
        }
    }
}

/// The delay before try `failures + 1`: 1 s doubling to `cap`, scaled by
/// `1 + jitter`, never over the cap.
fn backoff(failures: u32, jitter: f64, cap: Duration) -> Duration {
    let base = FIRST_BACKOFF
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(cap);
    base.mul_f64(1.0 + jitter).min(cap)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_and_never_gives_up() {
        let cap = Duration::from_secs(30);
        let secs = |n| backoff(n, 0.0, cap).as_secs();
        assert_eq!(
            [secs(1), secs(2), secs(3), secs(4), secs(5)],
            [1, 2, 4, 8, 16]
        );
        assert_eq!(secs(6), 30);
        assert_eq!(secs(1000), 30);
        assert_eq!(backoff(1, 0.2, cap), Duration::from_millis(1200));
        assert_eq!(backoff(6, 0.2, cap), cap);
        assert_eq!(
            backoff(3, 0.0, Duration::from_millis(500)),
            Duration::from_millis(500)
        );
        let mut slot = Slot::default();
        let now = Instant::now();
        for _ in 0..50 {
            let delay = slot.failed("app", 0, "exit status: 1".into(), cap, now);
            assert!(delay <= cap);
        }
        assert!(!slot.ready_to_fill(now));
        assert!(slot.ready_to_fill(now + cap));
        let status = slot.status(0, now);
        assert_eq!((status.state, status.failures), ("failing", 50));
        assert_eq!(status.last_error.as_deref(), Some("exit status: 1"));
        slot.serving();
        assert_eq!(slot.status(0, now).state, "ok");
        assert_eq!(slot.status(0, now).failures, 50, "kept for the backoff");
        slot.healthy();
        assert_eq!(slot.status(0, now).failures, 0);
    }
}
