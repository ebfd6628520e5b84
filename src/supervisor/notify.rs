//! systemd's notify protocol (see sd_notify(3)), spoken by the supervisor
//! itself: one datagram per message to the unix socket named by
//! `$NOTIFY_SOCKET`, each a newline-separated list of `KEY=value`.
//!
//! Only the supervisor talks to systemd. Roles never see `NOTIFY_SOCKET` or
//! `WATCHDOG_*` (`spawn.rs` removes them), so with `NotifyAccess=main` every
//! message systemd accepts comes from the process it started.
//!
//! Nothing here is fatal: a run works the same with or without systemd, and
//! a send that fails is reported once on stderr and then ignored.

use std::cell::Cell;
use std::ffi::OsStr;
use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// How often `STATUS=` is refreshed while the supervisor loop runs.
pub(crate) const STATUS_INTERVAL: Duration = Duration::from_secs(1);

/// How long one send may block when systemd's receive queue is full. A
/// stuck manager must not stall the supervisor loop for long.
const SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// A connection to the service manager's notification socket, and when the
/// next `STATUS=` and `WATCHDOG=1` are due.
#[derive(Debug)]
pub(crate) struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// `$NOTIFY_SOCKET` as given, for messages.
    shown: String,
    watchdog: Option<Duration>,
    next_watchdog: Option<Instant>,
    next_status: Instant,
    warned: Cell<bool>,
}

/// Parses `$NOTIFY_SOCKET`: an absolute filesystem path, or an abstract
/// socket name written with a leading '@'.
fn parse_address(value: &OsStr) -> Result<SocketAddr, String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'@') if bytes.len() > 1 => {
            SocketAddr::from_abstract_name(&bytes[1..]).map_err(|e| e.to_string())
        }
        Some(b'/') => SocketAddr::from_pathname(value).map_err(|e| e.to_string()),
        _ => Err("not an absolute path or an @abstract name".into()),
    }
}

/// The watchdog ping interval from `$WATCHDOG_USEC` and `$WATCHDOG_PID`:
/// half the timeout, when a timeout is set and meant for process `own_pid`
/// (`WATCHDOG_PID` unset, or equal to it).
fn watchdog_interval_from(
    usec: Option<&OsStr>,
    pid: Option<&OsStr>,
    own_pid: u32,
) -> Option<Duration> {
    let usec: u64 = usec?.to_str()?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        let pid: u32 = pid.to_str()?.trim().parse().ok()?;
        if pid != own_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec) / 2)
}

impl Notifier {
    /// The notifier systemd asked for through the environment, or `None`
    /// when `$NOTIFY_SOCKET` is unset or empty (not started by a service
    /// manager that listens). An unusable `$NOTIFY_SOCKET` is reported on
    /// stderr and also gives `None`.
    pub(crate) fn from_env() -> Option<Notifier> {
        let socket = std::env::var_os("NOTIFY_SOCKET")?;
        if socket.is_empty() {
            return None;
        }
        let watchdog = watchdog_interval_from(
            std::env::var_os("WATCHDOG_USEC").as_deref(),
            std::env::var_os("WATCHDOG_PID").as_deref(),
            std::process::id(),
        );
        match Notifier::new(&socket, watchdog) {
            Ok(n) => Some(n),
            Err(e) => {
                eprintln!(
                    "warning: cannot use NOTIFY_SOCKET={}: {e}; running without systemd notifications (check the unit's Type= and NotifyAccess=)",
                    socket.to_string_lossy()
                );
                None
            }
        }
    }

    /// A notifier for the socket `address` (in `$NOTIFY_SOCKET` syntax)
    /// that pings the watchdog every `watchdog` (see
    /// [`Notifier::watchdog_interval`]).
    pub(crate) fn new(address: &OsStr, watchdog: Option<Duration>) -> io::Result<Notifier> {
        let addr = parse_address(address).map_err(io::Error::other)?;
        let sock = UnixDatagram::unbound()?;
        sock.set_write_timeout(Some(SEND_TIMEOUT))?;
        let now = Instant::now();
        Ok(Notifier {
            sock,
            addr,
            shown: address.to_string_lossy().into_owned(),
            watchdog,
            next_watchdog: watchdog.map(|_| now),
            next_status: now,
            warned: Cell::new(false),
        })
    }

    #[cfg(test)]
    /// How often to send `WATCHDOG=1`: half of `$WATCHDOG_USEC`, if the
    /// watchdog is enabled for this process.
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends `state` (newline-separated `KEY=value` assignments) as one
    /// datagram.
    pub(crate) fn send(&self, state: &str) -> io::Result<()> {
        let n = self.sock.send_to_addr(state.as_bytes(), &self.addr)?;
        if n != state.len() {
            return Err(io::Error::other(format!(
                "sent {n} of {} bytes",
                state.len()
            )));
        }
        Ok(())
    }

    /// Sends `state`; the first failure is reported on stderr, later ones
    /// are ignored.
    fn deliver(&self, state: &str) {
        if let Err(e) = self.send(state)
            && !self.warned.replace(true)
        {
            eprintln!(
                "warning: cannot notify systemd through {}: {e}; the run goes on, further notification errors are not reported",
                self.shown
            );
        }
    }

    /// `READY=1`: start-up is complete. The next [`Notifier::tick`] sends
    /// a fresh `STATUS=`.
    pub(crate) fn ready(&mut self) {
        self.deliver("READY=1");
        self.next_status = Instant::now();
    }

    /// `STATUS=`: a one-line status for `systemctl status`. Newlines in
    /// `text` would start new assignments, so they become spaces.
    pub(crate) fn status(&self, text: &str) {
        self.deliver(&format!("STATUS={}", text.replace('\n', " ")));
    }

    /// `WATCHDOG=1`: the supervisor is alive.
    pub(crate) fn watchdog(&self) {
        self.deliver("WATCHDOG=1");
    }

    /// `STOPPING=1`: the service is shutting down. The next
    /// [`Notifier::tick`] sends a fresh `STATUS=`.
    pub(crate) fn stopping(&mut self) {
        self.deliver("STOPPING=1");
        self.next_status = Instant::now();
    }

    /// Time from `now` until the next `STATUS=` or `WATCHDOG=1` is due
    /// (zero if one is overdue): the longest a loop calling
    /// [`Notifier::tick`] may sleep.
    pub(crate) fn until_due(&self, now: Instant) -> Duration {
        let next = match self.next_watchdog {
            Some(w) => w.min(self.next_status),
            None => self.next_status,
        };
        next.saturating_duration_since(now)
    }

    /// Sends what is due at `now`: `WATCHDOG=1` every watchdog interval and
    /// `STATUS=<status()>` every [`STATUS_INTERVAL`]. Called from the
    /// supervisor loop, so the watchdog pings stop when the loop stops.
    pub(crate) fn tick(&mut self, now: Instant, status: impl FnOnce() -> String) {
        if let (Some(due), Some(every)) = (self.next_watchdog, self.watchdog)
            && now >= due
        {
            self.watchdog();
            self.next_watchdog = Some(now + every);
        }
        if now >= self.next_status {
            self.status(&status());
            self.next_status = now + STATUS_INTERVAL;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recv(sock: &UnixDatagram) -> String {
        sock.set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = sock.recv(&mut buf).expect("a datagram arrives");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn path_socket_receives_each_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.as_os_str(), None).unwrap();
        n.ready();
        assert_eq!(recv(&server), "READY=1");
        n.status("line one\nline two");
        assert_eq!(recv(&server), "STATUS=line one line two");
        n.watchdog();
        assert_eq!(recv(&server), "WATCHDOG=1");
        n.stopping();
        assert_eq!(recv(&server), "STOPPING=1");
        assert!(!n.warned.get());
    }

    #[test]
    fn abstract_socket_receives_messages() {
        let name = format!("forkring-notify-unit-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let mut n = Notifier::new(OsStr::new(&format!("@{name}")), None).unwrap();
        n.ready();
        assert_eq!(recv(&server), "READY=1");
    }

    #[test]
    fn bad_addresses_are_refused() {
        assert!(Notifier::new(OsStr::new("relative/path"), None).is_err());
        let long = format!("/{}", "x".repeat(200));
        assert!(Notifier::new(OsStr::new(&long), None).is_err());
        assert!(Notifier::new(OsStr::new("@"), None).is_err());
    }

    #[test]
    fn send_errors_are_not_fatal_and_warn_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut n = Notifier::new(dir.path().join("nobody").as_os_str(), None).unwrap();
        assert!(n.send("READY=1").is_err());
        n.ready();
        assert!(n.warned.get());
        n.watchdog(); // no second warning, no panic
    }

    #[test]
    fn watchdog_interval_is_half_the_timeout_for_us() {
        let s = |v: &'static str| Some(OsStr::new(v));
        let w = watchdog_interval_from;
        assert_eq!(w(s("200000"), None, 7), Some(Duration::from_millis(100)));
        assert_eq!(w(s("200000"), s("7"), 7), Some(Duration::from_millis(100)));
        assert_eq!(w(s("200000"), s("8"), 7), None);
        assert_eq!(w(s("200000"), s("x"), 7), None);
        assert_eq!(w(None, None, 7), None);
        assert_eq!(w(s("0"), None, 7), None);
        assert_eq!(w(s("soon"), None, 7), None);
    }

    #[test]
    fn tick_paces_watchdog_and_status() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let every = Duration::from_millis(100);
        let mut n = Notifier::new(path.as_os_str(), Some(every)).unwrap();
        assert_eq!(n.watchdog_interval(), Some(every));
        let t0 = Instant::now();
        // Both are due at once at the start.
        assert_eq!(n.until_due(t0), Duration::ZERO);
        n.tick(t0, || "starting".into());
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert_eq!(recv(&server), "STATUS=starting");
        assert_eq!(n.until_due(t0), every);
        // Halfway: nothing due, the status closure is not even called.
        n.tick(t0 + every / 2, || unreachable!("status is not due"));
        n.tick(t0 + every, || unreachable!("status is not due"));
        assert_eq!(recv(&server), "WATCHDOG=1");
        n.tick(t0 + STATUS_INTERVAL, || "running".into());
        assert_eq!(recv(&server), "WATCHDOG=1");
        assert_eq!(recv(&server), "STATUS=running");
        server.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 64];
        assert!(server.recv(&mut buf).is_err(), "nothing else was sent");
    }

    #[test]
    fn without_watchdog_only_status_is_paced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.as_os_str(), None).unwrap();
        let t0 = Instant::now();
        n.tick(t0, || "s".into());
        assert_eq!(recv(&server), "STATUS=s");
        assert_eq!(n.until_due(t0), STATUS_INTERVAL);
    }

    #[test]
    fn state_changes_make_status_due_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let mut n = Notifier::new(path.as_os_str(), None).unwrap();
        let t0 = Instant::now();
        n.tick(t0, || "starting".into());
        assert_eq!(recv(&server), "STATUS=starting");
        n.ready();
        assert_eq!(recv(&server), "READY=1");
        // Due no later than the instant ready() returned.
        n.tick(Instant::now(), || "running".into());
        assert_eq!(recv(&server), "STATUS=running");
        n.stopping();
        assert_eq!(recv(&server), "STOPPING=1");
        n.tick(Instant::now(), || "stopping".into());
        assert_eq!(recv(&server), "STATUS=stopping");
    }
}
