//! The server process itself: `--threads` (and `RIP_THREADS`) sets how
//! many threads its async runtime runs on; `--runtime=auto` picks the
//! JavaScript runtime by what is on `PATH`.

use crate::harness::Builder;

/// The names of a process's threads.
fn thread_names(pid: u32) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Threads of tokio's runtime (workers; blocking-pool threads carry the
/// same name, and with `--reload=none` nothing starts one).
fn runtime_threads(pid: u32) -> usize {
    thread_names(pid)
        .iter()
        .filter(|n| *n == "tokio-rt-worker")
        .count()
}

#[tokio::test(flavor = "multi_thread")]
async fn threads_sets_the_servers_own_runtime_threads() {
    // More than any default (half the cores) could give.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let many = 2 * cores + 1;
    let server = Builder::rust()
        .arg("w:1")
        .arg(&format!("--threads={many}"))
        .start();
    server.wait_ready().await;
    assert_eq!(
        runtime_threads(server.pid()),
        many,
        "--threads={many}: {:?}",
        thread_names(server.pid())
    );
    drop(server);

    // One thread: the main thread runs the (current-thread) runtime.
    let server = Builder::rust().arg("w:1").arg("--threads=1").start();
    server.wait_ready().await;
    assert_eq!(
        runtime_threads(server.pid()),
        0,
        "--threads=1: {:?}",
        thread_names(server.pid())
    );
    assert_eq!(server.get("/ping").await.status, 200);
    drop(server);

    let server = Builder::rust().arg("w:1").env("RIP_THREADS", "3").start();
    server.wait_ready().await;
    assert_eq!(
        runtime_threads(server.pid()),
        3,
        "RIP_THREADS=3: {:?}",
        thread_names(server.pid())
    );
}

/// The `node` on the test's own `PATH`.
fn real_node() -> std::path::PathBuf {
    let path = std::env::var_os("PATH").expect("PATH is set");
    std::env::split_paths(&path)
        .map(|dir| dir.join("node"))
        .find(|p| p.is_file())
        .expect("node is on PATH (the Node tests need it)")
}

/// A directory for `PATH` holding `node` (a link to the real one) and a `bun`:
/// executable, it records its arguments in `bun.ran` and runs them with node;
/// not executable, it is no program at all.
fn path_with_bun(executable: bool) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let node = real_node();
    std::os::unix::fs::symlink(&node, dir.path().join("node")).unwrap();
    let record = dir.path().join("bun.ran");
    let bun = dir.path().join("bun");
    std::fs::write(
        &bun,
        format!(
            "#!/bin/sh\necho \"$@\" >> '{}'\nexec '{}' \"$@\"\n",
            record.display(),
            node.display()
        ),
    )
    .unwrap();
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(&bun, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_auto_picks_bun_when_it_is_on_path() {
    let dir = path_with_bun(true);
    let server = Builder::node()
        .arg("w:1")
        .js_runtime("auto")
        .env("PATH", dir.path().to_str().unwrap())
        .start();
    server.wait_ready().await;
    server.wait_log("fetch handler (bun loader)").await;
    assert_eq!(server.get("/ping").await.body, "pong");
    let ran = std::fs::read_to_string(dir.path().join("bun.ran")).unwrap_or_default();
    assert!(
        ran.contains("loader.mjs"),
        "the worker did not run under bun; bun.ran: {ran:?}\n{}",
        server.log()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn runtime_auto_picks_node_when_bun_is_not_on_path() {
    // A `bun` that is not executable is not a runtime to pick.
    let dir = path_with_bun(false);
    let server = Builder::node()
        .arg("w:1")
        .js_runtime("auto")
        .env("PATH", dir.path().to_str().unwrap())
        .start();
    server.wait_ready().await;
    server.wait_log("fetch handler (node loader)").await;
    assert_eq!(server.get("/ping").await.body, "pong");
    assert!(!dir.path().join("bun.ran").exists());
    assert!(!server.log().contains("bun loader"), "{}", server.log());
}
