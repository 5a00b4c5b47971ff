//! The command line as the user typed it (ripgrep's "LowArgs" stage).
//!
//! This module owns the clap definitions and the small, pure parsers for the
//! seed's positional tokens (`w:4`, `r:1000,60s,5r`, `http:5002`, `5700`). It
//! does no I/O and applies no defaults: `config.rs` turns a [`Cli`] into a
//! validated [`crate::config::Config`] by layering flags over the environment,
//! the config file and the defaults.
//!
//! Every malformed token is rejected with a [`TokenError`] that names the token
//! and says what was expected, e.g. `w:abc` → "w: expects a worker count or 'auto'".

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

const EXAMPLES: &str = "\
ARGS (any order):
  APP            an app directory (entry index.mjs, index.js, or an executable ./serve)
                 or an entry file; default: the current directory
  w:N            N workers; also w:auto (= cores), w:half, w:2x, w:3x (default: w:half, at least 1)
  r:N[,Ss][,Rr]  recycle a worker after N requests, S seconds or R module reloads, whichever
                 comes first; parts in any order, 0 = no limit (default: r:10000,3600s,10r)
  PORT           HTTPS on PORT (also https:PORT); without a port: 443 if free, else the
                 first free port from 5000 up. Port 80 redirects to HTTPS when it can be bound.
  http[:PORT]    plain HTTP only, no TLS and no redirect (port: $PORT, else 80 if free, else
                 the first free port from 5000 up); port 0 lets the kernel pick a free port

COMMANDS (talk to a running instance over its control socket; each answer is waited for
10 s, reload 310 s, or --timeout-ms=MS):
  rip-server status [--name NAME]        print the instance's status as JSON
  rip-server reload [HOST] [--name NAME] rolling restart of the app serving HOST, or of every app
  rip-server stop   [--name NAME]        graceful stop (as SIGTERM or SIGINT; a second signal
                                         kills the workers and exits at once, status 143/130)

HOST REGISTRY (many apps in one server, chosen by Host and TLS SNI):
  rip-server add HOST APP [w:N] [r:...] [--reload=MODE] [--cert=PEM --key=PEM]
                 serve APP for HOST (example.com, or *.example.com for one more label);
                 a running server starts it at once, without a restart
  rip-server remove HOST     stop serving HOST (its requests in flight finish)
  rip-server list [--json]   the registered hosts, and whether a running server serves them
  The registry is hosts.toml in $STATE_DIRECTORY, else ~/.rip. With hosts registered, other
  hosts go to the default APP if one was given, else get 404. A [hosts] table in --config
  declares them instead (read-only to add/remove; SIGHUP applies changes).

EXAMPLES:
  rip-server apps/api                         HTTPS on 443 (or 5000+) with an automatic certificate
  rip-server apps/api 5700 --cert=c.pem --key=k.pem --hsts
  rip-server apps/api http:5002               serve apps/api over plain HTTP on port 5002
  rip-server apps/api w:4 r:5000,600s http    4 workers, recycle after 5000 requests or 10 minutes
  rip-server app.mjs --reload=module http     reload the handler in place when files change
  rip-server --config=/etc/rip-server.toml    every flag has a key in the TOML file
  rip-server --config=/etc/rip-server.toml --check   validate it, bind nothing
  rip-server stop --name api                  stop the instance named 'api'

ENVIRONMENT:
  PORT, RIP_RELOAD, RIP_MAX_QUEUE, RIP_MAX_REQUESTS, RIP_MAX_SECONDS, RIP_MAX_RELOADS,
  RIP_QUEUE_TIMEOUT_MS, RIP_CONNECT_TIMEOUT_MS, RIP_READ_TIMEOUT_MS, RIP_THREADS.
  Precedence: flag > environment > config file > default.
  RIP_MKCERT (automatic certificate): off = never mkcert, self-signed instead;
  a path = that mkcert program; unset = mkcert from PATH if installed.";

/// The raw command line.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "rip-server",
    version,
    about = "A per-worker-socket application server: one request per worker, LIFO selection, \
             zero-downtime rolling restarts.",
    after_help = EXAMPLES,
    disable_help_subcommand = true
)]
pub struct Cli {
    /// APP, w:N, r:N[,Ss][,Rr], http[:PORT], PORT, or a command (status, reload, stop).
    #[arg(value_name = "ARGS")]
    pub args: Vec<String>,

    /// How app changes are picked up: none, process (rolling restart) or module (in-worker).
    #[arg(long, value_enum, value_name = "MODE")]
    pub reload: Option<ReloadMode>,

    /// Only app files matching GLOB (.gitignore syntax, relative to the app; repeatable) start a
    /// reload (default: every file not ignored; see --watch-ignore).
    #[arg(long, value_name = "GLOB")]
    pub watch: Vec<String>,

    /// More app files whose changes never start a reload (.gitignore syntax; repeatable), after
    /// the defaults (*.log, *.db, *.sqlite, *.sqlite3, *-journal, *-wal, *-shm, *.pid, log/,
    /// logs/, tmp/, uploads/) and the app's .gitignore and .ripignore.
    #[arg(long, value_name = "GLOB")]
    pub watch_ignore: Vec<String>,

    /// Requests that may wait for a worker before new ones get 503 (default 8192).
    #[arg(long, value_name = "N")]
    pub max_queue: Option<usize>,

    /// How long a request may wait for a worker before it gets 504 (default 2000).
    #[arg(long, value_name = "MS")]
    pub queue_timeout_ms: Option<u64>,

    /// How long dialling a worker's socket may take (default 200).
    #[arg(long, value_name = "MS")]
    pub connect_timeout_ms: Option<u64>,

    /// How long a worker may take to send response headers before the client gets 504
    /// (default 5000). The worker may still finish; see --hung-timeout-ms.
    #[arg(long, value_name = "MS")]
    pub read_timeout_ms: Option<u64>,

    /// How long a worker may stay busy with a request whose client got 504 or left, before it
    /// is presumed hung and replaced: drained (SIGTERM), then killed after --grace-ms
    /// (default 60000).
    #[arg(long, value_name = "MS")]
    pub hung_timeout_ms: Option<u64>,

    /// How long a new worker may take to answer its readiness probe (default 30000).
    #[arg(long, value_name = "MS")]
    pub boot_timeout_ms: Option<u64>,

    /// How long a stop or drain waits for requests in flight before workers are killed (default 10000).
    #[arg(long, value_name = "MS")]
    pub grace_ms: Option<u64>,

    /// On stop, keep serving this long while GET /server answers 503, so a load balancer
    /// takes this node out before its listener closes (default 0).
    #[arg(long, value_name = "MS")]
    pub shutdown_delay_ms: Option<u64>,

    /// Largest request body accepted, in bytes; larger bodies get 413 (default 104857600).
    #[arg(long, value_name = "BYTES")]
    pub max_body_bytes: Option<u64>,

    /// Largest request head (request line and headers), in bytes; larger get 431 (default 65536).
    #[arg(long, value_name = "BYTES")]
    pub max_header_bytes: Option<usize>,

    /// How long a client may take to send a request head, and the longest pause in a request
    /// body; also how long an idle HTTP/1.1 connection is kept (default 30000).
    #[arg(long, value_name = "MS")]
    pub header_timeout_ms: Option<u64>,

    /// How long an HTTP/2 connection with no open request is kept (default 60000).
    #[arg(long, value_name = "MS")]
    pub idle_timeout_ms: Option<u64>,

    /// How long a client may take no response bytes before it is disconnected (default 60000).
    #[arg(long, value_name = "MS")]
    pub send_timeout_ms: Option<u64>,

    /// How long a worker may pause in the middle of a response body before the response is cut
    /// off and the worker replaced; keep it above an event stream's heartbeat (default 60000).
    #[arg(long, value_name = "MS")]
    pub body_idle_timeout_ms: Option<u64>,

    /// Longest wait between restarts of a worker slot that keeps failing; it is retried for as
    /// long as the server runs (default 30000).
    #[arg(long, value_name = "MS")]
    pub max_backoff_ms: Option<u64>,

    /// Request bodies up to this size are read whole before a worker is taken, so a slow
    /// upload never holds one; larger ones stream to the worker (default 65536).
    #[arg(long, value_name = "BYTES")]
    pub upload_buffer_bytes: Option<usize>,

    /// How much of a response the server may hold for a slow client, so the worker is free
    /// once it has answered (default 1048576).
    #[arg(long, value_name = "BYTES")]
    pub response_buffer_bytes: Option<usize>,

    /// Slowest upload, in bytes per second over any 10 s, before the client gets 408; 0 turns
    /// the check off (default 4096).
    #[arg(long, value_name = "BYTES")]
    pub min_upload_rate: Option<u64>,

    /// Slowest download, in bytes per second over any 10 s, while a client holds a worker
    /// (its response outgrew --response-buffer-bytes); then it is disconnected; 0 turns the
    /// check off (default 4096).
    #[arg(long, value_name = "BYTES")]
    pub min_download_rate: Option<u64>,

    /// Recycle a worker (replacement first) once its resident memory passes SIZE, e.g. 512M or
    /// 2G: a leaking app stays bounded (default: no limit).
    #[arg(long, value_name = "SIZE")]
    pub max_rss: Option<String>,

    /// Most client connections open at once; more wait in the kernel's accept queue
    /// (default: what the open-file limit allows, after room for workers).
    #[arg(long, value_name = "N")]
    pub max_connections: Option<usize>,

    /// Run the workers as this user (name or uid); needs rip-server started as root, which then
    /// keeps only what it needs to manage them (default: the user that starts the server).
    #[arg(long, value_name = "USER")]
    pub user: Option<String>,

    /// Run the workers in this group (default: the --user's primary group).
    #[arg(long, value_name = "GROUP")]
    pub group: Option<String>,

    /// Let the app answer GET /status on the public port (by default the server answers it
    /// with its health JSON).
    #[arg(long)]
    pub no_public_status: bool,

    /// Peers whose X-Forwarded-* / X-Real-IP / Forwarded headers are believed (a load
    /// balancer in front): comma-separated addresses or CIDR ranges. From anyone else those
    /// headers are replaced by what the server saw (default: none).
    #[arg(long, value_name = "CIDRS", value_delimiter = ',')]
    pub trusted_proxies: Vec<String>,

    /// Threads for rip-server itself (default: half the cores, at least 1; the workers need the rest).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// JavaScript runtime for fetch-handler apps: auto, node or bun (default auto: bun when
    /// `bun` is on PATH, else node).
    #[arg(long, value_enum, value_name = "RUNTIME")]
    pub runtime: Option<RuntimeChoice>,

    /// Listen on this address only (repeatable: 127.0.0.1, ::1, [::1]); the port comes from the
    /// listener tokens (default: every IPv4 and IPv6 interface).
    #[arg(long, value_name = "ADDR")]
    pub bind: Vec<String>,

    /// HTTPS port (the same as a bare PORT; default 443, else the first free port from 5000).
    #[arg(long, value_name = "PORT")]
    pub https_port: Option<u16>,

    /// PEM certificate chain for HTTPS; repeat --cert/--key pairs for more hosts (picked by SNI).
    #[arg(long, value_name = "PATH")]
    pub cert: Vec<PathBuf>,

    /// PEM private key (RSA, ECDSA or Ed25519) for the --cert in the same position.
    #[arg(long, value_name = "PATH")]
    pub key: Vec<PathBuf>,

    /// Use an automatic certificate: mkcert if installed, else self-signed (the default without --cert).
    #[arg(long)]
    pub auto_tls: bool,

    /// Add Strict-Transport-Security to HTTPS responses.
    #[arg(long)]
    pub hsts: bool,

    /// Do not answer plain HTTP with a redirect to HTTPS.
    #[arg(long)]
    pub no_redirect_http: bool,

    /// Port for the HTTP-to-HTTPS redirect (default 80; skipped if it cannot be bound).
    #[arg(long, value_name = "PORT")]
    pub redirect_port: Option<u16>,

    /// Write logs (and the access log) as JSON lines.
    #[arg(long)]
    pub json_logging: bool,

    /// Do not write an access log line per request.
    #[arg(long)]
    pub no_access_log: bool,

    /// Keep query strings in the access log (left out by default: tokens ride in them).
    #[arg(long)]
    pub log_query: bool,

    /// Read settings from this TOML file (every flag has a key of the same name, with '_' for '-').
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print `list` (and `status`) as JSON.
    #[arg(long)]
    pub json: bool,

    /// How long a command (status, reload, stop, add, remove, list) waits for each answer from
    /// a running instance's control socket before giving up (default: 10000; reload: the
    /// 300000 its rolls may take, plus 10000).
    #[arg(long, value_name = "MS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout_ms: Option<u64>,

    /// Instance name, used for the control socket and logs (default: the app directory's name).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Check the configuration (flags, environment, config file, certificates) and exit
    /// without binding anything: 0 if it would serve, 2 with the problem if not.
    #[arg(long)]
    pub check: bool,
}

/// How app changes reach the workers (DESIGN §5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReloadMode {
    /// No watcher; changes need `rip-server reload`.
    None,
    /// A rolling restart of every worker.
    Process,
    /// SIGHUP to each worker, which re-imports its handler in place.
    Module,
}

impl ReloadMode {
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadMode::None => "none",
            ReloadMode::Process => "process",
            ReloadMode::Module => "module",
        }
    }

    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "none" => Ok(ReloadMode::None),
            "process" => Ok(ReloadMode::Process),
            "module" => Ok(ReloadMode::Module),
            _ => Err(format!(
                "'{value}' is not a reload mode: expected none, process or module"
            )),
        }
    }
}

/// `--runtime`: a JavaScript runtime, or `auto` to pick one by what is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeChoice {
    /// Bun when `bun` is on `PATH` (it serves fetch handlers faster), else Node.
    Auto,
    Node,
    Bun,
}

impl RuntimeChoice {
    /// The runtime to use; `auto` looks for `bun` in `path` (a `PATH` value).
    pub fn resolve(self, path: Option<&std::ffi::OsStr>) -> JsRuntime {
        match self {
            RuntimeChoice::Node => JsRuntime::Node,
            RuntimeChoice::Bun => JsRuntime::Bun,
            RuntimeChoice::Auto if on_path("bun", path) => JsRuntime::Bun,
            RuntimeChoice::Auto => JsRuntime::Node,
        }
    }
}

/// Whether `program` is an executable file in a directory of `path` (a `PATH` value).
pub fn on_path(program: &str, path: Option<&std::ffi::OsStr>) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let Some(path) = path else {
        return false;
    };
    std::env::split_paths(path).any(|dir| {
        std::fs::metadata(dir.join(program))
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Which JavaScript runtime runs the Node loader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsRuntime {
    Node,
    Bun,
}

impl JsRuntime {
    pub fn program(self) -> &'static str {
        match self {
            JsRuntime::Node => "node",
            JsRuntime::Bun => "bun",
        }
    }
}

/// `w:` — how many workers to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerCount {
    Fixed(NonZeroUsize),
    /// One per core.
    Auto,
    /// Half the cores, at least one.
    Half,
    /// A multiple of the cores (`w:2x`, `w:3x`).
    PerCore(u8),
}

impl WorkerCount {
    /// The number of workers on a machine with `cores` cores.
    pub fn resolve(self, cores: usize) -> usize {
        let cores = cores.max(1);
        match self {
            WorkerCount::Fixed(n) => n.get(),
            WorkerCount::Auto => cores,
            WorkerCount::Half => (cores / 2).max(1),
            WorkerCount::PerCore(k) => cores * usize::from(k),
        }
    }

    /// Parses the part after `w:`.
    pub fn parse_value(value: &str) -> Result<Self, String> {
        const EXPECTED: &str =
            "w: expects a worker count or 'auto' (w:4, w:auto, w:half, w:2x, w:3x)";
        match value {
            "auto" => Ok(WorkerCount::Auto),
            "half" => Ok(WorkerCount::Half),
            "2x" => Ok(WorkerCount::PerCore(2)),
            "3x" => Ok(WorkerCount::PerCore(3)),
            _ => match parse_digits(value) {
                Some(n) => NonZeroUsize::new(n as usize)
                    .filter(|n| n.get() <= MAX_WORKERS)
                    .map(WorkerCount::Fixed)
                    .ok_or_else(|| format!("{EXPECTED}; the count must be 1 to {MAX_WORKERS}")),
                None => Err(EXPECTED.to_string()),
            },
        }
    }
}

/// More workers than this is surely a typo (and would exhaust file descriptors).
pub const MAX_WORKERS: usize = 1024;

impl fmt::Display for WorkerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WorkerCount::Fixed(n) => write!(f, "w:{n}"),
            WorkerCount::Auto => f.write_str("w:auto"),
            WorkerCount::Half => f.write_str("w:half"),
            WorkerCount::PerCore(k) => write!(f, "w:{k}x"),
        }
    }
}

/// `r:` — the parts of a restart policy the user gave; absent parts keep their default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RestartSpec {
    pub requests: Option<u64>,
    pub seconds: Option<u64>,
    pub reloads: Option<u64>,
}

impl RestartSpec {
    /// Parses the part after `r:`: comma-separated `N`, `Ns`, `Nr`, in any order, each at most once.
    pub fn parse_value(value: &str) -> Result<Self, String> {
        const EXPECTED: &str = "r: expects N[,Ss][,Rr]: a request count, seconds ending in 's' \
                                and module reloads ending in 'r', in any order (r:5000,600s,10r)";
        let mut spec = RestartSpec::default();
        for part in value.split(',') {
            let (digits, slot, what) = match part.as_bytes().last() {
                Some(b's') => (&part[..part.len() - 1], &mut spec.seconds, "seconds"),
                Some(b'r') => (&part[..part.len() - 1], &mut spec.reloads, "reloads"),
                _ => (part, &mut spec.requests, "requests"),
            };
            let n = parse_digits(digits)
                .ok_or_else(|| format!("{EXPECTED}; '{part}' is not one of those"))?;
            if slot.replace(n).is_some() {
                return Err(format!("{EXPECTED}; {what} given twice"));
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for RestartSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            self.requests.map(|n| n.to_string()),
            self.seconds.map(|n| format!("{n}s")),
            self.reloads.map(|n| format!("{n}r")),
        ]
        .into_iter()
        .flatten()
        .collect();
        write!(f, "r:{}", parts.join(","))
    }
}

/// Which listener the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenSpec {
    /// `http` (port: `$PORT` or automatic) or `http:PORT`.
    Http(Option<u16>),
    /// `https`, `https:PORT` or a bare `PORT`.
    Https(Option<u16>),
}

impl fmt::Display for ListenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ListenSpec::Http(None) => f.write_str("http"),
            ListenSpec::Http(Some(p)) => write!(f, "http:{p}"),
            ListenSpec::Https(None) => f.write_str("https"),
            ListenSpec::Https(Some(p)) => write!(f, "{p}"),
        }
    }
}

/// A command: for a running instance, or for the host registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    /// A rolling restart of the app serving the host, or of every app.
    Reload(Option<String>),
    Stop,
    /// `add HOST APP [w:N] [r:…]` (with `--reload`, `--cert`/`--key`).
    Add(AddArgs),
    /// `remove HOST`
    Remove(String),
    /// `list` (a table, or `--json`)
    List,
}

/// What `rip-server add` registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddArgs {
    pub host: String,
    pub app: PathBuf,
    pub workers: Option<WorkerCount>,
    pub restart: Option<RestartSpec>,
}

/// The words that start a command rather than name an app.
const COMMANDS: [&str; 6] = ["status", "reload", "stop", "add", "remove", "list"];

impl Command {
    /// `words`: the command word and what follows it.
    fn parse(word: &str, rest: &[String]) -> Result<Self, ArgsError> {
        let extra = |extra: &String| ArgsError::CommandArgs {
            command: word.to_string(),
            extra: extra.clone(),
        };
        let usage = |usage: &'static str| ArgsError::Usage {
            command: word.to_string(),
            usage,
        };
        match word {
            "status" | "stop" | "list" => match rest.first() {
                Some(e) => Err(extra(e)),
                None => Ok(match word {
                    "status" => Command::Status,
                    "stop" => Command::Stop,
                    _ => Command::List,
                }),
            },
            "reload" => match rest {
                [] => Ok(Command::Reload(None)),
                [host] => Ok(Command::Reload(Some(host.clone()))),
                [_, e, ..] => Err(extra(e)),
            },
            "remove" => match rest {
                [host] => Ok(Command::Remove(host.clone())),
                [] => Err(usage("rip-server remove HOST")),
                [_, e, ..] => Err(extra(e)),
            },
            _ => parse_add(rest).map(Command::Add),
        }
    }
}

/// `add HOST APP [w:N] [r:…]`.
fn parse_add(rest: &[String]) -> Result<AddArgs, ArgsError> {
    let usage = || ArgsError::Usage {
        command: "add".into(),
        usage:
            "rip-server add HOST APP [w:N] [r:N[,Ss][,Rr]] [--reload=MODE] [--cert=PEM --key=PEM]",
    };
    let [host, app, tokens @ ..] = rest else {
        return Err(usage());
    };
    let mut args = AddArgs {
        host: host.clone(),
        app: PathBuf::from(app),
        workers: None,
        restart: None,
    };
    for raw in tokens {
        match Token::parse(raw)? {
            Token::Workers(w) if args.workers.is_none() => args.workers = Some(w),
            Token::Restart(r) if args.restart.is_none() => args.restart = Some(r),
            Token::Workers(_) | Token::Restart(_) => {
                return Err(ArgsError::CommandArgs {
                    command: "add".into(),
                    extra: raw.clone(),
                })
            }
            Token::Listen(_) | Token::App(_) => {
                return Err(ArgsError::CommandArgs {
                    command: "add".into(),
                    extra: raw.clone(),
                })
            }
        }
    }
    Ok(args)
}

/// One positional argument, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Workers(WorkerCount),
    Restart(RestartSpec),
    Listen(ListenSpec),
    App(PathBuf),
}

/// A positional token that was recognised by its prefix but malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid argument '{token}': {expected}")]
pub struct TokenError {
    pub token: String,
    pub expected: String,
}

impl Token {
    /// Classifies one positional argument. Anything without a known prefix
    /// that is not a port number is an app path.
    pub fn parse(token: &str) -> Result<Token, TokenError> {
        let fail = |expected: String| TokenError {
            token: token.to_string(),
            expected,
        };
        if let Some(value) = token.strip_prefix("w:") {
            return WorkerCount::parse_value(value)
                .map(Token::Workers)
                .map_err(fail);
        }
        if let Some(value) = token.strip_prefix("r:") {
            return RestartSpec::parse_value(value)
                .map(Token::Restart)
                .map_err(fail);
        }
        if token == "http" {
            return Ok(Token::Listen(ListenSpec::Http(None)));
        }
        if let Some(value) = token.strip_prefix("http:") {
            return parse_port(value)
                .map(|p| Token::Listen(ListenSpec::Http(Some(p))))
                .ok_or_else(|| fail("http: expects a port number 0-65535 (http:5002)".into()));
        }
        if token == "https" {
            return Ok(Token::Listen(ListenSpec::Https(None)));
        }
        if let Some(value) = token.strip_prefix("https:") {
            return parse_port(value)
                .map(|p| Token::Listen(ListenSpec::Https(Some(p))))
                .ok_or_else(|| fail("https: expects a port number 0-65535 (https:5700)".into()));
        }
        if !token.is_empty() && token.bytes().all(|b| b.is_ascii_digit()) {
            return parse_port(token)
                .map(|p| Token::Listen(ListenSpec::Https(Some(p))))
                .ok_or_else(|| fail("a bare number is an HTTPS port and must be 0-65535".into()));
        }
        if token.is_empty() {
            return Err(fail("an app path, w:N, r:N, http[:PORT] or PORT".into()));
        }
        Ok(Token::App(PathBuf::from(token)))
    }
}

/// What the positional arguments asked for, each at most once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServeArgs {
    pub app: Option<PathBuf>,
    pub workers: Option<WorkerCount>,
    pub restart: Option<RestartSpec>,
    pub listen: Option<ListenSpec>,
}

/// What the user asked rip-server to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Serve(ServeArgs),
    Control(Command),
}

/// An error in the positional arguments.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArgsError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error("{what} given twice: '{first}' and '{second}'")]
    Repeated {
        what: &'static str,
        first: String,
        second: String,
    },
    #[error(
        "'{first}' and '{second}' ask for two listeners; rip-server serves one: \
         either HTTPS (PORT, https:PORT) or plain HTTP (http:PORT)"
    )]
    TwoListeners { first: String, second: String },
    #[error(
        "'{command}' does not take '{extra}' (use --name to pick the instance; rip-server --help lists the commands)"
    )]
    CommandArgs { command: String, extra: String },
    #[error("'{command}' needs its arguments: {usage}")]
    Usage {
        command: String,
        usage: &'static str,
    },
}

impl Cli {
    /// Classifies the positional arguments.
    pub fn invocation(&self) -> Result<Invocation, ArgsError> {
        if let Some((first, rest)) = self.args.split_first() {
            if COMMANDS.contains(&first.as_str()) {
                return Command::parse(first, rest).map(Invocation::Control);
            }
        }
        parse_serve_args(&self.args).map(Invocation::Serve)
    }
}

/// Folds positional tokens into [`ServeArgs`], rejecting repeats.
pub fn parse_serve_args(tokens: &[String]) -> Result<ServeArgs, ArgsError> {
    let mut args = ServeArgs::default();
    let mut seen: [Option<&str>; 4] = [None; 4];
    for raw in tokens {
        let token = Token::parse(raw)?;
        let (index, what) = match &token {
            Token::App(_) => (0, "app"),
            Token::Workers(_) => (1, "worker count"),
            Token::Restart(_) => (2, "restart policy"),
            Token::Listen(_) => (3, "listener"),
        };
        if let Some(first) = seen[index] {
            return Err(match token {
                Token::Listen(_) => ArgsError::TwoListeners {
                    first: first.to_string(),
                    second: raw.clone(),
                },
                _ => ArgsError::Repeated {
                    what,
                    first: first.to_string(),
                    second: raw.clone(),
                },
            });
        }
        seen[index] = Some(raw);
        match token {
            Token::App(path) => args.app = Some(path),
            Token::Workers(w) => args.workers = Some(w),
            Token::Restart(r) => args.restart = Some(r),
            Token::Listen(l) => args.listen = Some(l),
        }
    }
    Ok(args)
}

/// Digits only (no sign, no spaces), at most 18 of them so the value fits.
fn parse_digits(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > 18 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn parse_port(s: &str) -> Option<u16> {
    parse_digits(s).and_then(|n| u16::try_from(n).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn workers(s: &str) -> Result<WorkerCount, String> {
        WorkerCount::parse_value(s)
    }

    #[test]
    fn worker_forms() {
        assert_eq!(
            workers("4"),
            Ok(WorkerCount::Fixed(NonZeroUsize::new(4).unwrap()))
        );
        assert_eq!(workers("auto"), Ok(WorkerCount::Auto));
        assert_eq!(workers("half"), Ok(WorkerCount::Half));
        assert_eq!(workers("2x"), Ok(WorkerCount::PerCore(2)));
        assert_eq!(workers("3x"), Ok(WorkerCount::PerCore(3)));
        assert!(workers("abc")
            .unwrap_err()
            .contains("w: expects a worker count or 'auto'"));
        assert!(workers("0").is_err());
        assert!(workers("").is_err());
        assert!(workers("-1").is_err());
        assert!(workers("4x").is_err());
    }

    #[test]
    fn worker_resolution() {
        assert_eq!(WorkerCount::Half.resolve(1), 1);
        assert_eq!(WorkerCount::Half.resolve(8), 4);
        assert_eq!(WorkerCount::Auto.resolve(8), 8);
        assert_eq!(WorkerCount::PerCore(3).resolve(2), 6);
    }

    #[test]
    fn restart_forms() {
        let r = |s: &str| RestartSpec::parse_value(s);
        assert_eq!(
            r("100"),
            Ok(RestartSpec {
                requests: Some(100),
                seconds: None,
                reloads: None
            })
        );
        assert_eq!(
            r("60s,100"),
            Ok(RestartSpec {
                requests: Some(100),
                seconds: Some(60),
                reloads: None
            })
        );
        assert_eq!(
            r("5r,60s,100"),
            Ok(RestartSpec {
                requests: Some(100),
                seconds: Some(60),
                reloads: Some(5)
            })
        );
        assert!(r("100,200").unwrap_err().contains("requests given twice"));
        assert!(r("x").unwrap_err().contains("'x' is not one of those"));
        assert!(r("").is_err());
        assert!(r("10m").is_err());
    }

    #[test]
    fn token_classification() {
        assert_eq!(
            Token::parse("http"),
            Ok(Token::Listen(ListenSpec::Http(None)))
        );
        assert_eq!(
            Token::parse("http:5002"),
            Ok(Token::Listen(ListenSpec::Http(Some(5002))))
        );
        assert_eq!(
            Token::parse("5700"),
            Ok(Token::Listen(ListenSpec::Https(Some(5700))))
        );
        assert_eq!(
            Token::parse("https"),
            Ok(Token::Listen(ListenSpec::Https(None)))
        );
        assert_eq!(Token::parse("apps/api"), Ok(Token::App("apps/api".into())));
        let err = Token::parse("http:99999").unwrap_err();
        assert_eq!(err.token, "http:99999");
        assert!(err.to_string().contains("http: expects a port number"));
        assert!(Token::parse("70000").is_err());
    }

    #[test]
    fn http_and_https_together_is_an_error() {
        let tokens = vec!["http:5002".to_string(), "5700".to_string()];
        assert!(matches!(
            parse_serve_args(&tokens),
            Err(ArgsError::TwoListeners { .. })
        ));
        let tokens = vec!["5700".to_string(), "5701".to_string()];
        assert!(matches!(
            parse_serve_args(&tokens),
            Err(ArgsError::TwoListeners { .. })
        ));
    }

    #[test]
    fn commands_take_no_arguments() {
        let cli = Cli::parse_from(["rip-server", "stop"]);
        assert_eq!(cli.invocation(), Ok(Invocation::Control(Command::Stop)));
        let cli = Cli::parse_from(["rip-server", "stop", "api"]);
        assert!(matches!(
            cli.invocation(),
            Err(ArgsError::CommandArgs { .. })
        ));
        let cli = Cli::parse_from(["rip-server", "reload", "labs.example.com"]);
        assert_eq!(
            cli.invocation(),
            Ok(Invocation::Control(Command::Reload(Some(
                "labs.example.com".into()
            ))))
        );
    }

    #[test]
    fn registry_commands_take_their_arguments() {
        let cli = Cli::parse_from(["rip-server", "add", "a.example", "apps/a", "w:2", "r:100"]);
        let Ok(Invocation::Control(Command::Add(add))) = cli.invocation() else {
            panic!("{:?}", cli.invocation())
        };
        assert_eq!(add.host, "a.example");
        assert_eq!(add.app, PathBuf::from("apps/a"));
        assert_eq!(
            add.workers,
            Some(WorkerCount::Fixed(NonZeroUsize::new(2).unwrap()))
        );
        assert_eq!(add.restart.and_then(|r| r.requests), Some(100));
        for (argv, says) in [
            (&["add", "a.example"][..], "needs its arguments"),
            (
                &["add", "a.example", "apps/a", "http:80"],
                "does not take 'http:80'",
            ),
            (&["add", "a.example", "apps/a", "w:x"], "w: expects"),
            (&["remove"], "rip-server remove HOST"),
            (&["remove", "a", "b"], "does not take 'b'"),
        ] {
            let cli = Cli::parse_from(std::iter::once("rip-server").chain(argv.iter().copied()));
            let err = cli.invocation().unwrap_err().to_string();
            assert!(err.contains(says), "{argv:?}: {err}");
        }
        let cli = Cli::parse_from(["rip-server", "list", "--json"]);
        assert_eq!(cli.invocation(), Ok(Invocation::Control(Command::List)));
        assert!(cli.json);
    }

    fn arb_workers() -> impl Strategy<Value = WorkerCount> {
        prop_oneof![
            (1usize..=MAX_WORKERS).prop_map(|n| WorkerCount::Fixed(NonZeroUsize::new(n).unwrap())),
            Just(WorkerCount::Auto),
            Just(WorkerCount::Half),
            Just(WorkerCount::PerCore(2)),
            Just(WorkerCount::PerCore(3)),
        ]
    }

    fn arb_restart() -> impl Strategy<Value = RestartSpec> {
        (
            proptest::option::of(0u64..1_000_000),
            proptest::option::of(0u64..1_000_000),
            proptest::option::of(0u64..1_000),
        )
            .prop_filter("at least one part", |(a, b, c)| {
                a.is_some() || b.is_some() || c.is_some()
            })
            .prop_map(|(requests, seconds, reloads)| RestartSpec {
                requests,
                seconds,
                reloads,
            })
    }

    proptest! {
        #[test]
        fn workers_round_trip(w in arb_workers()) {
            prop_assert_eq!(Token::parse(&w.to_string()), Ok(Token::Workers(w)));
        }

        #[test]
        fn restart_round_trip(r in arb_restart()) {
            prop_assert_eq!(Token::parse(&r.to_string()), Ok(Token::Restart(r)));
        }

        #[test]
        fn listen_round_trip(port in any::<u16>(), http in any::<bool>()) {
            let spec = if http { ListenSpec::Http(Some(port)) } else { ListenSpec::Https(Some(port)) };
            prop_assert_eq!(Token::parse(&spec.to_string()), Ok(Token::Listen(spec)));
        }

        #[test]
        fn malformed_worker_tokens_name_the_token(value in "[^0-9]*[a-zA-Z_ -][^:]*") {
            prop_assume!(!["auto", "half", "2x", "3x"].contains(&value.as_str()));
            let token = format!("w:{value}");
            let err = Token::parse(&token).unwrap_err();
            prop_assert_eq!(&err.token, &token);
            let message = err.to_string();
            prop_assert!(message.contains(&token));
            prop_assert!(message.contains("w: expects a worker count or 'auto'"));
        }

        #[test]
        fn malformed_restart_tokens_name_the_token(value in "[0-9a-z,]{0,12}") {
            let token = format!("r:{value}");
            match Token::parse(&token) {
                Ok(Token::Restart(spec)) => {
                    // Accepted only if it is a well-formed spec that prints back to the same parts.
                    prop_assert_eq!(RestartSpec::parse_value(&value), Ok(spec));
                    for part in value.split(',') {
                        prop_assert!(part.trim_end_matches(['s', 'r']).bytes().all(|b| b.is_ascii_digit()));
                    }
                }
                Ok(other) => prop_assert!(false, "r: token classified as {:?}", other),
                Err(err) => {
                    prop_assert_eq!(&err.token, &token);
                    prop_assert!(err.to_string().contains("r: expects N[,Ss][,Rr]"));
                }
            }
        }

        #[test]
        fn malformed_ports_name_the_token(port in 65536u64..10_000_000) {
            let token = format!("http:{port}");
            let err = Token::parse(&token).unwrap_err();
            prop_assert_eq!(err.token, token);
        }
    }
}
