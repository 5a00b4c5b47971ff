//! The route table: which app answers which host.
//!
//! Built whole by the apps task ([`super::Apps`]) and swapped whole
//! (`ArcSwap`): the data path loads it once per request with one atomic
//! load and no lock, and a change of routes (and of the certificates that
//! go with them) is seen all at once or not at all. Lookup: the exact name,
//! then a wildcard one label up, then the default app.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::cli::ReloadMode;
use crate::supervisor::SupervisorHandle;

use crate::registry::{request_host, HostPattern};
use crate::server::metrics::Metrics;
use crate::server::pool::Pool;
use crate::server::proxy::Proxy;
use crate::server::upstream::Upstream;

/// What the data path holds of a running app: its proxy, and what the
/// public `/status` shows of it. Requests in flight keep it alive after
/// their app is removed from the table.
pub struct AppHandle {
    /// The app's name (logs, metrics label).
    pub name: String,
    pub proxy: Arc<Proxy>,
    pub pool: Arc<Pool<Upstream>>,
    pub metrics: Arc<Metrics>,
    pub supervisor: SupervisorHandle,
    /// The workers it is meant to run (changes with a reconfiguration).
    pub desired: AtomicUsize,
    /// What it runs (changes when its files move), for `status`.
    pub about: Mutex<About>,
}

/// What an app runs, as `status` shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct About {
    pub dir: PathBuf,
    pub entry: PathBuf,
    pub reload: ReloadMode,
}

impl AppHandle {
    pub fn desired(&self) -> usize {
        self.desired.load(Ordering::Relaxed)
    }

    pub fn about(&self) -> About {
        self.about.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Workers admitted and able to take requests now.
    pub fn ready(&self) -> usize {
        let stats = self.pool.stats();
        stats.idle + stats.busy
    }
}

/// A snapshot of the routes.
#[derive(Default)]
pub struct RouteTable {
    exact: HashMap<String, Arc<AppHandle>>,
    /// By the parent of the wildcard (`*.example.com` → `example.com`).
    wildcard: HashMap<String, Arc<AppHandle>>,
    /// The default app: every host when nothing is registered, unregistered
    /// hosts otherwise. `None`: unregistered hosts get `404 Host not found`.
    fallback: Option<Arc<AppHandle>>,
    /// Every app in the table once, for `/status` and `/metrics`.
    apps: Vec<(Arc<AppHandle>, Vec<String>)>,
}

impl RouteTable {
    /// A table of `hosts` (pattern → app) with `fallback` for the rest.
    pub fn new(
        hosts: impl IntoIterator<Item = (HostPattern, Arc<AppHandle>)>,
        fallback: Option<Arc<AppHandle>>,
    ) -> Self {
        let mut table = RouteTable {
            fallback: fallback.clone(),
            ..RouteTable::default()
        };
        let mut names: Vec<(Arc<AppHandle>, Vec<String>)> = Vec::new();
        if let Some(app) = fallback {
            names.push((app, Vec::new()));
        }
        for (pattern, app) in hosts {
            match names.iter_mut().find(|(a, _)| Arc::ptr_eq(a, &app)) {
                Some((_, hosts)) => hosts.push(pattern.to_string()),
                None => names.push((app.clone(), vec![pattern.to_string()])),
            }
            match pattern {
                HostPattern::Exact(name) => table.exact.insert(name, app),
                HostPattern::Wildcard(parent) => table.wildcard.insert(parent, app),
            };
        }
        table.apps = names;
        table
    }

    /// The app for a request's `Host` (as the edge left it).
    pub fn lookup(&self, authority: &str) -> Option<&Arc<AppHandle>> {
        // One app and no names: nothing to look up (the common single-app case).
        if self.exact.is_empty() && self.wildcard.is_empty() {
            return self.fallback.as_ref();
        }
        let host = request_host(authority);
        if let Some(app) = self.exact.get(host.as_ref()) {
            return Some(app);
        }
        host.split_once('.')
            .and_then(|(label, parent)| (!label.is_empty()).then_some(parent))
            .and_then(|parent| self.wildcard.get(parent))
            .or(self.fallback.as_ref())
    }

    /// Every app with the host names it serves (empty for the default app).
    pub fn apps(&self) -> &[(Arc<AppHandle>, Vec<String>)] {
        &self.apps
    }

    /// Every registered name, as written (`*.example.com` for a wildcard).
    pub fn hosts(&self) -> Vec<String> {
        let mut hosts: Vec<String> = self.apps.iter().flat_map(|(_, h)| h.clone()).collect();
        hosts.sort();
        hosts
    }

    pub fn default_app(&self) -> Option<&Arc<AppHandle>> {
        self.fallback.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Limits, Timeouts};
    use std::time::Duration;

    fn app(name: &str) -> Arc<AppHandle> {
        let pool = Pool::new(1, Duration::from_secs(1));
        let metrics = Arc::new(Metrics::new());
        let limits = Limits {
            max_queue: 1,
            max_body_bytes: 1,
            max_header_bytes: 8192,
            upload_buffer_bytes: 0,
            response_buffer_bytes: 0,
            min_upload_rate: 0,
            min_download_rate: 0,
            max_connections: None,
            max_rss: None,
        };
        let t = Duration::from_secs(1);
        let timeouts = Timeouts {
            queue: t,
            connect: t,
            read: t,
            boot: t,
            grace: t,
            header: t,
            idle: t,
            send: t,
            body_idle: t,
            max_backoff: t,
            hung: t,
        };
        Arc::new(AppHandle {
            name: name.into(),
            proxy: Arc::new(Proxy::new(
                name,
                pool.clone(),
                metrics.clone(),
                limits,
                timeouts,
                false,
            )),
            pool,
            metrics,
            supervisor: SupervisorHandle::detached(),
            desired: AtomicUsize::new(1),
            about: Mutex::new(About {
                dir: PathBuf::from("/srv"),
                entry: PathBuf::from("/srv/index.mjs"),
                reload: ReloadMode::None,
            }),
        })
    }

    fn name_of(table: &RouteTable, host: &str) -> Option<String> {
        table.lookup(host).map(|a| a.name.clone())
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let (labs, preview, site) = (app("labs"), app("preview"), app("site"));
        let hosts = [
            (
                HostPattern::parse("labs.example.com").unwrap(),
                labs.clone(),
            ),
            (
                HostPattern::parse("*.example.com").unwrap(),
                preview.clone(),
            ),
        ];
        let table = RouteTable::new(hosts.clone(), Some(site));
        assert_eq!(
            name_of(&table, "Labs.Example.com:5700").as_deref(),
            Some("labs")
        );
        assert_eq!(
            name_of(&table, "pr-7.example.com").as_deref(),
            Some("preview")
        );
        assert_eq!(name_of(&table, "example.com").as_deref(), Some("site"));
        assert_eq!(name_of(&table, "a.b.example.com").as_deref(), Some("site"));
        assert_eq!(table.hosts(), vec!["*.example.com", "labs.example.com"]);

        let without_default = RouteTable::new(hosts, None);
        assert_eq!(name_of(&without_default, "other.example"), None);
    }

    #[test]
    fn with_no_names_the_default_app_serves_every_host() {
        let table = RouteTable::new([], Some(app("api")));
        assert_eq!(name_of(&table, "anything:1").as_deref(), Some("api"));
        assert!(RouteTable::new([], None).lookup("x").is_none());
    }
}
