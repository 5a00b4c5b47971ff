//! The `rip-server` binary: parse the command line, then serve or send a
//! command to a running instance. All logic lives in the library.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser;
use rip_server::cli::{Cli, Invocation};
use rip_server::config::{Config, ProcessEnv};

fn main() -> ExitCode {
    // While this is the only thread: take what systemd passed out of the
    // environment, so workers never inherit it.
    rip_server::systemd::take_from_env();
    let cli = Cli::parse();
    let result = match cli.invocation() {
        Ok(Invocation::Serve(args)) => match Config::build(&cli, &args, &ProcessEnv) {
            Ok(config) if cli.check => rip_server::check::check(&config)
                .map(|summary| drop(writeln!(std::io::stdout().lock(), "{summary}"))),
            Ok(config) => run(config.threads, rip_server::serve(&cli, &args, config)),
            Err(e) => Err(e.into()),
        },
        Ok(Invocation::Control(_)) if cli.check => Err(rip_server::Error::CheckNeedsServe),
        Ok(Invocation::Control(command)) => run(1, rip_server::control_command(&cli, command)),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        // Logged already; stderr may be as stalled as stdout.
        Err(rip_server::Error::StoppedAtOnce(signal)) => ExitCode::from(signal.exit_code()),
        Err(e) => {
            // A closed stderr must not turn exit status 2 into a panic's 101.
            let _ = writeln!(std::io::stderr().lock(), "rip-server: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs `task` on a runtime with `threads` worker threads.
fn run(
    threads: usize,
    task: impl std::future::Future<Output = Result<(), rip_server::Error>>,
) -> Result<(), rip_server::Error> {
    // One thread needs no work-stealing scheduler: the current-thread one is
    // cheaper per wake-up.
    let mut builder = match threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(n);
            builder
        }
    };
    let runtime = builder.enable_all().build().map_err(|e| {
        rip_server::Error::Io(std::io::Error::new(
            e.kind(),
            format!("cannot start the async runtime: {e}"),
        ))
    })?;
    let result = runtime.block_on(task);
    // Blocking helpers (a file-tree hash, a log flush) must not hold up exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result
}
