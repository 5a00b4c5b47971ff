//! Criterion micro-benchmarks of the pool's hot path: checkout and release
//! of an idle worker (LIFO pop/push), the hand-off of a released worker
//! to a queued request, and a waiter leaving a long queue (its client gone).

use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use rip_server::server::pool::Pool;

fn pool_with(workers: u64) -> Arc<Pool<u64>> {
    let pool = Pool::new(8192, Duration::from_secs(5));
    for id in 0..workers {
        pool.admit(id, 0, None, id)
            .unwrap_or_else(|_| panic!("admit {id}"));
    }
    pool
}

fn checkout_release(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = pool_with(8);
    c.bench_function("pool/checkout+release (idle worker)", |b| {
        b.to_async(&runtime).iter(|| async {
            let lease = pool.checkout().await.unwrap();
            drop(lease);
        })
    });
}

fn hand_off(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = pool_with(1);
    c.bench_function("pool/hand-off to a queued request", |b| {
        b.to_async(&runtime).iter(|| async {
            let held = pool.checkout().await.unwrap();
            let waiter = pool.checkout();
            tokio::pin!(waiter);
            // Enqueue the waiter, then release: the worker goes straight to it.
            assert!(futures_poll_once(waiter.as_mut()).await.is_none());
            drop(held);
            drop(waiter.await.unwrap());
        })
    });
}

/// Requests already waiting when a client joins the queue and leaves it.
const QUEUED: usize = 4096;

fn cancel_in_long_queue(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = pool_with(1);
    let _held = runtime.block_on(pool.checkout()).unwrap();
    let mut queued = Vec::with_capacity(QUEUED);
    for _ in 0..QUEUED {
        let mut waiter = Box::pin(pool.checkout());
        assert!(runtime
            .block_on(futures_poll_once(waiter.as_mut()))
            .is_none());
        queued.push(waiter);
    }
    c.bench_function("pool/join and leave a queue of 4096", |b| {
        b.to_async(&runtime).iter(|| async {
            let waiter = pool.checkout();
            tokio::pin!(waiter);
            assert!(futures_poll_once(waiter.as_mut()).await.is_none());
            // Dropped while queued: its client left.
        })
    });
    drop(queued);
}

/// Polls a future once; `None` if it is still pending.
async fn futures_poll_once<F: std::future::Future + Unpin>(future: F) -> Option<F::Output> {
    let mut future = future;
    std::future::poll_fn(|cx| {
        std::task::Poll::Ready(match std::pin::Pin::new(&mut future).poll(cx) {
            std::task::Poll::Ready(v) => Some(v),
            std::task::Poll::Pending => None,
        })
    })
    .await
}

criterion_group!(benches, checkout_release, hand_off, cancel_in_long_queue);
criterion_main!(benches);
