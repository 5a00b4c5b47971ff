//! Rolling restarts: generations of workers (DESIGN §5).
//!
//! A roll starts a complete new generation beside the serving one. Its
//! workers boot and wait on standby in the pool; when every one of them is
//! ready, [`Pool::switch_generation`](crate::server::pool::Pool::switch_generation)
//! moves admission to them atomically, and the old generation retires: idle
//! workers drain at once, busy ones as soon as they finish what they hold.
//!
//! If any worker of the new generation fails to boot, the roll is abandoned:
//! its workers are killed, the old generation keeps serving, and the failure
//! is logged and kept for `/status` until the next roll. A new worker that
//! *dies* mid-roll is first started again in its slot, up to
//! [`ROLL_ATTEMPTS`] times: one worker lost to the OOM killer or a stray
//! SIGKILL does not fail a deploy, while a version that crashes at boot
//! still fails it after a few fast attempts. A trigger that
//! arrives mid-roll abandons the roll in progress and starts again from the
//! newest files, so two rolls never run at once and the last trigger wins.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::oneshot;
use tokio::time::Instant;

use super::{Settings, Slot, Spawner, Supervisor, WorkerState};
use crate::server::metrics::Metrics;
use crate::server::pool::{Generation, WorkerId};

/// Starts of one slot of a rolling generation before a worker that keeps
/// dying fails the roll.
pub const ROLL_ATTEMPTS: u32 = 3;

/// What asked for a roll.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// The app's files changed (`--reload=process`).
    FileChange,
    /// `rip-server reload` / `POST /reload` on the control socket.
    Command,
    /// `SIGHUP` to the server (after re-reading the config file).
    Signal,
}

/// How a roll ended, for whoever asked for it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollOutcome {
    pub generation: Generation,
    pub trigger: Trigger,
    pub ok: bool,
    pub duration_ms: u64,
    /// Why the new generation was not admitted.
    pub error: Option<String>,
    /// Seconds since the Unix epoch when the roll ended.
    pub finished_at: u64,
}

/// A roll in progress.
pub(super) struct Roll {
    pub generation: Generation,
    pub trigger: Trigger,
    pub workers: usize,
    /// Starts so far of each slot of the new generation.
    pub attempts: Vec<u32>,
    pub started: Instant,
    pub waiters: Vec<oneshot::Sender<RollOutcome>>,
    /// A re-read configuration this generation runs with; it becomes the
    /// current one only if the roll succeeds.
    pub config: Option<Box<(Settings, Spawner)>>,
}

/// `/status`'s view of the roll in progress.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RollStatus {
    pub generation: Generation,
    pub trigger: Trigger,
    pub elapsed_ms: u64,
    pub ready: usize,
    pub workers: usize,
}

impl Supervisor {
    /// Starts a roll to a new generation (restarting one in progress).
    pub(super) fn start_roll(
        &mut self,
        trigger: Trigger,
        reply: Option<oneshot::Sender<RollOutcome>>,
        config: Option<Box<(Settings, Spawner)>>,
    ) {
        let mut waiters: Vec<_> = reply.into_iter().collect();
        let mut config = config;
        if let Some(previous) = self.roll.take() {
            tracing::info!(
                generation = previous.generation,
                "a new change arrived mid-roll; restarting the roll from the newest files"
            );
            self.kill_generation(previous.generation);
            waiters.extend(previous.waiters);
            // A re-read config still pending carries over to the restarted roll.
            config = config.or(previous.config);
        }
        self.newest_generation += 1;
        let generation = self.newest_generation;
        let workers = config
            .as_ref()
            .map_or(self.settings.workers, |c| c.0.workers);
        tracing::info!(
            generation,
            workers,
            ?trigger,
            "rolling restart: starting a new generation"
        );
        Metrics::incr(&self.metrics.rolls_started);
        self.roll = Some(Roll {
            generation,
            trigger,
            workers,
            attempts: vec![1; workers],
            started: Instant::now(),
            waiters,
            config,
        });
        for slot in 0..workers {
            // A failed spawn abandons the roll: start no more of it.
            if self.roll.as_ref().map(|r| r.generation) != Some(generation) {
                break;
            }
            self.spawn(slot, generation, None);
        }
    }

    /// Called when a worker of the rolling generation became ready:
    /// switches admission once all of them are.
    pub(super) fn on_roll_worker_ready(&mut self) {
        let Some(roll) = &self.roll else { return };
        let ready = self.count(roll.generation, |s| {
            matches!(s, WorkerState::Serving { .. })
        });
        if ready < roll.workers {
            return;
        }
        let Some(mut roll) = self.roll.take() else {
            return;
        };
        if let Some(config) = roll.config.take() {
            self.commit_config(*config);
        }
        let old_generation = self.generation;
        let idle_old = self.pool.switch_generation(roll.generation);
        self.generation = roll.generation;
        self.slots = vec![Slot::default(); roll.workers];
        self.publish_failing();
        for id in idle_old {
            self.drain(id);
        }
        let retiring: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation < roll.generation && !matches!(w.state, WorkerState::Draining { .. })
            })
            .map(|(&id, _)| id)
            .collect();
        for id in retiring {
            self.retire(id);
        }
        let duration = roll.started.elapsed();
        tracing::info!(
            generation = roll.generation,
            previous = old_generation,
            duration_ms = duration.as_millis() as u64,
            "rolling restart complete: the new generation is serving; the old one drains"
        );
        Metrics::incr(&self.metrics.rolls_succeeded);
        self.finish_roll(roll, duration, None);
    }

    /// Called when a worker of the rolling generation died: starts its slot
    /// again if attempts remain, else abandons the roll.
    pub(super) fn on_roll_worker_died(&mut self, id: WorkerId, slot: usize, status: &str) {
        let Some(roll) = self.roll.as_mut() else {
            return;
        };
        let generation = roll.generation;
        let Some(attempts) = roll.attempts.get_mut(slot) else {
            return;
        };
        if *attempts >= ROLL_ATTEMPTS {
            let tried = *attempts;
            self.abandon_roll(format!(
                "worker {id} exited while starting ({status}), the last of {tried} attempts in \
                 slot {slot}; its output is above"
            ));
            return;
        }
        *attempts += 1;
        tracing::warn!(
            worker = id,
            generation,
            slot,
            %status,
            attempt = *attempts,
            of = ROLL_ATTEMPTS,
            "a worker of the new generation died during the roll; starting its slot again"
        );
        self.spawn(slot, generation, None);
    }

    /// Called when a worker of the rolling generation failed to boot:
    /// abandons the roll and keeps the serving generation.
    pub(super) fn abandon_roll(&mut self, error: String) {
        let Some(roll) = self.roll.take() else { return };
        self.kill_generation(roll.generation);
        tracing::error!(
            generation = roll.generation,
            error = %error,
            "rolling restart failed: the new generation did not become ready; the old generation \
             keeps serving. Fix the app; the next change or 'rip-server reload' tries again"
        );
        Metrics::incr(&self.metrics.rolls_failed);
        let duration = roll.started.elapsed();
        self.finish_roll(roll, duration, Some(error));
    }

    fn finish_roll(&mut self, roll: Roll, duration: Duration, error: Option<String>) {
        let outcome = RollOutcome {
            generation: roll.generation,
            trigger: roll.trigger,
            ok: error.is_none(),
            duration_ms: duration.as_millis() as u64,
            error,
            finished_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        };
        for waiter in roll.waiters {
            let _ = waiter.send(outcome.clone());
        }
        self.last_roll = Some(outcome);
    }

    fn kill_generation(&mut self, generation: Generation) {
        let doomed: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| w.generation == generation)
            .map(|(&id, _)| id)
            .collect();
        for id in doomed {
            self.kill(id);
        }
    }

    pub(super) fn roll_status(&self) -> Option<RollStatus> {
        self.roll.as_ref().map(|roll| RollStatus {
            generation: roll.generation,
            trigger: roll.trigger,
            elapsed_ms: roll.started.elapsed().as_millis() as u64,
            ready: self.count(roll.generation, |s| {
                matches!(s, WorkerState::Serving { .. })
            }),
            workers: roll.workers,
        })
    }

    fn count(&self, generation: Generation, matches: impl Fn(&WorkerState) -> bool) -> usize {
        self.workers
            .values()
            .filter(|w| w.generation == generation && matches(&w.state))
            .count()
    }
}
