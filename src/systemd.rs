//! systemd integration (DESIGN §10): notifications, the watchdog, and
//! listening sockets passed by socket activation.
//!
//! systemd hands a service its notify socket (`NOTIFY_SOCKET`), its watchdog
//! period (`WATCHDOG_USEC`, `WATCHDOG_PID`) and, with socket activation, open
//! listening sockets as fd 3 onwards (`LISTEN_PID`, `LISTEN_FDS`,
//! `LISTEN_FDNAMES`). [`take_from_env`] reads all of it once, in `main`
//! before any thread starts, and removes it from the environment: workers
//! are child processes and must neither notify systemd in the server's name
//! nor inherit listening sockets (adopted fds are made close-on-exec too).
//!
//! Notifications follow `sd_notify(3)` and `Type=notify-reload`:
//! `READY=1` once every worker of the first generation serves; on SIGHUP
//! `RELOADING=1` with `MONOTONIC_USEC`, then `READY=1` when the roll ends
//! (a failure is said in `STATUS=`); `STOPPING=1` when a stop begins;
//! `WATCHDOG=1` every half period while the supervisors answer
//! ([`heartbeat`], which also keeps `STATUS=` current). Without
//! `NOTIFY_SOCKET` every call here does nothing.
//!
//! Passed sockets are matched to the listeners the configuration asks for
//! by name (`FileDescriptorName=https`/`http`), else by port, else in order;
//! a socket that fits no listener is an error, never silently left open.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use nix::sys::socket::{getsockopt, sockopt};

use crate::apps::{AppsHandle, Rolling};
use crate::config::{Listen, PortChoice, Redirect};

/// The first fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// More passed sockets than this is a misconfiguration, not a use case.
const MAX_LISTEN_FDS: usize = 16;

/// Every variable systemd sets for us, removed once read.
pub(crate) const SYSTEMD_VARS: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
];

/// A problem with what systemd passed, said so an operator can fix the unit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SystemdError {
    #[error("socket activation: {0}")]
    Listen(String),
}

/// What systemd passed, read once by [`take_from_env`].
struct Inherited {
    notifier: Option<Notifier>,
    watchdog: Option<Duration>,
    /// Taken by [`take_listeners`]; `Err` if the variables were malformed.
    sockets: Mutex<Option<Result<Vec<PassedSocket>, SystemdError>>>,
}

static INHERITED: OnceLock<Inherited> = OnceLock::new();

fn inherited() -> Option<&'static Inherited> {
    INHERITED.get()
}

/// Reads what systemd passed and removes it from the environment. Call it
/// first thing in `main`, while the process has one thread (removing
/// environment variables is not thread-safe). Later calls do nothing.
pub fn take_from_env() {
    INHERITED.get_or_init(|| {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let pid = std::process::id();
        let notifier = var("NOTIFY_SOCKET").and_then(|path| Notifier::new(&path).ok());
        let watchdog = watchdog_period(
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            pid,
        );
        let sockets = listen_fds(
            var("LISTEN_PID").as_deref(),
            var("LISTEN_FDS").as_deref(),
            var("LISTEN_FDNAMES").as_deref(),
            pid,
        )
        .and_then(|fds| fds.into_iter().map(|(fd, name)| adopt(fd, name)).collect());
        for name in SYSTEMD_VARS {
            std::env::remove_var(name);
        }
        Inherited {
            notifier,
            watchdog,
            sockets: Mutex::new(Some(sockets)),
        }
    });
}

// ---------------------------------------------------------------------------
// Notifications

/// A datagram socket aimed at systemd's notify socket.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    address: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// `path` is `NOTIFY_SOCKET`: a file system path, or `@name` for an
    /// abstract socket.
    pub fn new(path: &str) -> io::Result<Notifier> {
        let address = match path.strip_prefix('@') {
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())?
            }
            None if path.starts_with('/') => std::os::unix::net::SocketAddr::from_pathname(path)?,
            None => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("NOTIFY_SOCKET={path} is neither an absolute path nor @abstract"),
                ))
            }
        };
        Ok(Notifier {
            socket: UnixDatagram::unbound()?,
            address,
        })
    }

    /// Sends one notification (newline-separated `KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket
            .send_to_addr(state.as_bytes(), &self.address)
            .map(drop)
    }
}

/// Sends `state` to systemd, if it is listening; a failure is logged, never
/// fatal (the server serves whether or not systemd hears about it).
fn notify(state: &str) {
    let Some(notifier) = inherited().and_then(|i| i.notifier.as_ref()) else {
        return;
    };
    if let Err(e) = notifier.send(state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}

/// Whether systemd asked for notifications.
pub fn is_notifying() -> bool {
    inherited().is_some_and(|i| i.notifier.is_some())
}

/// STATUS= must be one line.
fn one_line(status: &str) -> String {
    status.replace('\n', " ")
}

/// Set once the first `READY=1` went out; status refreshes wait for it.
static READY_SENT: AtomicBool = AtomicBool::new(false);

/// The server is serving: startup finished, or a reload ended.
pub fn ready(status: &str) {
    READY_SENT.store(true, Ordering::Relaxed);
    notify(&format!("READY=1\nSTATUS={}", one_line(status)));
}

/// A reload began (`Type=notify-reload`); systemd waits for [`ready`].
pub fn reloading(status: &str) {
    notify(&reloading_message(monotonic_usec(), status));
}

fn reloading_message(usec: u64, status: &str) -> String {
    format!(
        "RELOADING=1\nMONOTONIC_USEC={usec}\nSTATUS={}",
        one_line(status)
    )
}

/// A stop began.
pub fn stopping(status: &str) {
    notify(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
}

/// A new human-readable status line.
pub fn status(status: &str) {
    notify(&format!("STATUS={}", one_line(status)));
}

/// Tells the watchdog the server is alive.
pub fn watchdog_ping() {
    notify("WATCHDOG=1");
}

/// How often to ping the watchdog (half its period), if systemd asked.
pub fn watchdog_interval() -> Option<Duration> {
    inherited()
        .and_then(|i| i.watchdog)
        .map(|period| period / 2)
}

/// The status line systemd shows, e.g. `serving 1 app, 4 workers, generation 3`.
pub fn status_line(apps: usize, workers: usize, generation: u64) -> String {
    let plural = |n: usize| if n == 1 { "" } else { "s" };
    format!(
        "serving {apps} app{}, {workers} worker{}, generation {generation}",
        plural(apps),
        plural(workers)
    )
}

/// `CLOCK_MONOTONIC` in microseconds, the clock systemd stamps reloads with.
fn monotonic_usec() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map(|t| t.tv_sec() as u64 * 1_000_000 + t.tv_nsec() as u64 / 1_000)
        .unwrap_or(0)
}

/// The watchdog period, if it is set and meant for this process.
fn watchdog_period(usec: Option<&str>, pid: Option<&str>, my_pid: u32) -> Option<Duration> {
    if pid.is_some_and(|p| p.trim().parse::<u32>().ok() != Some(my_pid)) {
        return None;
    }
    let usec: u64 = usec?.trim().parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

// ---------------------------------------------------------------------------
// What the server tells systemd, and when

/// Tells systemd how a SIGHUP reload ended: `READY=1` either way (the
/// server keeps serving), with the failure in `STATUS=` if there was one.
pub async fn report_reload(rolls: Result<Vec<Rolling>, String>, apps: AppsHandle) {
    let failure = match rolls {
        Err(config_error) => Some(format!("config reload failed: {config_error}")),
        Ok(rolls) => {
            let mut failures = Vec::new();
            for (app, outcome) in rolls {
                match outcome.await {
                    Ok(outcome) if outcome.ok => {}
                    Ok(outcome) => failures.push(format!(
                        "{app}: {}",
                        outcome
                            .error
                            .as_deref()
                            .unwrap_or("the new workers did not become ready")
                    )),
                    Err(_) => failures.push(format!("{app}: it stopped")),
                }
            }
            (!failures.is_empty()).then(|| format!("reload failed: {}", failures.join("; ")))
        }
    };
    let line = status_of(&apps).await;
    match failure {
        None => ready(&line),
        Some(failure) => ready(&format!("{failure}; still {line}")),
    }
}

/// `serving 3 apps, 8 workers, generation 4`, from the supervisors' view
/// (the generation is the newest any app has reached).
pub async fn status_of(apps: &AppsHandle) -> String {
    let table = apps.table();
    let mut serving = 0;
    let mut generation = 0;
    for (app, _) in table.apps() {
        let Some(status) = app.supervisor.status().await else {
            return "stopping".to_string();
        };
        serving += status
            .workers
            .iter()
            .filter(|w| w.generation == status.generation)
            .filter(|w| matches!(w.state, "serving" | "recycling"))
            .count();
        generation = generation.max(status.generation);
    }
    status_line(table.apps().len(), serving, generation)
}

/// How often the status line is refreshed when systemd asked for no watchdog.
const STATUS_REFRESH: Duration = Duration::from_secs(5);

/// Pings systemd's watchdog while the supervisor answers, and keeps the
/// status line current (recycles and file-change rolls change it too). A
/// supervisor that does not answer within the period gets no ping, so
/// systemd restarts a hung server.
pub async fn heartbeat(apps: AppsHandle) {
    if !is_notifying() {
        return;
    }
    let watchdog = watchdog_interval();
    let period = watchdog.unwrap_or(STATUS_REFRESH);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = String::new();
    loop {
        tick.tick().await;
        match tokio::time::timeout(period, status_of(&apps)).await {
            Ok(line) => {
                if watchdog.is_some() {
                    watchdog_ping();
                }
                // Before READY=1 the line would say 0 workers; startup says enough.
                if line != last && READY_SENT.load(Ordering::Relaxed) {
                    status(&line);
                    last = line;
                }
            }
            Err(_) => tracing::warn!(
                period_ms = period.as_millis() as u64,
                "the supervisor did not answer in time; the systemd watchdog is not pinged"
            ),
        }
    }
}

// ---------------------------------------------------------------------------
// Socket activation

/// One listening socket systemd passed.
#[derive(Debug)]
pub struct PassedSocket {
    pub listener: std::net::TcpListener,
    pub name: Option<String>,
    pub address: SocketAddr,
}

/// The passed fds and their names, if the variables are meant for us
/// (`sd_listen_fds(3)`: `LISTEN_PID` must be this process).
fn listen_fds(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    names: Option<&str>,
    my_pid: u32,
) -> Result<Vec<(RawFd, Option<String>)>, SystemdError> {
    let fail = |message: String| Err(SystemdError::Listen(message));
    let (Some(listen_pid), Some(count)) = (listen_pid, listen_fds) else {
        return Ok(Vec::new());
    };
    if listen_pid.trim().parse::<u32>().ok() != Some(my_pid) {
        // Meant for another process (a parent that did not clear them).
        return Ok(Vec::new());
    }
    let count: usize = match count.trim().parse() {
        Ok(n) if n <= MAX_LISTEN_FDS => n,
        _ => {
            return fail(format!(
                "LISTEN_FDS={count} is not a socket count from 0 to {MAX_LISTEN_FDS}"
            ))
        }
    };
    let names: Vec<Option<String>> = match names {
        None => vec![None; count],
        Some(names) => names
            .split(':')
            .map(|n| Some(n.to_string()).filter(|n| !n.is_empty() && n != "unknown"))
            .collect(),
    };
    if names.len() != count {
        return fail(format!(
            "LISTEN_FDNAMES names {} sockets but LISTEN_FDS is {count}",
            names.len()
        ));
    }
    Ok((LISTEN_FDS_START..)
        .zip(names)
        .take(count)
        .collect::<Vec<_>>())
}

/// Takes ownership of passed fd `fd`, after checking it is a listening TCP
/// socket, and makes it close-on-exec so workers never inherit it.
fn adopt(fd: RawFd, name: Option<String>) -> Result<PassedSocket, SystemdError> {
    let what = || match &name {
        Some(name) => format!("fd {fd} ('{name}')"),
        None => format!("fd {fd}"),
    };
    let fail = |problem: String| {
        SystemdError::Listen(format!(
            "{} {problem}; rip-server takes TCP stream sockets (ListenStream= in the .socket unit)",
            what()
        ))
    };
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::F_GETFD)
        .map_err(|e| fail(format!("is not open ({e})")))?;
    let flags = nix::fcntl::FdFlag::from_bits_truncate(flags) | nix::fcntl::FdFlag::FD_CLOEXEC;
    nix::fcntl::fcntl(fd, nix::fcntl::F_SETFD(flags))
        .map_err(|e| fail(format!("cannot be made close-on-exec ({e})")))?;
    // SAFETY: systemd passed fds LISTEN_FDS_START.. to this process and
    // nothing else in it owns them; each is adopted exactly once, here.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    match getsockopt(&owned.as_fd(), sockopt::SockType) {
        Ok(nix::sys::socket::SockType::Stream) => {}
        Ok(other) => return Err(fail(format!("is a {other:?} socket"))),
        Err(e) => return Err(fail(format!("is not a socket ({e})"))),
    }
    if !getsockopt(&owned.as_fd(), sockopt::AcceptConn).unwrap_or(false) {
        return Err(fail("is not listening".into()));
    }
    let listener = std::net::TcpListener::from(owned);
    let address = listener
        .local_addr()
        .map_err(|e| fail(format!("is not an IPv4 or IPv6 socket ({e})")))?;
    Ok(PassedSocket {
        listener,
        name,
        address,
    })
}

/// Which listener a passed socket serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTPS listener, or the plain HTTP one with `http`.
    Main,
    /// The plain-HTTP redirect to HTTPS.
    Redirect,
}

/// The listeners a configuration asks for, as socket activation sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// `FileDescriptorName=` values that mean the main listener.
    pub main_names: &'static [&'static str],
    pub main_port: Option<u16>,
    /// Names and port of the redirect listener, if there is one.
    pub redirect: Option<(&'static [&'static str], u16)>,
}

impl Wanted {
    pub fn for_listen(listen: &Listen) -> Wanted {
        let fixed = |choice: &PortChoice| match choice {
            PortChoice::Fixed(port) => Some(*port),
            PortChoice::FirstFree { .. } => None,
        };
        match listen {
            Listen::Http(choice) => Wanted {
                main_names: &["http"],
                main_port: fixed(choice),
                redirect: None,
            },
            Listen::Https(https) => Wanted {
                main_names: &["https"],
                main_port: fixed(&https.port),
                redirect: match https.redirect {
                    Redirect::Off => None,
                    Redirect::From(port) => Some((&["http", "redirect"], port)),
                },
            },
        }
    }
}

/// Gives each passed socket (name, port) a role: by name, else by port,
/// else the first free role in order (main, then redirect). Every socket must
/// get a role and no role two sockets.
pub fn assign(passed: &[(Option<&str>, u16)], wanted: &Wanted) -> Result<Vec<Role>, String> {
    let mut roles = passed
        .iter()
        .map(|(name, port)| preferred_role(*name, *port, wanted))
        .collect::<Result<Vec<_>, _>>()?;
    for i in 0..roles.len() {
        if roles[i].is_none() {
            roles[i] = wanted
                .roles()
                .into_iter()
                .find(|role| !roles.contains(&Some(*role)));
        }
    }
    let mut taken = Vec::new();
    for ((_, port), role) in passed.iter().zip(&roles) {
        match role {
            None => {
                return Err(format!(
                    "{} sockets were passed, but this configuration has {}; \
                     the socket on port {port} fits none",
                    passed.len(),
                    wanted.describe()
                ))
            }
            Some(role) if taken.contains(role) => {
                return Err(format!(
                    "two sockets were passed for the {} listener (the second on port {port}); \
                     this configuration has {}",
                    role.as_str(),
                    wanted.describe()
                ))
            }
            Some(role) => taken.push(*role),
        }
    }
    Ok(roles.into_iter().flatten().collect())
}

/// The role a socket's name or port asks for, if any.
fn preferred_role(name: Option<&str>, port: u16, wanted: &Wanted) -> Result<Option<Role>, String> {
    let named = |names: &[&str]| name.is_some_and(|n| names.contains(&n));
    if named(wanted.main_names) {
        return Ok(Some(Role::Main));
    }
    if wanted.redirect.is_some_and(|(names, _)| named(names)) {
        return Ok(Some(Role::Redirect));
    }
    if let Some(name) = name.filter(|n| matches!(*n, "https" | "http" | "redirect")) {
        return Err(format!(
            "a socket named '{name}' was passed, but this configuration has {}",
            wanted.describe()
        ));
    }
    if wanted.main_port == Some(port) {
        return Ok(Some(Role::Main));
    }
    if wanted.redirect.is_some_and(|(_, p)| p == port) {
        return Ok(Some(Role::Redirect));
    }
    Ok(None)
}

impl Role {
    fn as_str(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Redirect => "redirect",
        }
    }
}

impl Wanted {
    fn roles(&self) -> Vec<Role> {
        let mut roles = vec![Role::Main];
        if self.redirect.is_some() {
            roles.push(Role::Redirect);
        }
        roles
    }

    fn describe(&self) -> String {
        let port =
            |p: Option<u16>| p.map_or_else(|| "any port".to_string(), |p| format!("port {p}"));
        let main = if self.main_names.contains(&"https") {
            format!("an HTTPS listener ({})", port(self.main_port))
        } else {
            format!("one plain HTTP listener ({})", port(self.main_port))
        };
        match self.redirect {
            Some((_, p)) => format!("{main} and an HTTP redirect (port {p})"),
            None => format!("{main} only"),
        }
    }
}

/// The passed sockets, by the listener they serve.
#[derive(Debug, Default)]
pub struct Adopted {
    pub main: Option<std::net::TcpListener>,
    pub redirect: Option<std::net::TcpListener>,
    /// `address (role)` of each, for the startup banner.
    pub described: Vec<String>,
}

/// Takes the sockets systemd passed (once) and matches them to the
/// listeners `listen` asks for. Listeners without a passed socket are bound
/// by the server as usual.
pub fn take_listeners(listen: &Listen) -> Result<Adopted, SystemdError> {
    let taken = inherited().and_then(|i| {
        i.sockets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
    });
    let sockets = match taken {
        None => return Ok(Adopted::default()),
        Some(sockets) => sockets?,
    };
    let wanted = Wanted::for_listen(listen);
    let keys: Vec<_> = sockets
        .iter()
        .map(|s| (s.name.as_deref(), s.address.port()))
        .collect();
    let roles = assign(&keys, &wanted).map_err(SystemdError::Listen)?;
    let mut adopted = Adopted::default();
    for (socket, role) in sockets.into_iter().zip(roles) {
        adopted
            .described
            .push(format!("{} ({})", socket.address, role.as_str()));
        match role {
            Role::Main => adopted.main = Some(socket.listener),
            Role::Redirect => adopted.redirect = Some(socket.listener),
        }
    }
    Ok(adopted)
}

/// Hands an adopted listener to tokio (which needs it non-blocking).
pub fn into_tokio(listener: std::net::TcpListener) -> io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HTTPS_WITH_REDIRECT: Wanted = Wanted {
        main_names: &["https"],
        main_port: Some(443),
        redirect: Some((&["http", "redirect"], 80)),
    };
    const PLAIN: Wanted = Wanted {
        main_names: &["http"],
        main_port: Some(8080),
        redirect: None,
    };

    #[test]
    fn listen_fds_are_ours_only_with_our_pid() {
        assert_eq!(listen_fds(Some("41"), Some("2"), None, 42), Ok(Vec::new()));
        assert_eq!(listen_fds(None, Some("2"), None, 42), Ok(Vec::new()));
        assert_eq!(
            listen_fds(Some("42"), Some("2"), Some("https:http"), 42),
            Ok(vec![(3, Some("https".into())), (4, Some("http".into()))])
        );
        assert_eq!(
            listen_fds(Some("42"), Some("1"), Some("unknown"), 42),
            Ok(vec![(3, None)])
        );
        assert_eq!(listen_fds(Some("42"), Some("0"), None, 42), Ok(Vec::new()));
    }

    #[test]
    fn malformed_listen_variables_say_what_is_wrong() {
        let err = listen_fds(Some("42"), Some("two"), None, 42).unwrap_err();
        assert!(err.to_string().contains("LISTEN_FDS=two"), "{err}");
        let err = listen_fds(Some("42"), Some("2"), Some("https"), 42).unwrap_err();
        assert!(err.to_string().contains("names 1 sockets"), "{err}");
        assert!(listen_fds(Some("42"), Some("99"), None, 42).is_err());
    }

    #[test]
    fn sockets_are_matched_by_name_then_port_then_order() {
        let a = |p: &[(Option<&str>, u16)], w: &Wanted| assign(p, w);
        // Names win over ports and order.
        assert_eq!(
            a(
                &[(Some("http"), 443), (Some("https"), 80)],
                &HTTPS_WITH_REDIRECT
            ),
            Ok(vec![Role::Redirect, Role::Main])
        );
        // One unit, one name for both (FileDescriptorName unset): by port.
        let unit = Some("rip-server.socket");
        assert_eq!(
            a(&[(unit, 80), (unit, 443)], &HTTPS_WITH_REDIRECT),
            Ok(vec![Role::Redirect, Role::Main])
        );
        // Nothing to go by: in order.
        assert_eq!(
            a(&[(None, 5000), (None, 5001)], &HTTPS_WITH_REDIRECT),
            Ok(vec![Role::Main, Role::Redirect])
        );
        // A port match claims its role before order fills the rest.
        assert_eq!(
            a(&[(None, 5000), (None, 443)], &HTTPS_WITH_REDIRECT),
            Ok(vec![Role::Redirect, Role::Main])
        );
        assert_eq!(a(&[(None, 9999)], &PLAIN), Ok(vec![Role::Main]));
    }

    #[test]
    fn sockets_that_fit_no_listener_are_refused() {
        let err = assign(&[(None, 1), (None, 2)], &PLAIN).unwrap_err();
        assert!(err.contains("fits none") && err.contains("port 2"), "{err}");
        let err = assign(&[(Some("https"), 443)], &PLAIN).unwrap_err();
        assert!(err.contains("named 'https'"), "{err}");
        let err = assign(&[(Some("http"), 1), (Some("http"), 2)], &PLAIN).unwrap_err();
        assert!(err.contains("two sockets"), "{err}");
    }

    #[test]
    fn watchdog_is_ours_only_with_our_pid() {
        assert_eq!(
            watchdog_period(Some("2000000"), None, 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            watchdog_period(Some("2000000"), Some("7"), 7),
            Some(Duration::from_secs(2))
        );
        assert_eq!(watchdog_period(Some("2000000"), Some("8"), 7), None);
        assert_eq!(watchdog_period(Some("0"), None, 7), None);
        assert_eq!(watchdog_period(None, None, 7), None);
    }

    #[test]
    fn notifications_reach_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let systemd = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::new(path.to_str().unwrap()).unwrap();
        notifier.send("READY=1\nSTATUS=ok").unwrap();
        let mut buf = [0u8; 256];
        let n = systemd.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=ok");
        assert!(Notifier::new("relative/path").is_err());
    }

    #[test]
    fn reload_messages_carry_the_monotonic_time() {
        let before = monotonic_usec();
        let message = reloading_message(monotonic_usec(), "rolling\nnow");
        let usec: u64 = message
            .lines()
            .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(usec >= before && usec <= monotonic_usec());
        assert!(message.starts_with("RELOADING=1\n"));
        assert!(message.ends_with("STATUS=rolling now"));
    }

    #[test]
    fn status_lines_read_like_a_sentence() {
        assert_eq!(
            status_line(1, 1, 1),
            "serving 1 app, 1 worker, generation 1"
        );
        assert_eq!(
            status_line(3, 8, 4),
            "serving 3 apps, 8 workers, generation 4"
        );
    }
}
