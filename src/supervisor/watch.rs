//! One recursive file watcher per app (DESIGN §5).
//!
//! Events from `notify` are filtered by a [`Filter`], coalesced over
//! [`DEBOUNCE`], and then checked against a content hash of the files the
//! filter lets through, so a save that changes nothing (or a burst of fifty
//! saves) becomes at most one [`Changed`] for the supervisor. Editors that
//! save by writing a temp file and renaming it over the original produce a
//! rename event on the original's name, which counts. Nothing here runs on
//! the request path.
//!
//! What counts as the app's source, in order (a later rule wins, as in git):
//! - never `.git`, `node_modules` and the like ([`IGNORED_DIRS`]) or editor
//!   swap and temp files;
//! - not the data an app writes beside its code ([`DEFAULT_IGNORES`]: logs,
//!   SQLite files and their journals, pid files, `log/`, `logs/`, `tmp/`,
//!   `uploads/`): an app appending to its log must not roll itself on every
//!   request;
//! - not what the app's top-level `.gitignore`, then `.ripignore`, ignore
//!   (a `!pattern` there re-includes a default), then `--watch-ignore`;
//! - with `--watch`, only paths matching one of its globs;
//! - the app's entry file always counts.
//!
//! The ignore files are re-read after every burst, so an edit to them
//! applies to the next one.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use ignore::gitignore::{Gitignore, GitignoreBuilder};
use notify::{RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use crate::config::WatchRules;

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

/// Files an app commonly writes into its own directory while it serves
/// (`.gitignore` syntax). Changes to them never roll unless a `.ripignore`
/// re-includes them (`!*.db`) or `--watch` names them.
pub const DEFAULT_IGNORES: [&str; 13] = [
    "*.log",
    "*.db",
    "*.sqlite",
    "*.sqlite3",
    "*-journal",
    "*-wal",
    "*-shm",
    "*.pid",
    "log/",
    "logs/",
    "tmp/",
    "uploads/",
    "*.sock",
];

/// The app's own ignore files, read from its top directory in this order.
const IGNORE_FILES: [&str; 2] = [".gitignore", ".ripignore"];

/// The app's files changed (in content) since the last notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changed;

/// What to watch: the app's directory, its entry file, and the user's rules.
#[derive(Debug, Clone)]
pub struct Target {
    pub dir: PathBuf,
    pub entry: PathBuf,
    pub rules: WatchRules,
}

/// Which paths under an app's directory count as its source.
pub struct Filter {
    root: PathBuf,
    /// The entry file, relative to `root` (always counts).
    entry: Option<PathBuf>,
    ignore: Gitignore,
    /// `--watch`: a path must match one of these globs.
    only: Option<Gitignore>,
}

impl Filter {
    /// Builds the filter for `target`, reading the app's ignore files now.
    /// A bad line in an ignore file is logged and skipped; the rest apply.
    pub fn load(target: &Target) -> Filter {
        let root = &target.dir;
        let mut builder = GitignoreBuilder::new(root);
        for line in DEFAULT_IGNORES {
            let _ = builder.add_line(None, line);
        }
        for name in IGNORE_FILES {
            let path = root.join(name);
            if !path.is_file() {
                continue;
            }
            if let Some(e) = builder.add(&path) {
                tracing::warn!(
                    file = %path.display(),
                    error = %e,
                    "a line of this ignore file is not a glob; it is skipped, the rest apply"
                );
            }
        }
        for line in &target.rules.ignore {
            // Checked when the configuration was built.
            let _ = builder.add_line(None, line);
        }
        let ignore = built(builder, root);
        let only = (!target.rules.watch.is_empty()).then(|| {
            let mut builder = GitignoreBuilder::new(root);
            for line in &target.rules.watch {
                let _ = builder.add_line(None, line);
            }
            built(builder, root)
        });
        Filter {
            root: root.clone(),
            entry: target.entry.strip_prefix(root).ok().map(Path::to_path_buf),
            ignore,
            only,
        }
    }

    /// Whether a change to `path` (a directory if `is_dir`) can affect the app.
    pub fn is_relevant(&self, path: &Path, is_dir: bool) -> bool {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        if !is_source_name(relative) {
            return false;
        }
        if relative.as_os_str().is_empty() || relative.has_root() {
            // The app directory itself, or a path outside it: the hash decides.
            return true;
        }
        if self.entry.as_deref() == Some(relative) {
            return true;
        }
        if self
            .ignore
            .matched_path_or_any_parents(relative, is_dir)
            .is_ignore()
        {
            return false;
        }
        match &self.only {
            // A directory is walked into: files in it may match.
            Some(only) if !is_dir => only
                .matched_path_or_any_parents(relative, false)
                .is_ignore(),
            _ => true,
        }
    }
}

/// A compiled matcher; one that cannot be built matches nothing, loudly.
fn built(builder: GitignoreBuilder, root: &Path) -> Gitignore {
    builder.build().unwrap_or_else(|e| {
        tracing::warn!(
            app = %root.display(),
            error = %e,
            "cannot compile the watch rules; watching every file but .git, node_modules and editor files"
        );
        Gitignore::empty()
    })
}

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

/// Starts watching `target`; content changes are sent on `changes`.
pub fn watch(target: Target, changes: mpsc::Sender<Changed>) -> notify::Result<AppWatcher> {
    let (raw_tx, raw_rx) = mpsc::channel::<()>(1);
    let filter = Arc::new(ArcSwap::from_pointee(Filter::load(&target)));
    let event_filter = filter.clone();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        if matches!(event.kind, notify::EventKind::Access(_)) {
            return;
        }
        let filter = event_filter.load();
        if event
            .paths
            .iter()
            .any(|p| filter.is_relevant(p, p.is_dir()))
        {
            // A full channel already holds a wake-up: nothing is lost.
            let _ = raw_tx.try_send(());
        }
    })?;
    watcher.watch(&target.dir, RecursiveMode::Recursive)?;
    let task = tokio::spawn(debounce(target, filter, raw_rx, changes));
    Ok(AppWatcher {
        _watcher: watcher,
        task,
    })
}

async fn debounce(
    target: Target,
    filter: Arc<ArcSwap<Filter>>,
    mut raw: mpsc::Receiver<()>,
    changes: mpsc::Sender<Changed>,
) {
    let mut last_hash = hash_tree(filter.load_full()).await;
    while raw.recv().await.is_some() {
        // Coalesce: wait until the tree has been quiet for DEBOUNCE (at most MAX_DEBOUNCE).
        let burst_end = tokio::time::Instant::now() + MAX_DEBOUNCE;
        while tokio::time::Instant::now() < burst_end
            && tokio::time::timeout(DEBOUNCE, raw.recv())
                .await
                .is_ok_and(|event| event.is_some())
        {}
        // The ignore files may have changed in this burst.
        filter.store(Arc::new(Filter::load(&target)));
        let hash = hash_tree(filter.load_full()).await;
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

/// Whether no component of `relative` is a never-watched directory and its
/// last is no editor file.
fn is_source_name(relative: &Path) -> bool {
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
async fn hash_tree(filter: Arc<Filter>) -> u64 {
    tokio::task::spawn_blocking(move || {
        let mut files = Vec::new();
        collect_files(&filter, &filter.root, &mut files);
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

fn collect_files(filter: &Filter, dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if files.len() >= MAX_FILES {
            return;
        }
        let path = entry.path();
        let Ok(file_type) = entry.file_type() else {
            continue;
        };
        if !filter.is_relevant(&path, file_type.is_dir()) {
            continue;
        }
        match file_type {
            t if t.is_dir() => collect_files(filter, &path, files),
            t if t.is_file() || t.is_symlink() => files.push(path),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(root: &Path, watch: &[&str], ignore: &[&str]) -> Filter {
        Filter::load(&Target {
            dir: root.to_path_buf(),
            entry: root.join("index.mjs"),
            rules: WatchRules {
                watch: watch.iter().map(|g| g.to_string()).collect(),
                ignore: ignore.iter().map(|g| g.to_string()).collect(),
            },
        })
    }

    fn relevant(filter: &Filter, path: &str) -> bool {
        filter.is_relevant(&filter.root.join(path), path.ends_with('/'))
    }

    #[test]
    fn ignores_vcs_dependencies_and_editor_files() {
        let f = filter(Path::new("/app"), &[], &[]);
        assert!(relevant(&f, "index.mjs"));
        assert!(relevant(&f, "src/lib.mjs"));
        assert!(!relevant(&f, ".git/index"));
        assert!(!relevant(&f, "node_modules/x/index.js"));
        assert!(!relevant(&f, "node_modules"));
        assert!(!relevant(&f, ".index.mjs.swp"));
        assert!(!relevant(&f, "index.mjs~"));
        assert!(!relevant(&f, ".#index.mjs"));
        assert!(!relevant(&f, "#index.mjs#"));
        assert!(!relevant(&f, "4913"));
    }

    #[test]
    fn data_the_app_writes_is_ignored_by_default() {
        let f = filter(Path::new("/app"), &[], &[]);
        for path in [
            "app.log",
            "data/app.log",
            "app.sqlite",
            "db/app.sqlite3",
            "app.db",
            "app.db-journal",
            "app.db-wal",
            "app.db-shm",
            "server.pid",
            "logs/today.txt",
            "tmp/cache/x.mjs",
            "uploads/photo.jpg",
        ] {
            assert!(!relevant(&f, path), "{path} should be ignored");
        }
        assert!(relevant(&f, "lib/db.mjs"));
        assert!(relevant(&f, "catalog.json"));
    }

    #[test]
    fn ignore_files_add_ignores_and_can_re_include() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "dist/\n.env\n").unwrap();
        std::fs::write(dir.path().join(".ripignore"), "state.json\n!keep.log\n").unwrap();
        let f = filter(dir.path(), &[], &[]);
        assert!(!relevant(&f, "dist/bundle.js"));
        assert!(!relevant(&f, ".env"));
        assert!(!relevant(&f, "state.json"));
        assert!(!relevant(&f, "sub/state.json"));
        assert!(relevant(&f, "keep.log"), ".ripignore re-includes a default");
        assert!(!relevant(&f, "other.log"));
        assert!(relevant(&f, "index.mjs"));
    }

    #[test]
    fn the_entry_file_always_counts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".gitignore"), "*.mjs\n").unwrap();
        let f = filter(dir.path(), &["*.ts"], &["index.mjs"]);
        assert!(relevant(&f, "index.mjs"));
        assert!(!relevant(&f, "other.mjs"));
    }

    #[test]
    fn watch_globs_limit_and_watch_ignore_adds() {
        let f = filter(Path::new("/app"), &["*.mjs", "config/"], &["generated/"]);
        assert!(relevant(&f, "lib/x.mjs"));
        assert!(relevant(&f, "config/app.toml"));
        assert!(relevant(&f, "lib/"), "directories are walked into");
        assert!(!relevant(&f, "README.md"));
        assert!(!relevant(&f, "generated/x.mjs"));
        assert!(!relevant(&f, "data/app.log"));
    }
}
