//! The stderr of role processes, read by the supervisor from pipes: each
//! line is passed through to the supervisor's stderr, and the last error
//! line of each role slot is kept, so that the message that ends a run
//! names the cause a role gave before it died.
//!
//! The pipes are read without blocking on every pass of the supervisor loop
//! (at least every 100 ms) and drained when a role is reaped.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::fd::AsFd;
use std::process::ChildStderr;

use nix::fcntl::{FcntlArg, OFlag, fcntl};

/// Longest line kept whole; longer ones are passed through in pieces.
const MAX_LINE: usize = 16 * 1024;

/// Prefix of the line a role prints when it fails (see `cli::main`).
const ERROR_PREFIX: &str = "error: ";

#[derive(Debug)]
struct Pipe {
    stderr: ChildStderr,
    partial: Vec<u8>,
}

/// The stderr pipes of the live roles, by role slot.
#[derive(Debug, Default)]
pub(crate) struct RoleLogs {
    pipes: BTreeMap<u32, Pipe>,
    last_error: BTreeMap<u32, String>,
}

impl RoleLogs {
    /// Reads role slot `slot`'s new process's stderr from now on. The
    /// previous process's pipe, if any, is drained first.
    pub(crate) fn add(&mut self, slot: u32, stderr: ChildStderr, out: &mut dyn FnMut(&str)) {
        self.drain(slot, out);
        // Without O_NONBLOCK a read would wait for the role's next line.
        if let Ok(flags) = fcntl(stderr.as_fd(), FcntlArg::F_GETFL) {
            let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
            let _ = fcntl(stderr.as_fd(), FcntlArg::F_SETFL(flags));
        }
        self.pipes.insert(
            slot,
            Pipe {
                stderr,
                partial: Vec::new(),
            },
        );
    }

    /// Passes through what every role has written so far.
    pub(crate) fn pump(&mut self, out: &mut dyn FnMut(&str)) {
        let slots: Vec<u32> = self.pipes.keys().copied().collect();
        for s in slots {
            self.read(s, out);
        }
    }

    /// Reads everything role slot `slot` has written (call after reaping
    /// it). Its pipe is closed at its end.
    pub(crate) fn drain(&mut self, slot: u32, out: &mut dyn FnMut(&str)) {
        self.read(slot, out);
    }

    /// The last error line role slot `slot` printed, without its prefix.
    pub(crate) fn last_error(&self, slot: u32) -> Option<&str> {
        self.last_error.get(&slot).map(String::as_str)
    }

    fn read(&mut self, slot: u32, out: &mut dyn FnMut(&str)) {
        let Some(pipe) = self.pipes.get_mut(&slot) else {
            return;
        };
        let mut buf = [0u8; 4096];
        let closed = loop {
            match pipe.stderr.read(&mut buf) {
                Ok(0) => break true,
                Ok(n) => pipe.partial.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // WouldBlock: nothing more for now; anything else: give up
                // on this pipe.
                Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
            }
        };
        let mut lines = Vec::new();
        while let Some(i) = pipe.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pipe.partial.drain(..=i).collect();
            lines.push(String::from_utf8_lossy(&line[..i]).into_owned());
        }
        if closed || pipe.partial.len() >= MAX_LINE {
            if !pipe.partial.is_empty() {
                lines.push(String::from_utf8_lossy(&pipe.partial).into_owned());
            }
            pipe.partial.clear();
        }
        if closed {
            self.pipes.remove(&slot);
        }
        for l in lines {
            out(&l);
            if let Some(e) = l.strip_prefix(ERROR_PREFIX) {
                self.last_error.insert(slot, e.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn keeps_the_last_error_line() {
        let mut child = Command::new("sh")
            .args([
                "-c",
                "echo 'note: starting' >&2; echo 'error: first' >&2; printf 'error: last' >&2",
            ])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let err = child.stderr.take().unwrap();
        let mut logs = RoleLogs::default();
        let mut seen = Vec::new();
        logs.add(3, err, &mut |l: &str| seen.push(l.to_string()));
        child.wait().unwrap();
        logs.drain(3, &mut |l: &str| seen.push(l.to_string()));
        assert_eq!(seen, ["note: starting", "error: first", "error: last"]);
        assert_eq!(logs.last_error(3), Some("last"));
        assert_eq!(logs.last_error(4), None);
        assert!(logs.pipes.is_empty(), "the closed pipe is dropped");
    }
}
