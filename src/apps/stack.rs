//! One running app: its supervisor (workers, readiness, recycling, rolling
//! restarts, file watcher), its pool and its proxy, started together and
//! stopped together. The apps task ([`super::Apps`]) owns every stack; the
//! data path sees only the stack's [`AppHandle`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::table::{About, AppHandle};
use crate::app::{App, EntryKind, NODE_LOADER};
use crate::cli::ReloadMode;
use crate::config::{Config, RestartPolicy};
use crate::server::metrics::Metrics;
use crate::server::pool::Pool;
use crate::server::proxy::Proxy;
use crate::supervisor::{
    Command, RollOutcome, Settings, Spawner, Supervisor, SupervisorHandle, Trigger,
};
use crate::Error;

/// What one app runs with: its entry and its workers' settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSpec {
    pub app: App,
    pub workers: usize,
    pub restart: RestartPolicy,
    pub reload: ReloadMode,
}

/// Where the server keeps what every app's workers need.
#[derive(Clone)]
pub struct Runtime {
    /// The control socket workers announce themselves on.
    pub control_path: PathBuf,
    /// Worker ids, unique across apps (they name worker sockets).
    pub ids: Arc<AtomicU64>,
}

/// A running app.
pub struct AppStack {
    pub spec: AppSpec,
    pub handle: Arc<AppHandle>,
    supervisor: SupervisorHandle,
    task: JoinHandle<()>,
    /// Fires once every worker of its first generation serves.
    ready: Option<oneshot::Receiver<()>>,
}

impl AppStack {
    /// Starts the app's workers (they boot in the background).
    pub fn start(
        name: &str,
        spec: AppSpec,
        config: &Config,
        runtime: &Runtime,
    ) -> Result<AppStack, Error> {
        let spawner = spawner(name, &spec, config, &runtime.control_path)?;
        let pool = Pool::new(config.limits.max_queue, config.timeouts.queue);
        let metrics = Arc::new(Metrics::new());
        let proxy = Arc::new(Proxy::new(
            name,
            pool.clone(),
            metrics.clone(),
            config.limits,
            config.timeouts,
            config.logging.access_log,
        ));
        let (ready_tx, ready) = oneshot::channel();
        let (supervisor, task) = Supervisor::start(
            settings(&spec, config),
            spawner,
            pool.clone(),
            metrics.clone(),
            runtime.ids.clone(),
            ready_tx,
        );
        let handle = Arc::new(AppHandle {
            name: name.to_string(),
            proxy,
            pool,
            metrics,
            supervisor: supervisor.clone(),
            desired: AtomicUsize::new(spec.workers),
            about: Mutex::new(about(&spec)),
        });
        Ok(AppStack {
            spec,
            handle,
            supervisor,
            task,
            ready: Some(ready),
        })
    }

    pub fn name(&self) -> &str {
        &self.handle.name
    }

    pub fn supervisor(&self) -> &SupervisorHandle {
        &self.supervisor
    }

    /// The signal that every worker of the first generation serves, for a
    /// caller that waits elsewhere.
    pub fn take_ready(&mut self) -> Option<oneshot::Receiver<()>> {
        self.ready.take()
    }

    /// Resolves once every worker of the first generation serves (at once,
    /// if it did already); `false` if the app stopped first.
    pub async fn wait_ready(&mut self) -> bool {
        match self.ready.take() {
            Some(ready) => ready.await.is_ok(),
            None => true,
        }
    }

    /// Applies new server-wide limits and timeouts to requests from now on.
    pub fn retune(&self, config: &Config) {
        self.handle.proxy.retune(config.limits, config.timeouts);
        self.handle
            .pool
            .set_queue_limits(config.limits.max_queue, config.timeouts.queue);
    }

    /// Rolls the app to `spec` (its settings, or a new version of its files)
    /// and `config`'s worker settings; the reply comes when the roll ends.
    /// The current generation keeps serving if the new one fails. Limits and
    /// timeouts of requests are not touched ([`AppStack::retune`] does that
    /// once the whole change is known to have worked).
    pub async fn reconfigure(
        &mut self,
        spec: AppSpec,
        config: &Config,
        runtime: &Runtime,
    ) -> Result<oneshot::Receiver<RollOutcome>, Error> {
        let spawner = spawner(&self.handle.name, &spec, config, &runtime.control_path)?;
        let (reply, outcome) = oneshot::channel();
        let command = Command::Reconfigure {
            settings: Box::new(settings(&spec, config)),
            spawner: Box::new(spawner),
            reply: Some(reply),
        };
        self.handle.desired.store(spec.workers, Ordering::Relaxed);
        *self.handle.about.lock().unwrap_or_else(|p| p.into_inner()) = about(&spec);
        self.spec = spec;
        self.supervisor.send(command).await;
        Ok(outcome)
    }

    /// The roll to a new spec failed, so the app runs `old` still: say so.
    pub fn roll_failed(&mut self, old: AppSpec) {
        self.handle.desired.store(old.workers, Ordering::Relaxed);
        *self.handle.about.lock().unwrap_or_else(|p| p.into_inner()) = about(&old);
        self.spec = old;
    }

    /// A rolling restart; the reply comes when it ends.
    pub async fn roll(&self, trigger: Trigger) -> oneshot::Receiver<RollOutcome> {
        let (reply, outcome) = oneshot::channel();
        let command = Command::Reload {
            trigger,
            reply: Some(reply),
        };
        self.supervisor.send(command).await;
        outcome
    }

    /// Stops the app once the requests it holds have finished (or after
    /// `grace`): it must already be out of the route table.
    pub async fn retire(self, grace: Duration) {
        let name = self.handle.name.clone();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let stats = self.handle.pool.stats();
            if stats.busy == 0 && stats.queued == 0 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                tracing::warn!(app = %name, busy = stats.busy, queued = stats.queued, "requests still in flight after the grace period; stopping the app anyway");
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.stop().await;
        tracing::info!(app = %name, "app stopped: its workers drained and exited");
    }

    /// Stops every worker (draining them) and waits until all are reaped.
    pub async fn stop(self) {
        self.supervisor.stop().await;
        let _ = self.task.await;
    }
}

fn about(spec: &AppSpec) -> About {
    About {
        dir: spec.app.dir.clone(),
        entry: spec.app.entry.clone(),
        reload: spec.reload,
    }
}

/// The supervisor's settings for `spec` under `config`.
fn settings(spec: &AppSpec, config: &Config) -> Settings {
    Settings {
        workers: spec.workers,
        restart: spec.restart,
        timeouts: config.timeouts,
        reload: spec.reload,
        watch: config.watch.clone(),
        max_rss: config.limits.max_rss,
    }
}

/// The Node loader, written once per server to the runtime directory.
pub fn loader_path(config: &Config) -> PathBuf {
    config
        .runtime_dir
        .join(format!("{}.loader.mjs", config.name))
}

/// How workers of `spec` are started.
fn spawner(
    name: &str,
    spec: &AppSpec,
    config: &Config,
    control_path: &Path,
) -> Result<Spawner, Error> {
    let (program, args) = match spec.app.kind {
        EntryKind::JsModule => {
            let loader = loader_path(config);
            crate::write_atomically(&loader, NODE_LOADER.as_bytes()).map_err(|e| {
                Error::RuntimeDir {
                    path: loader.clone(),
                    message: format!("cannot write the node loader: {e}"),
                }
            })?;
            let mut args = Vec::new();
            if config.js_runtime == crate::cli::JsRuntime::Bun {
                // Bun's default head limit (16 KiB) is below what the server forwards.
                args.push("--max-http-header-size=131072".into());
            }
            args.push(loader.into_os_string());
            (config.js_runtime.program().into(), args)
        }
        EntryKind::Executable => (spec.app.entry.clone().into_os_string(), Vec::new()),
    };
    Ok(Spawner {
        name: config.name.clone(),
        app_name: name.to_string(),
        program,
        args,
        app_dir: spec.app.dir.clone(),
        entry: spec.app.entry.clone(),
        reload: spec.reload,
        runtime_dir: config.runtime_dir.clone(),
        control_socket: control_path.to_path_buf(),
        run_as: config
            .run_as
            .as_ref()
            .filter(|run_as| run_as.switches())
            .map(|run_as| (run_as.uid, run_as.gid)),
    })
}
