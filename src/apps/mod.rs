//! The apps one server runs, and the one task that changes them.
//!
//! [`Apps`] is the only writer (the shape sozu and Caddy use): it owns every
//! running [`AppStack`] (supervisor, pool, proxy), turns the configuration
//! and the host registry into the set of apps that should run, applies the
//! difference, and publishes a new [`RouteTable`] whole. The data path, the
//! TLS resolver and the control socket read the table through
//! [`AppsHandle`] without asking the task.
//!
//! Hosts that name the same app (entry) share its workers. A running app
//! keeps its identity (name, generations) when its files move, as they do
//! on every NixOS deploy: the default app stays the default app, and an app
//! that still serves one of its hosts is the same app ([`Apps::match_up`]).
//! A change is applied all or nothing:
//! - apps new to the set start beside the running ones, and the table is
//!   swapped only once every one of them is ready; if one fails, the new
//!   ones are stopped, the running set keeps serving, and the error is kept
//!   for `status`;
//! - an app whose entry or settings changed rolls in place (zero downtime,
//!   its own generations); one whose only change is a host or a
//!   certificate is not touched;
//! - apps no longer named leave the table first, then drain: requests in
//!   flight finish, then their workers stop.
//!
//! Triggers: the start; the registry file changing (`rip-server add` /
//! `remove`), which applies only what changed; SIGHUP, which re-reads the
//! configuration (and a declarative `[hosts]`), applies it and rolls every
//! app; `rip-server reload [HOST]`, which rolls one app or all.

pub mod stack;
pub mod table;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, RestartPolicy};
use crate::registry::{self, watch::RegistryWatcher, HostPattern, RegistrySpec, Source};
use crate::supervisor::{RollOutcome, SupervisorHandle, Trigger};
use crate::tls::{HostCert, Tls};
pub use stack::{AppSpec, AppStack, Runtime};
pub use table::{AppHandle, RouteTable};

/// How long a new app may take to become ready beyond its boot timeout.
const READY_MARGIN: Duration = Duration::from_secs(5);

/// What the registry is and whether its last change applied.
#[derive(Debug, Clone)]
pub struct RegistryState {
    pub source: Source,
    /// Why the last change was not applied (the one before keeps serving).
    pub error: Option<String>,
}

/// A request to the apps task.
pub enum AppsCommand {
    /// A rolling restart of the app serving `host` (all apps: `None`). The
    /// reply comes at once, with each roll's outcome to wait for.
    Reload {
        host: Option<String>,
        reply: oneshot::Sender<Result<Vec<Rolling>, String>>,
    },
    /// A re-read configuration (SIGHUP): applied, and every app rolled.
    Reconfigure {
        config: Box<Config>,
        reply: oneshot::Sender<Result<Vec<Rolling>, String>>,
    },
    /// Stop every app; the reply comes when all workers are reaped.
    Stop(oneshot::Sender<()>),
}

/// A roll under way: the app and the outcome to wait for.
pub type Rolling = (String, oneshot::Receiver<RollOutcome>);

/// A cheap handle for everything outside the apps task.
#[derive(Clone)]
pub struct AppsHandle {
    commands: mpsc::Sender<AppsCommand>,
    table: Arc<ArcSwap<RouteTable>>,
    state: Arc<ArcSwap<RegistryState>>,
    /// Every app's supervisor, including apps starting or draining (a
    /// worker of theirs may join or quit too).
    supervisors: Arc<Mutex<Vec<SupervisorHandle>>>,
}

impl AppsHandle {
    /// The current route table (one atomic load).
    pub fn table(&self) -> Arc<RouteTable> {
        self.table.load_full()
    }

    pub fn route_table(&self) -> &Arc<ArcSwap<RouteTable>> {
        &self.table
    }

    pub fn registry(&self) -> Arc<RegistryState> {
        self.state.load_full()
    }

    pub fn supervisors(&self) -> Vec<SupervisorHandle> {
        self.supervisors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Rolls the app serving `host`, or every app.
    pub async fn reload(&self, host: Option<String>) -> Result<Vec<Rolling>, String> {
        let (reply, answer) = oneshot::channel();
        let command = AppsCommand::Reload { host, reply };
        self.ask(command, answer).await
    }

    /// Applies a re-read configuration and rolls every app.
    pub async fn reconfigure(&self, config: Config) -> Result<Vec<Rolling>, String> {
        let (reply, answer) = oneshot::channel();
        let command = AppsCommand::Reconfigure {
            config: Box::new(config),
            reply,
        };
        self.ask(command, answer).await
    }

    async fn ask(
        &self,
        command: AppsCommand,
        answer: oneshot::Receiver<Result<Vec<Rolling>, String>>,
    ) -> Result<Vec<Rolling>, String> {
        if self.commands.send(command).await.is_err() {
            return Err("the server is stopping".into());
        }
        answer
            .await
            .unwrap_or_else(|_| Err("the server is stopping".into()))
    }

    /// Stops every app; resolves when all workers are reaped.
    pub async fn stop(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(AppsCommand::Stop(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// The apps that should run, worked out from a configuration.
struct Desired {
    /// By entry.
    apps: BTreeMap<PathBuf, AppSpec>,
    /// The default app's entry.
    default: Option<PathBuf>,
    /// Host → entry.
    routes: Vec<(HostPattern, PathBuf)>,
    certs: Vec<HostCert>,
}

impl Desired {
    fn hosts_of<'a>(&'a self, entry: &'a PathBuf) -> impl Iterator<Item = &'a HostPattern> + 'a {
        self.routes
            .iter()
            .filter(move |(_, e)| e == entry)
            .map(|(host, _)| host)
    }
}

/// A roll that ended, and what the app ran before it.
struct Rolled {
    id: StackId,
    name: String,
    old: AppSpec,
    outcome: RollOutcome,
}

/// Finished rolls, in the shape callers wait on.
fn into_rolling(rolled: Vec<Rolled>) -> Vec<Rolling> {
    rolled
        .into_iter()
        .map(|r| {
            let (tx, rx) = oneshot::channel();
            let _ = tx.send(r.outcome);
            (r.name, rx)
        })
        .collect()
}

/// The outcome of a roll whose app stopped before it ended.
fn stopped_outcome() -> RollOutcome {
    RollOutcome {
        generation: 0,
        trigger: Trigger::Signal,
        ok: false,
        duration_ms: 0,
        error: Some("the app stopped".into()),
        finished_at: 0,
    }
}

/// The apps of the configuration that serves now (none if it cannot be worked out).
fn desired_or_empty(config: &Config, spec: &RegistrySpec) -> Desired {
    desired(config, spec).unwrap_or(Desired {
        apps: BTreeMap::new(),
        default: None,
        routes: Vec::new(),
        certs: Vec::new(),
    })
}

/// Which running app (if any) each desired app is.
struct Plan {
    /// Entry → the running app that becomes it.
    existing: BTreeMap<PathBuf, StackId>,
}

/// A running app's identity, for the life of its stack.
type StackId = u64;

/// A running app and what it serves now.
struct Running {
    stack: AppStack,
    hosts: Vec<HostPattern>,
    default: bool,
}

/// The apps task.
pub struct Apps {
    config: Config,
    runtime: Runtime,
    stacks: BTreeMap<StackId, Running>,
    next_stack: StackId,
    table: Arc<ArcSwap<RouteTable>>,
    state: Arc<ArcSwap<RegistryState>>,
    supervisors: Arc<Mutex<Vec<SupervisorHandle>>>,
    tls: Option<Arc<Tls>>,
    /// The registry as last applied (a file change is compared with it).
    applied: RegistrySpec,
    _watcher: Option<RegistryWatcher>,
    changed: mpsc::Receiver<()>,
}

impl Apps {
    /// Starts every app of `config` (their workers boot in the background;
    /// requests meanwhile wait in their queues) and the task that owns them.
    /// `ready` fires once every app's workers first serve.
    pub fn start(
        config: Config,
        control_path: PathBuf,
        tls: Option<Arc<Tls>>,
        ready: oneshot::Sender<()>,
    ) -> Result<(AppsHandle, tokio::task::JoinHandle<()>), crate::Error> {
        let (changed_tx, changed) = mpsc::channel(1);
        let watcher = match &config.registry.source {
            Source::File(path) => match registry::watch::watch(path, changed_tx) {
                Ok(watcher) => Some(watcher),
                Err(e) => {
                    tracing::error!(registry = %path.display(), error = %e, "cannot watch the host registry; changes to it apply on SIGHUP");
                    None
                }
            },
            Source::Config(_) => None,
        };
        let state = Arc::new(ArcSwap::from_pointee(RegistryState {
            source: config.registry.source.clone(),
            error: None,
        }));
        let mut apps = Apps {
            runtime: Runtime {
                control_path,
                ids: Arc::new(AtomicU64::new(1)),
            },
            stacks: BTreeMap::new(),
            next_stack: 1,
            table: Arc::new(ArcSwap::from_pointee(RouteTable::default())),
            state: state.clone(),
            supervisors: Arc::new(Mutex::new(Vec::new())),
            tls,
            applied: config.registry.spec.clone(),
            _watcher: watcher,
            changed,
            config,
        };
        let desired = desired(&apps.config, &apps.applied).map_err(crate::Error::Startup)?;
        let plan = apps.match_up(&desired);
        let staged = apps.stage(&desired, &plan)?;
        let mut waiting = Vec::new();
        let mut placed = plan.existing;
        for (entry, mut running) in staged {
            if let Some(rx) = running.stack.take_ready() {
                waiting.push(rx);
            }
            let id = apps.insert(running);
            placed.insert(entry, id);
        }
        apps.publish(&desired, &placed);
        tokio::spawn(async move {
            for rx in waiting {
                if rx.await.is_err() {
                    return;
                }
            }
            let _ = ready.send(());
        });
        let (commands_tx, commands) = mpsc::channel(16);
        let handle = AppsHandle {
            commands: commands_tx,
            table: apps.table.clone(),
            state,
            supervisors: apps.supervisors.clone(),
        };
        let task = tokio::spawn(apps.run(commands));
        Ok((handle, task))
    }

    async fn run(mut self, mut commands: mpsc::Receiver<AppsCommand>) {
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(AppsCommand::Stop(done)) => {
                        self.stop_all().await;
                        let _ = done.send(());
                        return;
                    }
                    Some(AppsCommand::Reload { host, reply }) => {
                        let _ = reply.send(self.roll(host.as_deref()).await);
                    }
                    Some(AppsCommand::Reconfigure { config, reply }) => {
                        let _ = reply.send(self.reconfigure(*config).await);
                    }
                    None => {
                        self.stop_all().await;
                        return;
                    }
                },
                Some(()) = self.changed.recv() => self.registry_file_changed().await,
            }
        }
    }

    /// The registry file changed: apply what changed in it.
    async fn registry_file_changed(&mut self) {
        let Source::File(path) = &self.config.registry.source else {
            return;
        };
        let spec = match registry::load_file(path) {
            Ok(spec) => spec,
            Err(e) => {
                tracing::error!(error = %e, "the host registry changed but cannot be used; the last good registry keeps serving. Fix the file (rip-server list shows what is served)");
                self.set_error(Some(e.to_string()));
                return;
            }
        };
        if spec == self.applied {
            self.set_error(None);
            return;
        }
        tracing::info!(registry = %path.display(), hosts = spec.hosts.len(), "the host registry changed; applying it");
        match self.apply(None, spec, false).await {
            Ok(_) => self.set_error(None),
            Err(e) => {
                tracing::error!(error = %e, "the registry change was not applied; the last good registry keeps serving");
                self.set_error(Some(e));
            }
        }
    }

    /// SIGHUP: the new configuration applied, every app rolled.
    async fn reconfigure(&mut self, config: Config) -> Result<Vec<Rolling>, String> {
        let spec = config.registry.spec.clone();
        let result = self.apply(Some(config), spec, true).await;
        self.set_error(result.as_ref().err().cloned());
        result
    }

    /// Makes the running apps match `config` (the current one if `None`)
    /// and `spec`; with `roll_all`, every app that keeps running is rolled
    /// too. All or nothing: new apps must become ready and every roll must
    /// succeed, or the new apps are stopped, the apps that did roll are
    /// rolled back, and the configuration, routes, limits and certificates
    /// stay as they were. The rolls' outcomes are in the answer (a failed
    /// one says that nothing was changed); `Err`: nothing was tried.
    async fn apply(
        &mut self,
        config: Option<Config>,
        spec: RegistrySpec,
        roll_all: bool,
    ) -> Result<Vec<Rolling>, String> {
        let next = config.clone().unwrap_or_else(|| self.config.clone());
        let desired = desired(&next, &spec)?;
        let before = desired_or_empty(&self.config, &self.applied);
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.set_hosts(auto_names(&desired), desired.certs.clone()) {
                return Err(format!("host certificates: {e}"));
            }
        }
        let plan = self.match_up(&desired);
        let staged = match self.stage_for(next.clone(), &desired, &plan).await {
            Ok(staged) => staged,
            Err(e) => {
                self.restore_tls(&before);
                return Err(e);
            }
        };
        let mut rolled = self.roll_existing(&next, &desired, &plan, roll_all).await;
        if rolled.iter().any(|r| !r.outcome.ok) {
            self.roll_back(&rolled).await;
            for (_, running) in staged {
                self.forget(running.stack.supervisor());
                tokio::spawn(running.stack.stop());
            }
            self.restore_tls(&before);
            tracing::error!("a roll of the change failed; nothing was changed (the apps that rolled were rolled back)");
            for r in rolled.iter_mut().filter(|r| !r.outcome.ok) {
                let error = r
                    .outcome
                    .error
                    .take()
                    .unwrap_or_else(|| "the roll failed".into());
                r.outcome.error = Some(format!(
                    "{error}; nothing was changed (the apps that rolled were rolled back)"
                ));
            }
            return Ok(into_rolling(rolled));
        }
        self.config = next;
        for running in self.stacks.values() {
            running.stack.retune(&self.config);
        }
        let mut placed = plan.existing.clone();
        for (entry, running) in staged {
            running.stack.retune(&self.config);
            let id = self.insert(running);
            placed.insert(entry, id);
        }
        for (entry, id) in &plan.existing {
            if let Some(running) = self.stacks.get_mut(id) {
                running.hosts = desired.hosts_of(entry).cloned().collect();
                running.default = desired.default.as_ref() == Some(entry);
            }
        }
        self.publish(&desired, &placed);
        self.retire_unused(&placed);
        self.applied = spec;
        Ok(into_rolling(rolled))
    }

    /// Starts and waits for the apps new to `desired` (with `config`).
    async fn stage_for(
        &mut self,
        config: Config,
        desired: &Desired,
        plan: &Plan,
    ) -> Result<Vec<(PathBuf, Running)>, String> {
        let current = std::mem::replace(&mut self.config, config);
        let staged = self.stage(desired, plan).map_err(|e| e.to_string());
        self.config = current;
        self.wait_ready(staged?).await
    }

    /// Rolls the running apps whose spec changes (all, with `roll_all`) and
    /// waits for every outcome.
    async fn roll_existing(
        &mut self,
        config: &Config,
        desired: &Desired,
        plan: &Plan,
        roll_all: bool,
    ) -> Vec<Rolled> {
        let mut pending = Vec::new();
        for (entry, id) in &plan.existing {
            let (Some(spec), Some(running)) = (desired.apps.get(entry), self.stacks.get_mut(id))
            else {
                continue;
            };
            if !roll_all && *spec == running.stack.spec {
                continue;
            }
            let name = running.stack.name().to_string();
            let old = running.stack.spec.clone();
            match running
                .stack
                .reconfigure(spec.clone(), config, &self.runtime)
                .await
            {
                Ok(outcome) => pending.push((*id, name, old, outcome)),
                Err(e) => {
                    tracing::error!(app = %name, error = %e, "cannot roll the app; it keeps its current workers")
                }
            }
        }
        let mut rolled = Vec::new();
        for (id, name, old, outcome) in pending {
            let outcome = outcome.await.unwrap_or_else(|_| stopped_outcome());
            rolled.push(Rolled {
                id,
                name,
                old,
                outcome,
            });
        }
        rolled
    }

    /// Rolls the apps that did roll back to what they ran before; those
    /// whose roll failed run it still.
    async fn roll_back(&mut self, rolled: &[Rolled]) {
        for r in rolled.iter().filter(|r| !r.outcome.ok) {
            if let Some(running) = self.stacks.get_mut(&r.id) {
                running.stack.roll_failed(r.old.clone());
            }
        }
        for r in rolled.iter().filter(|r| r.outcome.ok) {
            let Some(running) = self.stacks.get_mut(&r.id) else {
                continue;
            };
            tracing::warn!(app = %r.name, "rolling the app back: another part of the change failed");
            if let Ok(outcome) = running
                .stack
                .reconfigure(r.old.clone(), &self.config, &self.runtime)
                .await
            {
                let _ = outcome.await;
            }
        }
    }

    /// Puts back the certificates of the configuration that keeps serving.
    fn restore_tls(&self, before: &Desired) {
        if let Some(tls) = &self.tls {
            if let Err(e) = tls.set_hosts(auto_names(before), before.certs.clone()) {
                tracing::error!(error = %e, "cannot restore the host certificates");
            }
        }
    }

    /// Which running app each desired app is (by entry), so an app keeps its
    /// workers, name and generations when its files move: the same entry;
    /// else, for the default app, the running default app; else a running
    /// app that serves one of the same hosts. The rest are new.
    fn match_up(&self, desired: &Desired) -> Plan {
        let mut existing: BTreeMap<PathBuf, StackId> = BTreeMap::new();
        let mut claimed: Vec<StackId> = Vec::new();
        let mut claim =
            |entry: &PathBuf, id: StackId, existing: &mut BTreeMap<PathBuf, StackId>| {
                claimed.push(id);
                existing.insert(entry.clone(), id);
            };
        for entry in desired.apps.keys() {
            if let Some((&id, _)) = self
                .stacks
                .iter()
                .find(|(_, r)| r.stack.spec.app.entry == *entry)
            {
                claim(entry, id, &mut existing);
            }
        }
        for entry in desired.apps.keys() {
            if existing.contains_key(entry) {
                continue;
            }
            let is_default = desired.default.as_ref() == Some(entry);
            let hosts: Vec<&HostPattern> = desired.hosts_of(entry).collect();
            let same_role = self.stacks.iter().find(|(id, running)| {
                !existing.values().any(|taken| taken == *id)
                    && ((is_default && running.default)
                        || running.hosts.iter().any(|h| hosts.contains(&h)))
            });
            if let Some((&id, _)) = same_role {
                claim(entry, id, &mut existing);
            }
        }
        Plan { existing }
    }

    /// Starts the desired apps `plan` found no running app for.
    fn stage(
        &mut self,
        desired: &Desired,
        plan: &Plan,
    ) -> Result<Vec<(PathBuf, Running)>, crate::Error> {
        let mut staged: Vec<(PathBuf, Running)> = Vec::new();
        for (entry, spec) in &desired.apps {
            if plan.existing.contains_key(entry) {
                continue;
            }
            let is_default = desired.default.as_ref() == Some(entry);
            let taken: Vec<&str> = self
                .stacks
                .values()
                .map(|r| r.stack.name())
                .chain(staged.iter().map(|(_, r)| r.stack.name()))
                .collect();
            let name = if is_default {
                self.config.name.clone()
            } else {
                unique_name(&spec.app.name, &self.config.name, &taken)
            };
            match AppStack::start(&name, spec.clone(), &self.config, &self.runtime) {
                Ok(stack) => {
                    tracing::info!(app = %name, entry = %entry.display(), workers = spec.workers, "starting an app");
                    self.supervisors_mut().push(stack.supervisor().clone());
                    let running = Running {
                        stack,
                        hosts: desired.hosts_of(entry).cloned().collect(),
                        default: is_default,
                    };
                    staged.push((entry.clone(), running));
                }
                Err(e) => {
                    for (_, running) in staged {
                        self.forget(running.stack.supervisor());
                        tokio::spawn(running.stack.stop());
                    }
                    return Err(e);
                }
            }
        }
        Ok(staged)
    }

    fn insert(&mut self, running: Running) -> StackId {
        let id = self.next_stack;
        self.next_stack += 1;
        self.stacks.insert(id, running);
        id
    }

    /// Waits until every staged app is ready; if one is not, all are stopped.
    async fn wait_ready(
        &mut self,
        mut staged: Vec<(PathBuf, Running)>,
    ) -> Result<Vec<(PathBuf, Running)>, String> {
        let limit = self.config.timeouts.boot + READY_MARGIN;
        let mut failed = None;
        for (_, running) in staged.iter_mut() {
            let stack = &mut running.stack;
            match tokio::time::timeout(limit, stack.wait_ready()).await {
                Ok(true) => {}
                _ => {
                    failed = Some(format!(
                        "app {} ({}) did not become ready within {} ms; its log says why",
                        stack.name(),
                        stack.spec.app.entry.display(),
                        limit.as_millis()
                    ));
                    break;
                }
            }
        }
        match failed {
            None => Ok(staged),
            Some(error) => {
                for (_, running) in staged {
                    self.forget(running.stack.supervisor());
                    tokio::spawn(running.stack.stop());
                }
                Err(error)
            }
        }
    }

    /// Builds the route table for `desired` (each entry served by the
    /// running app `placed` names) and swaps it in.
    fn publish(&self, desired: &Desired, placed: &BTreeMap<PathBuf, StackId>) {
        let handle = |entry: &PathBuf| {
            placed
                .get(entry)
                .and_then(|id| self.stacks.get(id))
                .map(|r| r.stack.handle.clone())
        };
        let routes = desired
            .routes
            .iter()
            .filter_map(|(host, entry)| handle(entry).map(|h| (host.clone(), h)));
        let fallback = desired.default.as_ref().and_then(handle);
        self.table
            .store(Arc::new(RouteTable::new(routes, fallback)));
    }

    /// Takes the running apps `placed` does not name out of the set: they
    /// drain in the background (they are already out of the table).
    fn retire_unused(&mut self, placed: &BTreeMap<PathBuf, StackId>) {
        let unused: Vec<StackId> = self
            .stacks
            .keys()
            .filter(|id| !placed.values().any(|kept| kept == *id))
            .copied()
            .collect();
        for id in unused {
            if let Some(running) = self.stacks.remove(&id) {
                let stack = running.stack;
                tracing::info!(app = stack.name(), "app no longer served; draining it");
                let grace = self.config.timeouts.grace;
                let supervisors = self.supervisors.clone();
                let supervisor = stack.supervisor().clone();
                tokio::spawn(async move {
                    stack.retire(grace).await;
                    forget_in(&supervisors, &supervisor);
                });
            }
        }
    }

    /// Rolls the app serving `host`, or all.
    async fn roll(&mut self, host: Option<&str>) -> Result<Vec<Rolling>, String> {
        let targets: Vec<&AppStack> = match host {
            None => self.stacks.values().map(|r| &r.stack).collect(),
            Some(host) => {
                let table = self.table.load();
                let Some(app) = table.lookup(host) else {
                    return Err(format!(
                        "no app serves host '{host}' (rip-server list shows the hosts)"
                    ));
                };
                self.stacks
                    .values()
                    .map(|r| &r.stack)
                    .filter(|s| Arc::ptr_eq(&s.handle, app))
                    .collect()
            }
        };
        let mut rolls = Vec::new();
        for stack in targets {
            rolls.push((stack.name().to_string(), stack.roll(Trigger::Command).await));
        }
        Ok(rolls)
    }

    async fn stop_all(&mut self) {
        self.table.store(Arc::new(RouteTable::default()));
        let stops: Vec<_> = std::mem::take(&mut self.stacks)
            .into_values()
            .map(|running| tokio::spawn(running.stack.stop()))
            .collect();
        for stop in stops {
            let _ = stop.await;
        }
    }

    fn set_error(&self, error: Option<String>) {
        let source = self.config.registry.source.clone();
        self.state.store(Arc::new(RegistryState { source, error }));
    }

    fn supervisors_mut(&self) -> std::sync::MutexGuard<'_, Vec<SupervisorHandle>> {
        self.supervisors.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn forget(&self, supervisor: &SupervisorHandle) {
        forget_in(&self.supervisors, supervisor);
    }
}

fn forget_in(list: &Mutex<Vec<SupervisorHandle>>, supervisor: &SupervisorHandle) {
    list.lock()
        .unwrap_or_else(|p| p.into_inner())
        .retain(|s| !s.same(supervisor));
}

/// The apps `config` and `spec` ask for.
fn desired(config: &Config, spec: &RegistrySpec) -> Result<Desired, String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut apps: BTreeMap<PathBuf, AppSpec> = BTreeMap::new();
    let mut owners: BTreeMap<PathBuf, String> = BTreeMap::new();
    let mut add = |spec: AppSpec, owner: String| -> Result<(), String> {
        let entry = spec.app.entry.clone();
        match apps.get(&entry) {
            Some(existing) if *existing != spec => Err(format!(
                "{} and {owner} run the same app {} with different settings; hosts of one app \
                 share its workers, so give them the same workers, restart and reload",
                owners.get(&entry).map_or("another host", String::as_str),
                entry.display()
            )),
            Some(_) => Ok(()),
            None => {
                owners.insert(entry.clone(), owner);
                apps.insert(entry, spec);
                Ok(())
            }
        }
    };
    let default = match &config.app {
        Some(app) => {
            add(
                AppSpec {
                    app: app.clone(),
                    workers: config.workers,
                    restart: config.restart,
                    reload: config.reload,
                },
                "the default app".into(),
            )?;
            Some(app.entry.clone())
        }
        None => None,
    };
    let mut routes = Vec::new();
    let mut certs = Vec::new();
    for (host, entry) in &spec.hosts {
        let spec = AppSpec {
            app: entry.app.clone(),
            workers: entry.workers.map_or(config.workers, |w| w.resolve(cores)),
            restart: restart_over(config.restart, entry.restart),
            reload: entry.reload.unwrap_or(config.reload),
        };
        add(spec, format!("host '{host}'"))?;
        routes.push((host.clone(), entry.app.entry.clone()));
        if let Some(pair) = &entry.tls {
            certs.push(HostCert {
                host: host.to_string(),
                pair: pair.clone(),
            });
        }
    }
    Ok(Desired {
        apps,
        default,
        routes,
        certs,
    })
}

/// A host entry's `r:` parts over the server's restart policy.
fn restart_over(base: RestartPolicy, parts: Option<crate::cli::RestartSpec>) -> RestartPolicy {
    let Some(parts) = parts else { return base };
    RestartPolicy {
        max_requests: match parts.requests {
            Some(n) => std::num::NonZeroU64::new(n),
            None => base.max_requests,
        },
        max_age: match parts.seconds {
            Some(0) => None,
            Some(s) => Some(Duration::from_secs(s)),
            None => base.max_age,
        },
        max_reloads: match parts.reloads {
            Some(n) => std::num::NonZeroU64::new(n),
            None => base.max_reloads,
        },
    }
}

/// The names an automatic certificate covers: the local ones and every
/// registered host (`*.example.com` for a wildcard).
fn auto_names(desired: &Desired) -> Vec<String> {
    let mut names: Vec<String> = crate::tls::auto::LOCAL_NAMES
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.extend(desired.routes.iter().map(|(host, _)| host.to_string()));
    names
}

/// An app's name for logs and metrics: its directory's name, made unique.
fn unique_name(base: &str, instance: &str, taken: &[&str]) -> String {
    let base = crate::config::sanitize_name(base);
    let base = if base == instance {
        format!("{base}-app")
    } else {
        base
    };
    if !taken.contains(&base.as_str()) {
        return base;
    }
    (2..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken.contains(&name.as_str()))
        .unwrap_or(base)
}
