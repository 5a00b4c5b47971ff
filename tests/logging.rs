//! Logging under faults: a stdout nobody reads (a stopped pager, a stuck
//! log shipper) never freezes requests, workers or a stop; the lines it
//! costs are counted and reported once stdout is read again.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::harness::{send, Builder, Server, PATIENCE};

/// Far more than the stdout pipe and the server's log buffer hold.
const FLOOD: &str = "/print?lines=300000";

/// How long a request may take while stdout is stalled: generous for a
/// loaded machine, far below "hung".
const ANSWER: Duration = Duration::from_secs(5);

/// Runs `task`, failing the test (with the server's log) past `limit`.
async fn within<T>(
    server: &Server,
    limit: Duration,
    what: &str,
    task: impl Future<Output = T>,
) -> T {
    tokio::time::timeout(limit, task)
        .await
        .unwrap_or_else(|_| panic!("{what} took longer than {limit:?}; log:\n{}", server.log()))
}

/// `rip_log_lines_dropped_total` from the control socket's `/metrics`.
async fn dropped_lines(server: &Server) -> u64 {
    let metrics = within(server, ANSWER, "GET /metrics", server.metrics()).await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("rip_log_lines_dropped_total "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rip_log_lines_dropped_total in:\n{metrics}"))
}

/// Starts the worker's flood in the background and waits until the server
/// has dropped log lines: stdout is stalled from then on.
async fn flood_until_lines_drop(server: &Server) -> tokio::task::JoinHandle<crate::harness::Reply> {
    let port = server.port;
    let flood = tokio::spawn(async move {
        send(
            port,
            http::Request::get(FLOOD).body(Default::default()).unwrap(),
        )
        .await
    });
    let deadline = Instant::now() + PATIENCE;
    while dropped_lines(server).await == 0 {
        assert!(
            Instant::now() < deadline,
            "no log line was dropped within {PATIENCE:?} of the flood; log:\n{}",
            server.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stdout_nobody_reads_never_stalls_requests_or_a_stop() {
    let mut server = Builder::probe().arg("w:2").hold_stdout().start();
    server.wait_ready().await;
    let flood = flood_until_lines_drop(&server).await;

    let health = within(&server, ANSWER, "GET /server", server.get("/server")).await;
    assert_eq!(health.status, 200, "{}", health.body);
    let ping = within(&server, ANSWER, "GET /ping", server.get("/ping")).await;
    assert_eq!((ping.status, ping.body.as_str()), (200, "pong"));
    // The worker's own output is drained whatever stdout does: its 300k
    // lines are written and it answers.
    let flood = within(&server, PATIENCE, "the flood", flood).await.unwrap();
    assert_eq!((flood.status, flood.body.as_str()), (200, "printed 300000"));

    // stdout is still not read: a stop must not wait for it.
    let status = server.terminate_within(Duration::from_secs(10));
    assert!(status.success(), "{status:?}\nlog:\n{}", server.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_log_lines_are_reported_once_stdout_is_read_again() {
    let mut server = Builder::probe().arg("w:1").hold_stdout().start();
    server.wait_ready().await;
    let flood = flood_until_lines_drop(&server).await;
    let flood = within(&server, PATIENCE, "the flood", flood).await.unwrap();
    assert_eq!(flood.status, 200, "{}", flood.body);

    server.resume_stdout();
    server
        .wait_log("log lines dropped because stdout was not being read")
        .await;
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("log lines dropped because"))
        .unwrap_or_default();
    let reported: u64 = line
        .split_whitespace()
        .find_map(|word| word.parse().ok())
        .unwrap_or_else(|| panic!("no count in: {line}"));
    assert!(reported > 0, "{line}");
    assert!(dropped_lines(&server).await >= reported, "{line}");
}
