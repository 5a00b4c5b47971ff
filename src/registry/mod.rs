//! The host registry: which host names go to which app.
//!
//! Two places can hold it, and a server uses exactly one:
//!
//! - **The registry file** `hosts.toml` in the state directory
//!   (`$STATE_DIRECTORY`, else `~/.rip`), edited by `rip-server add HOST APP`
//!   and `rip-server remove HOST` and watched by a running server, which
//!   applies each change live.
//! - **The `[hosts]` table of the `--config` file**: declarative (this is
//!   what the NixOS module writes), read-only to the commands, re-read on
//!   SIGHUP.
//!
//! Both have the same shape; paths in the config file are relative to it,
//! paths in the registry file are absolute (the commands resolve them):
//!
//! ```toml
//! [hosts."labs.example.com"]
//! app = "/srv/apps/labs/api"     # required: an app directory or entry
//! workers = 2                    # optional: 2, "auto", "half", "2x", "3x"
//! restart = "5000,600s"          # optional: the r: token without its prefix
//! reload = "process"             # optional: none, process or module
//! cert = "/etc/ssl/labs.pem"     # optional, with key: this host's certificate
//! key = "/etc/ssl/labs.key"
//!
//! [hosts."*.apps.example.com"]    # a wildcard: exactly one more label
//! app = "/srv/apps/preview"
//! ```
//!
//! Hosts that name the same app share its workers, so their settings must
//! agree. The file is written whole (temp file, fsync, rename) under a lock
//! ([`edit`]), so concurrent commands never lose an entry, and a running
//! server never reads half a file.

pub mod host;
pub mod watch;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::app::{App, ResolveError};
use crate::cli::{ReloadMode, RestartSpec, WorkerCount};
use crate::tls::CertPair;
pub use host::{request_host, HostError, HostPattern};

/// The registry file's name in the state directory.
pub const FILE_NAME: &str = "hosts.toml";

/// Where a server's registry comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The registry file, editable by `add` / `remove`, watched while serving.
    File(PathBuf),
    /// The `[hosts]` table of this config file: read-only, re-read on SIGHUP.
    Config(PathBuf),
}

impl Source {
    pub fn path(&self) -> &Path {
        match self {
            Source::File(path) | Source::Config(path) => path,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Source::File(_) => "file",
            Source::Config(_) => "config",
        }
    }
}

/// The registry file in `state_dir`.
pub fn file_in(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE_NAME)
}

/// One host's entry, as written (paths not yet resolved).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEntry {
    pub app: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<RawWorkers>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reload: Option<ReloadMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// `workers = 4` or `workers = "auto"`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
pub enum RawWorkers {
    Count(u64),
    Form(String),
}

/// The registry file: `[hosts."name"]` tables.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRegistry {
    #[serde(default)]
    pub hosts: BTreeMap<String, RawEntry>,
}

/// One host's entry, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub app: App,
    pub workers: Option<WorkerCount>,
    pub restart: Option<RestartSpec>,
    pub reload: Option<ReloadMode>,
    pub tls: Option<CertPair>,
}

/// The validated registry: host pattern → entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistrySpec {
    pub hosts: BTreeMap<HostPattern, HostEntry>,
}

/// A registry that cannot be used, naming what is wrong and where.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot read the registry {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write the registry {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("registry {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("host '{host}': {source}")]
    App { host: String, source: ResolveError },
    #[error("host '{host}': {message}")]
    Entry { host: String, message: String },
    #[error(
        "hosts '{first}' and '{second}' name the same app {app} with different settings; \
         hosts of one app share its workers, so give them the same workers, restart and reload"
    )]
    Conflict {
        first: String,
        second: String,
        app: PathBuf,
    },
    #[error(
        "host '{0}' is registered twice (as written and in another spelling of the same name)"
    )]
    Duplicate(String),
}

impl RawEntry {
    /// Validates the entry of `host`; relative paths are taken from `base`.
    pub fn validate(&self, host: &str, base: &Path) -> Result<HostEntry, RegistryError> {
        let invalid = |message: String| RegistryError::Entry {
            host: host.to_string(),
            message,
        };
        let app = App::resolve(&base.join(&self.app)).map_err(|source| RegistryError::App {
            host: host.to_string(),
            source,
        })?;
        let workers = match &self.workers {
            None => None,
            Some(RawWorkers::Count(n)) => {
                Some(WorkerCount::parse_value(&n.to_string()).map_err(invalid)?)
            }
            Some(RawWorkers::Form(form)) => Some(
                WorkerCount::parse_value(form.strip_prefix("w:").unwrap_or(form))
                    .map_err(invalid)?,
            ),
        };
        let restart = match &self.restart {
            None => None,
            Some(form) => Some(
                RestartSpec::parse_value(form.strip_prefix("r:").unwrap_or(form))
                    .map_err(invalid)?,
            ),
        };
        let tls = match (&self.cert, &self.key) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(CertPair {
                cert: base.join(cert),
                key: base.join(key),
            }),
            (Some(_), None) => return Err(invalid("cert is given without key".into())),
            (None, Some(_)) => return Err(invalid("key is given without cert".into())),
        };
        Ok(HostEntry {
            app,
            workers,
            restart,
            reload: self.reload,
            tls,
        })
    }
}

impl RawRegistry {
    /// Validates every entry (all or nothing); `base` resolves relative paths.
    pub fn validate(&self, base: &Path) -> Result<RegistrySpec, RegistryError> {
        let mut hosts = BTreeMap::new();
        let mut written: BTreeMap<HostPattern, &str> = BTreeMap::new();
        for (name, raw) in &self.hosts {
            let pattern = HostPattern::parse(name)?;
            if written.insert(pattern.clone(), name).is_some() {
                return Err(RegistryError::Duplicate(name.clone()));
            }
            hosts.insert(pattern, raw.validate(name, base)?);
        }
        let spec = RegistrySpec { hosts };
        spec.check_shared_apps()?;
        Ok(spec)
    }
}

impl RegistrySpec {
    /// Hosts of one app share its workers: their settings must agree.
    fn check_shared_apps(&self) -> Result<(), RegistryError> {
        let mut seen: BTreeMap<&Path, (&HostPattern, &HostEntry)> = BTreeMap::new();
        for (host, entry) in &self.hosts {
            match seen.get(entry.app.entry.as_path()) {
                Some((first, earlier)) if !earlier.same_settings(entry) => {
                    return Err(RegistryError::Conflict {
                        first: first.to_string(),
                        second: host.to_string(),
                        app: entry.app.entry.clone(),
                    })
                }
                Some(_) => {}
                None => {
                    seen.insert(&entry.app.entry, (host, entry));
                }
            }
        }
        Ok(())
    }
}

impl HostEntry {
    /// The settings the app's workers run with (certificates are per host).
    pub fn same_settings(&self, other: &HostEntry) -> bool {
        self.workers == other.workers
            && self.restart == other.restart
            && self.reload == other.reload
    }
}

/// Reads the registry file; a file that does not exist is an empty registry.
pub fn read_file(path: &Path) -> Result<RawRegistry, RegistryError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RawRegistry::default()),
        Err(source) => {
            return Err(RegistryError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    toml::from_str(&text).map_err(|e| RegistryError::Parse {
        path: path.to_path_buf(),
        message: toml_message(&text, &e),
    })
}

/// Loads and validates the registry file (absolute paths; relative ones are
/// taken from its directory).
pub fn load_file(path: &Path) -> Result<RegistrySpec, RegistryError> {
    let base = path.parent().unwrap_or(Path::new("/"));
    read_file(path)?.validate(base)
}

/// A TOML error as `line N: message`.
pub fn toml_message(text: &str, e: &toml::de::Error) -> String {
    let line = e.span().map(|span| {
        text.as_bytes()[..span.start.min(text.len())]
            .iter()
            .filter(|&&b| b == b'\n')
            .count()
            + 1
    });
    match line {
        Some(line) => format!("line {line}: {}", e.message()),
        None => e.message().to_string(),
    }
}

/// Changes the registry file: under an exclusive lock (`hosts.toml.lock`
/// beside it), reads it, lets `change` edit it, and writes it whole (temp
/// file, fsync, rename, fsync of the directory). Concurrent edits are
/// serialized, so none is lost; a reader sees the old file or the new one.
pub fn edit<T>(
    path: &Path,
    change: impl FnOnce(&mut RawRegistry) -> Result<T, RegistryError>,
) -> Result<T, RegistryError> {
    let write_error = |source| RegistryError::Write {
        path: path.to_path_buf(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(write_error)?;
    let lock_path = path.with_extension("toml.lock");
    let lock_file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(write_error)?;
    let _lock = nix::fcntl::Flock::lock(lock_file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, errno)| write_error(errno.into()))?;
    let mut registry = read_file(path)?;
    let result = change(&mut registry)?;
    let text = toml::to_string_pretty(&registry)
        .map_err(|e| write_error(std::io::Error::other(e.to_string())))?;
    let temp = path.with_extension(format!("toml.tmp{}", std::process::id()));
    let written = (|| {
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(HEADER.as_bytes())?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(write_error)?;
    Ok(result)
}

/// The first lines of a registry file the commands write.
const HEADER: &str = "# The rip-server host registry: written by 'rip-server add' and 'rip-server remove'.\n\
# A running server applies changes to this file live. Format: docs/architecture.md (host registry).\n\n";

#[cfg(test)]
mod tests {
    use super::*;

    fn app_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.mjs"), "export default {}").unwrap();
        dir
    }

    fn entry(app: &Path) -> RawEntry {
        RawEntry {
            app: app.to_path_buf(),
            workers: None,
            restart: None,
            reload: None,
            cert: None,
            key: None,
        }
    }

    #[test]
    fn edits_are_written_whole_and_read_back() {
        let state = tempfile::tempdir().unwrap();
        let app = app_dir();
        let path = file_in(state.path());
        edit(&path, |r| {
            r.hosts.insert("Labs.Example.com".into(), entry(app.path()));
            Ok(())
        })
        .unwrap();
        let spec = load_file(&path).unwrap();
        let (host, entry) = spec.hosts.iter().next().unwrap();
        assert_eq!(host.to_string(), "labs.example.com");
        assert_eq!(entry.app.dir, app.path().canonicalize().unwrap());
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# The rip-server host registry"), "{text}");
        assert!(!state.path().join("hosts.toml.tmp").exists());
    }

    #[test]
    fn a_bad_registry_names_the_host_and_the_problem() {
        let app = app_dir();
        let mut raw = RawRegistry::default();
        raw.hosts.insert("a.example:80".into(), entry(app.path()));
        let err = raw.validate(Path::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("a.example:80") && err.contains("port"),
            "{err}"
        );

        let mut raw = RawRegistry::default();
        raw.hosts
            .insert("a.example".into(), entry(Path::new("/no/such/app")));
        let err = raw.validate(Path::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("a.example") && err.contains("/no/such/app"),
            "{err}"
        );

        let mut raw = RawRegistry::default();
        let mut half = entry(app.path());
        half.cert = Some("c.pem".into());
        raw.hosts.insert("a.example".into(), half);
        let err = raw.validate(Path::new("/")).unwrap_err().to_string();
        assert!(err.contains("cert is given without key"), "{err}");

        let mut raw = RawRegistry::default();
        raw.hosts.insert("a.example".into(), entry(app.path()));
        raw.hosts.insert("A.EXAMPLE".into(), entry(app.path()));
        assert!(matches!(
            raw.validate(Path::new("/")),
            Err(RegistryError::Duplicate(_))
        ));

        let mut raw = RawRegistry::default();
        let mut two = entry(app.path());
        two.workers = Some(RawWorkers::Count(2));
        raw.hosts.insert("a.example".into(), entry(app.path()));
        raw.hosts.insert("b.example".into(), two);
        let err = raw.validate(Path::new("/")).unwrap_err().to_string();
        assert!(
            err.contains("same app") && err.contains("b.example"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_file_is_an_empty_registry_and_a_malformed_one_says_where() {
        let state = tempfile::tempdir().unwrap();
        let path = file_in(state.path());
        assert_eq!(load_file(&path).unwrap(), RegistrySpec::default());
        std::fs::write(&path, "[hosts.\"a.example\"]\napp = 3\n").unwrap();
        let err = load_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("hosts.toml") && err.contains("line 2"),
            "{err}"
        );
    }
}
