//! The supervisor's signals, read from a signalfd.
//!
//! SIGINT, SIGTERM, SIGHUP and SIGCHLD are blocked and read synchronously in
//! the supervisor loop: no handler runs at an arbitrary instruction, no
//! SIGCHLD is lost, and a wait with a timeout covers "a child exited", "stop
//! requested" and "time for a progress update" at once. The mask must be set
//! before any thread starts so that every thread inherits it; children get a
//! clean mask (std resets it before exec).

use std::time::Duration;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals the supervisor reads.
fn mask() -> SigSet {
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGCHLD,
    ] {
        mask.add(s);
    }
    mask
}

/// Blocks the supervisor's signals in the calling thread: the first thing
/// `forkring run` does, so that one arriving before [`Signals::install`]
/// stays pending and is read from the signalfd then.
pub(crate) fn block() -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask()), None)
}

/// The signalfd and its mask.
#[derive(Debug)]
pub(crate) struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the four signals in this thread and opens a signalfd for them.
    pub(crate) fn install() -> nix::Result<Signals> {
        let mask = mask();
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// Waits up to `timeout` for signals and returns those that arrived.
    pub(crate) fn wait(&mut self, timeout: Duration) -> Vec<Signal> {
        let ms = timeout.as_millis().min(60_000) as u16;
        let mut fds = [PollFd::new(
            std::os::fd::AsFd::as_fd(&self.fd),
            PollFlags::POLLIN,
        )];
        let _ = poll(&mut fds, PollTimeout::from(ms));
        let mut out = Vec::new();
        while let Ok(Some(info)) = self.fd.read_signal() {
            if let Ok(sig) = Signal::try_from(info.ssi_signo as i32) {
                out.push(sig);
            }
        }
        out
    }
}
