//! The commands that are not `serve`: `status`, `reload [HOST]` and `stop`
//! talk to a running instance over its control socket; `add`, `remove` and
//! `list` edit and show the host registry (and ask a running instance, if
//! there is one, what it serves).
//!
//! Every failure is an [`Error`] that says what was wrong and what to do;
//! `main` prints it and exits 2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, StatusCode};

use crate::app::App;
use crate::cli::{AddArgs, Cli, Command};
use crate::config::{self, ProcessEnv};
use crate::registry::{self, HostPattern, RawEntry, RawRegistry, RawWorkers, RegistryError};
use crate::{control, tls, Error};

/// How long `add` and `remove` wait for a running server to apply them.
const APPLY_WAIT: Duration = Duration::from_secs(20);

/// How long a command waits for one answer from the control socket,
/// unless `--timeout-ms`: a live instance answers in milliseconds.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// The wait for one answer: `--timeout-ms`, else `default`.
fn answer_wait(cli: &Cli, default: Duration) -> Duration {
    cli.timeout_ms.map_or(default, Duration::from_millis)
}

/// Runs one command.
pub async fn run(cli: &Cli, command: Command) -> Result<(), Error> {
    match command {
        Command::Status => status(cli).await,
        Command::Stop => stop(cli).await,
        Command::Reload(host) => reload(cli, host).await,
        Command::Add(args) => add(cli, args).await,
        Command::Remove(host) => remove(cli, &host).await,
        Command::List => list(cli).await,
    }
}

/// The control socket of the instance the command is for.
fn instance_socket(cli: &Cli) -> Result<PathBuf, Error> {
    let runtime_dir = config::runtime_dir(&ProcessEnv);
    Ok(control::find_socket(&runtime_dir, cli.name.as_deref())?)
}

/// One call to the instance, bounded by [`answer_wait`]; a refusal is an
/// error that says why.
async fn call(cli: &Cli, socket: &Path, method: Method, path: &str) -> Result<String, Error> {
    let limit = answer_wait(cli, ANSWER_WAIT);
    let (status, body) = control::call_within(socket, method, path, Bytes::new(), limit).await?;
    if !status.is_success() && status != StatusCode::CONFLICT {
        return Err(Error::Refused {
            status,
            body: body.trim().to_string(),
        });
    }
    Ok(body)
}

async fn status(cli: &Cli) -> Result<(), Error> {
    let body = call(cli, &instance_socket(cli)?, Method::GET, "/status").await?;
    match serde_json::from_str::<serde_json::Value>(&body) {
        Ok(value) => say!("{}", serde_json::to_string_pretty(&value).unwrap_or(body)),
        Err(_) => say!("{body}"),
    }
    Ok(())
}

async fn stop(cli: &Cli) -> Result<(), Error> {
    let socket = instance_socket(cli)?;
    call(cli, &socket, Method::POST, "/stop").await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while socket.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    say!("stopped");
    Ok(())
}

async fn reload(cli: &Cli, host: Option<String>) -> Result<(), Error> {
    let host = match host {
        Some(host) => Some(
            HostPattern::parse(&host)
                .map_err(RegistryError::from)?
                .to_string(),
        ),
        None => None,
    };
    let path = match &host {
        Some(host) => format!("/reload?host={}", encode_query(host)),
        None => "/reload".to_string(),
    };
    let socket = instance_socket(cli)?;
    // The instance answers when its rolls end (or at control::ROLL_WAIT).
    let limit = answer_wait(cli, control::ROLL_WAIT + ANSWER_WAIT);
    let (status, body) =
        control::call_within(&socket, Method::POST, &path, Bytes::new(), limit).await?;
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if status == StatusCode::NOT_FOUND || status == StatusCode::BAD_REQUEST {
        return Err(Error::Refused {
            status,
            body: answer["error"].as_str().unwrap_or(body.trim()).to_string(),
        });
    }
    let mut failures = Vec::new();
    for roll in answer["rolls"].as_array().into_iter().flatten() {
        let app = roll["app"].as_str().unwrap_or("?");
        if roll["ok"] == true {
            say!(
                "{app}: rolled to generation {} in {} ms",
                roll["generation"],
                roll["duration_ms"]
            );
        } else {
            let error = roll["error"]
                .as_str()
                .unwrap_or("the new workers did not become ready");
            failures.push(format!("{app}: {error}"));
        }
    }
    match status {
        s if s.is_success() && failures.is_empty() => Ok(()),
        StatusCode::ACCEPTED => {
            say!("still rolling after the wait; 'rip-server status' shows how it ends");
            Ok(())
        }
        _ if !failures.is_empty() => Err(Error::RollFailed(failures.join("; "))),
        status => Err(Error::Refused {
            status,
            body: body.trim().to_string(),
        }),
    }
}

/// Percent-encodes what is not a plain host character.
fn encode_query(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'*' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The registry file the commands edit, or why they may not: a `[hosts]`
/// table in the `--config` file, or a running instance that uses one, is
/// read-only.
async fn editable_registry(cli: &Cli) -> Result<PathBuf, Error> {
    if let Some(path) = &cli.config {
        if config_declares_hosts(path)? {
            return Err(Error::Declarative(path.clone()));
        }
    }
    if let Some(running) = running_status(cli).await {
        if running["registry"]["source"] == "config" {
            let path = running["registry"]["path"]
                .as_str()
                .unwrap_or("its --config file");
            return Err(Error::Declarative(PathBuf::from(path)));
        }
    }
    Ok(registry::file_in(&config::state_dir(&ProcessEnv)))
}

fn config_declares_hosts(path: &Path) -> Result<bool, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| {
        Error::Config(config::ConfigError::ReadFile {
            path: path.to_path_buf(),
            source,
        })
    })?;
    Ok(text
        .parse::<toml::Table>()
        .is_ok_and(|table| table.contains_key("hosts")))
}

/// The running instance's `/status`, if there is exactly one to ask.
async fn running_status(cli: &Cli) -> Option<serde_json::Value> {
    let socket = instance_socket(cli).ok()?;
    let body = call(cli, &socket, Method::GET, "/status").await.ok()?;
    serde_json::from_str(&body).ok()
}

async fn add(cli: &Cli, args: AddArgs) -> Result<(), Error> {
    let pattern = HostPattern::parse(&args.host).map_err(RegistryError::from)?;
    let app_path = std::path::absolute(&args.app).map_err(Error::Io)?;
    let app = App::resolve(&app_path).map_err(|source| RegistryError::App {
        host: pattern.to_string(),
        source,
    })?;
    let tls = match (cli.cert.as_slice(), cli.key.as_slice()) {
        ([], []) => None,
        ([cert], [key]) => {
            let (cert, key) = (std::path::absolute(cert)?, std::path::absolute(key)?);
            tls::material::load(&cert, &key)?;
            Some((cert, key))
        }
        _ => return Err(Error::AddCertPair),
    };
    let entry = RawEntry {
        app: app.entry.clone(),
        workers: args.workers.map(|w| RawWorkers::Form(w.to_string())),
        restart: args.restart.map(|r| r.to_string()),
        reload: cli.reload,
        cert: tls.as_ref().map(|(cert, _)| cert.clone()),
        key: tls.map(|(_, key)| key),
    };
    let file = editable_registry(cli).await?;
    let host = pattern.to_string();
    let replaced = registry::edit(&file, |raw| {
        // Another spelling of the same name is the same entry.
        raw.hosts
            .retain(|name, _| HostPattern::parse(name).map_or(true, |p| p != pattern));
        let replaced = raw.hosts.insert(host.clone(), entry.clone()).is_some();
        check_whole(raw, &file)?;
        Ok(replaced)
    })?;
    say!(
        "{} {host} -> {} in {}",
        if replaced { "updated" } else { "added" },
        app.entry.display(),
        file.display()
    );
    announce(cli, &host, true).await;
    Ok(())
}

/// The registry as it would be written must still be valid as a whole
/// (say, two hosts of one app with different settings).
fn check_whole(raw: &RawRegistry, file: &Path) -> Result<(), RegistryError> {
    raw.validate(file.parent().unwrap_or(Path::new("/")))
        .map(drop)
}

async fn remove(cli: &Cli, host: &str) -> Result<(), Error> {
    let pattern = HostPattern::parse(host).map_err(RegistryError::from)?;
    let file = editable_registry(cli).await?;
    let removed = registry::edit(&file, |raw| {
        let before = raw.hosts.len();
        raw.hosts
            .retain(|name, _| HostPattern::parse(name).map_or(true, |p| p != pattern));
        Ok(raw.hosts.len() < before)
    })?;
    if !removed {
        return Err(Error::NotRegistered(pattern.to_string()));
    }
    say!("removed {pattern} from {}", file.display());
    announce(cli, &pattern.to_string(), false).await;
    Ok(())
}

/// Waits (bounded) until a running instance serves `host` (or no longer
/// does), and says so; says what to expect when none runs.
async fn announce(cli: &Cli, host: &str, served: bool) {
    let Ok(socket) = instance_socket(cli) else {
        say!("no server is running: the change applies when rip-server starts");
        return;
    };
    let deadline = Instant::now() + APPLY_WAIT;
    loop {
        let status = call(cli, &socket, Method::GET, "/status")
            .await
            .ok()
            .and_then(|body| serde_json::from_str::<serde_json::Value>(&body).ok());
        let Some(status) = status else {
            say!("no server answered: the change applies when rip-server starts");
            return;
        };
        let serving = status["hosts"]
            .as_array()
            .is_some_and(|hosts| hosts.iter().any(|h| h == host));
        if serving == served {
            say!(
                "the running server {} {host}",
                if served {
                    "now serves"
                } else {
                    "no longer serves"
                }
            );
            return;
        }
        if let Some(error) = status["registry"]["error"].as_str() {
            say!("the running server did not apply the change: {error}");
            return;
        }
        if Instant::now() > deadline {
            say!(
                "the running server has not applied the change after {} s; 'rip-server status' shows why",
                APPLY_WAIT.as_secs()
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn list(cli: &Cli) -> Result<(), Error> {
    let (raw, file, base) = match &cli.config {
        Some(path) if config_declares_hosts(path)? => {
            let text = std::fs::read_to_string(path)?;
            let table: toml::Table =
                text.parse()
                    .map_err(|e: toml::de::Error| RegistryError::Parse {
                        path: path.clone(),
                        message: e.message().to_string(),
                    })?;
            let hosts = toml::Value::Table(table)
                .get("hosts")
                .cloned()
                .unwrap_or(toml::Value::Table(Default::default()));
            let raw = RawRegistry {
                hosts: hosts
                    .try_into()
                    .map_err(|e: toml::de::Error| RegistryError::Parse {
                        path: path.clone(),
                        message: e.message().to_string(),
                    })?,
            };
            let base = path.parent().unwrap_or(Path::new("/")).to_path_buf();
            (raw, path.clone(), base)
        }
        _ => {
            let file = registry::file_in(&config::state_dir(&ProcessEnv));
            let base = file.parent().unwrap_or(Path::new("/")).to_path_buf();
            (registry::read_file(&file)?, file, base)
        }
    };
    let running = running_status(cli).await;
    let served: Vec<String> = running
        .as_ref()
        .and_then(|s| s["hosts"].as_array())
        .map(|hosts| {
            hosts
                .iter()
                .filter_map(|h| h.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let rows: Vec<serde_json::Value> = raw
        .hosts
        .iter()
        .map(|(name, entry)| {
            let host = HostPattern::parse(name).map_or_else(|_| name.clone(), |p| p.to_string());
            serde_json::json!({
                "host": host,
                "app": base.join(&entry.app),
                "workers": match &entry.workers {
                    Some(RawWorkers::Count(n)) => n.to_string(),
                    Some(RawWorkers::Form(form)) => form.clone(),
                    None => "default".into(),
                },
                "restart": entry.restart,
                "reload": entry.reload.map(|r| r.as_str()),
                "cert": entry.cert.as_ref().map(|c| base.join(c)),
                "served": served.contains(&host),
            })
        })
        .collect();
    if cli.json {
        let doc = serde_json::json!({
            "registry": file,
            "running": running.is_some(),
            "hosts": rows,
        });
        say!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        return Ok(());
    }
    if rows.is_empty() {
        say!(
            "no hosts registered in {} (rip-server add HOST APP registers one)",
            file.display()
        );
        return Ok(());
    }
    let width = rows
        .iter()
        .map(|r| r["host"].as_str().map_or(0, str::len))
        .max()
        .unwrap_or(4)
        .max(4);
    say!("{:width$}  {:7}  {:6}  APP", "HOST", "WORKERS", "SERVED");
    for row in &rows {
        let served = match (running.is_some(), row["served"] == true) {
            (false, _) => "-",
            (true, true) => "yes",
            (true, false) => "no",
        };
        say!(
            "{:width$}  {:7}  {:6}  {}",
            row["host"].as_str().unwrap_or(""),
            row["workers"].as_str().unwrap_or(""),
            served,
            row["app"].as_str().unwrap_or("")
        );
    }
    say!(
        "registry {}{}",
        file.display(),
        if running.is_some() {
            ""
        } else {
            " (no server running)"
        }
    );
    Ok(())
}
