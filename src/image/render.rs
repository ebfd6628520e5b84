//! `forkring render` and `forkring verify`: time travel through a history,
//! and an independent check of a run's results.

use std::path::Path;

use crate::error::{CmdResult, Failure};
use crate::outfile::{decode_png, encode_png, sha256_file, write_atomic};

use super::history::History;

/// `forkring render HISTORY --iteration N --out FILE`: draws the image as
/// it was after `N` iterations (unset pixels black). `None` = all.
pub fn render(history: &Path, iteration: Option<u64>, out: &Path) -> CmdResult {
    let h = History::read(history)?;
    let n = iteration.unwrap_or(h.len());
    if n > h.len() {
        return Err(Failure::usage(format!(
            "--iteration {n} is past the end: {} holds {} iterations (0 to {} are valid)",
            history.display(),
            h.len(),
            h.len()
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
pub struct Verified {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Iterations in the history.
    pub iterations: u64,
    /// Whether every position was painted.
    pub complete: bool,
}

/// Checks a result directory: every position at most once (exactly once if
/// complete), no colour twice, `image.png` equal to the replayed history,
/// and the files' SHA-256 equal to those recorded in `summary.json`.
pub fn check_dir(dir: &Path) -> Result<Verified, String> {
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
    let summary_path = dir.join("summary.json");
    if let Ok(text) = std::fs::read_to_string(&summary_path) {
        let s: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| format!("summary.json: not JSON: {e}"))?;
        if let Some(img) = s.get("image") {
            if img["iterations"].as_u64() != Some(h.len()) {
                return Err(format!(
                    "summary.json says {} iterations, history.bin holds {}",
                    img["iterations"],
                    h.len()
                ));
            }
            for f in ["image.png", "history.bin"] {
                if let Some(want) = img["files"][f]["sha256"].as_str() {
                    let got = sha256_file(&dir.join(f)).map_err(|e| format!("{f}: {e}"))?;
                    if got != want {
                        return Err(format!(
                            "{f}: SHA-256 {got} differs from summary.json's {want}"
                        ));
                    }
                }
            }
        }
        if let Some(st) = s.get("stream") {
            let (p, r, d) = (
                st["produced"].as_u64(),
                st["received"].as_u64(),
                st["dropped"].as_u64(),
            );
            if let (Some(p), Some(r), Some(d)) = (p, r, d)
                && p != r + d
            {
                return Err(format!(
                    "summary.json: stream produced {p} but received {r} + dropped {d} = {}",
                    r + d
                ));
            }
            if st["duplicates"].as_u64().unwrap_or(0) != 0 {
                return Err(format!(
                    "summary.json: stream counted {} duplicates",
                    st["duplicates"]
                ));
            }
        }
    }
    Ok(Verified {
        width: w,
        height: ht,
        iterations: h.len(),
        complete,
    })
}

/// `forkring verify DIR`.
pub fn verify(dir: &Path) -> CmdResult {
    match check_dir(dir) {
        Ok(v) => {
            println!(
                "ok: {}x{}, {} iterations, {}, no colour repeated, image.png equals the replayed history",
                v.width,
                v.height,
                v.iterations,
                if v.complete {
                    "every position painted exactly once".to_string()
                } else {
                    format!(
                        "partial image: {} positions painted at most once",
                        v.iterations
                    )
                }
            );
            Ok(())
        }
        Err(e) => Err(Failure::runtime(format!("verify {}: {e}", dir.display()))),
    }
}
