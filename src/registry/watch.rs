//! Watching the registry file, so a running server applies `rip-server add`
//! and `remove` (or a hand edit) without a restart.
//!
//! The file's directory is watched (the commands replace the file by
//! renaming a new one over it, which a watch on the file itself would lose),
//! events for other names are dropped, and a burst is coalesced over
//! [`DEBOUNCE`] into one notice. Whether the content changed is for the
//! receiver to decide: it reads and compares the whole registry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time that ends a burst of events.
const DEBOUNCE: Duration = Duration::from_millis(150);

/// A running watcher; dropping it stops watching.
pub struct RegistryWatcher {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RegistryWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Watches `file` (creating its directory if needed); each settled change
/// sends `()` on `changed`.
pub fn watch(file: &Path, changed: mpsc::Sender<()>) -> Result<RegistryWatcher, String> {
    let dir = file.parent().unwrap_or(Path::new(".")).to_path_buf();
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let (raw_tx, raw_rx) = mpsc::channel::<()>(1);
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event
            .paths
            .iter()
            .any(|p| p.file_name() == Some(name.as_os_str()))
        {
            let _ = raw_tx.try_send(());
        }
    })
    .map_err(|e| e.to_string())?;
    watcher
        .watch(&dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    let task = tokio::spawn(debounce(raw_rx, changed, file.to_path_buf()));
    Ok(RegistryWatcher {
        _watcher: watcher,
        task,
    })
}

async fn debounce(mut raw: mpsc::Receiver<()>, changed: mpsc::Sender<()>, file: PathBuf) {
    while raw.recv().await.is_some() {
        while tokio::time::timeout(DEBOUNCE, raw.recv())
            .await
            .is_ok_and(|event| event.is_some())
        {}
        tracing::debug!(registry = %file.display(), "registry file changed");
        if changed.send(()).await.is_err() {
            return;
        }
    }
}
