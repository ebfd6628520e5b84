//! A counting semaphore on a futex word, usable across processes.

use std::time::Instant;

use super::cell::ShmSafe;
use super::wait::{Deadline, FutexCell, SpinPolicy, TimedOut};

/// A counting semaphore. The word is the count.
///
/// The count comes from shared memory and is not trusted: a corrupted count
/// only makes `wait` return early or late, never anything unsafe.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct Semaphore {
    cell: FutexCell,
}

// SAFETY: repr(C) over FutexCell.
unsafe impl ShmSafe for Semaphore {}

impl Semaphore {
    /// Adds one to the count and wakes sleepers, if any.
    pub(crate) fn post(&self) {
        // SYNC POINT: release of what the poster wrote before posting;
        // acquired by `try_wait`'s successful decrement.
        self.cell.fetch_add(1);
    }

    /// Takes one from the count if it is positive.
    pub(crate) fn try_wait(&self) -> bool {
        self.cell.try_decrement()
    }

    /// Takes one from the count, sleeping while it is zero, until `deadline`.
    pub(crate) fn wait(
        &self,
        policy: SpinPolicy,
        deadline: impl Into<Deadline>,
    ) -> Result<(), TimedOut> {
        let deadline = match deadline.into() {
            Deadline::After(d) => Deadline::At(Instant::now() + d),
            at => at,
        };
        loop {
            if self.try_wait() {
                return Ok(());
            }
            self.cell.wait_until(|v| v > 0, policy, deadline)?;
        }
    }

    #[cfg(test)]
    /// The current count.
    pub(crate) fn count(&self) -> u32 {
        self.cell.load_relaxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn counts_posts() {
        let s = Arc::new(Semaphore::default());
        let s2 = s.clone();
        let h = std::thread::spawn(move || {
            for _ in 0..1000 {
                s2.post();
            }
        });
        for _ in 0..1000 {
            s.wait(
                SpinPolicy::HANDOFF,
                Instant::now() + Duration::from_secs(30),
            )
            .unwrap();
        }
        h.join().unwrap();
        assert_eq!(s.count(), 0);
        assert!(!s.try_wait());
    }

    #[test]
    fn wait_times_out() {
        let s = Semaphore::default();
        let t = Instant::now();
        assert!(
            s.wait(SpinPolicy::SLEEP, t + Duration::from_millis(20))
                .is_err()
        );
        assert!(t.elapsed() >= Duration::from_millis(20));
    }
}
