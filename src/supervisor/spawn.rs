//! Starting role processes: fork + exec of our own executable.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use crate::job::RoleId;
use crate::shm::RunName;

use super::role::SUPERVISED_ENV;

/// Environment variables a role must not inherit: they belong to the
/// supervisor's conversation with systemd.
pub(crate) const SUPERVISOR_ONLY_ENV: [&str; 4] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
];

/// Starts `role` of `run` as `/proc/self/exe <kind> --run <run> --index
/// <index>` and returns its pid. The child:
/// - is in its own process group, so a terminal's Ctrl-C reaches only the
///   supervisor, which then stops the roles in order;
/// - gets SIGKILL when the supervisor dies (`PR_SET_PDEATHSIG`), and
///   re-checks its parent right after setting that, closing the race with a
///   supervisor that died during the fork;
/// - does not inherit systemd's notify/watchdog variables.
///
/// Must be called from the supervisor's main thread: the death signal fires
/// when the *thread* that forked the child exits.
pub(crate) fn spawn_role(role: &RoleId, run: &RunName) -> io::Result<u32> {
    spawn(role, run, Stdio::inherit()).map(|(pid, _)| pid)
}

/// Like [`spawn_role`], with the child's stderr on a pipe whose reading end
/// is returned (the supervisor passes its lines through and keeps the last
/// error line: the cause it names when it gives up).
pub(crate) fn spawn_role_piped(
    role: &RoleId,
    run: &RunName,
) -> io::Result<(u32, std::process::ChildStderr)> {
    let (pid, err) = spawn(role, run, Stdio::piped())?;
    Ok((pid, err.expect("stderr was piped")))
}

fn spawn(
    role: &RoleId,
    run: &RunName,
    stderr: Stdio,
) -> io::Result<(u32, Option<std::process::ChildStderr>)> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("forkring")
        .arg(role.kind)
        .arg("--run")
        .arg(run.as_str())
        .arg("--index")
        .arg(role.index.to_string())
        .stdin(Stdio::null())
        .stderr(stderr)
        .env(SUPERVISED_ENV, "1")
        .process_group(0);
    for v in SUPERVISOR_ONLY_ENV {
        cmd.env_remove(v);
    }
    crate::procinfo::kill_with_parent(&mut cmd);
    let mut child = cmd.spawn()?;
    // We reap with waitpid(-1) in the supervisor loop; dropping `Child`
    // neither waits nor kills.
    Ok((child.id(), child.stderr.take()))
}
