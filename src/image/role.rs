//! The ping and pong role processes.

use std::time::Duration;

use crate::error::{CmdResult, Failure};
use crate::shm::turn::{Party, TurnWait};
use crate::shm::{Access, AdaptiveSpin, RunName, SpinPolicy};
use crate::supervisor::control::Control;
use crate::supervisor::role::Role;

use super::layout::ImageSegments;
use super::step::{Recovery, Stepper};
use crate::clock::monotonic_ns;

/// How often a waiting role re-checks the stop flag and its supervisor when
/// nothing wakes it.
pub const LIVENESS_SLICE: Duration = Duration::from_millis(200);

/// How many of its own iterations ahead a role prefetches random shuffle
/// entries.
pub const PREFETCH_DEPTH: u32 = 4;

/// The role that owns `party`'s iterations.
pub fn role_of(party: Party) -> Role {
    match party {
        Party::Even => Role::Ping,
        Party::Odd => Role::Pong,
    }
}

/// Waits until the process playing `peer` holds its role (or a stop).
fn wait_for_peer(control: &Control, peer: Role, stop: &crate::shm::Flag) -> CmdResult {
    let start = std::time::Instant::now();
    while !control.role_alive(peer) && !stop.is_set() {
        if start.elapsed() > LIVENESS_SLICE && !control.supervisor_alive() {
            return Err(Failure::runtime(format!(
                "{peer} never started and the supervisor of run {} is gone",
                control.run()
            )));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    Ok(())
}

/// Runs ping (`Party::Even`) or pong (`Party::Odd`) of run `run` until the
/// image is complete or the run stops.
pub fn run(run: &RunName, party: Party) -> CmdResult {
    let role = role_of(party);
    let control = Control::open(run, Access::ReadWrite)?;
    control.claim_role(role)?;
    let settings = control.settings().image.clone().ok_or_else(|| {
        Failure::usage(format!(
            "run {run} has no image job; start it with `forkring run --jobs image`"
        ))
    })?;
    let segs = ImageSegments::open(run, &settings, Access::ReadWrite)?;
    let view = segs.view()?;
    let stepper = Stepper::new(view);
    if let Recovery::Redone(s) = stepper.recover(party)? {
        eprintln!("forkring {role}: redid half-done iteration {s} from the journal");
    }
    view.ctl.stats[party.index()].attaches.add(1);
    control.mark_attached(role);

    let stop = control.stop_flag();
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
        let s = turn.seq();
        if s >= n {
            return Ok(());
        }
        if party.owns(s) {
            if s == 0 {
                // Turns start when both players are there.
                wait_for_peer(&control, role_of(party.other()), stop)?;
                view.ctl.timing.first_step_ns.set(monotonic_ns());
            }
            stepper.step(party, s)?;
            if s + 1 == n {
                view.ctl.timing.last_step_ns.set(monotonic_ns());
            }
            owed = Some(s);
            continue;
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
            Ok((TurnWait::Mine(_), phase)) => spin.observe(phase),
            // Complete, or a stop was requested.
            Ok((TurnWait::GaveUp(_), _)) => return Ok(()),
            Err(_) => {
                if stop.is_set() {
                    return Ok(());
                }
                control.require_supervisor()?;
            }
        }
    }
}
