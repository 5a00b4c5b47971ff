//! Reload modes and rolling restarts (DESIGN §5). The first test is the
//! host-level twin of the NixOS VM test: rolling restarts under load drop
//! no request.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::harness::{memory_tempdir, wait_gone, worker_pids, Builder, Server, PATIENCE};

const INDEX: &str = "import { VERSION } from './version.mjs';\n\
export default {\n\
  async fetch(req) {\n\
    const url = new URL(req.url);\n\
    if (url.pathname === '/v') return new Response(VERSION);\n\
    if (url.pathname === '/pid') return new Response(String(process.pid));\n\
    if (url.pathname === '/sleep') {\n\
      await new Promise((r) => setTimeout(r, Number(url.searchParams.get('ms'))));\n\
      return new Response('slept');\n\
    }\n\
    return new Response('not found', { status: 404 });\n\
  },\n\
};\n";

const BROKEN_INDEX: &str = "export default { fetch() { return new Response('BROKEN'); } };\n\
throw new Error('deploy bug: this version must never serve');\n";

fn write_app(dir: &Path, version: &str) {
    std::fs::write(dir.join("index.mjs"), INDEX).unwrap();
    set_version(dir, version);
}

fn set_version(dir: &Path, version: &str) {
    std::fs::write(
        dir.join("version.mjs"),
        format!("export const VERSION = '{version}';\n"),
    )
    .unwrap();
}

fn rolls(status: &serde_json::Value, which: &str) -> u64 {
    status["rolls"][which].as_u64().unwrap_or(0)
}

/// Waits until the rolls counter `which` passes `before` and no roll runs.
async fn wait_roll(server: &Server, which: &str, before: u64) -> serde_json::Value {
    server
        .wait_status(&format!("rolls.{which} > {before}"), |s| {
            rolls(s, which) > before && s["roll"].is_null()
        })
        .await
}

/// What the load clients share with the test: when to stop, which phase
/// (trigger) the test is in, and every failure tagged with its phase.
#[derive(Default)]
struct Load {
    stop: AtomicBool,
    /// The trigger under way; each request is tagged with the phase it
    /// started in.
    phase: AtomicUsize,
    failures: Mutex<Vec<(usize, String)>>,
    /// Clients that have had an answer to a request started in
    /// [`FINAL_PHASE`].
    in_final_phase: AtomicUsize,
}

/// The phase after the last trigger.
const FINAL_PHASE: usize = usize::MAX;

impl Load {
    fn failures_in(&self, phase: usize) -> Vec<String> {
        self.failures
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _)| *p == phase)
            .map(|(_, f)| f.clone())
            .collect()
    }
}

/// What one load client saw.
#[derive(Default)]
struct ClientLog {
    sent: u64,
    ok: u64,
    /// Bodies in the order received.
    bodies: Vec<String>,
}

/// One keep-alive client sending `GET /v` until `load.stop`.
async fn load_client(port: u16, load: Arc<Load>) -> ClientLog {
    let mut log = ClientLog::default();
    let mut sender = None;
    let mut counted_final = false;
    let fail = |phase: usize, what: String| load.failures.lock().unwrap().push((phase, what));
    while !load.stop.load(Ordering::Relaxed) {
        let phase = load.phase.load(Ordering::Relaxed);
        if sender.is_none() {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(stream) => {
                    match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                        Ok((s, conn)) => {
                            tokio::spawn(conn);
                            sender = Some(s);
                        }
                        Err(e) => {
                            fail(phase, format!("handshake: {e}"));
                            continue;
                        }
                    }
                }
                Err(e) => {
                    fail(phase, format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let request = http::Request::get("/v")
            .header("host", "localhost")
            .body(Full::new(Bytes::new()))
            .unwrap();
        log.sent += 1;
        let result = async {
            s.ready().await?;
            let response = s.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, hyper::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        }
        .await;
        match result {
            Ok((status, body)) => {
                if status == 200 {
                    log.ok += 1;
                } else {
                    fail(phase, format!("{status}: {body}"));
                }
                log.bodies.push(body);
                if phase == FINAL_PHASE && !counted_final {
                    counted_final = true;
                    load.in_final_phase.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) => {
                fail(phase, e.to_string());
                sender = None;
            }
        }
    }
    log
}

fn version_number(body: &str) -> u32 {
    body.strip_prefix('v')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected body {body:?}"))
}

/// The serving workers' generation and pids.
fn serving(status: &serde_json::Value) -> (BTreeSet<u64>, BTreeSet<u32>) {
    let workers = status["workers"].as_array().unwrap();
    let serving = workers.iter().filter(|w| w["state"] == "serving");
    let generations = serving
        .clone()
        .map(|w| w["generation"].as_u64().unwrap())
        .collect();
    let pids = serving.map(|w| w["pid"].as_u64().unwrap() as u32).collect();
    (generations, pids)
}

/// After a successful roll: a complete new generation, of new processes,
/// serves, and every process it replaced exits.
async fn check_took_over(
    trigger: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
    workers: usize,
) {
    let (old_generations, old_pids) = serving(before);
    let (generations, pids) = serving(after);
    let generation = after["generation"].as_u64().unwrap();
    assert!(
        old_generations.iter().all(|&g| g < generation),
        "{trigger}: the admitted generation did not move past {old_generations:?}: {after:#}"
    );
    assert_eq!(
        generations,
        BTreeSet::from([generation]),
        "{trigger}: serving workers of other generations: {after:#}"
    );
    assert_eq!(pids.len(), workers, "{trigger}: {after:#}");
    assert!(
        pids.is_disjoint(&old_pids),
        "{trigger}: old processes still serve: {old_pids:?} / {pids:?}"
    );
    for pid in old_pids {
        assert!(
            wait_gone(pid, Duration::from_secs(20)).await,
            "{trigger}: old worker {pid} never exited"
        );
    }
}

/// After a failed roll: the same processes of the same generation serve,
/// and `last_roll` says why.
fn check_kept_serving(
    trigger: &str,
    before: &serde_json::Value,
    after: &serde_json::Value,
    expected_trigger: &str,
) {
    assert_eq!(
        serving(after),
        serving(before),
        "{trigger}: the serving workers changed"
    );
    assert_eq!(after["generation"], before["generation"], "{trigger}");
    let last = &after["last_roll"];
    assert_eq!(last["ok"], false, "{trigger}: {last:#}");
    assert_eq!(last["trigger"], expected_trigger, "{trigger}: {last:#}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("exited while starting")),
        "{trigger}: last_roll gives no reason: {last:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restarts_under_load_drop_no_request() {
    const TRIGGERS: [&str; 6] = [
        "rip-server reload",
        "POST /reload",
        "SIGHUP",
        "a new app version",
        "a broken deploy, then rip-server reload",
        "the fix",
    ];
    let dir = memory_tempdir();
    let app = dir.path().join("shop");
    std::fs::create_dir(&app).unwrap();
    write_app(&app, "v1");
    let server = Builder::app(app.to_str().unwrap(), "shop")
        .arg("w:4")
        .arg("--no-access-log")
        .start();
    server.wait_ready().await;

    let load = Arc::new(Load::default());
    let clients: Vec<_> = (0..16)
        .map(|_| tokio::spawn(load_client(server.port, load.clone())))
        .collect();
    let started = Instant::now();

    let mut version = 1;
    let mut round = 0;
    loop {
        let before = server.status().await;
        let (succeeded, failed) = (rolls(&before, "succeeded"), rolls(&before, "failed"));
        // At least 10 good rolls, the broken deploy, and 15 s of load.
        if succeeded >= 10
            && failed >= 2
            && round % 6 == 0
            && started.elapsed() >= Duration::from_secs(15)
        {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "rolls took too long: {before:#}"
        );
        let trigger = TRIGGERS[round % 6];
        load.phase.store(round, Ordering::Relaxed);
        match round % 6 {
            0 => {
                // The command answers when the roll has ended.
                let out = server.cli(&["reload", "--name", "shop"]);
                assert!(
                    out.status.success(),
                    "reload: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let after = server.status().await;
                assert!(rolls(&after, "succeeded") > succeeded, "{after:#}");
                check_took_over(trigger, &before, &after, 4).await;
            }
            1 => {
                let (code, body) = rip_server::control::call(
                    &server.control_socket(),
                    http::Method::POST,
                    "/reload",
                    Bytes::new(),
                )
                .await
                .unwrap();
                assert_eq!(code, 200, "{body}");
                let after = server.status().await;
                assert!(rolls(&after, "succeeded") > succeeded, "{after:#}");
                check_took_over(trigger, &before, &after, 4).await;
            }
            2 => {
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(server.pid() as i32),
                    nix::sys::signal::Signal::SIGHUP,
                )
                .unwrap();
                let after = wait_roll(&server, "succeeded", succeeded).await;
                check_took_over(trigger, &before, &after, 4).await;
            }
            3 => {
                // A new app version: its answer must replace the old one for good.
                version += 1;
                set_version(&app, &format!("v{version}"));
                let after = wait_roll(&server, "succeeded", succeeded).await;
                check_took_over(trigger, &before, &after, 4).await;
            }
            4 => {
                // A broken deploy, then a manual reload while broken: both
                // rolls fail, the old generation keeps serving, and
                // last_roll says why.
                std::fs::write(app.join("index.mjs"), BROKEN_INDEX).unwrap();
                let after = wait_roll(&server, "failed", failed).await;
                check_kept_serving("a broken deploy", &before, &after, "file-change");
                // "its output is above": the app's own error is in the log.
                server
                    .wait_log("deploy bug: this version must never serve")
                    .await;
                let out = server.cli(&["reload", "--name", "shop"]);
                assert_eq!(out.status.code(), Some(2), "a failed roll exits 2");
                assert!(String::from_utf8_lossy(&out.stderr).contains("old workers keep serving"));
                let after = server.status().await;
                assert!(rolls(&after, "failed") > failed + 1, "{after:#}");
                check_kept_serving(trigger, &before, &after, "command");
            }
            _ => {
                // The fix.
                std::fs::write(app.join("index.mjs"), INDEX).unwrap();
                let after = wait_roll(&server, "succeeded", succeeded).await;
                check_took_over(trigger, &before, &after, 4).await;
            }
        }
        let failures = load.failures_in(round);
        assert!(
            failures.is_empty(),
            "requests failed during the roll of round {round} ({trigger}): {failures:?}"
        );
        round += 1;
    }
    // Every client gets an answer from the final generation.
    let final_version = format!("v{version}");
    load.phase.store(FINAL_PHASE, Ordering::Relaxed);
    let deadline = Instant::now() + PATIENCE;
    while load.in_final_phase.load(Ordering::Relaxed) < clients.len() {
        assert!(
            Instant::now() < deadline,
            "only {} of {} clients were answered after the last roll",
            load.in_final_phase.load(Ordering::Relaxed),
            clients.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    load.stop.store(true, Ordering::Relaxed);

    let mut total = 0;
    for client in clients {
        let log = client.await.unwrap();
        total += log.sent;
        assert_eq!(log.sent, log.ok, "requests lost");
        assert!(
            !log.bodies.iter().any(|b| b == "BROKEN"),
            "the broken version answered"
        );
        let versions: Vec<u32> = log.bodies.iter().map(|b| version_number(b)).collect();
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "a client saw an old version after a new one: {versions:?}"
        );
        assert_eq!(
            log.bodies.last(),
            Some(&final_version),
            "a client never saw the final version"
        );
    }
    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:?}");
    let status = server.status().await;
    assert!(rolls(&status, "succeeded") >= 10, "{status:#}");
    assert!(rolls(&status, "failed") >= 2, "{status:#}");
    assert!(
        total > 1000,
        "too little load to prove anything: {total} requests"
    );
    eprintln!(
        "{total} requests, {} rolls, all answered 200",
        rolls(&status, "started")
    );
}

/// Whether a status document shows two rolls at once: live (not draining)
/// workers of more than one generation beyond the admitted one, or of one
/// that is not the roll in progress.
fn overlapping_rolls(status: &serde_json::Value) -> Option<String> {
    let admitted = status["generation"].as_u64()?;
    let rolling: BTreeSet<u64> = status["workers"]
        .as_array()?
        .iter()
        .filter(|w| w["state"] != "draining")
        .filter_map(|w| w["generation"].as_u64())
        .filter(|&g| g > admitted)
        .collect();
    let roll = status["roll"]["generation"].as_u64();
    let fine = match roll {
        Some(g) => rolling.iter().all(|&r| r == g),
        None => rolling.is_empty(),
    };
    (!fine).then(|| format!("roll {roll:?}, live generations {rolling:?} beyond {admitted}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trigger_mid_roll_restarts_it_and_rolls_never_overlap() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    // A slow-loading app, so the change surely lands while a roll boots.
    let slow = format!("await new Promise((r) => setTimeout(r, 1500));\n{INDEX}");
    std::fs::write(dir.path().join("index.mjs"), slow).unwrap();
    let server = Builder::app(dir.path().to_str().unwrap(), "mid")
        .arg("w:2")
        .arg("--boot-timeout-ms=20000")
        .start();
    server.wait_ready().await;
    // Sample the status all along, not only at the end: two rolls must
    // never be under way at once.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let (socket, sampling) = (server.control_socket(), sampling.clone());
        tokio::spawn(async move {
            let mut samples = 0;
            let mut rolling_samples = 0;
            while sampling.load(Ordering::Relaxed) {
                let (_, body) =
                    rip_server::control::call(&socket, http::Method::GET, "/status", Bytes::new())
                        .await
                        .unwrap();
                let status: serde_json::Value = serde_json::from_str(&body).unwrap();
                if let Some(overlap) = overlapping_rolls(&status) {
                    return Err(format!("{overlap}: {status:#}"));
                }
                samples += 1;
                rolling_samples += usize::from(!status["roll"].is_null());
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok((samples, rolling_samples))
        })
    };
    let socket = server.control_socket();
    let first = tokio::spawn({
        let socket = socket.clone();
        async move {
            rip_server::control::call(&socket, http::Method::POST, "/reload", Bytes::new()).await
        }
    });
    server
        .wait_status("a roll in progress", |s| !s["roll"].is_null())
        .await;
    set_version(dir.path(), "v2");
    let (code, _) = first.await.unwrap().unwrap();
    assert_eq!(code, 200);
    let status = wait_roll(&server, "succeeded", 0).await;
    sampling.store(false, Ordering::Relaxed);
    let (samples, rolling_samples) = sampler
        .await
        .unwrap()
        .unwrap_or_else(|overlap| panic!("two rolls at once: {overlap}\nlog:\n{}", server.log()));
    assert!(
        rolling_samples >= 10,
        "only {rolling_samples} of {samples} samples saw a roll under way"
    );
    // The first roll was superseded by the change: one success.
    assert_eq!(rolls(&status, "succeeded"), 1, "{status:#}");
    assert!(rolls(&status, "started") >= 2, "{status:#}");
    let (generations, _) = serving(&status);
    assert_eq!(generations.len(), 1, "{status:#}");
    assert_eq!(server.get("/v").await.body, "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn module_mode_reloads_in_place_and_keeps_the_last_good_handler() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    let server = Builder::app(dir.path().to_str().unwrap(), "mod")
        .arg("w:1")
        .arg("--reload=module")
        .start();
    server.wait_ready().await;
    let pid = server.get("/pid").await.body;
    set_version(dir.path(), "v2");
    let deadline = Instant::now() + PATIENCE;
    while server.get("/v").await.body != "v2" {
        assert!(
            Instant::now() < deadline,
            "module reload never took effect\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        server.get("/pid").await.body,
        pid,
        "module mode must not restart the process"
    );

    std::fs::write(
        dir.path().join("index.mjs"),
        "export default {{{ syntax error",
    )
    .unwrap();
    server.wait_log("keeping the last good handler").await;
    let reply = server.get("/v").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "v2"));
    assert_eq!(server.get("/pid").await.body, pid);
    let status = server.status().await;
    assert_eq!(status["rolls"]["started"], 0, "module mode does not roll");
    assert_eq!(status["workers"][0]["reloads"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn module_reloads_past_the_allowance_recycle_the_worker() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    let server = Builder::app(dir.path().to_str().unwrap(), "maxr")
        .arg("w:1")
        .arg("--reload=module")
        .arg("r:1000,3600s,2r")
        .start();
    let first = worker_pids(&server.wait_ready().await);
    set_version(dir.path(), "v2");
    server
        .wait_status("one reload", |s| s["module_reloads"] == 1)
        .await;
    set_version(dir.path(), "v3");
    server
        .wait_status("the worker recycled after 2 reloads", |s| {
            let pids = worker_pids(s);
            pids.len() == 1 && pids != first && s["workers"][0]["state"] == "serving"
        })
        .await;
    assert_eq!(server.get("/v").await.body, "v3");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_of_saves_causes_one_roll() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    let server = Builder::app(dir.path().to_str().unwrap(), "burst")
        .arg("w:1")
        .start();
    server.wait_ready().await;
    // Twenty saves 10 ms apart: each pause is longer than any token
    // debounce but well inside the watcher's quiet time (200 ms), and the
    // whole burst inside its 2 s cap. A burst in which the machine stalled
    // this test past 150 ms between two saves is not judged (the watcher
    // may rightly see two bursts): once its rolls are over, another is
    // made, at most three in all.
    let mut judged = None;
    for attempt in 1..=3 {
        let before = rolls(&server.status().await, "started");
        let mut longest_gap = Duration::ZERO;
        let mut last = Instant::now();
        for i in 0..20 {
            if i > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            set_version(dir.path(), &format!("v{}", 100 * attempt + i));
            longest_gap = longest_gap.max(last.elapsed());
            last = Instant::now();
        }
        let newest = format!("v{}", 100 * attempt + 19);
        let status = serves_after_rolls(&server, &newest).await;
        if longest_gap < Duration::from_millis(150) {
            judged = Some((rolls(&status, "started") - before, status));
            break;
        }
        eprintln!(
            "burst {attempt}: the machine stalled this test {longest_gap:?} between two saves; not judged"
        );
    }
    let (burst_rolls, status) = judged.expect("the machine stalled all three bursts");
    assert_eq!(
        burst_rolls, 1,
        "the burst caused more than one roll: {status:#}"
    );
    // A sentinel change after the burst: exactly one more roll (none of the
    // burst's came late).
    let before = rolls(&status, "started");
    set_version(dir.path(), "v999");
    let status = serves_after_rolls(&server, "v999").await;
    assert_eq!(rolls(&status, "started"), before + 1, "{status:#}");
}

/// Waits until no roll runs and `GET /v` answers `version`; the status then.
async fn serves_after_rolls(server: &Server, version: &str) -> serde_json::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let status = server.status().await;
        if status["roll"].is_null() && server.get("/v").await.body == version {
            // Read again: a roll that began meanwhile shows here.
            let again = server.status().await;
            if again["roll"].is_null() {
                return again;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{version} never served with no roll running: {status:#}\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn ignored_paths_do_not_roll_but_rename_saves_do() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    std::fs::create_dir_all(dir.path().join("node_modules/dep")).unwrap();
    std::fs::create_dir_all(dir.path().join(".git")).unwrap();
    let server = Builder::app(dir.path().to_str().unwrap(), "ign")
        .arg("w:1")
        .env("RIP_LOG", "info,rip_server::supervisor::watch=debug")
        .start();
    server.wait_ready().await;
    // Only ignored paths change (in content, so a watcher that let them
    // through would also see a new hash and roll).
    std::fs::write(
        dir.path().join("node_modules/dep/index.js"),
        "module.exports = 1;",
    )
    .unwrap();
    std::fs::write(dir.path().join(".git/HEAD"), "ref: refs/heads/main").unwrap();
    std::fs::write(dir.path().join(".version.mjs.swp"), "swap").unwrap();
    std::fs::write(dir.path().join("index.mjs~"), "backup").unwrap();
    std::fs::write(dir.path().join("version.mjs.tmp.4242"), "temp").unwrap();
    std::fs::remove_file(dir.path().join("version.mjs.tmp.4242")).unwrap();
    // Then a save of a watched file that changes nothing. The watcher
    // handles events in order, so once it says it skipped this save, it
    // has judged every write above: whether they came in the same burst or
    // an earlier one, an ignored path let through would have rolled.
    set_version(dir.path(), "v1");
    let skipped = "app files saved without changes; no reload";
    let status = server
        .wait_status("the watcher to skip the unchanged save (or roll)", |s| {
            rolls(s, "started") > 0 || server.log().contains(skipped)
        })
        .await;
    assert_eq!(
        rolls(&status, "started"),
        0,
        "a write to an ignored path rolled: {status:#}"
    );

    // An editor-style save: write a temp file, rename it over the original.
    let temp = dir.path().join("version.mjs.tmp.4243");
    std::fs::write(&temp, "export const VERSION = 'v2';\n").unwrap();
    std::fs::rename(&temp, dir.path().join("version.mjs")).unwrap();
    let status = wait_roll(&server, "succeeded", 0).await;
    assert_eq!(server.get("/v").await.body, "v2");
    // One roll in all: nothing else rolled, not even late.
    assert_eq!(rolls(&status, "started"), 1, "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_rereads_the_config_and_rolls_to_the_new_worker_count() {
    let dir = memory_tempdir();
    write_app(dir.path(), "v1");
    let config = dir.path().join("rip-server.toml");
    std::fs::write(&config, "workers = 2\nreload = \"none\"\n").unwrap();
    let server = Builder::app(dir.path().to_str().unwrap(), "conf")
        .arg(&format!("--config={}", config.display()))
        .start();
    assert_eq!(server.wait_ready().await["desired_workers"], 2);
    std::fs::write(&config, "workers = 3\nreload = \"none\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let status = wait_roll(&server, "succeeded", 0).await;
    assert_eq!(status["desired_workers"], 3);
    server.wait_ready().await;

    // A broken config keeps everything running as it was.
    std::fs::write(&config, "workers = \"many\"\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    server.wait_log("config reload failed").await;
    assert_eq!(server.status().await["desired_workers"], 3);
    assert_eq!(server.get("/v").await.status, 200);
}

fn metric(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix("{app=\"conf\"} "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn sighup_applies_a_new_app_restart_policy_and_timeouts() {
    let dir = memory_tempdir();
    for (app, version) in [("one", "v1"), ("two", "v2")] {
        std::fs::create_dir(dir.path().join(app)).unwrap();
        write_app(&dir.path().join(app), version);
    }
    let config = dir.path().join("rip-server.toml");
    std::fs::write(
        &config,
        "app = \"one\"\nworkers = 1\nreload = \"none\"\nrestart = \"1000\"\nread_timeout_ms = 1500\n",
    )
    .unwrap();
    let server = Builder::config(&config, "conf").start();
    server.wait_ready().await;
    // As configured: app one, no recycling within ten requests, and a
    // request may not take 3 s (which costs that worker: it is replaced).
    assert_eq!(server.get("/v").await.body, "v1");
    let pid = server.get("/pid").await.body;
    for _ in 0..10 {
        assert_eq!(server.get("/pid").await.body, pid);
    }
    assert_eq!(
        metric(&server.metrics().await, "rip_worker_recycles_total"),
        0
    );
    assert_eq!(server.get("/sleep?ms=3000").await.status, 504);
    server.wait_ready().await;

    std::fs::write(
        &config,
        "app = \"two\"\nworkers = 1\nreload = \"none\"\nrestart = \"3\"\nread_timeout_ms = 10000\n",
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.pid() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    wait_roll(&server, "succeeded", 0).await;

    // The new app, and the new read timeout: 3 s is now allowed. (A longer
    // timeout, not a shorter one: a loaded machine must not turn the
    // requests below into 504s.)
    assert_eq!(server.get("/v").await.body, "v2");
    let reply = server.get("/sleep?ms=3000").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "slept"),
        "the new read timeout was not applied"
    );
    // The new restart policy: a worker is recycled after about 3 requests.
    let first = server.get("/pid").await.body;
    let deadline = Instant::now() + PATIENCE;
    loop {
        let reply = server.get("/pid").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        if reply.body != first {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker was never recycled under restart = \"3\"\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(metric(&server.metrics().await, "rip_worker_recycles_total") >= 1);
    server.wait_log("reason=Requests").await;
}

/// An app that writes into its own directory on every request, as real apps
/// do (a log, a SQLite database and its journal, a state file): each
/// request appends to every file named by an `f` query parameter.
const WRITING_INDEX: &str = "import { appendFileSync, mkdirSync } from 'node:fs';\n\
import { dirname } from 'node:path';\n\
import { VERSION } from './version.mjs';\n\
export default {\n\
  async fetch(req) {\n\
    const url = new URL(req.url);\n\
    for (const file of url.searchParams.getAll('f')) {\n\
      mkdirSync(dirname(file), { recursive: true });\n\
      appendFileSync(file, `${process.pid} ${Date.now()} ${Math.random()}\\n`);\n\
    }\n\
    return new Response(VERSION);\n\
  },\n\
};\n";

/// Serves 100 requests that each write `files` into the app's directory,
/// then proves the watcher judged every write without rolling: a save that
/// changes nothing comes after them, and the watcher handles events in
/// order, so once it says it skipped that save, a write let through would
/// already have rolled (or been in that burst, and rolled it).
async fn writes_do_not_roll(server: &Server, dir: &Path, files: &[&str]) {
    let before = server.status().await;
    let pids: BTreeSet<u32> = worker_pids(&before).into_iter().collect();
    let query: Vec<String> = files.iter().map(|f| format!("f={f}")).collect();
    let path = format!("/v?{}", query.join("&"));
    for i in 0..100 {
        let reply = server.get(&path).await;
        assert_eq!(
            (reply.status, reply.body.as_str()),
            (200, "v1"),
            "request {i}"
        );
    }
    for file in files {
        assert!(dir.join(file).is_file(), "the app did not write {file}");
    }
    set_version(dir, "v1");
    let skipped = "app files saved without changes; no reload";
    let status = server
        .wait_status("the watcher to skip the unchanged save (or roll)", |s| {
            rolls(s, "started") > 0 || server.log().contains(skipped)
        })
        .await;
    assert_eq!(
        rolls(&status, "started"),
        0,
        "the app's own writes to {files:?} rolled it: {status:#}"
    );
    let after: BTreeSet<u32> = worker_pids(&status).into_iter().collect();
    assert_eq!(after, pids, "workers were replaced: {status:#}");
}

/// A real source edit still rolls, exactly once: the filter is not just off.
async fn a_source_edit_rolls_once(server: &Server, dir: &Path) {
    set_version(dir, "v2");
    let status = serves_after_rolls(server, "v2").await;
    assert_eq!(rolls(&status, "started"), 1, "{status:#}");
    assert_eq!(rolls(&status, "succeeded"), 1, "{status:#}");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_app_writing_logs_and_databases_beside_its_code_does_not_roll_itself() {
    let dir = memory_tempdir();
    std::fs::write(dir.path().join("index.mjs"), WRITING_INDEX).unwrap();
    set_version(dir.path(), "v1");
    let server = Builder::app(dir.path().to_str().unwrap(), "writes")
        .arg("w:2")
        .env("RIP_LOG", "info,rip_server::supervisor::watch=debug")
        .start();
    server.wait_ready().await;
    writes_do_not_roll(
        &server,
        dir.path(),
        &[
            "data/app.log",
            "app.sqlite",
            "app.sqlite-journal",
            "app.db-wal",
        ],
    )
    .await;
    a_source_edit_rolls_once(&server, dir.path()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ripignore_watch_ignore_and_watch_keep_written_files_from_rolling() {
    let dir = memory_tempdir();
    std::fs::write(dir.path().join("index.mjs"), WRITING_INDEX).unwrap();
    set_version(dir.path(), "v1");
    std::fs::write(
        dir.path().join(".ripignore"),
        "# the app's own state\nstate.json\n",
    )
    .unwrap();
    let server = Builder::app(dir.path().to_str().unwrap(), "ripignore")
        .arg("w:1")
        .arg("--watch=*.mjs")
        .arg("--watch=*.json")
        .arg("--watch-ignore=cache/")
        .env("RIP_LOG", "info,rip_server::supervisor::watch=debug")
        .start();
    server.wait_ready().await;
    // state.json: .ripignore; cache/hits.json: --watch-ignore; notes.txt:
    // matches no --watch glob.
    writes_do_not_roll(
        &server,
        dir.path(),
        &["state.json", "cache/hits.json", "notes.txt"],
    )
    .await;
    a_source_edit_rolls_once(&server, dir.path()).await;
}
