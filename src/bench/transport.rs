//! `forkring bench transport`: how fast two processes on this machine hand
//! control to each other and stream messages, through forkring's shm
//! primitives and through the kernel's.
//!
//! - Pass latency: the parent and a `bench-peer` process alternate; each
//!   pass gives control to the other process once and carries the
//!   running pass count, which the receiver checks. One-way latency is
//!   the measured time divided by the number of passes. Mechanisms: the
//!   futex [`Turn`] spinning first ([`SpinPolicy::HANDOFF`]) and sleeping at
//!   once ([`SpinPolicy::SLEEP`]: a futex wait and wake per pass), a pipe
//!   pair and a unix stream socket pair (1-byte ping-pong), an eventfd pair.
//! - Throughput: the peer sends 208-byte messages (an 8-byte sequence number
//!   and 50 `f32`), the parent receives them, checks their order and a
//!   checksum of their contents against the one the peer reports. Through
//!   the shm SPSC ring (batched publication and release, zero-copy on both
//!   sides), and through a pipe and a unix stream socket, one `write(2)` of
//!   208 bytes per message and reads of exactly 208 bytes.
//!
//! Shm mechanisms use segments of the run `bench-<pid>`, removed afterwards.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::{Deserialize, Serialize};

use super::BenchError;
use crate::shm::header::HEADER_SIZE;
use crate::shm::layout::Fingerprint;
use crate::shm::ring::RingView;
use crate::shm::turn::{Party, TurnToken, TurnWait};
use crate::shm::{
    Deadline, Ring, RingConsumer, RunName, Segment, SegmentSpec, SpinPolicy, TimedOut, Turn,
};

use super::{Figure, IDLE_CHECK, Launcher, Machine, PeerProcess, Row, SegmentGuard};

// ---------------------------------------------------------------------------
// Mechanisms and options
// ---------------------------------------------------------------------------

/// What a measurement measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// One-way pass latency.
    Latency,
    /// Message throughput.
    Throughput,
}

impl Kind {
    /// `latency` or `throughput`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Latency => "latency",
            Kind::Throughput => "throughput",
        }
    }
}

/// One measurement of `bench transport`. The value names are the peer's
/// (`bench-peer <id>`); [`Mechanism::name`] is what the table shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Mechanism {
    /// Futex `Turn`, spinning before it sleeps.
    #[value(name = "turn-spin")]
    TurnSpin,
    /// Futex `Turn`, sleeping at once: one futex wait and wake per pass.
    #[value(name = "turn-sleep")]
    TurnSleep,
    /// 1-byte ping-pong over two pipes.
    #[value(name = "pipe-latency")]
    Pipe,
    /// 1-byte ping-pong over a unix stream socket pair.
    #[value(name = "socket-latency")]
    Socket,
    /// Ping-pong over two eventfds.
    #[value(name = "eventfd-latency")]
    Eventfd,
    /// 208-byte messages through the shm SPSC ring.
    #[value(name = "ring")]
    Ring,
    /// 208-byte messages through a pipe.
    #[value(name = "pipe-stream")]
    PipeStream,
    /// 208-byte messages through a unix stream socket.
    #[value(name = "socket-stream")]
    SocketStream,
}

impl Mechanism {
    /// Every measurement, in the order they are run and shown.
    pub(crate) const ALL: [Mechanism; 8] = [
        Mechanism::TurnSpin,
        Mechanism::TurnSleep,
        Mechanism::Pipe,
        Mechanism::Socket,
        Mechanism::Eventfd,
        Mechanism::Ring,
        Mechanism::PipeStream,
        Mechanism::SocketStream,
    ];

    /// The name shown in the table and JSON (`pipe` for both pipe kinds).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mechanism::TurnSpin => "turn-spin",
            Mechanism::TurnSleep => "turn-sleep",
            Mechanism::Pipe | Mechanism::PipeStream => "pipe",
            Mechanism::Socket | Mechanism::SocketStream => "socket",
            Mechanism::Eventfd => "eventfd",
            Mechanism::Ring => "ring",
        }
    }

    /// A name unique among the measurements (`pipe-latency`, `pipe-stream`).
    pub fn id(self) -> &'static str {
        match self {
            Mechanism::TurnSpin => "turn-spin",
            Mechanism::TurnSleep => "turn-sleep",
            Mechanism::Pipe => "pipe-latency",
            Mechanism::Socket => "socket-latency",
            Mechanism::Eventfd => "eventfd-latency",
            Mechanism::Ring => "ring",
            Mechanism::PipeStream => "pipe-stream",
            Mechanism::SocketStream => "socket-stream",
        }
    }

    /// Pass or throughput.
    pub(crate) fn kind(self) -> Kind {
        match self {
            Mechanism::TurnSpin
            | Mechanism::TurnSleep
            | Mechanism::Pipe
            | Mechanism::Socket
            | Mechanism::Eventfd => Kind::Latency,
            Mechanism::Ring | Mechanism::PipeStream | Mechanism::SocketStream => Kind::Throughput,
        }
    }

    /// The pipe measurement of the same kind (the ratio's base).
    pub(crate) fn pipe_of_kind(self) -> Mechanism {
        match self.kind() {
            Kind::Latency => Mechanism::Pipe,
            Kind::Throughput => Mechanism::PipeStream,
        }
    }

    /// Count used when none is given: sized so that each measurement took
    /// about a second on the 2-CPU x86 VM this was developed on (slower
    /// machines take longer, faster ones less); the
    /// output reports the count used.
    pub(crate) fn default_count(self) -> u64 {
        match self {
            Mechanism::TurnSpin => 10_000_000,
            Mechanism::TurnSleep | Mechanism::Pipe | Mechanism::Socket | Mechanism::Eventfd => {
                200_000
            }
            Mechanism::Ring => 40_000_000,
            Mechanism::PipeStream => 1_500_000,
            Mechanism::SocketStream => 800_000,
        }
    }
}

/// Largest `--passes` (the turn's sequence is a `u32`).
pub(crate) const MAX_PASSES: u64 = 1 << 30;

/// The measurements chosen with `--only`, in run order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Selection(pub Vec<Mechanism>);

/// Parses `--only`: comma-separated mechanism names (`pipe` selects both
/// pipe measurements), unique ids (`pipe-latency`) or kinds (`latency`,
/// `throughput`). Returns the selection in run order.
pub(crate) fn parse_only(s: &str) -> Result<Selection, String> {
    let mut chosen = [false; Mechanism::ALL.len()];
    for word in s.split(',').map(str::trim) {
        if word.is_empty() {
            continue;
        }
        let mut hit = false;
        for (i, m) in Mechanism::ALL.iter().enumerate() {
            if word == m.name() || word == m.id() || word == m.kind().name() {
                chosen[i] = true;
                hit = true;
            }
        }
        if !hit {
            return Err(format!(
                "unknown mechanism {word:?}; choose from turn-spin, turn-sleep, pipe, socket, eventfd, ring \
                 (pipe and socket select both kinds; pipe-latency, pipe-stream, socket-latency, \
                 socket-stream, eventfd-latency select one), or the kinds latency and throughput"
            ));
        }
    }
    let sel: Vec<Mechanism> = Mechanism::ALL
        .iter()
        .zip(chosen)
        .filter_map(|(m, c)| c.then_some(*m))
        .collect();
    if sel.is_empty() {
        return Err("--only needs at least one mechanism".to_string());
    }
    Ok(Selection(sel))
}

/// What `forkring bench transport` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// JSON lines instead of the table.
    pub(crate) json: bool,
    /// Passes per latency measurement (default: per mechanism).
    pub(crate) passes: Option<u64>,
    /// Messages per throughput measurement (default: per mechanism).
    pub(crate) messages: Option<u64>,
    /// Selected measurements (default: all).
    pub(crate) only: Option<Vec<Mechanism>>,
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

/// Bytes per message: an 8-byte header and 50 `f32`.
pub const MSG_SIZE: usize = 208;
/// `f32` values per message.
pub(crate) const FLOATS: usize = 50;
const _: () = assert!(8 + FLOATS * 4 == MSG_SIZE);

/// Slots of the bench ring (208 bytes each: 832 KiB, within L2).
pub(crate) const RING_CAPACITY: u32 = 4096;
/// Most slots the producer fills before it publishes, and the consumer
/// reads before it releases.
pub const RING_BATCH: u32 = 64;

/// Writes message `seq`: the sequence number (little-endian) and a 50-float
/// vector derived from it.
#[inline]
pub fn fill_message(seq: u64, msg: &mut [u8; MSG_SIZE]) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
    let base = (seq & 0xffff) as f32;
    // Two floats per 8-byte store: the sender's checksum then reads each
    // word back from exactly one store, which the CPU forwards at once
    // (8-byte loads spanning two 4-byte stores stall until both commit).
    for (i, c) in msg[8..].chunks_exact_mut(8).enumerate() {
        let lo = (base + (2 * i) as f32 * 0.5).to_bits();
        let hi = (base + (2 * i + 1) as f32 * 0.5).to_bits();
        c.copy_from_slice(&(u64::from(lo) | u64::from(hi) << 32).to_le_bytes());
    }
}

/// The sequence number in a message's header.
#[inline]
pub(crate) fn message_seq(msg: &[u8; MSG_SIZE]) -> u64 {
    let mut h = [0u8; 8];
    h.copy_from_slice(&msg[..8]);
    u64::from_le_bytes(h)
}

/// A checksum over a sequence of messages: per message the wrapping sum of
/// its 26 little-endian 64-bit words, chained FNV-style so that it also
/// depends on the messages' order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Checksum(pub u64);

impl Default for Checksum {
    fn default() -> Self {
        Checksum(0xcbf2_9ce4_8422_2325)
    }
}

impl Checksum {
    /// Adds a message.
    #[inline]
    pub(crate) fn add(&mut self, msg: &[u8; MSG_SIZE]) {
        let mut s = 0u64;
        for c in msg.chunks_exact(8) {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            s = s.wrapping_add(u64::from_le_bytes(w));
        }
        self.0 = (self.0 ^ s).wrapping_mul(0x0000_0100_0000_01b3);
    }
}

/// The receiving side's checks: sequence numbers 0, 1, 2, ... and the
/// checksum of what arrived.
#[derive(Debug, Default, Clone)]
pub(crate) struct Verifier {
    next: u64,
    sum: Checksum,
}

impl Verifier {
    /// Checks and accounts one message.
    #[inline]
    pub(crate) fn check(&mut self, msg: &[u8; MSG_SIZE]) -> Result<(), BenchError> {
        let seq = message_seq(msg);
        if seq != self.next {
            return Err(out_of_order(seq, self.next));
        }
        self.sum.add(msg);
        self.next += 1;
        Ok(())
    }

    /// Messages checked so far.
    pub(crate) fn count(&self) -> u64 {
        self.next
    }

    /// Checksum of the messages checked so far.
    pub(crate) fn checksum(&self) -> Checksum {
        self.sum
    }
}

#[cold]
fn out_of_order(seq: u64, expected: u64) -> BenchError {
    BenchError::failed(format!(
        "message {expected} arrived with sequence number {seq}: messages were lost, duplicated or reordered"
    ))
}

/// What the peer prints on stdout when it is done (one JSON line).
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct PeerReport {
    /// Passes the peer made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) steps: Option<u64>,
    /// Messages the peer sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) messages: Option<u64>,
    /// Checksum of the messages the peer sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) checksum: Option<u64>,
}

// ---------------------------------------------------------------------------
// Segments
// ---------------------------------------------------------------------------

const VERSION: u32 = 1;
const TURN_PART: &str = "turn";
const RING_PART: &str = "ring";
const TURN_BODY: usize = std::mem::size_of::<Turn>();

/// The bench turn segment: a [`Turn`] after the header.
pub(crate) fn turn_spec() -> SegmentSpec {
    SegmentSpec {
        part: TURN_PART,
        version: VERSION,
        fingerprint: Fingerprint::new("bench-turn").num(TURN_BODY).finish(),
        size: Some(HEADER_SIZE + TURN_BODY),
    }
}

/// The bench ring segment: a [`Ring`] control block and its slots after the
/// header.
pub(crate) fn ring_spec() -> SegmentSpec {
    let body = Ring::bytes_for(RING_CAPACITY, MSG_SIZE as u32);
    SegmentSpec {
        part: RING_PART,
        version: VERSION,
        fingerprint: Fingerprint::new("bench-ring")
            .num(std::mem::size_of::<Ring>())
            .num(RING_CAPACITY as usize)
            .num(MSG_SIZE)
            .finish(),
        // Valid constants; a `None` would be refused by `Segment::create`.
        size: body.map(|b| HEADER_SIZE + b),
    }
}

/// Creates the turn segment of `run` (sequence 0: the peer's turn).
pub(crate) fn create_turn(run: &RunName) -> Result<(SegmentGuard, Segment), BenchError> {
    let guard = SegmentGuard::new(run, TURN_PART);
    let seg = Segment::create(run, &turn_spec(), |_| {})?;
    Ok((guard, seg))
}

/// Creates the ring segment of `run`.
pub fn create_ring(run: &RunName) -> Result<(SegmentGuard, Segment), BenchError> {
    let guard = SegmentGuard::new(run, RING_PART);
    let seg = Segment::create(run, &ring_spec(), |seg| {
        if let Ok(ring) = seg.body::<Ring>() {
            ring.init(RING_CAPACITY, MSG_SIZE as u32);
        }
    })?;
    Ok((guard, seg))
}

/// The validated ring of a bench ring segment.
pub fn ring_view(seg: &Segment) -> Result<RingView<'_>, BenchError> {
    let view = RingView::new(seg, HEADER_SIZE)?;
    if view.slot_size() != MSG_SIZE || view.capacity() != RING_CAPACITY {
        return Err(BenchError::failed(format!(
            "segment {}: ring has {} slots of {} bytes, expected {RING_CAPACITY} of {MSG_SIZE}",
            seg.name(),
            view.capacity(),
            view.slot_size()
        )));
    }
    Ok(view)
}

// ---------------------------------------------------------------------------
// Pass ends
// ---------------------------------------------------------------------------

/// Why a pass end could not go on.
#[derive(Debug)]
pub(crate) enum Stall {
    /// Nothing arrived for [`IDLE_CHECK`]: check the other side.
    Idle,
    /// The other side closed its end (end of file, or the parent's poke).
    Closed,
    /// A check failed or a system call did.
    Failed(BenchError),
}

/// One side of a latency mechanism. The passes are numbered: pass `s`
/// makes the running count `s`; the peer makes the odd ones, the parent the
/// even ones, and each side checks the number it receives.
pub(crate) trait Pass {
    /// Hands control to the other side; `seq` is the count after this
    /// pass.
    fn pass(&mut self, seq: u32) -> Result<(), Stall>;
    /// Waits until the other side hands control back with count `seq`.
    fn wait(&mut self, seq: u32) -> Result<(), Stall>;
}

/// A side of a [`Turn`].
#[derive(Debug)]
pub(crate) struct TurnEnd<'a> {
    /// The shared turn.
    pub(crate) turn: &'a Turn,
    /// Our party: the peer is `Even`, the parent `Odd`.
    pub(crate) party: Party,
    /// How we wait.
    pub(crate) policy: SpinPolicy,
    /// The turn, while we hold it.
    pub(crate) token: Option<TurnToken>,
}

impl<'a> TurnEnd<'a> {
    /// A side of `turn` for `party`, waiting per `policy`.
    pub(crate) fn new(turn: &'a Turn, party: Party, policy: SpinPolicy) -> Self {
        TurnEnd {
            turn,
            party,
            policy,
            token: None,
        }
    }
}

impl Pass for TurnEnd<'_> {
    #[inline]
    fn pass(&mut self, seq: u32) -> Result<(), Stall> {
        // The first pass of the side that starts holds the turn without
        // waiting for it.
        let token = match self.token.take() {
            Some(t) => t,
            None => self.turn.try_take(self.party, u32::MAX).ok_or_else(|| {
                Stall::Failed(BenchError::failed(format!(
                    "turn sequence is {}, not ours: a pass was lost or duplicated",
                    self.turn.seq()
                )))
            })?,
        };
        if token.seq().wrapping_add(1) != seq {
            return Err(Stall::Failed(BenchError::failed(format!(
                "turn sequence is {}, expected {}: a pass was lost or duplicated",
                token.seq(),
                seq.wrapping_sub(1)
            ))));
        }
        self.turn.pass(token);
        Ok(())
    }

    #[inline]
    fn wait(&mut self, seq: u32) -> Result<(), Stall> {
        match self.turn.wait(
            self.party,
            |_| false,
            self.policy,
            Deadline::After(IDLE_CHECK),
        ) {
            Ok(TurnWait::Mine(t)) if t.seq() == seq => {
                self.token = Some(t);
                Ok(())
            }
            Ok(TurnWait::Mine(t)) => Err(Stall::Failed(BenchError::failed(format!(
                "turn sequence is {}, expected {seq}: a pass was lost or duplicated",
                t.seq()
            )))),
            Ok(TurnWait::GaveUp(s)) => Err(Stall::Failed(BenchError::failed(format!(
                "turn sequence is {s}, expected {seq}: a pass was lost or duplicated"
            )))),
            Err(TimedOut(_)) => Err(Stall::Idle),
        }
    }
}

/// A side of a 1-byte ping-pong over a pipe pair or a socket (the byte is
/// the pass count modulo 256).
#[derive(Debug)]
pub(crate) struct ByteEnd {
    /// Where the other side's bytes arrive.
    pub(crate) rx: OwnedFd,
    /// Where ours go (a duplicate of `rx` for a socket).
    pub(crate) tx: OwnedFd,
}

impl Pass for ByteEnd {
    #[inline]
    fn pass(&mut self, seq: u32) -> Result<(), Stall> {
        write_all(self.tx.as_fd(), &[seq as u8])
    }

    #[inline]
    fn wait(&mut self, seq: u32) -> Result<(), Stall> {
        let mut b = [0u8; 1];
        read_exact(self.rx.as_fd(), &mut b)?;
        if b[0] != seq as u8 {
            return Err(Stall::Failed(BenchError::failed(format!(
                "pass {seq} carried byte {}, expected {}: a pass was lost or duplicated",
                b[0], seq as u8
            ))));
        }
        Ok(())
    }
}

/// Added to the parent's eventfd when the peer dies, so a blocked read
/// returns.
const POISON: u64 = 1 << 62;

/// A side of a ping-pong over two eventfds (the value is the pass count).
#[derive(Debug)]
pub(crate) struct EventEnd {
    /// The eventfd the other side writes.
    pub(crate) rx: OwnedFd,
    /// The eventfd we write.
    pub(crate) tx: OwnedFd,
}

impl Pass for EventEnd {
    #[inline]
    fn pass(&mut self, seq: u32) -> Result<(), Stall> {
        write_all(self.tx.as_fd(), &u64::from(seq).to_ne_bytes())
    }

    #[inline]
    fn wait(&mut self, seq: u32) -> Result<(), Stall> {
        let mut b = [0u8; 8];
        read_exact(self.rx.as_fd(), &mut b)?;
        let v = u64::from_ne_bytes(b);
        if v == u64::from(seq) {
            Ok(())
        } else if v >= POISON {
            Err(Stall::Closed)
        } else {
            Err(Stall::Failed(BenchError::failed(format!(
                "eventfd pass {seq} carried {v}: a pass was lost or duplicated"
            ))))
        }
    }
}

/// Writes all of `buf` (one `write(2)` unless interrupted or short).
#[inline]
pub(crate) fn write_all(fd: BorrowedFd<'_>, mut buf: &[u8]) -> Result<(), Stall> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(0) => return Err(Stall::Closed),
            Ok(n) => buf = &buf[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EPIPE | Errno::ECONNRESET) => return Err(Stall::Closed),
            Err(e) => return Err(Stall::Failed(BenchError::failed(format!("write: {e}")))),
        }
    }
    Ok(())
}

/// Reads exactly `buf.len()` bytes, however the kernel splits them.
#[inline]
pub(crate) fn read_exact(fd: BorrowedFd<'_>, buf: &mut [u8]) -> Result<(), Stall> {
    let mut got = 0;
    while got < buf.len() {
        match nix::unistd::read(fd, &mut buf[got..]) {
            Ok(0) => return Err(Stall::Closed),
            Ok(n) => got += n,
            Err(Errno::EINTR) => {}
            Err(Errno::ECONNRESET) => return Err(Stall::Closed),
            Err(e) => return Err(Stall::Failed(BenchError::failed(format!("read: {e}")))),
        }
    }
    Ok(())
}

/// A pipe, both ends close-on-exec.
pub(crate) fn pipe() -> Result<(OwnedFd, OwnedFd), BenchError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| BenchError::failed(format!("pipe2: {e}")))
}

/// A unix stream socket pair, close-on-exec.
pub(crate) fn stream_pair() -> Result<(OwnedFd, OwnedFd), BenchError> {
    socketpair(
        AddressFamily::Unix,
        SockType::Stream,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(|e| BenchError::failed(format!("socketpair: {e}")))
}

/// A blocking eventfd, close-on-exec.
pub(crate) fn eventfd() -> Result<OwnedFd, BenchError> {
    // SAFETY: eventfd takes no pointers; it returns a new descriptor or -1.
    let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(BenchError::failed(format!(
            "eventfd: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn dup(fd: &OwnedFd) -> Result<OwnedFd, BenchError> {
    fd.try_clone()
        .map_err(|e| BenchError::failed(format!("dup: {e}")))
}

// ---------------------------------------------------------------------------
// Measuring
// ---------------------------------------------------------------------------

/// One finished measurement.
#[derive(Debug, Clone, Copy)]
pub struct Measurement {
    /// What was measured.
    pub(crate) mechanism: Mechanism,
    /// Passes timed, or messages sent.
    pub(crate) count: u64,
    /// Time of the timed passes, or from the first message's arrival to
    /// the last one's (covering `count - 1` messages).
    pub elapsed: Duration,
}

impl Measurement {
    /// The figure: one-way nanoseconds, or messages per second.
    pub(crate) fn figure(&self) -> Figure {
        let secs = self.elapsed.as_secs_f64();
        match self.mechanism.kind() {
            Kind::Latency => Figure::LatencyNs(secs * 1e9 / self.count as f64),
            Kind::Throughput => Figure::MsgsPerS((self.count - 1) as f64 / secs),
        }
    }
}

/// Pass counts are even (the parent starts and ends the timed span on
/// its own turn), at least 2.
pub fn even_passes(n: u64) -> u64 {
    n.max(2).div_ceil(2) * 2
}

/// Untimed passes before the timed ones: a tenth of them, at most 10,000,
/// even.
fn warmup_for(n: u64) -> u64 {
    (n / 10).min(10_000) / 2 * 2
}

/// Measures `mechanism` with `count` passes (rounded up to even) or
/// messages (at least 2), with a peer started by `launcher`.
pub fn measure(
    mechanism: Mechanism,
    count: u64,
    launcher: &Launcher,
) -> Result<Measurement, BenchError> {
    let (elapsed, count) = match mechanism.kind() {
        Kind::Latency => {
            let n = even_passes(count);
            if n > MAX_PASSES {
                return Err(BenchError::usage(format!(
                    "--passes {count} is more than the {MAX_PASSES} a turn can count"
                )));
            }
            (measure_latency(mechanism, n, warmup_for(n), launcher)?, n)
        }
        Kind::Throughput => {
            if count < 2 {
                return Err(BenchError::usage(
                    "--messages must be at least 2 (throughput is timed between the first and the last)",
                ));
            }
            (measure_throughput(mechanism, count, launcher)?, count)
        }
    };
    Ok(Measurement {
        mechanism,
        count,
        elapsed,
    })
}

pub(crate) fn report_of(peer: PeerProcess) -> Result<PeerReport, BenchError> {
    let out = peer.finish()?;
    let line = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(line).map_err(|e| {
        BenchError::failed(format!(
            "bench peer printed {line:?} instead of its report: {e}"
        ))
    })
}

fn peer_args(mechanism: Mechanism, count: u64, extra: &[String]) -> Vec<String> {
    let mut a = vec![
        mechanism.id().to_string(),
        "--count".to_string(),
        count.to_string(),
    ];
    a.extend_from_slice(extra);
    a
}

pub(crate) fn fd_args(fds: &[&OwnedFd]) -> Vec<String> {
    fds.iter()
        .flat_map(|fd| ["--fd".to_string(), fd.as_raw_fd().to_string()])
        .collect()
}

fn measure_latency(
    mechanism: Mechanism,
    n: u64,
    warm: u64,
    launcher: &Launcher,
) -> Result<Duration, BenchError> {
    let warm_arg = ["--warmup".to_string(), warm.to_string()];
    let (n32, warm32) = (n as u32, warm as u32);
    let (elapsed, report) = match mechanism {
        Mechanism::TurnSpin | Mechanism::TurnSleep => {
            let run = super::run_name();
            let (_guard, seg) = create_turn(&run)?;
            let turn: &Turn = seg.body()?;
            let mut extra = warm_arg.to_vec();
            extra.extend(["--run".to_string(), run.to_string()]);
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &extra),
                &[],
                None,
            )?;
            let policy = if mechanism == Mechanism::TurnSpin {
                SpinPolicy::HANDOFF
            } else {
                SpinPolicy::SLEEP
            };
            let mut end = TurnEnd::new(turn, Party::Odd, policy);
            let elapsed = drive_passes(&mut end, warm32, n32, &mut peer)?;
            let report = report_of(peer)?;
            let seq = turn.seq();
            if seq != warm32 + n32 + 1 {
                return Err(BenchError::failed(format!(
                    "turn sequence ended at {seq}, expected {}",
                    warm32 + n32 + 1
                )));
            }
            (elapsed, report)
        }
        Mechanism::Pipe => {
            let (to_peer_rx, to_peer_tx) = pipe()?;
            let (from_peer_rx, from_peer_tx) = pipe()?;
            let mut extra = warm_arg.to_vec();
            extra.extend(fd_args(&[&to_peer_rx, &from_peer_tx]));
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &extra),
                &[to_peer_rx.as_fd(), from_peer_tx.as_fd()],
                None,
            )?;
            drop((to_peer_rx, from_peer_tx));
            let mut end = ByteEnd {
                rx: from_peer_rx,
                tx: to_peer_tx,
            };
            let elapsed = drive_passes(&mut end, warm32, n32, &mut peer)?;
            (elapsed, report_of(peer)?)
        }
        Mechanism::Socket => {
            let (ours, theirs) = stream_pair()?;
            let mut extra = warm_arg.to_vec();
            extra.extend(fd_args(&[&theirs]));
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &extra),
                &[theirs.as_fd()],
                None,
            )?;
            drop(theirs);
            let mut end = ByteEnd {
                tx: dup(&ours)?,
                rx: ours,
            };
            let elapsed = drive_passes(&mut end, warm32, n32, &mut peer)?;
            (elapsed, report_of(peer)?)
        }
        Mechanism::Eventfd => {
            let to_peer = eventfd()?;
            let from_peer = eventfd()?;
            let mut extra = warm_arg.to_vec();
            extra.extend(fd_args(&[&to_peer, &from_peer]));
            // An eventfd has no end of file: if the peer dies, wake our read.
            let poison = dup(&from_peer)?;
            let poke: super::Poke = Box::new(move || {
                let _ = write_all(poison.as_fd(), &POISON.to_ne_bytes());
            });
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &extra),
                &[to_peer.as_fd(), from_peer.as_fd()],
                Some(poke),
            )?;
            let mut end = EventEnd {
                rx: from_peer,
                tx: to_peer,
            };
            let elapsed = drive_passes(&mut end, warm32, n32, &mut peer)?;
            (elapsed, report_of(peer)?)
        }
        _ => unreachable!("not a latency mechanism"),
    };
    let expected = (warm + n) / 2 + 1;
    if report.steps != Some(expected) {
        return Err(BenchError::failed(format!(
            "bench peer ({}) reports {:?} passes, expected {expected}",
            mechanism.id(),
            report.steps
        )));
    }
    Ok(elapsed)
}

/// Handles a stall of the parent's side.
#[cold]
pub(crate) fn on_stall(
    peer: &mut PeerProcess,
    stall: Stall,
    idles: &mut u32,
) -> Result<(), BenchError> {
    match stall {
        Stall::Idle => peer.idle(idles),
        Stall::Closed => Err(peer.gone()),
        Stall::Failed(f) => Err(f),
    }
}

#[inline]
fn await_pass<H: Pass>(h: &mut H, seq: u32, peer: &mut PeerProcess) -> Result<(), BenchError> {
    let mut idles = 0;
    loop {
        match h.wait(seq) {
            Ok(()) => return Ok(()),
            Err(s) => on_stall(peer, s, &mut idles)?,
        }
    }
}

#[inline]
fn hand_over<H: Pass>(h: &mut H, seq: u32, peer: &mut PeerProcess) -> Result<(), BenchError> {
    match h.pass(seq) {
        Ok(()) => Ok(()),
        Err(s) => on_stall(peer, s, &mut 0),
    }
}

/// The parent's side: waits for the peer's first pass (1), runs `warm`
/// untimed passes, then times `n` passes (`warm` and `n` even).
fn drive_passes<H: Pass>(
    h: &mut H,
    warm: u32,
    n: u32,
    peer: &mut PeerProcess,
) -> Result<Duration, BenchError> {
    await_pass(h, 1, peer)?;
    let mut seq = 1u32;
    while seq < warm + 1 {
        hand_over(h, seq + 1, peer)?;
        await_pass(h, seq + 2, peer)?;
        seq += 2;
    }
    let end = warm + n + 1;
    let t0 = Instant::now();
    while seq < end {
        hand_over(h, seq + 1, peer)?;
        await_pass(h, seq + 2, peer)?;
        seq += 2;
    }
    Ok(t0.elapsed())
}

fn measure_throughput(
    mechanism: Mechanism,
    n: u64,
    launcher: &Launcher,
) -> Result<Duration, BenchError> {
    let (elapsed, verifier, report) = match mechanism {
        Mechanism::Ring => {
            let run = super::run_name();
            let (_guard, seg) = create_ring(&run)?;
            let view = ring_view(&seg)?;
            let extra = ["--run".to_string(), run.to_string()];
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &extra),
                &[],
                None,
            )?;
            let (elapsed, v) = consume_ring(view, n, &mut peer)?;
            (elapsed, v, report_of(peer)?)
        }
        Mechanism::PipeStream | Mechanism::SocketStream => {
            let (ours, theirs) = if mechanism == Mechanism::PipeStream {
                pipe()?
            } else {
                stream_pair()?
            };
            let mut peer = PeerProcess::spawn(
                launcher,
                mechanism.id(),
                &peer_args(mechanism, n, &fd_args(&[&theirs])),
                &[theirs.as_fd()],
                None,
            )?;
            drop(theirs);
            let (elapsed, v) = consume_fd(ours.as_fd(), n, &mut peer)?;
            (elapsed, v, report_of(peer)?)
        }
        _ => unreachable!("not a throughput mechanism"),
    };
    if report.messages != Some(verifier.count()) {
        return Err(BenchError::failed(format!(
            "bench peer ({}) reports {:?} messages sent, {} arrived",
            mechanism.id(),
            report.messages,
            verifier.count()
        )));
    }
    if report.checksum != Some(verifier.checksum().0) {
        return Err(BenchError::failed(format!(
            "checksum mismatch over {} messages ({}): received {:#018x}, sent {}",
            verifier.count(),
            mechanism.id(),
            verifier.checksum().0,
            report
                .checksum
                .map_or("nothing".to_string(), |c| format!("{c:#018x}"))
        )));
    }
    Ok(elapsed)
}

/// The parent's side of the ring: reads every slot in place, releases them
/// in batches.
fn consume_ring(
    view: RingView<'_>,
    n: u64,
    peer: &mut PeerProcess,
) -> Result<(Duration, Verifier), BenchError> {
    let mut cons = RingConsumer::attach(view)?;
    let mut v = Verifier::default();
    let mut words = [0u64; MSG_SIZE / 8];
    let mut t0 = None;
    let mut left = n;
    while left > 0 {
        let mut avail = cons.available(RING_BATCH)?;
        if avail == 0 {
            let mut idles = 0;
            loop {
                let deadline = Instant::now() + IDLE_CHECK;
                match cons.wait_available(1, SpinPolicy::HANDOFF, deadline)? {
                    Ok(a) => {
                        avail = a;
                        break;
                    }
                    Err(TimedOut(_)) => on_stall(peer, Stall::Idle, &mut idles)?,
                }
            }
        }
        if t0.is_none() {
            t0 = Some(Instant::now());
        }
        let k = u64::from(avail.min(RING_BATCH)).min(left) as u32;
        for j in 0..k {
            // The production read path: the stream consumer copies each
            // slot out of shared memory the same way.
            cons.copy_slot(j, &mut words);
            v.check(bytemuck::cast_ref(&words))?;
        }
        cons.release(k);
        left -= u64::from(k);
    }
    Ok((t0.map_or(Duration::ZERO, |t| t.elapsed()), v))
}

/// The parent's side of a pipe or socket: reads of exactly one message.
fn consume_fd(
    fd: BorrowedFd<'_>,
    n: u64,
    peer: &mut PeerProcess,
) -> Result<(Duration, Verifier), BenchError> {
    let mut v = Verifier::default();
    let mut buf = [0u8; MSG_SIZE];
    read_message(fd, &mut buf, peer)?;
    let t0 = Instant::now();
    v.check(&buf)?;
    for _ in 1..n {
        read_message(fd, &mut buf, peer)?;
        v.check(&buf)?;
    }
    Ok((t0.elapsed(), v))
}

#[inline]
fn read_message(
    fd: BorrowedFd<'_>,
    buf: &mut [u8; MSG_SIZE],
    peer: &mut PeerProcess,
) -> Result<(), BenchError> {
    let mut idles = 0;
    loop {
        match read_exact(fd, buf) {
            Ok(()) => return Ok(()),
            Err(s) => on_stall(peer, s, &mut idles)?,
        }
    }
}

// ---------------------------------------------------------------------------
// The command
// ---------------------------------------------------------------------------

/// `forkring bench transport`.
pub(crate) fn run(opts: &Options) -> Result<(), BenchError> {
    super::install_interrupt_handler()?;
    let machine = Machine::detect();
    let selected = opts.only.clone().unwrap_or_else(|| Mechanism::ALL.to_vec());
    let launcher = Launcher::this_executable();
    let progress = !opts.json && std::io::stderr().is_terminal();
    let mut done: Vec<Measurement> = Vec::new();
    for m in selected {
        let count = match m.kind() {
            Kind::Latency => opts.passes,
            Kind::Throughput => opts.messages,
        }
        .unwrap_or_else(|| m.default_count());
        if progress {
            eprint!(
                "\rmeasuring {} {} ({}) ...\x1b[K",
                m.name(),
                m.kind().name(),
                super::thousands(count)
            );
        }
        let r = measure(m, count, &launcher);
        if progress {
            eprint!("\r\x1b[K");
        }
        done.push(r?);
    }
    let rows: Vec<Row> = done
        .iter()
        .map(|m| {
            let base = done
                .iter()
                .find(|b| b.mechanism == m.mechanism.pipe_of_kind());
            Row {
                mechanism: m.mechanism.name(),
                kind: m.mechanism.kind().name(),
                count: m.count,
                seconds: m.elapsed.as_secs_f64(),
                figure: m.figure(),
                ratio_to_pipe: base.and_then(|b| m.figure().ratio_to(b.figure())),
            }
        })
        .collect();
    if opts.json {
        super::print_json(&machine, &rows);
    } else {
        let notes = [
            "pass: control passes to the other process once; one-way = time / passes \
             (after a warm-up); every pass carries its number, which the receiver checks"
                .to_string(),
            format!(
                "throughput: {MSG_SIZE}-byte messages (8-byte sequence number + {FLOATS} x f32), \
                 timed from the first arrival to the last; the receiver checks order and a checksum; \
                 ring: {RING_CAPACITY} slots, batches of up to {RING_BATCH}"
            ),
            "vs pipe: pipe latency / latency, or throughput / pipe throughput".to_string(),
        ];
        super::print_table("forkring bench transport", &machine, &notes, &rows);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_by_name_id_and_kind() {
        assert_eq!(
            parse_only("ring,turn-spin").unwrap().0,
            vec![Mechanism::TurnSpin, Mechanism::Ring]
        );
        assert_eq!(
            parse_only("pipe").unwrap().0,
            vec![Mechanism::Pipe, Mechanism::PipeStream]
        );
        assert_eq!(
            parse_only("pipe-stream").unwrap().0,
            vec![Mechanism::PipeStream]
        );
        assert_eq!(parse_only("throughput").unwrap().0.len(), 3);
        assert!(parse_only("carrier-pigeon").is_err());
        assert!(parse_only(",").is_err());
    }

    #[test]
    fn verifier_catches_order_and_content() {
        let mut msg = [0u8; MSG_SIZE];
        let mut sent = Checksum::default();
        let mut v = Verifier::default();
        for seq in 0..3 {
            fill_message(seq, &mut msg);
            sent.add(&msg);
            v.check(&msg).unwrap();
        }
        assert_eq!(v.checksum(), sent);
        fill_message(4, &mut msg);
        assert!(v.check(&msg).is_err());
        fill_message(3, &mut msg);
        msg[100] ^= 1;
        v.check(&msg).unwrap();
        let mut good = [0u8; MSG_SIZE];
        fill_message(3, &mut good);
        sent.add(&good);
        assert_ne!(v.checksum(), sent);
    }

    #[test]
    fn counts_are_even() {
        assert_eq!(even_passes(0), 2);
        assert_eq!(even_passes(3), 4);
        assert_eq!(even_passes(1_000_000), 1_000_000);
        assert_eq!(warmup_for(1_000_000), 10_000);
        assert_eq!(warmup_for(2_002) % 2, 0);
    }

    #[test]
    fn specs_are_valid() {
        assert!(ring_spec().size.is_some());
        assert_eq!(turn_spec().size, Some(HEADER_SIZE + 128));
    }
}
