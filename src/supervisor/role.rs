//! The roles a run can have and how their exits are described.

use std::fmt;

/// A role process of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Image job, even iterations.
    Ping,
    /// Image job, odd iterations.
    Pong,
    /// Stream job, writes the ring.
    Producer,
    /// Stream job, reads the ring.
    Consumer,
}

/// Number of role slots in the control segment.
pub const ROLE_COUNT: usize = 4;

impl Role {
    /// Every role, in slot order.
    pub const ALL: [Role; ROLE_COUNT] = [Role::Ping, Role::Pong, Role::Producer, Role::Consumer];

    /// Slot index in the control segment.
    pub fn index(self) -> usize {
        self as usize
    }
    /// The subcommand that runs this role.
    pub fn name(self) -> &'static str {
        match self {
            Role::Ping => "ping",
            Role::Pong => "pong",
            Role::Producer => "producer",
            Role::Consumer => "consumer",
        }
    }
    /// Byte of the control segment whose OFD lock the live role holds.
    pub fn lock_byte(self) -> u64 {
        1 + self.index() as u64
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a process ended, packed into a u32 for the control segment:
/// 0 = none yet, `0x1_0000 | code` = exited, `0x2_0000 | signal` = killed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Exited with this code.
    Code(i32),
    /// Killed by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Whether this is a normal, successful exit.
    pub fn success(self) -> bool {
        self == ExitStatus::Code(0)
    }
    /// Packs for the control segment.
    pub fn encode(self) -> u32 {
        match self {
            ExitStatus::Code(c) => 0x1_0000 | (c as u32 & 0xff),
            ExitStatus::Signal(s) => 0x2_0000 | (s as u32 & 0xff),
        }
    }
    /// Unpacks (untrusted input: unknown encodings give `None`).
    pub fn decode(v: u32) -> Option<ExitStatus> {
        match v >> 16 {
            1 => Some(ExitStatus::Code((v & 0xff) as i32)),
            2 => Some(ExitStatus::Signal((v & 0xff) as i32)),
            _ => None,
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Code(c) => write!(f, "exited with status {c}"),
            ExitStatus::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_status_round_trip() {
        for e in [
            ExitStatus::Code(0),
            ExitStatus::Code(3),
            ExitStatus::Signal(9),
        ] {
            assert_eq!(ExitStatus::decode(e.encode()), Some(e));
        }
        assert_eq!(ExitStatus::decode(0), None);
        assert_eq!(ExitStatus::Signal(9).to_string(), "killed by SIGKILL");
        assert_eq!(ExitStatus::Code(1).to_string(), "exited with status 1");
    }

    #[test]
    fn roles_have_distinct_lock_bytes() {
        let mut b: Vec<u64> = Role::ALL.iter().map(|r| r.lock_byte()).collect();
        b.dedup();
        assert_eq!(b.len(), ROLE_COUNT);
        assert!(!b.contains(&0));
    }
}
