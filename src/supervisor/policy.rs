//! Restart policy: exponential backoff per role and an OTP-style restart
//! intensity limit for the whole run (more than `max_restarts` restarts
//! within `window` → give up).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// First restart delay.
pub(crate) const BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Restart delay cap.
pub(crate) const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RestartPolicy {
    /// Restarts allowed within `window` (all roles together).
    pub(crate) max_restarts: u32,
    /// The sliding window.
    pub(crate) window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 10,
            window: Duration::from_secs(5),
        }
    }
}

/// What to do about a role that died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Start it again after `delay`.
    Restart {
        /// Backoff delay.
        delay: Duration,
    },
    /// Too many restarts: stop the run.
    GiveUp,
}

/// Remembers recent restarts, of the whole run and of each role slot.
#[derive(Debug, Clone)]
pub(crate) struct RestartTracker {
    policy: RestartPolicy,
    all: VecDeque<Instant>,
    /// One queue per role slot of the run's role table.
    per_role: Vec<VecDeque<Instant>>,
}

impl RestartTracker {
    /// A tracker for `policy` over a run of `roles` role slots.
    pub(crate) fn new(policy: RestartPolicy, roles: u32) -> Self {
        RestartTracker {
            policy,
            all: VecDeque::new(),
            per_role: vec![VecDeque::new(); roles as usize],
        }
    }

    /// Decides about the role in slot `slot`, which died abnormally at
    /// `now`.
    pub(crate) fn on_failure(&mut self, slot: u32, now: Instant) -> Decision {
        let window = self.policy.window;
        let prune = |q: &mut VecDeque<Instant>| {
            while q.front().is_some_and(|&t| now.duration_since(t) > window) {
                q.pop_front();
            }
        };
        prune(&mut self.all);
        debug_assert!((slot as usize) < self.per_role.len());
        let last = self.per_role.len().saturating_sub(1);
        let mine = &mut self.per_role[(slot as usize).min(last)];
        prune(mine);
        if self.all.len() as u64 + 1 > self.policy.max_restarts as u64 {
            return Decision::GiveUp;
        }
        // 10 ms, 20 ms, 40 ms ... for this role's consecutive recent
        // failures, capped at 1 s.
        let shift = mine.len().min(16) as u32;
        let delay = BACKOFF_MIN.saturating_mul(1 << shift).min(BACKOFF_MAX);
        self.all.push_back(now);
        mine.push_back(now);
        Decision::Restart { delay }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap() {
        let mut t = RestartTracker::new(
            RestartPolicy {
                max_restarts: 100,
                window: Duration::from_secs(60),
            },
            2,
        );
        let now = Instant::now();
        let delays: Vec<_> = (0..9)
            .map(|i| match t.on_failure(0, now + Duration::from_millis(i)) {
                Decision::Restart { delay } => delay.as_millis(),
                Decision::GiveUp => panic!(),
            })
            .collect();
        assert_eq!(delays, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        // Another role starts from the minimum.
        assert_eq!(
            t.on_failure(1, now),
            Decision::Restart { delay: BACKOFF_MIN }
        );
    }

    #[test]
    fn gives_up_after_more_than_r_in_t() {
        let mut t = RestartTracker::new(RestartPolicy::default(), 8);
        let now = Instant::now();
        for i in 0..10 {
            assert!(matches!(
                t.on_failure(i as u32 % 8, now + Duration::from_millis(i as u64)),
                Decision::Restart { .. }
            ));
        }
        assert_eq!(
            t.on_failure(0, now + Duration::from_millis(20)),
            Decision::GiveUp
        );
    }

    #[test]
    fn old_restarts_age_out() {
        let mut t = RestartTracker::new(RestartPolicy::default(), 8);
        let now = Instant::now();
        for i in 0..10 {
            t.on_failure(0, now + Duration::from_millis(i));
        }
        let later = now + Duration::from_secs(6);
        assert_eq!(
            t.on_failure(0, later),
            Decision::Restart { delay: BACKOFF_MIN }
        );
    }
}
