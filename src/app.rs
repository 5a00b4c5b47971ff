//! App resolution: from the path the user gave to an entry and the loader that runs it.
//!
//! `rip-server PATH` accepts a directory or a file (DESIGN §2). A directory's
//! entry is, in order: the `entry` key of its `rip.toml`, `index.mjs`,
//! `index.js`, or an executable `serve`. A file is the entry itself. A
//! JavaScript entry is run by the Node loader (embedded in the binary, see
//! `loaders/node.mjs`); an executable entry speaks the worker protocol itself.
//!
//! Resolution errors list every path that was tried, so the operator sees at
//! once what rip-server looked for.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The Node loader, written to the runtime directory at start.
pub const NODE_LOADER: &str = include_str!("../loaders/node.mjs");

/// A resolved app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    /// The app's directory: the workers' cwd and the watched tree.
    pub dir: PathBuf,
    /// The entry file (absolute).
    pub entry: PathBuf,
    pub kind: EntryKind,
    /// The directory's base name; the default instance name.
    pub name: String,
}

/// How an entry is started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A module exporting a fetch handler, run by the Node loader.
    JsModule,
    /// A program that speaks the worker protocol itself.
    Executable,
}

impl EntryKind {
    /// What runs it, naming the runtime actually used: `fetch handler (node
    /// loader)`, `fetch handler (bun loader)`, `executable`.
    pub fn describe(self, runtime: crate::cli::JsRuntime) -> String {
        match self {
            EntryKind::JsModule => format!("fetch handler ({} loader)", runtime.program()),
            EntryKind::Executable => "executable".to_string(),
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EntryKind::JsModule => "fetch handler (node loader)",
            EntryKind::Executable => "executable",
        })
    }
}

/// Why an app could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("no app at '{0}': no such file or directory")]
    Missing(PathBuf),
    #[error(
        "no app entry in '{dir}': looked for {tried}; \
         add an index.mjs exporting a fetch handler, or an executable ./serve"
    )]
    NoEntry { dir: PathBuf, tried: String },
    #[error(
        "'{0}' is neither a JavaScript module (.mjs, .js) nor an executable file; \
         make it executable (chmod +x) if it speaks the worker protocol"
    )]
    NotRunnable(PathBuf),
    #[error("cannot read '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{path}': {message}")]
    Manifest { path: PathBuf, message: String },
}

/// The optional per-app manifest.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    entry: Option<PathBuf>,
}

impl App {
    /// Resolves `path` (a directory or an entry file) relative to the current directory.
    pub fn resolve(path: &Path) -> Result<App, ResolveError> {
        let abs = std::path::absolute(path).map_err(|source| ResolveError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let meta = match std::fs::metadata(&abs) {
            Ok(meta) => meta,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ResolveError::Missing(path.to_path_buf()))
            }
            Err(source) => return Err(ResolveError::Io { path: abs, source }),
        };
        let abs = abs.canonicalize().map_err(|source| ResolveError::Io {
            path: abs.clone(),
            source,
        })?;
        if meta.is_dir() {
            Self::from_dir(abs)
        } else {
            Self::from_file(abs)
        }
    }

    fn from_dir(dir: PathBuf) -> Result<App, ResolveError> {
        let manifest = dir.join("rip.toml");
        if manifest.is_file() {
            if let Some(entry) = read_manifest_entry(&manifest)? {
                let entry = dir.join(entry);
                return Self::from_file(entry.canonicalize().map_err(|_| {
                    ResolveError::Manifest {
                        path: manifest.clone(),
                        message: format!("entry '{}' does not exist", entry.display()),
                    }
                })?)
                .map(|app| App {
                    dir: dir.clone(),
                    name: base_name(&dir),
                    ..app
                });
            }
        }
        let candidates = ["index.mjs", "index.js", "serve"];
        for name in candidates {
            let entry = dir.join(name);
            if !entry.is_file() {
                continue;
            }
            if let Some(kind) = entry_kind(&entry) {
                return Ok(App {
                    name: base_name(&dir),
                    dir,
                    entry,
                    kind,
                });
            }
        }
        let tried = std::iter::once(format!("{} (entry key)", manifest.display()))
            .chain(candidates.iter().map(|c| dir.join(c).display().to_string()))
            .collect::<Vec<_>>()
            .join(", ");
        Err(ResolveError::NoEntry { dir, tried })
    }

    fn from_file(entry: PathBuf) -> Result<App, ResolveError> {
        let kind = entry_kind(&entry).ok_or_else(|| ResolveError::NotRunnable(entry.clone()))?;
        // Canonical paths of regular files always have a parent.
        let dir = entry.parent().unwrap_or(Path::new("/")).to_path_buf();
        Ok(App {
            name: base_name(&dir),
            dir,
            entry,
            kind,
        })
    }
}

fn read_manifest_entry(manifest: &Path) -> Result<Option<PathBuf>, ResolveError> {
    let text = std::fs::read_to_string(manifest).map_err(|source| ResolveError::Io {
        path: manifest.to_path_buf(),
        source,
    })?;
    let parsed: Manifest = toml::from_str(&text).map_err(|e| ResolveError::Manifest {
        path: manifest.to_path_buf(),
        message: e.message().to_string(),
    })?;
    Ok(parsed.entry)
}

fn entry_kind(path: &Path) -> Option<EntryKind> {
    let ext = path.extension().and_then(|e| e.to_str());
    if matches!(ext, Some("mjs" | "js")) {
        return Some(EntryKind::JsModule);
    }
    let executable = std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false);
    executable.then_some(EntryKind::Executable)
}

fn base_name(dir: &Path) -> String {
    dir.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "app".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_with_index_mjs() {
        let dir = tempfile::tempdir().unwrap();
        let app_dir = dir.path().join("shop");
        std::fs::create_dir(&app_dir).unwrap();
        std::fs::write(app_dir.join("index.mjs"), "export default {}").unwrap();
        let app = App::resolve(&app_dir).unwrap();
        assert_eq!(app.name, "shop");
        assert_eq!(app.kind, EntryKind::JsModule);
        assert!(app.entry.ends_with("shop/index.mjs"));
    }

    #[test]
    fn empty_directory_lists_what_was_tried() {
        let dir = tempfile::tempdir().unwrap();
        let err = App::resolve(dir.path()).unwrap_err().to_string();
        for name in ["rip.toml", "index.mjs", "index.js", "serve"] {
            assert!(err.contains(name), "{err}");
        }
    }

    #[test]
    fn manifest_names_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("rip.toml"), "entry = \"src/main.mjs\"\n").unwrap();
        std::fs::create_dir(dir.path().join("src")).unwrap();
        std::fs::write(dir.path().join("src/main.mjs"), "").unwrap();
        let app = App::resolve(dir.path()).unwrap();
        assert!(app.entry.ends_with("src/main.mjs"));
        assert_eq!(app.dir, dir.path().canonicalize().unwrap());
    }

    #[test]
    fn non_executable_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("serve.sh");
        std::fs::write(&file, "#!/bin/sh").unwrap();
        let err = App::resolve(&file).unwrap_err().to_string();
        assert!(err.contains("neither a JavaScript module"), "{err}");
    }

    #[test]
    fn missing_path() {
        let err = App::resolve(Path::new("/nonexistent/app"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no app at '/nonexistent/app': no such file or directory"
        );
    }
}
