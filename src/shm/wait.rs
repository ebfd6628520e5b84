//! Spin-then-sleep waiting on a futex word, with a sleeper count so that a
//! waker skips the `FUTEX_WAKE` syscall when nobody sleeps.

use std::hint::spin_loop;
use std::sync::atomic::{AtomicU32, Ordering, fence};
use std::time::{Duration, Instant};

use super::cell::ShmSafe;
use super::futex;

/// How long a waiter busy-polls before it yields and then sleeps in the
/// kernel. Spinning pays off when the peer answers within microseconds and
/// runs on another core; on a loaded machine the bound keeps a spinner from
/// stealing the time slice its peer needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpinPolicy {
    /// First, this many tight polls with no PAUSE and no clock read: a
    /// handoff on the other core is seen as soon as its cache line arrives.
    pub(crate) polls: u32,
    /// Then poll with PAUSE for at most this long (measured by the clock).
    pub(crate) spin: Duration,
    /// Then call `sched_yield` at most this many times.
    pub(crate) yields: u32,
}

impl SpinPolicy {
    /// Sleep at once: for waits that are long by nature (a 1 kHz stream).
    pub(crate) const SLEEP: SpinPolicy = SpinPolicy {
        polls: 0,
        spin: Duration::ZERO,
        yields: 0,
    };
    /// For handoffs that normally complete in well under a microsecond.
    pub(crate) const HANDOFF: SpinPolicy = SpinPolicy {
        polls: 4096,
        spin: Duration::from_micros(50),
        yields: 8,
    };

    /// `HANDOFF` when this process may run on at least two CPUs; otherwise
    /// (a one-CPU affinity mask or cgroup quota) spinning can only delay the
    /// peer, which needs our CPU, so yield and sleep at once.
    pub(crate) fn handoff() -> SpinPolicy {
        static ONE_CPU: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let one = *ONE_CPU
            .get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() < 2));
        if one {
            SpinPolicy {
                polls: 0,
                spin: Duration::ZERO,
                yields: 2,
            }
        } else {
            Self::HANDOFF
        }
    }
}

/// When a wait gives up: at an instant, or after a duration counted from the
/// first time the wait reads the clock (after its tight polls), so that the
/// fast path never reads the clock at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deadline {
    /// At this instant.
    At(Instant),
    /// This long after the wait starts spinning with the clock.
    After(Duration),
}

impl From<Instant> for Deadline {
    fn from(i: Instant) -> Self {
        Deadline::At(i)
    }
}

impl From<Duration> for Deadline {
    fn from(d: Duration) -> Self {
        Deadline::After(d)
    }
}

impl Deadline {
    fn resolve(self, now: Instant) -> Instant {
        match self {
            Deadline::At(i) => i,
            Deadline::After(d) => now + d,
        }
    }
}

/// In which phase a wait saw its condition hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitPhase {
    /// During the tight polls (or at once).
    Polls,
    /// During the timed spin with PAUSE.
    Spin,
    /// After yielding the CPU.
    Yield,
    /// After sleeping in the kernel.
    Sleep,
}

/// A spin policy that adapts to whether spinning pays: after a wait that had
/// to yield or sleep (the peer was not running on another CPU, e.g. both
/// share one core on a loaded machine), it stops spinning; after a wait
/// that succeeded while polling, it spins fully again.
#[derive(Debug, Clone, Copy)]
pub struct AdaptiveSpin {
    base: SpinPolicy,
    current: SpinPolicy,
}

impl AdaptiveSpin {
    /// Polls kept while degraded: cheap, and enough to catch a peer that
    /// answers within a microsecond.
    const DEGRADED_POLLS: u32 = 64;

    /// Starts at `base`.
    pub(crate) fn new(base: SpinPolicy) -> Self {
        AdaptiveSpin {
            base,
            current: base,
        }
    }
    /// The policy for the next wait.
    pub(crate) fn policy(&self) -> SpinPolicy {
        self.current
    }
    /// Learns from how the last wait ended.
    pub(crate) fn observe(&mut self, phase: WaitPhase) {
        self.current = match phase {
            WaitPhase::Polls => self.base,
            WaitPhase::Spin => self.current,
            WaitPhase::Yield | WaitPhase::Sleep => SpinPolicy {
                polls: self.base.polls.min(Self::DEGRADED_POLLS),
                spin: Duration::ZERO,
                yields: self.base.yields.max(1),
            },
        };
    }
}

/// The deadline passed before the condition held. Carries the last value seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut(pub u32);

/// A futex word plus the number of processes sleeping on it.
///
/// Invariant: `sleepers` counts processes that are inside, or about to enter,
/// `FUTEX_WAIT` on `word`. A process killed while asleep leaves the count one
/// too high forever; the only effect is that wakers then always make the
/// (harmless) syscall. It can never be too low while someone sleeps, which is
/// what matters for correctness.
#[repr(C)]
#[derive(Debug, Default)]
pub struct FutexCell {
    /// The futex word. Its meaning belongs to the user of the cell: a
    /// sequence number, a count, a flag.
    word: AtomicU32,
    /// See the type-level invariant.
    sleepers: AtomicU32,
}

// SAFETY: repr(C), two atomics; every bit pattern is valid.
unsafe impl ShmSafe for FutexCell {}

impl FutexCell {
    /// Reads the word.
    #[inline]
    pub(crate) fn load(&self) -> u32 {
        // SYNC POINT: acquire side of `publish`/`fetch_add`: whatever the
        // writer wrote before it changed the word is visible to us now.
        self.word.load(Ordering::Acquire)
    }

    /// Reads the word with no ordering, for the word's own writer (which
    /// needs nothing from other processes) and for display.
    #[inline]
    pub(crate) fn load_relaxed(&self) -> u32 {
        self.word.load(Ordering::Relaxed)
    }

    /// Stores `v` and wakes every sleeper, if any.
    #[inline]
    pub(crate) fn publish(&self, v: u32) {
        // SYNC POINT: release side of `load`/`wait_until`: everything this
        // process wrote before this store is visible to a process that
        // observes `v`. SeqCst (an `xchg` on x86) also orders the store before
        // the `sleepers` load below; see `wait_until` for the other half of
        // that Dekker pair.
        self.word.swap(v, Ordering::SeqCst);
        self.wake_sleepers();
    }

    /// Adds `n` to the word (wrapping) and wakes every sleeper, if any.
    /// Returns the previous value.
    #[inline]
    pub(crate) fn fetch_add(&self, n: u32) -> u32 {
        // SYNC POINT: as in `publish`.
        let prev = self.word.fetch_add(n, Ordering::SeqCst);
        self.wake_sleepers();
        prev
    }

    /// Stores `v` and reports whether anyone is counted as sleeping, leaving
    /// the decision to wake to the caller (the ring wakes its consumer only
    /// once a requested fill level is reached).
    #[inline]
    pub(crate) fn store_and_check(&self, v: u32) -> bool {
        // SYNC POINT: as in `publish`.
        self.word.swap(v, Ordering::SeqCst);
        // Dekker pair with `wait_until`, as in `wake_sleepers`.
        self.sleepers.load(Ordering::SeqCst) != 0
    }

    /// Wakes every sleeper unconditionally.
    #[inline]
    pub(crate) fn wake(&self) {
        futex::wake_all(&self.word);
    }

    /// Subtracts one from the word if it is non-zero. Returns whether it did.
    /// No wake-up: only used to take from a count.
    pub(crate) fn try_decrement(&self) -> bool {
        let mut cur = self.word.load(Ordering::Relaxed);
        while cur > 0 {
            // SYNC POINT: Acquire on success pairs with the Release half of
            // `fetch_add`: what the poster wrote before posting is visible.
            match self.word.compare_exchange_weak(
                cur,
                cur - 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(seen) => cur = seen,
            }
        }
        false
    }

    /// Wakes every sleeper without changing the word, so that they re-check
    /// conditions that live elsewhere (a stop flag in another segment).
    pub(crate) fn kick(&self) {
        fence(Ordering::SeqCst);
        futex::wake_all(&self.word);
    }

    #[inline]
    fn wake_sleepers(&self) {
        // Dekker pair with `wait_until`: our SeqCst store to `word` precedes
        // this SeqCst load; the waiter's SeqCst increment of `sleepers`
        // precedes its SeqCst load of `word`. In the single total order one
        // of us sees the other's write, so a wake-up is never lost.
        if self.sleepers.load(Ordering::SeqCst) != 0 {
            futex::wake_all(&self.word);
        }
    }

    /// Waits until `done(word)` holds, spinning per `policy` first, and
    /// returns the word that satisfied it. Gives up at `deadline` with the
    /// last value seen.
    pub(crate) fn wait_until(
        &self,
        done: impl FnMut(u32) -> bool,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<u32, TimedOut> {
        self.wait_until_phase(done, policy, deadline)
            .map(|(v, _)| v)
    }

    /// Like [`FutexCell::wait_until`], also reporting in which phase the
    /// condition held (for [`AdaptiveSpin`]).
    pub(crate) fn wait_until_phase(
        &self,
        mut done: impl FnMut(u32) -> bool,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<(u32, WaitPhase), TimedOut> {
        let mut v = self.load();
        if done(v) {
            return Ok((v, WaitPhase::Polls));
        }
        for _ in 0..policy.polls {
            v = self.load();
            if done(v) {
                return Ok((v, WaitPhase::Polls));
            }
        }
        let start = Instant::now();
        let deadline = deadline.into().resolve(start);
        if !policy.spin.is_zero() {
            let spin_end = start + policy.spin;
            'spin: loop {
                for _ in 0..64 {
                    spin_loop();
                    v = self.load();
                    if done(v) {
                        return Ok((v, WaitPhase::Spin));
                    }
                }
                if Instant::now() >= spin_end {
                    break 'spin;
                }
            }
        }
        for _ in 0..policy.yields {
            std::thread::yield_now();
            v = self.load();
            if done(v) {
                return Ok((v, WaitPhase::Yield));
            }
        }
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(TimedOut(v));
            }
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // Dekker pair with `wake_sleepers` (see there). SYNC POINT: also
            // the acquire side of `publish`.
            v = self.word.load(Ordering::SeqCst);
            if done(v) {
                self.sleepers.fetch_sub(1, Ordering::Relaxed);
                return Ok((v, WaitPhase::Sleep));
            }
            futex::wait(&self.word, v, Some(deadline - now));
            self.sleepers.fetch_sub(1, Ordering::Relaxed);
            v = self.load();
            if done(v) {
                return Ok((v, WaitPhase::Sleep));
            }
        }
    }

    #[cfg(test)]
    /// Waits until the word differs from `seen`. See [`FutexCell::wait_until`].
    pub(crate) fn wait_change(
        &self,
        seen: u32,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<u32, TimedOut> {
        self.wait_until(|v| v != seen, policy, deadline)
    }

    #[cfg(test)]
    /// Number of processes currently counted as sleeping (for tests/status).
    pub(crate) fn sleepers(&self) -> u32 {
        self.sleepers.load(Ordering::Relaxed)
    }
}

/// A one-way flag (0 → 1) that sleepers can wait on: the stop flag of a run
/// or a job.
#[repr(transparent)]
#[derive(Debug, Default)]
pub struct Flag(FutexCell);

// SAFETY: transparent over FutexCell.
unsafe impl ShmSafe for Flag {}

impl Flag {
    /// Whether the flag is raised.
    #[inline]
    pub fn is_set(&self) -> bool {
        // SYNC POINT: acquire side of `set`: what the setter wrote before
        // raising the flag (e.g. the reason) is visible.
        self.0.load() != 0
    }
    /// Raises the flag and wakes everyone sleeping on it.
    pub fn set(&self) {
        // SYNC POINT: release side of `is_set` (inside `publish`).
        self.0.publish(1);
    }
    /// Lowers the flag (a resumed run starts with it lowered).
    pub(crate) fn clear(&self) {
        self.0.publish(0);
    }
    /// Wakes everyone sleeping on the flag without changing it (they
    /// look again at whatever they wait for).
    pub(crate) fn kick(&self) {
        self.0.kick();
    }
    /// Sleeps until the flag is raised or `deadline` passes. Returns whether
    /// it is raised.
    pub(crate) fn wait(&self, deadline: impl Into<Deadline>) -> bool {
        self.0
            .wait_until(|v| v != 0, SpinPolicy::SLEEP, deadline)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_until_times_out_on_time() {
        let c = FutexCell::default();
        let t = Instant::now();
        let r = c.wait_until(
            |v| v == 1,
            SpinPolicy::HANDOFF,
            t + Duration::from_millis(40),
        );
        assert_eq!(r, Err(TimedOut(0)));
        let e = t.elapsed();
        assert!(e >= Duration::from_millis(40), "returned early: {e:?}");
        assert!(e < Duration::from_secs(5), "returned far too late: {e:?}");
        assert_eq!(c.sleepers(), 0);
    }

    #[test]
    fn publish_wakes_a_sleeper() {
        let c = Arc::new(FutexCell::default());
        let c2 = c.clone();
        let h = std::thread::spawn(move || {
            c2.wait_change(
                0,
                SpinPolicy::SLEEP,
                Instant::now() + Duration::from_secs(30),
            )
        });
        while c.sleepers() == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        c.publish(7);
        assert_eq!(h.join().unwrap(), Ok(7));
    }

    #[test]
    fn flag_wait() {
        let f = Arc::new(Flag::default());
        let f2 = f.clone();
        let h = std::thread::spawn(move || f2.wait(Instant::now() + Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(10));
        f.set();
        assert!(h.join().unwrap());
        assert!(f.is_set());
        f.clear();
        assert!(!f.is_set());
    }

    #[test]
    fn adaptive_spin_degrades_and_recovers() {
        let mut a = AdaptiveSpin::new(SpinPolicy::HANDOFF);
        a.observe(WaitPhase::Yield);
        assert_eq!(a.policy().spin, Duration::ZERO);
        assert!(a.policy().polls <= 64);
        a.observe(WaitPhase::Spin);
        assert_eq!(a.policy().spin, Duration::ZERO);
        a.observe(WaitPhase::Polls);
        assert_eq!(a.policy(), SpinPolicy::HANDOFF);
    }

    #[test]
    fn try_decrement_stops_at_zero() {
        let c = FutexCell::default();
        c.fetch_add(2);
        assert!(c.try_decrement());
        assert!(c.try_decrement());
        assert!(!c.try_decrement());
    }
}
