//! The ping and pong role processes.

use std::time::Duration;

use crate::clock::monotonic_ns;
use crate::job::{JobError, RoleCtx, RoleKind, no_check, no_options};
use crate::shm::turn::{Party, TurnWait};
use crate::shm::{Access, AdaptiveSpin, SpinPolicy};

use super::ImageSettings;
use super::layout::ImageSegments;
use super::step::{Recovery, Stepper};

/// How often a waiting role re-checks the stop flag and its supervisor when
/// nothing wakes it.
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(200);

/// How many of its own iterations ahead a role prefetches random shuffle
/// entries.
pub(crate) const PREFETCH_DEPTH: u32 = 4;

/// The image job's role kinds: ping does the even iterations, pong the odd
/// ones.
pub(crate) static KINDS: [RoleKind; 2] = [
    RoleKind {
        name: "ping",
        about: "Image role for even iterations (normally started by `run`)",
        multiple: false,
        options: no_options,
        check: no_check,
        run: ping,
    },
    RoleKind {
        name: "pong",
        about: "Image role for odd iterations (normally started by `run`)",
        multiple: false,
        options: no_options,
        check: no_check,
        run: pong,
    },
];

fn ping(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    run(ctx, Party::Even)
}

fn pong(ctx: &RoleCtx<'_>) -> Result<(), JobError> {
    run(ctx, Party::Odd)
}

/// The role kind that owns `party`'s iterations.
fn kind_of(party: Party) -> &'static str {
    match party {
        Party::Even => "ping",
        Party::Odd => "pong",
    }
}

/// Waits until the process playing the peer holds its role (or a stop).
fn wait_for_peer(ctx: &RoleCtx<'_>, peer: &str) -> Result<(), JobError> {
    let start = std::time::Instant::now();
    while !ctx.peer_alive(peer, 0) && !ctx.stop().is_set() {
        if start.elapsed() > LIVENESS_SLICE {
            ctx.require_supervisor()?;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Runs ping (`Party::Even`) or pong (`Party::Odd`) until the image is
/// complete or the run stops.
fn run(ctx: &RoleCtx<'_>, party: Party) -> Result<(), JobError> {
    let settings: &ImageSettings = ctx.settings()?;
    let segs = ImageSegments::open(ctx.run, settings, Access::ReadWrite)?;
    let view = segs.view()?;
    let stepper = Stepper::new(view);
    if let Recovery::Redone(s) = stepper.recover(party)? {
        eprintln!(
            "forkring {}: redid half-done iteration {s} from the journal",
            ctx.role
        );
    }
    view.ctl.stats[party.index()].attaches.add(1);
    ctx.attached();

    let stop = ctx.stop();
    let n = view.n;
    let turn = &view.ctl.turn;
    // Our iterations are every other one. Prime the prefetch pipeline: the
    // random shuffle entries of the next PREFETCH_DEPTH own iterations, and
    // the pixel and mask words of the next one.
    let first = turn.seq();
    let mine = if party.owns(first) { first } else { first + 1 };
    for d in 0..PREFETCH_DEPTH {
        stepper.prefetch_far(mine + 2 * d);
    }
    stepper.prefetch_near(mine);
    // Prefetch work owed for the iteration after our last one. It is done
    // while the peer works, in pieces, re-checking the turn in between so
    // that a quick peer is never kept waiting by our prefetching.
    let mut owed: Option<u32> = None;
    let mut spin = AdaptiveSpin::new(SpinPolicy::handoff());
    loop {
        if let Some(token) = turn.try_take(party, n) {
            let s = token.seq();
            if s == 0 {
                // Turns start when both players are there.
                wait_for_peer(ctx, kind_of(party.other()))?;
                view.ctl.timing.first_step_ns.set(monotonic_ns());
            }
            stepper.step(token)?;
            if s + 1 == n {
                view.ctl.timing.last_step_ns.set(monotonic_ns());
            }
            owed = Some(s);
            continue;
        }
        let s = turn.seq();
        if s >= n {
            return Ok(());
        }
        if let Some(last) = owed.take() {
            stepper.prefetch_far(last + 2 * PREFETCH_DEPTH);
            if turn.seq() == s {
                stepper.prefetch_near(last + 2);
            }
            continue;
        }
        // Spin while the peer answers quickly; stop spinning while it does
        // not (it is then not running on another CPU).
        let waited = turn.wait_phase(
            party,
            |s| s >= n || stop.is_set(),
            spin.policy(),
            LIVENESS_SLICE,
        );
        match waited {
            // The token is taken again at the top of the loop (it is ours
            // until we pass it, so nothing can change meanwhile).
            Ok((TurnWait::Mine(_), phase)) => spin.observe(phase),
            // Complete, or a stop was requested.
            Ok((TurnWait::GaveUp(_), _)) => return Ok(()),
            Err(_) => {
                if stop.is_set() {
                    return Ok(());
                }
                ctx.require_supervisor()?;
            }
        }
    }
}
