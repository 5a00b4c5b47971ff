//! Bad command lines and config files: exit 2 with a message that names the
//! bad token and what was expected; nothing starts.

use std::process::Stdio;
use std::time::Duration;

use crate::harness::{clean_command, closed_pipe, node_app, output_within, BIN};

fn run(args: &[&str]) -> (i32, String) {
    let runtime = tempfile::tempdir().unwrap();
    let output = clean_command(BIN, runtime.path())
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn malformed_tokens_exit_2_naming_the_token() {
    let app = node_app();
    let app = app.to_str().unwrap();
    let cases = [
        (
            "w:abc",
            "invalid argument 'w:abc': w: expects a worker count or 'auto'",
        ),
        ("r:10m", "invalid argument 'r:10m': r: expects N[,Ss][,Rr]"),
        (
            "http:99999",
            "invalid argument 'http:99999': http: expects a port number",
        ),
    ];
    for (token, expected) in cases {
        let (code, stderr) = run(&[app, token, "http:0"]);
        assert_eq!(code, 2, "{token}: {stderr}");
        assert!(stderr.starts_with("rip-server: "), "{stderr}");
        assert!(stderr.contains(expected), "{token}: {stderr}");
    }
}

#[test]
fn a_closed_stderr_keeps_exit_status_2() {
    let runtime = tempfile::tempdir().unwrap();
    let status = clean_command(BIN, runtime.path())
        .args(["w:abc", "http:0"])
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

#[test]
fn two_listeners_are_an_error() {
    let (code, stderr) = run(&["http:5002", "5700"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("'http:5002' and '5700' ask for two listeners"),
        "{stderr}"
    );
}

#[test]
fn a_bind_that_is_no_address_is_an_error() {
    let app = node_app();
    for bad in ["localhost", "127.0.0.1:80", "::1]"] {
        let (code, stderr) = run(&[app.to_str().unwrap(), "http:0", &format!("--bind={bad}")]);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains(&format!("--bind: '{bad}' is not an IP address")),
            "{bad}: {stderr}"
        );
    }
}

#[test]
fn unknown_flag_is_an_error() {
    let (code, stderr) = run(&["--max-qeue=4"]);
    assert_eq!(code, 2);
    assert!(stderr.contains("--max-qeue"), "{stderr}");
}

#[test]
fn tls_flags_with_plain_http_are_refused() {
    let app = node_app();
    let (code, stderr) = run(&[app.to_str().unwrap(), "http:0", "--hsts"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("--hsts applies only to HTTPS, but 'http:0' asks for plain HTTP"),
        "{stderr}"
    );
}

#[test]
fn missing_app_lists_what_was_looked_for() {
    let empty = tempfile::tempdir().unwrap();
    let (code, stderr) = run(&[empty.path().to_str().unwrap(), "http:0"]);
    assert_eq!(code, 2);
    for looked_for in ["rip.toml", "index.mjs", "index.js", "serve"] {
        assert!(stderr.contains(looked_for), "{stderr}");
    }
}

#[test]
fn bad_config_file_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rip.toml");
    std::fs::write(&file, "max_queue = 10\nworkers = \"lots\"\n").unwrap();
    let flag = format!("--config={}", file.display());
    let app = node_app();
    let (code, stderr) = run(&[app.to_str().unwrap(), "http:0", &flag]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("workers: w: expects a worker count or 'auto'"),
        "{stderr}"
    );

    std::fs::write(&file, "max_queue = 10\nmax_queeu = 4\n").unwrap();
    let (code, stderr) = run(&[app.to_str().unwrap(), "http:0", &flag]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("rip.toml") && stderr.contains("line 2") && stderr.contains("max_queeu"),
        "{stderr}"
    );
}

#[test]
fn bad_environment_names_the_variable() {
    let runtime = tempfile::tempdir().unwrap();
    let app = node_app();
    let output = clean_command(BIN, runtime.path())
        .args([app.to_str().unwrap(), "http:0"])
        .env("RIP_MAX_QUEUE", "many")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("RIP_MAX_QUEUE='many': expected a whole number"),
        "{stderr}"
    );
}

#[test]
fn commands_fail_clearly_when_nothing_runs() {
    let (code, stderr) = run(&["status"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no rip-server instance is running"),
        "{stderr}"
    );
    let (code, stderr) = run(&["stop", "--name", "ghost"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("no instance named 'ghost' is running"),
        "{stderr}"
    );
}

#[test]
fn help_documents_every_form() {
    let output = std::process::Command::new(BIN)
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for form in [
        "w:N",
        "w:auto",
        "r:N[,Ss][,Rr]",
        "http[:PORT]",
        "--reload",
        "--max-queue",
        "--config",
        "EXAMPLES",
    ] {
        assert!(help.contains(form), "--help lacks {form}");
    }
}

/// A control socket that takes connections and never answers: a hung
/// instance. Accepted connections are held open until the test ends.
struct HungInstance {
    runtime: tempfile::TempDir,
    socket: std::path::PathBuf,
}

impl HungInstance {
    fn start(name: &str) -> Self {
        use std::os::unix::fs::DirBuilderExt;
        let runtime = tempfile::tempdir().unwrap();
        let dir = runtime.path().join("rip-server");
        std::fs::DirBuilder::new().mode(0o700).create(&dir).unwrap();
        let socket = dir.join(format!("{name}.ctl.sock"));
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for stream in listener.incoming() {
                held.extend(stream.ok());
            }
        });
        HungInstance { runtime, socket }
    }

    /// Runs `rip-server ARGS` against it; fails the test if the command is
    /// still running after `limit`. Returns the exit code and stderr.
    fn run(&self, args: &[&str], limit: Duration) -> (Option<i32>, String) {
        let child = clean_command(BIN, self.runtime.path())
            .env("HOME", self.runtime.path())
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = output_within(child, limit).unwrap_or_else(|| {
            panic!("rip-server {args:?} still waiting on a hung instance after {limit:?}")
        });
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn commands_give_up_on_a_hung_instance_naming_its_socket() {
    let hung = HungInstance::start("stuck");
    let socket = hung.socket.display().to_string();
    for command in [
        &["status", "--name", "stuck", "--timeout-ms=300"][..],
        &["reload", "--name", "stuck", "--timeout-ms=300"],
        &["stop", "--name", "stuck", "--timeout-ms=300"],
    ] {
        let (code, stderr) = hung.run(command, Duration::from_secs(10));
        assert_eq!(code, Some(2), "{command:?}: {stderr}");
        assert!(
            stderr.contains(&format!(
                "no answer from the control socket {socket} within 300 ms"
            )),
            "{command:?}: {stderr}"
        );
        assert!(stderr.contains("--timeout-ms"), "{stderr}");
    }
    // Without the flag: 10 s, well before any test patience runs out.
    let (code, stderr) = hung.run(&["status", "--name", "stuck"], Duration::from_secs(30));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("within 10000 ms"), "{stderr}");
    // `list` still lists the registry, without the hung instance's view.
    let (code, stderr) = hung.run(&["list", "--timeout-ms=300"], Duration::from_secs(10));
    assert_eq!(code, Some(0), "{stderr}");
}
