//! Facts about processes from /proc.

/// Start time of process `pid` in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), or `None` if the process does not exist. Together with
/// the pid it identifies a process even after the pid is reused.
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_ticks(&stat)
}

/// The wall-clock time (seconds since the Unix epoch) of a start time in
/// clock ticks since boot, from the boot time in /proc/stat.
pub(crate) fn start_unix_secs(ticks: u64) -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    (hz > 0).then(|| btime + ticks as f64 / hz as f64)
}

/// Start time of the calling process (see [`start_ticks`]).
pub(crate) fn own_start_ticks() -> u64 {
    start_ticks(std::process::id()).unwrap_or(0)
}

/// Whether `pid` is alive and is still the process that started at
/// `ticks` (0 = don't compare).
pub(crate) fn is_same_process(pid: u32, ticks: u64) -> bool {
    if pid == 0 {
        return false;
    }
    match start_ticks(pid) {
        Some(t) => ticks == 0 || t == ticks,
        None => false,
    }
}

/// Makes the child `cmd` starts receive SIGKILL when the calling thread
/// dies (`PR_SET_PDEATHSIG`), re-checking right after that the parent is
/// still `getppid()` (closing the race with a parent that died during the
/// fork). Used for role processes and for the task pool's `exec` children.
pub(crate) fn kill_with_parent(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (prctl, getppid); it allocates nothing
    // (the error is built from a raw errno).
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
}

fn parse_start_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may itself contain
    // spaces and parentheses, so split after the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    // `after` starts with field 3 (state); field 22 is at index 19.
    after.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_odd_command_names() {
        let line = "123 (a) b) c) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 987654 20 21";
        assert_eq!(parse_start_ticks(line), Some(987654));
    }

    #[test]
    fn own_process_is_alive() {
        let me = std::process::id();
        let t = own_start_ticks();
        assert!(t > 0);
        assert!(is_same_process(me, t));
        assert!(!is_same_process(me, t + 1));
        assert!(!is_same_process(0, 0));
    }
}
