//! A run made by a benchmark: the control segment (whose supervisor lock
//! this process holds, so `forkring clean` sees the run as live), the
//! job's segments, and the real role processes, reaped here. Every segment
//! is registered with the bench's cleanup (removed on drop and on
//! SIGINT/SIGTERM), and every role is killed if this process dies (the
//! roles' parent-death signal).

use std::time::{Duration, Instant};

use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::BenchError;
use crate::control::{self, ExitStatus};
use crate::job::RoleId;
use crate::settings::RunSettings;
use crate::shm::RunName;
use crate::supervisor::opened::OpenRun;
use crate::supervisor::spawn::spawn_role;

use super::{SegmentGuard, register_peer, unregister_peer};

/// The control segment and the guards of a benchmark's run.
#[derive(Debug)]
pub(crate) struct MiniRun {
    run: RunName,
    open: OpenRun,
    // Dropped after `control` is unmapped: removes every segment.
    _guards: Vec<SegmentGuard>,
}

impl MiniRun {
    /// Creates the control segment of `run` with `settings`; `parts` are the
    /// job segments the caller will create (registered for removal first).
    pub(crate) fn create(
        run: RunName,
        settings: &RunSettings,
        parts: &[&str],
    ) -> Result<MiniRun, BenchError> {
        let mut guards = vec![SegmentGuard::new(&run, control::PART)];
        guards.extend(parts.iter().map(|p| SegmentGuard::new(&run, p)));
        let open = OpenRun::create(&run, settings)
            .map_err(|e| BenchError::failed(format!("cannot create run {run}: {e}")))?;
        Ok(MiniRun {
            run,
            open,
            _guards: guards,
        })
    }

    /// The run's name.
    pub(crate) fn run(&self) -> &RunName {
        &self.run
    }

    /// Every role of the run, in slot order.
    pub(crate) fn roles(&self) -> Vec<RoleId> {
        self.open.roles.iter().copied().collect()
    }

    /// Starts `roles` (real role processes) and waits until all exit,
    /// calling `tick` about every millisecond. Fails if a role fails or the
    /// run exceeds `limit`.
    pub(crate) fn run_roles(
        &self,
        roles: &[RoleId],
        limit: Duration,
        mut tick: impl FnMut(),
    ) -> Result<(), BenchError> {
        let mut live = self.start(roles)?;
        let start = Instant::now();
        while !live.reap()? {
            tick();
            if start.elapsed() > limit {
                live.kill_all();
                return Err(BenchError::failed(format!(
                    "benchmark run {}: the roles did not finish within {} s",
                    self.run,
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    /// Starts `roles` (real role processes); they are killed if the
    /// returned handle is dropped before they exit.
    pub(crate) fn start(&self, roles: &[RoleId]) -> Result<Live, BenchError> {
        let mut live = Live {
            run: self.run.clone(),
            roles: Vec::new(),
        };
        for &r in roles {
            let pid = spawn_role(&r, &self.run)
                .map_err(|e| BenchError::failed(format!("cannot start {r}: {e}")))?;
            register_peer(pid);
            live.roles.push((r, pid));
        }
        Ok(live)
    }
}

/// Role processes started by a [`MiniRun`], killed on drop.
#[derive(Debug)]
pub(crate) struct Live {
    run: RunName,
    roles: Vec<(RoleId, u32)>,
}

impl Live {
    /// Reaps the roles that exited. `Ok(true)` once all have, an error as
    /// soon as one failed (the others are then killed).
    pub(crate) fn reap(&mut self) -> Result<bool, BenchError> {
        let mut i = 0;
        while i < self.roles.len() {
            let (role, pid) = self.roles[i];
            let ended = match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, c)) => Some(Ok(ExitStatus::Code(c))),
                Ok(WaitStatus::Signaled(_, s, _)) => Some(Ok(ExitStatus::Signal(s as i32))),
                Ok(_) => None,
                Err(e) => Some(Err(e)),
            };
            let Some(result) = ended else {
                i += 1;
                continue;
            };
            unregister_peer(pid);
            self.roles.swap_remove(i);
            let problem = match result {
                Ok(st) if st.success() => None,
                Ok(st) => Some(format!("role {role} {st}")),
                Err(e) => Some(format!("cannot wait for role {role}: {e}")),
            };
            if let Some(p) = problem {
                self.kill_all();
                return Err(BenchError::failed(format!(
                    "benchmark run {}: {p}",
                    self.run
                )));
            }
        }
        Ok(self.roles.is_empty())
    }

    /// Waits until every role exited (at most `limit`).
    pub(crate) fn wait(mut self, limit: Duration) -> Result<(), BenchError> {
        let start = Instant::now();
        while !self.reap()? {
            if start.elapsed() > limit {
                self.kill_all();
                return Err(BenchError::failed(format!(
                    "benchmark run {}: the roles did not finish within {} s",
                    self.run,
                    limit.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(())
    }

    fn kill_all(&mut self) {
        for (_, pid) in self.roles.drain(..) {
            let _ = nix::sys::signal::kill(
                Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = waitpid(Pid::from_raw(pid as i32), None);
            unregister_peer(pid);
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.kill_all();
    }
}
