//! `forkring run` speaks systemd's notify protocol without systemd: the test
//! plays the service manager, binding the datagram socket that
//! `$NOTIFY_SOCKET` names and reading each message's sender pid from the
//! kernel (SO_PASSCRED), as systemd does for `NotifyAccess=main`.

use std::collections::BTreeSet;
use std::io::{IoSliceMut, Read};
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixAddr, recvmsg, setsockopt, sockopt};

const BIN: &str = env!("CARGO_BIN_EXE_forkring");

/// Runs of `forkring run` want both cores: never two at once.
static RUNS: Mutex<()> = Mutex::new(());

/// Generous bound on one run: about a second on two idle cores, minutes
/// when both roles must share one busy core. Only a hung run reaches it.
const RUN_LIMIT: Duration = Duration::from_secs(600);

/// One notification: who sent it and what it said.
#[derive(Debug)]
struct Datagram {
    pid: i32,
    text: String,
}

impl Datagram {
    fn has(&self, assignment: &str) -> bool {
        self.text.lines().any(|l| l == assignment)
    }
    fn has_key(&self, key: &str) -> bool {
        self.text.lines().any(|l| l.starts_with(key))
    }
}

/// Kills a still-running supervisor and removes the run's segments, also
/// when an assertion fails.
struct Cleanup {
    name: String,
    child: Option<Child>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child
            && c.try_wait().ok().flatten().is_none()
        {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new(BIN)
            .args(["clean", &self.name])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `--jobs image` once the command line has `--jobs` (the stream job adds
/// it); before that the image job is the only one.
fn jobs_args() -> Vec<&'static str> {
    let help = Command::new(BIN)
        .args(["run", "--help"])
        .output()
        .expect("forkring run --help starts");
    if String::from_utf8_lossy(&help.stdout).contains("--jobs") {
        vec!["--jobs", "image"]
    } else {
        vec![]
    }
}

/// Receives one datagram with its sender's pid, or `None` on timeout.
fn receive(sock: &UnixDatagram) -> Option<Datagram> {
    let mut buf = [0u8; 4096];
    let mut cmsg = nix::cmsg_space!(libc::ucred);
    let mut iov = [IoSliceMut::new(&mut buf)];
    let msg = match recvmsg::<UnixAddr>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut cmsg),
        MsgFlags::empty(),
    ) {
        Ok(m) => m,
        Err(nix::errno::Errno::EAGAIN) => return None,
        Err(e) => panic!("recvmsg on the notify socket failed: {e}"),
    };
    let mut pid = None;
    for c in msg.cmsgs().expect("control messages fit") {
        if let ControlMessageOwned::ScmCredentials(cred) = c {
            pid = Some(cred.pid());
        }
    }
    let n = msg.bytes;
    let pid = pid.expect("SO_PASSCRED gives every datagram its sender's credentials");
    Some(Datagram {
        pid,
        text: String::from_utf8(buf[..n].to_vec()).expect("notifications are UTF-8"),
    })
}

/// Variables that belong to the supervisor's conversation with systemd.
const SUPERVISOR_ONLY: [&str; 3] = ["NOTIFY_SOCKET=", "WATCHDOG_USEC=", "WATCHDOG_PID="];

/// Checks the environment of every role process of `supervisor` that is
/// running the role's code (command line `forkring ROLE --run NAME`, so past
/// its exec: between fork and exec a child still shows the supervisor's
/// environment). Adds the pids checked to `checked`. Best effort: roles that
/// start and end between two calls are not seen.
fn check_role_environments(supervisor: i32, checked: &mut BTreeSet<i32>) {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // Field 4, after the parenthesised command name, is the parent pid.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        if ppid != Some(supervisor) {
            continue;
        }
        let (Ok(cmdline), Ok(environ)) = (
            std::fs::read(format!("/proc/{pid}/cmdline")),
            std::fs::read(format!("/proc/{pid}/environ")),
        ) else {
            continue;
        };
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if args.len() < 4 || args[2] != b"--run" {
            continue; // not (yet) a role
        }
        for var in environ.split(|b| *b == 0) {
            for bad in SUPERVISOR_ONLY {
                assert!(
                    !var.starts_with(bad.as_bytes()),
                    "role pid {pid} ({}) inherited {}",
                    String::from_utf8_lossy(args[1]),
                    String::from_utf8_lossy(var)
                );
            }
        }
        checked.insert(pid);
    }
}

/// Runs `forkring run` on the image job with `notify_socket` as
/// `$NOTIFY_SOCKET` and a 200 ms watchdog, reading notifications from
/// `sock` while it works. Asserts that it succeeds; returns the supervisor's
/// pid, every notification and the guard that cleans up the run.
fn run_with_notify(
    sock: &UnixDatagram,
    notify_socket: &str,
    name: &str,
    out: &Path,
) -> (i32, Vec<Datagram>, Cleanup) {
    setsockopt(sock, sockopt::PassCred, &true).expect("SO_PASSCRED");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .expect("read timeout");
    let mut cmd = Command::new(BIN);
    cmd.arg("run")
        .args(jobs_args())
        .args(["--size", "2048", "--seed", "1", "--quiet", "--name", name])
        .arg("--out")
        .arg(out)
        .env("NOTIFY_SOCKET", notify_socket)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("forkring run starts");
    let pid = child.id() as i32;
    let mut guard = Cleanup {
        name: name.to_string(),
        child: Some(child),
    };
    let started = Instant::now();
    let mut got = Vec::new();
    let mut roles_checked = BTreeSet::new();
    let status = loop {
        // The kernel queues only a few datagrams per socket: keep reading
        // while the run works, so the supervisor never waits on us.
        while let Some(d) = receive(sock) {
            got.push(d);
            check_role_environments(pid, &mut roles_checked);
        }
        check_role_environments(pid, &mut roles_checked);
        let child = guard.child.as_mut().expect("child kept");
        if let Some(s) = child.try_wait().expect("waitpid") {
            break s;
        }
        assert!(
            started.elapsed() < RUN_LIMIT,
            "forkring run did not finish within {RUN_LIMIT:?}"
        );
    };
    // Whatever was sent before exit is queued: drain it.
    sock.set_nonblocking(true).expect("nonblocking");
    while let Some(d) = receive(sock) {
        got.push(d);
    }
    let child = guard.child.as_mut().expect("child kept");
    let mut stderr = String::new();
    if let Some(e) = child.stderr.as_mut() {
        let _ = e.read_to_string(&mut stderr);
    }
    assert!(
        status.success(),
        "forkring run failed ({status}); stderr:\n{stderr}"
    );
    assert!(
        !stderr.contains("cannot notify"),
        "a notification could not be sent; stderr:\n{stderr}"
    );
    eprintln!(
        "checked the environment of {} role processes",
        roles_checked.len()
    );
    (pid, got, guard)
}

/// What systemd would see from a healthy run that completes.
fn check_conversation(supervisor: i32, got: &[Datagram], out: &Path) {
    let texts: Vec<&str> = got.iter().map(|d| d.text.as_str()).collect();
    for d in got {
        assert_eq!(
            d.pid, supervisor,
            "only the supervisor may notify, but pid {} sent {:?}",
            d.pid, d.text
        );
    }
    let first = |a: &str| got.iter().position(|d| d.has(a));
    let ready = first("READY=1").unwrap_or_else(|| panic!("no READY=1 in {texts:?}"));
    let stopping = first("STOPPING=1").unwrap_or_else(|| panic!("no STOPPING=1 in {texts:?}"));
    assert!(
        ready < stopping,
        "READY=1 must come before STOPPING=1: {texts:?}"
    );
    assert_eq!(
        got.iter().filter(|d| d.has("READY=1")).count(),
        1,
        "READY=1 is sent once: {texts:?}"
    );
    assert!(
        got.iter().any(|d| d.has_key("STATUS=")),
        "no STATUS= in {texts:?}"
    );
    assert!(
        got.iter().any(|d| d.has("WATCHDOG=1")),
        "no WATCHDOG=1 in {texts:?}"
    );
    assert!(
        got.last().is_some_and(|d| d.has("STOPPING=1")),
        "the last notification must be STOPPING=1: {texts:?}"
    );
    assert!(
        out.join("summary.json").is_file(),
        "the results were handed off to {}",
        out.display()
    );
}

#[test]
fn notifies_through_a_path_socket() {
    let _one = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).expect("bind the notify socket");
    let name = format!("notify-{}", std::process::id());
    let out = dir.path().join("out");
    let (pid, got, _cleanup) =
        run_with_notify(&sock, path.to_str().expect("UTF-8 tempdir"), &name, &out);
    check_conversation(pid, &got, &out);
}

#[test]
fn notifies_through_an_abstract_socket() {
    let _one = RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let abstract_name = format!("forkring-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(abstract_name.as_bytes()).expect("abstract name");
    let sock = UnixDatagram::bind_addr(&addr).expect("bind the abstract notify socket");
    let name = format!("notify-abs-{}", std::process::id());
    let out = dir.path().join("out");
    let (pid, got, _cleanup) = run_with_notify(&sock, &format!("@{abstract_name}"), &name, &out);
    check_conversation(pid, &got, &out);
}
