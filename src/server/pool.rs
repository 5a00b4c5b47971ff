//! Admission to one app's workers: a LIFO stack of idle workers and a bounded
//! FIFO queue of waiting requests (DESIGN §3).
//!
//! The pool owns each idle worker's connection (`C`); a request that checks a
//! worker out holds it as a [`Lease`] until its response is complete. A
//! released worker is handed straight to the oldest waiter, or pushed on top
//! of the idle stack so the most recently used (warmest) worker goes next.
//!
//! Invariants, all kept under one short `std::sync::Mutex` (never held
//! across an `.await`):
//! - a worker is idle, leased to exactly one request, or gone: never two
//!   requests on one worker;
//! - a waiter is in the queue, or has been handed exactly one worker, or has
//!   been refused one (queue timeout, shutdown), each decided under the lock;
//!   a waiter whose client left passes a worker it was just handed on to the
//!   next waiter: no worker is lost;
//! - waiters are served in arrival order;
//! - only workers of the admitted generation take new requests; workers of a
//!   newer generation wait on standby until [`Pool::switch_generation`].
//!
//! Queue timeouts are kept by one clock per pool ([`Pool::expire_waiters`],
//! a task that runs while anyone waits), not by a timer per waiter: under
//! load nearly every request queues, and a timer each would be armed and
//! cancelled for every one of them.
//!
//! The supervisor learns what the pool noticed (a hung worker, an
//! unreachable one, one that reached its request limit) through
//! [`Pool::take_reports`], woken by a coalescing [`Notify`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

use super::wait_queue::{Key, WaitQueue};

/// A worker's identity, unique for the life of the server.
pub type WorkerId = u64;
/// A rolling-restart generation; admission moves only forward.
pub type Generation = u64;

/// Why a request could not get a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The wait queue is at `--max-queue`.
    QueueFull,
    /// Waited `--queue-timeout-ms` without a worker.
    QueueTimeout,
    /// No live worker and none booting.
    NoWorkers,
    /// The server is stopping.
    ShuttingDown,
}

/// Something the pool noticed that the supervisor must act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Report {
    /// No response headers within the read timeout: kill and replace.
    Hung(WorkerId),
    /// Its socket could not be dialled: kill and replace.
    Unreachable(WorkerId),
    /// Served its request allowance: recycle gracefully.
    RequestLimit(WorkerId),
    /// A retiring worker finished its last request; it holds nothing now.
    Released(WorkerId),
    /// Its connection noticed something on the wire (see [`ConnFault`]).
    Conn(WorkerId, ConnFault),
}

/// What a worker's connection noticed between exchanges. The connection has
/// already been dropped (the next request dials a fresh one); the report
/// tells the supervisor, which counts it and decides about the worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnFault {
    /// The worker closed a kept-alive connection while it was idle.
    ClosedIdle,
    /// The worker sent bytes outside any response (after the end of its
    /// answer, or while idle): a protocol violation. Read as the next
    /// exchange's answer, they would reach the wrong client.
    StrayBytes,
}

/// Where the pool stands, for `/status` and `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub generation: Generation,
    pub idle: usize,
    pub busy: usize,
    pub standby: usize,
    pub queued: usize,
    pub booting: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MemberState {
    Idle,
    Busy,
    /// Ready, of a generation not yet admitted.
    Standby,
    /// Serving its last request: on release it leaves the pool and is
    /// reported as [`Report::Released`].
    Retiring,
}

#[derive(Debug)]
struct Member {
    generation: Generation,
    state: MemberState,
    served: u64,
    request_limit: Option<u64>,
}

/// A worker's connection, as the pool holds it.
///
/// When a worker is freed and a request is waiting for one, the request's
/// task runs only when the scheduler gets to it; until then the worker would
/// sit idle. So a waiter leaves its request head with the pool, and the
/// hand-off starts sending it at once ([`Conn::prestart`]): the worker is
/// already working when the waiting task resumes. Under load, with every
/// request queued, this keeps the workers busy instead of waiting on the
/// scheduler.
pub trait Conn: Send + 'static {
    /// What a waiting request leaves with the pool to be started on hand-off.
    type Head: Clone + Send;
    /// Starts sending `head` without blocking; returns how many bytes went
    /// out (0: none, and the request's own task sends it all).
    fn prestart(&mut self, head: &Self::Head) -> usize;
    /// A prestarted request will not follow: make the connection safe for
    /// the next request (a fallback; see [`Conn::abandoned`]).
    fn abandon(&mut self);
    /// The waiter of a prestarted request left before it ran (its client
    /// went away). The request may be running on the worker: finish it, then
    /// let `lease` go, so the worker rejoins the pool only when it is free.
    fn abandoned(lease: Lease<Self>)
    where
        Self: Sized;
    /// What the connection noticed since it was last asked, if anything.
    fn take_fault(&mut self) -> Option<ConnFault>;
}

/// Plain values stand in for connections in tests and benches: nothing to start.
macro_rules! inert_conn {
    ($($t:ty),*) => {$(
        impl Conn for $t {
            type Head = ();
            fn prestart(&mut self, _: &()) -> usize {
                0
            }
            fn abandon(&mut self) {}
            fn abandoned(lease: Lease<Self>) {
                drop(lease);
            }
            fn take_fault(&mut self) -> Option<ConnFault> {
                None
            }
        }
    )*};
}
inert_conn!((), u32, u64);

/// A worker's connection on its way to a request.
struct Checkout<C> {
    id: WorkerId,
    conn: C,
    /// Bytes of the waiter's request head already sent by the hand-off.
    prestarted: usize,
}

impl<C: Conn> Checkout<C> {
    fn new(id: WorkerId, conn: C) -> Self {
        Checkout {
            id,
            conn,
            prestarted: 0,
        }
    }

    /// Its prestarted request will not follow.
    fn abandon(&mut self) {
        if self.prestarted > 0 {
            self.conn.abandon();
            self.prestarted = 0;
        }
    }
}

/// What a waiter is sent: a worker, or why it will get none.
enum Handed<C> {
    Worker(Checkout<C>),
    Refused(Unavailable),
}

struct Waiter<C: Conn> {
    tx: oneshot::Sender<Handed<C>>,
    head: Option<C::Head>,
    /// When it stops waiting: `--queue-timeout-ms` after it queued.
    deadline: Instant,
}

/// How the waiters' deadlines lie along the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeadlineOrder {
    /// Each deadline is at or after the one before: the expired are at the front.
    Ascending,
    /// A shortened queue timeout put a later waiter's deadline first.
    Mixed,
}

/// The queue clock: whether a task is keeping the waiters' deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QueueClock {
    /// Nobody waits; the next waiter starts the clock.
    Stopped,
    /// Running, asleep until this deadline (the earliest it knows of).
    WakesAt(Instant),
}

struct State<C: Conn> {
    admitting: Generation,
    /// LIFO: the top (end) is the most recently released worker.
    idle: Vec<Checkout<C>>,
    standby: Vec<Checkout<C>>,
    /// FIFO; a waiter whose client leaves is removed in O(1) by its key.
    waiters: WaitQueue<Waiter<C>>,
    deadline_order: DeadlineOrder,
    clock: QueueClock,
    members: HashMap<WorkerId, Member>,
    reports: Vec<Report>,
    booting: usize,
    next_ticket: u64,
    closed: bool,
}

/// One app's admission state. Cheap to share: wrap it in an `Arc`.
pub struct Pool<C: Conn> {
    state: Mutex<State<C>>,
    /// Tunable while running (SIGHUP re-reads the config).
    max_queue: AtomicUsize,
    queue_timeout_ms: AtomicU64,
    reported: Notify,
    /// Wakes the queue clock early: a waiter with an earlier deadline than
    /// it sleeps for (the queue timeout was shortened).
    clock_changed: Notify,
}

impl<C: Conn> Pool<C> {
    pub fn new(max_queue: usize, queue_timeout: Duration) -> Arc<Self> {
        Arc::new(Pool {
            state: Mutex::new(State {
                admitting: 0,
                idle: Vec::new(),
                standby: Vec::new(),
                waiters: WaitQueue::default(),
                deadline_order: DeadlineOrder::Ascending,
                clock: QueueClock::Stopped,
                members: HashMap::new(),
                reports: Vec::new(),
                booting: 0,
                next_ticket: 0,
                closed: false,
            }),
            max_queue: AtomicUsize::new(max_queue),
            queue_timeout_ms: AtomicU64::new(queue_timeout.as_millis() as u64),
            reported: Notify::new(),
            clock_changed: Notify::new(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State<C>> {
        // A panic while holding this lock would be a bug in this module; the
        // state is still consistent between statements, so keep serving.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes a worker: the warmest idle one, or the next to be released.
    pub async fn checkout(self: &Arc<Self>) -> Result<Lease<C>, Unavailable> {
        self.checkout_starting(None).await
    }

    /// Takes a worker like [`Pool::checkout`]; if it has to wait, the worker
    /// handed over starts on `head` at once (see [`Conn`]).
    pub async fn checkout_starting(
        self: &Arc<Self>,
        head: Option<&C::Head>,
    ) -> Result<Lease<C>, Unavailable> {
        let (key, rx, start_clock) = {
            let mut state = self.lock();
            if state.closed {
                return Err(Unavailable::ShuttingDown);
            }
            if let Some(checkout) = state.idle.pop() {
                state.mark_busy(checkout.id);
                return Ok(Lease::new(self.clone(), checkout));
            }
            if state.admitted_members() == 0 && state.booting == 0 {
                return Err(Unavailable::NoWorkers);
            }
            if state.waiters.len() >= self.max_queue.load(Ordering::Relaxed) {
                return Err(Unavailable::QueueFull);
            }
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            let (tx, rx) = oneshot::channel();
            let deadline = Instant::now() + self.queue_timeout();
            match state.waiters.back() {
                None => state.deadline_order = DeadlineOrder::Ascending,
                Some(last) if deadline < last.deadline => {
                    state.deadline_order = DeadlineOrder::Mixed;
                }
                Some(_) => {}
            }
            let key = state.waiters.push_back(
                ticket,
                Waiter {
                    tx,
                    head: head.cloned(),
                    deadline,
                },
            );
            let start_clock = match state.clock {
                QueueClock::Stopped => {
                    state.clock = QueueClock::WakesAt(deadline);
                    true
                }
                QueueClock::WakesAt(at) => {
                    if deadline < at {
                        self.clock_changed.notify_one();
                    }
                    false
                }
            };
            (key, rx, start_clock)
        };
        if start_clock {
            tokio::spawn(Self::expire_waiters(self.clone()));
        }
        self.wait(key, rx).await
    }

    fn queue_timeout(&self) -> Duration {
        Duration::from_millis(self.queue_timeout_ms.load(Ordering::Relaxed))
    }

    /// Waits in the queue until handed a worker or refused one (the queue
    /// clock expired it, or the pool closed).
    async fn wait(
        self: &Arc<Self>,
        key: Key,
        rx: oneshot::Receiver<Handed<C>>,
    ) -> Result<Lease<C>, Unavailable> {
        let mut guard = QueueGuard {
            pool: self,
            key,
            rx: Some(rx),
        };
        // Internal invariant: the receiver is taken only here or by `reclaim` on drop.
        let rx = guard.rx.as_mut().expect("waiter holds its receiver");
        let handed = rx.await;
        guard.rx = None;
        match handed {
            Ok(Handed::Worker(checkout)) => Ok(Lease::new(self.clone(), checkout)),
            Ok(Handed::Refused(why)) => Err(why),
            Err(_dropped) => Err(Unavailable::ShuttingDown),
        }
    }

    /// The queue clock: refuses each waiter whose deadline has passed with
    /// [`Unavailable::QueueTimeout`], sleeping until the earliest deadline
    /// left; stops when the queue is empty (the next waiter starts it again).
    ///
    /// Under steady load it wakes about once per queue timeout: by then the
    /// waiter it slept for has long been served, and the one at the front
    /// queued a moment ago.
    async fn expire_waiters(pool: Arc<Self>) {
        let mut running = ClockRunning(Some(pool.clone()));
        loop {
            let Some(wakes_at) = pool.lock().expire(Instant::now()) else {
                // `expire` stopped the clock: the next waiter starts another.
                running.0 = None;
                return;
            };
            tokio::select! {
                () = tokio::time::sleep_until(wakes_at) => {}
                () = pool.clock_changed.notified() => {}
            }
        }
    }

    /// Adds a ready worker. Workers of a generation newer than the admitted
    /// one wait on standby; older ones are refused (the connection is returned).
    pub fn admit(
        &self,
        id: WorkerId,
        generation: Generation,
        request_limit: Option<u64>,
        conn: C,
    ) -> Result<(), C> {
        let mut state = self.lock();
        if state.closed || generation < state.admitting {
            return Err(conn);
        }
        let standby = generation > state.admitting;
        state.members.insert(
            id,
            Member {
                generation,
                state: if standby {
                    MemberState::Standby
                } else {
                    MemberState::Busy
                },
                served: 0,
                request_limit,
            },
        );
        if standby {
            state.standby.push(Checkout::new(id, conn));
        } else {
            state.hand_off(Checkout::new(id, conn), Placement::Top);
        }
        self.notify_if_reported(state);
        Ok(())
    }

    /// Atomically admits `generation`: its standby workers take requests
    /// (queued ones first) and older workers take nothing new. Returns the
    /// older workers that were idle; busy ones retire when they finish what
    /// they hold (reported as [`Report::Released`]).
    pub fn switch_generation(&self, generation: Generation) -> Vec<WorkerId> {
        let mut state = self.lock();
        if generation <= state.admitting {
            return Vec::new();
        }
        state.admitting = generation;
        let old_idle: Vec<WorkerId> = state.idle.drain(..).map(|c| c.id).collect();
        for id in &old_idle {
            state.members.remove(id);
        }
        for member in state.members.values_mut() {
            if member.generation < generation && member.state == MemberState::Busy {
                member.state = MemberState::Retiring;
            }
        }
        let (promote, keep): (Vec<_>, Vec<_>) = std::mem::take(&mut state.standby)
            .into_iter()
            .partition(|c| state.members.get(&c.id).map(|m| m.generation) == Some(generation));
        state.standby = keep;
        for checkout in promote {
            state.hand_off(checkout, Placement::Top);
        }
        self.notify_if_reported(state);
        old_idle
    }

    /// Forgets `id` at once (its process died, or it is being killed).
    pub fn remove(&self, id: WorkerId) {
        let mut state = self.lock();
        state.idle.retain(|c| c.id != id);
        state.standby.retain(|c| c.id != id);
        state.members.remove(&id);
    }

    /// Stops admitting to `id`. Returns [`Retire::Now`] if it holds nothing
    /// (it left the pool), or [`Retire::AfterRelease`] if it is serving a
    /// request: it leaves when that ends, reported as [`Report::Released`].
    pub fn retire(&self, id: WorkerId) -> Retire {
        let mut state = self.lock();
        match state.members.get_mut(&id) {
            Some(member) if matches!(member.state, MemberState::Busy | MemberState::Retiring) => {
                member.state = MemberState::Retiring;
                Retire::AfterRelease
            }
            _ => {
                state.idle.retain(|c| c.id != id);
                state.standby.retain(|c| c.id != id);
                state.members.remove(&id);
                Retire::Now
            }
        }
    }

    /// Applies a new queue bound and queue timeout to requests from now on.
    pub fn set_queue_limits(&self, max_queue: usize, queue_timeout: Duration) {
        self.max_queue.store(max_queue, Ordering::Relaxed);
        self.queue_timeout_ms
            .store(queue_timeout.as_millis() as u64, Ordering::Relaxed);
    }

    /// How many workers of the admitted generation are booting (for the
    /// "no live worker and none booting" answer).
    pub fn set_booting(&self, booting: usize) {
        self.lock().booting = booting;
    }

    /// The admitted generation.
    pub fn generation(&self) -> Generation {
        self.lock().admitting
    }

    /// Refuses everything from now on; queued requests get `ShuttingDown`.
    pub fn close(&self) -> Vec<WorkerId> {
        let mut state = self.lock();
        state.closed = true;
        state.waiters.clear();
        // Let the queue clock see the empty queue and end now.
        self.clock_changed.notify_one();
        state.idle.clear();
        state.standby.clear();
        state.members.keys().copied().collect()
    }

    pub fn stats(&self) -> PoolStats {
        let state = self.lock();
        let busy = state
            .members
            .values()
            .filter(|m| matches!(m.state, MemberState::Busy | MemberState::Retiring))
            .count();
        PoolStats {
            generation: state.admitting,
            idle: state.idle.len(),
            busy,
            standby: state.standby.len(),
            queued: state.waiters.len(),
            booting: state.booting,
        }
    }

    /// Requests served by each admitted worker.
    pub fn served(&self) -> HashMap<WorkerId, u64> {
        self.lock()
            .members
            .iter()
            .map(|(&id, m)| (id, m.served))
            .collect()
    }

    /// Everything reported since the last call.
    pub fn take_reports(&self) -> Vec<Report> {
        std::mem::take(&mut self.lock().reports)
    }

    /// Resolves when there may be new reports.
    pub async fn reported(&self) {
        self.reported.notified().await
    }

    fn report(&self, report: Report) {
        self.lock().reports.push(report);
        self.reported.notify_one();
    }

    fn release(&self, mut checkout: Checkout<C>, placement: Placement, served: Served) {
        let mut state = self.lock();
        state.collect_fault(&mut checkout);
        let id = checkout.id;
        let (admitting, closed) = (state.admitting, state.closed);
        match state.members.get_mut(&id) {
            Some(member)
                if member.generation == admitting
                    && member.state != MemberState::Retiring
                    && !closed =>
            {
                member.served += u64::from(served == Served::Yes);
                let limit_reached = member.request_limit == Some(member.served);
                state.hand_off(checkout, placement);
                if limit_reached {
                    state.reports.push(Report::RequestLimit(id));
                }
            }
            // Retiring or of an older generation: it takes nothing new.
            Some(_) => {
                state.members.remove(&id);
                state.reports.push(Report::Released(id));
            }
            // Removed: its process is gone or being killed.
            None => {}
        }
        self.notify_if_reported(state);
    }

    /// Wakes the supervisor if a report is waiting (the lock is released first).
    fn notify_if_reported(&self, state: MutexGuard<'_, State<C>>) {
        let reported = !state.reports.is_empty();
        drop(state);
        if reported {
            self.reported.notify_one();
        }
    }
}

/// What [`Pool::retire`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// It held nothing and has left the pool.
    Now,
    /// It is serving; it leaves when that request ends.
    AfterRelease,
}

/// Whether a returned worker served a request (counts toward `r:N`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Served {
    Yes,
    No,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Next in line (LIFO).
    Top,
    /// Last in line: it just answered "busy", let others go first.
    Bottom,
}

impl<C: Conn> State<C> {
    fn admitted_members(&self) -> usize {
        self.members
            .values()
            .filter(|m| m.generation == self.admitting)
            .count()
    }

    fn mark_busy(&mut self, id: WorkerId) {
        if let Some(member) = self.members.get_mut(&id) {
            debug_assert_eq!(
                member.state,
                MemberState::Idle,
                "worker {id} checked out twice"
            );
            member.state = MemberState::Busy;
        }
    }

    /// Refuses every waiter whose deadline is `now` or past; returns the
    /// earliest deadline left, or stops the clock when nobody waits.
    fn expire(&mut self, now: Instant) -> Option<Instant> {
        let earliest = match self.deadline_order {
            DeadlineOrder::Ascending => {
                while self.waiters.front().is_some_and(|w| w.deadline <= now) {
                    if let Some(waiter) = self.waiters.pop_front() {
                        waiter.refuse(Unavailable::QueueTimeout);
                    }
                }
                self.waiters.front().map(|w| w.deadline)
            }
            DeadlineOrder::Mixed => {
                for waiter in self.waiters.remove_where(|w| w.deadline <= now) {
                    waiter.refuse(Unavailable::QueueTimeout);
                }
                let in_order = self
                    .waiters
                    .iter()
                    .zip(self.waiters.iter().skip(1))
                    .all(|(a, b)| a.deadline <= b.deadline);
                if in_order {
                    self.deadline_order = DeadlineOrder::Ascending;
                }
                self.waiters.iter().map(|w| w.deadline).min()
            }
        };
        self.clock = match earliest {
            Some(at) => QueueClock::WakesAt(at),
            None => QueueClock::Stopped,
        };
        earliest
    }

    /// Gives a free worker to the oldest waiter, else puts it on the stack.
    fn hand_off(&mut self, mut checkout: Checkout<C>, placement: Placement) {
        checkout.abandon();
        self.collect_fault(&mut checkout);
        while let Some(waiter) = self.waiters.pop_front() {
            self.set_member_state(checkout.id, MemberState::Busy);
            // A non-blocking write of a few hundred bytes: short enough to
            // do under the lock, and it keeps the hand-off in one step.
            if let Some(head) = &waiter.head {
                checkout.prestarted = checkout.conn.prestart(head);
                self.collect_fault(&mut checkout);
            }
            match waiter.tx.send(Handed::Worker(checkout)) {
                Ok(()) => return,
                // The waiter is gone (its guard removes it first, so this is rare).
                Err(Handed::Worker(mut returned)) => {
                    returned.abandon();
                    checkout = returned;
                }
                Err(Handed::Refused(_)) => unreachable!("a worker was sent"),
            }
        }
        self.set_member_state(checkout.id, MemberState::Idle);
        match placement {
            Placement::Top => self.idle.push(checkout),
            Placement::Bottom => self.idle.insert(0, checkout),
        }
    }

    /// Queues a report of what the worker's connection noticed, if anything.
    fn collect_fault(&mut self, checkout: &mut Checkout<C>) {
        if let Some(fault) = checkout.conn.take_fault() {
            self.reports.push(Report::Conn(checkout.id, fault));
        }
    }

    fn set_member_state(&mut self, id: WorkerId, new: MemberState) {
        if let Some(member) = self.members.get_mut(&id) {
            member.state = new;
        }
    }
}

impl<C: Conn> Waiter<C> {
    fn refuse(self, why: Unavailable) {
        // A waiter already gone needs no answer.
        let _ = self.tx.send(Handed::Refused(why));
    }
}

/// Held by the queue clock's task. If the task ends other than through
/// [`State::expire`] stopping it (a panic, its runtime shutting down), the
/// clock is marked stopped, so the next waiter starts a new one instead of
/// every later waiter going without a timeout.
struct ClockRunning<C: Conn>(Option<Arc<Pool<C>>>);

impl<C: Conn> Drop for ClockRunning<C> {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take() {
            pool.lock().clock = QueueClock::Stopped;
        }
    }
}

/// Removes a waiter from the queue if its request goes away while waiting
/// (its client disconnected), and returns a worker it was handed in that
/// instant to the pool, so no worker is ever lost in a dropped channel.
struct QueueGuard<'a, C: Conn> {
    pool: &'a Arc<Pool<C>>,
    key: Key,
    rx: Option<oneshot::Receiver<Handed<C>>>,
}

impl<C: Conn> QueueGuard<'_, C> {
    /// Leaves the queue; returns the worker if one was already handed over.
    fn reclaim(&mut self) -> Option<Checkout<C>> {
        let mut rx = self.rx.take()?;
        // O(1): no scan of the queue under the lock.
        self.pool.lock().waiters.remove(self.key);
        // Hand-offs happen under the lock, so after the removal above the
        // channel holds either nothing or the one answer we were given.
        match rx.try_recv() {
            Ok(Handed::Worker(checkout)) => Some(checkout),
            Ok(Handed::Refused(_)) | Err(_) => None,
        }
    }
}

impl<C: Conn> Drop for QueueGuard<'_, C> {
    fn drop(&mut self) {
        match self.reclaim() {
            // Its request is already on the worker: let it finish there first.
            Some(checkout) if checkout.prestarted > 0 => {
                C::abandoned(Lease::new(self.pool.clone(), checkout));
            }
            Some(checkout) => self.pool.release(checkout, Placement::Top, Served::No),
            None => {}
        }
    }
}

/// A worker checked out for one request. Dropping it returns the worker to
/// the pool (or to the next waiter); [`Lease::retire`] takes it out for good.
pub struct Lease<C: Conn> {
    pool: Arc<Pool<C>>,
    checkout: Option<Checkout<C>>,
    placement: Placement,
    served: Served,
}

impl<C: Conn> Lease<C> {
    fn new(pool: Arc<Pool<C>>, checkout: Checkout<C>) -> Self {
        Lease {
            pool,
            checkout: Some(checkout),
            placement: Placement::Top,
            served: Served::Yes,
        }
    }

    pub fn worker_id(&self) -> WorkerId {
        self.checkout.as_ref().map_or(0, |c| c.id)
    }

    pub fn conn(&mut self) -> &mut C {
        // Present from construction until drop or retire, which consume the lease.
        &mut self
            .checkout
            .as_mut()
            .expect("lease holds its checkout until consumed")
            .conn
    }

    /// How much of the request head the hand-off already sent (see
    /// [`Conn`]); the caller sends the rest. Taken once: a lease dropped
    /// without taking it abandons the prestarted request.
    pub fn take_prestarted(&mut self) -> usize {
        self.checkout
            .as_mut()
            .map_or(0, |c| std::mem::take(&mut c.prestarted))
    }

    pub fn conn_ref(&self) -> &C {
        // Present from construction until drop or retire, which consume the lease.
        &self
            .checkout
            .as_ref()
            .expect("lease holds its checkout until consumed")
            .conn
    }

    /// Returns the worker as the least preferred idle worker (it said "busy").
    pub fn release_to_bottom(mut self) {
        self.placement = Placement::Bottom;
        self.served = Served::No;
    }

    /// Takes the worker out of the pool and tells the supervisor why.
    pub fn retire(mut self, report: Report) {
        if let Some(checkout) = self.checkout.take() {
            self.pool.lock().members.remove(&checkout.id);
            self.pool.report(report);
        }
    }
}

impl<C: Conn> Drop for Lease<C> {
    fn drop(&mut self) {
        if let Some(checkout) = self.checkout.take() {
            self.pool.release(checkout, self.placement, self.served);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(max_queue: usize) -> Arc<Pool<u32>> {
        Pool::new(max_queue, Duration::from_secs(5))
    }

    /// A connection that records what the pool started on it.
    #[derive(Debug, Default)]
    struct Recorder {
        started: Vec<u32>,
        abandoned: usize,
        finished: usize,
        fault: Option<ConnFault>,
    }

    impl Conn for Recorder {
        type Head = u32;
        fn prestart(&mut self, head: &u32) -> usize {
            self.started.push(*head);
            1
        }
        fn abandon(&mut self) {
            self.abandoned += 1;
        }
        fn abandoned(mut lease: Lease<Self>) {
            lease.take_prestarted();
            lease.conn().finished += 1;
        }
        fn take_fault(&mut self) -> Option<ConnFault> {
            self.fault.take()
        }
    }

    async fn queued_until<C: Conn>(pool: &Arc<Pool<C>>, queued: usize) {
        while pool.stats().queued != queued {
            tokio::task::yield_now().await;
        }
    }

    /// A request that waits for a worker in its own task; it ends with the
    /// worker's id or why it got none.
    fn spawn_waiter(
        pool: &Arc<Pool<u32>>,
    ) -> tokio::task::JoinHandle<Result<WorkerId, Unavailable>> {
        let pool = pool.clone();
        tokio::spawn(async move { pool.checkout().await.map(|lease| lease.worker_id()) })
    }

    #[tokio::test]
    async fn a_waiters_head_is_started_on_the_worker_handed_to_it() {
        let p: Arc<Pool<Recorder>> = Pool::new(10, Duration::from_secs(5));
        p.admit(1, 0, None, Recorder::default()).unwrap();
        // An idle worker: nothing is started for the caller.
        let mut held = p.checkout_starting(Some(&6)).await.unwrap();
        assert_eq!(held.take_prestarted(), 0);
        assert!(held.conn_ref().started.is_empty());

        let p2 = p.clone();
        let waiter = tokio::spawn(async move {
            let mut lease = p2.checkout_starting(Some(&7)).await.unwrap();
            (lease.take_prestarted(), lease.conn_ref().started.clone())
        });
        queued_until(&p, 1).await;
        drop(held);
        assert_eq!(waiter.await.unwrap(), (1, vec![7]));
        // Taken, so the request went on: nothing was abandoned.
        assert_eq!(p.checkout().await.unwrap().conn_ref().abandoned, 0);
    }

    #[tokio::test]
    async fn a_prestarted_request_that_does_not_follow_is_abandoned() {
        let p: Arc<Pool<Recorder>> = Pool::new(10, Duration::from_secs(5));
        p.admit(1, 0, None, Recorder::default()).unwrap();
        let held = p.checkout().await.unwrap();
        let p2 = p.clone();
        // The waiter is handed the worker but drops it without taking
        // what was started: the connection must be reset for the next one.
        let waiter =
            tokio::spawn(async move { drop(p2.checkout_starting(Some(&8)).await.unwrap()) });
        queued_until(&p, 1).await;
        drop(held);
        waiter.await.unwrap();
        let lease = p.checkout().await.unwrap();
        assert_eq!(lease.conn_ref().started, vec![8]);
        assert_eq!(lease.conn_ref().abandoned, 1);
    }

    #[tokio::test]
    async fn what_a_connection_noticed_is_reported_when_its_worker_comes_back() {
        let p: Arc<Pool<Recorder>> = Pool::new(10, Duration::from_secs(5));
        p.admit(1, 0, None, Recorder::default()).unwrap();
        let mut lease = p.checkout().await.unwrap();
        lease.conn().fault = Some(ConnFault::StrayBytes);
        drop(lease);
        assert_eq!(
            p.take_reports(),
            vec![Report::Conn(1, ConnFault::StrayBytes)]
        );
        // Noticed while a queued request held it: reported on its release.
        let held = p.checkout().await.unwrap();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move {
            let mut lease = p2.checkout_starting(Some(&9)).await.unwrap();
            lease.take_prestarted();
            lease.conn().fault = Some(ConnFault::ClosedIdle);
        });
        queued_until(&p, 1).await;
        drop(held);
        waiter.await.unwrap();
        assert_eq!(
            p.take_reports(),
            vec![Report::Conn(1, ConnFault::ClosedIdle)]
        );
    }

    #[tokio::test]
    async fn a_prestarted_request_whose_client_left_is_finished_before_reuse() {
        let p: Arc<Pool<Recorder>> = Pool::new(10, Duration::from_secs(5));
        p.admit(1, 0, None, Recorder::default()).unwrap();
        let held = p.checkout().await.unwrap();
        let p2 = p.clone();
        let waiter = tokio::spawn(async move { p2.checkout_starting(Some(&9)).await.map(drop) });
        queued_until(&p, 1).await;
        // The hand-off starts request 9 on the worker; its client leaves
        // before the waiting task runs.
        drop(held);
        waiter.abort();
        assert!(waiter.await.unwrap_err().is_cancelled());
        let lease = p.checkout().await.unwrap();
        assert_eq!(lease.conn_ref().started, vec![9]);
        assert_eq!(
            (lease.conn_ref().finished, lease.conn_ref().abandoned),
            (1, 0)
        );
    }

    #[tokio::test]
    async fn a_waiter_leaving_mid_queue_frees_its_place_and_keeps_the_order() {
        let p = Pool::new(3, Duration::from_secs(5));
        p.admit(1, 0, None, 1u32).unwrap();
        let held = p.checkout().await.unwrap();
        let served = Arc::new(Mutex::new(Vec::new()));
        let waiter = |label: &'static str| {
            let (p, served) = (p.clone(), served.clone());
            tokio::spawn(async move {
                let lease = p.checkout().await;
                served.lock().unwrap().push(label);
                lease.map(|lease| lease.worker_id())
            })
        };
        let first = waiter("first");
        queued_until(&p, 1).await;
        let middle = waiter("middle");
        queued_until(&p, 2).await;
        let third = waiter("third");
        queued_until(&p, 3).await;
        middle.abort();
        assert!(middle.await.unwrap_err().is_cancelled());
        assert_eq!(p.stats().queued, 2, "the leaver is no longer counted");
        // Its place is free: the queue (bound 3) takes one more.
        let fourth = waiter("fourth");
        queued_until(&p, 3).await;
        drop(held);
        for w in [first, third, fourth] {
            assert_eq!(w.await.unwrap(), Ok(1));
        }
        assert_eq!(*served.lock().unwrap(), ["first", "third", "fourth"]);
        assert_eq!(p.stats().queued, 0);
        assert_eq!(p.stats().idle, 1);
    }

    #[tokio::test]
    async fn lifo_picks_the_most_recently_released() {
        let p = pool(10);
        for id in 1..=3 {
            p.admit(id, 0, None, id as u32).unwrap();
        }
        let a = p.checkout().await.unwrap();
        assert_eq!(a.worker_id(), 3);
        let b = p.checkout().await.unwrap();
        assert_eq!(b.worker_id(), 2);
        drop(b);
        drop(a);
        assert_eq!(p.checkout().await.unwrap().worker_id(), 3);
    }

    #[tokio::test]
    async fn queue_full_and_no_workers() {
        let p = pool(1);
        assert_eq!(p.checkout().await.err(), Some(Unavailable::NoWorkers));
        p.admit(1, 0, None, 1).unwrap();
        let _held = p.checkout().await.unwrap();
        let p2 = p.clone();
        let waiting = tokio::spawn(async move { p2.checkout().await.map(|l| l.worker_id()) });
        queued_until(&p, 1).await;
        assert_eq!(p.checkout().await.err(), Some(Unavailable::QueueFull));
        drop(_held);
        assert_eq!(waiting.await.unwrap(), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn queue_timeout() {
        let p = Pool::new(4, Duration::from_millis(100));
        p.admit(1, 0, None, 1u32).unwrap();
        let _held = p.checkout().await.unwrap();
        assert_eq!(p.checkout().await.err(), Some(Unavailable::QueueTimeout));
        assert_eq!(p.stats().queued, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn each_waiter_times_out_at_its_own_deadline() {
        let p = Pool::new(4, Duration::from_millis(100));
        p.admit(1, 0, None, 1u32).unwrap();
        let held = p.checkout().await.unwrap();
        let start = Instant::now();
        let first = spawn_waiter(&p);
        tokio::time::sleep(Duration::from_millis(60)).await;
        let second = spawn_waiter(&p);
        assert_eq!(first.await.unwrap(), Err(Unavailable::QueueTimeout));
        assert_eq!(start.elapsed(), Duration::from_millis(100));
        // The second waiter is still inside its own 100 ms.
        assert_eq!(p.stats().queued, 1);
        assert_eq!(second.await.unwrap(), Err(Unavailable::QueueTimeout));
        assert_eq!(start.elapsed(), Duration::from_millis(160));
        assert_eq!(p.stats().queued, 0);

        // The clock stopped with the queue empty; the next waiter restarts
        // it, and one that gets a worker in time is not refused.
        let third = spawn_waiter(&p);
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        assert_eq!(third.await.unwrap(), Ok(1));
        let _held = p.checkout().await.unwrap();
        let started = Instant::now();
        assert_eq!(p.checkout().await.err(), Some(Unavailable::QueueTimeout));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_shorter_queue_timeout_applies_to_the_next_waiter_at_once() {
        let p = Pool::new(4, Duration::from_secs(10));
        p.admit(1, 0, None, 1u32).unwrap();
        let _held = p.checkout().await.unwrap();
        let patient = spawn_waiter(&p);
        tokio::task::yield_now().await;
        assert_eq!(p.stats().queued, 1);
        // The clock sleeps until the first waiter's deadline, 10 s away.
        p.set_queue_limits(4, Duration::from_millis(100));
        let started = Instant::now();
        assert_eq!(p.checkout().await.err(), Some(Unavailable::QueueTimeout));
        assert_eq!(started.elapsed(), Duration::from_millis(100));
        assert_eq!(
            p.stats().queued,
            1,
            "the first waiter keeps its own deadline"
        );
        assert_eq!(patient.await.unwrap(), Err(Unavailable::QueueTimeout));
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[test]
    fn a_queue_clock_lost_with_its_runtime_is_started_again() {
        let p = Pool::new(4, Duration::from_millis(100));
        p.admit(1, 0, None, 1u32).unwrap();
        let first = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let held = first.block_on(async {
            let held = p.checkout().await.unwrap();
            // Queue a waiter, which starts the clock on this runtime.
            let waiter = spawn_waiter(&p);
            queued_until(&p, 1).await;
            drop(waiter);
            held
        });
        // Its clock task and its waiter go with it.
        drop(first);

        let second = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        second.block_on(async {
            let bounded = tokio::time::timeout(Duration::from_secs(60), p.checkout()).await;
            assert_eq!(
                bounded.expect("no queue clock refused the waiter").err(),
                Some(Unavailable::QueueTimeout)
            );
        });
        drop(held);
    }

    #[tokio::test]
    async fn standby_generation_waits_for_switch() {
        let p = pool(10);
        p.admit(1, 0, None, 1).unwrap();
        p.admit(2, 1, None, 2).unwrap();
        assert_eq!(p.checkout().await.unwrap().worker_id(), 1);
        let held = p.checkout().await.unwrap();
        assert_eq!(held.worker_id(), 1);
        assert_eq!(p.switch_generation(1), Vec::<WorkerId>::new());
        drop(held); // generation 0: not re-admitted, reported released
        assert_eq!(p.take_reports(), vec![Report::Released(1)]);
        assert_eq!(p.checkout().await.unwrap().worker_id(), 2);
        let s = p.stats();
        assert_eq!((s.idle, s.generation), (1, 1));
        assert!(p.admit(3, 0, None, 3).is_err(), "older generation refused");
    }

    #[tokio::test]
    async fn request_limit_is_reported_once() {
        let p = pool(10);
        p.admit(7, 0, Some(2), 7).unwrap();
        for _ in 0..3 {
            drop(p.checkout().await.unwrap());
        }
        assert_eq!(p.take_reports(), vec![Report::RequestLimit(7)]);
    }

    #[tokio::test]
    async fn a_busy_worker_retired_leaves_when_released() {
        let p = pool(10);
        p.admit(1, 0, None, 1).unwrap();
        p.admit(2, 0, None, 2).unwrap();
        let held = p.checkout().await.unwrap();
        assert_eq!(held.worker_id(), 2);
        assert_eq!(p.retire(2), Retire::AfterRelease);
        drop(held);
        assert_eq!(p.take_reports(), vec![Report::Released(2)]);
        assert_eq!(p.checkout().await.unwrap().worker_id(), 1);
        assert_eq!(
            p.stats().idle,
            1,
            "worker 2 must not return to the idle stack"
        );
        assert_eq!(p.retire(1), Retire::Now);
        assert_eq!(p.checkout().await.err(), Some(Unavailable::NoWorkers));
    }

    #[tokio::test]
    async fn retire_removes_the_worker() {
        let p = pool(10);
        p.admit(1, 0, None, 1).unwrap();
        p.checkout().await.unwrap().retire(Report::Hung(1));
        assert_eq!(p.take_reports(), vec![Report::Hung(1)]);
        assert_eq!(p.checkout().await.err(), Some(Unavailable::NoWorkers));
    }

    mod invariants {
        //! Property test: random interleavings of admits, checkouts,
        //! releases and cancelled waits never put two requests on one
        //! worker, never lose a waiter, and serve waiters in FIFO order.

        use super::super::*;
        use proptest::prelude::*;
        use std::cell::RefCell;
        use std::collections::{BTreeSet, HashMap};
        use std::rc::Rc;

        #[derive(Debug, Clone)]
        enum Op {
            Admit,
            Checkout,
            /// Release the n-th held lease (modulo the number held).
            Release(usize),
            /// Cancel the n-th waiting request (modulo the number waiting).
            Cancel(usize),
            /// Retire the n-th live worker (recycling, or an old generation).
            Retire(usize),
        }

        fn op() -> impl Strategy<Value = Op> {
            prop_oneof![
                1 => Just(Op::Admit),
                4 => Just(Op::Checkout),
                3 => (0usize..8).prop_map(Op::Release),
                1 => (0usize..8).prop_map(Op::Cancel),
                1 => (0usize..8).prop_map(Op::Retire),
            ]
        }

        #[derive(Default)]
        struct World {
            /// Worker ids currently leased, by request number.
            held: HashMap<usize, WorkerId>,
            /// Workers retired: never to be leased again.
            retired: BTreeSet<WorkerId>,
            /// Request numbers in the order they were granted a worker.
            granted: Vec<usize>,
            releases: HashMap<usize, oneshot::Sender<()>>,
            /// Invariants broken inside a request's task. Checked by the
            /// test itself after every step: a panic in a spawned task would
            /// only end that task, and a later Cancel could hide it.
            violations: Vec<String>,
        }

        async fn settle() {
            for _ in 0..16 {
                tokio::task::yield_now().await;
            }
        }

        /// Ends the test with the first violation recorded so far.
        fn check(world: &RefCell<World>, step: usize, op: &Op) {
            let w = world.borrow();
            assert!(
                w.violations.is_empty(),
                "after step {step} ({op:?}): {}",
                w.violations.join("; ")
            );
        }

        proptest! {
            #[test]
            fn pool_invariants(ops in proptest::collection::vec(op(), 1..80)) {
                let runtime = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
                let local = tokio::task::LocalSet::new();
                local.block_on(&runtime, async move {
                    let pool: Arc<Pool<()>> = Pool::new(1000, Duration::from_secs(3600));
                    let world = Rc::new(RefCell::new(World::default()));
                    let mut waiting: Vec<(usize, tokio::task::JoinHandle<()>)> = Vec::new();
                    let mut cancelled = BTreeSet::new();
                    let mut next_worker = 0;
                    let mut next_request = 0;
                    // One worker up front so the pool never answers NoWorkers.
                    pool.admit(next_worker, 0, None, ()).unwrap_or(());
                    next_worker += 1;
                    for (step, op) in ops.into_iter().enumerate() {
                        match op {
                            Op::Admit => {
                                pool.admit(next_worker, 0, None, ()).unwrap_or(());
                                next_worker += 1;
                            }
                            Op::Checkout => {
                                let request = next_request;
                                next_request += 1;
                                let (pool, world) = (pool.clone(), world.clone());
                                let task = tokio::task::spawn_local(async move {
                                    let lease = match pool.checkout().await {
                                        Ok(lease) => lease,
                                        Err(e) => {
                                            world.borrow_mut().violations.push(format!(
                                                "request {request} refused ({e:?}) with no timeout or bound in reach"
                                            ));
                                            return;
                                        }
                                    };
                                    let (tx, rx) = oneshot::channel();
                                    {
                                        let mut w = world.borrow_mut();
                                        let id = lease.worker_id();
                                        if let Some((other, _)) = w.held.iter().find(|(_, &h)| h == id) {
                                            let violation = format!(
                                                "worker {id} leased twice (requests {other} and {request})"
                                            );
                                            w.violations.push(violation);
                                        }
                                        if w.retired.contains(&id) {
                                            w.violations.push(format!(
                                                "retired worker {id} leased again (request {request})"
                                            ));
                                        }
                                        w.held.insert(request, id);
                                        w.granted.push(request);
                                        w.releases.insert(request, tx);
                                    }
                                    let _ = rx.await;
                                    world.borrow_mut().held.remove(&request);
                                    drop(lease);
                                });
                                waiting.push((request, task));
                            }
                            Op::Release(n) => {
                                let mut w = world.borrow_mut();
                                let mut held: Vec<usize> = w.held.keys().copied().collect();
                                held.sort();
                                if !held.is_empty() {
                                    let request = held[n % held.len()];
                                    if let Some(tx) = w.releases.remove(&request) {
                                        let _ = tx.send(());
                                    }
                                }
                            }
                            Op::Retire(n) => {
                                let mut w = world.borrow_mut();
                                let live: Vec<WorkerId> = (0..next_worker).filter(|id| !w.retired.contains(id)).collect();
                                // Keep one worker, so every waiter can still be served.
                                if live.len() > 1 {
                                    let id = live[n % live.len()];
                                    w.retired.insert(id);
                                    pool.retire(id);
                                }
                            }
                            Op::Cancel(n) => {
                                let granted: BTreeSet<usize> = world.borrow().granted.iter().copied().collect();
                                let pending: Vec<usize> = waiting
                                    .iter()
                                    .map(|(r, _)| *r)
                                    .filter(|r| !granted.contains(r) && !cancelled.contains(r))
                                    .collect();
                                if !pending.is_empty() {
                                    let request = pending[n % pending.len()];
                                    if let Some((_, task)) = waiting.iter().find(|(r, _)| *r == request) {
                                        task.abort();
                                    }
                                    cancelled.insert(request);
                                }
                            }
                        }
                        settle().await;
                        check(&world, step, &op);
                    }
                    // Release everything: every waiter not cancelled must get a worker.
                    loop {
                        let releases: Vec<_> = world.borrow_mut().releases.drain().collect();
                        if releases.is_empty() {
                            break;
                        }
                        for (_, tx) in releases {
                            let _ = tx.send(());
                        }
                        settle().await;
                    }
                    {
                        let w = world.borrow();
                        assert!(w.violations.is_empty(), "{}", w.violations.join("; "));
                        let expected: Vec<usize> = (0..next_request).filter(|r| !cancelled.contains(r) || w.granted.contains(r)).collect();
                        let mut granted_sorted = w.granted.clone();
                        granted_sorted.sort();
                        assert_eq!(granted_sorted, expected, "a waiter was lost");
                        // FIFO: requests are granted in the order they asked.
                        assert!(w.granted.windows(2).all(|p| p[0] < p[1]), "not FIFO: {:?}", w.granted);
                    }
                    assert_eq!(pool.stats().queued, 0);
                    assert_eq!(pool.stats().busy, 0);
                    // Every task has ended: joined here, so a panic in one
                    // (anything but the cancellation asked for) fails the test.
                    for (request, task) in waiting {
                        assert!(task.is_finished(), "request {request}'s task never ended");
                        match task.await {
                            Ok(()) => {}
                            Err(e) if e.is_cancelled() && cancelled.contains(&request) => {}
                            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                            Err(e) => panic!("request {request}'s task: {e}"),
                        }
                    }
                });
            }
        }
    }
}
