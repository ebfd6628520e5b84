//! Recovery from a supervisor that died while it created a run.
//!
//! A supervisor creates the control segment first, then every job segment,
//! and only then starts the roles. Killed part-way, it leaves segments that
//! are missing, half-made (never published) or complete but never used.
//! The next `run` of the name decides from proof, not from pids alone:
//! - the creator is dead: the lock it takes on byte 0 of every segment at
//!   once after creating the file is free (we hold it now), and the pid and
//!   start time it recorded, if any, are no longer a live process;
//! - no role ever started: the control segment's phase is still `Starting`
//!   and its role table is untouched (see `Control::no_role_started`), so
//!   the segments hold only what creation wrote.
//!
//! Such a run is removed and the new run starts afresh; a run whose segments
//! are all complete is resumed as any other.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::control::{self, Control};
use crate::shm::segment::{self, Publication};
use crate::shm::{RunName, lock};

use super::error::RunError;
use super::opened::{Hosts, OpenRun};
use super::run::segment_files_of;

/// The lock of a removed run's control file, held until the new run's
/// control segment exists: a supervisor that found the same half-made run
/// cannot take it meanwhile, so it cannot remove the new run by name.
#[derive(Debug)]
pub(crate) struct Discarded {
    _lock: OwnedFd,
}

/// If run `run`'s control segment was never published and its creator is
/// provably dead, removes the run's files and returns the lock that keeps
/// others away. `None` if there is no control file, a live process holds
/// it, or it was published (the ordinary resume path handles those).
pub(crate) fn half_made_control(run: &RunName) -> Result<Option<Discarded>, RunError> {
    let name = run.segment(control::PART);
    let Ok(fd) = segment::open_raw(&name) else {
        return Ok(None);
    };
    if !matches!(
        lock::try_lock(fd.as_fd(), control::SUPERVISOR_LOCK_BYTE),
        Ok(true)
    ) {
        return Ok(None);
    }
    match segment::publication(fd.as_fd()) {
        Ok(Publication::Unpublished { creator }) if !creator_alive(creator) => {}
        _ => return Ok(None),
    }
    let Some(removed) = discard(run, fd.as_fd())? else {
        return Ok(None);
    };
    eprintln!(
        "run {run}: its supervisor died while creating it (segment {name} was never initialised); removed {} and starting afresh",
        crate::units::plural(removed as u64, "segment", "segments")
    );
    Ok(Some(Discarded { _lock: fd }))
}

/// If `open` (whose supervisor lock the caller holds) never started a role
/// and one of its job segments is missing, half-made or unusable, removes
/// the run's files and returns the lock that keeps others away. `None` if
/// the run should be resumed.
pub(crate) fn half_made_jobs(open: &OpenRun) -> Result<Option<Discarded>, RunError> {
    let c: &Control = &open.control;
    if !c.no_role_started() || jobs_complete(open)? {
        return Ok(None);
    }
    let fd = c
        .segment()
        .fd()
        .try_clone_to_owned()
        .map_err(|e| RunError::Os {
            what: format!("cannot duplicate the descriptor of {}", c.segment().name()),
            errno: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    let Some(removed) = discard(open.run(), fd.as_fd())? else {
        return Ok(None);
    };
    eprintln!(
        "run {}: its supervisor died while creating its segments, before any role started; removed {} and starting afresh",
        open.run(),
        crate::units::plural(removed as u64, "segment", "segments")
    );
    Ok(Some(Discarded { _lock: fd }))
}

/// Whether every job segment of `open` is published and opens. The
/// creator is dead (the caller holds the supervisor lock, which every
/// creator of the run's job segments held), so an unpublished segment will
/// stay so: it is found without waiting for it.
fn jobs_complete(open: &OpenRun) -> Result<bool, RunError> {
    let control_name = open.control.segment().name().to_string();
    for n in segment_files_of(open.run())? {
        if n == control_name {
            continue;
        }
        let Ok(fd) = segment::open_raw(&n) else {
            return Ok(false);
        };
        if !matches!(segment::publication(fd.as_fd()), Ok(Publication::Published)) {
            return Ok(false);
        }
    }
    Ok(open
        .hosts(Hosts::Open(crate::shm::Access::ReadWrite))
        .is_ok())
}

/// Whether the file `name` in /dev/shm is a regular file of ours with mode
/// 0600 or 0640, as every segment forkring creates (0640 once shared with a
/// group, `run --group`).
fn made_by_us(name: &str) -> bool {
    if !matches!(segment::foreign(name), Ok(None)) {
        return false;
    }
    nix::sys::stat::lstat(
        std::path::Path::new(crate::shm::name::SHM_DIR)
            .join(name)
            .as_path(),
    )
    .is_ok_and(|st| segment::mode_ok(st.st_mode))
}

fn creator_alive(creator: Option<(u32, u64)>) -> bool {
    creator.is_some_and(|(pid, ticks)| crate::procinfo::is_same_process(pid, ticks))
}

/// Removes every file of `run`, the control file last. Only while the
/// control file's name still refers to `control_fd`'s file: a supervisor
/// that held the lock of this file before us created a new run under the
/// name before it let go, and that run is not ours to remove (`None`).
/// Returns how many files were removed.
fn discard(run: &RunName, control_fd: BorrowedFd<'_>) -> Result<Option<usize>, RunError> {
    let control_name = run.segment(control::PART);
    let ours = nix::sys::stat::fstat(control_fd).ok();
    let named = nix::sys::stat::stat(
        std::path::Path::new(crate::shm::name::SHM_DIR)
            .join(&control_name)
            .as_path(),
    )
    .ok();
    match (ours, named) {
        (Some(a), Some(b)) if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino) => {}
        _ => return Ok(None),
    }
    // Only files forkring could have made: regular, ours, mode 0600 or
    // 0640 (it creates every segment so, and shares some with a group). Anything else is left for the ordinary
    // open to report (mode, owner, garbage), never removed.
    let files = segment_files_of(run)?;
    if !files.iter().all(|n| made_by_us(n)) {
        return Ok(None);
    }
    let mut removed = 0;
    for n in files {
        if n != control_name {
            segment::unlink(&n).map_err(|errno| RunError::Remove {
                name: n.clone(),
                errno,
            })?;
            removed += 1;
        }
    }
    segment::unlink(&control_name).map_err(|errno| RunError::Remove {
        name: control_name.clone(),
        errno,
    })?;
    Ok(Some(removed + 1))
}
