//! One client connection, as its requests see it: how many are in flight
//! (the listener's idle watch reads this) and a switch that drops the
//! connection at once.
//!
//! The switch is for a response that has to end *now* (its client is too
//! slow to hold a worker, or its worker stalled): hyper only notices a body
//! error when it next polls the body, which for a client that is not
//! reading may be much later, so the listener drops the whole connection
//! instead, with a reset (no lingering to deliver what is still queued).

use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use atomic_waker::AtomicWaker;

#[derive(Default)]
pub struct ClientConn {
    /// Requests whose response is not finished.
    in_flight: AtomicU32,
    /// Requests ever begun on the connection.
    begun: AtomicU64,
    aborted: AtomicBool,
    /// The connection's task, woken by [`ClientConn::abort`]. An atomic
    /// waker rather than a `Notify`: the task polls this every time it
    /// wakes, and registering here takes no lock.
    task: AtomicWaker,
}

impl ClientConn {
    /// Drops the connection (its task does, at once).
    pub fn abort(&self) {
        self.aborted.store(true, Ordering::Release);
        self.task.wake();
    }

    /// Resolves once [`ClientConn::abort`] was called.
    pub async fn aborted(&self) {
        poll_fn(|cx| self.poll_aborted(cx)).await
    }

    fn poll_aborted(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.aborted.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        self.task.register(cx.waker());
        // An abort between the load and the registration woke no one.
        match self.aborted.load(Ordering::Acquire) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Wake, Waker};

    #[derive(Default)]
    struct Flag(AtomicBool);

    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn an_abort_wakes_the_waiting_connection() {
        let conn = ClientConn::default();
        let woken = Arc::new(Flag::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(conn.poll_aborted(&mut cx).is_pending());
        conn.abort();
        assert!(woken.0.load(Ordering::SeqCst), "the abort woke the task");
        assert!(conn.poll_aborted(&mut cx).is_ready());
    }
}
