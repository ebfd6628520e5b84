//! `forkring bench image`: the image job's stepping code, measured in one
//! run in two ways:
//! - solo: this process does every iteration (no handoffs), with a prefetch
//!   pipeline for consecutive iterations;
//! - alternating: the real ping and pong processes take turns, timed by the
//!   first/last-step timestamps they record (process start-up excluded).
//!
//! Plus the Python ping-pong system's size table (README) with its times
//! beside ours.

use std::time::{Duration, Instant};

use serde_json::json;

use super::BenchError;
use crate::image::ImageSettings;
use crate::image::layout::{self, ImageSegments};
use crate::image::step::Stepper;
use crate::settings::RunSettings;
use crate::shm::RunName;
use crate::shm::turn::Party;

use super::minirun::MiniRun;
use super::{Machine, SegmentGuard, best_of, install_interrupt_handler, thousands};

/// The Python ping-pong system's processing times (its README: i7-9750H, WSL,
/// final version), by image side. Its largest image was 4072x4072.
pub(crate) const REFERENCE: [(u32, f64); 7] = [
    (56, 0.2),
    (128, 1.1),
    (256, 4.3),
    (512, 16.9),
    (1024, 66.8),
    (2048, 277.3),
    (4072, 1184.8),
];

/// Options of `forkring bench image`.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Side of the square image for the solo/alternating comparison.
    pub(crate) size: (u32, u32),
    /// One JSON object per line.
    pub(crate) json: bool,
    /// Also run the Python ping-pong system's sizes.
    pub(crate) python_sizes: bool,
    /// Measurements per figure; the best is reported.
    pub(crate) repeat: u32,
}

const SEED: u64 = 0x5eed;
/// Iterations ahead whose random shuffle entries the solo loop prefetches.
const SOLO_FAR: u32 = 16;
/// Iterations ahead whose pixel and mask words the solo loop prefetches.
const SOLO_NEAR: u32 = 4;

fn bench_run(tag: &str) -> RunName {
    RunName::new(&format!("bench-{}-{tag}", std::process::id())).expect("valid bench run name")
}

/// Seconds for one process to paint a `w`x`h` image alone.
pub(crate) fn solo(w: u32, h: u32) -> Result<f64, BenchError> {
    let run = bench_run("solo");
    let settings = ImageSettings {
        width: w,
        height: h,
        seed: SEED,
    };
    let _guards: Vec<SegmentGuard> = layout::PARTS
        .iter()
        .map(|p| SegmentGuard::new(&run, p))
        .collect();
    let segs = ImageSegments::create(&run, &settings)?;
    let v = segs.view()?;
    let st = Stepper::new(v);
    let n = v.n;
    for t in 0..SOLO_FAR.min(n) {
        st.prefetch_far(t);
    }
    let start = Instant::now();
    for s in 0..n {
        st.prefetch_far(s + SOLO_FAR);
        st.prefetch_near(s + SOLO_NEAR);
        let party = if s % 2 == 0 { Party::Even } else { Party::Odd };
        let token = v
            .ctl
            .turn
            .try_take(party, n)
            .ok_or_else(|| BenchError::failed("solo benchmark lost the turn"))?;
        st.step(token)?;
    }
    let secs = start.elapsed().as_secs_f64();
    if v.ctl.turn.seq() != n {
        return Err(BenchError::failed(
            "solo benchmark ended before the image was complete",
        ));
    }
    Ok(secs)
}

/// Seconds for ping and pong (real processes) to paint a `w`x`h` image
/// taking turns, from just before iteration 0 to just after the last.
pub(crate) fn alternating(w: u32, h: u32) -> Result<f64, BenchError> {
    let run = bench_run(&format!("alt{w}x{h}"));
    let image = ImageSettings {
        width: w,
        height: h,
        seed: SEED,
    };
    let settings = RunSettings {
        out: std::env::temp_dir(),
        jobs: vec![Box::new(image.clone())],
    };
    let mini = MiniRun::create(run, &settings, &layout::PARTS)?;
    let segs = ImageSegments::create(mini.run(), &image)?;
    mini.run_roles(&mini.roles(), Duration::from_secs(600), || {})?;
    let v = segs.view()?;
    if v.ctl.turn.seq() != v.n {
        return Err(BenchError::failed(
            "alternating benchmark ended before the image was complete",
        ));
    }
    let (t0, t1) = (
        v.ctl.timing.first_step_ns.get(),
        v.ctl.timing.last_step_ns.get(),
    );
    if t1 <= t0 {
        return Err(BenchError::failed("the roles recorded no timing"));
    }
    Ok((t1 - t0) as f64 / 1e9)
}

fn per_it_ns(secs: f64, n: u64) -> f64 {
    secs * 1e9 / n as f64
}

/// `forkring bench image`.
pub(crate) fn run(opts: &Options) -> Result<(), BenchError> {
    let (w, h) = opts.size;
    crate::image::settings::check_size(w, h).map_err(BenchError::Usage)?;
    install_interrupt_handler()?;
    let machine = Machine::detect();
    let n = w as u64 * h as u64;
    if !opts.json {
        println!("forkring bench image: the same stepping code, solo and alternating");
        println!("machine: {}", machine.describe());
        println!(
            "image {w}x{h}: {} iterations; {}\n",
            thousands(n),
            super::runs_note(opts.repeat)
        );
    }
    let solo_s = best_of(opts.repeat, || solo(w, h))?;
    let alt_s = best_of(opts.repeat, || alternating(w, h))?;
    let ratio = alt_s / solo_s;
    if opts.json {
        for (mode, s) in [("solo", solo_s), ("alternating", alt_s)] {
            println!(
                "{}",
                json!({"bench": "image", "mode": mode, "width": w, "height": h, "iterations": n,
                       "seconds": s, "ns_per_iteration": per_it_ns(s, n),
                       "ratio_to_solo": s / solo_s, "cpu": machine.cpu, "cpus": machine.cpus})
            );
        }
    } else {
        println!(
            "{:<12} {:>10} {:>14} {:>9}",
            "mode", "seconds", "ns/iteration", "vs solo"
        );
        println!(
            "{:<12} {:>10.3} {:>14.1} {:>9}",
            "solo",
            solo_s,
            per_it_ns(solo_s, n),
            "1.00x"
        );
        println!(
            "{:<12} {:>10.3} {:>14.1} {:>8.2}x",
            "alternating",
            alt_s,
            per_it_ns(alt_s, n),
            ratio
        );
        if (w, h) == (4096, 4096) {
            println!(
                "targets for 4096x4096: alternating <= 1.5 s ({}), <= 1.6x solo ({})",
                if alt_s <= 1.5 {
                    "met"
                } else {
                    "target not reached"
                },
                if ratio <= 1.6 {
                    "met"
                } else {
                    "target not reached"
                }
            );
        }
    }
    if !opts.python_sizes {
        return Ok(());
    }
    if !opts.json {
        println!(
            "\nthe Python ping-pong system's sizes (README; its times: i7-9750H, WSL), ours alternating:"
        );
        println!(
            "{:>10} {:>14} {:>12} {:>12}",
            "size", "Python s", "forkring s", "speed-up"
        );
    }
    for (side, reference) in REFERENCE {
        let s = best_of(opts.repeat, || alternating(side, side))?;
        let speedup = reference / s;
        if opts.json {
            println!(
                "{}",
                json!({"bench": "image", "mode": "python-size", "width": side, "height": side,
                       "iterations": side as u64 * side as u64, "seconds": s,
                       "python_seconds": reference, "speedup": speedup})
            );
        } else {
            println!(
                "{:>10} {:>14.1} {:>12.4} {:>11.0}x",
                format!("{side}x{side}"),
                reference,
                s,
                speedup
            );
        }
    }
    Ok(())
}
