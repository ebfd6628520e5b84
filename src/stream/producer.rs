//! The producer: generates vectors into the ring at a drift-free rate (or as
//! fast as the consumer takes them) and simulates dropouts.
//!
//! Crash safety. The producer's commit point is the generation flip of its
//! [`ProducerRecord`] (ring head, next sequence number, drop counters). A
//! chunk of vectors is handled as: write slots beyond the published head →
//! commit the record → publish the head. Killed before the commit, the
//! slots were never visible and the restarted producer regenerates the same
//! sequence numbers (vector values depend only on (seed, sequence number));
//! killed after it, the restarted producer republishes the committed head.
//! Drops decided but not committed simply did not happen.

use std::time::Duration;

use crate::clock::{monotonic_ns, sleep_until_ns};
use crate::job::{JobError, RoleCtx};
use crate::shm::ring::RingProducer;
use crate::shm::{Access, SpinPolicy};

use super::generate::{Generator, NoiseClock};
use super::layout::{ProducerRecord, SLOT_HEADER, StreamSegments};
use super::{Rate, StreamSettings};

/// Slots written per commit when producing as fast as possible.
pub(crate) const CHUNK: u32 = 64;
/// How often a waiting producer re-checks its supervisor.
const LIVENESS_SLICE: Duration = Duration::from_millis(200);
/// Sleeps up to this long go to `clock_nanosleep` rather than the futex.
const SHORT_SLEEP_NS: u64 = 100_000_000;

/// Writes vector `seq`, sent at `sent_ns` and scheduled for `due_ns` (0:
/// no schedule, `--rate max`), into `slot` ([`StreamSettings::slot_size`]
/// bytes: the header, `dim` values, padding to 8 bytes). Also used by
/// `forkring bench stream` for the pipe and socket producers.
#[inline]
pub fn write_slot(
    slot: &mut [u8],
    seq: u64,
    sent_ns: u64,
    due_ns: u64,
    g: &Generator,
) -> Result<(), JobError> {
    slot[..8].copy_from_slice(&seq.to_le_bytes());
    slot[8..16].copy_from_slice(&sent_ns.to_le_bytes());
    slot[16..24].copy_from_slice(&due_ns.to_le_bytes());
    let end = (SLOT_HEADER + 4 * g.dim()).min(slot.len());
    // Slots are 8-aligned (64-aligned array, size a multiple of 8), so the
    // values are 4-aligned; try_cast reports rather than panics otherwise.
    let values: &mut [f32] = bytemuck::try_cast_slice_mut(&mut slot[SLOT_HEADER..end])
        .map_err(|e| JobError::corrupt("ring", format!("slot is not f32-aligned ({e:?})")))?;
    g.fill(seq, values);
    if cfg!(target_endian = "big") {
        values
            .iter_mut()
            .for_each(|x| *x = f32::from_bits(x.to_bits().to_le()));
    }
    let sum = super::layout::slot_sum(slot);
    slot[super::layout::SLOT_SUM..SLOT_HEADER].copy_from_slice(&sum.to_le_bytes());
    Ok(())
}

/// The custom scheduler slice the producer asks for (EEVDF, Linux 6.12+):
/// a task with a short slice gets an early virtual deadline when it wakes,
/// so it preempts a spinning task (the image roles) at once instead of
/// waiting for that task's slice to end.
const PRODUCER_SLICE_NS: u64 = 100_000;

/// `struct sched_attr` of sched_setattr(2) (SCHED_ATTR_SIZE_VER1).
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// Up to this rate a realtime producer leaves its core idle almost all the
/// time (about 25 µs of work per vector); above it, or with `--rate max`,
/// it could hold a core, so it stays a normal task.
const REALTIME_MAX_HZ: f64 = 10_000.0;

/// How the producer's wake-ups were made punctual.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wakeups {
    /// SCHED_FIFO priority 1: granted to root, CAP_SYS_NICE or an
    /// RLIMIT_RTPRIO; refused by systemd's RestrictRealtime=yes.
    Realtime,
    /// SCHED_OTHER with a 100 µs slice and a 1 ns timer slack: any user.
    ShortSlice,
}

/// Makes this process's timed wake-ups punctual for a schedule of `hz`.
/// Without privileges (any user, systemd): a timer slack of 1 ns instead of
/// the default 50 µs, and a 100 µs scheduler slice (SCHED_OTHER, nice
/// unchanged), best effort (an older kernel keeps its defaults). Where the
/// process may (root, CAP_SYS_NICE, RLIMIT_RTPRIO), and the rate leaves the
/// core idle, SCHED_FIFO at the lowest priority instead. Measured in the
/// README (stream rate figures); the lateness figures show the result.
fn tighten_wakeups(hz: f64) -> Wakeups {
    if hz <= REALTIME_MAX_HZ {
        let p = libc::sched_param { sched_priority: 1 };
        // SAFETY: sched_setscheduler(0, ...) reads a live sched_param and
        // changes only this process's policy; it fails with EPERM where
        // realtime is not allowed. SCHED_RESET_ON_FORK: no child inherits.
        let r = unsafe {
            libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &p)
        };
        if r == 0 {
            return Wakeups::Realtime;
        }
    }
    // SAFETY: prctl(PR_SET_TIMERSLACK) takes an integer and affects only
    // this thread's timers; no memory is passed.
    let _ = unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0) };
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        sched_policy: libc::SCHED_OTHER as u32,
        sched_nice: 0,
        sched_runtime: PRODUCER_SLICE_NS,
        ..SchedAttr::default()
    };
    // Not a futex call (the reason raw syscalls are disallowed): libc has no
    // sched_setattr wrapper.
    // SAFETY: sched_setattr(0, attr, 0) reads `attr.size` bytes from a live,
    // properly sized and initialised struct and changes only this thread's
    // scheduling; the kernel rejects values it does not accept.
    #[allow(clippy::disallowed_methods)]
    let _ = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    Wakeups::ShortSlice
}

/// Runs the producer of the run.
pub(crate) fn run(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &StreamSettings = ctx.settings()?;
    let segs = StreamSegments::open(ctx.run, s, Access::ReadWrite)?;
    let sc = segs.control()?;
    let mut rec = segs.producer_record()?;
    let view = segs.ring_view()?;
    let mut ring = RingProducer::resume_at(view, rec.head)?;
    sc.stats.producer_attaches.add(1);
    ctx.attached();
    if rec.finished == 1 {
        ring.flush_wake();
        sc.stats.producer_cpu_ns.add(crate::clock::process_cpu_ns());
        return Ok(());
    }

    let generator = Generator::new(s);
    let mut noise = s.noise.map(|n| {
        NoiseClock::new(
            n,
            monotonic_ns(),
            s.seed ^ std::process::id() as u64 ^ monotonic_ns(),
        )
    });
    let count = s.count.unwrap_or(u64::MAX);
    let stop = ctx.stop();
    let finishing = || sc.finish.is_set() || stop.is_set();
    let check_supervisor = || ctx.require_supervisor();

    // Produces sequence numbers into free slots `0..room` until `room`
    // slots are written or `limit` numbers are used, the first one due at
    // `due` (0: no schedule); returns slots written.
    let mut produce = |ring: &mut RingProducer<'_>,
                       rec: &mut ProducerRecord,
                       room: u32,
                       limit: u64,
                       due: u64|
     -> Result<u32, JobError> {
        let mut written = 0;
        let mut used = 0;
        while written < room && used < limit && rec.next_seq < count {
            let seq = rec.next_seq;
            rec.next_seq += 1;
            used += 1;
            let ts = monotonic_ns();
            if let Some(n) = noise.as_mut() {
                let mut event = false;
                if n.drop_now(ts, &mut event) {
                    rec.dropped += 1;
                    rec.drop_events += event as u64;
                    continue;
                }
            }
            write_slot(ring.slot_mut(written), seq, ts, due, &generator)?;
            written += 1;
        }
        Ok(written)
    };
    let commit = |ring: &mut RingProducer<'_>, rec: &mut ProducerRecord, written: u32| {
        rec.head = rec.head.wrapping_add(written);
        // Commit point, then publication (see module docs).
        sc.producer.commit(*rec);
        ring.publish(written);
    };

    match s.rate {
        Rate::Max => {
            while rec.next_seq < count && !finishing() {
                let free = match ring.wait_free(1, SpinPolicy::handoff(), LIVENESS_SLICE)? {
                    Ok(f) => f,
                    Err(_) => {
                        check_supervisor()?;
                        continue;
                    }
                };
                let written = produce(&mut ring, &mut rec, free.min(CHUNK), u64::MAX, 0)?;
                commit(&mut ring, &mut rec, written);
            }
        }
        Rate::Hz(hz) => {
            // Absolute deadlines from a fixed origin: no drift however long
            // each vector takes. After a stall (full ring), missed deadlines
            // are caught up at once. Each slot carries its deadline, so the
            // consumer measures how late it was sent.
            let _how = tighten_wakeups(hz);
            let t0 = monotonic_ns();
            let mut k: u64 = 0;
            while rec.next_seq < count && !finishing() {
                let due = t0 + (k as f64 * 1e9 / hz) as u64;
                let now = monotonic_ns();
                if now < due {
                    if due - now <= SHORT_SLEEP_NS {
                        // A plain timed sleep is the cheapest wake-up; the
                        // finish flag is checked right after it.
                        sleep_until_ns(due);
                    } else {
                        // Long gaps (slow rates) sleep on the finish flag,
                        // so a finish request wakes us at once; a stop is
                        // noticed within the liveness slice.
                        sc.finish.wait(Duration::from_nanos(
                            (due - now).min(LIVENESS_SLICE.as_nanos() as u64),
                        ));
                    }
                    continue;
                }
                let free = match ring.wait_free(1, SpinPolicy::SLEEP, LIVENESS_SLICE)? {
                    Ok(f) => f,
                    Err(_) => {
                        check_supervisor()?;
                        continue;
                    }
                };
                let written = produce(&mut ring, &mut rec, free.min(1), 1, due)?;
                commit(&mut ring, &mut rec, written);
                k += 1;
            }
        }
    }
    // The stream has ended only if it reached --count or was asked to
    // finish (image complete, --duration). A stop request (signal, restart
    // limit) leaves it resumable: the handoff, or a resumed run, decides.
    if rec.next_seq >= count || sc.finish.is_set() {
        rec.finished = 1;
        sc.producer.commit(rec);
    }
    ring.flush_wake();
    sc.stats.producer_cpu_ns.add(crate::clock::process_cpu_ns());
    Ok(())
}
