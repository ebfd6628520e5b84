//! `forkring bench-peer`: the other process of a bench measurement.
//!
//! Started only by `forkring bench` (exec of our own executable, never a
//! bare fork), with the segments' run name or the inherited descriptors'
//! numbers as arguments. It does its half of the measurement, then prints
//! one JSON line ([`PeerReport`]) for the parent to check. It dies with its
//! parent (`PR_SET_PDEATHSIG`), and stops on its own if the parent makes no
//! progress for a minute.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

use clap::Args;

use super::BenchError;
use crate::shm::turn::Party;
use crate::shm::{Access, RingProducer, RunName, Segment, SpinPolicy, TimedOut, Turn};

use super::transport::{
    ByteEnd, Checksum, EventEnd, MSG_SIZE, Mechanism, Pass, PeerReport, RING_BATCH, Stall, TurnEnd,
    fill_message, ring_spec, ring_view, turn_spec, write_all,
};
use super::{IDLE_CHECK, MAX_IDLE_CHECKS, inherited_fd};

/// Arguments of `forkring bench-peer` (internal; set by `forkring bench`).
#[derive(Debug, Args)]
pub(crate) struct PeerArgs {
    /// The measurement
    #[arg(value_enum)]
    pub(crate) mechanism: Mechanism,
    /// Timed passes, or messages to send
    #[arg(long)]
    pub(crate) count: u64,
    /// Untimed passes before the timed ones
    #[arg(long, default_value_t = 0)]
    pub(crate) warmup: u64,
    /// Run whose bench segments to open (turn, ring)
    #[arg(long)]
    pub(crate) run: Option<RunName>,
    /// Inherited descriptors, in the order the mechanism expects
    #[arg(long = "fd", value_name = "FD")]
    pub(crate) fds: Vec<i32>,
    /// pipe-stream/socket-stream: send the stream job's vectors of this
    /// dimension (generated as its producer does) instead of 208-byte messages
    #[arg(long, value_name = "DIM")]
    pub(crate) vectors: Option<u32>,
    /// Seed of the vectors
    #[arg(long, default_value_t = 0)]
    pub(crate) seed: u64,
    /// pipe-stream/socket-stream: run the task pool's worker code on
    /// length-prefixed task records (`forkring bench tasks`)
    #[arg(long)]
    pub(crate) tasks_worker: bool,
}

/// How long to wait for the parent's segment to be initialised.
const OPEN_WAIT: Duration = Duration::from_secs(5);

/// Runs the peer side and prints its report.
pub(crate) fn run(args: &PeerArgs) -> Result<(), BenchError> {
    let report = match args.mechanism {
        Mechanism::TurnSpin | Mechanism::TurnSleep => turn(args)?,
        Mechanism::Pipe => {
            let [rx, tx] = fds::<2>(args)?;
            passes(&mut ByteEnd { rx, tx }, args)?
        }
        Mechanism::Socket => {
            let [sock] = fds::<1>(args)?;
            let tx = sock
                .try_clone()
                .map_err(|e| BenchError::failed(format!("dup: {e}")))?;
            passes(&mut ByteEnd { rx: sock, tx }, args)?
        }
        Mechanism::Eventfd => {
            let [rx, tx] = fds::<2>(args)?;
            passes(&mut EventEnd { rx, tx }, args)?
        }
        Mechanism::Ring => ring(args)?,
        Mechanism::PipeStream | Mechanism::SocketStream if args.tasks_worker => {
            let [rx, tx] = fds::<2>(args)?;
            let n = crate::bench::tasks::fd_worker(rx, tx)?;
            PeerReport {
                messages: Some(n),
                ..PeerReport::default()
            }
        }
        Mechanism::PipeStream | Mechanism::SocketStream if args.vectors.is_some() => {
            let [tx] = fds::<1>(args)?;
            let dim = args.vectors.unwrap_or(0);
            crate::bench::stream::produce_vectors(tx.as_fd(), args.count, dim, args.seed)?;
            PeerReport {
                messages: Some(args.count),
                ..PeerReport::default()
            }
        }
        Mechanism::PipeStream | Mechanism::SocketStream => {
            let [tx] = fds::<1>(args)?;
            let sum = produce_fd(tx.as_fd(), args.count)?;
            PeerReport {
                messages: Some(args.count),
                checksum: Some(sum.0),
                ..PeerReport::default()
            }
        }
    };
    println!(
        "{}",
        serde_json::to_string(&report).expect("the report is plain data")
    );
    Ok(())
}

fn fds<const N: usize>(args: &PeerArgs) -> Result<[OwnedFd; N], BenchError> {
    let raw: [i32; N] = args.fds.as_slice().try_into().map_err(|_| {
        BenchError::usage(format!(
            "bench-peer {} needs {N} --fd, got {}",
            args.mechanism.id(),
            args.fds.len()
        ))
    })?;
    let mut out = Vec::with_capacity(N);
    for fd in raw {
        out.push(inherited_fd(fd)?);
    }
    out.try_into()
        .map_err(|_| BenchError::failed("descriptor count changed"))
}

fn run_of(args: &PeerArgs) -> Result<&RunName, BenchError> {
    args.run
        .as_ref()
        .ok_or_else(|| BenchError::usage(format!("bench-peer {} needs --run", args.mechanism.id())))
}

fn pass_total(args: &PeerArgs) -> Result<u32, BenchError> {
    let total = args.count.saturating_add(args.warmup);
    if total % 2 != 0 || total == 0 || total > super::transport::MAX_PASSES * 2 {
        return Err(BenchError::usage(format!(
            "bench-peer: --count + --warmup must be even and between 2 and {}, got {total}",
            super::transport::MAX_PASSES * 2
        )));
    }
    Ok(total as u32)
}

fn turn(args: &PeerArgs) -> Result<PeerReport, BenchError> {
    let run = run_of(args)?;
    let seg = Segment::open(run, &turn_spec(), Access::ReadWrite, OPEN_WAIT)?;
    let turn: &Turn = seg.body()?;
    if turn.seq() != 0 {
        return Err(BenchError::failed(format!(
            "segment {}: turn is at {}, not 0: it is in use already",
            seg.name(),
            turn.seq()
        )));
    }
    let policy = if args.mechanism == Mechanism::TurnSpin {
        SpinPolicy::HANDOFF
    } else {
        SpinPolicy::SLEEP
    };
    passes(&mut TurnEnd::new(turn, Party::Even, policy), args)
}

/// The peer's side of a pass measurement: it makes the odd passes
/// 1, 3, ..., total + 1; the parent makes the even ones.
fn passes<H: Pass>(h: &mut H, args: &PeerArgs) -> Result<PeerReport, BenchError> {
    let total = pass_total(args)?;
    let mut seq = 0u32;
    let mut steps = 0u64;
    loop {
        h.pass(seq + 1).map_err(parent_stall)?;
        steps += 1;
        if seq == total {
            break;
        }
        await_parent(h, seq + 2)?;
        seq += 2;
    }
    Ok(PeerReport {
        steps: Some(steps),
        ..PeerReport::default()
    })
}

#[cold]
fn parent_stall(s: Stall) -> BenchError {
    match s {
        Stall::Idle => BenchError::failed(format!(
            "the bench parent made no progress for {} s",
            (IDLE_CHECK * MAX_IDLE_CHECKS).as_secs()
        )),
        Stall::Closed => BenchError::failed("the bench parent closed its end (did it exit?)"),
        Stall::Failed(f) => f,
    }
}

#[inline]
fn await_parent<H: Pass>(h: &mut H, seq: u32) -> Result<(), BenchError> {
    let mut idles = 0;
    loop {
        match h.wait(seq) {
            Ok(()) => return Ok(()),
            Err(Stall::Idle) if idles + 1 < MAX_IDLE_CHECKS => idles += 1,
            Err(s) => return Err(parent_stall(s)),
        }
    }
}

fn ring(args: &PeerArgs) -> Result<PeerReport, BenchError> {
    let run = run_of(args)?;
    let seg = Segment::open(run, &ring_spec(), Access::ReadWrite, OPEN_WAIT)?;
    let view = ring_view(&seg)?;
    let mut prod = RingProducer::attach(view)?;
    let n = args.count;
    let mut sum = Checksum::default();
    let mut msg = [0u8; MSG_SIZE];
    let mut seq = 0u64;
    while seq < n {
        let mut free = prod.free(RING_BATCH)?;
        if free == 0 {
            let mut idles = 0;
            loop {
                let deadline = Instant::now() + IDLE_CHECK;
                match prod.wait_free(1, SpinPolicy::HANDOFF, deadline)? {
                    Ok(f) => {
                        free = f;
                        break;
                    }
                    Err(TimedOut(_)) if idles + 1 < MAX_IDLE_CHECKS => idles += 1,
                    Err(TimedOut(_)) => return Err(parent_stall(Stall::Idle)),
                }
            }
        }
        let k = u64::from(free.min(RING_BATCH)).min(n - seq) as u32;
        for j in 0..k {
            // Composed in a local buffer, then copied: reading back a slot
            // just written would wait for its cache lines to come over from
            // the consumer's core, one message at a time.
            fill_message(seq, &mut msg);
            sum.add(&msg);
            prod.slot_mut(j).copy_from_slice(&msg);
            seq += 1;
        }
        prod.publish(k);
    }
    Ok(PeerReport {
        messages: Some(n),
        checksum: Some(sum.0),
        ..PeerReport::default()
    })
}

/// Sends `n` messages, one `write(2)` of [`MSG_SIZE`] bytes each.
fn produce_fd(fd: BorrowedFd<'_>, n: u64) -> Result<Checksum, BenchError> {
    let mut msg = [0u8; MSG_SIZE];
    let mut sum = Checksum::default();
    for seq in 0..n {
        fill_message(seq, &mut msg);
        sum.add(&msg);
        write_all(fd, &msg).map_err(parent_stall)?;
    }
    Ok(sum)
}
