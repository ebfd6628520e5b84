//! The handoff's audit of the image segments: what can be derived from
//! them is checked before a result is committed, so a corrupted segment
//! becomes an error naming the segment and the check, never an image.
//!
//! With `count` committed iterations (the turn):
//! 1. *turn*: each iteration set one position bit and one colour bit, so
//!    both masks' popcounts equal `count`;
//! 2. *replay*: the first `count` entries of the shuffles are the history;
//!    replayed onto a black image they must give `pixels` exactly (the
//!    check `forkring verify` makes on the files): no position or colour
//!    twice, every painted pixel the colour of its iteration, every other
//!    pixel black;
//! 3. *masks*: the masks hold exactly the positions and colours of the
//!    history;
//! 4. *permutation*: both shuffles are still permutations (swaps never
//!    create or lose an entry), so an entry changed beyond the history,
//!    which a resumed run would have painted, is found too.
//!
//! Cost: one pass over the pixels, the masks and both shuffles (the 2^24
//! colour entries mostly at memory speed: untouched ones are zero bytes);
//! see docs/threat-model.md for figures.

use super::arrays::BitMask;
use super::layout::{COLOURS, ImageView};

/// A check the image segments failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{check} check: {detail}")]
pub(crate) struct AuditError {
    /// Part name of the segment found inconsistent.
    pub(crate) part: &'static str,
    /// The check: `turn`, `replay`, `masks` or `permutation`.
    pub(crate) check: &'static str,
    /// What is wrong.
    pub(crate) detail: String,
}

fn fail(part: &'static str, check: &'static str, detail: String) -> AuditError {
    AuditError {
        part,
        check,
        detail,
    }
}

/// A bitmap in private memory.
struct Bits(Vec<u64>);

impl Bits {
    fn new(len: u32) -> Self {
        Bits(vec![0; (len as usize).div_ceil(64)])
    }
    /// Sets bit `i` (in range); returns whether it was set already.
    #[inline]
    fn set(&mut self, i: u32) -> bool {
        let (w, b) = ((i / 64) as usize, i % 64);
        let old = self.0[w] >> b & 1 == 1;
        self.0[w] |= 1 << b;
        old
    }
    #[inline]
    fn get(&self, i: u32) -> bool {
        self.0[(i / 64) as usize] >> (i % 64) & 1 == 1
    }
}

/// A bijective mix of a (position, colour) pair (splitmix64's finaliser).
#[inline]
fn mix(p: u32, c: u32) -> u64 {
    let mut z = (p as u64) << 32 | c as u64;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The first word where `mask` and `bits` differ, as (bit index, in mask).
fn first_difference(mask: &BitMask<'_>, bits: &Bits) -> Option<(u64, bool)> {
    mask.words()
        .zip(&bits.0)
        .enumerate()
        .find(|(_, (m, b))| m != *b)
        .map(|(w, (m, b))| {
            let bit = (m ^ b).trailing_zeros();
            (w as u64 * 64 + bit as u64, m >> bit & 1 == 1)
        })
}

/// Checks the image segments of `v` after `count` committed iterations
/// (`count <= v.n`); `pixels` is a copy of the pixels segment (RGB8).
pub(crate) fn audit(v: &ImageView<'_>, count: u32, pixels: &[u8]) -> Result<(), AuditError> {
    let n = v.n;
    debug_assert!(count <= n && pixels.len() == n as usize * 3);
    // 1. The turn against the masks.
    for (part, mask) in [("posmask", &v.posmask), ("colmask", &v.colmask)] {
        let ones = mask.count_ones();
        if ones != count as u64 {
            return Err(fail(
                part,
                "turn",
                format!("{ones} bits are set, but the turn says {count} iterations are committed"),
            ));
        }
    }
    // 2. Replay the history onto a black image.
    let mut pos = Bits::new(n);
    let mut col = Bits::new(COLOURS);
    let rgb = |p: u32| {
        let o = p as usize * 3;
        (pixels[o] as u32) << 16 | (pixels[o + 1] as u32) << 8 | pixels[o + 2] as u32
    };
    // The pixels are compared with the history as multisets of (position,
    // colour) pairs, through a sum of a bijective 64-bit mix of each pair:
    // both sides are read in order (the history by iteration, the pixels by
    // position), where comparing pixel by pixel would read the pixels in
    // random order (1.7 s at 4096x4096, against 48 MiB of cache misses).
    // Equal multisets give equal sums; different ones collide with
    // probability about 2^-64. A mismatch is then located exactly.
    let mut history_sum = 0u64;
    for i in 0..count {
        let (p, c) = match (v.positions.get(i), v.colours.get(i)) {
            (Some(p), Some(c)) if p < n => (p, c),
            (p, _) => {
                return Err(fail(
                    "history",
                    "replay",
                    format!("positions[{i}] is {p:?}, not a position below {n}"),
                ));
            }
        };
        if pos.set(p) {
            return Err(fail(
                "history",
                "replay",
                format!("iteration {i} paints position {p} a second time"),
            ));
        }
        if col.set(c) {
            return Err(fail(
                "history",
                "replay",
                format!("iteration {i} uses colour #{c:06x} a second time"),
            ));
        }
        history_sum = history_sum.wrapping_add(mix(p, c));
    }
    let mut image_sum = 0u64;
    for p in 0..n {
        let found = rgb(p);
        if pos.get(p) {
            image_sum = image_sum.wrapping_add(mix(p, found));
        } else if found != 0 {
            return Err(fail(
                "pixels",
                "replay",
                format!(
                    "pixel {p} (x {}, y {}) is #{found:06x}, but no iteration painted it",
                    p % v.width,
                    p / v.width,
                ),
            ));
        }
    }
    if image_sum != history_sum {
        let wrong = (0..count).find_map(|i| {
            let (p, c) = (v.positions.get(i)?, v.colours.get(i)?);
            (rgb(p) != c).then_some((i, p, c))
        });
        let detail = match wrong {
            Some((i, p, c)) => format!(
                "pixel {p} (x {}, y {}) is #{:06x}, but iteration {i} painted it #{c:06x}",
                p % v.width,
                p / v.width,
                rgb(p)
            ),
            None => "the pixels differ from the replayed history".to_string(),
        };
        return Err(fail("pixels", "replay", detail));
    }
    // 3. The masks hold exactly the history's positions and colours.
    for (part, mask, bits) in [("posmask", &v.posmask, &pos), ("colmask", &v.colmask, &col)] {
        if let Some((bit, set)) = first_difference(mask, bits) {
            return Err(fail(
                part,
                "masks",
                format!(
                    "bit {bit} is {}, but the history {} it",
                    if set { "set" } else { "clear" },
                    if set { "never uses" } else { "uses" }
                ),
            ));
        }
    }
    // 4. The rest of each shuffle holds exactly what the history has not
    // used: both stay permutations.
    for i in count..n {
        match v.positions.get(i) {
            Some(p) if p < n && !pos.set(p) => {}
            p => {
                return Err(fail(
                    "history",
                    "permutation",
                    format!(
                        "positions[{i}] is {p:?}: not a position below {n} missing from the entries before it"
                    ),
                ));
            }
        }
    }
    // The colour shuffle has 2^24 entries whatever the size, most never
    // touched (each holds its own index): it is a permutation if the
    // entries that moved hold exactly the indices of the entries that moved.
    let mut touched = Bits::new(COLOURS);
    v.colours.for_each_moved(|i, _| {
        touched.set(i);
        true
    });
    let mut seen = Bits::new(COLOURS);
    let mut bad = None;
    v.colours.for_each_moved(|i, c| {
        let ok = touched.get(c) && !seen.set(c);
        if !ok {
            bad = Some((i, c));
        }
        ok
    });
    if let Some((i, c)) = bad {
        return Err(fail(
            "history",
            "permutation",
            format!("colours[{i}] is #{c:06x}, a colour another entry holds"),
        ));
    }
    Ok(())
}
