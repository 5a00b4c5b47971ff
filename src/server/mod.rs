//! The data path: from a client connection to a worker and back.
//!
//! - [`listen`]: bind, accept, serve each connection (HTTP/1.1 and HTTP/2), graceful stop.
//! - [`accept`]: what every accept loop does when accept fails (out of descriptors).
//! - [`edge`]: what is refused or settled before routing (method, framing, authority).
//! - [`routes`]: the server's own `/server`, else the app's proxy.
//! - [`proxy`]: header hygiene, worker selection, outcome → status.
//! - [`pool`]: LIFO idle stack and bounded FIFO queue, per app ([`wait_queue`]: the queue).
//! - [`upstream`]: one persistent HTTP/1.1 connection per worker socket.
//! - [`wire`]: the HTTP/1.1 bytes on that connection: heads, framing, header policy.
//! - [`body`]: request/response bodies with limits, timeouts and the worker lease.
//! - [`access_log`], [`metrics`]: what happened, per request and in total.

pub mod accept;
pub mod access_log;
pub mod body;
pub mod conn;
pub mod edge;
pub mod listen;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod relay;
pub mod routes;
pub mod upstream;
pub mod wait_queue;
pub mod wire;
