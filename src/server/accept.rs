//! What an accept loop does when `accept` fails.
//!
//! The usual cause is `EMFILE`/`ENFILE`: the process (or the system) is out
//! of file descriptors, and only a closing connection cures it. The pending
//! connection stays in the backlog, so the listener is ready again at once:
//! retrying straight away spins, and logging each failure floods the log.
//! [`AcceptBackoff`] waits instead (doubling up to [`MAX_DELAY`]) and says
//! so at most once every [`REPORT_EVERY`], with how many accepts failed
//! meanwhile, and once more when accepting works again.

use std::io;
use std::time::Duration;

use tokio::time::Instant;

/// The longest wait between two accepts that fail.
pub const MAX_DELAY: Duration = Duration::from_secs(1);

/// At most one failure report this often, per listener.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The failure state of one accept loop.
#[derive(Debug)]
pub struct AcceptBackoff {
    /// The listener, as the log names it ("control socket").
    what: &'static str,
    initial: Duration,
    delay: Duration,
    /// Failures since the last report.
    unreported: u64,
    /// Failures since the last successful accept.
    streak: u64,
    /// Whether this streak was reported (so its end is too).
    streak_reported: bool,
    last_report: Option<Instant>,
}

impl AcceptBackoff {
    /// `initial`: the first wait after a failure.
    pub fn new(what: &'static str, initial: Duration) -> Self {
        AcceptBackoff {
            what,
            initial,
            delay: initial,
            unreported: 0,
            streak: 0,
            streak_reported: false,
            last_report: None,
        }
    }

    /// Records a failed accept; reports it if none was lately, and returns
    /// how long to wait before the next accept.
    pub fn failed(&mut self, error: &io::Error) -> Duration {
        self.unreported += 1;
        self.streak += 1;
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= REPORT_EVERY)
        {
            tracing::error!(
                listener = self.what,
                error = %error,
                failed = self.unreported,
                "{}: accept failed ({} since the last report): {}; retrying every {:?} at most, \
                 next report in {:?} at the earliest",
                self.what,
                self.unreported,
                hint(error),
                MAX_DELAY,
                REPORT_EVERY,
            );
            self.unreported = 0;
            self.streak_reported = true;
            self.last_report = Some(now);
        }
        let delay = self.delay;
        self.delay = (self.delay * 2).min(MAX_DELAY);
        delay
    }

    /// Records a successful accept: the next failure waits `initial` again.
    pub fn succeeded(&mut self) {
        if self.streak == 0 {
            return;
        }
        if self.streak_reported {
            tracing::info!(
                listener = self.what,
                failed = self.streak,
                "{}: accepting again after {} failed accepts",
                self.what,
                self.streak
            );
        }
        self.streak = 0;
        self.unreported = 0;
        self.streak_reported = false;
        self.delay = self.initial;
    }
}

/// What an operator can do about `error`.
fn hint(error: &io::Error) -> &'static str {
    match error.raw_os_error() {
        Some(nix::libc::EMFILE) => {
            "out of file descriptors: raise the open-file limit (LimitNOFILE=, ulimit -n) \
             or lower --max-connections"
        }
        Some(nix::libc::ENFILE) => {
            "the system is out of file descriptors (fs.file-max): find what holds them"
        }
        _ => "connections wait in the backlog meanwhile",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failures_back_off_and_the_delay_resets_on_success() {
        let mut backoff = AcceptBackoff::new("test", Duration::from_millis(100));
        let emfile = io::Error::from_raw_os_error(nix::libc::EMFILE);
        let delays: Vec<_> = (0..6).map(|_| backoff.failed(&emfile)).collect();
        let ms = |n| Duration::from_millis(n);
        assert_eq!(
            delays,
            [ms(100), ms(200), ms(400), ms(800), ms(1000), ms(1000)]
        );
        assert_eq!(backoff.unreported, 5, "one report for six failures");
        tokio::time::advance(REPORT_EVERY).await;
        backoff.failed(&emfile);
        assert_eq!(backoff.unreported, 0, "reported again after REPORT_EVERY");
        backoff.succeeded();
        assert_eq!(backoff.failed(&emfile), ms(100));
    }
}
