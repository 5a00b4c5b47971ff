//! Integration tests: the real binary, real worker processes (the bundled
//! Node app and the Rust example worker), real sockets. One module per area.

mod harness;

mod cli;
mod cluster;
mod faults;
mod hostile;
mod hosts;
mod limits;
mod listen;
mod loader;
mod logging;
mod proxy;
mod queue;
mod rolling;
mod runtime;
mod shutdown;
mod supervision;
mod systemd;
mod tls;
mod wire;
