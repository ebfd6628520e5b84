//! The worker role: claims tasks from the table, runs them, commits their
//! results.
//!
//! Crash safety. A worker's claim names its incarnation (`shm/taskq.rs`);
//! the commit point of a result is the CAS that turns the claim into DONE.
//! A worker killed at any instruction leaves its claims CLAIMED; the
//! supervisor takes them back as soon as it has reaped the worker
//! (`TasksHost::role_exited`), or the worker's successor does when it
//! starts, whichever comes first: each goes back to the queue with one
//! death more, or is quarantined at `--max-attempts` deaths. Execution is
//! therefore at least once: a task whose worker died may run again (an
//! `exec` may run twice), but its result is committed exactly once.
//!
//! A worker keeps up to `--concurrency` simulated calls in flight (each is a
//! deadline, not a thread) and as many `exec` children; `spin` and relay
//! chunks run in the worker itself, one at a time.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::job::{JobError, RoleCtx};
use crate::shm::segment::Region;
use crate::shm::taskq::{Claim, Reclaim, SLICE, TaskTable};
use crate::shm::{Access, AdaptiveSpin, SpinPolicy};

use super::layout::TasksSegments;
use super::relay::Relay;
use super::settings::TasksSettings;
use super::spec::{self, RESULT_OVERHEAD, ResultWire, Status, TaskSpec, TaskWire};

/// How often a worker with `exec` children looks at them when nothing
/// else wakes it.
const CHILD_POLL: Duration = Duration::from_millis(2);

/// An `exec` child in flight.
#[derive(Debug)]
struct Running {
    claim: Claim,
    child: Child,
    out: Vec<u8>,
    truncated: bool,
    started_ns: u64,
    deadline_ns: u64,
}

/// A worker's state.
struct Worker<'a> {
    table: TaskTable<'a>,
    index: u32,
    inc: u32,
    s: &'a TasksSettings,
    relay: Option<(&'a Relay, Region<'a>, Region<'a>)>,
    /// Simulated calls in flight, by (deadline, slot).
    calls: BTreeMap<(u64, u32), (Claim, String, u64)>,
    children: Vec<Running>,
    task: Vec<u8>,
    /// Holding a task on its last attempt: claim nothing else.
    alone: bool,
    /// (queued epoch, idle) of the last claim scan that found nothing.
    scanned: Option<(u32, bool)>,
}

/// The result of a task whose workers died `deaths` times running it.
pub(crate) fn quarantined(deaths: u32, worker: u32) -> Vec<u8> {
    let now = monotonic_ns();
    spec::encode(&ResultWire {
        status: Status::Quarantined,
        reply: String::new(),
        truncated: false,
        error: Some(format!(
            "quarantined: its worker died {deaths} times while running it (--max-attempts)"
        )),
        exit_status: None,
        worker,
        started_ns: now,
        done_ns: now,
    })
}

/// Runs worker `ctx.role.index`.
pub(crate) fn run(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    let s: &TasksSettings = ctx.settings()?;
    let segs = TasksSegments::open(ctx.run, s, Access::ReadWrite)?;
    let table = segs.table()?;
    let ctl = segs.control()?;
    let index = ctx.role.index;
    let inc = table.begin_incarnation(index);
    // Our predecessor, if any, is dead (we hold the worker's lock): take
    // back what it held, unless the supervisor already has.
    table.reclaim(
        index,
        Some(inc),
        Reclaim::Died {
            max_deaths: s.max_attempts,
        },
        |_, deaths| quarantined(deaths, index),
    );
    let arrays = segs.relay_arrays()?;
    let mut w = Worker {
        table,
        index,
        inc,
        s,
        relay: match (&s.relay, arrays) {
            (Some(r), Some((i, o))) => Some((r, i, o)),
            _ => None,
        },
        calls: BTreeMap::new(),
        children: Vec::new(),
        task: Vec::new(),
        alone: false,
        scanned: None,
    };
    ctx.attached();
    // With --max-attempts 1 a first death quarantines: nothing runs alone.
    let suspect_at = if s.max_attempts >= 2 {
        s.max_attempts - 1
    } else {
        u32::MAX
    };
    let mut spin = AdaptiveSpin::new(SpinPolicy::handoff());
    loop {
        let stopping = ctx.stop().is_set() || ctl.finish.is_set();
        let epoch = w.table.queued_epoch();
        let mut claimed = false;
        // A scan of the whole table that found nothing is not repeated
        // until something is queued (the epoch moves) or we become idle
        // (tasks left to idle workers are then ours to take).
        let idle_now = w.in_flight() == 0;
        let fresh = w.scanned != Some((epoch, idle_now));
        if !stopping && fresh {
            // A task's last attempt runs alone (see `claim`), so that only
            // its own death quarantines it.
            while w.in_flight() < s.concurrency as usize && !w.alone {
                let idle = w.in_flight() == 0;
                let Some(c) = w.table.claim(w.index, w.inc, idle, suspect_at) else {
                    w.scanned = Some((epoch, idle));
                    break;
                };
                claimed = true;
                w.alone = c.deaths >= suspect_at;
                w.start(c)?;
            }
        }
        if w.in_flight() == 0 {
            w.alone = false;
        }
        w.finish_due_calls();
        w.poll_children();
        if stopping && w.in_flight() == 0 {
            return Ok(());
        }
        if claimed {
            continue;
        }
        // Sleep until a task is queued, the next call is due, a child may
        // have news, or the liveness slice ends.
        let now = monotonic_ns();
        let mut wait = SLICE;
        if let Some(((due, _), _)) = w.calls.first_key_value() {
            wait = wait.min(Duration::from_nanos(due.saturating_sub(now)));
        }
        if !w.children.is_empty() {
            wait = wait.min(CHILD_POLL);
        }
        let policy = if w.in_flight() > 0 {
            SpinPolicy::SLEEP
        } else {
            spin.policy()
        };
        match w.table.wait_queued(epoch, policy, wait) {
            Ok(_) => spin.observe(crate::shm::WaitPhase::Polls),
            Err(_) => {
                if wait == SLICE {
                    ctx.require_supervisor()?;
                }
            }
        }
    }
}

impl Worker<'_> {
    fn in_flight(&self) -> usize {
        self.calls.len() + self.children.len()
    }

    /// Starts a claimed task: runs it at once (spin, chunk, errors) or puts
    /// it in flight (calls, exec).
    fn start(&mut self, c: Claim) -> Result<(), JobError> {
        let started = monotonic_ns();
        let wire = self
            .table
            .read_task(c.slot, &mut self.task)
            .map_err(|e| e.to_string())
            .and_then(|()| spec::decode::<TaskWire>(&self.task));
        let wire = match wire {
            Ok(w) => w,
            Err(e) => {
                self.commit(
                    c,
                    Status::Error,
                    String::new(),
                    false,
                    Some(format!("unreadable task: {e}")),
                    None,
                    started,
                );
                return Ok(());
            }
        };
        match wire.spec {
            TaskSpec::Spin { n } => {
                let v = spin(n);
                self.commit(
                    c,
                    Status::Ok,
                    format!("{v:016x}"),
                    false,
                    None,
                    None,
                    started,
                );
            }
            TaskSpec::Unknown { key } => {
                self.commit(
                    c,
                    Status::Error,
                    String::new(),
                    false,
                    Some(format!("{key} is not in the command table")),
                    None,
                    started,
                );
            }
            TaskSpec::Call { seconds, reply, .. } => {
                let due = started + (seconds * 1e9) as u64;
                self.calls.insert((due, c.slot), (c, reply, started));
            }
            TaskSpec::Exec { argv } => match self.spawn(&argv) {
                Ok(child) => self.children.push(Running {
                    claim: c,
                    child,
                    out: Vec::new(),
                    truncated: false,
                    started_ns: started,
                    deadline_ns: started + (self.s.task_timeout * 1e9) as u64,
                }),
                Err(e) => self.commit(
                    c,
                    Status::Error,
                    String::new(),
                    false,
                    Some(format!("cannot run {}: {e}", argv[0])),
                    Some(127),
                    started,
                ),
            },
            TaskSpec::Chunk { start, len } => {
                let (status, reply, error) = match self.chunk(start, len) {
                    Ok(reply) => (Status::Ok, reply, None),
                    Err(e) => (Status::Error, String::new(), Some(e)),
                };
                self.commit(c, status, reply, false, error, None, started);
            }
        }
        Ok(())
    }

    fn spawn(&self, argv: &[String]) -> std::io::Result<Child> {
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0);
        crate::procinfo::kill_with_parent(&mut cmd);
        let child = cmd.spawn()?;
        if let Some(out) = &child.stdout {
            // Read without blocking: the worker has other tasks in flight.
            nix::fcntl::fcntl(
                out,
                nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
            )
            .map_err(std::io::Error::from)?;
        }
        Ok(child)
    }

    /// A relay chunk: input from the relay segment, element-wise results
    /// back to it (idempotent), a reduction as the reply.
    fn chunk(&self, start: u64, len: u32) -> Result<String, String> {
        let Some((relay, input, output)) = &self.relay else {
            return Err("the run has no relay pipeline".into());
        };
        let end = start
            .checked_add(len as u64)
            .filter(|&e| e <= relay.elements && len > 0)
            .ok_or_else(|| {
                format!(
                    "chunk {start}+{len} is outside the {} elements",
                    relay.elements
                )
            })?;
        let mut words = vec![0u64; (end - start) as usize];
        input.read_words(start as usize, &mut words);
        let xs: Vec<f64> = words.iter().map(|w| f64::from_bits(*w)).collect();
        let mut out = Vec::with_capacity(xs.len());
        let red = relay.run_chunk(&xs, &mut out);
        let bits: Vec<u64> = out.iter().map(|x| x.to_bits()).collect();
        output.write_words(start as usize, &bits);
        Ok(match red {
            // Bits, so that the reassembled result is exact.
            Some(v) => format!("{:016x}", v.to_bits()),
            None => String::new(),
        })
    }

    fn finish_due_calls(&mut self) {
        let now = monotonic_ns();
        while let Some(((due, _), _)) = self.calls.first_key_value() {
            if *due > now {
                break;
            }
            let (_, (c, reply, started)) = self.calls.pop_first().expect("not empty");
            self.commit(c, Status::Ok, reply, false, None, None, started);
        }
    }

    fn poll_children(&mut self) {
        let cap = self.reply_cap();
        let now = monotonic_ns();
        let mut i = 0;
        while i < self.children.len() {
            let r = &mut self.children[i];
            drain(r, cap);
            let ended = match r.child.try_wait() {
                Ok(Some(st)) => Some(Ok(st)),
                Ok(None) if now >= r.deadline_ns => {
                    // Kill the whole group: the program may have children.
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(r.child.id() as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    let _ = r.child.wait();
                    Some(Err(()))
                }
                Ok(None) => None,
                Err(_) => Some(Err(())),
            };
            let Some(ended) = ended else {
                i += 1;
                continue;
            };
            let mut r = self.children.swap_remove(i);
            drain(&mut r, cap);
            let reply = String::from_utf8_lossy(&r.out).into_owned();
            match ended {
                Ok(st) => {
                    use std::os::unix::process::ExitStatusExt;
                    let code = st.code().or(st.signal().map(|s| 128 + s));
                    let (status, error) = match (st.code(), st.signal()) {
                        (Some(0), _) => (Status::Ok, None),
                        (Some(c), _) => (
                            Status::Error,
                            Some(format!("the program exited with status {c}")),
                        ),
                        (None, Some(sig)) => (
                            Status::Error,
                            Some(format!("the program was killed by signal {sig}")),
                        ),
                        (None, None) => (Status::Error, Some("the program ended".into())),
                    };
                    self.commit(
                        r.claim,
                        status,
                        reply,
                        r.truncated,
                        error,
                        code,
                        r.started_ns,
                    );
                }
                Err(()) => self.commit(
                    r.claim,
                    Status::Error,
                    reply,
                    r.truncated,
                    Some(format!(
                        "killed after --task-timeout {} s",
                        self.s.task_timeout
                    )),
                    Some(128 + libc::SIGKILL),
                    r.started_ns,
                ),
            }
        }
    }

    /// Bytes a reply may take.
    fn reply_cap(&self) -> usize {
        (self.s.reply_max as usize).saturating_sub(RESULT_OVERHEAD + 256)
    }

    /// Commits a result (cutting the reply to fit); a claim taken from us
    /// meanwhile is dropped, never committed over the newer one.
    #[allow(clippy::too_many_arguments)]
    fn commit(
        &mut self,
        c: Claim,
        status: Status,
        mut reply: String,
        mut truncated: bool,
        mut error: Option<String>,
        exit_status: Option<i32>,
        started_ns: u64,
    ) {
        let cap = self.reply_cap();
        cut(&mut reply, cap, &mut truncated);
        if let Some(e) = &mut error {
            let mut t = false;
            cut(e, 256, &mut t);
        }
        let bytes = spec::encode(&ResultWire {
            status,
            reply,
            truncated,
            error,
            exit_status,
            worker: self.index,
            started_ns,
            done_ns: monotonic_ns(),
        });
        debug_assert!(bytes.len() <= self.s.reply_max as usize);
        let bytes = &bytes[..bytes.len().min(self.s.reply_max as usize)];
        let _ = self.table.complete(self.index, c, bytes);
    }
}

/// Cuts `s` to at most `cap` bytes at a character boundary.
fn cut(s: &mut String, cap: usize, truncated: &mut bool) {
    if s.len() > cap {
        let mut end = cap;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        *truncated = true;
    }
}

/// Reads what a child wrote so far (without blocking), keeping at most
/// `cap` bytes; the rest is read and dropped so the child never blocks.
fn drain(r: &mut Running, cap: usize) {
    let Some(out) = r.child.stdout.as_mut() else {
        return;
    };
    let mut buf = [0u8; 8192];
    loop {
        match out.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                let room = cap.saturating_sub(r.out.len());
                r.out.extend_from_slice(&buf[..n.min(room)]);
                if n > room {
                    r.truncated = true;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Runs a task that needs nothing but the worker itself (`spin`, a call
/// missing from the table): (status, reply, error). `None` for the kinds
/// that go in flight or need the relay. Also run by `forkring bench tasks`'
/// pipe and socket workers, so every pool runs the same worker code.
pub(crate) fn run_inline(spec: &TaskSpec) -> Option<(Status, String, Option<String>)> {
    match spec {
        TaskSpec::Spin { n } => Some((Status::Ok, format!("{:016x}", spin(*n)), None)),
        TaskSpec::Unknown { key } => Some((
            Status::Error,
            String::new(),
            Some(format!("{key} is not in the command table")),
        )),
        _ => None,
    }
}

/// `spin N`: N steps of a 64-bit LCG, which the compiler cannot remove
/// (the result is the reply, and `black_box` hides the count).
pub(crate) fn spin(n: u64) -> u64 {
    let n = std::hint::black_box(n);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..n {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(i | 1);
    }
    std::hint::black_box(x)
}
