//! Liveness locks: open-file-description (OFD) byte-range locks on a
//! segment's file.
//!
//! The kernel releases an OFD lock when the last descriptor of the open file
//! description closes, which includes the holder's death by SIGKILL. A held
//! lock therefore proves a live holder without trusting pids stored in shared
//! memory (which may be stale or reused). The control segment of a run uses
//! byte 0 for the supervisor and byte `1 + role` for each role.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

fn flock_for(kind: libc::c_short, byte: u64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value that we
    // then fill in.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte as libc::off_t;
    fl.l_len = 1;
    fl.l_pid = 0; // required to be 0 for OFD locks
    fl
}

/// Tries to take the exclusive lock on `byte`. `Ok(false)` if someone else
/// holds it. The file must be open for writing.
pub(crate) fn try_lock(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let fl = flock_for(libc::F_WRLCK as libc::c_short, byte);
    // SAFETY: `fd` is a live descriptor (borrowed); `fl` is a valid flock
    // that outlives the call.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EAGAIN) | Some(libc::EACCES) => Ok(false),
        _ => Err(e),
    }
}

/// Whether some other open file description holds a lock on `byte`. Works on
/// a read-only descriptor.
pub(crate) fn is_locked(fd: BorrowedFd<'_>, byte: u64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_WRLCK as libc::c_short, byte);
    // SAFETY: as in `try_lock`; F_OFD_GETLK writes into `fl`, which we own.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}

/// Whether some other open file description holds a lock on any of the
/// `len` bytes from `first`. Works on a read-only descriptor.
pub(crate) fn is_range_locked(fd: BorrowedFd<'_>, first: u64, len: u64) -> io::Result<bool> {
    let mut fl = flock_for(libc::F_WRLCK as libc::c_short, first);
    fl.l_len = len as libc::off_t;
    // SAFETY: as in `is_locked`.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
