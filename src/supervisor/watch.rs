//! One recursive file watcher per app (DESIGN §5).
//!
//! Events from `notify` are filtered (`.git`, `node_modules`, editor swap and
//! temp files), coalesced over [`DEBOUNCE`], and then checked against a
//! content hash of the app's files, so a save that changes nothing (or a
//! burst of fifty saves) becomes at most one [`Changed`] for the supervisor.
//! Editors that save by writing a temp file and renaming it over the
//! original produce a rename event on the original's name, which counts.
//! Nothing here runs on the request path.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

/// Quiet time that ends a burst of file events.
pub const DEBOUNCE: Duration = Duration::from_millis(200);
/// A burst that never goes quiet is cut off after this long.
pub const MAX_DEBOUNCE: Duration = Duration::from_secs(2);

/// Directories never watched or hashed.
const IGNORED_DIRS: [&str; 6] = [
    ".git",
    ".hg",
    ".svn",
    "node_modules",
    ".cache",
    "__pycache__",
];

/// The app's files changed (in content) since the last notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed;

/// A running watcher; dropping it stops watching.
pub struct AppWatcher {
    _watcher: RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AppWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts watching `dir`; content changes are sent on `changes`.
pub fn watch(dir: &Path, changes: mpsc::Sender<Changed>) -> notify::Result<AppWatcher> {
    let (raw_tx, raw_rx) = mpsc::channel::<()>(1);
    let root = dir.to_path_buf();
    let filter_root = root.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        if event.paths.iter().any(|p| is_relevant(&filter_root, p)) {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = raw_tx.try_send(());
        }
    })?;
    watcher.watch(dir, RecursiveMode::Recursive)?;
    let task = tokio::spawn(debounce(root, raw_rx, changes));
    Ok(AppWatcher {
        _watcher: watcher,
        task,
    })
}

async fn debounce(root: PathBuf, mut raw: mpsc::Receiver<()>, changes: mpsc::Sender<Changed>) {
    let mut last_hash = hash_tree(root.clone()).await;
    while raw.recv().await.is_some() {
        // Coalesce: wait until the tree has been quiet for DEBOUNCE (at most MAX_DEBOUNCE).
        let burst_end = tokio::time::Instant::now() + MAX_DEBOUNCE;
        while tokio::time::Instant::now() < burst_end
            && tokio::time::timeout(DEBOUNCE, raw.recv())
                .await
                .is_ok_and(|event| event.is_some())
        {}
        let hash = hash_tree(root.clone()).await;
        if hash == last_hash {
            tracing::debug!("app files saved without changes; no reload");
            continue;
        }
        last_hash = hash;
        if changes.send(Changed).await.is_err() {
            return;
        }
    }
}

/// Whether a changed path can affect the app.
pub fn is_relevant(root: &Path, path: &Path) -> bool {
    let relative = path.strip_prefix(root).unwrap_or(path);
    let mut components = relative.components().peekable();
    while let Some(component) = components.next() {
        let Component::Normal(name) = component else {
            continue;
        };
        let name = name.to_string_lossy();
        let is_last = components.peek().is_none();
        if !is_last && IGNORED_DIRS.contains(&name.as_ref()) {
            return false;
        }
        if is_last {
            return !is_editor_noise(&name) && !IGNORED_DIRS.contains(&name.as_ref());
        }
    }
    true
}

/// Swap, backup and temp files that editors write beside the real ones.
fn is_editor_noise(name: &str) -> bool {
    name.ends_with(".swp")
        || name.ends_with(".swx")
        || name.ends_with(".swo")
        || name.ends_with('~')
        || name.ends_with(".tmp")
        || name.ends_with(".bak")
        || name.starts_with(".#")
        || (name.starts_with('#') && name.ends_with('#'))
        || name == "4913" // vim's write-permission probe
        || name == ".DS_Store"
        || name.contains(".tmp.")
}

/// Files up to this size are hashed by content (so a save that changes
/// nothing is skipped); larger ones by size and modification time.
const CONTENT_HASH_LIMIT: u64 = 1024 * 1024;

/// A hash of every relevant file's path and content (or, for large files,
/// size and modification time).
async fn hash_tree(root: PathBuf) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        collect_files(&root, &root, &mut files);
        if files.len() >= MAX_FILES {
            // Too big to fingerprint: every event counts as a change.
            return std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
        }
        files.sort();
        let mut hasher = DefaultHasher::new();
        for path in files {
            path.hash(&mut hasher);
            // A re-pointed symlink (a `current -> release-42` deploy) is a change.
            if let Ok(target) = std::fs::read_link(&path) {
                target.hash(&mut hasher);
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if meta.len() <= CONTENT_HASH_LIMIT {
                if let Ok(bytes) = std::fs::read(&path) {
                    bytes.hash(&mut hasher);
                }
            } else {
                meta.len().hash(&mut hasher);
                meta.modified().ok().hash(&mut hasher);
            }
        }
        hasher.finish()
    })
    .await
    .unwrap_or(0)
}

/// Longest directory walk, so a huge tree cannot stall the watcher.
const MAX_FILES: usize = 50_000;

fn collect_files(root: &Path, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if files.len() >= MAX_FILES {
            return;
        }
        let path = entry.path();
        if !is_relevant(root, &path) {
            continue;
        }
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect_files(root, &path, files),
            Ok(t) if t.is_file() || t.is_symlink() => files.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ignores_vcs_dependencies_and_editor_files() {
        let root = Path::new("/app");
        assert!(is_relevant(root, Path::new("/app/index.mjs")));
        assert!(is_relevant(root, Path::new("/app/src/lib.mjs")));
        assert!(!is_relevant(root, Path::new("/app/.git/index")));
        assert!(!is_relevant(
            root,
            Path::new("/app/node_modules/x/index.js")
        ));
        assert!(!is_relevant(root, Path::new("/app/node_modules")));
        assert!(!is_relevant(root, Path::new("/app/.index.mjs.swp")));
        assert!(!is_relevant(root, Path::new("/app/index.mjs~")));
        assert!(!is_relevant(root, Path::new("/app/.#index.mjs")));
        assert!(!is_relevant(root, Path::new("/app/#index.mjs#")));
        assert!(!is_relevant(root, Path::new("/app/4913")));
    }
}
