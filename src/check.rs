//! `--check`: validate a full configuration without serving.
//!
//! `rip-server --check …` builds the configuration exactly as a start would
//! (flags over environment over config file over defaults, see
//! [`crate::config`]) and then checks what a start would otherwise find out
//! only later: the certificate files load and match, the socket paths fit,
//! the JavaScript runtime is on `PATH`. It binds no port, creates no runtime
//! directory and starts no worker, so it is safe beside a running instance
//! (the NixOS module's flag round trip and an operator's `nginx -t` habit).

use crate::app::EntryKind;
use crate::config::{self, Config, Listen};
use crate::{check_socket_path, control, tls, Error};

/// What [`serve`](crate::serve) would refuse before it binds anything,
/// checked without binding or writing: the configuration (already built and
/// validated by [`Config::build`]), the certificate files, the socket paths
/// and the JavaScript runtime. Returns a one-line summary.
pub fn check(config: &Config) -> Result<String, Error> {
    if let Listen::Https(config::Https {
        tls: tls::TlsSource::Files(pairs),
        ..
    }) = &config.listen
    {
        for pair in pairs {
            tls::material::load(&pair.cert, &pair.key)?;
        }
    }
    let control_path = control::socket_path(&config.runtime_dir, &config.name);
    check_socket_path(config, &control_path)?;
    let hosts = &config.registry.spec.hosts;
    for (host, entry) in hosts {
        if let Some(pair) = &entry.tls {
            tls::material::load(&pair.cert, &pair.key)
                .map_err(|e| Error::Startup(format!("host '{host}': {e}")))?;
        }
    }
    let apps = config
        .app
        .iter()
        .chain(hosts.values().map(|entry| &entry.app));
    for app in apps {
        if app.kind == EntryKind::JsModule {
            let program = config.js_runtime.program();
            if !crate::cli::on_path(program, std::env::var_os("PATH").as_deref()) {
                return Err(Error::RuntimeMissing {
                    program: program.into(),
                    entry: app.entry.clone(),
                });
            }
        }
    }
    let serves = match &config.app {
        Some(app) => format!(
            "{} ({}) with {} worker{}",
            app.entry.display(),
            app.kind.describe(config.js_runtime),
            config.workers,
            if config.workers == 1 { "" } else { "s" },
        ),
        None => "no default app".to_string(),
    };
    let registered = match hosts.len() {
        0 => String::new(),
        n => format!(
            ", {n} host{} from {}",
            if n == 1 { "" } else { "s" },
            config.registry.source.path().display()
        ),
    };
    Ok(format!(
        "configuration ok: {} serves {serves}{registered}, reload={}, {}",
        config.name,
        config.reload.as_str(),
        describe_listen(&config.listen),
    ))
}

/// `https on port 443 (redirect from 80, hsts)` and the like.
fn describe_listen(listen: &Listen) -> String {
    let port = |choice: &config::PortChoice| match choice {
        config::PortChoice::Fixed(port) => format!("port {port}"),
        config::PortChoice::FirstFree {
            preferred,
            fallback_from,
        } => format!("port {preferred} or the first free from {fallback_from}"),
    };
    match listen {
        Listen::Http(choice) => format!("plain http on {}", port(choice)),
        Listen::Https(https) => {
            let mut extras = Vec::new();
            if let config::Redirect::From(from) = https.redirect {
                extras.push(format!("redirect from {from}"));
            }
            extras.push(match &https.tls {
                tls::TlsSource::Files(pairs) => format!("{} certificate file pair(s)", pairs.len()),
                tls::TlsSource::Auto => "automatic certificate".into(),
            });
            if https.hsts {
                extras.push("hsts".into());
            }
            format!("https on {} ({})", port(&https.port), extras.join(", "))
        }
    }
}
