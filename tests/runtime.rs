//! The server process itself: `--threads` (and `RIP_THREADS`) sets how
//! many threads its async runtime runs on.

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
