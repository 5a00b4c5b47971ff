//! Many apps in one server: the host registry (`add`, `remove`, `list`, a
//! declarative `[hosts]`), routing by `Host` and SNI, live changes under
//! load, and the public `/status`. The apps are `tests/fixtures/hosts/alpha`
//! and `beta`, which say who they are at `/who`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;

use crate::harness::{send, Builder, Server};

fn fixture(app: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hosts")
        .join(app)
}

fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `GET path` with `Host: host`.
async fn get_as(server: &Server, host: &str, path: &str) -> crate::harness::Reply {
    let request = http::Request::get(path)
        .header("host", host)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    send(server.port, request).await
}

/// Which app answered `/who` for `host` (`None`: not a `/who` answer).
async fn who(server: &Server, host: &str) -> (u16, Option<String>) {
    let reply = get_as(server, host, "/who").await;
    let app = serde_json::from_str::<serde_json::Value>(&reply.body)
        .ok()
        .and_then(|v| v["app"].as_str().map(String::from));
    (reply.status, app)
}

/// Runs `rip-server ARGS` for this server; fails the test unless it succeeds.
fn cli_ok(server: &Server, args: &[&str]) -> String {
    let output = server.cli(args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "rip-server {args:?}: {}{stdout}\nlog:\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    stdout
}

/// Waits until `host` is answered by `app` (a name) or, with `None`, by no app.
async fn wait_routed(server: &Server, host: &str, app: Option<&str>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, answered) = who(server, host).await;
        if answered.as_deref() == app {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{host} not routed to {app:?} within 20 s (got {answered:?}); log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hosts_get_their_own_apps_over_http_and_https_with_their_own_certificates() {
    let certs = tempfile::tempdir().unwrap();
    let alpha_cert = crate::tls::make_cert(
        certs.path(),
        "alpha",
        &["alpha.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let beta_cert = crate::tls::make_cert(
        certs.path(),
        "beta",
        &["beta.test"],
        &rcgen::PKCS_ECDSA_P256_SHA256,
    );
    let server = Builder::node().arg("w:1").https().start();
    server.wait_ready().await;
    for (host, app, cert) in [
        ("alpha.test", "alpha", &alpha_cert),
        ("beta.test", "beta", &beta_cert),
    ] {
        let out = cli_ok(
            &server,
            &[
                "add",
                host,
                path_str(&fixture(app)),
                "w:1",
                &format!("--cert={}", cert.cert.display()),
                &format!("--key={}", cert.key.display()),
            ],
        );
        assert!(out.contains(&format!("now serves {host}")), "{out}");
    }
    // SNI picks each host's certificate; Host picks each host's app.
    let roots = [
        alpha_cert.der.clone(),
        beta_cert.der.clone(),
        crate::tls::cached_cert(&server),
    ];
    let connector = crate::tls::connector(&roots, &[b"http/1.1"]);
    for (host, app, cert) in [
        ("alpha.test", "alpha", &alpha_cert),
        ("beta.test", "beta", &beta_cert),
    ] {
        let tls = crate::tls::handshake(server.port, host, &connector)
            .await
            .unwrap();
        assert_eq!(crate::tls::presented(&tls), cert.der, "{host}");
        let (mut sender, _conn) = crate::harness::http1(tls).await;
        let request = http::Request::get("/who")
            .header("host", host)
            .body(http_body_util::Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(request).await.unwrap();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await
            .unwrap()
            .to_bytes();
        let seen: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(seen["app"], app, "{host}");
    }
    // Any other name gets the default app, and the automatic certificate.
    let tls = crate::tls::handshake(server.port, "localhost", &connector)
        .await
        .unwrap();
    assert_eq!(
        crate::tls::presented(&tls),
        crate::tls::cached_cert(&server)
    );
    let (mut sender, _conn) = crate::harness::http1(tls).await;
    let request = http::Request::get("/ping")
        .header("host", "other.test")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), 200);

    // The metrics and the status are per app.
    let metrics = server.metrics().await;
    for app in ["api", "alpha", "beta"] {
        assert!(
            metrics.contains(&format!("rip_workers_idle{{app=\"{app}\"}}")),
            "{metrics}"
        );
    }
    let status = server.status().await;
    let apps: Vec<&str> = status["apps"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["name"].as_str())
        .collect();
    assert_eq!(apps.len(), 3, "{status:#}");
    assert_eq!(
        status["hosts"],
        serde_json::json!(["alpha.test", "beta.test"])
    );
    // The access log says which app answered.
    server.wait_log("app=alpha").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_host_added_under_load_is_served_within_two_seconds_and_nothing_else_fails() {
    let server = Builder::node().arg("w:2").start();
    server.wait_ready().await;
    let port = server.port;
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let request = http::Request::get("/ping")
                        .header("host", "localhost")
                        .body(http_body_util::Full::new(Bytes::new()))
                        .unwrap();
                    let reply = send(port, request).await;
                    sent.fetch_add(1, Ordering::Relaxed);
                    if reply.status != 200 || reply.body != "pong" {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    while sent.load(Ordering::Relaxed) < 50 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let added = Instant::now();
    let output = server.cli(&["add", "alpha.test", path_str(&fixture("alpha")), "w:1"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    let took = added.elapsed();
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    assert!(took < Duration::from_secs(2), "the new host took {took:?}");
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "of {} requests",
        sent.load(Ordering::Relaxed)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_host_finishes_its_requests_then_gets_404_or_the_default_app() {
    // No default app: an unregistered host gets 404.
    let home = tempfile::tempdir().unwrap();
    let registry = home.path().join(".rip/hosts.toml");
    std::fs::create_dir_all(registry.parent().unwrap()).unwrap();
    std::fs::write(
        &registry,
        format!(
            "[hosts.\"alpha.test\"]\napp = {:?}\nworkers = 1\n[hosts.\"beta.test\"]\napp = {:?}\nworkers = 1\n",
            fixture("alpha"),
            fixture("beta")
        ),
    )
    .unwrap();
    let server = Builder::bare("hosts").home(home.path()).start();
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    wait_routed(&server, "beta.test", Some("beta")).await;
    let reply = get_as(&server, "gamma.test", "/who").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (404, "Host not found\n")
    );

    // Requests on alpha when it is removed finish: one on its worker, one
    // queued behind it.
    let port = server.port;
    let slow = || {
        tokio::spawn(async move {
            let request = http::Request::get("/sleep?ms=1000")
                .header("host", "alpha.test")
                .body(http_body_util::Full::new(Bytes::new()))
                .unwrap();
            send(port, request).await
        })
    };
    let in_flight = [slow(), slow()];
    server
        .wait_status("alpha busy with one and one queued", |s| {
            s["apps"].as_array().is_some_and(|apps| {
                apps.iter().any(|a| {
                    a["name"] == "alpha" && a["pool"]["busy"] == 1 && a["pool"]["queued"] == 1
                })
            })
        })
        .await;
    cli_ok(&server, &["remove", "alpha.test"]);
    for request in in_flight {
        let reply = request.await.unwrap();
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "alpha slept 1000")
        );
    }
    let reply = get_as(&server, "alpha.test", "/who").await;
    assert_eq!(reply.status, 404);
    assert_eq!(who(&server, "beta.test").await.1.as_deref(), Some("beta"));
    // Its workers are gone.
    server
        .wait_status("alpha drained", |s| {
            s["apps"].as_array().is_some_and(|apps| apps.len() == 1)
        })
        .await;
    drop(server);

    // With a default app, a removed host goes to it.
    let server = Builder::app(path_str(&fixture("beta")), "withdefault")
        .arg("w:1")
        .home(home.path())
        .start();
    wait_routed(&server, "beta.test", Some("beta")).await;
    cli_ok(
        &server,
        &["add", "alpha.test", path_str(&fixture("alpha")), "w:1"],
    );
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    cli_ok(&server, &["remove", "alpha.test"]);
    wait_routed(&server, "alpha.test", Some("beta")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn twenty_concurrent_adds_lose_nothing() {
    let home = tempfile::tempdir().unwrap();
    let runtime = tempfile::tempdir().unwrap();
    let app = fixture("alpha");
    let adds: Vec<_> = (0..20)
        .map(|i| {
            crate::harness::clean_command(crate::harness::BIN, runtime.path())
                .env("HOME", home.path())
                .args(["add", &format!("h{i}.test"), path_str(&app)])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for add in adds {
        let output = add.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let output = crate::harness::clean_command(crate::harness::BIN, runtime.path())
        .env("HOME", home.path())
        .args(["list", "--json"])
        .output()
        .unwrap();
    let list: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let hosts: Vec<&str> = list["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|h| h["host"].as_str())
        .collect();
    assert_eq!(hosts.len(), 20, "{hosts:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_adds_name_the_bad_part_and_exit_2() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    let app = path_str(&fixture("alpha")).to_string();
    for (args, says) in [
        (vec!["add", "alpha.test:80", &app], "without a port"),
        (vec!["add", "a_b.test", &app], "a_b"),
        (vec!["add", "alpha.test", "/no/such/app"], "/no/such/app"),
        (vec!["add", "alpha.test", &app, "w:lots"], "w: expects"),
        (
            vec!["add", "alpha.test", &app, "--cert=/no/cert.pem"],
            "--cert and --key",
        ),
        (vec!["remove", "never.test"], "not registered"),
    ] {
        let output = server.cli(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
    }
    // Hosts of one app share its workers: their settings must agree.
    cli_ok(&server, &["add", "alpha.test", &app, "w:1"]);
    let output = server.cli(&["add", "www.alpha.test", &app, "w:2"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("same app"), "{stderr}");
    // list shows the host, its app and that the server serves it.
    let table = cli_ok(&server, &["list"]);
    let line = table
        .lines()
        .find(|l| l.starts_with("alpha.test"))
        .unwrap_or_default();
    assert!(line.contains("yes") && line.contains("alpha"), "{table}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_malformed_registry_is_reported_and_the_old_routing_kept() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    cli_ok(
        &server,
        &["add", "alpha.test", path_str(&fixture("alpha")), "w:1"],
    );
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    let registry = server.home.join(".rip/hosts.toml");
    std::fs::write(&registry, "[hosts.\"beta.test\"\napp = \n").unwrap();
    let status = server
        .wait_status("the registry error reported", |s| {
            s["registry"]["error"].is_string()
        })
        .await;
    let error = status["registry"]["error"].as_str().unwrap();
    assert!(error.contains("hosts.toml"), "{error}");
    server
        .wait_log("the last good registry keeps serving")
        .await;
    assert_eq!(who(&server, "alpha.test").await.1.as_deref(), Some("alpha"));
    // Fixed: applied, and the error cleared.
    std::fs::write(
        &registry,
        format!(
            "[hosts.\"beta.test\"]\napp = {:?}\nworkers = 1\n",
            fixture("beta")
        ),
    )
    .unwrap();
    wait_routed(&server, "beta.test", Some("beta")).await;
    server
        .wait_status("the error cleared", |s| s["registry"]["error"].is_null())
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_names_win_over_wildcards_and_the_default_app_takes_the_rest() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    cli_ok(
        &server,
        &["add", "*.preview.test", path_str(&fixture("alpha")), "w:1"],
    );
    cli_ok(
        &server,
        &[
            "add",
            "pinned.preview.test",
            path_str(&fixture("beta")),
            "w:1",
        ],
    );
    wait_routed(&server, "pr-1.preview.test", Some("alpha")).await;
    wait_routed(&server, "PR-2.Preview.Test:8080", Some("alpha")).await;
    wait_routed(&server, "pinned.preview.test", Some("beta")).await;
    // Not one more label: the default app (apps/api, which has no /who).
    for host in ["preview.test", "a.b.preview.test"] {
        let reply = get_as(&server, host, "/ping").await;
        assert_eq!(reply.body, "pong", "{host}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_declarative_registry_refuses_edits_and_sighup_applies_its_changes() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("rip.toml");
    let write = |hosts: &str| {
        std::fs::write(
            &config,
            format!("listen = \"http:0\"\nworkers = 1\n{hosts}"),
        )
        .unwrap();
    };
    let alpha = format!("[hosts.\"alpha.test\"]\napp = {:?}\n", fixture("alpha"));
    let beta = format!("[hosts.\"beta.test\"]\napp = {:?}\n", fixture("beta"));
    write(&alpha);
    let server = Builder::bare("declared")
        .arg(&format!("--config={}", config.display()))
        .start();
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    // The commands explain where the hosts are declared.
    for args in [
        vec!["add", "beta.test", path_str(&fixture("beta"))],
        vec!["remove", "alpha.test"],
    ] {
        let output = server.cli(&args);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        assert!(
            stderr.contains("rip.toml") && stderr.contains("SIGHUP"),
            "{stderr}"
        );
    }
    write(&format!("{alpha}{beta}"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_routed(&server, "beta.test", Some("beta")).await;
    assert_eq!(who(&server, "alpha.test").await.1.as_deref(), Some("alpha"));
}

#[tokio::test(flavor = "multi_thread")]
async fn reload_host_rolls_that_app_only() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    cli_ok(
        &server,
        &["add", "alpha.test", path_str(&fixture("alpha")), "w:1"],
    );
    wait_routed(&server, "alpha.test", Some("alpha")).await;
    let generation = |status: &serde_json::Value, app: &str| {
        status["apps"]
            .as_array()
            .and_then(|apps| apps.iter().find(|a| a["name"] == app))
            .and_then(|a| a["generation"].as_u64())
    };
    let before = server.status().await;
    let out = cli_ok(&server, &["reload", "alpha.test"]);
    assert!(out.contains("alpha: rolled to generation"), "{out}");
    let after = server.status().await;
    assert_eq!(
        generation(&after, "alpha"),
        generation(&before, "alpha").map(|g| g + 1)
    );
    assert_eq!(generation(&after, "api"), generation(&before, "api"));
    // Not a host name: refused, naming it.
    let output = server.cli(&["reload", "bad_host"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bad_host"));
}

#[tokio::test(flavor = "multi_thread")]
async fn the_public_status_is_the_servers_health_without_internals() {
    let server = Builder::node().arg("w:2").start();
    server.wait_ready().await;
    cli_ok(
        &server,
        &["add", "alpha.test", path_str(&fixture("alpha")), "w:1"],
    );
    let reply = server.get("/status").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let status: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(status["status"], "healthy", "{status:#}");
    assert_eq!(status["app"], "api");
    assert_eq!(status["workers"], 3);
    assert_eq!(status["ports"]["http"], server.port);
    assert!(status["uptime"].is_u64());
    assert_eq!(status["hosts"], serde_json::json!(["alpha.test"]));
    assert_eq!(status["apps"].as_array().map(Vec::len), Some(2));
    for internal in ["pid", "/tmp", "entry", "dir", "socket"] {
        assert!(
            !reply.body.contains(internal),
            "{internal} in {}",
            reply.body
        );
    }
    // Degraded while an app has fewer ready workers than asked.
    let pids: Vec<u64> = server.status().await["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "alpha")
        .unwrap()["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pids[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = server.get("/status").await;
        if reply.body.contains("\"degraded\"") {
            break;
        }
        assert!(Instant::now() < deadline, "never degraded: {}", reply.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(server);

    // --no-public-status hands /status to the app (apps/api: its 404).
    let server = Builder::node().arg("w:1").arg("--no-public-status").start();
    server.wait_ready().await;
    let reply = server.get("/status").await;
    assert_eq!((reply.status, reply.body.as_str()), (404, "not found"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_log_written_to_a_pipe_has_no_escape_sequences() {
    let server = Builder::node().arg("w:1").start();
    server.wait_ready().await;
    assert_eq!(server.get("/ping").await.body, "pong");
    server.wait_log("path=/ping").await;
    assert!(!server.log().contains('\u{1b}'), "{}", server.log());
    let reply = server.request(Method::GET, "/", &[], Bytes::new()).await;
    assert_eq!(reply.status, 200);
}
