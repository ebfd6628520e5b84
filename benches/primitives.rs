//! Criterion benches of forkring's shm primitives.
//!
//! - `two processes/turn pass (spin)`: one-way pass through a futex
//!   `Turn` between this process and a peer process (time per pass).
//! - `two processes/ring message (208 B)`: 208-byte messages through the
//!   SPSC ring from a peer process to this one, batched and verified as in
//!   `forkring bench transport` (time per message).
//! - `one process/ring ...`: the ring's own cost with producer and consumer
//!   in one thread: per message through `try_push`/`try_pop` (one
//!   publication and one release each), and per batch of 64 slots filled in
//!   place and published at once.
//!
//! The peer is this bench binary itself, re-executed with
//! `FORKRING_BENCH_PEER` set: it then runs `bench-peer ...` exactly as the
//! forkring binary would (exec, never a bare fork).
//!
//! `cargo bench --bench primitives -- --quick` for a short run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group};
use forkring::bench::Launcher;
use forkring::bench::transport::{self, MSG_SIZE, Mechanism};
use forkring::shm::{RingConsumer, RingProducer};

const PEER_ENV: &str = "FORKRING_BENCH_PEER";

fn launcher() -> Launcher {
    let exe = std::env::current_exe().expect("the bench binary's own path");
    Launcher::with_env(exe, PEER_ENV, "1")
}

fn measure(mechanism: Mechanism, count: u64, launcher: &Launcher) -> transport::Measurement {
    transport::measure(mechanism, count, launcher)
        .unwrap_or_else(|f| panic!("{} measurement failed: {}", mechanism.id(), f))
}

fn two_processes(c: &mut Criterion) {
    let launcher = launcher();
    let mut g = c.benchmark_group("two processes");
    // Every sample starts a peer process; fewer, longer samples.
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(4));
    g.throughput(Throughput::Elements(1));
    g.bench_function("turn pass (spin)", |b| {
        b.iter_custom(|iters| {
            let n = transport::even_passes(iters);
            let m = measure(Mechanism::TurnSpin, n, &launcher);
            m.elapsed.mul_f64(iters as f64 / n as f64)
        })
    });
    g.bench_function("ring message (208 B)", |b| {
        b.iter_custom(|iters| {
            // Timed from the first arrival to the last: n - 1 messages.
            let n = iters.max(1) + 1;
            let m = measure(Mechanism::Ring, n, &launcher);
            m.elapsed.mul_f64(iters as f64 / (n - 1) as f64)
        })
    });
    g.finish();
}

fn one_process(c: &mut Criterion) {
    const BATCH: u32 = transport::RING_BATCH;
    let run = forkring::bench::run_name();
    let (_guard, seg) =
        transport::create_ring(&run).unwrap_or_else(|f| panic!("ring segment: {}", f));
    let view = transport::ring_view(&seg).unwrap_or_else(|f| panic!("ring: {}", f));
    let mut prod = RingProducer::attach(view).expect("producer");
    let mut cons = RingConsumer::attach(view).expect("consumer");
    let mut msg = [0u8; MSG_SIZE];
    let mut out = [0u8; MSG_SIZE];
    transport::fill_message(1, &mut msg);

    let mut g = c.benchmark_group("one process");
    g.throughput(Throughput::Elements(1));
    g.bench_function("ring try_push + try_pop (1 message)", |b| {
        b.iter(|| {
            assert!(prod.try_push(black_box(&msg)).expect("push"));
            assert!(cons.try_pop(black_box(&mut out)).expect("pop"));
        })
    });
    g.throughput(Throughput::Elements(u64::from(BATCH)));
    g.bench_function(
        "ring batch of 64 (copied out, as the stream job reads)",
        |b| {
            b.iter(|| {
                assert!(prod.free(BATCH).expect("free") >= BATCH);
                for j in 0..BATCH {
                    prod.slot_mut(j).copy_from_slice(black_box(&msg));
                }
                prod.publish(BATCH);
                assert!(cons.available(BATCH).expect("available") >= BATCH);
                let mut sum = 0u64;
                let mut words = [0u64; MSG_SIZE / 8];
                for j in 0..BATCH {
                    cons.copy_slot(j, &mut words);
                    sum = sum.wrapping_add(words[0]);
                }
                cons.release(BATCH);
                black_box(sum)
            })
        },
    );
    g.finish();
}

criterion_group!(benches, two_processes, one_process);

fn main() {
    if std::env::var_os(PEER_ENV).is_some() {
        // Re-executed as the peer: the arguments are `bench-peer ...`.
        forkring::cli::main(forkring::jobs::ALL);
    }
    if let Err(f) = forkring::bench::install_interrupt_handler() {
        eprintln!("primitives: {}", f);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
