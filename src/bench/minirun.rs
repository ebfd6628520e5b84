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
        let mut live: Vec<(RoleId, u32)> = Vec::new();
        let kill_all = |live: &[(RoleId, u32)]| {
            for (_, pid) in live {
                let _ = nix::sys::signal::kill(
                    Pid::from_raw(*pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        };
        for &r in roles {
            match spawn_role(&r, &self.run) {
                Ok(pid) => {
                    register_peer(pid);
                    live.push((r, pid));
                }
                Err(e) => {
                    kill_all(&live);
                    return Err(BenchError::failed(format!("cannot start {r}: {e}")));
                }
            }
        }
        let start = Instant::now();
        let mut failure = None;
        while !live.is_empty() {
            tick();
            let mut i = 0;
            while i < live.len() {
                let (role, pid) = live[i];
                let ended = match waitpid(Pid::from_raw(pid as i32), Some(WaitPidFlag::WNOHANG)) {
                    Ok(WaitStatus::Exited(_, c)) => Some(Ok(ExitStatus::Code(c))),
                    Ok(WaitStatus::Signaled(_, s, _)) => Some(Ok(ExitStatus::Signal(s as i32))),
                    Ok(_) => None,
                    Err(e) => Some(Err(e)),
                };
                match ended {
                    Some(result) => {
                        unregister_peer(pid);
                        live.swap_remove(i);
                        let problem = match result {
                            Ok(st) if st.success() => None,
                            Ok(st) => Some(format!("role {role} {st}")),
                            Err(e) => Some(format!("cannot wait for role {role}: {e}")),
                        };
                        if let Some(p) = problem
                            && failure.is_none()
                        {
                            failure = Some(p);
                            kill_all(&live);
                        }
                    }
                    None => i += 1,
                }
            }
            if start.elapsed() > limit && failure.is_none() {
                failure = Some(format!(
                    "the roles did not finish within {} s",
                    limit.as_secs()
                ));
                kill_all(&live);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        match failure {
            None => Ok(()),
            Some(f) => Err(BenchError::failed(format!(
                "benchmark run {}: {f}",
                self.run
            ))),
        }
    }
}
