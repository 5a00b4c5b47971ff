//! The `rip-server` binary: parse the command line, then serve or send a
//! command to a running instance. All logic lives in the library.

use std::process::ExitCode;

use clap::Parser;
use rip_server::cli::{Cli, Invocation};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&format!("cannot start the async runtime: {e}")),
    };
    let result = match cli.invocation() {
        Ok(Invocation::Serve(args)) => runtime.block_on(rip_server::serve(&cli, &args)),
        Ok(Invocation::Control(command)) => {
            runtime.block_on(rip_server::control_command(&cli, command))
        }
        Err(e) => Err(e.into()),
    };
    // Blocking helpers (a file-tree hash, a log flush) must not hold up exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&e.to_string()),
    }
}

fn fail(message: &str) -> ExitCode {
    eprintln!("rip-server: {message}");
    ExitCode::from(2)
}
