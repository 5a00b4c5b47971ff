//! The validated configuration (ripgrep's "HiArgs" stage).
//!
//! [`Config::build`] layers, for every setting, the command-line flag over the
//! environment over the TOML config file over the default. This is the only
//! place defaults live. The result is a [`Config`] whose values are already
//! checked (an app that resolves, a worker count ≥ 1, durations in range), so
//! the rest of the server never re-validates.
//!
//! Config file keys are the flag names with `_` for `-`, plus `app`, `workers`,
//! `restart` and `listen` for the positional tokens:
//!
//! ```toml
//! app = "apps/api"            # relative to this file
//! workers = 4                 # or "auto", "half", "2x", "3x"
//! restart = "5000,600s,10r"   # the r: token without its prefix
//! listen = "http:5002"        # http, http:PORT, https, https:PORT or a bare port
//! reload = "process"
//! watch_ignore = ["data/"]    # .gitignore-style globs; also watch = ["*.mjs"]
//! max_queue = 8192
//! queue_timeout_ms = 2000
//! json_logging = false
//! ```

use std::net::IpAddr;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ipnet::IpNet;
use std::collections::BTreeMap;

use crate::privileges::{PrivilegeError, RunAs};
use crate::registry::{self, RawEntry, RawRegistry, RegistryError, RegistrySpec};

use crate::app::{App, ResolveError};
use crate::cli::{
    ArgsError, JsRuntime, ListenSpec, ReloadMode, RestartSpec, RuntimeChoice, ServeArgs, Token,
};
use crate::cli::{Cli, WorkerCount};
use crate::tls::{CertPair, TlsSource};

/// Everything the server needs to run, validated.
#[derive(Debug, Clone)]
pub struct Config {
    /// Instance name: control socket, worker socket and log prefix.
    pub name: String,
    /// The default app: every host when no host is registered, unregistered
    /// hosts otherwise. `None` (hosts registered, no app given): those get 404.
    pub app: Option<App>,
    /// The host registry and where it comes from.
    pub registry: RegistryConfig,
    /// `GET /status` on the public port answers from the server itself.
    pub public_status: bool,
    pub workers: usize,
    pub restart: RestartPolicy,
    pub reload: ReloadMode,
    /// Which of an app's files can start a reload.
    pub watch: WatchRules,
    pub listen: Listen,
    /// Addresses the listeners bind (`--bind`); empty: every interface.
    pub bind: Vec<IpAddr>,
    pub limits: Limits,
    pub timeouts: Timeouts,
    /// Peers whose forwarding headers are believed.
    pub trusted_proxies: TrustedProxies,
    /// Run workers as this user and group (`--user`/`--group`).
    pub run_as: Option<RunAs>,
    pub logging: Logging,
    pub js_runtime: JsRuntime,
    /// Runtime threads of the server process itself.
    pub threads: usize,
    /// Private (0700) directory for the control and worker sockets.
    pub runtime_dir: PathBuf,
    /// The file the config came from, re-read on SIGHUP.
    pub config_file: Option<PathBuf>,
    /// How long a stop keeps serving with `/server` answering 503 (draining).
    pub shutdown_delay: Duration,
}

/// The host registry a server starts with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryConfig {
    pub source: registry::Source,
    pub spec: RegistrySpec,
}

/// When a worker is recycled; `None` means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestartPolicy {
    pub max_requests: Option<NonZeroU64>,
    pub max_age: Option<Duration>,
    pub max_reloads: Option<NonZeroU64>,
}

/// Which of an app's files can start a reload (`--watch`, `--watch-ignore`),
/// in `.gitignore` syntax relative to the app directory. The watcher adds
/// its own default ignores and the app's `.gitignore` and `.ripignore`
/// (`supervisor/watch.rs`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchRules {
    /// Only paths matching one of these can; empty: every path not ignored.
    pub watch: Vec<String>,
    /// More paths to ignore, after the defaults and the app's ignore files.
    pub ignore: Vec<String>,
}

impl WatchRules {
    /// Checks every glob, so a typo stops the start (exit 2) instead of
    /// silently watching too much or too little.
    fn checked(watch: Vec<String>, ignore: Vec<String>) -> Result<WatchRules, ConfigError> {
        for (setting, globs) in [("--watch", &watch), ("--watch-ignore", &ignore)] {
            for glob in globs {
                check_glob(glob).map_err(|message| ConfigError::Invalid { setting, message })?;
            }
        }
        Ok(WatchRules { watch, ignore })
    }
}

/// `--bind` values: IP addresses, IPv6 with or without brackets.
fn parse_bind(values: &[String]) -> Result<Vec<IpAddr>, ConfigError> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for value in values {
        let text = value.trim();
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        let address: IpAddr = bare.parse().map_err(|_| ConfigError::Invalid {
            setting: "--bind",
            message: format!(
                "'{value}' is not an IP address: expected e.g. 127.0.0.1, ::1 or [::1] \
                 (the port comes from http:PORT or PORT)"
            ),
        })?;
        if !addresses.contains(&address) {
            addresses.push(address);
        }
    }
    Ok(addresses)
}

/// Whether `glob` is a valid `.gitignore` line.
fn check_glob(glob: &str) -> Result<(), String> {
    if glob.trim().is_empty() || glob.trim_start().starts_with('#') {
        return Err(format!(
            "'{glob}' is not a glob: expected a .gitignore-style pattern such as '*.mjs' or 'src/'"
        ));
    }
    let mut builder = ignore::gitignore::GitignoreBuilder::new("/");
    builder
        .add_line(None, glob)
        .map(|_| ())
        .map_err(|e| format!("'{glob}' is not a glob: {e}"))
}

/// The public listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// Plain HTTP on this port (0: the kernel picks); no TLS, no redirect.
    Http(PortChoice),
    /// HTTPS, with an optional plain-HTTP redirect listener.
    Https(Https),
}

/// The HTTPS listener's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Https {
    pub port: PortChoice,
    pub redirect: Redirect,
    pub tls: TlsSource,
    pub hsts: bool,
}

/// Whether plain HTTP is answered with a redirect to HTTPS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirect {
    Off,
    /// Redirect from this port, if it can be bound.
    From(u16),
}

/// A fixed port, or "80 if free, else the first free port from 5000 up".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortChoice {
    Fixed(u16),
    FirstFree { preferred: u16, fallback_from: u16 },
}

/// Bounds on what clients may send, hold and wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_queue: usize,
    pub max_body_bytes: u64,
    pub max_header_bytes: usize,
    /// Request bodies up to this size are read whole before a worker is taken.
    pub upload_buffer_bytes: usize,
    /// How much of one response may wait in the server for a slow client.
    pub response_buffer_bytes: usize,
    /// Slowest accepted upload, bytes per second over [`RATE_WINDOW`]; 0: no check.
    pub min_upload_rate: u64,
    /// Slowest accepted download while a client holds a worker; 0: no check.
    pub min_download_rate: u64,
    /// Client connections open at once (`None`: from the open-file limit).
    pub max_connections: Option<usize>,
    /// Recycle a worker whose resident memory passes this many bytes.
    pub max_rss: Option<u64>,
}

/// The window the minimum client rates are measured over.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Every wait the server makes has a bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub queue: Duration,
    pub connect: Duration,
    pub read: Duration,
    pub boot: Duration,
    pub grace: Duration,
    pub header: Duration,
    /// An HTTP/2 connection with no open stream is closed after this.
    pub idle: Duration,
    /// A client that takes no response bytes for this long is disconnected.
    pub send: Duration,
    /// A worker that pauses this long mid-body is cut off and replaced.
    pub body_idle: Duration,
    /// The longest wait between restarts of a failing worker slot.
    pub max_backoff: Duration,
    /// How long a worker may stay busy with a request whose client left or
    /// got 504 before it is replaced.
    pub hung: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Logging {
    pub json: bool,
    pub access_log: bool,
    /// Keep query strings in the access log (`--log-query`).
    pub query: bool,
}

/// The defaults, kept from the seed (DESIGN §6).
pub mod defaults {
    pub const MAX_REQUESTS: u64 = 10_000;
    pub const MAX_SECONDS: u64 = 3_600;
    pub const MAX_RELOADS: u64 = 10;
    pub const MAX_QUEUE: usize = 8_192;
    pub const QUEUE_TIMEOUT_MS: u64 = 2_000;
    pub const CONNECT_TIMEOUT_MS: u64 = 200;
    pub const READ_TIMEOUT_MS: u64 = 5_000;
    pub const BOOT_TIMEOUT_MS: u64 = 30_000;
    pub const GRACE_MS: u64 = 10_000;
    pub const HEADER_TIMEOUT_MS: u64 = 30_000;
    pub const MAX_BODY_BYTES: u64 = 100 * 1024 * 1024;
    pub const MAX_HEADER_BYTES: usize = 64 * 1024;
    pub const IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const SEND_TIMEOUT_MS: u64 = 60_000;
    pub const BODY_IDLE_TIMEOUT_MS: u64 = 60_000;
    pub const MAX_BACKOFF_MS: u64 = 30_000;
    pub const HUNG_TIMEOUT_MS: u64 = 60_000;
    pub const UPLOAD_BUFFER_BYTES: usize = 64 * 1024;
    pub const RESPONSE_BUFFER_BYTES: usize = 1024 * 1024;
    pub const MIN_UPLOAD_RATE: u64 = 4096;
    pub const MIN_DOWNLOAD_RATE: u64 = 4096;
    pub const HTTP_PORT: u16 = 80;
    pub const HTTPS_PORT: u16 = 443;
    pub const FALLBACK_PORT_FROM: u16 = 5_000;
}

/// A configuration problem, always naming the bad value and where it came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Args(#[from] ArgsError),
    #[error(transparent)]
    App(#[from] ResolveError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Privilege(#[from] PrivilegeError),
    #[error("cannot read config file '{path}': {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file '{path}': {message}")]
    ParseFile { path: PathBuf, message: String },
    #[error("environment variable {var}='{value}': {expected}")]
    Env {
        var: &'static str,
        value: String,
        expected: String,
    },
    #[error("{setting}: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
    #[error(
        "{flag} applies only to HTTPS, but '{listen}' asks for plain HTTP; \
         drop '{listen}' to serve HTTPS, or drop {flag}"
    )]
    TlsFlagWithHttp { flag: &'static str, listen: String },
}

/// The TOML config file; every key is optional.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    app: Option<PathBuf>,
    workers: Option<FileWorkers>,
    restart: Option<String>,
    listen: Option<FileListen>,
    bind: Option<Vec<String>>,
    reload: Option<ReloadMode>,
    watch: Option<Vec<String>>,
    watch_ignore: Option<Vec<String>>,
    max_queue: Option<usize>,
    queue_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    read_timeout_ms: Option<u64>,
    boot_timeout_ms: Option<u64>,
    grace_ms: Option<u64>,
    shutdown_delay_ms: Option<u64>,
    max_body_bytes: Option<u64>,
    max_header_bytes: Option<usize>,
    header_timeout_ms: Option<u64>,
    idle_timeout_ms: Option<u64>,
    send_timeout_ms: Option<u64>,
    body_idle_timeout_ms: Option<u64>,
    max_backoff_ms: Option<u64>,
    hung_timeout_ms: Option<u64>,
    upload_buffer_bytes: Option<usize>,
    response_buffer_bytes: Option<usize>,
    min_upload_rate: Option<u64>,
    min_download_rate: Option<u64>,
    max_connections: Option<usize>,
    trusted_proxies: Option<Vec<String>>,
    max_rss: Option<FileSize>,
    user: Option<String>,
    group: Option<String>,
    no_public_status: Option<bool>,
    /// The declarative host registry (`[hosts."name"]`).
    hosts: Option<BTreeMap<String, RawEntry>>,
    runtime: Option<RuntimeChoice>,
    threads: Option<usize>,
    json_logging: Option<bool>,
    no_access_log: Option<bool>,
    log_query: Option<bool>,
    name: Option<String>,
    https_port: Option<u16>,
    cert: Option<OneOrMany>,
    key: Option<OneOrMany>,
    auto_tls: Option<bool>,
    hsts: Option<bool>,
    no_redirect_http: Option<bool>,
    redirect_port: Option<u16>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(PathBuf),
    Many(Vec<PathBuf>),
}

impl OneOrMany {
    fn paths(&self, base: &Path) -> Vec<PathBuf> {
        match self {
            OneOrMany::One(path) => vec![base.join(path)],
            OneOrMany::Many(paths) => paths.iter().map(|p| base.join(p)).collect(),
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum FileWorkers {
    Count(u64),
    Form(String),
}

/// `max_rss = 536870912` or `max_rss = "512M"`.
#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum FileSize {
    Bytes(u64),
    Form(String),
}

#[derive(Debug, serde::Deserialize)]
#[serde(untagged)]
enum FileListen {
    Port(u16),
    Form(String),
}

/// Where environment variables come from (the process, or a map in tests).
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String>> Env for F {
    fn var(&self, name: &str) -> Option<String> {
        self(name)
    }
}

impl Config {
    /// Builds the configuration for serving from the command line, `env` and
    /// the config file (if `--config` names one).
    pub fn build(cli: &Cli, args: &ServeArgs, env: &dyn Env) -> Result<Config, ConfigError> {
        let (file, file_dir) = match &cli.config {
            Some(path) => (
                read_file_config(path)?,
                path.parent().map(Path::to_path_buf),
            ),
            None => (FileConfig::default(), None),
        };
        let layers = Layers {
            cli,
            args,
            env,
            file: &file,
            file_dir: file_dir.clone().unwrap_or_default(),
        };

        let registry = match (&file.hosts, &cli.config) {
            (Some(hosts), Some(path)) => {
                let raw = RawRegistry {
                    hosts: hosts.clone(),
                };
                let base = file_dir.clone().unwrap_or_default();
                RegistryConfig {
                    spec: raw.validate(&base)?,
                    source: registry::Source::Config(path.clone()),
                }
            }
            _ => {
                let path = registry::file_in(&state_dir(env));
                RegistryConfig {
                    spec: registry::load_file(&path)?,
                    source: registry::Source::File(path),
                }
            }
        };
        // The default app: named, or the current directory when no host is
        // registered (with hosts, unregistered names then get 404).
        let app_path = match (&args.app, &file.app) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(path)) => Some(file_dir.unwrap_or_default().join(path)),
            (None, None) if registry.spec.hosts.is_empty() => Some(PathBuf::from(".")),
            (None, None) => None,
        };
        let app = app_path.as_deref().map(App::resolve).transpose()?;
        let name = match cli.name.clone().or_else(|| file.name.clone()) {
            Some(name) => validate_name(name)?,
            None => app
                .as_ref()
                .map_or_else(|| "rip-server".to_string(), |app| sanitize_name(&app.name)),
        };

        Ok(Config {
            workers: layers.workers()?,
            restart: layers.restart()?,
            reload: layers.reload()?,
            watch: layers.watch()?,
            listen: layers.listen()?,
            bind: parse_bind(if cli.bind.is_empty() {
                file.bind.as_deref().unwrap_or_default()
            } else {
                &cli.bind
            })?,
            limits: Limits {
                max_queue: layers.number(
                    cli.max_queue,
                    "RIP_MAX_QUEUE",
                    file.max_queue,
                    defaults::MAX_QUEUE,
                )?,
                max_body_bytes: layers.number(
                    cli.max_body_bytes,
                    "",
                    file.max_body_bytes,
                    defaults::MAX_BODY_BYTES,
                )?,
                max_header_bytes: layers.header_bytes()?,
                upload_buffer_bytes: layers.bounded(
                    "--upload-buffer-bytes",
                    cli.upload_buffer_bytes,
                    file.upload_buffer_bytes,
                    defaults::UPLOAD_BUFFER_BYTES,
                    0..=64 * 1024 * 1024,
                )?,
                response_buffer_bytes: layers.bounded(
                    "--response-buffer-bytes",
                    cli.response_buffer_bytes,
                    file.response_buffer_bytes,
                    defaults::RESPONSE_BUFFER_BYTES,
                    0..=1024 * 1024 * 1024,
                )?,
                min_upload_rate: cli
                    .min_upload_rate
                    .or(file.min_upload_rate)
                    .unwrap_or(defaults::MIN_UPLOAD_RATE),
                min_download_rate: cli
                    .min_download_rate
                    .or(file.min_download_rate)
                    .unwrap_or(defaults::MIN_DOWNLOAD_RATE),
                max_rss: match (&cli.max_rss, &file.max_rss) {
                    (Some(form), _) | (None, Some(FileSize::Form(form))) => {
                        Some(parse_size(form).map_err(|message| ConfigError::Invalid {
                            setting: "--max-rss",
                            message,
                        })?)
                    }
                    (None, Some(FileSize::Bytes(bytes))) => Some(*bytes),
                    (None, None) => None,
                },
                max_connections: match cli.max_connections.or(file.max_connections) {
                    Some(0) => {
                        return Err(ConfigError::Invalid {
                            setting: "--max-connections",
                            message: "0 would refuse every client: expected 1 or more".into(),
                        })
                    }
                    other => other,
                },
            },
            trusted_proxies: TrustedProxies::parse(if cli.trusted_proxies.is_empty() {
                file.trusted_proxies.as_deref().unwrap_or_default()
            } else {
                &cli.trusted_proxies
            })?,
            timeouts: layers.timeouts()?,
            logging: Logging {
                json: cli.json_logging || file.json_logging.unwrap_or(false),
                access_log: !(cli.no_access_log || file.no_access_log.unwrap_or(false)),
                query: cli.log_query || file.log_query.unwrap_or(false),
            },
            js_runtime: cli
                .runtime
                .or(file.runtime)
                .unwrap_or(RuntimeChoice::Auto)
                .resolve(env.var("PATH").as_deref().map(std::ffi::OsStr::new)),
            threads: layers.threads()?,
            runtime_dir: runtime_dir(env),
            config_file: cli.config.clone(),
            shutdown_delay: layers.shutdown_delay()?,
            public_status: !(cli.no_public_status || file.no_public_status.unwrap_or(false)),
            run_as: RunAs::resolve(
                cli.user.as_deref().or(file.user.as_deref()),
                cli.group.as_deref().or(file.group.as_deref()),
            )?,
            registry,
            name,
            app,
        })
    }
}

/// The four sources of a setting, highest precedence first.
struct Layers<'a> {
    cli: &'a Cli,
    args: &'a ServeArgs,
    env: &'a dyn Env,
    file: &'a FileConfig,
    /// Relative paths in the file are relative to its directory.
    file_dir: PathBuf,
}

impl Layers<'_> {
    fn env_parsed<T: std::str::FromStr>(
        &self,
        var: &'static str,
    ) -> Result<Option<T>, ConfigError> {
        if var.is_empty() {
            return Ok(None);
        }
        match self.env.var(var) {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::Env {
                    var,
                    value,
                    expected: "expected a whole number".into(),
                }),
        }
    }

    fn number<T: std::str::FromStr + Copy>(
        &self,
        flag: Option<T>,
        var: &'static str,
        file: Option<T>,
        default: T,
    ) -> Result<T, ConfigError> {
        Ok(match flag {
            Some(v) => v,
            None => self.env_parsed(var)?.or(file).unwrap_or(default),
        })
    }

    fn millis(
        &self,
        flag: Option<u64>,
        var: &'static str,
        file: Option<u64>,
        default: u64,
        setting: &'static str,
    ) -> Result<Duration, ConfigError> {
        let ms = self.number(flag, var, file, default)?;
        if ms == 0 || ms > 24 * 3600 * 1000 {
            return Err(ConfigError::Invalid {
                setting,
                message: format!("{ms} ms is out of range: expected 1 to 86400000"),
            });
        }
        Ok(Duration::from_millis(ms))
    }

    fn timeouts(&self) -> Result<Timeouts, ConfigError> {
        let (cli, file) = (self.cli, self.file);
        Ok(Timeouts {
            queue: self.millis(
                cli.queue_timeout_ms,
                "RIP_QUEUE_TIMEOUT_MS",
                file.queue_timeout_ms,
                defaults::QUEUE_TIMEOUT_MS,
                "--queue-timeout-ms",
            )?,
            connect: self.millis(
                cli.connect_timeout_ms,
                "RIP_CONNECT_TIMEOUT_MS",
                file.connect_timeout_ms,
                defaults::CONNECT_TIMEOUT_MS,
                "--connect-timeout-ms",
            )?,
            read: self.millis(
                cli.read_timeout_ms,
                "RIP_READ_TIMEOUT_MS",
                file.read_timeout_ms,
                defaults::READ_TIMEOUT_MS,
                "--read-timeout-ms",
            )?,
            boot: self.millis(
                cli.boot_timeout_ms,
                "",
                file.boot_timeout_ms,
                defaults::BOOT_TIMEOUT_MS,
                "--boot-timeout-ms",
            )?,
            grace: self.millis(
                cli.grace_ms,
                "",
                file.grace_ms,
                defaults::GRACE_MS,
                "--grace-ms",
            )?,
            header: self.millis(
                cli.header_timeout_ms,
                "",
                file.header_timeout_ms,
                defaults::HEADER_TIMEOUT_MS,
                "--header-timeout-ms",
            )?,
            idle: self.millis(
                cli.idle_timeout_ms,
                "",
                file.idle_timeout_ms,
                defaults::IDLE_TIMEOUT_MS,
                "--idle-timeout-ms",
            )?,
            send: self.millis(
                cli.send_timeout_ms,
                "",
                file.send_timeout_ms,
                defaults::SEND_TIMEOUT_MS,
                "--send-timeout-ms",
            )?,
            body_idle: self.millis(
                cli.body_idle_timeout_ms,
                "",
                file.body_idle_timeout_ms,
                defaults::BODY_IDLE_TIMEOUT_MS,
                "--body-idle-timeout-ms",
            )?,
            max_backoff: self.millis(
                cli.max_backoff_ms,
                "",
                file.max_backoff_ms,
                defaults::MAX_BACKOFF_MS,
                "--max-backoff-ms",
            )?,
            hung: self.millis(
                cli.hung_timeout_ms,
                "",
                file.hung_timeout_ms,
                defaults::HUNG_TIMEOUT_MS,
                "--hung-timeout-ms",
            )?,
        })
    }

    /// A size setting from flag or file, checked against `range`.
    fn bounded(
        &self,
        setting: &'static str,
        flag: Option<usize>,
        file: Option<usize>,
        default: usize,
        range: std::ops::RangeInclusive<usize>,
    ) -> Result<usize, ConfigError> {
        let value = flag.or(file).unwrap_or(default);
        if !range.contains(&value) {
            return Err(ConfigError::Invalid {
                setting,
                message: format!(
                    "{value} is out of range: expected {} to {}",
                    range.start(),
                    range.end()
                ),
            });
        }
        Ok(value)
    }

    /// Zero (the default) stops at once; a load balancer needs about two
    /// health-check intervals to take the node out.
    fn shutdown_delay(&self) -> Result<Duration, ConfigError> {
        let ms = self.number(
            self.cli.shutdown_delay_ms,
            "",
            self.file.shutdown_delay_ms,
            0,
        )?;
        if ms > 3_600_000 {
            return Err(ConfigError::Invalid {
                setting: "--shutdown-delay-ms",
                message: format!("{ms} ms is out of range: expected 0 to 3600000"),
            });
        }
        Ok(Duration::from_millis(ms))
    }

    /// The server's own threads: half the cores by default, because on a
    /// machine it shares with its workers, a thread per core costs more in
    /// cross-thread wake-ups than it gains (see docs/benchmarks.md).
    fn threads(&self) -> Result<usize, ConfigError> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let threads = self.number(
            self.cli.threads,
            "RIP_THREADS",
            self.file.threads,
            (cores / 2).max(1),
        )?;
        if !(1..=1024).contains(&threads) {
            return Err(ConfigError::Invalid {
                setting: "--threads",
                message: format!("{threads} is out of range: expected 1 to 1024"),
            });
        }
        Ok(threads)
    }

    fn header_bytes(&self) -> Result<usize, ConfigError> {
        let bytes = self.number(
            self.cli.max_header_bytes,
            "",
            self.file.max_header_bytes,
            defaults::MAX_HEADER_BYTES,
        )?;
        // hyper's HTTP/1 parser needs at least an 8 KiB read buffer.
        if !(8192..=16 * 1024 * 1024).contains(&bytes) {
            return Err(ConfigError::Invalid {
                setting: "--max-header-bytes",
                message: format!("{bytes} is out of range: expected 8192 to 16777216"),
            });
        }
        Ok(bytes)
    }

    fn workers(&self) -> Result<usize, ConfigError> {
        let count = match (self.args.workers, &self.file.workers) {
            (Some(w), _) => w,
            (None, Some(FileWorkers::Count(n))) => WorkerCount::parse_value(&n.to_string())
                .map_err(|message| ConfigError::Invalid {
                    setting: "workers",
                    message,
                })?,
            (None, Some(FileWorkers::Form(form))) => WorkerCount::parse_value(
                form.strip_prefix("w:").unwrap_or(form),
            )
            .map_err(|message| ConfigError::Invalid {
                setting: "workers",
                message,
            })?,
            (None, None) => WorkerCount::Half,
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(count.resolve(cores))
    }

    fn restart(&self) -> Result<RestartPolicy, ConfigError> {
        let from_file = match &self.file.restart {
            Some(form) => RestartSpec::parse_value(form.strip_prefix("r:").unwrap_or(form))
                .map_err(|message| ConfigError::Invalid {
                    setting: "restart",
                    message,
                })?,
            None => RestartSpec::default(),
        };
        let from_cli = self.args.restart.unwrap_or_default();
        let pick = |cli: Option<u64>, var: &'static str, file: Option<u64>, default: u64| {
            self.number(cli, var, file, default)
        };
        let requests = pick(
            from_cli.requests,
            "RIP_MAX_REQUESTS",
            from_file.requests,
            defaults::MAX_REQUESTS,
        )?;
        let seconds = pick(
            from_cli.seconds,
            "RIP_MAX_SECONDS",
            from_file.seconds,
            defaults::MAX_SECONDS,
        )?;
        let reloads = pick(
            from_cli.reloads,
            "RIP_MAX_RELOADS",
            from_file.reloads,
            defaults::MAX_RELOADS,
        )?;
        Ok(RestartPolicy {
            max_requests: NonZeroU64::new(requests),
            max_age: (seconds > 0).then(|| Duration::from_secs(seconds)),
            max_reloads: NonZeroU64::new(reloads),
        })
    }

    fn reload(&self) -> Result<ReloadMode, ConfigError> {
        if let Some(mode) = self.cli.reload {
            return Ok(mode);
        }
        if let Some(value) = self.env.var("RIP_RELOAD") {
            return ReloadMode::parse(value.trim()).map_err(|expected| ConfigError::Env {
                var: "RIP_RELOAD",
                value,
                expected,
            });
        }
        Ok(self.file.reload.unwrap_or(ReloadMode::Process))
    }

    /// `--watch`/`--watch-ignore`: the flags, if any is given, replace the file's list.
    fn watch(&self) -> Result<WatchRules, ConfigError> {
        let pick = |flag: &Vec<String>, file: &Option<Vec<String>>| {
            if flag.is_empty() {
                file.clone().unwrap_or_default()
            } else {
                flag.clone()
            }
        };
        WatchRules::checked(
            pick(&self.cli.watch, &self.file.watch),
            pick(&self.cli.watch_ignore, &self.file.watch_ignore),
        )
    }

    fn listen(&self) -> Result<Listen, ConfigError> {
        let spec = match (self.args.listen, &self.file.listen) {
            (Some(spec), _) => Some(spec),
            (None, Some(FileListen::Port(port))) => Some(ListenSpec::Https(Some(*port))),
            (None, Some(FileListen::Form(form))) => match Token::parse(form) {
                Ok(Token::Listen(spec)) => Some(spec),
                _ => {
                    return Err(ConfigError::Invalid {
                        setting: "listen",
                        message: format!(
                            "'{form}' is not a listener: expected http, http:PORT, https, https:PORT or a port number"
                        ),
                    })
                }
            },
            (None, None) => None,
        };
        match spec {
            Some(ListenSpec::Http(port)) => {
                self.refuse_tls_flags(&ListenSpec::Http(port).to_string())?;
                let port = match port {
                    Some(port) => Some(port),
                    None => self.env_port()?,
                };
                Ok(Listen::Http(match port {
                    Some(port) => PortChoice::Fixed(port),
                    None => PortChoice::FirstFree {
                        preferred: defaults::HTTP_PORT,
                        fallback_from: defaults::FALLBACK_PORT_FROM,
                    },
                }))
            }
            Some(ListenSpec::Https(port)) => self.https(port),
            None => self.https(None),
        }
    }

    fn https(&self, token_port: Option<u16>) -> Result<Listen, ConfigError> {
        let (cli, file) = (self.cli, self.file);
        let flag_port = cli.https_port.or(file.https_port);
        let port = match (token_port, flag_port) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::Invalid {
                    setting: "--https-port",
                    message: format!(
                    "'{a}' and '--https-port={b}' ask for two HTTPS ports; rip-server serves one"
                ),
                })
            }
            (Some(port), _) | (None, Some(port)) => PortChoice::Fixed(port),
            (None, None) => PortChoice::FirstFree {
                preferred: defaults::HTTPS_PORT,
                fallback_from: defaults::FALLBACK_PORT_FROM,
            },
        };
        let (certs, keys) = if cli.cert.is_empty() && cli.key.is_empty() {
            let base = &self.file_dir;
            (
                file.cert.as_ref().map_or_else(Vec::new, |c| c.paths(base)),
                file.key.as_ref().map_or_else(Vec::new, |k| k.paths(base)),
            )
        } else {
            (cli.cert.clone(), cli.key.clone())
        };
        if certs.len() != keys.len() {
            return Err(ConfigError::Invalid {
                setting: "--cert/--key",
                message: format!(
                    "certificates and keys come in pairs: got {} --cert and {} --key",
                    certs.len(),
                    keys.len()
                ),
            });
        }
        let auto_tls = cli.auto_tls || file.auto_tls.unwrap_or(false);
        let tls = match (certs.is_empty(), auto_tls) {
            (true, _) => TlsSource::Auto,
            (false, true) => {
                return Err(ConfigError::Invalid {
                    setting: "--auto-tls",
                    message: "choose either --cert/--key files or --auto-tls, not both".into(),
                })
            }
            (false, false) => TlsSource::Files(
                certs
                    .into_iter()
                    .zip(keys)
                    .map(|(cert, key)| CertPair { cert, key })
                    .collect(),
            ),
        };
        let redirect = if cli.no_redirect_http || file.no_redirect_http.unwrap_or(false) {
            Redirect::Off
        } else {
            Redirect::From(
                cli.redirect_port
                    .or(file.redirect_port)
                    .unwrap_or(defaults::HTTP_PORT),
            )
        };
        Ok(Listen::Https(Https {
            port,
            redirect,
            tls,
            hsts: cli.hsts || file.hsts.unwrap_or(false),
        }))
    }

    /// TLS settings with a plain-HTTP listener would be silently ignored: refuse.
    fn refuse_tls_flags(&self, listen: &str) -> Result<(), ConfigError> {
        let (cli, file) = (self.cli, self.file);
        let given = [
            (
                "--https-port",
                cli.https_port.is_some() || file.https_port.is_some(),
            ),
            ("--cert", !cli.cert.is_empty() || file.cert.is_some()),
            ("--key", !cli.key.is_empty() || file.key.is_some()),
            ("--auto-tls", cli.auto_tls || file.auto_tls.unwrap_or(false)),
            ("--hsts", cli.hsts || file.hsts.unwrap_or(false)),
            (
                "--redirect-port",
                cli.redirect_port.is_some() || file.redirect_port.is_some(),
            ),
        ];
        match given.iter().find(|(_, set)| *set) {
            Some((flag, _)) => Err(ConfigError::TlsFlagWithHttp {
                flag,
                listen: listen.to_string(),
            }),
            None => Ok(()),
        }
    }

    fn env_port(&self) -> Result<Option<u16>, ConfigError> {
        match self.env.var("PORT") {
            None => Ok(None),
            Some(value) => value
                .trim()
                .parse()
                .map(Some)
                .map_err(|_| ConfigError::Env {
                    var: "PORT",
                    value,
                    expected: "expected a port number 0-65535".into(),
                }),
        }
    }
}

fn read_file_config(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::ParseFile {
        path: path.to_path_buf(),
        message: registry::toml_message(&text, &e),
    })
}

/// A size: bytes, or a number with K, M, G (powers of 1024; `MiB`, `MB`
/// and the like are read the same way).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let expected =
        || format!("'{text}' is not a size: expected bytes or a number with K, M or G (512M, 2G)");
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let number: u64 = number.parse().map_err(|_| expected())?;
    let unit = unit.trim().to_ascii_uppercase();
    let unit = unit.trim_end_matches("IB").trim_end_matches('B');
    let factor: u64 = match unit {
        "" => 1,
        "K" => 1024,
        "M" => 1024 * 1024,
        "G" => 1024 * 1024 * 1024,
        _ => return Err(expected()),
    };
    match number.checked_mul(factor) {
        Some(0) | None => Err(format!("'{text}' is out of range: expected 1 byte or more")),
        Some(bytes) => Ok(bytes),
    }
}

/// Names become file names: keep them to a safe alphabet.
fn validate_name(name: String) -> Result<String, ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(name)
    } else {
        Err(ConfigError::Invalid {
            setting: "--name",
            message: format!(
                "'{name}' is not a valid instance name: expected 1-64 letters, digits, '.', '_' or '-', not starting with '.'"
            ),
        })
    }
}

/// A name made of the safe alphabet of [`validate_name`] (`-` for the rest).
pub fn sanitize_name(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    match cleaned.trim_start_matches('.') {
        "" => "app".to_string(),
        name => name.to_string(),
    }
}

/// Peers whose forwarding headers (`X-Forwarded-*`, `X-Real-IP`,
/// `Forwarded`) are believed: the load balancers in front of the server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    /// Addresses (`10.0.0.7`, `::1`) or CIDR ranges (`10.0.0.0/8`).
    pub fn parse(entries: &[String]) -> Result<Self, ConfigError> {
        let nets = entries
            .iter()
            .map(|entry| entry.trim())
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                entry
                    .parse::<IpNet>()
                    .or_else(|_| entry.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| ConfigError::Invalid {
                        setting: "--trusted-proxies",
                        message: format!(
                            "'{entry}' is neither an IP address nor a CIDR range (10.0.0.0/8, ::1)"
                        ),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(TrustedProxies(nets.into()))
    }

    /// Whether `peer` is one of them (an IPv4 peer on an IPv6 socket counts as IPv4).
    pub fn contains(&self, peer: IpAddr) -> bool {
        if self.0.is_empty() {
            return false;
        }
        let peer = match peer {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|net| net.contains(&peer))
    }
}

/// The state directory (certificate cache, host registry):
/// `$STATE_DIRECTORY` (systemd; the first of several), else `~/.rip`.
pub fn state_dir(env: &dyn Env) -> PathBuf {
    if let Some(dir) = env.var("STATE_DIRECTORY") {
        return PathBuf::from(dir.split(':').next().unwrap_or(&dir));
    }
    let home = env
        .var("HOME")
        .map_or_else(|| PathBuf::from("/"), PathBuf::from);
    home.join(".rip")
}

/// The private directory for sockets (DESIGN §9).
pub fn runtime_dir(env: &dyn Env) -> PathBuf {
    if let Some(dir) = env.var("RUNTIME_DIRECTORY") {
        // systemd may pass several, separated by ':'; the first is ours.
        let first = dir.split(':').next().unwrap_or(&dir).to_string();
        return PathBuf::from(first);
    }
    if let Some(dir) = env.var("XDG_RUNTIME_DIR") {
        return PathBuf::from(dir).join("rip-server");
    }
    PathBuf::from(format!("/tmp/rip-server-{}", nix::unistd::getuid()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use std::collections::HashMap;

    fn app_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("index.mjs"), "export default {}").unwrap();
        dir
    }

    fn build(argv: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let cli = Cli::parse_from(std::iter::once("rip-server").chain(argv.iter().copied()));
        let args = match cli.invocation()? {
            crate::cli::Invocation::Serve(args) => args,
            other => panic!("not a serve invocation: {other:?}"),
        };
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::build(&cli, &args, &move |k: &str| env.get(k).cloned())
    }

    #[test]
    fn flag_beats_env_beats_file_beats_default() {
        let app = app_dir();
        let file = app.path().join("rip.conf.toml");
        std::fs::write(
            &file,
            "max_queue = 3\nqueue_timeout_ms = 30\nread_timeout_ms = 300\n",
        )
        .unwrap();
        let dir = app.path().to_str().unwrap();
        let config_flag = format!("--config={}", file.display());
        let c = build(
            &[dir, "http:0", &config_flag, "--max-queue=1"],
            &[("RIP_MAX_QUEUE", "2"), ("RIP_QUEUE_TIMEOUT_MS", "20")],
        )
        .unwrap();
        assert_eq!(c.limits.max_queue, 1, "flag wins");
        assert_eq!(
            c.timeouts.queue,
            Duration::from_millis(20),
            "env beats file"
        );
        assert_eq!(
            c.timeouts.read,
            Duration::from_millis(300),
            "file beats default"
        );
        assert_eq!(
            c.timeouts.connect,
            Duration::from_millis(defaults::CONNECT_TIMEOUT_MS)
        );
    }

    #[test]
    fn runtime_is_auto_by_default_and_auto_looks_for_an_executable_bun() {
        use std::os::unix::fs::PermissionsExt;
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let bin = tempfile::tempdir().unwrap();
        let bun = bin.path().join("bun");
        std::fs::write(&bun, "#!/bin/sh\n").unwrap();
        let path = bin.path().to_str().unwrap();
        let runtime = |argv: &[&str], path: &str| {
            let argv: Vec<&str> = [dir, "http:0"].iter().chain(argv).copied().collect();
            build(&argv, &[("PATH", path)]).unwrap().js_runtime
        };
        // A `bun` that cannot be run is not picked.
        std::fs::set_permissions(&bun, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(runtime(&[], path), JsRuntime::Node);
        std::fs::set_permissions(&bun, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(runtime(&[], path), JsRuntime::Bun, "auto is the default");
        assert_eq!(runtime(&[], "/nonexistent"), JsRuntime::Node);
        assert_eq!(runtime(&["--runtime=node"], path), JsRuntime::Node);
        assert_eq!(runtime(&["--runtime=bun"], "/nonexistent"), JsRuntime::Bun);
        // The config file's key, and the flag over it.
        let file = app.path().join("rip.conf.toml");
        std::fs::write(&file, "runtime = \"node\"\n").unwrap();
        let config_flag = format!("--config={}", file.display());
        assert_eq!(runtime(&[&config_flag], path), JsRuntime::Node);
        assert_eq!(
            runtime(&[&config_flag, "--runtime=auto"], path),
            JsRuntime::Bun
        );
    }

    #[test]
    fn restart_parts_layer_independently() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let c = build(&[dir, "http:0", "r:50"], &[("RIP_MAX_SECONDS", "0")]).unwrap();
        assert_eq!(c.restart.max_requests, NonZeroU64::new(50));
        assert_eq!(c.restart.max_age, None);
        assert_eq!(
            c.restart.max_reloads,
            NonZeroU64::new(defaults::MAX_RELOADS)
        );
    }

    #[test]
    fn bad_env_names_the_variable() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let err = build(&[dir, "http:0"], &[("RIP_MAX_QUEUE", "lots")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable RIP_MAX_QUEUE='lots': expected a whole number"
        );
        let err = build(&[dir, "http:0"], &[("RIP_RELOAD", "hot")]).unwrap_err();
        assert!(
            err.to_string().contains("expected none, process or module"),
            "{err}"
        );
    }

    #[test]
    fn bad_file_names_the_file_and_line() {
        let app = app_dir();
        let file = app.path().join("bad.toml");
        std::fs::write(&file, "max_queue = 3\nmax_qeue = 4\n").unwrap();
        let dir = app.path().to_str().unwrap();
        let err = build(
            &[dir, "http:0", &format!("--config={}", file.display())],
            &[],
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("bad.toml") && err.contains("line 2") && err.contains("max_qeue"),
            "{err}"
        );
    }

    #[test]
    fn https_is_the_default_with_an_automatic_certificate() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let c = build(&[dir], &[]).unwrap();
        let Listen::Https(https) = c.listen else {
            panic!("not HTTPS: {:?}", c.listen)
        };
        assert_eq!(
            https.port,
            PortChoice::FirstFree {
                preferred: 443,
                fallback_from: 5000
            }
        );
        assert_eq!(https.redirect, Redirect::From(80));
        assert_eq!(https.tls, TlsSource::Auto);
        let c = build(
            &[
                dir,
                "5700",
                "--cert=c.pem",
                "--key=k.pem",
                "--no-redirect-http",
                "--hsts",
            ],
            &[],
        )
        .unwrap();
        let Listen::Https(https) = c.listen else {
            panic!("not HTTPS")
        };
        assert_eq!(https.port, PortChoice::Fixed(5700));
        assert_eq!(https.redirect, Redirect::Off);
        assert!(https.hsts);
        assert_eq!(
            https.tls,
            TlsSource::Files(vec![CertPair {
                cert: "c.pem".into(),
                key: "k.pem".into()
            }])
        );
    }

    #[test]
    fn tls_flags_with_plain_http_are_refused() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let err = build(&[dir, "http:5002", "--hsts"], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("--hsts applies only to HTTPS") && err.contains("'http:5002'"),
            "{err}"
        );
        let err = build(&[dir, "--cert=a.pem"], &[]).unwrap_err().to_string();
        assert!(err.contains("got 1 --cert and 0 --key"), "{err}");
        let err = build(&[dir, "5700", "--https-port=5701"], &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("two HTTPS ports"), "{err}");
    }

    #[test]
    fn shutdown_delay_comes_from_flag_or_file_and_defaults_to_none() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        assert_eq!(
            build(&[dir, "http:0"], &[]).unwrap().shutdown_delay,
            Duration::ZERO
        );
        let file = app.path().join("server.toml");
        std::fs::write(&file, "shutdown_delay_ms = 3000\n").unwrap();
        let config_flag = format!("--config={}", file.display());
        let c = build(&[dir, "http:0", &config_flag], &[]).unwrap();
        assert_eq!(c.shutdown_delay, Duration::from_secs(3));
        let c = build(
            &[dir, "http:0", &config_flag, "--shutdown-delay-ms=10"],
            &[],
        )
        .unwrap();
        assert_eq!(c.shutdown_delay, Duration::from_millis(10));
        let err = build(&[dir, "http:0", "--shutdown-delay-ms=3600001"], &[]).unwrap_err();
        assert!(
            err.to_string().starts_with("--shutdown-delay-ms: "),
            "{err}"
        );
    }

    #[test]
    fn sizes_take_units() {
        assert_eq!(parse_size("512M"), Ok(512 * 1024 * 1024));
        assert_eq!(parse_size("2GiB"), Ok(2 * 1024 * 1024 * 1024));
        assert_eq!(parse_size("100k"), Ok(100 * 1024));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "M", "12X", "0", "-1M", "99999999999999999999G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_env_is_the_default_http_port() {
        let app = app_dir();
        let dir = app.path().to_str().unwrap();
        let c = build(&[dir, "http"], &[("PORT", "5123")]).unwrap();
        assert_eq!(c.listen, Listen::Http(PortChoice::Fixed(5123)));
    }

    #[test]
    fn app_in_config_file_is_relative_to_the_file() {
        // The file says `app = "shop"`: that is <the file's directory>/shop,
        // which exists, and not ./shop in the working directory, which
        // does not.
        let conf_dir = tempfile::tempdir().unwrap();
        let app = conf_dir.path().join("shop");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("index.mjs"), "export default {}").unwrap();
        assert!(
            !Path::new("shop").exists(),
            "the working directory has a ./shop"
        );
        let file = conf_dir.path().join("rip.toml");
        std::fs::write(&file, "app = \"shop\"\nlisten = \"http:0\"\nworkers = 3\n").unwrap();
        let c = build(&[&format!("--config={}", file.display())], &[]).unwrap();
        assert_eq!(c.app.unwrap().dir, app.canonicalize().unwrap());
        assert_eq!(c.workers, 3);
    }

    #[test]
    fn watch_globs_come_from_flags_over_the_file_and_are_checked() {
        let conf_dir = tempfile::tempdir().unwrap();
        let app = conf_dir.path().join("shop");
        std::fs::create_dir(&app).unwrap();
        std::fs::write(app.join("index.mjs"), "export default {}").unwrap();
        let file = conf_dir.path().join("server.toml");
        std::fs::write(
            &file,
            "app = \"shop\"\nlisten = \"http:0\"\nwatch = [\"*.mjs\"]\nwatch_ignore = [\"data/\"]\n",
        )
        .unwrap();
        let config = format!("--config={}", file.display());
        let c = build(&[&config], &[]).unwrap();
        assert_eq!(c.watch.watch, ["*.mjs"]);
        assert_eq!(c.watch.ignore, ["data/"]);
        let c = build(&[&config, "--watch=src/", "--watch=*.ts"], &[]).unwrap();
        assert_eq!(c.watch.watch, ["src/", "*.ts"]);
        assert_eq!(c.watch.ignore, ["data/"]);
        for bad in ["--watch=[z-a]", "--watch-ignore=", "--watch=# comment"] {
            let err = build(&[&config, bad], &[]).unwrap_err().to_string();
            let (flag, glob) = bad.split_once('=').unwrap();
            assert!(err.starts_with(flag), "{bad}: {err}");
            assert!(err.contains(&format!("'{glob}'")), "{bad}: {err}");
        }
    }
}
