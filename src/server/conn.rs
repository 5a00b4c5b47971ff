//! One client connection, as its requests see it: how many are in flight
//! (the listener's idle watch reads this) and a switch that drops the
//! connection at once.
//!
//! The switch is for a response that has to end *now* (its client is too
//! slow to hold a worker, or its worker stalled): hyper only notices a body
//! error when it next polls the body, which for a client that is not
//! reading may be much later, so the listener drops the whole connection
//! instead, with a reset (no lingering to deliver what is still queued).

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Default)]
pub struct ClientConn {
    /// Requests whose response is not finished.
    in_flight: AtomicU32,
    /// Requests ever begun on the connection.
    begun: AtomicU64,
    aborted: AtomicBool,
    abort: Notify,
}

impl ClientConn {
    /// Drops the connection (its task does, at once).
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Relaxed);
        self.abort.notify_one();
    }

    /// Resolves once [`ClientConn::abort`] was called.
    pub async fn aborted(&self) {
        let notified = self.abort.notified();
        if self.aborted.load(Ordering::Relaxed) {
            return;
        }
        notified.await;
    }

    pub fn begun(&self) -> u64 {
        self.begun.load(Ordering::Relaxed)
    }

    pub fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// Held by a request until its response body is finished or dropped: three
/// uncontended atomic adds per request, and no clock read.
pub struct Ongoing(Arc<ClientConn>);

impl Ongoing {
    pub fn begin(conn: &Arc<ClientConn>) -> Self {
        conn.begun.fetch_add(1, Ordering::Relaxed);
        conn.in_flight.fetch_add(1, Ordering::Relaxed);
        Ongoing(conn.clone())
    }
}

impl Drop for Ongoing {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}
