//! `forkring render` and the image job's checks for `forkring verify`:
//! time travel through a history, and an independent check of a run's
//! image.

use std::path::{Path, PathBuf};

use clap::{Arg, ArgMatches, value_parser};
use serde_json::Value;

use crate::job::{JobCommand, JobError};
use crate::outfile::{decode_png, encode_png, write_atomic};

use super::history::History;

/// The image job's extra subcommands.
pub(crate) static COMMANDS: [JobCommand; 1] = [JobCommand {
    command: render_command,
    run: render_cmd,
}];

fn render_command() -> clap::Command {
    clap::Command::new("render")
        .about("Draw the image as it was after N iterations, from a history.bin")
        .arg(
            Arg::new("history")
                .value_name("HISTORY")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("The history file (DIR/history.bin of a run)"),
        )
        .arg(
            Arg::new("iteration")
                .long("iteration")
                .short('i')
                .value_name("N")
                .value_parser(value_parser!(u64))
                .help("Iterations to apply, from 0 (black) to all [default: all]"),
        )
        .arg(
            Arg::new("out")
                .long("out")
                .short('o')
                .value_name("FILE.png")
                .required(true)
                .value_parser(value_parser!(PathBuf))
                .help("PNG file to write"),
        )
}

fn render_cmd(m: &ArgMatches) -> Result<(), JobError> {
    let history = m.get_one::<PathBuf>("history").expect("required");
    let out = m.get_one::<PathBuf>("out").expect("required");
    render(history, m.get_one::<u64>("iteration").copied(), out)
}

/// `forkring render HISTORY --iteration N --out FILE`: draws the image as
/// it was after `N` iterations (unset pixels black). `None` = all.
pub(crate) fn render(history: &Path, iteration: Option<u64>, out: &Path) -> Result<(), JobError> {
    let h = History::read(history).map_err(|e| JobError::Failed(e.to_string()))?;
    let n = iteration.unwrap_or(h.len());
    if n > h.len() {
        return Err(JobError::Usage(format!(
            "--iteration {n} is past the end: {} holds {} iterations (0 to {} are valid)",
            history.display(),
            crate::units::thousands(h.len()),
            crate::units::thousands(h.len())
        )));
    }
    let img = h.replay(n);
    let w = write_atomic(out, |w| {
        encode_png(w, h.header.width, h.header.height, &img)
    })?;
    println!(
        "wrote {} ({}x{}, after {n} of {} iterations, {} bytes)",
        out.display(),
        h.header.width,
        h.header.height,
        h.len(),
        w.bytes
    );
    Ok(())
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Width.
    pub(crate) width: u32,
    /// Height.
    pub(crate) height: u32,
    /// Iterations in the history.
    pub(crate) iterations: u64,
    /// Whether every position was painted.
    pub(crate) complete: bool,
}

/// Checks the image job's files in a result directory: every position at
/// most once (exactly once if complete), no colour twice, `image.png` equal
/// to the replayed history, and as many iterations as `section` (the job's
/// part of `summary.json`, `Null` if there is none) says.
pub(crate) fn check_dir(dir: &Path, section: &Value) -> Result<Verified, String> {
    let hist_path = dir.join("history.bin");
    let h = History::read(&hist_path).map_err(|e| e.to_string())?;
    let (w, ht) = (h.header.width, h.header.height);
    let pixels = w as u64 * ht as u64;
    let mut pos_seen = vec![u64::MAX; 0];
    pos_seen.resize(pixels as usize, u64::MAX);
    let mut col_seen = vec![0u64; (1 << 24) / 64];
    for (i, (p, c)) in h.pairs().enumerate() {
        let first = &mut pos_seen[p as usize];
        if *first != u64::MAX {
            return Err(format!(
                "history.bin: iteration {i} paints position {p} (x {}, y {}) again; iteration {} painted it first",
                p % w,
                p / w,
                *first
            ));
        }
        *first = i as u64;
        let (word, bit) = ((c / 64) as usize, c % 64);
        if col_seen[word] >> bit & 1 == 1 {
            return Err(format!(
                "history.bin: iteration {i} uses colour #{c:06x} a second time"
            ));
        }
        col_seen[word] |= 1 << bit;
    }
    let complete = h.len() == pixels;
    let (pw, ph, png) = decode_png(&dir.join("image.png"))?;
    if (pw, ph) != (w, ht) {
        return Err(format!(
            "image.png is {pw}x{ph} but history.bin is {w}x{ht}"
        ));
    }
    let replay = h.replay(h.len());
    if let Some(i) = png.iter().zip(&replay).position(|(a, b)| a != b) {
        let p = i / 3;
        return Err(format!(
            "image.png differs from the replayed history at pixel {p} (x {}, y {})",
            p as u64 % w as u64,
            p as u64 / w as u64
        ));
    }
    if let Some(it) = section.get("iterations")
        && it.as_u64() != Some(h.len())
    {
        return Err(format!(
            "summary.json says {it} iterations, history.bin holds {}",
            h.len()
        ));
    }
    Ok(Verified {
        width: w,
        height: ht,
        iterations: h.len(),
        complete,
    })
}

/// The image job's part of `forkring verify DIR`: one line on success.
pub(crate) fn verify_dir(dir: &Path, section: &Value) -> Result<String, JobError> {
    let v = check_dir(dir, section).map_err(JobError::Failed)?;
    Ok(format!(
        "image: {}x{}, {} iterations, {}, no colour repeated, image.png equals the replayed history",
        v.width,
        v.height,
        crate::units::thousands(v.iterations),
        if v.complete {
            "every position painted exactly once".to_string()
        } else {
            format!(
                "partial image: {} positions painted at most once",
                crate::units::thousands(v.iterations)
            )
        }
    ))
}
