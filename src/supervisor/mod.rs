//! The supervisor: keeps the right number of ready workers in the pool
//! (DESIGN §4).
//!
//! One task owns every worker record and makes every decision, so there are
//! no locks here: worker tasks, the pool, the control socket and the signal
//! handler talk to it through channels, and after each message it
//! [`reconcile`](Supervisor::reconcile)s: every slot of the admitted
//! generation should hold one booting or serving worker.
//!
//! - Boot: spawn, then poll `/ready` (or wake on `join`) until the boot
//!   deadline; a ready worker is admitted to the pool with the probe's
//!   connection.
//! - Recycle (`r:` requests / seconds, with jitter): start the replacement
//!   first, admit it when ready, then drain the old worker, so capacity never
//!   drops.
//! - Crash: respawn with exponential backoff (1 s doubling to 30 s); after
//!   [`GIVE_UP_AFTER`] fast failures in a row the slot is given up, loudly,
//!   and shown in `/status`.
//! - Hung or unreachable (reported by the proxy): kill and replace at once.
//! - Stop: drain every worker, `SIGKILL` after the grace period, reap all,
//!   remove every socket file.

mod forker;
mod rolling;
mod slot;
mod watch;
mod worker;

pub use rolling::{RollOutcome, RollStatus, Trigger};
pub use slot::SlotStatus;
pub use worker::{all_reaped, kill_all, remove_stale, Event, Spawner};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use rand::Rng;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

use crate::cli::ReloadMode;
use crate::config::{RestartPolicy, Timeouts, WatchRules};
use crate::server::metrics::Metrics;
use crate::server::pool::{ConnFault, Generation, Pool, Report, Retire, WorkerId};
use crate::server::upstream::Upstream;
use rolling::Roll;
use slot::Slot;
use watch::{AppWatcher, Changed};
use worker::{BootError, ProcessHandle};

/// A worker that served this long resets its slot's failure count.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Recycle deadlines are spread over this fraction of the limit.
const JITTER: f64 = 0.1;
/// How often deadlines (boot, age, drain, backoff) are checked.
const TICK: Duration = Duration::from_millis(100);
/// The pool is checked against the supervisor's view every this many ticks.
const RECONCILE_EVERY: u64 = 10;

/// A request to the supervisor.
pub enum Command {
    Status(oneshot::Sender<SupervisorStatus>),
    /// A worker announced itself (`POST /worker {"op":"join"}`). The reply
    /// says whether it is one of this supervisor's (worker ids are unique
    /// across the server's apps).
    Join {
        id: WorkerId,
        /// The sender, from the control socket's peer credentials.
        pid: Option<u32>,
        reply: oneshot::Sender<bool>,
    },
    /// `POST /worker {"op":"quit"}` for worker `id`, sent by process `from`
    /// (the control socket's peer credentials; `None` if unknown).
    Quit {
        id: WorkerId,
        from: Option<u32>,
        reply: oneshot::Sender<bool>,
    },
    /// Roll to a new generation; the reply comes when the roll ends.
    Reload {
        trigger: Trigger,
        reply: Option<oneshot::Sender<RollOutcome>>,
    },
    /// Apply new settings (a re-read config file), then roll.
    Reconfigure {
        settings: Box<Settings>,
        spawner: Box<Spawner>,
        reply: Option<oneshot::Sender<RollOutcome>>,
    },
    /// Stop every worker and return.
    Stop(oneshot::Sender<()>),
}

/// Why a serving worker is to be replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecycleReason {
    Requests,
    Age,
    Reloads,
    /// It sent bytes outside any response.
    ProtocolError,
    /// A `quit` came for it while it was serving.
    Quit,
    /// The pool had lost it (see [`Supervisor::reconcile_pool`]).
    Reconcile,
    /// Its resident memory passed `--max-rss`.
    Memory,
}

#[derive(Debug)]
enum WorkerState {
    Booting {
        deadline: Instant,
        task: AbortHandle,
    },
    Serving {
        since: Instant,
        due: Option<RecycleReason>,
    },
    /// Out of admission, finishing its last request; drained when it is
    /// released or at `deadline`.
    Retiring { deadline: Instant },
    /// Told to finish and exit; killed at `kill_at`.
    Draining { kill_at: Instant, killed: bool },
}

impl WorkerState {
    fn name(&self) -> &'static str {
        match self {
            WorkerState::Booting { .. } => "booting",
            WorkerState::Serving { due: None, .. } => "serving",
            WorkerState::Serving { due: Some(_), .. } => "recycling",
            WorkerState::Retiring { .. } => "retiring",
            WorkerState::Draining { .. } => "draining",
        }
    }
}

#[derive(Debug)]
struct Worker {
    slot: usize,
    generation: Generation,
    process: ProcessHandle,
    started: Instant,
    state: WorkerState,
    /// The worker this one will replace once it is ready.
    replaces: Option<WorkerId>,
    age_deadline: Option<Instant>,
    request_limit: Option<u64>,
    joined: Arc<Notify>,
    /// Fast failures of this slot before this worker started.
    prior_failures: u32,
    /// Module reloads signalled to this worker.
    reloads: u64,
}

/// A snapshot for `/status`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SupervisorStatus {
    pub generation: Generation,
    pub desired_workers: usize,
    pub workers: Vec<WorkerStatus>,
    pub slots: Vec<SlotStatus>,
    pub restarts: u64,
    pub roll: Option<RollStatus>,
    pub last_roll: Option<RollOutcome>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct WorkerStatus {
    pub id: WorkerId,
    pub pid: u32,
    pub generation: Generation,
    pub slot: usize,
    pub state: &'static str,
    pub requests: u64,
    pub reloads: u64,
    pub age_s: f64,
    /// Resident memory, read from /proc when the status is taken.
    pub rss_bytes: Option<u64>,
}

/// What the supervisor needs from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    pub workers: usize,
    pub restart: RestartPolicy,
    pub timeouts: Timeouts,
    pub reload: ReloadMode,
    /// Which app files can start a reload.
    pub watch: WatchRules,
    /// Recycle a worker whose resident memory passes this many bytes.
    pub max_rss: Option<u64>,
}

pub struct Supervisor {
    settings: Settings,
    spawner: Spawner,
    pool: Arc<Pool<Upstream>>,
    metrics: Arc<Metrics>,
    workers: BTreeMap<WorkerId, Worker>,
    slots: Vec<Slot>,
    /// The admitted generation.
    generation: Generation,
    /// The newest generation started (admitted or rolling).
    newest_generation: Generation,
    roll: Option<Roll>,
    last_roll: Option<RollOutcome>,
    /// Worker ids, shared by every app's supervisor: unique for the life
    /// of the server (they name worker sockets).
    ids: Arc<AtomicU64>,
    restarts: u64,
    events_tx: mpsc::Sender<Event>,
    events: mpsc::Receiver<Event>,
    watcher: Option<AppWatcher>,
    changes_tx: mpsc::Sender<Changed>,
    changes: mpsc::Receiver<Changed>,
    /// Fired once, when every slot first has a serving worker.
    on_ready: Option<oneshot::Sender<()>>,
    ticks: u64,
}

/// A cheap handle for talking to the supervisor task.
#[derive(Clone)]
pub struct SupervisorHandle {
    commands: mpsc::Sender<Command>,
}

impl SupervisorHandle {
    /// Whether both handles talk to the same supervisor.
    pub fn same(&self, other: &SupervisorHandle) -> bool {
        self.commands.same_channel(&other.commands)
    }

    /// A handle to no supervisor (its commands go nowhere), for tests.
    #[cfg(test)]
    pub fn detached() -> Self {
        let (commands, _) = mpsc::channel(1);
        SupervisorHandle { commands }
    }

    pub async fn status(&self) -> Option<SupervisorStatus> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Status(tx)).await.ok()?;
        rx.await.ok()
    }

    pub async fn send(&self, command: Command) -> bool {
        self.commands.send(command).await.is_ok()
    }

    /// Stops every worker; resolves when all are reaped.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

impl Supervisor {
    /// Starts the supervisor task. `on_ready` fires once all workers first serve.
    pub fn start(
        settings: Settings,
        spawner: Spawner,
        pool: Arc<Pool<Upstream>>,
        metrics: Arc<Metrics>,
        ids: Arc<AtomicU64>,
        on_ready: oneshot::Sender<()>,
    ) -> (SupervisorHandle, tokio::task::JoinHandle<()>) {
        let (commands_tx, commands) = mpsc::channel(64);
        let (events_tx, events) = mpsc::channel(256);
        let (changes_tx, changes) = mpsc::channel(1);
        let mut supervisor = Supervisor {
            slots: vec![Slot::default(); settings.workers],
            settings,
            spawner,
            pool,
            metrics,
            workers: BTreeMap::new(),
            generation: 0,
            newest_generation: 0,
            roll: None,
            last_roll: None,
            ids,
            restarts: 0,
            events_tx,
            events,
            watcher: None,
            changes_tx,
            changes,
            on_ready: Some(on_ready),
            ticks: 0,
        };
        supervisor.restart_watcher();
        // Spawn the first workers now, so the pool counts them as booting
        // before the listener takes its first request.
        supervisor.reconcile();
        let task = tokio::spawn(supervisor.run(commands));
        (
            SupervisorHandle {
                commands: commands_tx,
            },
            task,
        )
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let pool = self.pool.clone();
        loop {
            tokio::select! {
                Some(event) = self.events.recv() => self.on_event(event),
                Some(Changed) = self.changes.recv() => self.on_files_changed(),
                () = pool.reported() => {
                    for report in pool.take_reports() {
                        self.on_report(report);
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Stop(done)) => {
                        self.stop_all().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(command) => self.on_command(command),
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                _ = tick.tick() => self.on_tick(),
            }
            self.reconcile();
        }
    }

    /// Fills every open slot and starts replacements for workers due to recycle.
    fn reconcile(&mut self) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            if !self.slots[slot].ready_to_fill(now) {
                continue;
            }
            let mut occupant = None;
            let mut booting = false;
            for (&id, w) in &self.workers {
                if w.slot != slot || w.generation != self.generation {
                    continue;
                }
                match w.state {
                    WorkerState::Booting { .. } => booting = true,
                    WorkerState::Serving { due, .. } => occupant = Some((id, due)),
                    WorkerState::Retiring { .. } | WorkerState::Draining { .. } => {}
                }
            }
            match (occupant, booting) {
                (None, false) => self.spawn(slot, self.generation, None),
                (Some((id, Some(_))), false) => self.spawn(slot, self.generation, Some(id)),
                _ => {}
            }
        }
        self.publish_booting();
        self.check_ready();
    }

    fn spawn(&mut self, slot: usize, generation: Generation, replaces: Option<WorkerId>) {
        let id = self.ids.fetch_add(1, Ordering::Relaxed);
        let (spawner, policy) = self.config_for(generation);
        let process = match spawner.spawn(id, generation, self.events_tx.clone()) {
            Ok(process) => process,
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker; check the app entry and runtime (node) are installed");
                if generation == self.generation {
                    self.record_failure(slot, e.to_string());
                } else {
                    self.abandon_roll(e.to_string());
                }
                return;
            }
        };
        Metrics::incr(&self.metrics.worker_starts);
        let timeouts = self.settings.timeouts;
        let now = Instant::now();
        let deadline = now + timeouts.boot;
        let joined = Arc::new(Notify::new());
        let events = self.events_tx.clone();
        let boot = worker::boot(
            id,
            process.socket.clone(),
            deadline,
            joined.clone(),
            timeouts.connect,
            timeouts.boot,
        );
        let task = tokio::spawn(async move {
            let result = boot.await;
            let _ = events.send(Event::Booted { id, result }).await;
        });
        tracing::debug!(worker = id, pid = process.pid, slot, "worker started");
        self.workers.insert(
            id,
            Worker {
                slot,
                generation,
                process,
                started: now,
                state: WorkerState::Booting {
                    deadline,
                    task: task.abort_handle(),
                },
                replaces,
                age_deadline: policy.max_age.map(|age| now + jittered(age)),
                request_limit: policy.max_requests.map(|n| jittered_count(n.get())),
                joined,
                prior_failures: self.slots.get(slot).map_or(0, |s| s.failures()),
                reloads: 0,
            },
        );
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Booted {
                id,
                result: Ok(upstream),
            } => self.on_ready(id, *upstream),
            Event::Booted { id, result: Err(e) } => self.on_boot_failed(id, e),
            Event::Exited { id, status } => self.on_exit(id, status),
        }
    }

    fn on_ready(&mut self, id: WorkerId, upstream: Upstream) {
        let Some(worker) = self.workers.get_mut(&id) else {
            return;
        };
        if !matches!(worker.state, WorkerState::Booting { .. }) {
            return;
        }
        if self
            .pool
            .admit(id, worker.generation, worker.request_limit, upstream)
            .is_err()
        {
            // Its generation is no longer admitted: it is not needed.
            self.drain(id);
            return;
        }
        worker.state = WorkerState::Serving {
            since: Instant::now(),
            due: None,
        };
        let (generation, slot) = (worker.generation, worker.slot);
        tracing::info!(
            worker = id,
            pid = worker.process.pid,
            boot_ms = worker.started.elapsed().as_millis() as u64,
            "worker ready"
        );
        if let Some(old) = worker.replaces.take() {
            tracing::info!(
                worker = old,
                replacement = id,
                "recycled worker replaced; draining it"
            );
            Metrics::incr(&self.metrics.worker_recycles);
            self.retire(old);
        }
        if generation == self.generation {
            if let Some(slot) = self.slots.get_mut(slot) {
                slot.serving();
            }
            self.publish_failing();
        }
        if self
            .roll
            .as_ref()
            .is_some_and(|r| r.generation == generation)
        {
            self.on_roll_worker_ready();
        }
    }

    fn on_boot_failed(&mut self, id: WorkerId, error: BootError) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        tracing::error!(
            worker = id,
            pid = worker.process.pid,
            error = %error,
            "worker failed to start; its output is above. It will be retried with backoff"
        );
        Metrics::incr(&self.metrics.worker_crashes);
        let (slot, generation) = (worker.slot, worker.generation);
        self.kill(id);
        if generation == self.generation {
            self.record_failure(slot, format!("worker {id} {error}"));
        } else {
            self.abandon_roll(format!("worker {id} {error}"));
        }
    }

    fn on_exit(&mut self, id: WorkerId, status: std::io::Result<std::process::ExitStatus>) {
        let Some(worker) = self.workers.remove(&id) else {
            return;
        };
        worker::remove_stale(&worker.process.socket);
        self.pool.remove(id);
        let status = match status {
            Ok(status) => status.to_string(),
            Err(e) => format!("unknown status ({e})"),
        };
        if worker.generation != self.generation
            && !matches!(
                worker.state,
                WorkerState::Draining { .. } | WorkerState::Retiring { .. }
            )
        {
            if let WorkerState::Booting { task, .. } = &worker.state {
                task.abort();
            }
            if self
                .roll
                .as_ref()
                .is_some_and(|r| r.generation == worker.generation)
            {
                self.on_roll_worker_died(id, worker.slot, &status);
            }
            return;
        }
        match worker.state {
            WorkerState::Retiring { .. } => {
                tracing::warn!(worker = id, %status, "retiring worker exited before finishing its last request");
            }
            WorkerState::Draining { .. } => {
                tracing::debug!(worker = id, %status, "worker exited after draining");
            }
            WorkerState::Booting { task, .. } => {
                task.abort();
                tracing::error!(
                    worker = id,
                    pid = worker.process.pid,
                    %status,
                    "worker exited while starting; its output is above. It will be retried with backoff"
                );
                Metrics::incr(&self.metrics.worker_crashes);
                self.record_failure(
                    worker.slot,
                    format!("worker {id} exited while starting ({status})"),
                );
            }
            WorkerState::Serving { since, .. } => {
                tracing::error!(
                    worker = id,
                    pid = worker.process.pid,
                    %status,
                    uptime_s = since.elapsed().as_secs(),
                    "worker exited unexpectedly; a request it held got 502. Respawning"
                );
                Metrics::incr(&self.metrics.worker_crashes);
                self.restarts += 1;
                let failures = if since.elapsed() >= STABLE_AFTER {
                    0
                } else {
                    worker.prior_failures
                };
                if let Some(slot) = self.slots.get_mut(worker.slot) {
                    slot.set_failures(failures);
                }
                self.record_failure(
                    worker.slot,
                    format!("worker {id} exited unexpectedly ({status})"),
                );
            }
        }
    }

    /// Counts a failed start or crash of `slot` and schedules its retry.
    fn record_failure(&mut self, slot: usize, error: String) {
        let app = self.spawner.app_name.clone();
        let cap = self.settings.timeouts.max_backoff;
        if let Some(state) = self.slots.get_mut(slot) {
            state.failed(&app, slot, error, cap, Instant::now());
        }
        self.publish_failing();
    }

    /// The failing slots gauge in `/metrics`.
    fn publish_failing(&self) {
        let failing = self.slots.iter().filter(|s| s.is_failing()).count();
        self.metrics
            .slots_failing
            .store(failing as u64, std::sync::atomic::Ordering::Relaxed);
    }

    fn on_report(&mut self, report: Report) {
        match report {
            Report::Unreachable(id) => {
                if let Some(worker) = self.workers.get(&id) {
                    // Replaced at once: the slot stays open (this is not a crash).
                    if worker.generation == self.generation {
                        if let Some(slot) = self.slots.get_mut(worker.slot) {
                            slot.set_failures(worker.prior_failures);
                        }
                    }
                    self.restarts += 1;
                    self.kill(id);
                }
            }
            Report::Hung(id) => {
                // Drained (SIGTERM, SIGKILL after the grace), not killed on the
                // spot; its slot counts a failure, so a request that hangs
                // workers again and again is met with a growing backoff rather
                // than a replacement storm.
                if let Some(worker) = self.workers.get(&id) {
                    let (slot, current) = (worker.slot, worker.generation == self.generation);
                    self.restarts += 1;
                    self.drain(id);
                    if current {
                        self.record_failure(
                            slot,
                            format!("worker {id} hung: still busy with a request after --hung-timeout-ms"),
                        );
                    }
                }
            }
            Report::RequestLimit(id) => self.mark_due(id, RecycleReason::Requests),
            Report::Conn(_, ConnFault::ClosedIdle) => {
                Metrics::incr(&self.metrics.idle_connections_closed);
            }
            Report::Conn(id, ConnFault::StrayBytes) => {
                // Its connection is already closed; a worker that breaks the
                // framing once may do it again, so it is replaced (gracefully:
                // the replacement boots first).
                Metrics::incr(&self.metrics.stray_bytes);
                self.mark_due(id, RecycleReason::ProtocolError);
            }
            Report::Released(id) => {
                if matches!(
                    self.workers.get(&id).map(|w| &w.state),
                    Some(WorkerState::Retiring { .. })
                ) {
                    self.drain(id);
                }
            }
        }
    }

    fn mark_due(&mut self, id: WorkerId, reason: RecycleReason) {
        if let Some(Worker {
            state: WorkerState::Serving { due, .. },
            ..
        }) = self.workers.get_mut(&id)
        {
            if due.is_none() {
                tracing::info!(
                    worker = id,
                    ?reason,
                    "worker due for recycling; starting its replacement"
                );
                *due = Some(reason);
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        match command {
            Command::Status(reply) => {
                let _ = reply.send(self.status());
            }
            Command::Join { id, pid, reply } => {
                let mine = match self.workers.get(&id) {
                    Some(worker) if pid.is_none_or(|pid| pid == worker.process.pid) => {
                        worker.joined.notify_one();
                        true
                    }
                    _ => false,
                };
                let _ = reply.send(mine);
            }
            Command::Quit { id, from, reply } => {
                let mine = self.workers.contains_key(&id);
                if mine {
                    self.on_quit(id, from);
                }
                let _ = reply.send(mine);
            }
            Command::Reload { trigger, reply } => self.start_roll(trigger, reply, None),
            Command::Reconfigure {
                settings,
                spawner,
                reply,
            } => {
                // Applied to the new generation only; committed if it serves.
                self.start_roll(
                    Trigger::Signal,
                    reply,
                    Some(Box::new((*settings, *spawner))),
                );
            }
            Command::Stop(_) => {}
        }
    }

    /// A `quit` for worker `id`. Only the worker itself, while it drains,
    /// may take itself out of the pool: that is the protocol's quit. Anything
    /// else (the worker quitting while it serves, or another process sending
    /// it) would leave the pool a worker short while the supervisor counts it
    /// serving, so the worker is replaced instead, replacement first.
    fn on_quit(&mut self, id: WorkerId, from: Option<u32>) {
        let Some(worker) = self.workers.get(&id) else {
            return;
        };
        let own = from == Some(worker.process.pid);
        match worker.state {
            WorkerState::Draining { .. } | WorkerState::Retiring { .. } if own => {
                tracing::debug!(worker = id, "worker announced it is quitting");
                self.pool.remove(id);
            }
            WorkerState::Draining { .. } | WorkerState::Retiring { .. } => {}
            WorkerState::Booting { .. } | WorkerState::Serving { .. } => {
                tracing::warn!(
                    worker = id,
                    sender_pid = ?from,
                    worker_pid = worker.process.pid,
                    "a quit for a worker that is not draining (from {}); replacing the worker, \
                     replacement first",
                    if own { "the worker itself" } else { "another process" }
                );
                self.mark_due(id, RecycleReason::Quit);
            }
        }
    }

    /// Checks that the pool holds every worker the supervisor counts as
    /// serving, and nothing it does not know: the two views must never
    /// disagree, or capacity is lost without anyone saying so.
    fn reconcile_pool(&mut self) {
        let in_pool: Vec<WorkerId> = self.pool.served().into_keys().collect();
        let serving: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == self.generation && matches!(w.state, WorkerState::Serving { .. })
            })
            .map(|(&id, _)| id)
            .collect();
        let known: Vec<WorkerId> = self.workers.keys().copied().collect();
        let (missing, unknown) = disagreements(&serving, &known, &in_pool);
        for id in missing {
            tracing::error!(
                worker = id,
                "worker counted as serving is not in the pool; replacing it to restore capacity"
            );
            self.mark_due(id, RecycleReason::Reconcile);
        }
        for id in unknown {
            tracing::error!(
                worker = id,
                "the pool held a worker the supervisor does not know; removed it"
            );
            self.pool.remove(id);
        }
    }

    /// Recycles serving workers whose resident memory passed `--max-rss`
    /// (a leaking app): replacement first, so capacity never drops. Read
    /// from /proc once a second, off the request path.
    fn check_memory(&mut self) {
        let Some(limit) = self.settings.max_rss else {
            return;
        };
        let over: Vec<(WorkerId, u64)> = self
            .workers
            .iter()
            .filter(|(_, w)| {
                w.generation == self.generation
                    && matches!(w.state, WorkerState::Serving { due: None, .. })
            })
            .filter_map(|(&id, w)| {
                worker::rss_bytes(w.process.pid)
                    .filter(|&rss| rss > limit)
                    .map(|rss| (id, rss))
            })
            .collect();
        for (id, rss) in over {
            tracing::info!(
                worker = id,
                rss_mib = rss / (1024 * 1024),
                limit_mib = limit / (1024 * 1024),
                "worker's resident memory is over --max-rss; recycling it (replacement first)"
            );
            Metrics::incr(&self.metrics.memory_recycles);
            self.mark_due(id, RecycleReason::Memory);
        }
    }

    /// The app's files changed: roll (process mode) or signal an in-worker
    /// reload (module mode).
    fn on_files_changed(&mut self) {
        match self.settings.reload {
            ReloadMode::None => {}
            ReloadMode::Process => {
                tracing::info!(app = %self.spawner.app_dir.display(), "app files changed");
                self.start_roll(Trigger::FileChange, None, None);
            }
            ReloadMode::Module => self.reload_modules(),
        }
    }

    /// Sends SIGHUP to every serving worker of the admitted generation; a
    /// worker past its reload allowance is recycled.
    fn reload_modules(&mut self) {
        let max_reloads = self.settings.restart.max_reloads.map(|n| n.get());
        let mut due = Vec::new();
        for (&id, worker) in self.workers.iter_mut() {
            if worker.generation != self.generation
                || !matches!(worker.state, WorkerState::Serving { .. })
            {
                continue;
            }
            worker.process.signal(Signal::SIGHUP);
            worker.reloads += 1;
            Metrics::incr(&self.metrics.module_reloads);
            if max_reloads.is_some_and(|max| worker.reloads >= max) {
                due.push(id);
            }
        }
        tracing::info!(app = %self.spawner.app_dir.display(), "app files changed; workers reload their module");
        for id in due {
            self.mark_due(id, RecycleReason::Reloads);
        }
    }

    /// The spawner and restart policy for workers of `generation`: a roll
    /// with a re-read config uses the new ones; everything else the current.
    fn config_for(&self, generation: Generation) -> (&Spawner, RestartPolicy) {
        match &self.roll {
            Some(Roll {
                generation: g,
                config: Some(config),
                ..
            }) if *g == generation => (&config.1, config.0.restart),
            _ => (&self.spawner, self.settings.restart),
        }
    }

    /// Makes a successful roll's new configuration the current one.
    fn commit_config(&mut self, config: (Settings, Spawner)) {
        let (settings, spawner) = config;
        let rewatch = spawner.app_dir != self.spawner.app_dir
            || spawner.entry != self.spawner.entry
            || settings.reload != self.settings.reload
            || settings.watch != self.settings.watch;
        self.settings = settings;
        self.spawner = spawner;
        if rewatch {
            self.restart_watcher();
        }
    }

    /// (Re)starts the file watcher for the current app and reload mode.
    fn restart_watcher(&mut self) {
        self.watcher = None;
        if self.settings.reload == ReloadMode::None {
            return;
        }
        let target = watch::Target {
            dir: self.spawner.app_dir.clone(),
            entry: self.spawner.entry.clone(),
            rules: self.settings.watch.clone(),
        };
        match watch::watch(target, self.changes_tx.clone()) {
            Ok(watcher) => self.watcher = Some(watcher),
            Err(e) => tracing::error!(
                app = %self.spawner.app_dir.display(),
                error = %e,
                "cannot watch the app for changes; reload with 'rip-server reload' instead"
            ),
        }
    }

    /// Takes a worker out of admission; drains it now if it holds nothing,
    /// else when its last request ends.
    fn retire(&mut self, id: WorkerId) {
        match self.pool.retire(id) {
            Retire::Now => self.drain(id),
            Retire::AfterRelease => {
                let deadline = Instant::now() + self.settings.timeouts.grace;
                if let Some(worker) = self.workers.get_mut(&id) {
                    worker.state = WorkerState::Retiring { deadline };
                }
            }
        }
    }

    fn on_tick(&mut self) {
        self.ticks = self.ticks.wrapping_add(1);
        if self.ticks % RECONCILE_EVERY == 0 {
            self.reconcile_pool();
            self.check_memory();
        }
        let now = Instant::now();
        let mut overdue_boots = Vec::new();
        let mut aged = Vec::new();
        let mut to_kill = Vec::new();
        let mut overdue_retirements = Vec::new();
        for (&id, worker) in &self.workers {
            match worker.state {
                WorkerState::Booting { deadline, .. } if now >= deadline => overdue_boots.push(id),
                WorkerState::Retiring { deadline } if now >= deadline => {
                    overdue_retirements.push(id)
                }
                WorkerState::Serving { due: None, .. }
                    if worker.age_deadline.is_some_and(|d| now >= d) =>
                {
                    aged.push(id)
                }
                WorkerState::Draining {
                    kill_at,
                    killed: false,
                } if now >= kill_at => to_kill.push(id),
                _ => {}
            }
        }
        for id in overdue_boots {
            let timeout = self.settings.timeouts.boot;
            self.on_boot_failed(
                id,
                BootError::Deadline {
                    timeout,
                    last_error: None,
                },
            );
        }
        // A slot whose worker has served a while is healthy again.
        for worker in self.workers.values() {
            if let WorkerState::Serving { since, .. } = worker.state {
                if worker.generation == self.generation && now.duration_since(since) >= STABLE_AFTER
                {
                    if let Some(slot) = self.slots.get_mut(worker.slot) {
                        slot.healthy();
                    }
                }
            }
        }
        for id in overdue_retirements {
            self.drain(id);
        }
        for id in aged {
            self.mark_due(id, RecycleReason::Age);
        }
        for id in to_kill {
            tracing::warn!(
                worker = id,
                "worker did not exit within the grace period; killing it"
            );
            self.kill(id);
        }
    }

    /// Takes a worker out of admission and asks it to finish and exit.
    fn drain(&mut self, id: WorkerId) {
        self.pool.remove(id);
        let grace = self.settings.timeouts.grace;
        if let Some(worker) = self.workers.get_mut(&id) {
            if let WorkerState::Booting { task, .. } = &worker.state {
                task.abort();
            }
            if !matches!(worker.state, WorkerState::Draining { .. }) {
                worker.state = WorkerState::Draining {
                    kill_at: Instant::now() + grace,
                    killed: false,
                };
                worker.process.signal(Signal::SIGTERM);
            }
        }
    }

    /// Kills a worker now (hung, failed boot, or past its grace period).
    fn kill(&mut self, id: WorkerId) {
        self.pool.remove(id);
        if let Some(worker) = self.workers.get_mut(&id) {
            if let WorkerState::Booting { task, .. } = &worker.state {
                task.abort();
            }
            worker.state = WorkerState::Draining {
                kill_at: Instant::now(),
                killed: true,
            };
            worker.process.signal(Signal::SIGKILL);
        }
    }

    fn publish_booting(&self) {
        let booting = self
            .workers
            .values()
            .filter(|w| {
                w.generation == self.generation && matches!(w.state, WorkerState::Booting { .. })
            })
            .count();
        self.pool.set_booting(booting);
    }

    fn check_ready(&mut self) {
        if self.on_ready.is_none() {
            return;
        }
        let serving = self
            .workers
            .values()
            .filter(|w| {
                w.generation == self.generation && matches!(w.state, WorkerState::Serving { .. })
            })
            .count();
        if serving >= self.slots.len() {
            if let Some(ready) = self.on_ready.take() {
                let _ = ready.send(());
            }
        }
    }

    fn status(&self) -> SupervisorStatus {
        let served = self.pool.served();
        SupervisorStatus {
            generation: self.generation,
            desired_workers: self.slots.len(),
            workers: self
                .workers
                .iter()
                .map(|(&id, w)| WorkerStatus {
                    id,
                    pid: w.process.pid,
                    generation: w.generation,
                    slot: w.slot,
                    state: w.state.name(),
                    requests: served.get(&id).copied().unwrap_or(0),
                    reloads: w.reloads,
                    age_s: (w.started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                    rss_bytes: worker::rss_bytes(w.process.pid),
                })
                .collect(),
            slots: self
                .slots
                .iter()
                .enumerate()
                .map(|(index, slot)| slot.status(index, Instant::now()))
                .collect(),
            restarts: self.restarts,
            roll: self.roll_status(),
            last_roll: self.last_roll.clone(),
        }
    }

    /// Drains every worker, kills stragglers after the grace period, and
    /// waits until every child is reaped and its socket removed.
    async fn stop_all(&mut self) {
        self.watcher = None;
        if self.roll.is_some() {
            self.abandon_roll("the server is stopping".to_string());
        }
        self.pool.close();
        let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
        for id in ids {
            self.drain(id);
        }
        let grace_end = Instant::now() + self.settings.timeouts.grace;
        let hard_end = grace_end + Duration::from_secs(5);
        while !self.workers.is_empty() {
            let deadline = if Instant::now() < grace_end {
                grace_end
            } else {
                hard_end
            };
            tokio::select! {
                Some(event) = self.events.recv() => {
                    if let Event::Exited { id, status } = event {
                        self.on_exit(id, status);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    if deadline == hard_end {
                        tracing::error!(left = self.workers.len(), "workers survived SIGKILL; giving up waiting");
                        break;
                    }
                    let ids: Vec<WorkerId> = self.workers.keys().copied().collect();
                    for id in ids {
                        tracing::warn!(worker = id, "worker still running after the grace period; killing it");
                        self.kill(id);
                    }
                }
            }
        }
    }
}

/// Serving workers the pool lacks, and pool members no worker record has.
fn disagreements(
    serving: &[WorkerId],
    known: &[WorkerId],
    in_pool: &[WorkerId],
) -> (Vec<WorkerId>, Vec<WorkerId>) {
    let missing = serving
        .iter()
        .filter(|id| !in_pool.contains(id))
        .copied()
        .collect();
    let unknown = in_pool
        .iter()
        .filter(|id| !known.contains(id))
        .copied()
        .collect();
    (missing, unknown)
}

/// Spreads a duration limit over [limit·(1−JITTER), limit].
fn jittered(limit: Duration) -> Duration {
    limit.mul_f64(1.0 - rand::thread_rng().gen_range(0.0..JITTER))
}

fn jittered_count(limit: u64) -> u64 {
    let spread = (limit as f64 * JITTER) as u64;
    if spread == 0 {
        return limit;
    }
    limit - rand::thread_rng().gen_range(0..=spread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_and_the_supervisor_must_agree() {
        // Worker 2 serves but the pool lost it; the pool holds 9, unknown.
        let (missing, unknown) = disagreements(&[1, 2], &[1, 2, 3], &[1, 3, 9]);
        assert_eq!(missing, vec![2]);
        assert_eq!(unknown, vec![9]);
        let (missing, unknown) = disagreements(&[1, 2], &[1, 2], &[1, 2]);
        assert!(missing.is_empty() && unknown.is_empty());
    }
}
