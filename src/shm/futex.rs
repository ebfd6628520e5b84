//! Raw cross-process futex calls.
//!
//! `FUTEX_WAIT`/`FUTEX_WAKE` *without* `FUTEX_PRIVATE_FLAG`: a private futex
//! is keyed by (mm, address) and only matches waiters of the same process; a
//! shared one is keyed by the backing page, so it works across processes that
//! map the same segment at different addresses. (This is why the
//! `atomic-wait` crate, which always sets the private flag, cannot be used.)

use std::sync::atomic::AtomicU32;
use std::time::Duration;

/// How a [`wait`] returned. Callers always re-check their condition: every
/// outcome, even `Woken`, may be spurious.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitOutcome {
    /// A waker called `FUTEX_WAKE` (or the kernel woke us spuriously).
    Woken,
    /// The word no longer held `expected` when the kernel checked it.
    ValueChanged,
    /// The timeout elapsed.
    TimedOut,
    /// A signal interrupted the wait.
    Interrupted,
}

/// Sleeps while `*word == expected`, for at most `timeout` (forever if
/// `None`). The kernel compares and enqueues atomically, so a store that
/// happens before the comparison is never missed.
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> WaitOutcome {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, 4-byte aligned u32 for the whole call (it is
    // borrowed); FUTEX_WAIT only reads it. `ts_ptr` is null or points to a
    // timespec that lives until the call returns. The remaining arguments are
    // ignored by FUTEX_WAIT.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return WaitOutcome::Woken;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EAGAIN) => WaitOutcome::ValueChanged,
        Some(libc::ETIMEDOUT) => WaitOutcome::TimedOut,
        Some(libc::EINTR) => WaitOutcome::Interrupted,
        // EFAULT/EINVAL cannot happen with a borrowed word and a valid
        // timespec; treat anything else as a spurious wake-up so the caller
        // re-checks its condition and deadline.
        _ => WaitOutcome::Woken,
    }
}

/// Wakes up to `count` processes sleeping in [`wait`] on `word`. Returns how
/// many were woken.
pub(crate) fn wake(word: &AtomicU32, count: u32) -> usize {
    let count = count.min(i32::MAX as u32) as libc::c_int;
    // SAFETY: `word` is a live aligned u32; FUTEX_WAKE does not access the
    // memory, it only uses the address as a key. Extra arguments are ignored.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            count,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(rc).unwrap_or(0)
}

/// Wakes every sleeper on `word`.
pub(crate) fn wake_all(word: &AtomicU32) -> usize {
    wake(word, i32::MAX as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;
    use std::time::Instant;

    #[test]
    fn mismatch_returns_immediately() {
        let w = AtomicU32::new(5);
        assert_eq!(
            wait(&w, 4, Some(Duration::from_secs(5))),
            WaitOutcome::ValueChanged
        );
    }

    #[test]
    fn timeout_is_honoured() {
        let w = AtomicU32::new(0);
        let t = Instant::now();
        assert_eq!(
            wait(&w, 0, Some(Duration::from_millis(30))),
            WaitOutcome::TimedOut
        );
        assert!(t.elapsed() >= Duration::from_millis(30));
    }

    #[test]
    fn wake_releases_a_sleeper() {
        let w = std::sync::Arc::new(AtomicU32::new(0));
        let w2 = w.clone();
        let h = std::thread::spawn(move || {
            while w2.load(Ordering::SeqCst) == 0 {
                wait(&w2, 0, Some(Duration::from_secs(10)));
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        w.store(1, Ordering::SeqCst);
        wake_all(&w);
        h.join().unwrap();
    }
}
